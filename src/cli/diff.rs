//! `driftless artifact diff`: a local directory against an artifact (file by file) or one artifact
//! against another (object by object: which Kubernetes objects were added, removed or changed, with
//! a unified YAML diff of each change), exiting 1 when they differ.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use serde_json::Value;

use super::fetch::pull_into;
use super::push::build_layer;
use super::registry::{RegistryArgs, Target};
use crate::apply::yaml;
use crate::artifact::extract::{ExtractLimits, extract_tar_gz};

#[derive(Args, Debug)]
pub struct DiffArgs {
    /// The artifact: `oci://<host>/<repository>:<tag>` or `...@sha256:<hex>`.
    pub url: String,
    /// A second artifact to compare with, object by object.
    pub other: Option<String>,
    /// A local directory to compare with the artifact, file by file.
    #[arg(long, conflicts_with = "other")]
    pub path: Option<PathBuf>,
    /// With --path: paths to leave out, as `push` does.
    #[arg(long, value_delimiter = ',')]
    pub ignore_paths: Option<Vec<String>>,
    /// `text` or `json`.
    #[arg(long, short = 'o', default_value = "text")]
    pub output: String,
}

/// What differs between two sides.
#[derive(Debug, Default, serde::Serialize, PartialEq)]
pub struct Difference {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub changed: Vec<Change>,
}

#[derive(Debug, serde::Serialize, PartialEq)]
pub struct Change {
    pub id: String,
    pub diff: String,
}

impl Difference {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }
}

/// Returns whether the two sides differ.
pub async fn run(args: DiffArgs, registry: &RegistryArgs) -> anyhow::Result<bool> {
    let limits = ExtractLimits {
        max_bytes: 1 << 30,
        max_files: 100_000,
        // Run by a person or a CI job, who can interrupt it.
        max_duration: std::time::Duration::MAX,
    };
    let a = Target::parse(&args.url)?;
    let work = tempfile::tempdir()?;
    let (left, right) = (work.path().join("a"), work.path().join("b"));
    pull_into(&registry.client(&a.url).await?, &a, &left, limits).await?;
    let difference = match (&args.other, &args.path) {
        (Some(other), None) => {
            let b = Target::parse(other)?;
            pull_into(&registry.client(&b.url).await?, &b, &right, limits).await?;
            diff_objects(&objects(&left)?, &objects(&right)?)
        }
        (None, Some(path)) => {
            let layer = build_layer(path, args.ignore_paths.as_deref())?;
            extract_tar_gz(&layer[..], &right, limits)?;
            diff_files(&files(&left)?, &files(&right)?)
        }
        _ => anyhow::bail!("give either a second artifact or --path DIR to compare with"),
    };
    print(&difference, &args.output)?;
    Ok(!difference.is_empty())
}

fn print(d: &Difference, output: &str) -> anyhow::Result<()> {
    if output == "json" {
        println!("{}", serde_json::to_string_pretty(d)?);
        return Ok(());
    }
    if d.is_empty() {
        println!("no changes");
    }
    for id in &d.added {
        println!("+ {id}");
    }
    for id in &d.removed {
        println!("- {id}");
    }
    for change in &d.changed {
        println!("~ {}\n{}", change.id, change.diff);
    }
    Ok(())
}

/// Every regular file under `root`, by relative path.
fn files(root: &Path) -> anyhow::Result<BTreeMap<String, Vec<u8>>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in
            std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))?
        {
            let entry = entry?;
            let kind = entry.file_type()?;
            if kind.is_dir() {
                stack.push(entry.path());
            } else if kind.is_file() {
                let rel = entry
                    .path()
                    .strip_prefix(root)?
                    .to_string_lossy()
                    .to_string();
                out.insert(rel, std::fs::read(entry.path())?);
            }
        }
    }
    Ok(out)
}

/// Kubernetes objects in the YAML and JSON files under `root`, by `group/kind/namespace/name`,
/// as canonical YAML.
pub fn objects(root: &Path) -> anyhow::Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for (path, bytes) in files(root)? {
        if ![".yaml", ".yml", ".json"]
            .iter()
            .any(|ext| path.ends_with(ext))
        {
            continue;
        }
        let text = String::from_utf8_lossy(&bytes);
        // Read as the apply-controller reads an artifact's manifests (kustomize's YAML).
        let docs = yaml::documents(
            &text,
            &mut yaml::Budget::default(),
            yaml::Dialect::Kustomize,
        )
        .with_context(|| format!("parsing {path}"))?;
        for doc in docs.into_iter().filter(|d| d.get("kind").is_some()) {
            out.insert(object_id(&doc), serde_saphyr::to_string(&doc)?);
        }
    }
    Ok(out)
}

