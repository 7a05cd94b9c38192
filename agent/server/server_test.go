package server

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log"
	"math"
	"net"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/nodelocaldns/nodelocaldns/agent/cache"
	"github.com/nodelocaldns/nodelocaldns/agent/corefile"
	"github.com/nodelocaldns/nodelocaldns/agent/dnstest"
	"github.com/nodelocaldns/nodelocaldns/agent/forward"
	"github.com/nodelocaldns/nodelocaldns/tests/testenv"
)

func cacheCfg() corefile.Cache {
	return corefile.Cache{SuccessCap: 9984, SuccessTTL: 3600 * time.Second, SuccessMinTTL: 5 * time.Second,
		DenialCap: 9984, DenialTTL: 1800 * time.Second, DenialMinTTL: 5 * time.Second, ServfailTTL: cache.ServfailTTL}
}

// upstream starts a fake authoritative server and a forwarder to it.
func upstream(t testing.TB, h dnstest.Handler) (*dnstest.Server, *forward.Forwarder) {
	t.Helper()
	up := dnstest.NewServer(t, h)
	f, err := forward.New(corefile.Forward{From: ".", To: []string{up.Addr}}, forward.Options{Timeout: time.Second, AttemptTimeout: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.Close)
	return up, f
}

// start serves blocks (all on one port of 127.0.0.1, UDP and TCP) and
// returns the address.
func start(t testing.TB, reg prometheus.Registerer, blocks ...*Block) (*Server, string) {
	t.Helper()
	return startWith(t, Options{Registerer: reg, Timeout: 2 * time.Second}, []string{"udp", "tcp"}, blocks...)
}

// startWith serves blocks with opts on one port of 127.0.0.1, for the
// given protocols, and returns the address. The server is shut down when
// the test ends (a test may shut it down itself first).
func startWith(t testing.TB, opts Options, protos []string, blocks ...*Block) (*Server, string) {
	t.Helper()
	port := testenv.FreePort(t)
	for _, b := range blocks {
		b.Port = port
		b.Bind = []string{"127.0.0.1"}
	}
	s, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.SetBlocks(blocks); err != nil {
		t.Fatal(err)
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	var keys []string
	for _, p := range protos {
		keys = append(keys, p+"/"+addr)
	}
	socks, err := OpenSockets(keys, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Serve(socks); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		socks.Close()
	})
	return s, addr
}

func exchange(t testing.TB, netw, addr string, m *dns.Msg) *dns.Msg {
	t.Helper()
	c := &dns.Client{Net: netw, Timeout: 2 * time.Second, UDPSize: 65535}
	r, _, err := c.Exchange(m, addr)
	if err != nil {
		t.Fatalf("%s exchange %s: %v", netw, m.Question[0].Name, err)
	}
	return r
}

func q(name string, qtype uint16) *dns.Msg {
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	return m
}

var zone = dnstest.MustZone(
	"example. 300 IN SOA ns.example. h.example. 1 2 3 4 60",
	"www.example. 300 IN A 192.0.2.1",
	"www.cluster.local. 30 IN A 10.0.0.1",
)

func bigZone() *dnstest.Zone {
	var rrs []string
	for i := range 40 {
		rrs = append(rrs, fmt.Sprintf("big.example. 300 IN TXT \"%s-%02d\"", strings.Repeat("x", 40), i))
	}
	return dnstest.MustZone(rrs...)
}

func TestAnswerCacheAndEcho(t *testing.T) {
	up, f := upstream(t, zone.Handler())
	_, addr := start(t, nil, &Block{Zones: []string{"."}, Cache: cache.New(cacheCfg(), cache.Options{}), Forward: f})
	capped := cacheCfg()
	capped.SuccessTTL = 30 * time.Second
	_, capAddr := start(t, nil, &Block{Zones: []string{"."}, Cache: cache.New(capped, cache.Options{}), Forward: f})
	for i := range 2 { // the miss and the hit both carry the capped TTL
		if r := exchange(t, "udp", capAddr, q("www.example.", dns.TypeA)); len(r.Answer) != 1 || r.Answer[0].Header().Ttl > 30 {
			t.Fatalf("TTL not capped (query %d): %v", i, r)
		}
	}
	up.Reset()
	for i, netw := range []string{"udp", "udp", "tcp", "udp"} {
		m := q("WwW.ExAmple.", dns.TypeA)
		m.Id = uint16(1000 + i)
		r := exchange(t, netw, addr, m)
		if r.Id != m.Id || r.Question[0].Name != "WwW.ExAmple." || !r.Response {
			t.Fatalf("%d: id/question not echoed: %v", i, r)
		}
		if r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 || r.Answer[0].(*dns.A).A.String() != "192.0.2.1" {
			t.Fatalf("%d: answer %v", i, r)
		}
		if r.IsEdns0() != nil {
			t.Errorf("%d: OPT in reply to a query without EDNS", i)
		}
	}
	if n := up.Count(""); n != 1 {
		t.Errorf("upstream saw %d queries, want 1 (the rest from cache)", n)
	}
}

func TestTruncation(t *testing.T) {
	_, f := upstream(t, bigZone().Handler())
	_, addr := start(t, nil, &Block{Zones: []string{"."}, Cache: cache.New(cacheCfg(), cache.Options{}), Forward: f})
	for _, tc := range []struct {
		name    string
		netw    string
		edns    uint16
		wantTC  bool
		maxSize int
	}{
		{"udp no edns (miss)", "udp", 0, true, 512},
		{"udp no edns (hit)", "udp", 0, true, 512},
		{"udp edns 1232", "udp", 1232, true, 1232},
		{"udp edns 4096", "udp", 4096, false, 4096},
		{"tcp", "tcp", 0, false, 65535},
		{"tcp edns 512", "tcp", 512, false, 65535},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := q("big.example.", dns.TypeTXT)
			if tc.edns > 0 {
				m.SetEdns0(tc.edns, false)
			}
			r := exchange(t, tc.netw, addr, m)
			if r.Truncated != tc.wantTC {
				t.Fatalf("TC = %v, want %v", r.Truncated, tc.wantTC)
			}
			r.Compress = true
			if n := r.Len(); n > tc.maxSize {
				t.Errorf("reply of %d bytes > %d", n, tc.maxSize)
			}
			if !tc.wantTC && len(r.Answer) != 40 {
				t.Errorf("%d answers, want 40", len(r.Answer))
			}
			// A truncated reply keeps the records that fit (miekg/dns's
			// Truncate, CoreDNS's scrub): about 60 bytes each here.
			if want := (tc.maxSize - 100) / 70; tc.wantTC && len(r.Answer) < want {
				t.Errorf("truncated reply with %d records, want at least %d that fit in %d bytes", len(r.Answer), want, tc.maxSize)
			}
			if (tc.edns > 0) != (r.IsEdns0() != nil) {
				t.Errorf("OPT in reply = %v, want %v", r.IsEdns0() != nil, tc.edns > 0)
			}
		})
	}
}

