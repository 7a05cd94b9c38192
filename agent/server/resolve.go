package server

import (
	"context"
	"encoding/binary"
	"errors"
	"net/netip"
	"time"

	"github.com/miekg/dns"

	"github.com/nodelocaldns/nodelocaldns/agent/cache"
	"github.com/nodelocaldns/nodelocaldns/agent/dnswire"
	"github.com/nodelocaldns/nodelocaldns/agent/forward"
)

// answer handles one query with miekg/dns: cache, forwarding, stale answers,
// and every error reply. It returns the packed reply, or nil to drop.
func (s *Server) answer(ctx context.Context, pkt []byte, zones *zoneMap, tcp, v6 bool, start time.Time, client netip.AddrPort) (out []byte) {
	defer s.recoverAnswer(pkt, &out)
	req := new(dns.Msg)
	if err := req.Unpack(pkt); err != nil {
		return formErr(pkt)
	}
	if req.Response {
		return nil
	}
	// As CoreDNS's DNS server (miekg/dns's accept function): other
	// opcodes and malformed sections get a bare header.
	if req.Opcode != dns.OpcodeQuery {
		return headerReply(pkt, dns.RcodeNotImplemented)
	}
	// The header's counts, as miekg/dns checks them (a message may
	// announce more records than it holds).
	if dnswire.Count(pkt, 0) != 1 || dnswire.Count(pkt, 1) > 1 || dnswire.Count(pkt, 2) > 1 || dnswire.Count(pkt, 3) > 2 || len(req.Question) != 1 {
		return headerReply(pkt, dns.RcodeFormatError)
	}
	if req.Question[0].Qclass != dns.ClassINET && (zones == nil || !zones.chaos) {
		// CoreDNS lets other classes through only when a block of the
		// listen address forwards (or has the chaos plugin).
		return s.refuse(zones, req, pkt, tcp, v6, start)
	}
	if badEDNS(req) {
		return formErr(pkt)
	}
	if opt := req.IsEdns0(); opt != nil && opt.Version() != 0 {
		r := errReply(req, dns.RcodeBadVers)
		return pack(r, req, tcp)
	}
	var kb [dnswire.MaxKeyLen]byte
	key := appendMsgKey(kb[:0], req)
	rt := zones.lookup(dnswire.KeyName(key))
	if rt == nil {
		return s.refuse(zones, req, pkt, tcp, v6, start)
	}
	capBufSize(req, rt.block.BufSize)
	var resp *dns.Msg
	var plugin int
	var stored *cache.Entry
	if rt.block.Plugins != nil {
		resp, plugin, stored = s.resolvePlugins(ctx, zones, rt, req, key, tcp, client)
	} else {
		resp, plugin, stored = s.resolve(ctx, rt, req, key)
	}
	plugin = writtenBy(plugin, rt.block.Cache != nil)
	if stored != nil {
		out = entryReply(stored, pkt, tcp, rt.block.BufSize)
	}
	if out == nil {
		out = pack(resp, req, tcp)
	}
	opt := req.IsEdns0()
	rt.m.observeAll(tcp, v6, req.Question[0].Qtype, opt != nil && opt.Do(), resp.Rcode, plugin, len(pkt), len(out), time.Since(start))
	if rt.block.Log {
		s.logQuery(rt.block, client, req, resp, out, tcp, len(pkt), time.Since(start))
	}
	return out
}

// writtenBy is the plugin label of a reply that plugin produced in a block
// with or without a cache. CoreDNS names the plugin whose response writer
// passed the reply on last: the cache's for every plugin below it in the
// chain (rewrite, template, hosts, forward, whoami), dns64's or
// loadbalance's above it.
func writtenBy(plugin int, cached bool) int {
	if !cached || plugin == pluginNone || pluginName[plugin] == "dns64" || pluginName[plugin] == "loadbalance" {
		return plugin
	}
	return pluginCache
}

// entryReply is the reply to pkt from the cache entry just stored for it,
// built in wire format as a cache hit's (the answer is packed once, for
// the cache) but with the upstream's AA bit, or nil when pkt does not
// parse as the hit path wants it.
func entryReply(e *cache.Entry, pkt []byte, tcp bool, bufSize int) []byte {
	var q dnswire.Query
	if err := dnswire.ParseQuery(pkt, &q); err != nil {
		return nil
	}
	limit := dns65535
	if !tcp {
		limit = udpReplyLimit(&q, bufSize)
	}
	return e.Reply(make([]byte, 0, min(limit, e.Size()+dnswire.OPTLen)), pkt, &q, e.TTL(), limit, EDNSSize, false)
}

