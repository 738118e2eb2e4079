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
use kube::runtime::reflector::ObjectRef;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::watch as versions;

use super::steps::{SourceObject, SourceStatus};
use crate::api::{Artifact, Bucket, OCIRepository};
use crate::artifact::server::OnMiss;
use crate::artifact::storage::{
    ArtifactLocation, LATEST_FILE, Storage, StorageError, StoredArtifactRecord,
};
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
/// Artifacts no better from the leader (see [`Progress::pending`]) are tried again this often.
const PENDING_RETRY: Duration = Duration::from_secs(30);
/// Downloads from the leader streaming into storage at once: each holds a thread of the
/// blocking pool, which the artifact server needs too.
const STREAMING_WRITERS: usize = 2;
/// How long a request for a file this replica lacks waits for the status that names it.
const ON_DEMAND_WAIT: Duration = Duration::from_secs(2);

/// Blocking storage work a follower may have in flight (more than it ever starts at once).
const BLOCKING_PERMITS: u32 = 1 << 16;

/// What a pass left to do.
#[derive(Debug, Default, Clone, Copy)]
struct Progress {
    /// Not stored yet for a reason that passes (no leader yet, a failed download): the
    /// replica is not in step.
    missing: usize,
    /// Not stored, and no better from the leader (it lacks the file too, or the status or the
    /// leader's copy is unusable): retried without holding readiness back.
    pending: usize,
}

#[derive(Debug, thiserror::Error)]
enum SyncError {
    #[error("this replica stopped following")]
    Stopped,
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
    Storage(#[from] StorageError),
}

impl SyncError {
    /// Whether this replica is behind for a reason that passes (then it is not ready yet).
    fn holds_readiness_back(&self) -> bool {
        match self {
            SyncError::NoLeader | SyncError::Download { .. } | SyncError::Stopped => true,
            SyncError::Storage(e) => !matches!(
                e,
                StorageError::InvalidComponent { .. } | StorageError::DigestMismatch { .. }
            ),
            SyncError::NotOnLeader(_) | SyncError::TooLarge(..) | SyncError::ForeignPath(_) => {
                false
            }
        }
    }
}

/// The Lease the replicas compete for, and this replica's artifact server.
#[derive(Debug, Clone)]
pub struct Peers {
    pub leases: Api<Lease>,
    pub lease_name: String,
    /// `http://<addr>` of this replica's artifact server, reachable by the other replicas.
    pub own_url: Option<String>,
}

/// The permits for [`Follower::in_flight`].
pub fn blocking_permits() -> Arc<tokio::sync::Semaphore> {
    Arc::new(tokio::sync::Semaphore::new(BLOCKING_PERMITS as usize))
}

/// The permits for [`Follower::streaming`].
pub fn streaming_permits() -> Arc<tokio::sync::Semaphore> {
    Arc::new(tokio::sync::Semaphore::new(STREAMING_WRITERS))
}

/// Names this replica's artifact server on the Lease while it leads: at once, then again
/// whenever the Lease names another (a failed patch, a Lease recreated).
pub fn keep_advertising(peers: Peers, identity: String) {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(Duration::from_secs(10));
        loop {
            ticks.tick().await;
            if !advertised_by(&peers, &identity).await {
                advertise(&peers, &identity).await;
            }
        }
    });
}

/// Whether the Lease names this replica's artifact server, written by `identity`; also `true`
/// when the Lease is held by another (then it is not this replica's to name).
async fn advertised_by(peers: &Peers, identity: &str) -> bool {
    let Ok(Some(lease)) = peers.leases.get_opt(&peers.lease_name).await else {
        return false;
    };
    let holder = lease
        .spec
        .as_ref()
        .and_then(|s| s.holder_identity.as_deref());
    if holder != Some(identity) {
        return true;
    }
    let annotations = lease.metadata.annotations.unwrap_or_default();
    annotations
        .get(ARTIFACT_SERVER_HOLDER_ANNOTATION)
        .map(String::as_str)
        == Some(identity)
        && annotations.get(ARTIFACT_SERVER_ANNOTATION) == peers.own_url.as_ref()
}

/// Names this replica's artifact server on the Lease it now holds.
async fn advertise(peers: &Peers, identity: &str) {
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
    /// `None`: every namespace.
    pub namespace: Option<String>,
    pub label_selector: String,
    /// Largest artifact fetched.
    pub max_bytes: u64,
    /// Shared with the artifact server, which asks it for files not stored yet.
    pub on_demand: Arc<OnDemand>,
    /// Permits of the blocking storage work in flight (see [`Follower::stop_blocking_work`]).
    pub in_flight: Arc<tokio::sync::Semaphore>,
    /// The artifact path each object was last settled on.
    pub settled: std::sync::Mutex<std::collections::HashMap<String, String>>,
    /// Permits of the downloads streaming into storage (see [`STREAMING_WRITERS`]).
    pub streaming: Arc<tokio::sync::Semaphore>,
    /// The artifact servers speak SPIFFE mTLS: a status URL (`http://`) is fetched as
    /// `https://`, as every client does.
    pub over_mtls: bool,
}

