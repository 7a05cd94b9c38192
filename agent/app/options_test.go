package app

import (
	"context"
	"errors"
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/nodelocaldns/nodelocaldns/agent/pillar"
)

// officialArgs are the container args of the official nodelocaldns.yaml after
// the documented sed for iptables mode (kube-dns ClusterIP 10.96.0.10).
var officialArgs = []string{"-localip", "169.254.20.10,10.96.0.10", "-conf", "/etc/Corefile",
	"-upstreamsvc", "kube-dns-upstream", "-pidfile", "/tmp/node-cache.pid"}

func TestParseFlagsDefaults(t *testing.T) {
	o, err := ParseFlags([]string{"-localip", "169.254.20.10"})
	if err != nil {
		t.Fatal(err)
	}
	want := &Options{
		LocalIPs:             []netip.Addr{netip.MustParseAddr("169.254.20.10")},
		Corefile:             "/etc/Corefile",
		BaseCorefile:         "/etc/coredns/Corefile.base",
		KubeDNSConfigDir:     "/etc/kube-dns",
		UpstreamSvc:          "kube-dns",
		SetupInterface:       true,
		SetupIPTables:        true,
		InterfaceName:        "nodelocaldns",
		HealthPort:           8080,
		SyncInterval:         60 * time.Second,
		MetricsListenAddress: "169.254.20.10:9353",
		DNSPort:              53,
		Mode:                 ModeInjection,
		ModeDerived:          true,
		RunDir:               "/run/nodelocaldns",
		IPTablesBackend:      "auto",
		LameDuck:             2 * time.Second,
		ClusterDomain:        "cluster.local",
		ICMPRateLimit:        -1,

		MemoryLimitFromCgroup: true,
	}
	if !reflect.DeepEqual(o, want) {
		t.Errorf("defaults:\n got %+v\nwant %+v", o, want)
	}
}

