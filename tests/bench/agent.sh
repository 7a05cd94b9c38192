#!/usr/bin/env bash
# Agent vs unbound with dnsperf, as issue 3 asks: NSD is the cluster DNS
# (and the node's upstream), the agent runs the official ConfigMap Corefile,
# unbound is configured as an equivalent caching forwarder (one thread, TTL
# caps 30/5, TCP to the cluster zone). Each server is pinned to core 0 with
# taskset; dnsperf and NSD share core 1. Everything is on 127.x.y.z.
#
# Prints: cache-hit QPS, server CPU time per query at a fixed 40k QPS
# (utime+stime from /proc/PID/stat), average latency at 20k QPS, RSS with
# 10k cached names, cache-miss QPS (unique names, TCP to the cluster DNS),
# and the agent/unbound ratios.
#
# Environment: BENCH_SECONDS (default 10) per dnsperf run, BENCH_NICE
# (default -10, the measured processes' priority), AGENT_BIN
# (default bin/agent), HIT_NAMES (default 1000), KEEP=1 keeps the temp dir
# (with every dnsperf report in reports.txt), ONLY=agent or ONLY=unbound runs
# one side (no ratios).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
SECS=${BENCH_SECONDS:-10}
HIT_NAMES=${HIT_NAMES:-1000}
AGENT=${AGENT_BIN:-$ROOT/bin/agent}

unavailable() {
	if [[ -n "${CI:-}" ]]; then
		echo "agent bench: prerequisite missing under CI: $*" >&2
		exit 1
	fi
	echo "agent bench: skipped: $* (set CI=1 to make this a failure)"
	exit 0
}

[[ $(id -u) == 0 ]] || unavailable "needs root (the cluster DNS listens on port 53, as a Service does)"
for tool in nsd nsd-control unbound dnsperf taskset; do
	command -v "$tool" >/dev/null || [[ -x /usr/sbin/$tool ]] || unavailable "$tool not installed (tests/install-deps.sh)"
done
export PATH=$PATH:/usr/sbin
if [[ ! -x $AGENT ]]; then
	(cd "$ROOT" && CGO_ENABLED=0 go build -trimpath -o "$AGENT" ./agent)
fi

# The measured processes run at high priority (BENCH_NICE, default -10) so
# that other work on a shared machine disturbs the figures less.
PRIO="nice -n ${BENCH_NICE:--10}"

SERVER_CPU=0
LOAD_CPU=1
if (($(nproc) < 2)); then
	echo "agent bench: warning: one CPU only, server and load generator share it"
	LOAD_CPU=0
fi

TMP=$(mktemp -d /tmp/agent-bench.XXXXXX)
PIDS=()
cleanup() {
	for pid in "${PIDS[@]}"; do
		kill "$pid" 2>/dev/null || true
	done
	for pid in "${PIDS[@]}"; do
		wait "$pid" 2>/dev/null || true
	done
	if [[ -z "${KEEP:-}" ]]; then rm -rf "$TMP"; else echo "kept $TMP"; fi
}
trap cleanup EXIT

NET="127.$((100 + RANDOM % 100)).$((1 + RANDOM % 250))"
CLUSTER=$NET.1    # kube-dns-upstream ClusterIP, port 53
EXTERNAL=$NET.2   # the node's upstream nameserver, port 5300
AGENT_IP=$NET.10
UNBOUND_IP=$NET.20

