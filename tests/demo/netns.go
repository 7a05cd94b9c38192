package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/nodelocaldns/nodelocaldns/tests/netns"
	"github.com/nodelocaldns/nodelocaldns/tests/resolvconf"
	"github.com/nodelocaldns/nodelocaldns/webhook/inject"
)

// Addresses of the demo node. They exist only inside the network
// namespaces the demo creates.
const (
	upstreamSvcIP = "10.96.0.11"  // kube-dns-upstream ClusterIP (the agent's cluster forwarder)
	externalIP    = "10.201.0.53" // the node's upstream resolver
	podIP         = "10.244.0.2"
	podGW         = "10.244.0.1"
	nodeIP        = "10.200.0.1"
	kubeDNSHostIP = "10.200.0.2"
	ifaceName     = "nodelocaldns"
	metricsAddr   = nodeIP + ":9253" // prometheus {$POD_IP}:9253, the node's IP
)

// netnode is a node built from three network namespaces:
//
//	pod (eth0 10.244.0.2) -- node (agent on 169.254.20.10) -- kube-dns (NSD on 10.96.0.10, 10.96.0.11, 10.201.0.53)
type netnode struct {
	d                  *demo
	pod, node, kubeDNS string
	dir                string
	agentArgs          []string
	agentEnv           []string
	agent              *proc   // the newest agent
	agents             []*proc // every agent started
	agentRuns          int
	nsd                *proc
}

// netnsSteps runs step 4 as root.
func (d *demo) netnsSteps() {
	n := &netnode{
		d:       d,
		pod:     "nldemo-" + d.id + "-pod",
		node:    "nldemo-" + d.id + "-node",
		kubeDNS: "nldemo-" + d.id + "-kdns",
		dir:     filepath.Join(d.dir, "node"),
	}
	ok := d.step("Node: network namespaces pod -> node -> kube-dns, NSD authoritative for cluster.local", true, n.build)
	ok = d.step("Agent: bin/agent in the node namespace with the DaemonSet's args and ConfigMap", ok, n.startFirstAgent)
	d.step("Resolve from the pod through the agent; cache hits in /metrics", ok, n.resolve)
	ok = d.step("kill -9 the agent: the pod's lookups fall back to kube-dns", ok, n.killAgent)
	ok = d.step("Restart the agent: it adopts the interface and rules left behind", ok, n.restartAgent)
	ok = d.step("Surge upgrade: a second agent takes the sockets over, the first one leaves", ok, n.surge)
	d.step("SIGTERM the last agent: rules and addresses are removed", ok, n.terminate)
}

