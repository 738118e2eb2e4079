//! Hostile registries: servers written for a test to be the attacker, never a stand-in for a
//! real registry. They answer `/v2/` like a registry and then misbehave: tag lists that page
//! for ever or are packed with tags, manifests that are not what the digest naming them says.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

/// Serve `router` on a free 127.0.0.1 port; returns `127.0.0.1:<port>`.
pub async fn serve(router: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let app = router.route("/v2/", axum::routing::get(|| async { "{}" }));
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    address
}

/// One page of bulky tags is this large (the client's old per-page limit was 4 MiB).
pub const BULKY_PAGE_BYTES: usize = 4 * 1024 * 1024 - 4096;
/// The bulky list stops after this many pages (256 MiB), only so that a controller that does not
/// bound its tag list (holding some 330 MB of tags by then) cannot exhaust the test machine.
pub const BULKY_PAGES: usize = 64;

/// `/v2/<list>/tags/list` for four hostile tag lists:
/// - `endless`: one tag a page, each page `Link`ing to the next, for ever;
/// - `bulky`: pages of almost 4 MiB of 120-character tags, each `Link`ing to the next;
/// - `packed`: one 3 MB page of 300 000 short tags;
/// - `huge`: one page of 64 MiB, streamed without a length.
pub fn tag_lists() -> axum::Router {
    axum::Router::new().route("/v2/{list}/tags/list", axum::routing::get(tag_page))
}

async fn tag_page(
    Path(list): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let page: usize = query.get("page").and_then(|p| p.parse().ok()).unwrap_or(0);
    let next = |more: bool| {
        more.then(|| format!("</v2/{list}/tags/list?page={}>; rel=\"next\"", page + 1))
    };
    match list.as_str() {
        "endless" => tag_response(&list, vec![format!("v0.0.{page}")], next(true)),
        "bulky" => {
            let tag_count = BULKY_PAGE_BYTES / 123;
            let tags = (0..tag_count)
                .map(|i| format!("{page:08}-{i:08}-{}", "x".repeat(102)))
                .collect();
            tag_response(&list, tags, next(page + 1 < BULKY_PAGES))
        }
        "packed" => {
            let tags = (0..300_000).map(|i| format!("v{i}")).collect();
            tag_response(&list, tags, None)
        }
        "huge" => huge_page(),
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}

fn tag_response(list: &str, tags: Vec<String>, next: Option<String>) -> Response {
    let body = serde_json::to_vec(&serde_json::json!({"name": list, "tags": tags})).unwrap();
    let mut response = ([(header::CONTENT_TYPE, "application/json")], body).into_response();
    if let Some(link) = next {
        response
            .headers_mut()
            .insert(header::LINK, HeaderValue::from_str(&link).unwrap());
    }
    response
}

/// `{"tags":["x","x",...` for 64 MiB, in 64 KiB chunks, never finished.
fn huge_page() -> Response {
    let chunk = Bytes::from("\"x\",".repeat(16 * 1024));
    let start =
        futures::stream::once(async { Ok::<_, std::io::Error>(Bytes::from("{\"tags\":[")) });
    let rest = futures::stream::iter((0..1024).map(move |_| Ok(chunk.clone())));
    use futures::StreamExt;
    Body::from_stream(start.chain(rest)).into_response()
}

/// `path -> (media type, bytes)`.
pub type Content = HashMap<String, (String, Vec<u8>)>;

/// A registry serving fixed content for `GET` and `HEAD`, with the `Docker-Content-Digest` of
/// the bytes, whatever the path claims.
pub fn fixed(content: Content) -> axum::Router {
    axum::Router::new()
        .fallback(fixed_content)
        .with_state(Arc::new(content))
}

async fn fixed_content(State(content): State<Arc<Content>>, method: Method, uri: Uri) -> Response {
    let Some((media_type, bytes)) = content.get(uri.path()) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, media_type.parse().unwrap());
    let digest = format!("sha256:{}", hex::encode(Sha256::digest(bytes)));
    headers.insert("docker-content-digest", digest.parse().unwrap());
    if method == Method::HEAD {
        headers.insert(header::CONTENT_LENGTH, bytes.len().into());
        return (headers, Body::empty()).into_response();
    }
    (headers, bytes.clone()).into_response()
}
