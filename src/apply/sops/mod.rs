//! SOPS decryption for Kustomizations (`spec.decryption.provider: sops`), reading what the real
//! `sops` CLI writes: the keys of a Secret (`keys`), a file's `sops` section (`metadata`), its
//! values (`cipher`, `tree`) and formats (`formats`), and which files of a build are
//! decrypted (`sources`).
//!
//! Plaintext stays in memory and in the build's private copy; messages name files, key paths
//! and keys, never a value.

mod cipher;
mod cloud;
mod formats;
mod keys;
mod kms;
mod metadata;
mod shamir;
mod sources;
mod tree;
mod vault_login;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::Value;

pub use formats::{Format, Output};
pub use keys::{Keyring, ObjectIdentity};
pub use sources::{DECRYPT_ANNOTATION, decrypt_sources};
pub use vault_login::{VaultConfigMap, VaultLogin};

/// Decrypts a whole file (for tests and the fuzz target: what `sops decrypt` prints).
pub fn decrypt_file(content: &[u8], format: Format, keys: &Keyring) -> Result<Vec<u8>, String> {
    formats::decrypt(content, format, Output::As(format), keys)
}

/// Flux's decryption of a built Secret's `data` entries that are themselves SOPS files
/// (base64 of an encrypted YAML, JSON or dotenv file): each is decrypted into the format its
/// key names.
pub fn decrypt_secret_data(object: &mut Value, keys: &Keyring) -> Result<(), String> {
    if !is_v1_secret(object) || stays_encrypted(object) {
        return Ok(());
    }
    let Some(data) = object.get_mut("data").and_then(Value::as_object_mut) else {
        return Ok(());
    };
    for (key, value) in data.iter_mut() {
        let Some(content) = value.as_str().and_then(|v| STANDARD.decode(v).ok()) else {
            continue;
        };
        let Some(input) = Format::detect(&content) else {
            continue;
        };
        let output = Output::As(Format::for_path(key));
        let plain = formats::decrypt(&content, input, output, keys)
            .map_err(|e| format!("Secret field '{key}': {e}"))?;
        *value = Value::String(STANDARD.encode(plain));
    }
    Ok(())
}

/// A v1 Secret that still carries a `sops` section, unless it asks to stay encrypted: Flux
/// refuses to apply one ("configuring decryption is required").
pub fn is_still_encrypted_secret(object: &Value) -> bool {
    is_v1_secret(object)
        && object.get("sops").is_some_and(|s| !s.is_null())
        && !stays_encrypted(object)
}

fn is_v1_secret(object: &Value) -> bool {
    object["apiVersion"] == "v1" && object["kind"] == "Secret"
}

fn stays_encrypted(object: &Value) -> bool {
    object["metadata"]["annotations"][DECRYPT_ANNOTATION]
        .as_str()
        .is_some_and(|v| v.eq_ignore_ascii_case("disabled"))
}
