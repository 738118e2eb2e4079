//! AWS KMS master keys: the data key is KMS `Decrypt` of the file's ciphertext blob, signed
//! with the keys of the Secret's `sops.aws-kms` entry, else with the controller's own AWS
//! identity (as Flux falls back to it).

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};

use zeroize::Zeroizing;

use crate::identity::aws::{self, AwsAuth, StaticKeys};
use crate::identity::endpoints::aws_regional_kms;

/// How this controller reaches KMS.
#[derive(Clone)]
pub struct KmsAccess {
    pub http: reqwest::Client,
    pub auth: AwsAuth,
}

/// The keys of a `sops.aws-kms` entry (YAML: `aws_access_key_id`, `aws_secret_access_key`,
/// `aws_session_token`).
pub fn static_keys(entry: &[u8]) -> Result<StaticKeys, String> {
    let text = std::str::from_utf8(entry).map_err(|_| "not text".to_string())?;
    let value = crate::apply::yaml::document(
        text,
        &mut crate::apply::yaml::Budget::default(),
        crate::apply::yaml::Dialect::SigsYaml,
    )
    .map_err(|e| e.to_string())?;
    let field = |name: &str| value.get(name).and_then(Value::as_str).map(str::to_string);
    Ok(StaticKeys {
        access_key: field("aws_access_key_id").ok_or("aws_access_key_id is missing")?,
        secret_key: field("aws_secret_access_key").ok_or("aws_secret_access_key is missing")?,
        session_token: field("aws_session_token").filter(|t| !t.is_empty()),
    })
}

/// KMS `Decrypt` of `enc` (base64) under `arn`, with the file's encryption `context`.
pub async fn decrypt(
    access: &KmsAccess,
    arn: &str,
    enc: &str,
    role: &str,
    context: &[(String, String)],
) -> Result<Zeroizing<Vec<u8>>, String> {
    let region = arn
        .split(':')
        .nth(3)
        .filter(|r| arn.starts_with("arn:aws") && !r.is_empty())
        .ok_or("the key's ARN names no region")?;
    let endpoint = match std::env::var("AWS_ENDPOINT_URL_KMS") {
        Ok(e) if !e.is_empty() => e,
        _ => aws_regional_kms(region)?,
    };
    let mut keys = aws::session_keys(&access.auth, &access.http, region)
        .await?
        .ok_or("no AWS credentials")?;
    // The key's `role` (sops `--kms <arn>+<role>`): assumed with the credentials above, as
    // sops does, under sops's session name.
    if !role.is_empty() {
        let identity = access.auth.identity_key();
        keys = aws::assume_role(
            &access.http,
            &keys,
            &identity,
            role,
            "sops@driftless",
            region,
        )
        .await?;
    }
    let context: serde_json::Map<String, Value> = context
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    let mut body = json!({"CiphertextBlob": enc, "KeyId": arn});
    if !context.is_empty() {
        body["EncryptionContext"] = Value::Object(context);
    }
    let body = body.to_string().into_bytes();
    let answer = call(&access.http, &endpoint, region, &keys, body).await?;
    let plaintext = answer
        .get("Plaintext")
        .and_then(Value::as_str)
        .ok_or("the KMS answer has no Plaintext")?;
    STANDARD
        .decode(plaintext)
        .map(Zeroizing::new)
        .map_err(|_| "the KMS Plaintext is not base64".to_string())
}

async fn call(
    http: &reqwest::Client,
    endpoint: &str,
    region: &str,
    keys: &StaticKeys,
    body: Vec<u8>,
) -> Result<Value, String> {
    let url = reqwest::Url::parse(endpoint).map_err(|e| format!("KMS endpoint {endpoint}: {e}"))?;
    let headers = [
        ("content-type", "application/x-amz-json-1.1".to_string()),
        ("x-amz-target", "TrentService.Decrypt".to_string()),
    ];
    let (status, text) = aws::send_signed(http, "POST", url, "kms", &headers, body, keys, region)
        .await
        .map_err(|e| format!("KMS request to {endpoint} failed: {e}"))?;
    let answer: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    if !status.is_success() {
        let kind = answer["__type"].as_str().unwrap_or_default();
        let message = answer["message"]
            .as_str()
            .or(answer["Message"].as_str())
            .unwrap_or_default();
        return Err(format!(
            "KMS refused the decryption (HTTP {}): {kind} {message}",
            status.as_u16()
        ));
    }
    Ok(answer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_keys_from_the_secret_entry() {
        let keys =
            static_keys(b"aws_access_key_id: AKIA1\naws_secret_access_key: s3cr3t\n").unwrap();
        assert_eq!(keys.access_key, "AKIA1");
        assert_eq!(keys.session_token, None);
        assert!(static_keys(b"aws_access_key_id: AKIA1\n").is_err());
    }
}
