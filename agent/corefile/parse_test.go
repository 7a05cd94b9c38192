package corefile

import (
	"errors"
	"fmt"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"
)

// fakeResolv is what the injected ReadFile returns for /etc/resolv.conf:
// tests never read the host's file.
const fakeResolv = "# test\nsearch example.com\nnameserver 192.0.2.53\nnameserver 2001:db8::53 ; v6\noptions ndots:5\n"

func testOpts() ParseOptions {
	return ParseOptions{InterfaceAddrs: fakeInterfaces, ReadFile: func(path string) ([]byte, error) {
		switch path {
		case "/etc/resolv.conf":
			return []byte(fakeResolv), nil
		case "/empty/resolv.conf":
			return []byte("search x\n"), nil
		case "/bad/resolv.conf":
			return []byte("nameserver dns.example\n"), nil
		}
		return nil, fmt.Errorf("open %s: %w", path, os.ErrNotExist)
	}}
}

// official renders the official ConfigMap's Corefile as node-cache does in
// iptables mode (-localip 169.254.20.10,10.96.0.10).
func official(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("testdata/nodelocaldns.Corefile.base")
	if err != nil {
		t.Fatal(err)
	}
	return strings.NewReplacer(
		"__PILLAR__DNS__DOMAIN__", "cluster.local",
		"__PILLAR__LOCAL__DNS__:8080", "169.254.20.10:8080",
		"__PILLAR__LOCAL__DNS__", "169.254.20.10 10.96.0.10",
		"__PILLAR__DNS__SERVER__", "",
		"__PILLAR__CLUSTER__DNS__", "10.96.0.20",
		"__PILLAR__UPSTREAM__SERVERS__", "/etc/resolv.conf",
	).Replace(string(b))
}

func TestParseOfficialConfigMap(t *testing.T) {
	cfg, err := Parse(official(t), testOpts())
	if err != nil {
		t.Fatal(err)
	}
	cacheFor := func(zone string, succ, den time.Duration) *Cache {
		return &Cache{
			SuccessCap: 9984, SuccessTTL: succ, SuccessMinTTL: 5 * time.Second,
			DenialCap: 9984, DenialTTL: den, DenialMinTTL: 5 * time.Second,
			ServfailTTL: 5 * time.Second, Zones: []string{zone},
		}
	}
	kubeDNS := &Forward{From: ".", To: []string{"10.96.0.20:53"}, ForceTCP: true, MaxFails: 2,
		Expire: 10 * time.Second, HealthCheck: 500 * time.Millisecond, HealthCheckDomain: ".", Policy: "random"}
	upstream := &Forward{From: ".", To: []string{"192.0.2.53:53", "[2001:db8::53]:53"}, MaxFails: 2,
		Expire: 10 * time.Second, HealthCheck: 500 * time.Millisecond, HealthCheckDomain: ".", Policy: "random"}
	bind := []string{"169.254.20.10", "10.96.0.10"}
	block := func(zone string, line int, c *Cache, f *Forward) Server {
		return Server{Zones: []string{zone}, Port: 53, Bind: bind, Errors: true, Cache: c, Forward: f,
			Prometheus: ":9253", Reload: 30 * time.Second, ReloadJitter: 15 * time.Second, Loop: true, Line: line,
			Plugins: []string{"errors", "cache", "reload", "loop", "bind", "forward", "prometheus"}}
	}
	cluster := block("cluster.local.", 3, cacheFor("cluster.local.", 30*time.Second, 5*time.Second), kubeDNS)
	cluster.Health = "169.254.20.10:8080"
	cluster.Plugins = append(cluster.Plugins, "health")
	want := &Config{Servers: []Server{
		cluster,
		block("in-addr.arpa.", 18, cacheFor("in-addr.arpa.", 30*time.Second, 30*time.Second), kubeDNS),
		block("ip6.arpa.", 29, cacheFor("ip6.arpa.", 30*time.Second, 30*time.Second), kubeDNS),
		block(".", 40, cacheFor(".", 30*time.Second, 30*time.Second), upstream),
	}}
	if !reflect.DeepEqual(cfg, want) {
		for i := range want.Servers {
			if i < len(cfg.Servers) && !reflect.DeepEqual(cfg.Servers[i], want.Servers[i]) {
				t.Errorf("server %d:\n got %+v\nwant %+v", i, cfg.Servers[i], want.Servers[i])
			}
		}
		t.Fatalf("got %d servers, want %d", len(cfg.Servers), len(want.Servers))
	}
	if got := cfg.Servers[0].Addrs(); !reflect.DeepEqual(got, []string{"169.254.20.10:53", "10.96.0.10:53"}) {
		t.Errorf("Addrs = %v", got)
	}
}

