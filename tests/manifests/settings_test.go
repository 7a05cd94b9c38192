package manifests

import (
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/kustomize/kyaml/filesys"

	"github.com/nodelocaldns/nodelocaldns/agent/app"
)

// copyTree copies manifests/ into an in-memory file system at /manifests.
func copyTree(t *testing.T) filesys.FileSystem {
	t.Helper()
	mem := filesys.MakeFsInMemory()
	root := manifestsDir()
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, path)
		if err != nil {
			return err
		}
		dst := filepath.Join("/manifests", rel)
		if d.IsDir() {
			return mem.MkdirAll(dst)
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return mem.WriteFile(dst, data)
	})
	if err != nil {
		t.Fatalf("copy manifests: %v", err)
	}
	return mem
}

// TestRenderSettingsPropagate changes the kube-dns IP and the cluster domain
// in the one documented place (manifests/settings/settings.yaml) and checks
// that every overlay picks them up and that the defaults are gone.
func TestRenderSettingsPropagate(t *testing.T) {
	const (
		ip     = "10.32.0.10"
		domain = "corp.example"
	)
	mem := copyTree(t)
	path := "/manifests/settings/settings.yaml"
	data, err := mem.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	text := string(data)
	for old, repl := range map[string]string{"kubeDNSIP: 10.96.0.10": "kubeDNSIP: " + ip, "clusterDomain: cluster.local": "clusterDomain: " + domain} {
		if !strings.Contains(text, old) {
			t.Fatalf("settings.yaml lacks %q", old)
		}
		text = strings.Replace(text, old, repl, 1)
	}
	if err := mem.WriteFile(path, []byte(text)); err != nil {
		t.Fatal(err)
	}
	for _, dir := range overlays(t) {
		t.Run(dir, func(t *testing.T) {
			r := render(t, mem, "/manifests", dir)
			for _, o := range r.objects {
				if o.u.GetName() == "node-local-dns-settings" {
					continue
				}
				for _, old := range []string{"10.96.0.10", "cluster.local"} {
					if strings.Contains(string(o.raw), old) {
						t.Errorf("%s still contains the default %q after changing the settings", o.id(), old)
					}
				}
			}
			cm := get[*corev1.ConfigMap](t, r, "node-local-dns")
			if first, _, _ := strings.Cut(cm.Data["Corefile"], "\n"); first != domain+":53 {" {
				t.Errorf("Corefile starts with %q, want the cluster zone %q", first, domain+":53 {")
			}
			dep := get[*appsv1.Deployment](t, r, webhookName)
			if got := flagValue(dep.Spec.Template.Spec.Containers[0].Args, "--cluster-domain"); got != domain {
				t.Errorf("webhook --cluster-domain=%q, want %q", got, domain)
			}
			for _, ds := range all[*appsv1.DaemonSet](r) {
				opts, err := app.ParseFlags(expandArgs(ds.Spec.Template.Spec.Containers[0]))
				if err != nil {
					t.Fatal(err)
				}
				intercepting := strings.Contains(dir, "interception")
				if got := slices.Contains(opts.LocalIPStrings(), ip); got != intercepting {
					t.Errorf("%s binds %v: kube-dns IP %s present=%v, want %v", ds.Name, opts.LocalIPs, ip, got, intercepting)
				}
			}
		})
	}
}
