//! Sigstore bundles (v0.1–v0.3, the format cosign v3 attaches through OCI referrers): what was
//! signed, the signature, the signer's certificate or key hint, and the log entries.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::tlog::{InclusionProof, LogEntry};

pub const BUNDLE_MEDIA_TYPE_V03: &str = "application/vnd.dev.sigstore.bundle.v0.3+json";
const IN_TOTO_PAYLOAD_TYPE: &str = "application/vnd.in-toto+json";
/// The predicate type of the in-toto statement `cosign sign` signs in the bundle format: "this
/// is a signature of the subject". Any other predicate (what `cosign attest` signs: provenance,
/// SBOMs, scan results) is a claim *about* the subject, which a trusted identity may well make
/// for someone else's artifact; it is never a signature of it. (cosign v3.1's own `verify`
/// does not look at the predicate of a bundle, and accepts an attested-only image; we do not.)
pub const COSIGN_SIGN_PREDICATE_TYPE: &str = "https://sigstore.dev/cosign/sign/v1";

/// Most log entries one bundle may carry (sigstore-go's limit).
const MAX_LOG_ENTRIES: usize = 32;

/// Whether an OCI artifact or layer media type is a Sigstore bundle (v0.1's form
/// `application/vnd.dev.sigstore.bundle+json;version=0.1` or v0.3's
/// `application/vnd.dev.sigstore.bundle.v0.3+json`).
pub fn is_bundle_media_type(media_type: &str) -> bool {
    media_type.starts_with("application/vnd.dev.sigstore.bundle+json")
        || media_type.starts_with("application/vnd.dev.sigstore.bundle.v0.")
}

/// Bundles from v0.2 on carry an inclusion proof for every log entry.
fn requires_inclusion_proof(media_type: &str) -> bool {
    !(media_type.contains("version=0.1") || media_type.contains("bundle.v0.1"))
}

/// A bundle, decoded.
#[derive(Debug, Clone)]
pub struct Bundle {
    pub signer: Signer,
    pub content: Content,
    pub log_entries: Vec<LogEntry>,
    /// DER RFC 3161 timestamp tokens over the signature.
    pub timestamps: Vec<Vec<u8>>,
}

#[derive(Debug, Clone)]
pub enum Signer {
    /// A DER signing certificate (keyless).
    Certificate(Vec<u8>),
    /// A public key known to the verifier by this hint.
    PublicKey { hint: String },
}

#[derive(Debug, Clone)]
pub enum Content {
    /// A DSSE envelope; the signature covers its pre-authentication encoding.
    Dsse {
        payload_type: String,
        payload: Vec<u8>,
        signature: Vec<u8>,
    },
    /// A signature over an artifact whose SHA-256 is `digest`.
    Message { digest: Vec<u8>, signature: Vec<u8> },
}

impl Content {
    pub fn signature(&self) -> &[u8] {
        match self {
            Content::Dsse { signature, .. } | Content::Message { signature, .. } => signature,
        }
    }

    /// For DSSE envelopes, the SHA-256 of the payload (what `dsse` log entries record).
    pub fn payload_sha256(&self) -> Option<[u8; 32]> {
        match self {
            Content::Dsse { payload, .. } => Some(Sha256::digest(payload).into()),
            Content::Message { .. } => None,
        }
    }

    /// The manifest digest (`sha256:<hex>`) this content is about: the digest a message
    /// signature covers, or the subject of a DSSE in-toto statement whatever its predicate.
    pub fn subject_digest(&self) -> Result<String, String> {
        match self {
            Content::Message { digest, .. } => Ok(format!("sha256:{}", hex::encode(digest))),
            Content::Dsse {
                payload_type,
                payload,
                ..
            } => {
                if payload_type != IN_TOTO_PAYLOAD_TYPE {
                    return Err(format!(
                        "the bundle signs a '{}' payload, not an in-toto statement",
                        crate::util::truncate(payload_type, 80)
                    ));
                }
                statement(payload)?.subject()
            }
        }
    }

