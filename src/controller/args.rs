//! The flags every controller takes, with Flux's names and defaults.

use std::time::Duration;

use anyhow::Context as _;
use clap::{ArgAction, Args};

use super::flags::{go_bool, go_uint};
use super::leader;
use super::requeue::parse_duration;
use super::spiffe::{IdPattern, Workload};

#[derive(Args, Debug, Clone)]
pub struct CommonArgs {
    /// Most bytes an artifact may weigh and unpack to.
    #[arg(long, default_value_t = 1 << 30, value_parser = go_uint::<u64>)]
    pub artifact_max_bytes: u64,
    /// Most files an artifact may unpack to.
    #[arg(long, default_value_t = 100_000, value_parser = go_uint::<u64>)]
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
    #[arg(long, default_value = "true", action = ArgAction::Set, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = go_bool)]
    pub watch_all_namespaces: bool,
    /// Only reconcile objects matching this label selector (sharding).
    #[arg(long, default_value = "")]
    pub watch_label_selector: String,
    /// Spread requeues over interval ± this percentage.
    #[arg(long, default_value_t = 5, value_parser = jitter_percentage)]
    pub interval_jitter_percentage: u8,
    /// Most cloud tokens and registry logins kept (0: none are kept).
    #[arg(long, default_value_t = 100, value_parser = go_uint::<usize>)]
    pub token_cache_max_size: usize,
    /// Longest a cached token is kept (at most 1h, as in Flux).
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    pub token_cache_max_duration: Duration,
    /// Backoff after the first failure.
    #[arg(long, default_value = "750ms", value_parser = parse_duration)]
    pub min_retry_delay: Duration,
    /// Backoff ceiling after repeated failures.
    #[arg(long, default_value = "15m", value_parser = parse_duration)]
    pub max_retry_delay: Duration,
    /// notification-controller's address; every event is also POSTed there in Flux's format.
    #[arg(long, env = "EVENTS_ADDR", default_value = "")]
    pub events_addr: String,
    /// SPIFFE ID of an event server authorized to receive events (repeatable): events then go
    /// over mTLS with this workload's SVID (Flux 2.10; see README, "SPIFFE mTLS").
    #[arg(long = "authorized-event-server-spiffe-id", action = ArgAction::Append, value_parser = IdPattern::parse)]
    pub authorized_event_servers: Vec<IdPattern>,
    /// Reconcile only while holding the Lease (one active replica; the source-controller's
    /// other replicas serve artifacts too).
    #[arg(long, default_value = "false", action = ArgAction::Set, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = go_bool)]
    pub enable_leader_election: bool,
    /// How long a Lease is valid without renewal.
    #[arg(long, default_value = "35s", value_parser = parse_duration)]
    pub leader_election_lease_duration: Duration,
    /// Renew the Lease this long before it would expire; must be shorter than the duration.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub leader_election_renew_deadline: Duration,
    /// Give the Lease up on shutdown instead of holding it until it expires.
    #[arg(long, default_value = "true", action = ArgAction::Set, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = go_bool)]
    pub leader_election_release_on_cancel: bool,
    /// How often a replica that does not hold the Lease tries to take it, and how often the
    /// holder renews it.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub leader_election_retry_period: Duration,
    /// Client-side request rate limit towards the API server (Flux: 50). Flux turns client-side
    /// limits off when the server has API Priority and Fairness; driftless never throttles, so
    /// it refuses these flags against a server without it.
    #[arg(long, value_parser = positive_f32)]
    pub kube_api_qps: Option<f32>,
    /// Client-side burst above `--kube-api-qps`; see there.
    #[arg(long, value_parser = go_uint::<u32>)]
    pub kube_api_burst: Option<u32>,
}

