//! controller-runtime's work-queue metrics, reconstructed around kube-runtime's private scheduler queue.

// `workqueue_depth`, `workqueue_adds_total`, `workqueue_queue_duration_seconds`, labelled
// `name` = the controller: an object is queued from the moment something asks for its reconcile
// (a watch event, a source change, a requeue falling due) until a worker starts it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kube::runtime::controller::Action;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// The longest a requeue waits: a year, under the two years kube-runtime's delay queue takes.
pub const MAX_REQUEUE: Duration = Duration::from_secs(365 * 24 * 3600);

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueueLabels {
    pub name: String,
}

#[derive(Default)]
struct Pending {
    /// (controller, object key) → when its reconcile is due.
    due: HashMap<(String, String), Instant>,
    /// Every controller seen, so that an emptied queue reads 0.
    controllers: std::collections::BTreeSet<String>,
}

/// Whether a controller still has an object (by `namespace/name`).
type Exists = Arc<dyn Fn(&str) -> bool + Send + Sync>;

#[derive(Clone)]
pub struct WorkQueues {
    pending: Arc<Mutex<Pending>>,
    watched: Arc<Mutex<HashMap<String, Exists>>>,
    depth: Family<QueueLabels, Gauge>,
    adds: Family<QueueLabels, Counter>,
    waited: Family<QueueLabels, Histogram>,
}

impl WorkQueues {
    pub fn register(registry: &mut Registry) -> WorkQueues {
        let queues = WorkQueues {
            pending: Arc::default(),
            watched: Arc::default(),
            depth: Family::default(),
            adds: Family::default(),
            // controller-runtime: prometheus.ExponentialBuckets(10e-9, 10, 12).
            waited: Family::new_with_constructor(|| {
                Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
                    1e-8, 10.0, 12,
                ))
            }),
        };
        registry.register(
            "workqueue_depth",
            "Current depth of workqueue",
            queues.depth.clone(),
        );
        registry.register(
            "workqueue_adds",
            "Total number of adds handled by workqueue",
            queues.adds.clone(),
        );
        registry.register(
            "workqueue_queue_duration_seconds",
            "How long in seconds an item stays in workqueue before being requested",
            queues.waited.clone(),
        );
        queues
    }

    /// `exists` tells whether `controller` still has an object (its reflector's store): one that
    /// left without a cleanup pass (force-deleted, out of the label selector) leaves the queue.
    pub fn watch(&self, controller: &str, exists: impl Fn(&str) -> bool + Send + Sync + 'static) {
        let mut watched = self.watched.lock().expect("work queue lock");
        watched.insert(controller.to_string(), Arc::new(exists));
    }

    /// Something asked for `key`'s reconcile now (a watch event or a watched source's change).
    pub fn add(&self, controller: &str, key: &str) {
        self.add_at(controller, key, Instant::now());
    }

    /// The reconcile of `key` asked to run again after `delay`: the action that does so.
    pub fn requeue(&self, controller: &str, key: &str, delay: Duration) -> Action {
        // kube-runtime's scheduler caps what it holds (about two years); so does the queue
        // record, and neither may overflow an `Instant` whatever a spec's interval says.
        let delay = delay.min(MAX_REQUEUE);
        let now = Instant::now();
        self.add_at(controller, key, now.checked_add(delay).unwrap_or(now));
        Action::requeue(delay)
    }

    fn add_at(&self, controller: &str, key: &str, due: Instant) {
        self.adds.get_or_create(&label(controller)).inc();
        let mut pending = self.pending.lock().expect("work queue lock");
        pending.controllers.insert(controller.to_string());
        let at = pending
            .due
            .entry((controller.to_string(), key.to_string()))
            .or_insert(due);
        // Already queued: the earlier request stands, as a work queue keeps one entry per key.
        *at = (*at).min(due);
    }

    /// A worker picked `key` up: it leaves the queue, having waited since it fell due.
    pub fn started(&self, controller: &str, key: &str) {
        let now = Instant::now();
        let mut pending = self.pending.lock().expect("work queue lock");
        match pending.due.get(&(controller.to_string(), key.to_string())) {
            Some(due) if *due <= now => {
                let waited = now.duration_since(*due).as_secs_f64();
                self.waited
                    .get_or_create(&label(controller))
                    .observe(waited);
                pending
                    .due
                    .remove(&(controller.to_string(), key.to_string()));
            }
            // A requeue still in the future, or a start kube-runtime triggered itself.
            _ => {}
        }
    }

    /// The object is gone: nothing of it stays queued.
    pub fn forget(&self, controller: &str, key: &str) {
        let mut pending = self.pending.lock().expect("work queue lock");
        pending
            .due
            .remove(&(controller.to_string(), key.to_string()));
    }

    /// Sets `workqueue_depth` to the objects that are due and not started (before rendering).
    pub fn refresh(&self) {
        let now = Instant::now();
        let mut pending = self.pending.lock().expect("work queue lock");
        let watched = self.watched.lock().expect("work queue lock").clone();
        pending.due.retain(|(controller, key), _| {
            watched.get(controller).is_none_or(|exists| exists(key))
        });
        let mut depth: HashMap<&str, i64> = pending
            .controllers
            .iter()
            .map(|c| (c.as_str(), 0))
            .collect();
        for ((controller, _), due) in pending.due.iter() {
            *depth.entry(controller).or_default() += i64::from(*due <= now);
        }
        for (controller, n) in depth {
            self.depth.get_or_create(&label(controller)).set(n);
        }
    }
}

