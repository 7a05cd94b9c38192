package certs

import (
	"bytes"
	"context"
	"crypto/x509"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	admv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

const (
	testNS     = "node-local-dns"
	testSecret = "webhook-certs"
	testConfig = "node-local-dns-webhook"
)

var testNames = []string{"node-local-dns-webhook.node-local-dns.svc"}

// clock is a settable fake clock.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

func webhookConfig(hooks int) *admv1.MutatingWebhookConfiguration {
	cfg := &admv1.MutatingWebhookConfiguration{ObjectMeta: metav1.ObjectMeta{Name: testConfig}}
	for i := range hooks {
		cfg.Webhooks = append(cfg.Webhooks, admv1.MutatingWebhook{Name: string(rune('a'+i)) + ".node-local-dns.io"})
	}
	return cfg
}

func newTestManager(t *testing.T, client *fake.Clientset, clk *clock, dir string, mutate func(*Options)) *Manager {
	t.Helper()
	opts := Options{
		Client:            client,
		SecretNamespace:   testNS,
		SecretName:        testSecret,
		WebhookConfigName: testConfig,
		DNSNames:          testNames,
		CertDir:           dir,
		CAValidity:        300 * time.Hour,
		ServingValidity:   30 * time.Hour,
		Now:               clk.Now,
	}
	if mutate != nil {
		mutate(&opts)
	}
	m, err := New(opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return m
}

func getSecret(t *testing.T, client *fake.Clientset) *corev1.Secret {
	t.Helper()
	s, err := client.CoreV1().Secrets(testNS).Get(context.Background(), testSecret, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("get Secret: %v", err)
	}
	return s
}

func caBundles(t *testing.T, client *fake.Clientset) [][]byte {
	t.Helper()
	cfg, err := client.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(context.Background(), testConfig, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var out [][]byte
	for _, w := range cfg.Webhooks {
		out = append(out, w.ClientConfig.CABundle)
	}
	return out
}

// verifyServing checks that the files in dir form a serving certificate for
// the DNS names that chains to caBundle at time now.
func verifyServing(t *testing.T, dir string, caBundle []byte, now time.Time) *x509.Certificate {
	t.Helper()
	certPEM, err := os.ReadFile(filepath.Join(dir, KeyTLSCert))
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, err := os.ReadFile(filepath.Join(dir, KeyTLSKey))
	if err != nil {
		t.Fatal(err)
	}
	kp, err := parseKeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatalf("files in %s: %v", dir, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caBundle) {
		t.Fatalf("caBundle holds no certificate")
	}
	if _, err := kp.Cert.Verify(x509.VerifyOptions{DNSName: testNames[0], Roots: pool, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
		t.Fatalf("serving certificate does not verify against the caBundle: %v", err)
	}
	return kp.Cert
}

func countWrites(client *fake.Clientset) int {
	n := 0
	for _, a := range client.Actions() {
		if a.GetResource().Resource == "secrets" && (a.GetVerb() == "create" || a.GetVerb() == "update") {
			n++
		}
	}
	return n
}

func TestNewValidates(t *testing.T) {
	client := fake.NewClientset()
	base := func() Options {
		return Options{Client: client, SecretNamespace: "a", SecretName: "b", DNSNames: []string{"x"}, CertDir: "/tmp/x"}
	}
	for _, tc := range []struct {
		name    string
		mutate  func(*Options)
		wantErr string
	}{
		{"valid", func(*Options) {}, ""},
		{"no client", func(o *Options) { o.Client = nil }, "client"},
		{"no secret", func(o *Options) { o.SecretName = "" }, "Secret"},
		{"no names", func(o *Options) { o.DNSNames = nil }, "DNS name"},
		{"no dir", func(o *Options) { o.CertDir = "" }, "directory"},
		{"negative", func(o *Options) { o.ServingValidity = -time.Second }, "negative"},
		{"sub-second validity", func(o *Options) { o.ServingValidity = 500 * time.Millisecond }, "one second"},
		{"serving outlives CA", func(o *Options) { o.CAValidity = time.Hour; o.ServingValidity = 2 * time.Hour }, "exceeds"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := base()
			tc.mutate(&o)
			_, err := New(o)
			if (err == nil) != (tc.wantErr == "") || (err != nil && !strings.Contains(err.Error(), tc.wantErr)) {
				t.Fatalf("New() error = %v, want %q", err, tc.wantErr)
			}
		})
	}
}

func TestEnsureCreatesAndIsIdempotent(t *testing.T) {
	client := fake.NewClientset(webhookConfig(2))
	clk := &clock{now: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)}
	dir := t.TempDir()
	reg := prometheus.NewRegistry()
	m := newTestManager(t, client, clk, dir, func(o *Options) { o.Registerer = reg })
	ctx := context.Background()

	if err := m.Ensure(ctx); err != nil {
		t.Fatalf("Ensure: %v", err)
	}
	select {
	case <-m.Ready():
	default:
		t.Fatal("not ready after a successful Ensure")
	}
	s := getSecret(t, client)
	for _, k := range []string{KeyTLSCert, KeyTLSKey, KeyCACert, KeyCAKey, KeyCABundle} {
		if len(s.Data[k]) == 0 {
			t.Errorf("Secret lacks %s", k)
		}
	}
	if s.Type != corev1.SecretTypeTLS {
		t.Errorf("Secret type %q", s.Type)
	}
	bundles := caBundles(t, client)
	for i, b := range bundles {
		if !bytes.Equal(b, s.Data[KeyCACert]) {
			t.Errorf("webhook %d caBundle is not the CA", i)
		}
	}
	verifyServing(t, dir, bundles[0], clk.Now())
	if got := testutil.ToFloat64(m.metrics.issued.WithLabelValues("serving")); got != 1 {
		t.Errorf("issued{serving} = %v, want 1", got)
	}

	writes := countWrites(client)
	clk.Add(10 * time.Hour) // still before 2/3 of 30h
	if err := m.Ensure(ctx); err != nil {
		t.Fatal(err)
	}
	if got := countWrites(client); got != writes {
		t.Errorf("a second Ensure wrote the Secret again (%d writes, want %d)", got, writes)
	}
}

// TestEnsureRenews walks the clock through the renewal points.
func TestEnsureRenews(t *testing.T) {
	start := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	client := fake.NewClientset(webhookConfig(1))
	clk := &clock{now: start}
	dir := t.TempDir()
	m := newTestManager(t, client, clk, dir, nil)
	ctx := context.Background()
	if err := m.Ensure(ctx); err != nil {
		t.Fatal(err)
	}
	first := getSecret(t, client)
	firstCA := first.Data[KeyCACert]
	lastServing := first.Data[KeyTLSCert]

	// Serving validity 30h: renewed at 20h, the CA (300h) at 200h.
	for _, tc := range []struct {
		name        string
		at          time.Duration
		wantServing bool // a new serving certificate
		wantCA      bool // a new CA
		wantTrusted int  // CAs in the caBundle
	}{
		{"before 2/3 of serving", 19 * time.Hour, false, false, 1},
		{"at 2/3 of serving", 20*time.Hour + time.Second, true, false, 1},
		{"later serving renewal", 41 * time.Hour, true, false, 1},
		{"at 2/3 of CA", 200*time.Hour + time.Second, true, true, 2},
		{"old CA still valid", 250 * time.Hour, true, false, 2},
		{"old CA expired", 301 * time.Hour, true, false, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clk.now = start.Add(tc.at)
			if err := m.Ensure(ctx); err != nil {
				t.Fatal(err)
			}
			s := getSecret(t, client)
			if got := !bytes.Equal(s.Data[KeyTLSCert], lastServing); got != tc.wantServing {
				t.Errorf("new serving certificate = %v, want %v", got, tc.wantServing)
			}
			lastServing = s.Data[KeyTLSCert]
			if got := !bytes.Equal(s.Data[KeyCACert], firstCA); got != (tc.wantCA || tc.at > 200*time.Hour) {
				t.Errorf("CA changed = %v", got)
			}
			b := caBundles(t, client)[0]
			certs, err := parseCerts(b)
			if err != nil {
				t.Fatal(err)
			}
			if len(certs) != tc.wantTrusted {
				t.Errorf("caBundle holds %d CAs, want %d", len(certs), tc.wantTrusted)
			}
			if !bytes.Contains(b, bytes.TrimSpace(s.Data[KeyCACert])) {
				t.Errorf("caBundle lacks the current CA")
			}
			verifyServing(t, dir, b, clk.Now())
		})
	}
}

func TestEnsureRepairs(t *testing.T) {
	for _, tc := range []struct {
		name   string
		mutate func(s *corev1.Secret, o *Options)
	}{
		{"garbage serving certificate", func(s *corev1.Secret, _ *Options) { s.Data[KeyTLSCert] = []byte("garbage") }},
		{"key of another certificate", func(s *corev1.Secret, _ *Options) { s.Data[KeyTLSKey] = s.Data[KeyCAKey] }},
		{"missing CA key", func(s *corev1.Secret, _ *Options) { delete(s.Data, KeyCAKey) }},
		{"serving from another CA", func(s *corev1.Secret, _ *Options) {
			other, _ := newCA(time.Now(), time.Hour*300, "other")
			s.Data[KeyCACert], s.Data[KeyCAKey] = other.CertPEM, other.KeyPEM
		}},
		{"DNS names changed", func(_ *corev1.Secret, o *Options) { o.DNSNames = []string{"other.node-local-dns.svc"} }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			client := fake.NewClientset(webhookConfig(1))
			clk := &clock{now: time.Now()}
			m := newTestManager(t, client, clk, t.TempDir(), nil)
			ctx := context.Background()
			if err := m.Ensure(ctx); err != nil {
				t.Fatal(err)
			}
			s := getSecret(t, client)
			opts := m.opts
			tc.mutate(s, &opts)
			if _, err := client.CoreV1().Secrets(testNS).Update(ctx, s, metav1.UpdateOptions{}); err != nil {
				t.Fatal(err)
			}
			dir := t.TempDir()
			opts.CertDir = dir
			m2, err := New(opts)
			if err != nil {
				t.Fatal(err)
			}
			if err := m2.Ensure(ctx); err != nil {
				t.Fatalf("Ensure on a broken Secret: %v", err)
			}
			repaired := getSecret(t, client)
			kp, err := parseKeyPair(repaired.Data[KeyTLSCert], repaired.Data[KeyTLSKey])
			if err != nil {
				t.Fatalf("still broken: %v", err)
			}
			pool := x509.NewCertPool()
			pool.AppendCertsFromPEM(caBundles(t, client)[0])
			if _, err := kp.Cert.Verify(x509.VerifyOptions{DNSName: opts.DNSNames[0], Roots: pool}); err != nil {
				t.Errorf("repaired certificate does not verify for %s: %v", opts.DNSNames[0], err)
			}
		})
	}
}

