package corefile

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// TestParseAnswerPlugins checks the answer-changing plugins' options and
// CoreDNS's defaults, one Corefile per case.
func TestParseAnswerPlugins(t *testing.T) {
	for _, tc := range []struct {
		name  string
		text  string
		check func(t *testing.T, s Server)
	}{
		{"hosts defaults", "example.org {\nhosts\n}", func(t *testing.T, s Server) {
			eq(t, *s.Hosts, Hosts{Path: "/etc/hosts", Origins: []string{"example.org."}, TTL: 3600, Reload: 5 * time.Second, Line: 2})
		}},
		{"hosts file, zones, options, inline", ". {\nhosts /tmp/h a.org B.org {\n10.0.0.1 x.a.org\n::1 y.b.org z\nttl 60\nno_reverse\nreload 0\nfallthrough in-addr.arpa\n}\n}", func(t *testing.T, s Server) {
			eq(t, *s.Hosts, Hosts{Path: "/tmp/h", Origins: []string{"a.org.", "b.org."}, Inline: []string{"10.0.0.1 x.a.org", "::1 y.b.org z"},
				TTL: 60, NoReverse: true, Fallthrough: []string{"in-addr.arpa."}, Line: 2})
		}},
		{"hosts fallthrough all", ". {\nhosts {\nfallthrough\n}\n}", func(t *testing.T, s Server) { eq(t, s.Hosts.Fallthrough, []string{"."}) }},
		{"rewrite exact", ". {\nrewrite name A.org b.org\n}", func(t *testing.T, s Server) {
			eq(t, s.Rewrite, []RewriteRule{{Field: "name", Match: "exact", From: "a.org.", To: "b.org.", AnswerAuto: true, Line: 2}})
		}},
		{"rewrite rules in file order, block form", ". {\nrewrite continue name suffix .a.org .b.org answer auto\nrewrite stop {\nname regex (.*)-x\\.a\\.org {1}.b.org\nanswer name (.*)\\.b\\.org {1}-x.a.org\nvalue (.*)\\.c\\. {1}.d.\n}\n}", func(t *testing.T, s Server) {
			eq(t, s.Rewrite, []RewriteRule{
				{Continue: true, Field: "name", Match: "suffix", From: ".a.org.", To: ".b.org.", AnswerAuto: true, Line: 2},
				{Field: "name", Match: "regex", From: `(.*)-x\.a\.org`, To: "{1}.b.org.", Line: 3, Answers: []RewriteAnswer{
					{From: `(.*)\.b\.org`, To: "{1}-x.a.org."}, {Value: true, From: `(.*)\.c\.`, To: "{1}.d."}}},
			})
		}},
		{"rewrite prefix gets a dot as in CoreDNS", ". {\nrewrite name prefix foo bar\n}", func(t *testing.T, s Server) {
			eq(t, s.Rewrite[0].From, "foo.")
		}},
		{"rewrite type and class", ". {\nrewrite type any hinfo\nrewrite continue class CH IN\n}", func(t *testing.T, s Server) {
			eq(t, s.Rewrite[0].FromCode, dns.TypeANY)
			eq(t, s.Rewrite[0].ToCode, dns.TypeHINFO)
			eq(t, s.Rewrite[1].FromCode, uint16(dns.ClassCHAOS))
			eq(t, s.Rewrite[1].Continue, true)
		}},
		{"rewrite ttl forms", ". {\nrewrite ttl a.org 30-300\nrewrite ttl regex .*\\.b -30\nrewrite ttl suffix c. 30-\nrewrite ttl d. 15\n}", func(t *testing.T, s Server) {
			r := s.Rewrite
			eq(t, [2]uint32{r[0].TTLMin, r[0].TTLMax}, [2]uint32{30, 300})
			eq(t, [3]any{r[1].Match, r[1].TTLMin, r[1].TTLMax}, [3]any{"regex", uint32(0), uint32(30)})
			eq(t, [2]uint32{r[2].TTLMin, r[2].TTLMax}, [2]uint32{30, 2147483647})
			eq(t, [2]uint32{r[3].TTLMin, r[3].TTLMax}, [2]uint32{15, 15})
		}},
		{"rewrite cname", ". {\nrewrite cname A.cdn.net. b.cdn.com.\nrewrite cname regex (.*)\\.cdn\\.net\\. {1}.other.com.\n}", func(t *testing.T, s Server) {
			eq(t, s.Rewrite[0], RewriteRule{Field: "cname", Match: "exact", From: "a.cdn.net.", To: "b.cdn.com.", Line: 2})
			eq(t, s.Rewrite[1].Match, "regex")
		}},
		{"rewrite edns0", ". {\nrewrite edns0 local set 0xffee 0x6162\nrewrite edns0 local append 1 {client_ip} revert\nrewrite edns0 subnet set 24 56\nrewrite edns0 nsid unset\nrewrite edns0 local set 2 {a/b}\n}", func(t *testing.T, s Server) {
			eq(t, *s.Rewrite[0].EDNS0, EDNS0Rule{Type: "local", Action: "set", Code: 0xffee, Data: []byte("ab")})
			eq(t, *s.Rewrite[1].EDNS0, EDNS0Rule{Type: "local", Action: "append", Code: 1, Variable: "{client_ip}", Revert: true})
			eq(t, *s.Rewrite[2].EDNS0, EDNS0Rule{Type: "subnet", Action: "set", V4Bits: 24, V6Bits: 56})
			eq(t, *s.Rewrite[3].EDNS0, EDNS0Rule{Type: "nsid", Action: "unset"})
			eq(t, s.Rewrite[4].EDNS0.Variable, "{a/b}")
		}},
		{"rewrite rcode", ". {\nrewrite rcode regex (.*)\\.a\\.org SERVFAIL 0\n}", func(t *testing.T, s Server) {
			eq(t, [2]int{s.Rewrite[0].RcodeFrom, s.Rewrite[0].RcodeTo}, [2]int{dns.RcodeServerFailure, 0})
		}},
		{"template with everything", "example.org {\ntemplate IN A a.example.org {\nmatch ^(?P<x>.*)\\.a\\.example\\.org\\.$\nanswer \"{{ .Name }} 60 IN A 10.0.0.1\"\nadditional \"x. 5 IN TXT hi\"\nauthority \"a.example.org. 60 IN NS ns.\"\nrcode NXDOMAIN\nederror 21 blocked\nfallthrough\nupstream\n}\ntemplate ANY AAAA\n}", func(t *testing.T, s Server) {
			eq(t, len(s.Templates), 2)
			eq(t, s.Templates[0], Template{Class: dns.ClassINET, Type: dns.TypeA, Zones: []string{"a.example.org."},
				Match: []string{`^(?P<x>.*)\.a\.example\.org\.$`}, Answer: []string{"{{ .Name }} 60 IN A 10.0.0.1"},
				Additional: []string{"x. 5 IN TXT hi"}, Authority: []string{"a.example.org. 60 IN NS ns."},
				Rcode: dns.RcodeNameError, EDE: &EDE{Code: 21, Reason: "blocked"}, Fallthrough: []string{"."}, Line: 2})
			eq(t, s.Templates[1], Template{Class: dns.ClassANY, Type: dns.TypeAAAA, Zones: []string{"example.org."}, Match: []string{".*"}, Line: 12})
		}},
		{"dns64 default", ". {\ndns64\n}", func(t *testing.T, s Server) {
			eq(t, *s.DNS64, DNS64{Prefix: netip.MustParsePrefix("64:ff9b::/96")})
		}},
		{"dns64 options", ". {\ndns64 64:1337::/64 {\ntranslate_all\nallow_ipv4\n}\n}", func(t *testing.T, s Server) {
			eq(t, *s.DNS64, DNS64{Prefix: netip.MustParsePrefix("64:1337::/64"), TranslateAll: true, AllowIPv4: true})
		}},
		{"dns64 prefix option", ". {\ndns64 {\nprefix 2001:db8::/32\n}\n}", func(t *testing.T, s Server) {
			eq(t, s.DNS64.Prefix, netip.MustParsePrefix("2001:db8::/32"))
		}},
		{"loadbalance", ". {\nloadbalance\n}", func(t *testing.T, s Server) { eq(t, *s.LoadBalance, LoadBalance{}) }},
		{"loadbalance prefer", ". {\nloadbalance round_robin {\nprefer 10.0.0.0/8 fd00::1/64\n}\n}", func(t *testing.T, s Server) {
			eq(t, s.LoadBalance.Prefer, []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("fd00::/64")})
		}},
		{"loadbalance weighted", ". {\nloadbalance weighted /etc/w {\nreload 10s\n}\n}", func(t *testing.T, s Server) {
			eq(t, *s.LoadBalance, LoadBalance{WeightFile: "/etc/w", WeightReload: 10 * time.Second})
		}},
		{"loadbalance weighted default reload", ". {\nloadbalance weighted w\n}", func(t *testing.T, s Server) {
			eq(t, *s.LoadBalance, LoadBalance{WeightFile: "w", WeightReload: 30 * time.Second})
		}},
		{"whoami", ". {\nwhoami\n}", func(t *testing.T, s Server) { eq(t, s.Whoami, true) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := Parse(tc.text, testOpts())
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, cfg.Servers[0])
		})
	}
}

