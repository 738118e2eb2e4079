//! A Bucket side by side with Flux (a command, not a test): the same Bucket of N small objects
//! on the platform's SeaweedFS (S3, `provider: generic`), reconciled first by Flux's own
//! source-controller (the peer `hack/testbin.sh flux-source-controller` builds) and then by
//! driftless's (release build), each in a fresh namespace, each behind a proxy of its own that
//! counts the requests it sends the object store.
//!
//!   make bench-flux                                          # N = 10,000 among the rest
//!   BENCH_N=10000 cargo bench --bench flux_bucket_side_by_side
//!
//! Per controller: the time from creating the Bucket to its first artifact, the CPU to it and
//! the requests it took; then one object changed (and the Bucket asked to reconcile): the time
//! to the new revision, its CPU, the objects downloaded again; then a pass with nothing changed:
//! its CPU and requests; and the peak RSS over the run.

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use driftless::api::Bucket;
use kube::{Api, Client};
use support::bench::{SideBySide, bench_n, request_reconcile, thousands, wait_watching};
use support::controller::{Process, SourceController};
use support::objectstore::{CountingProxy, ObjectStore, Provider};
use support::peers::FluxController;
use support::source::revision;

/// Object size: small, so that the pass is about requests and the index, not bandwidth.
const SIZE: usize = 200;
/// Names the run a Bucket belongs to.
const RUN_LABEL: &str = "driftless.bench/run";

/// What one controller's run measured.
struct Run {
    first: Pass,
    changed: Pass,
    unchanged: Pass,
    peak_rss_kib: u64,
}

/// One pass: its time, the controller's CPU in it, the object store requests it sent and the
/// objects it downloaded.
struct Pass {
    time: Duration,
    cpu: Duration,
    requests: usize,
    downloads: usize,
}

#[tokio::main]
async fn main() {
    // `cargo test --all-targets` runs harness-less benches too; only `cargo bench` passes --bench.
    if !std::env::args().any(|a| a == "--bench") {
        println!("flux_bucket_side_by_side: a benchmark; run it with `make bench-flux`");
        return;
    }
    let n = bench_n(10_000);
    let platform = support::platform();
    let kube = platform.client().await;
    support::install_crds(&kube).await;
    support::install_flux_source_crds(&kube).await;
    let store = ObjectStore::new(&platform, Provider::S3);
    let bucket = format!("bench-flux-{n}");
    store.mkbucket(&bucket);
    // The objects stay between runs: uploading them is the slow part.
    if store.list(&bucket, Some("data/")).len() != n {
        store.bulk(&bucket, "data", n, SIZE);
    }
    let flux_name = FluxController::title(&platform, "source-controller");

    let flux = {
        let ns = support::TestNamespace::new(&platform, &kube, "bench-flux-bucket").await;
        let controller =
            FluxController::source_controller(&platform, &ns.name, &["--log-level=info".into()]);
        measure(
            &platform,
            &kube,
            &ns.name,
            &store,
            &bucket,
            &controller.process,
        )
        .await
    };
    let ours = {
        let ns = support::TestNamespace::new(&platform, &kube, "bench-ours-bucket").await;
        let controller = SourceController::start(&platform, &ns.name, &["--log-level=info"]);
        measure(
            &platform,
            &kube,
            &ns.name,
            &store,
            &bucket,
            controller.process(),
        )
        .await
    };
    report(n, &flux_name, &flux, &ours);
}

