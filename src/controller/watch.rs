//! The watch every controller runs on its own kind: cached, trimmed, and filtered down to the
//! changes that ask for work.

use std::fmt::Debug;

use futures::StreamExt;
use kube::runtime::{PredicateConfig, WatchStreamExt, reflector, watcher};
use kube::{Api, Resource, ResourceExt};
use serde::de::DeserializeOwned;

use crate::controller::objects::REQUESTED_AT;

/// The objects of one kind to reconcile, cached in `store`, trimmed (`trim`); and like Flux's
/// predicates, only what asks for work
/// (a new generation, a reconcile request, a finalizer or deletion change) reaches the queue:
/// our own status writes do not.
/// `left` hears of every object the watch stops seeing: deleted, or relabelled out of
/// `label_selector`.
pub fn watched_objects<K>(
    api: Api<K>,
    label_selector: &str,
    left: impl Fn(&K) + Send + 'static,
) -> (
    impl futures::Stream<Item = Result<K, watcher::Error>> + Send + 'static,
    reflector::Store<K>,
)
where
    K: Resource<DynamicType = ()> + Clone + Debug + DeserializeOwned + Send + Sync + 'static,
{
    let mut watch = watcher::Config::default().any_semantic();
    if !label_selector.is_empty() {
        watch = watch.labels(label_selector);
    }
    let (store, writer) = reflector::store();
    let objects = watcher(api, watch)
        .backoff(WatchBackoff::default())
        .modify(trim)
        .reflect(writer)
        .inspect(move |event| {
            if let Ok(watcher::Event::Delete(obj)) = event {
                left(obj);
            }
        })
        .touched_objects()
        .predicate_filter(wants_reconcile, PredicateConfig::default());
    (objects, store)
}

/// Drops what no controller reads from a cached object and what makes up most of its size in
/// memory: managedFields, and the whole object again as JSON in kubectl's last-applied annotation.
pub fn trim<K: Resource>(object: &mut K) {
    object.managed_fields_mut().clear();
    object.annotations_mut().remove(LAST_APPLIED);
}

const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// How soon a watch is started again after the API server failed it: from 200 ms, doubling, to
/// at most 10 s (plus up to a tenth), back to the start after the first event that arrives.
///
/// kube's default (client-go's, 800 ms to 30 s, reset only after 2 minutes without an error)
/// left a controller deaf to its sources for up to two minutes after an API server outage of
/// 15 s (the fault soak measured 96–170 s). Every watch uses this one instead, each its own.
#[derive(Debug, Clone)]
pub struct WatchBackoff {
    next: std::time::Duration,
}

const WATCH_RETRY_MIN: std::time::Duration = std::time::Duration::from_millis(200);
const WATCH_RETRY_MAX: std::time::Duration = std::time::Duration::from_secs(10);

impl Default for WatchBackoff {
    fn default() -> Self {
        WatchBackoff {
            next: WATCH_RETRY_MIN,
        }
    }
}

impl Iterator for WatchBackoff {
    type Item = std::time::Duration;

    fn next(&mut self) -> Option<std::time::Duration> {
        let delay = self.next;
        self.next = (delay * 2).min(WATCH_RETRY_MAX);
        Some(delay + delay.mul_f64(rand::random::<f64>() / 10.0))
    }
}

impl kube::runtime::utils::Backoff for WatchBackoff {
    fn reset(&mut self) {
        self.next = WATCH_RETRY_MIN;
    }
}

/// A watch on another kind whose changes trigger reconciles (`Controller::watches_stream`),
/// retried by its own `WatchBackoff`: see `EachWatchBacksOff`.
pub fn trigger_watch<K>(
    api: Api<K>,
    config: watcher::Config,
) -> impl futures::Stream<Item = Result<K, watcher::Error>> + Send + 'static
where
    K: Resource + Clone + Debug + DeserializeOwned + Send + 'static,
{
    watcher(api, config)
        .backoff(WatchBackoff::default())
        .touched_objects()
}

/// A controller's backoff for its merged trigger streams (`Controller::trigger_backoff`): no
/// pause, because every stream in it backs off by itself (`watched_objects`, `trigger_watch`).
///
/// kube-runtime pauses the whole merged stream while it backs off after an error from any one
/// watch, so the watches of a controller reconnected one pause at a time: after a 15 s API
/// server outage the apply-controller (seven watches) took 20–60 s to hear of changes again,
/// its other watches not even polled to find their connections refused (the soak, SOAK_ONLY=
/// "API server: outage", measured p50 19 s, max 61 s).
#[derive(Debug, Clone, Default)]
pub struct EachWatchBacksOff;

