//! The flags every controller takes, with Flux's names and defaults.

use std::time::Duration;

use anyhow::Context as _;
use clap::{ArgAction, Args};

use super::leader;
use super::requeue::parse_duration;

#[derive(Args, Debug, Clone)]
pub struct CommonArgs {
    /// Most bytes an artifact may weigh and unpack to.
    #[arg(long, default_value_t = 1 << 30)]
    pub artifact_max_bytes: u64,
    /// Most files an artifact may unpack to.
    #[arg(long, default_value_t = 100_000)]
    pub artifact_max_files: u64,
    /// Longest one artifact extraction may take (a backstop: bytes and files are capped too).
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    pub artifact_extract_timeout: Duration,
    /// Address of the Prometheus metrics endpoint.
    #[arg(long, env = "METRICS_ADDR", default_value = ":8080")]
    pub metrics_addr: String,
    /// Address of the /healthz and /readyz endpoints.
    #[arg(long, default_value = ":9440")]
    pub health_addr: String,
    /// Watch every namespace; with false, only RUNTIME_NAMESPACE.
    #[arg(long, default_value_t = true, action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub watch_all_namespaces: bool,
    /// Only reconcile objects matching this label selector (sharding).
    #[arg(long, default_value = "")]
    pub watch_label_selector: String,
    /// Spread requeues over interval ± this percentage.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u8).range(0..100))]
    pub interval_jitter_percentage: u8,
    /// Backoff after the first failure.
    #[arg(long, default_value = "750ms", value_parser = parse_duration)]
    pub min_retry_delay: Duration,
    /// Backoff ceiling after repeated failures.
    #[arg(long, default_value = "15m", value_parser = parse_duration)]
    pub max_retry_delay: Duration,
    /// notification-controller's address; every event is also POSTed there in Flux's format.
    #[arg(long, env = "EVENTS_ADDR", default_value = "")]
    pub events_addr: String,
    /// Reconcile (and serve artifacts) only while holding the Lease (one active replica).
    #[arg(long)]
    pub enable_leader_election: bool,
    /// How long a Lease is valid without renewal.
    #[arg(long, default_value = "35s", value_parser = parse_duration)]
    pub leader_election_lease_duration: Duration,
    /// Renew the Lease this long before it would expire; must be shorter than the duration.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub leader_election_renew_deadline: Duration,
    /// Give the Lease up on shutdown instead of holding it until it expires.
    #[arg(long, default_value_t = true, action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub leader_election_release_on_cancel: bool,
}

impl CommonArgs {
    /// With `--enable-leader-election`, waits until this replica holds `controller`'s Lease.
    pub async fn leadership(
        &self,
        client: &kube::Client,
        controller: &str,
    ) -> anyhow::Result<Option<leader::Leadership>> {
        if !self.enable_leader_election {
            return Ok(None);
        }
        let config = self.election_config(controller)?;
        Ok(Some(leader::acquire(client.clone(), &config).await?))
    }

    /// The Lease `controller` competes for, in RUNTIME_NAMESPACE.
    pub fn election_config(&self, controller: &str) -> anyhow::Result<leader::ElectionConfig> {
        let namespace = std::env::var("RUNTIME_NAMESPACE")
            .context("--enable-leader-election needs RUNTIME_NAMESPACE for the Lease")?;
        anyhow::ensure!(
            self.leader_election_renew_deadline < self.leader_election_lease_duration,
            "--leader-election-renew-deadline must be shorter than --leader-election-lease-duration"
        );
        Ok(leader::ElectionConfig {
            lease_name: leader::lease_name(controller, &self.watch_label_selector),
            namespace,
            lease_duration: self.leader_election_lease_duration,
            renew_deadline: self.leader_election_renew_deadline,
        })
    }
}
