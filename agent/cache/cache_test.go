package cache

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/nodelocaldns/nodelocaldns/agent/corefile"
	"github.com/nodelocaldns/nodelocaldns/agent/dnswire"
)

// clock is a settable time source.
type clock struct{ t time.Time }

func (c *clock) now() time.Time      { return c.t }
func (c *clock) add(d time.Duration) { c.t = c.t.Add(d) }
func newClock() *clock               { return &clock{t: time.Unix(1_700_000_000, 0)} }
func defaults() corefile.Cache {
	return corefile.Cache{SuccessCap: 9984, SuccessTTL: 3600 * time.Second, SuccessMinTTL: 5 * time.Second,
		DenialCap: 9984, DenialTTL: 1800 * time.Second, DenialMinTTL: 5 * time.Second, ServfailTTL: ServfailTTL}
}

// packedQuery returns a packed query and its parse.
func packedQuery(t testing.TB, name string, qtype uint16, edns bool) ([]byte, *dnswire.Query) {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	if edns {
		m.SetEdns0(1232, false)
	}
	b, err := m.Pack()
	if err != nil {
		t.Fatal(err)
	}
	q := new(dnswire.Query)
	if err := dnswire.ParseQuery(b, q); err != nil {
		t.Fatal(err)
	}
	return b, q
}

func keyOf(t testing.TB, name string, qtype uint16) []byte {
	t.Helper()
	b, q := packedQuery(t, name, qtype, false)
	return dnswire.AppendKey(nil, b, q)
}

func answer(name string, rcode int, rrs ...string) *dns.Msg {
	m := new(dns.Msg)
	m.SetQuestion(name, dns.TypeA)
	m.Response = true
	m.RecursionAvailable = true
	m.Rcode = rcode
	for _, s := range rrs {
		rr, err := dns.NewRR(s)
		if err != nil {
			panic(err)
		}
		if rr.Header().Rrtype == dns.TypeSOA {
			m.Ns = append(m.Ns, rr)
		} else {
			m.Answer = append(m.Answer, rr)
		}
	}
	return m
}

