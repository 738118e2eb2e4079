//! The fault soak: driftless's source-controller and apply-controller on the platform keep one
//! OCIRepository, one Bucket and one Kustomization (pruning) in step with what is pushed, while
//! faults come one after another:
//! - through Toxiproxy, between the controllers and the registry, the object store and the API
//!   server: outages, connections reset, bodies cut short, stalls;
//! - a registry answering 429 with `Retry-After` (an HTTP front behind the proxy);
//! - `kill -9` of either controller while it works, and a restart over the same storage.
//!
//! Invariants are checked throughout, not only after each fault: a consumer downloads every
//! artifact the statuses name and compares it with their digests; the file a status names is on
//! disk and whole; a ConfigMap every version holds is never pruned. After each fault: a
//! condition and a Warning event naming the cause (where the controller can still write), the
//! last revision kept, recovery within `RECOVERY_BOUND` once it clears, cluster and inventory
//! equal to the pushed version, and after each restart no temp or orphan file older than the
//! start. At the end: at most one `NewArtifact` event per revision, and memory.
//!
//! `tests/faults.rs` runs one short round in `make test`; `make soak` (`benches/soak.rs`) runs
//! rounds for a given time and prints the table.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use k8s_openapi::api::core::v1::{ConfigMap, Event, Secret};
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;
use sha2::{Digest, Sha256};

use driftless::api::{Bucket, ConditionStatus, Kustomization, OCIRepository};
use driftless::controller::pass::ObjectStatus;
use driftless::source::steps::SourceObject;

use super::busy::BusyFront;
use super::controller::{ApplyController, SourceController, free_port, rss_kib, try_get};
use super::events::EventReceiver;
use super::objectstore::{ObjectStore, Provider};
use super::oci::{FLUX_LAYER, client, flux_layer, push_flux_artifact};
use super::source::{artifact, condition, revision};
use super::toxiproxy::Toxiproxy;
use super::wait::condition_of;
use super::{Platform, TestNamespace, sha256};

/// Every object Ready on the pushed version within this long after a fault clears (the
/// controllers retry after at most `MAX_RETRY`, a watch reconnects within its own backoff, a
/// busy registry asks for `BUSY_RETRY_AFTER`).
pub const RECOVERY_BOUND: Duration = Duration::from_secs(60);
/// How long to wait for a fault to show, or for recovery, before counting a violation.
const GIVE_UP: Duration = Duration::from_secs(300);
const MAX_RETRY: &str = "--max-retry-delay=3s";
const BUSY_RETRY_AFTER: u64 = 5;
/// Artifacts larger than the cut-off below, so a body cut short is never a whole artifact.
const PADDING: usize = 48 << 10;
const CUT_AFTER: u64 = 16 << 10;
/// ConfigMaps that come and go: each version holds `WINDOW` consecutive ones of `RING`.
const RING: usize = 5;
const WINDOW: usize = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Fault {
    RegistryOutage,
    RegistryReset,
    RegistryCut,
    RegistryStall,
    RegistryBusy,
    BucketOutage,
    BucketReset,
    BucketCut,
    ApiServerOutage,
    ApiServerReset,
    KillSourceController,
    KillApplyController,
}

impl Fault {
    pub fn name(self) -> &'static str {
        match self {
            Fault::RegistryOutage => "registry: outage",
            Fault::RegistryReset => "registry: connections reset",
            Fault::RegistryCut => "registry: bodies cut after 16 KiB",
            Fault::RegistryStall => "registry: stall closed after 3 s",
            Fault::RegistryBusy => "registry: 429, Retry-After 5 s",
            Fault::BucketOutage => "object store: outage",
            Fault::BucketReset => "object store: connections reset",
            Fault::BucketCut => "object store: bodies cut after 16 KiB",
            Fault::ApiServerOutage => "API server: outage",
            Fault::ApiServerReset => "API server: connections reset",
            Fault::KillSourceController => "kill -9 source-controller",
            Fault::KillApplyController => "kill -9 apply-controller",
        }
    }

    /// The Toxiproxy proxy the fault is on, if any.
    fn proxy(self) -> Option<&'static str> {
        match self {
            Fault::RegistryOutage
            | Fault::RegistryReset
            | Fault::RegistryCut
            | Fault::RegistryStall => Some("registry"),
            Fault::BucketOutage | Fault::BucketReset | Fault::BucketCut => Some("objectstore"),
            Fault::ApiServerOutage | Fault::ApiServerReset => Some("apiserver"),
            Fault::RegistryBusy | Fault::KillSourceController | Fault::KillApplyController => None,
        }
    }

    fn toxic(self) -> Option<(&'static str, serde_json::Value)> {
        match self {
            Fault::RegistryReset | Fault::BucketReset | Fault::ApiServerReset => {
                Some(("reset_peer", json!({"timeout": 0})))
            }
            Fault::RegistryCut | Fault::BucketCut => {
                Some(("limit_data", json!({"bytes": CUT_AFTER})))
            }
            Fault::RegistryStall => Some(("timeout", json!({"timeout": 3000}))),
            _ => None,
        }
    }

    /// The source object whose status must show the fault: the controller reaches the API
    /// server, and the fault is between it and that object's server.
    fn fails(self) -> Option<&'static str> {
        match self.proxy() {
            Some("registry") => Some("app"),
            Some("objectstore") => Some("bucket"),
            _ if self == Fault::RegistryBusy => Some("app"),
            _ => None,
        }
    }

    /// One round: every network fault once, then each kill `kills` times.
    pub fn round(kills: usize) -> Vec<Fault> {
        let mut faults = vec![
            Fault::RegistryOutage,
            Fault::RegistryReset,
            Fault::RegistryCut,
            Fault::RegistryStall,
            Fault::RegistryBusy,
            Fault::BucketOutage,
            Fault::BucketReset,
            Fault::BucketCut,
            Fault::ApiServerOutage,
            Fault::ApiServerReset,
        ];
        for _ in 0..kills {
            faults.extend([Fault::KillSourceController, Fault::KillApplyController]);
        }
        faults
    }
}

