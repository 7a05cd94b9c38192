package corefile

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// fakeInterfaces stands for the host's interfaces in tests: eth0 with an
// IPv4, an IPv6 and an IPv6 link-local address, lo with the loopbacks,
// broken0 whose addresses cannot be listed.
func fakeInterfaces(name string) ([]netip.Addr, bool, error) {
	switch name {
	case "eth0":
		return []netip.Addr{netip.MustParseAddr("192.0.2.7"), netip.MustParseAddr("2001:db8::7"), netip.MustParseAddr("fe80::7")}, true, nil
	case "lo":
		return []netip.Addr{netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("::1")}, true, nil
	case "broken0":
		return nil, true, errors.New("permission denied")
	}
	return nil, false, nil
}

func TestParsePluginOptions(t *testing.T) {
	for _, tc := range []struct {
		name  string
		text  string
		check func(t *testing.T, s Server)
	}{
		{"errors stacktrace", "errors {\nstacktrace\n}", func(t *testing.T, s Server) {
			eq(t, s.Errors, true)
			eq(t, s.ErrorStacktrace, true)
		}},
		{"errors consolidate", "errors {\nconsolidate 30s \"^read udp .* i/o timeout$\"\nconsolidate 5m ^failed error\n}", func(t *testing.T, s Server) {
			eq(t, s.ErrorRules, []ErrorRule{{30 * time.Second, "^read udp .* i/o timeout$", "warning"}, {5 * time.Minute, "^failed", "error"}})
		}},
		{"log default", "log", func(t *testing.T, s Server) {
			eq(t, s.Log, true)
			eq(t, s.LogRules, []LogRule{{Name: ".", Format: CommonLogFormat}})
		}},
		{"log one name", "log example.org", func(t *testing.T, s Server) {
			eq(t, s.LogRules, []LogRule{{Name: "example.org.", Format: CommonLogFormat}})
		}},
		{"log names and format", "log a.org b.org \"{name} {rcode}\"", func(t *testing.T, s Server) {
			eq(t, s.LogRules, []LogRule{{Name: "a.org.", Format: "{name} {rcode}"}, {Name: "b.org.", Format: "{name} {rcode}"}})
		}},
		{"log combined", "log . {combined}", func(t *testing.T, s Server) {
			eq(t, s.LogRules, []LogRule{{Name: ".", Format: CombinedLogFormat}})
		}},
		{"log classes", "log . {\nclass denial error\n}", func(t *testing.T, s Server) {
			eq(t, s.LogRules, []LogRule{{Name: ".", Format: CommonLogFormat, Classes: []string{"denial", "error"}}})
		}},
		{"log class all wins", "log {\nclass denial all\n}", func(t *testing.T, s Server) {
			eq(t, s.LogRules, []LogRule{{Name: ".", Format: CommonLogFormat}})
		}},
		{"log twice", "log a.org\nlog b.org {\nclass success\n}", func(t *testing.T, s Server) {
			eq(t, s.LogRules, []LogRule{{Name: "a.org.", Format: CommonLogFormat}, {Name: "b.org.", Format: CommonLogFormat, Classes: []string{"success"}}})
		}},
		{"bufsize default", "bufsize", func(t *testing.T, s Server) { eq(t, s.BufSize, 1232) }},
		{"bufsize 4096", "bufsize 4096", func(t *testing.T, s Server) { eq(t, s.BufSize, 4096) }},
		{"timeouts", "timeouts {\nread 10\nwrite 30s\nidle 1m\n}", func(t *testing.T, s Server) {
			eq(t, s.Timeouts, &Timeouts{Read: 10 * time.Second, Write: 30 * time.Second, Idle: time.Minute})
		}},
		{"timeouts idle only", "timeouts {\nidle 2m\n}", func(t *testing.T, s Server) { eq(t, s.Timeouts, &Timeouts{Idle: 2 * time.Minute}) }},
		{"debug", "debug", func(t *testing.T, s Server) { eq(t, s.Debug, true) }},
		{"pprof default", "pprof", func(t *testing.T, s Server) {
			eq(t, s.Pprof, "localhost:6053")
			eq(t, s.PprofBlockRate, 0)
		}},
		{"pprof block", "pprof 127.0.0.1:6060 {\nblock\n}", func(t *testing.T, s Server) {
			eq(t, s.Pprof, "127.0.0.1:6060")
			eq(t, s.PprofBlockRate, 1)
		}},
		{"pprof block rate", "pprof {\nblock 100\n}", func(t *testing.T, s Server) { eq(t, s.PprofBlockRate, 100) }},
		{"bind interface", "bind eth0", func(t *testing.T, s Server) { eq(t, s.Bind, []string{"192.0.2.7", "2001:db8::7"}) }},
		{"bind interface and address", "bind lo 10.0.0.1", func(t *testing.T, s Server) { eq(t, s.Bind, []string{"127.0.0.1", "::1", "10.0.0.1"}) }},
		{"bind except address", "bind eth0 {\nexcept 2001:db8::7\n}", func(t *testing.T, s Server) { eq(t, s.Bind, []string{"192.0.2.7"}) }},
		{"bind except interface", "bind eth0 lo {\nexcept lo\n}", func(t *testing.T, s Server) { eq(t, s.Bind, []string{"192.0.2.7", "2001:db8::7"}) }},
		{"bind except is per line", "bind 10.0.0.1 {\nexcept 10.0.0.2\n}\nbind 10.0.0.2", func(t *testing.T, s Server) { eq(t, s.Bind, []string{"10.0.0.1", "10.0.0.2"}) }},
		{"cache keepttl", "cache {\nkeepttl\n}", func(t *testing.T, s Server) { eq(t, s.Cache.KeepTTL, true) }},
		{"cache disable success all", "cache {\ndisable success\n}", func(t *testing.T, s Server) {
			eq(t, s.Cache.DisableSuccess, []string{"."})
			eq(t, s.Cache.DisableDenial, []string(nil))
		}},
		{"cache disable denial zones", "cache {\ndisable denial Example.org b.org.\n}", func(t *testing.T, s Server) {
			eq(t, s.Cache.DisableDenial, []string{"example.org.", "b.org."})
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := Parse(". {\n"+tc.text+"\n}", testOpts())
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, cfg.Servers[0])
		})
	}
}

