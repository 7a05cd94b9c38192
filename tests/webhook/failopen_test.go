package webhook

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/nodelocaldns/nodelocaldns/tests/kubeapi"
	"github.com/nodelocaldns/nodelocaldns/tests/testenv"
	"github.com/nodelocaldns/nodelocaldns/webhook/handler"
	"github.com/nodelocaldns/nodelocaldns/webhook/inject"
	"github.com/nodelocaldns/nodelocaldns/webhook/server"
)

// notInjected starts every warning of a pod the webhook left alone.
const notInjected = "node-local DNS not injected: "

// TestErrorPathsFailOpen sends each error path of the webhook through a real
// kube-apiserver: the object must be created (unchanged) with the webhook's
// warning, and the reason must be in the audit annotations and metrics.
// Before, the handler answered these with admission.Errored (allowed: false),
// which the API server treats as a rejection whatever the failurePolicy:
// the pods and ConfigMaps below were refused.
func TestErrorPathsFailOpen(t *testing.T) {
	env := kubeapi.StartT(t, kubeapi.Options{AuditLog: true})
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	cs, err := env.Clientset()
	if err != nil {
		t.Fatal(err)
	}
	warnings := &warningRecorder{}
	cfg := rest.CopyConfig(env.Config)
	cfg.WarningHandler = warnings
	wcs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	createKubeDNS(ctx, t, cs, kubeDNSIP)
	srv, err := StartServer(ctx, ServerOptions{Kubeconfig: env.KubeconfigPath, Metrics: true, Args: []string{"--max-request-bytes=65536"}})
	if err != nil {
		t.Fatalf("start webhook: %v", err)
	}
	t.Cleanup(func() { _ = srv.Stop() })
	shipped, _, err := ManifestConfiguration(testenv.RepoRoot())
	if err != nil {
		t.Fatal(err)
	}

	// register adds a copy of the shipped configuration for the namespace
	// ns only (created here, labelled for injection), calling url.
	register := func(t *testing.T, ns, url string, caPEM []byte, mutate func(*admissionregistrationv1.MutatingWebhook)) {
		t.Helper()
		if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns,
			Labels: map[string]string{inject.SelectorLabel: inject.EnabledValue, "errorpath": ns}}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		mwc := PointAt(shipped, "errorpath-"+ns, url, caPEM)
		w := &mwc.Webhooks[0]
		w.NamespaceSelector.MatchLabels = map[string]string{"errorpath": ns}
		if mutate != nil {
			mutate(w)
		}
		if _, err := cs.AdmissionregistrationV1().MutatingWebhookConfigurations().Create(ctx, mwc, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	// untilWarned dry-runs create until the webhook's warning comes back
	// (registrations take effect asynchronously); it returns the warning.
	untilWarned := func(t *testing.T, create func(dryRun bool) error) string {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			before := warnings.count()
			if err := create(true); err != nil {
				t.Fatalf("dry-run create refused: %v", err)
			}
			if i := slices.IndexFunc(warnings.since(before), func(w string) bool { return strings.HasPrefix(w, notInjected) }); i >= 0 {
				return warnings.since(before)[i]
			}
			if time.Now().After(deadline) {
				t.Fatal("the webhook never warned within 30s")
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	createPod := func(ns, name string, mutate func(*corev1.Pod)) func(bool) error {
		return func(dryRun bool) error {
			pod := basePod("")
			pod.GenerateName, pod.Name = "", name
			if mutate != nil {
				mutate(pod)
			}
			opts := metav1.CreateOptions{}
			if dryRun {
				opts.DryRun = []string{metav1.DryRunAll}
			}
			got, err := wcs.CoreV1().Pods(ns).Create(ctx, pod, opts)
			if err == nil && got.Spec.DNSPolicy == corev1.DNSNone {
				t.Errorf("pod %s/%s was injected", ns, name)
			}
			return err
		}
	}
	checkPod := func(t *testing.T, ns, name, wantReason, wantWarning string) {
		t.Helper()
		warning := untilWarned(t, createPod(ns, name, nil))
		if !strings.Contains(warning, wantWarning) {
			t.Errorf("warning %q does not mention %q", warning, wantWarning)
		}
		if err := createPod(ns, name, nil)(false); err != nil {
			t.Fatalf("pod refused: %v", err)
		}
		ann := auditAnnotations(t, env, ns, name)
		hook := shipped.Webhooks[0].Name
		if ann[hook+"/decision"] != handler.DecisionError || ann[hook+"/reason"] != wantReason {
			t.Errorf("audit annotations %v, want decision %q reason %q", ann, handler.DecisionError, wantReason)
		}
	}

	t.Run("wrong kind", func(t *testing.T) {
		// A configuration that (wrongly) sends ConfigMaps to the webhook.
		register(t, "wrong-kind", srv.URL, srv.CAPEM, func(w *admissionregistrationv1.MutatingWebhook) {
			w.Rules[0].Resources = []string{"configmaps"}
			w.MatchConditions = nil
		})
		warning := untilWarned(t, func(dryRun bool) error {
			opts := metav1.CreateOptions{}
			if dryRun {
				opts.DryRun = []string{metav1.DryRunAll}
			}
			_, err := wcs.CoreV1().ConfigMaps("wrong-kind").Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{GenerateName: "cm-"}}, opts)
			return err
		})
		if !strings.Contains(warning, "ConfigMap") {
			t.Errorf("warning %q does not name the kind", warning)
		}
		if v, err := srv.Metric(ctx, `nodelocaldns_webhook_admissions_total{decision="error",reason="wrong-kind"}`); err != nil || v < 1 {
			t.Errorf("wrong-kind counted %v times (%v)", v, err)
		}
	})

	t.Run("undecodable pod", func(t *testing.T) {
		// A proxy between the API server and the webhook breaks the pod
		// (hostNetwork becomes a string); the UID is kept.
		url, ca := startProxy(t, srv, func(review map[string]any) {
			req := review["request"].(map[string]any)
			req["object"] = map[string]any{"metadata": map[string]any{"name": "x"}, "spec": map[string]any{"hostNetwork": "yes"}}
		})
		register(t, "undecodable", url, ca, nil)
		checkPod(t, "undecodable", "broken", handler.ReasonUndecodable, "decoding pod")
	})

	t.Run("undecodable review", func(t *testing.T) {
		// Without a request the answer has no UID: the API server counts the
		// call as failed and applies failurePolicy Ignore.
		url, ca := startProxy(t, srv, func(review map[string]any) { delete(review, "request") })
		register(t, "no-request", url, ca, nil)
		deadline := time.Now().Add(30 * time.Second)
		for {
			before, _ := srv.Metric(ctx, `nodelocaldns_webhook_admissions_total{decision="error",reason="undecodable-review"}`)
			if err := createPod("no-request", "p"+strconv.FormatInt(time.Now().UnixNano(), 36), nil)(false); err != nil {
				t.Fatalf("pod refused: %v", err)
			}
			if after, _ := srv.Metric(ctx, `nodelocaldns_webhook_admissions_total{decision="error",reason="undecodable-review"}`); after > before {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("the webhook never saw the broken review")
			}
			time.Sleep(200 * time.Millisecond)
		}
	})

	t.Run("panic", func(t *testing.T) {
		// The real handler and server, with a namespace lookup that panics.
		url, ca := startPanicking(ctx, t)
		register(t, "panics", url, ca, nil)
		checkPod(t, "panics", "survivor", handler.ReasonPanic, "panic")
	})

	t.Run("request too large", func(t *testing.T) {
		// --max-request-bytes=65536: a pod with a 100 KB annotation is cut
		// off (HTTP 413) and admitted unchanged by failurePolicy Ignore.
		register(t, "large", srv.URL, srv.CAPEM, nil)
		if err := WaitActive(ctx, cs, "large", 30*time.Second); err != nil {
			t.Fatal(err)
		}
		before, _ := srv.Metric(ctx, `nodelocaldns_webhook_admissions_total{decision="error",reason="request-too-large"}`)
		big := func(p *corev1.Pod) {
			p.Annotations = map[string]string{"example.com/blob": strings.Repeat("x", 100_000)}
		}
		if err := createPod("large", "big", big)(false); err != nil {
			t.Fatalf("large pod refused: %v", err)
		}
		if after, _ := srv.Metric(ctx, `nodelocaldns_webhook_admissions_total{decision="error",reason="request-too-large"}`); after != before+1 {
			t.Errorf("request-too-large %v -> %v, want one more", before, after)
		}
		ann := auditAnnotations(t, env, "large", "big")
		if !slices.ContainsFunc(mapKeys(ann), func(k string) bool { return strings.HasPrefix(k, "failed-open.") }) {
			t.Errorf("no failed-open audit annotation: %v", ann)
		}
	})
}

func mapKeys(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

// startProxy serves HTTPS on loopback, rewrites each AdmissionReview with
// edit and forwards it to the webhook; it returns its URL and CA.
func startProxy(t *testing.T, srv *Server, edit func(review map[string]any)) (string, []byte) {
	t.Helper()
	client := srv.Client(4)
	return startTLS(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var review map[string]any
		if err := json.NewDecoder(r.Body).Decode(&review); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		edit(review)
		body, _ := json.Marshal(review)
		resp, err := client.Post(srv.URL, "application/json", bytes.NewReader(body))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(resp.StatusCode)
		_, _ = io.Copy(w, resp.Body)
	}))
}

