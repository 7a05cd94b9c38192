// Package handler is the admission handler of the webhook: it decodes the
// pod from the AdmissionRequest, asks package inject what to do and answers
// with a JSON patch, audit annotations and metrics.
package handler

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"strings"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"gomodules.xyz/jsonpatch/v2"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/nodelocaldns/nodelocaldns/webhook/inject"
)

// Path is where the webhook server serves the handler.
const Path = "/mutate-v1-pod"

// Reasons the handler adds to those of package inject.
const (
	ReasonNotCreate            = "not-create"
	ReasonSubresource          = "subresource"
	ReasonWrongKind            = "wrong-kind"
	ReasonUndecodable          = "undecodable"
	ReasonNamespaceUnavailable = "namespace-unavailable"
	// ReasonPanic: the handler panicked; the panic was recovered.
	ReasonPanic = "panic"
	// ReasonUndecodableReview: the HTTP body is not an AdmissionReview
	// with a request.
	ReasonUndecodableReview = "undecodable-review"
	// ReasonRequestTooLarge: the body exceeds the request size limit.
	ReasonRequestTooLarge = "request-too-large"
	// ReasonBusy: reading the body would exceed the shared body budget.
	ReasonBusy = "busy"
	// ReasonReadError: the body could not be read (timeout, client gone).
	ReasonReadError = "read-error"
)

// notInjected prefixes every warning of a pod left unchanged.
const notInjected = "node-local DNS not injected: "

// Audit annotation keys (the API server prefixes them with the webhook name).
const (
	AuditDecision = "decision"
	AuditReason   = "reason"
)

// NamespaceLookup returns the annotations of a namespace. It returns no
// error and nil annotations for a namespace that does not exist (yet).
type NamespaceLookup func(ctx context.Context, name string) (map[string]string, error)

// Options configure a Handler.
type Options struct {
	// Config is what to inject; its KubeDNSIPs are ignored in favour of
	// KubeDNSIPs below.
	Config inject.Config
	// KubeDNSIPs returns the current kube-dns addresses (nil when unknown).
	KubeDNSIPs func() []string
	// Namespaces reads namespace annotations; nil disables namespace-level
	// option overrides.
	Namespaces NamespaceLookup
	// Registerer receives the handler's metrics; nil leaves them unregistered.
	Registerer prometheus.Registerer
	// MaxRequestBytes bounds the body of one admission request
	// (DefaultMaxRequestBytes if zero).
	MaxRequestBytes int64
	// BodyBudgetBytes bounds the bytes of all request bodies being read or
	// handled at once (DefaultBodyBudgetBytes if zero); one client address
	// may hold a quarter of it (at least one largest request).
	BodyBudgetBytes int64
	// Log receives recovered panics and body read errors; the zero value
	// discards them.
	Log logr.Logger
}

// Handler is the controller-runtime admission.Handler for pod CREATE.
type Handler struct {
	cfg        inject.Config
	kubeDNSIPs func() []string
	namespaces NamespaceLookup
	metrics    *metrics
	log        logr.Logger
	maxBody    int64
	budget     *budget
}

var _ admission.Handler = (*Handler)(nil)

// New validates opts and returns a Handler.
func New(opts Options) (*Handler, error) {
	if err := opts.Config.Validate(); err != nil {
		return nil, fmt.Errorf("webhook handler: %w", err)
	}
	if opts.KubeDNSIPs == nil {
		return nil, errors.New("webhook handler: a kube-dns address source is required")
	}
	m, err := newMetrics(opts.Registerer)
	if err != nil {
		return nil, fmt.Errorf("webhook handler metrics: %w", err)
	}
	maxBody, budgetBytes := opts.MaxRequestBytes, opts.BodyBudgetBytes
	if maxBody == 0 {
		maxBody = DefaultMaxRequestBytes
	}
	if budgetBytes == 0 {
		budgetBytes = DefaultBodyBudgetBytes
	}
	if maxBody < 0 || budgetBytes < maxBody {
		return nil, fmt.Errorf("webhook handler: need 0 < request size limit (%d) <= body budget (%d)", maxBody, budgetBytes)
	}
	log := opts.Log
	if log.GetSink() == nil {
		log = logr.Discard()
	}
	return &Handler{
		cfg: opts.Config, kubeDNSIPs: opts.KubeDNSIPs, namespaces: opts.Namespaces, metrics: m, log: log,
		maxBody: maxBody, budget: newBudget(budgetBytes, maxBody, m.bodyBytes),
	}, nil
}

// Handle implements admission.Handler. It never denies a pod: every error,
// and a panic (recovered here), is answered allowed with a warning and the
// reason in the audit annotations and metrics. An error response
// (allowed: false) would reject the pod whatever the failurePolicy.
func (h *Handler) Handle(ctx context.Context, req admission.Request) admission.Response {
	start := time.Now()
	decision, reason, resp := h.handleRecover(ctx, req)
	h.finish(&resp, decision, reason, start)
	return resp
}

