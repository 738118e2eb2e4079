//! A client for the OCI distribution API: just what a source controller and a CI pusher need.

// Why not `oci-client`: it cannot present a TLS client certificate (`certSecretRef` mTLS) and
// does not follow `Link` pagination when listing tags, both part of Flux's contract; it also
// hides the HTTP exchange, and we promise exactly one request per unchanged reconcile. A
// [`RegistryConnection`] keeps the token cache inside itself, so one connection per credential
// set is also one token cache per credential set; a [`RegistryClient`] is one sequence of
// requests over it (see [`Scheme`] for why that matters).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use futures::Stream;
use reqwest::header::{
    ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderMap, LINK, LOCATION, WWW_AUTHENTICATE,
};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::digest::{self as content_digest, DigestError};
use crate::transport::{CONNECT_TIMEOUT, Transport, build_http_client, error_chain, retry_after};
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
/// A tag list is read over at most this many pages,
const MAX_TAG_PAGES: usize = 1000;
/// of at most this many bytes of responses in all,
const MAX_TAG_LIST_BYTES: usize = 8 * 1024 * 1024;
/// holding at most this many tags: a registry that pages for ever, or packs millions of
/// one-letter tags into a page, cannot grow the controller's memory past these.
const MAX_TAGS: usize = 100_000;

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
    /// 429, or a 5xx with `Retry-After`: the registry asks to be left alone for a while.
    #[error("{method} {url}: {status}{}{detail}", retry_after.map(|d| format!(" (retry after {}s)", d.as_secs())).unwrap_or_default())]
    Throttled {
        method: Method,
        url: String,
        status: StatusCode,
        retry_after: Option<Duration>,
        detail: String,
    },
    #[error("{method} {url}: unexpected status {status}{detail}")]
    Status {
        method: Method,
        url: String,
        status: StatusCode,
        detail: String,
    },
    #[error("token exchange with {realm} failed: {reason}")]
    Token { realm: String, reason: String },
    #[error("the response from {url} is larger than the limit of {limit} bytes")]
    BodyTooLarge { url: String, limit: usize },
    #[error("listing tags at {url}: the tag list exceeds the limit of {limit}")]
    TagListTooLarge { url: String, limit: String },
    #[error("{url}: {cause}")]
    UnsupportedDigest { url: String, cause: DigestError },
    #[error(
        "{method} {url}: the registry asks for authentication over plain HTTP; credentials are sent over plain HTTP only when the object sets `insecure: true`"
    )]
    CredentialsNeedTls { method: Method, url: String },
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
    /// A login a cloud issued for this one registry (ECR's `AWS:<password>`): Basic, sent to
    /// the registry and to a token endpoint on the registry's own host only, over HTTPS.
    CloudLogin {
        username: String,
        password: String,
    },
}

impl std::fmt::Debug for Credentials {
    // Secrets never reach logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::Anonymous => f.write_str("Anonymous"),
            Credentials::Basic { username, .. } => write!(f, "Basic({username}:***)"),
            Credentials::CloudLogin { username, .. } => write!(f, "CloudLogin({username}:***)"),
            Credentials::IdentityToken(_) => f.write_str("IdentityToken(***)"),
            Credentials::RegistryToken(_) => f.write_str("RegistryToken(***)"),
        }
    }
}

