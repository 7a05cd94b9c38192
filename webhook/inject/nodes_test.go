package inject

import (
	"reflect"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

func TestNoAgentNodes(t *testing.T) {
	defaults := NoAgentNodes{Labels: DefaultNoAgentNodeLabels, TolerationKeys: DefaultNoAgentTolerations}
	anyPool := NoAgentNodes{Labels: []NodeLabel{{Key: "pool.example/no-dns"}}}
	required := func(exprs ...corev1.NodeSelectorRequirement) *corev1.Affinity {
		return &corev1.Affinity{NodeAffinity: &corev1.NodeAffinity{RequiredDuringSchedulingIgnoredDuringExecution: &corev1.NodeSelector{
			NodeSelectorTerms: []corev1.NodeSelectorTerm{{MatchExpressions: []corev1.NodeSelectorRequirement{{Key: "zone", Operator: corev1.NodeSelectorOpExists}}}, {MatchExpressions: exprs}},
		}}}
	}
	in := func(key string, values ...string) corev1.NodeSelectorRequirement {
		return corev1.NodeSelectorRequirement{Key: key, Operator: corev1.NodeSelectorOpIn, Values: values}
	}
	for _, tc := range []struct {
		name   string
		nodes  NoAgentNodes
		mutate func(*corev1.Pod)
		want   string
	}{
		{name: "plain pod", nodes: defaults, mutate: func(*corev1.Pod) {}},
		{name: "virtual-kubelet nodeSelector", nodes: defaults, mutate: func(p *corev1.Pod) {
			p.Spec.NodeSelector = map[string]string{"type": "virtual-kubelet"}
		}, want: ReasonNoAgentNodeSelector},
		{name: "other value of type", nodes: defaults, mutate: func(p *corev1.Pod) {
			p.Spec.NodeSelector = map[string]string{"type": "gpu"}
		}},
		{name: "fargate nodeSelector", nodes: defaults, mutate: func(p *corev1.Pod) {
			p.Spec.NodeSelector = map[string]string{"eks.amazonaws.com/compute-type": "fargate"}
		}, want: ReasonNoAgentNodeSelector},
		{name: "required affinity In, second term", nodes: defaults, mutate: func(p *corev1.Pod) {
			p.Spec.Affinity = required(in("type", "virtual-kubelet", "other"))
		}, want: ReasonNoAgentNodeAffinity},
		{name: "required affinity NotIn", nodes: defaults, mutate: func(p *corev1.Pod) {
			p.Spec.Affinity = required(corev1.NodeSelectorRequirement{Key: "type", Operator: corev1.NodeSelectorOpNotIn, Values: []string{"virtual-kubelet"}})
		}},
		{name: "preferred affinity", nodes: defaults, mutate: func(p *corev1.Pod) {
			p.Spec.Affinity = &corev1.Affinity{NodeAffinity: &corev1.NodeAffinity{PreferredDuringSchedulingIgnoredDuringExecution: []corev1.PreferredSchedulingTerm{
				{Weight: 10, Preference: corev1.NodeSelectorTerm{MatchExpressions: []corev1.NodeSelectorRequirement{in("type", "virtual-kubelet")}}},
			}}}
		}, want: ReasonNoAgentNodeAffinity},
		{name: "toleration", nodes: defaults, mutate: func(p *corev1.Pod) {
			p.Spec.Tolerations = []corev1.Toleration{{Key: "virtual-kubelet.io/provider", Operator: corev1.TolerationOpExists}}
		}, want: ReasonNoAgentToleration},
		{name: "tolerate everything does not count", nodes: defaults, mutate: func(p *corev1.Pod) {
			p.Spec.Tolerations = []corev1.Toleration{{Operator: corev1.TolerationOpExists}}
		}},
		{name: "key-only label, any value", nodes: anyPool, mutate: func(p *corev1.Pod) {
			p.Spec.NodeSelector = map[string]string{"pool.example/no-dns": "b"}
		}, want: ReasonNoAgentNodeSelector},
		{name: "key-only label in affinity", nodes: anyPool, mutate: func(p *corev1.Pod) {
			p.Spec.Affinity = required(in("pool.example/no-dns", "x"))
		}, want: ReasonNoAgentNodeAffinity},
		{name: "nothing configured", nodes: NoAgentNodes{}, mutate: func(p *corev1.Pod) {
			p.Spec.NodeSelector = map[string]string{"type": "virtual-kubelet"}
			p.Spec.Tolerations = []corev1.Toleration{{Key: "virtual-kubelet.io/provider"}}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pod := &corev1.Pod{Spec: corev1.PodSpec{DNSPolicy: corev1.DNSClusterFirst}}
			tc.mutate(pod)
			if got := tc.nodes.SkipReason(pod); got != tc.want {
				t.Errorf("SkipReason = %q, want %q", got, tc.want)
			}
			cfg := Config{LocalIPs: []string{"169.254.20.10"}, KubeDNSIPs: []string{"10.96.0.10"}, ClusterDomain: "cluster.local", NoAgent: tc.nodes}
			res := Inject(pod, "ns", nil, cfg)
			if tc.want != "" && (res.Injected || res.Reason != tc.want) {
				t.Errorf("Inject: injected=%v reason=%q, want skipped %q", res.Injected, res.Reason, tc.want)
			}
			if tc.want == "" && !res.Injected {
				t.Errorf("Inject skipped: %q", res.Reason)
			}
			if res.Injected && res.Pod.Labels[InjectedLabel] != "true" {
				t.Errorf("injected pod lacks the label: %v", res.Pod.Labels)
			}
		})
	}
}

func TestParseNodeLabels(t *testing.T) {
	got, err := ParseNodeLabels(" type=virtual-kubelet, pool.example/no-dns ,,")
	if err != nil {
		t.Fatal(err)
	}
	if want := []NodeLabel{{"type", "virtual-kubelet"}, {"pool.example/no-dns", ""}}; !reflect.DeepEqual(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
	for _, bad := range []string{"=x", "a b=c", "type=bad value", "x/y/z=1"} {
		if _, err := ParseNodeLabels(bad); err == nil || !strings.Contains(err.Error(), "node label") {
			t.Errorf("ParseNodeLabels(%q) = %v, want an error", bad, err)
		}
	}
	keys, err := ParseTolerationKeys("virtual-kubelet.io/provider, example.com/x")
	if err != nil || !reflect.DeepEqual(keys, []string{"virtual-kubelet.io/provider", "example.com/x"}) {
		t.Errorf("ParseTolerationKeys = %v, %v", keys, err)
	}
	if _, err := ParseTolerationKeys("bad key"); err == nil {
		t.Error("bad toleration key accepted")
	}
}
