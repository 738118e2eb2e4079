//! From an extracted artifact to the objects to apply: plain YAML directories are read as
//! they are (recursively, as Flux's generated kustomization would list them); a directory with
//! a `kustomization.yaml`, or a spec that asks for kustomize transformers, goes through the
//! kustomize binary with Flux's restrictions (no plugins, no remote bases, nothing outside the
//! artifact).

use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value, json};

use super::sops::{self, Keyring};
use super::yaml;
use crate::api::kustomization::KustomizationSpec;

const KUSTOMIZATION_FILES: [&str; 3] = ["kustomization.yaml", "kustomization.yml", "Kustomization"];
/// The longest a `kustomize build` may run.
const KUSTOMIZE_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("kustomization path not found: {0}")]
    PathNotFound(String),
    #[error("kustomization path '{0}' is outside the artifact")]
    PathOutside(String),
    #[error("failed to decode Kubernetes YAML from {path}: {message}")]
    Decode { path: String, message: String },
    #[error("{0}")]
    Invalid(String),
    #[error(
        "{0} needs kustomize, but no kustomize binary is configured (--kustomize-path or KUSTOMIZE_PATH) or on PATH"
    )]
    NoKustomize(String),
    #[error("kustomize build failed: {0}")]
    Kustomize(String),
    #[error("{0}")]
    Io(String),
    /// A SOPS file of the build could not be decrypted (Flux: "error decrypting sources").
    #[error("error decrypting sources: {0}")]
    Decrypt(String),
}

/// `spec.path` inside `root`, which it may not leave.
pub fn resolve_path(root: &Path, path: Option<&str>) -> Result<PathBuf, BuildError> {
    let rel = path.unwrap_or("").trim_start_matches("./");
    let mut dir = root.to_path_buf();
    for part in Path::new(rel).components() {
        match part {
            Component::Normal(p) => dir.push(p),
            Component::CurDir | Component::RootDir => {}
            Component::ParentDir | Component::Prefix(_) => {
                return Err(BuildError::PathOutside(rel.to_string()));
            }
        }
    }
    // Extraction never writes links, but the check costs nothing.
    let real = dir
        .canonicalize()
        .map_err(|_| BuildError::PathNotFound(rel.to_string()))?;
    let real_root = root
        .canonicalize()
        .map_err(|e| BuildError::Io(e.to_string()))?;
    if !real.starts_with(&real_root) {
        return Err(BuildError::PathOutside(rel.to_string()));
    }
    if !real.is_dir() {
        return Err(BuildError::PathNotFound(rel.to_string()));
    }
    Ok(real)
}

/// The last build of each Kustomization, reused while its artifact and spec stay the same: a
/// build reads only the artifact's files and the spec (no network, no plugins), so a pass that
/// changes neither needs no download, copy, check or kustomize run. Builds that decrypt are
/// not kept. Bounded by `MAX_MEMO_BYTES` of serialised objects.
#[derive(Default)]
pub struct BuildMemo {
    state: std::sync::Mutex<MemoState>,
}

#[derive(Default)]
struct MemoState {
    /// Kustomization (`namespace/name`) → (what it was built from, the objects, their size).
    builds: std::collections::HashMap<String, (u64, Arc<Vec<Value>>, usize)>,
    bytes: usize,
}

const MAX_MEMO_BYTES: usize = 64 << 20;

impl BuildMemo {
    pub fn get(&self, who: &str, key: u64) -> Option<Vec<Value>> {
        let state = self.state.lock().expect("build memo lock");
        let (built_from, objects, _) = state.builds.get(who)?;
        (*built_from == key).then(|| objects.as_ref().clone())
    }

    pub fn put(&self, who: &str, key: u64, objects: &[Value]) {
        let size = objects
            .iter()
            .map(|o| serde_json::to_vec(o).map_or(0, |v| v.len()))
            .sum::<usize>();
        let mut state = self.state.lock().expect("build memo lock");
        if let Some((_, _, old)) = state.builds.remove(who) {
            state.bytes -= old;
        }
        if size > MAX_MEMO_BYTES / 4 {
            return;
        }
        while state.bytes + size > MAX_MEMO_BYTES {
            let Some(evicted) = state.builds.keys().next().cloned() else {
                break;
            };
            if let Some((_, _, old)) = state.builds.remove(&evicted) {
                state.bytes -= old;
            }
        }
        state.bytes += size;
        state
            .builds
            .insert(who.to_string(), (key, Arc::new(objects.to_vec()), size));
    }

    pub fn forget(&self, who: &str) {
        let mut state = self.state.lock().expect("build memo lock");
        if let Some((_, _, old)) = state.builds.remove(who) {
            state.bytes -= old;
        }
    }
}

