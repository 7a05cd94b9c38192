package app

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/nodelocaldns/nodelocaldns/agent/corefile"
	"github.com/nodelocaldns/nodelocaldns/agent/pillar"
)

// Mode says which addresses the agent takes over on the node.
type Mode string

const (
	// ModeInjection binds only link-local IPs (169.254.20.10): pods reach the
	// agent because the webhook put that IP first in their resolv.conf, and
	// kube-dns through their second nameserver when the agent is down.
	ModeInjection Mode = "injection"
	// ModeInterception also binds the kube-dns ClusterIP on the node (the
	// node-cache "iptables mode"), so pods with a plain resolv.conf are served.
	ModeInterception Mode = "interception"
)

// IPTables backends accepted by -iptables-backend.
const (
	BackendAuto   = "auto"
	BackendNFT    = "nft"
	BackendLegacy = "legacy"
)

// Defaults of the flags, node-cache's where node-cache has the flag.
const (
	DefaultBaseCorefile     = "/etc/coredns/Corefile.base"
	DefaultCorefile         = "/etc/Corefile"
	DefaultKubeDNSConfigDir = "/etc/kube-dns"
	DefaultUpstreamSvc      = "kube-dns"
	DefaultInterfaceName    = "nodelocaldns"
	DefaultHealthPort       = 8080
	DefaultSyncInterval     = 60 * time.Second
	// DefaultMetricsPort is the port of the node setup metrics; the
	// default address is the first -localip on it.
	DefaultMetricsPort   = 9353
	DefaultDNSPort       = 53
	DefaultRunDir        = "/run/nodelocaldns"
	DefaultLameDuck      = 2 * time.Second
	DefaultClusterDomain = "cluster.local"

	// MaxLameDuck bounds -lameduck so that a shutdown can never hang.
	MaxLameDuck = 5 * time.Minute
	// MaxICMPRateLimit bounds -icmp-ratelimit (one hour).
	MaxICMPRateLimit = 3600 * 1000
	// ICMPRateLimitKeep is the default of -icmp-ratelimit: leave the node's
	// setting alone.
	ICMPRateLimitKeep = -1
	// MinSyncInterval keeps -syncinterval from turning into a busy loop.
	MinSyncInterval = 100 * time.Millisecond
)

// Options are the agent's command-line settings. Flag names and defaults are
// node-cache's (k8s-dns-node-cache), so that the official DaemonSet arguments
// work unchanged; Mode, RunDir, IPTablesBackend, LameDuck and ClusterDomain
// are our own additions.
type Options struct {
	// LocalIPs are the addresses the agent serves on and puts on its
	// interface (-localip, a comma-separated list), in flag order, deduplicated.
	LocalIPs []netip.Addr
	// Corefile is where the rendered Corefile is written and read from: -conf
	// when given, else -corefile.
	Corefile string
	// BaseCorefile is the template with __PILLAR__ variables (-basecorefile).
	BaseCorefile string
	// KubeDNSConfigDir is where the kube-dns ConfigMap is mounted
	// (-kubednscm); "" disables it. A missing directory means "no ConfigMap".
	KubeDNSConfigDir string
	// UpstreamSvc is the Service whose ClusterIP replaces
	// __PILLAR__CLUSTER__DNS__, looked up in <SVC>_SERVICE_HOST (-upstreamsvc).
	UpstreamSvc string
	// SetupInterface and SetupIPTables enable the node setup
	// (-setupinterface, -setupiptables).
	SetupInterface bool
	SetupIPTables  bool
	// InterfaceName is the link holding the local IPs (-interfacename).
	InterfaceName string
	// HealthPort is the port of the health plugin, used for the NOTRACK rules
	// (-health-port).
	HealthPort int
	// SkipTeardown keeps rules and addresses in place on exit (-skipteardown).
	SkipTeardown bool
	// SyncInterval is how often the interface and rules are re-ensured
	// (-syncinterval).
	SyncInterval time.Duration
	// PIDFile is written once the agent serves; "" disables it (-pidfile).
	PIDFile string
	// MetricsListenAddress serves the node setup metrics
	// (-metrics-listen-address); "" disables that listener.
	MetricsListenAddress string
	// DNSPort is the DNS port of the rules and the default port of server
	// blocks without one (-dns.port).
	DNSPort int
	// Mode is injection or interception (-mode, or derived from LocalIPs).
	Mode Mode
	// ModeDerived is true when Mode was derived from LocalIPs because -mode
	// was not given.
	ModeDerived bool
	// RunDir holds the instance lock files and the socket hand-over socket
	// (-rundir).
	RunDir string
	// IPTablesBackend is auto, nft or legacy (-iptables-backend).
	IPTablesBackend string
	// LameDuck is how long the agent keeps answering after it stopped
	// intercepting on SIGTERM (-lameduck).
	LameDuck time.Duration
	// ClusterDomain replaces __PILLAR__DNS__DOMAIN__ when the template still
	// holds it (-cluster-domain).
	ClusterDomain string
	// ICMPRateLimit is written to net.ipv4.icmp_ratelimit and
	// net.ipv6.icmp.ratelimit (milliseconds) before serving and re-ensured
	// every sync; ICMPRateLimitKeep (-1) leaves the node's settings
	// (-icmp-ratelimit).
	ICMPRateLimit int
	// SysctlsOnly applies the sysctls and exits, for a privileged init
	// container (-sysctls-only); -localip is not needed then.
	SysctlsOnly bool
	// ReloadWithSignal applies changes of the template and of the kube-dns
	// ConfigMap even when the Corefile has no reload plugin, checking every
	// SyncInterval (-reloadwithsignal; node-cache then signals its CoreDNS
	// with SIGUSR1, which reloads the Corefile whatever its plugins).
	ReloadWithSignal bool
	// Quiet leaves out the startup output (-quiet, CoreDNS's flag).
	Quiet bool
	// ShowVersion and ShowPlugins print the version or the supported
	// plugins and exit (-version, -plugins: CoreDNS's flags).
	ShowVersion bool
	ShowPlugins bool
	// MemoryLimit is the memory the agent plans for (-memory-limit): the
	// container's cgroup limit when MemoryLimitFromCgroup, 0 for none.
	MemoryLimit           int64
	MemoryLimitFromCgroup bool
}

