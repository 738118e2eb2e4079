//! One interface over the three object-store APIs: does the bucket exist, list the keys under
//! a prefix page by page, and stream one object into a file.

use std::path::Path;

use futures::StreamExt;
use tokio::io::AsyncWriteExt;

use super::auth::sanitize;
use super::azure::AzureClient;
use super::gcs::GcsClient;
use super::index::EtagStyle;
use super::s3::S3Client;

/// One listed object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub key: String,
    /// As the server listed it (quotes and all); `index::normalize_etag` makes it Flux's.
    pub etag: String,
    pub size: u64,
    /// A version the download can be bound to (GCS generation).
    pub version: Option<String>,
}

/// What a download found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fetched {
    /// Written; the object's etag as the GET returned it (raw).
    Written { etag: String, bytes: u64 },
    /// Gone since it was listed.
    NotFound,
}

#[derive(Debug, thiserror::Error)]
pub enum BucketError {
    #[error("{0}")]
    Request(String),
    #[error("object is {size} bytes, over the limit of {limit} bytes")]
    TooLarge { size: u64, limit: u64 },
    #[error("writing {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
}

impl BucketError {
    /// A failed request, its URLs stripped of query strings (pre-signed URLs, SAS tokens).
    pub fn request(message: impl AsRef<str>) -> Self {
        BucketError::Request(sanitize(message.as_ref()))
    }
}

pub enum BucketClient {
    S3(S3Client),
    Gcs(GcsClient),
    Azure(AzureClient),
}

impl BucketClient {
    pub fn etag_style(&self) -> EtagStyle {
        match self {
            BucketClient::Azure(_) => EtagStyle::HexEncoded,
            _ => EtagStyle::Plain,
        }
    }

    pub async fn bucket_exists(&self) -> Result<bool, BucketError> {
        match self {
            BucketClient::S3(c) => c.bucket_exists().await,
            BucketClient::Gcs(c) => c.bucket_exists().await,
            BucketClient::Azure(c) => c.container_exists().await,
        }
    }

    /// Every object under `prefix`, handed to `visit` one page at a time so that memory
    /// holds one page, never the whole listing.
    pub async fn list(
        &self,
        prefix: &str,
        visit: &mut (dyn FnMut(Vec<Listed>) -> Result<(), BucketError> + Send),
    ) -> Result<(), BucketError> {
        match self {
            BucketClient::S3(c) => c.list(prefix, visit).await,
            BucketClient::Gcs(c) => c.list(prefix, visit).await,
            BucketClient::Azure(c) => c.list(prefix, visit).await,
        }
    }

    /// Streams the object into `dest` (created or truncated). `listed` is what the listing
    /// said (raw etag, version): a server that can make the GET conditional on it gets the
    /// condition, and when the object changed in between, the current version is fetched.
    pub async fn fetch(
        &self,
        key: &str,
        listed: Option<(&str, Option<&str>)>,
        dest: &Path,
        max_bytes: u64,
    ) -> Result<Fetched, BucketError> {
        match self {
            BucketClient::S3(c) => c.fetch(key, listed.map(|(e, _)| e), dest, max_bytes).await,
            BucketClient::Gcs(c) => {
                let bound = listed.and_then(|(e, v)| v.map(|v| (e, v)));
                c.fetch(key, bound, dest, max_bytes).await
            }
            BucketClient::Azure(c) => c.fetch(key, dest, max_bytes).await,
        }
    }

    /// A small object read whole (the root `.sourceignore`); `None` when it does not exist.
    pub async fn read_small(
        &self,
        key: &str,
        max_bytes: u64,
    ) -> Result<Option<Vec<u8>>, BucketError> {
        let tmp = tempfile::NamedTempFile::new().map_err(|e| BucketError::Write {
            path: "temporary file".into(),
            source: e,
        })?;
        match self.fetch(key, None, tmp.path(), max_bytes).await? {
            Fetched::NotFound => Ok(None),
            Fetched::Written { .. } => {
                std::fs::read(tmp.path())
                    .map(Some)
                    .map_err(|e| BucketError::Write {
                        path: tmp.path().display().to_string(),
                        source: e,
                    })
            }
        }
    }
}

