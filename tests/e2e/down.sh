#!/usr/bin/env bash
# `make e2e-down`: removes everything `make e2e-up` made: the pods (their
# processes, found in the kubepods cgroups), the node's processes (by the PIDs
# up.sh recorded, then every process left in the node's network namespace),
# mounts under the e2e directories, the network namespace (with its
# interfaces, routes and iptables chains), cgroups, the pod log symlinks, and
# it restores the global sysctls. Safe to run twice or after a failed up.
# --quiet: say nothing when there is nothing to remove.
set -uo pipefail
source "$(dirname "$0")/lib.sh"
quiet=false
[ "${1:-}" = --quiet ] && quiet=true
[ "$(id -u)" -eq 0 ] || die "needs root"

if [ ! -e "$RUN_DIR" ] && [ ! -e "$NETNS_PATH" ] && [ ! -e "$INET_NETNS_PATH" ] && [ ! -e "$DATA_DIR" ]; then
	$quiet || say "nothing to remove"
	exit 0
fi
say "tearing down the e2e node"

# pids_in_netns PATH: every process in that network namespace.
pids_in_netns() {
	local ino p
	ino=$(stat -L -c %i "$1" 2>/dev/null) || return 0
	for p in /proc/[0-9]*; do
		[ "$(stat -L -c %i "$p/ns/net" 2>/dev/null)" = "$ino" ] && echo "${p#/proc/}"
	done
}
# pids_in_pods: every process in a kubepods cgroup (the pods' containers).
pids_in_pods() {
	find /sys/fs/cgroup -path '*kubepods*' -name cgroup.procs 2>/dev/null | xargs -r cat 2>/dev/null | sort -u
}
# stop NAME: SIGTERM the recorded process, SIGKILL it after 10 s.
stop() {
	local name=$1 pid bin i
	[ -f "$PIDS_DIR/$name" ] || return 0
	pid=$(cat "$PIDS_DIR/$name"); bin=$(cat "$PIDS_DIR/$name.bin" 2>/dev/null || echo "")
	if [ -n "$bin" ] && pid_alive "$pid" "$bin"; then
		kill -TERM "$pid" 2>/dev/null
		for i in $(seq 1 100); do pid_alive "$pid" "$bin" || break; sleep 0.1; done
		pid_alive "$pid" "$bin" && kill -KILL "$pid" 2>/dev/null
	fi
	rm -f "$PIDS_DIR/$name" "$PIDS_DIR/$name.bin"
}

# The kubelet first, so that it restarts nothing; then the pods' processes.
stop kubelet
for p in $(pids_in_pods); do kill -KILL "$p" 2>/dev/null; done
for name in kube-proxy kube-scheduler kube-controller-manager containerd kube-apiserver etcd nsd; do
	stop "$name"
done
# kube-proxy --cleanup removes its chains (the namespace goes anyway).
if [ -e "$NETNS_PATH" ] && [ -x "$KUBE_PROXY_BIN" ]; then
	innode "$KUBE_PROXY_BIN" --cleanup >/dev/null 2>&1 || true
fi
# Whatever is left in the node's namespace or in the pods' cgroups: shims,
# containers of pods with hostNetwork, anything a crashed run left.
for i in 1 2 3; do
	left=$( { pids_in_netns "$NETNS_PATH"; pids_in_netns "$INET_NETNS_PATH"; pids_in_pods; } | sort -u)
	[ -z "$left" ] && break
	for p in $left; do kill -KILL "$p" 2>/dev/null; done
	sleep 0.5
done
[ -n "$left" ] && say "warning: processes still alive: $left"

# Mounts: containerd's rootfs and network namespaces, the kubelet's volumes.
for i in 1 2 3; do
	mounts=$(awk -v d="$DATA_DIR" -v r="$RUN_DIR" '$2 ~ "^"d"/" || $2 ~ "^"r"/" {print $2}' /proc/self/mounts | sort -r)
	[ -z "$mounts" ] && break
	for m in $mounts; do umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null; done
done

for ns in "$NETNS" "$INET_NETNS"; do
	[ -e "/run/netns/$ns" ] && { ip netns del "$ns" || say "warning: ip netns del $ns failed"; }
done

# cgroups the kubelet and containerd made (deepest first).
for i in 1 2 3; do
	find /sys/fs/cgroup -depth -type d -path '/sys/fs/cgroup/*/kubepods*' -exec rmdir {} + 2>/dev/null
	[ -z "$(find /sys/fs/cgroup -type d -path '*kubepods*' 2>/dev/null | head -n1)" ] && break
	sleep 0.5
done
left=$(find /sys/fs/cgroup -type d -path '*kubepods*' 2>/dev/null | head -n3)
[ -n "$left" ] && say "warning: cgroups left: $left"

# The kubelet's symlinks to the pods' logs, and the CNI result cache.
find /var/log/containers -maxdepth 1 -type l -lname "$DATA_DIR/*" -delete 2>/dev/null
rm -f /var/lib/cni/results/nlde2e-* /var/lib/cni/results/cni-loopback-* 2>/dev/null

# Global sysctls back to what they were before up.
if [ -f "$RUN_DIR/sysctls" ]; then
	while IFS='=' read -r key val; do
		[ -n "$key" ] || continue
		cur=$(sysctl -n "$key" 2>/dev/null) || continue
		if [ "$cur" != "$val" ]; then
			sysctl -q -w "$key=$val" >/dev/null 2>&1 && say "restored $key=$val (was $cur)" ||
				say "warning: could not restore $key=$val (is $cur)"
		fi
	done <"$RUN_DIR/sysctls"
fi

# Host paths the node created outside its directories (up.sh lists them).
if [ -f "$RUN_DIR/created-paths" ]; then
	while read -r p; do
		case $p in
		/run/nodelocaldns) rm -rf "$p" ;;
		/var/log/containers) rmdir "$p" 2>/dev/null ;;
		/var/lib/cni) rmdir "$p/results" "$p" 2>/dev/null ;;
		esac
	done <"$RUN_DIR/created-paths"
fi

rm -rf "$DATA_DIR" "$RUN_DIR"
rm -f "$E2E_DIR/kubeconfig" "$E2E_DIR/env" "$E2E_DIR/kubectl"
say "down"
