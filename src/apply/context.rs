//! What the Kustomization reconciler shares across passes.

use std::path::PathBuf;
use std::time::Duration;

use kube::Client;

use super::fetch::{ArtifactCache, Retries};
use super::ssa::Mapper;
use crate::artifact::extract::ExtractLimits;
use crate::controller::events::Events;
use crate::controller::metrics::Metrics;
use crate::controller::requeue::Backoff;

pub const FINALIZER: &str = "finalizers.fluxcd.io";
/// The field manager of applied objects, as Flux's kustomize-controller names it.
pub const FIELD_MANAGER: &str = "kustomize-controller";
/// The field manager of status writes.
pub const STATUS_MANAGER: &str = "gotk-kustomize-controller";

#[derive(Debug, Clone)]
pub struct ApplySettings {
    pub jitter_percentage: u8,
    pub kustomize: Option<PathBuf>,
    pub no_cross_namespace_refs: bool,
    pub default_service_account: Option<String>,
    pub requeue_dependency: Duration,
    /// `StrictPostBuildSubstitutions`: an unset variable fails the build.
    pub strict_substitution: bool,
    pub limits: ExtractLimits,
    pub retries: Retries,
    /// How often health checks look again.
    pub health_poll: Duration,
}

pub struct ApplyContext {
    pub client: Client,
    /// The controller's own connection settings, the base of impersonating clients.
    pub config: kube::Config,
    pub http: reqwest::Client,
    pub events: Events,
    pub metrics: Metrics,
    pub mapper: Mapper,
    pub artifacts: ArtifactCache,
    pub backoff: Backoff,
    pub settings: ApplySettings,
}

#[derive(Debug, thiserror::Error)]
pub enum ApplyControllerError {
    #[error("kubernetes API: {0}")]
    Kube(#[source] kube::Error),
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<ApplyControllerError>>),
    #[error("{0}")]
    Cleanup(String),
    #[error(transparent)]
    Panicked(#[from] crate::controller::panics::Panicked),
}
