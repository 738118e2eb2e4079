//! A List Blobs page from an Azure Blob endpoint.
#![no_main]

use driftless::source::bucket::azure::list_page;
use driftless::source::bucket::index::{EtagStyle, normalize_etag, unsafe_key};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok((entries, next)) = list_page(data) {
        assert!(next.is_none_or(|m| !m.is_empty()));
        for entry in entries {
            let _ = unsafe_key(&entry.key);
            let _ = normalize_etag(EtagStyle::HexEncoded, &entry.etag);
        }
    }
});
