# Shared settings of the e2e node scripts (sourced by up.sh, down.sh, e2e.sh).
# One e2e node per machine: its names and paths are fixed.

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
BIN="${BIN:-$REPO/bin}"
E2E_DIR="$BIN/e2e"              # kubeconfig, env, configs, certificates, logs, images
RUN_DIR=/run/nlde2e             # sockets, pid files, containerd state, recorded sysctls
DATA_DIR=/var/lib/nlde2e        # etcd, containerd root, kubelet root, pod logs
NETNS=nlde2e                    # the node's network namespace
NETNS_PATH=/run/netns/$NETNS
NODE_NAME=nlde2e-node
NODE_IP=192.0.2.2               # on a veth inside the node's namespace
NODE_CIDR=192.0.2.2/24
INET_NETNS=nlde2e-inet          # the "internet": the other end of the node's veth
INET_NETNS_PATH=/run/netns/$INET_NETNS
INET_GW=192.0.2.1/24            # the node's default gateway, in the internet namespace
INET_IP=198.51.100.53           # the authoritative server (nsd) there
POD_CIDR=10.244.0.0/24
SERVICE_CIDR=10.96.0.0/12
KUBE_DNS_IP=10.96.0.10
CLUSTER_DOMAIN=cluster.local
CONTAINERD_SOCK=$RUN_DIR/containerd/containerd.sock
PIDS_DIR=$RUN_DIR/pids
LOG_DIR=$E2E_DIR/logs
KUBECONFIG_FILE=$E2E_DIR/kubeconfig

KUBE_APISERVER_BIN="${KUBE_APISERVER_BIN:-$BIN/kube-apiserver}"
ETCD_BIN="${ETCD_BIN:-$BIN/etcd}"
KUBECTL_BIN="${KUBECTL_BIN:-$BIN/kubectl}"
KUBELET_BIN="${KUBELET_BIN:-$BIN/kubelet}"
KUBE_PROXY_BIN="${KUBE_PROXY_BIN:-$BIN/kube-proxy}"
KCM_BIN="${KCM_BIN:-$BIN/kube-controller-manager}"
SCHEDULER_BIN="${SCHEDULER_BIN:-$BIN/kube-scheduler}"
COREDNS_BIN="${COREDNS_BIN:-$BIN/coredns}"

# Image references (tests/e2e/imagebuild and `make images` write them).
PAUSE_IMAGE=localhost/nodelocaldns-e2e/pause:1
COREDNS_IMAGE=localhost/nodelocaldns-e2e/coredns:v1.13.2
CLIENT_IMAGE=localhost/nodelocaldns-e2e/client:1

# Global sysctls the kubelet (and kube-proxy) may change; recorded by up.sh
# and restored by down.sh.
SYSCTLS=(vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops
	kernel.keys.root_maxkeys kernel.keys.root_maxbytes net.netfilter.nf_conntrack_max
	net.ipv4.ip_forward net.bridge.bridge-nf-call-iptables net.bridge.bridge-nf-call-ip6tables)

say() { printf 'e2e: %s\n' "$*"; }
die() { printf 'e2e: ERROR: %s\n' "$*" >&2; exit 1; }

# innode runs a command inside the node's network namespace (the host's mount
# namespace, so that containerd and the kubelet see each other's mounts).
innode() { nsenter --net="$NETNS_PATH" -- "$@"; }
ininet() { nsenter --net="$INET_NETNS_PATH" -- "$@"; }

# kc is kubectl against the e2e node.
kc() { innode "$KUBECTL_BIN" --kubeconfig "$KUBECONFIG_FILE" "$@"; }

# pid_alive PID BIN: the process PID exists and runs BIN (guards against a
# recycled PID).
pid_alive() {
	local pid=$1 bin=$2 exe
	exe=$(readlink "/proc/$pid/exe" 2>/dev/null) || return 1
	[ "${exe% (deleted)}" = "$(readlink -f "$bin")" ]
}
