package app

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/nodelocaldns/nodelocaldns/certs"
)

// firstCertsTimeout bounds how long the webhook waits for its first
// certificates before giving up (the API server may still be starting).
const firstCertsTimeout = 2 * time.Minute

// builtinCerts is --builtin-certs and its flags: the certs package manages
// the CA, the serving certificate and the caBundle instead of cert-manager.
// Options holds one; AddFlags, Validate and Run call it.
type builtinCerts struct {
	enabled         bool
	secret          string
	configName      string
	service         string
	extraNames      string
	caValidity      time.Duration
	servingValidity time.Duration

	dnsNames []string
}

// addFlags registers the built-in certificates' flags.
func (b *builtinCerts) addFlags(fs *flag.FlagSet) {
	fs.BoolVar(&b.enabled, "builtin-certs", false, "Manage the serving certificate without cert-manager: keep a CA and a serving certificate in --certs-secret, renew them at 2/3 of their validity, patch the caBundle of --webhook-config-name and write tls.crt/tls.key into --cert-dir.")
	fs.StringVar(&b.secret, "certs-secret", "node-local-dns/node-local-dns-webhook-certs", "namespace/name of the Secret holding the built-in CA and serving certificate.")
	fs.StringVar(&b.configName, "webhook-config-name", "node-local-dns-webhook", "MutatingWebhookConfiguration whose caBundle the built-in certificates keep current (empty: do not patch).")
	fs.StringVar(&b.service, "webhook-service", "node-local-dns/node-local-dns-webhook", "namespace/name of the webhook's Service: the serving certificate's DNS names.")
	fs.StringVar(&b.extraNames, "certs-dns-names", "", "Extra DNS names of the serving certificate, comma list (e.g. localhost for a URL clientConfig).")
	fs.DurationVar(&b.caValidity, "ca-validity", certs.DefaultCAValidity, "Validity of the built-in CA.")
	fs.DurationVar(&b.servingValidity, "cert-validity", certs.DefaultServingValidity, "Validity of the built-in serving certificate.")
}

// validate checks the flags once all are parsed (o.ClusterDomain is needed
// for the serving certificate's names) and fills o.CertDir's default.
func (b *builtinCerts) validate(o *Options) error {
	if !b.enabled {
		return nil
	}
	if _, _, err := parseNamespacedName(b.secret, ""); err != nil {
		return fmt.Errorf("--certs-secret: %w", err)
	}
	var names []string
	if b.service != "" {
		ns, name, err := parseNamespacedName(b.service, "")
		if err != nil {
			return fmt.Errorf("--webhook-service: %w", err)
		}
		names = append(names, name+"."+ns+".svc", name+"."+ns+".svc."+strings.TrimSuffix(o.ClusterDomain, "."))
	}
	for n := range strings.SplitSeq(b.extraNames, ",") {
		if n = strings.TrimSpace(n); n != "" {
			names = append(names, n)
		}
	}
	if len(names) == 0 {
		return errors.New("--builtin-certs: the serving certificate needs --webhook-service or --certs-dns-names")
	}
	if b.caValidity <= 0 || b.servingValidity <= 0 || b.servingValidity > b.caValidity {
		return fmt.Errorf("--builtin-certs: need 0 < --cert-validity (%s) <= --ca-validity (%s)", b.servingValidity, b.caValidity)
	}
	b.dnsNames = names
	if o.CertDir == "" {
		// controller-runtime's default, where the webhook server looks.
		o.CertDir = filepath.Join(os.TempDir(), "k8s-webhook-server", "serving-certs")
	}
	return nil
}

// setup writes the first certificates before the webhook server starts (it
// reads them at start), then keeps them current as a manager runnable
// (appended to o.Runnables, with a readiness check in o.ReadyChecks).
func (b *builtinCerts) setup(ctx context.Context, o *Options, mgr manager.Manager) error {
	if !b.enabled {
		return nil
	}
	client, err := kubernetes.NewForConfig(mgr.GetConfig())
	if err != nil {
		return fmt.Errorf("--builtin-certs: client: %w", err)
	}
	ns, name, _ := parseNamespacedName(b.secret, "")
	log := logf.FromContext(ctx).WithName("certs")
	m, err := certs.New(certs.Options{
		Client:            client,
		SecretNamespace:   ns,
		SecretName:        name,
		WebhookConfigName: b.configName,
		DNSNames:          b.dnsNames,
		CertDir:           o.CertDir,
		CAValidity:        b.caValidity,
		ServingValidity:   b.servingValidity,
		Log:               log,
		Registerer:        ctrlmetrics.Registry,
	})
	if err != nil {
		return err
	}
	first, cancel := context.WithTimeout(ctx, firstCertsTimeout)
	defer cancel()
	for {
		err := m.Ensure(first)
		if err == nil {
			break
		}
		log.Error(err, "first certificates, retrying")
		select {
		case <-first.Done():
			return fmt.Errorf("--builtin-certs: no certificates after %s: %w", firstCertsTimeout, err)
		case <-time.After(time.Second):
		}
	}
	o.Runnables = append(o.Runnables, manager.RunnableFunc(m.Run))
	o.ReadyChecks["certs"] = healthz.Checker(func(*http.Request) error {
		select {
		case <-m.Ready():
			return nil
		default:
			return errors.New("no certificates yet")
		}
	})
	return nil
}
