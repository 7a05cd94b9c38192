// Package pillar turns node-cache's Corefile template (the node-local-dns
// ConfigMap, mounted as Corefile.base) into the Corefile the agent serves,
// exactly as node-cache does: the __PILLAR__ variables are replaced, the
// kube-dns ConfigMap's upstreamNameservers and stubDomains are applied, and
// the result is written to -conf. A Watcher re-renders on every change of
// the mounted files and hands valid configurations to a callback.
package pillar

import (
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// The template variables node-cache replaces (and __PILLAR__DNS__DOMAIN__,
// which the official instructions replace with sed before applying).
const (
	VarLocalDNS        = "__PILLAR__LOCAL__DNS__"
	VarDNSServer       = "__PILLAR__DNS__SERVER__"
	VarClusterDNS      = "__PILLAR__CLUSTER__DNS__"
	VarUpstreamServers = "__PILLAR__UPSTREAM__SERVERS__"
	VarDNSDomain       = "__PILLAR__DNS__DOMAIN__"
)

// ResolvConf is what __PILLAR__UPSTREAM__SERVERS__ becomes without
// upstreamNameservers: the forward plugin reads the node's resolv.conf.
const ResolvConf = "/etc/resolv.conf"

// stubCacheTTL is the cache TTL of the server blocks node-cache generates
// for stubDomains.
const stubCacheTTL = 30

// Params are the inputs of Render besides the template.
type Params struct {
	// LocalIPs are the -localip addresses, in flag order.
	LocalIPs []string
	// DNSPort is -dns.port, the port of the generated stubDomain blocks.
	DNSPort int
	// ClusterDomain replaces __PILLAR__DNS__DOMAIN__.
	ClusterDomain string
	// UpstreamSvc is -upstreamsvc: its ClusterIP, read from the
	// <SVC>_SERVICE_HOST variable with LookupEnv, replaces
	// __PILLAR__CLUSTER__DNS__.
	UpstreamSvc string
	// LookupEnv looks up environment variables (os.LookupEnv in production).
	LookupEnv func(string) (string, bool)
	// KubeDNS is the kube-dns ConfigMap; nil means none.
	KubeDNS *KubeDNSConfig
}

// ServiceHostEnv returns the environment variable Kubernetes sets to the
// ClusterIP of Service svc: upper case, dashes as underscores, plus
// _SERVICE_HOST ("kube-dns-upstream" -> "KUBE_DNS_UPSTREAM_SERVICE_HOST").
func ServiceHostEnv(svc string) string {
	return strings.ToUpper(strings.ReplaceAll(svc, "-", "_")) + "_SERVICE_HOST"
}

// ClusterDNSIP returns the ClusterIP of the upstream Service from the
// environment. A missing or invalid variable is an error naming it.
func (p *Params) ClusterDNSIP() (string, error) {
	name := ServiceHostEnv(p.UpstreamSvc)
	if p.LookupEnv == nil {
		return "", fmt.Errorf("%s: no environment lookup configured", name)
	}
	v, ok := p.LookupEnv(name)
	if !ok || strings.TrimSpace(v) == "" {
		return "", fmt.Errorf("environment variable %s is not set: it holds the ClusterIP of Service %q (-upstreamsvc), which replaces %s; is the Service in the pod's namespace and was it created before the pod?",
			name, p.UpstreamSvc, VarClusterDNS)
	}
	ip, err := netip.ParseAddr(strings.TrimSpace(v))
	if err != nil {
		return "", fmt.Errorf("environment variable %s=%q is not an IP address", name, v)
	}
	return ip.Unmap().String(), nil
}

// tcpUpstream matches a forward to the upstream servers whose only option is
// force_tcp. node-cache rewrites exactly this (as text) to a plain UDP
// forward when the kube-dns ConfigMap sets upstreamNameservers.
var tcpUpstream = regexp.MustCompile(`forward[ \t]+(\S+)[ \t]+` + VarUpstreamServers + `[ \t]*\{\s*force_tcp\s*\}`)

// localAddr matches __PILLAR__LOCAL__DNS__ used as an address (health's
// "__PILLAR__LOCAL__DNS__:8080").
var localAddr = regexp.MustCompile(VarLocalDNS + `:([0-9]+)`)

// Render renders a node-cache Corefile template:
//   - __PILLAR__UPSTREAM__SERVERS__: the ConfigMap's upstreamNameservers
//     (space separated, and a force_tcp-only forward to them becomes UDP,
//     as node-cache does), else /etc/resolv.conf;
//   - __PILLAR__CLUSTER__DNS__: the upstream Service's ClusterIP from the
//     environment (an error when the template needs it and it is missing);
//   - __PILLAR__LOCAL__DNS__:PORT: the first local IP with that port (an
//     address holds one IP; node-cache would write every IP there);
//   - __PILLAR__LOCAL__DNS__: the local IPs, space separated;
//   - __PILLAR__DNS__SERVER__: empty;
//   - __PILLAR__DNS__DOMAIN__: the cluster domain;
//
// and appends one server block per stubDomain, like node-cache's.
func Render(template string, p Params) (string, error) {
	if len(p.LocalIPs) == 0 {
		return "", fmt.Errorf("no local IPs to render %s", VarLocalDNS)
	}
	kd := p.KubeDNS
	if kd == nil {
		kd = &KubeDNSConfig{}
	}
	out := template
	if len(kd.UpstreamNameservers) > 0 {
		servers := strings.Join(kd.UpstreamNameservers, " ")
		out = replaceTCPUpstream(out, servers)
		out = strings.ReplaceAll(out, VarUpstreamServers, servers)
	} else {
		out = strings.ReplaceAll(out, VarUpstreamServers, ResolvConf)
	}
	if strings.Contains(out, VarClusterDNS) {
		ip, err := p.ClusterDNSIP()
		if err != nil {
			return "", err
		}
		out = strings.ReplaceAll(out, VarClusterDNS, ip)
	}
	first := p.LocalIPs[0]
	out = localAddr.ReplaceAllStringFunc(out, func(m string) string {
		return net.JoinHostPort(first, strings.TrimPrefix(m, VarLocalDNS+":"))
	})
	locals := strings.Join(p.LocalIPs, " ")
	out = strings.ReplaceAll(out, VarLocalDNS, locals)
	out = strings.ReplaceAll(out, VarDNSServer, "")
	if strings.Contains(out, VarDNSDomain) {
		if p.ClusterDomain == "" {
			return "", fmt.Errorf("the template uses %s but no cluster domain is set", VarDNSDomain)
		}
		out = strings.ReplaceAll(out, VarDNSDomain, strings.TrimSuffix(p.ClusterDomain, "."))
	}
	return out + stubBlocks(kd.StubDomains, locals, p.DNSPort), nil
}

// replaceTCPUpstream rewrites each force_tcp-only forward to the upstream
// servers into a plain forward: custom upstreams are asked over UDP.
func replaceTCPUpstream(text, servers string) string {
	return tcpUpstream.ReplaceAllStringFunc(text, func(m string) string {
		from := tcpUpstream.FindStringSubmatch(m)[1]
		return "forward " + from + " " + servers
	})
}

// stubBlocks renders node-cache's server block for each stub domain, in
// domain order (node-cache's order is Go map order, i.e. random).
func stubBlocks(stubs map[string][]string, locals string, port int) string {
	if port == 0 {
		port = 53
	}
	domains := make([]string, 0, len(stubs))
	for d := range stubs {
		domains = append(domains, d)
	}
	sort.Strings(domains)
	var b strings.Builder
	for _, d := range domains {
		fmt.Fprintf(&b, "\n%s:%s {\n    errors\n    cache %d\n    bind %s\n    forward . %s\n}\n",
			d, strconv.Itoa(port), stubCacheTTL, locals, strings.Join(stubs[d], " "))
	}
	return b.String()
}
