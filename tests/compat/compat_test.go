package compat

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/nodelocaldns/nodelocaldns/tests/agent"
	"github.com/nodelocaldns/nodelocaldns/tests/testenv"
)

var agentBin string

func TestMain(m *testing.M) {
	if os.Geteuid() != 0 && !testenv.InCI() {
		os.Exit(m.Run()) // every test skips without root
	}
	dir, err := os.MkdirTemp("", "compat-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	agentBin, err = agent.BuildAgent(dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// env is the shared upstreams on a random loopback /24.
type env struct {
	net               string // "127.X.Y."
	cluster, upstream string // IPs of the NSDs (port 53)
}

func (e *env) ip(last int) string { return fmt.Sprintf("%s%d", e.net, last) }

func startEnv(t *testing.T) *env {
	t.Helper()
	testenv.RequireRoot(t) // everything listens on port 53, as in a cluster
	e := &env{net: fmt.Sprintf("127.%d.%d.", 100+rand.N(100), 1+rand.N(250))}
	e.cluster, e.upstream = e.ip(1), e.ip(2)
	agent.StartNSD(t, agent.NSDOptions{Addr: e.cluster + ":53", Zones: map[string]string{
		"cluster.local":      clusterZone(e.cluster),
		"96.10.in-addr.arpa": reverseZone,
	}})
	agent.StartNSD(t, agent.NSDOptions{Addr: e.upstream + ":53", Zones: map[string]string{"example.test": externalZone()}})
	return e
}

// TestDifferential runs every corpus entry on CoreDNS and on the agent and
// compares the answers to the same queries (each asked twice: the answer
// to the miss, then the cached one) and the exported metrics.
func TestDifferential(t *testing.T) {
	coredns := CoreDNSBinary(t)
	e := startEnv(t)
	for i, c := range corpus() {
		t.Run(c.name, func(t *testing.T) {
			// Entries run side by side: each has its own IPs, and most of
			// an entry's time is waiting (starts, scrapes).
			t.Parallel()
			agentIP, coreIP := e.ip(10+2*i), e.ip(11+2*i)
			var agent2, core2 string
			if c.second {
				agent2, core2 = e.ip(110+2*i), e.ip(111+2*i)
			}
			tpl := c.corefile(t)
			for _, want := range c.contains {
				if !strings.Contains(tpl, want) {
					t.Fatalf("the corpus entry's Corefile lacks %q:\n%s", want, tpl)
				}
			}
			coreText := render(tpl, coreIP, core2, e.cluster, e.upstream)
			core := StartCoreDNS(t, coredns, coreText, coreIP)
			if c.refused != "" {
				expectRefused(t, render(tpl, agentIP, agent2, e.cluster, e.upstream), agentIP, e, c.refused)
				return
			}
			a := agent.StartAgent(t, agent.AgentOptions{
				Bin: agentBin, LocalIP: agentIP, ClusterDNS: e.cluster,
				Upstreams: []string{e.upstream}, Template: render(tpl, agentIP, agent2, e.cluster, e.upstream),
			})
			cs := server{core.DNS, core.Metrics, coreIP, "", core2}
			as := server{a.DNS, a.Metrics, agentIP, "", agent2}
			if c.second {
				cs.dns2, as.dns2 = net.JoinHostPort(core2, "53"), net.JoinHostPort(agent2, "53")
			}
			waitMetrics(t, a.Metrics)
			waitMetrics(t, core.Metrics)
			waitLoopProbes(t, cs, strings.Count(coreText, "\n    loop\n"))
			compareAnswers(t, c.queries, as, cs)
			af, cf := compareMetrics(t, coreText, a.Metrics, as.ips(), core.Metrics, cs.ips())
			if c.monitoring {
				checkMonitoring(t, af, cf)
			}
		})
	}
}

// expectRefused checks that the agent refuses a Corefile it does not
// support, at start and with a message naming what it does not support.
func expectRefused(t *testing.T, corefile, ip string, e *env, want string) {
	t.Helper()
	a := agent.StartAgent(t, agent.AgentOptions{
		Bin: agentBin, LocalIP: ip, ClusterDNS: e.cluster, Upstreams: []string{e.upstream},
		Template: corefile, NoWait: true,
	})
	exited, err := a.WaitExit(20 * time.Second)
	if !exited {
		t.Fatalf("the agent runs this Corefile now: compare its answers (drop `refused` from the corpus entry)")
	}
	if err == nil || !strings.Contains(a.Log(), want) {
		t.Fatalf("agent exit %v, want a failure naming %q; output:\n%s", err, want, a.Log())
	}
	t.Logf("refused as expected: %s", strings.TrimSpace(a.Log()))
}

// waitMetrics waits until addr serves /metrics (the agent answers DNS
// before its HTTP endpoints are up).
func waitMetrics(t *testing.T, addr string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err := ScrapeFamilies(addr, "")
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no metrics on %s within 10s: %v", addr, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitLoopProbes waits until CoreDNS's loop plugin sent its probe in each
// of the n blocks that have it (an HINFO query to itself, counted as a
// request of type "other", sent in the background after the start), so
// that the probes do not land in the counters of the first queries.
func waitLoopProbes(t *testing.T, c server, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		var sent float64
		for k, v := range counted(t, c) {
			if strings.HasPrefix(k, "coredns_dns_requests_total{") && strings.Contains(k, "type=other") {
				sent += v
			}
		}
		if sent >= float64(n) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("CoreDNS sent %v of its %d loop probes within 10s", sent, n)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// server is one side of the comparison: DNS and metrics addresses, and
// the local IP (replaced by "IP" in metric labels).
type server struct{ dns, metrics, ip, dns2, ip2 string }

// ips is ip, or "ip,ip2" with a second address (see ScrapeFamilies).
func (s server) ips() string {
	if s.ip2 == "" {
		return s.ip
	}
	return s.ip + "," + s.ip2
}

// compareAnswers asks both servers every query (twice unless once) and
// reports every difference that is not an accepted one: in the answers,
// and in how much each counted metric series moved for that query.
func compareAnswers(t *testing.T, queries []query, a, c server) {
	t.Helper()
	for qi, q := range queries {
		rounds := []string{"miss", "hit"}
		if q.once {
			rounds = rounds[:1]
		}
		for _, round := range rounds {
			where := fmt.Sprintf("query %d %v (%s)", qi, q, round)
			abefore, cbefore := counted(t, a), counted(t, c)
			id := uint16(rand.N(1 << 16))
			adns, cdns := a.dns, c.dns
			if q.toSecond {
				adns, cdns = a.dns2, c.dns2
			}
			ar, aerr := exchange(q, id, adns)
			cr, cerr := exchange(q, id, cdns)
			switch {
			case aerr != nil && cerr != nil:
				// Neither answers (e.g. a dropped query): same behaviour.
			case aerr != nil || cerr != nil:
				t.Errorf("%s: agent error %v, coredns error %v", where, aerr, cerr)
			default:
				for _, d := range DiffMsg(ar, cr) {
					report(t, where, d, q, ar, cr)
				}
			}
			compareDeltas(t, where, q, a, c, abefore, cbefore)
		}
	}
}

func report(t *testing.T, where string, d Diff, q query, ar, cr *dns.Msg) {
	t.Helper()
	if reason, ok := accepted(d, q, ar, cr); ok {
		t.Logf("%s: accepted difference %v (%s)", where, d, reason)
		return
	}
	t.Errorf("%s: %v", where, d)
}

// counted scrapes the counted series of one server.
func counted(t *testing.T, s server) map[string]float64 {
	t.Helper()
	fams, err := ScrapeFamilies(s.metrics, s.ips())
	if err != nil {
		t.Fatalf("metrics of %s: %v", s.metrics, err)
	}
	out := map[string]float64{}
	for name, f := range fams {
		if !countedFamilies[name] {
			continue
		}
		for series, v := range f.Series {
			out[name+"{"+series+"}"] = v
		}
	}
	return out
}

// delta is what moved between two scrapes.
func delta(before, after map[string]float64) map[string]float64 {
	out := map[string]float64{}
	for k, v := range after {
		if d := v - before[k]; d != 0 {
			out[k] = d
		}
	}
	return out
}

// compareDeltas compares how each counted series moved on both servers
// for one query. CoreDNS counts after it wrote the answer, so a mismatch
// is scraped again a few times before it is reported.
func compareDeltas(t *testing.T, where string, q query, a, c server, abefore, cbefore map[string]float64) {
	t.Helper()
	var diffs []string
	for range 10 {
		ad, cd := delta(abefore, counted(t, a)), delta(cbefore, counted(t, c))
		diffs = diffs[:0]
		for _, k := range sortedKeys(cd) {
			if ad[k] != cd[k] {
				diffs = append(diffs, fmt.Sprintf("%s: agent +%v, coredns +%v", k, ad[k], cd[k]))
			}
		}
		for _, k := range sortedKeys(ad) {
			if _, ok := cd[k]; !ok {
				diffs = append(diffs, fmt.Sprintf("%s: agent +%v, coredns +0", k, ad[k]))
			}
		}
		if len(diffs) == 0 {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	for _, d := range diffs {
		if reason, ok := acceptedDelta(d, q); ok {
			t.Logf("%s: accepted metric difference %s (%s)", where, d, reason)
			continue
		}
		t.Errorf("%s: metric %s", where, d)
	}
}

func exchange(q query, id uint16, addr string) (*dns.Msg, error) {
	if q.raw != nil {
		return exchangeRaw(q.raw, id, addr)
	}
	netw := "udp"
	if q.tcp {
		netw = "tcp"
	}
	c := &dns.Client{Net: netw, Timeout: 3 * time.Second, UDPSize: dns.MaxMsgSize}
	r, _, err := c.Exchange(q.msg(id), addr)
	return r, err
}

// exchangeRaw sends pkt (with id) over UDP and unpacks the reply.
func exchangeRaw(pkt []byte, id uint16, addr string) (*dns.Msg, error) {
	c, err := net.Dial("udp", addr)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	b := append([]byte{byte(id >> 8), byte(id)}, pkt[2:]...)
	if err := c.SetDeadline(time.Now().Add(3 * time.Second)); err != nil {
		return nil, err
	}
	if _, err := c.Write(b); err != nil {
		return nil, err
	}
	buf := make([]byte, dns.MaxMsgSize)
	n, err := c.Read(buf)
	if err != nil {
		return nil, err
	}
	m := new(dns.Msg)
	if err := m.Unpack(buf[:n]); err != nil {
		return nil, fmt.Errorf("reply does not unpack: %w", err)
	}
	return m, nil
}

// acceptedDiffs are the differences in answers that are kept on purpose;
// each is listed in docs/agent-config.md ("Differences from CoreDNS").
var acceptedDiffs = []struct {
	fields []string
	when   func(d Diff, q query, a, c *dns.Msg) bool
	reason string
}{
	{
		fields: []string{"answer", "authority", "additional"},
		when: func(d Diff, q query, a, c *dns.Msg) bool {
			return strings.EqualFold(d.Agent, d.Other)
		},
		reason: "owner names follow the case of the question; CoreDNS keeps the case of the query that filled its cache",
	},
	{
		fields: []string{"answer", "authority", "additional", "TC", "TTL"},
		when:   func(d Diff, q query, a, c *dns.Msg) bool { return q.upstreamTC },
		reason: "the upstream truncated its UDP answer: the agent asks again over TCP and caches the whole answer (so its TTL counts down from then), CoreDNS passes the truncated one on",
	},
	{
		fields: []string{"answer", "authority", "additional"},
		when: func(d Diff, q query, a, c *dns.Msg) bool {
			return q.unordered && sameSet(d.Agent, d.Other)
		},
		reason: "the same records in another order (loadbalance shuffles)",
	},
	{
		fields: []string{"additional"},
		when:   func(d Diff, q query, a, c *dns.Msg) bool { return q.clientPort },
		reason: "whoami's SRV record holds the client's source port, which differs between the two clients",
	},
	{
		fields: []string{"OPT.size"},
		when:   func(d Diff, q query, a, c *dns.Msg) bool { return d.Agent == "1232" },
		reason: "the agent advertises its own UDP payload size (1232, RFC 6891 6.2.3), CoreDNS echoes the client's (lowered by bufsize)",
	},
	{
		fields: []string{"CD"},
		when:   func(d Diff, q query, a, c *dns.Msg) bool { return q.cd && d.Agent == "true" },
		reason: "the agent copies the query's CD bit into every answer (RFC 4035 3.1.6); CoreDNS passes the upstream's header on a miss",
	},
	{
		fields: []string{"TTL"},
		when: func(d Diff, q query, a, c *dns.Msg) bool {
			return q.noRD && leadingInt(d.Agent) >= leadingInt(d.Other)
		},
		reason: "the agent's cache key has the RD bit: its answer to RD=0 is an entry of its own, filled by this query, so its TTL counts down from now; CoreDNS answers from the entry an RD=1 query filled earlier",
	},
	{
		fields: []string{"rcode", "AA", "RD", "RA", "question", "answer", "authority", "additional"},
		when:   func(d Diff, q query, a, c *dns.Msg) bool { return q.opcode == dns.OpcodeNotify },
		reason: "NOTIFY is answered NOTIMP; CoreDNS forwards it like a query",
	},
}

// leadingInt is the number a TTL difference starts with ("5 (record)"),
// or -1.
func leadingInt(s string) int {
	f, _, _ := strings.Cut(s, " ")
	n, err := strconv.Atoi(f)
	if err != nil {
		return -1
	}
	return n
}

// sameSet reports whether two " | "-joined record lists hold the same
// records in any order.
func sameSet(a, b string) bool {
	as, bs := strings.Split(a, " | "), strings.Split(b, " | ")
	slices.Sort(as)
	slices.Sort(bs)
	return slices.Equal(as, bs)
}

func accepted(d Diff, q query, a, c *dns.Msg) (string, bool) {
	for _, rule := range acceptedDiffs {
		if slices.Contains(rule.fields, d.Field) && rule.when(d, q, a, c) {
			return rule.reason, true
		}
	}
	return "", false
}

// acceptedDelta accepts the metric differences that follow from an
// accepted answer difference.
func acceptedDelta(d string, q query) (string, bool) {
	switch {
	case q.upstreamTC && strings.HasPrefix(d, "coredns_cache_"):
		return "the agent cached the whole answer it fetched over TCP; CoreDNS does not cache a truncated one", true
	case q.opcode == dns.OpcodeNotify:
		return "NOTIFY is answered before the plugins, uncounted, as miekg/dns's server does for other opcodes", true
	case q.toSecond && strings.HasPrefix(d, "coredns_cache_"):
		return "one cache per block, its metrics labelled with the block's first address; CoreDNS labels them per listen address", true
	case q.noRD && strings.HasPrefix(d, "coredns_cache_"):
		return "the agent's cache key has the RD bit (an answer to RD=0 may be a referral, never one for an RD=1 client); CoreDNS keys on DO and CD only", true
	}
	return "", false
}

// compareMetrics compares the metric families both servers export after
// the same queries: names, types and label names (the values of the
// counted families were compared query by query).
func compareMetrics(t *testing.T, corefile, agentAddr, agentIP, coreAddr, coreIP string) (af, cf map[string]*Family) {
	t.Helper()
	af, err := ScrapeFamilies(agentAddr, agentIP)
	if err != nil {
		t.Fatalf("agent metrics: %v", err)
	}
	cf, err = ScrapeFamilies(coreAddr, coreIP)
	if err != nil {
		t.Fatalf("coredns metrics: %v", err)
	}
	for _, name := range sortedKeys(cf) {
		if ignoredFamily(name) {
			continue
		}
		a, ok := af[name]
		if !ok {
			if reason, ok := onlyCoreDNS[name]; ok {
				t.Logf("metric %s: only CoreDNS exports it (%s)", name, reason)
				continue
			}
			if p := familyPlugin(name); p != "" && !usesPlugin(corefile, p) {
				t.Logf("metric %s: only CoreDNS exports it (the Corefile has no %s plugin: CoreDNS registers every compiled-in plugin's families at start)", name, p)
				continue
			}
			t.Errorf("metric %s (%s, labels %v): CoreDNS exports it, the agent does not", name, cf[name].Type, cf[name].Labels)
			continue
		}
		c := cf[name]
		if a.Type != c.Type {
			t.Errorf("metric %s: type %s, CoreDNS's is %s", name, a.Type, c.Type)
		}
		if fmt.Sprint(a.Labels) != fmt.Sprint(c.Labels) {
			t.Errorf("metric %s: labels %v, CoreDNS's are %v", name, a.Labels, c.Labels)
		}
		if sameSeries[name] {
			if as, cs := sortedKeys(a.Series), sortedKeys(c.Series); !slices.Equal(as, cs) {
				t.Errorf("metric %s: series\n%s\nCoreDNS's\n%s", name, strings.Join(as, "\n"), strings.Join(cs, "\n"))
			}
		}
	}
	for _, name := range sortedKeys(af) {
		if ignoredFamily(name) || cf[name] != nil {
			continue
		}
		if reason, ok := onlyAgent[name]; ok {
			t.Logf("metric %s: only the agent exports it (%s)", name, reason)
			continue
		}
		if strings.HasPrefix(name, "nodelocaldns_") {
			t.Logf("metric %s: the agent's own family (its own namespace, docs/)", name)
			continue
		}
		t.Errorf("metric %s (labels %v): the agent exports it, CoreDNS does not", name, af[name].Labels)
	}
	return af, cf
}

// monitoringFiles are the dashboard and alerts of the monitoring overlay.
var monitoringFiles = []string{
	"../../manifests/components/monitoring/dashboard.json",
	"../../manifests/components/monitoring/prometheusrule.yaml",
}

var metricName = regexp.MustCompile(`\b(?:coredns|nodelocaldns)_[a-z0-9_]+`)

// checkMonitoring checks that every family the dashboard and the alerts
// query is one the agent exports (and CoreDNS too, unless it is one of the
// agent's listed own families), so that no panel or alert stays empty.
func checkMonitoring(t *testing.T, af, cf map[string]*Family) {
	t.Helper()
	for _, file := range monitoringFiles {
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		seen := map[string]bool{}
		for _, name := range metricName.FindAllString(string(b), -1) {
			fam := name
			for _, suffix := range []string{"_bucket", "_count", "_sum"} {
				if f, ok := strings.CutSuffix(name, suffix); ok && af[f] != nil && af[f].Type == "histogram" {
					fam = f
				}
			}
			if seen[fam] {
				continue
			}
			seen[fam] = true
			if af[fam] == nil {
				t.Errorf("%s queries %s, which the agent does not export", file, name)
			} else if cf[fam] == nil && onlyAgent[fam] == "" {
				t.Errorf("%s queries %s, which CoreDNS does not export and is not a listed agent family", file, name)
			}
		}
		if len(seen) < 3 {
			t.Errorf("%s: only %d metric names found", file, len(seen))
		}
	}
}

// sameSeries are the families whose series (label values, the local IP
// replaced) must be the same set on both servers.
var sameSeries = map[string]bool{
	"coredns_plugin_enabled": true,
}

// countedFamilies are the counters whose series and values must be equal
// after the same queries.
var countedFamilies = map[string]bool{
	"coredns_dns_requests_total":    true,
	"coredns_dns_responses_total":   true,
	"coredns_dns_do_requests_total": true,
	"coredns_cache_requests_total":  true,
	"coredns_cache_hits_total":      true,
	"coredns_cache_misses_total":    true,
}

// ignoredFamily: the Go runtime's and the process's families, which both
// export from the Prometheus client library (their sets vary with its
// version and the Go version), are not compared.
func ignoredFamily(name string) bool {
	return strings.HasPrefix(name, "go_") || strings.HasPrefix(name, "process_")
}

// familyPlugin is the plugin a CoreDNS family belongs to ("" for the
// server's own).
func familyPlugin(name string) string {
	for prefix, p := range map[string]string{
		"coredns_forward_": "forward", "coredns_proxy_": "forward", "coredns_hosts_": "hosts",
		"coredns_template_": "template", "coredns_dns64_": "dns64", "coredns_cache_": "cache",
		"coredns_reload_": "reload", "coredns_health_": "health",
	} {
		if strings.HasPrefix(name, prefix) {
			return p
		}
	}
	return ""
}

// usesPlugin reports whether a line of the Corefile starts with plugin.
func usesPlugin(corefile, plugin string) bool {
	for line := range strings.SplitSeq(corefile, "\n") {
		if f := strings.Fields(line); len(f) > 0 && f[0] == plugin {
			return true
		}
	}
	return false
}

// onlyCoreDNS are the families CoreDNS exports and the agent does not,
// with the reason (docs/agent-config.md lists them).
var onlyCoreDNS = map[string]string{}

// onlyAgent are the families the agent exports and CoreDNS does not.
var onlyAgent = map[string]string{
	"coredns_cache_evictions_total":            zeroSeries,
	"coredns_cache_prefetch_total":             zeroSeries,
	"coredns_cache_served_stale_total":         zeroSeries,
	"coredns_cache_drops_total":                zeroSeries,
	"coredns_proxy_healthcheck_failures_total": zeroSeries,
	"coredns_forward_requests_total":           "kept from CoreDNS before 1.11 for old dashboards (docs/migrating.md)",
	"coredns_nodecache_setup_errors_total":     "node-cache's own family, exported by node-cache next to CoreDNS's",
}

const zeroSeries = "a CoreDNS family whose series CoreDNS exports after their first count; the agent creates them at zero"

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