func TestPipelinedTCP(t *testing.T) {
	slow := dnstest.Func(func(qq *dnstest.Query) *dns.Msg {
		if strings.HasPrefix(qq.Msg.Question[0].Name, "slow") {
			time.Sleep(300 * time.Millisecond)
		}
		m := new(dns.Msg)
		m.SetReply(qq.Msg)
		rr, _ := dns.NewRR(qq.Msg.Question[0].Name + " 60 IN A 192.0.2.9")
		m.Answer = []dns.RR{rr}
		return m
	})
	_, f := upstream(t, slow)
	_, addr := start(t, nil, &Block{Zones: []string{"."}, Forward: f})
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	names := []string{"slow.example.", "fast1.example.", "fast2.example."}
	var out []byte
	for i, n := range names {
		m := q(n, dns.TypeA)
		m.Id = uint16(i + 1)
		b, _ := m.Pack()
		out = binary.BigEndian.AppendUint16(out, uint16(len(b)))
		out = append(out, b...)
	}
	if _, err := c.Write(out); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
	var order []uint16
	for range names {
		var l [2]byte
		if _, err := io.ReadFull(c, l[:]); err != nil {
			t.Fatal(err)
		}
		b := make([]byte, binary.BigEndian.Uint16(l[:]))
		if _, err := io.ReadFull(c, b); err != nil {
			t.Fatal(err)
		}
		var r dns.Msg
		if err := r.Unpack(b); err != nil {
			t.Fatal(err)
		}
		if r.Question[0].Name != names[r.Id-1] || len(r.Answer) != 1 {
			t.Errorf("reply %d for the wrong question: %v", r.Id, &r)
		}
		order = append(order, r.Id)
	}
	if order[len(order)-1] != 1 {
		t.Errorf("reply order %v: the slow query should come last (answered out of order)", order)
	}
}

