//! Which files of a build are decrypted, in the build's private copy, before anything reads
//! them: the files kustomize generators and patches read (as Flux's `DecryptSources` picks
//! them), and the manifests themselves.
//!
//! Flux decrypts manifests after `kustomize build` and so cannot check their MAC (kustomize
//! has changed them by then); decrypting each manifest file as it is in the artifact lets
//! driftless check every file's MAC. Decrypted files exist only in the build's private copy,
//! which the caller removes after the build.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::formats::{self, Format, Output};
use super::keys::Keyring;
use crate::apply::yaml;

/// Flux's cap on a file it decrypts.
pub const MAX_ENCRYPTED_FILE_BYTES: u64 = 5 << 20;

/// The annotation that leaves a document encrypted, and its value that does (any case).
pub const DECRYPT_ANNOTATION: &str = "kustomize.toolkit.fluxcd.io/decrypt";

/// Decrypts what a build of `dir` (inside `root`, the private copy) reads.
pub fn decrypt_sources(root: &Path, dir: &Path, keys: &Keyring) -> Result<(), String> {
    let root = root.canonicalize().map_err(|e| e.to_string())?;
    let mut walk = Walk {
        root,
        keys,
        visited: BTreeSet::new(),
        pending: vec![Visit::Directory(dir.to_path_buf())],
    };
    // A work list, not recursion: an artifact may chain thousands of directories.
    while let Some(next) = walk.pending.pop() {
        match next {
            Visit::Directory(dir) => walk.directory(&dir)?,
            Visit::Plain(dir) => walk.manifests_in(&dir)?,
        }
    }
    Ok(())
}

enum Visit {
    /// A kustomization's directory, or a plain directory of manifests.
    Directory(PathBuf),
    /// A directory below a plain one: its manifests, whatever else it holds.
    Plain(PathBuf),
}

struct Walk<'a> {
    root: PathBuf,
    keys: &'a Keyring,
    visited: BTreeSet<PathBuf>,
    pending: Vec<Visit>,
}

impl Walk<'_> {
    fn directory(&mut self, dir: &Path) -> Result<(), String> {
        let dir = match self.inside(dir)? {
            Some(dir) if dir.is_dir() => dir,
            _ => return Ok(()),
        };
        if !self.visited.insert(dir.clone()) {
            return Ok(());
        }
        match kustomization_file(&dir) {
            Some(file) => self.kustomization(&dir, &file),
            None => self.manifests_in(&dir),
        }
    }

    fn kustomization(&mut self, dir: &Path, file: &Path) -> Result<(), String> {
        let text = yaml::read_file(file).map_err(|e| e.to_string())?;
        let k = yaml::kustomization(&text, &mut yaml::Budget::default())
            .map_err(|e| format!("{}: {e}", self.relative(file)))?;
        for entry in strings(&k, &["resources", "components"]) {
            let path = dir.join(entry);
            match self.inside(&path)? {
                Some(p) if p.is_dir() => self.pending.push(Visit::Directory(p)),
                Some(p) if p.is_file() => self.manifest(&p)?,
                _ => {}
            }
        }
        for generator in k["secretGenerator"].as_array().into_iter().flatten() {
            for entry in generator["files"].as_array().into_iter().flatten() {
                let Some(entry) = entry.as_str() else {
                    continue;
                };
                // `key=path` or `path`: the key names the format.
                let (key, path) = entry.split_once('=').unwrap_or((entry, entry));
                let format = Format::for_path(key);
                self.source(&dir.join(path), format, Output::As(format))?;
            }
            for env in generator["envs"].as_array().into_iter().flatten() {
                let Some(path) = env.as_str() else { continue };
                let format = match Format::for_path(path) {
                    Format::Binary => Format::Dotenv,
                    f => f,
                };
                self.source(&dir.join(path), format, Output::As(format))?;
            }
        }
        for patch in k["patches"].as_array().into_iter().flatten() {
            if let Some(path) = patch["path"].as_str() {
                let format = Format::for_path(path);
                self.source(&dir.join(path), format, Output::As(format))?;
            }
        }
        Ok(())
    }

    /// The YAML and JSON files of a directory without a kustomization, and its
    /// subdirectories' (the controller reads them all).
    fn manifests_in(&mut self, dir: &Path) -> Result<(), String> {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .map_err(|e| e.to_string())?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .collect();
        entries.sort();
        for path in entries {
            let kind = std::fs::symlink_metadata(&path).map_err(|e| e.to_string())?;
            if kind.is_dir() {
                self.pending.push(Visit::Plain(path));
            } else if kind.is_file() && is_manifest(&path) {
                self.manifest(&path)?;
            }
        }
        Ok(())
    }

    /// A manifest file: decrypted whole, unless a document asks to stay encrypted.
    fn manifest(&mut self, path: &Path) -> Result<(), String> {
        let format = match Format::for_path(&path.to_string_lossy()) {
            Format::Json => Format::Json,
            _ => Format::Yaml,
        };
        let Some(content) = self.read(path, format)? else {
            return Ok(());
        };
        if stays_encrypted(&content) {
            return Ok(());
        }
        self.write(path, format, &content, Output::JsonDocuments)
    }

    /// A file a generator or patch reads, decrypted into its own format.
    fn source(&mut self, path: &Path, format: Format, output: Output) -> Result<(), String> {
        let Some(path) = self.inside(path)? else {
            return Ok(());
        };
        if !path.exists() {
            return Ok(());
        }
        let Some(content) = self.read(&path, format)? else {
            return Ok(());
        };
        self.write(&path, format, &content, output)
    }

    /// The file's content when it is encrypted in `format`; refused when it is not a regular
    /// file or too large.
    fn read(&self, path: &Path, format: Format) -> Result<Option<Vec<u8>>, String> {
        let rel = self.relative(path);
        let meta = std::fs::symlink_metadata(path).map_err(|e| format!("lstat {rel}: {e}"))?;
        if !meta.is_file() {
            return Err(format!(
                "cannot decrypt irregular file {rel} as it has file mode type bits set"
            ));
        }
        if meta.len() > MAX_ENCRYPTED_FILE_BYTES {
            return Err(format!(
                "cannot decrypt file {rel} with size ({} bytes) exceeding limit ({MAX_ENCRYPTED_FILE_BYTES})",
                meta.len()
            ));
        }
        let content = std::fs::read(path).map_err(|e| format!("read {rel}: {e}"))?;
        Ok(format.is_encrypted(&content).then_some(content))
    }

    fn write(
        &self,
        path: &Path,
        format: Format,
        content: &[u8],
        output: Output,
    ) -> Result<(), String> {
        let rel = self.relative(path);
        let plain = formats::decrypt(content, format, output, self.keys)
            .map_err(|e| format!("{rel}: {e}"))?;
        write_private(path, &plain).map_err(|e| format!("write {rel}: {e}"))
    }

    /// `path` resolved, when it stays inside the root (as Flux's secure join keeps it).
    fn inside(&self, path: &Path) -> Result<Option<PathBuf>, String> {
        match path.canonicalize() {
            Ok(real) if real.starts_with(&self.root) => Ok(Some(real)),
            Ok(_) => Err(format!(
                "{} points outside the artifact",
                self.relative(path)
            )),
            Err(_) => Ok(None),
        }
    }

    fn relative(&self, path: &Path) -> String {
        let path = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
        path.strip_prefix(&self.root)
            .unwrap_or(&path)
            .display()
            .to_string()
    }
}

