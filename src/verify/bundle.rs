//! Sigstore bundles as cosign attaches them (v0.1–v0.3, parsed by Sigstore's own types): what
//! a bundle signs, whether that is a signature of the artifact at all, and cosign's legacy
//! `.sig` layers turned into the v0.1 bundle they are equivalent to, so that one verifier
//! checks both formats.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use sigstore_verify::types::bundle::SignatureContent;
use sigstore_verify::types::{Bundle, HashAlgorithm};

pub const BUNDLE_MEDIA_TYPE_V03: &str = "application/vnd.dev.sigstore.bundle.v0.3+json";
const BUNDLE_MEDIA_TYPE_V01: &str = "application/vnd.dev.sigstore.bundle+json;version=0.1";
const IN_TOTO_PAYLOAD_TYPE: &str = "application/vnd.in-toto+json";
/// The predicate type of the in-toto statement `cosign sign` signs in the bundle format: "this
/// is a signature of the subject". Any other predicate (what `cosign attest` signs: provenance,
/// SBOMs, scan results) is a claim *about* the subject, which a trusted identity may well make
/// for someone else's artifact; it is never a signature of it. (cosign v3.1's own `verify`
/// does not look at the predicate of a bundle, and accepts an attested-only image; we do not.)
pub const COSIGN_SIGN_PREDICATE_TYPE: &str = "https://sigstore.dev/cosign/sign/v1";

/// Most log entries or timestamps one bundle may carry (sigstore-go's limit).
const MAX_LOG_ENTRIES: usize = 32;

/// Whether an OCI artifact or layer media type is a Sigstore bundle (v0.1's form
/// `application/vnd.dev.sigstore.bundle+json;version=0.1` or v0.3's
/// `application/vnd.dev.sigstore.bundle.v0.3+json`).
pub fn is_bundle_media_type(media_type: &str) -> bool {
    media_type.starts_with("application/vnd.dev.sigstore.bundle+json")
        || media_type.starts_with("application/vnd.dev.sigstore.bundle.v0.")
}

/// A bundle's JSON, parsed; the error says what is wrong with it.
pub fn parse(json: &[u8]) -> Result<Bundle, String> {
    let text = std::str::from_utf8(json).map_err(|_| "the Sigstore bundle is not UTF-8")?;
    let bundle = Bundle::from_json(text)
        .map_err(|e| format!("the Sigstore bundle is not valid JSON of its format: {e}"))?;
    let material = &bundle.verification_material;
    let timestamps = &material.timestamp_verification_data.rfc3161_timestamps;
    if material.tlog_entries.len() > MAX_LOG_ENTRIES || timestamps.len() > MAX_LOG_ENTRIES {
        return Err(format!(
            "the bundle carries {} log entries and {} timestamps, more than {MAX_LOG_ENTRIES}",
            material.tlog_entries.len(),
            timestamps.len()
        ));
    }
    Ok(bundle)
}

/// The library's content types may grow; what this code does not know signs nothing.
const UNKNOWN_CONTENT: &str = "the bundle holds neither a message signature nor a DSSE envelope";

/// The signature the bundle holds.
pub fn signature(bundle: &Bundle) -> &[u8] {
    match &bundle.content {
        SignatureContent::MessageSignature(m) => m.signature.as_bytes(),
        SignatureContent::DsseEnvelope(e) => e.signature.sig.as_bytes(),
        _ => &[],
    }
}

/// Whether the signature is over the artifact's bytes (a message signature) rather than over
/// a statement naming its digest (DSSE).
pub fn signs_bytes(bundle: &Bundle) -> bool {
    matches!(bundle.content, SignatureContent::MessageSignature(_))
}

/// The bytes the signature covers: a message signature the artifact itself, a DSSE signature
/// the envelope's pre-authentication encoding.
pub fn signed_bytes(bundle: &Bundle, artifact: &[u8]) -> Vec<u8> {
    match &bundle.content {
        SignatureContent::MessageSignature(_) => artifact.to_vec(),
        SignatureContent::DsseEnvelope(e) => e.pae(),
        _ => Vec::new(),
    }
}

