#!/usr/bin/env bash
# Installs the Debian packages the tests, benchmarks and demo use: real DNS
# servers (nsd, unbound), real clients (dig, dnsperf, getent from libc-bin),
# iptables/nftables and iproute2 for the network-namespace tests, util-linux
# (unshare, setpriv) for tests/hostile and the NET_RAW check;
# qemu-user-static to run the arm64 images' programs (tests/images), whose
# Debian packages come from the arm64 architecture added to apt here.
# Safe to run again; it only installs what is missing. Needs root.
set -euo pipefail

pkgs=(nsd unbound bind9-dnsutils dnsperf iptables nftables iproute2 procps kmod ca-certificates util-linux)
# The end-to-end node (tests/e2e): container runtime, CNI plugins, a static
# busybox for the test images, ipset/conntrack for kube-proxy, openssl for the
# node's certificates, util-linux for nsenter.
pkgs+=(containerd runc containernetworking-plugins busybox-static ipset conntrack openssl util-linux)
# qemu-user-static runs the arm64 images' programs (tests/images).
pkgs+=(qemu-user-static)
# `install-deps.sh demo`: only what `make demo` uses (a first run installs less).
if [ "${1:-}" = demo ]; then
	pkgs=(nsd bind9-dnsutils iptables nftables iproute2 procps kmod ca-certificates)
fi
# The agent image's arm64 root file system (make images) needs apt's arm64 lists.
update=false
if [ "${1:-}" != demo ] && [ "$(id -u)" -eq 0 ] && ! dpkg --print-foreign-architectures | grep -qx arm64; then
	echo "install-deps: adding the arm64 architecture to apt (for the agent image's arm64 packages)"
	dpkg --add-architecture arm64
	update=true
fi
missing=()
for p in "${pkgs[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -eq 0 ]; then
	if $update; then
		apt-get update -qq
	fi
	echo "install-deps: all packages present"
	exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
	echo "install-deps: missing packages ${missing[*]} and not root; install them first" >&2
	exit 1
fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}"
# Debian's postinst may start daemons where an init system exists; the tests
# start their own instances on private ports and namespaces.
for svc in nsd unbound; do
	pkill -x "$svc" 2>/dev/null || true
done
# containerd's package enables a systemd unit; where systemd runs it, stop it:
# the e2e node runs its own containerd on a private socket.
if [ -d /run/systemd/system ]; then
	systemctl disable --now containerd 2>/dev/null || true
fi