func TestParseFlags(t *testing.T) {
	for _, tc := range []struct {
		name  string
		args  []string
		check func(t *testing.T, o *Options)
	}{
		{
			name: "official DaemonSet args, iptables mode",
			args: officialArgs,
			check: func(t *testing.T, o *Options) {
				if got := o.LocalIPStrings(); !reflect.DeepEqual(got, []string{"169.254.20.10", "10.96.0.10"}) {
					t.Errorf("LocalIPs = %v", got)
				}
				if o.Corefile != "/etc/Corefile" || o.UpstreamSvc != "kube-dns-upstream" || o.PIDFile != "/tmp/node-cache.pid" {
					t.Errorf("got %+v", o)
				}
				if o.Mode != ModeInterception || !o.ModeDerived {
					t.Errorf("Mode = %q derived=%v, want derived interception", o.Mode, o.ModeDerived)
				}
				if got := o.InterceptedIPs(); len(got) != 1 || got[0].String() != "10.96.0.10" {
					t.Errorf("InterceptedIPs = %v", got)
				}
			},
		},
		{
			name: "official args, IPVS mode sed leaves a trailing comma",
			args: []string{"-localip", "169.254.20.10,", "-conf", "/etc/Corefile"},
			check: func(t *testing.T, o *Options) {
				if len(o.LocalIPs) != 1 || o.Mode != ModeInjection {
					t.Errorf("LocalIPs=%v Mode=%q", o.LocalIPs, o.Mode)
				}
			},
		},
		{
			name: "-corefile used when -conf absent",
			args: []string{"-localip=169.254.20.10", "-corefile=/x/Corefile"},
			check: func(t *testing.T, o *Options) {
				if o.Corefile != "/x/Corefile" {
					t.Errorf("Corefile = %q", o.Corefile)
				}
			},
		},
		{
			name: "-conf wins over -corefile",
			args: []string{"-localip=169.254.20.10", "-corefile=/x/Corefile", "-conf=/y/Corefile"},
			check: func(t *testing.T, o *Options) {
				if o.Corefile != "/y/Corefile" {
					t.Errorf("Corefile = %q", o.Corefile)
				}
			},
		},
		{
			name: "double-dash flags and booleans",
			args: []string{"--localip=169.254.20.10", "--setupinterface=false", "--setupiptables=false", "--skipteardown"},
			check: func(t *testing.T, o *Options) {
				if o.SetupInterface || o.SetupIPTables || !o.SkipTeardown {
					t.Errorf("got %+v", o)
				}
			},
		},
		{
			name: "dual stack link-local is injection",
			args: []string{"-localip", "169.254.20.10,fe80::a9fe:140a"},
			check: func(t *testing.T, o *Options) {
				if o.Mode != ModeInjection || len(o.LocalIPs) != 2 || !o.LocalIPs[1].Is6() {
					t.Errorf("Mode=%q LocalIPs=%v", o.Mode, o.LocalIPs)
				}
			},
		},
		{
			name: "IPv6 ClusterIP derives interception",
			args: []string{"-localip", "fd00::a,169.254.20.10"},
			check: func(t *testing.T, o *Options) {
				if o.Mode != ModeInterception {
					t.Errorf("Mode=%q", o.Mode)
				}
			},
		},
		{
			name: "explicit injection with a ClusterIP in -localip",
			args: []string{"-localip", "169.254.20.10,10.96.0.10", "-mode", "injection"},
			check: func(t *testing.T, o *Options) {
				if o.Mode != ModeInjection || o.ModeDerived {
					t.Errorf("Mode=%q derived=%v", o.Mode, o.ModeDerived)
				}
			},
		},
		{
			name: "our own flags",
			args: []string{"-localip=169.254.20.10", "-rundir=/tmp/r", "-iptables-backend=legacy", "-lameduck=500ms",
				"-dns.port=5353", "-health-port=18080", "-interfacename=nlc0", "-metrics-listen-address=",
				"-cluster-domain=example.internal", "-kubednscm="},
			check: func(t *testing.T, o *Options) {
				if o.RunDir != "/tmp/r" || o.IPTablesBackend != "legacy" || o.LameDuck != 500*time.Millisecond ||
					o.DNSPort != 5353 || o.HealthPort != 18080 || o.InterfaceName != "nlc0" ||
					o.MetricsListenAddress != "" || o.ClusterDomain != "example.internal" || o.KubeDNSConfigDir != "" {
					t.Errorf("got %+v", o)
				}
			},
		},
		{
			name: "-icmp-ratelimit=0 for fast fallback",
			args: []string{"-localip=169.254.20.10", "-icmp-ratelimit=0"},
			check: func(t *testing.T, o *Options) {
				if o.ICMPRateLimit != 0 || o.SysctlsOnly {
					t.Errorf("ICMPRateLimit=%d SysctlsOnly=%v", o.ICMPRateLimit, o.SysctlsOnly)
				}
			},
		},
		{
			name: "-sysctls-only needs no -localip",
			args: []string{"-sysctls-only", "-icmp-ratelimit=250"},
			check: func(t *testing.T, o *Options) {
				if !o.SysctlsOnly || o.ICMPRateLimit != 250 || len(o.LocalIPs) != 0 {
					t.Errorf("SysctlsOnly=%v ICMPRateLimit=%d LocalIPs=%v", o.SysctlsOnly, o.ICMPRateLimit, o.LocalIPs)
				}
			},
		},
		{
			name: "node-cache compatibility flags accepted",
			args: []string{"-localip=169.254.20.10", "-setupebtables=false", "-initialdelay=10ns"},
			check: func(t *testing.T, o *Options) {
				if o.LocalIPs[0].String() != "169.254.20.10" {
					t.Errorf("got %+v", o)
				}
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o, err := ParseFlags(tc.args)
			if err != nil {
				t.Fatalf("ParseFlags(%q): %v", tc.args, err)
			}
			tc.check(t, o)
		})
	}
}

