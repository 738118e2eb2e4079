//! CPU per verification, in process (a command, not a test): one Sigstore bundle verified the
//! way the controller does (`verify::check`: Sigstore's library for any identity, then Flux's
//! `matchOIDCIdentity` rules over every name of the certificate) and by the library alone with
//! its exact-identity policy, on the sigstore-conformance cases vendored in tests/fixtures
//! (public-good trusted root, Rekor v1 with inclusion proof and signed entry timestamp). Also
//! prints how the controller's path decides every message-signature case of the suite (DSSE
//! cases sign an in-toto subject, which the controller refuses by design: it takes cosign's
//! signatures only).
//!
//!   cargo bench --bench verify_cpu            # BENCH_N=2000 verifications per path

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use sha2::{Digest, Sha256};
use sigstore_verify::types::Bundle;
use sigstore_verify::{VerificationPolicy, Verifier};

use driftless::verify::bundle;
use driftless::verify::sigstore::TrustedRoot;
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

fn controller(case: &Case, root: &Arc<TrustedRoot>) -> Result<(), String> {
    let digest = format!("sha256:{}", hex::encode(Sha256::digest(&case.artifact)));
    let policy = Policy::Keyless {
        root: root.clone(),
        identities: vec![IdentityMatch::exact(ISSUER, IDENTITY)],
    };
    let candidate = Candidate::Bundle(bundle::parse(case.bundle.as_bytes()));
    check(&candidate, &policy, &digest, &case.artifact).map(|_| ())
}

fn library(case: &Case, verifier: &Verifier) -> Result<(), String> {
    let bundle = Bundle::from_json(&case.bundle).map_err(|e| e.to_string())?;
    let policy = VerificationPolicy::new(IDENTITY, ISSUER);
    verifier
        .verify(case.artifact.as_slice(), &bundle, &policy)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

fn library_verifier(root: &str) -> Verifier {
    let root = sigstore_verify::trust_root::TrustedRoot::from_json(root).unwrap();
    Verifier::new(&root).unwrap()
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
    let root = Arc::new(TrustedRoot::from_json(case.root.as_bytes()).unwrap());
    let verifier = library_verifier(&case.root);
    controller(&case, &root).expect("driftless verifies happy-path-v0.3");
    library(&case, &verifier).expect("sigstore-verify verifies happy-path-v0.3");
    println!(
        "CPU per verification of conformance case happy-path-v0.3 (keyless, Rekor v1), N = {n}:"
    );
    let controller_run = || controller(&case, &root);
    let library_run = || library(&case, &verifier);
    let runs: [(&str, &Run); 2] = [
        ("driftless verify::check", &controller_run),
        ("sigstore-verify 0.15.1 alone", &library_run),
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
        "\nMessage-signature cases (identity rules as the suite's defaults), the controller's decision:"
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
        let decision = TrustedRoot::from_json(case.root.as_bytes())
            .map(Arc::new)
            .and_then(|root| controller(&case, &root));
        if decision.is_ok() == expected_ok {
            agree += 1;
        } else {
            differ.push(format!(
                "  {:<55} expected {:<6} got {:?}",
                case.name,
                if expected_ok { "accept" } else { "refuse" },
                decision
            ));
        }
    }
    println!("  {agree} cases decided as the suite expects");
    for line in &differ {
        println!("{line}");
    }
}
