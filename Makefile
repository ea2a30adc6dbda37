# kubelet-csr-controller. `make help` lists the targets.
SHELL := /usr/bin/env bash -o errexit -o nounset -o pipefail
.DEFAULT_GOAL := help

BIN      ?= bin/kubelet-csr-controller
# hack/build-flags.sh is the one source of the version stamp and build flags
# (for make, the Dockerfile and the image); VERSION=v0.2.0 overrides it.
VERSION  ?= $(shell hack/build-flags.sh version)
export VERSION
CONFIG   ?= config/samples/controller-config.yaml
IMAGE    ?= kubelet-csr-controller:$(VERSION)
# Arguments for the demo, e.g. make demo DEMO_ARGS="--nodes 10 --keep".
DEMO_ARGS ?=
# Arguments for the benchmark, e.g. make bench BENCH_ARGS="--n 500".
BENCH_ARGS ?=
# How long each fuzz target runs in make test (make fuzz runs longer).
FUZZTIME ?= 10s

# The control-plane binaries are built once into a per-version cache
# (kube-controller-manager is the benchmark's baseline).
ASSETS = $$(hack/build-tools.sh kube-apiserver etcd kube-controller-manager)
# The real kubelet and its in-memory container runtime, for make e2e-kubelet.
KUBELET_DIR = $$(hack/build-tools.sh kubelet fakecri)

.PHONY: help
help: ## List the targets.
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_-]+:.*## / {printf "  %-12s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: build
build: ## Build the controller binary into bin/.
	CGO_ENABLED=0 go build $$(hack/build-flags.sh goflags) -ldflags "$$(hack/build-flags.sh ldflags)" -o $(BIN) ./cmd/kubelet-csr-controller

.PHONY: image
image: ## Build the multi-arch OCI image layout _output/image (and its SBOM) with no container engine.
	hack/tools/image/build.sh _output/image

# A release's artifacts in _output/release: the image layout (and as one
# tar), its SBOM, the packaged chart whose version and default image tag are
# VERSION's, and SHA256SUMS. The workflow (.github/workflows/release.yaml)
# runs this, then pushes and signs; see RELEASING.md.
.PHONY: release
release: ## Build a release's artifacts into _output/release (VERSION=v0.2.0 required).
	hack/release.sh $(VERSION)

.PHONY: tools
tools: ## Build every test tool (kube-apiserver, etcd, kube-controller-manager, kubelet, fakecri, helm, golangci-lint, promtool).
	hack/build-tools.sh kube-apiserver etcd kube-controller-manager kubelet fakecri helm golangci-lint promtool >/dev/null

.PHONY: test
test: build image ## Run every test: unit (-race), envtest, the chart and its alerts (promtool), the image, fuzz smoke runs, the end-to-end flow and real kubelets.
	KUBEBUILDER_ASSETS=$(ASSETS) HELM=$$(hack/build-tools.sh helm)/helm PROMTOOL=$$(hack/build-tools.sh promtool)/promtool \
		KCC_BINARY=$(CURDIR)/$(BIN) KCC_IMAGE=$(CURDIR)/_output/image \
		go test -race -timeout 30m ./...
	$(MAKE) e2e-kubelet
	$(MAKE) clock-guard
	$(MAKE) fuzz FUZZTIME=$(FUZZTIME)

.PHONY: demo
demo: build ## Local control plane, the controller and simulated kubelets bootstrapping and rotating (DEMO_ARGS="--nodes 10 --keep").
	KUBEBUILDER_ASSETS=$(ASSETS) go run ./test/demo --binary $(CURDIR)/$(BIN) $(DEMO_ARGS)

.PHONY: bench
bench: build ## Benchmark against kube-controller-manager and an ideal loop (BENCH_ARGS="--n 500"); results in _output/bench.
	KUBEBUILDER_ASSETS=$(ASSETS) go run ./test/bench --binary $(CURDIR)/$(BIN) $(BENCH_ARGS)

