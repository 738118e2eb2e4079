//! Safe, bounded, streaming extraction of an untrusted gzip-compressed tarball.
//!
//! Flux's policy (reference §4.6): entries with absolute paths, `..` or `\` are refused,
//! symlinks and hard links are dropped, any other special entry is refused. On top of that
//! every write stays inside the target even if something replaced a directory there by a
//! symlink, and the total bytes written and the entry count are capped, so a gzip bomb stops
//! at the limit with memory that does not depend on the archive size.
//!
//! The tar stream is read in raw mode: GNU long names and PAX headers are handled here with a
//! size cap, because the `tar` crate would otherwise buffer them whole, whatever their size.

use std::fs::{self, DirBuilder, File, Permissions};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use flate2::read::MultiGzDecoder;

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
const DIR_MODE: u32 = 0o750;
/// Keeps read/execute bits but drops setuid/setgid/sticky and group/other write.
const FILE_MODE_MASK: u32 = 0o755;
/// The owner can always read and rewrite what was extracted (re-archiving, cleanup).
const FILE_MODE_OWNER: u32 = 0o600;
/// Largest GNU long-name or PAX header accepted; real ones are a few hundred bytes.
pub const MAX_METADATA_BYTES: u64 = 1024 * 1024;
const COPY_BUFFER_BYTES: usize = 64 * 1024;

/// Caps on what one archive may create.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExtractLimits {
    /// Total bytes of entry data: file contents written plus the data of skipped entries.
    pub max_bytes: u64,
    /// Number of entries (files, directories and skipped links alike).
    pub max_files: u64,
}

