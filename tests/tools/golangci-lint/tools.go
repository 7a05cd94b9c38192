//go:build tools

// Package tools pins golangci-lint so that `make lint` builds it from the Go
// module proxy at a known version (see the Makefile's $(BIN)/golangci-lint).
package tools

import _ "github.com/golangci/golangci-lint/v2/cmd/golangci-lint"
