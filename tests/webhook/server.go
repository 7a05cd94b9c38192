// Package webhook runs the real webhook (webhook/app.Run, in-process) against
// the real control plane of tests/kubeapi: integration tests, and helpers the
// load benchmark and other integration tests reuse.
package webhook

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/nodelocaldns/nodelocaldns/tests/kubeapi"
	"github.com/nodelocaldns/nodelocaldns/tests/testenv"
	"github.com/nodelocaldns/nodelocaldns/webhook/app"
)

// AdmissionPath is where the webhook serves pod admission.
const AdmissionPath = "/mutate-v1-pod"

// ServerOptions configure an in-process webhook.
type ServerOptions struct {
	// Kubeconfig is passed as --kubeconfig (e.g. kubeapi.Env.KubeconfigPath).
	Kubeconfig string
	// CertDir receives tls.crt/tls.key for 127.0.0.1; empty means a new
	// temporary directory, removed by Stop.
	CertDir string
	// Args are extra flags for app.Run (e.g. "--kube-dns-ip=10.96.0.10").
	Args []string
	// Binary, when set, runs that webhook executable (e.g. bin/webhook) as a
	// child process with the same flags instead of app.Run in-process.
	Binary string
	// Metrics serves /metrics on a free port (MetricsURL); off by default.
	Metrics bool
	// ReadyTimeout bounds Start's wait for /readyz (30s if zero).
	ReadyTimeout time.Duration
}

// Server is a webhook started in-process with app.Run on 127.0.0.1.
type Server struct {
	// URL is the admission endpoint, https://127.0.0.1:PORT/mutate-v1-pod.
	URL string
	// CAPEM is the CA of the serving certificate (the caBundle).
	CAPEM []byte
	// CertDir holds tls.crt, tls.key and ca.crt.
	CertDir string
	// HealthURL is the health probe server, http://127.0.0.1:PORT.
	HealthURL string
	// MetricsURL is http://127.0.0.1:PORT/metrics when Options.Metrics is set.
	MetricsURL string

	ownDir bool
	cancel context.CancelFunc
	done   chan error
	err    error
	pid    int // child process, when ServerOptions.Binary is set
}

// StartServer runs app.Run in a goroutine with a fresh serving certificate
// and free ports, and waits until the webhook serves TLS and /readyz is OK.
func StartServer(ctx context.Context, opts ServerOptions) (*Server, error) {
	s := &Server{CertDir: opts.CertDir, done: make(chan error, 1)}
	if s.CertDir == "" {
		dir, err := os.MkdirTemp("", "webhook-certs-")
		if err != nil {
			return nil, fmt.Errorf("cert dir: %w", err)
		}
		s.CertDir, s.ownDir = dir, true
	}
	caPEM, err := kubeapi.NewServingCert(s.CertDir, "127.0.0.1", "localhost")
	if err != nil {
		s.cleanup()
		return nil, err
	}
	s.CAPEM = caPEM
	ports, err := testenv.FreePorts(3)
	if err != nil {
		s.cleanup()
		return nil, err
	}
	s.URL = "https://127.0.0.1:" + strconv.Itoa(ports[0]) + AdmissionPath
	s.HealthURL = "http://127.0.0.1:" + strconv.Itoa(ports[1])
	metricsAddr := "0"
	if opts.Metrics {
		metricsAddr = "127.0.0.1:" + strconv.Itoa(ports[2])
		s.MetricsURL = "http://" + metricsAddr + "/metrics"
	}
	args := []string{
		"--cert-dir=" + s.CertDir,
		"--bind-address=127.0.0.1",
		"--port=" + strconv.Itoa(ports[0]),
		"--health-probe-bind-address=127.0.0.1:" + strconv.Itoa(ports[1]),
		"--metrics-bind-address=" + metricsAddr,
		"--zap-log-level=error", // Args may override
	}
	if opts.Kubeconfig != "" {
		args = append(args, "--kubeconfig="+opts.Kubeconfig)
	}
	args = append(args, opts.Args...)

	if opts.Binary != "" {
		if err := s.startProcess(opts.Binary, args); err != nil {
			s.cleanup()
			return nil, err
		}
	} else {
		runCtx, cancel := context.WithCancel(context.Background())
		s.cancel = cancel
		go func() { s.done <- app.Run(runCtx, args) }()
	}

	timeout := opts.ReadyTimeout
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	waitCtx, waitCancel := context.WithTimeout(ctx, timeout)
	defer waitCancel()
	if err := s.waitReady(waitCtx); err != nil {
		_ = s.Stop()
		return nil, fmt.Errorf("webhook (args %q): %w", args, err)
	}
	return s, nil
}

