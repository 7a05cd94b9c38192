// Package dnstest provides in-process fake DNS servers for unit tests of the
// agent's packages: a UDP and a TCP listener on the same 127.0.0.1 port,
// a swappable handler, per-protocol query counters, and handler helpers
// that drop, delay, truncate or spoof answers.
package dnstest

import (
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// Query is one query a Server received.
type Query struct {
	// Msg is the unpacked query.
	Msg *dns.Msg
	// Proto is "udp" or "tcp".
	Proto string
	// From is the client's address.
	From net.Addr
	// Conn numbers the TCP connection the query came on (1 for the first
	// accepted connection); 0 for UDP.
	Conn int
}

// Handler answers a query by calling w.Write zero or more times. Writing
// nothing drops the query.
type Handler func(w *Writer, q *Query)

// Writer sends replies to the client of one query.
type Writer struct {
	q    *Query
	udp  net.PacketConn
	tcp  net.Conn
	tcpW *sync.Mutex
	rec  *recorder // set when a wrapping handler captures the replies
	done <-chan struct{}
}

// Done is closed when the server is closing; blocking handlers return then.
func (w *Writer) Done() <-chan struct{} { return w.done }

// Write packs m and sends it to the client.
func (w *Writer) Write(m *dns.Msg) error {
	if w.rec != nil {
		w.rec.msgs = append(w.rec.msgs, m.Copy())
		return nil
	}
	buf, err := m.Pack()
	if err != nil {
		return fmt.Errorf("dnstest: pack reply: %w", err)
	}
	return w.WriteRaw(buf)
}

// WriteRaw sends buf to the client as is (with the 2-byte length prefix on TCP).
func (w *Writer) WriteRaw(buf []byte) error {
	if w.rec != nil {
		m := new(dns.Msg)
		if err := m.Unpack(buf); err != nil {
			return fmt.Errorf("dnstest: unpack captured reply: %w", err)
		}
		w.rec.msgs = append(w.rec.msgs, m)
		return nil
	}
	if w.udp != nil {
		_, err := w.udp.WriteTo(buf, w.q.From)
		return err
	}
	w.tcpW.Lock()
	defer w.tcpW.Unlock()
	out := make([]byte, 2+len(buf))
	binary.BigEndian.PutUint16(out, uint16(len(buf)))
	copy(out[2:], buf)
	_, err := w.tcp.Write(out)
	return err
}

// Server is a fake DNS server listening on UDP and TCP at the same address.
type Server struct {
	// Addr is the "127.0.0.1:port" both listeners are bound to.
	Addr string

	udp     net.PacketConn
	tcp     net.Listener
	handler atomic.Pointer[Handler]

	udpCount  atomic.Int64
	tcpCount  atomic.Int64
	connCount atomic.Int64

	done chan struct{} // closed by Close

	mu      sync.Mutex
	queries []Query
	conns   map[net.Conn]struct{}
	closed  bool
	wg      sync.WaitGroup
}

// maxLog bounds the number of queries a Server remembers.
const maxLog = 10000

// Start starts a Server on addr (e.g. "127.0.0.1:0"; port 0 picks a free
// port shared by UDP and TCP) answering with h.
func Start(addr string, h Handler) (*Server, error) {
	var lastErr error
	for range 20 {
		s, err := listen(addr)
		if err == nil {
			s.SetHandler(h)
			s.serve()
			return s, nil
		}
		lastErr = err
		if _, port, _ := net.SplitHostPort(addr); port != "0" {
			break
		}
	}
	return nil, lastErr
}

// NewServer starts a Server on 127.0.0.1 and a free port, failing the test
// on error and closing the server when the test ends.
func NewServer(t testing.TB, h Handler) *Server {
	t.Helper()
	s, err := Start("127.0.0.1:0", h)
	if err != nil {
		t.Fatalf("dnstest: start server: %v", err)
	}
	t.Cleanup(s.Close)
	return s
}

func listen(addr string) (*Server, error) {
	udp, err := net.ListenPacket("udp", addr)
	if err != nil {
		return nil, fmt.Errorf("dnstest: listen udp %s: %w", addr, err)
	}
	bound := udp.LocalAddr().String()
	tcp, err := net.Listen("tcp", bound)
	if err != nil {
		udp.Close()
		return nil, fmt.Errorf("dnstest: listen tcp %s: %w", bound, err)
	}
	return &Server{Addr: bound, udp: udp, tcp: tcp, conns: map[net.Conn]struct{}{}, done: make(chan struct{})}, nil
}

// SetHandler replaces the handler; queries already being handled finish
// with the old one.
func (s *Server) SetHandler(h Handler) {
	if h == nil {
		h = Drop
	}
	s.handler.Store(&h)
}

// Count returns how many queries arrived over proto ("udp", "tcp", or ""
// for both).
func (s *Server) Count(proto string) int {
	switch proto {
	case "udp":
		return int(s.udpCount.Load())
	case "tcp":
		return int(s.tcpCount.Load())
	default:
		return int(s.udpCount.Load() + s.tcpCount.Load())
	}
}

// Conns returns how many TCP connections were accepted.
func (s *Server) Conns() int { return int(s.connCount.Load()) }

// Queries returns a copy of the queries received so far (the first 10000).
func (s *Server) Queries() []Query {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Query(nil), s.queries...)
}

