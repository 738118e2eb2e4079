//! One stored copy per content digest: `<root>/.blobs/sha256/<hex>`. An object's artifact file
//! (Flux's layout, unchanged) is a hard link to its blob, so the file system counts the
//! references: a blob whose link count is 1 is referenced by no object and goes at the next
//! collection. The directory starts with a dot, which no kind, namespace or served name can.

use std::fs::{self, Metadata};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::path::is_temp_file_name;
use super::{StorageError, io_error};

/// Under the root; hidden, so the artifact server never serves it.
pub(super) const BLOBS_DIR: &str = ".blobs/sha256";

/// The blob path for a lower-case hex SHA-256.
pub(super) fn blob_path(blobs: &Path, hex: &str) -> PathBuf {
    blobs.join(hex.to_ascii_lowercase())
}

/// Whether two metadata describe the same file (inode), i.e. a link to a blob.
pub(super) fn same_file(a: &Metadata, b: &Metadata) -> bool {
    a.dev() == b.dev() && a.ino() == b.ino()
}

/// What the blobs hold, measured by one collection pass.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BlobUsage {
    /// Distinct stored copies.
    pub blobs: u64,
    /// Bytes on disk for them.
    pub stored_bytes: u64,
    /// Bytes that one copy per object would have taken beyond `stored_bytes`.
    pub deduplicated_bytes: u64,
    /// Blobs no object referenced any more, removed by this pass.
    pub removed: u64,
}

impl BlobUsage {
    pub(super) fn count(&mut self, metadata: &Metadata) {
        let references = metadata.nlink().saturating_sub(1);
        self.blobs += 1;
        self.stored_bytes = self.stored_bytes.saturating_add(metadata.len());
        self.deduplicated_bytes = self
            .deduplicated_bytes
            .saturating_add(metadata.len().saturating_mul(references.saturating_sub(1)));
    }
}

/// A blob seen by a collection pass: removable when nothing else links to it.
pub(super) enum BlobState {
    Referenced(Metadata),
    Unreferenced,
    Gone,
}

pub(super) fn blob_state(path: &Path) -> Result<BlobState, StorageError> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_file() && m.nlink() <= 1 => Ok(BlobState::Unreferenced),
        Ok(m) if m.is_file() => Ok(BlobState::Referenced(m)),
        // Not a regular file: nothing the store made; leave it and count nothing.
        Ok(_) => Ok(BlobState::Gone),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(BlobState::Gone),
        Err(e) => Err(io_error("stat", path)(e)),
    }
}

