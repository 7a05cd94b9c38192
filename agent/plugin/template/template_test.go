package template

import (
	"context"
	"os"
	"reflect"
	"testing"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/nodelocaldns/nodelocaldns/agent/corefile"
	"github.com/nodelocaldns/nodelocaldns/agent/plugin"
	"github.com/nodelocaldns/nodelocaldns/agent/plugin/plugintest"
)

func TestTemplate(t *testing.T) {
	type want struct {
		next                bool
		rcode               int // of the reply or of the rcode-only answer
		answer, extra, auth []string
	}
	for _, tc := range []struct {
		name  string
		block string
		qname string
		qtype uint16
		want  want
	}{
		{"no IPv6 (community charts' NODATA for AAAA)", ". {\ntemplate ANY AAAA {\nrcode NOERROR\n}\n}", "x.org", dns.TypeAAAA,
			want{answer: []string{}}},
		{"other types go on", ". {\ntemplate ANY AAAA {\nrcode NOERROR\n}\n}", "x.org", dns.TypeA, want{next: true}},
		{"everything NXDOMAIN", ". {\ntemplate ANY ANY {\nrcode NXDOMAIN\n}\n}", "x.org", dns.TypeMX, want{rcode: dns.RcodeNameError, answer: []string{}}},
		{"regex groups and data", "example.org {\ntemplate IN A {\nmatch ^ip-(?P<a>[0-9]+)-(?P<b>[0-9]+)\\.example\\.org\\.$\nanswer \"{{ .Name }} 60 IN A 10.0.{{ .Group.a }}.{{ index .Match 2 }}\"\nadditional \"{{ .Name }} 60 IN TXT {{ .Type }}-{{ .Class }}-{{ .Zone }}-{{ .Remote }}\"\nauthority \"example.org. 60 IN NS ns.example.org.\"\n}\n}",
			"IP-1-2.example.org", dns.TypeA, want{
				answer: []string{"ip-1-2.example.org.\t60\tIN\tA\t10.0.1.2"},
				extra:  []string{"ip-1-2.example.org.\t60\tIN\tTXT\t\"A-IN-example.org.-10.0.0.9\""},
				auth:   []string{"example.org.\t60\tIN\tNS\tns.example.org."}}},
		{"no regex match: SERVFAIL", "example.org {\ntemplate IN A {\nmatch ^ip-\n}\n}", "x.example.org", dns.TypeA, want{rcode: dns.RcodeServerFailure}},
		{"no regex match with fallthrough", "example.org {\ntemplate IN A {\nmatch ^ip-\nfallthrough\n}\n}", "x.example.org", dns.TypeA, want{next: true}},
		{"next template after a fallthrough", "example.org {\ntemplate IN A {\nmatch ^ip-\nfallthrough\n}\ntemplate IN A {\nanswer \"{{ .Name }} 5 IN A 10.1.1.1\"\n}\n}", "x.example.org", dns.TypeA,
			want{answer: []string{"x.example.org.\t5\tIN\tA\t10.1.1.1"}}},
		{"outside the zones", ". {\ntemplate IN A example.org\n}", "x.net", dns.TypeA, want{next: true}},
		{"class of an ANY query is the template's", ". {\ntemplate IN ANY {\nanswer \"{{ .Name }} 5 IN TXT {{ .Type }}\"\n}\n}", "x.org", dns.TypeANY,
			want{answer: []string{"x.org.\t5\tIN\tTXT\t\"ANY\""}}},
		{"rcode SERVFAIL is not written", ". {\ntemplate IN A {\nrcode SERVFAIL\n}\n}", "x.org", dns.TypeA, want{rcode: dns.RcodeServerFailure}},
		{"bad record: SERVFAIL", ". {\ntemplate IN A {\nanswer \"{{ .Name }} 5 IN A not-an-ip\"\n}\n}", "x.org", dns.TypeA, want{rcode: dns.RcodeServerFailure}},
		{"bad template: SERVFAIL", ". {\ntemplate IN A {\nanswer \"{{ index .Match 5 }}\"\n}\n}", "x.org", dns.TypeA, want{rcode: dns.RcodeServerFailure}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := plugintest.Server(t, tc.block)
			h, err := New(s.Templates, nil)
			if err != nil {
				t.Fatal(err)
			}
			next := &plugintest.Next{}
			m, err := plugintest.Run(h, plugintest.Query(tc.qname, tc.qtype, ""), next)
			if (next.Calls > 0) != tc.want.next {
				t.Fatalf("next called %d times, want %v (err %v)", next.Calls, tc.want.next, err)
			}
			if tc.want.next {
				return
			}
			if err != nil {
				if rc := plugin.Rcode(err); rc != tc.want.rcode || tc.want.answer != nil {
					t.Fatalf("rcode-only answer %s (%v), want %+v", dns.RcodeToString[rc], err, tc.want)
				}
				return
			}
			if m.Rcode != tc.want.rcode || !m.Authoritative {
				t.Errorf("rcode %d AA %v, want %d and AA", m.Rcode, m.Authoritative, tc.want.rcode)
			}
			for _, sec := range []struct {
				got  []dns.RR
				want []string
			}{{m.Answer, tc.want.answer}, {m.Extra, tc.want.extra}, {m.Ns, tc.want.auth}} {
				want := sec.want
				if want == nil {
					want = []string{}
				}
				if got := plugintest.RRs(sec.got); !reflect.DeepEqual(got, want) {
					t.Errorf("got\n%q\nwant\n%q", got, want)
				}
			}
		})
	}
}

