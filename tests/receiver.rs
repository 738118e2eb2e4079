//! The event receiver end to end: the platform's registry binary (docker-registry) sending its
//! notifications to the receiver, pushes by `driftless artifact push`, the real `flux push
//! artifact` and `helm push`, SeaweedFS's filer webhook, and the real controllers. Every
//! object here has a one-hour interval: only an event can make it move within the test.

mod support;

use std::process::Command;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::{Value, json};

use driftless::api::{Bucket, Kustomization, OCIRepository};
use support::controller::{ApplyController, SourceController, driftless_bin, free_port};
use support::objectstore::{ObjectStore, Provider};
use support::oci::{FLUX_LAYER, client, flux_layer, push_flux_artifact};
use support::peers::{flux, push_demo_chart};
use support::registry::NotifyingRegistry;
use support::source::{Sources, revision};
use support::wait::poll;

const TOKEN: &str = "registry-events-token";
const GITHUB_SECRET: &str = "github-webhook-secret";
const WAIT: Duration = Duration::from_secs(60);

/// A namespace, the Secret of the senders' tokens, and a source-controller whose receiver
/// knows `senders` (YAML list items).
struct Hooks {
    platform: support::Platform,
    client: Client,
    ns: support::TestNamespace,
    source: SourceController,
    port: u16,
    _dir: tempfile::TempDir,
}

async fn hooks(prefix: &str, port: u16, senders: &str, tokens: Value) -> Hooks {
    hooks_with(prefix, port, senders, tokens, &[]).await
}

async fn hooks_with(prefix: &str, port: u16, senders: &str, tokens: Value, args: &[&str]) -> Hooks {
    let platform = support::platform();
    let client = platform.client().await;
    support::install_crds(&client).await;
    let ns = support::TestNamespace::new(&platform, &client, prefix).await;
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "receiver-tokens"}, "stringData": tokens,
    }))
    .unwrap();
    Api::<Secret>::namespaced(client.clone(), &ns.name)
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("receiver.yaml");
    std::fs::write(&config, format!("senders:\n{senders}")).unwrap();
    let receiver = [
        format!("--receiver-addr=127.0.0.1:{port}"),
        format!("--receiver-config={}", config.display()),
    ];
    let args: Vec<&str> = receiver
        .iter()
        .map(String::as_str)
        .chain(args.iter().copied())
        .collect();
    let source = SourceController::start(&platform, &ns.name, &args);
    Hooks {
        platform,
        client,
        ns,
        source,
        port,
        _dir: dir,
    }
}

/// The senders most tests use: the registry (distribution notifications) and GitHub.
const SENDERS: &str = "\
- {name: registry, type: distribution, secretRef: {name: receiver-tokens}}
- {name: ghcr, type: github, secretRef: {name: receiver-tokens, key: github}}
";

fn tokens() -> Value {
    json!({"token": TOKEN, "github": GITHUB_SECRET})
}

impl Hooks {
    fn oci(&self) -> Sources<OCIRepository> {
        Sources::new(&self.client, &self.ns.name, &self.source)
    }

    fn url(&self, sender: &str) -> String {
        format!("http://127.0.0.1:{}/hook/{sender}", self.port)
    }

    fn metric(&self, name: &str) -> f64 {
        self.source.metric(name)
    }

    /// Passes of the OCIRepositories so far (the reconcile-duration histogram's count).
    fn passes(&self) -> f64 {
        self.metric("gotk_reconcile_duration_seconds_count{kind=\"OCIRepository\"")
    }

    /// Waits until no OCIRepository reconcile is queued or running.
    async fn idle(&self) {
        poll("the OCIRepository queue to drain", WAIT, async || {
            let depth = self.metric("workqueue_depth{name=\"ocirepository\"}");
            let busy =
                self.metric("controller_runtime_active_workers{controller=\"ocirepository\"}");
            (depth == 0.0 && busy == 0.0).then_some(())
        })
        .await
    }
}

fn manifests(dir: &std::path::Path, version: &str) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(
        dir.join("cm.yaml"),
        format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: app-config\ndata:\n  version: \"{version}\"\n"),
    )
    .unwrap();
}

