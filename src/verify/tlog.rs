//! Transparency-log proofs, checked offline against the logs of a trusted root: an entry's signed
//! entry timestamp and inclusion proof, and that its body describes the very signature being
//! verified.

// The signed entry timestamp is the log's promise to include the entry, which also vouches for its
// time; the inclusion proof is a Merkle path to a tree head in a checkpoint the log signed.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use sha2::{Digest, Sha256};

use super::cosign::verify_with_der_key;
use super::trust::{TransparencyLog, TrustedRoot};

/// One log entry as a bundle (or cosign's legacy `.sig` annotation) carries it.
#[derive(Debug, Clone, Default)]
pub struct LogEntry {
    pub log_index: i64,
    pub log_id: Vec<u8>,
    pub integrated_time: i64,
    /// The canonicalized entry body the log stored.
    pub body: Vec<u8>,
    pub signed_entry_timestamp: Option<Vec<u8>>,
    pub inclusion_proof: Option<InclusionProof>,
}

#[derive(Debug, Clone, Default)]
pub struct InclusionProof {
    pub log_index: i64,
    pub tree_size: i64,
    pub root_hash: Vec<u8>,
    pub hashes: Vec<Vec<u8>>,
    /// The signed note holding the tree head.
    pub checkpoint: String,
}

/// What a verified entry tells: where it sits in which log, and when the log saw it (only
/// when the log signed that time).
#[derive(Debug, Clone, PartialEq)]
pub struct LogProof {
    pub log_url: String,
    pub log_index: i64,
    pub integrated_time: Option<jiff::Timestamp>,
}

/// What the entry body must say: the signature, the hash of what was signed, and who signed.
pub struct Expected<'a> {
    pub signature: &'a [u8],
    /// SHA-256 of the bytes the signature covers (for DSSE, the pre-authentication encoding).
    pub signed_sha256: [u8; 32],
    /// For DSSE envelopes: SHA-256 of the payload (what `dsse` entries record).
    pub payload_sha256: Option<[u8; 32]>,
    /// DER of the signing certificate or public key.
    pub verifier: &'a [u8],
}

/// Most signature lines of a checkpoint looked at (each costs a signature check).
const MAX_CHECKPOINT_SIGNATURES: usize = 8;
/// Most signatures of one entry body compared.
const MAX_ENTRY_SIGNATURES: usize = 8;

/// Verifies one entry against the logs of `root`. `Ok(None)`: the entry is from a log `root`
/// does not list, so it proves nothing either way.
pub fn verify_entry(
    entry: &LogEntry,
    root: &TrustedRoot,
    expected: &Expected<'_>,
) -> Result<Option<LogProof>, String> {
    let Some(log) = root.log(&entry.log_id) else {
        return Ok(None);
    };
    if entry.signed_entry_timestamp.is_none() && entry.inclusion_proof.is_none() {
        return Err(format!(
            "log entry {} of {} has neither a signed entry timestamp nor an inclusion proof",
            entry.log_index, log.base_url
        ));
    }
    check_body(&entry.body, expected)
        .map_err(|e| format!("log entry {} of {}: {e}", entry.log_index, log.base_url))?;
    let mut integrated_time = None;
    if let Some(set) = &entry.signed_entry_timestamp {
        verify_signed_entry_timestamp(entry, log, set)?;
        let t = jiff::Timestamp::from_second(entry.integrated_time)
            .map_err(|e| format!("log entry {}: bad integrated time: {e}", entry.log_index))?;
        if !log.valid_for.contains(t) {
            return Err(format!(
                "log entry {} was integrated at {t}, outside the validity of {}'s key",
                entry.log_index, log.base_url
            ));
        }
        integrated_time = Some(t);
    }
    if let Some(proof) = &entry.inclusion_proof {
        verify_inclusion(entry, proof, log)?;
    }
    // The entry's own index is only signed by the entry timestamp; without one, report the
    // index the inclusion proof verified.
    let log_index = match (&entry.signed_entry_timestamp, &entry.inclusion_proof) {
        (None, Some(proof)) => proof.log_index,
        _ => entry.log_index,
    };
    Ok(Some(LogProof {
        log_url: log.base_url.clone(),
        log_index,
        integrated_time,
    }))
}

