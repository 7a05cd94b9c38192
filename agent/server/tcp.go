package server

import (
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nodelocaldns/nodelocaldns/agent/dnswire"
)

// TCP limits; the first two are the defaults of Options.TCPIdleTimeout
// and Options.MaxTCPConns.
const (
	// TCPIdleTimeout closes a connection without a query for this long.
	TCPIdleTimeout = 10 * time.Second
	// MaxTCPConns bounds the connections per listener.
	MaxTCPConns = 1024
	// TCPWriteTimeout bounds writing one answer.
	TCPWriteTimeout = 5 * time.Second
	// MaxTCPInflight bounds the pipelined queries answered at once on one
	// connection.
	MaxTCPInflight = 64
)

// pressureIdle is how long a TCP connection may wait for its next query
// when the listener holds more than half of MaxTCPConns (as unbound's
// minimum TCP query timeout under pressure): idle connections make room
// for clients with queries.
const pressureIdle = 200 * time.Millisecond

// maxTCPQuery is the longest query read over TCP, as over UDP; a longer
// one closes the connection (a stub's query is a few hundred bytes, and
// each length prefix could otherwise make the agent hold 64 kB).
const maxTCPQuery = inBufSize

// tcpListener accepts connections on one TCP socket.
type tcpListener struct {
	s     *Server
	ln    *net.TCPListener
	addr  netip.AddrPort
	slots chan struct{}

	mu        sync.Mutex
	conns     map[*net.TCPConn]*tcpConnState
	closed    bool
	lastSweep time.Time
	wg        sync.WaitGroup
}

// tcpConnState is what the listener knows of one connection.
type tcpConnState struct {
	// idleSince is when the connection started waiting for a query
	// (Unix nanoseconds), 0 while a query is read or answered.
	idleSince atomic.Int64
}

func newTCPListener(s *Server, ln *net.TCPListener, addr netip.AddrPort) *tcpListener {
	return &tcpListener{s: s, ln: ln, addr: addr, slots: make(chan struct{}, s.opts.MaxTCPConns), conns: map[*net.TCPConn]*tcpConnState{}}
}

func (t *tcpListener) run() {
	defer t.s.readers.Done()
	for {
		c, err := t.ln.AcceptTCP()
		if err != nil {
			if ne, ok := errors.AsType[net.Error](err); ok && ne.Timeout() {
				continue
			}
			t.mu.Lock()
			closed := t.closed
			t.mu.Unlock()
			if closed {
				t.wg.Wait()
				return
			}
			time.Sleep(10 * time.Millisecond) // e.g. EMFILE: back off
			continue
		}
		t.accept(c)
	}
}

// accept admits c (listener and client limits, memory budget) and serves
// it, or closes it at once.
func (t *tcpListener) accept(c *net.TCPConn) {
	var client netip.Addr
	if a, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		client = a.AddrPort().Addr().Unmap()
	}
	select {
	case t.slots <- struct{}{}:
	default:
		t.sweep(true)
		t.s.limits.refuse(reasonConns)
		c.Close() // too many connections
		return
	}
	if reason := t.s.budget.admit(client, connCost, false, true, t.s.opts.MaxClientConns); reason != "" {
		<-t.slots
		t.s.limits.refuse(reason)
		c.Close()
		return
	}
	st := &tcpConnState{}
	st.idleSince.Store(time.Now().UnixNano())
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		c.Close()
		<-t.slots
		t.s.budget.release(client, connCost, false, true)
		return
	}
	t.conns[c] = st
	t.wg.Add(1)
	t.mu.Unlock()
	t.sweep(false)
	go t.serve(c, st, client)
}

// underPressure reports whether the listener holds more than half of its
// connections.
func (t *tcpListener) underPressure() bool { return 2*len(t.slots) > cap(t.slots) }

// sweep, when the listener is under pressure (or full), ends the reads of
// connections idle for longer than pressureIdle. It runs at most every
// pressureIdle/4 unless full.
func (t *tcpListener) sweep(full bool) {
	if !full && !t.underPressure() {
		return
	}
	now := time.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	if !full && now.Sub(t.lastSweep) < pressureIdle/4 {
		return
	}
	t.lastSweep = now
	limit := now.Add(-pressureIdle).UnixNano()
	for c, st := range t.conns {
		if since := st.idleSince.Load(); since != 0 && since < limit {
			_ = c.SetReadDeadline(now)
		}
	}
}

// close stops accepting and makes every connection finish: reads end now,
// answers being computed are still written (bounded by the write timeout).
func (t *tcpListener) close() {
	t.mu.Lock()
	t.closed = true
	for c := range t.conns {
		_ = c.SetReadDeadline(time.Now())
	}
	t.mu.Unlock()
	t.ln.Close()
}

// tcpConn is one connection being served.
type tcpConn struct {
	t      *tcpListener
	c      *net.TCPConn
	client netip.Addr
	from   netip.AddrPort
	v6     bool

	wmu sync.Mutex
	// hot answers cache hits in the reading goroutine; out is its buffer.
	hot hitPath
	out []byte
}

