//! The real cosign CLI (built from its Go module by hack/testbin.sh) for tests.

use std::path::Path;
use std::process::{Command, Output};

use super::Platform;

pub const PASSWORD: &str = "ci-secret";

/// `cosign ARGS` in `dir`, with COSIGN_PASSWORD set and no user configuration.
pub fn cosign(platform: &Platform, dir: &Path, args: &[&str]) -> Output {
    Command::new(Path::new(&platform.env["DRIFTLESS_TESTBIN"]).join("bin/cosign"))
        .args(args)
        .current_dir(dir)
        .env("COSIGN_PASSWORD", PASSWORD)
        .env("HOME", dir)
        .output()
        .expect("run cosign")
}

/// `cosign generate-key-pair` into `dir` (cosign.key, cosign.pub).
pub fn generate_key_pair(platform: &Platform, dir: &Path) {
    let out = cosign(platform, dir, &["generate-key-pair"]);
    assert!(
        out.status.success(),
        "cosign generate-key-pair: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `cosign sign --key` of `reference` (by digest), offline: no transparency log upload.
pub fn sign(platform: &Platform, dir: &Path, key: &str, reference: &str) {
    let out = cosign(
        platform,
        dir,
        &[
            "sign",
            "--key",
            key,
            "--tlog-upload=false",
            "--allow-http-registry",
            "-y",
            reference,
        ],
    );
    assert!(
        out.status.success(),
        "cosign sign: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
