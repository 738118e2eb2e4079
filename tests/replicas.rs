//! Every replica serves, and storage keeps one copy per content: source-controller replicas on
//! the real API server and registry, with a consumer downloading throughout a leader kill and a
//! rolling restart; many objects on one artifact; kill -9 in the middle of writes.

mod support;

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::sha256;

use driftless::api::{Artifact, ConditionStatus, OCIRepository};
use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use serde_json::json;
use sha2::{Digest, Sha256};
use support::controller::{ELECTION, SourceController, source_lease_holder, try_get};
use support::oci::{FLUX_LAYER, client, flux_layer, hex_lines, push_flux_artifact};
use support::wait::poll;

const WAIT: Duration = Duration::from_secs(90);

fn ready(o: &OCIRepository) -> bool {
    o.status.as_ref().is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == ConditionStatus::True)
    })
}

fn artifact(o: &OCIRepository) -> Option<Artifact> {
    o.status.as_ref()?.artifact.clone()
}

/// `app-<i>` on `<ns>/app-<i % distinct>`, each repository holding its own content.
async fn create_objects(
    platform: &support::Platform,
    api: &Api<OCIRepository>,
    ns: &str,
    n: usize,
    distinct: usize,
) {
    let registry = client(platform.registry());
    for k in 0..distinct {
        // Content that compresses little (about 280 KB gzipped), so that sizes on disk mean
        // something and a download streams in many chunks.
        let content = hex_lines(&format!("{ns} {k}"), 8000);
        push_flux_artifact(
            &registry,
            &format!("{ns}/app-{k}"),
            "latest",
            flux_layer(&[("manifest.yaml", &content)]),
            FLUX_LAYER,
            &[],
        )
        .await;
    }
    let objects = (0..n).map(|i| {
        serde_json::from_value::<OCIRepository>(serde_json::json!({
            "apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "OCIRepository",
            "metadata": {"name": format!("app-{i}")},
            "spec": {
                "url": format!("oci://{}/{ns}/app-{}", platform.registry(), i % distinct),
                "interval": "60m", "insecure": true,
            },
        }))
        .unwrap()
    });
    support::create_all(api, objects).await;
}

/// Every object's artifact once all `n` are Ready, by name.
async fn ready_artifacts(api: &Api<OCIRepository>, n: usize) -> BTreeMap<String, Artifact> {
    poll("every object Ready", WAIT, async || {
        let list = api.list(&ListParams::default()).await.ok()?;
        let ready: BTreeMap<_, _> = list
            .items
            .iter()
            .filter(|o| ready(o))
            .filter_map(|o| Some((o.metadata.name.clone()?, artifact(o)?)))
            .collect();
        (ready.len() == n).then_some(ready)
    })
    .await
}

/// One replica as a Service endpoint: its readiness and its artifact server.
#[derive(Debug, Clone, Copy)]
struct Endpoint {
    health: u16,
    storage: u16,
}

fn endpoint(c: &SourceController) -> Endpoint {
    Endpoint {
        health: c.health_port(),
        storage: c.storage_port,
    }
}

fn is_ready(e: Endpoint) -> bool {
    matches!(try_get(e.health, "/readyz"), Ok((200, _)))
}

/// What the consumer saw.
#[derive(Debug, Default)]
struct Tally {
    downloads: u64,
    /// Connections refused or cut by a replica that died, retried on another ready one (as
    /// the Service drops the endpoint and Flux's fetcher retries).
    retried: u64,
    failed: Vec<String>,
    wrong_bytes: Vec<String>,
}

