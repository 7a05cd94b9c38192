package agent

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/nodelocaldns/nodelocaldns/tests/testenv"
)

// agentBin is the agent built once by TestMain.
var agentBin string

func TestMain(m *testing.M) {
	if os.Geteuid() != 0 && !testenv.InCI() {
		os.Exit(m.Run()) // every agent test skips without root: no need to build it
	}
	dir, err := os.MkdirTemp("", "agent-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	agentBin, err = BuildAgent(dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// officialTemplate returns the official ConfigMap's Corefile (testdata keeps
// a verbatim copy, checked against the reference manifest when present)
// with one change: `prometheus :9253` listens on the local IP rather than
// on every address, so parallel agents on one host do not share it.
func officialTemplate(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "Corefile.base"))
	if err != nil {
		t.Fatal(err)
	}
	return strings.ReplaceAll(string(b), "prometheus :9253", "prometheus __PILLAR__LOCAL__DNS__:9253")
}

func TestTemplateIsTheOfficialOne(t *testing.T) {
	manifest, err := os.ReadFile(OfficialManifest)
	if err != nil {
		t.Skipf("reference manifest not available: %v", err)
	}
	want, err := ManifestCorefile(manifest)
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join("testdata", "Corefile.base"))
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != want {
		t.Fatalf("testdata/Corefile.base differs from the ConfigMap in %s:\n%s", OfficialManifest, want)
	}
}

// TestTemplateMatchesParserTestdata keeps this copy and the Corefile
// parser's copy of the official ConfigMap identical (comments aside), so the
// check also holds where the reference manifest is not available.
func TestTemplateMatchesParserTestdata(t *testing.T) {
	other, err := os.ReadFile(filepath.Join(testenv.RepoRoot(), "agent", "corefile", "testdata", "nodelocaldns.Corefile.base"))
	if err != nil {
		t.Skipf("parser testdata not available: %v", err)
	}
	ours, err := os.ReadFile(filepath.Join("testdata", "Corefile.base"))
	if err != nil {
		t.Fatal(err)
	}
	var kept []string
	for _, line := range strings.SplitAfter(string(other), "\n") {
		if !strings.HasPrefix(line, "#") {
			kept = append(kept, line)
		}
	}
	if got := strings.Join(kept, ""); got != string(ours) {
		t.Fatalf("agent/corefile/testdata/nodelocaldns.Corefile.base differs from tests/agent/testdata/Corefile.base:\n%s", got)
	}
}

// env is one set of processes: NSD for the cluster zones (the kube-dns
// Service, port 53), NSD for an external zone (the upstream nameserver),
// and the agent, on a loopback /24 of their own.
type env struct {
	net      string // "127.X.Y."
	cluster  *NSD
	external *NSD
	agent    *Agent
}

func (e *env) ip(last int) string { return fmt.Sprintf("%s%d", e.net, last) }

// randomNet picks a loopback /24 unlikely to be used by another test.
func randomNet() string {
	return fmt.Sprintf("127.%d.%d.", 100+rand.N(100), 1+rand.N(250))
}

func clusterZone(ip string) string {
	return `$ORIGIN cluster.local.
$TTL 300
@ IN SOA ns.dns.cluster.local. hostmaster.cluster.local. 1 7200 1800 86400 60
@ IN NS ns.dns
ns.dns IN A ` + ip + `
web.default.svc IN A 10.96.0.5
web.default.svc IN AAAA fd00::5
_http._tcp.web.default.svc IN SRV 0 100 80 web.default.svc
api.default.svc IN A 10.96.0.6
db.default.svc IN A 10.96.0.7
stale.default.svc IN A 10.96.0.8
`
}

const reverseZone = `$ORIGIN 96.10.in-addr.arpa.
$TTL 300
@ IN SOA ns.dns.cluster.local. hostmaster.cluster.local. 1 7200 1800 86400 60
@ IN NS ns.dns.cluster.local.
5.0 IN PTR web.default.svc.cluster.local.
`

func externalZone() string {
	var b strings.Builder
	b.WriteString(`$ORIGIN example.test.
$TTL 300
@ IN SOA ns.example.test. hostmaster.example.test. 1 7200 1800 86400 60
@ IN NS ns
ns IN A 192.0.2.53
www IN A 192.0.2.10
`)
	for i := range 12 { // about 2.5 kB: truncated over UDP
		fmt.Fprintf(&b, "big IN TXT \"%s%02d\"\n", strings.Repeat("t", 200), i)
	}
	return b.String()
}

