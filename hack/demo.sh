#!/usr/bin/env bash
# make demo: everything a newcomer needs to see the operator work, on this
# machine, with nothing but Go modules. Builds what is missing (with
# progress), starts a local cluster of NODES simulated nodes (kwok), installs
# the CRD and RBAC, runs the operator as a background process, applies the
# plan's two samples and shows the result.
#
# kwok simulates every pod, but not the KSM pods: hack/cluster.sh up starts
# bin/ksmkubelet beside the cluster (pid .local/ksmkubelet.pid, log
# .local/ksmkubelet.log), which runs the real bin/kube-state-metrics behind
# each KSMScale pod on the pod's own loopback IP, so the operator verifies
# every hand-over by scraping the pod's /metrics, as on a real cluster.
#
# Usage: hack/demo.sh [NODES]   start (default 50 nodes)
#        hack/demo.sh down      stop the operator, the ksmkubelet (and its
#                               kube-state-metrics processes) and the cluster
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
export GOTOOLCHAIN=local
BIN=$ROOT/bin
LOCAL=$ROOT/.local
export KUBECONFIG=$LOCAL/kubeconfig
KUBECTL="$BIN/kubectl"
PIDFILE=$LOCAL/operator.pid
OPLOG=$LOCAL/operator.log

step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

stop_operator() {
  if [[ -f $PIDFILE ]]; then
    local pid; pid=$(cat "$PIDFILE")
    if kill -0 "$pid" 2>/dev/null && grep -q manager "/proc/$pid/cmdline" 2>/dev/null; then
      kill "$pid"
      for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
      kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$PIDFILE"
  fi
}

if [[ ${1:-} == down ]]; then
  step "stopping the operator, the ksmkubelet and the local cluster"
  stop_operator
  # Stops the ksmkubelet by its pidfile (and with it every kube-state-metrics
  # it runs) before the cluster.
  hack/cluster.sh down
  exit 0
fi
NODES=${1:-50}

step "building the control plane and tools into bin/ (only what is missing; a cold build takes ~20 minutes)"
hack/build-tools.sh controller-gen etcd kubernetes kwok kube-state-metrics
step "building the operator"
go build -o "$BIN/manager" ./cmd
go build -o "$BIN/shardtable" ./hack/shardtable
go build -o "$BIN/ksmkubelet" ./hack/ksmkubelet

step "starting a local cluster with $NODES simulated nodes, and real kube-state-metrics behind every KSM pod"
stop_operator
KSM_KUBELET=1 hack/cluster.sh up "$NODES"

step "installing the CRD, the RBAC and the namespaces"
"$KUBECTL" apply -k config/crd
"$KUBECTL" create namespace ksm-scale-operator-system --dry-run=client -o yaml | "$KUBECTL" apply -f -
"$KUBECTL" apply -k config/rbac
"$KUBECTL" create namespace monitoring --dry-run=client -o yaml | "$KUBECTL" apply -f -
"$KUBECTL" wait --for condition=Established crd/ksmscales.monitor.example.com --timeout=60s

step "running the operator (log: $OPLOG)"
"$BIN/manager" --kubeconfig "$KUBECONFIG" --metrics-bind-address=127.0.0.1:0 --health-probe-bind-address=127.0.0.1:0 >"$OPLOG" 2>&1 &
echo $! >"$PIDFILE"
echo "operator pid $(cat "$PIDFILE")"

step "some workload for kube-state-metrics to export: 200 pods in namespace demo-load"
"$KUBECTL" create namespace demo-load --dry-run=client -o yaml | "$KUBECTL" apply -f -
"$KUBECTL" create deployment demo-load -n demo-load --image=registry.k8s.io/pause:3.10 --replicas=200 --dry-run=client -o yaml | "$KUBECTL" apply -f -
"$KUBECTL" rollout status deployment/demo-load -n demo-load --timeout=180s

step "applying the plan's samples (config/samples)"
"$KUBECTL" apply -k config/samples

step "waiting for both KSMScales to become Ready"
"$KUBECTL" wait ksms --all --for=jsonpath='{.status.phase}'=Ready --timeout=180s
echo "waiting for the operator to verify every KSM pod's /metrics (MetricsVerified=True)"
"$KUBECTL" wait ksms --all --for=condition=MetricsVerified --timeout=180s

step "kubectl get ksms"
"$KUBECTL" get ksms -o wide
step "kubectl get deployments,pods -n monitoring"
"$KUBECTL" get deployments -n monitoring
"$KUBECTL" get pods -n monitoring -L shard-id,total-shards -o wide
step "kubectl describe ksms production-ksm-sharded (conditions and events)"
echo "Every pod above runs a real kube-state-metrics on its own IP (bin/ksmkubelet); MetricsVerified"
echo "True/Verified means the operator scraped each new pod's /metrics before it took over."
"$KUBECTL" describe ksms production-ksm-sharded | sed -n '/^Status:/,$p'

step "sharding at work: a real kube-state-metrics per shard, started with each shard pod's own arguments"
"$BIN/shardtable" --kubeconfig "$KUBECONFIG" --ksmscale production-ksm-sharded --bin "$BIN" --timeout 180s

cat <<EOT

The operator keeps running in the background against the local cluster, and
bin/ksmkubelet runs a real kube-state-metrics behind every KSMScale pod.
  export KUBECONFIG=$KUBECONFIG
  $KUBECTL get ksms                       # try: kubectl edit ksms production-ksm-sharded
  tail -f $OPLOG
  tail -f $LOCAL/ksmkubelet.log           # per-pod KSM logs: $LOCAL/ksmkubelet/
Stop everything with: make demo-down
EOT