// TestParseDirectives covers every line of the official ConfigMap and each
// supported form, one directive at a time inside a minimal block.
func TestParseDirectives(t *testing.T) {
	for _, tc := range []struct {
		name  string
		text  string
		check func(t *testing.T, s Server)
	}{
		{"official: zone with port", "cluster.local:53 {\n}", func(t *testing.T, s Server) {
			eq(t, s.Zones, []string{"cluster.local."})
			eq(t, s.Port, 53)
		}},
		{"official: in-addr.arpa", "in-addr.arpa:53 {\n}", func(t *testing.T, s Server) { eq(t, s.Zones, []string{"in-addr.arpa."}) }},
		{"official: ip6.arpa", "ip6.arpa:53 {\n}", func(t *testing.T, s Server) { eq(t, s.Zones, []string{"ip6.arpa."}) }},
		{"official: root", ".:53 {\n}", func(t *testing.T, s Server) { eq(t, s.Zones, []string{"."}) }},
		{"official: errors", ". {\nerrors\n}", func(t *testing.T, s Server) { eq(t, s.Errors, true) }},
		{"official: cache block success", ". {\ncache {\nsuccess 9984 30\n}\n}", func(t *testing.T, s Server) {
			eq(t, s.Cache.SuccessCap, 9984)
			eq(t, s.Cache.SuccessTTL, 30*time.Second)
			eq(t, s.Cache.DenialTTL, 1800*time.Second)
		}},
		{"official: cache block denial", ". {\ncache {\ndenial 9984 5\n}\n}", func(t *testing.T, s Server) {
			eq(t, s.Cache.DenialCap, 9984)
			eq(t, s.Cache.DenialTTL, 5*time.Second)
			eq(t, s.Cache.DenialMinTTL, 5*time.Second)
			eq(t, s.Cache.SuccessTTL, 3600*time.Second)
		}},
		{"official: cache 30", ". {\ncache 30\n}", func(t *testing.T, s Server) {
			eq(t, s.Cache.SuccessTTL, 30*time.Second)
			eq(t, s.Cache.DenialTTL, 30*time.Second)
			eq(t, s.Cache.SuccessCap, 9984)
			eq(t, s.Cache.Prefetch, (*Prefetch)(nil))
			eq(t, s.Cache.ServeStale, time.Duration(0))
		}},
		{"official: reload", ". {\nreload\n}", func(t *testing.T, s Server) {
			eq(t, s.Reload, 30*time.Second)
			eq(t, s.ReloadJitter, 15*time.Second)
		}},
		{"official: loop", ". {\nloop\n}", func(t *testing.T, s Server) { eq(t, s.Loop, true) }},
		{"official: bind with empty DNS_SERVER", ". {\nbind 169.254.20.10 \n}", func(t *testing.T, s Server) {
			eq(t, s.Bind, []string{"169.254.20.10"})
		}},
		{"official: bind two IPs", ". {\nbind 169.254.20.10 10.96.0.10\n}", func(t *testing.T, s Server) {
			eq(t, s.Bind, []string{"169.254.20.10", "10.96.0.10"})
		}},
		{"official: forward force_tcp", ". {\nforward . 10.96.0.10 {\nforce_tcp\n}\n}", func(t *testing.T, s Server) {
			eq(t, s.Forward.To, []string{"10.96.0.10:53"})
			eq(t, s.Forward.ForceTCP, true)
			eq(t, s.Forward.From, ".")
		}},
		{"official: forward resolv.conf", ". {\nforward . /etc/resolv.conf\n}", func(t *testing.T, s Server) {
			eq(t, s.Forward.To, []string{"192.0.2.53:53", "[2001:db8::53]:53"})
			eq(t, s.Forward.ForceTCP, false)
		}},
		{"official: prometheus", ". {\nprometheus :9253\n}", func(t *testing.T, s Server) { eq(t, s.Prometheus, ":9253") }},
		{"official: health", ". {\nhealth 169.254.20.10:8080\n}", func(t *testing.T, s Server) {
			eq(t, s.Health, "169.254.20.10:8080")
		}},
		{"port from ParseOptions.DefaultPort", "example.org {\n}", func(t *testing.T, s Server) { eq(t, s.Port, 5353) }},
		{"several keys, upper case, dns scheme", "dns://Example.ORG:1053 example.net.:1053 {\n}", func(t *testing.T, s Server) {
			eq(t, s.Zones, []string{"example.org.", "example.net."})
			eq(t, s.Port, 1053)
		}},
		{"empty zone with port is root", ":1053 {\n}", func(t *testing.T, s Server) { eq(t, s.Zones, []string{"."}) }},
		{"log", ". {\nlog\n}", func(t *testing.T, s Server) { eq(t, s.Log, true) }},
		{"errors stdout", ". {\nerrors stdout\n}", func(t *testing.T, s Server) { eq(t, s.Errors, true) }},
		{"cache defaults", ". {\ncache\n}", func(t *testing.T, s Server) {
			eq(t, *s.Cache, Cache{SuccessCap: 9984, SuccessTTL: time.Hour, SuccessMinTTL: 5 * time.Second,
				DenialCap: 9984, DenialTTL: 30 * time.Minute, DenialMinTTL: 5 * time.Second,
				ServfailTTL: 5 * time.Second, Zones: []string{"."}})
		}},
		{"cache TTL and zones", ". {\ncache 10 Example.org svc.cluster.local.\n}", func(t *testing.T, s Server) {
			eq(t, s.Cache.SuccessTTL, 10*time.Second)
			eq(t, s.Cache.SuccessMinTTL, 5*time.Second)
			eq(t, s.Cache.Zones, []string{"example.org.", "svc.cluster.local."})
		}},
		{"cache zones without TTL", ". {\ncache example.org\n}", func(t *testing.T, s Server) {
			eq(t, s.Cache.SuccessTTL, time.Hour)
			eq(t, s.Cache.Zones, []string{"example.org."})
		}},
		{"cache TTL below min TTL: max wins", ". {\ncache 2\n}", func(t *testing.T, s Server) {
			eq(t, s.Cache.SuccessMinTTL, 2*time.Second)
			eq(t, s.Cache.DenialMinTTL, 2*time.Second)
		}},
		{"cache success with min TTL", ". {\ncache {\nsuccess 100 60 0\ndenial 50 20 3\n}\n}", func(t *testing.T, s Server) {
			eq(t, s.Cache.SuccessCap, 100)
			eq(t, s.Cache.SuccessMinTTL, time.Duration(0))
			eq(t, s.Cache.DenialCap, 50)
			eq(t, s.Cache.DenialTTL, 20*time.Second)
			eq(t, s.Cache.DenialMinTTL, 3*time.Second)
		}},
		{"cache success capacity only", ". {\ncache {\nsuccess 100\n}\n}", func(t *testing.T, s Server) {
			eq(t, s.Cache.SuccessCap, 100)
			eq(t, s.Cache.SuccessTTL, time.Hour)
		}},
		{"cache prefetch amount", ". {\ncache {\nprefetch 3\n}\n}", func(t *testing.T, s Server) {
			eq(t, *s.Cache.Prefetch, Prefetch{Amount: 3, Duration: time.Minute, Percentage: 10})
		}},
		{"cache prefetch full", ". {\ncache 30 {\nprefetch 2 30s 25%\n}\n}", func(t *testing.T, s Server) {
			eq(t, *s.Cache.Prefetch, Prefetch{Amount: 2, Duration: 30 * time.Second, Percentage: 25})
		}},
		{"cache prefetch 0 is off", ". {\ncache {\nprefetch 0\n}\n}", func(t *testing.T, s Server) {
			eq(t, s.Cache.Prefetch, (*Prefetch)(nil))
		}},
		{"cache serve_stale default", ". {\ncache {\nserve_stale\n}\n}", func(t *testing.T, s Server) {
			eq(t, s.Cache.ServeStale, time.Hour)
			eq(t, s.Cache.ServeStaleVerify, false)
		}},
		{"cache serve_stale verify", ". {\ncache {\nserve_stale 10m VERIFY\n}\n}", func(t *testing.T, s Server) {
			eq(t, s.Cache.ServeStale, 10*time.Minute)
			eq(t, s.Cache.ServeStaleVerify, true)
		}},
		{"cache serve_stale immediate", ". {\ncache {\nserve_stale 1m immediate\n}\n}", func(t *testing.T, s Server) {
			eq(t, s.Cache.ServeStale, time.Minute)
		}},
		{"cache servfail", ". {\ncache {\nservfail 10s\n}\n}", func(t *testing.T, s Server) {
			eq(t, s.Cache.ServfailTTL, 10*time.Second)
		}},
		{"forward defaults and ports", ". {\nforward example.org 10.0.0.1 10.0.0.2:5353 [2001:db8::1]:53 2001:db8::2 dns://10.0.0.3\n}", func(t *testing.T, s Server) {
			eq(t, *s.Forward, Forward{From: "example.org.",
				To:       []string{"10.0.0.1:53", "10.0.0.2:5353", "[2001:db8::1]:53", "[2001:db8::2]:53", "10.0.0.3:53"},
				MaxFails: 2, Expire: 10 * time.Second, HealthCheck: 500 * time.Millisecond, HealthCheckDomain: ".", Policy: "random"})
		}},
		{"forward every option", ". {\nforward . 10.0.0.1 {\nprefer_udp\nmax_concurrent 1000\nexpire 30s\nhealth_check 1s no_rec domain Health.Example\npolicy sequential\nmax_fails 0\nexcept svc.cluster.local example.org\n}\n}",
			func(t *testing.T, s Server) {
				f := s.Forward
				eq(t, f.PreferUDP, true)
				eq(t, f.MaxConcurrent, 1000)
				eq(t, f.Expire, 30*time.Second)
				eq(t, f.HealthCheck, time.Second)
				eq(t, f.HealthCheckNoRec, true)
				eq(t, f.HealthCheckDomain, "health.example.")
				eq(t, f.Policy, "sequential")
				eq(t, f.MaxFails, 0)
				eq(t, f.Except, []string{"svc.cluster.local.", "example.org."})
			}},
		{"forward health_check 0 disables", ". {\nforward . 10.0.0.1 {\nhealth_check 0s\npolicy round_robin\n}\n}", func(t *testing.T, s Server) {
			eq(t, s.Forward.HealthCheck, time.Duration(0))
			eq(t, s.Forward.Policy, "round_robin")
		}},
		{"bind twice, IPv6, dedup", ". {\nbind 127.0.0.1\nbind ::1 127.0.0.1\n}", func(t *testing.T, s Server) {
			eq(t, s.Bind, []string{"127.0.0.1", "::1"})
			eq(t, s.Addrs(), []string{"127.0.0.1:5353", "[::1]:5353"})
		}},
		{"no bind listens everywhere", ". {\n}", func(t *testing.T, s Server) { eq(t, s.Addrs(), []string{":5353"}) }},
		{"health default and lameduck", ". {\nhealth {\nlameduck 5s\n}\n}", func(t *testing.T, s Server) {
			eq(t, s.Health, ":8080")
			eq(t, s.HealthLameDuck, 5*time.Second)
		}},
		{"ready default", ". {\nready\n}", func(t *testing.T, s Server) { eq(t, s.Ready, ":8181") }},
		{"ready address", ". {\nready 127.0.0.1:8181\n}", func(t *testing.T, s Server) { eq(t, s.Ready, "127.0.0.1:8181") }},
		{"prometheus default", ". {\nprometheus\n}", func(t *testing.T, s Server) { eq(t, s.Prometheus, "localhost:9153") }},
		{"prometheus IPv6", ". {\nprometheus [::1]:9153\n}", func(t *testing.T, s Server) { eq(t, s.Prometheus, "[::1]:9153") }},
		{"reload interval and jitter", ". {\nreload 10s 2s\n}", func(t *testing.T, s Server) {
			eq(t, s.Reload, 10*time.Second)
			eq(t, s.ReloadJitter, 2*time.Second)
		}},
		{"reload jitter capped at half", ". {\nreload 4s 3s\n}", func(t *testing.T, s Server) {
			eq(t, s.ReloadJitter, 2*time.Second)
		}},
		{"comments and one-line block", "# header\n. { # comment\n  errors\n}\n", func(t *testing.T, s Server) {
			eq(t, s.Errors, true)
			eq(t, s.Line, 2)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opts := testOpts()
			opts.DefaultPort = 5353
			cfg, err := Parse(tc.text, opts)
			if err != nil {
				t.Fatalf("Parse(%q): %v", tc.text, err)
			}
			if len(cfg.Servers) != 1 {
				t.Fatalf("got %d servers, want 1", len(cfg.Servers))
			}
			tc.check(t, cfg.Servers[0])
		})
	}
}