func TestMalformed(t *testing.T) {
	_, f := upstream(t, zone.Handler())
	_, addr := start(t, nil, &Block{Zones: []string{"."}, Cache: cache.New(cacheCfg(), cache.Options{}), Forward: f})
	good, _ := q("www.example.", dns.TypeA).Pack()
	resp := append([]byte(nil), good...)
	resp[2] |= 0x80
	noQuestion := append([]byte(nil), good[:12]...)
	notify := q("www.example.", dns.TypeSOA)
	notify.Opcode = dns.OpcodeNotify
	nb, _ := notify.Pack()
	badVers := q("www.example.", dns.TypeA)
	badVers.SetEdns0(1232, false)
	badVers.IsEdns0().SetVersion(1)
	bv, _ := badVers.Pack()
	for _, tc := range []struct {
		name      string
		pkt       []byte
		wantReply bool
		rcode     int
	}{
		{"too short", []byte{1, 2, 3}, false, 0},
		{"a response", resp, false, 0},
		{"header without question", noQuestion, true, dns.RcodeFormatError},
		{"cut question", good[:len(good)-3], true, dns.RcodeFormatError},
		{"garbage", []byte("\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\xff\xff\xff"), true, dns.RcodeFormatError},
		{"notify", nb, true, dns.RcodeNotImplemented},
		{"edns version 1", bv, true, dns.RcodeBadVers},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := net.Dial("udp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if _, err := c.Write(tc.pkt); err != nil {
				t.Fatal(err)
			}
			_ = c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
			buf := make([]byte, 1500)
			n, err := c.Read(buf)
			if !tc.wantReply {
				if err == nil {
					t.Fatalf("got a %d-byte reply, want none", n)
				}
				return
			}
			if err != nil {
				t.Fatalf("no reply: %v", err)
			}
			var r dns.Msg
			if err := r.Unpack(buf[:n]); err != nil {
				t.Fatalf("reply does not unpack: %v", err)
			}
			if r.Rcode != tc.rcode || r.Id != binary.BigEndian.Uint16(tc.pkt) {
				t.Errorf("rcode %s id %d, want %s", dns.RcodeToString[r.Rcode], r.Id, dns.RcodeToString[tc.rcode])
			}
		})
	}
	// Still serving.
	if r := exchange(t, "udp", addr, q("www.example.", dns.TypeA)); len(r.Answer) != 1 {
		t.Errorf("after malformed input: %v", r)
	}
}

func TestZoneDispatch(t *testing.T) {
	cluster, fc := upstream(t, zone.Handler())
	other, fo := upstream(t, zone.Handler())
	_, addr := start(t, nil,
		&Block{Zones: []string{"cluster.local."}, Cache: cache.New(cacheCfg(), cache.Options{}), Forward: fc},
		&Block{Zones: []string{"."}, Cache: cache.New(cacheCfg(), cache.Options{}), Forward: fo},
		&Block{Zones: []string{"refused.example."}},
		&Block{Zones: []string{"except.example."}, Forward: fo, Match: func(name string) bool { return !strings.HasSuffix(name, "no.except.example.") }},
	)
	for _, tc := range []struct {
		name    string
		qname   string
		want    *dnstest.Server
		wantRC  int
		wantAns int
	}{
		{"cluster zone", "www.cluster.local.", cluster, dns.RcodeSuccess, 1},
		{"cluster zone upper case", "WWW2.Cluster.Local.", cluster, dns.RcodeNameError, 0},
		{"root zone", "www.example.", other, dns.RcodeSuccess, 1},
		{"block without forward", "a.refused.example.", nil, dns.RcodeRefused, 0},
		{"forward except", "a.no.except.example.", nil, dns.RcodeRefused, 0},
		{"forward not excepted", "www.except.example.", other, dns.RcodeNameError, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cluster.Reset()
			other.Reset()
			r := exchange(t, "udp", addr, q(tc.qname, dns.TypeA))
			if r.Rcode != tc.wantRC || len(r.Answer) != tc.wantAns {
				t.Fatalf("reply %v", r)
			}
			for _, s := range []*dnstest.Server{cluster, other} {
				if got, want := s.Count(""), 0; s == tc.want {
					if got != 1 {
						t.Errorf("right upstream saw %d queries", got)
					}
				} else if got != want {
					t.Errorf("wrong upstream saw %d queries", got)
				}
			}
		})
	}
}

func TestNoMatchingBlock(t *testing.T) {
	_, f := upstream(t, zone.Handler())
	_, addr := start(t, nil, &Block{Zones: []string{"cluster.local."}, Forward: f})
	if r := exchange(t, "udp", addr, q("www.example.", dns.TypeA)); r.Rcode != dns.RcodeRefused {
		t.Errorf("rcode %s, want REFUSED", dns.RcodeToString[r.Rcode])
	}
}

func TestUpstreamFailure(t *testing.T) {
	up, f := upstream(t, zone.Handler())
	cfg := cacheCfg()
	cfg.ServeStale = time.Hour
	clk := time.Now()
	var mu sync.Mutex
	now := func() time.Time { mu.Lock(); defer mu.Unlock(); return clk }
	c := cache.New(cfg, cache.Options{Now: now})
	_, addr := start(t, nil, &Block{Zones: []string{"."}, Cache: c, Forward: f})
	if r := exchange(t, "udp", addr, q("www.example.", dns.TypeA)); len(r.Answer) != 1 {
		t.Fatalf("first answer %v", r)
	}
	up.SetHandler(dnstest.Drop)
	mu.Lock()
	clk = clk.Add(time.Hour - time.Minute) // expired, within serve_stale
	mu.Unlock()
	r := exchange(t, "udp", addr, q("www.example.", dns.TypeA))
	if r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 || r.Answer[0].Header().Ttl != 0 {
		t.Errorf("stale answer %v", r)
	}
	if r := exchange(t, "udp", addr, q("nocache.example.", dns.TypeA)); r.Rcode != dns.RcodeServerFailure {
		t.Errorf("rcode %s, want SERVFAIL without a stale entry", dns.RcodeToString[r.Rcode])
	}
}