func TestSyncInterval(t *testing.T) {
	for _, tc := range []struct {
		name string
		val  string
		want time.Duration
	}{
		{"go duration seconds", "30s", 30 * time.Second},
		{"go duration minutes", "2m", 2 * time.Minute},
		{"go duration milliseconds", "250ms", 250 * time.Millisecond},
		{"bare number is seconds", "60", 60 * time.Second},
		{"node-cache nanoseconds are seconds", "60ns", 60 * time.Second},
		{"node-cache default printed form", "10ns", 10 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o, err := ParseFlags([]string{"-localip=169.254.20.10", "-syncinterval=" + tc.val})
			if err != nil {
				t.Fatal(err)
			}
			if o.SyncInterval != tc.want {
				t.Errorf("-syncinterval=%s: got %s, want %s", tc.val, o.SyncInterval, tc.want)
			}
		})
	}
}

func TestParseFlagsErrors(t *testing.T) {
	base := "-localip=169.254.20.10"
	for _, tc := range []struct {
		name string
		args []string
		want string // substring of the error
	}{
		{"missing localip", nil, "-localip is required"},
		{"empty localip", []string{"-localip="}, "-localip is required"},
		{"bad localip", []string{"-localip=169.254.20.300"}, `invalid -localip "169.254.20.300"`},
		{"hostname localip", []string{"-localip=dns.local"}, `invalid -localip "dns.local"`},
		{"unreplaced pillar in localip", []string{"-localip=169.254.20.10,__PILLAR__DNS__SERVER__"}, `"__PILLAR__DNS__SERVER__"`},
		{"zoned localip", []string{"-localip=fe80::1%eth0"}, "not an IP address"},
		{"unspecified localip", []string{"-localip=0.0.0.0"}, "unspecified"},
		{"duplicate localip", []string{"-localip=169.254.20.10,169.254.20.10"}, "given twice"},
		{"dns port zero", []string{base, "-dns.port=0"}, "-dns.port 0"},
		{"dns port too big", []string{base, "-dns.port=65536"}, "-dns.port 65536"},
		{"dns port not a number", []string{base, "-dns.port=dns"}, "dns.port"},
		{"health port", []string{base, "-health-port=70000"}, "-health-port 70000"},
		{"health port not a number", []string{base, "-health-port=http"}, "health-port"},
		{"syncinterval garbage", []string{base, "-syncinterval=soon"}, "syncinterval"},
		{"syncinterval zero", []string{base, "-syncinterval=0s"}, "syncinterval"},
		{"syncinterval negative", []string{base, "-syncinterval=-5s"}, "must be positive"},
		{"syncinterval too short", []string{base, "-syncinterval=1ms"}, "too short"},
		{"mode unknown", []string{base, "-mode=proxy"}, `-mode "proxy"`},
		{"interception without ClusterIP", []string{base, "-mode=interception"}, "needs the kube-dns ClusterIP"},
		{"backend unknown", []string{base, "-iptables-backend=ipvs"}, `-iptables-backend "ipvs"`},
		{"lameduck negative", []string{base, "-lameduck=-1s"}, "-lameduck"},
		{"lameduck huge", []string{base, "-lameduck=1h"}, "-lameduck"},
		{"interface name too long", []string{base, "-interfacename=abcdefghijklmnop"}, "-interfacename"},
		{"interface name with slash", []string{base, "-interfacename=a/b"}, "-interfacename"},
		{"upstreamsvc upper case", []string{base, "-upstreamsvc=Kube-DNS"}, "-upstreamsvc"},
		{"upstreamsvc empty", []string{base, "-upstreamsvc="}, "-upstreamsvc"},
		{"metrics address without port", []string{base, "-metrics-listen-address=0.0.0.0"}, "-metrics-listen-address"},
		{"metrics address hostname", []string{base, "-metrics-listen-address=example.com:9353"}, "-metrics-listen-address"},
		{"empty conf", []string{base, "-conf="}, "-conf/-corefile must not be empty"},
		{"empty basecorefile", []string{base, "-basecorefile="}, "-basecorefile must not be empty"},
		{"ebtables", []string{base, "-setupebtables"}, "-setupebtables"},
		{"cluster domain", []string{base, "-cluster-domain=a..b"}, "-cluster-domain"},
		{"icmp ratelimit below -1", []string{base, "-icmp-ratelimit=-2"}, "-icmp-ratelimit -2"},
		{"icmp ratelimit huge", []string{base, "-icmp-ratelimit=3600001"}, "-icmp-ratelimit 3600001"},
		{"icmp ratelimit not a number", []string{base, "-icmp-ratelimit=fast"}, "icmp-ratelimit"},
		{"sysctls-only without a sysctl", []string{"-sysctls-only"}, "nothing to apply"},
		{"sysctls-only with bad ratelimit", []string{"-sysctls-only", "-icmp-ratelimit=-5"}, "-icmp-ratelimit -5"},
		{"unknown flag", []string{base, "-rewrite"}, "unknown flag -rewrite: the agent accepts node-cache's and CoreDNS's flags"},
		{"unknown flag with value", []string{base, "-v=2"}, "unknown flag -v"},
		{"positional argument", []string{base, "extra"}, "unexpected arguments"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o, err := ParseFlags(tc.args)
			if err == nil {
				t.Fatalf("ParseFlags(%q) = %+v, want error containing %q", tc.args, o, tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("ParseFlags(%q) error %q, want it to contain %q", tc.args, err, tc.want)
			}
		})
	}
}

