// Package inject decides whether a pod gets the node-local DNS configuration
// and computes it. It is pure: no Kubernetes client, no clock, no globals.
// Given the pod, its namespace's annotations and the configuration, it returns
// the decision (inject, or skip with a reason) and the mutated pod.
package inject

import (
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
)

// Label, annotations and values understood by the webhook.
const (
	// SelectorLabel is the label that enables injection on a namespace
	// (value EnabledValue) and opts a pod out (value DisabledValue).
	SelectorLabel = "node-local-dns-injection"
	// OptOutAnnotation set to DisabledValue on a pod opts it out.
	OptOutAnnotation = "node-local-dns-injection"
	// EnabledValue enables injection on a namespace.
	EnabledValue = "enabled"
	// DisabledValue opts a pod out.
	DisabledValue = "disabled"
	// InjectedAnnotation marks a pod the webhook has injected (value "true").
	InjectedAnnotation = "nodelocaldns.io/injected"
	// InjectedLabel marks an injected pod too (value "true"), so that
	// `kubectl get pods -l nodelocaldns.io/injected=true` lists them.
	InjectedLabel = "nodelocaldns.io/injected"
	// OptionsAnnotation on a namespace or a pod overrides resolver options,
	// e.g. "ndots:2,timeout:2,edns0" (see ParseOptions).
	OptionsAnnotation = "nodelocaldns.io/dns-options"
	// OSLabel is the well-known node label selecting the operating system.
	OSLabel = "kubernetes.io/os"
)

// Reasons, used in audit annotations and metrics labels.
const (
	ReasonInjected            = "injected"
	ReasonAlreadyInjected     = "already-injected"
	ReasonOptOutLabel         = "opt-out-label"
	ReasonOptOutAnnotation    = "opt-out-annotation"
	ReasonWindows             = "windows"
	ReasonDNSPolicyDefault    = "dns-policy-default"
	ReasonDNSPolicyNone       = "dns-policy-none"
	ReasonDNSPolicyUnknown    = "dns-policy-unknown"
	ReasonHostNetClusterFirst = "host-network-cluster-first"
	ReasonHostNetDisabled     = "host-network-disabled"
	ReasonKubeDNSUnknown      = "kube-dns-unknown"
	ReasonNamespaceUnknown    = "namespace-unknown"
	ReasonInvalidAnnotation   = "invalid-annotation"
	ReasonInvalidPodDNSConfig = "invalid-pod-dns-config"
	ReasonInvalidResult       = "invalid-result"
)

// Config is what the webhook injects.
type Config struct {
	// LocalIPs are the node-local cache addresses, first in the list.
	LocalIPs []string
	// KubeDNSIPs are the current kube-dns Service clusterIPs. Empty means
	// unknown: pods are then left alone (ReasonKubeDNSUnknown).
	KubeDNSIPs []string
	// ClusterDomain is the cluster's DNS domain, e.g. cluster.local.
	ClusterDomain string
	// Options are the cluster-wide resolver options (see BaseOptions).
	Options []corev1.PodDNSConfigOption
	// InjectHostNetwork allows injecting hostNetwork pods with dnsPolicy
	// ClusterFirstWithHostNet.
	InjectHostNetwork bool
	// NoAgent marks the nodes without the agent; pods that may run there
	// are skipped.
	NoAgent NoAgentNodes
}

// Result is the outcome of Inject.
type Result struct {
	// Injected is true when the pod was mutated.
	Injected bool
	// Reason is ReasonInjected or why the pod was skipped.
	Reason string
	// Pod is a mutated deep copy of the input when Injected, else nil.
	Pod *corev1.Pod
	// DNSConfig is the dnsConfig given to the pod when Injected.
	DNSConfig *corev1.PodDNSConfig
	// Warnings explain anything surprising (dropped entries, bad annotations).
	Warnings []string
}

func skip(reason string, warnings ...string) Result {
	return Result{Reason: reason, Warnings: warnings}
}

