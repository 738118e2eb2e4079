//! `driftless apply-controller`: Flux kustomize-controller's flags, the Kustomization
//! controller, and the source watches that start a reconcile as soon as a new artifact lands.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context as _;
use clap::{ArgAction, Args};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::DynamicObject;
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{Config as ControllerConfig, Controller};
use kube::runtime::reflector::{ObjectRef as QueueRef, Store};
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt};

use super::build::BuildMemo;
use super::context::{ApplyContext, ApplySettings, KubeconfigPolicy};
use super::drift::DriftWatch;
use super::fetch::{ArtifactCache, Retries};
use super::interrupt::Interrupts;
use super::reconcile::source_resource;
use super::sops::VaultConfigMap;
use super::ssa::{ManagerOverrides, Mapper, parse_group_kinds};
use crate::api::kustomization::{SourceKind, SubstituteKind};
use crate::api::{Bucket, Kustomization, OCIRepository};
use crate::artifact::extract::ExtractLimits;
use crate::controller::args::CommonArgs;
use crate::controller::conditions::{READY, RECONCILING};
use crate::controller::events::Events;
use crate::controller::flags::{go_bool, go_uint};
use crate::controller::frame::{error_policy, reconcile, requested_at};
use crate::controller::gates::{FeatureGates, Gate};
use crate::controller::leader;
use crate::controller::metrics::Metrics;
use crate::controller::pass::StatusWrites;
use crate::controller::queue::WorkQueues;
use crate::controller::requeue::{Backoff, parse_duration};
use crate::controller::spiffe::IdPattern;
use crate::controller::watch::{
    EachWatchBacksOff, log_result, object_key, store_has, trigger_watch, watched_objects,
};
use crate::transport::{Transport, build_http_client};

const CONTROLLER_NAME: &str = "kustomize-controller";
/// The controller's name in work-queue metrics (controller-runtime's: the kind, lowercase).
const CONTROLLER: &str = "kustomization";

