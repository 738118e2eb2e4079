//! The steps every source kind runs around its own: the storage check before fetching, the
//! record and announcement of a new artifact, and the removal of its files on deletion.

use crate::api::Artifact;
use crate::artifact::storage::{ArtifactLocation, StoredArtifactRecord};
use crate::controller::conditions::{self as cond, reason};
use crate::controller::frame::requested_at;
use crate::controller::outcome::{Failure, ReadySummary, Summary};
use crate::controller::pass::Pass;
use crate::controller::pass::{FrameError, ObjectStatus, Reconciled};
use crate::source::context::Context;

/// How a source's `Ready` is summarised (Flux's per-kind summary table; Bucket's lacks nothing
/// it has: it never sets `SourceVerified`).
pub const SOURCE_SUMMARY: Summary = Summary {
    ready: ReadySummary::Priority(cond::OCI_READY_PRIORITY),
    in_progress: "reconciliation in progress",
};

/// The status fields every source kind has besides the frame's (reference §1.2).
pub trait SourceStatus: ObjectStatus {
    fn artifact(&self) -> Option<&Artifact>;
    fn artifact_mut(&mut self) -> &mut Option<Artifact>;
    fn url_mut(&mut self) -> &mut Option<String>;
}

/// Implements `ObjectStatus` and `SourceStatus` for a status struct with Flux's field names.
macro_rules! impl_source_status {
    ($status:ty) => {
        $crate::controller::pass::impl_object_status!($status);
        impl $crate::source::steps::SourceStatus for $status {
            fn artifact(&self) -> Option<&$crate::api::Artifact> {
                self.artifact.as_ref()
            }
            fn artifact_mut(&mut self) -> &mut Option<$crate::api::Artifact> {
                &mut self.artifact
            }
            fn url_mut(&mut self) -> &mut Option<String> {
                &mut self.url
            }
        }
    };
}
pub(crate) use impl_source_status;

/// A source kind: reconciled by the frame, its artifacts kept in storage.
pub trait SourceObject: Reconciled<Context = Context, Status: SourceStatus> {
    /// The directory under the storage root (`ocirepository`, `bucket`).
    const STORAGE_KIND: &'static str;
    fn timeout(&self) -> &str;
    /// Where this object's artifacts live in storage.
    fn artifact_location(&self) -> ArtifactLocation {
        use kube::ResourceExt;
        ArtifactLocation::new(
            Self::STORAGE_KIND,
            &self.namespace().unwrap_or_default(),
            &self.name_any(),
        )
    }
}

/// The failures of source steps, each on the condition Flux records it on.
pub trait SourceFailure {
    fn fetch(reason: &'static str, message: impl Into<String>) -> Failure;
    fn storage(reason: &'static str, message: impl Into<String>) -> Failure;
    fn stalled(reason: &'static str, message: impl Into<String>) -> Failure;
    /// Verification that cannot succeed until the spec or the controller changes.
    fn verification(message: impl Into<String>) -> Failure;
    /// No valid signature (yet): retried with backoff, as Flux does, since one may be pushed.
    fn unverified(message: impl Into<String>) -> Failure;
}

impl SourceFailure for Failure {
    fn fetch(reason: &'static str, message: impl Into<String>) -> Failure {
        Failure::on(cond::FETCH_FAILED, reason, message)
    }
    fn storage(reason: &'static str, message: impl Into<String>) -> Failure {
        Failure::on(cond::STORAGE_OPERATION_FAILED, reason, message)
    }
    fn stalled(reason: &'static str, message: impl Into<String>) -> Failure {
        Failure::on(cond::FETCH_FAILED, reason, message).stall()
    }
    fn verification(message: impl Into<String>) -> Failure {
        Failure::on(cond::SOURCE_VERIFIED, reason::VERIFICATION_ERROR, message).stall()
    }
    fn unverified(message: impl Into<String>) -> Failure {
        Failure::on(cond::SOURCE_VERIFIED, reason::VERIFICATION_ERROR, message)
    }
}

/// What every source pass does before its kind's steps: clear the last storage failure,
/// announce a new generation or request, and check the recorded artifact is still there.
pub async fn begin<K: SourceObject>(pass: &mut Pass<'_, K>) {
    pass.ctx.clock.claim(K::KIND, &pass.key());
    pass.conditions.delete(cond::STORAGE_OPERATION_FAILED);
    pass.announce_generation();
    pass.check_storage().await;
}

/// Deletion: the object's files go from storage.
pub async fn remove_artifacts<K: SourceObject>(obj: &K, ctx: &Context) -> Result<(), FrameError> {
    use kube::ResourceExt;
    let (ns, name) = (obj.namespace().unwrap_or_default(), obj.name_any());
    let storage = ctx.storage.clone();
    let location = obj.artifact_location();
    tokio::task::spawn_blocking(move || storage.remove_object(&location))
        .await
        .map_err(|e| FrameError::Cleanup(e.to_string()))?
        .map_err(|e| {
            FrameError::Cleanup(format!(
                "garbage collecting artifacts of deleted {ns}/{name}: {e}"
            ))
        })
}

impl<K: SourceObject> Pass<'_, K> {
    /// The digest of the artifact the object had when the pass started, taken before the storage
    /// check may forget a vanished file, so a restart over an empty volume does not announce the
    /// same artifact as new.
    pub fn previous_digest(&self) -> Option<String> {
        self.obj
            .status()
            .and_then(|s| s.artifact())
            .map(|a| a.digest.clone())
    }

    /// Mark a new generation or a reconcile request as work in progress. Flux patches this at
    /// once; here it rides along with the next status write (the new-revision notice or the
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

    /// `ArtifactOutdated` and the progressing message of a new upstream revision, written at
    /// once when an artifact is being replaced, so that its consumers see it is outdated. The
    /// first artifact's progress rides along with the result instead: an object with no
    /// artifact has nothing to warn about, and its first reconcile costs one status write.
    pub async fn announce_new_revision(&mut self, message: &str) {
        let replacing = self.status.artifact().is_some();
        if replacing {
            self.conditions
                .mark_true(cond::ARTIFACT_OUTDATED, reason::NEW_REVISION, message);
        }
        self.conditions.mark_drift(
            reason::PROGRESSING,
            &format!("building artifact: {message}"),
        );
        if replacing {
            let _ = self.patch_status().await;
        }
    }

    /// The `NewArtifact` event, with the revision and digest Flux puts in its metadata.
    pub async fn emit_new_artifact(
        &mut self,
        artifact: &Artifact,
        message: &str,
        extra: &[(&str, &str)],
    ) {
        let mut metadata = vec![
            (
                "source.toolkit.fluxcd.io/revision",
                artifact.revision.as_str(),
            ),
            ("source.toolkit.fluxcd.io/digest", artifact.digest.as_str()),
        ];
        metadata.extend_from_slice(extra);
        self.announce(reason::NEW_ARTIFACT, message, &metadata);
        if let Some(took) = self.ctx.clock.new_artifact(K::KIND, &self.key()) {
            tracing::info!(
                seconds = took.as_secs_f64(),
                "new artifact after a receiver event"
            );
        }
    }
}