// TestCompatFlags checks the flags of today's node-cache and CoreDNS that
// DaemonSets pass: -reloadwithsignal (node-cache), -quiet, -p, -version and
// -plugins (CoreDNS); the last two need no -localip.
func TestCompatFlags(t *testing.T) {
	o, err := ParseFlags([]string{"-localip=169.254.20.10", "-reloadwithsignal", "-quiet", "-p=5300", "-skipteardown=true", "-health-port=8081"})
	if err != nil {
		t.Fatal(err)
	}
	if !o.ReloadWithSignal || !o.Quiet || o.DNSPort != 5300 || !o.SkipTeardown || o.HealthPort != 8081 {
		t.Errorf("options %+v", o)
	}
	for _, tc := range []struct {
		flag string
		want []string
	}{
		{"-version", []string{"nodelocaldns-agent-", "(CoreDNS-" + CoreDNSVersion + " compatible)", "linux/"}},
		{"-plugins", []string{"bind\n", "\ncache\n", "\nforward\n", "\nprometheus\n"}},
	} {
		var out strings.Builder
		if err := mainTo(context.Background(), []string{tc.flag}, &out); err != nil {
			t.Fatalf("%s: %v", tc.flag, err)
		}
		for _, w := range tc.want {
			if !strings.Contains(out.String(), w) {
				t.Errorf("%s output lacks %q:\n%s", tc.flag, w, out.String())
			}
		}
	}
}

func TestParseFlagsHelp(t *testing.T) {
	_, err := ParseFlags([]string{"-h"})
	if !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("-h: got %v, want flag.ErrHelp", err)
	}
	for _, name := range []string{"-localip", "-syncinterval", "-mode", "-rundir", "-dns.port"} {
		if !strings.Contains(err.Error(), name) {
			t.Errorf("usage lacks %s:\n%s", name, err)
		}
	}
}

// TestParseFlagsIndependent checks that no flag state leaks between calls.
func TestParseFlagsIndependent(t *testing.T) {
	a, err := ParseFlags([]string{"-localip=169.254.20.10", "-dns.port=5353"})
	if err != nil {
		t.Fatal(err)
	}
	b, err := ParseFlags([]string{"-localip=169.254.20.11"})
	if err != nil {
		t.Fatal(err)
	}
	if a.DNSPort != 5353 || b.DNSPort != 53 || b.LocalIPs[0].String() != "169.254.20.11" {
		t.Errorf("a=%+v b=%+v", a, b)
	}
}

