//! `driftless source-controller`: flags with Flux's names, storage, the artifact server and the
//! OCIRepository and Bucket controllers.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context as _;
use clap::{ArgAction, Args};
use futures::StreamExt;
use kube::runtime::controller::{Config as ControllerConfig, Controller};

use kube::{Api, Client, ResourceExt};
use prometheus_client::metrics::gauge::Gauge;

use super::context::{Context, SourceConfig};
use super::handover;
use super::receiver;
use super::replica;
use super::steps::SourceObject;
use crate::api::{Bucket, OCIRepository};
use crate::artifact::extract::ExtractLimits;
use crate::artifact::storage::{BlobUsage, Storage, StorageConfig, advertised_host_from_addr};
use crate::controller::args::CommonArgs;
use crate::controller::events::Events;
use crate::controller::flags::go_uint;
use crate::controller::frame::{error_policy, reconcile};
use crate::controller::gates::FeatureGates;
use crate::controller::labels::LabelSelector;
use crate::controller::leader;
use crate::controller::metrics::Metrics;
use crate::controller::probes::{serve, serve_probes, serve_tls};
use crate::controller::requeue::{Backoff, parse_duration};
use crate::controller::spiffe::{IdPattern, Workload};
use crate::controller::watch::{
    EachWatchBacksOff, log_result, object_key, store_has, watched_objects,
};
use crate::identity::endpoints::AmbientEndpoints;

#[derive(Args, Debug, Clone)]
pub struct SourceControllerArgs {
    /// Directory the artifacts are stored in.
    #[arg(long, env = "STORAGE_PATH", default_value = "/data")]
    pub storage_path: PathBuf,
    /// Address the artifact server listens on.
    #[arg(long, env = "STORAGE_ADDRESS", default_value = ":9090")]
    pub storage_addr: String,
    /// Host (or URL prefix) advertised in artifact URLs, e.g. the Service's DNS name.
    #[arg(long, env = "STORAGE_ADV_ADDR", default_value = "")]
    pub storage_adv_addr: String,
    /// Where the other replicas reach this replica's artifact server (`host:port` or an
    /// `http(s)://` prefix) to catch up from it while it leads; empty: `POD_IP` and the port of
    /// `--storage-addr`.
    #[arg(long, env = "STORAGE_PEER_ADDRESS", default_value = "")]
    pub storage_peer_addr: String,
    /// How often stored copies no object refers to any more are removed (and storage use is
    /// measured).
    #[arg(long, default_value = "1m", value_parser = parse_duration)]
    pub storage_collect_interval: Duration,
    /// Age after which superseded artifacts are garbage collected.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub artifact_retention_ttl: Duration,
    /// Artifacts kept per object, current one included.
    #[arg(long, default_value_t = 2, value_parser = go_uint::<usize>)]
    pub artifact_retention_records: usize,
    /// Digest algorithm of artifacts: driftless writes sha256 (Flux's default) only.
    #[arg(long, default_value = "sha256", value_parser = ["sha256"])]
    pub artifact_digest_algo: String,
    /// Flux's source-controller takes this flag and does nothing with it (it watches no
    /// ConfigMaps); so does driftless, so that Flux's arguments start it unchanged.
    #[arg(long, default_value = "reconcile.fluxcd.io/watch=Enabled")]
    pub watch_configs_label_selector: String,
    /// Flux source-controller's feature gates, `Name=true|false,...` (repeatable; see README).
    #[arg(long, action = ArgAction::Append)]
    pub feature_gates: Vec<String>,
    /// Hosts that may receive the controller's own cloud credentials (its ambient identity and
    /// the workload identity tokens it obtains) besides the clouds' genuine service endpoints,
    /// comma-separated: `host[:port]` (HTTPS; port 443 by default) or `http://host[:port]`
    /// (plain HTTP allowed too). Empty: only the genuine endpoints, over HTTPS.
    #[arg(long, default_value = "", value_parser = AmbientEndpoints::parse)]
    pub allowed_ambient_credential_endpoints: AmbientEndpoints,
    /// Default service account to use for workload identity when not specified in resources
    /// (Flux's lockdown: with it, cloud providers never use the controller's own identity).
    #[arg(long, default_value = "")]
    pub default_service_account: String,
    /// Concurrent object downloads per Bucket reconcile.
    #[arg(long, default_value_t = 16, value_parser = download_concurrency)]
    pub bucket_download_concurrency: u16,
    /// Largest single object a Bucket may hold, in bytes.
    #[arg(long, default_value_t = 256 << 20, value_parser = go_uint::<u64>)]
    pub bucket_max_object_size: u64,
    /// Most bytes one Bucket listing may send, all its pages together; a server that sends
    /// more (endless or oversized pages) fails the reconcile instead of filling memory.
    #[arg(long, default_value_t = 256 << 20, value_parser = go_uint::<u64>)]
    pub bucket_max_listing_bytes: u64,
    /// Concurrent reconciles per kind.
    #[arg(long, default_value_t = 2, value_parser = go_uint::<u16>)]
    pub concurrent: u16,
    /// SPIFFE ID authorized to fetch artifacts (repeatable): the artifact server then requires
    /// mTLS with an X.509-SVID of one of them (Flux 2.10; see README, "SPIFFE mTLS").
    #[arg(long = "authorized-artifact-client-spiffe-id", action = ArgAction::Append, value_parser = IdPattern::parse)]
    pub authorized_artifact_clients: Vec<IdPattern>,
    /// Address the event receiver listens on (registry and bucket events); empty: no receiver.
    #[arg(long, default_value = "")]
    pub receiver_addr: String,
    /// The receiver's senders: a YAML file (see README, "Events from registries and buckets").
    #[arg(long)]
    pub receiver_config: Option<PathBuf>,
    /// Largest event body the receiver reads, in bytes.
    #[arg(long, default_value_t = 1 << 20, value_parser = go_uint::<usize>)]
    pub receiver_max_body_bytes: usize,
    /// Events dated further than this from now are ignored, and event identifiers are
    /// remembered this long to refuse replays.
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    pub receiver_max_event_age: Duration,
    /// The first event for an object reconciles it at once; those that follow within this
    /// window are gathered into one more reconcile at its end.
    #[arg(long, default_value = "500ms", value_parser = parse_duration)]
    pub receiver_coalesce_window: Duration,
    #[command(flatten)]
    pub common: CommonArgs,
}

