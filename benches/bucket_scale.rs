//! Bucket benchmark (a command, not a test): one large Bucket on the platform's SeaweedFS.
//!
//!   make bench-bucket                                     # both sets below
//!   BENCH_BUCKET=small cargo bench --bench bucket_scale   # 100,000 objects of 200 bytes
//!   BENCH_BUCKET=large cargo bench --bench bucket_scale   # 512 objects of 4 MiB (2 GiB)
//!
//! Reports the time from creating the Bucket to its first artifact, the controller's peak
//! RSS, and the time and object downloads of the pass after one object changed.

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use driftless::api::Bucket;
use support::controller::SourceController;
use support::objectstore::{CountingProxy, ObjectStore, Provider};
use support::source::{Sources, revision};

#[tokio::main]
async fn main() {
    // `cargo test --all-targets` runs harness-less benches too; only `cargo bench` passes --bench.
    if !std::env::args().any(|a| a == "--bench") {
        println!("bucket_scale: a benchmark; run it with `make bench-bucket`");
        return;
    }
    let set = std::env::var("BENCH_BUCKET").unwrap_or_else(|_| "small".into());
    let (count, size) = match set.as_str() {
        "small" => (100_000, 200),
        "large" => (512, 4 << 20),
        other => panic!("BENCH_BUCKET must be small or large, not {other}"),
    };
    let platform = support::platform();
    let kube = platform.client().await;
    support::install_crds(&kube).await;
    let ns = support::TestNamespace::new(&platform, &kube, "bench-bucket").await;
    let store = ObjectStore::new(&platform, Provider::S3);
    let bucket = format!("bench-{set}");
    store.mkbucket(&bucket);
    // The objects stay between runs: uploading 100,000 of them is the slow part.
    let present = store.list(&bucket, Some("data/")).len();
    if present != count {
        let upload = Instant::now();
        store.bulk(&bucket, "data", count, size);
        println!(
            "uploaded {count} objects of {size} bytes in {:.1} s",
            upload.elapsed().as_secs_f64()
        );
    }

    let controller = SourceController::start(
        &platform,
        &ns.name,
        &[
            "--log-level=info",
            "--artifact-max-bytes=8589934592",
            "--artifact-max-files=200000",
        ],
    );
    let proxy = CountingProxy::start(&Provider::S3.address(&platform)).await;
    let buckets: Sources<Bucket> = Sources::new(&kube, &ns.name, &controller);
    let secret: k8s_openapi::api::core::v1::Secret = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "creds"},
        "stringData": Provider::S3.secret(&platform).unwrap(),
    }))
    .unwrap();
    kube::Api::<k8s_openapi::api::core::v1::Secret>::namespaced(kube.clone(), &ns.name)
        .create(&Default::default(), &secret)
        .await
        .unwrap();

    let started = Instant::now();
    buckets
        .create(
            "bench",
            serde_json::json!({
                "bucketName": bucket, "endpoint": proxy.address, "insecure": true,
                "interval": "60m", "timeout": "30m", "prefix": "data/", "secretRef": {"name": "creds"},
            }),
        )
        .await;
    let first = wait(&buckets, "first artifact", |o| !revision(o).is_empty()).await;
    let first_artifact = started.elapsed();
    let first_downloads = proxy.gets("/data/").len();

    proxy.clear();
    store.put(
        &bucket,
        "data/obj-000001.yaml",
        format!("changed at {:?}\n", std::time::SystemTime::now()).as_bytes(),
    );
    let changed_at = Instant::now();
    buckets
        .api
        .patch(
            "bench",
            &Default::default(),
            &kube::api::Patch::Merge(&serde_json::json!({"metadata": {"annotations": {"reconcile.fluxcd.io/requestedAt": "bench-change"}}})),
        )
        .await
        .unwrap();
    let before = revision(&first);
    wait(&buckets, "new revision", |o| {
        revision(o) != before && !revision(o).is_empty()
    })
    .await;
    let change_pass = changed_at.elapsed();
    let change_downloads = proxy.gets("/data/").len();

    println!(
        "driftless Bucket benchmark: {count} objects x {size} bytes ({:.2} GiB), SeaweedFS",
        (count * size) as f64 / (1u64 << 30) as f64
    );
    println!(
        "  first artifact after              {:>8.2} s ({first_downloads} objects downloaded)",
        first_artifact.as_secs_f64()
    );
    println!(
        "  one object changed: new artifact  {:>8.2} s ({change_downloads} objects downloaded)",
        change_pass.as_secs_f64()
    );
    println!(
        "  controller peak RSS               {:>8.1} MiB",
        controller.peak_rss_kib() as f64 / 1024.0
    );
    drop(controller);
}

/// Poll until `done` (a benchmark may poll; a test may not).
async fn wait(buckets: &Sources<Bucket>, what: &str, done: impl Fn(&Bucket) -> bool) -> Bucket {
    let deadline = Instant::now() + Duration::from_secs(3600);
    loop {
        if let Some(obj) = buckets
            .api
            .get_opt("bench")
            .await
            .expect("get")
            .filter(|o| done(o))
        {
            return obj;
        }
        assert!(Instant::now() < deadline, "no {what} within an hour");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
