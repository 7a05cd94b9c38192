// Package cache is the agent's DNS cache: packed answers keyed by the
// lower-cased question name, type, class and the DO, CD and RD bits, in a
// success and a denial table with CoreDNS's capacities, TTL caps, minimum
// TTLs, negative TTLs from the SOA (RFC 2308), short SERVFAIL caching,
// prefetching of popular entries and serve-stale. Tables are sharded so
// that every core reads them without contention, and bounded: a full shard
// evicts an entry before it takes a new one.
package cache

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/maphash"
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/nodelocaldns/nodelocaldns/agent/corefile"
	"github.com/nodelocaldns/nodelocaldns/agent/dnswire"
)

const (
	// ServfailTTL is how long a SERVFAIL answer is cached by default (the
	// servfail option of corefile.Cache sets it).
	ServfailTTL = 5 * time.Second
	// defaultDenialTTL is the TTL of a negative answer without a SOA.
	defaultDenialTTL = 5 * time.Second
	// referralTTL is the TTL of a referral (CoreDNS's MinimalDefaultTTL).
	referralTTL = 5 * time.Second
	shardCount  = 32
	success     = 0
	denial      = 1
)

// ErrNotCacheable is returned by Set for answers the cache does not keep.
var ErrNotCacheable = errors.New("cache: answer not cacheable")

// ErrTooLarge is returned by Set for an answer longer than MaxEntrySize.
var ErrTooLarge = errors.New("cache: answer larger than the maximum entry size")

// Byte bounds of a cache (see Options).
const (
	// DefaultMaxBytes bounds the bytes of one cache's entries when
	// Options.MaxBytes is 0.
	DefaultMaxBytes = 8 << 20
	// DefaultMaxEntrySize is the longest answer cached when
	// Options.MaxEntrySize is 0 (about 1,000 A records of a headless
	// Service with compression); longer ones are answered, not cached.
	DefaultMaxEntrySize = 16 << 10
	// entryOverhead is what an entry costs besides its data: the Entry
	// struct and its map slot.
	entryOverhead = 160
)

// Options configure a Cache.
type Options struct {
	// Server and Zones label the metrics (CoreDNS's server and zones).
	Server string
	Zones  []string
	// Metrics is shared by all caches; nil disables metrics.
	Metrics *Metrics
	// Now returns the current time; nil means time.Now.
	Now func() time.Time
	// MaxBytes bounds the memory of the entries (both tables): a store
	// that goes over it evicts entries until it fits (DefaultMaxBytes).
	MaxBytes int64
	// MaxEntrySize is the longest packed answer stored
	// (DefaultMaxEntrySize).
	MaxEntrySize int
}

// Cache holds packed answers. It is safe for concurrent use.
type Cache struct {
	cfg    corefile.Cache
	tables [2]table
	m      *handles
	now    func() time.Time
	fake   bool // now is not time.Now

	maxBytes int64
	maxEntry int
	// bytes is the memory of the entries of both tables.
	bytes atomic.Int64
}

// New returns an empty cache configured by cfg.
func New(cfg corefile.Cache, opts Options) *Cache {
	if cfg.SuccessCap <= 0 {
		cfg.SuccessCap = 9984
	}
	if cfg.DenialCap <= 0 {
		cfg.DenialCap = 9984
	}
	c := &Cache{cfg: cfg, now: opts.Now, fake: opts.Now != nil, maxBytes: opts.MaxBytes, maxEntry: opts.MaxEntrySize}
	if c.maxBytes <= 0 {
		c.maxBytes = DefaultMaxBytes
	}
	if c.maxEntry <= 0 {
		c.maxEntry = DefaultMaxEntrySize
	}
	if c.now == nil {
		c.now = time.Now
	}
	m := opts.Metrics
	if m == nil {
		m, _ = NewMetrics(nil)
	}
	c.m = m.handles(opts.Server, strings.Join(opts.Zones, ","))
	c.tables[success].init(cfg.SuccessCap, c.m.entries[success], c.m.evictions[success])
	c.tables[denial].init(cfg.DenialCap, c.m.entries[denial], c.m.evictions[denial])
	return c
}

// Now returns the cache's clock in Unix nanoseconds.
func (c *Cache) Now() int64 { return c.now().UnixNano() }

