//! cosign signatures: signing keys, the formats cosign writes to registries (legacy `.sig` tags
//! and Sigstore bundles attached as OCI referrers), and verification against public keys or
//! keyless against a trusted root — every refusal says what failed. The Sigstore cryptography
//! (certificates, logs, timestamps) is Sigstore's own library's (`sigstore`).

pub mod bundle;
pub mod certificate;
pub mod cosign;
pub mod notation;
pub mod oci;
pub mod sigstore;

use std::sync::Arc;

use crate::api::oci_repository::VerifiedSignature;
use bundle::SignatureLayer;
use certificate::{SignerIdentity, SigningCertificate};
use sigstore::{LogProof, Signed, Signer, TrustedRoot};
use sigstore_verify::types::Bundle;

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
    /// A Notary Project signature (OCI referrer), JWS envelope.
    NotationJws,
    /// A Notary Project signature (OCI referrer), COSE envelope.
    NotationCose,
}

impl Format {
    pub fn as_str(&self) -> &'static str {
        match self {
            Format::SignatureTag => "cosign-signature-tag",
            Format::Bundle => "sigstore-bundle",
            Format::NotationJws => "notation-jws",
            Format::NotationCose => "notation-cose",
        }
    }

    /// The verification provider of `spec.verify` that reads this format.
    pub fn provider(&self) -> &'static str {
        match self {
            Format::SignatureTag | Format::Bundle => "cosign",
            Format::NotationJws | Format::NotationCose => "notation",
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
    /// A Notary Project signing certificate's subject and issuer distinguished names.
    Certificate { subject: String, issuer: String },
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
            VerifiedSigner::Identity { subject, issuer }
            | VerifiedSigner::Certificate { subject, issuer } => {
                (None, Some(subject.clone()), Some(issuer.clone()))
            }
        };
        VerifiedSignature {
            provider: self.format.provider().into(),
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
    /// signatures the certificate (DER) and the Rekor entry (cosign's JSON annotation).
    Simple {
        payload: Vec<u8>,
        signature: Vec<u8>,
        certificate: Option<Vec<u8>>,
        rekor_bundle: Option<String>,
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

/// Checks one candidate against `policy` for the manifest `digest` (whose bytes are
/// `manifest`); the error says why it does not count.
pub fn check(
    candidate: &Candidate,
    policy: &Policy,
    digest: &str,
    manifest: &[u8],
) -> Result<Verified, String> {
    let proven = match candidate {
        Candidate::Simple {
            payload,
            signature,
            certificate,
            rekor_bundle,
        } => {
            cosign::check_payload(payload, digest)?;
            let layer = SignatureLayer {
                payload,
                signature,
                certificate: certificate.as_deref(),
                rekor_bundle: rekor_bundle.as_deref(),
            };
            check_signature_layer(&layer, policy)?
        }
        Candidate::Bundle(bundle) => {
            let bundle = bundle.as_ref().map_err(Clone::clone)?;
            check_bundle(bundle, policy, digest, manifest)?
        }
        Candidate::Unreadable(why) => return Err(why.clone()),
    };
    Ok(Verified {
        digest: digest.to_string(),
        format: candidate.format(),
        signer: proven.signer,
        log: proven.log,
        timestamped_at: proven.timestamped_at,
    })
}

/// A legacy `.sig` layer whose payload already names the manifest.
fn check_signature_layer(layer: &SignatureLayer<'_>, policy: &Policy) -> Result<Proven, String> {
    let signed = Signed::Bytes(layer.payload);
    match policy {
        Policy::Keys(keys) => {
            let key = key_that_signed(keys, layer.payload, layer.signature)?;
            certificate_holds(layer.certificate, key)?;
            // Reported against the public-good log as a key-hinted bundle: the library takes
            // no certificate with a key, and the one given was just checked to hold the key.
            let logged = layer.rekor_bundle.and_then(|_| {
                let keyed = SignatureLayer {
                    certificate: None,
                    ..*layer
                };
                bundle::from_signature_layer(&keyed).ok()
            });
            Ok(key_proof(key, logged.as_ref(), signed))
        }
        Policy::Keyless { root, identities } => {
            if layer.certificate.is_none() {
                return Err(NOT_KEYLESS.into());
            }
            if layer.rekor_bundle.is_none() {
                return Err(NOT_LOGGED.into());
            }
            let bundle = bundle::from_signature_layer(layer)?;
            keyless(&bundle, signed, root, identities)
        }
    }
}

/// A bundle, once it is known to be a signature of `digest` and nothing else (a bundle with
/// cosign's signing predicate or over the manifest bytes): an attestation about `digest` is
/// refused here, before any cryptography.
fn check_bundle(
    bundle: &Bundle,
    policy: &Policy,
    digest: &str,
    manifest: &[u8],
) -> Result<Proven, String> {
    let signs = bundle::subject_digest(bundle)?;
    if signs != digest {
        return Err(format!("a Sigstore bundle signs {signs}, not {digest}"));
    }
    bundle::signs_subject(bundle)?;
    let signed = if bundle::signs_bytes(bundle) {
        Signed::Bytes(manifest)
    } else {
        Signed::Sha256(
            sigstore::sha256_digest(digest)
                .ok_or_else(|| format!("{digest} is not a sha256 digest"))?,
        )
    };
    let certificate = bundle.signing_certificate().map(|c| c.as_bytes());
    match policy {
        Policy::Keys(keys) => {
            let bytes = bundle::signed_bytes(bundle, manifest);
            let key = key_that_signed(keys, &bytes, bundle::signature(bundle))?;
            certificate_holds(certificate, key)?;
            let logged = Some(bundle).filter(|_| certificate.is_none());
            Ok(key_proof(key, logged, signed))
        }
        Policy::Keyless { root, identities } => {
            if certificate.is_none() {
                return Err(NOT_KEYLESS.into());
            }
            if bundle.verification_material.tlog_entries.is_empty() {
                return Err(NOT_LOGGED.into());
            }
            keyless(bundle, signed, root, identities)
        }
    }
}

const NOT_KEYLESS: &str = "a signature was made with a key, not a certificate: keyless verification needs a Fulcio certificate";
/// Flux (through cosign) requires a transparency-log entry for keyless signatures.
const NOT_LOGGED: &str = "no transparency log proof: the signature carries no log entry";

/// The key that made `signature` over `bytes`.
fn key_that_signed<'k>(
    keys: &'k [NamedKey],
    bytes: &[u8],
    signature: &[u8],
) -> Result<&'k NamedKey, String> {
    keys.iter()
        .find(|k| cosign::verify_with_der_key(&k.der, bytes, signature))
        .ok_or_else(|| {
            let names: Vec<&str> = keys.iter().map(|k| k.name.as_str()).collect();
            format!(
                "a signature was not made by any of the keys [{}]",
                names.join(", ")
            )
        })
}

