//! Safe, bounded, streaming extraction of an untrusted gzip-compressed tarball.

// Flux's policy (reference §4.6): entries with absolute paths, `..` or `\` are refused,
// symlinks and hard links are dropped, any other special entry is refused. On top of that
// every write stays inside the target even if something replaced a directory there by a
// symlink, and what an archive may cost is capped:
// - bytes: every byte of the decompressed tar stream (headers, metadata entries, padding,
//   the data of directories and skipped entries, file contents) is charged by the reader the
//   tar parser reads from, so nothing the archive carries escapes the count and a gzip bomb
//   stops at the limit with memory that does not depend on the archive size;
// - inodes: every entry and every directory created for one (implied parents included);
// - paths: depth, length and component length, so no entry needs more than a bounded walk;
// - time: a deadline checked at every read, so a slow stream or a slow disk ends too.
//
// The tar stream is read in raw mode: GNU long names and PAX headers are handled here with a
// size cap, because the `tar` crate would otherwise buffer them whole, whatever their size.

use std::cell::Cell;
use std::fs::{self, DirBuilder, File, Permissions};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

use flate2::read::MultiGzDecoder;

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
const DIR_MODE: u32 = 0o750;
/// Keeps read/execute bits but drops setuid/setgid/sticky and group/other write.
const FILE_MODE_MASK: u32 = 0o755;
/// The owner can always read and rewrite what was extracted (re-archiving, cleanup).
const FILE_MODE_OWNER: u32 = 0o600;
/// Largest GNU long-name or PAX header accepted; real ones are a few hundred bytes.
pub const MAX_METADATA_BYTES: u64 = 1024 * 1024;
/// Most components an entry path may have. Manifest trees are a handful of levels deep; the
/// cap keeps the per-entry directory walk (a stat, maybe a mkdir, per level) short.
pub const MAX_PATH_DEPTH: usize = 64;
/// Longest entry path, in bytes: Linux's PATH_MAX, beyond which the kernel refuses the path
/// anyway (with a less clear error, and only after the parents were created).
pub const MAX_PATH_BYTES: usize = 4096;
/// Longest path component, in bytes: NAME_MAX of every Linux filesystem.
pub const MAX_NAME_BYTES: usize = 255;
/// How much of an entry name an error message quotes.
const MAX_DISPLAYED_NAME: usize = 256;

/// Caps on what one archive may cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExtractLimits {
    /// Bytes of the decompressed tar stream, all of it (`--artifact-max-bytes`).
    pub max_bytes: u64,
    /// Entries (files, directories, skipped links) plus the directories created for them that
    /// the archive does not list itself (`--artifact-max-files`).
    pub max_files: u64,
    /// Wall-clock time one extraction may take (`--artifact-extract-timeout`).
    pub max_duration: Duration,
}

impl ExtractLimits {
    /// Flux's behaviour: no limit at all.
    pub const UNLIMITED: Self = Self {
        max_bytes: u64::MAX,
        max_files: u64::MAX,
        max_duration: Duration::MAX,
    };
}

/// What an extraction produced.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExtractStats {
    /// Regular files written.
    pub files: u64,
    /// Directory entries processed.
    pub dirs: u64,
    /// Bytes of file content written.
    pub bytes: u64,
    /// Symlinks and hard links that were skipped.
    pub skipped: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    #[error("requires gzip-compressed body")]
    NotGzip,
    #[error("tar entry {entry:?} is refused: {reason}")]
    PathEscape { entry: String, reason: &'static str },
    #[error("tar entry {entry:?} is refused: {reason}")]
    PathLimit { entry: String, reason: String },
    #[error("tar entry {entry:?} has unsupported type {kind}")]
    SpecialFile { entry: String, kind: String },
    #[error("tar entry {entry:?} conflicts with an existing {existing} in the target")]
    Conflict {
        entry: String,
        existing: &'static str,
    },
    #[error("archive unpacks to more than the limit of {limit} bytes (--artifact-max-bytes)")]
    TooManyBytes { limit: u64 },
    #[error(
        "archive unpacks to more than the limit of {limit} files and directories (--artifact-max-files)"
    )]
    TooManyFiles { limit: u64 },
    #[error("extraction did not finish within the limit of {limit:?} (--artifact-extract-timeout)")]
    TimedOut { limit: Duration },
    #[error("malformed tar entry {entry:?}: {reason}")]
    Malformed { entry: String, reason: String },
    #[error("cannot extract the archive: {0}")]
    Io(#[from] io::Error),
}

/// Extracts a gzip-compressed tar stream into `target` (created if missing).
pub fn extract_tar_gz(
    reader: impl Read,
    target: &Path,
    limits: ExtractLimits,
) -> Result<ExtractStats, ExtractError> {
    let budget = Rc::new(ReadBudget::new(limits));
    let result = extract_within(reader, target, limits, &budget);
    // Whatever error the tar or gzip layer made of a tripped budget, the limit is the cause.
    match budget.tripped.get() {
        Some(Trip::Bytes) => Err(ExtractError::TooManyBytes {
            limit: limits.max_bytes,
        }),
        Some(Trip::Time) => Err(ExtractError::TimedOut {
            limit: limits.max_duration,
        }),
        None => result,
    }
}

fn extract_within(
    reader: impl Read,
    target: &Path,
    limits: ExtractLimits,
    budget: &Rc<ReadBudget>,
) -> Result<ExtractStats, ExtractError> {
    let stream = require_gzip(reader)?;
    prepare_target(target)?;
    let decompressed = BudgetedReader {
        inner: MultiGzDecoder::new(stream),
        budget: budget.clone(),
    };
    let mut archive = tar::Archive::new(decompressed);
    let mut extractor = Extractor {
        target,
        limits,
        budget,
        stats: ExtractStats::default(),
        entries_seen: 0,
    };
    let mut pending = PendingMetadata::default();
    for entry in archive.entries()?.raw(true) {
        pending.absorb(&mut extractor, entry?)?;
    }
    Ok(extractor.stats)
}

/// Why the budgeted reader stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trip {
    Bytes,
    Time,
}

