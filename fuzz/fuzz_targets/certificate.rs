//! A signing certificate (DER) as a bundle or a `.sig` annotation carries it: its identity, its
//! chain to the trusted root at the start of its validity, and its embedded SCTs.
#![no_main]

use driftless::verify::certificate::SigningCertificate;
use driftless::verify::trust::TrustedRoot;
use libfuzzer_sys::fuzz_target;
use x509_parser::prelude::{FromDer, X509Certificate};

fuzz_target!(|data: &[u8]| {
    let Ok(cert) = SigningCertificate::parse(data) else {
        return;
    };
    let _ = cert.identity().to_string();
    let _ = cert.verifies(b"message", b"signature");
    let root = TrustedRoot::public_good();
    let issued = X509Certificate::from_der(data)
        .ok()
        .and_then(|(_, c)| jiff::Timestamp::from_second(c.validity().not_before.timestamp()).ok());
    if let Some(at) = issued
        && let Ok(issuer_key) = cert.verify_chain(&root, at)
    {
        let _ = cert.verify_sct(&issuer_key, &root);
    }
    // The SCT list is read before any signature is checked: reach it whatever the chain says.
    let _ = cert.verify_sct(cert.public_key(), &root);
});
