//! Kustomization `spec.ignore`: a label selector, JSON pointers and an object (NUL-separated).
//! Never a panic; a pointer that replaces a field reads that value back; a removed object
//! member is gone.
#![no_main]

use std::collections::BTreeMap;

use driftless::apply::ignore::{Pointer, owned_by_another_applier};
use driftless::controller::labels::LabelSelector;
use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut parts = text.splitn(3, '\0');
    let selector = parts.next().unwrap_or_default();
    let pointers = parts.next().unwrap_or("/spec/replicas");
    let object: Value = parts
        .next()
        .and_then(|o| serde_json::from_str(o).ok())
        .unwrap_or_else(|| json!({"metadata": {"labels": {"app": "web"}}}));
    if let Ok(s) = LabelSelector::parse(selector) {
        let labels: BTreeMap<&str, &str> = object
            .pointer("/metadata/labels")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
            .filter_map(|(k, v)| Some((k.as_str(), v.as_str()?)))
            .collect();
        s.matches(&labels);
    }
    for line in pointers.lines() {
        let Ok(p) = Pointer::parse(line) else {
            continue;
        };
        owned_by_another_applier(&object, &p, "kustomize-controller");
        let mut copy = object.clone();
        if p.replace(&mut copy, json!("marker")) {
            assert_eq!(p.get(&copy), Some(&json!("marker")), "{line}");
        }
        let was_member = p.get(&object).is_some() && !line.ends_with(|c: char| c.is_ascii_digit());
        let mut copy = object.clone();
        p.remove(&mut copy);
        if was_member && p.get(&copy).is_some() {
            // Only an array index may name a different element after a removal.
            panic!("{line}: still present after removal");
        }
    }
});