fn object_id(doc: &Value) -> String {
    let text = |v: Option<&Value>| v.and_then(Value::as_str).unwrap_or("").to_string();
    let api_version = text(doc.get("apiVersion"));
    let group = api_version
        .rsplit_once('/')
        .map(|(g, _)| g.to_string())
        .unwrap_or_default();
    let meta = doc.get("metadata");
    format!(
        "{group}/{}/{}/{}",
        text(doc.get("kind")),
        text(meta.and_then(|m| m.get("namespace"))),
        text(meta.and_then(|m| m.get("name")))
    )
}

pub fn diff_objects(a: &BTreeMap<String, String>, b: &BTreeMap<String, String>) -> Difference {
    diff_maps(a, b, |id, old, new| {
        similar::TextDiff::from_lines(old.as_str(), new.as_str())
            .unified_diff()
            .context_radius(3)
            .header(&format!("a/{id}"), &format!("b/{id}"))
            .to_string()
    })
}

fn diff_files(a: &BTreeMap<String, Vec<u8>>, b: &BTreeMap<String, Vec<u8>>) -> Difference {
    diff_maps(a, b, |id, old, new| {
        match (std::str::from_utf8(old), std::str::from_utf8(new)) {
            (Ok(old), Ok(new)) => similar::TextDiff::from_lines(old, new)
                .unified_diff()
                .header(&format!("a/{id}"), &format!("b/{id}"))
                .to_string(),
            _ => "binary content differs\n".into(),
        }
    })
}

/// `added` is what only `b` has, `removed` what only `a` has.
fn diff_maps<V: PartialEq>(
    a: &BTreeMap<String, V>,
    b: &BTreeMap<String, V>,
    describe: impl Fn(&str, &V, &V) -> String,
) -> Difference {
    let mut d = Difference::default();
    for (id, new) in b {
        match a.get(id) {
            None => d.added.push(id.clone()),
            Some(old) if old != new => d.changed.push(Change {
                id: id.clone(),
                diff: describe(id, old, new),
            }),
            Some(_) => {}
        }
    }
    d.removed = a
        .keys()
        .filter(|id| !b.contains_key(*id))
        .cloned()
        .collect();
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (path, content) in files {
            let p = dir.path().join(path);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, content).unwrap();
        }
        dir
    }

    #[test]
    fn objects_are_keyed_by_group_kind_namespace_name() {
        let dir = tree(&[
            (
                "a.yaml",
                "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web, namespace: prod}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: prod}\n",
            ),
            ("notes.md", "not yaml"),
            ("values.yaml", "replicas: 3\n"),
        ]);
        let objs = objects(dir.path()).unwrap();
        assert_eq!(
            objs.keys().collect::<Vec<_>>(),
            ["/Namespace//prod", "apps/Deployment/prod/web"]
        );
    }

    #[test]
    fn added_removed_and_changed_objects() {
        let a = tree(&[(
            "all.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: keep}\ndata: {x: '1'}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: change}\ndata: {x: '1'}\n---\napiVersion: v1\nkind: Secret\nmetadata: {name: gone}\n",
        )]);
        let b = tree(&[
            (
                "one.yaml",
                "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: keep}\ndata: {x: '1'}\n",
            ),
            (
                "two.yaml",
                "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: change}\ndata: {x: '2'}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: new}\n",
            ),
        ]);
        let d = diff_objects(&objects(a.path()).unwrap(), &objects(b.path()).unwrap());
        assert_eq!(d.added, ["/Service//new"]);
        assert_eq!(d.removed, ["/Secret//gone"]);
        assert_eq!(
            d.changed.len(),
            1,
            "moving an object to another file is not a change"
        );
        assert_eq!(d.changed[0].id, "/ConfigMap//change");
        assert!(
            d.changed[0].diff.contains("-  x: '1'") || d.changed[0].diff.contains("-  x: \"1\""),
            "{}",
            d.changed[0].diff
        );
        assert!(d.changed[0].diff.contains("+  x:"), "{}", d.changed[0].diff);
        assert!(diff_objects(&objects(a.path()).unwrap(), &objects(a.path()).unwrap()).is_empty());
    }
}
