//! Azure Blob Storage (provider `azure`) through its REST API: container listing, blob
//! downloads; shared-key signing, SAS tokens, and Entra ID tokens (service principal with a
//! secret or certificate, managed identity, workload identity).

use std::collections::BTreeMap;
use std::path::Path;

use aws_lc_rs::digest;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde::Deserialize;

use super::object::{
    BucketError, Fetched, ListBudget, Listed, PageEntries, response_error, write_body,
};
use crate::identity::auth::{self, Token, cached_token, hmac_sha256, rs256_jwt, rsa_key};
use crate::transport::answer_text;
use crate::transport::error_chain;
use crate::util::pem_blocks;
use crate::util::uri_encode;

const API_VERSION: &str = "2021-08-06";
const STORAGE_SCOPE: &str = "https://storage.azure.com/.default";
pub const DEFAULT_AUTHORITY: &str = "https://login.microsoftonline.com";
/// Azure would send up to 5,000 a page; 1,000 keeps an honest page (names of up to 1,024
/// characters, escaped, and a dozen properties each) well under `object::MAX_PAGE_BYTES`.
const LIST_PAGE: u32 = 1000;

#[derive(Clone)]
pub enum AzureAuth {
    Anonymous,
    SharedKey {
        account: String,
        key: Vec<u8>,
    },
    /// A SAS query string added to every request.
    Sas(String),
    Entra(EntraCredential),
}

#[derive(Clone)]
pub enum EntraCredential {
    ClientSecret {
        authority: String,
        tenant: String,
        client_id: String,
        secret: String,
    },
    ClientCertificate {
        authority: String,
        tenant: String,
        client_id: String,
        /// Certificate chain and RSA key, PEM.
        pem: String,
        send_chain: bool,
    },
    ManagedIdentity {
        client_id: Option<String>,
    },
    WorkloadIdentity {
        authority: String,
        tenant: String,
        client_id: String,
        token_file: String,
    },
    /// A ServiceAccount's token as the client assertion of its `azure.workload.identity/*`
    /// identity.
    ObjectWorkloadIdentity {
        authority: String,
        tenant: String,
        client_id: String,
        identity: crate::identity::workload::Identity,
    },
}

/// The account URL and its account name, from `spec.endpoint`: `https://<account>.blob...`
/// or, for IP and localhost endpoints (Azurite), `http://host:port/<account>`. A query on
/// the endpoint is a SAS token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountUrl {
    pub base: String,
    pub account: String,
    pub sas: Option<String>,
}

impl AccountUrl {
    pub fn parse(endpoint: &str, insecure: bool) -> Result<Self, String> {
        let with_scheme = match endpoint.contains("://") {
            true => endpoint.to_string(),
            false if insecure => format!("http://{endpoint}"),
            false => format!("https://{endpoint}"),
        };
        let url = reqwest::Url::parse(&with_scheme)
            .map_err(|e| format!("invalid endpoint '{}': {e}", auth::sanitize(endpoint)))?;
        let host = url.host_str().ok_or("endpoint has no host")?.to_string();
        let path_style = host == "localhost" || host.parse::<std::net::IpAddr>().is_ok();
        let first_segment = url
            .path_segments()
            .and_then(|mut s| s.next().map(str::to_string))
            .filter(|s| !s.is_empty());
        let account = match path_style {
            true => first_segment.ok_or("an IP or localhost endpoint must name the account in its path (http://host:port/<account>)")?,
            false => host.split('.').next().unwrap_or_default().to_string(),
        };
        let origin = match url.port() {
            Some(p) => format!("{}://{host}:{p}", url.scheme()),
            None => format!("{}://{host}", url.scheme()),
        };
        let base = match path_style {
            true => format!("{origin}/{account}"),
            false => origin,
        };
        Ok(AccountUrl {
            base,
            account,
            sas: url.query().filter(|q| !q.is_empty()).map(str::to_string),
        })
    }
}

pub struct AzureClient {
    http: reqwest::Client,
    /// Fetches Entra ID tokens: the controller's own transport when they are the controller's.
    credential_http: reqwest::Client,
    account: AccountUrl,
    container: String,
    auth: AzureAuth,
}

impl AzureClient {
    pub fn new(
        http: reqwest::Client,
        account: AccountUrl,
        container: &str,
        auth: AzureAuth,
    ) -> Self {
        AzureClient {
            credential_http: http.clone(),
            http,
            account,
            container: container.to_string(),
            auth,
        }
    }

