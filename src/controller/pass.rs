//! One pass over one object, and what a kind implements to be reconciled by passes: its status
//! fields, its timing and steps (`Reconciled`), and what the frame needs of its context.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Debug;
use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::api::Condition;
use crate::controller::conditions::Conditions;
use crate::controller::events::Events;
use crate::controller::metrics::Metrics;
use crate::controller::objects::{kube_message, secret_data};
use crate::controller::outcome::{Failure, Summary};
use crate::controller::patch::merge_patch;
use crate::controller::requeue::Backoff;

/// The prefix of annotations Flux forwards as event metadata (without the prefix).
const EVENT_ANNOTATION_PREFIX: &str = "event.toolkit.fluxcd.io/";

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
        impl $crate::controller::pass::ObjectStatus for $status {
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

    /// What every pass of the kind does first, whatever follows: clear what a pass re-decides,
    /// check what the last one left (before the spec's durations are checked, so a stalled
    /// object still has its stored artifact checked and its stale failures cleared).
    fn begin(_pass: &mut Pass<'_, Self>) -> impl Future<Output = ()> + Send {
        async {}
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

/// One pass over one object: what it started from and what it builds up.
pub struct Pass<'a, K: Reconciled> {
    pub obj: &'a K,
    pub ctx: &'a K::Context,
    pub status: K::Status,
    pub conditions: Conditions,
    pub generation: i64,
    pub started: Instant,
    /// What the kind's steps leave for its `ended` bookkeeping.
    pub memo: K::Memo,
    /// The status as last written (or read), which the next write is a patch against.
    written: serde_json::Value,
    /// Events that announce what the status records (`NewArtifact`): sent once it is written,
    /// so a pass that dies before the write announces nothing and the next one announces it
    /// once.
    announced: Vec<(&'static str, String, BTreeMap<String, String>)>,
}

/// The part of a status write's answer the frame reads.
#[derive(serde::Deserialize)]
struct Written {
    metadata: WrittenMeta,
}

#[derive(serde::Deserialize)]
struct WrittenMeta {
    #[serde(rename = "resourceVersion")]
    resource_version: Option<String>,
}

impl<'a, K: Reconciled> Pass<'a, K> {
    pub fn new(obj: &'a K, ctx: &'a K::Context, started: Instant) -> Self {
        let generation = obj.meta().generation.unwrap_or(0);
        let status = obj.status().cloned().unwrap_or_default();
        Pass {
            obj,
            ctx,
            conditions: Conditions::new(status.conditions().clone(), generation),
            written: serde_json::to_value(&status).unwrap_or_default(),
            status,
            generation,
            started,
            memo: K::Memo::default(),
            announced: Vec::new(),
        }
    }

    pub fn namespace(&self) -> String {
        self.obj.namespace().unwrap_or_default()
    }

    pub fn name(&self) -> String {
        self.obj.name_any()
    }

    /// `namespace/name`, the key of queues, backoff and metrics.
    pub fn key(&self) -> String {
        crate::controller::watch::object_key(self.obj)
    }

    /// Patch the status fields that changed since the last write (a merge patch, so fields
    /// owned by nobody else are not claimed), conditions in Flux's order.
    pub async fn patch_status(&mut self) -> Result<(), FrameError> {
        self.conditions.sort();
        *self.status.conditions_mut() = self.conditions.list.clone();
        let status = serde_json::to_value(&self.status).unwrap_or_default();
        let Some(diff) = merge_patch(&self.written, &status) else {
            return Ok(());
        };
        let params = PatchParams {
            field_manager: Some(self.ctx.status_manager().to_string()),
            ..Default::default()
        };
        // What `Api::patch_status` sends; of the answer only the resourceVersion is read, not
        // the whole object (managed fields and all) on every status write.
        let request = kube::core::Request::new(K::url_path(&(), Some(&self.namespace())))
            .patch_subresource(
                "status",
                &self.name(),
                &params,
                &Patch::Merge(&json!({ "status": diff })),
            )
            .map_err(|e| FrameError::Kube(kube::Error::BuildRequest(e)))?;
        let written: Written = self
            .ctx
            .client()
            .request(request)
            .await
            .map_err(FrameError::Kube)?;
        self.ctx
            .status_writes()
            .wrote(&self.key(), written.metadata.resource_version);
        self.written = status;
        Ok(())
    }

    /// A Secret's data (and stringData), or the API server's message (`secrets "x" not found`).
    pub async fn read_secret(&self, name: &str) -> Result<BTreeMap<String, Vec<u8>>, String> {
        let secrets: Api<Secret> = Api::namespaced(self.ctx.client().clone(), &self.namespace());
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

    /// Event metadata: the object's `event.toolkit.fluxcd.io/*` annotations with the prefix
    /// removed (as Flux forwards them), the kind's own, then `extra`.
    pub fn event_metadata<'b>(
        &self,
        extra: impl IntoIterator<Item = (&'b str, &'b str)>,
    ) -> BTreeMap<String, String> {
        let mut metadata: BTreeMap<String, String> = self
            .obj
            .annotations()
            .iter()
            .filter_map(|(k, v)| {
                k.strip_prefix(EVENT_ANNOTATION_PREFIX)
                    .map(|k| (k.to_string(), v.clone()))
            })
            .collect();
        metadata.extend(
            K::event_metadata(&self.status)
                .into_iter()
                .map(|(k, v)| (k.to_string(), v)),
        );
        metadata.extend(
            extra
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string())),
        );
        metadata
    }

    /// A Normal event with `extra` metadata.
    pub async fn event(&self, reason: &str, message: &str, extra: &[(&str, &str)]) {
        let metadata = self.event_metadata(extra.iter().copied());
        let object = self.obj.object_ref(&());
        self.ctx
            .events()
            .normal(&object, reason, message, metadata)
            .await;
    }

    /// `event`, sent once the status recording it is written (`announce_written`).
    pub fn announce(&mut self, reason: &'static str, message: &str, extra: &[(&str, &str)]) {
        let metadata = self.event_metadata(extra.iter().copied());
        self.announced.push((reason, message.to_string(), metadata));
    }

    /// Sends what `announce` kept, now that the status is written.
    pub async fn announce_written(&mut self) {
        let object = self.obj.object_ref(&());
        for (reason, message, metadata) in std::mem::take(&mut self.announced) {
            self.ctx
                .events()
                .normal(&object, reason, &message, metadata)
                .await;
        }
    }

    pub async fn warn(&self, reason: &str, message: &str) {
        let object = self.obj.object_ref(&());
        let metadata = self.event_metadata([]);
        self.ctx
            .events()
            .warning(&object, reason, message, metadata)
            .await;
    }
}
