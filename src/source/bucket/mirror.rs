//! A persistent copy of a Bucket's indexed objects in storage, so that a change downloads only the
//! objects whose etag changed and deletes the keys that went away.

// It lives in the object's storage directory under a dot-name, which the artifact server never
// serves and object deletion removes with the artifacts.
//
// Crash safety: the record of what the files hold (`index`) is removed before the files change and
// written again after; a mirror found without its record starts over empty.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::io::{BufReader, BufWriter};
use std::path::{Component, Path, PathBuf};

use futures::StreamExt;

use super::client::BucketClient;
use super::index::{Index, normalize_etag, unsafe_key};
use super::object::{BucketError, Fetched};
use crate::artifact::ignore::SOURCE_IGNORE_FILE;
// Temp files carry storage's marker, so the start-up sweep removes any a crash left.
use crate::artifact::storage::TEMP_MARKER;

const MIRROR_DIR: &str = ".mirror";
const FILES_DIR: &str = "files";
const RECORD_FILE: &str = "index";

pub struct Mirror {
    root: PathBuf,
}

/// What a sync did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SyncStats {
    pub downloaded: u64,
    pub downloaded_bytes: u64,
    pub removed: u64,
}

/// How downloads are bounded.
#[derive(Debug, Clone, Copy)]
pub struct SyncLimits {
    pub concurrency: usize,
    pub max_object_bytes: u64,
}

impl Mirror {
    /// `object_dir` is the Bucket's directory in storage (`<root>/bucket/<ns>/<name>`).
    pub fn new(object_dir: &Path) -> Self {
        Mirror {
            root: object_dir.join(MIRROR_DIR),
        }
    }

    /// The tree the artifact is archived from.
    pub fn files(&self) -> PathBuf {
        self.root.join(FILES_DIR)
    }

    /// What the files hold, when that is known.
    pub fn recorded(&self) -> Option<Index> {
        let file = std::fs::File::open(self.root.join(RECORD_FILE)).ok()?;
        Index::read_from(BufReader::new(file)).ok()
    }

    fn forget_record(&self) -> std::io::Result<()> {
        match std::fs::remove_file(self.root.join(RECORD_FILE)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    fn record(&self, index: &Index) -> std::io::Result<()> {
        let path = self.root.join(RECORD_FILE);
        let temp = self.root.join(format!(
            ".{RECORD_FILE}{TEMP_MARKER}{:016x}",
            rand::random::<u64>()
        ));
        let mut out = BufWriter::new(std::fs::File::create(&temp)?);
        index.write_to(&mut out)?;
        out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        std::fs::rename(&temp, &path)
    }

    /// Brings the files in line with `wanted`: downloads new and changed objects, deletes
    /// removed ones, and places the bucket's root `.sourceignore`. `wanted` is updated with
    /// the etags the downloads returned and loses objects that vanished in between.
    /// `recorded` is what the mirror held (`Mirror::recorded`), `versions` the listed versions
    /// of the objects to download (GCS generations). Memory holds the index once: it moves
    /// into the blocking steps and back rather than being copied.
    pub async fn sync(
        &self,
        client: &BucketClient,
        wanted: &mut Index,
        recorded: Option<Index>,
        versions: &HashMap<String, String>,
        source_ignore: Option<&[u8]>,
        limits: SyncLimits,
    ) -> Result<SyncStats, SyncError> {
        let files = self.files();
        let fresh = recorded.is_none();
        let (index, fetch, removed) = {
            let (root, files, index) = (self.root.clone(), files.clone(), std::mem::take(wanted));
            blocking(move || {
                let (fetch, remove) = plan(recorded.as_ref(), &index, &files);
                drop(recorded);
                std::fs::create_dir_all(&root).map_err(io("create", &root))?;
                Mirror { root: root.clone() }
                    .forget_record()
                    .map_err(io("remove record in", &root))?;
                if fresh {
                    remove_tree(&files)?;
                }
                std::fs::create_dir_all(&files).map_err(io("create", &files))?;
                for key in &remove {
                    remove_file_and_empty_parents(&files, key)?;
                }
                Ok((index, fetch, remove.len() as u64))
            })
            .await?
        };
        *wanted = index;
        let style = client.etag_style();
        let mut stats = SyncStats {
            removed,
            ..Default::default()
        };
        // Only what differs from the listing is kept: vanished objects and changed etags.
        let mut updates: Vec<(String, Option<String>)> = Vec::new();
        let index: &Index = wanted;
        let mut downloads = futures::stream::iter(fetch.into_iter().map(|key| {
            let files = files.clone();
            let listed_etag = index.get(&key).map(str::to_string);
            let version = versions.get(&key).cloned();
            async move {
                let fetched = fetch_into(
                    client,
                    &files,
                    &key,
                    listed_etag.as_deref(),
                    version.as_deref(),
                    limits,
                )
                .await?;
                Ok::<_, SyncError>((key, listed_etag, fetched))
            }
        }))
        .buffer_unordered(limits.concurrency.max(1));
        while let Some(result) = downloads.next().await {
            let (key, listed, fetched) = result?;
            match fetched {
                Fetched::NotFound => {
                    tracing::debug!(%key, "object vanished between listing and download");
                    updates.push((key, None));
                }
                Fetched::Written { etag, bytes } => {
                    stats.downloaded += 1;
                    stats.downloaded_bytes += bytes;
                    let etag = normalize_etag(style, &etag);
                    if !etag.is_empty() && listed.as_deref() != Some(etag.as_str()) {
                        updates.push((key, Some(etag)));
                    }
                }
            }
        }
        drop(downloads);
        for (key, etag) in updates {
            match etag {
                Some(etag) => wanted.insert(key, etag),
                None => {
                    wanted.remove(&key);
                }
            }
        }
        let (root, files, index) = (self.root.clone(), files.clone(), std::mem::take(wanted));
        let ignore = source_ignore.map(<[u8]>::to_vec);
        *wanted = blocking(move || {
            let path = files.join(SOURCE_IGNORE_FILE);
            match ignore {
                Some(bytes) => std::fs::write(&path, bytes).map_err(io("write", &path))?,
                None => remove_if_present(&path)?,
            }
            Mirror { root: root.clone() }
                .record(&index)
                .map_err(io("record", &root))?;
            Ok(index)
        })
        .await?;
        Ok(stats)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("failed to get '{key}' object: {source}")]
    Object {
        key: String,
        #[source]
        source: BucketError,
    },
    #[error("{0}")]
    Storage(String),
}

impl SyncError {
    /// How long the server asked to wait before the next request, if it did.
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            SyncError::Object { source, .. } => source.retry_after(),
            SyncError::Storage(_) => None,
        }
    }
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> SyncError {
    let path = path.display().to_string();
    move |e| SyncError::Storage(format!("{what} {path}: {e}"))
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, SyncError> + Send + 'static,
) -> Result<T, SyncError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| SyncError::Storage(e.to_string()))?
}

