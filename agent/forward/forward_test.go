package forward

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"

	"github.com/nodelocaldns/nodelocaldns/agent/corefile"
	"github.com/nodelocaldns/nodelocaldns/agent/dnstest"
)

var zone = dnstest.MustZone(
	"cluster.local. 30 IN SOA ns.dns.cluster.local. hostmaster.cluster.local. 1 7200 1800 86400 5",
	"web.default.svc.cluster.local. 30 IN A 192.0.2.1",
	"big.default.svc.cluster.local. 30 IN TXT \""+strings.Repeat("x", 250)+"\"",
	"big.default.svc.cluster.local. 30 IN TXT \""+strings.Repeat("y", 250)+"\"",
	"big.default.svc.cluster.local. 30 IN TXT \""+strings.Repeat("z", 250)+"\"",
	"big.default.svc.cluster.local. 30 IN TXT \""+strings.Repeat("w", 250)+"\"",
	"big.default.svc.cluster.local. 30 IN TXT \""+strings.Repeat("v", 250)+"\"",
	". 30 IN NS ns.root.",
)

// hugeZone answers with about 7.5 kB over UDP, ignoring the EDNS0 size.
var hugeZone = func() *dnstest.Zone {
	var rrs []string
	for i := range 30 {
		rrs = append(rrs, fmt.Sprintf("huge.default.svc.cluster.local. 30 IN TXT \"%s%02d\"", strings.Repeat("h", 240), i))
	}
	return dnstest.MustZone(rrs...)
}()

// brokenTC answers UDP with a bare header: QR and TC set, one question
// announced but missing, so it does not unpack; TCP goes to h.
func brokenTC(h dnstest.Handler) dnstest.Handler {
	return func(w *dnstest.Writer, q *dnstest.Query) {
		if q.Proto == "tcp" {
			h(w, q)
			return
		}
		hdr := []byte{byte(q.Msg.Id >> 8), byte(q.Msg.Id), 0x82, 0x00, 0, 1, 0, 0, 0, 0, 0, 0}
		_ = w.WriteRaw(hdr)
	}
}

// fastOpts keeps failing tests short.
func fastOpts(reg prometheus.Registerer) Options {
	return Options{Registerer: reg, Timeout: time.Second, AttemptTimeout: 300 * time.Millisecond, HealthTimeout: 100 * time.Millisecond}
}

