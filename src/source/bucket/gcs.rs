//! Google Cloud Storage through its JSON API (provider `gcp`): bucket metadata, object listing with
//! the `etag` attribute Flux indexes, and media downloads bound to the listed generation, with a
//! service-account key or else Google's default chain (`GOOGLE_APPLICATION_CREDENTIALS`, then the
//! GKE/GCE metadata server) as credentials.

use std::path::Path;

use serde::Deserialize;

use super::object::{
    BucketError, Fetched, ListBudget, Listed, PageEntries, read_body, response_error, write_body,
};
use crate::identity::google;
pub use crate::identity::google::{GoogleCredential, ServiceAccountKey};
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
    Google(GoogleCredential),
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
        let GcsAuth::Google(credential) = &self.auth else {
            return Ok(None);
        };
        google::access_token(&self.credential_http, credential, &[READ_ONLY_SCOPE])
            .await
            .map(Some)
            .map_err(BucketError::request)
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
}
