//! CPU per verification, in process (a command, not a test): the same Sigstore bundle verified
//! by driftless's own verifier (`verify::check`, which the controller uses today) and by
//! Sigstore's library (`verify::sigstore`, which the conformance subcommand uses), on the
//! sigstore-conformance cases vendored in tests/fixtures (public-good trusted root, Rekor v1
//! with inclusion proof and signed entry timestamp). Also prints how each verifier decides
//! every message-signature case of the suite (DSSE cases sign an in-toto subject, which the
//! controller's verifier refuses by design: it takes cosign's signatures only).
//!
//!   cargo bench --bench verify_cpu            # BENCH_N=2000 verifications per verifier

use std::path::{Path, PathBuf};
use std::time::Instant;

use sha2::{Digest, Sha256};

use driftless::verify::bundle::Bundle;
use driftless::verify::sigstore::{BundleVerifier, Signed, Signer};
use driftless::verify::trust::TrustedRoot;
use driftless::verify::{Candidate, IdentityMatch, Policy, check};

const IDENTITY: &str = "https://github.com/sigstore-conformance/extremely-dangerous-public-oidc-beacon/.github/workflows/extremely-dangerous-oidc-beacon.yml@refs/heads/main";
const ISSUER: &str = "https://token.actions.githubusercontent.com";

/// One verification, timed.
type Run<'a> = dyn Fn() -> Result<(), String> + 'a;

fn cases() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sigstore-conformance/bundle-verify")
}

struct Case {
    name: String,
    bundle: String,
    artifact: Vec<u8>,
    root: String,
}

fn load(dir: &Path) -> Case {
    let read = |p: PathBuf| std::fs::read(p).unwrap();
    let artifact = if dir.join("artifact").exists() {
        read(dir.join("artifact"))
    } else {
        read(cases().join("a.txt"))
    };
    let root = std::fs::read_to_string(dir.join("trusted_root.json"))
        .unwrap_or_else(|_| driftless::verify::sigstore::PUBLIC_GOOD_TRUSTED_ROOT.to_string());
    Case {
        name: dir.file_name().unwrap().to_string_lossy().into(),
        bundle: std::fs::read_to_string(dir.join("bundle.sigstore.json")).unwrap(),
        artifact,
        root,
    }
}

fn ours(case: &Case, root: &std::sync::Arc<TrustedRoot>) -> Result<(), String> {
    let digest = format!("sha256:{}", hex::encode(Sha256::digest(&case.artifact)));
    let policy = Policy::Keyless {
        root: root.clone(),
        identities: vec![IdentityMatch::exact(ISSUER, IDENTITY)],
    };
    let candidate = Candidate::Bundle(Bundle::parse(case.bundle.as_bytes()));
    check(&candidate, &policy, &digest, &case.artifact).map(|_| ())
}

fn library(case: &Case, verifier: &BundleVerifier) -> Result<(), String> {
    let rules = [IdentityMatch::exact(ISSUER, IDENTITY)];
    verifier
        .verify(
            &case.bundle,
            Signed::Bytes(&case.artifact),
            Signer::Identity(&rules),
        )
        .map(|_| ())
}

fn main() {
    // `cargo test --all-targets` runs benches without `--bench`: a debug-build timing is noise.
    if !std::env::args().any(|a| a == "--bench") {
        println!("verify_cpu: a benchmark; run it with `cargo bench --bench verify_cpu`");
        return;
    }
    let n: u32 = std::env::var("BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let case = load(&cases().join("happy-path-v0.3"));
    let root = std::sync::Arc::new(TrustedRoot::from_json(case.root.as_bytes()).unwrap());
    let verifier = BundleVerifier::from_trusted_root(&case.root).unwrap();
    ours(&case, &root).expect("driftless verifies happy-path-v0.3");
    library(&case, &verifier).expect("sigstore-verify verifies happy-path-v0.3");
    println!(
        "CPU per verification of conformance case happy-path-v0.3 (keyless, Rekor v1), N = {n}:"
    );
    let ours_run = || ours(&case, &root);
    let library_run = || library(&case, &verifier);
    let runs: [(&str, &Run); 2] = [
        ("driftless verify::check", &ours_run),
        ("sigstore-verify 0.15.1", &library_run),
    ];
    for (name, run) in runs {
        let start = Instant::now();
        for _ in 0..n {
            run().unwrap();
        }
        let per = start.elapsed() / n;
        println!("  {name:<26} {per:>10.1?} per verification (parse included)");
    }

    println!(
        "\nMessage-signature cases (identity rules as the suite's defaults), each verifier's decision:"
    );
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(cases())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("bundle.sigstore.json").exists() && !p.join("key.pub").exists())
        .collect();
    dirs.sort();
    let (mut agree, mut differ) = (0, Vec::new());
    for dir in dirs {
        let case = load(&dir);
        if case.bundle.contains("\"dsseEnvelope\"") || dir.join("identity").exists() {
            continue;
        }
        let expected_ok = !case.name.ends_with("_fail");
        let ours_ok = TrustedRoot::from_json(case.root.as_bytes())
            .map(std::sync::Arc::new)
            .and_then(|root| ours(&case, &root))
            .is_ok();
        let library_ok = BundleVerifier::from_trusted_root(&case.root)
            .and_then(|v| library(&case, &v))
            .is_ok();
        if ours_ok == expected_ok && library_ok == expected_ok {
            agree += 1;
        } else {
            differ.push(format!(
                "  {:<55} expected {:<6} driftless {:<6} library {}",
                case.name,
                if expected_ok { "accept" } else { "refuse" },
                if ours_ok { "accept" } else { "refuse" },
                if library_ok { "accept" } else { "refuse" }
            ));
        }
    }
    println!("  {agree} cases decided as expected by both");
    for line in &differ {
        println!("{line}");
    }
}
