//! OCI registries: the distribution API client, credentials and reference resolution.
pub mod credentials;
pub mod digest;
pub mod pull;
pub mod reconcile;
pub mod reference;
pub mod registry;
pub mod semver;
