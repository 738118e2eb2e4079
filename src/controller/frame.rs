//! The reconcile frame every kind runs in: finalizer, suspend, duration checks, the kind's
//! steps with panics contained, then the shared ending (conditions, events, metrics, status
//! write, requeue), as Flux shares `fluxcd/pkg/runtime` across its controllers.

use std::collections::HashMap;
use std::fmt::Debug;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::NamespaceResourceScope;
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{Event as FinalizerEvent, finalizer};
use kube::{Api, Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::Instrument;

use crate::api::{Condition, ConditionStatus};
use crate::controller::conditions::{self as cond, reason};
use crate::controller::events::Events;
use crate::controller::metrics::{Metrics, ObjectLabels};
use crate::controller::outcome::{Failure, Next, Summary, conclude};
use crate::controller::pass::Pass;
use crate::controller::requeue::{Backoff, check_durations, jittered, parse_duration};

/// The finalizer every Flux controller puts on the objects it reconciles.
pub const FINALIZER: &str = "finalizers.fluxcd.io";
/// The annotation `flux reconcile` sets to ask for a pass now.
pub const REQUESTED_AT: &str = "reconcile.fluxcd.io/requestedAt";

/// `spec.interval` when it cannot be read (the duration check stalls such objects first).
const DEFAULT_INTERVAL: Duration = Duration::from_secs(600);

/// Errors that escape a pass (step failures are reported as conditions instead).
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("kubernetes API: {0}")]
    Kube(#[source] kube::Error),
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<FrameError>>),
    /// Removing what a deleted object left behind failed; the deletion is retried.
    #[error("cleanup: {0}")]
    Cleanup(String),
    #[error(transparent)]
    Panicked(#[from] crate::controller::panics::Panicked),
}

/// The status fields every kind has.
pub trait ObjectStatus: Default + Clone + Serialize + Send + Sync {
    fn conditions(&self) -> &Vec<Condition>;
    fn conditions_mut(&mut self) -> &mut Vec<Condition>;
    fn observed_generation(&self) -> Option<i64>;
    fn observed_generation_mut(&mut self) -> &mut Option<i64>;
    fn last_handled_reconcile_at(&self) -> Option<&String>;
    fn last_handled_reconcile_at_mut(&mut self) -> &mut Option<String>;
}

/// Implements `ObjectStatus` for a status struct with Flux's common field names.
macro_rules! impl_object_status {
    ($status:ty) => {
        impl $crate::controller::frame::ObjectStatus for $status {
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
            fn last_handled_reconcile_at(&self) -> Option<&String> {
                self.last_handled_reconcile_at.as_ref()
            }
            fn last_handled_reconcile_at_mut(&mut self) -> &mut Option<String> {
                &mut self.last_handled_reconcile_at
            }
        }
    };
}
pub(crate) use impl_object_status;

/// What the frame needs from a controller's context.
pub trait FrameContext: Send + Sync + 'static {
    fn client(&self) -> &Client;
    fn events(&self) -> &Events;
    fn metrics(&self) -> &Metrics;
    fn backoff(&self) -> &Backoff;
    fn status_writes(&self) -> &StatusWrites;
    fn jitter_percentage(&self) -> u8;
    /// The field manager of status writes.
    fn status_manager(&self) -> &str;
}