#[derive(Args, Debug, Clone)]
pub struct ApplyControllerArgs {
    /// The kustomize binary for directories with a kustomization.yaml (and spec transformers);
    /// unset: the first `kustomize` on PATH.
    #[arg(long, env = "KUSTOMIZE_PATH")]
    pub kustomize_path: Option<PathBuf>,
    /// Concurrent Kustomization reconciles.
    #[arg(long, default_value_t = 4, value_parser = go_uint::<u16>)]
    pub concurrent: u16,
    /// SPIFFE ID of an artifact server authorized to serve artifacts (repeatable): artifacts
    /// are then fetched over mTLS (`https://`) with this workload's SVID (Flux 2.10; see README,
    /// "SPIFFE mTLS").
    #[arg(long = "authorized-artifact-server-spiffe-id", action = ArgAction::Append, value_parser = IdPattern::parse)]
    pub authorized_artifact_servers: Vec<IdPattern>,
    /// Objects of one kind a Kustomization dry-runs and applies at a time.
    #[arg(long, default_value_t = 4, value_parser = at_least_one)]
    pub concurrent_ssa: u16,
    /// Requeue delay while dependencies or source artifacts are not ready.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub requeue_dependency: Duration,
    /// Refuse sourceRefs and dependsOn in other namespaces.
    #[arg(long, default_value = "false", action = ArgAction::Set, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = go_bool)]
    pub no_cross_namespace_refs: bool,
    /// Allow `user.exec` in the kubeconfigs of `spec.kubeConfig.secretRef` (the command runs
    /// in the controller's container).
    #[arg(long, default_value = "false", action = ArgAction::Set, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = go_bool)]
    pub insecure_kubeconfig_exec: bool,
    /// Allow `insecure-skip-tls-verify` in the kubeconfigs of `spec.kubeConfig.secretRef`.
    #[arg(long, default_value = "false", action = ArgAction::Set, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = go_bool)]
    pub insecure_kubeconfig_tls: bool,
    /// Refuse remote kustomize bases. driftless always does (everything must come from the
    /// verified artifact), so only true is accepted.
    #[arg(long, default_value = "true", action = ArgAction::Set, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = remote_bases_refused)]
    pub no_remote_bases: bool,
    /// Impersonate this service account when a Kustomization names none.
    #[arg(long, default_value = "")]
    pub default_service_account: String,
    /// The ServiceAccount whose identity reaches KMS for SOPS when a Kustomization's
    /// `spec.decryption` names none (multi-tenant lockdown).
    #[arg(long, default_value = "")]
    pub default_decryption_service_account: String,
    /// The ServiceAccount (in each Kustomization's namespace) whose identity reaches a remote
    /// cluster named by `spec.kubeConfig.configMapRef` when the ConfigMap names none: the
    /// controller's own identity is then never used (multi-tenant lockdown).
    #[arg(long, default_value = "")]
    pub default_kubeconfig_service_account: String,
    /// A Secret in the controller's namespace (RUNTIME_NAMESPACE) whose `*.agekey` entries
    /// decrypt for Kustomizations whose `spec.decryption` names no Secret.
    #[arg(long, default_value = "")]
    pub sops_age_secret: String,
    /// A ConfigMap in the controller's namespace (RUNTIME_NAMESPACE) whose `config.yaml` lists
    /// the OpenBao/Vault instances (`address`, `loginPath`) that SOPS decryption may log in to
    /// with a ServiceAccount token (Kubernetes auth); an allow-list of Vault servers.
    #[arg(long, default_value = "")]
    pub sops_vault_configmap: String,
    /// Artifact download retries after the first attempt (Flux's default: 9).
    #[arg(long, default_value_t = 9, value_parser = go_uint::<u32>)]
    pub http_retry: u32,
    #[command(flatten)]
    pub common: CommonArgs,
    /// How often health checks look at the objects again.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub health_check_poll: Duration,
    /// A field manager (name prefix) whose fields are taken over after the dry run, besides
    /// kubectl's (repeatable).
    #[arg(long, action = ArgAction::Append)]
    pub override_manager: Vec<String>,
    /// A field manager (exact name) whose fields are taken over before the dry run (repeatable).
    #[arg(long, action = ArgAction::Append)]
    pub override_manager_before_dry_run: Vec<String>,
    /// Kinds (`group/Kind`, or `Kind` for the core group; comma-separated) applied in a stage of
    /// their own after cluster definitions and classes, before everything else.
    #[arg(long, default_value = "")]
    pub custom_apply_stage_kinds: String,
    /// ConfigMaps and Secrets with these labels, when a Kustomization's
    /// `postBuild.substituteFrom` names them, reconcile it as soon as they change (empty: all).
    #[arg(long, default_value = "reconcile.fluxcd.io/watch=Enabled")]
    pub watch_configs_label_selector: String,
    /// Flux kustomize-controller's feature gates, `Name=true|false,...` (repeatable; see README).
    #[arg(long, action = ArgAction::Append)]
    pub feature_gates: Vec<String>,
}

/// `--no-remote-bases`: only true.
fn remote_bases_refused(text: &str) -> Result<bool, String> {
    match go_bool(text)? {
        true => Ok(true),
        false => Err(
            "driftless never fetches remote kustomize bases: everything must come \
                      from the verified artifact"
                .into(),
        ),
    }
}

/// An empty manager name would be a prefix of every manager: dropped.
fn non_empty(names: &[String]) -> Vec<String> {
    names.iter().filter(|n| !n.is_empty()).cloned().collect()
}

/// A concurrency flag: 1 or more.
fn at_least_one(text: &str) -> Result<u16, String> {
    match go_uint::<u16>(text)? {
        0 => Err("must be at least 1".into()),
        n => Ok(n),
    }
}

/// The client artifacts are fetched with: over SPIFFE mTLS when `tls` is given.
fn artifact_client(tls: Option<rustls::ClientConfig>) -> anyhow::Result<reqwest::Client> {
    let user_agent = format!(
        "driftless/{} (kustomize-controller)",
        env!("CARGO_PKG_VERSION")
    );
    match tls {
        None => build_http_client(&Transport::default(), &user_agent, Duration::from_secs(15))
            .map_err(anyhow::Error::msg),
        Some(tls) => crate::controller::spiffe::http_client(
            reqwest::Client::builder()
                .user_agent(user_agent)
                .connect_timeout(Duration::from_secs(15))
                .read_timeout(Duration::from_secs(60)),
            tls,
        ),
    }
}

