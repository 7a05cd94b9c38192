package helm

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/restmapper"

	"github.com/nodelocaldns/nodelocaldns/tests/kubeapi"
	"github.com/nodelocaldns/nodelocaldns/tests/testenv"
)

// crdGroups are the API groups whose CRDs are not available here: their
// objects are left out of the server-side checks (tests/manifests decodes
// them loosely).
var crdGroups = map[string]bool{"cilium.io": true, "monitoring.coreos.com": true}

// cluster is a real kube-apiserver with cert-manager's CRDs.
type cluster struct {
	env    *kubeapi.Env
	dyn    dynamic.Interface
	mapper meta.RESTMapper
}

func startCluster(ctx context.Context, t *testing.T) *cluster {
	t.Helper()
	crds := certManagerCRDs(t)
	env := kubeapi.StartT(t)
	dyn, err := dynamic.NewForConfig(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	c := &cluster{env: env, dyn: dyn}
	for _, crd := range crds {
		if _, err := c.resource(t, crd).Create(ctx, crd, metav1.CreateOptions{}); err != nil {
			t.Fatalf("create CRD %s: %v", crd.GetName(), err)
		}
	}
	crdRes := dyn.Resource(apiextGVR)
	for _, crd := range crds {
		err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
			u, err := crdRes.Get(ctx, crd.GetName(), metav1.GetOptions{})
			if err != nil {
				return false, err
			}
			conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
			for _, cond := range conds {
				m, _ := cond.(map[string]any)
				if m["type"] == "Established" && m["status"] == "True" {
					return true, nil
				}
			}
			return false, nil
		})
		if err != nil {
			t.Fatalf("CRD %s not established: %v", crd.GetName(), err)
		}
	}
	disc, err := discovery.NewDiscoveryClientForConfig(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	c.mapper = restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(disc))
	return c
}

// certManagerCRDs reads deploy/crds of the cert-manager module go.mod
// requires, from the module cache.
func certManagerCRDs(t *testing.T) []*unstructured.Unstructured {
	t.Helper()
	cmd := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/cert-manager/cert-manager")
	cmd.Dir = testenv.RepoRoot()
	out, err := cmd.Output()
	if err != nil {
		testenv.Unavailable(t, fmt.Sprintf("cert-manager module not in the module cache (go list: %v)", err))
	}
	files, _ := filepath.Glob(filepath.Join(strings.TrimSpace(string(out)), "deploy", "crds", "*.yaml"))
	if len(files) == 0 {
		testenv.Unavailable(t, "no cert-manager CRDs in the module cache")
	}
	var crds []*unstructured.Unstructured
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		objs, err := Decode(data)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		for _, o := range objs {
			if o["kind"] == "CustomResourceDefinition" {
				crds = append(crds, &unstructured.Unstructured{Object: o})
			}
		}
	}
	return crds
}

var apiextGVR = schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}

// resource returns the dynamic client for u's kind and namespace.
func (c *cluster) resource(t *testing.T, u *unstructured.Unstructured) dynamic.ResourceInterface {
	t.Helper()
	gvk := u.GroupVersionKind()
	if gvk.Kind == "CustomResourceDefinition" {
		return c.dyn.Resource(apiextGVR)
	}
	m, err := c.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	if err != nil {
		t.Fatalf("%s: %v", gvk, err)
	}
	if m.Scope.Name() == meta.RESTScopeNameNamespace {
		return c.dyn.Resource(m.Resource).Namespace(u.GetNamespace())
	}
	return c.dyn.Resource(m.Resource)
}

