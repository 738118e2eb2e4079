//! The OCIRepository reconciler: a short orchestration of named steps, each returning what it
//! learnt or a `Failure` that names the condition, reason and message Flux would report.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::ServiceAccount;
use kube::{Api, ResourceExt};

use crate::api::oci_repository::{LayerOperation, OCILayerSelector, VerificationProvider};
use crate::api::oci_repository::{OCIRepositoryVerification, VerifiedSignature};
use crate::api::{Artifact, ConditionStatus, OCIRepository, OCIRepositoryStatus};
use crate::artifact::storage::StoredArtifactRecord;
use crate::controller::conditions::{self as cond, reason};
use crate::controller::objects::kube_message;
use crate::controller::outcome::{Failure, Summary};
use crate::controller::pass::Pass;
use crate::controller::pass::{FrameError, Reconciled};
use crate::controller::requeue::parse_duration;
use crate::oci::credentials::{DockerConfig, Keychain};
use crate::oci::pull::{self, PullError};
use crate::oci::reference::RepositoryUrl;
use crate::oci::registry::{RegistryClient, is_sha256_digest};
use crate::oci::semver::{HELM_CHART_LAYER, select_tag};
use crate::source::context::Context;
use crate::source::pulled::{PullKey, Pulled};
use crate::source::steps::{self, SOURCE_SUMMARY, SourceFailure, SourceObject, impl_source_status};
use crate::source::verified::VerifyKey;
use crate::transport::{Transport, proxy_from_secret, tls_from_secret};
use crate::verify::notation::NotationPolicy;
use crate::verify::oci::{NotationError, NotationOutcome, VerifyError};
use crate::verify::sigstore::TrustedRoot;
use crate::verify::{self, IdentityMatch, NamedKey, Policy, Unverified};

/// The longest a layer download may take.
const MAX_PULL_TIME: Duration = Duration::from_secs(30 * 60);

/// What the spec's reference points at now.
struct Resolved {
    /// `<tag>@sha256:<hex>`, or the bare digest for a digest reference.
    revision: String,
    /// The manifest digest everything is pulled by.
    digest: String,
    /// The reference it was resolved from, for messages (`host/repo:tag` or `host/repo@digest`).
    reference: String,
}

impl_source_status!(OCIRepositoryStatus);

impl Reconciled for OCIRepository {
    type Status = OCIRepositoryStatus;
    type Context = Context;
    type Memo = ();
    const KIND: &'static str = "OCIRepository";
    const SUMMARY: Summary = SOURCE_SUMMARY;
    const FRAME_FAILURE: &'static str = cond::FETCH_FAILED;
    fn status(&self) -> Option<&OCIRepositoryStatus> {
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
            ("spec.interval", &self.spec.interval),
            ("spec.timeout", &self.spec.timeout),
        ]
    }
    async fn begin(pass: &mut Pass<'_, Self>) {
        steps::begin(pass).await
    }
    async fn run(pass: &mut Pass<'_, Self>) -> Result<(), Failure> {
        pass.run_oci().await
    }
    async fn cleanup(obj: &Self, ctx: &Context) -> Result<(), FrameError> {
        steps::remove_artifacts(obj, ctx).await
    }
}

impl SourceObject for OCIRepository {
    const STORAGE_KIND: &'static str = "ocirepository";
    fn timeout(&self) -> &str {
        &self.spec.timeout
    }
}

