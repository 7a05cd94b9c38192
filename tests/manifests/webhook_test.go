package manifests

import (
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	cmv1 "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	admv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
)

const (
	webhookName      = "node-local-dns-webhook"
	webhookNamespace = "node-local-dns"
	injectLabel      = "node-local-dns-injection"
)

// TestRenderWebhookConfiguration checks the MutatingWebhookConfiguration of
// every overlay against the rules of the webhook issue.
func TestRenderWebhookConfiguration(t *testing.T) {
	for _, dir := range overlays(t) {
		t.Run(dir, func(t *testing.T) {
			r := renderRepo(t, dir)
			cfg := get[*admv1.MutatingWebhookConfiguration](t, r, webhookName)
			if len(cfg.Webhooks) != 1 {
				t.Fatalf("want 1 webhook, got %d", len(cfg.Webhooks))
			}
			w := cfg.Webhooks[0]
			if w.FailurePolicy == nil || *w.FailurePolicy != admv1.Ignore {
				t.Errorf("failurePolicy = %s, want Ignore", deref(w.FailurePolicy))
			}
			if w.SideEffects == nil || *w.SideEffects != admv1.SideEffectClassNone {
				t.Errorf("sideEffects = %s, want None", deref(w.SideEffects))
			}
			if w.TimeoutSeconds == nil || *w.TimeoutSeconds > 5 || *w.TimeoutSeconds < 1 {
				t.Errorf("timeoutSeconds = %d, want 1..5", deref(w.TimeoutSeconds))
			}
			if !slices.Equal(w.AdmissionReviewVersions, []string{"v1"}) {
				t.Errorf("admissionReviewVersions = %v, want [v1]", w.AdmissionReviewVersions)
			}
			if w.ReinvocationPolicy == nil || *w.ReinvocationPolicy != admv1.IfNeededReinvocationPolicy {
				t.Errorf("reinvocationPolicy = %s, want IfNeeded", deref(w.ReinvocationPolicy))
			}
			checkRules(t, w.Rules)
			checkSelectors(t, w, dir == filepath.Join("overlays", "cluster-wide"))
			checkMatchConditions(t, w.MatchConditions)

			// The client config points at the webhook Service, whose port 443
			// reaches the container's 9443.
			svcRef := w.ClientConfig.Service
			if svcRef == nil || w.ClientConfig.URL != nil {
				t.Fatalf("clientConfig must name a Service, got %+v", w.ClientConfig)
			}
			if svcRef.Path == nil || *svcRef.Path != "/mutate-v1-pod" || svcRef.Port == nil || *svcRef.Port != 443 {
				t.Errorf("clientConfig.service path/port = %v/%v, want /mutate-v1-pod/443", svcRef.Path, svcRef.Port)
			}
			svc := get[*corev1.Service](t, r, svcRef.Name)
			if svc.Namespace != svcRef.Namespace {
				t.Errorf("Service %s is in %q, clientConfig says %q", svc.Name, svc.Namespace, svcRef.Namespace)
			}
			dep := get[*appsv1.Deployment](t, r, webhookName)
			if !podsSelected(svc.Spec.Selector, dep.Spec.Template.Labels) {
				t.Errorf("Service selector %v does not select the webhook pods %v", svc.Spec.Selector, dep.Spec.Template.Labels)
			}
			var target int32
			for _, p := range svc.Spec.Ports {
				if p.Port == 443 {
					target = containerPort(t, dep.Spec.Template.Spec.Containers[0], p.TargetPort.StrVal, p.TargetPort.IntVal)
				}
			}
			if target != 9443 {
				t.Errorf("Service port 443 reaches container port %d, want 9443", target)
			}
			if got := flagValue(dep.Spec.Template.Spec.Containers[0].Args, "--port"); got != "9443" {
				t.Errorf("webhook --port = %q, want 9443", got)
			}
			checkCertificates(t, r, cfg, dep)
		})
	}
}