func TestMetricsAndCheck(t *testing.T) {
	reg := prometheus.NewRegistry()
	_, f := upstream(t, zone.Handler())
	cm, _ := cache.NewMetrics(reg)
	s, addr := start(t, reg, &Block{Zones: []string{"."}, Cache: cache.New(cacheCfg(), cache.Options{Metrics: cm, Server: "dns://:53", Zones: []string{"."}}), Forward: f})
	for range 3 {
		exchange(t, "udp", addr, q("www.example.", dns.TypeA))
	}
	exchange(t, "tcp", addr, q("www.example.", dns.TypeAAAA))
	do := q("www.example.", dns.TypeA)
	do.SetEdns0(1232, true)
	exchange(t, "udp", addr, do) // a miss: the key has the DO bit
	exchange(t, "udp", addr, do) // a hit
	server := "dns://" + addr    // the listen address, as CoreDNS labels it
	m := s.metrics
	for _, tc := range []struct {
		name string
		c    prometheus.Collector
		want float64
	}{
		{"udp A requests", m.requests.WithLabelValues(server, ".", "", "udp", "1", "A"), 5},
		{"tcp AAAA requests", m.requests.WithLabelValues(server, ".", "", "tcp", "1", "AAAA"), 1},
		{"DO requests", m.doRequests.WithLabelValues(server, ".", ""), 2},
		// With a cache in the block, the cache writes every answer (hits
		// and the upstream's answers to misses): CoreDNS labels them all
		// plugin="cache".
		{"cache responses", m.responses.WithLabelValues(server, ".", "", "NOERROR", "cache"), 6},
		{"forward responses", m.responses.WithLabelValues(server, ".", "", "NOERROR", "forward"), 0},
	} {
		if got := testutil.ToFloat64(tc.c); got != tc.want {
			t.Errorf("%s = %v, want %v", tc.name, got, tc.want)
		}
	}
	// CoreDNS's request duration has no type label: one series.
	if n := testutil.CollectAndCount(m.duration); n != 1 {
		t.Errorf("%d duration series, want 1", n)
	}
	if n := m.duration.child(server, ".", "").count.Load(); n != 6 {
		t.Errorf("duration count %d, want 6", n)
	}
	for _, tc := range []struct {
		name  string
		h     *hist
		count uint64
		min   float64 // smallest size observed
	}{
		{"udp request size", m.requestSize.child(server, ".", "", "udp"), 5, 29},
		{"tcp request size", m.requestSize.child(server, ".", "", "tcp"), 1, 29},
		{"udp response size", m.responseSize.child(server, ".", "", "udp"), 5, 45},
		{"tcp response size", m.responseSize.child(server, ".", "", "tcp"), 1, 29},
	} {
		sum := math.Float64frombits(tc.h.sum.Load())
		if n := tc.h.count.Load(); n != tc.count || sum < tc.min*float64(n) {
			t.Errorf("%s: %d observations adding up to %v bytes, want %d of at least %v", tc.name, n, sum, tc.count, tc.min)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := s.Check(ctx); err != nil {
		t.Errorf("Check: %v", err)
	}
}

func TestSwapBlocksUnderLoad(t *testing.T) {
	_, f := upstream(t, zone.Handler())
	s, addr := start(t, nil, &Block{Zones: []string{"."}, Cache: cache.New(cacheCfg(), cache.Options{}), Forward: f})
	stop := make(chan struct{})
	var swaps sync.WaitGroup
	swaps.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			port, _ := strconv.Atoi(addr[strings.LastIndex(addr, ":")+1:])
			_ = s.SetBlocks([]*Block{{Zones: []string{"."}, Port: port, Bind: []string{"127.0.0.1"}, Cache: cache.New(cacheCfg(), cache.Options{}), Forward: f}})
			time.Sleep(time.Millisecond)
		}
	})
	for i := range 200 {
		if r := exchange(t, "udp", addr, q("www.example.", dns.TypeA)); len(r.Answer) != 1 {
			t.Fatalf("query %d during swaps: %v", i, r)
		}
	}
	close(stop)
	swaps.Wait()
}