pub async fn run(args: ApplyControllerArgs) -> anyhow::Result<()> {
    let gates = FeatureGates::parse_apply(&args.feature_gates).map_err(anyhow::Error::msg)?;
    let config = crate::controller::apiserver::config()
        .await
        .context("loading the Kubernetes client configuration")?;
    let client = Client::try_from(config.clone()).context("connecting to the Kubernetes API")?;
    args.common.check_api_server(&client, &gates.notes).await?;
    let metrics = Metrics::new();
    crate::identity::cache::install(
        args.common.token_cache_max_size,
        args.common.token_cache_max_duration,
        &metrics,
    );
    let ready = crate::controller::probes::serve_probes(
        &args.common.metrics_addr,
        &args.common.health_addr,
        &metrics,
    )
    .await?;
    let leadership = args.common.leadership(&client, CONTROLLER_NAME).await?;
    if let Some(path) = &args.kustomize_path {
        anyhow::ensure!(
            path.is_file(),
            "--kustomize-path {} is not a file",
            path.display()
        );
    }
    let kustomize = args.kustomize_path.clone().or_else(|| {
        let found = std::env::var_os("PATH").and_then(|p| executable_on_path("kustomize", &p));
        if let Some(path) = &found {
            tracing::info!(path = %path.display(), "using kustomize found on PATH");
        }
        found
    });
    let workload = args
        .common
        .spiffe_workload(!args.authorized_artifact_servers.is_empty())
        .await?;
    let artifact_tls = match &workload {
        Some(w) if !args.authorized_artifact_servers.is_empty() => {
            Some(w.client_config(&args.authorized_artifact_servers, false)?)
        }
        _ => None,
    };
    // Objects applied may be in any namespace: a watch of one namespace would miss them.
    let (drift, drifted) = match args.common.watch_all_namespaces {
        true => {
            let (watch, drifted) = DriftWatch::new(client.clone());
            (Some(watch), drifted.boxed())
        }
        false => (None, futures::stream::pending().boxed()),
    };
    let ctx = Arc::new(ApplyContext {
        client: client.clone(),
        config,
        artifacts_over_mtls: artifact_tls.is_some(),
        http: artifact_client(artifact_tls)?,
        token_http: build_http_client(
            &Transport::token_service(),
            &format!(
                "driftless/{} (kustomize-controller)",
                env!("CARGO_PKG_VERSION")
            ),
            Duration::from_secs(30),
        )
        .map_err(anyhow::Error::msg)?,
        events: Events::new(client.clone(), CONTROLLER_NAME)
            .forwarding_to(
                &args.common.events_addr,
                args.common.event_tls(workload.as_ref())?,
            )
            .map_err(anyhow::Error::msg)?,
        metrics,
        mapper: Mapper::default(),
        artifacts: ArtifactCache::new(8),
        backoff: Backoff::new(args.common.min_retry_delay, args.common.max_retry_delay),
        settings: ApplySettings {
            jitter_percentage: args.common.interval_jitter_percentage,
            kustomize: kustomize.clone(),
            no_cross_namespace_refs: args.no_cross_namespace_refs,
            default_service_account: Some(args.default_service_account.clone())
                .filter(|s| !s.is_empty()),
            requeue_dependency: args.requeue_dependency,
            strict_substitution: gates.enabled(Gate::StrictPostBuildSubstitutions),
            additive_cel_dependency_check: gates.enabled(Gate::AdditiveCELDependencyCheck),
            limits: ExtractLimits {
                max_bytes: args.common.artifact_max_bytes,
                max_files: args.common.artifact_max_files,
                max_duration: args.common.artifact_extract_timeout,
            },
            retries: Retries {
                attempts: args.http_retry.saturating_add(1),
                ..Retries::default()
            },
            health_poll: args.health_check_poll,
            kubeconfig: KubeconfigPolicy {
                allow_exec: args.insecure_kubeconfig_exec,
                allow_insecure_tls: args.insecure_kubeconfig_tls,
            },
            concurrent_ssa: usize::from(args.concurrent_ssa),
            overrides: ManagerOverrides {
                after_dry_run: non_empty(&args.override_manager),
                before_dry_run: non_empty(&args.override_manager_before_dry_run),
            },
            custom_stage_kinds: parse_group_kinds(&args.custom_apply_stage_kinds),
            sops_age_secret: in_runtime_namespace("--sops-age-secret", &args.sops_age_secret)?,
            sops_vault_configmap: in_runtime_namespace(
                "--sops-vault-configmap",
                &args.sops_vault_configmap,
            )?
            .map(|(namespace, name)| VaultConfigMap { namespace, name }),
            default_decryption_service_account: Some(
                args.default_decryption_service_account.clone(),
            )
            .filter(|s| !s.is_empty()),
            default_kubeconfig_service_account: Some(
                args.default_kubeconfig_service_account.clone(),
            )
            .filter(|s| !s.is_empty()),
        },
        status_writes: StatusWrites::default(),
        interrupts: Interrupts::new(gates.enabled(Gate::CancelHealthCheckOnNewRevision)),
        drift,
        builds: BuildMemo::default(),
    });
    if !args.sops_vault_configmap.is_empty()
        && !args.default_service_account.is_empty()
        && args.default_decryption_service_account.is_empty()
    {
        // Multi-tenant lockdown, yet every Kustomization without a decryption ServiceAccount
        // would log in to Vault with the controller's own role.
        tracing::warn!(
            "--sops-vault-configmap without --default-decryption-service-account: Kustomizations that name no decryption ServiceAccount log in to the listed Vault instances as the controller's own ServiceAccount; set --default-decryption-service-account so that tenants log in as their own"
        );
    }
    let api: Api<Kustomization> = match args.common.watch_all_namespaces {
        true => Api::all(client.clone()),
        false => Api::namespaced(
            client.clone(),
            &std::env::var("RUNTIME_NAMESPACE")
                .context("--watch-all-namespaces=false needs RUNTIME_NAMESPACE")?,
        ),
    };
    let (objects, store) = watched_objects(api, &args.common.watch_label_selector, |_| {});
    let queues = ctx.metrics.queues.clone();
    queues.watch(CONTROLLER, store_has(store.clone()));
    let watch_queues = queues.clone();
    let interrupts = ctx.interrupts.clone();
    let objects = objects.inspect(move |event| {
        if let Ok(obj) = event {
            let key = object_key(obj);
            interrupts.object_seen(&key, obj.metadata.generation, requested_at(obj).as_deref());
            watch_queues.add(CONTROLLER, &key);
        }
    });
    let mut controller = Controller::for_stream(objects, store.clone())
        .with_config(ControllerConfig::default().concurrency(args.concurrent))
        .trigger_backoff(EachWatchBacksOff)
        .watches_stream(
            trigger_watch(
                source_api::<OCIRepository>(&client, &args),
                watcher::Config::default(),
            ),
            referencing(
                store.clone(),
                SourceKind::OciRepository,
                &queues,
                &ctx,
                |o: &OCIRepository| {
                    o.status
                        .as_ref()?
                        .artifact
                        .as_ref()
                        .map(|a| a.revision.clone())
                },
            ),
        )
        .watches_stream(
            trigger_watch(
                source_api::<Bucket>(&client, &args),
                watcher::Config::default(),
            ),
            referencing(
                store.clone(),
                SourceKind::Bucket,
                &queues,
                &ctx,
                |o: &Bucket| {
                    o.status
                        .as_ref()?
                        .artifact
                        .as_ref()
                        .map(|a| a.revision.clone())
                },
            ),
        );
    for kind in [SourceKind::GitRepository, SourceKind::ExternalArtifact] {
        // Flux's own source kinds are watched when their CRDs are installed.
        if let Some(api) = dynamic_source_api(&client, &args, kind).await {
            controller = controller.watches_stream_with(
                trigger_watch(api, watcher::Config::default()),
                referencing_dynamic(store.clone(), kind, &queues, &ctx),
                source_resource(kind),
            );
        }
    }
    if !gates.enabled(Gate::DisableConfigWatchers) {
        controller = controller
            .watches_stream(
                trigger_watch(config_api::<ConfigMap>(&client, &args), config_watch(&args)),
                substituting(store.clone(), SubstituteKind::ConfigMap, &queues, &ctx),
            )
            .watches_stream(
                trigger_watch(config_api::<Secret>(&client, &args), config_watch(&args)),
                substituting(store.clone(), SubstituteKind::Secret, &queues, &ctx),
            );
    }
    // An edited or deleted object goes back as applied within seconds, not at the interval.
    let drift_queues = queues.clone();
    let controller = controller
        .reconcile_on(drifted.inspect(move |r| drift_queues.add(CONTROLLER, &queue_key(r))));
    ready.store(true, Ordering::Relaxed);
    tracing::info!(concurrent = args.concurrent, kustomize = ?kustomize, "starting Kustomization controller");
    let run = controller
        .shutdown_on_signal()
        .run(
            reconcile::<Kustomization>,
            error_policy::<Kustomization>,
            ctx,
        )
        .for_each(|result| async move { log_result(result) });
    leader::run_while_leading(
        leadership,
        run,
        args.common.leader_election_release_on_cancel,
    )
    .await?;
    tracing::info!("apply-controller stopped");
    Ok(())
}

