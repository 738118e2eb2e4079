//! The artifact store, which ties together where an object's artifacts live (`path`), how they
//! are written and locked (`filesystem`), which old ones go (`gc`), which digests are known
//! (`integrity`) and the URLs they are served at (`url`).
//!
//! The calls are blocking; async callers run them in `tokio::task::spawn_blocking`.

mod blobs;
mod filesystem;
mod gc;
mod integrity;
mod path;
#[cfg(test)]
mod testing;
mod url;

use std::ffi::OsStr;
use std::fs::{self, Metadata};
use std::io::{self, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use super::archive::{ArchiveError, ArchiveFilter, write_archive};
use super::digest::{ContentDigest, sha256_hex_of};
use blobs::{BLOBS_DIR, BlobState, blob_path, same_file};
use filesystem::KeyedLocks;
use gc::RetentionPolicy;
use integrity::DigestRecords;
use path::{lock_path, reject_reserved_file_name, safe_relative_path, validate_component};
use url::AdvertisedHost;

pub use blobs::BlobUsage;
pub use gc::GC_FILE_LIMIT;
pub use path::{
    ArtifactLocation, LATEST_FILE, LOCK_SUFFIX, TEMP_MARKER, is_lock_file_name, is_temp_file_name,
};
pub use url::advertised_host_from_addr;

#[derive(Debug, Clone)]
pub struct StorageConfig {
    /// `--storage-path`.
    pub root: PathBuf,
    /// Host (or `http(s)://` prefix) that artifact URLs are built with.
    pub advertised_host: String,
    /// `--artifact-retention-ttl`.
    pub retention_ttl: Duration,
    /// `--artifact-retention-records`.
    pub retention_records: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("invalid {what} {value:?}: {reason}")]
    InvalidComponent {
        what: &'static str,
        value: String,
        reason: &'static str,
    },
    #[error("cannot {op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("producing the artifact content failed: {0}")]
    Fill(io::Error),
    #[error("archiving the artifact content failed: {0}")]
    Archive(#[from] ArchiveError),
    #[error("more than {limit} files in {dir}, garbage collection stopped")]
    TooManyFiles { dir: PathBuf, limit: usize },
    #[error("{path} is not an artifact of {object}")]
    NotInObjectDir { path: String, object: String },
    #[error("the content's digest is sha256:{actual}, not the expected sha256:{expected}")]
    DigestMismatch { expected: String, actual: String },
    #[error("invalid storage address {addr:?}: {reason}")]
    InvalidAddress { addr: String, reason: &'static str },
}

fn io_error<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> StorageError + 'a {
    move |source| StorageError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // The guarded maps stay consistent even if a holder panicked.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A freshly written artifact, in the shape `status.artifact` needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredArtifact {
    /// Relative path with `/` separators, e.g. `ocirepository/ns/name/sha256:….tar.gz`.
    pub path: String,
    pub url: String,
    pub size: u64,
    /// `sha256:<hex>`.
    pub digest: String,
    pub last_update: jiff::Timestamp,
}

/// What an object's status says about its artifact; checked by [`Storage::is_intact`].
#[derive(Debug, Clone, Copy)]
pub struct StoredArtifactRecord<'a> {
    pub path: &'a str,
    pub size: Option<u64>,
    /// `sha256:<hex>` or bare hex.
    pub digest: &'a str,
}

pub struct Storage {
    root: PathBuf,
    /// `<root>/.blobs/sha256`: one copy per content digest (see `blobs`).
    blobs: PathBuf,
    advertised_host: AdvertisedHost,
    retention_ttl: Duration,
    retention_records: usize,
    /// Digests of files this process wrote or hashed, valid while their stamp is unchanged.
    digests: DigestRecords,
    /// Held per artifact path while it is written, and per blob path while it is published,
    /// linked or collected (so a collection never removes a blob about to be linked).
    writers: KeyedLocks,
}

impl std::fmt::Debug for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Storage")
            .field("root", &self.root)
            .field("advertised_host", &self.advertised_host.as_str())
            .finish_non_exhaustive()
    }
}

