#!/usr/bin/env bash
# `make demo` (after the binaries are built, see the Makefile's demo target):
# the local end-to-end demo. DEMO_BIN, when it names a built demo program, is
# run instead of `go run ./tests/demo`.
# As root it first installs the Debian packages it uses (tests/install-deps.sh).
# Extra arguments go to the demo program, e.g. `bash tests/demo/demo.sh -node=loopback`.
set -euo pipefail
cd "$(dirname "$0")/../.."
if [ "$(id -u)" -eq 0 ]; then
	bash tests/install-deps.sh demo
else
	echo "demo: not root: the agent part runs on a loopback port (no network namespaces, no iptables)"
fi
export KUBE_APISERVER_BIN="${KUBE_APISERVER_BIN:-$PWD/bin/kube-apiserver}"
export ETCD_BIN="${ETCD_BIN:-$PWD/bin/etcd}"
export WEBHOOK_BIN="${WEBHOOK_BIN:-$PWD/bin/webhook}"
export AGENT_BIN="${AGENT_BIN:-$PWD/bin/agent}"
if [ -n "${DEMO_BIN:-}" ] && [ -x "$DEMO_BIN" ]; then
	exec "$DEMO_BIN" "$@"
fi
exec go run ./tests/demo "$@"
