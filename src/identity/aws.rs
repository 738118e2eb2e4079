//! AWS credentials and request signing, shared by S3 buckets and ECR registries: static keys,
//! MinIO's LDAP STS, the controller's own chain (environment, web identity/IRSA, container
//! credentials/EKS Pod Identity, IMDSv2), a ServiceAccount's web identity, and Signature
//! Version 4.

use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::auth::{self, Token, cached_token, hmac_sha256, xml_text};
use super::endpoints::aws_regional_sts;
use crate::transport::{answer_text, error_chain};
use crate::util::uri_encode;

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

impl AwsAuth {
    /// What makes the keys someone's, for cache keys of what is made with them: the
    /// controller's own chain, or a ServiceAccount and its role (never the object asking).
    pub fn identity_key(&self) -> String {
        match self {
            AwsAuth::Anonymous => "anonymous".into(),
            AwsAuth::Static(keys) => auth::cache_key(&[
                b"static",
                keys.access_key.as_bytes(),
                keys.secret_key.as_bytes(),
            ]),
            AwsAuth::Ldap {
                endpoint,
                username,
                password,
            } => auth::cache_key(&[
                b"ldap",
                endpoint.as_bytes(),
                username.as_bytes(),
                password.as_bytes(),
            ]),
            AwsAuth::Chain { .. } => "controller".into(),
            AwsAuth::ObjectWebIdentity {
                identity, role_arn, ..
            } => format!("sa {}/{} {role_arn}", identity.namespace, identity.name),
        }
    }
}

/// The STS the operator's `AWS_ENDPOINT_URL_STS` names, else the region's own.
pub fn operator_sts_endpoint(region: &str) -> Result<String, String> {
    match std::env::var("AWS_ENDPOINT_URL_STS") {
        Ok(e) if !e.is_empty() => Ok(e),
        _ => aws_regional_sts(region),
    }
}

/// The keys `auth` stands for now (`None`: requests go unsigned), fetched through `http`
/// (the controller's own transport when the credentials are the controller's) and cached.
pub async fn session_keys(
    auth: &AwsAuth,
    http: &reqwest::Client,
    region: &str,
) -> Result<Option<StaticKeys>, String> {
    match auth {
        AwsAuth::Anonymous => Ok(None),
        AwsAuth::Static(keys) => Ok(Some(keys.clone())),
        AwsAuth::Ldap {
            endpoint,
            username,
            password,
        } => ldap_keys(http, endpoint, username, password)
            .await
            .map(Some),
        AwsAuth::Chain { sts_endpoint } => chain_keys(http, sts_endpoint.as_deref(), region)
            .await
            .map(Some),
        AwsAuth::ObjectWebIdentity {
            identity,
            role_arn,
            sts_endpoint,
        } => {
            let endpoint = match sts_endpoint {
                Some(e) => e.clone(),
                None => aws_regional_sts(region)?,
            };
            web_identity_keys(http, identity, role_arn, &endpoint, region)
                .await
                .map(Some)
        }
    }
}

