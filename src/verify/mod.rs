//! cosign signatures: signing keys, the formats cosign writes to registries (legacy `.sig` tags
//! and Sigstore bundles attached as OCI referrers), and verification against public keys or
//! keyless against a trusted root — every refusal says what failed.

pub mod bundle;
pub mod certificate;
pub mod cosign;
pub mod der;
pub mod oci;
pub mod sct;
pub mod sigstore;
pub mod timestamp;
pub mod tlog;
pub mod trust;

use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::api::oci_repository::VerifiedSignature;
use bundle::{Bundle, Signer};
use certificate::{SignerIdentity, SigningCertificate};
use tlog::{Expected, LogEntry, LogProof};
use trust::TrustedRoot;

/// What a signature must satisfy.
#[derive(Clone)]
pub enum Policy {
    /// Signed by one of these keys (Secret entry name, DER public key).
    Keys(Vec<NamedKey>),
    /// Signed with a certificate chaining to `root`, logged in one of its transparency logs,
    /// for an identity matching any of `identities` (any identity when there are none).
    Keyless {
        root: Arc<TrustedRoot>,
        identities: Vec<IdentityMatch>,
    },
}

#[derive(Clone)]
pub struct NamedKey {
    pub name: String,
    pub der: Vec<u8>,
}

impl NamedKey {
    /// A PEM public key as cosign writes it; `None` when `pem` holds none.
    pub fn from_pem(name: &str, pem: &str) -> Option<NamedKey> {
        let der = crate::util::pem_blocks(pem, "PUBLIC KEY")
            .into_iter()
            .next()?;
        Some(NamedKey {
            name: name.to_string(),
            der,
        })
    }
}

/// One `matchOIDCIdentity` entry. Like Flux (through cosign), the expressions are not
/// anchored: write `^…$` to match a whole value.
#[derive(Clone)]
pub struct IdentityMatch {
    pub issuer: regex::Regex,
    pub subject: regex::Regex,
}

impl IdentityMatch {
    pub fn new(issuer: &str, subject: &str) -> Result<IdentityMatch, String> {
        let compile = |what: &str, re: &str| {
            regex::Regex::new(re).map_err(|e| format!("invalid {what} expression '{re}': {e}"))
        };
        Ok(IdentityMatch {
            issuer: compile("issuer", issuer)?,
            subject: compile("subject", subject)?,
        })
    }

    /// Exactly this issuer and identity (cosign's `--certificate-identity`).
    pub fn exact(issuer: &str, subject: &str) -> IdentityMatch {
        let whole = |value: &str| {
            regex::Regex::new(&format!("^{}$", regex::escape(value)))
                .unwrap_or_else(|_| unreachable!("an escaped literal is a valid expression"))
        };
        IdentityMatch {
            issuer: whole(issuer),
            subject: whole(subject),
        }
    }

    fn matches(&self, identity: &SignerIdentity) -> bool {
        self.issuer.is_match(&identity.issuer)
            && identity.subjects.iter().any(|s| self.subject.is_match(s))
    }
}

/// Where a signature was found.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Format {
    /// cosign's legacy `sha256-<hex>.sig` tag.
    SignatureTag,
    /// A Sigstore bundle attached as an OCI referrer.
    Bundle,
}

impl Format {
    pub fn as_str(&self) -> &'static str {
        match self {
            Format::SignatureTag => "cosign-signature-tag",
            Format::Bundle => "sigstore-bundle",
        }
    }
}

/// Who signed, as far as verification established it.
#[derive(Debug, Clone, PartialEq)]
pub enum VerifiedSigner {
    /// The Secret entry holding the key that verified.
    Key(String),
    /// The certificate's identity, and the subject that matched the policy.
    Identity { subject: String, issuer: String },
}