# --- zones and query files ---------------------------------------------------
{
	echo '$ORIGIN cluster.local.'
	echo '$TTL 300'
	echo '@ IN SOA ns.dns.cluster.local. hostmaster.cluster.local. 1 7200 1800 86400 60'
	echo '@ IN NS ns.dns'
	echo "ns.dns IN A $CLUSTER"
	echo '*.miss.default.svc IN A 10.99.0.1'
	awk 'BEGIN { for (i = 0; i < 10000; i++) printf "svc%d.default.svc IN A 10.%d.%d.%d\n", i, 96 + int(i / 65536), int(i / 256) % 256, i % 256 }'
} >"$TMP/cluster.local.zone"
cat >"$TMP/example.net.zone" <<'EOF'
$ORIGIN example.net.
$TTL 300
@ IN SOA ns.example.net. hostmaster.example.net. 1 7200 1800 86400 60
@ IN NS ns
ns IN A 192.0.2.53
www IN A 192.0.2.10
EOF
awk -v n="$HIT_NAMES" 'BEGIN { for (i = 0; i < n; i++) printf "svc%d.default.svc.cluster.local A\n", i }' >"$TMP/hits.txt"
awk 'BEGIN { for (i = 0; i < 10000; i++) printf "svc%d.default.svc.cluster.local A\n", i }' >"$TMP/names10k.txt"
# Unique names (a wildcard answers them): every query is a cache miss.
miss_file() { # $1 = tag
	awk -v tag="$1" -v n=$((SECS * 80000)) 'BEGIN { for (i = 0; i < n; i++) printf "m%d-%s.miss.default.svc.cluster.local A\n", i, tag }' >"$TMP/miss-$1.txt"
}

# --- NSD ---------------------------------------------------------------------
cat >"$TMP/nsd.conf" <<EOF
server:
  ip-address: $CLUSTER@53
  ip-address: $EXTERNAL@5300
  do-ip6: no
  username: ""
  chroot: ""
  zonesdir: "$TMP"
  pidfile: "$TMP/nsd.pid"
  database: ""
  xfrdfile: "$TMP/xfrd.state"
  xfrdir: "$TMP"
  zonelistfile: "$TMP/zone.list"
  logfile: "$TMP/nsd.log"
  server-count: 1
  verbosity: 1
  hide-version: yes
  tcp-count: 1000
  rrl-ratelimit: 0
  rrl-whitelist-ratelimit: 0
  tcp-timeout: 120
remote-control:
  control-enable: yes
  control-interface: "$TMP/nsd.sock"
zone:
  name: cluster.local
  zonefile: cluster.local.zone
zone:
  name: example.net
  zonefile: example.net.zone
EOF
$PRIO taskset -c "$LOAD_CPU" nsd -d -c "$TMP/nsd.conf" >"$TMP/nsd.out" 2>&1 &
PIDS+=($!)

wait_answer() { # $1 = ip, $2 = port, $3 = name
	for _ in $(seq 100); do
		if dig +tcp +tries=1 +time=1 +short "@$1" -p "$2" "$3" A 2>/dev/null | grep -q .; then return 0; fi
		sleep 0.1
	done
	echo "agent bench: $1:$2 does not answer $3" >&2
	return 1
}
wait_answer "$CLUSTER" 53 svc0.default.svc.cluster.local || { cat "$TMP/nsd.out" "$TMP/nsd.log" >&2; exit 1; }

# --- servers -------------------------------------------------------------------
start_agent() {
	mkdir -p "$TMP/agent/kube-dns"
	sed 's/prometheus :9253/prometheus __PILLAR__LOCAL__DNS__:9253/' "$ROOT/tests/agent/testdata/Corefile.base" >"$TMP/agent/Corefile.base"
	echo "[\"$EXTERNAL:5300\"]" >"$TMP/agent/kube-dns/upstreamNameservers"
	KUBE_DNS_UPSTREAM_SERVICE_HOST=$CLUSTER $PRIO taskset -c "$SERVER_CPU" "$AGENT" \
		-localip "$AGENT_IP" -conf "$TMP/agent/Corefile" -upstreamsvc kube-dns-upstream -pidfile "$TMP/agent/pid" \
		-basecorefile "$TMP/agent/Corefile.base" -kubednscm "$TMP/agent/kube-dns" \
		-setupinterface=false -setupiptables=false -rundir "$TMP/agent/run" -interfacename "nldbench$RANDOM" \
		-metrics-listen-address "$AGENT_IP:9353" -lameduck 0s >"$TMP/agent.out" 2>&1 &
	SERVER_PID=$!
	PIDS+=("$SERVER_PID")
	wait_answer "$AGENT_IP" 53 svc0.default.svc.cluster.local || { cat "$TMP/agent.out" >&2; exit 1; }
}

