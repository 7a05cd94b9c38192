package handler

import (
	"context"
	"encoding/json"
	"errors"
	"reflect"
	"slices"
	"strings"
	"testing"

	jsonpatchv5 "github.com/evanphx/json-patch/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"
	sigsjson "sigs.k8s.io/json"

	"github.com/nodelocaldns/nodelocaldns/webhook/inject"
)

func testConfig(t testing.TB) inject.Config {
	t.Helper()
	base, err := inject.BaseOptions(inject.DefaultNdots, inject.DefaultTimeout, inject.DefaultAttempts)
	if err != nil {
		t.Fatal(err)
	}
	return inject.Config{
		LocalIPs:          []string{"169.254.20.10"},
		ClusterDomain:     "cluster.local",
		Options:           base,
		InjectHostNetwork: true,
		NoAgent:           inject.NoAgentNodes{Labels: inject.DefaultNoAgentNodeLabels, TolerationKeys: inject.DefaultNoAgentTolerations},
	}
}

func newHandler(t testing.TB, kubeDNS []string, ns NamespaceLookup, reg prometheus.Registerer) *Handler {
	t.Helper()
	h, err := New(Options{Config: testConfig(t), KubeDNSIPs: func() []string { return kubeDNS }, Namespaces: ns, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func testPod(mods ...func(*corev1.Pod)) *corev1.Pod {
	p := &corev1.Pod{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: metav1.ObjectMeta{GenerateName: "web-", Labels: map[string]string{"app": "web"}},
		Spec: corev1.PodSpec{
			DNSPolicy:  corev1.DNSClusterFirst,
			Containers: []corev1.Container{{Name: "c", Image: "busybox"}},
		},
	}
	for _, m := range mods {
		m(p)
	}
	return p
}

func podRequest(t testing.TB, op admissionv1.Operation, obj any) admission.Request {
	t.Helper()
	raw, err := json.Marshal(obj)
	if err != nil {
		t.Fatal(err)
	}
	return admission.Request{AdmissionRequest: admissionv1.AdmissionRequest{
		UID:       "uid-1",
		Kind:      metav1.GroupVersionKind{Version: "v1", Kind: "Pod"},
		Resource:  metav1.GroupVersionResource{Version: "v1", Resource: "pods"},
		Namespace: "team-a",
		Operation: op,
		Object:    runtime.RawExtension{Raw: raw},
	}}
}

// applyPatch applies the response's patches to the request's raw object and
// decodes the resulting pod.
func applyPatch(t testing.TB, raw []byte, resp admission.Response) (*corev1.Pod, []byte) {
	t.Helper()
	patchJSON, err := json.Marshal(resp.Patches)
	if err != nil {
		t.Fatal(err)
	}
	return applyPatchJSON(t, raw, patchJSON)
}

// applyPatchJSON applies a JSON patch to raw and decodes the resulting pod.
func applyPatchJSON(t testing.TB, raw, patchJSON []byte) (*corev1.Pod, []byte) {
	t.Helper()
	patch, err := jsonpatchv5.DecodePatch(patchJSON)
	if err != nil {
		t.Fatalf("decoding patch %s: %v", patchJSON, err)
	}
	out, err := patch.Apply(raw)
	if err != nil {
		t.Fatalf("applying patch %s: %v", patchJSON, err)
	}
	var pod corev1.Pod
	if err := sigsjson.UnmarshalCaseSensitivePreserveInts(out, &pod); err != nil { // as the API server decodes
		t.Fatal(err)
	}
	return &pod, out
}

func TestHandle(t *testing.T) {
	nsLookup := func(_ context.Context, name string) (map[string]string, error) {
		switch name {
		case "team-a":
			return map[string]string{inject.OptionsAnnotation: "ndots:2"}, nil
		case "broken":
			return nil, errors.New("cache not synced")
		case "panics":
			panic("lookup exploded")
		}
		return nil, nil
	}
	for _, tc := range []struct {
		name         string
		req          func(t *testing.T) admission.Request
		kubeDNS      []string
		wantAllowed  bool
		wantDecision string
		wantReason   string
		wantPatched  bool
		wantMessage  string // in the result message or warnings
	}{
		{
			name:         "create is injected with namespace options",
			req:          func(t *testing.T) admission.Request { return podRequest(t, admissionv1.Create, testPod()) },
			wantAllowed:  true,
			wantDecision: DecisionInjected, wantReason: inject.ReasonInjected, wantPatched: true,
		},
		{
			name: "create without annotations map and namespace only on the pod",
			req: func(t *testing.T) admission.Request {
				r := podRequest(t, admissionv1.Create, testPod(func(p *corev1.Pod) { p.Namespace = "other"; p.Labels = nil }))
				r.Namespace = ""
				return r
			},
			wantAllowed:  true,
			wantDecision: DecisionInjected, wantReason: inject.ReasonInjected, wantPatched: true,
		},
		{
			name:         "update is not mutated",
			req:          func(t *testing.T) admission.Request { return podRequest(t, admissionv1.Update, testPod()) },
			wantAllowed:  true,
			wantDecision: DecisionSkipped, wantReason: ReasonNotCreate,
		},
		{
			name: "subresource is not mutated",
			req: func(t *testing.T) admission.Request {
				r := podRequest(t, admissionv1.Create, testPod())
				r.SubResource = "binding"
				return r
			},
			wantAllowed:  true,
			wantDecision: DecisionSkipped, wantReason: ReasonSubresource,
		},
		{
			name: "already injected pod is left alone",
			req: func(t *testing.T) admission.Request {
				return podRequest(t, admissionv1.Create, testPod(func(p *corev1.Pod) {
					p.Annotations = map[string]string{inject.InjectedAnnotation: "true"}
					p.Spec.DNSPolicy = corev1.DNSNone
					p.Spec.DNSConfig = &corev1.PodDNSConfig{Nameservers: []string{"169.254.20.10"}}
				}))
			},
			wantAllowed:  true,
			wantDecision: DecisionSkipped, wantReason: inject.ReasonAlreadyInjected,
		},
		{
			name: "dns policy Default is skipped",
			req: func(t *testing.T) admission.Request {
				return podRequest(t, admissionv1.Create, testPod(func(p *corev1.Pod) { p.Spec.DNSPolicy = corev1.DNSDefault }))
			},
			wantAllowed:  true,
			wantDecision: DecisionSkipped, wantReason: inject.ReasonDNSPolicyDefault,
		},
		{
			name:         "kube-dns unknown allows unchanged",
			req:          func(t *testing.T) admission.Request { return podRequest(t, admissionv1.Create, testPod()) },
			kubeDNS:      []string{},
			wantAllowed:  true,
			wantDecision: DecisionSkipped, wantReason: inject.ReasonKubeDNSUnknown,
		},
		{
			name: "namespace lookup failure allows unchanged with a warning",
			req: func(t *testing.T) admission.Request {
				r := podRequest(t, admissionv1.Create, testPod())
				r.Namespace = "broken"
				return r
			},
			wantAllowed:  true,
			wantDecision: DecisionSkipped, wantReason: ReasonNamespaceUnavailable, wantMessage: "cache not synced",
		},
		{
			name: "bad pod annotation is explained",
			req: func(t *testing.T) admission.Request {
				return podRequest(t, admissionv1.Create, testPod(func(p *corev1.Pod) {
					p.Annotations = map[string]string{inject.OptionsAnnotation: "ndots:many"}
				}))
			},
			wantAllowed:  true,
			wantDecision: DecisionSkipped, wantReason: inject.ReasonInvalidAnnotation, wantMessage: "ndots",
		},
		{
			name: "wrong kind is an error",
			req: func(t *testing.T) admission.Request {
				r := podRequest(t, admissionv1.Create, &corev1.Service{})
				r.Kind = metav1.GroupVersionKind{Version: "v1", Kind: "Service"}
				return r
			},
			wantAllowed:  true,
			wantDecision: DecisionError, wantReason: ReasonWrongKind, wantMessage: "expected a core/v1 Pod",
		},
		{
			name: "pod kind in another group is an error",
			req: func(t *testing.T) admission.Request {
				r := podRequest(t, admissionv1.Create, testPod())
				r.Kind.Group = "example.com"
				return r
			},
			wantAllowed:  true,
			wantDecision: DecisionError, wantReason: ReasonWrongKind, wantMessage: "example.com",
		},
		{
			name: "undecodable object is an error",
			req: func(t *testing.T) admission.Request {
				r := podRequest(t, admissionv1.Create, testPod())
				r.Object.Raw = []byte(`{"spec": {"hostNetwork": "yes"}}`)
				return r
			},
			wantAllowed:  true,
			wantDecision: DecisionError, wantReason: ReasonUndecodable, wantMessage: "decoding pod",
		},
		{
			name: "object that is not an object is an error",
			req: func(t *testing.T) admission.Request {
				r := podRequest(t, admissionv1.Create, testPod())
				r.Object.Raw = []byte(`["pod"]`)
				return r
			},
			wantAllowed:  true,
			wantDecision: DecisionError, wantReason: ReasonUndecodable, wantMessage: "decoding pod",
		},
		{
			name: "pod without spec is an error",
			req: func(t *testing.T) admission.Request {
				r := podRequest(t, admissionv1.Create, testPod())
				r.Object.Raw = []byte(`{"metadata":{"name":"x"}}`)
				return r
			},
			wantAllowed:  true,
			wantDecision: DecisionError, wantReason: ReasonUndecodable, wantMessage: "no metadata or no spec",
		},
		{
			name: "missing object is an error",
			req: func(t *testing.T) admission.Request {
				r := podRequest(t, admissionv1.Create, testPod())
				r.Object.Raw = nil
				return r
			},
			wantAllowed:  true,
			wantDecision: DecisionError, wantReason: ReasonUndecodable, wantMessage: "no pod object",
		},
		{
			name: "pod tolerating virtual nodes is skipped",
			req: func(t *testing.T) admission.Request {
				return podRequest(t, admissionv1.Create, testPod(func(p *corev1.Pod) {
					p.Spec.Tolerations = []corev1.Toleration{{Key: "virtual-kubelet.io/provider", Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule}}
				}))
			},
			wantAllowed:  true,
			wantDecision: DecisionSkipped, wantReason: inject.ReasonNoAgentToleration,
		},
		{
			name: "pod with virtual-node affinity is skipped",
			req: func(t *testing.T) admission.Request {
				return podRequest(t, admissionv1.Create, testPod(func(p *corev1.Pod) {
					p.Spec.Affinity = &corev1.Affinity{NodeAffinity: &corev1.NodeAffinity{RequiredDuringSchedulingIgnoredDuringExecution: &corev1.NodeSelector{
						NodeSelectorTerms: []corev1.NodeSelectorTerm{{MatchExpressions: []corev1.NodeSelectorRequirement{{Key: "type", Operator: corev1.NodeSelectorOpIn, Values: []string{"virtual-kubelet"}}}}},
					}}}
				}))
			},
			wantAllowed:  true,
			wantDecision: DecisionSkipped, wantReason: inject.ReasonNoAgentNodeAffinity,
		},
		{
			name: "a panic is recovered and the pod admitted",
			req: func(t *testing.T) admission.Request {
				r := podRequest(t, admissionv1.Create, testPod())
				r.Namespace = "panics"
				return r
			},
			wantAllowed:  true,
			wantDecision: DecisionError, wantReason: ReasonPanic, wantMessage: "lookup exploded",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			kubeDNS := []string{"10.96.0.10"}
			if tc.kubeDNS != nil {
				kubeDNS = tc.kubeDNS
			}
			reg := prometheus.NewRegistry()
			h := newHandler(t, kubeDNS, nsLookup, reg)
			req := tc.req(t)
			resp := h.Handle(context.Background(), req)

			if resp.Allowed != tc.wantAllowed {
				t.Errorf("allowed = %v, want %v (result %+v)", resp.Allowed, tc.wantAllowed, resp.Result)
			}
			if resp.Result != nil && resp.Result.Code >= 400 {
				t.Errorf("result = %+v: an error code rejects the pod whatever the failurePolicy", resp.Result)
			}
			if tc.wantDecision == DecisionError && !slices.ContainsFunc(resp.Warnings, func(w string) bool {
				return strings.HasPrefix(w, "node-local DNS not injected: ")
			}) {
				t.Errorf("error without a warning: %q", resp.Warnings)
			}
			if got := resp.AuditAnnotations[AuditDecision]; got != tc.wantDecision {
				t.Errorf("audit decision = %q, want %q", got, tc.wantDecision)
			}
			if got := resp.AuditAnnotations[AuditReason]; got != tc.wantReason {
				t.Errorf("audit reason = %q, want %q", got, tc.wantReason)
			}
			if tc.wantMessage != "" {
				msg := strings.Join(resp.Warnings, "\n")
				if resp.Result != nil {
					msg += resp.Result.Message
				}
				if !strings.Contains(msg, tc.wantMessage) {
					t.Errorf("message %q does not mention %q", msg, tc.wantMessage)
				}
			}
			if got := testutil.ToFloat64(h.metrics.admissions.WithLabelValues(tc.wantDecision, tc.wantReason)); got != 1 {
				t.Errorf("admissions_total{%s,%s} = %v, want 1", tc.wantDecision, tc.wantReason, got)
			}
			if n := testutil.CollectAndCount(h.metrics.duration); n != 1 {
				t.Errorf("duration histogram has %d series, want 1", n)
			}
			if !tc.wantPatched {
				if len(resp.Patches) != 0 {
					t.Fatalf("unexpected patches %+v", resp.Patches)
				}
				return
			}
			pod, patched := applyPatch(t, req.Object.Raw, resp)
			if pod.Spec.DNSPolicy != corev1.DNSNone || pod.Annotations[inject.InjectedAnnotation] != "true" || pod.Labels[inject.InjectedLabel] != "true" {
				t.Fatalf("patched pod: policy %q annotations %v labels %v", pod.Spec.DNSPolicy, pod.Annotations, pod.Labels)
			}
			if orig, _ := decodePod(req.Object.Raw); orig.Labels["app"] != "" && pod.Labels["app"] != orig.Labels["app"] {
				t.Errorf("labels %v lost the pod's own", pod.Labels)
			}
			if err := inject.ValidateDNS(pod.Spec.DNSPolicy, pod.Spec.DNSConfig); err != nil {
				t.Fatalf("patched pod fails validation: %v", err)
			}
			if got := pod.Spec.DNSConfig.Nameservers; !reflect.DeepEqual(got, []string{"169.254.20.10", "10.96.0.10"}) {
				t.Errorf("nameservers = %v", got)
			}
			ns := req.Namespace
			if ns == "" {
				ns = pod.Namespace
			}
			if got := pod.Spec.DNSConfig.Searches[0]; got != ns+".svc.cluster.local" {
				t.Errorf("first search = %q, want the pod's namespace", got)
			}
			wantNdots := "3"
			if ns == "team-a" {
				wantNdots = "2" // from the namespace annotation
			}
			if o := pod.Spec.DNSConfig.Options[0]; o.Name != "ndots" || *o.Value != wantNdots {
				t.Errorf("first option = %s:%v, want ndots:%s", o.Name, *o.Value, wantNdots)
			}
			// Idempotent: handling the patched pod again (reinvocation) yields no patch.
			again := req
			again.Object.Raw = patched
			if resp2 := h.Handle(context.Background(), again); len(resp2.Patches) != 0 || !resp2.Allowed ||
				resp2.AuditAnnotations[AuditReason] != inject.ReasonAlreadyInjected {
				t.Errorf("second pass: patches %+v reason %q", resp2.Patches, resp2.AuditAnnotations[AuditReason])
			}
		})
	}
}

// TestPatchKeepsUnknownFields checks the patch only touches what it must: a
// field this program's API types do not know survives.
func TestPatchKeepsUnknownFields(t *testing.T) {
	h := newHandler(t, []string{"10.96.0.10"}, nil, nil)
	req := podRequest(t, admissionv1.Create, testPod())
	req.Object.Raw = []byte(`{"apiVersion":"v1","kind":"Pod","metadata":{"name":"x","annotations":{"a/b":"c"}},` +
		`"spec":{"futureField":{"x":1},"dnsPolicy":"ClusterFirst","containers":[{"name":"c","image":"i"}]}}`)
	resp := h.Handle(context.Background(), req)
	if !resp.Allowed || len(resp.Patches) == 0 {
		t.Fatalf("not patched: %+v", resp.Result)
	}
	_, out := applyPatch(t, req.Object.Raw, resp)
	var generic struct {
		Metadata struct {
			Annotations map[string]string `json:"annotations"`
		} `json:"metadata"`
		Spec map[string]any `json:"spec"`
	}
	if err := json.Unmarshal(out, &generic); err != nil {
		t.Fatal(err)
	}
	if _, ok := generic.Spec["futureField"]; !ok {
		t.Errorf("unknown field dropped: %s", out)
	}
	ann := generic.Metadata.Annotations
	if ann["a/b"] != "c" || ann[inject.InjectedAnnotation] != "true" {
		t.Errorf("annotations = %v", ann)
	}
}

// TestMetricsStartAtZero checks every known decision/reason series exists
// before the first request.
func TestMetricsStartAtZero(t *testing.T) {
	reg := prometheus.NewRegistry()
	h := newHandler(t, []string{"10.96.0.10"}, nil, reg)
	want := 0
	for _, reasons := range knownReasons {
		want += len(reasons)
	}
	if got := testutil.CollectAndCount(h.metrics.admissions); got != want || want < 20 {
		t.Errorf("%d series, want %d", got, want)
	}
	if got := testutil.ToFloat64(h.metrics.admissions.WithLabelValues(DecisionSkipped, inject.ReasonKubeDNSUnknown)); got != 0 {
		t.Errorf("kube-dns-unknown = %v before any request", got)
	}
}

// TestMetricsSharedRegistry checks that two handlers (two webhooks in one
// process) can register on the same registry and share the counters.
func TestMetricsSharedRegistry(t *testing.T) {
	reg := prometheus.NewRegistry()
	h1 := newHandler(t, []string{"10.96.0.10"}, nil, reg)
	h2 := newHandler(t, []string{"10.96.0.10"}, nil, reg)
	req := podRequest(t, admissionv1.Create, testPod())
	h1.Handle(context.Background(), req)
	h2.Handle(context.Background(), req)
	if got := testutil.ToFloat64(h1.metrics.admissions.WithLabelValues(DecisionInjected, inject.ReasonInjected)); got != 2 {
		t.Errorf("shared counter = %v, want 2", got)
	}
}

func TestNewRefusesBadConfig(t *testing.T) {
	cfg := testConfig(t)
	cfg.LocalIPs = []string{"not-an-ip"}
	if _, err := New(Options{Config: cfg, KubeDNSIPs: func() []string { return nil }}); err == nil {
		t.Error("bad local IP accepted")
	}
	if _, err := New(Options{Config: testConfig(t)}); err == nil {
		t.Error("missing kube-dns source accepted")
	}
}
