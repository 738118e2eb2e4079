//! RFC 3161 timestamps, as Sigstore bundles carry them (`timestampVerificationData`): a timestamp
//! authority's signed statement that the signature existed at a time, which is what a Fulcio
//! certificate's short validity is checked against when the log signs no time (Rekor v2).

use sha2::Digest;
use x509_parser::certificate::X509Certificate;
use x509_parser::prelude::FromDer;

use super::certificate::{signature_algorithms, signed_by, verify_authority_chain};
use super::der::{self, Element};
use super::trust::TrustedRoot;

const OID_SIGNED_DATA: &str = "1.2.840.113549.1.7.2";
const OID_TST_INFO: &str = "1.2.840.113549.1.9.16.1.4";
const OID_CONTENT_TYPE: &str = "1.2.840.113549.1.9.3";
const OID_MESSAGE_DIGEST: &str = "1.2.840.113549.1.9.4";
const OID_TIME_STAMPING: &str = "1.3.6.1.5.5.7.3.8";

/// The parts of a TimeStampToken that verification reads.
struct Token<'a> {
    /// DER TSTInfo, the signed content.
    tst_info: &'a [u8],
    imprint_algorithm: String,
    imprint: &'a [u8],
    time: jiff::Timestamp,
    digest_algorithm: String,
    /// The signed attributes' content (re-tagged as a SET, they are what is signed).
    signed_attributes: &'a [u8],
    signature_algorithm: String,
    signature: &'a [u8],
    /// Certificates the token carries (DER).
    certificates: Vec<&'a [u8]>,
}

/// Verifies a DER TimeStampToken over `signature` (Sigstore timestamps the signature bytes)
/// against the timestamp authorities of `root`; gives the time it attests.
pub fn verify(
    token: &[u8],
    signature: &[u8],
    root: &TrustedRoot,
) -> Result<jiff::Timestamp, String> {
    let token = parse(token).ok_or("the RFC 3161 timestamp is malformed")?;
    let imprint = digest(&token.imprint_algorithm, signature).ok_or_else(|| {
        format!(
            "the timestamp uses the unknown hash {}",
            token.imprint_algorithm
        )
    })?;
    if imprint != token.imprint {
        return Err("the timestamp is for other content than this signature".into());
    }
    check_signed_attributes(&token)?;
    let signed = der::encode(0x31, token.signed_attributes);
    let algorithms =
        signature_algorithms(&token.signature_algorithm, Some(&token.digest_algorithm));
    let mut reasons = Vec::new();
    for authority in &root.timestamp_authorities {
        if !authority.valid_for.contains(token.time) {
            continue;
        }
        // The trusted chain starts with the signing certificate, or (like sigstore-go accepts)
        // with a CA, the signing certificate then coming with the token.
        let first_is_ca = authority
            .chain
            .first()
            .and_then(|d| X509Certificate::from_der(d).ok())
            .is_some_and(|(_, c)| c.is_ca());
        let signers: Vec<Vec<Vec<u8>>> = if first_is_ca {
            let mut with_signer = Vec::new();
            for cert in &token.certificates {
                let mut chain = vec![cert.to_vec()];
                chain.extend(authority.chain.iter().cloned());
                with_signer.push(chain);
            }
            with_signer
        } else {
            vec![authority.chain.clone()]
        };
        for chain in signers {
            let Ok((_, signer)) = X509Certificate::from_der(&chain[0]) else {
                continue;
            };
            if !signed_by(signer.public_key(), algorithms, &signed, token.signature) {
                continue;
            }
            if !for_timestamps(&signer) {
                reasons.push(format!(
                    "'{}' is not a timestamping certificate",
                    signer.subject()
                ));
                continue;
            }
            match verify_authority_chain(&chain, token.time) {
                Ok(()) => return Ok(token.time),
                Err(e) => reasons.push(e),
            }
        }
    }
    Err(if reasons.is_empty() {
        "the timestamp is not signed by a timestamp authority of the trusted root".into()
    } else {
        format!(
            "the timestamp's authority is not trusted: {}",
            reasons.join("; ")
        )
    })
}

fn for_timestamps(cert: &X509Certificate<'_>) -> bool {
    cert.extended_key_usage().ok().flatten().is_some_and(|e| {
        e.value.time_stamping
            || e.value
                .other
                .iter()
                .any(|o| o.to_id_string() == OID_TIME_STAMPING)
    })
}

