package handler

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"
	sigsjson "sigs.k8s.io/json"

	"github.com/nodelocaldns/nodelocaldns/webhook/inject"
)

func reviewBytes(t testing.TB, req admission.Request) []byte {
	t.Helper()
	b, err := json.Marshal(admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
		Request:  &req.AdmissionRequest,
	})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// FuzzHandle feeds raw AdmissionReview bytes to the webhook as the API server
// would (HTTP, JSON): it must always answer with an AdmissionReview, never
// deny and never panic (Handle recovers; a recovered panic fails here), and
// any patch must apply to the object, give a pod that passes the API's dnsConfig validation and be
// idempotent.
func FuzzHandle(f *testing.F) {
	f.Add(reviewBytes(f, podRequest(f, admissionv1.Create, testPod())))
	f.Add(reviewBytes(f, podRequest(f, admissionv1.Create, testPod(func(p *corev1.Pod) {
		p.Annotations = map[string]string{inject.OptionsAnnotation: "ndots:1 edns0"}
		p.Spec.DNSConfig = &corev1.PodDNSConfig{Nameservers: []string{"1.1.1.1"}, Searches: []string{"x.example"}}
	}))))
	f.Add(reviewBytes(f, podRequest(f, admissionv1.Update, testPod())))
	f.Add([]byte(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"1","kind":{"version":"v1","kind":"Pod"},"operation":"CREATE","object":{"spec":{"hostNetwork":true,"dnsPolicy":"ClusterFirstWithHostNet"}}}}`))
	f.Add([]byte(`{"request":{"kind":{"kind":"Service"},"object":null}}`))
	f.Add([]byte(`not json`))
	h := newHandler(f, []string{"10.96.0.10", "fd00::a"}, func(context.Context, string) (map[string]string, error) {
		return map[string]string{inject.OptionsAnnotation: "timeout:2"}, nil
	}, nil)

	f.Fuzz(func(t *testing.T, body []byte) {
		rec := httptest.NewRecorder()
		r := httptest.NewRequest(http.MethodPost, Path, bytes.NewReader(body))
		r.Header.Set("Content-Type", "application/json")
		h.ServeHTTP(rec, r)

		var review admissionv1.AdmissionReview
		if err := json.Unmarshal(rec.Body.Bytes(), &review); err != nil || review.Response == nil {
			t.Fatalf("response is not an AdmissionReview: %v: %s", err, rec.Body.String())
		}
		resp := review.Response
		if !resp.Allowed {
			t.Fatalf("pod denied: %+v", resp.Result)
		}
		if resp.AuditAnnotations[AuditReason] == ReasonPanic {
			t.Fatalf("handler panicked: %q", resp.Warnings)
		}
		if len(resp.Patch) == 0 {
			return
		}
		var in admissionv1.AdmissionReview
		if err := json.Unmarshal(body, &in); err != nil || in.Request == nil {
			t.Fatalf("patched a request that does not decode: %v", err)
		}
		var orig corev1.Pod
		if sigsjson.UnmarshalCaseSensitivePreserveInts(in.Request.Object.Raw, &orig) != nil {
			// Not a pod the API server could have decoded, so it never
			// reaches a webhook; only "no panic, an answer" applies.
			return
		}
		pod, patched := applyPatchJSON(t, in.Request.Object.Raw, resp.Patch)
		if err := inject.ValidateDNS(pod.Spec.DNSPolicy, pod.Spec.DNSConfig); err != nil {
			t.Fatalf("injected pod fails validation: %v", err)
		}
		in.Request.Object.Raw = patched
		again := h.Handle(context.Background(), admission.Request{AdmissionRequest: *in.Request})
		if len(again.Patches) != 0 {
			t.Fatalf("second pass patched again: %+v", again.Patches)
		}
	})
}
