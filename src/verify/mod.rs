//! cosign: signing keys, the signature format cosign writes to registries, and (next)
//! verification with keys, keyless identities and trust roots.

pub mod cosign;
pub mod oci;
