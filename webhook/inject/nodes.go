package inject

import (
	"fmt"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/validation"
)

// Reasons for pods that will run where no agent runs.
const (
	ReasonNoAgentNodeSelector = "no-agent-node-selector"
	ReasonNoAgentNodeAffinity = "no-agent-node-affinity"
	ReasonNoAgentToleration   = "no-agent-toleration"
)

// DefaultNoAgentNodeLabels and DefaultNoAgentTolerations mark the common
// virtual (serverless) nodes, where no DaemonSet pod runs: virtual-kubelet
// based ones (Azure ACI, Alibaba ECI, Huawei CCI...) label their node
// type=virtual-kubelet and taint it virtual-kubelet.io/provider; EKS Fargate
// labels its nodes eks.amazonaws.com/compute-type=fargate.
var (
	DefaultNoAgentNodeLabels  = []NodeLabel{{Key: "type", Value: "virtual-kubelet"}, {Key: "eks.amazonaws.com/compute-type", Value: "fargate"}}
	DefaultNoAgentTolerations = []string{"virtual-kubelet.io/provider"}
)

// NodeLabel is a node label marking nodes without the agent; an empty Value
// matches any value of Key.
type NodeLabel struct {
	Key, Value string
}

func (l NodeLabel) String() string {
	if l.Value == "" {
		return l.Key
	}
	return l.Key + "=" + l.Value
}

// ParseNodeLabels parses a comma list of key=value or key (any value).
func ParseNodeLabels(s string) ([]NodeLabel, error) {
	var out []NodeLabel
	for f := range strings.SplitSeq(s, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		key, value, _ := strings.Cut(f, "=")
		if errs := validation.IsQualifiedName(key); len(errs) > 0 {
			return nil, fmt.Errorf("node label %q: key: %s", f, strings.Join(errs, "; "))
		}
		if errs := validation.IsValidLabelValue(value); len(errs) > 0 {
			return nil, fmt.Errorf("node label %q: value: %s", f, strings.Join(errs, "; "))
		}
		out = append(out, NodeLabel{Key: key, Value: value})
	}
	return out, nil
}

// ParseTolerationKeys parses a comma list of taint keys.
func ParseTolerationKeys(s string) ([]string, error) {
	var out []string
	for f := range strings.SplitSeq(s, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		if errs := validation.IsQualifiedName(f); len(errs) > 0 {
			return nil, fmt.Errorf("toleration key %q: %s", f, strings.Join(errs, "; "))
		}
		out = append(out, f)
	}
	return out, nil
}

// NoAgentNodes describes the nodes where no agent runs, so that pods that
// will (or may) run there are not injected: there they would wait the
// resolver timeout on every lookup before trying kube-dns.
type NoAgentNodes struct {
	// Labels: a pod whose nodeSelector asks for one of them, or whose node
	// affinity (required or preferred) has a term with an In expression on
	// one of them, is skipped.
	Labels []NodeLabel
	// TolerationKeys: a pod tolerating a taint with one of these keys is
	// skipped (it may be scheduled there). A toleration without a key
	// (tolerate everything) does not count.
	TolerationKeys []string
}

// SkipReason returns why pod may run on a node without the agent, or "".
func (n NoAgentNodes) SkipReason(pod *corev1.Pod) string {
	for _, l := range n.Labels {
		if v, ok := pod.Spec.NodeSelector[l.Key]; ok && (l.Value == "" || v == l.Value) {
			return ReasonNoAgentNodeSelector
		}
	}
	if a := pod.Spec.Affinity; a != nil && a.NodeAffinity != nil && len(n.Labels) > 0 {
		var terms []corev1.NodeSelectorTerm
		if req := a.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution; req != nil {
			terms = append(terms, req.NodeSelectorTerms...)
		}
		for _, p := range a.NodeAffinity.PreferredDuringSchedulingIgnoredDuringExecution {
			if p.Weight > 0 {
				terms = append(terms, p.Preference)
			}
		}
		if slices.ContainsFunc(terms, n.termMatches) {
			return ReasonNoAgentNodeAffinity
		}
	}
	for _, tol := range pod.Spec.Tolerations {
		if tol.Key != "" && slices.Contains(n.TolerationKeys, tol.Key) {
			return ReasonNoAgentToleration
		}
	}
	return ""
}

// termMatches reports whether a node selector term asks for a marked node.
func (n NoAgentNodes) termMatches(term corev1.NodeSelectorTerm) bool {
	for _, e := range term.MatchExpressions {
		if e.Operator != corev1.NodeSelectorOpIn {
			continue
		}
		for _, l := range n.Labels {
			if e.Key == l.Key && (l.Value == "" || slices.Contains(e.Values, l.Value)) {
				return true
			}
		}
	}
	return false
}
