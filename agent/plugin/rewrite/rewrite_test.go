package rewrite

import (
	"context"
	"net/netip"
	"os"
	"reflect"
	"strings"
	"testing"

	"github.com/miekg/dns"

	"github.com/nodelocaldns/nodelocaldns/agent/corefile"
	"github.com/nodelocaldns/nodelocaldns/agent/plugin"
	"github.com/nodelocaldns/nodelocaldns/agent/plugin/plugintest"
)

// upstream answers as a zone would: the records given for a name, with
// the query's name and type filled in ("@" is the question's name).
func upstream(rcode int, records ...string) func(*dns.Msg) *dns.Msg {
	return func(req *dns.Msg) *dns.Msg {
		m := new(dns.Msg)
		m.SetReply(req)
		m.Rcode = rcode
		for _, s := range records {
			rr, err := dns.NewRR(strings.ReplaceAll(s, "@", req.Question[0].Name))
			if err != nil {
				panic(err)
			}
			m.Answer = append(m.Answer, rr)
		}
		return m
	}
}

func TestRewrite(t *testing.T) {
	for _, tc := range []struct {
		name     string
		rules    string // the rewrite lines of the block
		qname    string
		qtype    uint16
		noEDNS   bool
		upstream func(*dns.Msg) *dns.Msg
		seen     string   // the question the next plugin saw (name/type)
		rcode    int      // of the reply
		answer   []string // the reply's records
	}{
		{"exact, answer rewritten back", "rewrite name a.example.org b.example.org", "A.example.org", dns.TypeA,
			false, upstream(0, "@ 60 IN A 10.0.0.1"), "b.example.org./A", 0, []string{"a.example.org.\t60\tIN\tA\t10.0.0.1"}},
		{"exact, subdomain of the new name mapped back", "rewrite name a.example.org b.example.org", "a.example.org", dns.TypeA,
			false, upstream(0, "@ 60 IN CNAME x.b.example.org.", "x.b.example.org. 60 IN A 10.0.0.2"), "b.example.org./A", 0,
			[]string{"a.example.org.\t60\tIN\tCNAME\tx.a.example.org.", "x.a.example.org.\t60\tIN\tA\t10.0.0.2"}},
		{"no match", "rewrite name a.example.org b.example.org", "c.example.org", dns.TypeA,
			false, upstream(0, "@ 60 IN A 10.0.0.1"), "c.example.org./A", 0, []string{"c.example.org.\t60\tIN\tA\t10.0.0.1"}},
		{"suffix with answer auto", "rewrite name suffix .a.org .b.org answer auto", "x.a.org", dns.TypeA,
			false, upstream(0, "@ 60 IN CNAME y.b.org.", "y.b.org. 60 IN A 10.0.0.3"), "x.b.org./A", 0,
			[]string{"x.a.org.\t60\tIN\tCNAME\ty.a.org.", "y.a.org.\t60\tIN\tA\t10.0.0.3"}},
		{"prefix without answer rewrite", "rewrite name prefix foo bar", "foo.x.org", dns.TypeA,
			false, upstream(0, "@ 60 IN A 10.0.0.4"), "bar.x.org./A", 0, []string{"bar.x.org.\t60\tIN\tA\t10.0.0.4"}},
		{"substring", "rewrite name substring us-west-1.example.org us-west-1.consul", "ftp.us-west-1.example.org", dns.TypeA,
			false, upstream(0), "ftp.us-west-1.consul./A", 0, []string{}},
		{"regex with answer name", "rewrite stop {\nname regex (.*)-(us-west-1)\\.example\\.org {1}.service.{2}.consul\nanswer name (.*)\\.service\\.(us-west-1)\\.consul {1}-{2}.example.org\n}",
			"ftp-us-west-1.example.org", dns.TypeA, false, upstream(0, "@ 0 IN A 10.10.10.10"), "ftp.service.us-west-1.consul./A", 0,
			[]string{"ftp-us-west-1.example.org.\t0\tIN\tA\t10.10.10.10"}},
		{"answer value on SRV targets", "rewrite name regex (.*)\\.a\\.org {1}.b.org answer value (.*)\\.b\\.org\\. {1}.a.org",
			"_x._tcp.a.org", dns.TypeSRV, false, upstream(0, "@ 60 IN SRV 0 0 80 h.b.org."), "_x._tcp.b.org./SRV", 0,
			[]string{"_x._tcp.b.org.\t60\tIN\tSRV\t0 0 80 h.a.org."}},
		{"continue then stop", "rewrite continue name a.org b.org\nrewrite name b.org c.org\nrewrite name c.org d.org", "a.org", dns.TypeA,
			false, upstream(0, "@ 60 IN A 10.0.0.5"), "c.org./A", 0, []string{"a.org.\t60\tIN\tA\t10.0.0.5"}},
		{"type", "rewrite type ANY HINFO", "x.org", dns.TypeANY,
			false, upstream(0), "x.org./HINFO", 0, []string{}},
		{"ttl range", "rewrite ttl regex .*\\.org 30-300", "x.org", dns.TypeA,
			false, upstream(0, "@ 5 IN A 10.0.0.6", "@ 9999 IN A 10.0.0.7", "@ 60 IN A 10.0.0.8"), "x.org./A", 0,
			[]string{"x.org.\t30\tIN\tA\t10.0.0.6", "x.org.\t300\tIN\tA\t10.0.0.7", "x.org.\t60\tIN\tA\t10.0.0.8"}},
		{"ttl after a continue name rewrite matches the new name", "rewrite continue name a.org b.org\nrewrite ttl b.org 7", "a.org", dns.TypeA,
			false, upstream(0, "@ 60 IN A 10.0.0.9"), "b.org./A", 0, []string{"a.org.\t7\tIN\tA\t10.0.0.9"}},
		{"rcode with EDNS0 (the OPT record counts)", "rewrite rcode x.org SERVFAIL NOERROR", "x.org", dns.TypeA,
			false, upstream(dns.RcodeServerFailure), "x.org./A", 0, []string{}},
		{"rcode without records or EDNS0: unchanged, as CoreDNS", "rewrite rcode x.org SERVFAIL NOERROR", "x.org", dns.TypeA,
			true, upstream(dns.RcodeServerFailure), "x.org./A", dns.RcodeServerFailure, []string{}},
		{"rcode by number", "rewrite rcode suffix .org 3 0", "x.org", dns.TypeA,
			true, upstream(dns.RcodeNameError, "@ 60 IN A 10.0.0.1"), "x.org./A", 0, []string{"x.org.\t60\tIN\tA\t10.0.0.1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := plugintest.Server(t, ". {\n"+tc.rules+"\n}")
			rw, err := New(s.Rewrite)
			if err != nil {
				t.Fatal(err)
			}
			r := plugintest.Query(tc.qname, tc.qtype, "")
			if tc.noEDNS {
				r.Msg.Extra = nil
			}
			orig := r.Msg.Question[0]
			next := &plugintest.Next{Reply: tc.upstream}
			m, err := plugintest.Run(rw, r, next)
			if err != nil {
				t.Fatal(err)
			}
			if got := next.Seen.Name + "/" + dns.TypeToString[next.Seen.Qtype]; got != tc.seen {
				t.Errorf("next saw %s, want %s", got, tc.seen)
			}
			if m.Question[0] != orig {
				t.Errorf("reply question %v, want %v", m.Question[0], orig)
			}
			if m.Rcode != tc.rcode {
				t.Errorf("rcode %s, want %s", dns.RcodeToString[m.Rcode], dns.RcodeToString[tc.rcode])
			}
			if got := plugintest.RRs(m.Answer); !reflect.DeepEqual(got, tc.answer) {
				t.Errorf("answer\n%q\nwant\n%q", got, tc.answer)
			}
		})
	}
}

