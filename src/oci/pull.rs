//! Pulling an artifact by digest: the manifest (through an index when there is one), the
//! selected layer, and its blob streamed to a file with its digest checked on the way.

use std::collections::BTreeMap;
use std::path::Path;
use tokio::io::AsyncWriteExt;

use futures::StreamExt;

use super::digest::Verifier;
use super::registry::{
    DOCKER_MANIFEST_LIST, Descriptor, ImageIndex, ImageManifest, OCI_INDEX, RegistryClient,
    RegistryError,
};

/// Flux's default layer when no media type is selected: the first one.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error("failed to parse artifact manifest: {0}")]
    Manifest(String),
    #[error("no layers found in artifact")]
    NoLayers,
    #[error("failed to find layer with media type '{0}' in artifact")]
    NoSuchLayer(String),
    #[error("index has no manifest for linux/amd64")]
    NoPlatform,
    #[error("layer is larger than the limit of {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("layer digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch { expected: String, actual: String },
    #[error("layer download did not finish within {0:?}")]
    TimedOut(std::time::Duration),
    #[error("writing layer to disk: {0}")]
    Io(#[from] std::io::Error),
}

/// The image manifest for a digest, resolving an index to its linux/amd64 entry (the platform
/// go-containerregistry picks by default, so Flux and driftless store the same content).
pub async fn image_manifest(
    client: &RegistryClient,
    repo: &str,
    digest: &str,
) -> Result<ImageManifest, PullError> {
    let fetched = client.get_manifest(repo, digest).await?;
    if fetched.media_type == OCI_INDEX || fetched.media_type == DOCKER_MANIFEST_LIST {
        let index: ImageIndex = serde_json::from_slice(&fetched.bytes)
            .map_err(|e| PullError::Manifest(e.to_string()))?;
        let linux_amd64 = |m: &&Descriptor| {
            m.platform
                .as_ref()
                .is_some_and(|p| p.os == "linux" && p.architecture == "amd64")
        };
        // go-containerregistry treats an entry without a platform as linux/amd64, so do we.
        let child = index
            .manifests
            .iter()
            .find(linux_amd64)
            .or_else(|| index.manifests.iter().find(|m| m.platform.is_none()))
            .ok_or(PullError::NoPlatform)?;
        let fetched = client.get_manifest(repo, &child.digest).await?;
        return serde_json::from_slice(&fetched.bytes)
            .map_err(|e| PullError::Manifest(e.to_string()));
    }
    serde_json::from_slice(&fetched.bytes).map_err(|e| PullError::Manifest(e.to_string()))
}

/// The layer to use: the first with `media_type`, or the first of all.
pub fn select_layer<'a>(
    manifest: &'a ImageManifest,
    media_type: Option<&str>,
) -> Result<&'a Descriptor, PullError> {
    if manifest.layers.is_empty() {
        return Err(PullError::NoLayers);
    }
    match media_type.filter(|m| !m.is_empty()) {
        None => Ok(&manifest.layers[0]),
        Some(mt) => manifest
            .layers
            .iter()
            .find(|l| l.media_type == mt)
            .ok_or_else(|| PullError::NoSuchLayer(mt.into())),
    }
}

/// Stream a blob into `dest`, refusing more than `limit` bytes and checking its digest, so a
/// registry can neither exhaust memory nor substitute content.
pub async fn download_blob(
    client: &RegistryClient,
    repo: &str,
    layer: &Descriptor,
    dest: &Path,
    limit: u64,
) -> Result<u64, PullError> {
    if u64::try_from(layer.size).unwrap_or(u64::MAX) > limit {
        return Err(PullError::TooLarge { limit });
    }
    let (_, mut stream) = client.get_blob(repo, &layer.digest).await?;
    // get_blob refused a digest that cannot be checked, so this is only a second look.
    let mut verifier =
        Verifier::new(&layer.digest).map_err(|e| PullError::Manifest(e.to_string()))?;
    let mut file = tokio::io::BufWriter::new(tokio::fs::File::create(dest).await?);
    let mut written = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk
            .map_err(|e| PullError::Io(std::io::Error::other(crate::transport::error_chain(&e))))?;
        written = written.saturating_add(u64::try_from(chunk.len()).unwrap_or(u64::MAX));
        if written > limit {
            return Err(PullError::TooLarge { limit });
        }
        verifier.update(&chunk);
        file.write_all(&chunk).await?;
    }
    file.flush().await?;
    file.into_inner().sync_all().await?;
    verifier
        .finish()
        .map_err(|actual| PullError::DigestMismatch {
            expected: layer.digest.clone(),
            actual,
        })?;
    Ok(written)
}

/// The manifest annotations, which Flux copies verbatim into `status.artifact.metadata`.
pub fn metadata(manifest: &ImageManifest) -> Option<BTreeMap<String, String>> {
    manifest.annotations.clone().filter(|a| !a.is_empty())
}