/// The signed attributes must say the content is a TSTInfo with the digest it has.
fn check_signed_attributes(token: &Token<'_>) -> Result<(), String> {
    let attributes = der::elements(token.signed_attributes)
        .ok_or("the timestamp's signed attributes are malformed")?;
    let value = |oid: &str| {
        attributes.iter().find_map(|a| {
            let [id, values] = der::elements(a.content)?[..] else {
                return None;
            };
            (id.tag == 0x06 && der::oid(id.content)? == oid).then_some(values)
        })
    };
    let content_type = value(OID_CONTENT_TYPE)
        .and_then(|v| der::split(v.content))
        .and_then(|(tag, oid, _)| (tag == 0x06).then(|| der::oid(oid)).flatten());
    if content_type.as_deref() != Some(OID_TST_INFO) {
        return Err("the timestamp's signed content type is not TSTInfo".into());
    }
    let message_digest = value(OID_MESSAGE_DIGEST)
        .and_then(|v| der::split(v.content))
        .and_then(|(tag, d, _)| (tag == 0x04).then_some(d))
        .ok_or("the timestamp signs no message digest")?;
    if digest(&token.digest_algorithm, token.tst_info).as_deref() != Some(message_digest) {
        return Err("the timestamp's signature covers other content".into());
    }
    Ok(())
}

/// A TimeStampToken, or the TimeStampResp around one (`{status, token}`), which is what
/// Sigstore bundles hold.
fn parse(token: &[u8]) -> Option<Token<'_>> {
    let (_, outer, _) = der::split(token)?;
    let info = match der::elements(outer)?[..] {
        [status, token] if status.tag == 0x30 && token.tag == 0x30 => {
            let status = der::elements(status.content)?;
            // PKIStatus granted (0) or grantedWithMods (1).
            if !matches!(status.first()?.content, [0] | [1]) {
                return None;
            }
            token.content
        }
        _ => outer,
    };
    let [content_type, explicit] = der::elements(info)?[..] else {
        return None;
    };
    if der::oid(content_type.content)? != OID_SIGNED_DATA || explicit.tag != 0xa0 {
        return None;
    }
    let (_, signed_data, _) = der::split(explicit.content)?;
    let fields = der::elements(signed_data)?;
    let encapsulated = fields.get(2)?;
    // [0] IMPLICIT certificates, when the TSA sent its own.
    let certificates = match fields.get(3) {
        Some(certs) if certs.tag == 0xa0 => der::elements(certs.content)?
            .into_iter()
            .filter(|c| c.tag == 0x30)
            .take(8)
            .map(|c| c.whole)
            .collect(),
        _ => Vec::new(),
    };
    let signer_infos = fields.iter().rev().find(|e| e.tag == 0x31)?;
    let [econtent_type, econtent] = der::elements(encapsulated.content)?[..] else {
        return None;
    };
    if der::oid(econtent_type.content)? != OID_TST_INFO || econtent.tag != 0xa0 {
        return None;
    }
    let (tag, tst_info, _) = der::split(econtent.content)?;
    if tag != 0x04 {
        return None;
    }
    let tst = der::elements(der::split(tst_info)?.1)?;
    let imprint = der::elements(tst.get(2)?.content)?;
    let gen_time = tst.get(4).filter(|e| e.tag == 0x18)?;
    // SignerInfo: version, sid, digestAlgorithm, [0] signedAttrs, signatureAlgorithm, signature.
    let signer = der::elements(der::elements(signer_infos.content)?.first()?.content)?;
    let attributes_at = signer.iter().position(|e| e.tag == 0xa0)?;
    let signature = signer.get(attributes_at + 2).filter(|e| e.tag == 0x04)?;
    Some(Token {
        tst_info,
        imprint_algorithm: algorithm_oid(imprint.first()?)?,
        imprint: imprint.get(1).filter(|e| e.tag == 0x04)?.content,
        time: generalized_time(gen_time.content)?,
        digest_algorithm: algorithm_oid(signer.get(2)?)?,
        signed_attributes: signer[attributes_at].content,
        signature_algorithm: algorithm_oid(signer.get(attributes_at + 1)?)?,
        signature: signature.content,
        certificates,
    })
}

/// The OID of an AlgorithmIdentifier.
fn algorithm_oid(identifier: &Element<'_>) -> Option<String> {
    let (tag, oid, _) = der::split(identifier.content)?;
    (tag == 0x06).then(|| der::oid(oid)).flatten()
}