// TestRewriteFailures checks an invalid rewritten name and a next plugin
// that answers with an rcode alone.
func TestRewriteFailures(t *testing.T) {
	s := plugintest.Server(t, ". {\nrewrite name regex (.*)\\.x\\.org {1}{1}{1}{1}{1}.y.org\n}")
	rw, err := New(s.Rewrite)
	if err != nil {
		t.Fatal(err)
	}
	long := strings.Repeat("a", 40)
	next := &plugintest.Next{}
	_, err = plugintest.Run(rw, plugintest.Query(long+".x.org", dns.TypeA, ""), next)
	if plugin.Rcode(err) != dns.RcodeServerFailure || next.Calls != 0 {
		t.Errorf("invalid name after rewrite: err %v, next called %d times", err, next.Calls)
	}

	s = plugintest.Server(t, ". {\nrewrite name a.org b.org\n}")
	if rw, err = New(s.Rewrite); err != nil {
		t.Fatal(err)
	}
	r := plugintest.Query("a.org", dns.TypeA, "")
	m, err := rw.ServeDNS(t.Context(), r, func(_ context.Context, r *plugin.Request) (*dns.Msg, error) {
		return nil, plugin.Fail(dns.RcodeServerFailure, nil)
	})
	if err != nil || m.Rcode != dns.RcodeServerFailure || m.Question[0].Name != "a.org." {
		t.Errorf("rcode-only answer after a stop rule: %v, %v; want a written SERVFAIL with the client's question", m, err)
	}
}