fn label(controller: &str) -> QueueLabels {
    QueueLabels {
        name: controller.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(queues: &WorkQueues, registry: &Registry) -> String {
        queues.refresh();
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, registry).unwrap();
        out
    }

    #[test]
    fn depth_counts_due_objects_until_a_worker_starts_them() {
        let mut registry = Registry::default();
        let q = WorkQueues::register(&mut registry);
        q.add("ocirepository", "ns/a");
        q.add("ocirepository", "ns/a");
        q.add("ocirepository", "ns/b");
        q.requeue("ocirepository", "ns/c", Duration::from_secs(3600));
        let text = render(&q, &registry);
        assert!(
            text.contains(r#"workqueue_depth{name="ocirepository"} 2"#),
            "{text}"
        );
        assert!(
            text.contains(r#"workqueue_adds_total{name="ocirepository"} 4"#),
            "{text}"
        );

        q.started("ocirepository", "ns/a");
        q.started("ocirepository", "ns/c");
        let text = render(&q, &registry);
        assert!(
            text.contains(r#"workqueue_depth{name="ocirepository"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"workqueue_queue_duration_seconds_count{name="ocirepository"} 1"#),
            "{text}"
        );

        q.forget("ocirepository", "ns/b");
        let text = render(&q, &registry);
        assert!(
            text.contains(r#"workqueue_depth{name="ocirepository"} 0"#),
            "{text}"
        );
    }

    #[test]
    fn objects_the_controller_no_longer_has_leave_the_queue() {
        let mut registry = Registry::default();
        let q = WorkQueues::register(&mut registry);
        q.add("bucket", "ns/kept");
        q.add("bucket", "ns/gone");
        q.watch("bucket", |key| key != "ns/gone");
        assert!(render(&q, &registry).contains(r#"workqueue_depth{name="bucket"} 1"#));
        assert_eq!(
            q.pending.lock().unwrap().due.len(),
            1,
            "the entry is dropped, not kept"
        );
    }

    #[test]
    fn a_requeue_counts_once_it_falls_due() {
        let mut registry = Registry::default();
        let q = WorkQueues::register(&mut registry);
        q.requeue("bucket", "ns/x", Duration::ZERO);
        assert!(render(&q, &registry).contains(r#"workqueue_depth{name="bucket"} 1"#));
    }
}
