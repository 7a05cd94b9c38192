package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/yaml"

	"github.com/nodelocaldns/nodelocaldns/tests/kubeapi"
	"github.com/nodelocaldns/nodelocaldns/tests/resolvconf"
	"github.com/nodelocaldns/nodelocaldns/webhook/inject"
)

// The demo cluster's DNS settings (the manifests' kubeadm defaults).
const (
	kubeDNSIP     = "10.96.0.10"
	localDNSIP    = "169.254.20.10"
	clusterDomain = "cluster.local"
	demoNamespace = "demo"
	otherNS       = "demo-unlabelled"
)

// stepControlPlane starts etcd and kube-apiserver (tests/kubeapi).
func (d *demo) stepControlPlane(ctx context.Context) (string, error) {
	apiserver, err := binary("kube-apiserver", kubeapi.APIServerEnv)
	if err != nil {
		return "", err
	}
	etcd, err := binary("etcd", kubeapi.EtcdEnv)
	if err != nil {
		return "", err
	}
	d.printf("starting %s and %s on free loopback ports...\n", etcd, apiserver)
	began := time.Now()
	env, err := kubeapi.Start(ctx, kubeapi.Options{
		APIServerBin: apiserver, EtcdBin: etcd, Dir: filepath.Join(d.dir, "kubeapi"), AuditLog: true,
	})
	if err != nil {
		return "", err
	}
	d.onCleanup("stop kube-apiserver and etcd", env.Stop)
	d.env = env
	cs, err := kubernetes.NewForConfig(env.Config)
	if err != nil {
		return "", fmt.Errorf("client: %w", err)
	}
	d.cs = cs
	v, err := cs.Discovery().ServerVersion()
	if err != nil {
		return "", fmt.Errorf("server version: %w", err)
	}
	took := time.Since(began).Round(time.Millisecond)
	d.printf("kube-apiserver %s ready at %s in %v\nkubeconfig: %s\nlogs: %s, %s\n",
		v.GitVersion, env.URL, took, env.KubeconfigPath, env.APIServerLog, env.EtcdLog)
	return fmt.Sprintf("kube-apiserver %s ready in %v", v.GitVersion, took), nil
}

// webhookProc is bin/webhook running on 127.0.0.1.
type webhookProc struct {
	*proc
	url, healthURL, metricsURL string
	caPEM                      []byte
}

// stepWebhook creates the kube-dns Service, starts bin/webhook with a
// serving certificate and registers the project's MutatingWebhookConfiguration
// pointed at it.
func (d *demo) stepWebhook(ctx context.Context) (string, error) {
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "kube-dns", Namespace: "kube-system", Labels: map[string]string{"k8s-app": "kube-dns"}},
		Spec: corev1.ServiceSpec{
			ClusterIP: kubeDNSIP,
			Selector:  map[string]string{"k8s-app": "kube-dns"},
			Ports: []corev1.ServicePort{
				{Name: "dns", Port: 53, Protocol: corev1.ProtocolUDP, TargetPort: intstr.FromInt32(53)},
				{Name: "dns-tcp", Port: 53, Protocol: corev1.ProtocolTCP, TargetPort: intstr.FromInt32(53)},
			},
		},
	}
	if _, err := d.cs.CoreV1().Services("kube-system").Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		return "", fmt.Errorf("create Service kube-system/kube-dns: %w", err)
	}
	d.printf("created Service kube-system/kube-dns with ClusterIP %s (an API object only: the webhook reads its clusterIPs)\n", kubeDNSIP)

	bin, err := binary("webhook", "WEBHOOK_BIN")
	if err != nil {
		return "", err
	}
	wh, err := d.startWebhook(ctx, bin)
	if err != nil {
		return "", err
	}
	d.webhook = wh

	rendered, err := d.manifests()
	if err != nil {
		return "", err
	}
	mwc, err := webhookConfiguration(rendered, wh.url, wh.caPEM)
	if err != nil {
		return "", err
	}
	if _, err := d.cs.AdmissionregistrationV1().MutatingWebhookConfigurations().Create(ctx, mwc, metav1.CreateOptions{}); err != nil {
		return "", fmt.Errorf("create MutatingWebhookConfiguration %s: %w", mwc.Name, err)
	}
	w := mwc.Webhooks[0]
	d.printf("applied MutatingWebhookConfiguration %s from `kustomize build manifests` (rendered with krusty)\n", mwc.Name)
	d.printf("  clientConfig switched to url %s with the demo CA as caBundle\n", wh.url)
	d.printf("  failurePolicy %s, timeoutSeconds %d, %d matchConditions\n", *w.FailurePolicy, *w.TimeoutSeconds, len(w.MatchConditions))
	for _, e := range w.NamespaceSelector.MatchExpressions {
		d.printf("  namespaceSelector: %s %s %v\n", e.Key, e.Operator, e.Values)
	}
	for _, e := range w.ObjectSelector.MatchExpressions {
		d.printf("  objectSelector:    %s %s %v\n", e.Key, e.Operator, e.Values)
	}
	return fmt.Sprintf("webhook pid %d serving %s; %s registered", wh.pid(), wh.url, mwc.Name), nil
}