/// A ServiceAccount's token exchanged at STS for the role it names.
async fn web_identity_keys(
    http: &reqwest::Client,
    identity: &super::workload::Identity,
    role_arn: &str,
    endpoint: &str,
    region: &str,
) -> Result<StaticKeys, String> {
    let key = identity.cache_key(format!("aws {role_arn} {endpoint}").as_bytes());
    let value = cached_token(&key, || async {
        let token = identity.token(super::workload::AWS_AUDIENCE).await?;
        let session = session_name(identity, region);
        sts_call(
            http,
            endpoint,
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
    .await?;
    keys_from_token(&value)
}

/// Keys of `role_arn`, assumed (STS `AssumeRole`, signed with `keys`, whose identity
/// `identity_key` names for the cache) at the region's STS or `AWS_ENDPOINT_URL_STS`.
pub async fn assume_role(
    http: &reqwest::Client,
    keys: &StaticKeys,
    identity_key: &str,
    role_arn: &str,
    session_name: &str,
    region: &str,
) -> Result<StaticKeys, String> {
    if !is_role_arn(role_arn) {
        return Err(format!(
            "'{role_arn}' is not an IAM role ARN (arn:aws…:iam::<account>:role/<name>)"
        ));
    }
    let endpoint = operator_sts_endpoint(region)?;
    let key = auth::cache_key(&[
        b"assume-role",
        identity_key.as_bytes(),
        role_arn.as_bytes(),
        endpoint.as_bytes(),
    ]);
    let value = cached_token(&key, || async {
        let form = [
            ("Action", "AssumeRole".to_string()),
            ("Version", "2011-06-15".to_string()),
            ("RoleArn", role_arn.to_string()),
            ("RoleSessionName", session_name.to_string()),
        ];
        let body = canonical_query(&form, false).into_bytes();
        let url =
            reqwest::Url::parse(&endpoint).map_err(|e| format!("STS endpoint {endpoint}: {e}"))?;
        let headers = [(
            "content-type",
            "application/x-www-form-urlencoded; charset=utf-8".to_string(),
        )];
        let (status, text) = send_signed(http, "POST", url, "sts", &headers, body, keys, region)
            .await
            .map_err(|e| format!("STS request to {endpoint} failed: {e}"))?;
        if !status.is_success() {
            let detail =
                xml_text(&text, "Message").unwrap_or_else(|| format!("HTTP {}", status.as_u16()));
            return Err(format!(
                "STS {endpoint} refused to assume {role_arn}: {detail}"
            ));
        }
        sts_credentials(&text)
    })
    .await?;
    keys_from_token(&value)
}

/// A SigV4-signed request (`method` to `url` with `headers` and `body`, for `service` in
/// `region`): the answer's status and text, read with the transport's bound.
#[allow(clippy::too_many_arguments)]
pub async fn send_signed(
    http: &reqwest::Client,
    method: &str,
    url: reqwest::Url,
    service: &str,
    headers: &[(&str, String)],
    body: Vec<u8>,
    keys: &StaticKeys,
    region: &str,
) -> Result<(reqwest::StatusCode, String), String> {
    let signed = sign_v4(
        &SigningRequest {
            method,
            host: &host_header(&url),
            path: url.path(),
            query: &[],
            headers,
            service,
            body: &body,
        },
        keys,
        region,
        jiff::Timestamp::now(),
    );
    let method = reqwest::Method::from_bytes(method.as_bytes()).map_err(|e| e.to_string())?;
    let mut request = http.request(method, url).body(body);
    for (name, value) in headers.iter().chain(signed.iter()) {
        request = request.header(*name, value);
    }
    let response = request.send().await.map_err(|e| error_chain(&e))?;
    let status = response.status();
    Ok((status, answer_text(response).await))
}

/// The `Host` header value of a URL: the host, and the port when it is not the scheme's.
pub fn host_header(url: &reqwest::Url) -> String {
    let host = url.host_str().unwrap_or_default();
    match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_string(),
    }
}

/// The role a ServiceAccount names, checked as Flux checks it.
pub fn role_arn(
    identity: &super::workload::Identity,
    sa: &k8s_openapi::api::core::v1::ServiceAccount,
) -> Result<String, String> {
    let value = super::workload::annotation(sa, super::workload::AWS_ROLE_ARN).unwrap_or_default();
    if is_role_arn(&value) {
        return Ok(value);
    }
    Err(format!(
        "failed to get provider identity from service account '{}/{}' annotations: invalid {} annotation: '{value}'. must match ^arn:aws[\\w-]*:iam::[0-9]{{1,30}}:role/.{{1,200}}$",
        identity.namespace,
        identity.name,
        super::workload::AWS_ROLE_ARN
    ))
}

/// `^arn:aws[\w-]*:iam::[0-9]{1,30}:role/.{1,200}$`
fn is_role_arn(arn: &str) -> bool {
    let Some(rest) = arn.strip_prefix("arn:aws") else {
        return false;
    };
    let Some((partition_tail, rest)) = rest.split_once(":iam::") else {
        return false;
    };
    let Some((account, role)) = rest.split_once(":role/") else {
        return false;
    };
    partition_tail
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        && (1..=30).contains(&account.len())
        && account.bytes().all(|b| b.is_ascii_digit())
        && (1..=200).contains(&role.chars().count())
        && !role.contains('\n')
}

/// Flux's role session name, `<name>.<namespace>.<region>.fluxcd.io`, cut to the 64
/// characters STS accepts.
fn session_name(identity: &super::workload::Identity, region: &str) -> String {
    format!(
        "{}.{}.{region}.fluxcd.io",
        identity.name, identity.namespace
    )
    .chars()
    .take(64)
    .collect()
}

/// `?k=v&...` with keys sorted and both sides URI-encoded: the canonical query SigV4 signs
/// is also the one sent.
pub fn canonical_query(query: &[(&str, String)], with_mark: bool) -> String {
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

pub struct SigningRequest<'a> {
    pub method: &'a str,
    pub host: &'a str,
    /// Already URI-encoded, as sent.
    pub path: &'a str,
    pub query: &'a [(&'a str, String)],
    pub headers: &'a [(&'a str, String)],
    /// The signing name of the service: `s3`, `ecr`, `sts`.
    pub service: &'a str,
    pub body: &'a [u8],
}

