//! Finding a manifest's signatures in its registry, wherever cosign put them: the legacy
//! `sha256-<hex>.sig` tag, and Sigstore bundles attached as OCI referrers (through the referrers
//! API, or the `sha256-<hex>` tag-schema index on registries without it).

use base64::Engine;
use futures::StreamExt;

use super::bundle::{self, Bundle, Content};
use super::cosign::{SIGNATURE_ANNOTATION, SIMPLE_SIGNING_MEDIA_TYPE, signature_tag};
use super::{Candidate, Policy, Unverified, Verified, first_verified};
use crate::source::oci::registry::{
    Descriptor, ImageIndex, ImageManifest, RegistryClient, RegistryError, sha256_digest,
};

const CERTIFICATE_ANNOTATION: &str = "dev.sigstore.cosign/certificate";
const REKOR_BUNDLE_ANNOTATION: &str = "dev.sigstore.cosign/bundle";
/// Largest signature payload or bundle read (real ones are a few KiB).
const MAX_SIGNATURE_BLOB_BYTES: usize = 1024 * 1024;
/// Most signatures of each kind looked at, so a flood of referrers cannot stall a pass.
const MAX_CANDIDATES: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error("{0:?}")]
    Unverified(Unverified),
}

/// Verifies the manifest `digest` of `repo` against `policy`, reading only signatures.
pub async fn verify_manifest(
    client: &RegistryClient,
    repo: &str,
    digest: &str,
    policy: &Policy,
) -> Result<Verified, VerifyError> {
    let mut candidates = signature_tag_candidates(client, repo, digest).await?;
    candidates.extend(bundle_candidates(client, repo, digest).await?);
    // A bundle with a message signature signs the manifest bytes themselves.
    let signs_manifest = candidates.iter().any(
        |c| matches!(c, Candidate::Bundle(Ok(b)) if matches!(b.content, Content::Message { .. })),
    );
    let manifest = if signs_manifest {
        client.get_manifest(repo, digest).await?.bytes.to_vec()
    } else {
        Vec::new()
    };
    first_verified(&candidates, policy, digest, &manifest).map_err(VerifyError::Unverified)
}

async fn signature_tag_candidates(
    client: &RegistryClient,
    repo: &str,
    digest: &str,
) -> Result<Vec<Candidate>, RegistryError> {
    let manifest = match client.get_manifest(repo, &signature_tag(digest)).await {
        Ok(found) => found,
        Err(RegistryError::NotFound { .. }) => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let Ok(manifest) = serde_json::from_slice::<ImageManifest>(&manifest.bytes) else {
        return Ok(Vec::new());
    };
    let mut candidates = Vec::new();
    for layer in manifest
        .layers
        .iter()
        .filter(|l| l.media_type == SIMPLE_SIGNING_MEDIA_TYPE)
        .take(MAX_CANDIDATES)
    {
        let annotation = |key: &str| layer.annotations.as_ref().and_then(|a| a.get(key));
        let Some(signature) = annotation(SIGNATURE_ANNOTATION)
            .and_then(|s| base64::engine::general_purpose::STANDARD.decode(s).ok())
        else {
            continue;
        };
        candidates.push(Candidate::Simple {
            payload: read_small_blob(client, repo, &layer.digest).await?,
            signature,
            certificate: annotation(CERTIFICATE_ANNOTATION).and_then(|pem| {
                crate::util::pem_blocks(pem, "CERTIFICATE")
                    .into_iter()
                    .next()
            }),
            log_entry: annotation(REKOR_BUNDLE_ANNOTATION).map(|b| bundle::legacy_log_entry(b)),
        });
    }
    Ok(candidates)
}

async fn bundle_candidates(
    client: &RegistryClient,
    repo: &str,
    digest: &str,
) -> Result<Vec<Candidate>, RegistryError> {
    let referrers = referrers(client, repo, digest).await?;
    let mut candidates = Vec::new();
    for descriptor in referrers
        .manifests
        .iter()
        .filter(|d| {
            d.artifact_type
                .as_deref()
                .is_some_and(bundle::is_bundle_media_type)
        })
        .take(MAX_CANDIDATES)
    {
        candidates.push(Candidate::Bundle(
            read_bundle(client, repo, descriptor).await?,
        ));
    }
    Ok(candidates)
}

/// The referrers API's answer, or the tag-schema index when the registry lacks the API.
async fn referrers(
    client: &RegistryClient,
    repo: &str,
    digest: &str,
) -> Result<ImageIndex, RegistryError> {
    if let Some(index) = client.referrers(repo, digest).await? {
        return Ok(index);
    }
    let fallback_tag = digest.replacen(':', "-", 1);
    match client.get_manifest(repo, &fallback_tag).await {
        Ok(found) => Ok(serde_json::from_slice(&found.bytes).unwrap_or_default()),
        Err(RegistryError::NotFound { .. }) => Ok(ImageIndex::default()),
        Err(e) => Err(e),
    }
}

/// The bundle a referrer manifest carries as its layer; a malformed one is a rejected
/// candidate (with the reason), not a failed lookup.
async fn read_bundle(
    client: &RegistryClient,
    repo: &str,
    descriptor: &Descriptor,
) -> Result<Result<Bundle, String>, RegistryError> {
    let manifest = client.get_manifest(repo, &descriptor.digest).await?;
    let Ok(manifest) = serde_json::from_slice::<ImageManifest>(&manifest.bytes) else {
        return Ok(Err(format!(
            "the bundle referrer {} is not an image manifest",
            descriptor.digest
        )));
    };
    let Some(layer) = manifest
        .layers
        .iter()
        .find(|l| bundle::is_bundle_media_type(&l.media_type))
    else {
        return Ok(Err(format!(
            "the bundle referrer {} has no bundle layer",
            descriptor.digest
        )));
    };
    let json = read_small_blob(client, repo, &layer.digest).await?;
    Ok(Bundle::parse(&json))
}

/// A signature-sized blob, checked against its digest.
async fn read_small_blob(
    client: &RegistryClient,
    repo: &str,
    digest: &str,
) -> Result<Vec<u8>, RegistryError> {
    let (_, mut stream) = client.get_blob(repo, digest).await?;
    let mut blob = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| RegistryError::Invalid {
            url: digest.into(),
            reason: e.to_string(),
        })?;
        blob.extend_from_slice(&chunk);
        if blob.len() > MAX_SIGNATURE_BLOB_BYTES {
            return Err(RegistryError::Invalid {
                url: digest.into(),
                reason: "signature blob too large".into(),
            });
        }
    }
    let actual = sha256_digest(&blob);
    if actual != digest {
        return Err(RegistryError::DigestMismatch {
            url: digest.into(),
            expected: digest.into(),
            actual,
        });
    }
    Ok(blob)
}
