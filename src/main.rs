//! The driftless binary: parses the command line and runs a controller or an `artifact` command.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use driftless::cli::ArtifactCommand;

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
    SourceController(driftless::source::controller::SourceControllerArgs),
    /// Reconcile Kustomization objects: fetch, build, apply, prune, check health.
    ApplyController(driftless::apply::controller::ApplyControllerArgs),
    /// The CI side: push, pull, tag, list and diff OCI artifacts.
    Artifact {
        #[command(subcommand)]
        command: ArtifactCommand,
        #[command(flatten)]
        registry: driftless::cli::registry::RegistryArgs,
    },
    /// Print the CustomResourceDefinitions, or write one file per CRD into a directory.
    Crds {
        /// Write `<group>_<plural>.yaml` files into this directory instead of printing.
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    init_logging(&cli.log_level, &cli.log_encoding)?;
    match cli.command {
        Command::Crds { dir } => print_or_write_crds(dir),
        Command::SourceController(args) => {
            runtime()?.block_on(driftless::source::controller::run(args))
        }
        Command::ApplyController(args) => {
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
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
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

fn print_or_write_crds(dir: Option<PathBuf>) -> Result<()> {
    let crds = driftless::api::crds::all();
    match dir {
        None => {
            for crd in &crds {
                print!("{}", driftless::api::crds::to_yaml(crd)?);
            }
        }
        Some(dir) => {
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            for crd in &crds {
                let path = dir.join(driftless::api::crds::file_name(crd));
                std::fs::write(&path, driftless::api::crds::to_yaml(crd)?)
                    .with_context(|| format!("writing {}", path.display()))?;
            }
        }
    }
    Ok(())
}
