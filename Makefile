# nodelocaldns: node-local DNS cache agent and pod DNS-config admission webhook.

SHELL := /usr/bin/env bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

GO        ?= go
BIN       := $(CURDIR)/bin
GOFLAGS   ?= -buildvcs=false
export GOFLAGS
# Integration tests find the real control plane here (see tests/kubeapi).
export KUBE_APISERVER_BIN ?= $(BIN)/kube-apiserver
export ETCD_BIN           ?= $(BIN)/etcd
export KUBECTL_BIN        ?= $(BIN)/kubectl
# How much each fuzz target runs inside `make test`: a count of executions, not a
# duration (a duration races the fuzz coordinator on Go 1.26, golang/go#75804).
# -timeout still bounds each target in time.
FUZZTIME  ?= 50000x
# Extra arguments to `go test` (e.g. TESTARGS='-run Webhook -v').
TESTARGS  ?=
# Extra arguments to `golangci-lint run` (e.g. LINTARGS='--new-from-rev=main' or
# LINTARGS='--fix'). Its cache lives in $GOLANGCI_LINT_CACHE (default ~/.cache/golangci-lint).
LINTARGS  ?=

##@ General

.PHONY: help
help: ## Show this help.
	@awk 'BEGIN {FS = ":.*##"; printf "Usage:\n  make \033[36m<target>\033[0m\n"} /^[a-zA-Z_0-9-]+:.*?##/ { printf "  \033[36m%-18s\033[0m %s\n", $$1, $$2 } /^##@/ { printf "\n\033[1m%s\033[0m\n", substr($$0, 5) }' $(MAKEFILE_LIST)

##@ Development

.PHONY: build
build: ## Build bin/webhook and bin/agent.
	CGO_ENABLED=0 $(GO) build -trimpath -o $(BIN)/webhook ./webhook
	CGO_ENABLED=0 $(GO) build -trimpath -o $(BIN)/agent ./agent

.PHONY: fmt
fmt: ## Format the Go sources.
	gofmt -w $$(git ls-files '*.go')