func checkRules(t *testing.T, rules []admv1.RuleWithOperations) {
	t.Helper()
	if len(rules) != 1 {
		t.Fatalf("want 1 rule, got %d", len(rules))
	}
	rule := rules[0]
	if !slices.Equal(rule.Operations, []admv1.OperationType{admv1.Create}) {
		t.Errorf("operations = %v, want [CREATE] only", rule.Operations)
	}
	if !slices.Equal(rule.Resources, []string{"pods"}) || !slices.Equal(rule.APIGroups, []string{""}) || !slices.Equal(rule.APIVersions, []string{"v1"}) {
		t.Errorf("rule = %v %v %v, want core v1 pods", rule.APIGroups, rule.APIVersions, rule.Resources)
	}
}

// checkSelectors evaluates the selectors on namespaces and pods, so that any
// spelling of them that selects the right objects passes. clusterWide is the
// mode of components/cluster-wide: every namespace not labelled disabled.
func checkSelectors(t *testing.T, w admv1.MutatingWebhook, clusterWide bool) {
	t.Helper()
	nsSel, err := metav1.LabelSelectorAsSelector(w.NamespaceSelector)
	if err != nil {
		t.Fatalf("namespaceSelector: %v", err)
	}
	for _, tc := range []struct {
		name   string
		labels map[string]string
		want   bool
	}{
		{"labelled namespace", map[string]string{injectLabel: "enabled", "kubernetes.io/metadata.name": "apps"}, true},
		{"unlabelled namespace", map[string]string{"kubernetes.io/metadata.name": "apps"}, clusterWide},
		{"namespace with another value", map[string]string{injectLabel: "maybe", "kubernetes.io/metadata.name": "apps"}, clusterWide},
		{"unlabelled kube-system", map[string]string{"kubernetes.io/metadata.name": "kube-system"}, false},
		{"unlabelled webhook namespace", map[string]string{"kubernetes.io/metadata.name": webhookNamespace}, false},
		{"label disabled", map[string]string{injectLabel: "disabled", "kubernetes.io/metadata.name": "apps"}, false},
		{"kube-system even if labelled", map[string]string{injectLabel: "enabled", "kubernetes.io/metadata.name": "kube-system"}, false},
		{"kube-public even if labelled", map[string]string{injectLabel: "enabled", "kubernetes.io/metadata.name": "kube-public"}, false},
		{"kube-node-lease even if labelled", map[string]string{injectLabel: "enabled", "kubernetes.io/metadata.name": "kube-node-lease"}, false},
		{"webhook namespace even if labelled", map[string]string{injectLabel: "enabled", "kubernetes.io/metadata.name": webhookNamespace}, false},
	} {
		if got := nsSel.Matches(labels.Set(tc.labels)); got != tc.want {
			t.Errorf("namespaceSelector on %s: matches=%v, want %v", tc.name, got, tc.want)
		}
	}
	objSel, err := metav1.LabelSelectorAsSelector(w.ObjectSelector)
	if err != nil {
		t.Fatalf("objectSelector: %v", err)
	}
	for _, tc := range []struct {
		name   string
		labels map[string]string
		want   bool
	}{
		{"plain pod", map[string]string{"app": "x"}, true},
		{"pod without labels", nil, true},
		{"opted-out pod", map[string]string{injectLabel: "disabled"}, false},
	} {
		if got := objSel.Matches(labels.Set(tc.labels)); got != tc.want {
			t.Errorf("objectSelector on %s: matches=%v, want %v", tc.name, got, tc.want)
		}
	}
}

// checkMatchConditions makes sure the conditions exist for what the API server
// can decide alone; their CEL is compiled and evaluated by the real API server
// in the dry run and in tests/webhook.
func checkMatchConditions(t *testing.T, conds []admv1.MatchCondition) {
	t.Helper()
	var all strings.Builder
	for _, c := range conds {
		all.WriteString(c.Expression)
		all.WriteString("\n")
	}
	text := all.String()
	for _, want := range []string{"dnsPolicy", "hostNetwork", "windows", "kubernetes.io/os", "node-local-dns-injection", "disabled", "ClusterFirstWithHostNet"} {
		if !strings.Contains(text, want) {
			t.Errorf("matchConditions do not mention %q:\n%s", want, text)
		}
	}
}

