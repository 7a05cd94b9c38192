package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
)

// loadConfig bounds a load run.
type loadConfig struct {
	URL      string
	Client   *http.Client
	Requests int           // total admissions to send
	Duration time.Duration // stop early after this long
	Workers  int           // concurrent senders, one keep-alive connection each
	// Namespace of the pods. Three requests in four carry a pod that gets
	// injected, the fourth one opted out (a skip still costs a round trip).
	Namespace string
}

// result is what a load run measured.
type result struct {
	Sent      int
	Injected  int
	Errors    int
	FirstErr  error
	Elapsed   time.Duration
	Latencies []time.Duration // sorted
	// CPU is the CPU time this process used during the run (the load
	// generator, plus the webhook when it runs in-process).
	CPU time.Duration
}

// CPUPerAdmission is CPU divided by the admissions sent.
func (r result) CPUPerAdmission() time.Duration {
	if r.Sent == 0 {
		return 0
	}
	return r.CPU / time.Duration(r.Sent)
}

// Rate is admissions per second.
func (r result) Rate() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Sent) / r.Elapsed.Seconds()
}

// Quantile returns the q-quantile (0..1) of the latencies, nearest rank.
func (r result) Quantile(q float64) time.Duration {
	n := len(r.Latencies)
	if n == 0 {
		return 0
	}
	i := int(math.Ceil(q*float64(n))) - 1
	return r.Latencies[min(max(i, 0), n-1)]
}

// String prints the figures on one line.
func (r result) String() string {
	return fmt.Sprintf("%d admissions in %v: %.0f admissions/s, p50 %v, p90 %v, p99 %v, max %v, %d injected, %d errors",
		r.Sent, r.Elapsed.Round(time.Millisecond), r.Rate(),
		r.Quantile(0.50).Round(time.Microsecond), r.Quantile(0.90).Round(time.Microsecond),
		r.Quantile(0.99).Round(time.Microsecond), r.Quantile(1).Round(time.Microsecond), r.Injected, r.Errors)
}

// request is a prepared AdmissionReview body with a placeholder UID.
type request struct {
	body   []byte
	inject bool
}

// uidPlaceholder has the width of the UIDs substituted into each request.
const uidPlaceholder = "00000000-0000-0000-0000-000000000000"

// prepare builds the two request bodies a run alternates between: a plain
// pod (injected) and a pod opted out by annotation (skipped).
func prepare(namespace string) ([]request, error) {
	plain := &corev1.Pod{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: metav1.ObjectMeta{GenerateName: "load-", Namespace: namespace, Labels: map[string]string{"app": "load"}},
		Spec: corev1.PodSpec{
			DNSPolicy:  corev1.DNSClusterFirst,
			Containers: []corev1.Container{{Name: "app", Image: "registry.example/app:1", Ports: []corev1.ContainerPort{{ContainerPort: 8080}}}},
		},
	}
	optOut := plain.DeepCopy()
	optOut.Annotations = map[string]string{"node-local-dns-injection": "disabled"}
	var out []request
	for _, p := range []struct {
		pod    *corev1.Pod
		inject bool
	}{{plain, true}, {plain, true}, {plain, true}, {optOut, false}} {
		raw, err := json.Marshal(p.pod)
		if err != nil {
			return nil, fmt.Errorf("marshal pod: %w", err)
		}
		review := admissionv1.AdmissionReview{
			TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
			Request: &admissionv1.AdmissionRequest{
				UID:       types.UID(uidPlaceholder),
				Kind:      metav1.GroupVersionKind{Version: "v1", Kind: "Pod"},
				Resource:  metav1.GroupVersionResource{Version: "v1", Resource: "pods"},
				Namespace: namespace,
				Operation: admissionv1.Create,
				Object:    runtime.RawExtension{Raw: raw},
			},
		}
		body, err := json.Marshal(review)
		if err != nil {
			return nil, fmt.Errorf("marshal review: %w", err)
		}
		out = append(out, request{body: body, inject: p.inject})
	}
	return out, nil
}

// uid makes the n-th request's UID, as wide as uidPlaceholder.
func uid(n int) string {
	s := strconv.Itoa(n)
	return uidPlaceholder[:len(uidPlaceholder)-len(s)] + s
}

// runLoad sends cfg.Requests admissions with cfg.Workers workers, or fewer if
// cfg.Duration passes first, and checks every answer.
func runLoad(ctx context.Context, cfg loadConfig) (result, error) {
	reqs, err := prepare(cfg.Namespace)
	if err != nil {
		return result{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.Duration)
	defer cancel()

	var next atomic.Int64
	type workerResult struct {
		lat      []time.Duration
		injected int
		errors   int
		firstErr error
	}
	results := make([]workerResult, cfg.Workers)
	var wg sync.WaitGroup
	cpu0 := cpuTime()
	start := time.Now()
	for w := range cfg.Workers {
		wg.Go(func() {
			wr := &results[w]
			wr.lat = make([]time.Duration, 0, cfg.Requests/cfg.Workers+1)
			for ctx.Err() == nil {
				n := int(next.Add(1))
				if n > cfg.Requests {
					return
				}
				rq := reqs[n%len(reqs)]
				id := uid(n)
				body := bytes.Replace(rq.body, []byte(uidPlaceholder), []byte(id), 1)
				t0 := time.Now()
				injected, err := admit(ctx, cfg.Client, cfg.URL, body, id)
				d := time.Since(t0)
				if err == nil && injected != rq.inject {
					err = fmt.Errorf("request %s: injected=%v, want %v", id, injected, rq.inject)
				}
				if err != nil {
					if ctx.Err() != nil {
						return // the time bound, not a failure
					}
					wr.errors++
					if wr.firstErr == nil {
						wr.firstErr = err
					}
					continue
				}
				wr.lat = append(wr.lat, d)
				if injected {
					wr.injected++
				}
			}
		})
	}
	wg.Wait()
	res := result{Elapsed: time.Since(start), CPU: cpuTime() - cpu0}
	for _, wr := range results {
		res.Latencies = append(res.Latencies, wr.lat...)
		res.Injected += wr.injected
		res.Errors += wr.errors
		if res.FirstErr == nil {
			res.FirstErr = wr.firstErr
		}
	}
	res.Sent = len(res.Latencies) + res.Errors
	slices.Sort(res.Latencies)
	return res, nil
}

// cpuTime is the user and system CPU time used by this process so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// admit posts one AdmissionReview and reports whether the answer carries a
// patch; it checks the status, the UID and that the pod was allowed.
func admit(ctx context.Context, client *http.Client, url string, body []byte, id string) (bool, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return false, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return false, err
	}
	data, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return false, fmt.Errorf("read answer: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return false, fmt.Errorf("HTTP %d: %.200s", resp.StatusCode, data)
	}
	// Only the fields checked: decoding the whole AdmissionReview would
	// spend the CPU the server under test shares with this client.
	var review struct {
		Response *struct {
			UID     string          `json:"uid"`
			Allowed bool            `json:"allowed"`
			Patch   []byte          `json:"patch"`
			Result  json.RawMessage `json:"status"`
		} `json:"response"`
	}
	if err := json.Unmarshal(data, &review); err != nil {
		return false, fmt.Errorf("decode answer: %w", err)
	}
	r := review.Response
	switch {
	case r == nil:
		return false, fmt.Errorf("answer without response: %.200s", data)
	case r.UID != id:
		return false, fmt.Errorf("answer UID %q, want %q", r.UID, id)
	case !r.Allowed:
		return false, fmt.Errorf("pod denied: %s", r.Result)
	}
	return len(r.Patch) > 0, nil
}