func eq(t *testing.T, got, want any) {
	t.Helper()
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %#v, want %#v", got, want)
	}
}

func TestParseRefusals(t *testing.T) {
	for _, tc := range []struct {
		name string
		text string
		want string // the complete error, or a prefix ending in "..."
	}{
		{"unknown plugin", ". {\n  errors\n  file db.example\n}", `Corefile:3: unknown plugin "file"`},
		{"first unknown plugin in file order", ". {\n  etcd\n  errors\n  file\n}", `Corefile:2: unknown plugin "etcd"`},
		{"unknown plugin in second block", ". {\n errors\n}\nexample.org {\n\n  chaos\n}", `Corefile:6: unknown plugin "chaos"`},
		{"unknown cache option", ". {\ncache {\n  success 10\n  keepttl_foo\n}\n}", `Corefile:4: unknown option "keepttl_foo" of plugin "cache"`},
		{"unknown forward option", ". {\nforward . 10.0.0.1 {\n  tls_foo\n}\n}", `Corefile:3: unknown option "tls_foo" of plugin "forward"`},
		{"unknown health option", ". {\nhealth {\n  foo 1s\n}\n}", `Corefile:3: unknown option "foo" of plugin "health"`},
		{"option for plugin without options", ". {\nloop {\n  max 1\n}\n}", `Corefile:3: unknown option "max" of plugin "loop"`},
		{"unknown health_check option", ". {\nforward . 10.0.0.1 {\nhealth_check 1s fast\n}\n}", `Corefile:3: unknown option "fast" of forward health_check`},
		{"duplicate zone across blocks", "cluster.local:53 {\n}\nCluster.Local.:53 {\n}", `Corefile:3: zone cluster.local.:53 is served twice (also by the block at line 1)`},
		{"duplicate zone default port", ".:53 {\n}\n. {\n}", `Corefile:3: zone .:53 is served twice...`},
		{"duplicate zone in one block", "a.org a.org {\n}", `Corefile:1: zone "a.org." is listed twice in the block`},
		{"mixed ports in one block", "a.org:53 b.org:54 {\n}", `Corefile:1: server block keys use different ports...`},
		{"bad port", "a.org:99999 {\n}", `Corefile:1: server block "a.org:99999": port "99999"...`},
		{"port not a number", "a.org:dns {\n}", `Corefile:1: server block "a.org:dns": port "dns"...`},
		{"tls transport", "tls://.:853 {\n}", `Corefile:1: server block "tls://.:853": transport "tls" is not supported (only dns://)`},
		{"bad zone", "a..b {\n}", `Corefile:1: server block "a..b": "a..b" is not a valid zone name`},
		{"unrendered pillar in key", "__PILLAR__DNS__DOMAIN__:53 {\n}", `Corefile:1: template variable in "__PILLAR__DNS__DOMAIN__:53" was not rendered`},
		{"plugin twice", ". {\ncache 30\nerrors\ncache 10\n}", `Corefile:4: plugin "cache" can only be used once per server block`},
		{"cache zero TTL", ". {\ncache 0\n}", `Corefile:2: cache TTL can not be zero or negative: 0`},
		{"cache negative TTL", ". {\ncache -5\n}", `Corefile:2: cache TTL can not be zero or negative: -5`},
		{"cache bad zone", ". {\ncache 30 a..b\n}", `Corefile:2: plugin "cache": "a..b" is not a valid zone name`},
		{"cache success without args", ". {\ncache {\nsuccess\n}\n}", `Corefile:3: cache success: wrong number of arguments (0: [])`},
		{"cache success too many", ". {\ncache {\nsuccess 1 2 3 4\n}\n}", `Corefile:3: cache success: wrong number of arguments...`},
		{"cache success bad capacity", ". {\ncache {\nsuccess many\n}\n}", `Corefile:3: cache success capacity "many": want a positive number`},
		{"cache denial zero capacity", ". {\ncache {\ndenial 0\n}\n}", `Corefile:3: cache denial capacity "0": want a positive number`},
		{"cache success zero TTL", ". {\ncache {\nsuccess 10 0\n}\n}", `Corefile:3: cache success TTL "0": want a positive number of seconds`},
		{"cache denial negative min TTL", ". {\ncache {\ndenial 10 30 -1\n}\n}", `Corefile:3: cache denial min TTL "-1"...`},
		{"cache option with block", ". {\ncache {\nsuccess 10 {\n}\n}\n}", `Corefile:3: cache success takes no block`},
		{"cache prefetch no args", ". {\ncache {\nprefetch\n}\n}", `Corefile:3: cache prefetch: wrong number of arguments...`},
		{"cache prefetch negative", ". {\ncache {\nprefetch -1\n}\n}", `Corefile:3: cache prefetch amount "-1"...`},
		{"cache prefetch bad duration", ". {\ncache {\nprefetch 1 soon\n}\n}", `Corefile:3: cache prefetch duration "soon"...`},
		{"cache prefetch pct without %", ". {\ncache {\nprefetch 1 1m 20\n}\n}", `Corefile:3: cache prefetch percentage "20": last character should be %`},
		{"cache prefetch pct out of range", ". {\ncache {\nprefetch 1 1m 95%\n}\n}", `Corefile:3: cache prefetch percentage "95%": should fall in range [10, 90]`},
		{"cache serve_stale negative", ". {\ncache {\nserve_stale -1s\n}\n}", `Corefile:3: cache serve_stale duration "-1s"...`},
		{"cache serve_stale bad mode", ". {\ncache {\nserve_stale 1h later\n}\n}", `Corefile:3: cache serve_stale refresh mode "later": want immediate or verify`},
		{"cache serve_stale too many", ". {\ncache {\nserve_stale 1h verify x\n}\n}", `Corefile:3: cache serve_stale: wrong number of arguments...`},
		{"cache servfail too long", ". {\ncache {\nservfail 10m\n}\n}", `Corefile:3: cache servfail "10m": want a duration between 0 and 5m0s`},
		{"forward without TO", ". {\nforward .\n}", `Corefile:2: plugin "forward": want FROM and at least one TO, got ["."]`},
		{"forward hostname", ". {\nforward . dns.google\n}", `Corefile:2: plugin "forward": not an IP address or file: "dns.google"`},
		{"forward https", ". {\nforward . https://1.1.1.1\n}", `Corefile:2: plugin "forward": transport "https" of "https://1.1.1.1" is not supported (only dns:// and tls://)`},
		{"forward missing file", ". {\nforward . /etc/missing.conf\n}", `Corefile:2: plugin "forward": reading /etc/missing.conf: open /etc/missing.conf: file does not exist`},
		{"forward file without nameservers", ". {\nforward . /empty/resolv.conf\n}", `Corefile:2: plugin "forward": no nameservers found in /empty/resolv.conf`},
		{"forward file with hostname", ". {\nforward . /bad/resolv.conf\n}", `Corefile:2: plugin "forward": /bad/resolv.conf: line 1: nameserver "dns.example" is not an IP address`},
		{"forward port 0", ". {\nforward . 10.0.0.1:0\n}", `Corefile:2: plugin "forward": not an IP address or file: "10.0.0.1:0"`},
		{"forward too many upstreams", ". {\nforward . 10.0.0.1 10.0.0.2 10.0.0.3 10.0.0.4 10.0.0.5 10.0.0.6 10.0.0.7 10.0.0.8 10.0.0.9 10.0.0.10 10.0.0.11 10.0.0.12 10.0.0.13 10.0.0.14 10.0.0.15 10.0.0.16\n}", `Corefile:2: plugin "forward": more than 15 upstreams: 16`},
		{"forward unrendered pillar", ". {\nforward . __PILLAR__CLUSTER__DNS__\n}", `Corefile:2: template variable in "__PILLAR__CLUSTER__DNS__" was not rendered`},
		{"forward force_tcp with arg", ". {\nforward . 10.0.0.1 {\nforce_tcp yes\n}\n}", `Corefile:3: forward force_tcp: wrong number of arguments...`},
		{"forward bad policy", ". {\nforward . 10.0.0.1 {\npolicy fastest\n}\n}", `Corefile:3: forward policy "fastest": want random, round_robin or sequential`},
		{"forward bad max_fails", ". {\nforward . 10.0.0.1 {\nmax_fails -1\n}\n}", `Corefile:3: forward max_fails "-1": want a non-negative number`},
		{"forward bad max_concurrent", ". {\nforward . 10.0.0.1 {\nmax_concurrent lots\n}\n}", `Corefile:3: forward max_concurrent "lots"...`},
		{"forward negative expire", ". {\nforward . 10.0.0.1 {\nexpire -1s\n}\n}", `Corefile:3: forward expire "-1s"...`},
		{"forward bad health_check", ". {\nforward . 10.0.0.1 {\nhealth_check\n}\n}", `Corefile:3: forward health_check: wrong number of arguments...`},
		{"forward health_check domain missing", ". {\nforward . 10.0.0.1 {\nhealth_check 1s domain\n}\n}", `Corefile:3: forward health_check domain: missing name`},
		{"forward except empty", ". {\nforward . 10.0.0.1 {\nexcept\n}\n}", `Corefile:3: forward except: wrong number of arguments...`},
		{"bind without address", ". {\nbind\n}", `Corefile:2: plugin "bind": needs at least one address or interface name`},
		{"bind unknown interface", ". {\nbind nosuch0\n}", `Corefile:2: plugin "bind": "nosuch0" is not an IP address or an interface name`},
		{"bind unrendered pillar", ". {\nbind __PILLAR__LOCAL__DNS__\n}", `Corefile:2: template variable in "__PILLAR__LOCAL__DNS__" was not rendered`},
		{"bind unknown option", ". {\nbind 127.0.0.1 {\nonly 127.0.0.2\n}\n}", `Corefile:3: unknown option "only" of plugin "bind"`},
		{"health two addresses", ". {\nhealth 169.254.20.10 10.96.0.10:8080\n}", `Corefile:2: health: wrong number of arguments...`},
		{"health without port", ". {\nhealth 169.254.20.10\n}", `Corefile:2: plugin "health": address "169.254.20.10": want host:port`},
		{"health hostname", ". {\nhealth node.example:8080\n}", `Corefile:2: plugin "health": address "node.example:8080": host must be an IP address, localhost or empty`},
		{"health bad lameduck", ". {\nhealth {\nlameduck soon\n}\n}", `Corefile:3: health lameduck "soon": want a non-negative duration`},
		{"ready bad port", ". {\nready :http\n}", `Corefile:2: plugin "ready": address ":http": port must be a number between 0 and 65535`},
		{"prometheus two args", ". {\nprometheus :9253 :9254\n}", `Corefile:2: prometheus: wrong number of arguments...`},
		{"reload too short", ". {\nreload 1s\n}", `Corefile:2: reload interval "1s": want a duration of at least 2s`},
		{"reload bad jitter", ". {\nreload 10s 0s\n}", `Corefile:2: reload jitter "0s": want a duration of at least 1s`},
		{"reload too many", ". {\nreload 10s 2s 1s\n}", `Corefile:2: reload: wrong number of arguments...`},
		{"loop with args", ". {\nloop 1\n}", `Corefile:2: loop: wrong number of arguments (1: ["1"])`},
		{"log local placeholder", ". {\nlog . \"{local} {name}\"\n}", `Corefile:2: log format: placeholder {local} is not supported...`},
		{"errors to file", ". {\nerrors /var/log/x\n}", `Corefile:2: plugin "errors": unsupported arguments ["/var/log/x"]`},
		{"errors consolidate bad regexp", ". {\nerrors {\nconsolidate 5m \"(\"\n}\n}", `Corefile:3: errors consolidate: error parsing regexp...`},
		{"unmatched close brace", ". {\ncache 30 }\n}", `Corefile:2: Unexpected '}' because no matching opening brace`},
		{"unclosed block", ". {\ncache {\n", `Corefile:2: Unexpected EOF`},
		{"trailing token after block", ". {\ncache {\nsuccess 10\n} extra\n}", `Corefile:4: unexpected "extra" after plugin "cache"`},
		{"token too long", ". {\nforward . /" + strings.Repeat("a", 5000) + "\n}", `Corefile:2: token of 5001 bytes is longer than 4096`},
		{"empty", "", `Corefile: no server blocks`},
		{"only comments", "# nothing\n", `Corefile: no server blocks`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := Parse(tc.text, testOpts())
			if err == nil {
				t.Fatalf("Parse(%q) = %+v, want error %q", tc.text, cfg, tc.want)
			}
			got := err.Error()
			if prefix, ok := strings.CutSuffix(tc.want, "..."); ok {
				if !strings.HasPrefix(got, prefix) {
					t.Errorf("error %q, want prefix %q", got, prefix)
				}
			} else if tc.want != "" && got != tc.want {
				t.Errorf("error %q, want %q", got, tc.want)
			}
			var pe *Error
			if tc.want != "" && !strings.Contains(tc.want, "Unexpected") && !errors.As(err, &pe) {
				t.Errorf("error %T is not a *corefile.Error", err)
			}
		})
	}
}