/// Downloads every artifact again and again from the ready replicas, in turn, as consumers
/// behind the Service do, until stopped.
fn consume(
    endpoints: Arc<Mutex<Vec<Endpoint>>>,
    artifacts: Vec<Artifact>,
    stop: Arc<AtomicBool>,
    progress: Arc<AtomicU64>,
) -> std::thread::JoinHandle<Tally> {
    std::thread::spawn(move || {
        let mut tally = Tally::default();
        let mut turn = 0usize;
        while !stop.load(Ordering::Relaxed) {
            for a in &artifacts {
                let path = format!("/{}", a.path);
                let mut outcome = Err("no ready replica".to_string());
                for _attempt in 0..3 {
                    let ready: Vec<Endpoint> = endpoints
                        .lock()
                        .unwrap()
                        .iter()
                        .copied()
                        .filter(|e| is_ready(*e))
                        .collect();
                    let Some(e) = ready.get(turn % ready.len().max(1)).copied() else {
                        outcome = Err("no ready replica".into());
                        break;
                    };
                    turn += 1;
                    outcome = try_get(e.storage, &path);
                    if outcome.is_ok() {
                        break;
                    }
                    tally.retried += 1;
                }
                tally.downloads += 1;
                progress.fetch_add(1, Ordering::Relaxed);
                match outcome {
                    Ok((200, body)) => {
                        let digest = sha256(&body);
                        if digest != a.digest {
                            tally.wrong_bytes.push(format!("{path}: {digest}"));
                        }
                    }
                    Ok((status, _)) => tally.failed.push(format!("{path}: HTTP {status}")),
                    Err(e) => tally.failed.push(format!("{path}: {e}")),
                }
            }
        }
        tally
    })
}

#[tokio::test]
async fn every_replica_serves_through_a_leader_kill_and_a_rolling_restart() {
    let platform = support::platform();
    let kube = platform.client().await;
    support::install_crds(&kube).await;
    let ns = support::TestNamespace::new(&platform, &kube, "replicas").await;
    let api: Api<OCIRepository> = Api::namespaced(kube.clone(), &ns.name);
    let leases: Api<Lease> = Api::namespaced(kube.clone(), &ns.name);
    // Both replicas behind one Service name, as in the chart.
    let service = format!("--storage-adv-addr=source-controller.{}.svc", ns.name);
    let args: Vec<&str> = ELECTION.iter().copied().chain([service.as_str()]).collect();
    const N: usize = 24;

    let mut first = SourceController::start(&platform, &ns.name, &args);
    poll("a Lease holder", WAIT, async || {
        source_lease_holder(&leases).await
    })
    .await;
    create_objects(&platform, &api, &ns.name, N, 6).await;
    let before = ready_artifacts(&api, N).await;
    let mut second = SourceController::start(&platform, &ns.name, &args);
    poll("the follower in step", WAIT, async || {
        second.is_ready().then_some(())
    })
    .await;
    assert_eq!(second.metric("driftless_replica_missing_artifacts"), 0.0);

    let endpoints = Arc::new(Mutex::new(vec![endpoint(&first), endpoint(&second)]));
    let stop = Arc::new(AtomicBool::new(false));
    let progress = Arc::new(AtomicU64::new(0));
    let consumer = consume(
        endpoints.clone(),
        before.values().cloned().collect(),
        stop.clone(),
        progress.clone(),
    );

    // The leader dies outright; the follower serves on and takes the Lease when it expires.
    let killed = source_lease_holder(&leases).await.unwrap();
    first.kill();
    poll("the follower leading", WAIT, async || {
        source_lease_holder(&leases).await.filter(|h| *h != killed)
    })
    .await;

    // Rolling restart, each replica on a fresh volume (an emptyDir): a new replica catches up
    // with the leader before it is ready, then the leader steps down for it.
    let third = SourceController::start(&platform, &ns.name, &args);
    endpoints.lock().unwrap().push(endpoint(&third));
    poll("the replacement in step", WAIT, async || {
        third.is_ready().then_some(())
    })
    .await;
    let leading = source_lease_holder(&leases).await.unwrap();
    second.stop();
    poll("the replacement leading", WAIT, async || {
        source_lease_holder(&leases).await.filter(|h| *h != leading)
    })
    .await;
    let fourth = SourceController::start(&platform, &ns.name, &args);
    endpoints.lock().unwrap().push(endpoint(&fourth));
    poll("the second replacement in step", WAIT, async || {
        fourth.is_ready().then_some(())
    })
    .await;
    // Two more rounds over every artifact with both replacements serving.
    let mark = progress.load(Ordering::Relaxed);
    poll("two more rounds of downloads", WAIT, async || {
        (progress.load(Ordering::Relaxed) >= mark + 2 * N as u64).then_some(())
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    let tally = consumer.join().unwrap();
    eprintln!(
        "consumer: {} downloads, {} retried on another replica",
        tally.downloads, tally.retried
    );
    assert!(tally.downloads >= N as u64, "{tally:?}");
    assert!(
        tally.failed.is_empty(),
        "failed downloads: {:?}",
        tally.failed
    );
    assert!(
        tally.wrong_bytes.is_empty(),
        "bytes that differ from the status: {:?}",
        tally.wrong_bytes
    );
    // The new leaders found every artifact on disk: nothing was pulled or rewritten again.
    let after = ready_artifacts(&api, N).await;
    assert_eq!(before, after);
    for (name, a) in &after {
        let path = format!("/{}", a.path);
        let (status, body) = try_get(fourth.storage_port, &path).unwrap();
        assert_eq!(status, 200, "{name}");
        assert_eq!(sha256(&body), a.digest);
    }

    // A consumer that asks a follower for a file the moment the leader publishes it is served,
    // not sent away: the follower brings a file a status names (or names within 2 s) when it is
    // asked for it. Here the file is asked for before the status can name it.
    let follower = fourth;
    let new_revision = push_flux_artifact(
        &client(platform.registry()),
        &format!("{}/app-0", ns.name),
        "latest",
        flux_layer(&[("manifest.yaml", "a new revision\n")]),
        FLUX_LAYER,
        &[],
    )
    .await;
    let new_path = format!("ocirepository/{}/app-0/{new_revision}.tar.gz", ns.name);
    let stamp = json!({"metadata": {"annotations": {"reconcile.fluxcd.io/requestedAt": "new"}}});
    api.patch("app-0", &PatchParams::default(), &Patch::Merge(&stamp))
        .await
        .unwrap();
    let (status, body) = try_get(follower.storage_port, &format!("/{new_path}")).unwrap();
    assert_eq!(
        status, 200,
        "{new_path} from the follower as soon as it is published"
    );
    let fresh = poll("app-0 on its new revision", WAIT, async || {
        let o = api.get("app-0").await.ok()?;
        artifact(&o).filter(|a| a.revision.ends_with(&new_revision))
    })
    .await;
    assert_eq!(fresh.path, new_path);
    assert_eq!(sha256(&body), fresh.digest);
    let latest = format!("/ocirepository/{}/app-0/latest.tar.gz", ns.name);
    let (status, body) = try_get(follower.storage_port, &latest).unwrap();
    assert_eq!(status, 200);
    assert_eq!(sha256(&body), fresh.digest);
}

/// Regular files under `root`, by inode: (size, link count, paths).
fn files_by_inode(root: &Path) -> HashMap<u64, (u64, u64, Vec<PathBuf>)> {
    let mut files: HashMap<u64, (u64, u64, Vec<PathBuf>)> = HashMap::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue; // removed meanwhile, by the controller running beside
        };
        for entry in entries.flatten() {
            let Ok(m) = std::fs::symlink_metadata(entry.path()) else {
                continue;
            };
            if m.is_dir() {
                dirs.push(entry.path());
            } else if m.is_file() {
                let slot = files.entry(m.ino()).or_insert((m.len(), m.nlink(), vec![]));
                slot.2.push(entry.path());
            }
        }
    }
    files
}

