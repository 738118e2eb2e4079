//! A client for the OCI distribution API: just what a source controller and a CI pusher need.
//!
//! Why not `oci-client`: it cannot present a TLS client certificate (`certSecretRef` mTLS) and
//! does not follow `Link` pagination when listing tags, both part of Flux's contract; it also
//! hides the HTTP exchange, and we promise exactly one request per unchanged reconcile. This
//! client keeps its token cache inside itself, so one client per credential set is also one
//! token cache per credential set.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures::Stream;
use reqwest::header::{
    ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderMap, LINK, LOCATION, WWW_AUTHENTICATE,
};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::util::truncate;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Every manifest kind a tag may point at; a HEAD must accept all of them or registries answer
/// with a converted (and differently digested) manifest.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json";

/// Manifests larger than this are refused: real ones are a few KiB.
const MAX_MANIFEST_BYTES: usize = 4 * 1024 * 1024;
/// Tag lists are paged; stop following pages after this many.
const MAX_TAG_PAGES: usize = 1000;

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("{method} {url}: {cause}")]
    Transport {
        method: Method,
        url: String,
        cause: String,
    },
    #[error("{method} {url}: unauthorized ({status}){detail}")]
    Unauthorized {
        method: Method,
        url: String,
        status: StatusCode,
        detail: String,
    },
    #[error("{method} {url}: not found")]
    NotFound { method: Method, url: String },
    #[error("{method} {url}: unexpected status {status}{detail}")]
    Status {
        method: Method,
        url: String,
        status: StatusCode,
        detail: String,
    },
    #[error("token exchange with {realm} failed: {reason}")]
    Token { realm: String, reason: String },
    #[error("manifest from {url} is larger than {MAX_MANIFEST_BYTES} bytes")]
    ManifestTooLarge { url: String },
    #[error("content from {url} has digest {actual}, expected {expected}")]
    DigestMismatch {
        url: String,
        expected: String,
        actual: String,
    },
    #[error("invalid registry response from {url}: {reason}")]
    Invalid { url: String, reason: String },
}

/// Credentials for one registry.
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub enum Credentials {
    #[default]
    Anonymous,
    Basic {
        username: String,
        password: String,
    },
    /// An OAuth2 refresh token (docker config `identitytoken`), exchanged at the token endpoint.
    IdentityToken(String),
    /// A ready bearer token (docker config `registrytoken`), sent as it is.
    RegistryToken(String),
}

impl std::fmt::Debug for Credentials {
    // Secrets never reach logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::Anonymous => f.write_str("Anonymous"),
            Credentials::Basic { username, .. } => write!(f, "Basic({username}:***)"),
            Credentials::IdentityToken(_) => f.write_str("IdentityToken(***)"),
            Credentials::RegistryToken(_) => f.write_str("RegistryToken(***)"),
        }
    }
}

/// Connection settings that decide the HTTP client: TLS material, proxy, plain HTTP.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct Transport {
    /// Plain HTTP, and without a CA, no TLS verification (Flux's `insecure`).
    pub insecure: bool,
    /// PEM CA certificates added to the system roots.
    pub ca_pem: Option<Vec<u8>>,
    /// PEM client certificate and key, for mTLS.
    pub client_identity_pem: Option<Vec<u8>>,
    /// Proxy URL, with optional basic credentials.
    pub proxy: Option<ProxyConfig>,
    /// Upper bound for each request other than blob downloads (`spec.timeout`).
    pub request_timeout: Option<Duration>,
}

#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ProxyConfig {
    pub address: String,
    pub username: Option<String>,
    pub password: Option<String>,
}

impl std::fmt::Debug for ProxyConfig {
    // The password never reaches logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxyConfig")
            .field("address", &self.address)
            .field("username", &self.username)
            .finish()
    }
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport")
            .field("insecure", &self.insecure)
            .field("ca", &self.ca_pem.is_some())
            .field("client_identity", &self.client_identity_pem.is_some())
            .field("proxy", &self.proxy.as_ref().map(|p| &p.address))
            .finish()
    }
}

