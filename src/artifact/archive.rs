//! Deterministic tar.gz of a directory tree in Flux's artifact format (reference §5.2).

// Walk order is lexical and depth-first, the root is the entry `.`, and every header is
// sanitised (uid/gid 0, no user/group names, mtime 0, normalised mode), so the same tree
// always produces the same bytes regardless of ownership, timestamps or `readdir` order.

use std::fs::{self, File, Metadata};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use flate2::Compression;
use flate2::write::GzEncoder;

use super::digest::{ContentDigest, DigestWriter};

/// Name of the root directory entry, as Flux writes it.
const ROOT_ENTRY: &str = ".";
const DIR_MODE: u32 = 0o750;
const EXECUTABLE_FILE_MODE: u32 = 0o700;
const FILE_MODE: u32 = 0o600;

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("archive source {0} is not a directory")]
    NotADirectory(PathBuf),
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("{path} changed while it was being archived")]
    Changed { path: PathBuf },
    #[error("cannot write the archive: {0}")]
    Write(io::Error),
}

impl From<ArchiveError> for io::Error {
    fn from(err: ArchiveError) -> Self {
        match err {
            ArchiveError::Write(source) => source,
            other => io::Error::other(other),
        }
    }
}

/// Decides whether a path (relative to the archive root) is left out.
/// Flux applies it to each path on its own: a skipped directory's children are still offered.
pub trait ArchiveFilter {
    fn skip(&self, rel_path: &Path, is_dir: bool) -> bool;
}

impl<F: Fn(&Path, bool) -> bool> ArchiveFilter for F {
    fn skip(&self, rel_path: &Path, is_dir: bool) -> bool {
        self(rel_path, is_dir)
    }
}

/// Keeps every path.
pub struct KeepAll;

impl ArchiveFilter for KeepAll {
    fn skip(&self, _rel_path: &Path, _is_dir: bool) -> bool {
        false
    }
}

impl ArchiveFilter for super::ignore::IgnoreRules {
    fn skip(&self, rel_path: &Path, is_dir: bool) -> bool {
        self.is_ignored(rel_path, is_dir)
    }
}

/// Archives `root` into `out` and returns the size and digest of the gzip bytes written.
pub fn archive_dir<W: Write>(
    root: &Path,
    filter: &dyn ArchiveFilter,
    out: W,
) -> Result<ContentDigest, ArchiveError> {
    let writer = write_archive(root, filter, DigestWriter::new(out))?;
    Ok(writer.finish().1)
}

/// How entry permission bits are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Modes {
    /// source-controller's normalisation: 0750 directories, 0700 executables, 0600 files.
    Normalized,
    /// `flux push artifact`'s layers: permission bits as on disk (no setuid/setgid/sticky).
    Preserved,
}

impl Modes {
    fn dir(self, metadata: Option<&Metadata>) -> u32 {
        match (self, metadata) {
            (Modes::Preserved, Some(m)) => m.permissions().mode() & 0o777,
            _ => DIR_MODE,
        }
    }

    fn file(self, on_disk: u32) -> u32 {
        match self {
            Modes::Preserved => on_disk & 0o777,
            Modes::Normalized => file_mode(on_disk),
        }
    }
}

/// Archives `root` into `out` without hashing, for callers that already hash the sink.
pub fn write_archive<W: Write>(
    root: &Path,
    filter: &dyn ArchiveFilter,
    out: W,
) -> Result<W, ArchiveError> {
    write_archive_with_modes(root, filter, out, Modes::Normalized)
}

