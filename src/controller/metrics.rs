//! Prometheus metrics with Flux's names, so Flux's dashboards and alerts work unchanged.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ObjectLabels {
    pub kind: String,
    pub name: String,
    pub namespace: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub controller: String,
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabels {
    pub controller: String,
}

/// The controller's metrics and the registry that renders them.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Mutex<Registry>>,
    pub reconcile_duration: Family<ObjectLabels, Histogram>,
    pub reconcile_total: Family<ResultLabels, Counter>,
    pub reconcile_errors: Family<ControllerLabels, Counter>,
    pub bucket_objects_downloaded: Counter,
    pub bucket_bytes_downloaded: Counter,
    pub apply_writes: Counter,
    pub apply_dry_runs: Counter,
    pub active_workers: Family<ControllerLabels, Gauge>,
    pub queues: super::queue::WorkQueues,
    /// Series of lower layers that name objects (the token cache's), dropped with the object.
    forgetters: Arc<Mutex<Vec<Forgetter>>>,
}

type Forgetter = Box<dyn Fn(&ObjectLabels) + Send + Sync>;

tokio::task_local! {
    static RECONCILING: ObjectLabels;
}

/// Runs `work`, a reconcile pass of `object`: metrics that lower layers record meanwhile
/// (`reconciling_object`) name it, as Flux's per-object series do.
pub async fn reconciling<F: Future>(object: ObjectLabels, work: F) -> F::Output {
    RECONCILING.scope(object, work).await
}

/// The object whose reconcile pass is running on this task, if any.
pub fn reconciling_object() -> Option<ObjectLabels> {
    RECONCILING.try_with(ObjectLabels::clone).ok()
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        // Flux: prometheus.ExponentialBucketsRange(10ms, 1800s, 10).
        let reconcile_duration = Family::<ObjectLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_range(0.01, 1800.0, 10))
        });
        let reconcile_total = Family::<ResultLabels, Counter>::default();
        let reconcile_errors = Family::<ControllerLabels, Counter>::default();
        registry.register(
            "gotk_reconcile_duration_seconds",
            "The duration in seconds of a GitOps Toolkit resource reconciliation.",
            reconcile_duration.clone(),
        );
        registry.register(
            "controller_runtime_reconcile",
            "Total number of reconciliations per controller",
            reconcile_total.clone(),
        );
        registry.register(
            "controller_runtime_reconcile_errors",
            "Total number of reconciliation errors per controller",
            reconcile_errors.clone(),
        );
        let bucket_objects_downloaded = Counter::default();
        let bucket_bytes_downloaded = Counter::default();
        registry.register(
            "driftless_bucket_objects_downloaded",
            "Objects downloaded from buckets into the Bucket mirrors.",
            bucket_objects_downloaded.clone(),
        );
        registry.register(
            "driftless_bucket_downloaded_bytes",
            "Bytes downloaded from buckets into the Bucket mirrors.",
            bucket_bytes_downloaded.clone(),
        );
        let apply_writes = Counter::default();
        registry.register(
            "driftless_apply_writes",
            "Writes to cluster objects (server-side applies and deletions) by the apply-controller.",
            apply_writes.clone(),
        );
        let apply_dry_runs = Counter::default();
        registry.register(
            "driftless_apply_dry_runs",
            "Server-side apply dry runs (drift detection) sent by the apply-controller.",
            apply_dry_runs.clone(),
        );
        let active_workers = Family::<ControllerLabels, Gauge>::default();
        registry.register(
            "controller_runtime_active_workers",
            "Number of currently used workers per controller",
            active_workers.clone(),
        );
        let queues = super::queue::WorkQueues::register(&mut registry);
        Metrics {
            queues,
            forgetters: Arc::default(),
            registry: Arc::new(Mutex::new(registry)),
            active_workers,
            apply_writes,
            apply_dry_runs,
            bucket_objects_downloaded,
            bucket_bytes_downloaded,
            reconcile_duration,
            reconcile_total,
            reconcile_errors,
        }
    }

    pub fn observe_duration(&self, object: &ObjectLabels, took: Duration) {
        self.reconcile_duration
            .get_or_create(object)
            .observe(took.as_secs_f64());
    }

    pub fn record_bucket_sync(&self, objects: u64, bytes: u64) {
        self.bucket_objects_downloaded.inc_by(objects);
        self.bucket_bytes_downloaded.inc_by(bytes);
    }

    pub fn record_result(&self, controller: &str, result: &str) {
        self.reconcile_total
            .get_or_create(&ResultLabels {
                controller: controller.into(),
                result: result.into(),
            })
            .inc();
        if result == "error" {
            self.reconcile_errors
                .get_or_create(&ControllerLabels {
                    controller: controller.into(),
                })
                .inc();
        }
    }

    /// Drop the series of a deleted object.
    /// `forget` also calls `forgetter`: for series registered by other layers.
    pub fn on_forget(&self, forgetter: impl Fn(&ObjectLabels) + Send + Sync + 'static) {
        self.forgetters
            .lock()
            .expect("metrics forgetters")
            .push(Box::new(forgetter));
    }

    pub fn forget(&self, object: &ObjectLabels) {
        for forgetter in self.forgetters.lock().expect("metrics forgetters").iter() {
            forgetter(object);
        }
        self.queues.forget(
            &object.kind.to_lowercase(),
            &format!("{}/{}", object.namespace, object.name),
        );
        self.reconcile_duration.remove(object);
    }

    /// Counts a reconcile of `key` in flight until the guard is dropped; it has left the
    /// work queue.
    pub fn working(&self, controller: &str, key: &str) -> WorkerGuard {
        self.queues.started(controller, key);
        let gauge = self
            .active_workers
            .get_or_create(&ControllerLabels {
                controller: controller.into(),
            })
            .clone();
        gauge.inc();
        WorkerGuard(gauge)
    }

    /// Adds a metric kept elsewhere (the token cache's) under `name`.
    pub fn register(
        &self,
        name: &str,
        help: &str,
        metric: impl prometheus_client::registry::Metric,
    ) {
        self.registry
            .lock()
            .expect("metrics registry lock")
            .register(name, help, metric);
    }

    /// The text exposition format, with the process metrics every Go controller exports.
    pub fn render(&self) -> String {
        self.queues.refresh();
        let mut out = String::new();
        let registry = self.registry.lock().expect("metrics registry lock");
        prometheus_client::encoding::text::encode(&mut out, &registry)
            .expect("writing to a String cannot fail");
        let body = out.strip_suffix("# EOF\n").unwrap_or(&out).to_string();
        format!("{body}{}# EOF\n", process_metrics())
    }
}

