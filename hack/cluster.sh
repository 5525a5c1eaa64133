#!/usr/bin/env bash
# Starts or stops the local cluster (etcd, kube-apiserver,
# kube-controller-manager, kube-scheduler and kwok from bin/) that make
# cluster-up and make demo use. The cluster runs in the background; its state
# and logs live in .local/cluster/ and its admin kubeconfig is always at
# .local/kubeconfig, so tools can point at one fixed path.
#
# Real kube-state-metrics behind the KSM pods (KSM_KUBELET, default 1): kwok
# simulates every pod, so nothing would listen on a KSM pod's IP and the
# operator's hand-over check could never scrape it. With KSM_KUBELET=1 the
# cluster is started with --external-kubelet-label ksmscale.example.com (kwok
# leaves the operator's pods alone) and `up` also starts bin/ksmkubelet in the
# background (hack/ksmkubelet, test/kubelet): it runs the real
# bin/kube-state-metrics for every such pod, with the pod's own arguments, on
# the pod's own loopback IP (127.66.0.0/16), and plays kubelet for it
# (probes, readiness gates). Its pid is in .local/ksmkubelet.pid, its log in
# .local/ksmkubelet.log, the per-pod KSM logs in .local/ksmkubelet/. Both
# belong together: without the ksmkubelet those pods would never turn Ready,
# so `up` and `down` always start and stop it with the cluster (make demo and
# make cluster-up alike). KSM_KUBELET=0 gives the old behaviour: kwok makes
# the KSM pods Ready with nothing behind them, and the operator falls back
# after the settle time with HandoverUnverified Warning Events.
#
# Usage: hack/cluster.sh up [NODES]   (default 50)
#        hack/cluster.sh down          (stops the ksmkubelet first, if any)
#        hack/cluster.sh status
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${BIN:-$ROOT/bin}
LOCAL=$ROOT/.local
DIR=$LOCAL/cluster
KUBECONFIG_LINK=$LOCAL/kubeconfig
CLI=$BIN/localcluster
KSM_KUBELET=${KSM_KUBELET:-1}
KSM_LABEL=ksmscale.example.com
KUBELET_BIN=$BIN/ksmkubelet
KUBELET_PIDFILE=$LOCAL/ksmkubelet.pid
KUBELET_LOG=$LOCAL/ksmkubelet.log
KUBELET_DIR=$LOCAL/ksmkubelet
export GOTOOLCHAIN=local

usage() { echo "usage: $0 up [NODES] | down | status" >&2; exit 2; }

build_cli() {
  (cd "$ROOT" && go build -o "$CLI" ./hack/localcluster)
}

# ksmkubelet_pid prints the pid in the pidfile if that process is still our
# bin/ksmkubelet (a stale pidfile may name a reused pid: never signal that).
ksmkubelet_pid() {
  [[ -f $KUBELET_PIDFILE ]] || return 1
  local pid; pid=$(cat "$KUBELET_PIDFILE")
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  [[ $(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) == "$KUBELET_BIN "* ]] || return 1
  echo "$pid"
}