/// Sources are watched where Kustomizations may reference them: everywhere, unless the
/// controller watches one namespace and refuses cross-namespace references.
fn source_api<K>(client: &Client, args: &ApplyControllerArgs) -> Api<K>
where
    K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>,
{
    everywhere_or_own(
        client,
        args.common.watch_all_namespaces || !args.no_cross_namespace_refs,
    )
}

/// Every namespace, or only the controller's own (`RUNTIME_NAMESPACE`).
fn everywhere_or_own<K>(client: &Client, everywhere: bool) -> Api<K>
where
    K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>,
{
    match everywhere {
        true => Api::all(client.clone()),
        false => Api::namespaced(
            client.clone(),
            &std::env::var("RUNTIME_NAMESPACE").unwrap_or_default(),
        ),
    }
}

async fn dynamic_source_api(
    client: &Client,
    args: &ApplyControllerArgs,
    kind: SourceKind,
) -> Option<Api<DynamicObject>> {
    let resource = source_resource(kind);
    let gvk = kube::core::GroupVersionKind::gvk(&resource.group, &resource.version, &resource.kind);
    kube::discovery::pinned_kind(client, &gvk).await.ok()?;
    Some(
        match args.common.watch_all_namespaces || !args.no_cross_namespace_refs {
            true => Api::all_with(client.clone(), &resource),
            false => Api::namespaced_with(
                client.clone(),
                &std::env::var("RUNTIME_NAMESPACE").unwrap_or_default(),
                &resource,
            ),
        },
    )
}