.PHONY: lint
lint: $(BIN)/golangci-lint ## Check formatting (gofmt), run go vet and golangci-lint (.golangci.yml).
	@out=$$(gofmt -l $$(git ls-files -co --exclude-standard '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(BIN)/golangci-lint run $(LINTARGS) ./...

##@ Testing

.PHONY: test
test: deps tools build lint ## Run everything CI runs: lint, unit, integration (real kube-apiserver, netns as root) and short fuzzing.
	$(GO) test -count=1 -timeout 30m $(TESTARGS) ./...
	$(MAKE) --no-print-directory fuzz

.PHONY: fuzz
fuzz: ## Run every Go fuzz target briefly (FUZZTIME each).
	@for spec in $$(grep -rl --include='*_test.go' '^func Fuzz' webhook agent pkg certs tests 2>/dev/null | xargs -r grep -H -o '^func Fuzz[A-Za-z0-9_]*' | sed 's/:func /:/'); do \
		file=$${spec%%:*}; target=$${spec##*:}; pkg=./$$(dirname $$file); \
		echo "fuzz $$pkg $$target ($(FUZZTIME))"; \
		$(GO) test -run '^$$' -fuzz "^$$target\$$" -fuzztime $(FUZZTIME) -timeout 4m $$pkg || exit 1; \
	done

.PHONY: bench
bench: tools build ## Run the benchmarks and print figures (Go benchmarks, webhook HTTPS load, agent vs unbound with dnsperf).
	$(GO) test -run '^$$' -bench . -benchmem ./...
	$(GO) run ./tests/bench/webhookload
	bash tests/bench/agent.sh

##@ Tools

.PHONY: deps
deps: ## Install the Debian packages the tests use (nsd, unbound, dig, dnsperf, iptables, ...); needs root.
	@if [ "$$(id -u)" -eq 0 ]; then bash tests/install-deps.sh; \
	else echo "deps: not root; the tests that need Debian packages or root will skip (CI=1 makes them fail)"; fi

.PHONY: tools
tools: $(BIN)/kube-apiserver $(BIN)/kubectl $(BIN)/etcd ## Build the real kube-apiserver, kubectl and etcd from the Go module proxy (cached in bin/).

$(BIN)/kube-apiserver: tests/tools/kube-apiserver/go.mod
	cd tests/tools/kube-apiserver && $(GO) build -o $@ k8s.io/kubernetes/cmd/kube-apiserver

$(BIN)/kubectl: tests/tools/kube-apiserver/go.mod
	cd tests/tools/kube-apiserver && $(GO) build -o $@ k8s.io/kubernetes/cmd/kubectl

$(BIN)/etcd: tests/tools/etcd/go.mod
	cd tests/tools/etcd && $(GO) build -o $@ .

$(BIN)/golangci-lint: tests/tools/golangci-lint/go.mod
	cd tests/tools/golangci-lint && $(GO) build -o $@ github.com/golangci/golangci-lint/v2/cmd/golangci-lint

.PHONY: coredns
coredns: $(BIN)/coredns ## Build CoreDNS v1.13.2 with node-cache's plugins (+kubernetes, ready) from the Go module proxy: the reference for tests/compat and tests/e2e.

$(BIN)/coredns: tests/tools/coredns/go.mod tests/tools/coredns/main.go
	cd tests/tools/coredns && CGO_ENABLED=0 $(GO) build -trimpath -o $@ .

# The end-to-end node's components, built from the Go module proxy (tests/tools/kube-node)
# with the version stamped so that `kubectl get nodes` shows it.
KUBE_NODE_VERSION := $(shell awk '$$1 == "require" && $$2 == "k8s.io/kubernetes" {print $$3}' tests/tools/kube-node/go.mod)
KUBE_NODE_LDFLAGS := -s -w \
	-X k8s.io/component-base/version.gitVersion=$(KUBE_NODE_VERSION) \
	-X k8s.io/component-base/version.gitTreeState=clean \
	-X k8s.io/client-go/pkg/version.gitVersion=$(KUBE_NODE_VERSION) \
	-X k8s.io/client-go/pkg/version.gitTreeState=clean
KUBE_NODE_BINS := $(BIN)/kubelet $(BIN)/kube-proxy $(BIN)/kube-controller-manager $(BIN)/kube-scheduler

.PHONY: kube-node
kube-node: $(KUBE_NODE_BINS) ## Build kubelet, kube-proxy, kube-controller-manager and kube-scheduler for the e2e node (cached in bin/).

# One go build for all four: they share most packages and the link steps run in parallel.
$(KUBE_NODE_BINS) &: tests/tools/kube-node/go.mod
	cd tests/tools/kube-node && CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(KUBE_NODE_LDFLAGS)' -o $(BIN)/ \
		$(addprefix k8s.io/kubernetes/cmd/,$(notdir $(KUBE_NODE_BINS)))

##@ End to end

# make e2e runs on a real node: as root only; without root it skips, and under
# CI (CI set) it fails instead.
# The CoreDNS the e2e node runs as kube-dns (make coredns builds it).
COREDNS_BIN ?= $(BIN)/coredns

.PHONY: e2e-images
e2e-images: $(COREDNS_BIN) ## Build the e2e node's pause, CoreDNS and client images (bin/e2e/images).
	CGO_ENABLED=0 $(GO) build -trimpath -o $(BIN)/e2e/pause ./tests/e2e/pause
	$(GO) run ./tests/e2e/imagebuild -out $(BIN)/e2e/images -pause $(BIN)/e2e/pause -coredns $(COREDNS_BIN)

.PHONY: e2e-prereqs
e2e-prereqs: deps $(KUBE_APISERVER_BIN) $(KUBECTL_BIN) $(ETCD_BIN) kube-node images e2e-images

.PHONY: e2e-up
e2e-up: e2e-prereqs ## Start a real node (containerd, kubelet, kube-proxy, control plane, CoreDNS) in a network namespace with the project installed; leaves it running.
	bash tests/e2e/up.sh

.PHONY: e2e-down
e2e-down: ## Remove everything e2e-up made (processes, pods, mounts, namespace, cgroups); restores sysctls. Safe to run twice.
	bash tests/e2e/down.sh

.PHONY: e2e
e2e: ## Up, the end-to-end checks with a summary table, down (also on failure).
	@if [ "$$(id -u)" -ne 0 ]; then \
		if [ -n "$${CI:-}" ]; then echo "e2e: needs root (CI is set: failing)"; exit 1; fi; \
		echo "e2e: SKIP: needs root (network namespace, containerd, kubelet)"; exit 0; fi
	$(MAKE) --no-print-directory e2e-prereqs
	bash tests/e2e/e2e.sh

##@ Deployment

.PHONY: manifests
manifests: ## Render every kustomization and validate it (strict decode).
	$(GO) test -count=1 -run 'Render|Decode' ./tests/manifests

.PHONY: images
images: ## Build OCI image tarballs for webhook and agent without a Docker engine (bin/images/).
	$(GO) run ./tests/images/build -out $(BIN)/images

.PHONY: demo
demo: tools build ## Local end-to-end demo: real kube-apiserver, webhook, pods, and (as root) the agent in network namespaces.
	bash tests/demo/demo.sh
