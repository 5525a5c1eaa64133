#!/usr/bin/env bash
# Builds the local control plane and tools from Go modules into bin/.
#
# Nothing is downloaded but Go modules: setup-envtest and release tarballs are
# out of reach here, so every binary is compiled from its module at the version
# pinned in hack/versions.env. Each tool gets its own throwaway build module
# (under bin/.build/) so that none of their dependency graphs leak into the
# operator's go.mod. A tool is rebuilt only when its binary is missing or its
# pinned version changed.
#
# Usage: hack/build-tools.sh [kubernetes|etcd|kwok|kube-state-metrics|controller-gen|prometheus-operator-crds|helm|prometheus ...]
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${BIN:-$ROOT/bin}
# shellcheck source=versions.env
source "$ROOT/hack/versions.env"
export GOTOOLCHAIN=local GOFLAGS=-mod=mod

mkdir -p "$BIN/.build"

log() { printf '[build-tools] %s\n' "$*" >&2; }

# up_to_date TOOL STAMP BINARIES... succeeds when every binary exists and the
# stamp recorded at its last build equals STAMP.
up_to_date() {
  local tool=$1 stamp=$2; shift 2
  local b
  for b in "$@"; do [[ -x "$BIN/$b" ]] || return 1; done
  [[ "$(cat "$BIN/.build/$tool.stamp" 2>/dev/null)" == "$stamp" ]]
}

# new_module TOOL writes a fresh build module directory and prints its path.
new_module() {
  local dir="$BIN/.build/$1"
  rm -rf "$dir"
  mkdir -p "$dir"
  printf 'module ksmscale.local/build/%s\n\ngo 1.26\n' "$1" >"$dir/go.mod"
  printf 'package main\n' >"$dir/main.go"
  echo "$dir"
}

