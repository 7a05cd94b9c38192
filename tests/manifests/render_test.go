// Package manifests validates the kustomize tree under manifests/: every
// kustomization renders (krusty, no kubectl), every object decodes strictly
// into its Go type, the webhook configuration and the agent DaemonSet carry
// the settings the issues require, and a real kube-apiserver accepts every
// overlay in a server-side dry run.
package manifests

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"

	cmv1 "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	apiextv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"

	"github.com/nodelocaldns/nodelocaldns/tests/testenv"
	"github.com/nodelocaldns/nodelocaldns/tests/yamldocs"
)

// looseGroups are API groups whose Go types are not in this module (their
// CRDs are not available here either): their objects are decoded loosely and
// checked field by field, and skipped in the server-side dry run.
var looseGroups = map[string]bool{
	"cilium.io":             true,
	"monitoring.coreos.com": true,
}

// manifestsDir is the kustomize tree in the repository.
func manifestsDir() string { return filepath.Join(testenv.RepoRoot(), "manifests") }

// object is one rendered object: its raw YAML, its unstructured form, and the
// typed object when its group is known.
type object struct {
	raw   []byte
	u     *unstructured.Unstructured
	typed runtime.Object
}

func (o object) id() string {
	return fmt.Sprintf("%s/%s/%s", o.u.GetKind(), o.u.GetNamespace(), o.u.GetName())
}

// rendered is the output of one kustomization.
type rendered struct {
	dir     string
	objects []object
}

// scheme knows every type the manifests may contain.
func scheme(t testing.TB) *runtime.Scheme {
	t.Helper()
	s := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{clientgoscheme.AddToScheme, cmv1.AddToScheme, apiextv1.AddToScheme} {
		if err := add(s); err != nil {
			t.Fatalf("scheme: %v", err)
		}
	}
	return s
}

