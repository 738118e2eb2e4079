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
    futures::stream::iter((0..n).map(|i| format!("app-{i}")))
        .map(|name| {
            let api = api.clone();
            async move {
                let patch = serde_json::json!({"metadata": {"annotations": {"reconcile.fluxcd.io/requestedAt": stamp}}});
                api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                    .expect("annotate");
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await;
    super::wait_all(api, n, limit, |o| {
        o.status
            .as_ref()
            .and_then(|s| s.last_handled_reconcile_at.as_deref())
            == Some(stamp)
            && ready(o)
    })
    .await;
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

/// The environment variable `name` parsed, else `default`.
pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The API server's write requests so far (`apiserver_request_total`), by
/// `resource[/subresource]`, dry runs apart as `resource (dry run)`.
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