/// Whether a token endpoint is `https://<registry host>/...` (same host and port).
fn realm_on_host(realm: &str, registry: &str) -> bool {
    realm
        .strip_prefix("https://")
        .and_then(|rest| rest.strip_prefix(registry))
        .is_some_and(|rest| rest.starts_with('/'))
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

/// What every sequence of requests to one registry with one credential set and transport
/// shares: the HTTP client (TLS material, connection pool), the authentication challenge the
/// registry made and the tokens it granted. Cached per (registry, credentials, transport), so
/// shared by every object that uses the same credentials: nothing in it may be decided by one
/// object's failure, which is why the URL scheme is not (see [`Scheme`]).
pub struct RegistryConnection {
    http: reqwest::Client,
    registry: String,
    /// Plain HTTP may be tried where HTTPS cannot connect (`plain_http_allowed`).
    http_fallback: bool,
    /// The object asked for plain HTTP (`insecure`), so credentials may travel over it.
    insecure: bool,
    request_timeout: Duration,
    credentials: Credentials,
    /// Set once the registry answered over HTTPS: it speaks TLS, and is never spoken to in
    /// plain HTTP again.
    spoke_tls: AtomicBool,
    /// For `insecure: true` only: until when new sequences start in plain HTTP, because the
    /// registry's answer to a TLS handshake was not TLS and it then answered in plain HTTP
    /// (see [`Scheme`]).
    plain_until: Mutex<Option<Instant>>,
    /// How the registry asked us to authenticate, learnt from a 401 over HTTPS (or over plain
    /// HTTP the object asked for): a challenge from a fallback nobody asked for could name any
    /// token endpoint, and is never kept.
    challenge: Mutex<Option<Challenge>>,
    tokens: Mutex<HashMap<String, CachedToken>>,
}

/// The scheme of one sequence of requests, and the rule that picks it.
///
/// go-containerregistry (and so Flux) pings a registry once per operation: HTTPS first, and
/// plain HTTP too when the registry may be plain (`name.Insecure`, i.e. `insecure: true`, or a
/// local or RFC 1918 address, see `plain_http_allowed`); the operation then keeps the scheme
/// that answered. We keep that rule with three restrictions:
///
/// - the choice belongs to one sequence of requests (a reconcile pass, a CLI command), never to
///   the [`RegistryConnection`] every object with the same credentials shares, so one connect
///   or TLS failure cannot move anybody else to plain HTTP;
/// - a connection that has had an HTTPS answer from the registry never falls back: the registry
///   speaks TLS, and a later failure is an outage or an attack, not a plain-HTTP registry;
/// - credentials (an `Authorization` header, a token exchange that sends them) go over plain
///   HTTP only when the object set `insecure: true`. A private address alone allows an
///   anonymous fallback, and a 401 there is reported instead of answered (go-containerregistry
///   would send the credentials).
///
/// A server that fails our certificate checks speaks TLS, so it gets no fallback either: that
/// would only hide the real cause behind "HTTP request to an HTTPS server".
///
/// One thing is shared, for anonymous objects that asked for plain HTTP (`insecure: true`)
/// only (credentials never skip the HTTPS attempt): once a
/// registry answered a TLS handshake with something that is not TLS and then answered in plain
/// HTTP, new sequences start in plain HTTP for [`PLAIN_HTTP_MEMORY`], instead of opening a
/// connection for a handshake that fails every pass. Everyone sharing the connection asked for
/// plain HTTP, and a refused or reset connection (an outage) is no reason to remember anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scheme {
    Https,
    Http,
}

/// One sequence of requests over a [`RegistryConnection`]: it settles its scheme on its first
/// answer (see [`Scheme`]) and keeps it.
pub struct RegistryClient {
    connection: Arc<RegistryConnection>,
    scheme: OnceLock<Scheme>,
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

/// How long new sequences start in plain HTTP after a registry was found to speak no TLS.
const PLAIN_HTTP_MEMORY: Duration = Duration::from_secs(300);

/// The TLS handshake got an answer that is not TLS at all (its first byte is no TLS record
/// type: a plain-HTTP server answering it), as opposed to no answer, a reset, or a TLS peer
/// that failed. Read from the error's causes, never from its text (which holds the URL).
fn answered_not_tls(e: &reqwest::Error) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cause {
        if is_invalid_content_type(err) {
            return true;
        }
        cause = err.source();
    }
    false
}

/// rustls's "not a TLS record" error, possibly inside I/O errors (which wrap it whole rather
/// than as a source).
fn is_invalid_content_type(err: &(dyn std::error::Error + 'static)) -> bool {
    if let Some(tls) = err.downcast_ref::<rustls::Error>() {
        return matches!(
            tls,
            rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType)
        );
    }
    err.downcast_ref::<std::io::Error>()
        .and_then(|io| io.get_ref())
        .is_some_and(|inner| is_invalid_content_type(inner))
}

impl RegistryConnection {
    /// New sequences start in plain HTTP (see [`Scheme`]).
    fn speaks_plain_http(&self) -> bool {
        self.insecure
            && self.credentials == Credentials::Anonymous
            && !self.spoke_tls.load(Ordering::Relaxed)
            && self
                .plain_until
                .lock()
                .expect("plain lock")
                .is_some_and(|until| Instant::now() < until)
    }

    /// `registry` is `host[:port]`.
    pub fn new(
        registry: &str,
        credentials: Credentials,
        transport: &Transport,
        user_agent: &str,
    ) -> Result<Arc<Self>, String> {
        Ok(Arc::new(RegistryConnection {
            http: build_http_client(transport, user_agent, CONNECT_TIMEOUT)?,
            registry: registry.to_string(),
            http_fallback: plain_http_allowed(registry, transport.insecure),
            insecure: transport.insecure,
            request_timeout: transport.request_timeout.unwrap_or(DEFAULT_REQUEST_TIMEOUT),
            credentials,
            spoke_tls: AtomicBool::new(false),
            plain_until: Mutex::new(None),
            challenge: Mutex::new(None),
            tokens: Mutex::new(HashMap::new()),
        }))
    }
}

