//! Finding a manifest's signatures in its registry, wherever cosign put them: the legacy
//! `sha256-<hex>.sig` tag, and Sigstore bundles attached as OCI referrers (through the referrers
//! API, or the `sha256-<hex>` tag-schema index on registries without it).

use base64::Engine;

use sigstore_verify::types::Bundle;

use super::bundle;
use super::cosign::{SIGNATURE_ANNOTATION, SIMPLE_SIGNING_MEDIA_TYPE, signature_tag};
use super::notation::envelope::TargetArtifact;
use super::notation::{self, NotationPolicy};
use super::{Candidate, Format, Policy, Unverified, Verified, VerifiedSigner, first_verified};
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

/// Why Notary Project verification did not accept a manifest.
#[derive(Debug, thiserror::Error)]
pub enum NotationError {
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// Flux's message for the refusal.
    #[error("{0}")]
    Refused(String),
}

/// What Notary Project verification concluded.
pub enum NotationOutcome {
    Verified(Verified),
    /// Not verified, and not refused: the statement skips verification, or an authenticity
    /// failure is only logged (`audit`). Flux then reports no verification at all.
    Ignored(String),
}

/// Most bytes of one signature envelope read (notation-go allows 32 MiB; real ones are a few
/// KiB with their certificate chain).
const MAX_ENVELOPE_BYTES: usize = 4 * 1024 * 1024;

/// Verifies the manifest `digest` of `repo` (`path` is `<registry>/<repository>`, what the
/// trust policy's scopes name) with its Notary Project signatures, as Flux does: the statement
/// for `path`, then up to three signatures from the referrers, the first that passes wins.
pub async fn verify_notation(
    client: &RegistryClient,
    repo: &str,
    digest: &str,
    path: &str,
    policy: &NotationPolicy,
) -> Result<NotationOutcome, NotationError> {
    let statement = policy
        .policy
        .applicable(path)
        .map_err(NotationError::Refused)?
        .clone();
    if statement.is_skip() {
        return Ok(NotationOutcome::Ignored(format!(
            "trust policy statement '{}' skips signature verification",
            statement.name
        )));
    }
    let reference = format!("{path}@{digest}");
    let manifest = client.get_manifest(repo, digest).await?;
    let expected = TargetArtifact {
        media_type: manifest.media_type.clone(),
        digest: digest.to_string(),
        size: i64::try_from(manifest.bytes.len()).unwrap_or(i64::MAX),
    };
    let signatures: Vec<Descriptor> = referrers(client, repo, digest)
        .await?
        .manifests
        .into_iter()
        .filter(|d| d.artifact_type.as_deref() == Some(notation::SIGNATURE_ARTIFACT_TYPE))
        .collect();
    if signatures.is_empty() {
        return Err(NotationError::Refused(format!(
            "no signature is associated with {reference:?}, make sure the artifact was signed successfully"
        )));
    }
    let mut failures = Vec::new();
    for descriptor in signatures.iter().take(notation::MAX_SIGNATURE_ATTEMPTS) {
        let (media_type, envelope) = read_envelope(client, repo, descriptor)
            .await
            .map_err(|e| {
                NotationError::Refused(format!(
                    "unable to retrieve digital signature with digest {:?} associated with {reference:?} from the Repository, error : {e}",
                    descriptor.digest
                ))
            })?;
        let (rules, trusted, expected) = (
            statement.clone(),
            policy.certificates.clone(),
            expected.clone(),
        );
        let checked = tokio::task::spawn_blocking(move || {
            notation::verify_signature(
                &rules,
                &trusted,
                &media_type,
                &envelope,
                &expected,
                jiff::Timestamp::now(),
            )
            .map(|accepted| (media_type, accepted))
        })
        .await
        .map_err(|e| NotationError::Refused(e.to_string()))?;
        match checked {
            Ok((_, accepted)) if accepted.authenticity_logged => {
                return Ok(NotationOutcome::Ignored(format!(
                    "the signature's authenticity is not established and the trust policy statement '{}' only logs it: {}",
                    statement.name,
                    accepted.logged.join("; ")
                )));
            }
            Ok((media_type, accepted)) => {
                return Ok(NotationOutcome::Verified(Verified {
                    digest: digest.to_string(),
                    format: if media_type == notation::envelope::COSE_MEDIA_TYPE {
                        Format::NotationCose
                    } else {
                        Format::NotationJws
                    },
                    signer: VerifiedSigner::Certificate {
                        subject: accepted.subject,
                        issuer: accepted.issuer,
                    },
                    log: None,
                    timestamped_at: accepted.timestamped_at,
                }));
            }
            Err(why) => failures.push(format!(
                "failed to verify signature with digest {}, {why}",
                descriptor.digest
            )),
        }
    }
    if failures.len() >= notation::MAX_SIGNATURE_ATTEMPTS {
        return Err(NotationError::Refused(format!(
            "signature evaluation stopped. The configured limit of {} signatures to verify per artifact exceeded",
            notation::MAX_SIGNATURE_ATTEMPTS
        )));
    }
    Err(NotationError::Refused(format!(
        "signature verification failed\n{}",
        failures.join("\n")
    )))
}

/// The one envelope a signature manifest carries, and its media type.
async fn read_envelope(
    client: &RegistryClient,
    repo: &str,
    descriptor: &Descriptor,
) -> Result<(String, Vec<u8>), RegistryError> {
    let manifest = client.get_manifest(repo, &descriptor.digest).await?;
    let invalid = |reason: String| RegistryError::Invalid {
        url: descriptor.digest.clone(),
        reason,
    };
    let manifest = serde_json::from_slice::<ImageManifest>(&manifest.bytes).map_err(|e| {
        invalid(format!(
            "the signature manifest is not an image manifest: {e}"
        ))
    })?;
    let [layer] = manifest.layers.as_slice() else {
        return Err(invalid(format!(
            "signature manifest requries exactly one signature envelope blob, got {}",
            manifest.layers.len()
        )));
    };
    let blob = client
        .get_small_blob(repo, &layer.digest, MAX_ENVELOPE_BYTES)
        .await?;
    Ok((layer.media_type.clone(), blob.to_vec()))
}
