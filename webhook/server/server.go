// Package server is the webhook's HTTPS server: controller-runtime's
// webhook.Server interface, with the limits controller-runtime's own server
// does not set (read, write and idle timeouts, header size) and a TLS policy
// of TLS 1.2 with AEAD cipher suites only, or TLS 1.3.
package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"sigs.k8s.io/controller-runtime/pkg/certwatcher"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/webhook"
)

// Defaults of Options. The API server waits at most timeoutSeconds (30 at
// most, 3 in the shipped configuration) for a webhook and sends the body at
// once, so a request that takes longer to arrive is not from it.
const (
	DefaultReadTimeout  = 10 * time.Second
	DefaultWriteTimeout = 10 * time.Second
	// DefaultIdleTimeout is longer than the idle timeout of the API
	// server's webhook client (90s, Go's default transport), so that the
	// client, not the server, closes an idle connection: a server-side close
	// racing a new request would fail that admission (a POST is not retried).
	DefaultIdleTimeout    = 120 * time.Second
	DefaultMaxHeaderBytes = 64 << 10
	// DefaultMaxConnections bounds open connections: a TLS connection costs
	// a few tens of KB, the API server needs a handful.
	DefaultMaxConnections = 1024
	// DefaultShutdownTimeout bounds in-flight requests after Start's
	// context ends.
	DefaultShutdownTimeout = 30 * time.Second
)

// aeadSuites are the TLS 1.2 cipher suites allowed: ECDHE key exchange with
// AES-GCM or ChaCha20-Poly1305 (no CBC, no SHA-1 MAC, no RSA key exchange).
// TLS 1.3 suites are all AEAD and not configurable.
var aeadSuites = []uint16{
	tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
	tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
}

// AEADSuites returns the TLS 1.2 cipher suites the server accepts.
func AEADSuites() []uint16 { return append([]uint16(nil), aeadSuites...) }

// ParseTLSVersion parses "1.2" or "1.3".
func ParseTLSVersion(s string) (uint16, error) {
	switch s {
	case "1.2":
		return tls.VersionTLS12, nil
	case "1.3":
		return tls.VersionTLS13, nil
	}
	return 0, fmt.Errorf("TLS version %q: want 1.2 or 1.3", s)
}

// Options configure a Server.
type Options struct {
	// Host and Port are where it listens (Host "" is every address).
	Host string
	Port int
	// CertDir holds tls.crt and tls.key, reloaded when they change, unless
	// a TLSOpts function sets GetCertificate.
	CertDir string
	// TLSMinVersion is tls.VersionTLS12 (default) or tls.VersionTLS13.
	TLSMinVersion uint16
	// EnableHTTP2 offers h2 in ALPN; only http/1.1 otherwise.
	EnableHTTP2 bool
	// TLSOpts change the TLS configuration after the built-in settings.
	TLSOpts []func(*tls.Config)
	// ReadTimeout bounds reading a request, headers and body, and the TLS
	// handshake; WriteTimeout bounds the rest of the exchange from the end
	// of the headers; IdleTimeout closes idle keep-alive connections.
	ReadTimeout, WriteTimeout, IdleTimeout time.Duration
	// MaxHeaderBytes bounds the request headers.
	MaxHeaderBytes int
	// MaxConnections bounds the open connections; more are closed at once.
	MaxConnections int
	// ShutdownTimeout bounds how long in-flight requests may finish once
	// the context given to Start ends.
	ShutdownTimeout time.Duration
	// Registerer receives the request metrics; nil leaves them unregistered.
	Registerer prometheus.Registerer
	// Log receives the server's errors; the zero value discards them.
	Log logr.Logger
}

// Server serves the registered webhooks over HTTPS.
type Server struct {
	opts    Options
	mux     *http.ServeMux
	metrics *metrics

	mu      sync.Mutex
	started bool
}

var _ webhook.Server = (*Server)(nil)

// New returns a Server; the zero durations and sizes take the defaults.
func New(opts Options) (*Server, error) {
	if opts.ReadTimeout == 0 {
		opts.ReadTimeout = DefaultReadTimeout
	}
	if opts.WriteTimeout == 0 {
		opts.WriteTimeout = DefaultWriteTimeout
	}
	if opts.IdleTimeout == 0 {
		opts.IdleTimeout = DefaultIdleTimeout
	}
	if opts.MaxHeaderBytes == 0 {
		opts.MaxHeaderBytes = DefaultMaxHeaderBytes
	}
	if opts.MaxConnections == 0 {
		opts.MaxConnections = DefaultMaxConnections
	}
	if opts.ShutdownTimeout == 0 {
		opts.ShutdownTimeout = DefaultShutdownTimeout
	}
	if opts.TLSMinVersion == 0 {
		opts.TLSMinVersion = tls.VersionTLS12
	}
	if opts.ReadTimeout < 0 || opts.WriteTimeout < 0 || opts.IdleTimeout < 0 || opts.MaxHeaderBytes < 0 || opts.MaxConnections < 0 {
		return nil, errors.New("webhook server: timeouts, header size and connection limit must not be negative")
	}
	if opts.TLSMinVersion != tls.VersionTLS12 && opts.TLSMinVersion != tls.VersionTLS13 {
		return nil, fmt.Errorf("webhook server: TLS minimum version %#x: want 1.2 or 1.3", opts.TLSMinVersion)
	}
	if opts.Log.GetSink() == nil {
		opts.Log = logr.Discard()
	}
	m, err := newMetrics(opts.Registerer)
	if err != nil {
		return nil, err
	}
	return &Server{opts: opts, mux: http.NewServeMux(), metrics: m}, nil
}