async fn measure(
    platform: &support::Platform,
    kube: &Client,
    namespace: &str,
    store: &ObjectStore,
    bucket: &str,
    controller: &Process,
) -> Run {
    let proxy = CountingProxy::start(&Provider::S3.address(platform)).await;
    let secret: k8s_openapi::api::core::v1::Secret = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "creds"},
        "stringData": Provider::S3.secret(platform).unwrap(),
    }))
    .unwrap();
    Api::<k8s_openapi::api::core::v1::Secret>::namespaced(kube.clone(), namespace)
        .create(&Default::default(), &secret)
        .await
        .expect("create the Secret");
    let api: Api<Bucket> = Api::namespaced(kube.clone(), namespace);
    let selector = format!("{RUN_LABEL}={namespace}");
    let objects = format!("/{bucket}/data/");
    let pass = |started: Instant, cpu_before: Duration| Pass {
        time: started.elapsed(),
        cpu: controller.cpu_time().saturating_sub(cpu_before),
        requests: proxy.requests().len(),
        downloads: proxy.gets(&objects).len(),
    };

    let (started, cpu) = (Instant::now(), controller.cpu_time());
    let object: Bucket = serde_json::from_value(serde_json::json!({
        "apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "Bucket",
        "metadata": {"name": "bench", "labels": {RUN_LABEL: namespace}},
        "spec": {"bucketName": bucket, "endpoint": proxy.address, "insecure": true,
                 "interval": "60m", "timeout": "30m", "prefix": "data/",
                 "secretRef": {"name": "creds"}},
    }))
    .unwrap();
    api.create(&Default::default(), &object)
        .await
        .expect("create the Bucket");
    wait_watching(&api, &selector, 1, Duration::from_secs(3600), |o| {
        !revision(o).is_empty()
    })
    .await;
    let first = pass(started, cpu);
    let first_revision = revision(&api.get("bench").await.expect("get"));

    proxy.clear();
    let (started, cpu) = (Instant::now(), controller.cpu_time());
    let content = format!("changed at {:?}\n", std::time::SystemTime::now());
    store.put(bucket, "data/obj-000001.yaml", content.as_bytes());
    request_reconcile(&api, "bench", "bench-change").await;
    wait_watching(&api, &selector, 1, Duration::from_secs(3600), |o| {
        handled(o, "bench-change") && revision(o) != first_revision
    })
    .await;
    let changed = pass(started, cpu);

    proxy.clear();
    let (started, cpu) = (Instant::now(), controller.cpu_time());
    request_reconcile(&api, "bench", "bench-unchanged").await;
    wait_watching(&api, &selector, 1, Duration::from_secs(3600), |o| {
        handled(o, "bench-unchanged")
    })
    .await;
    let unchanged = pass(started, cpu);
    Run {
        first,
        changed,
        unchanged,
        peak_rss_kib: controller.peak_rss_kib(),
    }
}

/// The Bucket handled the request `stamp` and is Ready.
fn handled(o: &Bucket, stamp: &str) -> bool {
    o.status.as_ref().is_some_and(|s| {
        s.last_handled_reconcile_at.as_deref() == Some(stamp)
            && s.conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == driftless::api::ConditionStatus::True)
    })
}

fn report(n: usize, flux_name: &str, flux: &Run, ours: &Run) {
    let version = flux_name.rsplit(' ').next().unwrap_or_default();
    let table = SideBySide::new(
        &format!(
            "a Bucket of {} objects of {SIZE} bytes (SeaweedFS, S3)",
            thousands(n)
        ),
        &format!("Flux {version}"),
        "driftless",
    );
    table.secs("create → first artifact", flux.first.time, ours.first.time);
    table.secs(
        "controller CPU to first artifact",
        flux.first.cpu,
        ours.first.cpu,
    );
    let count = |what: &str, of: fn(&Run) -> usize| {
        table.count(what, of(flux) as f64, of(ours) as f64);
    };
    count("objects downloaded to first artifact", |r| {
        r.first.downloads
    });
    count("object store requests to first artifact", |r| {
        r.first.requests
    });
    table.secs(
        "one object changed → new artifact",
        flux.changed.time,
        ours.changed.time,
    );
    table.secs(
        "controller CPU for the changed pass",
        flux.changed.cpu,
        ours.changed.cpu,
    );
    count("objects downloaded for the changed pass", |r| {
        r.changed.downloads
    });
    count("object store requests, changed pass", |r| {
        r.changed.requests
    });
    table.secs(
        "unchanged pass (requestedAt)",
        flux.unchanged.time,
        ours.unchanged.time,
    );
    table.millis(
        "controller CPU for the unchanged pass",
        flux.unchanged.cpu,
        ours.unchanged.cpu,
    );
    count("objects downloaded, unchanged pass", |r| {
        r.unchanged.downloads
    });
    count("object store requests, unchanged pass", |r| {
        r.unchanged.requests
    });
    table.mib("controller peak RSS", flux.peak_rss_kib, ours.peak_rss_kib);
}
