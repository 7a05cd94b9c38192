package app

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/nodelocaldns/nodelocaldns/agent/dnstest"
)

// pluginsCorefile has the answer-changing plugins in an order unlike
// CoreDNS's: the agent runs them in CoreDNS's order whatever their lines.
const pluginsCorefile = `cluster.local:%[1]d {
    bind 127.0.0.1
    forward . %[2]s
    reload 2s
}
.:%[1]d {
    whoami
    hosts %[4]s {
        10.1.2.3 inline.example
        fallthrough
    }
    template IN AAAA {
        rcode NOERROR
    }
    rewrite name alias.example. www.example.
    cache 30
    loadbalance
    bind 127.0.0.1
    reload 2s
    forward . %[3]s {
        except whoami.test
    }
    prometheus 127.0.0.1:%[5]d
}
`

// TestRunAnswerPlugins runs the agent with hosts, rewrite, template,
// loadbalance and whoami against a real upstream, through a reload.
func TestRunAnswerPlugins(t *testing.T) {
	cluster := dnstest.NewServer(t, clusterZone.Handler())
	other := dnstest.NewServer(t, otherZone.Handler())
	f := startAgent(t, cluster.Addr, other.Addr)
	hostsFile := filepath.Join(f.dir, "hosts")
	if err := os.WriteFile(hostsFile, []byte("10.9.9.9 filed.example\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	f.writeCorefileText(t, fmt.Sprintf(pluginsCorefile, f.dnsPort, cluster.Addr, other.Addr, hostsFile, f.promPort))
	ask := func(name string, qtype uint16) *dns.Msg {
		t.Helper()
		m := new(dns.Msg)
		m.SetQuestion(name, qtype)
		r, _, err := (&dns.Client{Timeout: time.Second}).Exchange(m, f.addr)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		return r
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		if r := ask("inline.example.", dns.TypeA); len(r.Answer) == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the Corefile with plugins was not applied within 15s")
		}
		time.Sleep(100 * time.Millisecond)
	}
	for _, tc := range []struct {
		name  string
		qname string
		qtype uint16
		want  string // the answer, or the additional section for whoami
	}{
		// The cache above hosts caps its TTL to 30, as CoreDNS's does.
		{"hosts inline", "inline.example.", dns.TypeA, "inline.example.\t30\tIN\tA\t10.1.2.3"},
		{"hosts inline, a hit", "inline.example.", dns.TypeA, "inline.example.\t30\tIN\tA\t10.1.2.3"},
		{"hosts file", "Filed.Example.", dns.TypeA, "filed.example.\t30\tIN\tA\t10.9.9.9"},
		{"hosts fallthrough to forward", "www.example.", dns.TypeA, "www.example.\t30\tIN\tA\t192.0.2.1"},
		{"rewrite, answer rewritten back", "alias.example.", dns.TypeA, "alias.example.\t30\tIN\tA\t192.0.2.1"},
		{"rewrite, a hit", "alias.example.", dns.TypeA, "alias.example.\t30\tIN\tA\t192.0.2.1"},
		{"template before hosts: no IPv6", "inline.example.", dns.TypeAAAA, ""},
		// Cached (5s, the minimum TTL) and reordered by loadbalance (the
		// SRV record before the address), as by CoreDNS.
		{"whoami after forward", "whoami.test.", dns.TypeA, "whoami.test.\t5\tIN\tA\t127.0.0.1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := ask(tc.qname, tc.qtype)
			if r.Rcode != dns.RcodeSuccess || r.Question[0].Name != tc.qname {
				t.Fatalf("reply %v", r)
			}
			rrs := r.Answer
			if strings.HasPrefix(tc.qname, "whoami") && len(r.Extra) == 2 {
				rrs = r.Extra[1:]
			}
			got := ""
			if len(rrs) > 0 {
				got = rrs[0].String()
				// TTLs of cached answers count down: compare the rest.
				got = strings.Replace(got, "\t29\t", "\t30\t", 1)
				got = strings.Replace(got, "\t4\t", "\t5\t", 1)
			}
			if got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
	if n := other.Count(""); n > 3 {
		t.Errorf("upstream saw %d queries, want at most 3 (www and the rewritten alias, once each; AAAA from the template)", n)
	}
	code, body := get(t, fmt.Sprintf("http://127.0.0.1:%d/metrics", f.promPort))
	for _, want := range []string{
		`coredns_hosts_entries{hostsfile="` + hostsFile + `"} 4`,
		`coredns_hosts_reload_timestamp_seconds`,
		`coredns_template_matches_total{class="IN",server="dns://127.0.0.1:`,
		// Every reply passes loadbalance, which CoreDNS names as the writer.
		`plugin="loadbalance"`,
	} {
		if code != 200 || !strings.Contains(body, want) {
			t.Errorf("/metrics (%d) lacks %s", code, want)
		}
	}
}
