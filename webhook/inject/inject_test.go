package inject

import (
	"fmt"
	"reflect"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func opt(name string, value ...string) corev1.PodDNSConfigOption {
	if len(value) == 0 {
		return corev1.PodDNSConfigOption{Name: name}
	}
	return corev1.PodDNSConfigOption{Name: name, Value: new(value[0])}
}

func testConfig(t testing.TB) Config {
	t.Helper()
	base, err := BaseOptions(DefaultNdots, DefaultTimeout, DefaultAttempts)
	if err != nil {
		t.Fatal(err)
	}
	return Config{
		LocalIPs:          []string{"169.254.20.10"},
		KubeDNSIPs:        []string{"10.96.0.10"},
		ClusterDomain:     "cluster.local",
		Options:           base,
		InjectHostNetwork: true,
	}
}

func newPod(mods ...func(*corev1.Pod)) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "team-a"},
		Spec: corev1.PodSpec{
			DNSPolicy:  corev1.DNSClusterFirst,
			Containers: []corev1.Container{{Name: "c", Image: "busybox"}},
		},
	}
	for _, m := range mods {
		m(p)
	}
	return p
}

var defaultSearches = []string{"team-a.svc.cluster.local", "svc.cluster.local", "cluster.local"}
var defaultOptions = []corev1.PodDNSConfigOption{opt("ndots", "3"), opt("timeout", "1"), opt("attempts", "2")}

