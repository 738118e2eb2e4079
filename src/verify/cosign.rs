//! cosign's key-based signatures: its encrypted private key format, the "simple signing"
//! payload it signs, and the signature image it attaches (`sha256-<hex>.sig`).

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair, RsaKeyPair};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;

/// The layer media type of a cosign signature.
pub const SIMPLE_SIGNING_MEDIA_TYPE: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
/// The layer annotation that carries the base64 signature.
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("not a cosign private key: {0}")]
    Format(String),
    #[error("decrypting the cosign private key failed: wrong password (COSIGN_PASSWORD)?")]
    Decrypt,
    #[error("unsupported private key: {0}")]
    Unsupported(String),
}

/// A private key cosign can produce or import.
pub enum SigningKey {
    EcdsaP256(EcdsaKeyPair),
    EcdsaP384(EcdsaKeyPair),
    Ed25519(Ed25519KeyPair),
    Rsa(RsaKeyPair),
}

#[derive(Deserialize)]
struct Encrypted {
    kdf: Kdf,
    cipher: Cipher,
    ciphertext: String,
}

#[derive(Deserialize)]
struct Kdf {
    name: String,
    params: ScryptParams,
    salt: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "UPPERCASE")]
struct ScryptParams {
    n: u64,
    #[serde(rename = "r")]
    r: u32,
    #[serde(rename = "p")]
    p: u32,
}

#[derive(Deserialize)]
struct Cipher {
    name: String,
    nonce: String,
}

impl SigningKey {
    /// A `cosign.key` (`ENCRYPTED SIGSTORE PRIVATE KEY` / `ENCRYPTED COSIGN PRIVATE KEY`):
    /// scrypt-derived key, NaCl secretbox, PKCS#8 inside.
    pub fn from_cosign_key(pem: &str, password: &[u8]) -> Result<SigningKey, KeyError> {
        let body = [
            "ENCRYPTED SIGSTORE PRIVATE KEY",
            "ENCRYPTED COSIGN PRIVATE KEY",
        ]
        .iter()
        .find_map(|label| crate::util::pem_blocks(pem, label).into_iter().next())
        .ok_or_else(|| KeyError::Format("no ENCRYPTED SIGSTORE PRIVATE KEY block".into()))?;
        let encrypted: Encrypted =
            serde_json::from_slice(&body).map_err(|e| KeyError::Format(e.to_string()))?;
        if encrypted.kdf.name != "scrypt" || encrypted.cipher.name != "nacl/secretbox" {
            return Err(KeyError::Format(format!(
                "unsupported encryption {} + {}",
                encrypted.kdf.name, encrypted.cipher.name
            )));
        }
        let decode = |s: &str| {
            STANDARD
                .decode(s)
                .map_err(|e| KeyError::Format(e.to_string()))
        };
        let (salt, nonce, ciphertext) = (
            decode(&encrypted.kdf.salt)?,
            decode(&encrypted.cipher.nonce)?,
            decode(&encrypted.ciphertext)?,
        );
        let p = &encrypted.kdf.params;
        let log_n =
            u8::try_from(p.n.trailing_zeros()).map_err(|_| KeyError::Format("scrypt N".into()))?;
        if p.n != 1 << log_n {
            return Err(KeyError::Format("scrypt N is not a power of two".into()));
        }
        let params = scrypt::Params::new(log_n, p.r, p.p, 32)
            .map_err(|e| KeyError::Format(e.to_string()))?;
        let mut key = [0u8; 32];
        scrypt::scrypt(password, &salt, &params, &mut key)
            .map_err(|e| KeyError::Format(e.to_string()))?;
        use crypto_secretbox::aead::{Aead, KeyInit};
        let cipher = crypto_secretbox::XSalsa20Poly1305::new(&key.into());
        let nonce = crypto_secretbox::Nonce::from_slice(&nonce);
        let der = cipher
            .decrypt(nonce, ciphertext.as_ref())
            .map_err(|_| KeyError::Decrypt)?;
        SigningKey::from_pkcs8(&der)
    }

