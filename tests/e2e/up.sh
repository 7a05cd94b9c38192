#!/usr/bin/env bash
# `make e2e-up`: a real single-node cluster inside a network namespace this
# script creates (node IP 192.0.2.2 on a veth to a second "internet" namespace, no route out):
# etcd, kube-apiserver, kube-controller-manager, kube-scheduler, containerd,
# kubelet and kube-proxy, an authoritative nsd for the "internet" zones,
# CoreDNS as kube-dns, and the project installed with `kubectl apply -k`
# (the builtin-certs overlay). It leaves the node running; `make e2e-down`
# removes all of it. The Makefile builds the binaries and images first.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

T0=$(date +%s)
elapsed() { echo "$(( $(date +%s) - T0 ))s"; }

# --- prerequisites ---------------------------------------------------------
[ "$(id -u)" -eq 0 ] || die "needs root (network namespace, containerd, kubelet)"
for b in "$KUBE_APISERVER_BIN" "$ETCD_BIN" "$KUBECTL_BIN" "$KUBELET_BIN" "$KUBE_PROXY_BIN" "$KCM_BIN" "$SCHEDULER_BIN" \
	"$E2E_DIR/images/pause.tar" "$E2E_DIR/images/coredns.tar" "$E2E_DIR/images/client.tar" \
	"$BIN/images/agent.docker.tar" "$BIN/images/webhook.docker.tar"; do
	[ -e "$b" ] || die "missing $b (run through make e2e-up, which builds it)"
done
for c in containerd containerd-shim-runc-v2 runc ctr nsd nsenter openssl iptables ipset ip; do
	command -v "$c" >/dev/null || die "missing $c: run tests/install-deps.sh (Debian packages)"
done
[ -x /usr/lib/cni/bridge ] || die "missing CNI plugins in /usr/lib/cni: install containernetworking-plugins"

# A failed or interrupted earlier run is removed first.
bash "$REPO/tests/e2e/down.sh" --quiet

mkdir -p "$E2E_DIR" "$LOG_DIR" "$PIDS_DIR" "$DATA_DIR" "$E2E_DIR/pki"
echo "$REPO" > "$RUN_DIR/owner"

# Host paths the node creates outside its own directories: the agent's run
# directory (a hostPath volume), the kubelet's /var/log/containers and the CNI
# result cache. down.sh removes those that did not exist before (not
# /run/xtables.lock: removing a lock file others may hold breaks the lock).
for p in /run/nodelocaldns /var/log/containers /var/lib/cni; do
	[ -e "$p" ] || echo "$p"
done >"$RUN_DIR/created-paths"

# --- sysctls ---------------------------------------------------------------
for s in "${SYSCTLS[@]}"; do
	v=$(sysctl -n "$s" 2>/dev/null) && printf '%s=%s\n' "$s" "$v"
done > "$RUN_DIR/sysctls"

# --- network namespace -------------------------------------------------------
say "creating network namespaces $NETNS (node $NODE_IP) and $INET_NETNS (authoritative DNS $INET_IP)"
ip netns add "$NETNS"
ip netns add "$INET_NETNS"
innode ip link set lo up
ininet ip link set lo up
# The node's only link goes to the "internet" namespace, which has no route
# out and does not forward: nothing leaves the two namespaces.
innode ip link add nlde2e0 type veth peer name nlde2e-gw netns "$INET_NETNS"
innode ip addr add "$NODE_CIDR" dev nlde2e0
innode ip link set nlde2e0 up
innode ip route add default via "${INET_GW%/*}"
ininet ip addr add "$INET_GW" dev nlde2e-gw
ininet ip addr add "$INET_IP/32" dev lo
ininet ip link set nlde2e-gw up
ininet ip route add "$POD_CIDR" via "$NODE_IP"
ininet sysctl -q -w net.ipv4.ip_forward=0

start() { # name binary args... (in the node's namespace; NS=path overrides)
	local name=$1; shift
	setsid nsenter --net="${NS:-$NETNS_PATH}" -- "$@" >"$LOG_DIR/$name.log" 2>&1 </dev/null &
	echo "$!" >"$PIDS_DIR/$name"
	echo "$1" >"$PIDS_DIR/$name.bin"
}

