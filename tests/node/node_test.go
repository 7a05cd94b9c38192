// Package node proves the agent's work on a node in network namespaces
// built by the tests: a pod namespace with the resolv.conf the webhook
// renders, the node namespace running bin/agent, and a kube-dns namespace
// with NSD holding the kube-dns ClusterIP. Every test needs root (it skips
// without, and fails under CI).
package node

import (
	"slices"
	"strings"
	"testing"
	"time"
)

// fallbackBound is the longest a lookup may take while the agent is down.
const fallbackBound = 1500 * time.Millisecond

func (c *cluster) expectResolves(name, want string) time.Duration {
	c.t.Helper()
	got, d, err := c.getent(name)
	if err != nil {
		c.t.Fatalf("resolve %s: %v", name, err)
	}
	if got != want {
		c.t.Fatalf("resolve %s = %s, want %s", name, got, want)
	}
	if d > time.Second {
		c.t.Logf("slow lookup: %s took %v", name, d)
	}
	return d
}

// expectNodeState checks the agent's rules and addresses: all of them
// exactly once, or none at all.
func (c *cluster) expectNodeState(present bool) {
	c.t.Helper()
	rules, addrs := c.ourRules(), c.linkAddrs()
	if !present {
		if len(rules) != 0 || len(addrs) != 0 {
			c.t.Fatalf("node not clean: %d rules %v, addresses %v", len(rules), rules, addrs)
		}
		return
	}
	if len(rules) != c.wantRules() {
		c.t.Fatalf("%d rules on the node, want exactly %d:\n%s", len(rules), c.wantRules(), strings.Join(rules, "\n"))
	}
	seen := map[string]bool{}
	for _, r := range rules {
		if seen[r] {
			c.t.Fatalf("duplicate rule %s", r)
		}
		seen[r] = true
	}
	for ip := range strings.SplitSeq(c.localIPs(), ",") {
		if !slices.ContainsFunc(addrs, func(a string) bool { return strings.HasPrefix(a, ip+"/") }) {
			c.t.Fatalf("address %s missing from %s: %v", ip, ifaceName, addrs)
		}
	}
}

