//! The receiver: events from registries and object stores, authenticated and bounded, turned
//! into reconciles of the sources they can affect. An event is only ever a hint: the reconcile
//! resolves the tag (or lists the bucket) again itself, so a forged or stale event costs one
//! reconcile at most, never a wrong artifact.
//!
//! Data flow: `server` (HTTP, limits) → `guard` (secret, rate, replays) → `formats` (payload →
//! notices) → `matching` (notices → objects) → a throttle per object → the controllers' trigger
//! queues. The first event for an object requests its reconcile at once; the events that follow
//! within the coalescing window are gathered into one more request at the window's end, so a
//! burst costs one reconcile per window, never one per event.

pub mod clock;
pub mod config;
pub mod formats;
pub mod guard;
pub mod matching;
pub mod server;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::channel::mpsc;
use kube::runtime::reflector::{ObjectRef, Store};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

use self::clock::{EventClock, KindLabels};
use self::config::{ReceiverConfig, SenderConfig};
use self::formats::{Delivery, Endpoint, Notice};
use crate::api::{Bucket, OCIRepository};
use crate::controller::metrics::Metrics;

/// Reconcile requests waiting for a controller; past this the receiver drops new ones (the
/// objects already queued reconcile anyway, and the interval catches the rest).
const TRIGGER_QUEUE: usize = 4096;

/// A configured sender and its rate.
pub struct Sender {
    pub config: SenderConfig,
    pub rate: guard::Rate,
}

/// Where triggered reconciles go: each controller's `reconcile_on` stream.
pub struct Triggers {
    pub oci: mpsc::Sender<ObjectRef<OCIRepository>>,
    pub buckets: mpsc::Sender<ObjectRef<Bucket>>,
}

/// The receiving ends, one per controller.
pub struct TriggerStreams {
    pub oci: mpsc::Receiver<ObjectRef<OCIRepository>>,
    pub buckets: mpsc::Receiver<ObjectRef<Bucket>>,
}

pub fn trigger_queues() -> (Triggers, TriggerStreams) {
    let (oci, oci_rx) = mpsc::channel(TRIGGER_QUEUE);
    let (buckets, buckets_rx) = mpsc::channel(TRIGGER_QUEUE);
    (
        Triggers { oci, buckets },
        TriggerStreams {
            oci: oci_rx,
            buckets: buckets_rx,
        },
    )
}

/// The objects the controllers watch, as their caches hold them.
pub struct Watched {
    pub oci: Store<OCIRepository>,
    pub buckets: Store<Bucket>,
}

/// Limits of the receiver's flags.
pub struct Limits {
    pub max_body_bytes: usize,
    pub max_event_age: Duration,
    /// How long the events for one object are gathered before its reconcile is requested.
    pub coalesce: Duration,
}

pub struct Receiver {
    senders: HashMap<String, Sender>,
    secrets: config::Secrets,
    seen: guard::Seen,
    in_flight: tokio::sync::Semaphore,
    max_body_bytes: usize,
    max_event_age: Duration,
    watched: Watched,
    triggers: Triggers,
    coalesce: Duration,
    /// Objects (`Kind/namespace/name`) inside their window, and whether an event arrived there.
    gathering: Arc<Mutex<HashMap<String, bool>>>,
    clock: EventClock,
    metrics: ReceiverMetrics,
    /// The work-queue metrics, which count an event's request as queued until a worker starts.
    queues: crate::controller::queue::WorkQueues,
}

impl Receiver {
    pub fn new(
        config: ReceiverConfig,
        secrets: config::Secrets,
        limits: Limits,
        watched: Watched,
        triggers: Triggers,
        clock: EventClock,
        metrics: &Metrics,
    ) -> Receiver {
        let senders = config
            .senders
            .into_iter()
            .map(|c| {
                let rate = guard::Rate::new(c.rate.per_second, c.rate.burst);
                (c.name.clone(), Sender { config: c, rate })
            })
            .collect();
        Receiver {
            senders,
            secrets,
            // An event dated up to the window ahead stays recent for twice the window.
            seen: guard::Seen::new(limits.max_event_age.saturating_mul(2)),
            in_flight: tokio::sync::Semaphore::new(server::MAX_IN_FLIGHT),
            max_body_bytes: limits.max_body_bytes,
            max_event_age: limits.max_event_age,
            watched,
            triggers,
            coalesce: limits.coalesce,
            gathering: Arc::default(),
            clock,
            metrics: ReceiverMetrics::register(metrics),
            queues: metrics.queues.clone(),
        }
    }

