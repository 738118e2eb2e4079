//! Push to applied (a command, not a test): BENCH_PUSHES pushes (default 50) of a new revision,
//! timed from the end of each push until the OCIRepository serves it and until the
//! Kustomization on it has applied it, first with registry events (the receiver; intervals 1h),
//! then on the interval alone (BENCH_INTERVAL, default 10s, no events). Pushes come at random
//! moments (a pause of up to 2s, or up to one interval, before each), as CI pushes do: a push
//! right after a poll would wait a whole interval, one right before it almost nothing.
//!
//!   make bench-events
//!   BENCH_PUSHES=20 BENCH_INTERVAL=30s cargo bench --bench events

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};
use support::bench::env_or;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::PostParams;
use kube::{Api, Client};
use serde_json::json;

use driftless::api::{Kustomization, OCIRepository};
use support::controller::{ApplyController, SourceController, free_port};
use support::oci::{FLUX_LAYER, client, flux_layer, push_flux_artifact};
use support::registry::NotifyingRegistry;
use support::source::revision;

const TOKEN: &str = "bench-events-token";
const LIMIT: Duration = Duration::from_secs(300);
const POLL: Duration = Duration::from_millis(20);

#[tokio::main]
async fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!(
            "events: a benchmark; run it with `make bench-events` or `cargo bench --bench events`"
        );
        return;
    }
    let pushes: usize = env_or("BENCH_PUSHES", 50);
    let interval = std::env::var("BENCH_INTERVAL").unwrap_or_else(|_| "10s".into());
    let platform = support::platform();
    let kube = platform.client().await;
    support::install_crds(&kube).await;
    let ns = support::TestNamespace::new(&platform, &kube, "bench-events").await;
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "receiver-tokens"}, "stringData": {"token": TOKEN}}))
    .unwrap();
    Api::<Secret>::namespaced(kube.clone(), &ns.name)
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("receiver.yaml");
    std::fs::write(
        &config,
        "senders:\n- {name: registry, type: distribution, secretRef: {name: receiver-tokens}}\n",
    )
    .unwrap();
    let port = free_port();
    let source = SourceController::start(
        &platform,
        &ns.name,
        &[
            &format!("--receiver-addr=127.0.0.1:{port}"),
            &format!("--receiver-config={}", config.display()),
            "--log-level=info",
        ],
    );
    let apply = ApplyController::start(&platform, &ns.name, &["--log-level=info"]);
    let notifying =
        NotifyingRegistry::start(&format!("http://127.0.0.1:{port}/hook/registry"), TOKEN).await;

    let events = Pipeline::new(&kube, &ns.name, "events", &notifying.addr, "1h").await;
    let by_events = events.run(pushes, Duration::from_secs(2)).await;
    let polled = Pipeline::new(&kube, &ns.name, "interval", platform.registry(), &interval).await;
    let period = driftless::controller::requeue::parse_duration(&interval).expect("BENCH_INTERVAL");
    let by_interval = polled.run(pushes, period).await;

    println!("\npush → new revision, {pushes} pushes (release build; `make bench-events`)");
    println!("{:<34} {:>9} {:>9} {:>9}", "path", "p50", "p95", "max");
    for (name, samples) in [
        ("registry event → Ready".to_string(), &by_events.ready),
        ("registry event → applied".to_string(), &by_events.applied),
        (format!("interval {interval} → Ready"), &by_interval.ready),
        (
            format!("interval {interval} → applied"),
            &by_interval.applied,
        ),
    ] {
        let (p50, p95, max) = percentiles(samples);
        println!("{name:<34} {p50:>8.2}s {p95:>8.2}s {max:>8.2}s");
    }
    println!(
        "source-controller: event→artifact histogram count {}, reconciles triggered {}",
        source.metric("driftless_receiver_event_to_artifact_seconds_count"),
        source.metric("driftless_receiver_reconciles_triggered_total"),
    );
    drop(apply);
}

/// One repository, its OCIRepository (`interval`) and a Kustomization (1h) applying it.
struct Pipeline {
    registry: String,
    repo: String,
    name: String,
    sources: Api<OCIRepository>,
    config_maps: Api<ConfigMap>,
}