func newForwarder(t *testing.T, cfg corefile.Forward, opts Options) *Forwarder {
	t.Helper()
	if cfg.From == "" {
		cfg.From = "."
	}
	f, err := New(cfg, opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(f.Close)
	return f
}

func query(name string, qtype uint16) *dns.Msg {
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	return m
}

func firstA(t *testing.T, r *dns.Msg) string {
	t.Helper()
	for _, rr := range r.Answer {
		if a, ok := rr.(*dns.A); ok {
			return a.A.String()
		}
	}
	t.Fatalf("no A record in %v", r)
	return ""
}

// clientQueries counts the queries a server saw for name (health checks excluded).
func clientQueries(s *dnstest.Server, name string) int {
	n := 0
	for _, q := range s.Queries() {
		if strings.EqualFold(q.Msg.Question[0].Name, name) {
			n++
		}
	}
	return n
}

func TestExchangeTransport(t *testing.T) {
	for _, tc := range []struct {
		name      string
		handler   dnstest.Handler
		forceTCP  bool
		qname     string
		qtype     uint16
		wantUDP   int
		wantTCP   int
		wantCount int // answer records
	}{
		{name: "udp answer", handler: zone.Handler(), qname: "Web.Default.svc.cluster.local.", qtype: dns.TypeA, wantUDP: 1, wantCount: 1},
		{name: "truncated udp retried over tcp", handler: dnstest.Truncate(zone.Handler()), qname: "web.default.svc.cluster.local.", qtype: dns.TypeA, wantUDP: 1, wantTCP: 1, wantCount: 1},
		{name: "large answer over udp", handler: zone.Handler(), qname: "big.default.svc.cluster.local.", qtype: dns.TypeTXT, wantUDP: 1, wantCount: 5},
		{name: "broken truncated udp answer retried over tcp", handler: brokenTC(zone.Handler()), qname: "web.default.svc.cluster.local.", qtype: dns.TypeA, wantUDP: 1, wantTCP: 1, wantCount: 1},
		{name: "oversized udp answer retried over tcp", handler: hugeZone.Handler(), qname: "huge.default.svc.cluster.local.", qtype: dns.TypeTXT, wantUDP: 1, wantTCP: 1, wantCount: 30},
		{name: "force_tcp never uses udp", handler: dnstest.OnlyTCP(zone.Handler()), forceTCP: true, qname: "web.default.svc.cluster.local.", qtype: dns.TypeA, wantTCP: 1, wantCount: 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := dnstest.NewServer(t, tc.handler)
			f := newForwarder(t, corefile.Forward{To: []string{s.Addr}, ForceTCP: tc.forceTCP, MaxFails: 2}, fastOpts(nil))
			req := query(tc.qname, tc.qtype)
			req.Id = 4242
			r, err := f.Exchange(context.Background(), req)
			if err != nil {
				t.Fatalf("Exchange: %v", err)
			}
			if r.Id != 4242 || r.Question[0].Name != tc.qname || len(r.Answer) != tc.wantCount {
				t.Fatalf("reply id %d question %q with %d answers; want id 4242, %q, %d", r.Id, r.Question[0].Name, len(r.Answer), tc.qname, tc.wantCount)
			}
			if r.IsEdns0() != nil {
				t.Fatal("reply carries an OPT record although the client sent none")
			}
			if s.Count("udp") != tc.wantUDP || s.Count("tcp") != tc.wantTCP {
				t.Fatalf("upstream saw udp=%d tcp=%d, want udp=%d tcp=%d", s.Count("udp"), s.Count("tcp"), tc.wantUDP, tc.wantTCP)
			}
		})
	}
}

func TestRandomIDsAndPorts(t *testing.T) {
	release := make(chan struct{})
	s := dnstest.NewServer(t, dnstest.Block(release, zone.Handler()))
	f := newForwarder(t, corefile.Forward{To: []string{s.Addr}, Expire: 100 * time.Millisecond}, fastOpts(nil))
	const n = 20
	var wg sync.WaitGroup
	for i := range n { // concurrent: one socket each
		wg.Go(func() {
			req := query(fmt.Sprintf("q%d.default.svc.cluster.local.", i), dns.TypeA)
			req.Id = 7
			if _, err := f.Exchange(context.Background(), req); err != nil {
				t.Error(err)
			}
		})
	}
	s.WaitCount("udp", n, time.Second)
	close(release)
	wg.Wait()
	for i := range n { // sequential: the sockets are reused, the IDs are not
		req := query(fmt.Sprintf("s%d.default.svc.cluster.local.", i), dns.TypeA)
		req.Id = 7
		if _, err := f.Exchange(context.Background(), req); err != nil {
			t.Fatal(err)
		}
	}
	ids, ports := map[uint16]bool{}, map[string]bool{}
	for _, q := range s.Queries() {
		ids[q.Msg.Id] = true
		ports[q.From.String()] = true
	}
	// 40 random 16-bit IDs and 20 kernel-chosen ports: a few collisions at most.
	if len(ids) < 2*n-4 || len(ports) < n-3 {
		t.Fatalf("upstream saw %d distinct IDs and %d source addresses for %d queries (%d concurrent)", len(ids), len(ports), 2*n, n)
	}
	if got := f.upstreams[0].udp.size(); got == 0 || got > n {
		t.Fatalf("%d idle sockets kept", got)
	}
	waitFor(t, "idle sockets closed after expire", func() bool { return f.upstreams[0].udp.size() == 0 })
	// A socket whose exchange failed is not reused.
	s.SetHandler(dnstest.Drop)
	if _, err := f.Exchange(context.Background(), query("lost.default.svc.cluster.local.", dns.TypeA)); err == nil {
		t.Fatal("answer from a silent upstream")
	}
	if got := f.upstreams[0].udp.size(); got != 0 {
		t.Fatalf("socket of a timed-out exchange went back to the pool (%d idle)", got)
	}
}