impl RegistryClient {
    /// A connection of its own and one sequence of requests over it (the CLI's one command).
    pub fn new(
        registry: &str,
        credentials: Credentials,
        transport: &Transport,
        user_agent: &str,
    ) -> Result<Self, String> {
        let connection = RegistryConnection::new(registry, credentials, transport, user_agent)?;
        Ok(RegistryClient::session(&connection))
    }

    /// A new sequence of requests over a shared connection: its scheme is decided afresh, but
    /// for a plain-HTTP registry an `insecure: true` object already met (see [`Scheme`]).
    pub fn session(connection: &Arc<RegistryConnection>) -> Self {
        let scheme = OnceLock::new();
        if connection.speaks_plain_http() {
            let _ = scheme.set(Scheme::Http);
        }
        RegistryClient {
            connection: connection.clone(),
            scheme,
        }
    }

    /// `https://host`, or `http://host` once this sequence settled on plain HTTP.
    fn base(&self) -> String {
        let scheme = match self.scheme.get() {
            Some(Scheme::Http) => "http",
            _ => "https",
        };
        format!("{scheme}://{}", self.connection.registry)
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
        if let Ok((resp, _)) = head {
            if let Some(digest) = header_str(resp.headers(), "docker-content-digest")
                && resp.status().is_success()
                && is_sha256_digest(digest)
            {
                return Ok(digest.to_string());
            }
            // A registry that asks to be left alone is not asked again at once with a GET.
            let busy = resp.status() == StatusCode::TOO_MANY_REQUESTS
                || (resp.status().is_server_error() && retry_after(resp.headers()).is_some());
            if busy && let Err(e) = expect_success(Method::HEAD, &url, resp).await {
                return Err(e);
            }
        }
        Ok(self.get_manifest(repo, reference).await?.digest)
    }

    /// GET a manifest (or index) by tag or digest; a digest reference is checked against the
    /// bytes (sha256 or sha512, anything else refused before the request). `digest` is the
    /// reference for a digest, else the sha256 of the bytes.
    pub async fn get_manifest(
        &self,
        repo: &str,
        reference: &str,
    ) -> Result<FetchedManifest, RegistryError> {
        let by_digest = reference.contains(':');
        let url = format!("{}/v2/{repo}/manifests/{reference}", self.base());
        if by_digest {
            checkable_digest(reference, &url)?;
        }
        let (resp, url) = self
            .send(Method::GET, &url, &pull_scope(repo), |r| {
                r.header(ACCEPT, MANIFEST_ACCEPT)
            })
            .await?;
        let resp = expect_success(Method::GET, &url, resp).await?;
        let media_type = header_str(resp.headers(), CONTENT_TYPE.as_str())
            .unwrap_or_default()
            .to_string();
        let bytes = read_body(resp, MAX_MANIFEST_BYTES, &url).await?;
        let digest = if by_digest {
            verify_digest(reference, &bytes, &url)?;
            reference.to_string()
        } else {
            sha256_digest(&bytes)
        };
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
        checkable_digest(digest, &url)?;
        let (resp, url) = self
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
        let bytes = read_body(resp, MAX_MANIFEST_BYTES, &url).await?;
        Ok(serde_json::from_slice::<ImageIndex>(&bytes).ok())
    }

    /// Every tag of a repository, following `Link` pagination within the tag-list limits
    /// (`MAX_TAG_PAGES`, `MAX_TAG_LIST_BYTES`, `MAX_TAGS`).
    pub async fn list_tags(&self, repo: &str) -> Result<Vec<String>, RegistryError> {
        let mut tags = Vec::new();
        let mut read = 0usize;
        let mut next = Some(format!("{}/v2/{repo}/tags/list", self.base()));
        let mut pages = 0usize;
        while let Some(url) = next.take() {
            pages += 1;
            if pages > MAX_TAG_PAGES {
                return Err(tag_limit(&url, format!("{MAX_TAG_PAGES} pages")));
            }
            let (resp, url) = self
                .send(Method::GET, &url, &pull_scope(repo), |r| r)
                .await?;
            let resp = expect_success(Method::GET, &url, resp).await?;
            next = next_page(resp.headers(), &self.base());
            let budget = MAX_TAG_LIST_BYTES.saturating_sub(read);
            let body = read_body(resp, budget, &url).await.map_err(|e| match e {
                RegistryError::BodyTooLarge { url, .. } => tag_limit(
                    &url,
                    format!("{} MiB of responses", MAX_TAG_LIST_BYTES >> 20),
                ),
                e => e,
            })?;
            read = read.saturating_add(body.len());
            append_tag_page(&body, &mut tags, &url)?;
        }
        Ok(tags)
    }

