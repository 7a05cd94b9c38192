package helm

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/nodelocaldns/nodelocaldns/agent/app"
	"github.com/nodelocaldns/nodelocaldns/agent/corefile"
	"github.com/nodelocaldns/nodelocaldns/agent/pillar"
	"github.com/nodelocaldns/nodelocaldns/tests/testenv"
)

// helmBin finds the helm built by `make helm` (or $HELM_BIN, or $PATH).
func helmBin(t *testing.T) string {
	t.Helper()
	return testenv.Binary(t, "helm", "HELM_BIN")
}

// scenario is one setting expressed both ways: a kustomization and the
// chart's --set values.
type scenario struct {
	name   string
	kust   Kustomization
	values []string
}

// scenarios cover every installable overlay, a combination of components,
// other cluster settings and other images.
var scenarios = []scenario{
	{name: "default", kust: Kustomization{Dir: "."}},
	{name: "builtin-certs", kust: Kustomization{Dir: "overlays/builtin-certs"}, values: []string{"webhook.certificates=builtin"}},
	{name: "interception", kust: Kustomization{Dir: "overlays/interception"}, values: []string{"mode=interception"}},
	{name: "cilium", kust: Kustomization{Dir: "overlays/cilium"}, values: []string{"mode=cilium"}},
	{name: "twin", kust: Kustomization{Dir: "overlays/twin"}, values: []string{"agent.twin=true"}},
	{name: "cluster-wide", kust: Kustomization{Dir: "overlays/cluster-wide"}, values: []string{"webhook.namespaceSelection=cluster-wide"}},
	{name: "hardened", kust: Kustomization{Dir: "overlays/hardened"}, values: []string{"webhook.networkPolicy=true"}},
	{name: "iptables-legacy", kust: Kustomization{Dir: "overlays/iptables-legacy"}, values: []string{"agent.iptablesLegacy=true"}},
	{name: "monitoring", kust: Kustomization{Dir: "overlays/monitoring"},
		values: []string{"monitoring.serviceMonitor=true", "monitoring.prometheusRule=true", "monitoring.dashboard=true"}},
	{
		name: "combined with other settings and images",
		kust: Kustomization{
			Resources:  []string{"webhook", "agent"},
			Components: []string{"components/builtin-certs", "components/twin", "components/interception", "components/cluster-settings", "components/fast-fallback"},
			Settings:   map[string]string{"kubeDNSIP": "10.100.0.10", "clusterDomain": "corp.example", "podCIDR": "10.32.0.0/12"},
			Images: []map[string]string{
				{"name": "nodelocaldns/agent", "newName": "registry.example/dns/agent", "newTag": "v1.2.3"},
				{"name": "nodelocaldns/webhook", "newName": "registry.example/dns/webhook", "newTag": "v1.2.3"},
			},
		},
		values: []string{
			"webhook.certificates=builtin", "agent.twin=true", "mode=interception",
			"kubeDNS.ip=10.100.0.10", "clusterDomain=corp.example", "podCIDR=10.32.0.0/12",
			"images.agent.repository=registry.example/dns/agent", "images.agent.tag=v1.2.3",
			"images.webhook.repository=registry.example/dns/webhook", "images.webhook.tag=v1.2.3",
		},
	},
}