/// A certificate next to a key signature (`cosign sign --key --certificate`) must hold that key.
fn certificate_holds(certificate: Option<&[u8]>, key: &NamedKey) -> Result<(), String> {
    let Some(der) = certificate else {
        return Ok(());
    };
    if SigningCertificate::parse(der)?.public_key() != key.der.as_slice() {
        return Err(format!(
            "a signature's certificate does not hold the key {} that made it",
            key.name
        ));
    }
    Ok(())
}

/// A key signature needs no log (as in Flux, which ignores it): a log entry is only reported,
/// when the public-good instance proves it.
fn key_proof(key: &NamedKey, logged: Option<&Bundle>, signed: Signed<'_>) -> Proven {
    let log = logged
        .filter(|b| !b.verification_material.tlog_entries.is_empty())
        .and_then(|b| {
            TrustedRoot::public_good()
                .verify(b, signed, Signer::Key(&key.der))
                .ok()
        })
        .and_then(|proved| proved.log);
    Proven {
        signer: VerifiedSigner::Key(key.name.clone()),
        log,
        timestamped_at: None,
    }
}

fn keyless(
    bundle: &Bundle,
    signed: Signed<'_>,
    root: &TrustedRoot,
    identities: &[IdentityMatch],
) -> Result<Proven, String> {
    let proved = root.verify(bundle, signed, Signer::Identity(identities))?;
    let (subject, issuer) = proved
        .identity
        .ok_or("the bundle is not signed with a certificate of the trusted root")?;
    Ok(Proven {
        signer: VerifiedSigner::Identity { subject, issuer },
        log: proved.log,
        timestamped_at: proved.timestamped_at,
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
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD as B64;
    use sha2::{Digest, Sha256};

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
        Candidate::Bundle(bundle::parse(PUBLIC_GOOD_BUNDLE))
    }

    fn cody() -> IdentityMatch {
        IdentityMatch::new("^https://github\\.com/login/oauth$", "^cody@soyland\\.com$").unwrap()
    }

    /// What the cryptography of the public-good bundle proves under `rules` and `root`, as if
    /// it were a signature of its subject (the predicate check is `check`'s).
    fn prove_public_good(
        root: &TrustedRoot,
        rules: &[IdentityMatch],
        bundle_json: &[u8],
    ) -> Result<sigstore::Proved, String> {
        let bundle = bundle::parse(bundle_json).unwrap();
        let digest = sigstore::sha256_digest(PUBLIC_GOOD_DIGEST).unwrap();
        root.verify(&bundle, Signed::Sha256(digest), Signer::Identity(rules))
    }

    #[test]
    fn a_real_public_good_bundle_verifies_offline() {
        let proved = prove_public_good(&TrustedRoot::public_good(), &[cody()], PUBLIC_GOOD_BUNDLE)
            .expect("verified");
        assert_eq!(
            proved.identity,
            Some((
                "cody@soyland.com".into(),
                "https://github.com/login/oauth".into()
            ))
        );
        let log = proved.log.expect("log proof");
        assert_eq!(log.log_url, "https://rekor.sigstore.dev");
        assert_eq!(log.log_index, 175_508_996);
        assert_eq!(
            log.integrated_time.map(|t| t.as_second()),
            Some(1_740_770_291)
        );
        assert_eq!(proved.timestamped_at, None, "the log's time, not a TSA's");
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
        let why = prove_public_good(&TrustedRoot::public_good(), &[other], PUBLIC_GOOD_BUNDLE)
            .unwrap_err();
        assert!(
            why.contains(
                "got subjects [cody@soyland.com] with issuer https://github.com/login/oauth"
            ),
            "{why}"
        );

        let elsewhere = format!("sha256:{}", "0".repeat(64));
        let why = check(&candidate(), &public_good(vec![]), &elsewhere, b"").unwrap_err();
        assert!(why.contains("signs sha256:7321"), "{why}");

        let another_instance = TrustedRoot::from_json(&rekor_v2("trusted_root.json")).unwrap();
        let why = prove_public_good(&another_instance, &[], PUBLIC_GOOD_BUNDLE).unwrap_err();
        assert!(
            why.starts_with("no transparency log proof from a log of the trusted root"),
            "{why}"
        );
    }

    #[test]
    fn a_tampered_log_entry_is_no_proof() {
        let mut bundle: serde_json::Value = serde_json::from_slice(PUBLIC_GOOD_BUNDLE).unwrap();
        let entry = &mut bundle["verificationMaterial"]["tlogEntries"][0];
        entry["integratedTime"] = "1740770292".into();
        let tampered = serde_json::to_vec(&bundle).unwrap();
        let why = prove_public_good(&TrustedRoot::public_good(), &[], &tampered).unwrap_err();
        assert!(
            why.starts_with(
                "no transparency log proof: the log's signed entry timestamp does not verify"
            ),
            "{why}"
        );
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

    #[test]
    fn rekor_v2_entries_with_a_tsa_time_verify_offline() {
        for file in ["bundle-dsse.json", "bundle-dsse-index0.json"] {
            let bundle = bundle::parse(&rekor_v2(file)).unwrap();
            let digest = bundle::subject_digest(&bundle).unwrap();
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
            let candidate = Candidate::Bundle(bundle::parse(&rekor_v2(bundle)));
            check(&candidate, &rekor_v2_policy(root), &digest, &blob)
                .unwrap_or_else(|e| panic!("{bundle}: {e}"));
        }
    }

    #[test]
    fn without_a_trusted_timestamp_authority_rekor_v2_proves_no_signing_time() {
        let bundle = bundle::parse(&rekor_v2("bundle-dsse.json")).unwrap();
        let digest = bundle::subject_digest(&bundle).unwrap();
        let why = check(
            &Candidate::Bundle(Ok(bundle)),
            &rekor_v2_policy("tr-no-tsa.json"),
            &digest,
            b"",
        )
        .unwrap_err();
        assert!(why.starts_with("no proof of the signing time"), "{why}");
    }

    /// sigstore-conformance's `happy-path-v0.1` (public-good, Rekor v1 with a signed entry
    /// timestamp) written back the way cosign v2 stores a signature in a `.sig` layer's
    /// annotations: the legacy format is verified as the v0.1 bundle it is equivalent to.
    fn legacy_layer_material() -> (Vec<u8>, Vec<u8>, Vec<u8>, String) {
        let dir = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/sigstore-conformance/bundle-verify"
        );
        let payload = std::fs::read(format!("{dir}/a.txt")).unwrap();
        let json: serde_json::Value = serde_json::from_slice(
            &std::fs::read(format!("{dir}/happy-path-v0.1/bundle.sigstore.json")).unwrap(),
        )
        .unwrap();
        let decode = |v: &serde_json::Value| B64.decode(v.as_str().unwrap()).unwrap();
        let material = &json["verificationMaterial"];
        let entry = &material["tlogEntries"][0];
        let annotation = serde_json::json!({
            "SignedEntryTimestamp": entry["inclusionPromise"]["signedEntryTimestamp"],
            "Payload": {
                "body": entry["canonicalizedBody"],
                "integratedTime": entry["integratedTime"].as_str().unwrap().parse::<i64>().unwrap(),
                "logIndex": entry["logIndex"].as_str().unwrap().parse::<i64>().unwrap(),
                "logID": hex::encode(decode(&entry["logId"]["keyId"])),
            },
        });
        (
            payload,
            decode(&json["messageSignature"]["signature"]),
            decode(&material["x509CertificateChain"]["certificates"][0]["rawBytes"]),
            annotation.to_string(),
        )
    }

    #[test]
    fn a_legacy_signature_layer_verifies_as_its_v01_bundle() {
        let (payload, signature, certificate, annotation) = legacy_layer_material();
        let layer = SignatureLayer {
            payload: &payload,
            signature: &signature,
            certificate: Some(&certificate),
            rekor_bundle: Some(&annotation),
        };
        let beacon = IdentityMatch::exact(
            "https://token.actions.githubusercontent.com",
            "https://github.com/sigstore-conformance/extremely-dangerous-public-oidc-beacon/.github/workflows/extremely-dangerous-oidc-beacon.yml@refs/heads/main",
        );
        let proven =
            check_signature_layer(&layer, &public_good(vec![beacon.clone()])).expect("verified");
        let log = proven.log.expect("log proof");
        assert_eq!(
            (log.log_url.as_str(), log.log_index),
            ("https://rekor.sigstore.dev", 27_246_492)
        );

        let unlogged = SignatureLayer {
            rekor_bundle: None,
            ..layer
        };
        let why = check_signature_layer(&unlogged, &public_good(vec![beacon.clone()]))
            .err()
            .unwrap();
        assert_eq!(why, NOT_LOGGED);

        let mut tampered = signature.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        let forged = SignatureLayer {
            signature: &tampered,
            ..layer
        };
        let why = check_signature_layer(&forged, &public_good(vec![beacon]))
            .err()
            .unwrap();
        assert!(why.contains("does not verify"), "{why}");
    }

    /// A key-signed message bundle with no log entry and no timestamp (`cosign sign --key
    /// --tlog-upload=false`): Flux takes it; Sigstore's library cannot express that.
    #[test]
    fn key_signatures_need_no_log_and_a_certificate_beside_them_must_hold_the_key() {
        use aws_lc_rs::encoding::AsDer;
        use aws_lc_rs::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair};
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng).unwrap();
        let pair =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref()).unwrap();
        let key = NamedKey {
            name: "cosign.pub".into(),
            der: pair.public_key().as_der().unwrap().as_ref().to_vec(),
        };
        let manifest = br#"{"schemaVersion":2}"#;
        let digest = Sha256::digest(manifest);
        let signature = pair.sign(&rng, manifest).unwrap();
        let json = serde_json::json!({
            "mediaType": bundle::BUNDLE_MEDIA_TYPE_V03,
            "verificationMaterial": {"publicKey": {"hint": "x"}, "tlogEntries": []},
            "messageSignature": {
                "messageDigest": {"algorithm": "SHA2_256", "digest": B64.encode(digest)},
                "signature": B64.encode(signature.as_ref()),
            },
        });
        let candidate = Candidate::Bundle(bundle::parse(json.to_string().as_bytes()));
        let digest = format!("sha256:{}", hex::encode(digest));
        let verified = check(
            &candidate,
            &Policy::Keys(vec![key.clone()]),
            &digest,
            manifest,
        )
        .unwrap();
        assert_eq!(verified.signer, VerifiedSigner::Key("cosign.pub".into()));
        assert_eq!(verified.log, None);

        let why = check(&candidate, &public_good(vec![]), &digest, manifest).unwrap_err();
        assert_eq!(why, NOT_KEYLESS);

        let wrong = NamedKey {
            name: "other.pub".into(),
            der: key.der[..key.der.len() - 1].to_vec(),
        };
        let why = check(&candidate, &Policy::Keys(vec![wrong]), &digest, manifest).unwrap_err();
        assert_eq!(
            why,
            "a signature was not made by any of the keys [other.pub]"
        );

        let (_, _, certificate, _) = legacy_layer_material();
        let why = certificate_holds(Some(&certificate), &key).unwrap_err();
        assert!(why.contains("does not hold the key cosign.pub"), "{why}");
    }
}