/// Keys to download (new, changed, or missing on disk) and keys to delete. Without a record
/// everything is downloaded.
fn plan(recorded: Option<&Index>, wanted: &Index, files: &Path) -> (Vec<String>, Vec<String>) {
    let Some(recorded) = recorded else {
        return (wanted.keys().map(str::to_string).collect(), Vec::new());
    };
    let fetch = wanted
        .iter()
        .filter(|(key, etag)| recorded.get(key) != Some(*etag) || !holds_file(files, key))
        .map(|(key, _)| key.to_string())
        .collect();
    let remove = recorded
        .keys()
        .filter(|key| wanted.get(key).is_none())
        .map(str::to_string)
        .collect();
    (fetch, remove)
}

/// Downloads one object next to its final path and renames it into place.
async fn fetch_into(
    client: &BucketClient,
    files: &Path,
    key: &str,
    listed_etag: Option<&str>,
    version: Option<&str>,
    limits: SyncLimits,
) -> Result<Fetched, SyncError> {
    let dest = confined(files, key)?;
    let parent = dest.parent().unwrap_or(files).to_path_buf();
    tokio::fs::create_dir_all(&parent)
        .await
        .map_err(|e| SyncError::Object {
            key: key.to_string(),
            source: BucketError::Write {
                path: key.to_string(),
                source: e,
            },
        })?;
    let base = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temp = parent.join(format!(
        ".{}{TEMP_MARKER}{:016x}",
        truncate_name(&base),
        rand::random::<u64>()
    ));
    let outcome = client
        .fetch(
            key,
            listed_etag.map(|e| (e, version)),
            &temp,
            limits.max_object_bytes,
        )
        .await;
    let result = match outcome {
        Ok(Fetched::Written { etag, bytes }) => tokio::fs::rename(&temp, &dest)
            .await
            .map(|()| Fetched::Written { etag, bytes })
            .map_err(|e| BucketError::Write {
                path: key.to_string(),
                source: e,
            }),
        Ok(Fetched::NotFound) => {
            let (files, gone) = (files.to_path_buf(), key.to_string());
            let _ = blocking(move || remove_file_and_empty_parents(&files, &gone)).await;
            Ok(Fetched::NotFound)
        }
        Err(e) => Err(e),
    };
    if result.is_err() || matches!(result, Ok(Fetched::NotFound)) {
        let _ = tokio::fs::remove_file(&temp).await;
    }
    result.map_err(|source| SyncError::Object {
        key: key.to_string(),
        source,
    })
}