impl Storage {
    /// Creates the root if needed and resolves it, so that symlink targets and the HTTP
    /// server's containment check use one canonical path.
    pub fn new(config: StorageConfig) -> Result<Self, StorageError> {
        filesystem::create_private_dir(&config.root)?;
        let root = fs::canonicalize(&config.root).map_err(io_error("resolve", &config.root))?;
        let blobs = root.join(BLOBS_DIR);
        filesystem::create_private_dir(&blobs)?;
        Ok(Self {
            root,
            blobs,
            advertised_host: AdvertisedHost::new(config.advertised_host),
            retention_ttl: config.retention_ttl,
            retention_records: config.retention_records,
            digests: DigestRecords::default(),
            writers: KeyedLocks::default(),
        })
    }

    /// The canonical storage root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The URL a stored path is served at: `http://<host>/<path>`, or `<host>/<path>` when the
    /// advertised host is already an `http(s)://` prefix.
    pub fn url_for(&self, rel_path: &str) -> String {
        self.advertised_host.url_for(rel_path)
    }

    /// Writes an artifact atomically: `fill` streams the content into a temp file, which is
    /// fsynced and published under its digest, then linked as the object's file. Size and
    /// digest are computed while writing. A failing (or panicking) `fill` leaves nothing behind.
    pub fn write_artifact(
        &self,
        location: &ArtifactLocation,
        file_name: &str,
        fill: impl FnOnce(&mut dyn Write) -> io::Result<()>,
    ) -> Result<StoredArtifact, StorageError> {
        self.write_atomically(location, file_name, None, |out| {
            fill(out).map_err(StorageError::Fill)
        })
    }

    /// Like [`Storage::write_artifact`], for content that must have `expected_digest`
    /// (`sha256:<hex>`): content with another digest is never visible and fails the write.
    pub fn write_verified_artifact(
        &self,
        location: &ArtifactLocation,
        file_name: &str,
        expected_digest: &str,
        fill: impl FnOnce(&mut dyn Write) -> io::Result<()>,
    ) -> Result<StoredArtifact, StorageError> {
        let expected = expected_hex(expected_digest)?;
        self.write_atomically(location, file_name, Some(&expected), |out| {
            fill(out).map_err(StorageError::Fill)
        })
    }

    /// Makes the object's `file_name` the already stored content with `digest`, without
    /// writing it again; `None` when no intact copy of that content is stored.
    pub fn link_stored(
        &self,
        location: &ArtifactLocation,
        file_name: &str,
        digest: &str,
    ) -> Result<Option<StoredArtifact>, StorageError> {
        let hex = expected_hex(digest)?;
        reject_reserved_file_name(file_name)?;
        let rel = location.artifact_path(file_name)?;
        let final_path = self.root.join(&rel);
        let dir = self.object_dir(location)?;
        let blob = blob_path(&self.blobs, &hex);
        let _in_process = self.writers.lock(&final_path);
        let _blob = self.writers.lock(&blob);
        let Some(size) = self.intact_blob_size(&blob, &hex) else {
            return Ok(None);
        };
        filesystem::create_private_dir(&dir)?;
        let advisory = filesystem::lock_target(&final_path)?;
        // Stamped first: a collection between the two never sees the new file as old.
        filesystem::stamp_written(&advisory, &final_path)?;
        self.link_blob(&dir, file_name, &blob, &hex)?;
        let digest = ContentDigest { size, hex };
        Ok(Some(self.stored(rel, &digest)))
    }

    /// Stores the deterministic tarball of `source_dir` (reference §5.2).
    pub fn write_archive_artifact(
        &self,
        location: &ArtifactLocation,
        file_name: &str,
        source_dir: &Path,
        filter: &dyn ArchiveFilter,
    ) -> Result<StoredArtifact, StorageError> {
        self.write_atomically(location, file_name, None, |out| {
            write_archive(source_dir, filter, out)?;
            Ok(())
        })
    }

    /// Stores a stream verbatim (OCI `copy` layer operation).
    pub fn copy_artifact_from_reader(
        &self,
        location: &ArtifactLocation,
        file_name: &str,
        mut reader: impl Read,
    ) -> Result<StoredArtifact, StorageError> {
        self.write_artifact(location, file_name, |out| {
            io::copy(&mut reader, out).map(|_| ())
        })
    }

