//! Every replica serves. The leader reconciles and writes status, as in Flux; a replica that is
//! not the leader keeps its own storage in step with what the objects' `status.artifact` says,
//! so that it can serve consumers too, and takes over a leader's work with every artifact
//! already on disk.
//!
//! The leader names its artifact server on its Lease (`advertise`); a follower reads it there
//! and fetches each artifact it lacks from it, or links it when the same content is stored
//! already. Content reaches a name only once its digest equals the status's
//! (`Storage::write_verified_artifact`). The replica reports ready once in step.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Patch, PatchParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::Notify;

use super::steps::{SourceObject, SourceStatus};
use crate::api::{Artifact, Bucket, OCIRepository};
use crate::artifact::storage::{ArtifactLocation, Storage, StoredArtifactRecord};
use crate::controller::metrics::Metrics;

/// The leader's artifact server, as its Lease names it.
pub const ARTIFACT_SERVER_ANNOTATION: &str = "driftless.dev/artifact-server";
/// Which holder wrote [`ARTIFACT_SERVER_ANNOTATION`]: a stale one (from a former leader) is
/// ignored.
pub const ARTIFACT_SERVER_HOLDER_ANNOTATION: &str = "driftless.dev/artifact-server-holder";

/// Artifacts fetched at once while catching up.
const FETCH_CONCURRENCY: usize = 8;
/// How long a pass waits after a change for more changes to gather.
const GATHER: Duration = Duration::from_millis(100);
/// Passes repeat this often while something is missing (the leader may be changing).
const RETRY: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
enum SyncError {
    #[error("no leader has advertised its artifact server on the Lease")]
    NoLeader,
    #[error("the leader does not have {0} either")]
    NotOnLeader(String),
    #[error("downloading {url}: {message}")]
    Download { url: String, message: String },
    #[error("{0} is larger than its status says ({1} bytes)")]
    TooLarge(String, u64),
    #[error("status.artifact.path {0:?} is not a file of its object")]
    ForeignPath(String),
    #[error(transparent)]
    Storage(#[from] crate::artifact::storage::StorageError),
    #[error("storage task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
}

/// The Lease the replicas compete for, and this replica's artifact server.
#[derive(Debug, Clone)]
pub struct Peers {
    pub leases: Api<Lease>,
    pub lease_name: String,
    /// `http://<addr>` of this replica's artifact server, reachable by the other replicas.
    pub own_url: Option<String>,
}

/// Names this replica's artifact server on the Lease it now holds.
pub async fn advertise(peers: &Peers, identity: &str) {
    let Some(url) = &peers.own_url else {
        tracing::warn!(
            "no --storage-peer-addr (nor POD_IP): other replicas cannot catch up from this leader"
        );
        return;
    };
    let patch = serde_json::json!({"metadata": {"annotations": {
        ARTIFACT_SERVER_ANNOTATION: url,
        ARTIFACT_SERVER_HOLDER_ANNOTATION: identity,
    }}});
    if let Err(e) = peers
        .leases
        .patch(
            &peers.lease_name,
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
    {
        tracing::warn!(error = %e, "could not name the artifact server on the Lease");
    }
}

/// The artifact server of the current leader, if its Lease names one it wrote itself.
async fn leader_url(peers: &Peers) -> Option<String> {
    let lease = peers.leases.get_opt(&peers.lease_name).await.ok()??;
    let holder = lease.spec.as_ref()?.holder_identity.clone()?;
    let annotations = lease.metadata.annotations.as_ref()?;
    (annotations.get(ARTIFACT_SERVER_HOLDER_ANNOTATION) == Some(&holder))
        .then(|| annotations.get(ARTIFACT_SERVER_ANNOTATION).cloned())
        .flatten()
}

/// One object's wanted artifact.
#[derive(Debug, Clone)]
struct Wanted {
    location: ArtifactLocation,
    file_name: String,
    artifact: Artifact,
}

impl Wanted {
    fn of<K: SourceObject>(object: &K) -> Option<Self> {
        let artifact = object.status()?.artifact()?.clone();
        let location = object.artifact_location();
        let file_name = artifact.path.rsplit('/').next()?.to_string();
        Some(Self {
            location,
            file_name,
            artifact,
        })
    }

    fn record(&self) -> StoredArtifactRecord<'_> {
        StoredArtifactRecord {
            path: &self.artifact.path,
            size: self.artifact.size.and_then(|s| u64::try_from(s).ok()),
            digest: &self.artifact.digest,
        }
    }
}

/// The follower's gauges.
#[derive(Clone, Default)]
struct FollowerMetrics {
    missing: Gauge,
    in_step: Gauge,
}

impl FollowerMetrics {
    fn register(metrics: &Metrics) -> Self {
        let this = Self::default();
        metrics.register(
            "driftless_replica_missing_artifacts",
            "Artifacts named by a status that this replica has not stored yet",
            this.missing.clone(),
        );
        metrics.register(
            "driftless_replica_in_step",
            "1 once this replica stores every artifact the statuses name",
            this.in_step.clone(),
        );
        this
    }
}

pub struct Follower {
    pub client: Client,
    pub storage: Arc<Storage>,
    pub peers: Peers,
    pub http: reqwest::Client,
    /// The artifact servers speak SPIFFE mTLS: the leader's advertised `http://` becomes
    /// `https://`, as for every client.
    pub https: bool,
    /// `None`: every namespace.
    pub namespace: Option<String>,
    pub label_selector: String,
    /// Largest artifact fetched.
    pub max_bytes: u64,
}

impl Follower {
    /// Keeps storage in step until cancelled (the replica became the leader); sets `ready` the
    /// first time every artifact is stored.
    pub async fn run(self, ready: Arc<AtomicBool>, metrics: &Metrics) {
        let metrics = FollowerMetrics::register(metrics);
        let changed = Arc::new(Notify::new());
        let (oci, oci_watch) = self.watch::<OCIRepository>(changed.clone());
        let (buckets, bucket_watch) = self.watch::<Bucket>(changed.clone());
        tokio::select! {
            () = oci_watch => {}
            () = bucket_watch => {}
            () = self.follow(&oci, &buckets, &changed, &ready, &metrics) => {}
        }
    }