/// [`write_archive`] with a choice of how permission bits are recorded.
pub fn write_archive_with_modes<W: Write>(
    root: &Path,
    filter: &dyn ArchiveFilter,
    out: W,
    modes: Modes,
) -> Result<W, ArchiveError> {
    ensure_directory(root)?;
    // Go's compress/gzip default level and an empty header (no name, mtime 0) keep it stable.
    let gzip = GzEncoder::new(out, Compression::default());
    let mut tar = tar::Builder::new(gzip);
    append_root(&mut tar, root, modes)?;
    walk_tree(root, filter, &mut tar, modes)?;
    let gzip = tar.into_inner().map_err(ArchiveError::Write)?;
    let mut out = gzip.finish().map_err(ArchiveError::Write)?;
    out.flush().map_err(ArchiveError::Write)?;
    Ok(out)
}

fn ensure_directory(root: &Path) -> Result<(), ArchiveError> {
    let metadata = fs::metadata(root).map_err(|source| ArchiveError::Read {
        path: root.to_path_buf(),
        source,
    })?;
    if metadata.is_dir() {
        Ok(())
    } else {
        Err(ArchiveError::NotADirectory(root.to_path_buf()))
    }
}

fn append_root<W: Write>(
    tar: &mut tar::Builder<W>,
    root: &Path,
    modes: Modes,
) -> Result<(), ArchiveError> {
    let metadata = fs::metadata(root).ok();
    let mut header = sanitized_header(tar::EntryType::Directory, modes.dir(metadata.as_ref()), 0);
    tar.append_data(&mut header, ROOT_ENTRY, io::empty())
        .map_err(ArchiveError::Write)
}

/// Pre-order, lexical, depth-first walk like Go's `filepath.Walk`, with an explicit stack so
/// a deeply nested (possibly hostile) tree cannot overflow the thread stack.
fn walk_tree<W: Write>(
    root: &Path,
    filter: &dyn ArchiveFilter,
    tar: &mut tar::Builder<W>,
    modes: Modes,
) -> Result<(), ArchiveError> {
    let mut stack = children_in_reverse_order(root, Path::new(""))?;
    while let Some(rel) = stack.pop() {
        let abs = root.join(&rel);
        let metadata = fs::symlink_metadata(&abs).map_err(|source| ArchiveError::Read {
            path: abs.clone(),
            source,
        })?;
        let is_dir = metadata.is_dir();
        if !is_dir && !metadata.is_file() {
            continue; // symlinks, sockets, devices: Flux archives only files and directories
        }
        if !filter.skip(&rel, is_dir) {
            append_entry(tar, &abs, &rel, &metadata, modes)?;
        }
        if is_dir {
            stack.extend(children_in_reverse_order(root, &rel)?);
        }
    }
    Ok(())
}

/// Names under `rel_dir`, relative to the root, sorted so that popping yields lexical order.
fn children_in_reverse_order(root: &Path, rel_dir: &Path) -> Result<Vec<PathBuf>, ArchiveError> {
    let dir = root.join(rel_dir);
    let read_error = |source| ArchiveError::Read {
        path: dir.clone(),
        source,
    };
    let mut names = Vec::new();
    for entry in fs::read_dir(&dir).map_err(read_error)? {
        names.push(entry.map_err(read_error)?.file_name());
    }
    // Byte order of names, as Go sorts them; reversed because the stack pops from the end.
    names.sort_unstable_by(|a, b| b.cmp(a));
    Ok(names.into_iter().map(|name| rel_dir.join(name)).collect())
}

fn append_entry<W: Write>(
    tar: &mut tar::Builder<W>,
    abs: &Path,
    rel: &Path,
    metadata: &Metadata,
    modes: Modes,
) -> Result<(), ArchiveError> {
    if metadata.is_dir() {
        let mut header = sanitized_header(tar::EntryType::Directory, modes.dir(Some(metadata)), 0);
        return tar
            .append_data(&mut header, rel, io::empty())
            .map_err(ArchiveError::Write);
    }
    append_file(tar, abs, rel, metadata, modes)
}

