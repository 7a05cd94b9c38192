package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/nodelocaldns/nodelocaldns/agent/cache"
	"github.com/nodelocaldns/nodelocaldns/agent/dnstest"
)

// TestBudgetShedsHeaviest: past half of the budget the clients holding
// the most are refused while light ones are still admitted, also when many
// attackers share the load; per-client limits hold whatever the budget;
// release gives everything back.
func TestBudgetShedsHeaviest(t *testing.T) {
	addr := func(i int) netip.Addr { return netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}) }
	victim := addr(0)
	for _, attackers := range []int{1, 16} {
		t.Run(fmt.Sprintf("%d attackers", attackers), func(t *testing.T) {
			b := newBudget(1024, 1<<20) // 1024 units, as 16 MiB of 16 KiB misses
			if r := b.admit(victim, 1, true, false, 0); r != "" {
				t.Fatalf("victim refused: %q", r)
			}
			held := map[netip.Addr]int{victim: 1}
			for refusals := 0; refusals < attackers; {
				for a := 1; a <= attackers; a++ {
					switch r := b.admit(addr(a), 1, true, false, 0); r {
					case "":
						held[addr(a)]++
					case reasonHeavy:
						refusals++
					default:
						t.Fatalf("attacker %d refused with %q", a, r)
					}
				}
			}
			if used := b.used.Load(); used > 1024/2+int64(attackers) {
				t.Fatalf("the attackers hold %d of 1024 when shed, want about half", used)
			}
			for i := range 20 { // the victim still gets in
				if r := b.admit(victim, 1, true, false, 0); r != "" {
					t.Fatalf("victim query %d refused (%s) at %d of 1024", i, r, b.used.Load())
				}
				held[victim]++
			}
			for a, n := range held {
				for range n {
					b.release(a, 1, true, false)
				}
			}
			if b.used.Load() != 0 || len(b.clients) != 0 {
				t.Fatalf("after releasing everything: used %d, %d clients", b.used.Load(), len(b.clients))
			}
		})
	}
	// Many light clients fill the whole budget, then the hard limit holds.
	b := newBudget(100, 1<<20)
	for i := range 100 {
		if r := b.admit(addr(i), 1, true, false, 0); r != "" {
			t.Fatalf("light client %d refused (%s) at %d of 100", i, r, b.used.Load())
		}
	}
	if r := b.admit(addr(100), 1, true, false, 0); r != reasonMemory {
		t.Fatalf("a full budget: %q, want %q", r, reasonMemory)
	}
	c := newBudget(1<<30, 2)
	c.admit(victim, 1, true, false, 0)
	c.admit(victim, 1, true, false, 0)
	if r := c.admit(victim, 1, true, false, 0); r != reasonClientInflight {
		t.Fatalf("third query with a per-client limit of 2: %q", r)
	}
	c.admit(victim, 1, false, true, 1)
	if r := c.admit(victim, 1, false, true, 1); r != reasonClientConns {
		t.Fatalf("second connection with a per-client limit of 1: %q", r)
	}
	if c.peak.Load() != 3 {
		t.Fatalf("peak %d, want 3", c.peak.Load())
	}
}

// dialFrom opens a TCP connection to addr from the loopback address src.
func dialFrom(t *testing.T, src, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 2 * time.Second}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// TestClientTCPConnLimit: one client's connections beyond MaxClientConns
// are closed at once and counted; another client still gets in.
func TestClientTCPConnLimit(t *testing.T) {
	_, f := upstream(t, zone.Handler())
	reg := prometheus.NewRegistry()
	s, addr := startWith(t, Options{Registerer: reg, MaxClientConns: 2}, []string{"tcp"}, &Block{Zones: []string{"."}, Forward: f})
	closed := func(c net.Conn) bool {
		_ = c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		_, err := c.Read(make([]byte, 1))
		return errors.Is(err, io.EOF)
	}
	a1, a2 := dialFrom(t, "127.0.0.1", addr), dialFrom(t, "127.0.0.1", addr)
	time.Sleep(50 * time.Millisecond)
	a3 := dialFrom(t, "127.0.0.1", addr)
	if !closed(a3) {
		t.Error("a third connection of one client was not closed")
	}
	if closed(a1) || closed(a2) {
		t.Error("the client's first two connections were closed")
	}
	other := &dns.Conn{Conn: dialFrom(t, "127.0.0.2", addr)}
	if err := other.WriteMsg(q("www.example.", dns.TypeA)); err != nil {
		t.Fatal(err)
	}
	if r, err := other.ReadMsg(); err != nil || len(r.Answer) != 1 {
		t.Fatalf("another client's query: %v %v", r, err)
	}
	if got := testutil.ToFloat64(s.limits.refused.WithLabelValues(reasonClientConns)); got != 1 {
		t.Errorf("refused client_conns = %v, want 1", got)
	}
}

