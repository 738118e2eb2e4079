//! The CustomResourceDefinitions, generated from the Rust types and shaped like Flux's.

// kube-derive's output differs from controller-gen's in ways a Flux client can see, so they are
// undone here, in one place: it marks every `Option` field `nullable` and lets optional enums
// take `null` (Flux's schemas never accept `null`), it makes `spec` required (Flux's do not),
// and its root schema lacks the `apiVersion`, `kind` and `metadata` properties. Descriptions
// are reflowed so that `kubectl explain` reads well.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;
use serde_json::Value;

use super::{Bucket, Kustomization, OCIRepository};

const HEADER: &str =
    "# Generated from the Rust types in src/api by `driftless crds --dir crds`; do not edit.\n";

/// Every CRD driftless serves or reads, in a stable order.
pub fn all() -> Vec<CustomResourceDefinition> {
    vec![
        flux_shaped(OCIRepository::crd()),
        flux_shaped(Bucket::crd()),
        flux_shaped(Kustomization::crd()),
    ]
}

/// The file a CRD is kept in under `crds/`: `<group>_<plural>.yaml`, as Flux names them.
pub fn file_name(crd: &CustomResourceDefinition) -> String {
    format!("{}_{}.yaml", crd.spec.group, crd.spec.names.plural)
}

/// One CRD as the YAML committed in `crds/`.
pub fn to_yaml(crd: &CustomResourceDefinition) -> Result<String, serde_saphyr::ser::Error> {
    Ok(format!("{HEADER}---\n{}", serde_saphyr::to_string(crd)?))
}

fn flux_shaped(mut crd: CustomResourceDefinition) -> CustomResourceDefinition {
    for version in &mut crd.spec.versions {
        let Some(schema) = version
            .schema
            .as_mut()
            .and_then(|s| s.open_api_v3_schema.take())
        else {
            continue;
        };
        let mut value = serde_json::to_value(schema).expect("a JSONSchemaProps serializes");
        strip_null(&mut value);
        reflow_descriptions(&mut value);
        shape_root(&mut value, &crd.spec.names.kind);
        version
            .schema
            .as_mut()
            .expect("checked above")
            .open_api_v3_schema = Some(
            serde_json::from_value(value).expect("the reshaped schema is still a JSONSchemaProps"),
        );
    }
    crd
}

fn strip_null(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.remove("nullable");
            if let Some(Value::Array(allowed)) = map.get_mut("enum") {
                allowed.retain(|v| !v.is_null());
            }
            map.values_mut().for_each(strip_null);
        }
        Value::Array(items) => items.iter_mut().for_each(strip_null),
        _ => {}
    }
}

/// Doc comments wrap at the source's line width; `kubectl explain` wraps on its own, so lines
/// inside a paragraph are joined (blank lines still separate paragraphs).
fn reflow_descriptions(value: &mut Value) {
    match value {
        Value::Object(map) => {
            if let Some(Value::String(d)) = map.get_mut("description") {
                *d = d
                    .split("\n\n")
                    .map(|p| p.split('\n').map(str::trim).collect::<Vec<_>>().join(" "))
                    .collect::<Vec<_>>()
                    .join("\n\n");
            }
            map.values_mut().for_each(reflow_descriptions);
        }
        Value::Array(items) => items.iter_mut().for_each(reflow_descriptions),
        _ => {}
    }
}

fn shape_root(schema: &mut Value, kind: &str) {
    let Some(root) = schema.as_object_mut() else {
        return;
    };
    root.remove("required");
    root.remove("title");
    if let Some(rules) = root_rules(kind) {
        root.insert("x-kubernetes-validations".into(), rules);
    }
    let properties = root
        .entry("properties")
        .or_insert_with(|| Value::Object(Default::default()))
        .as_object_mut()
        .expect("the root schema's properties are an object");
    properties.insert(
        "apiVersion".into(),
        serde_json::json!({
            "description": "The versioned schema of this representation of an object; servers convert recognized schemas to their latest internal value.",
            "type": "string"
        }),
    );
    properties.insert(
        "kind".into(),
        serde_json::json!({
            "description": format!("The REST resource this object represents: `{kind}`."),
            "type": "string"
        }),
    );
    properties.insert("metadata".into(), serde_json::json!({"type": "object"}));
}

/// Rules on the whole object: Flux v1.10 requires OCIRepository's `spec.url` and
/// `spec.interval` this way (so that a missing field is reported by name).
fn root_rules(kind: &str) -> Option<Value> {
    (kind == "OCIRepository").then(|| {
        serde_json::json!([
            {"rule": "has(self.spec) && has(self.spec.url)", "message": "spec.url is required"},
            {"rule": "has(self.spec) && has(self.spec.interval)", "message": "spec.interval is required"}
        ])
    })
}

/// One field of a CRD schema in the form of the Flux oracle files
/// (`tests/fixtures/flux-crd-schema/*.tsv`): its path, type, whether its parent requires it,
/// and the validation facts beyond type and description.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldFacts {
    pub path: String,
    pub type_: String,
    pub required: bool,
    pub facts: serde_json::Map<String, Value>,
}

/// The fields of a CRD version's schema, depth first. Paths use `.field`, `[]` for array items
/// and `{}` for map values; the root is `.`.
pub fn schema_fields(crd: &CustomResourceDefinition, version: &str) -> Vec<FieldFacts> {
    let schema = crd
        .spec
        .versions
        .iter()
        .find(|v| v.name == version)
        .and_then(|v| v.schema.as_ref())
        .and_then(|s| s.open_api_v3_schema.as_ref())
        .map(|s| serde_json::to_value(s).expect("a JSONSchemaProps serializes"))
        .unwrap_or(Value::Null);
    let mut out = Vec::new();
    walk(&schema, ".".to_string(), false, &mut out);
    out
}

const STRUCTURE_KEYS: &[&str] = &[
    "type",
    "description",
    "properties",
    "items",
    "additionalProperties",
    "required",
];

fn walk(node: &Value, path: String, required: bool, out: &mut Vec<FieldFacts>) {
    let Some(map) = node.as_object() else { return };
    let mut facts = serde_json::Map::new();
    for (key, value) in map {
        if STRUCTURE_KEYS.contains(&key.as_str()) {
            continue;
        }
        let value = if key == "x-kubernetes-validations" {
            cel_rules(value)
        } else {
            value.clone()
        };
        facts.insert(key.clone(), value);
    }
    out.push(FieldFacts {
        path: path.clone(),
        type_: map
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        required,
        facts,
    });
    let child = |name: &str| {
        if path == "." {
            format!(".{name}")
        } else {
            format!("{path}.{name}")
        }
    };
    let required_names: Vec<&str> = map
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if let Some(props) = map.get("properties").and_then(Value::as_object) {
        let mut names: Vec<&String> = props.keys().collect();
        names.sort();
        for name in names {
            walk(
                &props[name],
                child(name),
                required_names.contains(&name.as_str()),
                out,
            );
        }
    }
    if let Some(items) = map.get("items") {
        walk(items, format!("{path}[]"), false, out);
    }
    if let Some(values) = map.get("additionalProperties").filter(|v| v.is_object()) {
        walk(values, format!("{path}{{}}"), false, out);
    }
}

/// The oracle records CEL validations by their rules only; messages are ours to word.
fn cel_rules(validations: &Value) -> Value {
    Value::Array(
        validations
            .as_array()
            .map(|rules| {
                rules
                    .iter()
                    .filter_map(|r| r.get("rule").cloned())
                    .collect()
            })
            .unwrap_or_default(),
    )
}
