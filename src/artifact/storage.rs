//! The artifact store: Flux's layout `<root>/<kind>/<namespace>/<name>/<file>` (reference
//! §5.1), atomic writes with digests computed on the way in (§5.2, §5.4), the `latest.tar.gz`
//! symlink (§5.5), URLs (§5.6) and garbage collection (§5.7).
//!
//! The calls are blocking; async callers run them in `tokio::task::spawn_blocking`.

use std::collections::{HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::fs::{self, DirBuilder, File, Metadata, Permissions};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use super::archive::{ArchiveError, ArchiveFilter, write_archive};
use super::digest::{ContentDigest, DigestWriter, digest_reader, sha256_hex_of};

/// The symlink pointing at an object's current artifact.
pub const LATEST_FILE: &str = "latest.tar.gz";
/// Suffix of the advisory lock file kept next to each artifact.
pub const LOCK_SUFFIX: &str = ".lock";
/// Marks temp files; with the leading dot it makes leftovers recognisable after a crash.
pub const TEMP_MARKER: &str = ".driftless-tmp-";
/// Garbage collection gives up on a directory holding more candidates than this.
pub const GC_FILE_LIMIT: usize = 1000;
const DIR_MODE: u32 = 0o700;
const FILE_MODE: u32 = 0o600;

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

/// File metadata that changes whenever the content can have changed (ctime cannot be set
/// back by `utimes`, and a rename-over changes the inode).
#[derive(Debug, Clone, PartialEq, Eq)]
struct FileStamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl FileStamp {
    fn of(metadata: &Metadata) -> Self {
        Self {
            dev: metadata.dev(),
            ino: metadata.ino(),
            size: metadata.size(),
            mtime: (metadata.mtime(), metadata.mtime_nsec()),
            ctime: (metadata.ctime(), metadata.ctime_nsec()),
        }
    }
}

#[derive(Debug, Clone)]
struct DigestRecord {
    stamp: FileStamp,
    hex: String,
}

pub struct Storage {
    root: PathBuf,
    advertised_host: String,
    retention_ttl: Duration,
    retention_records: usize,
    /// Digests of files this process wrote or hashed, valid while their stamp is unchanged.
    digests: Mutex<HashMap<PathBuf, DigestRecord>>,
    writers: KeyedLocks,
    hashes_computed: AtomicU64,
}

impl std::fmt::Debug for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Storage")
            .field("root", &self.root)
            .field("advertised_host", &self.advertised_host)
            .finish_non_exhaustive()
    }
}

impl Storage {
    /// Creates the root if needed and resolves it, so that symlink targets and the HTTP
    /// server's containment check use one canonical path.
    pub fn new(config: StorageConfig) -> Result<Self, StorageError> {
        create_private_dir(&config.root)?;
        let root = fs::canonicalize(&config.root).map_err(io_error("resolve", &config.root))?;
        Ok(Self {
            root,
            advertised_host: config.advertised_host,
            retention_ttl: config.retention_ttl,
            retention_records: config.retention_records,
            digests: Mutex::new(HashMap::new()),
            writers: KeyedLocks::default(),
            hashes_computed: AtomicU64::new(0),
        })
    }

    /// The canonical storage root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `http://<host>/<path>`, or `<host>/<path>` when the host is already an `http(s)://`
    /// prefix (how operators advertise HTTPS through a proxy).
    pub fn url_for(&self, rel_path: &str) -> String {
        let path = rel_path.trim_start_matches('/');
        let host = &self.advertised_host;
        if host.starts_with("http://") || host.starts_with("https://") {
            format!("{}/{path}", host.trim_end_matches('/'))
        } else {
            format!("http://{host}/{path}")
        }
    }

    /// Writes an artifact atomically: `fill` streams the content into a temp file in the
    /// target directory, which is fsynced and renamed over the final name. Size and digest are
    /// computed while writing. A failing (or panicking) `fill` leaves nothing behind.
    pub fn write_artifact(
        &self,
        kind: &str,
        namespace: &str,
        name: &str,
        file_name: &str,
        fill: impl FnOnce(&mut dyn Write) -> io::Result<()>,
    ) -> Result<StoredArtifact, StorageError> {
        self.write_atomically(kind, namespace, name, file_name, |out| {
            fill(out).map_err(StorageError::Fill)
        })
    }

    /// Stores the deterministic tarball of `source_dir` (reference §5.2).
    pub fn write_archive_artifact(
        &self,
        kind: &str,
        namespace: &str,
        name: &str,
        file_name: &str,
        source_dir: &Path,
        filter: &dyn ArchiveFilter,
    ) -> Result<StoredArtifact, StorageError> {
        self.write_atomically(kind, namespace, name, file_name, |out| {
            write_archive(source_dir, filter, out)?;
            Ok(())
        })
    }

    /// Stores a stream verbatim (OCI `copy` layer operation).
    pub fn copy_artifact_from_reader(
        &self,
        kind: &str,
        namespace: &str,
        name: &str,
        file_name: &str,
        mut reader: impl Read,
    ) -> Result<StoredArtifact, StorageError> {
        self.write_artifact(kind, namespace, name, file_name, |out| {
            io::copy(&mut reader, out).map(|_| ())
        })
    }

