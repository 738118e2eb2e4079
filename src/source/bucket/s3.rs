//! The S3 API (provider `generic` and `aws`): HeadBucket, ListObjectsV2 and GetObject, signed
//! with AWS Signature Version 4; credentials from the Secret, MinIO's LDAP STS, or the AWS
//! chain (environment, web identity/IRSA, container credentials/Pod Identity, IMDSv2).

use std::path::Path;

use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::auth::{self, Token, cached_token, hmac_sha256, xml_text};
use super::object::{
    BucketError, Fetched, ListBudget, Listed, PageEntries, answer_text, response_error, uri_encode,
    write_body,
};
use crate::identity::endpoints::aws_regional_sts;
use crate::transport::error_chain;

const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
pub const DEFAULT_REGION: &str = "us-east-1";
const LIST_PAGE: u32 = 1000;

#[derive(Clone, PartialEq, Eq)]
pub struct StaticKeys {
    pub access_key: String,
    pub secret_key: String,
    pub session_token: Option<String>,
}

impl std::fmt::Debug for StaticKeys {
    // Secrets never reach logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StaticKeys")
            .field("access_key", &self.access_key)
            .finish_non_exhaustive()
    }
}

/// Where the request signature's keys come from.
#[derive(Clone)]
pub enum AwsAuth {
    Anonymous,
    Static(StaticKeys),
    /// MinIO's `AssumeRoleWithLDAPIdentity` on `sts.endpoint`.
    Ldap {
        endpoint: String,
        username: String,
        password: String,
    },
    /// The controller's own AWS identity; `sts_endpoint` overrides the regional STS.
    Chain {
        sts_endpoint: Option<String>,
    },
    /// A ServiceAccount's token exchanged for the role in its `eks.amazonaws.com/role-arn`.
    ObjectWebIdentity {
        identity: super::workload::Identity,
        role_arn: String,
        sts_endpoint: Option<String>,
    },
}

pub struct S3Client {
    http: reqwest::Client,
    /// Fetches the credentials: the controller's own transport when they are the controller's.
    credential_http: reqwest::Client,
    /// `scheme://host[:port]`
    origin: String,
    bucket: String,
    region: std::sync::Mutex<String>,
    region_fixed: bool,
    virtual_host: bool,
    auth: AwsAuth,
}

/// `scheme://host[:port]` of a Flux S3 endpoint: `host[:port]` (a scheme, when given, wins
/// over `insecure`).
pub fn endpoint_origin(endpoint: &str, insecure: bool) -> Result<String, String> {
    let origin = match endpoint.split_once("://") {
        Some(("http" | "https", _)) => endpoint.trim_end_matches('/').to_string(),
        Some((scheme, _)) => return Err(format!("unsupported endpoint scheme '{scheme}'")),
        None if insecure => format!("http://{}", endpoint.trim_end_matches('/')),
        None => format!("https://{}", endpoint.trim_end_matches('/')),
    };
    let host = origin.split_once("://").map(|(_, h)| h).unwrap_or_default();
    if host.is_empty() || host.contains('/') {
        return Err(format!(
            "endpoint '{endpoint}' must be host[:port] without a path"
        ));
    }
    Ok(origin)
}

impl S3Client {
    /// `endpoint` is `host[:port]` as Flux takes it (a scheme, when given, wins over
    /// `insecure`).
    pub fn new(
        http: reqwest::Client,
        endpoint: &str,
        insecure: bool,
        bucket: &str,
        region: Option<&str>,
        auth: AwsAuth,
    ) -> Result<Self, String> {
        let origin = endpoint_origin(endpoint, insecure)?;
        let host = origin.split_once("://").map(|(_, h)| h).unwrap_or_default();
        // Like minio-go: AWS endpoints get virtual-hosted style when the name allows it.
        let virtual_host = host.ends_with(".amazonaws.com")
            && !bucket.contains('.')
            && bucket
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        let region = region.filter(|r| !r.is_empty());
        Ok(S3Client {
            credential_http: http.clone(),
            http,
            origin,
            bucket: bucket.to_string(),
            region: std::sync::Mutex::new(region.unwrap_or(DEFAULT_REGION).to_string()),
            region_fixed: region.is_some(),
            virtual_host,
            auth,
        })
    }

