//! An RFC 3161 timestamp token from a bundle, against the OpenSSL-made fixture's authority and
//! the signature it stamped (so mutations of a valid token get past the imprint check).
#![no_main]

use std::sync::LazyLock;

use driftless::util::pem_blocks;
use driftless::verify::timestamp;
use driftless::verify::trust::{CertificateAuthority, TimeRange, TrustedRoot};
use libfuzzer_sys::fuzz_target;

const SIGNED: &[u8] = include_bytes!("../../tests/fixtures/sigstore/tsa/sig.bin");

static ROOT: LazyLock<TrustedRoot> = LazyLock::new(|| {
    let chain = [
        include_str!("../../tests/fixtures/sigstore/tsa/tsa.crt"),
        include_str!("../../tests/fixtures/sigstore/tsa/root.crt"),
    ]
    .iter()
    .flat_map(|pem| pem_blocks(pem, "CERTIFICATE"))
    .collect();
    TrustedRoot {
        timestamp_authorities: vec![CertificateAuthority {
            uri: "https://tsa.test.invalid".into(),
            chain,
            valid_for: TimeRange::default(),
        }],
        ..Default::default()
    }
});

fuzz_target!(|data: &[u8]| {
    let _ = timestamp::verify(data, SIGNED, &ROOT);
    let _ = timestamp::verify(data, SIGNED, &TrustedRoot::public_good());
});