// TestEnsureAdoptsTheWinner simulates a second replica that writes the Secret
// between our read and our write: we must not overwrite it but serve its
// certificates.
func TestEnsureAdoptsTheWinner(t *testing.T) {
	for _, verb := range []string{"create", "update"} {
		t.Run(verb, func(t *testing.T) {
			client := fake.NewClientset(webhookConfig(1))
			clk := &clock{now: time.Now()}
			ctx := context.Background()
			if verb == "update" {
				// An expired Secret that both replicas want to renew.
				old := newTestManager(t, client, &clock{now: clk.now.Add(-100 * time.Hour)}, t.TempDir(), nil)
				if err := old.Ensure(ctx); err != nil {
					t.Fatal(err)
				}
			}
			winner := newTestManager(t, fake.NewClientset(webhookConfig(1)), clk, t.TempDir(), nil)
			winnerData, _, err := winner.plan(func() map[string][]byte {
				if verb == "update" {
					return getSecret(t, client).Data
				}
				return nil
			}())
			if err != nil || winnerData == nil {
				t.Fatalf("winner plan: %v %v", winnerData, err)
			}
			raced := false
			client.PrependReactor(verb, "secrets", func(a k8stesting.Action) (bool, runtime.Object, error) {
				if raced {
					return false, nil, nil
				}
				raced = true
				gr := schema.GroupResource{Resource: "secrets"}
				tracker := client.Tracker()
				if verb == "create" {
					s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: testSecret, Namespace: testNS, ResourceVersion: "7"}, Type: corev1.SecretTypeTLS, Data: winnerData}
					if err := tracker.Create(gr.WithVersion("v1"), s, testNS); err != nil {
						t.Errorf("tracker: %v", err)
					}
					return true, nil, apierrors.NewAlreadyExists(gr, testSecret)
				}
				obj, err := tracker.Get(gr.WithVersion("v1"), testNS, testSecret)
				if err != nil {
					t.Errorf("tracker: %v", err)
					return true, nil, err
				}
				s := obj.(*corev1.Secret).DeepCopy()
				s.Data = winnerData
				if err := tracker.Update(gr.WithVersion("v1"), s, testNS); err != nil {
					t.Errorf("tracker: %v", err)
				}
				return true, nil, apierrors.NewConflict(gr, testSecret, nil)
			})
			dir := t.TempDir()
			m := newTestManager(t, client, clk, dir, nil)
			if err := m.Ensure(ctx); err != nil {
				t.Fatalf("Ensure: %v", err)
			}
			if !raced {
				t.Fatal("the race was not exercised")
			}
			got := getSecret(t, client)
			if !bytes.Equal(got.Data[KeyTLSCert], winnerData[KeyTLSCert]) {
				t.Fatal("the loser overwrote the winner's certificate")
			}
			served, err := os.ReadFile(filepath.Join(dir, KeyTLSCert))
			if err != nil || !bytes.Equal(served, winnerData[KeyTLSCert]) {
				t.Fatalf("the loser does not serve the winner's certificate (%v)", err)
			}
			if !bytes.Equal(caBundles(t, client)[0], bytes.TrimSpace(winnerData[KeyCACert])) && !bytes.Equal(caBundles(t, client)[0], winnerData[KeyCACert]) {
				t.Error("caBundle is not the winner's CA")
			}
		})
	}
}