#[derive(Default)]
struct Samples {
    ready: Vec<f64>,
    applied: Vec<f64>,
}

impl Pipeline {
    async fn new(kube: &Client, ns: &str, name: &str, registry: &str, interval: &str) -> Pipeline {
        let pipeline = Pipeline {
            registry: registry.to_string(),
            repo: format!("{ns}/{name}"),
            name: name.to_string(),
            sources: Api::namespaced(kube.clone(), ns),
            config_maps: Api::namespaced(kube.clone(), ns),
        };
        let first = pipeline.push(0).await;
        let source: OCIRepository = serde_json::from_value(json!({
            "apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "OCIRepository",
            "metadata": {"name": name},
            "spec": {"url": format!("oci://{registry}/{}", pipeline.repo), "interval": interval, "insecure": true},
        }))
        .unwrap();
        pipeline
            .sources
            .create(&PostParams::default(), &source)
            .await
            .unwrap();
        let kustomization: Kustomization = serde_json::from_value(json!({
            "apiVersion": "kustomize.toolkit.fluxcd.io/v1", "kind": "Kustomization",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"interval": "1h", "prune": true, "path": "./", "targetNamespace": ns,
                     "sourceRef": {"kind": "OCIRepository", "name": name}},
        }))
        .unwrap();
        Api::<Kustomization>::namespaced(kube.clone(), ns)
            .create(&PostParams::default(), &kustomization)
            .await
            .unwrap();
        pipeline.wait_served(&first, Instant::now()).await;
        pipeline.wait_applied(0, Instant::now()).await;
        pipeline
    }

    /// Push revision `i` (a ConfigMap holding `i`); its `latest@<digest>` revision.
    async fn push(&self, i: usize) -> String {
        let cm = format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {}-config\ndata:\n  push: \"{i}\"\n",
            self.name
        );
        let layer = flux_layer(&[("cm.yaml", cm.as_str())]);
        let digest = push_flux_artifact(
            &client(&self.registry),
            &self.repo,
            "latest",
            layer,
            FLUX_LAYER,
            &[],
        )
        .await;
        format!("latest@{digest}")
    }

    async fn run(&self, pushes: usize, spread: Duration) -> Samples {
        let mut samples = Samples::default();
        for i in 1..=pushes {
            tokio::time::sleep(spread.mul_f64(rand::random::<f64>())).await;
            let wanted = self.push(i).await;
            let pushed = Instant::now();
            samples.ready.push(self.wait_served(&wanted, pushed).await);
            samples.applied.push(self.wait_applied(i, pushed).await);
        }
        samples
    }

    async fn wait_served(&self, wanted: &str, since: Instant) -> f64 {
        loop {
            let served = self
                .sources
                .get(&self.name)
                .await
                .ok()
                .map(|o| revision(&o));
            if served.as_deref() == Some(wanted) {
                return since.elapsed().as_secs_f64();
            }
            assert!(
                since.elapsed() < LIMIT,
                "{}: {wanted} not served",
                self.name
            );
            tokio::time::sleep(POLL).await;
        }
    }

    async fn wait_applied(&self, i: usize, since: Instant) -> f64 {
        let name = format!("{}-config", self.name);
        loop {
            let cm = self.config_maps.get_opt(&name).await.ok().flatten();
            if cm.and_then(|c| c.data).and_then(|d| d.get("push").cloned()) == Some(i.to_string()) {
                return since.elapsed().as_secs_f64();
            }
            assert!(
                since.elapsed() < LIMIT,
                "{}: push {i} not applied",
                self.name
            );
            tokio::time::sleep(POLL).await;
        }
    }
}

fn percentiles(samples: &[f64]) -> (f64, f64, f64) {
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    let at = |q: f64| {
        let index = ((sorted.len() as f64 * q).ceil() as usize).saturating_sub(1);
        sorted.get(index).copied().unwrap_or(f64::NAN)
    };
    (
        at(0.50),
        at(0.95),
        sorted.last().copied().unwrap_or(f64::NAN),
    )
}
