package webhook

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/yaml"

	"github.com/nodelocaldns/nodelocaldns/tests/yamldocs"
	"github.com/nodelocaldns/nodelocaldns/webhook/inject"
)

// ManifestConfiguration finds the MutatingWebhookConfiguration the project
// ships (manifests/**/mutatingwebhookconfiguration*.yaml under root) and
// decodes it strictly. Tests register exactly these selectors, rules and
// match conditions, so what is tested is what is installed.
func ManifestConfiguration(root string) (*admissionregistrationv1.MutatingWebhookConfiguration, string, error) {
	var files []string
	err := filepath.WalkDir(filepath.Join(root, "manifests"), func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		name := d.Name()
		if !d.IsDir() && strings.HasPrefix(name, "mutatingwebhookconfiguration") &&
			(strings.HasSuffix(name, ".yaml") || strings.HasSuffix(name, ".yml")) {
			files = append(files, path)
		}
		return nil
	})
	if err != nil {
		return nil, "", fmt.Errorf("find webhook configuration manifests: %w", err)
	}
	sort.Strings(files) // manifests/webhook/... is the base; overlays only patch it
	for _, f := range files {
		mwc, err := decodeConfiguration(f)
		if err != nil {
			return nil, f, err
		}
		if mwc != nil {
			return mwc, f, nil
		}
	}
	return nil, "", fmt.Errorf("no MutatingWebhookConfiguration in %v", files)
}

// decodeConfiguration returns the first MutatingWebhookConfiguration in the
// (possibly multi-document) YAML file, or nil if it holds none.
func decodeConfiguration(path string) (*admissionregistrationv1.MutatingWebhookConfiguration, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	docs, err := yamldocs.Split(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	for _, doc := range docs {
		var meta struct{ Kind string }
		if err := yaml.Unmarshal(doc, &meta); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		if meta.Kind != "MutatingWebhookConfiguration" {
			continue
		}
		var mwc admissionregistrationv1.MutatingWebhookConfiguration
		if err := yaml.UnmarshalStrict(doc, &mwc); err != nil {
			return nil, fmt.Errorf("%s: strict decode: %w", path, err)
		}
		if len(mwc.Webhooks) == 0 {
			return nil, fmt.Errorf("%s: MutatingWebhookConfiguration without webhooks", path)
		}
		return &mwc, nil
	}
	return nil, nil
}

// PointAt returns a copy of mwc named name whose webhooks call url with
// caBundle instead of the in-cluster Service.
func PointAt(mwc *admissionregistrationv1.MutatingWebhookConfiguration, name, url string, caBundle []byte) *admissionregistrationv1.MutatingWebhookConfiguration {
	out := mwc.DeepCopy()
	out.ObjectMeta = *out.ObjectMeta.DeepCopy()
	out.Name = name
	out.ResourceVersion = ""
	delete(out.Annotations, "cert-manager.io/inject-ca-from")
	for i := range out.Webhooks {
		u := url
		out.Webhooks[i].ClientConfig = admissionregistrationv1.WebhookClientConfig{URL: &u, CABundle: caBundle}
	}
	return out
}

// WaitActive dry-run creates pods in namespace (which must be labelled for
// injection) until one comes back injected.
func WaitActive(ctx context.Context, cs kubernetes.Interface, namespace string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		got, err := cs.CoreV1().Pods(namespace).Create(ctx, probePod(), metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		if err != nil {
			return fmt.Errorf("dry-run pod create: %w", err)
		}
		if got.Annotations[inject.InjectedAnnotation] == "true" {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("webhook not called by the API server within %v (last pod: dnsPolicy %q)", timeout, got.Spec.DNSPolicy)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// probePod is the pod WaitActive sends; it is eligible for injection.
func probePod() *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{GenerateName: "probe-"},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "registry.example/probe:1"}}},
	}
}
