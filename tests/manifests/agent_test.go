package manifests

import (
	"encoding/json"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/nodelocaldns/nodelocaldns/agent/app"
)

const localDNSIP = "169.254.20.10"

// TestRenderAgentDaemonSet checks every agent DaemonSet of every overlay
// against the node issue's requirements, and parses its arguments with the
// agent's own flag parser.
func TestRenderAgentDaemonSet(t *testing.T) {
	for _, dir := range overlays(t) {
		t.Run(dir, func(t *testing.T) {
			r := renderRepo(t, dir)
			dss := all[*appsv1.DaemonSet](r)
			if len(dss) == 0 {
				t.Fatal("no agent DaemonSet")
			}
			cilium := len(loose(r, schema.GroupKind{Group: "cilium.io", Kind: "CiliumLocalRedirectPolicy"})) > 0
			for _, ds := range dss {
				checkDaemonSet(t, ds, cilium)
			}
		})
	}
}

func checkDaemonSet(t *testing.T, ds *appsv1.DaemonSet, cilium bool) {
	t.Helper()
	spec := ds.Spec.Template.Spec
	if spec.HostNetwork == cilium {
		t.Errorf("%s: hostNetwork=%v, want %v (cilium=%v)", ds.Name, spec.HostNetwork, !cilium, cilium)
	}
	if spec.DNSPolicy != corev1.DNSDefault {
		t.Errorf("%s: dnsPolicy=%q, want Default", ds.Name, spec.DNSPolicy)
	}
	if spec.PriorityClassName != "system-node-critical" {
		t.Errorf("%s: priorityClassName=%q", ds.Name, spec.PriorityClassName)
	}
	if spec.NodeSelector["kubernetes.io/os"] != "linux" {
		t.Errorf("%s: nodeSelector %v, want kubernetes.io/os=linux", ds.Name, spec.NodeSelector)
	}
	tolerateAll := slices.ContainsFunc(spec.Tolerations, func(tl corev1.Toleration) bool {
		return tl.Key == "" && tl.Operator == corev1.TolerationOpExists && tl.Effect == ""
	})
	if !tolerateAll {
		t.Errorf("%s: tolerations %+v do not tolerate every taint", ds.Name, spec.Tolerations)
	}
	ru := ds.Spec.UpdateStrategy.RollingUpdate
	if ds.Spec.UpdateStrategy.Type != appsv1.RollingUpdateDaemonSetStrategyType || ru == nil ||
		ru.MaxSurge == nil || *ru.MaxSurge != intstr.FromInt32(1) ||
		ru.MaxUnavailable == nil || *ru.MaxUnavailable != intstr.FromInt32(0) {
		t.Errorf("%s: updateStrategy %+v, want RollingUpdate maxSurge 1 maxUnavailable 0", ds.Name, ds.Spec.UpdateStrategy)
	}
	if len(spec.Containers) != 1 {
		t.Fatalf("%s: want 1 container, got %d", ds.Name, len(spec.Containers))
	}
	c := spec.Containers[0]
	if spec.HostNetwork && len(c.Ports) > 0 {
		// On a hostNetwork pod every container port is a hostPort: the
		// scheduler would keep the maxSurge pod Pending beside the old one.
		t.Errorf("%s: hostNetwork container declares ports %v (they become hostPorts and block surge upgrades)", ds.Name, c.Ports)
	}
	checkAgentHardening(t, ds, c)
	if _, ok := c.Resources.Limits[corev1.ResourceCPU]; ok {
		t.Errorf("%s: CPU limit set", ds.Name)
	}
	if c.Resources.Requests.Cpu().IsZero() || c.Resources.Requests.Memory().IsZero() {
		t.Errorf("%s: requests %v, want cpu and memory", ds.Name, c.Resources.Requests)
	}
	checkProbe(t, ds.Name, "liveness", c.LivenessProbe, "/health", !cilium)
	checkProbe(t, ds.Name, "readiness", c.ReadinessProbe, "/ready", !cilium)

	opts, err := app.ParseFlags(expandArgs(c))
	if err != nil {
		t.Fatalf("%s: the agent rejects its arguments %v: %v", ds.Name, c.Args, err)
	}
	checkCapabilities(t, ds.Name, c, opts)
	checkWritable(t, ds.Name, c, opts)
	if got := opts.MetricsListenAddress; strings.HasPrefix(got, "0.0.0.0:") || strings.HasPrefix(got, ":") || strings.HasPrefix(got, "[::]:") {
		t.Errorf("%s: -metrics-listen-address %q listens on every address of the node", ds.Name, got)
	}
	checkFastFallback(t, ds, c, opts, cilium)
	if !slices.Contains(opts.LocalIPStrings(), localDNSIP) {
		t.Errorf("%s: -localip %v lacks %s", ds.Name, opts.LocalIPs, localDNSIP)
	}
	if cilium {
		if opts.SetupInterface || opts.SetupIPTables {
			t.Errorf("%s: in Cilium mode the agent must not set up the interface or iptables", ds.Name)
		}
	} else {
		if !opts.SetupInterface || !opts.SetupIPTables {
			t.Errorf("%s: the agent must set up its interface and rules", ds.Name)
		}
		if hostPathAt(t, spec, c, "/run/xtables.lock") != "/run/xtables.lock" {
			t.Errorf("%s: /run/xtables.lock is not the host's", ds.Name)
		}
		if got := hostPathAt(t, spec, c, opts.RunDir); got == "" {
			t.Errorf("%s: run dir %s is not a hostPath", ds.Name, opts.RunDir)
		}
		// Probes reach the health plugin on the local IP and its port.
		if got := c.LivenessProbe.HTTPGet.Port.IntValue(); got != opts.HealthPort {
			t.Errorf("%s: liveness probe port %d, -health-port %d", ds.Name, got, opts.HealthPort)
		}
	}
	base := volumeAt(t, spec, c, filepath.Dir(opts.BaseCorefile))
	if base.ConfigMap == nil || base.ConfigMap.Name != "node-local-dns" {
		t.Errorf("%s: -basecorefile %s is not the node-local-dns ConfigMap", ds.Name, opts.BaseCorefile)
	}
	if spec.ServiceAccountName == "" {
		t.Errorf("%s: no serviceAccountName", ds.Name)
	}
}