/// The objects `spec.path` in the artifact at `root` holds, built as the spec says. The
/// artifact is only read: kustomize builds run on a private copy in `scratch`, since Flux's
/// spec fields are merged into the kustomization file, and so do builds with SOPS `keys`,
/// whose files are decrypted in that copy (the caller removes `scratch` after the build).
pub async fn build(
    root: &Path,
    spec: &KustomizationSpec,
    kustomize: Option<&Path>,
    scratch: &Path,
    keys: Option<Arc<Keyring>>,
) -> Result<Vec<Value>, BuildError> {
    let dir = resolve_path(root, spec.path.as_deref())?;
    let dir = dir.as_path();
    let has_kustomization = kustomization_file(dir).is_some();
    let wants_transformers = spec.name_prefix.is_some()
        || spec.name_suffix.is_some()
        || spec.patches.as_ref().is_some_and(|p| !p.is_empty())
        || spec.images.as_ref().is_some_and(|i| !i.is_empty())
        || spec.components.as_ref().is_some_and(|c| !c.is_empty())
        || spec.build_metadata.as_ref().is_some_and(|m| !m.is_empty());
    if !has_kustomization && !wants_transformers && keys.is_none() {
        let dir = dir.to_path_buf();
        return tokio::task::spawn_blocking(move || plain_objects(&dir))
            .await
            .map_err(|e| BuildError::Io(e.to_string()))?;
    }
    if !has_kustomization && !wants_transformers {
        let private = private_copy(root, dir, &[], scratch).await?;
        let copy = scratch.join("build");
        return tokio::task::spawn_blocking(move || {
            decrypt(&copy, &private, keys.as_deref())?;
            plain_objects(&private).map_err(|e| withheld_if(true, e))
        })
        .await
        .map_err(|e| BuildError::Io(e.to_string()))?;
    }
    let what = match has_kustomization {
        true => "a kustomization.yaml".to_string(),
        false => "spec.namePrefix, nameSuffix, patches, images or components".to_string(),
    };
    let Some(kustomize) = kustomize else {
        return Err(BuildError::NoKustomize(what));
    };
    let components = spec.components.clone().unwrap_or_default();
    let private = private_copy(root, dir, &components, scratch).await?;
    prepare_kustomization(&private, spec)?;
    let (tree, dir) = (scratch.join("build"), private.clone());
    let decrypted = keys.is_some();
    tokio::task::spawn_blocking(move || {
        refuse_remote_references_in_tree(&tree)?;
        decrypt(&tree, &dir, keys.as_deref())
    })
    .await
    .map_err(|e| BuildError::Io(e.to_string()))??;
    run_kustomize(kustomize, &private)
        .await
        .map_err(|e| withheld_if(decrypted, e))
}

/// Build errors of a build that read decrypted files keep their kind and file but not their
/// text, which may quote a decrypted value.
fn withheld_if(decrypted: bool, error: BuildError) -> BuildError {
    const WITHHELD: &str =
        "the message is withheld: the build read decrypted SOPS files, which it may quote";
    match (decrypted, error) {
        (true, BuildError::Kustomize(_)) => BuildError::Kustomize(WITHHELD.into()),
        (true, BuildError::Decode { path, .. }) => BuildError::Decode {
            path,
            message: WITHHELD.into(),
        },
        (_, e) => e,
    }
}

/// A private copy, under `scratch/build`, of what a build of `dir` may read (`reachable_dirs`),
/// at the same paths relative to the artifact's root; the copy's `dir`.
async fn private_copy(
    root: &Path,
    dir: &Path,
    components: &[String],
    scratch: &Path,
) -> Result<PathBuf, BuildError> {
    let (root, dir, copy) = (root.to_path_buf(), dir.to_path_buf(), scratch.join("build"));
    let components = components.to_vec();
    tokio::task::spawn_blocking(move || {
        let io = |e: std::io::Error| BuildError::Io(e.to_string());
        let root = root.canonicalize().map_err(io)?;
        for rel in reachable_dirs(&root, &dir, &components)? {
            copy_tree(&root.join(&rel), &copy.join(&rel))?;
        }
        let rel = dir
            .strip_prefix(&root)
            .unwrap_or(Path::new(""))
            .to_path_buf();
        std::fs::create_dir_all(copy.join(&rel)).map_err(io)?;
        Ok::<_, BuildError>(copy.join(rel))
    })
    .await
    .map_err(|e| BuildError::Io(e.to_string()))?
}