const CONTROLLER_NAME: &str = "source-controller";

/// `--bucket-download-concurrency`: 1 to 256.
fn download_concurrency(text: &str) -> Result<u16, String> {
    match go_uint::<u16>(text)? {
        n @ 1..=256 => Ok(n),
        _ => Err("must be between 1 and 256".into()),
    }
}

pub async fn run(args: SourceControllerArgs) -> anyhow::Result<()> {
    let gates = FeatureGates::parse_source(&args.feature_gates).map_err(anyhow::Error::msg)?;
    // A bad receiver configuration stops every replica at once, not the leader later.
    let receiver_config = read_receiver_config(&args)?;
    let config = crate::controller::apiserver::config()
        .await
        .context("loading the Kubernetes client configuration")?;
    let client = Client::try_from(config).context("connecting to the Kubernetes API")?;
    args.common.check_api_server(&client, &gates.notes).await?;
    let metrics = Metrics::new();
    crate::identity::cache::install(
        args.common.token_cache_max_size,
        args.common.token_cache_max_duration,
        &metrics,
    );
    let ready = serve_probes(
        &args.common.metrics_addr,
        &args.common.health_addr,
        &metrics,
    )
    .await?;
    let storage = Arc::new(open_storage(&args)?);
    collect_storage_periodically(storage.clone(), args.storage_collect_interval, &metrics);
    let workload = args
        .common
        .spiffe_workload(!args.authorized_artifact_clients.is_empty())
        .await?;
    let ctx = Arc::new(Context::new(
        client.clone(),
        storage.clone(),
        Events::new(client.clone(), CONTROLLER_NAME)
            .forwarding_to(
                &args.common.events_addr,
                args.common.event_tls(workload.as_ref())?,
            )
            .map_err(anyhow::Error::msg)?,
        metrics.clone(),
        SourceConfig {
            jitter_percentage: args.common.interval_jitter_percentage,
            limits: ExtractLimits {
                max_bytes: args.common.artifact_max_bytes,
                max_files: args.common.artifact_max_files,
                max_duration: args.common.artifact_extract_timeout,
            },
            field_manager: CONTROLLER_NAME.into(),
            user_agent: format!("driftless/{} (flux/v2)", env!("CARGO_PKG_VERSION")),
            bucket_concurrency: usize::from(args.bucket_download_concurrency),
            bucket_max_object_bytes: args.bucket_max_object_size,
            bucket_max_listing_bytes: args.bucket_max_listing_bytes,
            ambient_endpoints: args.allowed_ambient_credential_endpoints.clone(),
            default_service_account: Some(args.default_service_account.clone())
                .filter(|s| !s.is_empty()),
        },
        Backoff::new(args.common.min_retry_delay, args.common.max_retry_delay),
    ));
    remove_orphaned_storage::<OCIRepository>(&client, &storage, &args).await?;
    remove_orphaned_storage::<Bucket>(&client, &storage, &args).await?;

    // Unlike Flux, every replica serves artifacts: one that is not the leader catches up with
    // the leader's artifacts first and reports ready once in step (see `replica`).
    let on_demand = Arc::new(replica::OnDemand::default());
    let mtls = serve_artifacts(&args, &storage, workload.as_ref(), &on_demand).await?;
    let leadership =
        lead_after_following(&args, &client, &storage, &ready, &metrics, mtls, on_demand).await?;
    if leadership.is_some() {
        // Deletions a follower's watch missed are caught up with, as at start-up.
        remove_orphaned_storage::<OCIRepository>(&client, &storage, &args).await?;
        remove_orphaned_storage::<Bucket>(&client, &storage, &args).await?;
    }

    let (triggers, streams) = receiver::trigger_queues();
    let (oci, oci_store) = controller::<OCIRepository>(&client, &args, ctx.clone(), streams.oci)?;
    let (buckets, bucket_store) =
        controller::<Bucket>(&client, &args, ctx.clone(), streams.buckets)?;
    if let Some(config) = receiver_config {
        let watched = receiver::Watched {
            oci: oci_store,
            buckets: bucket_store,
        };
        serve_receiver(&args, config, &client, &ctx, watched, triggers).await?;
    }
    ready.store(true, Ordering::Relaxed);
    let controllers = futures::future::join(oci, buckets);
    leader::run_while_leading(
        leadership,
        controllers,
        args.common.leader_election_release_on_cancel,
    )
    .await?;
    tracing::info!("source-controller stopped");
    Ok(())
}