// NowOr returns wall, a time.Now the caller already took in Unix
// nanoseconds, unless the cache runs on a clock of its own (tests).
func (c *Cache) NowOr(wall int64) int64 {
	if c.fake {
		return c.Now()
	}
	return wall
}

// Config returns the cache's configuration.
func (c *Cache) Config() corefile.Cache { return c.cfg }

// Bytes returns the memory the entries hold, as the byte bound counts it.
func (c *Cache) Bytes() int64 { return c.bytes.Load() }

// Len returns the number of success and denial entries.
func (c *Cache) Len() (succ, den int) {
	return c.tables[success].len(), c.tables[denial].len()
}

// Release removes the cache's entries from the entries gauge, for a cache
// that a new configuration replaced.
func (c *Cache) Release() {
	for i := range c.tables {
		c.tables[i].entries.Sub(float64(c.tables[i].len()))
	}
}

// Get looks key up at time now (Unix nanoseconds). A fresh entry comes
// back with its remaining TTL and fresh set; an expired entry that may still
// be served stale comes back with fresh false; otherwise e is nil. Get
// counts requests, hits and misses, and does not allocate.
func (c *Cache) Get(key []byte, now int64) (e *Entry, ttl uint32, fresh bool) {
	c.m.requests.Inc()
	for i := range c.tables {
		e = c.tables[i].get(key)
		if e == nil {
			continue
		}
		if now < e.expires {
			c.m.hits[i].Inc()
			return e, uint32((e.expires - now + int64(time.Second) - 1) / int64(time.Second)), true
		}
		c.m.misses.Inc()
		if now < e.staleUntil {
			return e, 0, false
		}
		return nil, 0, false
	}
	c.m.misses.Inc()
	return nil, 0, false
}

// Hit is Get for the wire-format hit path: it returns only fresh entries
// and counts nothing, so that the caller can count hits in batches (see
// HitCounters); misses are counted by the Get of the miss path that
// handles them. It does not allocate.
func (c *Cache) Hit(key []byte, now int64) (e *Entry, ttl uint32, ok bool) {
	for i := range c.tables {
		e = c.tables[i].get(key)
		if e == nil {
			continue
		}
		if now < e.expires {
			return e, uint32((e.expires - now + int64(time.Second) - 1) / int64(time.Second)), true
		}
		return nil, 0, false
	}
	return nil, 0, false
}

// HitCounters returns the request and hit counters a hit on e counts in
// (pointers, so that callers batching counts compare them cheaply).
func (c *Cache) HitCounters(e *Entry) (requests, hits *prometheus.Counter) {
	return &c.m.requests, &c.m.hits[e.kind]
}

// CountHit counts a hit on e at once.
func (c *Cache) CountHit(e *Entry) {
	c.m.requests.Inc()
	c.m.hits[e.kind].Inc()
}

// ServedStale counts an answer served from an expired entry.
func (c *Cache) ServedStale() { c.m.servedStale.Inc() }

// Prefetched counts a prefetch.
func (c *Cache) Prefetched() { c.m.prefetch.Inc() }

// ShouldPrefetch records a hit on e with ttl seconds left and reports
// whether e should be refreshed now: it is popular (Amount hits within
// Duration of each other) and only Percentage of its TTL is left. It reports true once
// per entry.
func (c *Cache) ShouldPrefetch(e *Entry, ttl uint32, now int64) bool {
	p := c.cfg.Prefetch
	if p == nil {
		return false
	}
	// As CoreDNS's freq: a hit within Duration of the previous one counts
	// up, a later one starts counting again.
	last := e.lastSeen.Swap(now)
	var hits int32
	if now-last > int64(p.Duration) {
		e.hits.Store(1)
		hits = 1
	} else {
		hits = e.hits.Add(1)
	}
	if int(hits) < p.Amount {
		return false
	}
	threshold := uint32(math.Ceil(float64(p.Percentage) / 100 * float64(e.ttl)))
	if ttl > threshold {
		return false
	}
	return e.prefetching.CompareAndSwap(false, true)
}

// Set stores the answer m to the query with the given key (made by
// dnswire.AppendKey). It returns ErrNotCacheable for answers the cache
// does not keep (truncated, REFUSED, FORMERR, extended rcodes, ...).
func (c *Cache) Set(key []byte, m *dns.Msg) error {
	_, err := c.Store(key, m)
	return err
}