// startWebhook runs bin/webhook on free loopback ports with a fresh serving
// certificate and waits until it serves TLS and /readyz says ready.
func (d *demo) startWebhook(ctx context.Context, bin string) (*webhookProc, error) {
	certDir := filepath.Join(d.dir, "webhook-certs")
	if err := os.MkdirAll(certDir, 0o700); err != nil {
		return nil, err
	}
	caPEM, err := kubeapi.NewServingCert(certDir, "127.0.0.1", "localhost")
	if err != nil {
		return nil, err
	}
	ports, err := freeTCPPorts(3)
	if err != nil {
		return nil, err
	}
	wh := &webhookProc{
		url:        "https://127.0.0.1:" + strconv.Itoa(ports[0]) + "/mutate-v1-pod",
		healthURL:  "http://127.0.0.1:" + strconv.Itoa(ports[1]),
		metricsURL: "http://127.0.0.1:" + strconv.Itoa(ports[2]) + "/metrics",
		caPEM:      caPEM,
	}
	args := []string{bin,
		"--kubeconfig=" + d.env.KubeconfigPath,
		"--cert-dir=" + certDir,
		"--bind-address=127.0.0.1",
		"--port=" + strconv.Itoa(ports[0]),
		"--health-probe-bind-address=127.0.0.1:" + strconv.Itoa(ports[1]),
		"--metrics-bind-address=127.0.0.1:" + strconv.Itoa(ports[2]),
		"--local-dns-ip=" + localDNSIP,
		"--cluster-domain=" + clusterDomain,
	}
	d.show(shellJoin(args)+" &", "")
	wh.proc, err = d.startProc("webhook", filepath.Join(d.dir, "webhook.log"), nil, args...)
	if err != nil {
		return nil, err
	}
	d.onCleanup("stop the webhook", func() { _, _ = wh.term(10 * time.Second) })
	if err := wh.waitReady(ctx, 60*time.Second); err != nil {
		return nil, err
	}
	d.printf("webhook pid %d ready (TLS verified with the demo CA, %s/readyz OK); log: %s\n", wh.pid(), wh.healthURL, wh.logPath)
	return wh, nil
}