// TestTCPMissesLimited: a TCP client's pipelined misses take miss-path
// slots like UDP ones; beyond its MaxClientInflight they are answered
// REFUSED at once (they used to bypass every limit), while another
// client's UDP miss is still handled.
func TestTCPMissesLimited(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	up, f := upstream(t, dnstest.Block(release, zone.Handler()))
	s, addr := startWith(t, Options{MaxClientInflight: 4, Timeout: 5 * time.Second}, []string{"udp", "tcp"}, &Block{Zones: []string{"."}, Forward: f})
	c := &dns.Conn{Conn: dialFrom(t, "127.0.0.1", addr)}
	for i := range 10 {
		m := q(fmt.Sprintf("n%d.example.", i), dns.TypeA)
		if err := c.WriteMsg(m); err != nil {
			t.Fatal(err)
		}
	}
	_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
	for i := range 6 {
		r, err := c.ReadMsg()
		if err != nil {
			t.Fatalf("refusal %d: %v", i, err)
		}
		if r.Rcode != dns.RcodeRefused || len(r.Question) != 1 {
			t.Fatalf("reply %d: %v, want REFUSED with the question", i, r)
		}
	}
	if !up.WaitCount("", 4, 2*time.Second) {
		t.Fatalf("upstream saw %d queries, want the client's 4", up.Count(""))
	}
	// Another client's miss is admitted.
	go func() {
		cl := &dns.Client{Net: "udp", Timeout: 3 * time.Second, Dialer: &net.Dialer{LocalAddr: &net.UDPAddr{IP: net.ParseIP("127.0.0.2")}}}
		_, _, _ = cl.Exchange(q("other.example.", dns.TypeA), addr)
	}()
	if !up.WaitCount("", 5, 2*time.Second) {
		t.Fatalf("another client's miss never reached the upstream (%d queries)", up.Count(""))
	}
	if got := testutil.ToFloat64(s.limits.refused.WithLabelValues(reasonClientInflight)); got != 6 {
		t.Errorf("refused client_inflight = %v, want 6", got)
	}
}

