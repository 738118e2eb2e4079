//! What the source reconcilers share: the Kubernetes client, storage, events, metrics, the
//! registry client cache and the bookkeeping that keeps steady-state passes cheap.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use kube::Client;

use crate::artifact::extract::ExtractLimits;
use crate::artifact::storage::Storage;
use crate::controller::events::Events;
use crate::controller::metrics::Metrics;
use crate::controller::pass::{FrameContext, StatusWrites};
use crate::controller::requeue::Backoff;
use crate::oci::registry::{Credentials, RegistryClient, RegistryConnection};
use crate::transport::{HttpClients, Transport};

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
    /// Hosts besides the clouds' own that may receive the controller's credentials.
    pub ambient_endpoints: crate::identity::endpoints::AmbientEndpoints,
    /// `--default-service-account`: the identity of cloud-provider objects that name none.
    pub default_service_account: Option<String>,
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
    status_writes: StatusWrites,
    /// OCI artifacts already built, by what they were built from (pull once per digest).
    pub pulled: super::pulled::PulledArtifacts,
    /// Time from a receiver event to the artifact it announced.
    pub clock: super::receiver::clock::EventClock,
    /// Signature verifications that succeeded, by digest and material (verify once per digest).
    pub verified: super::verified::VerifiedDigests,
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
            status_writes: StatusWrites::default(),
            pulled: Default::default(),
            clock: Default::default(),
            verified: Default::default(),
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
