//! A layer of cosign's legacy `.sig` tag: the simple-signing payload, NUL, the
//! `dev.sigstore.cosign/bundle` annotation (its Rekor entry), NUL, the certificate (DER): turned
//! into its v0.1 bundle and checked keyless and with a key.
#![no_main]

use driftless::verify::sigstore::TrustedRoot;
use driftless::verify::{Candidate, NamedKey, Policy, check, cosign};
use libfuzzer_sys::fuzz_target;

const DIGEST: &str = "sha256:732112270d7e59418a8c080b134b24cabd67d250d0d0147a97ed95ba5c280aa4";

fuzz_target!(|data: &[u8]| {
    let mut parts = data.splitn(3, |b| *b == 0);
    let payload = parts.next().unwrap_or_default();
    let annotation = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
    let certificate = parts.next().map(|der| der.to_vec());
    let _ = cosign::check_payload(payload, DIGEST);
    // The payload check comes first in `check`: name the digest so that mutations get past it.
    let named = cosign::simple_signing_payload("r.io/app", DIGEST);
    for payload in [payload, named.as_slice()] {
        let candidate = Candidate::Simple {
            payload: payload.to_vec(),
            signature: b"signature".to_vec(),
            certificate: certificate.clone(),
            rekor_bundle: Some(annotation.clone()),
        };
        let keyless = Policy::Keyless {
            root: TrustedRoot::public_good(),
            identities: Vec::new(),
        };
        let _ = check(&candidate, &keyless, DIGEST, b"{}");
        let keys = Policy::Keys(vec![NamedKey {
            name: "k.pub".into(),
            der: certificate.clone().unwrap_or_default(),
        }]);
        let _ = check(&candidate, &keys, DIGEST, b"{}");
    }
});