/// A manifest as fetched: its bytes, media type and digest.
#[derive(Debug, Clone)]
pub struct FetchedManifest {
    pub bytes: bytes::Bytes,
    pub media_type: String,
    pub digest: String,
}

/// The fields of an image manifest a source controller reads.
#[derive(Debug, Clone, Deserialize, serde::Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ImageManifest {
    #[serde(default)]
    pub schema_version: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    pub config: Descriptor,
    #[serde(default)]
    pub layers: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<Descriptor>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<std::collections::BTreeMap<String, String>>,
}

/// An image index (multi-platform manifest list).
#[derive(Debug, Clone, Deserialize, serde::Serialize, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ImageIndex {
    #[serde(default)]
    pub schema_version: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    #[serde(default)]
    pub manifests: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<std::collections::BTreeMap<String, String>>,
}

#[derive(Debug, Clone, Deserialize, serde::Serialize, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: String,
    pub size: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<std::collections::BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
}

#[derive(Debug, Clone, Deserialize, serde::Serialize, PartialEq, Default)]
pub struct Platform {
    pub architecture: String,
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

/// A registry client for one registry host and one credential set.
pub struct RegistryClient {
    http: reqwest::Client,
    registry: String,
    /// Set once HTTPS failed and plain HTTP is allowed (Flux's rules, see `plain_http_allowed`).
    plain_http: std::sync::atomic::AtomicBool,
    http_fallback: bool,
    request_timeout: Duration,
    credentials: Credentials,
    /// How the registry asked us to authenticate, learnt from the first 401.
    challenge: Mutex<Option<Challenge>>,
    tokens: Mutex<HashMap<String, CachedToken>>,
}

#[derive(Clone, Debug, PartialEq)]
enum Challenge {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
    },
}

struct CachedToken {
    token: String,
    expires: Instant,
}

impl RegistryClient {
    /// `registry` is `host[:port]`. Plain HTTP is used when `transport.insecure` is set.
    pub fn new(
        registry: &str,
        credentials: Credentials,
        transport: &Transport,
        user_agent: &str,
    ) -> Result<Self, String> {
        Ok(RegistryClient {
            http: build_http_client(transport, user_agent)?,
            registry: registry.to_string(),
            plain_http: std::sync::atomic::AtomicBool::new(false),
            http_fallback: plain_http_allowed(registry, transport.insecure),
            request_timeout: transport.request_timeout.unwrap_or(DEFAULT_REQUEST_TIMEOUT),
            credentials,
            challenge: Mutex::new(None),
            tokens: Mutex::new(HashMap::new()),
        })
    }

    /// `https://host` until HTTPS has failed where plain HTTP is allowed, then `http://host`.
    fn base(&self) -> String {
        let plain = self.plain_http.load(std::sync::atomic::Ordering::Relaxed);
        format!(
            "{}://{}",
            if plain { "http" } else { "https" },
            self.registry
        )
    }

    /// The digest a tag (or digest) points at, without downloading the manifest when the
    /// registry answers HEAD with `Docker-Content-Digest`; falls back to GET otherwise.
    pub async fn resolve_digest(
        &self,
        repo: &str,
        reference: &str,
    ) -> Result<String, RegistryError> {
        let url = format!("{}/v2/{repo}/manifests/{reference}", self.base());
        let scope = pull_scope(repo);
        let head = self
            .send(Method::HEAD, &url, &scope, |r| {
                r.header(ACCEPT, MANIFEST_ACCEPT)
            })
            .await;
        if let Ok(resp) = head
            && resp.status().is_success()
            && let Some(digest) = header_str(resp.headers(), "docker-content-digest")
            && is_sha256_digest(digest)
        {
            return Ok(digest.to_string());
        }
        Ok(self.get_manifest(repo, reference).await?.digest)
    }