// build creates the namespaces, links, addresses, routes, the pod's
// resolv.conf, and starts NSD in the kube-dns namespace.
func (n *netnode) build(ctx context.Context) (string, error) {
	for _, tool := range []string{"ip", "getent", "dig", "nsd"} {
		if _, err := binary(tool, ""); err != nil {
			return "", err
		}
	}
	if err := os.MkdirAll(n.dir, 0o755); err != nil {
		return "", err
	}
	n.d.onCleanup("delete network namespaces "+n.pod+", "+n.node+", "+n.kubeDNS, n.destroy)
	n.d.namespaces = append(n.d.namespaces, n.pod, n.node, n.kubeDNS)
	steps := [][]string{
		{"ip", "netns", "add", n.pod}, {"ip", "netns", "add", n.node}, {"ip", "netns", "add", n.kubeDNS},
		n.in(n.pod, "ip", "link", "set", "lo", "up"),
		n.in(n.node, "ip", "link", "set", "lo", "up"),
		n.in(n.kubeDNS, "ip", "link", "set", "lo", "up"),
		// pod <-> node
		n.in(n.node, "ip", "link", "add", "vpod", "type", "veth", "peer", "name", "eth0", "netns", n.pod),
		n.in(n.node, "ip", "addr", "add", podGW+"/24", "dev", "vpod"),
		n.in(n.node, "ip", "link", "set", "vpod", "up"),
		n.in(n.pod, "ip", "addr", "add", podIP+"/24", "dev", "eth0"),
		n.in(n.pod, "ip", "link", "set", "eth0", "up"),
		n.in(n.pod, "ip", "route", "add", "default", "via", podGW),
		// node <-> kube-dns
		n.in(n.node, "ip", "link", "add", "vkdns", "type", "veth", "peer", "name", "eth0", "netns", n.kubeDNS),
		n.in(n.node, "ip", "addr", "add", nodeIP+"/24", "dev", "vkdns"),
		n.in(n.node, "ip", "link", "set", "vkdns", "up"),
		n.in(n.kubeDNS, "ip", "addr", "add", kubeDNSHostIP+"/24", "dev", "eth0"),
		n.in(n.kubeDNS, "ip", "link", "set", "eth0", "up"),
		n.in(n.kubeDNS, "ip", "route", "add", "default", "via", nodeIP),
		n.in(n.kubeDNS, "ip", "addr", "add", kubeDNSIP+"/32", "dev", "lo"),
		n.in(n.kubeDNS, "ip", "addr", "add", upstreamSvcIP+"/32", "dev", "lo"),
		n.in(n.kubeDNS, "ip", "addr", "add", externalIP+"/32", "dev", "lo"),
		// The node routes Service IPs to "kube-dns" (kube-proxy's job in a cluster).
		n.in(n.node, "ip", "route", "add", "10.96.0.0/12", "via", kubeDNSHostIP),
		n.in(n.node, "ip", "route", "add", externalIP+"/32", "via", kubeDNSHostIP),
		n.in(n.node, "sysctl", "-qw", "net.ipv4.ip_forward=1"),
	}
	for _, args := range steps {
		if _, err := runCmd(ctx, args...); err != nil {
			return "", err
		}
	}
	n.d.printf("built 3 network namespaces (%d ip/sysctl commands):\n", len(steps))
	n.d.printf("  %s   eth0 %s, default via %s\n", n.pod, podIP, podGW)
	n.d.printf("  %s  vpod %s, vkdns %s, routes 10.96.0.0/12 and %s via %s, ip_forward=1\n", n.node, podGW, nodeIP, externalIP, kubeDNSHostIP)
	n.d.printf("  %s  eth0 %s; lo %s (kube-dns), %s (kube-dns-upstream), %s (the node's upstream resolver)\n",
		n.kubeDNS, kubeDNSHostIP, kubeDNSIP, upstreamSvcIP, externalIP)

	// Files `ip netns exec` bind-mounts over /etc inside the namespace.
	resolv, source, err := n.podResolvConf()
	if err != nil {
		return "", err
	}
	hostsOnly := "hosts: files dns\n" // never ask a host-wide resolver service
	for ns, files := range map[string]map[string]string{
		n.pod:  {"resolv.conf": resolv, "nsswitch.conf": hostsOnly},
		n.node: {"resolv.conf": "nameserver " + externalIP + "\n", "nsswitch.conf": hostsOnly},
	} {
		for name, text := range files {
			if err := writeNetnsFile(ns, name, text); err != nil {
				return "", err
			}
		}
	}
	n.d.printf("pod resolv.conf from %s, written to /etc/netns/%s/resolv.conf\n", source, n.pod)

	if err := n.startNSD(ctx); err != nil {
		return "", err
	}
	return fmt.Sprintf("netns %s, %s, %s; NSD answers %s on %s", n.pod, n.node, n.kubeDNS, serviceFQDN, kubeDNSIP), nil
}

// podResolvConf is the resolv.conf of the injected pod of step 3, or (when
// the Kubernetes steps did not run) the one the webhook's injection code
// computes for a plain pod in namespace demo.
func (n *netnode) podResolvConf() (string, string, error) {
	if n.d.podResolv != "" {
		return n.d.podResolv, n.d.podSource, nil
	}
	opts, err := inject.BaseOptions(5, 1, 2)
	if err != nil {
		return "", "", err
	}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "plain", Namespace: demoNamespace}}
	res := inject.Inject(pod, demoNamespace, nil, inject.Config{
		LocalIPs: []string{localDNSIP}, KubeDNSIPs: []string{kubeDNSIP}, ClusterDomain: clusterDomain, Options: opts,
	})
	if !res.Injected {
		return "", "", fmt.Errorf("webhook/inject did not inject the demo pod: %s %v", res.Reason, res.Warnings)
	}
	return resolvconf.Render(res.DNSConfig), "webhook/inject.Inject in-process (the Kubernetes steps did not run)", nil
}

