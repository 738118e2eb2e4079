//! Google OAuth access tokens for given scopes (Cloud Storage, Artifact Registry): a service
//! account's JSON key, the controller's external account (workload identity federation from a
//! token file or URL), the GKE/GCE metadata server, or a ServiceAccount's token exchanged at
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
    /// The controller's workload identity federation (`"type": "external_account"`).
    ExternalAccount(Box<ExternalAccount>),
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

/// The controller's workload identity federation, as `gcloud iam workload-identity-pools
/// create-cred-config` writes it: a subject token from a file (a projected ServiceAccount
/// token, re-read on every exchange so rotation is used) or a URL, exchanged at `token_url`,
/// optionally for a Google service account's token.
#[derive(Clone, Deserialize)]
pub struct ExternalAccount {
    audience: String,
    subject_token_type: String,
    #[serde(default = "default_sts_url")]
    token_url: String,
    credential_source: CredentialSource,
    #[serde(default)]
    service_account_impersonation_url: Option<String>,
}

#[derive(Clone, Deserialize)]
struct CredentialSource {
    #[serde(default)]
    file: Option<String>,
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    headers: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    format: Option<SourceFormat>,
    #[serde(default)]
    environment_id: Option<String>,
    #[serde(default)]
    executable: Option<serde_json::Value>,
}

#[derive(Clone, Deserialize)]
struct SourceFormat {
    #[serde(rename = "type", default)]
    kind: Option<String>,
    #[serde(default)]
    subject_token_field_name: Option<String>,
}

fn default_sts_url() -> String {
    STS_TOKEN_URL.into()
}

/// A subject token file is a JWT; anything larger is not one.
const SUBJECT_TOKEN_LIMIT: u64 = 64 * 1024;

impl ExternalAccount {
    pub fn parse(json: &[u8]) -> Result<Self, String> {
        let account: ExternalAccount = serde_json::from_slice(json)
            .map_err(|e| format!("invalid external_account JSON: {e}"))?;
        let source = &account.credential_source;
        if source.environment_id.is_some() || source.executable.is_some() {
            return Err("external_account: only file and url credential sources are supported (AWS-sourced and executable-sourced credentials are not); a projected ServiceAccount token file is the Kubernetes one".into());
        }
        if source.file.is_some() == source.url.is_some() {
            return Err(
                "external_account: credential_source needs exactly one of file and url".into(),
            );
        }
        if let Some(format) = &source.format {
            match format.kind.as_deref() {
                None | Some("text") => {}
                Some("json") if format.subject_token_field_name.is_some() => {}
                Some("json") => {
                    return Err("external_account: a json credential_source format needs subject_token_field_name".into());
                }
                Some(other) => {
                    return Err(format!(
                        "external_account: unknown credential_source format type {other:?} (text or json)"
                    ));
                }
            }
        }
        for url in std::iter::once(&account.token_url)
            .chain(account.service_account_impersonation_url.as_ref())
        {
            if !url.starts_with("https://") {
                return Err(format!(
                    "external_account: {url} is not an https URL; the exchange carries credentials"
                ));
            }
        }
        Ok(account)
    }

    /// The subject token, read afresh: a rotated file or URL answer is used at once.
    async fn subject_token(&self, http: &reqwest::Client) -> Result<String, String> {
        let source = &self.credential_source;
        let raw = match (&source.file, &source.url) {
            (Some(path), _) => read_bounded(path)
                .map_err(|e| format!("reading the subject token file {path}: {e}"))?,
            (None, Some(url)) => {
                let mut request = http.get(url);
                for (name, value) in &source.headers {
                    request = request.header(name, value);
                }
                let response = request
                    .send()
                    .await
                    .map_err(|e| format!("the subject token URL {url}: {}", error_chain(&e)))?;
                let status = response.status();
                let body = answer_text(response).await;
                if !status.is_success() {
                    return Err(format!(
                        "the subject token URL {url} answered HTTP {}",
                        status.as_u16()
                    ));
                }
                body
            }
            (None, None) => return Err("external_account: no credential source".into()),
        };
        let field = source
            .format
            .as_ref()
            .filter(|f| f.kind.as_deref() == Some("json"))
            .and_then(|f| f.subject_token_field_name.as_deref());
        let token = match field {
            None => raw.trim().to_string(),
            Some(field) => serde_json::from_str::<serde_json::Value>(&raw)
                .ok()
                .and_then(|v| v.get(field)?.as_str().map(str::to_string))
                .ok_or_else(|| format!("the subject token source has no string field {field:?}"))?,
        };
        match token.is_empty() {
            true => Err("the subject token is empty".into()),
            false => Ok(token),
        }
    }
}

fn read_bounded(path: &str) -> std::io::Result<String> {
    use std::io::Read;
    let mut text = String::new();
    std::fs::File::open(path)?
        .take(SUBJECT_TOKEN_LIMIT + 1)
        .read_to_string(&mut text)?;
    match text.len() as u64 > SUBJECT_TOKEN_LIMIT {
        true => Err(std::io::Error::other(format!(
            "larger than {SUBJECT_TOKEN_LIMIT} bytes"
        ))),
        false => Ok(text),
    }
}