/// The manifest digest (`sha256:<hex>`) the bundle is about: the digest a message signature
/// covers, or the subject of a DSSE in-toto statement whatever its predicate. Checked before
/// anything else, so content of another kind is refused here.
pub fn subject_digest(bundle: &Bundle) -> Result<String, String> {
    match &bundle.content {
        SignatureContent::MessageSignature(m) => {
            let digest = m
                .message_digest
                .as_ref()
                .ok_or("the bundle's message signature has no digest")?;
            if digest.algorithm != HashAlgorithm::Sha2256 {
                return Err(format!(
                    "the bundle's message digest uses {:?}, not SHA2_256",
                    digest.algorithm
                ));
            }
            Ok(format!("sha256:{}", hex::encode(digest.digest.as_bytes())))
        }
        SignatureContent::DsseEnvelope(e) => {
            if e.payload_type != IN_TOTO_PAYLOAD_TYPE {
                return Err(format!(
                    "the bundle signs a '{}' payload, not an in-toto statement",
                    crate::util::truncate(&e.payload_type, 80)
                ));
            }
            statement(e.payload.as_bytes())?.subject()
        }
        _ => Err(UNKNOWN_CONTENT.into()),
    }
}

/// Refuses content that is no signature of its subject: a DSSE statement counts only with
/// cosign's signing predicate (see `COSIGN_SIGN_PREDICATE_TYPE`); a message signature signs
/// the manifest bytes themselves.
pub fn signs_subject(bundle: &Bundle) -> Result<(), String> {
    let SignatureContent::DsseEnvelope(e) = &bundle.content else {
        return Ok(());
    };
    let predicate = statement(e.payload.as_bytes())?
        .predicate_type
        .unwrap_or_default();
    if predicate == COSIGN_SIGN_PREDICATE_TYPE {
        return Ok(());
    }
    Err(format!(
        "a Sigstore bundle holds an attestation (predicate type '{}'), not a signature ('{COSIGN_SIGN_PREDICATE_TYPE}'): attestations do not verify an artifact",
        crate::util::truncate(&predicate, 120)
    ))
}

/// The parts of an in-toto statement verification reads.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Statement {
    #[serde(default)]
    subject: Vec<Subject>,
    #[serde(default)]
    predicate_type: Option<String>,
}

#[derive(Deserialize)]
struct Subject {
    #[serde(default)]
    digest: std::collections::BTreeMap<String, String>,
}

fn statement(payload: &[u8]) -> Result<Statement, String> {
    serde_json::from_slice(payload)
        .map_err(|e| format!("the signed in-toto statement is not JSON: {e}"))
}

impl Statement {
    /// The one sha256 digest the subjects name.
    fn subject(&self) -> Result<String, String> {
        let digests: Vec<&String> = self
            .subject
            .iter()
            .filter_map(|s| s.digest.get("sha256"))
            .collect();
        match digests.as_slice() {
            [one] => Ok(format!("sha256:{one}")),
            [] => Err("the signed in-toto statement names no sha256 subject".into()),
            _ => Err("the signed in-toto statement names several subjects".into()),
        }
    }
}

/// One layer of cosign's legacy `.sig` tag, as read from the registry.
#[derive(Clone, Copy)]
pub struct SignatureLayer<'a> {
    /// The simple-signing payload (the layer's blob).
    pub payload: &'a [u8],
    /// `dev.cosignproject.cosign/signature`, decoded.
    pub signature: &'a [u8],
    /// `dev.sigstore.cosign/certificate`, as DER.
    pub certificate: Option<&'a [u8]>,
    /// `dev.sigstore.cosign/bundle`: the Rekor entry cosign recorded, as JSON.
    pub rekor_bundle: Option<&'a str>,
}

/// The v0.1 bundle a legacy signature layer is equivalent to: a message signature over the
/// payload, the certificate (or, without one, a key hint), and the Rekor entry with its signed
/// entry timestamp. v0.1 is the bundle version whose log entries need no inclusion proof,
/// which cosign's legacy Rekor annotation never held.
pub fn from_signature_layer(layer: &SignatureLayer<'_>) -> Result<Bundle, String> {
    let mut material = match layer.certificate {
        Some(der) => {
            serde_json::json!({"x509CertificateChain": {"certificates": [{"rawBytes": B64.encode(der)}]}})
        }
        None => serde_json::json!({"publicKey": {"hint": ""}}),
    };
    material["tlogEntries"] = match layer.rekor_bundle {
        Some(annotation) => serde_json::json!([legacy_log_entry(annotation)?]),
        None => serde_json::json!([]),
    };
    let json = serde_json::json!({
        "mediaType": BUNDLE_MEDIA_TYPE_V01,
        "verificationMaterial": material,
        "messageSignature": {
            "messageDigest": {
                "algorithm": "SHA2_256",
                "digest": B64.encode(Sha256::digest(layer.payload)),
            },
            "signature": B64.encode(layer.signature),
        },
    });
    Bundle::from_json(&json.to_string())
        .map_err(|e| format!("the signature's Rekor bundle annotation is invalid: {e}"))
}

