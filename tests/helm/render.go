// Package helm tests the Helm chart in manifests/helm/nodelocaldns against
// the kustomize install in manifests/: for the same settings both must render
// the same objects (the chart adds only Helm's own labels), helm lint must
// pass, and a real kube-apiserver must accept the chart's objects and hold
// the same cluster after `helm install` as after applying the kustomization.
package helm

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"sort"
	"strings"

	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"

	"github.com/nodelocaldns/nodelocaldns/tests/testenv"
)

// ReleaseName is the release the tests render and install.
const ReleaseName = "nodelocaldns"

// helmLabels are the labels the chart adds to every object's metadata and the
// kustomize install has not; they are ignored when the two are compared.
var helmLabels = []string{"helm.sh/chart", "app.kubernetes.io/managed-by", "app.kubernetes.io/instance", "app.kubernetes.io/version"}

// ChartDir is the chart in the repository.
func ChartDir() string {
	return filepath.Join(testenv.RepoRoot(), "manifests", "helm", "nodelocaldns")
}

// ManifestsDir is the kustomize tree in the repository.
func ManifestsDir() string { return filepath.Join(testenv.RepoRoot(), "manifests") }

// Object is one rendered object.
type Object map[string]any

// ID is kind/namespace/name.
func (o Object) ID() string {
	md, _ := o["metadata"].(map[string]any)
	ns, _ := md["namespace"].(string)
	name, _ := md["name"].(string)
	kind, _ := o["kind"].(string)
	return kind + "/" + ns + "/" + name
}

// Decode splits a YAML stream into objects, skipping empty documents.
func Decode(stream []byte) ([]Object, error) {
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(stream), 4096)
	var objs []Object
	for {
		var o Object
		err := dec.Decode(&o)
		if errors.Is(err, io.EOF) {
			return objs, nil
		}
		if err != nil {
			return nil, fmt.Errorf("decode: %w", err)
		}
		if len(o) == 0 {
			continue
		}
		objs = append(objs, o)
	}
}

// Kustomization describes a kustomization built from the repository's
// manifests: Dir is one of its own (relative to manifests/); otherwise a
// temporary one lists Resources and Components (relative to manifests/),
// with Settings (kubeDNSIP, clusterDomain) instead of manifests/settings when
// set, and Images (kustomize images: entries).
type Kustomization struct {
	Dir        string
	Resources  []string
	Components []string
	Settings   map[string]string
	Images     []map[string]string
}

// Kustomize renders k.
func Kustomize(k Kustomization, tmp string) ([]Object, error) {
	dir := filepath.Join(ManifestsDir(), k.Dir)
	if k.Dir == "" {
		dir = tmp
		// kustomize takes relative paths only.
		abs := func(paths []string) []string {
			var out []string
			for _, p := range paths {
				rel, err := filepath.Rel(tmp, filepath.Join(ManifestsDir(), p))
				if err != nil {
					rel = p
				}
				out = append(out, rel)
			}
			return out
		}
		kust := map[string]any{
			"apiVersion": "kustomize.config.k8s.io/v1beta1",
			"kind":       "Kustomization",
			"resources":  abs(k.Resources),
			"components": abs(k.Components),
		}
		if k.Settings != nil {
			settings := map[string]any{
				"apiVersion": "v1", "kind": "ConfigMap",
				"metadata": map[string]any{"name": "node-local-dns-settings", "namespace": "kube-system",
					"labels": map[string]any{"app.kubernetes.io/name": "node-local-dns", "app.kubernetes.io/component": "settings"}},
				"data": k.Settings,
			}
			if err := writeYAML(filepath.Join(tmp, "settings.yaml"), settings); err != nil {
				return nil, err
			}
			kust["resources"] = append([]string{"settings.yaml"}, abs(k.Resources)...)
		}
		if len(k.Images) > 0 {
			kust["images"] = k.Images
		}
		if err := writeYAML(filepath.Join(tmp, "kustomization.yaml"), kust); err != nil {
			return nil, err
		}
	}
	resMap, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		return nil, fmt.Errorf("kustomize build %s: %w", dir, err)
	}
	out, err := resMap.AsYaml()
	if err != nil {
		return nil, fmt.Errorf("kustomize build %s: %w", dir, err)
	}
	return Decode(out)
}