/// The artifact server, over SPIFFE mTLS when `--authorized-artifact-client-spiffe-id` is set;
/// then also the TLS a follower fetches from the leader with (the replicas authorize each
/// other by their shared SPIFFE ID).
async fn serve_artifacts(
    args: &SourceControllerArgs,
    storage: &Arc<Storage>,
    workload: Option<&Workload>,
    on_demand: &Arc<replica::OnDemand>,
) -> anyhow::Result<Option<rustls::ClientConfig>> {
    let on_miss: Arc<dyn crate::artifact::server::OnMiss> = on_demand.clone();
    let router = crate::artifact::server::router_with(storage.clone(), Some(on_miss));
    let Some(workload) = workload.filter(|_| !args.authorized_artifact_clients.is_empty()) else {
        serve(&args.storage_addr, router, "artifact server").await?;
        return Ok(None);
    };
    let tls = workload.server_config(&args.authorized_artifact_clients)?;
    serve_tls(&args.storage_addr, router, "artifact server", tls).await?;
    workload.client_config(&[], true).map(Some)
}

/// Follows the leader's artifacts until this replica wins the Lease (with leader election), then
/// names its artifact server on the Lease so the others can follow it.
async fn lead_after_following(
    args: &SourceControllerArgs,
    client: &Client,
    storage: &Arc<Storage>,
    ready: &Arc<std::sync::atomic::AtomicBool>,
    metrics: &Metrics,
    mtls: Option<rustls::ClientConfig>,
    on_demand: Arc<replica::OnDemand>,
) -> anyhow::Result<Option<leader::Leadership>> {
    if !args.common.enable_leader_election {
        return Ok(None);
    }
    let election = args.common.election_config(CONTROLLER_NAME)?;
    let peers = replica::Peers {
        leases: Api::namespaced(client.clone(), &election.namespace),
        lease_name: election.lease_name.clone(),
        own_url: replica::own_url(&args.storage_peer_addr, &args.storage_addr, mtls.is_some()),
    };
    let follower = replica::Follower {
        client: client.clone(),
        storage: storage.clone(),
        peers: peers.clone(),
        over_mtls: mtls.is_some(),
        http: peer_client(mtls)?,
        namespace: (!args.common.watch_all_namespaces)
            .then(|| std::env::var("RUNTIME_NAMESPACE").unwrap_or_default()),
        label_selector: args.common.watch_label_selector.clone(),
        max_bytes: args.common.artifact_max_bytes,
        on_demand,
        in_flight: replica::blocking_permits(),
        settled: Default::default(),
        streaming: replica::streaming_permits(),
    };
    let follower = Arc::new(follower);
    let (ready_now, metrics_now, running) = (ready.clone(), metrics.clone(), follower.clone());
    let following = tokio::spawn(async move { running.run(ready_now, &metrics_now).await });
    let leadership = leader::acquire(client.clone(), &election).await;
    following.abort();
    let _ = following.await;
    // No follower write may land after the leader's first reconciles.
    follower.stop_blocking_work().await;
    let leadership = leadership?;
    replica::keep_advertising(peers, leadership.identity().to_string());
    Ok(Some(leadership))
}