    /// GET a manifest (or index) by tag or digest; its digest is computed from the bytes and,
    /// for a digest reference, checked against it.
    pub async fn get_manifest(
        &self,
        repo: &str,
        reference: &str,
    ) -> Result<FetchedManifest, RegistryError> {
        let url = format!("{}/v2/{repo}/manifests/{reference}", self.base());
        let resp = self
            .send(Method::GET, &url, &pull_scope(repo), |r| {
                r.header(ACCEPT, MANIFEST_ACCEPT)
            })
            .await?;
        let resp = expect_success(Method::GET, &url, resp).await?;
        let media_type = header_str(resp.headers(), CONTENT_TYPE.as_str())
            .unwrap_or_default()
            .to_string();
        let bytes = read_limited(resp, MAX_MANIFEST_BYTES, &url).await?;
        let digest = sha256_digest(&bytes);
        if reference.starts_with("sha256:") && reference != digest {
            return Err(RegistryError::DigestMismatch {
                url,
                expected: reference.into(),
                actual: digest,
            });
        }
        let media_type = if media_type.is_empty() {
            sniff_media_type(&bytes)
        } else {
            media_type
        };
        Ok(FetchedManifest {
            bytes,
            media_type,
            digest,
        })
    }

    /// The OCI 1.1 referrers of a manifest, from the referrers API; `None` when the registry
    /// has no such API (then clients read the `sha256-<hex>` tag-schema index instead).
    pub async fn referrers(
        &self,
        repo: &str,
        digest: &str,
    ) -> Result<Option<ImageIndex>, RegistryError> {
        let url = format!("{}/v2/{repo}/referrers/{digest}", self.base());
        let resp = self
            .send(Method::GET, &url, &pull_scope(repo), |r| {
                r.header(ACCEPT, "application/vnd.oci.image.index.v1+json")
            })
            .await?;
        if matches!(
            resp.status(),
            StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED | StatusCode::BAD_REQUEST
        ) {
            return Ok(None);
        }
        let resp = expect_success(Method::GET, &url, resp).await?;
        let bytes = read_limited(resp, MAX_MANIFEST_BYTES, &url).await?;
        Ok(serde_json::from_slice::<ImageIndex>(&bytes).ok())
    }

    /// Every tag of a repository, following `Link` pagination.
    pub async fn list_tags(&self, repo: &str) -> Result<Vec<String>, RegistryError> {
        #[derive(Deserialize)]
        struct TagList {
            #[serde(default)]
            tags: Option<Vec<String>>,
        }
        let mut tags = Vec::new();
        let mut next = Some(format!("{}/v2/{repo}/tags/list", self.base()));
        let mut pages = 0;
        while let Some(url) = next.take() {
            pages += 1;
            if pages > MAX_TAG_PAGES {
                return Err(RegistryError::Invalid {
                    url,
                    reason: format!("more than {MAX_TAG_PAGES} pages of tags"),
                });
            }
            let resp = self
                .send(Method::GET, &url, &pull_scope(repo), |r| r)
                .await?;
            let resp = expect_success(Method::GET, &url, resp).await?;
            next = next_page(resp.headers(), &self.base());
            let body = read_limited(resp, MAX_MANIFEST_BYTES, &url).await?;
            let page: TagList =
                serde_json::from_slice(&body).map_err(|e| RegistryError::Invalid {
                    url: url.clone(),
                    reason: e.to_string(),
                })?;
            tags.extend(page.tags.unwrap_or_default());
        }
        Ok(tags)
    }

    /// Stream a blob; the caller checks the digest while consuming it (see [`DigestingReader`]).
    pub async fn get_blob(
        &self,
        repo: &str,
        digest: &str,
    ) -> Result<
        (
            Option<u64>,
            impl Stream<Item = reqwest::Result<bytes::Bytes>> + use<>,
        ),
        RegistryError,
    > {
        let url = format!("{}/v2/{repo}/blobs/{digest}", self.base());
        let resp = self
            .send(Method::GET, &url, &pull_scope(repo), |r| r)
            .await?;
        let resp = expect_success(Method::GET, &url, resp).await?;
        Ok((resp.content_length(), resp.bytes_stream()))
    }