/// The directories a build of `dir` may read, relative to `root` (canonical), none inside
/// another: `dir`, the spec's `components`, and every directory a kustomization file under
/// them names (bases, components, resources), followed to the end. kustomize reads files only
/// under their own kustomization's root (`LoadRestrictionsRootOnly`) and other directories
/// only through such references, so these subtrees hold everything a build can read. Copying
/// them, not the whole artifact, keeps a build's cost that of what it uses: 100 overlays of
/// one base in one artifact made each build copy and check all 100.
fn reachable_dirs(
    root: &Path,
    dir: &Path,
    components: &[String],
) -> Result<Vec<PathBuf>, BuildError> {
    let mut queue = vec![dir.to_path_buf()];
    queue.extend(components.iter().map(|c| dir.join(c)));
    let mut seen = std::collections::BTreeSet::new();
    while let Some(next) = queue.pop() {
        // Missing, outside the artifact, or a file: kustomize reports it, or reads it from the
        // subtree of a directory already here.
        let Ok(real) = next.canonicalize() else {
            continue;
        };
        if !real.starts_with(root) || !real.is_dir() || !seen.insert(real.clone()) {
            continue;
        }
        for file in kustomization_files_under(&real)? {
            let rel = shown_relative(&file, root);
            let k = read_kustomization(&file, &rel)?;
            let base = file.parent().unwrap_or(&real);
            for (_, reference) in referenced_paths(&k) {
                if !is_remote(&reference) {
                    queue.push(base.join(reference));
                }
            }
        }
    }
    // Sorted, a directory comes before everything under it.
    let mut outermost: Vec<PathBuf> = Vec::new();
    for d in seen {
        if !outermost.iter().any(|o| d.starts_with(o)) {
            outermost.push(d);
        }
    }
    Ok(outermost
        .iter()
        .map(|d| d.strip_prefix(root).unwrap_or(d).to_path_buf())
        .collect())
}

/// Every kustomization file in the tree under `dir`.
fn kustomization_files_under(dir: &Path) -> Result<Vec<PathBuf>, BuildError> {
    let io = |e: std::io::Error| BuildError::Io(e.to_string());
    let (mut stack, mut found) = (vec![dir.to_path_buf()], Vec::new());
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).map_err(io)? {
            let entry = entry.map_err(io)?;
            let file_type = entry.file_type().map_err(io)?;
            if file_type.is_dir() {
                stack.push(entry.path());
            } else if file_type.is_file()
                && KUSTOMIZATION_FILES.iter().any(|f| entry.file_name() == *f)
            {
                found.push(entry.path());
            }
        }
    }
    Ok(found)
}

/// The SOPS files a build of `dir` reads, decrypted in the private copy `tree`.
fn decrypt(tree: &Path, dir: &Path, keys: Option<&Keyring>) -> Result<(), BuildError> {
    match keys {
        Some(keys) => sops::decrypt_sources(tree, dir, keys).map_err(BuildError::Decrypt),
        None => Ok(()),
    }
}

/// Copies the regular files and directories of `from` into `to` (extraction never writes
/// anything else).
fn copy_tree(from: &Path, to: &Path) -> Result<(), BuildError> {
    let io = |e: std::io::Error| BuildError::Io(e.to_string());
    std::fs::create_dir_all(to).map_err(io)?;
    for entry in std::fs::read_dir(from).map_err(io)? {
        let entry = entry.map_err(io)?;
        let file_type = entry.file_type().map_err(io)?;
        let target = to.join(entry.file_name());
        if file_type.is_dir() {
            copy_tree(&entry.path(), &target)?;
        } else if file_type.is_file() {
            std::fs::copy(entry.path(), &target).map_err(io)?;
        }
    }
    Ok(())
}

fn kustomization_file(dir: &Path) -> Option<PathBuf> {
    KUSTOMIZATION_FILES
        .iter()
        .map(|f| dir.join(f))
        .find(|p| p.is_file())
}

/// Every `.yaml`/`.yml` file under `dir` (sorted, recursively), each document that is an
/// object; `List`s are flattened.
pub fn plain_objects(dir: &Path) -> Result<Vec<Value>, BuildError> {
    let mut files = Vec::new();
    collect_yaml_files(dir, &mut files)?;
    files.sort();
    let mut objects = Vec::new();
    let mut budget = yaml::Budget::default();
    for file in files {
        let rel = shown_relative(&file, dir);
        let text = read_yaml(&file, &rel)?;
        objects.extend(decode_within(&text, &rel, &mut budget)?);
    }
    Ok(objects)
}

fn collect_yaml_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), BuildError> {
    let entries =
        std::fs::read_dir(dir).map_err(|e| BuildError::Io(format!("{}: {e}", dir.display())))?;
    for entry in entries {
        let entry = entry.map_err(|e| BuildError::Io(e.to_string()))?;
        let path = entry.path();
        let file_type = entry
            .file_type()
            .map_err(|e| BuildError::Io(e.to_string()))?;
        if file_type.is_dir() {
            collect_yaml_files(&path, out)?;
        } else if file_type.is_file() && path.extension().is_some_and(|e| e == "yaml" || e == "yml")
        {
            out.push(path);
        }
    }
    Ok(())
}