// NeedLeaderElection implements webhook.Server: every replica serves.
func (s *Server) NeedLeaderElection() bool { return false }

// Register serves hook at path, counting its requests.
func (s *Server) Register(path string, hook http.Handler) {
	s.mux.Handle(path, promhttp.InstrumentHandlerInFlight(s.metrics.inFlight,
		promhttp.InstrumentHandlerCounter(s.metrics.requests.MustCurryWith(prometheus.Labels{"path": path}), hook)))
}

// WebhookMux implements webhook.Server.
func (s *Server) WebhookMux() *http.ServeMux { return s.mux }

// TLSConfig returns the server's TLS configuration without a certificate
// source: the minimum version, the AEAD suites for TLS 1.2, ALPN, then
// Options.TLSOpts.
func (s *Server) TLSConfig() *tls.Config {
	cfg := &tls.Config{
		MinVersion:   s.opts.TLSMinVersion,
		CipherSuites: AEADSuites(),
		NextProtos:   []string{"http/1.1"},
	}
	if s.opts.EnableHTTP2 {
		cfg.NextProtos = []string{"h2", "http/1.1"}
	}
	for _, opt := range s.opts.TLSOpts {
		opt(cfg)
	}
	return cfg
}

// Start serves until ctx ends, then lets in-flight requests finish for at
// most ShutdownTimeout.
func (s *Server) Start(ctx context.Context) error {
	cfg := s.TLSConfig()
	if cfg.GetCertificate == nil {
		cw, err := certwatcher.New(filepath.Join(s.opts.CertDir, "tls.crt"), filepath.Join(s.opts.CertDir, "tls.key"))
		if err != nil {
			return fmt.Errorf("webhook server: serving certificate: %w", err)
		}
		cfg.GetCertificate = cw.GetCertificate
		go func() {
			if err := cw.Start(ctx); err != nil {
				s.opts.Log.Error(err, "certificate watcher")
			}
		}()
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(s.opts.Host, strconv.Itoa(s.opts.Port)))
	if err != nil {
		return fmt.Errorf("webhook server: %w", err)
	}
	srv := &http.Server{
		Handler:           s.mux,
		TLSConfig:         cfg,
		ReadHeaderTimeout: s.opts.ReadTimeout,
		ReadTimeout:       s.opts.ReadTimeout,
		WriteTimeout:      s.opts.WriteTimeout,
		IdleTimeout:       s.opts.IdleTimeout,
		MaxHeaderBytes:    s.opts.MaxHeaderBytes,
		ErrorLog:          log.New(logWriter{s.opts.Log}, "", 0),
		// Requests keep ctx's values but not its end: in-flight requests
		// finish during the graceful shutdown instead of failing at once.
		BaseContext: func(net.Listener) context.Context { return context.WithoutCancel(ctx) },
	}
	if !s.opts.EnableHTTP2 {
		srv.TLSNextProto = map[string]func(*http.Server, *tls.Conn, http.Handler){}
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), s.opts.ShutdownTimeout)
		defer cancel()
		if err := srv.Shutdown(sctx); err != nil {
			s.opts.Log.Error(err, "webhook server shutdown")
			_ = srv.Close()
		}
	}()
	s.mu.Lock()
	s.started = true
	s.mu.Unlock()
	s.opts.Log.Info("serving webhooks", "address", ln.Addr().String(), "tlsMinVersion", tls.VersionName(s.opts.TLSMinVersion),
		"readTimeout", s.opts.ReadTimeout, "writeTimeout", s.opts.WriteTimeout, "idleTimeout", s.opts.IdleTimeout)
	if err := srv.ServeTLS(newLimitListener(ln, s.opts.MaxConnections, s.metrics), "", ""); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("webhook server: %w", err)
	}
	<-done
	return nil
}

// StartedChecker is healthy once the server listens.
func (s *Server) StartedChecker() healthz.Checker {
	return func(*http.Request) error {
		s.mu.Lock()
		defer s.mu.Unlock()
		if !s.started {
			return errors.New("webhook server not started")
		}
		return nil
	}
}

// logWriter passes net/http's error log (TLS handshake errors, timeouts) to
// logr at V(1): every port scan would otherwise fill the log.
type logWriter struct{ log logr.Logger }

func (w logWriter) Write(p []byte) (int, error) {
	w.log.V(1).Info(string(p))
	return len(p), nil
}
