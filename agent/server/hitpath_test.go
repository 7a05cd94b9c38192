package server

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/nodelocaldns/nodelocaldns/agent/cache"
	"github.com/nodelocaldns/nodelocaldns/agent/dnswire"
)

// fakeUpstream answers every query with one A record, without a network.
type fakeUpstream struct{}

func (fakeUpstream) Exchange(_ context.Context, m *dns.Msg) (*dns.Msg, error) {
	r := new(dns.Msg)
	r.SetReply(m)
	if m.Question[0].Qtype == dns.TypeA {
		r.Answer = []dns.RR{&dns.A{Hdr: dns.RR_Header{Name: m.Question[0].Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60}, A: []byte{192, 0, 2, 1}}}
	} else {
		r.Rcode = dns.RcodeNameError
	}
	return r, nil
}

// hitFixture is a server without sockets, a block with a filled cache and
// packed queries for the cached names.
type hitFixture struct {
	s     *Server
	zones *zoneMap
	pkts  [][]byte
	cache *cache.Cache
}

func newHitFixture(tb testing.TB, names int) *hitFixture {
	tb.Helper()
	cfg := cacheCfg()
	cfg.SuccessCap, cfg.DenialCap = 4096, 1024
	c := cache.New(cfg, cache.Options{})
	s, err := New(Options{})
	if err != nil {
		tb.Fatal(err)
	}
	if err := s.SetBlocks([]*Block{{Zones: []string{"."}, Port: 53, Cache: c, Forward: fakeUpstream{}}}); err != nil {
		tb.Fatal(err)
	}
	f := &hitFixture{s: s, cache: c, zones: s.table.Load().byPort[53]}
	for i := range names {
		m := new(dns.Msg)
		m.SetQuestion(fmt.Sprintf("Host%d.Example.COM.", i), dns.TypeA)
		m.SetEdns0(1232, false)
		pkt, _ := m.Pack()
		resp, _ := fakeUpstream{}.Exchange(context.Background(), m)
		if err := c.Set(msgKey(m), resp); err != nil {
			tb.Fatal(err)
		}
		f.pkts = append(f.pkts, pkt)
	}
	return f
}

func TestHitPathNoAlloc(t *testing.T) {
	f := newHitFixture(t, 100)
	var h hitPath
	h.init(f.s, false, false)
	dst := make([]byte, 0, outBufSize)
	now := time.Now().UnixNano()
	// Warm the lazily created metric children.
	for _, p := range f.pkts {
		if _, v := h.handle(dst[:0], p, f.zones, now); v != verdictReply {
			t.Fatalf("verdict %d, want a reply from the cache", v)
		}
	}
	i := 0
	listener := netip.MustParseAddrPort("127.0.0.1:53")
	allocs := testing.AllocsPerRun(1000, func() {
		zones := f.s.table.Load().zonesFor(listener) // once per batch in the reader
		_, _ = h.handle(dst[:0], f.pkts[i%len(f.pkts)], zones, now)
		if i%32 == 31 {
			h.tally.flush()
		}
		i++
	})
	if allocs != 0 {
		t.Errorf("hit path allocates %v times per query", allocs)
	}
	resp, _ := h.handle(dst[:0], f.pkts[7], f.zones, now)
	var m dns.Msg
	if err := m.Unpack(resp); err != nil || m.Question[0].Name != "Host7.Example.COM." || len(m.Answer) != 1 {
		t.Errorf("reply %v, %v", &m, err)
	}
}

