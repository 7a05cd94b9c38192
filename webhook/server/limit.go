package server

import (
	"net"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// limitListener accepts at most max connections at once, and at most a
// quarter of them from one address; it closes any beyond at once (rather
// than leaving them in the kernel's backlog), so that a client holding many
// idle connections can neither make the server hold more memory nor take
// every slot from the API server.
type limitListener struct {
	net.Listener
	max, perPeer int
	open         prometheus.Gauge
	refused      prometheus.Counter

	mu     sync.Mutex
	total  int
	byPeer map[string]int
}

func newLimitListener(l net.Listener, limit int, m *metrics) *limitListener {
	return &limitListener{Listener: l, max: limit, perPeer: max(limit/4, 1), open: m.connections, refused: m.refused, byPeer: map[string]int{}}
}

// Accept returns the next connection within the limits.
func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		peer := c.RemoteAddr().String()
		if host, _, err := net.SplitHostPort(peer); err == nil {
			peer = host
		}
		if l.acquire(peer) {
			l.open.Inc()
			return &limitConn{Conn: c, release: func() { l.release(peer) }}, nil
		}
		l.refused.Inc()
		_ = c.Close()
	}
}

func (l *limitListener) acquire(peer string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.total >= l.max || l.byPeer[peer] >= l.perPeer {
		return false
	}
	l.total++
	l.byPeer[peer]++
	return true
}

func (l *limitListener) release(peer string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.total--
	if l.byPeer[peer]--; l.byPeer[peer] <= 0 {
		delete(l.byPeer, peer)
	}
	l.open.Dec()
}

// limitConn gives its slot back once, when closed.
type limitConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *limitConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}
