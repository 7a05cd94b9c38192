package webhook

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/nodelocaldns/nodelocaldns/tests/kubeapi"
	"github.com/nodelocaldns/nodelocaldns/tests/testenv"
	"github.com/nodelocaldns/nodelocaldns/webhook/inject"
)

const (
	localIP     = "169.254.20.10"
	kubeDNSIP   = "10.96.0.10"
	kubeDNSIP2  = "10.96.0.53"
	kubeDNSIPv6 = "fd00:10:96::a"
	domain      = "cluster.local"

	// testConfigName names the registered copy of the shipped configuration.
	testConfigName = "node-local-dns-test"
)

// TestWebhookAgainstAPIServer registers the shipped webhook configuration on
// a real kube-apiserver, pointed at the real webhook running in-process, and
// creates pods through the API.
func TestWebhookAgainstAPIServer(t *testing.T) {
	env := kubeapi.StartT(t, kubeapi.Options{AuditLog: true, ServiceClusterIPRange: kubeapi.DualStackServiceClusterIPRange})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cs, err := env.Clientset()
	if err != nil {
		t.Fatal(err)
	}

	createKubeDNS(ctx, t, cs, kubeDNSIP)
	for name, ns := range map[string]*corev1.Namespace{
		"inject":      namespace("inject", true, nil),
		"inject-opts": namespace("inject-opts", true, map[string]string{inject.OptionsAnnotation: "ndots:2"}),
		"plain":       namespace("plain", false, nil),
		// The webhook's own namespace, labelled: excluded by name.
		"node-local-dns": namespace("node-local-dns", true, nil),
	} {
		if _, err := cs.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil {
			t.Fatalf("create namespace %s: %v", name, err)
		}
	}
	// kube-system is labelled too: the namespaceSelector must still exclude it.
	labelNamespace(ctx, t, cs, "kube-system")

	srv, err := StartServer(ctx, ServerOptions{Kubeconfig: env.KubeconfigPath, Metrics: true})
	if err != nil {
		t.Fatalf("start webhook: %v", err)
	}
	t.Cleanup(func() { _ = srv.Stop() })
	webhookName := registerWebhook(ctx, t, cs, srv)

	var injectedPod *corev1.Pod
	t.Run("pods", func(t *testing.T) {
		for _, tc := range podCases() {
			t.Run(tc.name, func(t *testing.T) {
				pod := tc.pod()
				got, err := cs.CoreV1().Pods(tc.namespace).Create(ctx, pod, metav1.CreateOptions{})
				if err != nil {
					t.Fatalf("create pod: %v", err)
				}
				got, err = cs.CoreV1().Pods(tc.namespace).Get(ctx, got.Name, metav1.GetOptions{})
				if err != nil {
					t.Fatalf("read pod back: %v", err)
				}
				if tc.want == nil {
					checkUnchanged(t, pod, got)
					return
				}
				checkInjected(t, got, tc.namespace, tc.want)
				if tc.name == "plain" {
					injectedPod = got
				}
			})
		}
	})

	t.Run("audit annotations and warnings", func(t *testing.T) {
		// A client that records the API server's Warning headers, which
		// carry the webhook's admission warnings.
		warnings := &warningRecorder{}
		cfg := rest.CopyConfig(env.Config)
		cfg.WarningHandler = warnings
		wcs, err := kubernetes.NewForConfig(cfg)
		if err != nil {
			t.Fatal(err)
		}
		for _, tc := range []struct {
			name         string
			pod          func(*corev1.Pod)
			wantDecision string
			wantReason   string
			wantWarning  string
		}{
			{name: "audit-injected", pod: func(*corev1.Pod) {}, wantDecision: "injected", wantReason: "injected"},
			{name: "audit-bad-options", pod: func(p *corev1.Pod) {
				p.Annotations = map[string]string{inject.OptionsAnnotation: "ndots:99"}
			}, wantDecision: "skipped", wantReason: inject.ReasonInvalidAnnotation, wantWarning: "ndots"},
			{name: "audit-virtual-node", pod: func(p *corev1.Pod) {
				p.Spec.Tolerations = []corev1.Toleration{{Key: "virtual-kubelet.io/provider", Operator: corev1.TolerationOpExists}}
			}, wantDecision: "skipped", wantReason: inject.ReasonNoAgentToleration},
			{name: "audit-too-many-nameservers", pod: func(p *corev1.Pod) {
				p.Spec.DNSConfig = &corev1.PodDNSConfig{Nameservers: []string{"192.0.2.1", "192.0.2.2"}}
			}, wantDecision: "injected", wantReason: "injected", wantWarning: "192.0.2.2"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				pod := basePod("")
				pod.GenerateName, pod.Name = "", tc.name
				tc.pod(pod)
				before := warnings.count()
				got, err := wcs.CoreV1().Pods("inject").Create(ctx, pod, metav1.CreateOptions{})
				if err != nil {
					t.Fatalf("create pod: %v", err)
				}
				if injected := got.Annotations[inject.InjectedAnnotation] == "true"; injected != (tc.wantDecision == "injected") {
					t.Errorf("injected = %v, want decision %s", injected, tc.wantDecision)
				}
				newWarnings := warnings.since(before)
				if tc.wantWarning == "" && len(newWarnings) > 0 {
					t.Errorf("unexpected warnings %q", newWarnings)
				}
				if tc.wantWarning != "" && !slices.ContainsFunc(newWarnings, func(w string) bool { return strings.Contains(w, tc.wantWarning) }) {
					t.Errorf("warnings %q, want one containing %q", newWarnings, tc.wantWarning)
				}
				ann := auditAnnotations(t, env, "inject", tc.name)
				if d, r := ann[webhookName+"/decision"], ann[webhookName+"/reason"]; d != tc.wantDecision || r != tc.wantReason {
					t.Errorf("audit annotations decision=%q reason=%q, want %q %q (all: %v)", d, r, tc.wantDecision, tc.wantReason, ann)
				}
			})
		}
	})

	t.Run("metrics count decisions by reason", func(t *testing.T) {
		for _, tc := range []struct {
			series string
			min    float64
		}{
			// Table rows and audit pods that reached the webhook (the rest
			// are filtered by selectors and match conditions).
			{`nodelocaldns_webhook_admissions_total{decision="injected",reason="injected"}`, 8},
			{`nodelocaldns_webhook_admissions_total{decision="skipped",reason="invalid-annotation"}`, 1},
			{`nodelocaldns_webhook_admissions_total{decision="skipped",reason="no-agent-node-selector"}`, 1},
			{`nodelocaldns_webhook_admissions_total{decision="skipped",reason="no-agent-node-affinity"}`, 1},
			{`nodelocaldns_webhook_admissions_total{decision="skipped",reason="no-agent-toleration"}`, 2},
			{`nodelocaldns_webhook_admission_duration_seconds_count{decision="injected"}`, 8},
		} {
			v, err := srv.Metric(ctx, tc.series)
			if err != nil {
				t.Fatal(err)
			}
			if v < tc.min {
				t.Errorf("%s = %v, want >= %v", tc.series, v, tc.min)
			}
		}
	})

	t.Run("update of an injected pod succeeds", func(t *testing.T) {
		if injectedPod == nil {
			t.Skip("no injected pod from the table")
		}
		pod := injectedPod.DeepCopy()
		pod.Labels = map[string]string{"updated": "yes"}
		got, err := cs.CoreV1().Pods(pod.Namespace).Update(ctx, pod, metav1.UpdateOptions{})
		if err != nil {
			t.Fatalf("update injected pod: %v", err)
		}
		if got.Labels["updated"] != "yes" {
			t.Errorf("labels after update = %v", got.Labels)
		}
		if !reflect.DeepEqual(got.Spec.DNSConfig, injectedPod.Spec.DNSConfig) || got.Spec.DNSPolicy != corev1.DNSNone {
			t.Errorf("update changed DNS: policy %q config %+v", got.Spec.DNSPolicy, got.Spec.DNSConfig)
		}
	})

	t.Run("reinvocation after another webhook's change is idempotent", func(t *testing.T) {
		startRelabeler(ctx, t, cs)
		pod := basePod("reinvoke-")
		pod.Labels = map[string]string{"reinvoke": "yes"}
		got, err := cs.CoreV1().Pods("inject").Create(ctx, pod, metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("create pod: %v", err)
		}
		if got.Labels["relabelled"] != "yes" {
			t.Fatalf("the second webhook did not run: labels %v", got.Labels)
		}
		checkInjected(t, got, "inject", &wantDNS{nameservers: []string{localIP, kubeDNSIP}, ndots: "3"})
	})

	t.Run("kube-dns deleted, then recreated with another IP", func(t *testing.T) {
		if err := cs.CoreV1().Services("kube-system").Delete(ctx, "kube-dns", metav1.DeleteOptions{}); err != nil {
			t.Fatalf("delete kube-dns: %v", err)
		}
		// Without kube-dns the webhook reports not ready and leaves pods alone.
		if err := srv.WaitUnready(ctx, 30*time.Second); err != nil {
			t.Fatalf("kube-dns deleted: %v", err)
		}
		pod := basePod("no-kube-dns-")
		got, err := cs.CoreV1().Pods("inject").Create(ctx, pod, metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("create pod without kube-dns: %v", err)
		}
		checkUnchanged(t, pod, got)

		createKubeDNS(ctx, t, cs, kubeDNSIP2)
		// The webhook learns the new IP from its informer.
		waitForNameservers(ctx, t, cs, []string{localIP, kubeDNSIP2})
		got, err = cs.CoreV1().Pods("inject").Create(ctx, basePod("after-recreate-"), metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		checkInjected(t, got, "inject", &wantDNS{nameservers: []string{localIP, kubeDNSIP2}, ndots: "3"})
	})

	t.Run("dual-stack kube-dns: both clusterIPs", func(t *testing.T) {
		if err := cs.CoreV1().Services("kube-system").Delete(ctx, "kube-dns", metav1.DeleteOptions{}); err != nil {
			t.Fatalf("delete kube-dns: %v", err)
		}
		createKubeDNS(ctx, t, cs, kubeDNSIP2, kubeDNSIPv6)
		want := []string{localIP, kubeDNSIP2, kubeDNSIPv6}
		waitForNameservers(ctx, t, cs, want)
		got, err := cs.CoreV1().Pods("inject").Create(ctx, basePod("dual-stack-"), metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		checkInjected(t, got, "inject", &wantDNS{nameservers: want, ndots: "3"})
	})

	t.Run("webhook stopped: pods are still created, unchanged", func(t *testing.T) {
		if err := srv.Stop(); err != nil {
			t.Errorf("webhook did not shut down cleanly: %v", err)
		}
		pod := basePod("while-down-")
		got, err := cs.CoreV1().Pods("inject").Create(ctx, pod, metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("create pod with the webhook down (failurePolicy must be Ignore): %v", err)
		}
		checkUnchanged(t, pod, got)
	})

	t.Run("second in-process run resumes injection", func(t *testing.T) {
		// app.Run must work again in the same process (no global flag or
		// metrics registration left over from the first run).
		srv2, err := StartServer(ctx, ServerOptions{Kubeconfig: env.KubeconfigPath})
		if err != nil {
			t.Fatalf("start webhook again: %v", err)
		}
		t.Cleanup(func() { _ = srv2.Stop() })
		pointConfigAt(ctx, t, cs, srv2)
		got, err := cs.CoreV1().Pods("inject").Create(ctx, basePod("after-restart-"), metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		checkInjected(t, got, "inject", &wantDNS{nameservers: []string{localIP, kubeDNSIP2, kubeDNSIPv6}, ndots: "3"})
		if err := srv2.Stop(); err != nil {
			t.Errorf("second webhook did not shut down cleanly: %v", err)
		}
	})

	t.Run("webhook binary in its own process", func(t *testing.T) {
		// bin/webhook (make build) through its thin main, as deployed.
		bin := testenv.Binary(t, "webhook", "WEBHOOK_BIN")
		srv3, err := StartServer(ctx, ServerOptions{Kubeconfig: env.KubeconfigPath, Binary: bin})
		if err != nil {
			t.Fatalf("start %s: %v", bin, err)
		}
		t.Cleanup(func() { _ = srv3.Stop() })
		pointConfigAt(ctx, t, cs, srv3)
		got, err := cs.CoreV1().Pods("inject").Create(ctx, basePod("binary-"), metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		checkInjected(t, got, "inject", &wantDNS{nameservers: []string{localIP, kubeDNSIP2, kubeDNSIPv6}, ndots: "3"})
		if cpu, err := srv3.CPUTime(); err != nil || cpu <= 0 {
			t.Errorf("CPUTime() = %v, %v; want > 0", cpu, err)
		}
		if err := srv3.Stop(); err != nil {
			t.Errorf("webhook process did not exit cleanly on SIGTERM: %v", err)
		}
	})
}

// pointConfigAt updates the registered configuration to call srv and waits
// until the API server does.
func pointConfigAt(ctx context.Context, t *testing.T, cs kubernetes.Interface, srv *Server) {
	t.Helper()
	mwcs := cs.AdmissionregistrationV1().MutatingWebhookConfigurations()
	mwc, err := mwcs.Get(ctx, testConfigName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	rv := mwc.ResourceVersion
	mwc = PointAt(mwc, testConfigName, srv.URL, srv.CAPEM)
	mwc.ResourceVersion = rv
	if _, err := mwcs.Update(ctx, mwc, metav1.UpdateOptions{}); err != nil {
		t.Fatalf("point the webhook configuration at %s: %v", srv.URL, err)
	}
	if err := WaitActive(ctx, cs, "inject", 30*time.Second); err != nil {
		t.Fatal(err)
	}
}

// wantDNS is the expected result of an injection.
type wantDNS struct {
	nameservers []string
	extraSearch []string // after the three cluster domains
	ndots       string
	options     []string // option names that must be present
}

type podCase struct {
	name      string
	namespace string
	pod       func() *corev1.Pod
	want      *wantDNS // nil: the pod must be stored as sent
}

func podCases() []podCase {
	injected := &wantDNS{nameservers: []string{localIP, kubeDNSIP}, ndots: "3"}
	with := func(mutate func(*corev1.Pod)) func() *corev1.Pod {
		return func() *corev1.Pod {
			p := basePod("")
			mutate(p)
			return p
		}
	}
	return []podCase{
		{name: "plain", namespace: "inject", pod: with(func(*corev1.Pod) {}), want: injected},
		{name: "explicit ClusterFirst", namespace: "inject", pod: with(func(p *corev1.Pod) {
			p.Spec.DNSPolicy = corev1.DNSClusterFirst
		}), want: injected},
		{name: "hostNetwork ClusterFirstWithHostNet", namespace: "inject", pod: with(func(p *corev1.Pod) {
			p.Spec.HostNetwork = true
			p.Spec.DNSPolicy = corev1.DNSClusterFirstWithHostNet
		}), want: injected},
		{name: "hostNetwork ClusterFirst", namespace: "inject", pod: with(func(p *corev1.Pod) {
			p.Spec.HostNetwork = true
			p.Spec.DNSPolicy = corev1.DNSClusterFirst
		})},
		{name: "dnsPolicy Default", namespace: "inject", pod: with(func(p *corev1.Pod) {
			p.Spec.DNSPolicy = corev1.DNSDefault
		})},
		{name: "dnsPolicy None", namespace: "inject", pod: with(func(p *corev1.Pod) {
			p.Spec.DNSPolicy = corev1.DNSNone
			p.Spec.DNSConfig = &corev1.PodDNSConfig{Nameservers: []string{"192.0.2.1"}}
		})},
		{name: "opt-out label", namespace: "inject", pod: with(func(p *corev1.Pod) {
			p.Labels = map[string]string{inject.SelectorLabel: inject.DisabledValue}
		})},
		{name: "opt-out annotation", namespace: "inject", pod: with(func(p *corev1.Pod) {
			p.Annotations = map[string]string{inject.OptOutAnnotation: inject.DisabledValue}
		})},
		{name: "existing dnsConfig is merged", namespace: "inject", pod: with(func(p *corev1.Pod) {
			p.Spec.DNSConfig = &corev1.PodDNSConfig{
				Nameservers: []string{"192.0.2.53"},
				Searches:    []string{"example.com"},
				Options:     []corev1.PodDNSConfigOption{{Name: "ndots", Value: new("5")}, {Name: "edns0"}},
			}
		}), want: &wantDNS{
			nameservers: []string{localIP, kubeDNSIP, "192.0.2.53"},
			extraSearch: []string{"example.com"}, ndots: "5", options: []string{"edns0", "timeout", "attempts"},
		}},
		{name: "Windows spec.os", namespace: "inject", pod: with(func(p *corev1.Pod) {
			p.Spec.OS = &corev1.PodOS{Name: corev1.Windows}
		})},
		{name: "Windows nodeSelector", namespace: "inject", pod: with(func(p *corev1.Pod) {
			p.Spec.NodeSelector = map[string]string{inject.OSLabel: "windows"}
		})},
		{name: "virtual-kubelet nodeSelector", namespace: "inject", pod: with(func(p *corev1.Pod) {
			p.Spec.NodeSelector = map[string]string{"type": "virtual-kubelet"}
		})},
		{name: "virtual-kubelet toleration", namespace: "inject", pod: with(func(p *corev1.Pod) {
			p.Spec.Tolerations = []corev1.Toleration{{Key: "virtual-kubelet.io/provider", Operator: corev1.TolerationOpExists}}
		})},
		{name: "virtual-kubelet node affinity", namespace: "inject", pod: with(func(p *corev1.Pod) {
			p.Spec.Affinity = &corev1.Affinity{NodeAffinity: &corev1.NodeAffinity{RequiredDuringSchedulingIgnoredDuringExecution: &corev1.NodeSelector{
				NodeSelectorTerms: []corev1.NodeSelectorTerm{{MatchExpressions: []corev1.NodeSelectorRequirement{
					{Key: "type", Operator: corev1.NodeSelectorOpIn, Values: []string{"virtual-kubelet"}},
				}}},
			}}}
		})},
		{name: "other node selector is injected", namespace: "inject", pod: with(func(p *corev1.Pod) {
			p.Spec.NodeSelector = map[string]string{"type": "gpu"}
		}), want: injected},
		{name: "namespace without the label", namespace: "plain", pod: with(func(*corev1.Pod) {})},
		{name: "kube-system", namespace: "kube-system", pod: with(func(*corev1.Pod) {})},
		{name: "the webhook's own namespace", namespace: "node-local-dns", pod: with(func(*corev1.Pod) {})},
		{name: "namespace options annotation", namespace: "inject-opts", pod: with(func(*corev1.Pod) {}),
			want: &wantDNS{nameservers: []string{localIP, kubeDNSIP}, ndots: "2"}},
		{name: "pod options annotation beats namespace", namespace: "inject-opts", pod: with(func(p *corev1.Pod) {
			p.Annotations = map[string]string{inject.OptionsAnnotation: "ndots:4,single-request"}
		}), want: &wantDNS{nameservers: []string{localIP, kubeDNSIP}, ndots: "4", options: []string{"single-request"}}},
	}
}

func checkInjected(t *testing.T, got *corev1.Pod, ns string, want *wantDNS) {
	t.Helper()
	if got.Spec.DNSPolicy != corev1.DNSNone {
		t.Errorf("dnsPolicy = %q, want None", got.Spec.DNSPolicy)
	}
	if got.Annotations[inject.InjectedAnnotation] != "true" {
		t.Errorf("annotation %s = %q, want \"true\"", inject.InjectedAnnotation, got.Annotations[inject.InjectedAnnotation])
	}
	if got.Labels[inject.InjectedLabel] != "true" {
		t.Errorf("label %s = %q, want \"true\" (labels %v)", inject.InjectedLabel, got.Labels[inject.InjectedLabel], got.Labels)
	}
	cfg := got.Spec.DNSConfig
	if cfg == nil {
		t.Fatal("no dnsConfig")
	}
	if !slices.Equal(cfg.Nameservers, want.nameservers) {
		t.Errorf("nameservers = %v, want %v", cfg.Nameservers, want.nameservers)
	}
	wantSearch := append([]string{ns + ".svc." + domain, "svc." + domain, domain}, want.extraSearch...)
	if !slices.Equal(cfg.Searches, wantSearch) {
		t.Errorf("searches = %v, want %v", cfg.Searches, wantSearch)
	}
	opts := map[string]string{}
	for _, o := range cfg.Options {
		if _, dup := opts[o.Name]; dup {
			t.Errorf("option %q appears twice in %v", o.Name, cfg.Options)
		}
		opts[o.Name] = ""
		if o.Value != nil {
			opts[o.Name] = *o.Value
		}
	}
	if opts["ndots"] != want.ndots {
		t.Errorf("ndots = %q, want %q (options %v)", opts["ndots"], want.ndots, opts)
	}
	for _, name := range want.options {
		if _, ok := opts[name]; !ok {
			t.Errorf("option %q missing from %v", name, opts)
		}
	}
}

// checkUnchanged fails unless the stored pod has the DNS settings it was
// sent with (after API defaulting) and no injection mark.
func checkUnchanged(t *testing.T, sent, got *corev1.Pod) {
	t.Helper()
	wantPolicy := sent.Spec.DNSPolicy
	if wantPolicy == "" {
		wantPolicy = corev1.DNSClusterFirst
	}
	if got.Spec.DNSPolicy != wantPolicy {
		t.Errorf("dnsPolicy = %q, want %q (unchanged)", got.Spec.DNSPolicy, wantPolicy)
	}
	if !reflect.DeepEqual(got.Spec.DNSConfig, sent.Spec.DNSConfig) {
		t.Errorf("dnsConfig = %+v, want %+v (unchanged)", got.Spec.DNSConfig, sent.Spec.DNSConfig)
	}
	if v, ok := got.Annotations[inject.InjectedAnnotation]; ok {
		t.Errorf("pod carries %s=%q but must not be injected", inject.InjectedAnnotation, v)
	}
	if v, ok := got.Labels[inject.InjectedLabel]; ok {
		t.Errorf("pod carries the label %s=%q but must not be injected", inject.InjectedLabel, v)
	}
}

// registerWebhook creates the shipped configuration pointed at srv and waits
// until the API server calls it (it picks configurations up asynchronously).
func registerWebhook(ctx context.Context, t *testing.T, cs kubernetes.Interface, srv *Server) (webhookName string) {
	t.Helper()
	mwc, file, err := ManifestConfiguration(testenv.RepoRoot())
	if err != nil {
		t.Fatalf("load the shipped MutatingWebhookConfiguration: %v", err)
	}
	t.Logf("webhook configuration from %s", file)
	mwc = PointAt(mwc, testConfigName, srv.URL, srv.CAPEM)
	if _, err := cs.AdmissionregistrationV1().MutatingWebhookConfigurations().Create(ctx, mwc, metav1.CreateOptions{}); err != nil {
		t.Fatalf("register webhook: %v", err)
	}
	if err := WaitActive(ctx, cs, "inject", 30*time.Second); err != nil {
		t.Fatal(err)
	}
	return mwc.Webhooks[0].Name
}

// startRelabeler registers a second mutating webhook, ordered after ours, that
// labels pods carrying reinvoke=yes. The API server then reinvokes our webhook
// (reinvocationPolicy IfNeeded), which must leave the injected pod as it is.
func startRelabeler(ctx context.Context, t *testing.T, cs kubernetes.Interface) {
	t.Helper()
	dir := t.TempDir()
	caPEM, err := kubeapi.NewServingCert(dir, "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var review admissionv1.AdmissionReview
		if err := json.NewDecoder(r.Body).Decode(&review); err != nil || review.Request == nil {
			http.Error(w, "bad review", http.StatusBadRequest)
			return
		}
		pt := admissionv1.PatchTypeJSONPatch
		review.Response = &admissionv1.AdmissionResponse{
			UID: review.Request.UID, Allowed: true, PatchType: &pt,
			Patch: []byte(`[{"op":"add","path":"/metadata/labels/relabelled","value":"yes"}]`),
		}
		review.Request = nil
		_ = json.NewEncoder(w).Encode(review)
	}))
	pair, err := tls.LoadX509KeyPair(filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key"))
	if err != nil {
		t.Fatal(err)
	}
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{pair}}
	srv.StartTLS()
	t.Cleanup(srv.Close)

	url := srv.URL + "/relabel"
	none := admissionregistrationv1.SideEffectClassNone
	ignore := admissionregistrationv1.Ignore
	mwc := &admissionregistrationv1.MutatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: "zz-relabel"}, // runs after ours (name order)
		Webhooks: []admissionregistrationv1.MutatingWebhook{{
			Name:                    "relabel.test.example",
			ClientConfig:            admissionregistrationv1.WebhookClientConfig{URL: &url, CABundle: caPEM},
			AdmissionReviewVersions: []string{"v1"},
			SideEffects:             &none,
			FailurePolicy:           &ignore,
			ObjectSelector:          &metav1.LabelSelector{MatchLabels: map[string]string{"reinvoke": "yes"}},
			Rules: []admissionregistrationv1.RuleWithOperations{{
				Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create},
				Rule:       admissionregistrationv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"pods"}},
			}},
		}},
	}
	if _, err := cs.AdmissionregistrationV1().MutatingWebhookConfigurations().Create(ctx, mwc, metav1.CreateOptions{}); err != nil {
		t.Fatalf("register relabel webhook: %v", err)
	}
	t.Cleanup(func() {
		_ = cs.AdmissionregistrationV1().MutatingWebhookConfigurations().Delete(context.Background(), mwc.Name, metav1.DeleteOptions{})
	})
	// Wait until the API server calls it.
	deadline := time.Now().Add(30 * time.Second)
	for {
		probe := basePod("relabel-probe-")
		probe.Labels = map[string]string{"reinvoke": "yes"}
		got, err := cs.CoreV1().Pods("plain").Create(ctx, probe, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		if err != nil {
			t.Fatalf("dry-run create: %v", err)
		}
		if got.Labels["relabelled"] == "yes" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("relabel webhook not called within 30s")
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// warningRecorder is a rest.WarningHandler that keeps every warning.
type warningRecorder struct {
	mu   sync.Mutex
	msgs []string
}

func (w *warningRecorder) HandleWarningHeader(_ int, _ string, msg string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.msgs = append(w.msgs, msg)
}

func (w *warningRecorder) count() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.msgs)
}