// BenchmarkHitPath measures answering a cache hit: "wire" is the agent's
// path (parse header and question, key, lookup, copy, patch); "miekg" is
// the baseline a generic server does (Unpack, lookup, Copy, Pack).
func BenchmarkHitPath(b *testing.B) {
	f := newHitFixture(b, 1000)
	now := time.Now().UnixNano()
	b.Run("wire", func(b *testing.B) {
		var h hitPath
		h.init(f.s, false, false)
		dst := make([]byte, 0, outBufSize)
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			resp, v := h.handle(dst[:0], f.pkts[i%len(f.pkts)], f.zones, now)
			if v != verdictReply {
				b.Fatal("miss")
			}
			if i%batchSize == batchSize-1 {
				h.tally.flush()
			}
			dst = resp
			i++
		}
	})
	answers := map[string]*dns.Msg{}
	for _, p := range f.pkts {
		var m dns.Msg
		_ = m.Unpack(p)
		r, _ := fakeUpstream{}.Exchange(context.Background(), &m)
		answers[strings.ToLower(m.Question[0].Name)] = r
	}
	miekgHit := func(b *testing.B, buf []byte, pkt []byte) []byte {
		b.Helper()
		var req dns.Msg
		if err := req.Unpack(pkt); err != nil {
			b.Fatal(err)
		}
		r := answers[strings.ToLower(req.Question[0].Name)].Copy()
		r.Id = req.Id
		r.Question = req.Question
		for _, rr := range r.Answer {
			rr.Header().Ttl = 30
		}
		out, err := r.PackBuffer(buf)
		if err != nil {
			b.Fatal(err)
		}
		return out[:0]
	}
	b.Run("miekg", func(b *testing.B) {
		buf := make([]byte, 0, outBufSize)
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			buf = miekgHit(b, buf, f.pkts[i%len(f.pkts)])
			i++
		}
	})
	// ratio runs both paths in the same loop and reports how many times
	// faster the wire-format path is.
	b.Run("ratio", func(b *testing.B) {
		var h hitPath
		h.init(f.s, false, false)
		dst := make([]byte, 0, outBufSize)
		buf := make([]byte, 0, outBufSize)
		var wire, base time.Duration
		i := 0
		for b.Loop() {
			pkt := f.pkts[i%len(f.pkts)]
			t0 := time.Now()
			dst, _ = h.handle(dst[:0], pkt, f.zones, now)
			if i%batchSize == batchSize-1 {
				h.tally.flush()
			}
			t1 := time.Now()
			buf = miekgHit(b, buf, pkt)
			base += time.Since(t1)
			wire += t1.Sub(t0)
			i++
		}
		if wire > 0 {
			b.ReportMetric(float64(base)/float64(wire), "miekg/wire")
		}
	})
}

// FuzzPacket feeds random bytes to the packet path: the wire-format hit
// path and the miekg/dns miss path. Nothing may panic, every reply must
// unpack, and the cache must stay within its capacity.
func FuzzPacket(f *testing.F) {
	seed := new(dns.Msg)
	seed.SetQuestion("host1.example.com.", dns.TypeA)
	seed.SetEdns0(4096, true)
	b, _ := seed.Pack()
	f.Add(b)
	seed.SetQuestion("x.example.com.", dns.TypeMX)
	b, _ = seed.Pack()
	f.Add(b)
	f.Add([]byte{0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 1, 0xc0, 12})
	fx := newHitFixture(f, 10)
	var h hitPath
	h.init(fx.s, false, false)
	dst := make([]byte, 0, outBufSize)
	f.Fuzz(func(t *testing.T, pkt []byte) {
		now := time.Now().UnixNano()
		resp, v := h.handle(dst[:0], pkt, fx.zones, now)
		h.tally.flush()
		if v == verdictReply {
			if len(resp) > outBufSize {
				t.Fatalf("reply of %d bytes", len(resp))
			}
			var m dns.Msg
			if err := m.Unpack(resp); err != nil {
				t.Fatalf("hit-path reply does not unpack: %v", err)
			}
		}
		if v == verdictMiss {
			out := fx.s.answer(context.Background(), pkt, fx.zones, false, false, time.Now(), netip.AddrPort{})
			if len(out) > outBufSize { // a UDP reply: at most 4096 bytes on every path
				t.Fatalf("miss-path UDP reply of %d bytes", len(out))
			}
			if out != nil && len(out) > dnswire.HeaderLen {
				var m dns.Msg
				if err := m.Unpack(out); err != nil {
					t.Fatalf("miss-path reply does not unpack: %v", err)
				}
			}
		}
		if s, d := fx.cache.Len(); s > 4096 || d > 1024 {
			t.Fatalf("cache grew to %d/%d entries", s, d)
		}
	})
}

// BenchmarkMissPath measures the miss path without the network: unpack,
// cache miss, a fake upstream, cache insert and the packed reply.
func BenchmarkMissPath(b *testing.B) {
	f := newHitFixture(b, 0)
	pkts := make([][]byte, 1<<18) // more names than the cache holds: every query misses
	for i := range pkts {
		m := new(dns.Msg)
		m.SetQuestion(fmt.Sprintf("miss%d.example.com.", i), dns.TypeA)
		pkts[i], _ = m.Pack()
	}
	ctx := context.Background()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if f.s.answer(ctx, pkts[i%len(pkts)], f.zones, false, false, time.Now(), netip.AddrPort{}) == nil {
			b.Fatal("no reply")
		}
		i++
	}
}
