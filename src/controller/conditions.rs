//! Flux's condition bookkeeping: condition types and reasons, `Set` semantics, ordering, and
//! the `Ready` summary computed from the other conditions (fluxcd/pkg `conditions.SetSummary`).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::api::{Condition, ConditionStatus};

pub const READY: &str = "Ready";
pub const RECONCILING: &str = "Reconciling";
pub const STALLED: &str = "Stalled";
pub const ARTIFACT_IN_STORAGE: &str = "ArtifactInStorage";
pub const ARTIFACT_OUTDATED: &str = "ArtifactOutdated";
pub const FETCH_FAILED: &str = "FetchFailed";
pub const STORAGE_OPERATION_FAILED: &str = "StorageOperationFailed";
pub const SOURCE_VERIFIED: &str = "SourceVerified";

pub mod reason {
    pub const SUCCEEDED: &str = "Succeeded";
    pub const PROGRESSING: &str = "Progressing";
    pub const PROGRESSING_WITH_RETRY: &str = "ProgressingWithRetry";
    pub const NEW_REVISION: &str = "NewRevision";
    pub const AUTHENTICATION_FAILED: &str = "AuthenticationFailed";
    pub const URL_INVALID: &str = "URLInvalid";
    pub const READ_OPERATION_FAILED: &str = "ReadOperationFailed";
    pub const OCI_PULL_FAILED: &str = "OCIArtifactPullFailed";
    pub const OCI_LAYER_OPERATION_FAILED: &str = "OCIArtifactLayerOperationFailed";
    pub const DIRECTORY_CREATION_FAILED: &str = "DirectoryCreationFailed";
    pub const ARCHIVE_OPERATION_FAILED: &str = "ArchiveOperationFailed";
    pub const VERIFICATION_ERROR: &str = "VerificationError";
    pub const NEW_ARTIFACT: &str = "NewArtifact";
    pub const BUCKET_OPERATION_FAILED: &str = "BucketOperationFailed";
    pub const INVALID_PATH: &str = "InvalidPath";
    pub const INVALID_STS_CONFIGURATION: &str = "InvalidSTSConfiguration";
    pub const INVALID_PROVIDER_CONFIGURATION: &str = "InvalidProviderConfiguration";
    /// Ours: a spec duration that does not parse or is beyond Go's range (~292 years).
    pub const INVALID_DURATION: &str = "InvalidDuration";
    /// Ours: the reconciliation panicked (a bug); the object is retried with backoff.
    pub const INTERNAL_ERROR: &str = "InternalError";
    /// Ours: object keys that cannot be files inside the artifact were left out.
    pub const UNSAFE_OBJECT_KEYS: &str = "UnsafeObjectKeys";
}

/// Conditions that are abnormal when True.
const NEGATIVE: &[&str] = &[
    STORAGE_OPERATION_FAILED,
    FETCH_FAILED,
    ARTIFACT_OUTDATED,
    STALLED,
    RECONCILING,
];
/// Conditions whose False is as abnormal as a negative condition's True.
const BIPOLAR: &[&str] = &[SOURCE_VERIFIED];

/// Whether `type_` is abnormal when True, so a failure recorded on it is True (on a positive
/// condition such as `Ready` or `SourceVerified`, a failure is False).
pub fn is_negative(type_: &str) -> bool {
    NEGATIVE.contains(&type_)
}

/// Kubernetes caps condition messages; longer ones are cut and marked.
pub const MAX_MESSAGE: usize = 32768;

fn now() -> Time {
    Time(crate::util::now_whole_seconds())
}

/// A list of conditions with Flux's `Set` and `Delete` semantics.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Conditions {
    pub list: Vec<Condition>,
    generation: i64,
}

impl Conditions {
    pub fn new(list: Vec<Condition>, generation: i64) -> Self {
        Conditions { list, generation }
    }

    pub fn get(&self, type_: &str) -> Option<&Condition> {
        self.list.iter().find(|c| c.type_ == type_)
    }

    pub fn is_true(&self, type_: &str) -> bool {
        self.get(type_)
            .is_some_and(|c| c.status == ConditionStatus::True)
    }

    pub fn is_false(&self, type_: &str) -> bool {
        self.get(type_)
            .is_some_and(|c| c.status == ConditionStatus::False)
    }