    fn write_atomically(
        &self,
        location: &ArtifactLocation,
        file_name: &str,
        expected_hex: Option<&str>,
        fill: impl FnOnce(&mut dyn Write) -> Result<(), StorageError>,
    ) -> Result<StoredArtifact, StorageError> {
        reject_reserved_file_name(file_name)?;
        let rel = location.artifact_path(file_name)?;
        let final_path = self.root.join(&rel);
        let dir = self.object_dir(location)?;
        filesystem::create_private_dir(&dir)?;
        let _in_process = self.writers.lock(&final_path);
        let advisory = filesystem::lock_target(&final_path)?;
        // Stamped first: a collection between the link and a later stamp would see the new
        // file as old.
        let stored = filesystem::stamp_written(&advisory, &final_path)
            .and_then(|()| self.store_content(&dir, file_name, expected_hex, fill));
        let digest = match stored {
            Ok(digest) => digest,
            Err(err) => {
                // A write that failed (a full or read-only disk) leaves no lock file behind for an
                // artifact that does not exist; one that replaced nothing had created it.
                if !final_path.exists() {
                    let _ = filesystem::remove_if_present(&lock_path(&final_path));
                }
                drop(advisory);
                return Err(err);
            }
        };
        Ok(self.stored(rel, &digest))
    }

    fn stored(&self, rel: String, digest: &ContentDigest) -> StoredArtifact {
        StoredArtifact {
            url: self.url_for(&rel),
            path: rel,
            size: digest.size,
            digest: digest.to_flux_digest(),
            last_update: jiff::Timestamp::now(),
        }
    }

    /// Writes the content into a temp file among the blobs, publishes it under its digest
    /// unless an intact copy is there already, and links it as `dir/file_name`.
    fn store_content(
        &self,
        dir: &Path,
        file_name: &str,
        expected_hex: Option<&str>,
        fill: impl FnOnce(&mut dyn Write) -> Result<(), StorageError>,
    ) -> Result<ContentDigest, StorageError> {
        let (temp, digest) = filesystem::write_temp(&self.blobs, file_name, fill)?;
        if let Some(expected) = expected_hex.filter(|e| !e.eq_ignore_ascii_case(&digest.hex)) {
            return Err(StorageError::DigestMismatch {
                expected: expected.to_string(),
                actual: digest.hex,
            });
        }
        let blob = blob_path(&self.blobs, &digest.hex);
        let _blob = self.writers.lock(&blob);
        if self.intact_blob_size(&blob, &digest.hex) == Some(digest.size) {
            drop(temp); // the same content is stored already
        } else {
            filesystem::publish(temp, &self.blobs, &blob)?;
        }
        self.link_blob(dir, file_name, &blob, &digest.hex)?;
        Ok(digest)
    }

    /// The size of the blob at `blob` if its content has digest `hex`.
    fn intact_blob_size(&self, blob: &Path, hex: &str) -> Option<u64> {
        let metadata = fs::symlink_metadata(blob).ok()?;
        let intact = metadata.is_file()
            && self
                .digests
                .current(blob, &metadata)
                .is_some_and(|actual| actual.eq_ignore_ascii_case(hex));
        intact.then_some(metadata.len())
    }

    /// Links a blob (whose lock the caller holds) as `dir/file_name`. Linking changes the
    /// blob's metadata (its link count), so its record is renewed.
    fn link_blob(
        &self,
        dir: &Path,
        file_name: &str,
        blob: &Path,
        hex: &str,
    ) -> Result<(), StorageError> {
        filesystem::replace_hard_link(dir, file_name, blob)?;
        let metadata = fs::symlink_metadata(blob).map_err(io_error("stat", blob))?;
        self.digests.remember(blob, &metadata, hex.to_string());
        Ok(())
    }

    /// Points `latest.tar.gz` in the object's directory at `rel_path` (an artifact of that
    /// object) and returns its URL. The link is replaced atomically via a temp link + rename.
    pub fn set_latest(
        &self,
        location: &ArtifactLocation,
        rel_path: &str,
    ) -> Result<String, StorageError> {
        let dir = self.object_dir(location)?;
        let target = self.root.join(safe_relative_path(rel_path)?);
        if target.parent() != Some(dir.as_path()) {
            return Err(StorageError::NotInObjectDir {
                path: rel_path.to_string(),
                object: location.to_string(),
            });
        }
        filesystem::replace_symlink(&dir, LATEST_FILE, &target)?;
        self.latest_url(location)
    }

