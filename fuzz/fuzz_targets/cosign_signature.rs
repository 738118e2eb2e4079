//! A layer of cosign's legacy `.sig` tag: the simple-signing payload, NUL, the
//! `dev.sigstore.cosign/bundle` annotation (its Rekor entry), NUL, the certificate annotation.
#![no_main]

use driftless::verify::bundle::legacy_log_entry;
use driftless::verify::tlog::{Expected, verify_entry};
use driftless::verify::trust::TrustedRoot;
use driftless::verify::{Candidate, Policy, check, cosign};
use libfuzzer_sys::fuzz_target;
use sha2::{Digest, Sha256};

const DIGEST: &str = "sha256:732112270d7e59418a8c080b134b24cabd67d250d0d0147a97ed95ba5c280aa4";

fuzz_target!(|data: &[u8]| {
    let mut parts = data.splitn(3, |b| *b == 0);
    let payload = parts.next().unwrap_or_default();
    let annotation = String::from_utf8_lossy(parts.next().unwrap_or_default());
    let certificate = parts.next().map(|pem| pem.to_vec());
    let _ = cosign::check_payload(payload, DIGEST);
    let log_entry = legacy_log_entry(&annotation);
    if let Ok(entry) = &log_entry {
        let expected = Expected {
            signature: b"signature",
            signed_sha256: Sha256::digest(payload).into(),
            payload_sha256: None,
            verifier: certificate.as_deref().unwrap_or_default(),
        };
        let _ = verify_entry(entry, &TrustedRoot::public_good(), &expected);
    }
    let candidate = Candidate::Simple {
        payload: payload.to_vec(),
        signature: b"signature".to_vec(),
        certificate,
        log_entry: Some(log_entry),
    };
    let policy = Policy::Keyless {
        root: TrustedRoot::public_good(),
        identities: Vec::new(),
    };
    let _ = check(&candidate, &policy, DIGEST, b"{}");
});