func TestMismatchedAnswersDropped(t *testing.T) {
	for _, tc := range []struct {
		name     string
		handler  dnstest.Handler
		forceTCP bool
		wantErr  bool
	}{
		{name: "udp forgeries then genuine", handler: dnstest.Spoof(zone.Handler())},
		{name: "tcp forgeries then genuine", handler: dnstest.Spoof(zone.Handler()), forceTCP: true},
		{name: "udp only forgeries time out", handler: dnstest.SpoofOnly(zone.Handler()), wantErr: true},
		{name: "tcp only forgeries time out", handler: dnstest.SpoofOnly(zone.Handler()), forceTCP: true, wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := dnstest.NewServer(t, tc.handler)
			opts := fastOpts(nil)
			opts.Timeout, opts.AttemptTimeout = 300*time.Millisecond, 300*time.Millisecond
			f := newForwarder(t, corefile.Forward{To: []string{s.Addr}, ForceTCP: tc.forceTCP}, opts)
			start := time.Now()
			r, err := f.Exchange(context.Background(), query("web.default.svc.cluster.local.", dns.TypeA))
			if tc.wantErr {
				if !errors.Is(err, ErrNoUpstream) {
					t.Fatalf("got %v, %v; want ErrNoUpstream", r, err)
				}
				if d := time.Since(start); d > 2*time.Second {
					t.Fatalf("timeout took %v", d)
				}
				return
			}
			if err != nil {
				t.Fatalf("Exchange: %v", err)
			}
			if got := firstA(t, r); got != "192.0.2.1" {
				t.Fatalf("accepted a forged answer: A %s", got)
			}
		})
	}
}

func TestCoalescing(t *testing.T) {
	release := make(chan struct{})
	s := dnstest.NewServer(t, dnstest.Block(release, zone.Handler()))
	for _, forceTCP := range []bool{false, true} {
		t.Run(fmt.Sprintf("force_tcp=%v", forceTCP), func(t *testing.T) {
			s.Reset()
			release = make(chan struct{})
			s.SetHandler(dnstest.Block(release, zone.Handler()))
			f := newForwarder(t, corefile.Forward{To: []string{s.Addr}, ForceTCP: forceTCP}, fastOpts(nil))
			const n = 50
			var wg sync.WaitGroup
			errs := make(chan error, n+1)
			for i := range n {
				wg.Go(func() {
					name := "web.default.svc.cluster.local."
					if i%2 == 1 {
						name = "WEB.default.SVC.cluster.local."
					}
					req := query(name, dns.TypeA)
					req.Id = uint16(1000 + i)
					r, err := f.Exchange(context.Background(), req)
					switch {
					case err != nil:
						errs <- err
					case r.Id != req.Id || r.Question[0].Name != name:
						errs <- fmt.Errorf("caller %d got id %d question %q", i, r.Id, r.Question[0].Name)
					}
				})
			}
			// A different type is a different query.
			wg.Go(func() {
				if _, err := f.Exchange(context.Background(), query("web.default.svc.cluster.local.", dns.TypeAAAA)); err != nil {
					errs <- err
				}
			})
			if !s.WaitCount("", 2, time.Second) {
				t.Fatalf("upstream saw %d queries, want 2", s.Count(""))
			}
			waitFor(t, "every caller joined the shared query", func() bool {
				f.mu.Lock()
				defer f.mu.Unlock()
				c := f.calls[callKey{name: "web.default.svc.cluster.local.", qtype: dns.TypeA, qclass: dns.ClassINET, rd: true}]
				return c != nil && c.waiters == n
			})
			close(release)
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}
			if got := s.Count(""); got != 2 {
				t.Fatalf("%d identical + 1 different concurrent queries made %d upstream queries, want 2", n, got)
			}
		})
	}
}