// setup starts the NSDs and the agent with the template tpl (the official
// one when empty) and upstreams (the external NSD when nil).
func setup(t *testing.T, tpl string, upstreams func(e *env) []string) *env {
	t.Helper()
	testenv.RequireRoot(t) // the cluster DNS listens on port 53, as a Service does
	e := &env{net: randomNet()}
	e.cluster = StartNSD(t, NSDOptions{Addr: e.ip(1) + ":53", Zones: map[string]string{
		"cluster.local":      clusterZone(e.ip(1)),
		"96.10.in-addr.arpa": reverseZone,
	}})
	e.external = StartNSD(t, NSDOptions{Addr: e.ip(2) + ":5300", Zones: map[string]string{"example.test": externalZone()}})
	if tpl == "" {
		tpl = officialTemplate(t)
	}
	ups := []string{e.external.Addr}
	if upstreams != nil {
		ups = upstreams(e)
	}
	e.agent = StartAgent(t, AgentOptions{Bin: agentBin, LocalIP: e.ip(10), ClusterDNS: e.ip(1), Upstreams: ups, Template: tpl})
	return e
}

func ask(t *testing.T, proto, addr, name string, qtype uint16) *dns.Msg {
	t.Helper()
	c := &dns.Client{Net: proto, Timeout: 3 * time.Second}
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	r, _, err := c.Exchange(m, addr)
	if err != nil {
		t.Fatalf("%s %s %s @%s: %v", proto, name, dns.TypeToString[qtype], addr, err)
	}
	return r
}

// dig runs dig against the agent and returns its output (+noall +answer
// +authority, one record a line).
func dig(t *testing.T, prefix []string, server string, args ...string) string {
	t.Helper()
	bin := testenv.Binary(t, "dig", "DIG_BIN")
	host, port, _ := net.SplitHostPort(server)
	full := append(append([]string{}, prefix...), bin, "@"+host, "-p", port, "+tries=1", "+time=3", "+noall", "+answer", "+authority", "+comments")
	full = append(full, args...)
	out, err := exec.Command(full[0], full[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(full, " "), err, out)
	}
	return string(out)
}

// command builds a command from a full argument list.
func command(args []string) *exec.Cmd { return exec.Command(args[0], args[1:]...) }

func ttlOf(t *testing.T, rrs []dns.RR) uint32 {
	t.Helper()
	if len(rrs) == 0 {
		t.Fatal("no records")
	}
	return rrs[0].Header().Ttl
}