/// Bytes the artifacts take on disk: each distinct file once, by its allocated blocks.
fn disk_bytes(root: &Path) -> u64 {
    let mut seen = std::collections::HashSet::new();
    let mut total = 0;
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let m = std::fs::symlink_metadata(entry.path()).unwrap();
            if m.is_dir() {
                dirs.push(entry.path());
            } else if m.is_file() && seen.insert(m.ino()) {
                total += m.blocks() * 512;
            }
        }
    }
    total
}

fn blobs_dir(storage: &Path) -> PathBuf {
    storage.join(".blobs/sha256")
}

#[tokio::test]
async fn a_hundred_objects_on_one_artifact_store_one_copy() {
    let platform = support::platform();
    let kube = platform.client().await;
    support::install_crds(&kube).await;
    let ns = support::TestNamespace::new(&platform, &kube, "dedup").await;
    let api: Api<OCIRepository> = Api::namespaced(kube.clone(), &ns.name);
    let controller = SourceController::start(
        &platform,
        &ns.name,
        &["--storage-collect-interval=1s", "--concurrent=8"],
    );
    const N: usize = 100;
    create_objects(&platform, &api, &ns.name, N, 1).await;
    let artifacts = ready_artifacts(&api, N).await;
    let size = artifacts["app-0"].size.unwrap() as u64;
    assert!(
        artifacts
            .values()
            .all(|a| a.digest == artifacts["app-0"].digest)
    );

    let with_content: Vec<_> = files_by_inode(&controller.storage)
        .into_values()
        .filter(|(len, _, _)| *len > 0)
        .collect();
    assert_eq!(with_content.len(), 1, "one stored copy: {with_content:?}");
    let (_, links, paths) = &with_content[0];
    assert_eq!(
        *links,
        N as u64 + 1,
        "every object's file and the copy itself"
    );
    assert_eq!(paths.len(), N + 1);
    let used = disk_bytes(&controller.storage);
    eprintln!(
        "{N} objects on one {size}-byte artifact: {used} bytes on disk (one copy per object: {} bytes)",
        size * N as u64
    );
    assert!(used < 2 * size + 64 * 1024, "{used} bytes on disk");
    poll(
        "the metrics measuring the deduplication",
        WAIT,
        async || {
            let saved = controller.metric("driftless_storage_deduplicated_bytes");
            (saved == (size * (N as u64 - 1)) as f64).then_some(())
        },
    )
    .await;
    assert_eq!(
        controller.metric("driftless_storage_stored_bytes"),
        size as f64
    );

    // The copy stays while any object refers to it, and goes after the last one.
    for i in 1..N {
        api.delete(&format!("app-{i}"), &DeleteParams::default())
            .await
            .unwrap();
    }
    poll("99 objects gone", WAIT, async || {
        let left = api.list(&ListParams::default()).await.ok()?.items.len();
        (left == 1).then_some(())
    })
    .await;
    poll("storage of the deleted objects removed", WAIT, async || {
        let dirs = std::fs::read_dir(
            controller
                .storage
                .join(format!("ocirepository/{}", ns.name)),
        )
        .ok()?
        .count();
        (dirs == 1).then_some(())
    })
    .await;
    let copy = blobs_dir(&controller.storage)
        .join(artifacts["app-0"].digest.trim_start_matches("sha256:"));
    poll("a collection pass after the deletions", WAIT, async || {
        (controller.metric("driftless_storage_deduplicated_bytes") == 0.0).then_some(())
    })
    .await;
    assert!(copy.exists(), "the copy app-0 still refers to is kept");
    let path = format!("/{}", artifacts["app-0"].path);
    assert_eq!(try_get(controller.storage_port, &path).unwrap().0, 200);
    api.delete("app-0", &DeleteParams::default()).await.unwrap();
    poll(
        "the last reference gone and the copy collected",
        WAIT,
        async || (!copy.exists()).then_some(()),
    )
    .await;
    assert_eq!(
        std::fs::read_dir(blobs_dir(&controller.storage))
            .unwrap()
            .count(),
        0
    );
}