pub struct WorkerGuard(Gauge);

impl Drop for WorkerGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// `process_*` from /proc/self, as Prometheus' client libraries name them.
fn process_metrics() -> String {
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, sample: &str, value: f64| {
        out.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{sample} {value}\n"
        ));
    };
    // SAFETY: sysconf and getrlimit only read process limits.
    let (ticks, page) = unsafe {
        (
            libc::sysconf(libc::_SC_CLK_TCK) as f64,
            libc::sysconf(libc::_SC_PAGESIZE) as f64,
        )
    };
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the parenthesised command name, which may itself contain spaces.
    let fields: Vec<&str> = stat
        .rsplit_once(") ")
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let field = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    if ticks > 0.0 && !fields.is_empty() {
        // utime (14) and stime (15), starttime (22), vsize (23), rss (24); 1-based in proc(5).
        metric(
            "process_cpu_seconds",
            "counter",
            "Total user and system CPU time spent in seconds.",
            "process_cpu_seconds_total",
            (field(11) + field(12)) / ticks,
        );
        metric(
            "process_virtual_memory_bytes",
            "gauge",
            "Virtual memory size in bytes.",
            "process_virtual_memory_bytes",
            field(20),
        );
        metric(
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size in bytes.",
            "process_resident_memory_bytes",
            field(21) * page,
        );
        let boot = std::fs::read_to_string("/proc/stat")
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("btime ")?.trim().parse::<f64>().ok())
            .unwrap_or(0.0);
        metric(
            "process_start_time_seconds",
            "gauge",
            "Start time of the process since unix epoch in seconds.",
            "process_start_time_seconds",
            boot + field(19) / ticks,
        );
    }
    let fds = std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0);
    metric(
        "process_open_fds",
        "gauge",
        "Number of open file descriptors.",
        "process_open_fds",
        fds as f64,
    );
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 {
        metric(
            "process_max_fds",
            "gauge",
            "Maximum number of open file descriptors.",
            "process_max_fds",
            limit.rlim_cur as f64,
        );
    }
    out
}

fn exponential_range(min: f64, max: f64, count: u16) -> impl Iterator<Item = f64> {
    let factor = (max / min).powf(1.0 / f64::from(count - 1));
    (0..count).map(move |i| min * factor.powi(i32::from(i)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_flux_metric_names() {
        let m = Metrics::new();
        let o = ObjectLabels {
            kind: "OCIRepository".into(),
            name: "a".into(),
            namespace: "ns".into(),
        };
        m.observe_duration(&o, Duration::from_millis(20));
        m.record_result("ocirepository", "success");
        let text = m.render();
        assert!(
            text.contains("gotk_reconcile_duration_seconds_bucket{"),
            "{text}"
        );
        // Flux 2.5 removed the per-object condition and suspend gauges (kube-state-metrics'
        // gotk_resource_info reads the conditions instead); Flux 2.10 exports neither.
        assert!(!text.contains("gotk_reconcile_condition"), "{text}");
        assert!(!text.contains("gotk_suspend_status"), "{text}");
        assert!(text.contains(r#"controller_runtime_reconcile_total{controller="ocirepository",result="success"} 1"#), "{text}");
        m.forget(&o);
        assert!(!m.render().contains(r#"name="a""#));
    }

    #[test]
    fn process_metrics_and_active_workers_are_rendered() {
        let m = Metrics::new();
        let guard = m.working("bucket", "ns/b");
        let text = m.render();
        assert!(
            text.contains(r#"controller_runtime_active_workers{controller="bucket"} 1"#),
            "{text}"
        );
        drop(guard);
        let text = m.render();
        assert!(
            text.contains(r#"controller_runtime_active_workers{controller="bucket"} 0"#),
            "{text}"
        );
        let rss = text
            .lines()
            .find_map(|l| l.strip_prefix("process_resident_memory_bytes "))
            .and_then(|v| v.parse::<f64>().ok())
            .expect("process_resident_memory_bytes");
        assert!(rss > 1e6, "{rss}");
        assert!(text.contains("process_cpu_seconds_total "), "{text}");
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn buckets_span_ten_ms_to_thirty_minutes() {
        let b: Vec<f64> = exponential_range(0.01, 1800.0, 10).collect();
        assert_eq!(b.len(), 10);
        assert!((b[0] - 0.01).abs() < 1e-9 && (b[9] - 1800.0).abs() < 1e-6);
    }
}
