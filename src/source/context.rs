//! What the source reconcilers share: the Kubernetes client, storage, events, metrics, the
//! registry client cache and the bookkeeping that keeps steady-state passes cheap.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use kube::Client;

use super::oci::registry::{Credentials, RegistryClient, RegistryConnection, Transport};
use crate::artifact::extract::ExtractLimits;
use crate::artifact::storage::Storage;
use crate::controller::events::Events;
use crate::controller::metrics::Metrics;
use crate::controller::pass::{FrameContext, StatusWrites};
use crate::controller::requeue::Backoff;

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
    /// HTTP clients of Bucket passes, per transport: building one loads the system roots.
    http_clients: Mutex<HashMap<Transport, reqwest::Client>>,
    status_writes: StatusWrites,
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
        Context {
            client,
            storage,
            events,
            metrics,
            config,
            backoff,
            registries: Mutex::new(HashMap::new()),
            http_clients: Mutex::new(HashMap::new()),
            status_writes: StatusWrites::default(),
        }
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

    /// One HTTP client per transport (TLS material, proxy), shared by every Bucket using it.
    pub fn http_client(&self, transport: Transport) -> Result<reqwest::Client, String> {
        let mut clients = self.http_clients.lock().expect("http client cache lock");
        if let Some(client) = clients.get(&transport) {
            return Ok(client.clone());
        }
        if clients.len() >= MAX_REGISTRY_CLIENTS {
            clients.clear();
        }
        let client = super::oci::registry::build_http_client(&transport, &self.config.user_agent)?;
        clients.insert(transport, client.clone());
        Ok(client)
    }
}

impl FrameContext for Context {
    fn client(&self) -> &Client {
        &self.client
    }
    fn events(&self) -> &Events {
        &self.events
    }
    fn metrics(&self) -> &Metrics {
        &self.metrics
    }
    fn backoff(&self) -> &Backoff {
        &self.backoff
    }
    fn status_writes(&self) -> &StatusWrites {
        &self.status_writes
    }
    fn jitter_percentage(&self) -> u8 {
        self.config.jitter_percentage
    }
    fn status_manager(&self) -> &str {
        &self.config.field_manager
    }
}
