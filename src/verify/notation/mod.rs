//! Notary Project signatures (`verify.provider: notation`), verified as Flux verifies them
//! through notation-go: a trust policy and trusted certificates from the verification Secret,
//! the statement for the repository and its level, then for each signature its integrity,
//! authenticity (a trusted certificate in its chain, a chain that validates, a trusted
//! identity), expiry, authentic signing time and revocation — each failure enforced or only
//! logged as the level says — and that it signs this very manifest.
//!
//! Certificate paths are validated by `rustls-webpki`, envelopes read with `coset` and
//! `serde_json`, RFC 3161 countersignatures checked by Sigstore's `sigstore-tsa`.

pub mod envelope;
pub mod trust_policy;

use envelope::{Envelope, SigningScheme, TargetArtifact};
use rustls_pki_types::{CertificateDer, UnixTime};
use trust_policy::{Action, Check, Dn, Statement, TrustPolicy};
use x509_parser::certificate::X509Certificate;
use x509_parser::prelude::FromDer;

/// The artifact type of Notary Project signature manifests.
pub const SIGNATURE_ARTIFACT_TYPE: &str = "application/vnd.cncf.notary.signature";
/// Most signatures tried per artifact (Flux's `MaxSignatureAttempts`).
pub const MAX_SIGNATURE_ATTEMPTS: usize = 3;

/// The Secret entry holding the trust policy.
pub const TRUST_POLICY_KEY: &str = "trustpolicy.json";

/// A trust policy and the certificates it trusts. As in Flux, every `ca:`, `signingAuthority:`
/// and `tsa:` store of the policy holds all the certificates of the Secret.
#[derive(Clone)]
pub struct NotationPolicy {
    pub policy: TrustPolicy,
    /// DER certificates.
    pub certificates: Vec<Vec<u8>>,
}

impl NotationPolicy {
    /// From the Secret's `trustpolicy.json` and its `*.crt`/`*.pem` entries (the first PEM
    /// block of each, or DER).
    pub fn from_secret(
        data: &std::collections::BTreeMap<String, Vec<u8>>,
        secret: &str,
    ) -> Result<NotationPolicy, String> {
        let policy = data
            .get(TRUST_POLICY_KEY)
            .ok_or_else(|| format!("'{TRUST_POLICY_KEY}' not found in secret '{secret}'"))?;
        let policy = TrustPolicy::parse(policy)?;
        let entries: Vec<(&String, &Vec<u8>)> = data
            .iter()
            .filter(|(k, _)| k.ends_with(".crt") || k.ends_with(".pem"))
            .collect();
        if entries.is_empty() {
            return Err(format!("no certificates found in secret '{secret}'"));
        }
        let mut certificates = Vec::new();
        for (name, value) in entries {
            certificates.extend(
                certificates_of(value)
                    .map_err(|e| format!("failed to parse certificate '{name}': {e}"))?,
            );
        }
        Ok(NotationPolicy {
            policy,
            certificates,
        })
    }
}

/// The certificates of one Secret entry: its first PEM block, or DER (several concatenated).
pub fn certificates_of(value: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    let text = String::from_utf8_lossy(value);
    let der = match crate::util::first_pem_block(&text) {
        Some(block) => block,
        None => value.to_vec(),
    };
    let mut certificates = Vec::new();
    let mut rest = der.as_slice();
    while !rest.is_empty() {
        let (after, _) = X509Certificate::from_der(rest)
            .map_err(|e| format!("not an X.509 certificate: {e}"))?;
        let used = rest.len() - after.len();
        certificates.push(rest[..used].to_vec());
        rest = after;
    }
    Ok(certificates)
}

/// What a signature that counts proved.
#[derive(Debug, Clone, PartialEq)]
pub struct Accepted {
    /// The signing certificate's subject and issuer.
    pub subject: String,
    pub issuer: String,
    /// The time an RFC 3161 countersignature attested, when one was verified.
    pub timestamped_at: Option<jiff::Timestamp>,
    /// Failed checks the level only logs.
    pub logged: Vec<String>,
    /// Authenticity failed but is only logged (`audit`): Flux then reports no verification.
    pub authenticity_logged: bool,
}