    /// Whether the repository already has a blob (so a push can skip it).
    pub async fn blob_exists(&self, repo: &str, digest: &str) -> Result<bool, RegistryError> {
        let url = format!("{}/v2/{repo}/blobs/{digest}", self.base());
        let resp = self
            .send(Method::HEAD, &url, &push_scope(repo), |r| r)
            .await?;
        match resp.status() {
            s if s.is_success() => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            _ => expect_success(Method::HEAD, &url, resp).await.map(|_| true),
        }
    }

    /// Upload a blob in one request (POST for an upload URL, then PUT with the digest).
    pub async fn push_blob(&self, repo: &str, data: bytes::Bytes) -> Result<String, RegistryError> {
        let digest = sha256_digest(&data);
        if self.blob_exists(repo, &digest).await? {
            return Ok(digest);
        }
        let url = format!("{}/v2/{repo}/blobs/uploads/", self.base());
        let resp = self
            .send(Method::POST, &url, &push_scope(repo), |r| {
                r.header("content-length", "0")
            })
            .await?;
        let resp = expect_success(Method::POST, &url, resp).await?;
        let location = header_str(resp.headers(), LOCATION.as_str()).ok_or_else(|| {
            RegistryError::Invalid {
                url: url.clone(),
                reason: "upload response without Location".into(),
            }
        })?;
        let mut put_url = absolute_url(&self.base(), location);
        put_url.push(if put_url.contains('?') { '&' } else { '?' });
        put_url.push_str("digest=");
        put_url.push_str(&digest);
        let resp = self
            .send(Method::PUT, &put_url, &push_scope(repo), |r| {
                r.header(CONTENT_TYPE, "application/octet-stream")
                    .body(data.clone())
            })
            .await?;
        expect_success(Method::PUT, &put_url, resp).await?;
        Ok(digest)
    }

