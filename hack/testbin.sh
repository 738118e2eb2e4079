#!/usr/bin/env bash
# Builds the real test components from the Go module proxy into a cache outside the clone:
#   ${DRIFTLESS_TESTBIN:-$HOME/.cache/driftless/testbin}/bin/{kube-apiserver,kubectl,etcd,kustomize,helm}
# A component is rebuilt only when its pinned version changes (a stamp file sits beside it).
# Usage: hack/testbin.sh [kube|etcd|kustomize|helm|all]
set -euo pipefail

K8S_VERSION=${K8S_VERSION:-1.36.3}
ETCD_VERSION=${ETCD_VERSION:-3.6.16}
# kustomize/v5 v5.7.1 is built on sigs.k8s.io/kustomize/api v0.20.1, the API Flux's
# kustomize-controller v1.7 builds with (v1.8 uses api v0.21.1: KUSTOMIZE_VERSION=5.8.1).
KUSTOMIZE_VERSION=${KUSTOMIZE_VERSION:-5.7.1}
# helm v3.22.0, the newest v3 on the module proxy (needs Go >= 1.26.0; built on client-go v0.37),
# for hack/test-chart's lint, template and install of charts/driftless.
HELM_VERSION=${HELM_VERSION:-3.22.0}

TESTBIN=${DRIFTLESS_TESTBIN:-$HOME/.cache/driftless/testbin}
BIN=$TESTBIN/bin
mkdir -p "$BIN" "$TESTBIN/src"
export GOFLAGS=-mod=mod GOTOOLCHAIN=local

log() { printf '[testbin] %s\n' "$*" >&2; }

# is_built NAME VERSION: the binary exists and was built from VERSION.
is_built() { [ -x "$BIN/$1" ] && [ "$(cat "$BIN/.$1.version" 2>/dev/null)" = "$2" ]; }
stamp() { echo "$2" >"$BIN/.$1.version"; }

