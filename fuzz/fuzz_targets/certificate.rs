//! A signing certificate (DER) as a bundle or a `.sig` annotation carries it: the identity read
//! from it (every subject alternative name, the OIDC issuer) and the key it certifies.
#![no_main]

use driftless::verify::certificate::SigningCertificate;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(cert) = SigningCertificate::parse(data) else {
        return;
    };
    let _ = cert.identity().to_string();
    let _ = cert.public_key().len();
});
