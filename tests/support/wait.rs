//! Waiting in tests, for every kind alike: poll the API server until an object satisfies a
//! check (most often one of its `status.conditions`), and on a timeout fail with the object's
//! status and the tail of the log of the process whose work was awaited.
//!
//! Objects are read through their JSON form, so the same helpers serve driftless's kinds,
//! Flux's and Kubernetes' own (a Lease) without a trait of the crate under test.

use std::fmt::Debug;
use std::time::Duration;

use kube::Api;
use serde::Serialize;
use serde::de::DeserializeOwned;

use driftless::api::{Condition, ConditionStatus};

/// How often a wait looks again.
const POLL: Duration = Duration::from_millis(100);

/// Any object a test can wait on.
pub trait Object:
    kube::Resource<DynamicType = ()> + Clone + Debug + Serialize + DeserializeOwned
{
}

impl<K> Object for K where
    K: kube::Resource<DynamicType = ()> + Clone + Debug + Serialize + DeserializeOwned
{
}

/// The object's `status.conditions`, whatever its kind (empty without status).
pub fn conditions<K: Serialize>(o: &K) -> Vec<Condition> {
    serde_json::to_value(o)
        .ok()
        .and_then(|v| v.pointer("/status/conditions").cloned())
        .and_then(|c| serde_json::from_value(c).ok())
        .unwrap_or_default()
}

/// The condition of type `type_`, if the object has one.
pub fn condition_of<K: Serialize>(o: &K, type_: &str) -> Option<Condition> {
    conditions(o).into_iter().find(|c| c.type_ == type_)
}

/// Waits on the objects of one `Api`, for at most `limit` each time; on a timeout the failure
/// shows the object's status and `log()` (the tail of the controller's log, say).
pub struct Wait<'a, K> {
    api: &'a Api<K>,
    limit: Duration,
    log: Box<dyn Fn() -> String + 'a>,
}

impl<'a, K: Object> Wait<'a, K> {
    pub fn new(api: &'a Api<K>, limit: Duration) -> Self {
        Wait {
            api,
            limit,
            log: Box::new(String::new),
        }
    }

    /// What a timeout shows besides the status.
    pub fn log(mut self, log: impl Fn() -> String + 'a) -> Self {
        self.log = Box::new(log);
        self
    }

    /// Until object `name` exists and satisfies `check`; `what` names the awaited state.
    pub async fn until(&self, name: &str, what: &str, check: impl Fn(&K) -> bool) -> K {
        let deadline = tokio::time::Instant::now() + self.limit;
        loop {
            let obj = self
                .api
                .get_opt(name)
                .await
                .unwrap_or_else(|e| panic!("get {name}: {e}"));
            if let Some(obj) = obj.as_ref().filter(|o| check(o)) {
                return obj.clone();
            }
            if tokio::time::Instant::now() > deadline {
                let status = obj
                    .and_then(|o| serde_json::to_value(o).ok())
                    .and_then(|v| v.get("status").cloned());
                panic!(
                    "{name}: not {what} within {:?}; status: {}\nlog (tail):\n{}",
                    self.limit,
                    serde_json::to_string_pretty(&status).unwrap_or_default(),
                    (self.log)()
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Until object `name` has a condition of type `type_` that satisfies `check`.
    pub async fn for_condition(
        &self,
        name: &str,
        type_: &str,
        check: impl Fn(&Condition) -> bool,
    ) -> K {
        self.until(name, &format!("{type_} as expected"), |o| {
            condition_of(o, type_).is_some_and(|c| check(&c))
        })
        .await
    }

    /// Until Ready is False with `reason`.
    pub async fn failing(&self, name: &str, reason: &str) -> K {
        self.until(name, &format!("failing with {reason}"), |o| {
            condition_of(o, "Ready")
                .is_some_and(|c| c.status == ConditionStatus::False && c.reason == reason)
        })
        .await
    }

    /// Until object `name` is gone (its finalizer handled).
    pub async fn gone(&self, name: &str) {
        let deadline = tokio::time::Instant::now() + self.limit;
        while self
            .api
            .get_opt(name)
            .await
            .unwrap_or_else(|e| panic!("get {name}: {e}"))
            .is_some()
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{name} not deleted within {:?}; log (tail):\n{}",
                self.limit,
                (self.log)()
            );
            tokio::time::sleep(POLL).await;
        }
    }
}

/// Polls `check` until it gives a value, for at most `limit`: for what is not an object
/// (a port that starts listening, a file that appears).
pub async fn poll<T>(what: &str, limit: Duration, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// Looks at `check` again and again for all of `window` and fails the first time it does not
/// hold: for a state that must last (a replica that must stay passive while another leads),
/// where one look proves only that it held at one instant.
pub async fn holds_for(
    what: &str,
    window: Duration,
    mut check: impl AsyncFnMut() -> Result<(), String>,
) {
    let start = tokio::time::Instant::now();
    let mut looks = 0u32;
    while start.elapsed() < window {
        if let Err(why) = check().await {
            panic!(
                "{what} stopped holding after {:?} ({looks} looks): {why}",
                start.elapsed()
            );
        }
        looks += 1;
        tokio::time::sleep(POLL).await;
    }
    assert!(looks > 1, "{what}: looked only {looks} times in {window:?}");
}