impl Iterator for EachWatchBacksOff {
    type Item = std::time::Duration;

    fn next(&mut self) -> Option<std::time::Duration> {
        // `None` would end the merged stream: kube-runtime's sign to give up.
        Some(std::time::Duration::ZERO)
    }
}

impl kube::runtime::utils::Backoff for EachWatchBacksOff {
    fn reset(&mut self) {}
}

/// Whether the cache `store` holds the object named `namespace/name`.
pub fn store_has<K>(store: reflector::Store<K>) -> impl Fn(&str) -> bool + Send + Sync + 'static
where
    K: Resource<DynamicType = ()> + Clone + Send + Sync + 'static,
{
    move |key: &str| {
        let (namespace, name) = key.split_once('/').unwrap_or(("", key));
        let object = reflector::ObjectRef::new(name).within(namespace);
        store.get(&object).is_some()
    }
}

/// `namespace/name`, how work queues, backoffs and logs name an object.
pub fn object_key<K: Resource>(obj: &K) -> String {
    format!("{}/{}", obj.namespace().unwrap_or_default(), obj.name_any())
}

/// The fields whose change asks for a reconcile.
fn wants_reconcile<K: Resource>(obj: &K) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    obj.meta().generation.hash(&mut h);
    obj.annotations().get(REQUESTED_AT).hash(&mut h);
    obj.meta()
        .deletion_timestamp
        .as_ref()
        .map(|t| t.0.as_second())
        .hash(&mut h);
    obj.finalizers().hash(&mut h);
    Some(h.finish())
}

/// Logs one result of a controller's stream (kube-runtime reports every reconcile there).
pub fn log_result<T, RE, QE>(
    result: Result<
        (T, kube::runtime::controller::Action),
        kube::runtime::controller::Error<RE, QE>,
    >,
) where
    T: std::fmt::Display,
    RE: std::error::Error + 'static,
    QE: std::error::Error + 'static,
{
    match result {
        Ok((obj, _)) => tracing::debug!(object = %obj, "reconciled"),
        Err(kube::runtime::controller::Error::ObjectNotFound(obj)) => {
            tracing::debug!(object = %obj, "object gone")
        }
        // The whole chain: "client error (Connect)" alone does not say why a watch failed.
        Err(e) => tracing::warn!(error = %crate::util::error_chain(&e), "reconcile failed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::runtime::utils::Backoff;

    #[test]
    fn watches_are_retried_soon_and_never_later_than_eleven_seconds() {
        let mut backoff = WatchBackoff::default();
        let delays: Vec<_> = backoff.by_ref().take(12).collect();
        assert!(delays[0] >= WATCH_RETRY_MIN && delays[0] <= WATCH_RETRY_MIN.mul_f64(1.1));
        assert!(delays.windows(2).all(|w| w[1] >= w[0].mul_f64(0.9)));
        assert!(delays.iter().all(|d| *d <= WATCH_RETRY_MAX.mul_f64(1.1)));
        assert!(delays[11] >= WATCH_RETRY_MAX, "{delays:?}");
        backoff.reset();
        assert!(backoff.next().unwrap() <= WATCH_RETRY_MIN.mul_f64(1.1));
    }

    #[test]
    fn the_merged_trigger_stream_never_pauses_nor_gives_up() {
        let mut merged = EachWatchBacksOff;
        assert!(merged.by_ref().take(100).all(|d| d.is_zero()));
        merged.reset();
        assert_eq!(merged.next(), Some(std::time::Duration::ZERO));
    }

    #[test]
    fn a_cached_object_keeps_what_controllers_read_and_drops_the_rest() {
        let mut object: crate::api::OCIRepository = serde_json::from_value(serde_json::json!({
            "apiVersion": "source.toolkit.fluxcd.io/v1",
            "kind": "OCIRepository",
            "metadata": {
                "name": "app",
                "namespace": "ns",
                "annotations": {
                    LAST_APPLIED: "{\"apiVersion\":\"source.toolkit.fluxcd.io/v1\"}",
                    REQUESTED_AT: "now",
                },
                "managedFields": [{"manager": "kubectl", "operation": "Apply"}],
            },
            "spec": {"url": "oci://r/app", "interval": "1m"},
        }))
        .unwrap();
        trim(&mut object);
        assert!(object.managed_fields().is_empty());
        assert_eq!(
            object.annotations().keys().collect::<Vec<_>>(),
            [REQUESTED_AT]
        );
    }
}
