//! Waiting on and reading source objects (OCIRepository, Bucket) in tests: conditions,
//! reconcile requests, events and artifact downloads from the controller under test.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::core::v1::Event;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};

use driftless::api::{Artifact, Condition, ConditionStatus};
use driftless::controller::pass::ObjectStatus;
use driftless::source::steps::{SourceObject, SourceStatus};

use super::controller::{SourceController, http_get_bytes};

pub const WAIT: Duration = Duration::from_secs(60);

/// One kind's objects in a test namespace, reconciled by a controller whose log and artifact
/// port it knows.
pub struct Sources<K: SourceObject> {
    pub api: Api<K>,
    pub client: Client,
    pub namespace: String,
    storage_port: u16,
    log: PathBuf,
}

impl<K: SourceObject> Sources<K> {
    pub fn new(client: &Client, namespace: &str, controller: &SourceController) -> Self {
        Sources {
            api: Api::namespaced(client.clone(), namespace),
            client: client.clone(),
            namespace: namespace.to_string(),
            storage_port: controller.storage_port,
            log: controller.log.clone(),
        }
    }

    pub async fn create(&self, name: &str, spec: serde_json::Value) -> K {
        let obj: K = serde_json::from_value(serde_json::json!({
            "apiVersion": "source.toolkit.fluxcd.io/v1",
            "kind": K::KIND,
            "metadata": {"name": name, "namespace": self.namespace},
            "spec": spec,
        }))
        .unwrap();
        self.api
            .create(&PostParams::default(), &obj)
            .await
            .unwrap_or_else(|e| panic!("create {} {name}: {e}", K::KIND))
    }

    pub async fn patch_spec(&self, name: &str, spec: serde_json::Value) {
        self.api
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(&serde_json::json!({ "spec": spec })),
            )
            .await
            .unwrap();
    }

    /// Wait until the object satisfies `check`, or fail with its status and the controller
    /// log. Polls the API server: the condition is checked, never a fixed delay assumed.
    pub async fn wait_until(&self, name: &str, what: &str, check: impl Fn(&K) -> bool) -> K {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let obj = self.api.get_opt(name).await.expect("get object");
            if let Some(obj) = obj.as_ref().filter(|o| check(o)) {
                return obj.clone();
            }
            if tokio::time::Instant::now() > deadline {
                panic!(
                    "{name}: not {what} within {WAIT:?}; status: {}\ncontroller log (tail):\n{}",
                    serde_json::to_string_pretty(&obj.as_ref().and_then(|o| o.status())).unwrap(),
                    tail(&std::fs::read_to_string(&self.log).unwrap_or_default(), 40)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn wait_ready(&self, name: &str) -> K {
        self.wait_until(name, "Ready", |o| {
            ready_status(o) == Some(ConditionStatus::True) && is_current(o)
        })
        .await
    }

    /// Wait for Ready=False with `reason` on the current generation.
    pub async fn wait_failing(&self, name: &str, reason: &str) -> K {
        self.wait_until(name, &format!("failing with {reason}"), |o| {
            condition(o, "Ready")
                .is_some_and(|c| c.status == ConditionStatus::False && c.reason == reason)
        })
        .await
    }

    /// Ask for a reconcile as `flux reconcile source` does, and wait until it was handled.
    pub async fn request_reconcile(&self, name: &str) -> K {
        let stamp = format!(
            "{}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        );
        let patch = serde_json::json!({"metadata": {"annotations": {"reconcile.fluxcd.io/requestedAt": stamp}}});
        self.api
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap();
        // lastHandledReconcileAt is written when the pass ends, whatever its outcome.
        self.wait_until(name, "handled the reconcile request", |o| {
            o.status().and_then(|s| s.last_handled_reconcile_at()) == Some(&stamp)
        })
        .await
    }

    /// Wait until the object is deleted (its finalizer handled).
    pub async fn wait_gone(&self, name: &str) {
        let deadline = tokio::time::Instant::now() + WAIT;
        while self.api.get_opt(name).await.expect("get object").is_some() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{name} not deleted within {WAIT:?}; controller log (tail):\n{}",
                tail(&std::fs::read_to_string(&self.log).unwrap_or_default(), 40)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn events(&self, name: &str) -> Vec<Event> {
        let events: Api<Event> = Api::namespaced(self.client.clone(), &self.namespace);
        events
            .list(&ListParams::default().fields(&format!("involvedObject.name={name}")))
            .await
            .unwrap()
            .items
    }

    /// GET the artifact the status points at from the controller's artifact server.
    pub fn download(&self, obj: &K) -> Vec<u8> {
        let artifact = artifact(obj).expect("artifact");
        let path = artifact
            .url
            .split_once(&format!("127.0.0.1:{}", self.storage_port))
            .expect("url on the storage port")
            .1;
        let (status, body) = http_get_bytes(self.storage_port, path);
        assert_eq!(status, 200, "GET {path}");
        body
    }
}

pub fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

pub fn condition<'a, K: SourceObject>(o: &'a K, type_: &str) -> Option<&'a Condition> {
    o.status()?.conditions().iter().find(|c| c.type_ == type_)
}

pub fn has_condition<K: SourceObject>(o: &K, type_: &str) -> bool {
    condition(o, type_).is_some()
}

pub fn ready_status<K: SourceObject>(o: &K) -> Option<ConditionStatus> {
    condition(o, "Ready").map(|c| c.status)
}

pub fn is_current<K: SourceObject>(o: &K) -> bool {
    o.status().and_then(|s| s.observed_generation()) == o.meta().generation
}

pub fn artifact<K: SourceObject>(o: &K) -> Option<&Artifact> {
    o.status()?.artifact()
}

pub fn revision<K: SourceObject>(o: &K) -> String {
    artifact(o).map(|a| a.revision.clone()).unwrap_or_default()
}

/// The files of a tar.gz, path → content, directories left out.
pub fn untar(bytes: &[u8]) -> BTreeMap<String, String> {
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(bytes));
    let mut out = BTreeMap::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        if entry.header().entry_type().is_file() {
            let path = entry
                .path()
                .unwrap()
                .to_string_lossy()
                .trim_start_matches("./")
                .to_string();
            let mut content = String::new();
            entry.read_to_string(&mut content).unwrap();
            out.insert(path, content);
        }
    }
    out
}

pub fn files(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}
