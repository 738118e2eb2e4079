//! Server-side apply as Flux does it (staged with cluster definitions first, a dry run per object
//! to find what would change, writes only for what did, forced ownership under one field manager,
//! recreation on immutable-field errors when asked, Flux's opt-out annotations), and prune and
//! delete with Flux's ownership guards.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{DeleteParams, DynamicObject, Patch, PatchParams, PropagationPolicy};
use kube::core::GroupVersionKind;
use kube::discovery::{ApiCapabilities, ApiResource, Scope};
use kube::{Api, Client};
use serde_json::Value;

use super::drift::{self, DriftWatch, Owner};
use super::ignore::{self, DriftIgnore};
use super::inventory::ObjectRef;
use crate::controller::objects::kube_message;

pub const SSA_KEY: &str = "kustomize.toolkit.fluxcd.io/ssa";
pub const RECONCILE_KEY: &str = "kustomize.toolkit.fluxcd.io/reconcile";
pub const PRUNE_KEY: &str = "kustomize.toolkit.fluxcd.io/prune";
pub const FORCE_KEY: &str = "kustomize.toolkit.fluxcd.io/force";
pub use super::inventory::{OWNER_NAME, OWNER_NAMESPACE};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Created,
    Configured,
    Unchanged,
    Skipped,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Created => "created",
            Action::Configured => "configured",
            Action::Unchanged => "unchanged",
            Action::Skipped => "skipped",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("{subject} dry-run failed: {message}")]
    DryRun { subject: String, message: String },
    #[error("{subject} apply failed: {message}")]
    Apply { subject: String, message: String },
    #[error("{0}")]
    Mapping(String),
    #[error("{subject} delete failed: {message}")]
    Delete { subject: String, message: String },
}

/// GVK → API resource and scope, shared by every reconcile (the mapping does not depend on
/// who asks).
#[derive(Default)]
/// Failed lookups are not kept: new kinds appear once their CRDs are established.
pub struct Mapper {
    known: Mutex<HashMap<GroupVersionKind, (ApiResource, Scope)>>,
}

impl Mapper {
    pub async fn resolve(
        &self,
        client: &Client,
        r: &ObjectRef,
    ) -> Result<(ApiResource, Scope), ApplyError> {
        let gvk = GroupVersionKind::gvk(&r.group, &r.version, &r.kind);
        if let Some(found) = self.known.lock().expect("mapper lock").get(&gvk) {
            return Ok(found.clone());
        }
        let (resource, caps): (ApiResource, ApiCapabilities) =
            kube::discovery::pinned_kind(client, &gvk)
                .await
                .map_err(|e| {
                    ApplyError::Mapping(format!(
                        "{}: no API for {}/{}: {}",
                        r.subject(),
                        r.api_version(),
                        r.kind,
                        kube_message(&e)
                    ))
                })?;
        self.known
            .lock()
            .expect("mapper lock")
            .insert(gvk, (resource.clone(), caps.scope.clone()));
        Ok((resource, caps.scope))
    }
}

/// What one apply needs to know.
pub struct Applier<'a> {
    pub client: &'a Client,
    pub mapper: &'a Mapper,
    pub field_manager: &'a str,
    /// `spec.force`: recreate objects whose immutable fields changed.
    pub force: bool,
    /// Writes made (apply patches, deletions), for the zero-write promise.
    pub writes: &'a prometheus_client::metrics::counter::Counter,
    /// Dry runs sent, for the promise that an unchanged pass sends none.
    pub dry_runs: &'a prometheus_client::metrics::counter::Counter,
    /// `spec.ignore`: fields left out of drift detection and of updates.
    pub ignore: &'a DriftIgnore,
    /// Field managers whose fields this controller takes over (`--override-manager*`).
    pub overrides: &'a ManagerOverrides,
    /// Drift detection by watching, for the controller's own cluster; `None`: dry runs always.
    pub drift: Option<Drift<'a>>,
}

/// The baselines an apply reads and leaves, and the Kustomization it applies for.
pub struct Drift<'a> {
    pub watch: &'a DriftWatch,
    pub owner: &'a Owner,
}

