//! Kustomizations side by side with Flux (a command, not a test): the same Kustomizations,
//! applied first by Flux's own kustomize-controller (the peer `hack/testbin.sh
//! flux-kustomize-controller` builds) and then by driftless's apply-controller (release build),
//! each in a fresh namespace of the same platform with one OCIRepository that driftless's
//! source-controller serves to both.
//!
//!   make bench-flux                                                  # both shapes below
//!   BENCH_SHAPE=benchmark BENCH_N=1000 cargo bench --bench flux_kustomize_side_by_side
//!   BENCH_SHAPE=overlays BENCH_N=100 cargo bench --bench flux_kustomize_side_by_side
//!
//! Shapes:
//! - `benchmark`, fluxcd/flux-benchmark's: N Kustomizations (default 1,000), each applying its
//!   own directory of a ServiceAccount, a (headless) Service, a Deployment scaled to 0 and an
//!   Ingress, `--concurrent=20` as there;
//! - `overlays`: N Kustomizations (default 100), each a kustomize overlay (`namePrefix`) of one
//!   base of 10 ConfigMaps, so both controllers run kustomize; `--concurrent=4`.
//!
//! `BENCH_CONCURRENT` overrides the concurrency. Per controller: time from the first create
//! until all N are Ready; its CPU (its own and its kustomize builds') to that point and its
//! peak RSS; the API server's write requests per Kustomization to Ready (deltas of
//! `apiserver_request_total`, dry runs apart); then a steady pass (every Kustomization asked
//! to reconcile with `reconcile.fluxcd.io/requestedAt`, nothing changed): its time, CPU per
//! reconcile and write requests per Kustomization.

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use driftless::api::{ConditionStatus, Kustomization, OCIRepository};
use futures::StreamExt;
use kube::{Api, Client};
use support::bench::{
    SideBySide, ToReady, api_server_cpu, api_writes, bench_n, env_or, release, request_reconcile,
    thousands, wait_watching,
};
use support::controller::{ApplyController, Process, SourceController};
use support::oci::{FLUX_LAYER, client, flux_layer, push_flux_artifact};
use support::peers::FluxController;
use support::source::Sources;

/// What one controller's run measured.
struct Run {
    name: String,
    to_ready: ToReady,
    writes_to_ready: BTreeMap<String, f64>,
    steady: Duration,
    cpu_per_reconcile: Duration,
    writes_in_steady_pass: BTreeMap<String, f64>,
}

#[derive(Clone, Copy)]
enum Shape {
    Benchmark,
    Overlays,
}

#[tokio::main]
async fn main() {
    // `cargo test --all-targets` runs harness-less benches too; only `cargo bench` passes --bench.
    if !std::env::args().any(|a| a == "--bench") {
        println!("flux_kustomize_side_by_side: a benchmark; run it with `make bench-flux`");
        return;
    }
    let shape = match std::env::var("BENCH_SHAPE").as_deref() {
        Ok("overlays") => Shape::Overlays,
        Ok("benchmark") | Err(_) => Shape::Benchmark,
        Ok(other) => panic!("BENCH_SHAPE must be benchmark or overlays, not {other}"),
    };
    let (n, concurrent) = match shape {
        Shape::Benchmark => (bench_n(1000), env_or("BENCH_CONCURRENT", 20)),
        Shape::Overlays => (bench_n(100), env_or("BENCH_CONCURRENT", 4)),
    };
    let platform = support::platform();
    let kube = platform.client().await;
    support::install_crds(&kube).await;
    support::install_flux_source_crds(&kube).await;

    let flux = {
        let ns = support::TestNamespace::new(&platform, &kube, "bench-flux-ks").await;
        let source = serve_source(&platform, &kube, &ns.name, shape, n).await;
        let controller = FluxController::start(
            &platform,
            &ns.name,
            "kustomize-controller",
            &[
                "--log-level=info".into(),
                format!("--concurrent={concurrent}"),
            ],
        );
        let name = FluxController::title(&platform, "kustomize-controller");
        let run = measure(name, &platform, &kube, &ns.name, n, &controller.process).await;
        drop((controller, source));
        release_run(&kube, &ns.name).await;
        run
    };
    let ours = {
        let ns = support::TestNamespace::new(&platform, &kube, "bench-ours-ks").await;
        let source = serve_source(&platform, &kube, &ns.name, shape, n).await;
        let concurrent = format!("--concurrent={concurrent}");
        // Every namespace, as Flux's default (and drift detection by watching, which needs
        // it), but only this run's Kustomizations.
        let selector = format!("--watch-label-selector={RUN_LABEL}={}", ns.name);
        let controller = ApplyController::start(
            &platform,
            &ns.name,
            &[
                "--log-level=info",
                &concurrent,
                "--watch-all-namespaces=true",
                &selector,
            ],
        );
        let run = measure(
            "driftless".into(),
            &platform,
            &kube,
            &ns.name,
            n,
            controller.process(),
        )
        .await;
        drop((controller, source));
        release_run(&kube, &ns.name).await;
        run
    };
    report(shape, n, concurrent, &flux, &ours);
}

