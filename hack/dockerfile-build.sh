#!/usr/bin/env bash
# Checks, without a container engine, that the image's binary is the one
# make build-static builds: runs the Dockerfile's builder stage by hand
# (copies exactly what its COPY lines copy, no .git and nothing else, into an
# empty directory and runs the same hack/build-manager.sh there), builds the
# same platform in the checkout, and compares the two binaries byte for byte.
# Fails when the Dockerfile misses a directory the binary needs, or when the
# two builds' flags drift apart.
#
# Usage: hack/dockerfile-build.sh [GOARCH]   (default amd64)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
arch=${1:-amd64}
ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
# COPY <src>... <dest> lines of the builder stage (not COPY --from=...).
while read -r -a words; do
  dest=${words[-1]}
  for src in "${words[@]:1:${#words[@]}-2}"; do
    mkdir -p "$ctx/$dest"
    # Docker's semantics: a directory's contents go into dest.
    if [[ -d $src ]]; then cp -R "$src/." "$ctx/$dest"; else cp "$src" "$ctx/$dest"; fi
  done
done < <(grep -E '^COPY ' Dockerfile | grep -v -- '--from=')
# A fixed revision: the Docker context cannot know the commit.
export REVISION=dockerfile-check
(cd "$ctx" && hack/build-manager.sh "$ctx/manager.image" linux "$arch")
hack/build-manager.sh "$ctx/manager.checkout" linux "$arch"
if ! cmp -s "$ctx/manager.image" "$ctx/manager.checkout"; then
  echo "the Dockerfile's build and make build-static differ for linux/$arch" >&2
  exit 1
fi
echo "Dockerfile build context and make build-static give the same linux/$arch binary"