/// The field managers whose fields the controller makes its own, besides Flux's built-in list
/// (`kubectl`, `before-first-apply`, the controller's own pre-SSA updates).
#[derive(Debug, Clone, Default)]
pub struct ManagerOverrides {
    /// `--override-manager`: name prefixes, taken over after a successful dry run.
    pub after_dry_run: Vec<String>,
    /// `--override-manager-before-dry-run`: exact names, taken over before the dry run so a
    /// stale co-owner cannot wedge it (and not given back if the apply then fails, as in Flux).
    pub before_dry_run: Vec<String>,
}

impl ManagerOverrides {
    /// Flux's post-dry-run list: prefix matches, Apply or Update, never a subresource.
    fn after<'a>(&'a self, own: &'a str) -> impl Fn(&str, &str) -> bool + 'a {
        move |manager: &str, op: &str| {
            let any_op = op == "Apply" || op == "Update";
            (manager.starts_with("kubectl") && any_op)
                || (manager.starts_with("before-first-apply") && op == "Update")
                || (manager.starts_with(own) && op == "Update")
                || (any_op
                    && self
                        .after_dry_run
                        .iter()
                        .any(|m| manager.starts_with(m.as_str())))
        }
    }

    fn before(&self) -> impl Fn(&str, &str) -> bool + '_ {
        move |manager: &str, op: &str| {
            (op == "Apply" || op == "Update") && self.before_dry_run.iter().any(|m| m == manager)
        }
    }
}

/// One applied object and what happened to it.
#[derive(Debug, Clone)]
pub struct Applied {
    pub object: ObjectRef,
    pub action: Action,
}

/// Flux's stage-one kinds: cluster definitions that others depend on.
pub fn is_definition(r: &ObjectRef) -> bool {
    matches!(
        (r.group.as_str(), r.kind.as_str()),
        ("apiextensions.k8s.io", "CustomResourceDefinition")
            | ("", "Namespace")
            | ("rbac.authorization.k8s.io", "ClusterRole")
    )
}

/// Flux's class stage: kinds named `...Class` (StorageClass, IngressClass, a CRD's
/// `WidgetClass`), applied after the cluster definitions and before everything else.
pub fn is_class(r: &ObjectRef) -> bool {
    r.kind.ends_with("Class")
}

/// `--custom-apply-stage-kinds` as Flux parses it: comma-separated `group/Kind`, or `Kind`
/// for the core group.
pub fn parse_group_kinds(text: &str) -> Vec<(String, String)> {
    if text.is_empty() {
        return Vec::new();
    }
    text.split(',')
        .map(|item| match item.trim().split_once('/') {
            Some((group, kind)) => (group.to_string(), kind.to_string()),
            None => (String::new(), item.trim().to_string()),
        })
        .collect()
}

/// Flux's stages, each sorted: cluster definitions (CRDs, Namespaces, ClusterRoles), classes,
/// the `--custom-apply-stage-kinds` (`custom`: (group, kind) pairs), then the rest.
pub fn stages(
    objects: Vec<(ObjectRef, Value)>,
    custom: &[(String, String)],
) -> [Vec<(ObjectRef, Value)>; 4] {
    let mut stages: [Vec<(ObjectRef, Value)>; 4] = Default::default();
    for (r, object) in objects {
        let stage = if is_definition(&r) {
            0
        } else if is_class(&r) {
            1
        } else if custom.iter().any(|(g, k)| *g == r.group && *k == r.kind) {
            2
        } else {
            3
        };
        stages[stage].push((r, object));
    }
    for stage in &mut stages {
        sort_for_apply(stage);
    }
    stages
}

/// Flux's apply order inside a stage: kind rank, then namespace and name.
pub fn sort_for_apply(objects: &mut [(ObjectRef, Value)]) {
    objects.sort_by(|(a, _), (b, _)| {
        (kind_rank(a), &a.kind, &a.namespace, &a.name).cmp(&(
            kind_rank(b),
            &b.kind,
            &b.namespace,
            &b.name,
        ))
    });
}