// serve reads pipelined queries from c: cache hits are answered at once
// by the reading goroutine, misses each by a goroutine of their own (at
// most MaxTCPInflight per connection, each admitted by the client's limit
// and the memory budget like a UDP miss) as soon as they are ready,
// possibly out of order.
func (t *tcpListener) serve(c *net.TCPConn, st *tcpConnState, client netip.Addr) {
	tc := &tcpConn{t: t, c: c, client: client, v6: t.addr.Addr().Is6()}
	if a, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		tc.from = a.AddrPort()
	}
	tc.hot.init(t.s, true, tc.v6)
	var (
		inflight sync.WaitGroup
		sem      = make(chan struct{}, MaxTCPInflight)
	)
	defer func() {
		inflight.Wait()
		t.mu.Lock()
		delete(t.conns, c)
		t.mu.Unlock()
		<-t.slots
		t.s.budget.release(client, connCost, false, true)
		c.Close()
		t.wg.Done()
	}()
	var lenBuf [2]byte
	buf := make([]byte, maxTCPQuery)
	for first := true; ; first = false {
		t.mu.Lock()
		closed := t.closed
		t.mu.Unlock()
		if closed {
			return
		}
		idle := t.s.readTimeout(first)
		if t.underPressure() {
			idle = min(idle, pressureIdle)
		}
		st.idleSince.Store(time.Now().UnixNano())
		_ = c.SetReadDeadline(time.Now().Add(idle))
		if _, err := io.ReadFull(c, lenBuf[:]); err != nil {
			return
		}
		n := int(binary.BigEndian.Uint16(lenBuf[:]))
		if n == 0 {
			return
		}
		if n > maxTCPQuery {
			t.s.limits.refuse(reasonQuerySize)
			return
		}
		if _, err := io.ReadFull(c, buf[:n]); err != nil {
			return
		}
		st.idleSince.Store(0)
		start := time.Now()
		if tc.hit(buf[:n], start) {
			continue
		}
		pkt := append([]byte(nil), buf[:n]...)
		if reason := tc.admit(); reason != "" {
			t.s.limits.refuse(reason)
			tc.write(refused(pkt))
			continue
		}
		sem <- struct{}{}
		inflight.Add(1)
		go func() {
			defer func() { <-sem; inflight.Done() }()
			cost := int64(missCost)
			resp := t.s.answer(t.s.ctx, pkt, t.s.table.Load().zonesFor(t.addr), true, tc.v6, start, tc.from)
			if len(resp) > missCost/answerWeight {
				t.s.budget.charge(client, answerWeight*int64(len(resp)))
				cost += answerWeight * int64(len(resp))
			}
			tc.write(resp)
			t.s.budget.release(client, cost, true, false)
			<-t.s.slots
		}()
	}
}

// admit takes a miss-path slot and the budget for one query of the
// connection's client; it returns the reason of a refusal, or "".
func (tc *tcpConn) admit() string {
	s := tc.t.s
	select {
	case s.slots <- struct{}{}:
	default:
		return reasonInflight
	}
	if reason := s.budget.admit(tc.client, missCost, true, false, 0); reason != "" {
		<-s.slots
		return reason
	}
	return ""
}

// hit answers pkt from the cache (wire format) when it can, or drops it;
// false sends it to the miss path.
func (tc *tcpConn) hit(pkt []byte, start time.Time) bool {
	h := &tc.hot
	h.tally.start = start
	zones := tc.t.s.table.Load().zonesFor(tc.t.addr)
	resp, verdict := h.handle(tc.out[:0], pkt, zones, start.UnixNano())
	switch verdict {
	case verdictReply:
		h.tally.flush()
		tc.out = resp[:0]
		tc.write(resp)
		return true
	case verdictDrop:
		return true
	}
	return false
}

// write sends one answer with its length prefix; a failed write ends the
// connection's reads.
func (tc *tcpConn) write(resp []byte) {
	if resp == nil {
		return
	}
	var lenBuf [2]byte
	binary.BigEndian.PutUint16(lenBuf[:], uint16(len(resp)))
	bufs := net.Buffers{lenBuf[:], resp}
	tc.wmu.Lock()
	_ = tc.c.SetWriteDeadline(time.Now().Add(tc.t.s.writeTimeout()))
	_, err := bufs.WriteTo(tc.c)
	tc.wmu.Unlock()
	if err != nil {
		_ = tc.c.SetReadDeadline(time.Now())
	}
}

// refused is the REFUSED reply to a query the limits turned away: its
// header and question, so that the client tries its next nameserver at
// once (with the webhook's dnsConfig, kube-dns itself).
func refused(pkt []byte) []byte {
	var q dnswire.Query
	end := dnswire.HeaderLen
	if dnswire.ParseQuery(pkt, &q) == nil {
		end = q.QEnd
	} else if len(pkt) < dnswire.HeaderLen || dnswire.Flags(pkt)&dnswire.FlagQR != 0 {
		return nil
	}
	out := append([]byte(nil), pkt[:end]...)
	dnswire.SetFlags(out, dnswire.Flags(pkt)&(0x7800|dnswire.FlagRD|dnswire.FlagCD)|dnswire.FlagQR|dnswire.FlagRA|rcodeRefused)
	dnswire.SetCount(out, 0, min(dnswire.Count(pkt, 0), 1))
	if end == dnswire.HeaderLen {
		dnswire.SetCount(out, 0, 0)
	}
	for i := 1; i < 4; i++ {
		dnswire.SetCount(out, i, 0)
	}
	return out
}

// rcodeRefused is REFUSED.
const rcodeRefused = 5