wait_for() { # what timeout-seconds command...
	local what=$1 timeout=$2; shift 2
	local deadline=$(( $(date +%s) + timeout ))
	until "$@" >/dev/null 2>&1; do
		if [ "$(date +%s)" -ge "$deadline" ]; then
			say "timed out after ${timeout}s waiting for $what; last log lines:"
			tail -n 20 "$LOG_DIR"/*.log 2>/dev/null | tail -n 60 >&2
			die "timed out waiting for $what"
		fi
		sleep 1
	done
}

# --- the "internet": an authoritative nsd ------------------------------------
say "starting nsd for the internet zones (example.com, example.net)"
mkdir -p "$E2E_DIR/nsd"
cat >"$E2E_DIR/nsd/example.com.zone" <<Z
\$ORIGIN example.com.
\$TTL 300
@     IN SOA ns.example.com. hostmaster.example.com. 1 3600 600 86400 60
@     IN NS  ns.example.com.
ns    IN A   $INET_IP
www   IN A   192.0.2.80
www   IN AAAA 2001:db8::80
v4only IN A  192.0.2.81
Z
for i in $(seq 1 200); do echo "host$i IN A 192.0.2.$((i % 250 + 1))"; done >>"$E2E_DIR/nsd/example.com.zone"
cat >"$E2E_DIR/nsd/example.net.zone" <<Z
\$ORIGIN example.net.
\$TTL 300
@     IN SOA ns.example.net. hostmaster.example.net. 1 3600 600 86400 60
@     IN NS  ns.example.com.
api   IN A   192.0.2.90
Z
cat >"$E2E_DIR/nsd/nsd.conf" <<C
server:
  ip-address: $INET_IP
  port: 53
  username: ""
  chroot: ""
  zonesdir: "$E2E_DIR/nsd"
  database: ""
  zonelistfile: "$RUN_DIR/nsd-zone.list"
  xfrdfile: "$RUN_DIR/nsd-xfrd.state"
  pidfile: ""
  logfile: "$LOG_DIR/nsd-server.log"
  server-count: 1
  verbosity: 1
remote-control:
  control-enable: no
zone:
  name: example.com
  zonefile: example.com.zone
zone:
  name: example.net
  zonefile: example.net.zone
C
nsd-checkconf "$E2E_DIR/nsd/nsd.conf"
NS=$INET_NETNS_PATH start nsd "$(command -v nsd)" -d -c "$E2E_DIR/nsd/nsd.conf"
echo "nameserver $INET_IP" >"$E2E_DIR/resolv.conf"

# --- certificates --------------------------------------------------------------
say "writing certificates and kubeconfigs ($E2E_DIR/pki)"
bash "$REPO/tests/e2e/pki.sh" "$E2E_DIR/pki" "$NODE_NAME" "$NODE_IP" >"$LOG_DIR/pki.log" 2>&1
P=$E2E_DIR/pki
cp "$P/admin.kubeconfig" "$KUBECONFIG_FILE"

# --- control plane ------------------------------------------------------------
say "starting etcd"
start etcd "$ETCD_BIN" --data-dir "$DATA_DIR/etcd" --name e2e \
	--listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 \
	--listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
	--initial-cluster e2e=http://127.0.0.1:2380 --unsafe-no-fsync --log-level warn
say "starting kube-apiserver ($("$KUBE_APISERVER_BIN" --version))"
start kube-apiserver "$KUBE_APISERVER_BIN" \
	--etcd-servers=http://127.0.0.1:2379 \
	--bind-address="$NODE_IP" --secure-port=6443 --advertise-address="$NODE_IP" \
	--service-cluster-ip-range="$SERVICE_CIDR" \
	--client-ca-file="$P/ca.crt" --tls-cert-file="$P/apiserver.crt" --tls-private-key-file="$P/apiserver.key" \
	--kubelet-client-certificate="$P/apiserver-kubelet-client.crt" --kubelet-client-key="$P/apiserver-kubelet-client.key" \
	--kubelet-preferred-address-types=InternalIP \
	--service-account-key-file="$P/sa.pub" --service-account-signing-key-file="$P/sa.key" \
	--service-account-issuer=https://kubernetes.default.svc.cluster.local \
	--authorization-mode=Node,RBAC --enable-admission-plugins=NodeRestriction \
	--allow-privileged=true --profiling=false
wait_for "kube-apiserver /readyz" 120 kc get --raw /readyz
say "kube-apiserver ready after $(elapsed)"
start kube-controller-manager "$KCM_BIN" --kubeconfig="$P/admin.kubeconfig" \
	--authentication-kubeconfig="$P/admin.kubeconfig" --authorization-kubeconfig="$P/admin.kubeconfig" \
	--bind-address=127.0.0.1 --leader-elect=false \
	--service-account-private-key-file="$P/sa.key" --root-ca-file="$P/ca.crt" \
	--cluster-signing-cert-file="$P/ca.crt" --cluster-signing-key-file="$P/ca.key" \
	--service-cluster-ip-range="$SERVICE_CIDR" --use-service-account-credentials=true
start kube-scheduler "$SCHEDULER_BIN" --kubeconfig="$P/admin.kubeconfig" \
	--authentication-kubeconfig="$P/admin.kubeconfig" --authorization-kubeconfig="$P/admin.kubeconfig" \
	--bind-address=127.0.0.1 --leader-elect=false

# --- container runtime -----------------------------------------------------------
say "starting containerd ($(containerd --version | awk '{print $3}'))"
mkdir -p "$E2E_DIR/cni" "$DATA_DIR/cni"
cat >"$E2E_DIR/cni/10-nlde2e.conflist" <<J
{
  "cniVersion": "0.4.0",
  "name": "nlde2e",
  "plugins": [
    {"type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": false, "hairpinMode": true,
     "ipam": {"type": "host-local", "dataDir": "$DATA_DIR/cni/ipam",
              "ranges": [[{"subnet": "$POD_CIDR"}]], "routes": [{"dst": "0.0.0.0/0"}]}},
    {"type": "portmap", "capabilities": {"portMappings": true}},
    {"type": "loopback"}
  ]
}
J
containerd config default | sed \
	-e "s|^root = .*|root = \"$DATA_DIR/containerd\"|" \
	-e "s|^state = .*|state = \"$RUN_DIR/containerd\"|" \
	-e "s|^\(  address = \)\"/run/containerd/containerd.sock\"|\1\"$CONTAINERD_SOCK\"|" \
	-e "s|sandbox_image = .*|sandbox_image = \"$PAUSE_IMAGE\"|" \
	-e "s|restrict_oom_score_adj = .*|restrict_oom_score_adj = true|" \
	-e "s|netns_mounts_under_state_dir = .*|netns_mounts_under_state_dir = true|" \
	-e "s|bin_dir = \"/opt/cni/bin\"|bin_dir = \"/usr/lib/cni\"|" \
	-e "s|conf_dir = \"/etc/cni/net.d\"|conf_dir = \"$E2E_DIR/cni\"|" \
	-e "s|path = \"/opt/containerd\"|path = \"$DATA_DIR/opt\"|" \
	>"$E2E_DIR/containerd.toml"
grep -q "restrict_oom_score_adj = true" "$E2E_DIR/containerd.toml" || die "containerd config: restrict_oom_score_adj not set"
grep -q "address = \"$CONTAINERD_SOCK\"" "$E2E_DIR/containerd.toml" || die "containerd config: socket not set"
start containerd "$(command -v containerd)" --config "$E2E_DIR/containerd.toml"
wait_for "containerd" 60 ctr --address "$CONTAINERD_SOCK" version
say "importing images"
for tar in "$E2E_DIR"/images/*.tar "$BIN/images/agent.docker.tar" "$BIN/images/webhook.docker.tar"; do
	innode ctr --address "$CONTAINERD_SOCK" -n k8s.io images import "$tar" >>"$LOG_DIR/images.log" 2>&1 ||
		die "ctr images import $tar failed (see $LOG_DIR/images.log)"
done
AGENT_IMAGE=$(ctr --address "$CONTAINERD_SOCK" -n k8s.io images ls -q | grep '/nodelocaldns/agent:' | head -n1)
WEBHOOK_IMAGE=$(ctr --address "$CONTAINERD_SOCK" -n k8s.io images ls -q | grep '/nodelocaldns/webhook:' | head -n1)
[ -n "$AGENT_IMAGE" ] && [ -n "$WEBHOOK_IMAGE" ] || die "agent or webhook image missing after import"

# --- node ---------------------------------------------------------------------
say "starting kubelet ($("$KUBELET_BIN" --version))"
mkdir -p "$DATA_DIR/kubelet" "$DATA_DIR/pod-logs"
cat >"$E2E_DIR/kubelet.yaml" <<Y
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
cgroupDriver: cgroupfs
# This machine has cgroup v1 (hybrid); kubelets since 1.35 refuse it unless told.
failCgroupV1: false
failSwapOn: false
containerRuntimeEndpoint: unix://$CONTAINERD_SOCK
address: $NODE_IP
healthzBindAddress: 127.0.0.1
readOnlyPort: 0
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: false}
  x509: {clientCAFile: $P/ca.crt}
authorization: {mode: AlwaysAllow}
tlsCertFile: $P/kubelet-serving.crt
tlsPrivateKeyFile: $P/kubelet-serving.key
clusterDNS: [$KUBE_DNS_IP]
clusterDomain: $CLUSTER_DOMAIN
resolvConf: $E2E_DIR/resolv.conf
podLogsDir: $DATA_DIR/pod-logs
serializeImagePulls: false
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: "100Mi", nodefs.available: "1%", imagefs.available: "1%", nodefs.inodesFree: "1%"}
maxPods: 60
Y
start kubelet "$KUBELET_BIN" --config="$E2E_DIR/kubelet.yaml" --kubeconfig="$P/kubelet.kubeconfig" \
	--root-dir="$DATA_DIR/kubelet" --node-ip="$NODE_IP" --hostname-override="$NODE_NAME" --v=1
cat >"$E2E_DIR/kube-proxy.yaml" <<Y
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: iptables
hostnameOverride: $NODE_NAME
clusterCIDR: $POD_CIDR
clientConnection:
  kubeconfig: $P/admin.kubeconfig
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
conntrack:
  maxPerCore: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
iptables:
  localhostNodePorts: false
Y
say "starting kube-proxy"
start kube-proxy "$KUBE_PROXY_BIN" --config="$E2E_DIR/kube-proxy.yaml"
wait_for "node $NODE_NAME Ready" 120 kc wait --for=condition=Ready "node/$NODE_NAME" --timeout=2s
say "node Ready after $(elapsed)"

# --- cluster DNS and the project ---------------------------------------------------
say "installing CoreDNS as kube-dns ($KUBE_DNS_IP)"
kc apply -f "$REPO/tests/e2e/manifests/coredns.yaml" >"$LOG_DIR/apply-coredns.log"
kc -n kube-system rollout status deployment/coredns --timeout=120s >/dev/null
say "installing nodelocaldns (kubectl apply -k, builtin-certs overlay; agent $AGENT_IMAGE, webhook $WEBHOOK_IMAGE)"
bash "$REPO/tests/e2e/install.sh" apply "$AGENT_IMAGE" "$WEBHOOK_IMAGE" >"$LOG_DIR/apply-project.log" 2>&1 ||
	{ cat "$LOG_DIR/apply-project.log" >&2; die "kubectl apply -k failed"; }
wait_for "agent DaemonSet rolled out" 180 kc -n kube-system rollout status daemonset/node-local-dns --timeout=2s
wait_for "webhook Deployment rolled out" 180 kc -n node-local-dns rollout status deployment/node-local-dns-webhook --timeout=2s
wait_for "webhook caBundle" 60 bash -c "[ -n \"\$(nsenter --net=$NETNS_PATH -- $KUBECTL_BIN --kubeconfig $KUBECONFIG_FILE get mutatingwebhookconfiguration node-local-dns-webhook -o jsonpath='{.webhooks[0].clientConfig.caBundle}')\" ]"

cat >"$E2E_DIR/env" <<E
# Written by make e2e-up. Use kubectl inside the node's network namespace:
#   $E2E_DIR/kubectl get pods -A
KUBECONFIG=$KUBECONFIG_FILE
KUBECTL=$KUBECTL_BIN
NETNS=$NETNS
NODE_NAME=$NODE_NAME
NODE_IP=$NODE_IP
INET_IP=$INET_IP
KUBE_DNS_IP=$KUBE_DNS_IP
CLIENT_IMAGE=$CLIENT_IMAGE
AGENT_IMAGE=$AGENT_IMAGE
WEBHOOK_IMAGE=$WEBHOOK_IMAGE
COREDNS_IMAGE=$COREDNS_IMAGE
E
cat >"$E2E_DIR/kubectl" <<K
#!/bin/sh
# kubectl against the e2e node (its API server is inside network namespace $NETNS).
exec nsenter --net=$NETNS_PATH -- $KUBECTL_BIN --kubeconfig $KUBECONFIG_FILE "\$@"
K
chmod +x "$E2E_DIR/kubectl"
say "up after $(elapsed): kubectl is $E2E_DIR/kubectl (or: nsenter --net=$NETNS_PATH kubectl --kubeconfig $KUBECONFIG_FILE)"
