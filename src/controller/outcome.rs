//! How a pass ends, as a pure function: a step's `Failure` or success becomes the conditions to
//! write and when to come back (fluxcd/pkg/runtime's result → conditions → requeue rules).

use std::time::Duration;

use crate::controller::conditions::{self as cond, Conditions, is_negative, reason};

/// A step's failure as Flux reports it: the condition that records it, its reason and
/// message, and when to try again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// `FetchFailed`, `SourceVerified`, … for sources; `Ready` for a Kustomization.
    pub condition: &'static str,
    pub reason: &'static str,
    pub message: String,
    pub retry: Retry,
    /// Announced with a warning event (the default) or left to the step that failed, which
    /// tells it its own way (Flux announces some outcomes as info or not at all).
    pub warn: bool,
}

/// When a failed pass runs again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Not until the spec changes (`Stalled=True`).
    Stall,
    /// The kind's retry delay (exponential backoff, or a Kustomization's `retryInterval`).
    Backoff,
    /// Sooner than that: what it waits for (a dependency, a source) is expected soon.
    After(Duration),
    /// The kind's retry delay, but no sooner than this: the server said when to come back.
    AtLeast(Duration),
}

impl Failure {
    pub fn on(condition: &'static str, reason: &'static str, message: impl Into<String>) -> Self {
        Failure {
            condition,
            reason,
            message: message.into(),
            retry: Retry::Backoff,
            warn: true,
        }
    }

    /// No warning event for this failure.
    pub fn without_warning(self) -> Self {
        Failure {
            warn: false,
            ..self
        }
    }

    pub fn stall(self) -> Self {
        Failure {
            retry: Retry::Stall,
            ..self
        }
    }

    pub fn retry_after(self, after: Duration) -> Self {
        Failure {
            retry: Retry::After(after),
            ..self
        }
    }

    /// A server that answered 429 (or a 5xx with `Retry-After`) is asked again no sooner than
    /// it said, plus up to a tenth more so that many objects on one server do not return at
    /// once. "Now" (or a date already past) is no reason to skip the backoff.
    pub fn honouring_retry_after(self, wait: Option<Duration>) -> Self {
        match wait {
            Some(wait) if !wait.is_zero() => {
                let jitter = wait.mul_f64(rand::random::<f64>() / 10.0);
                Failure {
                    retry: Retry::AtLeast(wait + jitter),
                    ..self
                }
            }
            _ => self,
        }
    }

    pub fn is_stalled(&self) -> bool {
        self.retry == Retry::Stall
    }
}

/// How a kind's `Ready` is decided, as Flux declares it per kind.
#[derive(Debug, Clone, Copy)]
pub enum ReadySummary {
    /// Summarised from these conditions, most urgent first (the source kinds).
    Priority(&'static [&'static str]),
    /// Set by the kind's own steps (kustomize-controller marks `Ready` itself).
    SetBySteps,
}

/// The per-kind constants the ending of a pass depends on.
#[derive(Debug, Clone, Copy)]
pub struct Summary {
    pub ready: ReadySummary,
    /// `Reconciling`'s message on a retry when no step said what it was doing.
    pub in_progress: &'static str,
}

/// When to come back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// After `spec.interval` (jittered).
    Interval,
    /// After the kind's retry delay.
    Retry,
    /// After exactly this long.
    After(Duration),
    /// After the kind's retry delay or this long, whichever is later.
    RetryNoSooner(Duration),
    /// Only when the object changes.
    AwaitChange,
}

/// What `conclude` decided besides the conditions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    pub next: Next,
    /// Whether `status.observedGeneration` now records this generation.
    pub observed: bool,
    /// Whether the backoff of earlier failures starts over.
    pub reset_backoff: bool,
}

/// The conditions a pass ends with, and when it runs next.
pub fn conclude(
    conditions: &mut Conditions,
    outcome: &Result<(), Failure>,
    summary: &Summary,
) -> Verdict {
    let mut verdict = match outcome {
        Ok(()) => {
            conditions.delete(cond::RECONCILING);
            conditions.delete(cond::STALLED);
            Verdict {
                next: Next::Interval,
                observed: true,
                reset_backoff: true,
            }
        }
        Err(failure) => record_failure(conditions, failure, summary),
    };
    match summary.ready {
        ReadySummary::Priority(priority) => conditions.summarize(priority),
        ReadySummary::SetBySteps => conditions.sort(),
    }
    // Flux's rule: a pass without error that still is not Ready is retried with backoff.
    if verdict.next == Next::Interval
        && !conditions.is_true(cond::READY)
        && !conditions.is_true(cond::STALLED)
    {
        verdict.next = Next::Retry;
    }
    verdict
}

