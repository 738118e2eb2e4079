//! The drop-in, proven with Flux's own controllers (built from their Go modules by
//! `hack/testbin.sh`): Flux's kustomize-controller applies what driftless's source-controller
//! serves.

mod support;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kube::api::PostParams;
use serde_json::json;

use driftless::api::{ConditionStatus, Kustomization, OCIRepository};
use support::controller::SourceController;
use support::oci::{FLUX_LAYER, client, flux_layer, push_flux_artifact};
use support::source::{Sources, tail};

/// Flux's kustomize-controller, watching one namespace, stopped on drop.
struct FluxKustomizeController {
    child: Child,
    log: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl FluxKustomizeController {
    fn start(platform: &support::Platform, namespace: &str) -> Self {
        let build = Command::new(support::repo_root().join("hack/testbin.sh"))
            .arg("flux-kustomize-controller")
            .status()
            .expect("run hack/testbin.sh");
        assert!(
            build.success(),
            "building Flux's kustomize-controller failed"
        );
        let binary = std::path::Path::new(&platform.env["DRIFTLESS_TESTBIN"])
            .join("bin/kustomize-controller");
        let free = || {
            std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port()
        };
        let (metrics, health) = (free(), free());
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("kustomize-controller.log");
        let child = Command::new(binary)
            .args([
                "--watch-all-namespaces=false",
                "--enable-leader-election=false",
                "--log-level=debug",
            ])
            .arg(format!("--metrics-addr=127.0.0.1:{metrics}"))
            .arg(format!("--health-addr=127.0.0.1:{health}"))
            .env("KUBECONFIG", platform.kubeconfig())
            .env("RUNTIME_NAMESPACE", namespace)
            .env("HOME", dir.path())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start Flux's kustomize-controller");
        let mut controller = FluxKustomizeController {
            child,
            log,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while support::controller::http_get_status(health, "/readyz") != Some(200) {
            if let Some(status) = controller.child.try_wait().unwrap() {
                panic!(
                    "kustomize-controller exited with {status}:\n{}",
                    controller.log_text()
                );
            }
            assert!(
                Instant::now() < deadline,
                "kustomize-controller not ready:\n{}",
                controller.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        controller
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for FluxKustomizeController {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn flux_kustomize_controller_applies_what_driftless_serves() {
    let platform = support::platform();
    let kube = platform.client().await;
    support::install_crds(&kube).await;
    support::install_git_repository_crd(&kube).await;
    let ns = support::TestNamespace::new(&platform, &kube, "peer-kc").await;
    let source = SourceController::start(&platform, &ns.name, &[]);
    let flux = FluxKustomizeController::start(&platform, &ns.name);

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
    let deadline = Instant::now() + Duration::from_secs(90);
    let applied = loop {
        let obj = ks.get("app").await.unwrap();
        let status = obj.status.clone().unwrap_or_default();
        let ready = status
            .conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == ConditionStatus::True);
        // Flux writes Ready and the applied revision in separate status patches.
        if ready && status.last_applied_revision.is_some() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "Flux's kustomize-controller did not get Ready: {}\nits log:\n{}",
            serde_json::to_string_pretty(&status).unwrap(),
            tail(&flux.log_text(), 30)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
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
}

/// The flux CLI (v2.7.5, built from its Go module) against the platform.
fn flux(platform: &support::Platform, args: &[&str]) -> std::process::Output {
    let build = Command::new(support::repo_root().join("hack/testbin.sh"))
        .arg("flux")
        .status()
        .expect("run hack/testbin.sh");
    assert!(build.success(), "building the flux CLI failed");
    let home = tempfile::tempdir().unwrap();
    Command::new(std::path::Path::new(&platform.env["DRIFTLESS_TESTBIN"]).join("bin/flux"))
        .args(args)
        .env("KUBECONFIG", platform.kubeconfig())
        .env("HOME", home.path())
        .output()
        .expect("run flux")
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
