//! `spec.ref.semver` against a registry's tags: constraint, NUL, tags (one a line), and
//! optionally NUL and a `semverFilter`. The tag picked satisfies the constraint.
#![no_main]

use driftless::oci::semver::{Constraint, parse_version, select_tag};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut parts = text.splitn(3, '\0');
    let constraint = parts.next().unwrap_or_default();
    let tags: Vec<String> = parts
        .next()
        .unwrap_or_default()
        .lines()
        .map(String::from)
        .collect();
    let filter = parts.next();
    for tag in &tags {
        if let Some(v) = parse_version(tag) {
            assert_eq!(parse_version(&v.to_string()).as_ref(), Some(&v), "{tag:?}");
        }
    }
    for helm in [false, true] {
        if let Ok(tag) = select_tag(&tags, constraint, filter, helm) {
            let candidate = if helm {
                tag.replace('_', "+")
            } else {
                tag.clone()
            };
            let version = parse_version(&candidate).expect("a selected tag is a version");
            let parsed = Constraint::parse(constraint).expect("a constraint that selected parses");
            assert!(
                parsed.matches(&version),
                "{tag:?} does not satisfy {constraint:?}"
            );
        }
    }
});