func (w *warningRecorder) since(n int) []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.msgs[n:])
}

// auditAnnotations waits for the audit event of the pod's create and returns
// its annotations.
func auditAnnotations(t *testing.T, env *kubeapi.Env, namespace, name string) map[string]string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		events, err := env.AuditEvents()
		if err != nil {
			t.Fatal(err)
		}
		for _, ev := range events {
			if ev.Verb == "create" && ev.Stage == "ResponseComplete" && ev.ObjectRef != nil &&
				ev.ObjectRef.Resource == "pods" && ev.ObjectRef.Namespace == namespace && ev.ObjectRef.Name == name {
				return ev.Annotations
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no audit event for the creation of pod %s/%s", namespace, name)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitForNameservers dry-run creates pods (nothing is left behind) until the
// injected nameservers are want, or fails after 30 seconds.
func waitForNameservers(ctx context.Context, t *testing.T, cs kubernetes.Interface, want []string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		got, err := cs.CoreV1().Pods("inject").Create(ctx, basePod("probe-"), metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		if err != nil {
			t.Fatalf("dry-run create: %v", err)
		}
		if got.Spec.DNSConfig != nil && slices.Equal(got.Spec.DNSConfig.Nameservers, want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 30s pods still get %+v, want nameservers %v", got.Spec.DNSConfig, want)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// createKubeDNS creates the kube-dns Service with the given clusterIPs (two
// for dual stack).
func createKubeDNS(ctx context.Context, t *testing.T, cs kubernetes.Interface, ips ...string) {
	t.Helper()
	policy := corev1.IPFamilyPolicySingleStack
	if len(ips) > 1 {
		policy = corev1.IPFamilyPolicyRequireDualStack
	}
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "kube-dns", Namespace: "kube-system", Labels: map[string]string{"k8s-app": "kube-dns"}},
		Spec: corev1.ServiceSpec{
			ClusterIP:      ips[0],
			ClusterIPs:     ips,
			IPFamilyPolicy: &policy,
			Selector:       map[string]string{"k8s-app": "kube-dns"},
			Ports: []corev1.ServicePort{
				{Name: "dns", Port: 53, Protocol: corev1.ProtocolUDP},
				{Name: "dns-tcp", Port: 53, Protocol: corev1.ProtocolTCP},
			},
		},
	}
	if _, err := cs.CoreV1().Services("kube-system").Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create kube-dns Service %v: %v", ips, err)
	}
}

func labelNamespace(ctx context.Context, t *testing.T, cs kubernetes.Interface, name string) {
	t.Helper()
	ns, err := cs.CoreV1().Namespaces().Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if ns.Labels == nil {
		ns.Labels = map[string]string{}
	}
	ns.Labels[inject.SelectorLabel] = inject.EnabledValue
	if _, err := cs.CoreV1().Namespaces().Update(ctx, ns, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
}

func namespace(name string, labelled bool, annotations map[string]string) *corev1.Namespace {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: annotations}}
	if labelled {
		ns.Labels = map[string]string{inject.SelectorLabel: inject.EnabledValue}
	}
	return ns
}

// basePod is a minimal pod; a non-empty prefix asks for a generated name.
func basePod(prefix string) *corev1.Pod {
	p := &corev1.Pod{Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "registry.example/app:1"}}}}
	if prefix != "" {
		p.GenerateName = prefix
	} else {
		p.GenerateName = "pod-"
	}
	return p
}
