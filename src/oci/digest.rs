//! Content digests as the OCI image spec defines them: `<algorithm>:<encoded>`, where the
//! registered algorithms are sha256 (64 lowercase hex) and sha512 (128 lowercase hex).

// Anything a registry hands us by digest (an index's children, layers, signatures) is checked
// against the digest that named it; a digest we cannot check is refused, never trusted.

use sha2::{Digest as _, Sha256, Sha512};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    Sha256,
    Sha512,
}

impl Algorithm {
    fn name(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
        }
    }

    fn hex_len(self) -> usize {
        match self {
            Algorithm::Sha256 => 64,
            Algorithm::Sha512 => 128,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DigestError {
    #[error(
        "digest '{digest}' uses the algorithm '{algorithm}': only sha256 and sha512 can be verified"
    )]
    Unsupported { digest: String, algorithm: String },
    #[error("'{digest}' is not a valid {algorithm} digest ({hex_len} lowercase hex digits)")]
    Malformed {
        digest: String,
        algorithm: &'static str,
        hex_len: usize,
    },
    #[error("'{0}' is not a digest (<algorithm>:<hex>)")]
    NotADigest(String),
}

/// The algorithm of a well-formed, verifiable digest.
pub fn algorithm(digest: &str) -> Result<Algorithm, DigestError> {
    let shown = || crate::util::truncate(digest, 160);
    let (name, encoded) = digest
        .split_once(':')
        .ok_or_else(|| DigestError::NotADigest(shown()))?;
    let algorithm = match name {
        "sha256" => Algorithm::Sha256,
        "sha512" => Algorithm::Sha512,
        other => {
            return Err(DigestError::Unsupported {
                digest: shown(),
                algorithm: crate::util::truncate(other, 40),
            });
        }
    };
    let well_formed = encoded.len() == algorithm.hex_len()
        && encoded
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if !well_formed {
        return Err(DigestError::Malformed {
            digest: shown(),
            algorithm: algorithm.name(),
            hex_len: algorithm.hex_len(),
        });
    }
    Ok(algorithm)
}

/// Hashes content as it streams by and says whether it is what `expected` names.
pub struct Verifier {
    expected: String,
    hasher: Hasher,
}

enum Hasher {
    Sha256(Sha256),
    Sha512(Sha512),
}

impl Verifier {
    pub fn new(expected: &str) -> Result<Verifier, DigestError> {
        let hasher = match algorithm(expected)? {
            Algorithm::Sha256 => Hasher::Sha256(Sha256::new()),
            Algorithm::Sha512 => Hasher::Sha512(Sha512::new()),
        };
        Ok(Verifier {
            expected: expected.to_string(),
            hasher,
        })
    }

    pub fn update(&mut self, bytes: &[u8]) {
        match &mut self.hasher {
            Hasher::Sha256(h) => h.update(bytes),
            Hasher::Sha512(h) => h.update(bytes),
        }
    }

    /// `Err(actual)` when the content is not what the digest names.
    pub fn finish(self) -> Result<(), String> {
        let actual = match self.hasher {
            Hasher::Sha256(h) => format!("sha256:{}", hex::encode(h.finalize())),
            Hasher::Sha512(h) => format!("sha512:{}", hex::encode(h.finalize())),
        };
        if actual == self.expected {
            Ok(())
        } else {
            Err(actual)
        }
    }
}

/// Whether `bytes` are what `expected` names: `Ok(Err(actual))` when they are not.
pub fn check(expected: &str, bytes: &[u8]) -> Result<Result<(), String>, DigestError> {
    let mut verifier = Verifier::new(expected)?;
    verifier.update(bytes);
    Ok(verifier.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sha512(bytes: &[u8]) -> String {
        format!("sha512:{}", hex::encode(Sha512::digest(bytes)))
    }

    fn sha256(bytes: &[u8]) -> String {
        format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
    }

    #[test]
    fn both_registered_algorithms_are_verified() {
        for digest in [sha256(b"content"), sha512(b"content")] {
            assert_eq!(check(&digest, b"content"), Ok(Ok(())), "{digest}");
            let actual = check(&digest, b"other").unwrap().unwrap_err();
            assert_ne!(actual, digest);
            assert_eq!(actual.split(':').next(), digest.split(':').next());
        }
    }

    #[test]
    fn a_streamed_digest_equals_the_whole() {
        let digest = sha512(b"hello world");
        let mut v = Verifier::new(&digest).unwrap();
        v.update(b"hello ");
        v.update(b"world");
        assert_eq!(v.finish(), Ok(()));
    }

    #[test]
    fn other_algorithms_and_malformed_digests_are_refused() {
        let md5 = format!("md5:{}", "0".repeat(32));
        assert!(matches!(
            algorithm(&md5),
            Err(DigestError::Unsupported { algorithm, .. }) if algorithm == "md5"
        ));
        let blake3 = format!("blake3:{}", "0".repeat(64));
        assert!(check(&blake3, b"x").is_err());
        for malformed in [
            "sha256:abc".to_string(),
            format!("sha256:{}", "A".repeat(64)),
            format!("sha512:{}", "0".repeat(64)),
            format!("sha256:{}/../x", "0".repeat(60)),
        ] {
            assert!(
                matches!(algorithm(&malformed), Err(DigestError::Malformed { .. })),
                "{malformed}"
            );
        }
        assert!(matches!(
            algorithm("latest"),
            Err(DigestError::NotADigest(_))
        ));
        let why = algorithm(&md5).unwrap_err().to_string();
        assert!(why.contains("only sha256 and sha512"), "{why}");
    }
}
