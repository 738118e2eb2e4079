//! Who a Fulcio signing certificate names: every subject alternative name and the OIDC issuer.
//! The certificate itself (chain, validity, SCT) is verified by Sigstore's library; it reports
//! only the first email or URI name, while Flux (through cosign) matches its identity rules
//! against every name, so the names are read here.

use x509_parser::asn1_rs::{Any, Class, FromDer, Tag};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;

/// Fulcio's OIDC issuer extension, current form (DER UTF8String).
const OID_ISSUER_V2: &str = "1.3.6.1.4.1.57264.1.8";
/// Fulcio's OIDC issuer extension, legacy form (the issuer's raw bytes).
const OID_ISSUER_V1: &str = "1.3.6.1.4.1.57264.1.1";

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
    cert: X509Certificate<'a>,
}

impl<'a> SigningCertificate<'a> {
    pub fn parse(der: &'a [u8]) -> Result<Self, String> {
        let (_, cert) = X509Certificate::from_der(der)
            .map_err(|e| format!("the signing certificate is not valid X.509: {e}"))?;
        Ok(SigningCertificate { cert })
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
                GeneralName::OtherName(_, value) => utf8_string(value),
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
        if let Some(issuer) = extension(OID_ISSUER_V2).and_then(utf8_string) {
            return issuer;
        }
        extension(OID_ISSUER_V1)
            .map(|raw| String::from_utf8_lossy(raw).into_owned())
            .unwrap_or_default()
    }
}

/// A DER UTF8String, or one inside the `[0] EXPLICIT` of an otherName value (Fulcio's
/// username SAN).
fn utf8_string(der: &[u8]) -> Option<String> {
    let (_, mut any) = Any::from_der(der).ok()?;
    if any.header.class() == Class::ContextSpecific && any.tag() == Tag(0) {
        (_, any) = Any::from_der(any.data).ok()?;
    }
    if any.header.class() != Class::Universal || any.tag() != Tag::Utf8String {
        return None;
    }
    String::from_utf8(any.data.to_vec()).ok()
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
    fn a_real_fulcio_certificate_names_its_signer_and_issuer() {
        let der = fixture_certificate();
        let cert = SigningCertificate::parse(&der).unwrap();
        assert_eq!(
            cert.identity(),
            SignerIdentity {
                subjects: vec!["cody@soyland.com".into()],
                issuer: "https://github.com/login/oauth".into(),
            }
        );
        assert_eq!(cert.public_key()[0], 0x30, "a DER SubjectPublicKeyInfo");
    }

    #[test]
    fn utf8_strings_are_read_bare_or_in_an_explicit_tag() {
        assert_eq!(utf8_string(b"\x0c\x02hi").as_deref(), Some("hi"));
        assert_eq!(utf8_string(b"\xa0\x04\x0c\x02hi").as_deref(), Some("hi"));
        assert_eq!(
            utf8_string(b"\xa0\x06\xa0\x04\x0c\x02hi"),
            None,
            "one level"
        );
        assert_eq!(utf8_string(b"\x04\x02hi"), None, "an OCTET STRING");
        assert_eq!(utf8_string(b"\x0c\x05hi"), None, "truncated");
        assert_eq!(utf8_string(b"\x0c\x02\xff\xfe"), None, "not UTF-8");
    }
}
