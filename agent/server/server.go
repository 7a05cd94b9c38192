// Package server answers DNS queries on the agent's listeners: UDP readers
// that batch reads and writes (recvmmsg/sendmmsg) and answer cache hits in
// wire format without allocating, a bounded set of goroutines that handle
// misses with miekg/dns and the block's forwarder, and TCP connections with
// pipelined queries. Queries go to the server block whose zone is the
// longest match of the question name; the table of blocks can be swapped
// at any time without dropping queries.
package server

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/nodelocaldns/nodelocaldns/agent/cache"
	"github.com/nodelocaldns/nodelocaldns/agent/corefile"
)

// Exchanger sends a query upstream and returns the answer; the forwarder
// implements it (the interface is the seam for tests).
type Exchanger interface {
	Exchange(ctx context.Context, m *dns.Msg) (*dns.Msg, error)
}

// Block is one server block: zones, port, bind addresses and its plugins.
type Block struct {
	// Zones are lower-case FQDNs ("cluster.local.", ".").
	Zones []string
	Port  int
	// Bind lists the IPs the block listens on; empty means 0.0.0.0.
	Bind []string
	// Cache may be nil (no cache plugin).
	Cache *cache.Cache
	// Forward may be nil (no forward plugin: queries are REFUSED).
	Forward Exchanger
	// Match, when set, says whether Forward handles a name (forward's
	// FROM zone and `except`); names it does not handle are REFUSED.
	Match func(name string) bool
	// Errors logs upstream failures; Log logs every query (and keeps the
	// block off the wire-format hit path).
	Errors, Log bool
	// LogRules are the log plugin's rules (NewLogRules); nil with Log
	// means every query in the common format.
	LogRules []LogRule
	// ErrorLog, when set, takes the errors plugin's messages (consolidate).
	ErrorLog *ErrorLog
	// BufSize caps the EDNS0 UDP size of queries (bufsize plugin; 0: no cap).
	BufSize int
	// Debug dumps the queries whose forwarding failed (debug plugin).
	Debug bool
	// Plugins are the block's answer-changing plugins; nil when it has
	// none (plugins.go).
	Plugins *Plugins
}

// route is one zone of a block as the server sees it.
type route struct {
	block *Block
	zone  string
	m     *routeMetrics
}

// zoneMap maps zones in lower-case wire format to routes.
type zoneMap struct {
	routes map[string]*route
	// dropped counts the queries no block of this listen address serves
	// (CoreDNS's zone "dropped").
	dropped *routeMetrics
	// chaos is true when a block of this listen address forwards: CoreDNS
	// then lets queries of other classes than IN (CHAOS) through, else it
	// refuses them.
	chaos bool
	// lens marks the wire lengths of the zones, so that lookup hashes only
	// the suffixes that can match.
	lens [256]bool
}

func newZoneMap() *zoneMap { return &zoneMap{routes: map[string]*route{}} }

// add maps a wire-format zone to r unless it is mapped already.
func (z *zoneMap) add(wire string, r *route) {
	if _, dup := z.routes[wire]; !dup && len(wire) < len(z.lens) {
		z.routes[wire] = r
		z.lens[len(wire)] = true
	}
}

// lookup returns the route of the longest zone that contains the
// wire-format name (already lower-cased), or nil.
func (z *zoneMap) lookup(name []byte) *route {
	if z == nil {
		return nil
	}
	for off := 0; off < len(name); {
		if z.lens[len(name)-off] {
			if r, ok := z.routes[string(name[off:])]; ok {
				return r
			}
		}
		if name[off] == 0 {
			break
		}
		off += 1 + int(name[off])
	}
	return nil
}

// table is an immutable set of routes per listen address.
type table struct {
	byAddr map[netip.AddrPort]*zoneMap
	byPort map[int]*zoneMap // blocks without bind, for listeners not in byAddr
}

// zonesFor returns the routes for a listener address.
func (t *table) zonesFor(addr netip.AddrPort) *zoneMap {
	if z, ok := t.byAddr[addr]; ok {
		return z
	}
	return t.byPort[int(addr.Port())]
}

