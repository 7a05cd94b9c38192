package app

import (
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/controller-runtime/pkg/manager"

	"github.com/nodelocaldns/nodelocaldns/webhook/handler"
	"github.com/nodelocaldns/nodelocaldns/webhook/inject"
	"github.com/nodelocaldns/nodelocaldns/webhook/server"
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
	// NoAgentNodeLabels (key=value or key, comma list) and
	// NoAgentTolerations (taint keys) mark nodes where no agent runs; pods
	// that may run there are not injected.
	NoAgentNodeLabels, NoAgentTolerations string
	// EnableHTTP2 serves HTTP/2 (off by default: HTTP/2 rapid reset and
	// stream cancellation attacks).
	EnableHTTP2 bool
	// ReadTimeout, WriteTimeout and IdleTimeout bound the webhook server's
	// connections (see package server).
	ReadTimeout, WriteTimeout, IdleTimeout time.Duration
	// MaxConnections bounds the webhook server's open connections.
	MaxConnections int
	// MaxRequestBytes bounds one admission request body; RequestBodyBudget
	// bounds all bodies held at once.
	MaxRequestBytes, RequestBodyBudget int64
	// TLSMinVersion is "1.2" (AEAD suites only) or "1.3".
	TLSMinVersion string
	// GracefulShutdownTimeout bounds how long in-flight requests may finish
	// after the context ends.
	GracefulShutdownTimeout time.Duration
	// Zap configures logging (--zap-* flags).
	Zap zap.Options

	// TLSOpts are applied to the webhook server's TLS configuration when it
	// starts, after the built-in ones (the built-in certificates' setup
	// may append to them).
	TLSOpts []func(*tls.Config)
	// Runnables are added to the manager besides the built-in ones.
	Runnables []manager.Runnable
	// ReadyChecks are added to /readyz besides the built-in ones.
	ReadyChecks map[string]healthz.Checker

	certs builtinCerts // --builtin-certs and its flags
}

