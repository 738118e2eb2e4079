//! Side by side with Flux (a command, not a test): the same N OCIRepositories on one artifact,
//! reconciled first by Flux's own source-controller (the peer `hack/testbin.sh
//! flux-source-controller` builds: v1.9.6, the newest the module proxy serves whole) and then by driftless's (release build), each in a fresh
//! namespace of the same platform with `--concurrent=10`, and the ratios.
//!
//!   make bench-flux                                  # N = 1000, one artifact, then 50
//!   BENCH_N=200 BENCH_ARTIFACTS=10 cargo bench --bench flux_side_by_side
//!
//! With BENCH_ARTIFACTS=k the objects are spread over k distinct artifacts (repositories
//! `app-0` … `app-<k-1>`, object i on artifact i mod k).
//!
//! Per controller: time from the first create until all N are Ready; its CPU (utime + stime)
//! to that point and its peak RSS; the API server's write requests per object to Ready (deltas
//! of `apiserver_request_total` for POST/PUT/PATCH/DELETE, by resource); the registry requests per
//! object to Ready; then a steady pass (every object asked to reconcile with
//! `reconcile.fluxcd.io/requestedAt`, nothing changed): its time, the CPU per reconcile and the
//! registry requests per reconcile.

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use driftless::api::OCIRepository;
use kube::{Api, Client};
use support::bench::{api_writes, bench_n, create_ready_spread, push_bench_artifacts, steady_pass};
use support::controller::{Launcher, SourceController, free_port};
use support::oci::registry_requests;

/// What one controller's run measured.
struct Run {
    name: &'static str,
    ready: Duration,
    cpu_to_ready: Duration,
    peak_rss_kib: u64,
    writes_per_object: BTreeMap<String, f64>,
    registry_per_object: f64,
    steady: Duration,
    cpu_per_reconcile: Duration,
    registry_per_reconcile: f64,
}

/// A controller under measurement: its CPU time and peak RSS.
trait Measured {
    fn cpu(&self) -> Duration;
    fn peak_rss_kib(&self) -> u64;
}

impl Measured for SourceController {
    fn cpu(&self) -> Duration {
        self.cpu_time()
    }
    fn peak_rss_kib(&self) -> u64 {
        SourceController::peak_rss_kib(self)
    }
}

impl Measured for support::controller::Process {
    fn cpu(&self) -> Duration {
        self.cpu_time()
    }
    fn peak_rss_kib(&self) -> u64 {
        support::controller::Process::peak_rss_kib(self)
    }
}

#[tokio::main]
async fn main() {
    // `cargo test --all-targets` runs harness-less benches too; only `cargo bench` passes --bench.
    if !std::env::args().any(|a| a == "--bench") {
        println!("flux_side_by_side: a benchmark; run it with `make bench-flux`");
        return;
    }
    let n = bench_n(1000);
    let artifacts: usize = std::env::var("BENCH_ARTIFACTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|k| *k >= 1)
        .unwrap_or(1);
    let platform = support::platform();
    let kube = platform.client().await;
    support::install_crds(&kube).await;
    support::install_flux_source_crds(&kube).await;
    ensure_flux_source_controller();

    let flux = {
        let ns = support::TestNamespace::new(&platform, &kube, "bench-flux").await;
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("storage")).unwrap();
        let port = free_port();
        let bin = std::path::Path::new(&platform.env["DRIFTLESS_TESTBIN"]).join("bin");
        let binary = bin.join("source-controller");
        let version =
            std::fs::read_to_string(bin.join(".source-controller.version")).unwrap_or_default();
        let name: &'static str = format!("Flux source-controller v{}", version.trim()).leak();
        let process = Launcher::new(
            "source-controller",
            binary,
            &platform,
            &ns.name,
            dir.path().join("flux.log"),
        )
        .args([
            "--enable-leader-election=false".to_string(),
            "--log-level=info".into(),
            "--concurrent=10".into(),
            format!("--storage-path={}", dir.path().join("storage").display()),
            format!("--storage-addr=127.0.0.1:{port}"),
            format!("--storage-adv-addr=127.0.0.1:{port}"),
        ])
        .env("HOME", dir.path())
        .within(Duration::from_secs(120))
        .start();
        measure(name, &platform, &kube, &ns.name, (n, artifacts), &process).await
    };
    let ours = {
        let ns = support::TestNamespace::new(&platform, &kube, "bench-ours").await;
        let controller = SourceController::start(
            &platform,
            &ns.name,
            &["--concurrent=10", "--log-level=info"],
        );
        measure(
            "driftless",
            &platform,
            &kube,
            &ns.name,
            (n, artifacts),
            &controller,
        )
        .await
    };
    report((n, artifacts), &flux, &ours);
}

fn ensure_flux_source_controller() {
    let status = std::process::Command::new(support::repo_root().join("hack/testbin.sh"))
        .arg("flux-source-controller")
        .status()
        .expect("run hack/testbin.sh flux-source-controller");
    assert!(
        status.success(),
        "hack/testbin.sh flux-source-controller failed"
    );
}