func writeNetnsFile(ns, name, text string) error {
	dir := filepath.Join("/etc/netns", ns)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644)
}

// startNSD runs NSD in the kube-dns namespace on the kube-dns,
// kube-dns-upstream and upstream-resolver addresses.
func (n *netnode) startNSD(ctx context.Context) error {
	nsd, _ := binary("nsd", "NSD_BIN")
	dir := filepath.Join(n.dir, "nsd")
	conf, err := writeNSDConfig(dir, []string{kubeDNSIP, upstreamSvcIP, externalIP}, 53)
	if err != nil {
		return err
	}
	args := n.in(n.kubeDNS, nsd, "-d", "-c", conf)
	n.d.show(shellJoin(args)+" &", "")
	p, err := n.d.startProc("nsd", filepath.Join(dir, "nsd.out"), nil, args...)
	if err != nil {
		return err
	}
	n.d.onCleanup("stop NSD", p.kill)
	n.nsd = p
	deadline := time.Now().Add(10 * time.Second)
	for {
		out, err := runCmd(ctx, n.in(n.kubeDNS, "dig", "+short", "+time=1", "+tries=1", "@"+kubeDNSIP, serviceFQDN, "A")...)
		if err == nil && strings.TrimSpace(out) == serviceAddr {
			break
		}
		if p.exited() || time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(dir, "nsd.log"))
			return fmt.Errorf("NSD not answering within 10s: %s %s", p.log(), log)
		}
		time.Sleep(100 * time.Millisecond)
	}
	n.d.printf("NSD (pid %d) is authoritative for cluster.local and example.com in %s\n", p.pid(), n.kubeDNS)
	return nil
}

// destroy removes the namespaces and their /etc/netns files.
func (n *netnode) destroy() {
	for _, a := range n.agents {
		a.kill()
	}
	for _, ns := range []string{n.pod, n.node, n.kubeDNS} {
		_, _ = runCmd(context.Background(), "ip", "netns", "del", ns)
		_ = os.RemoveAll(filepath.Join("/etc/netns", ns))
	}
}

// in returns args prefixed to run inside namespace ns.
func (n *netnode) in(ns string, args ...string) []string {
	return append([]string{"ip", "netns", "exec", ns}, args...)
}

// agentCommand builds the agent's command line from the rendered
// DaemonSet's arguments, with the file paths moved into the demo directory.
func (n *netnode) agentCommand() error {
	rendered, err := n.d.manifests()
	if err != nil {
		return err
	}
	dsArgs, dsEnv, template, err := agentManifest(rendered, nodeIP)
	if err != nil {
		return err
	}
	agentBin, err := binary("agent", "AGENT_BIN")
	if err != nil {
		return err
	}
	kubeDNSDir := filepath.Join(n.dir, "kube-dns")
	ups, _ := json.Marshal([]string{externalIP})
	files := map[string]string{
		filepath.Join(n.dir, "Corefile.base"):            template,
		filepath.Join(kubeDNSDir, "upstreamNameservers"): string(ups),
	}
	for path, text := range files {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
			return err
		}
	}
	override := map[string]string{
		"conf":         filepath.Join(n.dir, "Corefile"),
		"basecorefile": filepath.Join(n.dir, "Corefile.base"),
		"kubednscm":    kubeDNSDir,
		"pidfile":      filepath.Join(n.dir, "agent.pid"),
		"rundir":       filepath.Join(n.dir, "run"),
	}
	args := n.in(n.node, agentBin)
	for _, a := range dsArgs {
		name, _, _ := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if v, ok := override[name]; ok {
			a = "-" + name + "=" + v
			delete(override, name)
		}
		args = append(args, a)
	}
	for name, v := range override {
		args = append(args, "-"+name+"="+v)
	}
	n.agentArgs = args
	n.agentEnv = append([]string{"KUBE_DNS_UPSTREAM_SERVICE_HOST=" + upstreamSvcIP}, dsEnv...)
	n.d.printf("agent arguments: the rendered DaemonSet's %q, file paths moved to %s\n", dsArgs, n.dir)
	n.d.printf("Corefile template: the rendered ConfigMap node-local-dns; kube-dns ConfigMap upstreamNameservers %s\n", ups)
	return nil
}

