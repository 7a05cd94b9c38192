package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Names the lookup loops resolve: a Service and an outside name, absolute so
// that each is one lookup (A and AAAA).
var loopNames = []string{"kubernetes.default.svc.cluster.local.", "www.example.com."}

// maxSlowest is the slowest lookup the checks accept while the agent is away.
const maxSlowest = 1500 * time.Millisecond

// nodeRules is the agent's footprint on the node: its interface and the
// iptables rules that name the local address (sorted iptables-save lines).
type nodeRules struct {
	iface bool
	rules []string
}

func (r nodeRules) String() string {
	return fmt.Sprintf("interface %s present=%v, %d iptables rules for %s", agentIface, r.iface, len(r.rules), localDNSIP)
}

func readNodeRules(ctx context.Context) (nodeRules, error) {
	var r nodeRules
	// Not /sys/class/net: /sys is the host's (nsenter does not remount it).
	out, err := onNode(ctx, "ip", "-o", "link", "show")
	if err != nil {
		return r, err
	}
	r.iface = strings.Contains(out, ": "+agentIface+":")
	for _, tool := range []string{"iptables-save", "ip6tables-save"} {
		out, err := onNode(ctx, tool)
		if err != nil {
			return r, err
		}
		for l := range strings.SplitSeq(out, "\n") {
			if strings.HasPrefix(l, "-A") && strings.Contains(l, localDNSIP) {
				r.rules = append(r.rules, l)
			}
		}
	}
	sort.Strings(r.rules)
	return r, nil
}

func sameRules(a, b nodeRules) error {
	if a.iface != b.iface || strings.Join(a.rules, "\n") != strings.Join(b.rules, "\n") {
		return fmt.Errorf("node rules changed: before %s, after %s", a, b)
	}
	return nil
}

// ensureLoopPod starts (once) the injected client pod the loops run in.
func (e *env) ensureLoopPod(ctx context.Context) (podSpec, error) {
	pod := podSpec{ns: nsInjected, name: "loop"}
	if _, err := e.exec(ctx, pod.ns, pod.name, "sh", "-c", "exit 0"); err == nil {
		return pod, nil
	}
	if err := e.ensureNamespace(ctx, nsInjected, map[string]string{injectLabel: "enabled"}); err != nil {
		return pod, err
	}
	return pod, e.createPods(ctx, pod)
}