// TestParseAnswerPluginRefusals checks that what CoreDNS refuses, and what
// the agent does not support, is refused with the line.
func TestParseAnswerPluginRefusals(t *testing.T) {
	for _, tc := range []struct{ name, text, want string }{
		{"hosts twice", ". {\nhosts\nhosts\n}", `Corefile:3: plugin "hosts" can only be used once per server block`},
		{"hosts bad ttl", ". {\nhosts {\nttl 0\n}\n}", `Corefile:3: hosts ttl "0": want a number of seconds between 1 and 65535`},
		{"hosts ttl extra", ". {\nhosts {\nttl 5 6\n}\n}", `Corefile:3: hosts ttl: wrong number of arguments...`},
		{"hosts bad reload", ". {\nhosts {\nreload -1s\n}\n}", `Corefile:3: hosts reload "-1s": want a non-negative duration`},
		{"hosts line after fallthrough", ". {\nhosts {\nfallthrough\n10.0.0.1 a\n}\n}", `Corefile:4: unknown option "10.0.0.1" of plugin "hosts"...`},
		{"hosts bad zone", ". {\nhosts /etc/hosts a..b\n}", `Corefile:2: plugin "hosts": "a..b" is not a valid zone name`},
		{"rewrite edns0 server_ip", ". {\nrewrite edns0 local set 0xffee {server_ip}\n}", `Corefile:2: plugin "rewrite": EDNS0 variable {server_ip} is not supported`},
		{"rewrite edns0 bad variable", ". {\nrewrite edns0 local set 1 {nope}\n}", `Corefile:2: plugin "rewrite": unsupported variable name "{nope}"`},
		{"rewrite edns0 bad action", ". {\nrewrite edns0 local put 1 x\n}", `Corefile:2: plugin "rewrite": invalid action: "put"`},
		{"rewrite edns0 bad code", ". {\nrewrite edns0 local set 0x1ffff x\n}", `Corefile:2: plugin "rewrite": EDNS0 local code "0x1ffff"...`},
		{"rewrite edns0 bad hex", ". {\nrewrite edns0 local set 1 0xzz\n}", `Corefile:2: plugin "rewrite": EDNS0 local data "0xzz"...`},
		{"rewrite edns0 subnet length", ". {\nrewrite edns0 subnet set 33 56\n}", `Corefile:2: plugin "rewrite": invalid IPv4 bit mask length 33`},
		{"rewrite edns0 nsid args", ". {\nrewrite edns0 nsid set x\n}", `Corefile:2: plugin "rewrite": EDNS0 NSID rules can accept no more than one arg`},
		{"rewrite edns0 unset arity", ". {\nrewrite edns0 local unset\n}", `Corefile:2: plugin "rewrite": local unset action requires exactly 2 arguments`},
		{"rewrite edns0 unknown type", ". {\nrewrite edns0 cookie set x\n}", `Corefile:2: plugin "rewrite": invalid rule type "cookie"`},
		{"rewrite cname arity", ". {\nerrors\nrewrite cname a.\n}", `Corefile:3: plugin "rewrite": wrong number of arguments (1) for a cname rule`},
		{"rewrite cname bad type", ". {\nrewrite cname fuzzy a. b.\n}", `Corefile:2: plugin "rewrite": unknown cname rewrite type: fuzzy`},
		{"rewrite unknown field", ". {\nrewrite foo a b\n}", `Corefile:2: plugin "rewrite": invalid rule type "foo"`},
		{"rewrite answer first", ". {\nrewrite answer name a b\n}", `Corefile:2: plugin "rewrite": response rewrites must begin with a name rule`},
		{"rewrite too few", ". {\nrewrite name a\n}", `Corefile:2: plugin "rewrite": too few arguments for a name rule`},
		{"rewrite bad match", ". {\nrewrite name fuzzy a b\n}", `Corefile:2: plugin "rewrite": name rule supports only...`},
		{"rewrite bad regex", ". {\nrewrite name regex ( b\n}", `Corefile:2: plugin "rewrite": invalid regex matching pattern: (`},
		{"rewrite too many groups", ". {\nrewrite name regex (a) {1}{2}\n}", `Corefile:2: plugin "rewrite": the rewrite regex pattern...`},
		{"rewrite auto and name", ". {\nrewrite name regex (a) b answer auto answer name a b\n}", `Corefile:2: plugin "rewrite": auto name answer rule cannot be combined...`},
		{"rewrite junk after name", ". {\nrewrite name regex (a) b c d\n}", `Corefile:2: plugin "rewrite": exceeded the number of arguments...`},
		{"rewrite type arity", ". {\nrewrite type A\n}", `Corefile:2: plugin "rewrite": type rules must have exactly two arguments`},
		{"rewrite bad type", ". {\nrewrite type A FOO\n}", `Corefile:2: plugin "rewrite": invalid type "FOO"`},
		{"rewrite bad ttl", ". {\nrewrite ttl a.org -\n}", `Corefile:2: plugin "rewrite": invalid TTL '-' for a ttl rule`},
		{"rewrite ttl range reversed", ". {\nrewrite ttl a.org 5-1\n}", `Corefile:2: plugin "rewrite": invalid TTL '5-1' for a ttl rule`},
		{"rewrite bad rcode", ". {\nrewrite rcode a.org 99 0\n}", `Corefile:2: plugin "rewrite": invalid matching RCODE '99' for a rcode rule`},
		{"rewrite args and block", ". {\nrewrite name a b {\nx\n}\n}", `Corefile:3: rewrite: a rule with arguments takes no block (found "x")`},
		{"template no type", ". {\ntemplate IN\n}", `Corefile:2: plugin "template": want CLASS TYPE...`},
		{"template bad class", ". {\ntemplate XX A\n}", `Corefile:2: plugin "template": invalid query class XX`},
		{"template bad regex", ". {\ntemplate IN A {\nmatch (\n}\n}", `Corefile:3: template match: could not parse regex...`},
		{"template bad template", ". {\ntemplate IN A {\nanswer \"{{ .Name \"\n}\n}", `Corefile:3: template answer: could not compile template...`},
		{"template bad rcode", ". {\ntemplate IN A {\nrcode NOPE\n}\n}", `Corefile:3: template rcode: unknown rcode NOPE`},
		{"template unknown option", ". {\ntemplate IN A {\nfoo\n}\n}", `Corefile:3: unknown option "foo" of plugin "template"`},
		{"template bad ederror", ". {\ntemplate IN A {\nederror x\n}\n}", `Corefile:3: template ederror: extended DNS error code "x"...`},
		{"dns64 bad prefix", ". {\ndns64 10.0.0.0/8\n}", `Corefile:2: dns64 prefix "10.0.0.0/8": not an IPv6 prefix`},
		{"dns64 bad length", ". {\ndns64 {\nprefix 64:ff9b::/97\n}\n}", `Corefile:3: dns64 prefix "64:ff9b::/97": invalid prefix length...`},
		{"dns64 unknown", ". {\ndns64 {\nfoo\n}\n}", `Corefile:3: unknown option "foo" of plugin "dns64"`},
		{"dns64 two args", ". {\ndns64 a b\n}", `Corefile:2: dns64: wrong number of arguments...`},
		{"loadbalance weighted without file", ". {\nloadbalance weighted\n}", `Corefile:2: plugin "loadbalance": weighted wants one weight file...`},
		{"loadbalance weighted prefer", ". {\nloadbalance weighted /w {\nprefer 10.0.0.0/8\n}\n}", `Corefile:3: unknown option "prefer" of plugin "loadbalance" weighted`},
		{"loadbalance weighted bad reload", ". {\nloadbalance weighted /w {\nreload x\n}\n}", `Corefile:3: loadbalance reload "x": want a non-negative duration`},
		{"loadbalance unknown policy", ". {\nloadbalance foo\n}", `Corefile:2: plugin "loadbalance": unknown policy: foo`},
		{"loadbalance bad cidr", ". {\nloadbalance {\nprefer 10.0.0.0/33\n}\n}", `Corefile:3: loadbalance prefer: invalid CIDR...`},
		{"whoami args", ". {\nwhoami x\n}", `Corefile:2: whoami: wrong number of arguments...`},
		{"whoami twice", ". {\nwhoami\nwhoami\n}", `Corefile:3: plugin "whoami" can only be used once per server block`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse(tc.text, testOpts())
			if err == nil {
				t.Fatalf("Parse(%q) succeeded, want error %q", tc.text, tc.want)
			}
			got := err.Error()
			if prefix, ok := strings.CutSuffix(tc.want, "..."); ok {
				if !strings.HasPrefix(got, prefix) {
					t.Errorf("error %q, want prefix %q", got, prefix)
				}
			} else if got != tc.want {
				t.Errorf("error %q, want %q", got, tc.want)
			}
		})
	}
}