    /// Set a condition, stamping the generation; the transition time moves only when status,
    /// reason or message change.
    pub fn set(&mut self, type_: &str, status: ConditionStatus, reason: &str, message: &str) {
        let message = crate::util::truncate(message, MAX_MESSAGE);
        let generation = Some(self.generation);
        match self.list.iter_mut().find(|c| c.type_ == type_) {
            Some(c) => {
                if c.status != status || c.reason != reason || c.message != message {
                    c.last_transition_time = now();
                }
                c.status = status;
                c.reason = reason.to_string();
                c.message = message;
                c.observed_generation = generation;
            }
            None => self.list.push(Condition {
                last_transition_time: now(),
                message,
                observed_generation: generation,
                reason: reason.to_string(),
                status,
                type_: type_.to_string(),
            }),
        }
    }

    pub fn mark_true(&mut self, type_: &str, reason: &str, message: &str) {
        self.set(type_, ConditionStatus::True, reason, message);
    }

    pub fn mark_false(&mut self, type_: &str, reason: &str, message: &str) {
        self.set(type_, ConditionStatus::False, reason, message);
    }

    pub fn delete(&mut self, type_: &str) {
        self.list.retain(|c| c.type_ != type_);
    }

    /// Mark work in progress: `Reconciling=True`, and `Ready=Unknown` only while `Ready` is
    /// missing or already Unknown (a known outcome stays visible until the pass ends).
    pub fn mark_reconciling(&mut self, reason: &str, message: &str) {
        self.mark_true(RECONCILING, reason, message);
        if self
            .get(READY)
            .is_none_or(|c| c.status == ConditionStatus::Unknown)
        {
            self.set(READY, ConditionStatus::Unknown, reason, message);
        }
    }

    /// Mark work caused by drift (a new revision, a vanished artifact): what `Ready` said no
    /// longer holds, so it becomes Unknown whatever it was.
    pub fn mark_drift(&mut self, reason: &str, message: &str) {
        self.mark_true(RECONCILING, reason, message);
        self.set(READY, ConditionStatus::Unknown, reason, message);
    }

    /// Compute `Ready` from the other conditions in the given priority order, then sort.
    pub fn summarize(&mut self, priority: &[&str]) {
        let mut best: Option<(u8, usize, &Condition)> = None;
        for (rank, type_) in priority.iter().enumerate() {
            let Some(c) = self.get(type_) else { continue };
            let group = group_of(c);
            if best.is_none_or(|(g, r, _)| (group, rank) < (g, r)) {
                best = Some((group, rank, c));
            }
        }
        // A failed verification always wins, whatever else failed (Flux's bipolar override).
        let failed_bipolar = BIPOLAR
            .iter()
            .find_map(|t| self.get(t).filter(|c| c.status == ConditionStatus::False));
        if let Some(c) = failed_bipolar.cloned() {
            self.set(READY, ConditionStatus::False, &c.reason, &c.message);
            self.sort();
            return;
        }
        if let Some((group, _, c)) = best {
            let status = match group {
                0 | 1 => ConditionStatus::False,
                4 => ConditionStatus::Unknown,
                _ => ConditionStatus::True,
            };
            let (reason, message) = (c.reason.clone(), c.message.clone());
            self.set(READY, status, &reason, &message);
        }
        self.sort();
    }

    /// `Stalled`, `Reconciling`, `Ready` first, then newest generation first, then by type.
    pub fn sort(&mut self) {
        fn head(t: &str) -> usize {
            [STALLED, RECONCILING, READY]
                .iter()
                .position(|x| *x == t)
                .unwrap_or(3)
        }
        self.list.sort_by(|a, b| {
            head(&a.type_)
                .cmp(&head(&b.type_))
                .then(b.observed_generation.cmp(&a.observed_generation))
                .then(a.type_.cmp(&b.type_))
        });
    }
}

/// Cluster-API merge groups, most urgent first: abnormal True (negative True or bipolar False),
/// positive False, positive True, negative False, Unknown.
fn group_of(c: &Condition) -> u8 {
    let negative = NEGATIVE.contains(&c.type_.as_str());
    let bipolar = BIPOLAR.contains(&c.type_.as_str());
    match (c.status, negative, bipolar) {
        (ConditionStatus::True, true, _) => 0,
        (ConditionStatus::False, false, true) => 0,
        (ConditionStatus::False, false, false) => 1,
        (ConditionStatus::True, false, _) => 2,
        (ConditionStatus::False, true, _) => 3,
        (ConditionStatus::Unknown, ..) => 4,
    }
}

