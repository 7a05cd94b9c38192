package pillar

import (
	"os"
	"reflect"
	"strings"
	"testing"

	"github.com/nodelocaldns/nodelocaldns/agent/corefile"
)

// officialTemplate is the Corefile of the official node-local-dns ConfigMap.
func officialTemplate(t testing.TB) string {
	t.Helper()
	b, err := os.ReadFile("../corefile/testdata/nodelocaldns.Corefile.base")
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func env(vars map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) {
		v, ok := vars[k]
		return v, ok
	}
}

// fakeReadFile stands for the node's /etc/resolv.conf in Parse.
func fakeReadFile(path string) ([]byte, error) {
	if path == ResolvConf {
		return []byte("nameserver 192.0.2.1\n"), nil
	}
	return nil, os.ErrNotExist
}

var upstreamEnv = env(map[string]string{"KUBE_DNS_UPSTREAM_SERVICE_HOST": "10.96.0.20"})

func TestServiceHostEnv(t *testing.T) {
	for _, tc := range []struct{ svc, want string }{
		{"kube-dns", "KUBE_DNS_SERVICE_HOST"},
		{"kube-dns-upstream", "KUBE_DNS_UPSTREAM_SERVICE_HOST"},
		{"coredns", "COREDNS_SERVICE_HOST"},
	} {
		t.Run(tc.svc, func(t *testing.T) {
			if got := ServiceHostEnv(tc.svc); got != tc.want {
				t.Errorf("ServiceHostEnv(%q) = %q, want %q", tc.svc, got, tc.want)
			}
		})
	}
}