pub struct SoakOptions {
    /// How long a network fault lasts once it has shown.
    pub hold: Duration,
    /// Every `n`-th registry outage lasts `long` instead (a plain outage of minutes).
    pub long_outage: Option<(usize, Duration)>,
    pub kills_per_round: usize,
}

/// What a soak saw.
#[derive(Default)]
pub struct SoakReport {
    pub injected: BTreeMap<Fault, usize>,
    pub recoveries: BTreeMap<Fault, Vec<Duration>>,
    pub violations: Vec<String>,
    pub downloads: usize,
    /// Downloads refused while the source-controller was down (killed, restarting).
    pub unavailable: usize,
    pub rss_kib: Vec<RssSample>,
    pub peak_kib_start: (u64, u64),
    pub peak_kib_end: (u64, u64),
    pub new_artifact_events: usize,
    pub elapsed: Duration,
}

/// Both controllers' resident set sizes after a fault: (pid, KiB) each.
#[derive(Debug, Clone, Copy)]
pub struct RssSample {
    pub at: Duration,
    pub source: (u32, u64),
    pub apply: (u32, u64),
}

impl RssSample {
    fn of(&self, controller: usize) -> (u32, u64) {
        if controller == 0 {
            self.source
        } else {
            self.apply
        }
    }
}

/// Shared with the checker running beside the faults.
#[derive(Default)]
struct Watch {
    stop: AtomicBool,
    /// The source-controller is being killed and restarted: its server may refuse or cut a
    /// download. `kills` counts the kills, so a download that overlapped one is known.
    down: AtomicBool,
    kills: AtomicUsize,
    downloads: AtomicUsize,
    unavailable: AtomicUsize,
    violations: Mutex<Vec<String>>,
    /// Once the first apply landed, the ConfigMap every version holds must always exist.
    stable_applied: AtomicBool,
}

impl Watch {
    fn violation(&self, what: String) {
        eprintln!("soak: VIOLATION: {what}");
        self.violations.lock().unwrap().push(what);
    }
}

pub struct Soak {
    platform: Platform,
    kube: Client,
    pub ns: TestNamespace,
    toxiproxy: Toxiproxy,
    busy: BusyFront,
    events: EventReceiver,
    store: ObjectStore,
    bucket_name: String,
    source: SourceController,
    apply: ApplyController,
    storage: PathBuf,
    storage_port: u16,
    source_args: Vec<String>,
    apply_args: Vec<String>,
    kubeconfig: PathBuf,
    _dir: tempfile::TempDir,
    version: usize,
    app: Api<OCIRepository>,
    buckets: Api<Bucket>,
    ks: Api<Kustomization>,
    configmaps: Api<ConfigMap>,
    watch: Arc<Watch>,
    checker: Option<tokio::task::JoinHandle<()>>,
    report: SoakReport,
    outages: usize,
    started: Instant,
    random: u64,
}

/// The controllers' `--log-level`: SOAK_LOG_LEVEL, else info.
fn log_level() -> String {
    let level = std::env::var("SOAK_LOG_LEVEL").unwrap_or_else(|_| "info".into());
    format!("--log-level={level}")
}

/// Hex that does not compress, different for every `seed`.
fn incompressible(seed: usize, len: usize) -> String {
    let mut out = String::with_capacity(len + 64);
    let mut block = Sha256::digest(seed.to_le_bytes()).to_vec();
    while out.len() < len {
        block = Sha256::digest(&block).to_vec();
        out.push_str(&hex::encode(&block));
    }
    out
}

/// The ConfigMaps version `v` holds.
fn expected_configmaps(v: usize) -> BTreeSet<String> {
    let mut names: BTreeSet<String> = (0..WINDOW)
        .map(|i| format!("cm-{}", (v + i) % RING))
        .collect();
    names.insert("stable".into());
    names
}

