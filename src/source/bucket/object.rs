//! What the three object-store providers share: listed objects, errors, the listing budget and
//! response bodies read within bounds.

use std::path::Path;
use std::time::Duration;

use futures::StreamExt;
use tokio::io::AsyncWriteExt;

use crate::identity::auth::sanitize;
use crate::transport::read_prefix;

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
    /// The server sent more than the controller reads (pages, bytes, keys).
    #[error("{0}")]
    Limit(String),
    #[error("object is {size} bytes, over the limit of {limit} bytes")]
    TooLarge { size: u64, limit: u64 },
    #[error("writing {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
    /// The server asked to be left alone: 429, or a 5xx with `Retry-After`.
    #[error("{message}{}", retry_after.map(|d| format!(" (retry after {}s)", d.as_secs())).unwrap_or_default())]
    Throttled {
        message: String,
        retry_after: Option<Duration>,
    },
}

impl BucketError {
    /// A failed request, its URLs stripped of query strings (pre-signed URLs, SAS tokens).
    pub fn request(message: impl AsRef<str>) -> Self {
        BucketError::Request(sanitize(message.as_ref()))
    }

    /// How long the server asked to wait before the next request, if it did.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            BucketError::Throttled { retry_after, .. } => *retry_after,
            _ => None,
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

/// A listing page is read whole before it is parsed, but never past this. An honest page (the
/// 1,000 keys every provider is asked for, each at most 1,024 bytes and escaped at worst
/// sixfold, with their metadata) stays under 8 MiB; a page twice that is a server that ignores
/// the page size it was asked for.
pub const MAX_PAGE_BYTES: u64 = 16 << 20;
/// At 1,000 keys a page this is ten million keys, far more than `--artifact-max-files` and the
/// listing budget let through: a listing still going is a server that never ends it.
pub const MAX_PAGES: u32 = 10_000;
/// Entries one page may carry while it is parsed (every provider is asked for 1,000): bounds
/// the per-entry overhead a page of tiny entries would otherwise multiply.
pub const MAX_PAGE_ENTRIES: usize = 10_000;
/// Continuation tokens are a key or a cursor, base64'd; this one is not.
const MAX_TOKEN_BYTES: usize = 8 << 10;
/// Error bodies are read for the service's code and message only.
const MAX_ERROR_BODY_BYTES: u64 = 64 << 10;

/// What one listing may cost.
#[derive(Debug, Clone, Copy)]
pub struct ListLimits {
    /// All its pages' bodies together (`--bucket-max-listing-bytes`).
    pub max_bytes: u64,
}

/// A listing's running account: bytes read, pages, and (hashed) the continuation tokens
/// followed.
/// A provider's parser of one listing page: its entries and the token of the next page.
pub type PageParser = fn(&[u8]) -> Result<(Vec<Listed>, Option<String>), BucketError>;

pub struct ListBudget {
    limits: ListLimits,
    read: u64,
    pages: u32,
    tokens: std::collections::HashSet<u64>,
    hasher: std::hash::RandomState,
}

impl ListBudget {
    pub fn new(limits: ListLimits) -> Self {
        ListBudget {
            limits,
            read: 0,
            pages: 0,
            tokens: Default::default(),
            hasher: Default::default(),
        }
    }

    /// The body of the next page, read within the page limit and what is left of the
    /// listing's budget.
    pub async fn read_page(&mut self, response: reqwest::Response) -> Result<Vec<u8>, BucketError> {
        self.pages += 1;
        if self.pages > MAX_PAGES {
            return Err(BucketError::Limit(format!(
                "the listing did not end after {MAX_PAGES} pages"
            )));
        }
        let left = self.limits.max_bytes.saturating_sub(self.read);
        let body = match read_capped(response, MAX_PAGE_BYTES.min(left)).await? {
            Capped::Whole(body) => body,
            Capped::Over if left > MAX_PAGE_BYTES => {
                return Err(BucketError::Limit(format!(
                    "a listing page is larger than the limit of {MAX_PAGE_BYTES} bytes a page"
                )));
            }
            Capped::Over => {
                return Err(BucketError::Limit(format!(
                    "the listing is larger than the limit of {} bytes (--bucket-max-listing-bytes)",
                    self.limits.max_bytes
                )));
            }
        };
        self.read += body.len() as u64;
        Ok(body)
    }

    /// One page of a listing: read within the budget, parsed by the provider's `parse`, its
    /// entries handed to `visit`; the token to follow next (checked), or `None` at the end.
    pub async fn take_page(
        &mut self,
        response: reqwest::Response,
        parse: PageParser,
        visit: &mut (dyn FnMut(Vec<Listed>) -> Result<(), BucketError> + Send),
    ) -> Result<Option<String>, BucketError> {
        let body = self.read_page(response).await?;
        let (entries, next) = parse(&body)?;
        drop(body);
        visit(entries)?;
        if let Some(token) = &next {
            self.follow(token)?;
        }
        Ok(next)
    }