// startPanicking serves the real admission handler on the real server,
// with a namespace lookup that panics.
func startPanicking(ctx context.Context, t *testing.T) (string, []byte) {
	t.Helper()
	base, err := inject.BaseOptions(inject.DefaultNdots, inject.DefaultTimeout, inject.DefaultAttempts)
	if err != nil {
		t.Fatal(err)
	}
	h, err := handler.New(handler.Options{
		Config:     inject.Config{LocalIPs: []string{localIP}, ClusterDomain: domain, Options: base},
		KubeDNSIPs: func() []string { return []string{kubeDNSIP} },
		Namespaces: func(context.Context, string) (map[string]string, error) { panic("namespace lookup exploded") },
		Registerer: prometheus.NewRegistry(),
	})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	caPEM, err := kubeapi.NewServingCert(dir, "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	port := testenv.FreePort(t)
	s, err := server.New(server.Options{Host: "127.0.0.1", Port: port, CertDir: dir, Registerer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	s.Register(AdmissionPath, h)
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- s.Start(runCtx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Logf("webhook server stopped: %v", err)
		}
	})
	return "https://127.0.0.1:" + strconv.Itoa(port) + AdmissionPath, caPEM
}

// startTLS serves h over HTTPS on 127.0.0.1 with a fresh certificate.
func startTLS(t *testing.T, h http.Handler) (string, []byte) {
	t.Helper()
	dir := t.TempDir()
	caPEM, err := kubeapi.NewServingCert(dir, "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	pair, err := tls.LoadX509KeyPair(filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key"))
	if err != nil {
		t.Fatal(err)
	}
	s := httptest.NewUnstartedServer(h)
	s.TLS = &tls.Config{Certificates: []tls.Certificate{pair}}
	s.StartTLS()
	t.Cleanup(s.Close)
	return s.URL + AdmissionPath, caPEM
}