/// Bytes read so far and the deadline, shared by the reader (which enforces them) and the
/// extractor (which asks what is left before it creates a file).
struct ReadBudget {
    max_bytes: u64,
    read: Cell<u64>,
    deadline: Option<Instant>,
    tripped: Cell<Option<Trip>>,
}

impl ReadBudget {
    fn new(limits: ExtractLimits) -> Self {
        ReadBudget {
            max_bytes: limits.max_bytes,
            read: Cell::new(0),
            deadline: Instant::now().checked_add(limits.max_duration),
            tripped: Cell::new(None),
        }
    }

    fn remaining(&self) -> u64 {
        self.max_bytes.saturating_sub(self.read.get())
    }

    fn trip(&self, why: Trip) -> io::Error {
        self.tripped.set(Some(why));
        io::Error::other(match why {
            Trip::Bytes => "archive exceeds the byte limit",
            Trip::Time => "archive extraction exceeds the time limit",
        })
    }

    fn check_time(&self) -> io::Result<()> {
        match self.deadline {
            Some(deadline) if Instant::now() >= deadline => Err(self.trip(Trip::Time)),
            _ => Ok(()),
        }
    }
}

/// The decompressed stream as the tar parser sees it: every byte is charged, and the deadline
/// is checked before and after every read of the stream underneath.
struct BudgetedReader<R> {
    inner: R,
    budget: Rc<ReadBudget>,
}

impl<R: Read> Read for BudgetedReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.budget.check_time()?;
        // One byte over the budget is enough to know it is exceeded; no need to inflate more.
        let allowed = usize::try_from(self.budget.remaining().saturating_add(1))
            .unwrap_or(usize::MAX)
            .min(buf.len());
        let n = self.inner.read(&mut buf[..allowed])?;
        self.budget.check_time()?;
        let read = self.budget.read.get().saturating_add(n as u64);
        self.budget.read.set(read);
        if read > self.budget.max_bytes {
            return Err(self.budget.trip(Trip::Bytes));
        }
        Ok(n)
    }
}

/// Checks the gzip magic up front so a plain tar or garbage gets a clear error.
fn require_gzip<R: Read>(mut reader: R) -> Result<impl Read, ExtractError> {
    let mut magic = [0u8; 2];
    match reader.read_exact(&mut magic) {
        Ok(()) if magic == GZIP_MAGIC => Ok(io::Cursor::new(magic).chain(reader)),
        Ok(()) => Err(ExtractError::NotGzip),
        Err(err) if err.kind() == io::ErrorKind::UnexpectedEof => Err(ExtractError::NotGzip),
        Err(err) => Err(ExtractError::Io(err)),
    }
}

fn prepare_target(target: &Path) -> Result<(), ExtractError> {
    DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(target)?;
    if fs::symlink_metadata(target)?.is_dir() {
        Ok(())
    } else {
        Err(ExtractError::Conflict {
            entry: ".".into(),
            existing: "non-directory target",
        })
    }
}

/// Metadata entries allowed in a row; one of each kind (L, K, x, g) is all a real entry needs.
const MAX_METADATA_RUN: u32 = 4;

/// GNU long names and PAX headers describe the next real entry.
#[derive(Default)]
struct PendingMetadata {
    long_name: Option<Vec<u8>>,
    pax: Option<Vec<u8>>,
    /// Metadata entries since the last real entry; bounds a stream made only of metadata.
    run: u32,
}

impl PendingMetadata {
    /// Records a metadata entry, or hands a real entry (with its metadata) to the extractor.
    fn absorb<R: Read>(
        &mut self,
        extractor: &mut Extractor<'_>,
        mut entry: tar::Entry<'_, R>,
    ) -> Result<(), ExtractError> {
        let entry_type = entry.header().entry_type();
        let is_metadata = entry_type.is_gnu_longname()
            || entry_type.is_pax_local_extensions()
            || entry_type.is_gnu_longlink()
            || entry_type.is_pax_global_extensions();
        if !is_metadata {
            let metadata = std::mem::take(self);
            let name = metadata.entry_name(&entry)?;
            metadata.check_pax_size(&entry, &name)?;
            return extractor.handle(entry, &name);
        }
        self.count_metadata_entry(&entry)?;
        // Link targets are irrelevant (links are skipped) and global headers carry nothing
        // Flux uses, but they are still read (bounded) rather than skipped unread.
        let data = read_metadata(&mut entry)?;
        if entry_type.is_gnu_longname() {
            self.long_name = Some(strip_trailing_nul(data));
        } else if entry_type.is_pax_local_extensions() {
            self.pax = Some(data);
        }
        Ok(())
    }

    fn count_metadata_entry<R: Read>(
        &mut self,
        entry: &tar::Entry<'_, R>,
    ) -> Result<(), ExtractError> {
        self.run += 1;
        if self.run <= MAX_METADATA_RUN {
            return Ok(());
        }
        Err(ExtractError::Malformed {
            entry: display_name(&entry.header().path_bytes()),
            reason: format!("more than {MAX_METADATA_RUN} metadata entries in a row"),
        })
    }

    /// The name precedence of the `tar` crate: GNU long name, then PAX `path`, then header.
    fn entry_name<R: Read>(&self, entry: &tar::Entry<'_, R>) -> Result<Vec<u8>, ExtractError> {
        if let Some(name) = &self.long_name {
            return Ok(name.clone());
        }
        if let Some(path) = self.pax_value(b"path")? {
            return Ok(path);
        }
        Ok(entry.header().path_bytes().into_owned())
    }

    /// Raw mode reads sizes from the header only; a PAX size that disagrees would make this
    /// parser and a PAX-aware one see different archives, so such entries are refused.
    fn check_pax_size<R: Read>(
        &self,
        entry: &tar::Entry<'_, R>,
        name: &[u8],
    ) -> Result<(), ExtractError> {
        let Some(value) = self.pax_value(b"size")? else {
            return Ok(());
        };
        let declared = String::from_utf8_lossy(&value).trim().parse::<u64>().ok();
        if declared == Some(entry.header().entry_size()?) {
            return Ok(());
        }
        Err(ExtractError::Malformed {
            entry: display_name(name),
            reason: "PAX size differs from the header size".into(),
        })
    }