// resolve finds the answer to req in rt's block: cache, upstream, stale
// cache, or an error reply. An upstream answer that went into the cache
// comes with its entry.
func (s *Server) resolve(ctx context.Context, rt *route, req *dns.Msg, key []byte) (*dns.Msg, int, *cache.Entry) {
	b := rt.block
	var stale *cache.Entry
	if b.Cache != nil {
		e, ttl, fresh := b.Cache.Get(key, b.Cache.Now())
		if e != nil {
			if m, err := e.Msg(b.Cache.ReplyTTL(e, ttl)); err == nil {
				if fresh {
					return m, pluginCache, nil
				}
				stale = e
				if !b.Cache.VerifyStale() {
					// serve_stale immediate: the expired answer now, with
					// TTL 0, and a refresh behind it.
					if m, err := e.Msg(0); err == nil {
						b.Cache.ServedStale()
						s.refreshStale(rt, req)
						return m, pluginCache, nil
					}
				}
			}
		}
	}
	if b.Forward == nil || (b.Match != nil && !b.Match(req.Question[0].Name)) {
		return errReply(req, dns.RcodeRefused), pluginNone, nil
	}
	resp, err := s.exchange(ctx, b, req)
	if err == nil && resp.Rcode != dns.RcodeServerFailure {
		if b.Cache != nil {
			// As CoreDNS, the answer to the miss carries the cached TTL
			// (capped), not the upstream's.
			if e, serr := b.Cache.Store(key, resp); serr == nil {
				cache.CapTTLs(resp, e.TTL())
				return resp, pluginForward, e
			}
		}
		return resp, pluginForward, nil
	}
	if err != nil && b.Errors {
		s.reportError(b, req, err)
	}
	if err != nil && b.Debug {
		s.debugDump(req, err)
	}
	if stale != nil {
		if m, serr := stale.Msg(0); serr == nil {
			b.Cache.ServedStale()
			return m, pluginCache, nil
		}
	}
	if err != nil {
		// No plugin wrote a reply: the server sends the error (CoreDNS's
		// plugin label "").
		return errReply(req, failureRcode(err)), pluginNone, nil
	}
	if b.Cache != nil {
		_ = b.Cache.Set(key, resp) // a SERVFAIL, cached briefly
	}
	return resp, pluginForward, nil
}

// failureRcode is the rcode of the reply to a query whose forwarding
// failed with err: REFUSED when max_concurrent queries were already in
// flight (as CoreDNS's forward plugin, so that clients try another server
// rather than treat the name as broken), SERVFAIL otherwise.
func failureRcode(err error) int {
	if errors.Is(err, forward.ErrMaxConcurrent) {
		return dns.RcodeRefused
	}
	return dns.RcodeServerFailure
}

// exchange asks b's upstreams. The forwarder builds the upstream query
// itself (random ID, the client's RD, CD and DO bits, an EDNS0 buffer large
// enough that most answers are whole) and answers with req's ID and
// question.
func (s *Server) exchange(ctx context.Context, b *Block, req *dns.Msg) (*dns.Msg, error) {
	if s.opts.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, s.opts.Timeout)
		defer cancel()
	}
	resp, err := b.Forward.Exchange(ctx, req)
	if err != nil {
		return nil, err
	}
	if resp == nil {
		return nil, errNoRoute
	}
	return resp, nil
}

// msgKey is dnswire.AppendKey for an unpacked query.
func msgKey(req *dns.Msg) []byte {
	return appendMsgKey(make([]byte, 0, dnswire.MaxKeyLen), req)
}

// appendMsgKey is msgKey into dst's spare capacity, which must hold
// dnswire.MaxKeyLen bytes.
func appendMsgKey(dst []byte, req *dns.Msg) []byte {
	q := req.Question[0]
	buf := dst[:256]
	n, err := dns.PackDomainName(q.Name, buf, 0, nil, false)
	if err != nil {
		n, _ = dns.PackDomainName(".", buf, 0, nil, false)
	}
	key := buf[:n]
	for i, c := range key {
		if 'A' <= c && c <= 'Z' {
			key[i] = c + 'a' - 'A'
		}
	}
	var bits byte
	if opt := req.IsEdns0(); opt != nil && opt.Do() {
		bits |= 1
	}
	if req.CheckingDisabled {
		bits |= 2
	}
	if req.RecursionDesired {
		bits |= 4
	}
	return append(key, byte(q.Qtype>>8), byte(q.Qtype), byte(q.Qclass>>8), byte(q.Qclass), bits)
}