    /// Whether the object's `latest.tar.gz` points at `rel_path` already.
    pub fn latest_points_at(&self, location: &ArtifactLocation, rel_path: &str) -> bool {
        let (Ok(dir), Ok(target)) = (self.object_dir(location), safe_relative_path(rel_path))
        else {
            return false;
        };
        fs::read_link(dir.join(LATEST_FILE)).is_ok_and(|link| link == self.root.join(target))
    }

    /// The URL of an object's `latest.tar.gz` (`status.url`).
    pub fn latest_url(&self, location: &ArtifactLocation) -> Result<String, StorageError> {
        // Flux always writes `http://` here; honouring an `https://` prefix is a superset.
        Ok(self.url_for(&location.artifact_path(LATEST_FILE)?))
    }

    /// Every object that has a directory for `kind`.
    pub fn stored_objects(&self, kind: &str) -> Vec<ArtifactLocation> {
        let kind = kind.to_lowercase();
        let kind_dir = self.root.join(&kind);
        let names = |dir: &Path| -> Vec<String> {
            fs::read_dir(dir)
                .into_iter()
                .flatten()
                .flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        };
        names(&kind_dir)
            .into_iter()
            .flat_map(|ns| {
                names(&kind_dir.join(&ns))
                    .into_iter()
                    .map(|name| ArtifactLocation::new(&kind, &ns, &name))
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// Whether the artifact a status points at is still on disk with that size and digest.
    /// Cheap when this process wrote or already hashed the file and its metadata is unchanged;
    /// otherwise (e.g. after a restart) the file is hashed once and the result remembered.
    pub fn is_intact(&self, record: &StoredArtifactRecord<'_>) -> bool {
        let Some(expected_hex) = sha256_hex_of(record.digest) else {
            return false; // another algorithm: cannot vouch for it, so let it be rebuilt
        };
        let Ok(rel) = safe_relative_path(record.path) else {
            return false;
        };
        let path = self.root.join(rel);
        let Ok(metadata) = fs::symlink_metadata(&path) else {
            return false;
        };
        if !metadata.is_file() || record.size.is_some_and(|size| size != metadata.len()) {
            return false;
        }
        if let Some(intact) = self.linked_blob_is_intact(&metadata, expected_hex) {
            return intact;
        }
        self.digests
            .current(&path, &metadata)
            .is_some_and(|actual| actual.eq_ignore_ascii_case(expected_hex))
    }

    /// For an object's file that is a link to the blob of `expected_hex`: whether that blob is
    /// intact (one hash serves every object sharing it). `None` for any other file, e.g. one
    /// written before the store kept blobs.
    fn linked_blob_is_intact(&self, file: &Metadata, expected_hex: &str) -> Option<bool> {
        if file.nlink() < 2 {
            return None;
        }
        let blob = blob_path(&self.blobs, expected_hex);
        let metadata = fs::symlink_metadata(&blob).ok()?;
        same_file(file, &metadata).then(|| {
            self.digests
                .current(&blob, &metadata)
                .is_some_and(|actual| actual.eq_ignore_ascii_case(expected_hex))
        })
    }

    /// Removes the blobs no object links to any more and measures what the rest hold. A blob
    /// is only removed under its lock, so one being linked right now is never taken.
    pub fn collect_blobs(&self) -> Result<BlobUsage, StorageError> {
        let mut usage = BlobUsage::default();
        for blob in blobs::blob_files(&self.blobs)? {
            let state = match blobs::blob_state(&blob)? {
                BlobState::Unreferenced => {
                    let _blob = self.writers.lock(&blob);
                    match blobs::blob_state(&blob)? {
                        BlobState::Unreferenced => {
                            filesystem::remove_if_present(&blob)?;
                            self.digests.forget(&blob);
                            usage.removed += 1;
                            continue;
                        }
                        other => other,
                    }
                }
                other => other,
            };
            if let BlobState::Referenced(metadata) = state {
                usage.count(&metadata);
            }
        }
        Ok(usage)
    }

    /// The remembered digest (hex) of `path`, if its metadata still matches the record.
    pub(crate) fn recorded_digest(&self, path: &Path, metadata: &Metadata) -> Option<String> {
        self.digests.recorded(path, metadata)
    }

    /// How many full-file hashes `is_intact` had to compute (the slow path).
    pub fn hashes_computed(&self) -> u64 {
        self.digests.hashes_computed()
    }

    /// Flux's garbage collection for one object (reference §5.7): files older than the TTL go,
    /// then the oldest until at most `retention_records` remain; the current artifact, lock
    /// files and symlinks are never candidates. Returns the deleted artifact paths.
    pub fn gc(
        &self,
        location: &ArtifactLocation,
        current_file: Option<&str>,
    ) -> Result<Vec<PathBuf>, StorageError> {
        let dir = self.object_dir(location)?;
        let current = current_file
            .map(|file| validate_component("file name", file))
            .transpose()?;
        let policy = RetentionPolicy {
            now: SystemTime::now(),
            ttl: self.retention_ttl,
            records: self.retention_records,
        };
        let garbage = gc::garbage_in(&dir, current.map(OsStr::new), &policy)?;
        gc::delete_with_locks(&garbage, |path| self.digests.forget(path))?;
        Ok(garbage.into_iter().map(|c| c.path).collect())
    }

    /// Removes everything stored for an object (on deletion).
    pub fn remove_object(&self, location: &ArtifactLocation) -> Result<(), StorageError> {
        let dir = self.object_dir(location)?;
        filesystem::remove_dir_if_present(&dir)?;
        self.digests.forget_under(&dir);
        Ok(())
    }

    /// Deletes temp files left by a crash anywhere under the root, so no half-written file
    /// survives. Run before serving. Returns what was removed.
    pub fn sweep_on_startup(&self) -> Result<Vec<PathBuf>, StorageError> {
        let removed = gc::sweep_temp_files(&self.root)?;
        // A crash between publishing a blob and linking it leaves a blob nothing links to.
        self.collect_blobs()?;
        Ok(removed)
    }

    /// `<root>/<kind>/<namespace>/<name>`.
    pub fn object_dir(&self, location: &ArtifactLocation) -> Result<PathBuf, StorageError> {
        Ok(self.root.join(location.rel_dir()?))
    }
}

/// The lower-case hex of a `sha256:<hex>` (or bare hex) digest.
fn expected_hex(digest: &str) -> Result<String, StorageError> {
    sha256_hex_of(digest)
        .map(str::to_ascii_lowercase)
        .ok_or_else(|| StorageError::InvalidComponent {
            what: "digest",
            value: digest.to_string(),
            reason: "must be sha256:<64 hex digits>",
        })
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::path::is_temp_file_name;
    use super::testing::{KIND, location, names_in, record, storage, write};
    use super::*;
    use crate::artifact::archive::{KeepAll, archive_dir};

    #[test]
    fn layout_and_urls() {
        let tmp = tempfile::tempdir().unwrap();
        let storage = storage(tmp.path());
        let stored = write(&storage, "sha256:abc.tar.gz", b"content");
        assert_eq!(stored.path, "ocirepository/ns/app/sha256:abc.tar.gz");
        assert_eq!(
            stored.url,
            "http://source-controller.flux-system.svc.cluster.local./ocirepository/ns/app/sha256:abc.tar.gz"
        );
        let on_disk = storage.root().join(&stored.path);
        assert_eq!(fs::read(&on_disk).unwrap(), b"content");
        assert_eq!(
            fs::metadata(&on_disk).unwrap().permissions().mode() & 0o777,
            0o600
        );
        for dir in ["ocirepository", "ocirepository/ns", "ocirepository/ns/app"] {
            let mode = fs::metadata(storage.root().join(dir))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o700, "{dir}");
        }
    }

    #[test]
    fn written_digest_and_size_match_the_file() {
        let tmp = tempfile::tempdir().unwrap();
        let storage = storage(tmp.path());
        let stored = write(&storage, "a.tar.gz", b"hello world");
        assert_eq!(stored.size, 11);
        assert_eq!(
            stored.digest,
            "sha256:b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9"
        );
    }

    #[test]
    fn reserved_names_cannot_be_written() {
        let tmp = tempfile::tempdir().unwrap();
        let storage = storage(tmp.path());
        for file in [LATEST_FILE, "x.tar.gz.lock", ".x.driftless-tmp-0011"] {
            let err = storage
                .copy_artifact_from_reader(&location(), file, &b""[..])
                .unwrap_err();
            assert!(
                matches!(err, StorageError::InvalidComponent { .. }),
                "{file}"
            );
        }
    }

    #[test]
    fn archive_artifact_is_stored_with_its_digest() {
        let tmp = tempfile::tempdir().unwrap();
        let storage = storage(tmp.path());
        let source = tmp.path().join("src");
        fs::create_dir(&source).unwrap();
        fs::write(source.join("a.yaml"), "a: 1").unwrap();
        let stored = storage
            .write_archive_artifact(&location(), "x.tar.gz", &source, &KeepAll)
            .unwrap();
        let mut expected = Vec::new();
        let digest = archive_dir(&source, &KeepAll, &mut expected).unwrap();
        assert_eq!(stored.digest, digest.to_flux_digest());
        assert_eq!(
            fs::read(storage.root().join(&stored.path)).unwrap(),
            expected
        );
    }

    #[test]
    fn archive_failure_is_typed_and_leaves_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let storage = storage(tmp.path());
        let missing = tmp.path().join("missing");
        let err = storage
            .write_archive_artifact(&location(), "x.tar.gz", &missing, &KeepAll)
            .unwrap_err();
        assert!(matches!(err, StorageError::Archive(_)), "{err}");
        let left = names_in(&storage.root().join("ocirepository/ns/app"));
        assert!(left.is_empty(), "{left:?}");
    }

    #[test]
    fn latest_symlink_points_at_the_artifact() {
        let tmp = tempfile::tempdir().unwrap();
        let storage = storage(tmp.path());
        let first = write(&storage, "a.tar.gz", b"first");
        let url = storage.set_latest(&location(), &first.path).unwrap();
        assert_eq!(
            url,
            "http://source-controller.flux-system.svc.cluster.local./ocirepository/ns/app/latest.tar.gz"
        );
        let second = write(&storage, "b.tar.gz", b"second");
        storage.set_latest(&location(), &second.path).unwrap();
        let latest = storage.root().join("ocirepository/ns/app/latest.tar.gz");
        assert_eq!(
            fs::read_link(&latest).unwrap(),
            storage.root().join(&second.path)
        );
        assert!(fs::read_link(&latest).unwrap().is_absolute());
        assert_eq!(fs::read(&latest).unwrap(), b"second");
        let names = names_in(&storage.root().join("ocirepository/ns/app"));
        assert!(
            !names.iter().any(|n| is_temp_file_name(OsStr::new(n))),
            "{names:?}"
        );
    }

    #[test]
    fn latest_must_point_into_the_objects_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let storage = storage(tmp.path());
        write(&storage, "a.tar.gz", b"x");
        let other = ArtifactLocation::new(KIND, "ns", "other");
        let err = storage
            .set_latest(&other, "ocirepository/ns/app/a.tar.gz")
            .unwrap_err();
        assert!(matches!(err, StorageError::NotInObjectDir { .. }));
        let err = storage
            .set_latest(&location(), "ocirepository/ns/app/../../../etc")
            .unwrap_err();
        assert!(matches!(err, StorageError::InvalidComponent { .. }));
    }

    #[test]
    fn remove_object_deletes_the_directory_and_its_records() {
        let tmp = tempfile::tempdir().unwrap();
        let storage = storage(tmp.path());
        let stored = write(&storage, "a.tar.gz", b"x");
        storage.remove_object(&location()).unwrap();
        assert!(!storage.root().join("ocirepository/ns/app").exists());
        assert!(storage.root().join("ocirepository/ns").exists());
        assert!(!storage.is_intact(&record(&stored)));
        storage.remove_object(&location()).unwrap();
    }
}