async fn measure(
    name: &'static str,
    platform: &support::Platform,
    kube: &Client,
    namespace: &str,
    (n, artifacts): (usize, usize),
    controller: &dyn Measured,
) -> Run {
    let registry = platform.registry().to_string();
    let urls = push_bench_artifacts(&registry, namespace, artifacts).await;
    // Every repository of the run is under the namespace; the pushes' requests are not the
    // controller's.
    let repo = namespace.to_string();
    let pushed = registry_requests(
        &std::path::PathBuf::from(&platform.env["DRIFTLESS_REGISTRY_LOG"]),
        &repo,
    )
    .len();
    let api: Api<OCIRepository> = Api::namespaced(kube.clone(), namespace);
    let log = std::path::PathBuf::from(&platform.env["DRIFTLESS_REGISTRY_LOG"]);
    let writes_before = api_writes(kube).await;
    let cpu_before = controller.cpu();
    let started = Instant::now();
    create_ready_spread(&api, n, &urls, Duration::from_secs(900)).await;
    let ready_after = started.elapsed();
    let cpu_to_ready = controller.cpu().saturating_sub(cpu_before);
    let writes_after = api_writes(kube).await;
    let requests = registry_requests(&log, &repo).len();
    let to_ready = requests - pushed;
    let writes_per_object = writes_after
        .iter()
        .map(|(k, after)| {
            let before = writes_before.get(k).copied().unwrap_or(0.0);
            (k.clone(), (after - before) / n as f64)
        })
        .filter(|(k, v)| *v >= 0.005 && !k.starts_with("namespaces"))
        .collect();

    let cpu_before = controller.cpu();
    let steady_started = Instant::now();
    steady_pass(&api, n, "bench-steady-state", Duration::from_secs(900)).await;
    let steady = steady_started.elapsed();
    let cpu_steady = controller.cpu().saturating_sub(cpu_before);
    let steady_requests = registry_requests(&log, &repo).len() - requests;
    Run {
        name,
        ready: ready_after,
        cpu_to_ready,
        peak_rss_kib: controller.peak_rss_kib(),
        writes_per_object,
        registry_per_object: to_ready as f64 / n as f64,
        steady,
        cpu_per_reconcile: cpu_steady / n as u32,
        registry_per_reconcile: steady_requests as f64 / n as f64,
    }
}

fn report((n, artifacts): (usize, usize), flux: &Run, ours: &Run) {
    let ratio = |a: f64, b: f64| {
        if b > 0.0 {
            format!("{:.1}×", a / b)
        } else {
            "—".into()
        }
    };
    let on = match artifacts {
        1 => "one artifact".to_string(),
        k => format!("{k} artifacts"),
    };
    println!("Side by side, N = {n} OCIRepositories on {on}, --concurrent=10:");
    println!(
        "  {:<44} {:>14} {:>14} {:>8}",
        "",
        flux.name.rsplit(' ').next().unwrap_or(""),
        ours.name,
        "ratio"
    );
    let row = |what: &str, a: String, b: String, r: String| {
        println!("  {what:<44} {a:>14} {b:>14} {r:>8}");
    };
    let secs = |d: Duration| format!("{:.2} s", d.as_secs_f64());
    row(
        "first create → all Ready",
        secs(flux.ready),
        secs(ours.ready),
        ratio(flux.ready.as_secs_f64(), ours.ready.as_secs_f64()),
    );
    row(
        "controller CPU to all Ready",
        secs(flux.cpu_to_ready),
        secs(ours.cpu_to_ready),
        ratio(
            flux.cpu_to_ready.as_secs_f64(),
            ours.cpu_to_ready.as_secs_f64(),
        ),
    );
    row(
        "controller peak RSS",
        format!("{:.1} MiB", flux.peak_rss_kib as f64 / 1024.0),
        format!("{:.1} MiB", ours.peak_rss_kib as f64 / 1024.0),
        ratio(flux.peak_rss_kib as f64, ours.peak_rss_kib as f64),
    );
    row(
        "registry requests per object to Ready",
        format!("{:.2}", flux.registry_per_object),
        format!("{:.2}", ours.registry_per_object),
        ratio(flux.registry_per_object, ours.registry_per_object),
    );
    row(
        "steady pass over all (requestedAt)",
        secs(flux.steady),
        secs(ours.steady),
        ratio(flux.steady.as_secs_f64(), ours.steady.as_secs_f64()),
    );
    row(
        "CPU per unchanged reconcile",
        format!("{:.2} ms", flux.cpu_per_reconcile.as_secs_f64() * 1e3),
        format!("{:.2} ms", ours.cpu_per_reconcile.as_secs_f64() * 1e3),
        ratio(
            flux.cpu_per_reconcile.as_secs_f64(),
            ours.cpu_per_reconcile.as_secs_f64(),
        ),
    );
    row(
        "registry requests per unchanged reconcile",
        format!("{:.2}", flux.registry_per_reconcile),
        format!("{:.2}", ours.registry_per_reconcile),
        ratio(flux.registry_per_reconcile, ours.registry_per_reconcile),
    );
    println!("  API writes per object to Ready (resource: Flux / driftless):");
    let resources: std::collections::BTreeSet<&String> = flux
        .writes_per_object
        .keys()
        .chain(ours.writes_per_object.keys())
        .collect();
    for resource in resources {
        let get = |run: &Run| run.writes_per_object.get(resource).copied().unwrap_or(0.0);
        println!("    {resource:<42} {:>8.2} {:>8.2}", get(flux), get(ours));
    }
}