func writeYAML(path string, v any) error {
	b, err := yaml.Marshal(v)
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o644)
}

// Template runs `helm template` on the chart with the --set values.
func Template(helm string, values ...string) ([]Object, error) {
	args := []string{"template", ReleaseName, ChartDir(), "--namespace", "kube-system"}
	for _, v := range values {
		args = append(args, "--set", v)
	}
	out, err := Run(helm, args...)
	if err != nil {
		return nil, err
	}
	return Decode(out)
}

// Run runs helm and returns its standard output; a failure carries its
// standard error.
func Run(helm string, args ...string) ([]byte, error) {
	cmd := exec.Command(helm, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	// No repositories, plugins or caches of the user's: a clean helm.
	home, err := os.MkdirTemp("", "helm-home-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(home)
	cmd.Env = append(os.Environ(), "HELM_CACHE_HOME="+home+"/cache", "HELM_CONFIG_HOME="+home+"/config", "HELM_DATA_HOME="+home+"/data")
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("helm %s: %w\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return out, nil
}

// Normalize drops the chart's Helm labels from the object's metadata, and
// ends a Corefile with exactly one newline (the Cilium component's patch
// loses the last one; the agent does not care).
func Normalize(o Object) Object {
	if o["kind"] == "ConfigMap" {
		if data, ok := o["data"].(map[string]any); ok {
			if c, ok := data["Corefile"].(string); ok {
				data["Corefile"] = strings.TrimRight(c, "\n") + "\n"
			}
		}
	}
	md, _ := o["metadata"].(map[string]any)
	if labels, ok := md["labels"].(map[string]any); ok {
		for _, l := range helmLabels {
			delete(labels, l)
		}
		if len(labels) == 0 {
			delete(md, "labels")
		}
	}
	return o
}

// Compare returns the differences between two object sets, by object and
// field path ("" when they are the same).
func Compare(kustomize, chart []Object) []string {
	index := func(objs []Object) map[string]Object {
		m := map[string]Object{}
		for _, o := range objs {
			m[o.ID()] = Normalize(o)
		}
		return m
	}
	k, c := index(kustomize), index(chart)
	var diffs []string
	for _, id := range sortedKeys(k) {
		co, ok := c[id]
		if !ok {
			diffs = append(diffs, id+": rendered by kustomize, not by the chart")
			continue
		}
		var d []string
		diffValue("", map[string]any(k[id]), map[string]any(co), &d)
		for _, line := range d {
			diffs = append(diffs, id+": "+line)
		}
	}
	for _, id := range sortedKeys(c) {
		if _, ok := k[id]; !ok {
			diffs = append(diffs, id+": rendered by the chart, not by kustomize")
		}
	}
	return diffs
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// diffValue appends "path: kustomize X, chart Y" lines for every difference.
func diffValue(path string, a, b any, out *[]string) {
	switch av := a.(type) {
	case map[string]any:
		bv, ok := b.(map[string]any)
		if !ok {
			break
		}
		keys := map[string]bool{}
		for k := range av {
			keys[k] = true
		}
		for k := range bv {
			keys[k] = true
		}
		for _, k := range sortedKeys(keys) {
			diffValue(path+"."+k, av[k], bv[k], out)
		}
		return
	case []any:
		bv, ok := b.([]any)
		if !ok || len(av) != len(bv) {
			break
		}
		for i := range av {
			diffValue(fmt.Sprintf("%s[%d]", path, i), av[i], bv[i], out)
		}
		return
	}
	if !reflect.DeepEqual(normalNumber(a), normalNumber(b)) {
		*out = append(*out, fmt.Sprintf("%s: kustomize %s, chart %s", strings.TrimPrefix(path, "."), show(a), show(b)))
	}
}

// normalNumber makes 3 (int64) and 3 (float64) equal.
func normalNumber(v any) any {
	switch n := v.(type) {
	case int64:
		return float64(n)
	case int:
		return float64(n)
	}
	return v
}

func show(v any) string {
	if v == nil {
		return "(absent)"
	}
	b, err := yaml.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	s := strings.TrimSpace(string(b))
	if strings.Contains(s, "\n") {
		return "\n" + s + "\n"
	}
	return s
}