// checkFastFallback checks components/fast-fallback: on a hostNetwork agent
// (every overlay but Cilium's) a privileged init container "sysctls" runs
// the agent image with -sysctls-only -icmp-ratelimit=0 and the agent
// container (not privileged, checked by the caller) gets -icmp-ratelimit=0.
// In Cilium mode the agent has its own network namespace: no init container.
func checkFastFallback(t *testing.T, ds *appsv1.DaemonSet, c corev1.Container, opts *app.Options, cilium bool) {
	t.Helper()
	inits := ds.Spec.Template.Spec.InitContainers
	if cilium {
		if len(inits) != 0 {
			t.Errorf("%s: Cilium mode has init containers %v; the agent's sysctls would only touch its own pod network", ds.Name, inits)
		}
		return
	}
	if opts.ICMPRateLimit != 0 {
		t.Errorf("%s: agent -icmp-ratelimit=%d, want 0 (fast fallback)", ds.Name, opts.ICMPRateLimit)
	}
	if len(inits) != 1 || inits[0].Name != "sysctls" {
		t.Fatalf("%s: init containers %v, want exactly one named sysctls", ds.Name, inits)
	}
	ic := inits[0]
	if ic.Image != c.Image {
		t.Errorf("%s: init container image %q, want the agent's %q", ds.Name, ic.Image, c.Image)
	}
	if ic.SecurityContext == nil || ic.SecurityContext.Privileged == nil || !*ic.SecurityContext.Privileged {
		t.Errorf("%s: init container sysctls is not privileged (/proc/sys is read-only otherwise)", ds.Name)
	}
	if ic.Resources.Requests.Cpu().IsZero() || ic.Resources.Requests.Memory().IsZero() || ic.Resources.Limits.Memory().IsZero() {
		t.Errorf("%s: init container resources %v, want cpu/memory requests and a memory limit", ds.Name, ic.Resources)
	}
	if len(ic.Command) != 0 {
		t.Errorf("%s: init container command %v, want the image's entrypoint (the agent)", ds.Name, ic.Command)
	}
	if isc := ic.SecurityContext; isc == nil || isc.ReadOnlyRootFilesystem == nil || !*isc.ReadOnlyRootFilesystem {
		t.Errorf("%s: init container sysctls: root filesystem not read-only", ds.Name)
	}
	if len(ic.VolumeMounts) != 0 {
		t.Errorf("%s: init container sysctls mounts %v; a privileged container gets nothing it does not need", ds.Name, ic.VolumeMounts)
	}
	iopts, err := app.ParseFlags(ic.Args)
	if err != nil {
		t.Fatalf("%s: the agent rejects the init container's arguments %v: %v", ds.Name, ic.Args, err)
	}
	if !iopts.SysctlsOnly || iopts.ICMPRateLimit != 0 {
		t.Errorf("%s: init container args %v, want -sysctls-only -icmp-ratelimit=0", ds.Name, ic.Args)
	}
}

