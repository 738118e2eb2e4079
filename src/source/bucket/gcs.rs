//! Google Cloud Storage through its JSON API (provider `gcp`): bucket metadata, object listing with
//! the `etag` attribute Flux indexes, and media downloads bound to the listed generation, with a
//! service-account key or else Google's default chain (`GOOGLE_APPLICATION_CREDENTIALS`, then the
//! GKE/GCE metadata server) as credentials.

use std::path::Path;

use serde::Deserialize;

use super::object::{
    BucketError, Fetched, ListBudget, Listed, PageEntries, read_body, response_error, write_body,
};
use crate::identity::auth::{self, Token, cached_token, rs256_jwt, rsa_key};
use crate::transport::answer_text;
use crate::transport::error_chain;
use crate::util::uri_encode;

pub const GOOGLE_ENDPOINT: &str = "https://storage.googleapis.com";
const READ_ONLY_SCOPE: &str = "https://www.googleapis.com/auth/devstorage.read_only";
const LIST_PAGE: u32 = 1000;
/// One object's `etag` and `generation`, as JSON.
const MAX_ATTRIBUTES_BYTES: u64 = 64 << 10;

#[derive(Clone)]
pub enum GcsAuth {
    /// Emulators and public buckets.
    Anonymous,
    ServiceAccount(ServiceAccountKey),
    /// The metadata server of the node (GKE workload identity, GCE service account).
    Metadata,
    /// A ServiceAccount's token exchanged at Google's STS (workload identity federation), then,
    /// with `iam.gke.io/gcp-service-account`, for that Google service account's token.
    ObjectWorkloadIdentity {
        identity: crate::identity::workload::Identity,
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

pub struct GcsClient {
    http: reqwest::Client,
    /// Fetches the token: the controller's own transport when it is the controller's.
    credential_http: reqwest::Client,
    base: String,
    bucket: String,
    auth: GcsAuth,
}

/// The base URL: Flux ignores `spec.endpoint` for GCP and always talks to Google; driftless
/// honours any other endpoint (an emulator, a private gateway) and `STORAGE_EMULATOR_HOST`.
pub fn base_url(endpoint: &str, insecure: bool) -> String {
    if let Ok(host) = std::env::var("STORAGE_EMULATOR_HOST")
        && !host.is_empty()
    {
        return with_scheme(&host, true);
    }
    let trimmed = endpoint.trim_end_matches('/');
    let is_google = matches!(
        trimmed.split_once("://").map_or(trimmed, |(_, h)| h),
        "" | "storage.googleapis.com" | "www.googleapis.com"
    );
    if is_google {
        GOOGLE_ENDPOINT.into()
    } else {
        with_scheme(trimmed, insecure)
    }
}

fn with_scheme(host: &str, insecure: bool) -> String {
    if host.contains("://") {
        host.trim_end_matches('/').to_string()
    } else if insecure {
        format!("http://{host}")
    } else {
        format!("https://{host}")
    }
}

impl GcsClient {
    pub fn new(http: reqwest::Client, base: String, bucket: &str, auth: GcsAuth) -> Self {
        GcsClient {
            credential_http: http.clone(),
            http,
            base,
            bucket: bucket.to_string(),
            auth,
        }
    }

    /// The token is fetched through `http` instead of the bucket's own client.
    pub fn with_credential_http(mut self, http: reqwest::Client) -> Self {
        self.credential_http = http;
        self
    }

    async fn get(&self, url: &str) -> Result<reqwest::Response, BucketError> {
        let mut request = self.http.get(url);
        if let Some(token) = self.token().await? {
            request = request.bearer_auth(token);
        }
        request
            .send()
            .await
            .map_err(|e| BucketError::request(format!("GET {url}: {}", error_chain(&e))))
    }

    async fn token(&self) -> Result<Option<String>, BucketError> {
        let token = match &self.auth {
            GcsAuth::Anonymous => return Ok(None),
            GcsAuth::ServiceAccount(key) => {
                let cache = auth::cache_key(&[
                    b"gcs-sa",
                    key.client_email.as_bytes(),
                    key.private_key.as_bytes(),
                ]);
                cached_token(&cache, || service_account_token(&self.credential_http, key)).await
            }
            GcsAuth::Metadata => {
                cached_token(&auth::cache_key(&[b"gcs-metadata"]), || {
                    metadata_token(&self.credential_http)
                })
                .await
            }
            GcsAuth::ObjectWorkloadIdentity {
                identity,
                provider,
                impersonate,
            } => {
                let key =
                    identity.cache_key(format!("gcp {provider:?} {impersonate:?}").as_bytes());
                cached_token(&key, || {
                    federated_token(
                        &self.credential_http,
                        identity,
                        provider.as_deref(),
                        impersonate.as_deref(),
                    )
                })
                .await
            }
        };
        token.map(Some).map_err(BucketError::request)
    }

    fn bucket_url(&self) -> String {
        format!(
            "{}/storage/v1/b/{}",
            self.base,
            uri_encode(&self.bucket, false)
        )
    }

    pub async fn bucket_exists(&self) -> Result<bool, BucketError> {
        let response = self
            .get(&format!("{}?fields=name", self.bucket_url()))
            .await?;
        match response.status() {
            s if s.is_success() => Ok(true),
            reqwest::StatusCode::NOT_FOUND => Ok(false),
            _ => Err(response_error("get bucket attributes", response).await),
        }
    }

    pub async fn list(
        &self,
        prefix: &str,
        budget: &mut ListBudget,
        visit: &mut (dyn FnMut(Vec<Listed>) -> Result<(), BucketError> + Send),
    ) -> Result<(), BucketError> {
        let mut page_token: Option<String> = None;
        loop {
            let mut url = format!(
                "{}/o?maxResults={LIST_PAGE}&fields=items(name,etag,size,generation),nextPageToken",
                self.bucket_url()
            );
            if !prefix.is_empty() {
                url.push_str(&format!("&prefix={}", uri_encode(prefix, false)));
            }
            if let Some(t) = &page_token {
                url.push_str(&format!("&pageToken={}", uri_encode(t, false)));
            }
            let response = self.get(&url).await?;
            if !response.status().is_success() {
                return Err(response_error("list objects", response).await);
            }
            match budget.take_page(response, list_page, visit).await? {
                Some(next) => page_token = Some(next),
                None => return Ok(()),
            }
        }
    }

    /// The download is bound to the listed generation; when the object changed in between
    /// (or nothing was listed), its current attributes say which version is taken.
    pub async fn fetch(
        &self,
        key: &str,
        listed: Option<(&str, &str)>,
        dest: &Path,
        max_bytes: u64,
    ) -> Result<Fetched, BucketError> {
        let object_url = format!("{}/o/{}", self.bucket_url(), uri_encode(key, false));
        let mut etag = listed.map(|(e, _)| e.to_string()).unwrap_or_default();
        let generation = listed.map(|(_, g)| g);
        let mut url = format!("{object_url}?alt=media");
        if let Some(g) = generation {
            url.push_str(&format!("&ifGenerationMatch={g}"));
        }
        let mut response = self.get(&url).await?;
        if response.status() == reqwest::StatusCode::PRECONDITION_FAILED || etag.is_empty() {
            if response.status() == reqwest::StatusCode::NOT_FOUND {
                return Ok(Fetched::NotFound);
            }
            let attrs = self
                .get(&format!("{object_url}?fields=etag,generation"))
                .await?;
            match attrs.status() {
                reqwest::StatusCode::NOT_FOUND => return Ok(Fetched::NotFound),
                s if !s.is_success() => {
                    return Err(
                        response_error(&format!("get object '{key}' attributes"), attrs).await,
                    );
                }
                _ => {}
            }
            let body = read_body(attrs, MAX_ATTRIBUTES_BYTES, "object attributes").await?;
            let current: ObjectAttrs = serde_json::from_slice(&body)
                .map_err(|e| BucketError::request(format!("invalid object attributes: {e}")))?;
            etag = current.etag;
            if !response.status().is_success() {
                response = self
                    .get(&format!(
                        "{object_url}?alt=media&ifGenerationMatch={}",
                        current.generation
                    ))
                    .await?;
            }
        }
        match response.status() {
            reqwest::StatusCode::NOT_FOUND => Ok(Fetched::NotFound),
            s if s.is_success() => {
                let bytes = write_body(response, dest, max_bytes).await?;
                Ok(Fetched::Written { etag, bytes })
            }
            _ => Err(response_error(&format!("download object '{key}'"), response).await),
        }
    }
}

/// One objects.list answer: its objects, and the token of the next page when there is one.
#[doc(hidden)]
pub fn list_page(body: &[u8]) -> Result<(Vec<Listed>, Option<String>), BucketError> {
    let page: ObjectList = serde_json::from_slice(body)
        .map_err(|e| BucketError::request(format!("invalid object listing: {e}")))?;
    let entries = page
        .items
        .0
        .into_iter()
        .map(|o| Listed {
            size: o.size.parse().unwrap_or_default(),
            etag: o.etag,
            version: (!o.generation.is_empty()).then_some(o.generation),
            key: o.name,
        })
        .collect();
    Ok((entries, page.next_page_token.filter(|t| !t.is_empty())))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ObjectList {
    #[serde(default)]
    items: PageEntries<ObjectAttrs>,
    #[serde(default)]
    next_page_token: Option<String>,
}

#[derive(Deserialize)]
struct ObjectAttrs {
    #[serde(default)]
    name: String,
    #[serde(default)]
    etag: String,
    #[serde(default)]
    size: String,
    #[serde(default)]
    generation: String,
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
) -> Result<Token, String> {
    let now = auth::unix_now();
    let jwt = rs256_jwt(
        &rsa_key(&key.private_key)?,
        &serde_json::json!({"alg": "RS256", "typ": "JWT"}),
        &serde_json::json!({
            "iss": key.client_email,
            "scope": READ_ONLY_SCOPE,
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
    if !response.status().is_success() {
        let status = response.status().as_u16();
        let body = answer_text(response).await;
        return Err(format!(
            "token request for {} refused (HTTP {status}): {}",
            key.client_email,
            crate::util::truncate(&body, 200)
        ));
    }
    Ok(
        serde_json::from_str::<TokenResponse>(&answer_text(response).await)
            .map_err(|e| e.to_string())?
            .into_token(),
    )
}

/// Workload identity federation: the ServiceAccount's token for the pool's audience,
/// exchanged at Google's STS, and optionally for a Google service account's token.
async fn federated_token(
    http: &reqwest::Client,
    identity: &crate::identity::workload::Identity,
    provider: Option<&str>,
    impersonate: Option<&str>,
) -> Result<Token, String> {
    let (kube_audience, sts_audience) = match provider {
        Some(p) => {
            let audience = format!(
                "//iam.googleapis.com/{}",
                p.trim_start_matches("//iam.googleapis.com/")
            );
            (audience.clone(), audience)
        }
        None => gke_audiences(http).await?,
    };
    let subject = identity.token(&kube_audience).await?;
    let response = http
        .post("https://sts.googleapis.com/v1/token")
        .form(&[
            (
                "grant_type",
                "urn:ietf:params:oauth:grant-type:token-exchange",
            ),
            ("audience", sts_audience.as_str()),
            ("scope", "https://www.googleapis.com/auth/cloud-platform"),
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
    if !response.status().is_success() {
        let status = response.status().as_u16();
        let body = response.text().await.unwrap_or_default();
        return Err(format!(
            "Google STS refused the token exchange (HTTP {status}): {}",
            crate::util::truncate(&body, 200)
        ));
    }
    let federated = response
        .json::<TokenResponse>()
        .await
        .map_err(|e| e.to_string())?
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
        .json(&serde_json::json!({"scope": [READ_ONLY_SCOPE]}))
        .send()
        .await
        .map_err(|e| format!("impersonating {gsa}: {}", error_chain(&e)))?;
    if !response.status().is_success() {
        let status = response.status().as_u16();
        return Err(format!("impersonating {gsa} was refused (HTTP {status})"));
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Impersonated {
        access_token: String,
    }
    let token: Impersonated = response.json().await.map_err(|e| e.to_string())?;
    Ok(Token {
        value: token.access_token,
        expires: auth::expiry(None),
    })
}

/// On GKE: the identity namespace (`<project>.svc.id.goog`) as the ServiceAccount token's
/// audience, and the cluster's identity provider for the exchange, from the metadata server.
async fn gke_audiences(http: &reqwest::Client) -> Result<(String, String), String> {
    let host =
        std::env::var("GCE_METADATA_HOST").unwrap_or_else(|_| "metadata.google.internal".into());
    let get = |path: &str| {
        http.get(format!("http://{host}/computeMetadata/v1/{path}"))
            .header("Metadata-Flavor", "Google")
            .timeout(std::time::Duration::from_secs(5))
            .send()
    };
    let mut values = Vec::new();
    for path in [
        "project/project-id",
        "instance/attributes/cluster-location",
        "instance/attributes/cluster-name",
    ] {
        let value = get(path)
            .await
            .and_then(|r| r.error_for_status())
            .map_err(|e| format!("object-level workload identity on GCP needs GKE's metadata server or the '{}' annotation: {}", crate::identity::workload::GCP_PROVIDER, error_chain(&e)))?
            .text()
            .await
            .map_err(|e| e.to_string())?;
        values.push(value.trim().to_string());
    }
    let (project, location, cluster) = (&values[0], &values[1], &values[2]);
    let namespace = format!("{project}.svc.id.goog");
    let provider = format!(
        "https://container.googleapis.com/v1/projects/{project}/locations/{location}/clusters/{cluster}"
    );
    Ok((
        namespace.clone(),
        format!("identitynamespace:{namespace}:{provider}"),
    ))
}

async fn metadata_token(http: &reqwest::Client) -> Result<Token, String> {
    let host =
        std::env::var("GCE_METADATA_HOST").unwrap_or_else(|_| "metadata.google.internal".into());
    let url = format!(
        "http://{host}/computeMetadata/v1/instance/service-accounts/default/token?scopes={READ_ONLY_SCOPE}"
    );
    let response = http
        .get(&url)
        .header("Metadata-Flavor", "Google")
        .timeout(std::time::Duration::from_secs(5))
        .send()
        .await
        .map_err(|e| format!("no GCP credentials: no secretRef, no GOOGLE_APPLICATION_CREDENTIALS, and the metadata server is unreachable: {}", error_chain(&e)))?;
    if !response.status().is_success() {
        return Err(format!(
            "metadata server token request: HTTP {}",
            response.status().as_u16()
        ));
    }
    Ok(response
        .json::<TokenResponse>()
        .await
        .map_err(|e| e.to_string())?
        .into_token())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn google_endpoints_go_to_google_and_others_are_honoured() {
        assert_eq!(base_url("storage.googleapis.com", false), GOOGLE_ENDPOINT);
        assert_eq!(
            base_url("https://storage.googleapis.com/", false),
            GOOGLE_ENDPOINT
        );
        assert_eq!(base_url("127.0.0.1:4443", true), "http://127.0.0.1:4443");
        assert_eq!(
            base_url("http://127.0.0.1:4443", false),
            "http://127.0.0.1:4443"
        );
        assert_eq!(base_url("gcs.internal", false), "https://gcs.internal");
    }

    /// GCS pages parse through the same entry bound as S3 and Azure pages.
    #[test]
    fn listing_pages_parse_and_refuse_too_many_items() {
        let page: ObjectList = serde_json::from_str(
            r#"{"items":[{"name":"a.yaml","etag":"CJ=","size":"3","generation":"7"}],"nextPageToken":"n"}"#,
        )
        .unwrap();
        assert_eq!(page.items.0[0].name, "a.yaml");
        assert_eq!(page.next_page_token.as_deref(), Some("n"));
        let item = r#"{"name":"k","etag":"e"}"#;
        let items = vec![item; crate::source::bucket::object::MAX_PAGE_ENTRIES + 1].join(",");
        let err = serde_json::from_str::<ObjectList>(&format!(r#"{{"items":[{items}]}}"#))
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("more than 10000 entries"), "{err}");
    }

    #[test]
    fn service_account_keys_need_a_usable_private_key() {
        let err = ServiceAccountKey::parse(br#"{"client_email":"a@b","private_key":"nope"}"#)
            .err()
            .unwrap();
        assert!(err.contains("private_key"), "{err}");
        assert!(ServiceAccountKey::parse(b"{").is_err());
    }
}