    fn pax_value(&self, key: &[u8]) -> Result<Option<Vec<u8>>, ExtractError> {
        let Some(pax) = &self.pax else {
            return Ok(None);
        };
        let mut found = None;
        for extension in tar::PaxExtensions::new(pax) {
            let extension = extension.map_err(|err| ExtractError::Malformed {
                entry: String::new(),
                reason: format!("bad PAX header: {err}"),
            })?;
            if extension.key_bytes() == key {
                found = Some(extension.value_bytes().to_vec());
            }
        }
        Ok(found)
    }
}

fn read_metadata<R: Read>(entry: &mut tar::Entry<'_, R>) -> Result<Vec<u8>, ExtractError> {
    let size = entry.header().entry_size()?;
    if size > MAX_METADATA_BYTES {
        return Err(ExtractError::Malformed {
            entry: display_name(&entry.header().path_bytes()),
            reason: format!("metadata entry of {size} bytes exceeds {MAX_METADATA_BYTES}"),
        });
    }
    let mut data = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    entry.read_to_end(&mut data)?;
    Ok(data)
}

fn strip_trailing_nul(mut name: Vec<u8>) -> Vec<u8> {
    while name.last() == Some(&0) {
        name.pop();
    }
    name
}

/// An entry name for messages: lossy UTF-8, long names cut short.
fn display_name(name: &[u8]) -> String {
    let text = String::from_utf8_lossy(name);
    match text.char_indices().nth(MAX_DISPLAYED_NAME) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text.into_owned(),
    }
}

struct Extractor<'t> {
    target: &'t Path,
    limits: ExtractLimits,
    budget: &'t ReadBudget,
    stats: ExtractStats,
    /// Entries plus the directories created for them, against `max_files`.
    entries_seen: u64,
}

/// How a real (non-metadata) entry is treated.
enum EntryKind {
    File,
    Directory,
    Skipped,
    Refused(String),
}

impl Extractor<'_> {
    /// Charges one inode-like thing (an entry, or a directory created for one).
    fn count_entry(&mut self) -> Result<(), ExtractError> {
        self.entries_seen += 1;
        if self.entries_seen > self.limits.max_files {
            return Err(ExtractError::TooManyFiles {
                limit: self.limits.max_files,
            });
        }
        Ok(())
    }

    fn handle<R: Read>(
        &mut self,
        mut entry: tar::Entry<'_, R>,
        name: &[u8],
    ) -> Result<(), ExtractError> {
        self.count_entry()?;
        let components = safe_components(name)?;
        match classify(entry.header(), name) {
            EntryKind::File => self.write_file(&mut entry, name, &components),
            EntryKind::Directory => self.create_directory(name, &components),
            EntryKind::Skipped => {
                // Its data, if any, is still read past, and so charged, by the budgeted reader.
                self.stats.skipped += 1;
                Ok(())
            }
            EntryKind::Refused(kind) => Err(ExtractError::SpecialFile {
                entry: display_name(name),
                kind,
            }),
        }
    }

    fn create_directory(&mut self, name: &[u8], components: &[&[u8]]) -> Result<(), ExtractError> {
        if components.is_empty() {
            self.stats.dirs += 1; // the root entry `.`: the target already exists
            return Ok(());
        }
        let path = self.ensure_parents(name, components)?;
        // The entry itself was counted already.
        ensure_directory(&path, name, || Ok(()))?;
        self.stats.dirs += 1;
        Ok(())
    }

    fn write_file<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        name: &[u8],
        components: &[&[u8]],
    ) -> Result<(), ExtractError> {
        if components.is_empty() {
            return Err(ExtractError::PathEscape {
                entry: display_name(name),
                reason: "a file cannot be the archive root",
            });
        }
        // Fail before touching the disk when the header alone already breaks the budget.
        if entry.header().entry_size()? > self.budget.remaining() {
            return Err(ExtractError::TooManyBytes {
                limit: self.limits.max_bytes,
            });
        }
        let path = self.ensure_parents(name, components)?;
        let mode = entry.header().mode().unwrap_or(0o644);
        let mut file = create_file_replacing(&path, name)?;
        let written = io::copy(entry, &mut file)?;
        file.set_permissions(Permissions::from_mode(file_mode(mode)))?;
        self.stats.bytes += written;
        self.stats.files += 1;
        Ok(())
    }

    /// Creates missing parent directories one by one, each counted like an entry (an archive
    /// of deep paths would otherwise create far more inodes than it has entries), refusing
    /// anything that is not a real directory (a symlink placed there would otherwise redirect
    /// the write outside).
    fn ensure_parents(
        &mut self,
        name: &[u8],
        components: &[&[u8]],
    ) -> Result<PathBuf, ExtractError> {
        let mut path = self.target.to_path_buf();
        let (last, parents) = components
            .split_last()
            .ok_or_else(|| ExtractError::PathEscape {
                entry: display_name(name),
                reason: "empty path",
            })?;
        for component in parents {
            path.push(std::ffi::OsStr::from_bytes(component));
            ensure_directory(&path, name, || self.count_entry())?;
        }
        path.push(std::ffi::OsStr::from_bytes(last));
        Ok(path)
    }
}

fn classify(header: &tar::Header, name: &[u8]) -> EntryKind {
    use tar::EntryType;
    match header.entry_type() {
        // Old (V7) archives mark directories only by a trailing slash.
        EntryType::Regular if name.ends_with(b"/") => EntryKind::Directory,
        EntryType::Regular | EntryType::Continuous => EntryKind::File,
        EntryType::Directory => EntryKind::Directory,
        EntryType::Symlink | EntryType::Link => EntryKind::Skipped,
        other => EntryKind::Refused(format!("{other:?}")),
    }
}