// InterceptedIPs returns the local IPs that are not link-local: in
// interception mode those are the kube-dns ClusterIP(s) taken over on the node.
func (o *Options) InterceptedIPs() []netip.Addr {
	var out []netip.Addr
	for _, ip := range o.LocalIPs {
		if !ip.IsLinkLocalUnicast() {
			out = append(out, ip)
		}
	}
	return out
}

// LocalIPStrings returns LocalIPs as strings, in order.
func (o *Options) LocalIPStrings() []string {
	out := make([]string, len(o.LocalIPs))
	for i, ip := range o.LocalIPs {
		out[i] = ip.String()
	}
	return out
}

// PillarOptions returns the options of a pillar.Watcher for these flags:
// template -basecorefile, rendered to -conf, kube-dns ConfigMap -kubednscm,
// local IPs, -dns.port, -cluster-domain, and the ClusterIP of -upstreamsvc
// from the process environment. The caller sets OnChange and OnError.
func (o *Options) PillarOptions() pillar.Options {
	return pillar.Options{
		Template:         o.BaseCorefile,
		Output:           o.Corefile,
		KubeDNSConfigDir: o.KubeDNSConfigDir,
		Params: pillar.Params{
			LocalIPs:      o.LocalIPStrings(),
			DNSPort:       o.DNSPort,
			ClusterDomain: o.ClusterDomain,
			UpstreamSvc:   o.UpstreamSvc,
			LookupEnv:     os.LookupEnv,
		},
		Parse: corefile.ParseOptions{Filename: o.Corefile, DefaultPort: o.DNSPort},
	}
}

// ParseFlags parses the agent's command line (without the program name) with
// a fresh FlagSet and validates it. -h/-help returns an error that wraps
// flag.ErrHelp and whose text is the usage.
func ParseFlags(args []string) (*Options, error) {
	o := &Options{}
	fs, raw := newFlagSet(o)
	var out bytes.Buffer
	fs.SetOutput(&out)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, &helpError{usage: Usage()}
		}
		if name, ok := strings.CutPrefix(err.Error(), "flag provided but not defined: "); ok {
			return nil, fmt.Errorf("unknown flag %s: the agent accepts node-cache's and CoreDNS's flags and its own (see -help)", name)
		}
		return nil, fmt.Errorf("parsing flags: %w", err)
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments: %q (flags take the form -name=value)", fs.Args())
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if err := o.complete(raw, set); err != nil {
		return nil, err
	}
	return o, nil
}

// FlagSet returns the agent's flags, bound to fresh Options: what -h
// prints, and what the docs-drift test (tests/docs) checks the docs against.
func FlagSet() *flag.FlagSet {
	fs, _ := newFlagSet(&Options{})
	return fs
}

// Usage returns the flag documentation.
func Usage() string {
	fs, _ := newFlagSet(&Options{})
	var b bytes.Buffer
	fs.SetOutput(&b)
	fmt.Fprintf(&b, "Usage of agent:\n")
	fs.PrintDefaults()
	return b.String()
}

