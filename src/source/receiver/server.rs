//! The receiver's HTTP side: `POST /hook/<sender>` checked in order of cost (sender known, a
//! free slot, a bounded body, the secret, the sender's rate, the format, the event's age and
//! novelty) before any object is looked at; the answer tells the sender whether to retry.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::json;

use super::Receiver;
use super::formats::{self, Delivery};
use super::guard;

/// Requests handled at once; more are answered 503 (senders retry).
pub const MAX_IN_FLIGHT: usize = 64;

/// How long a sender may take to send its body.
const BODY_TIMEOUT: Duration = Duration::from_secs(10);

pub fn router(receiver: Arc<Receiver>) -> Router {
    Router::new()
        .route(
            "/hook/{sender}",
            post(receive).head(alive).options(handshake),
        )
        .with_state(receiver)
}

/// Why a request was turned away, as the `reason` label says it.
#[derive(Debug, Clone, Copy)]
pub enum Rejection {
    UnknownSender,
    Busy,
    TooLarge,
    BadBody,
    SecretUnavailable,
    Unauthorized,
    RateLimited(Duration),
    Malformed,
    Stale,
    Replay,
}

impl Rejection {
    pub fn reason(self) -> &'static str {
        match self {
            Rejection::UnknownSender => "unknown_sender",
            Rejection::Busy => "busy",
            Rejection::TooLarge => "too_large",
            Rejection::BadBody => "bad_body",
            Rejection::SecretUnavailable => "secret_unavailable",
            Rejection::Unauthorized => "unauthorized",
            Rejection::RateLimited(_) => "rate_limited",
            Rejection::Malformed => "malformed",
            Rejection::Stale => "stale",
            Rejection::Replay => "replay",
        }
    }

    fn answer(self, detail: &str) -> Response {
        // Which Secret the receiver could not read is for the controller's log, not the sender.
        let detail = match self {
            Rejection::SecretUnavailable => "the sender's secret cannot be read",
            _ => detail,
        };
        let status = match self {
            Rejection::UnknownSender => StatusCode::NOT_FOUND,
            Rejection::Busy | Rejection::SecretUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            Rejection::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Rejection::BadBody | Rejection::Malformed => StatusCode::BAD_REQUEST,
            Rejection::Unauthorized => StatusCode::UNAUTHORIZED,
            Rejection::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            // Answered as received: a sender that retries what it believes undelivered must
            // not retry forever (a registry's queue would stall behind it).
            Rejection::Stale | Rejection::Replay => StatusCode::OK,
        };
        let mut response = (
            status,
            axum::Json(json!({ "ignored": self.reason(), "detail": detail })),
        )
            .into_response();
        if let Rejection::RateLimited(wait) = self {
            let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            if let Ok(v) = HeaderValue::from_str(&seconds.max(1).to_string()) {
                response.headers_mut().insert("retry-after", v);
            }
        }
        response
    }
}

async fn receive(
    State(receiver): State<Arc<Receiver>>,
    Path(name): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let sender = receiver.metrics.sender_label(&receiver, &name);
    receiver.metrics.received(&sender);
    match accept(&receiver, &name, query.as_deref(), &headers, body).await {
        Ok(Accepted::Reply(reply)) => {
            receiver.metrics.accepted(&sender);
            (StatusCode::OK, axum::Json(reply)).into_response()
        }
        Ok(Accepted::Events(delivery)) => {
            receiver.metrics.accepted(&sender);
            let triggered = receiver.trigger(&name, &delivery);
            (
                StatusCode::ACCEPTED,
                axum::Json(json!({ "triggered": triggered })),
            )
                .into_response()
        }
        Err((rejection, detail)) => {
            receiver.metrics.rejected(&sender, rejection.reason());
            tracing::info!(sender = %sender, reason = rejection.reason(), %detail, "event refused");
            rejection.answer(&detail)
        }
    }
}

enum Accepted {
    Reply(serde_json::Value),
    Events(Delivery),
}

type Refused = (Rejection, String);

