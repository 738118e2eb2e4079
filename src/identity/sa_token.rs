//! Flux's object identity API with the `kubernetes` credential provider: a ServiceAccount
//! annotated `credential.auth.fluxcd.io/provider: kubernetes` (type `jwt`) lends a short-lived
//! token of its own, issued by the API server for an audience, as the credential of a service
//! that trusts the cluster's issuer (a registry with OIDC workload identity federation, as Zot
//! and Harbor have): a bearer token, or with `credential.auth.fluxcd.io/username` the password
//! of Basic auth.

use k8s_openapi::api::core::v1::ServiceAccount;

use super::auth::{self, Token, cached_token};
use super::workload::{Identity, annotation};

pub const PROVIDER: &str = "credential.auth.fluxcd.io/provider";
pub const TYPE: &str = "credential.auth.fluxcd.io/type";
pub const AUDIENCES: &str = "credential.auth.fluxcd.io/audiences";
pub const EXPIRATION: &str = "credential.auth.fluxcd.io/expiration-seconds";
pub const USERNAME: &str = "credential.auth.fluxcd.io/username";
/// The API server's bounds on a TokenRequest's lifetime.
const MIN_EXPIRATION: i64 = 600;
const MAX_EXPIRATION: i64 = 1 << 32;

/// How a ServiceAccount asks its tokens to be issued and presented.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenCredential {
    pub audiences: Vec<String>,
    /// No `audiences` annotation: the token is for the service's own name.
    pub default_audience: bool,
    pub expiration_seconds: Option<i64>,
    pub username: Option<String>,
}

/// The ServiceAccount's opt-in, if it makes one (`None`: it names no credential provider).
/// Without `audiences` the token is for `service` (the registry's host, as the registry
/// names itself), never the API server's default audience, which would let whoever runs the
/// service act as the ServiceAccount on the cluster. Since the object's author chooses that
/// host, such a token must only reach the host's genuine owner (see `source::oci::cloud`).
pub fn credential(sa: &ServiceAccount, service: &str) -> Result<Option<TokenCredential>, String> {
    let Some(provider) = annotation(sa, PROVIDER) else {
        return Ok(None);
    };
    if provider != "kubernetes" {
        return Err(format!(
            "credential provider '{provider}' not implemented: {PROVIDER} must be 'kubernetes'"
        ));
    }
    match annotation(sa, TYPE).as_deref() {
        None | Some("jwt") => {}
        Some(other) => {
            return Err(format!(
                "unsupported credential type '{other}': {TYPE} must be 'jwt'"
            ));
        }
    }
    let default_audience = annotation(sa, AUDIENCES).is_none();
    let audiences = match annotation(sa, AUDIENCES) {
        None => vec![service.to_string()],
        Some(list) => {
            let audiences: Vec<String> = list
                .split(',')
                .map(str::trim)
                .filter(|a| !a.is_empty())
                .map(str::to_string)
                .collect();
            if audiences.is_empty() {
                return Err(format!(
                    "invalid {AUDIENCES} annotation: '{list}'. must list one or more audiences, separated by commas"
                ));
            }
            audiences
        }
    };
    let expiration_seconds = annotation(sa, EXPIRATION)
        .map(|v| {
            v.parse::<i64>()
                .ok()
                .filter(|s| (MIN_EXPIRATION..=MAX_EXPIRATION).contains(s))
                .ok_or_else(|| {
                    format!("invalid {EXPIRATION} annotation: '{v}'. must be a whole number of seconds from {MIN_EXPIRATION} to {MAX_EXPIRATION}")
                })
        })
        .transpose()?;
    Ok(Some(TokenCredential {
        audiences,
        default_audience,
        expiration_seconds,
        username: annotation(sa, USERNAME),
    }))
}

/// A token of the ServiceAccount for the credential's audiences, cached until 80% of its life.
pub async fn token(identity: &Identity, credential: &TokenCredential) -> Result<String, String> {
    let key = identity.cache_key(
        format!(
            "kubernetes jwt {:?} {:?}",
            credential.audiences, credential.expiration_seconds
        )
        .as_bytes(),
    );
    cached_token(&key, || async {
        let (value, lapses) = identity
            .issue(&credential.audiences, credential.expiration_seconds)
            .await?;
        let expires = match lapses {
            Some(t) => auth::lapses_at(t.as_second()),
            None => auth::expiry(credential.expiration_seconds.map(i64::unsigned_abs)),
        };
        Ok(Token { value, expires })
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(annotations: &[(&str, &str)]) -> ServiceAccount {
        let annotations: std::collections::BTreeMap<_, _> = annotations.iter().cloned().collect();
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "app", "annotations": annotations}
        }))
        .unwrap()
    }

    #[test]
    fn accounts_opt_in_with_the_kubernetes_provider() {
        assert_eq!(credential(&sa(&[]), "r.example").unwrap(), None);
        let plain = credential(&sa(&[(PROVIDER, "kubernetes")]), "r.example:5000")
            .unwrap()
            .unwrap();
        assert_eq!(
            plain,
            TokenCredential {
                audiences: vec!["r.example:5000".into()],
                default_audience: true,
                expiration_seconds: None,
                username: None,
            }
        );
        let full = credential(
            &sa(&[
                (PROVIDER, "kubernetes"),
                (TYPE, "jwt"),
                (AUDIENCES, "https://zot.example, harbor "),
                (EXPIRATION, "900"),
                (USERNAME, "flux"),
            ]),
            "r.example",
        )
        .unwrap()
        .unwrap();
        assert_eq!(full.audiences, ["https://zot.example", "harbor"]);
        assert_eq!(full.expiration_seconds, Some(900));
        assert_eq!(full.username.as_deref(), Some("flux"));
    }

    #[test]
    fn configuration_errors_name_the_annotation() {
        let err = |a: &[(&str, &str)]| credential(&sa(a), "r").unwrap_err();
        assert!(
            err(&[(PROVIDER, "spiffe")]).contains("credential provider 'spiffe' not implemented")
        );
        assert!(
            err(&[(PROVIDER, "kubernetes"), (TYPE, "x509")])
                .contains("unsupported credential type 'x509'")
        );
        assert!(err(&[(PROVIDER, "kubernetes"), (AUDIENCES, " , ")]).contains(AUDIENCES));
        for bad in ["60", "ten", "-1", "4294967297"] {
            let e = err(&[(PROVIDER, "kubernetes"), (EXPIRATION, bad)]);
            assert!(
                e.contains(&format!("invalid {EXPIRATION} annotation: '{bad}'")),
                "{e}"
            );
        }
    }
}
