//! The drop-in, proven with Flux's own controllers (built from their Go modules by
//! `hack/testbin.sh`): Flux's kustomize-controller applies what driftless's source-controller
//! serves.

mod support;

use std::process::Command;
use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::json;

use driftless::api::{ConditionStatus, Kustomization, OCIRepository};
use support::controller::{SourceController, free_port};
use support::oci::{FLUX_LAYER, client, flux_layer, push_flux_artifact};
use support::peers::{FluxController, ensure_built, flux, push_demo_chart};
use support::source::{Sources, tail};
use support::wait::{Wait, condition_of};

/// Waits on Kustomizations reconciled by `log`'s controller, 90 s at most.
fn kustomizations<'a>(
    api: &'a Api<Kustomization>,
    log: impl Fn() -> String + 'a,
) -> Wait<'a, Kustomization> {
    Wait::new(api, Duration::from_secs(90)).log(log)
}

#[tokio::test(flavor = "multi_thread")]
async fn flux_kustomize_controller_applies_what_driftless_serves() {
    let platform = support::platform();
    let kube = platform.client().await;
    support::install_crds(&kube).await;
    support::install_flux_source_crds(&kube).await;
    let ns = support::TestNamespace::new(&platform, &kube, "peer-kc").await;
    let source = SourceController::start(&platform, &ns.name, &[]);
    let kc = FluxController::start(&platform, &ns.name, "kustomize-controller", &[]);

    let repo = format!("{}/app", ns.name);
    let origin = "main@sha1:0123456789abcdef0123456789abcdef01234567";
    let annotations = [
        ("org.opencontainers.image.source", "https://example.com/app"),
        ("org.opencontainers.image.revision", origin),
    ];
    let digest = push_flux_artifact(
        &client(platform.registry()),
        &repo,
        "latest",
        flux_layer(&[("cm.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: from-driftless\ndata:\n  key: \"v1\"\n")]),
        FLUX_LAYER,
        &annotations,
    )
    .await;
    let sources: Sources<OCIRepository> = Sources::new(&kube, &ns.name, &source);
    sources
        .create("app", json!({"url": format!("oci://{}/{repo}", platform.registry()), "interval": "10m", "insecure": true}))
        .await;
    let revision = format!("latest@{digest}");
    sources
        .wait_until("app", "Ready", |o| support::source::revision(o) == revision)
        .await;

    let ks: Api<Kustomization> = Api::namespaced(kube.clone(), &ns.name);
    let obj: Kustomization = serde_json::from_value(json!({
        "apiVersion": "kustomize.toolkit.fluxcd.io/v1", "kind": "Kustomization",
        "metadata": {"name": "app"},
        "spec": {"interval": "10m", "prune": true, "targetNamespace": ns.name,
                 "sourceRef": {"kind": "OCIRepository", "name": "app"}},
    }))
    .unwrap();
    ks.create(&PostParams::default(), &obj).await.unwrap();
    // Flux writes Ready and the applied revision in separate status patches.
    let applied = kustomizations(&ks, || tail(&kc.log_text(), 30))
        .until("app", "Ready with an applied revision", |o| {
            condition_of(o, "Ready").is_some_and(|c| c.status == ConditionStatus::True)
                && o.status
                    .as_ref()
                    .is_some_and(|s| s.last_applied_revision.is_some())
        })
        .await
        .status
        .unwrap_or_default();
    assert_eq!(
        applied.last_applied_revision.as_deref(),
        Some(revision.as_str())
    );
    assert_eq!(
        applied.last_applied_origin_revision.as_deref(),
        Some(origin),
        "read from our artifact metadata"
    );
    let ids: Vec<String> = applied
        .inventory
        .unwrap_or_default()
        .entries
        .into_iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(ids, [format!("{}_from-driftless__ConfigMap", ns.name)]);
    let cm = Api::<ConfigMap>::namespaced(kube.clone(), &ns.name)
        .get("from-driftless")
        .await
        .unwrap();
    assert_eq!(
        cm.data.unwrap_or_default().get("key").map(String::as_str),
        Some("v1")
    );

    // The same with a Bucket reconciled by driftless (SeaweedFS), which the flux CLI lists.
    let store =
        support::objectstore::ObjectStore::new(&platform, support::objectstore::Provider::S3);
    let bucket = format!("peer-{}", ns.name);
    store.mkbucket(&bucket);
    let bucket_cm =
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: from-bucket\ndata:\n  key: \"b1\"\n";
    store.put(&bucket, "cm.yaml", bucket_cm.as_bytes());
    let secret: k8s_openapi::api::core::v1::Secret = serde_json::from_value(json!({
        "metadata": {"name": "s3"},
        "stringData": support::objectstore::Provider::S3.secret(&platform).unwrap(),
    }))
    .unwrap();
    Api::<k8s_openapi::api::core::v1::Secret>::namespaced(kube.clone(), &ns.name)
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    let buckets: Sources<driftless::api::Bucket> = Sources::new(&kube, &ns.name, &source);
    buckets
        .create("manifests", json!({"bucketName": bucket, "endpoint": support::objectstore::Provider::S3.address(&platform),
                                     "insecure": true, "interval": "1h", "secretRef": {"name": "s3"}}))
        .await;
    let b = buckets.wait_ready("manifests").await;
    let bucket_revision = support::source::revision(&b);
    let obj: Kustomization = serde_json::from_value(json!({
        "apiVersion": "kustomize.toolkit.fluxcd.io/v1", "kind": "Kustomization",
        "metadata": {"name": "from-bucket"},
        "spec": {"interval": "10m", "prune": true, "targetNamespace": ns.name,
                 "sourceRef": {"kind": "Bucket", "name": "manifests"}},
    }))
    .unwrap();
    ks.create(&PostParams::default(), &obj).await.unwrap();
    kustomizations(&ks, || tail(&kc.log_text(), 30))
        .until("from-bucket", "applied from the Bucket", |o| {
            o.status
                .as_ref()
                .and_then(|s| s.last_applied_revision.as_deref())
                == Some(bucket_revision.as_str())
        })
        .await;
    assert!(
        Api::<ConfigMap>::namespaced(kube.clone(), &ns.name)
            .get_opt("from-bucket")
            .await
            .unwrap()
            .is_some()
    );
    let out = flux(&platform, &["get", "sources", "bucket", "-n", &ns.name]);
    let listed = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "flux get sources bucket: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let row = listed
        .lines()
        .find(|l| l.starts_with("manifests"))
        .unwrap_or_else(|| panic!("no row:\n{listed}"));
    assert!(
        row.contains(&bucket_revision[..15]) && row.contains("True"),
        "{row}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn flux_cli_lists_and_reconciles_driftless_sources() {
    let platform = support::platform();
    let kube = platform.client().await;
    support::install_crds(&kube).await;
    let ns = support::TestNamespace::new(&platform, &kube, "peer-cli").await;
    let source = SourceController::start(&platform, &ns.name, &[]);
    let repo = format!("{}/app", ns.name);
    let registry = client(platform.registry());
    let first = push_flux_artifact(
        &registry,
        &repo,
        "latest",
        flux_layer(&[("a.yaml", "a: 1\n")]),
        FLUX_LAYER,
        &[],
    )
    .await;
    let sources: Sources<OCIRepository> = Sources::new(&kube, &ns.name, &source);
    sources
        .create("app", json!({"url": format!("oci://{}/{repo}", platform.registry()), "interval": "1h", "insecure": true}))
        .await;
    let revision = format!("latest@{first}");
    sources
        .wait_until("app", "Ready", |o| support::source::revision(o) == revision)
        .await;

    let out = flux(&platform, &["get", "sources", "oci", "-n", &ns.name]);
    let listed = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "flux get sources oci: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let row = listed
        .lines()
        .find(|l| l.starts_with("app"))
        .unwrap_or_else(|| panic!("no row for app:\n{listed}"));
    // flux shortens digests to 8 hex digits in the table.
    let short = format!("latest@{}", &first[..15]);
    assert!(row.contains(&short) && row.contains("True"), "{row}");

    // `flux reconcile source oci` sets reconcile.fluxcd.io/requestedAt and waits until the
    // request is handled: the new tag is pulled at once, well before the 1h interval.
    let second = push_flux_artifact(
        &registry,
        &repo,
        "latest",
        flux_layer(&[("a.yaml", "a: 2\n")]),
        FLUX_LAYER,
        &[],
    )
    .await;
    let out = flux(
        &platform,
        &[
            "reconcile",
            "source",
            "oci",
            "app",
            "-n",
            &ns.name,
            "--timeout=60s",
        ],
    );
    assert!(
        out.status.success(),
        "flux reconcile source oci: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let obj = sources.api.get("app").await.unwrap();
    assert_eq!(support::source::revision(&obj), format!("latest@{second}"));
}

/// The files of a directory, relative path → content.
fn tree(dir: &std::path::Path) -> std::collections::BTreeMap<String, String> {
    let mut out = std::collections::BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let rel = path
                    .strip_prefix(dir)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                out.insert(rel, std::fs::read_to_string(&path).unwrap());
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn artifacts_cross_between_the_flux_cli_and_driftless() {
    let platform = support::platform();
    let kube = platform.client().await;
    support::install_crds(&kube).await;
    let ns = support::TestNamespace::new(&platform, &kube, "peer-push").await;
    let source = SourceController::start(&platform, &ns.name, &[]);
    let work = tempfile::tempdir().unwrap();
    let manifests = work.path().join("manifests");
    std::fs::create_dir_all(manifests.join("apps")).unwrap();
    std::fs::write(manifests.join("apps/cm.yaml"), "kind: ConfigMap\n").unwrap();
    std::fs::write(manifests.join("ns.yaml"), "kind: Namespace\n").unwrap();
    let expected = tree(&manifests);

    // Pushed by `flux push artifact`, reconciled and served by driftless with the same files.
    let by_flux = format!("oci://{}/{}/by-flux:v1", platform.registry(), ns.name);
    let dir = manifests.display().to_string();
    let out = flux(
        &platform,
        &[
            "push",
            "artifact",
            &by_flux,
            "--path",
            &dir,
            "--source",
            "https://example.com/app",
            "--revision",
            "main@sha1:1111111111111111111111111111111111111111",
            "--insecure-registry",
        ],
    );
    assert!(
        out.status.success(),
        "flux push artifact: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sources: Sources<OCIRepository> = Sources::new(&kube, &ns.name, &source);
    let url = by_flux.rsplit_once(':').unwrap().0.to_string();
    sources
        .create(
            "by-flux",
            json!({"url": url, "interval": "1h", "insecure": true, "ref": {"tag": "v1"}}),
        )
        .await;
    let obj = sources.wait_ready("by-flux").await;
    let served: std::collections::BTreeMap<String, String> =
        support::source::untar(&sources.download(&obj));
    assert_eq!(served, expected, "driftless serves what flux pushed");
    let meta = support::source::artifact(&obj)
        .unwrap()
        .metadata
        .clone()
        .unwrap_or_default();
    assert_eq!(
        meta.get("org.opencontainers.image.revision")
            .map(String::as_str),
        Some("main@sha1:1111111111111111111111111111111111111111")
    );

    // Pushed by `driftless artifact push`, pulled by `flux pull artifact` with the same files.
    let by_driftless = format!("oci://{}/{}/by-driftless:v1", platform.registry(), ns.name);
    let pushed = Command::new(env!("CARGO_BIN_EXE_driftless"))
        .args([
            "artifact",
            "push",
            &by_driftless,
            "--path",
            &dir,
            "--source",
            "https://example.com/app",
            "--revision",
            "main@sha1:2222",
            "--insecure-registry",
        ])
        .env("HOME", work.path())
        .output()
        .unwrap();
    assert!(
        pushed.status.success(),
        "driftless artifact push: {}",
        String::from_utf8_lossy(&pushed.stderr)
    );
    let pulled = work.path().join("pulled");
    std::fs::create_dir_all(&pulled).unwrap();
    let out = flux(
        &platform,
        &[
            "pull",
            "artifact",
            &by_driftless,
            "--output",
            &pulled.display().to_string(),
            "--insecure-registry",
        ],
    );
    assert!(
        out.status.success(),
        "flux pull artifact: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(tree(&pulled), expected, "flux pulls what driftless pushed");
}

/// The same OCIRepository, reconciled first by Flux's source-controller (whose artifact
/// driftless's apply-controller applies) and then by driftless's: same revision, same metadata,
/// same storage path, a tarball with the same files.
#[tokio::test(flavor = "multi_thread")]
async fn flux_and_driftless_source_controllers_agree() {
    let platform = support::platform();
    let kube = platform.client().await;
    support::install_crds(&kube).await;
    support::install_flux_source_crds(&kube).await;
    let ns = support::TestNamespace::new(&platform, &kube, "peer-sc").await;
    let repo = format!("{}/app", ns.name);
    let annotations = [(
        "org.opencontainers.image.revision",
        "main@sha1:3333333333333333333333333333333333333333",
    )];
    let cm =
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: from-flux\ndata:\n  key: \"v1\"\n";
    let files = [("deploy/cm.yaml", cm), ("README.md", "docs\n")];
    push_flux_artifact(
        &client(platform.registry()),
        &repo,
        "latest",
        flux_layer(&files),
        FLUX_LAYER,
        &annotations,
    )
    .await;

    let storage = tempfile::tempdir().unwrap();
    let port = free_port();
    let storage_flags = [
        format!("--storage-path={}", storage.path().display()),
        format!("--storage-addr=127.0.0.1:{port}"),
        format!("--storage-adv-addr=127.0.0.1:{port}"),
    ];
    let flux_source =
        FluxController::start(&platform, &ns.name, "source-controller", &storage_flags);
    let api: Api<OCIRepository> = Api::namespaced(kube.clone(), &ns.name);
    let obj: OCIRepository = serde_json::from_value(json!({
        "apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "OCIRepository",
        "metadata": {"name": "app"},
        "spec": {"url": format!("oci://{}/{repo}", platform.registry()), "interval": "1h", "insecure": true},
    }))
    .unwrap();
    api.create(&PostParams::default(), &obj).await.unwrap();
    let by_flux = wait_for(&api, &format!("127.0.0.1:{port}/"), || {
        tail(&flux_source.log_text(), 30)
    })
    .await;
    let flux_tarball = fetch(&by_flux.url).await;

    // driftless's apply-controller consumes the artifact Flux's source-controller serves.
    let apply = support::controller::ApplyController::start(&platform, &ns.name, &[]);
    let ks: Api<Kustomization> = Api::namespaced(kube.clone(), &ns.name);
    let k: Kustomization = serde_json::from_value(json!({
        "apiVersion": "kustomize.toolkit.fluxcd.io/v1", "kind": "Kustomization", "metadata": {"name": "app"},
        "spec": {"interval": "1h", "prune": true, "path": "./deploy", "targetNamespace": ns.name,
                 "sourceRef": {"kind": "OCIRepository", "name": "app"}},
    }))
    .unwrap();
    ks.create(&PostParams::default(), &k).await.unwrap();
    Wait::new(&ks, Duration::from_secs(60))
        .log(|| tail(&apply.log_text(), 20))
        .until("app", "applied at Flux's revision", |o| {
            o.status
                .as_ref()
                .and_then(|s| s.last_applied_revision.as_deref())
                == Some(by_flux.revision.as_str())
        })
        .await;
    let applied = Api::<ConfigMap>::namespaced(kube.clone(), &ns.name)
        .get_opt("from-flux")
        .await
        .unwrap();
    assert!(
        applied.is_some(),
        "the ConfigMap from Flux's artifact is applied"
    );
    drop(apply);

    // Flux's source-controller goes; driftless's takes the same object over.
    drop(flux_source);
    let source = SourceController::start(&platform, &ns.name, &[]);
    let patch = json!({"metadata": {"annotations": {"reconcile.fluxcd.io/requestedAt": "driftless-takes-over"}}});
    api.patch(
        "app",
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(&patch),
    )
    .await
    .unwrap();
    let ours = format!("127.0.0.1:{}/", source.storage_port);
    let by_driftless = wait_for(&api, &ours, || tail(&source.log_text(), 30)).await;
    assert_eq!(by_driftless.revision, by_flux.revision, "same revision");
    assert_eq!(by_driftless.metadata, by_flux.metadata, "same metadata");
    assert_eq!(by_driftless.path, by_flux.path, "same storage path");
    let tarball = support::source::untar(&fetch(&by_driftless.url).await);
    assert_eq!(
        tarball,
        support::source::untar(&flux_tarball),
        "same files, same contents"
    );
}

/// Waits until the object is Ready with an artifact served from `host`.
async fn wait_for(
    api: &Api<OCIRepository>,
    host: &str,
    log: impl Fn() -> String,
) -> driftless::api::Artifact {
    let served_from_host = |o: &OCIRepository| {
        let status = o.status.clone().unwrap_or_default();
        let ready = condition_of(o, "Ready").is_some_and(|c| c.status == ConditionStatus::True);
        status.artifact.filter(|a| ready && a.url.contains(host))
    };
    let obj = Wait::new(api, Duration::from_secs(90))
        .log(log)
        .until("app", &format!("Ready with an artifact from {host}"), |o| {
            served_from_host(o).is_some()
        })
        .await;
    served_from_host(&obj).expect("checked by the wait")
}

async fn fetch(url: &str) -> Vec<u8> {
    reqwest::get(url)
        .await
        .unwrap()
        .error_for_status()
        .unwrap()
        .bytes()
        .await
        .unwrap()
        .to_vec()
}

/// Every entry of a gzip tarball as Flux's consumers see it: path, type, mode, owner, time and
/// content.
/// Path, entry type, mode, uid, gid, mtime, content.
type TarEntry = (String, String, u32, u64, u64, u64, Vec<u8>);

fn tar_entries(gz: &[u8]) -> Vec<TarEntry> {
    use std::io::Read;
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(gz));
    archive
        .entries()
        .unwrap()
        .map(|e| {
            let mut e = e.unwrap();
            let h = e.header().clone();
            let mut content = Vec::new();
            e.read_to_end(&mut content).unwrap();
            (
                e.path().unwrap().to_string_lossy().into_owned(),
                format!("{:?}", h.entry_type()),
                h.mode().unwrap(),
                h.uid().unwrap(),
                h.gid().unwrap(),
                h.mtime().unwrap(),
                content,
            )
        })
        .collect()
}

/// The manifest and the (single) layer of a pushed artifact.
async fn manifest_and_layer(registry: &str, repo: &str, tag: &str) -> (serde_json::Value, Vec<u8>) {
    let c = client(registry);
    let fetched = c.get_manifest(repo, tag).await.unwrap();
    let manifest: serde_json::Value = serde_json::from_slice(&fetched.bytes).unwrap();
    let digest = manifest["layers"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let (_, mut stream) = c.get_blob(repo, &digest).await.unwrap();
    let mut layer = Vec::new();
    while let Some(chunk) = futures::StreamExt::next(&mut stream).await {
        layer.extend_from_slice(&chunk.unwrap());
    }
    (manifest, layer)
}

#[tokio::test(flavor = "multi_thread")]
async fn driftless_and_flux_push_the_same_artifact() {
    let platform = support::platform();
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("manifests");
    std::fs::create_dir_all(dir.join("apps/base")).unwrap();
    std::fs::write(dir.join("apps/base/cm.yaml"), "kind: ConfigMap\n").unwrap();
    std::fs::write(dir.join("ns.yaml"), "kind: Namespace\n").unwrap();
    std::fs::write(dir.join("run.sh"), "#!/bin/sh\n").unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.join("run.sh"), std::fs::Permissions::from_mode(0o755))
            .unwrap();
    }
    let registry = platform.registry().to_string();
    let prefix = format!("same-{}", std::process::id());
    let (source, revision) = (
        "https://example.com/app",
        "main@sha1:4444444444444444444444444444444444444444",
    );
    let path = dir.display().to_string();
    let by_flux = format!("oci://{registry}/{prefix}/flux:v1");
    let out = flux(
        &platform,
        &[
            "push",
            "artifact",
            &by_flux,
            "--path",
            &path,
            "--source",
            source,
            "--revision",
            revision,
            "--insecure-registry",
        ],
    );
    assert!(
        out.status.success(),
        "flux push artifact: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let by_driftless = format!("oci://{registry}/{prefix}/driftless:v1");
    let out = Command::new(env!("CARGO_BIN_EXE_driftless"))
        .args([
            "artifact",
            "push",
            &by_driftless,
            "--path",
            &path,
            "--source",
            source,
            "--revision",
            revision,
            "--insecure-registry",
        ])
        .env("HOME", work.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "driftless artifact push: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let (flux_manifest, flux_layer) =
        manifest_and_layer(&registry, &format!("{prefix}/flux"), "v1").await;
    let (our_manifest, our_layer) =
        manifest_and_layer(&registry, &format!("{prefix}/driftless"), "v1").await;
    assert_eq!(
        tar_entries(&our_layer),
        tar_entries(&flux_layer),
        "the same tarball content, entry by entry"
    );
    for field in ["/mediaType", "/config/mediaType", "/layers/0/mediaType"] {
        assert_eq!(
            our_manifest.pointer(field),
            flux_manifest.pointer(field),
            "{field}"
        );
    }
    let keys = |m: &serde_json::Value| {
        m["annotations"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect::<Vec<_>>()
    };
    assert_eq!(
        keys(&our_manifest),
        keys(&flux_manifest),
        "the same annotations"
    );
    // And driftless pulls what flux pushed, file for file.
    let pulled = work.path().join("pulled");
    let out = Command::new(env!("CARGO_BIN_EXE_driftless"))
        .args(["artifact", "pull", &by_flux, "--output"])
        .arg(&pulled)
        .arg("--insecure-registry")
        .env("HOME", work.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "driftless artifact pull: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(tree(&pulled), tree(&dir));
    for key in [
        "org.opencontainers.image.source",
        "org.opencontainers.image.revision",
    ] {
        assert_eq!(
            our_manifest["annotations"][key], flux_manifest["annotations"][key],
            "{key}"
        );
    }
}

/// Flux's source-controller for the objects without `sharding.fluxcd.io/key` and driftless's
/// for those labelled `sharding.fluxcd.io/key=driftless`, in one namespace: the README's
/// adoption set-up. Both stop on drop.
struct SideBySide {
    flux: FluxController,
    flux_host: String,
    _flux_storage: tempfile::TempDir,
    ours: SourceController,
    our_host: String,
}

impl SideBySide {
    fn start(platform: &support::Platform, namespace: &str) -> Self {
        let flux_storage = tempfile::tempdir().unwrap();
        let port = free_port();
        let flux = FluxController::start(
            platform,
            namespace,
            "source-controller",
            &[
                format!("--storage-path={}", flux_storage.path().display()),
                format!("--storage-addr=127.0.0.1:{port}"),
                format!("--storage-adv-addr=127.0.0.1:{port}"),
                "--watch-label-selector=!sharding.fluxcd.io/key".into(),
            ],
        );
        let ours = SourceController::start(
            platform,
            namespace,
            &["--watch-label-selector=sharding.fluxcd.io/key=driftless"],
        );
        SideBySide {
            flux,
            flux_host: format!("127.0.0.1:{port}/"),
            _flux_storage: flux_storage,
            our_host: format!("127.0.0.1:{}/", ours.storage_port),
            ours,
        }
    }
}

/// Incremental adoption with Flux's sharding label, as the README describes it: Flux's
/// source-controller keeps everything without `sharding.fluxcd.io/key`, driftless takes the
/// objects labelled `sharding.fluxcd.io/key=driftless`, and Flux's kustomize-controller applies
/// artifacts from both. Relabelling moves an OCIRepository from one to the other and back with
/// no failed Kustomization on the way; when driftless hands an object back, it removes the
/// storage it leaves behind once Flux has published (Flux never removes its own).
#[tokio::test(flavor = "multi_thread")]
async fn side_by_side_adoption_with_the_sharding_label() {
    use futures::StreamExt;
    let platform = support::platform();
    let kube = platform.client().await;
    support::install_crds(&kube).await;
    support::install_flux_source_crds(&kube).await;
    let ns = support::TestNamespace::new(&platform, &kube, "peer-shard").await;
    let SideBySide {
        flux: flux_source,
        flux_host,
        ours: source,
        our_host,
        ..
    } = SideBySide::start(&platform, &ns.name);
    let kc = FluxController::start(&platform, &ns.name, "kustomize-controller", &[]);

    let api: Api<OCIRepository> = Api::namespaced(kube.clone(), &ns.name);
    let ks: Api<Kustomization> = Api::namespaced(kube.clone(), &ns.name);
    let cm = |v: &str| {
        format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: moved\ndata:\n  key: \"{v}\"\n"
        )
    };
    let repo = format!("{}/app", ns.name);
    let push = |v: String| {
        let (platform, repo) = (&platform, &repo);
        async move {
            push_flux_artifact(
                &client(platform.registry()),
                repo,
                "latest",
                flux_layer(&[("cm.yaml", &v)]),
                FLUX_LAYER,
                &[],
            )
            .await
        }
    };
    push(cm("1")).await;
    let obj: OCIRepository = serde_json::from_value(json!({
        "apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "OCIRepository",
        "metadata": {"name": "app"},
        "spec": {"url": format!("oci://{}/{repo}", platform.registry()), "interval": "1h", "insecure": true},
    }))
    .unwrap();
    api.create(&PostParams::default(), &obj).await.unwrap();
    let by_flux = wait_for(&api, &flux_host, || tail(&flux_source.log_text(), 30)).await;
    let k: Kustomization = serde_json::from_value(json!({
        "apiVersion": "kustomize.toolkit.fluxcd.io/v1", "kind": "Kustomization", "metadata": {"name": "app"},
        "spec": {"interval": "1h", "prune": true, "targetNamespace": ns.name,
                 "sourceRef": {"kind": "OCIRepository", "name": "app"}},
    }))
    .unwrap();
    ks.create(&PostParams::default(), &k).await.unwrap();
    let applied_at = |revision: String| {
        let (ks, kc) = (&ks, &kc);
        async move {
            kustomizations(ks, || tail(&kc.log_text(), 30))
                .until("app", &format!("Ready at {revision}"), |o| {
                    condition_of(o, "Ready").is_some_and(|c| c.status == ConditionStatus::True)
                        && o.status
                            .as_ref()
                            .and_then(|s| s.last_applied_revision.as_deref())
                            == Some(revision.as_str())
                })
                .await
        }
    };
    applied_at(by_flux.revision.clone()).await;

    // From here on, every state of the Kustomization is recorded: none may be a failure.
    let failures = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let recorder = {
        let failures = failures.clone();
        let watch = kube::runtime::watcher(
            ks.clone(),
            kube::runtime::watcher::Config::default().fields("metadata.name=app"),
        );
        tokio::spawn(async move {
            let mut objects = std::pin::pin!(kube::runtime::WatchStreamExt::applied_objects(watch));
            while let Some(Ok(o)) = objects.next().await {
                if let Some(c) =
                    condition_of(&o, "Ready").filter(|c| c.status == ConditionStatus::False)
                {
                    failures
                        .lock()
                        .unwrap()
                        .push(format!("{}: {}", c.reason, c.message));
                }
            }
        })
    };
    let relabel = |value: Option<&str>| {
        let api = &api;
        let patch = json!({"metadata": {"labels": {"sharding.fluxcd.io/key": value}}});
        async move {
            api.patch("app", &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .unwrap();
        }
    };

    // Flux → driftless: driftless publishes the same revision; a new one is applied from it.
    relabel(Some("driftless")).await;
    let by_us = wait_for(&api, &our_host, || tail(&source.log_text(), 30)).await;
    assert_eq!(by_us.revision, by_flux.revision);
    let digest = push(cm("2")).await;
    let patch =
        json!({"metadata": {"annotations": {"reconcile.fluxcd.io/requestedAt": "after-move"}}});
    api.patch("app", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    applied_at(format!("latest@{digest}")).await;
    let ours_dir = source
        .storage
        .join(format!("ocirepository/{}/app", ns.name));
    assert!(ours_dir.is_dir(), "driftless stores the artifact");
    let object_series = format!(
        r#"gotk_reconcile_duration_seconds_count{{kind="OCIRepository",name="app",namespace="{}"}}"#,
        ns.name
    );
    assert!(
        source.metrics().contains(&object_series),
        "driftless exports the object's series while it holds it"
    );

    // driftless → Flux: Flux publishes; driftless's storage for the object is then removed.
    relabel(None).await;
    let back = wait_for(&api, &flux_host, || tail(&flux_source.log_text(), 30)).await;
    assert_eq!(back.revision, format!("latest@{digest}"));
    applied_at(back.revision.clone()).await;
    support::wait::poll(
        "driftless's storage of the handed-back object removed",
        Duration::from_secs(60),
        async || (!ours_dir.exists()).then_some(()),
    )
    .await;
    let metrics = source.metrics();
    assert!(
        !metrics.contains(&object_series),
        "the handed-back object's series are dropped:\n{metrics}"
    );
    let data = Api::<ConfigMap>::namespaced(kube.clone(), &ns.name)
        .get("moved")
        .await
        .unwrap()
        .data
        .unwrap_or_default();
    assert_eq!(data.get("key").map(String::as_str), Some("2"));
    recorder.abort();
    assert!(
        failures.lock().unwrap().is_empty(),
        "the Kustomization failed while its source moved: {:?}",
        failures.lock().unwrap()
    );
}

/// Bucket revisions proven against Flux itself: Flux's source-controller and driftless's
/// reconcile the same bucket (generic S3 on SeaweedFS, and on rclone, whose ETags come
/// unquoted) — nested keys, a `.sourceignore`, `spec.ignore`, a prefix — and agree on
/// `status.artifact.revision` and on the files of the tarball. Azure is not compared: Flux takes
/// the storage account from the endpoint's host name, so it cannot sign requests for Azurite's
/// path-style account (403 AuthorizationFailure); GCS: Flux's client needs Google credentials.
#[tokio::test(flavor = "multi_thread")]
async fn bucket_revisions_match_flux_source_controller() {
    use support::objectstore::{ObjectStore, Provider};
    let platform = support::platform();
    let kube = platform.client().await;
    support::install_crds(&kube).await;
    support::install_flux_source_crds(&kube).await;
    let ns = support::TestNamespace::new(&platform, &kube, "peer-bucket").await;
    let SideBySide {
        flux: flux_source,
        flux_host,
        ours: source,
        our_host,
        ..
    } = SideBySide::start(&platform, &ns.name);
    let api: Api<driftless::api::Bucket> = Api::namespaced(kube.clone(), &ns.name);
    let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(kube.clone(), &ns.name);
    let files: [(&str, &str); 6] = [
        ("app/cm.yaml", "kind: ConfigMap\n"),
        ("app/nested/deep/deploy.yaml", "kind: Deployment\n"),
        ("app/notes.txt", "ignored by .sourceignore\n"),
        ("app/.sourceignore", "*.txt\n"),
        ("app/skip/secret.yaml", "ignored by spec.ignore\n"),
        ("other/outside.yaml", "outside the prefix\n"),
    ];
    for provider in [Provider::S3, Provider::S3b] {
        let store = ObjectStore::new(&platform, provider);
        let bucket = format!("cmp-{}-{}", provider.tool_name(), ns.name)
            .chars()
            .take(60)
            .collect::<String>();
        store.mkbucket(&bucket);
        for (key, content) in files {
            store.put(&bucket, key, content.as_bytes());
        }
        let secret_name = format!("creds-{}", provider.tool_name());
        let secret: k8s_openapi::api::core::v1::Secret = serde_json::from_value(json!({
            "metadata": {"name": secret_name},
            "stringData": provider.secret(&platform).unwrap(),
        }))
        .unwrap();
        secrets
            .create(&PostParams::default(), &secret)
            .await
            .unwrap();
        let endpoint = provider.endpoint(&platform, &provider.address(&platform));
        let spec = json!({"provider": provider.spec_provider(), "bucketName": bucket,
            "endpoint": endpoint, "insecure": true, "interval": "1h", "prefix": "app/",
            "ignore": "skip/\n", "secretRef": {"name": secret_name}});
        let mut artifacts = Vec::new();
        for (owner, labels, host) in [
            ("flux", json!({}), &flux_host),
            (
                "ours",
                json!({"sharding.fluxcd.io/key": "driftless"}),
                &our_host,
            ),
        ] {
            let name = format!("{owner}-{}", provider.tool_name());
            let obj: driftless::api::Bucket = serde_json::from_value(json!({
                "apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "Bucket",
                "metadata": {"name": name, "labels": labels}, "spec": spec,
            }))
            .unwrap();
            api.create(&PostParams::default(), &obj).await.unwrap();
            let served = |o: &driftless::api::Bucket| {
                let ready =
                    condition_of(o, "Ready").is_some_and(|c| c.status == ConditionStatus::True);
                o.status
                    .clone()
                    .unwrap_or_default()
                    .artifact
                    .filter(|a| ready && a.url.contains(host.as_str()))
            };
            let logs = || {
                format!(
                    "{}\n---\n{}",
                    tail(&flux_source.log_text(), 15),
                    tail(&source.log_text(), 15)
                )
            };
            let done = Wait::new(&api, Duration::from_secs(90))
                .log(logs)
                .until(&name, &format!("Ready with an artifact from {host}"), |o| {
                    served(o).is_some()
                })
                .await;
            let artifact = served(&done).expect("checked by the wait");
            let tarball = support::source::untar(&fetch(&artifact.url).await);
            artifacts.push((artifact.revision, tarball));
        }
        let (theirs, ours) = (&artifacts[0], &artifacts[1]);
        assert_eq!(
            ours.0, theirs.0,
            "{provider:?}: the same revision as Flux's"
        );
        assert_eq!(
            ours.1.keys().collect::<Vec<_>>(),
            theirs.1.keys().collect::<Vec<_>>(),
            "{provider:?}: the same files as Flux's"
        );
        assert_eq!(
            ours.1, theirs.1,
            "{provider:?}: the same contents as Flux's"
        );
        assert!(
            ours.1
                .keys()
                .any(|k| k.ends_with("nested/deep/deploy.yaml"))
                && !ours
                    .1
                    .keys()
                    .any(|k| k.ends_with("secret.yaml") || k.ends_with("outside.yaml")),
            "{provider:?}: {:?}",
            ours.1.keys()
        );
    }
}

/// The version `hack/testbin.sh` built a peer from (the stamp beside the binary): the pin lives
/// in hack/testbin.sh alone.
fn built_version(platform: &support::Platform, binary: &str) -> String {
    let stamp = std::path::Path::new(&platform.env["DRIFTLESS_TESTBIN"])
        .join("bin")
        .join(format!(".{binary}.version"));
    let version = std::fs::read_to_string(&stamp)
        .unwrap_or_else(|e| panic!("{}: {e} (run hack/testbin.sh)", stamp.display()));
    format!("v{}", version.trim())
}

/// helm-controller's own CRD (HelmRelease), from the module its binary was built from.
fn install_helm_release_crd(platform: &support::Platform) {
    ensure_built("flux-helm-controller");
    let module = support::go_module_dir(
        "github.com/fluxcd/helm-controller",
        &built_version(platform, "helm-controller"),
    );
    let file = module.join("config/crd/bases/helm.toolkit.fluxcd.io_helmreleases.yaml");
    let out = platform
        .kubectl()
        .args(["apply", "--server-side", "--force-conflicts", "-f"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "kubectl apply {}: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    support::wait_crds_established(
        platform,
        &["crd/helmreleases.helm.toolkit.fluxcd.io".to_string()],
    );
}

/// The seed's other consumer: Flux's helm-controller installs and upgrades a chart that the real
/// `helm push` put in the registry, which driftless resolves by semver, verifies with cosign and
/// serves as an OCIRepository with Helm's chart layer copied (`chartRef: {kind: OCIRepository}`);
/// an unsigned chart version is refused before helm-controller sees it.
#[tokio::test(flavor = "multi_thread")]
async fn helm_controller_installs_and_upgrades_charts_driftless_serves() {
    use kube::api::DynamicObject;
    use kube::discovery::ApiResource;
    let platform = support::platform();
    let kube = platform.client().await;
    support::install_crds(&kube).await;
    support::install_flux_source_crds(&kube).await;
    install_helm_release_crd(&platform);
    let ns = support::TestNamespace::new(&platform, &kube, "peer-hc").await;
    let source = SourceController::start(&platform, &ns.name, &[]);
    let hc = FluxController::start(&platform, &ns.name, "helm-controller", &[]);

    let work = tempfile::tempdir().unwrap();
    support::cosign::generate_key_pair(&platform, work.path());
    let charts = format!("{}/{}/charts", platform.registry(), ns.name);
    let push_chart = |version: &str, signed: bool| {
        let template = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-cm\ndata:\n  version: {{ .Chart.Version | quote }}\n  greeting: {{ .Values.greeting | quote }}\n";
        let digest = push_demo_chart(&platform, work.path(), &charts, version, template);
        if signed {
            support::cosign::sign(
                &platform,
                work.path(),
                "cosign.key",
                &format!("{charts}/demo@{digest}"),
            );
        }
        format!("{version}@{digest}")
    };
    let first = push_chart("0.1.0", true);
    let public = std::fs::read_to_string(work.path().join("cosign.pub")).unwrap();
    let secret: k8s_openapi::api::core::v1::Secret = serde_json::from_value(json!({
        "metadata": {"name": "chart-keys"}, "stringData": {"cosign.pub": public}}))
    .unwrap();
    Api::<k8s_openapi::api::core::v1::Secret>::namespaced(kube.clone(), &ns.name)
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    let sources: Sources<OCIRepository> = Sources::new(&kube, &ns.name, &source);
    sources
        .create("demo", json!({
            "url": format!("oci://{charts}/demo"), "interval": "1h", "insecure": true,
            "ref": {"semver": ">=0.1.0"},
            "layerSelector": {"mediaType": "application/vnd.cncf.helm.chart.content.v1.tar+gzip", "operation": "copy"},
            "verify": {"provider": "cosign", "secretRef": {"name": "chart-keys"}},
        }))
        .await;
    sources
        .wait_until("demo", "serving 0.1.0", |o| {
            support::source::revision(o) == first
        })
        .await;

    let resource = ApiResource {
        group: "helm.toolkit.fluxcd.io".into(),
        version: "v2".into(),
        api_version: "helm.toolkit.fluxcd.io/v2".into(),
        kind: "HelmRelease".into(),
        plural: "helmreleases".into(),
    };
    let releases: Api<DynamicObject> = Api::namespaced_with(kube.clone(), &ns.name, &resource);
    let release: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "helm.toolkit.fluxcd.io/v2", "kind": "HelmRelease",
        "metadata": {"name": "demo", "namespace": ns.name},
        "spec": {"interval": "1h", "chartRef": {"kind": "OCIRepository", "name": "demo"},
                 "values": {"greeting": "hello"}},
    }))
    .unwrap();
    releases
        .create(&PostParams::default(), &release)
        .await
        .unwrap();
    let configmaps: Api<ConfigMap> = Api::namespaced(kube.clone(), &ns.name);
    let installed = |version: &'static str| {
        let (configmaps, releases, hc) = (&configmaps, &releases, &hc);
        async move {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
            loop {
                let release = releases.get("demo").await.unwrap();
                let ready = release.data["status"]["conditions"]
                    .as_array()
                    .is_some_and(|cs| {
                        cs.iter()
                            .any(|c| c["type"] == "Ready" && c["status"] == "True")
                    });
                let version_now = configmaps
                    .get_opt("demo-cm")
                    .await
                    .unwrap()
                    .and_then(|cm| cm.data?.get("version").cloned());
                // helm-controller records a chart from an OCIRepository as
                // `<version>+<digest prefix>` (the OCI digest as build metadata).
                let at_version = version_now
                    .as_deref()
                    .is_some_and(|v| v.split('+').next() == Some(version));
                if ready && at_version {
                    return;
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "chart {version} not installed by helm-controller within 120s; HelmRelease status: {}\nlog:\n{}",
                    serde_json::to_string_pretty(&release.data["status"]).unwrap(),
                    tail(&hc.log_text(), 20)
                );
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    };
    installed("0.1.0").await;
    let data = configmaps.get("demo-cm").await.unwrap().data.unwrap();
    assert_eq!(data.get("greeting").map(String::as_str), Some("hello"));

    // A new signed version is picked up by semver, verified, served and upgraded to.
    let second = push_chart("0.2.0", true);
    sources.request_reconcile("demo").await;
    sources
        .wait_until("demo", "serving 0.2.0", |o| {
            support::source::revision(o) == second
        })
        .await;
    installed("0.2.0").await;

    // An unsigned one is refused: the verified 0.2.0 stays served and installed.
    push_chart("0.3.0", false);
    let refused = sources.request_reconcile("demo").await;
    let verified = support::source::condition(&refused, "SourceVerified").expect("SourceVerified");
    assert_eq!(verified.status, ConditionStatus::False, "{verified:?}");
    assert_eq!(
        support::source::revision(&refused),
        second,
        "the last verified chart stays served"
    );
    let data = configmaps.get("demo-cm").await.unwrap().data.unwrap();
    let digest = second.split_once("@sha256:").unwrap().1;
    assert_eq!(
        data.get("version").map(String::as_str),
        Some(format!("0.2.0+{}", &digest[..12]).as_str()),
        "still the verified 0.2.0, from the digest driftless served"
    );
    assert!(
        !hc.log_text().contains("0.3.0"),
        "helm-controller never saw the unsigned chart"
    );
}