fn append_file<W: Write>(
    tar: &mut tar::Builder<W>,
    abs: &Path,
    rel: &Path,
    metadata: &Metadata,
    modes: Modes,
) -> Result<(), ArchiveError> {
    let file = open_same_file(abs, metadata)?;
    let size = metadata.len();
    let mut header = sanitized_header(
        tar::EntryType::Regular,
        modes.file(metadata.permissions().mode()),
        size,
    );
    let mut content = CountingReader::new(file.take(size));
    tar.append_data(&mut header, rel, &mut content)
        .map_err(ArchiveError::Write)?;
    if content.count != size {
        // The header already promised `size` bytes; a shorter body would corrupt the stream.
        return Err(ArchiveError::Changed {
            path: abs.to_path_buf(),
        });
    }
    Ok(())
}

/// Opens `path` and checks it is still the file that was stat'ed, so a file swapped for a
/// symlink between the walk and the open cannot pull outside content into the archive.
fn open_same_file(path: &Path, expected: &Metadata) -> Result<File, ArchiveError> {
    let read_error = |source| ArchiveError::Read {
        path: path.to_path_buf(),
        source,
    };
    let file = File::open(path).map_err(read_error)?;
    let opened = file.metadata().map_err(read_error)?;
    let same = opened.is_file() && opened.dev() == expected.dev() && opened.ino() == expected.ino();
    if same {
        Ok(file)
    } else {
        Err(ArchiveError::Changed {
            path: path.to_path_buf(),
        })
    }
}

fn file_mode(disk_mode: u32) -> u32 {
    if disk_mode & 0o111 != 0 {
        EXECUTABLE_FILE_MODE
    } else {
        FILE_MODE
    }
}

fn sanitized_header(entry_type: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(entry_type);
    header.set_mode(mode);
    header.set_size(size);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    header
}

struct CountingReader<R> {
    inner: R,
    count: u64,
}

impl<R> CountingReader<R> {
    fn new(inner: R) -> Self {
        Self { inner, count: 0 }
    }
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::{FileTimes, Permissions};
    use std::os::unix::fs::symlink;
    use std::time::{Duration, SystemTime};

    use flate2::read::GzDecoder;

    fn write_file(root: &Path, rel: &str, content: &str) {
        let path = root.join(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, content).unwrap();
    }

