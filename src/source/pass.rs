//! One reconcile pass of a source kind, and everything the kinds share around it: the
//! finalizer, suspend, storage checks, failures reported as Flux reports them, the status
//! write and the requeue decision. Each kind supplies only its `run` step.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{Event as FinalizerEvent, finalizer};
use kube::{Api, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::api::{Artifact, Condition, ConditionStatus};
use crate::artifact::storage::{ArtifactLocation, StoredArtifactRecord};
use crate::controller::conditions::{self as cond, Conditions, reason};
pub use crate::controller::objects::kube_message;
use crate::controller::objects::secret_data;
use crate::controller::patch::merge_patch;
use crate::controller::requeue::{check_durations, jittered, parse_duration};
use crate::source::context::{Context, FINALIZER, REQUESTED_AT, SourceError};

/// The status fields every source kind has (reference §1.2).
pub trait SourceStatus: Default + Clone + Serialize + Send + Sync {
    fn conditions(&self) -> &Vec<Condition>;
    fn conditions_mut(&mut self) -> &mut Vec<Condition>;
    fn observed_generation(&self) -> Option<i64>;
    fn observed_generation_mut(&mut self) -> &mut Option<i64>;
    fn artifact(&self) -> Option<&Artifact>;
    fn artifact_mut(&mut self) -> &mut Option<Artifact>;
    fn url_mut(&mut self) -> &mut Option<String>;
    fn last_handled_reconcile_at(&self) -> Option<&String>;
    fn last_handled_reconcile_at_mut(&mut self) -> &mut Option<String>;
}

/// Implements `SourceStatus` for a status struct with Flux's common field names.
macro_rules! impl_source_status {
    ($status:ty) => {
        impl $crate::source::pass::SourceStatus for $status {
            fn conditions(&self) -> &Vec<$crate::api::Condition> {
                &self.conditions
            }
            fn conditions_mut(&mut self) -> &mut Vec<$crate::api::Condition> {
                &mut self.conditions
            }
            fn observed_generation(&self) -> Option<i64> {
                self.observed_generation
            }
            fn observed_generation_mut(&mut self) -> &mut Option<i64> {
                &mut self.observed_generation
            }
            fn artifact(&self) -> Option<&$crate::api::Artifact> {
                self.artifact.as_ref()
            }
            fn artifact_mut(&mut self) -> &mut Option<$crate::api::Artifact> {
                &mut self.artifact
            }
            fn url_mut(&mut self) -> &mut Option<String> {
                &mut self.url
            }
            fn last_handled_reconcile_at(&self) -> Option<&String> {
                self.last_handled_reconcile_at.as_ref()
            }
            fn last_handled_reconcile_at_mut(&mut self) -> &mut Option<String> {
                &mut self.last_handled_reconcile_at
            }
        }
    };
}
pub(crate) use impl_source_status;

/// A source kind the shared pass can drive.
pub trait SourceObject:
    Resource<DynamicType = (), Scope = NamespaceResourceScope>
    + Clone
    + Debug
    + DeserializeOwned
    + Serialize
    + Send
    + Sync
    + 'static
{
    type Status: SourceStatus;
    const KIND: &'static str;
    /// The directory under the storage root (`ocirepository`, `bucket`).
    const STORAGE_KIND: &'static str;
    /// Where this object's artifacts live in storage.
    fn artifact_location(&self) -> ArtifactLocation {
        ArtifactLocation::new(
            Self::STORAGE_KIND,
            &self.namespace().unwrap_or_default(),
            &self.name_any(),
        )
    }
    fn status(&self) -> Option<&Self::Status>;
    fn interval(&self) -> &str;
    fn timeout(&self) -> &str;
    fn suspended(&self) -> bool;
    /// What this pass fetches and stores; the shared code writes the outcome.
    fn run(pass: &mut Pass<'_, Self>) -> impl Future<Output = Result<(), Failure>> + Send;
}

/// A step's failure, as Flux reports it.
#[derive(Debug)]
pub struct Failure {
    pub condition: &'static str,
    pub reason: &'static str,
    pub message: String,
    pub stalled: bool,
}

impl Failure {
    pub fn new(
        condition: &'static str,
        reason: &'static str,
        message: impl Into<String>,
        stalled: bool,
    ) -> Self {
        Failure {
            condition,
            reason,
            message: message.into(),
            stalled,
        }
    }
    pub fn fetch(reason: &'static str, message: impl Into<String>) -> Self {
        Self::new(cond::FETCH_FAILED, reason, message, false)
    }
    pub fn storage(reason: &'static str, message: impl Into<String>) -> Self {
        Self::new(cond::STORAGE_OPERATION_FAILED, reason, message, false)
    }
    pub fn stalled(reason: &'static str, message: impl Into<String>) -> Self {
        Self::new(cond::FETCH_FAILED, reason, message, true)
    }
    /// Verification that cannot succeed until the spec or the controller changes.
    pub fn verification(message: impl Into<String>) -> Self {
        Self::new(
            cond::SOURCE_VERIFIED,
            reason::VERIFICATION_ERROR,
            message,
            true,
        )
    }
    /// No valid signature (yet): retried with backoff, as Flux does, since one may be pushed.
    pub fn unverified(message: impl Into<String>) -> Self {
        Self::new(
            cond::SOURCE_VERIFIED,
            reason::VERIFICATION_ERROR,
            message,
            false,
        )
    }
}

/// Entry point for the kube-runtime controller of any source kind.
pub async fn reconcile<K: SourceObject>(
    obj: Arc<K>,
    ctx: Arc<Context>,
) -> Result<Action, SourceError> {
    use tracing::Instrument;
    let ns = obj.namespace().unwrap_or_default();
    // Every log line of the pass names the object (JSON logs carry the span's fields).
    let span =
        tracing::info_span!("reconcile", kind = K::KIND, namespace = %ns, name = %obj.name_any());
    let _working = ctx
        .metrics
        .working(&K::KIND.to_lowercase(), &ctx.key(obj.as_ref()));
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &ns);
    let key = ctx.key(obj.as_ref());
    let work = finalizer(&api, FINALIZER, obj, |event| async {
        match event {
            FinalizerEvent::Apply(obj) => reconcile_live(obj.as_ref(), &ctx).await,
            FinalizerEvent::Cleanup(obj) => cleanup(obj.as_ref(), &ctx).await,
        }
    })
    .instrument(span);
    // The steps report their own panics on the object; this catches one in the frame itself.
    crate::controller::panics::guard(&key, work)
        .await
        .map_err(SourceError::Panicked)?
        .map_err(|e| SourceError::Finalizer(Box::new(e)))
}

async fn cleanup<K: SourceObject>(obj: &K, ctx: &Context) -> Result<Action, SourceError> {
    let (ns, name) = (obj.namespace().unwrap_or_default(), obj.name_any());
    let storage = ctx.storage.clone();
    let location = obj.artifact_location();
    tokio::task::spawn_blocking(move || storage.remove_object(&location))
        .await
        .map_err(|e| SourceError::Storage(e.to_string()))?
        .map_err(|e| {
            SourceError::Storage(format!(
                "garbage collecting artifacts of deleted {ns}/{name}: {e}"
            ))
        })?;
    ctx.forget(K::KIND, &ns, &name);
    Ok(Action::await_change())
}

/// What one pass starts from and writes back.
pub struct Pass<'a, K: SourceObject> {
    pub obj: &'a K,
    pub ctx: &'a Context,
    pub status: K::Status,
    pub conditions: Conditions,
    pub generation: i64,
    /// The status as last written (or read), which the next write is a patch against.
    written: serde_json::Value,
}

