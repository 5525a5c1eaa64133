# The manager image: a static binary on distroless, running as non-root.
# Build with `make image` (passes VERSION and REVISION), or by hand:
#   docker build --build-arg VERSION=$(cat VERSION) --build-arg REVISION=$(git rev-parse HEAD) \
#     -t ghcr.io/ksmscale/ksm-scale-operator:$(cat VERSION) .
# Multi-arch: docker buildx build --platform linux/amd64,linux/arm64 ... (sets TARGETARCH).
# The binary is built by hack/build-manager.sh, the script make build-static
# runs too, so CI checks exactly these flags.
FROM golang:1.26 AS builder
WORKDIR /workspace
ENV GOTOOLCHAIN=local
COPY go.mod go.sum ./
RUN go mod download
COPY VERSION ./
COPY hack/build-manager.sh hack/
COPY api/ api/
COPY cmd/ cmd/
COPY internal/ internal/
ARG TARGETOS=linux
ARG TARGETARCH=amd64
# Empty VERSION: the script reads the VERSION file copied above.
ARG VERSION=
ARG REVISION=
RUN VERSION=${VERSION} REVISION=${REVISION} hack/build-manager.sh manager ${TARGETOS} ${TARGETARCH}

FROM gcr.io/distroless/static:nonroot
WORKDIR /
COPY --from=builder /workspace/manager .
USER 65532:65532
ENTRYPOINT ["/manager"]
