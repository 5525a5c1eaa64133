# ksm-scale-operator
#
#   make demo       build what is missing, start a local cluster with 50
#                   simulated nodes, run the operator against it, apply a sample
#   make test       vet, generated-file check, unit and integration tests
#   make help       everything else
#
# The release version lives in VERSION and nowhere else; the build injects it
# (internal/version), and the image tag in config/manager must match it (a
# test in test/manifests checks).

SHELL := /usr/bin/env bash -o pipefail
.SHELLFLAGS := -ec
ROOT := $(shell pwd)
BIN := $(ROOT)/bin
export GOTOOLCHAIN := local
export KUBEBUILDER_ASSETS := $(BIN)

CONTROLLER_GEN := $(BIN)/controller-gen
NODES ?= 50
# Where make cluster-up keeps its state and kubeconfig.
LOCAL := $(ROOT)/.local
KUBECONFIG_LOCAL := $(LOCAL)/kubeconfig

VERSION := $(shell cat $(ROOT)/VERSION)
IMG ?= ghcr.io/ksmscale/ksm-scale-operator:$(VERSION)
# Platforms of make build-static, as GOOS/GOARCH.
PLATFORMS ?= linux/amd64 linux/arm64
# kubectl for make install.yaml: the pinned one in bin/ if built, else PATH's.
KUBECTL ?= $(shell command -v $(BIN)/kubectl || command -v kubectl)

.PHONY: help
help: ## Show the targets.
	@grep -E '^[a-zA-Z0-9_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  %-16s %s\n", $$1, $$2}'

##@ Build

.PHONY: tools
tools: ## Build the pinned control plane and tools into bin/ (only what is missing).
	hack/build-tools.sh

$(CONTROLLER_GEN): hack/versions.env
	hack/build-tools.sh controller-gen

.PHONY: generate
generate: $(CONTROLLER_GEN) ## Regenerate deepcopy, CRD and RBAC from the Go markers.
	$(CONTROLLER_GEN) object:headerFile=hack/boilerplate.go.txt paths=./api/...
	$(CONTROLLER_GEN) crd:allowDangerousTypes=false rbac:roleName=ksm-scale-operator-manager paths=./api/... paths=./internal/... \
		output:crd:artifacts:config=config/crd/bases output:rbac:artifacts:config=config/rbac

.PHONY: verify
verify: ## Fail when generated files are stale or code is not gofmt-clean.
	hack/verify.sh

.PHONY: chart
chart: ## Copy the CRD, RBAC, admission policy, Prometheus objects and dashboard from config/ into the Helm chart.
	hack/chart-sync.sh

.PHONY: build
build: ## Build the manager binary for this machine into bin/manager (release flags, version injected).
	hack/build-manager.sh $(BIN)/manager

.PHONY: build-static
build-static: ## Build the manager exactly as the Dockerfile does for PLATFORMS into bin/manager-<os>-<arch>.
	@for p in $(PLATFORMS); do \
	  hack/build-manager.sh $(BIN)/manager-$${p%/*}-$${p#*/} $${p%/*} $${p#*/}; \
	done

.PHONY: image
image: ## Build the manager image IMG from the Dockerfile with docker, podman or buildah.
	hack/image.sh $(IMG) $(VERSION)

.PHONY: install.yaml
install.yaml: ## Render config/default into dist/install.yaml for kubectl apply -f.
	@[[ -n "$(KUBECTL)" ]] || { echo "install.yaml: no kubectl in bin/ or PATH; run make tools" >&2; exit 1; }
	@mkdir -p dist
	$(KUBECTL) kustomize config/default > dist/install.yaml.tmp
	@grep -q 'image: .*ksm-scale-operator:$(VERSION)$$' dist/install.yaml.tmp || \
	  { echo "install.yaml: the manager image tag is not VERSION ($(VERSION)); fix newTag in config/manager/kustomization.yaml" >&2; rm -f dist/install.yaml.tmp; exit 1; }
	@mv dist/install.yaml.tmp dist/install.yaml
	@echo "wrote dist/install.yaml (image tag $(VERSION))"

##@ Test

.PHONY: test
test: ## Vet, verify generated files, run unit, integration, system and e2e tests.
	hack/test.sh

.PHONY: test-rules
test-rules: ## promtool check rules and promtool test rules on config/prometheus (test/rules; needs promtool).
	go test ./test/rules/ -count=1

.PHONY: test-chart
test-chart: ## helm lint, golden helm template output, chart vs config/default, dry-run, helm install, dashboard PromQL (needs bin/helm, promtool).
	hack/build-tools.sh helm etcd kubernetes prometheus-operator-crds
	go test ./test/dashboard/ -count=1
	go test ./test/manifests/ -count=1 -run 'Chart|Dashboard|ServerSideDryRun|HelmInstall'

.PHONY: test-e2e
test-e2e: ## Only the e2e suite: operator binary, 300-node local cluster, real kube-state-metrics, faults.
	hack/build-tools.sh etcd kubernetes kwok kube-state-metrics
	go test -tags e2e ./test/e2e/ -count=1 -timeout 30m -v

##@ Benchmark

BENCH_ARGS ?=
.PHONY: bench
bench: ## Operator vs StatefulSet autosharding, real KSM behind every pod, gaps measured in the metrics: changes at 1,000 nodes, create + steady + RSS at 5,000 (table, bench-results.json, docs/img/bench-reshard.png; ~45 min).
	hack/build-tools.sh etcd kubernetes kwok kube-state-metrics prometheus
	go run ./bench --plot docs/img/bench-reshard.png $(BENCH_ARGS)

##@ Local cluster

.PHONY: cluster-up
cluster-up: ## Start etcd, kube-apiserver, controller-manager, scheduler, kwok with NODES simulated nodes, and bin/ksmkubelet (real KSM behind KSM pods; KSM_KUBELET=0: none).
	hack/build-tools.sh kubernetes etcd kwok kube-state-metrics
	hack/cluster.sh up $(NODES)

.PHONY: cluster-down
cluster-down: ## Stop the ksmkubelet (by its pidfile) and the local cluster started by cluster-up, and remove their state.
	hack/cluster.sh down

.PHONY: demo
demo: ## Build what is missing, start a 50-node local cluster, run the operator and apply a sample.
	hack/demo.sh $(NODES)

.PHONY: demo-down
demo-down: ## Stop the demo's operator, ksmkubelet (and its kube-state-metrics) and local cluster.
	hack/demo.sh down
