package manifests

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"sync"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	admv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/nodelocaldns/nodelocaldns/tests/kubeapi"
)

// recorder is an HTTPS admission endpoint that allows everything and
// records which pods the API server sent it.
type recorder struct {
	mu   sync.Mutex
	seen map[string]int
}

func (r *recorder) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	var review admissionv1.AdmissionReview
	if err := json.NewDecoder(req.Body).Decode(&review); err != nil || review.Request == nil {
		http.Error(w, "bad review", http.StatusBadRequest)
		return
	}
	var pod corev1.Pod
	_ = json.Unmarshal(review.Request.Object.Raw, &pod)
	r.mu.Lock()
	r.seen[review.Request.Namespace+"/"+pod.Name]++
	r.mu.Unlock()
	review.Response = &admissionv1.AdmissionResponse{UID: review.Request.UID, Allowed: true}
	review.Request = nil
	_ = json.NewEncoder(w).Encode(&review)
}

func (r *recorder) calls(key string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.seen[key]
}

// TestSelectionOnRealAPIServer registers the default install's
// MutatingWebhookConfiguration (pointed at a recording endpoint) on a real
// kube-apiserver and creates pods of every kind: the namespace and object
// selectors and the CEL matchConditions must let the API server call the
// webhook for exactly the pods it may inject, and never for the others.
func TestSelectionOnRealAPIServer(t *testing.T) {
	env := kubeapi.StartT(t)
	client, err := kubernetes.NewForConfig(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	certDir := t.TempDir()
	caPEM, err := kubeapi.NewServingCert(certDir, "localhost")
	if err != nil {
		t.Fatal(err)
	}
	rec := &recorder{seen: map[string]int{}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: rec, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.ServeTLS(ln, filepath.Join(certDir, "tls.crt"), filepath.Join(certDir, "tls.key")) }()
	defer srv.Close()

	cfg := get[*admv1.MutatingWebhookConfiguration](t, renderRepo(t, "."), webhookName)
	url := fmt.Sprintf("https://localhost:%d/mutate-v1-pod", ln.Addr().(*net.TCPAddr).Port)
	cfg.Webhooks[0].ClientConfig = admv1.WebhookClientConfig{URL: &url, CABundle: caPEM}
	cfg.Annotations = nil
	if _, err := client.AdmissionregistrationV1().MutatingWebhookConfigurations().Create(ctx, cfg, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, ns := range []struct {
		name   string
		labels map[string]string
	}{
		{"apps", map[string]string{injectLabel: "enabled"}},
		{"plain", nil},
		{"off", map[string]string{injectLabel: "disabled"}},
		{webhookNamespace, map[string]string{injectLabel: "enabled"}},
	} {
		if _, err := client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns.name, Labels: ns.labels}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	ks, err := client.CoreV1().Namespaces().Get(ctx, "kube-system", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ks.Labels[injectLabel] = "enabled"
	if _, err := client.CoreV1().Namespaces().Update(ctx, ks, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}

	// The registration takes effect asynchronously: wait until a plain pod
	// in the labelled namespace reaches the recorder.
	deadline := time.Now().Add(30 * time.Second)
	for i := 0; rec.calls(fmt.Sprintf("apps/warmup%d", i-1)) == 0; i++ {
		if time.Now().After(deadline) {
			t.Fatal("the webhook configuration never took effect")
		}
		createPod(ctx, t, client, "apps", fmt.Sprintf("warmup%d", i), func(*corev1.Pod) {})
		time.Sleep(100 * time.Millisecond)
	}

	for _, tc := range []struct {
		name, ns string
		mutate   func(p *corev1.Pod)
		want     bool
	}{
		{"plain", "apps", func(*corev1.Pod) {}, true},
		{"ClusterFirst explicit", "apps", func(p *corev1.Pod) { p.Spec.DNSPolicy = corev1.DNSClusterFirst }, true},
		{"hostNetwork ClusterFirstWithHostNet", "apps", func(p *corev1.Pod) {
			p.Spec.HostNetwork, p.Spec.DNSPolicy = true, corev1.DNSClusterFirstWithHostNet
		}, true},
		{"linux nodeSelector", "apps", func(p *corev1.Pod) { p.Spec.NodeSelector = map[string]string{"kubernetes.io/os": "linux"} }, true},
		{"other annotation", "apps", func(p *corev1.Pod) { p.Annotations = map[string]string{"a": "b"} }, true},
		{"dnsPolicy Default", "apps", func(p *corev1.Pod) { p.Spec.DNSPolicy = corev1.DNSDefault }, false},
		{"dnsPolicy None", "apps", func(p *corev1.Pod) {
			p.Spec.DNSPolicy = corev1.DNSNone
			p.Spec.DNSConfig = &corev1.PodDNSConfig{Nameservers: []string{"192.0.2.1"}}
		}, false},
		{"hostNetwork ClusterFirst", "apps", func(p *corev1.Pod) { p.Spec.HostNetwork = true }, false},
		{"windows os", "apps", func(p *corev1.Pod) { p.Spec.OS = &corev1.PodOS{Name: corev1.Windows} }, false},
		{"windows nodeSelector", "apps", func(p *corev1.Pod) { p.Spec.NodeSelector = map[string]string{"kubernetes.io/os": "windows"} }, false},
		{"opt-out annotation", "apps", func(p *corev1.Pod) { p.Annotations = map[string]string{injectLabel: "disabled"} }, false},
		{"opt-out label", "apps", func(p *corev1.Pod) { p.Labels = map[string]string{injectLabel: "disabled"} }, false},
		{"unlabelled namespace", "plain", func(*corev1.Pod) {}, false},
		{"namespace label disabled", "off", func(*corev1.Pod) {}, false},
		{"kube-system even if labelled", "kube-system", func(*corev1.Pod) {}, false},
		{"webhook namespace even if labelled", webhookNamespace, func(*corev1.Pod) {}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			name := fmt.Sprintf("pod-%d", time.Now().UnixNano())
			createPod(ctx, t, client, tc.ns, name, tc.mutate)
			if got := rec.calls(tc.ns+"/"+name) > 0; got != tc.want {
				t.Errorf("webhook called = %v, want %v", got, tc.want)
			}
		})
	}
	// UPDATE never reaches the webhook.
	pod, err := client.CoreV1().Pods("apps").Get(ctx, "warmup0", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	before := rec.calls("apps/warmup0")
	pod.Labels = map[string]string{"updated": "yes"}
	if _, err := client.CoreV1().Pods("apps").Update(ctx, pod, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if after := rec.calls("apps/warmup0"); after != before {
		t.Errorf("an UPDATE reached the webhook (%d -> %d calls)", before, after)
	}

	// The cluster-wide install (components/cluster-wide): every namespace
	// but the system ones and those labelled disabled.
	t.Run("cluster-wide", func(t *testing.T) {
		wide := get[*admv1.MutatingWebhookConfiguration](t, renderRepo(t, "overlays/cluster-wide"), webhookName)
		cur, err := client.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, cfg.Name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		cur.Webhooks[0].NamespaceSelector = wide.Webhooks[0].NamespaceSelector
		if _, err := client.AdmissionregistrationV1().MutatingWebhookConfigurations().Update(ctx, cur, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(30 * time.Second)
		for i := 0; rec.calls(fmt.Sprintf("plain/wide-warmup%d", i-1)) == 0; i++ {
			if time.Now().After(deadline) {
				t.Fatal("the cluster-wide selector never took effect")
			}
			createPod(ctx, t, client, "plain", fmt.Sprintf("wide-warmup%d", i), func(*corev1.Pod) {})
			time.Sleep(100 * time.Millisecond)
		}
		for _, tc := range []struct {
			ns   string
			want bool
		}{
			{"plain", true},
			{"apps", true},
			{"off", false},
			{"kube-system", false},
			{"kube-public", false},
			{webhookNamespace, false},
		} {
			name := fmt.Sprintf("wide-%d", time.Now().UnixNano())
			createPod(ctx, t, client, tc.ns, name, func(*corev1.Pod) {})
			if got := rec.calls(tc.ns+"/"+name) > 0; got != tc.want {
				t.Errorf("namespace %s: webhook called = %v, want %v", tc.ns, got, tc.want)
			}
		}
	})
}

func createPod(ctx context.Context, t *testing.T, client *kubernetes.Clientset, ns, name string, mutate func(*corev1.Pod)) {
	t.Helper()
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "busybox"}}},
	}
	mutate(p)
	if _, err := client.CoreV1().Pods(ns).Create(ctx, p, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create %s/%s: %v", ns, name, err)
	}
}