func TestInject(t *testing.T) {
	hostNet := func(p *corev1.Pod) { p.Spec.HostNetwork = true }
	policy := func(d corev1.DNSPolicy) func(*corev1.Pod) { return func(p *corev1.Pod) { p.Spec.DNSPolicy = d } }
	label := func(k, v string) func(*corev1.Pod) {
		return func(p *corev1.Pod) { p.Labels = map[string]string{k: v} }
	}
	annotate := func(k, v string) func(*corev1.Pod) {
		return func(p *corev1.Pod) {
			if p.Annotations == nil {
				p.Annotations = map[string]string{}
			}
			p.Annotations[k] = v
		}
	}
	dnsConfig := func(c corev1.PodDNSConfig) func(*corev1.Pod) {
		return func(p *corev1.Pod) { p.Spec.DNSConfig = &c }
	}
	longSearches := make([]string, 31)
	for i := range longSearches {
		longSearches[i] = fmt.Sprintf("s%02d.example.com", i)
	}
	// Ten 199-character domains: valid alone (1999 characters), too long
	// after the three cluster domains (56 characters).
	bigSearches := make([]string, 10)
	for i := range bigSearches {
		bigSearches[i] = fmt.Sprintf("%s.%s.%s.n%06d", strings.Repeat("a", 63), strings.Repeat("b", 63), strings.Repeat("c", 63), i)
	}

	for _, tc := range []struct {
		name       string
		pod        *corev1.Pod
		namespace  string
		nsAnn      map[string]string
		mod        func(*Config)
		wantReason string
		want       *corev1.PodDNSConfig // nil when skipped
		wantWarn   string
	}{
		{
			name: "cluster first pod is injected", pod: newPod(), wantReason: ReasonInjected,
			want: &corev1.PodDNSConfig{Nameservers: []string{"169.254.20.10", "10.96.0.10"}, Searches: defaultSearches, Options: defaultOptions},
		},
		{
			name: "empty dns policy counts as cluster first", pod: newPod(policy("")), wantReason: ReasonInjected,
			want: &corev1.PodDNSConfig{Nameservers: []string{"169.254.20.10", "10.96.0.10"}, Searches: defaultSearches, Options: defaultOptions},
		},
		{
			name: "namespace from the request wins over the pod's", pod: newPod(func(p *corev1.Pod) { p.Namespace = "" }), namespace: "team-a",
			wantReason: ReasonInjected,
			want:       &corev1.PodDNSConfig{Nameservers: []string{"169.254.20.10", "10.96.0.10"}, Searches: defaultSearches, Options: defaultOptions},
		},
		{
			name: "a result that would fail API validation is not produced", pod: newPod(), namespace: "Not_A_Label",
			wantReason: ReasonInvalidResult, wantWarn: "searches[0]",
		},
		{
			name: "bad kube-dns address is not produced", pod: newPod(), mod: func(c *Config) { c.KubeDNSIPs = []string{"10.96.0.300"} },
			wantReason: ReasonInvalidResult, wantWarn: "nameservers[1]",
		},
		{name: "no namespace anywhere", pod: newPod(func(p *corev1.Pod) { p.Namespace = "" }), wantReason: ReasonNamespaceUnknown},
		{name: "dns policy Default untouched", pod: newPod(policy(corev1.DNSDefault)), wantReason: ReasonDNSPolicyDefault},
		{
			name: "dns policy None untouched", wantReason: ReasonDNSPolicyNone,
			pod: newPod(policy(corev1.DNSNone), dnsConfig(corev1.PodDNSConfig{Nameservers: []string{"1.1.1.1"}})),
		},
		{name: "unknown dns policy untouched", pod: newPod(policy("Bogus")), wantReason: ReasonDNSPolicyUnknown},
		{name: "host network with cluster first behaves as Default", pod: newPod(hostNet), wantReason: ReasonHostNetClusterFirst},
		{name: "host network with empty policy behaves as Default", pod: newPod(hostNet, policy("")), wantReason: ReasonHostNetClusterFirst},
		{
			name: "host network with ClusterFirstWithHostNet is injected", pod: newPod(hostNet, policy(corev1.DNSClusterFirstWithHostNet)),
			wantReason: ReasonInjected,
			want:       &corev1.PodDNSConfig{Nameservers: []string{"169.254.20.10", "10.96.0.10"}, Searches: defaultSearches, Options: defaultOptions},
		},
		{
			name: "host network injection turned off", pod: newPod(hostNet, policy(corev1.DNSClusterFirstWithHostNet)),
			mod: func(c *Config) { c.InjectHostNetwork = false }, wantReason: ReasonHostNetDisabled,
		},
		{
			name: "ClusterFirstWithHostNet without host network is injected even when host network is off", pod: newPod(policy(corev1.DNSClusterFirstWithHostNet)),
			mod: func(c *Config) { c.InjectHostNetwork = false }, wantReason: ReasonInjected,
			want: &corev1.PodDNSConfig{Nameservers: []string{"169.254.20.10", "10.96.0.10"}, Searches: defaultSearches, Options: defaultOptions},
		},
		{name: "opt-out label", pod: newPod(label(SelectorLabel, DisabledValue)), wantReason: ReasonOptOutLabel},
		{
			name: "label with another value does not opt out", pod: newPod(label(SelectorLabel, "enabled")), wantReason: ReasonInjected,
			want: &corev1.PodDNSConfig{Nameservers: []string{"169.254.20.10", "10.96.0.10"}, Searches: defaultSearches, Options: defaultOptions},
		},
		{name: "opt-out annotation", pod: newPod(annotate(OptOutAnnotation, DisabledValue)), wantReason: ReasonOptOutAnnotation},
		{
			name: "already injected", wantReason: ReasonAlreadyInjected,
			pod: newPod(annotate(InjectedAnnotation, "true"), policy(corev1.DNSNone), dnsConfig(corev1.PodDNSConfig{Nameservers: []string{"169.254.20.10"}})),
		},
		{
			name: "stale injected annotation on a cluster first pod is injected", wantReason: ReasonInjected,
			pod:  newPod(annotate(InjectedAnnotation, "true")),
			want: &corev1.PodDNSConfig{Nameservers: []string{"169.254.20.10", "10.96.0.10"}, Searches: defaultSearches, Options: defaultOptions},
		},
		{
			name: "windows by spec.os", wantReason: ReasonWindows,
			pod: newPod(func(p *corev1.Pod) { p.Spec.OS = &corev1.PodOS{Name: corev1.Windows} }),
		},
		{
			name: "windows by node selector", wantReason: ReasonWindows,
			pod: newPod(func(p *corev1.Pod) { p.Spec.NodeSelector = map[string]string{OSLabel: "windows"} }),
		},
		{
			name: "linux by spec.os is injected", wantReason: ReasonInjected,
			pod:  newPod(func(p *corev1.Pod) { p.Spec.OS = &corev1.PodOS{Name: corev1.Linux} }),
			want: &corev1.PodDNSConfig{Nameservers: []string{"169.254.20.10", "10.96.0.10"}, Searches: defaultSearches, Options: defaultOptions},
		},
		{name: "kube-dns unknown", pod: newPod(), mod: func(c *Config) { c.KubeDNSIPs = nil }, wantReason: ReasonKubeDNSUnknown},
		{
			name: "existing dnsConfig is merged after ours", wantReason: ReasonInjected,
			pod: newPod(dnsConfig(corev1.PodDNSConfig{
				Nameservers: []string{"10.96.0.10", "8.8.8.8", "9.9.9.9"},
				Searches:    []string{"corp.example", "cluster.local."},
				Options:     []corev1.PodDNSConfigOption{opt("ndots", "5"), opt("edns0"), opt("single-request-reopen")},
			})),
			want: &corev1.PodDNSConfig{
				Nameservers: []string{"169.254.20.10", "10.96.0.10", "8.8.8.8"},
				Searches:    append(append([]string{}, defaultSearches...), "corp.example"),
				Options:     []corev1.PodDNSConfigOption{opt("ndots", "5"), opt("timeout", "1"), opt("attempts", "2"), opt("edns0"), opt("single-request-reopen")},
			},
			wantWarn: "9.9.9.9",
		},
		{
			name: "invalid existing dnsConfig is left for the API server to reject", wantReason: ReasonInvalidPodDNSConfig,
			pod: newPod(dnsConfig(corev1.PodDNSConfig{Nameservers: []string{"not-an-ip"}})),
		},
		{
			name: "dual stack local and kube-dns are cut at three", wantReason: ReasonInjected, pod: newPod(),
			mod: func(c *Config) {
				c.LocalIPs = []string{"169.254.20.10", "fd00::10"}
				c.KubeDNSIPs = []string{"10.96.0.10", "fd00::a"}
			},
			want:     &corev1.PodDNSConfig{Nameservers: []string{"169.254.20.10", "fd00::10", "10.96.0.10"}, Searches: defaultSearches, Options: defaultOptions},
			wantWarn: "fd00::a",
		},
		{
			name: "search list cut at 32 entries", wantReason: ReasonInjected,
			pod: newPod(dnsConfig(corev1.PodDNSConfig{Searches: longSearches})),
			want: &corev1.PodDNSConfig{
				Nameservers: []string{"169.254.20.10", "10.96.0.10"},
				Searches:    append(append([]string{}, defaultSearches...), longSearches[:29]...),
				Options:     defaultOptions,
			},
			wantWarn: "s30.example.com",
		},
		{
			name: "search list cut at 2048 characters", wantReason: ReasonInjected,
			pod: newPod(dnsConfig(corev1.PodDNSConfig{Searches: bigSearches})),
			want: &corev1.PodDNSConfig{
				Nameservers: []string{"169.254.20.10", "10.96.0.10"},
				Searches:    append(append([]string{}, defaultSearches...), bigSearches[:9]...),
				Options:     defaultOptions,
			},
			wantWarn: "dropped",
		},
		{
			name: "flags override defaults", wantReason: ReasonInjected, pod: newPod(),
			mod: func(c *Config) {
				o, err := BaseOptions(1, 5, 3)
				if err != nil {
					t.Fatal(err)
				}
				c.Options = o
				c.ClusterDomain = "k8s.example."
			},
			want: &corev1.PodDNSConfig{
				Nameservers: []string{"169.254.20.10", "10.96.0.10"},
				Searches:    []string{"team-a.svc.k8s.example", "svc.k8s.example", "k8s.example"},
				Options:     []corev1.PodDNSConfigOption{opt("ndots", "1"), opt("timeout", "5"), opt("attempts", "3")},
			},
		},
		{
			name: "namespace annotation overrides flags", wantReason: ReasonInjected, pod: newPod(),
			nsAnn: map[string]string{OptionsAnnotation: "ndots:2, edns0"},
			want: &corev1.PodDNSConfig{
				Nameservers: []string{"169.254.20.10", "10.96.0.10"}, Searches: defaultSearches,
				Options: []corev1.PodDNSConfigOption{opt("ndots", "2"), opt("timeout", "1"), opt("attempts", "2"), opt("edns0")},
			},
		},
		{
			name: "pod annotation overrides namespace annotation", wantReason: ReasonInjected,
			pod:   newPod(annotate(OptionsAnnotation, "ndots:4 timeout:2")),
			nsAnn: map[string]string{OptionsAnnotation: "ndots:2,timeout:3,rotate"},
			want: &corev1.PodDNSConfig{
				Nameservers: []string{"169.254.20.10", "10.96.0.10"}, Searches: defaultSearches,
				Options: []corev1.PodDNSConfigOption{opt("ndots", "4"), opt("timeout", "2"), opt("attempts", "2"), opt("rotate")},
			},
		},
		{
			name: "pod's own dnsConfig options override every annotation", wantReason: ReasonInjected,
			pod: newPod(annotate(OptionsAnnotation, "ndots:4,attempts:5"),
				dnsConfig(corev1.PodDNSConfig{Options: []corev1.PodDNSConfigOption{opt("ndots", "1"), opt("use-vc")}})),
			nsAnn: map[string]string{OptionsAnnotation: "ndots:2"},
			want: &corev1.PodDNSConfig{
				Nameservers: []string{"169.254.20.10", "10.96.0.10"}, Searches: defaultSearches,
				Options: []corev1.PodDNSConfigOption{opt("ndots", "1"), opt("timeout", "1"), opt("attempts", "5"), opt("use-vc")},
			},
		},
		{
			name: "bad namespace annotation skips with a reason", wantReason: ReasonInvalidAnnotation, pod: newPod(),
			nsAnn: map[string]string{OptionsAnnotation: "ndots:99"}, wantWarn: "ndots",
		},
		{
			name: "bad pod annotation skips with a reason", wantReason: ReasonInvalidAnnotation,
			pod: newPod(annotate(OptionsAnnotation, "timeout:")), wantWarn: "timeout",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig(t)
			if tc.mod != nil {
				tc.mod(&cfg)
			}
			before := tc.pod.DeepCopy()
			res := Inject(tc.pod, tc.namespace, tc.nsAnn, cfg)
			if !reflect.DeepEqual(tc.pod, before) {
				t.Fatal("Inject modified its input pod")
			}
			if res.Reason != tc.wantReason {
				t.Fatalf("reason = %q, want %q (warnings %v)", res.Reason, tc.wantReason, res.Warnings)
			}
			if tc.wantWarn != "" && !strings.Contains(strings.Join(res.Warnings, "\n"), tc.wantWarn) {
				t.Errorf("warnings %q do not mention %q", res.Warnings, tc.wantWarn)
			}
			if tc.want == nil {
				if res.Injected || res.Pod != nil {
					t.Fatalf("pod was injected, want skip")
				}
				return
			}
			if !res.Injected || res.Pod == nil {
				t.Fatal("pod was not injected")
			}
			got := res.Pod
			if got.Spec.DNSPolicy != corev1.DNSNone {
				t.Errorf("dnsPolicy = %q, want None", got.Spec.DNSPolicy)
			}
			if !reflect.DeepEqual(got.Spec.DNSConfig, tc.want) {
				t.Errorf("dnsConfig =\n%+v\nwant\n%+v", got.Spec.DNSConfig, tc.want)
			}
			if got.Annotations[InjectedAnnotation] != "true" {
				t.Errorf("annotation %s missing", InjectedAnnotation)
			}
			if err := ValidateDNS(got.Spec.DNSPolicy, got.Spec.DNSConfig); err != nil {
				t.Errorf("result fails API validation: %v", err)
			}
			// Idempotent: a second pass leaves the pod alone.
			again := Inject(got, tc.namespace, tc.nsAnn, cfg)
			if again.Injected || again.Reason != ReasonAlreadyInjected {
				t.Errorf("second pass: injected=%v reason=%q, want skip %q", again.Injected, again.Reason, ReasonAlreadyInjected)
			}
		})
	}
}

