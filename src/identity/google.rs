//! Google OAuth access tokens for given scopes (Cloud Storage, Artifact Registry): a service
//! account's JSON key, the GKE/GCE metadata server, or a ServiceAccount's token exchanged at
//! Google's STS (workload identity federation), optionally for a Google service account's token.

use serde::Deserialize;

use super::auth::{self, Token, cached_token, rs256_jwt, rsa_key};
use super::workload::{self, Identity};
use crate::transport::{answer_text, error_chain, token_answer};

pub const CLOUD_PLATFORM_SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";
pub const USERINFO_EMAIL_SCOPE: &str = "https://www.googleapis.com/auth/userinfo.email";
const STS_TOKEN_URL: &str = "https://sts.googleapis.com/v1/token";
/// Flux's checks of the two annotations.
const SERVICE_ACCOUNT_PATTERN: &str =
    "^[a-zA-Z0-9-]{1,100}@[a-zA-Z0-9-]{1,100}\\.iam\\.gserviceaccount\\.com$";
const PROVIDER_PATTERN: &str =
    "^projects/\\d{1,30}/locations/global/workloadIdentityPools/[^/]{1,100}/providers/[^/]{1,100}$";

#[derive(Clone)]
pub enum GoogleCredential {
    ServiceAccount(ServiceAccountKey),
    /// The metadata server of the node (GKE workload identity, GCE service account).
    Metadata,
    /// A ServiceAccount's token exchanged at Google's STS (workload identity federation), then,
    /// with `iam.gke.io/gcp-service-account`, for that Google service account's token.
    ObjectWorkloadIdentity {
        identity: Identity,
        /// `projects/<n>/locations/global/workloadIdentityPools/<pool>/providers/<p>` from the
        /// `gcp.auth.fluxcd.io/workload-identity-provider` annotation; GKE's when absent.
        provider: Option<String>,
        impersonate: Option<String>,
    },
}

/// The fields of a service-account JSON key that a token needs.
#[derive(Clone, Deserialize)]
pub struct ServiceAccountKey {
    client_email: String,
    private_key: String,
    #[serde(default = "default_token_uri")]
    token_uri: String,
}

fn default_token_uri() -> String {
    "https://oauth2.googleapis.com/token".into()
}

impl ServiceAccountKey {
    pub fn parse(json: &[u8]) -> Result<Self, String> {
        let key: ServiceAccountKey = serde_json::from_slice(json)
            .map_err(|e| format!("invalid service account JSON: {e}"))?;
        rsa_key(&key.private_key).map_err(|e| format!("service account private_key: {e}"))?;
        Ok(key)
    }
}

impl GoogleCredential {
    /// The controller's own identity: the key `GOOGLE_APPLICATION_CREDENTIALS` names, else
    /// the metadata server, as Google's default chain.
    pub fn from_environment() -> Result<GoogleCredential, String> {
        match std::env::var("GOOGLE_APPLICATION_CREDENTIALS") {
            Ok(path) if !path.is_empty() => {
                let json = std::fs::read(&path)
                    .map_err(|e| format!("reading GOOGLE_APPLICATION_CREDENTIALS {path}: {e}"))?;
                ServiceAccountKey::parse(&json).map(GoogleCredential::ServiceAccount)
            }
            _ => Ok(GoogleCredential::Metadata),
        }
    }

    /// A ServiceAccount's identity: its optional `iam.gke.io/gcp-service-account` and
    /// `gcp.auth.fluxcd.io/workload-identity-provider` annotations, checked as Flux checks
    /// them.
    pub fn for_service_account(
        identity: Identity,
        sa: &k8s_openapi::api::core::v1::ServiceAccount,
    ) -> Result<GoogleCredential, String> {
        let impersonate = workload::annotation(sa, workload::GCP_SERVICE_ACCOUNT);
        if let Some(email) = &impersonate
            && !is_service_account_email(email)
        {
            return Err(format!(
                "failed to get provider identity from service account '{}/{}' annotations: invalid {} annotation: '{email}'. must match {SERVICE_ACCOUNT_PATTERN}",
                identity.namespace,
                identity.name,
                workload::GCP_SERVICE_ACCOUNT
            ));
        }
        let provider = workload::annotation(sa, workload::GCP_PROVIDER);
        if let Some(p) = &provider
            && !is_pool_provider(p)
        {
            return Err(format!(
                "failed to get provider audience: invalid {} annotation: '{p}'. must match {PROVIDER_PATTERN}",
                workload::GCP_PROVIDER
            ));
        }
        Ok(GoogleCredential::ObjectWorkloadIdentity {
            identity,
            provider,
            impersonate,
        })
    }

    fn cache_key(&self, scopes: &[&str]) -> String {
        let scopes = scopes.join(",");
        match self {
            GoogleCredential::ServiceAccount(key) => auth::cache_key(&[
                b"google-key",
                key.client_email.as_bytes(),
                key.private_key.as_bytes(),
                key.token_uri.as_bytes(),
                scopes.as_bytes(),
            ]),
            GoogleCredential::Metadata => auth::cache_key(&[b"google-metadata", scopes.as_bytes()]),
            GoogleCredential::ObjectWorkloadIdentity {
                identity,
                provider,
                impersonate,
            } => {
                identity.cache_key(format!("gcp {provider:?} {impersonate:?} {scopes}").as_bytes())
            }
        }
    }
}

