package app

import (
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/controller-runtime/pkg/manager"

	"github.com/nodelocaldns/nodelocaldns/webhook/inject"
	"github.com/nodelocaldns/nodelocaldns/webhook/kubedns"
)

// Options are the webhook's settings, filled from flags.
type Options struct {
	// CertDir holds tls.crt and tls.key; they are reloaded when they change.
	CertDir string
	// Port and BindAddress are where the webhook server listens.
	Port        int
	BindAddress string
	// Kubeconfig is the kubeconfig file; empty means KUBECONFIG, then the
	// in-cluster configuration.
	Kubeconfig string
	// HealthProbeBindAddress serves /healthz and /readyz ("0" disables).
	HealthProbeBindAddress string
	// MetricsBindAddress serves /metrics ("0" disables).
	MetricsBindAddress string
	// LocalDNSIP is the node-local cache address, a comma list for dual stack.
	LocalDNSIP string
	// KubeDNSService is the namespace/name of the kube-dns Service to follow.
	KubeDNSService string
	// KubeDNSIP, when set, fixes the kube-dns addresses (comma list) and
	// disables following the Service.
	KubeDNSIP string
	// ClusterDomain is the cluster's DNS domain.
	ClusterDomain string
	// Ndots, Timeout and Attempts are the cluster-wide resolver options.
	Ndots, Timeout, Attempts int
	// InjectHostNetwork injects hostNetwork pods with ClusterFirstWithHostNet.
	InjectHostNetwork bool
	// EnableHTTP2 serves HTTP/2 (off by default: HTTP/2 rapid reset and
	// stream cancellation attacks).
	EnableHTTP2 bool
	// GracefulShutdownTimeout bounds how long in-flight requests may finish
	// after the context ends.
	GracefulShutdownTimeout time.Duration
	// Zap configures logging (--zap-* flags).
	Zap zap.Options

	// TLSOpts are applied to the webhook server's TLS configuration when it
	// starts, after the built-in ones; extensions may append to them in
	// Setup (e.g. to serve certificates they manage).
	TLSOpts []func(*tls.Config)
	// Runnables are added to the manager besides the built-in ones.
	Runnables []manager.Runnable
	// ReadyChecks are added to /readyz besides the built-in ones.
	ReadyChecks map[string]healthz.Checker

	extensions []Extension
}

// NewOptions returns the defaults, with one fresh instance of every
// registered extension.
func NewOptions() *Options {
	o := &Options{
		Port:                    9443,
		HealthProbeBindAddress:  ":8081",
		MetricsBindAddress:      ":8080",
		LocalDNSIP:              "169.254.20.10",
		KubeDNSService:          "kube-system/kube-dns",
		ClusterDomain:           "cluster.local",
		Ndots:                   inject.DefaultNdots,
		Timeout:                 inject.DefaultTimeout,
		Attempts:                inject.DefaultAttempts,
		InjectHostNetwork:       true,
		GracefulShutdownTimeout: 30 * time.Second,
		ReadyChecks:             map[string]healthz.Checker{},
	}
	for _, newExt := range extensions {
		o.extensions = append(o.extensions, newExt())
	}
	return o
}