func TestTTL(t *testing.T) {
	capped := defaults()
	capped.SuccessTTL = 30 * time.Second
	capped.DenialTTL = 5 * time.Second
	for _, tc := range []struct {
		name    string
		cfg     corefile.Cache
		msg     *dns.Msg
		wantTTL uint32 // 0: not cached
	}{
		{"positive min of records", defaults(), answer("a.example.", 0, "a.example. 300 IN A 192.0.2.1", "a.example. 100 IN A 192.0.2.2"), 100},
		{"positive capped", capped, answer("a.example.", 0, "a.example. 300 IN A 192.0.2.1"), 30},
		{"positive raised to min TTL", defaults(), answer("a.example.", 0, "a.example. 1 IN A 192.0.2.1"), 5},
		{"nxdomain from SOA minimum", defaults(), answer("a.example.", dns.RcodeNameError, "example. 900 IN SOA ns. h. 1 2 3 4 60"), 60},
		{"nxdomain from SOA ttl", defaults(), answer("a.example.", dns.RcodeNameError, "example. 40 IN SOA ns. h. 1 2 3 4 600"), 40},
		{"nodata from SOA", defaults(), answer("a.example.", 0, "example. 900 IN SOA ns. h. 1 2 3 4 120"), 120},
		{"denial capped", capped, answer("a.example.", dns.RcodeNameError, "example. 900 IN SOA ns. h. 1 2 3 4 60"), 5},
		{"servfail briefly", defaults(), answer("a.example.", dns.RcodeServerFailure), 5},
		// NOERROR with no records and no SOA (hosts' or template's empty
		// answer) is a positive entry, as CoreDNS's NoError: the success
		// minimum TTL applies.
		{"empty noerror without soa", func() corefile.Cache { c := defaults(); c.SuccessMinTTL = 7 * time.Second; return c }(), answer("a.example.", 0), 7},
		// A referral gets CoreDNS's 5s whatever its records say.
		{"referral", defaults(), func() *dns.Msg {
			m := answer("a.example.", 0)
			ns, _ := dns.NewRR("example. 3600 IN NS ns.example.")
			glue, _ := dns.NewRR("ns.example. 3600 IN A 192.0.2.53")
			m.Ns, m.Extra = []dns.RR{ns}, []dns.RR{glue}
			return m
		}(), 5},
		{"refused not cached", defaults(), answer("a.example.", dns.RcodeRefused), 0},
		{"truncated not cached", defaults(), func() *dns.Msg { m := answer("a.example.", 0); m.Truncated = true; return m }(), 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clk := newClock()
			c := New(tc.cfg, Options{Now: clk.now})
			key := keyOf(t, "a.example.", dns.TypeA)
			err := c.Set(key, tc.msg)
			if tc.wantTTL == 0 {
				if !errors.Is(err, ErrNotCacheable) {
					t.Fatalf("Set err = %v, want ErrNotCacheable", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			e, ttl, fresh := c.Get(key, c.Now())
			if e == nil || !fresh || ttl != tc.wantTTL {
				t.Fatalf("Get = %v, ttl %d, fresh %v; want ttl %d", e != nil, ttl, fresh, tc.wantTTL)
			}
			clk.add(time.Duration(tc.wantTTL) * time.Second)
			if e, _, fresh := c.Get(key, c.Now()); e != nil || fresh {
				t.Errorf("still cached after %ds", tc.wantTTL)
			}
		})
	}
}

func TestCountdownAndReply(t *testing.T) {
	clk := newClock()
	c := New(defaults(), Options{Now: clk.now})
	upper, uq := packedQuery(t, "WWW.Example.", dns.TypeA, true)
	key := dnswire.AppendKey(nil, upper, uq)
	if err := c.Set(key, answer("www.example.", 0, "www.example. 60 IN A 192.0.2.1", "www.example. 60 IN A 192.0.2.2")); err != nil {
		t.Fatal(err)
	}
	clk.add(25 * time.Second)
	e, ttl, fresh := c.Hit(key, c.Now())
	if !fresh || ttl != 35 {
		t.Fatalf("ttl %d fresh %v, want 35", ttl, fresh)
	}
	for _, tc := range []struct {
		name  string
		limit int
		tc    bool
		count int
	}{
		{"whole", 4096, false, 2},
		{"truncated", 40, true, 0},
		// Room for one record (29 header and question, 16 per A record
		// with a compressed name, 11 OPT): the records that fit, as
		// miekg/dns's Truncate keeps them.
		{"one record fits", 29 + 16 + 11, true, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := e.Reply(nil, upper, uq, ttl, tc.limit, 1232, true)
			var m dns.Msg
			if err := m.Unpack(out); err != nil {
				t.Fatal(err)
			}
			if m.Id != uq.ID || m.Question[0].Name != "WWW.Example." || m.Truncated != tc.tc || len(m.Answer) != tc.count {
				t.Fatalf("reply %v", &m)
			}
			for _, rr := range m.Answer {
				if rr.Header().Ttl != 35 {
					t.Errorf("ttl %d, want 35", rr.Header().Ttl)
				}
			}
			if opt := m.IsEdns0(); opt == nil || opt.UDPSize() != 1232 {
				t.Errorf("OPT = %v", opt)
			}
		})
	}
	// Without EDNS in the query there is no OPT in the reply.
	plain, pq := packedQuery(t, "www.example.", dns.TypeA, false)
	var m dns.Msg
	if err := m.Unpack(e.Reply(nil, plain, pq, ttl, 512, 1232, true)); err != nil || m.IsEdns0() != nil {
		t.Errorf("reply without EDNS: %v, OPT %v", err, m.IsEdns0())
	}
}

// TestAuthoritativeBit checks CoreDNS's AA semantics: a hit sets AA
// whatever the upstream said, the answer to a miss keeps the upstream's.
func TestAuthoritativeBit(t *testing.T) {
	for _, tc := range []struct {
		name     string
		upstream bool
		hit      bool
		want     bool
	}{
		{"hit of a non-authoritative answer", false, true, true},
		{"hit of an authoritative answer", true, true, true},
		{"miss, upstream not authoritative", false, false, false},
		{"miss, upstream authoritative", true, false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := New(defaults(), Options{})
			pkt, q := packedQuery(t, "aa.example.", dns.TypeA, true)
			key := dnswire.AppendKey(nil, pkt, q)
			m := answer("aa.example.", 0, "aa.example. 60 IN A 192.0.2.1")
			m.Authoritative = tc.upstream
			e, err := c.Store(key, m)
			if err != nil {
				t.Fatal(err)
			}
			var r dns.Msg
			if err := r.Unpack(e.Reply(nil, pkt, q, 60, 4096, 1232, tc.hit)); err != nil {
				t.Fatal(err)
			}
			if r.Authoritative != tc.want {
				t.Errorf("AA = %v, want %v", r.Authoritative, tc.want)
			}
			if tc.hit {
				u, err := e.Msg(60)
				if err != nil {
					t.Fatal(err)
				}
				if !u.Authoritative {
					t.Error("Msg (a hit on the miss path): AA not set")
				}
			}
		})
	}
}