// TestAPIServer checks the chart on a real kube-apiserver:
//   - every scenario's `helm template` output is accepted in a server-side
//     dry run with strict field validation (create, or update for objects the
//     install below already made);
//   - `helm install` of the default values into one API server and the
//     default kustomization created in another leave the same objects (as
//     the servers store them, defaults included; server-set metadata and
//     Helm's labels and annotations aside).
func TestAPIServer(t *testing.T) {
	helm := helmBin(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	fromHelm := startCluster(ctx, t)
	fromKustomize := startCluster(ctx, t)

	// helm install, for real.
	if out, err := Run(helm, "install", ReleaseName, ChartDir(), "--namespace", "kube-system",
		"--kubeconfig", fromHelm.env.KubeconfigPath, "--timeout", "2m"); err != nil {
		t.Fatalf("helm install: %v\n%s", err, out)
	}
	// The same settings from kustomize, created as kubectl apply would.
	k, err := Kustomize(Kustomization{Dir: "."}, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	fromKustomize.createAll(ctx, t, k)

	t.Run("same cluster", func(t *testing.T) {
		n := 0
		var diffs []string
		for _, o := range k {
			u := &unstructured.Unstructured{Object: o}
			a := fromKustomize.get(ctx, t, u)
			b := fromHelm.get(ctx, t, u)
			if b == nil {
				diffs = append(diffs, o.ID()+": not in the cluster after helm install")
				continue
			}
			var d []string
			diffValue("", stored(a), stored(b), &d)
			for _, line := range d {
				diffs = append(diffs, o.ID()+": "+strings.Replace(strings.Replace(line, "kustomize", "kubectl apply -k", 1), "chart", "helm install", 1))
			}
			n++
		}
		if len(diffs) > 0 {
			t.Errorf("helm install and the kustomization leave different objects:\n%s", strings.Join(diffs, "\n"))
		}
		t.Logf("%d objects the same after helm install and after applying the kustomization", n)
	})

	for _, sc := range append(scenarios, scenario{name: "corefile options", values: corefileValues}) {
		t.Run("dry run/"+sc.name, func(t *testing.T) {
			objs, err := Template(helm, sc.values...)
			if err != nil {
				t.Fatal(err)
			}
			checked, skipped := 0, 0
			for _, o := range objs {
				u := &unstructured.Unstructured{Object: o}
				if crdGroups[u.GroupVersionKind().Group] {
					skipped++
					continue
				}
				if err := fromHelm.dryRun(ctx, t, u); err != nil {
					t.Errorf("the API server rejects %s: %v", o.ID(), err)
					continue
				}
				checked++
			}
			t.Logf("%d objects accepted, %d of CRDs not installed here skipped", checked, skipped)
		})
	}

	// The dry run can fail: an unknown field is rejected.
	t.Run("dry run rejects", func(t *testing.T) {
		objs, err := Template(helm)
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range objs {
			if o["kind"] != "DaemonSet" {
				continue
			}
			u := (&unstructured.Unstructured{Object: o}).DeepCopy()
			_ = unstructured.SetNestedField(u.Object, int64(1), "spec", "template", "spec", "bogusField")
			if err := fromHelm.dryRun(ctx, t, u); err == nil {
				t.Error("the API server accepted a DaemonSet with an unknown field")
			}
			return
		}
		t.Fatal("no DaemonSet rendered")
	})
}

// createAll creates the objects for real, namespaces first.
func (c *cluster) createAll(ctx context.Context, t *testing.T, objs []Object) {
	t.Helper()
	for _, first := range []bool{true, false} {
		for _, o := range objs {
			u := &unstructured.Unstructured{Object: o}
			if (u.GetKind() == "Namespace") != first {
				continue
			}
			if _, err := c.resource(t, u).Create(ctx, u.DeepCopy(), metav1.CreateOptions{FieldValidation: "Strict"}); err != nil {
				t.Fatalf("create %s: %v", o.ID(), err)
			}
		}
	}
}

// get returns the stored object (nil when absent).
func (c *cluster) get(ctx context.Context, t *testing.T, u *unstructured.Unstructured) map[string]any {
	t.Helper()
	got, err := c.resource(t, u).Get(ctx, u.GetName(), metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		t.Fatalf("get %s/%s: %v", u.GetKind(), u.GetName(), err)
	}
	return got.Object
}

// dryRun sends u as a server-side dry-run create with strict field
// validation, or as an update when it exists already.
func (c *cluster) dryRun(ctx context.Context, t *testing.T, u *unstructured.Unstructured) error {
	t.Helper()
	ri := c.resource(t, u)
	_, err := ri.Create(ctx, u.DeepCopy(), metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}, FieldValidation: "Strict"})
	if !apierrors.IsAlreadyExists(err) {
		return err
	}
	cur, err := ri.Get(ctx, u.GetName(), metav1.GetOptions{})
	if err != nil {
		return err
	}
	upd := u.DeepCopy()
	upd.SetResourceVersion(cur.GetResourceVersion())
	_, err = ri.Update(ctx, upd, metav1.UpdateOptions{DryRun: []string{metav1.DryRunAll}, FieldValidation: "Strict"})
	return err
}

// stored strips what the server sets per object (uid, versions, times,
// managed fields, status) and what Helm adds (labels, release annotations).
func stored(o map[string]any) map[string]any {
	if o == nil {
		return nil
	}
	u := (&unstructured.Unstructured{Object: o}).DeepCopy().Object
	md, _ := u["metadata"].(map[string]any)
	for _, f := range []string{"uid", "resourceVersion", "creationTimestamp", "managedFields", "generation"} {
		delete(md, f)
	}
	if ann, ok := md["annotations"].(map[string]any); ok {
		for k := range ann {
			if strings.HasPrefix(k, "meta.helm.sh/") {
				delete(ann, k)
			}
		}
		if len(ann) == 0 {
			delete(md, "annotations")
		}
	}
	delete(u, "status")
	if u["kind"] == "Service" { // each API server allocates its own ClusterIPs
		if spec, ok := u["spec"].(map[string]any); ok && spec["clusterIP"] != "None" {
			delete(spec, "clusterIP")
			delete(spec, "clusterIPs")
		}
	}
	return Normalize(Object(u))
}