/// `^[a-zA-Z0-9-]{1,100}@[a-zA-Z0-9-]{1,100}\.iam\.gserviceaccount\.com$`
fn is_service_account_email(email: &str) -> bool {
    let part = |s: &str| {
        (1..=100).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    email
        .strip_suffix(".iam.gserviceaccount.com")
        .and_then(|rest| rest.split_once('@'))
        .is_some_and(|(name, project)| part(name) && part(project))
}

/// `^projects/\d{1,30}/locations/global/workloadIdentityPools/[^/]{1,100}/providers/[^/]{1,100}$`
fn is_pool_provider(name: &str) -> bool {
    let segment = |s: &str| (1..=100).contains(&s.chars().count()) && !s.contains('\n');
    match name.split('/').collect::<Vec<_>>().as_slice() {
        [
            "projects",
            number,
            "locations",
            "global",
            "workloadIdentityPools",
            pool,
            "providers",
            provider,
        ] => {
            (1..=30).contains(&number.len())
                && number.bytes().all(|b| b.is_ascii_digit())
                && segment(pool)
                && segment(provider)
        }
        _ => false,
    }
}

/// An access token for `scopes`, cached until shortly before it lapses.
pub async fn access_token(
    http: &reqwest::Client,
    credential: &GoogleCredential,
    scopes: &[&str],
) -> Result<String, String> {
    cached_token(&credential.cache_key(scopes), || async {
        match credential {
            GoogleCredential::ServiceAccount(key) => service_account_token(http, key, scopes).await,
            GoogleCredential::Metadata => metadata_token(http, scopes).await,
            GoogleCredential::ObjectWorkloadIdentity {
                identity,
                provider,
                impersonate,
            } => {
                federated_token(
                    http,
                    identity,
                    provider.as_deref(),
                    impersonate.as_deref(),
                    scopes,
                )
                .await
            }
        }
    })
    .await
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    #[serde(default)]
    expires_in: Option<u64>,
}

impl TokenResponse {
    fn into_token(self) -> Token {
        Token {
            value: self.access_token,
            expires: auth::expiry(self.expires_in),
        }
    }
}

/// OAuth 2.0 JWT-bearer grant with the service account's key.
async fn service_account_token(
    http: &reqwest::Client,
    key: &ServiceAccountKey,
    scopes: &[&str],
) -> Result<Token, String> {
    let now = auth::unix_now();
    let jwt = rs256_jwt(
        &rsa_key(&key.private_key)?,
        &serde_json::json!({"alg": "RS256", "typ": "JWT"}),
        &serde_json::json!({
            "iss": key.client_email,
            "scope": scopes.join(" "),
            "aud": key.token_uri,
            "iat": now,
            "exp": now + 3600,
        }),
    )?;
    let response = http
        .post(&key.token_uri)
        .form(&[
            ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
            ("assertion", jwt.as_str()),
        ])
        .send()
        .await
        .map_err(|e| format!("token request to {}: {}", key.token_uri, error_chain(&e)))?;
    let what = format!("the token request for {}", key.client_email);
    Ok(token_answer::<TokenResponse>(response, &what)
        .await?
        .into_token())
}

/// Workload identity federation: the ServiceAccount's token for the pool's audience,
/// exchanged at Google's STS, and optionally for a Google service account's token.
async fn federated_token(
    http: &reqwest::Client,
    identity: &Identity,
    provider: Option<&str>,
    impersonate: Option<&str>,
    scopes: &[&str],
) -> Result<Token, String> {
    let (kube_audience, sts_audience) = match provider {
        Some(p) => {
            let audience = format!("//iam.googleapis.com/{p}");
            (audience.clone(), audience)
        }
        None => gke_audiences(http)
            .await
            .map_err(|e| format!("failed to get provider audience: {e}"))?,
    };
    let subject = identity.token(&kube_audience).await?;
    // Impersonation asks STS only for what generateAccessToken needs.
    let sts_scope = match impersonate {
        Some(_) => CLOUD_PLATFORM_SCOPE.to_string(),
        None => scopes.join(" "),
    };
    let response = http
        .post(STS_TOKEN_URL)
        .form(&[
            (
                "grant_type",
                "urn:ietf:params:oauth:grant-type:token-exchange",
            ),
            ("audience", sts_audience.as_str()),
            ("scope", sts_scope.as_str()),
            (
                "requested_token_type",
                "urn:ietf:params:oauth:token-type:access_token",
            ),
            ("subject_token_type", "urn:ietf:params:oauth:token-type:jwt"),
            ("subject_token", subject.as_str()),
        ])
        .send()
        .await
        .map_err(|e| format!("Google STS token exchange: {}", error_chain(&e)))?;
    let federated = token_answer::<TokenResponse>(response, "the Google STS token exchange")
        .await?
        .into_token();
    let Some(gsa) = impersonate else {
        return Ok(federated);
    };
    let url = format!(
        "https://iamcredentials.googleapis.com/v1/projects/-/serviceAccounts/{gsa}:generateAccessToken"
    );
    let response = http
        .post(&url)
        .bearer_auth(&federated.value)
        .json(&serde_json::json!({"lifetime": "3600s", "scope": scopes}))
        .send()
        .await
        .map_err(|e| format!("impersonating {gsa}: {}", error_chain(&e)))?;
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Impersonated {
        access_token: String,
    }
    let token: Impersonated = token_answer(response, &format!("impersonating {gsa}")).await?;
    Ok(Token {
        value: token.access_token,
        expires: auth::expiry(None),
    })
}

/// The metadata server: `GCE_METADATA_HOST`, else GKE's and GCE's own.
fn metadata_url(path: &str) -> String {
    let host = std::env::var("GCE_METADATA_HOST")
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "metadata.google.internal".into());
    format!("http://{host}/computeMetadata/v1/{path}")
}

