//! The cache of short-lived cloud tokens and registry logins, as Flux's token cache: at most
//! `--token-cache-max-size` entries (0 turns it off), the least recently used going first; an
//! entry lives 80% of the lifetime its issuer gave it, at most `--token-cache-max-duration`
//! (itself at most an hour); and one fetch per key at a time, so that many objects of one
//! identity make one exchange. Keys name the credential material (identity, audience, region,
//! endpoint), never the object that asked; the hit and miss counts name it, as Flux's do, and
//! go with the object.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::controller::metrics::ObjectLabels;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

/// A bearer token (or a credential serialised into one string) and when it lapses.
#[derive(Clone)]
pub struct Token {
    pub value: String,
    pub expires: Instant,
}

pub const DEFAULT_MAX_SIZE: usize = 100;
/// Flux's ceiling on how long an entry may live, whatever the flag says.
pub const MAX_DURATION: Duration = Duration::from_secs(3600);

/// What the cache did since the process started (for `gotk_token_*` metrics).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    pub hits: u64,
    pub misses: u64,
    pub evictions: u64,
    pub fetched: u64,
    pub failed: u64,
    pub items: u64,
}

pub struct TokenCache {
    max_size: usize,
    max_duration: Duration,
    entries: Mutex<Entries>,
    /// One fetch per key in flight: askers meanwhile take its result, failures included (a
    /// hanging endpoint costs one timeout, not one per object).
    flights: Mutex<HashMap<String, Flight>>,
    metrics: TokenMetrics,
    /// Totals across objects, for `stats`.
    hits: AtomicU64,
    misses: AtomicU64,
}

#[derive(Clone, Debug, Default, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EventLabels {
    pub event_type: &'static str,
    pub kind: String,
    pub name: String,
    pub namespace: String,
    pub operation: &'static str,
}

/// Labels of an event: Flux's `kind`, `name`, `namespace` and `operation="reconcile"` in a
/// reconcile pass, empty outside one (the CLI).
fn event_labels(event_type: &'static str) -> EventLabels {
    match crate::controller::metrics::reconciling_object() {
        Some(object) => EventLabels {
            event_type,
            kind: object.kind,
            name: object.name,
            namespace: object.namespace,
            operation: "reconcile",
        },
        None => EventLabels {
            event_type,
            ..Default::default()
        },
    }
}

