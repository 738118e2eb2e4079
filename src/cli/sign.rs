//! `push --sign-key`: a cosign key signature attached as cosign attaches it, so that
//! `cosign verify --key` (and Flux's verifier) accept it.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context;

use crate::oci::registry::{
    Descriptor, ImageManifest, OCI_MANIFEST, RegistryClient, RegistryError,
};
use crate::verify::cosign::{
    SIGNATURE_ANNOTATION, SIMPLE_SIGNING_MEDIA_TYPE, SigningKey, encode_signature, signature_tag,
    simple_signing_payload,
};

/// Loads a cosign private key; the password comes from `COSIGN_PASSWORD`, as cosign reads it.
pub fn load_key(path: &Path) -> anyhow::Result<SigningKey> {
    let pem =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let password = std::env::var("COSIGN_PASSWORD").unwrap_or_default();
    SigningKey::from_cosign_key(&pem, password.as_bytes())
        .with_context(|| format!("loading the signing key {}", path.display()))
}

/// Signs the manifest `digest` of `repo` on `registry` and pushes the signature to the
/// `sha256-<hex>.sig` tag, next to any signatures already there. Returns the signature
/// manifest's digest.
pub async fn attach_signature(
    client: &RegistryClient,
    registry: &str,
    repo: &str,
    digest: &str,
    key: &SigningKey,
) -> anyhow::Result<String> {
    let payload = simple_signing_payload(&format!("{registry}/{repo}"), digest);
    let signature = encode_signature(&key.sign(&payload)?);
    let payload_size = payload.len();
    let payload_digest = client.push_blob(repo, payload.into()).await?;
    let layer = Descriptor {
        media_type: SIMPLE_SIGNING_MEDIA_TYPE.into(),
        digest: payload_digest.clone(),
        size: payload_size as i64,
        annotations: Some(BTreeMap::from([(
            SIGNATURE_ANNOTATION.to_string(),
            signature,
        )])),
        ..Default::default()
    };
    let tag = signature_tag(digest);
    let mut layers = existing_signatures(client, repo, &tag).await?;
    layers.retain(|l| l.digest != layer.digest || l.annotations != layer.annotations);
    layers.push(layer);
    let diff_ids: Vec<&str> = layers.iter().map(|l| l.digest.as_str()).collect();
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "", "os": "", "created": "0001-01-01T00:00:00Z",
        "config": {}, "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }))?;
    let config_size = config.len();
    let config = Descriptor {
        media_type: "application/vnd.oci.image.config.v1+json".into(),
        digest: client.push_blob(repo, config.into()).await?,
        size: config_size as i64,
        ..Default::default()
    };
    let manifest = ImageManifest {
        schema_version: 2,
        media_type: Some(OCI_MANIFEST.into()),
        artifact_type: None,
        config,
        layers,
        subject: None,
        annotations: None,
    };
    Ok(client
        .put_manifest(
            repo,
            &tag,
            OCI_MANIFEST,
            serde_json::to_vec(&manifest)?.into(),
        )
        .await?)
}

/// The signature layers already under the tag (none when the tag does not exist).
async fn existing_signatures(
    client: &RegistryClient,
    repo: &str,
    tag: &str,
) -> anyhow::Result<Vec<Descriptor>> {
    match client.get_manifest(repo, tag).await {
        Ok(found) => {
            let manifest: ImageManifest = serde_json::from_slice(&found.bytes)?;
            Ok(manifest
                .layers
                .into_iter()
                .filter(|l| l.media_type == SIMPLE_SIGNING_MEDIA_TYPE)
                .collect())
        }
        Err(RegistryError::NotFound { .. }) => Ok(Vec::new()),
        Err(e) => Err(e.into()),
    }
}
