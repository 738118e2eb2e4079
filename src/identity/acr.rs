//! Azure Container Registry logins: an Entra ID token for ACR's scope, exchanged at the
//! registry for an ACR refresh token, which the registry's own token service takes as the
//! password of the null GUID user.

use std::time::Instant;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;

use super::auth::{self, RegistryLogin, Token, cached_token};
use super::entra::{self, EntraCredential};
use crate::transport::{error_chain, token_answer};

/// The scope of the Entra ID token ACR exchanges (the same in every Azure cloud).
pub const SCOPE: &str = "https://containerregistry.azure.net/.default";
/// The user ACR's token service expects with a refresh token as password.
pub const USERNAME: &str = "00000000-0000-0000-0000-000000000000";
/// The DNS suffixes of ACR registries in Azure's clouds.
const SUFFIXES: [&str; 4] = ["azurecr.io", "azurecr.cn", "azurecr.de", "azurecr.us"];
/// What the hosts an `azure` OCIRepository may name look like, for messages.
pub const HOST_PATTERNS: &str = "<name>.azurecr.io (or .azurecr.cn, .azurecr.de, .azurecr.us)";

/// Whether `registry` (as an OCI URL names it) is an ACR registry: a DNS name under one of
/// ACR's suffixes, without a port (ACR listens on 443 alone), since the Entra ID token goes to it.
pub fn is_registry(registry: &str) -> bool {
    let host = registry.to_ascii_lowercase();
    let host = host.strip_suffix('.').unwrap_or(&host);
    SUFFIXES.iter().any(|suffix| {
        host.strip_suffix(suffix)
            .and_then(|name| name.strip_suffix('.'))
            .is_some_and(super::endpoints::is_dns_name)
    })
}

/// The login for `registry` with the identity `credential` stands for (tokens fetched through
/// `http`), cached per identity and registry until shortly before the refresh token lapses.
pub async fn login(
    http: &reqwest::Client,
    registry: &str,
    credential: &EntraCredential,
) -> Result<RegistryLogin, String> {
    let key = auth::cache_key(&[
        b"acr",
        credential.cache_key(SCOPE).as_bytes(),
        registry.as_bytes(),
    ]);
    let refresh_token = cached_token(&key, || async {
        let access_token = entra::access_token(http, credential, SCOPE)
            .await
            .map_err(|e| format!("failed to get access token for artifact registry: {e}"))?;
        exchange(http, registry, &access_token)
            .await
            .map_err(|e| format!("failed to create artifact registry credentials: {e}"))
    })
    .await?;
    Ok(RegistryLogin {
        username: USERNAME.into(),
        password: refresh_token,
    })
}

#[derive(Deserialize)]
struct Exchanged {
    refresh_token: String,
}

/// ACR's `/oauth2/exchange`: the Entra ID access token for the registry's refresh token.
async fn exchange(
    http: &reqwest::Client,
    registry: &str,
    access_token: &str,
) -> Result<Token, String> {
    let url = format!("https://{registry}/oauth2/exchange?api-version=2021-07-01");
    let response = http
        .post(&url)
        .header("Accept", "application/json")
        .form(&[
            ("grant_type", "access_token"),
            ("service", registry),
            ("access_token", access_token),
        ])
        .send()
        .await
        .map_err(|e| format!("POST {url}: {}", error_chain(&e)))?;
    let exchanged: Exchanged = token_answer(response, "the registry's token exchange").await?;
    let expires = refresh_token_expiry(&exchanged.refresh_token, auth::unix_now())?;
    Ok(Token {
        value: exchanged.refresh_token,
        expires,
    })
}

/// When a refresh token lapses: the `exp` of its (unverified) JWT claims, as Flux reads it;
/// the registry verifies the token, this only decides how long to keep it.
fn refresh_token_expiry(token: &str, now: u64) -> Result<Instant, String> {
    #[derive(Deserialize)]
    struct Claims {
        exp: u64,
    }
    let invalid = |why: String| format!("invalid refresh token from the registry: {why}");
    let claims = token
        .split('.')
        .nth(1)
        .ok_or_else(|| invalid("not a JWT".into()))?;
    let json = URL_SAFE_NO_PAD
        .decode(claims.trim_end_matches('='))
        .map_err(|e| invalid(e.to_string()))?;
    let claims: Claims = serde_json::from_slice(&json).map_err(|e| invalid(e.to_string()))?;
    match claims.exp.checked_sub(now) {
        Some(left) if left > 0 => Ok(auth::lapses_in(left)),
        _ => Err(invalid("it has expired".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acr_hosts_are_names_under_acr_suffixes() {
        for host in [
            "myregistry.azurecr.io",
            "MyRegistry.azurecr.cn",
            "reg.westeurope.data.azurecr.io",
            "a.azurecr.us.",
            "b.azurecr.de",
        ] {
            assert!(is_registry(host), "{host}");
        }
        for host in [
            "azurecr.io",
            ".azurecr.io",
            "myregistry.azurecr.io:443",
            "myregistry.azurecr.io.evil.example",
            "myregistry.azurecr.com",
            "my_registry.azurecr.io",
            "user@myregistry.azurecr.io",
            "a..b.azurecr.io",
        ] {
            assert!(!is_registry(host), "{host}");
        }
    }

    fn jwt(claims: &str) -> String {
        format!("e30.{}.c2ln", URL_SAFE_NO_PAD.encode(claims.as_bytes()))
    }

    #[test]
    fn refresh_tokens_live_until_their_exp() {
        use std::time::Duration;
        let lapses =
            refresh_token_expiry(&jwt(r#"{"exp":1000,"grant_type":"refresh_token"}"#), 400)
                .unwrap();
        let left = lapses.saturating_duration_since(Instant::now());
        assert!(
            left > Duration::from_secs(590) && left <= Duration::from_secs(600),
            "{left:?}"
        );
        for (token, why) in [
            (jwt(r#"{"exp":100}"#), "expired"),
            (jwt(r#"{"sub":"x"}"#), "missing field `exp`"),
            ("no-dots".to_string(), "not a JWT"),
            ("a.!!!.b".to_string(), "Invalid"),
            (jwt(r#"{"exp":-1}"#), "invalid value"),
        ] {
            let err = refresh_token_expiry(&token, 400).err().unwrap();
            assert!(err.contains(why), "{token}: {err}");
        }
    }
}
