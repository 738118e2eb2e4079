//! The reconcile frame every kind runs in: finalizer, suspend, duration checks, the kind's
//! steps with panics contained, then the shared ending (conditions, events, metrics, status
//! write, requeue), as Flux shares `fluxcd/pkg/runtime` across its controllers.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kube::runtime::controller::Action;
use kube::runtime::finalizer::{Event as FinalizerEvent, finalizer};
use kube::{Api, ResourceExt};
use tracing::Instrument;

use crate::controller::conditions::{self as cond, reason};
use crate::controller::metrics::ObjectLabels;
use crate::controller::objects::{FINALIZER, REQUESTED_AT};
use crate::controller::outcome::{Failure, Next, conclude};
use crate::controller::pass::{FrameContext, FrameError, ObjectStatus, Pass, Reconciled};
use crate::controller::requeue::{check_durations, jittered, parse_duration};

/// `spec.interval` when it cannot be read (the duration check stalls such objects first).
const DEFAULT_INTERVAL: Duration = Duration::from_secs(600);

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
    let object = labels(obj.as_ref());
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
    let work = crate::controller::metrics::reconciling(object, work);
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

/// Drop what is kept per object once it is deleted or has left this controller's selection
/// (its metric series too: a sharded fleet must not export every object it ever held).
pub fn forget<K: Reconciled>(obj: &K, ctx: &K::Context) {
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
    if obj.suspended() {
        return suspend(&mut pass).await;
    }
    K::begin(&mut pass).await;
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
    if let Err(failure) = &outcome
        && failure.warn
    {
        pass.warn(failure.reason, &failure.message).await;
    }
    K::ended(pass, pass.started.elapsed());
    pass.patch_status().await?;
    pass.announce_written().await;
    let interval = parse_duration(pass.obj.interval()).unwrap_or(DEFAULT_INTERVAL);
    let delay = match verdict.next {
        Next::AwaitChange => return Ok(Action::await_change()),
        Next::Interval => jittered(interval, pass.ctx.jitter_percentage()),
        Next::After(after) => after,
        Next::Retry => retry_delay(pass, &outcome),
        Next::RetryNoSooner(wait) => retry_delay(pass, &outcome).max(wait),
    };
    let queues = &pass.ctx.metrics().queues;
    Ok(queues.requeue(&controller_name::<K>(), &key, delay))
}

/// A failed pass's `retryInterval`, else the next step of the object's backoff.
fn retry_delay<K: Reconciled>(pass: &Pass<'_, K>, outcome: &Result<(), Failure>) -> Duration {
    match (outcome, pass.obj.retry_interval()) {
        (Err(_), Some(fixed)) => fixed,
        _ => pass.ctx.backoff().next_delay(&pass.key()),
    }
}

/// The pass's duration and its result, as metrics.
fn observe<K: Reconciled>(pass: &Pass<'_, K>) {
    let metrics = pass.ctx.metrics();
    let l = labels(pass.obj);
    metrics.observe_duration(&l, pass.started.elapsed());
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