type helpError struct{ usage string }

func (e *helpError) Error() string { return e.usage }
func (e *helpError) Unwrap() error { return flag.ErrHelp }

// rawFlags holds the flag values that need validation before they become
// Options fields.
type rawFlags struct {
	localIP          string
	conf             string
	corefile         string
	mode             string
	setupEbtables    bool
	initialDelay     syncInterval
	metricsListen    string
	memoryLimit      string
	healthPort, port int
}

func newFlagSet(o *Options) (*flag.FlagSet, *rawFlags) {
	r := &rawFlags{}
	fs := flag.NewFlagSet("agent", flag.ContinueOnError)
	// node-cache's flags.
	fs.StringVar(&r.localIP, "localip", "", "comma-separated IP addresses to serve on and put on the interface (required)")
	fs.StringVar(&r.conf, "conf", "", "path of the rendered Corefile (wins over -corefile when given; CoreDNS's flag)")
	fs.StringVar(&r.corefile, "corefile", DefaultCorefile, "path of the rendered Corefile when -conf is not given")
	fs.StringVar(&o.BaseCorefile, "basecorefile", DefaultBaseCorefile, "path of the Corefile template with __PILLAR__ variables")
	fs.StringVar(&o.KubeDNSConfigDir, "kubednscm", DefaultKubeDNSConfigDir, "directory of the kube-dns ConfigMap (stubDomains, upstreamNameservers); empty disables")
	fs.StringVar(&o.UpstreamSvc, "upstreamsvc", DefaultUpstreamSvc, "Service whose ClusterIP (from <SVC>_SERVICE_HOST) replaces __PILLAR__CLUSTER__DNS__")
	fs.BoolVar(&o.SetupInterface, "setupinterface", true, "create the interface holding the local IPs")
	fs.BoolVar(&o.SetupIPTables, "setupiptables", true, "install the NOTRACK/ACCEPT iptables rules")
	fs.StringVar(&o.InterfaceName, "interfacename", DefaultInterfaceName, "name of the interface holding the local IPs")
	fs.IntVar(&r.healthPort, "health-port", DefaultHealthPort, "port of the health plugin (for the NOTRACK rules)")
	fs.BoolVar(&o.SkipTeardown, "skipteardown", false, "leave rules and addresses in place on exit")
	o.SyncInterval = DefaultSyncInterval
	fs.Var((*syncInterval)(&o.SyncInterval), "syncinterval", "how often to re-ensure interface and rules: a Go duration (30s); a bare number or a value in ns means seconds, as node-cache reads it")
	fs.StringVar(&o.PIDFile, "pidfile", "", "write the process id to this file once serving")
	fs.StringVar(&r.metricsListen, "metrics-listen-address", "", "address of the node setup metrics endpoint (default: the first -localip, port 9353); empty disables")
	fs.IntVar(&r.port, "dns.port", DefaultDNSPort, "DNS port (rules, and server blocks without a port)")
	fs.BoolVar(&r.setupEbtables, "setupebtables", false, "node-cache compatibility: ebtables are not supported, only false is accepted")
	fs.Var(&r.initialDelay, "initialdelay", "node-cache compatibility: accepted and ignored (setup happens before serving)")
	fs.BoolVar(&o.ReloadWithSignal, "reloadwithsignal", false, "apply changes of the template and the kube-dns ConfigMap every -syncinterval even without the reload plugin (node-cache reloads its CoreDNS with SIGUSR1 then)")
	// CoreDNS's flags (besides -conf, -dns.port and -pidfile).
	fs.IntVar(&r.port, "p", DefaultDNSPort, "DNS port (CoreDNS's short form of -dns.port)")
	fs.BoolVar(&o.Quiet, "quiet", false, "no startup output (CoreDNS's flag)")
	fs.BoolVar(&o.ShowVersion, "version", false, "print the version and exit")
	fs.BoolVar(&o.ShowPlugins, "plugins", false, "list the supported Corefile plugins and exit")
	// Our own flags.
	fs.StringVar(&r.mode, "mode", "", "injection or interception; default: interception when -localip holds a non-link-local IP, else injection")
	fs.StringVar(&o.RunDir, "rundir", DefaultRunDir, "directory for instance lock files and the socket hand-over socket")
	fs.StringVar(&o.IPTablesBackend, "iptables-backend", BackendAuto, "iptables backend: auto (the one holding kube-proxy's rules), nft or legacy")
	fs.DurationVar(&o.LameDuck, "lameduck", DefaultLameDuck, "how long to keep answering after teardown on SIGTERM")
	fs.StringVar(&o.ClusterDomain, "cluster-domain", DefaultClusterDomain, "cluster domain, replaces __PILLAR__DNS__DOMAIN__ if the template still has it")
	fs.IntVar(&o.ICMPRateLimit, "icmp-ratelimit", ICMPRateLimitKeep, "set net.ipv4.icmp_ratelimit and net.ipv6.icmp.ratelimit to this many ms before serving and every sync (0: fast fallback to kube-dns when the agent dies); -1 leaves the node's settings")
	fs.BoolVar(&o.SysctlsOnly, "sysctls-only", false, "apply the sysctls (-icmp-ratelimit) and exit: for a privileged init container")
	fs.StringVar(&r.memoryLimit, "memory-limit", MemoryLimitAuto, "memory the agent stays within: auto (the container's cgroup limit), 0 (none) or a quantity such as 128Mi; sizes the Go runtime's limit, the in-flight budget and the caches")
	return fs, r
}