// checkCertificates checks the certificate wiring: with cert-manager the
// inject-ca-from annotation names the serving Certificate whose Secret the
// Deployment mounts; with built-in certificates the webhook gets the flags,
// a writable cert dir and RBAC limited to its Secret and configuration.
func checkCertificates(t *testing.T, r rendered, cfg *admv1.MutatingWebhookConfiguration, dep *appsv1.Deployment) {
	t.Helper()
	args := dep.Spec.Template.Spec.Containers[0].Args
	certDir := flagValue(args, "--cert-dir")
	vol := volumeAt(t, dep.Spec.Template.Spec, dep.Spec.Template.Spec.Containers[0], certDir)
	certs := all[*cmv1.Certificate](r)
	builtin := slices.Contains(args, "--builtin-certs")
	if builtin == (len(certs) > 0) {
		t.Fatalf("exactly one certificate path must be configured: --builtin-certs=%v, %d cert-manager Certificates", builtin, len(certs))
	}
	if builtin {
		if vol.EmptyDir == nil {
			t.Errorf("built-in certificates need a writable emptyDir at %s, got %+v", certDir, vol.VolumeSource)
		}
		if _, ok := cfg.Annotations["cert-manager.io/inject-ca-from"]; ok {
			t.Errorf("built-in certificates must not carry cert-manager's inject-ca-from annotation")
		}
		if got := flagValue(args, "--webhook-config-name"); got != cfg.Name {
			t.Errorf("--webhook-config-name = %q, want %q", got, cfg.Name)
		}
		secretNS, secretName, _ := strings.Cut(flagValue(args, "--certs-secret"), "/")
		role := get[*rbacv1.Role](t, r, "node-local-dns-webhook-certs")
		if role.Namespace != secretNS {
			t.Errorf("certs Role in %q, Secret in %q", role.Namespace, secretNS)
		}
		checkNamedRules(t, role.Rules, "secrets", secretName)
		cr := get[*rbacv1.ClusterRole](t, r, "node-local-dns-webhook-certs")
		checkNamedRules(t, cr.Rules, "mutatingwebhookconfigurations", cfg.Name)
		// The Secret is shipped, so the webhook needs no create; without
		// data, so that applying the install again keeps what it wrote.
		secret := get[*corev1.Secret](t, r, secretName)
		if secret.Namespace != secretNS || len(secret.Data) != 0 || len(secret.StringData) != 0 || secret.Type != corev1.SecretTypeOpaque {
			t.Errorf("shipped Secret %s/%s: type %q, %d data keys; want an empty Opaque Secret in %s", secret.Namespace, secret.Name, secret.Type, len(secret.Data)+len(secret.StringData), secretNS)
		}
		return
	}
	ref := cfg.Annotations["cert-manager.io/inject-ca-from"]
	ns, name, _ := strings.Cut(ref, "/")
	serving := get[*cmv1.Certificate](t, r, name)
	if serving.Namespace != ns {
		t.Errorf("inject-ca-from %q: Certificate is in %q", ref, serving.Namespace)
	}
	if vol.Secret == nil || vol.Secret.SecretName != serving.Spec.SecretName {
		t.Errorf("cert dir volume %+v does not mount the serving Certificate's Secret %q", vol.VolumeSource, serving.Spec.SecretName)
	}
	svc := cfg.Webhooks[0].ClientConfig.Service
	if want := svc.Name + "." + svc.Namespace + ".svc"; !slices.Contains(serving.Spec.DNSNames, want) {
		t.Errorf("serving Certificate dnsNames %v lack %q", serving.Spec.DNSNames, want)
	}
	// serving <- CA Issuer <- CA Certificate <- self-signed Issuer.
	caIssuer := get[*cmv1.Issuer](t, r, serving.Spec.IssuerRef.Name)
	if caIssuer.Spec.CA == nil {
		t.Fatalf("serving Certificate's issuer %s is not a CA issuer", caIssuer.Name)
	}
	var ca *cmv1.Certificate
	for _, c := range certs {
		if c.Spec.SecretName == caIssuer.Spec.CA.SecretName {
			ca = c
		}
	}
	if ca == nil || !ca.Spec.IsCA {
		t.Fatalf("no CA Certificate writes the CA issuer's Secret %q", caIssuer.Spec.CA.SecretName)
	}
	root := get[*cmv1.Issuer](t, r, ca.Spec.IssuerRef.Name)
	if root.Spec.SelfSigned == nil {
		t.Errorf("CA Certificate's issuer %s is not self-signed", root.Name)
	}
}

