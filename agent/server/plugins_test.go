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
	"github.com/prometheus/client_golang/prometheus"

	"github.com/nodelocaldns/nodelocaldns/agent/cache"
	"github.com/nodelocaldns/nodelocaldns/agent/plugin"
)

// handlerFunc is a plugin made of a function, recording its calls.
type handlerFunc struct {
	name  string
	log   *callLog
	serve func(ctx context.Context, r *plugin.Request, next plugin.Next) (*dns.Msg, error)
}

func (h handlerFunc) ServeDNS(ctx context.Context, r *plugin.Request, next plugin.Next) (*dns.Msg, error) {
	h.log.add(h.name)
	if h.serve == nil {
		return next(ctx, r)
	}
	return h.serve(ctx, r, next)
}

type callLog struct {
	mu    sync.Mutex
	calls []string
}

func (l *callLog) add(s string) {
	l.mu.Lock()
	l.calls = append(l.calls, s)
	l.mu.Unlock()
}

// take returns the calls so far and forgets them.
func (l *callLog) take() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := strings.Join(l.calls, ",")
	l.calls = nil
	return s
}

// recordingUpstream is fakeUpstream that logs the names it is asked.
type recordingUpstream struct{ log *callLog }

func (u recordingUpstream) Exchange(ctx context.Context, m *dns.Msg) (*dns.Msg, error) {
	u.log.add("forward:" + m.Question[0].Name)
	return fakeUpstream{}.Exchange(ctx, m)
}

// TestPluginChainOrder checks CoreDNS's order around the cache: the
// plugins above the cache see hits, the ones below only misses; after
// forward only for names forward does not handle.
func TestPluginChainOrder(t *testing.T) {
	log := &callLog{}
	pass := func(name string) plugin.Handler { return handlerFunc{name: name, log: log} }
	whoami := handlerFunc{name: "after", log: log, serve: func(_ context.Context, r *plugin.Request, _ plugin.Next) (*dns.Msg, error) {
		m := plugin.Reply(r.Msg)
		r.Writer = "whoami"
		return m, nil
	}}
	b := &Block{Zones: []string{"."}, Cache: cache.New(cacheCfg(), cache.Options{}), Forward: recordingUpstream{log},
		Match:   func(name string) bool { return !strings.HasSuffix(name, "local.") },
		Plugins: &Plugins{Above: []plugin.Handler{pass("above1"), pass("above2")}, Below: []plugin.Handler{pass("below1"), pass("below2")}, After: []plugin.Handler{whoami}}}
	_, addr := start(t, nil, b)
	for i, want := range []string{
		"above1,above2,below1,below2,forward:a.example.",
		"above1,above2", // a hit: below the cache nothing runs
	} {
		if r := exchange(t, "udp", addr, q("a.example.", dns.TypeA)); len(r.Answer) != 1 {
			t.Fatalf("query %d: %v", i, r)
		}
		if got := log.take(); got != want {
			t.Errorf("query %d: calls %s, want %s", i, got, want)
		}
	}
	if r := exchange(t, "udp", addr, q("x.local.", dns.TypeA)); r.Rcode != dns.RcodeSuccess || !r.Authoritative {
		t.Errorf("after forward: %v", r)
	}
	if got := log.take(); got != "above1,above2,below1,below2,after" {
		t.Errorf("calls %s", got)
	}
}

// TestPluginsBelowCacheKeepHitPath checks that a block with plugins only
// below the cache answers its hits in wire format, and one with plugins
// above it does not.
func TestPluginsBelowCacheKeepHitPath(t *testing.T) {
	for _, above := range []bool{false, true} {
		log := &callLog{}
		p := &Plugins{Below: []plugin.Handler{handlerFunc{name: "below", log: log}}}
		if above {
			p.Above = []plugin.Handler{handlerFunc{name: "above", log: log}}
		}
		c := cache.New(cacheCfg(), cache.Options{})
		s, err := New(Options{})
		if err != nil {
			t.Fatal(err)
		}
		if err := s.SetBlocks([]*Block{{Zones: []string{"."}, Port: 53, Cache: c, Forward: fakeUpstream{}, Plugins: p}}); err != nil {
			t.Fatal(err)
		}
		zones := s.table.Load().byPort[53]
		m := q("host.example.", dns.TypeA)
		pkt, _ := m.Pack()
		out := s.answer(context.Background(), pkt, zones, false, false, time.Now(), netip.AddrPort{})
		if out == nil || log.take() == "" {
			t.Fatalf("above=%v: miss not answered through the plugins", above)
		}
		var h hitPath
		h.init(s, false, false)
		_, v := h.handle(make([]byte, 0, 512), pkt, zones, time.Now().UnixNano())
		if want := map[bool]int{false: verdictReply, true: verdictMiss}[above]; v != want {
			t.Errorf("above=%v: hit path verdict %d, want %d", above, v, want)
		}
	}
}

