//! Bucket sources: object-store clients (S3, GCS, Azure Blob), the etag index and Flux's
//! revision, the incremental mirror, and the reconciler that ties them together.

pub mod azure;
pub mod client;
pub mod gcs;
pub mod index;
pub mod mirror;
pub mod object;
pub mod reconcile;
pub mod s3;