// FuzzRule checks that no rule text makes the parser or the rewrite panic,
// and that the reply always carries the client's question.
func FuzzRule(f *testing.F) {
	for _, s := range []string{
		"name a.org b.org", "continue name suffix .a .b answer auto", "name regex (.*)\\.a {1}.b answer name (.*)\\.b {1}.a answer value (.*) {1}",
		"ttl regex .* 1-2", "rcode x.org 2 0", "cname suffix .org. .net.", "edns0 local set 0xffee {client_ip}", "edns0 subnet append 24 56", "edns0 nsid set", "type A AAAA", "class CH IN", "name prefix a b", "name substring a b answer auto",
	} {
		f.Add(s, "x.a.org")
	}
	f.Fuzz(func(t *testing.T, rule, qname string) {
		if strings.ContainsAny(rule, "{}\n#\"`'\\$") && !strings.Contains(rule, "regex") {
			return
		}
		cfg, err := corefileParse(". {\nrewrite " + rule + "\n}")
		if err != nil || len(cfg) == 0 {
			return
		}
		rw, err := New(cfg)
		if err != nil {
			t.Fatalf("parsed rule %q does not compile: %v", rule, err)
		}
		if _, ok := dns.IsDomainName(qname); !ok {
			qname = "x.a.org."
		}
		r := plugintest.Query(qname, dns.TypeA, "")
		orig := r.Msg.Question[0]
		reply := func(req *dns.Msg) *dns.Msg {
			m := new(dns.Msg)
			m.SetReply(req)
			n := req.Question[0].Name
			m.Answer = []dns.RR{&dns.CNAME{Hdr: dns.RR_Header{Name: n, Rrtype: dns.TypeCNAME, Class: dns.ClassINET, Ttl: 60}, Target: "b.org."},
				&dns.MX{Hdr: dns.RR_Header{Name: n, Rrtype: dns.TypeMX, Class: dns.ClassINET, Ttl: 60}, Mx: n}}
			return m
		}
		m, err := plugintest.Run(rw, r, &plugintest.Next{Reply: reply})
		if err == nil && m.Question[0] != orig {
			t.Fatalf("question %v, want %v", m.Question[0], orig)
		}
	})
}

// corefileParse parses a Corefile and returns the rewrite rules of its
// first block.
func corefileParse(text string) ([]corefile.RewriteRule, error) {
	cfg, err := corefile.Parse(text, corefile.ParseOptions{ReadFile: func(string) ([]byte, error) { return nil, os.ErrNotExist }})
	if err != nil {
		return nil, err
	}
	return cfg.Servers[0].Rewrite, nil
}

// TestRewriteCNAME checks CoreDNS's CNAME target rewrite: the new target
// is looked up with the query's type and replaces the old one's records.
func TestRewriteCNAME(t *testing.T) {
	for _, rule := range []string{"cname regex (.*)\\.cdn\\.example\\.net\\. {1}.other.cdn.com.", "cname exact my-app.com.cdn.example.net. my-app.com.other.cdn.com.",
		"cname suffix .cdn.example.net. .other.cdn.com.", "cname prefix my-app.com.cdn.example.net. my-app.com.other.cdn.com."} {
		s := plugintest.Server(t, ". {\nrewrite "+rule+"\n}")
		rw, err := New(s.Rewrite)
		if err != nil {
			t.Fatal(err)
		}
		r := plugintest.Query("my-app.com", dns.TypeA, "")
		var looked string
		r.Lookup = func(_ context.Context, name string, qtype uint16) (*dns.Msg, error) {
			looked = name + "/" + dns.TypeToString[qtype]
			return upstream(0, "@ 100 IN A 30.3.1.2", "other. 5 IN A 1.1.1.1")(func() *dns.Msg { m := new(dns.Msg); m.SetQuestion(name, qtype); return m }()), nil
		}
		next := &plugintest.Next{Reply: upstream(0, "@ 200 IN CNAME my-app.com.cdn.example.net.", "my-app.com.cdn.example.net. 300 IN A 20.2.0.1", "my-app.com.cdn.example.net. 300 IN A 20.2.0.2")}
		m, err := plugintest.Run(rw, r, next)
		if err != nil {
			t.Fatal(err)
		}
		want := []string{"my-app.com.\t200\tIN\tCNAME\tmy-app.com.other.cdn.com.", "my-app.com.other.cdn.com.\t100\tIN\tA\t30.3.1.2"}
		if got := plugintest.RRs(m.Answer); !reflect.DeepEqual(got, want) || looked != "my-app.com.other.cdn.com./A" {
			t.Errorf("%s: lookup %s, answer\n%q\nwant\n%q", rule, looked, got, want)
		}
	}
}