// TestPluginRcodeAndRewrittenQuestion checks that an rcode-only answer is
// SERVFAIL and not cached, and that a question rewritten below the cache
// is answered with the client's question and cached under it.
func TestPluginRcodeAndRewrittenQuestion(t *testing.T) {
	log := &callLog{}
	rewrite := handlerFunc{name: "rewrite", log: log, serve: func(ctx context.Context, r *plugin.Request, next plugin.Next) (*dns.Msg, error) {
		switch r.Name() {
		case "fail.example.":
			return nil, plugin.Fail(dns.RcodeServerFailure, nil)
		case "old.example.":
			r.Msg.Question[0].Name = "new.example."
		}
		return next(ctx, r) // the question is not restored: the server does it
	}}
	up := recordingUpstream{log}
	_, addr := start(t, nil, &Block{Zones: []string{"."}, Cache: cache.New(cacheCfg(), cache.Options{}), Forward: up,
		Plugins: &Plugins{Below: []plugin.Handler{rewrite}}})
	for range 2 {
		if r := exchange(t, "udp", addr, q("fail.example.", dns.TypeA)); r.Rcode != dns.RcodeServerFailure {
			t.Fatalf("rcode-only answer: %v", r)
		}
	}
	if got := log.take(); got != "rewrite,rewrite" {
		t.Errorf("calls %s: the rcode-only answer was cached", got)
	}
	for i := range 2 {
		r := exchange(t, "udp", addr, q("Old.Example.", dns.TypeA))
		if r.Question[0].Name != "Old.Example." || len(r.Answer) != 1 || r.Answer[0].Header().Name != "new.example." {
			t.Fatalf("query %d: %v", i, r)
		}
	}
	if got := log.take(); got != "rewrite,forward:new.example." {
		t.Errorf("calls %s, want one rewrite and forward, then a hit", got)
	}
}

// TestPluginLookup checks that a plugin's lookup goes through the server
// again, from the top of the block that serves the name.
func TestPluginLookup(t *testing.T) {
	log := &callLog{}
	synth := handlerFunc{name: "synth", log: log, serve: func(ctx context.Context, r *plugin.Request, next plugin.Next) (*dns.Msg, error) {
		if r.QType() != dns.TypeAAAA {
			return next(ctx, r)
		}
		a, err := r.Lookup(ctx, r.Msg.Question[0].Name, dns.TypeA)
		if err != nil {
			return nil, err
		}
		m := plugin.Reply(r.Msg)
		m.Answer = a.Answer
		return m, nil
	}}
	reg := prometheus.NewRegistry()
	_, addr := start(t, reg, &Block{Zones: []string{"."}, Cache: cache.New(cacheCfg(), cache.Options{}), Forward: recordingUpstream{log},
		Plugins: &Plugins{Above: []plugin.Handler{synth}}})
	m := q("v6.example.", dns.TypeAAAA)
	m.SetEdns0(1232, true)
	r := exchange(t, "udp", addr, m)
	if len(r.Answer) != 1 || r.Answer[0].Header().Rrtype != dns.TypeA {
		t.Fatalf("answer %v", r)
	}
	if got := log.take(); got != "synth,synth,forward:v6.example." {
		t.Errorf("calls %s", got)
	}
	// The lookup counts as a query, as in CoreDNS.
	n := 0
	mfs, _ := reg.Gather()
	for _, mf := range mfs {
		if mf.GetName() == "coredns_dns_requests_total" {
			for _, m := range mf.GetMetric() {
				n += int(m.GetCounter().GetValue())
			}
		}
	}
	if n != 2 {
		t.Errorf("requests_total %d, want 2 (the AAAA query and the A lookup)", n)
	}
}