func TestShutdownClosesTCP(t *testing.T) {
	_, f := upstream(t, zone.Handler())
	s, addr := startWith(t, Options{}, []string{"udp", "tcp"}, &Block{Zones: []string{"."}, Forward: f})
	c, err := net.Dial("tcp", addr) // idle client
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	time.Sleep(50 * time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	begin := time.Now()
	if err := s.Shutdown(ctx); err != nil {
		t.Fatalf("shutdown with an idle TCP client: %v", err)
	}
	if d := time.Since(begin); d > 2*time.Second {
		t.Errorf("shutdown took %v", d)
	}
}

func TestOpenSocketsReusePort(t *testing.T) {
	port := testenv.FreePort(t)
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	keys := []string{"udp/" + addr, "tcp/" + addr}
	a, err := OpenSockets(keys, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if len(a) != UDPSocketsPerAddr+1 {
		t.Errorf("%d sockets, want %d", len(a), UDPSocketsPerAddr+1)
	}
	b, err := OpenSockets(keys, nil) // a second instance binds beside the first
	if err != nil {
		t.Fatalf("second bind: %v", err)
	}
	defer b.Close()
	c, err := OpenSockets(keys, a) // inherited sockets are reused
	if err != nil {
		t.Fatal(err)
	}
	for k, f := range c {
		if a[k] != f {
			t.Errorf("socket %s not reused", k)
		}
	}
	if _, err := OpenSockets([]string{"sctp/1.2.3.4:5"}, nil); err == nil {
		t.Error("bad key accepted")
	}
}

func TestIPv6Listener(t *testing.T) {
	if l, err := net.ListenPacket("udp6", "[::1]:0"); err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	} else {
		l.Close()
	}
	_, f := upstream(t, zone.Handler())
	s, err := New(Options{})
	if err != nil {
		t.Fatal(err)
	}
	port := testenv.FreePort(t)
	_ = s.SetBlocks([]*Block{{Zones: []string{"."}, Port: port, Bind: []string{"::1", "127.0.0.1"}, Cache: cache.New(cacheCfg(), cache.Options{}), Forward: f}})
	p := strconv.Itoa(port)
	socks, err := OpenSockets([]string{"udp/[::1]:" + p, "tcp/[::1]:" + p, "udp/127.0.0.1:" + p, "tcp/127.0.0.1:" + p}, nil)
	if err != nil {
		t.Skipf("cannot bind [::1]:%s: %v", p, err)
	}
	defer socks.Close()
	if err := s.Serve(socks); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = s.Shutdown(context.Background()) }()
	for _, tc := range []struct{ name, netw, addr string }{
		{"udp6 miss", "udp", "[::1]:" + p},
		{"udp6 hit", "udp", "[::1]:" + p},
		{"tcp6", "tcp", "[::1]:" + p},
		{"udp4 same process", "udp", "127.0.0.1:" + p},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if r := exchange(t, tc.netw, tc.addr, q("www.example.", dns.TypeA)); len(r.Answer) != 1 {
				t.Errorf("answer %v", r)
			}
		})
	}
	// The server label is the address the query came in on, as CoreDNS's.
	v6 := s.metrics.requests.WithLabelValues("dns://[::1]:"+p, ".", "", "udp", "2", "A")
	if got := testutil.ToFloat64(v6); got != 2 {
		t.Errorf("family 2 udp requests = %v, want 2", got)
	}
}