/// Streams a successful response body into `dest`, refusing more than `max_bytes` (checked
/// against Content-Length up front and against the bytes as they arrive).
pub async fn write_body(
    response: reqwest::Response,
    dest: &Path,
    max_bytes: u64,
) -> Result<u64, BucketError> {
    if let Some(size) = response.content_length().filter(|s| *s > max_bytes) {
        return Err(BucketError::TooLarge {
            size,
            limit: max_bytes,
        });
    }
    let write_err = |e| BucketError::Write {
        path: dest.display().to_string(),
        source: e,
    };
    let mut file = tokio::fs::File::create(dest).await.map_err(write_err)?;
    let mut stream = response.bytes_stream();
    let mut written = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| BucketError::request(format!("reading object: {e}")))?;
        written += chunk.len() as u64;
        if written > max_bytes {
            return Err(BucketError::TooLarge {
                size: written,
                limit: max_bytes,
            });
        }
        file.write_all(&chunk).await.map_err(write_err)?;
    }
    file.flush().await.map_err(write_err)?;
    Ok(written)
}

/// The error a non-success response stands for: status, and the service's own code and
/// message when its body carries them (S3 and Azure XML, GCS JSON).
pub async fn response_error(what: &str, response: reqwest::Response) -> BucketError {
    let status = response.status();
    let header_code = response
        .headers()
        .get("x-ms-error-code")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = response.text().await.unwrap_or_default();
    let detail = service_error_detail(&body).or(header_code);
    BucketError::request(match detail {
        Some(detail) => format!("{what}: {detail} (HTTP {})", status.as_u16()),
        None => format!("{what}: HTTP {}", status.as_u16()),
    })
}

fn service_error_detail(body: &str) -> Option<String> {
    use super::auth::xml_text;
    let code = xml_text(body, "Code");
    let message = xml_text(body, "Message");
    match (code, message) {
        (Some(c), Some(m)) => return Some(format!("{c}: {}", m.lines().next().unwrap_or(""))),
        (Some(c), None) => return Some(c),
        (None, Some(m)) => return Some(m),
        _ => {}
    }
    let json: serde_json::Value = serde_json::from_str(body).ok()?;
    json.pointer("/error/message")
        .and_then(|m| m.as_str())
        .map(str::to_string)
}

/// Percent-encodes every byte outside RFC 3986's unreserved set (what SigV4 and the GCS
/// object path want); `keep_slash` leaves `/` as is for paths.
pub fn uri_encode(s: &str, keep_slash: bool) -> String {
    use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
    const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~');
    const PATH: &AsciiSet = &UNRESERVED.remove(b'/');
    utf8_percent_encode(s, if keep_slash { PATH } else { UNRESERVED }).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uri_encode_keeps_unreserved_and_optionally_slashes() {
        assert_eq!(uri_encode("a b/c~d.e", true), "a%20b/c~d.e");
        assert_eq!(uri_encode("a b/c", false), "a%20b%2Fc");
        assert_eq!(uri_encode("ü+=", false), "%C3%BC%2B%3D");
    }

    #[test]
    fn service_errors_are_read_from_xml_and_json() {
        assert_eq!(
            service_error_detail(
                "<Error><Code>SignatureDoesNotMatch</Code><Message>The signature does not match</Message></Error>"
            )
            .as_deref(),
            Some("SignatureDoesNotMatch: The signature does not match")
        );
        assert_eq!(
            service_error_detail(r#"{"error":{"code":404,"message":"Not Found"}}"#).as_deref(),
            Some("Not Found")
        );
        assert_eq!(service_error_detail("plain"), None);
    }
}
