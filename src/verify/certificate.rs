//! Fulcio signing certificates: the chain up to a trusted certificate authority, checked at the
//! time the transparency log saw the signature, and the OIDC identity the certificate records.

use aws_lc_rs::signature;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::FromDer;

use super::trust::TrustedRoot;

/// Fulcio's OIDC issuer extension, current form (DER UTF8String).
const OID_ISSUER_V2: &str = "1.3.6.1.4.1.57264.1.8";
/// Fulcio's OIDC issuer extension, legacy form (the issuer's raw bytes).
const OID_ISSUER_V1: &str = "1.3.6.1.4.1.57264.1.1";
const OID_ED25519: &str = "1.3.101.112";

/// Who signed, as the certificate says: every subject alternative name and the OIDC issuer.
#[derive(Debug, Clone, PartialEq)]
pub struct SignerIdentity {
    pub subjects: Vec<String>,
    pub issuer: String,
}

impl std::fmt::Display for SignerIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "subjects [{}] with issuer {}",
            self.subjects.join(", "),
            if self.issuer.is_empty() {
                "(none)"
            } else {
                &self.issuer
            }
        )
    }
}

/// A parsed signing certificate.
pub struct SigningCertificate<'a> {
    der: &'a [u8],
    cert: X509Certificate<'a>,
}

impl<'a> SigningCertificate<'a> {
    pub fn parse(der: &'a [u8]) -> Result<Self, String> {
        let (_, cert) = X509Certificate::from_der(der)
            .map_err(|e| format!("the signing certificate is not valid X.509: {e}"))?;
        Ok(SigningCertificate { der, cert })
    }

    /// Whether `signature` over `message` was made with this certificate's key.
    pub fn verifies(&self, message: &[u8], signature: &[u8]) -> bool {
        verify_with_spki(self.cert.public_key(), message, signature)
    }

    pub fn der(&self) -> &[u8] {
        self.der
    }

    /// Checks the signed certificate timestamps embedded in the certificate: at least one must
    /// come from a certificate-transparency log of `root` and verify (cosign's default). A
    /// trusted root that lists no CT logs (a private Fulcio without one) asks for none.
    pub fn verify_sct(&self, issuer_key: &[u8], root: &TrustedRoot) -> Result<(), String> {
        if root.ct_logs.is_empty() {
            return Ok(());
        }
        let list = self
            .cert
            .extensions()
            .iter()
            .find(|e| e.oid.to_id_string() == super::sct::OID_SCT_LIST)
            .ok_or("the signing certificate embeds no signed certificate timestamp (SCT)")?;
        super::sct::verify_embedded(
            self.cert.tbs_certificate.as_ref(),
            list.value,
            issuer_key,
            &root.ct_logs,
        )
    }

    /// The DER SubjectPublicKeyInfo of the certified key.
    pub fn public_key(&self) -> &[u8] {
        self.cert.public_key().raw
    }

    pub fn identity(&self) -> SignerIdentity {
        SignerIdentity {
            subjects: self.subjects(),
            issuer: self.oidc_issuer(),
        }
    }

    /// The SANs in the order cosign lists them when reporting a mismatch.
    fn subjects(&self) -> Vec<String> {
        let Ok(Some(san)) = self.cert.subject_alternative_name() else {
            return Vec::new();
        };
        san.value
            .general_names
            .iter()
            .filter_map(|name| match name {
                GeneralName::RFC822Name(s) | GeneralName::DNSName(s) | GeneralName::URI(s) => {
                    Some(s.to_string())
                }
                GeneralName::IPAddress(ip) => ip_to_string(ip),
                GeneralName::OtherName(_, value) => super::der::utf8_string(value),
                _ => None,
            })
            .collect()
    }