// TestInjectMatrix crosses hostNetwork x dnsPolicy x the host-network flag x
// opt-out x OS and checks each decision against the rules written out
// independently below.
func TestInjectMatrix(t *testing.T) {
	policies := []corev1.DNSPolicy{"", corev1.DNSClusterFirst, corev1.DNSClusterFirstWithHostNet, corev1.DNSDefault, corev1.DNSNone}
	for _, hostNetwork := range []bool{false, true} {
		for _, policy := range policies {
			for _, injectHostNet := range []bool{false, true} {
				for _, optOut := range []string{"", "label", "annotation"} {
					for _, os := range []string{"", "linux", "windows"} {
						name := fmt.Sprintf("hostNetwork=%v/policy=%q/injectHostNet=%v/optOut=%q/os=%q", hostNetwork, policy, injectHostNet, optOut, os)
						t.Run(name, func(t *testing.T) {
							pod := newPod(func(p *corev1.Pod) {
								p.Spec.HostNetwork = hostNetwork
								p.Spec.DNSPolicy = policy
								if policy == corev1.DNSNone {
									p.Spec.DNSConfig = &corev1.PodDNSConfig{Nameservers: []string{"1.1.1.1"}}
								}
								switch optOut {
								case "label":
									p.Labels = map[string]string{SelectorLabel: DisabledValue}
								case "annotation":
									p.Annotations = map[string]string{OptOutAnnotation: DisabledValue}
								}
								if os != "" {
									p.Spec.OS = &corev1.PodOS{Name: corev1.OSName(os)}
								}
							})
							cfg := testConfig(t)
							cfg.InjectHostNetwork = injectHostNet
							clusterFirst := policy == "" || policy == corev1.DNSClusterFirst
							wantInject := optOut == "" && os != "windows" &&
								((!hostNetwork && (clusterFirst || policy == corev1.DNSClusterFirstWithHostNet)) ||
									(hostNetwork && policy == corev1.DNSClusterFirstWithHostNet && injectHostNet))
							res := Inject(pod, "", nil, cfg)
							if res.Injected != wantInject {
								t.Fatalf("injected = %v (reason %q), want %v", res.Injected, res.Reason, wantInject)
							}
							if !res.Injected {
								return
							}
							if res.Pod.Spec.DNSConfig.Nameservers[0] != "169.254.20.10" || res.Pod.Spec.DNSConfig.Nameservers[1] != "10.96.0.10" {
								t.Errorf("nameservers = %v", res.Pod.Spec.DNSConfig.Nameservers)
							}
							if res.Pod.Spec.HostNetwork != hostNetwork {
								t.Error("hostNetwork changed")
							}
						})
					}
				}
			}
		}
	}
}

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name    string
		mod     func(*Config)
		wantErr string
	}{
		{name: "valid", mod: func(*Config) {}},
		{name: "dual stack local", mod: func(c *Config) { c.LocalIPs = []string{"169.254.20.10", "fd00::10"} }},
		{name: "no local ip", mod: func(c *Config) { c.LocalIPs = nil }, wantErr: "at least one"},
		{name: "three local ips", mod: func(c *Config) { c.LocalIPs = []string{"1.1.1.1", "2.2.2.2", "3.3.3.3"} }, wantErr: "at most 2"},
		{name: "bad local ip", mod: func(c *Config) { c.LocalIPs = []string{"169.254.20"} }, wantErr: "not a valid IP"},
		{name: "empty domain", mod: func(c *Config) { c.ClusterDomain = "" }, wantErr: "cluster domain"},
		{name: "bad domain", mod: func(c *Config) { c.ClusterDomain = "bad_domain" }, wantErr: "cluster domain"},
		{name: "bad option", mod: func(c *Config) { c.Options = []corev1.PodDNSConfigOption{opt("ndots", "x")} }, wantErr: "ndots"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig(t)
			tc.mod(&cfg)
			err := cfg.Validate()
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("error = %v, want it to mention %q", err, tc.wantErr)
			}
		})
	}
}