    /// Credentials are fetched through `http` instead of the bucket's own client.
    pub fn with_credential_http(mut self, http: reqwest::Client) -> Self {
        self.credential_http = http;
        self
    }

    fn region(&self) -> String {
        self.region.lock().expect("region lock").clone()
    }

    /// The URL of `key` in the bucket (`""` for the bucket itself), and the host it is on.
    fn url(&self, key: &str, query: &[(&str, String)]) -> String {
        let path = match (self.virtual_host, key) {
            (true, k) => format!("/{}", uri_encode(k, true)),
            (false, "") => format!("/{}", uri_encode(&self.bucket, false)),
            (false, k) => format!(
                "/{}/{}",
                uri_encode(&self.bucket, false),
                uri_encode(k, true)
            ),
        };
        let origin = match self.virtual_host {
            true => self
                .origin
                .replacen("://", &format!("://{}.", self.bucket), 1),
            false => self.origin.clone(),
        };
        format!("{origin}{path}{}", canonical_query(query, true))
    }

    async fn send(
        &self,
        method: reqwest::Method,
        key: &str,
        query: &[(&str, String)],
        headers: &[(&str, String)],
    ) -> Result<reqwest::Response, BucketError> {
        let url = self.url(key, query);
        let mut request = self.http.request(method.clone(), &url);
        for (k, v) in headers {
            request = request.header(*k, v);
        }
        if let Some(keys) = self.keys().await? {
            let parsed =
                reqwest::Url::parse(&url).map_err(|e| BucketError::request(e.to_string()))?;
            let signed = sign_v4(
                &SigningRequest {
                    method: method.as_str(),
                    host: &host_header(&parsed),
                    path: parsed.path(),
                    query,
                    headers,
                },
                &keys,
                &self.region(),
                jiff::Timestamp::now(),
            );
            for (k, v) in signed {
                request = request.header(k, v);
            }
        }
        request
            .send()
            .await
            .map_err(|e| BucketError::request(format!("{method} {url}: {}", error_chain(&e))))
    }

    async fn keys(&self) -> Result<Option<StaticKeys>, BucketError> {
        match &self.auth {
            AwsAuth::Anonymous => Ok(None),
            AwsAuth::Static(keys) => Ok(Some(keys.clone())),
            AwsAuth::Ldap {
                endpoint,
                username,
                password,
            } => ldap_keys(&self.credential_http, endpoint, username, password)
                .await
                .map(Some)
                .map_err(BucketError::request),
            AwsAuth::Chain { sts_endpoint } => chain_keys(
                &self.credential_http,
                sts_endpoint.as_deref(),
                &self.region(),
            )
            .await
            .map(Some)
            .map_err(BucketError::request),
            AwsAuth::ObjectWebIdentity {
                identity,
                role_arn,
                sts_endpoint,
            } => {
                let endpoint = match sts_endpoint {
                    Some(e) => e.clone(),
                    None => aws_regional_sts(&self.region()).map_err(BucketError::request)?,
                };
                let key = identity.cache_key(format!("aws {role_arn} {endpoint}").as_bytes());
                let value = cached_token(&key, || async {
                    let token = identity.token(super::workload::AWS_AUDIENCE).await?;
                    let session = format!("{}.{}", identity.namespace, identity.name);
                    sts_call(
                        &self.credential_http,
                        &endpoint,
                        &[
                            ("Action", "AssumeRoleWithWebIdentity"),
                            ("Version", "2011-06-15"),
                            ("RoleArn", role_arn),
                            ("RoleSessionName", &session),
                            ("WebIdentityToken", &token),
                        ],
                    )
                    .await
                })
                .await
                .map_err(BucketError::request)?;
                keys_from_token(&value)
                    .map(Some)
                    .map_err(BucketError::request)
            }
        }
    }

