package main

import (
	"strings"
	"testing"
	"time"
)

func TestParseDig(t *testing.T) {
	const out = `; <<>> DiG 9.18 <<>> www.example.com A
;; ->>HEADER<<- opcode: QUERY, status: NOERROR, id: 1
;; flags: qr rd ra; QUERY: 1, ANSWER: 2, AUTHORITY: 0, ADDITIONAL: 1

;; ANSWER SECTION:
www.example.com.	300	IN	A	192.0.2.80
www.example.com.	300	IN	A	192.0.2.81

;; Query time: 0 msec
;; SERVER: 169.254.20.10#53(169.254.20.10) (UDP)
`
	r, err := parseDig(out)
	if err != nil {
		t.Fatal(err)
	}
	if r.status != "NOERROR" || r.server != "169.254.20.10" || strings.Join(r.answers, ",") != "192.0.2.80,192.0.2.81" {
		t.Fatalf("parseDig = %+v", r)
	}
	if _, err := parseDig(";; connection timed out; no servers could be reached\n"); err == nil {
		t.Fatal("parseDig accepted output without a status")
	}
	tests := []struct {
		name string
		l    lookup
		r    digResult
		ok   bool
	}{
		{"answer", lookup{status: "NOERROR", answer: "192.0.2.81"}, r, true},
		{"wrong answer", lookup{status: "NOERROR", answer: "192.0.2.1"}, r, false},
		{"wrong server", lookup{status: "NOERROR", answer: "192.0.2.80"}, digResult{status: "NOERROR", server: "10.96.0.10", answers: []string{"192.0.2.80"}}, false},
		{"nodata", lookup{status: "NOERROR"}, digResult{status: "NOERROR", server: localDNSIP}, true},
		{"nodata with answers", lookup{status: "NOERROR"}, r, false},
		{"status", lookup{status: "NXDOMAIN"}, digResult{status: "NOERROR", server: localDNSIP}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.l.verify(tc.r); (err == nil) != tc.ok {
				t.Fatalf("verify = %v, want ok=%v", err, tc.ok)
			}
		})
	}
}

func TestResolvConf(t *testing.T) {
	injected := parseResolvConf("search shop.svc.cluster.local svc.cluster.local cluster.local\nnameserver 169.254.20.10\nnameserver 10.96.0.10\noptions ndots:3 timeout:1 attempts:2\n")
	clusterFirst := parseResolvConf("search shop.svc.cluster.local svc.cluster.local cluster.local\nnameserver 10.96.0.10\noptions ndots:5\n")
	tests := []struct {
		name string
		err  error
		ok   bool
	}{
		{"injected", wantInjected(injected, "shop", "10.96.0.10"), true},
		{"injected other ns", wantInjected(injected, "other", "10.96.0.10"), false},
		{"cluster-first as injected", wantInjected(clusterFirst, "shop", "10.96.0.10"), false},
		{"cluster-first", wantClusterFirst(clusterFirst, "shop", "10.96.0.10"), true},
		{"injected as cluster-first", wantClusterFirst(injected, "shop", "10.96.0.10"), false},
		{"injected without options", wantInjected(parseResolvConf("search shop.svc.cluster.local svc.cluster.local cluster.local\nnameserver 169.254.20.10\nnameserver 10.96.0.10\n"), "shop", "10.96.0.10"), false},
	}
	for _, tc := range tests {
		if (tc.err == nil) != tc.ok {
			t.Errorf("%s: err = %v, want ok=%v", tc.name, tc.err, tc.ok)
		}
	}
}

func TestParseLoop(t *testing.T) {
	s, err := parseLoop("100.00 100.01 0\n100.01 101.30 0\n101.30 101.31 2\nnoise\n", 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if s.total != 3 || s.failed != 1 || s.slowest != 1290*time.Millisecond || s.rate != 1.5 {
		t.Fatalf("parseLoop = %+v", s)
	}
	if got := s.slowestBefore(100.005); got != 10*time.Millisecond {
		t.Fatalf("slowestBefore(100.005) = %v, want 10ms", got)
	}
	if got := s.slowestBefore(102); got != 1290*time.Millisecond {
		t.Fatalf("slowestBefore(102) = %v, want 1.29s", got)
	}
	if _, err := parseLoop("", time.Second); err == nil {
		t.Fatal("parseLoop accepted no lookups")
	}
	if _, err := parseLoop("a b 0\n", time.Second); err == nil {
		t.Fatal("parseLoop accepted a bad line")
	}
}

func TestMetricSum(t *testing.T) {
	const text = `# TYPE coredns_dns_requests_total counter
coredns_dns_requests_total{proto="udp",server="dns://:53",zone="."} 5
coredns_dns_requests_total{proto="tcp",server="dns://:53",zone="."} 3
coredns_dns_requests_total_other 100
`
	for _, tc := range []struct {
		want map[string]string
		sum  float64
	}{{nil, 8}, {map[string]string{"proto": "tcp"}, 3}, {map[string]string{"proto": "sctp"}, 0}} {
		got, err := metricSum(text, "coredns_dns_requests_total", tc.want)
		if err != nil || got != tc.sum {
			t.Errorf("metricSum(%v) = %v, %v; want %v", tc.want, got, err, tc.sum)
		}
	}
	if _, err := metricSum(text, "coredns_cache_hits_total", nil); err == nil {
		t.Error("metricSum found a missing family")
	}
}

func TestParseEnvAndAgentPods(t *testing.T) {
	vars, err := parseEnv(strings.NewReader("# c\nA=1\n\nB=x=y\n"))
	if err != nil || vars["A"] != "1" || vars["B"] != "x=y" {
		t.Fatalf("parseEnv = %v, %v", vars, err)
	}
	if _, err := parseEnv(strings.NewReader("junk\n")); err == nil {
		t.Fatal("parseEnv accepted a line without =")
	}
	pods := parseAgentPods("a  true 0\nb 2026-01-01T00:00:00Z false 1\n")
	if len(pods) != 2 || !pods[0].ready || pods[0].terminating || !pods[1].terminating || pods[1].ready || pods[1].restarts != "1" {
		t.Fatalf("parseAgentPods = %+v", pods)
	}
}
