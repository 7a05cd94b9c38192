package certs_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	admv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/yaml"

	"github.com/nodelocaldns/nodelocaldns/certs"
	"github.com/nodelocaldns/nodelocaldns/tests/kubeapi"
	"github.com/nodelocaldns/nodelocaldns/tests/testenv"
	"github.com/nodelocaldns/nodelocaldns/webhook/app"
	"github.com/nodelocaldns/nodelocaldns/webhook/inject"
)

const (
	kubeDNSIP  = "10.96.0.10"
	webhookNS  = "node-local-dns"
	appsNS     = "apps"
	configName = "node-local-dns-webhook"
	secretName = "node-local-dns-webhook-certs"
)

// cluster is a real kube-apiserver with what the webhook needs: the kube-dns
// Service, the webhook's namespace, a labelled namespace, and the project's
// MutatingWebhookConfiguration (manifests/webhook) pointed at a loopback URL.
type cluster struct {
	env    *kubeapi.Env
	client *kubernetes.Clientset
}

func startCluster(t *testing.T) *cluster {
	t.Helper()
	env := kubeapi.StartT(t)
	client, err := kubernetes.NewForConfig(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, ns := range []*corev1.Namespace{
		{ObjectMeta: metav1.ObjectMeta{Name: webhookNS}},
		{ObjectMeta: metav1.ObjectMeta{Name: appsNS, Labels: map[string]string{"node-local-dns-injection": "enabled"}}},
	} {
		if _, err := client.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "kube-dns", Namespace: "kube-system"},
		Spec: corev1.ServiceSpec{ClusterIP: kubeDNSIP, Ports: []corev1.ServicePort{
			{Name: "dns", Port: 53, Protocol: corev1.ProtocolUDP},
		}},
	}
	if _, err := client.CoreV1().Services("kube-system").Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	return &cluster{env: env, client: client}
}

// registerWebhook creates the project's webhook configuration with its
// clientConfig pointed at url and the given caBundle (nil: none yet), and the
// cert-manager annotation removed (no cainjector here).
func (c *cluster) registerWebhook(t *testing.T, url string, caBundle []byte) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(testenv.RepoRoot(), "manifests", "webhook", "mutatingwebhookconfiguration.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var cfg admv1.MutatingWebhookConfiguration
	if err := yaml.UnmarshalStrict(data, &cfg); err != nil {
		t.Fatalf("manifests/webhook/mutatingwebhookconfiguration.yaml: %v", err)
	}
	for i := range cfg.Webhooks {
		cfg.Webhooks[i].ClientConfig = admv1.WebhookClientConfig{URL: &url, CABundle: caBundle}
	}
	if _, err := c.client.AdmissionregistrationV1().MutatingWebhookConfigurations().Create(context.Background(), &cfg, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

var podSeq atomic.Int64

// createPod creates a plain pod in the labelled namespace and reports whether
// the webhook injected it.
func (c *cluster) createPod(t *testing.T) (bool, *corev1.Pod) {
	t.Helper()
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("p%d", podSeq.Add(1)), Namespace: appsNS},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "busybox"}}},
	}
	got, err := c.client.CoreV1().Pods(appsNS).Create(context.Background(), pod, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create pod: %v", err)
	}
	injected := got.Spec.DNSPolicy == corev1.DNSNone && got.Spec.DNSConfig != nil &&
		len(got.Spec.DNSConfig.Nameservers) >= 2 && got.Spec.DNSConfig.Nameservers[0] == "169.254.20.10" &&
		got.Spec.DNSConfig.Nameservers[1] == kubeDNSIP && got.Annotations[inject.InjectedAnnotation] != ""
	return injected, got
}

// waitInjected creates pods until one is injected (the webhook became ready
// and the API server trusts it).
func (c *cluster) waitInjected(t *testing.T, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		ok, pod := c.createPod(t)
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no pod injected within %s; last pod dnsPolicy=%s dnsConfig=%+v", within, pod.Spec.DNSPolicy, pod.Spec.DNSConfig)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// replica is one in-process webhook (app.Run).
type replica struct {
	port   int
	dir    string
	cancel context.CancelFunc
	done   chan error
}

func startReplica(t *testing.T, c *cluster, extra ...string) *replica {
	t.Helper()
	r := &replica{port: testenv.FreePort(t), dir: t.TempDir(), done: make(chan error, 1)}
	args := append([]string{
		"--kubeconfig=" + c.env.KubeconfigPath,
		"--cert-dir=" + r.dir,
		"--bind-address=127.0.0.1",
		"--port=" + strconv.Itoa(r.port),
		"--health-probe-bind-address=0",
		"--metrics-bind-address=0",
		"--graceful-shutdown-timeout=2s",
	}, extra...)
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	go func() { r.done <- app.Run(ctx, args) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-r.done:
			if err != nil {
				t.Errorf("webhook on port %d returned %v", r.port, err)
			}
		case <-time.After(30 * time.Second):
			t.Errorf("webhook on port %d did not stop", r.port)
		}
	})
	return r
}

