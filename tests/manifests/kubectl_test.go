package manifests

import (
	"bytes"
	"context"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nodelocaldns/nodelocaldns/tests/kubeapi"
	"github.com/nodelocaldns/nodelocaldns/tests/testenv"
)

// kubectl runs the real kubectl (built from the Go module proxy by `make
// tools`) against kubeconfig and returns its combined output.
func kubectl(ctx context.Context, t *testing.T, bin, kubeconfig string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.CommandContext(ctx, bin, append([]string{"--kubeconfig", kubeconfig}, args...)...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

// TestKubectlApplyDefaultInstall does what the README tells an operator:
// `kubectl apply -k manifests` against a real kube-apiserver (with
// cert-manager's CRDs), then checks that kubectl renders the same objects as
// the tests' kustomize library, that every object now exists, that nothing
// differs afterwards (`kubectl diff`), that applying again succeeds, and that
// `kubectl delete -k manifests` uninstalls.
func TestKubectlApplyDefaultInstall(t *testing.T) {
	bin := testenv.Binary(t, "kubectl", "KUBECTL_BIN")
	crdDir := certManagerCRDDir(t)
	env := kubeapi.StartT(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	installCRDs(ctx, t, env.Config, crdDir)
	dir := manifestsDir()

	// kubectl's own kustomize renders the objects our tests check.
	out, err := kubectl(ctx, t, bin, env.KubeconfigPath, "kustomize", dir)
	if err != nil {
		t.Fatalf("kubectl kustomize manifests: %v\n%s", err, out)
	}
	objs, err := decodeAll(scheme(t), []byte(out))
	if err != nil {
		t.Fatalf("decode kubectl kustomize output: %v", err)
	}
	var got, want []string
	for _, o := range objs {
		got = append(got, o.id())
	}
	for _, o := range renderRepo(t, ".").objects {
		want = append(want, o.id())
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("kubectl kustomize renders\n%v\nthe kustomize library renders\n%v", got, want)
	}

	out, err = kubectl(ctx, t, bin, env.KubeconfigPath, "apply", "-k", dir)
	if err != nil {
		t.Fatalf("kubectl apply -k manifests: %v\n%s", err, out)
	}
	t.Logf("kubectl apply -k manifests:\n%s", out)

	out, err = kubectl(ctx, t, bin, env.KubeconfigPath, "get", "-k", dir, "-o", "name")
	if err != nil {
		t.Fatalf("kubectl get -k manifests: %v\n%s", err, out)
	}
	if n := len(strings.Fields(out)); n != len(want) {
		t.Errorf("kubectl get -k manifests finds %d objects, %d were rendered:\n%s", n, len(want), out)
	}

	// Nothing left to change: `kubectl diff` exits 0 only when the live
	// objects equal what the manifests would make of them (a server-side
	// dry run). (A second client-side apply reports the PodDisruptionBudget
	// "configured" even when nothing differs: its selector's patch strategy
	// is "replace", so kubectl always sends it.)
	out, err = kubectl(ctx, t, bin, env.KubeconfigPath, "diff", "-k", dir)
	if err != nil {
		t.Errorf("kubectl diff -k manifests after apply: %v\n%s", err, out)
	}
	out, err = kubectl(ctx, t, bin, env.KubeconfigPath, "apply", "-k", dir)
	if err != nil {
		t.Fatalf("second kubectl apply -k manifests: %v\n%s", err, out)
	}

	out, err = kubectl(ctx, t, bin, env.KubeconfigPath, "delete", "-k", dir, "--wait=false")
	if err != nil {
		t.Fatalf("kubectl delete -k manifests: %v\n%s", err, out)
	}
	if n := strings.Count(out, " deleted"); n != len(want) {
		t.Errorf("kubectl delete -k manifests deleted %d objects, want %d:\n%s", n, len(want), out)
	}
}
