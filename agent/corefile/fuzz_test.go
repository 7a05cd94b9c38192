package corefile

import (
	"os"
	"strings"
	"testing"
)

// FuzzParse checks that no Corefile text makes Parse panic, and that what
// it accepts is well formed.
func FuzzParse(f *testing.F) {
	if b, err := os.ReadFile("testdata/nodelocaldns.Corefile.base"); err == nil {
		f.Add(strings.NewReplacer("__PILLAR__DNS__DOMAIN__", "cluster.local", "__PILLAR__LOCAL__DNS__", "169.254.20.10",
			"__PILLAR__DNS__SERVER__", "", "__PILLAR__CLUSTER__DNS__", "10.96.0.10",
			"__PILLAR__UPSTREAM__SERVERS__", "/etc/resolv.conf").Replace(string(b)))
	}
	for _, seed := range []string{
		". {\ncache {\nsuccess 10 20 3\ndenial 5\nprefetch 2 1m 20%\nserve_stale 1h verify\nservfail 1s\n}\n}",
		". {\nforward . 10.0.0.1 [::1]:53 {\nforce_tcp\nhealth_check 1s no_rec domain x.org\nexcept a.org\npolicy sequential\n}\n}",
		"a.org:53 b.org:53 {\nbind 127.0.0.1 ::1\nhealth :8080 {\nlameduck 1s\n}\nready\nprometheus\nreload 5s 1s\nloop\nlog\nerrors\n}",
		"(snip) {\nerrors\n}\n. {\n}",
		". { cache { success 1 } }",
		"{$HOME} {\n}",
		". {\nforward . tls://192.0.2.1%dns.example:853 9.9.9.9 {\ntls_servername x.example\nnext NXDOMAIN\nfailover SERVFAIL\nmax_connect_attempts 2\nmax_idle_conns 3\nfailfast_all_unhealthy_upstreams\n}\nforward . 10.0.0.1\n}",
		"10.0.0.0/15:53 fd00::/6 {\ncache 30 172.16.0.0/12 {\nkeepttl\ndisable denial 10.0.0.0/8\n}\n}",
		". {\nerrors {\nstacktrace\nconsolidate 5m ^x warning\n}\nlog a.org b.org \"{name} {combined}\" {\nclass denial error\n}\nbufsize 1232\ntimeouts {\nread 5\nidle 1m\n}\ndebug\npprof :6060 {\nblock 2\n}\nbind lo eth0 {\nexcept ::1\n}\n}",
		"(s) {\nerrors\n}\n. {\nimport s\n}",
		". {\ntrace zipkin\n}",
		// The answer-changing plugins.
		". {\nhosts /etc/hosts example.org {\n10.0.0.1 a.example.org\nttl 60\nno_reverse\nreload 1s\nfallthrough\n}\n}",
		". {\nrewrite continue name regex (.*)\\.a {1}.b answer auto\nrewrite stop {\nname suffix .a .b\nanswer value (.*) {1}\n}\nrewrite ttl a. 1-5\nrewrite rcode regex .* 2 0\nrewrite type A AAAA\n}",
		". {\ntemplate IN A example.org {\nmatch ^(?P<x>.*)$\nanswer \"{{ .Name }} 60 IN A 10.0.0.1\"\nrcode NOERROR\nederror 21 x\nfallthrough\n}\n}",
		". {\ndns64 64:ff9b::/96 {\ntranslate_all\nallow_ipv4\n}\nloadbalance round_robin {\nprefer 10.0.0.0/8\n}\nwhoami\n}",
	} {
		f.Add(seed)
	}
	opts := testOpts()
	f.Fuzz(func(t *testing.T, text string) {
		cfg, err := Parse(text, opts)
		if err != nil {
			if err.Error() == "" {
				t.Fatal("empty error message")
			}
			return
		}
		if len(cfg.Servers) == 0 {
			t.Fatal("accepted a Corefile without servers")
		}
		for _, s := range cfg.Servers {
			if s.Port < 1 || s.Port > 65535 || len(s.Zones) == 0 {
				t.Fatalf("bad server %+v", s)
			}
			for _, z := range s.Zones {
				if !strings.HasSuffix(z, ".") || z != strings.ToLower(z) {
					t.Fatalf("zone %q not a lower-case FQDN", z)
				}
			}
			if s.Forward != nil && (len(s.Forward.To) == 0 || len(s.Forward.To) > maxUpstreams) {
				t.Fatalf("bad forward %+v", s.Forward)
			}
			if c := s.Cache; c != nil && (c.SuccessCap <= 0 || c.DenialCap <= 0 || c.SuccessMinTTL > c.SuccessTTL) {
				t.Fatalf("bad cache %+v", c)
			}
			for _, f := range append([]*Forward{s.Forward}, s.NextForwards...) {
				if f == nil {
					continue
				}
				for addr := range f.TLS {
					if !contains(f.To, addr) {
						t.Fatalf("tls upstream %s not among %v", addr, f.To)
					}
				}
			}
			if s.BufSize != 0 && (s.BufSize < MinBufSize || s.BufSize > MaxBufSize) {
				t.Fatalf("bufsize %d", s.BufSize)
			}
			for _, tp := range s.Templates {
				if len(tp.Match) == 0 || len(tp.Zones) == 0 {
					t.Fatalf("bad template %+v", tp)
				}
			}
			for _, r := range s.Rewrite {
				if r.Field == "" || r.Field == "name" && r.Match == "" {
					t.Fatalf("bad rewrite rule %+v", r)
				}
			}
			if h := s.Hosts; h != nil && (h.TTL == 0 || len(h.Origins) == 0) {
				t.Fatalf("bad hosts %+v", h)
			}
		}
	})
}
