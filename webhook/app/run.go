// Package app runs the webhook: flags, a controller-runtime manager with the
// webhook server, the kube-dns watcher, health and readiness probes and
// metrics.
package app

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/nodelocaldns/nodelocaldns/webhook/handler"
	"github.com/nodelocaldns/nodelocaldns/webhook/kubedns"
	"github.com/nodelocaldns/nodelocaldns/webhook/server"
)

// namespaceLookupTimeout bounds a namespace read from the cache during an
// admission request (the API server waits at most the webhook timeout).
const namespaceLookupTimeout = 2 * time.Second

var setGlobalLoggers sync.Once

// Run parses args (without the program name) with its own FlagSet and serves
// the webhook until ctx is done. Bad flags return an error before anything
// starts; -h returns flag.ErrHelp.
func Run(ctx context.Context, args []string) error {
	o, err := ParseFlags(args, os.Stderr)
	if err != nil {
		return err
	}
	return RunOptions(ctx, o)
}

// RunOptions serves the webhook with validated options until ctx is done.
func RunOptions(ctx context.Context, o *Options) error {
	logger := zap.New(zap.UseFlagOptions(&o.Zap))
	// controller-runtime's and klog's loggers are process globals: the first
	// Run sets them, later Runs in the same process (tests) keep them.
	setGlobalLoggers.Do(func() {
		logf.SetLogger(logger)
		klog.SetLogger(logger)
	})
	ctx = logf.IntoContext(ctx, logger)

	injectCfg, err := o.InjectConfig()
	if err != nil {
		return err
	}
	restCfg, err := restConfig(o.Kubeconfig)
	if err != nil {
		return err
	}
	watcher, err := kubeDNSWatcher(o, restCfg)
	if err != nil {
		return err
	}
	mgr, err := newManager(o, restCfg, logger)
	if err != nil {
		return err
	}
	nsInformer, err := mgr.GetCache().GetInformer(ctx, namespaceMeta())
	if err != nil {
		return fmt.Errorf("namespace informer: %w", err)
	}
	h, err := handler.New(handler.Options{
		Config:          injectCfg,
		KubeDNSIPs:      watcher.IPs,
		Namespaces:      namespaceLookup(mgr.GetClient()),
		Registerer:      ctrlmetrics.Registry,
		MaxRequestBytes: o.MaxRequestBytes,
		BodyBudgetBytes: o.RequestBodyBudget,
		Log:             logger.WithName("admission"),
	})
	if err != nil {
		return err
	}
	mgr.GetWebhookServer().Register(handler.Path, h)

	if err := mgr.Add(watcher); err != nil {
		return fmt.Errorf("adding kube-dns watcher: %w", err)
	}
	if err := mgr.AddHealthzCheck("ping", healthz.Ping); err != nil {
		return fmt.Errorf("adding healthz check: %w", err)
	}
	ready := map[string]healthz.Checker{
		"kube-dns":   watcher.Ready,
		"webhook":    mgr.GetWebhookServer().StartedChecker(),
		"namespaces": synced(nsInformer.HasSynced),
	}
	if err := o.certs.setup(ctx, o, mgr); err != nil {
		return err
	}
	maps.Copy(ready, o.ReadyChecks)
	for name, check := range ready {
		if err := mgr.AddReadyzCheck(name, check); err != nil {
			return fmt.Errorf("adding readyz check %s: %w", name, err)
		}
	}
	for _, r := range o.Runnables {
		if err := mgr.Add(r); err != nil {
			return fmt.Errorf("adding runnable: %w", err)
		}
	}
	logger.Info("starting webhook", "port", o.Port, "bindAddress", o.BindAddress, "localDNS", injectCfg.LocalIPs,
		"kubeDNSService", o.KubeDNSService, "kubeDNSIP", o.KubeDNSIP, "clusterDomain", o.ClusterDomain)
	if err := mgr.Start(ctx); err != nil {
		return fmt.Errorf("webhook manager: %w", err)
	}
	return nil
}

