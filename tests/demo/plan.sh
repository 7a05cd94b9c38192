#!/usr/bin/env bash
# Prints what `make demo` needs, which parts are already built, why each is
# needed and roughly how long building it takes (tests/tools/build.sh keeps
# the figures; docs/demo.md has the measurements).
set -euo pipefail
cd "$(dirname "$0")/../.."
bin=$PWD/bin
apiserver=${KUBE_APISERVER_BIN:-$bin/kube-apiserver}
etcd=${ETCD_BIN:-$bin/etcd}
state() { if [ -x "$1" ]; then echo "present"; else echo "to build"; fi; }
est() { bash tests/tools/build.sh estimate "$1"; }
load=$(cut -d' ' -f1 /proc/loadavg 2>/dev/null || echo "?")
cat <<PLAN
make demo: what it needs ($(nproc) cores, load average $load)
  - kube-apiserver ($apiserver, $(state "$apiserver")): the real API server the
    webhook registers with; compiled from the Go module proxy: $(est kube-apiserver)
  - etcd ($etcd, $(state "$etcd")): the API server's storage; Debian's etcd-server
    package (seconds; ETCD_FROM=source compiles it: $(est etcd))
  - webhook, agent and the demo program (bin/): this checkout, one go build
    (about 2 min on 2 cores with a cold Go cache, 3 CPU-min; seconds when cached)
  - Debian packages as root (tests/install-deps.sh): nsd, dig, iptables, iproute2, ...
    (about a minute the first time, nothing afterwards)
  They are built in parallel; nothing else (no kubectl, no helm). A first run on
  a fresh idle 2-core machine takes about 7 min (9.3 CPU-min of compiling,
  docs/demo.md); later runs well under 1 min.
PLAN