/// The `Ready` priority of OCIRepository (Bucket is the same without `SourceVerified`).
pub const OCI_READY_PRIORITY: &[&str] = &[
    STORAGE_OPERATION_FAILED,
    FETCH_FAILED,
    ARTIFACT_OUTDATED,
    ARTIFACT_IN_STORAGE,
    SOURCE_VERIFIED,
    STALLED,
    RECONCILING,
];

#[cfg(test)]
mod tests {
    use super::*;

    fn ready(c: &Conditions) -> (ConditionStatus, String, String) {
        let r = c.get(READY).expect("Ready set");
        (r.status, r.reason.clone(), r.message.clone())
    }

    #[test]
    fn success_summarizes_from_artifact_in_storage() {
        let mut c = Conditions::new(vec![], 3);
        c.mark_true(
            ARTIFACT_IN_STORAGE,
            reason::SUCCEEDED,
            "stored artifact for digest 'x'",
        );
        c.mark_true(
            SOURCE_VERIFIED,
            reason::SUCCEEDED,
            "verified signature of revision x",
        );
        c.summarize(OCI_READY_PRIORITY);
        assert_eq!(
            ready(&c),
            (
                ConditionStatus::True,
                "Succeeded".into(),
                "stored artifact for digest 'x'".into()
            )
        );
        assert_eq!(c.get(READY).unwrap().observed_generation, Some(3));
    }

    #[test]
    fn failures_win_over_progress_and_success() {
        let mut c = Conditions::new(vec![], 1);
        c.mark_true(ARTIFACT_IN_STORAGE, reason::SUCCEEDED, "stored");
        c.mark_reconciling(reason::PROGRESSING_WITH_RETRY, "retrying");
        c.mark_true(FETCH_FAILED, reason::OCI_PULL_FAILED, "failed to pull");
        c.summarize(OCI_READY_PRIORITY);
        assert_eq!(
            ready(&c),
            (
                ConditionStatus::False,
                "OCIArtifactPullFailed".into(),
                "failed to pull".into()
            )
        );
    }

    #[test]
    fn failed_verification_makes_ready_false() {
        let mut c = Conditions::new(vec![], 1);
        c.mark_true(ARTIFACT_IN_STORAGE, reason::SUCCEEDED, "stored");
        c.mark_false(
            SOURCE_VERIFIED,
            reason::VERIFICATION_ERROR,
            "no matching signatures",
        );
        c.summarize(OCI_READY_PRIORITY);
        assert_eq!(ready(&c).0, ConditionStatus::False);
        assert_eq!(ready(&c).1, "VerificationError");
    }

    #[test]
    fn transition_time_moves_only_on_change() {
        let mut c = Conditions::new(vec![], 1);
        c.mark_true(FETCH_FAILED, "A", "m");
        let first = c.get(FETCH_FAILED).unwrap().last_transition_time.clone();
        c.list[0].last_transition_time = Time(jiff::Timestamp::UNIX_EPOCH);
        c.mark_true(FETCH_FAILED, "A", "m");
        assert_eq!(
            c.get(FETCH_FAILED).unwrap().last_transition_time.0,
            jiff::Timestamp::UNIX_EPOCH
        );
        c.mark_true(FETCH_FAILED, "A", "other");
        assert!(c.get(FETCH_FAILED).unwrap().last_transition_time.0 >= first.0);
    }

    #[test]
    fn ordering_and_message_cap() {
        let mut c = Conditions::new(vec![], 2);
        c.mark_true(ARTIFACT_IN_STORAGE, "S", "m");
        c.mark_true(STALLED, "X", &"y".repeat(MAX_MESSAGE + 10));
        c.mark_true(RECONCILING, "P", "m");
        c.summarize(OCI_READY_PRIORITY);
        let types: Vec<&str> = c.list.iter().map(|c| c.type_.as_str()).collect();
        assert_eq!(types, [STALLED, RECONCILING, READY, ARTIFACT_IN_STORAGE]);
        let stalled = c.get(STALLED).unwrap();
        assert_eq!(stalled.message.len(), MAX_MESSAGE);
        assert!(stalled.message.ends_with("..."));
    }
}
