//! Side by side with Flux (a command, not a test): the same N OCIRepositories, reconciled first
//! by Flux's own source-controller (the peer `hack/testbin.sh flux-source-controller` builds:
//! v1.9.6, the newest the module proxy serves whole) and then by driftless's (release build),
//! each in fresh namespaces of the same platform with `--concurrent=10` (`BENCH_CONCURRENT`),
//! and the ratios.
//!
//!   make bench-flux                                  # every shape below, one table
//!   BENCH_N=200 BENCH_ARTIFACTS=10 cargo bench --bench flux_side_by_side
//!   BENCH_N=10000 BENCH_NAMESPACES=100 BENCH_STEADY=0 cargo bench --bench flux_side_by_side
//!   BENCH_N=10000 BENCH_SHARDS=2 BENCH_STEADY=0 cargo bench --bench flux_side_by_side
//!
//! - `BENCH_ARTIFACTS=k`: the objects are spread over k distinct artifacts (repositories
//!   `app-0` … `app-<k-1>`, object i on artifact i mod k);
//! - `BENCH_NAMESPACES=m`: object i is in namespace i mod m, and each controller watches every
//!   namespace, selecting the run's objects by label (`--watch-label-selector`);
//! - `BENCH_SHARDS=s` (s > 1): after the run with one controller, the run again with s
//!   controllers on each side, sharded as Flux shards (`sharding.fluxcd.io/key` on each object,
//!   one `--watch-label-selector` per controller); their CPU and resident sets are summed, and
//!   the speed-up over one controller is reported;
//! - `BENCH_CONCURRENT=c`: each controller's `--concurrent` (default 10). With 1 (and
//!   `BENCH_PRECREATE=1`), a controller reconciles one object at a time, so its own latency
//!   bounds the run rather than the API server: what sharding divides;
//! - `BENCH_PRECREATE=1`: the objects are created first and the clock starts with the
//!   controllers, so that the bench's own creates do not bound the time (they do with
//!   `--concurrent=1` as much as with 10);
//! - `BENCH_STEADY=0` skips the steady pass.
//!
//! Per run: time from the first create until all N are Ready; the controllers' CPU (utime +
//! stime) to that point and peak RSS; the API server's write requests per object to Ready
//! (deltas of `apiserver_request_total` for POST/PUT/PATCH/DELETE, by resource); the registry
//! requests per object to Ready; then a steady pass (every object asked to reconcile with
//! `reconcile.fluxcd.io/requestedAt`, nothing changed): its time, the CPU per reconcile and the
//! registry requests per reconcile.

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use driftless::api::OCIRepository;
use futures::StreamExt;
use kube::{Api, Client};
use support::bench::{
    SideBySide, ToReady, api_server_cpu, api_writes, bench_n, env_or, handled,
    push_bench_artifacts, ready, release, request_reconcile, thousands, wait_watching,
};
use support::controller::{Process, SourceController};
use support::oci::registry_requests;
use support::peers::FluxController;

/// Names the run an object belongs to.
const RUN_LABEL: &str = "driftless.bench/run";
/// Flux's sharding label.
const SHARD_LABEL: &str = "sharding.fluxcd.io/key";

/// What is measured: N objects on k artifacts in m namespaces.
#[derive(Clone, Copy)]
struct Shape {
    n: usize,
    artifacts: usize,
    namespaces: usize,
    concurrent: usize,
    /// The objects are created before the controllers start: the time is then the
    /// controllers' own, not bound by how fast the bench creates objects.
    precreate: bool,
    steady: bool,
}

