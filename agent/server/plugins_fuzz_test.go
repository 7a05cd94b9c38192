package server

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/nodelocaldns/nodelocaldns/agent/cache"
	"github.com/nodelocaldns/nodelocaldns/agent/corefile"
	"github.com/nodelocaldns/nodelocaldns/agent/plugin"
	"github.com/nodelocaldns/nodelocaldns/agent/plugin/dns64"
	"github.com/nodelocaldns/nodelocaldns/agent/plugin/hosts"
	"github.com/nodelocaldns/nodelocaldns/agent/plugin/loadbalance"
	"github.com/nodelocaldns/nodelocaldns/agent/plugin/rewrite"
	"github.com/nodelocaldns/nodelocaldns/agent/plugin/template"
	"github.com/nodelocaldns/nodelocaldns/agent/plugin/whoami"
)

// fuzzPluginsCorefile has a block with plugins below the cache only (its
// hits stay on the wire-format hit path) and one with plugins above it.
const fuzzPluginsCorefile = `below.test {
    rewrite continue name regex (.*)\.alias\.below\.test {1}.below.test answer auto
    rewrite ttl suffix .below.test 10-20
    template IN TXT {
        match ^t-(?P<n>[0-9]+)\.
        answer "{{ .Name }} 60 IN TXT {{ .Group.n }}"
        fallthrough
    }
    hosts /nonexistent {
        10.0.0.1 h.below.test
        fallthrough
    }
    whoami
}
. {
    dns64 {
        allow_ipv4
    }
    loadbalance
    template IN MX {
        answer "{{ .Name }} 60 IN MX 1 {{ .Name }}"
    }
}
`

// pluginFixture serves fuzzPluginsCorefile's blocks with caches and
// fakeUpstream, without sockets.
func pluginFixture(tb testing.TB) (*Server, *zoneMap) {
	tb.Helper()
	cfg, err := corefile.Parse(fuzzPluginsCorefile, corefile.ParseOptions{})
	if err != nil {
		tb.Fatal(err)
	}
	s, err := New(Options{})
	if err != nil {
		tb.Fatal(err)
	}
	var blocks []*Block
	for _, sc := range cfg.Servers {
		p := &Plugins{}
		if sc.DNS64 != nil {
			p.Above = append(p.Above, dns64.New(*sc.DNS64, nil))
		}
		if sc.LoadBalance != nil {
			lb, err := loadbalance.New(*sc.LoadBalance, nil)
			if err != nil {
				tb.Fatal(err)
			}
			p.Above = append(p.Above, lb)
		}
		if len(sc.Rewrite) > 0 {
			rw, err := rewrite.New(sc.Rewrite)
			if err != nil {
				tb.Fatal(err)
			}
			p.Below = append(p.Below, rw)
		}
		t, err := template.New(sc.Templates, nil)
		if err != nil {
			tb.Fatal(err)
		}
		p.Below = append(p.Below, t)
		if sc.Hosts != nil {
			h := hosts.New(*sc.Hosts, nil, nil)
			tb.Cleanup(h.Close)
			p.Below = append(p.Below, h)
		}
		if sc.Whoami {
			p.After = []plugin.Handler{whoami.Whoami{}}
		}
		cfg := cacheCfg()
		cfg.SuccessCap, cfg.DenialCap = 512, 512
		b := &Block{Zones: sc.Zones, Port: 53, Cache: cache.New(cfg, cache.Options{}), Forward: fakeUpstream{}, Plugins: p}
		if sc.Whoami {
			b.Match = func(name string) bool { return !strings.HasPrefix(strings.ToLower(name), "who.") } // whoami answers who.*
		}
		blocks = append(blocks, b)
	}
	if err := s.SetBlocks(blocks); err != nil {
		tb.Fatal(err)
	}
	return s, s.table.Load().byPort[53]
}

// FuzzPluginPacket sends any packet to the hit path and the miss path of
// blocks with answer-changing plugins: nothing panics, replies unpack and
// carry the client's question, and a hit repeats the miss's answer.
func FuzzPluginPacket(f *testing.F) {
	for _, q := range []struct {
		name  string
		qtype uint16
	}{
		{"x.alias.below.test.", dns.TypeA}, {"t-42.below.test.", dns.TypeTXT}, {"h.below.test.", dns.TypeA},
		{"H.Below.Test.", dns.TypeAAAA}, {"who.below.test.", dns.TypeA}, {"v6.example.", dns.TypeAAAA}, {"mx.example.", dns.TypeMX},
	} {
		m := new(dns.Msg)
		m.SetQuestion(q.name, q.qtype)
		m.SetEdns0(1232, true)
		b, _ := m.Pack()
		f.Add(b)
	}
	s, zones := pluginFixture(f)
	var h hitPath
	h.init(s, false, false)
	dst := make([]byte, 0, outBufSize)
	client := netip.MustParseAddrPort("10.0.0.9:5353")
	f.Fuzz(func(t *testing.T, pkt []byte) {
		var first []byte
		for i := range 2 { // a miss, then (maybe) a hit
			resp, v := h.handle(dst[:0], pkt, zones, time.Now().UnixNano())
			h.tally.flush()
			if v == verdictMiss {
				resp = s.answer(context.Background(), pkt, zones, false, false, time.Now(), client)
			}
			if v == verdictDrop || resp == nil || len(resp) <= 12 {
				return
			}
			var req, m dns.Msg
			if err := m.Unpack(resp); err != nil {
				t.Fatalf("reply does not unpack: %v", err)
			}
			if req.Unpack(pkt) != nil || len(req.Question) != 1 || len(m.Question) == 0 {
				return
			}
			if m.Question[0] != req.Question[0] || m.Id != req.Id {
				t.Fatalf("reply question %v id %d, want %v id %d", m.Question[0], m.Id, req.Question[0], req.Id)
			}
			if i == 0 {
				first = append([]byte(nil), resp...)
			} else if v == verdictReply && len(resp) != len(first) {
				t.Fatalf("hit of %d bytes after a miss of %d", len(resp), len(first))
			}
		}
	})
}

