package server

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/nodelocaldns/nodelocaldns/tests/kubeapi"
	"github.com/nodelocaldns/nodelocaldns/tests/testenv"
)

type running struct {
	addr string
	pool *x509.CertPool
}

// start serves an echo handler (it reads the whole body) with opts on a
// free loopback port.
func start(t *testing.T, opts Options) running {
	t.Helper()
	dir := t.TempDir()
	caPEM, err := kubeapi.NewServingCert(dir, "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	port := testenv.FreePort(t)
	opts.Host, opts.Port, opts.CertDir = "127.0.0.1", port, dir
	opts.Registerer = prometheus.NewRegistry()
	s, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	s.Register("/echo", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, err := io.Copy(io.Discard, r.Body)
		if err != nil {
			return
		}
		fmt.Fprintf(w, "%d", n)
	}))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Start(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Start: %v", err)
		}
	})
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	deadline := time.Now().Add(10 * time.Second)
	for s.StartedChecker()(nil) != nil || !canDial(addr) {
		if time.Now().After(deadline) {
			t.Fatal("server did not start")
		}
		time.Sleep(20 * time.Millisecond)
	}
	return running{addr: addr, pool: pool}
}

func canDial(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err == nil {
		c.Close()
	}
	return err == nil
}

// TestTLSPolicy checks what the server negotiates: TLS 1.2 with AEAD suites
// only (CBC and RSA key exchange refused), TLS 1.3, no TLS 1.1; with 1.3 as
// the minimum, no TLS 1.2 at all.
func TestTLSPolicy(t *testing.T) {
	for _, tc := range []struct {
		name    string
		min     uint16
		client  *tls.Config
		wantErr bool
	}{
		{name: "TLS 1.3", client: &tls.Config{MinVersion: tls.VersionTLS13}},
		{name: "TLS 1.2 AES-GCM", client: &tls.Config{MaxVersion: tls.VersionTLS12, CipherSuites: []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256}}},
		{name: "TLS 1.2 ChaCha20", client: &tls.Config{MaxVersion: tls.VersionTLS12, CipherSuites: []uint16{tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256}}},
		{name: "TLS 1.2 CBC-SHA1 refused", client: &tls.Config{MaxVersion: tls.VersionTLS12,
			CipherSuites: []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA, tls.TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA}}, wantErr: true},
		{name: "TLS 1.2 CBC-SHA256 refused", client: &tls.Config{MaxVersion: tls.VersionTLS12,
			CipherSuites: []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256}}, wantErr: true},
		{name: "TLS 1.1 refused", client: &tls.Config{MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS11}, wantErr: true},
		{name: "min 1.3: TLS 1.2 refused", min: tls.VersionTLS13, client: &tls.Config{MaxVersion: tls.VersionTLS12}, wantErr: true},
		{name: "min 1.3: TLS 1.3", min: tls.VersionTLS13, client: &tls.Config{MinVersion: tls.VersionTLS13}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := start(t, Options{TLSMinVersion: tc.min})
			cfg := tc.client.Clone()
			cfg.RootCAs = r.pool
			conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", r.addr, cfg)
			if tc.wantErr {
				if err == nil {
					st := conn.ConnectionState()
					conn.Close()
					t.Fatalf("handshake succeeded with %s %s", tls.VersionName(st.Version), tls.CipherSuiteName(st.CipherSuite))
				}
				return
			}
			if err != nil {
				t.Fatalf("handshake: %v", err)
			}
			conn.Close()
		})
	}
}

// TestAEADSuitesOnly checks the allowed list holds AEAD suites only.
func TestAEADSuitesOnly(t *testing.T) {
	for _, id := range AEADSuites() {
		name := tls.CipherSuiteName(id)
		if !strings.Contains(name, "_GCM_") && !strings.Contains(name, "CHACHA20_POLY1305") || !strings.HasPrefix(name, "TLS_ECDHE_") {
			t.Errorf("suite %s is not ECDHE with an AEAD cipher", name)
		}
	}
}