// checkAgentHardening checks issue 10's container hardening: not
// privileged, no privilege escalation, a read-only root filesystem,
// seccomp RuntimeDefault (pod or container), every capability dropped
// (the ones added are checked by checkCapabilities), and a memory limit.
func checkAgentHardening(t *testing.T, ds *appsv1.DaemonSet, c corev1.Container) {
	t.Helper()
	sc := c.SecurityContext
	if sc == nil {
		t.Errorf("%s: no securityContext", ds.Name)
		return
	}
	if sc.Privileged != nil && *sc.Privileged {
		t.Errorf("%s: privileged", ds.Name)
	}
	if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		t.Errorf("%s: allowPrivilegeEscalation not false", ds.Name)
	}
	if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		t.Errorf("%s: root filesystem not read-only", ds.Name)
	}
	seccomp := sc.SeccompProfile
	if seccomp == nil && ds.Spec.Template.Spec.SecurityContext != nil {
		seccomp = ds.Spec.Template.Spec.SecurityContext.SeccompProfile
	}
	if seccomp == nil || seccomp.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("%s: seccomp profile %+v, want RuntimeDefault", ds.Name, seccomp)
	}
	if sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) {
		t.Errorf("%s: capabilities %+v, want drop [ALL]", ds.Name, sc.Capabilities)
	}
	if c.Resources.Limits.Memory().IsZero() {
		t.Errorf("%s: no memory limit (the agent sizes itself from it)", ds.Name)
	}
}

// checkCapabilities: the agent adds NET_ADMIN (interface, rules) and
// NET_BIND_SERVICE (port 53), and NET_RAW exactly when it runs the legacy
// iptables backend (its raw socket; agent/app TestLegacyIPTablesNeedsNetRaw).
func checkCapabilities(t *testing.T, ds string, c corev1.Container, opts *app.Options) {
	t.Helper()
	want := []corev1.Capability{"NET_ADMIN", "NET_BIND_SERVICE"}
	if opts.IPTablesBackend == app.BackendLegacy && opts.SetupIPTables {
		want = append(want, "NET_RAW")
	}
	if c.SecurityContext == nil || c.SecurityContext.Capabilities == nil {
		return // reported by checkAgentHardening
	}
	got := slices.Clone(c.SecurityContext.Capabilities.Add)
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Errorf("%s: capabilities add %v, want %v", ds, got, want)
	}
}

