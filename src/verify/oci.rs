//! Finding a manifest's cosign signatures in its registry and checking them against keys.

use futures::StreamExt;

use super::cosign::{
    SIGNATURE_ANNOTATION, SIMPLE_SIGNING_MEDIA_TYPE, check_payload, signature_tag,
    verify_with_public_key,
};
use crate::source::oci::registry::{ImageManifest, RegistryClient, RegistryError};

/// Largest signature payload read (cosign's are a few hundred bytes).
const MAX_PAYLOAD_BYTES: usize = 64 * 1024;

/// The name of the first key (Secret entry) that verifies a signature of `digest`, from the
/// signatures cosign attached at `sha256-<hex>.sig`; `None` when none does.
pub async fn find_key_signature(
    client: &RegistryClient,
    repo: &str,
    digest: &str,
    keys: &[(String, String)],
) -> Result<Option<String>, RegistryError> {
    let manifest = match client.get_manifest(repo, &signature_tag(digest)).await {
        Ok(found) => found,
        Err(RegistryError::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(e),
    };
    let Ok(manifest) = serde_json::from_slice::<ImageManifest>(&manifest.bytes) else {
        return Ok(None);
    };
    for layer in manifest
        .layers
        .iter()
        .filter(|l| l.media_type == SIMPLE_SIGNING_MEDIA_TYPE)
    {
        let Some(signature) = layer
            .annotations
            .as_ref()
            .and_then(|a| a.get(SIGNATURE_ANNOTATION))
            .and_then(|s| {
                use base64::Engine;
                base64::engine::general_purpose::STANDARD.decode(s).ok()
            })
        else {
            continue;
        };
        let payload = read_payload(client, repo, &layer.digest).await?;
        // The payload must name this digest: a signature moved from another image is no
        // signature of this one.
        if check_payload(&payload, digest).is_err() {
            continue;
        }
        if let Some((name, _)) = keys
            .iter()
            .find(|(_, pem)| verify_with_public_key(pem, &payload, &signature))
        {
            return Ok(Some(name.clone()));
        }
    }
    Ok(None)
}

async fn read_payload(
    client: &RegistryClient,
    repo: &str,
    digest: &str,
) -> Result<Vec<u8>, RegistryError> {
    let (_, mut stream) = client.get_blob(repo, digest).await?;
    let mut payload = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| RegistryError::Invalid {
            url: digest.into(),
            reason: e.to_string(),
        })?;
        payload.extend_from_slice(&chunk);
        if payload.len() > MAX_PAYLOAD_BYTES {
            return Err(RegistryError::Invalid {
                url: digest.into(),
                reason: "signature payload too large".into(),
            });
        }
    }
    let actual = crate::source::oci::registry::sha256_digest(&payload);
    if actual != digest {
        return Err(RegistryError::DigestMismatch {
            url: digest.into(),
            expected: digest.into(),
            actual,
        });
    }
    Ok(payload)
}
