//! Upstream sources: resolving references and fetching content.

pub mod oci;