/// The labelled ConfigMaps or Secrets, metadata only: their data is read when a reconcile
/// needs it, never kept in memory here.
fn config_api<K>(client: &Client, args: &ApplyControllerArgs) -> Api<PartialObjectMeta<K>>
where
    K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>,
{
    everywhere_or_own(client, args.common.watch_all_namespaces)
}

/// `--watch-configs-label-selector`, applied by the API server; empty selects all.
fn config_watch(args: &ApplyControllerArgs) -> watcher::Config {
    match args.watch_configs_label_selector.as_str() {
        "" => watcher::Config::default(),
        selector => watcher::Config::default().labels(selector),
    }
}

/// The Kustomizations whose `postBuild.substituteFrom` names this ConfigMap or Secret
/// (optional references included: their creation matters too).
fn substituting<K: kube::Resource<DynamicType = ()>>(
    store: Store<Kustomization>,
    kind: SubstituteKind,
    queues: &WorkQueues,
    ctx: &ApplyContext,
) -> impl Fn(PartialObjectMeta<K>) -> Vec<QueueRef<Kustomization>> + Send + Sync + Clone + 'static {
    let queues = queues.clone();
    let interrupts = ctx.interrupts.clone();
    move |config: PartialObjectMeta<K>| {
        let (ns, name) = (config.namespace().unwrap_or_default(), config.name_any());
        let refs = store
            .state()
            .iter()
            .filter(|k| k.namespace().as_deref() == Some(ns.as_str()))
            .filter(|k| {
                k.spec
                    .post_build
                    .as_ref()
                    .and_then(|p| p.substitute_from.as_ref())
                    .is_some_and(|from| from.iter().any(|r| r.kind == kind && r.name == name))
            })
            .map(|k| QueueRef::from_obj(k.as_ref()))
            .collect();
        let by = format!("{}/{ns}/{name}", kind_name(kind));
        for r in &refs {
            interrupts.config_changed(&queue_key(r), &by);
        }
        queued(&queues, refs)
    }
}

fn kind_name(kind: SubstituteKind) -> &'static str {
    match kind {
        SubstituteKind::ConfigMap => "ConfigMap",
        SubstituteKind::Secret => "Secret",
    }
}