    fn write_atomically(
        &self,
        kind: &str,
        namespace: &str,
        name: &str,
        file_name: &str,
        fill: impl FnOnce(&mut dyn Write) -> Result<(), StorageError>,
    ) -> Result<StoredArtifact, StorageError> {
        reject_reserved_file_name(file_name)?;
        let rel = artifact_path(kind, namespace, name, file_name)?;
        let final_path = self.root.join(&rel);
        let dir = self.object_dir(kind, namespace, name)?;
        create_private_dir(&dir)?;
        let _in_process = self.writers.lock(&final_path);
        let _advisory = lock_target(&final_path)?;
        let digest = write_and_rename(&dir, file_name, &final_path, fill)?;
        self.remember_written(&final_path, &digest)?;
        Ok(StoredArtifact {
            url: self.url_for(&rel),
            path: rel,
            size: digest.size,
            digest: digest.to_flux_digest(),
            last_update: jiff::Timestamp::now(),
        })
    }

    fn remember_written(&self, path: &Path, digest: &ContentDigest) -> Result<(), StorageError> {
        let metadata = fs::symlink_metadata(path).map_err(io_error("stat", path))?;
        self.remember(path, FileStamp::of(&metadata), digest.hex.clone());
        Ok(())
    }

    /// Points `latest.tar.gz` in the object's directory at `rel_path` (an artifact of that
    /// object) and returns its URL. The link is replaced atomically via a temp link + rename.
    pub fn set_latest(
        &self,
        kind: &str,
        namespace: &str,
        name: &str,
        rel_path: &str,
    ) -> Result<String, StorageError> {
        let dir = self.object_dir(kind, namespace, name)?;
        let target = self.root.join(safe_relative_path(rel_path)?);
        if target.parent() != Some(dir.as_path()) {
            return Err(StorageError::NotInObjectDir {
                path: rel_path.to_string(),
                object: format!("{kind}/{namespace}/{name}"),
            });
        }
        let temp = TempPath::new(dir.join(temp_file_name(LATEST_FILE)));
        std::os::unix::fs::symlink(&target, temp.path())
            .map_err(io_error("symlink", temp.path()))?;
        let latest = dir.join(LATEST_FILE);
        fs::rename(temp.path(), &latest).map_err(io_error("rename", &latest))?;
        temp.keep();
        sync_dir(&dir)?;
        self.latest_url(kind, namespace, name)
    }

    /// The URL of an object's `latest.tar.gz` (`status.url`).
    pub fn latest_url(
        &self,
        kind: &str,
        namespace: &str,
        name: &str,
    ) -> Result<String, StorageError> {
        // Flux always writes `http://` here; honouring an `https://` prefix is a superset.
        Ok(self.url_for(&artifact_path(kind, namespace, name, LATEST_FILE)?))
    }

    /// The `(namespace, name)` of every object that has a directory for `kind`.
    pub fn stored_objects(&self, kind: &str) -> Vec<(String, String)> {
        let kind_dir = self.root.join(kind.to_lowercase());
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
                    .map(move |name| (ns.clone(), name))
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
        let actual = match self.recorded_digest(&path, &metadata) {
            Some(hex) => hex,
            None => match self.rehash(&path) {
                Some(hex) => hex,
                None => return false,
            },
        };
        actual.eq_ignore_ascii_case(expected_hex)
    }

    /// The remembered digest (hex) of `path`, if its metadata still matches the record.
    pub(crate) fn recorded_digest(&self, path: &Path, metadata: &Metadata) -> Option<String> {
        let digests = lock(&self.digests);
        let record = digests.get(path)?;
        (record.stamp == FileStamp::of(metadata)).then(|| record.hex.clone())
    }

    fn rehash(&self, path: &Path) -> Option<String> {
        let file = File::open(path).ok()?;
        let before = FileStamp::of(&file.metadata().ok()?);
        let digest = digest_reader(BufReader::new(&file)).ok()?;
        self.hashes_computed.fetch_add(1, Ordering::Relaxed);
        let after = FileStamp::of(&file.metadata().ok()?);
        // A file that changed while being hashed gets no record: the next check hashes again.
        if before == after {
            self.remember(path, after, digest.hex.clone());
        }
        Some(digest.hex)
    }

    fn remember(&self, path: &Path, stamp: FileStamp, hex: String) {
        lock(&self.digests).insert(path.to_path_buf(), DigestRecord { stamp, hex });
    }

    fn forget_under(&self, dir: &Path) {
        lock(&self.digests).retain(|path, _| !path.starts_with(dir));
    }

    /// How many full-file hashes `is_intact` had to compute (the slow path).
    pub fn hashes_computed(&self) -> u64 {
        self.hashes_computed.load(Ordering::Relaxed)
    }

    /// Flux's garbage collection for one object (reference §5.7): files older than the TTL go,
    /// then the oldest until at most `retention_records` remain; the current artifact, lock
    /// files and symlinks are never candidates. Returns the deleted artifact paths.
    pub fn gc(
        &self,
        kind: &str,
        namespace: &str,
        name: &str,
        current_file: Option<&str>,
    ) -> Result<Vec<PathBuf>, StorageError> {
        let dir = self.object_dir(kind, namespace, name)?;
        let current = current_file
            .map(|file| validate_component("file name", file))
            .transpose()?;
        let candidates = match list_gc_candidates(&dir) {
            Ok(candidates) => candidates,
            Err(StorageError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                return Ok(Vec::new());
            }
            Err(err) => return Err(err),
        };
        let policy = RetentionPolicy {
            now: SystemTime::now(),
            ttl: self.retention_ttl,
            records: self.retention_records,
        };
        let garbage = policy.select_garbage(candidates, current.map(OsStr::new));
        self.delete_with_locks(&garbage)?;
        Ok(garbage.into_iter().map(|c| c.path).collect())
    }

