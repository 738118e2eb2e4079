#!/usr/bin/env bash
# Builds the real test components from the Go module proxy into a cache outside the clone:
#   ${DRIFTLESS_TESTBIN:-$HOME/.cache/driftless/testbin}/bin/{kube-apiserver,kubectl,etcd,kustomize,helm,cosign}
#   .../bin/referrers-registry (hack/referrers-registry: an OCI registry with the referrers API)
# and, on request only (not part of `all`), cosign v3 and the Flux peers:
#   .../bin/{cosign3,kustomize-controller,source-controller,helm-controller,flux}
# and the Sigstore services cosign v3 signs against (a Rekor v2 log and an RFC 3161 TSA):
#   .../bin/{rekor-tiles-server,timestamp-server}
# A component is rebuilt only when its pinned version changes (a stamp file sits beside it).
# Usage: hack/testbin.sh [kube|etcd|kustomize|helm|referrers-registry|spiffe-workload-api|toxiproxy|all|cosign|cosign3|flux-kustomize-controller|flux-source-controller|helm-controller|flux-helm-controller|flux|peers|rekor-tiles|timestamp-authority|notation]
# See hack/PEERS.md for how tests drive cosign and the Flux peers.
set -euo pipefail

# v1.37.2 and v3.6.17: the newest v1.37 and v3.6 patches the module proxy serves (v1.37.3 and
# v3.6.18 and later are refused).
K8S_VERSION=${K8S_VERSION:-1.37.2}
ETCD_VERSION=${ETCD_VERSION:-3.6.17}
# kustomize/v5 v5.8.1 is built on sigs.k8s.io/kustomize/api v0.21.1, the API Flux's
# kustomize-controller v1.9 builds with.
KUSTOMIZE_VERSION=${KUSTOMIZE_VERSION:-5.8.1}
# helm v3.22.0, the newest v3 on the module proxy (needs Go >= 1.26.0; built on client-go v0.37),
# for hack/test-chart's lint, template and install of charts/driftless.
HELM_VERSION=${HELM_VERSION:-3.22.0}
# cosign v2 writes the legacy `sha256-<hex>.sig` signature tags that Flux has always verified;
# v2.6.5 is the newest v2 the module proxy serves. cosign3 (binary `cosign3`) writes Sigstore
# bundles by default (OCI referrers, or the `sha256-<hex>` tag-schema fallback).
COSIGN_VERSION=${COSIGN_VERSION:-2.6.5}
COSIGN3_VERSION=${COSIGN3_VERSION:-3.1.3}
# The Flux peers are Flux 2.9's, the newest that build from the module proxy. Flux 2.10's do not:
# source-controller and kustomize-controller v1.10.x need fluxcd/pkg/apis/crypto and
# fluxcd/pkg/spiffe, of which the proxy serves no version at all, and it refuses flux2 v2.10.x
# and helm-controller v1.7.x outright (hack/PEERS.md). source-controller and kustomize-controller
# v1.9.6 are the newest v1.9 served (flux2 v2.9.5 ships v1.9.5), helm-controller v1.6.4 is the one
# flux2 v2.9.5 ships (v1.6.5 is refused), flux2 v2.9.5 the newest served.
FLUX_KC_VERSION=${FLUX_KC_VERSION:-1.9.6}
FLUX_SC_VERSION=${FLUX_SC_VERSION:-1.9.6}
FLUX_HC_VERSION=${FLUX_HC_VERSION:-1.6.4}
FLUX_VERSION=${FLUX_VERSION:-2.9.5}
# Dependencies the module proxy refuses (403 on the .zip), each replaced in the consumer module by
# the nearest version it serves, keyed by NAME@VERSION. The peer's own source builds unchanged.
# source-controller v1.9.6 requires fluxcd/pkg/artifact v0.18.3 (v0.18.2 is refused too).
declare -A REFUSED_REPLACES=(
  [source-controller@1.9.6]="github.com/fluxcd/pkg/artifact=github.com/fluxcd/pkg/artifact@v0.18.1"
)
# The toolchain for a module whose go.mod needs a newer Go than the local one (Flux 2.10's
# controllers say `go 1.27.0`); the go command fetches it from the module proxy, once.
GO_NEXT_TOOLCHAIN=${GO_NEXT_TOOLCHAIN:-go1.27.3}
# hack/referrers-registry is built on go-containerregistry's pkg/registry; v0.21.7 is the
# version cosign v3.1.3 builds with.
GGCR_VERSION=${GGCR_VERSION:-0.21.7}
# go-spiffe v2.9.0: its generated Workload API protobufs serve the test platform's SPIFFE
# Workload API (hack/spiffe-workload-api; SPIRE's module is served but not an approved release).
GO_SPIFFE_VERSION=${GO_SPIFFE_VERSION:-2.9.0}
# Toxiproxy v2.5.0 (the newest the module proxy serves): the network fault injector of
# tests/faults.rs, in front of the registry.
TOXIPROXY_VERSION=${TOXIPROXY_VERSION:-2.5.0}
# SOPS: the real sops CLI encrypts every fixture of the Kustomization decryption tests, with age
# keys from age-keygen (filippo.io/age) and PGP keys from Debian's gpg.
SOPS_VERSION=${SOPS_VERSION:-3.13.3}
AGE_VERSION=${AGE_VERSION:-1.3.2}
# HashiCorp Vault (a dev server with the transit engine) for the SOPS Vault keys; OpenBao is not
# served by the module proxy. See "Vault" in hack/PEERS.md for why its SDK needs two edits.
VAULT_VERSION=${VAULT_VERSION:-1.21.4}
VAULT_SDK_BASE=${VAULT_SDK_BASE:-0.21.0}
VAULT_SDK_FIX=${VAULT_SDK_FIX:-0.25.1}
# The Rekor v2 log (rekor-tiles, POSIX/Tessera backend) and the timestamp authority, at the
# versions cosign v3.1.3's go.mod requires (its client libraries for both services).
REKOR_TILES_VERSION=${REKOR_TILES_VERSION:-2.3.0}
TSA_VERSION=${TSA_VERSION:-2.1.2}
# notation, the Notary Project CLI, for the `verify.provider: notation` tests. The proxy serves
# v1.3.2's .info/.mod/.zip but answers 403 to @v/list, so it is built from the pinned module in
# hack/peers/notation (go.mod, go.sum: upstream v1.3.2's own requirements and sums, with
# notation's `go 1.23.0` line, which sets the binary's GODEBUG defaults as in its release).
# NOTATION_COMMIT is the tag's commit (Origin.Hash in the proxy's v1.3.2.info).
NOTATION_VERSION=1.3.2
NOTATION_COMMIT=001cc919603c1dc16c6aad387c94b4209cb9c901

