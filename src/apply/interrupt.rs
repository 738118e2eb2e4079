//! `CancelHealthCheckOnNewRevision` (Flux 2.7, widened in 2.8): a health check in progress
//! gives way when a watch event asks for a new reconcile of the same Kustomization — its spec or
//! reconcile request changed, its source has a new revision, or a ConfigMap/Secret of its
//! `substituteFrom` changed — instead of holding the new revision back until its timeout.
//! Only the health-check wait is interrupted: build, apply and prune always finish.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

/// The reconciles in flight that may be interrupted, by object key (`namespace/name`).
#[derive(Clone, Default)]
pub struct Interrupts {
    enabled: bool,
    inflight: Arc<Mutex<HashMap<String, Inflight>>>,
    serial: Arc<AtomicU64>,
}

struct Inflight {
    serial: u64,
    generation: Option<i64>,
    requested_at: Option<String>,
    /// The source revision being applied, once the reconcile knows it.
    revision: Option<String>,
    cause: watch::Sender<Option<String>>,
}

/// One reconcile's registration; dropping it ends the registration.
pub struct Registration {
    key: String,
    serial: u64,
    cause: watch::Receiver<Option<String>>,
    owner: Interrupts,
}

impl Interrupts {
    pub fn new(enabled: bool) -> Self {
        Interrupts {
            enabled,
            ..Default::default()
        }
    }

    /// Registers a reconcile of `key` at this generation and reconcile request; `None` when
    /// the gate is off.
    pub fn register(
        &self,
        key: &str,
        generation: Option<i64>,
        requested_at: Option<String>,
    ) -> Option<Registration> {
        if !self.enabled {
            return None;
        }
        let serial = self.serial.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = watch::channel(None);
        self.lock().insert(
            key.to_string(),
            Inflight {
                serial,
                generation,
                requested_at,
                revision: None,
                cause: tx,
            },
        );
        Some(Registration {
            key: key.to_string(),
            serial,
            cause: rx,
            owner: self.clone(),
        })
    }

    /// The Kustomization itself was seen by the watch: a new generation or reconcile request
    /// interrupts (status writes do not).
    pub fn object_seen(&self, key: &str, generation: Option<i64>, requested_at: Option<&str>) {
        self.interrupt_if(key, &format!("Kustomization/{key}"), |f| {
            f.generation != generation || f.requested_at.as_deref() != requested_at
        });
    }

    /// A source the Kustomization `key` uses now has `revision`: a revision other than the
    /// one being applied interrupts.
    pub fn source_seen(&self, key: &str, source: &str, revision: Option<&str>) {
        self.interrupt_if(key, source, |f| {
            f.revision.is_some() && revision.is_some() && f.revision.as_deref() != revision
        });
    }

    /// A ConfigMap or Secret the Kustomization `key` substitutes from changed.
    pub fn config_changed(&self, key: &str, config: &str) {
        self.interrupt_if(key, config, |_| true);
    }

    fn interrupt_if(&self, key: &str, by: &str, applies: impl Fn(&Inflight) -> bool) {
        if !self.enabled {
            return;
        }
        if let Some(f) = self.lock().get(key).filter(|f| applies(f)) {
            // The first cause is the one reported.
            f.cause.send_if_modified(|c| match c {
                None => {
                    *c = Some(by.to_string());
                    true
                }
                Some(_) => false,
            });
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Inflight>> {
        // A panic elsewhere while holding the lock leaves a map that is still consistent.
        self.inflight.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Registration {
    /// The reconcile now applies `revision`.
    pub fn applying(&self, revision: &str) {
        if let Some(f) = self.owner.lock().get_mut(&self.key)
            && f.serial == self.serial
        {
            f.revision = Some(revision.to_string());
        }
    }

    /// What interrupted this reconcile so far (`Kind/namespace/name`), if anything.
    pub fn cause(&self) -> Option<String> {
        self.cause.borrow().clone()
    }

    /// Waits until something interrupts this reconcile; returns what did.
    pub async fn interrupted(&mut self) -> String {
        loop {
            if let Some(by) = self.cause() {
                return by;
            }
            if self.cause.changed().await.is_err() {
                // The sender lives in the map until this registration drops: not reached, but
                // never spin.
                std::future::pending::<()>().await;
            }
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut map = self.owner.lock();
        if map.get(&self.key).is_some_and(|f| f.serial == self.serial) {
            map.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_registers_nothing() {
        let i = Interrupts::new(false);
        assert!(i.register("ns/a", Some(1), None).is_none());
        i.config_changed("ns/a", "ConfigMap/ns/vars");
    }

    #[test]
    fn status_writes_do_not_interrupt_spec_and_requests_do() {
        let i = Interrupts::new(true);
        let r = i.register("ns/a", Some(1), Some("t1".into())).unwrap();
        i.object_seen("ns/a", Some(1), Some("t1"));
        assert_eq!(r.cause(), None);
        i.object_seen("ns/a", Some(1), Some("t2"));
        assert_eq!(r.cause().as_deref(), Some("Kustomization/ns/a"));
        let i = Interrupts::new(true);
        let r = i.register("ns/a", Some(1), None).unwrap();
        i.object_seen("ns/b", Some(2), None);
        assert_eq!(r.cause(), None, "another object");
        i.object_seen("ns/a", Some(2), None);
        assert_eq!(r.cause().as_deref(), Some("Kustomization/ns/a"));
    }

    #[test]
    fn only_a_different_source_revision_interrupts() {
        let i = Interrupts::new(true);
        let r = i.register("ns/a", Some(1), None).unwrap();
        i.source_seen("ns/a", "OCIRepository/ns/app", Some("v1@sha256:1"));
        assert_eq!(r.cause(), None, "the revision is not known yet");
        r.applying("v1@sha256:1");
        i.source_seen("ns/a", "OCIRepository/ns/app", Some("v1@sha256:1"));
        i.source_seen("ns/a", "OCIRepository/ns/app", None);
        assert_eq!(r.cause(), None);
        i.source_seen("ns/a", "OCIRepository/ns/app", Some("v2@sha256:2"));
        i.config_changed("ns/a", "Secret/ns/later");
        assert_eq!(
            r.cause().as_deref(),
            Some("OCIRepository/ns/app"),
            "the first cause is kept"
        );
    }

    #[tokio::test]
    async fn a_waiting_health_check_wakes_and_a_dropped_registration_is_gone() {
        let i = Interrupts::new(true);
        let mut r = i.register("ns/a", Some(1), None).unwrap();
        let trigger = i.clone();
        tokio::spawn(async move { trigger.config_changed("ns/a", "ConfigMap/ns/vars") });
        assert_eq!(r.interrupted().await, "ConfigMap/ns/vars");
        let old = i.register("ns/a", Some(1), None).unwrap();
        let new = i.register("ns/a", Some(2), None).unwrap();
        drop(old);
        i.config_changed("ns/a", "ConfigMap/ns/vars");
        assert!(
            new.cause().is_some(),
            "dropping an older registration keeps the newer"
        );
        drop(new);
        assert!(i.lock().is_empty());
    }
}
