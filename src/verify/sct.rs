//! Signed certificate timestamps (RFC 6962) embedded in Fulcio certificates, checked offline
//! against the CT log keys of the trusted root.

// An SCT is a CT log's promise that it logged the precertificate, so that a certificate the CA
// issued in secret is not accepted.

use sha2::{Digest, Sha256};

use super::cosign::verify_with_der_key;
use super::der;
use super::trust::TransparencyLog;

/// The X.509 extension holding the SCT list.
pub const OID_SCT_LIST: &str = "1.3.6.1.4.1.11129.2.4.2";
/// Its OID as DER content bytes, to find it inside the TBSCertificate.
const OID_SCT_LIST_DER: [u8; 10] = [0x2b, 0x06, 0x01, 0x04, 0x01, 0xd6, 0x79, 0x02, 0x04, 0x02];
/// Most SCTs of one certificate looked at (each costs a signature check).
const MAX_SCTS: usize = 8;

/// One SCT of the list, as the log signed it.
struct Sct<'a> {
    log_id: &'a [u8],
    timestamp: u64,
    extensions: &'a [u8],
    signature: &'a [u8],
}

/// Checks that at least one SCT of the list (the extension's value) is signed by one of `logs`
/// over the precertificate: `tbs` without the SCT extension, issued by `issuer_key`.
pub fn verify_embedded(
    tbs: &[u8],
    extension_value: &[u8],
    issuer_key: &[u8],
    logs: &[TransparencyLog],
) -> Result<(), String> {
    let scts = parse_list(extension_value).ok_or("the certificate's SCT list is malformed")?;
    let precert = tbs_without_sct_list(tbs).ok_or("the certificate's extensions are malformed")?;
    let issuer_key_hash: [u8; 32] = Sha256::digest(issuer_key).into();
    let mut failed = None;
    for sct in scts.iter().take(MAX_SCTS) {
        // A log key is trusted only for the SCTs it issued while valid (a retired CT log's key
        // must not vouch for new certificates).
        let issued = i64::try_from(sct.timestamp / 1000)
            .ok()
            .and_then(|s| jiff::Timestamp::from_second(s).ok());
        let Some(log) = logs
            .iter()
            .find(|l| l.key_id == sct.log_id && issued.is_some_and(|t| l.valid_for.contains(t)))
        else {
            continue;
        };
        let signed = signed_data(sct, &issuer_key_hash, &precert);
        if verify_with_der_key(&log.public_key, &signed, sct.signature) {
            return Ok(());
        }
        failed = Some(&log.base_url);
    }
    Err(match failed {
        Some(log) => format!("the certificate's SCT from {log} does not verify"),
        None if scts.is_empty() => {
            "the certificate embeds no signed certificate timestamp (SCT)".into()
        }
        None => "the certificate's SCTs are from no CT log of the trusted root".into(),
    })
}

/// RFC 6962 §3.2: what the log signs for a precertificate entry.
fn signed_data(sct: &Sct<'_>, issuer_key_hash: &[u8; 32], tbs: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(tbs.len() + 64);
    out.push(0); // version v1
    out.push(0); // signature type: certificate_timestamp
    out.extend_from_slice(&sct.timestamp.to_be_bytes());
    out.extend_from_slice(&1u16.to_be_bytes()); // entry type: precert_entry
    out.extend_from_slice(issuer_key_hash);
    out.extend_from_slice(&(tbs.len() as u32).to_be_bytes()[1..]); // 24-bit length
    out.extend_from_slice(tbs);
    out.extend_from_slice(&(sct.extensions.len() as u16).to_be_bytes());
    out.extend_from_slice(sct.extensions);
    out
}

/// The extension value is a DER OCTET STRING around the TLS-encoded list.
fn parse_list(extension_value: &[u8]) -> Option<Vec<Sct<'_>>> {
    let (tag, list, _) = der::split(extension_value)?;
    if tag != 0x04 {
        return None;
    }
    let (mut items, rest) = tls_vector(list, 2)?;
    if !rest.is_empty() {
        return None;
    }
    let mut scts = Vec::new();
    while !items.is_empty() {
        let (item, rest) = tls_vector(items, 2)?;
        scts.push(parse_sct(item)?);
        items = rest;
    }
    Some(scts)
}