// Store is Set that also returns the new entry, whose TTL is the one every
// record of the answer to this miss should carry, as CoreDNS's cache
// writes it; the entry's Reply builds that answer without packing it again.
func (c *Cache) Store(key []byte, m *dns.Msg) (*Entry, error) {
	kind, ttl, err := c.classify(m)
	if err != nil {
		return nil, err
	}
	if c.disabled(kind, m.Question[0].Name) {
		return nil, ErrNotCacheable
	}
	e, k, err := newEntry(m, key)
	if err != nil {
		return nil, err
	}
	if int(e.msgLen) > c.maxEntry {
		return nil, ErrTooLarge
	}
	now := c.Now()
	e.ttl = uint32(ttl / time.Second)
	e.kind = uint8(kind)
	e.expires = now + int64(ttl)
	e.staleUntil = e.expires + int64(c.cfg.ServeStale)
	e.lastSeen.Store(now)
	delta := c.tables[1-kind].del(k)
	delta += c.tables[kind].set(k, e, now)
	if c.bytes.Add(delta) > c.maxBytes {
		c.shrink(k, now)
	}
	return e, nil
}

// shrink evicts entries, starting in key's shards, until the entries fit
// in maxBytes again (or both tables are empty).
func (c *Cache) shrink(key string, now int64) {
	for i := range c.tables {
		t := &c.tables[(denial+i)%2] // denials first: cheaper to lose
		first := maphash.String(t.seed, key) % shardCount
		for j := range uint64(shardCount) {
			s := &t.shards[(first+j)%shardCount]
			for c.bytes.Load() > c.maxBytes {
				freed, ok := t.evictOne(s, now)
				if !ok {
					break
				}
				c.bytes.Add(-freed)
			}
			if c.bytes.Load() <= c.maxBytes {
				return
			}
		}
	}
}

// CapTTLs sets the TTL of every record of m but OPT to ttl.
func CapTTLs(m *dns.Msg, ttl uint32) {
	for _, s := range [][]dns.RR{m.Answer, m.Ns, m.Extra} {
		for _, rr := range s {
			if rr.Header().Rrtype != dns.TypeOPT {
				rr.Header().Ttl = ttl
			}
		}
	}
}

// classify returns which table m belongs in and for how long.
func (c *Cache) classify(m *dns.Msg) (kind int, ttl time.Duration, err error) {
	if m.Truncated || len(m.Question) != 1 {
		return 0, 0, ErrNotCacheable
	}
	if opt := m.IsEdns0(); opt != nil && opt.ExtendedRcode() > 0xf {
		return 0, 0, ErrNotCacheable
	}
	switch {
	case m.Rcode == dns.RcodeSuccess && len(m.Answer) > 0:
		ttl = minTTL(m.Answer, m.Ns, m.Extra)
		return success, clamp(ttl, c.cfg.SuccessMinTTL, c.cfg.SuccessTTL), nil
	case m.Rcode == dns.RcodeSuccess && len(m.Answer) == 0 && !hasSOA(m.Ns) && len(m.Ns) > 0:
		// A referral: cached like a positive answer (CoreDNS's Delegation)
		// but, as CoreDNS's dnsutil.MinimalTTL, for 5s whatever the
		// records' TTLs (then the block's minimum and cap).
		return success, clamp(referralTTL, c.cfg.SuccessMinTTL, c.cfg.SuccessTTL), nil
	case m.Rcode == dns.RcodeSuccess && len(m.Answer) == 0 && !hasSOA(m.Ns):
		// NOERROR without records or a SOA (hosts' and template's empty
		// answers): CoreDNS's NoError, a positive entry, for the smallest
		// TTL of the additional records or 5s without any.
		ttl = minTTL(m.Extra)
		if ttl == defaultDenialTTL && len(withoutOPT(m.Extra)) == 0 {
			ttl = referralTTL
		}
		return success, clamp(ttl, c.cfg.SuccessMinTTL, c.cfg.SuccessTTL), nil
	case m.Rcode == dns.RcodeSuccess || m.Rcode == dns.RcodeNameError:
		return denial, clamp(negativeTTL(m.Ns), c.cfg.DenialMinTTL, c.cfg.DenialTTL), nil
	case m.Rcode == dns.RcodeServerFailure && c.cfg.ServfailTTL > 0:
		// The servfail option's TTL (0 turns it off), as CoreDNS's failttl.
		return denial, c.cfg.ServfailTTL, nil
	}
	return 0, 0, ErrNotCacheable
}

