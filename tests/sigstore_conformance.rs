//! Every offline `bundle-verify` case of sigstore-conformance (tests/fixtures/sigstore-conformance,
//! see its ORIGIN.md) through `driftless sigstore-conformance verify-bundle`, fed as the suite's
//! own harness feeds a client: each case by the artifact's path and by its `sha256:` digest;
//! `_fail` cases must be refused (non-zero exit), the others accepted. No network.

use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

const DEFAULT_IDENTITY: &str = "https://github.com/sigstore-conformance/extremely-dangerous-public-oidc-beacon/.github/workflows/extremely-dangerous-oidc-beacon.yml@refs/heads/main";
const DEFAULT_ISSUER: &str = "https://token.actions.githubusercontent.com";

fn cases() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sigstore-conformance/bundle-verify")
}

/// The arguments the suite gives a client for one case (its `BundleMaterials.from_dir`).
fn arguments(case: &Path, input: &str) -> Vec<String> {
    let mut args = vec![
        "sigstore-conformance".to_string(),
        "verify-bundle".into(),
        "--bundle".into(),
        case.join("bundle.sigstore.json").display().to_string(),
    ];
    let read = |name: &str| {
        std::fs::read_to_string(case.join(name))
            .ok()
            .map(|s| s.trim().to_string())
    };
    if case.join("key.pub").exists() {
        args.extend(["--key".into(), case.join("key.pub").display().to_string()]);
    } else {
        args.extend([
            "--certificate-identity".into(),
            read("identity").unwrap_or_else(|| DEFAULT_IDENTITY.into()),
            "--certificate-oidc-issuer".into(),
            read("issuer").unwrap_or_else(|| DEFAULT_ISSUER.into()),
        ]);
    }
    if case.join("trusted_root.json").exists() {
        args.extend([
            "--trusted-root".into(),
            case.join("trusted_root.json").display().to_string(),
        ]);
    }
    args.push(input.to_string());
    args
}

#[test]
fn every_bundle_verify_case_is_decided_as_the_suite_expects() {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(cases())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("bundle.sigstore.json").exists())
        .collect();
    dirs.sort();
    assert_eq!(dirs.len(), 70, "the 70 cases of the vendored snapshot");
    let mut wrong = Vec::new();
    for case in &dirs {
        let name = case.file_name().unwrap().to_string_lossy().to_string();
        let must_fail = name.ends_with("_fail");
        let artifact = if case.join("artifact").exists() {
            case.join("artifact")
        } else {
            cases().join("a.txt")
        };
        let digest = format!(
            "sha256:{}",
            hex::encode(Sha256::digest(std::fs::read(&artifact).unwrap()))
        );
        for input in [artifact.display().to_string(), digest] {
            let out = Command::new(env!("CARGO_BIN_EXE_driftless"))
                .args(arguments(case, &input))
                .env_remove("RUST_BACKTRACE")
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            let mode = if input.starts_with("sha256:") {
                "digest"
            } else {
                "path"
            };
            match (must_fail, out.status.success()) {
                (true, true) => wrong.push(format!("{name} ({mode}): accepted, must be refused")),
                (false, false) => wrong.push(format!("{name} ({mode}): refused: {stderr}")),
                (true, false) => assert!(
                    stderr.starts_with("Error: ") && stderr.trim().len() > "Error: ".len(),
                    "{name} ({mode}): a refusal names its cause: {stderr}"
                ),
                (false, true) => {}
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