/// Drops a deleted object's event series, as Flux does.
fn forget_object(events: &Family<EventLabels, Counter>, object: &ObjectLabels) {
    for event_type in ["cache_hit", "cache_miss"] {
        events.remove(&EventLabels {
            event_type,
            kind: object.kind.clone(),
            name: object.name.clone(),
            namespace: object.namespace.clone(),
            operation: "reconcile",
        });
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabels {
    pub status: &'static str,
}

/// Flux's `gotk_token_*` metrics.
#[derive(Clone, Default)]
pub struct TokenMetrics {
    /// `gotk_token_cache_events_total{event_type="cache_hit"|"cache_miss",kind,name,namespace,operation}`
    pub events: Family<EventLabels, Counter>,
    /// `gotk_token_cached_items`
    pub items: Gauge,
    /// `gotk_token_cache_requests_total{status="success"|"failure"}`: fetches on a miss.
    pub requests: Family<StatusLabels, Counter>,
    /// `gotk_token_cache_evictions_total`
    pub evictions: Counter,
}

impl TokenMetrics {
    fn request(&self, status: &'static str) -> u64 {
        self.requests.get_or_create(&StatusLabels { status }).get()
    }
}

type Flight = Arc<tokio::sync::OnceCell<Result<String, String>>>;

#[derive(Default)]
struct Entries {
    map: HashMap<String, Entry>,
    clock: u64,
}

struct Entry {
    value: String,
    until: Instant,
    used: u64,
}

static CACHE: OnceLock<TokenCache> = OnceLock::new();

/// Sets the process's cache from the flags (the first call wins) and adds its metrics to the
/// controller's.
pub fn install(
    max_size: usize,
    max_duration: Duration,
    registry: &crate::controller::metrics::Metrics,
) {
    let _ = CACHE.set(TokenCache::new(max_size, max_duration));
    let m = metrics();
    let events = m.events.clone();
    registry.on_forget(move |object| forget_object(&events, object));
    registry.register(
        "gotk_token_cache_events",
        "Token cache lookups, by hit or miss.",
        m.events,
    );
    registry.register(
        "gotk_token_cached_items",
        "Total number of items in the token cache.",
        m.items,
    );
    registry.register(
        "gotk_token_cache_requests",
        "Total number of token fetches on a cache miss, by result.",
        m.requests,
    );
    registry.register(
        "gotk_token_cache_evictions",
        "Total number of tokens evicted from the cache.",
        m.evictions,
    );
}

fn cache() -> &'static TokenCache {
    CACHE.get_or_init(|| TokenCache::new(DEFAULT_MAX_SIZE, MAX_DURATION))
}

/// The cached token for `key`, else the one `fetch` gets (cached when it lives long enough).
pub async fn cached_token<F, Fut>(key: &str, fetch: F) -> Result<String, String>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<Token, String>>,
{
    cache().get_or_fetch(key, fetch).await
}

pub fn stats() -> Stats {
    cache().stats()
}

/// The process cache's metrics, for the controller's registry.
pub fn metrics() -> TokenMetrics {
    cache().metrics.clone()
}

impl TokenCache {
    pub fn new(max_size: usize, max_duration: Duration) -> Self {
        TokenCache {
            max_size,
            max_duration: max_duration.min(MAX_DURATION),
            entries: Mutex::default(),
            flights: Mutex::default(),
            metrics: TokenMetrics::default(),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    pub async fn get_or_fetch<F, Fut>(&self, key: &str, fetch: F) -> Result<String, String>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Token, String>>,
    {
        if self.max_size == 0 {
            return self.fetch(fetch).await.map(|t| t.value);
        }
        if let Some(value) = self.lookup(key) {
            return Ok(value);
        }
        let flight = self
            .flights
            .lock()
            .expect("token flights")
            .entry(key.to_string())
            .or_default()
            .clone();
        let flew = std::sync::atomic::AtomicBool::new(false);
        let result = flight
            .get_or_init(|| async {
                flew.store(true, Ordering::Relaxed);
                // A flight that ended just before this one began may have filled the cache.
                if let Some(value) = self.lookup(key) {
                    return Ok(value);
                }
                self.count("cache_miss");
                let fetched = self.fetch(fetch).await;
                if let Ok(token) = &fetched {
                    self.insert(key, token);
                }
                fetched.map(|t| t.value)
            })
            .await
            .clone();
        // Waiting for another asker's fetch is served from the cache, as far as it can tell.
        if !flew.load(Ordering::Relaxed) && result.is_ok() {
            self.count("cache_hit");
        }
        // Landed: later askers go to the cache (or start a new flight after a failure).
        let mut flights = self.flights.lock().expect("token flights");
        if flights.get(key).is_some_and(|f| Arc::ptr_eq(f, &flight)) {
            flights.remove(key);
        }
        result
    }

    async fn fetch<F, Fut>(&self, fetch: F) -> Result<Token, String>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Token, String>>,
    {
        let result = fetch().await;
        let status = match result.is_ok() {
            true => "success",
            false => "failure",
        };
        self.metrics
            .requests
            .get_or_create(&StatusLabels { status })
            .inc();
        result
    }

    fn lookup(&self, key: &str) -> Option<String> {
        let mut entries = self.entries.lock().expect("token cache");
        entries.clock += 1;
        let clock = entries.clock;
        let now = Instant::now();
        match entries.map.get_mut(key) {
            Some(entry) if entry.until > now => {
                entry.used = clock;
                self.count("cache_hit");
                Some(entry.value.clone())
            }
            Some(_) => {
                entries.map.remove(key);
                self.metrics.items.set(entries.map.len() as i64);
                None
            }
            None => None,
        }
    }

    fn count(&self, event_type: &'static str) {
        self.metrics
            .events
            .get_or_create(&event_labels(event_type))
            .inc();
        match event_type {
            "cache_hit" => &self.hits,
            _ => &self.misses,
        }
        .fetch_add(1, Ordering::Relaxed);
    }

    fn insert(&self, key: &str, token: &Token) {
        let now = Instant::now();
        let lifetime = token.expires.saturating_duration_since(now);
        // Bounded first: `* 8` of an issuer's outlandish lifetime would overflow.
        let keep = (lifetime.min(MAX_DURATION * 2) * 8 / 10).min(self.max_duration);
        if keep.is_zero() {
            return;
        }
        let mut entries = self.entries.lock().expect("token cache");
        entries.clock += 1;
        let used = entries.clock;
        entries.map.insert(
            key.to_string(),
            Entry {
                value: token.value.clone(),
                until: now + keep,
                used,
            },
        );
        while entries.map.len() > self.max_size {
            let Some(oldest) = entries
                .map
                .iter()
                .min_by_key(|(_, e)| e.used)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            entries.map.remove(&oldest);
            self.metrics.evictions.inc();
        }
        self.metrics.items.set(entries.map.len() as i64);
    }

    pub fn stats(&self) -> Stats {
        Stats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            evictions: self.metrics.evictions.get(),
            fetched: self.metrics.request("success"),
            failed: self.metrics.request("failure"),
            items: self.entries.lock().expect("token cache").map.len() as u64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    fn token(value: &str, secs: u64) -> Token {
        Token {
            value: value.into(),
            expires: Instant::now() + Duration::from_secs(secs),
        }
    }

    #[tokio::test]
    async fn tokens_are_reused_while_they_have_most_of_their_life() {
        let cache = TokenCache::new(10, MAX_DURATION);
        let first = cache
            .get_or_fetch("k", || async { Ok(token("one", 3600)) })
            .await
            .unwrap();
        let second = cache
            .get_or_fetch("k", || async { Err("must not fetch".to_string()) })
            .await
            .unwrap();
        assert_eq!((first.as_str(), second.as_str()), ("one", "one"));
        // A token that lapses at once is used but not kept.
        cache
            .get_or_fetch("lapsed", || async { Ok(token("old", 0)) })
            .await
            .unwrap();
        let again = cache
            .get_or_fetch("lapsed", || async { Ok(token("new", 3600)) })
            .await
            .unwrap();
        assert_eq!(again, "new");
        let stats = cache.stats();
        assert_eq!((stats.hits, stats.misses, stats.fetched), (1, 3, 3));
    }

    /// Askers of one key whose fetch counts itself and waits for the gate before giving
    /// `outcome` (a token, or an error).
    struct Gated {
        cache: Arc<TokenCache>,
        calls: Arc<AtomicU64>,
        gate: Arc<tokio::sync::Notify>,
    }

    impl Gated {
        fn new() -> Self {
            Gated {
                cache: Arc::new(TokenCache::new(10, MAX_DURATION)),
                calls: Arc::default(),
                gate: Arc::default(),
            }
        }

        fn ask(
            &self,
            key: &'static str,
            outcome: Result<&'static str, &'static str>,
        ) -> tokio::task::JoinHandle<Result<String, String>> {
            let (cache, calls, gate) = (self.cache.clone(), self.calls.clone(), self.gate.clone());
            tokio::spawn(async move {
                cache
                    .get_or_fetch(key, || async move {
                        calls.fetch_add(1, Ordering::SeqCst);
                        gate.notified().await;
                        outcome.map(|v| token(v, 3600)).map_err(str::to_string)
                    })
                    .await
            })
        }

        async fn until_fetching(&self) {
            while self.calls.load(Ordering::SeqCst) == 0 {
                tokio::task::yield_now().await;
            }
        }
    }

    #[tokio::test]
    async fn concurrent_askers_share_one_fetch() {
        let g = Gated::new();
        let a = g.ask("shared", Ok("t"));
        let b = g.ask("shared", Ok("t"));
        g.until_fetching().await;
        g.gate.notify_waiters();
        assert_eq!(a.await.unwrap().unwrap(), "t");
        assert_eq!(b.await.unwrap().unwrap(), "t");
        assert_eq!(g.calls.load(Ordering::SeqCst), 1, "one fetch for both");
        let stats = g.cache.stats();
        assert_eq!(
            (stats.misses, stats.hits),
            (1, 1),
            "the asker that waited counts as a hit"
        );
    }

    #[tokio::test]
    async fn askers_during_a_failing_fetch_share_its_failure() {
        let g = Gated::new();
        let a = g.ask("failing", Err("endpoint down"));
        g.until_fetching().await;
        let b = g.ask("failing", Err("endpoint down"));
        for _ in 0..100 {
            tokio::task::yield_now().await;
        }
        g.gate.notify_waiters();
        assert_eq!(a.await.unwrap(), Err("endpoint down".to_string()));
        assert_eq!(b.await.unwrap(), Err("endpoint down".to_string()));
        assert_eq!(
            g.calls.load(Ordering::SeqCst),
            1,
            "one fetch, one failure shared"
        );
        // The next asker starts over.
        let after = g
            .cache
            .get_or_fetch("failing", || async { Ok(token("back", 3600)) })
            .await;
        assert_eq!(after.as_deref(), Ok("back"));
    }

    #[tokio::test]
    async fn the_least_recently_used_entry_goes_first_and_size_zero_keeps_nothing() {
        let cache = TokenCache::new(2, MAX_DURATION);
        for k in ["a", "b"] {
            cache
                .get_or_fetch(k, || async { Ok(token(k, 3600)) })
                .await
                .unwrap();
        }
        cache
            .get_or_fetch("a", || async { Err("cached".into()) })
            .await
            .unwrap();
        cache
            .get_or_fetch("c", || async { Ok(token("c", 3600)) })
            .await
            .unwrap();
        assert!(
            cache
                .get_or_fetch("a", || async { Err("gone".into()) })
                .await
                .is_ok()
        );
        assert_eq!(
            cache
                .get_or_fetch("b", || async { Err("gone".into()) })
                .await,
            Err("gone".to_string()),
            "b was the least recently used"
        );
        assert_eq!(cache.stats().evictions, 1);
        let off = TokenCache::new(0, MAX_DURATION);
        off.get_or_fetch("k", || async { Ok(token("x", 3600)) })
            .await
            .unwrap();
        assert_eq!(off.stats().items, 0);
    }

    #[test]
    fn entries_live_at_most_the_configured_duration() {
        let cache = TokenCache::new(10, Duration::from_secs(7200));
        assert_eq!(cache.max_duration, MAX_DURATION, "capped at an hour");
    }
}
