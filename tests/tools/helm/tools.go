//go:build tools

// Package tools pins the helm command so that `go build` can find it: the
// chart tests (tests/helm) run the real helm lint and helm template.
package tools

import (
	_ "helm.sh/helm/v4/cmd/helm"
)