/// The signed entry timestamp signs the canonical JSON of body, time, log id and index.
fn verify_signed_entry_timestamp(
    entry: &LogEntry,
    log: &TransparencyLog,
    set: &[u8],
) -> Result<(), String> {
    let payload = format!(
        r#"{{"body":"{}","integratedTime":{},"logID":"{}","logIndex":{}}}"#,
        B64.encode(&entry.body),
        entry.integrated_time,
        hex::encode(&entry.log_id),
        entry.log_index
    );
    if verify_with_der_key(&log.public_key, payload.as_bytes(), set) {
        Ok(())
    } else {
        Err(format!(
            "the signed entry timestamp of log entry {} does not verify with the key of {}",
            entry.log_index, log.base_url
        ))
    }
}

fn verify_inclusion(
    entry: &LogEntry,
    proof: &InclusionProof,
    log: &TransparencyLog,
) -> Result<(), String> {
    let fail = |why: String| {
        format!(
            "the inclusion proof of log entry {} in {} is invalid: {why}",
            entry.log_index, log.base_url
        )
    };
    let leaf = leaf_hash(&entry.body);
    let root = root_from_inclusion_proof(proof.log_index, proof.tree_size, leaf, &proof.hashes)
        .ok_or_else(|| fail("the Merkle path does not fit the tree".into()))?;
    if root.as_slice() != proof.root_hash.as_slice() {
        return Err(fail("the Merkle path leads to another root hash".into()));
    }
    let head = verify_checkpoint(&proof.checkpoint, log).map_err(fail)?;
    if head.tree_size != proof.tree_size {
        return Err(fail(format!(
            "the signed checkpoint is for tree size {}, not the proof's tree size {}",
            head.tree_size, proof.tree_size
        )));
    }
    if head.root_hash != proof.root_hash {
        return Err(fail(
            "the signed checkpoint has another root hash than the proof".into(),
        ));
    }
    Ok(())
}

fn leaf_hash(body: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(body);
    h.finalize().into()
}

