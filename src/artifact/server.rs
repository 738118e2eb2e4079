//! The artifact HTTP server (reference §6.1): `GET`/`HEAD /<kind>/<ns>/<name>/<file>` from the
//! storage root, with the semantics consumers rely on from Go's file server (Range, Last-Modified,
//! conditional requests, following `latest.tar.gz`), and `GET /` answering 200 for the readiness
//! probe.

// Only regular files under the root are served; directories, lock and temp files, and anything
// resolving outside the root are 404.

use std::ffi::OsStr;
use std::io::SeekFrom;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio_util::io::ReaderStream;

use super::storage::{Storage, is_lock_file_name};

/// Asked for a requested file that is not stored: a replica still catching up with the leader
/// stores it now if a status names it, so that a consumer who read a new status is not sent
/// away by a replica a moment behind. `true` when the file should now be there.
pub trait OnMiss: Send + Sync {
    fn store_now<'a>(&'a self, rel_path: &'a str) -> futures::future::BoxFuture<'a, bool>;
}

#[derive(Clone)]
struct Served {
    storage: Arc<Storage>,
    on_miss: Option<Arc<dyn OnMiss>>,
}

/// The router serving `storage`. Mount it on `--storage-addr`.
pub fn router(storage: Arc<Storage>) -> Router {
    router_with(storage, None)
}

/// [`router`], asking `on_miss` for files that are not stored.
pub fn router_with(storage: Arc<Storage>, on_miss: Option<Arc<dyn OnMiss>>) -> Router {
    Router::new()
        .route("/", get(readiness))
        .fallback(serve_artifact)
        .with_state(Served { storage, on_miss })
}

/// Flux's Deployment probes `GET /` on the storage port.
async fn readiness() -> StatusCode {
    StatusCode::OK
}

async fn serve_artifact(
    State(served): State<Served>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    if method != Method::GET && method != Method::HEAD {
        return method_not_allowed();
    }
    let Some(rel) = request_path(uri.path()) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let storage = &served.storage;
    let opened = match open_inside_root(storage, &rel).await {
        Some(opened) => Some(opened),
        None => match (&served.on_miss, rel.to_str()) {
            (Some(on_miss), Some(rel_str)) if on_miss.store_now(rel_str).await => {
                open_inside_root(storage, &rel).await
            }
            _ => None,
        },
    };
    let Some(opened) = opened else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let representation = Representation::of(storage, &opened);
    respond(&method, &headers, opened.file, &representation).await
}

fn method_not_allowed() -> Response {
    let mut response = StatusCode::METHOD_NOT_ALLOWED.into_response();
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
    response
}

/// Decodes the URL path into a relative path of servable names, or `None` (404) for
/// anything that is not: `..`, hidden and temp files, lock files, bad escapes.
#[doc(hidden)] // public for the fuzz targets only
pub fn request_path(uri_path: &str) -> Option<PathBuf> {
    let decoded = percent_decode(uri_path)?;
    let mut rel = PathBuf::new();
    for part in decoded.split(|b| *b == b'/') {
        if part.is_empty() || part == b"." {
            continue;
        }
        let name = OsStr::from_bytes(part);
        if !is_servable_name(name) {
            return None;
        }
        rel.push(name);
    }
    (!rel.as_os_str().is_empty()).then_some(rel)
}

/// The store never keeps user-visible dot files; temp files and `..` start with a dot.
fn is_servable_name(name: &OsStr) -> bool {
    let bytes = name.as_bytes();
    !bytes.starts_with(b".")
        && !bytes.contains(&b'\\')
        && !bytes.contains(&0)
        && !is_lock_file_name(name)
}

fn percent_decode(input: &str) -> Option<Vec<u8>> {
    let bytes = input.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let value = u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?;
            out.push(value);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Some(out)
}

struct Opened {
    path: PathBuf,
    file: tokio::fs::File,
    metadata: std::fs::Metadata,
}

