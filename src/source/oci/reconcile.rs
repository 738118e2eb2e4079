//! The OCIRepository reconciler: a short orchestration of named steps, each returning what it
//! learnt or a `Failure` that names the condition, reason and message Flux would report.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{Event as FinalizerEvent, finalizer};
use kube::{Api, Resource, ResourceExt};
use serde_json::json;

use super::credentials::{DockerConfig, Keychain, proxy_from_secret, tls_from_secret, transport};
use super::pull::{self, PullError};
use super::reference::RepositoryUrl;
use super::registry::{RegistryClient, Transport, is_sha256_digest};
use super::semver::{HELM_CHART_LAYER, select_tag};
use crate::api::oci_repository::{LayerOperation, OCILayerSelector, OCIProvider};
use crate::api::{Artifact, ConditionStatus, OCIRepository, OCIRepositoryStatus};
use crate::artifact::storage::StoredArtifactRecord;
use crate::controller::conditions::{self as cond, Conditions, reason};
use crate::controller::requeue::{jittered, parse_duration};
use crate::source::context::{Context, FINALIZER, REQUESTED_AT, SourceError};

const KIND: &str = "OCIRepository";
pub const STORAGE_KIND: &str = "ocirepository";
/// The longest a layer download may take.
const MAX_PULL_TIME: Duration = Duration::from_secs(30 * 60);

/// A step's failure, as Flux reports it.
#[derive(Debug)]
struct Failure {
    condition: &'static str,
    reason: &'static str,
    message: String,
    stalled: bool,
}

impl Failure {
    fn new(
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
    fn fetch(reason: &'static str, message: impl Into<String>) -> Self {
        Self::new(cond::FETCH_FAILED, reason, message, false)
    }
    fn storage(reason: &'static str, message: impl Into<String>) -> Self {
        Self::new(cond::STORAGE_OPERATION_FAILED, reason, message, false)
    }
    fn stalled(reason: &'static str, message: impl Into<String>) -> Self {
        Self::new(cond::FETCH_FAILED, reason, message, true)
    }
    fn verification(message: impl Into<String>) -> Self {
        Self::new(
            cond::SOURCE_VERIFIED,
            reason::VERIFICATION_ERROR,
            message,
            true,
        )
    }
}

/// What the spec's reference points at now.
struct Resolved {
    /// `<tag>@sha256:<hex>`, or the bare digest for a digest reference.
    revision: String,
    /// The manifest digest everything is pulled by.
    digest: String,
    /// The reference it was resolved from, for messages (`host/repo:tag` or `host/repo@digest`).
    reference: String,
}

/// Entry point for the kube-runtime controller.
pub async fn reconcile(obj: Arc<OCIRepository>, ctx: Arc<Context>) -> Result<Action, SourceError> {
    let ns = obj.namespace().unwrap_or_default();
    let api: Api<OCIRepository> = Api::namespaced(ctx.client.clone(), &ns);
    finalizer(&api, FINALIZER, obj, |event| async {
        match event {
            FinalizerEvent::Apply(obj) => reconcile_live(&obj, &ctx).await,
            FinalizerEvent::Cleanup(obj) => cleanup(&obj, &ctx).await,
        }
    })
    .await
    .map_err(|e| SourceError::Finalizer(Box::new(e)))
}

async fn cleanup(obj: &OCIRepository, ctx: &Context) -> Result<Action, SourceError> {
    let (ns, name) = (obj.namespace().unwrap_or_default(), obj.name_any());
    let storage = ctx.storage.clone();
    let (n, m) = (ns.clone(), name.clone());
    tokio::task::spawn_blocking(move || storage.remove_object(STORAGE_KIND, &n, &m))
        .await
        .map_err(|e| SourceError::Storage(e.to_string()))?
        .map_err(|e| {
            SourceError::Storage(format!(
                "garbage collecting artifacts of deleted {ns}/{name}: {e}"
            ))
        })?;
    ctx.forget(KIND, &ns, &name);
    Ok(Action::await_change())
}

/// What one pass starts from and writes back.
struct Pass<'a> {
    obj: &'a OCIRepository,
    ctx: &'a Context,
    status: OCIRepositoryStatus,
    conditions: Conditions,
    generation: i64,
    /// The status as last written (or read), which the next write is a patch against.
    written: serde_json::Value,
}

