package status

import (
	"context"
	"maps"
	"strings"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/nodelocaldns/nodelocaldns/webhook/inject"
)

func ns(name string, labels map[string]string) *corev1.Namespace {
	l := map[string]string{corev1.LabelMetadataName: name}
	maps.Copy(l, labels)
	return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: l}}
}

func pod(namespace, name string, mutate func(*corev1.Pod)) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name, CreationTimestamp: metav1.NewTime(time.Unix(1000, 0))},
		Spec:       corev1.PodSpec{DNSPolicy: corev1.DNSClusterFirst, Containers: []corev1.Container{{Name: "c", Image: "i"}}},
		Status:     corev1.PodStatus{Phase: corev1.PodRunning},
	}
	if mutate != nil {
		mutate(p)
	}
	return p
}

func TestCheck(t *testing.T) {
	yes := true
	mwc := &admissionregistrationv1.MutatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: "node-local-dns-webhook"},
		Webhooks: []admissionregistrationv1.MutatingWebhook{{
			Name: "inject.node-local-dns.io",
			NamespaceSelector: &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
				{Key: inject.SelectorLabel, Operator: metav1.LabelSelectorOpIn, Values: []string{"enabled"}},
				{Key: corev1.LabelMetadataName, Operator: metav1.LabelSelectorOpNotIn, Values: []string{"kube-system"}},
			}},
			ObjectSelector: &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
				{Key: inject.SelectorLabel, Operator: metav1.LabelSelectorOpNotIn, Values: []string{"disabled"}},
			}},
		}},
	}
	objects := []runtime.Object{
		mwc,
		ns("apps", map[string]string{inject.SelectorLabel: "enabled"}),
		ns("plain", nil),
		ns("kube-system", map[string]string{inject.SelectorLabel: "enabled"}),
		pod("apps", "old", func(p *corev1.Pod) {
			p.OwnerReferences = []metav1.OwnerReference{{Kind: "ReplicaSet", Name: "web-5d8", Controller: &yes}}
		}),
		pod("apps", "pending-old", func(p *corev1.Pod) { p.Status.Phase = corev1.PodPending }),
		pod("apps", "done", func(p *corev1.Pod) { p.Status.Phase = corev1.PodSucceeded }),
		pod("apps", "new", func(p *corev1.Pod) {
			p.Annotations = map[string]string{inject.InjectedAnnotation: "true"}
			p.Spec.DNSPolicy = corev1.DNSNone
		}),
		pod("apps", "default-policy", func(p *corev1.Pod) { p.Spec.DNSPolicy = corev1.DNSDefault }),
		pod("apps", "opted-out", func(p *corev1.Pod) { p.Labels = map[string]string{inject.SelectorLabel: "disabled"} }),
		pod("apps", "virtual", func(p *corev1.Pod) {
			p.Spec.Tolerations = []corev1.Toleration{{Key: "virtual-kubelet.io/provider", Operator: corev1.TolerationOpExists}}
		}),
		pod("apps", "stale-annotation", func(p *corev1.Pod) { p.Annotations = map[string]string{inject.InjectedAnnotation: "true"} }),
		pod("plain", "unselected", nil),
		pod("kube-system", "coredns", nil),
	}
	cs := fake.NewClientset(objects...)
	r, err := Check(context.Background(), cs, Options{
		WebhookConfigName: "node-local-dns-webhook",
		InjectHostNetwork: true,
		NoAgent:           inject.NoAgentNodes{Labels: inject.DefaultNoAgentNodeLabels, TolerationKeys: inject.DefaultNoAgentTolerations},
	})
	if err != nil {
		t.Fatal(err)
	}
	var missed []string
	for _, p := range r.Missed {
		missed = append(missed, p.Namespace+"/"+p.Name)
	}
	if got, want := strings.Join(missed, " "), "apps/old apps/pending-old apps/stale-annotation"; got != want {
		t.Errorf("missed %q, want %q", got, want)
	}
	if strings.Join(r.Namespaces, " ") != "apps" || r.Injected != 1 || r.Skipped != 2 {
		// opted-out is excluded by the object selector; default-policy and
		// virtual are skipped by the rules.
		t.Errorf("namespaces %v injected %d skipped %d, want [apps] 1 2", r.Namespaces, r.Injected, r.Skipped)
	}
	if r.Missed[0].Owner != "ReplicaSet/web-5d8" {
		t.Errorf("owner %q", r.Missed[0].Owner)
	}
	var out strings.Builder
	if err := r.Write(&out, time.Unix(1060, 0)); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"NAMESPACE", "apps  ", "old", "ReplicaSet/web-5d8", "1m0s", "3 still use kube-dns", "rollout restart"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}

	if _, err := Check(context.Background(), cs, Options{WebhookConfigName: "missing"}); err == nil || !strings.Contains(err.Error(), "missing") {
		t.Errorf("missing configuration: %v", err)
	}
}
