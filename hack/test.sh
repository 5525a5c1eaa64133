#!/usr/bin/env bash
# The project's test command (make test): builds the pinned control plane
# into bin/ when missing, then vets, verifies generated files and runs the
# unit, integration and local-cluster tests against real kube-apiserver and
# etcd binaries.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
export GOTOOLCHAIN=local
export KUBEBUILDER_ASSETS=$ROOT/bin

hack/build-tools.sh controller-gen etcd kubernetes kwok
echo "== go vet"
go vet ./...
echo "== verify"
hack/verify.sh
echo "== go test"
go test ./... -count=1 -timeout 30m "$@"