    /// Queue a reconcile of every object the delivery's notices can affect; how many.
    fn trigger(&self, sender: &str, delivery: &Delivery) -> usize {
        let host = self.senders.get(sender).and_then(|s| s.config.host.clone());
        let mut oci = Vec::new();
        let mut buckets = Vec::new();
        for notice in distinct_notices(sender, &delivery.notices) {
            match notice {
                Notice::Image(push) => {
                    let mut push = push.clone();
                    if let Some(h) = &host {
                        push.registry = Some(h.to_ascii_lowercase());
                    }
                    oci.extend(matching::oci_repositories(&self.watched.oci, &push));
                }
                Notice::Object(change) => {
                    let mut change = change.clone();
                    if let Some(h) = &host {
                        change.endpoint = Endpoint::Host(matching::endpoint_host(h));
                    }
                    buckets.extend(matching::buckets(&self.watched.buckets, &change));
                }
            }
        }
        oci.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        oci.dedup();
        buckets.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        buckets.dedup();
        let queued =
            self.queue(&self.triggers.oci, oci) + self.queue(&self.triggers.buckets, buckets);
        tracing::info!(
            sender,
            notices = delivery.notices.len(),
            triggered = queued,
            "event received"
        );
        queued
    }

    /// Request a reconcile of each object now, or at the end of its window when one was
    /// requested within it; how many objects the event reached.
    fn queue<K>(&self, tx: &mpsc::Sender<ObjectRef<K>>, objects: Vec<ObjectRef<K>>) -> usize
    where
        K: kube::Resource<DynamicType = ()> + Send + Sync + 'static,
    {
        let kind = K::kind(&()).to_string();
        let reached = objects.len();
        for obj in objects {
            let name = matching::describe(&obj);
            self.clock.mark(&kind, &name);
            self.metrics.triggered(&kind);
            let key = format!("{kind}/{name}");
            // Queued from the event on, as the work-queue metrics count it.
            self.queues.add(&kind.to_lowercase(), &name);
            // One look under one lock: two requests at once must not both take the lead.
            let leads = {
                let mut gathering = lock(&self.gathering);
                match gathering.get_mut(&key) {
                    Some(again) => {
                        *again = true;
                        false
                    }
                    None => {
                        gathering.insert(key.clone(), false);
                        true
                    }
                }
            };
            if !leads {
                continue;
            }
            request(&mut tx.clone(), obj.clone(), &key);
            let throttle = Throttle {
                tx: tx.clone(),
                gathering: self.gathering.clone(),
                window: self.coalesce,
            };
            tokio::spawn(throttle.run(key, obj));
        }
        reached
    }
}

/// The window after an object's request: while events keep arriving in it, one more request
/// at its end and a new window.
struct Throttle<K: kube::Resource<DynamicType = ()>> {
    tx: mpsc::Sender<ObjectRef<K>>,
    gathering: Arc<Mutex<HashMap<String, bool>>>,
    window: Duration,
}

impl<K: kube::Resource<DynamicType = ()>> Throttle<K> {
    async fn run(mut self, key: String, obj: ObjectRef<K>) {
        loop {
            tokio::time::sleep(self.window).await;
            let again = {
                let mut gathering = lock(&self.gathering);
                match gathering.get_mut(&key) {
                    Some(again) if *again => {
                        *again = false;
                        true
                    }
                    _ => {
                        gathering.remove(&key);
                        false
                    }
                }
            };
            if !again {
                return;
            }
            request(&mut self.tx, obj.clone(), &key);
        }
    }
}

fn request<K: kube::Resource>(tx: &mut mpsc::Sender<ObjectRef<K>>, obj: ObjectRef<K>, key: &str) {
    if let Err(e) = tx.try_send(obj) {
        tracing::warn!(object = %key, error = %e, "reconcile request dropped");
    }
}

