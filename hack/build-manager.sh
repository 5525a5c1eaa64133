#!/usr/bin/env bash
# Builds the release manager binary: static (CGO_ENABLED=0), -trimpath, no
# VCS stamp, version and git revision injected into internal/version. The
# Dockerfile and `make build-static` both run this script, so the binary in
# the image and the one CI builds come from the same flags by construction.
#
# Usage: hack/build-manager.sh OUTPUT [GOOS [GOARCH]]
#   VERSION   default: the VERSION file (the one place the version lives)
#   REVISION  default: git rev-parse HEAD, "-dirty" when the tree has changes;
#             empty outside a git checkout (the Docker build context has no
#             .git, so make image passes it as a build argument)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
out=${1:?usage: hack/build-manager.sh OUTPUT [GOOS [GOARCH]]}
goos=${2:-$(go env GOOS)}
goarch=${3:-$(go env GOARCH)}
version=${VERSION:-$(cat VERSION)}
revision=${REVISION:-}
if [[ -z $revision ]] && revision=$(git rev-parse HEAD 2>/dev/null); then
  git diff --quiet HEAD 2>/dev/null || revision+=-dirty
fi
pkg=github.com/ksmscale/ksm-scale-operator/internal/version
# -buildvcs=false: the revision is injected; without it a build inside a
# checkout would embed VCS data the Docker build cannot, and the two
# binaries would differ.
GOTOOLCHAIN=local CGO_ENABLED=0 GOOS=$goos GOARCH=$goarch \
  go build -trimpath -buildvcs=false \
  -ldflags "-s -w -X $pkg.Version=$version -X $pkg.Revision=$revision" \
  -o "$out" ./cmd
echo "built $out ($goos/$goarch, $version, revision ${revision:-unknown})"
