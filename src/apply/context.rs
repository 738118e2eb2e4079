//! What the Kustomization reconciler shares across passes.

use std::path::PathBuf;
use std::time::Duration;

use kube::Client;

use super::build::BuildMemo;
use super::drift::DriftWatch;
use super::fetch::{ArtifactCache, Retries};
use super::interrupt::Interrupts;
use super::ssa::{ManagerOverrides, Mapper};
use crate::artifact::extract::ExtractLimits;
use crate::controller::events::Events;
use crate::controller::metrics::Metrics;
use crate::controller::pass::{FrameContext, StatusWrites};
use crate::controller::requeue::Backoff;

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
    /// `AdditiveCELDependencyCheck`: `readyExpr` adds to the built-in dependency check.
    pub additive_cel_dependency_check: bool,
    pub limits: ExtractLimits,
    pub retries: Retries,
    /// How often health checks look again.
    pub health_poll: Duration,
    /// What a remote cluster's kubeconfig may ask for.
    pub kubeconfig: KubeconfigPolicy,
    /// Objects of one kind dry-run and applied at a time (`--concurrent-ssa`).
    pub concurrent_ssa: usize,
    /// `--override-manager` and `--override-manager-before-dry-run`.
    pub overrides: ManagerOverrides,
    /// `--custom-apply-stage-kinds`: (group, kind) pairs.
    pub custom_stage_kinds: Vec<(String, String)>,
    /// `--sops-age-secret`: (namespace, name) of the age keys for `spec.decryption` without
    /// a `secretRef`.
    pub sops_age_secret: Option<(String, String)>,
    /// `--sops-vault-configmap`: the Vault instances Kubernetes auth may log in to.
    pub sops_vault_configmap: Option<super::sops::VaultConfigMap>,
    /// `--default-decryption-service-account`.
    pub default_decryption_service_account: Option<String>,
    /// `--default-kubeconfig-service-account`.
    pub default_kubeconfig_service_account: Option<String>,
}

/// What the controller allows in a remote cluster's kubeconfig (`--insecure-kubeconfig-exec`,
/// `--insecure-kubeconfig-tls`).
#[derive(Debug, Clone, Copy, Default)]
pub struct KubeconfigPolicy {
    pub allow_exec: bool,
    pub allow_insecure_tls: bool,
}

pub struct ApplyContext {
    pub client: Client,
    /// The controller's own connection settings, the base of impersonating clients.
    pub config: kube::Config,
    pub http: reqwest::Client,
    /// SPIFFE mTLS to the artifact servers: advertised `http://` URLs are fetched as `https://`.
    pub artifacts_over_mtls: bool,
    /// The controller's own transport to token and key services (AWS KMS): never an
    /// object's proxy or CA.
    pub token_http: reqwest::Client,
    pub events: Events,
    pub metrics: Metrics,
    pub mapper: Mapper,
    pub artifacts: ArtifactCache,
    pub backoff: Backoff,
    pub settings: ApplySettings,
    pub status_writes: StatusWrites,
    /// `CancelHealthCheckOnNewRevision`: the reconciles whose health checks may be cut short.
    pub interrupts: Interrupts,
    /// Drift detection by watching (`super::drift`): on when the controller watches every
    /// namespace (its objects may be in any).
    pub drift: Option<DriftWatch>,
    /// The last build of each Kustomization.
    pub builds: BuildMemo,
}

impl FrameContext for ApplyContext {
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
        self.settings.jitter_percentage
    }
    fn status_manager(&self) -> &str {
        STATUS_MANAGER
    }
}