    /// A PKCS#8 private key of any type cosign signs with.
    pub fn from_pkcs8(der: &[u8]) -> Result<SigningKey, KeyError> {
        if let Ok(k) = EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_ASN1_SIGNING, der) {
            return Ok(SigningKey::EcdsaP256(k));
        }
        // (aws-lc-rs signs P-384 with SHA-384 only; verification accepts both hashes.)
        if let Ok(k) = EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P384_SHA384_ASN1_SIGNING, der) {
            return Ok(SigningKey::EcdsaP384(k));
        }
        if let Ok(k) = Ed25519KeyPair::from_pkcs8(der)
            .or_else(|_| Ed25519KeyPair::from_pkcs8_maybe_unchecked(der))
        {
            return Ok(SigningKey::Ed25519(k));
        }
        if let Ok(k) = RsaKeyPair::from_pkcs8(der) {
            return Ok(SigningKey::Rsa(k));
        }
        Err(KeyError::Unsupported(
            "not an ECDSA P-256/P-384, Ed25519 or RSA PKCS#8 key".into(),
        ))
    }

    /// The signature cosign would make over `payload`.
    pub fn sign(&self, payload: &[u8]) -> Result<Vec<u8>, KeyError> {
        let rng = SystemRandom::new();
        let failed = |e: aws_lc_rs::error::Unspecified| KeyError::Unsupported(e.to_string());
        Ok(match self {
            SigningKey::EcdsaP256(k) | SigningKey::EcdsaP384(k) => {
                k.sign(&rng, payload).map_err(failed)?.as_ref().to_vec()
            }
            SigningKey::Ed25519(k) => k.sign(payload).as_ref().to_vec(),
            SigningKey::Rsa(k) => {
                let mut sig = vec![0; k.public_modulus_len()];
                k.sign(&signature::RSA_PKCS1_SHA256, &rng, payload, &mut sig)
                    .map_err(failed)?;
                sig
            }
        })
    }

    /// The public key bytes (for messages and tests).
    pub fn public_key(&self) -> Vec<u8> {
        match self {
            SigningKey::EcdsaP256(k) | SigningKey::EcdsaP384(k) => k.public_key().as_ref().to_vec(),
            SigningKey::Ed25519(k) => k.public_key().as_ref().to_vec(),
            SigningKey::Rsa(k) => k.public_key().as_ref().to_vec(),
        }
    }
}

/// Whether `signature` over `payload` verifies with the PEM public key (`PUBLIC KEY`, X.509
/// SubjectPublicKeyInfo) of any type and hash cosign uses: ECDSA P-256/P-384 with SHA-256
/// (cosign's default for every curve) or SHA-384, Ed25519, RSA PKCS#1 v1.5 or PSS with SHA-256.
pub fn verify_with_public_key(public_pem: &str, payload: &[u8], signature: &[u8]) -> bool {
    crate::util::pem_blocks(public_pem, "PUBLIC KEY")
        .first()
        .is_some_and(|der| verify_with_der_key(der, payload, signature))
}

/// DER SubjectPublicKeyInfo prefix of an Ed25519 key (aws-lc-rs wants its raw 32 bytes).
const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// Whether `signature` over `payload` verifies with the DER SubjectPublicKeyInfo `der`, under
/// any of the algorithms cosign signs with for that kind of key.
pub fn verify_with_der_key(der: &[u8], payload: &[u8], signature: &[u8]) -> bool {
    if let Some(raw) = der.strip_prefix(&ED25519_SPKI_PREFIX[..]) {
        return signature::UnparsedPublicKey::new(&signature::ED25519, raw)
            .verify(payload, signature)
            .is_ok();
    }
    let algorithms: [&dyn signature::VerificationAlgorithm; 6] = [
        &signature::ECDSA_P256_SHA256_ASN1,
        &signature::ECDSA_P384_SHA256_ASN1,
        &signature::ECDSA_P384_SHA384_ASN1,
        &signature::RSA_PKCS1_2048_8192_SHA256,
        &signature::RSA_PSS_2048_8192_SHA256,
        &signature::ECDSA_P521_SHA512_ASN1,
    ];
    algorithms.iter().any(|alg| {
        signature::UnparsedPublicKey::new(*alg, der)
            .verify(payload, signature)
            .is_ok()
    })
}

