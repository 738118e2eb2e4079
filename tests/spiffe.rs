//! SPIFFE mTLS between the controllers, as Flux 2.10 has it, against the platform's SPIFFE
//! Workload API (hack/spiffe-workload-api on go-spiffe, SVIDs living 4 s): the artifact server
//! serves only authorized SVIDs, status URLs stay `http://`, the apply-controller fetches over
//! mTLS, a follower replica catches up over mTLS, events reach an authorized event server, and
//! rotated SVIDs are picked up without a restart.
//!
//! Flux's own kustomize-controller cannot take part: v1.9.6, the newest that builds from the
//! module proxy, has no SPIFFE flags (v1.10's need fluxcd/pkg/spiffe, which the proxy does not
//! serve; hack/PEERS.md).

mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::sha256;

use axum::Router;
use axum::routing::post;
use driftless::api::{Kustomization, OCIRepository};
use driftless::controller::spiffe::{IdPattern, Workload, http_client};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use support::controller::{ApplyController, ELECTION, SourceController, free_port};
use support::oci::{FLUX_LAYER, client, flux_layer, push_flux_artifact};
use support::source::{Sources, artifact};
use support::spiffe::{WorkloadApi, id};
use support::wait::poll;

const TTL: Duration = Duration::from_secs(4);
const WAIT: Duration = Duration::from_secs(90);

fn patterns(ids: &[&str]) -> Vec<IdPattern> {
    ids.iter().map(|i| IdPattern::parse(i).unwrap()).collect()
}

/// An HTTP client holding `name`'s SVID, accepting servers of `servers`.
async fn client_as(api: &WorkloadApi, name: &str, servers: &[&str]) -> reqwest::Client {
    let workload = Workload::connect_to(&api.endpoint(name)).await.unwrap();
    let tls = workload.client_config(&patterns(servers), false).unwrap();
    http_client(
        reqwest::Client::builder().timeout(Duration::from_secs(10)),
        tls,
    )
    .unwrap()
}

/// The body of a GET answered 200, or why not.
async fn get(http: &reqwest::Client, url: &str) -> Result<Vec<u8>, String> {
    let response = http.get(url).send().await.map_err(|e| format!("{e:?}"))?;
    if !response.status().is_success() {
        return Err(format!("HTTP {}", response.status()));
    }
    Ok(response.bytes().await.map_err(|e| e.to_string())?.to_vec())
}

/// A stand-in for notification-controller with `--authorized-notifier-spiffe-id`: an HTTPS
/// event server holding `notification-controller`'s SVID that admits `senders` only, keeping the
/// events it receives.
async fn event_server(api: &WorkloadApi, senders: &[&str]) -> (u16, Arc<Mutex<Vec<Value>>>) {
    let workload = Workload::connect_to(&api.endpoint("notification-controller"))
        .await
        .unwrap();
    let received = Arc::new(Mutex::new(Vec::new()));
    let keep = received.clone();
    let router = Router::new().route(
        "/",
        post(move |axum::Json(event): axum::Json<Value>| {
            let keep = keep.clone();
            async move {
                keep.lock().unwrap().push(event);
                axum::http::StatusCode::ACCEPTED
            }
        }),
    );
    let port = free_port();
    let tls = workload.server_config(&patterns(senders)).unwrap();
    driftless::controller::probes::serve_tls(&format!("127.0.0.1:{port}"), router, "events", tls)
        .await
        .unwrap();
    (port, received)
}

async fn push(platform: &support::Platform, repo: &str, value: &str) -> String {
    let manifest = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: greeting\ndata:\n  value: {value}\n"
    );
    let digest = push_flux_artifact(
        &client(platform.registry()),
        repo,
        "latest",
        flux_layer(&[("greeting.yaml", &manifest)]),
        FLUX_LAYER,
        &[],
    )
    .await;
    format!("latest@{digest}")
}