fn configmap(name: &str, v: usize, padding: &str) -> String {
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\ndata:\n  version: \"{v}\"\n  padding: \"{padding}\"\n"
    )
}

/// The API server's address in a kubeconfig (`host:port`).
fn api_server(kubeconfig: &str) -> String {
    let server = kubeconfig
        .lines()
        .find_map(|l| l.trim().strip_prefix("server: "))
        .expect("a server in the kubeconfig");
    server
        .trim_start_matches("https://")
        .trim_end_matches('/')
        .to_string()
}

fn ready<K: serde::Serialize>(o: &K) -> bool {
    condition_of(o, "Ready").is_some_and(|c| c.status == ConditionStatus::True)
}

fn kustomization_revision(o: &Kustomization) -> String {
    o.status
        .as_ref()
        .and_then(|s| s.last_applied_revision.clone())
        .unwrap_or_default()
}

fn inventory(o: &Kustomization) -> BTreeSet<String> {
    o.status
        .as_ref()
        .and_then(|s| s.inventory.as_ref())
        .map(|i| i.entries.iter().map(|e| e.id.clone()).collect())
        .unwrap_or_default()
}

impl Soak {
    pub async fn start(platform: &Platform, kube: &Client) -> Soak {
        super::install_crds(kube).await;
        let ns = TestNamespace::new(platform, kube, "soak").await;
        let dir = tempfile::tempdir().unwrap();
        let toxiproxy = Toxiproxy::start(platform).await;
        let busy = BusyFront::start(platform.registry()).await;
        let registry = toxiproxy.proxy("registry", &busy.address).await;
        let store = ObjectStore::new(platform, Provider::S3);
        let objectstore = toxiproxy
            .proxy("objectstore", &Provider::S3.address(platform))
            .await;
        let admin = std::fs::read_to_string(platform.kubeconfig()).unwrap();
        let server = api_server(&admin);
        let through = toxiproxy.proxy("apiserver", &server).await;
        let kubeconfig = dir.path().join("kubeconfig-through-toxiproxy");
        std::fs::write(&kubeconfig, admin.replace(&server, &through)).unwrap();

        let storage = dir.path().join("storage");
        let storage_port = free_port();
        let events = EventReceiver::start().await;
        let source_args = vec![
            events.flag(),
            "--min-retry-delay=500ms".to_string(),
            MAX_RETRY.to_string(),
            log_level(),
            "--storage-collect-interval=10s".to_string(),
        ];
        let apply_args = vec![
            "--min-retry-delay=500ms".to_string(),
            MAX_RETRY.to_string(),
            log_level(),
        ];
        let source = start_source(
            platform,
            &ns.name,
            &storage,
            storage_port,
            &source_args,
            &kubeconfig,
        );
        let apply = start_apply(platform, &ns.name, &apply_args, &kubeconfig);
        let bucket_name = format!("soak-{}", ns.name.rsplit('-').next().unwrap_or("x"));
        store.mkbucket(&bucket_name);

        let mut soak = Soak {
            platform: platform.clone(),
            kube: kube.clone(),
            app: Api::namespaced(kube.clone(), &ns.name),
            buckets: Api::namespaced(kube.clone(), &ns.name),
            ks: Api::namespaced(kube.clone(), &ns.name),
            configmaps: Api::namespaced(kube.clone(), &ns.name),
            ns,
            toxiproxy,
            busy,
            events,
            store,
            bucket_name,
            source,
            apply,
            storage,
            storage_port,
            source_args,
            apply_args,
            kubeconfig,
            _dir: dir,
            version: 0,
            watch: Arc::default(),
            checker: None,
            report: SoakReport::default(),
            outages: 0,
            started: Instant::now(),
            random: 0x9e37_79b9_7f4a_7c15,
        };
        soak.create_objects(&registry, &objectstore).await;
        let settled = soak.converge(1).await;
        assert!(
            settled.is_some(),
            "the soak's objects never got Ready on version 1"
        );
        soak.report.peak_kib_start = soak.peaks();
        soak.checker = Some(tokio::spawn(check_continuously(
            soak.watch.clone(),
            soak.app.clone(),
            soak.buckets.clone(),
            soak.configmaps.clone(),
            soak.storage.clone(),
            soak.storage_port,
        )));
        soak
    }