func TestPrefetch(t *testing.T) {
	up, f := upstream(t, zone.Handler())
	cfg := cacheCfg()
	cfg.Prefetch = &corefile.Prefetch{Amount: 2, Duration: time.Minute, Percentage: 50}
	var mu sync.Mutex
	clk := time.Now()
	c := cache.New(cfg, cache.Options{Now: func() time.Time { mu.Lock(); defer mu.Unlock(); return clk }})
	_, addr := start(t, nil, &Block{Zones: []string{"."}, Cache: c, Forward: f})
	for range 2 {
		exchange(t, "udp", addr, q("www.example.", dns.TypeA)) // miss, then a hit
	}
	if n := up.Count(""); n != 1 {
		t.Fatalf("upstream saw %d queries, want 1", n)
	}
	mu.Lock()
	clk = clk.Add(200 * time.Second) // 100s of 300s left: under 50%
	mu.Unlock()
	// Two hits within the prefetch duration make the entry popular.
	for range 2 {
		r := exchange(t, "udp", addr, q("www.example.", dns.TypeA))
		if len(r.Answer) != 1 || r.Answer[0].Header().Ttl != 100 {
			t.Fatalf("hit before prefetch: %v", r)
		}
	}
	if !up.WaitCount("", 2, 2*time.Second) {
		t.Fatal("no prefetch query upstream")
	}
	deadline := time.Now().Add(2 * time.Second)
	for {
		r := exchange(t, "udp", addr, q("www.example.", dns.TypeA))
		if r.Answer[0].Header().Ttl == 300 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("entry not refreshed: TTL %d", r.Answer[0].Header().Ttl)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestTCPIdleTimeoutAndConnLimit(t *testing.T) {
	_, f := upstream(t, zone.Handler())
	// The idle timeout leaves wide margins for a loaded CI machine: the
	// active client below pauses 300 ms between queries, a third of it.
	const idle = time.Second
	_, addr := startWith(t, Options{TCPIdleTimeout: idle, MaxTCPConns: 2}, []string{"tcp"}, &Block{Zones: []string{"."}, Forward: f})
	closedWithin := func(c net.Conn, d time.Duration) bool {
		_ = c.SetReadDeadline(time.Now().Add(d))
		_, err := c.Read(make([]byte, 1))
		return errors.Is(err, io.EOF)
	}
	var conns []net.Conn
	for range 3 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		conns = append(conns, c)
		time.Sleep(50 * time.Millisecond)
	}
	if !closedWithin(conns[2], 200*time.Millisecond) {
		t.Error("third connection over the limit of 2 was not closed at once")
	}
	if !closedWithin(conns[0], 3*idle) {
		t.Error("idle connection not closed after the idle timeout")
	}
	time.Sleep(200 * time.Millisecond) // the second idle connection goes too
	// A connection that keeps asking stays open past the idle timeout
	// (6 x 300 ms > 1 s).
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	dc := &dns.Conn{Conn: c}
	for i := range 6 {
		if err := dc.WriteMsg(q("www.example.", dns.TypeA)); err != nil {
			t.Fatalf("query %d: %v", i, err)
		}
		if r, err := dc.ReadMsg(); err != nil || len(r.Answer) != 1 {
			t.Fatalf("answer %d: %v %v", i, r, err)
		}
		time.Sleep(300 * time.Millisecond)
	}
}

func TestKeysAndRouting(t *testing.T) {
	cfg := &corefile.Config{Servers: []corefile.Server{
		{Zones: []string{"cluster.local."}, Port: 53, Bind: []string{"169.254.20.10", "10.0.0.10"}},
		{Zones: []string{"."}, Port: 53, Bind: []string{"169.254.20.10", "10.0.0.10"}},
		{Zones: []string{"example."}, Port: 5300},
	}}
	want := []string{"tcp/0.0.0.0:5300", "tcp/10.0.0.10:53", "tcp/169.254.20.10:53", "udp/0.0.0.0:5300", "udp/10.0.0.10:53", "udp/169.254.20.10:53"}
	if got := Keys(cfg); strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("Keys = %v, want %v", got, want)
	}
	s, err := New(Options{})
	if err != nil {
		t.Fatal(err)
	}
	cluster := &Block{Zones: []string{"cluster.local."}, Port: 53, Bind: []string{"169.254.20.10"}}
	root := &Block{Zones: []string{"."}, Port: 53, Bind: []string{"169.254.20.10"}}
	all := &Block{Zones: []string{"example.", "Other.Example."}, Port: 53}
	if err := s.SetBlocks([]*Block{cluster, root, all}); err != nil {
		t.Fatal(err)
	}
	tbl := s.table.Load()
	for _, tc := range []struct {
		name, listener, qname string
		want                  *Block
	}{
		{"cluster name on the bound IP", "169.254.20.10:53", "a.b.svc.cluster.local.", cluster},
		{"other name on the bound IP", "169.254.20.10:53", "www.google.com.", root},
		{"no-bind block also on the bound IP", "169.254.20.10:53", "www.example.", all},
		{"second zone of a block, case-insensitive", "169.254.20.10:53", "x.other.example.", all},
		{"wildcard listener: only no-bind blocks", "0.0.0.0:53", "www.example.", all},
		{"wildcard listener: no root block", "0.0.0.0:53", "www.google.com.", nil},
		{"other port", "169.254.20.10:54", "www.example.", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			key, _ := zoneWire(tc.qname)
			rt := tbl.zonesFor(netip.MustParseAddrPort(tc.listener)).lookup([]byte(key))
			var got *Block
			if rt != nil {
				got = rt.block
			}
			if got != tc.want {
				t.Errorf("routed to %v, want %v", got, tc.want)
			}
		})
	}
	if err := s.SetBlocks([]*Block{{Zones: []string{"."}, Port: 53, Bind: []string{"not-an-ip"}}}); err == nil {
		t.Error("bad bind address accepted")
	}
}

