#!/usr/bin/env bash
# Starts or stops the local cluster (etcd, kube-apiserver,
# kube-controller-manager, kube-scheduler and kwok from bin/) that make
# cluster-up and make demo use. The cluster runs in the background; its state
# and logs live in .local/cluster/ and its admin kubeconfig is always at
# .local/kubeconfig, so tools can point at one fixed path.
#
# Usage: hack/cluster.sh up [NODES]   (default 50)
#        hack/cluster.sh down
#        hack/cluster.sh status
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${BIN:-$ROOT/bin}
DIR=$ROOT/.local/cluster
KUBECONFIG_LINK=$ROOT/.local/kubeconfig
CLI=$BIN/localcluster
export GOTOOLCHAIN=local

usage() { echo "usage: $0 up [NODES] | down | status" >&2; exit 2; }

build_cli() {
  (cd "$ROOT" && go build -o "$CLI" ./hack/localcluster)
}

cmd=${1:-}
case $cmd in
  up)
    nodes=${2:-50}
    [[ $nodes =~ ^[0-9]+$ ]] || usage
    build_cli
    if [[ -f $DIR/pids ]] && "$CLI" status --dir "$DIR" >/dev/null 2>&1; then
      echo "cluster already running and healthy in $DIR"
      "$CLI" status --dir "$DIR"
      ln -sfn "$DIR/kubeconfig" "$KUBECONFIG_LINK"
      echo "  export KUBECONFIG=$KUBECONFIG_LINK"
      exit 0
    fi
    # Unhealthy leftovers (some process died, or the machine rebooted): the
    # CLI refuses to start over live processes, so clear them first.
    if [[ -f $DIR/pids ]]; then
      echo "cluster in $DIR is not healthy; stopping it and starting afresh" >&2
      "$CLI" down --dir "$DIR" >&2
    fi
    mkdir -p "$ROOT/.local"
    "$CLI" up --nodes "$nodes" --dir "$DIR" --bin "$BIN"
    ln -sfn "$DIR/kubeconfig" "$KUBECONFIG_LINK"
    echo "fixed kubeconfig path: $KUBECONFIG_LINK"
    echo "  export KUBECONFIG=$KUBECONFIG_LINK"
    echo "stop with: $0 down"
    ;;
  down)
    build_cli
    "$CLI" down --dir "$DIR"
    rm -f "$KUBECONFIG_LINK"
    ;;
  status)
    build_cli
    exec "$CLI" status --dir "$DIR"
    ;;
  *)
    usage
    ;;
esac
