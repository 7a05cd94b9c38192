package manifests

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	apiextv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apiextclient "k8s.io/apiextensions-apiserver/pkg/client/clientset/clientset"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"

	"github.com/nodelocaldns/nodelocaldns/tests/kubeapi"
	"github.com/nodelocaldns/nodelocaldns/tests/testenv"
)

// certManagerCRDDir finds deploy/crds of the cert-manager module in the
// module cache (the version go.mod requires).
func certManagerCRDDir(t *testing.T) string {
	t.Helper()
	cmd := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/cert-manager/cert-manager")
	cmd.Dir = testenv.RepoRoot()
	out, err := cmd.Output()
	if err != nil {
		testenv.Unavailable(t, fmt.Sprintf("cert-manager module not in the module cache (go list: %v)", err))
	}
	dir := filepath.Join(strings.TrimSpace(string(out)), "deploy", "crds")
	if _, err := os.Stat(dir); err != nil {
		testenv.Unavailable(t, "cert-manager CRDs: "+err.Error())
	}
	return dir
}

// installCRDs creates every CRD in dir and waits until they are established.
func installCRDs(ctx context.Context, t *testing.T, cfg *rest.Config, dir string) {
	t.Helper()
	client, err := apiextclient.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no CRDs in %s (%v)", dir, err)
	}
	var names []string
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		objs, err := decodeAll(scheme(t), data)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		for _, o := range objs {
			crd, ok := o.typed.(*apiextv1.CustomResourceDefinition)
			if !ok {
				continue
			}
			if _, err := client.ApiextensionsV1().CustomResourceDefinitions().Create(ctx, crd, metav1.CreateOptions{}); err != nil {
				t.Fatalf("create CRD %s: %v", crd.Name, err)
			}
			names = append(names, crd.Name)
		}
	}
	for _, name := range names {
		err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
			crd, err := client.ApiextensionsV1().CustomResourceDefinitions().Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				return false, err
			}
			for _, c := range crd.Status.Conditions {
				if c.Type == apiextv1.Established && c.Status == apiextv1.ConditionTrue {
					return true, nil
				}
			}
			return false, nil
		})
		if err != nil {
			t.Fatalf("CRD %s not established: %v", name, err)
		}
	}
	t.Logf("installed %d cert-manager CRDs from %s", len(names), dir)
}

// TestDryRunServerSide sends every object of every installable overlay to a
// real kube-apiserver as a server-side dry-run create with strict field
// validation: the API server's own defaulting, validation (CEL of the
// matchConditions included), admission (priority classes) and cert-manager's
// CRD schemas accept them. Namespaces are created for real first so the
// namespaced objects can be checked.
func TestDryRunServerSide(t *testing.T) {
	crdDir := certManagerCRDDir(t)
	env := kubeapi.StartT(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	installCRDs(ctx, t, env.Config, crdDir)

	dyn, err := dynamic.NewForConfig(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	disc, err := discovery.NewDiscoveryClientForConfig(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	mapper := restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(disc))
	dryRun := metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}, FieldValidation: "Strict"}

	resource := func(u *unstructured.Unstructured) (dynamic.ResourceInterface, error) {
		gvk := u.GroupVersionKind()
		m, err := mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", gvk, err)
		}
		if m.Scope.Name() == meta.RESTScopeNameNamespace {
			return dyn.Resource(m.Resource).Namespace(u.GetNamespace()), nil
		}
		return dyn.Resource(m.Resource), nil
	}

	for _, dir := range overlays(t) {
		t.Run(dir, func(t *testing.T) {
			r := renderRepo(t, dir)
			// Namespaces first, for real, so namespaced objects can be checked.
			for _, o := range r.objects {
				if o.u.GetKind() != "Namespace" {
					continue
				}
				ri, err := resource(o.u)
				if err != nil {
					t.Fatal(err)
				}
				if _, err := ri.Create(ctx, o.u, dryRun); err != nil && !apierrors.IsAlreadyExists(err) {
					t.Errorf("dry run %s: %v", o.id(), err)
				}
				if _, err := ri.Create(ctx, o.u, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
					t.Fatalf("create %s: %v", o.id(), err)
				}
			}
			checked, skipped := 0, 0
			for _, o := range r.objects {
				if o.u.GetKind() == "Namespace" {
					checked++
					continue
				}
				if looseGroups[o.u.GroupVersionKind().Group] {
					t.Logf("skipping %s in the dry run: no %s CRDs here (decoded and checked loosely)", o.id(), o.u.GroupVersionKind().Group)
					skipped++
					continue
				}
				ri, err := resource(o.u)
				if err != nil {
					t.Errorf("%s: %v", o.id(), err)
					continue
				}
				if _, err := ri.Create(ctx, o.u.DeepCopy(), dryRun); err != nil {
					t.Errorf("API server rejects %s: %v", o.id(), err)
					continue
				}
				checked++
			}
			t.Logf("%s: %d objects accepted by the API server, %d skipped", dir, checked, skipped)
		})
	}

	// The check can fail: the same server rejects an unknown field and a
	// broken CEL expression.
	t.Run("rejections", func(t *testing.T) {
		r := renderRepo(t, ".")
		for _, tc := range []struct {
			name, kind string
			mutate     func(u *unstructured.Unstructured)
		}{
			{"unknown field", "Deployment", func(u *unstructured.Unstructured) {
				_ = unstructured.SetNestedField(u.Object, int64(1), "spec", "template", "spec", "bogusField")
			}},
			{"bad CEL", "MutatingWebhookConfiguration", func(u *unstructured.Unstructured) {
				hooks, _, _ := unstructured.NestedSlice(u.Object, "webhooks")
				hook := hooks[0].(map[string]any)
				hook["matchConditions"] = []any{map[string]any{"name": "broken", "expression": "object.spec.("}}
				_ = unstructured.SetNestedSlice(u.Object, hooks, "webhooks")
			}},
		} {
			var target *unstructured.Unstructured
			for _, o := range r.objects {
				if o.u.GetKind() == tc.kind {
					target = o.u.DeepCopy()
				}
			}
			if target == nil {
				t.Fatalf("no %s rendered", tc.kind)
			}
			tc.mutate(target)
			ri, err := resource(target)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := ri.Create(ctx, target, dryRun); err == nil {
				t.Errorf("%s: the API server accepted a %s it must reject", tc.name, tc.kind)
			} else {
				t.Logf("%s rejected as expected: %v", tc.name, err)
			}
		}
	})
}