/// Consecutive runs of objects (sorted by [`sort_for_apply`]) that share a kind rank: objects
/// of one run do not depend on each other and can be applied concurrently.
pub fn runs_of_equal_rank(objects: Vec<(ObjectRef, Value)>) -> Vec<Vec<(ObjectRef, Value)>> {
    let mut runs: Vec<Vec<(ObjectRef, Value)>> = Vec::new();
    for (r, object) in objects {
        match runs.last_mut() {
            Some(run)
                if run
                    .first()
                    .is_some_and(|(f, _)| kind_rank(f) == kind_rank(&r)) =>
            {
                run.push((r, object))
            }
            _ => runs.push(vec![(r, object)]),
        }
    }
    runs
}

fn kind_rank(r: &ObjectRef) -> usize {
    const ORDER: [&str; 23] = [
        "CustomResourceDefinition",
        "Namespace",
        "ClusterRole",
        "ClusterClass",
        "RuntimeClass",
        "PriorityClass",
        "StorageClass",
        "VolumeSnapshotClass",
        "IngressClass",
        "GatewayClass",
        "ClusterRoleBinding",
        "ResourceQuota",
        "ServiceAccount",
        "Role",
        "RoleBinding",
        "ConfigMap",
        "Secret",
        "Service",
        "LimitRange",
        "Deployment",
        "StatefulSet",
        "CronJob",
        "PodDisruptionBudget",
    ];
    if r.kind.ends_with("WebhookConfiguration") {
        return ORDER.len() + 1;
    }
    ORDER
        .iter()
        .position(|k| *k == r.kind)
        .unwrap_or(ORDER.len())
}