// TestTemplateCNAMEAndEDE checks that a CNAME answer to an A query is
// followed with a lookup, the extended error, and the metrics.
func TestTemplateCNAMEAndEDE(t *testing.T) {
	reg := prometheus.NewRegistry()
	metrics, err := NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	s := plugintest.Server(t, "example.org {\ntemplate IN A {\nanswer \"{{ .Name }} 60 IN CNAME target.example.net.\"\nederror 21 \"blocked here\"\n}\ntemplate IN MX {\nanswer \"{{ .Name }} 60 IN MX x\"\n}\n}")
	h, err := New(s.Templates, metrics)
	if err != nil {
		t.Fatal(err)
	}
	r := plugintest.Query("a.example.org", dns.TypeA, "")
	var looked string
	r.Lookup = func(_ context.Context, name string, qtype uint16) (*dns.Msg, error) {
		looked = name + "/" + dns.TypeToString[qtype]
		m := new(dns.Msg)
		m.SetQuestion(name, qtype)
		rr, _ := dns.NewRR(name + " 30 IN A 192.0.2.7")
		m.Answer = []dns.RR{rr}
		return m, nil
	}
	m, err := plugintest.Run(h, r, &plugintest.Next{})
	if err != nil {
		t.Fatal(err)
	}
	if looked != "target.example.net./A" || len(m.Answer) != 2 || m.Answer[1].(*dns.A).A.String() != "192.0.2.7" {
		t.Errorf("lookup %q, answer %v", looked, m.Answer)
	}
	opt := m.IsEdns0()
	if opt == nil || len(opt.Option) != 1 || opt.Option[0].(*dns.EDNS0_EDE).InfoCode != 21 || opt.Option[0].(*dns.EDNS0_EDE).ExtraText != "blocked here" {
		t.Errorf("extended error: %v", opt)
	}
	if _, err := plugintest.Run(h, plugintest.Query("b.example.org", dns.TypeMX, ""), &plugintest.Next{}); err == nil {
		t.Error("bad MX template answered")
	}
	if got := testutil.ToFloat64(metrics.matches.WithLabelValues("dns://:53", "example.org.", "", "IN", "A")); got != 1 {
		t.Errorf("matches_total %v, want 1", got)
	}
	if got := testutil.CollectAndCount(metrics.rrFailures); got != 1 {
		t.Errorf("rr_failures_total has %d series, want 1", got)
	}
}

// FuzzTemplate checks that no template text or query name makes the parser
// or the plugin panic.
func FuzzTemplate(f *testing.F) {
	f.Add(`{{ .Name }} 60 IN A 10.0.0.{{ index .Match 1 }}`, `^(\d+)\.`, "1.example.org.")
	f.Add(`{{ .Name }} 60 IN TXT "{{ .Remote }} {{ parseInt "12" 10 8 }}"`, `.*`, "x.")
	f.Fuzz(func(t *testing.T, text, match, qname string) {
		for _, s := range []string{text, match} {
			for _, c := range s {
				if c == '"' || c == '\n' {
					return
				}
			}
		}
		cfg, err := corefileTemplates(". {\ntemplate IN ANY {\nmatch \"" + match + "\"\nanswer \"" + text + "\"\n}\n}")
		if err != nil {
			return
		}
		h, err := New(cfg, nil)
		if err != nil {
			t.Fatalf("parsed template does not compile: %v", err)
		}
		if _, ok := dns.IsDomainName(qname); !ok {
			qname = "x.example.org."
		}
		m, err := plugintest.Run(h, plugintest.Query(qname, dns.TypeA, ""), &plugintest.Next{})
		if err == nil && m == nil {
			t.Fatal("no reply and no error")
		}
	})
}

func corefileTemplates(text string) ([]corefile.Template, error) {
	cfg, err := corefile.Parse(text, corefile.ParseOptions{ReadFile: func(string) ([]byte, error) { return nil, os.ErrNotExist }})
	if err != nil {
		return nil, err
	}
	return cfg.Servers[0].Templates, nil
}
