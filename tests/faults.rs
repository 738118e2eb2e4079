//! Faults: the disk — the source-controller's storage on a small file system of its own (a tmpfs
//! the test mounts, as root), filled up by an artifact that does not fit, then made read-only;
//! the network — Toxiproxy between the controller and the registry: an outage, connections
//! reset, bodies cut short, a stall, and latency. Each time: a condition and a Warning event
//! naming the cause, the last good artifact still served whole to a consumer downloading it
//! throughout, no half-written file left, and recovery by itself once the fault clears.
//! Then one round of the soak: every fault kind, the object store's and the API server's too,
//! and `kill -9` of each controller mid-work (`support::soak`; `make soak` runs many rounds).

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::sha256;

use sha2::{Digest, Sha256};

use driftless::api::{Bucket, ConditionStatus, OCIRepository};
use support::busy::BusyFront;
use support::cluster::PrivateCluster;
use support::controller::{SourceController, try_get};
use support::objectstore::{ObjectStore, Provider};
use support::oci::{FLUX_LAYER, client, flux_layer, push_flux_artifact};
use support::soak::{Fault, Soak, SoakOptions};
use support::source::{Sources, artifact, condition, files, ready_status, revision, untar};
use support::toxiproxy::Toxiproxy;

/// A tmpfs of `size` mounted at `dir`, unmounted (lazily: a server may still hold a file) on
/// drop.
struct SmallFilesystem {
    dir: PathBuf,
}

impl SmallFilesystem {
    fn mount(dir: &Path, size: &str) -> SmallFilesystem {
        std::fs::create_dir_all(dir).unwrap();
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0755"),
                "tmpfs",
            ])
            .arg(dir)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "the disk fault tests mount a tmpfs and need root (CAP_SYS_ADMIN): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        SmallFilesystem {
            dir: dir.to_path_buf(),
        }
    }

    fn remount(&self, mode: &str) {
        let out = Command::new("mount")
            .args(["-o", &format!("remount,{mode}")])
            .arg(&self.dir)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "remount {mode}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for SmallFilesystem {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

/// Bytes that do not compress: gzip cannot make them fit.
fn incompressible(len: usize) -> String {
    let mut out = String::with_capacity(len * 2);
    let mut block = Sha256::digest(b"seed").to_vec();
    while out.len() < len * 2 {
        block = Sha256::digest(&block).to_vec();
        out.push_str(&hex::encode(&block));
    }
    out
}

/// Every file under `dir`, relative.
fn stored_files(dir: &Path) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap().flatten() {
            let path = entry.path();
            if entry.file_type().unwrap().is_dir() {
                stack.push(path);
            } else {
                found.insert(path.strip_prefix(dir).unwrap().display().to_string());
            }
        }
    }
    found
}