    /// Refuses content that is no signature of its subject: a DSSE statement counts only with
    /// cosign's signing predicate (see `COSIGN_SIGN_PREDICATE_TYPE`); a message signature
    /// signs the manifest bytes themselves.
    pub fn signs_subject(&self) -> Result<(), String> {
        let Content::Dsse { payload, .. } = self else {
            return Ok(());
        };
        let predicate = statement(payload)?.predicate_type.unwrap_or_default();
        if predicate == COSIGN_SIGN_PREDICATE_TYPE {
            return Ok(());
        }
        Err(format!(
            "a Sigstore bundle holds an attestation (predicate type '{}'), not a signature ('{COSIGN_SIGN_PREDICATE_TYPE}'): attestations do not verify an artifact",
            crate::util::truncate(&predicate, 120)
        ))
    }
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

/// DSSE's pre-authentication encoding, what a DSSE signature signs.
pub fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "DSSEv1 {} {} {} ",
        payload_type.len(),
        payload_type,
        payload.len()
    )
    .into_bytes();
    out.extend_from_slice(payload);
    out
}

impl Bundle {
    pub fn parse(json: &[u8]) -> Result<Bundle, String> {
        let wire: wire::Bundle = serde_json::from_slice(json)
            .map_err(|e| format!("the Sigstore bundle is not valid JSON of its format: {e}"))?;
        if !is_bundle_media_type(&wire.media_type) {
            return Err(format!(
                "'{}' is not a Sigstore bundle media type",
                wire.media_type
            ));
        }
        let material = wire.verification_material;
        let signer = if let Some(cert) = material.certificate {
            Signer::Certificate(decode(&cert.raw_bytes, "certificate")?)
        } else if let Some(chain) = material.x509_certificate_chain {
            let leaf = chain
                .certificates
                .first()
                .ok_or("the bundle's certificate chain is empty")?;
            Signer::Certificate(decode(&leaf.raw_bytes, "certificate chain")?)
        } else if let Some(key) = material.public_key {
            Signer::PublicKey {
                hint: key.hint.unwrap_or_default(),
            }
        } else {
            return Err("the bundle has no certificate and no public key".into());
        };
        let content = match (wire.dsse_envelope, wire.message_signature) {
            (Some(env), _) => {
                let [sig] = env.signatures.as_slice() else {
                    return Err(format!(
                        "the bundle's DSSE envelope has {} signatures, not one",
                        env.signatures.len()
                    ));
                };
                Content::Dsse {
                    payload_type: env.payload_type.clone(),
                    payload: decode(&env.payload, "DSSE payload")?,
                    signature: decode(&sig.sig, "DSSE signature")?,
                }
            }
            (None, Some(msg)) => {
                let digest = msg
                    .message_digest
                    .ok_or("the bundle's message signature has no digest")?;
                if digest.algorithm != "SHA2_256" {
                    return Err(format!(
                        "the bundle's message digest uses {}, not SHA2_256",
                        digest.algorithm
                    ));
                }
                Content::Message {
                    digest: decode(&digest.digest, "message digest")?,
                    signature: decode(&msg.signature, "message signature")?,
                }
            }
            (None, None) => return Err("the bundle holds no signature".into()),
        };
        if material.tlog_entries.len() > MAX_LOG_ENTRIES {
            return Err(format!(
                "the bundle carries {} log entries, more than {MAX_LOG_ENTRIES}",
                material.tlog_entries.len()
            ));
        }
        if requires_inclusion_proof(&wire.media_type)
            && material
                .tlog_entries
                .iter()
                .any(|e| e.inclusion_proof.is_none())
        {
            return Err(
                "a log entry of the bundle has no inclusion proof (required from bundle v0.2 on)"
                    .into(),
            );
        }
        let timestamps = material
            .timestamp_verification_data
            .map(|t| t.rfc3161_timestamps)
            .unwrap_or_default()
            .iter()
            .take(MAX_LOG_ENTRIES)
            .map(|t| decode(&t.signed_timestamp, "RFC 3161 timestamp"))
            .collect::<Result<_, _>>()?;
        let log_entries = material
            .tlog_entries
            .into_iter()
            .map(wire::TlogEntry::into_entry)
            .collect::<Result<_, _>>()?;
        Ok(Bundle {
            signer,
            content,
            log_entries,
            timestamps,
        })
    }

