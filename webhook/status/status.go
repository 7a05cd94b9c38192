// Package status answers "which running pods should use the node-local DNS
// cache but still use kube-dns?": pods in the namespaces the webhook
// configuration selects, eligible by the webhook's own rules, without the
// injected mark. They were created before their namespace was labelled (or
// the cluster-wide mode was installed), or while the webhook was down, and
// get the cache when they are recreated.
package status

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/kubernetes"

	"github.com/nodelocaldns/nodelocaldns/webhook/inject"
)

// Options configure Check.
type Options struct {
	// WebhookConfigName is the MutatingWebhookConfiguration whose first
	// webhook's namespace and object selectors say which pods it sees.
	WebhookConfigName string
	// InjectHostNetwork and NoAgent are the webhook's own settings
	// (--inject-host-network, --no-agent-*): pods they exclude are fine.
	InjectHostNetwork bool
	NoAgent           inject.NoAgentNodes
}

// Pod is a pod that uses kube-dns although the webhook would inject it.
type Pod struct {
	Namespace, Name string
	// Owner is the controller, "Kind/name", or "" for a bare pod.
	Owner string
	// Created is the pod's creation time.
	Created time.Time
}

// Report is the result of Check.
type Report struct {
	// Namespaces are the namespaces the webhook configuration selects.
	Namespaces []string
	// Injected, Skipped count the selected live pods the webhook injected,
	// and those its rules leave alone (dnsPolicy, hostNetwork, opt-out,
	// Windows, nodes without the agent).
	Injected, Skipped int
	// Missed are the eligible live pods without the injected mark.
	Missed []Pod
}

// Check lists namespaces and live pods (not Succeeded or Failed) and
// classifies the pods the webhook configuration selects.
func Check(ctx context.Context, cs kubernetes.Interface, opts Options) (*Report, error) {
	mwc, err := cs.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, opts.WebhookConfigName, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("status: webhook configuration %q: %w", opts.WebhookConfigName, err)
	}
	if len(mwc.Webhooks) == 0 {
		return nil, fmt.Errorf("status: webhook configuration %q has no webhooks", opts.WebhookConfigName)
	}
	nsSel, err := selector(mwc.Webhooks[0].NamespaceSelector)
	if err != nil {
		return nil, fmt.Errorf("status: namespaceSelector: %w", err)
	}
	objSel, err := selector(mwc.Webhooks[0].ObjectSelector)
	if err != nil {
		return nil, fmt.Errorf("status: objectSelector: %w", err)
	}
	nsList, err := cs.CoreV1().Namespaces().List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("status: list namespaces: %w", err)
	}
	r := &Report{}
	for _, ns := range nsList.Items {
		// The API server matches the namespace's labels as they are; the
		// name label is set on every namespace.
		lbls := labels.Set(ns.Labels)
		if _, ok := lbls[corev1.LabelMetadataName]; !ok {
			lbls = labels.Merge(lbls, labels.Set{corev1.LabelMetadataName: ns.Name})
		}
		if nsSel.Matches(lbls) {
			r.Namespaces = append(r.Namespaces, ns.Name)
		}
	}
	for _, ns := range r.Namespaces {
		pods, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{
			LabelSelector: objSel.String(),
			FieldSelector: "status.phase!=Succeeded,status.phase!=Failed",
		})
		if err != nil {
			return nil, fmt.Errorf("status: list pods in %s: %w", ns, err)
		}
		for i := range pods.Items {
			p := &pods.Items[i]
			switch {
			case p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed:
				// Not live (the field selector already excludes them).
			case p.Annotations[inject.InjectedAnnotation] == "true" && p.Spec.DNSPolicy == corev1.DNSNone:
				r.Injected++
			case inject.SkipReason(p, opts.InjectHostNetwork) != "" || opts.NoAgent.SkipReason(p) != "":
				r.Skipped++
			default:
				r.Missed = append(r.Missed, Pod{Namespace: p.Namespace, Name: p.Name, Owner: owner(p), Created: p.CreationTimestamp.Time})
			}
		}
	}
	slices.SortFunc(r.Missed, func(a, b Pod) int {
		return strings.Compare(a.Namespace+"/"+a.Name, b.Namespace+"/"+b.Name)
	})
	return r, nil
}

func selector(s *metav1.LabelSelector) (labels.Selector, error) {
	if s == nil {
		return labels.Everything(), nil
	}
	return metav1.LabelSelectorAsSelector(s)
}

func owner(p *corev1.Pod) string {
	for _, o := range p.OwnerReferences {
		if o.Controller != nil && *o.Controller {
			return o.Kind + "/" + o.Name
		}
	}
	return ""
}

// Write prints the report: a table of the missed pods, then a summary.
func (r *Report) Write(w io.Writer, now time.Time) error {
	if len(r.Missed) > 0 {
		tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
		fmt.Fprintln(tw, "NAMESPACE\tPOD\tOWNER\tAGE")
		for _, p := range r.Missed {
			owner := p.Owner
			if owner == "" {
				owner = "<none>"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", p.Namespace, p.Name, owner, now.Sub(p.Created).Round(time.Second))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	_, err := fmt.Fprintf(w, "%d namespaces selected; live pods: %d injected, %d left alone by the webhook's rules, %d still use kube-dns%s\n",
		len(r.Namespaces), r.Injected, r.Skipped, len(r.Missed), hint(len(r.Missed)))
	return err
}

func hint(missed int) string {
	if missed == 0 {
		return ""
	}
	return " (created before their namespace was selected, or while the webhook was down: recreate them, e.g. kubectl rollout restart)"
}