// SkipReason returns why the pod must be left alone based on the pod alone
// (already injected, opted out, Windows, DNS policy, host network), or "" if
// it is eligible. The pod's dnsPolicy "" counts as ClusterFirst.
func SkipReason(pod *corev1.Pod, injectHostNetwork bool) string {
	switch {
	case pod.Annotations[InjectedAnnotation] == "true" && pod.Spec.DNSPolicy == corev1.DNSNone:
		// A stale annotation (copied into a template from an injected pod)
		// on a pod that still uses ClusterFirst does not stop injection.
		return ReasonAlreadyInjected
	case pod.Labels[SelectorLabel] == DisabledValue:
		return ReasonOptOutLabel
	case pod.Annotations[OptOutAnnotation] == DisabledValue:
		return ReasonOptOutAnnotation
	case isWindows(pod):
		return ReasonWindows
	}
	switch pod.Spec.DNSPolicy {
	case corev1.DNSClusterFirst, "":
		if pod.Spec.HostNetwork {
			// The kubelet treats ClusterFirst on the host network as Default.
			return ReasonHostNetClusterFirst
		}
	case corev1.DNSClusterFirstWithHostNet:
		if pod.Spec.HostNetwork && !injectHostNetwork {
			return ReasonHostNetDisabled
		}
	case corev1.DNSDefault:
		return ReasonDNSPolicyDefault
	case corev1.DNSNone:
		return ReasonDNSPolicyNone
	default:
		return ReasonDNSPolicyUnknown
	}
	return ""
}

func isWindows(pod *corev1.Pod) bool {
	if pod.Spec.OS != nil && strings.EqualFold(string(pod.Spec.OS.Name), string(corev1.Windows)) {
		return true
	}
	return strings.EqualFold(pod.Spec.NodeSelector[OSLabel], string(corev1.Windows))
}

// Inject decides whether pod gets the node-local DNS configuration and, if
// so, returns a mutated copy with dnsPolicy None, the new dnsConfig, the
// InjectedAnnotation and the InjectedLabel. namespace is the pod's namespace (the admission
// request's, as pod.Namespace may be empty on create); nsAnnotations are that
// namespace's annotations. The input pod is never modified.
func Inject(pod *corev1.Pod, namespace string, nsAnnotations map[string]string, cfg Config) Result {
	if pod == nil {
		return skip(ReasonInvalidResult, "no pod")
	}
	if r := SkipReason(pod, cfg.InjectHostNetwork); r != "" {
		return skip(r)
	}
	if r := cfg.NoAgent.SkipReason(pod); r != "" {
		return skip(r)
	}
	if len(cfg.KubeDNSIPs) == 0 {
		return skip(ReasonKubeDNSUnknown)
	}
	if namespace == "" {
		namespace = pod.Namespace
	}
	if namespace == "" {
		return skip(ReasonNamespaceUnknown)
	}
	var own corev1.PodDNSConfig
	if pod.Spec.DNSConfig != nil {
		if err := ValidateDNS(corev1.DNSClusterFirst, pod.Spec.DNSConfig); err != nil {
			return skip(ReasonInvalidPodDNSConfig, err.Error())
		}
		own = *pod.Spec.DNSConfig
	}
	nsOptions, err := ParseOptions(nsAnnotations[OptionsAnnotation])
	if err != nil {
		return skip(ReasonInvalidAnnotation, fmt.Sprintf("namespace annotation %s: %v", OptionsAnnotation, err))
	}
	podOptions, err := ParseOptions(pod.Annotations[OptionsAnnotation])
	if err != nil {
		return skip(ReasonInvalidAnnotation, fmt.Sprintf("pod annotation %s: %v", OptionsAnnotation, err))
	}

	var warnings []string
	servers, dropped := limitNameservers(cfg.LocalIPs, cfg.KubeDNSIPs, own.Nameservers)
	if len(dropped) > 0 {
		warnings = append(warnings, fmt.Sprintf("nameservers %v dropped: at most %d allowed", dropped, MaxNameservers))
	}
	searches, dropped := limitSearches(clusterSearches(namespace, cfg.ClusterDomain), own.Searches)
	if len(dropped) > 0 {
		warnings = append(warnings, fmt.Sprintf("search domains %v dropped: at most %d entries and %d characters allowed", dropped, MaxSearches, MaxSearchChars))
	}
	dnsConfig := &corev1.PodDNSConfig{
		Nameservers: servers,
		Searches:    searches,
		Options:     mergeOptions(cfg.Options, nsOptions, podOptions, own.Options),
	}
	if err := ValidateDNS(corev1.DNSNone, dnsConfig); err != nil {
		return skip(ReasonInvalidResult, err.Error())
	}

	out := pod.DeepCopy()
	out.Spec.DNSPolicy = corev1.DNSNone
	out.Spec.DNSConfig = dnsConfig.DeepCopy()
	if out.Annotations == nil {
		out.Annotations = make(map[string]string, 1)
	}
	out.Annotations[InjectedAnnotation] = "true"
	if out.Labels == nil {
		out.Labels = make(map[string]string, 1)
	}
	out.Labels[InjectedLabel] = "true"
	return Result{Injected: true, Reason: ReasonInjected, Pod: out, DNSConfig: dnsConfig, Warnings: warnings}
}

