package app

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/nodelocaldns/nodelocaldns/agent/dnstest"
	"github.com/nodelocaldns/nodelocaldns/tests/testenv"
)

// answersCorefile exercises every answer-changing plugin; %[1]d is the
// port, %[2]s the upstream, %[3]s the hosts file. The same text runs in
// CoreDNS v1.13.2 and in the agent.
const answersCorefile = `.:%[1]d {
    bind 127.0.0.1
    whoami
    hosts %[3]s {
        10.1.2.3 inline.example
        fallthrough
    }
    template IN A tpl.example {
        match ^ip-(\d+)-(\d+)-(\d+)-(\d+)\.
        answer "{{ .Name }} 60 IN A {{ index .Match 1 }}.{{ index .Match 2 }}.{{ index .Match 3 }}.{{ index .Match 4 }}"
        fallthrough
    }
    template IN TXT tpl.example {
        match ^(?P<a>[a-z]+)-(?P<n>[0-9]+)\.
        answer "{{ .Name }} 60 IN TXT \"{{ printf \"%%s/%%d\" .Group.a (parseInt .Group.n 10 16) }}\" \"{{ range $i, $m := .Match }}{{ $i }}={{ $m }};{{ end }}\""
    }
    template ANY ANY nx.tpl.example {
        rcode NXDOMAIN
        authority "nx.tpl.example. 60 IN SOA ns.tpl.example. h.tpl.example. 1 2 3 4 60"
    }
    rewrite continue name exact alias.example. www.example.
    rewrite continue name suffix .sfx.test. .example. answer auto
    rewrite stop name regex ^r-(.*)\.rx\.test\.$ {1}.example. answer name ^(.*)\.example\.$ r-{1}.rx.test.
    rewrite ttl exact www.example. 10-20
    rewrite rcode exact missing.example. NXDOMAIN NOERROR
    rewrite cname exact cdn.example. www.example.
    dns64 {
        allow_ipv4
    }
    loadbalance round_robin {
        prefer 192.0.2.2/32
    }
    cache 30
    forward . %[2]s {
        except who.test
    }
}
hosts.test:%[1]d {
    bind 127.0.0.1
    hosts %[3]s
    cache 30
}
noipv6.test:%[1]d {
    bind 127.0.0.1
    template ANY AAAA {
        rcode NOERROR
    }
    forward . %[2]s
}
`

// answersUpstream is the upstream of answersCorefile.
func answersUpstream() dnstest.Handler {
	zone := dnstest.MustZone(
		"example. 300 IN SOA ns.example. h.example. 1 2 3 4 60",
		"www.example. 300 IN A 192.0.2.1",
		"www.example. 300 IN A 192.0.2.2",
		"www.example. 300 IN A 192.0.2.3",
		"x.example. 300 IN A 192.0.2.4",
		"v4only.example. 300 IN A 192.0.2.5",
		"both.example. 300 IN A 192.0.2.6",
		"both.example. 300 IN AAAA 2001:db8::6",
		"cdn.example. 300 IN A 192.0.2.7",
		"a.noipv6.test. 300 IN A 192.0.2.8",
	)
	return dnstest.Func(func(q *dnstest.Query) *dns.Msg {
		m := zone.Reply(q.Msg)
		if qq := q.Msg.Question[0]; strings.EqualFold(qq.Name, "app.example.") && qq.Qtype == dns.TypeA {
			m.Rcode, m.Ns = dns.RcodeSuccess, nil
			cname, _ := dns.NewRR("app.example. 300 IN CNAME cdn.example.")
			a, _ := dns.NewRR("cdn.example. 300 IN A 192.0.2.7")
			m.Answer = []dns.RR{cname, a}
		}
		return m
	})
}

