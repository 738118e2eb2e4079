//! A hostile S3 endpoint: the attacker a Bucket may point the controller at. It answers
//! HeadBucket and GetObject as a real (empty) bucket would, and ListObjectsV2 in the way the
//! bucket's name asks for:
//!
//! * `endless-keys`: every page 1,000 new keys and a new continuation token, forever;
//! * `endless-empty`: every page no keys and a new continuation token, forever;
//! * `repeat-token`: one key a page, and always the same continuation token;
//! * `huge-page`: one page of 100 MiB, streamed (chunked, no Content-Length);
//! * `fat-pages`: pages of 4 MiB of directory markers (skipped, never indexed), forever.

use std::collections::HashMap;

use axum::body::{Body, Bytes};
use axum::extract::{Query, Request};
use axum::http::{Method, StatusCode};
use axum::response::Response;

pub const HUGE_PAGE_BYTES: usize = 100 << 20;
const FAT_PAGE_BYTES: usize = 4 << 20;

/// Starts the server; its `host:port`.
pub async fn start() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let app = axum::Router::new().fallback(answer);
    tokio::spawn(async move { axum::serve(listener, app).await });
    address
}

async fn answer(Query(query): Query<HashMap<String, String>>, request: Request) -> Response {
    let path = request.uri().path().trim_start_matches('/').to_string();
    let (bucket, key) = path.split_once('/').unwrap_or((&path, ""));
    match (request.method().clone(), key) {
        (Method::HEAD, "") => status(StatusCode::OK, Body::empty()),
        (Method::GET, "") if query.contains_key("list-type") => {
            let page: u64 = query
                .get("continuation-token")
                .and_then(|t| t.strip_prefix('t'))
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            listing(bucket, page)
        }
        _ => status(
            StatusCode::NOT_FOUND,
            Body::from("<Error><Code>NoSuchKey</Code><Message>none</Message></Error>"),
        ),
    }
}

fn status(code: StatusCode, body: Body) -> Response {
    Response::builder()
        .status(code)
        .header("content-type", "application/xml")
        .body(body)
        .unwrap()
}

fn listing(bucket: &str, page: u64) -> Response {
    let next = format!("t{}", page + 1);
    let body = match bucket {
        "endless-keys" => page_xml(&next, (0..1000).map(|i| format!("k-{page}-{i}.yaml"))),
        "endless-empty" => page_xml(&next, std::iter::empty()),
        "repeat-token" => page_xml("again", std::iter::once(format!("k-{page}.yaml"))),
        "fat-pages" => {
            let marker = format!("{}/", "d".repeat(1000));
            let count = FAT_PAGE_BYTES / (marker.len() + 40);
            page_xml(&next, (0..count).map(|i| format!("{i}{marker}")))
        }
        "huge-page" => return status(StatusCode::OK, huge_page()),
        _ => page_xml("", std::iter::empty()),
    };
    status(StatusCode::OK, Body::from(body))
}

fn page_xml(next: &str, keys: impl Iterator<Item = String>) -> String {
    let mut xml = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?><ListBucketResult>");
    for key in keys {
        xml.push_str(&format!(
            "<Contents><Key>{key}</Key><ETag>\"e\"</ETag><Size>1</Size></Contents>"
        ));
    }
    if next.is_empty() {
        xml.push_str("<IsTruncated>false</IsTruncated>");
    } else {
        xml.push_str(&format!(
            "<IsTruncated>true</IsTruncated><NextContinuationToken>{next}</NextContinuationToken>"
        ));
    }
    xml.push_str("</ListBucketResult>");
    xml
}

/// 100 MiB of well-formed entries, sent 1 MiB at a time without a Content-Length, so only a
/// reader that counts what arrives can stop it.
fn huge_page() -> Body {
    let entry = "<Contents><Key>k.yaml</Key><ETag>\"e\"</ETag><Size>1</Size></Contents>";
    let chunk = Bytes::from(entry.repeat((1 << 20) / entry.len()));
    let head = Bytes::from_static(b"<?xml version=\"1.0\"?><ListBucketResult>");
    let chunks = HUGE_PAGE_BYTES / chunk.len();
    let stream = futures::stream::iter(
        std::iter::once(head)
            .chain(std::iter::repeat_n(chunk, chunks))
            .chain(std::iter::once(Bytes::from_static(
                b"<IsTruncated>false</IsTruncated></ListBucketResult>",
            )))
            .map(Ok::<_, std::io::Error>),
    );
    Body::from_stream(stream)
}