// checkWritable: with a read-only root filesystem, every path the agent
// writes is on a volume: the rendered Corefile (-conf), the pid file and
// the run directory.
func checkWritable(t *testing.T, ds string, c corev1.Container, opts *app.Options) {
	t.Helper()
	for what, path := range map[string]string{"-conf": opts.Corefile, "-pidfile": opts.PIDFile, "-rundir": opts.RunDir + "/x"} {
		if path == "" || path == "/x" {
			continue
		}
		mounted := false
		for _, m := range c.VolumeMounts {
			if strings.HasPrefix(path, strings.TrimSuffix(m.MountPath, "/")+"/") && !m.ReadOnly {
				mounted = true
			}
		}
		if !mounted {
			t.Errorf("%s: %s %s is not on a writable volume (the root filesystem is read-only)", ds, what, path)
		}
	}
}

// expandArgs replaces $(VAR) in the container's arguments as the kubelet
// does, with a sample value for each variable from the downward API.
func expandArgs(c corev1.Container) []string {
	vals := map[string]string{}
	for _, e := range c.Env {
		switch {
		case e.ValueFrom != nil && e.ValueFrom.FieldRef != nil:
			vals[e.Name] = "10.0.0.7"
		default:
			vals[e.Name] = e.Value
		}
	}
	out := make([]string, len(c.Args))
	for i, a := range c.Args {
		for k, v := range vals {
			a = strings.ReplaceAll(a, "$("+k+")", v)
		}
		out[i] = a
	}
	return out
}

func checkProbe(t *testing.T, ds, kind string, p *corev1.Probe, path string, onLocalIP bool) {
	t.Helper()
	if p == nil || p.HTTPGet == nil || p.HTTPGet.Path != path {
		t.Errorf("%s: %s probe %+v, want HTTP GET %s", ds, kind, p, path)
		return
	}
	if onLocalIP && p.HTTPGet.Host != localDNSIP {
		t.Errorf("%s: %s probe host %q, want %s (hostNetwork)", ds, kind, p.HTTPGet.Host, localDNSIP)
	}
}

// hostPathAt returns the host path mounted at path, "" if it is not a hostPath.
func hostPathAt(t *testing.T, spec corev1.PodSpec, c corev1.Container, path string) string {
	t.Helper()
	v := volumeAt(t, spec, c, path)
	if v.HostPath == nil {
		return ""
	}
	return v.HostPath.Path
}

