//! A Notary Project signature envelope from a registry (the first byte picks JWS or COSE),
//! through everything verification reads from it, under a strict statement trusting the
//! fixture root (so mutations of the real envelopes get past the trust check) and its timestamp
//! authority.
#![no_main]

use std::sync::LazyLock;

use driftless::verify::notation::envelope::{self, TargetArtifact};
use driftless::verify::notation::trust_policy::{Statement, TrustPolicy};
use driftless::verify::notation::{certificates_of, verify_signature};
use libfuzzer_sys::fuzz_target;

static SETUP: LazyLock<(Statement, Vec<Vec<u8>>)> = LazyLock::new(|| {
    let policy = br#"{"version":"1.0","trustPolicies":[{"name":"f","registryScopes":["*"],
        "signatureVerification":{"level":"strict"},"trustStores":["ca:f","tsa:f"],
        "trustedIdentities":["x509.subject: C=US, ST=WA, O=Driftless Test"]}]}"#;
    let policy = TrustPolicy::parse(policy).expect("fixture policy");
    let statement = policy.applicable("r.io/app").expect("wildcard").clone();
    let mut trusted = certificates_of(include_bytes!("../../tests/fixtures/notation/root.crt"))
        .expect("fixture root");
    trusted.extend(
        certificates_of(include_bytes!("../../tests/fixtures/notation/tsa-root.crt"))
            .expect("fixture TSA root"),
    );
    (statement, trusted)
});

fuzz_target!(|data: &[u8]| {
    let Some((&kind, bytes)) = data.split_first() else {
        return;
    };
    let media_type = if kind & 1 == 0 {
        envelope::JWS_MEDIA_TYPE
    } else {
        envelope::COSE_MEDIA_TYPE
    };
    let target = TargetArtifact {
        media_type: "application/vnd.oci.image.manifest.v1+json".into(),
        digest: "sha256:f23d15bcefc4dc964bad6c76625e72679d7a656203c15bda3281dbe3f4686c31".into(),
        size: 468,
    };
    let (statement, trusted) = &*SETUP;
    let now = jiff::Timestamp::from_second(1_796_000_000).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
    let _ = verify_signature(statement, trusted, media_type, bytes, &target, now);
});
