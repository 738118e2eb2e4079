//! An artifact's YAML and the post-build variables of a Kustomization: YAML, NUL, `name=value`
//! lines. Decoding, then substituting each object as the apply controller does, never panics;
//! text without a `$` is left alone.
#![no_main]

use std::collections::BTreeMap;

use driftless::apply::build::decode;
use driftless::apply::substitute::{substitute, validate_names};
use driftless::apply::yaml::{Budget, Dialect, document};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (yaml, vars) = text.split_once('\0').unwrap_or((text, "app=web\nempty="));
    let vars: BTreeMap<String, String> = vars
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let _ = validate_names(&vars);
    for strict in [false, true] {
        let out = substitute(yaml, &vars, strict);
        if !yaml.contains('$') {
            assert_eq!(out.as_deref(), Ok(yaml));
        }
    }
    let Ok(objects) = decode(yaml, "fuzz.yaml") else {
        return;
    };
    for object in objects {
        let Ok(text) = serde_saphyr::to_string(&object) else {
            continue;
        };
        if let Ok(text) = substitute(&text, &vars, false) {
            let _ = document(&text, &mut Budget::default(), Dialect::SigsYaml);
        }
    }
});