fn node_hash(left: &[u8], right: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// RFC 9162 §2.1.3.2: the root a Merkle audit path leads to, or `None` when the path does not
/// fit a leaf at `index` of a tree of `size`.
fn root_from_inclusion_proof(
    index: i64,
    size: i64,
    leaf: [u8; 32],
    path: &[Vec<u8>],
) -> Option<[u8; 32]> {
    if index < 0 || index >= size {
        return None;
    }
    let (mut f, mut s) = (index as u64, (size - 1) as u64);
    let mut r = leaf;
    for p in path {
        if s == 0 || p.len() != 32 {
            return None;
        }
        if f & 1 == 1 || f == s {
            r = node_hash(p, &r);
            while f & 1 == 0 && f != 0 {
                f >>= 1;
                s >>= 1;
            }
        } else {
            r = node_hash(&r, p);
        }
        f >>= 1;
        s >>= 1;
    }
    (s == 0).then_some(r)
}

struct TreeHead {
    tree_size: i64,
    root_hash: Vec<u8>,
}

/// A checkpoint is a signed note: `origin`, tree size and base64 root hash lines (and maybe
/// more), a blank line, then `— <name> <base64(key hint ‖ signature)>` lines.
fn verify_checkpoint(note: &str, log: &TransparencyLog) -> Result<TreeHead, String> {
    let (text, signatures) = note
        .split_once("\n\n")
        .ok_or("the checkpoint is not a signed note")?;
    let text = format!("{text}\n");
    // Each signature starts with the first 4 bytes of its key's id: only the log's are checked.
    let hint = log.key_id.get(..4).unwrap_or_default();
    let mut signed = signatures
        .lines()
        .take(MAX_CHECKPOINT_SIGNATURES)
        .filter_map(|line| {
            let rest = line.strip_prefix("\u{2014} ")?;
            let (_name, sig) = rest.rsplit_once(' ')?;
            let raw = B64.decode(sig).ok()?;
            (raw.len() > 4 && &raw[..4] == hint).then(|| raw[4..].to_vec())
        });
    if !signed.any(|sig| verify_with_der_key(&log.public_key, text.as_bytes(), &sig)) {
        return Err(format!("the checkpoint is not signed by {}", log.base_url));
    }
    // The note names its log (`<host>`, or `<host> - <tree id>` for Rekor v1): the log of the
    // trusted root at that host, as sigstore-go requires.
    let origin = text.lines().next().unwrap_or_default();
    let origin_host = origin.split(" - ").next().unwrap_or_default();
    let log_host = log
        .base_url
        .split_once("://")
        .map_or(log.base_url.as_str(), |(_, rest)| rest)
        .split('/')
        .next()
        .unwrap_or_default();
    if origin_host != log_host {
        return Err(format!(
            "the checkpoint is of log '{}', not of {}",
            crate::util::truncate(origin, 80),
            log.base_url
        ));
    }
    let mut lines = text.lines().skip(1);
    let tree_size = lines
        .next()
        .and_then(|l| l.parse().ok())
        .ok_or("the checkpoint has no tree size")?;
    let root_hash = lines
        .next()
        .and_then(|l| B64.decode(l).ok())
        .ok_or("the checkpoint has no root hash")?;
    Ok(TreeHead {
        tree_size,
        root_hash,
    })
}

/// The body must record this signature, this content and this signer, so that a proof for
/// one signature cannot be passed off for another. Rekor v1 records DSSE envelopes as `dsse`
/// (or, for older attestations, `intoto` v0.0.2) entries (the payload's hash) and other
/// signatures as `hashedrekord` v0.0.1 (the signed
/// bytes' hash, hex, the signer as PEM); Rekor v2 records everything as `hashedrekord` v0.0.2
/// (the signed bytes' hash — for DSSE its pre-authentication encoding — base64, the signer as
/// DER), or DSSE as `dsse` v0.0.2.
fn check_body(body: &[u8], expected: &Expected<'_>) -> Result<(), String> {
    let body: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| format!("the entry body is not a Rekor entry: {e}"))?;
    let kind = body["kind"].as_str().unwrap_or_default();
    let version = body["apiVersion"].as_str().unwrap_or_default();
    let spec = &body["spec"];
    let (hash, signatures) = match (kind, version, expected.payload_sha256) {
        ("dsse", "0.0.1", Some(payload)) => (
            recorded_hash(
                &spec["payloadHash"],
                "algorithm",
                "sha256",
                "value",
                Encoding::Hex,
            ) == Some(payload),
            list(&spec["signatures"], "signature", |s| {
                pem_der(&B64.decode(s["verifier"].as_str()?).ok()?)
            }),
        ),
        ("dsse", "0.0.2", Some(payload)) => {
            let v2 = &spec["dsseV002"];
            (
                recorded_hash(
                    &v2["payloadHash"],
                    "algorithm",
                    "SHA2_256",
                    "digest",
                    Encoding::Base64,
                ) == Some(payload),
                list(&v2["signatures"], "content", |s| {
                    raw_verifier(&s["verifier"])
                }),
            )
        }
        ("intoto", "0.0.2", Some(payload)) => {
            let content = &spec["content"];
            (
                recorded_hash(
                    &content["payloadHash"],
                    "algorithm",
                    "sha256",
                    "value",
                    Encoding::Hex,
                ) == Some(payload),
                // The envelope's signatures are base64 twice, the keys base64 PEM.
                content["envelope"]["signatures"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .take(MAX_ENTRY_SIGNATURES)
                    .filter_map(|s| {
                        let once = B64.decode(s["sig"].as_str()?).ok()?;
                        let sig = B64.decode(once).ok()?;
                        let key = B64.decode(s["publicKey"].as_str()?).ok();
                        Some((sig, key.and_then(|pem| pem_der(&pem))))
                    })
                    .collect(),
            )
        }
        ("hashedrekord", "0.0.1", None) => (
            recorded_hash(
                &spec["data"]["hash"],
                "algorithm",
                "sha256",
                "value",
                Encoding::Hex,
            ) == Some(expected.signed_sha256),
            list(&serde_json::json!([spec["signature"]]), "content", |s| {
                pem_der(&B64.decode(s["publicKey"]["content"].as_str()?).ok()?)
            }),
        ),
        ("hashedrekord", "0.0.2", _) => {
            let v2 = &spec["hashedRekordV002"];
            (
                recorded_hash(
                    &v2["data"],
                    "algorithm",
                    "SHA2_256",
                    "digest",
                    Encoding::Base64,
                ) == Some(expected.signed_sha256),
                list(&serde_json::json!([v2["signature"]]), "content", |s| {
                    raw_verifier(&s["verifier"])
                }),
            )
        }
        _ => {
            return Err(format!(
                "an entry of kind '{}' version '{}' does not record this kind of signature",
                crate::util::truncate(kind, 40),
                crate::util::truncate(version, 20)
            ));
        }
    };
    if !hash {
        return Err("the entry records other signed content".into());
    }
    let matches = signatures.iter().any(|(sig, verifier)| {
        sig == expected.signature && verifier.as_deref() == Some(expected.verifier)
    });
    if !matches {
        return Err("the entry records another signature or signer".into());
    }
    Ok(())
}

enum Encoding {
    Hex,
    Base64,
}

/// A `{algorithm, value}` hash object, if it uses `algorithm`.
fn recorded_hash(
    hash: &serde_json::Value,
    algorithm_key: &str,
    algorithm: &str,
    value_key: &str,
    encoding: Encoding,
) -> Option<[u8; 32]> {
    if hash[algorithm_key].as_str()? != algorithm {
        return None;
    }
    let value = hash[value_key].as_str()?;
    let bytes = match encoding {
        Encoding::Hex => hex::decode(value).ok()?,
        Encoding::Base64 => B64.decode(value).ok()?,
    };
    bytes.try_into().ok()
}

/// Each entry's base64 signature (under `signature_key`) and its signer's DER.
fn list(
    entries: &serde_json::Value,
    signature_key: &str,
    verifier: impl Fn(&serde_json::Value) -> Option<Vec<u8>>,
) -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
    entries
        .as_array()
        .into_iter()
        .flatten()
        .take(MAX_ENTRY_SIGNATURES)
        .filter_map(|e| {
            let sig = B64.decode(e[signature_key].as_str()?).ok()?;
            Some((sig, verifier(e)))
        })
        .collect()
}