// TestChartMatchesKustomize renders every scenario with kustomize and with
// `helm template` and compares every object field by field (the chart's
// Helm labels aside): images, agent and webhook arguments, the Corefile,
// the webhook configuration's rules, selectors and failure policy, RBAC,
// and everything else.
func TestChartMatchesKustomize(t *testing.T) {
	helm := helmBin(t)
	for _, sc := range scenarios {
		t.Run(sc.name, func(t *testing.T) {
			k, err := Kustomize(sc.kust, t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			c, err := Template(helm, sc.values...)
			if err != nil {
				t.Fatal(err)
			}
			if diffs := Compare(k, c); len(diffs) > 0 {
				t.Fatalf("the chart (--set %s) and the kustomization differ in %d places; change the chart in manifests/helm/nodelocaldns with the kustomize tree:\n%s",
					strings.Join(sc.values, ","), len(diffs), strings.Join(diffs, "\n"))
			}
			t.Logf("%d objects, the same from kustomize and from the chart", len(k))
		})
	}
}

// TestEveryOverlayHasAScenario: a new overlay in manifests/overlays needs
// its chart values and a scenario above, or the chart falls behind.
func TestEveryOverlayHasAScenario(t *testing.T) {
	dirs, err := filepath.Glob(filepath.Join(ManifestsDir(), "overlays", "*", "kustomization.yaml"))
	if err != nil || len(dirs) == 0 {
		t.Fatalf("no overlays found (%v)", err)
	}
	covered := map[string]bool{}
	for _, sc := range scenarios {
		covered[sc.kust.Dir] = true
	}
	for _, d := range dirs {
		rel, _ := filepath.Rel(ManifestsDir(), filepath.Dir(d))
		if !covered[filepath.ToSlash(rel)] {
			t.Errorf("manifests/%s has no scenario in tests/helm (and maybe no chart values)", rel)
		}
	}
}

// TestCompareFindsDrift shows that the comparison can fail: a changed
// argument, a missing object and a changed selector are reported.
func TestCompareFindsDrift(t *testing.T) {
	helm := helmBin(t)
	k, err := Kustomize(Kustomization{Dir: "."}, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		values []string
		want   string
	}{
		{"agent argument", []string{"agent.extraArgs={-lameduck=10s}"}, "DaemonSet/kube-system/node-local-dns: spec.template.spec.containers[0].args"},
		{"failure policy", []string{"webhook.failurePolicy=Fail"}, "webhooks[0].failurePolicy: kustomize Ignore, chart Fail"},
		{"excluded namespaces", []string{"webhook.excludedNamespaces={kube-system}"}, "namespaceSelector.matchExpressions[1].values"},
		{"missing object", []string{"webhook.pdbMinAvailable="}, "PodDisruptionBudget/node-local-dns/node-local-dns-webhook: rendered by kustomize, not by the chart"},
		{"image", []string{"images.webhook.tag=v9"}, "kustomize nodelocaldns/webhook:latest, chart nodelocaldns/webhook:v9"},
		{"cache TTL", []string{"agent.corefile.cache.success.ttl=60"}, "ConfigMap/kube-system/node-local-dns: data.Corefile"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Template(helm, tc.values...)
			if err != nil {
				t.Fatal(err)
			}
			diffs := strings.Join(Compare(k, c), "\n")
			if !strings.Contains(diffs, tc.want) {
				t.Errorf("--set %v: the differences do not mention %q:\n%s", tc.values, tc.want, diffs)
			}
		})
	}
}

// TestLint runs helm lint --strict with the default values and with every
// scenario's.
func TestLint(t *testing.T) {
	helm := helmBin(t)
	for _, sc := range append(scenarios, scenario{name: "corefile options", values: corefileValues}) {
		t.Run(sc.name, func(t *testing.T) {
			args := []string{"lint", "--strict", ChartDir()}
			for _, v := range sc.values {
				args = append(args, "--set", v)
			}
			if out, err := Run(helm, args...); err != nil {
				t.Fatalf("%v\n%s", err, out)
			}
		})
	}
}

// TestInvalidValues: values that would render a broken install are refused
// with a message naming the value.
func TestInvalidValues(t *testing.T) {
	helm := helmBin(t)
	for _, tc := range []struct {
		value, want string
	}{
		{"mode=ipvs", "mode \"ipvs\""},
		{"webhook.certificates=vault", "webhook.certificates \"vault\""},
		{"localDNSIPs={169.254.20.10,169.254.20.11,169.254.20.12}", "localDNSIPs"},
		{"kubeDNS.service=kube-dns", "kubeDNS.service \"kube-dns\""},
		{"webhook.namespaceSelection=everything", "webhook.namespaceSelection"},
	} {
		t.Run(tc.value, func(t *testing.T) {
			_, err := Template(helm, tc.value)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("--set %s: error %v, want one containing %q", tc.value, err, tc.want)
			}
		})
	}
}

