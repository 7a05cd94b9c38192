package server

import (
	"context"
	"encoding/binary"
	"errors"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"
	"unsafe"

	"github.com/miekg/dns"
	"golang.org/x/sys/unix"

	"github.com/nodelocaldns/nodelocaldns/agent/cache"
	"github.com/nodelocaldns/nodelocaldns/agent/dnswire"
	"github.com/nodelocaldns/nodelocaldns/agent/forward"
)

// job is one query for the miss path: a miss, a query the fast path does
// not handle, or a prefetch.
type job struct {
	pkt      []byte
	out      *replyWriter // nil for a prefetch
	name     unix.RawSockaddrInet6
	namelen  uint32
	listener netip.AddrPort
	v6       bool
	start    time.Time
	prefetch *route
	// buf holds pkt when it fits.
	buf [512]byte
}

// jobs recycles the miss path's jobs (one per miss).
var jobs = sync.Pool{New: func() any { return new(job) }}

// sockaddrToAddrPort decodes a sockaddr_in or sockaddr_in6.
func sockaddrToAddrPort(sa *unix.RawSockaddrInet6, l uint32) netip.AddrPort {
	b := (*[unix.SizeofSockaddrInet6]byte)(unsafe.Pointer(sa))
	port := binary.BigEndian.Uint16(b[2:4])
	switch {
	case sa.Family == unix.AF_INET && l >= unix.SizeofSockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4([4]byte(b[4:8])), port)
	case sa.Family == unix.AF_INET6 && l >= unix.SizeofSockaddrInet6:
		return netip.AddrPortFrom(netip.AddrFrom16([16]byte(b[8:24])).Unmap(), port)
	}
	return netip.AddrPort{}
}

// release returns j to the pool.
func (j *job) release() {
	*j = job{pkt: j.buf[:0]}
	jobs.Put(j)
}

// enqueue hands a copy of pkt to the miss path; when MaxInflight queries
// are already there it is dropped (the client retries, as with any
// overloaded server).
func (s *Server) enqueue(pkt []byte, out *replyWriter, name *unix.RawSockaddrInet6, namelen uint32, listener netip.AddrPort, v6 bool, start time.Time) {
	j := jobs.Get().(*job)
	j.pkt = append(j.buf[:0], pkt...)
	j.out, j.name, j.namelen, j.listener, j.v6, j.start = out, *name, namelen, listener, v6, start
	s.spawn(j)
}

// prefetch starts a refresh of the cached answer to pkt.
func (s *Server) prefetch(pkt []byte, rt *route) {
	s.spawn(&job{pkt: append([]byte(nil), pkt...), prefetch: rt, start: time.Now()})
}

// A miss worker waits workerIdle for another job before it exits, so that
// an idle agent holds no workers, and at most maxIdleWorkers wait: a burst
// of misses leaves few grown stacks behind (each holds 8-32 KiB).
const (
	workerIdle     = 10 * time.Second
	maxIdleWorkers = 16
)

// spawn hands j to an idle miss worker, or to a new one, when a slot is
// free. Workers outlive their job: a goroutine per miss paid for growing
// its stack on every query (miekg/dns packing runs deep; 15% of the CPU
// under a miss flood), a worker grows it once. Every job gets a worker of
// its own, so a query never waits behind another's upstream.
func (s *Server) spawn(j *job) {
	select {
	case <-s.quit: // shut down
		return
	case s.slots <- struct{}{}:
	default:
		return
	}
	s.inflight.Add(1)
	for {
		n := s.idle.Load()
		if n == 0 {
			s.workers.Add(1)
			go s.worker(j)
			return
		}
		if s.idle.CompareAndSwap(n, n-1) { // claimed an idle worker
			s.jobs <- j // never blocks: slots bound the queued jobs
			return
		}
	}
}

// worker runs j, then waits for more jobs until it has been idle for
// workerIdle or the server shuts down. s.idle counts the waiting workers
// that no spawn has claimed yet: a worker leaves only by un-counting
// itself, so a claimed job always finds a worker.
func (s *Server) worker(j *job) {
	defer s.workers.Done()
	t := time.NewTimer(workerIdle)
	defer t.Stop()
	for ok := true; ok; j, ok = s.await(t) {
		s.run(j)
		j.release()
		<-s.slots
		s.inflight.Done()
		if s.idle.Load() >= maxIdleWorkers {
			return
		}
	}
}