/// Replaces the file with mode 0600 (only the controller reads the plaintext).
fn write_private(path: &Path, content: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::remove_file(path)?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(content)
}

fn kustomization_file(dir: &Path) -> Option<PathBuf> {
    ["kustomization.yaml", "kustomization.yml", "Kustomization"]
        .iter()
        .map(|n| dir.join(n))
        .find(|p| p.is_file())
}

fn is_manifest(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml" | "json")
    )
}

fn strings<'a>(k: &'a Value, fields: &[&str]) -> Vec<&'a str> {
    fields
        .iter()
        .flat_map(|f| k[*f].as_array().into_iter().flatten())
        .filter_map(Value::as_str)
        .collect()
}

/// Whether a document of the file carries `kustomize.toolkit.fluxcd.io/decrypt: disabled`.
fn stays_encrypted(content: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(content) else {
        return false;
    };
    let Ok(docs) = yaml::ordered_documents(text) else {
        return false;
    };
    docs.iter().any(|doc| {
        doc.get("metadata")
            .and_then(|m| m.get("annotations"))
            .and_then(|a| a.get(DECRYPT_ANNOTATION))
            .and_then(|v| v.as_str())
            .is_some_and(|v| v.eq_ignore_ascii_case("disabled"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Thousands of kustomizations chained through `resources`, on a test thread's ordinary
    /// stack: walked, not recursed.
    #[test]
    fn long_chains_of_kustomizations_are_walked_without_recursion() {
        let root = tempfile::tempdir().unwrap();
        let n = 5_000;
        for i in 0..n {
            let dir = root.path().join(format!("d{i}"));
            std::fs::create_dir(&dir).unwrap();
            let next = match i + 1 < n {
                true => format!("resources: [../d{}]\n", i + 1),
                false => "resources: []\n".to_string(),
            };
            std::fs::write(dir.join("kustomization.yaml"), next).unwrap();
        }
        let keys = Keyring::from_entries([], "test").unwrap();
        decrypt_sources(root.path(), &root.path().join("d0"), &keys).unwrap();
    }
}