// checkNamedRules asserts that every rule on resource is limited to name
// (so there is no create, which cannot be).
func checkNamedRules(t *testing.T, rules []rbacv1.PolicyRule, resource, name string) {
	t.Helper()
	found := false
	for _, rule := range rules {
		if !slices.Contains(rule.Resources, resource) {
			continue
		}
		found = true
		if slices.Contains(rule.Verbs, "*") || slices.Contains(rule.Resources, "*") {
			t.Errorf("wildcard rule %+v", rule)
		}
		if !slices.Equal(rule.ResourceNames, []string{name}) {
			t.Errorf("rule %+v on %s is not limited to %q", rule, resource, name)
		}
	}
	if !found {
		t.Errorf("no rule on %s", resource)
	}
}

// TestRenderWebhookDeployment checks availability and hardening of the webhook.
func TestRenderWebhookDeployment(t *testing.T) {
	for _, dir := range overlays(t) {
		t.Run(dir, func(t *testing.T) {
			r := renderRepo(t, dir)
			dep := get[*appsv1.Deployment](t, r, webhookName)
			spec := dep.Spec.Template.Spec
			if dep.Spec.Replicas == nil || *dep.Spec.Replicas != 2 {
				t.Errorf("replicas = %v, want 2", dep.Spec.Replicas)
			}
			if spec.PriorityClassName != "system-cluster-critical" {
				t.Errorf("priorityClassName = %q", spec.PriorityClassName)
			}
			if len(spec.TopologySpreadConstraints) == 0 || spec.TopologySpreadConstraints[0].TopologyKey != "kubernetes.io/hostname" {
				t.Errorf("no topology spread across nodes: %+v", spec.TopologySpreadConstraints)
			}
			pdb := get[*policyv1.PodDisruptionBudget](t, r, webhookName)
			sel, err := metav1.LabelSelectorAsSelector(pdb.Spec.Selector)
			if err != nil || !sel.Matches(labels.Set(dep.Spec.Template.Labels)) {
				t.Errorf("PDB selector %v does not select the webhook pods (%v)", pdb.Spec.Selector, err)
			}
			if pdb.Spec.MinAvailable == nil || pdb.Spec.MinAvailable.IntValue() < 1 {
				t.Errorf("PDB minAvailable = %v, want >= 1", pdb.Spec.MinAvailable)
			}
			// Unready webhook pods (both, while kube-dns is unknown) must not
			// block node drains.
			if p := pdb.Spec.UnhealthyPodEvictionPolicy; p == nil || *p != policyv1.AlwaysAllow {
				t.Errorf("PDB unhealthyPodEvictionPolicy = %v, want AlwaysAllow", deref(p))
			}
			psc := spec.SecurityContext
			if psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot || psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
				t.Errorf("pod securityContext %+v: want runAsNonRoot and seccomp RuntimeDefault", psc)
			}
			if len(spec.Containers) != 1 {
				t.Fatalf("want 1 container, got %d", len(spec.Containers))
			}
			c := spec.Containers[0]
			sc := c.SecurityContext
			if sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem ||
				sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation ||
				sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(sc.Capabilities.Add) != 0 {
				t.Errorf("container securityContext %+v: want read-only root, no privilege escalation, all capabilities dropped", sc)
			}
			if c.LivenessProbe == nil || c.LivenessProbe.HTTPGet == nil || c.LivenessProbe.HTTPGet.Path != "/healthz" {
				t.Errorf("liveness probe %+v, want /healthz", c.LivenessProbe)
			}
			if c.ReadinessProbe == nil || c.ReadinessProbe.HTTPGet == nil || c.ReadinessProbe.HTTPGet.Path != "/readyz" {
				t.Errorf("readiness probe %+v, want /readyz", c.ReadinessProbe)
			}
			probeAddr := flagValue(c.Args, "--health-probe-bind-address")
			if want := ":" + c.ReadinessProbe.HTTPGet.Port.String(); c.ReadinessProbe.HTTPGet.Port.IntVal == 0 {
				port := containerPort(t, c, c.ReadinessProbe.HTTPGet.Port.StrVal, 0)
				if !strings.HasSuffix(probeAddr, ":"+strconv.Itoa(int(port))) {
					t.Errorf("probes reach port %d, --health-probe-bind-address=%q", port, probeAddr)
				}
			} else if !strings.HasSuffix(probeAddr, want) {
				t.Errorf("probes reach %s, --health-probe-bind-address=%q", want, probeAddr)
			}
			for _, f := range []string{"--cert-dir", "--local-dns-ip", "--kube-dns-service", "--cluster-domain", "--metrics-bind-address",
				"--no-agent-node-labels", "--no-agent-tolerations"} {
				if flagValue(c.Args, f) == "" {
					t.Errorf("webhook lacks %s in %v", f, c.Args)
				}
			}
			if _, ok := c.Resources.Limits[corev1.ResourceCPU]; ok {
				t.Errorf("webhook has a CPU limit")
			}
			checkKubeDNSRole(t, r, flagValue(c.Args, "--kube-dns-service"))
		})
	}
}

