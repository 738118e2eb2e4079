//! The driftless binary: parses the command line and runs a controller or an `artifact` command.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use driftless::cli::ArtifactCommand;
use driftless::controller::flags;

/// driftless: Gitless GitOps for Kubernetes, wire-compatible with Flux.
#[derive(Parser)]
#[command(name = "driftless", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log verbosity: error, warn, info, debug or trace.
    #[arg(long, global = true, default_value = "info")]
    log_level: String,
    /// Log format: json or console.
    #[arg(long, global = true, default_value = "json")]
    log_encoding: String,
}

#[derive(Subcommand)]
enum Command {
    /// Reconcile OCIRepository and Bucket objects and serve their artifacts over HTTP.
    // A flag given twice takes the last value, as Flux's flags do (kustomize patches that append
    // `--log-level=debug` to a Deployment's args rely on it).
    #[command(args_override_self = true)]
    SourceController(driftless::source::controller::SourceControllerArgs),
    /// Reconcile Kustomization objects: fetch, build, apply, prune, check health.
    #[command(args_override_self = true)]
    ApplyController(driftless::apply::controller::ApplyControllerArgs),
    /// The CI side: push, pull, tag, list and diff OCI artifacts.
    Artifact {
        #[command(subcommand)]
        command: ArtifactCommand,
        #[command(flatten)]
        registry: driftless::cli::registry::RegistryArgs,
    },
    /// The sigstore-conformance client protocol (verification), for the conformance suite.
    #[command(hide = true)]
    SigstoreConformance {
        #[command(subcommand)]
        command: driftless::cli::conformance::ConformanceCommand,
    },
    /// Print the CustomResourceDefinitions, or write one file per CRD into a directory.
    Crds {
        /// Write `<group>_<plural>.yaml` files into this directory instead of printing.
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Also Flux's other source CRDs (GitRepository, HelmRepository, HelmChart,
        /// ExternalArtifact; not reconciled by driftless), for a cluster without Flux's
        /// source-controller whose Flux kustomize- or helm-controller needs them to start.
        #[arg(long)]
        flux_sources: bool,
    },
}

/// The variables Flux's controllers read flag defaults from, used only when non-empty.
const FLAG_ENVIRONMENT: &[&str] = &[
    "METRICS_ADDR",
    "EVENTS_ADDR",
    "STORAGE_PATH",
    "STORAGE_ADDRESS",
    "STORAGE_ADV_ADDR",
    "KUSTOMIZE_PATH",
];

fn main() -> Result<()> {
    flags::drop_empty_env(FLAG_ENVIRONMENT);
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if let Some(refusal) = flags::refused_flag(&args) {
        eprintln!("error: {refusal}");
        // pflag's exit code for a flag it does not take.
        std::process::exit(2);
    }
    let cli = Cli::parse_from(args);
    init_logging(&cli.log_level, &cli.log_encoding)?;
    match cli.command {
        Command::Crds { dir, flux_sources } => print_or_write_crds(dir, flux_sources),
        Command::SigstoreConformance { command } => driftless::cli::conformance::run(command),
        Command::SourceController(args) => {
            driftless::controller::tmp::use_private_temp_root("source-controller");
            runtime()?.block_on(driftless::source::controller::run(args))
        }
        Command::ApplyController(args) => {
            driftless::controller::tmp::use_private_temp_root("apply-controller");
            runtime()?.block_on(driftless::apply::controller::run(args))
        }
        Command::Artifact { command, registry } => {
            let ok = runtime()?.block_on(driftless::cli::run(command, &registry))?;
            // `diff` reports a difference with exit code 1, as diff(1) does.
            if !ok {
                std::process::exit(1);
            }
            Ok(())
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    limit_malloc_arenas();
    // File-system work (extraction, archiving, fsync, GC) runs on blocking threads; a few are
    // enough on the small machines controllers get, and each one costs memory.
    // 8 MiB stacks (reserved, touched only as used): a request to a remote cluster runs its
    // token fetch, itself a request to the local API server, inside the remote client's
    // request; the default 2 MiB overflowed there in debug builds.
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_stack_size(8 << 20)
        .max_blocking_threads(8)
        .build()?)
}

/// glibc gives every thread that allocates its own arena and keeps freed memory in each; two
/// arenas keep the controller's resident memory close to what it actually uses.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only adjusts allocator tuning; it is called before any other thread starts.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

fn init_logging(level: &str, encoding: &str) -> Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| {
            tracing_subscriber::EnvFilter::try_new(format!(
                "{level},kube=warn,hyper=warn,tower=warn"
            ))
        })
        .with_context(|| format!("invalid --log-level '{level}'"))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match encoding {
        "json" => builder.json().init(),
        "console" => builder.init(),
        other => bail!("invalid --log-encoding '{other}': use json or console"),
    }
    Ok(())
}