/// What a signature payload must say for `manifest_digest`: cosign's type and that digest.
pub fn check_payload(payload: &[u8], manifest_digest: &str) -> Result<(), String> {
    let value: serde_json::Value = serde_json::from_slice(payload)
        .map_err(|e| format!("signature payload is not JSON: {e}"))?;
    let critical = &value["critical"];
    if critical["type"] != "cosign container image signature" {
        return Err(format!("signature payload has type {}", critical["type"]));
    }
    let signed = critical["image"]["docker-manifest-digest"]
        .as_str()
        .unwrap_or_default();
    if signed != manifest_digest {
        return Err(format!("signature is for {signed}, not {manifest_digest}"));
    }
    Ok(())
}

/// The payload cosign signs for an image: the repository and the manifest digest.
pub fn simple_signing_payload(docker_reference: &str, manifest_digest: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "critical": {
            "identity": {"docker-reference": docker_reference},
            "image": {"docker-manifest-digest": manifest_digest},
            "type": "cosign container image signature",
        },
        "optional": null,
    }))
    .expect("JSON of literals")
}

/// The tag cosign attaches signatures of `digest` under.
pub fn signature_tag(manifest_digest: &str) -> String {
    format!("{}.sig", manifest_digest.replacen(':', "-", 1))
}

pub fn encode_signature(signature: &[u8]) -> String {
    STANDARD.encode(signature)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_and_payloads_follow_cosign() {
        assert_eq!(signature_tag("sha256:abc"), "sha256-abc.sig");
        let payload: serde_json::Value =
            serde_json::from_slice(&simple_signing_payload("r.io/app", "sha256:abc")).unwrap();
        assert_eq!(
            payload["critical"]["image"]["docker-manifest-digest"],
            "sha256:abc"
        );
        assert_eq!(
            payload["critical"]["type"],
            "cosign container image signature"
        );
        assert!(payload["optional"].is_null());
    }

    #[test]
    fn signatures_verify_with_the_matching_public_key_only() {
        use aws_lc_rs::encoding::AsDer;
        let rng = SystemRandom::new();
        let pkcs8 =
            EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_ASN1_SIGNING, &rng).unwrap();
        let key = SigningKey::from_pkcs8(pkcs8.as_ref()).unwrap();
        let SigningKey::EcdsaP256(pair) = &key else {
            panic!("P-256 expected")
        };
        let spki = pair.public_key().as_der().unwrap();
        let pem = format!(
            "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
            STANDARD.encode(spki.as_ref())
        );
        let payload = simple_signing_payload("r.io/app", "sha256:abc");
        let sig = key.sign(&payload).unwrap();
        assert!(verify_with_public_key(&pem, &payload, &sig));
        assert!(!verify_with_public_key(&pem, b"other payload", &sig));
        assert!(check_payload(&payload, "sha256:abc").is_ok());
        assert!(
            check_payload(&payload, "sha256:def")
                .unwrap_err()
                .contains("not sha256:def")
        );
    }

    #[test]
    fn wrong_files_are_explained() {
        assert!(matches!(
            SigningKey::from_cosign_key("nope", b""),
            Err(KeyError::Format(_))
        ));
        assert!(matches!(
            SigningKey::from_pkcs8(b"\x30\x00"),
            Err(KeyError::Unsupported(_))
        ));
    }
}
