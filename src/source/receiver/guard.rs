//! What stands between a request and a reconcile: the sender's secret (a token, or GitHub's HMAC
//! of the body), a rate per sender, and the memory of events already received.

use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use aws_lc_rs::{constant_time, hmac};
use http::HeaderMap;

use super::formats::Format;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("no valid token")]
    NoToken,
    #[error("no valid X-Hub-Signature-256")]
    BadSignature,
}

/// Whether the request proves it knows `secret`: for GitHub, `X-Hub-Signature-256` is the
/// body's HMAC-SHA256; for every other sender the secret itself, as `Authorization: Bearer`,
/// a bare `Authorization` value (Harbor, MinIO), `X-Gitlab-Token`, or the `token` query
/// parameter for senders that can only be given a URL (Docker Hub, Event Grid, Pub/Sub).
pub fn authenticate(
    format: Format,
    secret: &[u8],
    headers: &HeaderMap,
    query: Option<&str>,
    body: &[u8],
) -> Result<(), Refusal> {
    if secret.is_empty() {
        return Err(Refusal::NoToken);
    }
    if format.signs_body() {
        return check_signature(secret, headers, body);
    }
    let header = |name: &str| headers.get(name).map(|v| v.as_bytes());
    let from_query = query.and_then(query_token);
    let candidates = [
        header("authorization").map(|v| v.strip_prefix(b"Bearer ").unwrap_or(v)),
        header("x-gitlab-token"),
        from_query.as_deref().map(str::as_bytes),
    ];
    let matches = candidates
        .into_iter()
        .flatten()
        .any(|given| constant_time::verify_slices_are_equal(given, secret).is_ok());
    matches.then_some(()).ok_or(Refusal::NoToken)
}

/// `sha256=<hex of HMAC-SHA256(secret, body)>`, compared in constant time.
fn check_signature(secret: &[u8], headers: &HeaderMap, body: &[u8]) -> Result<(), Refusal> {
    let given = headers
        .get("x-hub-signature-256")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("sha256="))
        .and_then(|h| hex::decode(h).ok())
        .ok_or(Refusal::BadSignature)?;
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    hmac::verify(&key, body, &given).map_err(|_| Refusal::BadSignature)
}

/// The `token` parameter of a query string, percent-decoded.
fn query_token(query: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let value = pair.strip_prefix("token=")?;
        let spaced = value.replace('+', " ");
        percent_encoding::percent_decode_str(&spaced)
            .decode_utf8()
            .ok()
            .map(|v| v.into_owned())
    })
}

/// A token bucket: `burst` requests at once, refilled at `per_second`.
pub struct Rate {
    per_second: f64,
    burst: f64,
    state: Mutex<(f64, Instant)>,
}

impl Rate {
    pub fn new(per_second: f64, burst: u32) -> Rate {
        let burst = f64::from(burst.max(1));
        Rate {
            per_second: per_second.max(0.001),
            burst,
            state: Mutex::new((burst, Instant::now())),
        }
    }

    /// Take one request's token, or say how long until one is available.
    pub fn take(&self) -> Result<(), Duration> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let (tokens, last) = *state;
        let refilled =
            (tokens + now.duration_since(last).as_secs_f64() * self.per_second).min(self.burst);
        if refilled >= 1.0 {
            *state = (refilled - 1.0, now);
            return Ok(());
        }
        *state = (refilled, now);
        Err(Duration::from_secs_f64((1.0 - refilled) / self.per_second))
    }
}

/// Most event identifiers remembered: past this, the oldest are forgotten first (the age limit
/// still refuses their replays when the sender dates its events).
const MAX_REMEMBERED: usize = 100_000;

/// Event identifiers received within the age limit, per sender.
pub struct Seen {
    window: Duration,
    inner: Mutex<SeenInner>,
}

#[derive(Default)]
struct SeenInner {
    order: VecDeque<(Instant, String)>,
    ids: HashSet<String>,
}

impl Seen {
    pub fn new(window: Duration) -> Seen {
        Seen {
            window,
            inner: Mutex::default(),
        }
    }

