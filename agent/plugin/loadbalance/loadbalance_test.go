package loadbalance

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

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
	lb, _ := New(*plugintest.Server(t, ". {\nloadbalance\n}").LoadBalance, nil)
	firsts := map[string]bool{}
	for range 200 {
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
	lb, _ := New(*plugintest.Server(t, ". {\nloadbalance round_robin {\nprefer 10.9.0.0/16 fd00::/8\n}\n}").LoadBalance, nil)
	records := []string{"x. 5 IN A 10.0.0.1", "x. 5 IN AAAA fd00::1", "x. 5 IN A 10.9.0.1", "x. 5 IN TXT t", "x. 5 IN A 10.0.0.2"}
	for range 50 {
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

// TestWeighted checks the weighted policy: the first address follows the
// weights (3:1:2, as in CoreDNS's README), a changed file is re-read, and
// bad files are refused.
func TestWeighted(t *testing.T) {
	path := filepath.Join(t.TempDir(), "weights")
	write := func(text string) {
		t.Helper()
		if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("# weights\nwww.example.com\n100.64.1.1 3\n100.64.1.2 1\n\n100.64.1.3 2\n")
	lb, err := New(*plugintest.Server(t, ". {\nloadbalance weighted "+path+" {\nreload 20ms\n}\n}").LoadBalance, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer lb.Close()
	records := []string{"www.example.com. 5 IN A 100.64.1.1", "www.example.com. 5 IN A 100.64.1.2", "www.example.com. 5 IN TXT t", "www.example.com. 5 IN A 100.64.1.3"}
	count := func() map[string]int {
		n := map[string]int{}
		for range 6000 {
			m, err := plugintest.Run(lb, plugintest.Query("www.example.com", dns.TypeA, ""), &plugintest.Next{Reply: reply(0, records...)})
			if err != nil {
				t.Fatal(err)
			}
			if kinds(m.Answer) != "TXT A A A " {
				t.Fatalf("order %s", kinds(m.Answer))
			}
			n[m.Answer[1].(*dns.A).A.String()]++
		}
		return n
	}
	n := count()
	// Expected 3000, 1000, 2000; allow for chance (about 6 sigma).
	if n["100.64.1.1"] < 2700 || n["100.64.1.1"] > 3300 || n["100.64.1.2"] < 800 || n["100.64.1.2"] > 1200 || n["100.64.1.3"] < 1750 || n["100.64.1.3"] > 2250 {
		t.Errorf("first addresses %v, want about 3000:1000:2000", n)
	}
	write("www.example.com.\n100.64.1.2 255\n")
	deadline := time.Now().Add(5 * time.Second)
	for count()["100.64.1.2"] < 5000 {
		if time.Now().After(deadline) {
			t.Fatal("the changed weight file was not re-read")
		}
		time.Sleep(30 * time.Millisecond)
	}
	for _, bad := range []string{"100.64.1.1\n", "www.example.com\nx 1\n", "www.example.com\n10.0.0.1 0\n", "10.0.0.1 3\n", "a b c\n"} {
		if _, err := parseWeights(strings.NewReader(bad), "f"); err == nil {
			t.Errorf("weight file %q accepted", bad)
		}
	}
	if _, err := New(*plugintest.Server(t, ". {\nloadbalance weighted /nonexistent {\nreload 0s\n}\n}").LoadBalance, nil); err == nil {
		t.Error("a missing weight file that is never re-read was accepted")
	}
}
