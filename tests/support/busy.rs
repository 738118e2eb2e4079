//! An HTTP front for a registry or an object store that can answer as a busy server does (a
//! status such as 429 or 503, with or without `Retry-After`) instead of forwarding; it counts
//! what it refused.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

/// The front: forwards to `upstream`, or answers busy while told to.
pub struct BusyFront {
    pub address: String,
    state: Arc<FrontState>,
}

struct FrontState {
    upstream: String,
    http: reqwest::Client,
    busy: Mutex<Option<(u16, Option<u64>)>>,
    refused: std::sync::atomic::AtomicUsize,
}

impl BusyFront {
    pub async fn start(upstream: &str) -> BusyFront {
        let state = Arc::new(FrontState {
            upstream: upstream.to_string(),
            http: reqwest::Client::new(),
            busy: Mutex::new(None),
            refused: Default::default(),
        });
        let app = axum::Router::new()
            .fallback(front)
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        BusyFront { address, state }
    }

    /// Answer `status` (with `Retry-After: <seconds>` if given) from now on; `None`: forward.
    pub fn set_busy(&self, busy: Option<(u16, Option<u64>)>) {
        *self.state.busy.lock().unwrap() = busy;
    }

    pub fn refused(&self) -> usize {
        self.state.refused.load(Ordering::SeqCst)
    }

    /// Nothing more reaches the busy front for all of `window` (looked at again and again).
    pub async fn asked_nothing_more(&self, server: &str, window: std::time::Duration) {
        let refused = self.refused();
        super::wait::holds_for(
            &format!("no request to {server} before its Retry-After"),
            window,
            async || {
                let now = self.refused();
                (now == refused).then_some(()).ok_or(format!(
                    "{} more requests while it asked to wait",
                    now - refused
                ))
            },
        )
        .await;
    }
}

async fn front(
    axum::extract::State(state): axum::extract::State<Arc<FrontState>>,
    request: axum::extract::Request,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let busy = *state.busy.lock().unwrap();
    if let Some((status, retry_after)) = busy {
        state.refused.fetch_add(1, Ordering::SeqCst);
        let mut response = axum::http::StatusCode::from_u16(status)
            .unwrap()
            .into_response();
        if let Some(seconds) = retry_after {
            response
                .headers_mut()
                .insert("retry-after", seconds.to_string().parse().unwrap());
        }
        return response;
    }
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, usize::MAX).await.unwrap();
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut forward = state
        .http
        .request(parts.method, format!("http://{}{path}", state.upstream))
        .body(body);
    // Host too: an object store checks the signature the client made over it.
    for (name, value) in &parts.headers {
        forward = forward.header(name, value);
    }
    let answer = forward.send().await.unwrap();
    let mut response = axum::http::Response::builder().status(answer.status());
    for (name, value) in answer.headers() {
        response = response.header(name, value);
    }
    response
        .body(axum::body::Body::from(answer.bytes().await.unwrap()))
        .unwrap()
}
