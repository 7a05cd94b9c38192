package handler

import (
	"errors"

	corev1 "k8s.io/api/core/v1"
	sigsjson "sigs.k8s.io/json"
)

// podFields is the part of a pod the webhook reads. Decoding only these
// fields (the containers are scanned, not built) halves the cost of a
// request; everything else in the object is left to the JSON patch to keep.
type podFields struct {
	Metadata *struct {
		Name         string            `json:"name"`
		GenerateName string            `json:"generateName"`
		Namespace    string            `json:"namespace"`
		Labels       map[string]string `json:"labels"`
		Annotations  map[string]string `json:"annotations"`
	} `json:"metadata"`
	Spec *struct {
		DNSPolicy    corev1.DNSPolicy     `json:"dnsPolicy"`
		HostNetwork  bool                 `json:"hostNetwork"`
		OS           *corev1.PodOS        `json:"os"`
		NodeSelector map[string]string    `json:"nodeSelector"`
		Affinity     *corev1.Affinity     `json:"affinity"`
		Tolerations  []corev1.Toleration  `json:"tolerations"`
		DNSConfig    *corev1.PodDNSConfig `json:"dnsConfig"`
	} `json:"spec"`
}

// decodePod decodes the fields of a pod that injection depends on. Keys are
// matched case-sensitively, as the API server does: encoding/json would take
// "speC" for "spec", and the JSON patch (whose paths are case-sensitive) would
// then not apply to the object.
func decodePod(raw []byte) (*corev1.Pod, error) {
	var f podFields
	if err := sigsjson.UnmarshalCaseSensitivePreserveInts(raw, &f); err != nil {
		return nil, err
	}
	if f.Metadata == nil || f.Spec == nil {
		return nil, errors.New("pod has no metadata or no spec")
	}
	pod := &corev1.Pod{}
	pod.Name = f.Metadata.Name
	pod.GenerateName = f.Metadata.GenerateName
	pod.Namespace = f.Metadata.Namespace
	pod.Labels = f.Metadata.Labels
	pod.Annotations = f.Metadata.Annotations
	pod.Spec.DNSPolicy = f.Spec.DNSPolicy
	pod.Spec.HostNetwork = f.Spec.HostNetwork
	pod.Spec.OS = f.Spec.OS
	pod.Spec.NodeSelector = f.Spec.NodeSelector
	pod.Spec.Affinity = f.Spec.Affinity
	pod.Spec.Tolerations = f.Spec.Tolerations
	pod.Spec.DNSConfig = f.Spec.DNSConfig
	return pod, nil
}