fn read_yaml(path: &Path, source: &str) -> Result<String, BuildError> {
    yaml::read_file(path).map_err(|e| BuildError::Decode {
        path: source.to_string(),
        message: e.to_string(),
    })
}

/// The Kubernetes objects in a multi-document YAML text (a manifest, or `kustomize build`
/// output), read as kustomize reads it.
pub fn decode(text: &str, source: &str) -> Result<Vec<Value>, BuildError> {
    decode_within(text, source, &mut yaml::Budget::default())
}

/// `decode`, charging alias expansion to `budget`, shared by everything one build parses.
fn decode_within(
    text: &str,
    source: &str,
    budget: &mut yaml::Budget,
) -> Result<Vec<Value>, BuildError> {
    let docs = yaml::documents(text, budget, yaml::Dialect::Kustomize).map_err(|e| {
        BuildError::Decode {
            path: source.to_string(),
            message: e.to_string(),
        }
    })?;
    let mut objects = Vec::new();
    for doc in docs.into_iter().filter(|d| !d.is_null()) {
        let kind = doc.get("kind").and_then(Value::as_str).unwrap_or_default();
        if kind.ends_with("List") && doc.get("items").is_some_and(Value::is_array) {
            for item in doc["items"].as_array().cloned().unwrap_or_default() {
                objects.push(checked(item, source)?);
            }
        } else if kind == "Kustomization"
            && doc
                .get("apiVersion")
                .and_then(Value::as_str)
                .is_some_and(|a| a.starts_with("kustomize.config.k8s.io/"))
        {
            // A kustomize config, not an object.
        } else {
            objects.push(checked(doc, source)?);
        }
    }
    Ok(objects)
}

fn checked(object: Value, source: &str) -> Result<Value, BuildError> {
    let has = |p: &str| {
        object
            .pointer(p)
            .and_then(Value::as_str)
            .is_some_and(|s| !s.is_empty())
    };
    if !(has("/apiVersion") && has("/kind") && has("/metadata/name")) {
        return Err(BuildError::Decode {
            path: source.to_string(),
            message: format!(
                "object has no apiVersion, kind or metadata.name: {}",
                crate::util::truncate(&object.to_string(), 200)
            ),
        });
    }
    Ok(object)
}

/// Writes the kustomization file Flux would build from: the existing one (or one listing the
/// directory's manifests) with the spec's transformers merged in.
fn prepare_kustomization(dir: &Path, spec: &KustomizationSpec) -> Result<(), BuildError> {
    let existing = kustomization_file(dir);
    let mut k: Map<String, Value> = match &existing {
        Some(path) => read_kustomization(
            path,
            &path.file_name().unwrap_or_default().to_string_lossy(),
        )?,
        None => generated_kustomization(dir)?,
    };
    if let Some(ns) = &spec.target_namespace {
        k.insert("namespace".into(), json!(ns));
    }
    if let Some(p) = &spec.name_prefix {
        k.insert("namePrefix".into(), json!(p));
    }
    if let Some(s) = &spec.name_suffix {
        k.insert("nameSuffix".into(), json!(s));
    }
    for patch in spec.patches.iter().flatten() {
        let mut entry = json!({"patch": patch.patch});
        if let Some(t) = &patch.target {
            entry["target"] = serde_json::to_value(t).unwrap_or_default();
        }
        push(&mut k, "patches", entry);
    }
    for component in spec.components.iter().flatten() {
        if is_remote(component) || Path::new(component).is_absolute() {
            return Err(BuildError::Invalid(format!(
                "component '{component}' must be a local relative path"
            )));
        }
        if spec.ignore_missing_components && !dir.join(component).exists() {
            continue;
        }
        push(&mut k, "components", json!(component));
    }
    for image in spec.images.iter().flatten() {
        merge_image(&mut k, serde_json::to_value(image).unwrap_or_default());
    }
    if let Some(meta) = &spec.build_metadata {
        k.insert(
            "buildMetadata".into(),
            serde_json::to_value(meta).unwrap_or_default(),
        );
    }
    k.entry("apiVersion")
        .or_insert(json!("kustomize.config.k8s.io/v1beta1"));
    k.entry("kind").or_insert(json!("Kustomization"));
    if k.get("resources")
        .is_none_or(|r| r.as_array().is_some_and(Vec::is_empty))
        && k.get("components").is_none()
        && existing.is_some()
    {
        // kustomize refuses an empty kustomization; Flux adds build metadata to avoid that.
        k.entry("buildMetadata")
            .or_insert(json!(["originAnnotations"]));
    }
    let text =
        serde_saphyr::to_string(&Value::Object(k)).map_err(|e| BuildError::Io(e.to_string()))?;
    let target = existing.unwrap_or_else(|| dir.join("kustomization.yaml"));
    std::fs::write(&target, text).map_err(|e| BuildError::Io(e.to_string()))
}

