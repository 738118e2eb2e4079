#!/usr/bin/env bash
# A CI job for Gitless GitOps: render, validate, push, sign. The cluster then pulls exactly the
# digest this job printed. Run from the repository root of your configuration.
#
# Needs: driftless (this project), kustomize, kubeconform (or any schema validator), cosign.
# Env: REGISTRY (e.g. ghcr.io/acme); COSIGN_KEY (a cosign.key file) and COSIGN_PASSWORD, or
# neither for keyless signing.
set -euo pipefail

app=${APP:-podinfo}
env=${ENVIRONMENT:-production}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

# 1. Render: everything dynamic happens here, in CI, not in the cluster.
kustomize build "overlays/$env" >"$out/manifests.yaml"

# 2. Validate what will be applied, exactly.
kubeconform -strict -summary "$out/manifests.yaml"

# 3. Push as a Flux artifact; the revision ties it to the commit that produced it.
digest=$(driftless artifact push "oci://$REGISTRY/manifests/$app:$env" \
  --path "$out" \
  --source "$(git config --get remote.origin.url)" \
  --revision "$(git rev-parse --abbrev-ref HEAD)@sha1:$(git rev-parse HEAD)" \
  --annotations "org.opencontainers.image.description=$app for $env" \
  --output json | jq -r .digest)
echo "pushed oci://$REGISTRY/manifests/$app@$digest"

# 4. Sign by digest, so what the cluster verifies is what was validated. With a key (the
#    OCIRepository's verify.secretRef holds cosign.pub); or, unset COSIGN_KEY on a CI with OIDC
#    (GitHub Actions `id-token: write`), keyless: a Fulcio certificate for the workflow and a Rekor
#    entry, which driftless checks offline (examples/ocirepository-keyless.yaml).
if [ -n "${COSIGN_KEY:-}" ]; then
  cosign sign --key "$COSIGN_KEY" --tlog-upload=false -y "$REGISTRY/manifests/$app@$digest"
else
  cosign sign -y "$REGISTRY/manifests/$app@$digest"
fi

# 5. Optionally show what changed against what is deployed now.
driftless artifact diff "oci://$REGISTRY/manifests/$app:$env-previous" "oci://$REGISTRY/manifests/$app@$digest" || true