/// The digest a push tool printed (`...@sha256:<hex>` or `Digest: sha256:<hex>`).
fn printed_digest(output: &str) -> String {
    let at = output
        .find("sha256:")
        .unwrap_or_else(|| panic!("no digest in: {output}"));
    output[at..at + 71].to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn registry_pushes_reconcile_sources_and_kustomizations_at_once() {
    let port = free_port();
    let h = hooks("recv-push", port, SENDERS, tokens()).await;
    let registry = NotifyingRegistry::start(&h.url("registry"), TOKEN).await;
    let repo = format!("{}/{}/app", registry.addr, h.ns.name);
    let work = tempfile::tempdir().unwrap();

    // v1 by driftless's own CLI, then the objects, which reconcile once on creation.
    manifests(&work.path().join("v1"), "v1");
    let out = Command::new(driftless_bin())
        .args([
            "artifact",
            "push",
            "--insecure-registry",
            "--source",
            "https://example.com/app",
        ])
        .args([
            "--revision",
            "main@sha1:1111111111111111111111111111111111111111",
        ])
        .arg(format!("--path={}", work.path().join("v1").display()))
        .arg(format!("oci://{repo}:latest"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let first = format!(
        "latest@{}",
        printed_digest(&String::from_utf8_lossy(&out.stdout))
    );
    let sources = h.oci();
    sources
        .create(
            "app",
            json!({"url": format!("oci://{repo}"), "interval": "1h", "insecure": true}),
        )
        .await;
    sources
        .wait_until("app", "serving v1", |o| revision(o) == first)
        .await;
    let apply = ApplyController::start(&h.platform, &h.ns.name, &[]);
    let ks: Api<Kustomization> = Api::namespaced(h.client.clone(), &h.ns.name);
    let kustomization: Kustomization = serde_json::from_value(json!({
        "apiVersion": "kustomize.toolkit.fluxcd.io/v1", "kind": "Kustomization",
        "metadata": {"name": "app", "namespace": h.ns.name},
        "spec": {"interval": "1h", "prune": true, "path": "./", "targetNamespace": h.ns.name,
                 "sourceRef": {"kind": "OCIRepository", "name": "app"}},
    }))
    .unwrap();
    ks.create(&PostParams::default(), &kustomization)
        .await
        .unwrap();
    let config_maps: Api<ConfigMap> = Api::namespaced(h.client.clone(), &h.ns.name);
    let applied = |version: &'static str| {
        let config_maps = config_maps.clone();
        async move || {
            let cm = config_maps.get_opt("app-config").await.ok()??;
            (cm.data?.get("version")? == version).then_some(())
        }
    };
    poll("v1 applied", WAIT, applied("v1")).await;

    // v2 by the real flux CLI: the registry's notification alone moves both objects.
    manifests(&work.path().join("v2"), "v2");
    let dir = work.path().join("v2").display().to_string();
    let reference = format!("oci://{repo}:latest");
    let out = flux(
        &h.platform,
        &[
            "push",
            "artifact",
            &reference,
            "--path",
            &dir,
            "--source",
            "https://example.com/app",
            "--revision",
            "main@sha1:2222222222222222222222222222222222222222",
            "--insecure-registry",
        ],
    );
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "flux push artifact: {text}");
    let second = format!("latest@{}", printed_digest(&text));
    sources
        .wait_until("app", "serving v2 after the push event", |o| {
            revision(o) == second
        })
        .await;
    poll("v2 applied after the push event", WAIT, applied("v2")).await;
    assert!(h.metric("driftless_receiver_events_accepted_total{sender=\"registry\"}") >= 1.0);
    assert!(
        h.metric("driftless_receiver_event_to_artifact_seconds_count{kind=\"OCIRepository\"}")
            >= 1.0,
        "the time from the event to the artifact is measured"
    );

    // A Helm chart by the real `helm push`, followed by a semver range.
    let push_chart = |version: &str| {
        let charts = format!("{}/{}/charts", registry.addr, h.ns.name);
        let template = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: demo\n";
        let digest = push_demo_chart(&h.platform, work.path(), &charts, version, template);
        format!("{version}@{digest}")
    };
    let chart_v1 = push_chart("0.1.0");
    sources
        .create("demo", json!({
            "url": format!("oci://{}/{}/charts/demo", registry.addr, h.ns.name), "interval": "1h",
            "insecure": true, "ref": {"semver": ">=0.1.0"},
            "layerSelector": {"mediaType": "application/vnd.cncf.helm.chart.content.v1.tar+gzip", "operation": "copy"},
        }))
        .await;
    sources
        .wait_until("demo", "serving 0.1.0", |o| revision(o) == chart_v1)
        .await;
    let chart_v2 = push_chart("0.2.0");
    sources
        .wait_until("demo", "serving 0.2.0 after the push event", |o| {
            revision(o) == chart_v2
        })
        .await;
    drop(apply);
}

/// A distribution notification of a push of `repo:tag` on `host`, with event id `id`.
fn push_event(host: &str, repo: &str, tag: &str, id: &str, at: &str) -> Value {
    json!({"events": [{
        "id": id, "timestamp": at, "action": "push",
        "target": {"mediaType": "application/vnd.oci.image.manifest.v1+json", "size": 555,
                   "digest": "sha256:1111111111111111111111111111111111111111111111111111111111111111",
                   "repository": repo, "tag": tag},
        "request": {"id": "r", "host": host, "method": "PUT", "useragent": "test"},
    }]})
}

fn now() -> String {
    jiff::Timestamp::now().to_string()
}

async fn post(url: &str, headers: &[(&str, &str)], body: Vec<u8>) -> (u16, Value) {
    // One client per test thread: pooled connections belong to the test's own runtime.
    thread_local!(static CLIENT: reqwest::Client = reqwest::Client::new());
    let mut request = CLIENT.with(|c| c.post(url).body(body));
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let response = request.send().await.expect("POST to the receiver");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// The status of a POST that declares a body of `length` bytes and sends none of it: the
/// receiver must refuse from the header alone, before reading a byte of it.
fn post_declaring(port: u16, path: &str, token: &str, length: usize) -> u16 {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n\
         Content-Length: {length}\r\n\r\n"
    )
    .unwrap();
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).unwrap();
    std::str::from_utf8(&head[9..12]).unwrap().parse().unwrap()
}