// Reset clears the counters and the query log.
func (s *Server) Reset() {
	s.mu.Lock()
	s.queries = nil
	s.mu.Unlock()
	s.udpCount.Store(0)
	s.tcpCount.Store(0)
	s.connCount.Store(0)
}

// Close stops both listeners and closes open TCP connections. It waits
// for the serving goroutines to end.
func (s *Server) Close() {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.closed = true
	close(s.done)
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.udp.Close()
	s.tcp.Close()
	s.wg.Wait()
}

func (s *Server) serve() {
	s.wg.Add(2)
	go s.serveUDP()
	go s.serveTCP()
}

func (s *Server) serveUDP() {
	defer s.wg.Done()
	buf := make([]byte, 65535)
	for {
		n, from, err := s.udp.ReadFrom(buf)
		if err != nil {
			return
		}
		m := new(dns.Msg)
		if m.Unpack(buf[:n]) != nil {
			continue
		}
		s.udpCount.Add(1)
		q := &Query{Msg: m, Proto: "udp", From: from}
		s.record(q)
		w := &Writer{q: q, udp: s.udp, done: s.done}
		h := *s.handler.Load()
		s.wg.Go(func() {
			h(w, q)
		})
	}
}

func (s *Server) serveTCP() {
	defer s.wg.Done()
	for {
		c, err := s.tcp.Accept()
		if err != nil {
			return
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			c.Close()
			return
		}
		s.conns[c] = struct{}{}
		s.mu.Unlock()
		id := int(s.connCount.Add(1))
		s.wg.Add(1)
		go s.serveConn(c, id)
	}
}

func (s *Server) serveConn(c net.Conn, id int) {
	defer s.wg.Done()
	defer func() {
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
		c.Close()
	}()
	var wmu sync.Mutex
	var lenBuf [2]byte
	for {
		if _, err := io.ReadFull(c, lenBuf[:]); err != nil {
			return
		}
		buf := make([]byte, binary.BigEndian.Uint16(lenBuf[:]))
		if _, err := io.ReadFull(c, buf); err != nil {
			return
		}
		m := new(dns.Msg)
		if m.Unpack(buf) != nil {
			return
		}
		s.tcpCount.Add(1)
		q := &Query{Msg: m, Proto: "tcp", From: c.RemoteAddr(), Conn: id}
		s.record(q)
		w := &Writer{q: q, tcp: c, tcpW: &wmu, done: s.done}
		h := *s.handler.Load()
		s.wg.Go(func() {
			h(w, q)
		})
	}
}

func (s *Server) record(q *Query) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.queries) < maxLog {
		s.queries = append(s.queries, *q)
	}
}

// CloseConns closes the TCP connections open right now (the listener keeps
// accepting), to test reconnection.
func (s *Server) CloseConns() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		c.Close()
	}
}

// WaitCount waits up to d until Count(proto) >= n and reports whether it
// got there.
func (s *Server) WaitCount(proto string, n int, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if s.Count(proto) >= n {
			return true
		}
		time.Sleep(2 * time.Millisecond)
	}
	return s.Count(proto) >= n
}