fn queue_key(r: &QueueRef<Kustomization>) -> String {
    format!("{}/{}", r.namespace.as_deref().unwrap_or_default(), r.name)
}

/// What an event of one source kind leads to: the passes of its users that apply another
/// revision are interrupted, and those its revision asks for (`awaiting`) are queued.
#[derive(Clone)]
struct SourceEvents {
    store: Store<Kustomization>,
    kind: SourceKind,
    queues: WorkQueues,
    interrupts: Interrupts,
}

impl SourceEvents {
    fn new(
        store: Store<Kustomization>,
        kind: SourceKind,
        queues: &WorkQueues,
        ctx: &ApplyContext,
    ) -> Self {
        SourceEvents {
            store,
            kind,
            queues: queues.clone(),
            interrupts: ctx.interrupts.clone(),
        }
    }

    /// Source `kind_name` `ns/name` was seen with artifact `revision`.
    fn seen(
        &self,
        kind_name: &str,
        (ns, name): (&str, &str),
        revision: Option<&str>,
    ) -> Vec<QueueRef<Kustomization>> {
        let users = users(&self.store, self.kind, ns, name);
        let by = format!("{kind_name}/{ns}/{name}");
        for k in &users {
            self.interrupts
                .source_seen(&object_key(k.as_ref()), &by, revision);
        }
        queued(&self.queues, awaiting(&users, revision))
    }
}

fn referencing<K: kube::Resource<DynamicType = ()> + 'static>(
    store: Store<Kustomization>,
    kind: SourceKind,
    queues: &WorkQueues,
    ctx: &ApplyContext,
    artifact_revision: fn(&K) -> Option<String>,
) -> impl Fn(K) -> Vec<QueueRef<Kustomization>> + Send + Sync + Clone + 'static {
    let events = SourceEvents::new(store, kind, queues, ctx);
    move |source: K| {
        let (ns, name) = (source.namespace().unwrap_or_default(), source.name_any());
        let revision = artifact_revision(&source);
        events.seen(&K::kind(&()), (&ns, &name), revision.as_deref())
    }
}

fn referencing_dynamic(
    store: Store<Kustomization>,
    kind: SourceKind,
    queues: &WorkQueues,
    ctx: &ApplyContext,
) -> impl Fn(DynamicObject) -> Vec<QueueRef<Kustomization>> + Send + Sync + Clone + 'static {
    let events = SourceEvents::new(store, kind, queues, ctx);
    move |source: DynamicObject| {
        let (ns, name) = (source.namespace().unwrap_or_default(), source.name_any());
        let revision = source
            .data
            .pointer("/status/artifact/revision")
            .and_then(serde_json::Value::as_str);
        events.seen(&source_resource(kind).kind, (&ns, &name), revision)
    }
}

/// The Kustomizations a change triggers, counted into the work queue.
fn queued(queues: &WorkQueues, refs: Vec<QueueRef<Kustomization>>) -> Vec<QueueRef<Kustomization>> {
    for r in &refs {
        queues.add(CONTROLLER, &queue_key(r));
    }
    refs
}

/// The Kustomizations whose `sourceRef` names this source.
fn users(
    store: &Store<Kustomization>,
    kind: SourceKind,
    ns: &str,
    name: &str,
) -> Vec<Arc<Kustomization>> {
    store
        .state()
        .into_iter()
        .filter(|k| {
            let r = &k.spec.source_ref;
            r.kind == kind
                && r.name == name
                && r.namespace
                    .clone()
                    .unwrap_or_else(|| k.namespace().unwrap_or_default())
                    == ns
        })
        .collect()
}

/// Of a source's users, those its artifact `revision` asks to reconcile, as Flux's
/// kustomize-controller enqueues them: none while the source has no artifact, and none that
/// already attempted this revision and are Ready or Reconciling (one that failed on it is
/// tried again). Every event of a source (its status writes, a relist of the watch) reaches
/// here, not only a new revision: without this, each re-ran every Kustomization that uses the
/// source (an event during 1,000 first applies re-ran the 352 already done).
fn awaiting(users: &[Arc<Kustomization>], revision: Option<&str>) -> Vec<QueueRef<Kustomization>> {
    let Some(revision) = revision else {
        return Vec::new();
    };
    users
        .iter()
        .filter(|k| !settled_on(k, revision))
        .map(|k| QueueRef::from_obj(k.as_ref()))
        .collect()
}