    fn sample_tree() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        write_file(dir.path(), "b.yaml", "b");
        write_file(dir.path(), "a/z.yaml", "z");
        write_file(dir.path(), "a/c/d.txt", "d");
        write_file(dir.path(), "a.yaml", "a");
        write_file(dir.path(), "run.sh", "#!/bin/sh");
        fs::set_permissions(dir.path().join("run.sh"), Permissions::from_mode(0o755)).unwrap();
        dir
    }

    fn archive_bytes(root: &Path, filter: &dyn ArchiveFilter) -> (Vec<u8>, ContentDigest) {
        let mut out = Vec::new();
        let digest = archive_dir(root, filter, &mut out).unwrap();
        (out, digest)
    }

    struct EntryInfo {
        path: String,
        entry_type: tar::EntryType,
        mode: u32,
        uid: u64,
        gid: u64,
        mtime: u64,
        uname: Vec<u8>,
        gname: Vec<u8>,
        content: Vec<u8>,
    }

    fn entries_of(gz: &[u8]) -> Vec<EntryInfo> {
        let mut archive = tar::Archive::new(GzDecoder::new(gz));
        archive
            .entries()
            .unwrap()
            .map(|entry| {
                let mut entry = entry.unwrap();
                let header = entry.header().clone();
                let mut content = Vec::new();
                entry.read_to_end(&mut content).unwrap();
                EntryInfo {
                    path: String::from_utf8(entry.path_bytes().into_owned()).unwrap(),
                    entry_type: header.entry_type(),
                    mode: header.mode().unwrap(),
                    uid: header.uid().unwrap(),
                    gid: header.gid().unwrap(),
                    mtime: header.mtime().unwrap(),
                    uname: header.username_bytes().unwrap_or_default().to_vec(),
                    gname: header.groupname_bytes().unwrap_or_default().to_vec(),
                    content,
                }
            })
            .collect()
    }

    fn names_of(gz: &[u8]) -> Vec<String> {
        entries_of(gz).into_iter().map(|e| e.path).collect()
    }

    #[test]
    fn entries_are_lexical_with_root_dot_and_no_trailing_slash() {
        let tree = sample_tree();
        let (bytes, _) = archive_bytes(tree.path(), &KeepAll);
        assert_eq!(
            names_of(&bytes),
            [
                ".",
                "a",
                "a/c",
                "a/c/d.txt",
                "a/z.yaml",
                "a.yaml",
                "b.yaml",
                "run.sh"
            ]
        );
    }

    #[test]
    fn headers_are_sanitised() {
        let tree = sample_tree();
        fs::set_permissions(tree.path().join("a.yaml"), Permissions::from_mode(0o664)).unwrap();
        let (bytes, _) = archive_bytes(tree.path(), &KeepAll);
        for entry in entries_of(&bytes) {
            assert_eq!(
                (entry.uid, entry.gid, entry.mtime),
                (0, 0, 0),
                "{}",
                entry.path
            );
            assert!(
                entry.uname.is_empty() && entry.gname.is_empty(),
                "{}",
                entry.path
            );
            let expected_mode = match entry.path.as_str() {
                "." | "a" | "a/c" => 0o750,
                "run.sh" => 0o700,
                _ => 0o600,
            };
            assert_eq!(entry.mode, expected_mode, "{}", entry.path);
            let is_dir = entry.entry_type == tar::EntryType::Directory;
            assert_eq!(is_dir, matches!(entry.path.as_str(), "." | "a" | "a/c"));
        }
    }

    #[test]
    fn file_contents_are_stored() {
        let tree = sample_tree();
        let (bytes, _) = archive_bytes(tree.path(), &KeepAll);
        let entries = entries_of(&bytes);
        let d = entries.iter().find(|e| e.path == "a/c/d.txt").unwrap();
        assert_eq!(d.content, b"d");
    }

    #[test]
    fn same_tree_gives_same_bytes_and_digest() {
        let tree = sample_tree();
        let (first, first_digest) = archive_bytes(tree.path(), &KeepAll);
        let (second, second_digest) = archive_bytes(tree.path(), &KeepAll);
        assert_eq!(first, second);
        assert_eq!(first_digest, second_digest);
        assert_eq!(first_digest.size, first.len() as u64);
    }

    #[test]
    fn digest_matches_the_bytes_written() {
        let tree = sample_tree();
        let (bytes, digest) = archive_bytes(tree.path(), &KeepAll);
        assert_eq!(
            digest,
            super::super::digest::digest_reader(&bytes[..]).unwrap()
        );
    }

    #[test]
    fn mtimes_permissions_and_ownership_on_disk_do_not_change_the_digest() {
        let first = sample_tree();
        let second = sample_tree();
        let old = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let file = File::options()
            .write(true)
            .open(second.path().join("a.yaml"))
            .unwrap();
        file.set_times(FileTimes::new().set_modified(old).set_accessed(old))
            .unwrap();
        fs::set_permissions(second.path().join("b.yaml"), Permissions::from_mode(0o640)).unwrap();
        fs::set_permissions(second.path().join("a"), Permissions::from_mode(0o777)).unwrap();
        // Root can change ownership; elsewhere the uid is simply not read.
        let _ = std::os::unix::fs::chown(second.path().join("a.yaml"), Some(1234), Some(5678));
        let (_, first_digest) = archive_bytes(first.path(), &KeepAll);
        let (_, second_digest) = archive_bytes(second.path(), &KeepAll);
        assert_eq!(first_digest, second_digest);
    }

    #[test]
    fn symlinks_are_skipped() {
        let tree = sample_tree();
        symlink("a.yaml", tree.path().join("link.yaml")).unwrap();
        symlink("a", tree.path().join("linkdir")).unwrap();
        symlink("/etc", tree.path().join("etc")).unwrap();
        let (bytes, _) = archive_bytes(tree.path(), &KeepAll);
        let names = names_of(&bytes);
        assert!(!names.iter().any(|n| n.contains("link") || n == "etc"));
    }

    #[test]
    fn filtered_paths_are_skipped_individually_and_children_still_visited() {
        let tree = sample_tree();
        let skip_dir_a_and_yaml_in_root =
            |rel: &Path, _is_dir: bool| rel == Path::new("a") || rel == Path::new("a.yaml");
        let (bytes, _) = archive_bytes(tree.path(), &skip_dir_a_and_yaml_in_root);
        assert_eq!(
            names_of(&bytes),
            [".", "a/c", "a/c/d.txt", "a/z.yaml", "b.yaml", "run.sh"]
        );
    }

    #[test]
    fn filter_receives_relative_paths_and_directory_flag() {
        let tree = sample_tree();
        let seen = std::cell::RefCell::new(Vec::new());
        let record = |rel: &Path, is_dir: bool| {
            seen.borrow_mut().push((rel.to_path_buf(), is_dir));
            false
        };
        archive_bytes(tree.path(), &record);
        let seen = seen.into_inner();
        assert!(seen.contains(&(PathBuf::from("a/c"), true)));
        assert!(seen.contains(&(PathBuf::from("a/c/d.txt"), false)));
        assert!(!seen.iter().any(|(p, _)| p.as_os_str().is_empty()));
    }

    #[test]
    fn long_paths_survive() {
        let dir = tempfile::tempdir().unwrap();
        let long = format!("{}/{}.yaml", "d".repeat(120), "f".repeat(150));
        write_file(dir.path(), &long, "x");
        let (bytes, _) = archive_bytes(dir.path(), &KeepAll);
        assert!(names_of(&bytes).contains(&long));
    }

    #[test]
    fn empty_directory_archives_only_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let (bytes, _) = archive_bytes(dir.path(), &KeepAll);
        assert_eq!(names_of(&bytes), ["."]);
    }

    #[test]
    fn a_file_as_root_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        write_file(dir.path(), "f", "x");
        let err = archive_dir(&dir.path().join("f"), &KeepAll, io::sink()).unwrap_err();
        assert!(matches!(err, ArchiveError::NotADirectory(_)));
        let err = archive_dir(&dir.path().join("missing"), &KeepAll, io::sink()).unwrap_err();
        assert!(matches!(err, ArchiveError::Read { .. }));
    }

    #[test]
    fn ignore_rules_filter_the_archive() {
        let tree = sample_tree();
        write_file(tree.path(), ".git/config", "x");
        write_file(tree.path(), "logo.png", "x");
        let rules = super::super::ignore::IgnoreRules::load(tree.path(), None).unwrap();
        let (bytes, _) = archive_bytes(tree.path(), &rules);
        let names = names_of(&bytes);
        assert!(
            !names
                .iter()
                .any(|n| n.starts_with(".git") || n == "logo.png"),
            "{names:?}"
        );
        assert!(names.contains(&"a/c/d.txt".to_string()));
    }

    #[test]
    fn extracting_and_re_archiving_is_stable() {
        let tree = sample_tree();
        let (original, original_digest) = archive_bytes(tree.path(), &KeepAll);
        let extracted = tempfile::tempdir().unwrap();
        let limits = super::super::extract::ExtractLimits::UNLIMITED;
        super::super::extract::extract_tar_gz(&original[..], extracted.path(), limits).unwrap();
        let (_, again) = archive_bytes(extracted.path(), &KeepAll);
        assert_eq!(again, original_digest);
    }

    #[test]
    fn file_mode_depends_only_on_execute_bits() {
        assert_eq!(file_mode(0o644), 0o600);
        assert_eq!(file_mode(0o100), 0o700);
        assert_eq!(file_mode(0o001), 0o700);
        assert_eq!(file_mode(0o4755), 0o700);
    }
}