// complete validates the raw flags and fills the derived fields.
func (o *Options) complete(r *rawFlags, set map[string]bool) error {
	if o.ICMPRateLimit < ICMPRateLimitKeep || o.ICMPRateLimit > MaxICMPRateLimit {
		return fmt.Errorf("-icmp-ratelimit %d: want -1 (leave the node's setting) or 0 to %d ms", o.ICMPRateLimit, MaxICMPRateLimit)
	}
	if o.SysctlsOnly && o.ICMPRateLimit == ICMPRateLimitKeep {
		return errors.New("-sysctls-only has nothing to apply: give -icmp-ratelimit (e.g. -icmp-ratelimit=0)")
	}
	if o.SysctlsOnly || o.ShowVersion || o.ShowPlugins {
		// An init container, or a question about the binary: no -localip
		// is needed and the rest is ignored.
		return nil
	}
	ips, err := parseLocalIPs(r.localIP)
	if err != nil {
		return err
	}
	o.LocalIPs = ips
	o.Corefile = r.corefile
	if set["conf"] {
		o.Corefile = r.conf
	}
	for _, p := range []struct{ flag, val string }{
		{"-conf/-corefile", o.Corefile},
		{"-basecorefile", o.BaseCorefile},
		{"-rundir", o.RunDir},
	} {
		if p.val == "" {
			return fmt.Errorf("%s must not be empty", p.flag)
		}
	}
	if err := checkPort("-dns.port", r.port); err != nil {
		return err
	}
	o.DNSPort = r.port
	if err := checkPort("-health-port", r.healthPort); err != nil {
		return err
	}
	o.HealthPort = r.healthPort
	if err := checkInterfaceName(o.InterfaceName); err != nil {
		return err
	}
	if err := checkServiceName(o.UpstreamSvc); err != nil {
		return err
	}
	if o.SyncInterval < MinSyncInterval {
		return fmt.Errorf("-syncinterval %s is too short (minimum %s)", o.SyncInterval, MinSyncInterval)
	}
	if !set["metrics-listen-address"] {
		// Not every node address: only the agent's own (the pod runs in the
		// host's network namespace).
		r.metricsListen = net.JoinHostPort(o.LocalIPs[0].String(), strconv.Itoa(DefaultMetricsPort))
	}
	if r.metricsListen != "" {
		if err := checkListenAddress(r.metricsListen); err != nil {
			return fmt.Errorf("-metrics-listen-address: %w", err)
		}
	}
	o.MetricsListenAddress = r.metricsListen
	auto, limit, err := parseMemoryLimit(r.memoryLimit)
	if err != nil {
		return err
	}
	o.MemoryLimitFromCgroup, o.MemoryLimit = auto, limit
	if r.setupEbtables {
		return errors.New("-setupebtables=true is not supported (ebtables rules are a node-cache option this agent does not implement)")
	}
	switch o.IPTablesBackend {
	case BackendAuto, BackendNFT, BackendLegacy:
	default:
		return fmt.Errorf("-iptables-backend %q: want auto, nft or legacy", o.IPTablesBackend)
	}
	if o.LameDuck < 0 || o.LameDuck > MaxLameDuck {
		return fmt.Errorf("-lameduck %s: must be between 0 and %s", o.LameDuck, MaxLameDuck)
	}
	if err := checkDomain(o.ClusterDomain); err != nil {
		return fmt.Errorf("-cluster-domain: %w", err)
	}
	return o.completeMode(r.mode)
}