// TestRewriteEDNS0 checks the edns0 rules on the query the next plugin
// sees, and that its options are then sent upstream.
func TestRewriteEDNS0(t *testing.T) {
	local := func(code uint16, data string) string {
		return (&dns.EDNS0_LOCAL{Code: code, Data: []byte(data)}).String()
	}
	for _, tc := range []struct {
		name    string
		rules   string
		client  string
		noEDNS  bool
		initial []dns.EDNS0 // the client's options
		want    []string    // the options the next plugin sees
		pass    bool
	}{
		{"local set hex", "rewrite edns0 local set 0xffee 0x61626364", "", false, nil, []string{local(0xffee, "abcd")}, true},
		{"local set text, no EDNS0 in the query", "rewrite edns0 local set 0xffee abcd", "", true, nil, []string{local(0xffee, "abcd")}, true},
		{"local set replaces", "rewrite edns0 local set 65518 new", "", false, []dns.EDNS0{&dns.EDNS0_LOCAL{Code: 0xffee, Data: []byte("old")}}, []string{local(0xffee, "new")}, true},
		{"local append adds another", "rewrite edns0 local append 0xffee x", "", false, []dns.EDNS0{&dns.EDNS0_LOCAL{Code: 0xffee, Data: []byte("old")}}, []string{local(0xffee, "old"), local(0xffee, "x")}, true},
		{"local replace without one: nothing", "rewrite edns0 local replace 0xffee x", "", false, nil, []string{}, true},
		{"local unset", "rewrite edns0 local unset 0xffee", "", false, []dns.EDNS0{&dns.EDNS0_LOCAL{Code: 0xffee, Data: []byte("old")}, &dns.EDNS0_LOCAL{Code: 1, Data: []byte("k")}}, []string{local(1, "k")}, true},
		{"client_ip variable", "rewrite edns0 local set 0xffee {client_ip}", "10.1.2.3:53", false, nil, []string{local(0xffee, "\x0a\x01\x02\x03")}, true},
		{"client_port and protocol", "rewrite continue edns0 local set 1 {client_port}\nrewrite edns0 local append 2 {protocol}", "10.1.2.3:258", false, nil, []string{local(1, "\x01\x02"), local(2, "udp")}, true},
		{"qname and qtype", "rewrite continue edns0 local set 1 {qname}\nrewrite edns0 local set 2 {qtype}", "", false, nil, []string{local(1, "x.org."), local(2, "\x00\x01")}, true},
		{"metadata label: never applies", "rewrite edns0 local set 1 {kubernetes/client-namespace}", "", true, nil, nil, false},
		{"nsid", "rewrite edns0 nsid set", "", false, nil, []string{(&dns.EDNS0_NSID{Code: dns.EDNS0NSID}).String()}, true},
		{"subnet v4", "rewrite edns0 subnet set 24 56", "10.1.2.3:53", false, nil, []string{(&dns.EDNS0_SUBNET{Code: 8, Family: 1, SourceNetmask: 24, Address: []byte{10, 1, 2, 0}}).String()}, true},
		{"subnet v6", "rewrite edns0 subnet set 24 56", "[2001:db8:1:2ff:3::1]:53", false, nil, []string{(&dns.EDNS0_SUBNET{Code: 8, Family: 2, SourceNetmask: 56, Address: netipSlice("2001:db8:1:200::")}).String()}, true},
		{"subnet append keeps the client's", "rewrite edns0 subnet append 24 56", "10.1.2.3:53", false, []dns.EDNS0{&dns.EDNS0_SUBNET{Code: 8, Family: 1, SourceNetmask: 32, Address: []byte{9, 9, 9, 9}}}, []string{(&dns.EDNS0_SUBNET{Code: 8, Family: 1, SourceNetmask: 32, Address: []byte{9, 9, 9, 9}}).String()}, true},
		{"revert accepted", "rewrite edns0 local set 0xffee abcd revert", "", false, nil, []string{local(0xffee, "abcd")}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := plugintest.Server(t, ". {\n"+tc.rules+"\n}")
			rw, err := New(s.Rewrite)
			if err != nil {
				t.Fatal(err)
			}
			r := plugintest.Query("x.org", dns.TypeA, tc.client)
			if tc.noEDNS {
				r.Msg.Extra = nil
			} else {
				r.Msg.IsEdns0().Option = tc.initial
			}
			var seen []string
			next := &plugintest.Next{Reply: func(req *dns.Msg) *dns.Msg {
				if opt := req.IsEdns0(); opt != nil {
					seen = []string{}
					for _, o := range opt.Option {
						seen = append(seen, o.String())
					}
				}
				return upstream(0)(req)
			}}
			if _, err := plugintest.Run(rw, r, next); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(seen, tc.want) || r.PassOptions != tc.pass {
				t.Errorf("options %q pass %v, want %q pass %v", seen, r.PassOptions, tc.want, tc.pass)
			}
		})
	}
}

func netipSlice(s string) []byte { return netip.MustParseAddr(s).AsSlice() }