    /// Tokens are fetched through `http` instead of the container's own client.
    pub fn with_credential_http(mut self, http: reqwest::Client) -> Self {
        self.credential_http = http;
        self
    }

    async fn get(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<reqwest::Response, BucketError> {
        let url_path = format!(
            "{}/{}{}",
            self.account.base,
            uri_encode(&self.container, false),
            if path.is_empty() {
                String::new()
            } else {
                format!("/{}", uri_encode(path, true))
            }
        );
        let mut query_string: Vec<String> = query
            .iter()
            .map(|(k, v)| format!("{}={}", uri_encode(k, false), uri_encode(v, false)))
            .collect();
        let sas = match &self.auth {
            AzureAuth::Sas(s) => Some(s.trim_start_matches('?').to_string()),
            _ => self.account.sas.clone(),
        };
        if let Some(sas) = sas {
            query_string.push(sas);
        }
        let url = match query_string.is_empty() {
            true => url_path.clone(),
            false => format!("{url_path}?{}", query_string.join("&")),
        };
        let date = jiff::Timestamp::now()
            .strftime("%a, %d %b %Y %H:%M:%S GMT")
            .to_string();
        let mut request = self
            .http
            .get(&url)
            .header("x-ms-date", &date)
            .header("x-ms-version", API_VERSION);
        match &self.auth {
            AzureAuth::SharedKey { account, key } => {
                let parsed =
                    reqwest::Url::parse(&url).map_err(|e| BucketError::request(e.to_string()))?;
                let to_sign = shared_key_string(account, &parsed, &date);
                let signature = STANDARD.encode(hmac_sha256(key, to_sign.as_bytes()));
                request =
                    request.header("Authorization", format!("SharedKey {account}:{signature}"));
            }
            AzureAuth::Entra(credential) => {
                let token = entra_token(&self.credential_http, credential)
                    .await
                    .map_err(BucketError::request)?;
                request = request.bearer_auth(token);
            }
            AzureAuth::Anonymous | AzureAuth::Sas(_) => {}
        }
        request
            .send()
            .await
            .map_err(|e| BucketError::request(format!("GET {url}: {}", error_chain(&e))))
    }

    /// Flux's check: list one blob; `ContainerNotFound` means there is no such container.
    pub async fn container_exists(&self) -> Result<bool, BucketError> {
        let query = [
            ("comp", "list".to_string()),
            ("maxresults", "1".to_string()),
            ("restype", "container".to_string()),
        ];
        let response = self.get("", &query).await?;
        match response.status() {
            s if s.is_success() => Ok(true),
            reqwest::StatusCode::NOT_FOUND => Ok(false),
            _ => Err(response_error("list blobs", response).await),
        }
    }

    pub async fn list(
        &self,
        prefix: &str,
        budget: &mut ListBudget,
        visit: &mut (dyn FnMut(Vec<Listed>) -> Result<(), BucketError> + Send),
    ) -> Result<(), BucketError> {
        let mut marker: Option<String> = None;
        loop {
            let mut query = vec![
                ("comp", "list".to_string()),
                ("maxresults", LIST_PAGE.to_string()),
                ("restype", "container".to_string()),
            ];
            if !prefix.is_empty() {
                query.push(("prefix", prefix.to_string()));
            }
            if let Some(m) = &marker {
                query.push(("marker", m.clone()));
            }
            let response = self.get("", &query).await?;
            if !response.status().is_success() {
                return Err(response_error("list blobs", response).await);
            }
            match budget.take_page(response, list_page, visit).await? {
                Some(next) => marker = Some(next),
                None => return Ok(()),
            }
        }
    }

    pub async fn fetch(
        &self,
        key: &str,
        dest: &Path,
        max_bytes: u64,
    ) -> Result<Fetched, BucketError> {
        let response = self.get(key, &[]).await?;
        match response.status() {
            reqwest::StatusCode::NOT_FOUND => Ok(Fetched::NotFound),
            s if s.is_success() => {
                let etag = response
                    .headers()
                    .get("etag")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string();
                let bytes = write_body(response, dest, max_bytes).await?;
                Ok(Fetched::Written { etag, bytes })
            }
            _ => Err(response_error(&format!("download blob '{key}'"), response).await),
        }
    }
}

/// The shared-key string to sign for a body-less GET.
fn shared_key_string(account: &str, url: &reqwest::Url, date: &str) -> String {
    let mut params: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (k, v) in url.query_pairs() {
        params
            .entry(k.to_lowercase())
            .or_default()
            .push(v.into_owned());
    }
    let mut resource = format!("/{account}{}", url.path());
    for (k, mut values) in params {
        values.sort();
        resource.push_str(&format!("\n{k}:{}", values.join(",")));
    }
    // VERB, then eleven standard headers (all empty for a GET without body or conditions).
    format!(
        "GET{}\nx-ms-date:{date}\nx-ms-version:{API_VERSION}\n{resource}",
        "\n".repeat(11)
    )
}

/// One List Blobs answer: its blobs, and the marker of the next page when there is one.
#[doc(hidden)]
pub fn list_page(body: &[u8]) -> Result<(Vec<Listed>, Option<String>), BucketError> {
    let page: EnumerationResults = quick_xml::de::from_str(&String::from_utf8_lossy(body))
        .map_err(|e| BucketError::request(format!("invalid blob listing: {e}")))?;
    let entries = page
        .blobs
        .blob
        .0
        .into_iter()
        .map(|b| Listed {
            key: b.name,
            etag: b.properties.etag,
            size: b.properties.content_length,
            version: None,
        })
        .collect();
    Ok((entries, page.next_marker.filter(|m| !m.is_empty())))
}

#[derive(Deserialize)]
struct EnumerationResults {
    #[serde(rename = "Blobs", default)]
    blobs: Blobs,
    #[serde(rename = "NextMarker", default)]
    next_marker: Option<String>,
}

#[derive(Deserialize, Default)]
struct Blobs {
    #[serde(rename = "Blob", default)]
    blob: PageEntries<Blob>,
}

#[derive(Deserialize)]
struct Blob {
    #[serde(rename = "Name")]
    name: String,
    #[serde(rename = "Properties")]
    properties: BlobProperties,
}

#[derive(Deserialize)]
struct BlobProperties {
    #[serde(rename = "Etag", default)]
    etag: String,
    #[serde(rename = "Content-Length", default)]
    content_length: u64,
}

/// The credential a `secretRef` Secret describes, with Flux's keys and precedence.
pub fn auth_from_secret(
    data: &BTreeMap<String, Vec<u8>>,
    account: &AccountUrl,
) -> Result<AzureAuth, String> {
    let text = |k: &str| {
        data.get(k)
            .map(|v| String::from_utf8_lossy(v).trim().to_string())
            .filter(|s| !s.is_empty())
    };
    let authority = text("authorityHost").unwrap_or_else(|| DEFAULT_AUTHORITY.into());
    match (text("clientId"), text("tenantId")) {
        (Some(client_id), Some(tenant)) if text("clientSecret").is_some() => {
            return Ok(AzureAuth::Entra(EntraCredential::ClientSecret {
                authority,
                tenant,
                client_id,
                secret: text("clientSecret").unwrap_or_default(),
            }));
        }
        (Some(client_id), Some(tenant)) if text("clientCertificate").is_some() => {
            let pem = text("clientCertificate").unwrap_or_default();
            if text("clientCertificatePassword").is_some() {
                return Err("password-protected client certificates are not supported: store the certificate with an unencrypted key".into());
            }
            rsa_key(&pem).map_err(|e| format!("clientCertificate: {e}"))?;
            if pem_blocks(&pem, "CERTIFICATE").is_empty() {
                return Err("clientCertificate holds no certificate".into());
            }
            return Ok(AzureAuth::Entra(EntraCredential::ClientCertificate {
                authority,
                tenant,
                client_id,
                pem,
                send_chain: text("clientCertificateSendChain")
                    .is_some_and(|v| v == "true" || v == "1"),
            }));
        }
        (Some(client_id), None) if text("accountKey").is_none() && text("sasKey").is_none() => {
            return Ok(AzureAuth::Entra(EntraCredential::ManagedIdentity {
                client_id: Some(client_id),
            }));
        }
        _ => {}
    }
    if let Some(key) = text("accountKey") {
        let key = STANDARD
            .decode(&key)
            .map_err(|e| format!("'accountKey' is not base64: {e}"))?;
        return Ok(AzureAuth::SharedKey {
            account: account.account.clone(),
            key,
        });
    }
    if let Some(sas) = text("sasKey") {
        return Ok(AzureAuth::Sas(sas));
    }
    Err("requires a 'clientId', or 'clientId', 'tenantId' and 'clientSecret' or 'clientCertificate', or 'accountKey', or 'sasKey'".into())
}

/// Without a Secret: the environment's service principal, then workload identity, then
/// anonymous access (public containers), as Flux's chain does.
pub fn ambient_auth() -> AzureAuth {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let authority = env("AZURE_AUTHORITY_HOST").unwrap_or_else(|| DEFAULT_AUTHORITY.into());
    if let (Some(tenant), Some(client_id), Some(secret)) = (
        env("AZURE_TENANT_ID"),
        env("AZURE_CLIENT_ID"),
        env("AZURE_CLIENT_SECRET"),
    ) {
        return AzureAuth::Entra(EntraCredential::ClientSecret {
            authority,
            tenant,
            client_id,
            secret,
        });
    }
    if let (Some(tenant), Some(client_id), Some(token_file)) = (
        env("AZURE_TENANT_ID"),
        env("AZURE_CLIENT_ID"),
        env("AZURE_FEDERATED_TOKEN_FILE"),
    ) {
        return AzureAuth::Entra(EntraCredential::WorkloadIdentity {
            authority,
            tenant,
            client_id,
            token_file,
        });
    }
    AzureAuth::Anonymous
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    #[serde(default)]
    expires_in: Option<serde_json::Value>,
}

async fn entra_token(
    http: &reqwest::Client,
    credential: &EntraCredential,
) -> Result<String, String> {
    let key = match credential {
        EntraCredential::ClientSecret {
            tenant,
            client_id,
            secret,
            ..
        } => auth::cache_key(&[
            b"entra-secret",
            tenant.as_bytes(),
            client_id.as_bytes(),
            secret.as_bytes(),
        ]),
        EntraCredential::ClientCertificate {
            tenant,
            client_id,
            pem,
            ..
        } => auth::cache_key(&[
            b"entra-cert",
            tenant.as_bytes(),
            client_id.as_bytes(),
            pem.as_bytes(),
        ]),
        EntraCredential::ManagedIdentity { client_id } => auth::cache_key(&[
            b"entra-msi",
            client_id.as_deref().unwrap_or_default().as_bytes(),
        ]),
        EntraCredential::WorkloadIdentity {
            tenant, client_id, ..
        } => auth::cache_key(&[b"entra-wi", tenant.as_bytes(), client_id.as_bytes()]),
        EntraCredential::ObjectWorkloadIdentity {
            tenant,
            client_id,
            identity,
            ..
        } => identity.cache_key(format!("azure {tenant} {client_id}").as_bytes()),
    };
    cached_token(&key, || fetch_entra_token(http, credential)).await
}

async fn fetch_entra_token(
    http: &reqwest::Client,
    credential: &EntraCredential,
) -> Result<Token, String> {
    let request = match credential {
        EntraCredential::ManagedIdentity { client_id } => {
            let mut url = format!(
                "http://169.254.169.254/metadata/identity/oauth2/token?api-version=2018-02-01&resource={}",
                uri_encode("https://storage.azure.com/", false)
            );
            if let Some(id) = client_id {
                url.push_str(&format!("&client_id={}", uri_encode(id, false)));
            }
            http.get(url)
                .header("Metadata", "true")
                .timeout(std::time::Duration::from_secs(5))
        }
        EntraCredential::ClientSecret {
            authority,
            tenant,
            client_id,
            secret,
        } => http.post(token_endpoint(authority, tenant)).form(&[
            ("grant_type", "client_credentials"),
            ("client_id", client_id),
            ("client_secret", secret),
            ("scope", STORAGE_SCOPE),
        ]),
        EntraCredential::ClientCertificate {
            authority,
            tenant,
            client_id,
            pem,
            send_chain,
        } => {
            let endpoint = token_endpoint(authority, tenant);
            let assertion = certificate_assertion(&endpoint, client_id, pem, *send_chain)?;
            assertion_request(http, endpoint, client_id, &assertion)
        }
        EntraCredential::ObjectWorkloadIdentity {
            authority,
            tenant,
            client_id,
            identity,
        } => {
            let assertion = identity
                .token(crate::identity::workload::AZURE_AUDIENCE)
                .await?;
            assertion_request(
                http,
                token_endpoint(authority, tenant),
                client_id,
                &assertion,
            )
        }
        EntraCredential::WorkloadIdentity {
            authority,
            tenant,
            client_id,
            token_file,
        } => {
            let assertion = std::fs::read_to_string(token_file)
                .map_err(|e| format!("reading the federated token {token_file}: {e}"))?;
            assertion_request(
                http,
                token_endpoint(authority, tenant),
                client_id,
                assertion.trim(),
            )
        }
    };
    let response = request
        .send()
        .await
        .map_err(|e| format!("Entra ID token request: {}", error_chain(&e)))?;
    if !response.status().is_success() {
        let status = response.status().as_u16();
        let body = answer_text(response).await;
        let detail = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| {
                v.get("error_description")
                    .and_then(|d| d.as_str())
                    .map(str::to_string)
            })
            .unwrap_or_else(|| crate::util::truncate(&body, 200));
        return Err(format!(
            "Entra ID refused the token request (HTTP {status}): {detail}"
        ));
    }
    let token: TokenResponse =
        serde_json::from_str(&answer_text(response).await).map_err(|e| e.to_string())?;
    // Entra answers expires_in as a number, IMDS as a string.
    let expires_in = token
        .expires_in
        .and_then(|v| v.as_u64().or_else(|| v.as_str()?.parse().ok()));
    Ok(Token {
        value: token.access_token,
        expires: auth::expiry(expires_in),
    })
}