func TestOfficialCorefile(t *testing.T) {
	e := setup(t, "", nil)
	agent := e.agent.DNS

	t.Run("renders the template from the DaemonSet flags", func(t *testing.T) {
		text := e.agent.RenderedCorefile()
		for _, want := range []string{
			"cluster.local:53", "bind " + e.ip(10), "forward . " + e.ip(1), "force_tcp",
			"forward . " + e.external.Addr, "health " + e.ip(10) + ":8080",
		} {
			if !strings.Contains(text, want) {
				t.Errorf("rendered Corefile lacks %q:\n%s", want, text)
			}
		}
		if strings.Contains(text, "__PILLAR__") || strings.Contains(text, "/etc/resolv.conf") {
			t.Errorf("rendered Corefile still has a variable or the host resolv.conf:\n%s", text)
		}
	})

	t.Run("cluster names go over TCP only", func(t *testing.T) {
		before := e.cluster.MustStats(t)
		out := dig(t, nil, agent, "web.default.svc.cluster.local", "A")
		if !strings.Contains(out, "10.96.0.5") || !strings.Contains(out, "status: NOERROR") {
			t.Fatalf("dig answer:\n%s", out)
		}
		after := e.cluster.MustStats(t)
		if after["num.udp"] != 0 || after["num.tcp"] <= before["num.tcp"] {
			t.Fatalf("cluster NSD saw udp=%d tcp=%d->%d; want no UDP and new TCP queries", after["num.udp"], before["num.tcp"], after["num.tcp"])
		}
	})

	t.Run("go client over udp and tcp", func(t *testing.T) {
		for _, tc := range []struct {
			name  string
			qtype uint16
			want  string
		}{
			{name: "web.default.svc.cluster.local.", qtype: dns.TypeAAAA, want: "fd00::5"},
			{name: "_http._tcp.web.default.svc.cluster.local.", qtype: dns.TypeSRV, want: "web.default.svc.cluster.local."},
			{name: "5.0.96.10.in-addr.arpa.", qtype: dns.TypePTR, want: "web.default.svc.cluster.local."},
			{name: "www.example.test.", qtype: dns.TypeA, want: "192.0.2.10"},
			{name: "WWW.Example.TEST.", qtype: dns.TypeA, want: "192.0.2.10"},
		} {
			for _, proto := range []string{"udp", "tcp"} {
				r := ask(t, proto, agent, tc.name, tc.qtype)
				if r.Rcode != dns.RcodeSuccess || len(r.Answer) == 0 || !strings.Contains(r.Answer[0].String(), tc.want) {
					t.Errorf("%s %s %s: %v", proto, tc.name, dns.TypeToString[tc.qtype], r)
					continue
				}
				if r.Question[0].Name != tc.name {
					t.Errorf("question case not preserved: %q", r.Question[0].Name)
				}
			}
		}
	})

	t.Run("TTL caps: 30s success, 5s denial in the cluster zone, 30s for the rest", func(t *testing.T) {
		for _, tc := range []struct {
			name    string
			qtype   uint16
			rcode   int
			max     uint32
			section func(*dns.Msg) []dns.RR
		}{
			{name: "api.default.svc.cluster.local.", qtype: dns.TypeA, max: 30, section: func(m *dns.Msg) []dns.RR { return m.Answer }},
			{name: "missing.default.svc.cluster.local.", qtype: dns.TypeA, rcode: dns.RcodeNameError, max: 5, section: func(m *dns.Msg) []dns.RR { return m.Ns }},
			{name: "api.default.svc.cluster.local.", qtype: dns.TypeMX, max: 5, section: func(m *dns.Msg) []dns.RR { return m.Ns }},
			{name: "www.example.test.", qtype: dns.TypeA, max: 30, section: func(m *dns.Msg) []dns.RR { return m.Answer }},
			{name: "missing.example.test.", qtype: dns.TypeA, rcode: dns.RcodeNameError, max: 30, section: func(m *dns.Msg) []dns.RR { return m.Ns }},
		} {
			for i, kind := range []string{"miss", "cache hit"} {
				r := ask(t, "udp", agent, tc.name, tc.qtype)
				if r.Rcode != tc.rcode {
					t.Fatalf("%s %s: rcode %s", tc.name, dns.TypeToString[tc.qtype], dns.RcodeToString[r.Rcode])
				}
				if ttl := ttlOf(t, tc.section(r)); ttl > tc.max || ttl == 0 && tc.max > 5 {
					t.Errorf("%s %s (%d: %s): TTL %d, want <= %d (NSD says 300/60; CoreDNS's cache caps the reply to a miss too)", tc.name, dns.TypeToString[tc.qtype], i, kind, ttl, tc.max)
				}
			}
		}
	})

	t.Run("cache hits do not reach NSD and show in metrics", func(t *testing.T) {
		hits := MetricSum(e.agent.MetricsText(t), "coredns_cache_hits_total")
		before := e.cluster.MustStats(t)["num.queries"]
		for range 5 {
			r := ask(t, "udp", agent, "db.default.svc.cluster.local.", dns.TypeA)
			if len(r.Answer) != 1 {
				t.Fatalf("answer %v", r)
			}
		}
		if got := e.cluster.MustStats(t)["num.queries"] - before; got != 1 {
			t.Fatalf("5 identical queries reached NSD %d times, want 1", got)
		}
		if after := MetricSum(e.agent.MetricsText(t), "coredns_cache_hits_total"); after < hits+4 {
			t.Fatalf("coredns_cache_hits_total went %v -> %v, want +4", hits, after)
		}
	})

	t.Run("NXDOMAIN is cached for the denial TTL", func(t *testing.T) {
		name := "gone.default.svc.cluster.local."
		before := e.cluster.MustStats(t)["num.rcode.NXDOMAIN"]
		for range 3 {
			if r := ask(t, "udp", agent, name, dns.TypeA); r.Rcode != dns.RcodeNameError {
				t.Fatalf("rcode %s", dns.RcodeToString[r.Rcode])
			}
		}
		if got := e.cluster.MustStats(t)["num.rcode.NXDOMAIN"] - before; got != 1 {
			t.Fatalf("3 queries for a missing name gave %d NXDOMAINs at NSD, want 1 (cached)", got)
		}
		time.Sleep(5500 * time.Millisecond) // denial cap 5s
		if r := ask(t, "udp", agent, name, dns.TypeA); r.Rcode != dns.RcodeNameError {
			t.Fatalf("rcode %s", dns.RcodeToString[r.Rcode])
		}
		if got := e.cluster.MustStats(t)["num.rcode.NXDOMAIN"] - before; got != 2 {
			t.Fatalf("after the denial TTL NSD answered %d NXDOMAINs in all, want 2 (expired and asked again)", got)
		}
	})

	t.Run("external names over UDP with TCP retry when truncated", func(t *testing.T) {
		before := e.external.MustStats(t)
		r := ask(t, "tcp", agent, "big.example.test.", dns.TypeTXT)
		if len(r.Answer) != 12 {
			t.Fatalf("got %d TXT records, want 12", len(r.Answer))
		}
		after := e.external.MustStats(t)
		if after["num.udp"] <= before["num.udp"] || after["num.tcp"] <= before["num.tcp"] {
			t.Fatalf("external NSD udp %d->%d tcp %d->%d; want a UDP try then a TCP retry",
				before["num.udp"], after["num.udp"], before["num.tcp"], after["num.tcp"])
		}
		// A UDP client with a small buffer gets TC and retries over TCP itself.
		r = ask(t, "udp", agent, "big.example.test.", dns.TypeTXT)
		if !r.Truncated {
			t.Fatalf("2.5 kB answer to a 512-byte UDP client not truncated")
		}
	})

	t.Run("health and forward metrics", func(t *testing.T) {
		if body := httpGet(t, "http://"+e.agent.Health+"/health"); !strings.Contains(body, "OK") {
			t.Errorf("/health body %q", body)
		}
		text := e.agent.MetricsText(t)
		for _, tc := range []struct {
			name   string
			labels []string
		}{
			{"coredns_forward_requests_total", []string{`to="` + e.ip(1) + `:53"`}},
			{"coredns_forward_requests_total", []string{`to="` + e.external.Addr + `"`}},
			{"coredns_proxy_request_duration_seconds_count", []string{`proxy_name="forward"`, `rcode="NXDOMAIN"`, `to="` + e.ip(1) + `:53"`}},
			{"coredns_proxy_conn_cache_misses_total", []string{`proto="tcp"`, `to="` + e.ip(1) + `:53"`}},
			{"coredns_dns_requests_total", nil},
			{"coredns_dns_responses_total", []string{`rcode="NOERROR"`}},
			{"coredns_cache_misses_total", nil},
			{"coredns_cache_entries", nil},
		} {
			if v := MetricSum(text, tc.name, tc.labels...); v <= 0 {
				t.Errorf("%s%v = %v, want > 0", tc.name, tc.labels, v)
			}
		}
	})
}

