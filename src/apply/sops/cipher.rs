//! One SOPS value: `ENC[AES256_GCM,data:…,iv:…,tag:…,type:…]`, AES-256-GCM under the file's
//! data key with SOPS's 32-byte nonces, authenticated with the value's key path.

use aes_gcm::aead::consts::U32;
use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::aes::Aes256;
use aes_gcm::{AesGcm, Nonce};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use crate::apply::yaml::Ordered;

/// AES-256-GCM as SOPS uses it: a 32-byte nonce (GCM derives its counter through GHASH).
type SopsGcm = AesGcm<Aes256, U32>;

/// The data key every value of a file is encrypted with.
pub struct DataKey([u8; 32]);

impl DataKey {
    pub fn new(bytes: &[u8]) -> Result<Self, String> {
        let key: [u8; 32] = bytes
            .try_into()
            .map_err(|_| format!("the data key is {} bytes, not 32", bytes.len()))?;
        Ok(DataKey(key))
    }
}

impl Drop for DataKey {
    fn drop(&mut self) {
        self.0 = [0; 32];
    }
}

/// A decrypted value, typed as its `type:` says.
#[derive(Debug, Clone, PartialEq)]
pub enum Plain {
    Value(Ordered),
    /// An encrypted comment: not data.
    Comment,
}

/// Whether `text` is a SOPS value (SOPS's test: the prefix).
pub fn is_encrypted(text: &str) -> bool {
    text.starts_with("ENC[AES256_GCM,")
}

/// Decrypts one value. Messages never carry the plaintext: a value relabelled with another
/// type would otherwise show it in the conversion error.
pub fn decrypt(text: &str, key: &DataKey, aad: &str) -> Result<Plain, String> {
    if text.is_empty() {
        return Ok(Plain::Value(Ordered::Str(String::new())));
    }
    let parts = Parts::parse(text)?;
    let cipher = SopsGcm::new_from_slice(&key.0).map_err(|e| e.to_string())?;
    if parts.iv.len() != 32 {
        return Err(format!(
            "the value's iv is {} bytes, not 32",
            parts.iv.len()
        ));
    }
    let mut sealed = parts.data;
    sealed.extend_from_slice(&parts.tag);
    let plain = cipher
        .decrypt(
            Nonce::<U32>::from_slice(&parts.iv),
            Payload {
                msg: &sealed,
                aad: aad.as_bytes(),
            },
        )
        .map_err(|_| {
            "Could not decrypt with AES_GCM: cipher: message authentication failed".to_string()
        })?;
    typed(plain, parts.kind)
}

struct Parts<'a> {
    data: Vec<u8>,
    iv: Vec<u8>,
    tag: Vec<u8>,
    kind: &'a str,
}

impl<'a> Parts<'a> {
    /// SOPS's `^ENC\[AES256_GCM,data:(.+),iv:(.+),tag:(.+),type:(.+)\]` (greedy groups).
    fn parse(text: &'a str) -> Result<Self, String> {
        const NOT_SOPS: &str = "Input string does not match sops' data format";
        let body = text.strip_prefix("ENC[AES256_GCM,data:").ok_or(NOT_SOPS)?;
        let (body, _) = body.rsplit_once(']').ok_or(NOT_SOPS)?;
        let (body, kind) = body.rsplit_once(",type:").ok_or(NOT_SOPS)?;
        let (body, tag) = body.rsplit_once(",tag:").ok_or(NOT_SOPS)?;
        let (data, iv) = body.rsplit_once(",iv:").ok_or(NOT_SOPS)?;
        if [data, iv, tag, kind].iter().any(|p| p.is_empty()) {
            return Err(NOT_SOPS.into());
        }
        let decode = |what: &str, b64: &str| {
            let cleaned: String = b64.chars().filter(|c| *c != '\r' && *c != '\n').collect();
            STANDARD
                .decode(cleaned)
                .map_err(|e| format!("Error base64-decoding {what}: {e}"))
        };
        Ok(Parts {
            data: decode("data", data)?,
            iv: decode("iv", iv)?,
            tag: decode("tag", tag)?,
            kind,
        })
    }
}

