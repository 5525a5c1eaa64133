#!/usr/bin/env bash
# The project's test command (make test): builds the pinned control plane
# and kube-state-metrics into bin/ when missing, then vets, builds the static
# release binary for linux/amd64 and linux/arm64 as the Dockerfile does, runs
# the promtool rule tests, verifies generated files (and the Helm chart's
# copies of them) and runs the unit, chart (helm lint/template),
# integration, local-cluster and e2e
# tests (build tag e2e: the operator binary against a 300-node kwok cluster,
# real kube-state-metrics processes, faults) against real kube-apiserver and
# etcd binaries.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
export GOTOOLCHAIN=local
export KUBEBUILDER_ASSETS=$ROOT/bin

hack/build-tools.sh controller-gen etcd kubernetes kwok kube-state-metrics prometheus-operator-crds helm prometheus
echo "== go vet"
go vet ./...
go vet -tags e2e ./test/e2e/
echo "== release build: static, -trimpath, version injected, linux/amd64 and linux/arm64"
make -s build-static
hack/dockerfile-build.sh
echo "== alerting rules: promtool check rules, promtool test rules"
make -s test-rules
echo "== verify"
hack/verify.sh
echo "== go test"
# One package at a time: the suites each start control planes, and this
# machine class has two cores.
go test -tags e2e -p 1 ./... -count=1 -timeout 40m "$@"
