package loadbalance

import (
	"strings"
	"testing"

	"github.com/miekg/dns"

	"github.com/nodelocaldns/nodelocaldns/agent/plugin/plugintest"
)

func reply(rcode int, records ...string) func(*dns.Msg) *dns.Msg {
	return func(req *dns.Msg) *dns.Msg {
		m := new(dns.Msg)
		m.SetRcode(req, rcode)
		for _, s := range records {
			rr, _ := dns.NewRR(s)
			m.Answer = append(m.Answer, rr)
		}
		return m
	}
}

func kinds(rrs []dns.RR) string {
	var b strings.Builder
	for _, rr := range rrs {
		b.WriteString(dns.TypeToString[rr.Header().Rrtype] + " ")
	}
	return b.String()
}

func TestLoadBalance(t *testing.T) {
	records := []string{"x. 5 IN A 10.0.0.1", "x. 5 IN A 10.0.0.2", "x. 5 IN TXT a", "x. 5 IN A 10.0.0.3", "x. 5 IN MX 1 m.", "x. 5 IN CNAME y.", "x. 5 IN AAAA fd00::1"}
	lb := New(*plugintest.Server(t, ". {\nloadbalance\n}").LoadBalance)
	firsts := map[string]bool{}
	for i := 0; i < 200; i++ {
		m, err := plugintest.Run(lb, plugintest.Query("x", dns.TypeA, ""), &plugintest.Next{Reply: reply(0, records...)})
		if err != nil {
			t.Fatal(err)
		}
		if got := kinds(m.Answer); got != "CNAME TXT A A A AAAA MX " && got != "CNAME TXT A A AAAA A MX " && !strings.HasPrefix(got, "CNAME TXT ") {
			t.Fatalf("order %s", got)
		}
		if len(m.Answer) != len(records) {
			t.Fatalf("%d records, want %d", len(m.Answer), len(records))
		}
		firsts[m.Answer[2].String()] = true
	}
	if len(firsts) < 3 {
		t.Errorf("first address not shuffled: %v", firsts)
	}
	// Failures are not touched.
	m, _ := plugintest.Run(lb, plugintest.Query("x", dns.TypeA, ""), &plugintest.Next{Reply: reply(dns.RcodeNameError, records...)})
	if got := kinds(m.Answer); got != "A A TXT A MX CNAME AAAA " {
		t.Errorf("NXDOMAIN reordered: %s", got)
	}
}

func TestLoadBalancePrefer(t *testing.T) {
	lb := New(*plugintest.Server(t, ". {\nloadbalance round_robin {\nprefer 10.9.0.0/16 fd00::/8\n}\n}").LoadBalance)
	records := []string{"x. 5 IN A 10.0.0.1", "x. 5 IN AAAA fd00::1", "x. 5 IN A 10.9.0.1", "x. 5 IN TXT t", "x. 5 IN A 10.0.0.2"}
	for i := 0; i < 50; i++ {
		m, err := plugintest.Run(lb, plugintest.Query("x", dns.TypeA, ""), &plugintest.Next{Reply: reply(0, records...)})
		if err != nil {
			t.Fatal(err)
		}
		if a := m.Answer[0].(*dns.A).A.String(); a != "10.9.0.1" {
			t.Fatalf("first %s, want the preferred 10.9.0.1", a)
		}
		if m.Answer[1].Header().Rrtype != dns.TypeAAAA || m.Answer[4].Header().Rrtype != dns.TypeTXT {
			t.Fatalf("order %s", kinds(m.Answer))
		}
	}
}
