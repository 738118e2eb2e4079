//! Flux's object selector (`group`, `version`, `kind`, `name`, `namespace` as anchored regular
//! expressions; `labelSelector` and `annotationSelector` in Kubernetes label-selector syntax),
//! matched against objects in the controller, as `spec.ignore` targets need it. Both come from a
//! tenant's spec: regular expressions are size-bounded.

use std::collections::BTreeMap;

use regex::{Regex, RegexBuilder};
use serde_json::Value;

use crate::api::kustomization::Selector;
use crate::controller::labels::LabelSelector;

/// Compiled regular expressions may not grow past this (the `regex` crate runs in linear time;
/// this bounds its memory).
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// A compiled [`Selector`]: every field that is set must match.
#[derive(Debug)]
pub struct ObjectSelector {
    group: Option<Regex>,
    version: Option<Regex>,
    kind: Option<Regex>,
    name: Option<Regex>,
    namespace: Option<Regex>,
    labels: Option<LabelSelector>,
    annotations: Option<LabelSelector>,
}

impl ObjectSelector {
    pub fn compile(s: &Selector) -> Result<Self, String> {
        let regex = |field: &str, pattern: &Option<String>| -> Result<Option<Regex>, String> {
            match pattern.as_deref() {
                None | Some("") => Ok(None),
                Some(p) => anchored(p)
                    .map(Some)
                    .map_err(|e| format!("invalid {field} regex '{p}': {e}")),
            }
        };
        let selector = |field: &str, text: &Option<String>| match text.as_deref() {
            None | Some("") => Ok(None),
            Some(t) => LabelSelector::parse(t)
                .map(Some)
                .map_err(|e| format!("invalid {field} '{t}': {e}")),
        };
        Ok(ObjectSelector {
            group: regex("group", &s.group)?,
            version: regex("version", &s.version)?,
            kind: regex("kind", &s.kind)?,
            name: regex("name", &s.name)?,
            namespace: regex("namespace", &s.namespace)?,
            labels: selector("labelSelector", &s.label_selector)?,
            annotations: selector("annotationSelector", &s.annotation_selector)?,
        })
    }

    pub fn matches(&self, object: &Value) -> bool {
        let text = |p: &str| object.pointer(p).and_then(Value::as_str).unwrap_or("");
        let (group, version) = match text("/apiVersion").split_once('/') {
            Some((g, v)) => (g, v),
            None => ("", text("/apiVersion")),
        };
        let fits =
            |re: &Option<Regex>, value: &str| re.as_ref().is_none_or(|re| re.is_match(value));
        let map = |p: &str| -> BTreeMap<&str, &str> {
            object
                .pointer(p)
                .and_then(Value::as_object)
                .into_iter()
                .flatten()
                .filter_map(|(k, v)| Some((k.as_str(), v.as_str()?)))
                .collect()
        };
        fits(&self.group, group)
            && fits(&self.version, version)
            && fits(&self.kind, text("/kind"))
            && fits(&self.name, text("/metadata/name"))
            && fits(&self.namespace, text("/metadata/namespace"))
            && self
                .labels
                .as_ref()
                .is_none_or(|s| s.matches(&map("/metadata/labels")))
            && self
                .annotations
                .as_ref()
                .is_none_or(|s| s.matches(&map("/metadata/annotations")))
    }
}

/// Flux anchors selector expressions: `Deploy` does not match `Deployment`.
fn anchored(pattern: &str) -> Result<Regex, regex::Error> {
    RegexBuilder::new(&format!("^(?:{pattern})$"))
        .size_limit(REGEX_SIZE_LIMIT)
        .dfa_size_limit(REGEX_SIZE_LIMIT)
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn object_selectors_are_anchored_and_read_group_and_version() {
        let deployment = json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web-1", "namespace": "team-a", "labels": {"app": "web"},
                         "annotations": {"example.com/owner": "ops"}},
        });
        let select = |s: Value| {
            let s: Selector = serde_json::from_value(s).unwrap();
            ObjectSelector::compile(&s).unwrap().matches(&deployment)
        };
        assert!(select(json!({})));
        assert!(select(
            json!({"kind": "Deployment", "group": "apps", "version": "v1"})
        ));
        assert!(!select(json!({"kind": "Deploy"})), "anchored");
        assert!(select(json!({"kind": "Deploy.*"})));
        assert!(select(
            json!({"name": "web-[0-9]+", "namespace": "team-.*"})
        ));
        assert!(
            select(json!({"group": "", "name": ""})),
            "empty selects any"
        );
        assert!(select(json!({"labelSelector": "app=web"})));
        assert!(!select(json!({"labelSelector": "app=api"})));
        assert!(select(
            json!({"annotationSelector": "example.com/owner=ops"})
        ));
        let core = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}});
        let s: Selector = serde_json::from_value(json!({"group": "", "version": "v1"})).unwrap();
        assert!(ObjectSelector::compile(&s).unwrap().matches(&core));
        let s: Selector = serde_json::from_value(json!({"group": "apps"})).unwrap();
        assert!(!ObjectSelector::compile(&s).unwrap().matches(&core));
    }

    #[test]
    fn invalid_selector_fields_are_named() {
        let s: Selector = serde_json::from_value(json!({"name": "a("})).unwrap();
        let e = ObjectSelector::compile(&s).unwrap_err();
        assert!(e.starts_with("invalid name regex 'a('"), "{e}");
        let s: Selector = serde_json::from_value(json!({"labelSelector": "a in"})).unwrap();
        let e = ObjectSelector::compile(&s).unwrap_err();
        assert!(e.starts_with("invalid labelSelector 'a in'"), "{e}");
        let huge = "(a{1000}){1000}";
        let s: Selector = serde_json::from_value(json!({"kind": huge})).unwrap();
        assert!(ObjectSelector::compile(&s).is_err(), "size-bounded");
    }
}