// errReply is an empty reply to req with rcode, as CoreDNS's server
// writes it (no RA bit).
func errReply(req *dns.Msg, rcode int) *dns.Msg {
	m := new(dns.Msg)
	m.SetRcode(req, rcode)
	return m
}

// refuse answers a query that no server block serves (or of a class other
// than IN) with REFUSED, counted under CoreDNS's zone "dropped".
func (s *Server) refuse(zones *zoneMap, req *dns.Msg, pkt []byte, tcp, v6 bool, start time.Time) []byte {
	out := pack(errReply(req, dns.RcodeRefused), req, tcp)
	if zones != nil && zones.dropped != nil {
		opt := req.IsEdns0()
		zones.dropped.observeAll(tcp, v6, req.Question[0].Qtype, opt != nil && opt.Do(), dns.RcodeRefused, pluginNone, len(pkt), len(out), time.Since(start))
	}
	return out
}

// badEDNS reports a query whose EDNS is malformed (RFC 6891 section
// 6.1.1): more than one OPT record, an OPT record outside the additional
// section, or one whose owner is not the root. It is answered FORMERR.
func badEDNS(req *dns.Msg) bool {
	n := 0
	for _, rr := range req.Extra {
		if h := rr.Header(); h.Rrtype == dns.TypeOPT {
			if n++; n > 1 || h.Name != "." {
				return true
			}
		}
	}
	for _, sec := range [2][]dns.RR{req.Answer, req.Ns} {
		for _, rr := range sec {
			if rr.Header().Rrtype == dns.TypeOPT {
				return true
			}
		}
	}
	return false
}

// formErr answers a message that does not unpack with FORMERR and an empty
// body, when its header is readable; otherwise it is dropped.
func formErr(pkt []byte) []byte { return headerReply(pkt, dns.RcodeFormatError) }

// headerReply is a bare header answering pkt with rcode, as miekg/dns's
// server writes it for a rejected query: the query's ID, opcode and RD,
// AD and CD bits, QR set, no sections. A response or a short message gets
// nil (dropped).
func headerReply(pkt []byte, rcode int) []byte {
	if len(pkt) < dnswire.HeaderLen || dnswire.Flags(pkt)&dnswire.FlagQR != 0 {
		return nil
	}
	out := make([]byte, dnswire.HeaderLen)
	copy(out, pkt[:2])
	flags := dnswire.Flags(pkt)&(0x7800|dnswire.FlagRD|dnswire.FlagAD|dnswire.FlagCD) | dnswire.FlagQR | uint16(rcode)
	binary.BigEndian.PutUint16(out[2:], flags)
	return out
}

// pack turns resp into the reply to req: req's ID, question (with its
// case) and RD bit, an OPT record only when req had one, truncated to the
// client's UDP size with TC set. pack changes resp: every caller passes a
// message of its own (an upstream's answer, which the forwarder copies when
// it is shared, one unpacked from the cache, or an error reply), so it is
// not copied (4 allocations less per miss).
func pack(resp, req *dns.Msg, tcp bool) []byte {
	m := resp
	m.Id = req.Id
	m.Response = true
	m.Opcode = req.Opcode
	m.RecursionDesired = req.RecursionDesired
	m.CheckingDisabled = req.CheckingDisabled
	if len(req.Question) > 0 {
		m.Question = []dns.Question{req.Question[0]}
	}
	extra := m.Extra[:0]
	var ede []dns.EDNS0 // extended errors (template's ederror) are kept
	for _, rr := range m.Extra {
		if opt, ok := rr.(*dns.OPT); ok {
			for _, o := range opt.Option {
				if o.Option() == dns.EDNS0EDE {
					ede = append(ede, o)
				}
			}
			continue
		}
		extra = append(extra, rr)
	}
	m.Extra = extra
	size := dnswire.MinUDPSize
	if opt := req.IsEdns0(); opt != nil {
		o := new(dns.OPT)
		o.Hdr.Name = "."
		o.Hdr.Rrtype = dns.TypeOPT
		o.SetUDPSize(EDNSSize)
		o.SetDo(opt.Do())
		o.Option = ede
		if resp.Rcode > 0xf {
			o.SetExtendedRcode(uint16(resp.Rcode))
		}
		m.Extra = append(m.Extra, o)
		size = min(max(size, int(opt.UDPSize())), outBufSize)
	}
	if tcp {
		size = dns.MaxMsgSize
	}
	m.Truncate(size)
	m.Compress = true
	out, err := m.Pack()
	if err != nil {
		return nil
	}
	return out
}