// AddFlags registers the options on fs (kubebuilder flag names).
func (o *Options) AddFlags(fs *flag.FlagSet) {
	fs.StringVar(&o.CertDir, "cert-dir", o.CertDir, "Directory with the serving certificate tls.crt and key tls.key (reloaded when they change). Empty: <tmp>/k8s-webhook-server/serving-certs.")
	fs.IntVar(&o.Port, "port", o.Port, "Port of the webhook server.")
	fs.StringVar(&o.BindAddress, "bind-address", o.BindAddress, "Address of the webhook server (empty: all addresses).")
	fs.StringVar(&o.Kubeconfig, "kubeconfig", o.Kubeconfig, "Path to a kubeconfig. Empty: $KUBECONFIG, then the in-cluster configuration.")
	fs.StringVar(&o.HealthProbeBindAddress, "health-probe-bind-address", o.HealthProbeBindAddress, "Address serving /healthz and /readyz (\"0\" disables).")
	fs.StringVar(&o.MetricsBindAddress, "metrics-bind-address", o.MetricsBindAddress, "Address serving Prometheus /metrics (\"0\" disables).")
	fs.StringVar(&o.LocalDNSIP, "local-dns-ip", o.LocalDNSIP, "Node-local DNS cache address given first to pods; comma list (at most 2) for dual stack.")
	fs.StringVar(&o.KubeDNSService, "kube-dns-service", o.KubeDNSService, "namespace/name of the kube-dns Service whose clusterIPs are the fallback nameservers.")
	fs.StringVar(&o.KubeDNSIP, "kube-dns-ip", o.KubeDNSIP, "Fixed kube-dns address(es), comma list; disables watching --kube-dns-service.")
	fs.StringVar(&o.ClusterDomain, "cluster-domain", o.ClusterDomain, "Cluster DNS domain.")
	fs.IntVar(&o.Ndots, "ndots", o.Ndots, "Resolver option ndots given to pods (0-15).")
	fs.IntVar(&o.Timeout, "timeout", o.Timeout, "Resolver option timeout in seconds given to pods (1-30).")
	fs.IntVar(&o.Attempts, "attempts", o.Attempts, "Resolver option attempts given to pods (1-5).")
	fs.BoolVar(&o.InjectHostNetwork, "inject-host-network", o.InjectHostNetwork, "Inject hostNetwork pods that use dnsPolicy ClusterFirstWithHostNet.")
	fs.BoolVar(&o.EnableHTTP2, "enable-http2", o.EnableHTTP2, "Serve HTTP/2 on the webhook server (off by default).")
	fs.DurationVar(&o.GracefulShutdownTimeout, "graceful-shutdown-timeout", o.GracefulShutdownTimeout, "How long in-flight requests may take to finish on shutdown.")
	o.Zap.BindFlags(fs)
	for _, e := range o.extensions {
		e.AddFlags(fs)
	}
}

// ParseFlags parses args (without the program name) into fresh Options and
// validates them. -h returns flag.ErrHelp.
func ParseFlags(args []string, output io.Writer) (*Options, error) {
	o := NewOptions()
	fs := flag.NewFlagSet("webhook", flag.ContinueOnError)
	fs.SetOutput(output)
	o.AddFlags(fs)
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	if err := o.Validate(); err != nil {
		return nil, err
	}
	return o, nil
}

// Validate checks the options and returns the first problems found.
func (o *Options) Validate() error {
	var errs []error
	if o.Port < 1 || o.Port > 65535 {
		errs = append(errs, fmt.Errorf("--port %d: must be 1-65535", o.Port))
	}
	if o.GracefulShutdownTimeout < 0 {
		errs = append(errs, fmt.Errorf("--graceful-shutdown-timeout %s: must not be negative", o.GracefulShutdownTimeout))
	}
	for _, ip := range splitList(o.KubeDNSIP) {
		if err := inject.ValidateIP(ip); err != nil {
			errs = append(errs, fmt.Errorf("--kube-dns-ip: %w", err))
		}
	}
	if o.KubeDNSIP == "" {
		if _, _, err := kubedns.ParseService(o.KubeDNSService); err != nil {
			errs = append(errs, fmt.Errorf("--kube-dns-service: %w", err))
		}
	}
	if _, err := o.InjectConfig(); err != nil {
		errs = append(errs, err)
	}
	for _, e := range o.extensions {
		if err := e.Validate(o); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// InjectConfig returns the injection settings (without kube-dns addresses,
// which are looked up per request).
func (o *Options) InjectConfig() (inject.Config, error) {
	base, err := inject.BaseOptions(o.Ndots, o.Timeout, o.Attempts)
	if err != nil {
		return inject.Config{}, fmt.Errorf("--ndots/--timeout/--attempts: %w", err)
	}
	cfg := inject.Config{
		LocalIPs:          splitList(o.LocalDNSIP),
		ClusterDomain:     o.ClusterDomain,
		Options:           base,
		InjectHostNetwork: o.InjectHostNetwork,
	}
	if err := cfg.Validate(); err != nil {
		return inject.Config{}, fmt.Errorf("--local-dns-ip %q / --cluster-domain %q: %w", o.LocalDNSIP, o.ClusterDomain, err)
	}
	return cfg, nil
}

func splitList(s string) []string {
	var out []string
	for f := range strings.SplitSeq(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}
