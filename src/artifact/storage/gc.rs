//! Garbage collection (reference §5.7): which of an object's files go under the retention TTL
//! and record count, and the start-up sweep of temp files a crash left behind.

use std::ffi::{OsStr, OsString};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::filesystem::remove_if_present;
use super::path::{is_lock_file_name, is_temp_file_name, lock_path};
use super::{StorageError, io_error};

/// Garbage collection gives up on a directory holding more candidates than this.
pub const GC_FILE_LIMIT: usize = 1000;

#[derive(Debug, Clone)]
pub(super) struct GcCandidate {
    pub(super) path: PathBuf,
    name: OsString,
    modified: SystemTime,
    is_temp: bool,
}

/// The files of `dir` that `policy` deletes; none when the directory does not exist.
pub(super) fn garbage_in(
    dir: &Path,
    current: Option<&OsStr>,
    policy: &RetentionPolicy,
) -> Result<Vec<GcCandidate>, StorageError> {
    match list_gc_candidates(dir) {
        Ok(candidates) => Ok(policy.select_garbage(candidates, current)),
        Err(StorageError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
            Ok(Vec::new())
        }
        Err(err) => Err(err),
    }
}

/// Deletes each garbage file and its lock file; `forget` drops what the store remembers of it.
pub(super) fn delete_with_locks(
    garbage: &[GcCandidate],
    mut forget: impl FnMut(&Path),
) -> Result<(), StorageError> {
    for candidate in garbage {
        remove_if_present(&candidate.path)?;
        remove_if_present(&lock_path(&candidate.path))?;
        forget(&candidate.path);
    }
    Ok(())
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
            modified: written_at(&entry.path(), &metadata)?,
            path: entry.path(),
            is_temp: is_temp_file_name(&name),
            name,
        });
    }
    Ok(candidates)
}

/// When an object's file was written or linked: its lock file's modification time (see
/// `filesystem::stamp_written`), else the file's own (a temp file, or a file without a lock).
fn written_at(path: &Path, metadata: &fs::Metadata) -> Result<SystemTime, StorageError> {
    let own = || metadata.modified().map_err(io_error("stat", path));
    match fs::symlink_metadata(lock_path(path)) {
        Ok(lock) if lock.is_file() => lock.modified().or_else(|_| own()),
        _ => own(),
    }
}

/// A lock file (`<artifact>.lock`) whose artifact does not exist.
fn is_orphan_lock(path: &Path) -> bool {
    let Some(name) = path.file_name() else {
        return false;
    };
    is_lock_file_name(name)
        && path
            .to_str()
            .and_then(|p| p.strip_suffix(".lock"))
            .is_some_and(|artifact| !Path::new(artifact).exists())
}

pub(super) struct RetentionPolicy {
    pub(super) now: SystemTime,
    pub(super) ttl: Duration,
    pub(super) records: usize,
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

/// Deletes temp files anywhere under `root`, so no half-written file survives a crash, and lock
/// files whose artifact was never written. Returns what was removed.
pub(super) fn sweep_temp_files(root: &Path) -> Result<Vec<PathBuf>, StorageError> {
    let mut removed = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in fs::read_dir(&dir).map_err(io_error("list", &dir))? {
            let entry = entry.map_err(io_error("list", &dir))?;
            let file_type = entry.file_type().map_err(io_error("stat", &entry.path()))?;
            if file_type.is_dir() {
                dirs.push(entry.path());
            } else if is_temp_file_name(&entry.file_name()) || is_orphan_lock(&entry.path()) {
                remove_if_present(&entry.path())?;
                removed.push(entry.path());
            }
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::super::ArtifactLocation;
    use super::super::testing::{KIND, location, names_in, set_mtime, storage, write};
    use super::*;

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
            .set_latest(&location(), "ocirepository/ns/app/c.tar.gz")
            .unwrap();
        let mut deleted = storage.gc(&location(), Some("c.tar.gz")).unwrap();
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
        let mut deleted = storage.gc(&location(), Some("a.tar.gz")).unwrap();
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
        let missing = ArtifactLocation::new(KIND, "ns", "missing");
        assert!(storage.gc(&missing, None).unwrap().is_empty());
        write(&storage, "a.tar.gz", b"x");
        write(&storage, "b.tar.gz", b"x");
        assert!(storage.gc(&location(), None).unwrap().is_empty());
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
        let deleted = storage.gc(&location(), Some("d.tar.gz")).unwrap();
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
        let err = storage.gc(&location(), None).unwrap_err();
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
        // The lock of an artifact that was never written (the disk filled up, or a crash).
        fs::write(dir.join("b.tar.gz.lock"), b"").unwrap();
        let mut removed = storage.sweep_on_startup().unwrap();
        removed.sort();
        assert_eq!(removed.len(), 4);
        assert!(leftovers.iter().all(|p| !p.exists()));
        assert_eq!(names_in(&dir), ["a.tar.gz", "a.tar.gz.lock"]);
    }

    /// Retention goes by when each object wrote or linked its file, not by the shared copy's
    /// times: content another object stored long ago counts as new for the object that links
    /// it now.
    #[test]
    fn a_file_linked_now_to_an_old_copy_counts_as_new() {
        let tmp = tempfile::tempdir().unwrap();
        let storage = storage(tmp.path());
        let b = ArtifactLocation::new(KIND, "ns", "b");
        let b_dir = storage.root().join("ocirepository/ns/b");
        let a_file = write(&storage, "shared.tar.gz", b"shared content");
        set_mtime(
            &storage.root().join(&a_file.path),
            Duration::from_secs(1200),
        );
        storage
            .copy_artifact_from_reader(&b, "b1.tar.gz", &b"b's first"[..])
            .unwrap();
        set_mtime(&b_dir.join("b1.tar.gz"), Duration::from_secs(600));
        storage
            .copy_artifact_from_reader(&b, "b2.tar.gz", &b"shared content"[..])
            .unwrap();
        storage
            .copy_artifact_from_reader(&b, "b3.tar.gz", &b"b's current"[..])
            .unwrap();
        let deleted = storage.gc(&b, Some("b3.tar.gz")).unwrap();
        assert_eq!(deleted, [b_dir.join("b1.tar.gz")]);
        assert_eq!(
            names_in(&b_dir),
            ["b2.tar.gz", "b2.tar.gz.lock", "b3.tar.gz", "b3.tar.gz.lock"]
        );
        // The other object's file is untouched.
        assert!(storage.root().join(&a_file.path).exists());
    }
}
