//! The artifact store, which ties together where an object's artifacts live (`path`), how they
//! are written and locked (`filesystem`), which old ones go (`gc`), which digests are known
//! (`integrity`) and the URLs they are served at (`url`).
//!
//! The calls are blocking; async callers run them in `tokio::task::spawn_blocking`.

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
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use super::archive::{ArchiveError, ArchiveFilter, write_archive};
use super::digest::sha256_hex_of;
use filesystem::KeyedLocks;
use gc::RetentionPolicy;
use integrity::DigestRecords;
use path::{lock_path, reject_reserved_file_name, safe_relative_path, validate_component};
use url::AdvertisedHost;

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
    advertised_host: AdvertisedHost,
    retention_ttl: Duration,
    retention_records: usize,
    /// Digests of files this process wrote or hashed, valid while their stamp is unchanged.
    digests: DigestRecords,
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
        Ok(Self {
            root,
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

    /// Writes an artifact atomically: `fill` streams the content into a temp file in the
    /// target directory, which is fsynced and renamed over the final name. Size and digest are
    /// computed while writing. A failing (or panicking) `fill` leaves nothing behind.
    pub fn write_artifact(
        &self,
        location: &ArtifactLocation,
        file_name: &str,
        fill: impl FnOnce(&mut dyn Write) -> io::Result<()>,
    ) -> Result<StoredArtifact, StorageError> {
        self.write_atomically(location, file_name, |out| {
            fill(out).map_err(StorageError::Fill)
        })
    }

    /// Stores the deterministic tarball of `source_dir` (reference §5.2).
    pub fn write_archive_artifact(
        &self,
        location: &ArtifactLocation,
        file_name: &str,
        source_dir: &Path,
        filter: &dyn ArchiveFilter,
    ) -> Result<StoredArtifact, StorageError> {
        self.write_atomically(location, file_name, |out| {
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
        fill: impl FnOnce(&mut dyn Write) -> Result<(), StorageError>,
    ) -> Result<StoredArtifact, StorageError> {
        reject_reserved_file_name(file_name)?;
        let rel = location.artifact_path(file_name)?;
        let final_path = self.root.join(&rel);
        let dir = self.object_dir(location)?;
        filesystem::create_private_dir(&dir)?;
        let _in_process = self.writers.lock(&final_path);
        let advisory = filesystem::lock_target(&final_path)?;
        let digest = match filesystem::write_and_rename(&dir, file_name, &final_path, fill) {
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
        let _advisory = advisory;
        let metadata = fs::symlink_metadata(&final_path).map_err(io_error("stat", &final_path))?;
        self.digests
            .remember(&final_path, &metadata, digest.hex.clone());
        Ok(StoredArtifact {
            url: self.url_for(&rel),
            path: rel,
            size: digest.size,
            digest: digest.to_flux_digest(),
            last_update: jiff::Timestamp::now(),
        })
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
        self.digests
            .current(&path, &metadata)
            .is_some_and(|actual| actual.eq_ignore_ascii_case(expected_hex))
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
        gc::sweep_temp_files(&self.root)
    }

    /// `<root>/<kind>/<namespace>/<name>`.
    pub fn object_dir(&self, location: &ArtifactLocation) -> Result<PathBuf, StorageError> {
        Ok(self.root.join(location.rel_dir()?))
    }
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