impl Pass<'_, OCIRepository> {
    async fn run_oci(&mut self) -> Result<(), Failure> {
        let previous_digest = self.previous_digest();
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
        self.verify(&client, &url, &revision, &digest, &reference)
            .await?;
        if self.artifact_is_current(&revision) {
            self.conditions.delete(cond::FETCH_FAILED);
            self.conditions.delete(cond::ARTIFACT_OUTDATED);
            self.mark_stored(&revision);
            tracing::debug!(object = %self.key(), %revision, "artifact up-to-date with remote revision");
            return Ok(());
        }
        // `reference` is the one the revision was resolved from (`host/repo:tag` or `@digest`).
        self.announce_new_revision(&format!("new revision '{revision}' for '{reference}'"))
            .await;
        let (artifact, latest_url) = self
            .pull_and_store(&client, &url, &revision, &digest)
            .await?;
        self.record_artifact(artifact.clone(), latest_url);
        self.status.observed_ignore = self.obj.spec.ignore.clone();
        self.status.observed_layer_selector = self.obj.spec.layer_selector.clone();
        self.mark_stored(&revision);
        if previous_digest.as_deref() != Some(artifact.digest.as_str()) {
            self.announce_artifact(&artifact).await;
        }
        Ok(())
    }

    async fn registry_client(&self, url: &RepositoryUrl) -> Result<RegistryClient, Failure> {
        let keychain = self.keychain().await?;
        let transport = self.transport().await?;
        // Pull secrets win over the cloud provider, as in Flux.
        let credentials = match keychain.is_empty() {
            true => self.cloud_credentials(url, &transport).await?,
            false => keychain.resolve(&url.registry, &url.repository),
        };
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
        let mut transport = Transport::new(self.obj.spec.insecure, tls, proxy);
        transport.request_timeout = parse_duration(&self.obj.spec.timeout).ok();
        Ok(transport)
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
                    .map_err(|e| fail(e.to_string()).honouring_retry_after(e.retry_after()))?;
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
                let failure = Failure::fetch(
                    reason::OCI_PULL_FAILED,
                    format!("failed to determine artifact digest: {e}"),
                );
                failure.honouring_retry_after(e.retry_after())
            })?;
        Ok(Resolved {
            revision: format!("{tag}@{digest}"),
            digest,
            reference: url.reference(&tag),
        })
    }

    /// Verifies the resolved digest before anything is pulled, so that what is stored is
    /// exactly what was verified. Flux's rule: verify on a new generation, a new revision,
    /// after a failure, or when the verification material changed (a key rotated or revoked:
    /// its fingerprint differs from `status.sourceVerificationFingerprint`); a verified,
    /// unchanged revision under the same material is not verified again.
    async fn verify(
        &mut self,
        client: &RegistryClient,
        url: &RepositoryUrl,
        revision: &str,
        digest: &str,
        reference: &str,
    ) -> Result<(), Failure> {
        let Some(verify) = self.obj.spec.verify.clone() else {
            self.conditions.delete(cond::SOURCE_VERIFIED);
            self.status.verified_signature = None;
            self.status.source_verification_fingerprint = None;
            return Ok(());
        };
        let verified = self.conditions.get(cond::SOURCE_VERIFIED).is_some_and(|c| {
            c.status == ConditionStatus::True && c.observed_generation == Some(self.generation)
        });
        // Read every time, as Flux does: a Secret that cannot be read counts as a change, so
        // that the verification below reports why.
        let policy = self.verification_policy(&verify).await;
        let same_material = matches!(&policy, Ok((_, fingerprint))
            if self.status.source_verification_fingerprint.as_deref() == Some(fingerprint.as_str()));
        if verified && same_material && self.artifact_is_current(revision) {
            return Ok(());
        }
        let provider = match (verify.provider, &verify.secret_ref) {
            (VerificationProvider::Notation, _) => "notation",
            (VerificationProvider::Cosign, Some(_)) => "cosign",
            (VerificationProvider::Cosign, None) => "cosign keyless",
        };
        let stalled = |why: String| {
            Failure::verification(format!(
                "failed to verify the signature using provider '{provider}': {why}"
            ))
        };
        let unverified = |why: String| {
            Failure::unverified(format!(
                "failed to verify the signature using provider '{provider}': {why}"
            ))
        };
        let (policy, fingerprint) = policy.map_err(|e| match e {
            PolicyError::Spec(why) => stalled(why),
            PolicyError::Secret(why) => unverified(why),
        })?;
        let key = VerifyKey {
            registry: url.registry.clone(),
            repository: url.repository.clone(),
            digest: digest.to_string(),
            material: format!(
                "{provider}\n{fingerprint}\n{:?}",
                verify.match_oidc_identity
            ),
        };
        let found = match self.ctx.verified.get(&key) {
            Some(found) => found,
            None => {
                let found = self
                    .verify_material(client, url, digest, reference, &policy, &unverified)
                    .await?;
                let Some(found) = found else {
                    return Ok(());
                };
                self.ctx.verified.remember(key, found.clone());
                found
            }
        };
        let signed = format!("{}/{}@{digest}", url.registry, url.repository);
        self.conditions.mark_true(
            cond::SOURCE_VERIFIED,
            reason::SUCCEEDED,
            &format!("verified signature of revision {revision}"),
        );
        tracing::debug!(object = %self.key(), ?found, %signed, "signature verified");
        self.status.verified_signature = Some(found.summary());
        self.status.source_verification_fingerprint = Some(fingerprint);
        Ok(())
    }

    /// The signature `policy` accepts, looked up and checked; `None` when notation's trust
    /// policy says to skip verification for this repository (then none is claimed either).
    async fn verify_material(
        &mut self,
        client: &RegistryClient,
        url: &RepositoryUrl,
        digest: &str,
        reference: &str,
        policy: &Material,
        unverified: &impl Fn(String) -> Failure,
    ) -> Result<Option<verify::Verified>, Failure> {
        let found = match policy {
            Material::Cosign(policy) => {
                self.verify_cosign(client, url, digest, reference, policy, unverified)
                    .await?
            }
            Material::Notation(policy) => {
                let path = format!("{}/{}", url.registry, url.repository);
                match verify::oci::verify_notation(client, &url.repository, digest, &path, policy)
                    .await
                {
                    Ok(NotationOutcome::Verified(found)) => found,
                    Ok(NotationOutcome::Ignored(why)) => {
                        // As Flux: no verification is reported, so none is claimed either.
                        tracing::info!(object = %self.key(), %why, "signature verification ignored");
                        self.conditions.delete(cond::SOURCE_VERIFIED);
                        self.status.verified_signature = None;
                        self.status.source_verification_fingerprint = None;
                        return Ok(None);
                    }
                    Err(NotationError::Registry(e)) => {
                        return Err(unverified(format!(
                            "looking up signatures of '{path}@{digest}': {e}"
                        )));
                    }
                    Err(NotationError::Refused(why)) => return Err(unverified(why)),
                }
            }
        };
        Ok(Some(found))
    }

    /// A cosign signature of `digest` that `policy` accepts, or why none is.
    async fn verify_cosign(
        &self,
        client: &RegistryClient,
        url: &RepositoryUrl,
        digest: &str,
        reference: &str,
        policy: &Policy,
        unverified: &impl Fn(String) -> Failure,
    ) -> Result<verify::Verified, Failure> {
        let signed = format!("{}/{}@{digest}", url.registry, url.repository);
        verify::oci::verify_manifest(client, &url.repository, digest, policy)
            .await
            .map_err(|e| match e {
                VerifyError::Registry(e) => {
                    unverified(format!("looking up signatures of '{signed}': {e}"))
                }
                VerifyError::Unverified(Unverified::NoSignatures) => unverified(format!(
                    "no matching signatures were found for '{reference}': it has no signature (no cosign signature tag, no Sigstore bundle referrer)"
                )),
                VerifyError::Unverified(Unverified::Rejected(reasons)) => unverified(format!(
                    "no matching signatures were found for '{reference}': {}",
                    reasons.join("; ")
                )),
            })
    }

    /// The keys, or the trusted root and identities, a signature must satisfy, and Flux's
    /// fingerprint of that material. Spec mistakes stall; a missing or bad Secret is retried
    /// (it may be created or fixed).
    async fn verification_policy(
        &self,
        verify: &OCIRepositoryVerification,
    ) -> Result<(Material, String), PolicyError> {
        if verify.provider == VerificationProvider::Notation {
            let secret = verify.secret_ref.as_ref().ok_or_else(|| {
                PolicyError::Spec(format!(
                    "verification secret cannot be empty: '{}'",
                    self.obj.spec.url
                ))
            })?;
            let data = self
                .read_secret(&secret.name)
                .await
                .map_err(PolicyError::Secret)?;
            let name = format!(
                "{}/{}",
                self.obj.namespace().unwrap_or_default(),
                secret.name
            );
            let policy = NotationPolicy::from_secret(&data, &name).map_err(PolicyError::Secret)?;
            return Ok((Material::Notation(policy), notation_fingerprint(&data)));
        }
        let (policy, fingerprint) = self.cosign_policy(verify).await?;
        Ok((Material::Cosign(policy), fingerprint))
    }

    /// The keys, or the trusted root and identities, a cosign signature must satisfy.
    async fn cosign_policy(
        &self,
        verify: &OCIRepositoryVerification,
    ) -> Result<(Policy, String), PolicyError> {
        if let Some(secret) = &verify.secret_ref {
            let data = self
                .read_secret(&secret.name)
                .await
                .map_err(PolicyError::Secret)?;
            let keys = public_keys(&data)
                .map_err(|e| PolicyError::Secret(format!("secret '{}': {e}", secret.name)))?;
            let values = data.iter().filter(|(k, _)| k.ends_with(".pub"));
            let fingerprint =
                verification_fingerprint(None, values.map(|(_, v)| v.as_slice()).collect());
            return Ok((Policy::Keys(keys), fingerprint));
        }
        let identities = verify
            .match_oidc_identity
            .iter()
            .flatten()
            .map(|m| IdentityMatch::new(&m.issuer, &m.subject))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| PolicyError::Spec(format!("spec.verify.matchOIDCIdentity: {e}")))?;
        let (root, fingerprint) = match &verify.trusted_root_secret_ref {
            Some(secret) => {
                let data = self
                    .read_secret(&secret.name)
                    .await
                    .map_err(PolicyError::Secret)?;
                let root = trusted_root(&data)
                    .map_err(|e| PolicyError::Secret(format!("secret '{}': {e}", secret.name)))?;
                let json = data.get(TRUSTED_ROOT_KEY).map(Vec::as_slice);
                (Arc::new(root), verification_fingerprint(json, Vec::new()))
            }
            None => (
                TrustedRoot::public_good(),
                verification_fingerprint(None, Vec::new()),
            ),
        };
        Ok((Policy::Keyless { root, identities }, fingerprint))
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

    async fn pull_and_store(
        &self,
        client: &RegistryClient,
        url: &RepositoryUrl,
        revision: &str,
        digest: &str,
    ) -> Result<(Artifact, Option<String>), Failure> {
        let key = self.pull_key(url, digest);
        let _turn = match &key {
            Some(key) => Some(self.ctx.pulled.turn(key).await),
            None => None,
        };
        if let Some(key) = &key
            && let Some(reused) = self.reuse(client, url, revision, digest, key).await
        {
            return Ok(reused);
        }
        let layer_failed = |e: String| Failure::fetch(reason::OCI_LAYER_OPERATION_FAILED, e);
        let pull_failed = |e: PullError| {
            let wait = match &e {
                PullError::Registry(registry) => registry.retry_after(),
                _ => None,
            };
            let failure = Failure::fetch(
                reason::OCI_PULL_FAILED,
                format!("failed to pull artifact from '{}': {e}", self.obj.spec.url),
            );
            failure.honouring_retry_after(wait)
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
        let location = self.obj.artifact_location();
        let storage = self.ctx.storage.clone();
        let limits = self.ctx.config.limits;
        let ignore = self.obj.spec.ignore.clone();
        let operation = selector.operation.unwrap_or(LayerOperation::Extract);
        let (stored, latest) = tokio::task::spawn_blocking(move || {
            let layer = crate::source::store::LayerToStore {
                blob: &blob,
                file_name: &file_name,
                operation,
                spec_ignore: ignore.as_deref(),
                limits,
                work: work.path(),
            };
            let stored = crate::source::store::store_layer(&storage, &location, &layer)?;
            // The latest.tar.gz link is best effort, as in Flux.
            let latest = storage
                .set_latest(&location, &stored.path)
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
        if let Some(key) = key {
            let pulled = Pulled {
                path: stored.path.clone(),
                size: stored.size,
                digest: stored.digest.clone(),
                metadata: pull::metadata(&manifest),
            };
            self.ctx.pulled.remember(key, pulled);
        }
        Ok((
            crate::source::store::status_artifact(
                &self.ctx.storage,
                stored,
                revision,
                pull::metadata(&manifest),
            ),
            latest,
        ))
    }

    /// What this object's pull would be built from, when it may reuse another's (see
    /// `source::pulled`): never for an object that chooses its own path or trust to the
    /// registry (a proxy of its own could answer for the registry).
    fn pull_key(&self, url: &RepositoryUrl, digest: &str) -> Option<PullKey> {
        let spec = &self.obj.spec;
        if spec.cert_secret_ref.is_some() || spec.proxy_secret_ref.is_some() {
            return None;
        }
        let selector = self.layer_selector();
        Some(PullKey {
            registry: url.registry.clone(),
            repository: url.repository.clone(),
            digest: digest.to_string(),
            media_type: selector.media_type,
            copy: selector.operation == Some(LayerOperation::Copy),
            ignore: spec.ignore.clone(),
        })
    }

    /// The artifact another object built from the same key, copied into this object's storage;
    /// `None` (then it pulls) when there is none, it is gone, or the registry did not answer
    /// this object for the digest.
    async fn reuse(
        &self,
        client: &RegistryClient,
        url: &RepositoryUrl,
        revision: &str,
        digest: &str,
        key: &PullKey,
    ) -> Option<(Artifact, Option<String>)> {
        let source = self.ctx.pulled.get(key)?;
        // A tag was resolved with this object's credentials; a digest reference was not.
        let by_digest = self
            .obj
            .spec
            .reference
            .as_ref()
            .and_then(|r| r.digest.as_deref())
            .is_some_and(|d| !d.is_empty());
        if by_digest {
            let answered = client.resolve_digest(&url.repository, digest).await.ok()?;
            if answered != digest {
                return None;
            }
        }
        let storage = self.ctx.storage.clone();
        let location = self.obj.artifact_location();
        let file_name = format!("{}.tar.gz", digest_of_revision(revision));
        let from = source.clone();
        let copied = tokio::task::spawn_blocking(move || {
            let record = StoredArtifactRecord {
                path: &from.path,
                size: Some(from.size),
                digest: &from.digest,
            };
            if !storage.is_intact(&record) {
                return None;
            }
            let file = std::fs::File::open(storage.root().join(&from.path)).ok()?;
            let stored = storage
                .copy_artifact_from_reader(&location, &file_name, file)
                .ok()?;
            let latest = storage.set_latest(&location, &stored.path).ok();
            Some((stored, latest))
        })
        .await
        .ok()
        .flatten();
        let Some((stored, latest)) = copied.filter(|(s, _)| s.digest == source.digest) else {
            self.ctx.pulled.forget(key);
            return None;
        };
        tracing::debug!(object = %self.key(), from = %source.path, "artifact reused, not pulled again");
        Some((
            crate::source::store::status_artifact(
                &self.ctx.storage,
                stored,
                revision,
                source.metadata,
            ),
            latest,
        ))
    }

    fn mark_stored(&mut self, revision: &str) {
        self.conditions.mark_true(
            cond::ARTIFACT_IN_STORAGE,
            reason::SUCCEEDED,
            &format!("stored artifact for digest '{revision}'"),
        );
    }

    async fn announce_artifact(&mut self, artifact: &Artifact) {
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
        let verification = self
            .status
            .verified_signature
            .as_ref()
            .map(verification_metadata)
            .unwrap_or_default();
        let mut extra: Vec<(&str, &str)> =
            verification.iter().map(|(k, v)| (*k, v.as_str())).collect();
        // Flux 1.10: the pusher's revision travels with the event, whatever else is annotated.
        if let Some(origin) = meta
            .get("org.opencontainers.image.revision")
            .filter(|r| !r.is_empty())
        {
            extra.push(("source.toolkit.fluxcd.io/originRevision", origin));
        }
        self.emit_new_artifact(artifact, &message, &extra).await;
    }
}

/// The file name part of a revision: everything after the last `@` (`sha256:<hex>`).
fn digest_of_revision(revision: &str) -> &str {
    revision.rsplit('@').next().unwrap_or(revision)
}

enum PolicyError {
    Spec(String),
    Secret(String),
}

/// What signatures are verified against, by provider.
enum Material {
    Cosign(Policy),
    Notation(NotationPolicy),
}

/// The `*.pub` entries of a verification Secret (Flux tries every one).
fn public_keys(
    data: &std::collections::BTreeMap<String, Vec<u8>>,
) -> Result<Vec<NamedKey>, String> {
    let mut keys = Vec::new();
    for (name, value) in data.iter().filter(|(k, _)| k.ends_with(".pub")) {
        let key = NamedKey::from_pem(name, &String::from_utf8_lossy(value))
            .ok_or_else(|| format!("'{name}' holds no PEM public key"))?;
        keys.push(key);
    }
    if keys.is_empty() {
        return Err("no public keys (entries ending in '.pub') in the secret".into());
    }
    Ok(keys)
}

const TRUSTED_ROOT_KEY: &str = "trusted_root.json";

/// The `trusted_root.json` entry of a `trustedRootSecretRef` Secret.
fn trusted_root(data: &std::collections::BTreeMap<String, Vec<u8>>) -> Result<TrustedRoot, String> {
    let json = data
        .get(TRUSTED_ROOT_KEY)
        .ok_or("no 'trusted_root.json' entry in the secret")?;
    TrustedRoot::from_json(json)
}

/// Flux's `status.sourceVerificationFingerprint` for cosign: sha256 over the provider, the
/// trusted root given in a Secret, and the public keys sorted by value, each NUL-terminated.
/// The same material gives the same value as Flux, so a switch between the two does not look
/// like a policy change.
fn verification_fingerprint(trusted_root: Option<&[u8]>, public_keys: Vec<&[u8]>) -> String {
    fingerprint(
        "cosign",
        trusted_root.map(|r| ("trustedroot", r)),
        "pub",
        public_keys,
    )
}

/// Flux's `status.sourceVerificationFingerprint` for notation: sha256 over the provider, the
/// trust policy, and the certificate entries sorted by value, each NUL-terminated.
fn notation_fingerprint(data: &std::collections::BTreeMap<String, Vec<u8>>) -> String {
    let policy = data
        .get(verify::notation::TRUST_POLICY_KEY)
        .map(|p| ("trustpolicy", p.as_slice()));
    let certificates = data
        .iter()
        .filter(|(k, _)| k.ends_with(".crt") || k.ends_with(".pem"))
        .map(|(_, v)| v.as_slice())
        .collect();
    fingerprint("notation", policy, "cert", certificates)
}

/// Flux's fingerprint layout: `provider:<p>`, the document, then each item sorted by value,
/// every part prefixed with its label and NUL-terminated.
fn fingerprint(
    provider: &str,
    document: Option<(&str, &[u8])>,
    item_label: &str,
    mut items: Vec<&[u8]>,
) -> String {
    use sha2::Digest;
    let mut hash = sha2::Sha256::new();
    let mut part = |label: &str, value: &[u8]| {
        hash.update(label.as_bytes());
        hash.update(b":");
        hash.update(value);
        hash.update(b"\0");
    };
    part("provider", provider.as_bytes());
    if let Some((label, value)) = document {
        part(label, value);
    }
    items.sort();
    for item in items {
        part(item_label, item);
    }
    format!("sha256:{}", hex::encode(hash.finalize()))
}

/// The verified signature as `NewArtifact` event metadata.
fn verification_metadata(v: &VerifiedSignature) -> Vec<(&'static str, String)> {
    let mut out = vec![
        ("verification.driftless.dev/provider", v.provider.clone()),
        ("verification.driftless.dev/digest", v.digest.clone()),
        ("verification.driftless.dev/format", v.format.clone()),
    ];
    let optional = [
        ("verification.driftless.dev/key", v.key.clone()),
        ("verification.driftless.dev/subject", v.subject.clone()),
        ("verification.driftless.dev/issuer", v.issuer.clone()),
        ("verification.driftless.dev/log-url", v.log_url.clone()),
        (
            "verification.driftless.dev/log-index",
            v.log_index.map(|i| i.to_string()),
        ),
        (
            "verification.driftless.dev/integrated-time",
            v.integrated_time.clone(),
        ),
        (
            "verification.driftless.dev/timestamped-at",
            v.timestamped_at.clone(),
        ),
    ];
    out.extend(optional.into_iter().filter_map(|(k, v)| Some((k, v?))));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verification_fingerprints_are_fluxs() {
        // Expected values: `printf '<the bytes>' | sha256sum` (GNU coreutils), for the byte
        // strings Flux's source-controller v1.10.1 hashes (ocirepository_controller.go).
        assert_eq!(
            verification_fingerprint(None, vec![b"-----B", b"-----A"]),
            "sha256:a0828fe019513ad12a63eaf128e7f6a1d2723b7056d514fc95a5acc50160cc29"
        );
        assert_eq!(
            verification_fingerprint(Some(br#"{"root":1}"#), Vec::new()),
            "sha256:9f14d5ce99f33a81759c322346ec9e605529e602d889392a6890e41a1aee2583"
        );
        assert_eq!(
            verification_fingerprint(None, Vec::new()),
            "sha256:15e73a459672b2a4a6830d6c7bfe5bfc9ea72681203ca2bff47860be77def83c"
        );
        let mut notation = std::collections::BTreeMap::new();
        notation.insert("trustpolicy.json".to_string(), br#"{"v":1}"#.to_vec());
        notation.insert("b.pem".to_string(), b"-----B".to_vec());
        notation.insert("a.crt".to_string(), b"-----A".to_vec());
        notation.insert("ignored.txt".to_string(), b"x".to_vec());
        assert_eq!(
            notation_fingerprint(&notation),
            "sha256:204c3fd3b0b45124925fc87c93a2f8193b2a60464422a6c26aea858ad8e59928"
        );
    }

    #[test]
    fn file_names_come_from_the_digest_part_of_the_revision() {
        assert_eq!(digest_of_revision("latest@sha256:abc"), "sha256:abc");
        assert_eq!(digest_of_revision("sha256:abc"), "sha256:abc");
    }
}