async fn metadata_get(http: &reqwest::Client, path: &str) -> Result<String, String> {
    let response = http
        .get(metadata_url(path))
        .header("Metadata-Flavor", "Google")
        .timeout(std::time::Duration::from_secs(5))
        .send()
        .await
        .map_err(|e| format!("the metadata server is unreachable: {}", error_chain(&e)))?;
    let status = response.status();
    let body = answer_text(response).await;
    match status.is_success() {
        true => Ok(body.trim().to_string()),
        false => Err(format!(
            "the metadata server answered HTTP {} for {path}",
            status.as_u16()
        )),
    }
}

/// On GKE: the identity namespace (`<project>.svc.id.goog`) as the ServiceAccount token's
/// audience, and the cluster's identity provider for the exchange, from the metadata server.
async fn gke_audiences(http: &reqwest::Client) -> Result<(String, String), String> {
    let mut values = Vec::new();
    for (path, what) in [
        ("project/project-id", "project ID"),
        ("instance/attributes/cluster-location", "location"),
        ("instance/attributes/cluster-name", "name"),
    ] {
        let value = metadata_get(http, path)
            .await
            .and_then(|v| match v.is_empty() {
                true => Err("empty value".to_string()),
                false => Ok(v),
            })
            .map_err(|e| {
                format!(
                    "failed to get GKE cluster {what} from the metadata service (off GKE, set the '{}' annotation): {e}",
                    workload::GCP_PROVIDER
                )
            })?;
        values.push(value);
    }
    let [project, location, cluster] = values.as_slice() else {
        return Err("the metadata server's cluster attributes are incomplete".into());
    };
    let namespace = format!("{project}.svc.id.goog");
    let provider = format!(
        "https://container.googleapis.com/v1/projects/{project}/locations/{location}/clusters/{cluster}"
    );
    Ok((
        namespace.clone(),
        format!("identitynamespace:{namespace}:{provider}"),
    ))
}

async fn metadata_token(http: &reqwest::Client, scopes: &[&str]) -> Result<Token, String> {
    let path = format!(
        "instance/service-accounts/default/token?scopes={}",
        scopes.join(",")
    );
    let body = metadata_get(http, &path)
        .await
        .map_err(|e| format!("no GCP credentials: no GOOGLE_APPLICATION_CREDENTIALS, and {e}"))?;
    let token: TokenResponse =
        serde_json::from_str(&body).map_err(|e| format!("metadata server token: {e}"))?;
    if token.access_token.is_empty() || token.expires_in == Some(0) {
        return Err("incomplete token received from metadata".into());
    }
    Ok(token.into_token())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_account_keys_need_a_usable_private_key() {
        let err = ServiceAccountKey::parse(br#"{"client_email":"a@b","private_key":"nope"}"#)
            .err()
            .unwrap();
        assert!(err.contains("private_key"), "{err}");
        assert!(ServiceAccountKey::parse(b"{").is_err());
    }

    #[test]
    fn annotations_are_checked_as_flux_checks_them() {
        assert!(is_service_account_email(
            "reader@my-project.iam.gserviceaccount.com"
        ));
        for bad in [
            "reader@my-project.iam.gserviceaccount.com.evil",
            "re.ader@my-project.iam.gserviceaccount.com",
            "@my-project.iam.gserviceaccount.com",
            "reader@.iam.gserviceaccount.com",
            "reader",
        ] {
            assert!(!is_service_account_email(bad), "{bad}");
        }
        assert!(is_pool_provider(
            "projects/123/locations/global/workloadIdentityPools/pool/providers/kube"
        ));
        for bad in [
            "//iam.googleapis.com/projects/123/locations/global/workloadIdentityPools/p/providers/k",
            "projects/abc/locations/global/workloadIdentityPools/p/providers/k",
            "projects/123/locations/europe/workloadIdentityPools/p/providers/k",
            "projects/123/locations/global/workloadIdentityPools//providers/k",
            "projects/123/locations/global/workloadIdentityPools/p/providers/k/extra",
        ] {
            assert!(!is_pool_provider(bad), "{bad}");
        }
    }
}
