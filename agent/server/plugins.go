package server

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/miekg/dns"

	"github.com/nodelocaldns/nodelocaldns/agent/cache"
	"github.com/nodelocaldns/nodelocaldns/agent/dnswire"
	"github.com/nodelocaldns/nodelocaldns/agent/forward"
	"github.com/nodelocaldns/nodelocaldns/agent/plugin"
)

// Plugins are a block's answer-changing plugins, placed around its cache
// and forwarder in CoreDNS's plugin.cfg order (errors, log, dns64,
// loadbalance, cache, rewrite, template, hosts, loop, forward, whoami),
// whatever the order of their lines in the Corefile.
type Plugins struct {
	// Above run before the cache (dns64, loadbalance): they change cache
	// hits too, so a block with any answers its hits off the wire-format
	// hit path.
	Above []plugin.Handler
	// Below run after the cache and before forward (rewrite, template,
	// hosts): what they answer is cached as the forwarder's answers are,
	// so a block with only these keeps the wire-format hit path.
	Below []plugin.Handler
	// After answer the names forward does not handle (whoami).
	After []plugin.Handler
}

// offHitPath reports whether the block's cache hits must go through the
// plugins.
func (p *Plugins) offHitPath() bool { return p != nil && len(p.Above) > 0 }

// maxLookupDepth bounds the lookups plugins make through the server
// (dns64's A query, template's CNAME targets) within one query.
const maxLookupDepth = 4

type lookupDepthKey struct{}

// resolvePlugins is resolve for a block with plugins: the plugins above
// the cache, the cache, the plugins below it, forward and the plugins
// after it. The reply comes with its cache entry only when nothing above
// the cache changed it.
func (s *Server) resolvePlugins(ctx context.Context, zones *zoneMap, rt *route, req *dns.Msg, key []byte, tcp bool, client netip.AddrPort) (*dns.Msg, int, *cache.Entry) {
	p := rt.block.Plugins
	q := req.Question[0]
	defer func() { req.Question[0] = q }() // plugins may rewrite it
	r := &plugin.Request{Msg: req, Client: client, TCP: tcp, Server: rt.m.server}
	r.Lookup = func(ctx context.Context, name string, qtype uint16) (*dns.Msg, error) {
		return s.lookup(ctx, zones, r, name, qtype)
	}
	var stored *cache.Entry
	label := pluginNone
	resp, err := plugin.Run(ctx, p.Above, func(ctx context.Context, r *plugin.Request) (*dns.Msg, error) {
		m, l, e, err := s.cachedPlugins(ctx, rt, r, key)
		label, stored = l, e
		return m, err
	}, r)
	if len(p.Above) > 0 {
		stored = nil
	}
	if l := writerLabel(r.Writer); l != pluginNone {
		label = l
	}
	if err != nil {
		var re *plugin.RcodeError
		b := rt.block
		if b.Errors && (!errors.As(err, &re) || re.Err != nil) && (b.ErrorLog == nil || !b.ErrorLog.consolidated(err.Error())) {
			s.opts.Logger.Printf("[ERROR] %s %s: %v", q.Name, dns.TypeToString[q.Qtype], err)
		}
		return errReply(req, plugin.Rcode(err)), label, nil
	}
	return resp, label, stored
}

// cachedPlugins answers from the cache, or runs the plugins below it and
// caches what they answer. As resolve, a stale entry is the answer when
// the chain fails.
func (s *Server) cachedPlugins(ctx context.Context, rt *route, r *plugin.Request, key []byte) (*dns.Msg, int, *cache.Entry, error) {
	b := rt.block
	var stale *cache.Entry
	if b.Cache != nil {
		e, ttl, fresh := b.Cache.Get(key, b.Cache.Now())
		if e != nil {
			if m, err := e.Msg(b.Cache.ReplyTTL(e, ttl)); err == nil {
				if fresh {
					return m, pluginCache, nil, nil
				}
				stale = e
				if !b.Cache.VerifyStale() {
					// serve_stale immediate, as resolve: the expired
					// answer now, refreshed behind through the plugins.
					if m, err := e.Msg(0); err == nil {
						b.Cache.ServedStale()
						s.refreshStale(rt, r.Msg)
						return m, pluginCache, nil, nil
					}
				}
			}
		}
	}
	q := r.Msg.Question[0]
	resp, err := s.below(ctx, rt, r)
	if err == nil && resp == nil {
		err = plugin.Fail(dns.RcodeServerFailure, errors.New("no reply"))
	}
	label := writerLabel(r.Writer)
	if err == nil {
		// The reply carries the client's question, whatever the plugins
		// below did with it; the cache entry must too.
		resp.Question = []dns.Question{q}
	}
	if err == nil && resp.Rcode != dns.RcodeServerFailure {
		if b.Cache != nil {
			if e, serr := b.Cache.Store(key, resp); serr == nil {
				cache.CapTTLs(resp, e.TTL())
				return resp, label, e, nil
			}
		}
		return resp, label, nil, nil
	}
	if stale != nil {
		if m, serr := stale.Msg(0); serr == nil {
			b.Cache.ServedStale()
			r.Writer = ""
			return m, pluginCache, nil, nil
		}
	}
	if err != nil {
		return nil, label, nil, err
	}
	if b.Cache != nil {
		_ = b.Cache.Set(key, resp) // a SERVFAIL, cached briefly
	}
	return resp, label, nil, nil
}