build_kubernetes() {
  local stamp="$KUBERNETES_VERSION/$KUBERNETES_STAGING_VERSION"
  if up_to_date kubernetes "$stamp" kube-apiserver kube-controller-manager kube-scheduler kubectl; then return; fi
  log "kubernetes $KUBERNETES_VERSION: kube-apiserver, kube-controller-manager, kube-scheduler, kubectl (cold: ~10 min on 2 cores)"
  local dir; dir=$(new_module kubernetes)
  (
    cd "$dir"
    # k8s.io/kubernetes points its staging modules at ./staging; a consumer
    # must replace each with its released version. Read the list from the
    # module's own go.mod so it never goes stale.
    local gomod
    gomod=$(go mod download -json "k8s.io/kubernetes@$KUBERNETES_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
    {
      echo "require k8s.io/kubernetes $KUBERNETES_VERSION"
      grep -oE '^\s*k8s\.io/[a-z0-9-]+ => \./staging' "$gomod" | awk '{print "replace " $1 " => " $1 " '"$KUBERNETES_STAGING_VERSION"'"}'
    } >>go.mod
    local minor=${KUBERNETES_VERSION#v1.}; minor=${minor%%.*}
    local ld="" p
    for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
      ld+=" -X $p.gitVersion=$KUBERNETES_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean"
    done
    go build -trimpath -ldflags "-s -w$ld" -o "$BIN/" \
      k8s.io/kubernetes/cmd/kube-apiserver \
      k8s.io/kubernetes/cmd/kube-controller-manager \
      k8s.io/kubernetes/cmd/kube-scheduler \
      k8s.io/kubernetes/cmd/kubectl
  )
  echo "$stamp" >"$BIN/.build/kubernetes.stamp"
}

build_etcd() {
  if up_to_date etcd "$ETCD_VERSION" etcd; then return; fi
  log "etcd $ETCD_VERSION"
  local dir; dir=$(new_module etcd)
  (cd "$dir" && echo "require go.etcd.io/etcd/server/v3 $ETCD_VERSION" >>go.mod &&
    go build -trimpath -ldflags "-s -w" -o "$BIN/etcd" go.etcd.io/etcd/server/v3)
  echo "$ETCD_VERSION" >"$BIN/.build/etcd.stamp"
}

build_kwok() {
  if up_to_date kwok "$KWOK_VERSION" kwok && [[ -d "$BIN/kwok-stages" ]] && [[ -z $(find "$BIN/kwok-stages" -name "*.go") ]]; then return; fi
  log "kwok $KWOK_VERSION"
  local dir; dir=$(new_module kwok)
  (
    cd "$dir" && echo "require sigs.k8s.io/kwok $KWOK_VERSION" >>go.mod
    go build -trimpath -ldflags "-s -w" -o "$BIN/kwok" sigs.k8s.io/kwok/cmd/kwok
    # kwok refuses to start without Stage objects; keep the ones its module ships.
    local src
    src=$(go list -m -f '{{.Dir}}' sigs.k8s.io/kwok)
    rm -rf "$BIN/kwok-stages" && mkdir -p "$BIN/kwok-stages"
    cp -r "$src/kustomize/stage/." "$BIN/kwok-stages/"
    chmod -R u+w "$BIN/kwok-stages"
    # Keep only the manifests: Go files there would join this module's ./...
    find "$BIN/kwok-stages" -type f ! -name '*.yaml' -delete
  )
  echo "$KWOK_VERSION" >"$BIN/.build/kwok.stamp"
}

build_kube_state_metrics() {
  if up_to_date kube-state-metrics "$KUBE_STATE_METRICS_VERSION" kube-state-metrics; then return; fi
  log "kube-state-metrics $KUBE_STATE_METRICS_VERSION"
  local dir; dir=$(new_module kube-state-metrics)
  (cd "$dir" && echo "require k8s.io/kube-state-metrics/v2 $KUBE_STATE_METRICS_VERSION" >>go.mod &&
    go build -trimpath -ldflags "-s -w" -o "$BIN/kube-state-metrics" k8s.io/kube-state-metrics/v2)
  echo "$KUBE_STATE_METRICS_VERSION" >"$BIN/.build/kube-state-metrics.stamp"
}

build_controller_gen() {
  if up_to_date controller-gen "$CONTROLLER_TOOLS_VERSION" controller-gen; then return; fi
  log "controller-gen $CONTROLLER_TOOLS_VERSION"
  local dir; dir=$(new_module controller-gen)
  (cd "$dir" && echo "require sigs.k8s.io/controller-tools $CONTROLLER_TOOLS_VERSION" >>go.mod &&
    go build -trimpath -o "$BIN/controller-gen" sigs.k8s.io/controller-tools/cmd/controller-gen)
  echo "$CONTROLLER_TOOLS_VERSION" >"$BIN/.build/controller-gen.stamp"
}

# helm lints and renders charts/ksm-scale-operator in test/chart. The version
# is stamped the way helm's own Makefile does for a tagged release (static,
# CGO off), so `helm version` reports it.
build_helm() {
  if up_to_date helm "$HELM_VERSION" helm; then return; fi
  log "helm $HELM_VERSION"
  local dir; dir=$(new_module helm)
  local v=helm.sh/helm/v4/internal/version
  (cd "$dir" && echo "require helm.sh/helm/v4 $HELM_VERSION" >>go.mod &&
    CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X $v.version=$HELM_VERSION -X $v.metadata= -X $v.gitTreeState=clean" \
      -o "$BIN/helm" helm.sh/helm/v4/cmd/helm)
  echo "$HELM_VERSION" >"$BIN/.build/helm.stamp"
}

# The Prometheus Operator CRDs the shipped manifests use (ServiceMonitor,
# PodMonitor, PrometheusRule), for the server-side dry-run in test/manifests.
# The operator's module publishes no CRD YAML at the pinned version, so
# controller-gen generates it from the API module's Go types, as upstream does.
build_prometheus_operator_crds() {
  local out="$BIN/crds/prometheus-operator" stamp="$PROMETHEUS_OPERATOR_VERSION/$CONTROLLER_TOOLS_VERSION"
  local crds=(servicemonitors podmonitors prometheusrules) c
  local fresh=1
  [[ "$(cat "$BIN/.build/prometheus-operator-crds.stamp" 2>/dev/null)" == "$stamp" ]] || fresh=0
  for c in "${crds[@]}"; do [[ -s "$out/monitoring.coreos.com_$c.yaml" ]] || fresh=0; done
  if ((fresh)); then return; fi
  build_controller_gen
  log "prometheus-operator CRDs $PROMETHEUS_OPERATOR_VERSION: ${crds[*]}"
  local dir; dir=$(new_module prometheus-operator-crds)
  local pkg=github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring
  (
    cd "$dir"
    echo "require $pkg $PROMETHEUS_OPERATOR_VERSION" >>go.mod
    printf 'package main\n\nimport _ "%s/v1"\n' "$pkg" >main.go
    go mod tidy
    "$BIN/controller-gen" crd:crdVersions=v1 paths="$pkg/v1" output:crd:dir="$dir/out"
  )
  rm -rf "$out" && mkdir -p "$out"
  for c in "${crds[@]}"; do cp "$dir/out/monitoring.coreos.com_$c.yaml" "$out/"; done
  echo "$stamp" >"$BIN/.build/prometheus-operator-crds.stamp"
}

# prometheus judges the e2e suite and the benchmark through kubernetes_sd_configs
# (test/promjudge). Built with only the Kubernetes service discovery compiled
# in (Prometheus' remove_all_sd / enable_kubernetes_sd build tags): the other
# cloud SDKs would treble the build for nothing. Without the web UI assets,
# which only a browser needs. Its promtool, as bin/promtool-k8s (the rule
# tests keep Debian's promtool), checks the configuration test/promjudge
# writes. Cold: about 3 to 5 minutes on 2 cores.
build_prometheus() {
  if up_to_date prometheus "$PROMETHEUS_VERSION" prometheus promtool-k8s; then return; fi
  log "prometheus $PROMETHEUS_VERSION (Kubernetes service discovery only)"
  local dir; dir=$(new_module prometheus)
  # Module v0.3XX.Y is Prometheus v3.XX.Y; stamp it so `prometheus --version` says.
  local v=${PROMETHEUS_VERSION#v0.}; v="3.${v#3}"
  (cd "$dir" && echo "require github.com/prometheus/prometheus $PROMETHEUS_VERSION" >>go.mod &&
    CGO_ENABLED=0 go build -trimpath -tags remove_all_sd,enable_kubernetes_sd \
      -ldflags "-s -w -X github.com/prometheus/common/version.Version=$v" \
      -o "$BIN/prometheus" github.com/prometheus/prometheus/cmd/prometheus &&
    CGO_ENABLED=0 go build -trimpath -tags remove_all_sd,enable_kubernetes_sd \
      -ldflags "-s -w -X github.com/prometheus/common/version.Version=$v" \
      -o "$BIN/promtool-k8s" github.com/prometheus/prometheus/cmd/promtool)
  echo "$PROMETHEUS_VERSION" >"$BIN/.build/prometheus.stamp"
}

tools=("$@")
[[ ${#tools[@]} -gt 0 ]] || tools=(controller-gen etcd kubernetes kwok kube-state-metrics prometheus-operator-crds helm prometheus)
for t in "${tools[@]}"; do
  case $t in
    kubernetes) build_kubernetes ;;
    etcd) build_etcd ;;
    kwok) build_kwok ;;
    kube-state-metrics) build_kube_state_metrics ;;
    controller-gen) build_controller_gen ;;
    prometheus-operator-crds) build_prometheus_operator_crds ;;
    helm) build_helm ;;
    prometheus) build_prometheus ;;
    *) echo "unknown tool: $t" >&2; exit 2 ;;
  esac
done