.PHONY: reliability
reliability: build ## Faults under load: leader killed, API server restarted, a noisy node (minutes; see RELIABILITY.md).
	mkdir -p _output && KUBEBUILDER_ASSETS=$(ASSETS) KCC_BINARY=$(CURDIR)/$(BIN) go test -tags reliability -count=1 -v -timeout 30m ./test/reliability/ | tee _output/reliability.log | grep -E '^(=== RUN|--- |ok|FAIL)|RESULT'

.PHONY: e2e
e2e: build ## Run only the end-to-end rotation flow, verbosely.
	KUBEBUILDER_ASSETS=$(ASSETS) KCC_BINARY=$(CURDIR)/$(BIN) go test -count=1 -v -timeout 15m ./test/e2e/

# Real kubelets (built from Go modules) bootstrap and rotate through the
# controller running with the chart's identity. Needs root and a non-loopback
# IPv4 address (KCC_NODE_IP picks one); see "Real kubelets" in README.md.
.PHONY: e2e-kubelet
e2e-kubelet: build ## Real kubelets bootstrap, rotate and serve their certificates (root, a non-loopback IPv4; ~3 min).
	KUBEBUILDER_ASSETS=$(ASSETS) HELM=$$(hack/build-tools.sh helm)/helm KCC_BINARY=$(CURDIR)/$(BIN) KCC_KUBELET_DIR=$(KUBELET_DIR) \
		go test -tags e2ekubelet -count=1 -v -timeout 15m ./test/e2e-kubelet/

# The version-skew matrix, out of CI: the envtest suites against kube-apiserver
# v1.36 and v1.35, the real-kubelet test with a v1.34 kubelet (results in
# _output/compat; README.md's support matrix). Builds each version once.
.PHONY: compat
# COMPAT_ROWS picks rows, e.g. COMPAT_ROWS=kubelet-1.34 (default: all).
COMPAT_ROWS ?=
compat: build image ## Version skew: the suites on kube-apiserver v1.36/v1.35, real kubelet v1.34 (builds them; long).
	hack/compat.sh $(COMPAT_ROWS)

# The packages whose tests need no API server.
PURE_PKGS := ./approver/... ./signer/... ./config/...

.PHONY: unit
unit: ## Run only the tests that need no API server.
	go test -race $(PURE_PKGS)

# A test that sets a fixed date beside certificates made at the real time
# passes today and fails next week. Moving the tests' clock and test/pki's
# (KCC_TEST_CLOCK_SHIFT, which both honour) a year each way makes it fail now.
.PHONY: clock-guard
clock-guard: ## Rerun the pure packages' tests with the test clock a year ahead and a year back.
	for shift in 8760h -8760h; do KCC_TEST_CLOCK_SHIFT=$$shift go test -count=1 $(PURE_PKGS) || exit 1; done

.PHONY: fuzz
fuzz: ## Fuzz request parsing and evaluation (FUZZTIME each, default 10s; try FUZZTIME=10m).
	go test ./approver -run '^$$' -fuzz '^FuzzEvaluate$$' -fuzztime $(FUZZTIME)
	go test ./approver -run '^$$' -fuzz '^FuzzParsePEM$$' -fuzztime $(FUZZTIME)

.PHONY: lint
lint: ## Run golangci-lint (errcheck, govet, staticcheck, gosec, revive, ...).
	$$(hack/build-tools.sh golangci-lint)/golangci-lint run ./...

.PHONY: fmt
fmt: ## Format the code.
	$$(hack/build-tools.sh golangci-lint)/golangci-lint fmt ./...

.PHONY: run
run: build ## Run the controller against the current kubeconfig (CONFIG=..., no leader election).
	$(BIN) --config $(CONFIG) --leader-elect=false --zap-encoder console

.PHONY: docker-build
docker-build: ## Build the container image (needs a Docker engine).
	docker build --build-arg VERSION=$(VERSION) --build-arg COMMIT=$$(hack/build-flags.sh commit) \
		--build-arg SOURCE_DATE_EPOCH=$$(hack/build-flags.sh epoch) -t $(IMAGE) .

.PHONY: clean
clean: ## Remove build output (the tools cache stays).
	rm -rf bin _output
