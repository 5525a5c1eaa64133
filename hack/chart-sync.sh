#!/usr/bin/env bash
# Copies the manifests the Helm chart shares with config/ into the chart's
# files/ directory (make chart). Helm can read only files inside the chart
# (.Files.Get), so the chart carries copies; config/ stays the one source:
# the CRD and the manager's ClusterRole come from controller-gen (make
# generate), the rest is written there once. test/chart fails when a copy
# differs from its source, and hack/verify.sh when make chart was not run.
#
# Usage: hack/chart-sync.sh [--check]   --check: change nothing, exit 1 on drift.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
FILES=charts/ksm-scale-operator/files

# source (under config/) and copy (under $FILES), one pair a line.
pairs=(
  "config/crd/bases/monitor.example.com_ksmscales.yaml crds/monitor.example.com_ksmscales.yaml"
  "config/rbac/role.yaml rbac/role.yaml"
  "config/rbac/kube_state_metrics_role.yaml rbac/kube_state_metrics_role.yaml"
  "config/rbac/leader_election_role.yaml rbac/leader_election_role.yaml"
  "config/rbac/metrics_auth_role.yaml rbac/metrics_auth_role.yaml"
  "config/rbac/metrics_reader_role.yaml rbac/metrics_reader_role.yaml"
  "config/admission/bind-check.yaml admission/bind-check.yaml"
  "config/networkpolicy/kube-state-metrics.yaml networkpolicy/kube-state-metrics.yaml"
  "config/prometheus/prometheusrule.yaml prometheus/prometheusrule.yaml"
  "config/prometheus/servicemonitor-shards.yaml prometheus/servicemonitor-shards.yaml"
  "config/prometheus/servicemonitor-operator.yaml prometheus/servicemonitor-operator.yaml"
  "config/grafana/ksm-scale-operator.json grafana/ksm-scale-operator.json"
)

check=0
[[ ${1:-} == --check ]] && check=1
drift=0
for p in "${pairs[@]}"; do
  read -r src dst <<<"$p"
  if ((check)); then
    if ! cmp -s "$src" "$FILES/$dst"; then
      echo "$FILES/$dst differs from $src: run make chart" >&2
      drift=1
    fi
  else
    mkdir -p "$(dirname "$FILES/$dst")"
    cp "$src" "$FILES/$dst"
  fi
done
# A copy whose source is gone would be read by the chart but checked by nothing.
want=$(printf '%s\n' "${pairs[@]}" | awk '{print $2}' | sort)
have=$(cd "$FILES" 2>/dev/null && find . -type f ! -name README.md | sed 's|^\./||' | sort)
if [[ "$want" != "$have" ]]; then
  if ((check)); then
    echo "$FILES holds files that are not copies of config/ (or misses some):" >&2
    diff <(echo "$want") <(echo "$have") >&2 || true
    drift=1
  else
    comm -13 <(echo "$want") <(echo "$have") | while read -r f; do rm -f "$FILES/$f"; done
  fi
fi
exit $drift