start_unbound() {
	mkdir -p "$TMP/unbound"
	cat >"$TMP/unbound/unbound.conf" <<EOF
server:
    verbosity: 0
    num-threads: 1
    interface: $UNBOUND_IP
    port: 53
    do-ip6: no
    do-daemonize: no
    username: ""
    chroot: ""
    directory: "$TMP/unbound"
    pidfile: "$TMP/unbound/unbound.pid"
    use-syslog: no
    logfile: ""
    access-control: 127.0.0.0/8 allow
    do-not-query-localhost: no
    module-config: "iterator"
    qname-minimisation: no
    cache-max-ttl: 30
    cache-max-negative-ttl: 5
    num-queries-per-thread: 4096
    so-reuseport: yes
forward-zone:
    name: "cluster.local."
    forward-addr: $CLUSTER@53
    forward-tcp-upstream: yes
forward-zone:
    name: "."
    forward-addr: $EXTERNAL@5300
EOF
	unbound-checkconf "$TMP/unbound/unbound.conf" >/dev/null
	$PRIO taskset -c "$SERVER_CPU" unbound -d -c "$TMP/unbound/unbound.conf" >"$TMP/unbound.out" 2>&1 &
	SERVER_PID=$!
	PIDS+=("$SERVER_PID")
	wait_answer "$UNBOUND_IP" 53 svc0.default.svc.cluster.local || { cat "$TMP/unbound.out" >&2; exit 1; }
}

stop_server() {
	kill "$SERVER_PID" 2>/dev/null || true
	wait "$SERVER_PID" 2>/dev/null || true
}

# --- measurements ------------------------------------------------------------
# dnsperf on the load core; prints its report to $TMP/last.txt.
perf() { # $1 = ip, then dnsperf args
	local ip=$1
	shift
	$PRIO taskset -c "$LOAD_CPU" dnsperf -s "$ip" -p 53 -c 8 -T 1 "$@" >"$TMP/last.txt" 2>&1 || { cat "$TMP/last.txt" >&2; return 1; }
	{ echo "== dnsperf -s $ip $*"; cat "$TMP/last.txt"; } >>"$TMP/reports.txt"
}
field() { # value after "$1:" in the last report
	awk -v k="$1" -F: '$1 ~ k { split($2, a, " "); print a[1]; exit }' "$TMP/last.txt"
}
cpu_ticks() { # utime+stime of $1 in clock ticks
	awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$1/stat"
}
rss_kb() {
	awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"
}

declare -A R
measure() { # $1 = name (agent|unbound), $2 = ip
	local name=$1 ip=$2 hz t0 t1 done
	hz=$(getconf CLK_TCK)
	perf "$ip" -d "$TMP/hits.txt" -n 2 -q 200 # prewarm
	perf "$ip" -d "$TMP/hits.txt" -l "$SECS" -q 500
	R[$name.hit_qps]=$(field "Queries per second")
	R[$name.hit_lost]=$(field "Queries lost")

	perf "$ip" -d "$TMP/hits.txt" -n 1 -q 200 # refresh entries that expired
	t0=$(cpu_ticks "$SERVER_PID")
	perf "$ip" -d "$TMP/hits.txt" -l "$SECS" -q 500 -Q 40000
	t1=$(cpu_ticks "$SERVER_PID")
	done=$(field "Queries completed")
	R[$name.cpu_us]=$(awk -v d=$((t1 - t0)) -v hz="$hz" -v n="$done" 'BEGIN { printf "%.2f", d / hz * 1e6 / n }')
	R[$name.cpu_qps]=$(field "Queries per second")

	perf "$ip" -d "$TMP/hits.txt" -n 1 -q 200
	perf "$ip" -d "$TMP/hits.txt" -l "$SECS" -q 500 -Q 20000
	R[$name.lat_us]=$(awk -v s="$(field "Average Latency")" 'BEGIN { printf "%.1f", s * 1e6 }')

	perf "$ip" -d "$TMP/names10k.txt" -n 1 -q 200
	sleep 1
	R[$name.rss_mb]=$(awk -v kb="$(rss_kb "$SERVER_PID")" 'BEGIN { printf "%.1f", kb / 1024 }')

	miss_file "$name"
	perf "$ip" -d "$TMP/miss-$name.txt" -n 1 -l "$SECS" -q 500
	R[$name.miss_qps]=$(field "Queries per second")
	R[$name.miss_lost]=$(field "Queries lost")
	rm -f "$TMP/miss-$name.txt"
}