// runAgent starts the agent in the node namespace and waits until it serves.
func (n *netnode) runAgent(ctx context.Context) error {
	n.agentRuns++
	logPath := filepath.Join(n.dir, fmt.Sprintf("agent-%d.log", n.agentRuns))
	n.d.show(strings.Join(n.agentEnv, " ")+" "+shellJoin(n.agentArgs)+" &", "")
	p, err := n.d.startProc("agent", logPath, n.agentEnv, n.agentArgs...)
	if err != nil {
		return err
	}
	n.agent = p
	n.agents = append(n.agents, p)
	if err := p.waitLog(ctx, "] serving ", 30*time.Second); err != nil {
		return err
	}
	n.d.printf("agent pid %d serving; log %s:\n", p.pid(), logPath)
	for _, l := range grepLines(p.log(), "node:", "serving") {
		n.d.printf("    %s\n", l)
	}
	return nil
}

// startFirstAgent starts the agent and shows its interface and rules.
func (n *netnode) startFirstAgent(ctx context.Context) (string, error) {
	if err := n.agentCommand(); err != nil {
		return "", err
	}
	if err := n.runAgent(ctx); err != nil {
		return "", err
	}
	addrs := n.showInterface(ctx)
	rules := n.showRules(ctx)
	if len(addrs) == 0 || rules == 0 {
		return "", fmt.Errorf("after start: interface addresses %v, %d rules", addrs, rules)
	}
	if err := n.showEndpoints(ctx); err != nil {
		return "", err
	}
	return fmt.Sprintf("interface %s holds %v; %d NOTRACK/ACCEPT rules", ifaceName, addrs, rules), nil
}

// showInterface prints the agent's interface and returns its addresses.
func (n *netnode) showInterface(ctx context.Context) []string {
	out, err := n.d.exec(ctx, n.in(n.node, "ip", "-br", "addr", "show", "dev", ifaceName)...)
	if err != nil {
		return nil
	}
	f := strings.Fields(out)
	if len(f) < 3 {
		return nil
	}
	return f[2:]
}

// showRules prints the agent's iptables rules in the node namespace and
// returns how many there are.
func (n *netnode) showRules(ctx context.Context) int {
	save := "iptables-save"
	if n.agent != nil {
		for _, l := range grepLines(n.agent.log(), "iptables backend ") {
			if strings.Contains(l, "iptables backend legacy") {
				save = "iptables-legacy-save"
			} else if strings.Contains(l, "iptables backend nft") {
				save = "iptables-nft-save"
			}
		}
	}
	out, err := runCmd(ctx, n.in(n.node, save)...)
	if err != nil {
		n.d.show(shellJoin(n.in(n.node, save)), out)
		return 0
	}
	lines := grepLines(out, "nodelocaldns:")
	shown := lines
	if len(shown) > 6 {
		shown = append(append([]string{}, shown[:6]...), fmt.Sprintf("... (%d rules in all)", len(lines)))
	}
	n.d.show(shellJoin(n.in(n.node, save))+" | grep nodelocaldns:", strings.Join(shown, "\n"))
	if len(lines) == 0 {
		n.d.printf("    (no rule with the nodelocaldns: comment)\n")
	}
	return len(lines)
}

// getent resolves name in the pod with glibc and returns the address and
// how long it took.
func (n *netnode) getent(ctx context.Context, name string) (string, time.Duration, error) {
	args := n.in(n.pod, "getent", "hosts", name)
	start := time.Now()
	out, err := runCmd(ctx, args...)
	took := time.Since(start)
	n.d.show(shellJoin(args), out)
	n.d.printf("    (%v)\n", took.Round(time.Millisecond))
	if err != nil {
		n.diagnose(ctx)
		return "", took, err
	}
	f := strings.Fields(out)
	if len(f) == 0 {
		return "", took, fmt.Errorf("getent hosts %s: no answer", name)
	}
	return f[0], took, nil
}