// servedCert returns the leaf certificate the replica serves, verified
// against caBundle for localhost.
func (r *replica) servedCert(caBundle []byte) (*x509.Certificate, error) {
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(caBundle) {
		return nil, fmt.Errorf("empty caBundle")
	}
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 3 * time.Second}, "tcp", "127.0.0.1:"+strconv.Itoa(r.port),
		&tls.Config{RootCAs: roots, ServerName: "localhost"})
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0], nil
}

func (c *cluster) caBundle(t *testing.T) []byte {
	t.Helper()
	cfg, err := c.client.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(context.Background(), configName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return cfg.Webhooks[0].ClientConfig.CABundle
}

// TestBuiltinCertsRealAPIServer runs two webhook replicas with
// --builtin-certs against a real kube-apiserver, with a serving certificate
// valid for 9s and a CA valid for 30s: pods are injected through the API
// server from the first certificates on, both replicas serve the same
// certificate from the one Secret, renewals (serving and CA) happen during
// the test, and admission keeps working across them.
func TestBuiltinCertsRealAPIServer(t *testing.T) {
	c := startCluster(t)
	flags := []string{
		"--builtin-certs",
		"--certs-secret=" + webhookNS + "/" + secretName,
		"--webhook-config-name=" + configName,
		"--certs-dns-names=localhost",
		"--cert-validity=9s",
		"--ca-validity=30s",
	}
	a := startReplicaWhenConfigured(t, c, flags)
	b := startReplica(t, c, flags...)

	c.waitInjected(t, 60*time.Second)
	secret, err := c.client.CoreV1().Secrets(webhookNS).Get(context.Background(), secretName, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("the built-in certificates Secret: %v", err)
	}
	firstCA := secret.Data[certs.KeyCACert]

	// Admission keeps working for 28s (serving renewals at about 6s, 12s,
	// 18s and with the CA at 20s); both replicas serve a certificate the caBundle trusts.
	seen := map[string]bool{}
	sameCert := 0
	deadline := time.Now().Add(28 * time.Second)
	failures := 0
	pods := 0
	for time.Now().Before(deadline) {
		ok, _ := c.createPod(t)
		pods++
		if !ok {
			failures++
		}
		bundle := c.caBundle(t)
		ca, errA := a.servedCert(bundle)
		cb, errB := b.servedCert(bundle)
		if errA == nil && errB == nil {
			seen[ca.SerialNumber.String()] = true
			if bytes.Equal(ca.Raw, cb.Raw) {
				sameCert++
			}
		}
		time.Sleep(250 * time.Millisecond)
	}
	secret, err = c.client.CoreV1().Secrets(webhookNS).Get(context.Background(), secretName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d pods created during renewals, %d not injected; %d serving certificates seen; replicas served the same certificate in %d checks",
		pods, failures, len(seen), sameCert)
	// A pod created in the instant between a new CA reaching the caBundle
	// and the file reaching the server could in theory miss injection (the
	// API server then creates it unchanged: failurePolicy Ignore); with the
	// bundle holding old and new CA it must not happen.
	if failures > 0 {
		t.Errorf("%d of %d pods were not injected while certificates rotated", failures, pods)
	}
	if len(seen) < 3 {
		t.Errorf("saw %d serving certificates in 28s with a 9s validity, want >= 3 (renewal at 6s)", len(seen))
	}
	if bytes.Equal(secret.Data[certs.KeyCACert], firstCA) {
		t.Error("the CA (validity 30s, renewal at 20s) was not renewed within 28s")
	}
	if sameCert == 0 {
		t.Error("the two replicas never served the same certificate")
	}
	// Both replicas' files are the Secret's.
	for _, r := range []*replica{a, b} {
		got, err := os.ReadFile(filepath.Join(r.dir, "tls.crt"))
		if err != nil {
			t.Fatal(err)
		}
		cur, _ := c.client.CoreV1().Secrets(webhookNS).Get(context.Background(), secretName, metav1.GetOptions{})
		if !bytes.Equal(got, cur.Data[certs.KeyTLSCert]) {
			// A renewal may be in flight: give the watch a moment.
			time.Sleep(time.Second)
			got, _ = os.ReadFile(filepath.Join(r.dir, "tls.crt"))
			cur, _ = c.client.CoreV1().Secrets(webhookNS).Get(context.Background(), secretName, metav1.GetOptions{})
			if !bytes.Equal(got, cur.Data[certs.KeyTLSCert]) {
				t.Errorf("replica on port %d serves a certificate that is not the Secret's", r.port)
			}
		}
	}
}

// startReplicaWhenConfigured registers the webhook configuration (without a
// caBundle: the replica patches it) pointed at the first replica.
func startReplicaWhenConfigured(t *testing.T, c *cluster, flags []string) *replica {
	t.Helper()
	port := testenv.FreePort(t)
	c.registerWebhook(t, fmt.Sprintf("https://localhost:%d/mutate-v1-pod", port), nil)
	r := startReplica(t, c, append(flags, "--port="+strconv.Itoa(port))...)
	r.port = port
	return r
}

// TestCertManagerPathRealAPIServer checks the cert-manager wiring without a
// running cert-manager (none here): the test issues the serving certificate
// the way cert-manager's CA Issuer would (a Secret with tls.crt, tls.key and
// ca.crt), copies the CA into the caBundle the way cainjector does for the
// cert-manager.io/inject-ca-from annotation, and mounts the Secret's files as
// the kubelet would into --cert-dir. Pods are injected through the real API
// server; a re-issued certificate written into the directory is served
// without a restart.
func TestCertManagerPathRealAPIServer(t *testing.T) {
	c := startCluster(t)
	issue := func(dir string) []byte {
		caPEM, err := kubeapi.NewServingCert(dir, "localhost")
		if err != nil {
			t.Fatal(err)
		}
		return caPEM
	}
	// "cert-manager": the serving Certificate's Secret.
	staging := t.TempDir()
	caPEM := issue(staging)
	secretData := map[string][]byte{"ca.crt": caPEM}
	for _, k := range []string{"tls.crt", "tls.key"} {
		b, err := os.ReadFile(filepath.Join(staging, k))
		if err != nil {
			t.Fatal(err)
		}
		secretData[k] = b
	}
	if _, err := c.client.CoreV1().Secrets(webhookNS).Create(context.Background(), &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "node-local-dns-webhook-tls", Namespace: webhookNS},
		Type:       corev1.SecretTypeTLS, Data: secretData,
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// "kubelet": the Secret volume in --cert-dir.
	port := testenv.FreePort(t)
	// "cainjector": caBundle from the Secret's ca.crt.
	c.registerWebhook(t, fmt.Sprintf("https://localhost:%d/mutate-v1-pod", port), caPEM)
	r := startReplicaWithDir(t, c, port, secretData)
	c.waitInjected(t, 60*time.Second)
	before, err := r.servedCert(caPEM)
	if err != nil {
		t.Fatal(err)
	}

	// "cert-manager" renews: same CA would be the CA Issuer's; here the
	// harness issues from a new CA, so update the caBundle first with both
	// (as cainjector does with the new ca.crt) and then the files.
	renewDir := t.TempDir()
	newCA := issue(renewDir)
	cfg, err := c.client.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(context.Background(), configName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	both := append(append([]byte{}, caPEM...), newCA...)
	cfg.Webhooks[0].ClientConfig.CABundle = both
	if _, err := c.client.AdmissionregistrationV1().MutatingWebhookConfigurations().Update(context.Background(), cfg, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"tls.key", "tls.crt"} {
		b, err := os.ReadFile(filepath.Join(renewDir, k))
		if err != nil {
			t.Fatal(err)
		}
		tmp := filepath.Join(r.dir, "."+k)
		if err := os.WriteFile(tmp, b, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(r.dir, k)); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		after, err := r.servedCert(both)
		if err == nil && !bytes.Equal(after.Raw, before.Raw) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the re-issued certificate was not served within 20s (err %v)", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if ok, pod := c.createPod(t); !ok {
		t.Fatalf("pod not injected after the certificate was re-issued: %+v", pod.Spec.DNSConfig)
	}
}

func startReplicaWithDir(t *testing.T, c *cluster, port int, files map[string][]byte) *replica {
	t.Helper()
	dir := t.TempDir()
	for k, v := range files {
		if err := os.WriteFile(filepath.Join(dir, k), v, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	r := startReplica(t, c, "--cert-dir="+dir, "--port="+strconv.Itoa(port))
	r.port, r.dir = port, dir
	return r
}