    /// The bytes the signature covers (for message signatures: the manifest itself).
    pub fn signed_bytes(&self, manifest: &[u8]) -> Vec<u8> {
        match &self.content {
            Content::Dsse {
                payload_type,
                payload,
                ..
            } => pae(payload_type, payload),
            Content::Message { .. } => manifest.to_vec(),
        }
    }
}

fn decode(b64: &str, field: &str) -> Result<Vec<u8>, String> {
    B64.decode(b64)
        .map_err(|e| format!("the bundle's {field} is not valid base64: {e}"))
}

/// Legacy cosign `.sig` layers carry their Rekor entry in the `dev.sigstore.cosign/bundle`
/// annotation: the signed entry timestamp and the entry's body, time, index and log id.
pub fn legacy_log_entry(annotation: &str) -> Result<LogEntry, String> {
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
    let legacy: Legacy = serde_json::from_str(annotation)
        .map_err(|e| format!("the signature's Rekor bundle annotation is invalid: {e}"))?;
    Ok(LogEntry {
        log_index: legacy.payload.log_index,
        log_id: hex::decode(&legacy.payload.log_id)
            .map_err(|e| format!("the Rekor bundle's log id is not hex: {e}"))?,
        integrated_time: legacy.payload.integrated_time,
        body: decode(&legacy.payload.body, "Rekor entry body")?,
        signed_entry_timestamp: Some(decode(
            &legacy.signed_entry_timestamp,
            "signed entry timestamp",
        )?),
        inclusion_proof: None,
    })
}

/// protobuf-specs' JSON form of `Bundle` (int64 fields may be strings or numbers).
mod wire {
    use super::*;

    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct Bundle {
        pub media_type: String,
        pub verification_material: Material,
        pub dsse_envelope: Option<Envelope>,
        pub message_signature: Option<MessageSignature>,
    }

    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct Material {
        pub certificate: Option<Raw>,
        pub x509_certificate_chain: Option<Chain>,
        pub public_key: Option<KeyHint>,
        #[serde(default)]
        pub tlog_entries: Vec<TlogEntry>,
        pub timestamp_verification_data: Option<Timestamps>,
    }

    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct Timestamps {
        #[serde(default)]
        pub rfc3161_timestamps: Vec<Timestamp>,
    }

    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct Timestamp {
        pub signed_timestamp: String,
    }

    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct Raw {
        pub raw_bytes: String,
    }

    #[derive(Deserialize)]
    pub struct Chain {
        #[serde(default)]
        pub certificates: Vec<Raw>,
    }

    #[derive(Deserialize)]
    pub struct KeyHint {
        pub hint: Option<String>,
    }

    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct Envelope {
        pub payload: String,
        pub payload_type: String,
        #[serde(default)]
        pub signatures: Vec<EnvelopeSignature>,
    }

    #[derive(Deserialize)]
    pub struct EnvelopeSignature {
        pub sig: String,
    }

    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct MessageSignature {
        pub message_digest: Option<MessageDigest>,
        pub signature: String,
    }

    #[derive(Deserialize)]
    pub struct MessageDigest {
        pub algorithm: String,
        pub digest: String,
    }

    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct TlogEntry {
        // protobuf JSON leaves zero values out: index 0 has no `logIndex`.
        #[serde(default, deserialize_with = "int64")]
        pub log_index: i64,
        pub log_id: LogId,
        #[serde(default, deserialize_with = "int64")]
        pub integrated_time: i64,
        pub inclusion_promise: Option<Promise>,
        pub inclusion_proof: Option<Proof>,
        pub canonicalized_body: String,
    }

    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct LogId {
        pub key_id: String,
    }

    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct Promise {
        pub signed_entry_timestamp: String,
    }

    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct Proof {
        #[serde(default, deserialize_with = "int64")]
        pub log_index: i64,
        pub root_hash: String,
        #[serde(deserialize_with = "int64")]
        pub tree_size: i64,
        #[serde(default)]
        pub hashes: Vec<String>,
        pub checkpoint: Option<Checkpoint>,
    }