/// What a crash may leave is never visible: every artifact file under an object is a complete
/// stored copy (its content's digest is the copy's name), and `latest.tar.gz` resolves.
fn assert_no_half_visible_file(storage: &Path) {
    let blobs = blobs_dir(storage);
    let names: HashMap<u64, String> = std::fs::read_dir(&blobs)
        .unwrap()
        .flatten()
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .map(|e| {
            (
                e.metadata().unwrap().ino(),
                e.file_name().to_string_lossy().into_owned(),
            )
        })
        .collect();
    for (ino, (len, _, paths)) in files_by_inode(&storage.join("ocirepository")) {
        let visible: Vec<_> = paths
            .iter()
            .filter(|p| {
                let name = p.file_name().unwrap().to_string_lossy();
                !name.starts_with('.') && !name.ends_with(".lock")
            })
            .collect();
        if visible.is_empty() {
            continue;
        }
        let name = names
            .get(&ino)
            .unwrap_or_else(|| panic!("{visible:?} ({len} bytes) is no stored copy"));
        let Ok(content) = std::fs::read(visible[0]) else {
            continue; // superseded and collected meanwhile
        };
        assert_eq!(hex::encode(Sha256::digest(&content)), *name, "{visible:?}");
    }
    for dir in std::fs::read_dir(storage.join("ocirepository"))
        .unwrap()
        .flatten()
    {
        for object in std::fs::read_dir(dir.path()).unwrap().flatten() {
            let latest = object.path().join("latest.tar.gz");
            if std::fs::symlink_metadata(&latest).is_ok() {
                assert!(std::fs::metadata(&latest).is_ok(), "{latest:?} dangles");
            }
        }
    }
}