// kustomizations returns every buildable kustomization (Components are built
// through the overlays that use them), relative to manifests/, and the
// components.
func kustomizations(t testing.TB) (builds, components []string) {
	t.Helper()
	root := manifestsDir()
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || d.Name() != "kustomization.yaml" {
			return err
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		var head struct{ Kind string }
		if err := yaml.Unmarshal(data, &head); err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		rel, err := filepath.Rel(root, filepath.Dir(path))
		if err != nil {
			return err
		}
		if head.Kind == "Component" {
			components = append(components, rel)
		} else {
			builds = append(builds, rel)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("walk %s: %v", root, err)
	}
	sort.Strings(builds)
	sort.Strings(components)
	return builds, components
}

// overlays are the installable kustomizations: the default and overlays/*.
func overlays(t testing.TB) []string {
	t.Helper()
	builds, _ := kustomizations(t)
	var out []string
	for _, b := range builds {
		if b == "." || strings.HasPrefix(b, "overlays"+string(filepath.Separator)) {
			out = append(out, b)
		}
	}
	if len(out) < 2 {
		t.Fatalf("found only %d installable kustomizations: %v", len(out), out)
	}
	return out
}

// render builds dir (relative to root in fsys) and decodes every object,
// strictly for known groups.
func render(t testing.TB, fsys filesys.FileSystem, root, dir string) rendered {
	t.Helper()
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	resMap, err := k.Run(fsys, filepath.Join(root, dir))
	if err != nil {
		t.Fatalf("kustomize build %s: %v", dir, err)
	}
	out, err := resMap.AsYaml()
	if err != nil {
		t.Fatalf("kustomize build %s: yaml: %v", dir, err)
	}
	objs, err := decodeAll(scheme(t), out)
	if err != nil {
		t.Fatalf("%s: %v", dir, err)
	}
	return rendered{dir: dir, objects: objs}
}

// renderRepo renders dir of the repository's manifests/.
func renderRepo(t testing.TB, dir string) rendered {
	t.Helper()
	return render(t, filesys.MakeFsOnDisk(), manifestsDir(), dir)
}

// decodeAll splits a multi-document YAML stream and decodes every document:
// into its Go type, rejecting unknown and duplicate fields, when the scheme
// knows the kind; loosely when its group is one of looseGroups; an error for
// anything else.
func decodeAll(s *runtime.Scheme, stream []byte) ([]object, error) {
	strict := serializer.NewCodecFactory(s, serializer.EnableStrict).UniversalDeserializer()
	docs, err := yamldocs.Split(stream)
	if err != nil {
		return nil, err
	}
	var objs []object
	for i, doc := range docs {
		u := &unstructured.Unstructured{}
		if err := yaml.Unmarshal(doc, &u.Object); err != nil {
			return nil, fmt.Errorf("document %d: %w", i, err)
		}
		gvk := u.GroupVersionKind()
		o := object{raw: doc, u: u}
		switch {
		case s.Recognizes(gvk):
			typed, _, err := strict.Decode(doc, nil, nil)
			if err != nil {
				return nil, fmt.Errorf("%s %s/%s: strict decode: %w", gvk.Kind, u.GetNamespace(), u.GetName(), err)
			}
			o.typed = typed
		case looseGroups[gvk.Group]:
		default:
			return nil, fmt.Errorf("%s %s: no Go type and not a known CRD group", gvk, u.GetName())
		}
		objs = append(objs, o)
	}
	return objs, nil
}

// get returns the typed object of kind with name, failing the test if absent.
func get[T runtime.Object](t testing.TB, r rendered, name string) T {
	t.Helper()
	for _, o := range r.objects {
		if v, ok := o.typed.(T); ok && o.u.GetName() == name {
			return v
		}
	}
	var zero T
	t.Fatalf("%s: no %T named %q", r.dir, zero, name)
	return zero
}

// all returns every typed object of type T.
func all[T runtime.Object](r rendered) []T {
	var out []T
	for _, o := range r.objects {
		if v, ok := o.typed.(T); ok {
			out = append(out, v)
		}
	}
	return out
}

// loose returns the unstructured objects of a group/kind.
func loose(r rendered, gk schema.GroupKind) []*unstructured.Unstructured {
	var out []*unstructured.Unstructured
	for _, o := range r.objects {
		if o.u.GroupVersionKind().GroupKind() == gk {
			out = append(out, o.u)
		}
	}
	return out
}

func TestRenderEveryKustomization(t *testing.T) {
	builds, components := kustomizations(t)
	for _, dir := range builds {
		t.Run(dir, func(t *testing.T) {
			r := renderRepo(t, dir)
			if len(r.objects) == 0 {
				t.Fatalf("%s renders no objects", dir)
			}
			seen := map[string]bool{}
			for _, o := range r.objects {
				if seen[o.id()] {
					t.Errorf("%s renders %s twice", dir, o.id())
				}
				seen[o.id()] = true
				if o.u.GetLabels()["app.kubernetes.io/name"] != "node-local-dns" {
					t.Errorf("%s: %s lacks the label app.kubernetes.io/name=node-local-dns", dir, o.id())
				}
			}
		})
	}
	// Every component is used by at least one installable overlay.
	used := map[string]bool{}
	for _, dir := range overlays(t) {
		data, err := os.ReadFile(filepath.Join(manifestsDir(), dir, "kustomization.yaml"))
		if err != nil {
			t.Fatal(err)
		}
		var k struct{ Components []string }
		if err := yaml.Unmarshal(data, &k); err != nil {
			t.Fatal(err)
		}
		for _, c := range k.Components {
			used[filepath.Clean(filepath.Join(dir, c))] = true
		}
	}
	for _, c := range components {
		if !used[c] {
			t.Errorf("component %s is not used by any overlay", c)
		}
	}
}

func TestDecodeStrictRejectsUnknownFields(t *testing.T) {
	s := scheme(t)
	for _, tc := range []struct {
		name, doc string
		wantErr   string
	}{
		{"unknown field in Deployment", "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: x\nspec:\n  replica: 2\n", "unknown field"},
		{"unknown field in Certificate", "apiVersion: cert-manager.io/v1\nkind: Certificate\nmetadata:\n  name: x\nspec:\n  secretNam: y\n", "unknown field"},
		{"duplicate field", "apiVersion: v1\nkind: Service\nmetadata:\n  name: a\n  name: b\n", "already set"},
		{"unknown kind", "apiVersion: example.com/v1\nkind: Thing\nmetadata:\n  name: x\n", "no Go type"},
		{"valid Service", "apiVersion: v1\nkind: Service\nmetadata:\n  name: x\nspec:\n  clusterIP: None\n", ""},
		{"loose Cilium kind", "apiVersion: cilium.io/v2\nkind: CiliumLocalRedirectPolicy\nmetadata:\n  name: x\nspec:\n  anything: 1\n", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := decodeAll(s, []byte(tc.doc))
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("error = %v, want one containing %q", err, tc.wantErr)
			}
		})
	}
}

// TestDecodeEveryObject checks that each installable overlay contains only
// objects with a Go type or from a known CRD group, and the objects every
// install needs.
func TestDecodeEveryObject(t *testing.T) {
	for _, dir := range overlays(t) {
		t.Run(dir, func(t *testing.T) {
			r := renderRepo(t, dir)
			var ids []string
			for _, o := range r.objects {
				ids = append(ids, o.id())
			}
			for _, want := range []string{
				"ConfigMap/kube-system/node-local-dns-settings",
				"ConfigMap/kube-system/node-local-dns",
				"DaemonSet/kube-system/node-local-dns",
				"Service/kube-system/kube-dns-upstream",
				"Service/kube-system/node-local-dns",
				"Namespace//node-local-dns",
				"Deployment/node-local-dns/node-local-dns-webhook",
				"Service/node-local-dns/node-local-dns-webhook",
				"PodDisruptionBudget/node-local-dns/node-local-dns-webhook",
				"MutatingWebhookConfiguration//node-local-dns-webhook",
				"Role/kube-system/node-local-dns-webhook-kube-dns",
			} {
				if !slices.Contains(ids, want) {
					t.Errorf("%s lacks %s (has %v)", dir, want, ids)
				}
			}
		})
	}
}
