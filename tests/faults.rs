//! Faults (issue 23, the disk): the source-controller's storage on a small file system of its
//! own (a tmpfs the test mounts, as root), filled up by an artifact that does not fit, then made
//! read-only. Each time: a condition and a Warning event naming the cause, the last good
//! artifact still served whole, no half-written file left, and recovery once space (or write
//! access) is back.

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

use driftless::api::{ConditionStatus, OCIRepository};
use support::controller::SourceController;
use support::oci::{FLUX_LAYER, client, flux_layer, push_flux_artifact};
use support::source::{Sources, artifact, condition, files, revision, untar};

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

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
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
