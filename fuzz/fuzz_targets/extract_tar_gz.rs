//! A tarball from a registry, a bucket or a source artifact: extraction never writes outside
//! its target, never leaves a link behind, and stays within its limits.
#![no_main]

use std::path::{Path, PathBuf};

use driftless::artifact::{ExtractLimits, extract_tar_gz};
use libfuzzer_sys::fuzz_target;

const LIMITS: ExtractLimits = ExtractLimits {
    max_bytes: 1 << 20,
    max_files: 256,
    max_duration: std::time::Duration::from_secs(5),
};

fuzz_target!(|data: &[u8]| {
    let Ok(root) = tempfile::tempdir() else {
        return;
    };
    let target = root.path().join("target");
    if let Ok(stats) = extract_tar_gz(data, &target, LIMITS) {
        assert!(stats.bytes <= LIMITS.max_bytes);
        assert!(stats.files + stats.dirs + stats.skipped <= LIMITS.max_files);
    }
    for path in walk(root.path()) {
        assert!(
            path.starts_with(&target),
            "wrote outside the target: {path:?}"
        );
        let meta = path.symlink_metadata().expect("listed path exists");
        assert!(!meta.file_type().is_symlink(), "left a symlink: {path:?}");
    }
});

/// Every path under `dir`, without following links.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            out.extend(walk(&path));
        }
        out.push(path);
    }
    out
}