    fn delete_with_locks(&self, garbage: &[GcCandidate]) -> Result<(), StorageError> {
        for candidate in garbage {
            remove_if_present(&candidate.path)?;
            remove_if_present(&lock_path(&candidate.path))?;
            lock(&self.digests).remove(&candidate.path);
        }
        Ok(())
    }

    /// Removes everything stored for an object (on deletion).
    pub fn remove_object(
        &self,
        kind: &str,
        namespace: &str,
        name: &str,
    ) -> Result<(), StorageError> {
        let dir = self.object_dir(kind, namespace, name)?;
        match fs::remove_dir_all(&dir) {
            Ok(()) => {}
            Err(err) if err.kind() == io::ErrorKind::NotFound => {}
            Err(err) => return Err(io_error("remove", &dir)(err)),
        }
        self.forget_under(&dir);
        Ok(())
    }

    /// Deletes temp files left by a crash anywhere under the root, so no half-written file
    /// survives. Run before serving. Returns what was removed.
    pub fn sweep_on_startup(&self) -> Result<Vec<PathBuf>, StorageError> {
        let mut removed = Vec::new();
        let mut dirs = vec![self.root.clone()];
        while let Some(dir) = dirs.pop() {
            for entry in fs::read_dir(&dir).map_err(io_error("list", &dir))? {
                let entry = entry.map_err(io_error("list", &dir))?;
                let file_type = entry.file_type().map_err(io_error("stat", &entry.path()))?;
                if file_type.is_dir() {
                    dirs.push(entry.path());
                } else if is_temp_file_name(&entry.file_name()) {
                    remove_if_present(&entry.path())?;
                    removed.push(entry.path());
                }
            }
        }
        Ok(removed)
    }

    pub fn object_dir(
        &self,
        kind: &str,
        namespace: &str,
        name: &str,
    ) -> Result<PathBuf, StorageError> {
        Ok(self.root.join(object_rel_dir(kind, namespace, name)?))
    }
}

/// `<kind-lowercase>/<namespace>/<name>/<file_name>`, each part a single safe component.
pub fn artifact_path(
    kind: &str,
    namespace: &str,
    name: &str,
    file_name: &str,
) -> Result<String, StorageError> {
    let dir = object_rel_dir(kind, namespace, name)?;
    let file_name = validate_component("file name", file_name)?;
    Ok(format!("{dir}/{file_name}"))
}

fn object_rel_dir(kind: &str, namespace: &str, name: &str) -> Result<String, StorageError> {
    let kind = kind.to_lowercase();
    validate_component("kind", &kind)?;
    validate_component("namespace", namespace)?;
    validate_component("name", name)?;
    Ok(format!("{kind}/{namespace}/{name}"))
}

fn validate_component<'a>(what: &'static str, value: &'a str) -> Result<&'a str, StorageError> {
    let reason = if value.is_empty() {
        Some("must not be empty")
    } else if value == "." || value == ".." {
        Some("must not be . or ..")
    } else if value.contains('/') || value.contains('\\') {
        Some("must be a single path component")
    } else if value.contains('\0') {
        Some("must not contain NUL")
    } else {
        None
    };
    match reason {
        None => Ok(value),
        Some(reason) => Err(StorageError::InvalidComponent {
            what,
            value: value.to_string(),
            reason,
        }),
    }
}

/// Names the store uses for its own bookkeeping cannot be artifact names.
fn reject_reserved_file_name(file_name: &str) -> Result<(), StorageError> {
    let reserved = file_name == LATEST_FILE
        || file_name.ends_with(LOCK_SUFFIX)
        || is_temp_file_name(OsStr::new(file_name));
    if reserved {
        return Err(StorageError::InvalidComponent {
            what: "file name",
            value: file_name.to_string(),
            reason: "reserved for the store's own files",
        });
    }
    Ok(())
}

/// A stored relative path (`a/b/c`, optionally with a leading `/`) as a path under the root.
fn safe_relative_path(rel_path: &str) -> Result<PathBuf, StorageError> {
    let trimmed = rel_path.trim_start_matches('/');
    let mut path = PathBuf::new();
    for component in trimmed.split('/') {
        path.push(validate_component("path component", component)?);
    }
    Ok(path)
}

/// Whether a file name is one of this store's temp files.
pub fn is_temp_file_name(name: &OsStr) -> bool {
    let name = name.as_encoded_bytes();
    name.starts_with(b".")
        && name
            .windows(TEMP_MARKER.len())
            .any(|window| window == TEMP_MARKER.as_bytes())
}

/// Whether a file name is an artifact's advisory lock file.
pub fn is_lock_file_name(name: &OsStr) -> bool {
    name.as_encoded_bytes().ends_with(LOCK_SUFFIX.as_bytes())
}

fn temp_file_name(final_name: &str) -> String {
    format!(".{final_name}{TEMP_MARKER}{:016x}", rand::random::<u64>())
}

fn lock_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(LOCK_SUFFIX);
    PathBuf::from(name)
}

fn create_private_dir(dir: &Path) -> Result<(), StorageError> {
    DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)
        .map_err(io_error("create directory", dir))
}

