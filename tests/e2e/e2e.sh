#!/usr/bin/env bash
# `make e2e` (after the Makefile built the binaries and images): up, the
# checks (tests/e2e/checks, run inside the node's network namespace), down
# (also on failure or Ctrl-C). Exit status: the checks'. E2E_KEEP=1 leaves
# the node running after the checks (make e2e-down removes it).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
T0=$(date +%s)
cleanup() {
	rc=$?
	if [ "${E2E_KEEP:-}" = 1 ]; then
		say "E2E_KEEP=1: node left running; make e2e-down removes it"
	else
		T1=$(date +%s)
		bash "$REPO/tests/e2e/down.sh"
		say "down took $(( $(date +%s) - T1 ))s"
	fi
	say "make e2e took $(( $(date +%s) - T0 ))s (exit $rc)"
	exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM
go build -o "$E2E_DIR/checks" "$REPO/tests/e2e/checks"
bash "$REPO/tests/e2e/up.sh"
say "up took $(( $(date +%s) - T0 ))s"
cd "$REPO"
KUBECTL_BIN="$KUBECTL_BIN" innode "$E2E_DIR/checks" -env "$E2E_DIR/env" ${E2E_CHECKS:+-only "$E2E_CHECKS"}