/// Pushes the shape's artifact for `n` Kustomizations and serves it as the OCIRepository
/// `apps`, Ready, from a source-controller of the namespace's own.
async fn serve_source(
    platform: &support::Platform,
    kube: &Client,
    namespace: &str,
    shape: Shape,
    n: usize,
) -> SourceController {
    let files = match shape {
        Shape::Benchmark => benchmark_files(n),
        Shape::Overlays => overlay_files(n),
    };
    let files: Vec<(&str, &str)> = files
        .iter()
        .map(|(p, c)| (p.as_str(), c.as_str()))
        .collect();
    let repo = format!("{namespace}/apps");
    push_flux_artifact(
        &client(platform.registry()),
        &repo,
        "latest",
        flux_layer(&files),
        FLUX_LAYER,
        &[],
    )
    .await;
    let source = SourceController::start(platform, namespace, &["--log-level=info"]);
    let sources: Sources<OCIRepository> = Sources::new(kube, namespace, &source);
    sources
        .create("apps", serde_json::json!({"url": format!("oci://{}/{repo}", platform.registry()), "interval": "60m", "insecure": true}))
        .await;
    sources.wait_ready("apps").await;
    source
}

/// flux-benchmark's objects: app-<k>/ holds a ServiceAccount, a Service, a Deployment scaled
/// to 0 and an Ingress, all named app-<k>. The Services are headless: the platform's service
/// range holds a few hundred cluster IPs, not N.
fn benchmark_files(n: usize) -> Vec<(String, String)> {
    (0..n)
        .map(|k| {
            let name = format!("app-{k}");
            let manifest = format!(
                "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: {name}\n---\n\
                 apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\nspec:\n  clusterIP: None\n  selector:\n    app: {name}\n  ports:\n  - port: 80\n    targetPort: 8080\n---\n\
                 apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {name}\nspec:\n  replicas: 0\n  selector:\n    matchLabels:\n      app: {name}\n  template:\n    metadata:\n      labels:\n        app: {name}\n    spec:\n      serviceAccountName: {name}\n      containers:\n      - name: app\n        image: registry.example/app:1.0.0\n        ports:\n        - containerPort: 8080\n---\n\
                 apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: {name}\nspec:\n  rules:\n  - host: {name}.example\n    http:\n      paths:\n      - path: /\n        pathType: Prefix\n        backend:\n          service:\n            name: {name}\n            port:\n              number: 80\n"
            );
            (format!("app-{k}/app.yaml"), manifest)
        })
        .collect()
}

/// One base of 10 ConfigMaps; app-<k>/ an overlay of it with `namePrefix: app-<k>-`.
fn overlay_files(n: usize) -> Vec<(String, String)> {
    let base = (0..10).map(|i| {
        (
            format!("base/cm-{i}.yaml"),
            format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm-{i}\ndata:\n  key: \"value-{i}\"\n"),
        )
    });
    let resources: String = (0..10).map(|i| format!("- cm-{i}.yaml\n")).collect();
    let kustomization = (
        "base/kustomization.yaml".to_string(),
        format!(
            "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n{resources}"
        ),
    );
    let overlays = (0..n).map(|k| {
        (
            format!("app-{k}/kustomization.yaml"),
            format!(
                "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nnamePrefix: app-{k}-\nresources:\n- ../base\n"
            ),
        )
    });
    base.chain(std::iter::once(kustomization))
        .chain(overlays)
        .collect()
}

/// Once the controllers are stopped: the run's objects lose their finalizers, so that its
/// namespace is deleted instead of staying Terminating.
async fn release_run(kube: &Client, namespace: &str) {
    let selector = format!("{RUN_LABEL}={namespace}");
    release(&Api::<Kustomization>::all(kube.clone()), &selector).await;
    let sources: Api<OCIRepository> = Api::namespaced(kube.clone(), namespace);
    release(&sources, "").await;
}

/// Names the run a Kustomization belongs to.
const RUN_LABEL: &str = "driftless.bench/run";