/// A kind the frame can reconcile: its spec's timing, its Ready summary and its steps.
pub trait Reconciled:
    Resource<DynamicType = (), Scope = NamespaceResourceScope>
    + Clone
    + Debug
    + DeserializeOwned
    + Serialize
    + Send
    + Sync
    + 'static
{
    type Status: ObjectStatus;
    type Context: FrameContext;
    /// What the steps leave for `ended` (Kustomization: the digest of what it built).
    type Memo: Default + Send + Sync;
    const KIND: &'static str;
    /// How `Ready` is decided and what a retry says when no step said what it was doing.
    const SUMMARY: Summary;
    /// The condition a failure outside the steps (a bad duration, a panic) is recorded on.
    const FRAME_FAILURE: &'static str;

    fn status(&self) -> Option<&Self::Status>;
    fn suspended(&self) -> bool;
    fn interval(&self) -> &str;
    /// Every duration of the spec, by field path, checked before any step runs.
    fn durations(&self) -> Vec<(&'static str, &str)>;
    /// The delay of `Retry::Backoff`: `None` is the controller's exponential backoff.
    fn retry_interval(&self) -> Option<Duration> {
        None
    }
    /// Metadata the kind adds to every event of this object.
    fn event_metadata(_status: &Self::Status) -> Vec<(&'static str, String)> {
        Vec::new()
    }

    /// The kind's steps; the frame writes their outcome.
    fn run(pass: &mut Pass<'_, Self>) -> impl Future<Output = Result<(), Failure>> + Send;
    /// Bookkeeping once the outcome's conditions are known, before the status write.
    fn ended(_pass: &mut Pass<'_, Self>, _took: Duration) {}
    /// What deletion of the object has to undo.
    fn cleanup(
        obj: &Self,
        ctx: &Self::Context,
    ) -> impl Future<Output = Result<(), FrameError>> + Send;
}

/// The resourceVersion our last status write returned, per object: a cached object older than
/// that predates the write, and a pass started from it would redo (and re-announce) work.
#[derive(Default)]
pub struct StatusWrites {
    written: Mutex<HashMap<String, String>>,
}

impl StatusWrites {
    pub fn wrote(&self, key: &str, resource_version: Option<String>) {
        let mut written = self.written.lock().expect("status writes lock");
        match resource_version {
            Some(rv) => written.insert(key.to_string(), rv),
            None => written.remove(key),
        };
    }

    /// Whether the cached object may predate our last status write: it is not the version
    /// that write returned. (A newer version from someone else also reads as "may lag"; that
    /// costs one GET.)
    pub fn cache_may_lag(&self, key: &str, cached_version: Option<&str>) -> bool {
        let written = self.written.lock().expect("status writes lock");
        written
            .get(key)
            .is_some_and(|rv| Some(rv.as_str()) != cached_version)
    }

    pub fn forget(&self, key: &str) {
        self.written.lock().expect("status writes lock").remove(key);
    }
}

/// Entry point for the kube-runtime controller of any kind.
pub async fn reconcile<K: Reconciled>(
    obj: Arc<K>,
    ctx: Arc<K::Context>,
) -> Result<Action, FrameError> {
    let ns = obj.namespace().unwrap_or_default();
    let key = crate::controller::watch::object_key(obj.as_ref());
    // Every log line of the pass names the object (JSON logs carry the span's fields).
    let span =
        tracing::info_span!("reconcile", kind = K::KIND, namespace = %ns, name = %obj.name_any());
    let _working = ctx.metrics().working(&controller_name::<K>(), &key);
    let api: Api<K> = Api::namespaced(ctx.client().clone(), &ns);
    let work = finalizer(&api, FINALIZER, obj, |event| async {
        match event {
            FinalizerEvent::Apply(obj) => reconcile_live(obj.as_ref(), ctx.as_ref()).await,
            FinalizerEvent::Cleanup(obj) => {
                K::cleanup(obj.as_ref(), ctx.as_ref()).await?;
                forget(obj.as_ref(), ctx.as_ref());
                Ok(Action::await_change())
            }
        }
    })
    .instrument(span);
    // The steps report their own panics on the object; this catches one in the frame itself.
    crate::controller::panics::guard(&key, work)
        .await?
        .map_err(|e| FrameError::Finalizer(Box::new(e)))
}

/// What happens when a pass errors out of the frame (an API write failed): retried with backoff.
pub fn error_policy<K: Reconciled>(
    obj: Arc<K>,
    error: &FrameError,
    ctx: Arc<K::Context>,
) -> Action {
    let key = crate::controller::watch::object_key(obj.as_ref());
    tracing::warn!(object = %key, %error, "reconcile error");
    let delay = ctx.backoff().next_delay(&key);
    ctx.metrics()
        .queues
        .requeue(&controller_name::<K>(), &key, delay)
}

/// The controller label of metrics and queues: the kind in lower case.
fn controller_name<K: Reconciled>() -> String {
    K::KIND.to_lowercase()
}

/// Drop what is kept per object once it is deleted.
fn forget<K: Reconciled>(obj: &K, ctx: &K::Context) {
    let key = crate::controller::watch::object_key(obj);
    ctx.status_writes().forget(&key);
    ctx.backoff().reset(&key);
    ctx.metrics().forget(&labels(obj));
}

async fn reconcile_live<K: Reconciled>(cached: &K, ctx: &K::Context) -> Result<Action, FrameError> {
    let started = Instant::now();
    let fresh;
    let obj = match latest(cached, ctx).await? {
        None => cached,
        Some(read) => {
            fresh = read;
            &fresh
        }
    };
    let mut pass = Pass::new(obj, ctx, started);
    tracing::debug!(object = %pass.key(), generation = pass.generation, "reconciling");
    ctx.metrics().record_suspend(&labels(obj), obj.suspended());
    if obj.suspended() {
        return suspend(&mut pass).await;
    }
    let outcome = match check_durations(obj.durations()) {
        Err(invalid) => Err(Failure::on(
            K::FRAME_FAILURE,
            reason::INVALID_DURATION,
            invalid.to_string(),
        )
        .stall()),
        Ok(()) => run_guarded(&mut pass).await,
    };
    tracing::debug!(object = %pass.key(), failure = ?outcome.as_ref().err().map(|f| &f.message), "pass finished");
    let action = finish(&mut pass, outcome).await;
    observe(&pass);
    action
}

/// The object as the API server has it when the watch cache may lag behind our own last
/// status write, else `None` (the cached one is current).
async fn latest<K: Reconciled>(cached: &K, ctx: &K::Context) -> Result<Option<K>, FrameError> {
    let key = crate::controller::watch::object_key(cached);
    let version = cached.meta().resource_version.as_deref();
    if !ctx.status_writes().cache_may_lag(&key, version) {
        return Ok(None);
    }
    let api: Api<K> = Api::namespaced(
        ctx.client().clone(),
        &cached.namespace().unwrap_or_default(),
    );
    api.get(&cached.name_any())
        .await
        .map(Some)
        .map_err(FrameError::Kube)
}

/// A suspended object only records the request it handled.
async fn suspend<K: Reconciled>(pass: &mut Pass<'_, K>) -> Result<Action, FrameError> {
    *pass.status.last_handled_reconcile_at_mut() = requested_at(pass.obj);
    // kstatus reads a suspended object as current only once its generation is observed.
    if !pass.conditions.list.is_empty() {
        *pass.status.observed_generation_mut() = Some(pass.generation);
    }
    pass.patch_status().await?;
    Ok(Action::await_change())
}

/// The kind's steps, with a panic in them (a bug, in our code or a dependency's, that some
/// input reached) turned into this object's failure: every other object keeps reconciling.
async fn run_guarded<K: Reconciled>(pass: &mut Pass<'_, K>) -> Result<(), Failure> {
    let key = pass.key();
    crate::controller::panics::guard_steps(&key, K::run(pass))
        .await
        .unwrap_or_else(|panicked| {
            Err(Failure::on(
                K::FRAME_FAILURE,
                reason::INTERNAL_ERROR,
                panicked.to_string(),
            ))
        })
}

/// Write the outcome's conditions and status, announce a failure, and decide when to come back.
async fn finish<K: Reconciled>(
    pass: &mut Pass<'_, K>,
    outcome: Result<(), Failure>,
) -> Result<Action, FrameError> {
    let key = pass.key();
    *pass.status.last_handled_reconcile_at_mut() = requested_at(pass.obj);
    let verdict = conclude(&mut pass.conditions, &outcome, &K::SUMMARY);
    if verdict.observed {
        *pass.status.observed_generation_mut() = Some(pass.generation);
    }
    if verdict.reset_backoff {
        pass.ctx.backoff().reset(&key);
    }
    if let Err(failure) = &outcome {
        pass.warn(failure.reason, &failure.message).await;
    }
    K::ended(pass, pass.started.elapsed());
    pass.patch_status().await?;
    let interval = parse_duration(pass.obj.interval()).unwrap_or(DEFAULT_INTERVAL);
    let delay = match verdict.next {
        Next::AwaitChange => return Ok(Action::await_change()),
        Next::Interval => jittered(interval, pass.ctx.jitter_percentage()),
        Next::After(after) => after,
        Next::Retry => match (&outcome, pass.obj.retry_interval()) {
            (Err(_), Some(fixed)) => fixed,
            _ => pass.ctx.backoff().next_delay(&key),
        },
    };
    let queues = &pass.ctx.metrics().queues;
    Ok(queues.requeue(&controller_name::<K>(), &key, delay))
}

/// The pass's duration, its resulting conditions and its result, as metrics.
fn observe<K: Reconciled>(pass: &Pass<'_, K>) {
    let metrics = pass.ctx.metrics();
    let l = labels(pass.obj);
    metrics.observe_duration(&l, pass.started.elapsed());
    for type_ in [cond::READY, cond::RECONCILING, cond::STALLED] {
        let status = match pass.conditions.get(type_).map(|c| c.status) {
            Some(ConditionStatus::True) => "True",
            Some(ConditionStatus::False) => "False",
            Some(ConditionStatus::Unknown) => "Unknown",
            None => "Deleted",
        };
        metrics.record_condition(&l, type_, status);
    }
    let result = match pass.conditions.is_true(cond::READY) {
        true => "success",
        false => "error",
    };
    metrics.record_result(&controller_name::<K>(), result);
}

pub fn labels<K: Reconciled>(obj: &K) -> ObjectLabels {
    ObjectLabels {
        kind: K::KIND.into(),
        name: obj.name_any(),
        namespace: obj.namespace().unwrap_or_default(),
    }
}

/// The reconcile request being handled: the annotation, else the one handled last.
pub fn requested_at<K: Reconciled>(obj: &K) -> Option<String> {
    obj.annotations().get(REQUESTED_AT).cloned().or_else(|| {
        obj.status()
            .and_then(|s| s.last_handled_reconcile_at().cloned())
    })
}
