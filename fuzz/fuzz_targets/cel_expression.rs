//! Kustomization CEL (`healthCheckExprs`, `dependsOn[].readyExpr`): an expression and a JSON
//! object (NUL-separated). Never a panic nor a stack overflow; what is accepted is within the
//! length bound; a typed `readyExpr` evaluates to a boolean or an error, never to another value.
#![no_main]

use driftless::apply::cel::{Expression, MAX_EXPRESSION_BYTES, READY_EXPR_VARIABLES};
use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (source, object) = text.split_once('\0').unwrap_or((text, ""));
    let object: Value = serde_json::from_str(object).unwrap_or_else(|_| {
        json!({"metadata": {"name": "w", "generation": 1, "labels": {"a": "b"}},
               "status": {"observedGeneration": 1, "phase": "Running",
                          "conditions": [{"type": "Ready", "status": "True"}]}})
    });
    if let Ok(expression) = Expression::parse(source) {
        assert!(source.len() <= MAX_EXPRESSION_BYTES);
        let variables: Vec<(&str, &Value)> = object
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| (k.as_str(), v))
            .collect();
        let _ = expression.evaluate_boolean(&variables);
    }
    if let Ok(typed) = Expression::compile_boolean(source, READY_EXPR_VARIABLES) {
        let _ = typed.evaluate_boolean(&[("self", &object), ("dep", &object)]);
    }
});