async fn reconcile_live<K: SourceObject>(cached: &K, ctx: &Context) -> Result<Action, SourceError> {
    let started = Instant::now();
    let key = ctx.key(cached);
    // The watch cache can lag behind our own last status write; a pass that started from an
    // older status would redo (and re-announce) work. Read the object when that may be so.
    let fresh;
    let obj = match ctx.cache_may_lag(&key, cached.meta().resource_version.as_deref()) {
        false => cached,
        true => {
            let api: Api<K> =
                Api::namespaced(ctx.client.clone(), &cached.namespace().unwrap_or_default());
            fresh = api
                .get(&cached.name_any())
                .await
                .map_err(SourceError::Kube)?;
            &fresh
        }
    };
    tracing::debug!(object = %key, generation = ?obj.meta().generation, "reconciling");
    let generation = obj.meta().generation.unwrap_or(0);
    let status = obj.status().cloned().unwrap_or_default();
    let mut pass = Pass {
        obj,
        ctx,
        conditions: Conditions::new(status.conditions().clone(), generation),
        written: serde_json::to_value(&status).unwrap_or_default(),
        status,
        generation,
    };
    if obj.suspended() {
        *pass.status.last_handled_reconcile_at_mut() = requested_at(obj);
        // kstatus reads a suspended object as current only once its generation is observed.
        if !pass.conditions.list.is_empty() {
            *pass.status.observed_generation_mut() = Some(pass.generation);
        }
        pass.patch_status().await?;
        ctx.record_suspend(K::KIND, obj, true);
        return Ok(Action::await_change());
    }
    ctx.record_suspend(K::KIND, obj, false);

    pass.conditions.delete(cond::STORAGE_OPERATION_FAILED);
    pass.announce_generation();
    pass.check_storage().await;
    let outcome = match check_durations([
        ("spec.interval", obj.interval()),
        ("spec.timeout", obj.timeout()),
    ]) {
        Err(invalid) => Err(Failure::stalled(
            reason::INVALID_DURATION,
            invalid.to_string(),
        )),
        Ok(()) => run_guarded(&mut pass, &key).await,
    };
    tracing::debug!(object = %key, failure = ?outcome.as_ref().err().map(|f| &f.message), "pass finished");
    let action = pass.finish(outcome, &key).await;
    ctx.observe(K::KIND, obj, started.elapsed(), &pass.conditions);
    action
}