/// The headers that make a request SigV4-signed (`Authorization`, `x-amz-date`,
/// `x-amz-content-sha256`, and the session token when there is one).
pub fn sign_v4(
    request: &SigningRequest<'_>,
    keys: &StaticKeys,
    region: &str,
    now: jiff::Timestamp,
) -> Vec<(&'static str, String)> {
    let amz_date = now.strftime("%Y%m%dT%H%M%SZ").to_string();
    let payload = hex::encode(Sha256::digest(request.body));
    let mut headers: Vec<(String, String)> = vec![
        ("x-amz-content-sha256".into(), payload.clone()),
        ("x-amz-date".into(), amz_date.clone()),
    ];
    if let Some(token) = &keys.session_token {
        headers.push(("x-amz-security-token".into(), token.clone()));
    }
    let signed = signature(
        request,
        request.query,
        headers,
        &payload,
        keys,
        region,
        &amz_date,
    );
    let mut out = vec![
        (
            "authorization",
            format!(
                "AWS4-HMAC-SHA256 Credential={}/{}, SignedHeaders={}, Signature={}",
                keys.access_key, signed.scope, signed.headers, signed.signature
            ),
        ),
        ("x-amz-content-sha256", payload),
        ("x-amz-date", amz_date),
    ];
    if let Some(token) = &keys.session_token {
        out.push(("x-amz-security-token", token.clone()));
    }
    out
}

/// A presigned request's query (SigV4 in the query string, as `PresignGetCallerIdentity` and
/// S3 presigned URLs make them): the request's own query plus the `X-Amz-*` parameters,
/// canonical and with the signature last. `payload` is the payload hash the service expects
/// (`UNSIGNED-PAYLOAD` for S3, the empty body's hash for STS).
pub fn presign_v4(
    request: &SigningRequest<'_>,
    keys: &StaticKeys,
    region: &str,
    now: jiff::Timestamp,
    expires_secs: u32,
    payload: &str,
) -> String {
    let amz_date = now.strftime("%Y%m%dT%H%M%SZ").to_string();
    let scope = format!(
        "{}/{region}/{}/aws4_request",
        &amz_date[..8],
        request.service
    );
    let mut signed_headers: Vec<String> = request
        .headers
        .iter()
        .map(|(k, _)| k.to_ascii_lowercase())
        .chain(std::iter::once("host".to_string()))
        .collect();
    signed_headers.sort();
    let mut query: Vec<(&str, String)> = request.query.to_vec();
    query.push(("X-Amz-Algorithm", "AWS4-HMAC-SHA256".into()));
    query.push(("X-Amz-Credential", format!("{}/{scope}", keys.access_key)));
    query.push(("X-Amz-Date", amz_date.clone()));
    query.push(("X-Amz-Expires", expires_secs.to_string()));
    query.push(("X-Amz-SignedHeaders", signed_headers.join(";")));
    if let Some(token) = &keys.session_token {
        query.push(("X-Amz-Security-Token", token.clone()));
    }
    let signed = signature(
        request,
        &query,
        Vec::new(),
        payload,
        keys,
        region,
        &amz_date,
    );
    format!(
        "{}&X-Amz-Signature={}",
        canonical_query(&query, false),
        signed.signature
    )
}