/// Splits an entry name into normal components, refusing anything that could leave the
/// target or that is longer or deeper than the path limits. `.` and empty components are
/// dropped; the empty result means the root.
fn safe_components(name: &[u8]) -> Result<Vec<&[u8]>, ExtractError> {
    let refuse = |reason| ExtractError::PathEscape {
        entry: display_name(name),
        reason,
    };
    if name.contains(&b'\\') {
        return Err(refuse("backslash in path"));
    }
    if name.starts_with(b"/") {
        return Err(refuse("absolute path"));
    }
    if name.contains(&0) {
        return Err(refuse("NUL byte in path"));
    }
    check_path_limits(name)?;
    let mut components = Vec::new();
    for part in name.split(|b| *b == b'/') {
        match part {
            b"" | b"." => continue,
            b".." => return Err(refuse("parent directory component")),
            normal => components.push(normal),
        }
    }
    if components.len() > MAX_PATH_DEPTH {
        return Err(ExtractError::PathLimit {
            entry: display_name(name),
            reason: format!(
                "path has {} components, more than the limit of {MAX_PATH_DEPTH}",
                components.len()
            ),
        });
    }
    // Belt and braces: what std considers the path must agree with the split above.
    let as_path = Path::new(std::ffi::OsStr::from_bytes(name));
    if as_path
        .components()
        .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
    {
        return Err(refuse("path is not relative"));
    }
    Ok(components)
}

fn check_path_limits(name: &[u8]) -> Result<(), ExtractError> {
    let refuse = |reason| ExtractError::PathLimit {
        entry: display_name(name),
        reason,
    };
    if name.len() > MAX_PATH_BYTES {
        return Err(refuse(format!(
            "path is {} bytes long, more than the limit of {MAX_PATH_BYTES}",
            name.len()
        )));
    }
    match name.split(|b| *b == b'/').map(<[u8]>::len).max() {
        Some(longest) if longest > MAX_NAME_BYTES => Err(refuse(format!(
            "a path component is {longest} bytes long, more than the limit of {MAX_NAME_BYTES}"
        ))),
        _ => Ok(()),
    }
}

/// A directory on an entry's path: an existing one must be a real directory; a missing one is
/// created after `before_create` agreed (which charges it against the entry limit).
fn ensure_directory(
    path: &Path,
    name: &[u8],
    before_create: impl FnOnce() -> Result<(), ExtractError>,
) -> Result<(), ExtractError> {
    match fs::symlink_metadata(path) {
        Ok(metadata) if metadata.is_dir() => Ok(()),
        Ok(metadata) if metadata.is_symlink() => Err(ExtractError::PathEscape {
            entry: display_name(name),
            reason: "a directory on its path is a symlink",
        }),
        Ok(_) => Err(ExtractError::Conflict {
            entry: display_name(name),
            existing: "file where a directory is needed",
        }),
        Err(err) if err.kind() == io::ErrorKind::NotFound => {
            before_create()?;
            create_directory(path, name)
        }
        Err(err) => Err(ExtractError::Io(err)),
    }
}

fn create_directory(path: &Path, name: &[u8]) -> Result<(), ExtractError> {
    match DirBuilder::new().mode(DIR_MODE).create(path) {
        Ok(()) => Ok(()),
        // Something appeared between the check and the create: look again, without following.
        Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {
            let metadata = fs::symlink_metadata(path)?;
            if metadata.is_dir() {
                Ok(())
            } else {
                Err(ExtractError::PathEscape {
                    entry: display_name(name),
                    reason: "a directory on its path was replaced",
                })
            }
        }
        Err(err) => Err(ExtractError::Io(err)),
    }
}

/// Opens a fresh file at `path`. A later entry with the same name wins, as in tar; an existing
/// file or symlink is removed first and `create_new` (O_EXCL) never follows a symlink.
fn create_file_replacing(path: &Path, name: &[u8]) -> Result<File, ExtractError> {
    match fs::symlink_metadata(path) {
        Ok(metadata) if metadata.is_dir() => {
            return Err(ExtractError::Conflict {
                entry: display_name(name),
                existing: "directory where a file is needed",
            });
        }
        Ok(_) => fs::remove_file(path)?,
        Err(err) if err.kind() == io::ErrorKind::NotFound => {}
        Err(err) => return Err(ExtractError::Io(err)),
    }
    let file = File::options()
        .write(true)
        .create_new(true)
        .mode(FILE_MODE_OWNER)
        .open(path)?;
    Ok(file)
}

