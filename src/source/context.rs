//! What the source reconcilers share: the Kubernetes client, storage, events, metrics, the
//! registry client cache and the bookkeeping that keeps steady-state passes cheap.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube::{Client, Resource, ResourceExt};

use crate::api::ConditionStatus;
use crate::artifact::extract::ExtractLimits;
use crate::artifact::storage::Storage;
use crate::controller::conditions::{self as cond, Conditions};
use crate::controller::events::Events;
use crate::controller::metrics::{Metrics, ObjectLabels};
use crate::controller::requeue::Backoff;
use crate::oci::registry::{Credentials, RegistryClient, RegistryConnection};
use crate::transport::{HttpClients, Transport};

pub const FINALIZER: &str = "finalizers.fluxcd.io";
pub const REQUESTED_AT: &str = "reconcile.fluxcd.io/requestedAt";

/// Errors that escape a pass (step failures are reported as conditions instead).
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("kubernetes API: {0}")]
    Kube(#[source] kube::Error),
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<SourceError>>),
    #[error("storage: {0}")]
    Storage(String),
    #[error(transparent)]
    Panicked(#[from] crate::controller::panics::Panicked),
}

#[derive(Debug, Clone)]
pub struct SourceConfig {
    pub jitter_percentage: u8,
    pub limits: ExtractLimits,
    pub field_manager: String,
    pub user_agent: String,
    /// Concurrent object downloads per Bucket.
    pub bucket_concurrency: usize,
    /// Largest single Bucket object.
    pub bucket_max_object_bytes: u64,
    /// Most bytes one Bucket listing may send, all pages together.
    pub bucket_max_listing_bytes: u64,
    /// Flux's `ObjectLevelWorkloadIdentity` gate: `spec.serviceAccountName` on Buckets.
    pub object_level_workload_identity: bool,
    /// Hosts besides the clouds' own that may receive the controller's credentials.
    pub ambient_endpoints: crate::identity::endpoints::AmbientEndpoints,
}

#[derive(Clone, PartialEq, Eq, Hash)]
struct RegistryKey {
    registry: String,
    credentials: Credentials,
    transport: Transport,
}

pub struct Context {
    pub client: Client,
    pub storage: Arc<Storage>,
    pub events: Events,
    pub metrics: Metrics,
    pub config: SourceConfig,
    pub backoff: Backoff,
    registries: Mutex<HashMap<RegistryKey, Arc<RegistryConnection>>>,
    /// HTTP clients of Bucket passes, per transport.
    pub http_clients: HttpClients,
    /// The resourceVersion our last status write returned, per object.
    written: Mutex<HashMap<String, String>>,
}

/// Registry clients are kept per (registry, credentials, transport); past this many the cache
/// starts over, so rotated credentials cannot grow it without bound.
const MAX_REGISTRY_CLIENTS: usize = 4096;

impl Context {
    pub fn new(
        client: Client,
        storage: Arc<Storage>,
        events: Events,
        metrics: Metrics,
        config: SourceConfig,
        backoff: Backoff,
    ) -> Self {
        let http_clients = HttpClients::new(&config.user_agent);
        Context {
            client,
            storage,
            events,
            metrics,
            config,
            backoff,
            registries: Mutex::new(HashMap::new()),
            http_clients,
            written: Mutex::new(HashMap::new()),
        }
    }

    pub fn key<K: Resource>(&self, obj: &K) -> String {
        crate::controller::watch::object_key(obj)
    }

    /// A new sequence of requests over the connection of this credential set (one per set, so
    /// no token is ever shared between credentials); the sequence decides its own scheme.
    pub fn registry_client(
        &self,
        registry: &str,
        credentials: Credentials,
        transport: Transport,
    ) -> Result<RegistryClient, String> {
        let key = RegistryKey {
            registry: registry.to_string(),
            credentials,
            transport,
        };
        let mut clients = self.registries.lock().expect("registry cache lock");
        if let Some(connection) = clients.get(&key) {
            return Ok(RegistryClient::session(connection));
        }
        if clients.len() >= MAX_REGISTRY_CLIENTS {
            clients.clear();
        }
        let connection = RegistryConnection::new(
            registry,
            key.credentials.clone(),
            &key.transport,
            &self.config.user_agent,
        )?;
        clients.insert(key, connection.clone());
        Ok(RegistryClient::session(&connection))
    }

    /// Remember the resourceVersion a status write of ours produced.
    pub fn wrote(&self, key: &str, resource_version: Option<String>) {
        let mut written = self.written.lock().expect("written lock");
        match resource_version {
            Some(rv) => written.insert(key.to_string(), rv),
            None => written.remove(key),
        };
    }

    /// Whether the cached object may predate our last status write: it is not the version
    /// that write returned. (A newer version from someone else also reads as "may lag"; that
    /// costs one GET.)
    pub fn cache_may_lag(&self, key: &str, cached_version: Option<&str>) -> bool {
        let written = self.written.lock().expect("written lock");
        written
            .get(key)
            .is_some_and(|rv| Some(rv.as_str()) != cached_version)
    }

    /// Drop what is kept per object once it is deleted.
    pub fn forget(&self, kind: &str, ns: &str, name: &str) {
        let key = format!("{ns}/{name}");
        self.written.lock().expect("written lock").remove(&key);
        self.backoff.reset(&key);
        self.metrics.forget(&labels(kind, ns, name));
    }

    pub fn record_suspend<K: Resource>(&self, kind: &str, obj: &K, suspended: bool) {
        self.metrics.record_suspend(
            &labels(kind, &obj.namespace().unwrap_or_default(), &obj.name_any()),
            suspended,
        );
    }

    pub fn observe<K: Resource>(
        &self,
        kind: &str,
        obj: &K,
        took: Duration,
        conditions: &Conditions,
    ) {
        let l = labels(kind, &obj.namespace().unwrap_or_default(), &obj.name_any());
        self.metrics.observe_duration(&l, took);
        for type_ in [cond::READY, cond::RECONCILING, cond::STALLED] {
            let status = match conditions.get(type_).map(|c| c.status) {
                Some(ConditionStatus::True) => "True",
                Some(ConditionStatus::False) => "False",
                Some(ConditionStatus::Unknown) => "Unknown",
                None => "Deleted",
            };
            self.metrics.record_condition(&l, type_, status);
        }
        let result = if conditions.is_true(cond::READY) {
            "success"
        } else {
            "error"
        };
        self.metrics.record_result(&kind.to_lowercase(), result);
    }
}

fn labels(kind: &str, ns: &str, name: &str) -> ObjectLabels {
    ObjectLabels {
        kind: kind.into(),
        name: name.into(),
        namespace: ns.into(),
    }
}