// TestRenderOfficial renders the official template as node-cache does and
// checks the parsed result block by block.
func TestRenderOfficial(t *testing.T) {
	type block struct {
		zone     string
		bind     []string
		to       []string
		forceTCP bool
		health   string
	}
	clusterTCP := []string{"10.96.0.20:53"}
	for _, tc := range []struct {
		name     string
		localIPs []string
		kubeDNS  *KubeDNSConfig
		want     []block
		contains []string
	}{
		{
			name:     "iptables mode (link-local and kube-dns IP), node's resolv.conf",
			localIPs: []string{"169.254.20.10", "10.96.0.10"},
			want: []block{
				{"cluster.local.", []string{"169.254.20.10", "10.96.0.10"}, clusterTCP, true, "169.254.20.10:8080"},
				{"in-addr.arpa.", []string{"169.254.20.10", "10.96.0.10"}, clusterTCP, true, ""},
				{"ip6.arpa.", []string{"169.254.20.10", "10.96.0.10"}, clusterTCP, true, ""},
				{".", []string{"169.254.20.10", "10.96.0.10"}, []string{"192.0.2.1:53"}, false, ""},
			},
			contains: []string{"cluster.local:53 {", "bind 169.254.20.10 10.96.0.10 \n", "forward . /etc/resolv.conf\n",
				"health 169.254.20.10:8080\n", "forward . 10.96.0.20 {"},
		},
		{
			name:     "IPVS mode (link-local only)",
			localIPs: []string{"169.254.20.10"},
			want: []block{
				{"cluster.local.", []string{"169.254.20.10"}, clusterTCP, true, "169.254.20.10:8080"},
				{"in-addr.arpa.", []string{"169.254.20.10"}, clusterTCP, true, ""},
				{"ip6.arpa.", []string{"169.254.20.10"}, clusterTCP, true, ""},
				{".", []string{"169.254.20.10"}, []string{"192.0.2.1:53"}, false, ""},
			},
		},
		{
			name:     "IPv6 local IP gets brackets in the health address",
			localIPs: []string{"fd00::10", "169.254.20.10"},
			want: []block{
				{"cluster.local.", []string{"fd00::10", "169.254.20.10"}, clusterTCP, true, "[fd00::10]:8080"},
				{"in-addr.arpa.", []string{"fd00::10", "169.254.20.10"}, clusterTCP, true, ""},
				{"ip6.arpa.", []string{"fd00::10", "169.254.20.10"}, clusterTCP, true, ""},
				{".", []string{"fd00::10", "169.254.20.10"}, []string{"192.0.2.1:53"}, false, ""},
			},
		},
		{
			name:     "upstreamNameservers replace resolv.conf",
			localIPs: []string{"169.254.20.10"},
			kubeDNS:  &KubeDNSConfig{UpstreamNameservers: []string{"198.51.100.1", "198.51.100.2:5353"}},
			want: []block{
				{"cluster.local.", []string{"169.254.20.10"}, clusterTCP, true, "169.254.20.10:8080"},
				{"in-addr.arpa.", []string{"169.254.20.10"}, clusterTCP, true, ""},
				{"ip6.arpa.", []string{"169.254.20.10"}, clusterTCP, true, ""},
				{".", []string{"169.254.20.10"}, []string{"198.51.100.1:53", "198.51.100.2:5353"}, false, ""},
			},
			contains: []string{"forward . 198.51.100.1 198.51.100.2:5353\n"},
		},
		{
			name:     "stubDomains become server blocks in domain order",
			localIPs: []string{"169.254.20.10", "10.96.0.10"},
			kubeDNS: &KubeDNSConfig{StubDomains: map[string][]string{
				"corp.example": {"192.0.2.10", "192.0.2.11:5353"},
				"acme.local":   {"2001:db8::1"},
			}},
			want: []block{
				{"cluster.local.", []string{"169.254.20.10", "10.96.0.10"}, clusterTCP, true, "169.254.20.10:8080"},
				{"in-addr.arpa.", []string{"169.254.20.10", "10.96.0.10"}, clusterTCP, true, ""},
				{"ip6.arpa.", []string{"169.254.20.10", "10.96.0.10"}, clusterTCP, true, ""},
				{".", []string{"169.254.20.10", "10.96.0.10"}, []string{"192.0.2.1:53"}, false, ""},
				{"acme.local.", []string{"169.254.20.10", "10.96.0.10"}, []string{"[2001:db8::1]:53"}, false, ""},
				{"corp.example.", []string{"169.254.20.10", "10.96.0.10"}, []string{"192.0.2.10:53", "192.0.2.11:5353"}, false, ""},
			},
			contains: []string{"\nacme.local:53 {\n    errors\n    cache 30\n    bind 169.254.20.10 10.96.0.10\n    forward . 2001:db8::1\n}\n"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			text, err := Render(officialTemplate(t), Params{
				LocalIPs: tc.localIPs, DNSPort: 53, ClusterDomain: "cluster.local",
				UpstreamSvc: "kube-dns-upstream", LookupEnv: upstreamEnv, KubeDNS: tc.kubeDNS,
			})
			if err != nil {
				t.Fatal(err)
			}
			if strings.Contains(text, "__PILLAR__") {
				t.Errorf("unrendered variable left:\n%s", text)
			}
			for _, s := range tc.contains {
				if !strings.Contains(text, s) {
					t.Errorf("rendered Corefile lacks %q:\n%s", s, text)
				}
			}
			cfg, err := corefile.Parse(text, corefile.ParseOptions{ReadFile: fakeReadFile})
			if err != nil {
				t.Fatalf("rendered Corefile does not parse: %v\n%s", err, text)
			}
			var got []block
			for _, s := range cfg.Servers {
				got = append(got, block{s.Zones[0], s.Bind, s.Forward.To, s.Forward.ForceTCP, s.Health})
				if s.Port != 53 {
					t.Errorf("block %v port %d", s.Zones, s.Port)
				}
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("blocks:\n got %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

func TestRenderDetails(t *testing.T) {
	tcpUp := ".:53 {\n    forward . __PILLAR__UPSTREAM__SERVERS__ {\n            force_tcp\n    }\n}\n"
	for _, tc := range []struct {
		name   string
		tmpl   string
		params Params
		want   string
	}{
		{
			name:   "force_tcp upstream block becomes UDP with custom upstreams (node-cache)",
			tmpl:   tcpUp,
			params: Params{KubeDNS: &KubeDNSConfig{UpstreamNameservers: []string{"198.51.100.1"}}},
			want:   ".:53 {\n    forward . 198.51.100.1\n}\n",
		},
		{
			name: "force_tcp upstream block kept with the node's resolv.conf",
			tmpl: tcpUp,
			want: ".:53 {\n    forward . /etc/resolv.conf {\n            force_tcp\n    }\n}\n",
		},
		{
			name:   "forward with more options than force_tcp is kept",
			tmpl:   ". {\nforward . __PILLAR__UPSTREAM__SERVERS__ {\nforce_tcp\nexpire 5s\n}\n}\n",
			params: Params{KubeDNS: &KubeDNSConfig{UpstreamNameservers: []string{"198.51.100.1"}}},
			want:   ". {\nforward . 198.51.100.1 {\nforce_tcp\nexpire 5s\n}\n}\n",
		},
		{
			name:   "DNS domain and dns.port in stub blocks",
			tmpl:   "__PILLAR__DNS__DOMAIN__:1053 {\n}\n",
			params: Params{ClusterDomain: "example.internal.", DNSPort: 1053, KubeDNS: &KubeDNSConfig{StubDomains: map[string][]string{"a.b": {"192.0.2.1"}}}},
			want:   "example.internal:1053 {\n}\n\na.b:1053 {\n    errors\n    cache 30\n    bind 169.254.20.10\n    forward . 192.0.2.1\n}\n",
		},
		{
			name:   "DNS server is empty, local DNS space separated",
			tmpl:   "bind __PILLAR__LOCAL__DNS__ __PILLAR__DNS__SERVER__\n",
			params: Params{LocalIPs: []string{"169.254.20.10", "10.0.0.10"}},
			want:   "bind 169.254.20.10 10.0.0.10 \n",
		},
		{
			name:   "template without cluster DNS needs no environment",
			tmpl:   ". {\nforward . 192.0.2.1\n}\n",
			params: Params{UpstreamSvc: "missing", LookupEnv: env(nil)},
			want:   ". {\nforward . 192.0.2.1\n}\n",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := tc.params
			if p.LocalIPs == nil {
				p.LocalIPs = []string{"169.254.20.10"}
			}
			got, err := Render(tc.tmpl, p)
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Errorf("Render:\n got %q\nwant %q", got, tc.want)
			}
		})
	}
}

func TestRenderErrors(t *testing.T) {
	for _, tc := range []struct {
		name   string
		tmpl   string
		params Params
		want   string
	}{
		{
			name:   "missing service env",
			tmpl:   "forward . __PILLAR__CLUSTER__DNS__\n",
			params: Params{LocalIPs: []string{"169.254.20.10"}, UpstreamSvc: "kube-dns-upstream", LookupEnv: env(nil)},
			want:   `environment variable KUBE_DNS_UPSTREAM_SERVICE_HOST is not set: it holds the ClusterIP of Service "kube-dns-upstream" (-upstreamsvc)`,
		},
		{
			name:   "empty service env",
			tmpl:   "forward . __PILLAR__CLUSTER__DNS__\n",
			params: Params{LocalIPs: []string{"169.254.20.10"}, UpstreamSvc: "kube-dns", LookupEnv: env(map[string]string{"KUBE_DNS_SERVICE_HOST": ""})},
			want:   "environment variable KUBE_DNS_SERVICE_HOST is not set",
		},
		{
			name:   "service env not an IP",
			tmpl:   "forward . __PILLAR__CLUSTER__DNS__\n",
			params: Params{LocalIPs: []string{"169.254.20.10"}, UpstreamSvc: "kube-dns", LookupEnv: env(map[string]string{"KUBE_DNS_SERVICE_HOST": "<nil>"})},
			want:   `environment variable KUBE_DNS_SERVICE_HOST="<nil>" is not an IP address`,
		},
		{
			name:   "no env lookup",
			tmpl:   "forward . __PILLAR__CLUSTER__DNS__\n",
			params: Params{LocalIPs: []string{"169.254.20.10"}, UpstreamSvc: "kube-dns"},
			want:   "KUBE_DNS_SERVICE_HOST: no environment lookup configured",
		},
		{
			name: "no local IPs",
			tmpl: ". {\n}\n",
			want: "no local IPs",
		},
		{
			name:   "DNS domain without cluster domain",
			tmpl:   "__PILLAR__DNS__DOMAIN__ {\n}\n",
			params: Params{LocalIPs: []string{"169.254.20.10"}},
			want:   "uses __PILLAR__DNS__DOMAIN__ but no cluster domain is set",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Render(tc.tmpl, tc.params)
			if err == nil {
				t.Fatalf("Render = %q, want error %q", got, tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q, want it to contain %q", err, tc.want)
			}
		})
	}
}

// TestRenderedServiceIP checks the env value is the one used (not <nil>).
func TestRenderedServiceIP(t *testing.T) {
	got, err := Render("forward . __PILLAR__CLUSTER__DNS__\n", Params{LocalIPs: []string{"169.254.20.10"},
		UpstreamSvc: "kube-dns", LookupEnv: env(map[string]string{"KUBE_DNS_SERVICE_HOST": " fd00::a "})})
	if err != nil {
		t.Fatal(err)
	}
	if got != "forward . fd00::a\n" {
		t.Errorf("got %q", got)
	}
}
