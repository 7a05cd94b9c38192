package main

import (
	"context"
	"fmt"
	"math/rand"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// checkRollingUpdate is check 3: the agent DaemonSet rolled (maxSurge: the
// new pod starts beside the old one) while a pod looks names up in parallel
// loops; no lookup may fail.
func checkRollingUpdate(ctx context.Context, e *env) (string, error) {
	pod, err := e.ensureLoopPod(ctx)
	if err != nil {
		return "", err
	}
	old, err := e.waitAgentReady(ctx, 90*time.Second)
	if err != nil {
		return "", err
	}
	const dur = 40 * time.Second
	loop := e.lookupLoop(ctx, pod.ns, pod.name, dur, 4, loopNames...)
	time.Sleep(5 * time.Second)
	start := time.Now()
	if _, err := e.kubectl(ctx, "", "-n", agentNS, "rollout", "restart", "daemonset/"+agentDS); err != nil {
		return "", err
	}
	if _, err := e.kubectl(ctx, "", "-n", agentNS, "rollout", "status", "daemonset/"+agentDS, "--timeout=120s"); err != nil {
		return "", err
	}
	rolled := time.Since(start)
	now, err := e.waitAgentReady(ctx, 60*time.Second)
	if err != nil {
		return "", err
	}
	res := <-loop
	if res.err != nil {
		return "", res.err
	}
	fig := fmt.Sprintf("%s; rollout took %s", res.stats, rolled.Round(100*time.Millisecond))
	if now.name == old.name {
		return fig, fmt.Errorf("%s: the agent pod %s was not replaced", fig, old.name)
	}
	if rolled > dur-5*time.Second {
		return fig, fmt.Errorf("%s: the rollout outlasted the lookups", fig)
	}
	if res.stats.failed > 0 {
		return fig, fmt.Errorf("%s: want 0 failed", fig)
	}
	return fig, nil
}

// checkWebhookRollout is check 5: pods are created in a labelled namespace
// while the webhook Deployment rolls; every one must be injected. The pods
// never run (their nodeSelector matches no node): admission is what counts.
func checkWebhookRollout(ctx context.Context, e *env) (string, error) {
	const ns, n = "e2e-webhook-rollout", 40
	if err := e.ensureNamespace(ctx, ns, map[string]string{injectLabel: "enabled"}); err != nil {
		return "", err
	}
	defer func() { _, _ = e.kubectl(context.Background(), "", "delete", "namespace", ns, "--wait=false") }()
	if _, err := e.kubectl(ctx, "", "-n", "node-local-dns", "rollout", "restart", "deployment/node-local-dns-webhook"); err != nil {
		return "", err
	}
	start := time.Now()
	rolled := make(chan error, 1)
	go func() {
		_, err := e.kubectl(ctx, "", "-n", "node-local-dns", "rollout", "status", "deployment/node-local-dns-webhook", "--timeout=120s")
		rolled <- err
	}()
	created := 0
	for i := range n {
		y := fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata:
  name: p%d
  namespace: %s
spec:
  nodeSelector: {e2e-nowhere: "true"}
  containers:
  - name: c
    image: %s
    imagePullPolicy: Never
`, i, ns, e.get("CLIENT_IMAGE"))
		if _, err := e.kubectl(ctx, y, "create", "-f", "-"); err != nil {
			return "", err
		}
		created++
		time.Sleep(150 * time.Millisecond)
	}
	if err := <-rolled; err != nil {
		return "", err
	}
	took := time.Since(start)
	out, err := e.kubectl(ctx, "", "-n", ns, "get", "pods", "-o", `jsonpath={range .items[*]}{.metadata.name} {.spec.dnsPolicy}{"\n"}{end}`)
	if err != nil {
		return "", err
	}
	missed := 0
	var names []string
	for l := range strings.SplitSeq(strings.TrimSpace(out), "\n") {
		f := strings.Fields(l)
		if len(f) == 2 && f[1] != "None" {
			missed++
			names = append(names, f[0])
		}
	}
	fig := fmt.Sprintf("%d pods created during a %s rollout, %d not injected", created, took.Round(100*time.Millisecond), missed)
	if missed > 0 {
		return fig, fmt.Errorf("%s: %v (want 0)", fig, names)
	}
	return fig, nil
}

var dnsperfQPS = regexp.MustCompile(`Queries per second:\s+([0-9.]+)`)
var dnsperfLost = regexp.MustCompile(`Queries lost:\s+([0-9]+)`)

// checkDnsperf is check 6 (the seed drill in-cluster): dnsperf from a pod
// against the agent and directly against kube-dns (CoreDNS), same query
// file; figures, not a pass/fail on speed.
func checkDnsperf(ctx context.Context, e *env) (string, error) {
	pod, err := e.ensureLoopPod(ctx)
	if err != nil {
		return "", err
	}
	var q strings.Builder
	for _, n := range []string{"kubernetes.default.svc.cluster.local", "kube-dns.kube-system.svc.cluster.local", "www.example.com", "api.example.net"} {
		fmt.Fprintf(&q, "%s A\n", n)
	}
	for i := 1; i <= 50; i++ {
		fmt.Fprintf(&q, "host%d.example.com A\n", i)
	}
	if _, err := e.kubectl(ctx, q.String(), "-n", pod.ns, "exec", "-i", pod.name, "--", "sh", "-c", "cat > /tmp/queries"); err != nil {
		return "", err
	}
	qps := map[string]float64{}
	lost := map[string]int{}
	for _, server := range []string{localDNSIP, e.get("KUBE_DNS_IP")} {
		out, err := e.exec(ctx, pod.ns, pod.name, "dnsperf", "-s", server, "-d", "/tmp/queries", "-l", "10", "-c", "4", "-q", "100", "-t", "2")
		if err != nil {
			return "", err
		}
		m := dnsperfQPS.FindStringSubmatch(out)
		if m == nil {
			return "", fmt.Errorf("dnsperf -s %s: no QPS in %q", server, out)
		}
		qps[server], _ = strconv.ParseFloat(m[1], 64)
		if m := dnsperfLost.FindStringSubmatch(out); m != nil {
			lost[server], _ = strconv.Atoi(m[1])
		}
	}
	a, k := qps[localDNSIP], qps[e.get("KUBE_DNS_IP")]
	if a == 0 || k == 0 {
		return "", fmt.Errorf("dnsperf: agent %.0f QPS, kube-dns %.0f QPS", a, k)
	}
	return fmt.Sprintf("agent %.0f QPS (lost %d), kube-dns/CoreDNS %.0f QPS (lost %d), ratio %.2fx (blog: 13.9k -> 25.2k, 1.81x)",
		a, lost[localDNSIP], k, lost[e.get("KUBE_DNS_IP")], a/k), nil
}

// checkInterception is check 7: with the interception overlay the agent
// also answers on the kube-dns IP, so a ClusterFirst pod's queries reach it
// (the agent counts them, CoreDNS sees none over UDP); after the overlay is
// deleted, kube-dns answers again.
func checkInterception(ctx context.Context, e *env) (string, error) {
	if err := e.install(ctx, "apply", "interception"); err != nil {
		return "", err
	}
	if _, err := e.waitAgentReady(ctx, 120*time.Second); err != nil {
		return "", err
	}
	if err := e.ensureNamespace(ctx, nsUnlabelled, nil); err != nil {
		return "", err
	}
	pod := podSpec{ns: nsUnlabelled, name: "cluster-first"}
	if err := e.createPods(ctx, pod); err != nil {
		return "", err
	}
	kubeDNS := e.get("KUBE_DNS_IP")
	const n = 5
	ask := func() (float64, float64, error) {
		a0, err := e.agentRequests(ctx)
		if err != nil {
			return 0, 0, err
		}
		c0, err := e.corednsRequests(ctx, "udp")
		if err != nil {
			return 0, 0, err
		}
		for range n {
			name := fmt.Sprintf("int-%d.example.com", rand.Int63())
			out, err := e.exec(ctx, pod.ns, pod.name, "dig", "+tries=1", "+time=2", name, "A")
			if err != nil {
				return 0, 0, err
			}
			r, err := parseDig(out)
			if err != nil {
				return 0, 0, err
			}
			if r.server != kubeDNS || r.status != "NXDOMAIN" {
				return 0, 0, fmt.Errorf("dig %s: %+v, want NXDOMAIN from %s", name, r, kubeDNS)
			}
		}
		a1, _ := e.agentRequests(ctx) // the agent may be gone
		c1, err := e.corednsRequests(ctx, "udp")
		if err != nil {
			return 0, 0, err
		}
		return a1 - a0, c1 - c0, nil
	}
	agentOn, corednsOn, err := ask()
	if err != nil {
		return "", err
	}
	if err := e.install(ctx, "delete", "interception"); err != nil {
		return "", err
	}
	err = poll(ctx, 90*time.Second, time.Second, func() error {
		pods, err := e.agentPods(ctx)
		if err != nil || len(pods) > 0 {
			return fmt.Errorf("agent pods left: %+v %w", pods, err)
		}
		return nil
	})
	if err != nil {
		return "", err
	}
	c0, err := e.corednsRequests(ctx, "udp")
	if err != nil {
		return "", err
	}
	out, err := e.exec(ctx, pod.ns, pod.name, "dig", "+tries=1", "+time=2", "www.example.com", "A")
	if err != nil {
		return "", err
	}
	r, err := parseDig(out)
	if err != nil {
		return "", err
	}
	c1, err := e.corednsRequests(ctx, "udp")
	if err != nil {
		return "", err
	}
	e.deletePods(ctx, pod.ns, pod.name)
	fig := fmt.Sprintf("intercepted: %d queries to %s, agent +%.0f, CoreDNS UDP +%.0f; after delete: CoreDNS UDP +%.0f, %s",
		n, kubeDNS, agentOn, corednsOn, c1-c0, r.status)
	if agentOn < n || corednsOn != 0 || c1-c0 < 1 || r.status != "NOERROR" {
		return fig, fmt.Errorf("%s: want agent +%d, CoreDNS UDP +0, then CoreDNS answering", fig, n)
	}
	return fig, nil
}
