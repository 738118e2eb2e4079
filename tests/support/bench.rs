//! What the scale benchmarks share: N OCIRepositories on one URL, Ready, and a steady pass.

use std::collections::BTreeMap;
use std::time::Duration;

use driftless::api::OCIRepository;
use futures::StreamExt;
use kube::Api;
use kube::api::{Patch, PatchParams};

/// `BENCH_N`, else `default`.
pub fn bench_n(default: usize) -> usize {
    std::env::var("BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Creates `app-0` … `app-<n-1>` on `url` (interval 60m, plain HTTP) and waits until all are
/// Ready, `limit` at most.
pub async fn create_ready_oci_repositories(
    api: &Api<OCIRepository>,
    n: usize,
    url: &str,
    limit: Duration,
) {
    create_ready_spread(api, n, &[url.to_string()], limit).await
}

/// `create_ready_oci_repositories`, object `app-<i>` on `urls[i % urls.len()]`.
pub async fn create_ready_spread(
    api: &Api<OCIRepository>,
    n: usize,
    urls: &[String],
    limit: Duration,
) {
    let objects = (0..n).map(|i| {
        serde_json::from_value::<OCIRepository>(serde_json::json!({
            "apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "OCIRepository",
            "metadata": {"name": format!("app-{i}")},
            "spec": {"url": urls[i % urls.len()], "interval": "60m", "insecure": true},
        }))
        .unwrap()
    });
    super::create_all(api, objects).await;
    super::wait_all(api, n, limit, ready).await;
}

/// Asks `app-0` … `app-<n-1>` to reconcile (`reconcile.fluxcd.io/requestedAt`) and waits until
/// every one has handled it and is Ready.
pub async fn steady_pass(api: &Api<OCIRepository>, n: usize, stamp: &str, limit: Duration) {
    futures::stream::iter(0..n)
        .map(|i| async move { request_reconcile(api, &format!("app-{i}"), stamp).await })
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await;
    super::wait_all(api, n, limit, |o| handled(o, stamp)).await;
}

/// Asks `name` to reconcile now, as `flux reconcile` does: `reconcile.fluxcd.io/requestedAt`.
pub async fn request_reconcile<K>(api: &Api<K>, name: &str, stamp: &str)
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let patch = serde_json::json!({"metadata": {"annotations": {"reconcile.fluxcd.io/requestedAt": stamp}}});
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("annotate");
}

/// The object handled the reconcile request `stamp` and is Ready.
pub fn handled(o: &OCIRepository, stamp: &str) -> bool {
    o.status
        .as_ref()
        .and_then(|s| s.last_handled_reconcile_at.as_deref())
        == Some(stamp)
        && ready(o)
}

pub fn ready(o: &OCIRepository) -> bool {
    o.status.as_ref().is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == driftless::api::ConditionStatus::True)
    })
}

/// Pushes the benchmarks' one-ConfigMap Flux artifact to `registry/repo:latest`; its digest.
/// `k` distinct artifacts, `<namespace>/app-0` … `app-<k-1>`; their `oci://` URLs.
pub async fn push_bench_artifacts(registry: &str, namespace: &str, k: usize) -> Vec<String> {
    let mut urls = Vec::with_capacity(k);
    for j in 0..k {
        let repo = format!("{namespace}/app-{j}");
        let content = format!("kind: ConfigMap\nmetadata: {{name: app-{j}}}\n");
        super::oci::push_flux_artifact(
            &super::oci::client(registry),
            &repo,
            "latest",
            super::oci::flux_layer(&[("deploy/app.yaml", content.as_str())]),
            super::oci::FLUX_LAYER,
            &[],
        )
        .await;
        urls.push(format!("oci://{registry}/{repo}"));
    }
    urls
}

pub async fn push_bench_artifact(registry: &str, repo: &str) -> String {
    super::oci::push_flux_artifact(
        &super::oci::client(registry),
        repo,
        "latest",
        super::oci::flux_layer(&[("deploy/app.yaml", "kind: ConfigMap\n")]),
        super::oci::FLUX_LAYER,
        &[],
    )
    .await
}

