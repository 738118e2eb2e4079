//! `driftless artifact push`: a directory or file as a Flux OCI artifact, exactly in the format
//! `flux push artifact` writes (config and layer media types, annotations, tarball layout).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use flate2::Compression;
use flate2::write::GzEncoder;

use super::registry::{RegistryArgs, Target};
use crate::artifact::archive::{Modes, write_archive_with_modes};
use crate::artifact::ignore::{EXTENSION_PATTERNS, IgnoreRules, VCS_PATTERNS};
use crate::oci::registry::{Descriptor, ImageManifest, OCI_MANIFEST, RegistryClient};

pub const FLUX_CONFIG_MEDIA_TYPE: &str = "application/vnd.cncf.flux.config.v1+json";
pub const FLUX_LAYER_MEDIA_TYPE: &str = "application/vnd.cncf.flux.content.v1.tar+gzip";
const REPRODUCIBLE_CREATED: &str = "1970-01-01T00:00:00Z";

#[derive(Args, Debug)]
pub struct PushArgs {
    /// Where to push: `oci://<host>/<repository>:<tag>`.
    pub url: String,
    /// The directory or file to package.
    #[arg(long)]
    pub path: PathBuf,
    /// Where the content comes from, e.g. the Git repository URL (`org.opencontainers.image.source`).
    #[arg(long)]
    pub source: String,
    /// The source revision, e.g. `main@sha1:<commit>` (`org.opencontainers.image.revision`).
    #[arg(long)]
    pub revision: String,
    /// Extra manifest annotations, `key=value`; repeatable.
    #[arg(long = "annotations", short = 'a')]
    pub annotations: Vec<String>,
    /// Paths to leave out, in .gitignore syntax (comma separated); replaces the default
    /// VCS and binary-file list.
    #[arg(long, value_delimiter = ',')]
    pub ignore_paths: Option<Vec<String>>,
    /// Fix the created timestamp so identical input always gives an identical digest.
    #[arg(long)]
    pub reproducible: bool,
    /// `json` prints the result for scripts.
    #[arg(long, short = 'o', default_value = "text")]
    pub output: String,
    /// Sign the pushed digest with this cosign private key (`cosign.key`; its password from
    /// COSIGN_PASSWORD), as `cosign sign --key` attaches signatures.
    #[arg(long)]
    pub sign_key: Option<PathBuf>,
}

pub async fn run(args: PushArgs, registry: &RegistryArgs) -> anyhow::Result<()> {
    let target = Target::parse(&args.url)?;
    let tag = target.reference()?.to_string();
    let url = target.url;
    // A bad key or password fails before anything is pushed.
    let key = args
        .sign_key
        .as_deref()
        .map(super::sign::load_key)
        .transpose()?;
    let progress = super::Progress::new();
    progress.step(format!("packaging {}", args.path.display()));
    let layer = build_layer(&args.path, args.ignore_paths.as_deref())
        .with_context(|| format!("packaging {}", args.path.display()))?;
    progress.step(format!(
        "uploading {} to {}",
        super::human_size(layer.len()),
        args.url
    ));
    let created = if args.reproducible {
        REPRODUCIBLE_CREATED.to_string()
    } else {
        crate::util::now_whole_seconds().to_string()
    };
    let annotations = annotations(&args, &created)?;
    let client = registry.client(&url).await?;
    let digest = push_layer(
        &client,
        &url.repository,
        &tag,
        layer,
        FLUX_LAYER_MEDIA_TYPE,
        &created,
        annotations,
    )
    .await
    .with_context(|| format!("pushing to {}", args.url))?;
    let pushed = format!("oci://{url}@{digest}");
    let signature = match &key {
        Some(key) => Some({
            progress.step(format!("signing {pushed}"));
            super::sign::attach_signature(&client, &url.registry, &url.repository, &digest, key)
                .await
                .with_context(|| format!("signing {pushed}"))?
        }),
        None => None,
    };
    if args.output == "json" {
        let out = serde_json::json!({"url": pushed, "repository": url.to_string(), "tag": tag, "digest": digest, "signature": signature});
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!("{pushed}");
    }
    Ok(())
}

