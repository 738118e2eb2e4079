//! sigs.k8s.io/yaml's coercion of numbers and booleans under kustomize's string fields, as
//! Flux's generator applies it when it reads a kustomization.yaml into `kustypes.Kustomization`.

// Flux reads the file with `yaml.Unmarshal(data, &kustypes.Kustomization{})`, whose
// `convertToJSONableObject` turns a go-yaml v2 int, float or bool into its Go text wherever
// the Go field is a string (`commonAnnotations: {a: yes}` becomes "true", `newTag: 1.20`
// becomes "1.2"), and writes the struct back. kustomize's own reading of the file has no such
// target, so without this its strict JSON decoding refuses the file. The shapes below are the
// string fields of the kustomize api v0.21.1 types (embedded structs flattened, as
// encoding/json sees them).

use serde_json::{Number, Value};

use super::strconv::format_float_g32;

type Field = (&'static str, Shape);

/// What kustomize's Go type is at one place of the file.
enum Shape {
    /// `string` (or a named string type).
    Text,
    /// `[]string`.
    Texts,
    /// `map[string]string`.
    TextMap,
    /// A struct with these fields (the rest keep their type).
    Object(&'static [Field]),
    /// A slice of such structs.
    List(&'static [Field]),
}

use Shape::{List, Object, Text, TextMap, Texts};

const KUSTOMIZATION: &[Field] = &[
    ("apiVersion", Text),
    ("kind", Text),
    ("metadata", Object(OBJECT_META)),
    ("openapi", TextMap),
    ("namePrefix", Text),
    ("nameSuffix", Text),
    ("namespace", Text),
    ("commonLabels", TextMap),
    ("labels", List(LABEL)),
    ("commonAnnotations", TextMap),
    ("patchesStrategicMerge", Texts),
    ("patchesJson6902", List(PATCH)),
    ("patches", List(PATCH)),
    ("images", List(IMAGE)),
    ("imageTags", List(IMAGE)),
    ("replacements", List(REPLACEMENT_FIELD)),
    ("replicas", List(REPLICA)),
    ("vars", List(VAR)),
    ("sortOptions", Object(SORT_OPTIONS)),
    ("resources", Texts),
    ("components", Texts),
    ("crds", Texts),
    ("bases", Texts),
    ("configMapGenerator", List(GENERATOR_ARGS)),
    ("secretGenerator", List(SECRET_ARGS)),
    ("helmGlobals", Object(HELM_GLOBALS)),
    ("helmCharts", List(HELM_CHART)),
    ("helmChartInflationGenerator", List(HELM_CHART_ARGS)),
    ("generatorOptions", Object(GENERATOR_OPTIONS)),
    ("configurations", Texts),
    ("generators", Texts),
    ("transformers", Texts),
    ("validators", Texts),
    ("buildMetadata", Texts),
];

const OBJECT_META: &[Field] = &[
    ("name", Text),
    ("namespace", Text),
    ("labels", TextMap),
    ("annotations", TextMap),
];

const FIELD_SPEC: &[Field] = &[
    ("group", Text),
    ("version", Text),
    ("kind", Text),
    ("path", Text),
];

const LABEL: &[Field] = &[("pairs", TextMap), ("fields", List(FIELD_SPEC))];

const SELECTOR: &[Field] = &[
    ("group", Text),
    ("version", Text),
    ("kind", Text),
    ("name", Text),
    ("namespace", Text),
    ("annotationSelector", Text),
    ("labelSelector", Text),
];

const PATCH: &[Field] = &[
    ("path", Text),
    ("patch", Text),
    ("target", Object(SELECTOR)),
];

const IMAGE: &[Field] = &[
    ("name", Text),
    ("newName", Text),
    ("tagSuffix", Text),
    ("newTag", Text),
    ("digest", Text),
];

const FIELD_OPTIONS: &[Field] = &[("delimiter", Text), ("encoding", Text)];

const SOURCE_SELECTOR: &[Field] = &[
    ("group", Text),
    ("version", Text),
    ("kind", Text),
    ("name", Text),
    ("namespace", Text),
    ("fieldPath", Text),
    ("options", Object(FIELD_OPTIONS)),
];

const TARGET_SELECTOR: &[Field] = &[
    ("select", Object(SELECTOR)),
    ("reject", List(SELECTOR)),
    ("fieldPaths", Texts),
    ("options", Object(FIELD_OPTIONS)),
];

const REPLACEMENT_FIELD: &[Field] = &[
    ("path", Text),
    ("source", Object(SOURCE_SELECTOR)),
    ("targets", List(TARGET_SELECTOR)),
    ("sourceValue", Text),
];

const REPLICA: &[Field] = &[("name", Text)];

const VAR: &[Field] = &[
    ("name", Text),
    ("objref", Object(VAR_TARGET)),
    ("fieldref", Object(&[("fieldPath", Text)])),
];

const VAR_TARGET: &[Field] = &[
    ("apiVersion", Text),
    ("group", Text),
    ("version", Text),
    ("kind", Text),
    ("name", Text),
    ("namespace", Text),
];

const SORT_OPTIONS: &[Field] = &[
    ("order", Text),
    (
        "legacySortOptions",
        Object(&[("orderFirst", Texts), ("orderLast", Texts)]),
    ),
];

const GENERATOR_OPTIONS: &[Field] = &[("labels", TextMap), ("annotations", TextMap)];

const GENERATOR_ARGS: &[Field] = &[
    ("namespace", Text),
    ("name", Text),
    ("behavior", Text),
    ("literals", Texts),
    ("files", Texts),
    ("envs", Texts),
    ("env", Text),
    ("options", Object(GENERATOR_OPTIONS)),
];

const SECRET_ARGS: &[Field] = &[
    ("namespace", Text),
    ("name", Text),
    ("behavior", Text),
    ("literals", Texts),
    ("files", Texts),
    ("envs", Texts),
    ("env", Text),
    ("options", Object(GENERATOR_OPTIONS)),
    ("type", Text),
];

const HELM_GLOBALS: &[Field] = &[("chartHome", Text), ("configHome", Text)];

const HELM_CHART: &[Field] = &[
    ("name", Text),
    ("version", Text),
    ("repo", Text),
    ("releaseName", Text),
    ("namespace", Text),
    ("additionalValuesFiles", Texts),
    ("valuesFile", Text),
    ("valuesMerge", Text),
    ("apiVersions", Texts),
    ("kubeVersion", Text),
    ("nameTemplate", Text),
];

const HELM_CHART_ARGS: &[Field] = &[
    ("chartName", Text),
    ("chartVersion", Text),
    ("chartRepoUrl", Text),
    ("chartHome", Text),
    ("chartRepoName", Text),
    ("helmBin", Text),
    ("helmHome", Text),
    ("values", Text),
    ("valuesMerge", Text),
    ("releaseName", Text),
    ("releaseNamespace", Text),
    ("extraArgs", Texts),
];

/// Coerces a kustomization read with Go-typed numbers (`Numbers::GoTyped`): a float must still
/// be a float for its text (`1e6` is "1e+06", `1000000` is "1000000").
pub(super) fn kustomization(value: &mut Value) {
    object(value, KUSTOMIZATION);
}

fn coerce(value: &mut Value, shape: &Shape) {
    match shape {
        Text => text(value),
        Texts => {
            if let Value::Array(items) = value {
                items.iter_mut().for_each(text);
            }
        }
        TextMap => {
            if let Value::Object(entries) = value {
                entries.values_mut().for_each(text);
            }
        }
        Object(fields) => object(value, fields),
        List(fields) => {
            if let Value::Array(items) = value {
                items.iter_mut().for_each(|item| object(item, fields));
            }
        }
    }
}

fn object(value: &mut Value, fields: &[Field]) {
    let Value::Object(entries) = value else {
        return;
    };
    for (key, item) in entries.iter_mut() {
        if let Some(shape) = field(fields, key) {
            coerce(item, shape);
        }
    }
}

/// The field encoding/json would fill: the exact name, else one equal but for ASCII case.
fn field<'f>(fields: &'f [Field], key: &str) -> Option<&'f Shape> {
    fields
        .iter()
        .find(|(name, _)| *name == key)
        .or_else(|| {
            fields
                .iter()
                .find(|(name, _)| name.eq_ignore_ascii_case(key))
        })
        .map(|(_, shape)| shape)
}

/// A number or boolean as Go's text of it; anything else (null too) stays.
fn text(value: &mut Value) {
    let go = match value {
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => number_text(n),
        _ => return,
    };
    *value = Value::String(go);
}

/// `strconv.FormatInt`/`FormatUint` for integers, `FormatFloat(f, 'g', -1, 32)` for floats.
fn number_text(n: &Number) -> String {
    if let Some(i) = n.as_i64() {
        return i.to_string();
    }
    if let Some(u) = n.as_u64() {
        return u.to_string();
    }
    format_float_g32(n.as_f64().unwrap_or(f64::NAN))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// Flux's generator output for the same file (hack/yaml-oracle `flux-kus`).
    #[test]
    // 3.14159265358979 is only a long float, rounded to float32 as Flux formats it.
    #[allow(clippy::approx_constant)]
    fn string_fields_get_gos_text_and_the_rest_keeps_its_type() {
        let mut k = json!({
            "namespace": 493,
            "resources": [1, true, 1.5, "a.yaml"],
            "commonAnnotations": {
                "a": true, "b": 493, "c": 1.2, "e": "2001-12-14", "g": 1e6, "h": 1000000,
                "i": 3.14159265358979, "j": 1e39, "k": -0.0, "m": null,
            },
            "images": [{"name": "nginx", "newTag": 1.2}],
            "replicas": [{"name": 1, "count": 8}],
            "patches": [{"path": "p.yaml", "options": {"allowNameChange": true}}],
            "helmCharts": [{"name": "x", "version": 1.2, "valuesInline": {"n": 1}}],
            "Namespace": 1,
            "unknown": {"a": 1},
        });
        kustomization(&mut k);
        assert_eq!(
            k,
            json!({
                "namespace": "493",
                "resources": ["1", "true", "1.5", "a.yaml"],
                "commonAnnotations": {
                    "a": "true", "b": "493", "c": "1.2", "e": "2001-12-14", "g": "1e+06",
                    "h": "1000000", "i": "3.1415927", "j": "+Inf", "k": "-0", "m": null,
                },
                "images": [{"name": "nginx", "newTag": "1.2"}],
                "replicas": [{"name": "1", "count": 8}],
                "patches": [{"path": "p.yaml", "options": {"allowNameChange": true}}],
                "helmCharts": [{"name": "x", "version": "1.2", "valuesInline": {"n": 1}}],
                "Namespace": "1",
                "unknown": {"a": 1},
            })
        );
    }
}