// Options configure a Server.
type Options struct {
	// Registerer receives the request metrics; nil disables them.
	Registerer prometheus.Registerer
	// MaxInflight bounds the queries handled off the hit path at once
	// (misses waiting for upstreams, prefetches); more are dropped, as an
	// overloaded resolver does (default 2048).
	MaxInflight int
	// Timeout, when set, bounds one upstream exchange; 0 leaves it to the
	// Exchanger (the forwarder bounds every exchange itself).
	Timeout time.Duration
	// TCPIdleTimeout closes idle TCP connections (default TCPIdleTimeout).
	TCPIdleTimeout time.Duration
	// MaxTCPConns bounds the TCP connections per listener; more are
	// closed at once (default MaxTCPConns).
	MaxTCPConns int
	// MaxClientConns bounds the TCP connections of one client (source
	// address) per listener (default DefaultMaxClientConns).
	MaxClientConns int
	// MaxClientInflight bounds the queries of one client on the miss path
	// at once, UDP and TCP together (default DefaultMaxClientInflight).
	MaxClientInflight int
	// Budget bounds the memory of in-flight work in bytes: queries on the
	// miss path, TCP connections, large answers (default DefaultBudget).
	// Past half of it, the clients holding the most are refused first.
	Budget int64
	// Logger receives the errors and log plugins' output (default: stderr).
	Logger *log.Logger
}

// Server answers DNS queries on a set of sockets.
type Server struct {
	opts    Options
	metrics *Metrics
	budget  *budget
	limits  *limitMetrics
	table   atomic.Pointer[table]
	slots   chan struct{}
	// jobs feeds the idle miss workers; idle counts them (see spawn).
	jobs chan *job
	idle atomic.Int64
	// quit tells idle workers to exit at shutdown.
	quit   chan struct{}
	ctx    context.Context
	cancel context.CancelFunc

	mu      sync.Mutex
	udp     map[string]*net.UDPConn // by socket key
	tcp     map[string]*tcpListener
	started bool
	closed  bool
	readers sync.WaitGroup
	workers sync.WaitGroup // miss workers
	// inflight counts the jobs being answered.
	inflight sync.WaitGroup
	// probeAddr is a UDP address the health check queries.
	probeAddr netip.AddrPort
	// timeouts are the timeouts plugin's TCP timeouts (nil: defaults).
	timeouts atomic.Pointer[corefile.Timeouts]
}

// New returns a server without blocks and listeners.
func New(opts Options) (*Server, error) {
	if opts.MaxInflight <= 0 {
		opts.MaxInflight = 2048
	}
	if opts.TCPIdleTimeout <= 0 {
		opts.TCPIdleTimeout = TCPIdleTimeout
	}
	if opts.MaxTCPConns <= 0 {
		opts.MaxTCPConns = MaxTCPConns
	}
	if opts.MaxClientConns <= 0 {
		opts.MaxClientConns = DefaultMaxClientConns
	}
	if opts.MaxClientInflight <= 0 {
		opts.MaxClientInflight = DefaultMaxClientInflight
	}
	if opts.Budget <= 0 {
		opts.Budget = DefaultBudget
	}
	if opts.Logger == nil {
		opts.Logger = log.New(os.Stderr, "", log.LstdFlags)
	}
	m, err := NewMetrics(opts.Registerer)
	if err != nil {
		return nil, err
	}
	b := newBudget(opts.Budget, opts.MaxClientInflight)
	lm, err := newLimitMetrics(opts.Registerer, b)
	if err != nil {
		return nil, err
	}
	s := &Server{opts: opts, metrics: m, budget: b, limits: lm, slots: make(chan struct{}, opts.MaxInflight),
		jobs: make(chan *job, opts.MaxInflight), quit: make(chan struct{})}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.table.Store(&table{})
	return s, nil
}

// SetBlocks makes blocks the server's configuration. Queries already being
// answered finish with the old blocks; new queries use the new ones.
func (s *Server) SetBlocks(blocks []*Block) error {
	t, err := s.buildTable(blocks)
	if err != nil {
		return err
	}
	s.table.Store(t)
	return nil
}