struct Signed {
    scope: String,
    headers: String,
    signature: String,
}

/// SigV4's canonical request, string to sign and signature, over the request's headers, its
/// host, and `extra` headers.
fn signature(
    request: &SigningRequest<'_>,
    query: &[(&str, String)],
    extra: Vec<(String, String)>,
    payload: &str,
    keys: &StaticKeys,
    region: &str,
    amz_date: &str,
) -> Signed {
    let date = &amz_date[..8];
    let mut headers = extra;
    headers.push(("host".into(), request.host.to_string()));
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
        "{}\n{}\n{}\n{canonical_headers}\n{signed_headers}\n{payload}",
        request.method,
        request.path,
        canonical_query(query, false),
    );
    let scope = format!("{date}/{region}/{}/aws4_request", request.service);
    let string_to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
        hex::encode(Sha256::digest(canonical_request.as_bytes()))
    );
    let mut key = hmac_sha256(
        format!("AWS4{}", keys.secret_key).as_bytes(),
        date.as_bytes(),
    );
    for part in [region, request.service, "aws4_request"] {
        key = hmac_sha256(&key, part.as_bytes());
    }
    Signed {
        scope,
        headers: signed_headers,
        signature: hex::encode(hmac_sha256(&key, string_to_sign.as_bytes())),
    }
}

