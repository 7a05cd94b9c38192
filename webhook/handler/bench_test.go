package handler

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"testing"

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"
)

// benchPod is a typical Deployment pod: two containers with env, resources,
// probes and volume mounts.
func benchPod() *corev1.Pod {
	c := corev1.Container{
		Name:  "app",
		Image: "registry.example/app:1.2.3",
		Env:   []corev1.EnvVar{{Name: "A", Value: "1"}, {Name: "B", Value: "2"}, {Name: "C", Value: "3"}},
		Resources: corev1.ResourceRequirements{
			Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("100m"), corev1.ResourceMemory: resource.MustParse("128Mi")},
		},
		VolumeMounts:   []corev1.VolumeMount{{Name: "data", MountPath: "/data"}},
		ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/ready"}}},
	}
	sidecar := c
	sidecar.Name = "sidecar"
	return testPod(func(p *corev1.Pod) {
		p.Labels = map[string]string{"app": "web", "pod-template-hash": "abc123"}
		p.Annotations = map[string]string{"prometheus.io/scrape": "true"}
		p.Spec.Containers = []corev1.Container{c, sidecar}
		p.Spec.Volumes = []corev1.Volume{{Name: "data", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}}
	})
}

// BenchmarkHandle measures one admission decision with patch building (pod
// decoding included), the work done per pod creation.
func BenchmarkHandle(b *testing.B) {
	h := newHandler(b, []string{"10.96.0.10"}, func(context.Context, string) (map[string]string, error) {
		return map[string]string{"nodelocaldns.io/dns-options": "ndots:2"}, nil
	}, nil)
	req := podRequest(b, admissionv1.Create, benchPod())
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if resp := h.Handle(ctx, req); len(resp.Patches) == 0 {
			b.Fatal("not patched")
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "admissions/s")
}

// BenchmarkServeHTTP adds the AdmissionReview decoding and response encoding
// of ServeHTTP (no TLS, no network).
func BenchmarkServeHTTP(b *testing.B) {
	h := newHandler(b, []string{"10.96.0.10"}, nil, nil)
	body := reviewBytes(b, podRequest(b, admissionv1.Create, benchPod()))
	b.ReportAllocs()
	for b.Loop() {
		rec := httptest.NewRecorder()
		r := httptest.NewRequest(http.MethodPost, Path, bytes.NewReader(body))
		r.Header.Set("Content-Type", "application/json")
		h.ServeHTTP(rec, r)
		if rec.Code != http.StatusOK {
			b.Fatalf("status %d", rec.Code)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "admissions/s")
}

// BenchmarkServeHTTPControllerRuntime is the peer of BenchmarkServeHTTP:
// the same handler behind controller-runtime's admission.Webhook, which the
// webhook used before it read bodies itself.
func BenchmarkServeHTTPControllerRuntime(b *testing.B) {
	h := newHandler(b, []string{"10.96.0.10"}, nil, nil)
	wh := &admission.Webhook{Handler: h}
	body := reviewBytes(b, podRequest(b, admissionv1.Create, benchPod()))
	b.ReportAllocs()
	for b.Loop() {
		rec := httptest.NewRecorder()
		r := httptest.NewRequest(http.MethodPost, Path, bytes.NewReader(body))
		r.Header.Set("Content-Type", "application/json")
		wh.ServeHTTP(rec, r)
		if rec.Code != http.StatusOK {
			b.Fatalf("status %d", rec.Code)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "admissions/s")
}