// corefileValues set every Corefile option the chart has.
var corefileValues = []string{
	"agent.corefile.cache.success.capacity=20000", "agent.corefile.cache.success.ttl=60",
	"agent.corefile.cache.denial.capacity=5000", "agent.corefile.cache.denial.ttl=10",
	"agent.corefile.cache.ttl=120",
	"agent.corefile.cache.serveStale=1h",
	"agent.corefile.cache.prefetch=10 1m 10%",
	"agent.corefile.extraServerBlocks=corp.example:53 {\n    errors\n    cache 30\n    forward . 10.1.2.3\n}\n",
}

// TestCorefileOptions renders the chart's Corefile with every cache option
// and an extra server block, renders its __PILLAR__ variables as the agent
// does at start, and parses it with the agent's parser: the agent accepts
// it and the options arrive in every block.
func TestCorefileOptions(t *testing.T) {
	helm := helmBin(t)
	for _, tc := range []struct {
		name   string
		values []string
		check  func(t *testing.T, cfg *corefile.Config, text string)
	}{
		{"defaults", nil, func(t *testing.T, cfg *corefile.Config, text string) {
			if strings.Contains(text, "serve_stale") || strings.Contains(text, "prefetch") {
				t.Errorf("serve_stale/prefetch without values:\n%s", text)
			}
			if got := strings.Count(text, "prometheus {$POD_IP}:9253"); got != 4 {
				t.Errorf("prometheus on {$POD_IP} in %d blocks, want 4:\n%s", got, text)
			}
		}},
		{"every option", corefileValues, func(t *testing.T, cfg *corefile.Config, text string) {
			if got := strings.Count(text, "serve_stale 1h"); got != 4 {
				t.Errorf("serve_stale in %d blocks, want 4:\n%s", got, text)
			}
			if got := strings.Count(text, "prefetch 10 1m 10%"); got != 4 {
				t.Errorf("prefetch in %d blocks, want 4:\n%s", got, text)
			}
			for _, want := range []string{"success 20000 60", "denial 5000 10", "cache 120 {", "corp.example:53 {"} {
				if !strings.Contains(text, want) {
					t.Errorf("Corefile lacks %q:\n%s", want, text)
				}
			}
		}},
		{"cilium", []string{"mode=cilium"}, func(t *testing.T, cfg *corefile.Config, text string) {
			if strings.Contains(text, "__PILLAR__LOCAL__DNS__") || !strings.Contains(text, "bind 0.0.0.0") {
				t.Errorf("cilium Corefile binds the local address:\n%s", text)
			}
		}},
		{"override", []string{"agent.corefile.override=.:53 {\n    errors\n    cache 30\n    bind __PILLAR__LOCAL__DNS__\n    forward . __PILLAR__UPSTREAM__SERVERS__\n}\n"},
			func(t *testing.T, cfg *corefile.Config, text string) {
				if strings.Contains(text, "cluster.local") || !strings.Contains(text, "forward . /etc/resolv.conf") {
					t.Errorf("override not used as the whole Corefile:\n%s", text)
				}
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			objs, err := Template(helm, tc.values...)
			if err != nil {
				t.Fatal(err)
			}
			tmpl, args := corefileAndArgs(t, objs)
			// What the kubelet ($(POD_IP) in arguments) and the Corefile
			// parser ({$POD_IP}) fill in on a node.
			const podIP = "10.0.0.7"
			t.Setenv("POD_IP", podIP)
			for i := range args {
				args[i] = strings.ReplaceAll(args[i], "$(POD_IP)", podIP)
			}
			opts, err := app.ParseFlags(args)
			if err != nil {
				t.Fatalf("agent flags %v: %v", args, err)
			}
			env := map[string]string{pillar.ServiceHostEnv(opts.UpstreamSvc): "10.96.0.11"}
			text, err := pillar.Render(tmpl, pillar.Params{
				LocalIPs: opts.LocalIPStrings(), DNSPort: opts.DNSPort, ClusterDomain: "cluster.local",
				UpstreamSvc: opts.UpstreamSvc,
				LookupEnv:   func(k string) (string, bool) { v, ok := env[k]; return v, ok },
			})
			if err != nil {
				t.Fatalf("render the template: %v\n%s", err, tmpl)
			}
			cfg, err := corefile.Parse(text, corefile.ParseOptions{
				DefaultPort: opts.DNSPort,
				ReadFile:    func(string) ([]byte, error) { return []byte("nameserver 192.0.2.53\n"), nil },
			})
			if err != nil {
				t.Fatalf("the agent rejects the chart's Corefile: %v\n%s", err, text)
			}
			tc.check(t, cfg, text)
		})
	}
}