    /// Stream a blob; the caller checks the digest while consuming it (see
    /// [`content_digest::Verifier`]). A digest that cannot be checked is refused up front.
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
        checkable_digest(digest, &url)?;
        let (resp, url) = self
            .send(Method::GET, &url, &pull_scope(repo), |r| {
                r.timeout(BLOB_STREAM_TIMEOUT)
            })
            .await?;
        let resp = expect_success(Method::GET, &url, resp).await?;
        Ok((resp.content_length(), resp.bytes_stream()))
    }

    /// A small blob (a signature, a bundle) read whole, up to `limit` bytes, and checked
    /// against its digest.
    pub async fn get_small_blob(
        &self,
        repo: &str,
        digest: &str,
        limit: usize,
    ) -> Result<bytes::Bytes, RegistryError> {
        let url = format!("{}/v2/{repo}/blobs/{digest}", self.base());
        checkable_digest(digest, &url)?;
        let (resp, url) = self
            .send(Method::GET, &url, &pull_scope(repo), |r| r)
            .await?;
        let resp = expect_success(Method::GET, &url, resp).await?;
        let bytes = read_body(resp, limit, &url).await?;
        verify_digest(digest, &bytes, &url)?;
        Ok(bytes)
    }

    /// Whether the repository already has a blob (so a push can skip it).
    pub async fn blob_exists(&self, repo: &str, digest: &str) -> Result<bool, RegistryError> {
        let url = format!("{}/v2/{repo}/blobs/{digest}", self.base());
        let (resp, url) = self
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
        let (resp, url) = self
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
        let (resp, put_url) = self
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
        let (resp, url) = self
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
    ) -> Result<(Response, String), RegistryError> {
        let auth = if self.may_authenticate(url) {
            self.connection.authorization(scope, false).await?
        } else {
            None
        };
        let (resp, answered) = self.attempt(&method, url, auth.as_deref(), &build).await?;
        if resp.status() != StatusCode::UNAUTHORIZED {
            return Ok((resp, answered));
        }
        let Some(challenge) = parse_challenge(resp.headers()) else {
            return Ok((resp, answered));
        };
        if !self.may_authenticate(&answered) {
            return Err(RegistryError::CredentialsNeedTls {
                method,
                url: answered,
            });
        }
        *self.connection.challenge.lock().expect("challenge lock") = Some(challenge);
        // A 401 despite a token means it expired or was revoked: fetch a new one.
        let auth = self.connection.authorization(scope, auth.is_some()).await?;
        if auth.is_none() {
            return Ok((resp, answered));
        }
        self.attempt(&method, &answered, auth.as_deref(), &build)
            .await
    }

    /// One request, over plain HTTP instead when HTTPS cannot connect and [`Scheme`]'s rule
    /// allows it; returns the response and the URL that gave it.
    async fn attempt(
        &self,
        method: &Method,
        url: &str,
        auth: Option<&str>,
        build: &impl Fn(RequestBuilder) -> RequestBuilder,
    ) -> Result<(Response, String), RegistryError> {
        let e = match self.request(method, url, auth, build).send().await {
            Ok(resp) => {
                self.answered(url);
                return Ok((resp, url.to_string()));
            }
            Err(e) => e,
        };
        // A remembered plain-HTTP registry that no longer answers in plain HTTP is tried
        // with TLS again from the next sequence on.
        if url.starts_with("http://") {
            *self.connection.plain_until.lock().expect("plain lock") = None;
        }
        let Some(plain) = self.fallback_url(url, &e) else {
            return Err(transport_error(method, url, e));
        };
        let resp = self
            .request(method, &plain, auth, build)
            .send()
            .await
            .map_err(|e| transport_error(method, &plain, e))?;
        self.answered(&plain);
        if self.connection.insecure
            && self.connection.credentials == Credentials::Anonymous
            && answered_not_tls(&e)
        {
            *self.connection.plain_until.lock().expect("plain lock") =
                Some(Instant::now() + PLAIN_HTTP_MEMORY);
        }
        Ok((resp, plain))
    }

    /// The registry answered `url`: the sequence keeps that scheme, and an HTTPS answer marks
    /// the shared connection as one that speaks TLS.
    fn answered(&self, url: &str) {
        if !self.same_origin(url) {
            return;
        }
        if url.starts_with("https://") {
            self.connection.spoke_tls.store(true, Ordering::Relaxed);
            let _ = self.scheme.set(Scheme::Https);
        } else {
            let _ = self.scheme.set(Scheme::Http);
        }
    }

    /// The plain-HTTP URL to retry `url` at after `e`, when [`Scheme`]'s rule allows it.
    fn fallback_url(&self, url: &str, e: &reqwest::Error) -> Option<String> {
        let registry = &self.connection.registry;
        let rest = url.strip_prefix(&format!("https://{registry}/"))?;
        let allowed = self.connection.http_fallback
            && self.scheme.get().is_none()
            && !self.connection.spoke_tls.load(Ordering::Relaxed);
        let cannot_connect = e.is_connect() || e.is_request();
        let speaks_tls = error_chain(e).contains("certificate");
        (allowed && cannot_connect && !speaks_tls).then(|| format!("http://{registry}/{rest}"))
    }

    /// Credentials travel over HTTPS, or over plain HTTP the object asked for.
    fn may_authenticate(&self, url: &str) -> bool {
        url.starts_with("https://") || self.connection.insecure
    }

    fn request(
        &self,
        method: &Method,
        url: &str,
        auth: Option<&str>,
        build: &impl Fn(RequestBuilder) -> RequestBuilder,
    ) -> RequestBuilder {
        // Everything is small and quick but blob streams, which set their own bound.
        let req = self
            .connection
            .http
            .request(method.clone(), url)
            .timeout(self.connection.request_timeout);
        let mut req = build(req);
        // Credentials only ever go to the registry itself (a Link or Location header could
        // point elsewhere), and never in clear unless the object asked for plain HTTP.
        if let Some(auth) = auth.filter(|_| self.same_origin(url) && self.may_authenticate(url)) {
            req = req.header(AUTHORIZATION, auth);
        }
        req
    }

    fn same_origin(&self, url: &str) -> bool {
        ["https://", "http://"].iter().any(|scheme| {
            url.strip_prefix(scheme)
                .and_then(|rest| rest.strip_prefix(self.connection.registry.as_str()))
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
        })
    }
}