// await waits as an idle worker for the next job; false means exit.
func (s *Server) await(t *time.Timer) (*job, bool) {
	s.idle.Add(1)
	t.Reset(workerIdle)
	select {
	case j := <-s.jobs:
		return j, true
	case <-s.quit:
		return nil, false
	case <-t.C:
	}
	for {
		n := s.idle.Load()
		if n == 0 { // claimed meanwhile: its job is coming
			select {
			case j := <-s.jobs:
				return j, true
			case <-s.quit:
				return nil, false
			}
		}
		if s.idle.CompareAndSwap(n, n-1) {
			return nil, false
		}
	}
}

// run answers one job.
func (s *Server) run(j *job) {
	if j.prefetch != nil {
		s.refresh(j)
		return
	}
	zones := s.table.Load().zonesFor(j.listener)
	resp := s.answer(s.ctx, j.pkt, zones, false, j.v6, j.start, sockaddrToAddrPort(&j.name, j.namelen))
	if resp != nil {
		j.out.send(resp, &j.name, j.namelen)
	}
}

// refresh re-asks the upstream for a popular entry about to expire.
func (s *Server) refresh(j *job) {
	req := new(dns.Msg)
	if err := req.Unpack(j.pkt); err != nil || len(req.Question) != 1 {
		return
	}
	b := j.prefetch.block
	if b.Forward == nil || b.Cache == nil {
		return
	}
	resp, err := s.exchange(s.ctx, b, req)
	if err != nil {
		return
	}
	b.Cache.Prefetched()
	_ = b.Cache.Set(msgKey(req), resp)
}

// answer handles one query with miekg/dns: cache, forwarding, stale answers,
// and every error reply. It returns the packed reply, or nil to drop.
func (s *Server) answer(ctx context.Context, pkt []byte, zones *zoneMap, tcp, v6 bool, start time.Time, client netip.AddrPort) []byte {
	req := new(dns.Msg)
	if err := req.Unpack(pkt); err != nil {
		return formErr(pkt)
	}
	if req.Response {
		return nil
	}
	if req.Opcode != dns.OpcodeQuery {
		return pack(errReply(req, dns.RcodeNotImplemented), req, tcp)
	}
	if len(req.Question) != 1 {
		return pack(errReply(req, dns.RcodeFormatError), req, tcp)
	}
	if opt := req.IsEdns0(); opt != nil && opt.Version() != 0 {
		r := errReply(req, dns.RcodeBadVers)
		return pack(r, req, tcp)
	}
	var kb [dnswire.MaxKeyLen]byte
	key := appendMsgKey(kb[:0], req)
	rt := zones.lookup(dnswire.KeyName(key))
	if rt == nil {
		return pack(errReply(req, dns.RcodeRefused), req, tcp)
	}
	ti := typeIndex(req.Question[0].Qtype)
	(*rt.m.request(tcp, v6, ti)).Inc()
	resp, plugin, stored := s.resolve(ctx, rt, req, key)
	(*rt.m.response(resp.Rcode, plugin)).Inc()
	rt.m.observer(ti).observeN(time.Since(start).Seconds(), 1)
	var out []byte
	if stored != nil {
		out = entryReply(stored, pkt, tcp)
	}
	if out == nil {
		out = pack(resp, req, tcp)
	}
	if rt.block.Log {
		s.logQuery(client, req, resp.Rcode, out, tcp, len(pkt), time.Since(start))
	}
	return out
}