/// The layer `flux push artifact` builds: a gzip tarball of the directory (or of the single
/// file), root entry `.`, uid/gid 0, zero times, permission bits preserved.
pub fn build_layer(path: &Path, ignore_paths: Option<&[String]>) -> anyhow::Result<Vec<u8>> {
    let metadata =
        std::fs::metadata(path).with_context(|| format!("reading {}", path.display()))?;
    if metadata.is_file() {
        return single_file_layer(path, &metadata);
    }
    let patterns = match ignore_paths {
        Some(paths) => paths.join("\n"),
        None => VCS_PATTERNS
            .iter()
            .chain(EXTENSION_PATTERNS)
            .copied()
            .collect::<Vec<_>>()
            .join("\n"),
    };
    let rules = IgnoreRules::load(path, Some(&patterns))?;
    Ok(write_archive_with_modes(
        path,
        &rules,
        Vec::new(),
        Modes::Preserved,
    )?)
}

fn single_file_layer(path: &Path, metadata: &std::fs::Metadata) -> anyhow::Result<Vec<u8>> {
    use std::os::unix::fs::PermissionsExt;
    let name = path.file_name().context("the path has no file name")?;
    let mut tar = tar::Builder::new(GzEncoder::new(Vec::new(), Compression::default()));
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_size(metadata.len());
    header.set_mode(metadata.permissions().mode() & 0o777);
    header.set_mtime(0);
    header.set_uid(0);
    header.set_gid(0);
    tar.append_data(&mut header, name, std::fs::File::open(path)?)?;
    Ok(tar.into_inner()?.finish()?)
}

fn annotations(args: &PushArgs, created: &str) -> anyhow::Result<BTreeMap<String, String>> {
    let mut all = BTreeMap::from([
        (
            "org.opencontainers.image.created".to_string(),
            created.to_string(),
        ),
        (
            "org.opencontainers.image.source".to_string(),
            args.source.clone(),
        ),
        (
            "org.opencontainers.image.revision".to_string(),
            args.revision.clone(),
        ),
    ]);
    for kv in &args.annotations {
        let (k, v) = kv
            .split_once('=')
            .with_context(|| format!("annotation '{kv}' is not key=value"))?;
        all.insert(k.to_string(), v.to_string());
    }
    Ok(all)
}

/// Push one layer as a Flux artifact: Flux's config blob and media types, the given layer
/// media type (Flux's content type for `push`; others, e.g. a Helm chart layer, for tests and
/// tools) and manifest annotations. Returns the manifest digest.
pub async fn push_layer(
    client: &RegistryClient,
    repo: &str,
    tag: &str,
    layer: Vec<u8>,
    layer_media_type: &str,
    created: &str,
    annotations: BTreeMap<String, String>,
) -> anyhow::Result<String> {
    let config = serde_json::to_vec(&serde_json::json!({"created": created}))?;
    let descriptor = |media_type: &str, digest: String, size: usize| Descriptor {
        media_type: media_type.into(),
        digest,
        size: size as i64,
        ..Default::default()
    };
    let (config_size, layer_size) = (config.len(), layer.len());
    let config = descriptor(
        FLUX_CONFIG_MEDIA_TYPE,
        client.push_blob(repo, config.into()).await?,
        config_size,
    );
    let layer = descriptor(
        layer_media_type,
        client.push_blob(repo, layer.into()).await?,
        layer_size,
    );
    let manifest = ImageManifest {
        schema_version: 2,
        media_type: Some(OCI_MANIFEST.into()),
        artifact_type: None,
        config,
        layers: vec![layer],
        subject: None,
        annotations: Some(annotations),
    };
    Ok(client
        .put_manifest(
            repo,
            tag,
            OCI_MANIFEST,
            serde_json::to_vec(&manifest)?.into(),
        )
        .await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layers_are_reproducible_and_keep_modes() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("deploy")).unwrap();
        std::fs::write(dir.path().join("deploy/app.yaml"), "kind: ConfigMap\n").unwrap();
        std::fs::write(dir.path().join("run.sh"), "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(
            dir.path().join("run.sh"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        std::fs::create_dir_all(dir.path().join(".git")).unwrap();
        std::fs::write(dir.path().join(".git/HEAD"), "ref").unwrap();
        std::fs::write(dir.path().join("logo.png"), "png").unwrap();
        let a = build_layer(dir.path(), None).unwrap();
        let b = build_layer(dir.path(), None).unwrap();
        assert_eq!(a, b, "same input, same bytes");
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(&a[..]));
        let entries: Vec<(String, u32)> = archive
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.path().unwrap().to_string_lossy().to_string(),
                    e.header().mode().unwrap(),
                )
            })
            .collect();
        let names: Vec<&str> = entries.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [".", "deploy", "deploy/app.yaml", "run.sh"],
            "VCS and binary files are left out"
        );
        assert_eq!(
            entries.iter().find(|(n, _)| n == "run.sh").unwrap().1,
            0o755
        );
    }
}