func TestEnsureErrors(t *testing.T) {
	for _, tc := range []struct {
		name    string
		objects []runtime.Object
		react   func(*fake.Clientset)
		wantErr string
	}{
		{"webhook configuration missing", nil, nil, "MutatingWebhookConfiguration"},
		{"API error on get", []runtime.Object{webhookConfig(1)}, func(c *fake.Clientset) {
			c.PrependReactor("get", "secrets", func(k8stesting.Action) (bool, runtime.Object, error) {
				return true, nil, apierrors.NewForbidden(schema.GroupResource{Resource: "secrets"}, testSecret, nil)
			})
		}, "forbidden"},
		{"endless conflicts", []runtime.Object{webhookConfig(1)}, func(c *fake.Clientset) {
			c.PrependReactor("create", "secrets", func(k8stesting.Action) (bool, runtime.Object, error) {
				return true, nil, apierrors.NewConflict(schema.GroupResource{Resource: "secrets"}, testSecret, nil)
			})
		}, "kept changing"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			client := fake.NewClientset(tc.objects...)
			if tc.react != nil {
				tc.react(client)
			}
			reg := prometheus.NewRegistry()
			m := newTestManager(t, client, &clock{now: time.Now()}, t.TempDir(), func(o *Options) { o.Registerer = reg })
			err := m.Ensure(context.Background())
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("Ensure error = %v, want %q", err, tc.wantErr)
			}
			if got := testutil.ToFloat64(m.metrics.errors); got != 1 {
				t.Errorf("errors_total = %v, want 1", got)
			}
		})
	}
}