/// A signature that verified, and what it proved.
#[derive(Debug, Clone, PartialEq)]
pub struct Verified {
    pub digest: String,
    pub format: Format,
    pub signer: VerifiedSigner,
    pub log: Option<LogProof>,
    /// The time an RFC 3161 timestamp authority attested, when that was the signing time.
    pub timestamped_at: Option<jiff::Timestamp>,
}

impl Verified {
    /// What the verification established, as `status.verifiedSignature` and
    /// `driftless artifact verify -o json` report it.
    pub fn summary(&self) -> VerifiedSignature {
        let (key, subject, issuer) = match &self.signer {
            VerifiedSigner::Key(name) => (Some(name.clone()), None, None),
            VerifiedSigner::Identity { subject, issuer } => {
                (None, Some(subject.clone()), Some(issuer.clone()))
            }
        };
        VerifiedSignature {
            provider: "cosign".into(),
            digest: self.digest.clone(),
            format: self.format.as_str().into(),
            key,
            subject,
            issuer,
            log_url: self.log.as_ref().map(|l| l.log_url.clone()),
            log_index: self.log.as_ref().map(|l| l.log_index),
            integrated_time: self
                .log
                .as_ref()
                .and_then(|l| l.integrated_time)
                .map(|t| t.to_string()),
            timestamped_at: self.timestamped_at.map(|t| t.to_string()),
        }
    }
}

/// What a policy check proved beyond the signature itself.
struct Proven {
    signer: VerifiedSigner,
    log: Option<LogProof>,
    timestamped_at: Option<jiff::Timestamp>,
}

/// A signature found for a manifest, as read from the registry.
pub enum Candidate {
    /// A layer of the `.sig` tag: simple-signing payload and signature, and for keyless
    /// signatures the certificate and the Rekor entry from its annotations.
    Simple {
        payload: Vec<u8>,
        signature: Vec<u8>,
        certificate: Option<Vec<u8>>,
        log_entry: Option<Result<LogEntry, String>>,
    },
    Bundle(Result<Bundle, String>),
    /// A signature that was found but could not be read; why.
    Unreadable(String),
}

impl Candidate {
    fn format(&self) -> Format {
        match self {
            Candidate::Simple { .. } => Format::SignatureTag,
            Candidate::Bundle(_) | Candidate::Unreadable(_) => Format::Bundle,
        }
    }
}

/// What a candidate signs, normalised over both formats.
struct Signed<'a> {
    bytes: Vec<u8>,
    signature: &'a [u8],
    certificate: Option<&'a [u8]>,
    log_entries: Vec<LogEntry>,
    /// For DSSE envelopes, the payload's SHA-256.
    payload_sha256: Option<[u8; 32]>,
    /// RFC 3161 timestamps over the signature.
    timestamps: &'a [Vec<u8>],
}

/// Checks one candidate against `policy` for the manifest `digest` (whose bytes are
/// `manifest`); the error says why it does not count.
pub fn check(
    candidate: &Candidate,
    policy: &Policy,
    digest: &str,
    manifest: &[u8],
) -> Result<Verified, String> {
    let signed = signed_content(candidate, digest, manifest)?;
    prove(&signed, candidate.format(), policy, digest)
}

/// What the cryptography proves about content already known to be a signature of `digest`.
fn prove(
    signed: &Signed<'_>,
    format: Format,
    policy: &Policy,
    digest: &str,
) -> Result<Verified, String> {
    let proven = match policy {
        Policy::Keys(keys) => check_keys(signed, keys)?,
        Policy::Keyless { root, identities } => check_keyless(signed, root, identities)?,
    };
    Ok(Verified {
        digest: digest.to_string(),
        format,
        signer: proven.signer,
        log: proven.log,
        timestamped_at: proven.timestamped_at,
    })
}