/// The artifact server's way into the follower: a file requested before a pass brought it is
/// brought at once, if the object's status names it (or names it within [`ON_DEMAND_WAIT`]:
/// the consumer may have seen the new status before this replica did).
#[derive(Default)]
pub struct OnDemand {
    following: std::sync::Mutex<Option<Following>>,
}

#[derive(Clone)]
struct Following {
    follower: Arc<Follower>,
    oci: Store<OCIRepository>,
    buckets: Store<Bucket>,
    changed: versions::Receiver<u64>,
}

impl OnDemand {
    fn current(&self) -> Option<Following> {
        self.following
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn set(&self, following: Option<Following>) {
        *self
            .following
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = following;
    }
}

impl OnMiss for OnDemand {
    fn store_now<'a>(&'a self, rel_path: &'a str) -> futures::future::BoxFuture<'a, bool> {
        Box::pin(async move {
            match self.current() {
                Some(following) => following.store_now(rel_path).await,
                None => false, // leading, or not following yet
            }
        })
    }
}

/// Stops answering for the follower once its task ends (it became the leader).
struct StopOnDemand(Arc<OnDemand>);

impl Drop for StopOnDemand {
    fn drop(&mut self) {
        self.0.set(None);
    }
}

impl Following {
    fn wanted(&self, kind: &str, namespace: &str, name: &str) -> Option<Option<Wanted>> {
        let wanted = if kind == OCIRepository::STORAGE_KIND {
            let obj = self.oci.get(&ObjectRef::new(name).within(namespace))?;
            Wanted::of(obj.as_ref())
        } else if kind == Bucket::STORAGE_KIND {
            let obj = self.buckets.get(&ObjectRef::new(name).within(namespace))?;
            Wanted::of(obj.as_ref())
        } else {
            return None;
        };
        Some(wanted)
    }

    /// Brings the file at `rel_path` (or the object's current one, for `latest.tar.gz`) if the
    /// object's status names it; waits a little for a newer status of a known object.
    async fn store_now(&self, rel_path: &str) -> bool {
        let parts: Vec<&str> = rel_path.split('/').collect();
        let [kind, namespace, name, file] = parts[..] else {
            return false;
        };
        let deadline = tokio::time::Instant::now() + ON_DEMAND_WAIT;
        let mut changed = self.changed.clone();
        loop {
            // An object this replica does not know is not waited for.
            let Some(wanted) = self.wanted(kind, namespace, name) else {
                return false;
            };
            if let Some(w) = wanted.filter(|w| w.artifact.path == rel_path || file == LATEST_FILE) {
                let leader = self.follower.leader().await;
                let brought = self.follower.bring(&w, leader.as_deref()).await;
                if let Err(e) = &brought {
                    tracing::debug!(path = %rel_path, error = %e, "could not bring a requested artifact");
                }
                return brought.is_ok() && self.follower.settle(&w).await;
            }
            match tokio::time::timeout_at(deadline, changed.changed()).await {
                Ok(Ok(())) => continue,
                _ => return false,
            }
        }
    }
}

impl Follower {
    /// Keeps storage in step until cancelled (the replica became the leader); sets `ready` the
    /// first time every artifact is stored.
    pub async fn run(self: Arc<Self>, ready: Arc<AtomicBool>, metrics: &Metrics) {
        let metrics = FollowerMetrics::register(metrics);
        let (changed, _) = versions::channel(0u64);
        let changed = Arc::new(changed);
        let (oci, oci_watch) = self.watch::<OCIRepository>(changed.clone());
        let (buckets, bucket_watch) = self.watch::<Bucket>(changed.clone());
        self.on_demand.set(Some(Following {
            follower: self.clone(),
            oci: oci.clone(),
            buckets: buckets.clone(),
            changed: changed.subscribe(),
        }));
        let _stop = StopOnDemand(self.on_demand.clone());
        tokio::select! {
            () = oci_watch => {}
            () = bucket_watch => {}
            () = self.follow(&oci, &buckets, changed.subscribe(), &ready, &metrics) => {}
        }
    }