// staleTemplate is the official template with serve_stale in the cluster
// block and a 2s success TTL, so entries expire during the test.
func staleTemplate(t *testing.T) string {
	t.Helper()
	tpl := officialTemplate(t)
	out := strings.Replace(tpl, "success 9984 30\n", "success 9984 2 1\n            serve_stale\n", 1)
	if out == tpl {
		t.Fatal("template has no `success 9984 30` line")
	}
	return out
}

func TestServeStaleWhenClusterDNSStops(t *testing.T) {
	e := setup(t, staleTemplate(t), nil)
	name := "stale.default.svc.cluster.local."
	if r := ask(t, "udp", e.agent.DNS, name, dns.TypeA); len(r.Answer) != 1 {
		t.Fatalf("answer %v", r)
	}
	e.cluster.Stop()
	time.Sleep(2500 * time.Millisecond) // past the 2s TTL
	r := ask(t, "udp", e.agent.DNS, name, dns.TypeA)
	if r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 || !strings.Contains(r.Answer[0].String(), "10.96.0.8") {
		t.Fatalf("no stale answer with the cluster DNS down: %v", r)
	}
	if v := MetricSum(e.agent.MetricsText(t), "coredns_cache_served_stale_total"); v < 1 {
		t.Fatalf("coredns_cache_served_stale_total = %v", v)
	}
	// A name never cached has nothing stale to serve.
	if r := ask(t, "udp", e.agent.DNS, "api.default.svc.cluster.local.", dns.TypeA); r.Rcode != dns.RcodeServerFailure {
		t.Fatalf("uncached name with the cluster DNS down: %s", dns.RcodeToString[r.Rcode])
	}
}

