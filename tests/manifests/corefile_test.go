package manifests

import (
	"net"
	"slices"
	"strconv"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"

	"github.com/nodelocaldns/nodelocaldns/agent/app"
	"github.com/nodelocaldns/nodelocaldns/agent/corefile"
	"github.com/nodelocaldns/nodelocaldns/agent/pillar"
)

// TestRenderCorefileParses renders each overlay's Corefile template the way
// the agent does at start (pillar, with the DaemonSet's own arguments) and
// parses it with the agent's parser, then checks it against the DaemonSet:
// listen addresses, cluster zone, kube-dns over TCP, and the ports the probes
// and the metrics Service use.
func TestRenderCorefileParses(t *testing.T) {
	const upstreamIP = "10.96.0.11" // the kube-dns-upstream ClusterIP
	for _, dir := range overlays(t) {
		t.Run(dir, func(t *testing.T) {
			r := renderRepo(t, dir)
			settings := get[*corev1.ConfigMap](t, r, "node-local-dns-settings").Data
			tmpl := get[*corev1.ConfigMap](t, r, "node-local-dns").Data["Corefile"]
			ds := get[*appsv1.DaemonSet](t, r, "node-local-dns")
			c := ds.Spec.Template.Spec.Containers[0]
			opts, err := app.ParseFlags(expandArgs(c))
			if err != nil {
				t.Fatal(err)
			}
			env := map[string]string{pillar.ServiceHostEnv(opts.UpstreamSvc): upstreamIP}
			text, err := pillar.Render(tmpl, pillar.Params{
				LocalIPs:      opts.LocalIPStrings(),
				DNSPort:       opts.DNSPort,
				ClusterDomain: settings["clusterDomain"],
				UpstreamSvc:   opts.UpstreamSvc,
				LookupEnv:     func(k string) (string, bool) { v, ok := env[k]; return v, ok },
			})
			if err != nil {
				t.Fatalf("render the Corefile template: %v", err)
			}
			cfg, err := corefile.Parse(text, corefile.ParseOptions{
				DefaultPort: opts.DNSPort,
				ReadFile: func(string) ([]byte, error) {
					return []byte("nameserver 192.0.2.53\n"), nil // never the host's resolv.conf
				},
			})
			if err != nil {
				t.Fatalf("the agent rejects the rendered Corefile: %v\n%s", err, text)
			}
			cilium := !ds.Spec.Template.Spec.HostNetwork
			wantBind := opts.LocalIPStrings()
			if cilium {
				wantBind = []string{"0.0.0.0"}
			}
			var health, ready, metrics string
			for _, s := range cfg.Servers {
				if !slices.Equal(s.Bind, wantBind) {
					t.Errorf("block %v binds %v, want %v", s.Zones, s.Bind, wantBind)
				}
				if s.Forward == nil {
					t.Errorf("block %v forwards nowhere", s.Zones)
				}
				health, ready = or(health, s.Health), or(ready, s.Ready)
				metrics = or(metrics, s.Prometheus)
			}
			first := cfg.Servers[0]
			if !slices.Contains(first.Zones, settings["clusterDomain"]+".") {
				t.Errorf("first block zones %v, want the cluster domain %s", first.Zones, settings["clusterDomain"])
			}
			if f := first.Forward; f == nil || !f.ForceTCP || !slices.Equal(f.To, []string{net.JoinHostPort(upstreamIP, "53")}) {
				t.Errorf("cluster zone must go to kube-dns-upstream over TCP, got %+v", f)
			}
			checkListener(t, "health", health, c.LivenessProbe, cilium)
			checkListener(t, "ready", ready, c.ReadinessProbe, cilium)
			_, mport, _ := net.SplitHostPort(metrics)
			if p := servicePort(t, get[*corev1.Service](t, r, "node-local-dns"), "metrics"); strconv.Itoa(p) != mport {
				t.Errorf("prometheus listens on %q, the metrics Service targets port %d", metrics, p)
			}
		})
	}
}

// checkListener compares a plugin's listen address with the probe that
// reaches it.
func checkListener(t *testing.T, plugin, addr string, probe *corev1.Probe, cilium bool) {
	t.Helper()
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Errorf("%s plugin address %q: %v", plugin, addr, err)
		return
	}
	if probe == nil || probe.HTTPGet == nil {
		t.Errorf("no HTTP probe for the %s plugin", plugin)
		return
	}
	if port != strconv.Itoa(probe.HTTPGet.Port.IntValue()) {
		t.Errorf("%s plugin on port %s, probe on %s", plugin, port, probe.HTTPGet.Port.String())
	}
	if !cilium && host != probe.HTTPGet.Host {
		t.Errorf("%s plugin on host %q, probe asks %q", plugin, host, probe.HTTPGet.Host)
	}
}

func or(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// servicePort returns the numeric target port of the Service port named name.
func servicePort(t *testing.T, svc *corev1.Service, name string) int {
	t.Helper()
	for _, p := range svc.Spec.Ports {
		if p.Name == name {
			return p.TargetPort.IntValue()
		}
	}
	t.Errorf("Service %s has no port named %q", svc.Name, name)
	return 0
}