fn record_failure(conditions: &mut Conditions, failure: &Failure, summary: &Summary) -> Verdict {
    // A negative condition (FetchFailed) records a failure as True, a positive one
    // (Ready, SourceVerified) as False.
    let status = match is_negative(failure.condition) {
        true => crate::api::ConditionStatus::True,
        false => crate::api::ConditionStatus::False,
    };
    conditions.set(failure.condition, status, failure.reason, &failure.message);
    if failure.is_stalled() {
        conditions.mark_true(cond::STALLED, failure.reason, &failure.message);
        conditions.delete(cond::RECONCILING);
        return Verdict {
            next: Next::AwaitChange,
            observed: true,
            reset_backoff: false,
        };
    }
    conditions.delete(cond::STALLED);
    let message = conditions
        .get(cond::RECONCILING)
        .map(|c| c.message.clone())
        .unwrap_or_else(|| summary.in_progress.into());
    conditions.mark_true(cond::RECONCILING, reason::PROGRESSING_WITH_RETRY, &message);
    Verdict {
        next: match failure.retry {
            Retry::After(after) => Next::After(after),
            Retry::AtLeast(wait) => Next::RetryNoSooner(wait),
            _ => Next::Retry,
        },
        observed: false,
        reset_backoff: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ConditionStatus::{self, False, True, Unknown};
    use crate::controller::conditions::{
        ARTIFACT_IN_STORAGE, FETCH_FAILED, OCI_READY_PRIORITY, READY, RECONCILING, SOURCE_VERIFIED,
        STALLED,
    };

    const SOURCE: Summary = Summary {
        ready: ReadySummary::Priority(OCI_READY_PRIORITY),
        in_progress: "reconciliation in progress",
    };
    const STEPS: Summary = Summary {
        ready: ReadySummary::SetBySteps,
        in_progress: "Reconciliation in progress",
    };

    type Row = (&'static str, ConditionStatus, &'static str, &'static str);

    const STORED: Row = (
        ARTIFACT_IN_STORAGE,
        True,
        "Succeeded",
        "stored artifact for digest 'x'",
    );

    /// A starting condition list from (type, status, reason, message) rows.
    fn start(rows: &[Row]) -> Conditions {
        let mut c = Conditions::new(vec![], 4);
        for (t, s, r, m) in rows {
            c.set(t, *s, r, m);
        }
        c
    }

    fn rows(c: &Conditions) -> Vec<(String, ConditionStatus, String, String)> {
        c.list
            .iter()
            .map(|c| {
                (
                    c.type_.clone(),
                    c.status,
                    c.reason.clone(),
                    c.message.clone(),
                )
            })
            .collect()
    }

    fn expect(rows: &[Row]) -> Vec<(String, ConditionStatus, String, String)> {
        rows.iter()
            .map(|(t, s, r, m)| (t.to_string(), *s, r.to_string(), m.to_string()))
            .collect()
    }

    struct Case {
        name: &'static str,
        summary: Summary,
        before: &'static [Row],
        outcome: Result<(), Failure>,
        after: &'static [Row],
        next: Next,
        observed: bool,
    }

    #[test]
    fn a_servers_wait_is_a_floor_under_the_backoff() {
        let failure = || Failure::on(FETCH_FAILED, "OCIArtifactPullFailed", "429");
        let wait = Duration::from_secs(5);
        match failure().honouring_retry_after(Some(wait)).retry {
            Retry::AtLeast(at) => assert!(at >= wait && at <= wait.mul_f64(1.1), "{at:?}"),
            other => panic!("{other:?}"),
        }
        let mut conditions = Conditions::new(Vec::new(), 1);
        let outcome = Err(failure().honouring_retry_after(Some(wait)));
        assert!(matches!(
            conclude(&mut conditions, &outcome, &SOURCE).next,
            Next::RetryNoSooner(at) if at >= wait
        ));
        // "Now", or no wait at all: the backoff alone.
        for none in [Some(Duration::ZERO), None] {
            assert_eq!(failure().honouring_retry_after(none).retry, Retry::Backoff);
        }
    }

    fn fetch_failed(retry: Retry) -> Failure {
        Failure {
            retry,
            ..Failure::on(FETCH_FAILED, "OCIArtifactPullFailed", "pull failed")
        }
    }

    fn cases() -> Vec<Case> {
        vec![
            Case {
                name: "source success: Ready from ArtifactInStorage, progress cleared",
                summary: SOURCE,
                before: &[
                    (RECONCILING, True, "Progressing", "building artifact"),
                    (READY, Unknown, "Progressing", "building artifact"),
                    (
                        ARTIFACT_IN_STORAGE,
                        True,
                        "Succeeded",
                        "stored artifact for digest 'x'",
                    ),
                ],
                outcome: Ok(()),
                after: &[
                    (READY, True, "Succeeded", "stored artifact for digest 'x'"),
                    (
                        ARTIFACT_IN_STORAGE,
                        True,
                        "Succeeded",
                        "stored artifact for digest 'x'",
                    ),
                ],
                next: Next::Interval,
                observed: true,
            },
            Case {
                name: "source success without an artifact is retried, not waited on",
                summary: SOURCE,
                before: &[(RECONCILING, True, "Progressing", "building artifact")],
                outcome: Ok(()),
                after: &[],
                next: Next::Retry,
                observed: true,
            },
            Case {
                name: "source fetch failure: FetchFailed=True wins Ready, retry keeps the progress message",
                summary: SOURCE,
                before: &[(
                    RECONCILING,
                    True,
                    "Progressing",
                    "building artifact: new digest",
                )],
                outcome: Err(fetch_failed(Retry::Backoff)),
                after: &[
                    (
                        RECONCILING,
                        True,
                        "ProgressingWithRetry",
                        "building artifact: new digest",
                    ),
                    (READY, False, "OCIArtifactPullFailed", "pull failed"),
                    (FETCH_FAILED, True, "OCIArtifactPullFailed", "pull failed"),
                ],
                next: Next::Retry,
                observed: false,
            },
            Case {
                name: "source stalled failure: Stalled=True, Reconciling gone, generation observed",
                summary: SOURCE,
                before: &[(RECONCILING, True, "Progressing", "building artifact")],
                outcome: Err(Failure::on(FETCH_FAILED, "URLInvalid", "bad url").stall()),
                after: &[
                    (STALLED, True, "URLInvalid", "bad url"),
                    (READY, False, "URLInvalid", "bad url"),
                    (FETCH_FAILED, True, "URLInvalid", "bad url"),
                ],
                next: Next::AwaitChange,
                observed: true,
            },
            Case {
                name: "failed verification is SourceVerified=False and overrides Ready",
                summary: SOURCE,
                before: &[STORED],
                outcome: Err(Failure::on(
                    SOURCE_VERIFIED,
                    "VerificationError",
                    "no signature",
                )),
                after: &[
                    (
                        RECONCILING,
                        True,
                        "ProgressingWithRetry",
                        "reconciliation in progress",
                    ),
                    (READY, False, "VerificationError", "no signature"),
                    (
                        ARTIFACT_IN_STORAGE,
                        True,
                        "Succeeded",
                        "stored artifact for digest 'x'",
                    ),
                    (SOURCE_VERIFIED, False, "VerificationError", "no signature"),
                ],
                next: Next::Retry,
                observed: false,
            },
            Case {
                name: "success after a stall clears Stalled",
                summary: SOURCE,
                before: &[(STALLED, True, "URLInvalid", "bad url"), STORED],
                outcome: Ok(()),
                after: &[
                    (READY, True, "Succeeded", "stored artifact for digest 'x'"),
                    (
                        ARTIFACT_IN_STORAGE,
                        True,
                        "Succeeded",
                        "stored artifact for digest 'x'",
                    ),
                ],
                next: Next::Interval,
                observed: true,
            },
            Case {
                name: "kustomization success: Ready as the steps set it",
                summary: STEPS,
                before: &[
                    (
                        READY,
                        True,
                        "ReconciliationSucceeded",
                        "Applied revision: a",
                    ),
                    (RECONCILING, True, "Progressing", "Detecting drift"),
                ],
                outcome: Ok(()),
                after: &[(
                    READY,
                    True,
                    "ReconciliationSucceeded",
                    "Applied revision: a",
                )],
                next: Next::Interval,
                observed: true,
            },
            Case {
                name: "kustomization waiting on a dependency: Ready=False, requeued after the given delay",
                summary: STEPS,
                before: &[],
                outcome: Err(Failure::on(
                    READY,
                    "DependencyNotReady",
                    "dependency 'a/b' is not ready",
                )
                .retry_after(Duration::from_secs(30))),
                after: &[
                    (
                        RECONCILING,
                        True,
                        "ProgressingWithRetry",
                        "Reconciliation in progress",
                    ),
                    (
                        READY,
                        False,
                        "DependencyNotReady",
                        "dependency 'a/b' is not ready",
                    ),
                ],
                next: Next::After(Duration::from_secs(30)),
                observed: false,
            },
            Case {
                name: "kustomization stalled: Stalled and Ready carry the same reason",
                summary: STEPS,
                before: &[(RECONCILING, True, "Progressing", "Fetching manifests")],
                outcome: Err(Failure::on(READY, "AccessDenied", "cross-namespace").stall()),
                after: &[
                    (STALLED, True, "AccessDenied", "cross-namespace"),
                    (READY, False, "AccessDenied", "cross-namespace"),
                ],
                next: Next::AwaitChange,
                observed: true,
            },
        ]
    }

    #[test]
    fn each_outcome_ends_with_fluxs_conditions_and_requeue() {
        for case in cases() {
            let mut conditions = start(case.before);
            let verdict = conclude(&mut conditions, &case.outcome, &case.summary);
            assert_eq!(rows(&conditions), expect(case.after), "{}", case.name);
            assert_eq!(verdict.next, case.next, "{}", case.name);
            assert_eq!(verdict.observed, case.observed, "{}", case.name);
            assert_eq!(verdict.reset_backoff, case.outcome.is_ok(), "{}", case.name);
        }
    }

    #[test]
    fn every_condition_is_stamped_with_the_generation() {
        let mut conditions = start(&[]);
        conclude(&mut conditions, &Err(fetch_failed(Retry::Backoff)), &SOURCE);
        assert!(
            conditions
                .list
                .iter()
                .all(|c| c.observed_generation == Some(4))
        );
    }
}