func TestKeying(t *testing.T) {
	c := New(defaults(), Options{})
	if err := c.Set(keyOf(t, "a.example.", dns.TypeA), answer("a.example.", 0, "a.example. 60 IN A 192.0.2.1")); err != nil {
		t.Fatal(err)
	}
	do := func() []byte {
		m := new(dns.Msg)
		m.SetQuestion("a.example.", dns.TypeA)
		m.SetEdns0(1232, true)
		b, _ := m.Pack()
		var q dnswire.Query
		_ = dnswire.ParseQuery(b, &q)
		return dnswire.AppendKey(nil, b, &q)
	}()
	cd := func() []byte {
		m := new(dns.Msg)
		m.SetQuestion("a.example.", dns.TypeA)
		m.CheckingDisabled = true
		b, _ := m.Pack()
		var q dnswire.Query
		_ = dnswire.ParseQuery(b, &q)
		return dnswire.AppendKey(nil, b, &q)
	}()
	for _, tc := range []struct {
		name string
		key  []byte
		hit  bool
	}{
		{"same", keyOf(t, "a.example.", dns.TypeA), true},
		{"upper case", keyOf(t, "A.EXAMPLE.", dns.TypeA), true},
		{"other type", keyOf(t, "a.example.", dns.TypeAAAA), false},
		{"DO bit", do, false},
		{"CD bit", cd, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, fresh := c.Get(tc.key, c.Now())
			if fresh != tc.hit {
				t.Errorf("hit = %v, want %v", fresh, tc.hit)
			}
		})
	}
}

func TestPrefetch(t *testing.T) {
	cfg := defaults()
	cfg.Prefetch = &corefile.Prefetch{Amount: 3, Duration: time.Minute, Percentage: 10}
	clk := newClock()
	c := New(cfg, Options{Now: clk.now})
	key := keyOf(t, "p.example.", dns.TypeA)
	if err := c.Set(key, answer("p.example.", 0, "p.example. 100 IN A 192.0.2.1")); err != nil {
		t.Fatal(err)
	}
	hit := func() bool {
		e, ttl, fresh := c.Hit(key, c.Now())
		if !fresh {
			t.Fatal("miss")
		}
		return c.ShouldPrefetch(e, ttl, c.Now())
	}
	for _, tc := range []struct {
		name    string
		advance time.Duration
		want    bool
	}{
		{"popular but young", 0, false},
		{"second hit", time.Second, false},
		{"third hit, 50s left", 49 * time.Second, false},
		{"fourth hit, 10s left", 40 * time.Second, true},
		{"only once", time.Second, false},
	} {
		clk.add(tc.advance)
		if got := hit(); got != tc.want {
			t.Errorf("%s: prefetch = %v, want %v", tc.name, got, tc.want)
		}
	}
	// An unpopular entry is not prefetched.
	key2 := keyOf(t, "q.example.", dns.TypeA)
	_ = c.Set(key2, answer("q.example.", 0, "q.example. 100 IN A 192.0.2.1"))
	clk.add(95 * time.Second)
	e, ttl, _ := c.Hit(key2, c.Now())
	if c.ShouldPrefetch(e, ttl, c.Now()) {
		t.Error("unpopular entry prefetched")
	}
}

func TestServeStale(t *testing.T) {
	for _, tc := range []struct {
		name      string
		stale     time.Duration
		after     time.Duration
		wantStale bool
	}{
		{"off", 0, 61 * time.Second, false},
		{"within window", time.Hour, 30 * time.Minute, true},
		{"past window", time.Hour, 2 * time.Hour, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := defaults()
			cfg.ServeStale = tc.stale
			clk := newClock()
			c := New(cfg, Options{Now: clk.now})
			key := keyOf(t, "s.example.", dns.TypeA)
			_ = c.Set(key, answer("s.example.", 0, "s.example. 60 IN A 192.0.2.1"))
			clk.add(tc.after)
			e, ttl, fresh := c.Get(key, c.Now())
			if fresh {
				t.Fatal("fresh after expiry")
			}
			if (e != nil) != tc.wantStale {
				t.Fatalf("stale entry = %v, want %v", e != nil, tc.wantStale)
			}
			if e != nil {
				m, err := e.Msg(ttl)
				if err != nil || len(m.Answer) != 1 || m.Answer[0].Header().Ttl != 0 {
					t.Errorf("stale msg %v, %v", m, err)
				}
			}
		})
	}
}