func TestParsePluginOptionRefusals(t *testing.T) {
	for _, tc := range []struct{ name, text, want string }{
		{"trace", ". {\ntrace zipkin localhost:9411\n}", `Corefile:2: plugin "trace" is not supported: the agent has no Zipkin or Datadog tracing client...`},
		{"bare trace", ". {\ntrace\n}", `Corefile:2: plugin "trace" is not supported...`},
		{"errors unknown option", ". {\nerrors {\nverbose\n}\n}", `Corefile:3: unknown option "verbose" of plugin "errors"`},
		{"errors consolidate args", ". {\nerrors {\nconsolidate 5m\n}\n}", `Corefile:3: errors consolidate: wrong number of arguments...`},
		{"errors consolidate duration", ". {\nerrors {\nconsolidate soon x\n}\n}", `Corefile:3: errors consolidate duration "soon": want a positive duration`},
		{"errors consolidate level", ". {\nerrors {\nconsolidate 1m x fatal\n}\n}", `Corefile:3: errors consolidate level "fatal": want warning, error, info or debug`},
		{"errors twice", ". {\nerrors\nerrors\n}", `Corefile:3: plugin "errors" can only be used once per server block`},
		{"log bad class", ". {\nlog {\nclass noisy\n}\n}", `Corefile:3: log class "noisy": want all, success, denial or error`},
		{"log class empty", ". {\nlog {\nclass\n}\n}", `Corefile:3: log class: wrong number of arguments...`},
		{"log unknown option", ". {\nlog {\nformat x\n}\n}", `Corefile:3: unknown option "format" of plugin "log"`},
		{"log bad name", ". {\nlog a..b\n}", `Corefile:2: plugin "log": "a..b" is not a valid zone name`},
		{"bufsize small", ". {\nbufsize 511\n}", `Corefile:2: bufsize "511": want a number between 512 and 4096`},
		{"bufsize large", ". {\nbufsize 4097\n}", `Corefile:2: bufsize "4097": want a number between 512 and 4096`},
		{"bufsize two", ". {\nbufsize 512 1024\n}", `Corefile:2: bufsize: wrong number of arguments...`},
		{"timeouts empty", ". {\ntimeouts\n}", `Corefile:2: plugin "timeouts": a block with at least one timeout is required`},
		{"timeouts too short", ". {\ntimeouts {\nread 500ms\n}\n}", `Corefile:3: timeouts read "500ms": want a duration between 1s and 24h0m0s`},
		{"timeouts too long", ". {\ntimeouts {\nidle 25h\n}\n}", `Corefile:3: timeouts idle "25h": want a duration between 1s and 24h0m0s`},
		{"timeouts unknown", ". {\ntimeouts {\nconnect 5s\n}\n}", `Corefile:3: unknown option "connect" of plugin "timeouts"`},
		{"timeouts differ between blocks", "a.org {\ntimeouts {\nidle 5s\n}\n}\nb.org {\ntimeouts {\nidle 6s\n}\n}", `Corefile:6: plugin "timeouts": differs from the block at line 1...`},
		{"debug args", ". {\ndebug on\n}", `Corefile:2: debug: wrong number of arguments...`},
		{"pprof bad address", ". {\npprof 6060\n}", `Corefile:2: plugin "pprof": address "6060": want host:port`},
		{"pprof bad rate", ". {\npprof {\nblock 0\n}\n}", `Corefile:3: pprof block rate "0": want a positive number`},
		{"pprof unknown option", ". {\npprof {\nmutex\n}\n}", `Corefile:3: unknown option "mutex" of plugin "pprof"`},
		{"bind interface error", ". {\nbind broken0\n}", `Corefile:2: plugin "bind": interface "broken0": permission denied`},
		{"bind except everything", ". {\nbind lo {\nexcept 127.0.0.1 ::1\n}\n}", `Corefile:2: plugin "bind": no address left to listen on`},
		{"bind except empty", ". {\nbind lo {\nexcept\n}\n}", `Corefile:3: bind except: needs at least one address or interface name`},
		{"cache disable kind", ". {\ncache {\ndisable all\n}\n}", `Corefile:3: cache disable "all": want success or denial`},
		{"cache disable empty", ". {\ncache {\ndisable\n}\n}", `Corefile:3: cache disable: wrong number of arguments...`},
		{"cache keepttl arg", ". {\ncache {\nkeepttl 5\n}\n}", `Corefile:3: cache keepttl: wrong number of arguments...`},
		{"serve_stale verify timeout (after CoreDNS 1.13.2)", ". {\ncache {\nserve_stale 1h verify 100ms\n}\n}", `Corefile:3: cache serve_stale: wrong number of arguments...`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse(tc.text, testOpts())
			if err == nil {
				t.Fatalf("accepted, want %q", tc.want)
			}
			if prefix, ok := strings.CutSuffix(tc.want, "..."); ok {
				if !strings.HasPrefix(err.Error(), prefix) {
					t.Fatalf("error %q, want prefix %q", err, prefix)
				}
			} else if err.Error() != tc.want {
				t.Fatalf("error %q, want %q", err, tc.want)
			}
		})
	}
}