    async fn follow(
        &self,
        oci: &Store<OCIRepository>,
        buckets: &Store<Bucket>,
        mut changed: versions::Receiver<u64>,
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
            changed.mark_unchanged();
            let progress = self.catch_up(wanted).await;
            metrics
                .missing
                .set(i64::try_from(progress.missing).unwrap_or(i64::MAX));
            if progress.missing == 0 && !ready.swap(true, Ordering::Relaxed) {
                metrics.in_step.set(1);
                tracing::info!("in step with the leader: serving");
            }
            let wait = match progress {
                Progress { missing: 1.., .. } => RETRY,
                Progress { pending: 1.., .. } => PENDING_RETRY,
                _ => Duration::MAX,
            };
            let _ = tokio::time::timeout(wait, changed.changed()).await;
            tokio::time::sleep(GATHER).await;
        }
    }

    /// The leader's artifact server, as its Lease names it (`https://` when it serves mTLS).
    async fn leader(&self) -> Option<String> {
        leader_url(&self.peers).await
    }

    /// Reflects one kind; its task removes the storage of deleted objects and wakes passes.
    fn watch<K: SourceObject>(
        &self,
        changed: Arc<versions::Sender<u64>>,
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
            .backoff(crate::controller::watch::WatchBackoff::default())
            .modify(crate::controller::watch::trim)
            .reflect(writer)
            .for_each(move |event| {
                // Only a real deletion: an object relabelled out of this shard keeps its
                // storage until its new owner took over (see `handover`, as on the leader).
                if let Ok(watcher::Event::Delete(obj)) = &event
                    && obj.meta().deletion_timestamp.is_some()
                {
                    let location = obj.artifact_location();
                    if let Err(e) = storage.remove_object(&location) {
                        tracing::warn!(%location, error = %e, "could not remove a deleted object's storage");
                    }
                }
                changed.send_modify(|version| *version = version.wrapping_add(1));
                std::future::ready(())
            });
        (store, events)
    }

    /// Brings every wanted artifact into storage; says how many are still missing (they hold
    /// readiness back) and how many cannot be followed now (retried, but they do not).
    async fn catch_up(&self, wanted: Vec<Wanted>) -> Progress {
        let all = wanted.len();
        let storage = self.storage.clone();
        let checked = self
            .blocking(move || {
                wanted
                    .into_iter()
                    .partition::<Vec<_>, _>(|w| storage.is_intact(&w.record()))
            })
            .await;
        let Some((present, absent)) = checked else {
            return Progress {
                missing: all,
                pending: 0,
            };
        };
        for w in &present {
            self.settle_if_changed(w).await;
        }
        let mut progress = Progress::default();
        if absent.is_empty() {
            return progress;
        }
        let leader = self.leader().await;
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
        for (w, result) in results {
            match result {
                Ok(()) => self.settle_and_remember(&w).await,
                Err(e) if e.holds_readiness_back() => {
                    progress.missing += 1;
                    tracing::info!(location = %w.location, error = %e, "artifact not in step yet");
                }
                // The leader lacks it too (it is pulling again), or the status or the leader's
                // copy is unusable: retried, but a consumer would get no better from the leader.
                Err(e) => {
                    progress.pending += 1;
                    tracing::debug!(location = %w.location, error = %e, "artifact cannot be followed now");
                }
            }
        }
        progress
    }

