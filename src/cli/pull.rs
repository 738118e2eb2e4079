//! `driftless artifact pull`: an artifact's content into a directory, safely.

use std::path::PathBuf;

use clap::Args;

use super::fetch::{annotation, pull_into};
use super::registry::{RegistryArgs, Target};
use crate::artifact::extract::ExtractLimits;

#[derive(Args, Debug)]
pub struct PullArgs {
    /// What to pull: `oci://<host>/<repository>:<tag>` or `...@sha256:<hex>`.
    pub url: String,
    /// Directory to unpack into (created if missing).
    #[arg(long, short = 'o')]
    pub output: PathBuf,
    /// Most bytes the artifact may unpack to.
    #[arg(long, default_value_t = 1 << 30)]
    pub max_bytes: u64,
    /// Most files the artifact may unpack to.
    #[arg(long, default_value_t = 100_000)]
    pub max_files: u64,
}

pub async fn run(args: PullArgs, registry: &RegistryArgs) -> anyhow::Result<()> {
    let target = Target::parse(&args.url)?;
    let client = registry.client(&target.url).await?;
    let limits = ExtractLimits {
        max_bytes: args.max_bytes,
        max_files: args.max_files,
        // Run by a person or a CI job, who can interrupt it.
        max_duration: std::time::Duration::MAX,
    };
    let progress = super::Progress::new();
    progress.step(format!("pulling {}", args.url));
    let pulled = pull_into(&client, &target, &args.output, limits).await?;
    progress.step(format!("extracted to {}", args.output.display()));
    println!(
        "source:   {}",
        annotation(&pulled.manifest, "org.opencontainers.image.source")
    );
    println!(
        "revision: {}",
        annotation(&pulled.manifest, "org.opencontainers.image.revision")
    );
    println!("digest:   oci://{}@{}", target.url, pulled.digest);
    println!("output:   {}", args.output.display());
    Ok(())
}