fn push(k: &mut Map<String, Value>, field: &str, value: Value) {
    let list = k.entry(field).or_insert_with(|| json!([]));
    if let Some(items) = list.as_array_mut() {
        items.push(value);
    }
}

/// An image entry with the same name is updated; `newTag` and `digest` replace each other.
fn merge_image(k: &mut Map<String, Value>, image: Value) {
    let name = image.get("name").cloned();
    let list = k.entry("images").or_insert_with(|| json!([]));
    let Some(items) = list.as_array_mut() else {
        return;
    };
    match items.iter_mut().find(|i| i.get("name") == name.as_ref()) {
        Some(existing) => {
            let obj = existing.as_object_mut().expect("image entries are objects");
            if image.get("newTag").is_some() || image.get("digest").is_some() {
                obj.remove("newTag");
                obj.remove("digest");
            }
            for (key, value) in image.as_object().cloned().unwrap_or_default() {
                obj.insert(key, value);
            }
        }
        None => items.push(image),
    }
}

/// A kustomization listing the directory: sub-directories with their own kustomization as
/// directories, other YAML files one by one (each must decode).
fn generated_kustomization(dir: &Path) -> Result<Map<String, Value>, BuildError> {
    let mut resources = Vec::new();
    walk_for_resources(dir, dir, &mut resources, &mut yaml::Budget::default())?;
    resources.sort();
    let mut k = Map::new();
    if resources.is_empty() {
        k.insert("namespace".into(), json!("_placeholder"));
    }
    k.insert("resources".into(), json!(resources));
    Ok(k)
}

fn walk_for_resources(
    root: &Path,
    dir: &Path,
    out: &mut Vec<String>,
    budget: &mut yaml::Budget,
) -> Result<(), BuildError> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| BuildError::Io(e.to_string()))?
        .filter_map(Result::ok)
        .collect();
    entries.sort_by_key(|e| e.path());
    for entry in entries {
        let path = entry.path();
        let rel = shown_relative(&path, root);
        if path.is_dir() {
            if kustomization_file(&path).is_some() {
                out.push(rel);
            } else {
                walk_for_resources(root, &path, out, budget)?;
            }
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            let text = read_yaml(&path, &rel)?;
            if !decode_within(&text, &rel, budget)?.is_empty() {
                out.push(rel);
            }
        }
    }
    Ok(())
}

/// What kustomize would fetch rather than read from the tree: URLs of any scheme, go-getter
/// and git forms, and the host-first shorthands it resolves as repositories.
fn is_remote(reference: &str) -> bool {
    let r = reference.trim();
    r.contains("://")
        || r.starts_with("git::")
        || r.starts_with("git@")
        || r.starts_with("gh:")
        || r.starts_with("//")
        || ["github.com/", "gitlab.com/", "bitbucket.org/"]
            .iter()
            .any(|host| r.starts_with(host))
}

/// The list fields of a kustomization that name files, directories or repositories.
const REFERENCE_LISTS: [&str; 9] = [
    "resources",
    "bases",
    "components",
    "generators",
    "transformers",
    "validators",
    "crds",
    "configurations",
    "patchesStrategicMerge",
];
/// List fields whose entries are objects with a `path`.
const PATH_ENTRY_LISTS: [&str; 3] = ["patches", "patchesJson6902", "replacements"];
/// Generators whose entries read `files` (`[key=]path`), `envs` and `env`.
const GENERATORS: [&str; 2] = ["configMapGenerator", "secretGenerator"];

/// Every file or repository a kustomization names, with the field it is in. Inline entries
/// (a multi-line patch or generator config) name nothing.
fn referenced_paths(k: &Map<String, Value>) -> Vec<(String, String)> {
    let mut found = Vec::new();
    let mut add = |field: String, value: &Value| {
        if let Some(text) = value.as_str().filter(|t| !t.contains('\n')) {
            found.push((field, text.to_string()));
        }
    };
    let list = |field: &str| k.get(field).and_then(Value::as_array).into_iter().flatten();
    for field in REFERENCE_LISTS {
        list(field).for_each(|item| add(field.to_string(), item));
    }
    for field in PATH_ENTRY_LISTS {
        list(field).for_each(|item| add(format!("{field}[].path"), &item["path"]));
    }
    for field in GENERATORS {
        for item in list(field) {
            for key in ["files", "envs"] {
                for entry in item
                    .get(key)
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    // `files` entries may rename: `key=path`.
                    let path = entry
                        .as_str()
                        .map(|e| e.split_once('=').map_or(e, |(_, p)| p));
                    add(format!("{field}[].{key}"), &json!(path));
                }
            }
            add(format!("{field}[].env"), &item["env"]);
        }
    }
    if let Some(openapi) = k.get("openapi") {
        add("openapi.path".into(), &openapi["path"]);
    }
    found
}