// waitReady polls the admission endpoint (any HTTP answer over verified TLS)
// and /readyz until both answer.
func (w *webhookProc) waitReady(ctx context.Context, timeout time.Duration) error {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(w.caPEM)
	tlsClient := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
	}}
	plain := &http.Client{Timeout: 2 * time.Second}
	deadline := time.Now().Add(timeout)
	var last string // why the last try failed
	for {
		if w.exited() {
			return fmt.Errorf("webhook exited (%w):\n%s", w.err, w.tail(20))
		}
		if _, err := httpGet(ctx, tlsClient, w.url); err != nil && !isHTTPStatus(err) {
			last = "admission endpoint: " + err.Error()
		} else if _, err := httpGet(ctx, plain, w.healthURL+"/readyz"); err != nil {
			last = "readyz: " + err.Error()
		} else {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("webhook not ready within %v (%s):\n%s", timeout, last, w.tail(20))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// httpStatusError is an HTTP answer other than 200.
type httpStatusError struct {
	code int
	body string
}

func (e *httpStatusError) Error() string { return fmt.Sprintf("HTTP %d: %s", e.code, e.body) }

func isHTTPStatus(err error) bool {
	_, ok := errors.AsType[*httpStatusError](err)
	return ok
}

// httpGet fetches url and returns the body of a 200 answer.
func httpGet(ctx context.Context, c *http.Client, url string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", err
	}
	resp, err := c.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", &httpStatusError{resp.StatusCode, strings.TrimSpace(firstLine(string(b)))}
	}
	return string(b), nil
}

// freeTCPPorts returns n loopback TCP ports that were free a moment ago.
func freeTCPPorts(n int) ([]int, error) {
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("free port: %w", err)
		}
		defer l.Close()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// demoPod is one pod of step 3 and what the webhook should do with it.
type demoPod struct {
	namespace, name string
	why             string
	mutate          func(*corev1.Pod)
	wantInjected    bool
}

func demoPods() []demoPod {
	return []demoPod{
		{namespace: demoNamespace, name: "plain", wantInjected: true,
			why: "default dnsPolicy (ClusterFirst) in a labelled namespace"},
		{namespace: demoNamespace, name: "opted-out", wantInjected: false,
			why: "pod label " + inject.SelectorLabel + "=" + inject.DisabledValue,
			mutate: func(p *corev1.Pod) {
				p.Labels = map[string]string{inject.SelectorLabel: inject.DisabledValue}
			}},
		{namespace: demoNamespace, name: "host-network", wantInjected: true,
			why: "hostNetwork with dnsPolicy ClusterFirstWithHostNet",
			mutate: func(p *corev1.Pod) {
				p.Spec.HostNetwork = true
				p.Spec.DNSPolicy = corev1.DNSClusterFirstWithHostNet
			}},
		{namespace: otherNS, name: "plain", wantInjected: false,
			why: "namespace without the " + inject.SelectorLabel + " label"},
	}
}

// stepPods labels a namespace, creates the demo pods and prints what the
// webhook did to each and the resolv.conf the kubelet would write.
func (d *demo) stepPods(ctx context.Context) (string, error) {
	for _, ns := range []*corev1.Namespace{
		{ObjectMeta: metav1.ObjectMeta{Name: demoNamespace, Labels: map[string]string{inject.SelectorLabel: inject.EnabledValue}}},
		{ObjectMeta: metav1.ObjectMeta{Name: otherNS}},
	} {
		if _, err := d.cs.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil {
			return "", fmt.Errorf("create namespace %s: %w", ns.Name, err)
		}
		d.printf("created namespace %s labels %v\n", ns.Name, ns.Labels)
	}
	waited, err := d.waitWebhookActive(ctx, 30*time.Second)
	if err != nil {
		return "", err
	}
	d.printf("the API server calls the webhook (a dry-run pod came back injected after %v)\n", waited.Round(time.Millisecond))

	var injected, mismatches []string
	for _, dp := range demoPods() {
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: dp.name, Namespace: dp.namespace},
			Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "registry.example/app:1"}}},
		}
		if dp.mutate != nil {
			dp.mutate(pod)
		}
		got, err := d.cs.CoreV1().Pods(dp.namespace).Create(ctx, pod, metav1.CreateOptions{})
		if err != nil {
			return "", fmt.Errorf("create pod %s/%s: %w", dp.namespace, dp.name, err)
		}
		isInjected := got.Annotations[inject.InjectedAnnotation] == "true"
		d.printPod(got, dp, isInjected)
		if isInjected {
			injected = append(injected, dp.namespace+"/"+dp.name)
		}
		if isInjected != dp.wantInjected {
			mismatches = append(mismatches, fmt.Sprintf("%s/%s injected=%v, want %v", dp.namespace, dp.name, isInjected, dp.wantInjected))
		}
		if dp.namespace == demoNamespace && dp.name == "plain" && isInjected {
			d.podResolv = resolvconf.Render(got.Spec.DNSConfig)
			d.podSource = "pod demo/plain, injected by the webhook in step 3"
		}
	}
	d.printAudit(ctx, 2*len(demoPods()))
	d.printWebhookMetrics(ctx)
	if len(mismatches) > 0 {
		return "", fmt.Errorf("unexpected webhook decisions: %s", strings.Join(mismatches, "; "))
	}
	return fmt.Sprintf("injected %s; left opted-out and unlabelled pods alone", strings.Join(injected, ", ")), nil
}