func (s *Server) buildTable(blocks []*Block) (*table, error) {
	t := &table{byAddr: map[netip.AddrPort]*zoneMap{}, byPort: map[int]*zoneMap{}}
	// Every listen address of every block, and the no-bind blocks per port.
	addrs := map[string]int{}
	for _, b := range blocks {
		for _, ip := range b.Bind {
			ap, err := netip.ParseAddrPort(net.JoinHostPort(ip, strconv.Itoa(b.Port)))
			if err != nil {
				return nil, fmt.Errorf("server block %v: bind %q: %w", b.Zones, ip, err)
			}
			addrs[netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()).String()] = b.Port
		}
	}
	// Each listen address has routes of its own: the metrics' server label
	// is the address the query came in on, "dns://IP:port" (or
	// "dns://:port" for blocks without bind), as in CoreDNS.
	add := func(z *zoneMap, b *Block, server string) error {
		if z.dropped == nil {
			z.dropped = &routeMetrics{m: s.metrics, server: server, zone: droppedZone}
		}
		z.chaos = z.chaos || b.Forward != nil
		for _, zone := range b.Zones {
			r := &route{block: b, zone: zone, m: &routeMetrics{m: s.metrics, server: server, zone: zone}}
			wire, err := zoneWire(zone)
			if err != nil {
				return fmt.Errorf("server block %v: zone %q: %w", b.Zones, zone, err)
			}
			z.add(wire, r)
		}
		return nil
	}
	for _, b := range blocks {
		if len(b.Bind) == 0 {
			if t.byPort[b.Port] == nil {
				t.byPort[b.Port] = newZoneMap()
			}
			if err := add(t.byPort[b.Port], b, "dns://:"+strconv.Itoa(b.Port)); err != nil {
				return nil, err
			}
		}
	}
	for addr, port := range addrs {
		z := newZoneMap()
		for _, b := range blocks {
			if b.Port != port || !bindsAddr(b, addr) {
				continue
			}
			if err := add(z, b, "dns://"+addr); err != nil {
				return nil, err
			}
		}
		t.byAddr[netip.MustParseAddrPort(addr)] = z
	}
	return t, nil
}

// bindsAddr reports whether b listens on addr: it binds its IP, or it binds
// nothing (0.0.0.0).
func bindsAddr(b *Block, addr string) bool {
	if len(b.Bind) == 0 {
		return true
	}
	for _, ip := range b.Bind {
		if ap, err := netip.ParseAddrPort(net.JoinHostPort(ip, strconv.Itoa(b.Port))); err == nil && netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()).String() == addr {
			return true
		}
	}
	return false
}

// zoneWire returns a zone as a lower-case wire-format name.
func zoneWire(zone string) (string, error) {
	buf := make([]byte, 256)
	n, err := dns.PackDomainName(dns.Fqdn(strings.ToLower(zone)), buf, 0, nil, false)
	if err != nil {
		return "", err
	}
	return string(buf[:n]), nil
}

// Serve starts answering on socks and returns at once. Serve may be called
// again with more sockets (after a reload added listen addresses).
func (s *Server) Serve(socks Sockets) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errors.New("server: serve after shutdown")
	}
	s.started = true
	for key, f := range socks {
		proto, addr, err := parseKey(key)
		if err != nil {
			return err
		}
		if proto == "udp" {
			pc, err := net.FilePacketConn(f)
			if err != nil {
				return fmt.Errorf("server: socket %s: %w", key, err)
			}
			conn, ok := pc.(*net.UDPConn)
			if !ok {
				pc.Close()
				return fmt.Errorf("server: socket %s is not a UDP socket", key)
			}
			local := conn.LocalAddr().(*net.UDPAddr).AddrPort()
			if !s.probeAddr.IsValid() {
				s.probeAddr = probeTarget(local)
			}
			r, err := newReader(s, conn, canonical(addr, local))
			if err != nil {
				conn.Close()
				return err
			}
			if s.udp == nil {
				s.udp = map[string]*net.UDPConn{}
			}
			s.udp[key] = conn
			s.readers.Add(1)
			go r.run()
			continue
		}
		ln, err := net.FileListener(f)
		if err != nil {
			return fmt.Errorf("server: socket %s: %w", key, err)
		}
		tl := newTCPListener(s, ln.(*net.TCPListener), canonical(addr, ln.Addr().(*net.TCPAddr).AddrPort()))
		if s.tcp == nil {
			s.tcp = map[string]*tcpListener{}
		}
		s.tcp[key] = tl
		s.readers.Add(1)
		go tl.run()
	}
	return nil
}

// releaseDrain is how long a released UDP socket stays open for the
// answers to queries already read from it.
const releaseDrain = 5 * time.Second

