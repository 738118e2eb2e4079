//! A ListObjectsV2 page from an S3 endpoint (and its error bodies).
#![no_main]

use driftless::identity::auth::xml_text;
use driftless::source::bucket::index::{EtagStyle, normalize_etag, unsafe_key};
use driftless::source::bucket::s3::list_page;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok((entries, next)) = list_page(data) {
        assert!(next.is_none_or(|t| !t.is_empty()));
        for entry in entries {
            let _ = unsafe_key(&entry.key);
            let _ = normalize_etag(EtagStyle::Plain, &entry.etag);
        }
    }
    // Error bodies are read as text, decoded lossily as reqwest's `text()` does.
    let _ = xml_text(&String::from_utf8_lossy(data), "Message");
});