// waitWebhookActive dry-run creates a pod in the labelled namespace until
// it comes back injected (the API server's webhook client caches settle).
func (d *demo) waitWebhookActive(ctx context.Context, timeout time.Duration) (time.Duration, error) {
	began := time.Now()
	probe := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{GenerateName: "probe-"},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "registry.example/probe:1"}}},
	}
	for {
		got, err := d.cs.CoreV1().Pods(demoNamespace).Create(ctx, probe, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		if err != nil {
			return 0, fmt.Errorf("dry-run pod create: %w", err)
		}
		if got.Annotations[inject.InjectedAnnotation] == "true" {
			return time.Since(began), nil
		}
		if time.Since(began) > timeout {
			return 0, fmt.Errorf("the API server did not call the webhook within %v (probe pod dnsPolicy %q); webhook log:\n%s",
				timeout, got.Spec.DNSPolicy, d.webhook.tail(20))
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// printPod prints the DNS part of a created pod and its resolv.conf.
func (d *demo) printPod(p *corev1.Pod, dp demoPod, injected bool) {
	verdict := "NOT injected"
	if injected {
		verdict = "injected"
	}
	d.printf("\npod %s/%s (%s): %s\n", p.Namespace, p.Name, dp.why, verdict)
	view := struct {
		DNSPolicy   corev1.DNSPolicy     `json:"dnsPolicy"`
		HostNetwork bool                 `json:"hostNetwork,omitempty"`
		DNSConfig   *corev1.PodDNSConfig `json:"dnsConfig,omitempty"`
		Annotations map[string]string    `json:"annotations,omitempty"`
	}{p.Spec.DNSPolicy, p.Spec.HostNetwork, p.Spec.DNSConfig, p.Annotations}
	b, _ := yaml.Marshal(view)
	for l := range strings.SplitSeq(strings.TrimRight(string(b), "\n"), "\n") {
		d.printf("    %s\n", l)
	}
	text, how := podResolvConf(p)
	d.printf("  resolv.conf the kubelet would write (%s):\n", how)
	for l := range strings.SplitSeq(strings.TrimRight(text, "\n"), "\n") {
		d.printf("    %s\n", l)
	}
}

// podResolvConf renders the resolv.conf of a pod: tests/resolvconf for
// dnsPolicy None; the kubelet's ClusterFirst layout (without the node's own
// search domains) otherwise.
func podResolvConf(p *corev1.Pod) (string, string) {
	if p.Spec.DNSPolicy == corev1.DNSNone {
		return resolvconf.Render(p.Spec.DNSConfig), "dnsPolicy None: tests/resolvconf.Render of the dnsConfig"
	}
	ndots := "5"
	cfg := &corev1.PodDNSConfig{
		Nameservers: []string{kubeDNSIP},
		Searches:    []string{p.Namespace + ".svc." + clusterDomain, "svc." + clusterDomain, clusterDomain},
		Options:     []corev1.PodDNSConfigOption{{Name: "ndots", Value: &ndots}},
	}
	return resolvconf.Render(cfg), string(p.Spec.DNSPolicy) + ": kube-dns directly, the kubelet's defaults"
}

// printWebhookMetrics prints the webhook's admission counters.
func (d *demo) printWebhookMetrics(ctx context.Context) {
	body, err := httpGet(ctx, &http.Client{Timeout: 5 * time.Second}, d.webhook.metricsURL)
	if err != nil {
		d.printf("\n(webhook metrics not readable at %s: %v)\n", d.webhook.metricsURL, err)
		return
	}
	d.printf("\nthe webhook's decisions in its metrics (GET %s):\n", d.webhook.metricsURL)
	for _, l := range grepLines(body, "nodelocaldns_webhook_admissions_total{") {
		d.printf("    %s\n", l)
	}
}

// printAudit prints the admission annotations the API server recorded in
// its audit log for the demo pods' creation: the webhook's decision and
// reason, and the patch the API server applied. Pods the API server never
// sent to the webhook have none.
func (d *demo) printAudit(ctx context.Context, wantLines int) {
	d.printf("\nthe API server's audit log (%s), pod creations:\n", d.env.AuditLogPath)
	deadline := time.Now().Add(5 * time.Second)
	for {
		events, err := d.env.AuditEvents()
		if err != nil {
			d.printf("    (not readable: %v)\n", err)
			return
		}
		var lines []string
		for _, ev := range events {
			if ev.Verb != "create" || ev.Stage != "ResponseComplete" || ev.ObjectRef == nil ||
				ev.ObjectRef.Resource != "pods" || ev.ObjectRef.Name == "" {
				continue
			}
			var anns []string
			for k, v := range ev.Annotations {
				if strings.HasPrefix(k, "inject.node-local-dns.io/") || strings.HasPrefix(k, "mutation.webhook.admission.k8s.io/") ||
					strings.HasPrefix(k, "failed-open.mutation.webhook.admission.k8s.io/") {
					if len(v) > 100 {
						v = v[:100] + "..."
					}
					anns = append(anns, k+"="+v)
				}
			}
			sort.Strings(anns)
			if len(anns) == 0 {
				anns = []string{"(no webhook annotations: the API server did not call the webhook)"}
			}
			lines = append(lines, fmt.Sprintf("%s/%s:", ev.ObjectRef.Namespace, ev.ObjectRef.Name))
			for _, a := range anns {
				lines = append(lines, "    "+a)
			}
		}
		if len(lines) >= wantLines || time.Now().After(deadline) || ctx.Err() != nil {
			for _, l := range lines {
				d.printf("    %s\n", l)
			}
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// stepWebhookDown stops the webhook and creates a pod: with failurePolicy
// Ignore the API server creates it unchanged and records that it failed open.
func (d *demo) stepWebhookDown(ctx context.Context) (string, error) {
	d.show(fmt.Sprintf("kill -TERM %d", d.webhook.pid()), "")
	took, err := d.webhook.term(30 * time.Second)
	d.printf("webhook exited after %v (%v)\n", took.Round(time.Millisecond), exitStatus(err))
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "while-webhook-down", Namespace: demoNamespace},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "registry.example/app:1"}}},
	}
	began := time.Now()
	got, err := d.cs.CoreV1().Pods(demoNamespace).Create(ctx, pod, metav1.CreateOptions{})
	if err != nil {
		return "", fmt.Errorf("create pod with the webhook down: %w", err)
	}
	took = time.Since(began)
	injected := got.Annotations[inject.InjectedAnnotation] == "true"
	d.printPod(got, demoPod{why: "created while the webhook is down"}, injected)
	if injected {
		return "", fmt.Errorf("pod %s/%s injected with the webhook stopped", got.Namespace, got.Name)
	}
	d.printAudit(ctx, 2*len(demoPods())+2)
	return fmt.Sprintf("pod created unchanged in %v (failurePolicy Ignore): it uses kube-dns directly", took.Round(time.Millisecond)), nil
}

func exitStatus(err error) string {
	if err == nil {
		return "exit status 0"
	}
	return err.Error()
}
