//! OCIRepository end to end: a real registry, a real API server, the real controller binary.

mod support;

use std::collections::BTreeMap;
use support::sha256;

use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::wait::await_condition;
use kube::{Api, Client};
use sha2::Digest;

use driftless::api::oci_repository::VerifiedSignature;
use driftless::api::{ConditionStatus, OCIRepository};
use support::controller::{SourceController, http_get};
use support::oci::{FLUX_LAYER, client, flux_layer, gzip, push_flux_artifact, registry_requests};
use support::sigstore::{ISSUER, ISSUER_RE, LOG_INDEX, SUBJECT, SUBJECT_RE, Sigstore};
use support::source::{
    Case, Expect, Message, Sources, WAIT, case, condition, files, has_condition, is_current,
    ready_status, revision, tail, untar,
};

struct Env {
    platform: support::Platform,
    client: Client,
    ns: support::TestNamespace,
    sources: Sources<OCIRepository>,
    controller: SourceController,
}

/// The shared waiting, reconcile-request and download helpers, on this test's objects.
impl std::ops::Deref for Env {
    type Target = Sources<OCIRepository>;
    fn deref(&self) -> &Self::Target {
        &self.sources
    }
}

async fn env(prefix: &str) -> Env {
    env_with(prefix, &[]).await
}

async fn env_with(prefix: &str, controller_args: &[&str]) -> Env {
    env_with_env(prefix, controller_args, |_| Vec::new()).await
}

/// A controller with environment variables that may name the test's namespace.
async fn env_with_env(
    prefix: &str,
    controller_args: &[&str],
    controller_env: impl FnOnce(&str) -> Vec<(String, String)>,
) -> Env {
    let platform = support::platform();
    let client = platform.client().await;
    support::install_crds(&client).await;
    let ns = support::TestNamespace::new(&platform, &client, prefix).await;
    let vars = controller_env(&ns.name);
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let controller = SourceController::start_with_env(&platform, &ns.name, controller_args, &vars);
    let sources = Sources::new(&client, &ns.name, &controller);
    Env {
        platform,
        client,
        ns,
        sources,
        controller,
    }
}

impl Env {
    /// Push a layer to `repo:tag` the way `flux push artifact` does; returns the manifest digest.
    async fn push(&self, repo: &str, tag: &str, layer: Vec<u8>) -> String {
        push_flux_artifact(&client(&self.registry()), repo, tag, layer, FLUX_LAYER, &[]).await
    }

    /// A spec for `repo` on the plain registry, with `extra` fields merged in.
    fn spec(&self, repo: &str, extra: serde_json::Value) -> serde_json::Value {
        let mut spec = serde_json::json!({
            "url": format!("oci://{}/{repo}", self.registry()), "interval": "10m", "insecure": true,
        });
        spec.as_object_mut()
            .unwrap()
            .extend(extra.as_object().cloned().unwrap_or_default());
        spec
    }

    fn registry(&self) -> String {
        self.platform.registry().to_string()
    }

    fn repo(&self, name: &str) -> String {
        format!("{}/{name}", self.ns.name)
    }
}

