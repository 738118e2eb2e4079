//! Each controller process's private temporary directory, with what crashed predecessors left
//! behind purged in the background at start-up (as Flux's source-controller does).

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// Makes a fresh private directory `<TMPDIR>/driftless-<controller>-<id>` and points `TMPDIR` at
/// it, so that every temporary file of the process lands there. The directories of earlier
/// processes that are gone (a crash skips the clean-up of extractions and builds) are removed
/// on a background thread; those of processes still running beside this one (shards sharing a
/// `/tmp`) are left alone: each process holds a lock on its directory's `.lock` sibling.
///
/// Must run before any other thread starts (it sets an environment variable). A failure is
/// logged and leaves `TMPDIR` as it was: the controller works without it.
pub fn use_private_temp_root(controller: &str) {
    let base = std::env::temp_dir();
    match claim_root(&base, &format!("driftless-{controller}")) {
        Ok((root, lock, stale)) => {
            // The lock lives as long as the process.
            std::mem::forget(lock);
            // SAFETY: called from `main` before the runtime or any other thread starts.
            unsafe { std::env::set_var("TMPDIR", &root) };
            if !stale.is_empty() {
                tracing::info!(count = stale.len(), "purging stale temporary directories");
                std::thread::spawn(move || purge(&stale));
            }
        }
        Err(e) => tracing::warn!(
            error = %e,
            base = %base.display(),
            "could not make a private temporary directory; using the shared one"
        ),
    }
}

/// Locks `base/<name>-<id>.lock`, creates `base/<name>-<id>` (mode 0700), and returns both with
/// the stale siblings: `<name>-*` directories whose lock no live process holds, each with its
/// lock file.
fn claim_root(base: &Path, name: &str) -> std::io::Result<(PathBuf, File, Vec<PathBuf>)> {
    let id = format!("{:016x}", rand::random::<u64>());
    let lock_path = base.join(format!("{name}-{id}.lock"));
    let lock = File::create_new(&lock_path)?;
    if !try_lock(&lock) {
        return Err(std::io::Error::other("could not lock a new lock file"));
    }
    let root = base.join(format!("{name}-{id}"));
    create_private_dir(&root)?;
    let prefix = format!("{name}-");
    let mut stale = Vec::new();
    for entry in std::fs::read_dir(base)? {
        let path = entry?.path();
        let Some(file) = path.file_name().and_then(|f| f.to_str()) else {
            continue;
        };
        let Some(owner) = file
            .strip_prefix(&prefix)
            .and_then(|rest| rest.strip_suffix(".lock"))
        else {
            continue;
        };
        if path == lock_path || !abandoned(&path) {
            continue;
        }
        stale.push(base.join(format!("{prefix}{owner}")));
        stale.push(path);
    }
    Ok((root, lock, stale))
}

/// A lock file nobody holds: its process is gone.
fn abandoned(lock_path: &Path) -> bool {
    std::fs::OpenOptions::new()
        .write(true)
        .open(lock_path)
        .is_ok_and(|f| try_lock(&f))
}

fn try_lock(file: &File) -> bool {
    // SAFETY: flock on a descriptor this function borrows; no memory is involved.
    unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) == 0 }
}

fn create_private_dir(path: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(path)
}

/// Removes each path (a symlink itself, never what it points to), the directory before its lock
/// file; failures are logged and the path is tried again at the next start.
fn purge(stale: &[PathBuf]) {
    for path in stale {
        let removed = match path.symlink_metadata() {
            Ok(m) if m.is_dir() => std::fs::remove_dir_all(path),
            Ok(_) => std::fs::remove_file(path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => Err(e),
        };
        match removed {
            Ok(()) => tracing::info!(path = %path.display(), "removed stale temporary directory"),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "could not remove stale temporary directory")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn a_restart_purges_what_dead_processes_left_and_spares_live_ones() {
        let base = tempfile::tempdir().unwrap();
        // A live process (it holds its lock) with work in progress.
        let (live, live_lock, stale) = claim_root(base.path(), "driftless-x").unwrap();
        assert!(stale.is_empty());
        std::fs::write(live.join("extracting"), b"x").unwrap();
        // A dead one: its lock file is not held any more.
        let (dead, dead_lock, _) = claim_root(base.path(), "driftless-x").unwrap();
        std::fs::create_dir(dead.join("half-extracted")).unwrap();
        drop(dead_lock);
        // Not ours: a similar name, and a directory beside them.
        std::fs::create_dir(base.path().join("driftless-xy")).unwrap();
        let outside = base.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("keep"), b"x").unwrap();

        let (mine, _mine_lock, stale) = claim_root(base.path(), "driftless-x").unwrap();
        assert_eq!(stale.len(), 2, "{stale:?}");
        purge(&stale);
        assert!(!dead.exists());
        assert!(
            live.join("extracting").exists(),
            "a live process's files stay"
        );
        assert!(mine.exists() && std::fs::read_dir(&mine).unwrap().count() == 0);
        assert!(outside.join("keep").exists());
        assert_eq!(names(base.path()).len(), 6, "{:?}", names(base.path()));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&mine).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        drop(live_lock);
    }
}