    pub async fn bucket_exists(&self) -> Result<bool, BucketError> {
        let mut response = self.send(reqwest::Method::HEAD, "", &[], &[]).await?;
        // AWS names the bucket's region when it is not the one we signed for.
        if !self.region_fixed
            && let Some(region) = response
                .headers()
                .get("x-amz-bucket-region")
                .and_then(|v| v.to_str().ok())
                .filter(|r| *r != self.region())
                .map(str::to_string)
        {
            *self.region.lock().expect("region lock") = region;
            response = self.send(reqwest::Method::HEAD, "", &[], &[]).await?;
        }
        match response.status() {
            s if s.is_success() => Ok(true),
            reqwest::StatusCode::NOT_FOUND => Ok(false),
            // HEAD has no body; a one-key listing says why (e.g. SignatureDoesNotMatch).
            _ => {
                let query = [
                    ("list-type", "2".to_string()),
                    ("max-keys", "1".to_string()),
                ];
                let listing = self.send(reqwest::Method::GET, "", &query, &[]).await?;
                if listing.status() == reqwest::StatusCode::NOT_FOUND {
                    return Ok(false);
                }
                Err(response_error("HeadBucket", listing).await)
            }
        }
    }

    pub async fn list(
        &self,
        prefix: &str,
        budget: &mut ListBudget,
        visit: &mut (dyn FnMut(Vec<Listed>) -> Result<(), BucketError> + Send),
    ) -> Result<(), BucketError> {
        let mut token: Option<String> = None;
        loop {
            let mut query = vec![
                ("list-type", "2".to_string()),
                ("max-keys", LIST_PAGE.to_string()),
                ("encoding-type", "url".to_string()),
            ];
            if !prefix.is_empty() {
                query.push(("prefix", prefix.to_string()));
            }
            if let Some(t) = &token {
                query.push(("continuation-token", t.clone()));
            }
            let response = self.send(reqwest::Method::GET, "", &query, &[]).await?;
            if !response.status().is_success() {
                return Err(response_error("ListObjectsV2", response).await);
            }
            match budget.take_page(response, list_page, visit).await? {
                Some(next) => token = Some(next),
                None => return Ok(()),
            }
        }
    }

    pub async fn fetch(
        &self,
        key: &str,
        listed_etag: Option<&str>,
        dest: &Path,
        max_bytes: u64,
    ) -> Result<Fetched, BucketError> {
        let etag = listed_etag.unwrap_or_default();
        let conditional = [("If-Match", format!("\"{}\"", etag.trim_matches('"')))];
        let headers: &[(&str, String)] = if etag.is_empty() { &[] } else { &conditional };
        let mut response = self.send(reqwest::Method::GET, key, &[], headers).await?;
        if response.status() == reqwest::StatusCode::PRECONDITION_FAILED {
            // Changed since it was listed: take the current version and its etag.
            response = self.send(reqwest::Method::GET, key, &[], &[]).await?;
        }
        match response.status() {
            reqwest::StatusCode::NOT_FOUND => Ok(Fetched::NotFound),
            s if s.is_success() => {
                let etag = header(&response, "etag").unwrap_or_else(|| etag.to_string());
                let bytes = write_body(response, dest, max_bytes).await?;
                Ok(Fetched::Written { etag, bytes })
            }
            _ => Err(response_error(&format!("GetObject '{key}'"), response).await),
        }
    }
}

/// One ListObjectsV2 answer: its objects, and the continuation token when there is more.
#[doc(hidden)]
pub fn list_page(body: &[u8]) -> Result<(Vec<Listed>, Option<String>), BucketError> {
    let page: ListBucketResult = quick_xml::de::from_str(&String::from_utf8_lossy(body))
        .map_err(|e| BucketError::request(format!("invalid ListObjectsV2 answer: {e}")))?;
    let url_encoded = page.encoding_type.as_deref() == Some("url");
    let entries = page
        .contents
        .0
        .into_iter()
        .map(|c| Listed {
            key: if url_encoded {
                url_decode(&c.key)
            } else {
                c.key
            },
            etag: c.etag,
            size: c.size,
            version: None,
        })
        .collect();
    let next = match (page.is_truncated, page.next_continuation_token) {
        (true, Some(next)) if !next.is_empty() => Some(next),
        _ => None,
    };
    Ok((entries, next))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListBucketResult {
    #[serde(default)]
    is_truncated: bool,
    #[serde(default)]
    next_continuation_token: Option<String>,
    #[serde(default)]
    encoding_type: Option<String>,
    #[serde(default)]
    contents: PageEntries<Contents>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Contents {
    key: String,
    #[serde(rename = "ETag", default)]
    etag: String,
    #[serde(default)]
    size: u64,
}

fn header(response: &reqwest::Response, name: &str) -> Option<String> {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

fn host_header(url: &reqwest::Url) -> String {
    let host = url.host_str().unwrap_or_default();
    match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_string(),
    }
}

fn url_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

/// `?k=v&...` with keys sorted and both sides URI-encoded: the canonical query SigV4 signs
/// is also the one sent.
fn canonical_query(query: &[(&str, String)], with_mark: bool) -> String {
    let mut pairs: Vec<(String, String)> = query
        .iter()
        .map(|(k, v)| (uri_encode(k, false), uri_encode(v, false)))
        .collect();
    pairs.sort();
    let joined = pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");
    match (with_mark, joined.is_empty()) {
        (true, false) => format!("?{joined}"),
        _ => joined,
    }
}

struct SigningRequest<'a> {
    method: &'a str,
    host: &'a str,
    /// Already URI-encoded, as sent.
    path: &'a str,
    query: &'a [(&'a str, String)],
    headers: &'a [(&'a str, String)],
}