/// No temp file anywhere and no stored copy that nothing refers to.
fn swept(storage: &Path) -> bool {
    files_by_inode(storage)
        .into_values()
        .all(|(_, links, paths)| {
            let no_temp = paths.iter().all(|p| {
                !p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .contains(".driftless-tmp-")
            });
            let referenced = links > 1 || !paths.iter().any(|p| p.starts_with(blobs_dir(storage)));
            no_temp && referenced
        })
}

/// How many objects have handled the reconcile request `stamp`.
async fn handled(api: &Api<OCIRepository>, stamp: &str) -> usize {
    let list = api.list(&ListParams::default()).await.unwrap();
    list.items
        .iter()
        .filter(|o| {
            o.status
                .as_ref()
                .and_then(|s| s.last_handled_reconcile_at.as_deref())
                == Some(stamp)
        })
        .count()
}

/// Every one of the `n` objects Ready after handling the reconcile request `stamp`.
async fn all_handled(api: &Api<OCIRepository>, n: usize, stamp: &str) -> Vec<Artifact> {
    poll("every object handled the request", WAIT, async || {
        let list = api.list(&ListParams::default()).await.ok()?;
        let artifacts: Vec<Artifact> = list
            .items
            .iter()
            .filter(|o| {
                ready(o)
                    && o.status
                        .as_ref()
                        .and_then(|s| s.last_handled_reconcile_at.as_deref())
                        == Some(stamp)
            })
            .filter_map(artifact)
            .collect();
        (artifacts.len() == n).then_some(artifacts)
    })
    .await
}

#[tokio::test]
async fn killed_mid_write_the_store_shows_no_half_file_and_keeps_no_orphan() {
    const ARGS: &[&str] = &["--concurrent=4", "--storage-collect-interval=1s"];
    let platform = support::platform();
    let kube = platform.client().await;
    support::install_crds(&kube).await;
    let ns = support::TestNamespace::new(&platform, &kube, "crash").await;
    let api: Api<OCIRepository> = Api::namespaced(kube.clone(), &ns.name);
    const N: usize = 12;
    // The test owns the volume: each controller process is replaced by the next over it.
    let volume = tempfile::tempdir().unwrap();
    let storage = volume.path().join("storage");
    let mut controller = SourceController::start_with_storage(&platform, &ns.name, &storage, ARGS);
    create_objects(&platform, &api, &ns.name, N, N).await;
    ready_artifacts(&api, N).await;
    let registry = client(platform.registry());
    let mut handled_at_kill = Vec::new();
    for round in 0..8u64 {
        for k in 0..N {
            let content = format!("round {round} of {k}\n").repeat(2000);
            push_flux_artifact(
                &registry,
                &format!("{}/app-{k}", ns.name),
                "latest",
                flux_layer(&[("manifest.yaml", &content)]),
                FLUX_LAYER,
                &[],
            )
            .await;
        }
        let stamp = format!("round-{round}");
        for k in 0..N {
            let patch = serde_json::json!({"metadata": {"annotations": {"reconcile.fluxcd.io/requestedAt": stamp}}});
            api.patch(
                &format!("app-{k}"),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
            .unwrap();
        }
        // Kill points spread over the rounds: from before the first write to after the last.
        tokio::time::sleep(Duration::from_millis(round * 60)).await;
        controller.kill();
        handled_at_kill.push(handled(&api, &stamp).await);
        assert_no_half_visible_file(&storage);
        controller = SourceController::start_with_storage(&platform, &ns.name, &storage, ARGS);
        all_handled(&api, N, &stamp).await;
        assert_no_half_visible_file(&storage);
        poll(
            "no temp file and no unreferenced copy after a collection pass",
            WAIT,
            async || swept(&storage).then_some(()),
        )
        .await;
    }
    eprintln!("objects done with their round when it was killed: {handled_at_kill:?} of {N}");
    assert!(
        handled_at_kill.iter().any(|h| *h < N),
        "some kill landed before every write of its round was done: {handled_at_kill:?}"
    );
    // In the end every object has its newest content, intact.
    for a in all_handled(&api, N, "round-7").await {
        let (status, body) = try_get(controller.storage_port, &format!("/{}", a.path)).unwrap();
        assert_eq!(status, 200);
        assert_eq!(sha256(&body), a.digest);
    }
}
