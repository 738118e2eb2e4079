//! Scale benchmark (a command, not a test): N OCIRepositories against the local platform.
//!
//!   make bench                      # N = 100 and N = 1000
//!   BENCH_N=500 cargo bench --bench oci_scale
//!
//! Reports the time from creating N objects until all are Ready, the controller's peak RSS,
//! and the registry requests per steady-state (unchanged) reconcile.

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use driftless::api::OCIRepository;
use kube::Api;
use support::bench::{bench_n, create_ready_oci_repositories, steady_pass};
use support::controller::SourceController;
use support::oci::registry_requests;

#[tokio::main]
async fn main() {
    // `cargo test --all-targets` runs harness-less benches too; only `cargo bench` passes --bench.
    if !std::env::args().any(|a| a == "--bench") {
        println!(
            "oci_scale: a benchmark; run it with `make bench` or `cargo bench --bench oci_scale`"
        );
        return;
    }
    let n = bench_n(100);
    let concurrent = std::env::var("BENCH_CONCURRENT").unwrap_or_else(|_| "10".into());
    let platform = support::platform();
    let kube = platform.client().await;
    support::install_crds(&kube).await;
    let ns = support::TestNamespace::new(&platform, &kube, "bench").await;
    let repo = format!("{}/app", ns.name);
    let registry = platform.registry().to_string();
    support::bench::push_bench_artifact(&registry, &repo).await;
    let log = std::path::PathBuf::from(&platform.env["DRIFTLESS_REGISTRY_LOG"]);
    // The push's own requests are not the controller's.
    let pushed = registry_requests(&log, &repo).len();

    let controller = SourceController::start(
        &platform,
        &ns.name,
        &[&format!("--concurrent={concurrent}"), "--log-level=info"],
    );
    let api: Api<OCIRepository> = Api::namespaced(kube.clone(), &ns.name);

    let started = Instant::now();
    let url = format!("oci://{registry}/{repo}");
    create_ready_oci_repositories(&api, n, &url, Duration::from_secs(600)).await;
    let all_ready = started.elapsed();
    let rss_after_ready = controller.peak_rss_kib();

    // Steady state: ask every object to reconcile again and count what reached the registry.
    let all = registry_requests(&log, &repo);
    let before = all.len();
    let to_ready = &all[pushed..];
    let blob_gets = to_ready
        .iter()
        .filter(|(m, p)| m == "GET" && p.contains("/blobs/"))
        .count();
    let steady_started = Instant::now();
    steady_pass(&api, n, "bench-steady-state", Duration::from_secs(600)).await;
    let steady = steady_started.elapsed();
    let after = registry_requests(&log, &repo);
    let steady_requests = &after[before..];
    let heads = steady_requests
        .iter()
        .filter(|(m, p)| m == "HEAD" && p.contains("/manifests/"))
        .count();

    println!("driftless source-controller benchmark: N = {n}, --concurrent={concurrent}");
    println!(
        "  all Ready after                   {:>8.2} s",
        all_ready.as_secs_f64()
    );
    println!(
        "  steady-state pass over all in     {:>8.2} s",
        steady.as_secs_f64()
    );
    println!(
        "  controller peak RSS               {:>8.1} MiB",
        rss_after_ready.max(controller.peak_rss_kib()) as f64 / 1024.0
    );
    println!(
        "  registry requests per object to Ready {:.2} ({} requests, {} blob GETs, for {n} objects)",
        to_ready.len() as f64 / n as f64,
        to_ready.len(),
        blob_gets
    );
    println!(
        "  registry requests per unchanged reconcile {:.2} ({} requests, {} manifest HEADs, for {n} reconciles)",
        steady_requests.len() as f64 / n as f64,
        steady_requests.len(),
        heads
    );
    drop(controller);
}