/// The headers that make a request SigV4-signed (`Authorization`, `x-amz-date`,
/// `x-amz-content-sha256`, and the session token when there is one). Bodies are empty.
fn sign_v4(
    request: &SigningRequest<'_>,
    keys: &StaticKeys,
    region: &str,
    now: jiff::Timestamp,
) -> Vec<(&'static str, String)> {
    let amz_date = now.strftime("%Y%m%dT%H%M%SZ").to_string();
    let date = &amz_date[..8];
    let mut headers: Vec<(String, String)> = vec![
        ("host".into(), request.host.to_string()),
        ("x-amz-content-sha256".into(), EMPTY_SHA256.into()),
        ("x-amz-date".into(), amz_date.clone()),
    ];
    if let Some(token) = &keys.session_token {
        headers.push(("x-amz-security-token".into(), token.clone()));
    }
    for (k, v) in request.headers {
        headers.push((k.to_ascii_lowercase(), v.trim().to_string()));
    }
    headers.sort();
    let signed_headers = headers
        .iter()
        .map(|(k, _)| k.as_str())
        .collect::<Vec<_>>()
        .join(";");
    let canonical_headers: String = headers.iter().map(|(k, v)| format!("{k}:{v}\n")).collect();
    let canonical_request = format!(
        "{}\n{}\n{}\n{canonical_headers}\n{signed_headers}\n{EMPTY_SHA256}",
        request.method,
        request.path,
        canonical_query(request.query, false),
    );
    let scope = format!("{date}/{region}/s3/aws4_request");
    let string_to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
        hex::encode(Sha256::digest(canonical_request.as_bytes()))
    );
    let mut key = hmac_sha256(
        format!("AWS4{}", keys.secret_key).as_bytes(),
        date.as_bytes(),
    );
    for part in [region, "s3", "aws4_request"] {
        key = hmac_sha256(&key, part.as_bytes());
    }
    let signature = hex::encode(hmac_sha256(&key, string_to_sign.as_bytes()));
    let mut out = vec![
        (
            "authorization",
            format!(
                "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={signed_headers}, Signature={signature}",
                keys.access_key
            ),
        ),
        ("x-amz-content-sha256", EMPTY_SHA256.to_string()),
        ("x-amz-date", amz_date),
    ];
    if let Some(token) = &keys.session_token {
        out.push(("x-amz-security-token", token.clone()));
    }
    out
}

/// Session keys serialised into one cache entry.
fn keys_token(keys: &StaticKeys, expires: Option<&str>) -> Token {
    let value =
        serde_json::json!([keys.access_key, keys.secret_key, keys.session_token]).to_string();
    let expires = expires
        .and_then(|e| e.parse::<jiff::Timestamp>().ok())
        .map(|t| {
            let secs = (t.as_second() - jiff::Timestamp::now().as_second()).max(0);
            std::time::Instant::now() + std::time::Duration::from_secs(secs as u64)
        })
        .unwrap_or_else(|| auth::expiry(None));
    Token { value, expires }
}

fn keys_from_token(value: &str) -> Result<StaticKeys, String> {
    let (access_key, secret_key, session_token): (String, String, Option<String>) =
        serde_json::from_str(value).map_err(|e| e.to_string())?;
    Ok(StaticKeys {
        access_key,
        secret_key,
        session_token,
    })
}