func TestPillarOptions(t *testing.T) {
	o, err := ParseFlags(append([]string{"-basecorefile=/cm/Corefile.base", "-kubednscm=/kd", "-dns.port=1053"}, officialArgs...))
	if err != nil {
		t.Fatal(err)
	}
	p := o.PillarOptions()
	if p.Template != "/cm/Corefile.base" || p.Output != "/etc/Corefile" || p.KubeDNSConfigDir != "/kd" ||
		p.Params.DNSPort != 1053 || p.Params.UpstreamSvc != "kube-dns-upstream" || p.Params.ClusterDomain != "cluster.local" ||
		!reflect.DeepEqual(p.Params.LocalIPs, []string{"169.254.20.10", "10.96.0.10"}) ||
		p.Parse.Filename != "/etc/Corefile" || p.Parse.DefaultPort != 1053 || p.Params.LookupEnv == nil {
		t.Errorf("PillarOptions = %+v", p)
	}
}

// TestOfficialDaemonSetConfig goes from the official DaemonSet's arguments
// and ConfigMap to the parsed configuration, the way Run does: flags, then
// the template rendered by pillar from those flags, then the Corefile.
func TestOfficialDaemonSetConfig(t *testing.T) {
	dir := t.TempDir()
	tmpl, err := os.ReadFile("../corefile/testdata/nodelocaldns.Corefile.base")
	if err != nil {
		t.Fatal(err)
	}
	// The documented install-time sed for the domain; the rest is left to the agent.
	tmpl = []byte(strings.ReplaceAll(string(tmpl), "__PILLAR__DNS__DOMAIN__", "cluster.local"))
	base := filepath.Join(dir, "Corefile.base")
	if err := os.WriteFile(base, tmpl, 0o644); err != nil {
		t.Fatal(err)
	}
	args := []string{"-localip", "169.254.20.10", "-conf", filepath.Join(dir, "Corefile"),
		"-upstreamsvc", "kube-dns-upstream", "-pidfile", "/tmp/node-cache.pid",
		"-basecorefile", base, "-kubednscm", filepath.Join(dir, "kube-dns")}
	o, err := ParseFlags(args)
	if err != nil {
		t.Fatal(err)
	}
	po := o.PillarOptions()
	po.Params.LookupEnv = func(k string) (string, bool) {
		return "10.96.0.20", k == "KUBE_DNS_UPSTREAM_SERVICE_HOST"
	}
	po.Parse.ReadFile = func(path string) ([]byte, error) {
		if path == "/etc/resolv.conf" {
			return []byte("nameserver 192.0.2.1\n"), nil
		}
		return nil, os.ErrNotExist
	}
	w, err := pillar.NewWatcher(po)
	if err != nil {
		t.Fatal(err)
	}
	cfg, text := w.Config()
	written, err := os.ReadFile(filepath.Join(dir, "Corefile"))
	if err != nil || string(written) != text {
		t.Fatalf("rendered Corefile not written to -conf: %v", err)
	}
	if len(cfg.Servers) != 4 {
		t.Fatalf("%d server blocks, want 4", len(cfg.Servers))
	}
	for _, s := range cfg.Servers {
		if !reflect.DeepEqual(s.Bind, []string{"169.254.20.10"}) || s.Port != 53 || s.Prometheus != ":9253" {
			t.Errorf("block %v: bind %v port %d prometheus %q", s.Zones, s.Bind, s.Port, s.Prometheus)
		}
		wantTo, tcp := "10.96.0.20:53", true
		if s.Zones[0] == "." {
			wantTo, tcp = "192.0.2.1:53", false
		}
		if s.Forward.To[0] != wantTo || s.Forward.ForceTCP != tcp {
			t.Errorf("block %v forwards to %v force_tcp=%v", s.Zones, s.Forward.To, s.Forward.ForceTCP)
		}
	}
	if cfg.Servers[0].Health != "169.254.20.10:8080" {
		t.Errorf("health %q", cfg.Servers[0].Health)
	}
}
