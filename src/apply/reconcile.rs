//! The Kustomization reconciler (reference: Flux's kustomize-controller §3): source →
//! dependencies → download and verify → build → substitute → staged server-side apply →
//! inventory and prune → health → status, each step a function that returns what it learnt or
//! a `Failure` carrying Flux's reason.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Secret, ServiceAccount};
use kube::api::DynamicObject;
use kube::discovery::ApiResource;
use kube::{Api, Resource, ResourceExt};
use serde_json::{Value, json};

use super::build::{self, BuildError};
use super::cel::{self, HealthExpressions};
use super::cluster;
use super::context::{ApplyContext, FIELD_MANAGER};
use super::fetch::FetchError;
use super::health::{self, Health};
use super::ignore::DriftIgnore;
use super::interrupt::Registration;
use super::inventory::{self, ObjectRef};
use super::sops;
use super::ssa::{
    Action as ApplyAction, Applied, Applier, Drift, ManagerOverrides, OWNER_NAME, OWNER_NAMESPACE,
    runs_of_equal_rank, stages,
};
use super::substitute;
use crate::api::kustomization::{
    DeletionPolicy, Kustomization, KustomizationStatus, ResourceInventory, SourceKind,
    SubstituteKind, SubstituteStrategy,
};
use crate::api::{Artifact, ConditionStatus};
use crate::controller::conditions::{READY, RECONCILING, STALLED};
use crate::controller::objects::{kube_message, secret_data};
use crate::controller::outcome::{Failure, ReadySummary, Summary};
use crate::controller::pass::Pass;
use crate::controller::pass::{FrameError, Reconciled, impl_object_status};
use crate::controller::requeue::{go_duration, parse_duration};
use crate::identity::aws::{AwsAuth, role_arn as aws_role_arn};
use crate::identity::entra::EntraCredential;
use crate::identity::google::GoogleCredential;
use crate::identity::workload;

const KIND: &str = "Kustomization";
const HEALTHY: &str = "Healthy";

/// kustomize-controller's own reasons; the ones every controller shares come from
/// `controller::conditions::reason`.
pub mod reason {
    pub const SUCCEEDED: &str = "ReconciliationSucceeded";
    pub const FAILED: &str = "ReconciliationFailed";
    pub const ARTIFACT_FAILED: &str = "ArtifactFailed";
    pub const BUILD_FAILED: &str = "BuildFailed";
    pub const DEPENDENCY_NOT_READY: &str = "DependencyNotReady";
    pub const PRUNE_FAILED: &str = "PruneFailed";
    pub const HEALTH_CHECK_FAILED: &str = "HealthCheckFailed";
    pub const ACCESS_DENIED: &str = "AccessDenied";
    pub const DIRECTORY_CREATION_FAILED: &str = "DirectoryCreationFailed";
    pub const HEALTH_CHECK_CANCELED: &str = "HealthCheckCanceled";
    pub const INVALID_CEL_EXPRESSION: &str = "InvalidCELExpression";
    pub use crate::controller::conditions::reason::{
        INTERNAL_ERROR, INVALID_DURATION, PROGRESSING, SUCCEEDED as HEALTH_SUCCEEDED,
    };
}

