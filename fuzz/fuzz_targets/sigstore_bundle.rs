//! A Sigstore bundle from an OCI referrer, through everything verification reads from it: what
//! it signs, and the whole keyless check against the public-good root and a Rekor v2 one.
#![no_main]

use std::sync::{Arc, LazyLock};

use driftless::verify::sigstore::TrustedRoot;
use driftless::verify::{Candidate, Policy, bundle, check};
use libfuzzer_sys::fuzz_target;

const MANIFEST: &[u8] = br#"{"schemaVersion":2}"#;

static ROOTS: LazyLock<[Arc<TrustedRoot>; 2]> = LazyLock::new(|| {
    let rekor_v2 = include_bytes!("../../tests/fixtures/sigstore/rekor-v2/trusted_root.json");
    [
        TrustedRoot::public_good(),
        Arc::new(TrustedRoot::from_json(rekor_v2).expect("fixture root parses")),
    ]
});

fuzz_target!(|data: &[u8]| {
    let Ok(parsed) = bundle::parse(data) else {
        return;
    };
    let _ = bundle::signs_subject(&parsed);
    let _ = bundle::signed_bytes(&parsed, MANIFEST);
    let digest = bundle::subject_digest(&parsed).unwrap_or_default();
    let candidate = Candidate::Bundle(Ok(parsed));
    for root in ROOTS.iter() {
        let policy = Policy::Keyless {
            root: root.clone(),
            identities: Vec::new(),
        };
        let _ = check(&candidate, &policy, &digest, MANIFEST);
    }
});
