//go:build tools

// Package tools pins the kube-apiserver and kubectl commands so that `go build`
// can find them.
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