/// Temp names stay under the file-system's component limit whatever the key's length.
fn truncate_name(name: &str) -> &str {
    let mut end = name.len().min(200);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    &name[..end]
}

fn remove_if_present(path: &Path) -> Result<(), SyncError> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io("remove", path)(e)),
        _ => Ok(()),
    }
}

fn remove_tree(path: &Path) -> Result<(), SyncError> {
    match std::fs::remove_dir_all(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io("remove", path)(e)),
        _ => Ok(()),
    }
}

/// The segments of `key` as file names, when every one of them is a plain name: no root, no
/// `.` or `..`, no separator, nothing empty. Only such names are ever joined onto `files`, so
/// a path built from them cannot leave it, whatever a record or a listing said.
fn plain_segments(key: &str) -> Option<Vec<&OsStr>> {
    if unsafe_key(key).is_some() {
        return None;
    }
    key.split('/')
        .map(|segment| {
            let mut parts = Path::new(segment).components();
            match (parts.next(), parts.next()) {
                (Some(Component::Normal(name)), None) if name == OsStr::new(segment) => Some(name),
                _ => None,
            }
        })
        .collect()
}

/// `files/<key>`, or an error for a key that could leave `files`.
fn confined(files: &Path, key: &str) -> Result<PathBuf, SyncError> {
    let segments = plain_segments(key).ok_or_else(|| outside(key))?;
    Ok(segments.iter().fold(files.to_path_buf(), |p, s| p.join(s)))
}

fn outside(key: &str) -> SyncError {
    SyncError::Storage(format!(
        "refusing mirror path for key '{}': not a plain relative path",
        key.escape_debug()
    ))
}

/// Whether the key's file is in the mirror, as a regular file reached through real
/// directories only.
fn holds_file(files: &Path, key: &str) -> bool {
    let Some(segments) = plain_segments(key) else {
        return false;
    };
    let Some((name, dirs)) = segments.split_last() else {
        return false;
    };
    real_dirs(files, dirs)
        .ok()
        .flatten()
        .and_then(|dir| std::fs::symlink_metadata(dir.join(name)).ok())
        .is_some_and(|m| m.file_type().is_file())
}

/// `files/<dirs...>` when `files` and every step below it is a directory and not a symlink
/// (`None` when one is missing or is something else: then nothing of the mirror's is there).
fn real_dirs(files: &Path, dirs: &[&OsStr]) -> Result<Option<PathBuf>, SyncError> {
    let mut dir = files.to_path_buf();
    for step in std::iter::once(None).chain(dirs.iter().map(Some)) {
        if let Some(name) = step {
            dir.push(name);
        }
        match std::fs::symlink_metadata(&dir) {
            Ok(m) if m.file_type().is_dir() => {}
            Ok(_) => return Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io("inspect", &dir)(e)),
        }
    }
    Ok(Some(dir))
}

