//! Decrypting a file's documents as SOPS walks them (`Tree.Decrypt`): each value the file's
//! rule marks encrypted is decrypted with its map-key path as additional data, and the MAC
//! over every value's plaintext, in document order, must match the stored one.

use sha2::{Digest, Sha512};

use super::cipher::{self, DataKey, Plain};
use super::metadata::{Metadata, Rule};
use crate::apply::yaml::Ordered;

/// SHA-256 of "sops": the MAC's first bytes when only encrypted values are hashed.
const MAC_ONLY_ENCRYPTED_INIT: [u8; 32] = [
    0x8a, 0x3f, 0xd2, 0xad, 0x54, 0xce, 0x66, 0x52, 0x7b, 0x10, 0x34, 0xf3, 0xd1, 0x47, 0xbe, 0x0b,
    0x0b, 0x97, 0x5b, 0x3b, 0xf4, 0x4f, 0x72, 0xc6, 0xfd, 0xad, 0xec, 0x81, 0x76, 0xf2, 0x7d, 0x69,
];

/// The documents with their values decrypted, the MAC checked.
pub fn decrypt_documents(
    docs: Vec<Ordered>,
    metadata: &Metadata,
    key: &DataKey,
) -> Result<Vec<Ordered>, String> {
    let mut walk = Walk {
        metadata,
        key,
        mac: Sha512::new(),
        path: Vec::new(),
    };
    if metadata.mac_only_encrypted {
        walk.mac.update(MAC_ONLY_ENCRYPTED_INIT);
    }
    let docs = docs
        .into_iter()
        .map(|doc| walk.node(doc))
        .collect::<Result<Vec<_>, _>>()?;
    // Comments are never hashed, so the MAC holds for comment-regex files too; `mac` and the
    // rule fields are not authenticated, so no rule may turn the check off.
    let computed = hex::encode_upper(walk.mac.finalize());
    verify_mac(metadata, key, &computed)?;
    Ok(docs)
}

/// The stored MAC, decrypted with `lastmodified` as additional data, against `computed`.
fn verify_mac(metadata: &Metadata, key: &DataKey, computed: &str) -> Result<(), String> {
    if metadata.mac.is_empty() {
        return Err("the file has no MAC, so its integrity cannot be checked".into());
    }
    let stored = cipher::decrypt_mac(&metadata.mac, key, &metadata.last_modified)
        .map_err(|e| format!("Failed to decrypt original mac: {e}"))?;
    if stored != computed {
        // The digests stay out of the message: they hash the plaintext.
        return Err(
            "MAC mismatch: the file was changed after it was encrypted (re-encrypt it with sops)"
                .into(),
        );
    }
    Ok(())
}

struct Walk<'a> {
    metadata: &'a Metadata,
    key: &'a DataKey,
    mac: Sha512,
    path: Vec<String>,
}

impl Walk<'_> {
    fn node(&mut self, node: Ordered) -> Result<Ordered, String> {
        match node {
            Ordered::Map(entries) => {
                let mut out = Vec::with_capacity(entries.len());
                for (k, v) in entries {
                    self.path.push(k);
                    let v = self.node(v);
                    let k = self.path.pop().unwrap_or_default();
                    out.push((k, v?));
                }
                Ok(Ordered::Map(out))
            }
            // List items add nothing to the path.
            Ordered::Seq(items) => Ok(Ordered::Seq(
                items
                    .into_iter()
                    .map(|item| self.node(item))
                    .collect::<Result<Vec<_>, _>>()?,
            )),
            Ordered::Null => Ok(Ordered::Null),
            leaf => self.leaf(leaf),
        }
    }

    fn leaf(&mut self, leaf: Ordered) -> Result<Ordered, String> {
        let encrypted = match &self.metadata.rule {
            Rule::ByComment => leaf.as_str().is_some_and(cipher::is_encrypted),
            rule => rule.encrypted(&self.path),
        };
        if !encrypted {
            // With a comment rule, what is not `ENC[…]` was not encrypted.
            if !self.metadata.mac_only_encrypted {
                self.hash(&leaf);
            }
            return Ok(leaf);
        }
        let Ordered::Str(text) = &leaf else {
            return Err(format!(
                "Expected encrypted value as string at '{}', but got another type",
                self.path.join(".")
            ));
        };
        let aad = format!("{}:", self.path.join(":"));
        let plain = cipher::decrypt(text, self.key, &aad)
            .map_err(|e| format!("could not decrypt value at '{}': {e}", self.path.join(".")))?;
        match plain {
            Plain::Value(value) => {
                self.hash(&value);
                Ok(value)
            }
            Plain::Comment => Ok(Ordered::Null),
        }
    }

    fn hash(&mut self, value: &Ordered) {
        if let Some(bytes) = cipher::mac_bytes(value) {
            self.mac.update(bytes);
        }
    }
}
