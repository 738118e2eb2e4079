//! The OCIRepository source: its reconciler, built on the OCI client in `crate::oci`.
pub mod reconcile;
