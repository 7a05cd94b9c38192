package main

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"

	"github.com/nodelocaldns/nodelocaldns/tests/testenv"
	"github.com/nodelocaldns/nodelocaldns/tests/yamldocs"
)

// renderManifests returns `kustomize build manifests` (the default install),
// rendered in-process with krusty.
func renderManifests() ([]byte, error) {
	dir := filepath.Join(testenv.RepoRoot(), "manifests")
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	res, err := k.Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		return nil, fmt.Errorf("kustomize build %s: %w", dir, err)
	}
	out, err := res.AsYaml()
	if err != nil {
		return nil, fmt.Errorf("kustomize build %s: %w", dir, err)
	}
	return out, nil
}

// (d *demo) manifests renders the manifests once per run.
func (d *demo) manifests() ([]byte, error) {
	if d.rendered != nil {
		return d.rendered, nil
	}
	out, err := renderManifests()
	if err != nil {
		return nil, err
	}
	d.rendered = out
	return out, nil
}

// findObject decodes, strictly, the first object of kind (and name, when not
// empty) in a multi-document YAML stream into into.
func findObject(stream []byte, kind, name string, into any) error {
	docs, err := yamldocs.Split(stream)
	if err != nil {
		return fmt.Errorf("rendered manifests: %w", err)
	}
	for _, doc := range docs {
		var meta struct {
			Kind     string `json:"kind"`
			Metadata struct {
				Name string `json:"name"`
			} `json:"metadata"`
		}
		if err := yaml.Unmarshal(doc, &meta); err != nil {
			return fmt.Errorf("rendered manifests: %w", err)
		}
		if meta.Kind != kind || (name != "" && meta.Metadata.Name != name) {
			continue
		}
		if err := yaml.UnmarshalStrict(doc, into); err != nil {
			return fmt.Errorf("%s %s: strict decode: %w", kind, meta.Metadata.Name, err)
		}
		return nil
	}
	return fmt.Errorf("no %s %q in the rendered manifests", kind, name)
}

// webhookConfiguration returns the project's MutatingWebhookConfiguration
// from the rendered manifests, pointed at url with caBundle instead of the
// in-cluster Service (and without cert-manager's CA injection annotation).
func webhookConfiguration(rendered []byte, url string, caBundle []byte) (*admissionregistrationv1.MutatingWebhookConfiguration, error) {
	var mwc admissionregistrationv1.MutatingWebhookConfiguration
	if err := findObject(rendered, "MutatingWebhookConfiguration", "", &mwc); err != nil {
		return nil, err
	}
	if len(mwc.Webhooks) == 0 {
		return nil, fmt.Errorf("MutatingWebhookConfiguration %s has no webhooks", mwc.Name)
	}
	delete(mwc.Annotations, "cert-manager.io/inject-ca-from")
	for i := range mwc.Webhooks {
		u := url
		mwc.Webhooks[i].ClientConfig = admissionregistrationv1.WebhookClientConfig{URL: &u, CABundle: caBundle}
	}
	return &mwc, nil
}

// agentManifest returns the agent container's arguments and environment
// from the rendered DaemonSet, with $(VAR) references expanded as the
// kubelet does, and the ConfigMap's Corefile template. The agent runs with
// hostNetwork, so a variable from the downward API's status.podIP or
// status.hostIP is the node's IP, nodeAddr.
func agentManifest(rendered []byte, nodeAddr string) (args, env []string, corefile string, err error) {
	var ds appsv1.DaemonSet
	if err := findObject(rendered, "DaemonSet", "node-local-dns", &ds); err != nil {
		return nil, nil, "", err
	}
	var agent *corev1.Container
	for i, c := range ds.Spec.Template.Spec.Containers {
		if c.Name == "agent" || len(ds.Spec.Template.Spec.Containers) == 1 {
			agent = &ds.Spec.Template.Spec.Containers[i]
			break
		}
	}
	if agent == nil || len(agent.Args) == 0 {
		return nil, nil, "", fmt.Errorf("DaemonSet %s: no agent container arguments", ds.Name)
	}
	vars := map[string]string{}
	for _, e := range agent.Env {
		switch {
		case e.ValueFrom != nil && e.ValueFrom.FieldRef != nil &&
			(e.ValueFrom.FieldRef.FieldPath == "status.podIP" || e.ValueFrom.FieldRef.FieldPath == "status.hostIP"):
			vars[e.Name] = nodeAddr
		case e.ValueFrom == nil:
			vars[e.Name] = e.Value
		default:
			continue
		}
		env = append(env, e.Name+"="+vars[e.Name])
	}
	for _, a := range agent.Args {
		for k, v := range vars {
			a = strings.ReplaceAll(a, "$("+k+")", v)
		}
		args = append(args, a)
	}
	var cm corev1.ConfigMap
	if err := findObject(rendered, "ConfigMap", "node-local-dns", &cm); err != nil {
		return nil, nil, "", err
	}
	if cm.Data["Corefile"] == "" {
		return nil, nil, "", errors.New("ConfigMap node-local-dns has no Corefile")
	}
	return args, env, cm.Data["Corefile"], nil
}