/// A Kustomization's failures: each is `Ready=False` with Flux's reason.
trait KustomizationFailure {
    fn new(reason: &'static str, message: impl Into<String>) -> Self;
    /// Terminal until the spec changes (`Stalled=True`).
    fn stalled(reason: &'static str, message: impl Into<String>) -> Self;
    /// Sooner than `retryInterval` (dependencies and sources that are not ready yet).
    fn waiting(reason: &'static str, message: impl Into<String>, after: Duration) -> Self;
}

impl KustomizationFailure for Failure {
    fn new(reason: &'static str, message: impl Into<String>) -> Self {
        Failure::on(READY, reason, message)
    }
    fn stalled(reason: &'static str, message: impl Into<String>) -> Self {
        Failure::on(READY, reason, message).stall()
    }
    fn waiting(reason: &'static str, message: impl Into<String>, after: Duration) -> Self {
        Failure::on(READY, reason, message).retry_after(after)
    }
}

impl_object_status!(KustomizationStatus);

impl Reconciled for Kustomization {
    type Status = KustomizationStatus;
    type Context = ApplyContext;
    /// The digest of what the pass built, once it did (for `status.history`).
    type Memo = Option<String>;
    const KIND: &'static str = KIND;
    const SUMMARY: Summary = Summary {
        ready: ReadySummary::SetBySteps,
        in_progress: "Reconciliation in progress",
    };
    const FRAME_FAILURE: &'static str = READY;
    fn status(&self) -> Option<&KustomizationStatus> {
        self.status.as_ref()
    }
    fn suspended(&self) -> bool {
        self.spec.suspend
    }
    fn interval(&self) -> &str {
        &self.spec.interval
    }
    fn durations(&self) -> Vec<(&'static str, &str)> {
        vec![
            ("spec.interval", self.spec.interval.as_str()),
            ("spec.timeout", self.spec.timeout.as_deref().unwrap_or("0")),
            (
                "spec.retryInterval",
                self.spec.retry_interval.as_deref().unwrap_or("0"),
            ),
        ]
    }
    fn retry_interval(&self) -> Option<Duration> {
        Some(retry_interval(self))
    }
    fn event_metadata(status: &KustomizationStatus) -> Vec<(&'static str, String)> {
        status
            .last_attempted_revision
            .iter()
            .map(|rev| ("kustomize.toolkit.fluxcd.io/revision", rev.clone()))
            .collect()
    }
    async fn run(pass: &mut Pass<'_, Self>) -> Result<(), Failure> {
        let done = pass.run_steps().await?;
        pass.succeeded(done).await;
        Ok(())
    }
    fn ended(pass: &mut Pass<'_, Self>, took: Duration) {
        pass.record_history(took);
    }
    async fn cleanup(obj: &Self, ctx: &ApplyContext) -> Result<(), FrameError> {
        cleanup(obj, ctx).await
    }
}

/// What a successful pass did, for status and events.
struct Outcome {
    revision: String,
    origin_revision: Option<String>,
    changes: Vec<Applied>,
    pruned: Vec<ObjectRef>,
    inventory: ResourceInventory,
}

impl Pass<'_, Kustomization> {
    async fn run_steps(&mut self) -> Result<Outcome, Failure> {
        self.conditions.delete(STALLED);
        let health_rules = self.health_expressions()?;
        let ready_exprs = self.ready_expressions()?;
        self.refuse_cross_namespace_dependencies()?;
        let mut interrupt = self.ctx.interrupts.register(
            &self.key(),
            Some(self.generation),
            crate::controller::frame::requested_at(self.obj),
        );
        let artifact = self.source_artifact().await?;
        if let Some(i) = &interrupt {
            i.applying(&artifact.revision);
        }
        self.check_dependencies(&artifact, &ready_exprs).await?;
        let revision = artifact.revision.clone();
        self.progress(&format!(
            "Fetching manifests for revision {revision} with a timeout of {:?}",
            self.timeout()
        ));
        let ignore = self.drift_ignore()?;
        let objects = self.built(&artifact).await?;
        let objects = self.finalize_objects(objects).await?;
        self.memo = Some(super::history::build_digest(&objects));
        let target = self.target_cluster().await?;
        let owner = (
            self.obj.namespace().unwrap_or_default(),
            self.obj.name_any(),
        );
        let applier = Applier {
            client: &target.client,
            mapper: target.mapper(&self.ctx.mapper),
            field_manager: FIELD_MANAGER,
            force: self.obj.spec.force,
            writes: &self.ctx.metrics.apply_writes,
            dry_runs: &self.ctx.metrics.apply_dry_runs,
            ignore: &ignore,
            overrides: &self.ctx.settings.overrides,
            drift: match (&self.ctx.drift, target.is_local()) {
                (Some(watch), true) => Some(Drift {
                    watch,
                    owner: &owner,
                }),
                _ => None,
            },
        };
        self.progress(&format!(
            "Detecting drift for revision {revision} with a timeout of {:?}",
            self.timeout()
        ));
        let changes = self.apply(&applier, objects).await?;
        let new_inventory =
            inventory::inventory(&changes.iter().map(|c| c.object.clone()).collect::<Vec<_>>());
        let old_inventory = self.status.inventory.clone().unwrap_or_default();
        self.status.inventory = Some(new_inventory.clone());
        let pruned = match self.obj.spec.prune {
            true => self.prune(&applier, &old_inventory, &new_inventory).await?,
            false => Vec::new(),
        };
        self.check_health(&applier, &changes, &health_rules, interrupt.as_mut())
            .await?;
        Ok(Outcome {
            origin_revision: artifact
                .metadata
                .as_ref()
                .and_then(|m| m.get("org.opencontainers.image.revision").cloned()),
            revision,
            changes,
            pruned,
            inventory: new_inventory,
        })
    }

    fn progress(&mut self, message: &str) {
        self.conditions
            .mark_true(RECONCILING, reason::PROGRESSING, message);
        if self
            .conditions
            .get(READY)
            .is_none_or(|c| c.status != ConditionStatus::True)
        {
            self.conditions.set(
                READY,
                ConditionStatus::Unknown,
                reason::PROGRESSING,
                "Reconciliation in progress",
            );
        }
    }

    /// `spec.healthCheckExprs`, parsed once per pass; an expression that does not parse is a
    /// configuration error until the spec changes.
    fn health_expressions(&self) -> Result<HealthExpressions, Failure> {
        let checks = self
            .obj
            .spec
            .health_check_exprs
            .as_deref()
            .unwrap_or_default();
        HealthExpressions::compile(checks).map_err(invalid_cel)
    }

    /// Every `dependsOn[].readyExpr`, compiled before any dependency is read (Flux compiles
    /// each as it reaches it; the outcome for a bad expression is the same terminal error).
    fn ready_expressions(&self) -> Result<BTreeMap<String, Arc<cel::Expression>>, Failure> {
        let dependencies = self.obj.spec.depends_on.iter().flatten();
        let exprs = dependencies.filter_map(|d| {
            let source = d.ready_expr.as_deref().filter(|e| !e.is_empty())?;
            Some((d.name.as_str(), source))
        });
        cel::compile_ready_exprs(exprs).map_err(invalid_cel)
    }

    /// `spec.ignore`, compiled once per pass; a rule that cannot be compiled is a spec error.
    fn drift_ignore(&self) -> Result<DriftIgnore, Failure> {
        let rules = self.obj.spec.ignore.as_deref().unwrap_or_default();
        DriftIgnore::compile(rules).map_err(|e| Failure::stalled(reason::FAILED, e))
    }

    fn timeout(&self) -> Duration {
        timeout(self.obj)
    }

    fn retry_interval(&self) -> Duration {
        retry_interval(self.obj)
    }

    /// `--no-cross-namespace-refs` covers dependencies as it covers the source: before any
    /// read, so a tenant cannot probe another namespace's Kustomizations through `dependsOn`.
    fn refuse_cross_namespace_dependencies(&self) -> Result<(), Failure> {
        if !self.ctx.settings.no_cross_namespace_refs {
            return Ok(());
        }
        let own = self.namespace();
        let foreign = self
            .obj
            .spec
            .depends_on
            .iter()
            .flatten()
            .find(|d| d.namespace.as_deref().is_some_and(|ns| ns != own));
        match foreign {
            Some(dep) => Err(Failure::stalled(
                reason::ACCESS_DENIED,
                format!(
                    "can't access dependency 'Kustomization/{}/{}', cross-namespace references have been blocked",
                    dep.namespace.as_deref().unwrap_or_default(),
                    dep.name
                ),
            )),
            None => Ok(()),
        }
    }

    /// The source's `status.artifact`, read from whichever source CRD the reference names.
    async fn source_artifact(&self) -> Result<Artifact, Failure> {
        let source = &self.obj.spec.source_ref;
        let ns = source.namespace.clone().unwrap_or_else(|| self.namespace());
        if self.ctx.settings.no_cross_namespace_refs && ns != self.namespace() {
            return Err(Failure::stalled(
                reason::ACCESS_DENIED,
                format!(
                    "can't access '{}/{ns}/{}', cross-namespace references have been blocked",
                    kind_name(source.kind),
                    source.name
                ),
            ));
        }
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.ctx.client.clone(), &ns, &source_resource(source.kind));
        let subject = format!("{}/{ns}/{}", kind_name(source.kind), source.name);
        let found = match api.get_opt(&source.name).await {
            Ok(found) => found,
            // 404 for the list URL itself: the source's CRD is not installed.
            Err(kube::Error::Api(s)) if s.code == 404 => None,
            Err(e) => {
                return Err(Failure::new(
                    reason::ARTIFACT_FAILED,
                    format!("failed to get source '{subject}': {}", kube_message(&e)),
                ));
            }
        };
        let Some(found) = found else {
            return Err(Failure::waiting(
                reason::ARTIFACT_FAILED,
                format!("Source '{subject}' not found"),
                self.retry_interval(),
            ));
        };
        let artifact = found
            .data
            .pointer("/status/artifact")
            .cloned()
            .filter(|a| !a.is_null());
        let Some(artifact) = artifact else {
            return Err(Failure::waiting(
                reason::ARTIFACT_FAILED,
                format!("Source '{subject}' is not ready, artifact not found"),
                self.ctx.settings.requeue_dependency,
            ));
        };
        serde_json::from_value(artifact).map_err(|e| {
            Failure::new(
                reason::ARTIFACT_FAILED,
                format!("Source '{subject}' has an invalid artifact: {e}"),
            )
        })
    }

    /// Flux's rule: each dependency exists, is Ready for its current generation, and, when
    /// it uses the same source, has applied the same revision. A `readyExpr` over `self` and
    /// `dep` replaces that rule (or, with `AdditiveCELDependencyCheck`, comes before it).
    async fn check_dependencies(
        &self,
        artifact: &Artifact,
        ready_exprs: &BTreeMap<String, Arc<cel::Expression>>,
    ) -> Result<(), Failure> {
        let mut own: Option<Value> = None;
        for dep in self.obj.spec.depends_on.iter().flatten() {
            let ns = dep.namespace.clone().unwrap_or_else(|| self.namespace());
            let api: Api<Kustomization> = Api::namespaced(self.ctx.client.clone(), &ns);
            let not_ready = |why: String| {
                Failure::waiting(
                    reason::DEPENDENCY_NOT_READY,
                    format!("dependency '{ns}/{}' is not ready: {why}", dep.name),
                    self.ctx.settings.requeue_dependency,
                )
            };
            let Some(other) = api
                .get_opt(&dep.name)
                .await
                .map_err(|e| not_ready(kube_message(&e)))?
            else {
                return Err(not_ready("not found".into()));
            };
            if let Some(expr) = dep.ready_expr.as_deref().and_then(|e| ready_exprs.get(e)) {
                let own = own.get_or_insert_with(|| as_cel_variable(self.obj)).clone();
                self.ready_by_expression(Arc::clone(expr), own, &other, &ns, &dep.name)
                    .await?;
                if !self.ctx.settings.additive_cel_dependency_check {
                    continue;
                }
            }
            let status = other.status.clone().unwrap_or_default();
            let ready = status
                .conditions
                .iter()
                .any(|c| c.type_ == READY && c.status == ConditionStatus::True);
            if status.observed_generation != other.metadata.generation || !ready {
                return Err(not_ready("not ready".into()));
            }
            let same_source = other.spec.source_ref.kind == self.obj.spec.source_ref.kind
                && other.spec.source_ref.name == self.obj.spec.source_ref.name
                && other
                    .spec
                    .source_ref
                    .namespace
                    .clone()
                    .unwrap_or_else(|| ns.clone())
                    == self
                        .obj
                        .spec
                        .source_ref
                        .namespace
                        .clone()
                        .unwrap_or_else(|| self.namespace());
            if same_source
                && status.last_applied_revision.as_deref() != Some(artifact.revision.as_str())
            {
                return Err(not_ready(format!(
                    "revision {} not applied yet",
                    artifact.revision
                )));
            }
        }
        Ok(())
    }

    /// One dependency's `readyExpr`: false is "not ready according to readyExpr eval" (Flux's
    /// words); an evaluation error (a field the dependency lacks) is not ready either, with
    /// the cause.
    async fn ready_by_expression(
        &self,
        expr: Arc<cel::Expression>,
        own: Value,
        dependency: &Kustomization,
        ns: &str,
        name: &str,
    ) -> Result<(), Failure> {
        let dep = as_cel_variable(dependency);
        let verdict = cel::evaluate_apart(expr, vec![("self", own), ("dep", dep)]).await;
        let message = match verdict {
            Ok(true) => return Ok(()),
            Ok(false) => {
                format!("dependency '{ns}/{name}' is not ready according to readyExpr eval")
            }
            Err(e) => e,
        };
        Err(Failure::waiting(
            reason::DEPENDENCY_NOT_READY,
            message,
            self.ctx.settings.requeue_dependency,
        ))
    }

    /// The extracted artifact, from the cache shared by all Kustomizations.
    async fn download(&self, artifact: &Artifact) -> Result<Arc<tempfile::TempDir>, Failure> {
        let mut url = local_url(&artifact.url);
        if self.ctx.artifacts_over_mtls {
            url = crate::controller::spiffe::https_url(&url);
        }
        let settings = &self.ctx.settings;
        self.ctx
            .artifacts
            .get(
                &self.ctx.http,
                &url,
                &artifact.digest,
                settings.limits,
                settings.retries,
            )
            .await
            .map_err(|e| {
                // Flux 1.10.1: the source moved on (or the file went) between its status and the
                // download; the next artifact is expected soon, so retry at the dependency pace.
                let cause = match e {
                    FetchError::NotFound(_) => "artifact not found",
                    FetchError::DigestMismatch { .. } => "artifact digest changed",
                    e => return Failure::new(reason::ARTIFACT_FAILED, e.to_string()),
                };
                tracing::info!(error = %e, "artifact download failed");
                Failure::waiting(
                    reason::ARTIFACT_FAILED,
                    format!(
                        "Source is not ready, {cause}, retrying in {}",
                        go_duration(settings.requeue_dependency)
                    ),
                    settings.requeue_dependency,
                )
                // Flux records this wait in the condition only: no event.
                .without_warning()
            })
    }

    /// The artifact's manifests built as the spec says: the last build again when neither
    /// changed (`BuildMemo`), else fetched and built.
    async fn built(&mut self, artifact: &Artifact) -> Result<Vec<Value>, Failure> {
        let revision = artifact.revision.clone();
        let memo = self.build_memo_key(artifact);
        if let Some(objects) = memo.and_then(|m| self.ctx.builds.get(&self.key(), m)) {
            self.status.last_attempted_revision = Some(revision);
            return Ok(objects);
        }
        let work = tempfile::Builder::new()
            .prefix("kustomization-")
            .tempdir()
            .map_err(|e| {
                Failure::new(
                    reason::DIRECTORY_CREATION_FAILED,
                    format!("failed to create temp dir: {e}"),
                )
            })?;
        let extracted = self.download(artifact).await?;
        let content = extracted.path().join("content");
        self.status.last_attempted_revision = Some(revision.clone());
        self.progress(&format!(
            "Building manifests for revision {revision} with a timeout of {:?}",
            self.timeout()
        ));
        let objects = self.build(&content, work.path()).await;
        // Decrypted SOPS files exist only in the build's private copy: gone with the build.
        let _ = work.close();
        let objects = objects?;
        if let Some(m) = memo {
            self.ctx.builds.put(&self.key(), m, &objects);
        }
        Ok(objects)
    }

    /// What a build depends on: the artifact's content, the spec, the kustomize binary. None
    /// for builds that decrypt, whose output is never kept.
    fn build_memo_key(&self, artifact: &Artifact) -> Option<u64> {
        use std::hash::{Hash, Hasher};
        if self.obj.spec.decryption.is_some() {
            return None;
        }
        let mut h = std::hash::DefaultHasher::new();
        artifact.digest.hash(&mut h);
        serde_json::to_vec(&self.obj.spec)
            .unwrap_or_default()
            .hash(&mut h);
        self.ctx.settings.kustomize.hash(&mut h);
        Some(h.finish())
    }

    async fn build(
        &self,
        content: &std::path::Path,
        scratch: &std::path::Path,
    ) -> Result<Vec<Value>, Failure> {
        let failed = |e: BuildError| match e {
            BuildError::PathNotFound(_) | BuildError::PathOutside(_) => {
                Failure::new(reason::ARTIFACT_FAILED, e.to_string())
            }
            e => Failure::new(reason::BUILD_FAILED, e.to_string()),
        };
        let keys = self.decryption_keys().await?;
        let mut objects = build::build(
            content,
            &self.obj.spec,
            self.ctx.settings.kustomize.as_deref(),
            scratch,
            keys.clone(),
        )
        .await
        .map_err(failed)?;
        if let Some(keys) = keys {
            // KMS calls block: decryption runs off the async workers, as the build does.
            objects = tokio::task::spawn_blocking(move || {
                for object in &mut objects {
                    sops::decrypt_secret_data(object, &keys).map_err(|e| {
                        let subject = ObjectRef::of(object)
                            .map(|r| r.subject())
                            .unwrap_or_default();
                        format!("decryption failed for '{subject}': {e}")
                    })?;
                }
                Ok::<_, String>(objects)
            })
            .await
            .map_err(|e| Failure::new(reason::BUILD_FAILED, e.to_string()))?
            .map_err(|e| Failure::new(reason::BUILD_FAILED, e))?;
        }
        if let Some(secret) = objects.iter().find(|o| sops::is_still_encrypted_secret(o)) {
            let subject = ObjectRef::of(secret)
                .map(|r| r.subject())
                .unwrap_or_default();
            return Err(Failure::new(
                reason::FAILED,
                format!(
                    "{subject} is SOPS encrypted, configuring decryption is required for this secret to be reconciled"
                ),
            ));
        }
        Ok(objects)
    }

    /// The keys a decrypting Kustomization may use: its Secret's (or the controller's global
    /// age keys), and for KMS and Vault its ServiceAccount's identity or the controller's.
    async fn decryption_keys(&self) -> Result<Option<Arc<sops::Keyring>>, Failure> {
        let Some(decryption) = &self.obj.spec.decryption else {
            return Ok(None);
        };
        let keyring = self.keys_of_secrets(decryption.secret_ref.as_ref()).await?;
        let borrowed = self
            .decryption_account(decryption.service_account_name.as_deref())
            .await?;
        let vault_login = sops::VaultLogin::of(
            &self.ctx.client,
            borrowed.as_ref(),
            self.ctx.settings.sops_vault_configmap.as_ref(),
        );
        let object_identity = borrowed.map(|(identity, sa)| decryption_identity(identity, &sa));
        let keyring = keyring.with_kms(self.ctx.token_http.clone(), object_identity, vault_login);
        Ok(Some(Arc::new(keyring)))
    }

    /// `spec.decryption.secretRef`'s keys, else (Flux) the controller's global age keys.
    async fn keys_of_secrets(
        &self,
        secret_ref: Option<&crate::api::meta::LocalObjectReference>,
    ) -> Result<sops::Keyring, Failure> {
        let (ns, name, source, only_age) = match (secret_ref, &self.ctx.settings.sops_age_secret) {
            (Some(r), _) => {
                let ns = self.namespace();
                let source = format!("Secret '{ns}/{}'", r.name);
                (ns, r.name.clone(), source, false)
            }
            (None, Some((ns, name))) => {
                let source = format!("SOPS age decryption Secret '{ns}/{name}'");
                (ns.clone(), name.clone(), source, true)
            }
            (None, None) => {
                let source = "no Secret (spec.decryption.secretRef is not set)";
                return sops::Keyring::from_secret(&BTreeMap::new(), source)
                    .map_err(|e| Failure::new(reason::BUILD_FAILED, e));
            }
        };
        let secrets: Api<Secret> = Api::namespaced(self.ctx.client.clone(), &ns);
        let secret = secrets.get(&name).await.map_err(|e| {
            Failure::new(
                reason::BUILD_FAILED,
                format!("cannot get sops decryption {source}: {}", kube_message(&e)),
            )
        })?;
        let mut data = secret.data.unwrap_or_default();
        if only_age {
            data.retain(|k, _| k.ends_with(".agekey"));
        }
        sops::Keyring::from_secret(&data, &source)
            .map_err(|e| Failure::new(reason::BUILD_FAILED, e))
    }

    /// `spec.decryption.serviceAccountName` (else `--default-decryption-service-account`), read
    /// from the API server; `None`: the controller's own identity.
    async fn decryption_account(
        &self,
        name: Option<&str>,
    ) -> Result<Option<(workload::Identity, ServiceAccount)>, Failure> {
        let default = self
            .ctx
            .settings
            .default_decryption_service_account
            .as_deref();
        workload::borrow(&self.ctx.client, &self.namespace(), name, default)
            .await
            .map_err(|e| Failure::new(reason::BUILD_FAILED, e))
    }

    /// Substitution, common metadata and the owner labels, on every built object.
    async fn finalize_objects(&self, objects: Vec<Value>) -> Result<Vec<Value>, Failure> {
        let vars = self.substitution_variables().await?;
        let mut out = Vec::with_capacity(objects.len());
        // Variables are tenant text too: what they expand to is charged like the artifact's.
        let mut budget = super::yaml::Budget::default();
        for object in objects {
            let mut object = match &vars {
                Some(vars) if !substitute::is_disabled(&object) => substituted(
                    &object,
                    vars,
                    self.ctx.settings.strict_substitution,
                    &mut budget,
                )?,
                _ => object,
            };
            self.stamp(&mut object);
            out.push(object);
        }
        Ok(out)
    }

    /// The variables of `postBuild`, or `None` when substitution does not run.
    async fn substitution_variables(&self) -> Result<Option<BTreeMap<String, String>>, Failure> {
        let Some(post) = &self.obj.spec.post_build else {
            return Ok(None);
        };
        let mut vars = BTreeMap::new();
        for from in post.substitute_from.iter().flatten() {
            let loaded = match from.kind {
                SubstituteKind::ConfigMap => {
                    let api: Api<ConfigMap> =
                        Api::namespaced(self.ctx.client.clone(), &self.namespace());
                    api.get_opt(&from.name)
                        .await
                        .map(|cm| cm.map(|cm| cm.data.unwrap_or_default()))
                }
                SubstituteKind::Secret => {
                    let api: Api<Secret> =
                        Api::namespaced(self.ctx.client.clone(), &self.namespace());
                    api.get_opt(&from.name).await.map(|s| {
                        s.map(|s| {
                            secret_data(&s)
                                .into_iter()
                                .map(|(k, v)| (k, String::from_utf8_lossy(&v).into_owned()))
                                .collect()
                        })
                    })
                }
            }
            .map_err(|e| {
                Failure::new(
                    reason::BUILD_FAILED,
                    format!(
                        "substitute from '{:?}/{}' error: {}",
                        from.kind,
                        from.name,
                        kube_message(&e)
                    ),
                )
            })?;
            match loaded {
                Some(data) => vars.extend(data),
                None if from.optional => {}
                None => {
                    return Err(Failure::new(
                        reason::BUILD_FAILED,
                        format!(
                            "substitute from '{:?}/{}' error: {:?} \"{}\" not found",
                            from.kind, from.name, from.kind, from.name
                        ),
                    ));
                }
            }
        }
        for (k, v) in post.substitute.iter().flatten() {
            vars.insert(k.clone(), v.replace('\n', ""));
        }
        substitute::validate_names(&vars)
            .map_err(|e| Failure::new(reason::BUILD_FAILED, e.to_string()))?;
        let always = post.substitute_strategy == Some(SubstituteStrategy::Always);
        Ok((always || !vars.is_empty()).then_some(vars))
    }

    fn stamp(&self, object: &mut Value) {
        let meta = object
            .as_object_mut()
            .and_then(|o| o.get_mut("metadata"))
            .and_then(Value::as_object_mut);
        let Some(meta) = meta else { return };
        let common = self.obj.spec.common_metadata.clone().unwrap_or_default();
        for (field, extra) in [
            ("labels", common.labels.unwrap_or_default()),
            ("annotations", common.annotations.unwrap_or_default()),
        ] {
            let map = meta.entry(field).or_insert_with(|| json!({}));
            if let Some(map) = map.as_object_mut() {
                for (k, v) in extra {
                    map.insert(k, Value::String(v));
                }
            }
        }
        let labels = meta.entry("labels").or_insert_with(|| json!({}));
        labels[OWNER_NAME] = Value::String(self.obj.name_any());
        labels[OWNER_NAMESPACE] = Value::String(self.namespace());
        if meta
            .get("annotations")
            .is_some_and(|a| a.as_object().is_some_and(|a| a.is_empty()))
        {
            meta.remove("annotations");
        }
        meta.remove("creationTimestamp");
        let is_crd = object.get("kind").and_then(Value::as_str) == Some("CustomResourceDefinition");
        if !is_crd && let Some(o) = object.as_object_mut() {
            o.remove("status");
        }
    }

    /// The client applies go through: the controller's, or the impersonated service account.
    /// The cluster to apply to, as whom (see `cluster::target`).
    async fn target_cluster(&self) -> Result<cluster::Target, Failure> {
        cluster::target(self.ctx, self.obj)
            .await
            .map_err(|e| Failure::new(reason::FAILED, e))
    }

    /// Stage one (CRDs, Namespaces, ClusterRoles) and its wait, then everything else.
    async fn apply(
        &self,
        applier: &Applier<'_>,
        objects: Vec<Value>,
    ) -> Result<Vec<Applied>, Failure> {
        let mut refs: Vec<(ObjectRef, Value)> = Vec::new();
        for object in objects {
            let r = ObjectRef::of(&object).ok_or_else(|| {
                Failure::new(
                    reason::BUILD_FAILED,
                    "object without apiVersion, kind or name",
                )
            })?;
            refs.push((r, object));
        }
        let [definitions, classes, custom, rest] =
            stages(refs, &self.ctx.settings.custom_stage_kinds);
        let mut applied = self.apply_stage(applier, definitions).await?;
        self.wait_for_definitions(applier, &applied).await?;
        for stage in [classes, custom, rest] {
            applied.extend(self.apply_stage(applier, stage).await?);
        }
        let changed: Vec<String> = applied
            .iter()
            .filter(|a| matches!(a.action, ApplyAction::Created | ApplyAction::Configured))
            .map(|a| format!("{} {}", a.object.subject(), a.action.as_str()))
            .collect();
        if !changed.is_empty() {
            self.event(reason::PROGRESSING, &changed.join("\n"), &[])
                .await;
        }
        Ok(applied)
    }

    /// Applies a sorted stage: kinds in Flux's order, objects of one kind `--concurrent-ssa` at
    /// a time. The results keep the stage's order; the first failure ends the stage.
    async fn apply_stage(
        &self,
        applier: &Applier<'_>,
        stage: Vec<(ObjectRef, Value)>,
    ) -> Result<Vec<Applied>, Failure> {
        let target_ns = self.obj.spec.target_namespace.as_deref();
        let mut applied = Vec::with_capacity(stage.len());
        for run in runs_of_equal_rank(stage) {
            let results: Vec<Applied> = futures::stream::iter(run)
                .map(|(_, object)| applier.apply(object, target_ns))
                .buffered(self.ctx.settings.concurrent_ssa.max(1))
                .map_err(|e| Failure::new(reason::FAILED, e.to_string()))
                .try_collect()
                .await?;
            applied.extend(results);
        }
        Ok(applied)
    }

    /// Custom resources can only be applied once their CRDs are established.
    async fn wait_for_definitions(
        &self,
        applier: &Applier<'_>,
        applied: &[Applied],
    ) -> Result<(), Failure> {
        let crds: Vec<&ObjectRef> = applied
            .iter()
            .filter(|a| {
                a.object.kind == "CustomResourceDefinition" && a.action != ApplyAction::Skipped
            })
            .map(|a| &a.object)
            .collect();
        let deadline = Instant::now() + Duration::from_secs(60);
        for crd in crds {
            loop {
                let live = applier
                    .get(crd)
                    .await
                    .map_err(|e| Failure::new(reason::FAILED, e.to_string()))?;
                let established = match health::status(live.as_ref()) {
                    Health::Current => true,
                    Health::Failed => {
                        return Err(Failure::new(
                            reason::FAILED,
                            format!("{} failed to become established", crd.subject()),
                        ));
                    }
                    _ => false,
                };
                if established && served_kinds_resolve(applier, live.as_ref()).await {
                    break;
                }
                if Instant::now() > deadline {
                    let why = match established {
                        true => "is established but discovery does not serve its kinds",
                        false => "is not established",
                    };
                    return Err(Failure::new(
                        reason::FAILED,
                        format!("{} {why} after 60s", crd.subject()),
                    ));
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
        Ok(())
    }

    async fn prune(
        &self,
        applier: &Applier<'_>,
        old: &ResourceInventory,
        new: &ResourceInventory,
    ) -> Result<Vec<ObjectRef>, Failure> {
        let mut stale = inventory::stale(old, new);
        stale.reverse();
        let owner = (self.obj.name_any(), self.namespace());
        let mut deleted = Vec::new();
        let mut errors = Vec::new();
        for r in stale {
            match applier.delete_owned(&r, (&owner.0, &owner.1)).await {
                Ok(true) => deleted.push(r),
                Ok(false) => {}
                Err(e) => errors.push((r, e.to_string())),
            }
        }
        if !deleted.is_empty() {
            let lines: Vec<String> = deleted
                .iter()
                .map(|r| format!("{} deleted", r.subject()))
                .collect();
            self.event(reason::PROGRESSING, &lines.join("\n"), &[])
                .await;
        }
        if errors.is_empty() {
            return Ok(deleted);
        }
        Err(Failure::new(
            reason::PRUNE_FAILED,
            errors
                .iter()
                .map(|(_, e)| e.clone())
                .collect::<Vec<_>>()
                .join("; "),
        ))
    }

    /// `wait`: everything applied; else `healthChecks`. Polls until all are Current, one
    /// fails, or the timeout passes.
    async fn check_health(
        &mut self,
        applier: &Applier<'_>,
        changes: &[Applied],
        rules: &HealthExpressions,
        mut interrupt: Option<&mut Registration>,
    ) -> Result<(), Failure> {
        let targets: Vec<ObjectRef> = match self.obj.spec.wait {
            true => changes
                .iter()
                .filter(|c| c.action != ApplyAction::Skipped)
                .map(|c| c.object.clone())
                .collect(),
            false => self
                .obj
                .spec
                .health_checks
                .iter()
                .flatten()
                .map(|h| {
                    let api_version = h
                        .api_version
                        .clone()
                        .filter(|a| !a.is_empty())
                        .unwrap_or_else(|| "apps/v1".into());
                    let (group, version) = api_version
                        .rsplit_once('/')
                        .map(|(g, v)| (g.to_string(), v.to_string()))
                        .unwrap_or((String::new(), api_version.clone()));
                    ObjectRef {
                        group,
                        version,
                        kind: h.kind.clone(),
                        namespace: h.namespace.clone().unwrap_or_else(|| self.namespace()),
                        name: h.name.clone(),
                    }
                })
                .collect(),
        };
        let targets: Vec<ObjectRef> = targets
            .into_iter()
            .filter(|t| {
                !(t.kind == KIND
                    && t.name == self.obj.name_any()
                    && t.namespace == self.namespace())
            })
            .collect();
        if targets.is_empty() {
            self.conditions.delete(HEALTHY);
            return Ok(());
        }
        let timeout = self.timeout();
        self.progress(&format!(
            "Running health checks with a timeout of {timeout:?}"
        ));
        if !self.conditions.is_true(HEALTHY) {
            self.conditions.set(
                HEALTHY,
                ConditionStatus::Unknown,
                reason::PROGRESSING,
                "Running health checks",
            );
        }
        let _ = self.patch_status().await;
        let started = Instant::now();
        loop {
            if let Some(by) = interrupt.as_ref().and_then(|i| i.cause()) {
                return Err(self.health_check_canceled(&by).await);
            }
            let mut pending = Vec::new();
            let mut failed = Vec::new();
            for t in &targets {
                let live = applier.get(t).await.unwrap_or(None);
                let verdict = judge(rules, t, live).await;
                match verdict.health {
                    Health::Current => {}
                    Health::Failed => failed.push(format!("{} status: 'Failed'", t.subject())),
                    other => pending.push(match verdict.error {
                        Some(e) => format!("{} status: '{}': {e}", t.subject(), other.as_str()),
                        None => format!("{} status: '{}'", t.subject(), other.as_str()),
                    }),
                }
            }
            let elapsed = started.elapsed();
            if !failed.is_empty() {
                return Err(self.health_failed(format!("health check failed after {elapsed:?}: failed early due to stalled resources: [{}]", failed.join(", "))));
            }
            if pending.is_empty() {
                self.conditions.mark_true(
                    HEALTHY,
                    reason::HEALTH_SUCCEEDED,
                    &format!("Health check passed in {elapsed:?}"),
                );
                return Ok(());
            }
            if elapsed >= timeout {
                return Err(self.health_failed(format!(
                    "health check failed after {elapsed:?}: timeout waiting for: [{}]",
                    pending.join(", ")
                )));
            }
            let pause = tokio::time::sleep(
                self.ctx
                    .settings
                    .health_poll
                    .min(timeout.saturating_sub(elapsed)),
            );
            match interrupt.as_deref_mut() {
                Some(i) => {
                    tokio::select! {
                        _ = pause => {}
                        by = i.interrupted() => return Err(self.health_check_canceled(&by).await),
                    }
                }
                None => pause.await,
            }
        }
    }

    /// Flux's outcome of an interrupted health check: `Ready=False`, `HealthCheckCanceled`, an
    /// info event instead of a warning, no history entry, and a reconcile at once.
    async fn health_check_canceled(&mut self, by: &str) -> Failure {
        tracing::info!(object = %self.key(), by, "new reconciliation triggered, canceling health checks");
        self.event(
            reason::HEALTH_CHECK_CANCELED,
            &format!("Health checks canceled due to new reconciliation triggered by {by}"),
            &[],
        )
        .await;
        self.memo = None;
        Failure::new(
            reason::HEALTH_CHECK_CANCELED,
            format!("New reconciliation triggered by {by}"),
        )
        .without_warning()
        .retry_after(Duration::ZERO)
    }

    fn health_failed(&mut self, message: String) -> Failure {
        self.conditions
            .mark_false(HEALTHY, reason::HEALTH_CHECK_FAILED, &message);
        Failure::new(reason::HEALTH_CHECK_FAILED, message)
    }

    /// Record what a successful pass applied, and announce it when something changed.
    async fn succeeded(&mut self, done: Outcome) {
        let message = format!("Applied revision: {}", done.revision);
        self.status.last_applied_revision = Some(done.revision.clone());
        self.status.last_applied_origin_revision = done.origin_revision.clone();
        self.status.inventory = Some(done.inventory);
        self.conditions
            .mark_true(READY, reason::SUCCEEDED, &message);
        let changed = !done
            .changes
            .iter()
            .all(|c| matches!(c.action, ApplyAction::Unchanged | ApplyAction::Skipped))
            || !done.pruned.is_empty();
        if changed {
            let message = format!(
                "Reconciliation finished in {:?}, next run in {}",
                self.started.elapsed(),
                self.obj.spec.interval
            );
            self.event(reason::SUCCEEDED, &message, &[]).await;
        }
    }

    /// One entry of `status.history` per pass that built something, keyed by what it built
    /// and how the pass ended.
    fn record_history(&mut self, took: Duration) {
        let Some(digest) = self.memo.clone() else {
            return;
        };
        let outcome = self
            .conditions
            .get(READY)
            .map(|c| c.reason.clone())
            .unwrap_or_default();
        let mut metadata = BTreeMap::new();
        if let Some(rev) = &self.status.last_attempted_revision {
            metadata.insert("revision".to_string(), rev.clone());
        }
        if let Some(origin) = &self.status.last_applied_origin_revision {
            metadata.insert("originRevision".to_string(), origin.clone());
        }
        let history = self.status.history.get_or_insert_with(Vec::new);
        super::history::upsert(
            history,
            &digest,
            crate::util::now_whole_seconds(),
            took,
            &outcome,
            metadata,
        );
    }
}

/// One object's YAML with the variables substituted, parsed back.
fn substituted(
    object: &Value,
    vars: &BTreeMap<String, String>,
    strict: bool,
    budget: &mut super::yaml::Budget,
) -> Result<Value, Failure> {
    let subject = ObjectRef::of(object)
        .map(|r| r.subject())
        .unwrap_or_default();
    let yaml = serde_saphyr::to_string(object)
        .map_err(|e| Failure::new(reason::BUILD_FAILED, e.to_string()))?;
    let text = substitute::substitute(&yaml, vars, strict).map_err(|e| {
        Failure::new(
            reason::BUILD_FAILED,
            format!("{subject}: post build failed: {e}"),
        )
    })?;
    // Flux reads the substituted text back with sigs.k8s.io/yaml (go-yaml v2: `on` is true).
    super::yaml::document(&text, budget, super::yaml::Dialect::SigsYaml).map_err(|e| {
        Failure::new(
            reason::BUILD_FAILED,
            format!("{subject}: post build produced invalid YAML: {e}"),
        )
    })
}

/// Deletion with the spec's `deletionPolicy` (Flux §3.11).
async fn cleanup(obj: &Kustomization, ctx: &ApplyContext) -> Result<(), FrameError> {
    ctx.builds
        .forget(&crate::controller::watch::object_key(obj));
    let inventory = obj
        .status
        .as_ref()
        .and_then(|s| s.inventory.clone())
        .unwrap_or_default();
    let policy = obj
        .spec
        .deletion_policy
        .unwrap_or(DeletionPolicy::MirrorPrune);
    let delete = match policy {
        DeletionPolicy::MirrorPrune => obj.spec.prune,
        DeletionPolicy::Delete | DeletionPolicy::WaitForTermination => true,
        DeletionPolicy::Orphan => false,
    };
    if obj.spec.suspend || inventory.entries.is_empty() || !delete {
        return Ok(());
    }
    let ns = obj.namespace().unwrap_or_default();
    let target = cluster::target(ctx, obj)
        .await
        .map_err(FrameError::Cleanup)?;
    let applier = Applier {
        client: &target.client,
        mapper: target.mapper(&ctx.mapper),
        field_manager: FIELD_MANAGER,
        force: false,
        writes: &ctx.metrics.apply_writes,
        dry_runs: &ctx.metrics.apply_dry_runs,
        ignore: &DriftIgnore::default(),
        overrides: &ManagerOverrides::default(),
        drift: None,
    };
    let mut refs = inventory::stale(&inventory, &ResourceInventory::default());
    refs.reverse();
    let mut deleted = Vec::new();
    for r in &refs {
        if applier
            .delete_owned(r, (&obj.name_any(), &ns))
            .await
            .map_err(|e| FrameError::Cleanup(e.to_string()))?
        {
            deleted.push(r.clone());
        }
    }
    if policy == DeletionPolicy::WaitForTermination {
        let timeout = obj
            .spec
            .timeout
            .as_deref()
            .and_then(|t| parse_duration(t).ok())
            .unwrap_or(Duration::from_secs(300));
        let deadline = Instant::now() + timeout;
        let mut remaining: BTreeSet<ObjectRef> = deleted.iter().cloned().collect();
        while !remaining.is_empty() && Instant::now() < deadline {
            let mut still = BTreeSet::new();
            for r in &remaining {
                if applier.get(r).await.ok().flatten().is_some() {
                    still.insert(r.clone());
                }
            }
            remaining = still;
            if !remaining.is_empty() {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
        if !remaining.is_empty() {
            let names: Vec<String> = remaining.iter().map(ObjectRef::subject).collect();
            ctx.events
                .warning(
                    &obj.object_ref(&()),
                    reason::FAILED,
                    &format!(
                        "failed to wait for objects to be deleted: {}",
                        names.join(", ")
                    ),
                    BTreeMap::new(),
                )
                .await;
        }
    }
    Ok(())
}

/// A live object's health: by the Kustomization's CEL rule for its kind when it has one
/// (Flux: the rule replaces kstatus's), else by kstatus's rules.
async fn judge(rules: &HealthExpressions, target: &ObjectRef, live: Option<Value>) -> cel::Verdict {
    let verdict = |health| cel::Verdict {
        health,
        error: None,
    };
    match (rules.rule_for(&target.group, &target.kind), live) {
        (Some(rule), Some(live)) => rule.evaluate_apart(live).await,
        (_, live) => verdict(health::status(live.as_ref())),
    }
}

/// A terminal CEL error, in Flux's words.
fn invalid_cel(error: String) -> Failure {
    Failure::stalled(
        reason::INVALID_CEL_EXPRESSION,
        format!("Reconciliation failed terminally due to configuration error: {error}"),
    )
}

/// A Kustomization as CEL sees it: its JSON form, with `apiVersion` and `kind`.
fn as_cel_variable(obj: &Kustomization) -> Value {
    let mut value = serde_json::to_value(obj).unwrap_or_default();
    if let Some(fields) = value.as_object_mut() {
        fields.insert("apiVersion".into(), json!(Kustomization::api_version(&())));
        fields.insert("kind".into(), json!(KIND));
    }
    value
}

pub fn kind_name(kind: SourceKind) -> &'static str {
    match kind {
        SourceKind::OciRepository => "OCIRepository",
        SourceKind::GitRepository => "GitRepository",
        SourceKind::Bucket => "Bucket",
        SourceKind::ExternalArtifact => "ExternalArtifact",
    }
}

pub fn source_resource(kind: SourceKind) -> ApiResource {
    let plural = match kind {
        SourceKind::OciRepository => "ocirepositories",
        SourceKind::GitRepository => "gitrepositories",
        SourceKind::Bucket => "buckets",
        SourceKind::ExternalArtifact => "externalartifacts",
    };
    ApiResource {
        group: "source.toolkit.fluxcd.io".into(),
        version: "v1".into(),
        api_version: "source.toolkit.fluxcd.io/v1".into(),
        kind: kind_name(kind).into(),
        plural: plural.into(),
    }
}

/// Flux's `SOURCE_CONTROLLER_LOCALHOST`: the artifact URL's host replaced, for controllers
/// that reach the source-controller another way than its Service.
fn local_url(url: &str) -> String {
    match std::env::var("SOURCE_CONTROLLER_LOCALHOST") {
        Ok(host) if !host.is_empty() => match reqwest::Url::parse(url) {
            Ok(parsed) => {
                let path = &url[url.find(parsed.path()).unwrap_or(url.len())..];
                format!("{}://{host}{path}", parsed.scheme())
            }
            Err(_) => url.to_string(),
        },
        _ => url.to_string(),
    }
}

/// How long one pass may take: `spec.timeout`, else the interval less 30 s, at least 30 s.
fn timeout(obj: &Kustomization) -> Duration {
    let interval = parse_duration(&obj.spec.interval).unwrap_or(Duration::from_secs(600));
    let configured = obj
        .spec
        .timeout
        .as_deref()
        .and_then(|t| parse_duration(t).ok());
    configured
        .unwrap_or(interval.saturating_sub(Duration::from_secs(30)))
        .max(Duration::from_secs(30))
}

/// The delay after a failure: `spec.retryInterval`, else the interval.
fn retry_interval(obj: &Kustomization) -> Duration {
    obj.spec
        .retry_interval
        .as_deref()
        .and_then(|r| parse_duration(r).ok())
        .unwrap_or_else(|| parse_duration(&obj.spec.interval).unwrap_or(Duration::from_secs(600)))
}

/// Whether discovery serves every version of an established CRD: the API server marks a CRD
/// Established a moment before its group is in discovery, and a custom resource applied in
/// that moment fails with 404.
async fn served_kinds_resolve(applier: &Applier<'_>, crd: Option<&serde_json::Value>) -> bool {
    let Some(spec) = crd.and_then(|c| c.get("spec")) else {
        return true;
    };
    let group = spec["group"].as_str().unwrap_or_default();
    let kind = spec["names"]["kind"].as_str().unwrap_or_default();
    let versions = spec["versions"].as_array().cloned().unwrap_or_default();
    for version in versions.iter().filter(|v| v["served"] == true) {
        let probe = ObjectRef {
            group: group.to_string(),
            version: version["name"].as_str().unwrap_or_default().to_string(),
            kind: kind.to_string(),
            namespace: String::new(),
            name: String::new(),
        };
        if applier
            .mapper
            .resolve(applier.client, &probe)
            .await
            .is_err()
        {
            return false;
        }
    }
    true
}

/// The decryption ServiceAccount's identity in each cloud (its `eks.amazonaws.com/role-arn`,
/// its `azure.workload.identity/*`, its GCP workload identity), never the controller's. A
/// ServiceAccount without what one cloud needs fails only when a key of that cloud is tried.
fn decryption_identity(identity: workload::Identity, sa: &ServiceAccount) -> sops::ObjectIdentity {
    let sts_endpoint = std::env::var("AWS_ENDPOINT_URL_STS")
        .ok()
        .filter(|e| !e.is_empty());
    sops::ObjectIdentity {
        aws: aws_role_arn(&identity, sa).map(|role_arn| AwsAuth::ObjectWebIdentity {
            identity: identity.clone(),
            role_arn,
            sts_endpoint,
        }),
        azure: EntraCredential::for_service_account(identity.clone(), sa),
        gcp: GoogleCredential::for_service_account(identity, sa),
    }
}
