package health

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
)

func TestHealthHandler(t *testing.T) {
	var fail atomic.Bool
	var calls atomic.Int32
	h := HealthHandler(func(ctx context.Context) error {
		calls.Add(1)
		if _, ok := ctx.Deadline(); !ok {
			t.Error("check without a deadline")
		}
		if fail.Load() {
			return errors.New("dns down")
		}
		return nil
	})
	for _, tc := range []struct {
		name string
		fail bool
		want int
	}{
		{"answering", false, http.StatusOK},
		{"not answering", true, http.StatusServiceUnavailable},
		{"answering again", false, http.StatusOK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fail.Store(tc.fail)
			time.Sleep(cacheFor + 10*time.Millisecond)
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest("GET", "/health", nil))
			if rec.Code != tc.want {
				t.Errorf("status %d, want %d", rec.Code, tc.want)
			}
		})
	}
	before := calls.Load()
	for range 10 {
		h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/health", nil))
	}
	if n := calls.Load() - before; n > 1 {
		t.Errorf("%d checks for 10 quick probes, want at most 1", n)
	}
}

func TestReadyHandler(t *testing.T) {
	for _, tc := range []struct {
		name  string
		ready bool
		want  int
	}{
		{"ready", true, http.StatusOK},
		{"not ready", false, http.StatusServiceUnavailable},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			ReadyHandler(func() bool { return tc.ready }).ServeHTTP(rec, httptest.NewRequest("GET", "/ready", nil))
			if rec.Code != tc.want {
				t.Errorf("status %d, want %d", rec.Code, tc.want)
			}
		})
	}
}

func TestStartTwinsShareAddress(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	reg := prometheus.NewRegistry()
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "test_total", Help: "test"})
	reg.MustRegister(c)
	c.Add(3)
	eps := map[string]Endpoints{addr: {
		"/metrics": MetricsHandler(reg),
		"/ready":   ReadyHandler(func() bool { return true }),
	}}
	first, err := Start(eps)
	if err != nil {
		t.Fatal(err)
	}
	second, err := Start(eps) // a second instance binds the same address
	if err != nil {
		t.Fatalf("second instance: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	for _, s := range []*Server{first, second} {
		resp, err := http.Get("http://" + addr + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !strings.Contains(string(b), "test_total 3") {
			t.Errorf("metrics body lacks the registry's counter:\n%s", b)
		}
		s.Close(ctx)
	}
	if _, err := http.Get("http://" + addr + "/ready"); err == nil {
		t.Error("still serving after both closed")
	}
}

func TestStartBadAddress(t *testing.T) {
	if _, err := Start(map[string]Endpoints{"256.1.1.1:80": {"/ready": ReadyHandler(func() bool { return true })}}); err == nil {
		t.Error("no error for a bad address")
	}
}

// TestSelfCheck checks the health self-check's metrics: a live /health is
// observed without failures, a dead address counts failures.
func TestSelfCheck(t *testing.T) {
	srv := httptest.NewServer(HealthHandler(func(context.Context) error { return nil }))
	defer srv.Close()
	dead, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadAddr := dead.Addr().String()
	dead.Close()
	for _, tc := range []struct {
		name     string
		addr     string
		failures bool
	}{
		{"live", strings.TrimPrefix(srv.URL, "http://"), false},
		{"dead", deadAddr, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, err := NewSelfCheckMetrics(prometheus.NewRegistry())
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), SelfCheckInterval*5/2)
			defer cancel()
			m.SelfCheck(ctx, tc.addr)
			var h dto.Metric
			if err := m.duration.(prometheus.Metric).Write(&h); err != nil {
				t.Fatal(err)
			}
			n, failures := h.GetHistogram().GetSampleCount(), testutil.ToFloat64(m.failures)
			if n < 1 || (failures > 0) != tc.failures || tc.failures && failures != float64(n) {
				t.Errorf("%d checks observed, %v failures; want failures %v", n, failures, tc.failures)
			}
		})
	}
}

// TestConnsPerClient: a client holding MaxConnsPerClient connections to
// the health port gets its next ones closed at once, and another client
// (the kubelet) is still answered; closing gives the slots back.
func TestConnsPerClient(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	s, err := Start(map[string]Endpoints{addr: {"/ready": ReadyHandler(func() bool { return true })}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close(context.Background())
	dial := func(src string) net.Conn {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: time.Second}
		c, err := d.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	var held []net.Conn
	for range MaxConnsPerClient + 4 {
		held = append(held, dial("127.0.0.2"))
	}
	closed := 0
	for _, c := range held {
		_ = c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		if _, err := c.Read(make([]byte, 1)); errors.Is(err, io.EOF) {
			closed++
		}
	}
	if closed != 4 {
		t.Errorf("%d of %d connections from one client closed, want 4", closed, len(held))
	}
	get := func(src string) error {
		c := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DialContext: (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}).DialContext}}
		resp, err := c.Get("http://" + addr + "/ready")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return errors.New(resp.Status)
		}
		return nil
	}
	if err := get("127.0.0.1"); err != nil {
		t.Fatalf("another client's probe: %v", err)
	}
	for _, c := range held {
		c.Close()
	}
	deadline := time.Now().Add(2 * time.Second)
	for get("127.0.0.2") != nil {
		if time.Now().After(deadline) {
			t.Fatal("the client's slots were not given back after it closed its connections")
		}
		time.Sleep(50 * time.Millisecond)
	}
}
