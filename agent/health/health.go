// Package health serves the agent's HTTP endpoints: /health (200 only
// while the DNS server answers a real self-query), /ready and /metrics from
// the agent's own Prometheus registry. Every listener is opened with
// SO_REUSEPORT so that a second instance can bind beside the first.
package health

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/sys/unix"
)

// CheckTimeout bounds one health self-query.
const CheckTimeout = time.Second

// cacheFor is how long a health result is reused, so that frequent probes
// do not turn into a query each.
const cacheFor = 250 * time.Millisecond

// Listen opens a TCP listener on addr with SO_REUSEPORT.
func Listen(addr string) (net.Listener, error) {
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		if err := c.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
		}); err != nil {
			return err
		}
		return serr
	}}
	l, err := lc.Listen(context.Background(), "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("health: listen %s: %w", addr, err)
	}
	return l, nil
}

// HealthHandler answers 200 OK while check succeeds and 503 otherwise.
func HealthHandler(check func(ctx context.Context) error) http.Handler {
	var (
		mu   sync.Mutex
		last time.Time
		err  error
	)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		if time.Since(last) > cacheFor {
			ctx, cancel := context.WithTimeout(r.Context(), CheckTimeout)
			err = check(ctx)
			cancel()
			last = time.Now()
		}
		e := err
		mu.Unlock()
		if e != nil {
			http.Error(w, e.Error(), http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("OK"))
	})
}

// ReadyHandler answers 200 OK while ready returns true and 503 otherwise.
func ReadyHandler(ready func() bool) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		if !ready() {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("OK"))
	})
}

// MetricsHandler serves the metrics of g.
func MetricsHandler(g prometheus.Gatherer) http.Handler {
	return promhttp.HandlerFor(g, promhttp.HandlerOpts{})
}

// Endpoints are the paths served on one address.
type Endpoints map[string]http.Handler

// Limits of the HTTP endpoints: they listen on the agent's local IP (the
// kubelet's probes, Prometheus), which every pod on the node can reach, so
// no client may hold more than MaxConnsPerClient connections, and every
// request is bounded in time and header size.
const (
	MaxConnsPerClient = 8
	maxHeaderBytes    = 8 << 10
	readTimeout       = 10 * time.Second
	writeTimeout      = 30 * time.Second
	idleTimeout       = 30 * time.Second
)

// clientLimit is a listener that closes a new connection at once when its
// client (remote IP) already holds max: a pod flooding the health port
// cannot hold the kubelet's probes out, nor make the agent hold more than
// max connections' buffers per pod.
type clientLimit struct {
	net.Listener
	max int

	mu    sync.Mutex
	conns map[netip.Addr]int
}

func (l *clientLimit) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		var ip netip.Addr
		if a, ok := c.RemoteAddr().(*net.TCPAddr); ok {
			ip = a.AddrPort().Addr().Unmap()
		}
		l.mu.Lock()
		if l.conns[ip] >= l.max {
			l.mu.Unlock()
			c.Close()
			continue
		}
		l.conns[ip]++
		l.mu.Unlock()
		return &limitedConn{Conn: c, l: l, ip: ip}, nil
	}
}

// limitedConn gives its client's slot back when closed.
type limitedConn struct {
	net.Conn
	l    *clientLimit
	ip   netip.Addr
	once sync.Once
}

func (c *limitedConn) Close() error {
	c.once.Do(func() {
		c.l.mu.Lock()
		if c.l.conns[c.ip]--; c.l.conns[c.ip] <= 0 {
			delete(c.l.conns, c.ip)
		}
		c.l.mu.Unlock()
	})
	return c.Conn.Close()
}

// Server serves several addresses, each with its endpoints.
type Server struct {
	srvs []*http.Server
	wg   sync.WaitGroup
}

// Start listens on every address of eps (with SO_REUSEPORT) and serves
// its endpoints. On error nothing is left listening.
func Start(eps map[string]Endpoints) (*Server, error) {
	s := &Server{}
	for addr, paths := range eps {
		l, err := Listen(addr)
		if err != nil {
			s.Close(context.Background())
			return nil, err
		}
		mux := http.NewServeMux()
		for p, h := range paths {
			mux.Handle(p, h)
		}
		hs := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: readTimeout,
			WriteTimeout: writeTimeout, IdleTimeout: idleTimeout, MaxHeaderBytes: maxHeaderBytes}
		s.srvs = append(s.srvs, hs)
		limited := &clientLimit{Listener: l, max: MaxConnsPerClient, conns: map[netip.Addr]int{}}
		s.wg.Go(func() {
			if err := hs.Serve(limited); err != nil && !errors.Is(err, http.ErrServerClosed) {
				return
			}
		})
	}
	return s, nil
}

// Close shuts every listener down, waiting for requests until ctx is done.
func (s *Server) Close(ctx context.Context) {
	for _, hs := range s.srvs {
		if err := hs.Shutdown(ctx); err != nil {
			hs.Close()
		}
	}
	s.wg.Wait()
}