/// Resolves symlinks (`latest.tar.gz`) and serves the result only if it is a regular file
/// that still lies inside the root and is not one of the store's own files.
async fn open_inside_root(storage: &Storage, rel: &Path) -> Option<Opened> {
    let resolved = tokio::fs::canonicalize(storage.root().join(rel))
        .await
        .ok()?;
    if !resolved.starts_with(storage.root()) || !is_servable_name(resolved.file_name()?) {
        return None;
    }
    let file = tokio::fs::File::open(&resolved).await.ok()?;
    let metadata = file.metadata().await.ok()?;
    metadata.is_file().then_some(Opened {
        path: resolved,
        file,
        metadata,
    })
}

/// What the response says about the file.
struct Representation {
    size: u64,
    modified: Option<SystemTime>,
    last_modified: Option<String>,
    etag: String,
    content_type: &'static str,
}

impl Representation {
    fn of(storage: &Storage, opened: &Opened) -> Self {
        let modified = opened.metadata.modified().ok();
        Self {
            size: opened.metadata.len(),
            modified,
            last_modified: modified.and_then(http_date),
            etag: etag_for(storage, opened),
            content_type: content_type_of(&opened.path),
        }
    }

    fn headers(&self) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(self.content_type),
        );
        insert_header(&mut headers, header::ETAG, &self.etag);
        if let Some(date) = &self.last_modified {
            insert_header(&mut headers, header::LAST_MODIFIED, date);
        }
        headers
    }
}

fn insert_header(headers: &mut HeaderMap, name: header::HeaderName, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        headers.insert(name, value);
    }
}

/// The artifact's digest when the store vouches for it, else size and mtime.
fn etag_for(storage: &Storage, opened: &Opened) -> String {
    match storage.recorded_digest(&opened.path, &opened.metadata) {
        Some(hex) => format!("\"sha256:{hex}\""),
        None => {
            let m = &opened.metadata;
            format!("\"{:x}-{:x}.{:x}\"", m.size(), m.mtime(), m.mtime_nsec())
        }
    }
}

fn content_type_of(path: &Path) -> &'static str {
    match path.extension().and_then(OsStr::to_str) {
        Some("gz" | "tgz") => "application/gzip",
        Some("json") => "application/json",
        _ => "application/octet-stream",
    }
}

fn http_date(time: SystemTime) -> Option<String> {
    let timestamp = jiff::Timestamp::try_from(time).ok()?;
    jiff::fmt::rfc2822::DateTimePrinter::new()
        .timestamp_to_rfc9110_string(&timestamp)
        .ok()
}

fn parse_http_date(value: &str) -> Option<jiff::Timestamp> {
    jiff::fmt::rfc2822::DateTimeParser::new()
        .parse_timestamp(value)
        .ok()
}