// NewOptions returns the defaults.
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
		NoAgentNodeLabels:       joinLabels(inject.DefaultNoAgentNodeLabels),
		NoAgentTolerations:      strings.Join(inject.DefaultNoAgentTolerations, ","),
		GracefulShutdownTimeout: 30 * time.Second,
		ReadTimeout:             server.DefaultReadTimeout,
		WriteTimeout:            server.DefaultWriteTimeout,
		IdleTimeout:             server.DefaultIdleTimeout,
		MaxConnections:          server.DefaultMaxConnections,
		MaxRequestBytes:         handler.DefaultMaxRequestBytes,
		RequestBodyBudget:       handler.DefaultBodyBudgetBytes,
		TLSMinVersion:           "1.2",
		ReadyChecks:             map[string]healthz.Checker{},
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
	fs.StringVar(&o.NoAgentNodeLabels, "no-agent-node-labels", o.NoAgentNodeLabels, "Node labels (key=value, or key for any value; comma list) of nodes where no agent runs: pods whose nodeSelector or node affinity (In) asks for one are not injected. Empty: none.")
	fs.StringVar(&o.NoAgentTolerations, "no-agent-tolerations", o.NoAgentTolerations, "Taint keys (comma list) of nodes where no agent runs: pods tolerating one are not injected. Empty: none.")
	fs.BoolVar(&o.EnableHTTP2, "enable-http2", o.EnableHTTP2, "Serve HTTP/2 on the webhook server (off by default).")
	fs.DurationVar(&o.ReadTimeout, "read-timeout", o.ReadTimeout, "Longest time to read a request (TLS handshake, headers and body) on the webhook server.")
	fs.DurationVar(&o.WriteTimeout, "write-timeout", o.WriteTimeout, "Longest time from the end of a request's headers to the end of its response.")
	fs.DurationVar(&o.IdleTimeout, "idle-timeout", o.IdleTimeout, "Idle keep-alive connections of the webhook server are closed after this long.")
	fs.IntVar(&o.MaxConnections, "max-connections", o.MaxConnections, "Most connections the webhook server keeps open, a quarter of them per client address; more are closed at once.")
	fs.Int64Var(&o.MaxRequestBytes, "max-request-bytes", o.MaxRequestBytes, "Largest admission request body accepted, in bytes (larger: HTTP 413, the API server applies failurePolicy).")
	fs.Int64Var(&o.RequestBodyBudget, "request-body-budget", o.RequestBodyBudget, "Bytes of request bodies held at once by all requests together, a quarter of them per client address (beyond: HTTP 503); at least --max-request-bytes.")
	fs.StringVar(&o.TLSMinVersion, "tls-min-version", o.TLSMinVersion, "Minimum TLS version of the webhook server: 1.2 (ECDHE with AES-GCM or ChaCha20-Poly1305 only) or 1.3.")
	fs.DurationVar(&o.GracefulShutdownTimeout, "graceful-shutdown-timeout", o.GracefulShutdownTimeout, "How long in-flight requests may take to finish on shutdown.")
	o.Zap.BindFlags(fs)
	o.certs.addFlags(fs)
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
	for _, d := range []struct {
		name  string
		value time.Duration
	}{{"--read-timeout", o.ReadTimeout}, {"--write-timeout", o.WriteTimeout}, {"--idle-timeout", o.IdleTimeout}} {
		if d.value <= 0 {
			errs = append(errs, fmt.Errorf("%s %s: must be positive", d.name, d.value))
		}
	}
	if o.MaxConnections < 1 {
		errs = append(errs, fmt.Errorf("--max-connections %d: must be at least 1", o.MaxConnections))
	}
	if o.MaxRequestBytes < 64<<10 || o.RequestBodyBudget < o.MaxRequestBytes {
		errs = append(errs, fmt.Errorf("--max-request-bytes %d / --request-body-budget %d: need 64 KiB <= max-request-bytes <= request-body-budget", o.MaxRequestBytes, o.RequestBodyBudget))
	}
	if _, err := server.ParseTLSVersion(o.TLSMinVersion); err != nil {
		errs = append(errs, fmt.Errorf("--tls-min-version: %w", err))
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
		if _, _, err := parseNamespacedName(o.KubeDNSService, metav1.NamespaceSystem); err != nil {
			errs = append(errs, fmt.Errorf("--kube-dns-service: %w", err))
		}
	}
	if _, err := o.InjectConfig(); err != nil {
		errs = append(errs, err)
	}
	if err := o.certs.validate(o); err != nil {
		errs = append(errs, err)
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
	labels, err := inject.ParseNodeLabels(o.NoAgentNodeLabels)
	if err != nil {
		return inject.Config{}, fmt.Errorf("--no-agent-node-labels: %w", err)
	}
	tolerations, err := inject.ParseTolerationKeys(o.NoAgentTolerations)
	if err != nil {
		return inject.Config{}, fmt.Errorf("--no-agent-tolerations: %w", err)
	}
	cfg := inject.Config{
		LocalIPs:          splitList(o.LocalDNSIP),
		ClusterDomain:     o.ClusterDomain,
		Options:           base,
		InjectHostNetwork: o.InjectHostNetwork,
		NoAgent:           inject.NoAgentNodes{Labels: labels, TolerationKeys: tolerations},
	}
	if err := cfg.Validate(); err != nil {
		return inject.Config{}, fmt.Errorf("--local-dns-ip %q / --cluster-domain %q: %w", o.LocalDNSIP, o.ClusterDomain, err)
	}
	return cfg, nil
}

func joinLabels(labels []inject.NodeLabel) string {
	out := make([]string, len(labels))
	for i, l := range labels {
		out[i] = l.String()
	}
	return strings.Join(out, ",")
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

// parseNamespacedName parses "namespace/name" (the --kube-dns-service,
// --certs-secret and --webhook-service flags). A bare name is in
// defaultNamespace; with defaultNamespace empty the namespace is required.
func parseNamespacedName(s, defaultNamespace string) (namespace, name string, err error) {
	namespace, name, ok := strings.Cut(s, "/")
	if !ok {
		namespace, name = defaultNamespace, s
	}
	if namespace == "" || name == "" || strings.Contains(name, "/") {
		return "", "", fmt.Errorf("%q: want namespace/name", s)
	}
	return namespace, name, nil
}
