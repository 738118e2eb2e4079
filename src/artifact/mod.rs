//! Artifacts: deterministic archives, safe extraction, ignore rules, storage and the HTTP server.

// Everything here is blocking except the server; async callers run archive, extract and
// storage calls in `tokio::task::spawn_blocking`.

pub mod archive;
pub mod digest;
pub mod extract;
pub mod ignore;
pub mod server;
pub mod storage;

pub use archive::{ArchiveError, ArchiveFilter, KeepAll, archive_dir, write_archive};
pub use digest::{ContentDigest, DigestWriter};
pub use extract::{ExtractError, ExtractLimits, ExtractStats, extract_tar_gz};
pub use ignore::{DefaultPatterns, IgnoreError, IgnoreRules};
pub use server::router;
pub use storage::{
    ArtifactLocation, Storage, StorageConfig, StorageError, StoredArtifact, StoredArtifactRecord,
    advertised_host_from_addr,
};