/// The client a follower fetches from the leader with: over SPIFFE mTLS when the artifact
/// servers require it.
fn peer_client(mtls: Option<rustls::ClientConfig>) -> anyhow::Result<reqwest::Client> {
    // Straight to the leader's pod: no proxy, no redirect.
    let builder = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .read_timeout(Duration::from_secs(60))
        // A new leader waits for a follower's downloads to end: none may last for ever.
        .timeout(Duration::from_secs(600))
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none());
    match mtls {
        Some(tls) => crate::controller::spiffe::http_client(builder, tls),
        None => builder.build().context("building the artifact client"),
    }
}

/// Removes stored copies no object links to any more, every `interval`, and reports what
/// storage holds.
fn collect_storage_periodically(storage: Arc<Storage>, interval: Duration, metrics: &Metrics) {
    let gauges = StorageGauges::register(metrics);
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(interval.max(Duration::from_secs(1)));
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let storage = storage.clone();
            match tokio::task::spawn_blocking(move || storage.collect_blobs()).await {
                Ok(Ok(usage)) => gauges.set(&usage),
                Ok(Err(e)) => tracing::warn!(error = %e, "collecting unreferenced artifacts"),
                Err(e) => tracing::warn!(error = %e, "collecting unreferenced artifacts"),
            }
        }
    });
}

#[derive(Clone, Default)]
struct StorageGauges {
    blobs: Gauge,
    stored: Gauge,
    deduplicated: Gauge,
}