/// The CPU the platform's API server and etcd have used so far: what a controller's time to
/// Ready shares the cores with, and is bound by once the controller's own share is small.
pub fn api_server_cpu(platform: &super::Platform) -> Duration {
    let pids = std::path::Path::new(&platform.env["DRIFTLESS_PLATFORM_DIR"]).join("pids");
    ["kube-apiserver", "etcd"]
        .iter()
        .filter_map(|name| std::fs::read_to_string(pids.join(format!("{name}.pid"))).ok())
        .filter_map(|pid| pid.trim().parse().ok())
        .map(super::controller::cpu_time)
        .sum()
}

/// The environment variable `name` parsed, else `default`.
pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The API server's write requests so far (`apiserver_request_total`), by
/// `resource[/subresource]`, dry runs apart as `resource (dry run)`. Leases are left out: on a
/// platform of controllers without leader election, they are the API server's own renewals.
pub async fn api_writes(kube: &kube::Client) -> BTreeMap<String, f64> {
    let request = http::Request::get("/metrics").body(Vec::new()).unwrap();
    let text = kube
        .request_text(request)
        .await
        .expect("API server /metrics");
    let mut writes = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| l.starts_with("apiserver_request_total{"))
    {
        let Some((labels, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let label = |name: &str| {
            labels
                .split(&format!("{name}=\""))
                .nth(1)
                .and_then(|rest| rest.split('"').next())
                .unwrap_or_default()
                .to_string()
        };
        if !matches!(
            label("verb").as_str(),
            "POST" | "PUT" | "PATCH" | "DELETE" | "APPLY" | "CREATE" | "UPDATE"
        ) {
            continue;
        }
        if label("resource") == "leases" {
            continue;
        }
        let mut resource = match label("subresource").as_str() {
            "" => label("resource"),
            sub => format!("{}/{sub}", label("resource")),
        };
        if !label("dry_run").is_empty() {
            resource.push_str(" (dry run)");
        }
        *writes.entry(resource).or_insert(0.0) += value.parse::<f64>().unwrap_or(0.0);
    }
    writes
}

/// Waits until `n` objects selected by `selector` (in every namespace `api` covers) are `done`,
/// `limit` at most. It watches instead of listing: a list of 10,000 objects every 100 ms would
/// load the API server both controllers share.
pub async fn wait_watching<K>(
    api: &Api<K>,
    selector: &str,
    n: usize,
    limit: Duration,
    done: impl Fn(&K) -> bool,
) where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + 'static,
{
    use kube::runtime::WatchStreamExt;
    use kube::runtime::watcher::{self, Event};
    let key = |o: &K| {
        let meta = o.meta();
        format!(
            "{}/{}",
            meta.namespace.as_deref().unwrap_or_default(),
            meta.name.as_deref().unwrap_or_default()
        )
    };
    let config = watcher::Config::default().labels(selector);
    let stream = watcher::watcher(api.clone(), config).default_backoff();
    futures::pin_mut!(stream);
    let mut there = std::collections::HashSet::new();
    let deadline = tokio::time::Instant::now() + limit;
    while there.len() < n {
        let next = tokio::time::timeout_at(deadline, stream.next()).await;
        let Ok(Some(event)) = next else {
            panic!(
                "only {} of {n} objects got there within {limit:?}",
                there.len()
            );
        };
        match event {
            Ok(Event::Init) => there.clear(),
            Ok(Event::Apply(o) | Event::InitApply(o)) if done(&o) => {
                there.insert(key(&o));
            }
            Ok(Event::Apply(o) | Event::InitApply(o) | Event::Delete(o)) => {
                there.remove(&key(&o));
            }
            Ok(Event::InitDone) => {}
            Err(e) => eprintln!("watch {selector}: {e} (retrying)"),
        }
    }
}

/// Removes the finalizers of every object `selector` picks, once its controller is stopped, so
/// that deleting the benchmark's namespaces does not leave them Terminating for ever.
pub async fn release<K>(api: &Api<K>, selector: &str)
where
    K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let list = api
        .list_metadata(&kube::api::ListParams::default().labels(selector))
        .await
        .expect("list");
    futures::stream::iter(list.items)
        .map(|o| async move {
            let (Some(ns), Some(name)) = (o.metadata.namespace, o.metadata.name) else {
                return;
            };
            let api: Api<K> = Api::namespaced(api.clone().into_client(), &ns);
            let patch = serde_json::json!({"metadata": {"finalizers": null}});
            let _ = api
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await;
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await;
}

/// One side-by-side comparison, printed as it is measured: a heading, then a row per figure
/// (Flux's, ours, the ratio). With `BENCH_TABLE` set, every row is also appended to that file
/// (tab-separated, the scenario first), so that `hack/bench-table` prints all of a
/// `make bench-flux` run as one table.
pub struct SideBySide {
    scenario: String,
}

impl SideBySide {
    pub fn new(scenario: &str, flux: &str, ours: &str) -> Self {
        println!("Side by side, {scenario}:");
        println!("  {:<44} {:>14} {:>14} {:>8}", "", flux, ours, "ratio");
        SideBySide {
            scenario: scenario.to_string(),
        }
    }

    pub fn row(&self, what: &str, flux: String, ours: String, ratio: String) {
        println!("  {what:<44} {flux:>14} {ours:>14} {ratio:>8}");
        let Ok(path) = std::env::var("BENCH_TABLE") else {
            return;
        };
        use std::io::Write;
        let line = format!("{}\t{what}\t{flux}\t{ours}\t{ratio}\n", self.scenario);
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut f| f.write_all(line.as_bytes()))
            .unwrap_or_else(|e| panic!("append to {path}: {e}"));
    }

    /// A row of seconds, the ratio Flux's over ours.
    pub fn secs(&self, what: &str, flux: Duration, ours: Duration) {
        let shown = |d: Duration| format!("{:.2} s", d.as_secs_f64());
        let r = ratio(flux.as_secs_f64(), ours.as_secs_f64());
        self.row(what, shown(flux), shown(ours), r);
    }

    /// A row of milliseconds.
    pub fn millis(&self, what: &str, flux: Duration, ours: Duration) {
        let shown = |d: Duration| format!("{:.2} ms", d.as_secs_f64() * 1e3);
        let r = ratio(flux.as_secs_f64(), ours.as_secs_f64());
        self.row(what, shown(flux), shown(ours), r);
    }

    /// A row of resident sets given in KiB, shown in MiB.
    pub fn mib(&self, what: &str, flux_kib: u64, ours_kib: u64) {
        let shown = |kib: u64| format!("{:.1} MiB", kib as f64 / 1024.0);
        let r = ratio(flux_kib as f64, ours_kib as f64);
        self.row(what, shown(flux_kib), shown(ours_kib), r);
    }

    /// A row of counts (requests, writes) with two decimals.
    pub fn count(&self, what: &str, flux: f64, ours: f64) {
        self.row(
            what,
            format!("{flux:.2}"),
            format!("{ours:.2}"),
            ratio(flux, ours),
        );
    }
}

/// What a run took to get every object Ready: the time, the controllers' CPU, the API server's
/// and etcd's CPU, and the controllers' peak resident set (over the whole run).
pub struct ToReady {
    pub time: Duration,
    pub cpu: Duration,
    pub api_server_cpu: Duration,
    pub peak_rss_kib: u64,
}

impl SideBySide {
    /// The rows of `ToReady`, the first named `what` (when its clock started).
    pub fn to_ready(&self, what: &str, flux: &ToReady, ours: &ToReady) {
        self.secs(what, flux.time, ours.time);
        self.secs("controller CPU to all Ready", flux.cpu, ours.cpu);
        self.secs(
            "API server + etcd CPU to all Ready",
            flux.api_server_cpu,
            ours.api_server_cpu,
        );
        self.mib("controller peak RSS", flux.peak_rss_kib, ours.peak_rss_kib);
    }
}

/// `a / b` as `3.2×`, or `—` when `b` is 0.
pub fn ratio(a: f64, b: f64) -> String {
    if b > 0.0 {
        format!("{:.1}×", a / b)
    } else {
        "—".into()
    }
}

/// 10000 as `10,000`.
pub fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut text = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            text.push(',');
        }
        text.push(c);
    }
    text
}
