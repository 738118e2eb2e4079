//! What the cloud clients share for authentication: keys and lifetimes for the token cache
//! (`super::cache`), RS256 JWTs (GCP service accounts, Azure client certificates), PEM decoding
//! and HMAC-SHA256 (SigV4, Azure shared key).

use std::time::{Duration, Instant};

use aws_lc_rs::{hmac, rand::SystemRandom, signature};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

pub use super::cache::{Token, cached_token};

/// A registry login: Basic credentials.
#[derive(Clone, PartialEq, Eq)]
pub struct RegistryLogin {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for RegistryLogin {
    // The password never reaches logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryLogin")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// A cache key that names the credential without holding it.
pub fn cache_key(parts: &[&[u8]]) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_be_bytes());
        h.update(p);
    }
    hex::encode(h.finalize())
}

/// Lifetime of a token from an OAuth `expires_in` (seconds), defaulting to an hour.
pub fn expiry(expires_in: Option<u64>) -> Instant {
    lapses_in(expires_in.unwrap_or(3600))
}

/// The longest an issuer's word on a token's life is believed (ECR's logins, the longest-lived
/// there are, last 12 hours): a larger number, from whoever answers, must not overflow the
/// clock, and the cache keeps nothing past an hour anyway.
pub const MAX_LIFETIME: Duration = Duration::from_secs(12 * 3600);

/// When a token with `secs` seconds of life left lapses.
pub fn lapses_in(secs: u64) -> Instant {
    Instant::now() + Duration::from_secs(secs).min(MAX_LIFETIME)
}

/// When a token that lapses at `unix` (seconds since the epoch) lapses; a past time is now.
pub fn lapses_at(unix: i64) -> Instant {
    let now = i64::try_from(unix_now()).unwrap_or(i64::MAX);
    lapses_in(u64::try_from(unix.saturating_sub(now)).unwrap_or(0))
}

pub fn hmac_sha256(key: &[u8], data: &[u8]) -> Vec<u8> {
    hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), data)
        .as_ref()
        .to_vec()
}

/// An RSA private key from PEM (PKCS#8 `PRIVATE KEY` or PKCS#1 `RSA PRIVATE KEY`).
pub fn rsa_key(pem: &str) -> Result<signature::RsaKeyPair, String> {
    if let Some(der) = crate::util::pem_blocks(pem, "PRIVATE KEY").first() {
        return signature::RsaKeyPair::from_pkcs8(der)
            .map_err(|e| format!("invalid PKCS#8 RSA private key: {e}"));
    }
    if let Some(der) = crate::util::pem_blocks(pem, "RSA PRIVATE KEY").first() {
        return signature::RsaKeyPair::from_der(der)
            .map_err(|e| format!("invalid PKCS#1 RSA private key: {e}"));
    }
    Err("no RSA private key in PEM data".into())
}

/// A compact JWS signed with RS256 over the given header and claims.
pub fn rs256_jwt(
    key: &signature::RsaKeyPair,
    header: &serde_json::Value,
    claims: &serde_json::Value,
) -> Result<String, String> {
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let mut sig = vec![0; key.public_modulus_len()];
    key.sign(
        &signature::RSA_PKCS1_SHA256,
        &SystemRandom::new(),
        signing_input.as_bytes(),
        &mut sig,
    )
    .map_err(|e| format!("signing the token request failed: {e}"))?;
    Ok(format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(sig)))
}

pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

/// The text of the first `<tag>...</tag>` element in an XML document (STS answers are small
/// and flat enough that this is all that is read from them).
pub fn xml_text(xml: &str, tag: &str) -> Option<String> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let start = xml.find(&open)? + open.len();
    let len = xml[start..].find(&close)?;
    Some(unescape_xml(&xml[start..start + len]))
}

fn unescape_xml(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

/// A cloud API's JSON answer, or its refusal: the status and the service's own message
/// (`error.message`, `errors[0]`, else the start of the body), URLs without their queries.
pub async fn json_answer(request: reqwest::RequestBuilder) -> Result<serde_json::Value, String> {
    let response = request
        .send()
        .await
        .map_err(|e| crate::transport::error_chain(&e))?;
    let status = response.status();
    json_of(status, &crate::transport::answer_text(response).await)
}

/// `json_answer` of an answer already read.
pub fn json_of(status: reqwest::StatusCode, text: &str) -> Result<serde_json::Value, String> {
    if !status.is_success() {
        let answer: serde_json::Value = serde_json::from_str(text).unwrap_or_default();
        let message = answer["error"]["message"]
            .as_str()
            .or(answer["errors"][0].as_str())
            .or(answer["message"].as_str())
            .map(str::to_string)
            .unwrap_or_else(|| text.chars().take(200).collect());
        return Err(format!("HTTP {}: {}", status.as_u16(), sanitize(&message)));
    }
    serde_json::from_str(text).map_err(|e| format!("the answer is not JSON: {e}"))
}

/// Removes the query string from every URL in an error message: pre-signed URLs and SAS
/// tokens must not reach conditions or events (Flux does the same).
pub fn sanitize(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut in_query = false;
    let mut in_url = false;
    for (i, c) in message.char_indices() {
        if !in_url && (message[i..].starts_with("http://") || message[i..].starts_with("https://"))
        {
            in_url = true;
        }
        if in_url && (c.is_whitespace() || c == '"' || c == '\'' || c == ')') {
            in_url = false;
            in_query = false;
        }
        if in_url && c == '?' {
            in_query = true;
        }
        if !in_query {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lifetimes come from token services (for a Bucket, the tenant's own): none may overflow.
    #[test]
    fn lifetimes_are_capped_and_never_overflow() {
        let cap = Instant::now() + MAX_LIFETIME;
        for lapses in [
            expiry(Some(u64::MAX)),
            lapses_in(u64::MAX),
            lapses_at(i64::MAX),
        ] {
            assert!(lapses <= cap + Duration::from_secs(1));
        }
        assert!(lapses_at(i64::MIN) <= Instant::now());
        assert!(lapses_at(0) <= Instant::now());
        let in_a_minute = lapses_at(i64::try_from(unix_now()).unwrap() + 60);
        assert!(in_a_minute > Instant::now() + Duration::from_secs(50));
    }

    #[test]
    fn sanitize_strips_queries_from_urls_only() {
        assert_eq!(
            sanitize("GET https://a.blob.core.windows.net/c?sv=1&sig=SECRET failed? yes"),
            "GET https://a.blob.core.windows.net/c failed? yes"
        );
    }

    #[test]
    fn xml_text_reads_and_unescapes_elements() {
        let xml = "<R><Credentials><AccessKeyId>AK</AccessKeyId><SessionToken>a&amp;b</SessionToken></Credentials></R>";
        assert_eq!(xml_text(xml, "AccessKeyId").as_deref(), Some("AK"));
        assert_eq!(xml_text(xml, "SessionToken").as_deref(), Some("a&b"));
        assert_eq!(xml_text(xml, "Missing"), None);
    }

    #[test]
    fn hmac_matches_rfc4231_case_2() {
        assert_eq!(
            hex::encode(hmac_sha256(b"Jefe", b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
