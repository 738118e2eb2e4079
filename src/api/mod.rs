//! The custom resources driftless serves and reads, with Flux's exact schemas.

// `#[kube(printcolumn(...))]` repeats `type_ = "string"` by design; clippy reads that as a
// duplicated attribute.
#![allow(clippy::duplicated_attributes)]

pub mod bucket;
pub mod crds;
pub mod kustomization;
pub mod meta;
pub mod oci_repository;

pub use bucket::{Bucket, BucketSpec, BucketStatus};
pub use kustomization::{Kustomization, KustomizationSpec, KustomizationStatus};
pub use meta::{Artifact, Condition, ConditionStatus};
pub use oci_repository::{OCIRepository, OCIRepositorySpec, OCIRepositoryStatus};