    async fn follow(
        &self,
        oci: &Store<OCIRepository>,
        buckets: &Store<Bucket>,
        changed: &Notify,
        ready: &AtomicBool,
        metrics: &FollowerMetrics,
    ) {
        let _ = oci.wait_until_ready().await;
        let _ = buckets.wait_until_ready().await;
        tracing::info!("following the leader's artifacts");
        loop {
            let wanted: Vec<Wanted> = oci
                .state()
                .iter()
                .filter_map(|o| Wanted::of(o.as_ref()))
                .chain(
                    buckets
                        .state()
                        .iter()
                        .filter_map(|b| Wanted::of(b.as_ref())),
                )
                .collect();
            let missing = self.catch_up(wanted).await;
            metrics
                .missing
                .set(i64::try_from(missing).unwrap_or(i64::MAX));
            if missing == 0 && !ready.swap(true, Ordering::Relaxed) {
                metrics.in_step.set(1);
                tracing::info!("in step with the leader: serving");
            }
            let wait = if missing == 0 { Duration::MAX } else { RETRY };
            let _ = tokio::time::timeout(wait, changed.notified()).await;
            tokio::time::sleep(GATHER).await;
        }
    }

    /// Reflects one kind; its task removes the storage of deleted objects and wakes passes.
    fn watch<K: SourceObject>(
        &self,
        changed: Arc<Notify>,
    ) -> (Store<K>, impl std::future::Future<Output = ()> + use<K>) {
        let api: Api<K> = match &self.namespace {
            Some(ns) => Api::namespaced(self.client.clone(), ns),
            None => Api::all(self.client.clone()),
        };
        let mut config = watcher::Config::default().any_semantic();
        if !self.label_selector.is_empty() {
            config = config.labels(&self.label_selector);
        }
        let (store, writer) = reflector::store();
        let storage = self.storage.clone();
        let events = watcher(api, config)
            .default_backoff()
            .modify(|o: &mut K| o.managed_fields_mut().clear())
            .reflect(writer)
            .for_each(move |event| {
                if let Ok(watcher::Event::Delete(obj)) = &event {
                    let location = obj.artifact_location();
                    if let Err(e) = storage.remove_object(&location) {
                        tracing::warn!(%location, error = %e, "could not remove a deleted object's storage");
                    }
                }
                changed.notify_one();
                std::future::ready(())
            });
        (store, events)
    }

    /// Brings every wanted artifact into storage; returns how many are still missing.
    async fn catch_up(&self, wanted: Vec<Wanted>) -> usize {
        let (present, absent): (Vec<_>, Vec<_>) = wanted
            .into_iter()
            .partition(|w| self.storage.is_intact(&w.record()));
        for w in &present {
            self.settle(w).await;
        }
        if absent.is_empty() {
            return 0;
        }
        let leader = leader_url(&self.peers).await.map(|url| match self.https {
            true => crate::controller::spiffe::https_url(&url),
            false => url,
        });
        let results: Vec<_> = futures::stream::iter(absent)
            .map(|w| {
                let leader = leader.clone();
                async move {
                    let result = self.bring(&w, leader.as_deref()).await;
                    (w, result)
                }
            })
            .buffer_unordered(FETCH_CONCURRENCY)
            .collect()
            .await;
        let mut missing = 0;
        for (w, result) in results {
            match result {
                Ok(()) => self.settle(&w).await,
                // Nothing to catch up with: the leader itself lacks it (it is re-pulling).
                Err(SyncError::NotOnLeader(path)) => {
                    tracing::debug!(%path, "the leader lacks an artifact its status names");
                }
                Err(e) => {
                    missing += 1;
                    tracing::info!(location = %w.location, error = %e, "artifact not in step yet");
                }
            }
        }
        missing
    }

