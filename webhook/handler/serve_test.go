package handler

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	admissionv1 "k8s.io/api/admission/v1"
)

func serve(h http.Handler, method string, body io.Reader, contentLength int64) *httptest.ResponseRecorder {
	return serveFrom(h, "192.0.2.1:1234", method, body, contentLength)
}

func serveFrom(h http.Handler, remote, method string, body io.Reader, contentLength int64) *httptest.ResponseRecorder {
	rec := httptest.NewRecorder()
	r := httptest.NewRequest(method, Path, body)
	r.RemoteAddr = remote
	r.ContentLength = contentLength
	r.Header.Set("Content-Type", "application/json")
	h.ServeHTTP(rec, r)
	return rec
}

func decodeReview(t *testing.T, rec *httptest.ResponseRecorder) *admissionv1.AdmissionResponse {
	t.Helper()
	var review admissionv1.AdmissionReview
	if err := json.Unmarshal(rec.Body.Bytes(), &review); err != nil || review.Response == nil {
		t.Fatalf("HTTP %d, not an AdmissionReview: %v: %s", rec.Code, err, rec.Body.String())
	}
	if review.APIVersion != "admission.k8s.io/v1" || review.Kind != "AdmissionReview" {
		t.Errorf("review type %s %s", review.APIVersion, review.Kind)
	}
	return review.Response
}