impl Shape {
    fn describe(&self, shards: usize) -> String {
        let mut text = format!("{} OCIRepositories on ", thousands(self.n));
        text += &match self.artifacts {
            1 => "one artifact".to_string(),
            k => format!("{k} artifacts"),
        };
        if self.namespaces > 1 {
            text += &format!(" across {} namespaces", self.namespaces);
        }
        if shards > 1 {
            text += &format!(", {shards} shards a side");
        }
        if self.precreate {
            text += ", created before the controllers start";
        }
        text
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Side {
    Flux,
    Ours,
}

/// What one side's run measured.
struct Run {
    to_ready: ToReady,
    writes_per_object: BTreeMap<String, f64>,
    registry_per_object: f64,
    steady: Option<Steady>,
}

struct Steady {
    time: Duration,
    cpu_per_reconcile: Duration,
    registry_per_reconcile: f64,
}

/// The controllers of one side: one, or one per shard.
enum Controllers {
    Flux(Vec<FluxController>),
    Ours(Vec<SourceController>),
}

impl Controllers {
    fn processes(&self) -> Vec<&Process> {
        match self {
            Controllers::Flux(c) => c.iter().map(|c| &c.process).collect(),
            Controllers::Ours(c) => c.iter().map(|c| c.process()).collect(),
        }
    }

    fn cpu(&self) -> Duration {
        self.processes().iter().map(|p| p.cpu_time()).sum()
    }

    /// The shards' peak resident sets, summed.
    fn peak_rss_kib(&self) -> u64 {
        self.processes().iter().map(|p| p.peak_rss_kib()).sum()
    }
}

#[tokio::main]
async fn main() {
    // `cargo test --all-targets` runs harness-less benches too; only `cargo bench` passes --bench.
    if !std::env::args().any(|a| a == "--bench") {
        println!("flux_side_by_side: a benchmark; run it with `make bench-flux`");
        return;
    }
    let shape = Shape {
        n: bench_n(1000),
        artifacts: env_or("BENCH_ARTIFACTS", 1usize).max(1),
        namespaces: env_or("BENCH_NAMESPACES", 1usize).max(1),
        concurrent: env_or("BENCH_CONCURRENT", 10usize).max(1),
        precreate: env_or("BENCH_PRECREATE", 0u8) != 0,
        steady: env_or("BENCH_STEADY", 1u8) != 0,
    };
    let shards = env_or("BENCH_SHARDS", 1usize).max(1);
    let platform = support::platform();
    let kube = platform.client().await;
    support::install_crds(&kube).await;
    support::install_flux_source_crds(&kube).await;
    let flux_name = FluxController::title(&platform, "source-controller");

    let flux = run(Side::Flux, &platform, &kube, shape, 1).await;
    let ours = run(Side::Ours, &platform, &kube, shape, 1).await;
    report(&shape, 1, &flux_name, &flux, &ours);
    if shards > 1 {
        let flux_sharded = run(Side::Flux, &platform, &kube, shape, shards).await;
        let ours_sharded = run(Side::Ours, &platform, &kube, shape, shards).await;
        let table = report(&shape, shards, &flux_name, &flux_sharded, &ours_sharded);
        let speed_up = |one: &Run, many: &Run| {
            format!(
                "{:.2}×",
                one.to_ready.time.as_secs_f64() / many.to_ready.time.as_secs_f64()
            )
        };
        table.row(
            &format!("speed-up to Ready over 1 controller ({shards} shards)"),
            speed_up(&flux, &flux_sharded),
            speed_up(&ours, &ours_sharded),
            String::new(),
        );
    }
}

/// One side's run: fresh namespaces, its controllers, the measurement; then the controllers
/// stopped, the objects' finalizers removed and the namespaces deleted.
async fn run(
    side: Side,
    platform: &support::Platform,
    kube: &Client,
    shape: Shape,
    shards: usize,
) -> Run {
    let prefix = match side {
        Side::Flux => "bench-flux",
        Side::Ours => "bench-ours",
    };
    let mut namespaces = Vec::with_capacity(shape.namespaces);
    for _ in 0..shape.namespaces {
        namespaces.push(support::TestNamespace::new(platform, kube, prefix).await);
    }
    let names: Vec<String> = namespaces.iter().map(|ns| ns.name.clone()).collect();
    let run_id = names[0].clone();
    let start_controllers = || start(side, platform, shape, &run_id, shards);
    let (measured, controllers) =
        measure(platform, kube, shape, &names, shards, start_controllers).await;
    drop(controllers);
    release(
        &Api::<OCIRepository>::all(kube.clone()),
        &format!("{RUN_LABEL}={run_id}"),
    )
    .await;
    measured
}

/// The side's controllers: with one namespace they watch only it (as before sharding and
/// namespaces came into the bench); otherwise every namespace, the run's objects by label.
fn start(
    side: Side,
    platform: &support::Platform,
    shape: Shape,
    run_id: &str,
    shards: usize,
) -> Controllers {
    let args = |shard: usize| {
        let mut args = vec![
            format!("--concurrent={}", shape.concurrent),
            "--log-level=info".into(),
        ];
        let mut selector = Vec::new();
        if shape.namespaces > 1 {
            args.push("--watch-all-namespaces=true".into());
            selector.push(format!("{RUN_LABEL}={run_id}"));
        }
        if shards > 1 {
            selector.push(format!("{SHARD_LABEL}=shard-{shard}"));
        }
        if !selector.is_empty() {
            args.push(format!("--watch-label-selector={}", selector.join(",")));
        }
        args
    };
    match side {
        Side::Flux => Controllers::Flux(
            (0..shards)
                .map(|s| FluxController::source_controller(platform, run_id, &args(s)))
                .collect(),
        ),
        Side::Ours => Controllers::Ours(
            (0..shards)
                .map(|s| {
                    let args = args(s);
                    let args: Vec<&str> = args.iter().map(String::as_str).collect();
                    SourceController::start(platform, run_id, &args)
                })
                .collect(),
        ),
    }
}

async fn measure(
    platform: &support::Platform,
    kube: &Client,
    shape: Shape,
    namespaces: &[String],
    shards: usize,
    start_controllers: impl FnOnce() -> Controllers,
) -> (Run, Controllers) {
    let n = shape.n;
    let run_id = &namespaces[0];
    let selector = format!("{RUN_LABEL}={run_id}");
    let registry = platform.registry().to_string();
    // Every repository of the run is under its id; the pushes' requests are not the
    // controllers'.
    let urls = push_bench_artifacts(&registry, run_id, shape.artifacts).await;
    let log = std::path::PathBuf::from(&platform.env["DRIFTLESS_REGISTRY_LOG"]);
    let pushed = registry_requests(&log, run_id).len();
    let all: Api<OCIRepository> = Api::all(kube.clone());
    let (controllers, writes_before, cpu_before, api_server_before, started) = if shape.precreate {
        create_objects(kube, shape, namespaces, shards, &urls).await;
        let (writes, api_server) = (api_writes(kube).await, api_server_cpu(platform));
        let started = Instant::now();
        let controllers = start_controllers();
        (controllers, writes, Duration::ZERO, api_server, started)
    } else {
        let controllers = start_controllers();
        let (writes, cpu) = (api_writes(kube).await, controllers.cpu());
        let api_server = api_server_cpu(platform);
        let started = Instant::now();
        create_objects(kube, shape, namespaces, shards, &urls).await;
        (controllers, writes, cpu, api_server, started)
    };
    wait_watching(&all, &selector, n, Duration::from_secs(3600), ready).await;
    let ready_after = started.elapsed();
    let cpu_to_ready = controllers.cpu().saturating_sub(cpu_before);
    let api_server_cpu_to_ready = api_server_cpu(platform).saturating_sub(api_server_before);
    let writes_after = api_writes(kube).await;
    let requests = registry_requests(&log, run_id).len();
    let writes_per_object = writes_after
        .iter()
        .map(|(k, after)| {
            let before = writes_before.get(k).copied().unwrap_or(0.0);
            // The bench's own create of each object is not the controller's write.
            let own = match k.as_str() {
                "ocirepositories" if !shape.precreate => 1.0,
                _ => 0.0,
            };
            (k.clone(), (after - before) / n as f64 - own)
        })
        .filter(|(k, v)| *v >= 0.005 && !k.starts_with("namespaces"))
        .collect();
    let steady = if shape.steady {
        let cpu_before = controllers.cpu();
        let steady_started = Instant::now();
        steady_pass(kube, namespaces, n, &selector).await;
        let time = steady_started.elapsed();
        let cpu = controllers.cpu().saturating_sub(cpu_before);
        Some(Steady {
            time,
            cpu_per_reconcile: cpu / n as u32,
            registry_per_reconcile: (registry_requests(&log, run_id).len() - requests) as f64
                / n as f64,
        })
    } else {
        None
    };
    let run = Run {
        to_ready: ToReady {
            time: ready_after,
            cpu: cpu_to_ready,
            api_server_cpu: api_server_cpu_to_ready,
            peak_rss_kib: controllers.peak_rss_kib(),
        },
        writes_per_object,
        registry_per_object: (requests - pushed) as f64 / n as f64,
        steady,
    };
    (run, controllers)
}

/// `app-<i>` in namespace i mod m, on artifact i mod k, in shard i mod s; 32 creates at a time.
async fn create_objects(
    kube: &Client,
    shape: Shape,
    namespaces: &[String],
    shards: usize,
    urls: &[String],
) {
    let run_id = &namespaces[0];
    futures::stream::iter(0..shape.n)
        .map(|i| async move {
            let namespace = &namespaces[i % namespaces.len()];
            let object: OCIRepository = serde_json::from_value(serde_json::json!({
                "apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "OCIRepository",
                "metadata": {"name": format!("app-{i}"), "labels": {
                    RUN_LABEL: run_id, SHARD_LABEL: format!("shard-{}", i % shards)}},
                "spec": {"url": urls[i % urls.len()], "interval": "60m", "insecure": true},
            }))
            .unwrap();
            Api::<OCIRepository>::namespaced(kube.clone(), namespace)
                .create(&Default::default(), &object)
                .await
                .expect("create");
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await;
}

/// Asks every object to reconcile (`reconcile.fluxcd.io/requestedAt`) and waits until each has
/// handled it and is Ready.
async fn steady_pass(kube: &Client, namespaces: &[String], n: usize, selector: &str) {
    let stamp = "bench-steady-state";
    futures::stream::iter(0..n)
        .map(|i| async move {
            let api: Api<OCIRepository> =
                Api::namespaced(kube.clone(), &namespaces[i % namespaces.len()]);
            request_reconcile(&api, &format!("app-{i}"), stamp).await
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await;
    let all: Api<OCIRepository> = Api::all(kube.clone());
    wait_watching(&all, selector, n, Duration::from_secs(3600), |o| {
        handled(o, stamp)
    })
    .await;
}

fn report(shape: &Shape, shards: usize, flux_name: &str, flux: &Run, ours: &Run) -> SideBySide {
    let version = flux_name.rsplit(' ').next().unwrap_or_default();
    let table = SideBySide::new(
        &format!(
            "{}, --concurrent={}",
            shape.describe(shards),
            shape.concurrent
        ),
        &format!("Flux {version}"),
        "driftless",
    );
    let to_ready = match shape.precreate {
        true => "controllers started → all Ready",
        false => "first create → all Ready",
    };
    table.to_ready(to_ready, &flux.to_ready, &ours.to_ready);
    table.count(
        "registry requests per object to Ready",
        flux.registry_per_object,
        ours.registry_per_object,
    );
    let writes = |run: &Run| run.writes_per_object.values().sum::<f64>();
    table.count("API writes per object to Ready", writes(flux), writes(ours));
    let resources: std::collections::BTreeSet<&String> = flux
        .writes_per_object
        .keys()
        .chain(ours.writes_per_object.keys())
        .collect();
    for resource in resources {
        let get = |run: &Run| run.writes_per_object.get(resource).copied().unwrap_or(0.0);
        table.count(&format!("  of which {resource}"), get(flux), get(ours));
    }
    if let (Some(f), Some(o)) = (&flux.steady, &ours.steady) {
        table.secs("steady pass over all (requestedAt)", f.time, o.time);
        table.millis(
            "CPU per unchanged reconcile",
            f.cpu_per_reconcile,
            o.cpu_per_reconcile,
        );
        table.count(
            "registry requests per unchanged reconcile",
            f.registry_per_reconcile,
            o.registry_per_reconcile,
        );
    }
    table
}