    /// Stores one artifact: linked if its content is stored already, else fetched.
    async fn bring(&self, w: &Wanted, leader: Option<&str>) -> Result<(), SyncError> {
        if w.location.artifact_path(&w.file_name)? != w.artifact.path {
            return Err(SyncError::ForeignPath(w.artifact.path.clone()));
        }
        let (storage, location, file, digest) = (
            self.storage.clone(),
            w.location.clone(),
            w.file_name.clone(),
            w.artifact.digest.clone(),
        );
        let linked =
            tokio::task::spawn_blocking(move || storage.link_stored(&location, &file, &digest))
                .await??;
        if linked.is_some() {
            return Ok(());
        }
        let leader = leader.ok_or(SyncError::NoLeader)?;
        self.fetch(w, leader).await
    }

    /// Downloads the artifact from the leader straight into storage, where it becomes visible
    /// only if its digest is the status's.
    async fn fetch(&self, w: &Wanted, leader: &str) -> Result<(), SyncError> {
        let url = format!("{}/{}", leader.trim_end_matches('/'), w.artifact.path);
        let download = |message: String| SyncError::Download {
            url: url.clone(),
            message,
        };
        let response = self
            .http
            .get(&url)
            .send()
            .await
            .map_err(|e| download(e.to_string()))?;
        if response.status() == reqwest::StatusCode::NOT_FOUND {
            return Err(SyncError::NotOnLeader(w.artifact.path.clone()));
        }
        if !response.status().is_success() {
            return Err(download(format!("HTTP {}", response.status())));
        }
        let limit = w
            .artifact
            .size
            .and_then(|s| u64::try_from(s).ok())
            .map_or(self.max_bytes, |s| s.min(self.max_bytes));
        let (tx, mut rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(8);
        let (storage, location, file, digest) = (
            self.storage.clone(),
            w.location.clone(),
            w.file_name.clone(),
            w.artifact.digest.clone(),
        );
        let writer = tokio::task::spawn_blocking(move || {
            storage.write_verified_artifact(&location, &file, &digest, |out| {
                while let Some(chunk) = rx.blocking_recv() {
                    out.write_all(&chunk?)?;
                }
                Ok(())
            })
        });
        let mut body = response.bytes_stream();
        let mut received = 0u64;
        while let Some(chunk) = body.next().await {
            let chunk = match chunk {
                Ok(chunk) => chunk,
                Err(e) => {
                    let _ = tx.send(Err(std::io::Error::other(e.to_string()))).await;
                    break;
                }
            };
            received = received.saturating_add(chunk.len() as u64);
            if received > limit {
                let _ = tx.send(Err(std::io::Error::other("too large"))).await;
                drop(tx);
                let _ = writer.await;
                return Err(SyncError::TooLarge(url, limit));
            }
            if tx.send(Ok(chunk)).await.is_err() {
                break; // the writer failed; its error says why
            }
        }
        drop(tx);
        writer.await??;
        Ok(())
    }

    /// Points `latest.tar.gz` at the current artifact and drops superseded files, as the
    /// leader does after a reconcile.
    async fn settle(&self, w: &Wanted) {
        let (storage, location, file, path) = (
            self.storage.clone(),
            w.location.clone(),
            w.file_name.clone(),
            w.artifact.path.clone(),
        );
        let done = tokio::task::spawn_blocking(move || {
            if !storage.latest_points_at(&location, &path) {
                storage.set_latest(&location, &path)?;
            }
            storage.gc(&location, Some(&file)).map(|_| ())
        })
        .await;
        match done {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(location = %w.location, error = %e, "settling storage"),
            Err(e) => tracing::warn!(location = %w.location, error = %e, "settling storage"),
        }
    }
}

/// `http://<addr>` for `--storage-peer-addr`; else `--storage-addr` when it names a specific
/// host; else `POD_IP` with the storage port.
pub fn own_url(peer_addr: &str, storage_addr: &str) -> Option<String> {
    if !peer_addr.is_empty() {
        return Some(with_scheme(peer_addr));
    }
    let (host, port) = storage_addr.rsplit_once(':')?;
    if port.is_empty() {
        return None;
    }
    let wildcard = matches!(host, "" | "0.0.0.0" | "[::]" | "::");
    if !wildcard {
        return Some(format!("http://{host}:{port}"));
    }
    let ip = std::env::var("POD_IP").ok().filter(|ip| !ip.is_empty())?;
    let host = if ip.contains(':') {
        format!("[{ip}]")
    } else {
        ip
    };
    Some(format!("http://{host}:{port}"))
}

fn with_scheme(addr: &str) -> String {
    if addr.starts_with("http://") || addr.starts_with("https://") {
        addr.trim_end_matches('/').to_string()
    } else {
        format!("http://{addr}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_url_prefers_the_flag() {
        assert_eq!(
            own_url("10.0.0.7:9090", ":9090").as_deref(),
            Some("http://10.0.0.7:9090")
        );
        assert_eq!(
            own_url("https://replica-0.example:9443/", ":9090").as_deref(),
            Some("https://replica-0.example:9443")
        );
        assert_eq!(
            own_url("", "127.0.0.1:8080").as_deref(),
            Some("http://127.0.0.1:8080")
        );
    }
}
