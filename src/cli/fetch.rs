//! Pulling an artifact's first layer for the CLI: resolve, download (digest-checked, bounded)
//! and unpack safely.

use std::io::Read;
use std::path::Path;

use anyhow::Context;

use super::registry::Target;
use crate::artifact::extract::{ExtractLimits, extract_tar_gz};
use crate::oci::pull::{download_blob, image_manifest, select_layer};
use crate::oci::registry::{ImageManifest, RegistryClient};

/// What was pulled: the manifest digest and the manifest (for its annotations).
pub struct Pulled {
    pub digest: String,
    pub manifest: ImageManifest,
}

/// Resolve the target to a digest and unpack its first layer into `dir` (a gzip tarball is
/// extracted with the same safety rules as the controller; anything else is written as a file).
pub async fn pull_into(
    client: &RegistryClient,
    target: &Target,
    dir: &Path,
    limits: ExtractLimits,
) -> anyhow::Result<Pulled> {
    let repo = &target.url.repository;
    let digest = target.digest(client).await?;
    let manifest = image_manifest(client, repo, &digest).await?;
    let layer = select_layer(&manifest, None)?;
    let blob = tempfile::NamedTempFile::new().context("creating a temporary file")?;
    download_blob(client, repo, layer, blob.path(), limits.max_bytes).await?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    if is_gzip(blob.path())? {
        let file = std::fs::File::open(blob.path())?;
        extract_tar_gz(file, dir, limits).context("unpacking the artifact")?;
    } else {
        let name = layer
            .annotations
            .as_ref()
            .and_then(|a| a.get("org.opencontainers.image.title"))
            .map(String::as_str)
            .filter(|n| !n.contains('/') && !n.contains("..") && !n.is_empty())
            .unwrap_or("artifact");
        std::fs::copy(blob.path(), dir.join(name)).context("writing the artifact")?;
    }
    Ok(Pulled { digest, manifest })
}

fn is_gzip(path: &Path) -> anyhow::Result<bool> {
    let mut magic = [0u8; 2];
    let n = std::fs::File::open(path)?.read(&mut magic)?;
    Ok(n == 2 && magic == [0x1f, 0x8b])
}

pub fn annotation<'a>(manifest: &'a ImageManifest, key: &str) -> &'a str {
    manifest
        .annotations
        .as_ref()
        .and_then(|a| a.get(key))
        .map(String::as_str)
        .unwrap_or("")
}
