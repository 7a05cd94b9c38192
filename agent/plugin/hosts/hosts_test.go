package hosts

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/nodelocaldns/nodelocaldns/agent/plugin"
	"github.com/nodelocaldns/nodelocaldns/agent/plugin/plugintest"
)

const file = `# comment
127.0.0.1 localhost
10.0.0.1  www.example.org   www  # alias
10.0.0.2  www.example.org
fd00::1   www.example.org v6only.example.org
::ffff:10.0.0.3 mapped.example.org
fe80::1%eth0 zoned.example.org
bogus     x.example.org
10.0.0.4
10.0.0.5 other.net
`

func TestHosts(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "hosts")
	if err := os.WriteFile(path, []byte(file), 0o644); err != nil {
		t.Fatal(err)
	}
	type want struct {
		next   bool     // passed to the next plugin
		rcode  int      // of the reply or the rcode-only answer
		answer []string // records of the reply
	}
	for _, tc := range []struct {
		name  string
		block string
		qname string
		qtype uint16
		want  want
	}{
		{"A from file, in file order, name lower-cased", "example.org {\nhosts " + path + "\n}", "WWW.example.org", dns.TypeA,
			want{answer: []string{"www.example.org.\t3600\tIN\tA\t10.0.0.1", "www.example.org.\t3600\tIN\tA\t10.0.0.2"}}}, // the lower-cased name, as CoreDNS
		{"AAAA", "example.org {\nhosts " + path + "\n}", "www.example.org", dns.TypeAAAA,
			want{answer: []string{"www.example.org.\t3600\tIN\tAAAA\tfd00::1"}}},
		{"mapped address is IPv4", "example.org {\nhosts " + path + "\n}", "mapped.example.org", dns.TypeA,
			want{answer: []string{"mapped.example.org.\t3600\tIN\tA\t10.0.0.3"}}},
		{"zone of an IPv6 address dropped", "example.org {\nhosts " + path + "\n}", "zoned.example.org", dns.TypeAAAA,
			want{answer: []string{"zoned.example.org.\t3600\tIN\tAAAA\tfe80::1"}}},
		{"other type of a known name: NODATA", "example.org {\nhosts " + path + "\n}", "v6only.example.org", dns.TypeA,
			want{answer: []string{}}},
		{"MX of a known name: NODATA", "example.org {\nhosts " + path + "\n}", "www.example.org", dns.TypeMX,
			want{answer: []string{}}},
		{"unknown name: SERVFAIL", "example.org {\nhosts " + path + "\n}", "nope.example.org", dns.TypeA,
			want{rcode: dns.RcodeServerFailure}},
		{"unknown name with fallthrough", "example.org {\nhosts " + path + " {\nfallthrough\n}\n}", "nope.example.org", dns.TypeA,
			want{next: true}},
		{"fallthrough for other zones only", "example.org {\nhosts " + path + " {\nfallthrough in-addr.arpa\n}\n}", "nope.example.org", dns.TypeA,
			want{rcode: dns.RcodeServerFailure}},
		{"outside the origins", "example.org {\nhosts " + path + "\n}", "other.net", dns.TypeA, want{next: true}},
		{"names outside the origins are not loaded", ". {\nhosts " + path + " example.org\n}", "other.net", dns.TypeA, want{next: true}},
		{"PTR", "example.org {\nhosts " + path + "\n}", "1.0.0.10.in-addr.arpa", dns.TypePTR,
			want{answer: []string{"1.0.0.10.in-addr.arpa.\t3600\tIN\tPTR\twww.example.org."}}},
		{"PTR of an alias", ". {\nhosts " + path + "\n}", "1.0.0.10.in-addr.arpa", dns.TypePTR,
			want{answer: []string{"1.0.0.10.in-addr.arpa.\t3600\tIN\tPTR\twww.example.org.", "1.0.0.10.in-addr.arpa.\t3600\tIN\tPTR\twww."}}},
		{"PTR v6", "example.org {\nhosts " + path + "\n}", "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa", dns.TypePTR,
			want{answer: []string{"1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa.\t3600\tIN\tPTR\twww.example.org.", "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa.\t3600\tIN\tPTR\tv6only.example.org."}}},
		{"PTR unknown goes on", "example.org {\nhosts " + path + "\n}", "9.9.9.9.in-addr.arpa", dns.TypePTR, want{next: true}},
		{"no_reverse", "example.org {\nhosts " + path + " {\nno_reverse\n}\n}", "1.0.0.10.in-addr.arpa", dns.TypePTR, want{next: true}},
		{"ttl", "example.org {\nhosts " + path + " {\nttl 60\n}\n}", "www.example.org", dns.TypeAAAA,
			want{answer: []string{"www.example.org.\t60\tIN\tAAAA\tfd00::1"}}},
		{"inline after the file's", "example.org {\nhosts " + path + " {\n10.9.9.9 www.example.org\n}\n}", "www.example.org", dns.TypeA,
			want{answer: []string{"www.example.org.\t3600\tIN\tA\t10.0.0.1", "www.example.org.\t3600\tIN\tA\t10.0.0.2", "www.example.org.\t3600\tIN\tA\t10.9.9.9"}}},
		{"inline only, missing file", "example.org {\nhosts " + filepath.Join(dir, "missing") + " {\n10.9.9.9 in.example.org\n}\n}", "in.example.org", dns.TypeA,
			want{answer: []string{"in.example.org.\t3600\tIN\tA\t10.9.9.9"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := plugintest.Server(t, tc.block)
			h := New(*s.Hosts, nil, nil)
			defer h.Close()
			next := &plugintest.Next{}
			m, err := plugintest.Run(h, plugintest.Query(tc.qname, tc.qtype, ""), next)
			if (next.Calls > 0) != tc.want.next {
				t.Fatalf("next called %d times, want %v", next.Calls, tc.want.next)
			}
			if tc.want.next {
				return
			}
			if err != nil {
				if rc := plugin.Rcode(err); rc != tc.want.rcode || tc.want.answer != nil {
					t.Fatalf("rcode-only answer %s, want %+v", dns.RcodeToString[rc], tc.want)
				}
				return
			}
			if m.Rcode != tc.want.rcode || !m.Authoritative {
				t.Errorf("rcode %d AA %v, want %d and AA", m.Rcode, m.Authoritative, tc.want.rcode)
			}
			if got := plugintest.RRs(m.Answer); !reflect.DeepEqual(got, tc.want.answer) {
				t.Errorf("answer\n%q\nwant\n%q", got, tc.want.answer)
			}
		})
	}
}