/// Verifies one signature envelope for the manifest `expected`, under `statement`; the error
/// is an enforced failure.
pub fn verify_signature(
    statement: &Statement,
    trusted: &[Vec<u8>],
    media_type: &str,
    bytes: &[u8],
    expected: &TargetArtifact,
    now: jiff::Timestamp,
) -> Result<Accepted, String> {
    let envelope = envelope::open(media_type, bytes)?;
    let chain = envelope
        .chain
        .iter()
        .map(|der| {
            X509Certificate::from_der(der)
                .map(|(_, cert)| cert)
                .map_err(|e| format!("malformed certificate in the chain: {e}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    // `envelope::open` refuses an empty chain.
    let leaf = chain.first().ok_or("the envelope holds no certificate")?;
    check_signing_certificate(leaf)?;
    let mut accepted = Accepted {
        subject: leaf.subject().to_string(),
        issuer: leaf.issuer().to_string(),
        timestamped_at: None,
        logged: Vec::new(),
        authenticity_logged: false,
    };
    let mut outcome = |check: Check, result: Result<(), String>| -> Result<bool, String> {
        let Err(why) = result else {
            return Ok(true);
        };
        match statement.action(check) {
            Action::Enforce => Err(why),
            Action::Log | Action::Skip => {
                tracing::info!(check = check.name(), %why, "notation verification check failed and is only logged");
                accepted.logged.push(format!("{}: {why}", check.name()));
                Ok(false)
            }
        }
    };
    let authentic = outcome(
        Check::Authenticity,
        authenticity(statement, trusted, &envelope, &chain),
    )?;
    outcome(Check::Expiry, expiry(&envelope, now))?;
    let timestamped = authentic_time(statement, trusted, &envelope, &chain, now);
    let timestamped_at = match timestamped {
        Ok(at) => at,
        Err(why) => {
            outcome(Check::AuthenticTimestamp, Err(why))?;
            None
        }
    };
    if statement.action(Check::Revocation) != Action::Skip {
        outcome(Check::Revocation, revocation(&chain))?;
    }
    if &envelope.target != expected {
        return Err("content descriptor mismatch".into());
    }
    accepted.authenticity_logged = !authentic;
    accepted.timestamped_at = timestamped_at;
    Ok(accepted)
}

/// The Notary Project's rules for a signing certificate that X.509 path validation does not
/// make: a critical key usage with digitalSignature and no CA or encryption usage, not a CA,
/// and no extended key usage of another purpose.
fn check_signing_certificate(cert: &X509Certificate<'_>) -> Result<(), String> {
    if let Ok(Some(bc)) = cert.basic_constraints()
        && bc.value.ca
    {
        return Err("the signing certificate is a CA certificate".into());
    }
    let usage = match cert.key_usage() {
        Ok(Some(ku)) if ku.critical => ku.value,
        Ok(Some(_)) => {
            return Err(
                "the signing certificate's key usage extension must be marked critical".into(),
            );
        }
        _ => return Err("the signing certificate has no key usage extension".into()),
    };
    if !usage.digital_signature() {
        return Err("the signing certificate's key usage must have digitalSignature set".into());
    }
    if usage.key_cert_sign()
        || usage.crl_sign()
        || usage.key_encipherment()
        || usage.data_encipherment()
        || usage.key_agreement()
        || usage.encipher_only()
        || usage.decipher_only()
    {
        return Err("the signing certificate's key usage allows more than signing".into());
    }
    if let Ok(Some(eku)) = cert.extended_key_usage() {
        let eku = eku.value;
        if eku.server_auth
            || eku.client_auth
            || eku.email_protection
            || eku.time_stamping
            || eku.ocsp_signing
        {
            return Err("the signing certificate's extended key usage is for another purpose than code signing".into());
        }
    }
    Ok(())
}

/// A certificate of the chain is trusted, the chain validates up to it, and the signer is a
/// trusted identity.
fn authenticity(
    statement: &Statement,
    trusted: &[Vec<u8>],
    envelope: &Envelope,
    chain: &[X509Certificate<'_>],
) -> Result<(), String> {
    if trusted.is_empty() {
        return Err("no trusted certificates are found to verify authenticity".into());
    }
    let anchors: Vec<&Vec<u8>> = envelope
        .chain
        .iter()
        .filter(|c| trusted.contains(c))
        .collect();
    if anchors.is_empty() {
        return Err(
            "the signature's certificate chain does not contain any trusted certificate".into(),
        );
    }
    // Validity periods are the authentic-timestamp check's, so the path is validated at a time
    // every certificate of it covers.
    let latest_not_before = chain
        .iter()
        .map(|cert| cert.validity().not_before.timestamp())
        .max()
        .ok_or("the envelope holds no certificate")?;
    let at = jiff::Timestamp::from_second(latest_not_before).map_err(|e| e.to_string())?;
    validate_path(&envelope.chain, &anchors, at)?;
    let leaf = chain.first().ok_or("the envelope holds no certificate")?;
    statement.trusts_subject(&subject_dn(leaf)?)
}

/// webpki path validation from the signing certificate to one of `anchors` (trusted
/// certificates that appear in the chain), through the chain's other certificates, for code
/// signing when the certificates name an extended key usage.
fn validate_path(
    chain: &[Vec<u8>],
    anchors: &[&Vec<u8>],
    at: jiff::Timestamp,
) -> Result<(), String> {
    const CODE_SIGNING: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x03];
    let leaf = CertificateDer::from(chain[0].as_slice());
    let end_entity = webpki::EndEntityCert::try_from(&leaf)
        .map_err(|e| format!("the signing certificate is not usable: {e}"))?;
    let anchor_ders: Vec<CertificateDer<'_>> = anchors
        .iter()
        .map(|a| CertificateDer::from(a.as_slice()))
        .collect();
    let trust_anchors = anchor_ders
        .iter()
        .map(|a| webpki::anchor_from_trusted_cert(a).map(|t| t.to_owned()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("a trusted certificate is not usable: {e}"))?;
    let intermediates: Vec<CertificateDer<'_>> = chain[1..]
        .iter()
        .map(|c| CertificateDer::from(c.as_slice()))
        .collect();
    let seconds = u64::try_from(at.as_second()).unwrap_or(0);
    end_entity
        .verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            &trust_anchors,
            &intermediates,
            UnixTime::since_unix_epoch(std::time::Duration::from_secs(seconds)),
            webpki::KeyUsage::required_if_present(CODE_SIGNING),
            None,
            None,
        )
        .map(|_| ())
        .map_err(|e| {
            format!(
                "the signature's certificate chain does not validate to a trusted certificate: {e}"
            )
        })
}

/// The subject as notation reads it (Go's rendering, re-parsed): single-valued attributes of
/// the named types, each once, with `C`, `ST` and `O`.
fn subject_dn(leaf: &X509Certificate<'_>) -> Result<Dn, String> {
    let unusable = |why: String| {
        format!(
            "error while parsing the certificate subject from the digital signature. error : {why:?}"
        )
    };
    let mut dn = Dn::new();
    for rdn in leaf.subject().iter() {
        let attributes: Vec<_> = rdn.iter().collect();
        let [attribute] = attributes.as_slice() else {
            return Err(unusable("multi-valued RDN".into()));
        };
        let kind = match attribute.attr_type().to_id_string().as_str() {
            "2.5.4.6" => "C",
            "2.5.4.10" => "O",
            "2.5.4.11" => "OU",
            "2.5.4.3" => "CN",
            "2.5.4.5" => "SERIALNUMBER",
            "2.5.4.7" => "L",
            "2.5.4.8" => "ST",
            "2.5.4.9" => "STREET",
            "2.5.4.17" => "POSTALCODE",
            other => return Err(unusable(format!("unsupported attribute {other}"))),
        };
        let value = attribute
            .as_str()
            .map_err(|e| unusable(format!("attribute {kind}: {e}")))?;
        if dn.insert(kind.to_string(), value.to_string()).is_some() {
            return Err(unusable(format!("duplicate attribute {kind}")));
        }
    }
    for mandatory in ["C", "ST", "O"] {
        if dn.get(mandatory).is_none_or(|v| v.is_empty()) {
            return Err(unusable(format!("no mandatory attribute {mandatory}")));
        }
    }
    Ok(dn)
}

fn expiry(envelope: &Envelope, now: jiff::Timestamp) -> Result<(), String> {
    match envelope.expiry {
        Some(expiry) if now >= expiry => {
            Err(format!("digital signature has expired on {expiry:?}"))
        }
        _ => Ok(()),
    }
}

/// The chain was valid when the signature was made: at the authority's signing time, at the
/// time of a verified timestamp countersignature (with a `tsa:` store), or else now.
fn authentic_time(
    statement: &Statement,
    trusted: &[Vec<u8>],
    envelope: &Envelope,
    chain: &[X509Certificate<'_>],
    now: jiff::Timestamp,
) -> Result<Option<jiff::Timestamp>, String> {
    if envelope.scheme == SigningScheme::SigningAuthority {
        return chain_valid_at(
            chain,
            envelope.signing_time,
            "when the digital signature was produced",
        )
        .map(|_| None);
    }
    let expired_now = chain_valid_at(chain, now, "at the verification time");
    let check_now = !statement.verifies_timestamps()
        || (statement.timestamp_after_cert_expiry_only() && expired_now.is_ok());
    if check_now {
        return expired_now.map(|_| None);
    }
    let token = envelope
        .timestamp
        .as_deref()
        .ok_or("no timestamp countersignature was found in the signature envelope")?;
    let at = timestamp::verify(token, &envelope.signature, trusted)?;
    chain_valid_at(chain, at, "at the time of the timestamp countersignature")?;
    Ok(Some(at))
}

fn chain_valid_at(
    chain: &[X509Certificate<'_>],
    at: jiff::Timestamp,
    when: &str,
) -> Result<(), String> {
    let t = at.as_second();
    for cert in chain {
        let validity = cert.validity();
        if t < validity.not_before.timestamp() || t > validity.not_after.timestamp() {
            return Err(format!(
                "certificate {:?} was not valid {when} ({at}): valid from {} to {}",
                cert.subject().to_string(),
                validity.not_before,
                validity.not_after
            ));
        }
    }
    Ok(())
}

/// driftless makes no OCSP or CRL request (a tenant's certificate would choose where the
/// controller connects): a certificate that names a revocation service has an unknown status,
/// which only `strict` (or `override.revocation: enforce`) refuses; one without is not revocable.
fn revocation(chain: &[X509Certificate<'_>]) -> Result<(), String> {
    // The root is not revocable.
    let checked = chain.len().saturating_sub(1).max(1);
    for cert in chain.iter().take(checked) {
        let names_a_service = cert.extensions().iter().any(|e| {
            matches!(
                e.oid.to_id_string().as_str(),
                // Authority information access (OCSP) and CRL distribution points.
                "1.3.6.1.5.5.7.1.1" | "2.5.29.31"
            )
        });
        if names_a_service {
            return Err(format!(
                "signing certificate with subject {:?} revocation status is unknown",
                cert.subject().to_string()
            ));
        }
    }
    Ok(())
}

mod timestamp {
    //! RFC 3161 countersignatures over the signature, checked by `sigstore-tsa` against each
    //! trusted certificate as the authority's root, with the token's own certificates as its
    //! signer and intermediates.

    use cms::cert::CertificateChoices;
    use cms::content_info::ContentInfo;
    use cms::signed_data::SignedData;
    use sigstore_verify::tsa::TsaAuthority;
    use sigstore_verify::tsa::verify_timestamp_for_authority;
    use sigstore_verify::types::{DerCertificate, SignatureBytes, TimestampToken};
    use x509_cert::der::{Decode, Encode};

    pub fn verify(
        token: &[u8],
        signature: &[u8],
        trusted: &[Vec<u8>],
    ) -> Result<jiff::Timestamp, String> {
        let embedded = embedded_certificates(token)
            .map_err(|e| format!("failed to parse timestamp countersignature with error: {e}"))?;
        let token_bytes = TimestampToken::new(token.to_vec());
        let signature = SignatureBytes::new(signature.to_vec());
        let mut reasons = Vec::new();
        for root in trusted {
            for (i, leaf) in embedded.iter().enumerate() {
                let intermediates: Vec<DerCertificate> = embedded
                    .iter()
                    .enumerate()
                    .filter(|(j, c)| *j != i && *c != root)
                    .map(|(_, c)| DerCertificate::new(c.clone()))
                    .collect();
                let authority = TsaAuthority::new(
                    DerCertificate::new(leaf.clone()),
                    intermediates,
                    DerCertificate::new(root.clone()),
                    None,
                );
                match verify_timestamp_for_authority(&token_bytes, &signature, &authority) {
                    Ok(at) => return Ok(at),
                    Err(e) => reasons.push(e.to_string()),
                }
            }
        }
        reasons.dedup();
        Err(if embedded.is_empty() {
            "the timestamp countersignature embeds no certificate of its authority".into()
        } else {
            format!(
                "the timestamp countersignature is not from a trusted timestamp authority: {}",
                reasons.join("; ")
            )
        })
    }

    fn embedded_certificates(token: &[u8]) -> Result<Vec<Vec<u8>>, String> {
        let info = ContentInfo::from_der(token).map_err(|e| e.to_string())?;
        let signed: SignedData = info.content.decode_as().map_err(|e| e.to_string())?;
        let mut out = Vec::new();
        for choice in signed
            .certificates
            .iter()
            .flat_map(|set| set.0.iter())
            .take(10)
        {
            if let CertificateChoices::Certificate(cert) = choice {
                out.push(cert.to_der().map_err(|e| e.to_string())?);
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    fn fixture(name: &str) -> Vec<u8> {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/notation");
        std::fs::read(format!("{dir}/{name}")).unwrap()
    }

    fn certificate(name: &str) -> Vec<u8> {
        certificates_of(&fixture(name)).unwrap().remove(0)
    }

    /// The descriptor of a fixture manifest, as the registry serves it.
    fn descriptor(manifest: &str) -> TargetArtifact {
        let bytes = fixture(manifest);
        TargetArtifact {
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            digest: format!("sha256:{}", hex::encode(Sha256::digest(&bytes))),
            size: bytes.len() as i64,
        }
    }

    fn statement(level: &str, identity: &str, stores: &[&str]) -> Statement {
        let json = serde_json::json!({"version": "1.0", "trustPolicies": [{
            "name": "test", "registryScopes": ["*"],
            "signatureVerification": {"level": level},
            "trustStores": stores, "trustedIdentities": [identity],
        }]});
        let policy = TrustPolicy::parse(json.to_string().as_bytes()).unwrap();
        policy.applicable("r.io/app").unwrap().clone()
    }

    const SIGNER: &str = "x509.subject: C=US, ST=WA, O=Driftless Test";

    fn now() -> jiff::Timestamp {
        "2026-12-05T00:00:00Z".parse().unwrap()
    }

    #[test]
    fn jws_and_cose_signatures_made_by_notation_verify() {
        for (file, media_type) in [
            ("signature.jws", envelope::JWS_MEDIA_TYPE),
            ("signature.cose", envelope::COSE_MEDIA_TYPE),
        ] {
            let accepted = verify_signature(
                &statement("strict", SIGNER, &["ca:ours"]),
                &[certificate("root.crt")],
                media_type,
                &fixture(file),
                &descriptor("subject.manifest.json"),
                now(),
            )
            .unwrap_or_else(|e| panic!("{file}: {e}"));
            assert!(
                accepted.subject.contains("CN=driftless.test signer"),
                "{accepted:?}"
            );
            assert!(accepted.logged.is_empty() && !accepted.authenticity_logged);
        }
    }

    #[test]
    fn a_wrong_ca_an_untrusted_identity_or_another_artifact_is_refused() {
        let refused = |statement: &Statement, trusted: Vec<u8>, target: &TargetArtifact| {
            verify_signature(
                statement,
                &[trusted],
                envelope::JWS_MEDIA_TYPE,
                &fixture("signature.jws"),
                target,
                now(),
            )
        };
        let target = descriptor("subject.manifest.json");
        let strict = statement("strict", SIGNER, &["ca:ours"]);
        let why = refused(&strict, certificate("other-root.crt"), &target).unwrap_err();
        assert_eq!(
            why,
            "the signature's certificate chain does not contain any trusted certificate"
        );
        let other = statement(
            "strict",
            "x509.subject: C=US, ST=WA, O=Other Test",
            &["ca:ours"],
        );
        let why = refused(&other, certificate("root.crt"), &target).unwrap_err();
        assert!(
            why.starts_with("signing certificate from the digital signature does not match the X.509 trusted identities"),
            "{why}"
        );
        let elsewhere = TargetArtifact {
            digest: format!("sha256:{}", "0".repeat(64)),
            ..target.clone()
        };
        let why = refused(&strict, certificate("root.crt"), &elsewhere).unwrap_err();
        assert_eq!(why, "content descriptor mismatch");

        // Audit only logs an authenticity failure: accepted, and marked so.
        let audit = statement("audit", SIGNER, &["ca:ours"]);
        let accepted = refused(&audit, certificate("other-root.crt"), &target).unwrap();
        assert!(accepted.authenticity_logged, "{accepted:?}");
    }

    #[test]
    fn a_tampered_envelope_fails_integrity_at_every_level() {
        let mut jws: serde_json::Value = serde_json::from_slice(&fixture("signature.jws")).unwrap();
        let mut signature = jws["signature"].as_str().unwrap().to_string();
        let flipped = if signature.as_bytes()[10] == b'A' {
            "B"
        } else {
            "A"
        };
        signature.replace_range(10..11, flipped);
        jws["signature"] = signature.into();
        let mut cose = fixture("signature.cose");
        let last = cose.len() - 1;
        cose[last] ^= 1;
        for level in ["strict", "audit"] {
            for (media_type, bytes) in [
                (envelope::JWS_MEDIA_TYPE, serde_json::to_vec(&jws).unwrap()),
                (envelope::COSE_MEDIA_TYPE, cose.clone()),
            ] {
                let why = verify_signature(
                    &statement(level, SIGNER, &["ca:ours"]),
                    &[certificate("root.crt")],
                    media_type,
                    &bytes,
                    &descriptor("subject.manifest.json"),
                    now(),
                )
                .unwrap_err();
                assert_eq!(
                    why, "the signature does not verify with the signing certificate's key",
                    "{level} {media_type}"
                );
            }
        }
    }

    #[test]
    fn an_expired_chain_is_enforced_by_strict_and_logged_by_permissive() {
        let later: jiff::Timestamp = "2028-01-01T00:00:00Z".parse().unwrap();
        let check = |level: &str| {
            verify_signature(
                &statement(level, SIGNER, &["ca:ours"]),
                &[certificate("root.crt")],
                envelope::COSE_MEDIA_TYPE,
                &fixture("signature.cose"),
                &descriptor("subject.manifest.json"),
                later,
            )
        };
        let why = check("strict").unwrap_err();
        assert!(
            why.contains("was not valid at the verification time"),
            "{why}"
        );
        let accepted = check("permissive").unwrap();
        assert!(
            accepted.logged[0].starts_with("authenticTimestamp: "),
            "{accepted:?}"
        );
        assert!(!accepted.authenticity_logged);
    }

    #[test]
    fn timestamp_countersignatures_prove_the_signing_time() {
        for (file, media_type, subject) in [
            (
                "timestamped.jws",
                envelope::JWS_MEDIA_TYPE,
                "timestamped-jws.subject.json",
            ),
            (
                "timestamped.cose",
                envelope::COSE_MEDIA_TYPE,
                "timestamped-cose.subject.json",
            ),
        ] {
            let trusted = [certificate("root.crt"), certificate("tsa-root.crt")];
            let with_tsa = statement("strict", SIGNER, &["ca:ours", "tsa:ours"]);
            // After the leaf expired, the timestamp still proves it was valid when used.
            let later: jiff::Timestamp = "2028-01-01T00:00:00Z".parse().unwrap();
            let accepted = verify_signature(
                &with_tsa,
                &trusted,
                media_type,
                &fixture(file),
                &descriptor(subject),
                later,
            )
            .unwrap_or_else(|e| panic!("{file}: {e}"));
            let at = accepted.timestamped_at.expect("a verified timestamp");
            assert!(at.to_string().starts_with("2026-12-04"), "{at}");

            // Without the authority's root, the timestamp proves nothing.
            let why = verify_signature(
                &with_tsa,
                &[certificate("root.crt")],
                media_type,
                &fixture(file),
                &descriptor(subject),
                later,
            )
            .unwrap_err();
            assert!(
                why.contains("not from a trusted timestamp authority"),
                "{why}"
            );
        }
        // A tsa store asks for a countersignature: a signature without one is refused.
        let why = verify_signature(
            &statement("strict", SIGNER, &["ca:ours", "tsa:ours"]),
            &[certificate("root.crt")],
            envelope::JWS_MEDIA_TYPE,
            &fixture("signature.jws"),
            &descriptor("subject.manifest.json"),
            now(),
        )
        .unwrap_err();
        assert_eq!(
            why,
            "no timestamp countersignature was found in the signature envelope"
        );
    }

    #[test]
    fn secrets_give_the_policy_and_every_certificate() {
        let mut data = std::collections::BTreeMap::new();
        data.insert("root.crt".to_string(), fixture("root.crt"));
        let why = NotationPolicy::from_secret(&data, "ns/s").err().unwrap();
        assert_eq!(why, "'trustpolicy.json' not found in secret 'ns/s'");
        let policy = serde_json::json!({"version": "1.0", "trustPolicies": [{
            "name": "all", "registryScopes": ["*"], "signatureVerification": {"level": "strict"},
            "trustStores": ["ca:x"], "trustedIdentities": ["*"]}]});
        data.insert(TRUST_POLICY_KEY.into(), policy.to_string().into_bytes());
        data.insert("tsa.pem".to_string(), fixture("tsa-root.crt"));
        let read = NotationPolicy::from_secret(&data, "ns/s").unwrap();
        assert_eq!(read.certificates.len(), 2);
        data.retain(|k, _| k == TRUST_POLICY_KEY);
        let why = NotationPolicy::from_secret(&data, "ns/s").err().unwrap();
        assert_eq!(why, "no certificates found in secret 'ns/s'");
    }
}