func newManager(o *Options, restCfg *rest.Config, logger logr.Logger) (manager.Manager, error) {
	scheme := runtime.NewScheme()
	if err := corev1.AddToScheme(scheme); err != nil {
		return nil, fmt.Errorf("scheme: %w", err)
	}
	tlsMin, err := server.ParseTLSVersion(o.TLSMinVersion)
	if err != nil {
		return nil, fmt.Errorf("--tls-min-version: %w", err)
	}
	shutdown := o.GracefulShutdownTimeout
	srv, err := server.New(server.Options{
		Host:          o.BindAddress,
		Port:          o.Port,
		CertDir:       o.CertDir,
		TLSMinVersion: tlsMin,
		EnableHTTP2:   o.EnableHTTP2,
		// Read at start, so the built-in certificates' setup may add options.
		TLSOpts: []func(*tls.Config){func(c *tls.Config) {
			for _, opt := range o.TLSOpts {
				opt(c)
			}
		}},
		ReadTimeout:     o.ReadTimeout,
		WriteTimeout:    o.WriteTimeout,
		IdleTimeout:     o.IdleTimeout,
		MaxConnections:  o.MaxConnections,
		ShutdownTimeout: shutdown,
		Registerer:      ctrlmetrics.Registry,
		Log:             logger.WithName("server"),
	})
	if err != nil {
		return nil, err
	}
	mgr, err := manager.New(restCfg, manager.Options{
		Scheme:                  scheme,
		Metrics:                 metricsserver.Options{BindAddress: o.MetricsBindAddress},
		HealthProbeBindAddress:  o.HealthProbeBindAddress,
		GracefulShutdownTimeout: &shutdown,
		WebhookServer:           srv,
		Cache:                   cache.Options{DefaultTransform: cache.TransformStripManagedFields()},
	})
	if err != nil {
		return nil, fmt.Errorf("creating manager: %w", err)
	}
	return mgr, nil
}

// restConfig loads --kubeconfig, else $KUBECONFIG or ~/.kube/config, else the
// in-cluster configuration.
func restConfig(path string) (*rest.Config, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.ExplicitPath = path
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{}).ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("loading kubeconfig (--kubeconfig %q, KUBECONFIG or in-cluster): %w", path, err)
	}
	cfg.UserAgent = "nodelocaldns-webhook"
	return cfg, nil
}

func kubeDNSWatcher(o *Options, restCfg *rest.Config) (*kubedns.Watcher, error) {
	if ips := splitList(o.KubeDNSIP); len(ips) > 0 {
		return kubedns.Static(ips), nil
	}
	ns, name, err := parseNamespacedName(o.KubeDNSService, metav1.NamespaceSystem)
	if err != nil {
		return nil, fmt.Errorf("--kube-dns-service: %w", err)
	}
	cs, err := kubernetes.NewForConfig(restCfg)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	return kubedns.New(cs, ns, name), nil
}

func namespaceMeta() *metav1.PartialObjectMetadata {
	m := &metav1.PartialObjectMetadata{}
	m.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("Namespace"))
	return m
}

// namespaceLookup reads namespace annotations from the manager's cache
// (metadata only); a namespace not found has no annotations.
func namespaceLookup(c client.Reader) handler.NamespaceLookup {
	return func(ctx context.Context, name string) (map[string]string, error) {
		ctx, cancel := context.WithTimeout(ctx, namespaceLookupTimeout)
		defer cancel()
		m := namespaceMeta()
		if err := c.Get(ctx, client.ObjectKey{Name: name}, m); err != nil {
			if apierrors.IsNotFound(err) {
				return nil, nil
			}
			return nil, err
		}
		return m.Annotations, nil
	}
}

func synced(hasSynced func() bool) healthz.Checker {
	return func(*http.Request) error {
		if !hasSynced() {
			return errors.New("namespace cache not synced")
		}
		return nil
	}
}