// TestSlowClientsCutOff checks the timeouts: a body that stalls, headers
// that never end and a silent TLS connection are all closed within the read
// timeout (plus margin); an idle keep-alive connection within the idle one.
func TestSlowClientsCutOff(t *testing.T) {
	const timeout = 500 * time.Millisecond
	const margin = 3 * time.Second // scheduling on a loaded machine
	r := start(t, Options{ReadTimeout: timeout, WriteTimeout: timeout, IdleTimeout: timeout})
	dialTLS := func(t *testing.T) *tls.Conn {
		t.Helper()
		conn, err := tls.Dial("tcp", r.addr, &tls.Config{RootCAs: r.pool, MinVersion: tls.VersionTLS12})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		return conn
	}
	// closedWithin reads until the server closes the connection.
	closedWithin := func(t *testing.T, conn net.Conn, start time.Time) {
		t.Helper()
		_ = conn.SetReadDeadline(time.Now().Add(timeout + margin))
		_, err := io.Copy(io.Discard, conn)
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatalf("connection still open after %v", time.Since(start))
		}
		if d := time.Since(start); d < timeout/2 {
			t.Errorf("closed after %v, before the timeout %v", d, timeout)
		}
	}
	t.Run("stalled body", func(t *testing.T) {
		conn := dialTLS(t)
		start := time.Now()
		fmt.Fprintf(conn, "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n%s", strings.Repeat("a", 1000))
		closedWithin(t, conn, start)
	})
	t.Run("slow body, a byte at a time", func(t *testing.T) {
		conn := dialTLS(t)
		start := time.Now()
		fmt.Fprintf(conn, "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n")
		go func() {
			for range 1000 {
				if _, err := conn.Write([]byte("a")); err != nil {
					return
				}
				time.Sleep(timeout / 10)
			}
		}()
		closedWithin(t, conn, start)
	})
	t.Run("headers never end", func(t *testing.T) {
		conn := dialTLS(t)
		start := time.Now()
		fmt.Fprintf(conn, "POST /echo HTTP/1.1\r\nHost: x\r\n")
		closedWithin(t, conn, start)
	})
	t.Run("no TLS handshake", func(t *testing.T) {
		conn, err := net.Dial("tcp", r.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		closedWithin(t, conn, time.Now())
	})
	t.Run("idle keep-alive", func(t *testing.T) {
		conn := dialTLS(t)
		fmt.Fprintf(conn, "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc")
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		if string(body) != "3" {
			t.Fatalf("echo = %q", body)
		}
		closedWithin(t, conn, time.Now())
	})
	t.Run("a prompt request is served", func(t *testing.T) {
		c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: r.pool}}, Timeout: 5 * time.Second}
		resp, err := c.Post("https://"+r.addr+"/echo", "application/json", strings.NewReader(strings.Repeat("x", 100000)))
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(body) != "100000" {
			t.Errorf("echo = %q", body)
		}
	})
}

// TestOversizedHeaders checks the header limit.
func TestOversizedHeaders(t *testing.T) {
	r := start(t, Options{MaxHeaderBytes: 4096})
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: r.pool}}, Timeout: 5 * time.Second}
	req, _ := http.NewRequest(http.MethodPost, "https://"+r.addr+"/echo", strings.NewReader("x"))
	req.Header.Set("X-Big", strings.Repeat("b", 64<<10))
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("HTTP %d, want 431", resp.StatusCode)
	}
}

func TestNewRefusesBadOptions(t *testing.T) {
	for _, o := range []Options{{ReadTimeout: -1}, {TLSMinVersion: tls.VersionTLS11}} {
		if _, err := New(o); err == nil {
			t.Errorf("New(%+v) succeeded", o)
		}
	}
	for _, v := range []string{"1.1", "", "tls1.3"} {
		if _, err := ParseTLSVersion(v); err == nil {
			t.Errorf("ParseTLSVersion(%q) succeeded", v)
		}
	}
}

// TestConnectionLimit checks that connections beyond a client's share
// (MaxConnections/4) or beyond MaxConnections are closed at once, and that
// a closed connection frees its slot.
func TestConnectionLimit(t *testing.T) {
	r := start(t, Options{MaxConnections: 8}) // 2 per client address
	cfg := &tls.Config{RootCAs: r.pool, MinVersion: tls.VersionTLS12}
	dialFrom := func(local string) (*tls.Conn, error) {
		d := &net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}}
		return tls.DialWithDialer(d, "tcp", r.addr, cfg)
	}
	var held []*tls.Conn
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	// refusedFrom waits until a connection from local is refused (the
	// readiness probe of start may still hold a slot for a moment).
	refusedFrom := func(local string) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for {
			c, err := dialFrom(local)
			if err != nil {
				return
			}
			c.Close()
			if time.Now().After(deadline) {
				t.Fatalf("a connection from %s was accepted beyond the limit", local)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	// Four addresses, two connections each: the share, then the total.
	for _, local := range []string{"127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"} {
		for range 2 {
			c, err := dialFrom(local)
			if err != nil {
				t.Fatalf("connection within the limits from %s: %v", local, err)
			}
			held = append(held, c)
		}
		if local == "127.0.0.2" {
			refusedFrom(local) // over its share, others still welcome
		}
	}
	refusedFrom("127.0.0.6") // over the total
	held[0].Close()
	held = held[1:]
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, err := dialFrom("127.0.0.6")
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no slot after closing a connection: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestGracefulShutdown checks that a request in flight when the server's
// context ends still completes, with a live request context.
func TestGracefulShutdown(t *testing.T) {
	dir := t.TempDir()
	caPEM, err := kubeapi.NewServingCert(dir, "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	port := testenv.FreePort(t)
	s, err := New(Options{Host: "127.0.0.1", Port: port, CertDir: dir, ShutdownTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	entered := make(chan struct{})
	s.Register("/slow", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(entered)
		time.Sleep(500 * time.Millisecond)
		if err := r.Context().Err(); err != nil {
			http.Error(w, "request context ended: "+err.Error(), http.StatusInternalServerError)
			return
		}
		fmt.Fprint(w, "done")
	}))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Start(ctx) }()
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	for deadline := time.Now().Add(10 * time.Second); !canDial(addr); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("server did not start")
		}
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}, Timeout: 10 * time.Second}
	type result struct {
		body string
		err  error
	}
	res := make(chan result, 1)
	go func() {
		resp, err := c.Get("https://" + addr + "/slow")
		if err != nil {
			res <- result{err: err}
			return
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		res <- result{body: string(b)}
	}()
	<-entered
	cancel()
	r := <-res
	if r.err != nil || r.body != "done" {
		t.Errorf("in-flight request during shutdown: %q, %v", r.body, r.err)
	}
	if err := <-done; err != nil {
		t.Errorf("Start: %v", err)
	}
}
