package forward

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/nodelocaldns/nodelocaldns/agent/corefile"
	"github.com/nodelocaldns/nodelocaldns/agent/dnstest"
)

func TestFailover(t *testing.T) {
	for _, tc := range []struct {
		name      string
		failover  []int
		first     int // rcode of the first upstream (sequential policy)
		second    int
		wantRcode int
		wantAsked [2]int
	}{
		{name: "without failover a SERVFAIL stands", first: dns.RcodeServerFailure, second: dns.RcodeSuccess, wantRcode: dns.RcodeServerFailure, wantAsked: [2]int{1, 0}},
		{name: "failover SERVFAIL asks the next", failover: []int{dns.RcodeServerFailure}, first: dns.RcodeServerFailure, second: dns.RcodeSuccess, wantRcode: dns.RcodeSuccess, wantAsked: [2]int{1, 1}},
		{name: "other rcodes stand", failover: []int{dns.RcodeRefused}, first: dns.RcodeServerFailure, second: dns.RcodeSuccess, wantRcode: dns.RcodeServerFailure, wantAsked: [2]int{1, 0}},
		{name: "last answer when all fail over", failover: []int{dns.RcodeServerFailure, dns.RcodeRefused}, first: dns.RcodeServerFailure, second: dns.RcodeRefused, wantRcode: dns.RcodeRefused, wantAsked: [2]int{1, 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := dnstest.NewServer(t, dnstest.Rcode(tc.first))
			b := dnstest.NewServer(t, dnstest.Rcode(tc.second))
			f := newForwarder(t, corefile.Forward{To: []string{a.Addr, b.Addr}, Policy: "sequential", Failover: tc.failover}, fastOpts(nil))
			r, err := f.Exchange(context.Background(), query("web.default.svc.cluster.local.", dns.TypeA))
			if err != nil {
				t.Fatal(err)
			}
			if r.Rcode != tc.wantRcode {
				t.Fatalf("rcode %s, want %s", dns.RcodeToString[r.Rcode], dns.RcodeToString[tc.wantRcode])
			}
			if got := [2]int{clientQueries(a, "web.default.svc.cluster.local."), clientQueries(b, "web.default.svc.cluster.local.")}; got != tc.wantAsked {
				t.Fatalf("upstreams asked %v, want %v", got, tc.wantAsked)
			}
		})
	}
}

func TestMaxConnectAttempts(t *testing.T) {
	var silent []string
	var servers []*dnstest.Server
	for range 3 {
		s := dnstest.NewServer(t, dnstest.Drop)
		servers = append(servers, s)
		silent = append(silent, s.Addr)
	}
	for _, tc := range []struct {
		name     string
		attempts int
		want     int
	}{{"no cap: every upstream", 0, 3}, {"cap 1", 1, 1}, {"cap 2", 2, 2}} {
		t.Run(tc.name, func(t *testing.T) {
			for _, s := range servers {
				s.Reset()
			}
			f := newForwarder(t, corefile.Forward{To: silent, MaxConnectAttempts: tc.attempts, MaxFails: 0},
				Options{Timeout: 2 * time.Second, AttemptTimeout: 50 * time.Millisecond})
			_, err := f.Exchange(context.Background(), query("web.default.svc.cluster.local.", dns.TypeA))
			if err == nil {
				t.Fatal("silent upstreams answered")
			}
			asked := 0
			for _, s := range servers {
				asked += clientQueries(s, "web.default.svc.cluster.local.")
			}
			if asked != tc.want {
				t.Fatalf("%d upstreams asked, want %d (%v)", asked, tc.want, err)
			}
		})
	}
}

func TestFailFastAllUnhealthy(t *testing.T) {
	for _, failFast := range []bool{false, true} {
		s := dnstest.NewServer(t, zone.Handler())
		f := newForwarder(t, corefile.Forward{To: []string{s.Addr}, MaxFails: 1, FailFast: failFast, HealthCheck: time.Hour}, fastOpts(nil))
		f.upstreams[0].fails.Store(1) // marked down
		_, err := f.Exchange(context.Background(), query("web.default.svc.cluster.local.", dns.TypeA))
		asked := clientQueries(s, "web.default.svc.cluster.local.")
		if failFast && (err == nil || !strings.Contains(err.Error(), "every upstream is down") || asked != 0) {
			t.Fatalf("failfast: err %v, upstream asked %d times; want a failure without asking", err, asked)
		}
		if !failFast && (err != nil || asked != 1) {
			t.Fatalf("without failfast: err %v, upstream asked %d times; want it asked anyway", err, asked)
		}
	}
}