func TestPipeliningOnOneTCPConnection(t *testing.T) {
	release := make(chan struct{})
	s := dnstest.NewServer(t, dnstest.Block(release, zone.Handler()))
	f := newForwarder(t, corefile.Forward{To: []string{s.Addr}, ForceTCP: true}, fastOpts(nil))
	const n = 10
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() {
			if _, err := f.Exchange(context.Background(), query(fmt.Sprintf("p%d.default.svc.cluster.local.", i), dns.TypeA)); err != nil {
				errs <- err
			}
		})
	}
	if !s.WaitCount("tcp", n, time.Second) {
		t.Fatalf("only %d of %d queries in flight before any answer", s.Count("tcp"), n)
	}
	close(release)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if s.Conns() != 1 {
		t.Fatalf("%d queries used %d tcp connections, want 1", n, s.Conns())
	}
	// The connection is reused by later queries and re-dialed when it breaks.
	if _, err := f.Exchange(context.Background(), query("again.default.svc.cluster.local.", dns.TypeA)); err != nil || s.Conns() != 1 {
		t.Fatalf("reuse: err %v, %d connections", err, s.Conns())
	}
	s.CloseConns()
	time.Sleep(20 * time.Millisecond)
	if _, err := f.Exchange(context.Background(), query("after-close.default.svc.cluster.local.", dns.TypeA)); err != nil || s.Conns() != 2 {
		t.Fatalf("reconnect: err %v, %d connections", err, s.Conns())
	}
}

