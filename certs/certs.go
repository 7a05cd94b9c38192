// Package certs is the webhook's built-in certificate manager, for clusters
// without cert-manager. It keeps a CA and a serving certificate in one Secret
// (created when missing, renewed at 2/3 of their validity), patches the
// caBundle of the webhook's MutatingWebhookConfiguration, and writes
// tls.crt/tls.key into the webhook's certificate directory, where
// controller-runtime's certwatcher reloads them without a restart.
//
// Several replicas may run it at once: the Secret is only written with the
// resourceVersion it was read at (optimistic concurrency), so exactly one
// replica's write wins and the others adopt what it wrote; every replica
// watches the Secret and reloads from it.
package certs

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/retry"
)

// Keys of the Secret.
const (
	KeyTLSCert  = corev1.TLSCertKey       // serving certificate
	KeyTLSKey   = corev1.TLSPrivateKeyKey // serving key
	KeyCACert   = "ca.crt"                // current CA certificate
	KeyCAKey    = "ca.key"                // current CA key
	KeyCABundle = "ca-bundle.crt"         // current CA plus the previous one while it is valid
)

// Defaults.
const (
	DefaultCAValidity      = 10 * 365 * 24 * time.Hour
	DefaultServingValidity = 365 * 24 * time.Hour
	DefaultResync          = time.Minute
	// RenewFraction is the share of a certificate's validity after which it
	// is renewed.
	RenewFraction = 2.0 / 3.0
)

// Options configure a Manager.
type Options struct {
	// Client talks to the API server.
	Client kubernetes.Interface
	// SecretNamespace and SecretName name the Secret holding CA and serving
	// certificate.
	SecretNamespace, SecretName string
	// WebhookConfigName is the MutatingWebhookConfiguration whose webhooks'
	// caBundle is kept in sync; empty skips the patch.
	WebhookConfigName string
	// DNSNames are the serving certificate's names (the webhook Service's).
	DNSNames []string
	// CertDir receives tls.crt and tls.key.
	CertDir string
	// CAValidity and ServingValidity default to DefaultCAValidity and
	// DefaultServingValidity.
	CAValidity, ServingValidity time.Duration
	// Resync is the longest time between two checks (DefaultResync if zero).
	Resync time.Duration
	// Now is the clock (time.Now if nil).
	Now func() time.Time
	// Log receives what the background loop cannot return.
	Log logr.Logger
	// Registerer receives the metrics; nil disables them.
	Registerer prometheus.Registerer
}

// Manager keeps the certificates of one webhook.
type Manager struct {
	opts    Options
	metrics *metrics

	mu       sync.Mutex
	nextDue  time.Time // earliest renewal of the certificates last applied
	ready    chan struct{}
	readyOne sync.Once
}