#[tokio::test]
async fn tag_is_resolved_pulled_stored_and_served() {
    let e = env("oci-tag").await;
    let repo = e.repo("app");
    let content = [
        ("deploy/app.yaml", "kind: ConfigMap\n"),
        ("README.md", "hello\n"),
    ];
    let digest = push_flux_artifact(
        &client(&e.registry()),
        &repo,
        "v1",
        flux_layer(&content),
        FLUX_LAYER,
        &[],
    )
    .await;
    e.create("app", serde_json::json!({
        "url": format!("oci://{}/{repo}", e.registry()), "interval": "10m", "insecure": true, "ref": {"tag": "v1"},
    }))
    .await;

    let obj = e.wait_ready("app").await;
    let status = obj.status.clone().unwrap();
    let artifact = status.artifact.clone().unwrap();
    assert_eq!(artifact.revision, format!("v1@{digest}"));
    assert_eq!(
        artifact.path,
        format!("ocirepository/{}/app/{digest}.tar.gz", e.ns.name)
    );
    assert_eq!(
        artifact.url,
        format!(
            "http://127.0.0.1:{}/{}",
            e.controller.storage_port, artifact.path
        )
    );
    assert_eq!(
        status.url.as_deref(),
        Some(
            format!(
                "http://127.0.0.1:{}/ocirepository/{}/app/latest.tar.gz",
                e.controller.storage_port, e.ns.name
            )
            .as_str()
        )
    );
    let meta = artifact.metadata.clone().unwrap();
    assert_eq!(
        meta["org.opencontainers.image.source"],
        "https://github.com/example/manifests"
    );
    let stored = condition(&obj, "ArtifactInStorage").unwrap();
    assert_eq!(
        stored.message,
        format!("stored artifact for digest 'v1@{digest}'")
    );
    let ready = condition(&obj, "Ready").unwrap();
    assert_eq!(
        (ready.reason.as_str(), ready.message.as_str()),
        ("Succeeded", stored.message.as_str())
    );

    // A consumer downloads exactly the bytes the status promises.
    let bytes = e.download(&obj);
    assert_eq!(sha256(&bytes), artifact.digest);
    assert_eq!(artifact.size, Some(bytes.len() as i64));
    assert_eq!(untar(&bytes), files(&content));
    let (code, _) = http_get(
        e.controller.storage_port,
        &format!("/ocirepository/{}/app/latest.tar.gz", e.ns.name),
    );
    assert_eq!(code, 200);

    let metrics = e.controller.metrics();
    let series = format!(
        r#"gotk_reconcile_duration_seconds_count{{kind="OCIRepository",name="app",namespace="{}"}}"#,
        e.ns.name
    );
    assert!(
        metrics.contains(&series),
        "Flux's reconcile histogram is exported:\n{metrics}"
    );
    assert!(
        !metrics.contains("gotk_reconcile_condition") && !metrics.contains("gotk_suspend_status"),
        "the gauges Flux 2.5 removed are not exported:\n{metrics}"
    );
    // One object, reconciled and waiting for its interval: added to the work queue by its
    // watch event and by its requeue, and nothing due now.
    assert!(
        metrics.contains(r#"workqueue_depth{name="ocirepository"} 0"#),
        "work queue depth:\n{metrics}"
    );
    assert!(
        metrics.contains(r#"workqueue_queue_duration_seconds_count{name="ocirepository"} "#),
        "time in the queue:\n{metrics}"
    );

    let events = e.events("app").await;
    assert!(
        events
            .iter()
            .any(|ev| ev.reason.as_deref() == Some("NewArtifact")
                && ev
                    .message
                    .as_deref()
                    .is_some_and(|m| m.starts_with(&format!(
                        "stored artifact with revision 'v1@{digest}' from 'oci://"
                    )))),
        "NewArtifact event: {:?}",
        events
            .iter()
            .map(|e| (&e.reason, &e.message))
            .collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn unchanged_tag_costs_one_manifest_head_per_reconcile() {
    let e = env("oci-steady").await;
    let repo = e.repo("steady");
    e.push(&repo, "latest", flux_layer(&[("a.yaml", "a: 1\n")]))
        .await;
    e.create("steady", e.spec(&repo, serde_json::json!({})))
        .await;
    let first = e.wait_ready("steady").await;

    let log = std::path::PathBuf::from(&e.platform.env["DRIFTLESS_REGISTRY_LOG"]);
    let before = registry_requests(&log, &repo).len();
    let again = e.request_reconcile("steady").await;
    let after = registry_requests(&log, &repo);
    assert_eq!(
        after[before..].to_vec(),
        vec![("HEAD".to_string(), format!("/v2/{repo}/manifests/latest"))],
        "an unchanged tag costs exactly one manifest HEAD"
    );
    assert_eq!(revision(&again), revision(&first));
    assert_eq!(
        again.status.unwrap().artifact.unwrap().digest,
        first.status.unwrap().artifact.unwrap().digest
    );
}

/// Pull once per digest: objects on an artifact another object already built (same registry,
/// repository, digest, layer selection and ignore rules) copy it from storage after their own
/// manifest HEAD, with no manifest or blob GET; a digest reference still asks the registry for
/// that digest; other ignore rules, an object that chooses its own trust (`certSecretRef`), and
/// a stored copy that is gone all pull again.
#[tokio::test]
async fn an_artifact_is_pulled_once_per_digest() {
    let e = env("oci-once").await;
    let repo = e.repo("shared");
    let digest = e
        .push(
            &repo,
            "latest",
            flux_layer(&[("a.yaml", "a: 1\n"), ("b.md", "b")]),
        )
        .await;
    let log = std::path::PathBuf::from(&e.platform.env["DRIFTLESS_REGISTRY_LOG"]);
    let requests_of = async |name: &str, spec: serde_json::Value| {
        let before = registry_requests(&log, &repo).len();
        e.create(name, e.spec(&repo, spec)).await;
        let obj = e.wait_ready(name).await;
        (obj, registry_requests(&log, &repo)[before..].to_vec())
    };
    let pulled = |requests: &[(String, String)]| {
        requests
            .iter()
            .any(|(method, path)| method == "GET" && path.contains("/blobs/"))
    };

    let (first, requests) = requests_of("first", serde_json::json!({})).await;
    assert!(pulled(&requests), "{requests:?}");
    let (second, requests) = requests_of("second", serde_json::json!({})).await;
    assert_eq!(
        requests,
        vec![("HEAD".to_string(), format!("/v2/{repo}/manifests/latest"))],
        "the same artifact costs one manifest HEAD"
    );
    assert_eq!(e.download(&second), e.download(&first));
    let (a, b) = (
        first.status.as_ref().unwrap().artifact.as_ref().unwrap(),
        second.status.as_ref().unwrap().artifact.as_ref().unwrap(),
    );
    assert_eq!((&a.digest, &a.metadata), (&b.digest, &b.metadata));
    assert_ne!(a.path, b.path, "each object serves its own copy");

    let (_, requests) = requests_of("pinned", serde_json::json!({"ref": {"digest": digest}})).await;
    assert_eq!(
        requests,
        vec![("HEAD".to_string(), format!("/v2/{repo}/manifests/{digest}"))],
        "a digest reference is answered by the registry before the copy"
    );

    let (ignoring, requests) = requests_of("ignoring", serde_json::json!({"ignore": "*.md"})).await;
    assert!(pulled(&requests), "other ignore rules, another tarball");
    assert_ne!(e.download(&ignoring), e.download(&first));
    let ca = std::fs::read(support::repo_root().join("tests/fixtures/notation/root.crt")).unwrap();
    e.secret("own-ca", "Opaque", &[("ca.crt", ca)]).await;
    let (_, requests) = requests_of(
        "own-trust",
        serde_json::json!({"certSecretRef": {"name": "own-ca"}}),
    )
    .await;
    assert!(pulled(&requests), "an object choosing its own trust pulls");

    // The copies gone: the next object pulls again.
    for name in ["first", "second", "pinned"] {
        e.api.delete(name, &Default::default()).await.unwrap();
        let gone = tokio::time::timeout(
            WAIT,
            await_condition(e.api.clone(), name, |o: Option<&OCIRepository>| o.is_none()),
        )
        .await;
        assert!(gone.is_ok(), "{name} deleted with its storage");
    }
    let (last, requests) = requests_of("last", serde_json::json!({})).await;
    assert!(pulled(&requests), "{requests:?}");
    assert_eq!(
        last.status
            .as_ref()
            .unwrap()
            .artifact
            .as_ref()
            .unwrap()
            .digest,
        a.digest
    );
}

#[tokio::test]
async fn a_moved_tag_gives_a_new_artifact_and_event() {
    let e = env("oci-move").await;
    let repo = e.repo("moving");
    let d1 = e
        .push(&repo, "stable", flux_layer(&[("a.yaml", "v: 1\n")]))
        .await;
    e.create(
        "moving",
        e.spec(&repo, serde_json::json!({"ref": {"tag": "stable"}})),
    )
    .await;
    let first = e.wait_ready("moving").await;
    assert_eq!(revision(&first), format!("stable@{d1}"));

    let d2 = e
        .push(&repo, "stable", flux_layer(&[("a.yaml", "v: 2\n")]))
        .await;
    assert_ne!(d1, d2);
    e.request_reconcile("moving").await;
    let second = e
        .wait_until("moving", "at the new revision", |o| {
            revision(o) == format!("stable@{d2}")
        })
        .await;
    assert_eq!(untar(&e.download(&second)), files(&[("a.yaml", "v: 2\n")]));
    let new_artifacts = e
        .events("moving")
        .await
        .iter()
        .filter(|ev| ev.reason.as_deref() == Some("NewArtifact"))
        .count();
    assert!(
        new_artifacts >= 2,
        "one NewArtifact event per new artifact, got {new_artifacts}"
    );
}

#[tokio::test]
async fn semver_with_filter_and_prereleases() {
    let e = env("oci-semver").await;
    let repo = e.repo("versions");
    let registry = client(&e.registry());
    let mut digests = BTreeMap::new();
    for tag in [
        "6.0.0",
        "6.1.0",
        "6.2.0-rc.1",
        "6.2.0-alpha.1",
        "v6.1.5",
        "7.0.0",
        "latest",
    ] {
        let d = push_flux_artifact(
            &registry,
            &repo,
            tag,
            flux_layer(&[("v.txt", tag)]),
            FLUX_LAYER,
            &[],
        )
        .await;
        digests.insert(tag, d);
    }
    let semver = |range: serde_json::Value| e.spec(&repo, serde_json::json!({"ref": range}));
    let at = |tag: &str| Expect::ready(format!("{tag}@{}", digests[tag]));
    e.run_cases(&[
        case(
            "stable",
            semver(serde_json::json!({"semver": "6.x"})),
            at("v6.1.5"),
        ),
        case(
            "pre",
            semver(serde_json::json!({"semver": ">= 6.1.x-0 <7.0.0-0"})),
            at("6.2.0-rc.1"),
        ),
        case(
            "filtered",
            semver(serde_json::json!({"semver": ">= 6.1.x-0", "semverFilter": ".*-alpha.*"})),
            at("6.2.0-alpha.1"),
        ),
        case(
            "none",
            semver(serde_json::json!({"semver": ">= 9.0.0"})),
            Expect::fetch_failed(
                "ReadOperationFailed",
                Message::ends_with("no match found for semver: >= 9.0.0"),
            ),
        ),
    ])
    .await;
}

#[tokio::test]
async fn digest_reference_pins_the_revision() {
    let e = env("oci-digest").await;
    let repo = e.repo("pinned");
    let d1 = e.push(&repo, "latest", flux_layer(&[("a", "1")])).await;
    e.push(&repo, "latest", flux_layer(&[("a", "2")])).await;
    e.create(
        "pinned",
        e.spec(
            &repo,
            serde_json::json!({"ref": {"digest": d1, "tag": "latest"}}),
        ),
    )
    .await;
    let obj = e.wait_ready("pinned").await;
    assert_eq!(
        revision(&obj),
        d1,
        "a digest reference's revision is the bare digest"
    );
    assert_eq!(untar(&e.download(&obj)), files(&[("a", "1")]));
}

#[tokio::test]
async fn layer_selector_copy_and_extract_and_ignore() {
    let e = env("oci-layers").await;
    let repo = e.repo("chart");
    let chart_type = "application/vnd.cncf.helm.chart.content.v1.tar+gzip";
    let chart = flux_layer(&[("podinfo/Chart.yaml", "name: podinfo\n")]);
    let chart_digest = push_flux_artifact(
        &client(&e.registry()),
        &repo,
        "6.0.0",
        chart.clone(),
        chart_type,
        &[],
    )
    .await;
    let selecting = |selector: serde_json::Value| {
        e.spec(
            &repo,
            serde_json::json!({"ref": {"tag": "6.0.0"}, "layerSelector": selector}),
        )
    };
    let objects = e
        .run_cases(&[
            case(
                "copy",
                selecting(serde_json::json!({"mediaType": chart_type, "operation": "copy"})),
                Expect::ready(format!("6.0.0@{chart_digest}")),
            ),
            case(
                "wrong-type",
                selecting(serde_json::json!({"mediaType": "application/x-other"})),
                Expect::fetch_failed(
                    "OCIArtifactLayerOperationFailed",
                    Message::is(
                        "failed to find layer with media type 'application/x-other' in artifact",
                    ),
                ),
            ),
        ])
        .await;
    let copied = &objects["copy"];
    assert_eq!(
        e.download(copied),
        chart,
        "copy stores the layer's bytes unchanged"
    );
    assert_eq!(
        copied
            .status
            .as_ref()
            .unwrap()
            .observed_layer_selector
            .as_ref()
            .unwrap()
            .media_type
            .as_deref(),
        Some(chart_type)
    );

    let repo = e.repo("site");
    let content = [
        ("deploy/app.yaml", "a\n"),
        ("deploy/notes.md", "n\n"),
        ("logo.png", "png"),
        (".sourceignore", "*.md\n"),
    ];
    push_flux_artifact(
        &client(&e.registry()),
        &repo,
        "latest",
        flux_layer(&content),
        FLUX_LAYER,
        &[],
    )
    .await;
    let url = format!("oci://{}/{repo}", e.registry());
    e.create("ignored", serde_json::json!({"url": url, "interval": "10m", "insecure": true, "ignore": "/deploy/app.yaml\n"})).await;
    let obj = e.wait_ready("ignored").await;
    // User patterns (the .sourceignore and spec.ignore) replace the default extension list, so
    // logo.png stays; both sources of patterns apply.
    assert_eq!(
        untar(&e.download(&obj)),
        files(&[("logo.png", "png"), (".sourceignore", "*.md\n")])
    );
    assert_eq!(
        obj.status.unwrap().observed_ignore.as_deref(),
        Some("/deploy/app.yaml\n")
    );
}

/// Raw tar entries, for archives no honest tool writes.
fn raw_tar(entries: &[(&str, tar::EntryType, &[u8], Option<&str>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (path, kind, data, link) in entries {
        let mut h = tar::Header::new_old();
        {
            let bytes = h.as_mut_bytes();
            bytes[..path.len()].copy_from_slice(path.as_bytes());
        }
        h.set_entry_type(*kind);
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        if let Some(link) = link {
            h.set_link_name(link).unwrap();
        }
        h.set_cksum();
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.resize(out.len() + 1024, 0);
    out
}

/// A gzip tarball of regular files only: their parent directories are implied, not listed
/// (names over 100 bytes go through GNU long-name entries, as `tar` writes them).
fn files_only_layer(files: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut tar = tar::Builder::new(Vec::new());
    for (path, content) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(content.len() as u64);
        header.set_mode(0o644);
        tar.append_data(&mut header, path, &content[..]).unwrap();
    }
    gzip(&tar.into_inner().unwrap())
}

/// `count` files, each `depth` components deep under its own top-level directory.
fn deep_files(count: usize, depth: usize) -> Vec<(String, Vec<u8>)> {
    (0..count)
        .map(|i| {
            let dirs = vec!["a"; depth - 2].join("/");
            (format!("d{i}/{dirs}/f.yaml"), b"x\n".to_vec())
        })
        .collect()
}

#[tokio::test]
async fn archive_limits_cover_implied_directories_deep_paths_and_sourceignore() {
    let e = env_with("oci-limits", &["--artifact-max-files=1000"]).await;
    let repo = e.repo("limits");
    let registry = client(&e.registry());
    e.push(&repo, "latest", flux_layer(&[("good.yaml", "ok\n")]))
        .await;
    e.create("limits", e.spec(&repo, serde_json::json!({})))
        .await;
    let good = e.wait_ready("limits").await;
    let good_bytes = e.download(&good);

    let big_ignore = vec![(".sourceignore".to_string(), b"x\n".repeat(600 << 10))];
    // (case, layer, condition, reason, what the message must name)
    let cases = [
        (
            // 100 entries, but 100 x 59 directories: over 1000 only if directories count.
            "implied-directories",
            files_only_layer(&deep_files(100, 60)),
            "FetchFailed",
            "OCIArtifactLayerOperationFailed",
            "limit of 1000 files and directories (--artifact-max-files)",
        ),
        (
            "too-deep",
            files_only_layer(&deep_files(100, 200)),
            "FetchFailed",
            "OCIArtifactLayerOperationFailed",
            "path has 200 components, more than the limit of 64",
        ),
        (
            "huge-sourceignore",
            files_only_layer(&big_ignore),
            "StorageOperationFailed",
            "ArchiveOperationFailed",
            "'.sourceignore' files total more than the limit of 1048576 bytes",
        ),
    ];
    for (name, layer, condition_type, reason, names) in cases {
        push_flux_artifact(
            &registry,
            &repo,
            "latest",
            layer,
            FLUX_LAYER,
            &[("case", name)],
        )
        .await;
        let obj = e.request_reconcile("limits").await;
        let failed = condition(&obj, condition_type)
            .unwrap_or_else(|| panic!("{name}: no {condition_type} condition"));
        assert_eq!(failed.reason, reason, "{name}: {}", failed.message);
        assert!(failed.message.contains(names), "{name}: {}", failed.message);
        let ready = condition(&obj, "Ready").expect("Ready");
        assert_eq!(ready.status, ConditionStatus::False, "{name}: Ready=False");
        assert!(ready.message.contains(names), "{name}: {}", ready.message);
        // The previous artifact stays in the status and is still served, byte for byte.
        assert_eq!(
            revision(&obj),
            revision(&good),
            "{name}: status keeps the good artifact"
        );
        assert_eq!(
            e.download(&obj),
            good_bytes,
            "{name}: the good artifact is still served"
        );
    }
}

#[tokio::test]
async fn hostile_archives_are_refused_and_the_last_artifact_kept() {
    let e = env_with(
        "oci-hostile",
        &["--artifact-max-bytes=8388608", "--artifact-max-files=100"],
    )
    .await;
    let repo = e.repo("hostile");
    let registry = client(&e.registry());
    e.push(&repo, "latest", flux_layer(&[("good.yaml", "ok\n")]))
        .await;
    e.create("hostile", e.spec(&repo, serde_json::json!({})))
        .await;
    let good = e.wait_ready("hostile").await;
    let good_bytes = e.download(&good);

    let many: Vec<(String, String)> = (0..200)
        .map(|i| (format!("f{i}.yaml"), "x".to_string()))
        .collect();
    let many: Vec<(&str, &str)> = many.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "traversal",
            gzip(&raw_tar(&[(
                "../../escaped",
                tar::EntryType::Regular,
                b"x",
                None,
            )])),
        ),
        (
            "absolute",
            gzip(&raw_tar(&[(
                "/tmp/driftless-escaped",
                tar::EntryType::Regular,
                b"x",
                None,
            )])),
        ),
        (
            "device",
            gzip(&raw_tar(&[("dev", tar::EntryType::Char, b"", None)])),
        ),
        (
            "gzip-bomb",
            gzip(&raw_tar(&[(
                "bomb",
                tar::EntryType::Regular,
                &vec![0u8; 32 << 20],
                None,
            )])),
        ),
        ("too-many-files", flux_layer(&many)),
        ("not-gzip", b"plain bytes, not a tarball".to_vec()),
    ];
    for (name, layer) in &cases {
        push_flux_artifact(
            &registry,
            &repo,
            "latest",
            layer.clone(),
            FLUX_LAYER,
            &[("case", name)],
        )
        .await;
        e.request_reconcile("hostile").await;
        let obj = e.api.get("hostile").await.unwrap();
        let failed = condition(&obj, "FetchFailed")
            .unwrap_or_else(|| panic!("{name}: no FetchFailed condition"));
        assert!(
            failed
                .message
                .starts_with("failed to extract layer contents from artifact: "),
            "{name}: {}",
            failed.message
        );
        assert_eq!(failed.reason, "OCIArtifactLayerOperationFailed", "{name}");
        // The previous artifact stays in the status and is still served, byte for byte.
        assert_eq!(
            revision(&obj),
            revision(&good),
            "{name}: status still points at the good artifact"
        );
        assert_eq!(
            e.download(&obj),
            good_bytes,
            "{name}: the good artifact is still served"
        );
        assert_eq!(
            ready_status(&obj),
            Some(ConditionStatus::False),
            "{name}: Ready=False"
        );
        let warned = e.events("hostile").await.iter().any(|ev| {
            ev.type_.as_deref() == Some("Warning")
                && ev.reason.as_deref() == Some("OCIArtifactLayerOperationFailed")
        });
        assert!(warned, "{name}: a Warning event names the cause");
    }
    assert!(
        !e.controller
            .storage
            .parent()
            .unwrap()
            .join("escaped")
            .exists(),
        "nothing was written outside storage"
    );
    // A layer is downloaded and extracted in a working directory under the controller's
    // private temporary directory (`<tmp>/driftless-source-controller/ocirepository-<ns>-<name>-*/content`),
    // so "../../escaped" would land beside those; the working directories are removed after
    // each pass, so whatever named `escaped` is left anywhere under `<tmp>` got out of one.
    assert!(
        !e.controller.tmp.join("escaped").exists(),
        "nothing was written outside the extraction directory"
    );
    let escaped = named_anywhere(&e.controller.tmp, "escaped");
    assert!(escaped.is_empty(), "written outside it: {escaped:?}");
    assert!(!std::path::Path::new("/tmp/driftless-escaped").exists());

    // A symlink is skipped, as Flux skips it: a file "under" it lands inside the artifact.
    let layer = gzip(&raw_tar(&[
        ("link", tar::EntryType::Symlink, b"", Some("/tmp")),
        (
            "link/driftless-through-link",
            tar::EntryType::Regular,
            b"x",
            None,
        ),
    ]));
    push_flux_artifact(
        &registry,
        &repo,
        "latest",
        layer,
        FLUX_LAYER,
        &[("case", "symlink")],
    )
    .await;
    let obj = e.request_reconcile("hostile").await;
    assert_eq!(ready_status(&obj), Some(ConditionStatus::True));
    assert_eq!(
        untar(&e.download(&obj)),
        files(&[("link/driftless-through-link", "x")])
    );
    assert!(
        !std::path::Path::new("/tmp/driftless-through-link").exists(),
        "nothing written through the symlink"
    );
}

/// Every path under `dir` whose file name is `name`.
fn named_anywhere(dir: &std::path::Path, name: &str) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if entry.file_name() == name {
            found.push(path.clone());
        }
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            found.extend(named_anywhere(&path, name));
        }
    }
    found
}

/// A duration past Go's range stalls its object and a panic in one object's reconcile fails
/// only that object: the process stays up and every other object keeps reconciling.
#[tokio::test]
async fn hostile_durations_and_panics_fail_one_object_not_the_process() {
    let mut e = env_with_env("oci-panic", &[], |ns| {
        vec![("DRIFTLESS_TEST_PANIC_OBJECTS".into(), format!("{ns}/boom"))]
    })
    .await;
    let repo = e.repo("app");
    e.push(&repo, "latest", flux_layer(&[("a", "1")])).await;

    let mut huge = e.spec(&repo, serde_json::json!({}));
    huge["interval"] = serde_json::json!("99999999999999999999h");
    e.create("huge-interval", huge).await;
    let mut huge = e.spec(&repo, serde_json::json!({}));
    huge["timeout"] = serde_json::json!("9999999999999999999m");
    e.create("huge-timeout", huge).await;
    e.create("boom", e.spec(&repo, serde_json::json!({}))).await;

    for (name, field) in [
        ("huge-interval", "spec.interval"),
        ("huge-timeout", "spec.timeout"),
    ] {
        let obj = e
            .wait()
            .for_condition(name, "Stalled", |c| c.reason == "InvalidDuration")
            .await;
        let ready = condition(&obj, "Ready").unwrap();
        assert_eq!(ready.status, ConditionStatus::False);
        assert!(
            ready.message.starts_with(&format!("{field}: duration '"))
                && ready.message.contains("out of range"),
            "{}",
            ready.message
        );
        assert!(
            e.events(name)
                .await
                .iter()
                .any(|ev| ev.reason.as_deref() == Some("InvalidDuration")
                    && ev.type_.as_deref() == Some("Warning")),
            "a warning event names the cause"
        );
    }
    let obj = e.wait_failing("boom", "InternalError").await;
    assert!(
        condition(&obj, "Ready")
            .unwrap()
            .message
            .contains("test-requested panic"),
        "{:?}",
        condition(&obj, "Ready")
    );
    assert!(
        e.events("boom")
            .await
            .iter()
            .any(|ev| ev.reason.as_deref() == Some("InternalError"))
    );
    e.create("good", e.spec(&repo, serde_json::json!({}))).await;
    e.wait_ready("good").await;
    assert!(
        e.controller.is_running(),
        "the controller survived; log:\n{}",
        tail(&e.controller.log_text(), 30)
    );
}

#[tokio::test]
async fn suspend_and_deletion() {
    let e = env("oci-suspend").await;
    let repo = e.repo("s");
    e.push(&repo, "latest", flux_layer(&[("a", "1")])).await;
    e.create("s", e.spec(&repo, serde_json::json!({}))).await;
    let first = e.wait_ready("s").await;
    let patch = serde_json::json!({"spec": {"suspend": true}});
    e.api
        .patch("s", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let d2 = e.push(&repo, "latest", flux_layer(&[("a", "2")])).await;
    let suspended = e.request_reconcile("s").await;
    assert_eq!(
        suspended.status.as_ref().unwrap().observed_generation,
        suspended.metadata.generation,
        "a suspended object's new generation is observed (kstatus reads it as current)"
    );
    assert_eq!(
        revision(&suspended),
        revision(&first),
        "a suspended object is not pulled"
    );

    let patch = serde_json::json!({"spec": {"suspend": false}});
    e.api
        .patch("s", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    e.wait_until("s", "resumed", |o| revision(o) == format!("latest@{d2}"))
        .await;

    let dir = e
        .controller
        .storage
        .join("ocirepository")
        .join(&e.ns.name)
        .join("s");
    assert!(dir.exists());
    e.api.delete("s", &Default::default()).await.unwrap();
    let gone = tokio::time::timeout(
        WAIT,
        await_condition(e.api.clone(), "s", |o: Option<&OCIRepository>| o.is_none()),
    )
    .await;
    assert!(
        gone.is_ok(),
        "the finalizer was removed and the object deleted"
    );
    assert!(!dir.exists(), "deleting the object removes its storage");
}

#[tokio::test]
async fn a_restarted_controller_serves_without_pulling_again() {
    let mut e = env("oci-restart").await;
    let repo = e.repo("r");
    e.push(&repo, "latest", flux_layer(&[("a", "1")])).await;
    e.create("r", e.spec(&repo, serde_json::json!({}))).await;
    let before = e.wait_ready("r").await;
    let bytes = e.download(&before);
    let log = std::path::PathBuf::from(&e.platform.env["DRIFTLESS_REGISTRY_LOG"]);
    let requests_before = registry_requests(&log, &repo).len();

    // What a crash and a deletion during downtime leave behind: a half-written file, and the
    // storage of an object that no longer exists.
    let object_dir = e.controller.storage.join("ocirepository").join(&e.ns.name);
    let half_written = object_dir
        .join("r")
        .join(".sha256:abc.tar.gz.driftless-tmp-0123456789abcdef");
    std::fs::write(&half_written, b"partial").unwrap();
    std::fs::create_dir_all(object_dir.join("ghost")).unwrap();
    std::fs::write(
        object_dir.join("ghost").join("sha256:def.tar.gz"),
        b"orphan",
    )
    .unwrap();

    e.controller = e.controller.restart();
    e.sources = Sources::new(&e.client, &e.ns.name, &e.controller);
    assert!(
        !half_written.exists(),
        "half-written files are swept at start-up"
    );
    assert!(
        !object_dir.join("ghost").exists(),
        "storage of deleted objects is removed at start-up"
    );
    let after = e.request_reconcile("r").await;
    assert_eq!(e.download(&after), bytes);
    let (old, new) = (
        before.status.unwrap().artifact.unwrap(),
        after.status.clone().unwrap().artifact.unwrap(),
    );
    assert_eq!(
        (&old.path, &old.digest, &old.revision, old.size),
        (&new.path, &new.digest, &new.revision, new.size)
    );
    // The restarted controller advertises a new address; every URL follows it.
    assert!(
        new.url
            .starts_with(&format!("http://127.0.0.1:{}/", e.controller.storage_port)),
        "{}",
        new.url
    );
    let new: Vec<_> = registry_requests(&log, &repo)[requests_before..].to_vec();
    assert!(
        new.iter()
            .all(|(m, p)| m == "HEAD" && p.contains("/manifests/")),
        "no pull after a restart: {new:?}"
    );

    // A restart over an empty volume (Flux's emptyDir) pulls again and stores the same bytes:
    // the tarball is deterministic, so consumers see no new artifact and no event says so.
    e.controller.stop();
    e.controller = SourceController::start(&e.platform, &e.ns.name, &[]);
    e.sources = Sources::new(&e.client, &e.ns.name, &e.controller);
    let rebuilt = e.request_reconcile("r").await;
    let rebuilt_artifact = rebuilt.status.clone().unwrap().artifact.unwrap();
    assert_eq!(
        rebuilt_artifact.digest, old.digest,
        "same content, same tarball digest"
    );
    assert_eq!(e.download(&rebuilt), bytes);
    let pulled: Vec<_> = registry_requests(&log, &repo)
        .into_iter()
        .filter(|(m, p)| m == "GET" && p.contains("/blobs/"))
        .collect();
    assert!(
        !pulled.is_empty(),
        "the empty volume was filled by pulling again"
    );
    let announced: Vec<_> = e
        .events("r")
        .await
        .into_iter()
        .filter(|ev| ev.reason.as_deref() == Some("NewArtifact"))
        .map(|ev| (ev.event_time, ev.message, ev.reporting_instance))
        .collect();
    assert_eq!(
        announced.len(),
        1,
        "an unchanged artifact is not announced again: {announced:?}"
    );
}

/// What a test needs to reach one of the platform's registries in a given auth mode.
struct Mode {
    registry: String,
    insecure: bool,
    credentials: driftless::oci::registry::Credentials,
    transport: driftless::transport::Transport,
}

fn mode(e: &Env, var: &str) -> Mode {
    use driftless::oci::registry::Credentials;
    use driftless::transport::Transport;
    let env = &e.platform.env;
    let read = |k: &str| std::fs::read(&env[k]).unwrap();
    let basic = Credentials::Basic {
        username: env["DRIFTLESS_REGISTRY_USER"].clone(),
        password: env["DRIFTLESS_REGISTRY_PASSWORD"].clone(),
    };
    let mut identity = read("DRIFTLESS_REGISTRY_CLIENT_CERT");
    identity.extend(read("DRIFTLESS_REGISTRY_CLIENT_KEY"));
    let (insecure, credentials, transport) = match var {
        "DRIFTLESS_REGISTRY_BASIC" | "DRIFTLESS_REGISTRY_TOKEN" => (
            true,
            basic,
            Transport {
                insecure: true,
                ..Default::default()
            },
        ),
        "DRIFTLESS_REGISTRY_TLS" => (
            false,
            Credentials::Anonymous,
            Transport {
                ca_pem: Some(read("DRIFTLESS_REGISTRY_CA")),
                ..Default::default()
            },
        ),
        "DRIFTLESS_REGISTRY_MTLS" => (
            false,
            Credentials::Anonymous,
            Transport {
                ca_pem: Some(read("DRIFTLESS_REGISTRY_CA")),
                client_identity_pem: Some(identity),
                ..Default::default()
            },
        ),
        other => panic!("unknown registry mode {other}"),
    };
    Mode {
        registry: env[var].clone(),
        insecure,
        credentials,
        transport,
    }
}

impl Env {
    async fn secret(&self, name: &str, type_: &str, data: &[(&str, Vec<u8>)]) {
        use k8s_openapi::ByteString;
        use k8s_openapi::api::core::v1::Secret;
        let secret = Secret {
            metadata: kube::api::ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            type_: Some(type_.into()),
            data: Some(
                data.iter()
                    .map(|(k, v)| (k.to_string(), ByteString(v.clone())))
                    .collect(),
            ),
            ..Default::default()
        };
        // Applied, so that a test can replace what a Secret holds.
        let secret = Secret {
            metadata: kube::api::ObjectMeta {
                namespace: Some(self.ns.name.clone()),
                ..secret.metadata
            },
            ..secret
        };
        let mut applied = serde_json::to_value(&secret).unwrap();
        applied["apiVersion"] = "v1".into();
        applied["kind"] = "Secret".into();
        Api::<Secret>::namespaced(self.client.clone(), &self.ns.name)
            .patch(
                name,
                &PatchParams::apply("driftless-tests").force(),
                &Patch::Apply(&applied),
            )
            .await
            .unwrap();
    }

    async fn docker_secret(&self, name: &str, registry: &str, user: &str, password: &str) {
        let json =
            serde_json::json!({"auths": {registry: {"username": user, "password": password}}});
        self.secret(
            name,
            "kubernetes.io/dockerconfigjson",
            &[(".dockerconfigjson", serde_json::to_vec(&json).unwrap())],
        )
        .await;
    }

    async fn wait_failed(&self, name: &str) -> driftless::api::Condition {
        let obj = self
            .wait_until(name, "failed", |o| has_condition(o, "FetchFailed"))
            .await;
        assert_eq!(
            ready_status(&obj),
            Some(ConditionStatus::False),
            "{name}: Ready=False"
        );
        condition(&obj, "FetchFailed").cloned().unwrap()
    }
}

async fn push_to(m: &Mode, repo: &str) -> String {
    let registry =
        support::oci::client_with(&m.registry, m.credentials.clone(), m.transport.clone());
    push_flux_artifact(
        &registry,
        repo,
        "latest",
        flux_layer(&[("a.yaml", "a: 1\n")]),
        FLUX_LAYER,
        &[],
    )
    .await
}

#[tokio::test]
async fn basic_and_token_auth_succeed_with_credentials_and_fail_clearly_without() {
    let e = env("oci-auth").await;
    for (label, var) in [
        ("basic", "DRIFTLESS_REGISTRY_BASIC"),
        ("token", "DRIFTLESS_REGISTRY_TOKEN"),
    ] {
        let m = mode(&e, var);
        let repo = e.repo(label);
        let digest = push_to(&m, &repo).await;
        let url = format!("oci://{}/{repo}", m.registry);
        let user = e.platform.env["DRIFTLESS_REGISTRY_USER"].clone();
        let password = e.platform.env["DRIFTLESS_REGISTRY_PASSWORD"].clone();
        e.docker_secret(&format!("{label}-creds"), &m.registry, &user, &password)
            .await;
        e.docker_secret(&format!("{label}-wrong"), &m.registry, &user, "wrong")
            .await;

        let spec = |secret: Option<String>| {
            let mut spec = serde_json::json!({"url": url, "interval": "10m", "insecure": true});
            if let Some(name) = secret {
                spec["secretRef"] = serde_json::json!({"name": name});
            }
            spec
        };
        let refused = || {
            Expect::fetch_failed(
                "OCIArtifactPullFailed",
                Message::All(vec![
                    Message::starts_with("failed to determine artifact digest: "),
                    Message::AnyOf(vec![
                        Message::contains("unauthorized"),
                        Message::contains("token exchange"),
                    ]),
                ]),
            )
        };
        e.run_cases(&[
            case(
                format!("{label}-ok"),
                spec(Some(format!("{label}-creds"))),
                Expect::ready(format!("latest@{digest}")),
            ),
            case(format!("{label}-anon"), spec(None), refused()),
            case(
                format!("{label}-wrong"),
                spec(Some(format!("{label}-wrong"))),
                refused(),
            ),
            case(
                format!("{label}-missing"),
                spec(Some("absent".into())),
                Expect::fetch_failed(
                    "AuthenticationFailed",
                    Message::is(r#"failed to get credential: secrets "absent" not found"#),
                ),
            ),
        ])
        .await;
    }
}

#[tokio::test]
async fn service_account_pull_secrets_are_used() {
    use k8s_openapi::api::core::v1::ServiceAccount;
    let e = env("oci-sa").await;
    let m = mode(&e, "DRIFTLESS_REGISTRY_BASIC");
    let repo = e.repo("sa");
    let digest = push_to(&m, &repo).await;
    let (user, password) = (
        e.platform.env["DRIFTLESS_REGISTRY_USER"].clone(),
        e.platform.env["DRIFTLESS_REGISTRY_PASSWORD"].clone(),
    );
    e.docker_secret("pull", &m.registry, &user, &password).await;
    let sa: ServiceAccount = serde_json::from_value(
        serde_json::json!({"metadata": {"name": "puller"}, "imagePullSecrets": [{"name": "pull"}]}),
    )
    .unwrap();
    Api::<ServiceAccount>::namespaced(e.client.clone(), &e.ns.name)
        .create(&PostParams::default(), &sa)
        .await
        .unwrap();
    e.create("sa", serde_json::json!({"url": format!("oci://{}/{repo}", m.registry), "interval": "10m", "insecure": true, "serviceAccountName": "puller"})).await;
    assert_eq!(
        revision(&e.wait_ready("sa").await),
        format!("latest@{digest}")
    );
}

#[tokio::test]
async fn tls_and_mutual_tls_with_cert_secret_ref() {
    let e = env("oci-tls").await;
    let ca = std::fs::read(&e.platform.env["DRIFTLESS_REGISTRY_CA"]).unwrap();
    let cert = std::fs::read(&e.platform.env["DRIFTLESS_REGISTRY_CLIENT_CERT"]).unwrap();
    let key = std::fs::read(&e.platform.env["DRIFTLESS_REGISTRY_CLIENT_KEY"]).unwrap();
    e.secret("ca-only", "Opaque", &[("ca.crt", ca.clone())])
        .await;
    e.secret(
        "client",
        "kubernetes.io/tls",
        &[
            ("ca.crt", ca.clone()),
            ("tls.crt", cert.clone()),
            ("tls.key", key.clone()),
        ],
    )
    .await;
    e.secret(
        "half",
        "Opaque",
        &[("ca.crt", ca.clone()), ("tls.crt", cert.clone())],
    )
    .await;

    let tls = mode(&e, "DRIFTLESS_REGISTRY_TLS");
    let repo = e.repo("tls");
    let digest = push_to(&tls, &repo).await;
    let url = format!("oci://{}/{repo}", tls.registry);
    let with_certs = |url: &str, secret: Option<&str>| {
        let mut spec = serde_json::json!({"url": url, "interval": "10m"});
        if let Some(name) = secret {
            spec["certSecretRef"] = serde_json::json!({"name": name});
        }
        spec
    };
    e.run_cases(&[
        case(
            "tls-ok",
            with_certs(&url, Some("ca-only")),
            Expect::ready(format!("latest@{digest}")),
        ),
        case(
            "tls-untrusted",
            with_certs(&url, None),
            Expect::fetch_failed("OCIArtifactPullFailed", Message::contains("UnknownIssuer")),
        ),
    ])
    .await;

    let mtls = mode(&e, "DRIFTLESS_REGISTRY_MTLS");
    let repo = e.repo("mtls");
    let digest = push_to(&mtls, &repo).await;
    let url = format!("oci://{}/{repo}", mtls.registry);
    e.run_cases(&[
        case(
            "mtls-ok",
            with_certs(&url, Some("client")),
            Expect::ready(format!("latest@{digest}")),
        ),
        case(
            "mtls-no-client-cert",
            with_certs(&url, Some("ca-only")),
            Expect::fetch_failed("OCIArtifactPullFailed", Message::Any),
        ),
        case(
            "mtls-half",
            with_certs(&url, Some("half")),
            Expect::fetch_failed(
                "AuthenticationFailed",
                Message::contains("'tls.crt' and 'tls.key' must be set together"),
            ),
        ),
    ])
    .await;
    let _ = (tls.insecure, mtls.insecure);
}

#[tokio::test]
async fn invalid_urls_and_cloud_providers_stall() {
    let e = env("oci-stall").await;
    let repo = e.repo("signed");
    e.push(&repo, "latest", flux_layer(&[("a", "1")])).await;
    let objects = e
        .run_cases(&[
            case(
                "tagged",
                serde_json::json!({"url": format!("oci://{}/app:v1", e.registry()), "interval": "10m"}),
                Expect::stalled(
                    "URLInvalid",
                    Message::is(format!(
                        "URL validation failed for 'oci://{}/app:v1': URL must not contain a tag; remove ':v1'",
                        e.registry()
                    )),
                ),
            ),
            // Cloud tokens go only to the cloud's own registries: never to the object's host.
            case(
                "azure",
                serde_json::json!({"url": format!("oci://{}/app", e.registry()),
                                   "interval": "10m", "provider": "azure"}),
                Expect::stalled(
                    "InvalidProviderConfiguration",
                    Message::contains("is not an Azure Container Registry: provider 'azure' sends Entra ID tokens only to hosts of the form <name>.azurecr.io"),
                ),
            ),
            case(
                "gcp",
                serde_json::json!({"url": "oci://gcr.io.example.net/app",
                                   "interval": "10m", "provider": "gcp"}),
                Expect::stalled(
                    "InvalidProviderConfiguration",
                    Message::contains("the registry 'gcr.io.example.net' is not a Google registry"),
                ),
            ),
            case(
                "signed",
                e.spec(
                    &repo,
                    serde_json::json!({"verify": {"provider": "notation"}}),
                ),
                Expect::Fails {
                    until: "Stalled",
                    condition: "SourceVerified",
                    status: ConditionStatus::False,
                    reason: "VerificationError",
                    message: Message::starts_with(
                        "failed to verify the signature using provider 'notation': verification secret cannot be empty: 'oci://",
                    ),
                },
            ),
        ])
        .await;
    assert!(
        objects["signed"]
            .status
            .as_ref()
            .unwrap()
            .artifact
            .is_none(),
        "unverified content is never stored"
    );
    let tagged = &objects["tagged"];
    assert_eq!(
        tagged.status.as_ref().unwrap().observed_generation,
        tagged.metadata.generation,
        "stalled objects are observed"
    );
}

#[tokio::test]
async fn proxy_secret_ref_routes_registry_traffic_through_the_proxy() {
    let e = env("oci-proxy").await;
    let proxy = support::proxy::Proxy::start(Some(("proxy-user", "proxy-pass"))).await;
    let repo = e.repo("proxied");
    let digest = e.push(&repo, "latest", flux_layer(&[("a", "1")])).await;
    let address = format!("http://127.0.0.1:{}", proxy.port).into_bytes();
    e.secret(
        "proxy",
        "Opaque",
        &[
            ("address", address.clone()),
            ("username", b"proxy-user".to_vec()),
            ("password", b"proxy-pass".to_vec()),
        ],
    )
    .await;
    e.secret("proxy-no-auth", "Opaque", &[("address", address)])
        .await;
    e.secret(
        "proxy-bad",
        "Opaque",
        &[("address", b"proxy.example.com:3128".to_vec())],
    )
    .await;

    let proxied = |secret: &str| {
        e.spec(
            &repo,
            serde_json::json!({"proxySecretRef": {"name": secret}}),
        )
    };
    e.run_cases(&[
        case(
            "via-proxy",
            proxied("proxy"),
            Expect::ready(format!("latest@{digest}")),
        ),
        case(
            "proxy-refuses",
            proxied("proxy-no-auth"),
            Expect::fetch_failed("OCIArtifactPullFailed", Message::Any),
        ),
        case(
            "proxy-invalid",
            proxied("proxy-bad"),
            Expect::fetch_failed(
                "AuthenticationFailed",
                Message::starts_with("failed to get proxy address: "),
            ),
        ),
    ])
    .await;
    let seen = proxy.seen.lock().unwrap().clone();
    assert!(
        seen.iter()
            .any(|l| l.contains(&format!("/v2/{repo}/manifests/latest"))),
        "the registry was reached through the proxy: {seen:?}"
    );
}

#[tokio::test]
async fn local_registries_fall_back_to_plain_http_without_insecure() {
    let e = env("oci-local").await;
    let repo = e.repo("local");
    let digest = e.push(&repo, "latest", flux_layer(&[("a", "1")])).await;
    // 127.0.0.1 is a local address: HTTPS is tried first, then plain HTTP, as Flux does.
    e.create(
        "local",
        serde_json::json!({"url": format!("oci://{}/{repo}", e.registry()), "interval": "10m"}),
    )
    .await;
    assert_eq!(
        revision(&e.wait_ready("local").await),
        format!("latest@{digest}")
    );
}

#[tokio::test]
async fn events_are_forwarded_to_notification_controller_in_flux_format() {
    let receiver = support::events::EventReceiver::start().await;
    let e = env_with("oci-events", &[&receiver.flag()]).await;
    let repo = e.repo("events");
    let digest = e.push(&repo, "latest", flux_layer(&[("a", "1")])).await;
    let mut obj = e.spec(&repo, serde_json::json!({}));
    obj["ref"] = serde_json::json!({"tag": "latest"});
    let created: OCIRepository = serde_json::from_value(serde_json::json!({
        "apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "OCIRepository",
        "metadata": {"name": "events", "namespace": e.ns.name, "annotations": {"event.toolkit.fluxcd.io/team": "platform"}},
        "spec": obj,
    }))
    .unwrap();
    e.api
        .create(&PostParams::default(), &created)
        .await
        .unwrap();
    e.create(
        "failing",
        e.spec(&repo, serde_json::json!({"ref": {"semver": ">=99.0.0"}})),
    )
    .await;
    e.wait_ready("events").await;
    e.wait_failed("failing").await;

    let info = receiver
        .wait_for("NewArtifact", |ev| ev["reason"] == "NewArtifact")
        .await;
    let error = receiver
        .wait_for("ReadOperationFailed", |ev| {
            ev["reason"] == "ReadOperationFailed"
        })
        .await;
    assert_eq!(info["severity"], "info");
    assert_eq!(info["involvedObject"]["kind"], "OCIRepository");
    assert_eq!(info["involvedObject"]["name"], "events");
    assert_eq!(info["involvedObject"]["namespace"], e.ns.name.as_str());
    assert_eq!(
        info["involvedObject"]["apiVersion"],
        "source.toolkit.fluxcd.io/v1"
    );
    assert_eq!(info["reportingController"], "source-controller");
    assert_eq!(
        info["metadata"]["source.toolkit.fluxcd.io/revision"],
        format!("latest@{digest}")
    );
    assert_eq!(
        info["metadata"]["team"], "platform",
        "event.toolkit.fluxcd.io/ annotations travel as metadata"
    );
    // Flux 1.10: the pushed revision travels as originRevision; the message names both origins.
    let origin = format!("main@sha1:{}", "0".repeat(40));
    assert_eq!(
        info["metadata"]["source.toolkit.fluxcd.io/originRevision"],
        origin.as_str()
    );
    assert!(
        info["message"].as_str().unwrap().ends_with(&format!(
            ", origin source 'https://github.com/example/manifests', origin revision '{origin}'"
        )),
        "{}",
        info["message"]
    );
    assert!(
        info["message"]
            .as_str()
            .unwrap()
            .starts_with("stored artifact with revision")
    );
    assert_eq!(error["severity"], "error");
    assert_eq!(error["involvedObject"]["name"], "failing");
}

/// 1,000 objects on one signed artifact verify once: a verification that succeeded for a
/// digest under some material is reused by the next object with the same digest and material,
/// and by no object with other material.
#[tokio::test]
async fn a_signature_is_verified_once_per_digest_and_material() {
    let e = env("oci-verify-once").await;
    let (keys, stranger) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    support::cosign::generate_key_pair(&e.platform, keys.path());
    support::cosign::generate_key_pair(&e.platform, stranger.path());
    let repo = e.repo("signed");
    let digest = e
        .push(&repo, "latest", flux_layer(&[("a.yaml", "v: 1")]))
        .await;
    let reference = format!("{}/{repo}@{digest}", e.registry());
    support::cosign::sign(&e.platform, keys.path(), "cosign.key", &reference);
    for (name, dir) in [("trusted", &keys), ("stranger", &stranger)] {
        let public = std::fs::read(dir.path().join("cosign.pub")).unwrap();
        e.secret(name, "Opaque", &[("cosign.pub", public)]).await;
    }
    let log = std::path::PathBuf::from(&e.platform.env["DRIFTLESS_REGISTRY_LOG"]);
    let verify = |secret: &str| serde_json::json!({"verify": {"provider": "cosign", "secretRef": {"name": secret}}});
    let signature_tag = format!("/v2/{repo}/manifests/{}.sig", digest.replace(':', "-"));

    let before = registry_requests(&log, &repo).len();
    e.create("first", e.spec(&repo, verify("trusted"))).await;
    e.wait_ready("first").await;
    let requests = registry_requests(&log, &repo)[before..].to_vec();
    assert!(
        requests.iter().any(|(_, path)| *path == signature_tag),
        "the first object looks the signature up: {requests:?}"
    );

    let before = registry_requests(&log, &repo).len();
    e.create("second", e.spec(&repo, verify("trusted"))).await;
    let second = e.wait_ready("second").await;
    assert_eq!(
        registry_requests(&log, &repo)[before..].to_vec(),
        vec![("HEAD".to_string(), format!("/v2/{repo}/manifests/latest"))],
        "the same digest under the same key: neither pulled nor verified again"
    );
    let verified = condition(&second, "SourceVerified").unwrap();
    assert_eq!(verified.status, ConditionStatus::True);
    assert_eq!(
        second.status.as_ref().unwrap().verified_signature,
        e.wait_ready("first")
            .await
            .status
            .unwrap()
            .verified_signature,
        "the reused verification reports the same signature"
    );

    // Another key is other material: verified on its own, and refused.
    e.create("stranger", e.spec(&repo, verify("stranger")))
        .await;
    let refused = e.wait_failing("stranger", "VerificationError").await;
    assert_eq!(
        condition(&refused, "SourceVerified").map(|c| c.status),
        Some(ConditionStatus::False)
    );
}

#[tokio::test]
async fn cosign_key_signatures_are_verified_before_anything_is_pulled() {
    let e = env("oci-cosign").await;
    let keys = tempfile::tempdir().unwrap();
    support::cosign::generate_key_pair(&e.platform, keys.path());
    let repo = e.repo("signed");
    let first = e
        .push(&repo, "latest", flux_layer(&[("a.yaml", "v: 1")]))
        .await;
    let reference = format!("{}/{repo}@{first}", e.registry());
    support::cosign::sign(&e.platform, keys.path(), "cosign.key", &reference);
    let public = std::fs::read_to_string(keys.path().join("cosign.pub")).unwrap();
    e.secret(
        "cosign-keys",
        "Opaque",
        &[
            ("unrelated.txt", b"x".to_vec()),
            ("cosign.pub", public.into_bytes()),
        ],
    )
    .await;
    let verify =
        serde_json::json!({"verify": {"provider": "cosign", "secretRef": {"name": "cosign-keys"}}});
    e.create("signed", e.spec(&repo, verify.clone())).await;
    let obj = e.wait_ready("signed").await;
    let verified = condition(&obj, "SourceVerified").unwrap();
    assert_eq!(
        (verified.status, verified.reason.as_str()),
        (ConditionStatus::True, "Succeeded")
    );
    assert_eq!(
        verified.message,
        format!("verified signature of revision latest@{first}")
    );
    let stored = e.download(&obj);

    // The tag moves to an unsigned digest: not pulled, the verified artifact stays served.
    let second = e
        .push(&repo, "latest", flux_layer(&[("a.yaml", "v: 2")]))
        .await;
    let obj = e.request_reconcile("signed").await;
    let verified = condition(&obj, "SourceVerified").unwrap();
    assert_eq!(
        (verified.status, verified.reason.as_str()),
        (ConditionStatus::False, "VerificationError")
    );
    assert_eq!(
        verified.message,
        format!(
            "failed to verify the signature using provider 'cosign': no matching signatures were found for '{}/{repo}:latest': it has no signature (no cosign signature tag, no Sigstore bundle referrer)",
            e.registry()
        )
    );
    assert_eq!(ready_status(&obj), Some(ConditionStatus::False));
    assert_eq!(revision(&obj), format!("latest@{first}"));
    assert_eq!(
        e.download(&obj),
        stored,
        "the last verified artifact is still served"
    );
    assert!(
        !has_condition(&obj, "Stalled"),
        "retried: a signature may still come"
    );

    // Signed with another key: still refused. Signed with the trusted key: pulled.
    let other = tempfile::tempdir().unwrap();
    support::cosign::generate_key_pair(&e.platform, other.path());
    let second_ref = format!("{}/{repo}@{second}", e.registry());
    support::cosign::sign(&e.platform, other.path(), "cosign.key", &second_ref);
    let obj = e.request_reconcile("signed").await;
    let refused = condition(&obj, "SourceVerified").unwrap();
    assert_eq!(refused.status, ConditionStatus::False);
    assert!(
        refused
            .message
            .ends_with("a signature was not made by any of the keys [cosign.pub]"),
        "{}",
        refused.message
    );
    support::cosign::sign(&e.platform, keys.path(), "cosign.key", &second_ref);
    e.request_reconcile("signed").await;
    verified_at(&e, "signed", &format!("latest@{second}")).await;

    // A signature made by `driftless artifact push --sign-key` is accepted too.
    let content = tempfile::tempdir().unwrap();
    std::fs::write(content.path().join("a.yaml"), "v: 3").unwrap();
    let out = std::process::Command::new(support::controller::driftless_bin())
        .args([
            "artifact",
            "push",
            &format!("oci://{}/{repo}:latest", e.registry()),
            "--path",
        ])
        .arg(content.path())
        .args([
            "--source",
            "s",
            "--revision",
            "r",
            "--insecure-registry",
            "--output",
            "json",
            "--sign-key",
        ])
        .arg(keys.path().join("cosign.key"))
        .env("COSIGN_PASSWORD", support::cosign::PASSWORD)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let third = serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()["digest"]
        .as_str()
        .unwrap()
        .to_string();
    e.request_reconcile("signed").await;
    verified_at(&e, "signed", &format!("latest@{third}")).await;
}

/// Key rotation (Flux 2.10's `status.sourceVerificationFingerprint`): replacing the key in the
/// Secret while the digest stays the same verifies the current revision again: with a key that
/// did not sign it, `SourceVerified=False`, the last verified artifact stays served and a new
/// revision signed with the revoked key is not taken; restoring the key recovers and takes it.
#[tokio::test]
async fn a_replaced_key_verifies_the_unchanged_revision_again() {
    let e = env("oci-key-rotation").await;
    let (signer, stranger) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    support::cosign::generate_key_pair(&e.platform, signer.path());
    support::cosign::generate_key_pair(&e.platform, stranger.path());
    let public = |dir: &tempfile::TempDir| std::fs::read(dir.path().join("cosign.pub")).unwrap();
    let repo = e.repo("rotated");
    let first = e
        .push(&repo, "latest", flux_layer(&[("a.yaml", "v: 1")]))
        .await;
    let sign = |digest: &str| {
        support::cosign::sign(
            &e.platform,
            signer.path(),
            "cosign.key",
            &format!("{}/{repo}@{digest}", e.registry()),
        )
    };
    sign(&first);
    e.secret("keys", "Opaque", &[("cosign.pub", public(&signer))])
        .await;
    let verify =
        serde_json::json!({"verify": {"provider": "cosign", "secretRef": {"name": "keys"}}});
    e.create("rotated", e.spec(&repo, verify)).await;
    let obj = e.wait_ready("rotated").await;
    let fingerprint = |o: &OCIRepository| {
        o.status
            .as_ref()
            .and_then(|s| s.source_verification_fingerprint.clone())
    };
    let trusted = fingerprint(&obj).expect("a fingerprint of the verified material");
    let expected = {
        let mut material = b"provider:cosign\0pub:".to_vec();
        material.extend(public(&signer));
        material.push(0);
        sha256(&material)
    };
    assert_eq!(trusted, expected, "Flux's fingerprint of the key");
    let stored = e.download(&obj);

    let secrets: Api<k8s_openapi::api::core::v1::Secret> =
        Api::namespaced(e.client.clone(), &e.ns.name);
    let put_key = |key: Vec<u8>| {
        let secrets = secrets.clone();
        async move {
            let patch = serde_json::json!({"data": {"cosign.pub": k8s_openapi::ByteString(key)}});
            secrets
                .patch("keys", &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .unwrap();
        }
    };
    put_key(public(&stranger)).await;
    let obj = e.request_reconcile("rotated").await;
    let refused = condition(&obj, "SourceVerified").unwrap();
    assert_eq!(
        (refused.status, refused.reason.as_str()),
        (ConditionStatus::False, "VerificationError")
    );
    assert!(
        refused
            .message
            .ends_with("a signature was not made by any of the keys [cosign.pub]"),
        "{}",
        refused.message
    );
    assert_eq!(ready_status(&obj), Some(ConditionStatus::False));
    assert_eq!(revision(&obj), format!("latest@{first}"));
    assert_eq!(
        e.download(&obj),
        stored,
        "the last verified artifact is still served"
    );

    // A new revision signed with the replaced key is not taken either.
    let second = e
        .push(&repo, "latest", flux_layer(&[("a.yaml", "v: 2")]))
        .await;
    sign(&second);
    let obj = e.request_reconcile("rotated").await;
    assert_eq!(
        condition(&obj, "SourceVerified").unwrap().status,
        ConditionStatus::False
    );
    assert_eq!(revision(&obj), format!("latest@{first}"));

    // The key restored: verified again, the new revision pulled, the fingerprint as before.
    put_key(public(&signer)).await;
    e.request_reconcile("rotated").await;
    let obj = verified_at(&e, "rotated", &format!("latest@{second}")).await;
    assert_eq!(fingerprint(&obj).as_deref(), Some(trusted.as_str()));
}

/// Waits until `name` has stored `revision`, which must then be verified.
async fn verified_at(e: &Env, name: &str, stored: &str) -> OCIRepository {
    let obj = e
        .wait_until(name, &format!("verified at {stored}"), |o| {
            revision(o) == stored
        })
        .await;
    assert_eq!(
        condition(&obj, "SourceVerified").unwrap().status,
        ConditionStatus::True
    );
    obj
}

fn verified_signature(obj: &OCIRepository) -> Option<VerifiedSignature> {
    obj.status
        .as_ref()
        .and_then(|s| s.verified_signature.clone())
}

async fn registry_has_tag(registry: &str, repo: &str, tag: &str) -> bool {
    client(registry).get_manifest(repo, tag).await.is_ok()
}

#[tokio::test]
async fn cosign_key_bundles_are_found_through_referrers_and_through_the_tag_fallback() {
    let e = env("oci-bundle-key").await;
    let sigstore = Sigstore::new(&e.platform);
    let (trusted, other) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    support::cosign::generate_key_pair(&e.platform, trusted.path());
    support::cosign::generate_key_pair(&e.platform, other.path());
    let read = |d: &tempfile::TempDir| std::fs::read(d.path().join("cosign.pub")).unwrap();
    // Several keys, of which one signed: every `.pub` entry is tried.
    e.secret(
        "keys",
        "Opaque",
        &[
            ("another.pub", read(&other)),
            ("trusted.pub", read(&trusted)),
        ],
    )
    .await;
    let verify =
        serde_json::json!({"verify": {"provider": "cosign", "secretRef": {"name": "keys"}}});
    let key = trusted.path().join("cosign.key");

    // The platform registry has no referrers API: cosign writes the `sha256-<hex>` index.
    let repo = e.repo("app");
    let digest = e
        .push(&repo, "latest", flux_layer(&[("a.yaml", "v: 1")]))
        .await;
    sigstore.sign_with_key(&key, &format!("{}/{repo}@{digest}", e.registry()));
    let fallback_tag = digest.replace(':', "-");
    assert!(registry_has_tag(&e.registry(), &repo, &fallback_tag).await);
    assert!(!registry_has_tag(&e.registry(), &repo, &format!("{fallback_tag}.sig")).await);
    e.create("fallback", e.spec(&repo, verify.clone())).await;
    let obj = e.wait_ready("fallback").await;
    let found = verified_signature(&obj).expect("verifiedSignature");
    assert_eq!(
        (
            found.provider.as_str(),
            found.format.as_str(),
            found.key.as_deref()
        ),
        ("cosign", "sigstore-bundle", Some("trusted.pub"))
    );
    assert_eq!(found.digest, digest);
    assert_eq!((found.subject, found.log_index), (None, None));

    // A registry with the referrers API: cosign attaches the bundle there, no fallback tag.
    let referrers = e.platform.env["DRIFTLESS_REGISTRY_REFERRERS"].clone();
    let digest = push_flux_artifact(
        &client(&referrers),
        &repo,
        "latest",
        flux_layer(&[("a.yaml", "v: 2")]),
        FLUX_LAYER,
        &[],
    )
    .await;
    sigstore.sign_with_key(&key, &format!("{referrers}/{repo}@{digest}"));
    assert!(!registry_has_tag(&referrers, &repo, &digest.replace(':', "-")).await);
    let mut spec = verify.clone();
    spec["url"] = format!("oci://{referrers}/{repo}").into();
    spec["interval"] = "10m".into();
    spec["insecure"] = true.into();
    e.create("referrers", spec).await;
    let obj = e.wait_ready("referrers").await;
    let found = verified_signature(&obj).expect("verifiedSignature");
    assert_eq!(
        (found.key.as_deref(), found.digest.as_str()),
        (Some("trusted.pub"), digest.as_str())
    );

    // Verification removed from the spec: no SourceVerified condition, no verified signer.
    e.patch_spec("referrers", serde_json::json!({"verify": null}))
        .await;
    e.wait_until("referrers", "without verification status", |o| {
        is_current(o) && verified_signature(o).is_none() && !has_condition(o, "SourceVerified")
    })
    .await;
}

/// OCIRepository `app` following `repo`, verified keyless against `sigstore`'s trusted root.
async fn create_keyless(e: &Env, sigstore: &Sigstore, repo: &str) {
    let root = sigstore.trusted_root();
    e.secret("trust", "Opaque", &[("trusted_root.json", root)])
        .await;
    e.create("app", keyless_spec(e, repo)).await;
}

fn keyless_spec(e: &Env, repo: &str) -> serde_json::Value {
    e.spec(
        repo,
        serde_json::json!({"verify": {
            "provider": "cosign",
            "trustedRootSecretRef": {"name": "trust"},
            "matchOIDCIdentity": [
                {"issuer": "^https://nowhere\\.invalid$", "subject": ".*"},
                {"issuer": ISSUER_RE, "subject": SUBJECT_RE},
            ],
        }}),
    )
}

#[tokio::test]
async fn keyless_bundles_with_a_logged_matching_identity_are_accepted() {
    let receiver = support::events::EventReceiver::start().await;
    let e = env_with("oci-keyless", &[&receiver.flag()]).await;
    let sigstore = Sigstore::new(&e.platform);
    let repo = e.repo("app");
    let digest = e
        .push(&repo, "latest", flux_layer(&[("a.yaml", "v: 1")]))
        .await;
    let reference = format!("{}/{repo}@{digest}", e.registry());
    sigstore.sign_keyless(&sigstore.signer(), &reference);
    sigstore.log(&e.registry(), &repo, &digest);
    // The material is what cosign itself accepts.
    let out = sigstore.cosign_verify(&reference, SUBJECT_RE, ISSUER_RE);
    assert!(
        out.status.success(),
        "cosign verify: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    create_keyless(&e, &sigstore, &repo).await;
    let obj = e.wait_ready("app").await;
    let verified = condition(&obj, "SourceVerified").unwrap();
    assert_eq!(
        (verified.status, verified.reason.as_str()),
        (ConditionStatus::True, "Succeeded")
    );
    let found = verified_signature(&obj).expect("verifiedSignature");
    assert_eq!(found.subject.as_deref(), Some(SUBJECT));
    assert_eq!(found.issuer.as_deref(), Some(ISSUER));
    assert_eq!(found.key, None);
    assert_eq!(found.digest, digest);
    assert_eq!(found.log_index, Some(LOG_INDEX));
    let logged: jiff::Timestamp = found
        .integrated_time
        .as_deref()
        .expect("integrated time")
        .parse()
        .unwrap();
    assert!(
        (jiff::Timestamp::now() - logged).get_seconds().abs() < 3600,
        "{logged}"
    );

    let event = receiver
        .wait_for("NewArtifact", |ev| ev["reason"] == "NewArtifact")
        .await;
    let meta = &event["metadata"];
    assert_eq!(meta["verification.driftless.dev/subject"], SUBJECT);
    assert_eq!(meta["verification.driftless.dev/issuer"], ISSUER);
    assert_eq!(meta["verification.driftless.dev/digest"], digest.as_str());
    assert_eq!(
        meta["verification.driftless.dev/log-index"],
        LOG_INDEX.to_string()
    );
    assert_eq!(
        meta["source.toolkit.fluxcd.io/revision"],
        format!("latest@{digest}")
    );
}

#[tokio::test]
async fn keyless_legacy_signature_tags_with_a_rekor_entry_are_accepted() {
    let e = env("oci-keyless-legacy").await;
    let sigstore = Sigstore::new(&e.platform);
    let repo = e.repo("app");
    let digest = e
        .push(&repo, "latest", flux_layer(&[("a.yaml", "v: 1")]))
        .await;
    let reference = format!("{}/{repo}@{digest}", e.registry());
    sigstore.sign_keyless_legacy(&sigstore.signer(), &reference);
    // Without its Rekor entry the signature proves no signing time: refused.
    create_keyless(&e, &sigstore, &repo).await;
    let obj = e
        .wait()
        .for_condition("app", "SourceVerified", |c| {
            c.status == ConditionStatus::False
        })
        .await;
    let refused = condition(&obj, "SourceVerified").unwrap();
    assert!(
        refused.message.contains("no transparency log proof"),
        "{}",
        refused.message
    );

    sigstore.log_legacy(&e.registry(), &repo, &digest);
    let out = sigstore.cosign2_verify(&reference, SUBJECT_RE, ISSUER_RE);
    assert!(
        out.status.success(),
        "cosign verify: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    e.request_reconcile("app").await;
    let obj = e.wait_ready("app").await;
    let found = verified_signature(&obj).expect("verifiedSignature");
    assert_eq!(found.format, "cosign-signature-tag");
    assert_eq!(found.subject.as_deref(), Some(SUBJECT));
    assert_eq!(found.issuer.as_deref(), Some(ISSUER));
    assert_eq!(found.log_index, Some(LOG_INDEX));
    assert!(found.integrated_time.is_some());
}

/// After a refused revision: the reason is named, nothing of it is stored, the last verified
/// artifact is still the one served, and the object is retried rather than stalled.
async fn assert_refused(e: &Env, first: &str, refused: &str, served: &[u8], expected: &str) {
    let obj = e.request_reconcile("app").await;
    let verified = condition(&obj, "SourceVerified").unwrap();
    assert_eq!(
        (verified.status, verified.reason.as_str()),
        (ConditionStatus::False, "VerificationError")
    );
    assert!(
        verified.message.contains(expected),
        "expected {expected:?} in {:?}",
        verified.message
    );
    assert_eq!(ready_status(&obj), Some(ConditionStatus::False));
    assert!(!has_condition(&obj, "Stalled"), "{}", verified.message);
    assert_eq!(revision(&obj), format!("latest@{first}"));
    assert_eq!(
        e.download(&obj),
        served,
        "the last verified artifact is still served"
    );
    let path = format!("/ocirepository/{}/app/{refused}.tar.gz", e.ns.name);
    assert_eq!(
        http_get(e.controller.storage_port, &path).0,
        404,
        "{path} never stored"
    );
    let warned = e.events("app").await.into_iter().any(|ev| {
        ev.type_.as_deref() == Some("Warning")
            && ev.message.as_deref().is_some_and(|m| m.contains(expected))
    });
    assert!(warned, "a Warning event names {expected:?}");
}

#[tokio::test]
async fn keyless_refusals_name_their_cause_and_keep_the_last_verified_artifact() {
    let e = env("oci-keyless-no").await;
    let sigstore = Sigstore::new(&e.platform);
    let (registry, repo) = (e.registry(), e.repo("app"));
    let at = |digest: &str| format!("{registry}/{repo}@{digest}");
    let first = e
        .push(&repo, "latest", flux_layer(&[("a.yaml", "v: 1")]))
        .await;
    sigstore.sign_keyless(&sigstore.signer(), &at(&first));
    sigstore.log(&registry, &repo, &first);
    create_keyless(&e, &sigstore, &repo).await;
    let served = e.download(&e.wait_ready("app").await);
    let mut version = 1;
    let mut next = async || {
        version += 1;
        e.push(
            &repo,
            "latest",
            flux_layer(&[("a.yaml", &format!("v: {version}"))]),
        )
        .await
    };

    let unsigned = next().await;
    assert_refused(&e, &first, &unsigned, &served, "it has no signature").await;

    let wrong_subject = next().await;
    let intruder = sigstore.identity("intruder", "intruder@test.invalid", ISSUER);
    sigstore.sign_keyless(&intruder, &at(&wrong_subject));
    sigstore.log(&registry, &repo, &wrong_subject);
    let cosign = sigstore.cosign_verify(&at(&wrong_subject), SUBJECT_RE, ISSUER_RE);
    assert!(!cosign.status.success(), "cosign refuses it too");
    let found = "none of the expected identities matched what was in the certificate, got subjects [intruder@test.invalid] with issuer https://oidc.test.invalid";
    assert_refused(&e, &first, &wrong_subject, &served, found).await;

    let wrong_issuer = next().await;
    let elsewhere = sigstore.identity("elsewhere", SUBJECT, "https://other-issuer.invalid");
    sigstore.sign_keyless(&elsewhere, &at(&wrong_issuer));
    sigstore.log(&registry, &repo, &wrong_issuer);
    let found = "got subjects [signer@test.invalid] with issuer https://other-issuer.invalid";
    assert_refused(&e, &first, &wrong_issuer, &served, found).await;

    let untrusted_ca = next().await;
    sigstore.sign_keyless(
        &sigstore.untrusted_identity("untrusted"),
        &at(&untrusted_ca),
    );
    sigstore.log(&registry, &repo, &untrusted_ca);
    let cosign = sigstore.cosign_verify(&at(&untrusted_ca), ".*", ".*");
    assert!(!cosign.status.success(), "cosign refuses it too");
    assert_refused(
        &e,
        &first,
        &untrusted_ca,
        &served,
        "does not chain to a trusted certificate authority",
    )
    .await;

    let unlogged = next().await;
    sigstore.sign_keyless(&sigstore.signer(), &at(&unlogged));
    assert_refused(&e, &first, &unlogged, &served, "no transparency log proof").await;

    let untimed = next().await;
    sigstore.sign_keyless(&sigstore.signer(), &at(&untimed));
    sigstore.log_without_timestamp(&registry, &repo, &untimed);
    assert_refused(&e, &first, &untimed, &served, "no signed entry timestamp").await;

    let other_digest = next().await;
    sigstore.copy_bundle(&registry, &repo, &first, &other_digest);
    let found = format!("a Sigstore bundle signs {first}, not {other_digest}");
    assert_refused(&e, &first, &other_digest, &served, &found).await;

    let corrupt = next().await;
    sigstore.sign_keyless(&sigstore.signer(), &at(&corrupt));
    sigstore.log(&registry, &repo, &corrupt);
    sigstore.corrupt_signature(&registry, &repo, &corrupt);
    assert_refused(
        &e,
        &first,
        &corrupt,
        &served,
        "does not verify with its signing certificate's key",
    )
    .await;

    // A trusted root that is not there: retried, nothing pulled.
    let mut spec = keyless_spec(&e, &repo);
    spec["verify"]["trustedRootSecretRef"]["name"] = "missing".into();
    e.patch_spec("app", spec).await;
    assert_refused(&e, &first, &corrupt, &served, "\"missing\" not found").await;
}

/// What the controller may hold at its peak while four hostile tag lists are refused: with the
/// tag-list limits it peaked near 70 MiB (a debug build), without them past 370 MiB.
const MAX_PEAK_RSS_KIB: u64 = 128 * 1024;

#[tokio::test]
async fn hostile_tag_lists_end_in_a_named_limit_within_bounded_memory() {
    let e = env("oci-tags").await;
    let hostile = support::hostile::serve(support::hostile::tag_lists()).await;
    let lists = [
        ("endless", "the tag list exceeds the limit of 1000 pages"),
        (
            "bulky",
            "the tag list exceeds the limit of 8 MiB of responses",
        ),
        (
            "huge",
            "the tag list exceeds the limit of 8 MiB of responses",
        ),
        ("packed", "the tag list exceeds the limit of 100000 tags"),
    ];
    let cases: Vec<Case> = lists
        .iter()
        .map(|(list, limit)| {
            let prefix = format!(
                "failed to determine the artifact tag for 'oci://{hostile}/{list}': listing tags at http://{hostile}/v2/{list}/tags/list"
            );
            case(
                *list,
                serde_json::json!({"url": format!("oci://{hostile}/{list}"), "interval": "10m",
                                   "insecure": true, "ref": {"semver": ">=0.0.0"}}),
                Expect::fetch_failed(
                    "ReadOperationFailed",
                    Message::All(vec![Message::starts_with(prefix), Message::ends_with(*limit)]),
                ),
            )
        })
        .collect();
    e.run_cases(&cases).await;
    let peak = e.controller.peak_rss_kib();
    assert!(
        peak < MAX_PEAK_RSS_KIB,
        "peak RSS {peak} KiB, more than {MAX_PEAK_RSS_KIB} KiB"
    );
    // The controller is still up and serving.
    let repo = e.repo("after");
    let digest = e.push(&repo, "latest", flux_layer(&[("a", "1")])).await;
    e.create("after", e.spec(&repo, serde_json::json!({})))
        .await;
    assert_eq!(
        revision(&e.wait_ready("after").await),
        format!("latest@{digest}")
    );
}

#[tokio::test]
async fn a_plain_http_fallback_carries_no_credentials_unless_the_object_sets_insecure() {
    let e = env("oci-clear").await;
    let basic = mode(&e, "DRIFTLESS_REGISTRY_BASIC");
    let repo = e.repo("private");
    let digest = push_to(&basic, &repo).await;
    // The basic-auth registry speaks plain HTTP; the relay gives it a 127.0.0.1 address of its
    // own, where Flux's rules allow a fallback to plain HTTP without `insecure`.
    let relay = support::relay::Relay::start(&basic.registry).await;
    let user = e.platform.env["DRIFTLESS_REGISTRY_USER"].clone();
    let password = e.platform.env["DRIFTLESS_REGISTRY_PASSWORD"].clone();
    e.docker_secret("creds", &relay.address, &user, &password)
        .await;
    let url = format!("oci://{}/{repo}", relay.address);
    e.create(
        "unasked",
        serde_json::json!({"url": url, "interval": "10m", "secretRef": {"name": "creds"}}),
    )
    .await;
    let failed = e.wait_failed("unasked").await;
    assert_eq!(failed.reason, "OCIArtifactPullFailed");
    assert!(
        failed.message.ends_with("the registry asks for authentication over plain HTTP; credentials are sent over plain HTTP only when the object sets `insecure: true`"),
        "{}",
        failed.message
    );
    assert!(
        relay.plain_connections() > 0,
        "the anonymous fallback was tried"
    );
    let clear = relay.plain_text().to_ascii_lowercase();
    assert!(
        clear.contains("get /v2/") && !clear.contains("authorization:"),
        "no credentials in clear: {clear}"
    );

    // Asked for, the same credentials do go over plain HTTP (and the relay would see them).
    e.create("asked", serde_json::json!({"url": url, "interval": "10m", "insecure": true, "secretRef": {"name": "creds"}})).await;
    assert_eq!(
        revision(&e.wait_ready("asked").await),
        format!("latest@{digest}")
    );
    assert!(
        relay
            .plain_text()
            .to_ascii_lowercase()
            .contains("authorization: basic "),
        "the relay sees credentials sent in clear"
    );
}

#[tokio::test]
async fn a_registry_that_spoke_tls_is_never_spoken_to_in_plain_http() {
    let e = env("oci-downgrade").await;
    let tls = mode(&e, "DRIFTLESS_REGISTRY_TLS");
    let repo = e.repo("tls");
    let digest = push_to(&tls, &repo).await;
    // The TLS registry behind a relay on a 127.0.0.1 port of its own: a private address, where
    // a registry that cannot be reached over HTTPS may be tried in plain HTTP.
    let relay = support::relay::Relay::start(&tls.registry).await;
    let ca = std::fs::read(&e.platform.env["DRIFTLESS_REGISTRY_CA"]).unwrap();
    e.secret("ca", "Opaque", &[("ca.crt", ca)]).await;
    // Both objects share one connection: same registry, credentials and transport.
    let spec = serde_json::json!({"url": format!("oci://{}/{repo}", relay.address),
                                  "interval": "10m", "certSecretRef": {"name": "ca"}});
    e.create("first", spec.clone()).await;
    assert_eq!(
        revision(&e.wait_ready("first").await),
        format!("latest@{digest}")
    );

    relay.set_down(true);
    let unreachable = e.request_reconcile("first").await;
    let failed = condition(&unreachable, "FetchFailed").expect("FetchFailed while down");
    assert_eq!(failed.reason, "OCIArtifactPullFailed", "{}", failed.message);
    assert_eq!(
        relay.plain_connections(),
        0,
        "a registry that answered over TLS gets no plain-HTTP fallback: {}",
        relay.plain_text()
    );

    relay.set_down(false);
    e.create("second", spec).await;
    assert_eq!(
        revision(&e.wait_ready("second").await),
        format!("latest@{digest}"),
        "another object with the same credentials still speaks TLS"
    );
    let back = e.request_reconcile("first").await;
    assert!(is_current(&back) && !has_condition(&back, "FetchFailed"));
    assert_eq!(relay.plain_connections(), 0, "{}", relay.plain_text());
    assert!(relay.tls_connections() > 0);
}

/// A manifest of one Flux layer, and that layer's blob, as a hostile registry serves them.
fn manifest_with_layer(layer: &[u8], note: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.cncf.flux.config.v1+json", "digest": sha256(b"{}"), "size": 2},
        "layers": [{"mediaType": FLUX_LAYER, "digest": sha256(layer), "size": layer.len()}],
        "annotations": {"note": note},
    }))
    .unwrap()
}

fn index_of(child_digest: &str, child: &[u8]) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                       "digest": child_digest, "size": child.len(),
                       "platform": {"architecture": "amd64", "os": "linux"}}],
    }))
    .unwrap()
}