/// The advisory lock Flux takes on `<artifact>.lock`; the file stays on disk, as in Flux.
fn lock_target(final_path: &Path) -> Result<File, StorageError> {
    let path = lock_path(final_path);
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(FILE_MODE)
        .open(&path)
        .map_err(io_error("open lock file", &path))?;
    file.lock().map_err(io_error("lock", &path))?;
    Ok(file)
}

fn write_and_rename(
    dir: &Path,
    file_name: &str,
    final_path: &Path,
    fill: impl FnOnce(&mut dyn Write) -> Result<(), StorageError>,
) -> Result<ContentDigest, StorageError> {
    let temp = TempPath::new(dir.join(temp_file_name(file_name)));
    let file = File::options()
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .open(temp.path())
        .map_err(io_error("create", temp.path()))?;
    let mut writer = DigestWriter::new(BufWriter::new(file));
    fill(&mut writer)?;
    let (buffered, digest) = writer.finish();
    let file = buffered
        .into_inner()
        .map_err(|err| io_error("write", temp.path())(err.into_error()))?;
    // The mode given at creation is subject to the umask; make it exactly 0600.
    file.set_permissions(Permissions::from_mode(FILE_MODE))
        .map_err(io_error("chmod", temp.path()))?;
    file.sync_all().map_err(io_error("fsync", temp.path()))?;
    drop(file);
    fs::rename(temp.path(), final_path).map_err(io_error("rename", final_path))?;
    temp.keep();
    sync_dir(dir)?;
    Ok(digest)
}

/// Makes a rename durable.
fn sync_dir(dir: &Path) -> Result<(), StorageError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error("fsync", dir))
}

fn remove_if_present(path: &Path) -> Result<(), StorageError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(err) => Err(io_error("remove", path)(err)),
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // The guarded maps stay consistent even if a holder panicked.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Removes a temp file on drop unless it was renamed into place.
struct TempPath {
    path: PathBuf,
    keep: bool,
}

impl TempPath {
    fn new(path: PathBuf) -> Self {
        Self { path, keep: false }
    }

    fn path(&self) -> &Path {
        &self.path
    }

    fn keep(mut self) {
        self.keep = true;
    }
}

impl Drop for TempPath {
    fn drop(&mut self) {
        if !self.keep {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// In-process exclusion per target path. `flock` alone suffices across processes; this also
/// serialises threads of this process without relying on per-descriptor lock semantics.
#[derive(Default)]
struct KeyedLocks {
    held: Mutex<HashSet<PathBuf>>,
    released: Condvar,
}

struct KeyedGuard<'a> {
    locks: &'a KeyedLocks,
    key: PathBuf,
}

impl KeyedLocks {
    fn lock(&self, key: &Path) -> KeyedGuard<'_> {
        let mut held = lock(&self.held);
        while held.contains(key) {
            held = self
                .released
                .wait(held)
                .unwrap_or_else(PoisonError::into_inner);
        }
        held.insert(key.to_path_buf());
        KeyedGuard {
            locks: self,
            key: key.to_path_buf(),
        }
    }
}

impl Drop for KeyedGuard<'_> {
    fn drop(&mut self) {
        lock(&self.locks.held).remove(&self.key);
        self.locks.released.notify_all();
    }
}

#[derive(Debug, Clone)]
struct GcCandidate {
    path: PathBuf,
    name: OsString,
    modified: SystemTime,
    is_temp: bool,
}

/// Regular files of an object's directory, except lock files; symlinks are not followed.
fn list_gc_candidates(dir: &Path) -> Result<Vec<GcCandidate>, StorageError> {
    let mut candidates = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_error("list", dir))? {
        let entry = entry.map_err(io_error("list", dir))?;
        let metadata = entry.metadata().map_err(io_error("stat", &entry.path()))?;
        let name = entry.file_name();
        if !metadata.is_file() || is_lock_file_name(&name) {
            continue;
        }
        if candidates.len() == GC_FILE_LIMIT {
            return Err(StorageError::TooManyFiles {
                dir: dir.to_path_buf(),
                limit: GC_FILE_LIMIT,
            });
        }
        candidates.push(GcCandidate {
            path: entry.path(),
            is_temp: is_temp_file_name(&name),
            name,
            modified: metadata
                .modified()
                .map_err(io_error("stat", &entry.path()))?,
        });
    }
    Ok(candidates)
}

struct RetentionPolicy {
    now: SystemTime,
    ttl: Duration,
    records: usize,
}

impl RetentionPolicy {
    /// Expired non-current files, then the oldest non-current ones until at most `records`
    /// remain. Temp files are only removed once expired and never count as records, so a
    /// write in progress is not pulled from under its writer (Flux counts them).
    fn select_garbage(
        &self,
        candidates: Vec<GcCandidate>,
        current: Option<&OsStr>,
    ) -> Vec<GcCandidate> {
        let is_current = |c: &GcCandidate| Some(c.name.as_os_str()) == current;
        let (mut garbage, mut remaining): (Vec<_>, Vec<_>) = candidates
            .into_iter()
            .partition(|c| !is_current(c) && self.is_expired(c));
        remaining.retain(|c| !c.is_temp);
        remaining.sort_by(|a, b| {
            a.modified
                .cmp(&b.modified)
                .then_with(|| a.name.cmp(&b.name))
        });
        let mut excess = remaining.len().saturating_sub(self.records);
        for candidate in remaining {
            if excess == 0 {
                break;
            }
            if !is_current(&candidate) {
                garbage.push(candidate);
                excess -= 1;
            }
        }
        garbage
    }

