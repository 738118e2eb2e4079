//! `spec.url` of an OCIRepository: a parsed reference re-serialises to one that parses the same.
#![no_main]

use driftless::oci::reference::RepositoryUrl;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(url) = RepositoryUrl::parse(text) {
        let again = RepositoryUrl::parse(&format!("oci://{url}"));
        assert_eq!(again.as_ref(), Ok(&url), "{text:?} re-serialised as {url}");
        let _ = url.reference("v1.0.0");
    }
});