# k8s.io/kubernetes requires its staging modules at v0.0.0 and replaces them with local paths,
# which a consumer module ignores; replace each with the published v0.<minor>.<patch> instead.
build_kube() {
  if is_built kube-apiserver "$K8S_VERSION" && is_built kubectl "$K8S_VERSION"; then
    log "kube-apiserver and kubectl v$K8S_VERSION already built"; return
  fi
  local dir=$TESTBIN/src/kubernetes-$K8S_VERSION
  mkdir -p "$dir" && cd "$dir"
  if [ ! -f go.mod ]; then
    go mod init driftless.testbin/kubernetes >/dev/null 2>&1
    local upstream
    upstream=$(go mod download -json "k8s.io/kubernetes@v$K8S_VERSION" |
      python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')
    local m
    for m in $(awk '$1 ~ /^k8s\.io\// && $2 == "v0.0.0" {print $1}' "$upstream"); do
      go mod edit -replace="$m=$m@v0.${K8S_VERSION#1.}"
    done
    go mod edit -require="k8s.io/kubernetes@v$K8S_VERSION"
  fi
  log "building kube-apiserver and kubectl v$K8S_VERSION (cold: several minutes)"
  go get "k8s.io/kubernetes/cmd/kube-apiserver@v$K8S_VERSION" "k8s.io/kubernetes/cmd/kubectl@v$K8S_VERSION"
  go build -trimpath -ldflags "-s -w -X k8s.io/component-base/version.gitVersion=v$K8S_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=${K8S_VERSION#1.}" \
    -o "$BIN/kube-apiserver.tmp" k8s.io/kubernetes/cmd/kube-apiserver
  mv "$BIN/kube-apiserver.tmp" "$BIN/kube-apiserver" && stamp kube-apiserver "$K8S_VERSION"
  go build -trimpath -ldflags "-s -w -X k8s.io/client-go/pkg/version.gitVersion=v$K8S_VERSION -X k8s.io/component-base/version.gitVersion=v$K8S_VERSION" \
    -o "$BIN/kubectl.tmp" k8s.io/kubernetes/cmd/kubectl
  mv "$BIN/kubectl.tmp" "$BIN/kubectl" && stamp kubectl "$K8S_VERSION"
}

# The etcd binary's main package lives in the root module, whose go.mod replaces its siblings
# with local paths; a two-line main over server/v3's etcdmain builds the same server.
build_etcd() {
  if is_built etcd "$ETCD_VERSION"; then log "etcd v$ETCD_VERSION already built"; return; fi
  local dir=$TESTBIN/src/etcd-$ETCD_VERSION
  mkdir -p "$dir" && cd "$dir"
  if [ ! -f go.mod ]; then
    go mod init driftless.testbin/etcd >/dev/null 2>&1
    cat >main.go <<'GO'
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
GO
  fi
  log "building etcd v$ETCD_VERSION"
  go get "go.etcd.io/etcd/server/v3@v$ETCD_VERSION"
  go mod tidy
  go build -trimpath -ldflags "-s -w" -o "$BIN/etcd.tmp" .
  mv "$BIN/etcd.tmp" "$BIN/etcd" && stamp etcd "$ETCD_VERSION"
}

# The kustomize CLI's module has no local replaces, so a consumer module that requires it
# resolves the same dependency versions as its release; `kustomize version` reads v$KUSTOMIZE_VERSION
# from the build info's dependency list.
build_kustomize() {
  if is_built kustomize "$KUSTOMIZE_VERSION"; then log "kustomize v$KUSTOMIZE_VERSION already built"; return; fi
  local dir=$TESTBIN/src/kustomize-$KUSTOMIZE_VERSION
  mkdir -p "$dir" && cd "$dir"
  [ -f go.mod ] || go mod init driftless.testbin/kustomize >/dev/null 2>&1
  log "building kustomize v$KUSTOMIZE_VERSION"
  go get "sigs.k8s.io/kustomize/kustomize/v5@v$KUSTOMIZE_VERSION"
  go build -trimpath -ldflags "-s -w" -o "$BIN/kustomize.tmp" sigs.k8s.io/kustomize/kustomize/v5
  mv "$BIN/kustomize.tmp" "$BIN/kustomize" && stamp kustomize "$KUSTOMIZE_VERSION"
}

# helm's module has no local replaces either, so a consumer module resolves the release's own
# dependency versions. The ldflags are those of helm's Makefile: without them `helm version`
# says "v3.22" and lint/template render for Kubernetes v1.20 (chartutil's fallback) instead of
# the version of the client-go helm is built on (v0.x -> 1.x, as the Makefile does).
build_helm() {
  if is_built helm "$HELM_VERSION"; then log "helm v$HELM_VERSION already built"; return; fi
  local dir=$TESTBIN/src/helm-$HELM_VERSION
  mkdir -p "$dir" && cd "$dir"
  [ -f go.mod ] || go mod init driftless.testbin/helm >/dev/null 2>&1
  log "building helm v$HELM_VERSION"
  go get "helm.sh/helm/v3@v$HELM_VERSION"
  local k8s major=1 minor
  k8s=$(go list -m -f '{{.Version}}' k8s.io/client-go) # v0.37.0 -> Kubernetes 1.37
  k8s=${k8s#v0.}; minor=${k8s%%.*}
  local x=helm.sh/helm/v3
  go build -trimpath -ldflags "-s -w -X $x/internal/version.version=v$HELM_VERSION \
    -X $x/pkg/lint/rules.k8sVersionMajor=$major -X $x/pkg/lint/rules.k8sVersionMinor=$minor \
    -X $x/pkg/chartutil.k8sVersionMajor=$major -X $x/pkg/chartutil.k8sVersionMinor=$minor" \
    -o "$BIN/helm.tmp" helm.sh/helm/v3/cmd/helm
  mv "$BIN/helm.tmp" "$BIN/helm" && stamp helm "$HELM_VERSION"
}

case "${1:-all}" in
  kube) build_kube ;;
  etcd) build_etcd ;;
  kustomize) build_kustomize ;;
  helm) build_helm ;;
  all) build_etcd; build_kube; build_kustomize; build_helm ;;
  *) echo "usage: $0 [kube|etcd|kustomize|helm|all]" >&2; exit 2 ;;
esac