/// A v0.0.2 verifier: `{x509Certificate: {rawBytes}}` or `{publicKey: {rawBytes}}`.
fn raw_verifier(verifier: &serde_json::Value) -> Option<Vec<u8>> {
    let raw = verifier["x509Certificate"]["rawBytes"]
        .as_str()
        .or_else(|| verifier["publicKey"]["rawBytes"].as_str())?;
    B64.decode(raw).ok()
}

/// The first PEM block of `pem`, whatever its label.
fn pem_der(pem: &[u8]) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(pem).ok()?;
    ["CERTIFICATE", "PUBLIC KEY"]
        .iter()
        .find_map(|label| crate::util::pem_blocks(text, label).into_iter().next())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6962 tree over `leaves`, for building paths to check against.
    fn tree_root(leaves: &[[u8; 32]]) -> [u8; 32] {
        if leaves.len() == 1 {
            return leaves[0];
        }
        let k = leaves.len().next_power_of_two() / 2;
        node_hash(&tree_root(&leaves[..k]), &tree_root(&leaves[k..]))
    }

    fn path(leaves: &[[u8; 32]], index: usize) -> Vec<Vec<u8>> {
        if leaves.len() == 1 {
            return Vec::new();
        }
        let k = leaves.len().next_power_of_two() / 2;
        if index < k {
            let mut p = path(&leaves[..k], index);
            p.push(tree_root(&leaves[k..]).to_vec());
            p
        } else {
            let mut p = path(&leaves[k..], index - k);
            p.push(tree_root(&leaves[..k]).to_vec());
            p
        }
    }

    #[test]
    fn inclusion_proofs_lead_to_the_root_for_every_leaf_of_every_size() {
        for size in 1..=13usize {
            let leaves: Vec<[u8; 32]> = (0..size).map(|i| leaf_hash(&[i as u8])).collect();
            let root = tree_root(&leaves);
            for index in 0..size {
                let p = path(&leaves, index);
                assert_eq!(
                    root_from_inclusion_proof(index as i64, size as i64, leaves[index], &p),
                    Some(root),
                    "size {size} index {index}"
                );
                if size > 1 {
                    let other = (index + 1) % size;
                    assert_ne!(
                        root_from_inclusion_proof(index as i64, size as i64, leaves[other], &p),
                        Some(root)
                    );
                }
            }
        }
        assert_eq!(root_from_inclusion_proof(3, 3, [0; 32], &[]), None);
        assert_eq!(
            root_from_inclusion_proof(0, 2, [0; 32], &[]),
            None,
            "path too short"
        );
    }
}