// checkKubeDNSRole: the webhook may read the kube-dns Service and nothing else
// in its namespace.
func checkKubeDNSRole(t *testing.T, r rendered, svc string) {
	t.Helper()
	ns, name, _ := strings.Cut(svc, "/")
	role := get[*rbacv1.Role](t, r, "node-local-dns-webhook-kube-dns")
	if role.Namespace != ns {
		t.Errorf("kube-dns Role in %q, Service in %q", role.Namespace, ns)
	}
	if len(role.Rules) != 1 || !slices.Equal(role.Rules[0].Resources, []string{"services"}) ||
		!slices.Equal(role.Rules[0].ResourceNames, []string{name}) ||
		!slices.Equal(role.Rules[0].Verbs, []string{"get", "list", "watch"}) {
		t.Errorf("kube-dns Role rules %+v: want get/list/watch on services/%s only", role.Rules, name)
	}
	for _, cr := range all[*rbacv1.ClusterRole](r) {
		for _, rule := range cr.Rules {
			for _, res := range rule.Resources {
				if res == "secrets" || res == "services" || res == "pods" || res == "*" {
					t.Errorf("ClusterRole %s grants %v on %s cluster-wide", cr.Name, rule.Verbs, res)
				}
			}
		}
	}
}

func podsSelected(selector, podLabels map[string]string) bool {
	return len(selector) > 0 && labels.SelectorFromSet(selector).Matches(labels.Set(podLabels))
}

// containerPort resolves a named (or numbered) port of c.
func containerPort(t *testing.T, c corev1.Container, name string, number int32) int32 {
	t.Helper()
	if name == "" {
		return number
	}
	for _, p := range c.Ports {
		if p.Name == name {
			return p.ContainerPort
		}
	}
	t.Errorf("container %s has no port named %q", c.Name, name)
	return 0
}

// volumeAt returns the volume mounted at path in c.
func volumeAt(t *testing.T, spec corev1.PodSpec, c corev1.Container, path string) corev1.Volume {
	t.Helper()
	for _, m := range c.VolumeMounts {
		if m.MountPath == path {
			for _, v := range spec.Volumes {
				if v.Name == m.Name {
					return v
				}
			}
		}
	}
	t.Fatalf("nothing is mounted at %q in container %s", path, c.Name)
	return corev1.Volume{}
}

// flagValue returns the value of a --name=value (or -name=value) argument.
func flagValue(args []string, name string) string {
	for _, a := range args {
		if v, ok := strings.CutPrefix(a, name+"="); ok {
			return v
		}
	}
	return ""
}

// deref returns *p, or the zero value for nil, for messages.
func deref[T any](p *T) T {
	var zero T
	if p == nil {
		return zero
	}
	return *p
}