/// Remote references would make the build fetch from the network, outside the verified
/// artifact, and reach addresses from inside the cluster; Helm chart inflation downloads
/// charts. Refused in one kustomization file.
fn refuse_remote_references(k: &Map<String, Value>, file: &str) -> Result<(), BuildError> {
    for field in ["helmCharts", "helmChartInflationGenerator", "helmGlobals"] {
        if k.contains_key(field) {
            return Err(BuildError::Invalid(format!(
                "{field} in {file} is not allowed: Helm charts would be fetched from outside the artifact"
            )));
        }
    }
    for (field, reference) in referenced_paths(k) {
        if is_remote(&reference) {
            return Err(BuildError::Invalid(format!(
                "remote bases are not allowed: '{reference}' in {field} of {file}; everything must come from the artifact"
            )));
        }
    }
    Ok(())
}

/// Every kustomization file anywhere in the build tree is checked, not only the one at the
/// path: nested bases and components are read by kustomize too, and a file no base reaches
/// costs nothing to check.
fn refuse_remote_references_in_tree(root: &Path) -> Result<(), BuildError> {
    for path in kustomization_files_under(root)? {
        let rel = shown_relative(&path, root);
        let k = read_kustomization(&path, &rel)?;
        refuse_remote_references(&k, &rel)?;
    }
    Ok(())
}

/// A kustomization file as Flux's generator reads it (sigs.k8s.io/yaml, numbers and booleans
/// under string fields made strings), so that the one written back for kustomize holds what
/// Flux's would.
fn read_kustomization(path: &Path, rel: &str) -> Result<Map<String, Value>, BuildError> {
    let text = yaml::read_file(path).map_err(|e| BuildError::Io(e.to_string()))?;
    let value = yaml::kustomization(&text, &mut yaml::Budget::default()).map_err(|e| {
        BuildError::Decode {
            path: rel.to_string(),
            message: e.to_string(),
        }
    })?;
    Ok(match value {
        Value::Object(k) => k,
        _ => Map::new(),
    })
}

/// `kustomize build` of `dir`, confined: no plugins, nothing outside `dir`, no network.
pub async fn run_kustomize(kustomize: &Path, dir: &Path) -> Result<Vec<Value>, BuildError> {
    let mut command = tokio::process::Command::new(kustomize);
    command
        .arg("build")
        .arg("--load-restrictor=LoadRestrictionsRootOnly")
        .arg(dir)
        .kill_on_drop(true)
        .env_clear()
        .env("HOME", dir);
    super::sandbox::deny_network(&mut command).map_err(BuildError::Kustomize)?;
    let output = tokio::time::timeout(KUSTOMIZE_TIMEOUT, command.output())
        .await
        .map_err(|_| BuildError::Kustomize(format!("timed out after {KUSTOMIZE_TIMEOUT:?}")))?
        .map_err(|e| BuildError::Kustomize(format!("running {}: {e}", kustomize.display())))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let dir_text = dir.display().to_string();
        return Err(BuildError::Kustomize(
            stderr
                .trim()
                .replace(&dir_text, ".")
                .lines()
                .last()
                .unwrap_or("")
                .to_string(),
        ));
    }
    decode(
        &String::from_utf8_lossy(&output.stdout),
        "kustomize build output",
    )
}

