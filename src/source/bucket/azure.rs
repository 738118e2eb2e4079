//! Azure Blob Storage (provider `azure`) through its REST API: container listing, blob
//! downloads; shared-key signing, SAS tokens, and Entra ID tokens (service principal with a
//! secret or certificate, managed identity, workload identity).

use std::collections::BTreeMap;
use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;

use super::object::{
    BucketError, Fetched, ListBudget, Listed, PageEntries, response_error, write_body,
};
use crate::identity::auth::{self, hmac_sha256, rsa_key};
use crate::identity::entra;
pub use crate::identity::entra::EntraCredential;
use crate::transport::error_chain;
use crate::util::pem_blocks;
use crate::util::uri_encode;

const API_VERSION: &str = "2021-08-06";
const STORAGE_SCOPE: &str = "https://storage.azure.com/.default";
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
                let token = entra::access_token(&self.credential_http, credential, STORAGE_SCOPE)
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
    let authority = text("authorityHost").unwrap_or_else(|| entra::DEFAULT_AUTHORITY.into());
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
/// anonymous access (public containers).
pub fn ambient_auth() -> AzureAuth {
    match EntraCredential::environment_has_credential() {
        true => AzureAuth::Entra(EntraCredential::from_environment()),
        false => AzureAuth::Anonymous,
    }
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
