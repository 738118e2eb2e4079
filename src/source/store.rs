//! From a downloaded layer to a stored artifact: extracted and re-archived with the ignore
//! rules applied, or copied byte for byte.

use std::fs::File;
use std::path::Path;

use crate::api::oci_repository::LayerOperation;
use crate::artifact::extract::{ExtractError, ExtractLimits, extract_tar_gz};
use crate::artifact::ignore::{IgnoreError, IgnoreRules};
use crate::artifact::storage::{Storage, StoredArtifact};

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

#[allow(clippy::too_many_arguments)]
pub fn store_layer(
    storage: &Storage,
    kind: &str,
    ns: &str,
    name: &str,
    file_name: &str,
    blob: &Path,
    work: &Path,
    operation: LayerOperation,
    spec_ignore: Option<&str>,
    limits: ExtractLimits,
) -> Result<StoredArtifact, StoreError> {
    match operation {
        LayerOperation::Copy => storage
            .copy_artifact_from_reader(kind, ns, name, file_name, File::open(blob)?)
            .map_err(|e| StoreError::Storage(e.to_string())),
        LayerOperation::Extract => {
            let content = work.join("content");
            std::fs::create_dir_all(&content)?;
            extract_tar_gz(File::open(blob)?, &content, limits)?;
            let rules = IgnoreRules::load(&content, spec_ignore)?;
            storage
                .write_archive_artifact(kind, ns, name, file_name, &content, &rules)
                .map_err(|e| StoreError::Storage(e.to_string()))
        }
    }
}