/// The server says so on every response with the flow schema that classified the request.
async fn has_priority_and_fairness(client: &kube::Client) -> anyhow::Result<bool> {
    let request = http::Request::get("/version")
        .body(kube::client::Body::empty())
        .context("building the /version request")?;
    let response = client
        .send(request)
        .await
        .context("asking the API server for /version")?;
    Ok(response
        .headers()
        .contains_key("x-kubernetes-pf-flowschema-uid"))
}

/// `--interval-jitter-percentage`: Flux's uint8, below 100.
fn jitter_percentage(text: &str) -> Result<u8, String> {
    let value = go_uint::<u8>(text)?;
    if value >= 100 {
        return Err("the interval jitter percentage must be less than 100".into());
    }
    Ok(value)
}

/// `--kube-api-qps`: Go's float32 flag, positive and finite here.
fn positive_f32(text: &str) -> Result<f32, String> {
    match text.parse::<f32>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err(format!(
            "'{}' is not a positive number",
            crate::util::truncate(text, 32)
        )),
    }
}

impl CommonArgs {
    /// Start-up checks against the API server, and the feature-gate notes logged once.
    pub async fn check_api_server(
        &self,
        client: &kube::Client,
        gate_notes: &[String],
    ) -> anyhow::Result<()> {
        for note in gate_notes {
            tracing::info!("{note}");
        }
        if self.kube_api_qps.is_none() && self.kube_api_burst.is_none() {
            return Ok(());
        }
        anyhow::ensure!(
            has_priority_and_fairness(client).await?,
            "--kube-api-qps/--kube-api-burst: the API server has no API Priority and Fairness, \
             where Flux would throttle its own requests; driftless does not throttle client-side \
             (remove the flags)"
        );
        tracing::info!(
            "the API server has API Priority and Fairness: client-side limits are off, as in Flux"
        );
        Ok(())
    }

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

    /// The SPIFFE workload when any mTLS flag is set (`more` for the controller's own ones):
    /// connecting waits for the first SVID, as Flux does.
    pub async fn spiffe_workload(&self, more: bool) -> anyhow::Result<Option<Workload>> {
        if self.authorized_event_servers.is_empty() && !more {
            return Ok(None);
        }
        Workload::connect().await.map(Some)
    }

    /// The events' TLS, when `--authorized-event-server-spiffe-id` is set.
    pub fn event_tls(
        &self,
        workload: Option<&Workload>,
    ) -> anyhow::Result<Option<rustls::ClientConfig>> {
        match workload {
            Some(w) if !self.authorized_event_servers.is_empty() => w
                .client_config(&self.authorized_event_servers, false)
                .map(Some),
            _ => Ok(None),
        }
    }

    /// The Lease `controller` competes for, in RUNTIME_NAMESPACE.
    pub fn election_config(&self, controller: &str) -> anyhow::Result<leader::ElectionConfig> {
        let namespace = std::env::var("RUNTIME_NAMESPACE")
            .context("--enable-leader-election needs RUNTIME_NAMESPACE for the Lease")?;
        anyhow::ensure!(
            self.leader_election_renew_deadline < self.leader_election_lease_duration,
            "--leader-election-renew-deadline must be shorter than --leader-election-lease-duration"
        );
        // client-go's rule: the renew deadline must exceed the retry period with its 1.2 jitter.
        let jittered = self.leader_election_retry_period.checked_mul(6);
        let deadline = self.leader_election_renew_deadline.checked_mul(5);
        anyhow::ensure!(
            self.leader_election_retry_period >= Duration::from_secs(1)
                && jittered.zip(deadline).is_some_and(|(j, d)| j < d),
            "--leader-election-renew-deadline must be greater than 1.2 × --leader-election-retry-period (at least 1s)"
        );
        Ok(leader::ElectionConfig {
            lease_name: leader::lease_name(controller, &self.watch_label_selector),
            namespace,
            lease_duration: self.leader_election_lease_duration,
            renew_deadline: self.leader_election_renew_deadline,
            retry_period: self.leader_election_retry_period,
        })
    }
}