/// The Kustomization attempted `revision` and is Ready or still Reconciling it.
fn settled_on(k: &Kustomization, revision: &str) -> bool {
    k.status.as_ref().is_some_and(|s| {
        s.last_attempted_revision.as_deref() == Some(revision)
            && s.conditions.iter().any(|c| {
                (c.type_ == READY || c.type_ == RECONCILING)
                    && c.status == crate::api::ConditionStatus::True
            })
    })
}

/// An object a flag names in the controller's own namespace: (namespace, name).
fn in_runtime_namespace(flag: &str, name: &str) -> anyhow::Result<Option<(String, String)>> {
    if name.is_empty() {
        return Ok(None);
    }
    let ns = std::env::var("RUNTIME_NAMESPACE").with_context(|| {
        format!(
            "{flag} needs RUNTIME_NAMESPACE (what it names lives in the controller's namespace)"
        )
    })?;
    Ok(Some((ns, name.to_string())))
}

/// The first executable file `name` in the directories of `path` (a `PATH` value), as a shell
/// would find it.
fn executable_on_path(name: &str, path: &std::ffi::OsStr) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    std::env::split_paths(path)
        .filter(|dir| !dir.as_os_str().is_empty())
        .map(|dir| dir.join(name))
        .find(|candidate| {
            std::fs::metadata(candidate)
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

#[cfg(test)]
mod path_tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn kustomize_is_the_first_executable_of_that_name_on_path() {
        let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
        let plain = dirs[0].path().join("kustomize");
        std::fs::write(&plain, "not executable").unwrap();
        std::fs::create_dir(dirs[1].path().join("kustomize")).unwrap();
        let binary = dirs[2].path().join("kustomize");
        std::fs::write(&binary, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&binary, std::fs::Permissions::from_mode(0o755)).unwrap();
        let path = std::env::join_paths(dirs.iter().map(|d| d.path())).unwrap();
        assert_eq!(executable_on_path("kustomize", &path), Some(binary));
        let without = std::env::join_paths(dirs[..2].iter().map(|d| d.path())).unwrap();
        assert_eq!(executable_on_path("kustomize", &without), None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A Kustomization of OCIRepository `repo`; with `attempted`, the revision it last
    /// attempted and its Ready status.
    fn kustomization(name: &str, attempted: Option<(&str, &str)>) -> Arc<Kustomization> {
        let mut k: Kustomization = serde_json::from_value(serde_json::json!({
            "apiVersion": "kustomize.toolkit.fluxcd.io/v1", "kind": "Kustomization",
            "metadata": {"name": name, "namespace": "apps"},
            "spec": {"interval": "10m", "prune": true,
                     "sourceRef": {"kind": "OCIRepository", "name": "repo"}},
        }))
        .unwrap();
        if let Some((revision, ready)) = attempted {
            let condition = serde_json::json!({"type": "Ready", "status": ready,
                "reason": "Any", "message": "", "lastTransitionTime": "2026-12-05T00:00:00Z"});
            k.status = Some(
                serde_json::from_value(serde_json::json!({
                    "lastAttemptedRevision": revision, "conditions": [condition],
                }))
                .unwrap(),
            );
        }
        Arc::new(k)
    }

    fn names(refs: Vec<QueueRef<Kustomization>>) -> Vec<String> {
        refs.into_iter().map(|r| r.name).collect()
    }

    #[test]
    fn a_source_event_reconciles_only_the_users_not_settled_on_its_revision() {
        let users = [
            kustomization("new", None),
            kustomization("behind", Some(("latest@sha256:aaa", "True"))),
            kustomization("done", Some(("latest@sha256:bbb", "True"))),
            kustomization("failed", Some(("latest@sha256:bbb", "False"))),
        ];
        assert_eq!(
            names(awaiting(&users, Some("latest@sha256:bbb"))),
            ["new", "behind", "failed"]
        );
        assert_eq!(
            names(awaiting(&users, Some("latest@sha256:ccc"))),
            ["new", "behind", "done", "failed"]
        );
    }

    #[test]
    fn a_source_without_an_artifact_reconciles_none_of_its_users() {
        let users = [
            kustomization("new", None),
            kustomization("behind", Some(("a", "True"))),
        ];
        assert!(awaiting(&users, None).is_empty());
    }
}