func TestLoopDetected(t *testing.T) {
	testenv.RequireRoot(t)
	e := &env{net: randomNet()}
	e.cluster = StartNSD(t, NSDOptions{Addr: e.ip(1) + ":53", Zones: map[string]string{"cluster.local": clusterZone(e.ip(1))}})
	// The node's upstream is the agent's own address: a forwarding loop.
	a := StartAgent(t, AgentOptions{Bin: agentBin, LocalIP: e.ip(10), ClusterDNS: e.ip(1),
		Upstreams: []string{e.ip(10)}, Template: officialTemplate(t), NoWait: true})
	exited, err := a.WaitExit(20 * time.Second)
	if !exited {
		t.Fatalf("agent still running 20s after start with a forwarding loop\n%s", a.Log())
	}
	if err == nil {
		t.Fatalf("agent exited with status 0 on a loop\n%s", a.Log())
	}
	if log := a.Log(); !strings.Contains(strings.ToLower(log), "loop detected") || !strings.Contains(log, e.ip(10)) {
		t.Fatalf("agent output does not explain the loop:\n%s", log)
	}
}

// TestClusterUDPDroppedInNetns runs NSD and the agent in a network
// namespace whose firewall drops UDP to the cluster DNS: cluster names must
// still resolve, because they go over TCP.
func TestClusterUDPDroppedInNetns(t *testing.T) {
	testenv.RequireRoot(t)
	ipBin := testenv.Binary(t, "ip", "IP_BIN")
	iptables := testenv.Binary(t, "iptables", "IPTABLES_BIN")
	ns := fmt.Sprintf("nldtest-fwd-%d", rand.N(1_000_000))
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	run(ipBin, "netns", "add", ns)
	t.Cleanup(func() { _ = exec.Command(ipBin, "netns", "del", ns).Run() })
	run(ipBin, "-n", ns, "link", "set", "lo", "up")
	prefix := []string{ipBin, "netns", "exec", ns}
	cluster, local, external := "127.0.0.1", "127.0.0.10", "127.0.0.2"
	run(append(prefix, iptables, "-w", "-A", "OUTPUT", "-p", "udp", "-d", cluster, "--dport", "53", "-j", "DROP")...)

	StartNSD(t, NSDOptions{Addr: cluster + ":53", Prefix: prefix, Zones: map[string]string{"cluster.local": clusterZone(cluster)}})
	StartNSD(t, NSDOptions{Addr: external + ":5300", Prefix: prefix, Zones: map[string]string{"example.test": externalZone()}})
	// The firewall works: NSD is unreachable over UDP, reachable over TCP.
	if out, err := command(append(prefix, "dig", "@"+cluster, "+tries=1", "+time=1", "+short", "web.default.svc.cluster.local")).CombinedOutput(); err == nil && strings.Contains(string(out), "10.96.0.5") {
		t.Fatalf("UDP to the cluster DNS is not dropped: %s", out)
	}
	if out := dig(t, prefix, cluster+":53", "+tcp", "web.default.svc.cluster.local"); !strings.Contains(out, "10.96.0.5") {
		t.Fatalf("TCP to NSD in the netns: %s", out)
	}

	a := StartAgent(t, AgentOptions{Bin: agentBin, LocalIP: local, ClusterDNS: cluster,
		Upstreams: []string{external + ":5300"}, Template: officialTemplate(t), Prefix: prefix})
	deadline := time.Now().Add(15 * time.Second)
	for {
		out, err := command(append(prefix, "dig", "@"+local, "+tries=1", "+time=1", "+short", "www.example.test")).CombinedOutput()
		if err == nil && strings.Contains(string(out), "192.0.2.10") {
			break
		}
		if exited, err := a.Exited(); exited || time.Now().After(deadline) {
			t.Fatalf("agent in netns not answering (exited=%v %v):\n%s", exited, err, a.Log())
		}
		time.Sleep(100 * time.Millisecond)
	}
	for _, proto := range []string{"+notcp", "+tcp"} {
		out := dig(t, prefix, local+":53", proto, "web.default.svc.cluster.local", "A")
		if !strings.Contains(out, "10.96.0.5") || !strings.Contains(out, "status: NOERROR") {
			t.Fatalf("cluster name with UDP to the cluster DNS dropped (%s):\n%s", proto, out)
		}
	}
}