func TestShutdownAnswersMissesInFlight(t *testing.T) {
	up, f := upstream(t, dnstest.Delay(300*time.Millisecond, zone.Handler()))
	s, addr := startWith(t, Options{}, []string{"udp"}, &Block{Zones: []string{"."}, Cache: cache.New(cacheCfg(), cache.Options{}), Forward: f})
	type result struct {
		r   *dns.Msg
		err error
	}
	res := make(chan result, 1)
	go func() {
		c := &dns.Client{Net: "udp", Timeout: 3 * time.Second}
		r, _, err := c.Exchange(q("www.example.", dns.TypeA), addr)
		res <- result{r, err}
	}()
	// The miss is in flight once the upstream has it (it answers 300 ms
	// later); a fixed pause could shut down before the query was even read.
	for deadline := time.Now().Add(3 * time.Second); up.Count("") == 0; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the miss did not reach the upstream within 3s")
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	got := <-res
	if got.err != nil || len(got.r.Answer) != 1 {
		t.Fatalf("miss in flight at shutdown: %v, %v", got.r, got.err)
	}
	// And nothing is read any more.
	c := &dns.Client{Net: "udp", Timeout: 300 * time.Millisecond}
	if _, _, err := c.Exchange(q("www.example.", dns.TypeA), addr); err == nil {
		t.Error("answered after shutdown")
	}
}

func TestLogPluginAndDOEcho(t *testing.T) {
	var buf strings.Builder
	var mu sync.Mutex
	_, f := upstream(t, zone.Handler())
	logger := log.New(writerFunc(func(p []byte) (int, error) {
		mu.Lock()
		defer mu.Unlock()
		return buf.Write(p)
	}), "", 0)
	_, addr := startWith(t, Options{Logger: logger}, []string{"udp"},
		&Block{Zones: []string{"."}, Log: true, Cache: cache.New(cacheCfg(), cache.Options{}), Forward: f})
	for i := range 2 { // a miss, then a hit (which logs too)
		m := q("WWW.example.", dns.TypeA)
		m.SetEdns0(1232, true)
		r := exchange(t, "udp", addr, m)
		if opt := r.IsEdns0(); opt == nil || !opt.Do() {
			t.Errorf("query %d: DO bit not echoed in OPT %v", i, opt)
		}
	}
	mu.Lock()
	out := buf.String()
	mu.Unlock()
	// CoreDNS's default format: remote - id "type class name proto size do
	// bufsize" rcode rflags rsize duration.
	line := regexp.MustCompile(`^\[INFO\] 127\.0\.0\.1:\d+ - \d+ "A IN www\.example\. udp (\d+) true 1232" NOERROR (qr[a-z,]*) (\d+) [0-9.]+s$`)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2 {
		t.Fatalf("%d log lines for the 2 queries:\n%s", len(lines), out)
	}
	for _, l := range lines {
		m := line.FindStringSubmatch(l)
		if m == nil {
			t.Errorf("log line not in CoreDNS's format: %q", l)
			continue
		}
		if m[1] != "40" { // header 12, question 17, OPT 11
			t.Errorf("request size %s in %q, want 40", m[1], l)
		}
		if n, _ := strconv.Atoi(m[3]); n <= 41 {
			t.Errorf("reply size %d in %q: not the reply's", n, l)
		}
	}
}

type writerFunc func(p []byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// TestMaxConcurrentRefused: with max_concurrent 1 and one query held by the
// upstream, another miss is answered REFUSED (as CoreDNS's forward plugin),
// not SERVFAIL; the held query still gets its answer once released.
func TestMaxConcurrentRefused(t *testing.T) {
	release := make(chan struct{})
	released := false
	defer func() {
		if !released {
			close(release)
		}
	}()
	up := dnstest.NewServer(t, dnstest.Block(release, zone.Handler()))
	f, err := forward.New(corefile.Forward{From: ".", To: []string{up.Addr}, MaxConcurrent: 1},
		forward.Options{Timeout: 5 * time.Second, AttemptTimeout: 4 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.Close)
	_, addr := start(t, nil, &Block{Zones: []string{"."}, Cache: cache.New(cacheCfg(), cache.Options{}), Forward: f})

	held := make(chan *dns.Msg, 1)
	go func() {
		c := &dns.Client{Net: "udp", Timeout: 5 * time.Second}
		r, _, err := c.Exchange(q("www.example.", dns.TypeA), addr)
		if err != nil {
			t.Errorf("held query: %v", err)
		}
		held <- r
	}()
	if !up.WaitCount("", 1, 3*time.Second) {
		t.Fatal("the upstream never saw the first query")
	}
	for _, tc := range []struct {
		name, qname string
		qtype       uint16
	}{
		{"other name", "other.example.", dns.TypeA},
		{"other type", "www.example.", dns.TypeAAAA},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := exchange(t, "udp", addr, q(tc.qname, tc.qtype))
			if r.Rcode != dns.RcodeRefused {
				t.Errorf("rcode %s while max_concurrent queries are in flight, want REFUSED", dns.RcodeToString[r.Rcode])
			}
		})
	}
	close(release)
	released = true
	if r := <-held; r == nil || r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 {
		t.Errorf("held query answered %v", r)
	}
}