// Release stops serving the sockets with the given keys (listen
// addresses a new configuration no longer has): their readers stop and
// their TCP connections finish. The caller closes the files.
func (s *Server) Release(keys []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, k := range keys {
		if c, ok := s.udp[k]; ok {
			// Stop reading now, close once answers in flight are out.
			_ = c.SetReadDeadline(time.Now())
			time.AfterFunc(releaseDrain, func() { c.Close() })
			delete(s.udp, k)
		}
		if t, ok := s.tcp[k]; ok {
			t.close()
			delete(s.tcp, k)
		}
	}
}

// canonical is the listen address used for routing: the key's address, with
// the actual port when the key asked for port 0.
func canonical(key, local netip.AddrPort) netip.AddrPort {
	if key.Port() == 0 {
		return netip.AddrPortFrom(key.Addr().Unmap(), local.Port())
	}
	return netip.AddrPortFrom(key.Addr().Unmap(), key.Port())
}

// probeTarget is where the health check sends its query.
func probeTarget(local netip.AddrPort) netip.AddrPort {
	a := local.Addr().Unmap()
	if a.IsUnspecified() {
		if a.Is4() {
			a = netip.AddrFrom4([4]byte{127, 0, 0, 1})
		} else {
			a = netip.IPv6Loopback()
		}
	}
	return netip.AddrPortFrom(a, local.Port())
}

// Shutdown stops reading queries, closes the listeners and the TCP
// connections, and waits for the readers and workers until ctx is done.
// The socket files given to Serve are not closed (they may have been
// handed to another instance); the caller closes them.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	// Stop reading but keep the UDP sockets open until the queries in
	// flight (misses waiting for upstreams) have written their answers.
	for _, c := range s.udp {
		_ = c.SetReadDeadline(time.Now())
	}
	for _, t := range s.tcp {
		t.close()
	}
	udp := s.udp
	s.mu.Unlock()
	done := make(chan struct{})
	go func() {
		s.readers.Wait()
		s.inflight.Wait()
		close(done)
	}()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		err = fmt.Errorf("server: shutdown: %w", ctx.Err())
	}
	s.cancel()
	close(s.quit)
	for _, c := range udp {
		c.Close()
	}
	return err
}

// Check sends a real query to the server's first UDP listener and waits
// for the answer: a STATUS opcode query, answered NOTIMP by the readers
// themselves (never through a miss-path slot, so that client traffic
// cannot make the health check fail). It is sent again every checkResend
// until an answer comes or ctx is done: under a flood the socket's queue
// may drop one.
func (s *Server) Check(ctx context.Context) error {
	s.mu.Lock()
	target, closed := s.probeAddr, s.closed
	s.mu.Unlock()
	if closed || !target.IsValid() {
		return errors.New("server: not serving")
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, time.Second)
		defer cancel()
	}
	m := new(dns.Msg)
	m.SetQuestion("health.nodelocaldns.", dns.TypeA)
	m.Opcode = dns.OpcodeStatus
	q, err := m.Pack()
	if err != nil {
		return fmt.Errorf("server: self-query: %w", err)
	}
	conn, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(target))
	if err != nil {
		return fmt.Errorf("server: self-query to %s: %w", target, err)
	}
	defer conn.Close()
	dl, _ := ctx.Deadline()
	buf := make([]byte, 512)
	for {
		if _, err := conn.Write(q); err != nil {
			return fmt.Errorf("server: self-query to %s: %w", target, err)
		}
		_ = conn.SetReadDeadline(minTime(dl, time.Now().Add(checkResend)))
		for {
			n, err := conn.Read(buf)
			if err != nil {
				break // resend, unless the deadline passed
			}
			if n >= 2 && binary.BigEndian.Uint16(buf) == m.Id {
				return nil
			}
		}
		if !time.Now().Before(dl) {
			return fmt.Errorf("server: self-query to %s: no answer: %w", target, context.DeadlineExceeded)
		}
	}
}

// checkResend is how often Check repeats its query.
const checkResend = 200 * time.Millisecond

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// BudgetUse reports the memory budget of in-flight work: its limit, what
// is charged now, and the highest charge since the previous call.
func (s *Server) BudgetUse() (limit, used, peak int64) {
	return s.budget.limit, s.budget.used.Load(), s.budget.takePeak()
}