async fn accept(
    receiver: &Receiver,
    name: &str,
    query: Option<&str>,
    headers: &HeaderMap,
    body: Body,
) -> Result<Accepted, Refused> {
    let sender = receiver.senders.get(name).ok_or_else(|| {
        let name = crate::util::truncate(name, 64);
        (Rejection::UnknownSender, format!("no sender {name:?}"))
    })?;
    let _slot = receiver
        .in_flight
        .try_acquire()
        .map_err(|_| (Rejection::Busy, "too many requests in flight".to_string()))?;
    if declared_length(headers).is_some_and(|n| n > receiver.max_body_bytes as u64) {
        let limit = receiver.max_body_bytes;
        return Err((
            Rejection::TooLarge,
            format!("body larger than {limit} bytes"),
        ));
    }
    let secret = receiver
        .secrets
        .get(&sender.config.secret_ref)
        .await
        .map_err(|e| (Rejection::SecretUnavailable, e))?;
    let format = sender.config.format;
    let authenticate = |body: &[u8]| {
        guard::authenticate(format, &secret, headers, query, body)
            .map_err(|e| (Rejection::Unauthorized, e.to_string()))
    };
    // A token is in the headers or the URL: a caller without it costs no body read.
    if !format.signs_body() {
        authenticate(b"")?;
    }
    let body = read_body(body, receiver.max_body_bytes).await?;
    if format.signs_body() {
        authenticate(&body)?;
    }
    sender.rate.take().map_err(|wait| {
        (
            Rejection::RateLimited(wait),
            "sender over its rate".to_string(),
        )
    })?;
    let delivery = formats::parse(sender.config.format, headers, &body)
        .map_err(|e| (Rejection::Malformed, e.to_string()))?;
    if let Some(reply) = delivery.reply {
        return Ok(Accepted::Reply(reply));
    }
    if !guard::is_recent(delivery.sent_at, receiver.max_event_age) {
        return Err((
            Rejection::Stale,
            "event older than --receiver-max-event-age".into(),
        ));
    }
    if !receiver.seen.first_time(name, &delivery.ids) {
        return Err((Rejection::Replay, "event already received".into()));
    }
    Ok(Accepted::Events(delivery))
}

/// The `Content-Length` a sender declares, which is refused before a byte is read.
fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(http::header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// The body, refused past `limit` bytes or `BODY_TIMEOUT` (a chunked body declares nothing).
async fn read_body(body: Body, limit: usize) -> Result<bytes::Bytes, Refused> {
    match tokio::time::timeout(BODY_TIMEOUT, axum::body::to_bytes(body, limit)).await {
        Err(_) => Err((Rejection::BadBody, "body not received in time".into())),
        Ok(Err(e)) if is_length_limit(&e) => Err((
            Rejection::TooLarge,
            format!("body larger than {limit} bytes"),
        )),
        Ok(Err(e)) => Err((Rejection::BadBody, format!("reading the body: {e}"))),
        Ok(Ok(bytes)) => Ok(bytes),
    }
}

fn is_length_limit(e: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if err.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = err.source();
    }
    false
}

/// MinIO checks a webhook target with HEAD before it sends to it.
async fn alive(State(receiver): State<Arc<Receiver>>, Path(name): Path<String>) -> StatusCode {
    match receiver.senders.contains_key(&name) {
        true => StatusCode::OK,
        false => StatusCode::NOT_FOUND,
    }
}

/// The CloudEvents webhook handshake (Event Grid's CloudEvents schema): an authenticated
/// OPTIONS naming its origin is allowed to deliver.
async fn handshake(
    State(receiver): State<Arc<Receiver>>,
    Path(name): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let Some(sender) = receiver.senders.get(&name) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let Some(origin) = headers.get("webhook-request-origin").cloned() else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let authenticated = match receiver.secrets.get(&sender.config.secret_ref).await {
        Ok(secret) => guard::authenticate(
            sender.config.format,
            &secret,
            &headers,
            query.as_deref(),
            b"",
        )
        .is_ok(),
        Err(_) => false,
    };
    if !authenticated {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let mut response = StatusCode::OK.into_response();
    response
        .headers_mut()
        .insert("webhook-allowed-origin", origin);
    response
        .headers_mut()
        .insert("webhook-allowed-rate", HeaderValue::from_static("*"));
    response
}
