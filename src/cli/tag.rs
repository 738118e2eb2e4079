//! `driftless artifact tag`: more tags for an artifact, without pulling its layers.

use clap::Args;

use super::registry::{RegistryArgs, Target};

#[derive(Args, Debug)]
pub struct TagArgs {
    /// The artifact: `oci://<host>/<repository>:<tag>` or `...@sha256:<hex>`.
    pub url: String,
    /// The tag to add; repeatable.
    #[arg(long = "tag", short = 't', required = true)]
    pub tags: Vec<String>,
}

pub async fn run(args: TagArgs, registry: &RegistryArgs) -> anyhow::Result<()> {
    let target = Target::parse(&args.url)?;
    let client = registry.client(&target.url).await?;
    let manifest = client
        .get_manifest(&target.url.repository, target.reference()?)
        .await?;
    for tag in &args.tags {
        client
            .put_manifest(
                &target.url.repository,
                tag,
                &manifest.media_type,
                manifest.bytes.clone(),
            )
            .await?;
        println!("oci://{}:{tag}@{}", target.url, manifest.digest);
    }
    Ok(())
}