    fn is_expired(&self, candidate: &GcCandidate) -> bool {
        self.now
            .duration_since(candidate.modified)
            .is_ok_and(|age| age > self.ttl)
    }
}

/// The host artifact URLs use, derived like Flux does: `--storage-adv-addr` if set, else
/// `--storage-addr` with an empty host turned into `localhost` and `0.0.0.0` into this
/// machine's hostname (`$HOSTNAME` first).
pub fn advertised_host_from_addr(
    storage_addr: &str,
    adv_addr: &str,
) -> Result<String, StorageError> {
    if !adv_addr.is_empty() {
        return Ok(adv_addr.to_string());
    }
    advertised_host_with(storage_addr, system_hostname)
}

fn advertised_host_with(
    storage_addr: &str,
    hostname: impl FnOnce() -> Option<String>,
) -> Result<String, StorageError> {
    let invalid = |reason| StorageError::InvalidAddress {
        addr: storage_addr.to_string(),
        reason,
    };
    let (host, port) = split_host_port(storage_addr).map_err(invalid)?;
    let host = match host {
        "" => "localhost".to_string(),
        "0.0.0.0" => {
            hostname().ok_or_else(|| invalid("0.0.0.0 given but the hostname is unknown"))?
        }
        other => other.to_string(),
    };
    Ok(join_host_port(&host, port))
}

/// Go's `net.SplitHostPort`, enough for listen addresses.
fn split_host_port(addr: &str) -> Result<(&str, &str), &'static str> {
    if let Some(rest) = addr.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or("missing ']' in address")?;
        let port = after.strip_prefix(':').ok_or("missing port in address")?;
        return Ok((host, port));
    }
    let (host, port) = addr.rsplit_once(':').ok_or("missing port in address")?;
    if host.contains(':') {
        return Err("too many colons in address");
    }
    Ok((host, port))
}

fn join_host_port(host: &str, port: &str) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