impl StorageGauges {
    fn register(metrics: &Metrics) -> Self {
        let this = Self::default();
        metrics.register(
            "driftless_storage_artifact_copies",
            "Distinct artifact contents stored (one copy each)",
            this.blobs.clone(),
        );
        metrics.register(
            "driftless_storage_stored_bytes",
            "Bytes the stored artifact copies take",
            this.stored.clone(),
        );
        metrics.register(
            "driftless_storage_deduplicated_bytes",
            "Bytes saved by storing one copy per content instead of one per object",
            this.deduplicated.clone(),
        );
        this
    }

    fn set(&self, usage: &BlobUsage) {
        let clamp = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        self.blobs.set(clamp(usage.blobs));
        self.stored.set(clamp(usage.stored_bytes));
        self.deduplicated.set(clamp(usage.deduplicated_bytes));
    }
}

/// `--receiver-config`, read and checked at start-up (a bad file stops the controller); `None`
/// without `--receiver-addr`.
fn read_receiver_config(
    args: &SourceControllerArgs,
) -> anyhow::Result<Option<receiver::config::ReceiverConfig>> {
    if args.receiver_addr.is_empty() {
        return Ok(None);
    }
    let path = args
        .receiver_config
        .as_ref()
        .context("--receiver-addr needs --receiver-config")?;
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading --receiver-config {}", path.display()))?;
    receiver::config::ReceiverConfig::parse(&text)
        .map(Some)
        .with_context(|| format!("--receiver-config {}", path.display()))
}

async fn serve_receiver(
    args: &SourceControllerArgs,
    config: receiver::config::ReceiverConfig,
    client: &Client,
    ctx: &Arc<Context>,
    watched: receiver::Watched,
    triggers: receiver::Triggers,
) -> anyhow::Result<()> {
    let namespace = std::env::var("RUNTIME_NAMESPACE").unwrap_or_else(|_| "flux-system".into());
    receiver::register_clock(&ctx.clock, &ctx.metrics);
    let senders = config.senders.len();
    let receiver = receiver::Receiver::new(
        config,
        receiver::config::Secrets::new(client.clone(), namespace),
        receiver::Limits {
            max_body_bytes: args.receiver_max_body_bytes,
            max_event_age: args.receiver_max_event_age,
            coalesce: args.receiver_coalesce_window,
        },
        watched,
        triggers,
        ctx.clock.clone(),
        &ctx.metrics,
    );
    serve(
        &args.receiver_addr,
        receiver::server::router(Arc::new(receiver)),
        "event receiver",
    )
    .await?;
    tracing::info!(addr = %args.receiver_addr, senders, "event receiver listening");
    Ok(())
}

/// The controller of one source kind (it ends when a shutdown signal has drained it), and the
/// cache of the objects it watches. `triggers` are reconcile requests from the receiver.
fn controller<K: SourceObject>(
    client: &Client,
    args: &SourceControllerArgs,
    ctx: Arc<Context>,
    triggers: futures::channel::mpsc::Receiver<kube::runtime::reflector::ObjectRef<K>>,
) -> anyhow::Result<(
    impl std::future::Future<Output = ()> + use<K>,
    kube::runtime::reflector::Store<K>,
)> {
    let api = watched_api::<K>(client, args)?;
    let (storage, selector) = (ctx.storage.clone(), own_selector(args)?);
    let (released, gone) = (api.clone(), ctx.clone());
    let (objects, store) = watched_objects(api, &args.common.watch_label_selector, move |obj| {
        crate::controller::frame::forget(obj, gone.as_ref());
        handover::released(released.clone(), storage.clone(), selector.clone(), obj)
    });
    let queues = ctx.metrics.queues.clone();
    queues.watch(&K::KIND.to_lowercase(), store_has(store.clone()));
    let objects = objects.inspect(move |event| {
        if let Ok(obj) = event {
            queues.add(&K::KIND.to_lowercase(), &object_key(obj));
        }
    });
    tracing::info!(
        concurrent = args.concurrent,
        kind = K::KIND,
        "starting controller"
    );
    let running = Controller::for_stream(objects, store.clone())
        .with_config(ControllerConfig::default().concurrency(args.concurrent))
        .trigger_backoff(EachWatchBacksOff)
        .reconcile_on(triggers)
        .shutdown_on_signal()
        .run(reconcile::<K>, error_policy::<K>, ctx)
        .for_each(|result| async move { log_result(result) });
    Ok((running, store))
}