/// What a candidate signs, once it is known to be a signature of `digest` and nothing else
/// (a payload of cosign's signature type, a bundle with cosign's signing predicate or over the
/// manifest bytes): an attestation about `digest` is refused here, before any cryptography.
fn signed_content<'a>(
    candidate: &'a Candidate,
    digest: &str,
    manifest: &[u8],
) -> Result<Signed<'a>, String> {
    match candidate {
        Candidate::Simple {
            payload,
            signature,
            certificate,
            log_entry,
        } => {
            cosign::check_payload(payload, digest)?;
            Ok(Signed {
                bytes: payload.clone(),
                signature,
                certificate: certificate.as_deref(),
                log_entries: log_entry.clone().transpose()?.into_iter().collect(),
                payload_sha256: None,
                timestamps: &[],
            })
        }
        Candidate::Bundle(bundle) => {
            let bundle = bundle.as_ref().map_err(Clone::clone)?;
            let signs = bundle.content.subject_digest()?;
            if signs != digest {
                return Err(format!("a Sigstore bundle signs {signs}, not {digest}"));
            }
            bundle.content.signs_subject()?;
            Ok(bundle_content(bundle, manifest))
        }
        Candidate::Unreadable(why) => Err(why.clone()),
    }
}

fn bundle_content<'a>(bundle: &'a Bundle, manifest: &[u8]) -> Signed<'a> {
    Signed {
        bytes: bundle.signed_bytes(manifest),
        signature: bundle.content.signature(),
        certificate: match &bundle.signer {
            Signer::Certificate(der) => Some(der),
            Signer::PublicKey { .. } => None,
        },
        log_entries: bundle.log_entries.clone(),
        payload_sha256: bundle.content.payload_sha256(),
        timestamps: &bundle.timestamps,
    }
}

/// A key signature needs no log (as in Flux, which ignores it): a log entry is only reported,
/// when one of the public-good instance proves it. A certificate next to the key (`cosign sign
/// --key --certificate`) must hold that key.
fn check_keys(signed: &Signed<'_>, keys: &[NamedKey]) -> Result<Proven, String> {
    let key = keys
        .iter()
        .find(|k| cosign::verify_with_der_key(&k.der, &signed.bytes, signed.signature))
        .ok_or_else(|| {
            let names: Vec<&str> = keys.iter().map(|k| k.name.as_str()).collect();
            format!(
                "a signature was not made by any of the keys [{}]",
                names.join(", ")
            )
        })?;
    let verifier = match signed.certificate {
        Some(der) => {
            let cert = SigningCertificate::parse(der)?;
            if cert.public_key() != key.der.as_slice() {
                return Err(format!(
                    "a signature's certificate does not hold the key {} that made it",
                    key.name
                ));
            }
            der
        }
        None => &key.der,
    };
    let (proofs, _) = log_proofs(signed, &TrustedRoot::public_good(), verifier);
    Ok(Proven {
        signer: VerifiedSigner::Key(key.name.clone()),
        log: proofs.into_iter().next(),
        timestamped_at: None,
    })
}

fn check_keyless(
    signed: &Signed<'_>,
    root: &TrustedRoot,
    identities: &[IdentityMatch],
) -> Result<Proven, String> {
    let der = signed
        .certificate
        .ok_or("a signature was made with a key, not a certificate: keyless verification needs a Fulcio certificate")?;
    let cert = SigningCertificate::parse(der)?;
    if !cert.verifies(&signed.bytes, signed.signature) {
        return Err("a signature does not verify with its signing certificate's key".into());
    }
    let (proofs, failures) = log_proofs(signed, root, cert.der());
    if proofs.is_empty() {
        return Err(if signed.log_entries.is_empty() {
            "no transparency log proof: the signature carries no log entry".to_string()
        } else if failures.is_empty() {
            "no transparency log proof from a log of the trusted root".to_string()
        } else {
            format!("no transparency log proof: {}", failures.join("; "))
        });
    }
    // A Fulcio certificate lives minutes; what matters is that it was valid when the signature
    // was made: a time the log signed (Rekor v1's entry timestamp), else one an RFC 3161
    // timestamp authority of the trusted root signed (Rekor v2 signs no time).
    let (log, at, timestamped_at) = match proofs
        .iter()
        .find_map(|p| p.integrated_time.map(|t| (p, t)))
    {
        Some((log, at)) => (log.clone(), at, None),
        None => {
            let at = signed_time(signed, root)?;
            (proofs[0].clone(), at, Some(at))
        }
    };
    let issuer_key = cert.verify_chain(root, at)?;
    cert.verify_sct(&issuer_key, root)?;
    let identity = cert.identity();
    let subject = accepted_subject(&identity, identities)?;
    Ok(Proven {
        signer: VerifiedSigner::Identity {
            subject,
            issuer: identity.issuer,
        },
        log: Some(log),
        timestamped_at,
    })
}

