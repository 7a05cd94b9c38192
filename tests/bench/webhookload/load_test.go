package main

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
)

// fakeWebhook answers AdmissionReviews like the real one would for the two
// pods the load sends; broken makes it answer with a wrong UID.
func fakeWebhook(t *testing.T, broken bool, conns *atomic.Int64) *httptest.Server {
	t.Helper()
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var review admissionv1.AdmissionReview
		if err := json.NewDecoder(r.Body).Decode(&review); err != nil || review.Request == nil {
			http.Error(w, "bad review", http.StatusBadRequest)
			return
		}
		var pod corev1.Pod
		if err := json.Unmarshal(review.Request.Object.Raw, &pod); err != nil {
			http.Error(w, "bad pod", http.StatusBadRequest)
			return
		}
		resp := &admissionv1.AdmissionResponse{UID: review.Request.UID, Allowed: true}
		if broken {
			resp.UID = "wrong"
		}
		if pod.Annotations["node-local-dns-injection"] != "disabled" {
			resp.Patch = []byte(`[{"op":"replace","path":"/spec/dnsPolicy","value":"None"}]`)
		}
		review.Response, review.Request = resp, nil
		_ = json.NewEncoder(w).Encode(review)
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv
}

func TestRunLoad(t *testing.T) {
	for _, tc := range []struct {
		name       string
		broken     bool
		requests   int
		wantErrors bool
	}{
		{name: "all answers checked", requests: 400},
		{name: "wrong UID is an error", broken: true, requests: 40, wantErrors: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var conns atomic.Int64
			srv := fakeWebhook(t, tc.broken, &conns)
			client := srv.Client()
			client.Transport.(*http.Transport).MaxIdleConnsPerHost = 4
			client.Transport.(*http.Transport).MaxConnsPerHost = 4
			res, err := runLoad(context.Background(), loadConfig{
				URL: srv.URL, Client: client, Requests: tc.requests, Duration: 20 * time.Second,
				Workers: 4, Namespace: "load",
			})
			if err != nil {
				t.Fatal(err)
			}
			if res.Sent != tc.requests {
				t.Errorf("sent %d, want %d", res.Sent, tc.requests)
			}
			if tc.wantErrors {
				if res.Errors != tc.requests || res.FirstErr == nil || !strings.Contains(res.FirstErr.Error(), "UID") {
					t.Errorf("errors = %d (first %v), want %d UID errors", res.Errors, res.FirstErr, tc.requests)
				}
				return
			}
			if res.Errors != 0 {
				t.Fatalf("%d errors, first: %v", res.Errors, res.FirstErr)
			}
			if want := tc.requests * 3 / 4; res.Injected != want {
				t.Errorf("injected %d, want %d", res.Injected, want)
			}
			if len(res.Latencies) != tc.requests || res.Quantile(0.5) <= 0 || res.Quantile(0.99) < res.Quantile(0.5) {
				t.Errorf("latencies: %d samples, p50 %v, p99 %v", len(res.Latencies), res.Quantile(0.5), res.Quantile(0.99))
			}
			if n := conns.Load(); n > 4 {
				t.Errorf("%d connections for 4 workers: keep-alive not used", n)
			}
		})
	}
}

func TestRunLoadStopsAtDuration(t *testing.T) {
	var conns atomic.Int64
	srv := fakeWebhook(t, false, &conns)
	start := time.Now()
	res, err := runLoad(context.Background(), loadConfig{
		URL: srv.URL, Client: srv.Client(), Requests: 1_000_000, Duration: 300 * time.Millisecond,
		Workers: 2, Namespace: "load",
	})
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("run took %v with a 300ms bound", d)
	}
	if res.Sent >= 1_000_000 || res.Errors != 0 {
		t.Errorf("sent %d with %d errors (first %v)", res.Sent, res.Errors, res.FirstErr)
	}
}

func TestParseFlags(t *testing.T) {
	for _, tc := range []struct {
		name    string
		args    []string
		wantErr string
	}{
		{name: "defaults", args: nil},
		{name: "custom", args: []string{"-requests=100", "-workers=2", "-duration=5s"}},
		{name: "zero requests", args: []string{"-requests=0"}, wantErr: "-requests"},
		{name: "too many workers", args: []string{"-workers=1000"}, wantErr: "-workers"},
		{name: "negative duration", args: []string{"-duration=-1s"}, wantErr: "-duration"},
		{name: "stray argument", args: []string{"extra"}, wantErr: "unexpected"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseFlags(tc.args)
			if tc.wantErr == "" && err != nil {
				t.Fatalf("unexpected error: %v", err)
			}
			if tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Fatalf("error = %v, want one mentioning %q", err, tc.wantErr)
			}
		})
	}
}

func TestVerdict(t *testing.T) {
	fast := result{Sent: 3000, Elapsed: time.Second, Latencies: []time.Duration{time.Millisecond, 2 * time.Millisecond}}
	slow := result{Sent: 100, Elapsed: time.Second, Latencies: []time.Duration{time.Millisecond, 20 * time.Millisecond}}
	if v := verdict(fast); v != "met" {
		t.Errorf("verdict(fast) = %q, want met", v)
	}
	if v := verdict(slow); !strings.Contains(v, "MISSED") || !strings.Contains(v, "rate") || !strings.Contains(v, "p99") {
		t.Errorf("verdict(slow) = %q, want both targets missed", v)
	}
}