fn hmac_sha256(secret: &str, body: &[u8]) -> String {
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret.as_bytes());
    format!(
        "sha256={}",
        hex::encode(aws_lc_rs::hmac::sign(&key, body).as_ref())
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn refused_events_trigger_nothing_and_a_burst_coalesces() {
    // A window longer than any burst here, so that the count below does not depend on how fast
    // this machine sends a hundred requests: the first event and one gathered after it.
    let port = free_port();
    let h = hooks_with(
        "recv-refuse",
        port,
        SENDERS,
        tokens(),
        &["--receiver-coalesce-window=5s"],
    )
    .await;
    let registry = h.platform.registry().to_string();
    let repo = format!("{}/app", h.ns.name);
    push_flux_artifact(
        &client(&registry),
        &repo,
        "latest",
        flux_layer(&[("a.yaml", "a: 1\n")]),
        FLUX_LAYER,
        &[],
    )
    .await;
    let sources = h.oci();
    sources
        .create(
            "app",
            json!({"url": format!("oci://{registry}/{repo}"), "interval": "1h", "insecure": true}),
        )
        .await;
    sources.wait_ready("app").await;
    h.idle().await;
    let passes = h.passes();
    let url = h.url("registry");
    let bearer = format!("Bearer {TOKEN}");
    let event =
        |id: &str| serde_json::to_vec(&push_event(&registry, &repo, "latest", id, &now())).unwrap();

    let refusals = [
        ("no token", post(&url, &[], event("a")).await, 401),
        (
            "a wrong token",
            post(&url, &[("authorization", "Bearer nope")], event("b")).await,
            401,
        ),
        (
            "an unknown sender",
            post(&h.url("quay"), &[("authorization", &bearer)], event("c")).await,
            404,
        ),
        (
            "a body over 1 MiB",
            (
                post_declaring(h.port, "/hook/registry", TOKEN, 2 << 20),
                Value::Null,
            ),
            413,
        ),
        (
            "a body that is not an event",
            post(
                &url,
                &[("authorization", &bearer)],
                b"{\"events\": 1}".to_vec(),
            )
            .await,
            400,
        ),
    ];
    for (what, (status, body), want) in refusals {
        assert_eq!(status, want, "{what}: {body}");
    }
    // GitHub's signature: of another body, then the right one for a repository nobody follows.
    let gh = serde_json::to_vec(
        &json!({"action": "published", "package": {"name": "app", "namespace": "o",
        "package_type": "CONTAINER", "package_version": {"package_url": "ghcr.io/o/app:latest"}}}),
    )
    .unwrap();
    let github = |signature: String| {
        vec![
            ("x-github-event", "package".to_string()),
            ("x-github-delivery", "d1".to_string()),
            ("x-hub-signature-256", signature),
        ]
    };
    let headers = github(hmac_sha256(GITHUB_SECRET, b"other"));
    let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    assert_eq!(
        post(&h.url("ghcr"), &headers, gh.clone()).await.0,
        401,
        "a bad signature"
    );
    let headers = github(hmac_sha256(GITHUB_SECRET, &gh));
    let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    assert_eq!(
        post(&h.url("ghcr"), &headers, gh.clone()).await,
        (202, json!({"triggered": 0}))
    );
    // Well-formed and authenticated, but about nothing followed, or old.
    let other = serde_json::to_vec(&push_event(
        &registry,
        &format!("{}/other", h.ns.name),
        "latest",
        "e",
        &now(),
    ))
    .unwrap();
    assert_eq!(
        post(&url, &[("authorization", &bearer)], other).await,
        (202, json!({"triggered": 0}))
    );
    let dev = serde_json::to_vec(&push_event(&registry, &repo, "dev", "f", &now())).unwrap();
    assert_eq!(
        post(&url, &[("authorization", &bearer)], dev).await,
        (202, json!({"triggered": 0}))
    );
    let stale = serde_json::to_vec(&push_event(
        &registry,
        &repo,
        "latest",
        "g",
        "2020-01-01T00:00:00Z",
    ))
    .unwrap();
    let (status, body) = post(&url, &[("authorization", &bearer)], stale).await;
    assert_eq!((status, &body["ignored"]), (200, &json!("stale")));
    assert_eq!(
        h.metric("driftless_receiver_reconciles_triggered_total"),
        0.0
    );

    // One genuine event: one reconcile; its replay: none.
    assert_eq!(
        post(&url, &[("authorization", &bearer)], event("genuine")).await,
        (202, json!({"triggered": 1}))
    );
    poll("the triggered reconcile", WAIT, async || {
        (h.passes() > passes).then_some(())
    })
    .await;
    let (status, body) = post(&url, &[("authorization", &bearer)], event("genuine")).await;
    assert_eq!((status, &body["ignored"]), (200, &json!("replay")));
    h.idle().await;
    assert_eq!(
        h.passes(),
        passes + 1.0,
        "refused, ignored and replayed events reconciled nothing"
    );
    assert_eq!(
        h.metric("driftless_receiver_reconciles_triggered_total"),
        1.0
    );
    let rejected = h.metric("driftless_receiver_events_rejected_total");
    assert_eq!(
        rejected,
        8.0,
        "every refusal is counted:\n{}",
        h.source.metrics()
    );

    // 100 events for one tag at once: a few reconciles, not a hundred.
    let burst = (0..100).map(|i| {
        let (url, bearer, body) = (url.clone(), bearer.clone(), event(&format!("burst-{i}")));
        async move { post(&url, &[("authorization", &bearer)], body).await }
    });
    let started = std::time::Instant::now();
    let answers = futures::future::join_all(burst).await;
    let took = started.elapsed();
    assert!(answers.iter().all(|(s, _)| *s == 202), "{answers:?}");
    h.idle().await;
    let reconciles = h.passes() - passes - 1.0;
    assert!(
        (1.0..=3.0).contains(&reconciles),
        "100 events gave {reconciles} reconciles"
    );
    eprintln!("100 events for one tag in {took:?}: {reconciles} reconciles");
}

#[tokio::test(flavor = "multi_thread")]
async fn bucket_writes_reconcile_the_bucket_at_once() {
    // The platform's SeaweedFS sends the filer events of buckets named events-* to this port.
    let platform = support::platform();
    let port: u16 = platform.env["DRIFTLESS_SEAWEEDFS_EVENTS_PORT"]
        .parse()
        .unwrap();
    let senders = "- {name: seaweedfs, type: seaweedfs, secretRef: {name: receiver-tokens}}\n";
    let token = platform.env["DRIFTLESS_SEAWEEDFS_EVENTS_TOKEN"].clone();
    let h = hooks("recv-bucket", port, senders, json!({"token": token})).await;
    let store = ObjectStore::new(&h.platform, Provider::S3);
    let bucket = format!("events-{}", h.ns.name.rsplit('-').next().unwrap());
    store.mkbucket(&bucket);
    store.put(&bucket, "apps/cm.yaml", b"kind: ConfigMap\n");
    let credentials: Secret = serde_json::from_value(json!({
        "metadata": {"name": "s3"}, "stringData": Provider::S3.secret(&h.platform).unwrap(),
    }))
    .unwrap();
    Api::<Secret>::namespaced(h.client.clone(), &h.ns.name)
        .patch(
            "s3",
            &PatchParams::apply("driftless-tests"),
            &Patch::Apply(&credentials),
        )
        .await
        .unwrap();
    let address = Provider::S3.address(&h.platform);
    let buckets: Sources<Bucket> = Sources::new(&h.client, &h.ns.name, &h.source);
    buckets
        .create(
            "manifests",
            json!({
                "provider": "generic", "bucketName": bucket, "endpoint": address, "insecure": true,
                "interval": "1h", "prefix": "apps/", "secretRef": {"name": "s3"},
            }),
        )
        .await;
    let first = revision(&buckets.wait_ready("manifests").await);

    store.put(&bucket, "apps/cm.yaml", b"kind: ConfigMap\ndata: {}\n");
    let moved = buckets
        .wait_until("manifests", "a new revision after the write event", |b| {
            !revision(b).is_empty() && revision(b) != first
        })
        .await;
    let files = support::source::untar(&buckets.download(&moved));
    assert_eq!(files["apps/cm.yaml"], "kind: ConfigMap\ndata: {}\n");
    assert!(h.metric("driftless_receiver_events_accepted_total{sender=\"seaweedfs\"}") >= 1.0);
}