// New validates opts and returns a Manager.
func New(opts Options) (*Manager, error) {
	switch {
	case opts.Client == nil:
		return nil, errors.New("certs: no Kubernetes client")
	case opts.SecretNamespace == "" || opts.SecretName == "":
		return nil, errors.New("certs: Secret namespace and name are required")
	case len(opts.DNSNames) == 0:
		return nil, errors.New("certs: at least one DNS name is required")
	case opts.CertDir == "":
		return nil, errors.New("certs: a certificate directory is required")
	case opts.CAValidity < 0 || opts.ServingValidity < 0 || opts.Resync < 0:
		return nil, errors.New("certs: validities and resync must not be negative")
	}
	if opts.CAValidity == 0 {
		opts.CAValidity = DefaultCAValidity
	}
	if opts.ServingValidity == 0 {
		opts.ServingValidity = DefaultServingValidity
	}
	if opts.ServingValidity < time.Second || opts.CAValidity < time.Second {
		return nil, errors.New("certs: validities below one second cannot be expressed in a certificate")
	}
	if opts.ServingValidity > opts.CAValidity {
		return nil, fmt.Errorf("certs: serving validity %s exceeds the CA validity %s", opts.ServingValidity, opts.CAValidity)
	}
	if opts.Resync == 0 {
		opts.Resync = DefaultResync
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	m, err := newMetrics(opts.Registerer)
	if err != nil {
		return nil, err
	}
	return &Manager{opts: opts, metrics: m, ready: make(chan struct{})}, nil
}

// Ready is closed once certificates have been written to the directory for
// the first time.
func (m *Manager) Ready() <-chan struct{} { return m.ready }

// WaitReady blocks until Ready is closed or ctx is done.
func (m *Manager) WaitReady(ctx context.Context) error {
	select {
	case <-m.ready:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("certs: waiting for the first certificates: %w", context.Cause(ctx))
	}
}

// Ensure makes one pass: it reads the Secret, creates or renews what is
// missing or due (a write that loses a race to another replica is dropped and
// the winner's certificates are adopted), then writes the files and patches
// the caBundle from what the Secret holds.
func (m *Manager) Ensure(ctx context.Context) error {
	err := m.ensure(ctx)
	if err != nil {
		m.metrics.errors.Inc()
	}
	return err
}

func (m *Manager) ensure(ctx context.Context) error {
	secrets := m.opts.Client.CoreV1().Secrets(m.opts.SecretNamespace)
	const attempts = 5
	for range attempts {
		cur, err := secrets.Get(ctx, m.opts.SecretName, metav1.GetOptions{})
		if err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("certs: get Secret %s/%s: %w", m.opts.SecretNamespace, m.opts.SecretName, err)
		}
		if err != nil {
			cur = nil
		}
		var data map[string][]byte
		if cur != nil {
			data = cur.Data
		}
		next, issued, err := m.plan(data)
		if err != nil {
			return err
		}
		if next == nil {
			return m.apply(ctx, cur)
		}
		written, err := m.write(ctx, cur, next)
		switch {
		case apierrors.IsConflict(err) || apierrors.IsAlreadyExists(err):
			// Another replica wrote first: read again and adopt its result.
			m.opts.Log.V(1).Info("lost a race for the certificate Secret, adopting the winner's", "secret", m.opts.SecretName)
			continue
		case err != nil:
			return err
		}
		for _, what := range issued {
			m.metrics.issued.WithLabelValues(what).Inc()
		}
		m.opts.Log.Info("issued certificates", "certificates", issued, "secret", m.opts.SecretNamespace+"/"+m.opts.SecretName)
		return m.apply(ctx, written)
	}
	return fmt.Errorf("certs: Secret %s/%s kept changing during %d attempts", m.opts.SecretNamespace, m.opts.SecretName, attempts)
}

// plan returns the Secret data to write, or nil when data is fine as it is,
// and which certificates it issued ("ca", "serving").
//
// A CA renewal happens in two steps so that every API server trusts the new
// CA before the webhook presents a certificate signed by it: the renewal
// adds the new CA to the bundle and keeps the serving certificate signed by
// the old one (still valid and trusted); the next serving renewal is signed
// by the new CA.
func (m *Manager) plan(data map[string][]byte) (map[string][]byte, []string, error) {
	now := m.opts.Now()
	var issued []string
	ca, err := parseKeyPair(data[KeyCACert], data[KeyCAKey])
	caBundle := data[KeyCABundle]
	usable := err == nil && ca.Cert.IsCA && now.Before(ca.Cert.NotAfter)
	if !usable || !now.Before(renewAt(ca.Cert)) {
		var prev []byte
		if usable {
			prev = ca.CertPEM // keep trusting the old CA while it is valid
		}
		if ca, err = newCA(now, m.opts.CAValidity, "node-local-dns-webhook-ca"); err != nil {
			return nil, nil, err
		}
		caBundle = bundle(ca.CertPEM, prev)
		issued = append(issued, "ca")
	}
	caBundle = bundle(ca.CertPEM, caBundle)
	serving, err := parseKeyPair(data[KeyTLSCert], data[KeyTLSKey])
	if err != nil || !signedByTrusted(serving.Cert, caBundle, now) ||
		!slices.Equal(serving.Cert.DNSNames, m.opts.DNSNames) || !now.Before(renewAt(serving.Cert)) {
		if serving, err = newServing(now, m.opts.ServingValidity, ca, m.opts.DNSNames); err != nil {
			return nil, nil, err
		}
		issued = append(issued, "serving")
	}
	if len(issued) == 0 {
		return nil, nil, nil
	}
	return map[string][]byte{
		KeyTLSCert:  serving.CertPEM,
		KeyTLSKey:   serving.KeyPEM,
		KeyCACert:   ca.CertPEM,
		KeyCAKey:    ca.KeyPEM,
		KeyCABundle: caBundle,
	}, issued, nil
}

