package webhook

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/nodelocaldns/nodelocaldns/tests/kubeapi"
	"github.com/nodelocaldns/nodelocaldns/tests/testenv"
	"github.com/nodelocaldns/nodelocaldns/webhook/app"
	"github.com/nodelocaldns/nodelocaldns/webhook/inject"
)

// TestStatusFindsPodsCreatedBeforeLabelling creates pods in a namespace,
// labels it, creates more, and checks that `webhook status` (and the
// kubectl one-liner of docs/webhook.md) name exactly the eligible pods
// created before the label, on a real API server with the real webhook.
func TestStatusFindsPodsCreatedBeforeLabelling(t *testing.T) {
	env := kubeapi.StartT(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cs, err := env.Clientset()
	if err != nil {
		t.Fatal(err)
	}
	createKubeDNS(ctx, t, cs, kubeDNSIP)
	for _, n := range []*corev1.Namespace{namespace("inject", true, nil), namespace("late", false, nil), namespace("plain", false, nil)} {
		if _, err := cs.CoreV1().Namespaces().Create(ctx, n, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	srv, err := StartServer(ctx, ServerOptions{Kubeconfig: env.KubeconfigPath})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Stop() })
	// The shipped configuration, under its shipped name (the default of
	// `webhook status --webhook-config-name`).
	mwc, _, err := ManifestConfiguration(testenv.RepoRoot())
	if err != nil {
		t.Fatal(err)
	}
	mwc = PointAt(mwc, mwc.Name, srv.URL, srv.CAPEM)
	if _, err := cs.AdmissionregistrationV1().MutatingWebhookConfigurations().Create(ctx, mwc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := WaitActive(ctx, cs, "inject", 30*time.Second); err != nil {
		t.Fatal(err)
	}

	create := func(ns, name string, mutate func(*corev1.Pod)) *corev1.Pod {
		t.Helper()
		p := basePod("")
		p.GenerateName, p.Name = "", name
		if mutate != nil {
			mutate(p)
		}
		got, err := cs.CoreV1().Pods(ns).Create(ctx, p, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	// Before the label: not injected.
	create("late", "before", nil)
	create("late", "before-default-policy", func(p *corev1.Pod) { p.Spec.DNSPolicy = corev1.DNSDefault })
	create("late", "before-virtual", func(p *corev1.Pod) {
		p.Spec.NodeSelector = map[string]string{"type": "virtual-kubelet"}
	})
	create("plain", "never-selected", nil)
	labelNamespace(ctx, t, cs, "late")
	if err := WaitActive(ctx, cs, "late", 30*time.Second); err != nil {
		t.Fatal(err)
	}
	after := create("late", "after", nil)
	if after.Labels[inject.InjectedLabel] != "true" || after.Annotations[inject.InjectedAnnotation] != "true" {
		t.Fatalf("pod created after the label not injected (labels %v)", after.Labels)
	}
	create("inject", "injected", nil)

	// `kubectl get pods -l nodelocaldns.io/injected=true` lists the injected ones.
	injected, err := cs.CoreV1().Pods("").List(ctx, metav1.ListOptions{LabelSelector: inject.InjectedLabel + "=true"})
	if err != nil {
		t.Fatal(err)
	}
	if len(injected.Items) != 2 {
		t.Errorf("%d pods carry the injected label, want 2 (late/after, inject/injected)", len(injected.Items))
	}

	check := func(t *testing.T, out string) {
		t.Helper()
		if !strings.Contains(out, "late") || !strings.Contains(out, "before ") && !strings.Contains(out, "before\n") {
			t.Errorf("output does not name late/before:\n%s", out)
		}
		for _, not := range []string{"after", "never-selected", "injected ", "before-virtual"} {
			if strings.Contains(out, not) {
				t.Errorf("output names %q:\n%s", not, out)
			}
		}
	}
	t.Run("in-process", func(t *testing.T) {
		var out, errOut strings.Builder
		if err := app.RunStatus(ctx, []string{"--kubeconfig=" + env.KubeconfigPath}, &out, &errOut); err != nil {
			t.Fatalf("status: %v (%s)", err, errOut.String())
		}
		t.Logf("webhook status:\n%s", out.String())
		check(t, out.String())
		if !strings.Contains(out.String(), "2 namespaces selected; live pods: 2 injected, 2 left alone by the webhook's rules, 1 still use kube-dns") {
			t.Errorf("summary:\n%s", out.String())
		}
	})
	t.Run("binary", func(t *testing.T) {
		bin := testenv.Binary(t, "webhook", "WEBHOOK_BIN")
		out, err := exec.CommandContext(ctx, bin, "status", "--kubeconfig="+env.KubeconfigPath).CombinedOutput()
		if err != nil {
			t.Fatalf("%s status: %v\n%s", bin, err, out)
		}
		check(t, string(out))
	})
	t.Run("kubectl one-liner from docs/webhook.md", func(t *testing.T) {
		kubectl := testenv.Binary(t, "kubectl", "KUBECTL_BIN")
		line := docsOneLiner(t)
		dir := t.TempDir()
		if err := os.Symlink(kubectl, filepath.Join(dir, "kubectl")); err != nil {
			t.Fatal(err)
		}
		cmd := exec.CommandContext(ctx, "bash", "-o", "pipefail", "-c", line)
		cmd.Env = append(os.Environ(), "PATH="+dir+":"+os.Getenv("PATH"), "KUBECONFIG="+env.KubeconfigPath)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%s: %v\n%s", line, err, out)
		}
		t.Logf("one-liner:\n%s", out)
		// The one-liner shows dnsPolicy and the node selector instead of
		// applying the webhook's rules: before-default-policy (Default) and
		// before-virtual (virtual-kubelet) are listed for the reader to skip.
		for _, want := range []string{"before ", "before-default-policy", "Default", "before-virtual", "virtual-kubelet"} {
			if !strings.Contains(string(out), want) {
				t.Errorf("output lacks %q:\n%s", want, out)
			}
		}
		for _, not := range []string{"after", "never-selected", "injected"} {
			if strings.Contains(string(out), not) {
				t.Errorf("output names %q:\n%s", not, out)
			}
		}
	})
}

// docsOneLiner returns the first line of docs/webhook.md that starts with
// "kubectl get ns -l node-local-dns-injection=enabled".
func docsOneLiner(t *testing.T) string {
	t.Helper()
	f, err := os.Open(filepath.Join(testenv.RepoRoot(), "docs", "webhook.md"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		if line := strings.TrimSpace(sc.Text()); strings.HasPrefix(line, "kubectl get ns -l node-local-dns-injection=enabled") {
			return line
		}
	}
	t.Fatal("docs/webhook.md has no kubectl one-liner starting with `kubectl get ns -l node-local-dns-injection=enabled`")
	return ""
}