    #[derive(Deserialize)]
    pub struct Checkpoint {
        pub envelope: String,
    }

    impl TlogEntry {
        pub fn into_entry(self) -> Result<LogEntry, String> {
            let inclusion_proof = self
                .inclusion_proof
                .map(|p| {
                    Ok::<_, String>(InclusionProof {
                        log_index: p.log_index,
                        tree_size: p.tree_size,
                        root_hash: decode(&p.root_hash, "inclusion proof root hash")?,
                        hashes: p
                            .hashes
                            .iter()
                            .map(|h| decode(h, "inclusion proof hash"))
                            .collect::<Result<_, _>>()?,
                        checkpoint: p.checkpoint.map(|c| c.envelope).unwrap_or_default(),
                    })
                })
                .transpose()?;
            Ok(LogEntry {
                log_index: self.log_index,
                log_id: decode(&self.log_id.key_id, "log id")?,
                integrated_time: self.integrated_time,
                body: decode(&self.canonicalized_body, "log entry body")?,
                signed_entry_timestamp: self
                    .inclusion_promise
                    .map(|p| decode(&p.signed_entry_timestamp, "signed entry timestamp"))
                    .transpose()?,
                inclusion_proof,
            })
        }
    }

    fn int64<'de, D: serde::Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Int {
            Number(i64),
            Text(String),
        }
        match Int::deserialize(d)? {
            Int::Number(n) => Ok(n),
            Int::Text(s) => s.parse().map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pae_is_dsse_v1() {
        assert_eq!(
            pae("application/example", b"hello"),
            b"DSSEv1 19 application/example 5 hello".to_vec()
        );
    }

    fn dsse_bundle(statement: &str) -> String {
        format!(
            r#"{{"mediaType":"{BUNDLE_MEDIA_TYPE_V03}",
              "verificationMaterial":{{"publicKey":{{"hint":"abc"}},
                "tlogEntries":[{{"logIndex":"42","logId":{{"keyId":"AQI="}},"integratedTime":"1700000000",
                  "inclusionPromise":{{"signedEntryTimestamp":"AQI="}},
                  "inclusionProof":{{"logIndex":"42","rootHash":"AQI=","treeSize":"43","hashes":["AQI="],
                    "checkpoint":{{"envelope":"note"}}}},
                  "canonicalizedBody":"e30="}}]}},
              "dsseEnvelope":{{"payload":"{}","payloadType":"application/vnd.in-toto+json",
                "signatures":[{{"sig":"AQID","keyid":""}}]}}}}"#,
            B64.encode(statement)
        )
    }

    #[test]
    fn parses_a_dsse_bundle_and_the_digest_it_signs() {
        let statement = r#"{"_type":"https://in-toto.io/Statement/v1","subject":[{"name":"x","digest":{"sha256":"ab12"}}],"predicateType":"https://sigstore.dev/cosign/sign/v1","predicate":{}}"#;
        let bundle = Bundle::parse(dsse_bundle(statement).as_bytes()).unwrap();
        assert!(matches!(&bundle.signer, Signer::PublicKey { hint } if hint == "abc"));
        assert_eq!(bundle.content.subject_digest().unwrap(), "sha256:ab12");
        assert_eq!(bundle.content.signs_subject(), Ok(()));
        assert_eq!(bundle.content.signature(), &[1, 2, 3]);
        let entry = &bundle.log_entries[0];
        assert_eq!(
            (entry.log_index, entry.integrated_time),
            (42, 1_700_000_000)
        );
        assert_eq!(entry.body, b"{}");
        assert_eq!(entry.signed_entry_timestamp.as_deref(), Some(&[1u8, 2][..]));
        let proof = entry.inclusion_proof.as_ref().unwrap();
        assert_eq!((proof.log_index, proof.tree_size), (42, 43));
        assert_eq!(proof.checkpoint, "note");
    }

    #[test]
    fn bundles_from_v0_2_need_inclusion_proofs() {
        let statement = r#"{"subject":[{"digest":{"sha256":"ab"}}]}"#;
        let json = dsse_bundle(statement);
        let start = json.find(r#""inclusionProof""#).unwrap();
        let end = json.find(r#""canonicalizedBody""#).unwrap();
        let without = format!("{}{}", &json[..start], &json[end..]);
        assert!(
            Bundle::parse(without.as_bytes())
                .unwrap_err()
                .contains("no inclusion proof")
        );
        let v01 = without.replace(
            BUNDLE_MEDIA_TYPE_V03,
            "application/vnd.dev.sigstore.bundle+json;version=0.1",
        );
        assert!(Bundle::parse(v01.as_bytes()).is_ok());
        assert!(!is_bundle_media_type(
            "application/vnd.dev.sigstore.bundlefoo"
        ));
    }

    #[test]
    fn a_statement_must_name_exactly_one_sha256_subject() {
        let none = r#"{"subject":[]}"#;
        let two = r#"{"subject":[{"digest":{"sha256":"a"}},{"digest":{"sha256":"b"}}]}"#;
        for statement in [none, two] {
            let bundle = Bundle::parse(dsse_bundle(statement).as_bytes()).unwrap();
            assert!(bundle.content.subject_digest().is_err(), "{statement}");
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
            let bundle = Bundle::parse(dsse_bundle(&statement).as_bytes()).unwrap();
            assert_eq!(bundle.content.subject_digest().unwrap(), "sha256:ab12");
            let why = bundle.content.signs_subject().unwrap_err();
            assert!(
                why.contains("holds an attestation") && why.contains(COSIGN_SIGN_PREDICATE_TYPE),
                "{why}"
            );
        }
    }

    #[test]
    fn refuses_what_is_not_a_bundle() {
        assert!(Bundle::parse(b"{}").is_err());
        let other = r#"{"mediaType":"application/json","verificationMaterial":{}}"#;
        assert!(
            Bundle::parse(other.as_bytes())
                .unwrap_err()
                .contains("not a Sigstore")
        );
        let unsigned = format!(
            r#"{{"mediaType":"{BUNDLE_MEDIA_TYPE_V03}","verificationMaterial":{{"publicKey":{{}}}}}}"#
        );
        assert!(
            Bundle::parse(unsigned.as_bytes())
                .unwrap_err()
                .contains("no signature")
        );
    }

    /// A public-good Rekor v1 `intoto` v0.0.2 entry (sigstore-go's npm provenance example, see
    /// tests/fixtures/sigstore/README.md), checked with its signed entry timestamp.
    #[test]
    fn a_real_intoto_entry_verifies_against_the_public_good_log() {
        use crate::verify::tlog::{Expected, verify_entry};
        use crate::verify::trust::TrustedRoot;
        let bundle = Bundle::parse(include_bytes!(
            "../../tests/fixtures/sigstore/npm-provenance.sigstore.json"
        ))
        .unwrap();
        let Content::Dsse {
            payload_type,
            payload,
            signature,
        } = &bundle.content
        else {
            panic!("a DSSE bundle");
        };
        let Signer::Certificate(cert) = &bundle.signer else {
            panic!("a keyless bundle");
        };
        let expected = Expected {
            signature,
            signed_sha256: Sha256::digest(pae(payload_type, payload)).into(),
            payload_sha256: bundle.content.payload_sha256(),
            verifier: cert,
        };
        let root = TrustedRoot::public_good();
        let proof = verify_entry(&bundle.log_entries[0], &root, &expected)
            .unwrap()
            .expect("from rekor.sigstore.dev");
        assert_eq!(proof.log_index, 18_300_934);
        assert_eq!(
            proof.integrated_time.map(|t| t.as_second()),
            Some(1_681_839_912)
        );

        let other = Expected {
            payload_sha256: Some([0; 32]),
            ..expected
        };
        let why = verify_entry(&bundle.log_entries[0], &root, &other).unwrap_err();
        assert!(why.contains("other signed content"), "{why}");
    }
}
