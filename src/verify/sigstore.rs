//! Sigstore bundles verified by Sigstore's own Rust library (`sigstore-verify`, pinned): bundle
//! parsing, certificate chains, SCTs, transparency-log entries, inclusion proofs, checkpoints,
//! signed entry timestamps, RFC 3161 timestamps and the signature over the artifact.
//!
//! What the library has no notion of stays here: Flux's `matchOIDCIdentity` regular
//! expressions (the library matches exact identities only, so it verifies for any identity and
//! the rules are applied to the certificate it verified), which log a proof came from, and
//! refusals worded for a status condition.

use std::sync::{Arc, OnceLock};

use sigstore_verify::types::bundle::TransparencyLogEntry;
use sigstore_verify::types::{Bundle, DerPublicKey, Sha256Hash};
use sigstore_verify::{
    CertificateError, Error, PublicKeyVerificationPolicy, TimestampError, TransparencyLogError,
    VerificationPolicy, VerificationResult, Verifier,
};

use super::IdentityMatch;
use super::certificate::SigningCertificate;

/// The public-good (production) and staging instances' trusted roots, as the library ships them.
pub use sigstore_verify::trust_root::{
    SIGSTORE_PRODUCTION_TRUSTED_ROOT as PUBLIC_GOOD_TRUSTED_ROOT,
    SIGSTORE_STAGING_TRUSTED_ROOT as STAGING_TRUSTED_ROOT,
};

/// What was signed: the artifact's bytes, or its SHA-256 (for a DSSE in-toto bundle, the digest
/// of one of the statement's subjects).
#[derive(Clone, Copy)]
pub enum Signed<'a> {
    Bytes(&'a [u8]),
    Sha256([u8; 32]),
}