/// A path as messages show it: relative to the tree it was found in.
fn shown_relative(path: &Path, root: &Path) -> String {
    path.strip_prefix(root)
        .unwrap_or(path)
        .display()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_build_is_reused_only_for_the_same_artifact_and_spec() {
        let memo = BuildMemo::default();
        let objects = vec![json!({"kind": "ConfigMap", "metadata": {"name": "a"}})];
        assert_eq!(memo.get("ns/app", 1), None);
        memo.put("ns/app", 1, &objects);
        assert_eq!(memo.get("ns/app", 1), Some(objects.clone()));
        assert_eq!(memo.get("ns/app", 2), None, "another artifact or spec");
        assert_eq!(memo.get("ns/other", 1), None, "another Kustomization");
        memo.forget("ns/app");
        assert_eq!(memo.get("ns/app", 1), None);
        assert_eq!(memo.state.lock().unwrap().bytes, 0);
    }

    #[test]
    fn the_build_memo_stays_within_its_bytes() {
        let memo = BuildMemo::default();
        let big = vec![json!({"data": "x".repeat(MAX_MEMO_BYTES / 5)})];
        for k in 0..10 {
            memo.put(&format!("ns/app-{k}"), 1, &big);
            assert!(memo.state.lock().unwrap().bytes <= MAX_MEMO_BYTES);
        }
        assert_eq!(
            memo.get("ns/app-9", 1),
            Some(big.clone()),
            "the newest is kept"
        );
        let huge = vec![json!({"data": "x".repeat(MAX_MEMO_BYTES / 3)})];
        memo.put("ns/huge", 1, &huge);
        assert_eq!(memo.get("ns/huge", 1), None, "too big to keep");
    }

    #[test]
    fn paths_stay_inside_the_artifact() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("apps/prod")).unwrap();
        assert!(resolve_path(root.path(), Some("./apps/prod")).is_ok());
        assert!(resolve_path(root.path(), None).is_ok());
        assert!(matches!(
            resolve_path(root.path(), Some("../x")),
            Err(BuildError::PathOutside(_))
        ));
        assert!(matches!(
            resolve_path(root.path(), Some("apps/../../x")),
            Err(BuildError::PathOutside(_))
        ));
        assert!(matches!(
            resolve_path(root.path(), Some("missing")),
            Err(BuildError::PathNotFound(_))
        ));
    }

    #[test]
    fn plain_directories_are_read_recursively_and_lists_flattened() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("sub")).unwrap();
        std::fs::write(
            root.path().join("a.yaml"),
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\n",
        )
        .unwrap();
        std::fs::write(root.path().join("sub/b.yml"), "apiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: Secret, metadata: {name: b}}\n").unwrap();
        std::fs::write(root.path().join("notes.txt"), "ignored").unwrap();
        let objects = plain_objects(root.path()).unwrap();
        let names: Vec<&str> = objects
            .iter()
            .map(|o| o["metadata"]["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["a", "b"]);
    }

    #[test]
    fn alias_expansion_is_charged_across_the_files_of_a_build() {
        // Each file expands by ~1 MiB, within a fresh parse's budget; together they are not.
        let root = tempfile::tempdir().unwrap();
        let mut text = format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: a}}\ndata:\n  a: &a \"{}\"\n",
            "x".repeat(64 << 10)
        );
        for i in 0..16 {
            text.push_str(&format!("  k{i}: *a\n"));
        }
        for i in 0..8 {
            std::fs::write(root.path().join(format!("f{i}.yaml")), &text).unwrap();
        }
        decode(&text, "f0.yaml").unwrap();
        match plain_objects(root.path()) {
            Err(BuildError::Decode { message, .. }) => {
                assert!(message.contains("aliases may add at most"), "{message}")
            }
            other => panic!("expected a decode error, got {:?}", other.map(|o| o.len())),
        }
    }

    #[test]
    fn objects_without_a_name_and_bad_yaml_are_build_errors() {
        assert!(matches!(
            decode("apiVersion: v1\nkind: ConfigMap\n", "x.yaml"),
            Err(BuildError::Decode { .. })
        ));
        assert!(matches!(
            decode("a: [", "x.yaml"),
            Err(BuildError::Decode { .. })
        ));
    }

    #[test]
    fn images_merge_by_name_and_tags_replace_digests() {
        let mut k = Map::new();
        k.insert(
            "images".into(),
            json!([{"name": "app", "digest": "sha256:1"}]),
        );
        merge_image(&mut k, json!({"name": "app", "newTag": "v2"}));
        merge_image(&mut k, json!({"name": "other", "newName": "x"}));
        assert_eq!(
            k["images"],
            json!([{"name": "app", "newTag": "v2"}, {"name": "other", "newName": "x"}])
        );
    }

    #[tokio::test]
    async fn kustomizations_without_a_kustomize_binary_are_a_clear_error() {
        let root = tempfile::tempdir().unwrap();
        std::fs::write(root.path().join("kustomization.yaml"), "resources: []\n").unwrap();
        let spec: KustomizationSpec = serde_json::from_value(json!({
            "interval": "1m", "prune": true, "sourceRef": {"kind": "OCIRepository", "name": "x"}
        }))
        .unwrap();
        let scratch = tempfile::tempdir().unwrap();
        let err = build(root.path(), &spec, None, scratch.path(), None)
            .await
            .unwrap_err();
        assert!(matches!(err, BuildError::NoKustomize(_)), "{err}");
        assert!(err.to_string().contains("--kustomize-path"), "{err}");
    }

    #[test]
    fn remote_references_are_refused_in_every_field_that_names_a_file() {
        let refused = |k: Value| {
            let k = k.as_object().cloned().unwrap();
            match refuse_remote_references(&k, "base/kustomization.yaml") {
                Err(BuildError::Invalid(m)) => m,
                other => panic!("{k:?} was not refused: {other:?}"),
            }
        };
        let m = refused(json!({"resources": ["./base", "https://github.com/x/y//z"]}));
        assert!(
            m.contains("remote bases") && m.contains("base/kustomization.yaml"),
            "{m}"
        );
        for k in [
            json!({"bases": ["github.com/org/repo/base"]}),
            json!({"components": ["git::https://example.com/c.git"]}),
            json!({"generators": ["git@github.com:org/repo.git"]}),
            json!({"transformers": ["http://10.0.0.1/t.yaml"]}),
            json!({"crds": ["ssh://host/crd.yaml"]}),
            json!({"patches": [{"path": "https://10.0.0.1/p.yaml"}]}),
            json!({"patchesJson6902": [{"path": "//evil/p.yaml", "target": {}}]}),
            json!({"replacements": [{"path": "https://x/r.yaml"}]}),
            json!({"configMapGenerator": [{"name": "c", "files": ["k=https://x/f"]}]}),
            json!({"secretGenerator": [{"name": "s", "envs": ["https://x/e.env"]}]}),
            json!({"openapi": {"path": "https://x/schema.json"}}),
            json!({"helmCharts": [{"name": "x", "repo": "https://charts"}]}),
        ] {
            refused(k);
        }
        let local = json!({
            "resources": ["./base", "deploy.yaml"],
            "patches": [{"patch": "- op: add\n  path: /metadata/annotations/link\n  value: https://docs\n"}],
            "commonAnnotations": {"docs": "https://example.com"},
            "configMapGenerator": [{"name": "c", "files": ["k=files/a.txt"], "literals": ["u=https://x"]}],
        });
        assert!(refuse_remote_references(local.as_object().unwrap(), "k").is_ok());
    }

    #[test]
    fn a_build_copies_what_it_can_reach_and_nothing_else() {
        let root = tempfile::tempdir().unwrap();
        let write = |path: &str, text: &str| {
            let path = root.path().join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        };
        write(
            "apps/a/kustomization.yaml",
            "resources: [../../base, local.yaml]\n",
        );
        write("apps/a/local.yaml", "kind: ConfigMap\n");
        write("apps/b/kustomization.yaml", "resources: [../../base]\n");
        write(
            "base/kustomization.yaml",
            "resources: [cm.yaml, nested]\ncomponents: [../comp]\n",
        );
        write(
            "base/nested/kustomization.yaml",
            "resources: [https://x/y.yaml, ../../../outside]\n",
        );
        write("comp/kustomization.yaml", "kind: Component\n");
        write("extra/kustomization.yaml", "kind: Component\n");
        let real = root.path().canonicalize().unwrap();
        let reach = |dir: &str, components: &[String]| {
            let dirs = reachable_dirs(&real, &real.join(dir), components).unwrap();
            dirs.iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(reach("apps/a", &[]), ["apps/a", "base", "comp"]);
        assert_eq!(
            reach("apps/a", &["../../extra".to_string()]),
            ["apps/a", "base", "comp", "extra"],
            "the spec's components too"
        );
        assert_eq!(reach("base", &[]), ["base", "comp"]);
        assert_eq!(reach(".", &[]), [""], "the root holds everything");
        // Files no build of the path reaches are not even read.
        write("unrelated/kustomization.yaml", "resources: [x\n");
        assert_eq!(reach("apps/b", &[]), ["apps/b", "base", "comp"]);
        let err = reachable_dirs(&real, &real.join("unrelated"), &[]).unwrap_err();
        assert!(matches!(err, BuildError::Decode { .. }), "{err}");
    }

    #[test]
    fn a_remote_base_nested_anywhere_in_the_tree_is_refused() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("overlay")).unwrap();
        std::fs::create_dir_all(root.path().join("base/deep")).unwrap();
        std::fs::write(
            root.path().join("overlay/kustomization.yaml"),
            "resources: [../base]\n",
        )
        .unwrap();
        std::fs::write(
            root.path().join("base/kustomization.yaml"),
            "resources: [deep]\n",
        )
        .unwrap();
        assert!(refuse_remote_references_in_tree(root.path()).is_ok());
        std::fs::write(
            root.path().join("base/deep/Kustomization"),
            "resources: [https://10.0.0.1/x.yaml]\n",
        )
        .unwrap();
        let err = refuse_remote_references_in_tree(root.path()).unwrap_err();
        assert!(err.to_string().contains("base/deep/Kustomization"), "{err}");
    }
}
