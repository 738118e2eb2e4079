//! Sharding hand-over (Flux's `sharding.fluxcd.io/key` label and `--watch-label-selector`): an
//! object relabelled out of this controller's selection belongs to another source-controller
//! from then on — another driftless shard, or Flux's own beside driftless. Its stored artifacts
//! are removed once the new owner has published an artifact of its own, or the object is gone:
//! never earlier, so a consumer never follows a status that points at a removed file, and never
//! left behind, as Flux's source-controller leaves them (fluxcd/source-controller#2150).

use std::sync::Arc;

use kube::runtime::wait::await_condition;
use kube::{Api, ResourceExt};

use super::steps::{SourceObject, SourceStatus};
use crate::artifact::storage::{ArtifactLocation, Storage};
use crate::controller::labels::LabelSelector;

/// Where this controller's artifacts are served from (`http://<advertised host>/`).
fn served_here(storage: &Storage, url: &str) -> bool {
    url.starts_with(&storage.url_for(""))
}

/// Whether `obj` (as the API server has it now) still points consumers at this controller.
fn still_ours<K: SourceObject>(storage: &Storage, obj: Option<&K>) -> bool {
    obj.and_then(|o| o.status())
        .and_then(|s| s.artifact())
        .is_some_and(|a| served_here(storage, &a.url))
}

/// The object left this controller's selection (a watch delete without a deletion timestamp):
/// waits in the background for the new owner, then removes the object's storage — unless the
/// object came back to this controller meanwhile.
pub fn released<K: SourceObject>(
    api: Api<K>,
    storage: Arc<Storage>,
    selector: Arc<LabelSelector>,
    obj: &K,
) {
    if obj.meta().deletion_timestamp.is_some() {
        // Deleted: the finalizer already removed the storage.
        return;
    }
    let (namespace, name) = (obj.namespace().unwrap_or_default(), obj.name_any());
    tokio::spawn(async move {
        remove_once_taken_over(api, storage, selector, namespace, name).await;
    });
}

async fn remove_once_taken_over<K: SourceObject>(
    api: Api<K>,
    storage: Arc<Storage>,
    selector: Arc<LabelSelector>,
    namespace: String,
    name: String,
) {
    let judge = storage.clone();
    let now = match await_condition(api, &name, move |o: Option<&K>| !still_ours(&judge, o)).await {
        Ok(now) => now,
        Err(e) => {
            tracing::warn!(%namespace, %name, kind = K::KIND, error = %e, "stopped waiting for the new owner; the storage stays");
            return;
        }
    };
    if now.as_ref().is_some_and(|o| selector.selects(o.labels())) {
        // Relabelled back to this controller: its storage is in use again.
        return;
    }
    let location = ArtifactLocation::new(K::STORAGE_KIND, &namespace, &name);
    match storage.remove_object(&location) {
        Ok(()) => {
            tracing::info!(%namespace, %name, kind = K::KIND, "removed the storage of an object another controller took over")
        }
        Err(e) => {
            tracing::warn!(%namespace, %name, kind = K::KIND, error = %e, "could not remove the storage of an object another controller took over")
        }
    }
}

/// At start-up with a label selector: stored objects outside this controller's selection are
/// handed over as if they had just left it.
pub fn release_stored_outside<K: SourceObject>(
    api: Api<K>,
    storage: Arc<Storage>,
    selector: Arc<LabelSelector>,
    selected: &std::collections::HashSet<(String, String)>,
    only_namespace: Option<&str>,
) {
    for location in storage.stored_objects(K::STORAGE_KIND) {
        let (ns, name) = (
            location.namespace().to_string(),
            location.name().to_string(),
        );
        if only_namespace.is_some_and(|only| only != ns)
            || selected.contains(&(ns.clone(), name.clone()))
        {
            continue;
        }
        let (api, storage, selector) = (api.clone(), storage.clone(), selector.clone());
        tokio::spawn(async move {
            remove_once_taken_over::<K>(api, storage, selector, ns, name).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{Artifact, OCIRepository};

    fn with_url(url: &str) -> OCIRepository {
        let mut o: OCIRepository = serde_json::from_value(serde_json::json!({
            "apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "OCIRepository",
            "metadata": {"name": "a", "namespace": "ns"},
            "spec": {"url": "oci://r/a", "interval": "1m"},
        }))
        .unwrap();
        o.status = Some(Default::default());
        o.status.as_mut().unwrap().artifact = Some(
            serde_json::from_value::<Artifact>(serde_json::json!({
                "url": url, "path": "ocirepository/ns/a/x.tar.gz", "revision": "latest@sha256:0", "digest": "sha256:0",
                "lastUpdateTime": "2026-12-03T00:00:00Z",
            }))
            .unwrap(),
        );
        o
    }

    #[test]
    fn an_object_stays_ours_while_its_artifact_is_served_here() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::new(crate::artifact::storage::StorageConfig {
            root: dir.path().to_path_buf(),
            advertised_host: "127.0.0.1:9090".into(),
            retention_ttl: std::time::Duration::from_secs(60),
            retention_records: 2,
        })
        .unwrap();
        let here = storage.url_for("ocirepository/ns/a/x.tar.gz");
        assert!(still_ours(&storage, Some(&with_url(&here))));
        assert!(!still_ours(
            &storage,
            Some(&with_url(
                "http://source-controller.flux-system.svc.cluster.local./ocirepository/ns/a/x.tar.gz"
            ))
        ));
        assert!(!still_ours::<OCIRepository>(&storage, None), "gone");
        let mut unpublished = with_url("");
        unpublished.status = None;
        assert!(!still_ours(&storage, Some(&unpublished)));
    }
}
