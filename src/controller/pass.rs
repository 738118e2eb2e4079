//! One pass over one object: what it started from, the conditions and status it builds up,
//! and the writes and reads every kind's steps make through it.

use std::collections::BTreeMap;
use std::time::Instant;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Patch, PatchParams};
use kube::{Api, ResourceExt};
use serde_json::json;

use crate::controller::conditions::Conditions;
use crate::controller::frame::{FrameContext, FrameError, ObjectStatus, Reconciled};
use crate::controller::objects::{kube_message, secret_data};
use crate::controller::patch::merge_patch;

/// The prefix of annotations Flux forwards as event metadata (without the prefix).
const EVENT_ANNOTATION_PREFIX: &str = "event.toolkit.fluxcd.io/";

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
        let api: Api<K> = Api::namespaced(self.ctx.client().clone(), &self.namespace());
        let params = PatchParams {
            field_manager: Some(self.ctx.status_manager().to_string()),
            ..Default::default()
        };
        let updated = api
            .patch_status(
                &self.name(),
                &params,
                &Patch::Merge(&json!({ "status": diff })),
            )
            .await
            .map_err(FrameError::Kube)?;
        self.ctx
            .status_writes()
            .wrote(&self.key(), updated.meta().resource_version.clone());
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

    pub async fn warn(&self, reason: &str, message: &str) {
        let object = self.obj.object_ref(&());
        let metadata = self.event_metadata([]);
        self.ctx
            .events()
            .warning(&object, reason, message, metadata)
            .await;
    }
}