// TestPluginFixtureAnswers checks the fuzz fixture's answers, so that the
// fuzz target exercises the plugins it names.
func TestPluginFixtureAnswers(t *testing.T) {
	s, zones := pluginFixture(t)
	for _, tc := range []struct {
		name  string
		qtype uint16
		want  string
	}{
		{"x.alias.below.test.", dns.TypeA, "x.alias.below.test.\t20\tIN\tA\t192.0.2.1"},
		{"t-42.below.test.", dns.TypeTXT, "t-42.below.test.\t20\tIN\tTXT\t\"42\""},
		{"h.below.test.", dns.TypeA, "h.below.test.\t20\tIN\tA\t10.0.0.1"},
		{"v6.example.", dns.TypeAAAA, "v6.example.\t60\tIN\tAAAA\t64:ff9b::c000:201"},
		{"mx.example.", dns.TypeMX, "mx.example.\t60\tIN\tMX\t1 mx.example."},
		{"who.below.test.", dns.TypeA, ""},
	} {
		m := new(dns.Msg)
		m.SetQuestion(tc.name, tc.qtype)
		pkt, _ := m.Pack()
		out := s.answer(context.Background(), pkt, zones, false, false, time.Now(), netip.MustParseAddrPort("10.0.0.9:53"))
		var r dns.Msg
		if tc.want == "" { // whoami
			if err := r.Unpack(out); err != nil || len(r.Extra) != 2 || r.Extra[0].(*dns.A).A.String() != "10.0.0.9" {
				t.Errorf("%s: %v (%v), want whoami's records", tc.name, r.Extra, err)
			}
			continue
		}
		if err := r.Unpack(out); err != nil || len(r.Answer) == 0 || r.Answer[0].String() != tc.want {
			t.Errorf("%s: %v (%v), want %s", tc.name, r.Answer, err, tc.want)
		}
	}
}

// TestPluginsConcurrent answers from the fixture's plugins from many
// goroutines at once (run with -race).
func TestPluginsConcurrent(t *testing.T) {
	s, zones := pluginFixture(t)
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := range 8 {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			var h hitPath
			h.init(s, false, false)
			for i := range 100 {
				m := new(dns.Msg)
				name := []string{"x.alias.below.test.", "t-1.below.test.", "h.below.test.", "v6.example.", "mx.example."}[(g+i)%5]
				qtype := []uint16{dns.TypeA, dns.TypeTXT, dns.TypeA, dns.TypeAAAA, dns.TypeMX}[(g+i)%5]
				m.SetQuestion(name, qtype)
				pkt, _ := m.Pack()
				out, v := h.handle(make([]byte, 0, 512), pkt, zones, time.Now().UnixNano())
				h.tally.flush()
				if v == verdictMiss {
					out = s.answer(context.Background(), pkt, zones, false, false, time.Now(), netip.MustParseAddrPort("10.0.0.9:53"))
				}
				var r dns.Msg
				if err := r.Unpack(out); err != nil || len(r.Answer) == 0 {
					errs <- fmt.Errorf("%s: %w %v", name, err, r.Answer)
					return
				}
			}
		}(g)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// BenchmarkPluginHit measures a cache hit of a block with plugins below
// the cache only (the wire-format hit path) and of one with loadbalance
// above it (the hit goes through the plugins and miekg/dns).
func BenchmarkPluginHit(b *testing.B) {
	s, zones := pluginFixture(b)
	for _, bc := range []struct{ name, qname string }{{"below-only/wire", "h.below.test."}, {"loadbalance/miekg", "lb.example."}} {
		m := new(dns.Msg)
		m.SetQuestion(bc.qname, dns.TypeA)
		m.SetEdns0(1232, false)
		pkt, _ := m.Pack()
		client := netip.MustParseAddrPort("10.0.0.9:53")
		_ = s.answer(context.Background(), pkt, zones, false, false, time.Now(), client) // fill the cache
		b.Run(bc.name, func(b *testing.B) {
			var h hitPath
			h.init(s, false, false)
			dst := make([]byte, 0, outBufSize)
			b.ReportAllocs()
			for b.Loop() {
				out, v := h.handle(dst[:0], pkt, zones, time.Now().UnixNano())
				if v == verdictMiss {
					out = s.answer(context.Background(), pkt, zones, false, false, time.Now(), client)
				}
				if len(out) == 0 {
					b.Fatal("no reply")
				}
			}
			h.tally.flush()
		})
	}
}
