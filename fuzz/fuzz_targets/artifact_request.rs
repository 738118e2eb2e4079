//! A request to the artifact server: the URL path, NUL, a `Range` header. The path maps to
//! plain names under the storage root; a partial range lies inside the file.
#![no_main]

use std::path::Component;

use driftless::artifact::server::{ByteRange, parse_range, request_path};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (path, range) = text.split_once('\0').unwrap_or((text, "bytes=0-"));
    if let Some(rel) = request_path(path) {
        assert!(
            rel.components().all(|c| matches!(c, Component::Normal(_))),
            "{rel:?}"
        );
    }
    for size in [0, 1, 1000, u64::MAX] {
        if let ByteRange::Partial { start, end } = parse_range(range, size) {
            assert!(
                start <= end && end < size,
                "{range:?} of {size}: {start}-{end}"
            );
        }
    }
});
