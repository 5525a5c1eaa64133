#!/usr/bin/env bash
# Builds the manager image from the Dockerfile with the first container
# builder that works here: $CONTAINER_TOOL if set, else docker, podman,
# buildah. A docker CLI without a reachable daemon does not count. Fails with
# a message saying so when there is none; CI without a builder still checks
# the same binary through make build-static.
#
# Usage: hack/image.sh IMAGE VERSION [REVISION]
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
img=${1:?usage: hack/image.sh IMAGE VERSION [REVISION]}
version=${2:?usage: hack/image.sh IMAGE VERSION [REVISION]}
revision=${3:-$(git rev-parse HEAD 2>/dev/null || true)}

works() {
  command -v "$1" >/dev/null || return 1
  case $1 in
    docker) docker info >/dev/null 2>&1 ;;
    podman) podman info >/dev/null 2>&1 ;;
    *) return 0 ;;
  esac
}

tool=${CONTAINER_TOOL:-}
if [[ -z $tool ]]; then
  for t in docker podman buildah; do
    if works "$t"; then tool=$t; break; fi
  done
fi
if [[ -z $tool ]] || ! works "$tool"; then
  {
    echo "make image: no working container builder (tried ${CONTAINER_TOOL:-docker, podman, buildah})."
    command -v docker >/dev/null && echo "  docker is installed but 'docker info' fails: is the daemon running and reachable?"
    echo "  Install one, or set CONTAINER_TOOL. 'make build-static' builds the same binary without one."
  } >&2
  exit 2
fi

args=(--build-arg "VERSION=$version" --build-arg "REVISION=$revision" -t "$img" .)
echo "building $img with $tool"
case $tool in
  buildah) buildah bud "${args[@]}" ;;
  *) "$tool" build "${args[@]}" ;;
esac