    async fn create_objects(&mut self, registry: &str, objectstore: &str) {
        let ns = self.ns.name.clone();
        let secrets: Api<Secret> = Api::namespaced(self.kube.clone(), &ns);
        let data = Provider::S3.secret(&self.platform).unwrap();
        let secret: Secret =
            serde_json::from_value(json!({"metadata": {"name": "s3-creds"}, "stringData": data}))
                .unwrap();
        secrets
            .create(&PostParams::default(), &secret)
            .await
            .unwrap();
        self.publish(1).await;
        let app = json!({"apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "OCIRepository",
            "metadata": {"name": "app"},
            "spec": {"url": format!("oci://{registry}/{ns}/app"), "interval": "1h", "insecure": true}});
        self.app
            .create(
                &PostParams::default(),
                &serde_json::from_value(app).unwrap(),
            )
            .await
            .unwrap();
        let bucket = json!({"apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "Bucket",
            "metadata": {"name": "bucket"},
            "spec": {"provider": "generic", "bucketName": self.bucket_name, "endpoint": objectstore,
                     "insecure": true, "interval": "1h", "secretRef": {"name": "s3-creds"}}});
        self.buckets
            .create(
                &PostParams::default(),
                &serde_json::from_value(bucket).unwrap(),
            )
            .await
            .unwrap();
        let ks = json!({"apiVersion": "kustomize.toolkit.fluxcd.io/v1", "kind": "Kustomization",
            "metadata": {"name": "apply"},
            "spec": {"interval": "1h", "prune": true, "targetNamespace": ns,
                     "sourceRef": {"kind": "OCIRepository", "name": "app"}}});
        self.ks
            .create(&PostParams::default(), &serde_json::from_value(ks).unwrap())
            .await
            .unwrap();
    }

    /// Pushes version `v` to the registry and the bucket, around every proxy.
    async fn publish(&mut self, v: usize) {
        let padding = incompressible(v, PADDING);
        let manifests: Vec<(String, String)> = expected_configmaps(v)
            .into_iter()
            .map(|name| {
                let pad = if name == "stable" {
                    padding.as_str()
                } else {
                    ""
                };
                (format!("{name}.yaml"), configmap(&name, v, pad))
            })
            .collect();
        let files: Vec<(&str, &str)> = manifests
            .iter()
            .map(|(n, c)| (n.as_str(), c.as_str()))
            .collect();
        push_flux_artifact(
            &client(self.platform.registry()),
            &format!("{}/app", self.ns.name),
            "latest",
            flux_layer(&files),
            FLUX_LAYER,
            &[],
        )
        .await;
        let content = format!("version: {v}\npadding: {padding}\n");
        self.store
            .put(&self.bucket_name, "app.yaml", content.as_bytes());
        self.version = v;
    }

    fn next_random(&mut self) -> u64 {
        // xorshift: the kill points vary, and a seed makes a run repeatable.
        self.random ^= self.random << 13;
        self.random ^= self.random >> 7;
        self.random ^= self.random << 17;
        self.random
    }

    fn peaks(&self) -> (u64, u64) {
        (self.source.peak_rss_kib(), self.apply.peak_rss_kib())
    }

    fn sample_rss(&mut self) {
        let (source, apply) = (self.source.pid(), self.apply.pid());
        self.report.rss_kib.push(RssSample {
            at: self.started.elapsed(),
            source: (source, rss_kib(source)),
            apply: (apply, rss_kib(apply)),
        });
    }

    /// Asks both sources to reconcile now, as `flux reconcile source` does.
    async fn request_reconcile(&self) -> String {
        let stamp = format!(
            "{}",
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        );
        let patch =
            json!({"metadata": {"annotations": {"reconcile.fluxcd.io/requestedAt": stamp}}});
        let params = PatchParams::default();
        self.app
            .patch("app", &params, &Patch::Merge(&patch))
            .await
            .unwrap();
        self.buckets
            .patch("bucket", &params, &Patch::Merge(&patch))
            .await
            .unwrap();
        stamp
    }

    /// One fault: push a new version, inject, hold, clear, and time the recovery.
    pub async fn inject(&mut self, fault: Fault, options: &SoakOptions) {
        let v = self.version + 1;
        let last_app = revision(&self.app.get("app").await.unwrap());
        let last_bucket = revision(&self.buckets.get("bucket").await.unwrap());
        self.publish(v).await;
        let injected_at = jiff::Timestamp::now();
        // Wall-clock times, to read beside the controllers' logs when a violation prints them.
        eprintln!("soak: {} at {injected_at}", fault.name());
        match (fault.proxy(), fault.toxic()) {
            (Some(proxy), Some((kind, attributes))) => {
                self.toxiproxy
                    .add_toxic(proxy, "fault", kind, attributes)
                    .await
            }
            (Some(proxy), None) => self.toxiproxy.set_enabled(proxy, false).await,
            (None, _) => {}
        }
        if fault == Fault::RegistryBusy {
            self.busy.set_busy(Some((429, Some(BUSY_RETRY_AFTER))));
        }
        let stamp = self.request_reconcile().await;
        let cleared_at = match fault {
            Fault::KillSourceController => self.kill_source_midway().await,
            Fault::KillApplyController => self.kill_apply_midway(v).await,
            _ => {
                if let Some(name) = fault.fails() {
                    let last = if name == "app" {
                        &last_app
                    } else {
                        &last_bucket
                    };
                    self.expect_failure(fault, name, &stamp, last, injected_at)
                        .await;
                }
                tokio::time::sleep(self.hold_for(fault, options)).await;
                self.clear(fault).await
            }
        };
        *self.report.injected.entry(fault).or_default() += 1;
        match self.converge(v).await {
            Some(()) => {
                let took = cleared_at.elapsed();
                if took > RECOVERY_BOUND {
                    self.violation_with_logs(format!(
                        "{}: Ready on v{v} only {took:?} after the fault cleared",
                        fault.name()
                    ));
                }
                self.report.recoveries.entry(fault).or_default().push(took);
            }
            None => {
                self.violation_with_logs(format!(
                    "{}: not Ready on v{v} within {GIVE_UP:?} after the fault cleared",
                    fault.name()
                ));
            }
        }
        self.sample_rss();
    }

