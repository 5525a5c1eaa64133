#!/usr/bin/env bash
# Fails when generated files (deepcopy, CRD, RBAC) are stale, the Helm chart's
# copies of config/ files differ from them, or Go code is not gofmt-clean. Generated files come from controller-gen only; this is what
# keeps anyone from editing them by hand.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
export GOTOOLCHAIN=local

unformatted=$(gofmt -l $(git ls-files '*.go') 2>/dev/null || true)
if [[ -n $unformatted ]]; then
  echo "gofmt needed on:" >&2
  echo "$unformatted" >&2
  exit 1
fi

# Regenerate and compare with the files as they were: any difference means
# they were stale or edited by hand.
generated() { find api config/crd config/rbac -type f \( -name 'zz_generated.*' -o -name '*.yaml' \) -print0 | sort -z | xargs -0 sha256sum; }
before=$(generated)
make -s generate >/dev/null
after=$(generated)
if [[ "$before" != "$after" ]]; then
  echo "generated files were stale or hand-edited (now regenerated; review and commit):" >&2
  diff <(echo "$before") <(echo "$after") >&2 || true
  exit 1
fi
# The Helm chart carries copies of config/ files (make chart); a stale copy
# would ship an old CRD or old rules under the chart.
hack/chart-sync.sh --check
echo "verify: generated files current, chart in sync with config/, gofmt clean"