// signedByTrusted reports whether c is signed by a certificate of bundle
// that is valid at now.
func signedByTrusted(c *x509.Certificate, bundlePEM []byte, now time.Time) bool {
	cas, err := parseCerts(bundlePEM)
	if err != nil {
		return false
	}
	for _, ca := range cas {
		if now.Before(ca.NotAfter) && c.CheckSignatureFrom(ca) == nil {
			return true
		}
	}
	return false
}

// write creates the Secret, or updates cur at its resourceVersion.
func (m *Manager) write(ctx context.Context, cur *corev1.Secret, data map[string][]byte) (*corev1.Secret, error) {
	secrets := m.opts.Client.CoreV1().Secrets(m.opts.SecretNamespace)
	if cur == nil {
		s := &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{
				Name:      m.opts.SecretName,
				Namespace: m.opts.SecretNamespace,
				Labels: map[string]string{
					"app.kubernetes.io/name":       "node-local-dns",
					"app.kubernetes.io/component":  "webhook",
					"app.kubernetes.io/managed-by": "node-local-dns-webhook",
				},
			},
			Type: corev1.SecretTypeTLS,
			Data: data,
		}
		out, err := secrets.Create(ctx, s, metav1.CreateOptions{})
		if err != nil {
			return nil, fmt.Errorf("certs: create Secret %s/%s: %w", s.Namespace, s.Name, err)
		}
		return out, nil
	}
	s := cur.DeepCopy()
	s.Data = data // cur.ResourceVersion makes this a compare-and-swap
	out, err := secrets.Update(ctx, s, metav1.UpdateOptions{})
	if err != nil {
		return nil, fmt.Errorf("certs: update Secret %s/%s: %w", s.Namespace, s.Name, err)
	}
	return out, nil
}

// apply writes the serving files and patches the caBundle from s.
func (m *Manager) apply(ctx context.Context, s *corev1.Secret) error {
	ca, err := parseKeyPair(s.Data[KeyCACert], s.Data[KeyCAKey])
	if err != nil {
		return fmt.Errorf("certs: CA in Secret %s/%s: %w", s.Namespace, s.Name, err)
	}
	serving, err := parseKeyPair(s.Data[KeyTLSCert], s.Data[KeyTLSKey])
	if err != nil {
		return fmt.Errorf("certs: serving certificate in Secret %s/%s: %w", s.Namespace, s.Name, err)
	}
	trusted := m.trustedBundle(s.Data[KeyCABundle], ca.CertPEM)
	// Trust before serving: the API server must accept the new CA before the
	// webhook presents a certificate signed by it.
	if err := m.patchCABundle(ctx, trusted); err != nil {
		return err
	}
	if err := writeFiles(m.opts.CertDir, map[string][]byte{
		KeyTLSCert: serving.CertPEM,
		KeyTLSKey:  serving.KeyPEM,
		KeyCACert:  trusted,
	}); err != nil {
		return err
	}
	m.metrics.notAfter.WithLabelValues("ca").Set(float64(ca.Cert.NotAfter.Unix()))
	m.metrics.notAfter.WithLabelValues("serving").Set(float64(serving.Cert.NotAfter.Unix()))
	due := renewAt(serving.Cert)
	if d := renewAt(ca.Cert); d.Before(due) {
		due = d
	}
	m.mu.Lock()
	m.nextDue = due
	m.mu.Unlock()
	m.readyOne.Do(func() { close(m.ready) })
	return nil
}

// trustedBundle is the CA bundle without expired certificates; it always
// holds the current CA.
func (m *Manager) trustedBundle(stored, current []byte) []byte {
	now := m.opts.Now()
	keep := [][]byte{current}
	certs, err := parseCerts(stored)
	if err == nil {
		for _, c := range certs {
			if now.Before(c.NotAfter) {
				keep = append(keep, pemCert(c.Raw))
			}
		}
	}
	return bundle(keep...)
}

