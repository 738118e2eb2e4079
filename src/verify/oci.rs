//! Finding a manifest's signatures in its registry, wherever cosign put them: the legacy
//! `sha256-<hex>.sig` tag, and Sigstore bundles attached as OCI referrers (through the referrers
//! API, or the `sha256-<hex>` tag-schema index on registries without it).

use base64::Engine;

use sigstore_verify::types::Bundle;

use super::bundle;
use super::cosign::{SIGNATURE_ANNOTATION, SIMPLE_SIGNING_MEDIA_TYPE, signature_tag};
use super::{Candidate, Policy, Unverified, Verified, first_verified};
use crate::oci::registry::{Descriptor, ImageIndex, ImageManifest, RegistryClient, RegistryError};

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
    #[error(transparent)]
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
    let signs_manifest = candidates
        .iter()
        .any(|c| matches!(c, Candidate::Bundle(Ok(b)) if bundle::signs_bytes(b)));
    let manifest = if signs_manifest {
        client.get_manifest(repo, digest).await?.bytes.to_vec()
    } else {
        Vec::new()
    };
    // Certificate chains and log proofs are CPU work: off the async workers.
    let (policy, digest) = (policy.clone(), digest.to_string());
    tokio::task::spawn_blocking(move || first_verified(&candidates, &policy, &digest, &manifest))
        .await
        .map_err(|e| VerifyError::Unverified(Unverified::Rejected(vec![e.to_string()])))?
        .map_err(VerifyError::Unverified)
}

/// The layers of the `.sig` tag, newest first (cosign appends one per signing).
async fn signature_tag_candidates(
    client: &RegistryClient,
    repo: &str,
    digest: &str,
) -> Result<Vec<Candidate>, RegistryError> {
    let tag = signature_tag(digest);
    let manifest = match client.get_manifest(repo, &tag).await {
        Ok(found) => found,
        Err(RegistryError::NotFound { .. }) => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let Ok(manifest) = serde_json::from_slice::<ImageManifest>(&manifest.bytes) else {
        let why = format!("the signature tag {tag} does not hold an image manifest");
        return Ok(vec![Candidate::Unreadable(why)]);
    };
    let mut candidates = Vec::new();
    for layer in manifest
        .layers
        .iter()
        .rev()
        .filter(|l| l.media_type == SIMPLE_SIGNING_MEDIA_TYPE)
        .take(MAX_CANDIDATES)
    {
        candidates.push(simple_signature(client, repo, layer).await?);
    }
    Ok(candidates)
}

/// One layer of the `.sig` tag: its payload and the signature, certificate and Rekor entry
/// from its annotations.
async fn simple_signature(
    client: &RegistryClient,
    repo: &str,
    layer: &Descriptor,
) -> Result<Candidate, RegistryError> {
    let annotation = |key: &str| layer.annotations.as_ref().and_then(|a| a.get(key));
    let Some(signature) = annotation(SIGNATURE_ANNOTATION)
        .and_then(|s| base64::engine::general_purpose::STANDARD.decode(s).ok())
    else {
        return Ok(Candidate::Unreadable(format!(
            "the signature layer {} has no valid {SIGNATURE_ANNOTATION} annotation",
            layer.digest
        )));
    };
    let certificate = match annotation(CERTIFICATE_ANNOTATION) {
        None => None,
        Some(pem) => match crate::util::pem_blocks(pem, "CERTIFICATE")
            .into_iter()
            .next()
        {
            Some(der) => Some(der),
            None => {
                return Ok(Candidate::Unreadable(format!(
                    "the signature layer {} has a certificate annotation that holds no PEM certificate",
                    layer.digest
                )));
            }
        },
    };
    let payload = match read_small_blob(client, repo, &layer.digest).await {
        Ok(payload) => payload,
        Err(e) => return unreadable(e),
    };
    Ok(Candidate::Simple {
        payload,
        signature,
        certificate,
        rekor_bundle: annotation(REKOR_BUNDLE_ANNOTATION).cloned(),
    })
}

/// The bundles among the referrers of `digest`, the last listed first, up to the limit.
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
        .rev()
        .filter(|d| {
            d.artifact_type
                .as_deref()
                .is_some_and(bundle::is_bundle_media_type)
        })
        .take(MAX_CANDIDATES)
    {
        candidates.push(match read_bundle(client, repo, descriptor).await {
            Ok(bundle) => Candidate::Bundle(bundle),
            Err(e) => unreadable(e)?,
        });
    }
    Ok(candidates)
}

/// A signature that cannot be read is one rejected candidate (cosign skips it too), unless
/// the registry itself failed: then the lookup fails and is retried.
fn unreadable(e: RegistryError) -> Result<Candidate, RegistryError> {
    match e {
        RegistryError::NotFound { .. }
        | RegistryError::DigestMismatch { .. }
        | RegistryError::BodyTooLarge { .. }
        | RegistryError::UnsupportedDigest { .. }
        | RegistryError::Invalid { .. } => Ok(Candidate::Unreadable(format!(
            "a signature could not be read: {e}"
        ))),
        e => Err(e),
    }
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
        Ok(found) => {
            Ok(
                serde_json::from_slice(&found.bytes).map_err(|e| RegistryError::Invalid {
                    url: fallback_tag.clone(),
                    reason: format!("the referrers tag is not an image index: {e}"),
                })?,
            )
        }
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
    Ok(bundle::parse(&json))
}

/// A signature-sized blob, checked against its digest.
async fn read_small_blob(
    client: &RegistryClient,
    repo: &str,
    digest: &str,
) -> Result<Vec<u8>, RegistryError> {
    let blob = client
        .get_small_blob(repo, digest, MAX_SIGNATURE_BLOB_BYTES)
        .await?;
    Ok(blob.to_vec())
}