func (o *Options) completeMode(mode string) error {
	switch Mode(mode) {
	case ModeInjection, ModeInterception:
		o.Mode = Mode(mode)
	case "":
		o.ModeDerived = true
		o.Mode = ModeInjection
		if len(o.InterceptedIPs()) > 0 {
			o.Mode = ModeInterception
		}
	default:
		return fmt.Errorf("-mode %q: want injection or interception", mode)
	}
	if o.Mode == ModeInterception && len(o.InterceptedIPs()) == 0 {
		return errors.New("-mode=interception needs the kube-dns ClusterIP in -localip (e.g. -localip 169.254.20.10,10.96.0.10)")
	}
	return nil
}

// parseLocalIPs parses -localip: comma-separated IPs. Empty items (a
// trailing comma left by an empty __PILLAR__DNS__SERVER__) are skipped.
func parseLocalIPs(s string) ([]netip.Addr, error) {
	var ips []netip.Addr
	seen := map[netip.Addr]bool{}
	for item := range strings.SplitSeq(s, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		ip, err := netip.ParseAddr(item)
		if err != nil || ip.Zone() != "" {
			return nil, fmt.Errorf("invalid -localip %q: not an IP address", item)
		}
		ip = ip.Unmap()
		if ip.IsUnspecified() || ip.IsMulticast() {
			return nil, fmt.Errorf("invalid -localip %q: unspecified or multicast address", item)
		}
		if seen[ip] {
			return nil, fmt.Errorf("invalid -localip: %s given twice", ip)
		}
		seen[ip] = true
		ips = append(ips, ip)
	}
	if len(ips) == 0 {
		return nil, errors.New("-localip is required (e.g. -localip 169.254.20.10)")
	}
	return ips, nil
}

func checkPort(flagName string, port int) error {
	if port < 1 || port > 65535 {
		return fmt.Errorf("%s %d: must be between 1 and 65535", flagName, port)
	}
	return nil
}

// checkInterfaceName applies the kernel's rules for link names.
func checkInterfaceName(name string) error {
	if name == "" || len(name) > 15 || name == "." || name == ".." ||
		strings.ContainsAny(name, "/: \t\n") {
		return fmt.Errorf("-interfacename %q: want 1-15 characters without '/', ':' or spaces", name)
	}
	return nil
}

// checkServiceName accepts a Kubernetes Service name (DNS-1035 label).
func checkServiceName(name string) error {
	if name == "" || len(name) > 63 {
		return fmt.Errorf("-upstreamsvc %q: want a Service name of 1-63 characters", name)
	}
	for i, c := range name {
		ok := c >= 'a' && c <= 'z' || c >= '0' && c <= '9' && i > 0 || c == '-' && i > 0 && i < len(name)-1
		if !ok {
			return fmt.Errorf("-upstreamsvc %q: not a Service name (lower-case letters, digits, '-')", name)
		}
	}
	return nil
}

func checkListenAddress(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%q: want host:port: %w", addr, err)
	}
	if host != "" && host != "localhost" {
		if _, err := netip.ParseAddr(host); err != nil {
			return fmt.Errorf("%q: host is not an IP address", addr)
		}
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("%q: port must be a number between 0 and 65535", addr)
	}
	return nil
}

func checkDomain(d string) error {
	d = strings.TrimSuffix(d, ".")
	if d == "" || len(d) > 253 {
		return fmt.Errorf("%q: not a domain name", d)
	}
	for label := range strings.SplitSeq(d, ".") {
		if label == "" || len(label) > 63 {
			return fmt.Errorf("%q: not a domain name", d)
		}
		for _, c := range label {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return fmt.Errorf("%q: not a domain name", d)
			}
		}
	}
	return nil
}

// syncInterval is a time.Duration flag that also reads node-cache's values.
// node-cache declares -syncinterval as a Duration and multiplies it by
// time.Second, so its users write "60ns" (or rely on the default, printed as
// "60ns") to mean 60 seconds. Here "30s", "1m" are Go durations; a bare
// number ("60") and a value in nanoseconds ("60ns") mean seconds.
type syncInterval time.Duration

func (s *syncInterval) String() string { return time.Duration(*s).String() }

func (s *syncInterval) Set(v string) error {
	d, err := parseSyncInterval(v)
	if err != nil {
		return err
	}
	*s = syncInterval(d)
	return nil
}

func parseSyncInterval(v string) (time.Duration, error) {
	v = strings.TrimSpace(v)
	num := strings.TrimSuffix(v, "ns")
	if n, err := strconv.ParseUint(num, 10, 32); err == nil {
		return time.Duration(n) * time.Second, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		return 0, fmt.Errorf("want a duration such as 30s or 1m (a bare number means seconds): %w", err)
	}
	if d <= 0 {
		return 0, fmt.Errorf("%s: must be positive", v)
	}
	return d, nil
}
