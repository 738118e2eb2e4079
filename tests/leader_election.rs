//! Two source-controller replicas on the real API server: only the Lease holder reconciles;
//! the other one catches up with its artifacts and serves them too; when the holder shuts down
//! it hands the Lease over and the other one takes over.

mod support;

use std::time::{Duration, Instant};

use driftless::api::OCIRepository;
use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use support::controller::{
    ELECTION, SOURCE_LEASE, SourceController, http_get_bytes, listening, source_lease_holder,
};
use support::oci::{FLUX_LAYER, client, flux_layer, push_flux_artifact};
use support::wait::{holds_for, poll};

/// The lease duration above: a standby replica is watched for this long (and a little more,
/// so at least one renewal by the leader falls inside) before it is believed to stay passive.
const LEASE_WINDOW: Duration = Duration::from_secs(8);
const WAIT: Duration = Duration::from_secs(60);

/// While `leader` holds the Lease, the `standby` replica never reconciles: looked at
/// repeatedly over a whole lease duration, not once.
async fn stays_passive(leases: &Api<Lease>, leader: &str, standby: &SourceController) {
    holds_for(
        "the standby replica stays passive while the leader holds the Lease",
        LEASE_WINDOW,
        async || {
            let now = source_lease_holder(leases).await;
            if now.as_deref() != Some(leader) {
                return Err(format!("the Lease holder is {now:?}, not {leader}"));
            }
            let reconciles = standby.metric("gotk_reconcile_duration_seconds_count");
            if reconciles > 0.0 {
                return Err(format!("the standby replica reconciled {reconciles} times"));
            }
            Ok(())
        },
    )
    .await;
}

fn ready_revision(o: &OCIRepository) -> Option<(String, String)> {
    let s = o.status.as_ref()?;
    let ready = s
        .conditions
        .iter()
        .any(|c| c.type_ == "Ready" && c.status == driftless::api::ConditionStatus::True);
    let a = s.artifact.as_ref()?;
    ready.then(|| (a.revision.clone(), a.url.clone()))
}