async fn respond(
    method: &Method,
    request: &HeaderMap,
    file: tokio::fs::File,
    representation: &Representation,
) -> Response {
    if is_not_modified(request, representation) {
        return with_headers(
            StatusCode::NOT_MODIFIED,
            representation.headers(),
            Body::empty(),
        );
    }
    let range = match request.get(header::RANGE).and_then(|v| v.to_str().ok()) {
        Some(value) if range_applies(request, representation) => {
            parse_range(value, representation.size)
        }
        _ => ByteRange::Full,
    };
    let mut headers = representation.headers();
    let (status, start, len) = match range {
        ByteRange::Full => (StatusCode::OK, 0, representation.size),
        ByteRange::Partial { start, end } => {
            let content_range = format!("bytes {start}-{end}/{}", representation.size);
            insert_header(&mut headers, header::CONTENT_RANGE, &content_range);
            (StatusCode::PARTIAL_CONTENT, start, end - start + 1)
        }
        ByteRange::Unsatisfiable => {
            let content_range = format!("bytes */{}", representation.size);
            insert_header(&mut headers, header::CONTENT_RANGE, &content_range);
            return with_headers(StatusCode::RANGE_NOT_SATISFIABLE, headers, Body::empty());
        }
    };
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    if *method == Method::HEAD {
        return with_headers(status, headers, Body::empty());
    }
    match stream_section(file, start, len).await {
        Ok(body) => with_headers(status, headers, body),
        Err(err) => {
            tracing::warn!(error = %err, "reading an artifact failed");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

fn with_headers(status: StatusCode, headers: HeaderMap, body: Body) -> Response {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}

/// Streams `len` bytes from `start` without loading the file.
async fn stream_section(mut file: tokio::fs::File, start: u64, len: u64) -> std::io::Result<Body> {
    if start > 0 {
        file.seek(SeekFrom::Start(start)).await?;
    }
    Ok(Body::from_stream(ReaderStream::new(file.take(len))))
}

/// `If-None-Match` wins over `If-Modified-Since`, as RFC 9110 says.
fn is_not_modified(request: &HeaderMap, representation: &Representation) -> bool {
    if let Some(value) = request.get(header::IF_NONE_MATCH) {
        return value
            .to_str()
            .is_ok_and(|v| etag_list_matches(v, &representation.etag));
    }
    let since = request
        .get(header::IF_MODIFIED_SINCE)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_http_date);
    match (since, representation.modified) {
        (Some(since), Some(modified)) => jiff::Timestamp::try_from(modified)
            .is_ok_and(|modified| modified.as_second() <= since.as_second()),
        _ => false,
    }
}

/// Weak comparison over a comma-separated list, `*` matching anything.
fn etag_list_matches(list: &str, etag: &str) -> bool {
    list.split(',').map(str::trim).any(|candidate| {
        candidate == "*" || candidate.strip_prefix("W/").unwrap_or(candidate) == etag
    })
}

/// `If-Range` keeps the range only while the validator still matches (strong comparison).
fn range_applies(request: &HeaderMap, representation: &Representation) -> bool {
    let Some(value) = request.get(header::IF_RANGE).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    let value = value.trim();
    if value.starts_with('"') || value.starts_with("W/") {
        return value == representation.etag;
    }
    let modified = representation
        .modified
        .and_then(|m| jiff::Timestamp::try_from(m).ok());
    match (parse_http_date(value), modified) {
        (Some(date), Some(modified)) => date.as_second() == modified.as_second(),
        _ => false,
    }
}

#[doc(hidden)] // public for the fuzz targets only
#[derive(Debug, PartialEq, Eq)]
pub enum ByteRange {
    Full,
    /// Inclusive bounds.
    Partial {
        start: u64,
        end: u64,
    },
    Unsatisfiable,
}

/// A single `bytes=` range. Anything else (other units, several ranges, bad syntax) is
/// ignored and the whole file is served, which RFC 9110 permits.
#[doc(hidden)] // public for the fuzz targets only
pub fn parse_range(value: &str, size: u64) -> ByteRange {
    let Some(spec) = strip_prefix_ignore_case(value.trim(), "bytes=") else {
        return ByteRange::Full;
    };
    let spec = spec.trim();
    if spec.contains(',') {
        return ByteRange::Full;
    }
    let Some((first, last)) = spec.split_once('-') else {
        return ByteRange::Full;
    };
    let (first, last) = (first.trim(), last.trim());
    if first.is_empty() {
        return suffix_range(last, size);
    }
    let Ok(start) = first.parse::<u64>() else {
        return ByteRange::Full;
    };
    let end = if last.is_empty() {
        u64::MAX
    } else {
        match last.parse::<u64>() {
            Ok(end) if end >= start => end,
            _ => return ByteRange::Full,
        }
    };
    if start >= size {
        return ByteRange::Unsatisfiable;
    }
    ByteRange::Partial {
        start,
        end: end.min(size - 1),
    }
}

/// `-n`: the last `n` bytes.
fn suffix_range(last: &str, size: u64) -> ByteRange {
    match last.parse::<u64>() {
        Ok(0) => ByteRange::Unsatisfiable,
        Ok(_) if size == 0 => ByteRange::Unsatisfiable,
        Ok(n) => ByteRange::Partial {
            start: size.saturating_sub(n),
            end: size - 1,
        },
        Err(_) => ByteRange::Full,
    }
}

fn strip_prefix_ignore_case<'a>(value: &'a str, prefix: &str) -> Option<&'a str> {
    let head = value.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &value[prefix.len()..])
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    use axum::http::Request;
    use tower::ServiceExt;

    use crate::artifact::storage::{ArtifactLocation, StorageConfig};

    const CONTENT: &[u8] = b"0123456789abcdefghij";
    const PATH: &str = "/ocirepository/ns/app/sha256:abc.tar.gz";

    struct Fixture {
        _tmp: tempfile::TempDir,
        storage: Arc<Storage>,
    }

    fn fixture() -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let storage = Storage::new(StorageConfig {
            root: tmp.path().join("data"),
            advertised_host: "localhost:9090".into(),
            retention_ttl: Duration::from_secs(60),
            retention_records: 2,
        })
        .unwrap();
        let location = ArtifactLocation::new("OCIRepository", "ns", "app");
        let stored = storage
            .copy_artifact_from_reader(&location, "sha256:abc.tar.gz", CONTENT)
            .unwrap();
        storage.set_latest(&location, &stored.path).unwrap();
        Fixture {
            _tmp: tmp,
            storage: Arc::new(storage),
        }
    }

    async fn send(fixture: &Fixture, request: Request<Body>) -> (StatusCode, HeaderMap, Vec<u8>) {
        let response = router(fixture.storage.clone())
            .oneshot(request)
            .await
            .unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        (status, headers, body.to_vec())
    }

    async fn get_with(
        fixture: &Fixture,
        uri: &str,
        headers: &[(&str, &str)],
    ) -> (StatusCode, HeaderMap, Vec<u8>) {
        let mut request = Request::get(uri);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        send(fixture, request.body(Body::empty()).unwrap()).await
    }

    async fn get(fixture: &Fixture, uri: &str) -> (StatusCode, HeaderMap, Vec<u8>) {
        get_with(fixture, uri, &[]).await
    }

    fn header_str(headers: &HeaderMap, name: header::HeaderName) -> &str {
        headers.get(name).unwrap().to_str().unwrap()
    }

    #[tokio::test]
    async fn root_answers_the_readiness_probe() {
        let fixture = fixture();
        assert_eq!(get(&fixture, "/").await.0, StatusCode::OK);
    }

    #[tokio::test]
    async fn serves_an_artifact_with_its_metadata() {
        let fixture = fixture();
        let (status, headers, body) = get(&fixture, PATH).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, CONTENT);
        assert_eq!(header_str(&headers, header::CONTENT_LENGTH), "20");
        assert_eq!(
            header_str(&headers, header::CONTENT_TYPE),
            "application/gzip"
        );
        assert_eq!(header_str(&headers, header::ACCEPT_RANGES), "bytes");
        assert!(header_str(&headers, header::LAST_MODIFIED).ends_with(" GMT"));
        let digest = crate::artifact::digest::digest_reader(CONTENT).unwrap();
        assert_eq!(
            header_str(&headers, header::ETAG),
            format!("\"sha256:{}\"", digest.hex)
        );
    }

    #[tokio::test]
    async fn head_has_headers_and_no_body() {
        let fixture = fixture();
        let request = Request::head(PATH).body(Body::empty()).unwrap();
        let (status, headers, body) = send(&fixture, request).await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.is_empty());
        assert_eq!(header_str(&headers, header::CONTENT_LENGTH), "20");
    }

    #[tokio::test]
    async fn latest_symlink_is_followed() {
        let fixture = fixture();
        let (status, _, body) = get(&fixture, "/ocirepository/ns/app/latest.tar.gz").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, CONTENT);
    }

    #[tokio::test]
    async fn unknown_etag_falls_back_to_size_and_mtime() {
        let fixture = fixture();
        let dir = fixture.storage.root().join("bucket/ns/b");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("x.tar.gz"), b"abc").unwrap();
        let (status, headers, _) = get(&fixture, "/bucket/ns/b/x.tar.gz").await;
        assert_eq!(status, StatusCode::OK);
        let etag = header_str(&headers, header::ETAG);
        assert!(etag.starts_with("\"3-") && etag.ends_with('"'), "{etag}");
    }

    #[tokio::test]
    async fn missing_files_and_directories_are_404() {
        let fixture = fixture();
        for uri in [
            "/ocirepository/ns/app/missing.tar.gz",
            "/ocirepository",
            "/ocirepository/ns/app/",
            "/ocirepository/ns/app",
        ] {
            assert_eq!(get(&fixture, uri).await.0, StatusCode::NOT_FOUND, "{uri}");
        }
    }

    #[tokio::test]
    async fn lock_and_temp_files_are_404() {
        let fixture = fixture();
        let dir = fixture.storage.root().join("ocirepository/ns/app");
        std::fs::write(
            dir.join(".x.tar.gz.driftless-tmp-0000000000000001"),
            b"half",
        )
        .unwrap();
        for uri in [
            "/ocirepository/ns/app/sha256:abc.tar.gz.lock",
            "/ocirepository/ns/app/.x.tar.gz.driftless-tmp-0000000000000001",
        ] {
            assert_eq!(get(&fixture, uri).await.0, StatusCode::NOT_FOUND, "{uri}");
        }
    }

    #[tokio::test]
    async fn escapes_are_404() {
        let fixture = fixture();
        let secret = fixture.storage.root().parent().unwrap().join("secret");
        std::fs::write(&secret, b"secret").unwrap();
        for uri in [
            "/../etc/passwd",
            "/../secret",
            "/%2e%2e/secret",
            "/%2E%2E/%2e%2e/etc/passwd",
            "/ocirepository/..%2f..%2f..%2fsecret",
            "/ocirepository/ns/app/..%5c..%5csecret",
            "/bad%zzescape",
        ] {
            let (status, _, body) = get(&fixture, uri).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{uri}");
            assert_ne!(body, b"secret");
        }
    }

    #[tokio::test]
    async fn symlinks_resolving_outside_the_root_are_404() {
        let fixture = fixture();
        let secret = fixture.storage.root().parent().unwrap().join("secret");
        std::fs::write(&secret, b"secret").unwrap();
        let dir = fixture.storage.root().join("ocirepository/ns/app");
        std::os::unix::fs::symlink(&secret, dir.join("evil.tar.gz")).unwrap();
        std::os::unix::fs::symlink("/etc", dir.join("etc")).unwrap();
        assert_eq!(
            get(&fixture, "/ocirepository/ns/app/evil.tar.gz").await.0,
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            get(&fixture, "/ocirepository/ns/app/etc/passwd").await.0,
            StatusCode::NOT_FOUND
        );
    }

    #[tokio::test]
    async fn percent_encoded_names_are_decoded() {
        let fixture = fixture();
        let (status, _, body) = get(&fixture, "/ocirepository/ns/app/sha256%3Aabc.tar.gz").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, CONTENT);
    }

    #[tokio::test]
    async fn matching_if_none_match_is_304() {
        let fixture = fixture();
        let (_, headers, _) = get(&fixture, PATH).await;
        let etag = header_str(&headers, header::ETAG).to_string();
        for value in [
            etag.clone(),
            format!("\"other\", W/{etag}"),
            "*".to_string(),
        ] {
            let (status, headers, body) =
                get_with(&fixture, PATH, &[("if-none-match", &value)]).await;
            assert_eq!(status, StatusCode::NOT_MODIFIED, "{value}");
            assert!(body.is_empty());
            assert_eq!(header_str(&headers, header::ETAG), etag);
        }
        let (status, _, _) = get_with(&fixture, PATH, &[("if-none-match", "\"other\"")]).await;
        assert_eq!(status, StatusCode::OK);
    }

    #[tokio::test]
    async fn if_modified_since_is_honoured() {
        let fixture = fixture();
        let (_, headers, _) = get(&fixture, PATH).await;
        let last_modified = header_str(&headers, header::LAST_MODIFIED).to_string();
        let (status, _, _) =
            get_with(&fixture, PATH, &[("if-modified-since", &last_modified)]).await;
        assert_eq!(status, StatusCode::NOT_MODIFIED);
        let old = "Thu, 01 Jan 1970 00:00:01 GMT";
        let (status, _, _) = get_with(&fixture, PATH, &[("if-modified-since", old)]).await;
        assert_eq!(status, StatusCode::OK);
    }

    #[tokio::test]
    async fn byte_ranges_are_206() {
        let fixture = fixture();
        for (range, expected, content_range) in [
            ("bytes=0-4", &CONTENT[0..5], "bytes 0-4/20"),
            ("bytes=15-", &CONTENT[15..], "bytes 15-19/20"),
            ("bytes=-3", &CONTENT[17..], "bytes 17-19/20"),
            ("bytes=10-100", &CONTENT[10..], "bytes 10-19/20"),
            ("bytes=-100", CONTENT, "bytes 0-19/20"),
        ] {
            let (status, headers, body) = get_with(&fixture, PATH, &[("range", range)]).await;
            assert_eq!(status, StatusCode::PARTIAL_CONTENT, "{range}");
            assert_eq!(body, expected, "{range}");
            assert_eq!(header_str(&headers, header::CONTENT_RANGE), content_range);
            assert_eq!(
                header_str(&headers, header::CONTENT_LENGTH),
                expected.len().to_string()
            );
        }
    }

    #[tokio::test]
    async fn unsatisfiable_ranges_are_416() {
        let fixture = fixture();
        for range in ["bytes=20-", "bytes=100-200", "bytes=-0"] {
            let (status, headers, _) = get_with(&fixture, PATH, &[("range", range)]).await;
            assert_eq!(status, StatusCode::RANGE_NOT_SATISFIABLE, "{range}");
            assert_eq!(header_str(&headers, header::CONTENT_RANGE), "bytes */20");
        }
    }

    #[tokio::test]
    async fn unsupported_ranges_serve_the_whole_file() {
        let fixture = fixture();
        for range in ["bytes=0-1,5-6", "items=0-1", "bytes=5-2", "bytes=x-"] {
            let (status, _, body) = get_with(&fixture, PATH, &[("range", range)]).await;
            assert_eq!(status, StatusCode::OK, "{range}");
            assert_eq!(body, CONTENT);
        }
    }

    #[tokio::test]
    async fn stale_if_range_serves_the_whole_file() {
        let fixture = fixture();
        let (_, headers, _) = get(&fixture, PATH).await;
        let etag = header_str(&headers, header::ETAG).to_string();
        let (status, _, _) = get_with(
            &fixture,
            PATH,
            &[("range", "bytes=0-1"), ("if-range", &etag)],
        )
        .await;
        assert_eq!(status, StatusCode::PARTIAL_CONTENT);
        let (status, _, body) = get_with(
            &fixture,
            PATH,
            &[("range", "bytes=0-1"), ("if-range", "\"old\"")],
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, CONTENT);
    }

    #[tokio::test]
    async fn other_methods_are_405() {
        let fixture = fixture();
        let request = Request::post(PATH).body(Body::empty()).unwrap();
        let (status, headers, _) = send(&fixture, request).await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(header_str(&headers, header::ALLOW), "GET, HEAD");
    }

    #[test]
    fn range_parsing_edge_cases() {
        assert_eq!(
            parse_range("bytes=0-0", 1),
            ByteRange::Partial { start: 0, end: 0 }
        );
        assert_eq!(
            parse_range("BYTES=1-", 3),
            ByteRange::Partial { start: 1, end: 2 }
        );
        assert_eq!(parse_range("bytes=0-", 0), ByteRange::Unsatisfiable);
        assert_eq!(parse_range("bytes=-5", 0), ByteRange::Unsatisfiable);
        assert_eq!(parse_range("bytes=-", 10), ByteRange::Full);
        assert_eq!(parse_range("bytes=", 10), ByteRange::Full);
    }

    #[test]
    fn request_paths_are_normalised_or_refused() {
        assert_eq!(request_path("/a//b/./c"), Some(PathBuf::from("a/b/c")));
        assert_eq!(request_path("/"), None);
        assert_eq!(request_path("/a/../b"), None);
        assert_eq!(request_path("/a/%00b"), None);
        assert_eq!(request_path("/a/%2"), None);
    }
}