func TestIdleConnectionsExpire(t *testing.T) {
	s := dnstest.NewServer(t, zone.Handler())
	f := newForwarder(t, corefile.Forward{To: []string{s.Addr}, ForceTCP: true, Expire: 50 * time.Millisecond}, fastOpts(nil))
	if _, err := f.Exchange(context.Background(), query("web.default.svc.cluster.local.", dns.TypeA)); err != nil {
		t.Fatal(err)
	}
	if n := f.upstreams[0].tcp.size(); n != 1 {
		t.Fatalf("%d open connections after a query, want 1", n)
	}
	deadline := time.Now().Add(2 * time.Second)
	for f.upstreams[0].tcp.size() != 0 {
		if time.Now().After(deadline) {
			t.Fatal("idle connection not closed after expire")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestFailoverAndHealthCheckRecovery(t *testing.T) {
	reg := prometheus.NewRegistry()
	bad := dnstest.NewServer(t, dnstest.Drop)
	good := dnstest.NewServer(t, zone.Handler())
	f := newForwarder(t, corefile.Forward{
		To: []string{bad.Addr, good.Addr}, Policy: "sequential", MaxFails: 2, HealthCheck: 20 * time.Millisecond,
	}, fastOpts(reg))
	name := "web.default.svc.cluster.local."

	start := time.Now()
	r, err := f.Exchange(context.Background(), query(name, dns.TypeA))
	if err != nil {
		t.Fatalf("failover: %v", err)
	}
	if d := time.Since(start); d > 1500*time.Millisecond {
		t.Fatalf("failover took %v, want about one attempt timeout (300ms, far below the 1s overall timeout plus slack)", d)
	}
	if firstA(t, r) != "192.0.2.1" || clientQueries(bad, name) != 1 || clientQueries(good, name) != 1 {
		t.Fatalf("bad saw %d, good saw %d queries", clientQueries(bad, name), clientQueries(good, name))
	}

	// The failed upstream is probed with `. IN NS` and marked down.
	waitFor(t, "bad upstream marked down", func() bool { return !f.Healthy()[bad.Addr] })
	if got := testutil.ToFloat64(f.m.healthcheckFailures.WithLabelValues(proxyName, bad.Addr)); got < 2 {
		t.Fatalf("healthcheck_failures_total{to=%s} = %v, want >= 2", bad.Addr, got)
	}
	if clientQueries(bad, ".") < 2 {
		t.Fatalf("bad upstream saw %d health probes", clientQueries(bad, "."))
	}
	for range 3 {
		if _, err := f.Exchange(context.Background(), query(name, dns.TypeA)); err != nil {
			t.Fatal(err)
		}
	}
	if got := clientQueries(bad, name); got != 1 {
		t.Fatalf("down upstream still got queries: %d", got)
	}

	// It recovers once it answers health checks again.
	bad.SetHandler(zone.Handler())
	waitFor(t, "bad upstream healthy again", func() bool { return f.Healthy()[bad.Addr] })
	if _, err := f.Exchange(context.Background(), query(name, dns.TypeA)); err != nil {
		t.Fatal(err)
	}
	if got := clientQueries(bad, name); got != 2 {
		t.Fatalf("recovered first upstream got %d queries, want 2", got)
	}
	if got := testutil.ToFloat64(f.m.requests.WithLabelValues(good.Addr)); got != 4 {
		t.Fatalf("requests_total{to=good} = %v, want 4", got)
	}
	if got := histCount(t, f.m.duration.WithLabelValues(proxyName, good.Addr, "NOERROR")); got != 4 {
		t.Fatalf("proxy_request_duration_seconds{to=good,rcode=NOERROR} count = %v, want 4", got)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting: %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestTimeoutsBounded(t *testing.T) {
	a := dnstest.NewServer(t, dnstest.Drop)
	b := dnstest.NewServer(t, dnstest.Drop)
	for _, tc := range []struct {
		name     string
		forceTCP bool
		timeout  time.Duration
		attempt  time.Duration
		ctx      time.Duration
		want     time.Duration
	}{
		{name: "two silent upstreams, attempt timeout each", attempt: 100 * time.Millisecond, timeout: 5 * time.Second, want: 200 * time.Millisecond},
		{name: "overall timeout caps attempts", attempt: 3 * time.Second, timeout: 150 * time.Millisecond, want: 150 * time.Millisecond},
		{name: "tcp overall timeout", forceTCP: true, attempt: 3 * time.Second, timeout: 150 * time.Millisecond, want: 150 * time.Millisecond},
		{name: "caller context", attempt: 3 * time.Second, timeout: 5 * time.Second, ctx: 100 * time.Millisecond, want: 100 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newForwarder(t, corefile.Forward{To: []string{a.Addr, b.Addr}, ForceTCP: tc.forceTCP},
				Options{Timeout: tc.timeout, AttemptTimeout: tc.attempt})
			ctx := context.Background()
			if tc.ctx > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, tc.ctx)
				defer cancel()
			}
			start := time.Now()
			_, err := f.Exchange(ctx, query("web.default.svc.cluster.local.", dns.TypeA))
			d := time.Since(start)
			if err == nil {
				t.Fatal("silent upstreams produced an answer")
			}
			// The slack is generous for loaded machines; the limits that must
			// not apply instead are 3s and more.
			if d < tc.want-20*time.Millisecond || d > tc.want+time.Second {
				t.Fatalf("failed after %v, want about %v (%v)", d, tc.want, err)
			}
		})
	}
}

func TestMaxConcurrent(t *testing.T) {
	reg := prometheus.NewRegistry()
	release := make(chan struct{})
	s := dnstest.NewServer(t, dnstest.Block(release, zone.Handler()))
	f := newForwarder(t, corefile.Forward{To: []string{s.Addr}, MaxConcurrent: 1}, fastOpts(reg))
	done := make(chan error, 1)
	go func() {
		_, err := f.Exchange(context.Background(), query("web.default.svc.cluster.local.", dns.TypeA))
		done <- err
	}()
	s.WaitCount("", 1, time.Second)
	if _, err := f.Exchange(context.Background(), query("other.default.svc.cluster.local.", dns.TypeA)); !errors.Is(err, ErrMaxConcurrent) {
		t.Fatalf("second distinct query: %v, want ErrMaxConcurrent", err)
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatalf("first query: %v", err)
	}
	if got := testutil.ToFloat64(f.m.maxConcurrentRejects); got != 1 {
		t.Fatalf("max_concurrent_rejects_total = %v", got)
	}
}

func TestPolicies(t *testing.T) {
	for _, tc := range []struct {
		name   string
		policy string
		check  func(first, second int) bool
	}{
		{name: "sequential uses the first", policy: "sequential", check: func(a, b int) bool { return a == 40 && b == 0 }},
		{name: "round_robin alternates", policy: "round_robin", check: func(a, b int) bool { return a == 20 && b == 20 }},
		{name: "random uses both", policy: "random", check: func(a, b int) bool { return a > 0 && b > 0 && a+b == 40 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s1 := dnstest.NewServer(t, zone.Handler())
			s2 := dnstest.NewServer(t, zone.Handler())
			f := newForwarder(t, corefile.Forward{To: []string{s1.Addr, s2.Addr}, Policy: tc.policy}, fastOpts(nil))
			for i := range 40 {
				if _, err := f.Exchange(context.Background(), query(fmt.Sprintf("n%d.cluster.local.", i), dns.TypeA)); err != nil {
					t.Fatal(err)
				}
			}
			if !tc.check(s1.Count(""), s2.Count("")) {
				t.Fatalf("policy %s: first upstream %d, second %d queries", tc.policy, s1.Count(""), s2.Count(""))
			}
		})
	}
}

func TestEDNS(t *testing.T) {
	s := dnstest.NewServer(t, zone.Handler())
	f := newForwarder(t, corefile.Forward{To: []string{s.Addr}}, fastOpts(nil))
	for _, tc := range []struct {
		name    string
		edns    bool
		do      bool
		wantOPT bool
	}{
		{name: "no edns", wantOPT: false},
		{name: "edns", edns: true, wantOPT: true},
		{name: "edns do", edns: true, do: true, wantOPT: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := query("web.default.svc.cluster.local.", dns.TypeA)
			if tc.edns {
				req.SetEdns0(4096, tc.do)
				req.IsEdns0().Option = append(req.IsEdns0().Option, &dns.EDNS0_COOKIE{Code: dns.EDNS0COOKIE, Cookie: "0102030405060708"})
			}
			r, err := f.Exchange(context.Background(), req)
			if err != nil {
				t.Fatal(err)
			}
			opt := r.IsEdns0()
			if (opt != nil) != tc.wantOPT || (opt != nil && opt.Do() != tc.do) {
				t.Fatalf("reply OPT %v, want present=%v do=%v", opt, tc.wantOPT, tc.do)
			}
			up := s.Queries()[len(s.Queries())-1].Msg.IsEdns0()
			if up == nil || up.UDPSize() != DefaultUDPSize || up.Do() != tc.do || len(up.Option) != 0 {
				t.Fatalf("upstream query OPT %v, want size %d do=%v and no client options", up, DefaultUDPSize, tc.do)
			}
		})
	}
}

func TestSharedRegistryAndMatch(t *testing.T) {
	reg := prometheus.NewRegistry()
	s := dnstest.NewServer(t, zone.Handler())
	f1 := newForwarder(t, corefile.Forward{From: "cluster.local.", To: []string{s.Addr}, Except: []string{"skip.cluster.local."}}, fastOpts(reg))
	f2 := newForwarder(t, corefile.Forward{From: "in-addr.arpa.", To: []string{s.Addr}}, fastOpts(reg))
	for _, tc := range []struct {
		f    *Forwarder
		name string
		want bool
	}{
		{f1, "web.default.svc.cluster.local.", true},
		{f1, "Web.Cluster.Local.", true},
		{f1, "a.skip.cluster.local.", false},
		{f1, "example.org.", false},
		{f2, "1.0.0.10.in-addr.arpa.", true},
	} {
		if got := tc.f.Match(tc.name); got != tc.want {
			t.Errorf("Match(%q) = %v, want %v", tc.name, got, tc.want)
		}
	}
	for _, f := range []*Forwarder{f1, f2} {
		if _, err := f.Exchange(context.Background(), query("web.default.svc.cluster.local.", dns.TypeA)); err != nil {
			t.Fatal(err)
		}
	}
	if got := testutil.ToFloat64(f1.m.requests.WithLabelValues(s.Addr)); got != 2 {
		t.Fatalf("shared coredns_forward_requests_total{to} = %v, want 2", got)
	}
	n, err := testutil.GatherAndCount(reg, "coredns_forward_requests_total", "coredns_proxy_request_duration_seconds")
	if err != nil || n != 2 {
		t.Fatalf("gathered %d series (%v), want 2", n, err)
	}
}

func TestNewRefusesBadConfig(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  corefile.Forward
		want string
	}{
		{name: "no upstreams", cfg: corefile.Forward{}, want: "no upstream"},
		{name: "hostname", cfg: corefile.Forward{To: []string{"dns.example:53"}}, want: "not an IP"},
		{name: "no port", cfg: corefile.Forward{To: []string{"10.0.0.10"}}, want: "missing port"},
		{name: "policy", cfg: corefile.Forward{To: []string{"10.0.0.10:53"}, Policy: "fastest"}, want: "unknown policy"},
		{name: "negative max_fails", cfg: corefile.Forward{To: []string{"10.0.0.10:53"}, MaxFails: -1}, want: "negative"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, err := New(tc.cfg, Options{})
			if err == nil {
				f.Close()
				t.Fatal("accepted")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q does not mention %q", err, tc.want)
			}
		})
	}
	f, err := New(corefile.Forward{To: []string{"[::1]:53"}}, Options{})
	if err != nil {
		t.Fatalf("IPv6 upstream refused: %v", err)
	}
	f.Close()
	if _, err := f.Exchange(context.Background(), query("a.", dns.TypeA)); !errors.Is(err, ErrClosed) {
		t.Fatalf("Exchange after Close: %v", err)
	}
	if _, err := (&Forwarder{}).Exchange(context.Background(), new(dns.Msg)); err == nil {
		t.Fatal("query without question accepted")
	}
}

