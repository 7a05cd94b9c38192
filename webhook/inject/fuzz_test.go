package inject

import (
	"reflect"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

func splitList(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, ",")
}

// FuzzInject feeds random pods, namespaces and annotations to Inject: it must
// not panic, must not modify its input, every injected result must pass the
// API's dnsConfig validation and a second pass must leave the pod alone.
func FuzzInject(f *testing.F) {
	f.Add(false, "ClusterFirst", "team-a", "", "", "", "", "", "", "", "10.96.0.10", true)
	f.Add(true, "ClusterFirstWithHostNet", "ns", "ndots:2,edns0", "timeout:3", "8.8.8.8,1.1.1.1", "corp.example,a.b.", "ndots:5,rotate", "linux", "", "10.96.0.10,fd00::a", false)
	f.Add(false, "", "x", "ndots:99", "", "bad", "bad_domain", ":", "windows", "disabled", "", true)
	f.Fuzz(func(t *testing.T, hostNetwork bool, policy, ns, nsOpts, podOpts, servers, searches, options, os, optOut, kubeDNS string, injectHostNet bool) {
		pod := newPod(func(p *corev1.Pod) {
			p.Namespace = ""
			p.Spec.HostNetwork = hostNetwork
			p.Spec.DNSPolicy = corev1.DNSPolicy(policy)
			if os != "" {
				p.Spec.OS = &corev1.PodOS{Name: corev1.OSName(os)}
			}
			p.Labels = map[string]string{SelectorLabel: optOut}
			p.Annotations = map[string]string{OptionsAnnotation: podOpts}
			if servers != "" || searches != "" || options != "" {
				c := &corev1.PodDNSConfig{Nameservers: splitList(servers), Searches: splitList(searches)}
				for _, o := range splitList(options) {
					name, value, ok := strings.Cut(o, ":")
					if ok {
						c.Options = append(c.Options, corev1.PodDNSConfigOption{Name: name, Value: &value})
					} else {
						c.Options = append(c.Options, corev1.PodDNSConfigOption{Name: name})
					}
				}
				p.Spec.DNSConfig = c
			}
		})
		cfg := testConfig(t)
		cfg.KubeDNSIPs = splitList(kubeDNS)
		cfg.InjectHostNetwork = injectHostNet
		nsAnn := map[string]string{OptionsAnnotation: nsOpts}
		before := pod.DeepCopy()

		res := Inject(pod, ns, nsAnn, cfg)
		if !reflect.DeepEqual(pod, before) {
			t.Fatal("Inject modified its input")
		}
		if res.Reason == "" {
			t.Fatal("empty reason")
		}
		if !res.Injected {
			if res.Pod != nil {
				t.Fatal("skipped but returned a pod")
			}
			return
		}
		if res.Reason != ReasonInjected || res.Pod.Spec.DNSPolicy != corev1.DNSNone || res.Pod.Annotations[InjectedAnnotation] != "true" {
			t.Fatalf("injected pod is incomplete: reason %q policy %q", res.Reason, res.Pod.Spec.DNSPolicy)
		}
		if err := ValidateDNS(res.Pod.Spec.DNSPolicy, res.Pod.Spec.DNSConfig); err != nil {
			t.Fatalf("injected dnsConfig fails validation: %v", err)
		}
		if got := res.Pod.Spec.DNSConfig.Nameservers[0]; got != cfg.LocalIPs[0] {
			t.Fatalf("first nameserver = %q, want the local IP", got)
		}
		if again := Inject(res.Pod, ns, nsAnn, cfg); again.Injected {
			t.Fatal("second pass injected again")
		}
	})
}