/// Credentials in an STS answer (`AssumeRoleWith*Result/Credentials`).
fn sts_credentials(xml: &str) -> Result<Token, String> {
    let get = |tag| xml_text(xml, tag).ok_or_else(|| format!("STS answer has no {tag}"));
    let keys = StaticKeys {
        access_key: get("AccessKeyId")?,
        secret_key: get("SecretAccessKey")?,
        session_token: xml_text(xml, "SessionToken"),
    };
    Ok(keys_token(&keys, xml_text(xml, "Expiration").as_deref()))
}

async fn sts_call(
    http: &reqwest::Client,
    endpoint: &str,
    form: &[(&str, &str)],
) -> Result<Token, String> {
    let response = http
        .post(endpoint)
        .form(form)
        .send()
        .await
        .map_err(|e| format!("STS request to {endpoint} failed: {}", error_chain(&e)))?;
    let status = response.status();
    let body = answer_text(response).await;
    if !status.is_success() {
        let detail =
            xml_text(&body, "Message").unwrap_or_else(|| format!("HTTP {}", status.as_u16()));
        return Err(format!("STS {endpoint} refused the request: {detail}"));
    }
    sts_credentials(&body)
}

async fn ldap_keys(
    http: &reqwest::Client,
    endpoint: &str,
    username: &str,
    password: &str,
) -> Result<StaticKeys, String> {
    let key = auth::cache_key(&[
        b"ldap",
        endpoint.as_bytes(),
        username.as_bytes(),
        password.as_bytes(),
    ]);
    let value = cached_token(&key, || async {
        sts_call(
            http,
            endpoint,
            &[
                ("Action", "AssumeRoleWithLDAPIdentity"),
                ("Version", "2011-06-15"),
                ("LDAPUsername", username),
                ("LDAPPassword", password),
            ],
        )
        .await
    })
    .await?;
    keys_from_token(&value)
}

