//! OCI registries: the distribution API client, credentials and reference resolution.
pub mod registry;
pub mod reference;
pub mod semver;
pub mod credentials;
