package webhook

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nodelocaldns/nodelocaldns/tests/testenv"
)

func TestManifestConfiguration(t *testing.T) {
	const mwc = `apiVersion: admissionregistration.k8s.io/v1
kind: MutatingWebhookConfiguration
metadata:
  name: x
  annotations:
    cert-manager.io/inject-ca-from: ns/cert
webhooks:
  - name: a.example
    admissionReviewVersions: ["v1"]
    sideEffects: None
    clientConfig:
      service: {name: s, namespace: ns, path: /mutate-v1-pod}
`
	for _, tc := range []struct {
		name    string
		files   map[string]string
		wantErr string
	}{
		{name: "multi-document file", files: map[string]string{
			"manifests/webhook/mutatingwebhookconfiguration.yaml": "apiVersion: v1\nkind: Service\nmetadata: {name: s}\n---\n" + mwc,
		}},
		{name: "no configuration", files: map[string]string{
			"manifests/webhook/mutatingwebhookconfiguration.yaml": "apiVersion: v1\nkind: Service\nmetadata: {name: s}\n",
		}, wantErr: "no MutatingWebhookConfiguration"},
		{name: "unknown field", files: map[string]string{
			"manifests/webhook/mutatingwebhookconfiguration.yaml": mwc + "    bogus: 1\n",
		}, wantErr: "strict decode"},
		{name: "no webhooks", files: map[string]string{
			"manifests/mutatingwebhookconfiguration.yaml": "apiVersion: admissionregistration.k8s.io/v1\nkind: MutatingWebhookConfiguration\nmetadata: {name: x}\n",
		}, wantErr: "without webhooks"},
		{name: "no manifests directory", files: map[string]string{}, wantErr: "find webhook configuration"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			for name, content := range tc.files {
				path := filepath.Join(root, name)
				if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			got, _, err := ManifestConfiguration(root)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error = %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			pointed := PointAt(got, "test", "https://127.0.0.1:1/mutate-v1-pod", []byte("CA"))
			w := pointed.Webhooks[0]
			if pointed.Name != "test" || w.ClientConfig.Service != nil || w.ClientConfig.URL == nil ||
				*w.ClientConfig.URL != "https://127.0.0.1:1/mutate-v1-pod" || string(w.ClientConfig.CABundle) != "CA" {
				t.Errorf("PointAt result: name %q clientConfig %+v", pointed.Name, w.ClientConfig)
			}
			if _, ok := pointed.Annotations["cert-manager.io/inject-ca-from"]; ok {
				t.Error("PointAt kept the cert-manager CA injection annotation")
			}
			if got.Webhooks[0].ClientConfig.Service == nil || got.Name != "x" {
				t.Error("PointAt modified its input")
			}
		})
	}
}

// TestShippedConfiguration checks that the repository's own manifest is found
// and decodes, so the integration test registers what is installed.
func TestShippedConfiguration(t *testing.T) {
	mwc, file, err := ManifestConfiguration(testenv.RepoRoot())
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(file, filepath.Join(testenv.RepoRoot(), "manifests")) {
		t.Errorf("configuration read from %s, outside manifests/", file)
	}
	if mwc.Webhooks[0].ClientConfig.Service == nil {
		t.Error("shipped configuration does not call the in-cluster Service")
	}
}
