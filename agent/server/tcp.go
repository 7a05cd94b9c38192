package server

import (
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/netip"
	"sync"
	"time"
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

// tcpListener accepts connections on one TCP socket.
type tcpListener struct {
	s     *Server
	ln    *net.TCPListener
	addr  netip.AddrPort
	slots chan struct{}

	mu     sync.Mutex
	conns  map[*net.TCPConn]struct{}
	closed bool
	wg     sync.WaitGroup
}

func newTCPListener(s *Server, ln *net.TCPListener, addr netip.AddrPort) *tcpListener {
	return &tcpListener{s: s, ln: ln, addr: addr, slots: make(chan struct{}, s.opts.MaxTCPConns), conns: map[*net.TCPConn]struct{}{}}
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
		select {
		case t.slots <- struct{}{}:
		default:
			c.Close() // too many connections
			continue
		}
		t.mu.Lock()
		if t.closed {
			t.mu.Unlock()
			c.Close()
			<-t.slots
			continue
		}
		t.conns[c] = struct{}{}
		t.wg.Add(1)
		t.mu.Unlock()
		go t.serve(c)
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

// serve reads pipelined queries from c and answers each as soon as it is
// ready, possibly out of order.
func (t *tcpListener) serve(c *net.TCPConn) {
	var (
		wmu      sync.Mutex
		inflight sync.WaitGroup
		sem      = make(chan struct{}, MaxTCPInflight)
		v6       = t.addr.Addr().Is6()
		client   netip.AddrPort
	)
	if a, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		client = a.AddrPort()
	}
	defer func() {
		inflight.Wait()
		t.mu.Lock()
		delete(t.conns, c)
		t.mu.Unlock()
		<-t.slots
		c.Close()
		t.wg.Done()
	}()
	var lenBuf [2]byte
	for first := true; ; first = false {
		t.mu.Lock()
		closed := t.closed
		t.mu.Unlock()
		if closed {
			return
		}
		_ = c.SetReadDeadline(time.Now().Add(t.s.readTimeout(first)))
		if _, err := io.ReadFull(c, lenBuf[:]); err != nil {
			return
		}
		n := int(binary.BigEndian.Uint16(lenBuf[:]))
		if n == 0 {
			return
		}
		pkt := make([]byte, n)
		if _, err := io.ReadFull(c, pkt); err != nil {
			return
		}
		start := time.Now()
		sem <- struct{}{}
		inflight.Add(1)
		go func() {
			defer func() { <-sem; inflight.Done() }()
			resp := t.s.answerTCP(pkt, t.addr, client, v6, start)
			if resp == nil {
				return
			}
			out := make([]byte, 2+len(resp))
			binary.BigEndian.PutUint16(out, uint16(len(resp)))
			copy(out[2:], resp)
			wmu.Lock()
			_ = c.SetWriteDeadline(time.Now().Add(t.s.writeTimeout()))
			_, err := c.Write(out)
			wmu.Unlock()
			if err != nil {
				_ = c.SetReadDeadline(time.Now())
			}
		}()
	}
}

// answerTCP answers one query that came over TCP: from the cache in wire
// format when possible, else through the miss path.
func (s *Server) answerTCP(pkt []byte, listener, client netip.AddrPort, v6 bool, start time.Time) []byte {
	zones := s.table.Load().zonesFor(listener)
	h := &hitPath{}
	h.init(s, true, v6)
	h.tally.start = start
	resp, verdict := h.handle(make([]byte, 0, 512), pkt, zones, start.UnixNano())
	switch verdict {
	case verdictReply:
		h.tally.flush()
		return resp
	case verdictDrop:
		return nil
	}
	return s.answer(s.ctx, pkt, zones, true, v6, start, client)
}