fn open_storage(args: &SourceControllerArgs) -> anyhow::Result<Storage> {
    std::fs::create_dir_all(&args.storage_path)
        .with_context(|| format!("creating storage path {}", args.storage_path.display()))?;
    let storage = Storage::new(StorageConfig {
        root: args.storage_path.clone(),
        advertised_host: advertised_host_from_addr(&args.storage_addr, &args.storage_adv_addr)?,
        retention_ttl: args.artifact_retention_ttl,
        retention_records: args.artifact_retention_records,
    })?;
    let removed = storage
        .sweep_on_startup()
        .context("removing half-written files from storage")?;
    if !removed.is_empty() {
        tracing::info!(
            count = removed.len(),
            "removed half-written files left by a previous run"
        );
    }
    Ok(storage)
}

fn watched_api<K: SourceObject>(
    client: &Client,
    args: &SourceControllerArgs,
) -> anyhow::Result<Api<K>> {
    if args.common.watch_all_namespaces {
        return Ok(Api::all(client.clone()));
    }
    let ns = std::env::var("RUNTIME_NAMESPACE")
        .context("--watch-all-namespaces=false needs RUNTIME_NAMESPACE")?;
    Ok(Api::namespaced(client.clone(), &ns))
}

/// The (namespace, name) of the objects the label selector selects (all for "").
async fn object_names<K: SourceObject>(
    api: &Api<K>,
    label_selector: &str,
) -> anyhow::Result<std::collections::HashSet<(String, String)>> {
    let params = kube::api::ListParams::default()
        .match_any()
        .labels(label_selector);
    Ok(api
        .list_metadata(&params)
        .await
        .with_context(|| format!("listing {}s", K::KIND))?
        .items
        .iter()
        .map(|o| (o.namespace().unwrap_or_default(), o.name_any()))
        .collect())
}

/// `--watch-label-selector`, parsed here too: the hand-over tells by it whether an object came
/// back to this controller.
fn own_selector(args: &SourceControllerArgs) -> anyhow::Result<Arc<LabelSelector>> {
    LabelSelector::parse(&args.common.watch_label_selector)
        .map(Arc::new)
        .map_err(|e| anyhow::anyhow!("--watch-label-selector: {e}"))
}

/// Artifacts of objects deleted while the controller was down are removed at start-up; with a
/// label selector, those of objects outside it are handed over (see `handover`).
async fn remove_orphaned_storage<K: SourceObject>(
    client: &Client,
    storage: &Arc<Storage>,
    args: &SourceControllerArgs,
) -> anyhow::Result<()> {
    let api = watched_api::<K>(client, args)?;
    let only_ns = (!args.common.watch_all_namespaces)
        .then(|| std::env::var("RUNTIME_NAMESPACE").unwrap_or_default());
    if !args.common.watch_label_selector.is_empty() {
        let selected = object_names(&api, &args.common.watch_label_selector).await?;
        handover::release_stored_outside(
            api,
            storage.clone(),
            own_selector(args)?,
            &selected,
            only_ns.as_deref(),
        );
        return Ok(());
    }
    let live = object_names(&api, "").await?;
    for location in storage.stored_objects(K::STORAGE_KIND) {
        let (ns, name) = (location.namespace(), location.name());
        if only_ns.as_deref().is_some_and(|only| only != ns)
            || live.contains(&(ns.to_string(), name.to_string()))
        {
            continue;
        }
        tracing::info!(namespace = %ns, %name, kind = K::KIND, "removing storage of a deleted object");
        if let Err(e) = storage.remove_object(&location) {
            tracing::warn!(namespace = %ns, %name, error = %e, "could not remove orphaned storage");
        }
    }
    Ok(())
}