LOAD_BEFORE=$(cut -d' ' -f1 /proc/loadavg)
echo "agent bench: NSD on $CLUSTER:53 (cluster.local, TCP) and $EXTERNAL:5300; server on CPU $SERVER_CPU, dnsperf and NSD on CPU $LOAD_CPU; ${SECS}s per run"
for side in agent unbound; do
	R[$side.hit_qps]=0 R[$side.cpu_us]=0 R[$side.cpu_qps]=0 R[$side.lat_us]=0 R[$side.rss_mb]=0 R[$side.miss_qps]=0
	R[$side.hit_lost]=- R[$side.miss_lost]=-
done
if [[ ${ONLY:-agent} == agent || -z ${ONLY:-} ]]; then
	start_agent
	measure agent "$AGENT_IP"
	stop_server
fi
if [[ ${ONLY:-unbound} == unbound || -z ${ONLY:-} ]]; then
	start_unbound
	measure unbound "$UNBOUND_IP"
	stop_server
fi

LOAD_AFTER=$(cut -d' ' -f1 /proc/loadavg)
echo
echo "load average (1 min) before $LOAD_BEFORE, after $LOAD_AFTER on $(nproc) CPUs"
if awk -v a="$LOAD_BEFORE" -v b="$LOAD_AFTER" 'BEGIN { exit !(a > 1.5 || b > 3.5) }'; then
	echo "WARNING: other processes compete for the CPUs; absolute figures (QPS, latency) are not comparable with the issue's, only the ratios of this run somewhat are"
fi
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }
printf '\n%-36s %12s %12s %8s  %s\n' "metric" "agent" "unbound" "ratio" "target"
row() { # label key target
	printf '%-36s %12s %12s %8s  %s\n' "$1" "${R[agent.$2]}" "${R[unbound.$2]}" "$(ratio "${R[agent.$2]}" "${R[unbound.$2]}")" "$3"
}
row "cache-hit QPS" hit_qps ">= 0.95x unbound"
row "server CPU us/query @40k QPS" cpu_us "<= unbound"
row "  (achieved QPS of that run)" cpu_qps ""
row "avg latency us @20k QPS" lat_us "<= 60 us"
row "RSS MB with 10k cached names" rss_mb "<= 20 MB"
row "cache-miss QPS (TCP to cluster DNS)" miss_qps ">= unbound"
echo
echo "lost queries: hits agent ${R[agent.hit_lost]} unbound ${R[unbound.hit_lost]}; misses agent ${R[agent.miss_lost]} unbound ${R[unbound.miss_lost]}"

verdict() { # label ok
	if [[ $2 == 1 ]]; then echo "  met:     $1"; else echo "  NOT met: $1"; fi
}
echo "targets:"
verdict "cache-hit QPS >= 0.95x unbound" "$(awk -v a="${R[agent.hit_qps]}" -v b="${R[unbound.hit_qps]}" 'BEGIN { print (a >= 0.95 * b) ? 1 : 0 }')"
verdict "CPU per query <= unbound" "$(awk -v a="${R[agent.cpu_us]}" -v b="${R[unbound.cpu_us]}" 'BEGIN { print (a <= b) ? 1 : 0 }')"
verdict "avg latency @20k <= 60 us" "$(awk -v a="${R[agent.lat_us]}" 'BEGIN { print (a <= 60) ? 1 : 0 }')"
verdict "RSS <= 20 MB with 10k names" "$(awk -v a="${R[agent.rss_mb]}" 'BEGIN { print (a <= 20) ? 1 : 0 }')"
verdict "cache-miss QPS >= unbound" "$(awk -v a="${R[agent.miss_qps]}" -v b="${R[unbound.miss_qps]}" 'BEGIN { print (a >= b) ? 1 : 0 }')"
