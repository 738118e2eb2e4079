//! The digests of stored files this process wrote or hashed, trusted only while each file's
//! metadata is unchanged, so checking an artifact rarely means hashing it again.

use std::collections::HashMap;
use std::fs::{File, Metadata};
use std::io::BufReader;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use super::lock;
use crate::artifact::digest::digest_reader;

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

#[derive(Default)]
struct Records {
    by_path: HashMap<PathBuf, DigestRecord>,
    /// The same records by inode: every hard link to a blob shares its inode and so its record.
    by_inode: HashMap<(u64, u64), DigestRecord>,
}

#[derive(Default)]
pub(super) struct DigestRecords {
    records: Mutex<Records>,
    hashes_computed: AtomicU64,
}

impl Records {
    /// Drops the inode record if it is this one (a newer link may have renewed it).
    fn forget_inode(&mut self, record: &DigestRecord) {
        let inode = (record.stamp.dev, record.stamp.ino);
        if self
            .by_inode
            .get(&inode)
            .is_some_and(|r| r.stamp == record.stamp)
        {
            self.by_inode.remove(&inode);
        }
    }
}

impl DigestRecords {
    /// Records the digest (hex) of a file as it is described by `metadata`.
    pub(super) fn remember(&self, path: &Path, metadata: &Metadata, hex: String) {
        self.insert(path, FileStamp::of(metadata), hex);
    }

    /// The remembered digest (hex) of `path`, if its metadata still matches the record.
    pub(super) fn recorded(&self, path: &Path, metadata: &Metadata) -> Option<String> {
        let stamp = FileStamp::of(metadata);
        let records = lock(&self.records);
        [
            records.by_path.get(path),
            records.by_inode.get(&(stamp.dev, stamp.ino)),
        ]
        .into_iter()
        .flatten()
        .find(|record| record.stamp == stamp)
        .map(|record| record.hex.clone())
    }

    /// The digest (hex) of `path` as described by `metadata`: the record if it still holds,
    /// else the file hashed (and remembered if it did not change meanwhile).
    pub(super) fn current(&self, path: &Path, metadata: &Metadata) -> Option<String> {
        self.recorded(path, metadata).or_else(|| self.rehash(path))
    }

    fn rehash(&self, path: &Path) -> Option<String> {
        let file = File::open(path).ok()?;
        let before = FileStamp::of(&file.metadata().ok()?);
        let digest = digest_reader(BufReader::new(&file)).ok()?;
        self.hashes_computed.fetch_add(1, Ordering::Relaxed);
        let after = FileStamp::of(&file.metadata().ok()?);
        // A file that changed while being hashed gets no record: the next check hashes again.
        if before == after {
            self.insert(path, after, digest.hex.clone());
        }
        Some(digest.hex)
    }

    fn insert(&self, path: &Path, stamp: FileStamp, hex: String) {
        let record = DigestRecord { stamp, hex };
        let mut records = lock(&self.records);
        let inode = (record.stamp.dev, record.stamp.ino);
        records.by_inode.insert(inode, record.clone());
        records.by_path.insert(path.to_path_buf(), record);
    }

    pub(super) fn forget(&self, path: &Path) {
        let mut records = lock(&self.records);
        if let Some(record) = records.by_path.remove(path) {
            records.forget_inode(&record);
        }
    }

    pub(super) fn forget_under(&self, dir: &Path) {
        let mut records = lock(&self.records);
        let gone: Vec<PathBuf> = records
            .by_path
            .keys()
            .filter(|path| path.starts_with(dir))
            .cloned()
            .collect();
        for path in gone {
            if let Some(record) = records.by_path.remove(&path) {
                records.forget_inode(&record);
            }
        }
    }

    /// How many full-file hashes had to be computed (the slow path).
    pub(super) fn hashes_computed(&self) -> u64 {
        self.hashes_computed.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use std::fs::{self, FileTimes};

    use super::super::StoredArtifactRecord;
    use super::super::testing::{record, storage, write};

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
        fs::File::options()
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
}