// TestHostsReload checks that a changed file is re-read, and the metrics.
func TestHostsReload(t *testing.T) {
	path := filepath.Join(t.TempDir(), "hosts")
	if err := os.WriteFile(path, []byte("10.0.0.1 a.example.org\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	m, err := NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	s := plugintest.Server(t, "example.org {\nhosts "+path+" {\nreload 20ms\n10.0.0.9 inline.example.org\n}\n}")
	h := New(*s.Hosts, m, nil)
	defer h.Close()
	if got := testutil.ToFloat64(m.entries.WithLabelValues(path)); got != 4 {
		t.Errorf("coredns_hosts_entries %v, want 4 (2 names, 2 reverse)", got)
	}
	ask := func() []string {
		m, err := plugintest.Run(h, plugintest.Query("b.example.org", dns.TypeA, ""), &plugintest.Next{})
		if err != nil {
			return nil
		}
		return plugintest.RRs(m.Answer)
	}
	if got := ask(); got != nil {
		t.Fatalf("b.example.org before the change: %q", got)
	}
	// A different size, so that the change is seen whatever the mtime
	// granularity.
	if err := os.WriteFile(path, []byte("10.0.0.2 b.example.org\n10.0.0.3 c.example.org\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for ask() == nil {
		if time.Now().After(deadline) {
			t.Fatal("the changed hosts file was not re-read")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if got := testutil.ToFloat64(m.reload); got < float64(time.Now().Add(-time.Minute).Unix()) {
		t.Errorf("coredns_hosts_reload_timestamp_seconds %v, want the file's mtime", got)
	}
	n, err := testutil.GatherAndCount(reg, "coredns_hosts_entries", "coredns_hosts_reload_timestamp_seconds")
	if err != nil || n != 2 {
		t.Errorf("gathered %d series (%v), want 2", n, err)
	}
	// The file removed: the last content stays.
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	time.Sleep(60 * time.Millisecond)
	if got := ask(); len(got) != 1 || !strings.Contains(got[0], "10.0.0.2") {
		t.Errorf("after removal: %q, want the last content", got)
	}
}

func TestAddrFromReverse(t *testing.T) {
	for name, want := range map[string]string{
		"4.3.2.1.in-addr.arpa.": "1.2.3.4",
		"3.2.1.in-addr.arpa.":   "invalid IP",
		"in-addr.arpa.":         "invalid IP",
		"b.a.9.8.7.6.5.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa.": "2001:db8::567:89ab",
		"a.b.ip6.arpa.":       "invalid IP",
		"example.org.":        "invalid IP",
		"x.2.1.in-addr.arpa.": "invalid IP",
	} {
		if got := addrFromReverse(name).String(); got != want {
			t.Errorf("addrFromReverse(%q) = %s, want %s", name, got, want)
		}
	}
}

// FuzzParse checks that no hosts file makes Parse panic and that what it
// loads is within the origins and consistent.
func FuzzParse(f *testing.F) {
	f.Add(file)
	f.Add("::1 a\n1.2.3.4 b c d # x\n\n#\n1.2.3.4\n")
	origins := plugin.Zones{"example.org.", "in-addr.arpa."}
	f.Fuzz(func(t *testing.T, text string) {
		m := Parse(strings.NewReader(text), origins, true)
		for name, addrs := range m.name4 {
			if origins.Matches(name) == "" || len(addrs) == 0 {
				t.Fatalf("name %q loaded with %v", name, addrs)
			}
			for _, a := range addrs {
				if !a.Is4() {
					t.Fatalf("%s in the IPv4 map", a)
				}
			}
		}
		for _, addrs := range m.name6 {
			for _, a := range addrs {
				if !a.Is6() || a.Is4In6() {
					t.Fatalf("%s in the IPv6 map", a)
				}
			}
		}
	})
}