// diagnose prints what the pod can reach, after a failed lookup.
func (n *netnode) diagnose(ctx context.Context) {
	n.d.printf("diagnostics:\n")
	for _, srv := range []string{localDNSIP, kubeDNSIP} {
		_, _ = n.d.exec(ctx, n.in(n.pod, "dig", "+time=1", "+tries=1", "+noall", "+answer", "+comments", "@"+srv, serviceFQDN)...)
	}
	_, _ = n.d.exec(ctx, n.in(n.pod, "ip", "-br", "addr")...)
	_, _ = n.d.exec(ctx, n.in(n.node, "ip", "-br", "addr")...)
	_, _ = n.d.exec(ctx, n.in(n.node, "ip", "neigh")...)
	if n.agent != nil {
		n.d.printf("agent log:\n%s\n", n.agent.tail(20))
	}
	if n.nsd != nil {
		log, _ := os.ReadFile(filepath.Join(n.dir, "nsd", "nsd.log"))
		n.d.printf("NSD exited: %v (%v); output and log:\n%s\n%s\n", n.nsd.exited(), n.nsd.err, n.nsd.log(), log)
	}
}

// digServer asks for name with the pod's resolv.conf (dig +search) and
// returns the server that answered and the address.
func (n *netnode) digServer(ctx context.Context, name string) (server, addr string, err error) {
	args := n.in(n.pod, "dig", "+search", "+noall", "+answer", "+stats", "+time=1", "+tries=1", name, "A")
	out, err := runCmd(ctx, args...)
	n.d.show(shellJoin(args), strings.Join(grepLines(out, "IN\tA", "SERVER:", "communications error", "timed out"), "\n"))
	if err != nil {
		n.diagnose(ctx)
		return "", "", err
	}
	for l := range strings.SplitSeq(out, "\n") {
		if after, ok := strings.CutPrefix(l, ";; SERVER: "); ok {
			server, _, _ = strings.Cut(after, "#")
		} else if f := strings.Fields(l); len(f) >= 5 && f[3] == "A" {
			addr = f[4]
		}
	}
	return server, addr, nil
}

// metrics scrapes the agent's /metrics from inside the node namespace.
func (n *netnode) metrics(ctx context.Context) (string, error) {
	return n.get(ctx, metricsAddr, "/metrics")
}

// get fetches http://addr/path from inside the node namespace.
func (n *netnode) get(ctx context.Context, addr, path string) (string, error) {
	client := &http.Client{
		Timeout: 5 * time.Second,
		Transport: &http.Transport{DialContext: func(context.Context, string, string) (net.Conn, error) {
			return netns.DialTCP(n.node, addr)
		}},
	}
	return httpGet(ctx, client, "http://"+addr+path)
}

// showEndpoints prints the agent's health, readiness and node set-up
// metrics, read from inside the node namespace.
func (n *netnode) showEndpoints(ctx context.Context) error {
	for _, ep := range []struct{ addr, path string }{
		{localDNSIP + ":8080", "/health"},
		{localDNSIP + ":8181", "/ready"},
	} {
		body, err := n.get(ctx, ep.addr, ep.path)
		if err != nil {
			return fmt.Errorf("GET http://%s%s: %w", ep.addr, ep.path, err)
		}
		n.d.printf("GET http://%s%s (the probes of the DaemonSet): 200 %s\n", ep.addr, ep.path, strings.TrimSpace(firstLine(body)))
	}
	body, err := n.get(ctx, nodeIP+":9353", "/metrics")
	if err != nil {
		return fmt.Errorf("setup metrics (-metrics-listen-address): %w", err)
	}
	n.d.printf("GET http://%s:9353/metrics (-metrics-listen-address $(POD_IP), the node's IP), the coredns_nodecache_setup_errors_total lines:\n", nodeIP)
	n.d.show("", strings.Join(grepLines(body, "coredns_nodecache_setup_errors_total{"), "\n"))
	return nil
}