    fn hold_for(&mut self, fault: Fault, options: &SoakOptions) -> Duration {
        if fault != Fault::RegistryOutage {
            return options.hold;
        }
        self.outages += 1;
        match options.long_outage {
            Some((every, long)) if self.outages.is_multiple_of(every) => long,
            _ => options.hold,
        }
    }

    async fn clear(&mut self, fault: Fault) -> Instant {
        match (fault.proxy(), fault.toxic()) {
            (Some(proxy), Some(_)) => self.toxiproxy.remove_toxic(proxy, "fault").await,
            (Some(proxy), None) => self.toxiproxy.set_enabled(proxy, true).await,
            (None, _) => {}
        }
        self.busy.set_busy(None);
        eprintln!(
            "soak: {} cleared at {}",
            fault.name(),
            jiff::Timestamp::now()
        );
        Instant::now()
    }

    /// The object's Ready turns False on the request, naming the cause, with a Warning event,
    /// and keeps the last revision.
    async fn expect_failure(
        &mut self,
        fault: Fault,
        name: &str,
        stamp: &str,
        last: &str,
        injected_at: jiff::Timestamp,
    ) {
        let deadline = Instant::now() + GIVE_UP;
        loop {
            let (handled, ready, message, now) = match name {
                "app" => {
                    let o = self.app.get(name).await.unwrap();
                    source_failure(&o)
                }
                _ => {
                    let o = self.buckets.get(name).await.unwrap();
                    source_failure(&o)
                }
            };
            if handled.as_deref() == Some(stamp) {
                if ready != Some(ConditionStatus::False) || message.is_empty() {
                    self.violation_with_logs(format!(
                        "{}: {name} handled the request with Ready {ready:?} ({message})",
                        fault.name()
                    ));
                } else if now != last {
                    self.violation_with_logs(format!(
                        "{}: {name} moved from {last} to {now} during the fault",
                        fault.name()
                    ));
                }
                break;
            }
            if Instant::now() > deadline {
                self.violation_with_logs(format!(
                    "{}: {name} did not handle the reconcile request within {GIVE_UP:?}",
                    fault.name()
                ));
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // The Warning goes out just before the status write; it may be seen a moment later.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.warned_since(name, injected_at).await {
            if Instant::now() > deadline {
                self.violation_with_logs(format!("{}: no Warning event on {name}", fault.name()));
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Whether the source object `name` has a Warning event first seen or repeated since
    /// `since`. Counting Warnings instead is wrong over a long soak: the API server deletes
    /// events an hour after their last write (`--event-ttl`), so an old one can vanish while a
    /// new one is written, and a Kustomization of the same name matches the same field selector.
    async fn warned_since(&self, name: &str, since: jiff::Timestamp) -> bool {
        // Event times are kept to the microsecond.
        let since = since - jiff::SignedDuration::from_micros(1);
        let kind = if name == "app" {
            "OCIRepository"
        } else {
            "Bucket"
        };
        self.events(name).await.iter().any(|e| {
            e.type_.as_deref() == Some("Warning")
                && e.involved_object.kind.as_deref() == Some(kind)
                && last_observed(e).is_some_and(|t| t >= since)
        })
    }

    async fn events(&self, name: &str) -> Vec<Event> {
        let events: Api<Event> = Api::namespaced(self.kube.clone(), &self.ns.name);
        let fields = format!("involvedObject.name={name}");
        events
            .list(&ListParams::default().fields(&fields))
            .await
            .map(|l| l.items)
            .unwrap_or_default()
    }

    /// `kill -9` at a random point of the pull and store the request started, then a restart
    /// over the same storage; the start-up must leave no temp or orphan file from before.
    /// Recovery counts from the kill (the restart included).
    async fn kill_source_midway(&mut self) -> Instant {
        let wait = Duration::from_millis(self.next_random() % 400);
        tokio::time::sleep(wait).await;
        self.watch.down.store(true, Ordering::SeqCst);
        self.watch.kills.fetch_add(1, Ordering::SeqCst);
        self.source.kill();
        let killed = Instant::now();
        let left = leftovers(&self.storage);
        self.source = start_source(
            &self.platform,
            &self.ns.name,
            &self.storage,
            self.storage_port,
            &self.source_args,
            &self.kubeconfig,
        );
        self.watch.down.store(false, Ordering::SeqCst);
        let after = leftovers(&self.storage);
        for stray in left.intersection(&after) {
            self.watch.violation(format!(
                "kill -9 source-controller: {stray:?} survived the start-up"
            ));
        }
        killed
    }

    /// `kill -9` at a random point once the new revision is served (the apply-controller
    /// fetches, builds, applies, prunes), then a restart.
    async fn kill_apply_midway(&mut self, v: usize) -> Instant {
        let deadline = Instant::now() + GIVE_UP;
        while !self.app_serves(v).await && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let wait = Duration::from_millis(self.next_random() % 600);
        tokio::time::sleep(wait).await;
        self.apply.kill();
        let killed = Instant::now();
        self.apply = start_apply(
            &self.platform,
            &self.ns.name,
            &self.apply_args,
            &self.kubeconfig,
        );
        killed
    }

    async fn app_serves(&self, v: usize) -> bool {
        let Ok(o) = self.app.get("app").await else {
            return false;
        };
        artifact(&o).is_some() && self.artifact_holds_version(&o, v)
    }

    /// The stored artifact (on disk, whole) holds version `v`.
    fn artifact_holds_version<K: SourceObject>(&self, o: &K, v: usize) -> bool {
        let Some(a) = artifact(o) else { return false };
        let Ok(bytes) = std::fs::read(self.storage.join(&a.path)) else {
            return false;
        };
        sha256(&bytes) == a.digest
            && super::source::untar(&bytes).values().any(|text| {
                text.contains(&format!("version: \"{v}\""))
                    || text.contains(&format!("version: {v}\n"))
            })
    }

    /// Waits until all is Ready on version `v`: both sources serve it, the Kustomization
    /// applied it, the cluster holds exactly its ConfigMaps and the inventory lists them.
    async fn converge(&mut self, v: usize) -> Option<()> {
        let deadline = Instant::now() + GIVE_UP;
        loop {
            if self.converged(v).await {
                self.watch.stable_applied.store(true, Ordering::SeqCst);
                return Some(());
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn converged(&self, v: usize) -> bool {
        let (Ok(app), Ok(bucket), Ok(ks)) = (
            self.app.get("app").await,
            self.buckets.get("bucket").await,
            self.ks.get("apply").await,
        ) else {
            return false;
        };
        let sources_done = ready(&app)
            && ready(&bucket)
            && self.artifact_holds_version(&app, v)
            && self.artifact_holds_version(&bucket, v);
        if !sources_done || !ready(&ks) || kustomization_revision(&ks) != revision(&app) {
            return false;
        }
        let expected = expected_configmaps(v);
        let Ok(cms) = self.configmaps.list(&ListParams::default()).await else {
            return false;
        };
        let applied: BTreeSet<String> = cms
            .items
            .iter()
            .filter(|c| {
                c.metadata.labels.as_ref().is_some_and(|l| {
                    l.get("kustomize.toolkit.fluxcd.io/name")
                        .map(String::as_str)
                        == Some("apply")
                })
            })
            .filter_map(|c| c.metadata.name.clone())
            .collect();
        let ids: BTreeSet<String> = expected
            .iter()
            .map(|n| format!("{}_{n}__ConfigMap", self.ns.name))
            .collect();
        applied == expected && inventory(&ks) == ids
    }

    /// Stops the checker and the controllers' clocks; checks the events; the report.
    pub async fn finish(mut self) -> SoakReport {
        self.watch.stop.store(true, Ordering::SeqCst);
        if let Some(checker) = self.checker.take() {
            checker.await.unwrap();
        }
        let mut per_revision: HashMap<(String, String), usize> = HashMap::new();
        for e in self.events.received() {
            if e["reason"] == "NewArtifact" {
                let object = e["involvedObject"]["kind"]
                    .as_str()
                    .unwrap_or("")
                    .to_string();
                let revision = e["metadata"]
                    .as_object()
                    .and_then(|m| {
                        m.iter()
                            .find(|(k, _)| *k == "revision" || k.ends_with("/revision"))
                    })
                    .and_then(|(_, v)| v.as_str())
                    .unwrap_or("")
                    .to_string();
                *per_revision.entry((object, revision)).or_default() += 1;
            }
        }
        self.report.new_artifact_events = per_revision.len();
        for ((object, revision), count) in per_revision {
            if revision.is_empty() {
                self.watch.violation(format!(
                    "{object}: {count} NewArtifact events without a revision"
                ));
            } else if count > 1 {
                self.watch.violation(format!(
                    "{object}: NewArtifact {count} times for {revision}"
                ));
            }
        }
        self.sample_rss();
        self.report.peak_kib_end = self.peaks();
        for growth in memory_growth(&self.report.rss_kib) {
            self.watch.violation(growth);
        }
        self.report.downloads = self.watch.downloads.load(Ordering::SeqCst);
        self.report.unavailable = self.watch.unavailable.load(Ordering::SeqCst);
        self.report.violations = std::mem::take(&mut *self.watch.violations.lock().unwrap());
        self.report.elapsed = self.started.elapsed();
        let mut report = std::mem::take(&mut self.report);
        report.violations.sort();
        report
    }

    /// A violation of a fault's checks, with the controllers' logs then.
    fn violation_with_logs(&self, what: String) {
        self.watch.violation(what);
        eprintln!("soak: the controllers' logs then:\n{}", self.logs());
    }

    pub fn logs(&self) -> String {
        format!(
            "source-controller:\n{}\napply-controller:\n{}",
            super::source::tail(&self.source.log_text(), 120),
            super::source::tail(&self.apply.log_text(), 120)
        )
    }
}

fn source_failure<K: SourceObject>(
    o: &K,
) -> (Option<String>, Option<ConditionStatus>, String, String) {
    let handled = o
        .status()
        .and_then(|s| s.last_handled_reconcile_at())
        .cloned();
    let ready = condition(o, "Ready");
    (
        handled,
        ready.map(|c| c.status),
        ready.map(|c| c.message.clone()).unwrap_or_default(),
        revision(o),
    )
}

fn start_source(
    platform: &Platform,
    namespace: &str,
    storage: &Path,
    port: u16,
    args: &[String],
    kubeconfig: &Path,
) -> SourceController {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let kubeconfig = kubeconfig.display().to_string();
    SourceController::start_at(
        platform,
        namespace,
        storage,
        port,
        &args,
        &[("KUBECONFIG", kubeconfig.as_str())],
    )
}

fn start_apply(
    platform: &Platform,
    namespace: &str,
    args: &[String],
    kubeconfig: &Path,
) -> ApplyController {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let kubeconfig = kubeconfig.display().to_string();
    ApplyController::start_with_env(
        platform,
        namespace,
        &args,
        &[("KUBECONFIG", kubeconfig.as_str())],
    )
}

/// Temp files, and stored copies no object links to (by inode: a name may come back): what a
/// start-up after a crash must remove.
fn leftovers(storage: &Path) -> BTreeSet<(String, u64)> {
    let mut found = BTreeSet::new();
    let mut dirs = vec![storage.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            if meta.is_dir() {
                dirs.push(path);
                continue;
            }
            let name = entry.file_name().to_string_lossy().to_string();
            let temp = name.contains(".driftless-tmp-");
            let orphan_copy = path.starts_with(storage.join(".blobs")) && meta.nlink() == 1;
            if temp || orphan_copy {
                let relative = path.strip_prefix(storage).unwrap_or(&path);
                found.insert((relative.display().to_string(), meta.ino()));
            }
        }
    }
    found
}

/// The consumer and the storage scan, until told to stop: every artifact a status names is
/// on disk whole and downloads with the status's digest; the ConfigMap every version holds
/// is never missing.
async fn check_continuously(
    watch: Arc<Watch>,
    app: Api<OCIRepository>,
    buckets: Api<Bucket>,
    configmaps: Api<ConfigMap>,
    storage: PathBuf,
    port: u16,
) {
    while !watch.stop.load(Ordering::SeqCst) {
        if let Ok(o) = app.get("app").await {
            check_artifact(&watch, &o, &storage, port, async || {
                app.get("app").await.ok()
            })
            .await;
        }
        if let Ok(o) = buckets.get("bucket").await {
            check_artifact(&watch, &o, &storage, port, async || {
                buckets.get("bucket").await.ok()
            })
            .await;
        }
        if watch.stable_applied.load(Ordering::SeqCst)
            && let Ok(None) = configmaps.get_opt("stable").await
        {
            watch.violation("the ConfigMap every version holds was pruned".into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn check_artifact<K: SourceObject>(
    watch: &Watch,
    o: &K,
    storage: &Path,
    port: u16,
    again: impl AsyncFnOnce() -> Option<K>,
) {
    let Some(a) = artifact(o).cloned() else {
        return;
    };
    let on_disk = std::fs::read(storage.join(&a.path)).ok();
    let whole_on_disk = on_disk.as_deref().is_some_and(|b| sha256(b) == a.digest);
    let path = format!("/{}", a.path);
    let kills = watch.kills.load(Ordering::SeqCst);
    let was_down = watch.down.load(Ordering::SeqCst);
    let served = tokio::task::spawn_blocking(move || try_get(port, &path))
        .await
        .unwrap();
    watch.downloads.fetch_add(1, Ordering::SeqCst);
    let served_whole = match &served {
        Ok((200, body)) => {
            if sha256(body) != a.digest {
                watch.violation(format!(
                    "downloaded {} with digest {}, the status says {}",
                    a.path,
                    sha256(body),
                    a.digest
                ));
            }
            true
        }
        Ok(_) => false,
        // Refused or cut while the controller was being killed: what a consumer retries.
        Err(_)
            if was_down
                || watch.down.load(Ordering::SeqCst)
                || watch.kills.load(Ordering::SeqCst) != kills =>
        {
            watch.unavailable.fetch_add(1, Ordering::SeqCst);
            true
        }
        // Refused, cut short or stalled while it was up: a consumer got no whole artifact.
        Err(_) => false,
    };
    if whole_on_disk && served_whole {
        return;
    }
    // The status may have moved on and the old file been collected since: only a status that
    // still names the file counts.
    let still = again().await.and_then(|o| artifact(&o).cloned());
    if still
        .as_ref()
        .is_some_and(|s| s.path == a.path && s.digest == a.digest)
    {
        if !whole_on_disk {
            watch.violation(format!("the status names {}, not on disk whole", a.path));
        }
        if !served_whole {
            watch.violation(format!(
                "the status names {}, served {:?}",
                a.path,
                served.map(|s| s.0)
            ));
        }
    }
}

/// Memory that grows within one process's life (processes are restarted by the kill faults,
/// so figures across them tell nothing): its last sample against its first, with room for
/// allocator noise, for processes sampled at least three times.
fn memory_growth(samples: &[RssSample]) -> Vec<String> {
    let mut grew = Vec::new();
    for (i, name) in ["source-controller", "apply-controller"].iter().enumerate() {
        let mut lives: Vec<(u32, u64, u64, usize)> = Vec::new();
        for (pid, kib) in samples.iter().map(|s| s.of(i)).filter(|(_, k)| *k > 0) {
            match lives.last_mut() {
                Some(life) if life.0 == pid => {
                    life.2 = kib;
                    life.3 += 1;
                }
                _ => lives.push((pid, kib, kib, 1)),
            }
        }
        for (pid, first, last, count) in lives {
            if count >= 3 && last > first + first / 2 + (32 << 10) {
                grew.push(format!(
                    "{name} (pid {pid}): RSS grew from {} to {} over {count} faults",
                    mib(first),
                    mib(last)
                ));
            }
        }
    }
    grew
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((sorted.len() as f64) * p).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

impl SoakReport {
    /// The table `make soak` prints: faults per kind with recovery p50/p95/max, downloads
    /// checked, violations, memory.
    pub fn table(&self) -> String {
        let mut out = format!(
            "soak: {:.1} min\n\n| fault | injected | recovery p50 | p95 | max |\n|---|---:|---:|---:|---:|\n",
            self.elapsed.as_secs_f64() / 60.0
        );
        for (fault, count) in &self.injected {
            let mut took = self.recoveries.get(fault).cloned().unwrap_or_default();
            took.sort();
            let max = took.last().copied().unwrap_or_default();
            out += &format!(
                "| {} | {count} | {:.2} s | {:.2} s | {:.2} s |\n",
                fault.name(),
                percentile(&took, 0.5).as_secs_f64(),
                percentile(&took, 0.95).as_secs_f64(),
                max.as_secs_f64()
            );
        }
        let total: usize = self.injected.values().sum();
        out += &format!("| all | {total} | | | |\n\n");
        out += &format!(
            "downloads checked against the status digest: {} ({} refused while the source-controller was down)\n",
            self.downloads, self.unavailable
        );
        out += &format!(
            "NewArtifact events checked (one per revision): {}\n",
            self.new_artifact_events
        );
        out += &format!("invariant violations: {}\n", self.violations.len());
        for v in &self.violations {
            out += &format!("  - {v}\n");
        }
        let column = |i: usize| -> Vec<u64> {
            self.rss_kib
                .iter()
                .map(|s| s.of(i).1)
                .filter(|k| *k > 0)
                .collect()
        };
        for (i, name) in ["source-controller", "apply-controller"].iter().enumerate() {
            let rss = column(i);
            let peak_start = if i == 0 {
                self.peak_kib_start.0
            } else {
                self.peak_kib_start.1
            };
            let peak_end = if i == 0 {
                self.peak_kib_end.0
            } else {
                self.peak_kib_end.1
            };
            out += &format!(
                "{name}: peak RSS {} at start, {} at end (that process); RSS sampled after each fault: first {}, max {}, last {}\n",
                mib(peak_start),
                mib(peak_end),
                mib(rss.first().copied().unwrap_or(0)),
                mib(rss.iter().copied().max().unwrap_or(0)),
                mib(rss.last().copied().unwrap_or(0)),
            );
        }
        out
    }
}

/// When an event was last written: its series' last repeat, else its creation (events.k8s.io
/// `eventTime`), else core/v1's `lastTimestamp`.
fn last_observed(e: &Event) -> Option<jiff::Timestamp> {
    let repeated = e
        .series
        .as_ref()
        .and_then(|s| s.last_observed_time.as_ref())
        .map(|t| t.0);
    let created = e.event_time.as_ref().map(|t| t.0);
    let recorded = e.last_timestamp.as_ref().map(|t| t.0);
    [repeated, created, recorded].into_iter().flatten().max()
}