// TestFailoverToLiveUpstream gives the agent two upstream nameservers, one
// of which does not exist: every name still resolves, and the dead one is
// health-checked and reported in the metrics.
func TestFailoverToLiveUpstream(t *testing.T) {
	var dead string
	e := setup(t, "", func(e *env) []string {
		dead = e.ip(3) + ":5300" // nothing listens there
		return []string{dead, e.external.Addr}
	})
	for i, qtype := range []uint16{dns.TypeA, dns.TypeAAAA, dns.TypeMX, dns.TypeTXT, dns.TypeNS, dns.TypeSOA, dns.TypeCAA, dns.TypeSRV} {
		start := time.Now()
		r := ask(t, "udp", e.agent.DNS, "www.example.test.", qtype)
		if r.Rcode != dns.RcodeSuccess {
			t.Fatalf("query %d (%s): rcode %s", i, dns.TypeToString[qtype], dns.RcodeToString[r.Rcode])
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Fatalf("query %d took %v: failover should not wait for a timeout on a refused port", i, d)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		text := e.agent.MetricsText(t)
		if MetricSum(text, "coredns_proxy_healthcheck_failures_total", `to="`+dead+`"`) > 0 {
			if v := MetricSum(text, "coredns_proxy_request_duration_seconds_count", `to="`+e.external.Addr+`"`); v < 8 {
				t.Fatalf("live upstream answered %v times, want 8", v)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no health-check failure reported for the dead upstream %s", dead)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestUpstreamChangeFollowed changes the kube-dns ConfigMap's
// upstreamNameservers while the agent runs (the file replaced by a rename,
// as a ConfigMap volume update does): new names go to the new upstream.
func TestUpstreamChangeFollowed(t *testing.T) {
	e := setup(t, "", nil)
	second := StartNSD(t, NSDOptions{Addr: e.ip(4) + ":5300", Zones: map[string]string{"example.test": `$ORIGIN example.test.
$TTL 300
@ IN SOA ns.example.test. hostmaster.example.test. 2 7200 1800 86400 60
@ IN NS ns
ns IN A 192.0.2.53
* IN A 192.0.2.99
`}})
	if r := ask(t, "udp", e.agent.DNS, "w0.example.test.", dns.TypeA); r.Rcode != dns.RcodeNameError {
		t.Fatalf("before the change: %v, want NXDOMAIN from the first upstream", r)
	}
	file := filepath.Join(e.agent.dir, "kube-dns", "upstreamNameservers")
	tmp := file + ".new"
	if err := os.WriteFile(tmp, []byte(`["`+second.Addr+`"]`), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, file); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for i := 1; ; i++ {
		r := ask(t, "udp", e.agent.DNS, fmt.Sprintf("w%d.example.test.", i), dns.TypeA)
		if r.Rcode == dns.RcodeSuccess && len(r.Answer) == 1 && strings.Contains(r.Answer[0].String(), "192.0.2.99") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("new upstream not used 30s after the change; rendered Corefile:\n%s", e.agent.RenderedCorefile())
		}
		time.Sleep(200 * time.Millisecond)
	}
	if !strings.Contains(e.agent.RenderedCorefile(), "forward . "+second.Addr) {
		t.Fatalf("rendered Corefile does not forward to %s:\n%s", second.Addr, e.agent.RenderedCorefile())
	}
	// Cluster names are unaffected.
	if r := ask(t, "tcp", e.agent.DNS, "web.default.svc.cluster.local.", dns.TypeA); len(r.Answer) != 1 {
		t.Fatalf("cluster name after the change: %v", r)
	}
}
