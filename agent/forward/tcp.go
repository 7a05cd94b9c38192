package forward

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
)

// errConnClosed reports that a pipelined connection died while a query was
// waiting on it.
var errConnClosed = errors.New("upstream connection closed")

// Limits of the TCP pool of one upstream: a new connection is opened when
// every open one has perConnInflight queries in flight, up to maxConns.
const (
	maxConns        = 4
	perConnInflight = 128
)

// tcpPool holds the persistent, pipelined TCP connections to one upstream.
type tcpPool struct {
	addr   string
	expire time.Duration
	// tls, when set, makes the connections DNS over TLS (RFC 7858).
	tls *tls.Config
	// maxIdle, when > 0, bounds the connections without a query in
	// flight (max_idle_conns).
	maxIdle int

	mu     sync.Mutex
	conns  []*tcpConn
	closed bool
	dialMu sync.Mutex // one dial at a time
	// cache counts the connections reused and dialed.
	cache connCache
}

func newTCPPool(addr string, expire time.Duration, tlsConfig *tls.Config, maxIdle int) *tcpPool {
	return &tcpPool{addr: addr, expire: expire, tls: tlsConfig, maxIdle: maxIdle}
}

// exchange sends q over a pooled connection and waits for the matching
// answer until deadline. A query that was lost because a reused connection
// died before answering is retried once on a fresh connection.
func (p *tcpPool) exchange(ctx context.Context, q *dns.Msg, deadline time.Time) (*dns.Msg, error) {
	for attempt := 0; ; attempt++ {
		c, reused, err := p.get(ctx, deadline)
		p.cache.count(reused)
		if err != nil {
			return nil, err
		}
		r, err := c.exchange(ctx, q, deadline)
		if errors.Is(err, errConnClosed) && reused && attempt == 0 && time.Now().Before(deadline) {
			continue
		}
		return r, err
	}
}

// get returns the least loaded live connection, dialing a new one when
// there is none or all are busy.
func (p *tcpPool) get(ctx context.Context, deadline time.Time) (*tcpConn, bool, error) {
	if c := p.pick(); c != nil {
		return c, true, nil
	}
	p.dialMu.Lock()
	defer p.dialMu.Unlock()
	if c := p.pick(); c != nil { // another caller dialed meanwhile
		return c, true, nil
	}
	nc, err := p.dial(ctx, deadline)
	if err != nil {
		return nil, false, err
	}
	c := newTCPConn(nc)
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		c.close(errConnClosed)
		return nil, false, errConnClosed
	}
	p.conns = append(p.conns, c)
	p.mu.Unlock()
	return c, false, nil
}

// dial opens a connection to the upstream, with the TLS handshake done
// (within deadline) when the pool is DNS over TLS.
func (p *tcpPool) dial(ctx context.Context, deadline time.Time) (net.Conn, error) {
	d := net.Dialer{Deadline: deadline}
	if p.tls == nil {
		nc, err := d.DialContext(ctx, "tcp", p.addr)
		if err != nil {
			return nil, fmt.Errorf("dial tcp %s: %w", p.addr, err)
		}
		return nc, nil
	}
	td := tls.Dialer{NetDialer: &d, Config: p.tls}
	nc, err := td.DialContext(ctx, "tcp", p.addr)
	if err != nil {
		return nil, fmt.Errorf("dial tls %s: %w", p.addr, err)
	}
	return nc, nil
}

// pick returns a usable connection or nil when a new one should be dialed.
// Dead and idle-expired connections are dropped on the way.
func (p *tcpPool) pick() *tcpConn {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.reapLocked(time.Now())
	var best *tcpConn
	bestLoad := int(^uint(0) >> 1)
	for _, c := range p.conns {
		if n := c.inflight(); n < bestLoad {
			best, bestLoad = c, n
		}
	}
	if best == nil || (bestLoad >= perConnInflight && len(p.conns) < maxConns) {
		return nil
	}
	return best
}

