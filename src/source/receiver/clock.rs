//! Time from an event to the new artifact it announced: marked when the receiver triggers an
//! object, claimed by the next pass that starts, observed when that pass stores a new artifact.
//! A pass that finds nothing new leaves its claim to be dropped by the next pass's (the event was
//! about a revision already held).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;

/// Marks older than this are dropped unclaimed (their object left, or never ran).
const MAX_MARK_AGE: Duration = Duration::from_secs(3600);

/// Pending marks are pruned of old ones only past this many (not on every event).
const PRUNE_AT: usize = 4096;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: String,
}

#[derive(Default)]
struct Marks {
    /// `kind/namespace/name` → when the first event not yet claimed by a pass arrived.
    pending: HashMap<String, Instant>,
    /// The mark the running pass claimed.
    claimed: HashMap<String, Instant>,
}

#[derive(Clone)]
pub struct EventClock {
    marks: std::sync::Arc<Mutex<Marks>>,
    pub event_to_artifact: Family<KindLabels, Histogram>,
}

impl Default for EventClock {
    fn default() -> Self {
        EventClock {
            marks: Default::default(),
            event_to_artifact: Family::new_with_constructor(|| {
                Histogram::new([0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 30.0, 60.0, 300.0])
            }),
        }
    }
}

fn key(kind: &str, object: &str) -> String {
    format!("{kind}/{object}")
}

impl EventClock {
    fn lock(&self) -> std::sync::MutexGuard<'_, Marks> {
        self.marks.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// An event triggered `object` (`namespace/name`) of `kind`.
    pub fn mark(&self, kind: &str, object: &str) {
        let now = Instant::now();
        let mut marks = self.lock();
        if marks.pending.len() >= PRUNE_AT {
            marks
                .pending
                .retain(|_, at| now.duration_since(*at) < MAX_MARK_AGE);
        }
        marks.pending.entry(key(kind, object)).or_insert(now);
    }

    /// A pass of `object` starts: it answers the events marked so far, and the previous pass's
    /// claim is over.
    pub fn claim(&self, kind: &str, object: &str) {
        let key = key(kind, object);
        let mut marks = self.lock();
        match marks.pending.remove(&key) {
            Some(at) => marks.claimed.insert(key, at),
            None => marks.claimed.remove(&key),
        };
    }

    /// The pass stored a new artifact: the time since the event it answered, if one.
    pub fn new_artifact(&self, kind: &str, object: &str) -> Option<Duration> {
        let at = self.lock().claimed.remove(&key(kind, object))?;
        let took = at.elapsed();
        self.event_to_artifact
            .get_or_create(&KindLabels { kind: kind.into() })
            .observe(took.as_secs_f64());
        Some(took)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_pass_that_started_after_the_event_answers_it() {
        let clock = EventClock::default();
        clock.claim("OCIRepository", "ns/a");
        clock.mark("OCIRepository", "ns/a");
        assert_eq!(
            clock.new_artifact("OCIRepository", "ns/a"),
            None,
            "the pass began before the event"
        );
        clock.claim("OCIRepository", "ns/a");
        assert!(clock.new_artifact("OCIRepository", "ns/a").is_some());
        assert_eq!(
            clock.new_artifact("OCIRepository", "ns/a"),
            None,
            "observed once"
        );
        clock.mark("Bucket", "ns/a");
        clock.claim("Bucket", "ns/a");
        clock.claim("Bucket", "ns/a");
        assert_eq!(
            clock.new_artifact("Bucket", "ns/a"),
            None,
            "a pass with nothing new answered it"
        );
    }
}
