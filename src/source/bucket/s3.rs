//! The S3 API (provider `generic` and `aws`): HeadBucket, ListObjectsV2 and GetObject, signed
//! with AWS Signature Version 4; credentials from the Secret, MinIO's LDAP STS, or the AWS
//! chain (environment, web identity/IRSA, container credentials/Pod Identity, IMDSv2).

use std::path::Path;

use serde::Deserialize;

use super::object::{
    BucketError, Fetched, ListBudget, Listed, PageEntries, response_error, write_body,
};
pub use crate::identity::aws::{AwsAuth, StaticKeys};
use crate::identity::aws::{SigningRequest, canonical_query, host_header, session_keys, sign_v4};
use crate::transport::error_chain;
use crate::util::uri_encode;

pub const DEFAULT_REGION: &str = "us-east-1";
const LIST_PAGE: u32 = 1000;

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
                    service: "s3",
                    body: &[],
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
        session_keys(&self.auth, &self.credential_http, &self.region())
            .await
            .map_err(BucketError::request)
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
        let status = response.status();
        let busy = status == reqwest::StatusCode::TOO_MANY_REQUESTS
            || (status.is_server_error() && response.headers().contains_key("retry-after"));
        match status {
            s if s.is_success() => Ok(true),
            reqwest::StatusCode::NOT_FOUND => Ok(false),
            // A busy server is not asked again at once, not even to say why.
            _ if busy => Err(response_error("HeadBucket", response).await),
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

fn url_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