// clamp applies the minimum TTL and then the cap.
func clamp(ttl, lo, hi time.Duration) time.Duration {
	if ttl < lo {
		ttl = lo
	}
	if hi > 0 && ttl > hi {
		ttl = hi
	}
	if ttl < time.Second {
		ttl = time.Second
	}
	return ttl
}

// minTTL is the smallest TTL of the records (OPT excluded).
func minTTL(sections ...[]dns.RR) time.Duration {
	low := uint32(math.MaxUint32)
	for _, s := range sections {
		for _, rr := range s {
			if rr.Header().Rrtype == dns.TypeOPT {
				continue
			}
			low = min(low, rr.Header().Ttl)
		}
	}
	if low == math.MaxUint32 {
		return defaultDenialTTL
	}
	return time.Duration(low) * time.Second
}

// negativeTTL is the RFC 2308 TTL of a negative answer: the smaller of the
// SOA's TTL and its MINIMUM field.
func negativeTTL(ns []dns.RR) time.Duration {
	for _, rr := range ns {
		if soa, ok := rr.(*dns.SOA); ok {
			return time.Duration(min(soa.Hdr.Ttl, soa.Minttl)) * time.Second
		}
	}
	return defaultDenialTTL
}

// withoutOPT returns rrs without OPT records.
func withoutOPT(rrs []dns.RR) []dns.RR {
	var out []dns.RR
	for _, rr := range rrs {
		if rr.Header().Rrtype != dns.TypeOPT {
			out = append(out, rr)
		}
	}
	return out
}

func hasSOA(ns []dns.RR) bool {
	for _, rr := range ns {
		if rr.Header().Rrtype == dns.TypeSOA {
			return true
		}
	}
	return false
}

// Entry is one cached answer, packed without its OPT record. Entries are
// immutable once stored, except for the prefetch bookkeeping.
//
// An entry is two objects: this struct and data, which holds the packed
// answer, then the cache key (the table's map key points into it), then
// the offsets of the answer's TTL fields (2 bytes each, native order).
// With 10k cached names that is about 1 MB less than separate objects, and
// fewer objects for the garbage collector to mark.
type Entry struct {
	data       []byte
	expires    int64
	staleUntil int64
	lastSeen   atomic.Int64
	ttl        uint32 // seconds, as stored
	hits       atomic.Int32
	msgLen     uint16
	offStart   uint16 // where the TTL offsets start in data
	flags      uint16
	qEnd       uint16
	kind       uint8 // success or denial

	prefetching atomic.Bool
}

// packScratch recycles the buffers answers are packed into before they are
// copied into an entry of the exact size.
var packScratch = sync.Pool{New: func() any { b := make([]byte, 4096); return &b }}

// newEntry packs m without its OPT record, finds its TTL fields and
// returns the entry with its key, a string that lives in the entry.
func newEntry(m *dns.Msg, key []byte) (*Entry, string, error) {
	cp := *m
	cp.Extra = make([]dns.RR, 0, len(m.Extra))
	for _, rr := range m.Extra {
		if rr.Header().Rrtype != dns.TypeOPT {
			cp.Extra = append(cp.Extra, rr)
		}
	}
	cp.Compress = true
	sp := packScratch.Get().(*[]byte)
	defer packScratch.Put(sp)
	buf, err := cp.PackBuffer(*sp)
	if err != nil {
		return nil, "", fmt.Errorf("cache: pack answer: %w", err)
	}
	if cap(buf) > cap(*sp) && cap(buf) <= 1<<16 {
		*sp = buf[:cap(buf)] // keep the larger buffer
	}
	var offs [32]uint16
	lay, err := dnswire.WalkInto(buf, offs[:0])
	if err != nil {
		return nil, "", fmt.Errorf("cache: walk packed answer: %w", err)
	}
	n, offStart := len(buf), len(buf)+len(key)
	if offStart+2*len(lay.TTLOffsets) > 0xffff {
		return nil, "", fmt.Errorf("cache: answer too large: %d bytes", offStart)
	}
	data := make([]byte, offStart+2*len(lay.TTLOffsets))
	copy(data, buf)
	copy(data[n:], key)
	for i, o := range lay.TTLOffsets {
		binary.NativeEndian.PutUint16(data[offStart+2*i:], o)
	}
	e := &Entry{data: data, msgLen: uint16(n), offStart: uint16(offStart), qEnd: uint16(lay.QEnd), flags: dnswire.Flags(buf)}
	if len(key) == 0 {
		return e, "", nil
	}
	return e, unsafe.String(&data[n], len(key)), nil
}

