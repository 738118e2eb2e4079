//! Where an object's artifacts live: Flux's layout `<kind>/<namespace>/<name>/<file>` (reference
//! §5.1), checked component by component, and the names the store keeps for itself.

use std::ffi::OsStr;
use std::fmt;
use std::path::{Path, PathBuf};

use super::StorageError;

/// The symlink pointing at an object's current artifact.
pub const LATEST_FILE: &str = "latest.tar.gz";
/// Suffix of the advisory lock file kept next to each artifact.
pub const LOCK_SUFFIX: &str = ".lock";
/// Marks temp files; with the leading dot it makes leftovers recognisable after a crash.
pub const TEMP_MARKER: &str = ".driftless-tmp-";

/// The storage directory of one object: `<kind>/<namespace>/<name>` under the root.
///
/// The components are checked when a path is made from them, so a location read back from
/// disk or built from an object can be held before it is known to be usable.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ArtifactLocation {
    kind: String,
    namespace: String,
    name: String,
}

impl ArtifactLocation {
    /// `kind` is the storage directory kind (`ocirepository`, `bucket`); like Flux, any case
    /// is accepted and the directory is lower-case.
    pub fn new(kind: &str, namespace: &str, name: &str) -> Self {
        Self {
            kind: kind.to_lowercase(),
            namespace: namespace.to_string(),
            name: name.to_string(),
        }
    }

    pub fn kind(&self) -> &str {
        &self.kind
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `<kind>/<namespace>/<name>`, each part a single safe component.
    pub fn rel_dir(&self) -> Result<String, StorageError> {
        validate_component("kind", &self.kind)?;
        validate_component("namespace", &self.namespace)?;
        validate_component("name", &self.name)?;
        Ok(self.to_string())
    }

    /// `<kind>/<namespace>/<name>/<file_name>`, each part a single safe component.
    pub fn artifact_path(&self, file_name: &str) -> Result<String, StorageError> {
        let dir = self.rel_dir()?;
        let file_name = validate_component("file name", file_name)?;
        Ok(format!("{dir}/{file_name}"))
    }
}

impl fmt::Display for ArtifactLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.kind, self.namespace, self.name)
    }
}

pub(super) fn validate_component<'a>(
    what: &'static str,
    value: &'a str,
) -> Result<&'a str, StorageError> {
    let reason = if value.is_empty() {
        Some("must not be empty")
    } else if value == "." || value == ".." {
        Some("must not be . or ..")
    } else if value.contains('/') || value.contains('\\') {
        Some("must be a single path component")
    } else if value.contains('\0') {
        Some("must not contain NUL")
    } else {
        None
    };
    match reason {
        None => Ok(value),
        Some(reason) => Err(StorageError::InvalidComponent {
            what,
            value: value.to_string(),
            reason,
        }),
    }
}

/// Names the store uses for its own bookkeeping cannot be artifact names.
pub(super) fn reject_reserved_file_name(file_name: &str) -> Result<(), StorageError> {
    let reserved = file_name == LATEST_FILE
        || file_name.ends_with(LOCK_SUFFIX)
        || is_temp_file_name(OsStr::new(file_name));
    if reserved {
        return Err(StorageError::InvalidComponent {
            what: "file name",
            value: file_name.to_string(),
            reason: "reserved for the store's own files",
        });
    }
    Ok(())
}

/// A stored relative path (`a/b/c`, optionally with a leading `/`) as a path under the root.
pub(super) fn safe_relative_path(rel_path: &str) -> Result<PathBuf, StorageError> {
    let trimmed = rel_path.trim_start_matches('/');
    let mut path = PathBuf::new();
    for component in trimmed.split('/') {
        path.push(validate_component("path component", component)?);
    }
    Ok(path)
}

/// Whether a file name is one of this store's temp files.
pub fn is_temp_file_name(name: &OsStr) -> bool {
    let name = name.as_encoded_bytes();
    name.starts_with(b".")
        && name
            .windows(TEMP_MARKER.len())
            .any(|window| window == TEMP_MARKER.as_bytes())
}

/// Whether a file name is an artifact's advisory lock file.
pub fn is_lock_file_name(name: &OsStr) -> bool {
    name.as_encoded_bytes().ends_with(LOCK_SUFFIX.as_bytes())
}

/// A hidden, random temp name in the target's directory, recognisable by [`is_temp_file_name`].
pub(super) fn temp_file_name(final_name: &str) -> String {
    format!(".{final_name}{TEMP_MARKER}{:016x}", rand::random::<u64>())
}

/// `<artifact>.lock`, the file Flux takes its advisory lock on.
pub(super) fn lock_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(LOCK_SUFFIX);
    PathBuf::from(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_components_must_be_single_and_normal() {
        for (kind, ns, name, file) in [
            ("..", "ns", "app", "f"),
            ("kind", "", "app", "f"),
            ("kind", "ns", "a/b", "f"),
            ("kind", "ns", "app", ".."),
            ("kind", "ns", "app", "."),
            ("kind", "ns", "app", "x\\y"),
            ("kind", "ns", "app", "x\0y"),
        ] {
            let err = ArtifactLocation::new(kind, ns, name)
                .artifact_path(file)
                .unwrap_err();
            assert!(
                matches!(err, StorageError::InvalidComponent { .. }),
                "{kind}/{ns}/{name}/{file}"
            );
        }
        assert_eq!(
            ArtifactLocation::new("Bucket", "ns", "b")
                .artifact_path("f.tar.gz")
                .unwrap(),
            "bucket/ns/b/f.tar.gz"
        );
    }

    #[test]
    fn temp_and_lock_names_are_recognised() {
        assert!(is_temp_file_name(OsStr::new(&temp_file_name("a.tar.gz"))));
        assert!(!is_temp_file_name(OsStr::new("a.tar.gz")));
        assert!(!is_temp_file_name(OsStr::new("x.driftless-tmp-1")));
        assert!(is_lock_file_name(OsStr::new("a.tar.gz.lock")));
        assert!(!is_lock_file_name(OsStr::new("a.tar.gz")));
    }
}