    /// The current extension when present (sigstore-go reads it), else the legacy one.
    fn oidc_issuer(&self) -> String {
        let extension = |oid: &str| {
            self.cert
                .extensions()
                .iter()
                .find(|e| e.oid.to_id_string() == oid)
                .map(|e| e.value)
        };
        if let Some(issuer) = extension(OID_ISSUER_V2).and_then(super::der::utf8_string) {
            return issuer;
        }
        extension(OID_ISSUER_V1)
            .map(|raw| String::from_utf8_lossy(raw).into_owned())
            .unwrap_or_default()
    }

    /// Checks the certificate was valid at `at`, is meant for code signing and chains up to a
    /// certificate authority of `root` that was trusted at `at`; gives its issuer's public key
    /// (DER SubjectPublicKeyInfo).
    pub fn verify_chain(&self, root: &TrustedRoot, at: jiff::Timestamp) -> Result<Vec<u8>, String> {
        check_validity(&self.cert, at, "the signing certificate")?;
        match self.cert.extended_key_usage() {
            Ok(Some(eku)) if eku.value.code_signing => {}
            _ => return Err("the signing certificate is not for code signing".into()),
        }
        let mut reasons = Vec::new();
        for (i, ca) in root.authorities.iter().enumerate() {
            if !ca.valid_for.contains(at) {
                continue;
            }
            match chain_to(&self.cert, &ca.chain, at) {
                Ok(issuer) => return Ok(issuer),
                Err(e) if ca.uri.is_empty() => reasons.push(format!("authority #{}: {e}", i + 1)),
                Err(e) => reasons.push(format!("{}: {e}", ca.uri)),
            }
        }
        Err(if reasons.is_empty() {
            format!("no certificate authority of the trusted root was valid at {at}")
        } else {
            format!(
                "the signing certificate (issued by '{}') does not chain to a trusted certificate authority ({})",
                self.cert.issuer(),
                reasons.join("; ")
            )
        })
    }
}

/// Finds the leaf's issuer in `chain` (issuer first, root last) and checks each link upward.
fn chain_to(
    leaf: &X509Certificate<'_>,
    chain: &[Vec<u8>],
    at: jiff::Timestamp,
) -> Result<Vec<u8>, String> {
    let certs = chain
        .iter()
        .map(|der| {
            X509Certificate::from_der(der)
                .map(|(_, c)| c)
                .map_err(|e| format!("a trusted certificate is not valid X.509: {e}"))
        })
        .collect::<Result<Vec<_>, String>>()?;
    let Some(start) = certs.iter().position(|ca| issued_by(leaf, ca)) else {
        return Err("not issued by any of its certificates".into());
    };
    let issuer = &certs[start];
    if !issuer.is_ca() {
        return Err(format!(
            "'{}' is not a certificate authority",
            issuer.subject()
        ));
    }
    verify_authority_chain(&chain[start..], at)?;
    Ok(issuer.public_key().raw.to_vec())
}

fn issued_by(cert: &X509Certificate<'_>, issuer: &X509Certificate<'_>) -> bool {
    cert.issuer().as_raw() == issuer.subject().as_raw()
        && certificate_signature_verifies(cert, issuer)
}

fn check_validity(
    cert: &X509Certificate<'_>,
    at: jiff::Timestamp,
    what: &str,
) -> Result<(), String> {
    let (from, to) = (
        cert.validity().not_before.timestamp(),
        cert.validity().not_after.timestamp(),
    );
    let t = at.as_second();
    if t < from || t > to {
        let show = |s: i64| {
            jiff::Timestamp::from_second(s)
                .map(|t| t.to_string())
                .unwrap_or_else(|_| s.to_string())
        };
        return Err(format!(
            "{what} was not valid at {at} (valid from {} to {})",
            show(from),
            show(to)
        ));
    }
    Ok(())
}

/// The issuer's signature on a certificate, with the algorithm the certificate names.
fn certificate_signature_verifies(
    cert: &X509Certificate<'_>,
    issuer: &X509Certificate<'_>,
) -> bool {
    let algorithm = cert.signature_algorithm.algorithm.to_id_string();
    signed_by(
        issuer.public_key(),
        signature_algorithms(&algorithm, None),
        cert.tbs_certificate.as_ref(),
        &cert.signature_value.data,
    )
}