// TestRenderAgentModes checks what distinguishes the modes: injection binds
// only the link-local IP, interception adds the kube-dns IP from the settings,
// Cilium redirects kube-dns and the link-local IP to the agent pod, twin adds a
// second DaemonSet that does not share the first one's pods.
func TestRenderAgentModes(t *testing.T) {
	settingsIP := func(r rendered) string {
		return get[*corev1.ConfigMap](t, r, "node-local-dns-settings").Data["kubeDNSIP"]
	}
	localIPs := func(t *testing.T, ds *appsv1.DaemonSet) []string {
		t.Helper()
		opts, err := app.ParseFlags(expandArgs(ds.Spec.Template.Spec.Containers[0]))
		if err != nil {
			t.Fatal(err)
		}
		return opts.LocalIPStrings()
	}
	for _, tc := range []struct {
		name  string
		dir   string
		check func(t *testing.T, r rendered)
	}{
		{"injection", ".", func(t *testing.T, r rendered) {
			ds := get[*appsv1.DaemonSet](t, r, "node-local-dns")
			if got := localIPs(t, ds); !slices.Equal(got, []string{localDNSIP}) {
				t.Errorf("injection mode binds %v, want [%s]", got, localDNSIP)
			}
		}},
		{"interception", "overlays/interception", func(t *testing.T, r rendered) {
			ds := get[*appsv1.DaemonSet](t, r, "node-local-dns")
			if got, want := localIPs(t, ds), []string{localDNSIP, settingsIP(r)}; !slices.Equal(got, want) {
				t.Errorf("interception mode binds %v, want %v", got, want)
			}
			opts, _ := app.ParseFlags(expandArgs(ds.Spec.Template.Spec.Containers[0]))
			if opts.Mode != app.ModeInterception {
				t.Errorf("mode = %q, want interception", opts.Mode)
			}
		}},
		{"cilium", "overlays/cilium", func(t *testing.T, r rendered) {
			lrps := loose(r, schema.GroupKind{Group: "cilium.io", Kind: "CiliumLocalRedirectPolicy"})
			var frontends []string
			for _, lrp := range lrps {
				if svc, ok, _ := unstructured.NestedString(lrp.Object, "spec", "redirectFrontend", "serviceMatcher", "serviceName"); ok {
					frontends = append(frontends, "service:"+svc)
				}
				if ip, ok, _ := unstructured.NestedString(lrp.Object, "spec", "redirectFrontend", "addressMatcher", "ip"); ok {
					frontends = append(frontends, "ip:"+ip)
				}
				sel, _, _ := unstructured.NestedString(lrp.Object, "spec", "redirectBackend", "localEndpointSelector", "matchLabels", "k8s-app")
				if sel != "node-local-dns" {
					t.Errorf("%s redirects to pods %q, want k8s-app=node-local-dns", lrp.GetName(), sel)
				}
			}
			slices.Sort(frontends)
			if want := []string{"ip:" + localDNSIP, "service:kube-dns"}; !slices.Equal(frontends, want) {
				t.Errorf("redirect frontends %v, want %v", frontends, want)
			}
			cm := get[*corev1.ConfigMap](t, r, "node-local-dns")
			if strings.Contains(cm.Data["Corefile"], "__PILLAR__LOCAL__DNS__") || !strings.Contains(cm.Data["Corefile"], "bind 0.0.0.0") {
				t.Errorf("Cilium Corefile must listen on the pod IP (bind 0.0.0.0):\n%s", cm.Data["Corefile"])
			}
		}},
		{"twin", "overlays/twin", func(t *testing.T, r rendered) {
			a := get[*appsv1.DaemonSet](t, r, "node-local-dns")
			b := get[*appsv1.DaemonSet](t, r, "node-local-dns-twin")
			if podsSelected(a.Spec.Selector.MatchLabels, b.Spec.Template.Labels) || podsSelected(b.Spec.Selector.MatchLabels, a.Spec.Template.Labels) {
				t.Errorf("the DaemonSets' selectors overlap: %v / %v", a.Spec.Selector.MatchLabels, b.Spec.Selector.MatchLabels)
			}
			if !slices.Equal(a.Spec.Template.Spec.Containers[0].Args, b.Spec.Template.Spec.Containers[0].Args) {
				t.Errorf("twin runs different arguments:\n%v\n%v", a.Spec.Template.Spec.Containers[0].Args, b.Spec.Template.Spec.Containers[0].Args)
			}
			svc := get[*corev1.Service](t, r, "node-local-dns")
			if !podsSelected(svc.Spec.Selector, a.Spec.Template.Labels) || !podsSelected(svc.Spec.Selector, b.Spec.Template.Labels) {
				t.Errorf("metrics Service %v does not select both DaemonSets' pods", svc.Spec.Selector)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.check(t, renderRepo(t, tc.dir))
		})
	}
}

// TestRenderMonitoring checks the alerts and the dashboard against the metric
// names the agent exports.
func TestRenderMonitoring(t *testing.T) {
	r := renderRepo(t, "overlays/monitoring")
	sms := loose(r, schema.GroupKind{Group: "monitoring.coreos.com", Kind: "ServiceMonitor"})
	if len(sms) != 1 {
		t.Fatalf("want 1 ServiceMonitor, got %d", len(sms))
	}
	svc := get[*corev1.Service](t, r, "node-local-dns")
	sel, _, _ := unstructured.NestedString(sms[0].Object, "spec", "selector", "matchLabels", "k8s-app")
	if svc.Labels["k8s-app"] != sel {
		t.Errorf("ServiceMonitor selects k8s-app=%q, metrics Service has %v", sel, svc.Labels)
	}
	endpoints, _, _ := unstructured.NestedSlice(sms[0].Object, "spec", "endpoints")
	for _, e := range endpoints {
		port, _ := e.(map[string]any)["port"].(string)
		if !slices.ContainsFunc(svc.Spec.Ports, func(p corev1.ServicePort) bool { return p.Name == port }) {
			t.Errorf("ServiceMonitor scrapes port %q, the Service has %v", port, svc.Spec.Ports)
		}
	}

	rules := loose(r, schema.GroupKind{Group: "monitoring.coreos.com", Kind: "PrometheusRule"})
	if len(rules) != 1 {
		t.Fatalf("want 1 PrometheusRule, got %d", len(rules))
	}
	groups, _, _ := unstructured.NestedSlice(rules[0].Object, "spec", "groups")
	alerts := map[string]string{}
	for _, g := range groups {
		rs, _ := g.(map[string]any)["rules"].([]any)
		for _, rule := range rs {
			m := rule.(map[string]any)
			name, _ := m["alert"].(string)
			expr, _ := m["expr"].(string)
			alerts[name] = expr
		}
	}
	for name, metric := range map[string]string{
		"NodeLocalDNSAgentDown":         "up{",
		"NodeLocalDNSHighServfail":      "coredns_dns_responses_total",
		"NodeLocalDNSSetupErrors":       "coredns_nodecache_setup_errors_total",
		"NodeLocalDNSUpstreamsDown":     "coredns_forward_healthcheck_broken_total",
		"NodeLocalDNSUpstreamUnhealthy": "coredns_proxy_healthcheck_failures_total",
		"NodeLocalDNSMaxConcurrent":     "coredns_forward_max_concurrent_rejects_total",
		"NodeLocalDNSReloadFailed":      "coredns_reload_failed_total",
		"NodeLocalDNSPanics":            "coredns_panics_total",
		"NodeLocalDNSSlowHealth":        "coredns_health_request_duration_seconds_bucket",
	} {
		if !strings.Contains(alerts[name], metric) {
			t.Errorf("alert %s: expr %q does not use %s", name, alerts[name], metric)
		}
	}

	dash := get[*corev1.ConfigMap](t, r, "node-local-dns-dashboard")
	if dash.Labels["grafana_dashboard"] != "1" {
		t.Errorf("dashboard ConfigMap labels %v lack grafana_dashboard=1", dash.Labels)
	}
	var board struct {
		Title  string
		Panels []struct {
			Title   string
			Targets []struct{ Expr string }
		}
	}
	if err := json.Unmarshal([]byte(dash.Data["node-local-dns.json"]), &board); err != nil {
		t.Fatalf("dashboard JSON: %v", err)
	}
	var exprs strings.Builder
	for _, p := range board.Panels {
		for _, tg := range p.Targets {
			exprs.WriteString(tg.Expr + "\n")
		}
	}
	for _, m := range []string{"coredns_dns_requests_total", "coredns_dns_responses_total", "coredns_cache_hits_total", "coredns_cache_misses_total", "coredns_dns_request_duration_seconds_bucket", "coredns_forward_requests_total", "coredns_nodecache_setup_errors_total", "coredns_proxy_request_duration_seconds_bucket", "coredns_proxy_healthcheck_failures_total", "coredns_proxy_conn_cache_misses_total", "coredns_dns_response_size_bytes_bucket"} {
		if !strings.Contains(exprs.String(), m) {
			t.Errorf("dashboard %q has no panel on %s", board.Title, m)
		}
	}
}
