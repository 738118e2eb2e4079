//! A registry's `Retry-After` value: seconds or an HTTP date, never more than the cap.
#![no_main]

use driftless::transport::{MAX_RETRY_AFTER, parse_retry_after};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(wait) = parse_retry_after(text) {
        assert!(wait <= MAX_RETRY_AFTER, "{text:?}: {wait:?}");
    }
});
