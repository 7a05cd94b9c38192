package forward

import (
	"fmt"
	"net"
	"sync"
	"time"
)

// maxIdleUDP bounds the idle UDP sockets kept per upstream.
const maxIdleUDP = 256

// udpPool keeps connected UDP sockets to one upstream for reuse, as
// CoreDNS's connection cache does. Each socket got a random source port
// from the kernel when it was opened; sockets idle longer than expire are
// closed, so ports rotate. A socket whose exchange failed is closed, never
// reused.
type udpPool struct {
	addr   *net.UDPAddr
	expire time.Duration
	// maxIdle bounds the idle sockets: maxIdleUDP, or max_idle_conns when
	// that is smaller.
	maxIdle int

	mu     sync.Mutex
	idle   []udpSock // most recently used last
	closed bool
	// cache counts the sockets reused and opened.
	cache connCache
}

type udpSock struct {
	c    *net.UDPConn
	used time.Time
}

func newUDPPool(addr *net.UDPAddr, expire time.Duration, maxIdleConns int) *udpPool {
	maxIdle := maxIdleUDP
	if maxIdleConns > 0 {
		maxIdle = min(maxIdle, maxIdleConns)
	}
	return &udpPool{addr: addr, expire: expire, maxIdle: maxIdle}
}

// get returns an idle socket or opens a new one.
func (p *udpPool) get() (*net.UDPConn, error) {
	p.mu.Lock()
	for n := len(p.idle); n > 0; n = len(p.idle) {
		s := p.idle[n-1]
		p.idle = p.idle[:n-1]
		if p.expire > 0 && time.Since(s.used) > p.expire {
			s.c.Close()
			continue
		}
		p.mu.Unlock()
		p.cache.count(true)
		return s.c, nil
	}
	p.mu.Unlock()
	p.cache.count(false)
	c, err := net.DialUDP("udp", nil, p.addr)
	if err != nil {
		return nil, fmt.Errorf("dial udp %s: %w", p.addr, err)
	}
	return c, nil
}

// put returns a socket after a successful exchange.
func (p *udpPool) put(c *net.UDPConn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed || len(p.idle) >= p.maxIdle {
		c.Close()
		return
	}
	p.idle = append(p.idle, udpSock{c: c, used: time.Now()})
}

// reap closes sockets idle longer than expire.
func (p *udpPool) reap() {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := time.Now()
	live := p.idle[:0]
	for _, s := range p.idle {
		if p.expire > 0 && now.Sub(s.used) > p.expire {
			s.c.Close()
			continue
		}
		live = append(live, s)
	}
	clear(p.idle[len(live):])
	p.idle = live
}

// size returns the number of idle sockets.
func (p *udpPool) size() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.idle)
}

func (p *udpPool) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	for _, s := range p.idle {
		s.c.Close()
	}
	p.idle = nil
}
