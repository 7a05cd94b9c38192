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