/// Distinct notices that one request may act on: each is matched against every watched
/// object, so a body packed with thousands of them (within the size limit) must not buy that
/// many scans. Senders batch a handful; the interval catches anything cut.
const MAX_NOTICES: usize = 256;

fn distinct_notices<'a>(sender: &str, notices: &'a [Notice]) -> Vec<&'a Notice> {
    let mut seen = std::collections::HashSet::new();
    let distinct: Vec<&Notice> = notices.iter().filter(|n| seen.insert(*n)).collect();
    if distinct.len() > MAX_NOTICES {
        tracing::warn!(
            sender,
            notices = distinct.len(),
            kept = MAX_NOTICES,
            "event with too many changes; the rest wait for the interval"
        );
    }
    distinct.into_iter().take(MAX_NOTICES).collect()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SenderLabels {
    pub sender: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RejectLabels {
    pub sender: String,
    pub reason: String,
}

/// Events per sender: received, accepted, rejected (by reason); reconciles triggered per kind.
#[derive(Clone)]
pub struct ReceiverMetrics {
    received: Family<SenderLabels, Counter>,
    accepted: Family<SenderLabels, Counter>,
    rejected: Family<RejectLabels, Counter>,
    triggered: Family<KindLabels, Counter>,
}

impl ReceiverMetrics {
    fn register(metrics: &Metrics) -> ReceiverMetrics {
        let m = ReceiverMetrics {
            received: Family::default(),
            accepted: Family::default(),
            rejected: Family::default(),
            triggered: Family::default(),
        };
        metrics.register(
            "driftless_receiver_events_received",
            "Requests received per configured sender (unknown: any other path).",
            m.received.clone(),
        );
        metrics.register(
            "driftless_receiver_events_accepted",
            "Requests authenticated, well-formed, recent and new.",
            m.accepted.clone(),
        );
        metrics.register(
            "driftless_receiver_events_rejected",
            "Requests refused or ignored, by reason.",
            m.rejected.clone(),
        );
        metrics.register(
            "driftless_receiver_reconciles_triggered",
            "Objects reached by events, per kind (each event counts; the throttle merges reconciles).",
            m.triggered.clone(),
        );
        m
    }

    /// Only configured names become label values: a path is the sender's choice.
    fn sender_label(&self, receiver: &Receiver, name: &str) -> String {
        match receiver.senders.contains_key(name) {
            true => name.to_string(),
            false => "unknown".to_string(),
        }
    }

    fn received(&self, sender: &str) {
        self.received
            .get_or_create(&SenderLabels {
                sender: sender.into(),
            })
            .inc();
    }

    fn accepted(&self, sender: &str) {
        self.accepted
            .get_or_create(&SenderLabels {
                sender: sender.into(),
            })
            .inc();
    }

    fn rejected(&self, sender: &str, reason: &str) {
        self.rejected
            .get_or_create(&RejectLabels {
                sender: sender.into(),
                reason: reason.into(),
            })
            .inc();
    }

    fn triggered(&self, kind: &str) {
        self.triggered
            .get_or_create(&KindLabels { kind: kind.into() })
            .inc();
    }
}

/// Register the event-to-artifact histogram of `clock` with the controller's metrics.
pub fn register_clock(clock: &EventClock, metrics: &Metrics) {
    metrics.register(
        "driftless_receiver_event_to_artifact_seconds",
        "Time from an event that triggered a reconcile to the new artifact it produced.",
        clock.event_to_artifact.clone(),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::receiver::formats::ImagePush;

    fn push(tag: usize) -> Notice {
        Notice::Image(ImagePush {
            registry: Some("r.io".into()),
            repository: "app".into(),
            tag: Some(format!("v{tag}")),
            digest: None,
        })
    }

    #[test]
    fn a_request_acts_on_each_distinct_change_once_and_on_a_bounded_number() {
        let repeated: Vec<Notice> = (0..1000).map(|_| push(1)).collect();
        assert_eq!(distinct_notices("s", &repeated), [&push(1)]);
        let many: Vec<Notice> = (0..10_000).map(push).collect();
        let kept = distinct_notices("s", &many);
        assert_eq!(kept.len(), MAX_NOTICES);
        assert_eq!(kept[0], &push(0));
    }
}