func TestCoalescedCallerOutlivesLeader(t *testing.T) {
	release := make(chan struct{})
	var once sync.Once
	s := dnstest.NewServer(t, dnstest.Block(release, zone.Handler()))
	t.Cleanup(func() { once.Do(func() { close(release) }) }) // before the server closes
	f := newForwarder(t, corefile.Forward{To: []string{s.Addr}}, fastOpts(nil))
	name := "web.default.svc.cluster.local."
	leaderCtx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	leaderErr := make(chan error, 1)
	go func() {
		_, err := f.Exchange(leaderCtx, query(name, dns.TypeA))
		leaderErr <- err
	}()
	s.WaitCount("udp", 1, time.Second)
	follower := make(chan *dns.Msg, 1)
	go func() {
		r, err := f.Exchange(context.Background(), query(name, dns.TypeA))
		if err != nil {
			t.Error(err)
		}
		follower <- r
	}()
	if err := <-leaderErr; !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("leader: %v, want its deadline", err)
	}
	// The follower asks again on its own; let both upstream queries answer.
	if !s.WaitCount("udp", 2, time.Second) {
		t.Fatal("follower did not ask again after the leader gave up")
	}
	once.Do(func() { close(release) })
	select {
	case r := <-follower:
		if r == nil || firstA(t, r) != "192.0.2.1" {
			t.Fatalf("follower got %v", r)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("follower never answered")
	}
}