fn sha512(bytes: &[u8]) -> String {
    use sha2::Sha512;
    format!("sha512:{}", hex::encode(Sha512::digest(bytes)))
}

#[tokio::test]
async fn index_children_are_verified_whatever_their_digest_algorithm() {
    let e = env("oci-digests").await;
    const INDEX: &str = "application/vnd.oci.image.index.v1+json";
    const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    let good = flux_layer(&[("a.yaml", "signed-off: true\n")]);
    let evil = flux_layer(&[("a.yaml", "evil: true\n")]);
    let honest = manifest_with_layer(&good, "honest");
    let announced = manifest_with_layer(&good, "announced");
    let substitute = manifest_with_layer(&evil, "substitute");
    let md5 = format!("md5:{}", "0".repeat(32));
    let entries = [
        // The index names a sha512 digest; what is served under it is another manifest.
        ("mismatch", index_of(&sha512(&announced), &announced)),
        ("bogus", index_of(&md5, &substitute)),
        ("honest", index_of(&sha512(&honest), &honest)),
    ];
    let mut content = std::collections::HashMap::new();
    let mut add = |path: String, media_type: &str, bytes: Vec<u8>| {
        content.insert(path, (media_type.to_string(), bytes));
    };
    for (tag, index) in &entries {
        add(format!("/v2/app/manifests/{tag}"), INDEX, index.clone());
        add(
            format!("/v2/app/manifests/{}", sha256(index)),
            INDEX,
            index.clone(),
        );
    }
    add(
        format!("/v2/app/manifests/{}", sha512(&announced)),
        MANIFEST,
        substitute.clone(),
    );
    add(format!("/v2/app/manifests/{md5}"), MANIFEST, substitute);
    add(
        format!("/v2/app/manifests/{}", sha512(&honest)),
        MANIFEST,
        honest,
    );
    for layer in [&good, &evil] {
        let path = format!("/v2/app/blobs/{}", sha256(layer));
        add(path, "application/octet-stream", layer.clone());
    }
    let hostile = support::hostile::serve(support::hostile::fixed(content)).await;
    let by_tag = |tag: &str| {
        serde_json::json!({"url": format!("oci://{hostile}/app"), "interval": "10m",
                           "insecure": true, "ref": {"tag": tag}})
    };
    let objects = e
        .run_cases(&[
            case(
                "mismatch",
                by_tag("mismatch"),
                Expect::fetch_failed(
                    "OCIArtifactPullFailed",
                    Message::All(vec![
                        Message::contains(format!(
                            "/v2/app/manifests/{} has digest sha512:",
                            sha512(&announced)
                        )),
                        Message::ends_with(format!("expected {}", sha512(&announced))),
                    ]),
                ),
            ),
            case(
                "bogus",
                by_tag("bogus"),
                Expect::fetch_failed(
                    "OCIArtifactPullFailed",
                    Message::ends_with(format!(
                        "digest '{md5}' uses the algorithm 'md5': only sha256 and sha512 can be verified"
                    )),
                ),
            ),
            case(
                "honest",
                by_tag("honest"),
                Expect::Ready(None),
            ),
        ])
        .await;
    for name in ["mismatch", "bogus"] {
        let obj = e.api.get(name).await.unwrap();
        assert!(
            obj.status.unwrap().artifact.is_none(),
            "{name}: nothing stored"
        );
    }
    assert_eq!(
        untar(&e.download(&objects["honest"])),
        files(&[("a.yaml", "signed-off: true\n")])
    );
}