// TestPluginPrefetch checks that a prefetch of a block with plugins asks
// the plugins below the cache again, with a lookup through the server.
func TestPluginPrefetch(t *testing.T) {
	log := &callLog{}
	var lookedUp bool
	below := handlerFunc{name: "below", log: log, serve: func(ctx context.Context, r *plugin.Request, next plugin.Next) (*dns.Msg, error) {
		if r.Lookup != nil && r.Name() == "p.example." {
			if _, err := r.Lookup(ctx, "other.example.", dns.TypeA); err == nil {
				lookedUp = true
			}
		}
		return next(ctx, r)
	}}
	c := cache.New(cacheCfg(), cache.Options{})
	s, err := New(Options{})
	if err != nil {
		t.Fatal(err)
	}
	b := &Block{Zones: []string{"."}, Port: 53, Bind: []string{"127.0.0.1"}, Cache: c, Forward: recordingUpstream{log}, Plugins: &Plugins{Below: []plugin.Handler{below}}}
	if err := s.SetBlocks([]*Block{b}); err != nil {
		t.Fatal(err)
	}
	rt := s.zonesOf(b).lookup([]byte("\x00"))
	if rt == nil {
		t.Fatal("no route for the block")
	}
	req := q("p.example.", dns.TypeA)
	s.refreshPlugins(rt, req)
	if got := log.take(); got != "below,below,forward:other.example.,forward:p.example." || !lookedUp {
		t.Errorf("calls %s, looked up %v", got, lookedUp)
	}
	if e, _, fresh := c.Get(msgKey(req), c.Now()); e == nil || !fresh {
		t.Error("prefetched answer not cached")
	}
}

// TestPluginLookupDepth checks that lookups that would never end (a
// template CNAME to itself) stop at maxLookupDepth with SERVFAIL.
func TestPluginLookupDepth(t *testing.T) {
	log := &callLog{}
	loop := handlerFunc{name: "loop", log: log, serve: func(ctx context.Context, r *plugin.Request, _ plugin.Next) (*dns.Msg, error) {
		return r.Lookup(ctx, r.Msg.Question[0].Name, r.QType())
	}}
	_, addr := start(t, nil, &Block{Zones: []string{"."}, Forward: fakeUpstream{}, Plugins: &Plugins{Below: []plugin.Handler{loop}}})
	if r := exchange(t, "udp", addr, q("self.example.", dns.TypeA)); r.Rcode != dns.RcodeServerFailure {
		t.Errorf("rcode %s, want SERVFAIL", dns.RcodeToString[r.Rcode])
	}
	if got := strings.Count(log.take(), "loop"); got != maxLookupDepth+1 {
		t.Errorf("%d calls, want %d", got, maxLookupDepth+1)
	}
}

// TestPluginResponseLabels checks the plugin label of responses_total:
// the plugin that wrote the reply, none for an rcode alone.
func TestPluginResponseLabels(t *testing.T) {
	reg := prometheus.NewRegistry()
	log := &callLog{}
	hosts := handlerFunc{name: "hosts", log: log, serve: func(ctx context.Context, r *plugin.Request, next plugin.Next) (*dns.Msg, error) {
		switch r.Name() {
		case "fail.example.":
			return nil, plugin.Fail(dns.RcodeServerFailure, nil)
		case "h.example.":
			r.Writer = "hosts"
			return plugin.Reply(r.Msg), nil
		}
		return next(ctx, r)
	}}
	_, addr := start(t, reg, &Block{Zones: []string{"."}, Forward: fakeUpstream{}, Plugins: &Plugins{Below: []plugin.Handler{hosts}}})
	for _, name := range []string{"fail.example.", "h.example.", "f.example."} {
		exchange(t, "udp", addr, q(name, dns.TypeA))
	}
	for _, want := range []string{`plugin="",rcode="SERVFAIL"`, `plugin="hosts",rcode="NOERROR"`, `plugin="forward",rcode="NOERROR"`} {
		found := false
		mfs, _ := reg.Gather()
		for _, mf := range mfs {
			if mf.GetName() != "coredns_dns_responses_total" {
				continue
			}
			for _, m := range mf.GetMetric() {
				l := map[string]string{}
				for _, lp := range m.GetLabel() {
					l[lp.GetName()] = lp.GetValue()
				}
				if fmt.Sprintf(`plugin=%q,rcode=%q`, l["plugin"], l["rcode"]) == want {
					found = true
				}
			}
		}
		if !found {
			t.Errorf("no coredns_dns_responses_total{%s}", want)
		}
	}
}
