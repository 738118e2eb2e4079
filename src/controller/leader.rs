//! Leader election with a coordination.k8s.io Lease, with Flux's names and timings, so that
//! of several replicas only one reconciles (the source-controller's others serve artifacts).

use std::time::Duration;

use anyhow::Context;
use kube::Client;
use kube_lease_manager::{LeaseManager, LeaseManagerBuilder};
use sha2::{Digest, Sha256};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Flux's flags and defaults: lease 35s, renew deadline 30s, retry period 5s.
#[derive(Debug, Clone)]
pub struct ElectionConfig {
    pub lease_name: String,
    pub namespace: String,
    pub lease_duration: Duration,
    pub renew_deadline: Duration,
    /// The holder renews this often (client-go's retry period); the Lease manager expresses
    /// that as the time left on the Lease when it renews.
    pub retry_period: Duration,
}

impl ElectionConfig {
    /// Renew when `lease_duration - retry_period` is left, i.e. every `retry_period`.
    fn renew_when_left(&self) -> u64 {
        let lease = self.lease_duration.as_secs().max(2);
        lease
            .saturating_sub(self.retry_period.as_secs())
            .clamp(1, lease - 1)
    }
}

/// The Lease name Flux uses: `<controller>-leader-election`, suffixed with the first eight hex
/// digits of the selector's sha256 when the controller is sharded by a label selector.
pub fn lease_name(controller: &str, label_selector: &str) -> String {
    if label_selector.is_empty() {
        return format!("{controller}-leader-election");
    }
    let hash = hex::encode(Sha256::digest(label_selector.as_bytes()));
    format!("{controller}-leader-election-{}", &hash[..8])
}

/// Held leadership: dropping it (or calling [`Leadership::release`]) gives the Lease up.
pub struct Leadership {
    identity: String,
    state: watch::Receiver<bool>,
    task: JoinHandle<Result<LeaseManager, kube_lease_manager::LeaseManagerError>>,
}

/// Wait until this process holds the Lease.
pub async fn acquire(client: Client, config: &ElectionConfig) -> anyhow::Result<Leadership> {
    let identity = format!(
        "{}_{:016x}",
        std::env::var("HOSTNAME").unwrap_or_else(|_| "driftless".into()),
        rand::random::<u64>()
    );
    let manager = LeaseManagerBuilder::new(client, &config.lease_name)
        .with_namespace(&config.namespace)
        .with_identity(&identity)
        .with_duration(config.lease_duration.as_secs().max(2))
        .with_grace(config.renew_when_left())
        .build()
        .await
        .with_context(|| format!("preparing Lease {}/{}", config.namespace, config.lease_name))?;
    let (mut state, task) = manager.watch().await;
    tracing::info!(lease = %config.lease_name, %identity, "waiting for leadership");
    while !*state.borrow_and_update() {
        state.changed().await.context("leader election stopped")?;
    }
    tracing::info!(lease = %config.lease_name, %identity, "became the leader");
    Ok(Leadership {
        identity,
        state,
        task,
    })
}

impl Leadership {
    /// The holder identity this process wrote on the Lease.
    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// Resolves when leadership is lost (another replica took the Lease or renewal failed).
    pub async fn lost(&mut self) {
        while *self.state.borrow_and_update() {
            if self.state.changed().await.is_err() {
                return;
            }
        }
    }

    /// Give the Lease up (cleared holder) instead of holding it until it expires.
    pub async fn release(self) {
        drop(self.state);
        match tokio::time::timeout(Duration::from_secs(5), self.task).await {
            Ok(Ok(Ok(_))) => tracing::info!("released the leader Lease"),
            other => tracing::warn!(?other, "could not release the leader Lease cleanly"),
        }
    }
}

/// Runs the controllers until they drain after a shutdown signal, or fails when leadership is
/// lost (another replica then takes over). After a clean shutdown the Lease is handed over at
/// once when `release_on_cancel`, instead of making the next leader wait for it to expire.
pub async fn run_while_leading(
    mut leadership: Option<Leadership>,
    controllers: impl std::future::Future,
    release_on_cancel: bool,
) -> anyhow::Result<()> {
    let lost = async {
        match leadership.as_mut() {
            Some(l) => l.lost().await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = controllers => {}
        _ = lost => anyhow::bail!("lost the leader Lease; exiting so that another replica takes over"),
    }
    if let Some(l) = leadership.filter(|_| release_on_cancel) {
        l.release().await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_holder_renews_every_retry_period() {
        let config = |lease, retry| ElectionConfig {
            lease_name: "l".into(),
            namespace: "n".into(),
            lease_duration: Duration::from_secs(lease),
            renew_deadline: Duration::from_secs(lease - 1),
            retry_period: Duration::from_secs(retry),
        };
        assert_eq!(config(35, 5).renew_when_left(), 30);
        assert_eq!(config(15, 2).renew_when_left(), 13);
        // Always a valid grace for the Lease manager: at least 1s, below the duration.
        assert_eq!(config(3, 10).renew_when_left(), 1);
        assert_eq!(config(35, 0).renew_when_left(), 34);
    }

    #[test]
    fn lease_names_follow_flux() {
        assert_eq!(
            lease_name("source-controller", ""),
            "source-controller-leader-election"
        );
        let sharded = lease_name("source-controller", "sharding.fluxcd.io/key=shard1");
        assert!(sharded.starts_with("source-controller-leader-election-"));
        assert_eq!(
            sharded.len(),
            "source-controller-leader-election-".len() + 8
        );
    }
}