impl RegistryConnection {
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
            (
                Some(Challenge::Basic),
                Credentials::Basic { username, password }
                | Credentials::CloudLogin { username, password },
            ) => Ok(Some(basic_header(username, password))),
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
        // Renew a little early so a token never expires mid-request; whatever lifetime the
        // token server claims, it is asked again within the hour.
        let ttl = ttl
            .min(MAX_TOKEN_TTL)
            .saturating_sub(Duration::from_secs(10))
            .max(Duration::from_secs(1));
        let now = Instant::now();
        self.tokens.lock().expect("token lock").insert(
            scope.to_string(),
            CachedToken {
                token: token.clone(),
                expires: now.checked_add(ttl).unwrap_or(now),
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
        let sends_credentials = !matches!(self.credentials, Credentials::Anonymous);
        if matches!(self.credentials, Credentials::CloudLogin { .. })
            && !realm_on_host(realm, &self.registry)
        {
            return Err(fail(format!(
                "the token endpoint is not on the registry's own host '{}' over HTTPS; a cloud login goes nowhere else",
                self.registry
            )));
        }
        if sends_credentials && !realm.starts_with("https://") && !self.insecure {
            return Err(fail(
                "the token endpoint is plain HTTP; credentials are sent over plain HTTP only when the object sets `insecure: true`".into(),
            ));
        }
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
            Credentials::Basic { username, password }
            | Credentials::CloudLogin { username, password } => self
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
        let body = read_body(resp, MAX_SMALL_BODY, realm)
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
/// A streamed blob is bounded by its reader (size, and the controller's pull deadline); this
/// only ends one that nobody bounds.
const BLOB_STREAM_TIMEOUT: Duration = Duration::from_secs(60 * 60);
/// Tokens are cached for at most this long, whatever lifetime the token server claims.
const MAX_TOKEN_TTL: Duration = Duration::from_secs(60 * 60);
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

impl RegistryError {
    /// How long the registry asked to wait before the next request, if it did.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            RegistryError::Throttled { retry_after, .. } => *retry_after,
            _ => None,
        }
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
    let wait = retry_after(resp.headers());
    let detail = read_body(resp, MAX_SMALL_BODY, url)
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
        StatusCode::TOO_MANY_REQUESTS => RegistryError::Throttled {
            method,
            url,
            status,
            retry_after: wait,
            detail,
        },
        s if s.is_server_error() && wait.is_some() => RegistryError::Throttled {
            method,
            url,
            status,
            retry_after: wait,
            detail,
        },
        _ => RegistryError::Status {
            method,
            url,
            status,
            detail,
        },
    })
}