fn system_hostname() -> Option<String> {
    let from_env = std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty());
    from_env.or_else(|| {
        fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::FileTimes;
    use std::sync::Arc;

    const KIND: &str = "OCIRepository";

    fn storage_with(dir: &Path, ttl: Duration, records: usize) -> Storage {
        Storage::new(StorageConfig {
            root: dir.join("data"),
            advertised_host: "source-controller.flux-system.svc.cluster.local.".into(),
            retention_ttl: ttl,
            retention_records: records,
        })
        .unwrap()
    }

    fn storage(dir: &Path) -> Storage {
        storage_with(dir, Duration::from_secs(60), 2)
    }

    fn write(storage: &Storage, file: &str, content: &[u8]) -> StoredArtifact {
        storage
            .copy_artifact_from_reader(KIND, "ns", "app", file, content)
            .unwrap()
    }

    fn names_in(dir: &Path) -> Vec<String> {
        let mut names: Vec<_> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    fn set_mtime(path: &Path, age: Duration) {
        let file = File::options().write(true).open(path).unwrap();
        file.set_times(FileTimes::new().set_modified(SystemTime::now() - age))
            .unwrap();
    }

    fn record<'a>(stored: &'a StoredArtifact) -> StoredArtifactRecord<'a> {
        StoredArtifactRecord {
            path: &stored.path,
            size: Some(stored.size),
            digest: &stored.digest,
        }
    }

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
    fn url_for_honours_scheme_prefixes() {
        let tmp = tempfile::tempdir().unwrap();
        let mut storage = storage(tmp.path());
        assert_eq!(
            storage.url_for("/a/b"),
            "http://source-controller.flux-system.svc.cluster.local./a/b"
        );
        storage.advertised_host = "https://artifacts.example.com".into();
        assert_eq!(storage.url_for("a/b"), "https://artifacts.example.com/a/b");
        storage.advertised_host = "http://proxy:8080/prefix/".into();
        assert_eq!(storage.url_for("a/b"), "http://proxy:8080/prefix/a/b");
        storage.advertised_host = "localhost:9090".into();
        assert_eq!(storage.url_for("a/b"), "http://localhost:9090/a/b");
    }

    #[test]
    fn advertised_host_derivation() {
        let host = || Some("pod-1".to_string());
        assert_eq!(
            advertised_host_with(":9090", host).unwrap(),
            "localhost:9090"
        );
        assert_eq!(
            advertised_host_with("0.0.0.0:9090", host).unwrap(),
            "pod-1:9090"
        );
        assert_eq!(
            advertised_host_with("10.0.0.1:80", host).unwrap(),
            "10.0.0.1:80"
        );
        assert_eq!(
            advertised_host_with("[::1]:9090", host).unwrap(),
            "[::1]:9090"
        );
        assert!(advertised_host_with("9090", host).is_err());
        assert!(advertised_host_with("::1:9090", host).is_err());
        assert!(advertised_host_with("0.0.0.0:9090", || None).is_err());
        assert_eq!(
            advertised_host_from_addr(":9090", "adv.example:80").unwrap(),
            "adv.example:80"
        );
    }

    #[test]
    fn path_components_must_be_single_and_normal() {
        for (kind, ns, name, file) in [
            ("..", "ns", "app", "f"),
            ("kind", "", "app", "f"),
            ("kind", "ns", "a/b", "f"),
            ("kind", "ns", "app", ".."),
            ("kind", "ns", "app", "."),
            ("kind", "ns", "app", "x\\y"),
            ("kind", "ns", "app", "x\0y"),
        ] {
            let err = artifact_path(kind, ns, name, file).unwrap_err();
            assert!(
                matches!(err, StorageError::InvalidComponent { .. }),
                "{kind}/{ns}/{name}/{file}"
            );
        }
        assert_eq!(
            artifact_path("Bucket", "ns", "b", "f.tar.gz").unwrap(),
            "bucket/ns/b/f.tar.gz"
        );
    }

    #[test]
    fn reserved_names_cannot_be_written() {
        let tmp = tempfile::tempdir().unwrap();
        let storage = storage(tmp.path());
        for file in [LATEST_FILE, "x.tar.gz.lock", ".x.driftless-tmp-0011"] {
            let err = storage
                .copy_artifact_from_reader(KIND, "ns", "app", file, &b""[..])
                .unwrap_err();
            assert!(
                matches!(err, StorageError::InvalidComponent { .. }),
                "{file}"
            );
        }
    }

    #[test]
    fn failing_fill_leaves_no_file_and_no_temp_file() {
        let tmp = tempfile::tempdir().unwrap();
        let storage = storage(tmp.path());
        let err = storage
            .write_artifact(KIND, "ns", "app", "a.tar.gz", |out| {
                out.write_all(b"partial")?;
                Err(io::Error::other("upstream broke"))
            })
            .unwrap_err();
        assert!(matches!(err, StorageError::Fill(_)));
        let dir = storage.root().join("ocirepository/ns/app");
        assert_eq!(names_in(&dir), ["a.tar.gz.lock"]);
    }

    #[test]
    fn panicking_fill_leaves_no_temp_file_and_releases_the_lock() {
        let tmp = tempfile::tempdir().unwrap();
        let storage = storage(tmp.path());
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            storage.write_artifact(KIND, "ns", "app", "a.tar.gz", |out| {
                out.write_all(b"partial")?;
                panic!("fill panicked");
            })
        }));
        assert!(result.is_err());
        let dir = storage.root().join("ocirepository/ns/app");
        assert_eq!(names_in(&dir), ["a.tar.gz.lock"]);
        write(&storage, "a.tar.gz", b"after the panic");
    }

    #[test]
    fn failed_overwrite_keeps_the_previous_content() {
        let tmp = tempfile::tempdir().unwrap();
        let storage = storage(tmp.path());
        let stored = write(&storage, "a.tar.gz", b"good");
        let _ = storage.write_artifact(KIND, "ns", "app", "a.tar.gz", |out| {
            out.write_all(b"bad bad bad")?;
            Err(io::Error::other("nope"))
        });
        assert_eq!(
            fs::read(storage.root().join(&stored.path)).unwrap(),
            b"good"
        );
        assert!(storage.is_intact(&record(&stored)));
    }

    #[test]
    fn concurrent_writers_of_one_target_never_interleave() {
        let tmp = tempfile::tempdir().unwrap();
        let storage = Arc::new(storage(tmp.path()));
        let threads: Vec<_> = (0..8u8)
            .map(|i| {
                let storage = storage.clone();
                std::thread::spawn(move || {
                    let content = vec![i; 256 * 1024];
                    storage
                        .write_artifact(KIND, "ns", "app", "a.tar.gz", |out| {
                            for chunk in content.chunks(4096) {
                                out.write_all(chunk)?;
                            }
                            Ok(())
                        })
                        .unwrap()
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        let content = fs::read(storage.root().join("ocirepository/ns/app/a.tar.gz")).unwrap();
        assert_eq!(content.len(), 256 * 1024);
        assert!(content.iter().all(|b| *b == content[0]));
        assert_eq!(
            names_in(&storage.root().join("ocirepository/ns/app")),
            ["a.tar.gz", "a.tar.gz.lock"]
        );
    }

    #[test]
    fn archive_artifact_is_stored_with_its_digest() {
        let tmp = tempfile::tempdir().unwrap();
        let storage = storage(tmp.path());
        let source = tmp.path().join("src");
        fs::create_dir(&source).unwrap();
        fs::write(source.join("a.yaml"), "a: 1").unwrap();
        let stored = storage
            .write_archive_artifact(
                KIND,
                "ns",
                "app",
                "x.tar.gz",
                &source,
                &super::super::archive::KeepAll,
            )
            .unwrap();
        let mut expected = Vec::new();
        let digest = super::super::archive::archive_dir(
            &source,
            &super::super::archive::KeepAll,
            &mut expected,
        )
        .unwrap();
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
            .write_archive_artifact(
                KIND,
                "ns",
                "app",
                "x.tar.gz",
                &missing,
                &super::super::archive::KeepAll,
            )
            .unwrap_err();
        assert!(matches!(err, StorageError::Archive(_)), "{err}");
        assert_eq!(
            names_in(&storage.root().join("ocirepository/ns/app")),
            ["x.tar.gz.lock"]
        );
    }

    #[test]
    fn latest_symlink_points_at_the_artifact() {
        let tmp = tempfile::tempdir().unwrap();
        let storage = storage(tmp.path());
        let first = write(&storage, "a.tar.gz", b"first");
        let url = storage.set_latest(KIND, "ns", "app", &first.path).unwrap();
        assert_eq!(
            url,
            "http://source-controller.flux-system.svc.cluster.local./ocirepository/ns/app/latest.tar.gz"
        );
        let second = write(&storage, "b.tar.gz", b"second");
        storage.set_latest(KIND, "ns", "app", &second.path).unwrap();
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
        let err = storage
            .set_latest(KIND, "ns", "other", "ocirepository/ns/app/a.tar.gz")
            .unwrap_err();
        assert!(matches!(err, StorageError::NotInObjectDir { .. }));
        let err = storage
            .set_latest(KIND, "ns", "app", "ocirepository/ns/app/../../../etc")
            .unwrap_err();
        assert!(matches!(err, StorageError::InvalidComponent { .. }));
    }

    #[test]
    fn intact_check_uses_the_write_record_without_hashing() {
        let tmp = tempfile::tempdir().unwrap();
        let storage = storage(tmp.path());
        let stored = write(&storage, "a.tar.gz", b"content");
        for _ in 0..3 {
            assert!(storage.is_intact(&record(&stored)));
        }
        assert_eq!(storage.hashes_computed(), 0);
    }

    #[test]
    fn intact_check_after_restart_hashes_once() {
        let tmp = tempfile::tempdir().unwrap();
        let stored = write(&storage(tmp.path()), "a.tar.gz", b"content");
        let restarted = storage(tmp.path());
        assert!(restarted.is_intact(&record(&stored)));
        assert!(restarted.is_intact(&record(&stored)));
        assert_eq!(restarted.hashes_computed(), 1);
    }

    #[test]
    fn intact_check_accepts_bare_hex_and_no_size() {
        let tmp = tempfile::tempdir().unwrap();
        let storage = storage(tmp.path());
        let stored = write(&storage, "a.tar.gz", b"content");
        let bare = stored.digest.trim_start_matches("sha256:");
        let record = StoredArtifactRecord {
            path: &stored.path,
            size: None,
            digest: bare,
        };
        assert!(storage.is_intact(&record));
    }

    #[test]
    fn tampered_content_with_same_size_and_mtime_is_detected() {
        let tmp = tempfile::tempdir().unwrap();
        let storage = storage(tmp.path());
        let stored = write(&storage, "a.tar.gz", b"content");
        let path = storage.root().join(&stored.path);
        let mtime = fs::metadata(&path).unwrap().modified().unwrap();
        fs::write(&path, b"CONTENT").unwrap();
        File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_times(FileTimes::new().set_modified(mtime))
            .unwrap();
        assert!(!storage.is_intact(&record(&stored)));
        assert_eq!(storage.hashes_computed(), 1);
    }

    #[test]
    fn intact_check_rejects_missing_resized_and_mismatched() {
        let tmp = tempfile::tempdir().unwrap();
        let storage = storage(tmp.path());
        let stored = write(&storage, "a.tar.gz", b"content");
        let wrong_size = StoredArtifactRecord {
            size: Some(99),
            ..record(&stored)
        };
        assert!(!storage.is_intact(&wrong_size));
        let other_digest = format!("sha256:{}", "0".repeat(64));
        let wrong_digest = StoredArtifactRecord {
            digest: &other_digest,
            ..record(&stored)
        };
        assert!(!storage.is_intact(&wrong_digest));
        let other_algo = StoredArtifactRecord {
            digest: "sha512:abcd",
            ..record(&stored)
        };
        assert!(!storage.is_intact(&other_algo));
        let escape = StoredArtifactRecord {
            path: "../../etc/passwd",
            ..record(&stored)
        };
        assert!(!storage.is_intact(&escape));
        fs::remove_file(storage.root().join(&stored.path)).unwrap();
        assert!(!storage.is_intact(&record(&stored)));
    }

    #[test]
    fn gc_deletes_expired_files_and_their_locks_but_never_the_current_one() {
        let tmp = tempfile::tempdir().unwrap();
        let storage = storage(tmp.path());
        for file in ["a.tar.gz", "b.tar.gz", "c.tar.gz", "d.tar.gz"] {
            write(&storage, file, file.as_bytes());
        }
        let dir = storage.root().join("ocirepository/ns/app");
        set_mtime(&dir.join("a.tar.gz"), Duration::from_secs(600));
        set_mtime(&dir.join("b.tar.gz"), Duration::from_secs(300));
        set_mtime(&dir.join("c.tar.gz"), Duration::from_secs(900));
        storage
            .set_latest(KIND, "ns", "app", "ocirepository/ns/app/c.tar.gz")
            .unwrap();
        let mut deleted = storage.gc(KIND, "ns", "app", Some("c.tar.gz")).unwrap();
        deleted.sort();
        assert_eq!(deleted, [dir.join("a.tar.gz"), dir.join("b.tar.gz")]);
        assert_eq!(
            names_in(&dir),
            [
                "c.tar.gz",
                "c.tar.gz.lock",
                "d.tar.gz",
                "d.tar.gz.lock",
                "latest.tar.gz"
            ]
        );
    }

    #[test]
    fn gc_keeps_at_most_the_configured_number_of_records() {
        let tmp = tempfile::tempdir().unwrap();
        let storage = storage(tmp.path());
        let dir = storage.root().join("ocirepository/ns/app");
        for (i, file) in ["a.tar.gz", "b.tar.gz", "c.tar.gz", "d.tar.gz"]
            .iter()
            .enumerate()
        {
            write(&storage, file, b"x");
            set_mtime(&dir.join(file), Duration::from_secs(40 - 10 * i as u64));
        }
        // a is the oldest but current; b and c are the oldest others.
        let mut deleted = storage.gc(KIND, "ns", "app", Some("a.tar.gz")).unwrap();
        deleted.sort();
        assert_eq!(deleted, [dir.join("b.tar.gz"), dir.join("c.tar.gz")]);
        assert_eq!(
            names_in(&dir),
            ["a.tar.gz", "a.tar.gz.lock", "d.tar.gz", "d.tar.gz.lock"]
        );
    }

    #[test]
    fn gc_without_current_and_nothing_to_do() {
        let tmp = tempfile::tempdir().unwrap();
        let storage = storage(tmp.path());
        assert!(storage.gc(KIND, "ns", "missing", None).unwrap().is_empty());
        write(&storage, "a.tar.gz", b"x");
        write(&storage, "b.tar.gz", b"x");
        assert!(storage.gc(KIND, "ns", "app", None).unwrap().is_empty());
    }

    #[test]
    fn gc_removes_stale_temp_files_only() {
        let tmp = tempfile::tempdir().unwrap();
        let storage = storage(tmp.path());
        write(&storage, "a.tar.gz", b"x");
        let dir = storage.root().join("ocirepository/ns/app");
        let stale = dir.join(".b.tar.gz.driftless-tmp-00000000000000aa");
        let fresh = dir.join(".c.tar.gz.driftless-tmp-00000000000000bb");
        fs::write(&stale, b"half").unwrap();
        fs::write(&fresh, b"in progress").unwrap();
        set_mtime(&stale, Duration::from_secs(3600));
        write(&storage, "d.tar.gz", b"x");
        let deleted = storage.gc(KIND, "ns", "app", Some("d.tar.gz")).unwrap();
        assert_eq!(deleted, [stale]);
        assert!(fresh.exists());
    }

    #[test]
    fn gc_stops_with_an_error_beyond_the_file_limit() {
        let tmp = tempfile::tempdir().unwrap();
        let storage = storage(tmp.path());
        let dir = storage.root().join("ocirepository/ns/app");
        fs::create_dir_all(&dir).unwrap();
        for i in 0..=GC_FILE_LIMIT {
            fs::write(dir.join(format!("{i}.tar.gz")), b"").unwrap();
        }
        let err = storage.gc(KIND, "ns", "app", None).unwrap_err();
        assert!(matches!(
            err,
            StorageError::TooManyFiles {
                limit: GC_FILE_LIMIT,
                ..
            }
        ));
        assert_eq!(fs::read_dir(&dir).unwrap().count(), GC_FILE_LIMIT + 1);
    }

    #[test]
    fn retention_policy_counts_the_current_file_among_the_records() {
        let now = SystemTime::now();
        let candidate = |name: &str, age: u64| GcCandidate {
            path: PathBuf::from(name),
            name: name.into(),
            modified: now - Duration::from_secs(age),
            is_temp: false,
        };
        let policy = RetentionPolicy {
            now,
            ttl: Duration::from_secs(60),
            records: 1,
        };
        let garbage = policy.select_garbage(
            vec![
                candidate("old", 10),
                candidate("current", 20),
                candidate("new", 5),
            ],
            Some(OsStr::new("current")),
        );
        let names: Vec<_> = garbage.iter().map(|c| c.name.clone()).collect();
        assert_eq!(names, ["old", "new"]);
    }

    #[test]
    fn remove_object_deletes_the_directory_and_its_records() {
        let tmp = tempfile::tempdir().unwrap();
        let storage = storage(tmp.path());
        let stored = write(&storage, "a.tar.gz", b"x");
        storage.remove_object(KIND, "ns", "app").unwrap();
        assert!(!storage.root().join("ocirepository/ns/app").exists());
        assert!(storage.root().join("ocirepository/ns").exists());
        assert!(!storage.is_intact(&record(&stored)));
        storage.remove_object(KIND, "ns", "app").unwrap();
    }

    #[test]
    fn sweep_removes_leftover_temp_files_everywhere() {
        let tmp = tempfile::tempdir().unwrap();
        let storage = storage(tmp.path());
        write(&storage, "a.tar.gz", b"x");
        let dir = storage.root().join("ocirepository/ns/app");
        let other = storage.root().join("bucket/ns/b");
        fs::create_dir_all(&other).unwrap();
        let leftovers = [
            dir.join(".a.tar.gz.driftless-tmp-0000000000000001"),
            other.join(".x.tar.gz.driftless-tmp-0000000000000002"),
        ];
        for path in &leftovers {
            fs::write(path, b"half").unwrap();
        }
        std::os::unix::fs::symlink("/nowhere", dir.join(".latest.tar.gz.driftless-tmp-03"))
            .unwrap();
        let mut removed = storage.sweep_on_startup().unwrap();
        removed.sort();
        assert_eq!(removed.len(), 3);
        assert!(leftovers.iter().all(|p| !p.exists()));
        assert_eq!(names_in(&dir), ["a.tar.gz", "a.tar.gz.lock"]);
    }

    #[test]
    fn temp_and_lock_names_are_recognised() {
        assert!(is_temp_file_name(OsStr::new(&temp_file_name("a.tar.gz"))));
        assert!(!is_temp_file_name(OsStr::new("a.tar.gz")));
        assert!(!is_temp_file_name(OsStr::new("x.driftless-tmp-1")));
        assert!(is_lock_file_name(OsStr::new("a.tar.gz.lock")));
        assert!(!is_lock_file_name(OsStr::new("a.tar.gz")));
    }
}