// waitRules waits (up to limit) until exactly want rules of ours are
// installed and returns how long that took.
func (c *cluster) waitRules(want int, limit time.Duration) time.Duration {
	c.t.Helper()
	start := time.Now()
	for {
		if n := len(c.ourRules()); n == want {
			return time.Since(start)
		} else if time.Since(start) > limit {
			c.t.Fatalf("%d rules after %s, want %d", n, limit, want)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestSysctlsOnlyBinary: bin/agent -sysctls-only (the init container of
// manifests/components/fast-fallback) sets the ICMP rate limits of the node
// namespace and exits 0 without serving; with nothing to apply it exits
// non-zero.
func TestSysctlsOnlyBinary(t *testing.T) {
	c := newCluster(t, clusterOpts{})
	for _, tc := range []struct {
		name    string
		args    []string
		wantErr bool
		want    string
	}{
		{name: "sets 20 ms", args: []string{"-sysctls-only", "-icmp-ratelimit=20"}, want: "20"},
		{name: "sets 0 ms", args: []string{"-sysctls-only", "-icmp-ratelimit=0"}, want: "0"},
		{name: "nothing to apply", args: []string{"-sysctls-only"}, wantErr: true, want: "0"},
		{name: "bad value", args: []string{"-sysctls-only", "-icmp-ratelimit=-3"}, wantErr: true, want: "0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := c.in(c.node, append([]string{c.agentBin}, tc.args...)...)
			if (err != nil) != tc.wantErr {
				t.Fatalf("agent %v: %v, want error %v:\n%s", tc.args, err, tc.wantErr, out)
			}
			if v4, v6 := c.icmpRateLimits(); v4 != tc.want || v6 != tc.want {
				t.Errorf("after agent %v: icmp_ratelimit %s, ipv6 %s, want %s", tc.args, v4, v6, tc.want)
			}
		})
	}
}

// TestInjectionLifecycle: serve, fall back after SIGKILL, adopt leftovers,
// repair hand-made damage within a sync, never duplicate, tear down on
// SIGTERM.
func TestInjectionLifecycle(t *testing.T) {
	c := newCluster(t, clusterOpts{})
	// The fresh node namespace has the kernel's default ICMP rate limits:
	// the agent, not the test, must lift them.
	if v4, v6 := c.icmpRateLimits(); v4 == "0" || v6 == "0" {
		t.Fatalf("fresh node netns already has icmp_ratelimit %s / %s, want the kernel default", v4, v6)
	}
	a := c.startAgent()
	if v4, v6 := c.icmpRateLimits(); v4 != "0" || v6 != "0" {
		t.Fatalf("after the agent started with -icmp-ratelimit=0: icmp_ratelimit %s, ipv6 ratelimit %s, want 0 and 0", v4, v6)
	}
	c.expectNodeState(true)
	if !strings.Contains(a.log.String(), "created a bridge without ports") && !strings.Contains(a.log.String(), "(dummy) created") {
		t.Errorf("the log does not say which link type was used:\n%s", a.log.String())
	}

	// The pod resolves cluster names through the search path, and external
	// names, through the agent.
	c.expectResolves(clusterName, clusterAddr)
	c.expectResolves("kubernetes.default", "10.96.0.1")
	c.expectResolves(externalName, externalAddr)
	if got, err := c.digIn(c.pod, localIP, clusterFQDN); err != nil || got != clusterAddr {
		t.Fatalf("dig @%s %s = %q, %v", localIP, clusterFQDN, got, err)
	}
	m := c.metrics()
	if n := metricSum(m, "coredns_dns_requests_total"); n < 4 {
		t.Errorf("coredns_dns_requests_total = %v, want >= 4 (the lookups above)", n)
	}
	if n := metricSum(m, "coredns_dns_responses_total", `rcode="NOERROR"`); n < 4 {
		t.Errorf("NOERROR responses = %v, want >= 4", n)
	}
	for _, typ := range []string{"iptables", "sysctl"} {
		if !strings.Contains(m, `coredns_nodecache_setup_errors_total{errortype="`+typ+`"} 0`) {
			t.Errorf("no zero setup error counter for %s in the metrics", typ)
		}
	}

	// kill -9: rules and addresses stay behind, nobody listens: every lookup
	// falls back to kube-dns (the pod's second nameserver) quickly.
	a.kill()
	var worst time.Duration
	for range 5 {
		for _, q := range []struct{ name, want string }{{clusterName, clusterAddr}, {externalName, externalAddr}, {"kubernetes.default", "10.96.0.1"}} {
			d := c.expectResolves(q.name, q.want)
			worst = max(worst, d)
			if d > fallbackBound {
				t.Errorf("lookup of %s took %v with the agent killed, want < %v", q.name, d, fallbackBound)
			}
		}
	}
	t.Logf("fallback after kill -9: slowest of 15 lookups %v", worst)
	c.expectNodeState(true) // leftovers

	// A new agent adopts the leftovers: same rules, no duplicates.
	b := c.startAgent()
	if !strings.Contains(b.log.String(), "adopted") {
		t.Errorf("new agent did not report adopting the interface:\n%s", b.log.String())
	}
	c.expectNodeState(true)
	c.expectResolves(clusterName, clusterAddr)

	// Rules flushed and an address deleted by hand are back within one sync
	// interval (1s here).
	c.mustIn(c.node, "iptables", "-t", "raw", "-F", "PREROUTING")
	c.mustIn(c.node, "iptables", "-F", "INPUT")
	c.mustIn(c.node, "ip", "addr", "del", localIP+"/32", "dev", ifaceName)
	d := c.waitRules(c.wantRules(), 3*time.Second)
	t.Logf("flushed rules back after %v (sync interval 1s)", d)
	time.Sleep(200 * time.Millisecond)
	c.expectNodeState(true)

	// A duplicate added by hand is removed, and many syncs add none.
	c.mustIn(c.node, "iptables", "-t", "raw", "-I", "PREROUTING", "-p", "udp", "-d", localIP, "--dport", "53",
		"-m", "comment", "--comment", "nodelocaldns: no conntrack for queries to the cache udp to "+localIP+":53", "-j", "NOTRACK")
	if n := len(c.ourRules()); n != c.wantRules()+1 {
		t.Fatalf("hand-made duplicate not installed: %d rules", n)
	}
	c.waitRules(c.wantRules(), 3*time.Second)
	time.Sleep(5 * time.Second) // five more syncs
	c.expectNodeState(true)

	// SIGTERM: rules and addresses go, the process exits within seconds.
	took := b.term()
	t.Logf("SIGTERM to exit: %v (lame duck 1s)", took)
	if took > 5*time.Second {
		t.Errorf("exit took %v after SIGTERM, want < 5s", took)
	}
	c.expectNodeState(false)
	if out, err := c.in(c.node, "ip", "link", "show", ifaceName); err == nil {
		t.Errorf("interface still there after teardown: %s", out)
	}
	// And pods still resolve, through kube-dns.
	c.expectResolves(clusterName, clusterAddr)
}

// TestTwinInstances: two agents share the listeners; kill -9 of one loses
// almost nothing, a rolling upgrade loses nothing and keeps the node set
// up, the last one out tears down.
func TestTwinInstances(t *testing.T) {
	const qps, seconds = 3000, 8
	c := newCluster(t, clusterOpts{})
	a := c.startAgent()
	b := c.startAgent()
	if !strings.Contains(b.log.String(), "took over") {
		t.Fatalf("second instance did not take the sockets over:\n%s", b.log.String())
	}
	c.expectNodeState(true)
	c.expectResolves(clusterName, clusterAddr) // warm the cache

	// kill -9 of one twin under load.
	perf := c.startPerf(localIP, qps, seconds, false)
	time.Sleep(3 * time.Second)
	a.kill()
	stillRunning(t, perf)
	r := <-perf
	if r.sent < 0 {
		t.Fatal(r.raw)
	}
	lossKill := float64(r.lost) / float64(r.sent)
	t.Logf("kill -9 of one twin at %d QPS: %d sent, %d lost (%.4f%%)", qps, r.sent, r.lost, 100*lossKill)
	if r.sent < qps*seconds*9/10 {
		t.Errorf("dnsperf sent only %d queries, want ~%d:\n%s", r.sent, qps*seconds, r.raw)
	}
	if lossKill > 0.001 {
		t.Errorf("kill -9 lost %.4f%% of queries, want <= 0.1%%:\n%s", 100*lossKill, r.raw)
	}
	c.expectNodeState(true)

	// Rolling upgrades: start a new instance, then SIGTERM the old one;
	// once with cache hits, once with every query forwarded upstream (so
	// the old instance has misses in flight when it stops).
	old := b
	for _, drill := range []struct {
		name   string
		misses bool
	}{{"cache hits", false}, {"cache misses", true}} {
		perf = c.startPerf(localIP, qps, seconds, drill.misses)
		time.Sleep(1500 * time.Millisecond)
		next := c.startAgent()
		if !strings.Contains(next.log.String(), "took over") {
			t.Errorf("new instance did not take the sockets over:\n%s", next.log.String())
		}
		time.Sleep(1 * time.Second)
		old.term()
		stillRunning(t, perf)
		if !strings.Contains(old.log.String(), "another instance is running") {
			t.Errorf("old instance did not leave the node to the new one:\n%s", old.log.String())
		}
		c.expectNodeState(true)
		r = <-perf
		if r.sent < 0 {
			t.Fatal(r.raw)
		}
		t.Logf("rolling upgrade at %d QPS, %s: %d sent, %d lost", qps, drill.name, r.sent, r.lost)
		if r.lost != 0 || r.sent < qps*seconds*9/10 {
			t.Errorf("rolling upgrade (%s) lost %d of %d queries, want 0:\n%s", drill.name, r.lost, r.sent, r.raw)
		}
		c.expectNodeState(true)
		c.expectResolves(clusterName, clusterAddr)
		old = next
	}

	// The last instance out tears down.
	old.term()
	c.expectNodeState(false)
}

// stillRunning fails the test when the load ended before the drill's event:
// the drill would prove nothing.
func stillRunning(t *testing.T, perf <-chan perfResult) {
	t.Helper()
	if len(perf) > 0 {
		t.Fatal("dnsperf had finished before the drill's kill/upgrade was done: the machine is too slow for this drill")
	}
}

// TestInterceptionMode: a pod with a plain resolv.conf (nameserver = the
// kube-dns ClusterIP) is answered by the agent through the NOTRACK path,
// and by kube-dns once the agent is gone.
func TestInterceptionMode(t *testing.T) {
	c := newCluster(t, clusterOpts{interception: true})
	a := c.startAgent()
	c.expectNodeState(true)
	before := metricSum(c.metrics(), "coredns_dns_requests_total")
	c.expectResolves(clusterName, clusterAddr)
	c.expectResolves(externalName, externalAddr)
	if got, err := c.digIn(c.pod, kubeDNSIP, clusterFQDN); err != nil || got != clusterAddr {
		t.Fatalf("dig @%s = %q, %v", kubeDNSIP, got, err)
	}
	after := metricSum(c.metrics(), "coredns_dns_requests_total")
	if after-before < 3 {
		t.Errorf("agent counted %v requests for lookups sent to the kube-dns IP, want >= 3: not intercepted", after-before)
	}
	raw := strings.Join(c.ourRules(), "\n")
	if !strings.Contains(raw, "-d "+kubeDNSIP+"/32") || !strings.Contains(raw, "NOTRACK") {
		t.Errorf("no NOTRACK rule for the kube-dns IP:\n%s", raw)
	}
	a.term()
	c.expectNodeState(false)
	// Now kube-dns itself answers the same resolv.conf.
	c.expectResolves(clusterName, clusterAddr)
	if got, err := c.digIn(c.pod, kubeDNSIP, clusterFQDN); err != nil || got != clusterAddr {
		t.Fatalf("after teardown dig @%s = %q, %v", kubeDNSIP, got, err)
	}
}

// TestDualStack: one agent serves an IPv4 and an IPv6 local IP, with
// iptables and ip6tables rules, and removes both on SIGTERM.
func TestDualStack(t *testing.T) {
	c := newCluster(t, clusterOpts{ipv6: true})
	a := c.startAgent()
	c.expectNodeState(true)
	v6 := 0
	for _, r := range c.ourRules() {
		if strings.HasPrefix(r, "ip6tables") {
			v6++
		}
	}
	if v6 != 12 {
		t.Errorf("%d ip6tables rules, want 12", v6)
	}
	for _, server := range []string{localIP, localIP6} {
		if got, err := c.digIn(c.pod, server, clusterFQDN); err != nil || got != clusterAddr {
			t.Errorf("dig @%s %s = %q, %v", server, clusterFQDN, got, err)
		}
		if got, err := c.digIn(c.pod, server, externalName); err != nil || got != externalAddr {
			t.Errorf("dig @%s %s = %q, %v", server, externalName, got, err)
		}
	}
	a.term()
	c.expectNodeState(false)
	if got, err := c.digIn(c.pod, localIP6, clusterFQDN); err == nil && got != "" {
		t.Errorf("IPv6 local IP still answers after teardown: %s", got)
	}
}