// entryReply is the reply to pkt from the cache entry just stored for it,
// built in wire format as a cache hit's (the answer is packed once, for
// the cache), or nil when pkt does not parse as the fast path wants it.
func entryReply(e *cache.Entry, pkt []byte, tcp bool) []byte {
	var q dnswire.Query
	if err := dnswire.ParseQuery(pkt, &q); err != nil {
		return nil
	}
	limit := dns65535
	if !tcp {
		limit = q.MaxUDPSize()
	}
	return e.Reply(make([]byte, 0, min(limit, e.Size()+dnswire.OPTLen)), pkt, &q, e.TTL(), limit, EDNSSize)
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
			if m, err := e.Msg(ttl); err == nil {
				if fresh {
					return m, pluginCache, nil
				}
				stale = e
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
		s.opts.Logger.Printf("[ERROR] plugin/forward: %s %s: %v", req.Question[0].Name, dns.TypeToString[req.Question[0].Qtype], err)
	}
	if stale != nil {
		if m, serr := stale.Msg(0); serr == nil {
			b.Cache.ServedStale()
			return m, pluginCache, nil
		}
	}
	if err != nil {
		return errReply(req, failureRcode(err)), pluginForward, nil
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
	return append(key, byte(q.Qtype>>8), byte(q.Qtype), byte(q.Qclass>>8), byte(q.Qclass), bits)
}

// errReply is an empty reply to req with rcode.
func errReply(req *dns.Msg, rcode int) *dns.Msg {
	m := new(dns.Msg)
	m.SetRcode(req, rcode)
	m.RecursionAvailable = true
	return m
}

// formErr answers a message that does not unpack with FORMERR and an empty
// body, when its header is readable; otherwise it is dropped.
func formErr(pkt []byte) []byte {
	if len(pkt) < dnswire.HeaderLen || dnswire.Flags(pkt)&dnswire.FlagQR != 0 {
		return nil
	}
	out := make([]byte, dnswire.HeaderLen)
	copy(out, pkt[:2])
	flags := dnswire.Flags(pkt)&(0x7800|dnswire.FlagRD) | dnswire.FlagQR | dns.RcodeFormatError
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
	for _, rr := range m.Extra {
		if rr.Header().Rrtype != dns.TypeOPT {
			extra = append(extra, rr)
		}
	}
	m.Extra = extra
	size := dnswire.MinUDPSize
	if opt := req.IsEdns0(); opt != nil {
		o := new(dns.OPT)
		o.Hdr.Name = "."
		o.Hdr.Rrtype = dns.TypeOPT
		o.SetUDPSize(EDNSSize)
		o.SetDo(opt.Do())
		if resp.Rcode > 0xf {
			o.SetExtendedRcode(uint16(resp.Rcode))
		}
		m.Extra = append(m.Extra, o)
		size = max(size, int(opt.UDPSize()))
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

// logQuery writes one line per query in the default format of CoreDNS's
// log plugin:
//
//	[INFO] {remote}:{port} - {>id} "{type} {class} {name} {proto} {size} {>do} {>bufsize}" {rcode} {>rflags} {rsize} {duration}
//
// out is the reply as sent (nil when it was dropped).
func (s *Server) logQuery(client netip.AddrPort, req *dns.Msg, rcode int, out []byte, tcp bool, size int, d time.Duration) {
	proto := "udp"
	if tcp {
		proto = "tcp"
	}
	do, bufsize := false, dnswire.MinUDPSize
	if opt := req.IsEdns0(); opt != nil {
		do, bufsize = opt.Do(), int(opt.UDPSize())
	}
	var flags uint16
	if len(out) >= dnswire.HeaderLen {
		flags = dnswire.Flags(out)
	}
	q := req.Question[0]
	s.opts.Logger.Printf("[INFO] %s - %d \"%s %s %s %s %d %t %d\" %s %s %d %ss", client, req.Id,
		dns.TypeToString[q.Qtype], dns.ClassToString[q.Qclass], strings.ToLower(q.Name), proto, size, do, bufsize,
		dns.RcodeToString[rcode], flagString(flags), len(out), strconv.FormatFloat(d.Seconds(), 'f', -1, 64))
}

// flagString lists the header flags set in flags as CoreDNS's {>rflags}.
func flagString(flags uint16) string {
	names := [...]struct {
		bit  uint16
		name string
	}{{dnswire.FlagQR, "qr"}, {dnswire.FlagAA, "aa"}, {dnswire.FlagTC, "tc"}, {dnswire.FlagRD, "rd"},
		{dnswire.FlagRA, "ra"}, {0x0040, "z"}, {dnswire.FlagAD, "ad"}, {dnswire.FlagCD, "cd"}}
	var f []string
	for _, n := range names {
		if flags&n.bit != 0 {
			f = append(f, n.name)
		}
	}
	return strings.Join(f, ",")
}
