//! The OCI distribution client: registries, references, tags, credentials and digests.
pub mod credentials;
pub mod digest;
pub mod pull;
pub mod reference;
pub mod registry;
pub mod semver;
