package server

import (
	"net"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// limitListener accepts at most cap(sem) connections at once; it closes
// any beyond at once (rather than leaving them in the kernel's backlog), so
// that a client holding many idle connections cannot make the server hold
// more memory, and new clients learn it at once.
type limitListener struct {
	net.Listener
	sem     chan struct{}
	open    prometheus.Gauge
	refused prometheus.Counter
}

func newLimitListener(l net.Listener, max int, m *metrics) *limitListener {
	return &limitListener{Listener: l, sem: make(chan struct{}, max), open: m.connections, refused: m.refused}
}

// Accept returns the next connection within the limit.
func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		select {
		case l.sem <- struct{}{}:
			l.open.Inc()
			return &limitConn{Conn: c, release: l.release}, nil
		default:
			l.refused.Inc()
			_ = c.Close()
		}
	}
}

func (l *limitListener) release() {
	<-l.sem
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