impl GoogleCredential {
    /// The controller's own identity: the credentials `GOOGLE_APPLICATION_CREDENTIALS` names
    /// (a service account key or an external account), else the metadata server, as Google's
    /// default chain.
    pub fn from_environment() -> Result<GoogleCredential, String> {
        match std::env::var("GOOGLE_APPLICATION_CREDENTIALS") {
            Ok(path) if !path.is_empty() => {
                let json = std::fs::read(&path)
                    .map_err(|e| format!("reading GOOGLE_APPLICATION_CREDENTIALS {path}: {e}"))?;
                Self::from_json(&json)
                    .map_err(|e| format!("GOOGLE_APPLICATION_CREDENTIALS {path}: {e}"))
            }
            _ => Ok(GoogleCredential::Metadata),
        }
    }

    /// A credentials file by its `type`.
    fn from_json(json: &[u8]) -> Result<GoogleCredential, String> {
        #[derive(Deserialize)]
        struct Kind {
            #[serde(rename = "type", default)]
            kind: Option<String>,
        }
        let kind: Kind =
            serde_json::from_slice(json).map_err(|e| format!("invalid credentials JSON: {e}"))?;
        match kind.kind.as_deref() {
            None | Some("service_account") => {
                ServiceAccountKey::parse(json).map(GoogleCredential::ServiceAccount)
            }
            Some("external_account") => {
                ExternalAccount::parse(json).map(|a| GoogleCredential::ExternalAccount(Box::new(a)))
            }
            Some(other) => Err(format!(
                "credentials of type {other:?} are not a workload identity (service_account or external_account)"
            )),
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
            GoogleCredential::ExternalAccount(account) => {
                let source = &account.credential_source;
                auth::cache_key(&[
                    b"google-external",
                    account.audience.as_bytes(),
                    account.token_url.as_bytes(),
                    source.file.as_deref().unwrap_or_default().as_bytes(),
                    source.url.as_deref().unwrap_or_default().as_bytes(),
                    account
                        .service_account_impersonation_url
                        .as_deref()
                        .unwrap_or_default()
                        .as_bytes(),
                    scopes.as_bytes(),
                ])
            }
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
            GoogleCredential::ExternalAccount(account) => {
                external_account_token(http, account, scopes).await
            }
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
    let exchange = Exchange {
        token_url: STS_TOKEN_URL,
        audience: &sts_audience,
        subject_token_type: JWT_TOKEN_TYPE,
        subject: &subject,
    };
    let impersonation = impersonate.map(|gsa| {
        format!(
            "https://iamcredentials.googleapis.com/v1/projects/-/serviceAccounts/{gsa}:generateAccessToken"
        )
    });
    exchange_and_impersonate(http, exchange, impersonation.as_deref(), scopes).await
}

/// The controller's external account: its subject token exchanged at its STS, then optionally
/// for its service account's token.
async fn external_account_token(
    http: &reqwest::Client,
    account: &ExternalAccount,
    scopes: &[&str],
) -> Result<Token, String> {
    let subject = account.subject_token(http).await?;
    let exchange = Exchange {
        token_url: &account.token_url,
        audience: &account.audience,
        subject_token_type: &account.subject_token_type,
        subject: &subject,
    };
    let impersonation = account.service_account_impersonation_url.as_deref();
    exchange_and_impersonate(http, exchange, impersonation, scopes).await
}

const JWT_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:jwt";

/// An RFC 8693 token exchange at Google's STS.
struct Exchange<'a> {
    token_url: &'a str,
    audience: &'a str,
    subject_token_type: &'a str,
    subject: &'a str,
}

async fn exchange_and_impersonate(
    http: &reqwest::Client,
    exchange: Exchange<'_>,
    impersonation_url: Option<&str>,
    scopes: &[&str],
) -> Result<Token, String> {
    // Impersonation asks STS only for what generateAccessToken needs.
    let sts_scope = match impersonation_url {
        Some(_) => CLOUD_PLATFORM_SCOPE.to_string(),
        None => scopes.join(" "),
    };
    let response = http
        .post(exchange.token_url)
        .form(&[
            (
                "grant_type",
                "urn:ietf:params:oauth:grant-type:token-exchange",
            ),
            ("audience", exchange.audience),
            ("scope", sts_scope.as_str()),
            (
                "requested_token_type",
                "urn:ietf:params:oauth:token-type:access_token",
            ),
            ("subject_token_type", exchange.subject_token_type),
            ("subject_token", exchange.subject),
        ])
        .send()
        .await
        .map_err(|e| format!("Google STS token exchange: {}", error_chain(&e)))?;
    let federated = token_answer::<TokenResponse>(response, "the Google STS token exchange")
        .await?
        .into_token();
    let Some(url) = impersonation_url else {
        return Ok(federated);
    };
    let who = impersonated_account(url);
    let response = http
        .post(url)
        .bearer_auth(&federated.value)
        .json(&serde_json::json!({"lifetime": "3600s", "scope": scopes}))
        .send()
        .await
        .map_err(|e| format!("impersonating {who}: {}", error_chain(&e)))?;
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Impersonated {
        access_token: String,
    }
    let token: Impersonated = token_answer(response, &format!("impersonating {who}")).await?;
    Ok(Token {
        value: token.access_token,
        expires: auth::expiry(None),
    })
}

/// The service account an impersonation URL names, for messages.
fn impersonated_account(url: &str) -> &str {
    url.rsplit_once("/serviceAccounts/")
        .and_then(|(_, rest)| rest.split_once(':'))
        .map_or(url, |(email, _)| email)
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

    fn external(extra: serde_json::Value) -> Result<GoogleCredential, String> {
        let mut json = serde_json::json!({
            "type": "external_account",
            "audience": "//iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/p/providers/k",
            "subject_token_type": "urn:ietf:params:oauth:token-type:jwt",
            "credential_source": {"file": "/var/run/secrets/token"},
        });
        json.as_object_mut()
            .unwrap()
            .extend(extra.as_object().cloned().unwrap_or_default());
        GoogleCredential::from_json(json.to_string().as_bytes())
    }

    #[test]
    fn external_accounts_are_read_as_gcloud_writes_them() {
        let Ok(GoogleCredential::ExternalAccount(account)) = external(serde_json::json!({})) else {
            panic!("an external account");
        };
        assert_eq!(account.token_url, STS_TOKEN_URL);
        assert!(account.service_account_impersonation_url.is_none());
        let with_url = external(serde_json::json!({"credential_source": {
            "url": "https://idp.example/token", "headers": {"Metadata": "True"},
            "format": {"type": "json", "subject_token_field_name": "access_token"}}}));
        assert!(matches!(with_url, Ok(GoogleCredential::ExternalAccount(_))));
        for (extra, why) in [
            (
                serde_json::json!({"credential_source": {"environment_id": "aws1"}}),
                "AWS-sourced",
            ),
            (
                serde_json::json!({"credential_source": {"executable": {"command": "x"}}}),
                "executable",
            ),
            (
                serde_json::json!({"credential_source": {}}),
                "exactly one of file and url",
            ),
            (
                serde_json::json!({"credential_source": {"file": "f", "url": "https://u"}}),
                "exactly one",
            ),
            (
                serde_json::json!({"credential_source": {"file": "f", "format": {"type": "json"}}}),
                "subject_token_field_name",
            ),
            (
                serde_json::json!({"credential_source": {"file": "f", "format": {"type": "xml"}}}),
                "unknown credential_source format",
            ),
            (
                serde_json::json!({"token_url": "http://sts.example/v1/token"}),
                "not an https URL",
            ),
            (
                serde_json::json!({"service_account_impersonation_url": "http://iam.example/x"}),
                "not an https URL",
            ),
            (
                serde_json::json!({"audience": 5}),
                "invalid external_account JSON",
            ),
        ] {
            let err = external(extra).err().unwrap_or_default();
            assert!(err.contains(why), "{why}: {err}");
        }
        let err = GoogleCredential::from_json(br#"{"type":"authorized_user"}"#)
            .err()
            .unwrap_or_default();
        assert!(err.contains("authorized_user"), "{err}");
    }

    #[test]
    fn subject_tokens_are_trimmed_bounded_and_read_afresh() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        let account = |format: serde_json::Value| {
            let Ok(GoogleCredential::ExternalAccount(a)) = external(serde_json::json!({
                "credential_source": {"file": path.to_str().unwrap(), "format": format}}))
            else {
                panic!("an external account")
            };
            a
        };
        let http = reqwest::Client::new();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let text = account(serde_json::json!({"type": "text"}));
        std::fs::write(&path, "first\n").unwrap();
        assert_eq!(rt.block_on(text.subject_token(&http)).unwrap(), "first");
        std::fs::write(&path, "rotated").unwrap();
        assert_eq!(rt.block_on(text.subject_token(&http)).unwrap(), "rotated");
        let json = account(serde_json::json!({"type": "json", "subject_token_field_name": "t"}));
        std::fs::write(&path, r#"{"t":"from-json"}"#).unwrap();
        assert_eq!(rt.block_on(json.subject_token(&http)).unwrap(), "from-json");
        std::fs::write(&path, r#"{"other":"x"}"#).unwrap();
        assert!(rt.block_on(json.subject_token(&http)).is_err());
        std::fs::write(&path, "x".repeat(SUBJECT_TOKEN_LIMIT as usize + 1)).unwrap();
        let err = rt.block_on(text.subject_token(&http)).unwrap_err();
        assert!(err.contains("larger than"), "{err}");
        std::fs::write(&path, "  \n").unwrap();
        assert!(rt.block_on(text.subject_token(&http)).is_err());
    }

    #[test]
    fn impersonation_urls_name_their_account() {
        assert_eq!(
            impersonated_account(
                "https://iamcredentials.googleapis.com/v1/projects/-/serviceAccounts/ci@p.iam.gserviceaccount.com:generateAccessToken"
            ),
            "ci@p.iam.gserviceaccount.com"
        );
        assert_eq!(impersonated_account("https://odd"), "https://odd");
    }

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