// resolve looks names up from the pod and shows the cache hits.
func (n *netnode) resolve(ctx context.Context) (string, error) {
	out, _ := runCmd(ctx, n.in(n.pod, "cat", "/etc/resolv.conf")...)
	n.d.show(shellJoin(n.in(n.pod, "cat", "/etc/resolv.conf")), out)
	before, err := n.metrics(ctx)
	if err != nil {
		return "", fmt.Errorf("metrics: %w", err)
	}
	var took []string
	for range 2 {
		addr, d, err := n.getent(ctx, serviceName)
		if err != nil {
			return "", err
		}
		if addr != serviceAddr {
			return "", fmt.Errorf("getent hosts %s = %s, want %s", serviceName, addr, serviceAddr)
		}
		took = append(took, d.Round(time.Millisecond).String())
	}
	addr, _, err := n.getent(ctx, externalName)
	if err != nil {
		return "", err
	}
	if addr != externalAddr {
		return "", fmt.Errorf("getent hosts %s = %s, want %s", externalName, addr, externalAddr)
	}
	server, addr, err := n.digServer(ctx, serviceName)
	if err != nil {
		return "", err
	}
	if server != localDNSIP || addr != serviceAddr {
		return "", fmt.Errorf("dig +search %s: answered by %q with %q, want %s with %s", serviceName, server, addr, localDNSIP, serviceAddr)
	}
	after, err := n.metrics(ctx)
	if err != nil {
		return "", fmt.Errorf("metrics: %w", err)
	}
	n.d.printf("GET http://%s/metrics from inside the node namespace, the coredns_cache_hits_total and coredns_cache_misses_total lines:\n", metricsAddr)
	n.d.show("",
		strings.Join(grepLines(after, "coredns_cache_hits_total{", "coredns_cache_misses_total{"), "\n"))
	hits := metricSum(after, "coredns_cache_hits_total") - metricSum(before, "coredns_cache_hits_total")
	misses := metricSum(after, "coredns_cache_misses_total") - metricSum(before, "coredns_cache_misses_total")
	if hits < 1 {
		return "", fmt.Errorf("no cache hit in the agent's metrics (hits +%v, misses +%v)", hits, misses)
	}
	return fmt.Sprintf("getent %s -> %s (%s), dig answered by %s; cache hits +%v, misses +%v",
		serviceName, serviceAddr, strings.Join(took, " then "), localDNSIP, hits, misses), nil
}

// killAgent SIGKILLs the agent and shows the pod's lookups going to kube-dns.
func (n *netnode) killAgent(ctx context.Context) (string, error) {
	n.d.show(fmt.Sprintf("kill -9 %d", n.agent.pid()), "")
	n.agent.kill()
	n.d.printf("the agent is gone; what it set up stays (nobody removed it):\n")
	addrs := n.showInterface(ctx)
	rules := n.showRules(ctx)
	args := n.in(n.pod, "dig", "+time=1", "+tries=1", "@"+localDNSIP, serviceFQDN)
	out, _ := runCmd(ctx, args...)
	n.d.show(shellJoin(args), strings.Join(grepLines(out, "communications error", "timed out", "status:", "no servers"), "\n"))
	server, _, err := n.digServer(ctx, serviceName)
	if err != nil {
		return "", err
	}
	if server != kubeDNSIP {
		return "", fmt.Errorf("with the agent dead, dig got its answer from %q, want kube-dns %s", server, kubeDNSIP)
	}
	n.d.printf("nothing listens on %s any more: the node's kernel answers ICMP port unreachable and the resolver moves on to kube-dns %s.\n", localDNSIP, kubeDNSIP)
	// The DaemonSet passes -icmp-ratelimit=0, so the agent has turned the
	// kernel's per-destination ICMP rate limit off on the node: every query
	// to the dead address gets its port unreachable at once.
	limit, err := runCmd(ctx, n.in(n.node, "cat", "/proc/sys/net/ipv4/icmp_ratelimit")...)
	if err != nil {
		return "", err
	}
	limit = strings.TrimSpace(limit)
	n.d.printf("net.ipv4.icmp_ratelimit on the node = %s (set by the agent's -icmp-ratelimit=0 from the DaemonSet; the kernel default 1000 ms would make most of these lookups wait for `options timeout`):\n", limit)
	took, err := n.lookups(ctx, 3)
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("getent %s answered by kube-dns in %s (icmp_ratelimit=%s); interface %v and %d rules left behind",
		serviceName, strings.Join(took, ", "), limit, addrs, rules), nil
}

// lookups resolves the service name count times from the pod and returns
// how long each took.
func (n *netnode) lookups(ctx context.Context, count int) ([]string, error) {
	var took []string
	for range count {
		addr, d, err := n.getent(ctx, serviceName)
		if err != nil {
			return nil, err
		}
		if addr != serviceAddr {
			return nil, fmt.Errorf("getent hosts %s = %s, want %s", serviceName, addr, serviceAddr)
		}
		took = append(took, d.Round(time.Millisecond).String())
	}
	return took, nil
}