/// The one way a registry response body is read: whole, and never more than `limit` bytes,
/// whatever the registry announces or sends.
async fn read_body(resp: Response, limit: usize, url: &str) -> Result<bytes::Bytes, RegistryError> {
    use futures::StreamExt;
    let too_large = || RegistryError::BodyTooLarge {
        url: url.into(),
        limit,
    };
    let announced = resp.content_length().map(usize::try_from);
    if announced.is_some_and(|l| l.map_or(true, |l| l > limit)) {
        return Err(too_large());
    }
    let mut body = bytes::BytesMut::new();
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| RegistryError::Transport {
            method: Method::GET,
            url: url.into(),
            cause: error_chain(&e.without_url()),
        })?;
        if body.len().saturating_add(chunk.len()) > limit {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// A digest we can verify content against (see `digest`), before anything is requested by it.
fn checkable_digest(digest: &str, url: &str) -> Result<(), RegistryError> {
    content_digest::algorithm(digest)
        .map(|_| ())
        .map_err(|cause| RegistryError::UnsupportedDigest {
            url: url.into(),
            cause,
        })
}

/// Content fetched by digest must be what the digest names.
fn verify_digest(expected: &str, bytes: &[u8], url: &str) -> Result<(), RegistryError> {
    match content_digest::check(expected, bytes) {
        Ok(Ok(())) => Ok(()),
        Ok(Err(actual)) => Err(RegistryError::DigestMismatch {
            url: url.into(),
            expected: expected.into(),
            actual,
        }),
        Err(cause) => Err(RegistryError::UnsupportedDigest {
            url: url.into(),
            cause,
        }),
    }
}

fn tag_limit(url: &str, limit: String) -> RegistryError {
    RegistryError::TagListTooLarge {
        url: url.into(),
        limit,
    }
}

/// Appends the `tags` of one tag-list page to `tags`, one at a time, so that a page packed
/// with more tags than `MAX_TAGS` is refused while it is parsed, not after it filled memory.
fn append_tag_page(body: &[u8], tags: &mut Vec<String>, url: &str) -> Result<(), RegistryError> {
    use serde::de::DeserializeSeed;
    let mut de = serde_json::Deserializer::from_slice(body);
    let parsed = TagPage { tags: &mut *tags }
        .deserialize(&mut de)
        .and_then(|()| de.end());
    match parsed {
        Ok(()) => Ok(()),
        Err(_) if tags.len() >= MAX_TAGS => Err(tag_limit(url, format!("{MAX_TAGS} tags"))),
        Err(e) => Err(RegistryError::Invalid {
            url: url.into(),
            reason: e.to_string(),
        }),
    }
}

/// A tag-list page (`{"name": ..., "tags": [...]}`) read into a shared list.
struct TagPage<'a> {
    tags: &'a mut Vec<String>,
}

impl<'de> serde::de::DeserializeSeed<'de> for TagPage<'_> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> serde::de::Visitor<'de> for TagPage<'_> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a tag list object")
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<String>()? {
            if key == "tags" {
                map.next_value_seed(TagArray {
                    tags: &mut *self.tags,
                })?;
            } else {
                map.next_value::<serde::de::IgnoredAny>()?;
            }
        }
        Ok(())
    }
}

/// The `tags` array (or `null`, which some registries send for an empty repository).
struct TagArray<'a> {
    tags: &'a mut Vec<String>,
}