/// Deletes a key's file and the directories it leaves empty (never `files` itself). The path
/// is built from plain names only and walked without following a symlink: the removal stays
/// inside `files` whatever the key says and whatever the tree holds.
fn remove_file_and_empty_parents(files: &Path, key: &str) -> Result<(), SyncError> {
    let segments = plain_segments(key).ok_or_else(|| outside(key))?;
    let Some((name, dirs)) = segments.split_last() else {
        return Ok(());
    };
    let Some(mut dir) = real_dirs(files, dirs)? else {
        return Ok(());
    };
    let path = dir.join(name);
    match std::fs::symlink_metadata(&path) {
        // A directory where the key's file was is another key's: left alone.
        Ok(m) if m.file_type().is_dir() => return Ok(()),
        Ok(_) => remove_if_present(&path)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io("inspect", &path)(e)),
    }
    for _ in dirs {
        if std::fs::remove_dir(&dir).is_err() {
            break;
        }
        dir.pop();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index(pairs: &[(&str, &str)]) -> Index {
        let mut i = Index::default();
        for (k, v) in pairs {
            i.insert(k.to_string(), v.to_string());
        }
        i
    }

    #[test]
    fn plan_fetches_changed_new_and_missing_files_and_removes_gone_keys() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("same"), "x").unwrap();
        std::fs::write(dir.path().join("changed"), "x").unwrap();
        let recorded = index(&[
            ("same", "1"),
            ("changed", "1"),
            ("gone", "1"),
            ("lost", "1"),
        ]);
        let wanted = index(&[("same", "1"), ("changed", "2"), ("new", "1"), ("lost", "1")]);
        let (mut fetch, remove) = plan(Some(&recorded), &wanted, dir.path());
        fetch.sort();
        assert_eq!(fetch, ["changed", "lost", "new"]);
        assert_eq!(remove, ["gone"]);
        let (fetch, remove) = plan(None, &wanted, dir.path());
        assert_eq!(fetch.len(), 4);
        assert!(remove.is_empty());
    }

    #[test]
    fn removing_a_key_prunes_its_empty_directories_only() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("a/b")).unwrap();
        std::fs::write(dir.path().join("a/b/c.yaml"), "x").unwrap();
        std::fs::write(dir.path().join("a/keep.yaml"), "x").unwrap();
        remove_file_and_empty_parents(dir.path(), "a/b/c.yaml").unwrap();
        assert!(!dir.path().join("a/b").exists());
        assert!(dir.path().join("a/keep.yaml").exists());
        remove_file_and_empty_parents(dir.path(), "a/keep.yaml").unwrap();
        assert!(!dir.path().join("a").exists());
        assert!(dir.path().exists());
    }

    /// A key that would leave `files` is refused before any path is built from it, whether it
    /// came from a listing or from a record.
    #[test]
    fn removals_refuse_keys_that_leave_the_mirror() {
        let dir = tempfile::tempdir().unwrap();
        let files = dir.path().join("files");
        std::fs::create_dir_all(&files).unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "keep").unwrap();
        let absolute = victim.display().to_string();
        for key in [
            absolute.as_str(),
            "../victim",
            "a/../../victim",
            "./../victim",
            "",
        ] {
            assert!(
                remove_file_and_empty_parents(&files, key).is_err(),
                "{key:?} refused"
            );
            assert!(confined(&files, key).is_err(), "{key:?} has no mirror path");
        }
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep");
        assert_eq!(
            confined(&files, "a/z 1/b.yaml").unwrap(),
            files.join("a").join("z 1").join("b.yaml")
        );
    }

    /// The walk to a key's file never follows a symlink: not in place of a directory, not as
    /// the mirror's root, and a symlink where the file was is removed itself, not its target.
    #[test]
    fn removals_never_follow_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        let elsewhere = dir.path().join("elsewhere");
        std::fs::create_dir_all(elsewhere.join("sub")).unwrap();
        std::fs::write(elsewhere.join("sub/victim.yaml"), "keep").unwrap();
        std::fs::write(elsewhere.join("target.yaml"), "keep").unwrap();
        let files = dir.path().join("files");
        std::fs::create_dir_all(&files).unwrap();
        std::os::unix::fs::symlink(&elsewhere, files.join("link")).unwrap();
        std::os::unix::fs::symlink(elsewhere.join("target.yaml"), files.join("file.yaml")).unwrap();
        remove_file_and_empty_parents(&files, "link/sub/victim.yaml").unwrap();
        assert!(elsewhere.join("sub/victim.yaml").is_file());
        assert!(!holds_file(&files, "link/sub/victim.yaml"));
        remove_file_and_empty_parents(&files, "file.yaml").unwrap();
        assert!(!files.join("file.yaml").exists());
        assert!(elsewhere.join("target.yaml").is_file());

        let linked_root = dir.path().join("linked-files");
        std::os::unix::fs::symlink(&elsewhere, &linked_root).unwrap();
        remove_file_and_empty_parents(&linked_root, "target.yaml").unwrap();
        assert!(elsewhere.join("target.yaml").is_file());
    }

    /// A record in the first format (`<key> <etag>` lines) is not read: the mirror starts
    /// over instead of deleting what such lines name.
    #[test]
    fn a_first_format_record_is_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let mirror = Mirror::new(dir.path());
        std::fs::create_dir_all(&mirror.root).unwrap();
        std::fs::write(
            mirror.root.join(RECORD_FILE),
            "z 1\n/data/ocirepository/victim/app/latest.tar.gz abc\n",
        )
        .unwrap();
        assert_eq!(mirror.recorded(), None);
    }

    #[test]
    fn a_mirror_without_its_record_is_unknown() {
        let dir = tempfile::tempdir().unwrap();
        let mirror = Mirror::new(dir.path());
        assert_eq!(mirror.recorded(), None);
        let i = index(&[("k", "e")]);
        std::fs::create_dir_all(&mirror.root).unwrap();
        mirror.record(&i).unwrap();
        assert_eq!(mirror.recorded(), Some(i));
        mirror.forget_record().unwrap();
        assert_eq!(mirror.recorded(), None);
    }
}