/// The `dev.sigstore.cosign/bundle` annotation as a bundle's log entry: the signed entry
/// timestamp, and the entry's body, time, index and log id (hex there, base64 in a bundle).
fn legacy_log_entry(annotation: &str) -> Result<serde_json::Value, String> {
    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Legacy {
        signed_entry_timestamp: String,
        payload: Payload,
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Payload {
        body: String,
        integrated_time: i64,
        log_index: i64,
        #[serde(rename = "logID")]
        log_id: String,
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Body {
        kind: String,
        api_version: String,
    }
    let invalid =
        |why: String| format!("the signature's Rekor bundle annotation is invalid: {why}");
    let legacy: Legacy = serde_json::from_str(annotation).map_err(|e| invalid(e.to_string()))?;
    let log_id = hex::decode(&legacy.payload.log_id)
        .map_err(|e| invalid(format!("the log id is not hex: {e}")))?;
    let body = B64
        .decode(&legacy.payload.body)
        .map_err(|e| invalid(format!("the entry body is not base64: {e}")))?;
    let kind: Body = serde_json::from_slice(&body)
        .map_err(|e| invalid(format!("the entry body names no kind: {e}")))?;
    Ok(serde_json::json!({
        "logIndex": legacy.payload.log_index.to_string(),
        "logId": {"keyId": B64.encode(log_id)},
        "kindVersion": {"kind": kind.kind, "version": kind.api_version},
        "integratedTime": legacy.payload.integrated_time.to_string(),
        "inclusionPromise": {"signedEntryTimestamp": legacy.signed_entry_timestamp},
        "canonicalizedBody": legacy.payload.body,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dsse_bundle(statement: &str) -> String {
        format!(
            r#"{{"mediaType":"{BUNDLE_MEDIA_TYPE_V03}",
              "verificationMaterial":{{"publicKey":{{"hint":"abc"}},
                "tlogEntries":[{{"logIndex":"42","logId":{{"keyId":"AQI="}},"integratedTime":"1700000000",
                  "kindVersion":{{"kind":"dsse","version":"0.0.1"}},
                  "inclusionPromise":{{"signedEntryTimestamp":"AQI="}},
                  "canonicalizedBody":"e30="}}]}},
              "dsseEnvelope":{{"payload":"{}","payloadType":"application/vnd.in-toto+json",
                "signatures":[{{"sig":"AQID","keyid":""}}]}}}}"#,
            B64.encode(statement),
        )
    }

    #[test]
    fn reads_what_a_dsse_bundle_signs() {
        let statement = r#"{"_type":"https://in-toto.io/Statement/v1","subject":[{"name":"x","digest":{"sha256":"ab12"}}],"predicateType":"https://sigstore.dev/cosign/sign/v1","predicate":{}}"#;
        let bundle = parse(dsse_bundle(statement).as_bytes()).unwrap();
        assert_eq!(subject_digest(&bundle).unwrap(), "sha256:ab12");
        assert_eq!(signs_subject(&bundle), Ok(()));
        assert_eq!(signature(&bundle), &[1, 2, 3]);
        assert!(!signs_bytes(&bundle));
        assert_eq!(
            signed_bytes(&bundle, b"ignored"),
            format!(
                "DSSEv1 28 application/vnd.in-toto+json {} {statement}",
                statement.len()
            )
            .into_bytes()
        );
    }

    #[test]
    fn a_statement_must_name_exactly_one_sha256_subject() {
        let none = r#"{"subject":[]}"#;
        let two = r#"{"subject":[{"digest":{"sha256":"a"}},{"digest":{"sha256":"b"}}]}"#;
        for statement in [none, two] {
            let bundle = parse(dsse_bundle(statement).as_bytes()).unwrap();
            assert!(subject_digest(&bundle).is_err(), "{statement}");
        }
    }

    #[test]
    fn attestations_are_no_signatures() {
        for predicate in [
            r#""predicateType":"https://slsa.dev/provenance/v1","#,
            r#""predicateType":"https://cosign.sigstore.dev/attestation/v1","#,
            r#""predicateType":"https://sigstore.dev/cosign/sign/v2","#,
            "",
        ] {
            let statement = format!(
                r#"{{"_type":"https://in-toto.io/Statement/v1",{predicate}"subject":[{{"digest":{{"sha256":"ab12"}}}}],"predicate":{{}}}}"#
            );
            let bundle = parse(dsse_bundle(&statement).as_bytes()).unwrap();
            assert_eq!(subject_digest(&bundle).unwrap(), "sha256:ab12");
            let why = signs_subject(&bundle).unwrap_err();
            assert!(
                why.contains("holds an attestation") && why.contains(COSIGN_SIGN_PREDICATE_TYPE),
                "{why}"
            );
        }
    }

    #[test]
    fn refuses_what_is_not_a_bundle() {
        assert!(parse(b"{}").is_err());
        assert!(parse(b"\xff").unwrap_err().contains("not UTF-8"));
        let other = r#"{"mediaType":"application/json","verificationMaterial":{}}"#;
        assert!(
            parse(other.as_bytes())
                .unwrap_err()
                .contains("not valid JSON of its format")
        );
        assert!(!is_bundle_media_type(
            "application/vnd.dev.sigstore.bundlefoo"
        ));
        assert!(is_bundle_media_type(BUNDLE_MEDIA_TYPE_V01));
    }

    #[test]
    fn a_flood_of_log_entries_is_refused() {
        let statement = r#"{"subject":[{"digest":{"sha256":"ab"}}]}"#;
        let mut value: serde_json::Value = serde_json::from_str(&dsse_bundle(statement)).unwrap();
        let entry = value["verificationMaterial"]["tlogEntries"][0].clone();
        value["verificationMaterial"]["tlogEntries"] = vec![entry; 33].into();
        let why = parse(value.to_string().as_bytes()).unwrap_err();
        assert!(why.contains("more than 32"), "{why}");
    }

    #[test]
    fn a_legacy_rekor_annotation_becomes_a_v01_log_entry() {
        let body = B64.encode(r#"{"apiVersion":"0.0.1","kind":"hashedrekord","spec":{}}"#);
        let annotation = serde_json::json!({
            "SignedEntryTimestamp": "AQID",
            "Payload": {"body": body, "integratedTime": 1700000000, "logIndex": 7,
                        "logID": "0102"},
        })
        .to_string();
        let layer = SignatureLayer {
            payload: b"payload",
            signature: &[9, 9],
            certificate: None,
            rekor_bundle: Some(&annotation),
        };
        let bundle = from_signature_layer(&layer).unwrap();
        let entry = &bundle.verification_material.tlog_entries[0];
        assert_eq!(entry.log_index.get(), 7);
        assert_eq!(entry.log_id.key_id.as_bytes(), &[1, 2]);
        assert_eq!(
            (entry.kind_version.kind(), entry.kind_version.version()),
            ("hashedrekord", "0.0.1")
        );
        assert_eq!(
            entry.integrated_time.map(|t| t.as_second()),
            Some(1_700_000_000)
        );
        assert_eq!(
            subject_digest(&bundle).unwrap(),
            format!("sha256:{}", hex::encode(Sha256::digest(b"payload")))
        );
        assert_eq!(signature(&bundle), &[9, 9]);

        for (broken, why) in [
            ("{", "annotation is invalid"),
            (
                r#"{"SignedEntryTimestamp":"AQID","Payload":{"body":"e30=","integratedTime":1,"logIndex":1,"logID":"zz"}}"#,
                "not hex",
            ),
            (
                r#"{"SignedEntryTimestamp":"AQID","Payload":{"body":"e30=","integratedTime":1,"logIndex":1,"logID":"01"}}"#,
                "names no kind",
            ),
            (
                annotation
                    .replace("\"logIndex\":7", "\"logIndex\":-1")
                    .as_str(),
                "annotation is invalid",
            ),
        ] {
            let layer = SignatureLayer {
                rekor_bundle: Some(broken),
                ..layer
            };
            let error = from_signature_layer(&layer).err().unwrap();
            assert!(error.contains(why), "{broken}: {error}");
        }
    }
}
