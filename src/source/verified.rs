//! Verify once per digest: a signature verification that succeeded for
//! `registry/repository@digest` under some verification material is reused by every object
//! that resolves the same digest under the same material — 1,000 objects on one signed artifact
//! verify once, not 1,000 times.
//!
//! Only successes are kept, and a success is a cryptographic fact about the digest (a signature
//! by these keys, or a certificate chaining to this trusted root with these identities, over
//! this digest), whoever fetched the signature: no tenant can plant one for another. The key
//! holds everything the verdict depends on — the material's fingerprint, the identities the
//! certificate must match, the provider — and the object must still have resolved the digest
//! with its own credentials. Entries expire, so that a signature removed upstream or a
//! certificate past its validity is noticed by the objects that verify next.

use std::time::{Duration, Instant};

use crate::util::BoundedMap;
use crate::verify::Verified;

/// How long a verification is reused.
const TTL: Duration = Duration::from_secs(600);

/// Past this many keys the index starts over (as the pull index does).
const MAX_ENTRIES: usize = 4096;

/// What a verification's verdict depends on.
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
pub struct VerifyKey {
    pub registry: String,
    pub repository: String,
    pub digest: String,
    /// The provider, the material's fingerprint and the identities to match, as one string.
    pub material: String,
}

pub struct VerifiedDigests {
    entries: BoundedMap<VerifyKey, (Verified, Instant)>,
}

impl Default for VerifiedDigests {
    fn default() -> Self {
        VerifiedDigests {
            entries: BoundedMap::new(MAX_ENTRIES),
        }
    }
}

impl VerifiedDigests {
    /// A verification of `key` younger than the TTL.
    pub fn get(&self, key: &VerifyKey) -> Option<Verified> {
        let (verified, at) = self.entries.get(key)?;
        (at.elapsed() < TTL).then_some(verified)
    }

    pub fn remember(&self, key: VerifyKey, verified: Verified) {
        self.entries.insert(key, (verified, Instant::now()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::{Format, VerifiedSigner};

    fn key(digest: &str, material: &str) -> VerifyKey {
        VerifyKey {
            registry: "r.io".into(),
            repository: "app".into(),
            digest: digest.into(),
            material: material.into(),
        }
    }

    fn verified(digest: &str) -> Verified {
        Verified {
            digest: digest.into(),
            format: Format::SignatureTag,
            signer: VerifiedSigner::Key("cosign.pub".into()),
            log: None,
            timestamped_at: None,
        }
    }

    #[test]
    fn a_verification_is_reused_only_for_the_same_digest_repository_and_material() {
        let index = VerifiedDigests::default();
        index.remember(key("sha256:a", "cosign\nfp\nNone"), verified("sha256:a"));
        assert_eq!(
            index.get(&key("sha256:a", "cosign\nfp\nNone")),
            Some(verified("sha256:a"))
        );
        let other_repository = VerifyKey {
            repository: "other".into(),
            ..key("sha256:a", "cosign\nfp\nNone")
        };
        for different in [
            key("sha256:b", "cosign\nfp\nNone"),
            key("sha256:a", "cosign\nfp2\nNone"),
            key("sha256:a", "cosign\nfp\nSome([subject: x])"),
            other_repository,
        ] {
            assert_eq!(index.get(&different), None, "{different:?}");
        }
    }
}
