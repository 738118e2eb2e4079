//! A tenant's `trusted_root.json` (keyless verification's `trustedRootSecretRef`), then a real
//! public-good bundle checked against it: tenant-chosen logs, keys and certificate chains.
#![no_main]

use std::sync::{Arc, LazyLock};

use driftless::verify::bundle::Bundle;
use driftless::verify::trust::TrustedRoot;
use driftless::verify::{Candidate, Policy, check};
use libfuzzer_sys::fuzz_target;

static BUNDLE: LazyLock<(Candidate, String)> = LazyLock::new(|| {
    let json = include_bytes!("../../tests/fixtures/sigstore/oci-attestation.sigstore.json");
    let bundle = Bundle::parse(json).expect("fixture bundle parses");
    let digest = bundle
        .content
        .subject_digest()
        .expect("fixture bundle signs a digest");
    (Candidate::Bundle(Ok(bundle)), digest)
});

fuzz_target!(|data: &[u8]| {
    let Ok(root) = TrustedRoot::from_json(data) else {
        return;
    };
    assert!(root.logs.iter().all(|l| l.valid_for.start.is_some()));
    assert!(root.authorities.iter().all(|ca| !ca.chain.is_empty()));
    let (candidate, digest) = &*BUNDLE;
    let policy = Policy::Keyless {
        root: Arc::new(root),
        identities: Vec::new(),
    };
    let _ = check(candidate, &policy, digest, b"{}");
});