# stop_ksmkubelet stops the ksmkubelet by its pidfile: SIGTERM makes it stop
# every kube-state-metrics it started (at most 10 s each, in parallel); a
# SIGKILL after 30 s still takes them along (they die with their parent).
stop_ksmkubelet() {
  local pid
  if pid=$(ksmkubelet_pid); then
    echo "stopping ksmkubelet (pid $pid) and its kube-state-metrics processes"
    kill "$pid"
    for _ in $(seq 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$KUBELET_PIDFILE"
}

# start_ksmkubelet starts bin/ksmkubelet against the cluster unless it runs,
# and waits until it has seen the cluster's pods.
start_ksmkubelet() {
  local pid
  if pid=$(ksmkubelet_pid); then
    echo "ksmkubelet already running (pid $pid, log $KUBELET_LOG)"
    return 0
  fi
  (cd "$ROOT" && go build -o "$KUBELET_BIN" ./hack/ksmkubelet)
  mkdir -p "$KUBELET_DIR"
  "$KUBELET_BIN" --kubeconfig "$DIR/kubeconfig" --bin "$BIN" --dir "$KUBELET_DIR" --selector "$KSM_LABEL" \
    </dev/null >"$KUBELET_LOG" 2>&1 &
  pid=$!
  echo "$pid" >"$KUBELET_PIDFILE"
  # It logs "ksmkubelet: running;" once it has seen the cluster's pods and
  # nodes (at most a minute, or it exits).
  local started=0
  for _ in $(seq 400); do
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "ksmkubelet exited; its log ($KUBELET_LOG) ends with:" >&2
      tail -n 20 "$KUBELET_LOG" >&2
      rm -f "$KUBELET_PIDFILE"
      return 1
    fi
    if grep -q "ksmkubelet: running;" "$KUBELET_LOG"; then started=1; break; fi
    sleep 0.2
  done
  ((started)) || echo "warning: ksmkubelet (pid $pid) has not reported running after 80 s; see $KUBELET_LOG" >&2
  echo "ksmkubelet pid $pid: real kube-state-metrics behind every pod labelled $KSM_LABEL (log $KUBELET_LOG, per-pod logs in $KUBELET_DIR/)"
}

# cluster_has_label reports whether the running cluster's kwok leaves the KSM
# pods alone, i.e. whether it was started with KSM_KUBELET=1.
cluster_has_label() {
  grep -q "$KSM_LABEL" "$DIR/kwok-stages.yaml" 2>/dev/null
}

cmd=${1:-}
case $cmd in
  up)
    nodes=${2:-50}
    [[ $nodes =~ ^[0-9]+$ ]] || usage
    [[ $KSM_KUBELET == [01] ]] || { echo "KSM_KUBELET must be 0 or 1, not '$KSM_KUBELET'" >&2; exit 2; }
    build_cli
    if [[ -f $DIR/pids ]] && "$CLI" status --dir "$DIR" >/dev/null 2>&1; then
      have=0; cluster_has_label && have=1
      if [[ $have == "$KSM_KUBELET" ]]; then
        echo "cluster already running and healthy in $DIR"
        "$CLI" status --dir "$DIR"
        if [[ $KSM_KUBELET == 1 ]]; then start_ksmkubelet; else stop_ksmkubelet; fi
        ln -sfn "$DIR/kubeconfig" "$KUBECONFIG_LINK"
        echo "  export KUBECONFIG=$KUBECONFIG_LINK"
        exit 0
      fi
      echo "cluster in $DIR was started with KSM_KUBELET=$have; starting afresh with KSM_KUBELET=$KSM_KUBELET" >&2
    elif [[ -f $DIR/pids ]]; then
      # Unhealthy leftovers (some process died, or the machine rebooted):
      # the CLI refuses to start over live processes, so clear them first.
      echo "cluster in $DIR is not healthy; stopping it and starting afresh" >&2
    fi
    stop_ksmkubelet
    if [[ -f $DIR/pids ]]; then
      "$CLI" down --dir "$DIR" >&2
    fi
    rm -rf "$KUBELET_DIR"
    mkdir -p "$LOCAL"
    label=()
    [[ $KSM_KUBELET == 1 ]] && label=(--external-kubelet-label "$KSM_LABEL")
    "$CLI" up --nodes "$nodes" --dir "$DIR" --bin "$BIN" "${label[@]}"
    ln -sfn "$DIR/kubeconfig" "$KUBECONFIG_LINK"
    [[ $KSM_KUBELET == 1 ]] && start_ksmkubelet
    echo "fixed kubeconfig path: $KUBECONFIG_LINK"
    echo "  export KUBECONFIG=$KUBECONFIG_LINK"
    echo "stop with: $0 down"
    ;;
  down)
    stop_ksmkubelet
    build_cli
    "$CLI" down --dir "$DIR"
    rm -rf "$KUBELET_DIR"
    rm -f "$KUBECONFIG_LINK"
    ;;
  status)
    build_cli
    if pid=$(ksmkubelet_pid); then
      echo "ksmkubelet pid $pid running (log $KUBELET_LOG)"
    elif [[ $KSM_KUBELET == 1 ]] && cluster_has_label; then
      echo "ksmkubelet NOT RUNNING: nothing runs the KSM pods (hack/cluster.sh up starts it)"
    fi
    exec "$CLI" status --dir "$DIR"
    ;;
  *)
    usage
    ;;
esac