async fn reconcile_live(cached: &OCIRepository, ctx: &Context) -> Result<Action, SourceError> {
    let started = Instant::now();
    let key = ctx.key(cached);
    // The watch cache can lag behind our own last status write; a pass that started from an
    // older status would redo (and re-announce) work. Read the object when that may be so.
    let fresh;
    let obj = match ctx.cache_may_lag(&key, cached.metadata.resource_version.as_deref()) {
        false => cached,
        true => {
            let api: Api<OCIRepository> =
                Api::namespaced(ctx.client.clone(), &cached.namespace().unwrap_or_default());
            fresh = api
                .get(&cached.name_any())
                .await
                .map_err(SourceError::Kube)?;
            &fresh
        }
    };
    tracing::debug!(object = %key, generation = ?obj.metadata.generation, requested_at = ?requested_at(obj), "reconciling");
    let generation = obj.metadata.generation.unwrap_or(0);
    let status = obj.status.clone().unwrap_or_default();
    let mut pass = Pass {
        obj,
        ctx,
        conditions: Conditions::new(status.conditions.clone(), generation),
        written: serde_json::to_value(&status).unwrap_or_default(),
        status,
        generation,
    };
    if obj.spec.suspend {
        pass.status.last_handled_reconcile_at = requested_at(obj);
        // kstatus reads a suspended object as current only once its generation is observed.
        if !pass.conditions.list.is_empty() {
            pass.status.observed_generation = Some(pass.generation);
        }
        pass.patch_status().await?;
        ctx.record_suspend(KIND, obj, true);
        return Ok(Action::await_change());
    }
    ctx.record_suspend(KIND, obj, false);

    let outcome = pass.run().await;
    tracing::debug!(object = %key, failure = ?outcome.as_ref().err().map(|f| &f.message), "pass finished");
    let action = pass.finish(outcome, &key).await;
    ctx.observe(KIND, obj, started.elapsed(), &pass.conditions);
    action
}

