//! `.sourceignore` files and `spec.ignore`: patterns, then NUL, then paths (one a line).
#![no_main]

use std::path::Path;

use driftless::artifact::{DefaultPatterns, IgnoreRules};
use driftless::source::bucket::index::KeyFilter;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (patterns, paths) = text
        .split_once('\0')
        .unwrap_or((text, "a/b.yaml\n.git/x\nc.png"));
    for defaults in [DefaultPatterns::None, DefaultPatterns::Flux] {
        let rules = IgnoreRules::from_patterns(patterns, defaults);
        for path in paths.lines() {
            rules.is_ignored(Path::new(path), false);
            rules.is_ignored(Path::new(path), true);
        }
    }
    let keys = KeyFilter::new(Some(patterns), Some(paths));
    for key in paths.lines() {
        let _ = keys.check(key);
    }
});