// histCount is the number of observations of one histogram.
func histCount(t *testing.T, o prometheus.Observer) uint64 {
	t.Helper()
	var m dto.Metric
	if err := o.(prometheus.Metric).Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetHistogram().GetSampleCount()
}

// TestProxyMetrics checks the coredns_proxy_* families CoreDNS 1.11+
// exports: answers timed per upstream and rcode, and the connection cache
// counted per query (the first query dials, the next ones reuse).
func TestProxyMetrics(t *testing.T) {
	for _, proto := range []string{"udp", "tcp"} {
		t.Run(proto, func(t *testing.T) {
			s := dnstest.NewServer(t, zone.Handler())
			reg := prometheus.NewRegistry()
			f := newForwarder(t, corefile.Forward{To: []string{s.Addr}, ForceTCP: proto == "tcp"}, fastOpts(reg))
			for range 3 {
				if _, err := f.Exchange(context.Background(), query("web.default.svc.cluster.local.", dns.TypeA)); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := f.Exchange(context.Background(), query("nx.cluster.local.", dns.TypeA)); err != nil {
				t.Fatal(err)
			}
			if got := histCount(t, f.m.duration.WithLabelValues("forward", s.Addr, "NOERROR")); got != 3 {
				t.Errorf("request_duration_seconds{rcode=NOERROR} count = %d, want 3", got)
			}
			if got := histCount(t, f.m.duration.WithLabelValues("forward", s.Addr, "NXDOMAIN")); got != 1 {
				t.Errorf("request_duration_seconds{rcode=NXDOMAIN} count = %d, want 1", got)
			}
			if got := testutil.ToFloat64(f.m.connCacheMisses.WithLabelValues("forward", s.Addr, proto)); got != 1 {
				t.Errorf("conn_cache_misses_total{proto=%s} = %v, want 1", proto, got)
			}
			if got := testutil.ToFloat64(f.m.connCacheHits.WithLabelValues("forward", s.Addr, proto)); got != 3 {
				t.Errorf("conn_cache_hits_total{proto=%s} = %v, want 3", proto, got)
			}
			n, err := testutil.GatherAndCount(reg, "coredns_forward_responses_total", "coredns_forward_request_duration_seconds", "coredns_forward_healthcheck_failures_total")
			if err != nil || n != 0 {
				t.Errorf("pre-1.11 families still exported: %d series (%v)", n, err)
			}
		})
	}
}

// TestRDNotCoalesced: concurrent identical queries that differ in the RD
// bit are two upstream queries, each with its own RD bit.
func TestRDNotCoalesced(t *testing.T) {
	release := make(chan struct{})
	s := dnstest.NewServer(t, dnstest.Block(release, zone.Handler()))
	f := newForwarder(t, corefile.Forward{To: []string{s.Addr}}, fastOpts(nil))
	var wg sync.WaitGroup
	for _, rd := range []bool{true, false} {
		wg.Go(func() {
			req := query("web.default.svc.cluster.local.", dns.TypeA)
			req.RecursionDesired = rd
			if _, err := f.Exchange(context.Background(), req); err != nil {
				t.Error(err)
			}
		})
	}
	if !s.WaitCount("", 2, 2*time.Second) {
		t.Fatalf("upstream saw %d queries for an RD=0 and an RD=1 query, want 2", s.Count(""))
	}
	close(release)
	wg.Wait()
	rds := map[bool]bool{}
	for _, q := range s.Queries() {
		rds[q.Msg.RecursionDesired] = true
	}
	if !rds[true] || !rds[false] {
		t.Errorf("upstream queries' RD bits %v, want one of each", rds)
	}
}