/// Who must have signed.
#[derive(Clone, Copy)]
pub enum Signer<'a> {
    /// The holder of this public key (DER SubjectPublicKeyInfo).
    Key(&'a [u8]),
    /// A certificate of the trusted root's CAs whose identity matches one of the rules (any
    /// identity when there are none).
    Identity(&'a [IdentityMatch]),
}

/// A transparency log's proof that a signature was published.
#[derive(Debug, Clone, PartialEq)]
pub struct LogProof {
    pub log_url: String,
    pub log_index: i64,
    /// When the log integrated the entry (Rekor v1 signs it; Rekor v2 does not).
    pub integrated_time: Option<jiff::Timestamp>,
}

/// What a verified bundle proved.
#[derive(Debug, Clone, PartialEq)]
pub struct Proved {
    /// Keyless: the subject that matched and the certificate's OIDC issuer.
    pub identity: Option<(String, String)>,
    pub log: Option<LogProof>,
    /// The time an RFC 3161 timestamp authority attested, when that was the signing time.
    pub timestamped_at: Option<jiff::Timestamp>,
}

/// A Sigstore trusted root, prepared once for every bundle verified against it.
pub struct TrustedRoot {
    verifier: Verifier,
    /// Transparency logs by key id, for naming the log that proved an entry.
    logs: Vec<(Vec<u8>, String)>,
    /// A private instance without certificate transparency asks for no SCT (as before the
    /// library, and as cosign's `--insecure-ignore-sct` for such instances).
    has_ct_logs: bool,
}

impl TrustedRoot {
    /// From a Sigstore `trusted_root.json`.
    pub fn from_json(json: &[u8]) -> Result<TrustedRoot, String> {
        let text = std::str::from_utf8(json).map_err(|_| "trusted_root.json is not UTF-8")?;
        let root = sigstore_verify::trust_root::TrustedRoot::from_json(text)
            .map_err(|e| format!("trusted_root.json is not a usable Sigstore trusted root: {e}"))?;
        let verifier =
            Verifier::new(&root).map_err(|e| format!("trusted_root.json is not usable: {e}"))?;
        Ok(TrustedRoot {
            verifier,
            logs: root
                .tlogs
                .iter()
                .map(|l| (l.log_id.key_id.as_bytes().to_vec(), l.base_url.clone()))
                .collect(),
            has_ct_logs: !root.ctlogs.is_empty(),
        })
    }

    /// The public-good instance's root, compiled in with the library.
    pub fn public_good() -> Arc<TrustedRoot> {
        static ROOT: OnceLock<Arc<TrustedRoot>> = OnceLock::new();
        ROOT.get_or_init(|| {
            Arc::new(
                TrustedRoot::from_json(PUBLIC_GOOD_TRUSTED_ROOT.as_bytes())
                    .unwrap_or_else(|e| panic!("the library's embedded trusted root: {e}")),
            )
        })
        .clone()
    }

    /// Verifies `bundle` over `signed`, made by `signer`; every refusal says why.
    pub fn verify(
        &self,
        bundle: &Bundle,
        signed: Signed<'_>,
        signer: Signer<'_>,
    ) -> Result<Proved, String> {
        self.knows_a_log_of(bundle)?;
        let result = match signer {
            Signer::Key(der) => {
                let policy = PublicKeyVerificationPolicy::new(DerPublicKey::from_bytes(der));
                self.run(bundle, signed, &policy)
            }
            Signer::Identity(_) if self.has_ct_logs => {
                self.run(bundle, signed, &VerificationPolicy::any_identity())
            }
            Signer::Identity(_) => self.run(
                bundle,
                signed,
                &VerificationPolicy::any_identity().skip_sct(),
            ),
        }
        .map_err(|e| explain(&e, signer))?;
        let identity = match signer {
            Signer::Key(_) => None,
            Signer::Identity(rules) => Some(matched_identity(bundle, &result, rules)?),
        };
        let log = self.log_proof(bundle, &result);
        let timestamped_at = match result.integrated_time() {
            Some(_) => None,
            None => result.verified_timestamps().first().copied(),
        };
        Ok(Proved {
            identity,
            log,
            timestamped_at,
        })
    }

    /// An entry of a log this root does not list proves nothing, whatever else is wrong.
    fn knows_a_log_of(&self, bundle: &Bundle) -> Result<(), String> {
        let entries = &bundle.verification_material.tlog_entries;
        if entries.is_empty() || entries.iter().any(|e| self.log_url(e).is_some()) {
            return Ok(());
        }
        let ids: Vec<String> = entries
            .iter()
            .map(|e| hex::encode(e.log_id.key_id.as_bytes()))
            .collect();
        Err(format!(
            "no transparency log proof from a log of the trusted root: the signature's entries are of the logs [{}]",
            ids.join(", ")
        ))
    }

    fn log_url(&self, entry: &TransparencyLogEntry) -> Option<&str> {
        self.logs
            .iter()
            .find(|(id, _)| id.as_slice() == entry.log_id.key_id.as_bytes())
            .map(|(_, url)| url.as_str())
    }

    fn run(
        &self,
        bundle: &Bundle,
        signed: Signed<'_>,
        policy: &(impl sigstore_verify::Policy + ?Sized),
    ) -> Result<VerificationResult, Error> {
        match signed {
            Signed::Bytes(bytes) => self.verifier.verify(bytes, bundle, policy),
            Signed::Sha256(digest) => {
                self.verifier
                    .verify(Sha256Hash::from_hex(&hex::encode(digest))?, bundle, policy)
            }
        }
    }

    /// The first entry from a log of this root (the library verified every entry).
    fn log_proof(&self, bundle: &Bundle, result: &VerificationResult) -> Option<LogProof> {
        bundle
            .verification_material
            .tlog_entries
            .iter()
            .find_map(|entry| {
                Some(LogProof {
                    log_url: self.log_url(entry)?.to_string(),
                    log_index: i64::try_from(entry.log_index.get()).unwrap_or(i64::MAX),
                    integrated_time: result.integrated_time(),
                })
            })
    }
}

/// A refusal in the words of a status condition: which check failed, then the library's detail.
fn explain(error: &Error, signer: Signer<'_>) -> String {
    let cause = match error {
        Error::SignatureInvalid(_) => match signer {
            Signer::Key(_) => "a signature does not verify with the key",
            Signer::Identity(_) => "a signature does not verify with its signing certificate's key",
        },
        Error::ArtifactMismatch(_) => "a signature is not over this artifact",
        Error::Certificate(CertificateError::ChainInvalid(_))
        | Error::Certificate(CertificateError::NoValidAuthority { .. }) => {
            "the signing certificate does not chain to a trusted certificate authority"
        }
        Error::Certificate(CertificateError::NotYetValid { .. })
        | Error::Certificate(CertificateError::Expired { .. }) => {
            "the signing certificate was not valid when the signature was made"
        }
        Error::Certificate(CertificateError::Sct(_)) => {
            "the signing certificate has no valid signed certificate timestamp (SCT) from a CT log of the trusted root"
        }
        Error::Certificate(_) => "the signing certificate is not usable",
        Error::TransparencyLog(TransparencyLogError::UnknownLog { .. }) => {
            "no transparency log proof from a log of the trusted root"
        }
        Error::TransparencyLog(TransparencyLogError::InclusionPromise(_)) => {
            "no transparency log proof: the log's signed entry timestamp does not verify"
        }
        Error::TransparencyLog(TransparencyLogError::EntryMismatch(_)) => {
            "no transparency log proof: the log entry records another signature or artifact"
        }
        Error::TransparencyLog(_) => "no transparency log proof",
        Error::Timestamp(TimestampError::NoVerifiedTimestamp(_))
        | Error::Bundle(sigstore_verify::bundle::Error::MissingSigningTimeEvidence) => {
            "no proof of the signing time: the log entry has no signed entry timestamp and the signature no RFC 3161 timestamp of the trusted root"
        }
        Error::Timestamp(_) => "no proof of the signing time",
        Error::InvalidBundle(_)
        | Error::UnsupportedBundle(_)
        | Error::Bundle(_)
        | Error::Types(_) => "the Sigstore bundle is not usable",
        _ => "the signature could not be verified",
    };
    format!("{cause} ({error})")
}

/// The identity of the certificate the library verified, if one of Flux's rules accepts it.
/// The library reports only the first email or URI name; like cosign (and Flux through it),
/// every subject alternative name is matched, and the issuer is Fulcio's extension (or its
/// legacy form), read from that same certificate.
fn matched_identity(
    bundle: &Bundle,
    verified: &VerificationResult,
    rules: &[IdentityMatch],
) -> Result<(String, String), String> {
    let der = bundle
        .signing_certificate()
        .filter(|_| verified.certificate_verified())
        .ok_or("the bundle is not signed with a certificate of the trusted root")?;
    let identity = SigningCertificate::parse(der.as_bytes())?.identity();
    let subject = super::accepted_subject(&identity, rules)?;
    Ok((subject, identity.issuer))
}

/// `sha256:<64 hex>` as bytes, else `None`.
pub fn sha256_digest(text: &str) -> Option<[u8; 32]> {
    let hex_digits = text.strip_prefix("sha256:")?;
    let bytes = hex::decode(hex_digits).ok()?;
    bytes.try_into().ok()
}