fn digest(algorithm: &str, data: &[u8]) -> Option<Vec<u8>> {
    Some(match algorithm {
        "2.16.840.1.101.3.4.2.1" => sha2::Sha256::digest(data).to_vec(),
        "2.16.840.1.101.3.4.2.2" => sha2::Sha384::digest(data).to_vec(),
        "2.16.840.1.101.3.4.2.3" => sha2::Sha512::digest(data).to_vec(),
        _ => return None,
    })
}

/// `YYYYMMDDHHMMSS[.fff]Z`.
fn generalized_time(text: &[u8]) -> Option<jiff::Timestamp> {
    let text = std::str::from_utf8(text).ok()?.strip_suffix('Z')?;
    let (whole, _fraction) = text.split_once('.').unwrap_or((text, ""));
    if whole.len() != 14 || !whole.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let rfc3339 = format!(
        "{}-{}-{}T{}:{}:{}Z",
        &whole[0..4],
        &whole[4..6],
        &whole[6..8],
        &whole[8..10],
        &whole[10..12],
        &whole[12..14]
    );
    rfc3339.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::trust::{CertificateAuthority, TimeRange};

    /// A token made by `openssl ts -reply` over `sig.bin` (tests/fixtures/sigstore/tsa).
    const TOKEN: &[u8] = include_bytes!("../../tests/fixtures/sigstore/tsa/token.der");
    const SIGNED: &[u8] = include_bytes!("../../tests/fixtures/sigstore/tsa/sig.bin");

    fn root_with(chain: &[&str]) -> TrustedRoot {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/sigstore/tsa");
        let chain = chain
            .iter()
            .map(|f| {
                let pem = std::fs::read_to_string(format!("{dir}/{f}")).unwrap();
                crate::util::pem_blocks(&pem, "CERTIFICATE").remove(0)
            })
            .collect();
        TrustedRoot {
            timestamp_authorities: vec![CertificateAuthority {
                uri: "https://tsa.test.invalid".into(),
                chain,
                valid_for: TimeRange::default(),
            }],
            ..Default::default()
        }
    }

    #[test]
    fn an_openssl_timestamp_verifies_for_what_it_stamped() {
        let root = root_with(&["tsa.crt", "root.crt"]);
        let time = verify(TOKEN, SIGNED, &root).expect("verified");
        assert_eq!(time.to_string(), "2026-11-29T21:23:08Z");
    }

    #[test]
    fn other_content_other_authorities_and_tampering_are_refused() {
        let root = root_with(&["tsa.crt", "root.crt"]);
        let why = verify(TOKEN, b"another signature", &root).unwrap_err();
        assert!(why.contains("other content"), "{why}");

        let why = verify(TOKEN, SIGNED, &TrustedRoot::default()).unwrap_err();
        assert!(why.contains("not signed by a timestamp authority"), "{why}");
        let why = verify(TOKEN, SIGNED, &TrustedRoot::public_good()).unwrap_err();
        assert!(why.contains("not signed by a timestamp authority"), "{why}");

        // One byte of the signed TSTInfo changed (inside the serial number).
        let mut tampered = TOKEN.to_vec();
        let at = tampered
            .windows(3)
            .position(|w| w == [0x02, 0x01, 0x02])
            .unwrap();
        tampered[at + 2] ^= 0x01;
        assert!(verify(&tampered, SIGNED, &root).is_err());
        assert!(
            verify(&TOKEN[..100], SIGNED, &root)
                .unwrap_err()
                .contains("malformed")
        );
    }

    #[test]
    fn a_trusted_chain_of_only_the_ca_takes_the_signer_from_the_token() {
        let time = verify(TOKEN, SIGNED, &root_with(&["root.crt"])).expect("verified");
        assert_eq!(time.to_string(), "2026-11-29T21:23:08Z");
    }

    #[test]
    fn generalized_times_with_and_without_fractions() {
        assert_eq!(
            generalized_time(b"20261129212308Z").map(|t| t.as_second()),
            "2026-11-29T21:23:08Z"
                .parse::<jiff::Timestamp>()
                .ok()
                .map(|t| t.as_second())
        );
        assert!(generalized_time(b"20261129212308.123Z").is_some());
        assert!(generalized_time(b"2026112921Z").is_none());
    }
}