async fn measure(
    name: String,
    platform: &support::Platform,
    kube: &Client,
    namespace: &str,
    n: usize,
    controller: &Process,
) -> Run {
    let api: Api<Kustomization> = Api::namespaced(kube.clone(), namespace);
    let writes_before = api_writes(kube).await;
    let cpu_before = controller.cpu_time();
    let api_server_before = api_server_cpu(platform);
    let started = Instant::now();
    let objects = (0..n).map(|k| {
        serde_json::from_value::<Kustomization>(serde_json::json!({
            "apiVersion": "kustomize.toolkit.fluxcd.io/v1", "kind": "Kustomization",
            "metadata": {"name": format!("app-{k}"), "labels": {RUN_LABEL: namespace}},
            "spec": {"interval": "60m", "prune": true, "path": format!("./app-{k}"),
                     "targetNamespace": namespace,
                     "sourceRef": {"kind": "OCIRepository", "name": "apps"}},
        }))
        .unwrap()
    });
    support::create_all(&api, objects).await;
    let selector = format!("{RUN_LABEL}={namespace}");
    wait_watching(&api, &selector, n, Duration::from_secs(3600), ready).await;
    let ready_after = started.elapsed();
    let cpu_to_ready = controller.cpu_time().saturating_sub(cpu_before);
    let api_server_cpu_to_ready = api_server_cpu(platform).saturating_sub(api_server_before);
    let writes_ready = api_writes(kube).await;

    let stamp = "bench-steady-state";
    let cpu_before = controller.cpu_time();
    let steady_started = Instant::now();
    request_reconcile_all(&api, n, stamp).await;
    wait_watching(&api, &selector, n, Duration::from_secs(3600), |o| {
        ready(o)
            && o.status
                .as_ref()
                .and_then(|s| s.last_handled_reconcile_at.as_deref())
                == Some(stamp)
    })
    .await;
    let steady = steady_started.elapsed();
    let cpu_steady = controller.cpu_time().saturating_sub(cpu_before);
    let writes_steady = api_writes(kube).await;
    Run {
        name,
        to_ready: ToReady {
            time: ready_after,
            cpu: cpu_to_ready,
            api_server_cpu: api_server_cpu_to_ready,
            peak_rss_kib: controller.peak_rss_kib(),
        },
        writes_to_ready: per_object(&writes_before, &writes_ready, n),
        steady,
        cpu_per_reconcile: cpu_steady / n as u32,
        writes_in_steady_pass: per_object(&writes_ready, &writes_steady, n),
    }
}

async fn request_reconcile_all(api: &Api<Kustomization>, n: usize, stamp: &str) {
    futures::stream::iter(0..n)
        .map(|k| async move { request_reconcile(api, &format!("app-{k}"), stamp).await })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;
}

/// The controller's writes between two readings, per Kustomization: the bench's own write to
/// each Kustomization (its create, or the annotation asking for the steady pass) and namespace
/// writes are left out.
fn per_object(
    before: &BTreeMap<String, f64>,
    after: &BTreeMap<String, f64>,
    n: usize,
) -> BTreeMap<String, f64> {
    after
        .iter()
        .map(|(k, a)| {
            let b = before.get(k).copied().unwrap_or(0.0);
            let own = if k == "kustomizations" { 1.0 } else { 0.0 };
            (k.clone(), (a - b) / n as f64 - own)
        })
        .filter(|(k, v)| *v >= 0.005 && !k.starts_with("namespaces"))
        .collect()
}

fn ready(o: &Kustomization) -> bool {
    o.status.as_ref().is_some_and(|s| {
        s.observed_generation == o.metadata.generation
            && s.conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == ConditionStatus::True)
    })
}

fn report(shape: Shape, n: usize, concurrent: usize, flux: &Run, ours: &Run) {
    let what = match shape {
        Shape::Benchmark => "flux-benchmark's shape (SA, Service, Deployment, Ingress each)",
        Shape::Overlays => "kustomize overlays of 10 ConfigMaps each",
    };
    let table = SideBySide::new(
        &format!(
            "{} Kustomizations, {what}, --concurrent={concurrent}",
            thousands(n)
        ),
        &format!("Flux {}", flux.name.rsplit(' ').next().unwrap_or("")),
        &ours.name,
    );
    table.to_ready("first create → all Ready", &flux.to_ready, &ours.to_ready);
    table.secs(
        "steady pass over all (requestedAt)",
        flux.steady,
        ours.steady,
    );
    table.millis(
        "CPU per unchanged reconcile",
        flux.cpu_per_reconcile,
        ours.cpu_per_reconcile,
    );
    let writes = |title: &str, of: fn(&Run) -> &BTreeMap<String, f64>| {
        let total = |run: &Run| of(run).values().sum::<f64>();
        table.count(title, total(flux), total(ours));
        let resources: std::collections::BTreeSet<&String> =
            of(flux).keys().chain(of(ours).keys()).collect();
        for resource in resources {
            let get = |run: &Run| of(run).get(resource).copied().unwrap_or(0.0);
            table.count(&format!("  of which {resource}"), get(flux), get(ours));
        }
    };
    writes("API writes per Kustomization to Ready", |r| {
        &r.writes_to_ready
    });
    writes("API writes per Kustomization in the steady pass", |r| {
        &r.writes_in_steady_pass
    });
}