TESTBIN=${DRIFTLESS_TESTBIN:-$HOME/.cache/driftless/testbin}
BIN=$TESTBIN/bin
HACK=$(cd "$(dirname "$0")" && pwd) # before the builds cd elsewhere
mkdir -p "$BIN" "$TESTBIN/src"
# One build at a time per cache: two clones (or a test and `make demo`) that start together
# would otherwise both build every component, and race on the same output files.
exec 9>"$TESTBIN/.build.lock"
flock 9
export GOFLAGS=-mod=mod GOTOOLCHAIN=local

log() { printf '[testbin] %s\n' "$*" >&2; }

# is_built NAME VERSION: the binary exists and was built from VERSION.
is_built() { [ -x "$BIN/$1" ] && [ "$(cat "$BIN/.$1.version" 2>/dev/null)" = "$2" ]; }
stamp() { echo "$2" >"$BIN/.$1.version"; }

# gomod MODULE VERSION: the path of MODULE@VERSION's go.mod in the module cache. Run outside the
# consumer module, whose go.mod (once built with $GO_NEXT_TOOLCHAIN) the local Go may refuse.
gomod() { (cd "$TESTBIN" && go mod download -json "$1@$2") | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])'; }

# go_toolchain MODULE VERSION: the GOTOOLCHAIN for building MODULE@VERSION: `local` when the local
# Go is at least the `go` line of its go.mod, else $GO_NEXT_TOOLCHAIN (GOTOOLCHAIN=local is kept
# for everything else, so no build switches toolchains behind our back).
go_toolchain() {
  local need have
  need=$(go mod edit -json "$(gomod "$1" "$2")" | python3 -c 'import json,sys; print(json.load(sys.stdin).get("Go") or "0")')
  have=$(go env GOVERSION); have=${have#go}
  if [ "$(printf '%s\n' "$need" "$have" | sort -V | head -1)" = "$need" ]; then echo local; else echo "$GO_NEXT_TOOLCHAIN"; fi
}

# refused_replaces NAME VERSION: replace the dependencies the proxy refuses (REFUSED_REPLACES).
refused_replaces() {
  local r
  for r in ${REFUSED_REPLACES[$1@$2]:-}; do go mod edit -replace="$r"; done
}

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
  local tc
  tc=$(go_toolchain k8s.io/kubernetes "v$K8S_VERSION")
  log "building kube-apiserver and kubectl v$K8S_VERSION with Go $tc (cold: several minutes)"
  GOTOOLCHAIN=$tc go get "k8s.io/kubernetes/cmd/kube-apiserver@v$K8S_VERSION" "k8s.io/kubernetes/cmd/kubectl@v$K8S_VERSION"
  GOTOOLCHAIN=$tc go build -trimpath -ldflags "-s -w -X k8s.io/component-base/version.gitVersion=v$K8S_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=${K8S_VERSION#1.}" \
    -o "$BIN/kube-apiserver.tmp" k8s.io/kubernetes/cmd/kube-apiserver
  mv "$BIN/kube-apiserver.tmp" "$BIN/kube-apiserver" && stamp kube-apiserver "$K8S_VERSION"
  GOTOOLCHAIN=$tc go build -trimpath -ldflags "-s -w -X k8s.io/client-go/pkg/version.gitVersion=v$K8S_VERSION -X k8s.io/component-base/version.gitVersion=v$K8S_VERSION" \
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
  local tc
  tc=$(go_toolchain go.etcd.io/etcd/server/v3 "v$ETCD_VERSION")
  log "building etcd v$ETCD_VERSION with Go $tc"
  GOTOOLCHAIN=$tc go get "go.etcd.io/etcd/server/v3@v$ETCD_VERSION"
  GOTOOLCHAIN=$tc go mod tidy
  GOTOOLCHAIN=$tc go build -trimpath -ldflags "-s -w" -o "$BIN/etcd.tmp" .
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

# hack/referrers-registry/main.go (the one file in the clone) is copied into a consumer module
# that requires go-containerregistry; the stamp holds the ggcr version and the source's hash, so
# an edit of main.go rebuilds it too.
build_referrers_registry() {
  local src=$HACK/referrers-registry/main.go dir=$TESTBIN/src/referrers-registry version
  version="ggcr-v$GGCR_VERSION $(sha256sum "$src" | cut -c1-16)"
  if is_built referrers-registry "$version"; then log "referrers-registry ($version) already built"; return; fi
  mkdir -p "$dir" && cd "$dir"
  [ -f go.mod ] || go mod init driftless.testbin/referrers-registry >/dev/null 2>&1
  cp "$src" main.go
  log "building referrers-registry ($version)"
  go get "github.com/google/go-containerregistry@v$GGCR_VERSION"
  go mod tidy
  CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$BIN/referrers-registry.tmp" .
  mv "$BIN/referrers-registry.tmp" "$BIN/referrers-registry" && stamp referrers-registry "$version"
}

# hack/spiffe-workload-api/main.go, built the same way on go-spiffe.
build_spiffe_workload_api() {
  local src=$HACK/spiffe-workload-api/main.go dir=$TESTBIN/src/spiffe-workload-api version
  version="go-spiffe-v$GO_SPIFFE_VERSION $(sha256sum "$src" | cut -c1-16)"
  if is_built spiffe-workload-api "$version"; then log "spiffe-workload-api ($version) already built"; return; fi
  mkdir -p "$dir" && cd "$dir"
  [ -f go.mod ] || go mod init driftless.testbin/spiffe-workload-api >/dev/null 2>&1
  cp "$src" main.go
  log "building spiffe-workload-api ($version)"
  go get "github.com/spiffe/go-spiffe/v2@v$GO_SPIFFE_VERSION"
  go mod tidy
  CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$BIN/spiffe-workload-api.tmp" .
  mv "$BIN/spiffe-workload-api.tmp" "$BIN/spiffe-workload-api" && stamp spiffe-workload-api "$version"
}

# toxiproxy-server from github.com/Shopify/toxiproxy/v2's cmd/server.
build_toxiproxy() {
  local name=toxiproxy-server pkg=github.com/Shopify/toxiproxy/v2/cmd/server version=$TOXIPROXY_VERSION
  if is_built "$name" "$version"; then log "$name v$version already built"; return; fi
  local dir=$TESTBIN/src/$name-$version
  mkdir -p "$dir" && cd "$dir"
  [ -f go.mod ] || go mod init "driftless.testbin/$name" >/dev/null 2>&1
  log "building $name v$version"
  go get "github.com/Shopify/toxiproxy/v2@v$version"
  CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$BIN/$name.tmp" "$pkg"
  mv "$BIN/$name.tmp" "$BIN/$name" && stamp "$name" "$version"
}

# copy_replaces MODULE VERSION: a dependency's replace directives are ignored, so copy the
# upstream go.mod's module-to-module replaces into the consumer module. Replaces by a local path
# (`.../api => ./api`) are left out: the consumer requires the separately tagged module instead,
# at the version the upstream go.mod requires.
copy_replaces() {
  local r
  for r in $(go mod edit -json "$(gomod "$1" "$2")" | python3 -c '
import json, sys
for r in json.load(sys.stdin).get("Replace") or []:
    new = r["New"]
    if "Version" not in new:
        continue  # local path
    old = r["Old"]["Path"] + ("@" + r["Old"]["Version"] if r["Old"].get("Version") else "")
    print(old + "=" + new["Path"] + "@" + new["Version"])'); do
    go mod edit -replace="$r"
  done
}

# The peers are built with CGO_ENABLED=0, as their upstream release builds are.
# cosign's go.mod has no replaces. `cosign version` reads sigs.k8s.io/release-utils' variables,
# set here as cosign's Makefile does.
build_cosign() { # NAME MAJOR VERSION
  local name=$1 major=$2 version=$3
  if is_built "$name" "$version"; then log "$name v$version already built"; return; fi
  local dir=$TESTBIN/src/cosign-$version
  mkdir -p "$dir" && cd "$dir"
  [ -f go.mod ] || go mod init driftless.testbin/cosign >/dev/null 2>&1
  log "building $name v$version (cold: a few minutes)"
  go get "github.com/sigstore/cosign/$major/cmd/cosign@v$version"
  CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X sigs.k8s.io/release-utils/version.gitVersion=v$version \
    -X sigs.k8s.io/release-utils/version.gitTreeState=clean" \
    -o "$BIN/$name.tmp" "github.com/sigstore/cosign/$major/cmd/cosign"
  mv "$BIN/$name.tmp" "$BIN/$name" && stamp "$name" "$version"
}

# A Sigstore server whose main package lives in its own module, which has no replaces: a
# consumer module requiring it resolves the release's dependency versions (checked: rekor-tiles
# v2.3.0, 181 requires, 0 mismatches; timestamp-authority v2.1.2, 156, 0). `version` reads release-utils.
build_sigstore_server() { # NAME PACKAGE VERSION
  local name=$1 pkg=$2 version=$3
  if is_built "$name" "$version"; then log "$name v$version already built"; return; fi
  local dir=$TESTBIN/src/$name-$version
  mkdir -p "$dir" && cd "$dir"
  [ -f go.mod ] || go mod init "driftless.testbin/$name" >/dev/null 2>&1
  log "building $name v$version"
  go get "$pkg@v$version"
  CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X sigs.k8s.io/release-utils/version.gitVersion=v$version \
    -X sigs.k8s.io/release-utils/version.gitTreeState=clean" -o "$BIN/$name.tmp" "$pkg"
  mv "$BIN/$name.tmp" "$BIN/$name" && stamp "$name" "$version"
}

# A Flux controller's main package is its module root, and its go.mod replaces its api module
# with ./api and pins go-digest (and kustomize's api/kyaml) by replace: a consumer module with
# the non-local replaces copied resolves the release's own dependency versions, except for the
# dependencies the proxy refuses (REFUSED_REPLACES).
build_flux_controller() { # NAME VERSION
  local name=$1 version=$2 module=github.com/fluxcd/$1
  if is_built "$name" "$version"; then log "$name v$version already built"; return; fi
  local dir=$TESTBIN/src/$name-$version
  mkdir -p "$dir" && cd "$dir"
  if [ ! -f go.mod ]; then
    go mod init "driftless.testbin/$name" >/dev/null 2>&1
    copy_replaces "$module" "v$version"
    refused_replaces "$name" "$version"
  fi
  local tc
  tc=$(go_toolchain "$module" "v$version")
  log "building $name v$version with Go $tc (cold: several minutes)"
  GOTOOLCHAIN=$tc go get "$module@v$version"
  CGO_ENABLED=0 GOTOOLCHAIN=$tc go build -trimpath -ldflags "-s -w" -o "$BIN/$name.tmp" "$module"
  mv "$BIN/$name.tmp" "$BIN/$name" && stamp "$name" "$version"
}

# The flux CLI embeds cmd/flux/manifests/*.yaml (`//go:embed`), which upstream generates with
# `make` from GitHub downloads and .gitignores, so the module zip has none and a plain build fails
# "pattern manifests/*.yaml: no matching files found" (and `go build -overlay` may not add files
# under GOMODCACHE). So the consumer module replaces flux2 with a writable copy of the module zip
# plus one placeholder manifest. Every command works except those that write the embedded install
# manifests: `flux install` without --manifests, and `flux bootstrap`.
build_flux() {
  if is_built flux "$FLUX_VERSION"; then log "flux v$FLUX_VERSION already built"; return; fi
  local dir=$TESTBIN/src/flux-$FLUX_VERSION module=github.com/fluxcd/flux2/v2
  mkdir -p "$dir" && cd "$dir"
  if [ ! -f flux2/cmd/flux/manifests/placeholder.yaml ]; then
    rm -rf go.mod go.sum flux2
    go mod init driftless.testbin/flux >/dev/null 2>&1
    copy_replaces "$module" "v$FLUX_VERSION"
    refused_replaces flux "$FLUX_VERSION"
    local src
    src=$(go mod download -json "$module@v$FLUX_VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')
    cp -r "$src" flux2 && chmod -R u+w flux2
    mkdir -p flux2/cmd/flux/manifests
    printf '# placeholder: no install manifests embedded (hack/testbin.sh)\n' >flux2/cmd/flux/manifests/placeholder.yaml
    go mod edit -replace="$module=./flux2" -require="$module@v$FLUX_VERSION"
  fi
  local tc
  tc=$(go_toolchain "$module" "v$FLUX_VERSION")
  log "building flux v$FLUX_VERSION with Go $tc (cold: several minutes)"
  GOTOOLCHAIN=$tc go get "$module/cmd/flux@v$FLUX_VERSION"
  CGO_ENABLED=0 GOTOOLCHAIN=$tc go build -trimpath -ldflags "-s -w -X main.VERSION=$FLUX_VERSION" -o "$BIN/flux.tmp" "$module/cmd/flux"
  mv "$BIN/flux.tmp" "$BIN/flux" && stamp flux "$FLUX_VERSION"
}

# build_go_command NAME MODULE PACKAGE VERSION: a command whose module has no local replaces,
# built in a consumer module, so the release's own dependency versions resolve.
build_go_command() {
  local name=$1 module=$2 package=$3 version=$4 tc
  if is_built "$name" "$version"; then log "$name v$version already built"; return; fi
  local dir=$TESTBIN/src/$name-$version
  mkdir -p "$dir" && cd "$dir"
  [ -f go.mod ] || go mod init "driftless.testbin/$name" >/dev/null 2>&1
  tc=$(go_toolchain "$module" "v$version")
  log "building $name v$version with Go $tc"
  GOTOOLCHAIN=$tc go get "$package@v$version"
  CGO_ENABLED=0 GOTOOLCHAIN=$tc go build -trimpath -ldflags "-s -w" -o "$BIN/$name.tmp" "$package"
  mv "$BIN/$name.tmp" "$BIN/$name" && stamp "$name" "$version"
}

# Vault's go.mod replaces its own submodules with directories of its repository (not in the
# module zip): the consumer module names served versions instead. No served SDK tag matches
# 1.21.4's in-tree SDK, so v0.21.0 is taken with two API changes 1.21.4 expects (from the served
# v0.25.1, see hack/PEERS.md). The UI is not built (no `ui` tag).
build_vault() {
  local version=$VAULT_VERSION stampv="$VAULT_VERSION+sdk$VAULT_SDK_BASE" dir sdk base fix
  if is_built vault "$stampv"; then log "vault v$version already built"; return; fi
  dir=$TESTBIN/src/vault-$version sdk=$TESTBIN/src/vault-$version-sdk
  mkdir -p "$dir"
  base=$(cd "$TESTBIN" && go mod download -json "github.com/hashicorp/vault/sdk@v$VAULT_SDK_BASE" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')
  fix=$(cd "$TESTBIN" && go mod download -json "github.com/hashicorp/vault/sdk@v$VAULT_SDK_FIX" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')
  rm -rf "$sdk" && cp -r "$base" "$sdk" && chmod -R u+w "$sdk"
  cp "$fix/helper/keysutil/lock_manager.go" "$sdk/helper/keysutil/lock_manager.go"
  sed -i 's|ActivationFunc func(context.Context, \*logical.Request, string) error|ActivationFunc func(context.Context, *logical.Request) error|' \
    "$sdk/framework/backend.go"
  cd "$dir"
  cat >main.go <<'GO'
// Vault's own main: the CLI, whose `server -dev` the platform runs.
package main

import (
	"os"

	"github.com/hashicorp/vault/command"
)

func main() { os.Exit(command.Run(os.Args[1:])) }
GO
  cat >go.mod <<MOD
module driftless.testbin/vault

go 1.25.3

require github.com/hashicorp/vault v$version

replace (
	github.com/hashicorp/vault/api => github.com/hashicorp/vault/api v1.22.0
	github.com/hashicorp/vault/api/auth/approle => github.com/hashicorp/vault/api/auth/approle v0.1.0
	github.com/hashicorp/vault/api/auth/kubernetes => github.com/hashicorp/vault/api/auth/kubernetes v0.10.0
	github.com/hashicorp/vault/api/auth/userpass => github.com/hashicorp/vault/api/auth/userpass v0.1.0
	github.com/hashicorp/vault/sdk => $sdk
	github.com/99designs/keyring => github.com/Jeffail/keyring v1.2.3
	github.com/ma314smith/signedxml v1.1.1 => github.com/moov-io/signedxml v1.1.1
)
MOD
  log "building vault v$version (a large build: several minutes)"
  # -e: imports of Vault's own tests cannot be resolved from the module zip; they are not built.
  go mod tidy -e >/dev/null 2>&1
  CGO_ENABLED=0 go build -tags vault -trimpath -ldflags "-s -w" -o "$BIN/vault.tmp" .
  mv "$BIN/vault.tmp" "$BIN/vault" && stamp vault "$stampv"
}

build_sops() {
  build_go_command sops github.com/getsops/sops/v3 github.com/getsops/sops/v3/cmd/sops "$SOPS_VERSION"
  build_go_command age-keygen filippo.io/age filippo.io/age/cmd/age-keygen "$AGE_VERSION"
}

# notation from the pinned module, -mod=readonly, with upstream's release ldflags (so `notation
# version` says v1.3.2 and its commit); the stamp hashes the pins, so editing them rebuilds it.
build_notation() {
  local src=$HACK/peers/notation dir=$TESTBIN/src/notation-$NOTATION_VERSION m=github.com/notaryproject/notation version
  grep -q "^require $m v$NOTATION_VERSION\$" "$src/go.mod" ||
    { log "hack/peers/notation/go.mod does not require $m v$NOTATION_VERSION"; return 1; }
  version="$NOTATION_VERSION $(cat "$src/go.mod" "$src/go.sum" | sha256sum | cut -c1-16)"
  if is_built notation "$version"; then log "notation v$NOTATION_VERSION already built"; return; fi
  mkdir -p "$dir" && cd "$dir"
  cp "$src/go.mod" "$src/go.sum" "$src/tools.go" .
  log "building notation v$NOTATION_VERSION"
  CGO_ENABLED=0 GOFLAGS=-mod=readonly go build -trimpath -ldflags "-s -w -X $m/internal/version.Version=v$NOTATION_VERSION \
    -X $m/internal/version.GitCommit=$NOTATION_COMMIT -X $m/internal/version.BuildMetadata=" \
    -o "$BIN/notation.tmp" "$m/cmd/notation"
  mv "$BIN/notation.tmp" "$BIN/notation" && stamp notation "$version"
}

case "${1:-all}" in
  kube) build_kube ;;
  etcd) build_etcd ;;
  kustomize) build_kustomize ;;
  helm) build_helm ;;
  referrers-registry) build_referrers_registry ;;
  all) build_etcd; build_kube; build_kustomize; build_helm; build_cosign cosign v2 "$COSIGN_VERSION"
    build_referrers_registry; build_spiffe_workload_api; build_toxiproxy; build_sops; build_vault ;;
  spiffe-workload-api) build_spiffe_workload_api ;;
  toxiproxy) build_toxiproxy ;;
  sops) build_sops ;;
  vault) build_vault ;;
  # Built on request (cosign v2 is in `all` too: the signing and verification tests use it).
  cosign) build_cosign cosign v2 "$COSIGN_VERSION" ;;
  cosign3) build_cosign cosign3 v3 "$COSIGN3_VERSION" ;;
  flux-kustomize-controller) build_flux_controller kustomize-controller "$FLUX_KC_VERSION" ;;
  flux-source-controller) build_flux_controller source-controller "$FLUX_SC_VERSION" ;;
  helm-controller|flux-helm-controller) build_flux_controller helm-controller "$FLUX_HC_VERSION" ;;
  flux) build_flux ;;
  peers) build_cosign cosign v2 "$COSIGN_VERSION"; build_cosign cosign3 v3 "$COSIGN3_VERSION"
    build_flux_controller kustomize-controller "$FLUX_KC_VERSION"
    build_flux_controller source-controller "$FLUX_SC_VERSION"
    build_flux_controller helm-controller "$FLUX_HC_VERSION"; build_flux ;;
  # Not in `all` or `peers`: see "Rekor v2 and a timestamp authority" in hack/PEERS.md.
  rekor-tiles) build_sigstore_server rekor-tiles-server \
    github.com/sigstore/rekor-tiles/v2/cmd/rekor-server/posix "$REKOR_TILES_VERSION" ;;
  notation) build_notation ;;
  timestamp-authority) build_sigstore_server timestamp-server \
    github.com/sigstore/timestamp-authority/v2/cmd/timestamp-server "$TSA_VERSION" ;;
  *) echo "usage: $0 [kube|etcd|kustomize|helm|referrers-registry|spiffe-workload-api|toxiproxy|sops|vault|all|cosign|cosign3|flux-kustomize-controller|flux-source-controller|helm-controller|flux-helm-controller|flux|peers|rekor-tiles|timestamp-authority|notation]" >&2; exit 2 ;;
esac