    /// Checks the token a truncated page ended with before it is followed: a server that
    /// hands out a token twice would page forever.
    pub fn follow(&mut self, token: &str) -> Result<(), BucketError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(BucketError::Limit(format!(
                "continuation token of {} bytes, over the limit of {MAX_TOKEN_BYTES} bytes",
                token.len()
            )));
        }
        use std::hash::BuildHasher;
        if !self.tokens.insert(self.hasher.hash_one(token)) {
            return Err(BucketError::Limit(format!(
                "the server repeated continuation token '{}': the listing would not end",
                crate::util::truncate(token, 100).escape_debug()
            )));
        }
        Ok(())
    }
}

enum Capped {
    Whole(Vec<u8>),
    Over,
}

/// A response body read whole when it is at most `max` bytes, refused as soon as it is
/// known to be more (by Content-Length, or by the bytes as they arrive).
async fn read_capped(response: reqwest::Response, max: u64) -> Result<Capped, BucketError> {
    if response.content_length().is_some_and(|n| n > max) {
        return Ok(Capped::Over);
    }
    let mut body = Vec::new();
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| BucketError::request(format!("reading listing: {e}")))?;
        if (body.len() + chunk.len()) as u64 > max {
            return Ok(Capped::Over);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Capped::Whole(body))
}

/// A body read whole for parsing, refused past `max` bytes (token and attribute answers).
pub async fn read_body(
    response: reqwest::Response,
    max: u64,
    what: &str,
) -> Result<Vec<u8>, BucketError> {
    match read_capped(response, max).await? {
        Capped::Whole(body) => Ok(body),
        Capped::Over => Err(BucketError::Limit(format!(
            "{what} is larger than the limit of {max} bytes"
        ))),
    }
}

/// A page's entries, refused past `MAX_PAGE_ENTRIES` while they are parsed (before a page of
/// countless tiny entries is ever held whole).
#[derive(Debug)]
pub struct PageEntries<T>(pub Vec<T>);

impl<T> Default for PageEntries<T> {
    fn default() -> Self {
        PageEntries(Vec::new())
    }
}

impl<'de, T: serde::Deserialize<'de>> serde::Deserialize<'de> for PageEntries<T> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Entries<T>(std::marker::PhantomData<T>);
        impl<'de, T: serde::Deserialize<'de>> serde::de::Visitor<'de> for Entries<T> {
            type Value = PageEntries<T>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                write!(f, "at most {MAX_PAGE_ENTRIES} entries")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Self::Value, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = seq.next_element()? {
                    if entries.len() == MAX_PAGE_ENTRIES {
                        return Err(serde::de::Error::custom(format!(
                            "a listing page holds more than {MAX_PAGE_ENTRIES} entries"
                        )));
                    }
                    entries.push(entry);
                }
                Ok(PageEntries(entries))
            }
        }
        deserializer.deserialize_seq(Entries(std::marker::PhantomData))
    }
}

/// The error a non-success response stands for: status, and the service's own code and
/// message when its body carries them (S3 and Azure XML, GCS JSON).
pub async fn response_error(what: &str, response: reqwest::Response) -> BucketError {
    let status = response.status();
    let wait = crate::transport::retry_after(response.headers());
    let throttled = status == reqwest::StatusCode::TOO_MANY_REQUESTS
        || (status.is_server_error() && wait.is_some());
    let header_code = response
        .headers()
        .get("x-ms-error-code")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = read_prefix(response, MAX_ERROR_BODY_BYTES).await;
    let detail = service_error_detail(&String::from_utf8_lossy(&body)).or(header_code);
    let message = match detail {
        Some(detail) => format!("{what}: {detail} (HTTP {})", status.as_u16()),
        None => format!("{what}: HTTP {}", status.as_u16()),
    };
    if throttled {
        return BucketError::Throttled {
            message: sanitize(&message),
            retry_after: wait,
        };
    }
    BucketError::request(message)
}

