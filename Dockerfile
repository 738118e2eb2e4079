# syntax=docker/dockerfile:1
# One image for both controllers:
#   driftless source-controller ...   (artifacts in /data, a volume)
#   driftless apply-controller ...    (kustomize at /usr/local/bin/kustomize, KUSTOMIZE_PATH)
# Build: docker build -t <registry>/driftless:<tag> .   (BuildKit: the cache mounts below)
# The runtime stage is distroless (glibc, libgcc, CA certificates, no shell), runs as the numeric
# non-root user 65532 and needs nothing writable but /data and /tmp, so it runs with a
# read-only root filesystem; the Helm chart mounts both.

ARG RUST_VERSION=1.95
ARG GO_VERSION=1.26
# The kustomize CLI the apply-controller runs; v5.8.1 is on sigs.k8s.io/kustomize/api v0.21.1,
# the API Flux's kustomize-controller v1.9 builds with (the same pin as hack/testbin.sh).
ARG KUSTOMIZE_VERSION=5.8.1

# kustomize/v5 has no local replace directives, so `go install module@version` builds the
# release's own dependency versions. CGO off: a static binary that needs nothing from the runtime.
FROM golang:${GO_VERSION}-bookworm AS kustomize
ARG KUSTOMIZE_VERSION
ENV CGO_ENABLED=0 GOFLAGS=-trimpath
RUN --mount=type=cache,target=/root/.cache/go-build \
    --mount=type=cache,target=/go/pkg/mod \
    go install -ldflags="-s -w" "sigs.k8s.io/kustomize/kustomize/v5@v${KUSTOMIZE_VERSION}" \
    && /go/bin/kustomize version

# Bookworm, like the runtime stage: the binary links against the glibc it is run with.
FROM rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
# The registry and target directories are cache mounts (kept between builds, not in the layer),
# so the binary is copied out of target/ in the same step. --locked: exactly Cargo.lock.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin driftless \
    && install -D -m 0755 target/release/driftless /out/driftless \
    && install -d -m 0750 -o 65532 -g 65532 /out/data

FROM gcr.io/distroless/cc-debian12:nonroot
LABEL org.opencontainers.image.title="driftless" \
      org.opencontainers.image.description="Gitless GitOps source and apply controllers for Kubernetes, wire-compatible with Flux" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=kustomize /go/bin/kustomize /usr/local/bin/kustomize
COPY --from=build /out/driftless /usr/local/bin/driftless
# The source-controller's storage (--storage-path defaults to /data); a volume so that it stays
# writable under a read-only root filesystem (the chart mounts an emptyDir or a PVC there). It is
# owned by 65532 because a volume that `docker run` creates copies the image's directory,
# owner included; distroless has no shell to chown it, so it comes from the build stage.
# Temporary files (OCI layers being extracted, artifacts being applied) go to /tmp, which the
# chart mounts as an emptyDir for the same reason.
COPY --from=build --chown=65532:65532 /out/data /data
ENV KUSTOMIZE_PATH=/usr/local/bin/kustomize
VOLUME ["/data"]
# 65532 is distroless's "nonroot"; numeric, so runAsNonRoot can check it without /etc/passwd.
USER 65532:65532
# 9090: artifacts (source-controller), 8080: metrics, 9440: /healthz and /readyz.
EXPOSE 9090 8080 9440
ENTRYPOINT ["/usr/local/bin/driftless"]
CMD ["--help"]