// clusterSearches are the search domains the kubelet gives a ClusterFirst
// pod in namespace ns.
func clusterSearches(ns, domain string) []string {
	domain = strings.TrimSuffix(domain, ".")
	return []string{ns + ".svc." + domain, "svc." + domain, domain}
}

// limitNameservers concatenates the lists without duplicates and keeps the
// first MaxNameservers; it returns the kept and the dropped addresses.
func limitNameservers(lists ...[]string) (kept, dropped []string) {
	seen := make(map[string]bool, MaxNameservers+2)
	for _, l := range lists {
		for _, s := range l {
			if s == "" || seen[s] {
				continue
			}
			seen[s] = true
			if len(kept) < MaxNameservers {
				kept = append(kept, s)
			} else {
				dropped = append(dropped, s)
			}
		}
	}
	return kept, dropped
}

// limitSearches returns the cluster search domains followed by the pod's own,
// without duplicates (a trailing dot is ignored when comparing), keeping only
// what fits in the API limits; it also returns what was dropped.
func limitSearches(cluster, own []string) (kept, dropped []string) {
	seen := make(map[string]bool, len(cluster)+len(own))
	chars := -1
	for _, l := range [][]string{cluster, own} {
		for _, s := range l {
			key := strings.ToLower(strings.TrimSuffix(s, "."))
			if s == "" || seen[key] {
				continue
			}
			seen[key] = true
			if len(kept) < MaxSearches && chars+1+len(s) <= MaxSearchChars {
				kept = append(kept, s)
				chars += 1 + len(s)
			} else {
				dropped = append(dropped, s)
			}
		}
	}
	return kept, dropped
}

// Validate checks the static parts of cfg (everything but KubeDNSIPs): local
// IPs, cluster domain and options.
func (cfg Config) Validate() error {
	if len(cfg.LocalIPs) == 0 {
		return fmt.Errorf("at least one local DNS IP is required")
	}
	if len(cfg.LocalIPs) > MaxNameservers-1 {
		return fmt.Errorf("local DNS IPs %v: at most %d allowed, to leave room for kube-dns", cfg.LocalIPs, MaxNameservers-1)
	}
	for _, ip := range cfg.LocalIPs {
		if err := ValidateIP(ip); err != nil {
			return fmt.Errorf("local DNS IP: %w", err)
		}
	}
	if err := ValidateSearch(cfg.ClusterDomain); err != nil || cfg.ClusterDomain == "" {
		return fmt.Errorf("cluster domain %q is not a valid DNS name", cfg.ClusterDomain)
	}
	// The longest search domain is <namespace>.svc.<domain>, with a namespace
	// of up to 63 characters.
	if err := ValidateSearch(strings.Repeat("a", 63) + ".svc." + cfg.ClusterDomain); err != nil {
		return fmt.Errorf("cluster domain %q is too long: %w", cfg.ClusterDomain, err)
	}
	for _, o := range cfg.Options {
		if err := checkOption(o.Name, o.Value); err != nil {
			return err
		}
	}
	return nil
}