    /// Upload a manifest under a tag (or by digest); returns its digest.
    pub async fn put_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        body: bytes::Bytes,
    ) -> Result<String, RegistryError> {
        let url = format!("{}/v2/{repo}/manifests/{reference}", self.base());
        let digest = sha256_digest(&body);
        let resp = self
            .send(Method::PUT, &url, &push_scope(repo), |r| {
                r.header(CONTENT_TYPE, media_type).body(body.clone())
            })
            .await?;
        expect_success(Method::PUT, &url, resp).await?;
        Ok(digest)
    }

    /// Send a request, authenticating as the registry asks: credentials are sent up front once
    /// the challenge is known, so a steady state costs one request, not a 401 and a retry.
    async fn send(
        &self,
        method: Method,
        url: &str,
        scope: &str,
        build: impl Fn(RequestBuilder) -> RequestBuilder,
    ) -> Result<Response, RegistryError> {
        let auth = self.authorization(scope, false).await?;
        let resp = self.attempt(&method, url, auth.as_deref(), &build).await?;
        if resp.status() != StatusCode::UNAUTHORIZED {
            return Ok(resp);
        }
        let Some(challenge) = parse_challenge(resp.headers()) else {
            return Ok(resp);
        };
        *self.challenge.lock().expect("challenge lock") = Some(challenge);
        // A 401 despite a token means it expired or was revoked: fetch a new one.
        let auth = self.authorization(scope, auth.is_some()).await?;
        if auth.is_none() {
            return Ok(resp);
        }
        self.attempt(&method, url, auth.as_deref(), &build).await
    }

    async fn attempt(
        &self,
        method: &Method,
        url: &str,
        auth: Option<&str>,
        build: &impl Fn(RequestBuilder) -> RequestBuilder,
    ) -> Result<Response, RegistryError> {
        let e = match self.request(method, url, auth, build).send().await {
            Ok(resp) => return Ok(resp),
            Err(e) => e,
        };
        let https = format!("https://{}/", self.registry);
        // A server that rejected our certificate checks speaks TLS: falling back to HTTP would
        // only hide the real cause behind "HTTP request to an HTTPS server".
        let tls_speaking = error_chain(&e).contains("certificate");
        if self.http_fallback
            && url.starts_with(&https)
            && (e.is_connect() || e.is_request())
            && !tls_speaking
        {
            // Go's registry client does the same: HTTPS first, HTTP where Flux allows it.
            self.plain_http
                .store(true, std::sync::atomic::Ordering::Relaxed);
            let url = format!("http://{}/{}", self.registry, &url[https.len()..]);
            return self
                .request(method, &url, auth, build)
                .send()
                .await
                .map_err(|e| transport_error(method, &url, e));
        }
        Err(transport_error(method, url, e))
    }

    fn request(
        &self,
        method: &Method,
        url: &str,
        auth: Option<&str>,
        build: &impl Fn(RequestBuilder) -> RequestBuilder,
    ) -> RequestBuilder {
        let mut req = build(self.http.request(method.clone(), url));
        if !url.contains("/blobs/sha256:") {
            // Blob downloads are bounded by their caller; everything else is small and quick.
            req = req.timeout(self.request_timeout);
        }
        // Credentials only ever go to the registry itself (a Link or Location header could
        // point elsewhere).
        if let Some(auth) = auth.filter(|_| self.same_origin(url)) {
            req = req.header(AUTHORIZATION, auth);
        }
        req
    }

    fn same_origin(&self, url: &str) -> bool {
        ["https://", "http://"].iter().any(|scheme| {
            url.strip_prefix(scheme)
                .and_then(|rest| rest.strip_prefix(self.registry.as_str()))
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
        })
    }

    /// The Authorization header for a scope under the known challenge, if any.
    async fn authorization(
        &self,
        scope: &str,
        refresh: bool,
    ) -> Result<Option<String>, RegistryError> {
        let challenge = self.challenge.lock().expect("challenge lock").clone();
        match (challenge, &self.credentials) {
            (_, Credentials::RegistryToken(token)) => Ok(Some(format!("Bearer {token}"))),
            (None, _) => Ok(None),
            (Some(Challenge::Basic), Credentials::Basic { username, password }) => {
                Ok(Some(basic_header(username, password)))
            }
            (Some(Challenge::Basic), _) => Ok(None),
            // Anonymous clients fetch anonymous tokens: registries like Docker Hub require them.
            (Some(Challenge::Bearer { realm, service }), _) => {
                let token = self
                    .bearer_token(&realm, service.as_deref(), scope, refresh)
                    .await?;
                Ok(Some(format!("Bearer {token}")))
            }
        }
    }

    async fn bearer_token(
        &self,
        realm: &str,
        service: Option<&str>,
        scope: &str,
        refresh: bool,
    ) -> Result<String, RegistryError> {
        if !refresh
            && let Some(cached) = self.tokens.lock().expect("token lock").get(scope)
            && cached.expires > Instant::now()
        {
            return Ok(cached.token.clone());
        }
        let (token, ttl) = self.exchange_token(realm, service, scope).await?;
        // Renew a little early so a token never expires mid-request.
        let ttl = ttl
            .saturating_sub(Duration::from_secs(10))
            .max(Duration::from_secs(1));
        self.tokens.lock().expect("token lock").insert(
            scope.to_string(),
            CachedToken {
                token: token.clone(),
                expires: Instant::now() + ttl,
            },
        );
        Ok(token)
    }

    async fn exchange_token(
        &self,
        realm: &str,
        service: Option<&str>,
        scope: &str,
    ) -> Result<(String, Duration), RegistryError> {
        #[derive(Deserialize)]
        struct TokenResponse {
            token: Option<String>,
            access_token: Option<String>,
            expires_in: Option<u64>,
        }
        let fail = |reason: String| RegistryError::Token {
            realm: realm.to_string(),
            reason,
        };
        let mut query: Vec<(&str, &str)> = vec![("scope", scope)];
        if let Some(service) = service {
            query.push(("service", service));
        }
        let req = match &self.credentials {
            Credentials::IdentityToken(refresh) => {
                let mut form = query.clone();
                form.extend([
                    ("grant_type", "refresh_token"),
                    ("refresh_token", refresh.as_str()),
                    ("client_id", "driftless"),
                ]);
                self.http.post(realm).form(&form)
            }
            Credentials::Basic { username, password } => self
                .http
                .get(realm)
                .query(&query)
                .header(AUTHORIZATION, basic_header(username, password)),
            _ => self.http.get(realm).query(&query),
        };
        let resp = req
            .timeout(self.request_timeout)
            .send()
            .await
            .map_err(|e| fail(error_chain(&e.without_url())))?;
        let status = resp.status();
        let body = read_limited(resp, MAX_SMALL_BODY, realm)
            .await
            .map_err(|e| fail(e.to_string()))?;
        if !status.is_success() {
            return Err(fail(format!(
                "status {status}: {}",
                truncate(&String::from_utf8_lossy(&body), 200)
            )));
        }
        let body: TokenResponse = serde_json::from_slice(&body)
            .map_err(|e| fail(format!("invalid token response: {e}")))?;
        let token = body
            .token
            .or(body.access_token)
            .ok_or_else(|| fail("response carries no token".into()))?;
        Ok((token, Duration::from_secs(body.expires_in.unwrap_or(60))))
    }
}