impl<'de> serde::de::DeserializeSeed<'de> for TagArray<'_> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for TagArray<'_> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an array of tags or null")
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(tag) = seq.next_element::<String>()? {
            if self.tags.len() >= MAX_TAGS {
                return Err(serde::de::Error::custom("too many tags"));
            }
            self.tags.push(tag);
        }
        Ok(())
    }
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

    #[test]
    fn cloud_logins_go_to_token_endpoints_on_the_registry_host_only() {
        let host = "1.dkr.ecr.us-east-1.amazonaws.com";
        assert!(realm_on_host(&format!("https://{host}/oauth2/token"), host));
        for realm in [
            format!("http://{host}/oauth2/token"),
            format!("https://{host}.evil.com/token"),
            format!("https://{host}:8443/token"),
            format!("https://{host}@evil.com/token"),
            "https://auth.example.com/token".to_string(),
            format!("https://{host}"),
        ] {
            assert!(!realm_on_host(&realm, host), "{realm}");
        }
    }
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

    async fn serve(router: axum::Router) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        address
    }

    fn client(address: &str, credentials: Credentials, insecure: bool) -> RegistryClient {
        let transport = Transport {
            insecure,
            ..Default::default()
        };
        RegistryClient::new(address, credentials, &transport, "test").unwrap()
    }

    /// A plain-HTTP registry on a loopback address that wants Basic credentials, and the
    /// Authorization headers it was sent.
    async fn basic_auth_registry() -> (String, Arc<Mutex<Vec<String>>>) {
        use axum::response::IntoResponse;
        let seen: Arc<Mutex<Vec<String>>> = Arc::default();
        let log = seen.clone();
        let manifest = move |headers: HeaderMap| {
            let log = log.clone();
            async move {
                let Some(auth) = header_str(&headers, AUTHORIZATION.as_str()) else {
                    let challenge = [(WWW_AUTHENTICATE, r#"Basic realm="r""#)];
                    return (StatusCode::UNAUTHORIZED, challenge).into_response();
                };
                log.lock().unwrap().push(auth.to_string());
                ([(CONTENT_TYPE, OCI_MANIFEST)], "{}").into_response()
            }
        };
        let router =
            axum::Router::new().route("/v2/app/manifests/latest", axum::routing::get(manifest));
        (serve(router).await, seen)
    }

    #[tokio::test]
    async fn credentials_never_travel_over_a_plain_http_fallback_nobody_asked_for() {
        let (address, seen) = basic_auth_registry().await;
        let basic = Credentials::Basic {
            username: "u".into(),
            password: "hunter2".into(),
        };
        let unasked = client(&address, basic.clone(), false);
        let err = unasked.get_manifest("app", "latest").await.unwrap_err();
        assert!(
            matches!(&err, RegistryError::CredentialsNeedTls { url, .. } if url.starts_with("http://")),
            "{err}"
        );
        assert!(seen.lock().unwrap().is_empty(), "nothing sent in clear");

        let asked = client(&address, basic, true);
        asked.get_manifest("app", "latest").await.unwrap();
        assert_eq!(seen.lock().unwrap().len(), 1, "insecure: true sends them");
    }

    #[tokio::test]
    async fn the_scheme_a_sequence_settles_on_stays_in_that_sequence() {
        let (address, _) = basic_auth_registry().await;
        let transport = Transport::default();
        let connection =
            RegistryConnection::new(&address, Credentials::Anonymous, &transport, "test").unwrap();
        let first = RegistryClient::session(&connection);
        let _ = first.get_manifest("app", "latest").await;
        assert_eq!(first.scheme.get(), Some(&Scheme::Http), "fell back");
        let next = RegistryClient::session(&connection);
        assert!(next.base().starts_with("https://"), "starts over with TLS");
        assert!(!connection.spoke_tls.load(Ordering::Relaxed));
    }

    #[tokio::test]
    async fn a_plain_http_registry_is_remembered_for_anonymous_insecure_objects_only() {
        let (address, _) = basic_auth_registry().await;
        let insecure = Transport {
            insecure: true,
            ..Transport::default()
        };
        let connection =
            RegistryConnection::new(&address, Credentials::Anonymous, &insecure, "test").unwrap();
        let first = RegistryClient::session(&connection);
        let _ = first.get_manifest("app", "latest").await;
        assert_eq!(first.scheme.get(), Some(&Scheme::Http), "fell back");
        let next = RegistryClient::session(&connection);
        assert!(next.base().starts_with("http://"), "no new TLS handshake");
        // Past the memory, HTTPS is tried again.
        *connection.plain_until.lock().unwrap() = Some(Instant::now());
        assert!(
            RegistryClient::session(&connection)
                .base()
                .starts_with("https://")
        );

        // Not for objects that did not ask for plain HTTP (a local address alone allows an
        // anonymous fallback), nor for credentials.
        let basic = Credentials::Basic {
            username: "u".into(),
            password: "p".into(),
        };
        for (credentials, transport) in [
            (Credentials::Anonymous, Transport::default()),
            (basic, insecure.clone()),
        ] {
            let connection =
                RegistryConnection::new(&address, credentials, &transport, "test").unwrap();
            let first = RegistryClient::session(&connection);
            let _ = first.get_manifest("app", "latest").await;
            assert_eq!(first.scheme.get(), Some(&Scheme::Http), "fell back");
            let next = RegistryClient::session(&connection);
            assert!(next.base().starts_with("https://"), "nothing remembered");
        }

        // Nothing answering at all (an outage) teaches nothing.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let gone = closed.local_addr().unwrap().to_string();
        drop(closed);
        let connection =
            RegistryConnection::new(&gone, Credentials::Anonymous, &insecure, "test").unwrap();
        let _ = RegistryClient::session(&connection)
            .get_manifest("app", "latest")
            .await;
        assert!(
            RegistryClient::session(&connection)
                .base()
                .starts_with("https://")
        );
    }

    #[tokio::test]
    async fn content_fetched_by_digest_is_verified_with_its_algorithm() {
        use sha2::Sha512;
        let served = b"{\"schemaVersion\":2}".to_vec();
        let claimed = format!("sha512:{}", hex::encode(Sha512::digest(b"other")));
        let honest = format!("sha512:{}", hex::encode(Sha512::digest(&served)));
        let requests = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = requests.clone();
        let body = served.clone();
        let router = axum::Router::new().fallback(move || {
            count.fetch_add(1, Ordering::SeqCst);
            let body = body.clone();
            async move { ([(CONTENT_TYPE, OCI_MANIFEST)], body) }
        });
        let address = serve(router).await;
        let c = client(&address, Credentials::Anonymous, true);
        let err = c.get_manifest("app", &claimed).await.unwrap_err();
        assert!(
            matches!(&err, RegistryError::DigestMismatch { expected, actual, .. }
                if *expected == claimed && *actual == honest),
            "{err}"
        );
        assert_eq!(c.get_manifest("app", &honest).await.unwrap().digest, honest);
        let blob = c.get_small_blob("app", &honest, 1024).await.unwrap();
        assert_eq!(blob.as_ref(), served.as_slice());
        let before = requests.load(Ordering::SeqCst);
        for refused in [format!("md5:{}", "0".repeat(32)), "sha256:../../x".into()] {
            let err = c.get_manifest("app", &refused).await.unwrap_err();
            assert!(
                matches!(err, RegistryError::UnsupportedDigest { .. }),
                "{err}"
            );
            assert!(c.get_blob("app", &refused).await.is_err());
        }
        assert_eq!(requests.load(Ordering::SeqCst), before, "never requested");
    }

    #[test]
    fn tag_pages_are_read_within_the_tag_limit() {
        let mut tags = Vec::new();
        append_tag_page(br#"{"name":"a","tags":null}"#, &mut tags, "u").unwrap();
        append_tag_page(br#"{"tags":["v1","v2"],"name":"a"}"#, &mut tags, "u").unwrap();
        assert_eq!(tags, ["v1", "v2"]);
        let invalid = append_tag_page(br#"{"tags":[1]}"#, &mut tags, "u").unwrap_err();
        assert!(
            matches!(invalid, RegistryError::Invalid { .. }),
            "{invalid}"
        );

        let mut full = vec![String::new(); MAX_TAGS - 1];
        append_tag_page(br#"{"tags":["last"]}"#, &mut full, "u").unwrap();
        let err = append_tag_page(br#"{"tags":["one-more"]}"#, &mut full, "u").unwrap_err();
        assert_eq!(
            err.to_string(),
            "listing tags at u: the tag list exceeds the limit of 100000 tags"
        );
        assert_eq!(full.len(), MAX_TAGS);
    }

    #[tokio::test]
    async fn every_body_is_read_within_its_limit() {
        let chunked = || {
            let chunks =
                (0..64).map(|_| Ok::<_, std::io::Error>(bytes::Bytes::from(vec![b'x'; 1024])));
            axum::body::Body::from_stream(futures::stream::iter(chunks))
        };
        let router = axum::Router::new()
            .route(
                "/v2/app/manifests/announced",
                axum::routing::get(|| async { vec![b'x'; 64 * 1024] }),
            )
            .route(
                "/v2/app/manifests/streamed",
                axum::routing::get(move || async move { chunked() }),
            );
        let address = serve(router).await;
        let c = client(&address, Credentials::Anonymous, true);
        for reference in ["announced", "streamed"] {
            let url = format!("{}/v2/app/manifests/{reference}", c.base());
            let resp = c.send(Method::GET, &url, "s", |r| r).await.unwrap().0;
            let err = read_body(resp, 1000, &url).await.unwrap_err();
            assert!(
                matches!(err, RegistryError::BodyTooLarge { limit: 1000, .. }),
                "{err}"
            );
        }
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
