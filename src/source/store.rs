//! From a downloaded layer to a stored artifact: extracted and re-archived with the ignore
//! rules applied, or copied byte for byte.

use std::fs::File;
use std::path::Path;

use crate::api::oci_repository::LayerOperation;
use crate::artifact::extract::{ExtractError, ExtractLimits, extract_tar_gz};
use crate::artifact::ignore::{IgnoreError, IgnoreRules};
use crate::artifact::storage::{ArtifactLocation, Storage, StoredArtifact};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Extract(#[from] ExtractError),
    #[error("loading ignore rules: {0}")]
    Ignore(#[from] IgnoreError),
    #[error("{0}")]
    Storage(String),
    #[error("opening the downloaded layer: {0}")]
    Io(#[from] std::io::Error),
}

/// A downloaded layer and how to turn it into an artifact.
#[derive(Debug, Clone, Copy)]
pub struct LayerToStore<'a> {
    /// The layer blob as downloaded (a `tar.gz`).
    pub blob: &'a Path,
    /// The artifact's file name in the object's directory.
    pub file_name: &'a str,
    pub operation: LayerOperation,
    /// `spec.ignore`, applied on top of the layer's `.sourceignore` files.
    pub spec_ignore: Option<&'a str>,
    pub limits: ExtractLimits,
    /// A scratch directory the layer may be extracted into.
    pub work: &'a Path,
}

pub fn store_layer(
    storage: &Storage,
    location: &ArtifactLocation,
    layer: &LayerToStore<'_>,
) -> Result<StoredArtifact, StoreError> {
    match layer.operation {
        LayerOperation::Copy => storage
            .copy_artifact_from_reader(location, layer.file_name, File::open(layer.blob)?)
            .map_err(|e| StoreError::Storage(e.to_string())),
        LayerOperation::Extract => {
            let content = layer.work.join("content");
            std::fs::create_dir_all(&content)?;
            extract_tar_gz(File::open(layer.blob)?, &content, layer.limits)?;
            let rules = IgnoreRules::load(&content, layer.spec_ignore)?;
            storage
                .write_archive_artifact(location, layer.file_name, &content, &rules)
                .map_err(|e| StoreError::Storage(e.to_string()))
        }
    }
}

/// `status.artifact` for a stored file at `revision`.
pub fn status_artifact(
    storage: &Storage,
    stored: StoredArtifact,
    revision: &str,
    metadata: Option<std::collections::BTreeMap<String, String>>,
) -> crate::api::Artifact {
    crate::api::Artifact {
        url: storage.url_for(&stored.path),
        path: stored.path,
        revision: revision.to_string(),
        digest: stored.digest,
        last_update_time: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(stored.last_update),
        size: i64::try_from(stored.size).ok(),
        metadata,
    }
}
