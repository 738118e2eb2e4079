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
use super::wait::Wait;

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

    /// Waits on this kind's objects, showing the controller log's tail on a timeout.
    pub fn wait(&self) -> Wait<'_, K> {
        Wait::new(&self.api, WAIT)
            .log(|| tail(&std::fs::read_to_string(&self.log).unwrap_or_default(), 40))
    }

    /// Wait until the object satisfies `check`, or fail with its status and the controller
    /// log. Polls the API server: the condition is checked, never a fixed delay assumed.
    pub async fn wait_until(&self, name: &str, what: &str, check: impl Fn(&K) -> bool) -> K {
        self.wait().until(name, what, check).await
    }

    pub async fn wait_ready(&self, name: &str) -> K {
        self.wait_until(name, "Ready", |o| {
            ready_status(o) == Some(ConditionStatus::True) && is_current(o)
        })
        .await
    }

    /// Wait for Ready=False with `reason`.
    pub async fn wait_failing(&self, name: &str, reason: &str) -> K {
        self.wait().failing(name, reason).await
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
        self.wait().gone(name).await
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

/// What a table-driven case expects its object to end up as.
#[derive(Debug, Clone)]
pub enum Expect {
    /// Ready=True on the current generation, serving this artifact revision (any revision if
    /// `None`).
    Ready(Option<String>),
    /// Once condition `until` is there: Ready=False, and condition `condition` has `status`,
    /// `reason` and a message that `message` describes.
    Fails {
        until: &'static str,
        condition: &'static str,
        status: ConditionStatus,
        reason: &'static str,
        message: Message,
    },
}

impl Expect {
    pub fn ready(revision: impl Into<String>) -> Self {
        Expect::Ready(Some(revision.into()))
    }

    /// FetchFailed=True with `reason` (a failure that is retried).
    pub fn fetch_failed(reason: &'static str, message: Message) -> Self {
        Expect::Fails {
            until: "FetchFailed",
            condition: "FetchFailed",
            status: ConditionStatus::True,
            reason,
            message,
        }
    }

    /// Stalled=True with `reason` (a failure no retry mends).
    pub fn stalled(reason: &'static str, message: Message) -> Self {
        Expect::Fails {
            until: "Stalled",
            condition: "Stalled",
            status: ConditionStatus::True,
            reason,
            message,
        }
    }
}

/// What a condition message must look like.
#[derive(Debug, Clone)]
pub enum Message {
    /// Anything: the reason says it all.
    Any,
    Is(String),
    StartsWith(String),
    EndsWith(String),
    Contains(String),
    /// Every one of these.
    All(Vec<Message>),
    /// At least one of these.
    AnyOf(Vec<Message>),
}

impl Message {
    pub fn is(text: impl Into<String>) -> Self {
        Message::Is(text.into())
    }

    pub fn starts_with(text: impl Into<String>) -> Self {
        Message::StartsWith(text.into())
    }

    pub fn ends_with(text: impl Into<String>) -> Self {
        Message::EndsWith(text.into())
    }

    pub fn contains(text: impl Into<String>) -> Self {
        Message::Contains(text.into())
    }

    pub fn matches(&self, message: &str) -> bool {
        match self {
            Message::Any => true,
            Message::Is(t) => message == t,
            Message::StartsWith(t) => message.starts_with(t.as_str()),
            Message::EndsWith(t) => message.ends_with(t.as_str()),
            Message::Contains(t) => message.contains(t.as_str()),
            Message::All(all) => all.iter().all(|m| m.matches(message)),
            Message::AnyOf(any) => any.iter().any(|m| m.matches(message)),
        }
    }
}

/// One row of a table-driven test: an object, its spec, and where it must end up.
#[derive(Debug, Clone)]
pub struct Case {
    pub name: String,
    pub spec: serde_json::Value,
    pub expect: Expect,
}

pub fn case(name: impl Into<String>, spec: serde_json::Value, expect: Expect) -> Case {
    Case {
        name: name.into(),
        spec,
        expect,
    }
}

impl<K: SourceObject> Sources<K> {
    /// Creates every case's object first (so they reconcile side by side), then waits for each
    /// in table order and checks it against its row. Returns the objects as they were when
    /// checked, by name, for what a row does not say.
    pub async fn run_cases(&self, cases: &[Case]) -> BTreeMap<String, K> {
        for c in cases {
            self.create(&c.name, c.spec.clone()).await;
        }
        let mut objects = BTreeMap::new();
        for c in cases {
            let name = c.name.as_str();
            let obj = match &c.expect {
                Expect::Ready(expected) => {
                    let obj = self.wait_ready(name).await;
                    if let Some(expected) = expected {
                        assert_eq!(&revision(&obj), expected, "{name}: revision");
                    }
                    obj
                }
                Expect::Fails {
                    until,
                    condition: type_,
                    status,
                    reason,
                    message,
                } => {
                    let obj = self
                        .wait_until(name, &format!("failed ({until})"), |o| {
                            has_condition(o, until)
                        })
                        .await;
                    assert_eq!(
                        ready_status(&obj),
                        Some(ConditionStatus::False),
                        "{name}: Ready=False"
                    );
                    let found = condition(&obj, type_)
                        .unwrap_or_else(|| panic!("{name}: no {type_} condition"));
                    assert_eq!(
                        (found.status, found.reason.as_str()),
                        (*status, *reason),
                        "{name}: {type_} status and reason ({})",
                        found.message
                    );
                    assert!(
                        message.matches(&found.message),
                        "{name}: {type_} message {:?} is not {message:?}",
                        found.message
                    );
                    obj
                }
            };
            objects.insert(c.name.clone(), obj);
        }
        objects
    }
}