// restartAgent starts a new agent that adopts what the killed one left.
func (n *netnode) restartAgent(ctx context.Context) (string, error) {
	if err := n.runAgent(ctx); err != nil {
		return "", err
	}
	if !strings.Contains(n.agent.log(), "adopted") {
		return "", fmt.Errorf("the restarted agent did not report adopting interface %s:\n%s", ifaceName, n.agent.tail(15))
	}
	rules := n.showRules(ctx)
	server, addr, err := n.digServer(ctx, serviceName)
	if err != nil {
		return "", err
	}
	if server != localDNSIP || addr != serviceAddr {
		return "", fmt.Errorf("dig +search %s: answered by %q with %q, want %s", serviceName, server, addr, localDNSIP)
	}
	return fmt.Sprintf("interface adopted, %d rules (no duplicates), pod answered by %s again", rules, localDNSIP), nil
}

// surge starts a second agent beside the running one (what a DaemonSet
// with maxSurge does), then stops the old one: the node keeps answering and
// its rules stay.
func (n *netnode) surge(ctx context.Context) (string, error) {
	old := n.agent
	if err := n.runAgent(ctx); err != nil {
		return "", err
	}
	if !strings.Contains(n.agent.log(), "took over") {
		return "", fmt.Errorf("the new agent did not take the listening sockets over:\n%s", n.agent.tail(15))
	}
	n.d.show(fmt.Sprintf("kill -TERM %d", old.pid()), "")
	took, err := old.term(30 * time.Second)
	if err != nil {
		return "", fmt.Errorf("old agent exit after SIGTERM: %w\n%s", err, old.tail(15))
	}
	n.d.printf("old agent %d exited in %v:\n", old.pid(), took.Round(time.Millisecond))
	for _, l := range grepLines(old.log(), "shutting down", "another instance", "last instance") {
		n.d.printf("    %s\n", l)
	}
	rules := n.showRules(ctx)
	server, addr, err := n.digServer(ctx, serviceName)
	if err != nil {
		return "", err
	}
	if rules == 0 || server != localDNSIP || addr != serviceAddr {
		return "", fmt.Errorf("after the old agent left: %d rules, answered by %q with %q", rules, server, addr)
	}
	return fmt.Sprintf("new agent took the sockets over; old one left in %v; %d rules kept, pod answered by %s", took.Round(time.Millisecond), rules, localDNSIP), nil
}

// terminate sends SIGTERM and shows that the node is clean.
func (n *netnode) terminate(ctx context.Context) (string, error) {
	n.d.show(fmt.Sprintf("kill -TERM %d", n.agent.pid()), "")
	took, err := n.agent.term(30 * time.Second)
	if err != nil {
		return "", fmt.Errorf("agent exit after SIGTERM: %w\n%s", err, n.agent.tail(15))
	}
	n.d.printf("agent exited cleanly in %v:\n", took.Round(time.Millisecond))
	for _, l := range grepLines(n.agent.log(), "shutting down", "last instance", "teardown") {
		n.d.printf("    %s\n", l)
	}
	rules := n.showRules(ctx)
	args := n.in(n.node, "ip", "link", "show", "dev", ifaceName)
	out, linkErr := runCmd(ctx, args...)
	n.d.show(shellJoin(args), out)
	if rules != 0 || linkErr == nil {
		return "", fmt.Errorf("after SIGTERM: %d rules left, interface %s still there: %v", rules, ifaceName, linkErr == nil)
	}
	server, _, err := n.digServer(ctx, serviceName)
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("exit in %v, 0 rules, no %s interface; pod now answered by %s", took.Round(time.Millisecond), ifaceName, server), nil
}

// metricSum adds up the samples of metric (Prometheus text format).
func metricSum(text, metric string) float64 {
	sum := 0.0
	for l := range strings.SplitSeq(text, "\n") {
		if !strings.HasPrefix(l, metric+"{") && !strings.HasPrefix(l, metric+" ") {
			continue
		}
		f := strings.Fields(l)
		if v, err := strconv.ParseFloat(f[len(f)-1], 64); err == nil {
			sum += v
		}
	}
	return sum
}