fn file_mode(header_mode: u32) -> u32 {
    (header_mode & FILE_MODE_MASK) | FILE_MODE_OWNER
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::fs::symlink;

    use flate2::Compression;
    use flate2::write::GzEncoder;

    const LIMITS: ExtractLimits = ExtractLimits {
        max_bytes: 1024 * 1024,
        max_files: 100,
        max_duration: Duration::from_secs(60),
    };

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut encoder = GzEncoder::new(Vec::new(), Compression::fast());
        encoder.write_all(data).unwrap();
        encoder.finish().unwrap()
    }

    /// A header whose name is written raw, bypassing the `tar` crate's path validation.
    fn raw_header(name: &[u8], entry_type: tar::EntryType, size: u64, mode: u32) -> tar::Header {
        let mut header = tar::Header::new_gnu();
        header.as_gnu_mut().unwrap().name[..name.len()].copy_from_slice(name);
        header.set_entry_type(entry_type);
        header.set_size(size);
        header.set_mode(mode);
        header.set_cksum();
        header
    }

    /// Builds a tar stream entry by entry, with raw names.
    #[derive(Default)]
    struct TarStream {
        builder: Option<tar::Builder<Vec<u8>>>,
    }

    impl TarStream {
        fn new() -> Self {
            Self {
                builder: Some(tar::Builder::new(Vec::new())),
            }
        }

        fn builder(&mut self) -> &mut tar::Builder<Vec<u8>> {
            self.builder.as_mut().unwrap()
        }

        fn file(self, name: &str, content: &[u8]) -> Self {
            self.file_with_mode(name, content, 0o644)
        }

        fn file_with_mode(mut self, name: &str, content: &[u8], mode: u32) -> Self {
            let header = raw_header(
                name.as_bytes(),
                tar::EntryType::Regular,
                content.len() as u64,
                mode,
            );
            self.builder().append(&header, content).unwrap();
            self
        }

        fn dir(mut self, name: &str) -> Self {
            let header = raw_header(name.as_bytes(), tar::EntryType::Directory, 0, 0o777);
            self.builder().append(&header, io::empty()).unwrap();
            self
        }

        fn link(mut self, name: &str, target: &str, entry_type: tar::EntryType) -> Self {
            let mut header = raw_header(name.as_bytes(), entry_type, 0, 0o777);
            header.set_link_name(target).unwrap();
            header.set_cksum();
            self.builder().append(&header, io::empty()).unwrap();
            self
        }

        /// Any entry, with `data` whatever its type.
        fn raw(mut self, name: &[u8], entry_type: tar::EntryType, data: &[u8]) -> Self {
            let header = raw_header(name, entry_type, data.len() as u64, 0o644);
            self.builder().append(&header, data).unwrap();
            self
        }

        /// A GNU long-name entry carrying `name` for the entry that follows.
        fn long_name(self, name: &[u8]) -> Self {
            let mut data = name.to_vec();
            data.push(0);
            self.raw(b"././@LongLink", tar::EntryType::GNULongName, &data)
        }

        /// A file whose name does not fit the header, through a GNU long name.
        fn long_file(self, name: &str, content: &[u8]) -> Self {
            self.long_name(name.as_bytes())
                .raw(b"truncated", tar::EntryType::Regular, content)
        }

        fn special(mut self, name: &str, entry_type: tar::EntryType) -> Self {
            let header = raw_header(name.as_bytes(), entry_type, 0, 0o644);
            self.builder().append(&header, io::empty()).unwrap();
            self
        }

        fn pax(mut self, records: &[(&str, &str)]) -> Self {
            let mut data = Vec::new();
            for (key, value) in records {
                let body = format!(" {key}={value}\n");
                let mut len = body.len() + 1;
                while format!("{len}{body}").len() != len {
                    len += 1;
                }
                data.extend_from_slice(format!("{len}{body}").as_bytes());
            }
            let header = raw_header(b"pax", tar::EntryType::XHeader, data.len() as u64, 0o644);
            self.builder().append(&header, &data[..]).unwrap();
            self
        }

        fn tar_bytes(mut self) -> Vec<u8> {
            self.builder.take().unwrap().into_inner().unwrap()
        }

        fn tar_gz(self) -> Vec<u8> {
            gzip(&self.tar_bytes())
        }
    }

    fn extract(
        bytes: &[u8],
        limits: ExtractLimits,
    ) -> (tempfile::TempDir, Result<ExtractStats, ExtractError>) {
        let dir = tempfile::tempdir().unwrap();
        let result = extract_tar_gz(bytes, &dir.path().join("out"), limits);
        (dir, result)
    }

    fn assert_refused(bytes: &[u8], expected_entry: &str) {
        let (dir, result) = extract(bytes, LIMITS);
        match result {
            Err(ExtractError::PathEscape { entry, .. }) => assert_eq!(entry, expected_entry),
            other => panic!("expected a path escape error, got {other:?}"),
        }
        assert_only_out_exists(dir.path());
    }

    /// Nothing may appear next to the target directory.
    fn assert_only_out_exists(dir: &Path) {
        let names: Vec<_> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["out"]);
    }

    #[test]
    fn extracts_files_and_directories() {
        let bytes = TarStream::new()
            .dir(".")
            .dir("a")
            .file("a/b.yaml", b"hello")
            .file("./c/d.txt", b"nested, parent implied")
            .tar_gz();
        let (dir, result) = extract(&bytes, LIMITS);
        let stats = result.unwrap();
        let out = dir.path().join("out");
        assert_eq!(fs::read(out.join("a/b.yaml")).unwrap(), b"hello");
        assert_eq!(
            fs::read(out.join("c/d.txt")).unwrap(),
            b"nested, parent implied"
        );
        assert_eq!(
            stats,
            ExtractStats {
                files: 2,
                dirs: 2,
                bytes: 27,
                skipped: 0
            }
        );
    }

    #[test]
    fn permissions_are_normalised() {
        let bytes = TarStream::new()
            .dir("d")
            .file_with_mode("d/setuid", b"x", 0o4777)
            .file_with_mode("d/plain", b"x", 0o666)
            .file_with_mode("d/none", b"x", 0o000)
            .tar_gz();
        let (dir, result) = extract(&bytes, LIMITS);
        result.unwrap();
        let mode = |rel: &str| {
            fs::metadata(dir.path().join("out").join(rel))
                .unwrap()
                .permissions()
                .mode()
                & 0o7777
        };
        assert_eq!(mode("d/setuid"), 0o755);
        assert_eq!(mode("d/plain"), 0o644);
        assert_eq!(mode("d/none"), 0o600);
        assert_eq!(mode("d") & 0o7000, 0);
    }

    #[test]
    fn parent_traversal_is_refused() {
        assert_refused(&TarStream::new().file("../x", b"evil").tar_gz(), "../x");
        assert_refused(
            &TarStream::new().file("a/../../x", b"evil").tar_gz(),
            "a/../../x",
        );
        assert_refused(&TarStream::new().dir("..").tar_gz(), "..");
    }

    #[test]
    fn absolute_paths_are_refused() {
        assert_refused(&TarStream::new().file("/etc/x", b"evil").tar_gz(), "/etc/x");
    }

    #[test]
    fn backslashes_are_refused() {
        assert_refused(
            &TarStream::new().file("a\\..\\x", b"evil").tar_gz(),
            "a\\..\\x",
        );
    }

    #[test]
    fn pax_path_is_validated_too() {
        let bytes = TarStream::new()
            .pax(&[("path", "../../escaped")])
            .file("innocent", b"evil")
            .tar_gz();
        assert_refused(&bytes, "../../escaped");
    }

    #[test]
    fn pax_path_and_gnu_long_names_are_honoured() {
        let long = format!("{}/{}", "d".repeat(150), "f".repeat(120));
        let mut builder = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_size(4);
        header.set_mode(0o644);
        builder
            .append_data(&mut header, &long, &b"long"[..])
            .unwrap();
        let tar = builder.into_inner().unwrap();
        let pax = TarStream::new()
            .pax(&[("path", "from/pax.txt")])
            .file("short", b"pax")
            .tar_bytes();
        let mut both = tar[..tar.len() - 1024].to_vec();
        both.extend_from_slice(&pax);
        let (dir, result) = extract(&gzip(&both), LIMITS);
        result.unwrap();
        let out = dir.path().join("out");
        assert_eq!(fs::read(out.join(&long)).unwrap(), b"long");
        assert_eq!(fs::read(out.join("from/pax.txt")).unwrap(), b"pax");
        assert!(!out.join("short").exists());
    }

    #[test]
    fn pax_size_disagreeing_with_the_header_is_refused() {
        let bytes = TarStream::new()
            .pax(&[("size", "999")])
            .file("f", b"abc")
            .tar_gz();
        let (_dir, result) = extract(&bytes, LIMITS);
        assert!(
            matches!(result, Err(ExtractError::Malformed { .. })),
            "{result:?}"
        );
    }

    #[test]
    fn oversized_metadata_entries_are_refused_without_reading_them() {
        let mut tar = raw_header(b"pax", tar::EntryType::XHeader, 1 << 40, 0o644)
            .as_bytes()
            .to_vec();
        tar.extend_from_slice(&[0u8; 4096]);
        let (_dir, result) = extract(&gzip(&tar), LIMITS);
        assert!(
            matches!(result, Err(ExtractError::Malformed { .. })),
            "{result:?}"
        );
    }

    #[test]
    fn symlink_entry_is_skipped_and_a_later_file_through_it_stays_inside() {
        let outside = tempfile::tempdir().unwrap();
        let bytes = TarStream::new()
            .link(
                "escape",
                outside.path().to_str().unwrap(),
                tar::EntryType::Symlink,
            )
            .file("escape/pwned", b"evil")
            .tar_gz();
        let (dir, result) = extract(&bytes, LIMITS);
        let stats = result.unwrap();
        assert_eq!(stats.skipped, 1);
        assert_eq!(fs::read_dir(outside.path()).unwrap().count(), 0);
        let inside = dir.path().join("out/escape");
        assert!(fs::symlink_metadata(&inside).unwrap().is_dir());
        assert_eq!(fs::read(inside.join("pwned")).unwrap(), b"evil");
    }

    #[test]
    fn hardlinks_are_skipped() {
        let bytes = TarStream::new()
            .link("passwd", "/etc/passwd", tar::EntryType::Link)
            .file("ok", b"fine")
            .tar_gz();
        let (dir, result) = extract(&bytes, LIMITS);
        assert_eq!(result.unwrap().skipped, 1);
        assert!(fs::symlink_metadata(dir.path().join("out/passwd")).is_err());
        assert!(dir.path().join("out/ok").exists());
    }

    #[test]
    fn a_directory_replaced_by_a_symlink_is_not_followed() {
        let outside = tempfile::tempdir().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        fs::create_dir(&out).unwrap();
        symlink(outside.path(), out.join("sub")).unwrap();
        let bytes = TarStream::new().file("sub/pwned", b"evil").tar_gz();
        let result = extract_tar_gz(&bytes[..], &out, LIMITS);
        assert!(
            matches!(result, Err(ExtractError::PathEscape { .. })),
            "{result:?}"
        );
        assert_eq!(fs::read_dir(outside.path()).unwrap().count(), 0);
    }

    #[test]
    fn an_existing_symlink_at_the_file_path_is_replaced_not_followed() {
        let outside = tempfile::tempdir().unwrap();
        let victim = outside.path().join("victim");
        fs::write(&victim, b"original").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        fs::create_dir(&out).unwrap();
        symlink(&victim, out.join("f")).unwrap();
        let bytes = TarStream::new().file("f", b"new").tar_gz();
        extract_tar_gz(&bytes[..], &out, LIMITS).unwrap();
        assert_eq!(fs::read(&victim).unwrap(), b"original");
        assert!(fs::symlink_metadata(out.join("f")).unwrap().is_file());
    }

    #[test]
    fn device_and_fifo_entries_are_refused() {
        for entry_type in [
            tar::EntryType::Char,
            tar::EntryType::Block,
            tar::EntryType::Fifo,
        ] {
            let bytes = TarStream::new().special("dev", entry_type).tar_gz();
            let (_dir, result) = extract(&bytes, LIMITS);
            match result {
                Err(ExtractError::SpecialFile { entry, .. }) => assert_eq!(entry, "dev"),
                other => panic!("{entry_type:?}: expected a special file error, got {other:?}"),
            }
        }
    }

    #[test]
    fn too_many_files_names_the_limit() {
        let mut stream = TarStream::new();
        for i in 0..5 {
            stream = stream.file(&format!("f{i}"), b"x");
        }
        let limits = ExtractLimits {
            max_files: 4,
            ..LIMITS
        };
        let (_dir, result) = extract(&stream.tar_gz(), limits);
        let err = result.unwrap_err();
        assert!(matches!(err, ExtractError::TooManyFiles { limit: 4 }));
        assert!(err.to_string().contains("--artifact-max-files"), "{err}");
    }

    #[test]
    fn too_many_bytes_across_files_names_the_limit() {
        let bytes = TarStream::new()
            .file("a", &[1u8; 600])
            .file("b", &[2u8; 600])
            .tar_gz();
        let limits = ExtractLimits {
            max_bytes: 1000,
            max_files: 10,
            ..LIMITS
        };
        let (dir, result) = extract(&bytes, limits);
        let err = result.unwrap_err();
        assert!(matches!(err, ExtractError::TooManyBytes { limit: 1000 }));
        assert!(err.to_string().contains("--artifact-max-bytes"), "{err}");
        assert!(!dir.path().join("out/b").exists());
    }

    #[test]
    fn data_carried_by_skipped_entries_counts_against_the_byte_limit() {
        let mut tar = raw_header(b"l", tar::EntryType::Symlink, 4096, 0o777)
            .as_bytes()
            .to_vec();
        tar.extend_from_slice(&[0u8; 4096]);
        tar.extend_from_slice(&[0u8; 1024]);
        let limits = ExtractLimits {
            max_bytes: 1000,
            max_files: 10,
            ..LIMITS
        };
        let (_dir, result) = extract(&gzip(&tar), limits);
        assert!(
            matches!(result, Err(ExtractError::TooManyBytes { .. })),
            "{result:?}"
        );
    }

    /// Counts how much compressed input the extractor pulled.
    struct CountingReader<R> {
        inner: R,
        read: std::rc::Rc<std::cell::Cell<u64>>,
    }

    impl<R: Read> Read for CountingReader<R> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.inner.read(buf)?;
            self.read.set(self.read.get() + n as u64);
            Ok(n)
        }
    }

    #[test]
    fn gzip_bomb_stops_at_the_byte_limit_without_reading_it_all() {
        const CHUNK: usize = 1024 * 1024;
        const CHUNKS: usize = 1024; // 1 GiB uncompressed
        let header = raw_header(
            b"bomb",
            tar::EntryType::Regular,
            (CHUNK * CHUNKS) as u64,
            0o644,
        );
        let mut first = header.as_bytes().to_vec();
        first.extend_from_slice(&vec![0u8; CHUNK]);
        let zeros_member = gzip(&vec![0u8; CHUNK]);
        let mut bomb = gzip(&first);
        for _ in 1..CHUNKS {
            bomb.extend_from_slice(&zeros_member);
        }
        let read = std::rc::Rc::new(std::cell::Cell::new(0));
        let reader = CountingReader {
            inner: &bomb[..],
            read: read.clone(),
        };
        let dir = tempfile::tempdir().unwrap();
        let limits = ExtractLimits {
            max_bytes: 4 * CHUNK as u64,
            max_files: 10,
            ..LIMITS
        };
        let result = extract_tar_gz(reader, dir.path(), limits);
        assert!(
            matches!(result, Err(ExtractError::TooManyBytes { .. })),
            "{result:?}"
        );
        assert!(
            read.get() < (bomb.len() / 10) as u64,
            "read {} of {}",
            read.get(),
            bomb.len()
        );
    }

    #[test]
    fn non_gzip_input_is_refused_clearly() {
        let plain_tar = TarStream::new().file("a", b"x").tar_bytes();
        for input in [&plain_tar[..], b"", b"\x1f"] {
            let (_dir, result) = extract(input, LIMITS);
            let err = result.unwrap_err();
            assert!(matches!(err, ExtractError::NotGzip));
            assert_eq!(err.to_string(), "requires gzip-compressed body");
        }
    }

    #[test]
    fn corrupt_gzip_is_an_io_error() {
        let mut bytes = TarStream::new().file("a", &[9u8; 5000]).tar_gz();
        let middle = bytes.len() / 2;
        bytes.truncate(middle);
        let (_dir, result) = extract(&bytes, LIMITS);
        assert!(matches!(result, Err(ExtractError::Io(_))), "{result:?}");
    }

    #[test]
    fn multi_member_gzip_is_read_to_the_end() {
        let tar = TarStream::new()
            .file("a", b"first")
            .file("b", b"second")
            .tar_bytes();
        let mut bytes = gzip(&tar[..512 + 512]);
        bytes.extend_from_slice(&gzip(&tar[1024..]));
        let (dir, result) = extract(&bytes, LIMITS);
        assert_eq!(result.unwrap().files, 2);
        assert_eq!(fs::read(dir.path().join("out/b")).unwrap(), b"second");
    }

    #[test]
    fn later_duplicate_entry_wins() {
        let bytes = TarStream::new()
            .file("a", b"one")
            .file("a", b"two")
            .tar_gz();
        let (dir, result) = extract(&bytes, LIMITS);
        result.unwrap();
        assert_eq!(fs::read(dir.path().join("out/a")).unwrap(), b"two");
    }

    #[test]
    fn file_where_a_directory_is_needed_conflicts() {
        let bytes = TarStream::new()
            .file("a", b"file")
            .file("a/b", b"x")
            .tar_gz();
        let (_dir, result) = extract(&bytes, LIMITS);
        assert!(
            matches!(result, Err(ExtractError::Conflict { .. })),
            "{result:?}"
        );
    }

    fn deep_path(top: usize, depth: usize) -> String {
        let mut path = format!("d{top}");
        for _ in 1..depth {
            path.push_str("/a");
        }
        path
    }

    /// Every directory under `dir`, `dir` excluded.
    fn directories_under(dir: &Path) -> usize {
        fs::read_dir(dir)
            .map(|entries| {
                entries
                    .map(|e| e.unwrap().path())
                    .filter(|p| p.is_dir())
                    .map(|p| 1 + directories_under(&p))
                    .sum()
            })
            .unwrap_or(0)
    }

    #[test]
    fn implied_parent_directories_count_against_the_file_limit() {
        // 10 entries, but 10 x 9 parent directories that no entry lists.
        let mut stream = TarStream::new();
        for top in 0..10 {
            stream = stream.file(&format!("{}/f", deep_path(top, 9)), b"x");
        }
        let limits = ExtractLimits {
            max_files: 50,
            ..LIMITS
        };
        let (dir, result) = extract(&stream.tar_gz(), limits);
        let err = result.unwrap_err();
        assert!(
            matches!(err, ExtractError::TooManyFiles { limit: 50 }),
            "{err}"
        );
        assert!(err.to_string().contains("--artifact-max-files"), "{err}");
        let created = directories_under(&dir.path().join("out"));
        assert!(created <= 50, "{created} directories created");
    }

    #[test]
    fn explicit_directory_entries_are_counted_once() {
        let bytes = TarStream::new()
            .dir("a")
            .dir("a/b")
            .file("a/b/f", b"x")
            .tar_gz();
        let limits = ExtractLimits {
            max_files: 3,
            ..LIMITS
        };
        let (_dir, result) = extract(&bytes, limits);
        assert_eq!(result.unwrap().files, 1);
    }

    #[test]
    fn paths_deeper_than_the_limit_are_refused_before_any_directory_is_made() {
        let at_limit = format!("{}/f", deep_path(0, MAX_PATH_DEPTH - 1));
        let (_dir, result) = extract(
            &TarStream::new().long_file(&at_limit, b"ok").tar_gz(),
            LIMITS,
        );
        assert_eq!(result.unwrap().files, 1);

        let too_deep = format!("{}/f", deep_path(0, MAX_PATH_DEPTH));
        let (dir, result) = extract(
            &TarStream::new().long_file(&too_deep, b"x").tar_gz(),
            LIMITS,
        );
        let err = result.unwrap_err();
        assert!(matches!(err, ExtractError::PathLimit { .. }), "{err}");
        assert!(
            err.to_string()
                .contains(&format!("limit of {MAX_PATH_DEPTH}")),
            "{err}"
        );
        assert_eq!(directories_under(&dir.path().join("out")), 0);
    }

    #[test]
    fn overlong_paths_and_components_are_refused() {
        let long_component = format!("d/{}", "c".repeat(MAX_NAME_BYTES + 1));
        let long_path = vec!["p".repeat(100); 41].join("/");
        for name in [long_component, long_path] {
            let (dir, result) = extract(&TarStream::new().long_file(&name, b"x").tar_gz(), LIMITS);
            let err = result.unwrap_err();
            assert!(matches!(err, ExtractError::PathLimit { .. }), "{err}");
            assert!(
                err.to_string().len() < 1024,
                "the message quotes a bounded name"
            );
            assert_eq!(directories_under(&dir.path().join("out")), 0);
        }
    }

    #[test]
    fn data_of_directory_entries_counts_against_the_byte_limit() {
        let bytes = TarStream::new()
            .raw(b"d", tar::EntryType::Directory, &[7u8; 64 * 1024])
            .tar_gz();
        let limits = ExtractLimits {
            max_bytes: 16 * 1024,
            ..LIMITS
        };
        let (_dir, result) = extract(&bytes, limits);
        let err = result.unwrap_err();
        assert!(matches!(err, ExtractError::TooManyBytes { .. }), "{err}");
        assert!(err.to_string().contains("--artifact-max-bytes"), "{err}");
    }

    #[test]
    fn data_of_v7_files_named_like_directories_counts_against_the_byte_limit() {
        // A V7 header: no magic, type NUL, a name ending in `/` (so a directory to tar).
        let mut header = tar::Header::new_old();
        header.as_old_mut().name[..2].copy_from_slice(b"d/");
        header.as_old_mut().linkflag = [0];
        header.set_size(64 * 1024);
        header.set_mode(0o644);
        header.set_cksum();
        let mut tar = header.as_bytes().to_vec();
        tar.extend_from_slice(&[7u8; 64 * 1024]);
        tar.extend_from_slice(&[0u8; 1024]);
        let limits = ExtractLimits {
            max_bytes: 16 * 1024,
            ..LIMITS
        };
        let (dir, result) = extract(&gzip(&tar), limits);
        assert!(
            matches!(result, Err(ExtractError::TooManyBytes { .. })),
            "{result:?}"
        );
        assert!(!dir.path().join("out/d").is_file());
    }

    #[test]
    fn pax_headers_count_against_the_byte_limit() {
        // Each header is under the metadata cap; together they are over the byte limit.
        let comment = "c".repeat(600 * 1024);
        let bytes = TarStream::new()
            .pax(&[("comment", &comment)])
            .file("a", b"x")
            .pax(&[("comment", &comment)])
            .file("b", b"x")
            .tar_gz();
        let limits = ExtractLimits {
            max_bytes: 1024 * 1024,
            ..LIMITS
        };
        let (_dir, result) = extract(&bytes, limits);
        assert!(
            matches!(result, Err(ExtractError::TooManyBytes { .. })),
            "{result:?}"
        );
    }

    #[test]
    fn gnu_long_names_count_against_the_byte_limit() {
        let name = "n/".repeat(400 * 1024);
        let bytes = TarStream::new().long_file(&name, b"x").tar_gz();
        let limits = ExtractLimits {
            max_bytes: 512 * 1024,
            ..LIMITS
        };
        let (_dir, result) = extract(&bytes, limits);
        assert!(
            matches!(result, Err(ExtractError::TooManyBytes { .. })),
            "{result:?}"
        );
    }

    /// A stream that hands out a few bytes at a time, slowly.
    struct SlowReader<'a> {
        data: &'a [u8],
        delay: Duration,
    }

    impl Read for SlowReader<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            std::thread::sleep(self.delay);
            let n = buf.len().min(64).min(self.data.len());
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    /// Bytes gzip cannot shrink, so the compressed stream is as long as the content.
    fn incompressible(len: usize) -> Vec<u8> {
        let mut state = 0x2545_f491_u32;
        (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                state as u8
            })
            .collect()
    }

    #[test]
    fn a_slow_stream_hits_the_time_limit() {
        // ~32 KiB at 64 bytes per 2 ms read: about a second, five times the limit.
        let bytes = TarStream::new()
            .file("slow", &incompressible(32 * 1024))
            .tar_gz();
        let reader = SlowReader {
            data: &bytes,
            delay: Duration::from_millis(2),
        };
        let limits = ExtractLimits {
            max_duration: Duration::from_millis(200),
            ..LIMITS
        };
        let dir = tempfile::tempdir().unwrap();
        let started = Instant::now();
        let result = extract_tar_gz(reader, &dir.path().join("out"), limits);
        let elapsed = started.elapsed();
        let err = result.unwrap_err();
        assert!(matches!(err, ExtractError::TimedOut { .. }), "{err}");
        assert!(
            err.to_string().contains("--artifact-extract-timeout"),
            "{err}"
        );
        assert!(elapsed < Duration::from_millis(600), "took {elapsed:?}");
    }

    #[test]
    fn the_same_slow_stream_completes_within_a_generous_limit() {
        let bytes = TarStream::new()
            .file("slow", &incompressible(2048))
            .tar_gz();
        let reader = SlowReader {
            data: &bytes,
            delay: Duration::from_millis(1),
        };
        let dir = tempfile::tempdir().unwrap();
        let result = extract_tar_gz(reader, &dir.path().join("out"), LIMITS);
        assert_eq!(result.unwrap().bytes, 2048);
    }

    #[test]
    fn safe_components_drop_dots_and_empty_parts() {
        assert_eq!(
            safe_components(b"./a//b/./c/").unwrap(),
            [&b"a"[..], b"b", b"c"]
        );
        assert!(safe_components(b"./").unwrap().is_empty());
        assert!(safe_components(b"a/..").is_err());
        assert!(safe_components(b"a/b\0c").is_err());
    }
}