// reapLocked drops dead connections and closes idle ones older than expire.
func (p *tcpPool) reapLocked(now time.Time) {
	live := p.conns[:0]
	idle := 0
	for _, c := range p.conns {
		if c.dead() {
			continue
		}
		if c.inflight() == 0 {
			if p.expire > 0 && now.Sub(c.lastUsed()) > p.expire || p.maxIdle > 0 && idle >= p.maxIdle {
				c.close(errConnClosed)
				continue
			}
			idle++
		}
		live = append(live, c)
	}
	clear(p.conns[len(live):])
	p.conns = live
}

// reap closes idle-expired connections; called periodically.
func (p *tcpPool) reap() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.reapLocked(time.Now())
}

// size returns the number of open connections.
func (p *tcpPool) size() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.reapLocked(time.Now())
	return len(p.conns)
}

func (p *tcpPool) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	for _, c := range p.conns {
		c.close(errConnClosed)
	}
	p.conns = nil
}

// tcpConn is one TCP connection with several queries in flight, matched to
// their answers by ID and question.
type tcpConn struct {
	nc   net.Conn
	done chan struct{} // closed when the connection is dead

	// Writes are combined: a caller appends its frame to wbuf and, unless
	// another caller is already flushing, writes everything queued in one
	// system call.
	wmu      sync.Mutex
	wbuf     []byte
	spare    []byte
	flushing bool

	mu      sync.Mutex
	pending map[uint16]*waiter
	err     error
	used    atomic.Int64 // unix nanoseconds of the last write or read
}

type waiter struct {
	q  dns.Question
	ch chan *dns.Msg // buffered, receives the answer once
}

func newTCPConn(nc net.Conn) *tcpConn {
	c := &tcpConn{nc: nc, done: make(chan struct{}), pending: map[uint16]*waiter{}}
	c.touch()
	go c.readLoop()
	return c
}

func (c *tcpConn) touch()              { c.used.Store(time.Now().UnixNano()) }
func (c *tcpConn) lastUsed() time.Time { return time.Unix(0, c.used.Load()) }

func (c *tcpConn) inflight() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.pending)
}

func (c *tcpConn) dead() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// close marks the connection dead with err; waiting queries see errConnClosed.
func (c *tcpConn) close(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return
	}
	c.err = err
	close(c.done)
	c.nc.Close()
}

// register picks a random ID unused on this connection for question q.
func (c *tcpConn) register(q dns.Question) (uint16, *waiter, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return 0, nil, errConnClosed
	}
	w := waiters.Get().(*waiter)
	w.q = q
	for {
		id := uint16(rand.N(1 << 16))
		if _, busy := c.pending[id]; !busy {
			c.pending[id] = w
			return id, w, nil
		}
	}
}

// unregister forgets the query and recycles its waiter: once it is out of
// pending (under c.mu) the read loop cannot send to it any more, so an
// answer it did send is drained first.
func (c *tcpConn) unregister(id uint16, w *waiter) {
	c.mu.Lock()
	if c.pending[id] == w {
		delete(c.pending, id)
	}
	c.mu.Unlock()
	select {
	case <-w.ch:
	default:
	}
	w.q = dns.Question{}
	waiters.Put(w)
}

// waiters recycles waiters and their channels (one per query).
var waiters = sync.Pool{New: func() any { return &waiter{ch: make(chan *dns.Msg, 1)} }}