// corefileAndArgs returns the Corefile template and the agent's arguments.
func corefileAndArgs(t *testing.T, objs []Object) (string, []string) {
	t.Helper()
	var tmpl string
	var args []string
	for _, o := range objs {
		switch o.ID() {
		case "ConfigMap/kube-system/node-local-dns":
			tmpl, _ = o["data"].(map[string]any)["Corefile"].(string)
		case "DaemonSet/kube-system/node-local-dns":
			b, _ := yaml.Marshal(o)
			var ds struct {
				Spec struct {
					Template struct {
						Spec struct {
							Containers []struct{ Args []string }
						}
					}
				}
			}
			if err := yaml.Unmarshal(b, &ds); err != nil || len(ds.Spec.Template.Spec.Containers) == 0 {
				t.Fatalf("agent DaemonSet: %v", err)
			}
			args = ds.Spec.Template.Spec.Containers[0].Args
		}
	}
	if tmpl == "" || args == nil {
		t.Fatal("the chart renders no Corefile ConfigMap or no agent DaemonSet")
	}
	return tmpl, args
}

// TestREADMEListsEveryValue: the chart README's values table names every
// leaf of values.yaml, and nothing that is not one.
func TestREADMEListsEveryValue(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(ChartDir(), "values.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var values map[string]any
	if err := yaml.Unmarshal(data, &values); err != nil {
		t.Fatal(err)
	}
	leaves := map[string]bool{}
	var walk func(prefix string, v any)
	walk = func(prefix string, v any) {
		m, ok := v.(map[string]any)
		// Maps that are values themselves (resources, selectors,
		// strategies) are listed whole.
		if !ok || len(m) == 0 || valueMaps[prefix] {
			leaves[prefix] = true
			return
		}
		for k, child := range m {
			walk(strings.TrimPrefix(prefix+"."+k, "."), child)
		}
	}
	walk("", values)
	readme, err := os.ReadFile(filepath.Join(ChartDir(), "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	row := regexp.MustCompile("(?m)^\\| `([^`]+)` \\|")
	listed := map[string]bool{}
	for _, m := range row.FindAllStringSubmatch(string(readme), -1) {
		listed[m[1]] = true
	}
	for _, k := range sortedKeys(leaves) {
		if !listed[k] {
			t.Errorf("README.md's values table lacks `%s`", k)
		}
	}
	for _, k := range sortedKeys(listed) {
		if !leaves[k] {
			t.Errorf("README.md lists `%s`, which values.yaml does not have", k)
		}
	}
}

// valueMaps are the maps in values.yaml that are one value each.
var valueMaps = map[string]bool{
	"agent.resources": true, "agent.nodeSelector": true, "agent.affinity": true, "agent.updateStrategy": true,
	"webhook.resources": true, "webhook.nodeSelector": true, "webhook.affinity": true,
}