/// The client-credentials grant with a signed client assertion (certificate, federated token).
fn assertion_request(
    http: &reqwest::Client,
    endpoint: String,
    client_id: &str,
    assertion: &str,
) -> reqwest::RequestBuilder {
    http.post(endpoint).form(&[
        ("grant_type", "client_credentials"),
        ("client_id", client_id),
        (
            "client_assertion_type",
            "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        ),
        ("client_assertion", assertion),
        ("scope", STORAGE_SCOPE),
    ])
}

fn token_endpoint(authority: &str, tenant: &str) -> String {
    format!(
        "{}/{tenant}/oauth2/v2.0/token",
        authority.trim_end_matches('/')
    )
}

/// A client assertion signed with the certificate's key, naming the certificate by its
/// SHA-1 thumbprint (`x5t`), and with the chain (`x5c`) when asked to send it.
fn certificate_assertion(
    audience: &str,
    client_id: &str,
    pem: &str,
    send_chain: bool,
) -> Result<String, String> {
    let certs = pem_blocks(pem, "CERTIFICATE");
    let leaf = certs
        .first()
        .ok_or("clientCertificate holds no certificate")?;
    let thumbprint = digest::digest(&digest::SHA1_FOR_LEGACY_USE_ONLY, leaf);
    let mut header = serde_json::json!({
        "alg": "RS256",
        "typ": "JWT",
        "x5t": URL_SAFE_NO_PAD.encode(thumbprint.as_ref()),
    });
    if send_chain {
        header["x5c"] = certs.iter().map(|c| STANDARD.encode(c)).collect();
    }
    let now = auth::unix_now();
    rs256_jwt(
        &rsa_key(pem)?,
        &header,
        &serde_json::json!({
            "aud": audience,
            "iss": client_id,
            "sub": client_id,
            "jti": hex::encode(rand::random::<[u8; 16]>()),
            "nbf": now,
            "exp": now + 600,
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_urls_in_both_styles() {
        let cloud = AccountUrl::parse("https://acct.blob.core.windows.net", false).unwrap();
        assert_eq!(cloud.account, "acct");
        assert_eq!(cloud.base, "https://acct.blob.core.windows.net");
        let azurite = AccountUrl::parse("http://127.0.0.1:10000/devstoreaccount1", false).unwrap();
        assert_eq!(azurite.account, "devstoreaccount1");
        assert_eq!(azurite.base, "http://127.0.0.1:10000/devstoreaccount1");
        let sas = AccountUrl::parse("https://a.blob.core.windows.net/?sv=1&sig=x", false).unwrap();
        assert_eq!(sas.sas.as_deref(), Some("sv=1&sig=x"));
        assert!(AccountUrl::parse("http://127.0.0.1:10000", false).is_err());
    }

    /// The canonical resource repeats the account for path-style URLs and lists query
    /// parameters sorted, lower-cased and decoded, one per line.
    #[test]
    fn shared_key_string_follows_the_documented_layout() {
        let url = reqwest::Url::parse(
            "http://127.0.0.1:10000/devstoreaccount1/c?restype=container&comp=list&prefix=a%2Fb",
        )
        .unwrap();
        let s = shared_key_string("devstoreaccount1", &url, "Sun, 29 Nov 2026 00:00:00 GMT");
        assert_eq!(
            s,
            "GET\n\n\n\n\n\n\n\n\n\n\n\nx-ms-date:Sun, 29 Nov 2026 00:00:00 GMT\nx-ms-version:2021-08-06\n/devstoreaccount1/devstoreaccount1/c\ncomp:list\nprefix:a/b\nrestype:container"
        );
    }

    #[test]
    fn listing_pages_parse() {
        let xml = r#"<?xml version="1.0" encoding="utf-8"?><EnumerationResults ServiceEndpoint="http://x/" ContainerName="c"><Prefix>p</Prefix><MaxResults>2</MaxResults><Blobs><Blob><Name>p/a.yaml</Name><Properties><Etag>0x8DC1</Etag><Content-Length>12</Content-Length></Properties></Blob></Blobs><NextMarker>m2</NextMarker></EnumerationResults>"#;
        let page: EnumerationResults = quick_xml::de::from_str(xml).unwrap();
        assert_eq!(page.blobs.blob.0[0].name, "p/a.yaml");
        assert_eq!(page.blobs.blob.0[0].properties.etag, "0x8DC1");
        assert_eq!(page.blobs.blob.0[0].properties.content_length, 12);
        assert_eq!(page.next_marker.as_deref(), Some("m2"));
        let last: EnumerationResults = quick_xml::de::from_str(
            r#"<EnumerationResults><Blobs /><NextMarker /></EnumerationResults>"#,
        )
        .unwrap();
        assert!(last.blobs.blob.0.is_empty());
        assert!(last.next_marker.unwrap_or_default().is_empty());
    }

    #[test]
    fn a_listing_that_reached_unreachable_in_quick_xml_0_38_is_refused() {
        // Found by the azure_listing fuzz target: quick-xml 0.38.4 hit `unreachable!()` on two
        // consecutive text events; the listing must instead be refused as malformed.
        let body = include_bytes!("../../../fuzz/seeds/azure_listing/quick-xml-0.38.4-unreachable");
        let Err(err) = list_page(body) else {
            panic!("a malformed listing must be refused");
        };
        assert!(err.to_string().contains("invalid blob listing"), "{err}");
    }

    #[test]
    fn listing_pages_with_too_many_blobs_are_refused() {
        let blob = "<Blob><Name>k</Name><Properties><Etag>0x1</Etag></Properties></Blob>";
        let page = |n: usize| {
            format!(
                "<EnumerationResults><Blobs>{}</Blobs><NextMarker/></EnumerationResults>",
                blob.repeat(n)
            )
        };
        let max = crate::source::bucket::object::MAX_PAGE_ENTRIES;
        let ok: EnumerationResults = quick_xml::de::from_str(&page(max)).unwrap();
        assert_eq!(ok.blobs.blob.0.len(), max);
        let err = quick_xml::de::from_str::<EnumerationResults>(&page(max + 1))
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("more than 10000 entries"), "{err}");
    }

    #[test]
    fn secrets_select_flux_credentials() {
        let account = AccountUrl::parse("https://acct.blob.core.windows.net", false).unwrap();
        let secret = |pairs: &[(&str, &str)]| -> BTreeMap<String, Vec<u8>> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
                .collect()
        };
        assert!(matches!(
            auth_from_secret(&secret(&[("accountKey", "a2V5")]), &account),
            Ok(AzureAuth::SharedKey { ref account, .. }) if account == "acct"
        ));
        assert!(matches!(
            auth_from_secret(&secret(&[("sasKey", "?sv=1")]), &account),
            Ok(AzureAuth::Sas(_))
        ));
        assert!(matches!(
            auth_from_secret(
                &secret(&[("clientId", "c"), ("tenantId", "t"), ("clientSecret", "s")]),
                &account
            ),
            Ok(AzureAuth::Entra(EntraCredential::ClientSecret { .. }))
        ));
        assert!(matches!(
            auth_from_secret(&secret(&[("clientId", "c")]), &account),
            Ok(AzureAuth::Entra(EntraCredential::ManagedIdentity { .. }))
        ));
        let err = auth_from_secret(&secret(&[("other", "x")]), &account)
            .err()
            .unwrap();
        assert!(err.contains("accountKey"), "{err}");
        assert!(auth_from_secret(&secret(&[("accountKey", "not base64!")]), &account).is_err());
    }
}