func TestParseOptionsChecks(t *testing.T) {
	if _, err := Parse(". {\n}", ParseOptions{DefaultPort: 70000}); err == nil {
		t.Error("DefaultPort 70000 accepted")
	}
	big := strings.Repeat("# pad\n", MaxSize/6+1) + ". {\n}"
	if _, err := Parse(big, ParseOptions{}); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Errorf("oversized Corefile: got %v", err)
	}
	_, err := Parse(". {\nfoo\n}", ParseOptions{Filename: "/etc/Corefile"})
	if err == nil || err.Error() != `/etc/Corefile:2: unknown plugin "foo"` {
		t.Errorf("Filename not used: %v", err)
	}
}

// BenchmarkParseOfficial parses the rendered official ConfigMap Corefile.
func BenchmarkParseOfficial(b *testing.B) {
	raw, err := os.ReadFile("testdata/nodelocaldns.Corefile.base")
	if err != nil {
		b.Fatal(err)
	}
	text := strings.NewReplacer("__PILLAR__DNS__DOMAIN__", "cluster.local", "__PILLAR__LOCAL__DNS__", "169.254.20.10",
		"__PILLAR__DNS__SERVER__", "", "__PILLAR__CLUSTER__DNS__", "10.96.0.10",
		"__PILLAR__UPSTREAM__SERVERS__", "/etc/resolv.conf").Replace(string(raw))
	opts := testOpts()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Parse(text, opts); err != nil {
			b.Fatal(err)
		}
	}
}
