package handler

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	admissionv1 "k8s.io/api/admission/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"
	sigsjson "sigs.k8s.io/json"
)

// DefaultMaxRequestBytes bounds one AdmissionReview body. The API server
// refuses request bodies over 3 MiB (the largest object etcd accepts,
// --max-request-bytes 1.5 MiB, with room for JSON being larger than the
// stored protobuf), and a pod CREATE review carries one object plus request
// metadata (user, groups, options), given 1 MiB here.
const DefaultMaxRequestBytes int64 = 4 << 20

// DefaultBodyBudgetBytes bounds the bytes of all request bodies held at once.
const DefaultBodyBudgetBytes int64 = 32 << 20

// readChunk is the first buffer of a body of unknown length.
const readChunk = 32 << 10

// errTooLarge and errBusy end a body read.
var (
	errTooLarge = errors.New("request body too large")
	errBusy     = errors.New("request body budget spent")
)

// budget is the shared allowance of body bytes held at once, with a share
// per client address: one client (a hostile pod) cannot spend more than a
// quarter of it, so the API server's reviews still find room.
type budget struct {
	mu      sync.Mutex
	limit   int64
	perPeer int64
	used    int64
	byPeer  map[string]int64
	gauge   prometheus.Gauge
}

func newBudget(limit, maxBody int64, gauge prometheus.Gauge) *budget {
	return &budget{limit: limit, perPeer: max(limit/4, maxBody+1), byPeer: map[string]int64{}, gauge: gauge}
}

// take reserves n bytes for peer; it reports false (reserving nothing) if
// that would exceed the limit or the peer's share.
func (b *budget) take(peer string, n int64) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.used+n > b.limit || b.byPeer[peer]+n > b.perPeer {
		return false
	}
	b.used += n
	b.byPeer[peer] += n
	b.gauge.Add(float64(n))
	return true
}

func (b *budget) give(peer string, n int64) {
	if n == 0 {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.used -= n
	if b.byPeer[peer] -= n; b.byPeer[peer] <= 0 {
		delete(b.byPeer, peer)
	}
	b.gauge.Sub(float64(n))
}

// peer is the client's address without the port.
func peer(r *http.Request) string {
	if host, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		return host
	}
	return r.RemoteAddr
}

// ServeHTTP serves AdmissionReviews (v1, JSON) as the API server sends them.
// It reads at most the request size limit, charging the buffer it holds to
// the shared body budget (and the client's share of it) as the bytes arrive, so slow or oversized uploads hold
// bounded memory. A body that is too large (413) or over budget (503) ends
// the connection: the API server treats that as a failed call and applies
// failurePolicy (Ignore). Every review that decodes, whatever goes wrong
// after, is answered allowed (see Handle); a body that does not decode is
// answered allowed without a UID.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "admission reviews are POSTed", http.StatusMethodNotAllowed)
		return
	}
	from := peer(r)
	body, held, err := h.readBody(r, from)
	defer h.budget.give(from, held)
	if err != nil {
		h.refuse(w, r, err, start)
		return
	}
	var review admissionv1.AdmissionReview
	var resp admission.Response
	if err := sigsjson.UnmarshalCaseSensitivePreserveInts(body, &review); err != nil || review.Request == nil {
		if err == nil {
			err = errors.New("AdmissionReview without a request")
		}
		var decision, reason string
		decision, reason, resp = failOpen(ReasonUndecodableReview, fmt.Errorf("decoding AdmissionReview: %w", err))
		h.finish(&resp, decision, reason, start)
	} else {
		req := admission.Request{AdmissionRequest: *review.Request}
		resp = h.Handle(r.Context(), req)
		if err := resp.Complete(req); err != nil {
			// Only the patch encoding can fail: admit unchanged.
			decision, reason, failed := failOpen(ReasonPanic, fmt.Errorf("encoding the response: %w", err))
			failed.UID = req.UID
			h.finish(&failed, decision, reason, start)
			resp = failed
		}
	}
	out := admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: admissionv1.SchemeGroupVersion.String(), Kind: "AdmissionReview"},
		Response: &resp.AdmissionResponse,
	}
	w.Header().Set("Content-Type", "application/json")
	if err := json.NewEncoder(w).Encode(&out); err != nil {
		h.log.V(1).Info("writing the admission response failed", "error", err.Error())
	}
}

// readBody reads the body into a buffer that doubles as it fills, charging
// the buffer to the budget before it grows.
// It returns the bytes held (to give back) even on error.
func (h *Handler) readBody(r *http.Request, from string) ([]byte, int64, error) {
	if r.ContentLength > h.maxBody {
		return nil, 0, errTooLarge
	}
	var held int64
	buf := make([]byte, 0, min(max(r.ContentLength, 0), readChunk))
	if !h.budget.take(from, int64(cap(buf))) {
		return nil, 0, errBusy
	}
	held = int64(cap(buf))
	for {
		if r.ContentLength >= 0 && int64(len(buf)) == r.ContentLength {
			// All announced bytes are here (the server frames the body).
			return buf, held, nil
		}
		if len(buf) == cap(buf) {
			if int64(len(buf)) >= h.maxBody+1 {
				return nil, held, errTooLarge
			}
			// Double (capped at the limit plus one byte, to detect an
			// oversized body), paying for the new buffer first: a body
			// holds at most twice its bytes, and growing costs one copy.
			want := min(max(2*int64(cap(buf)), readChunk), h.maxBody+1)
			if !h.budget.take(from, want-held) {
				return nil, held, errBusy
			}
			held = want
			grown := make([]byte, len(buf), want)
			copy(grown, buf)
			buf = grown
		}
		n, err := r.Body.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if int64(len(buf)) > h.maxBody {
			return nil, held, errTooLarge
		}
		if errors.Is(err, io.EOF) {
			return buf, held, nil
		}
		if err != nil {
			return nil, held, err
		}
	}
}

// refuse answers a body that could not be read. The connection is closed:
// the rest of the body is not read.
func (h *Handler) refuse(w http.ResponseWriter, r *http.Request, err error, start time.Time) {
	var resp admission.Response
	code, reason := http.StatusBadRequest, ReasonReadError
	var maxErr *http.MaxBytesError
	switch {
	case errors.Is(err, errTooLarge) || errors.As(err, &maxErr):
		code, reason = http.StatusRequestEntityTooLarge, ReasonRequestTooLarge
	case errors.Is(err, errBusy):
		code, reason = http.StatusServiceUnavailable, ReasonBusy
		w.Header().Set("Retry-After", "1")
	}
	h.finish(&resp, DecisionError, reason, start)
	h.log.V(1).Info("admission request refused", "reason", reason, "error", err.Error(), "remote", r.RemoteAddr, "contentLength", r.ContentLength)
	w.Header().Set("Connection", "close")
	http.Error(w, fmt.Sprintf("%s (limit %d bytes per request)", err, h.maxBody), code)
}