// TestRunRenewsOnTime runs the loop on the real clock with a serving validity
// of 3s: within 4s it has issued at least two serving certificates and the
// files follow the Secret.
func TestRunRenewsOnTime(t *testing.T) {
	client := fake.NewClientset(webhookConfig(1))
	dir := t.TempDir()
	m, err := New(Options{
		Client: client, SecretNamespace: testNS, SecretName: testSecret, WebhookConfigName: testConfig,
		DNSNames: testNames, CertDir: dir, CAValidity: time.Hour, ServingValidity: 3 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	if err := m.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	first, _ := os.ReadFile(filepath.Join(dir, KeyTLSCert))
	deadline := time.Now().Add(4 * time.Second)
	renewed := false
	for time.Now().Before(deadline) && !renewed {
		time.Sleep(100 * time.Millisecond)
		cur, _ := os.ReadFile(filepath.Join(dir, KeyTLSCert))
		renewed = len(cur) > 0 && !bytes.Equal(cur, first)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	if !renewed {
		t.Fatal("the serving certificate was not renewed within 4s (validity 3s)")
	}
	verifyServing(t, dir, caBundles(t, client)[0], time.Now())
}

// TestCARotationIsTwoStep: when the CA is due while the serving certificate
// is fresh, the new CA is only added to the trusted bundle; the serving
// certificate signed by the old CA stays until its own renewal, which is
// signed by the new CA. API servers so trust the new CA before they see it.
func TestCARotationIsTwoStep(t *testing.T) {
	start := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	client := fake.NewClientset(webhookConfig(1))
	clk := &clock{now: start}
	dir := t.TempDir()
	m := newTestManager(t, client, clk, dir, nil) // CA 300h (due at 200h), serving 30h (due after 20h)
	ctx := context.Background()
	step := func(at time.Duration) *corev1.Secret {
		t.Helper()
		clk.now = start.Add(at)
		if err := m.Ensure(ctx); err != nil {
			t.Fatal(err)
		}
		return getSecret(t, client)
	}
	first := step(0)
	before := step(190 * time.Hour) // serving renewed, CA not yet due
	if !bytes.Equal(before.Data[KeyCACert], first.Data[KeyCACert]) {
		t.Fatal("CA renewed too early")
	}
	rotated := step(200*time.Hour + time.Second)
	if bytes.Equal(rotated.Data[KeyCACert], before.Data[KeyCACert]) {
		t.Fatal("CA not renewed at 2/3 of its validity")
	}
	if !bytes.Equal(rotated.Data[KeyTLSCert], before.Data[KeyTLSCert]) {
		t.Fatal("serving certificate replaced in the same step as the CA")
	}
	b := caBundles(t, client)[0]
	if cas, _ := parseCerts(b); len(cas) != 2 {
		t.Fatalf("caBundle holds %d CAs during the rotation, want old and new", len(cas))
	}
	verifyServing(t, dir, b, clk.Now())

	after := step(211 * time.Hour) // the serving certificate's own renewal
	if bytes.Equal(after.Data[KeyTLSCert], rotated.Data[KeyTLSCert]) {
		t.Fatal("serving certificate not renewed")
	}
	newCA, err := parseCerts(after.Data[KeyCACert])
	if err != nil {
		t.Fatal(err)
	}
	servingCert := verifyServing(t, dir, caBundles(t, client)[0], clk.Now())
	if err := servingCert.CheckSignatureFrom(newCA[0]); err != nil {
		t.Fatalf("renewed serving certificate is not signed by the new CA: %v", err)
	}
}
