package main

import (
	"context"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// digResult is what the checks read from dig's output.
type digResult struct {
	status  string   // NOERROR, NXDOMAIN, ...
	answers []string // the answer section's RDATA
	server  string   // the address that answered
}

var (
	digStatus = regexp.MustCompile(`status: ([A-Z]+)`)
	digServer = regexp.MustCompile(`;; SERVER: ([^#\s]+)#`)
)

func parseDig(out string) (digResult, error) {
	var r digResult
	m := digStatus.FindStringSubmatch(out)
	if m == nil {
		return r, fmt.Errorf("no status in dig output %q", out)
	}
	r.status = m[1]
	if m := digServer.FindStringSubmatch(out); m != nil {
		r.server = m[1]
	}
	inAnswer := false
	for l := range strings.SplitSeq(out, "\n") {
		switch {
		case strings.HasPrefix(l, ";; ANSWER SECTION:"):
			inAnswer = true
		case inAnswer && strings.TrimSpace(l) == "":
			inAnswer = false
		case inAnswer && !strings.HasPrefix(l, ";"):
			if f := strings.Fields(l); len(f) >= 5 {
				r.answers = append(r.answers, f[len(f)-1])
			}
		}
	}
	return r, nil
}

// lookup is one query of check 2 and the answer it needs.
type lookup struct {
	name, qtype string
	search      bool
	status      string
	answer      string // "" = no answer records (NODATA/NXDOMAIN)
}

// checkLookups is check 2: from an injected pod, real clients (dig, glibc
// getent) resolve Service names, outside names, NODATA and NXDOMAIN; every
// answer comes from the agent (dig's SERVER line, the agent's request
// counter), and the agent's cluster.local queries reach CoreDNS over TCP.
func checkLookups(ctx context.Context, e *env) (string, error) {
	pod := podSpec{ns: nsInjected, name: "plain"}
	if _, err := e.exec(ctx, pod.ns, pod.name, "sh", "-c", "exit 0"); err != nil {
		if err := e.ensureNamespace(ctx, nsInjected, map[string]string{injectLabel: "enabled"}); err != nil {
			return "", err
		}
		if err := e.createPods(ctx, pod); err != nil {
			return "", err
		}
	}
	agentBefore, err := e.agentRequests(ctx)
	if err != nil {
		return "", fmt.Errorf("agent metrics: %w", err)
	}
	dnsTCPBefore, err := e.corednsRequests(ctx, "tcp")
	if err != nil {
		return "", fmt.Errorf("CoreDNS metrics: %w", err)
	}
	kubeDNS := e.get("KUBE_DNS_IP")
	lookups := []lookup{
		{name: "kubernetes.default.svc.cluster.local", qtype: "A", status: "NOERROR", answer: "10.96.0.1"},
		{name: "kube-dns.kube-system", qtype: "A", search: true, status: "NOERROR", answer: kubeDNS},
		{name: "www.example.com", qtype: "A", status: "NOERROR", answer: "192.0.2.80"},
		{name: "www.example.com", qtype: "AAAA", status: "NOERROR", answer: "2001:db8::80"},
		{name: "v4only.example.com", qtype: "AAAA", status: "NOERROR"},
		{name: "kubernetes.default.svc.cluster.local", qtype: "AAAA", status: "NOERROR"},
		{name: "nope.example.com", qtype: "A", status: "NXDOMAIN"},
		{name: "nope.default.svc.cluster.local", qtype: "A", status: "NXDOMAIN"},
	}
	var errs []string
	for _, l := range lookups {
		args := []string{"dig", "+tries=1", "+time=2", l.name, l.qtype}
		if l.search {
			args = append(args, "+search")
		}
		out, err := e.exec(ctx, pod.ns, pod.name, args...)
		if err != nil {
			errs = append(errs, err.Error())
			continue
		}
		r, err := parseDig(out)
		if err != nil {
			errs = append(errs, err.Error())
			continue
		}
		if err := l.verify(r); err != nil {
			errs = append(errs, fmt.Sprintf("%s %s: %v", l.name, l.qtype, err))
		}
	}
	// glibc's resolver, through the pod's resolv.conf (search list, ndots).
	getents := map[string]string{"kubernetes.default": "10.96.0.1", "www.example.com": "192.0.2.80", "api.example.net.": "192.0.2.90"}
	for name, want := range getents {
		out, err := e.exec(ctx, pod.ns, pod.name, "getent", "ahostsv4", name)
		if err != nil || !strings.HasPrefix(strings.TrimSpace(out), want+" ") {
			errs = append(errs, fmt.Sprintf("getent ahostsv4 %s: %q %v, want %s", name, out, err, want))
		}
	}
	agentAfter, err := e.agentRequests(ctx)
	if err != nil {
		return "", fmt.Errorf("agent metrics: %w", err)
	}
	dnsTCPAfter, err := e.corednsRequests(ctx, "tcp")
	if err != nil {
		return "", fmt.Errorf("CoreDNS metrics: %w", err)
	}
	n := len(lookups) + len(getents)
	agentDelta, tcpDelta := agentAfter-agentBefore, dnsTCPAfter-dnsTCPBefore
	if agentDelta < float64(n) {
		errs = append(errs, fmt.Sprintf("agent counted %.0f requests, want >= %d", agentDelta, n))
	}
	if tcpDelta < 1 {
		errs = append(errs, "CoreDNS counted no TCP request from the agent")
	}
	fig := fmt.Sprintf("%d/%d lookups ok from %s; agent requests +%.0f; CoreDNS TCP requests +%.0f",
		n-len(errs), n, localDNSIP, agentDelta, tcpDelta)
	if len(errs) > 0 {
		return fig, fmt.Errorf("%s: %s", fig, strings.Join(errs, "; "))
	}
	return fig, nil
}

func (l lookup) verify(r digResult) error {
	if r.server != localDNSIP {
		return fmt.Errorf("answered by %q, want the agent %s", r.server, localDNSIP)
	}
	if r.status != l.status {
		return fmt.Errorf("status %s, want %s", r.status, l.status)
	}
	if l.answer == "" {
		if len(r.answers) != 0 {
			return fmt.Errorf("answers %v, want none", r.answers)
		}
		return nil
	}
	if slices.Contains(r.answers, l.answer) {
		return nil
	}
	return fmt.Errorf("answers %v, want %s", r.answers, l.answer)
}

// agentRequests is the agent's coredns_dns_requests_total summed, from its
// metrics listener (the Corefile's "prometheus :9253" binds the node's IP).
func (e *env) agentRequests(ctx context.Context) (float64, error) {
	text, err := httpGet(ctx, "http://"+e.get("NODE_IP")+":9253/metrics")
	if err != nil {
		return 0, err
	}
	return counterSum(text, "coredns_dns_requests_total", nil), nil
}

// corednsRequests is CoreDNS's coredns_dns_requests_total for proto.
func (e *env) corednsRequests(ctx context.Context, proto string) (float64, error) {
	ip, err := e.kubectl(ctx, "", "-n", "kube-system", "get", "pods", "-l", "k8s-app=kube-dns", "-o", "jsonpath={.items[0].status.podIP}")
	if err != nil {
		return 0, err
	}
	text, err := httpGet(ctx, "http://"+strings.TrimSpace(ip)+":9153/metrics")
	if err != nil {
		return 0, err
	}
	return counterSum(text, "coredns_dns_requests_total", map[string]string{"proto": proto}), nil
}

// counterSum is metricSum for a labelled counter, which has no samples (and
// so no family in the exposition) until it is first incremented: 0 then.
func counterSum(text, family string, want map[string]string) float64 {
	v, err := metricSum(text, family, want)
	if err != nil {
		return 0
	}
	return v
}

// metricSum sums the samples of a counter or gauge (text exposition format)
// whose labels include every want pair.
func metricSum(text, family string, want map[string]string) (float64, error) {
	sum, found := 0.0, false
	for l := range strings.SplitSeq(text, "\n") {
		if !strings.HasPrefix(l, family+"{") && !strings.HasPrefix(l, family+" ") {
			continue
		}
		found = true
		labels := ""
		if i, j := strings.IndexByte(l, '{'), strings.LastIndexByte(l, '}'); i >= 0 && j > i {
			labels = "," + l[i+1:j] + ","
		}
		match := true
		for k, v := range want {
			if !strings.Contains(labels, ","+k+"="+strconv.Quote(v)+",") {
				match = false
			}
		}
		if !match {
			continue
		}
		f := strings.Fields(l)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err != nil {
			return 0, fmt.Errorf("metric line %q: %w", l, err)
		}
		sum += v
	}
	if !found {
		return 0, fmt.Errorf("no metric %s", family)
	}
	return sum, nil
}