fn typed(plain: Vec<u8>, kind: &str) -> Result<Plain, String> {
    const UNCONVERTIBLE: &str = "failed to convert the decrypted value to its data type";
    let text = || String::from_utf8(plain.clone()).map_err(|_| UNCONVERTIBLE.to_string());
    let value = match kind {
        "str" => Ordered::Str(text()?),
        "bytes" => Ordered::Str(String::from_utf8_lossy(&plain).into_owned()),
        "time" => Ordered::Time(text()?),
        "int" => Ordered::Int(go_atoi(&text()?).ok_or(UNCONVERTIBLE)?),
        "float" => Ordered::Float(text()?.parse::<f64>().map_err(|_| UNCONVERTIBLE)?),
        "bool" => Ordered::Bool(go_parse_bool(&text()?).ok_or(UNCONVERTIBLE)?),
        "comment" => return Ok(Plain::Comment),
        other => return Err(format!("Unknown datatype: {other}")),
    };
    Ok(Plain::Value(value))
}

/// Go's `strconv.Atoi`: an optional sign and decimal digits.
fn go_atoi(text: &str) -> Option<i64> {
    let digits = text.strip_prefix(['+', '-']).unwrap_or(text);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// Go's `strconv.ParseBool`.
fn go_parse_bool(text: &str) -> Option<bool> {
    match text {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// What SOPS's MAC hashes for a value (its `ToBytes`): Go's text of it.
pub fn mac_bytes(value: &Ordered) -> Option<Vec<u8>> {
    Some(match value {
        Ordered::Str(s) | Ordered::Time(s) => s.as_bytes().to_vec(),
        Ordered::Int(i) => i.to_string().into_bytes(),
        Ordered::Float(f) => go_format_float(*f).into_bytes(),
        Ordered::Bool(true) => b"True".to_vec(),
        Ordered::Bool(false) => b"False".to_vec(),
        Ordered::Null | Ordered::Seq(_) | Ordered::Map(_) => return None,
    })
}

/// Go's `strconv.FormatFloat(f, 'f', -1, 64)`: the shortest digits, never an exponent.
fn go_format_float(f: f64) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "+Inf" } else { "-Inf" }.into();
    }
    // Rust's Display writes the shortest round-trip digits without an exponent, as Go's 'f'
    // with precision -1 does.
    format!("{f}")
}

/// Decrypts the stored MAC: a `str` value authenticated with `lastmodified` as Go's RFC 3339
/// writes it.
pub fn decrypt_mac(stored: &str, key: &DataKey, last_modified: &str) -> Result<String, String> {
    match decrypt(stored, key, last_modified)? {
        Plain::Value(Ordered::Str(mac)) => Ok(mac),
        _ => Err("the MAC is not a string".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_texts() {
        assert_eq!(go_format_float(1.5), "1.5");
        assert_eq!(go_format_float(3.0), "3");
        assert_eq!(go_format_float(1e21), "1000000000000000000000");
        assert_eq!(go_format_float(f64::INFINITY), "+Inf");
        assert_eq!(go_atoi("+12"), Some(12));
        assert_eq!(go_atoi("1_0"), None);
        assert_eq!(go_parse_bool("True"), Some(true));
        assert_eq!(go_parse_bool("yes"), None);
    }

    #[test]
    fn malformed_values_are_refused_without_panicking() {
        let key = DataKey::new(&[7; 32]).unwrap();
        for text in [
            "ENC[AES256_GCM,data:,iv:,tag:,type:str]",
            "ENC[AES256_GCM,data:!!,iv:AA==,tag:AA==,type:str]",
            "ENC[AES256_GCM,data:AA==,iv:AA==,tag:AA==,type:str]",
            "ENC[AES256_GCM,data:AA==",
            "plain",
        ] {
            assert!(decrypt(text, &key, "a:").is_err(), "{text}");
        }
    }
}
