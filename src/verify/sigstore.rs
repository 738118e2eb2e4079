//! Sigstore bundles verified by Sigstore's own Rust library (`sigstore-verify`): bundle
//! parsing, certificate chains, SCTs, transparency-log entries, inclusion proofs, checkpoints,
//! signed entry timestamps, RFC 3161 timestamps and the signature over the artifact.
//!
//! What the library has no notion of stays here: Flux's `matchOIDCIdentity` regular
//! expressions (the library matches exact identities only, so it verifies for any identity and
//! the rules are applied to the identity it proved), and reporting.

use sigstore_verify::trust_root::TrustedRoot;
use sigstore_verify::types::{Bundle, DerPublicKey, Sha256Hash};
use sigstore_verify::{PublicKeyVerificationPolicy, VerificationPolicy, Verifier};

use super::certificate::SigningCertificate;
use super::{IdentityMatch, accepted_subject};

/// The public-good (production) and staging instances' trusted roots, as the library ships them.
pub use sigstore_verify::trust_root::{
    SIGSTORE_PRODUCTION_TRUSTED_ROOT as PUBLIC_GOOD_TRUSTED_ROOT,
    SIGSTORE_STAGING_TRUSTED_ROOT as STAGING_TRUSTED_ROOT,
};

/// What was signed: the artifact's bytes, or its SHA-256 (for a DSSE in-toto bundle, the digest
/// of one of the statement's subjects).
pub enum Signed<'a> {
    Bytes(&'a [u8]),
    Sha256([u8; 32]),
}

/// Who must have signed.
pub enum Signer<'a> {
    /// The holder of this public key (DER SubjectPublicKeyInfo).
    Key(&'a [u8]),
    /// A certificate of the trusted root's CAs whose identity matches one of the rules (any
    /// identity when there are none).
    Identity(&'a [IdentityMatch]),
}

/// What a verified bundle proved about its signer.
#[derive(Debug, Clone, PartialEq)]
pub struct Proved {
    /// Keyless: the certificate's identity and OIDC issuer.
    pub identity: Option<(String, String)>,
    /// When the transparency log integrated the entry (Rekor v1).
    pub integrated_time: Option<jiff::Timestamp>,
    /// Every time an authority vouched for (log and RFC 3161 timestamps).
    pub verified_times: Vec<jiff::Timestamp>,
}

/// A verifier for one trusted root (prepared once, reused for every bundle).
pub struct BundleVerifier {
    verifier: Verifier,
}

impl BundleVerifier {
    /// From a Sigstore `trusted_root.json`.
    pub fn from_trusted_root(json: &str) -> Result<BundleVerifier, String> {
        let root = TrustedRoot::from_json(json)
            .map_err(|e| format!("trusted_root.json is not a usable Sigstore trusted root: {e}"))?;
        let verifier =
            Verifier::new(&root).map_err(|e| format!("trusted_root.json is not usable: {e}"))?;
        Ok(BundleVerifier { verifier })
    }

    pub fn public_good() -> Result<BundleVerifier, String> {
        Self::from_trusted_root(PUBLIC_GOOD_TRUSTED_ROOT)
    }

    /// Verifies a bundle (its JSON) over `signed`, made by `signer`; every refusal says why.
    pub fn verify(
        &self,
        bundle_json: &str,
        signed: Signed<'_>,
        signer: Signer<'_>,
    ) -> Result<Proved, String> {
        let bundle = Bundle::from_json(bundle_json)
            .map_err(|e| format!("the bundle is not a Sigstore bundle: {e}"))?;
        let verified = match signer {
            Signer::Key(der) => {
                let policy = PublicKeyVerificationPolicy::new(DerPublicKey::from_bytes(der));
                self.check(&bundle, signed, &policy)?
            }
            Signer::Identity(_) => {
                self.check(&bundle, signed, &VerificationPolicy::any_identity())?
            }
        };
        let identity = match signer {
            Signer::Key(_) => None,
            Signer::Identity(rules) => Some(matched_identity(&bundle, &verified, rules)?),
        };
        Ok(Proved {
            identity,
            integrated_time: verified.integrated_time(),
            verified_times: verified.verified_timestamps().to_vec(),
        })
    }

    fn check(
        &self,
        bundle: &Bundle,
        signed: Signed<'_>,
        policy: &(impl sigstore_verify::Policy + ?Sized),
    ) -> Result<sigstore_verify::VerificationResult, String> {
        let result = match signed {
            Signed::Bytes(bytes) => self.verifier.verify(bytes, bundle, policy),
            Signed::Sha256(digest) => self.verifier.verify(
                Sha256Hash::from_hex(&hex::encode(digest)).map_err(|e| e.to_string())?,
                bundle,
                policy,
            ),
        };
        result.map_err(|e| e.to_string())
    }
}

/// The identity of the certificate the library verified, if one of Flux's rules accepts it.
/// The library reports only the first email or URI name; like cosign (and Flux through it),
/// every subject alternative name is matched, and the issuer is Fulcio's extension (or its
/// legacy form), read from that same certificate.
fn matched_identity(
    bundle: &Bundle,
    verified: &sigstore_verify::VerificationResult,
    rules: &[IdentityMatch],
) -> Result<(String, String), String> {
    let der = bundle
        .signing_certificate()
        .filter(|_| verified.certificate_verified())
        .ok_or("the bundle is not signed with a certificate of the trusted root")?;
    let identity = SigningCertificate::parse(der.as_bytes())?.identity();
    let subject = accepted_subject(&identity, rules)?;
    Ok((subject, identity.issuer))
}

/// `sha256:<64 hex>` as bytes, else `None` (the conformance protocol's digest form).
pub fn sha256_digest(text: &str) -> Option<[u8; 32]> {
    let hex_digits = text.strip_prefix("sha256:")?;
    let bytes = hex::decode(hex_digits).ok()?;
    bytes.try_into().ok()
}