// TestAnswerPluginsLikeCoreDNS sends the same queries to CoreDNS v1.13.2
// (bin/coredns, `make coredns`, or COREDNS_BIN) and to the agent running
// answersCorefile against one upstream, and compares the replies: rcode,
// TC, and every section (records in order where the plugins fix it, as
// sets where loadbalance shuffles them; TTLs within a second; whoami's
// client port masked). The AA and RA bits are left to the compat suite.
func TestAnswerPluginsLikeCoreDNS(t *testing.T) {
	coredns := testenv.Binary(t, "coredns", "COREDNS_BIN")
	up := dnstest.NewServer(t, answersUpstream())
	dir := t.TempDir()
	hostsFile := filepath.Join(dir, "hosts")
	if err := os.WriteFile(hostsFile, []byte("10.9.9.9 filed.example h.hosts.test\nfd00::9 h.hosts.test\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	refPort, agentPort := testenv.FreePort(t), testenv.FreePort(t)
	refConf := filepath.Join(dir, "Corefile.coredns")
	if err := os.WriteFile(refConf, []byte(fmt.Sprintf(answersCorefile, refPort, up.Addr, hostsFile)), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ref := exec.CommandContext(ctx, coredns, "-conf", refConf)
	ref.Stdout, ref.Stderr = os.Stderr, os.Stderr
	if err := ref.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cancel(); _ = ref.Wait() }()

	agentConf := filepath.Join(dir, "Corefile")
	if err := os.WriteFile(agentConf, []byte(fmt.Sprintf(answersCorefile, agentPort, up.Addr, hostsFile)), 0o644); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, []string{"-localip", "127.0.0.1", "-conf", agentConf, "-basecorefile", filepath.Join(dir, "absent"),
			"-kubednscm", "", "-setupinterface=false", "-setupiptables=false", "-dns.port", strconv.Itoa(agentPort),
			"-metrics-listen-address", "", "-rundir", filepath.Join(dir, "run"), "-lameduck", "0s"})
	}()
	defer func() {
		cancel()
		select {
		case err := <-done:
			t.Logf("agent stopped: %v", err)
		case <-time.After(15 * time.Second):
			t.Error("agent did not stop")
		}
	}()
	refAddr := net.JoinHostPort("127.0.0.1", strconv.Itoa(refPort))
	agentAddr := net.JoinHostPort("127.0.0.1", strconv.Itoa(agentPort))
	for _, addr := range []string{refAddr, agentAddr} {
		deadline := time.Now().Add(15 * time.Second)
		for askOnce(addr, "inline.example.", dns.TypeA) == nil {
			if time.Now().After(deadline) {
				t.Fatalf("%s does not answer", addr)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	for _, tc := range []struct {
		name  string
		qtype uint16
		sets  bool // compare sections as sets (loadbalance shuffles)
		// rcode and counts of CoreDNS's reply (answer, authority,
		// additional without OPT), so that the comparison is not of two
		// equal failures.
		rcode  int
		counts [3]int
	}{
		{"inline.example.", dns.TypeA, false, 0, [3]int{1, 0, 0}},
		{"inline.example.", dns.TypeAAAA, false, 0, [3]int{1, 0, 0}}, // hosts: NODATA, then dns64 from the A record
		{"filed.example.", dns.TypeA, false, 0, [3]int{1, 0, 0}},
		{"h.hosts.test.", dns.TypeA, false, 0, [3]int{1, 0, 0}},
		{"h.hosts.test.", dns.TypeAAAA, false, 0, [3]int{1, 0, 0}},
		{"h.hosts.test.", dns.TypeMX, false, 0, [3]int{0, 0, 0}},
		{"nothere.hosts.test.", dns.TypeA, false, dns.RcodeServerFailure, [3]int{0, 0, 0}},
		{"9.9.9.10.in-addr.arpa.", dns.TypePTR, false, 0, [3]int{2, 0, 0}}, // both names of the address
		{"ip-10-1-2-3.tpl.example.", dns.TypeA, false, 0, [3]int{1, 0, 0}},
		{"abc-42.tpl.example.", dns.TypeTXT, false, 0, [3]int{1, 0, 0}},
		{"nothing.tpl.example.", dns.TypeTXT, false, dns.RcodeServerFailure, [3]int{0, 0, 0}}, // no regex match, no fallthrough
		{"a.nx.tpl.example.", dns.TypeMX, false, dns.RcodeNameError, [3]int{0, 1, 0}},
		{"www.example.", dns.TypeA, true, 0, [3]int{3, 0, 0}},
		{"alias.example.", dns.TypeA, true, 0, [3]int{3, 0, 0}},
		{"x.sfx.test.", dns.TypeA, false, 0, [3]int{1, 0, 0}},
		{"r-x.rx.test.", dns.TypeA, false, 0, [3]int{1, 0, 0}},
		{"missing.example.", dns.TypeA, false, 0, [3]int{0, 1, 0}},
		{"app.example.", dns.TypeA, true, 0, [3]int{4, 0, 0}},
		{"v4only.example.", dns.TypeAAAA, false, 0, [3]int{1, 0, 0}}, // synthesized from the A record
		{"both.example.", dns.TypeAAAA, false, 0, [3]int{1, 0, 0}},
		{"who.test.", dns.TypeA, false, 0, [3]int{0, 0, 2}},
		{"a.noipv6.test.", dns.TypeAAAA, false, 0, [3]int{0, 0, 0}},
		{"a.noipv6.test.", dns.TypeA, false, 0, [3]int{1, 0, 0}},
	} {
		for round := range 2 { // a miss, then a hit
			want := askOnce(refAddr, tc.name, tc.qtype)
			got := askOnce(agentAddr, tc.name, tc.qtype)
			if want == nil || got == nil {
				t.Errorf("%s %s: CoreDNS %v, agent %v", tc.name, dns.TypeToString[tc.qtype], want, got)
				continue
			}
			if round == 0 {
				counts := [3]int{len(want.Answer), len(want.Ns), len(normalizeRRs(want.Extra, false))}
				if want.Rcode != tc.rcode || counts != tc.counts {
					t.Errorf("%s %s: CoreDNS answered %s with %v records, the test expects %s with %v",
						tc.name, dns.TypeToString[tc.qtype], dns.RcodeToString[want.Rcode], counts, dns.RcodeToString[tc.rcode], tc.counts)
				}
			}
			if diff := compareReplies(want, got, tc.sets); diff != "" {
				t.Errorf("%s %s (query %d): %s\nCoreDNS:\n%v\nagent:\n%v", tc.name, dns.TypeToString[tc.qtype], round+1, diff, want, got)
			}
		}
	}
	// With prefer, the preferred address leads in both.
	for _, addr := range []string{refAddr, agentAddr} {
		if r := askOnce(addr, "www.example.", dns.TypeA); r == nil || len(r.Answer) == 0 || r.Answer[0].(*dns.A).A.String() != "192.0.2.2" {
			t.Errorf("%s: preferred address not first: %v", addr, r)
		}
	}
}

func askOnce(addr, name string, qtype uint16) *dns.Msg {
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	m.SetEdns0(1232, false)
	r, _, err := (&dns.Client{Timeout: 2 * time.Second}).Exchange(m, addr)
	if err != nil {
		return nil
	}
	return r
}

// compareReplies returns what differs between CoreDNS's reply and the
// agent's, or "".
func compareReplies(want, got *dns.Msg, sets bool) string {
	if want.Rcode != got.Rcode || want.Truncated != got.Truncated {
		return fmt.Sprintf("rcode %s TC %v, want %s TC %v", dns.RcodeToString[got.Rcode], got.Truncated, dns.RcodeToString[want.Rcode], want.Truncated)
	}
	for i, sec := range [][2][]dns.RR{{want.Answer, got.Answer}, {want.Ns, got.Ns}, {want.Extra, got.Extra}} {
		w, g := normalizeRRs(sec[0], sets), normalizeRRs(sec[1], sets)
		if len(w) != len(g) {
			return fmt.Sprintf("section %d: %d records, want %d", i, len(g), len(w))
		}
		for j := range w {
			if w[j].text != g[j].text || w[j].ttl-g[j].ttl > 1 || g[j].ttl-w[j].ttl > 1 {
				return fmt.Sprintf("section %d record %d: %s (TTL %d), want %s (TTL %d)", i, j, g[j].text, g[j].ttl, w[j].text, w[j].ttl)
			}
		}
	}
	return ""
}

type normRR struct {
	text string
	ttl  int64
}

// normalizeRRs drops OPT records, takes the TTL out of the text and masks
// whoami's client port; sets sorts them.
func normalizeRRs(rrs []dns.RR, sets bool) []normRR {
	var out []normRR
	for _, rr := range rrs {
		if rr.Header().Rrtype == dns.TypeOPT {
			continue
		}
		c := dns.Copy(rr)
		ttl := int64(c.Header().Ttl)
		c.Header().Ttl = 0
		if srv, ok := c.(*dns.SRV); ok && (strings.HasPrefix(srv.Hdr.Name, "_udp.") || strings.HasPrefix(srv.Hdr.Name, "_tcp.")) {
			srv.Port = 0
		}
		out = append(out, normRR{c.String(), ttl})
	}
	if sets {
		sort.Slice(out, func(i, j int) bool { return out[i].text < out[j].text })
	}
	return out
}