/// The subject alternative name one of `rules` accepts (with no rules, the first one), or the
/// refusal naming what the certificate holds.
fn accepted_subject(identity: &SignerIdentity, rules: &[IdentityMatch]) -> Result<String, String> {
    let subject = if rules.is_empty() {
        identity.subjects.first().cloned()
    } else {
        rules
            .iter()
            .filter(|r| r.matches(identity))
            .find_map(|r| identity.subjects.iter().find(|s| r.subject.is_match(s)))
            .cloned()
    };
    subject.ok_or_else(|| {
        format!(
            "none of the expected identities matched what was in the certificate, got {identity}"
        )
    })
}

/// The time a timestamp authority of `root` attests for the signature.
fn signed_time(signed: &Signed<'_>, root: &TrustedRoot) -> Result<jiff::Timestamp, String> {
    let mut reasons = Vec::new();
    for token in signed.timestamps {
        match timestamp::verify(token, signed.signature, root) {
            Ok(at) => return Ok(at),
            Err(why) => reasons.push(why),
        }
    }
    Err(if reasons.is_empty() {
        "no proof of the signing time: the log entry has no signed entry timestamp and the signature no RFC 3161 timestamp".into()
    } else {
        format!("no proof of the signing time: {}", reasons.join("; "))
    })
}

/// The entries that prove inclusion in a log of `root`, and why the others from its logs do not
/// (like sigstore-go, an entry that fails is passed over rather than failing the signature).
fn log_proofs(
    signed: &Signed<'_>,
    root: &TrustedRoot,
    verifier: &[u8],
) -> (Vec<LogProof>, Vec<String>) {
    let expected = Expected {
        signature: signed.signature,
        signed_sha256: Sha256::digest(&signed.bytes).into(),
        payload_sha256: signed.payload_sha256,
        verifier,
    };
    let (mut proofs, mut failures) = (Vec::new(), Vec::new());
    for entry in &signed.log_entries {
        match tlog::verify_entry(entry, root, &expected) {
            Ok(proof) => proofs.extend(proof),
            Err(why) => failures.push(why),
        }
    }
    (proofs, failures)
}

/// Why no signature of a manifest was accepted.
#[derive(Debug, thiserror::Error)]
pub enum Unverified {
    #[error("no signature found")]
    /// Neither a `.sig` tag nor a bundle referrer exists.
    NoSignatures,
    /// Signatures exist; each reason is why one (or several alike) did not count.
    #[error("{}", .0.join("; "))]
    Rejected(Vec<String>),
}

