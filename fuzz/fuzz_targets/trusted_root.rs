//! A tenant's `trusted_root.json` (keyless verification's `trustedRootSecretRef`), then a real
//! public-good bundle checked against it: tenant-chosen logs, keys and certificate chains.
#![no_main]

use std::sync::{Arc, LazyLock};

use driftless::verify::sigstore::TrustedRoot;
use driftless::verify::{Candidate, Policy, bundle, check};
use libfuzzer_sys::fuzz_target;

static BUNDLE: LazyLock<(Candidate, String)> = LazyLock::new(|| {
    let json = include_bytes!("../../tests/fixtures/sigstore/oci-attestation.sigstore.json");
    let parsed = bundle::parse(json).expect("fixture bundle parses");
    let digest = bundle::subject_digest(&parsed).expect("fixture bundle signs a digest");
    (Candidate::Bundle(Ok(parsed)), digest)
});

fuzz_target!(|data: &[u8]| {
    let Ok(root) = TrustedRoot::from_json(data) else {
        return;
    };
    let (candidate, digest) = &*BUNDLE;
    let policy = Policy::Keyless {
        root: Arc::new(root),
        identities: Vec::new(),
    };
    let _ = check(candidate, &policy, digest, b"{}");
});