fn print_or_write_crds(dir: Option<PathBuf>, flux_sources: bool) -> Result<()> {
    use driftless::api::crds;
    let mut files: Vec<(String, String)> = Vec::new();
    for crd in &crds::all() {
        files.push((crds::file_name(crd), crds::to_yaml(crd)?));
    }
    if flux_sources {
        files.extend(
            crds::FLUX_SOURCES
                .iter()
                .map(|(name, yaml)| (name.to_string(), yaml.to_string())),
        );
    }
    match dir {
        None => files.iter().for_each(|(_, yaml)| print!("{yaml}")),
        Some(dir) => {
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            for (name, yaml) in &files {
                let path = dir.join(name);
                std::fs::write(&path, yaml)
                    .with_context(|| format!("writing {}", path.display()))?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses as `main` does: a refused Flux flag first, then clap.
    fn parse(args: &[&str]) -> Result<Cli, String> {
        let args: Vec<std::ffi::OsString> = std::iter::once("driftless")
            .chain(args.iter().copied())
            .map(Into::into)
            .collect();
        if let Some(refusal) = flags::refused_flag(&args) {
            return Err(refusal);
        }
        Cli::try_parse_from(args).map_err(|e| e.to_string())
    }

    /// The error `parse` gives; a test failure when the arguments are accepted.
    fn refusal(args: &[&str]) -> String {
        match parse(args) {
            Ok(_) => panic!("accepted: {args:?}"),
            Err(e) => e,
        }
    }

    fn source(args: &[&str]) -> driftless::source::controller::SourceControllerArgs {
        let mut all = vec!["source-controller"];
        all.extend(args);
        match parse(&all).unwrap().command {
            Command::SourceController(a) => a,
            _ => unreachable!(),
        }
    }

    fn apply(args: &[&str]) -> driftless::apply::controller::ApplyControllerArgs {
        let mut all = vec!["apply-controller"];
        all.extend(args);
        match parse(&all).unwrap().command {
            Command::ApplyController(a) => a,
            _ => unreachable!(),
        }
    }

    /// Every flag of Flux source-controller v1.10.1 (its `main.go` and the fluxcd/pkg option
    /// sets it binds), with a value Flux would take.
    const FLUX_SOURCE_FLAGS: &[&str] = &[
        "--metrics-addr=:8080",
        "--events-addr=http://notification-controller/",
        "--health-addr=:9440",
        "--concurrent=2",
        "--requeue-dependency=30s",
        "--helm-index-max-size=52428800",
        "--helm-chart-max-size=10485760",
        "--helm-chart-file-max-size=5242880",
        "--helm-cache-max-size=0",
        "--helm-cache-ttl=15m",
        "--helm-cache-purge-interval=1m",
        "--ssh-kex-algos=curve25519-sha256",
        "--ssh-hostkey-algos=ssh-ed25519",
        "--default-service-account=flux",
        "--authorized-artifact-client-spiffe-id=spiffe://a/b",
        "--authorized-event-server-spiffe-id=spiffe://a/b",
        "--spiffe-broker-endpoint=unix:///run/broker.sock",
        "--spiffe-broker-id=spiffe://a/b",
        "--storage-path=/data",
        "--storage-addr=:9090",
        "--storage-adv-addr=source-controller.flux-system.svc.cluster.local.",
        "--artifact-retention-ttl=1m0s",
        "--artifact-retention-records=2",
        "--artifact-digest-algo=sha256",
        "--kube-api-qps=50",
        "--kube-api-burst=300",
        "--log-encoding=json",
        "--log-level=info",
        "--enable-leader-election=true",
        "--leader-election-release-on-cancel=true",
        "--leader-election-lease-duration=35s",
        "--leader-election-renew-deadline=30s",
        "--leader-election-retry-period=5s",
        "--min-retry-delay=750ms",
        "--max-retry-delay=15m0s",
        "--feature-gates=CacheSecretsAndConfigMaps=false",
        "--watch-all-namespaces=true",
        "--watch-label-selector=sharding.fluxcd.io/key=driftless",
        "--watch-configs-label-selector=reconcile.fluxcd.io/watch=Enabled",
        "--interval-jitter-percentage=5",
        "--token-cache-max-size=100",
        "--token-cache-max-duration=1h0m0s",
    ];

    /// Every flag of Flux kustomize-controller v1.10.1, likewise.
    const FLUX_APPLY_FLAGS: &[&str] = &[
        "--metrics-addr=:8080",
        "--events-addr=http://notification-controller/",
        "--health-addr=:9440",
        "--concurrent=4",
        "--concurrent-ssa=4",
        "--requeue-dependency=30s",
        "--no-remote-bases=true",
        "--http-retry=9",
        "--default-service-account=flux",
        "--default-decryption-service-account=flux",
        "--default-kubeconfig-service-account=flux",
        "--sops-age-secret=sops-age",
        "--sops-vault-configmap=vault",
        "--override-manager=helm",
        "--override-manager-before-dry-run=helm",
        "--custom-apply-stage-kinds=example.com/Thing",
        "--authorized-artifact-server-spiffe-id=spiffe://a/b",
        "--authorized-event-server-spiffe-id=spiffe://a/b",
        "--spiffe-broker-endpoint=unix:///run/broker.sock",
        "--spiffe-broker-id=spiffe://a/b",
        "--kube-api-qps=50",
        "--kube-api-burst=300",
        "--log-encoding=json",
        "--log-level=info",
        "--enable-leader-election=true",
        "--leader-election-release-on-cancel=true",
        "--leader-election-lease-duration=35s",
        "--leader-election-renew-deadline=30s",
        "--leader-election-retry-period=5s",
        "--no-cross-namespace-refs=true",
        "--insecure-kubeconfig-exec=false",
        "--insecure-kubeconfig-tls=false",
        "--min-retry-delay=750ms",
        "--max-retry-delay=15m0s",
        "--feature-gates=StrictPostBuildSubstitutions=true",
        "--watch-all-namespaces=true",
        "--watch-label-selector=sharding.fluxcd.io/key=driftless",
        "--watch-configs-label-selector=reconcile.fluxcd.io/watch=Enabled",
        "--interval-jitter-percentage=5",
        "--token-cache-max-size=100",
        "--token-cache-max-duration=1h0m0s",
    ];

    /// Each Flux flag is taken or refused by name with a reason, never a bare clap error.
    fn each_flag_is_taken_or_refused(controller: &str, flux_flags: &[&str]) -> Vec<String> {
        let mut refused = Vec::new();
        for flag in flux_flags {
            match parse(&[controller, flag]) {
                Ok(_) => {}
                Err(e) => {
                    let name = flag.split_once('=').map_or(*flag, |(n, _)| n);
                    assert!(
                        e.contains(&format!("flag {name} is not supported: ")),
                        "{controller} {flag}: {e}"
                    );
                    refused.push(name.to_string());
                }
            }
        }
        refused
    }

    #[test]
    fn every_flux_source_controller_flag_is_taken_or_refused_by_name() {
        let refused = each_flag_is_taken_or_refused("source-controller", FLUX_SOURCE_FLAGS);
        assert_eq!(
            refused.len(),
            flags::SOURCE_REFUSED.len() + flags::SHARED_REFUSED.len(),
            "{refused:?}"
        );
    }

    #[test]
    fn every_flux_kustomize_controller_flag_is_taken_or_refused_by_name() {
        let refused = each_flag_is_taken_or_refused("apply-controller", FLUX_APPLY_FLAGS);
        assert_eq!(
            refused.len(),
            flags::APPLY_REFUSED.len() + flags::SHARED_REFUSED.len(),
            "{refused:?}"
        );
    }

    #[test]
    fn booleans_take_every_form_flux_takes() {
        assert!(!source(&[]).common.enable_leader_election);
        assert!(
            source(&["--enable-leader-election"])
                .common
                .enable_leader_election
        );
        assert!(
            source(&["--enable-leader-election=True"])
                .common
                .enable_leader_election
        );
        assert!(
            !source(&["--enable-leader-election=false"])
                .common
                .enable_leader_election
        );
        assert!(
            !source(&["--watch-all-namespaces=0"])
                .common
                .watch_all_namespaces
        );
        assert!(apply(&["--no-cross-namespace-refs=true"]).no_cross_namespace_refs);
        assert!(apply(&["--no-cross-namespace-refs"]).no_cross_namespace_refs);
        assert!(!apply(&["--no-cross-namespace-refs=F"]).no_cross_namespace_refs);
        // pflag would set the flag to true and drop `false`; driftless refuses the ambiguity.
        assert!(parse(&["source-controller", "--watch-all-namespaces", "false"]).is_err());
        assert!(parse(&["source-controller", "--enable-leader-election=yes"]).is_err());
    }

    #[test]
    fn the_last_occurrence_of_a_flag_wins_and_gates_accumulate() {
        let args = source(&["--concurrent=4", "--concurrent=0x10", "--log-level=debug"]);
        assert_eq!(args.concurrent, 16);
        let args = apply(&[
            "--feature-gates=StrictPostBuildSubstitutions=false",
            "--feature-gates=CacheSecretsAndConfigMaps=true",
            "--enable-leader-election=true",
            "--enable-leader-election=false",
        ]);
        assert_eq!(args.feature_gates.len(), 2);
        assert!(!args.common.enable_leader_election);
    }

    #[test]
    fn flux_default_arguments_start_both_controllers() {
        // The arguments of Flux's own Deployments (flux2 manifests), verbatim.
        parse(&[
            "source-controller",
            "--events-addr=http://notification-controller.flux-system.svc.cluster.local./",
            "--watch-all-namespaces=true",
            "--log-level=info",
            "--log-encoding=json",
            "--enable-leader-election",
            "--storage-path=/data",
            "--storage-adv-addr=source-controller.$(RUNTIME_NAMESPACE).svc.cluster.local.",
        ])
        .unwrap();
        parse(&[
            "apply-controller",
            "--events-addr=http://notification-controller.flux-system.svc.cluster.local./",
            "--watch-all-namespaces=true",
            "--log-level=info",
            "--log-encoding=json",
            "--enable-leader-election",
        ])
        .unwrap();
    }

    #[test]
    fn only_sha256_artifacts_and_no_remote_bases_are_offered() {
        assert!(
            refusal(&["source-controller", "--artifact-digest-algo=sha512"]).contains("sha256")
        );
        assert!(apply(&["--no-remote-bases"]).no_remote_bases);
        assert!(
            refusal(&["apply-controller", "--no-remote-bases=false"])
                .contains("never fetches remote kustomize bases")
        );
    }
}