// cost is the memory the entry holds, as the byte bound counts it.
func (e *Entry) cost() int64 { return int64(len(e.data)) + entryOverhead }

// msg is the packed answer.
func (e *Entry) msg() []byte { return e.data[:e.msgLen:e.msgLen] }

// setTTLs writes ttl into every TTL field of the copy of the answer in msg.
func (e *Entry) setTTLs(msg []byte, ttl uint32) {
	offs := e.data[e.offStart:]
	for i := 0; i+1 < len(offs); i += 2 {
		binary.BigEndian.PutUint32(msg[binary.NativeEndian.Uint16(offs[i:]):], ttl)
	}
}

// Msg unpacks the entry with every TTL set to ttl, as a cache hit: the AA
// bit is set, as CoreDNS's cache does.
func (e *Entry) Msg(ttl uint32) (*dns.Msg, error) {
	m := new(dns.Msg)
	if err := m.Unpack(e.msg()); err != nil {
		return nil, fmt.Errorf("cache: unpack entry: %w", err)
	}
	for _, s := range [][]dns.RR{m.Answer, m.Ns, m.Extra} {
		for _, rr := range s {
			rr.Header().Ttl = ttl
		}
	}
	m.Authoritative = true
	return m, nil
}

// TTL returns the TTL the entry was stored with (seconds).
func (e *Entry) TTL() uint32 { return e.ttl }

// Rcode returns the entry's response code.
func (e *Entry) Rcode() int { return dnswire.Rcode(e.flags) }

// Size returns the length of the reply Reply builds for a query without
// EDNS.
func (e *Entry) Size() int { return int(e.msgLen) }

// Reply appends to dst the answer to query (parsed as q), with the query's
// ID, question case, RD and CD bits, every TTL set to ttl and, when the
// query had EDNS, an OPT record advertising ednsSize. An answer longer than
// limit is replaced by the header and question with TC set. Reply does not
// allocate when dst has room.
//
// The AA bit follows CoreDNS: a cache hit (hit) sets it, for stub
// resolvers that drop non-authoritative answers; the answer to a miss
// keeps the upstream's.
func (e *Entry) Reply(dst, query []byte, q *dnswire.Query, ttl uint32, limit int, ednsSize uint16, hit bool) []byte {
	need := int(e.msgLen)
	if q.EDNS {
		need += dnswire.OPTLen
	}
	start := len(dst)
	flags := e.flags&^(dnswire.FlagTC|dnswire.FlagRD|dnswire.FlagCD) | dnswire.FlagQR |
		q.Flags&(dnswire.FlagRD|dnswire.FlagCD)
	if hit {
		flags |= dnswire.FlagAA
	}
	if need > limit {
		room := limit
		if q.EDNS {
			room -= dnswire.OPTLen
		}
		var dropped bool
		dst, dropped = e.appendTruncated(dst, ttl, room)
		if dropped {
			flags |= dnswire.FlagTC
		}
	} else {
		dst = append(dst, e.msg()...)
		e.setTTLs(dst[start:], ttl)
	}
	out := dst[start:]
	dnswire.SetID(out, q.ID)
	dnswire.SetFlags(out, flags)
	copy(out[dnswire.HeaderLen:q.NameEnd], query[dnswire.HeaderLen:q.NameEnd])
	if q.EDNS {
		dst = dnswire.AppendOPT(dst, ednsSize, q.DO)
		dnswire.SetCount(dst[start:], 3, dnswire.Count(dst[start:], 3)+1)
	}
	return dst
}