impl Pass<'_> {
    async fn run(&mut self) -> Result<(), Failure> {
        // Taken before the storage check may forget a vanished file, so a restart over an
        // empty volume does not announce the same artifact as new.
        let previous_digest = self
            .obj
            .status
            .as_ref()
            .and_then(|s| s.artifact.as_ref())
            .map(|a| a.digest.clone());
        self.conditions.delete(cond::STORAGE_OPERATION_FAILED);
        self.announce_generation();
        self.check_storage().await;
        let url = RepositoryUrl::parse(&self.obj.spec.url).map_err(|e| {
            Failure::stalled(
                reason::URL_INVALID,
                format!("URL validation failed for '{}': {e}", self.obj.spec.url),
            )
        })?;
        let client = self.registry_client(&url).await?;
        let Resolved {
            revision,
            digest,
            reference,
        } = self.resolve(&client, &url).await?;
        self.verify(&revision)?;
        if self.artifact_is_current(&revision) {
            self.conditions.delete(cond::FETCH_FAILED);
            self.conditions.delete(cond::ARTIFACT_OUTDATED);
            self.mark_stored(&revision);
            tracing::debug!(object = %self.ctx.key(self.obj), %revision, "artifact up-to-date with remote revision");
            return Ok(());
        }
        self.announce_new_revision(&revision, &reference).await;
        let (artifact, latest_url) = self
            .pull_and_store(&client, &url, &revision, &digest)
            .await?;
        self.record_artifact(artifact.clone(), latest_url);
        self.mark_stored(&revision);
        if previous_digest.as_deref() != Some(artifact.digest.as_str()) {
            self.emit_new_artifact(&artifact).await;
        }
        Ok(())
    }

    /// Mark a new generation or a reconcile request as work in progress. Flux patches this
    /// at once; here it rides along with the next status write (the new-revision notice or the
    /// result), which halves the API writes of a first reconcile without hiding anything that
    /// lasts longer than a pull.
    fn announce_generation(&mut self) {
        let observed = self.status.observed_generation.unwrap_or(-1);
        if observed != self.generation {
            let message = format!(
                "processing object: new generation {observed} -> {}",
                self.generation
            );
            self.conditions
                .mark_reconciling(reason::PROGRESSING, &message);
        } else if requested_at(self.obj) != self.status.last_handled_reconcile_at {
            self.conditions
                .mark_reconciling(reason::PROGRESSING, "reconciliation in progress");
        }
    }

    /// Garbage-collect old files and make sure the recorded artifact is still on disk.
    async fn check_storage(&mut self) {
        let (ns, name) = (self.namespace(), self.obj.name_any());
        let recorded = self.status.artifact.clone();
        let storage = self.ctx.storage.clone();
        // GC and (after a restart) one re-hash are file-system work: off the async runtime.
        let intact = tokio::task::spawn_blocking(move || {
            let current = recorded.as_ref().and_then(|a| a.path.rsplit('/').next());
            if let Err(e) = storage.gc(STORAGE_KIND, &ns, &name, current) {
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
        let Some(artifact) = self.status.artifact.as_mut() else {
            self.conditions
                .mark_drift(reason::PROGRESSING, "building artifact");
            return;
        };
        if !intact {
            self.status.artifact = None;
            self.status.url = None;
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
        if self.status.url.is_some() {
            self.status.url = self
                .ctx
                .storage
                .latest_url(STORAGE_KIND, &self.namespace(), &self.obj.name_any())
                .ok();
        }
    }

    async fn registry_client(&self, url: &RepositoryUrl) -> Result<Arc<RegistryClient>, Failure> {
        let keychain = self.keychain().await?;
        if keychain.is_empty() && self.obj.spec.provider != OCIProvider::Generic {
            let provider = serde_json::to_value(self.obj.spec.provider).unwrap_or_default();
            return Err(Failure::stalled(
                reason::UNSUPPORTED_PROVIDER,
                format!(
                    "provider {provider} is not yet supported by driftless: use spec.secretRef with registry credentials, or provider 'generic'"
                ),
            ));
        }
        let credentials = keychain.resolve(&url.registry, &url.repository);
        let transport = self.transport().await?;
        self.ctx
            .registry_client(&url.registry, credentials, transport)
            .map_err(|e| {
                Failure::fetch(
                    reason::AUTHENTICATION_FAILED,
                    format!(
                        "failed to generate transport for '{}': {e}",
                        self.obj.spec.url
                    ),
                )
            })
    }

    async fn keychain(&self) -> Result<Keychain, Failure> {
        let auth_failed = |e: String| {
            Failure::fetch(
                reason::AUTHENTICATION_FAILED,
                format!("failed to get credential: {e}"),
            )
        };
        let mut names = Vec::new();
        if let Some(r) = &self.obj.spec.secret_ref {
            names.push(r.name.clone());
        }
        if let Some(sa) = &self.obj.spec.service_account_name {
            let accounts: Api<ServiceAccount> =
                Api::namespaced(self.ctx.client.clone(), &self.namespace());
            let account = accounts
                .get(sa)
                .await
                .map_err(|e| auth_failed(kube_message(&e)))?;
            names.extend(
                account
                    .image_pull_secrets
                    .unwrap_or_default()
                    .into_iter()
                    .map(|s| s.name),
            );
        }
        let mut keychain = Keychain::default();
        for name in names {
            let data = self.read_secret(&name).await.map_err(auth_failed)?;
            let config = DockerConfig::from_secret_data(&data)
                .map_err(|e| auth_failed(format!("secret '{name}': {e}")))?;
            keychain.push(config);
        }
        Ok(keychain)
    }

    async fn transport(&self) -> Result<Transport, Failure> {
        let url = &self.obj.spec.url;
        let tls =
            match &self.obj.spec.cert_secret_ref {
                None => None,
                Some(r) => Some(self.parse_secret(&r.name, tls_from_secret).await.map_err(
                    |e| {
                        Failure::fetch(
                            reason::AUTHENTICATION_FAILED,
                            format!("failed to generate transport for '{url}': {e}"),
                        )
                    },
                )?),
            };
        let proxy = match &self.obj.spec.proxy_secret_ref {
            None => None,
            Some(r) => Some(
                self.parse_secret(&r.name, proxy_from_secret)
                    .await
                    .map_err(|e| {
                        Failure::fetch(
                            reason::AUTHENTICATION_FAILED,
                            format!("failed to get proxy address: {e}"),
                        )
                    })?,
            ),
        };
        let mut transport = transport(self.obj.spec.insecure, tls, proxy);
        transport.request_timeout = parse_duration(&self.obj.spec.timeout).ok();
        Ok(transport)
    }

    fn namespace(&self) -> String {
        self.obj.namespace().unwrap_or_default()
    }

    /// A Secret's data (and stringData), or the API server's message (`secrets "x" not found`).
    async fn read_secret(&self, name: &str) -> Result<BTreeMap<String, Vec<u8>>, String> {
        let secrets: Api<Secret> = Api::namespaced(self.ctx.client.clone(), &self.namespace());
        let secret = secrets.get(name).await.map_err(|e| kube_message(&e))?;
        Ok(secret_data(&secret))
    }

    async fn parse_secret<T>(
        &self,
        name: &str,
        parse: impl FnOnce(&BTreeMap<String, Vec<u8>>) -> Result<T, String>,
    ) -> Result<T, String> {
        parse(&self.read_secret(name).await?).map_err(|e| format!("secret '{name}': {e}"))
    }

    /// The revision and manifest digest the spec's reference points at now.
    async fn resolve(
        &self,
        client: &RegistryClient,
        url: &RepositoryUrl,
    ) -> Result<Resolved, Failure> {
        let reference = self.obj.spec.reference.clone().unwrap_or_default();
        if let Some(digest) = reference.digest.filter(|d| !d.is_empty()) {
            if !is_sha256_digest(&digest) {
                return Err(Failure::fetch(
                    reason::OCI_PULL_FAILED,
                    format!("failed to determine artifact digest: invalid digest '{digest}'"),
                ));
            }
            return Ok(Resolved {
                revision: digest.clone(),
                reference: url.reference(&digest),
                digest,
            });
        }
        let tag = match reference.semver.filter(|s| !s.is_empty()) {
            Some(constraint) => {
                let fail = |e: String| {
                    Failure::fetch(
                        reason::READ_OPERATION_FAILED,
                        format!(
                            "failed to determine the artifact tag for '{}': {e}",
                            self.obj.spec.url
                        ),
                    )
                };
                let tags = client
                    .list_tags(&url.repository)
                    .await
                    .map_err(|e| fail(e.to_string()))?;
                let helm = self.layer_selector().media_type.as_deref() == Some(HELM_CHART_LAYER);
                select_tag(&tags, &constraint, reference.semver_filter.as_deref(), helm)
                    .map_err(|e| fail(e.to_string()))?
            }
            None => reference
                .tag
                .filter(|t| !t.is_empty())
                .unwrap_or_else(|| "latest".into()),
        };
        let digest = client
            .resolve_digest(&url.repository, &tag)
            .await
            .map_err(|e| {
                Failure::fetch(
                    reason::OCI_PULL_FAILED,
                    format!("failed to determine artifact digest: {e}"),
                )
            })?;
        Ok(Resolved {
            revision: format!("{tag}@{digest}"),
            digest,
            reference: url.reference(&tag),
        })
    }

    /// Signature verification is its own issue; until it lands, an object that asks for it is
    /// refused (stalled until its spec or the controller changes) rather than served unverified.
    fn verify(&mut self, revision: &str) -> Result<(), Failure> {
        let Some(verify) = &self.obj.spec.verify else {
            self.conditions.delete(cond::SOURCE_VERIFIED);
            return Ok(());
        };
        let provider = serde_json::to_value(verify.provider).unwrap_or_default();
        Err(Failure::verification(format!(
            "failed to verify the signature using provider {provider}: this driftless build cannot verify signatures yet, so revision {revision} is not pulled"
        )))
    }

    fn layer_selector(&self) -> OCILayerSelector {
        self.obj.spec.layer_selector.clone().unwrap_or_default()
    }

    /// Flux skips the pull when the revision, ignore rules and layer selector all match what
    /// the stored artifact was built from (and the file is still there).
    fn artifact_is_current(&self, revision: &str) -> bool {
        self.status
            .artifact
            .as_ref()
            .is_some_and(|a| a.revision == revision)
            && self.status.observed_ignore == self.obj.spec.ignore
            && self.status.observed_layer_selector == self.obj.spec.layer_selector
    }

    /// `reference` is the one the revision was resolved from (`host/repo:tag` or `@digest`).
    async fn announce_new_revision(&mut self, revision: &str, reference: &str) {
        let message = format!("new revision '{revision}' for '{reference}'");
        if self.status.artifact.is_some() {
            self.conditions
                .mark_true(cond::ARTIFACT_OUTDATED, reason::NEW_REVISION, &message);
        }
        self.conditions.mark_drift(
            reason::PROGRESSING,
            &format!("building artifact: {message}"),
        );
        let _ = self.patch_status().await;
    }

    async fn pull_and_store(
        &self,
        client: &RegistryClient,
        url: &RepositoryUrl,
        revision: &str,
        digest: &str,
    ) -> Result<(Artifact, Option<String>), Failure> {
        let layer_failed = |e: String| Failure::fetch(reason::OCI_LAYER_OPERATION_FAILED, e);
        let pull_failed = |e: PullError| {
            Failure::fetch(
                reason::OCI_PULL_FAILED,
                format!("failed to pull artifact from '{}': {e}", self.obj.spec.url),
            )
        };
        let manifest = pull::image_manifest(client, &url.repository, digest)
            .await
            .map_err(|e| match e {
                PullError::Manifest(_) => layer_failed(e.to_string()),
                e => pull_failed(e),
            })?;
        let selector = self.layer_selector();
        let layer = pull::select_layer(&manifest, selector.media_type.as_deref())
            .map_err(|e| layer_failed(e.to_string()))?;
        let work = tempfile::Builder::new()
            .prefix(&format!(
                "ocirepository-{}-{}-",
                self.namespace(),
                self.obj.name_any()
            ))
            .tempdir()
            .map_err(|e| {
                Failure::storage(
                    reason::DIRECTORY_CREATION_FAILED,
                    format!("failed to create temporary working directory: {e}"),
                )
            })?;
        let blob = work.path().join("layer.blob");
        // Bounded as a whole, so a registry that trickles bytes cannot hold a worker for ever.
        tokio::time::timeout(
            MAX_PULL_TIME,
            pull::download_blob(
                client,
                &url.repository,
                layer,
                &blob,
                self.ctx.config.limits.max_bytes,
            ),
        )
        .await
        .map_err(|_| pull_failed(PullError::TimedOut(MAX_PULL_TIME)))?
        .map_err(pull_failed)?;
        let file_name = format!("{}.tar.gz", digest_of_revision(revision));
        let (ns, name) = (self.namespace(), self.obj.name_any());
        let storage = self.ctx.storage.clone();
        let limits = self.ctx.config.limits;
        let ignore = self.obj.spec.ignore.clone();
        let operation = selector.operation.unwrap_or(LayerOperation::Extract);
        let (stored, latest) = tokio::task::spawn_blocking(move || {
            let stored = crate::source::store::store_layer(
                &storage,
                STORAGE_KIND,
                &ns,
                &name,
                &file_name,
                &blob,
                work.path(),
                operation,
                ignore.as_deref(),
                limits,
            )?;
            // The latest.tar.gz link is best effort, as in Flux.
            let latest = storage
                .set_latest(STORAGE_KIND, &ns, &name, &stored.path)
                .inspect_err(|e| tracing::debug!(error = %e, "failed to update status URL symlink"))
                .ok();
            Ok::<_, crate::source::store::StoreError>((stored, latest))
        })
        .await
        .map_err(|e| {
            Failure::storage(
                reason::ARCHIVE_OPERATION_FAILED,
                format!("unable to archive artifact to storage: {e}"),
            )
        })?
        .map_err(|e| match e {
            crate::source::store::StoreError::Extract(e) => layer_failed(format!(
                "failed to extract layer contents from artifact: {e}"
            )),
            e => Failure::storage(
                reason::ARCHIVE_OPERATION_FAILED,
                format!("unable to archive artifact to storage: {e}"),
            ),
        })?;
        Ok((
            Artifact {
                url: self.ctx.storage.url_for(&stored.path),
                path: stored.path,
                revision: revision.to_string(),
                digest: stored.digest,
                last_update_time: Time(stored.last_update),
                size: i64::try_from(stored.size).ok(),
                metadata: pull::metadata(&manifest),
            },
            latest,
        ))
    }

    fn record_artifact(&mut self, artifact: Artifact, latest_url: Option<String>) {
        if latest_url.is_some() {
            self.status.url = latest_url;
        }
        self.status.artifact = Some(artifact);
        self.status.observed_ignore = self.obj.spec.ignore.clone();
        self.status.observed_layer_selector = self.obj.spec.layer_selector.clone();
        self.conditions.delete(cond::FETCH_FAILED);
        self.conditions.delete(cond::ARTIFACT_OUTDATED);
    }

    fn mark_stored(&mut self, revision: &str) {
        self.conditions.mark_true(
            cond::ARTIFACT_IN_STORAGE,
            reason::SUCCEEDED,
            &format!("stored artifact for digest '{revision}'"),
        );
    }

    async fn emit_new_artifact(&self, artifact: &Artifact) {
        let mut message = format!(
            "stored artifact with revision '{}' from '{}'",
            artifact.revision, self.obj.spec.url
        );
        let meta = artifact.metadata.clone().unwrap_or_default();
        if let (Some(src), Some(rev)) = (
            meta.get("org.opencontainers.image.source"),
            meta.get("org.opencontainers.image.revision"),
        ) {
            message.push_str(&format!(", origin source '{src}', origin revision '{rev}'"));
        }
        let metadata = self.event_metadata([
            (
                "source.toolkit.fluxcd.io/revision",
                artifact.revision.as_str(),
            ),
            ("source.toolkit.fluxcd.io/digest", artifact.digest.as_str()),
        ]);
        self.ctx
            .events
            .normal(
                &self.obj.object_ref(&()),
                reason::NEW_ARTIFACT,
                &message,
                metadata,
            )
            .await;
    }

    /// Event metadata: `extra`, plus the object's `event.toolkit.fluxcd.io/*` annotations with
    /// the prefix removed, as Flux forwards them.
    fn event_metadata<'a>(
        &self,
        extra: impl IntoIterator<Item = (&'a str, &'a str)>,
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

    /// Write conditions and status back, and decide when to come back.
    async fn finish(
        &mut self,
        outcome: Result<(), Failure>,
        key: &str,
    ) -> Result<Action, SourceError> {
        self.status.last_handled_reconcile_at = requested_at(self.obj);
        let interval = parse_duration(&self.obj.spec.interval).unwrap_or(Duration::from_secs(600));
        let next = match outcome {
            Ok(()) => {
                self.conditions.delete(cond::RECONCILING);
                self.conditions.delete(cond::STALLED);
                self.status.observed_generation = Some(self.generation);
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
        Ok(next.map_or_else(Action::await_change, Action::requeue))
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
        self.ctx
            .events
            .warning(
                &self.obj.object_ref(&()),
                failure.reason,
                &failure.message,
                self.event_metadata([]),
            )
            .await;
        if failure.stalled {
            self.conditions
                .mark_true(cond::STALLED, failure.reason, &failure.message);
            self.conditions.delete(cond::RECONCILING);
            self.status.observed_generation = Some(self.generation);
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

    async fn patch_status(&mut self) -> Result<(), SourceError> {
        self.status.conditions = self.conditions.list.clone();
        let api: Api<OCIRepository> = Api::namespaced(self.ctx.client.clone(), &self.namespace());
        let status = serde_json::to_value(&self.status).unwrap_or_default();
        let Some(diff) = merge_patch(&self.written, &status) else {
            return Ok(());
        };
        let patch = json!({ "status": diff });
        let updated = api
            .patch_status(
                &self.obj.name_any(),
                &PatchParams {
                    field_manager: Some(self.ctx.config.field_manager.clone()),
                    ..Default::default()
                },
                &Patch::Merge(&patch),
            )
            .await
            .map_err(SourceError::Kube)?;
        self.ctx
            .wrote(&self.ctx.key(self.obj), updated.metadata.resource_version);
        self.written = status;
        Ok(())
    }
}

/// A JSON merge patch from `old` to `new`, as Flux's patch helper computes it: changed
/// fields, and `null` for fields that went away (so they are removed whoever set them, Flux
/// itself included after a migration). `None` when nothing changed.
fn merge_patch(old: &serde_json::Value, new: &serde_json::Value) -> Option<serde_json::Value> {
    use serde_json::Value;
    match (old, new) {
        (Value::Object(o), Value::Object(n)) => {
            let mut patch = serde_json::Map::new();
            for (k, nv) in n {
                match o.get(k) {
                    Some(ov) => {
                        if let Some(p) = merge_patch(ov, nv) {
                            patch.insert(k.clone(), p);
                        }
                    }
                    None => {
                        patch.insert(k.clone(), nv.clone());
                    }
                }
            }
            for k in o.keys().filter(|k| !n.contains_key(*k)) {
                patch.insert(k.clone(), Value::Null);
            }
            (!patch.is_empty()).then_some(Value::Object(patch))
        }
        _ => (old != new).then(|| new.clone()),
    }
}

fn requested_at(obj: &OCIRepository) -> Option<String> {
    obj.annotations().get(REQUESTED_AT).cloned().or_else(|| {
        obj.status
            .as_ref()
            .and_then(|s| s.last_handled_reconcile_at.clone())
    })
}

/// The file name part of a revision: everything after the last `@` (`sha256:<hex>`).
fn digest_of_revision(revision: &str) -> &str {
    revision.rsplit('@').next().unwrap_or(revision)
}

fn secret_data(secret: &Secret) -> BTreeMap<String, Vec<u8>> {
    let mut data: BTreeMap<String, Vec<u8>> = secret
        .data
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.0))
        .collect();
    for (k, v) in secret.string_data.clone().unwrap_or_default() {
        data.entry(k).or_insert_with(|| v.into_bytes());
    }
    data
}

/// Kubernetes errors as Flux prints them (`secrets "x" not found`).
fn kube_message(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(status) => status.message.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_come_from_the_digest_part_of_the_revision() {
        assert_eq!(digest_of_revision("latest@sha256:abc"), "sha256:abc");
        assert_eq!(digest_of_revision("sha256:abc"), "sha256:abc");
    }
}