func (c *tcpConn) exchange(ctx context.Context, q *dns.Msg, deadline time.Time) (*dns.Msg, error) {
	id, w, err := c.register(q.Question[0])
	if err != nil {
		return nil, err
	}
	defer c.unregister(id, w)
	// q belongs to this exchange alone: set the ID in place.
	q.Id = id
	sp := queryScratch.Get().(*[]byte)
	buf, err := q.PackBuffer(*sp)
	if err != nil {
		queryScratch.Put(sp)
		return nil, fmt.Errorf("pack query: %w", err)
	}
	if len(buf) > 0xffff {
		queryScratch.Put(sp)
		return nil, fmt.Errorf("query too large for tcp: %d bytes", len(buf))
	}
	err = c.write(buf, deadline) // copies buf
	queryScratch.Put(sp)
	if err != nil {
		return nil, fmt.Errorf("%w: write: %w", errConnClosed, err)
	}
	c.touch()
	timer := getTimer(time.Until(deadline))
	defer putTimer(timer)
	select {
	case r := <-w.ch:
		return r, nil
	case <-c.done:
		return nil, errConnClosed
	case <-timer.C:
		return nil, fmt.Errorf("tcp %s: %w", c.nc.RemoteAddr(), errTimeout)
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// queryScratch recycles the buffers queries are packed into; write copies
// them into the connection's queue.
var queryScratch = sync.Pool{New: func() any { b := make([]byte, 512); return &b }}

// timers are reused: a timer per query was 12% of the bytes a miss
// allocated. Since Go 1.23 a stopped timer delivers nothing stale, so a
// timer can be reset after Stop.
var timers = sync.Pool{New: func() any {
	t := time.NewTimer(time.Hour)
	t.Stop()
	return t
}}

func getTimer(d time.Duration) *time.Timer {
	t := timers.Get().(*time.Timer)
	t.Reset(d)
	return t
}

func putTimer(t *time.Timer) {
	t.Stop()
	timers.Put(t)
}

// write queues one length-prefixed message and flushes the queue unless
// another caller is flushing it already (that caller writes ours too).
func (c *tcpConn) write(msg []byte, deadline time.Time) error {
	c.wmu.Lock()
	c.wbuf = binary.BigEndian.AppendUint16(c.wbuf, uint16(len(msg)))
	c.wbuf = append(c.wbuf, msg...)
	if c.flushing {
		c.wmu.Unlock()
		return nil
	}
	c.flushing = true
	// Let the goroutines that are ready to run queue their queries first
	// (they see flushing and return at once), then write them all in one
	// system call: on a busy single core this turns one write per query
	// into one per batch.
	c.wmu.Unlock()
	runtime.Gosched()
	c.wmu.Lock()
	for len(c.wbuf) > 0 {
		buf := c.wbuf
		c.wbuf = c.spare[:0]
		c.wmu.Unlock()
		_ = c.nc.SetWriteDeadline(deadline) // on error, Write fails too
		_, err := c.nc.Write(buf)
		c.wmu.Lock()
		c.spare = buf[:0]
		if err != nil {
			c.flushing = false
			c.wbuf = c.wbuf[:0]
			c.wmu.Unlock()
			c.close(err)
			return err
		}
	}
	c.flushing = false
	c.wmu.Unlock()
	return nil
}

// readLoop delivers answers to their waiters. Answers with an unknown ID
// or a question that does not match are dropped; the waiter keeps waiting.
func (c *tcpConn) readLoop() {
	var lenBuf [2]byte
	r := bufio.NewReaderSize(c.nc, 32<<10) // several answers per read
	buf := make([]byte, dns.MaxMsgSize)
	for {
		if _, err := io.ReadFull(r, lenBuf[:]); err != nil {
			c.close(err)
			return
		}
		buf := buf[:binary.BigEndian.Uint16(lenBuf[:])]
		if _, err := io.ReadFull(r, buf); err != nil {
			c.close(err)
			return
		}
		c.touch()
		if len(buf) < 12 {
			continue
		}
		id := binary.BigEndian.Uint16(buf)
		c.mu.Lock()
		_, ok := c.pending[id]
		c.mu.Unlock()
		if !ok {
			continue
		}
		m := new(dns.Msg)
		if err := m.Unpack(buf); err != nil {
			continue
		}
		// The waiter is looked at under c.mu only: once unregistered it
		// is recycled for another query.
		c.mu.Lock()
		if w := c.pending[id]; w != nil && matches(w.q, id, m) {
			delete(c.pending, id)
			w.ch <- m
		}
		c.mu.Unlock()
	}
}
