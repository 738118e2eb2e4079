//! `driftless artifact list`: a repository's tags with the source and revision they carry.

use clap::Args;

use super::fetch::annotation;
use super::registry::{RegistryArgs, Target};
use crate::oci::pull::image_manifest;
use crate::oci::semver::{Constraint, parse_version};

#[derive(Args, Debug)]
pub struct ListArgs {
    /// The repository: `oci://<host>/<repository>`.
    pub url: String,
    /// Only tags that are versions within this semver range.
    #[arg(long)]
    pub semver: Option<String>,
    /// `text` or `json`.
    #[arg(long, short = 'o', default_value = "text")]
    pub output: String,
}

#[derive(serde::Serialize)]
struct Row {
    url: String,
    digest: String,
    source: String,
    revision: String,
}

pub async fn run(args: ListArgs, registry: &RegistryArgs) -> anyhow::Result<()> {
    let target = Target::parse(&args.url)?;
    let client = registry.client(&target.url).await?;
    let constraint = args.semver.as_deref().map(Constraint::parse).transpose()?;
    let mut tags = client.list_tags(&target.url.repository).await?;
    tags.sort();
    let mut rows = Vec::new();
    for tag in tags {
        if let Some(c) = &constraint
            && !parse_version(&tag).is_some_and(|v| c.matches(&v))
        {
            continue;
        }
        let digest = client.resolve_digest(&target.url.repository, &tag).await?;
        let manifest = image_manifest(&client, &target.url.repository, &digest).await?;
        rows.push(Row {
            url: format!("oci://{}:{tag}", target.url),
            digest,
            source: annotation(&manifest, "org.opencontainers.image.source").to_string(),
            revision: annotation(&manifest, "org.opencontainers.image.revision").to_string(),
        });
    }
    if args.output == "json" {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    println!("ARTIFACT\tDIGEST\tSOURCE\tREVISION");
    for r in rows {
        println!("{}\t{}\t{}\t{}", r.url, r.digest, r.source, r.revision);
    }
    Ok(())
}