// below runs the plugins between the cache and forward, then forward, then
// the plugins after it for the names forward does not handle.
func (s *Server) below(ctx context.Context, rt *route, r *plugin.Request) (*dns.Msg, error) {
	b := rt.block
	return plugin.Run(ctx, b.Plugins.Below, func(ctx context.Context, r *plugin.Request) (*dns.Msg, error) {
		if b.Forward != nil && (b.Match == nil || b.Match(r.Msg.Question[0].Name)) {
			if r.PassOptions {
				ctx = forward.WithEDNS0Options(ctx)
			}
			resp, err := s.exchange(ctx, b, r.Msg)
			r.Writer = "forward"
			if err != nil {
				if b.Errors {
					s.reportError(b, r.Msg, err)
				}
				if b.Debug {
					s.debugDump(r.Msg, err)
				}
				return nil, plugin.Fail(failureRcode(err), nil)
			}
			return resp, nil
		}
		return plugin.Run(ctx, b.Plugins.After, func(context.Context, *plugin.Request) (*dns.Msg, error) {
			return nil, plugin.Fail(dns.RcodeRefused, nil)
		}, r)
	}, r)
}

// lookup resolves name through the server again, as CoreDNS's upstream
// package: a query with orig's flags and EDNS0, answered by the block that
// serves the name from the top of its chain. An answer made of an rcode
// alone is an error, as CoreDNS's lookup then has no message.
func (s *Server) lookup(ctx context.Context, zones *zoneMap, orig *plugin.Request, name string, qtype uint16) (*dns.Msg, error) {
	depth, _ := ctx.Value(lookupDepthKey{}).(int)
	if depth >= maxLookupDepth {
		return nil, fmt.Errorf("lookup %s: more than %d nested lookups", name, maxLookupDepth)
	}
	ctx = context.WithValue(ctx, lookupDepthKey{}, depth+1)
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), qtype)
	m.RecursionDesired = orig.Msg.RecursionDesired
	m.CheckingDisabled = orig.Msg.CheckingDisabled
	if opt := orig.Msg.IsEdns0(); opt != nil {
		m.Extra = append(m.Extra, opt)
	}
	if _, ok := dns.IsDomainName(m.Question[0].Name); !ok {
		return nil, fmt.Errorf("lookup %q: not a domain name", name)
	}
	var kb [dnswire.MaxKeyLen]byte
	key := appendMsgKey(kb[:0], m)
	rt := zones.lookup(dnswire.KeyName(key))
	if rt == nil {
		return errReply(m, dns.RcodeRefused), nil
	}
	// Counted as a query, as CoreDNS's lookups pass its metrics plugin.
	start := time.Now()
	ti := typeIndex(qtype)
	(*rt.m.request(orig.TCP, orig.Family() == 2, ti)).Inc()
	var resp *dns.Msg
	var err error
	label := pluginNone
	if rt.block.Plugins == nil {
		resp, label, _ = s.resolve(ctx, rt, m, key)
	} else {
		r := &plugin.Request{Msg: m, Client: orig.Client, TCP: orig.TCP, Server: rt.m.server}
		r.Lookup = func(ctx context.Context, name string, qtype uint16) (*dns.Msg, error) {
			return s.lookup(ctx, zones, r, name, qtype)
		}
		resp, err = plugin.Run(ctx, rt.block.Plugins.Above, func(ctx context.Context, r *plugin.Request) (*dns.Msg, error) {
			resp, l, _, err := s.cachedPlugins(ctx, rt, r, key)
			label = l
			return resp, err
		}, r)
		if l := writerLabel(r.Writer); l != pluginNone {
			label = l
		}
	}
	rcode := plugin.Rcode(err)
	if err == nil {
		rcode = resp.Rcode
	}
	(*rt.m.response(rcode, label)).Inc()
	rt.m.observer().observeN(time.Since(start).Seconds(), 1)
	return resp, err
}

// refreshPlugins is refresh (a prefetch) for a block with plugins: the
// plugins below the cache answer again, and the cache keeps the answer.
func (s *Server) refreshPlugins(rt *route, req *dns.Msg) {
	b := rt.block
	if b.Cache == nil {
		return
	}
	key := msgKey(req)
	q := req.Question[0]
	r := &plugin.Request{Msg: req, Server: rt.m.server}
	if zones := s.zonesOf(rt.block); zones != nil {
		r.Lookup = func(ctx context.Context, name string, qtype uint16) (*dns.Msg, error) {
			return s.lookup(ctx, zones, r, name, qtype)
		}
	}
	resp, err := s.below(s.ctx, rt, r)
	if err != nil || resp.Rcode == dns.RcodeServerFailure {
		return
	}
	resp.Question = []dns.Question{q}
	b.Cache.Prefetched()
	_ = b.Cache.Set(key, resp)
}

// zonesOf returns the zones of a listener of b, for the lookups of a
// prefetch (which has no listener of its own).
func (s *Server) zonesOf(b *Block) *zoneMap {
	t := s.table.Load()
	if len(b.Bind) == 0 {
		return t.byPort[b.Port]
	}
	for addr, z := range t.byAddr {
		if int(addr.Port()) == b.Port && bindsAddr(b, addr.String()) {
			return z
		}
	}
	return nil
}

// writerLabel maps a plugin's name to its responses_total label (none for
// an rcode no plugin wrote, as CoreDNS's).
func writerLabel(name string) int {
	for i := pluginCache; i < numPlugins; i++ {
		if pluginName[i] == name {
			return i
		}
	}
	return pluginNone
}