/// The files storage may hold: the objects' artifacts, their lock files (kept, as Flux keeps
/// them), the `latest.tar.gz` link, and the one stored copy each artifact is a link to.
/// Anything else is half-written or orphaned.
fn assert_no_stray_files(storage: &Path, allowed_artifacts: &[&str]) {
    use std::os::unix::fs::MetadataExt;
    let inode = |path: &Path| std::fs::metadata(path).map(|m| m.ino()).ok();
    let allowed_copies: Vec<u64> = allowed_artifacts
        .iter()
        .filter_map(|a| inode(&storage.join(a)))
        .collect();
    for file in stored_files(storage) {
        if file.starts_with(".blobs/sha256/") {
            let linked = inode(&storage.join(&file)).is_some_and(|i| allowed_copies.contains(&i));
            assert!(linked, "stray stored copy: {file}");
            continue;
        }
        let name = file.rsplit('/').next().unwrap();
        let artifact = name.strip_suffix(".lock").unwrap_or(name);
        assert!(
            name == "latest.tar.gz" || allowed_artifacts.iter().any(|a| a.ends_with(artifact)),
            "stray file in storage: {file}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_or_read_only_disk_fails_cleanly_and_recovers() {
    let platform = support::platform();
    let kube = platform.client().await;
    support::install_crds(&kube).await;
    let ns = support::TestNamespace::new(&platform, &kube, "fault-disk").await;
    let dir = tempfile::tempdir().unwrap();
    // The storage directory is the mount point; the controller's TMPDIR (storage.tmp) and its
    // log stay on the ordinary disk, so only storing can run out of space.
    let storage = dir.path().join("storage");
    let disk = SmallFilesystem::mount(&storage, "2m");
    let controller = SourceController::start_with_storage(&platform, &ns.name, &storage, &[]);
    let sources: Sources<OCIRepository> = Sources::new(&kube, &ns.name, &controller);
    let registry = platform.registry().to_string();
    let repo = format!("{}/app", ns.name);
    let push = async |content: &str| {
        let layer = flux_layer(&[("app.yaml", content)]);
        let digest =
            push_flux_artifact(&client(&registry), &repo, "latest", layer, FLUX_LAYER, &[]).await;
        format!("latest@{digest}")
    };

    let v1 = push("version: 1\n").await;
    sources
        .create("app", serde_json::json!({"url": format!("oci://{registry}/{repo}"), "interval": "1h", "insecure": true}))
        .await;
    let good = sources
        .wait_until("app", "serving v1", |o| revision(o) == v1)
        .await;
    let served = sources.download(&good);

    // Full: a 3 MiB artifact on a 2 MiB file system.
    let big = push(&incompressible(3 << 20)).await;
    let failed = sources.request_reconcile("app").await;
    let storage_failed = condition(&failed, "StorageOperationFailed")
        .unwrap_or_else(|| panic!("no StorageOperationFailed: {:?}", failed.status));
    assert!(
        storage_failed.message.contains("No space left on device"),
        "{}",
        storage_failed.message
    );
    assert_eq!(
        condition(&failed, "Ready").map(|c| c.status),
        Some(ConditionStatus::False)
    );
    assert_eq!(
        revision(&failed),
        v1,
        "the status keeps the last good artifact"
    );
    let still = sources.download(&failed);
    assert_eq!(
        still, served,
        "the last good artifact is still served, whole"
    );
    assert_eq!(sha256(&still), artifact(&failed).unwrap().digest);
    assert_eq!(untar(&still), files(&[("app.yaml", "version: 1\n")]));
    let warned = sources.events("app").await.into_iter().any(|e| {
        e.type_.as_deref() == Some("Warning")
            && e.message
                .as_deref()
                .is_some_and(|m| m.contains("No space left on device"))
    });
    assert!(warned, "a Warning event names the cause");
    let v1_path = artifact(&good).unwrap().path.clone();
    assert_no_stray_files(&storage, &[&v1_path]);
    assert_ne!(big, v1);

    // Space back (the tag moves to a small artifact): Ready again, the big one never stored.
    let v2 = push("version: 2\n").await;
    let recovered = sources.request_reconcile("app").await;
    assert_eq!(revision(&recovered), v2);
    assert_eq!(
        condition(&recovered, "Ready").map(|c| c.status),
        Some(ConditionStatus::True)
    );
    assert!(condition(&recovered, "StorageOperationFailed").is_none());
    assert_eq!(
        untar(&sources.download(&recovered)),
        files(&[("app.yaml", "version: 2\n")])
    );

    // Read-only: refused with the cause, v2 served; writable again: v3.
    disk.remount("ro");
    let v3 = push("version: 3\n").await;
    let refused = sources.request_reconcile("app").await;
    let message = condition(&refused, "StorageOperationFailed")
        .map(|c| c.message.clone())
        .unwrap_or_else(|| panic!("no StorageOperationFailed: {:?}", refused.status));
    assert!(message.contains("Read-only file system"), "{message}");
    assert_eq!(revision(&refused), v2);
    assert_eq!(
        untar(&sources.download(&refused)),
        files(&[("app.yaml", "version: 2\n")])
    );
    disk.remount("rw");
    let back = sources.request_reconcile("app").await;
    assert_eq!(revision(&back), v3);
    assert_eq!(
        untar(&sources.download(&back)),
        files(&[("app.yaml", "version: 3\n")])
    );
    let paths: Vec<String> = [&recovered, &back]
        .iter()
        .map(|o| artifact(*o).unwrap().path.clone())
        .collect();
    let allowed: Vec<&str> = paths
        .iter()
        .map(String::as_str)
        .chain([v1_path.as_str()])
        .collect();
    assert_no_stray_files(&storage, &allowed);
}

/// What a consumer downloading the current artifact again and again saw.
#[derive(Debug, Default)]
struct Consumed {
    downloads: u64,
    failed: Vec<String>,
    wrong_bytes: Vec<String>,
}

/// Downloads the artifact `current` names (path, digest) from the controller in a loop until
/// stopped, checking every body against the digest.
fn consume(
    port: u16,
    current: Arc<Mutex<(String, String)>>,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<Consumed> {
    std::thread::spawn(move || {
        let mut seen = Consumed::default();
        while !stop.load(Ordering::Relaxed) {
            let (path, digest) = current.lock().unwrap().clone();
            seen.downloads += 1;
            match try_get(port, &format!("/{path}")) {
                Ok((200, body)) if sha256(&body) == digest => {}
                Ok((200, body)) => seen.wrong_bytes.push(format!("{path}: {}", sha256(&body))),
                Ok((status, _)) => seen.failed.push(format!("{path}: HTTP {status}")),
                Err(e) => seen.failed.push(format!("{path}: {e}")),
            }
        }
        seen
    })
}

/// Retries come quickly (the backoff at most 3 s), so recovery by itself is seen within seconds.
const QUICK_RETRIES: &[&str] = &["--min-retry-delay=500ms", "--max-retry-delay=3s"];

/// Pushes version `version` of the app (with `padding` bytes that do not compress) to the
/// registry itself; its revision.
async fn push_version(registry: &str, repo: &str, version: usize, padding: usize) -> String {
    let content = format!("version: {version}\n{}", incompressible(padding));
    let layer = flux_layer(&[("app.yaml", &content)]);
    let digest =
        push_flux_artifact(&client(registry), repo, "latest", layer, FLUX_LAYER, &[]).await;
    format!("latest@{digest}")
}

/// A fault between the controller and the registry.
enum NetworkFault {
    /// The proxy refuses connections and closes open ones.
    Outage,
    /// A Toxiproxy toxic on the registry's responses.
    Toxic(&'static str, serde_json::Value),
}

#[tokio::test(flavor = "multi_thread")]
async fn registry_network_faults_keep_the_last_artifact_served_and_recover() {
    let platform = support::platform();
    let kube = platform.client().await;
    support::install_crds(&kube).await;
    let ns = support::TestNamespace::new(&platform, &kube, "fault-net").await;
    let toxiproxy = Toxiproxy::start(&platform).await;
    let through = toxiproxy.proxy("registry", platform.registry()).await;
    let controller = SourceController::start(&platform, &ns.name, QUICK_RETRIES);
    let sources: Sources<OCIRepository> = Sources::new(&kube, &ns.name, &controller);
    let repo = format!("{}/app", ns.name);
    // Pushed to the registry itself; the controller pulls through the proxy. Larger than the
    // cut-off below, so a body cut short is a truncated artifact, not a whole one.
    let push = async |version| push_version(platform.registry(), &repo, version, 64 << 10).await;
    let v1 = push(1).await;
    sources
        .create("app", serde_json::json!({"url": format!("oci://{through}/{repo}"), "interval": "1h", "insecure": true}))
        .await;
    let good = sources
        .wait_until("app", "serving v1", |o| revision(o) == v1)
        .await;
    let served = |o: &OCIRepository| {
        let a = artifact(o).unwrap();
        (a.path.clone(), a.digest.clone())
    };
    let current = Arc::new(Mutex::new(served(&good)));
    let stop = Arc::new(AtomicBool::new(false));
    let consumer = consume(controller.storage_port, current.clone(), stop.clone());

    let faults = [
        ("outage", NetworkFault::Outage),
        (
            "connections reset",
            NetworkFault::Toxic("reset_peer", serde_json::json!({"timeout": 0})),
        ),
        (
            "bodies cut after 16 KiB",
            NetworkFault::Toxic("limit_data", serde_json::json!({"bytes": 16 << 10})),
        ),
        (
            "a stall closed after 3 s",
            NetworkFault::Toxic("timeout", serde_json::json!({"timeout": 3000})),
        ),
    ];
    let mut recoveries = Vec::new();
    let mut last = v1;
    for (version, (what, fault)) in (2..).zip(faults) {
        let next = push(version).await;
        let warnings_before = warnings(&sources).await;
        match &fault {
            NetworkFault::Outage => toxiproxy.set_enabled("registry", false).await,
            NetworkFault::Toxic(kind, attributes) => {
                toxiproxy
                    .add_toxic("registry", "fault", kind, attributes.clone())
                    .await
            }
        }
        let failed = sources.request_reconcile("app").await;
        assert_eq!(
            condition(&failed, "Ready").map(|c| c.status),
            Some(ConditionStatus::False),
            "{what}: {:?}",
            failed.status
        );
        let message = condition(&failed, "Ready").unwrap().message.clone();
        assert!(!message.is_empty(), "{what}: the condition names the cause");
        assert_eq!(
            revision(&failed),
            last,
            "{what}: the last good artifact stays"
        );
        assert!(
            warnings(&sources).await > warnings_before,
            "{what}: a Warning event ({message})"
        );
        eprintln!("{what}: {message}");
        match &fault {
            NetworkFault::Outage => toxiproxy.set_enabled("registry", true).await,
            NetworkFault::Toxic(..) => toxiproxy.remove_toxic("registry", "fault").await,
        }
        // No request from here: the controller retries on its own backoff.
        let cleared = Instant::now();
        let recovered = sources
            .wait_until("app", "recovered by itself", |o| revision(o) == next)
            .await;
        recoveries.push((what, cleared.elapsed()));
        *current.lock().unwrap() = served(&recovered);
        last = next;
    }

    // Latency alone is no failure: slower, and still Ready with the new revision.
    toxiproxy
        .add_toxic(
            "registry",
            "slow",
            "latency",
            serde_json::json!({"latency": 500}),
        )
        .await;
    let slow = push(99).await;
    let passed = sources.request_reconcile("app").await;
    assert_eq!(revision(&passed), slow, "{:?}", passed.status);
    toxiproxy.remove_toxic("registry", "slow").await;

    stop.store(true, Ordering::Relaxed);
    let seen = consumer.join().unwrap();
    eprintln!(
        "recovery after the fault cleared (retry delay at most 3s): {recoveries:?}; consumer: {} downloads",
        seen.downloads
    );
    assert!(seen.downloads > 0);
    assert!(
        seen.failed.is_empty(),
        "failed downloads: {:?}",
        seen.failed
    );
    assert!(
        seen.wrong_bytes.is_empty(),
        "bytes other than the status's digest: {:?}",
        seen.wrong_bytes
    );
    for (what, took) in recoveries {
        assert!(
            took < Duration::from_secs(15),
            "{what}: recovered {took:?} after the fault cleared"
        );
    }
}

async fn warnings(sources: &Sources<OCIRepository>) -> usize {
    sources
        .events("app")
        .await
        .iter()
        .filter(|e| e.type_.as_deref() == Some("Warning"))
        .map(|e| e.count.unwrap_or(1).max(1) as usize)
        .sum()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_busy_registry_is_asked_again_only_after_its_retry_after() {
    let platform = support::platform();
    let kube = platform.client().await;
    support::install_crds(&kube).await;
    let ns = support::TestNamespace::new(&platform, &kube, "fault-busy").await;
    let front = BusyFront::start(platform.registry()).await;
    // The backoff alone would retry within 3 s; the registry asks for 5.
    let controller = SourceController::start(&platform, &ns.name, QUICK_RETRIES);
    let sources: Sources<OCIRepository> = Sources::new(&kube, &ns.name, &controller);
    let repo = format!("{}/app", ns.name);
    let push = async |version| push_version(platform.registry(), &repo, version, 0).await;
    let v1 = push(1).await;
    sources
        .create("app", serde_json::json!({"url": format!("oci://{}/{repo}", front.address), "interval": "1h", "insecure": true}))
        .await;
    sources
        .wait_until("app", "serving v1", |o| revision(o) == v1)
        .await;

    // 429 with Retry-After: 5. One request is refused, and no other comes before 5 s.
    let v2 = push(2).await;
    front.set_busy(Some((429, Some(5))));
    let failed = sources.request_reconcile("app").await;
    let refused_at = Instant::now();
    let message = condition(&failed, "Ready").unwrap().message.clone();
    assert!(
        message.contains("429") && message.contains("retry after 5s"),
        "{message}"
    );
    assert_eq!(revision(&failed), v1, "the last good artifact stays");
    front
        .asked_nothing_more("the registry", Duration::from_secs(4))
        .await;
    front.set_busy(None);
    sources
        .wait_until("app", "v2 after the Retry-After", |o| revision(o) == v2)
        .await;
    let waited = refused_at.elapsed();
    assert!(waited >= Duration::from_secs(4), "{waited:?}");
    eprintln!("429 Retry-After 5s: recovered {waited:?} after the refusal");

    // A 5xx without Retry-After: the ordinary backoff, and recovery by itself.
    let v3 = push(3).await;
    front.set_busy(Some((502, None)));
    let failed = sources.request_reconcile("app").await;
    let message = condition(&failed, "Ready").unwrap().message.clone();
    assert!(message.contains("502"), "{message}");
    assert_eq!(revision(&failed), v2);
    front.set_busy(None);
    let cleared = Instant::now();
    sources
        .wait_until("app", "v3 after the 502s", |o| revision(o) == v3)
        .await;
    assert!(
        cleared.elapsed() < Duration::from_secs(15),
        "{:?}",
        cleared.elapsed()
    );
}

/// An object store's 429 with `Retry-After` is honoured as a registry's is: the Bucket names
/// the cause, keeps its artifact, and asks nothing more before the wait is over.
#[tokio::test(flavor = "multi_thread")]
async fn a_busy_object_store_is_asked_again_only_after_its_retry_after() {
    let platform = support::platform();
    let kube = platform.client().await;
    support::install_crds(&kube).await;
    let ns = support::TestNamespace::new(&platform, &kube, "fault-busy-s3").await;
    let store = ObjectStore::new(&platform, Provider::S3);
    let bucket = format!("busy-{}", ns.name.rsplit('-').next().unwrap());
    store.mkbucket(&bucket);
    store.put(&bucket, "app.yaml", b"version: 1\n");
    let front = BusyFront::start(&Provider::S3.address(&platform)).await;
    let secrets: kube::Api<k8s_openapi::api::core::v1::Secret> =
        kube::Api::namespaced(kube.clone(), &ns.name);
    let secret = serde_json::json!({"metadata": {"name": "creds"}, "stringData": Provider::S3.secret(&platform)});
    secrets
        .create(
            &Default::default(),
            &serde_json::from_value(secret).unwrap(),
        )
        .await
        .unwrap();
    let controller = SourceController::start(&platform, &ns.name, QUICK_RETRIES);
    let buckets: Sources<Bucket> = Sources::new(&kube, &ns.name, &controller);
    buckets
        .create("app", serde_json::json!({"provider": "generic", "bucketName": bucket, "endpoint": front.address,
                                          "insecure": true, "interval": "1h", "secretRef": {"name": "creds"}}))
        .await;
    let v1 = revision(&buckets.wait_ready("app").await);

    store.put(&bucket, "app.yaml", b"version: 2\n");
    front.set_busy(Some((429, Some(5))));
    let failed = buckets.request_reconcile("app").await;
    let refused_at = Instant::now();
    let message = condition(&failed, "Ready").unwrap().message.clone();
    assert!(
        message.contains("429") && message.contains("retry after 5s"),
        "{message}"
    );
    assert_eq!(revision(&failed), v1, "the last good artifact stays");
    assert_eq!(
        front.refused(),
        1,
        "one refused request, not a second to ask why"
    );
    front
        .asked_nothing_more("the object store", Duration::from_secs(4))
        .await;
    front.set_busy(None);
    let recovered = buckets
        .wait_until("app", "v2 after the Retry-After", |o| {
            revision(o) != v1 && ready_status(o) == Some(ConditionStatus::True)
        })
        .await;
    let waited = refused_at.elapsed();
    assert!(waited >= Duration::from_secs(4), "{waited:?}");
    assert_eq!(
        untar(&buckets.download(&recovered))
            .get("app.yaml")
            .map(String::as_str),
        Some("version: 2\n")
    );
    eprintln!("object store 429 Retry-After 5s: recovered {waited:?} after the refusal");
}

/// Asks for a reconcile (as `flux reconcile` does) without waiting for it: the API server may
/// go away before the controller answers.
async fn ask_reconcile<K>(api: &kube::Api<K>, name: &str)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let stamp = format!("{:?}", std::time::SystemTime::now());
    let patch = serde_json::json!({"metadata": {"annotations": {"reconcile.fluxcd.io/requestedAt": stamp}}});
    api.patch(
        name,
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(&patch),
    )
    .await
    .unwrap();
}

/// Creates a cluster-scoped object from its JSON.
async fn create_cluster_scoped<K>(kube: &kube::Client, value: serde_json::Value) -> K
where
    K: kube::Resource<Scope = k8s_openapi::ClusterResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    let api: kube::Api<K> = kube::Api::all(kube.clone());
    api.create(&Default::default(), &serde_json::from_value(value).unwrap())
        .await
        .unwrap()
}

/// kube-apiserver and etcd failing under a running source-controller, on a cluster of the
/// test's own: the API server killed mid-reconcile and restarted; etcd killed and restarted;
/// the controller cut off while etcd's history is compacted past what it saw, so that its
/// watch ends in 410 Gone and it must list again; and priority and fairness rejecting (429)
/// every request of the controller's user for a while. Each time the controller stays up and
/// reaches the pushed revision by itself once the fault clears.
#[tokio::test(flavor = "multi_thread")]
async fn api_server_and_etcd_failures_are_ridden_out() {
    use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
    use k8s_openapi::api::flowcontrol::v1::{FlowSchema, PriorityLevelConfiguration};
    use k8s_openapi::api::rbac::v1::ClusterRoleBinding;
    use kube::Api;
    use kube::api::{DeleteParams, WatchEvent, WatchParams};

    let platform = support::platform();
    // Without the watch cache a watch from a compacted revision reaches etcd: 410 Gone.
    let mut cluster = PrivateCluster::start(&platform, &["--watch-cache=false"]);
    let kube = cluster.client().await;
    support::apply_crds(&kube).await;
    // Established is not served yet on a fresh API server: wait until the kinds list.
    let repositories: Api<OCIRepository> = Api::all(kube.clone());
    let buckets: Api<Bucket> = Api::all(kube.clone());
    support::wait::poll("the CRDs served", Duration::from_secs(60), async || {
        let listed = (
            repositories.list(&Default::default()).await,
            buckets.list(&Default::default()).await,
        );
        matches!(listed, (Ok(_), Ok(_))).then_some(())
    })
    .await;
    let ns = "faults";
    let _: Namespace =
        create_cluster_scoped(&kube, serde_json::json!({"metadata": {"name": ns}})).await;
    // A user of its own: system:masters is exempt from priority and fairness.
    let user = "driftless-controller";
    let _: ClusterRoleBinding = create_cluster_scoped(&kube, serde_json::json!({
        "metadata": {"name": user},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}]})).await;
    let toxiproxy = Toxiproxy::start(&platform).await;
    let through = toxiproxy
        .proxy("apiserver", &format!("127.0.0.1:{}", cluster.port))
        .await;
    let kubeconfig = cluster.user_kubeconfig(user, &through);
    let kubeconfig = kubeconfig.display().to_string();
    let mut controller = SourceController::start_with_env(
        &platform,
        ns,
        QUICK_RETRIES,
        &[("KUBECONFIG", kubeconfig.as_str())],
    );
    let sources: Sources<OCIRepository> = Sources::new(&kube, ns, &controller);
    let repo = format!("private-cluster-{}/app", std::process::id());
    let push = async |version| push_version(platform.registry(), &repo, version, 0).await;
    let spec = serde_json::json!({"url": format!("oci://{}/{repo}", platform.registry()), "interval": "1h", "insecure": true});
    let v1 = push(1).await;
    sources.create("app", spec.clone()).await;
    sources.wait_until("app", "v1", |o| revision(o) == v1).await;
    let mut recoveries = Vec::new();

    // 1. The API server killed while a reconcile is under way, and started again.
    let v2 = push(2).await;
    ask_reconcile(&sources.api, "app").await;
    cluster.kill_apiserver();
    cluster.start_apiserver();
    let back = Instant::now();
    sources
        .wait_until("app", "v2 after the API server restarted", |o| {
            revision(o) == v2
        })
        .await;
    recoveries.push(("kube-apiserver restart", back.elapsed()));

    // 2. etcd killed, down for 3 s, started again.
    let v3 = push(3).await;
    ask_reconcile(&sources.api, "app").await;
    cluster.kill_etcd();
    tokio::time::sleep(Duration::from_secs(3)).await;
    cluster.start_etcd();
    let back = Instant::now();
    sources
        .wait_until("app", "v3 after etcd restarted", |o| revision(o) == v3)
        .await;
    recoveries.push(("etcd restart", back.elapsed()));

    // 3. Cut off while objects change and etcd's history is compacted past what it saw.
    let seen = sources
        .api
        .get("app")
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    toxiproxy.set_enabled("apiserver", false).await;
    let v4 = push(4).await;
    ask_reconcile(&sources.api, "app").await;
    sources.create("late", spec.clone()).await;
    cluster.compact().await;
    // The expiry is real: a watch from what the controller saw last is Gone.
    let gone = match sources.api.watch(&WatchParams::default(), &seen).await {
        Ok(stream) => {
            use futures::StreamExt;
            let mut stream = Box::pin(stream);
            match stream.next().await {
                Some(Ok(WatchEvent::Error(e))) => e.code,
                Some(Err(kube::Error::Api(e))) => e.code,
                other => panic!("a watch from a compacted revision: {other:?}"),
            }
        }
        Err(kube::Error::Api(e)) => e.code,
        Err(e) => panic!("watch: {e}"),
    };
    assert_eq!(
        gone, 410,
        "a watch from resourceVersion {seen} after compaction"
    );
    toxiproxy.set_enabled("apiserver", true).await;
    let back = Instant::now();
    sources
        .wait_until("app", "v4 after the relist", |o| revision(o) == v4)
        .await;
    sources
        .wait_until("late", "created while cut off", |o| revision(o) == v4)
        .await;
    recoveries.push(("watch expired (410), relist", back.elapsed()));

    // 4. Priority and fairness. The controller's user shares a priority level of no seats of
    // its own (one request at a time, the rest rejected with 429) with a noisy neighbour that
    // keeps it busy with large lists.
    let level = "driftless-throttled";
    let _: PriorityLevelConfiguration = create_cluster_scoped(
        &kube,
        serde_json::json!({
        "metadata": {"name": level},
        "spec": {"type": "Limited", "limited": {"nominalConcurrencyShares": 0, "lendablePercent": 0,
                 "borrowingLimitPercent": 0, "limitResponse": {"type": "Reject"}}}}),
    )
    .await;
    let neighbour = "noisy-neighbour";
    for (schema, who) in [(level, user), (neighbour, neighbour)] {
        let _: FlowSchema = create_cluster_scoped(&kube, serde_json::json!({
            "metadata": {"name": schema},
            "spec": {"matchingPrecedence": 100, "priorityLevelConfiguration": {"name": level},
                     "rules": [{"subjects": [{"kind": "User", "user": {"name": who}}],
                                "resourceRules": [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"],
                                                   "namespaces": ["*"], "clusterScope": true}],
                                "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}]}]}})).await;
    }
    let _: ClusterRoleBinding = create_cluster_scoped(&kube, serde_json::json!({
        "metadata": {"name": neighbour},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": neighbour}]})).await;
    let noise: Api<ConfigMap> = Api::namespaced(kube.clone(), ns);
    let filler = "x".repeat(512 << 10);
    for i in 0..32 {
        let cm =
            serde_json::json!({"metadata": {"name": format!("noise-{i}")}, "data": {"x": filler}});
        noise
            .create(&Default::default(), &serde_json::from_value(cm).unwrap())
            .await
            .unwrap();
    }
    let neighbour_config =
        cluster.user_kubeconfig(neighbour, &format!("127.0.0.1:{}", cluster.port));
    let noisy = support::client_of(&neighbour_config).await;
    let quiet = Arc::new(AtomicBool::new(false));
    let hammers: Vec<_> = (0..3)
        .map(|_| {
            let (api, quiet) = (
                Api::<ConfigMap>::namespaced(noisy.clone(), ns),
                quiet.clone(),
            );
            tokio::spawn(async move {
                while !quiet.load(Ordering::Relaxed) {
                    let _ = api.list(&Default::default()).await;
                }
            })
        })
        .collect();
    let rejected_for = async |schema: &str| -> f64 {
        cluster
            .metrics()
            .await
            .lines()
            .filter(|l| l.starts_with("apiserver_flowcontrol_rejected_requests_total"))
            .filter(|l| l.contains(&format!("flow_schema=\"{schema}\"")))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let v5 = push(5).await;
    ask_reconcile(&sources.api, "app").await;
    let rejected = support::wait::poll(
        "429s for the controller's requests",
        Duration::from_secs(60),
        async || {
            let n = rejected_for(level).await;
            (n > 0.0).then_some(n)
        },
    )
    .await;
    // Throttled a while longer: retries go on meeting 429s.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(
        controller.is_running(),
        "the controller died under 429s:\n{}",
        controller.log_text()
    );
    let rejected = rejected.max(rejected_for(level).await);
    quiet.store(true, Ordering::Relaxed);
    for hammer in hammers {
        hammer.await.unwrap();
    }
    let schemas: Api<FlowSchema> = Api::all(kube.clone());
    for schema in [level, neighbour] {
        schemas
            .delete(schema, &DeleteParams::default())
            .await
            .unwrap();
    }
    let back = Instant::now();
    let done = sources
        .wait_until("app", "v5 once no longer throttled", |o| revision(o) == v5)
        .await;
    recoveries.push(("priority and fairness 429s", back.elapsed()));
    assert!(controller.is_running());
    let a = artifact(&done).unwrap();
    assert_eq!(sha256(&sources.download(&done)), a.digest);
    eprintln!(
        "recovery once the fault cleared: {recoveries:?}; {rejected} requests rejected with 429"
    );
    for (what, took) in recoveries {
        assert!(took < Duration::from_secs(60), "{what}: {took:?}");
    }
}

/// One round of the soak (`make soak` runs many): every network fault (registry, object store,
/// API server, a registry's 429) and `kill -9` of each controller mid-work, with the soak's
/// invariants checked throughout (`support::soak`).
#[tokio::test(flavor = "multi_thread")]
async fn one_round_of_every_fault_breaks_no_invariant() {
    let platform = support::platform();
    let kube = platform.client().await;
    let mut soak = Soak::start(&platform, &kube).await;
    let options = SoakOptions {
        hold: Duration::from_secs(3),
        long_outage: None,
        kills_per_round: 2,
    };
    for fault in Fault::round(options.kills_per_round) {
        soak.inject(fault, &options).await;
    }
    let logs = soak.logs();
    let report = soak.finish().await;
    eprintln!("{}", report.table());
    assert!(
        report.violations.is_empty(),
        "invariants broken: {:#?}\n{logs}",
        report.violations
    );
    assert_eq!(
        report.injected.values().sum::<usize>(),
        Fault::round(options.kills_per_round).len()
    );
    assert!(report.downloads > 0, "the consumer downloaded nothing");
    assert!(report.new_artifact_events > 0, "no NewArtifact event seen");
}