// patchCABundle sets caBundle on every webhook of the configuration.
func (m *Manager) patchCABundle(ctx context.Context, caBundle []byte) error {
	if m.opts.WebhookConfigName == "" {
		return nil
	}
	cfgs := m.opts.Client.AdmissionregistrationV1().MutatingWebhookConfigurations()
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		cfg, err := cfgs.Get(ctx, m.opts.WebhookConfigName, metav1.GetOptions{})
		if err != nil {
			return err
		}
		changed := false
		for i := range cfg.Webhooks {
			if !bytes.Equal(cfg.Webhooks[i].ClientConfig.CABundle, caBundle) {
				cfg.Webhooks[i].ClientConfig.CABundle = caBundle
				changed = true
			}
		}
		if !changed {
			return nil
		}
		_, err = cfgs.Update(ctx, cfg, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		return fmt.Errorf("certs: caBundle of MutatingWebhookConfiguration %s: %w", m.opts.WebhookConfigName, err)
	}
	return nil
}

// Run keeps the certificates current until ctx is done: it ensures them at
// start, then again whenever the Secret changes, a certificate is due, or
// Resync has passed. Errors are logged and retried with backoff; Run returns
// nil when ctx is done.
func (m *Manager) Run(ctx context.Context) error {
	changed := make(chan struct{}, 1)
	notify := func() {
		select {
		case changed <- struct{}{}:
		default:
		}
	}
	factory := informers.NewSharedInformerFactoryWithOptions(m.opts.Client, 0,
		informers.WithNamespace(m.opts.SecretNamespace),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("metadata.name", m.opts.SecretName).String()
		}))
	informer := factory.Core().V1().Secrets().Informer()
	if _, err := informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { notify() },
		UpdateFunc: func(any, any) { notify() },
		DeleteFunc: func(any) { notify() },
	}); err != nil {
		return fmt.Errorf("certs: watch Secret: %w", err)
	}
	factory.Start(ctx.Done())
	defer factory.Shutdown()

	backoff := time.Duration(0)
	for {
		wait := m.opts.Resync
		if err := m.Ensure(ctx); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			backoff = min(max(2*backoff, 200*time.Millisecond), 30*time.Second)
			wait = backoff
			m.opts.Log.Error(err, "ensuring webhook certificates, will retry", "in", wait)
		} else {
			backoff = 0
			m.mu.Lock()
			if d := m.nextDue.Sub(m.opts.Now()); d < wait {
				wait = max(d, 0)
			}
			m.mu.Unlock()
		}
		timer := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			timer.Stop()
			return nil
		case <-changed:
			timer.Stop()
		case <-timer.C:
		}
	}
}

// writeFiles writes each file atomically (temporary file and rename) unless it
// already holds the same bytes, so watchers never see half a file and
// unchanged certificates cause no reload.
func writeFiles(dir string, files map[string][]byte) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("certs: certificate directory: %w", err)
	}
	// The key first: certwatcher reloads on the certificate's change and
	// then needs the matching key.
	for _, name := range []string{KeyTLSKey, KeyCACert, KeyTLSCert} {
		data, ok := files[name]
		if !ok {
			continue
		}
		path := filepath.Join(dir, name)
		if old, err := os.ReadFile(path); err == nil && bytes.Equal(old, data) {
			continue
		}
		tmp, err := os.CreateTemp(dir, "."+name+".*")
		if err != nil {
			return fmt.Errorf("certs: write %s: %w", path, err)
		}
		_, werr := tmp.Write(data)
		cerr := tmp.Close()
		if err := errors.Join(werr, cerr, os.Chmod(tmp.Name(), 0o600)); err != nil {
			os.Remove(tmp.Name())
			return fmt.Errorf("certs: write %s: %w", path, err)
		}
		if err := os.Rename(tmp.Name(), path); err != nil {
			os.Remove(tmp.Name())
			return fmt.Errorf("certs: write %s: %w", path, err)
		}
	}
	return nil
}