/// Requests other than blob downloads give up after this long unless the spec says otherwise.
const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Error bodies and token responses are read up to this size.
const MAX_SMALL_BODY: usize = 64 * 1024;

fn transport_error(method: &Method, url: &str, e: reqwest::Error) -> RegistryError {
    // reqwest's message repeats the URL, which after a redirect can carry a signed query.
    RegistryError::Transport {
        method: method.clone(),
        url: url.into(),
        cause: error_chain(&e.without_url()),
    }
}

/// Flux (go-containerregistry) tries HTTPS first and falls back to plain HTTP when `insecure`
/// is set or the registry is local: `localhost`, loopback, `*.local` or a private address.
fn plain_http_allowed(registry: &str, insecure: bool) -> bool {
    if insecure {
        return true;
    }
    let host = match registry.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(rest),
        None => registry.rsplit_once(':').map_or(registry, |(h, _)| h),
    };
    if host == "localhost" || host.ends_with(".local") {
        return true;
    }
    match host.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(ip)) => ip.is_loopback() || ip.is_private(),
        Ok(std::net::IpAddr::V6(ip)) => ip.is_loopback() || (ip.segments()[0] & 0xfe00) == 0xfc00,
        Err(_) => false,
    }
}

pub(crate) fn build_http_client(
    transport: &Transport,
    user_agent: &str,
) -> Result<reqwest::Client, String> {
    let mut builder = reqwest::Client::builder()
        .user_agent(user_agent)
        .connect_timeout(Duration::from_secs(30))
        .read_timeout(Duration::from_secs(60))
        .pool_idle_timeout(Duration::from_secs(90));
    if let Some(ca) = &transport.ca_pem {
        let certs = reqwest::Certificate::from_pem_bundle(ca)
            .map_err(|e| format!("invalid CA certificate: {e}"))?;
        builder = builder.tls_certs_merge(certs);
    } else if transport.insecure && transport.client_identity_pem.is_none() {
        // Flux skips verification only when `insecure` is set and no certSecretRef was given.
        builder = builder.danger_accept_invalid_certs(true);
    }
    if let Some(identity) = &transport.client_identity_pem {
        let identity = reqwest::Identity::from_pem(identity)
            .map_err(|e| format!("invalid client certificate or key: {e}"))?;
        builder = builder.identity(identity);
    }
    if let Some(proxy) = &transport.proxy {
        let mut p = reqwest::Proxy::all(&proxy.address)
            .map_err(|e| format!("invalid proxy address: {e}"))?;
        if let Some(user) = &proxy.username {
            p = p.basic_auth(user, proxy.password.as_deref().unwrap_or_default());
        }
        builder = builder.proxy(p);
    }
    builder
        .build()
        .map_err(|e| format!("cannot build HTTP client: {e}"))
}