// TestServeHTTP checks the HTTP side: every body that is a review is answered
// allowed with the request's UID; bodies that are too large or over budget
// are refused before they are read in full.
func TestServeHTTP(t *testing.T) {
	good := reviewBytes(t, podRequest(t, admissionv1.Create, testPod()))
	for _, tc := range []struct {
		name          string
		method        string
		body          []byte
		contentLength int64 // -1: unknown (chunked)
		maxBytes      int64
		wantCode      int
		wantReason    string // "" when no review is expected
		wantUID       string
		wantPatched   bool
	}{
		{name: "pod create", body: good, contentLength: int64(len(good)), wantCode: 200, wantReason: "injected", wantUID: "uid-1", wantPatched: true},
		{name: "pod create, chunked", body: good, contentLength: -1, wantCode: 200, wantReason: "injected", wantUID: "uid-1", wantPatched: true},
		{name: "not JSON", body: []byte("not json"), contentLength: 8, wantCode: 200, wantReason: ReasonUndecodableReview},
		{name: "review without request", body: []byte(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}`), contentLength: -1,
			wantCode: 200, wantReason: ReasonUndecodableReview},
		{name: "wrong kind keeps the UID", body: []byte(`{"request":{"uid":"u-2","kind":{"version":"v1","kind":"Service"},"operation":"CREATE","object":{}}}`),
			contentLength: -1, wantCode: 200, wantReason: ReasonWrongKind, wantUID: "u-2"},
		{name: "announced too large", body: good, contentLength: 1 << 30, wantCode: http.StatusRequestEntityTooLarge},
		{name: "too large, chunked", body: good, contentLength: -1, maxBytes: 100, wantCode: http.StatusRequestEntityTooLarge},
		{name: "exactly the limit", body: good, contentLength: -1, maxBytes: int64(len(good)), wantCode: 200, wantReason: "injected", wantUID: "uid-1", wantPatched: true},
		{name: "GET", method: http.MethodGet, wantCode: http.StatusMethodNotAllowed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reg := prometheus.NewRegistry()
			h, err := New(Options{Config: testConfig(t), KubeDNSIPs: func() []string { return []string{"10.96.0.10"} },
				Registerer: reg, MaxRequestBytes: tc.maxBytes})
			if err != nil {
				t.Fatal(err)
			}
			method := tc.method
			if method == "" {
				method = http.MethodPost
			}
			rec := serve(h, method, bytes.NewReader(tc.body), tc.contentLength)
			if rec.Code != tc.wantCode {
				t.Fatalf("HTTP %d, want %d: %s", rec.Code, tc.wantCode, rec.Body.String())
			}
			if got := testutil.ToFloat64(h.metrics.bodyBytes); got != 0 {
				t.Errorf("body bytes held after the request = %v", got)
			}
			if tc.wantReason == "" {
				if rec.Code == http.StatusRequestEntityTooLarge {
					if got := testutil.ToFloat64(h.metrics.admissions.WithLabelValues(DecisionError, ReasonRequestTooLarge)); got != 1 {
						t.Errorf("request-too-large counted %v times", got)
					}
					if rec.Header().Get("Connection") != "close" {
						t.Error("connection not closed after a refused body")
					}
				}
				return
			}
			resp := decodeReview(t, rec)
			if !resp.Allowed || string(resp.UID) != tc.wantUID {
				t.Errorf("allowed=%v uid=%q, want allowed with uid %q (%+v)", resp.Allowed, resp.UID, tc.wantUID, resp.Result)
			}
			if resp.AuditAnnotations[AuditReason] != tc.wantReason {
				t.Errorf("reason %q, want %q", resp.AuditAnnotations[AuditReason], tc.wantReason)
			}
			if (len(resp.Patch) > 0) != tc.wantPatched {
				t.Errorf("patch %s, want patched=%v", resp.Patch, tc.wantPatched)
			}
			if !tc.wantPatched && len(resp.Warnings) == 0 {
				t.Error("an error without a warning")
			}
		})
	}
}

// stallingBody returns n bytes of a body then blocks until release is closed.
type stallingBody struct {
	n       int
	release chan struct{}
	sent    chan struct{}
	once    sync.Once
}

func (b *stallingBody) Read(p []byte) (int, error) {
	if b.n > 0 {
		k := min(len(p), b.n)
		for i := range k {
			p[i] = ' '
		}
		b.n -= k
		return k, nil
	}
	b.once.Do(func() { close(b.sent) })
	<-b.release
	return 0, io.ErrUnexpectedEOF
}

// TestServeHTTPBudget checks the shared budget: stalled uploads hold at most
// the budget, a request beyond it is refused at once with 503, and the
// budget is given back when the uploads end.
func TestServeHTTPBudget(t *testing.T) {
	const maxBytes, budgetBytes = 256 << 10, 1 << 20
	h, err := New(Options{Config: testConfig(t), KubeDNSIPs: func() []string { return []string{"10.96.0.10"} },
		Registerer: prometheus.NewRegistry(), MaxRequestBytes: maxBytes, BodyBudgetBytes: budgetBytes})
	if err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	var wg sync.WaitGroup
	codes := make(chan int, 8)
	for i := range 8 { // each holds 256 KiB (250 KiB read in doubling buffers): 4 fill the budget
		b := &stallingBody{n: 250 << 10, release: release, sent: make(chan struct{})}
		done := make(chan struct{})
		wg.Go(func() {
			defer close(done)
			codes <- serveFrom(h, fmt.Sprintf("192.0.2.%d:1234", i+1), http.MethodPost, b, -1).Code
		})
		select {
		case <-b.sent:
		case <-done: // refused before stalling: over budget
		case <-time.After(5 * time.Second):
			t.Fatal("upload neither stalled nor refused")
		}
	}
	if held := testutil.ToFloat64(h.metrics.bodyBytes); held != budgetBytes {
		t.Errorf("held %v bytes with 8 stalled uploads, want the budget %d", held, budgetBytes)
	}
	// While the budget is spent, a good request is refused at once.
	good := reviewBytes(t, podRequest(t, admissionv1.Create, testPod()))
	if rec := serveFrom(h, "198.51.100.1:1", http.MethodPost, bytes.NewReader(good), int64(len(good))); rec.Code != http.StatusServiceUnavailable {
		t.Errorf("request over budget: HTTP %d, want 503", rec.Code)
	}
	close(release)
	wg.Wait()
	close(codes)
	busy := 0
	for c := range codes {
		if c == http.StatusServiceUnavailable {
			busy++
		}
	}
	if busy != 4 {
		t.Errorf("%d uploads refused for the budget, want 4", busy)
	}
	if got := testutil.ToFloat64(h.metrics.bodyBytes); got != 0 {
		t.Errorf("body bytes held after the uploads = %v", got)
	}
	if rec := serve(h, http.MethodPost, bytes.NewReader(good), int64(len(good))); rec.Code != 200 {
		t.Errorf("after the uploads: HTTP %d", rec.Code)
	}
	if got := testutil.ToFloat64(h.metrics.admissions.WithLabelValues(DecisionError, ReasonBusy)); got != 5 {
		t.Errorf("busy counted %v times", got)
	}
}

// TestServeHTTPBudgetPerClient checks one client address can hold only a
// quarter of the budget: its stalled uploads cannot keep another client's
// review out.
func TestServeHTTPBudgetPerClient(t *testing.T) {
	h, err := New(Options{Config: testConfig(t), KubeDNSIPs: func() []string { return []string{"10.96.0.10"} },
		Registerer: prometheus.NewRegistry(), MaxRequestBytes: 200 << 10, BodyBudgetBytes: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	var wg sync.WaitGroup
	codes := make(chan int, 4)
	for range 4 { // 100 KiB each, held in 128 KiB: two fill the 256 KiB share
		b := &stallingBody{n: 100 << 10, release: release, sent: make(chan struct{})}
		done := make(chan struct{})
		wg.Go(func() {
			defer close(done)
			codes <- serveFrom(h, "192.0.2.66:4000", http.MethodPost, b, -1).Code
		})
		select {
		case <-b.sent:
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatal("upload neither stalled nor refused")
		}
	}
	if held := testutil.ToFloat64(h.metrics.bodyBytes); held != 256<<10 {
		t.Errorf("one client holds %v bytes, want its share of 256 KiB", held)
	}
	good := reviewBytes(t, podRequest(t, admissionv1.Create, testPod()))
	if rec := serveFrom(h, "192.0.2.66:4001", http.MethodPost, bytes.NewReader(good), int64(len(good))); rec.Code != http.StatusServiceUnavailable {
		t.Errorf("the same client over its share: HTTP %d, want 503", rec.Code)
	}
	if rec := serveFrom(h, "10.0.0.1:5000", http.MethodPost, bytes.NewReader(good), int64(len(good))); rec.Code != http.StatusOK {
		t.Errorf("another client: HTTP %d, want 200", rec.Code)
	}
	close(release)
	wg.Wait()
	close(codes)
	busy := 0
	for c := range codes {
		if c == http.StatusServiceUnavailable {
			busy++
		}
	}
	if busy != 2 {
		t.Errorf("%d uploads refused, want 2", busy)
	}
}

// TestNewRefusesBadLimits checks the size limit must fit in the budget.
func TestNewRefusesBadLimits(t *testing.T) {
	_, err := New(Options{Config: testConfig(t), KubeDNSIPs: func() []string { return nil }, MaxRequestBytes: 2 << 20, BodyBudgetBytes: 1 << 20})
	if err == nil || !strings.Contains(err.Error(), "budget") {
		t.Errorf("New = %v, want a budget error", err)
	}
}