/// Session keys serialised into one cache entry.
fn keys_token(keys: &StaticKeys, expires: Option<&str>) -> Token {
    let value =
        serde_json::json!([keys.access_key, keys.secret_key, keys.session_token]).to_string();
    let expires = expires
        .and_then(|e| e.parse::<jiff::Timestamp>().ok())
        .map(|t| auth::lapses_at(t.as_second()))
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

pub async fn sts_call(
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
        let endpoint = match sts_endpoint {
            Some(e) => e.to_string(),
            None => operator_sts_endpoint(region)?,
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
    let creds: JsonCredentials = serde_json::from_str(&answer_text(response).await)
        .map_err(|e| format!("container credentials from {uri}: {e}"))?;
    Ok(creds.into_token())
}

/// EC2 instance profile through IMDSv2.
async fn instance_credentials(http: &reqwest::Client) -> Result<Token, String> {
    const IMDS: &str = "http://169.254.169.254";
    let timeout = std::time::Duration::from_secs(2);
    let session = imds_answer(
        http.put(format!("{IMDS}/latest/api/token"))
            .header("X-aws-ec2-metadata-token-ttl-seconds", "21600")
            .timeout(timeout),
    )
    .await?;
    let get = |path: String| {
        http.get(format!("{IMDS}{path}"))
            .header("X-aws-ec2-metadata-token", &session)
            .timeout(timeout)
    };
    let role = imds_answer(get("/latest/meta-data/iam/security-credentials/".into())).await?;
    let role = role.lines().next().unwrap_or_default().trim().to_string();
    let answer = imds_answer(get(format!(
        "/latest/meta-data/iam/security-credentials/{role}"
    )))
    .await?;
    let creds: JsonCredentials = serde_json::from_str(&answer).map_err(|e| e.to_string())?;
    Ok(creds.into_token())
}

/// One IMDS answer, refused unless successful, read within the bound of token answers.
async fn imds_answer(request: reqwest::RequestBuilder) -> Result<String, String> {
    let response = request
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .map_err(|e| error_chain(&e))?;
    Ok(answer_text(response).await)
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
                service: "s3",
                body: &[],
            },
            &keys,
            "us-east-1",
            now,
        );
        let auth = &headers[0].1;
        assert!(auth.starts_with("AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, Signature="), "{auth}");
        assert_eq!(auth.rsplit('=').next().unwrap(), SIGV4_EXPECTED);
    }

    /// AWS's example of a presigned URL ("Authenticating Requests: Using Query Parameters",
    /// Amazon S3 API reference, signature version 4): its query and signature.
    #[test]
    fn presigned_queries_sign_like_aws_documents() {
        let keys = StaticKeys {
            access_key: "AKIAIOSFODNN7EXAMPLE".into(),
            secret_key: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".into(),
            session_token: None,
        };
        let now: jiff::Timestamp = "2013-05-24T00:00:00Z".parse().unwrap();
        let query = presign_v4(
            &SigningRequest {
                method: "GET",
                host: "examplebucket.s3.amazonaws.com",
                path: "/test.txt",
                query: &[],
                headers: &[],
                service: "s3",
                body: &[],
            },
            &keys,
            "us-east-1",
            now,
            86400,
            "UNSIGNED-PAYLOAD",
        );
        assert_eq!(
            query,
            "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host&X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404"
        );
    }

    /// The signature AWS's documentation gives for this request.
    const SIGV4_EXPECTED: &str = "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41";

    /// The PUT Object example of the same documentation: a body (whose SHA-256 is signed and
    /// sent as `x-amz-content-sha256`), a `$` encoded in the path, and extra signed headers.
    /// Signature from the documentation: 98ad7217...108bd.
    #[test]
    fn sigv4_signs_a_body_like_aws_documents() {
        let keys = StaticKeys {
            access_key: "AKIAIOSFODNN7EXAMPLE".into(),
            secret_key: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".into(),
            session_token: None,
        };
        let now: jiff::Timestamp = "2013-05-24T00:00:00Z".parse().unwrap();
        let headers = sign_v4(
            &SigningRequest {
                method: "PUT",
                host: "examplebucket.s3.amazonaws.com",
                path: "/test%24file.text",
                query: &[],
                headers: &[
                    ("Date", "Fri, 24 May 2013 00:00:00 GMT".into()),
                    ("x-amz-storage-class", "REDUCED_REDUNDANCY".into()),
                ],
                service: "s3",
                body: b"Welcome to Amazon S3.",
            },
            &keys,
            "us-east-1",
            now,
        );
        let auth = &headers[0].1;
        assert!(
            auth.contains(
                "SignedHeaders=date;host;x-amz-content-sha256;x-amz-date;x-amz-storage-class, "
            ),
            "{auth}"
        );
        assert_eq!(
            auth.rsplit('=').next().unwrap(),
            "98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd"
        );
        assert_eq!(
            headers[1],
            (
                "x-amz-content-sha256",
                "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072".to_string()
            )
        );
    }

    #[test]
    fn role_arns_are_checked_as_flux_checks_them() {
        for ok in [
            "arn:aws:iam::123456789012:role/flux",
            "arn:aws-cn:iam::123456789012:role/path/flux",
            "arn:aws-us-gov:iam::1:role/x",
        ] {
            assert!(is_role_arn(ok), "{ok}");
        }
        for bad in [
            "",
            "arn:aws:iam::123456789012:user/flux",
            "arn:aws:iam::12345678901234567890123456789012:role/x",
            "arn:aws:iam::abc:role/x",
            "arn:aws:iam::1:role/",
            "arn:aws:sts::1:role/x",
            "arn:gcp:iam::1:role/x",
        ] {
            assert!(!is_role_arn(bad), "{bad}");
        }
    }

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
        // A far expiry is held for at most auth::MAX_LIFETIME before it is fetched again.
        let now = std::time::Instant::now();
        assert!(
            token.expires
                > now + super::super::auth::MAX_LIFETIME - std::time::Duration::from_secs(60)
        );
        assert!(token.expires <= now + super::super::auth::MAX_LIFETIME);
    }
}
