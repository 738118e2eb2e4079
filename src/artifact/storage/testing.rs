//! Fixtures shared by the storage modules' unit tests.

use std::fs::{self, File, FileTimes};
use std::path::Path;
use std::time::{Duration, SystemTime};

use super::{ArtifactLocation, Storage, StorageConfig, StoredArtifact, StoredArtifactRecord};

/// Given in mixed case on purpose: the directory is `ocirepository`.
pub const KIND: &str = "OCIRepository";

/// The object most tests write to: `ocirepository/ns/app`.
pub fn location() -> ArtifactLocation {
    ArtifactLocation::new(KIND, "ns", "app")
}

pub fn storage(dir: &Path) -> Storage {
    Storage::new(StorageConfig {
        root: dir.join("data"),
        advertised_host: "source-controller.flux-system.svc.cluster.local.".into(),
        retention_ttl: Duration::from_secs(60),
        retention_records: 2,
    })
    .unwrap()
}

pub fn write(storage: &Storage, file: &str, content: &[u8]) -> StoredArtifact {
    storage
        .copy_artifact_from_reader(&location(), file, content)
        .unwrap()
}

pub fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Ages a stored file by `age`: its own time and its lock file's (retention goes by the lock
/// file's when there is one).
pub fn set_mtime(path: &Path, age: Duration) {
    let lock = path.with_file_name(format!(
        "{}.lock",
        path.file_name().unwrap().to_string_lossy()
    ));
    for p in [path, lock.as_path()] {
        if let Ok(file) = File::options().write(true).open(p) {
            file.set_times(FileTimes::new().set_modified(SystemTime::now() - age))
                .unwrap();
        }
    }
}

pub fn record(stored: &StoredArtifact) -> StoredArtifactRecord<'_> {
    StoredArtifactRecord {
        path: &stored.path,
        size: Some(stored.size),
        digest: &stored.digest,
    }
}
