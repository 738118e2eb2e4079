//! The store's file-system work: private directories, advisory and in-process locks, atomic
//! write-then-rename (§5.2, §5.4), the atomic swap of a symlink (§5.5) and removal.

use std::collections::HashSet;
use std::fs::{self, DirBuilder, File, Permissions};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex, PoisonError};

use super::path::{lock_path, temp_file_name};
use super::{StorageError, io_error, lock};
use crate::artifact::digest::{ContentDigest, DigestWriter};

const DIR_MODE: u32 = 0o700;
const FILE_MODE: u32 = 0o600;

pub(super) fn create_private_dir(dir: &Path) -> Result<(), StorageError> {
    DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)
        .map_err(io_error("create directory", dir))
}

/// The advisory lock Flux takes on `<artifact>.lock`; the file stays on disk, as in Flux.
pub(super) fn lock_target(final_path: &Path) -> Result<File, StorageError> {
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

/// Sets the lock file's modification time to now: the time this object's file was written or
/// linked, which retention goes by (the file's own times belong to the stored copy, which other
/// objects share).
pub(super) fn stamp_written(lock: &File, final_path: &Path) -> Result<(), StorageError> {
    lock.set_times(std::fs::FileTimes::new().set_modified(std::time::SystemTime::now()))
        .map_err(io_error("stamp", &lock_path(final_path)))
}

/// Streams `fill` into a temp file in `dir` and fsyncs it; the caller publishes it (or drops
/// it, which removes it). Size and digest are computed on the way.
pub(super) fn write_temp(
    dir: &Path,
    file_name: &str,
    fill: impl FnOnce(&mut dyn Write) -> Result<(), StorageError>,
) -> Result<(TempPath, ContentDigest), StorageError> {
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
    Ok((temp, digest))
}

/// Renames a written temp file over `final_path` (in the same directory, `dir`) durably, so
/// the final name only ever shows complete content.
pub(super) fn publish(temp: TempPath, dir: &Path, final_path: &Path) -> Result<(), StorageError> {
    fs::rename(temp.path(), final_path).map_err(io_error("rename", final_path))?;
    temp.keep();
    sync_dir(dir)
}

/// Makes `dir/file_name` a hard link to `target`, replacing what was there atomically (a temp
/// link renamed over it). Hard links are how one stored copy serves many objects.
pub(super) fn replace_hard_link(
    dir: &Path,
    file_name: &str,
    target: &Path,
) -> Result<(), StorageError> {
    let temp = TempPath::new(dir.join(temp_file_name(file_name)));
    fs::hard_link(target, temp.path()).map_err(io_error("link", temp.path()))?;
    let link = dir.join(file_name);
    fs::rename(temp.path(), &link).map_err(io_error("rename", &link))?;
    // Renaming a link over another link to the same file does nothing and leaves the temp
    // link: dropping `temp` (not kept) removes it if so.
    drop(temp);
    sync_dir(dir)
}

/// Points `dir/link_name` at `target`, replacing any previous link atomically via a temp link
/// and a rename.
pub(super) fn replace_symlink(
    dir: &Path,
    link_name: &str,
    target: &Path,
) -> Result<(), StorageError> {
    let temp = TempPath::new(dir.join(temp_file_name(link_name)));
    std::os::unix::fs::symlink(target, temp.path()).map_err(io_error("symlink", temp.path()))?;
    let link = dir.join(link_name);
    fs::rename(temp.path(), &link).map_err(io_error("rename", &link))?;
    temp.keep();
    sync_dir(dir)
}

/// Makes a rename durable.
fn sync_dir(dir: &Path) -> Result<(), StorageError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error("fsync", dir))
}

pub(super) fn remove_if_present(path: &Path) -> Result<(), StorageError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(err) => Err(io_error("remove", path)(err)),
    }
}

pub(super) fn remove_dir_if_present(dir: &Path) -> Result<(), StorageError> {
    match fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(err) => Err(io_error("remove", dir)(err)),
    }
}

/// Removes a temp file on drop unless it was renamed into place.
pub(super) struct TempPath {
    path: PathBuf,
    keep: bool,
}

impl TempPath {
    fn new(path: PathBuf) -> Self {
        Self { path, keep: false }
    }

    pub(super) fn path(&self) -> &Path {
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
pub(super) struct KeyedLocks {
    held: Mutex<HashSet<PathBuf>>,
    released: Condvar,
}

pub(super) struct KeyedGuard<'a> {
    locks: &'a KeyedLocks,
    key: PathBuf,
}

impl KeyedLocks {
    pub(super) fn lock(&self, key: &Path) -> KeyedGuard<'_> {
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

#[cfg(test)]
mod tests {
    use std::io;
    use std::sync::Arc;

    use super::super::testing::{location, names_in, record, storage, write};
    use super::*;

    #[test]
    fn failing_fill_leaves_no_file_no_temp_file_and_no_lock() {
        let tmp = tempfile::tempdir().unwrap();
        let storage = storage(tmp.path());
        let err = storage
            .write_artifact(&location(), "a.tar.gz", |out| {
                out.write_all(b"partial")?;
                Err(io::Error::other("upstream broke"))
            })
            .unwrap_err();
        assert!(matches!(err, StorageError::Fill(_)));
        let dir = storage.root().join("ocirepository/ns/app");
        assert!(names_in(&dir).is_empty(), "{:?}", names_in(&dir));
    }

    #[test]
    fn panicking_fill_leaves_no_temp_file_and_releases_the_lock() {
        let tmp = tempfile::tempdir().unwrap();
        let storage = storage(tmp.path());
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            storage.write_artifact(&location(), "a.tar.gz", |out| {
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
        let _ = storage.write_artifact(&location(), "a.tar.gz", |out| {
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
                        .write_artifact(&location(), "a.tar.gz", |out| {
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
}