/// The AWS default chain, as the SDKs walk it.
async fn chain_keys(
    http: &reqwest::Client,
    sts_endpoint: Option<&str>,
    region: &str,
) -> Result<StaticKeys, String> {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    if let (Some(access_key), Some(secret_key)) =
        (env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY"))
    {
        return Ok(StaticKeys {
            access_key,
            secret_key,
            session_token: env("AWS_SESSION_TOKEN"),
        });
    }
    if let (Some(token_file), Some(role)) =
        (env("AWS_WEB_IDENTITY_TOKEN_FILE"), env("AWS_ROLE_ARN"))
    {
        let endpoint = match sts_endpoint
            .map(str::to_string)
            .or_else(|| env("AWS_ENDPOINT_URL_STS"))
        {
            Some(e) => e,
            None => aws_regional_sts(region)?,
        };
        let key = auth::cache_key(&[b"web-identity", endpoint.as_bytes(), role.as_bytes()]);
        let value = cached_token(&key, || async {
            let token = std::fs::read_to_string(&token_file)
                .map_err(|e| format!("reading web identity token {token_file}: {e}"))?;
            let session = env("AWS_ROLE_SESSION_NAME").unwrap_or_else(|| "driftless".into());
            sts_call(
                http,
                &endpoint,
                &[
                    ("Action", "AssumeRoleWithWebIdentity"),
                    ("Version", "2011-06-15"),
                    ("RoleArn", &role),
                    ("RoleSessionName", &session),
                    ("WebIdentityToken", token.trim()),
                ],
            )
            .await
        })
        .await?;
        return keys_from_token(&value);
    }
    if let Some(uri) = env("AWS_CONTAINER_CREDENTIALS_FULL_URI").or_else(|| {
        env("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI").map(|p| format!("http://169.254.170.2{p}"))
    }) {
        let key = auth::cache_key(&[b"container", uri.as_bytes()]);
        let value = cached_token(&key, || container_credentials(http, &uri)).await?;
        return keys_from_token(&value);
    }
    let key = auth::cache_key(&[b"imds"]);
    let value = cached_token(&key, || instance_credentials(http)).await.map_err(|e| {
        format!("no AWS credentials: not in the environment, no web identity or container credentials, and the instance metadata service failed: {e}")
    })?;
    keys_from_token(&value)
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct JsonCredentials {
    access_key_id: String,
    secret_access_key: String,
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    expiration: Option<String>,
}

impl JsonCredentials {
    fn into_token(self) -> Token {
        keys_token(
            &StaticKeys {
                access_key: self.access_key_id,
                secret_key: self.secret_access_key,
                session_token: self.token,
            },
            self.expiration.as_deref(),
        )
    }
}

/// EKS Pod Identity and ECS task roles.
async fn container_credentials(http: &reqwest::Client, uri: &str) -> Result<Token, String> {
    let mut request = http.get(uri);
    let token = match std::env::var("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE") {
        Ok(file) => std::fs::read_to_string(&file).ok(),
        Err(_) => std::env::var("AWS_CONTAINER_AUTHORIZATION_TOKEN").ok(),
    };
    if let Some(token) = token {
        request = request.header("Authorization", token.trim());
    }
    let response = request
        .send()
        .await
        .map_err(|e| format!("container credentials from {uri}: {}", error_chain(&e)))?;
    if !response.status().is_success() {
        return Err(format!(
            "container credentials from {uri}: HTTP {}",
            response.status().as_u16()
        ));
    }
    let creds: JsonCredentials = response.json().await.map_err(|e| e.to_string())?;
    Ok(creds.into_token())
}

/// EC2 instance profile through IMDSv2.
async fn instance_credentials(http: &reqwest::Client) -> Result<Token, String> {
    const IMDS: &str = "http://169.254.169.254";
    let timeout = std::time::Duration::from_secs(2);
    let session = http
        .put(format!("{IMDS}/latest/api/token"))
        .header("X-aws-ec2-metadata-token-ttl-seconds", "21600")
        .timeout(timeout)
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .map_err(|e| error_chain(&e))?
        .text()
        .await
        .map_err(|e| e.to_string())?;
    let get = |path: String| {
        http.get(format!("{IMDS}{path}"))
            .header("X-aws-ec2-metadata-token", &session)
            .timeout(timeout)
            .send()
    };
    let role = get("/latest/meta-data/iam/security-credentials/".into())
        .await
        .and_then(|r| r.error_for_status())
        .map_err(|e| error_chain(&e))?
        .text()
        .await
        .map_err(|e| e.to_string())?;
    let role = role.lines().next().unwrap_or_default().trim().to_string();
    let creds: JsonCredentials = get(format!("/latest/meta-data/iam/security-credentials/{role}"))
        .await
        .and_then(|r| r.error_for_status())
        .map_err(|e| error_chain(&e))?
        .json()
        .await
        .map_err(|e| e.to_string())?;
    Ok(creds.into_token())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The worked example of AWS's SigV4 documentation for S3: GET Object with a Range
    /// header, an empty payload, 2013-05-24.
    #[test]
    fn sigv4_signs_like_aws_documents() {
        let keys = StaticKeys {
            access_key: "AKIAIOSFODNN7EXAMPLE".into(),
            secret_key: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".into(),
            session_token: None,
        };
        let now: jiff::Timestamp = "2013-05-24T00:00:00Z".parse().unwrap();
        let headers = sign_v4(
            &SigningRequest {
                method: "GET",
                host: "examplebucket.s3.amazonaws.com",
                path: "/test.txt",
                query: &[],
                headers: &[("Range", "bytes=0-9".into())],
            },
            &keys,
            "us-east-1",
            now,
        );
        let auth = &headers[0].1;
        assert!(auth.starts_with("AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, Signature="), "{auth}");
        assert_eq!(auth.rsplit('=').next().unwrap(), SIGV4_EXPECTED);
    }

    /// The signature AWS's documentation gives for this request.
    const SIGV4_EXPECTED: &str = "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41";

    #[test]
    fn query_is_sorted_and_encoded() {
        assert_eq!(
            canonical_query(
                &[("prefix", "a b/".into()), ("list-type", "2".into())],
                true
            ),
            "?list-type=2&prefix=a%20b%2F"
        );
        assert_eq!(canonical_query(&[], true), "");
    }

    #[test]
    fn list_pages_parse_with_and_without_url_encoding() {
        let xml = r#"<?xml version="1.0"?><ListBucketResult><IsTruncated>true</IsTruncated><NextContinuationToken>t1</NextContinuationToken><EncodingType>url</EncodingType><Contents><Key>a%20b.yaml</Key><ETag>"abc"</ETag><Size>3</Size></Contents><Contents><Key>c.yaml</Key><ETag>def</ETag><Size>4</Size></Contents></ListBucketResult>"#;
        let page: ListBucketResult = quick_xml::de::from_str(xml).unwrap();
        assert!(page.is_truncated);
        assert_eq!(page.next_continuation_token.as_deref(), Some("t1"));
        assert_eq!(page.contents.0.len(), 2);
        assert_eq!(url_decode(&page.contents.0[0].key), "a b.yaml");
        assert_eq!(page.contents.0[1].etag, "def");
        let empty: ListBucketResult = quick_xml::de::from_str(
            "<ListBucketResult><IsTruncated>false</IsTruncated></ListBucketResult>",
        )
        .unwrap();
        assert!(empty.contents.0.is_empty());
    }

    #[test]
    fn list_pages_with_too_many_keys_are_refused() {
        let entry = "<Contents><Key>k</Key><ETag>e</ETag><Size>1</Size></Contents>";
        let page = |n: usize| format!("<ListBucketResult>{}</ListBucketResult>", entry.repeat(n));
        let max = crate::source::bucket::object::MAX_PAGE_ENTRIES;
        let ok: ListBucketResult = quick_xml::de::from_str(&page(max)).unwrap();
        assert_eq!(ok.contents.0.len(), max);
        let err = quick_xml::de::from_str::<ListBucketResult>(&page(max + 1))
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("more than 10000 entries"), "{err}");
    }

    #[test]
    fn endpoints_take_flux_form_and_aws_gets_virtual_hosts() {
        let http = reqwest::Client::new();
        let c = S3Client::new(
            http.clone(),
            "127.0.0.1:8333",
            true,
            "b",
            None,
            AwsAuth::Anonymous,
        )
        .unwrap();
        assert_eq!(c.url("k/x y", &[]), "http://127.0.0.1:8333/b/k/x%20y");
        let aws = S3Client::new(
            http.clone(),
            "s3.amazonaws.com",
            false,
            "my-bucket",
            Some("eu-west-1"),
            AwsAuth::Anonymous,
        )
        .unwrap();
        assert_eq!(aws.url("k", &[]), "https://my-bucket.s3.amazonaws.com/k");
        assert!(S3Client::new(http, "h:1/path", false, "b", None, AwsAuth::Anonymous).is_err());
    }

    /// `spec.sts.endpoint` is the tenant's: an endpoint that answers without end (16 KiB a
    /// millisecond here, so that an unbounded read fails the test by time, not by memory) is
    /// read up to a bound, and the call ends.
    #[tokio::test]
    async fn endless_sts_answers_are_read_in_part() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}/", listener.local_addr().unwrap());
        let endless = || async {
            let chunks = futures::stream::unfold((), |()| async {
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                let chunk = bytes::Bytes::from(vec![b'x'; 16 << 10]);
                Some((Ok::<_, std::io::Error>(chunk), ()))
            });
            axum::body::Body::from_stream(chunks)
        };
        let app = axum::Router::new().fallback(endless);
        tokio::spawn(async move { axum::serve(listener, app).await });
        let http = reqwest::Client::new();
        let call = sts_call(&http, &endpoint, &[("Action", "x")]);
        let err = tokio::time::timeout(std::time::Duration::from_secs(10), call)
            .await
            .expect("the call ends")
            .err()
            .unwrap();
        assert_eq!(err, "STS answer has no AccessKeyId");
    }

    #[test]
    fn sts_answers_become_cached_session_keys() {
        let xml = "<AssumeRoleWithLDAPIdentityResponse><AssumeRoleWithLDAPIdentityResult><Credentials><AccessKeyId>A</AccessKeyId><SecretAccessKey>S</SecretAccessKey><SessionToken>T</SessionToken><Expiration>2099-01-01T00:00:00Z</Expiration></Credentials></AssumeRoleWithLDAPIdentityResult></AssumeRoleWithLDAPIdentityResponse>";
        let token = sts_credentials(xml).unwrap();
        let keys = keys_from_token(&token.value).unwrap();
        assert_eq!(
            (
                keys.access_key.as_str(),
                keys.secret_key.as_str(),
                keys.session_token.as_deref()
            ),
            ("A", "S", Some("T"))
        );
        assert!(token.expires > std::time::Instant::now() + std::time::Duration::from_secs(86400));
    }
}