// appendTruncated appends the answer cut to at most room bytes at a record
// boundary, as miekg/dns's Msg.Truncate (CoreDNS's scrub) does: as many
// answer records as fit, then authority, then additional ones, with the
// section counts and TTLs set. dropped reports that answer or authority
// records were left out (the reply then gets TC; additional records may go
// silently). Clients without TCP fallback (musl before 1.2.4) still get the
// records that fit. Compression pointers only point backwards, so a prefix
// of the packed answer is a valid message. Only truncated replies take
// this path.
func (e *Entry) appendTruncated(dst []byte, ttl uint32, room int) ([]byte, bool) {
	msg := e.msg()
	end := int(e.qEnd)
	var kept [3]int
	var dropped bool
walk:
	for sec := range 3 {
		n := dnswire.Count(msg, sec+1)
		for range n {
			next, err := skipRR(msg, end)
			if err != nil || next > room {
				dropped = sec < 2
				break walk
			}
			end = next
			kept[sec]++
		}
	}
	start := len(dst)
	dst = append(dst, msg[:end]...)
	out := dst[start:]
	offs := e.data[e.offStart:]
	for i := 0; i+1 < len(offs); i += 2 {
		if o := int(binary.NativeEndian.Uint16(offs[i:])); o+4 <= end {
			binary.BigEndian.PutUint32(out[o:], ttl)
		}
	}
	for sec := range 3 {
		dnswire.SetCount(out, sec+1, kept[sec])
	}
	return dst, dropped
}

// skipRR returns the offset after the resource record at off.
func skipRR(msg []byte, off int) (int, error) {
	off, err := dnswire.SkipName(msg, off)
	if err != nil {
		return 0, err
	}
	if off+10 > len(msg) {
		return 0, dnswire.ErrShort
	}
	end := off + 10 + int(binary.BigEndian.Uint16(msg[off+8:]))
	if end > len(msg) {
		return 0, dnswire.ErrShort
	}
	return end, nil
}

// table is one sharded, bounded map.
type table struct {
	seed      maphash.Seed
	shards    [shardCount]shard
	entries   prometheus.Gauge
	evictions prometheus.Counter
}

type shard struct {
	mu  sync.RWMutex
	m   map[string]*Entry
	cap int
}

func (t *table) init(capacity int, entries prometheus.Gauge, evictions prometheus.Counter) {
	t.entries, t.evictions = entries, evictions
	t.seed = maphash.MakeSeed()
	per := (capacity + shardCount - 1) / shardCount
	for i := range t.shards {
		t.shards[i].m = make(map[string]*Entry)
		t.shards[i].cap = per
	}
}

func (t *table) shard(key []byte) *shard {
	return &t.shards[maphash.Bytes(t.seed, key)%shardCount]
}

func (t *table) get(key []byte) *Entry {
	s := t.shard(key)
	s.mu.RLock()
	e := s.m[string(key)]
	s.mu.RUnlock()
	return e
}

// shardOf is shard for a string key.
func (t *table) shardOf(key string) *shard {
	return &t.shards[maphash.String(t.seed, key)%shardCount]
}

// del removes key and returns the change of the entries' bytes.
func (t *table) del(key string) int64 {
	s := t.shardOf(key)
	s.mu.Lock()
	defer s.mu.Unlock()
	if old, ok := s.m[key]; ok {
		delete(s.m, key)
		t.entries.Dec()
		return -old.cost()
	}
	return 0
}

// set stores e under key and returns the change of the entries' bytes.
func (t *table) set(key string, e *Entry, now int64) int64 {
	s := t.shardOf(key)
	s.mu.Lock()
	defer s.mu.Unlock()
	delta := e.cost()
	if old, ok := s.m[key]; ok {
		delta -= old.cost()
	} else if len(s.m) >= s.cap {
		delta -= s.evict(now)
		t.evictions.Inc()
	} else {
		t.entries.Inc()
	}
	s.m[key] = e
	return delta
}

// evictOne evicts one entry of s for the byte bound; false when s is
// empty.
func (t *table) evictOne(s *shard, now int64) (int64, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.m) == 0 {
		return 0, false
	}
	freed := s.evict(now)
	t.entries.Dec()
	t.evictions.Inc()
	return freed, true
}

// evict removes one entry, an expired one among a few sampled, else a
// random one (map iteration starts at a random place), and returns its
// cost.
func (s *shard) evict(now int64) int64 {
	var victim string
	n := 0
	for k, e := range s.m {
		if n == 0 {
			victim = k
		}
		if now >= e.staleUntil {
			victim = k
			break
		}
		if n++; n >= 8 {
			break
		}
	}
	old, ok := s.m[victim]
	if !ok {
		return 0
	}
	delete(s.m, victim)
	return old.cost()
}

func (t *table) len() int {
	n := 0
	for i := range t.shards {
		s := &t.shards[i]
		s.mu.RLock()
		n += len(s.m)
		s.mu.RUnlock()
	}
	return n
}