impl ExtractLimits {
    /// Flux's behaviour: no limit at all.
    pub const UNLIMITED: Self = Self {
        max_bytes: u64::MAX,
        max_files: u64::MAX,
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
    #[error("tar entry {entry:?} has unsupported type {kind}")]
    SpecialFile { entry: String, kind: String },
    #[error("tar entry {entry:?} conflicts with an existing {existing} in the target")]
    Conflict {
        entry: String,
        existing: &'static str,
    },
    #[error("archive exceeds the size limit max_bytes={limit}")]
    TooManyBytes { limit: u64 },
    #[error("archive exceeds the entry limit max_files={limit}")]
    TooManyFiles { limit: u64 },
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
    let stream = require_gzip(reader)?;
    prepare_target(target)?;
    let mut archive = tar::Archive::new(MultiGzDecoder::new(stream));
    let mut extractor = Extractor {
        target,
        limits,
        stats: ExtractStats::default(),
        entries_seen: 0,
        bytes_used: 0,
    };
    let mut pending = PendingMetadata::default();
    for entry in archive.entries()?.raw(true) {
        pending.absorb(&mut extractor, entry?)?;
    }
    Ok(extractor.stats)
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

fn display_name(name: &[u8]) -> String {
    String::from_utf8_lossy(name).into_owned()
}

struct Extractor<'t> {
    target: &'t Path,
    limits: ExtractLimits,
    stats: ExtractStats,
    entries_seen: u64,
    bytes_used: u64,
}

/// How a real (non-metadata) entry is treated.
enum EntryKind {
    File,
    Directory,
    Skipped,
    Refused(String),
}

impl Extractor<'_> {
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
            EntryKind::Skipped => self.skip(&entry),
            EntryKind::Refused(kind) => Err(ExtractError::SpecialFile {
                entry: display_name(name),
                kind,
            }),
        }
    }

    /// Skipped entries normally carry no data; if one does, it still costs budget, since
    /// the stream has to be read past it.
    fn skip<R: Read>(&mut self, entry: &tar::Entry<'_, R>) -> Result<(), ExtractError> {
        self.reserve_bytes(entry.header().entry_size()?)?;
        self.stats.skipped += 1;
        Ok(())
    }

    fn create_directory(&mut self, name: &[u8], components: &[&[u8]]) -> Result<(), ExtractError> {
        if components.is_empty() {
            self.stats.dirs += 1; // the root entry `.`: the target already exists
            return Ok(());
        }
        let path = self.ensure_parents(name, components)?;
        ensure_directory(&path, name)?;
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
        let declared = entry.header().entry_size()?;
        if declared > self.remaining_bytes() {
            return Err(self.too_many_bytes());
        }
        let path = self.ensure_parents(name, components)?;
        let mode = entry.header().mode().unwrap_or(0o644);
        let mut file = create_file_replacing(&path, name)?;
        let budget = self.remaining_bytes();
        let written = copy_bounded(entry, &mut file, budget).map_err(|err| match err {
            CopyError::OverBudget => self.too_many_bytes(),
            CopyError::Io(err) => ExtractError::Io(err),
        })?;
        file.set_permissions(Permissions::from_mode(file_mode(mode)))?;
        self.bytes_used += written;
        self.stats.bytes += written;
        self.stats.files += 1;
        Ok(())
    }

    /// Creates missing parent directories one by one, refusing anything that is not a real
    /// directory (a symlink placed there would otherwise redirect the write outside).
    fn ensure_parents(&self, name: &[u8], components: &[&[u8]]) -> Result<PathBuf, ExtractError> {
        let mut path = self.target.to_path_buf();
        let (last, parents) = components
            .split_last()
            .ok_or_else(|| ExtractError::PathEscape {
                entry: display_name(name),
                reason: "empty path",
            })?;
        for component in parents {
            path.push(std::ffi::OsStr::from_bytes(component));
            ensure_directory(&path, name)?;
        }
        path.push(std::ffi::OsStr::from_bytes(last));
        Ok(path)
    }

    fn reserve_bytes(&mut self, amount: u64) -> Result<(), ExtractError> {
        if amount > self.remaining_bytes() {
            return Err(self.too_many_bytes());
        }
        self.bytes_used += amount;
        Ok(())
    }

    fn remaining_bytes(&self) -> u64 {
        self.limits.max_bytes.saturating_sub(self.bytes_used)
    }

    fn too_many_bytes(&self) -> ExtractError {
        ExtractError::TooManyBytes {
            limit: self.limits.max_bytes,
        }
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
/// target. `.` and empty components are dropped; the empty result means the root.
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
    let mut components = Vec::new();
    for part in name.split(|b| *b == b'/') {
        match part {
            b"" | b"." => continue,
            b".." => return Err(refuse("parent directory component")),
            normal => components.push(normal),
        }
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

fn ensure_directory(path: &Path, name: &[u8]) -> Result<(), ExtractError> {
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
        Err(err) if err.kind() == io::ErrorKind::NotFound => create_directory(path, name),
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

#[derive(Debug)]
enum CopyError {
    OverBudget,
    Io(io::Error),
}

/// Copies until EOF, counting the bytes really written, and stops as soon as they would
/// exceed `budget` (so no header value, true or not, lets more than `budget` bytes through).
fn copy_bounded(mut from: impl Read, to: &mut impl Write, budget: u64) -> Result<u64, CopyError> {
    let mut buffer = vec![0u8; COPY_BUFFER_BYTES];
    let mut written = 0u64;
    loop {
        let n = match from.read(&mut buffer) {
            Ok(0) => return Ok(written),
            Ok(n) => n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => return Err(CopyError::Io(err)),
        };
        if written + n as u64 > budget {
            return Err(CopyError::OverBudget);
        }
        to.write_all(&buffer[..n]).map_err(CopyError::Io)?;
        written += n as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    use flate2::Compression;
    use flate2::write::GzEncoder;

    const LIMITS: ExtractLimits = ExtractLimits {
        max_bytes: 1024 * 1024,
        max_files: 100,
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
            max_bytes: 1024,
            max_files: 4,
        };
        let (_dir, result) = extract(&stream.tar_gz(), limits);
        let err = result.unwrap_err();
        assert!(matches!(err, ExtractError::TooManyFiles { limit: 4 }));
        assert!(err.to_string().contains("max_files=4"), "{err}");
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
        };
        let (dir, result) = extract(&bytes, limits);
        let err = result.unwrap_err();
        assert!(matches!(err, ExtractError::TooManyBytes { limit: 1000 }));
        assert!(err.to_string().contains("max_bytes=1000"), "{err}");
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
    fn bounded_copy_counts_real_bytes_not_declared_ones() {
        let data = vec![7u8; 300_000];
        let mut sink = Vec::new();
        let err = copy_bounded(&data[..], &mut sink, 100_000).unwrap_err();
        assert!(matches!(err, CopyError::OverBudget));
        assert!(sink.len() <= 100_000);
        let mut sink = Vec::new();
        assert_eq!(
            copy_bounded(&data[..], &mut sink, 300_000).unwrap(),
            300_000
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