// checkAgentRestart is check 4: lookups from a pod while the agent pod is
// deleted, then while its process is SIGKILLed; the kubelet brings it back
// and it adopts the node's rules (same rules, no duplicates).
func checkAgentRestart(ctx context.Context, e *env) (string, error) {
	pod, err := e.ensureLoopPod(ctx)
	if err != nil {
		return "", err
	}
	old, err := e.waitAgentReady(ctx, 90*time.Second)
	if err != nil {
		return "", err
	}
	before, err := readNodeRules(ctx)
	if err != nil {
		return "", err
	}
	if !before.iface || len(before.rules) == 0 {
		return "", fmt.Errorf("agent running but %s", before)
	}

	// a) the pod deleted: the DaemonSet makes a new one.
	const dur = 30 * time.Second
	loop := e.lookupLoop(ctx, pod.ns, pod.name, dur, 2, loopNames...)
	time.Sleep(4 * time.Second)
	delAt := uptime()
	fmt.Printf("    deleting agent pod %s at uptime %.2f\n", old.name, delAt)
	if _, err := e.kubectl(ctx, "", "-n", agentNS, "delete", "pod", old.name, "--wait=false"); err != nil {
		return "", err
	}
	start := time.Now()
	var fresh agentPod
	err = poll(ctx, 90*time.Second, 500*time.Millisecond, func() error {
		p, err := e.waitAgentReady(ctx, time.Second)
		if err != nil {
			return err
		}
		if p.name == old.name {
			return fmt.Errorf("old agent pod %s still there", old.name)
		}
		fresh = p
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("agent pod not replaced: %w", err)
	}
	back := time.Since(start)
	del := <-loop
	if del.err != nil {
		return "", fmt.Errorf("lookups during pod deletion: %w", del.err)
	}
	afterDelete, err := readNodeRules(ctx)
	if err != nil {
		return "", err
	}

	// b) the process SIGKILLed: the kubelet restarts the container.
	loop = e.lookupLoop(ctx, pod.ns, pod.name, dur, 2, loopNames...)
	time.Sleep(4 * time.Second)
	pid, err := agentPID()
	if err != nil {
		return "", err
	}
	killAt := uptime()
	fmt.Printf("    SIGKILL agent pid %d at uptime %.2f\n", pid, killAt)
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		return "", fmt.Errorf("kill -9 %d: %w", pid, err)
	}
	start = time.Now()
	err = poll(ctx, 90*time.Second, 500*time.Millisecond, func() error {
		p, err := e.waitAgentReady(ctx, time.Second)
		if err != nil {
			return err
		}
		if p.restarts == fresh.restarts {
			return fmt.Errorf("agent pod %s not restarted yet (restarts %s)", p.name, p.restarts)
		}
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("agent not restarted after SIGKILL: %w", err)
	}
	restarted := time.Since(start)
	kill := <-loop
	if kill.err != nil {
		return "", fmt.Errorf("lookups during SIGKILL: %w", kill.err)
	}
	afterKill, err := readNodeRules(ctx)
	if err != nil {
		return "", err
	}

	// The slowest lookup before each disruption is the machine's own noise
	// (CPU shared with other work), shown to tell it from the agent's part.
	fig := fmt.Sprintf("delete: %s (before: %s), new pod Ready in %s; SIGKILL: %s (before: %s), restarted Ready in %s; %d rules kept",
		del.stats, del.stats.slowestBefore(delAt).Round(10*time.Millisecond), back.Round(100*time.Millisecond),
		kill.stats, kill.stats.slowestBefore(killAt).Round(10*time.Millisecond), restarted.Round(100*time.Millisecond), len(before.rules))
	for what, s := range map[string]loopStats{"delete": del.stats, "SIGKILL": kill.stats} {
		for _, l := range s.slow {
			fmt.Printf("    %s: slow lookup %s\n", what, l)
		}
	}
	var errs []string
	for what, s := range map[string]loopStats{"delete": del.stats, "SIGKILL": kill.stats} {
		if s.failed > 0 || s.slowest > maxSlowest {
			errs = append(errs, fmt.Sprintf("%s: %d failed, slowest %s (want 0, < %s)", what, s.failed, s.slowest, maxSlowest))
		}
	}
	if err := sameRules(before, afterDelete); err != nil {
		errs = append(errs, "after delete: "+err.Error())
	}
	if err := sameRules(before, afterKill); err != nil {
		errs = append(errs, "after SIGKILL: "+err.Error())
	}
	if len(errs) > 0 {
		return fig, fmt.Errorf("%s: %s", fig, strings.Join(errs, "; "))
	}
	return fig, nil
}

// agentPID finds the agent's process on the node: argv[0] /agent with
// -localip among its arguments.
func agentPID() (int, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return 0, err
	}
	var found []int
	for _, d := range entries {
		pid, err := strconv.Atoi(d.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", d.Name(), "cmdline"))
		if err != nil {
			continue
		}
		args := strings.Split(string(b), "\x00")
		if len(args) > 1 && args[0] == "/agent" && strings.Contains(string(b), "-localip=") {
			found = append(found, pid)
		}
	}
	if len(found) != 1 {
		return 0, fmt.Errorf("agent processes %v, want exactly one", found)
	}
	return found[0], nil
}

// checkDelete is check 8: `kubectl delete -k` of the install removes the
// agent's interface and rules from the node, and new pods in a labelled
// namespace get ClusterFirst and resolve through kube-dns.
func checkDelete(ctx context.Context, e *env) (string, error) {
	start := time.Now()
	if err := e.install(ctx, "delete", "builtin-certs"); err != nil {
		return "", err
	}
	err := poll(ctx, 90*time.Second, time.Second, func() error {
		pods, err := e.agentPods(ctx)
		if err != nil {
			return err
		}
		if len(pods) > 0 {
			return fmt.Errorf("agent pods left: %+v", pods)
		}
		r, err := readNodeRules(ctx)
		if err != nil {
			return err
		}
		if r.iface || len(r.rules) > 0 {
			return fmt.Errorf("left on the node: %s: %s", r, strings.Join(r.rules, " | "))
		}
		return nil
	})
	if err != nil {
		return "", err
	}
	gone := time.Since(start)
	if out, err := e.kubectl(ctx, "", "get", "mutatingwebhookconfigurations", "-o", "name"); err != nil || strings.Contains(out, "node-local-dns") {
		return "", fmt.Errorf("MutatingWebhookConfiguration left: %q %w", out, err)
	}
	pod := podSpec{ns: nsInjected, name: "after-delete"}
	if err := e.createPods(ctx, pod); err != nil {
		return "", err
	}
	defer e.deletePods(ctx, pod.ns, pod.name)
	text, err := e.exec(ctx, pod.ns, pod.name, "cat", "/etc/resolv.conf")
	if err != nil {
		return "", err
	}
	if err := wantClusterFirst(parseResolvConf(text), pod.ns, e.get("KUBE_DNS_IP")); err != nil {
		return "", fmt.Errorf("new pod: %w", err)
	}
	out, err := e.exec(ctx, pod.ns, pod.name, "dig", "+tries=1", "+time=2", "kubernetes.default.svc.cluster.local", "A")
	if err != nil {
		return "", err
	}
	r, err := parseDig(out)
	if err != nil {
		return "", err
	}
	if r.server != e.get("KUBE_DNS_IP") || r.status != "NOERROR" || len(r.answers) == 0 {
		return "", fmt.Errorf("new pod's lookup: %+v, want an answer from kube-dns", r)
	}
	if out, err := e.exec(ctx, pod.ns, pod.name, "getent", "ahostsv4", "www.example.com"); err != nil || !strings.HasPrefix(out, "192.0.2.80 ") {
		return "", fmt.Errorf("getent ahostsv4 www.example.com: %q %w", out, err)
	}
	return fmt.Sprintf("interface and rules gone %s after delete -k; new pod ClusterFirst, answered by kube-dns %s", gone.Round(100*time.Millisecond), r.server), nil
}