// TestHealthWhenSlotsFull: the health self-query is answered by the
// readers even when every miss-path slot is taken.
func TestHealthWhenSlotsFull(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	up, f := upstream(t, dnstest.Block(release, zone.Handler()))
	s, addr := startWith(t, Options{MaxInflight: 2, Timeout: 5 * time.Second}, []string{"udp"}, &Block{Zones: []string{"."}, Forward: f})
	for i := range 2 {
		go func() {
			cl := &dns.Client{Net: "udp", Timeout: 3 * time.Second}
			_, _, _ = cl.Exchange(q(fmt.Sprintf("h%d.example.", i), dns.TypeA), addr)
		}()
	}
	if !up.WaitCount("", 2, 2*time.Second) {
		t.Fatal("the slots were not filled")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := s.Check(ctx); err != nil {
		t.Fatalf("health check with every slot taken: %v", err)
	}
}

// TestUDPRepliesCapped: a miss answered over UDP is cut at the client's
// buffer size and at most 4096 bytes, with TC, whatever it asked for.
func TestUDPRepliesCapped(t *testing.T) {
	var rrs []string
	for i := range 100 {
		rrs = append(rrs, fmt.Sprintf("huge.example. 300 IN TXT \"%0100d\"", i))
	}
	_, f := upstream(t, dnstest.MustZone(rrs...).Handler())
	for _, withCache := range []bool{false, true} {
		b := &Block{Zones: []string{"."}, Forward: f}
		if withCache {
			b.Cache = cache.New(cacheCfg(), cache.Options{})
		}
		_, addr := startWith(t, Options{}, []string{"udp"}, b)
		for i := range 2 { // a miss, then (with the cache) a hit
			m := q("huge.example.", dns.TypeTXT)
			m.SetEdns0(65535, false)
			buf, _ := m.Pack()
			c, err := net.Dial("udp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if _, err := c.Write(buf); err != nil {
				t.Fatal(err)
			}
			_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
			in := make([]byte, 65535)
			n, err := c.Read(in)
			if err != nil {
				t.Fatal(err)
			}
			r := new(dns.Msg)
			if err := r.Unpack(in[:n]); err != nil {
				t.Fatal(err)
			}
			if n > 4096 || !r.Truncated {
				t.Errorf("cache %v, query %d: a %d-byte reply (TC %v) to a %d-byte query, want <= 4096 with TC", withCache, i, n, r.Truncated, len(buf))
			}
		}
	}
}

// TestMalformedEDNS: two OPT records, an OPT not owned by the root, or an
// OPT outside the additional section are answered FORMERR (RFC 6891).
func TestMalformedEDNS(t *testing.T) {
	_, f := upstream(t, zone.Handler())
	_, addr := start(t, nil, &Block{Zones: []string{"."}, Forward: f, Cache: cache.New(cacheCfg(), cache.Options{})})
	opt := func(owner string) *dns.OPT {
		return &dns.OPT{Hdr: dns.RR_Header{Name: owner, Rrtype: dns.TypeOPT, Class: 1232}}
	}
	for name, mod := range map[string]func(m *dns.Msg){
		"two OPT records":    func(m *dns.Msg) { m.Extra = []dns.RR{opt("."), opt(".")} },
		"OPT owner":          func(m *dns.Msg) { m.Extra = []dns.RR{opt("example.")} },
		"OPT in authority":   func(m *dns.Msg) { m.Ns = []dns.RR{opt(".")} },
		"OPT and a good one": func(m *dns.Msg) { m.Extra = []dns.RR{opt("."), opt("x.")} },
	} {
		for _, netw := range []string{"udp", "tcp"} {
			m := q("www.example.", dns.TypeA)
			mod(m)
			r := exchange(t, netw, addr, m)
			if r.Rcode != dns.RcodeFormatError {
				t.Errorf("%s over %s: rcode %s, want FORMERR", name, netw, dns.RcodeToString[r.Rcode])
			}
		}
	}
	// A well-formed OPT is still fine.
	m := q("www.example.", dns.TypeA)
	m.SetEdns0(1232, true)
	if r := exchange(t, "udp", addr, m); r.Rcode != dns.RcodeSuccess {
		t.Errorf("good EDNS: %s", dns.RcodeToString[r.Rcode])
	}
}

// TestRDInCacheKey: an answer to an RD=0 query is never served to an
// RD=1 query (nor the reverse), from the cache or a shared upstream query.
func TestRDInCacheKey(t *testing.T) {
	_, f := upstream(t, dnstest.Func(func(qq *dnstest.Query) *dns.Msg {
		m := new(dns.Msg)
		m.SetReply(qq.Msg)
		ip := "192.0.2.2"
		if qq.Msg.RecursionDesired {
			ip = "192.0.2.1"
		}
		rr, _ := dns.NewRR("rd.example. 300 IN A " + ip)
		m.Answer = []dns.RR{rr}
		return m
	}))
	_, addr := start(t, nil, &Block{Zones: []string{"."}, Forward: f, Cache: cache.New(cacheCfg(), cache.Options{})})
	for i, rd := range []bool{false, true, false, true} {
		for _, netw := range []string{"udp", "tcp"} {
			m := q("rd.example.", dns.TypeA)
			m.RecursionDesired = rd
			r := exchange(t, netw, addr, m)
			want := "192.0.2.2"
			if rd {
				want = "192.0.2.1"
			}
			if len(r.Answer) != 1 || r.Answer[0].(*dns.A).A.String() != want || r.RecursionDesired != rd {
				t.Errorf("query %d (RD=%v) over %s: %v, want %s with RD=%v", i, rd, netw, r.Answer, want, rd)
			}
		}
	}
}

// TestIdleClosedSoonerUnderPressure: when a listener holds more than half
// of its connections, connections idle for pressureIdle are closed (long
// before TCPIdleTimeout), making room for clients with queries; once the
// pressure is gone, idle connections stay.
func TestIdleClosedSoonerUnderPressure(t *testing.T) {
	_, f := upstream(t, zone.Handler())
	_, addr := startWith(t, Options{MaxTCPConns: 4, TCPIdleTimeout: time.Minute}, []string{"tcp"}, &Block{Zones: []string{"."}, Forward: f})
	closedWithin := func(c net.Conn, d time.Duration) bool {
		_ = c.SetReadDeadline(time.Now().Add(d))
		_, err := c.Read(make([]byte, 1))
		return errors.Is(err, io.EOF)
	}
	old := dialFrom(t, "127.0.0.1", addr)
	time.Sleep(2 * pressureIdle) // idle for longer than pressureIdle, no pressure yet
	if closedWithin(old, 10*time.Millisecond) {
		t.Fatal("an idle connection was closed without pressure")
	}
	dialFrom(t, "127.0.0.2", addr)
	busy := &dns.Conn{Conn: dialFrom(t, "127.0.0.3", addr)} // 3 of 4: pressure
	if err := busy.WriteMsg(q("www.example.", dns.TypeA)); err != nil {
		t.Fatal(err)
	}
	if !closedWithin(old, 2*time.Second) {
		t.Error("the connection idle for longer than pressureIdle was not closed under pressure")
	}
	if r, err := busy.ReadMsg(); err != nil || len(r.Answer) != 1 {
		t.Fatalf("the new client's query: %v %v", r, err)
	}
}
