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
export HELM_BIN           ?= $(BIN)/helm
# etcd for the control plane: debian (Debian's etcd-server package, unpacked:
# seconds) or source (built from the Go module proxy: minutes).
export ETCD_FROM          ?= debian
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

# One `go build` for several commands compiles their shared packages once;
# -s -w (no symbol table, no DWARF) shortens the link, stack traces still work.
GOBUILD := CGO_ENABLED=0 $(GO) build -trimpath -ldflags='-s -w'

.PHONY: build
build: ## Build bin/webhook and bin/agent.
	$(GOBUILD) -o $(BIN)/ ./webhook ./agent

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
test: deps tools coredns build lint ## Run everything CI runs: lint, unit, integration (real kube-apiserver, netns as root), the CoreDNS differential suite and short fuzzing.
	$(GO) test -count=1 -timeout 30m $(TESTARGS) ./...
	$(MAKE) --no-print-directory fuzz

.PHONY: fuzz
fuzz: ## Run every Go fuzz target briefly (FUZZTIME each).
	@for spec in $$(grep -rl --include='*_test.go' '^func Fuzz' webhook agent pkg certs tests 2>/dev/null | xargs -r grep -H -o '^func Fuzz[A-Za-z0-9_]*' | sed 's/:func /:/'); do \
		file=$${spec%%:*}; target=$${spec##*:}; pkg=./$$(dirname $$file); \
		echo "fuzz $$pkg $$target ($(FUZZTIME))"; \
		$(GO) test -run '^$$' -fuzz "^$$target\$$" -fuzztime $(FUZZTIME) -timeout 4m $$pkg || exit 1; \
	done

.PHONY: soak
soak: ## 10 minutes of valid and hostile traffic against the agent (tests/hostile TestSoak; root; not in CI): RSS and goroutines must stay flat.
	HOSTILE_SOAK=$${SOAK:-10m} $(GO) test -count=1 -run '^TestSoak$$' -v -timeout 30m ./tests/hostile

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
tools: $(BIN)/kube-apiserver $(BIN)/kubectl $(BIN)/etcd $(BIN)/helm ## Build the real kube-apiserver, kubectl, helm (Go module proxy) and etcd (Debian's, or ETCD_FROM=source) into bin/.

# tests/tools/build.sh says what it builds, why and about how long it takes.
$(BIN)/kube-apiserver: tests/tools/kube-apiserver/go.mod
	@bash tests/tools/build.sh kube-apiserver $@

$(BIN)/kubectl: tests/tools/kube-apiserver/go.mod
	@bash tests/tools/build.sh kubectl $@

$(BIN)/etcd: tests/tools/etcd/go.mod
	@bash tests/tools/build.sh etcd $@

$(BIN)/helm: tests/tools/helm/go.mod
	@bash tests/tools/build.sh helm $@

.PHONY: helm
helm: $(BIN)/helm ## Build bin/helm (helm v4 from the Go module proxy) for the chart tests.

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
# The compile flags are tests/tools/build.sh's (CGO_ENABLED=0 -trimpath -gcflags=all=-l)
# and the module versions tests/tools/kube-apiserver's, so that the packages the
# kube-apiserver build compiled come from the Go build cache.
$(KUBE_NODE_BINS) &: tests/tools/kube-node/go.mod
	cd tests/tools/kube-node && CGO_ENABLED=0 $(GO) build -trimpath -gcflags=all=-l -ldflags '$(KUBE_NODE_LDFLAGS)' -o $(BIN)/ \
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
images: ## Build OCI image tarballs (linux/amd64 + linux/arm64 indexes) for webhook and agent without a Docker engine (bin/images/).
	$(GO) run ./tests/images/build -out $(BIN)/images

.PHONY: chart
chart: $(BIN)/helm ## Lint the Helm chart and compare it with the kustomize install (tests/helm).
	$(GO) test -count=1 -run 'Lint|Matches|Drift|Invalid|Corefile|README' ./tests/helm

# The demo needs kube-apiserver, etcd, the webhook, the agent and the demo
# program, nothing else (no kubectl, no helm). They are built in parallel:
# kube-apiserver (the longest part) beside the Debian packages and the one
# `go build` of webhook, agent and demo.
DEMO_JOBS ?= 4

.PHONY: demo
demo: ## Local end-to-end demo: real kube-apiserver, webhook, pods, and (as root) the agent in network namespaces.
	@bash tests/demo/plan.sh
	@$(MAKE) --no-print-directory -j$(DEMO_JOBS) demo-prereqs ETCD_AFTER=demo-deps
	@DEMO_BIN=$(BIN)/demo bash tests/demo/demo.sh

.PHONY: demo-prereqs demo-bins demo-deps
demo-prereqs: demo-deps $(KUBE_APISERVER_BIN) $(ETCD_BIN) demo-bins

demo-deps: ## Install only the Debian packages the demo uses (nsd, dig, iptables, iproute2); needs root.
	@if [ "$$(id -u)" -eq 0 ]; then bash tests/install-deps.sh demo; \
	else echo "demo: not root; the agent part runs on a loopback port"; fi

demo-bins:
	@echo "==> webhook, agent, demo program -> $(BIN)/: one go build (about 2 min on 2 cores with a cold Go cache, 3 CPU-min; seconds when cached)"
	@TIMEFORMAT="<== webhook, agent, demo: done in %0R s (CPU: user %0U s, sys %0S s)"; time $(GOBUILD) -o $(BIN)/ ./webhook ./agent ./tests/demo

# Debian's etcd comes from apt-get download: after the package installation
# (its apt-get update); the demo's smaller one when the demo builds it.
ETCD_AFTER ?= deps
$(BIN)/etcd: | $(ETCD_AFTER)