/// A Notary Project trust policy Secret: `trustpolicy.json` (one statement for every
/// repository) and the trusted certificate.
fn notation_secret(
    level: &str,
    identity: &str,
    certificate: Vec<u8>,
) -> [(&'static str, Vec<u8>); 2] {
    let policy = serde_json::json!({"version": "1.0", "trustPolicies": [{
        "name": "driftless", "registryScopes": ["*"],
        "signatureVerification": {"level": level},
        "trustStores": ["ca:driftless"], "trustedIdentities": [identity],
    }]});
    [
        ("trustpolicy.json", policy.to_string().into_bytes()),
        ("root.crt", certificate),
    ]
}

/// Signatures made by the real notation CLI: JWS found through the referrers tag schema (a
/// registry without the referrers API), COSE through the referrers API; a wrong CA and an
/// untrusted identity are refused under `strict` (nothing pulled, the verified artifact still
/// served), and `audit` only logs the identity failure: pulled, with no verification reported,
/// as Flux does.
#[tokio::test]
async fn notation_signatures_are_verified_under_the_trust_policy() {
    use support::notation::{Notation, SIGNER_IDENTITY};
    let e = env("oci-notation").await;
    let notation = Notation::new(&e.platform);
    let repo = e.repo("app");
    let first = e
        .push(&repo, "latest", flux_layer(&[("a.yaml", "v: 1")]))
        .await;
    notation.sign(&format!("{}/{repo}@{first}", e.registry()), "jws", &[]);
    let root = notation.certificate("root.crt");
    e.secret(
        "notation",
        "Opaque",
        &notation_secret("strict", SIGNER_IDENTITY, root.clone()),
    )
    .await;
    let verify =
        serde_json::json!({"verify": {"provider": "notation", "secretRef": {"name": "notation"}}});
    e.create("app", e.spec(&repo, verify.clone())).await;
    let obj = e.wait_ready("app").await;
    let verified = condition(&obj, "SourceVerified").unwrap();
    assert_eq!(
        (
            verified.status,
            verified.reason.as_str(),
            verified.message.as_str()
        ),
        (
            ConditionStatus::True,
            "Succeeded",
            format!("verified signature of revision latest@{first}").as_str()
        )
    );
    let found = verified_signature(&obj).expect("verifiedSignature");
    assert_eq!(
        (
            found.provider.as_str(),
            found.format.as_str(),
            found.digest.as_str()
        ),
        ("notation", "notation-jws", first.as_str())
    );
    let subject = found.subject.unwrap_or_default();
    assert!(subject.contains("CN=driftless.test signer"), "{subject}");
    assert!(
        obj.status
            .as_ref()
            .unwrap()
            .source_verification_fingerprint
            .is_some()
    );
    let served = e.download(&obj);

    // COSE, attached through the referrers API only.
    let referrers = e.platform.env["DRIFTLESS_REGISTRY_REFERRERS"].clone();
    let cose = push_flux_artifact(
        &client(&referrers),
        &repo,
        "latest",
        flux_layer(&[("a.yaml", "v: cose")]),
        FLUX_LAYER,
        &[],
    )
    .await;
    notation.sign(
        &format!("{referrers}/{repo}@{cose}"),
        "cose",
        &["--force-referrers-tag=false"],
    );
    assert!(!registry_has_tag(&referrers, &repo, &cose.replace(':', "-")).await);
    let mut spec = verify.clone();
    spec["url"] = format!("oci://{referrers}/{repo}").into();
    spec["interval"] = "10m".into();
    spec["insecure"] = true.into();
    e.create("referrers", spec).await;
    let found = verified_signature(&e.wait_ready("referrers").await).expect("verifiedSignature");
    assert_eq!(
        (found.format.as_str(), found.digest.as_str()),
        ("notation-cose", cose.as_str())
    );

    // The wrong CA: refused before anything is pulled.
    let second = e
        .push(&repo, "latest", flux_layer(&[("a.yaml", "v: 2")]))
        .await;
    notation.sign(&format!("{}/{repo}@{second}", e.registry()), "jws", &[]);
    let other = notation.certificate("other-root.crt");
    e.secret(
        "notation",
        "Opaque",
        &notation_secret("strict", SIGNER_IDENTITY, other),
    )
    .await;
    let refused_because = |obj: &OCIRepository, expected: &str| {
        let refused = condition(obj, "SourceVerified").unwrap();
        assert_eq!(
            (refused.status, refused.reason.as_str()),
            (ConditionStatus::False, "VerificationError")
        );
        assert!(
            refused.message.starts_with(
                "failed to verify the signature using provider 'notation': signature verification failed\nfailed to verify signature with digest sha256:"
            ) && refused.message.contains(expected),
            "{}",
            refused.message
        );
        assert_eq!(revision(obj), format!("latest@{first}"));
        assert_eq!(
            e.download(obj),
            served,
            "the verified artifact is still served"
        );
    };
    let obj = e.request_reconcile("app").await;
    refused_because(
        &obj,
        "the signature's certificate chain does not contain any trusted certificate",
    );

    // Strict with an identity the certificate does not have: refused.
    let stranger = "x509.subject: C=US, ST=WA, O=Other Test";
    e.secret(
        "notation",
        "Opaque",
        &notation_secret("strict", stranger, root.clone()),
    )
    .await;
    let obj = e.request_reconcile("app").await;
    refused_because(
        &obj,
        "signing certificate from the digital signature does not match the X.509 trusted identities",
    );

    // Audit: the identity failure is only logged; the artifact is pulled, and no verification
    // is reported.
    e.secret(
        "notation",
        "Opaque",
        &notation_secret("audit", stranger, root),
    )
    .await;
    e.request_reconcile("app").await;
    let obj = e
        .wait_until("app", "the audited revision", |o| {
            revision(o) == format!("latest@{second}") && is_current(o)
        })
        .await;
    assert!(!has_condition(&obj, "SourceVerified"));
    assert!(verified_signature(&obj).is_none());
}

#[tokio::test]
async fn attestations_by_a_trusted_signer_do_not_verify_an_artifact() {
    let e = env("oci-attest").await;
    let sigstore = Sigstore::new(&e.platform);
    let repo = e.repo("app");
    let digest = e
        .push(&repo, "latest", flux_layer(&[("a.yaml", "v: 1")]))
        .await;
    let reference = format!("{}/{repo}@{digest}", e.registry());
    // Everything a signature would have (the trusted identity, a log entry), but it attests.
    sigstore.attest_keyless(&sigstore.signer(), &reference, "slsaprovenance");
    sigstore.log(&e.registry(), &repo, &digest);
    create_keyless(&e, &sigstore, &repo).await;
    let attestation = "a Sigstore bundle holds an attestation (predicate type 'https://slsa.dev/provenance/v0.2'), not a signature ('https://sigstore.dev/cosign/sign/v1')";
    let refused = e
        .wait()
        .for_condition("app", "SourceVerified", |c| {
            c.status == ConditionStatus::False
        })
        .await;
    let verified = condition(&refused, "SourceVerified").unwrap();
    assert_eq!(verified.reason, "VerificationError");
    assert!(
        verified.message.contains(attestation),
        "{}",
        verified.message
    );
    assert_eq!(ready_status(&refused), Some(ConditionStatus::False));
    assert!(
        refused.status.as_ref().unwrap().artifact.is_none(),
        "nothing stored"
    );

    // The same with a trusted key and a custom predicate.
    let keys = tempfile::tempdir().unwrap();
    support::cosign::generate_key_pair(&e.platform, keys.path());
    let keyed_repo = e.repo("keyed");
    let keyed = e
        .push(&keyed_repo, "latest", flux_layer(&[("a.yaml", "v: 1")]))
        .await;
    let keyed_ref = format!("{}/{keyed_repo}@{keyed}", e.registry());
    let key = keys.path().join("cosign.key");
    sigstore.attest_with_key(&key, &keyed_ref, "https://example.com/scan/v1");
    let public = std::fs::read(keys.path().join("cosign.pub")).unwrap();
    e.secret("keys", "Opaque", &[("cosign.pub", public)]).await;
    let verify =
        serde_json::json!({"verify": {"provider": "cosign", "secretRef": {"name": "keys"}}});
    e.create("keyed", e.spec(&keyed_repo, verify)).await;
    let refused = e
        .wait()
        .for_condition("keyed", "SourceVerified", |c| {
            c.status == ConditionStatus::False
        })
        .await;
    let message = &condition(&refused, "SourceVerified").unwrap().message;
    assert!(
        message.contains("holds an attestation (predicate type 'https://example.com/scan/v1')"),
        "{message}"
    );
    assert!(refused.status.as_ref().unwrap().artifact.is_none());

    // `cosign sign` by the same identity and key: both verify.
    sigstore.sign_keyless(&sigstore.signer(), &reference);
    sigstore.log(&e.registry(), &repo, &digest);
    sigstore.sign_with_key(&key, &keyed_ref);
    for (name, digest) in [("app", &digest), ("keyed", &keyed)] {
        e.request_reconcile(name).await;
        let obj = e.wait_ready(name).await;
        assert_eq!(revision(&obj), format!("latest@{digest}"));
        assert_eq!(
            condition(&obj, "SourceVerified").unwrap().status,
            ConditionStatus::True
        );
    }
}