/// The first candidate that satisfies `policy`, or why none did.
pub fn first_verified(
    candidates: &[Candidate],
    policy: &Policy,
    digest: &str,
    manifest: &[u8],
) -> Result<Verified, Unverified> {
    if candidates.is_empty() {
        return Err(Unverified::NoSignatures);
    }
    let mut reasons: Vec<String> = Vec::new();
    for candidate in candidates {
        match check(candidate, policy, digest, manifest) {
            Ok(verified) => return Ok(verified),
            Err(why) if !reasons.contains(&why) => reasons.push(why),
            Err(_) => {}
        }
    }
    Err(Unverified::Rejected(reasons))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real public-good bundle (see tests/fixtures/sigstore/README.md): an attestation
    /// (`cosign attest`, predicate `https://cosign.sigstore.dev/attestation/v1`), so never a
    /// signature of its subject, but real material for the certificate, log and SCT checks.
    const PUBLIC_GOOD_BUNDLE: &[u8] =
        include_bytes!("../../tests/fixtures/sigstore/oci-attestation.sigstore.json");
    const PUBLIC_GOOD_DIGEST: &str =
        "sha256:732112270d7e59418a8c080b134b24cabd67d250d0d0147a97ed95ba5c280aa4";

    fn public_good(identities: Vec<IdentityMatch>) -> Policy {
        Policy::Keyless {
            root: TrustedRoot::public_good(),
            identities,
        }
    }

    fn candidate() -> Candidate {
        Candidate::Bundle(Bundle::parse(PUBLIC_GOOD_BUNDLE))
    }

    fn cody() -> IdentityMatch {
        IdentityMatch::new("^https://github\\.com/login/oauth$", "^cody@soyland\\.com$").unwrap()
    }

    /// What the cryptography of `bundle` proves, as if it were a signature of its subject.
    fn prove_bundle(bundle: &Bundle, policy: &Policy) -> Result<Verified, String> {
        prove(
            &bundle_content(bundle, b""),
            Format::Bundle,
            policy,
            PUBLIC_GOOD_DIGEST,
        )
    }

    fn prove_public_good(policy: &Policy) -> Result<Verified, String> {
        prove_bundle(&Bundle::parse(PUBLIC_GOOD_BUNDLE).unwrap(), policy)
    }

    #[test]
    fn a_real_public_good_bundle_verifies_offline() {
        let verified = prove_public_good(&public_good(vec![cody()])).expect("verified");
        assert_eq!(
            verified.signer,
            VerifiedSigner::Identity {
                subject: "cody@soyland.com".into(),
                issuer: "https://github.com/login/oauth".into(),
            }
        );
        let log = verified.log.expect("log proof");
        assert_eq!(log.log_url, "https://rekor.sigstore.dev");
        assert_eq!(
            log.integrated_time.map(|t| t.as_second()),
            Some(1_740_770_291)
        );
    }

    #[test]
    fn a_verified_attestation_by_the_trusted_identity_is_no_signature() {
        let why = check(
            &candidate(),
            &public_good(vec![cody()]),
            PUBLIC_GOOD_DIGEST,
            b"",
        )
        .unwrap_err();
        assert!(
            why.contains("holds an attestation (predicate type 'https://cosign.sigstore.dev/attestation/v1'), not a signature"),
            "{why}"
        );
    }

    #[test]
    fn the_real_bundle_is_refused_for_another_identity_digest_or_root() {
        let other =
            IdentityMatch::new("^https://github\\.com/login/oauth$", "^someone@else$").unwrap();
        let why = prove_public_good(&public_good(vec![other])).unwrap_err();
        assert!(
            why.contains(
                "got subjects [cody@soyland.com] with issuer https://github.com/login/oauth"
            ),
            "{why}"
        );

        let elsewhere = format!("sha256:{}", "0".repeat(64));
        let why = check(&candidate(), &public_good(vec![]), &elsewhere, b"").unwrap_err();
        assert!(why.contains("signs sha256:7321"), "{why}");

        let empty = Policy::Keyless {
            root: Arc::new(TrustedRoot::default()),
            identities: vec![],
        };
        let why = prove_public_good(&empty).unwrap_err();
        assert!(why.contains("no transparency log proof"), "{why}");
    }

    #[test]
    fn a_checkpoint_of_another_log_host_is_no_proof() {
        let mut root = (*TrustedRoot::public_good()).clone();
        for log in &mut root.logs {
            log.base_url = "https://rekor.elsewhere.invalid".into();
        }
        let policy = Policy::Keyless {
            root: Arc::new(root),
            identities: vec![],
        };
        let why = prove_public_good(&policy).unwrap_err();
        assert!(
            why.contains("the checkpoint is of log 'rekor.sigstore.dev - "),
            "{why}"
        );
    }

    #[test]
    fn a_tampered_log_entry_is_no_proof() {
        let mut bundle: serde_json::Value = serde_json::from_slice(PUBLIC_GOOD_BUNDLE).unwrap();
        let entry = &mut bundle["verificationMaterial"]["tlogEntries"][0];
        entry["integratedTime"] = "1740770292".into();
        let tampered = Bundle::parse(&serde_json::to_vec(&bundle).unwrap()).unwrap();
        let why = prove_bundle(&tampered, &public_good(vec![])).unwrap_err();
        assert!(why.contains("signed entry timestamp"), "{why}");
    }

    /// Bundles made by cosign v3 against a real Rekor v2 log and timestamp authority (see
    /// tests/fixtures/sigstore/README.md), with the trusted root they were made for.
    fn rekor_v2(file: &str) -> Vec<u8> {
        let dir = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/sigstore/rekor-v2"
        );
        std::fs::read(format!("{dir}/{file}")).unwrap()
    }

    fn rekor_v2_policy(root_file: &str) -> Policy {
        Policy::Keyless {
            root: Arc::new(TrustedRoot::from_json(&rekor_v2(root_file)).unwrap()),
            identities: vec![
                IdentityMatch::new("^https://oidc\\.test\\.invalid$", "^signer@test\\.invalid$")
                    .unwrap(),
            ],
        }
    }

    fn subject_of(bundle: &Bundle) -> String {
        bundle.content.subject_digest().unwrap()
    }

    #[test]
    fn rekor_v2_entries_with_a_tsa_time_verify_offline() {
        for file in ["bundle-dsse.json", "bundle-dsse-index0.json"] {
            let bundle = Bundle::parse(&rekor_v2(file)).unwrap();
            let digest = subject_of(&bundle);
            let verified = check(
                &Candidate::Bundle(Ok(bundle)),
                &rekor_v2_policy("trusted_root.json"),
                &digest,
                b"",
            )
            .unwrap_or_else(|e| panic!("{file}: {e}"));
            assert!(
                verified.timestamped_at.is_some(),
                "the time comes from the TSA"
            );
            let log = verified.log.expect("log proof");
            assert_eq!(log.log_url, "https://rekor.test.invalid");
            assert_eq!(log.integrated_time, None, "Rekor v2 signs no time");
        }
    }

    #[test]
    fn rekor_v2_message_signatures_verify_with_either_log_key_type() {
        for (bundle, blob, root) in [
            ("blob.sigstore.json", "blob.txt", "trusted_root.json"),
            (
                "blob-ecdsa-log.sigstore.json",
                "blob-ecdsa-log.txt",
                "trusted_root_ecdsa.json",
            ),
        ] {
            let blob = rekor_v2(blob);
            let digest = format!("sha256:{}", hex::encode(Sha256::digest(&blob)));
            let candidate = Candidate::Bundle(Bundle::parse(&rekor_v2(bundle)));
            check(&candidate, &rekor_v2_policy(root), &digest, &blob)
                .unwrap_or_else(|e| panic!("{bundle}: {e}"));
        }
    }

    #[test]
    fn without_a_trusted_timestamp_authority_rekor_v2_proves_no_signing_time() {
        let bundle = Bundle::parse(&rekor_v2("bundle-dsse.json")).unwrap();
        let digest = subject_of(&bundle);
        let why = check(
            &Candidate::Bundle(Ok(bundle)),
            &rekor_v2_policy("tr-no-tsa.json"),
            &digest,
            b"",
        )
        .unwrap_err();
        assert!(why.contains("no proof of the signing time"), "{why}");
    }
}