/// The blob files (not temp files) in the blobs directory.
pub(super) fn blob_files(blobs: &Path) -> Result<Vec<PathBuf>, StorageError> {
    let mut files = Vec::new();
    let entries = match fs::read_dir(blobs) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(files),
        Err(e) => return Err(io_error("list", blobs)(e)),
    };
    for entry in entries {
        let entry = entry.map_err(io_error("list", blobs))?;
        if !is_temp_file_name(&entry.file_name()) {
            files.push(entry.path());
        }
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::fs::MetadataExt;

    use super::super::testing::{KIND, location, names_in, record, storage, write};
    use super::super::{ArtifactLocation, StorageError, TEMP_MARKER};
    use super::*;

    fn inode(path: &Path) -> u64 {
        fs::metadata(path).unwrap().ino()
    }

    #[test]
    fn objects_with_the_same_content_share_one_copy() {
        let tmp = tempfile::tempdir().unwrap();
        let storage = storage(tmp.path());
        let other = ArtifactLocation::new(KIND, "tenant-b", "app");
        let first = write(&storage, "a.tar.gz", b"same content");
        let second = storage
            .copy_artifact_from_reader(&other, "b.tar.gz", &b"same content"[..])
            .unwrap();
        assert_eq!(first.digest, second.digest);
        let (a, b) = (
            storage.root().join(&first.path),
            storage.root().join(&second.path),
        );
        assert_eq!(inode(&a), inode(&b));
        let usage = storage.collect_blobs().unwrap();
        assert_eq!(
            usage,
            BlobUsage {
                blobs: 1,
                stored_bytes: 12,
                deduplicated_bytes: 12,
                removed: 0
            }
        );
        assert!(storage.is_intact(&record(&first)));
        assert!(storage.is_intact(&record(&second)));
        assert_eq!(storage.hashes_computed(), 0);
    }

    #[test]
    fn a_copy_goes_only_after_its_last_reference() {
        let tmp = tempfile::tempdir().unwrap();
        let storage = storage(tmp.path());
        let other = ArtifactLocation::new(KIND, "tenant-b", "app");
        write(&storage, "a.tar.gz", b"shared");
        storage
            .copy_artifact_from_reader(&other, "a.tar.gz", &b"shared"[..])
            .unwrap();
        let blobs = storage.root().join(BLOBS_DIR);
        storage.remove_object(&location()).unwrap();
        assert_eq!(storage.collect_blobs().unwrap().removed, 0);
        assert_eq!(names_in(&blobs).len(), 1);
        storage.remove_object(&other).unwrap();
        assert_eq!(storage.collect_blobs().unwrap().removed, 1);
        assert!(names_in(&blobs).is_empty());
    }

    #[test]
    fn content_with_an_unexpected_digest_is_never_visible() {
        let tmp = tempfile::tempdir().unwrap();
        let storage = storage(tmp.path());
        let wrong = format!("sha256:{}", "0".repeat(64));
        let err = storage
            .write_verified_artifact(&location(), "a.tar.gz", &wrong, |out| {
                out.write_all(b"not what was promised")
            })
            .unwrap_err();
        assert!(matches!(err, StorageError::DigestMismatch { .. }), "{err}");
        assert!(names_in(&storage.root().join(BLOBS_DIR)).is_empty());
        assert!(
            !storage
                .root()
                .join("ocirepository/ns/app/a.tar.gz")
                .exists()
        );
    }

    #[test]
    fn stored_content_is_linked_without_writing_it_again() {
        let tmp = tempfile::tempdir().unwrap();
        let storage = storage(tmp.path());
        let other = ArtifactLocation::new(KIND, "tenant-b", "app");
        let digest = format!("sha256:{}", "ab".repeat(32));
        assert_eq!(
            storage.link_stored(&other, "x.tar.gz", &digest).unwrap(),
            None
        );
        let first = write(&storage, "a.tar.gz", b"payload");
        let linked = storage
            .link_stored(&other, "x.tar.gz", &first.digest)
            .unwrap()
            .expect("the stored copy is linked");
        assert_eq!(linked.digest, first.digest);
        assert_eq!(linked.size, first.size);
        assert_eq!(linked.path, "ocirepository/tenant-b/app/x.tar.gz");
        assert_eq!(
            inode(&storage.root().join(&first.path)),
            inode(&storage.root().join(&linked.path))
        );
        // Linking again (the same file) leaves no temp link behind.
        storage
            .link_stored(&other, "x.tar.gz", &first.digest)
            .unwrap();
        assert_eq!(
            names_in(&storage.root().join("ocirepository/tenant-b/app")),
            ["x.tar.gz", "x.tar.gz.lock"]
        );
    }

    #[test]
    fn a_corrupted_copy_is_replaced_not_shared() {
        let tmp = tempfile::tempdir().unwrap();
        let storage = storage(tmp.path());
        let first = write(&storage, "a.tar.gz", b"payload");
        let hex = first.digest.trim_start_matches("sha256:");
        let blob = storage.root().join(BLOBS_DIR).join(hex);
        fs::write(&blob, b"PAYLOAD").unwrap(); // rot in place, same size
        assert!(!storage.is_intact(&record(&first)));
        let other = ArtifactLocation::new(KIND, "tenant-b", "app");
        assert_eq!(
            storage
                .link_stored(&other, "a.tar.gz", &first.digest)
                .unwrap(),
            None
        );
        let rewritten = storage
            .copy_artifact_from_reader(&other, "a.tar.gz", &b"payload"[..])
            .unwrap();
        assert!(storage.is_intact(&record(&rewritten)));
        assert_eq!(fs::read(&blob).unwrap(), b"payload");
    }

    /// The states a crash can leave between the steps of a write (content in a temp file;
    /// published but not linked; linked under a temp name) are all cleaned by the start-up
    /// sweep, and never servable meanwhile (hidden temp names, or outside every object).
    #[test]
    fn a_crash_at_any_write_step_leaves_nothing_after_the_startup_sweep() {
        let tmp = tempfile::tempdir().unwrap();
        let storage = storage(tmp.path());
        let kept = write(&storage, "kept.tar.gz", b"kept");
        let blobs = storage.root().join(BLOBS_DIR);
        let dir = storage.root().join("ocirepository/ns/app");
        // Step 1: content half written into a temp file among the blobs.
        fs::write(blobs.join(format!(".a.tar.gz{TEMP_MARKER}0001")), b"half").unwrap();
        // Step 2: published under its digest, not linked by any object yet.
        let orphan = blobs.join("cd".repeat(32));
        fs::write(&orphan, b"orphan").unwrap();
        // Step 3: linked under the temp name, not yet renamed over the object's file.
        let linked = blobs.join("ef".repeat(32));
        fs::write(&linked, b"linked").unwrap();
        fs::hard_link(&linked, dir.join(format!(".b.tar.gz{TEMP_MARKER}0002"))).unwrap();

        let restarted = super::super::testing::storage(tmp.path());
        let removed = restarted.sweep_on_startup().unwrap();
        assert_eq!(removed.len(), 2, "{removed:?}");
        assert_eq!(
            names_in(&blobs),
            [kept.digest.trim_start_matches("sha256:")]
        );
        assert_eq!(names_in(&dir), ["kept.tar.gz", "kept.tar.gz.lock"]);
        assert!(restarted.is_intact(&record(&kept)));
    }
}