fn service_error_detail(body: &str) -> Option<String> {
    use crate::identity::auth::xml_text;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, retry_after: Option<&str>) -> reqwest::Response {
        let mut builder = http::Response::builder().status(status);
        if let Some(value) = retry_after {
            builder = builder.header("retry-after", value);
        }
        reqwest::Response::from(
            builder
                .body("<Error><Code>SlowDown</Code></Error>")
                .unwrap(),
        )
    }

    #[tokio::test]
    async fn a_busy_server_says_how_long_to_wait() {
        let e = response_error("ListObjectsV2", answer(429, Some("7"))).await;
        assert_eq!(e.retry_after(), Some(Duration::from_secs(7)));
        assert_eq!(
            e.to_string(),
            "ListObjectsV2: SlowDown (HTTP 429) (retry after 7s)"
        );
        let e = response_error("GetObject 'k'", answer(503, Some("2"))).await;
        assert_eq!(e.retry_after(), Some(Duration::from_secs(2)));
        // 429 without a wait: throttled, on the ordinary backoff.
        let e = response_error("ListObjectsV2", answer(429, None)).await;
        assert!(matches!(
            e,
            BucketError::Throttled {
                retry_after: None,
                ..
            }
        ));
        // A 5xx that names no wait is an ordinary failure.
        let e = response_error("ListObjectsV2", answer(503, None)).await;
        assert!(matches!(e, BucketError::Request(_)), "{e:?}");
        assert_eq!(e.retry_after(), None);
    }

    /// A response whose body arrives in `chunks` pieces of `chunk` bytes, without a
    /// Content-Length (as a chunked answer would).
    fn streamed(chunk: usize, chunks: usize) -> reqwest::Response {
        let piece = bytes::Bytes::from(vec![b'x'; chunk]);
        let stream =
            futures::stream::iter(std::iter::repeat_n(piece, chunks).map(Ok::<_, std::io::Error>));
        reqwest::Response::from(axum::http::Response::new(reqwest::Body::wrap_stream(
            stream,
        )))
    }

    fn limit_message(e: BucketError) -> String {
        match e {
            BucketError::Limit(m) => m,
            other => panic!("not a limit: {other}"),
        }
    }

    #[tokio::test]
    async fn a_page_over_the_page_limit_is_refused_as_it_arrives() {
        let mut budget = ListBudget::new(ListLimits { max_bytes: 1 << 30 });
        let err = budget.read_page(streamed(1 << 20, 100)).await.unwrap_err();
        assert_eq!(
            limit_message(err),
            "a listing page is larger than the limit of 16777216 bytes a page"
        );
        let declared = reqwest::Response::from(axum::http::Response::new(vec![b'x'; 17 << 20]));
        assert!(budget.read_page(declared).await.is_err());
        let body = budget.read_page(streamed(1 << 20, 16)).await.unwrap();
        assert_eq!(body.len(), 16 << 20);
    }

    #[tokio::test]
    async fn pages_together_stay_within_the_listing_budget() {
        let mut budget = ListBudget::new(ListLimits { max_bytes: 5 << 20 });
        for _ in 0..5 {
            budget.read_page(streamed(1 << 20, 1)).await.unwrap();
        }
        let err = budget.read_page(streamed(1, 1)).await.unwrap_err();
        assert_eq!(
            limit_message(err),
            "the listing is larger than the limit of 5242880 bytes (--bucket-max-listing-bytes)"
        );
    }

    #[tokio::test]
    async fn listings_end_after_a_bounded_number_of_pages() {
        let mut budget = ListBudget::new(ListLimits { max_bytes: 1 << 30 });
        for page in 0..MAX_PAGES {
            budget.read_page(streamed(1, 1)).await.unwrap();
            budget.follow(&format!("t{page}")).unwrap();
        }
        let err = budget.read_page(streamed(1, 1)).await.unwrap_err();
        assert_eq!(
            limit_message(err),
            "the listing did not end after 10000 pages"
        );
    }

    #[test]
    fn continuation_tokens_are_followed_once_and_bounded() {
        let mut budget = ListBudget::new(ListLimits { max_bytes: 1 << 30 });
        budget.follow("a").unwrap();
        budget.follow("b").unwrap();
        let err = budget.follow("a").unwrap_err();
        assert!(limit_message(err).contains("repeated continuation token 'a'"));
        assert!(budget.follow(&"t".repeat(MAX_TOKEN_BYTES + 1)).is_err());
    }

    #[tokio::test]
    async fn error_bodies_are_read_only_in_part() {
        let body = read_prefix(streamed(1 << 20, 64), MAX_ERROR_BODY_BYTES).await;
        assert_eq!(body.len() as u64, MAX_ERROR_BODY_BYTES);
    }

    #[test]
    fn pages_with_more_entries_than_any_api_sends_are_refused_while_parsed() {
        let items = |n: usize| format!("[{}]", vec!["1"; n].join(","));
        let ok: PageEntries<u8> = serde_json::from_str(&items(MAX_PAGE_ENTRIES)).unwrap();
        assert_eq!(ok.0.len(), MAX_PAGE_ENTRIES);
        let err = serde_json::from_str::<PageEntries<u8>>(&items(MAX_PAGE_ENTRIES + 1))
            .unwrap_err()
            .to_string();
        assert!(err.contains("more than 10000 entries"), "{err}");
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