/// The verification algorithms a signature algorithm OID names; for CMS, whose signers may
/// name only the key type, the digest algorithm OID completes it.
pub(super) fn signature_algorithms(
    signature_oid: &str,
    digest_oid: Option<&str>,
) -> &'static [&'static dyn signature::VerificationAlgorithm] {
    const SHA256: &str = "2.16.840.1.101.3.4.2.1";
    const SHA384: &str = "2.16.840.1.101.3.4.2.2";
    const SHA512: &str = "2.16.840.1.101.3.4.2.3";
    match (signature_oid, digest_oid) {
        ("1.2.840.10045.4.3.2", _) | ("1.2.840.10045.2.1", Some(SHA256)) => &[
            &signature::ECDSA_P256_SHA256_ASN1,
            &signature::ECDSA_P384_SHA256_ASN1,
        ],
        ("1.2.840.10045.4.3.3", _) | ("1.2.840.10045.2.1", Some(SHA384)) => &[
            &signature::ECDSA_P384_SHA384_ASN1,
            &signature::ECDSA_P256_SHA384_ASN1,
        ],
        ("1.2.840.10045.4.3.4", _) | ("1.2.840.10045.2.1", Some(SHA512)) => {
            &[&signature::ECDSA_P521_SHA512_ASN1]
        }
        ("1.2.840.113549.1.1.11", _) | ("1.2.840.113549.1.1.1", Some(SHA256)) => {
            &[&signature::RSA_PKCS1_2048_8192_SHA256]
        }
        ("1.2.840.113549.1.1.12", _) | ("1.2.840.113549.1.1.1", Some(SHA384)) => {
            &[&signature::RSA_PKCS1_2048_8192_SHA384]
        }
        ("1.2.840.113549.1.1.13", _) | ("1.2.840.113549.1.1.1", Some(SHA512)) => {
            &[&signature::RSA_PKCS1_2048_8192_SHA512]
        }
        (OID_ED25519, _) => &[&signature::ED25519],
        _ => &[],
    }
}

