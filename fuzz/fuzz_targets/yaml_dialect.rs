//! Any text read as kustomize and as sigs.k8s.io/yaml read YAML, and as a kustomization file:
//! an error or a value, never a panic; and no number the API server would see as an integer
//! is left a float.
#![no_main]

use driftless::apply::yaml::{Budget, Dialect, documents, kustomization};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for dialect in [Dialect::Kustomize, Dialect::SigsYaml] {
        if let Ok(docs) = documents(text, &mut Budget::default(), dialect) {
            docs.iter().for_each(assert_json_numbers);
        }
    }
    if let Ok(k) = kustomization(text, &mut Budget::default()) {
        assert_json_numbers(&k);
    }
});

/// Go's encoding/json writes an integral float below 1e21 without a fraction, so it comes back
/// an integer whenever it fits one.
fn assert_json_numbers(value: &Value) {
    match value {
        Value::Number(n) => {
            if let Some(f) = n.as_f64().filter(|_| n.is_f64()) {
                assert!(
                    f.fract() != 0.0 || f.abs() >= 9.2e18,
                    "{f} should have become an integer"
                );
            }
        }
        Value::Array(items) => items.iter().for_each(assert_json_numbers),
        Value::Object(entries) => entries.values().for_each(assert_json_numbers),
        _ => {}
    }
}
