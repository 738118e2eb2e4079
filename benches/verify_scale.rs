//! Verification benchmark (a command, not a test): N OCIRepositories on the local platform,
//! three runs — without verification, cosign key (`.sig` tag), and keyless (Sigstore bundle
//! with a log entry, trusted root from a Secret).
//!
//!   make bench-verify                 # N = 100
//!   BENCH_N=300 cargo bench --bench verify_scale
//!
//! Reports, per run, the time from creating N objects until all are Ready, the controller's
//! CPU time over that span, and CPU per object beyond the unverified run.

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use driftless::api::{ConditionStatus, OCIRepository};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::PostParams;
use support::controller::SourceController;
use support::sigstore::{ISSUER_RE, SUBJECT_RE, Sigstore};
use support::source::ready_status;

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Unverified,
    Key,
    Keyless,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Unverified => "no verification",
            Mode::Key => "cosign key (.sig tag)",
            Mode::Keyless => "keyless (bundle + log)",
        }
    }
}

struct Run {
    ready: Duration,
    cpu: Duration,
    rss_kib: u64,
}

#[tokio::main]
async fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("verify_scale: a benchmark; run it with `make bench-verify`");
        return;
    }
    let n = support::bench::bench_n(100);
    let mut runs = Vec::new();
    for mode in [Mode::Unverified, Mode::Key, Mode::Keyless] {
        runs.push((mode, run(mode, n).await));
    }
    let base = runs[0].1.cpu;
    println!("driftless verification benchmark: N = {n} OCIRepositories per run, --concurrent=10");
    println!(
        "  {:<24} {:>10} {:>12} {:>16} {:>16} {:>10}",
        "run", "all Ready", "CPU total", "CPU per object", "extra per verify", "peak RSS"
    );
    for (mode, r) in &runs {
        let per = r.cpu.as_secs_f64() * 1000.0 / n as f64;
        let extra = (r.cpu.as_secs_f64() - base.as_secs_f64()) * 1000.0 / n as f64;
        println!(
            "  {:<24} {:>8.2} s {:>10.2} s {:>13.2} ms {:>13.2} ms {:>6.1} MiB",
            mode.name(),
            r.ready.as_secs_f64(),
            r.cpu.as_secs_f64(),
            per,
            if *mode == Mode::Unverified {
                0.0
            } else {
                extra
            },
            r.rss_kib as f64 / 1024.0
        );
    }
}

async fn run(mode: Mode, n: usize) -> Run {
    let platform = support::platform();
    let kube = platform.client().await;
    support::install_crds(&kube).await;
    let ns = support::TestNamespace::new(&platform, &kube, "bench-verify").await;
    let registry = platform.registry().to_string();
    let repo = format!("{}/app", ns.name);
    let digest = support::bench::push_bench_artifact(&registry, &repo).await;
    let reference = format!("{registry}/{repo}@{digest}");
    let sigstore = Sigstore::new(&platform);
    let verify = match mode {
        Mode::Unverified => serde_json::Value::Null,
        Mode::Key => {
            support::cosign::generate_key_pair(&platform, sigstore.path());
            support::cosign::sign(&platform, sigstore.path(), "cosign.key", &reference);
            let public = std::fs::read(sigstore.path().join("cosign.pub")).unwrap();
            secret(&kube, &ns.name, "keys", "cosign.pub", public).await;
            serde_json::json!({"provider": "cosign", "secretRef": {"name": "keys"}})
        }
        Mode::Keyless => {
            sigstore.sign_keyless(&sigstore.signer(), &reference);
            sigstore.log(&registry, &repo, &digest);
            secret(
                &kube,
                &ns.name,
                "trust",
                "trusted_root.json",
                sigstore.trusted_root(),
            )
            .await;
            serde_json::json!({"provider": "cosign", "trustedRootSecretRef": {"name": "trust"},
                "matchOIDCIdentity": [{"issuer": ISSUER_RE, "subject": SUBJECT_RE}]})
        }
    };
    let controller = SourceController::start(
        &platform,
        &ns.name,
        &["--concurrent=10", "--log-level=info"],
    );
    let api: Api<OCIRepository> = Api::namespaced(kube.clone(), &ns.name);
    let cpu_before = controller.cpu_time();
    let started = Instant::now();
    let url = format!("oci://{registry}/{repo}");
    let objects = (0..n).map(|i| {
        let mut spec = serde_json::json!({"url": url, "interval": "60m", "insecure": true});
        if !verify.is_null() {
            spec["verify"] = verify.clone();
        }
        serde_json::from_value::<OCIRepository>(serde_json::json!({
            "apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "OCIRepository",
            "metadata": {"name": format!("app-{i}")}, "spec": spec,
        }))
        .unwrap()
    });
    support::create_all(&api, objects).await;
    support::wait_all(&api, n, Duration::from_secs(600), |o: &OCIRepository| {
        ready_status(o) == Some(ConditionStatus::True)
    })
    .await;
    Run {
        ready: started.elapsed(),
        cpu: controller.cpu_time().saturating_sub(cpu_before),
        rss_kib: controller.peak_rss_kib(),
    }
}

async fn secret(kube: &kube::Client, ns: &str, name: &str, key: &str, value: Vec<u8>) {
    let secret = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        data: Some([(key.to_string(), ByteString(value))].into()),
        ..Default::default()
    };
    Api::<Secret>::namespaced(kube.clone(), ns)
        .create(&PostParams::default(), &secret)
        .await
        .expect("create secret");
}
