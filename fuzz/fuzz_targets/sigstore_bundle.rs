//! A Sigstore bundle from an OCI referrer, through everything verification reads from it: the
//! log entries (against the public-good root and a Rekor v2 one), the RFC 3161 timestamps, the
//! certificate, and the whole keyless check.
#![no_main]

use std::sync::{Arc, LazyLock};

use driftless::verify::bundle::{Bundle, Signer};
use driftless::verify::certificate::SigningCertificate;
use driftless::verify::tlog::{Expected, verify_entry};
use driftless::verify::trust::TrustedRoot;
use driftless::verify::{Candidate, Policy, check, timestamp};
use libfuzzer_sys::fuzz_target;
use sha2::{Digest, Sha256};

const MANIFEST: &[u8] = br#"{"schemaVersion":2}"#;

static ROOTS: LazyLock<[Arc<TrustedRoot>; 2]> = LazyLock::new(|| {
    let rekor_v2 = include_bytes!("../../tests/fixtures/sigstore/rekor-v2/trusted_root.json");
    [
        TrustedRoot::public_good(),
        Arc::new(TrustedRoot::from_json(rekor_v2).expect("fixture root parses")),
    ]
});

fuzz_target!(|data: &[u8]| {
    let Ok(bundle) = Bundle::parse(data) else {
        return;
    };
    let signed = bundle.signed_bytes(MANIFEST);
    let expected = Expected {
        signature: bundle.content.signature(),
        signed_sha256: Sha256::digest(&signed).into(),
        payload_sha256: bundle.content.payload_sha256(),
        verifier: match &bundle.signer {
            Signer::Certificate(der) => der,
            Signer::PublicKey { .. } => &[],
        },
    };
    for root in ROOTS.iter() {
        for entry in &bundle.log_entries {
            let _ = verify_entry(entry, root, &expected);
        }
        for token in &bundle.timestamps {
            let _ = timestamp::verify(token, bundle.content.signature(), root);
        }
    }
    if let Signer::Certificate(der) = &bundle.signer
        && let Ok(cert) = SigningCertificate::parse(der)
    {
        let _ = cert.identity().to_string();
    }
    let digest = bundle.content.subject_digest().unwrap_or_default();
    let candidate = Candidate::Bundle(Ok(bundle));
    for root in ROOTS.iter() {
        let policy = Policy::Keyless {
            root: root.clone(),
            identities: Vec::new(),
        };
        let _ = check(&candidate, &policy, &digest, MANIFEST);
    }
});
