//! Every replica serves (a command, not a test): BENCH_N OCIRepositories (default 1000) on
//! BENCH_ARTIFACTS distinct artifacts (default 10) of about BENCH_ARTIFACT_KIB KiB each (default
//! 512, little compressible), reconciled by a leader; then
//! - the storage they take: bytes on disk (each stored copy once, by allocated blocks) against
//!   one copy per object (every object's file counted on its own, as a store without
//!   deduplication keeps them);
//! - the time a new replica, on an empty volume, takes to get in step with the leader (from its
//!   start until `/readyz` answers 200), with its peak RSS and CPU time;
//! - the time the follower takes to lead once the leader is killed, and that it re-pulls nothing.
//!
//!   make bench-replicas
//!   BENCH_N=200 BENCH_ARTIFACTS=5 cargo bench --bench replicas

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant};
use support::bench::env_or;

use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;

use driftless::api::OCIRepository;
use support::bench::create_ready_spread;
use support::controller::{ELECTION, SourceController, source_lease_holder};
use support::oci::{FLUX_LAYER, client, flux_layer, hex_lines, push_flux_artifact};

const LIMIT: Duration = Duration::from_secs(900);
const POLL: Duration = Duration::from_millis(20);

/// Bytes allocated on disk under `root`: (each file once, each path on its own).
fn disk_use(root: &Path) -> (u64, u64) {
    let (mut once, mut per_path) = (0, 0);
    let mut seen = HashSet::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let m = std::fs::symlink_metadata(entry.path()).unwrap();
            if m.is_dir() {
                dirs.push(entry.path());
            } else if m.is_file() {
                let bytes = m.blocks() * 512;
                if !entry.path().starts_with(root.join(".blobs")) {
                    per_path += bytes;
                }
                if seen.insert(m.ino()) {
                    once += bytes;
                }
            }
        }
    }
    (once, per_path)
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// `k` artifacts of about `kib` KiB of hex lines each; their `oci://` URLs.
async fn push_artifacts(registry: &str, ns: &str, k: usize, kib: usize) -> Vec<String> {
    let mut urls = Vec::new();
    for j in 0..k {
        let content = hex_lines(&format!("{ns} {j}"), kib * 1024 / 65);
        let repo = format!("{ns}/app-{j}");
        push_flux_artifact(
            &client(registry),
            &repo,
            "latest",
            flux_layer(&[("data.txt", &content)]),
            FLUX_LAYER,
            &[],
        )
        .await;
        urls.push(format!("oci://{registry}/{repo}"));
    }
    urls
}

#[tokio::main]
async fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("replicas: a benchmark; run it with `make bench-replicas`");
        return;
    }
    let n: usize = env_or("BENCH_N", 1000);
    let k: usize = env_or("BENCH_ARTIFACTS", 10);
    let kib: usize = env_or("BENCH_ARTIFACT_KIB", 512);
    let platform = support::platform();
    let kube = platform.client().await;
    support::install_crds(&kube).await;
    let ns = support::TestNamespace::new(&platform, &kube, "bench-replicas").await;
    let api: Api<OCIRepository> = Api::namespaced(kube.clone(), &ns.name);
    let leases: Api<Lease> = Api::namespaced(kube.clone(), &ns.name);
    let service = format!("--storage-adv-addr=source-controller.{}.svc", ns.name);
    let mut args: Vec<&str> = ELECTION.to_vec();
    args.extend([service.as_str(), "--concurrent=8", "--log-level=info"]);

    let mut leader = SourceController::start(&platform, &ns.name, &args);
    let leader_id = wait_for(async || source_lease_holder(&leases).await).await;
    let urls = push_artifacts(platform.registry(), &ns.name, k, kib).await;
    create_ready_spread(&api, n, &urls, LIMIT).await;

    let (on_disk, per_object) = disk_use(&leader.storage);
    println!(
        "storage: {n} objects on {k} artifacts of ~{kib} KiB: {:.1} MiB on disk; one copy per object: {:.1} MiB ({:.0}x)",
        mib(on_disk),
        mib(per_object),
        per_object as f64 / on_disk.max(1) as f64
    );

    let started = Instant::now();
    let follower = SourceController::start(&platform, &ns.name, &args);
    wait_for(async || follower.is_ready().then_some(())).await;
    let in_step = started.elapsed();
    let (follower_disk, _) = disk_use(&follower.storage);
    println!(
        "new replica in step with {n} objects: {:.2}s (peak RSS {:.1} MiB, CPU {:.2}s, {:.1} MiB stored)",
        in_step.as_secs_f64(),
        follower.peak_rss_kib() as f64 / 1024.0,
        follower.cpu_time().as_secs_f64(),
        mib(follower_disk)
    );

    let before = artifacts(&api).await;
    let killed = Instant::now();
    leader.kill();
    wait_for(async || {
        source_lease_holder(&leases)
            .await
            .filter(|h| *h != leader_id)
    })
    .await;
    let took_over = killed.elapsed();
    // The new leader reconciles every object once it leads; with every artifact on disk its
    // statuses stay as they were.
    let pass_started = Instant::now();
    support::bench::steady_pass(&api, n, "after-takeover", LIMIT).await;
    let pass = pass_started.elapsed();
    let after = artifacts(&api).await;
    println!(
        "leader killed: the follower leads after {:.2}s (lease 6s); a reconcile of all {n} then takes {:.2}s; artifacts rewritten: {}",
        took_over.as_secs_f64(),
        pass.as_secs_f64(),
        before.iter().zip(&after).filter(|(b, a)| b != a).count()
    );
}

/// Every object's `status.artifact`, in the list's order (by name).
async fn artifacts(api: &Api<OCIRepository>) -> Vec<Option<driftless::api::Artifact>> {
    let list = api.list(&Default::default()).await.unwrap();
    list.items
        .into_iter()
        .map(|o| o.status.and_then(|s| s.artifact))
        .collect()
}

/// Benchmarks only: polls until `check` gives a value.
async fn wait_for<T>(mut check: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + LIMIT;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "not there within {LIMIT:?}");
        tokio::time::sleep(POLL).await;
    }
}
