#!/usr/bin/env bash
# build.sh TOOL OUT: builds one of the real tools the tests and the demo run
# (kube-apiserver, kubectl, etcd, helm) into OUT, saying what it builds, why,
# and roughly how long it takes, then how long it took.
#
# Go builds use -trimpath, -ldflags='-s -w' (no symbol table and no DWARF:
# a shorter link and smaller files; stack traces still work) and
# -gcflags=all=-l (no inlining: 23% less compile CPU in a cold build of
# bin/webhook, 138 s instead of 180 s; these tools serve tests and the demo,
# not production load). A cold kube-apiserver build so took 366 CPU-seconds. etcd comes from
# Debian's etcd-server package when ETCD_FROM=debian (the default) and apt has
# it: seconds instead of minutes of compiling. ETCD_FROM=source builds it
# from the Go module proxy.
#
# The figures printed are CPU time (user+sys) measured with empty GOCACHE and
# GOMODCACHE on this project's 2-core machine (docs/demo.md); the wall time
# is about CPU time / cores, plus downloads.
set -euo pipefail

# `build.sh estimate TOOL` prints only the estimate (tests/demo/plan.sh).
if [ "${1:-}" = estimate ]; then
	estimate_only=${2:?usage: build.sh estimate TOOL}
	set -- "$estimate_only" /dev/null
fi
tool=${1:?usage: build.sh TOOL OUT}
out=${2:?usage: build.sh TOOL OUT}
repo=$(cd "$(dirname "$0")/../.." && pwd)
cores=$(nproc 2>/dev/null || echo 2)
ldflags=${TOOLS_LDFLAGS:--s -w}
gcflags=${TOOLS_GCFLAGS:-all=-l}

# about CPU_SECONDS: "about N min on C cores" from a cold-cache CPU figure.
about() {
	local cpu=$1
	local wall=$(((cpu + cores - 1) / cores))
	if [ "$wall" -ge 90 ]; then
		echo "about $(((wall + 30) / 60)) min on $cores cores with a cold Go cache ($((cpu / 60)) CPU-min), seconds when cached"
	else
		echo "about $wall s on $cores cores with a cold Go cache, seconds when cached"
	fi
}

say() { printf '%s\n' "$*"; }

# Cold-cache CPU seconds (user+sys) of each build; they only feed the
# estimates printed. kube-apiserver: measured with empty GOCACHE and
# GOMODCACHE and these flags (docs/demo.md); helm: measured with a partly warm
# cache; kubectl (about 900 packages) and etcd: rough estimates.
declare -A cpu=([kube-apiserver]=370 [kubectl]=200 [etcd]=150 [helm]=160)
if [ -n "${estimate_only:-}" ]; then
	about "${cpu[$tool]:?unknown tool $tool}"
	exit 0
fi

# timed CMD...: runs CMD and prints its wall, user and sys time.
timed() {
	local TIMEFORMAT="<== $tool: done in %0R s (CPU: user %0U s, sys %0S s)"
	time "$@"
}

gobuild() {
	local dir=$1 pkg=$2 stamp=""
	cd "$repo/$dir"
	# Kubernetes commands report the module's version (helm install checks
	# it against a chart's kubeVersion), not v0.0.0-master.
	local kv
	kv=$(awk '$1 == "require" && $2 == "k8s.io/kubernetes" {print $3}' go.mod)
	if [ -n "$kv" ]; then
		local v
		for v in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
			stamp+=" -X $v.gitVersion=$kv -X $v.gitTreeState=clean"
		done
	fi
	CGO_ENABLED=0 go build -trimpath -ldflags="$ldflags$stamp" -gcflags="$gcflags" -o "$out" "$pkg"
}

# etcd_debian: extracts /usr/bin/etcd of Debian's etcd-server package (apt-get
# download, no installation, no service started). Fails when apt or the
# package is unavailable.
etcd_debian() {
	command -v apt-get >/dev/null && command -v dpkg-deb >/dev/null || return 1
	local ver tmp
	ver=$(apt-cache policy etcd-server 2>/dev/null | awk '/Candidate:/ {print $2}')
	if { [ -z "$ver" ] || [ "$ver" = "(none)" ]; } && [ "$(id -u)" -eq 0 ]; then
		apt-get update -qq || return 1
		ver=$(apt-cache policy etcd-server 2>/dev/null | awk '/Candidate:/ {print $2}')
	fi
	if [ -z "$ver" ] || [ "$ver" = "(none)" ]; then
		return 1
	fi
	say "    Debian etcd-server $ver (apt-get download, unpacked; no service is installed)"
	tmp=$(mktemp -d)
	local sandbox=()
	if [ "$(id -u)" -eq 0 ]; then
		sandbox=(-o APT::Sandbox::User=root) # the download goes to a root-owned temporary directory
	fi
	if (cd "$tmp" && apt-get download -qq "${sandbox[@]}" "etcd-server=$ver" >/dev/null) &&
		dpkg-deb -x "$tmp"/etcd-server_*.deb "$tmp/root" &&
		install -m 0755 "$tmp/root/usr/bin/etcd" "$out"; then
		rm -rf "$tmp"
		"$out" --version | head -1 | sed 's/^/    /'
		return 0
	fi
	rm -rf "$tmp"
	return 1
}

mkdir -p "$(dirname "$out")"
case $tool in
kube-apiserver)
	say "==> kube-apiserver -> $out: the real API server of the demo and the integration tests;"
	say "    k8s.io/kubernetes from the Go module proxy (115 MB of modules), about 2100 packages: $(about "${cpu[$tool]}")"
	timed gobuild tests/tools/kube-apiserver k8s.io/kubernetes/cmd/kube-apiserver
	;;
kubectl)
	say "==> kubectl -> $out: the kubectl tests of the manifests (kubectl apply -k --dry-run=server);"
	say "    $(about "${cpu[$tool]}")"
	timed gobuild tests/tools/kube-apiserver k8s.io/kubernetes/cmd/kubectl
	;;
etcd)
	say "==> etcd -> $out: the API server's storage"
	if [ "${ETCD_FROM:-debian}" = debian ] && timed etcd_debian; then
		exit 0
	fi
	say "    building it from the Go module proxy: $(about "${cpu[$tool]}")"
	timed gobuild tests/tools/etcd .
	;;
helm)
	say "==> helm -> $out: helm lint, helm template and helm install of the chart in tests/helm;"
	say "    helm.sh/helm/v4 from the Go module proxy: $(about "${cpu[$tool]}")"
	timed gobuild tests/tools/helm helm.sh/helm/v4/cmd/helm
	;;
*)
	echo "build.sh: unknown tool $tool" >&2
	exit 2
	;;
esac