#[tokio::test]
async fn only_the_leader_reconciles_every_replica_serves_and_hands_over_on_shutdown() {
    let platform = support::platform();
    let kube = platform.client().await;
    support::install_crds(&kube).await;
    let ns = support::TestNamespace::new(&platform, &kube, "leader").await;
    let leases: Api<Lease> = Api::namespaced(kube.clone(), &ns.name);

    let mut first = SourceController::start(&platform, &ns.name, ELECTION);
    let leader = poll("a Lease holder", WAIT, async || {
        source_lease_holder(&leases).await
    })
    .await;
    poll("the leader's artifact server", WAIT, async || {
        listening(first.storage_port).then_some(())
    })
    .await;
    let second = SourceController::start(&platform, &ns.name, ELECTION);
    poll("the standby in step and ready", WAIT, async || {
        second.is_ready().then_some(())
    })
    .await;

    let repo = format!("{}/app", ns.name);
    let registry = client(platform.registry());
    push_flux_artifact(
        &registry,
        &repo,
        "latest",
        flux_layer(&[("a", "1")]),
        FLUX_LAYER,
        &[],
    )
    .await;
    let api: Api<OCIRepository> = Api::namespaced(kube.clone(), &ns.name);
    let obj: OCIRepository = serde_json::from_value(serde_json::json!({
        "apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "OCIRepository",
        "metadata": {"name": "app"},
        "spec": {"url": format!("oci://{}/{repo}", platform.registry()), "interval": "10m", "insecure": true},
    }))
    .unwrap();
    api.create(&PostParams::default(), &obj).await.unwrap();
    let (_, url) = poll("Ready from the leader", WAIT, async || {
        ready_revision(&api.get("app").await.ok()?)
    })
    .await;
    assert!(
        url.contains(&format!(":{}/", first.storage_port)),
        "the leader stored and serves it: {url}"
    );
    // With an object to reconcile, the standby still never does.
    stays_passive(&leases, &leader, &second).await;
    // The standby fetched the same artifact from the leader and serves it too.
    let path = api
        .get("app")
        .await
        .unwrap()
        .status
        .unwrap()
        .artifact
        .unwrap()
        .path;
    let (status, from_leader) = http_get_bytes(first.storage_port, &format!("/{path}"));
    assert_eq!(status, 200);
    poll(
        "the standby serving the leader's artifact",
        WAIT,
        async || {
            let (status, body) = http_get_bytes(second.storage_port, &format!("/{path}"));
            (status == 200 && body == from_leader).then_some(())
        },
    )
    .await;

    // The leader shuts down and releases the Lease on its way out (it does not wait for the
    // 6 s lease to expire), and the other replica takes over.
    first.stop();
    let lease = leases.get(SOURCE_LEASE).await.unwrap();
    let holder_after_stop = lease
        .spec
        .and_then(|s| s.holder_identity)
        .unwrap_or_default();
    assert_ne!(
        holder_after_stop, leader,
        "the Lease was released when the leader stopped"
    );
    let new_holder = poll("a new Lease holder", WAIT, async || {
        source_lease_holder(&leases).await.filter(|h| *h != leader)
    })
    .await;
    assert!(!new_holder.is_empty());
    poll("the new leader ready", WAIT, async || {
        second.is_ready().then_some(())
    })
    .await;

    let d2 = push_flux_artifact(
        &registry,
        &repo,
        "latest",
        flux_layer(&[("a", "2")]),
        FLUX_LAYER,
        &[],
    )
    .await;
    let patch = serde_json::json!({"metadata": {"annotations": {"reconcile.fluxcd.io/requestedAt": "after-handover"}}});
    api.patch("app", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let (revision, url) = poll("the new leader's artifact", WAIT, async || {
        ready_revision(&api.get("app").await.ok()?).filter(|(r, _)| r.ends_with(&d2))
    })
    .await;
    assert_eq!(revision, format!("latest@{d2}"));
    assert!(
        url.contains(&format!(":{}/", second.storage_port)),
        "the new leader serves it: {url}"
    );
}

/// A leader killed outright never releases its Lease; the other replica takes over once the
/// Lease expires (6 s here), and reconciles from then on.
#[tokio::test]
async fn a_killed_leaders_lease_is_taken_over_after_it_expires() {
    let platform = support::platform();
    let kube = platform.client().await;
    support::install_crds(&kube).await;
    let ns = support::TestNamespace::new(&platform, &kube, "leader-kill").await;
    let leases: Api<Lease> = Api::namespaced(kube.clone(), &ns.name);
    let mut first = SourceController::start(&platform, &ns.name, ELECTION);
    let leader = poll("a Lease holder", WAIT, async || {
        source_lease_holder(&leases).await
    })
    .await;
    let second = SourceController::start(&platform, &ns.name, ELECTION);
    stays_passive(&leases, &leader, &second).await;

    let killed_at = Instant::now();
    first.kill();
    assert_eq!(
        source_lease_holder(&leases).await.as_deref(),
        Some(leader.as_str()),
        "a killed leader leaves its name on the Lease"
    );
    let new_leader = poll("the second replica to take the Lease", WAIT, async || {
        source_lease_holder(&leases).await.filter(|h| *h != leader)
    })
    .await;
    assert!(
        killed_at.elapsed() >= Duration::from_secs(3),
        "taken over only after the Lease ran out"
    );
    assert!(!new_leader.is_empty());
    poll("the new leader ready", WAIT, async || {
        second.is_ready().then_some(())
    })
    .await;

    let repo = format!("{}/app", ns.name);
    push_flux_artifact(
        &client(platform.registry()),
        &repo,
        "latest",
        flux_layer(&[("a", "1")]),
        FLUX_LAYER,
        &[],
    )
    .await;
    let api: Api<OCIRepository> = Api::namespaced(kube.clone(), &ns.name);
    let obj: OCIRepository = serde_json::from_value(serde_json::json!({
        "apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "OCIRepository",
        "metadata": {"name": "app"},
        "spec": {"url": format!("oci://{}/{repo}", platform.registry()), "interval": "10m", "insecure": true},
    }))
    .unwrap();
    api.create(&PostParams::default(), &obj).await.unwrap();
    let (_, url) = poll("Ready from the new leader", WAIT, async || {
        ready_revision(&api.get("app").await.ok()?)
    })
    .await;
    assert!(url.contains(&format!(":{}/", second.storage_port)), "{url}");
}