func TestMaxIdleConns(t *testing.T) {
	s := dnstest.NewServer(t, zone.Handler())
	f := newForwarder(t, corefile.Forward{To: []string{s.Addr}, MaxIdleConns: 2}, fastOpts(nil))
	u := f.upstreams[0]
	// Ten sockets in use at once, then all returned: two stay idle.
	var conns []*net.UDPConn
	for range 10 {
		c, err := u.udp.get()
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	for _, c := range conns {
		u.udp.put(c)
	}
	if n := u.udp.size(); n != 2 {
		t.Fatalf("%d idle UDP sockets, want 2", n)
	}
}

func TestChainNext(t *testing.T) {
	nx := dnstest.NewServer(t, dnstest.Rcode(dns.RcodeNameError))
	ok := dnstest.NewServer(t, zone.Handler())
	other := dnstest.NewServer(t, zone.Handler())
	for _, tc := range []struct {
		name      string
		first     corefile.Forward
		second    corefile.Forward
		qname     string
		wantRcode int
		wantErr   bool
		wantAsked [3]int // nx, ok, other
	}{
		{name: "next NXDOMAIN goes on", first: corefile.Forward{To: []string{nx.Addr}, Next: []int{dns.RcodeNameError}}, second: corefile.Forward{To: []string{ok.Addr}},
			qname: "web.default.svc.cluster.local.", wantRcode: dns.RcodeSuccess, wantAsked: [3]int{1, 1, 0}},
		{name: "without next the answer stands", first: corefile.Forward{To: []string{nx.Addr}}, second: corefile.Forward{To: []string{ok.Addr}},
			qname: "web.default.svc.cluster.local.", wantRcode: dns.RcodeNameError, wantAsked: [3]int{1, 0, 0}},
		{name: "next other rcode: the answer stands", first: corefile.Forward{To: []string{nx.Addr}, Next: []int{dns.RcodeServerFailure}}, second: corefile.Forward{To: []string{ok.Addr}},
			qname: "web.default.svc.cluster.local.", wantRcode: dns.RcodeNameError, wantAsked: [3]int{1, 0, 0}},
		{name: "first does not match: second asked", first: corefile.Forward{From: "example.org.", To: []string{nx.Addr}}, second: corefile.Forward{To: []string{other.Addr}},
			qname: "web.default.svc.cluster.local.", wantRcode: dns.RcodeSuccess, wantAsked: [3]int{0, 0, 1}},
		{name: "except skips to second", first: corefile.Forward{To: []string{nx.Addr}, Except: []string{"cluster.local."}}, second: corefile.Forward{To: []string{other.Addr}},
			qname: "web.default.svc.cluster.local.", wantRcode: dns.RcodeSuccess, wantAsked: [3]int{0, 0, 1}},
		{name: "next into a forward that does not match fails", first: corefile.Forward{To: []string{nx.Addr}, Next: []int{dns.RcodeNameError}}, second: corefile.Forward{From: "example.org.", To: []string{ok.Addr}},
			qname: "web.default.svc.cluster.local.", wantErr: true, wantAsked: [3]int{1, 0, 0}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, s := range []*dnstest.Server{nx, ok, other} {
				s.Reset()
			}
			c := NewChain(newForwarder(t, tc.first, fastOpts(nil)), newForwarder(t, tc.second, fastOpts(nil)))
			if !c.Match(tc.qname) {
				t.Fatal("chain does not match")
			}
			r, err := c.Exchange(context.Background(), query(tc.qname, dns.TypeA))
			if tc.wantErr != (err != nil) {
				t.Fatalf("err %v, want error: %v", err, tc.wantErr)
			}
			if err == nil && r.Rcode != tc.wantRcode {
				t.Fatalf("rcode %s, want %s", dns.RcodeToString[r.Rcode], dns.RcodeToString[tc.wantRcode])
			}
			var got [3]int
			for i, s := range []*dnstest.Server{nx, ok, other} {
				got[i] = clientQueries(s, tc.qname)
			}
			if got != tc.wantAsked {
				t.Fatalf("asked %v, want %v", got, tc.wantAsked)
			}
		})
	}
	c := NewChain(newForwarder(t, corefile.Forward{From: "a.example.", To: []string{ok.Addr}}, fastOpts(nil)),
		newForwarder(t, corefile.Forward{From: "b.example.", To: []string{ok.Addr}}, fastOpts(nil)))
	if !c.Match("x.b.example.") || c.Match("c.example.") {
		t.Fatal("Match wrong")
	}
}

func TestHealthCheckProbe(t *testing.T) {
	for _, tc := range []struct {
		name   string
		domain string
		noRec  bool
		want   string
		wantRD bool
	}{
		{name: "default", want: ".", wantRD: true},
		{name: "domain and no_rec", domain: "health.example.", noRec: true, want: "health.example.", wantRD: false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// The client's query is dropped, so the upstream is probed.
			s := dnstest.NewServer(t, func(w *dnstest.Writer, q *dnstest.Query) {
				if q.Msg.Question[0].Qtype == dns.TypeNS {
					_ = w.Write(new(dns.Msg).SetReply(q.Msg))
				}
			})
			f := newForwarder(t, corefile.Forward{To: []string{s.Addr}, MaxFails: 2, HealthCheck: 20 * time.Millisecond,
				HealthCheckDomain: tc.domain, HealthCheckNoRec: tc.noRec}, fastOpts(nil))
			_, _ = f.Exchange(context.Background(), query("web.default.svc.cluster.local.", dns.TypeA))
			deadline := time.Now().Add(2 * time.Second)
			for {
				for _, q := range s.Queries() {
					if q.Msg.Question[0].Qtype == dns.TypeNS {
						if q.Msg.Question[0].Name != tc.want || q.Msg.RecursionDesired != tc.wantRD {
							t.Fatalf("probe %s RD=%v, want %s RD=%v", q.Msg.Question[0].Name, q.Msg.RecursionDesired, tc.want, tc.wantRD)
						}
						return
					}
				}
				if time.Now().After(deadline) {
					t.Fatal("no health probe")
				}
				time.Sleep(10 * time.Millisecond)
			}
		})
	}
}

func TestMaxIdleConnsTCP(t *testing.T) {
	for _, tc := range []struct{ maxIdle, want int }{{0, 3}, {1, 1}, {2, 2}} {
		p := newTCPPool("192.0.2.1:53", time.Hour, nil, tc.maxIdle)
		for range 3 {
			a, b := net.Pipe()
			t.Cleanup(func() { a.Close(); b.Close() })
			p.conns = append(p.conns, newTCPConn(a))
		}
		p.reap()
		if n := p.size(); n != tc.want {
			t.Errorf("max_idle_conns %d: %d idle connections kept, want %d", tc.maxIdle, n, tc.want)
		}
		p.close()
	}
}