// TestMissWorkerPerQuery checks that a miss never waits behind another
// miss's upstream exchange, even when an idle miss worker is reused.
func TestMissWorkerPerQuery(t *testing.T) {
	release := make(chan struct{})
	t.Cleanup(func() {
		select {
		case <-release:
		default:
			close(release)
		}
	})
	h := func(w *dnstest.Writer, qq *dnstest.Query) {
		if strings.HasPrefix(qq.Msg.Question[0].Name, "slow.") {
			select {
			case <-release:
			case <-time.After(3 * time.Second):
			}
		}
		zone.Handler()(w, qq)
	}
	_, f := upstream(t, h)
	_, addr := start(t, nil, &Block{Zones: []string{"."}, Cache: cache.New(cacheCfg(), cache.Options{}), Forward: f})

	// One miss answered: its worker is now idle and is reused next.
	exchange(t, "udp", addr, q("www.example.", dns.TypeA))

	slow := make(chan error, 1)
	go func() {
		c := &dns.Client{Net: "udp", Timeout: 4 * time.Second}
		_, _, err := c.Exchange(q("slow.example.", dns.TypeA), addr)
		slow <- err
	}()
	time.Sleep(100 * time.Millisecond) // the slow miss holds the idle worker

	begin := time.Now()
	c := &dns.Client{Net: "udp", Timeout: 2 * time.Second}
	if _, _, err := c.Exchange(q("fast.example.", dns.TypeA), addr); err != nil {
		t.Fatalf("a miss behind a slow one: %v", err)
	}
	if d := time.Since(begin); d > time.Second {
		t.Errorf("a miss waited %v behind a slow one", d)
	}
	select {
	case err := <-slow:
		t.Fatalf("the slow miss finished before its upstream answered: %v", err)
	default:
	}
	close(release)
	if err := <-slow; err != nil {
		t.Errorf("slow miss: %v", err)
	}
}

// TestAuthoritativeBit checks CoreDNS's AA semantics end to end: the
// answer to a miss carries the upstream's AA bit, a cache hit (hit path
// over UDP and TCP) always sets it.
func TestAuthoritativeBit(t *testing.T) {
	for _, upstreamAA := range []bool{false, true} {
		t.Run(fmt.Sprintf("upstream AA %v", upstreamAA), func(t *testing.T) {
			_, f := upstream(t, dnstest.Func(func(qq *dnstest.Query) *dns.Msg {
				m := zone.Reply(qq.Msg)
				m.Authoritative = upstreamAA
				return m
			}))
			_, addr := start(t, nil, &Block{Zones: []string{"."}, Cache: cache.New(cacheCfg(), cache.Options{}), Forward: f})
			for _, name := range []string{"www.example.", "nx.example."} {
				if r := exchange(t, "udp", addr, q(name, dns.TypeA)); r.Authoritative != upstreamAA {
					t.Errorf("%s miss: AA = %v, want the upstream's %v", name, r.Authoritative, upstreamAA)
				}
				for _, netw := range []string{"udp", "tcp"} {
					if r := exchange(t, netw, addr, q(name, dns.TypeA)); !r.Authoritative {
						t.Errorf("%s %s hit: AA not set", name, netw)
					}
				}
			}
		})
	}
}

// panicky is an upstream whose Exchange panics for one name.
type panicky struct{ next Exchanger }

func (p panicky) Exchange(ctx context.Context, m *dns.Msg) (*dns.Msg, error) {
	if m.Question[0].Name == "boom.example." {
		panic("boom")
	}
	return p.next.Exchange(ctx, m)
}

// TestPanicRecovered checks CoreDNS's behaviour on a panic: the query gets
// SERVFAIL, coredns_panics_total counts it, and the server keeps serving.
func TestPanicRecovered(t *testing.T) {
	_, f := upstream(t, zone.Handler())
	var logged strings.Builder
	var mu sync.Mutex
	logger := log.New(writerFunc(func(p []byte) (int, error) {
		mu.Lock()
		defer mu.Unlock()
		return logged.Write(p)
	}), "", 0)
	s, addr := startWith(t, Options{Timeout: 2 * time.Second, Logger: logger}, []string{"udp", "tcp"},
		&Block{Zones: []string{"."}, Forward: panicky{f}})
	for _, netw := range []string{"udp", "tcp"} {
		if r := exchange(t, netw, addr, q("boom.example.", dns.TypeA)); r.Rcode != dns.RcodeServerFailure {
			t.Errorf("%s: rcode %s, want SERVFAIL", netw, dns.RcodeToString[r.Rcode])
		}
	}
	if r := exchange(t, "udp", addr, q("www.example.", dns.TypeA)); len(r.Answer) != 1 {
		t.Errorf("after the panics: %v", r)
	}
	if got := testutil.ToFloat64(s.metrics.panics); got != 2 {
		t.Errorf("coredns_panics_total = %v, want 2", got)
	}
	mu.Lock()
	defer mu.Unlock()
	if !strings.Contains(logged.String(), "Recovered from panic") {
		t.Errorf("panic not logged: %q", logged.String())
	}
}