/// An error with its causes: reqwest's own message ("error sending request") hides the one
/// that matters (an unknown certificate issuer, a refused connection).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut message = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = cause.source();
    }
    message
}

pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

pub fn is_sha256_digest(s: &str) -> bool {
    s.strip_prefix("sha256:").is_some_and(|h| {
        h.len() == 64
            && h.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    })
}

fn pull_scope(repo: &str) -> String {
    format!("repository:{repo}:pull")
}

fn push_scope(repo: &str) -> String {
    format!("repository:{repo}:pull,push")
}

fn basic_header(username: &str, password: &str) -> String {
    use base64::Engine;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"))
    )
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// `WWW-Authenticate: Bearer realm="...",service="..."` or `Basic realm="..."`.
fn parse_challenge(headers: &HeaderMap) -> Option<Challenge> {
    let value = header_str(headers, WWW_AUTHENTICATE.as_str())?.trim();
    let (scheme, params) = value.split_once(' ').unwrap_or((value, ""));
    match scheme.to_ascii_lowercase().as_str() {
        "basic" => Some(Challenge::Basic),
        "bearer" => {
            let params = parse_auth_params(params);
            Some(Challenge::Bearer {
                realm: params.get("realm")?.clone(),
                service: params.get("service").cloned(),
            })
        }
        _ => None,
    }
}

fn parse_auth_params(s: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let mut rest = s.trim();
    while !rest.is_empty() {
        let Some((key, after)) = rest.split_once('=') else {
            break;
        };
        let key = key
            .trim()
            .trim_start_matches(',')
            .trim()
            .to_ascii_lowercase();
        let (value, next) = if let Some(quoted) = after.strip_prefix('"') {
            let end = quoted.find('"').unwrap_or(quoted.len());
            (&quoted[..end], quoted.get(end + 1..).unwrap_or(""))
        } else {
            after.split_once(',').unwrap_or((after, ""))
        };
        out.insert(key, value.trim().to_string());
        rest = next.trim_start_matches(',').trim();
    }
    out
}

/// The next page from a `Link: </v2/...?last=x&n=y>; rel="next"` header.
fn next_page(headers: &HeaderMap, base: &str) -> Option<String> {
    let link = header_str(headers, LINK.as_str())?;
    link.split(',').find_map(|part| {
        let (target, params) = part.split_once(';')?;
        if !params.contains("rel=\"next\"") && !params.contains("rel=next") {
            return None;
        }
        let target = target.trim().trim_start_matches('<').trim_end_matches('>');
        let next = absolute_url(base, target);
        // A page on another host is not followed: it would receive our credentials' scope.
        next.starts_with(&format!("{base}/")).then_some(next)
    })
}

fn absolute_url(base: &str, location: &str) -> String {
    if location.starts_with("http://") || location.starts_with("https://") {
        location.to_string()
    } else {
        format!(
            "{base}{}",
            if location.starts_with('/') {
                location.to_string()
            } else {
                format!("/{location}")
            }
        )
    }
}

async fn expect_success(
    method: Method,
    url: &str,
    resp: Response,
) -> Result<Response, RegistryError> {
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    let detail = read_limited(resp, MAX_SMALL_BODY, url)
        .await
        .map(|t| format!(": {}", truncate(String::from_utf8_lossy(&t).trim(), 300)))
        .unwrap_or_default();
    let detail = if detail == ": " {
        String::new()
    } else {
        detail
    };
    let url = url.to_string();
    Err(match status {
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => RegistryError::Unauthorized {
            method,
            url,
            status,
            detail,
        },
        StatusCode::NOT_FOUND => RegistryError::NotFound { method, url },
        _ => RegistryError::Status {
            method,
            url,
            status,
            detail,
        },
    })
}