    /// `work` on the blocking pool; `None` if it panicked or this replica stopped following
    /// (the leader's first reconciles must not meet a follower's late write).
    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Option<T> {
        let permit = self.in_flight.clone().acquire_owned().await.ok()?;
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            work()
        })
        .await
        .ok()
    }

    /// Waits until no blocking work of the follower runs, and lets none start again.
    pub async fn stop_blocking_work(&self) {
        if let Ok(all) = self.in_flight.acquire_many(BLOCKING_PERMITS).await {
            all.forget();
        }
        self.in_flight.close();
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
        let linked = self
            .blocking(move || storage.link_stored(&location, &file, &digest))
            .await
            .ok_or(SyncError::Stopped)??;
        if linked.is_some() {
            return Ok(());
        }
        // A leader that names no server (one of a release before this) is reached the way
        // consumers reach it: the status URL's host, the Service of the ready replicas.
        let from_status = self.status_server(w);
        let server = leader
            .or(from_status.as_deref())
            .ok_or(SyncError::NoLeader)?;
        self.fetch(w, server).await
    }

    /// The server part of the status URL (`http(s)://host[:port]`), `https` with mTLS.
    fn status_server(&self, w: &Wanted) -> Option<String> {
        let base = w.artifact.url.strip_suffix(&w.artifact.path)?;
        let base = base.trim_end_matches('/');
        let url = reqwest::Url::parse(base).ok()?;
        if !matches!(url.scheme(), "http" | "https") || url.path() != "/" {
            return None;
        }
        Some(if self.over_mtls {
            crate::controller::spiffe::https_url(base)
        } else {
            base.to_string()
        })
    }

    /// Downloads the artifact from the leader straight into storage, where it becomes visible
    /// only if its digest is the status's.
    async fn fetch(&self, w: &Wanted, leader: &str) -> Result<(), SyncError> {
        let url = artifact_url(leader, &w.artifact.path).ok_or_else(|| SyncError::Download {
            url: leader.to_string(),
            message: "the Lease names no usable artifact server URL".into(),
        })?;
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
        // The writer runs while the body streams in (the channel holds 8 chunks): started now,
        // not when awaited.
        let streaming = self
            .streaming
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| SyncError::Stopped)?;
        let permit = self
            .in_flight
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| SyncError::Stopped)?;
        let writer = tokio::task::spawn_blocking(move || {
            let _permits = (permit, streaming);
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
        writer.await.map_err(|_| SyncError::Stopped)??;
        Ok(())
    }

    /// [`Follower::settle`], once per artifact: not again while the status names the same one.
    async fn settle_if_changed(&self, w: &Wanted) {
        let key = w.location.to_string();
        let settled = self
            .settled
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&key)
            .is_some_and(|path| *path == w.artifact.path);
        if !settled {
            self.settle_and_remember(w).await;
        }
    }

    /// [`Follower::settle`], and remember the artifact it settled on.
    async fn settle_and_remember(&self, w: &Wanted) {
        if self.settle(w).await {
            self.settled
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .insert(w.location.to_string(), w.artifact.path.clone());
        }
    }

    /// Points `latest.tar.gz` at the current artifact and drops superseded files, as the
    /// leader does after a reconcile. `true` when done.
    async fn settle(&self, w: &Wanted) -> bool {
        let (storage, location, file, path) = (
            self.storage.clone(),
            w.location.clone(),
            w.file_name.clone(),
            w.artifact.path.clone(),
        );
        let done = self
            .blocking(move || {
                if !storage.latest_points_at(&location, &path) {
                    storage.set_latest(&location, &path)?;
                }
                storage.gc(&location, Some(&file)).map(|_| ())
            })
            .await;
        match done {
            Some(Ok(())) => true,
            Some(Err(e)) => {
                tracing::warn!(location = %w.location, error = %e, "settling storage");
                false
            }
            None => false,
        }
    }
}

/// `<leader>/<path>`, each path component its own URL segment (escaped as needed).
fn artifact_url(leader: &str, path: &str) -> Option<String> {
    let mut url = reqwest::Url::parse(leader).ok()?;
    if !matches!(url.scheme(), "http" | "https") {
        return None;
    }
    url.path_segments_mut()
        .ok()?
        .pop_if_empty()
        .extend(path.split('/'));
    Some(url.to_string())
}

/// `http(s)://<addr>` (`https` when the artifact server serves mTLS) for
/// `--storage-peer-addr`; else `--storage-addr` when it names a specific host; else `POD_IP`
/// with the storage port.
pub fn own_url(peer_addr: &str, storage_addr: &str, tls: bool) -> Option<String> {
    let scheme = if tls { "https" } else { "http" };
    if !peer_addr.is_empty() {
        return Some(with_scheme(peer_addr, scheme));
    }
    let (host, port) = storage_addr.rsplit_once(':')?;
    if port.is_empty() {
        return None;
    }
    let wildcard = matches!(host, "" | "0.0.0.0" | "[::]" | "::");
    if !wildcard {
        return Some(format!("{scheme}://{host}:{port}"));
    }
    let ip = std::env::var("POD_IP").ok().filter(|ip| !ip.is_empty())?;
    let host = if ip.contains(':') {
        format!("[{ip}]")
    } else {
        ip
    };
    Some(format!("{scheme}://{host}:{port}"))
}

fn with_scheme(addr: &str, scheme: &str) -> String {
    if addr.starts_with("http://") || addr.starts_with("https://") {
        addr.trim_end_matches('/').to_string()
    } else {
        format!("{scheme}://{addr}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_url_prefers_the_flag() {
        assert_eq!(
            own_url("10.0.0.7:9090", ":9090", false).as_deref(),
            Some("http://10.0.0.7:9090")
        );
        assert_eq!(
            own_url("https://replica-0.example:9443/", ":9090", false).as_deref(),
            Some("https://replica-0.example:9443")
        );
        assert_eq!(
            own_url("", "127.0.0.1:8080", false).as_deref(),
            Some("http://127.0.0.1:8080")
        );
        assert_eq!(
            own_url("", "127.0.0.1:8080", true).as_deref(),
            Some("https://127.0.0.1:8080")
        );
    }
}