/// The kind's steps, with a panic in them (a bug, in our code or a dependency's, that some
/// input reached) turned into this object's failure: every other object keeps reconciling.
async fn run_guarded<K: SourceObject>(pass: &mut Pass<'_, K>, key: &str) -> Result<(), Failure> {
    crate::controller::panics::guard_steps(key, K::run(pass))
        .await
        .unwrap_or_else(|panicked| {
            Err(Failure::fetch(reason::INTERNAL_ERROR, panicked.to_string()))
        })
}

impl<K: SourceObject> Pass<'_, K> {
    pub fn namespace(&self) -> String {
        self.obj.namespace().unwrap_or_default()
    }

    pub fn name(&self) -> String {
        self.obj.name_any()
    }

    /// The digest of the artifact the object had when the pass started, taken before the
    /// storage check may forget a vanished file, so a restart over an empty volume does not
    /// announce the same artifact as new.
    pub fn previous_digest(&self) -> Option<String> {
        self.obj
            .status()
            .and_then(|s| s.artifact())
            .map(|a| a.digest.clone())
    }

    /// Mark a new generation or a reconcile request as work in progress. Flux patches this
    /// at once; here it rides along with the next status write (the new-revision notice or the
    /// result), which halves the API writes of a first reconcile without hiding anything that
    /// lasts longer than a pull.
    fn announce_generation(&mut self) {
        let observed = self.status.observed_generation().unwrap_or(-1);
        if observed != self.generation {
            let message = format!(
                "processing object: new generation {observed} -> {}",
                self.generation
            );
            self.conditions
                .mark_reconciling(reason::PROGRESSING, &message);
        } else if requested_at(self.obj).as_ref() != self.status.last_handled_reconcile_at() {
            self.conditions
                .mark_reconciling(reason::PROGRESSING, "reconciliation in progress");
        }
    }

    /// Garbage-collect old files and make sure the recorded artifact is still on disk.
    async fn check_storage(&mut self) {
        let location = self.obj.artifact_location();
        let recorded = self.status.artifact().cloned();
        let storage = self.ctx.storage.clone();
        // GC and (after a restart) one re-hash are file-system work: off the async runtime.
        let intact = tokio::task::spawn_blocking(move || {
            let current = recorded.as_ref().and_then(|a| a.path.rsplit('/').next());
            if let Err(e) = storage.gc(&location, current) {
                tracing::debug!(error = %e, "garbage collection failed");
            }
            recorded.is_some_and(|a| {
                storage.is_intact(&StoredArtifactRecord {
                    path: &a.path,
                    size: a.size.and_then(|s| u64::try_from(s).ok()),
                    digest: &a.digest,
                })
            })
        })
        .await
        .unwrap_or(false);
        let has_url = self.status.url_mut().is_some();
        let Some(artifact) = self.status.artifact_mut().as_mut() else {
            self.conditions
                .mark_drift(reason::PROGRESSING, "building artifact");
            return;
        };
        if !intact {
            *self.status.artifact_mut() = None;
            *self.status.url_mut() = None;
            self.conditions.delete(cond::ARTIFACT_IN_STORAGE);
            self.conditions.mark_drift(
                reason::PROGRESSING,
                "building artifact: disappeared from storage",
            );
            let _ = self.patch_status().await;
            return;
        }
        // A changed --storage-adv-addr reaches every object on its next pass.
        artifact.url = self.ctx.storage.url_for(&artifact.path);
        if has_url {
            *self.status.url_mut() = self
                .ctx
                .storage
                .latest_url(&self.obj.artifact_location())
                .ok();
        }
    }

    /// Record a freshly stored artifact and the `latest.tar.gz` URL (when the link was made).
    pub fn record_artifact(&mut self, artifact: Artifact, latest_url: Option<String>) {
        if latest_url.is_some() {
            *self.status.url_mut() = latest_url;
        }
        *self.status.artifact_mut() = Some(artifact);
        self.conditions.delete(cond::FETCH_FAILED);
        self.conditions.delete(cond::ARTIFACT_OUTDATED);
    }

    /// `ArtifactOutdated` (when there is an artifact) and the progressing message of a new
    /// upstream revision, written at once so watchers see the work start.
    pub async fn announce_new_revision(&mut self, message: &str) {
        if self.status.artifact().is_some() {
            self.conditions
                .mark_true(cond::ARTIFACT_OUTDATED, reason::NEW_REVISION, message);
        }
        self.conditions.mark_drift(
            reason::PROGRESSING,
            &format!("building artifact: {message}"),
        );
        let _ = self.patch_status().await;
    }

    /// A Secret's data (and stringData), or the API server's message (`secrets "x" not found`).
    pub async fn read_secret(&self, name: &str) -> Result<BTreeMap<String, Vec<u8>>, String> {
        let secrets: Api<Secret> = Api::namespaced(self.ctx.client.clone(), &self.namespace());
        let secret = secrets.get(name).await.map_err(|e| kube_message(&e))?;
        Ok(secret_data(&secret))
    }

    pub async fn parse_secret<T>(
        &self,
        name: &str,
        parse: impl FnOnce(&BTreeMap<String, Vec<u8>>) -> Result<T, String>,
    ) -> Result<T, String> {
        parse(&self.read_secret(name).await?).map_err(|e| format!("secret '{name}': {e}"))
    }

    /// Event metadata: `extra`, plus the object's `event.toolkit.fluxcd.io/*` annotations with
    /// the prefix removed, as Flux forwards them.
    pub fn event_metadata<'b>(
        &self,
        extra: impl IntoIterator<Item = (&'b str, &'b str)>,
    ) -> BTreeMap<String, String> {
        let mut metadata: BTreeMap<String, String> = self
            .obj
            .annotations()
            .iter()
            .filter_map(|(k, v)| {
                k.strip_prefix("event.toolkit.fluxcd.io/")
                    .map(|k| (k.to_string(), v.clone()))
            })
            .collect();
        metadata.extend(
            extra
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string())),
        );
        metadata
    }

    /// The `NewArtifact` event, with the revision and digest Flux puts in its metadata.
    pub async fn emit_new_artifact(
        &self,
        artifact: &Artifact,
        message: &str,
        extra: &[(&str, &str)],
    ) {
        let mut metadata = self.event_metadata([
            (
                "source.toolkit.fluxcd.io/revision",
                artifact.revision.as_str(),
            ),
            ("source.toolkit.fluxcd.io/digest", artifact.digest.as_str()),
        ]);
        metadata.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        self.ctx
            .events
            .normal(
                &self.obj.object_ref(&()),
                reason::NEW_ARTIFACT,
                message,
                metadata,
            )
            .await;
    }

    pub async fn warn(&self, reason: &str, message: &str) {
        self.ctx
            .events
            .warning(
                &self.obj.object_ref(&()),
                reason,
                message,
                self.event_metadata([]),
            )
            .await;
    }

    /// Write conditions and status back, and decide when to come back.
    async fn finish(
        &mut self,
        outcome: Result<(), Failure>,
        key: &str,
    ) -> Result<Action, SourceError> {
        *self.status.last_handled_reconcile_at_mut() = requested_at(self.obj);
        let interval = parse_duration(self.obj.interval()).unwrap_or(Duration::from_secs(600));
        let next = match outcome {
            Ok(()) => {
                self.conditions.delete(cond::RECONCILING);
                self.conditions.delete(cond::STALLED);
                *self.status.observed_generation_mut() = Some(self.generation);
                self.ctx.backoff.reset(key);
                Some(jittered(interval, self.ctx.config.jitter_percentage))
            }
            Err(failure) => self.record_failure(failure, key).await,
        };
        self.conditions.summarize(cond::OCI_READY_PRIORITY);
        // Flux's rule: a pass without error that still is not Ready is retried with backoff.
        let next = match next {
            Some(_)
                if !self.conditions.is_true(cond::READY)
                    && !self.conditions.is_true(cond::STALLED) =>
            {
                Some(self.ctx.backoff.next_delay(key))
            }
            other => other,
        };
        self.patch_status().await?;
        Ok(next.map_or_else(Action::await_change, |delay| {
            let queues = &self.ctx.metrics.queues;
            queues.requeue(&K::KIND.to_lowercase(), key, delay)
        }))
    }

    /// Record a failed step; `None` means stalled (wait for a spec change), else the backoff.
    async fn record_failure(&mut self, failure: Failure, key: &str) -> Option<Duration> {
        let status = if failure.condition == cond::SOURCE_VERIFIED {
            ConditionStatus::False
        } else {
            ConditionStatus::True
        };
        self.conditions
            .set(failure.condition, status, failure.reason, &failure.message);
        self.warn(failure.reason, &failure.message).await;
        if failure.stalled {
            self.conditions
                .mark_true(cond::STALLED, failure.reason, &failure.message);
            self.conditions.delete(cond::RECONCILING);
            *self.status.observed_generation_mut() = Some(self.generation);
            return None;
        }
        self.conditions.delete(cond::STALLED);
        let message = self
            .conditions
            .get(cond::RECONCILING)
            .map(|c| c.message.clone())
            .unwrap_or_else(|| "reconciliation in progress".into());
        self.conditions
            .mark_reconciling(reason::PROGRESSING_WITH_RETRY, &message);
        Some(self.ctx.backoff.next_delay(key))
    }

    /// Patch the status fields that changed since the last write (a merge patch, so fields
    /// owned by nobody else are not claimed).
    pub async fn patch_status(&mut self) -> Result<(), SourceError> {
        *self.status.conditions_mut() = self.conditions.list.clone();
        let api: Api<K> = Api::namespaced(self.ctx.client.clone(), &self.namespace());
        let status = serde_json::to_value(&self.status).unwrap_or_default();
        let Some(diff) = merge_patch(&self.written, &status) else {
            return Ok(());
        };
        let patch = json!({ "status": diff });
        let updated = api
            .patch_status(
                &self.name(),
                &PatchParams {
                    field_manager: Some(self.ctx.config.field_manager.clone()),
                    ..Default::default()
                },
                &Patch::Merge(&patch),
            )
            .await
            .map_err(SourceError::Kube)?;
        self.ctx.wrote(
            &self.ctx.key(self.obj),
            updated.meta().resource_version.clone(),
        );
        self.written = status;
        Ok(())
    }
}

/// The reconcile request being handled: the annotation, else the one handled last.
pub fn requested_at<K: SourceObject>(obj: &K) -> Option<String> {
    obj.annotations().get(REQUESTED_AT).cloned().or_else(|| {
        obj.status()
            .and_then(|s| s.last_handled_reconcile_at().cloned())
    })
}
