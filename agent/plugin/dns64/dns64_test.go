package dns64

import (
	"context"
	"reflect"
	"testing"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/nodelocaldns/nodelocaldns/agent/plugin"
	"github.com/nodelocaldns/nodelocaldns/agent/plugin/plugintest"
)

func rr(s string) dns.RR {
	r, err := dns.NewRR(s)
	if err != nil {
		panic(err)
	}
	return r
}

func TestDNS64(t *testing.T) {
	soa := rr("example.org. 300 IN SOA ns. h. 1 2 3 4 60")
	for _, tc := range []struct {
		name   string
		block  string
		client string
		qtype  uint16
		aaaa   *dns.Msg // what the chain answers to the AAAA query
		want   []string // nil: the chain's answer unchanged
	}{
		{"IPv6 client, NODATA with SOA: TTL at most the SOA's", ". {\ndns64\n}", "[fd00::9]:53", dns.TypeAAAA,
			&dns.Msg{Ns: []dns.RR{soa}},
			[]string{"www.example.org.\t300\tIN\tAAAA\t64:ff9b::c000:201", "www.example.org.\t60\tIN\tCNAME\tx.example.org."}},
		{"TTL capped by 600 without SOA", ". {\ndns64 64:ff9b::/96\n}", "[fd00::9]:53", dns.TypeAAAA,
			&dns.Msg{}, []string{"www.example.org.\t600\tIN\tAAAA\t64:ff9b::c000:201", "www.example.org.\t60\tIN\tCNAME\tx.example.org."}},
		{"/64 prefix skips bits 64-71", ". {\ndns64 2001:db8:1:2::/64\n}", "[fd00::9]:53", dns.TypeAAAA,
			&dns.Msg{Ns: []dns.RR{soa}}, []string{"www.example.org.\t300\tIN\tAAAA\t2001:db8:1:2:c0:2:100:0", "www.example.org.\t60\tIN\tCNAME\tx.example.org."}},
		{"IPv4 client: not translated", ". {\ndns64\n}", "10.0.0.9:53", dns.TypeAAAA, &dns.Msg{Ns: []dns.RR{soa}}, nil},
		{"IPv4 client with allow_ipv4", ". {\ndns64 {\nallow_ipv4\n}\n}", "10.0.0.9:53", dns.TypeAAAA,
			&dns.Msg{Ns: []dns.RR{soa}}, []string{"www.example.org.\t300\tIN\tAAAA\t64:ff9b::c000:201", "www.example.org.\t60\tIN\tCNAME\tx.example.org."}},
		{"has AAAA", ". {\ndns64\n}", "[fd00::9]:53", dns.TypeAAAA, &dns.Msg{Answer: []dns.RR{rr("www.example.org. 60 IN AAAA fd00::1")}}, nil},
		{"has AAAA, translate_all", ". {\ndns64 {\ntranslate_all\n}\n}", "[fd00::9]:53", dns.TypeAAAA,
			&dns.Msg{Answer: []dns.RR{rr("www.example.org. 60 IN AAAA fd00::1")}}, []string{"www.example.org.\t600\tIN\tAAAA\t64:ff9b::c000:201", "www.example.org.\t60\tIN\tCNAME\tx.example.org."}},
		{"name error", ". {\ndns64\n}", "[fd00::9]:53", dns.TypeAAAA, &dns.Msg{MsgHdr: dns.MsgHdr{Rcode: dns.RcodeNameError}, Ns: []dns.RR{soa}}, nil},
		{"SERVFAIL is translated", ". {\ndns64\n}", "[fd00::9]:53", dns.TypeAAAA,
			&dns.Msg{MsgHdr: dns.MsgHdr{Rcode: dns.RcodeServerFailure}}, []string{"www.example.org.\t600\tIN\tAAAA\t64:ff9b::c000:201", "www.example.org.\t60\tIN\tCNAME\tx.example.org."}},
		{"A query untouched", ". {\ndns64\n}", "[fd00::9]:53", dns.TypeA, &dns.Msg{}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := plugintest.Server(t, tc.block)
			reg := prometheus.NewRegistry()
			m, _ := NewMetrics(reg)
			d := New(*s.DNS64, m)
			r := plugintest.Query("www.example.org", tc.qtype, tc.client)
			r.Lookup = func(_ context.Context, name string, qtype uint16) (*dns.Msg, error) {
				if name != "www.example.org." || qtype != dns.TypeA {
					t.Errorf("lookup %s %d", name, qtype)
				}
				a := new(dns.Msg)
				a.Answer = []dns.RR{rr("www.example.org. 900 IN A 192.0.2.1"), rr("www.example.org. 60 IN CNAME x.example.org.")}
				return a, nil
			}
			next := &plugintest.Next{Reply: func(req *dns.Msg) *dns.Msg {
				m := tc.aaaa.Copy()
				m.SetRcode(req, tc.aaaa.Rcode)
				return m
			}}
			out, err := plugintest.Run(d, r, next)
			if err != nil {
				t.Fatal(err)
			}
			if tc.want == nil {
				if out.Rcode != tc.aaaa.Rcode || !reflect.DeepEqual(plugintest.RRs(out.Answer), plugintest.RRs(tc.aaaa.Answer)) {
					t.Errorf("answer changed: %v", out)
				}
				if n := testutil.CollectAndCount(m.translated); n != 0 {
					t.Errorf("counted a translation")
				}
				return
			}
			if got := plugintest.RRs(out.Answer); !reflect.DeepEqual(got, tc.want) || out.Rcode != 0 {
				t.Errorf("answer\n%q\nwant\n%q", got, tc.want)
			}
			if got := testutil.ToFloat64(m.translated.WithLabelValues("dns://:53")); got != 1 {
				t.Errorf("requests_translated_total %v", got)
			}
		})
	}
}

// TestDNS64LookupFails checks that a failed A lookup is a SERVFAIL.
func TestDNS64LookupFails(t *testing.T) {
	d := New(*plugintest.Server(t, ". {\ndns64\n}").DNS64, nil)
	r := plugintest.Query("x.org", dns.TypeAAAA, "[::1]:5")
	r.Lookup = func(context.Context, string, uint16) (*dns.Msg, error) {
		return nil, plugin.Fail(dns.RcodeServerFailure, nil)
	}
	if _, err := plugintest.Run(d, r, &plugintest.Next{}); plugin.Rcode(err) != dns.RcodeServerFailure {
		t.Errorf("err %v, want SERVFAIL", err)
	}
}