impl Applier<'_> {
    /// Applies one object; namespaced objects without a namespace get `default_namespace`.
    pub async fn apply(
        &self,
        mut object: Value,
        default_namespace: Option<&str>,
    ) -> Result<Applied, ApplyError> {
        let mut r = ObjectRef::of(&object)
            .ok_or_else(|| ApplyError::Mapping("object without apiVersion, kind or name".into()))?;
        let (resource, scope) = self.mapper.resolve(self.client, &r).await?;
        match scope {
            Scope::Cluster => {
                if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
                    meta.remove("namespace");
                }
                r.namespace.clear();
            }
            Scope::Namespaced => {
                if let Some(ns) = default_namespace {
                    object["metadata"]["namespace"] = Value::String(ns.to_string());
                    r.namespace = ns.to_string();
                }
                if r.namespace.is_empty() {
                    return Err(ApplyError::DryRun {
                        subject: r.subject(),
                        message: "namespace not specified (set it in the manifest or spec.targetNamespace)".into(),
                    });
                }
            }
        }
        let desired = self.drift.as_ref().map(|_| drift::desired_hash(&object));
        if let (Some(drift), Some(desired)) = (&self.drift, desired)
            && drift.watch.unchanged(&resource, &r, desired)
        {
            return Ok(Applied {
                object: r,
                action: Action::Unchanged,
            });
        }
        let result = self.apply_resolved(&resource, r.clone(), object).await;
        if let Some(drift) = &self.drift {
            match (&result, desired) {
                (Ok((applied, Some(meta))), Some(desired)) if applied.action != Action::Skipped => {
                    drift
                        .watch
                        .record(&resource, &r, desired, meta, drift.owner)
                }
                _ => drift.watch.forget(&resource, &r),
            }
        }
        result.map(|(applied, _)| applied)
    }

    /// `apply` past the mapping: the GET, the dry run and the write, with the metadata the API
    /// server last answered for the object (none when skipped).
    async fn apply_resolved(
        &self,
        resource: &ApiResource,
        r: ObjectRef,
        mut object: Value,
    ) -> Result<(Applied, Option<ObjectMeta>), ApplyError> {
        let api = self.api(resource, &r);
        let live = api.get_opt(&r.name).await.map_err(|e| ApplyError::DryRun {
            subject: r.subject(),
            message: kube_message(&e),
        })?;
        let live_value = live
            .as_ref()
            .map(|l| serde_json::to_value(l).unwrap_or_default());
        if is_skipped(&object, live_value.as_ref()) {
            return Ok((
                Applied {
                    object: r,
                    action: Action::Skipped,
                },
                None,
            ));
        }
        let mut live_value = live_value;
        let mut patched = self
            .take_over_where(
                &api,
                &r,
                &object,
                live_value.as_mut(),
                self.overrides.before(),
            )
            .await?;
        let dry = match self.dry_run(&api, &r, &object).await {
            Ok(dry) => dry,
            Err(message)
                if live.is_some()
                    && is_immutable(&message)
                    && (self.force || forced(&object, live_value.as_ref())) =>
            {
                self.recreate(&api, &r).await?;
                return self.write(&api, &r, &object, Action::Created).await;
            }
            Err(message) => {
                return Err(ApplyError::DryRun {
                    subject: r.subject(),
                    message,
                });
            }
        };
        patched |= self
            .take_over_where(
                &api,
                &r,
                &object,
                live_value.as_mut(),
                self.overrides.after(self.field_manager),
            )
            .await?;
        let Some(live_value) = &live_value else {
            return self.write(&api, &r, &object, Action::Created).await;
        };
        let ignored = self.ignore.paths_for(&dry);
        // Copies without the ignored fields only when there are any: this runs for every object.
        let changed = match ignored.is_empty() {
            true => drifted(live_value, &dry),
            false => drifted(
                &ignore::without(live_value, &ignored),
                &ignore::without(&dry, &ignored),
            ),
        };
        if !patched && !changed {
            return Ok((
                Applied {
                    object: r,
                    action: Action::Unchanged,
                },
                live.map(|l| l.metadata),
            ));
        }
        let drifted_ignored = ignore::drifted(live_value, &dry, &ignored);
        ignore::shape_payload(
            &mut object,
            live_value,
            &drifted_ignored,
            self.field_manager,
        );
        self.write(&api, &r, &object, Action::Configured).await
    }

    fn api(&self, resource: &ApiResource, r: &ObjectRef) -> Api<DynamicObject> {
        match r.namespace.is_empty() {
            true => Api::all_with(self.client.clone(), resource),
            false => Api::namespaced_with(self.client.clone(), &r.namespace, resource),
        }
    }

    async fn dry_run(
        &self,
        api: &Api<DynamicObject>,
        r: &ObjectRef,
        object: &Value,
    ) -> Result<Value, String> {
        let params = PatchParams::apply(self.field_manager).force().dry_run();
        self.dry_runs.inc();
        api.patch(&r.name, &params, &Patch::Apply(object))
            .await
            .map(|o| serde_json::to_value(o).unwrap_or_default())
            .map_err(|e| kube_message(&e))
    }

    async fn write(
        &self,
        api: &Api<DynamicObject>,
        r: &ObjectRef,
        object: &Value,
        action: Action,
    ) -> Result<(Applied, Option<ObjectMeta>), ApplyError> {
        let params = PatchParams::apply(self.field_manager).force();
        self.writes.inc();
        let written = api
            .patch(&r.name, &params, &Patch::Apply(object))
            .await
            .map_err(|e| ApplyError::Apply {
                subject: r.subject(),
                message: kube_message(&e),
            })?;
        Ok((
            Applied {
                object: r.clone(),
                action,
            },
            Some(written.metadata),
        ))
    }

    /// Makes the fields of the managers `taken` selects ours (see [`takeover`]) on an existing
    /// object that `ssa: Merge` does not exclude; the live copy follows. `true`: taken.
    async fn take_over_where(
        &self,
        api: &Api<DynamicObject>,
        r: &ObjectRef,
        desired: &Value,
        live: Option<&mut Value>,
        taken: impl Fn(&str, &str) -> bool,
    ) -> Result<bool, ApplyError> {
        let Some(live) = live else {
            return Ok(false);
        };
        if has_marker(desired, SSA_KEY, "merge") || has_marker(live, SSA_KEY, "merge") {
            return Ok(false);
        }
        let Some(managed_fields) = takeover(live, self.field_manager, taken) else {
            return Ok(false);
        };
        self.writes.inc();
        let patch = serde_json::json!({"metadata": {"managedFields": managed_fields}});
        api.patch(&r.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(|e| ApplyError::Apply {
                subject: r.subject(),
                message: format!(
                    "taking over fields of other field managers: {}",
                    kube_message(&e)
                ),
            })?;
        live["metadata"]["managedFields"] = Value::Array(managed_fields);
        Ok(true)
    }

    /// Deletes and waits until the object is gone, so it can be created again.
    async fn recreate(&self, api: &Api<DynamicObject>, r: &ObjectRef) -> Result<(), ApplyError> {
        self.writes.inc();
        let params = DeleteParams {
            propagation_policy: Some(PropagationPolicy::Background),
            ..Default::default()
        };
        api.delete(&r.name, &params)
            .await
            .map_err(|e| ApplyError::Delete {
                subject: r.subject(),
                message: kube_message(&e),
            })?;
        let deadline = Instant::now() + Duration::from_secs(60);
        while api.get_opt(&r.name).await.ok().flatten().is_some() {
            if Instant::now() > deadline {
                return Err(ApplyError::Delete {
                    subject: r.subject(),
                    message: "still terminating after 60s".into(),
                });
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        Ok(())
    }

    /// Deletes a stale object if this Kustomization owns it and nothing opts it out.
    /// `Ok(false)`: left alone.
    pub async fn delete_owned(
        &self,
        r: &ObjectRef,
        owner: (&str, &str),
    ) -> Result<bool, ApplyError> {
        let (resource, _) = match self.mapper.resolve(self.client, r).await {
            Ok(found) => found,
            // The kind is gone (its CRD was removed): so is the object.
            Err(_) => return Ok(true),
        };
        if let Some(drift) = &self.drift {
            // Its deletion is ours: nothing to put back.
            drift.watch.forget(&resource, r);
        }
        let api = self.api(&resource, r);
        let Some(live) = api.get_opt(&r.name).await.map_err(|e| ApplyError::Delete {
            subject: r.subject(),
            message: kube_message(&e),
        })?
        else {
            return Ok(true);
        };
        let live = serde_json::to_value(&live).unwrap_or_default();
        let label = |k: &str| {
            live.pointer("/metadata/labels")
                .and_then(|l| l.get(k))
                .and_then(Value::as_str)
        };
        if label(OWNER_NAME) != Some(owner.0) || label(OWNER_NAMESPACE) != Some(owner.1) {
            return Ok(false);
        }
        if has_marker(&live, PRUNE_KEY, "disabled")
            || has_marker(&live, RECONCILE_KEY, "disabled")
            || has_marker(&live, SSA_KEY, "ignore")
        {
            return Ok(false);
        }
        self.writes.inc();
        let params = DeleteParams {
            propagation_policy: Some(PropagationPolicy::Background),
            ..Default::default()
        };
        match api.delete(&r.name, &params).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(true),
            Err(e) => Err(ApplyError::Delete {
                subject: r.subject(),
                message: kube_message(&e),
            }),
        }
    }

    /// The live object, for health checks (`None`: not found).
    pub async fn get(&self, r: &ObjectRef) -> Result<Option<Value>, ApplyError> {
        let (resource, _) = self.mapper.resolve(self.client, r).await?;
        let api = self.api(&resource, r);
        api.get_opt(&r.name)
            .await
            .map(|o| o.map(|o| serde_json::to_value(o).unwrap_or_default()))
            .map_err(|e| ApplyError::Mapping(format!("{}: {}", r.subject(), kube_message(&e))))
    }
}

/// A label or annotation `key` whose value is `value` (case-insensitive), on the object.
pub fn has_marker(object: &Value, key: &str, value: &str) -> bool {
    ["labels", "annotations"].iter().any(|f| {
        object
            .pointer(&format!("/metadata/{f}"))
            .and_then(|m| m.get(key))
            .and_then(Value::as_str)
            .is_some_and(|v| v.eq_ignore_ascii_case(value))
    })
}

/// Flux's exclusions: `reconcile: disabled` or `ssa: Ignore` on either side, and
/// `ssa: IfNotPresent` on an object that already exists.
fn is_skipped(desired: &Value, live: Option<&Value>) -> bool {
    let excluded =
        |o: &Value| has_marker(o, RECONCILE_KEY, "disabled") || has_marker(o, SSA_KEY, "ignore");
    excluded(desired)
        || live.is_some_and(excluded)
        || (live.is_some() && has_marker(desired, SSA_KEY, "ifnotpresent"))
}

fn forced(desired: &Value, live: Option<&Value>) -> bool {
    has_marker(desired, FORCE_KEY, "enabled")
        || live.is_some_and(|l| has_marker(l, FORCE_KEY, "enabled"))
}

fn is_immutable(message: &str) -> bool {
    message.contains("is immutable")
        || message.contains("immutable field")
        || message.contains("field is immutable")
}

/// Flux's managed-fields takeover: the fields of the managers `taken(manager, operation)`
/// selects (by default `kubectl` apply/edit/patch, `before-first-apply`, this manager's own
/// pre-SSA updates; see [`ManagerOverrides`]) are merged into this manager's Apply entry, so
/// that the next apply removes those the artifact does not have — that is how a manual
/// `kubectl edit` that added a field is undone. `None`: nothing to take.
pub fn takeover(
    live: &Value,
    manager: &str,
    taken: impl Fn(&str, &str) -> bool,
) -> Option<Vec<Value>> {
    let entries = live.pointer("/metadata/managedFields")?.as_array()?;
    let is_ours = |e: &Value| {
        e.get("manager").and_then(Value::as_str) == Some(manager)
            && e.get("operation").and_then(Value::as_str) == Some("Apply")
            && e.get("subresource").is_none_or(|s| s.as_str() == Some(""))
    };
    let is_taken = |e: &Value| {
        let text = |k: &str| e.get(k).and_then(Value::as_str).unwrap_or("");
        !is_ours(e) && text("subresource").is_empty() && taken(text("manager"), text("operation"))
    };
    if !entries.iter().any(is_taken) {
        return None;
    }
    let mut merged = serde_json::Map::new();
    let mut kept = Vec::new();
    let mut ours: Option<Value> = None;
    for e in entries {
        if is_ours(e) {
            ours = Some(e.clone());
        } else if is_taken(e) {
            merge_fields(&mut merged, e.get("fieldsV1"));
        } else {
            kept.push(e.clone());
        }
    }
    let mut ours = ours.unwrap_or_else(|| {
        serde_json::json!({
            "manager": manager,
            "operation": "Apply",
            "apiVersion": live.get("apiVersion").cloned().unwrap_or(Value::Null),
            "fieldsType": "FieldsV1",
            "time": crate::util::now_whole_seconds().to_string(),
        })
    });
    let mut fields = ours
        .get("fieldsV1")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    merge_fields(&mut fields, Some(&Value::Object(merged)));
    ours["fieldsV1"] = Value::Object(fields);
    kept.push(ours);
    Some(kept)
}

/// The union of two field sets (`f:name: {...}` trees).
fn merge_fields(into: &mut serde_json::Map<String, Value>, from: Option<&Value>) {
    for (k, v) in from.and_then(Value::as_object).into_iter().flatten() {
        match (into.get_mut(k), v) {
            (Some(Value::Object(existing)), Value::Object(_)) => merge_fields(existing, Some(v)),
            _ => {
                into.insert(k.clone(), v.clone());
            }
        }
    }
}

/// Whether the dry-run result differs from the live object: labels, annotations, or anything
/// outside metadata and status.
pub fn drifted(live: &Value, dry: &Value) -> bool {
    let meta = |o: &Value, f: &str| {
        o.pointer(&format!("/metadata/{f}"))
            .cloned()
            .unwrap_or(Value::Null)
    };
    if meta(live, "labels") != meta(dry, "labels")
        || meta(live, "annotations") != meta(dry, "annotations")
    {
        return true;
    }
    let body = |o: &Value| {
        let mut o = o.as_object().cloned().unwrap_or_default();
        o.remove("metadata");
        o.remove("status");
        o
    };
    body(live) != body(dry)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn drift_ignores_metadata_bookkeeping_and_status() {
        let live = json!({"metadata": {"name": "a", "resourceVersion": "1", "labels": {"x": "1"}}, "data": {"k": "v"}, "status": {"s": 1}});
        let same = json!({"metadata": {"name": "a", "resourceVersion": "1", "managedFields": [], "labels": {"x": "1"}}, "data": {"k": "v"}, "status": {"s": 2}});
        assert!(!drifted(&live, &same));
        let changed = json!({"metadata": {"name": "a", "labels": {"x": "1"}}, "data": {"k": "w"}});
        assert!(drifted(&live, &changed));
        let relabelled =
            json!({"metadata": {"name": "a", "labels": {"x": "2"}}, "data": {"k": "v"}});
        assert!(drifted(&live, &relabelled));
    }

    #[test]
    fn kubectl_fields_are_taken_over_into_our_apply_entry() {
        let live = json!({"apiVersion": "v1", "metadata": {"managedFields": [
            {"manager": "kustomize-controller", "operation": "Apply", "fieldsType": "FieldsV1", "fieldsV1": {"f:data": {"f:a": {}}}},
            {"manager": "kubectl-edit", "operation": "Update", "fieldsType": "FieldsV1", "fieldsV1": {"f:data": {"f:b": {}}}},
            {"manager": "kube-controller-manager", "operation": "Update", "fieldsV1": {"f:status": {}}},
            {"manager": "kubectl", "operation": "Update", "subresource": "status", "fieldsV1": {"f:status": {}}},
        ]}});
        let defaults = ManagerOverrides::default();
        let fields = takeover(
            &live,
            "kustomize-controller",
            defaults.after("kustomize-controller"),
        )
        .unwrap();
        let managers: Vec<&str> = fields
            .iter()
            .map(|f| f["manager"].as_str().unwrap())
            .collect();
        assert_eq!(
            managers,
            ["kube-controller-manager", "kubectl", "kustomize-controller"]
        );
        assert_eq!(
            fields[2]["fieldsV1"],
            json!({"f:data": {"f:a": {}, "f:b": {}}})
        );
        let clean = json!({"metadata": {"managedFields": [{"manager": "kustomize-controller", "operation": "Apply", "fieldsV1": {}}]}});
        assert_eq!(
            takeover(
                &clean,
                "kustomize-controller",
                defaults.after("kustomize-controller")
            ),
            None
        );
    }

    #[test]
    fn override_managers_match_as_flux_matches_them() {
        let overrides = ManagerOverrides {
            after_dry_run: vec!["helm".into(), "kustomize".into()],
            before_dry_run: vec!["stale-operator".into()],
        };
        let after = overrides.after("kustomize-controller");
        assert!(after("helm-controller", "Apply"), "prefix");
        assert!(after("helm", "Update"));
        assert!(after("kubectl-client-side-apply", "Update"));
        assert!(after("before-first-apply", "Update"));
        assert!(!after("before-first-apply", "Apply"));
        assert!(
            after("kustomize-controller", "Update"),
            "own pre-SSA updates"
        );
        assert!(!after("argocd", "Apply"));
        let before = overrides.before();
        assert!(before("stale-operator", "Apply") && before("stale-operator", "Update"));
        assert!(!before("stale-operator-2", "Apply"), "exact names only");
        assert!(
            !before("kubectl", "Update"),
            "no built-ins before the dry run"
        );

        // Our own Apply entry is never taken, even by a prefix that matches it.
        let live = json!({"metadata": {"managedFields": [
            {"manager": "kustomize-controller", "operation": "Apply", "fieldsV1": {"f:data": {"f:a": {}}}},
            {"manager": "helm-controller", "operation": "Apply", "fieldsV1": {"f:data": {"f:h": {}}}},
            {"manager": "helm-controller", "operation": "Update", "subresource": "status", "fieldsV1": {"f:status": {}}},
        ]}});
        let fields = takeover(&live, "kustomize-controller", after).unwrap();
        assert_eq!(fields.len(), 2, "{fields:?}");
        assert_eq!(fields[0]["subresource"], "status");
        assert_eq!(fields[1]["manager"], "kustomize-controller");
        assert_eq!(
            fields[1]["fieldsV1"],
            json!({"f:data": {"f:a": {}, "f:h": {}}})
        );
    }

    #[test]
    fn custom_kinds_get_a_stage_after_definitions_and_classes() {
        let r = |group: &str, kind: &str| ObjectRef {
            group: group.into(),
            version: "v1".into(),
            kind: kind.into(),
            namespace: "ns".into(),
            name: "x".into(),
        };
        let objects = vec![
            (r("rbac.authorization.k8s.io", "RoleBinding"), json!({})),
            (r("", "ConfigMap"), json!({})),
            (r("rbac.authorization.k8s.io", "Role"), json!({})),
            (r("example.com", "WidgetClass"), json!({})),
            (r("", "Namespace"), json!({})),
        ];
        let kinds = |stages: [Vec<(ObjectRef, Value)>; 4]| {
            stages.map(|s| s.iter().map(|(r, _)| r.kind.clone()).collect::<Vec<_>>())
        };
        let custom = parse_group_kinds("rbac.authorization.k8s.io/Role");
        assert_eq!(
            kinds(stages(objects.clone(), &custom)),
            [
                vec!["Namespace"],
                vec!["WidgetClass"],
                vec!["Role"],
                vec!["RoleBinding", "ConfigMap"],
            ]
        );
        assert_eq!(
            kinds(stages(objects, &[]))[3],
            ["Role", "RoleBinding", "ConfigMap"]
        );
    }

    #[test]
    fn custom_stage_kinds_parse_as_flux_parses_them() {
        assert!(parse_group_kinds("").is_empty());
        assert_eq!(
            parse_group_kinds("rbac.authorization.k8s.io/Role, ConfigMap,example.com/a/b"),
            [
                ("rbac.authorization.k8s.io".to_string(), "Role".to_string()),
                (String::new(), "ConfigMap".to_string()),
                ("example.com".to_string(), "a/b".to_string()),
            ]
        );
    }

    #[test]
    fn flux_opt_outs() {
        let ignore = json!({"metadata": {"annotations": {SSA_KEY: "Ignore"}}});
        let if_absent = json!({"metadata": {"annotations": {SSA_KEY: "IfNotPresent"}}});
        let disabled = json!({"metadata": {"labels": {RECONCILE_KEY: "disabled"}}});
        let plain = json!({"metadata": {}});
        assert!(is_skipped(&ignore, None));
        assert!(is_skipped(&disabled, None));
        assert!(!is_skipped(&if_absent, None));
        assert!(is_skipped(&if_absent, Some(&plain)));
        assert!(is_skipped(&plain, Some(&disabled)));
        assert!(!is_skipped(&plain, Some(&plain)));
    }

    #[test]
    fn definitions_first_and_webhooks_last() {
        let r = |kind: &str, group: &str| ObjectRef {
            group: group.into(),
            version: "v1".into(),
            kind: kind.into(),
            namespace: String::new(),
            name: "x".into(),
        };
        let mut objects = vec![
            (
                r(
                    "ValidatingWebhookConfiguration",
                    "admissionregistration.k8s.io",
                ),
                json!({}),
            ),
            (r("Widget", "example.com"), json!({})),
            (r("Deployment", "apps"), json!({})),
            (r("Namespace", ""), json!({})),
            (
                r("CustomResourceDefinition", "apiextensions.k8s.io"),
                json!({}),
            ),
        ];
        sort_for_apply(&mut objects);
        let kinds: Vec<&str> = objects.iter().map(|(r, _)| r.kind.as_str()).collect();
        assert_eq!(
            kinds,
            [
                "CustomResourceDefinition",
                "Namespace",
                "Deployment",
                "Widget",
                "ValidatingWebhookConfiguration"
            ]
        );
        assert!(
            is_definition(&objects[0].0)
                && is_definition(&objects[1].0)
                && !is_definition(&objects[2].0)
        );
    }
}