func TestBoundedUnderFlood(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	cfg := defaults()
	cfg.SuccessCap, cfg.DenialCap = 640, 320
	c := New(cfg, Options{Metrics: m, Server: "dns://:53", Zones: []string{"."}})
	for i := range 20000 {
		name := fmt.Sprintf("n%d.example.", i)
		rcode := 0
		rr := []string{name + " 60 IN A 192.0.2.1"}
		if i%2 == 1 {
			rcode, rr = dns.RcodeNameError, []string{"example. 60 IN SOA ns. h. 1 2 3 4 60"}
		}
		if err := c.Set(keyOf(t, name, dns.TypeA), answer(name, rcode, rr...)); err != nil {
			t.Fatal(err)
		}
	}
	succ, den := c.Len()
	if succ > 640 || den > 320 || succ < 600 || den < 300 {
		t.Errorf("sizes %d/%d, want about 640/320", succ, den)
	}
	if got := testutil.ToFloat64(m.entries.WithLabelValues("dns://:53", "success", ".", "")); int(got) != succ {
		t.Errorf("entries gauge %v, want %d", got, succ)
	}
	if got := testutil.ToFloat64(m.evictions.WithLabelValues("dns://:53", "denial", ".", "")); got < 9000 {
		t.Errorf("denial evictions %v", got)
	}
}

func TestMetricsCount(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, _ := NewMetrics(reg)
	m2, err := NewMetrics(reg) // a reload registers again
	if err != nil {
		t.Fatal(err)
	}
	c := New(defaults(), Options{Metrics: m2, Server: "dns://:53", Zones: []string{"."}})
	key := keyOf(t, "m.example.", dns.TypeA)
	c.Get(key, c.Now())
	_ = c.Set(key, answer("m.example.", 0, "m.example. 60 IN A 192.0.2.1"))
	if e, _, ok := c.Hit(key, c.Now()); ok {
		c.CountHit(e)
	}
	c.Get(key, c.Now())
	for _, tc := range []struct {
		name string
		c    prometheus.Collector
		want float64
	}{
		{"hits", m.hits.WithLabelValues("dns://:53", "success", ".", ""), 2},
		{"misses", m.misses.WithLabelValues("dns://:53", ".", ""), 1},
		{"requests", m.requests.WithLabelValues("dns://:53", ".", ""), 3},
	} {
		if got := testutil.ToFloat64(tc.c); got != tc.want {
			t.Errorf("%s = %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestHitReplyNoAlloc(t *testing.T) {
	c := New(defaults(), Options{})
	pkt, q := packedQuery(t, "z.example.", dns.TypeA, true)
	key := dnswire.AppendKey(nil, pkt, q)
	_ = c.Set(key, answer("z.example.", 0, "z.example. 60 IN A 192.0.2.1"))
	buf := make([]byte, 0, 4096)
	kb := make([]byte, 0, dnswire.MaxKeyLen)
	allocs := testing.AllocsPerRun(1000, func() {
		k := dnswire.AppendKey(kb[:0], pkt, q)
		e, ttl, ok := c.Hit(k, c.Now())
		if ok {
			buf = e.Reply(buf[:0], pkt, q, ttl, 4096, 1232, true)
		}
	})
	if allocs != 0 {
		t.Errorf("allocs per hit = %v", allocs)
	}
}

func BenchmarkCacheHit(b *testing.B) {
	c := New(defaults(), Options{})
	keys := make([][]byte, 1000)
	for i := range keys {
		name := fmt.Sprintf("host%d.example.", i)
		keys[i] = keyOf(b, name, dns.TypeA)
		_ = c.Set(keys[i], answer(name, 0, name+" 60 IN A 192.0.2.1"))
	}
	now := c.Now()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			if _, _, ok := c.Hit(keys[i%len(keys)], now); !ok {
				b.Fatal("miss")
			}
			i++
		}
	})
}

func BenchmarkCacheSet(b *testing.B) {
	c := New(defaults(), Options{})
	msg := answer("x.example.", 0, "x.example. 60 IN A 192.0.2.1")
	keys := make([][]byte, 4096)
	for i := range keys {
		keys[i] = keyOf(b, fmt.Sprintf("host%d.example.", i), dns.TypeA)
	}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		_ = c.Set(keys[i%len(keys)], msg)
	}
}
