//! Two source-controller replicas on the real API server: only the Lease holder reconciles and
//! serves artifacts; when it shuts down it hands the Lease over and the other one takes over.

mod support;

use std::time::{Duration, Instant};

use driftless::api::OCIRepository;
use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use support::controller::{SourceController, listening};
use support::oci::{FLUX_LAYER, client, flux_layer, push_flux_artifact};
use support::wait::{holds_for, poll};

const ELECTION: &[&str] = &[
    "--enable-leader-election",
    "--leader-election-lease-duration=6s",
    "--leader-election-renew-deadline=4s",
    // client-go (and so Flux) refuses a retry period (5s by default) that is not shorter than
    // the renew deadline; so does driftless.
    "--leader-election-retry-period=1s",
];

const LEASE: &str = "source-controller-leader-election";
/// The lease duration above: a standby replica is watched for this long (and a little more,
/// so at least one renewal by the leader falls inside) before it is believed to stay passive.
const LEASE_WINDOW: Duration = Duration::from_secs(8);
const WAIT: Duration = Duration::from_secs(60);

async fn holder(leases: &Api<Lease>) -> Option<String> {
    leases
        .get_opt(LEASE)
        .await
        .ok()??
        .spec?
        .holder_identity
        .filter(|h| !h.is_empty())
}

/// While `leader` holds the Lease, the replica whose artifact server is on `standby_port`
/// never serves: looked at repeatedly over a whole lease duration, not once.
async fn stays_passive(leases: &Api<Lease>, leader: &str, standby_port: u16) {
    holds_for(
        "the standby replica stays passive while the leader holds the Lease",
        LEASE_WINDOW,
        async || {
            let now = holder(leases).await;
            if now.as_deref() != Some(leader) {
                return Err(format!("the Lease holder is {now:?}, not {leader}"));
            }
            if listening(standby_port) {
                return Err("the standby replica serves artifacts".into());
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
async fn only_the_leader_reconciles_and_serves_and_hands_over_on_shutdown() {
    let platform = support::platform();
    let kube = platform.client().await;
    support::install_crds(&kube).await;
    let ns = support::TestNamespace::new(&platform, &kube, "leader").await;
    let leases: Api<Lease> = Api::namespaced(kube.clone(), &ns.name);

    let mut first = SourceController::start(&platform, &ns.name, ELECTION);
    let leader = poll("a Lease holder", WAIT, async || holder(&leases).await).await;
    poll("the leader's artifact server", WAIT, async || {
        listening(first.storage_port).then_some(())
    })
    .await;
    let second = SourceController::start(&platform, &ns.name, ELECTION);
    assert!(
        !listening(second.storage_port),
        "a replica that is not the leader serves no artifacts"
    );
    stays_passive(&leases, &leader, second.storage_port).await;

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

    // The leader shuts down and releases the Lease on its way out (it does not wait for the
    // 6 s lease to expire), and the other replica takes over.
    first.stop();
    let lease = leases.get(LEASE).await.unwrap();
    let holder_after_stop = lease
        .spec
        .and_then(|s| s.holder_identity)
        .unwrap_or_default();
    assert_ne!(
        holder_after_stop, leader,
        "the Lease was released when the leader stopped"
    );
    let new_holder = poll("a new Lease holder", WAIT, async || {
        holder(&leases).await.filter(|h| *h != leader)
    })
    .await;
    assert!(!new_holder.is_empty());
    poll("the new leader's artifact server", WAIT, async || {
        listening(second.storage_port).then_some(())
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
    let leader = poll("a Lease holder", WAIT, async || holder(&leases).await).await;
    let second = SourceController::start(&platform, &ns.name, ELECTION);
    assert!(!listening(second.storage_port), "not the leader yet");
    stays_passive(&leases, &leader, second.storage_port).await;

    let killed_at = Instant::now();
    first.kill();
    assert_eq!(
        holder(&leases).await.as_deref(),
        Some(leader.as_str()),
        "a killed leader leaves its name on the Lease"
    );
    let new_leader = poll("the second replica to take the Lease", WAIT, async || {
        holder(&leases).await.filter(|h| *h != leader)
    })
    .await;
    assert!(
        killed_at.elapsed() >= Duration::from_secs(3),
        "taken over only after the Lease ran out"
    );
    assert!(!new_leader.is_empty());
    poll("the new leader's artifact server", WAIT, async || {
        listening(second.storage_port).then_some(())
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
