//! The OCIRepository source: its reconciler, built on the OCI client in `crate::oci`.
mod cloud;
pub mod reconcile;