// startProcess starts the webhook binary. It is started and waited for on
// one locked OS thread so that Pdeathsig (tied to the forking thread) kills
// it only when the test process dies. Its output goes to stderr.
func (s *Server) startProcess(bin string, args []string) error {
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		err := cmd.Wait()
		if err == nil || (cmd.ProcessState != nil && cmd.ProcessState.Success()) {
			err = nil
		}
		s.done <- err
	}()
	if err := <-started; err != nil {
		return fmt.Errorf("start %s: %w", bin, err)
	}
	s.pid = cmd.Process.Pid
	s.cancel = func() { _ = cmd.Process.Signal(syscall.SIGTERM) }
	return nil
}

// CPUTime returns the user+system CPU time the webhook process has used; it
// is only available with ServerOptions.Binary (in-process, the webhook shares
// the caller's process).
func (s *Server) CPUTime() (time.Duration, error) {
	if s.pid == 0 {
		return 0, errors.New("webhook runs in-process: no separate CPU time")
	}
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", s.pid))
	if err != nil {
		return 0, fmt.Errorf("webhook CPU time: %w", err)
	}
	// Fields after the parenthesised command name: state is field 3,
	// utime and stime are fields 14 and 15, in clock ticks (USER_HZ, 100).
	rest := string(data)
	if i := strings.LastIndexByte(rest, ')'); i >= 0 {
		rest = rest[i+1:]
	}
	f := strings.Fields(rest)
	if len(f) < 13 {
		return 0, fmt.Errorf("webhook CPU time: short /proc stat %q", data)
	}
	var ticks int64
	for _, field := range f[11:13] {
		n, err := strconv.ParseInt(field, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("webhook CPU time: %w", err)
		}
		ticks += n
	}
	return time.Duration(ticks) * 10 * time.Millisecond, nil
}

// Memory returns the resident set size of the webhook process now and its
// peak so far (the kernel's VmRSS and VmHWM), in bytes; it is only available
// with ServerOptions.Binary.
func (s *Server) Memory() (rss, peak int64, err error) {
	if s.pid == 0 {
		return 0, 0, errors.New("webhook runs in-process: no separate memory")
	}
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", s.pid))
	if err != nil {
		return 0, 0, fmt.Errorf("webhook memory: %w", err)
	}
	for line := range strings.Lines(string(data)) {
		name, value, ok := strings.Cut(line, ":")
		if !ok || (name != "VmRSS" && name != "VmHWM") {
			continue
		}
		f := strings.Fields(value) // "12345 kB"
		if len(f) != 2 || f[1] != "kB" {
			return 0, 0, fmt.Errorf("webhook memory: %q", line)
		}
		kb, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return 0, 0, fmt.Errorf("webhook memory: %w", err)
		}
		if name == "VmRSS" {
			rss = kb << 10
		} else {
			peak = kb << 10
		}
	}
	if rss == 0 || peak == 0 {
		return 0, 0, errors.New("webhook memory: no VmRSS/VmHWM in /proc status")
	}
	return rss, peak, nil
}

// ResetPeakMemory resets the peak Memory reports to the current RSS (Linux
// clear_refs); it does nothing for an in-process webhook.
func (s *Server) ResetPeakMemory() {
	if s.pid != 0 {
		_ = os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", s.pid), []byte("5"), 0)
	}
}

