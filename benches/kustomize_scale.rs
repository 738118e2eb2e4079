//! apply-controller benchmark (a command, not a test).
//!
//!   make bench-apply                                        # both shapes below
//!   BENCH_APPLY=wide cargo bench --bench kustomize_scale    # 1 Kustomization, 1,000 ConfigMaps
//!   BENCH_APPLY=many cargo bench --bench kustomize_scale    # 100 Kustomizations x 10 ConfigMaps
//!   BENCH_APPLY=sops cargo bench --bench kustomize_scale    # 200 Secrets, plain vs SOPS (age)
//!
//! Reports the time from creating the Kustomizations until all are Ready, the apply-controller's
//! peak RSS, and the writes to cluster objects during one steady-state pass over all of them.

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use driftless::api::{ConditionStatus, Kustomization, OCIRepository};
use futures::StreamExt;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use support::controller::{ApplyController, SourceController};
use support::oci::{FLUX_LAYER, client, flux_layer, push_flux_artifact};
use support::source::Sources;

use driftless::apply::sops::{Format, Keyring, decrypt_file};

#[tokio::main]
async fn main() {
    // `cargo test --all-targets` runs harness-less benches too; only `cargo bench` passes --bench.
    if !std::env::args().any(|a| a == "--bench") {
        println!("kustomize_scale: a benchmark; run it with `make bench-apply`");
        return;
    }
    let shape = std::env::var("BENCH_APPLY").unwrap_or_else(|_| "wide".into());
    if shape == "sops" {
        return sops_shape().await;
    }
    let (kustomizations, per) = match shape.as_str() {
        "wide" => (1, 1000),
        "many" => (100, 10),
        other => panic!("BENCH_APPLY must be wide or many, not {other}"),
    };
    let platform = support::platform();
    let kube = platform.client().await;
    support::install_crds(&kube).await;
    let ns = support::TestNamespace::new(&platform, &kube, "bench-apply").await;

    let files: Vec<(String, String)> = (0..kustomizations)
        .flat_map(|k| {
            (0..per).map(move |i| {
                (
                    format!("app-{k}/cm-{i}.yaml"),
                    format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm-{k}-{i}\ndata:\n  key: \"value-{i}\"\n"),
                )
            })
        })
        .collect();
    let files: Vec<(&str, &str)> = files
        .iter()
        .map(|(p, c)| (p.as_str(), c.as_str()))
        .collect();
    let repo = format!("{}/apps", ns.name);
    push_flux_artifact(
        &client(platform.registry()),
        &repo,
        "latest",
        flux_layer(&files),
        FLUX_LAYER,
        &[],
    )
    .await;
    let source = SourceController::start(&platform, &ns.name, &["--log-level=info"]);
    let sources: Sources<OCIRepository> = Sources::new(&kube, &ns.name, &source);
    sources
        .create("apps", serde_json::json!({"url": format!("oci://{}/{repo}", platform.registry()), "interval": "60m", "insecure": true}))
        .await;
    sources.wait_ready("apps").await;

    let apply =
        ApplyController::start(&platform, &ns.name, &["--log-level=info", "--concurrent=4"]);
    let api: Api<Kustomization> = Api::namespaced(kube.clone(), &ns.name);
    let started = Instant::now();
    futures::stream::iter(0..kustomizations)
        .map(|k| {
            let (api, ns) = (api.clone(), ns.name.clone());
            async move {
                let obj: Kustomization = serde_json::from_value(serde_json::json!({
                    "apiVersion": "kustomize.toolkit.fluxcd.io/v1", "kind": "Kustomization",
                    "metadata": {"name": format!("app-{k}")},
                    "spec": {"interval": "60m", "prune": true, "path": format!("./app-{k}"), "targetNamespace": ns,
                             "sourceRef": {"kind": "OCIRepository", "name": "apps"}},
                }))
                .unwrap();
                api.create(&PostParams::default(), &obj).await.expect("create");
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;
    support::wait_all(&api, kustomizations, Duration::from_secs(900), ready).await;
    let all_ready = started.elapsed();
    let writes_after_ready = apply.metric("driftless_apply_writes");

    // Steady state: every Kustomization reconciles again with nothing changed.
    let stamp = "bench-steady-state";
    futures::stream::iter(0..kustomizations)
        .map(|k| {
            let api = api.clone();
            async move {
                let patch = serde_json::json!({"metadata": {"annotations": {"reconcile.fluxcd.io/requestedAt": stamp}}});
                api.patch(&format!("app-{k}"), &PatchParams::default(), &Patch::Merge(&patch)).await.expect("annotate");
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;
    let steady_started = Instant::now();
    support::wait_all(&api, kustomizations, Duration::from_secs(900), |o| {
        ready(o)
            && o.status
                .as_ref()
                .and_then(|s| s.last_handled_reconcile_at.as_deref())
                == Some(stamp)
    })
    .await;
    let steady = steady_started.elapsed();
    let steady_writes = apply.metric("driftless_apply_writes") - writes_after_ready;

    println!(
        "driftless apply-controller benchmark: {kustomizations} Kustomization(s) x {per} ConfigMaps, --concurrent=4"
    );
    println!(
        "  all Ready after                   {:>8.2} s ({writes_after_ready} object writes)",
        all_ready.as_secs_f64()
    );
    println!(
        "  steady-state pass over all in     {:>8.2} s",
        steady.as_secs_f64()
    );
    println!("  object writes in that pass        {steady_writes:>8}");
    println!(
        "  apply-controller peak RSS         {:>8.1} MiB",
        apply.peak_rss_kib() as f64 / 1024.0
    );
}

fn ready(o: &Kustomization) -> bool {
    o.status.as_ref().is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == ConditionStatus::True)
    })
}

/// The cost of SOPS decryption: the same 200 Secrets (three values each) applied by one
/// Kustomization as plain manifests and as files the real `sops` CLI encrypted with age, and
/// decryption alone, in process.
async fn sops_shape() {
    const SECRETS: usize = 200;
    let platform = support::platform();
    let sops = support::sops::Sops::new(&platform);
    let key = sops.age_key();
    let keys = Keyring::from_entries([("bench.agekey", key.identity.as_bytes())], "bench")
        .expect("the age key");
    let plain: Vec<String> = (0..SECRETS)
        .map(|i| {
            format!("apiVersion: v1\nkind: Secret\nmetadata:\n  name: s-{i}\nstringData:\n  user: user-{i}\n  password: password-{i}\n  url: https://db-{i}.example\n")
        })
        .collect();
    let regex = ["--encrypted-regex", "^(data|stringData)$"];
    let encrypted: Vec<String> = plain
        .iter()
        .enumerate()
        .map(|(i, p)| sops.encrypt(&key.recipient, &format!("s-{i}.yaml"), p, &regex))
        .collect();

    let rounds = 5;
    let started = Instant::now();
    for _ in 0..rounds {
        for file in &encrypted {
            decrypt_file(file.as_bytes(), Format::Yaml, &keys).expect("decrypts");
        }
    }
    let in_process = started.elapsed() / (rounds * SECRETS) as u32;

    let kube = platform.client().await;
    support::install_crds(&kube).await;
    let ns = support::TestNamespace::new(&platform, &kube, "bench-sops").await;
    let mut files: Vec<(String, String)> = Vec::new();
    for (i, (p, e)) in plain.iter().zip(&encrypted).enumerate() {
        files.push((format!("plain/s-{i}.yaml"), p.clone()));
        files.push((format!("sops/s-{i}.yaml"), e.clone()));
    }
    let files: Vec<(&str, &str)> = files
        .iter()
        .map(|(p, c)| (p.as_str(), c.as_str()))
        .collect();
    let repo = format!("{}/secrets", ns.name);
    push_flux_artifact(
        &client(platform.registry()),
        &repo,
        "latest",
        flux_layer(&files),
        FLUX_LAYER,
        &[],
    )
    .await;
    let source = SourceController::start(&platform, &ns.name, &["--log-level=info"]);
    let sources: Sources<OCIRepository> = Sources::new(&kube, &ns.name, &source);
    sources
        .create("secrets", serde_json::json!({"url": format!("oci://{}/{repo}", platform.registry()), "interval": "60m", "insecure": true}))
        .await;
    sources.wait_ready("secrets").await;
    let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(kube.clone(), &ns.name);
    secrets
        .create(
            &PostParams::default(),
            &serde_json::from_value(serde_json::json!({"metadata": {"name": "sops-age"}, "stringData": {"bench.agekey": key.identity}})).unwrap(),
        )
        .await
        .expect("the key Secret");
    let apply = ApplyController::start(&platform, &ns.name, &["--log-level=info"]);
    let api: Api<Kustomization> = Api::namespaced(kube.clone(), &ns.name);
    let mut took = Vec::new();
    for (name, decryption) in [
        ("plain", serde_json::Value::Null),
        (
            "sops",
            serde_json::json!({"provider": "sops", "secretRef": {"name": "sops-age"}}),
        ),
    ] {
        let mut spec = serde_json::json!({"interval": "60m", "prune": true, "path": format!("./{name}"),
            "targetNamespace": ns.name, "sourceRef": {"kind": "OCIRepository", "name": "secrets"}});
        if !decryption.is_null() {
            spec["decryption"] = decryption;
        }
        let obj: Kustomization = serde_json::from_value(serde_json::json!({
            "apiVersion": "kustomize.toolkit.fluxcd.io/v1", "kind": "Kustomization",
            "metadata": {"name": name}, "spec": spec,
        }))
        .unwrap();
        let started = Instant::now();
        api.create(&PostParams::default(), &obj)
            .await
            .expect("create");
        support::wait_all(&api, took.len() + 1, Duration::from_secs(900), ready).await;
        took.push(started.elapsed());
    }
    println!(
        "driftless apply-controller SOPS benchmark: {SECRETS} Secrets, age, encrypted_regex ^(data|stringData)$"
    );
    println!(
        "  decryption in process, per Secret {:>8.1} µs",
        in_process.as_secs_f64() * 1e6
    );
    println!(
        "  plain Kustomization Ready after   {:>8.2} s",
        took[0].as_secs_f64()
    );
    println!(
        "  SOPS Kustomization Ready after    {:>8.2} s",
        took[1].as_secs_f64()
    );
    println!(
        "  difference per Secret             {:>8.2} ms",
        (took[1].as_secs_f64() - took[0].as_secs_f64()) * 1e3 / SECRETS as f64
    );
    println!(
        "  apply-controller peak RSS         {:>8.1} MiB",
        apply.peak_rss_kib() as f64 / 1024.0
    );
}