fn parse_sct(b: &[u8]) -> Option<Sct<'_>> {
    let (&version, b) = b.split_first()?;
    if version != 0 || b.len() < 40 {
        return None;
    }
    let (log_id, b) = b.split_at(32);
    let (time, b) = b.split_at(8);
    let (extensions, b) = tls_vector(b, 2)?;
    // hash (4 = SHA-256) and signature algorithm bytes: the log's key decides.
    let b = b.get(2..)?;
    let (signature, rest) = tls_vector(b, 2)?;
    rest.is_empty().then_some(Sct {
        log_id,
        timestamp: u64::from_be_bytes(time.try_into().ok()?),
        extensions,
        signature,
    })
}

/// A TLS vector with a `width`-byte length prefix, and what follows it.
fn tls_vector(b: &[u8], width: usize) -> Option<(&[u8], &[u8])> {
    let len = b
        .get(..width)?
        .iter()
        .fold(0usize, |acc, x| (acc << 8) | *x as usize);
    let body = b.get(width..width + len)?;
    Some((body, &b[width + len..]))
}

/// The TBSCertificate re-encoded without the SCT list extension: the precertificate's TBS the
/// log signed (the CA added the SCTs afterwards).
fn tbs_without_sct_list(tbs: &[u8]) -> Option<Vec<u8>> {
    let (tag, fields, _) = der::split(tbs)?;
    if tag != 0x30 {
        return None;
    }
    let mut out = Vec::with_capacity(fields.len());
    for field in der::elements(fields)? {
        if field.tag == 0xa3 {
            out.extend(der::encode(0xa3, &extensions_without_sct(field.content)?));
        } else {
            out.extend_from_slice(field.whole);
        }
    }
    Some(der::encode(0x30, &out))
}

/// `[3] { SEQUENCE OF Extension }` content without the SCT list extension.
fn extensions_without_sct(explicit: &[u8]) -> Option<Vec<u8>> {
    let (tag, extensions, _) = der::split(explicit)?;
    if tag != 0x30 {
        return None;
    }
    let mut kept = Vec::with_capacity(extensions.len());
    for extension in der::elements(extensions)? {
        let (oid_tag, oid, _) = der::split(extension.content)?;
        if !(oid_tag == 0x06 && oid == OID_SCT_LIST_DER) {
            kept.extend_from_slice(extension.whole);
        }
    }
    Some(der::encode(0x30, &kept))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sct_extension_is_cut_out_and_the_rest_kept() {
        let ext = |oid: &[u8], value: &[u8]| {
            let mut e = der::encode(0x06, oid);
            e.extend(der::encode(0x04, value));
            der::encode(0x30, &e)
        };
        let keep = ext(&[0x55, 0x1d, 0x0f], b"ku");
        let sct = ext(&OID_SCT_LIST_DER, b"scts");
        let mut exts = keep.clone();
        exts.extend(&sct);
        let mut fields = der::encode(0x02, &[1]);
        fields.extend(der::encode(0xa3, &der::encode(0x30, &exts)));
        let tbs = der::encode(0x30, &fields);

        let mut expected = der::encode(0x02, &[1]);
        expected.extend(der::encode(0xa3, &der::encode(0x30, &keep)));
        assert_eq!(
            tbs_without_sct_list(&tbs).unwrap(),
            der::encode(0x30, &expected)
        );
    }

    #[test]
    fn malformed_lists_are_refused() {
        assert!(
            parse_list(&[0x04, 0x02, 0x00, 0x05]).is_none(),
            "length past the end"
        );
        assert!(
            parse_list(&[0x30, 0x02, 0x00, 0x00]).is_none(),
            "not an OCTET STRING"
        );
        assert_eq!(parse_list(&[0x04, 0x02, 0x00, 0x00]).unwrap().len(), 0);
    }
}
