package main

import (
	"context"
	"fmt"
	"strings"
	"time"
)

// podSpec describes a client pod.
type podSpec struct {
	ns, name    string
	labels      map[string]string
	annotations map[string]string
	hostNetwork bool
	dnsPolicy   string
}

// yaml renders the pod: the client image, sleeping.
func (p podSpec) yaml(image string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "apiVersion: v1\nkind: Pod\nmetadata:\n  name: %s\n  namespace: %s\n", p.name, p.ns)
	writeMap(&b, "labels", p.labels)
	writeMap(&b, "annotations", p.annotations)
	b.WriteString("spec:\n  terminationGracePeriodSeconds: 1\n  enableServiceLinks: false\n")
	if p.hostNetwork {
		b.WriteString("  hostNetwork: true\n")
	}
	if p.dnsPolicy != "" {
		fmt.Fprintf(&b, "  dnsPolicy: %s\n", p.dnsPolicy)
	}
	fmt.Fprintf(&b, "  containers:\n  - name: client\n    image: %s\n    imagePullPolicy: Never\n    command: [\"/bin/sleep\", \"100000\"]\n", image)
	return b.String()
}

func writeMap(b *strings.Builder, key string, m map[string]string) {
	if len(m) == 0 {
		return
	}
	fmt.Fprintf(b, "  %s:\n", key)
	for k, v := range m {
		fmt.Fprintf(b, "    %s: %q\n", k, v)
	}
}

// ensureNamespace creates (or relabels) a namespace.
func (e *env) ensureNamespace(ctx context.Context, ns string, labels map[string]string) error {
	y := fmt.Sprintf("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: %s\n", ns)
	var b strings.Builder
	writeMap(&b, "labels", labels)
	_, err := e.kubectl(ctx, y+b.String(), "apply", "-f", "-")
	return err
}

// createPods creates the pods and waits until all are Ready.
func (e *env) createPods(ctx context.Context, pods ...podSpec) error {
	var docs []string
	for _, p := range pods {
		docs = append(docs, p.yaml(e.get("CLIENT_IMAGE")))
	}
	if _, err := e.kubectl(ctx, strings.Join(docs, "---\n"), "create", "-f", "-"); err != nil {
		return err
	}
	for _, p := range pods {
		if _, err := e.kubectl(ctx, "", "-n", p.ns, "wait", "--for=condition=Ready", "pod/"+p.name, "--timeout=120s"); err != nil {
			return err
		}
	}
	return nil
}

// deletePods removes pods without waiting for them.
func (e *env) deletePods(ctx context.Context, ns string, names ...string) {
	args := append([]string{"-n", ns, "delete", "pod", "--ignore-not-found", "--wait=false", "--grace-period=1"}, names...)
	_, _ = e.kubectl(ctx, "", args...)
}

// exec runs a command in a pod's container.
func (e *env) exec(ctx context.Context, ns, pod string, cmd ...string) (string, error) {
	return e.kubectl(ctx, "", append([]string{"-n", ns, "exec", pod, "--"}, cmd...)...)
}

// agentPods lists the agent DaemonSet's pods (name, phase, ready,
// restartCount).
func (e *env) agentPods(ctx context.Context) ([]agentPod, error) {
	out, err := e.kubectl(ctx, "", "-n", agentNS, "get", "pods", "-l", "k8s-app=node-local-dns", "-o",
		`jsonpath={range .items[*]}{.metadata.name} {.metadata.deletionTimestamp} {.status.containerStatuses[0].ready} {.status.containerStatuses[0].restartCount}{"\n"}{end}`)
	if err != nil {
		return nil, err
	}
	return parseAgentPods(out), nil
}

type agentPod struct {
	name        string
	terminating bool
	ready       bool
	restarts    string
}

func parseAgentPods(out string) []agentPod {
	var pods []agentPod
	for l := range strings.SplitSeq(strings.TrimSpace(out), "\n") {
		f := strings.Fields(l)
		if len(f) == 0 {
			continue
		}
		p := agentPod{name: f[0]}
		// deletionTimestamp is empty for a live pod, so 3 fields then.
		switch len(f) {
		case 4:
			p.terminating, p.ready, p.restarts = true, f[2] == "true", f[3]
		case 3:
			p.ready, p.restarts = f[1] == "true", f[2]
		}
		pods = append(pods, p)
	}
	return pods
}

// waitAgentReady waits until exactly one agent pod runs and is Ready and
// returns it.
func (e *env) waitAgentReady(ctx context.Context, timeout time.Duration) (agentPod, error) {
	var ready agentPod
	err := poll(ctx, timeout, time.Second, func() error {
		pods, err := e.agentPods(ctx)
		if err != nil {
			return err
		}
		if len(pods) != 1 || pods[0].terminating || !pods[0].ready {
			return fmt.Errorf("agent pods %+v, want one Ready", pods)
		}
		ready = pods[0]
		return nil
	})
	return ready, err
}