// handleRecover is handle with a recovered panic answered as an error.
func (h *Handler) handleRecover(ctx context.Context, req admission.Request) (decision, reason string, resp admission.Response) {
	defer func() {
		if r := recover(); r != nil {
			h.log.Error(fmt.Errorf("panic: %v", r), "admission handler panicked, pod admitted unchanged",
				"requestID", string(req.UID), "namespace", req.Namespace, "stack", string(debug.Stack()))
			decision, reason, resp = failOpen(ReasonPanic, fmt.Errorf("internal error (panic: %v)", r))
		}
	}()
	return h.handle(ctx, req)
}

// failOpen admits the object unchanged with a warning saying why; the
// decision is DecisionError.
func failOpen(reason string, err error) (string, string, admission.Response) {
	return DecisionError, reason, admission.Allowed(reason).WithWarnings(notInjected + err.Error())
}

// finish adds the audit annotations and counts the admission.
func (h *Handler) finish(resp *admission.Response, decision, reason string, start time.Time) {
	if resp.AuditAnnotations == nil {
		resp.AuditAnnotations = make(map[string]string, 2)
	}
	resp.AuditAnnotations[AuditDecision] = decision
	resp.AuditAnnotations[AuditReason] = reason
	h.metrics.admissions.WithLabelValues(decision, reason).Inc()
	h.metrics.duration.WithLabelValues(decision).Observe(time.Since(start).Seconds())
}

func (h *Handler) handle(ctx context.Context, req admission.Request) (decision, reason string, resp admission.Response) {
	if req.Kind.Group != "" || req.Kind.Kind != "Pod" {
		return failOpen(ReasonWrongKind, fmt.Errorf("expected a core/v1 Pod, got kind %q in group %q", req.Kind.Kind, req.Kind.Group))
	}
	if req.Operation != admissionv1.Create {
		return DecisionSkipped, ReasonNotCreate, admission.Allowed("only pod creation is mutated")
	}
	if req.SubResource != "" {
		return DecisionSkipped, ReasonSubresource, admission.Allowed("subresources are not mutated")
	}
	if len(req.Object.Raw) == 0 {
		return failOpen(ReasonUndecodable, errors.New("admission request has no pod object"))
	}
	pod, err := decodePod(req.Object.Raw)
	if err != nil {
		return failOpen(ReasonUndecodable, fmt.Errorf("decoding pod: %w", err))
	}
	if r := inject.SkipReason(pod, h.cfg.InjectHostNetwork); r != "" {
		return DecisionSkipped, r, admission.Allowed(r)
	}
	if r := h.cfg.NoAgent.SkipReason(pod); r != "" {
		return DecisionSkipped, r, admission.Allowed(r)
	}
	namespace := req.Namespace
	if namespace == "" {
		namespace = pod.Namespace
	}
	var nsAnnotations map[string]string
	if h.namespaces != nil && namespace != "" {
		if nsAnnotations, err = h.namespaces(ctx, namespace); err != nil {
			return DecisionSkipped, ReasonNamespaceUnavailable, admission.Allowed(ReasonNamespaceUnavailable).
				WithWarnings(fmt.Sprintf(notInjected+"reading namespace %q: %v", namespace, err))
		}
	}
	cfg := h.cfg
	cfg.KubeDNSIPs = h.kubeDNSIPs()
	res := inject.Inject(pod, namespace, nsAnnotations, cfg)
	if !res.Injected {
		resp := admission.Allowed(res.Reason)
		if len(res.Warnings) > 0 {
			resp = resp.WithWarnings(prefix(notInjected, res.Warnings)...)
		}
		return DecisionSkipped, res.Reason, resp
	}
	resp = admission.Patched(inject.ReasonInjected, Patch(pod, res.DNSConfig)...)
	if len(res.Warnings) > 0 {
		resp = resp.WithWarnings(prefix("node-local DNS: ", res.Warnings)...)
	}
	return DecisionInjected, inject.ReasonInjected, resp
}

// Patch returns the JSON patch that turns the original pod into the injected
// one: dnsPolicy None, the dnsConfig, the injected annotation and label. It
// touches nothing else, so fields unknown to this program's API types
// survive.
func Patch(original *corev1.Pod, dnsConfig *corev1.PodDNSConfig) []jsonpatch.JsonPatchOperation {
	ops := []jsonpatch.JsonPatchOperation{
		jsonpatch.NewOperation("add", "/spec/dnsPolicy", string(corev1.DNSNone)),
		jsonpatch.NewOperation("add", "/spec/dnsConfig", dnsConfig),
	}
	ops = append(ops, addToMap(original.Annotations == nil, "/metadata/annotations", inject.InjectedAnnotation, "true"))
	return append(ops, addToMap(original.Labels == nil, "/metadata/labels", inject.InjectedLabel, "true"))
}

// addToMap adds key: value to the map at path, creating the map if absent.
func addToMap(absent bool, path, key, value string) jsonpatch.JsonPatchOperation {
	if absent {
		return jsonpatch.NewOperation("add", path, map[string]string{key: value})
	}
	return jsonpatch.NewOperation("add", path+"/"+escapePointer(key), value)
}

// escapePointer escapes a JSON pointer reference token (RFC 6901).
func escapePointer(s string) string {
	return strings.ReplaceAll(strings.ReplaceAll(s, "~", "~0"), "/", "~1")
}

func prefix(p string, msgs []string) []string {
	out := make([]string, len(msgs))
	for i, m := range msgs {
		out[i] = p + m
	}
	return out
}