// Addr is the webhook server's host:port.
func (s *Server) Addr() string {
	return strings.TrimSuffix(strings.TrimPrefix(s.URL, "https://"), AdmissionPath)
}

// TLSConfig trusts the webhook's CA.
func (s *Server) TLSConfig() *tls.Config { return s.tlsConfig() }

// waitReady polls until the TLS endpoint verifies against CAPEM and the
// health server's /readyz answers 200.
func (s *Server) waitReady(ctx context.Context) error {
	var last string
	for {
		select {
		case err := <-s.done:
			s.done <- err // keep it for Stop
			return fmt.Errorf("app.Run returned before ready: %w", err)
		default:
		}
		if last = s.probe(ctx); last == "" {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("not ready in time: %s", last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// probe returns "" when the webhook is ready, else what is missing.
func (s *Server) probe(ctx context.Context) string {
	// A verified TLS handshake shows the serving side is up (a request
	// would be logged as a bad admission request).
	host := strings.TrimSuffix(strings.TrimPrefix(s.URL, "https://"), AdmissionPath)
	d := tls.Dialer{NetDialer: &net.Dialer{Timeout: 2 * time.Second}, Config: s.tlsConfig()}
	conn, err := d.DialContext(ctx, "tcp", host)
	if err != nil {
		return "admission endpoint: " + err.Error()
	}
	conn.Close()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.HealthURL+"/readyz", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "readyz: " + err.Error()
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 2048))
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Sprintf("readyz: HTTP %d: %s", resp.StatusCode, body)
	}
	return ""
}

func (s *Server) tlsConfig() *tls.Config {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(s.CAPEM)
	return &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
}

// WaitUnready polls /readyz until it fails (e.g. after kube-dns was deleted).
func (s *Server) WaitUnready(ctx context.Context, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.HealthURL+"/readyz", nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return fmt.Errorf("readyz: %w", err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("/readyz still OK after %v", timeout)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Metric returns the value of the sample whose exposition line starts with
// series (name plus labels in exposition order, e.g.
// `x_total{decision="injected",reason="injected"}`), or 0 if absent.
func (s *Server) Metric(ctx context.Context, series string) (float64, error) {
	if s.MetricsURL == "" {
		return 0, errors.New("metrics not enabled (ServerOptions.Metrics)")
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.MetricsURL, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, fmt.Errorf("metrics: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, fmt.Errorf("metrics: %w", err)
	}
	for line := range strings.Lines(string(body)) {
		if rest, ok := strings.CutPrefix(line, series+" "); ok {
			v, err := strconv.ParseFloat(strings.TrimSpace(rest), 64)
			if err != nil {
				return 0, fmt.Errorf("metric %s: %w", series, err)
			}
			return v, nil
		}
	}
	return 0, nil
}

// Client returns an HTTPS client that trusts the webhook's CA and keeps up to
// conns connections alive.
func (s *Server) Client(conns int) *http.Client {
	return &http.Client{
		Timeout: 10 * time.Second,
		Transport: &http.Transport{
			TLSClientConfig:     s.tlsConfig(),
			MaxIdleConns:        conns,
			MaxIdleConnsPerHost: conns,
			MaxConnsPerHost:     conns,
			IdleConnTimeout:     time.Minute,
		},
	}
}

// Stop cancels app.Run (or sends SIGTERM to the child process) and returns
// its error (nil for a clean shutdown).
// It is safe to call more than once.
func (s *Server) Stop() error {
	if s.cancel == nil {
		return s.err
	}
	s.cancel()
	s.cancel = nil
	select {
	case s.err = <-s.done:
	case <-time.After(30 * time.Second):
		s.err = errors.New("webhook did not stop within 30s")
		if s.pid != 0 {
			_ = syscall.Kill(s.pid, syscall.SIGKILL)
		}
	}
	s.cleanup()
	return s.err
}

func (s *Server) cleanup() {
	if s.ownDir {
		_ = os.RemoveAll(s.CertDir)
		s.ownDir = false
	}
}