async fn read_limited(
    resp: Response,
    limit: usize,
    url: &str,
) -> Result<bytes::Bytes, RegistryError> {
    use futures::StreamExt;
    if resp.content_length().is_some_and(|l| l as usize > limit) {
        return Err(RegistryError::ManifestTooLarge { url: url.into() });
    }
    let mut body = bytes::BytesMut::new();
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| RegistryError::Transport {
            method: Method::GET,
            url: url.into(),
            cause: error_chain(&e),
        })?;
        if body.len() + chunk.len() > limit {
            return Err(RegistryError::ManifestTooLarge { url: url.into() });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

fn sniff_media_type(bytes: &[u8]) -> String {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Probe {
        media_type: Option<String>,
        manifests: Option<serde_json::Value>,
    }
    match serde_json::from_slice::<Probe>(bytes) {
        Ok(Probe {
            media_type: Some(m),
            ..
        }) => m,
        Ok(Probe {
            manifests: Some(_), ..
        }) => OCI_INDEX.into(),
        _ => OCI_MANIFEST.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn bearer_challenge_is_parsed() {
        let mut h = HeaderMap::new();
        h.insert(
            WWW_AUTHENTICATE,
            HeaderValue::from_static(r#"Bearer realm="https://auth.example.com/token",service="registry.example.com",scope="repository:a/b:pull""#),
        );
        assert_eq!(
            parse_challenge(&h),
            Some(Challenge::Bearer {
                realm: "https://auth.example.com/token".into(),
                service: Some("registry.example.com".into())
            })
        );
        h.insert(
            WWW_AUTHENTICATE,
            HeaderValue::from_static(r#"Basic realm="Registry Realm""#),
        );
        assert_eq!(parse_challenge(&h), Some(Challenge::Basic));
    }

    #[test]
    fn link_header_gives_the_next_page() {
        let mut h = HeaderMap::new();
        h.insert(
            LINK,
            HeaderValue::from_static(r#"</v2/app/tags/list?last=v2&n=2>; rel="next""#),
        );
        assert_eq!(
            next_page(&h, "http://r:5000").as_deref(),
            Some("http://r:5000/v2/app/tags/list?last=v2&n=2")
        );
        assert_eq!(next_page(&HeaderMap::new(), "http://r:5000"), None);
    }

    #[test]
    fn digests_are_validated() {
        assert!(is_sha256_digest(&sha256_digest(b"x")));
        assert!(!is_sha256_digest("sha256:abc"));
        assert!(!is_sha256_digest("sha512:00"));
    }

    /// The paging loop against a local HTTP server that pages as distribution v3 does (the
    /// platform's distribution 2.8 never pages, so this is where the loop is exercised).
    #[tokio::test]
    async fn tag_listing_follows_link_pagination() {
        use axum::extract::Query;
        use axum::response::IntoResponse;
        async fn tags(
            Query(q): Query<std::collections::HashMap<String, String>>,
        ) -> axum::response::Response {
            let all = ["a", "b", "c", "d", "e"];
            let start = q
                .get("last")
                .and_then(|l| all.iter().position(|t| t == l))
                .map_or(0, |i| i + 1);
            let page: Vec<&str> = all.iter().skip(start).take(2).copied().collect();
            let body = axum::Json(serde_json::json!({"name": "app", "tags": page}));
            match page.last() {
                Some(last) if start + 2 < all.len() => (
                    [(
                        LINK,
                        format!("</v2/app/tags/list?last={last}&n=2>; rel=\"next\""),
                    )],
                    body,
                )
                    .into_response(),
                _ => body.into_response(),
            }
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            axum::serve(
                listener,
                axum::Router::new().route("/v2/app/tags/list", axum::routing::get(tags)),
            )
            .await
            .unwrap();
        });
        let transport = Transport {
            insecure: true,
            ..Default::default()
        };
        let client = RegistryClient::new(
            &addr.to_string(),
            Credentials::Anonymous,
            &transport,
            "test",
        )
        .unwrap();
        assert_eq!(
            client.list_tags("app").await.unwrap(),
            ["a", "b", "c", "d", "e"]
        );
    }

    #[test]
    fn credentials_never_print_secrets() {
        let c = Credentials::Basic {
            username: "u".into(),
            password: "hunter2".into(),
        };
        assert!(!format!("{c:?}").contains("hunter2"));
    }
}
