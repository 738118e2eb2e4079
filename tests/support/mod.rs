//! Test support for integration tests on the real platform (`hack/platform`).
//!
//! The first test that needs the platform starts it (or finds it running through
//! `.platform/env`); every test gets its own `kube::Client` and a fresh namespace that is
//! deleted when the test ends.
#![allow(dead_code)]

pub mod bench;
pub mod busy;
pub mod cluster;
pub mod controller;
pub mod cosign;
pub mod events;
pub mod hostile;
pub mod hostile_s3;
pub mod listener;
pub mod notation;
pub mod objectstore;
pub mod oci;
pub mod peers;
pub mod proxy;
pub mod registry;
pub mod relay;
pub mod sigstore;
pub mod soak;
pub mod sops;
pub mod source;
pub mod spiffe;
pub mod toxiproxy;
pub mod wait;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::wait::{await_condition, conditions};
use kube::{Api, Client, Config};

/// `sha256:<hex>` of `bytes`, as a digest is written in an OCI manifest or a status.
pub fn sha256(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// What `hack/platform up` exported in `.platform/env`.
#[derive(Debug, Clone)]
pub struct Platform {
    pub env: HashMap<String, String>,
}

impl Platform {
    pub fn kubeconfig(&self) -> PathBuf {
        PathBuf::from(&self.env["KUBECONFIG"])
    }

    pub fn registry(&self) -> &str {
        &self.env["DRIFTLESS_REGISTRY"]
    }

    /// The platform's own kubectl (built from the pinned Kubernetes release), aimed at it.
    pub fn kubectl(&self) -> Command {
        let bin = Path::new(&self.env["DRIFTLESS_TESTBIN"]).join("bin/kubectl");
        let mut cmd = Command::new(bin);
        cmd.env("KUBECONFIG", self.kubeconfig());
        cmd
    }

    pub async fn client(&self) -> Client {
        client_of(&self.kubeconfig()).await
    }

    /// The admin kubeconfig of the platform's second cluster (remote apply).
    pub fn remote_kubeconfig(&self) -> PathBuf {
        PathBuf::from(&self.env["DRIFTLESS_REMOTE_KUBECONFIG"])
    }

    pub async fn remote_client(&self) -> Client {
        client_of(&self.remote_kubeconfig()).await
    }
}

pub async fn client_of(path: &Path) -> Client {
    let kubeconfig = Kubeconfig::read_from(path).expect("platform kubeconfig readable");
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("platform kubeconfig valid");
    Client::try_from(config).expect("client from platform kubeconfig")
}

/// The running platform, started on first use. Concurrent tests in one binary share one start.
pub fn platform() -> Platform {
    static PLATFORM: OnceLock<Platform> = OnceLock::new();
    PLATFORM
        .get_or_init(|| {
            let status = Command::new(repo_root().join("hack/platform"))
                .arg("up")
                .status()
                .expect("run hack/platform up");
            assert!(status.success(), "hack/platform up failed: {status}");
            let env_file = std::env::var("DRIFTLESS_PLATFORM_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|_| repo_root().join(".platform"))
                .join("env");
            Platform {
                env: parse_env_file(&env_file),
            }
        })
        .clone()
}

fn parse_env_file(path: &Path) -> HashMap<String, String> {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    text.lines()
        .filter_map(|line| line.strip_prefix("export "))
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Until every named CRD (`crd/<name>`) is Established, or a minute has passed. `kubectl wait`
/// gives up at once on a CRD whose status has no conditions yet (one created a moment ago), so
/// the condition is read until it is there.
pub fn wait_crds_established(platform: &Platform, names: &[String]) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    for name in names {
        loop {
            let out = platform
                .kubectl()
                .args([
                    "get",
                    name,
                    "-o",
                    "jsonpath={.status.conditions[?(@.type==\"Established\")].status}",
                ])
                .output()
                .expect("run kubectl get");
            if out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "True" {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{name} not Established within a minute: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    }
}

/// Install driftless's CRDs (server-side apply, as `kubectl apply --server-side` would) and
/// wait until the API server serves them. Runs once per test binary.
pub async fn install_crds(client: &Client) {
    static INSTALLED: Mutex<bool> = Mutex::new(false);
    if *INSTALLED.lock().unwrap() {
        return;
    }
    apply_crds(client).await;
    *INSTALLED.lock().unwrap() = true;
}

/// `install_crds` on the cluster `client` reaches, every time: for a cluster a test starts
/// itself.
pub async fn apply_crds(client: &Client) {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in driftless::api::crds::all() {
        let name = crd.metadata.name.clone().expect("CRDs are named");
        api.patch(
            &name,
            &PatchParams::apply("driftless-tests").force(),
            &Patch::Apply(&crd),
        )
        .await
        .unwrap_or_else(|e| panic!("apply CRD {name}: {e}"));
        tokio::time::timeout(
            Duration::from_secs(60),
            await_condition(api.clone(), &name, conditions::is_crd_established()),
        )
        .await
        .unwrap_or_else(|_| panic!("CRD {name} not established within 60s"))
        .unwrap_or_else(|e| panic!("watch CRD {name}: {e}"));
    }
}

/// A namespace of its own for one test; deleted when dropped.
pub struct TestNamespace {
    pub name: String,
    platform: Platform,
}

impl TestNamespace {
    pub async fn new(platform: &Platform, client: &Client, prefix: &str) -> Self {
        let name = format!("{prefix}-{}", unique_suffix());
        let ns: Namespace = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": name, "labels": {"driftless.test/owner": prefix}},
        }))
        .unwrap();
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .unwrap_or_else(|e| panic!("create namespace {name}: {e}"));
        TestNamespace {
            name,
            platform: platform.clone(),
        }
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        // Drop cannot await, and the test's own runtime is blocked while it runs (a client made
        // there would deadlock); a fresh client on a short-lived runtime issues the delete.
        let (name, platform) = (self.name.clone(), self.platform.clone());
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let client = platform.client().await;
                let _ = Api::<Namespace>::all(client)
                    .delete(&name, &DeleteParams::default())
                    .await;
            });
        })
        .join();
    }
}

