//! `spec.interval`, `spec.timeout` and friends: never a panic, and a longer text is no shorter.
#![no_main]

use driftless::controller::requeue::parse_duration;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(d) = parse_duration(text)
        && let Ok(longer) = parse_duration(&format!("{text}1ns"))
    {
        assert!(longer >= d, "{text:?}: {longer:?} < {d:?}");
    }
});
