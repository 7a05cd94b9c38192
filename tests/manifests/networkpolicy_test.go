package manifests

import (
	"net/netip"
	"slices"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// peer is a source of traffic to the webhook pods: a pod (with its
// namespace's labels) or a host/external address.
type peer struct {
	name     string
	ip       string
	pod      bool
	nsLabels map[string]string
}

// admits evaluates the policy's ingress rules as the NetworkPolicy API
// defines them, for TCP traffic from p to port (numbered or named) of c.
func admits(t *testing.T, np *networkingv1.NetworkPolicy, c corev1.Container, p peer, port int32) bool {
	t.Helper()
	for _, rule := range np.Spec.Ingress {
		portOK := len(rule.Ports) == 0
		for _, rp := range rule.Ports {
			if rp.Port == nil || resolvePort(t, c, *rp.Port) == port {
				portOK = true
			}
		}
		if !portOK {
			continue
		}
		if len(rule.From) == 0 {
			return true
		}
		for _, from := range rule.From {
			if from.IPBlock != nil && inBlock(t, from.IPBlock, p.ip) {
				return true
			}
			if from.NamespaceSelector != nil && p.pod {
				sel, err := metav1.LabelSelectorAsSelector(from.NamespaceSelector)
				if err != nil {
					t.Fatal(err)
				}
				if sel.Matches(labels.Set(p.nsLabels)) {
					return true
				}
			}
		}
	}
	return false
}

func resolvePort(t *testing.T, c corev1.Container, p intstr.IntOrString) int32 {
	t.Helper()
	if p.Type == intstr.Int {
		return p.IntVal
	}
	return containerPort(t, c, p.StrVal, 0)
}

func inBlock(t *testing.T, b *networkingv1.IPBlock, ip string) bool {
	t.Helper()
	addr := netip.MustParseAddr(ip)
	cidr, err := netip.ParsePrefix(b.CIDR)
	if err != nil {
		t.Fatalf("ipBlock cidr %q: %v", b.CIDR, err)
	}
	if !cidr.Contains(addr) {
		return false
	}
	for _, e := range b.Except {
		ex, err := netip.ParsePrefix(e)
		if err != nil {
			t.Fatalf("ipBlock except %q: %v", e, err)
		}
		if ex.Contains(addr) {
			return false
		}
	}
	return true
}

// TestRenderWebhookNetworkPolicy checks the NetworkPolicy of every overlay
// that ships one: the webhook port admits the API server (a host address,
// konnectivity agents in kube-system) and no other pod; probes and metrics
// stay reachable; the pod CIDR comes from the settings.
func TestRenderWebhookNetworkPolicy(t *testing.T) {
	found := false
	for _, dir := range overlays(t) {
		r := renderRepo(t, dir)
		nps := all[*networkingv1.NetworkPolicy](r)
		if len(nps) == 0 {
			continue
		}
		found = true
		t.Run(dir, func(t *testing.T) {
			np := get[*networkingv1.NetworkPolicy](t, r, webhookName)
			dep := get[*appsv1.Deployment](t, r, webhookName)
			sel, err := metav1.LabelSelectorAsSelector(&np.Spec.PodSelector)
			if err != nil || np.Namespace != dep.Namespace || !sel.Matches(labels.Set(dep.Spec.Template.Labels)) || sel.Empty() {
				t.Fatalf("policy %s/%s does not select the webhook pods (%v)", np.Namespace, np.Name, err)
			}
			if !slices.Equal(np.Spec.PolicyTypes, []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}) {
				t.Errorf("policyTypes = %v, want [Ingress]", np.Spec.PolicyTypes)
			}
			settings := get[*corev1.ConfigMap](t, r, "node-local-dns-settings")
			podCIDR := netip.MustParsePrefix(settings.Data["podCIDR"])
			podIP := podCIDR.Addr().Next().Next().String()
			c := dep.Spec.Template.Spec.Containers[0]
			for _, tc := range []struct {
				peer  peer
				port  int32
				admit bool
			}{
				{peer{name: "API server on a control-plane host", ip: "192.168.10.5"}, 9443, true},
				{peer{name: "konnectivity agent pod", ip: podIP, pod: true, nsLabels: map[string]string{"kubernetes.io/metadata.name": "kube-system"}}, 9443, true},
				{peer{name: "pod in an application namespace", ip: podIP, pod: true, nsLabels: map[string]string{"kubernetes.io/metadata.name": "shop"}}, 9443, false},
				{peer{name: "pod in the webhook's namespace", ip: podIP, pod: true, nsLabels: map[string]string{"kubernetes.io/metadata.name": webhookNamespace}}, 9443, false},
				{peer{name: "kubelet probe", ip: "192.168.10.7"}, 8081, true},
				{peer{name: "Prometheus pod", ip: podIP, pod: true, nsLabels: map[string]string{"kubernetes.io/metadata.name": "monitoring"}}, 8080, true},
			} {
				if got := admits(t, np, c, tc.peer, tc.port); got != tc.admit {
					t.Errorf("%s -> port %d: admitted=%v, want %v", tc.peer.name, tc.port, got, tc.admit)
				}
			}
		})
	}
	if !found {
		t.Fatal("no overlay ships the webhook NetworkPolicy")
	}
}