fn unique_suffix() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "{:x}{:x}",
        nanos ^ std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// Flux's other source CRDs exactly as driftless ships them (`crds/flux-sources/`, `driftless
/// crds --flux-sources`): Flux's kustomize- and source-controller start only with them, and
/// tests of GitRepository sources need the kind.
pub async fn install_flux_source_crds(client: &Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for (file, yaml) in driftless::api::crds::FLUX_SOURCES {
        let crd: CustomResourceDefinition =
            serde_saphyr::from_str(yaml).unwrap_or_else(|e| panic!("{file}: {e}"));
        let name = crd.metadata.name.clone().expect("a CRD has a name");
        crds.patch(
            &name,
            &PatchParams::apply("driftless-tests").force(),
            &Patch::Apply(&crd),
        )
        .await
        .unwrap_or_else(|e| panic!("apply {file}: {e}"));
        tokio::time::timeout(
            Duration::from_secs(60),
            await_condition(crds.clone(), &name, conditions::is_crd_established()),
        )
        .await
        .unwrap_or_else(|_| panic!("{name} established within 60s"))
        .unwrap();
    }
}

/// Benchmarks only (a benchmark may poll; a test may not): polls the list until `n` objects
/// satisfy `done`, for at most `limit`.
pub async fn wait_all<K>(api: &Api<K>, n: usize, limit: Duration, done: impl Fn(&K) -> bool)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let deadline = std::time::Instant::now() + limit;
    loop {
        let list = api
            .list(&kube::api::ListParams::default())
            .await
            .expect("list");
        if list.items.iter().filter(|o| done(o)).count() >= n {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not all {n} objects got there within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Benchmarks only: creates every object, 32 requests at a time.
pub async fn create_all<K>(api: &Api<K>, objects: impl Iterator<Item = K>)
where
    K: kube::Resource + Clone + serde::Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
{
    use futures::StreamExt;
    futures::stream::iter(objects)
        .map(|obj| async move {
            api.create(&PostParams::default(), &obj)
                .await
                .expect("create");
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await;
}

/// The extracted source of Go module `module@version`, downloaded through the Go module proxy
/// (`go mod download`; modules that need a newer Go than the local one use the toolchain
/// `hack/testbin.sh` builds them with, `$GO_NEXT_TOOLCHAIN`).
pub fn go_module_dir(module: &str, version: &str) -> std::path::PathBuf {
    let toolchain = std::env::var("GO_NEXT_TOOLCHAIN").unwrap_or_else(|_| "go1.27.3".into());
    let out = std::process::Command::new("go")
        .args(["mod", "download", "-json", &format!("{module}@{version}")])
        .env("GOTOOLCHAIN", toolchain)
        .env("GOFLAGS", "-mod=mod")
        .current_dir(std::env::temp_dir())
        .output()
        .expect("go mod download");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "go mod download {module}@{version}: {e}: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    match json["Dir"].as_str() {
        Some(dir) => dir.into(),
        None => panic!("go mod download {module}@{version}: {json}"),
    }
}