    /// Remember `ids` of `sender`; false when one of them was received before (a replay).
    pub fn first_time(&self, sender: &str, ids: &[String]) -> bool {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        while let Some((at, _)) = inner.order.front() {
            if now.duration_since(*at) <= self.window && inner.order.len() < MAX_REMEMBERED {
                break;
            }
            if let Some((_, key)) = inner.order.pop_front() {
                inner.ids.remove(&key);
            }
        }
        let keys: Vec<String> = ids.iter().map(|id| format!("{sender}\n{id}")).collect();
        if keys.iter().any(|k| inner.ids.contains(k)) {
            return false;
        }
        for key in keys {
            if inner.ids.insert(key.clone()) {
                inner.order.push_back((now, key));
            }
        }
        true
    }
}

/// Whether the sender's time of the event is within `window` of now (either side, for clocks
/// that run ahead).
pub fn is_recent(sent_at: Option<jiff::Timestamp>, window: Duration) -> bool {
    let Some(at) = sent_at else {
        return true;
    };
    let age = jiff::Timestamp::now().duration_since(at);
    let window = jiff::SignedDuration::try_from(window).unwrap_or(jiff::SignedDuration::MAX);
    age.abs() <= window
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn tokens_are_accepted_from_each_place_senders_put_them() {
        let ok = |h: &[(&str, &str)], q: Option<&str>| {
            authenticate(Format::Distribution, b"s3cret", &headers(h), q, b"{}").is_ok()
        };
        assert!(ok(&[("authorization", "Bearer s3cret")], None));
        assert!(ok(&[("authorization", "s3cret")], None));
        assert!(ok(&[("x-gitlab-token", "s3cret")], None));
        assert!(ok(&[], Some("a=b&token=s3cret")));
        assert!(ok(&[], Some("token=s3%63ret")));
        assert!(!ok(&[("authorization", "Bearer s3cre")], None));
        assert!(!ok(&[("authorization", "Bearer s3cret2")], None));
        assert!(!ok(&[], Some("tokens=s3cret")));
        assert!(!ok(&[], None));
        assert!(
            authenticate(
                Format::Distribution,
                b"",
                &headers(&[("authorization", "")]),
                None,
                b""
            )
            .is_err(),
            "an empty secret authenticates nobody"
        );
    }

    #[test]
    fn github_signatures_are_the_hmac_of_the_body() {
        // GitHub's documented test vector: secret "It's a Secret to Everybody", payload
        // "Hello, World!" (docs.github.com, "Validating webhook deliveries").
        let secret = b"It's a Secret to Everybody";
        let signed = headers(&[(
            "x-hub-signature-256",
            "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
        )]);
        assert!(authenticate(Format::Github, secret, &signed, None, b"Hello, World!").is_ok());
        assert_eq!(
            authenticate(Format::Github, secret, &signed, None, b"Hello, World?"),
            Err(Refusal::BadSignature)
        );
        let token_only = headers(&[("authorization", "Bearer It's a Secret to Everybody")]);
        assert!(authenticate(Format::Github, secret, &token_only, None, b"Hello, World!").is_err());
    }

    #[test]
    fn a_rate_allows_its_burst_then_says_when_to_retry() {
        let rate = Rate::new(1.0, 3);
        assert!((0..3).all(|_| rate.take().is_ok()));
        let wait = rate.take().unwrap_err();
        assert!(wait > Duration::ZERO && wait <= Duration::from_secs(1));
    }

    #[test]
    fn an_event_id_is_accepted_once_per_sender() {
        let seen = Seen::new(Duration::from_secs(600));
        assert!(seen.first_time("a", &["1".into()]));
        assert!(!seen.first_time("a", &["1".into()]));
        assert!(!seen.first_time("a", &["2".into(), "1".into()]));
        assert!(seen.first_time("b", &["1".into()]));
        assert!(
            seen.first_time("a", &[]),
            "events without identifiers cannot be told apart"
        );
    }

    #[test]
    fn events_older_or_later_than_the_window_are_not_recent() {
        let window = Duration::from_secs(600);
        let now = jiff::Timestamp::now();
        assert!(is_recent(None, window));
        assert!(is_recent(Some(now), window));
        assert!(!is_recent(
            Some(now - jiff::SignedDuration::from_secs(3600)),
            window
        ));
        assert!(!is_recent(
            Some(now + jiff::SignedDuration::from_secs(3600)),
            window
        ));
    }
}