/// Whether `signature` over `message` verifies with `key` under one of `algorithms`.
pub(super) fn signed_by(
    key: &x509_parser::x509::SubjectPublicKeyInfo<'_>,
    algorithms: &[&'static dyn signature::VerificationAlgorithm],
    message: &[u8],
    signature: &[u8],
) -> bool {
    let key = key_bytes(key);
    algorithms.iter().any(|alg| {
        signature::UnparsedPublicKey::new(*alg, key)
            .verify(message, signature)
            .is_ok()
    })
}

/// A trusted authority's own chain (its signing certificate first, its root last): each link
/// signed by the next, each valid at `at`, the issuers certificate authorities.
pub(super) fn verify_authority_chain(chain: &[Vec<u8>], at: jiff::Timestamp) -> Result<(), String> {
    let certs = chain
        .iter()
        .map(|der| {
            X509Certificate::from_der(der)
                .map(|(_, c)| c)
                .map_err(|e| format!("a trusted certificate is not valid X.509: {e}"))
        })
        .collect::<Result<Vec<_>, String>>()?;
    for (i, cert) in certs.iter().enumerate() {
        check_validity(cert, at, &format!("'{}'", cert.subject()))?;
        if i > 0 && !cert.is_ca() {
            return Err(format!(
                "'{}' is not a certificate authority",
                cert.subject()
            ));
        }
        if let Some(parent) = certs.get(i + 1)
            && !issued_by(cert, parent)
        {
            return Err(format!(
                "'{}' is not issued by '{}'",
                cert.subject(),
                parent.subject()
            ));
        }
    }
    Ok(())
}

/// A signature by the certificate's key over content, with any algorithm cosign signs with.
fn verify_with_spki(
    spki: &x509_parser::x509::SubjectPublicKeyInfo<'_>,
    message: &[u8],
    signature: &[u8],
) -> bool {
    if spki.algorithm.algorithm.to_id_string() == OID_ED25519 {
        return signature::UnparsedPublicKey::new(&signature::ED25519, key_bytes(spki))
            .verify(message, signature)
            .is_ok();
    }
    super::cosign::verify_with_der_key(spki.raw, message, signature)
}

/// What aws-lc-rs takes for a key: the SubjectPublicKeyInfo, except raw bytes for Ed25519.
fn key_bytes<'a>(spki: &'a x509_parser::x509::SubjectPublicKeyInfo<'a>) -> &'a [u8] {
    if spki.algorithm.algorithm.to_id_string() == OID_ED25519 {
        &spki.subject_public_key.data
    } else {
        spki.raw
    }
}

fn ip_to_string(ip: &[u8]) -> Option<String> {
    match ip.len() {
        4 => Some(std::net::Ipv4Addr::from(<[u8; 4]>::try_from(ip).ok()?).to_string()),
        16 => Some(std::net::Ipv6Addr::from(<[u8; 16]>::try_from(ip).ok()?).to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Fulcio certificate of the real public-good bundle in tests/fixtures/sigstore.
    fn fixture_certificate() -> Vec<u8> {
        let bundle: serde_json::Value = serde_json::from_slice(include_bytes!(
            "../../tests/fixtures/sigstore/oci-attestation.sigstore.json"
        ))
        .unwrap();
        let raw = bundle["verificationMaterial"]["certificate"]["rawBytes"]
            .as_str()
            .unwrap();
        use base64::Engine;
        base64::engine::general_purpose::STANDARD
            .decode(raw)
            .unwrap()
    }

    #[test]
    fn a_real_fulcio_certificate_has_a_verifying_sct_and_a_tampered_one_does_not() {
        let root = TrustedRoot::public_good();
        let der = fixture_certificate();
        let cert = SigningCertificate::parse(&der).unwrap();
        let at = "2025-02-28T19:18:12Z".parse().unwrap();
        let issuer = cert.verify_chain(&root, at).expect("chains to Fulcio");
        cert.verify_sct(&issuer, &root)
            .expect("SCT from ctfe.sigstore.dev");
        assert_eq!(
            cert.identity(),
            SignerIdentity {
                subjects: vec!["cody@soyland.com".into()],
                issuer: "https://github.com/login/oauth".into(),
            }
        );

        // Another issuer key hash: the SCT no longer covers this precertificate.
        assert!(
            cert.verify_sct(&der[..64], &root)
                .unwrap_err()
                .contains("does not verify")
        );
        // A root without the CT log: no SCT of a trusted log.
        let mut without = (*root).clone();
        without.ct_logs.retain(|l| !l.base_url.ends_with("/2022"));
        assert!(
            cert.verify_sct(&issuer, &without)
                .unwrap_err()
                .contains("from no CT log")
        );
        // Outside the certificate's ten minutes, the chain fails.
        let later = "2025-02-28T20:00:00Z".parse().unwrap();
        assert!(
            cert.verify_chain(&root, later)
                .unwrap_err()
                .contains("not valid at")
        );
    }

    #[test]
    fn the_public_good_fulcio_intermediate_is_signed_by_its_root() {
        let root = TrustedRoot::public_good();
        let ca = root
            .authorities
            .iter()
            .find(|ca| ca.chain.len() == 2)
            .expect("the current Fulcio CA has an intermediate and a root");
        let (_, inter) = X509Certificate::from_der(&ca.chain[0]).unwrap();
        let (_, top) = X509Certificate::from_der(&ca.chain[1]).unwrap();
        assert!(issued_by(&inter, &top));
        assert!(!issued_by(&top, &inter));
        let at = "2025-01-01T00:00:00Z".parse().unwrap();
        assert!(check_validity(&inter, at, "x").is_ok());
        let before = "2020-01-01T00:00:00Z".parse().unwrap();
        assert!(
            check_validity(&inter, before, "x")
                .unwrap_err()
                .contains("not valid")
        );
    }
}