#[tokio::test]
async fn controllers_talk_over_spiffe_mtls_and_follow_svid_rotation() {
    let platform = support::platform();
    let kube = platform.client().await;
    support::install_crds(&kube).await;
    let ns = support::TestNamespace::new(&platform, &kube, "spiffe").await;
    let api = WorkloadApi::start(
        &platform,
        &[
            "source-controller",
            "kustomize-controller",
            "notification-controller",
            "intruder",
        ],
        TTL,
    );
    let started = Instant::now();
    let (events_port, events) = event_server(&api, &[&id("source-controller")]).await;

    let client_flag = format!(
        "--authorized-artifact-client-spiffe-id={}",
        id("kustomize-controller")
    );
    let events_flag = format!(
        "--authorized-event-server-spiffe-id={}",
        id("notification-controller")
    );
    let events_addr = format!("--events-addr=http://127.0.0.1:{events_port}/");
    let mut args: Vec<&str> = ELECTION.to_vec();
    args.extend([
        client_flag.as_str(),
        events_flag.as_str(),
        events_addr.as_str(),
    ]);
    let sc_endpoint = api.endpoint("source-controller");
    let env = [("SPIFFE_ENDPOINT_SOCKET", sc_endpoint.as_str())];
    let leader = SourceController::start_with_env(&platform, &ns.name, &args, &env);

    let repo = format!("{}/app", ns.name);
    let v1 = push(&platform, &repo, "one").await;
    let sources: Sources<OCIRepository> = Sources::new(&kube, &ns.name, &leader);
    sources
        .create("app", json!({"url": format!("oci://{}/{repo}", platform.registry()), "interval": "1h", "insecure": true}))
        .await;
    let ready = sources
        .wait_until("app", "serving v1", |o| support::source::revision(o) == v1)
        .await;
    let served = artifact(&ready).unwrap().clone();
    assert!(
        served.url.starts_with("http://"),
        "the API does not change: {}",
        served.url
    );
    let https = |port: u16| format!("https://127.0.0.1:{port}/{}", served.path);

    // An authorized client gets the artifact; everyone else is refused at the handshake.
    let kustomize = client_as(&api, "kustomize-controller", &[&id("source-controller")]).await;
    let body = get(&kustomize, &https(leader.storage_port)).await.unwrap();
    assert_eq!(sha256(&body), served.digest);
    let intruder = client_as(&api, "intruder", &[&id("source-controller")]).await;
    let refused = get(&intruder, &https(leader.storage_port)).await;
    assert!(
        refused.is_err(),
        "an unauthorized SPIFFE ID is refused: {refused:?}"
    );
    let no_svid = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .build()
        .unwrap();
    let refused = get(&no_svid, &https(leader.storage_port)).await;
    assert!(
        refused.is_err(),
        "a client without an SVID is refused: {refused:?}"
    );
    let plain = get(
        &reqwest::Client::new(),
        &format!("http://127.0.0.1:{}/{}", leader.storage_port, served.path),
    )
    .await;
    assert!(plain.is_err(), "plain HTTP is refused: {plain:?}");
    // The client checks the server's ID too.
    let picky = client_as(&api, "kustomize-controller", &[&id("another-source")]).await;
    let refused = get(&picky, &https(leader.storage_port)).await;
    assert!(
        refused.is_err(),
        "a server of another SPIFFE ID is refused: {refused:?}"
    );

    // Events reached the authorized event server over mTLS.
    poll("the NewArtifact event over mTLS", WAIT, async || {
        events
            .lock()
            .unwrap()
            .iter()
            .any(|e| e["reason"] == "NewArtifact" && e["involvedObject"]["name"] == "app")
            .then_some(())
    })
    .await;

    // The apply-controller fetches over mTLS and applies.
    let apply_endpoint = api.endpoint("kustomize-controller");
    let server_flag = format!(
        "--authorized-artifact-server-spiffe-id={}",
        id("source-controller")
    );
    let apply = ApplyController::start_with_env(
        &platform,
        &ns.name,
        &[server_flag.as_str()],
        &[("SPIFFE_ENDPOINT_SOCKET", apply_endpoint.as_str())],
    );
    let ks: Api<Kustomization> = Api::namespaced(kube.clone(), &ns.name);
    let kustomization: Kustomization = serde_json::from_value(json!({
        "apiVersion": "kustomize.toolkit.fluxcd.io/v1", "kind": "Kustomization",
        "metadata": {"name": "app"},
        "spec": {"interval": "1h", "prune": true, "targetNamespace": ns.name,
                 "sourceRef": {"kind": "OCIRepository", "name": "app"}},
    }))
    .unwrap();
    ks.create(&PostParams::default(), &kustomization)
        .await
        .unwrap();
    let configmaps: Api<ConfigMap> = Api::namespaced(kube.clone(), &ns.name);
    let applied = |value: &'static str| {
        let configmaps = configmaps.clone();
        async move || {
            let cm = configmaps.get_opt("greeting").await.ok()??;
            (cm.data?.get("value")? == value).then_some(())
        }
    };
    poll(
        "v1 applied from the mTLS artifact server",
        WAIT,
        applied("one"),
    )
    .await;

    // A follower replica catches up with the leader over mTLS (the replicas admit their own
    // SPIFFE ID) and serves the artifact.
    let follower = SourceController::start_with_env(&platform, &ns.name, &args, &env);
    poll("the follower in step over mTLS", WAIT, async || {
        follower.is_ready().then_some(())
    })
    .await;
    let body = get(&kustomize, &https(follower.storage_port))
        .await
        .unwrap();
    assert_eq!(sha256(&body), served.digest);

    // Past several lifetimes of the first SVIDs: only rotated certificates can still shake
    // hands, on both sides, and nothing was restarted.
    let expired = (3 * TTL).saturating_sub(started.elapsed());
    tokio::time::sleep(expired).await;
    assert!(
        api.issued("source-controller") >= 3,
        "the source-controller's SVID rotated"
    );
    let fresh = client_as(&api, "kustomize-controller", &[&id("source-controller")]).await;
    let body = get(&fresh, &https(leader.storage_port)).await.unwrap();
    assert_eq!(sha256(&body), served.digest);
    let v2 = push(&platform, &repo, "two").await;
    let stamp = json!({"metadata": {"annotations": {"reconcile.fluxcd.io/requestedAt": "v2"}}});
    Api::<OCIRepository>::namespaced(kube.clone(), &ns.name)
        .patch("app", &PatchParams::default(), &Patch::Merge(&stamp))
        .await
        .unwrap();
    sources
        .wait_until("app", "serving v2", |o| support::source::revision(o) == v2)
        .await;
    poll("v2 applied with rotated SVIDs", WAIT, applied("two")).await;
    drop(apply);
}
