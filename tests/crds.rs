//! The CRDs: what `crds/` holds is what the types generate, and the generated schemas carry
//! every field fact of Flux's own CRDs (the oracle files in `tests/fixtures/flux-crd-schema/`).

mod support;

use std::collections::BTreeMap;

use driftless::api::crds::{self, FieldFacts};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde_json::Value;

fn oracle_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/flux-crd-schema")
}

/// One oracle file: header facts and field lines.
struct Oracle {
    file: String,
    header: BTreeMap<String, String>,
    fields: Vec<FieldFacts>,
}

fn load_oracles() -> Vec<Oracle> {
    let mut files: Vec<_> = std::fs::read_dir(oracle_dir())
        .expect("oracle dir")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "tsv"))
        .collect();
    files.sort();
    assert_eq!(files.len(), 3, "expected the three Flux oracle files");
    files.iter().map(|p| parse_oracle(p)).collect()
}

fn parse_oracle(path: &std::path::Path) -> Oracle {
    let text = std::fs::read_to_string(path).unwrap();
    let mut header = BTreeMap::new();
    let mut fields = Vec::new();
    for line in text.lines() {
        if let Some(h) = line.strip_prefix("# ") {
            header.extend(parse_header_line(h));
            continue;
        }
        let cols: Vec<&str> = line.split('\t').collect();
        assert_eq!(cols.len(), 4, "malformed oracle line {line:?}");
        let facts = if cols[3].is_empty() {
            serde_json::Map::new()
        } else {
            serde_json::from_str(cols[3]).unwrap_or_else(|e| panic!("facts of {line:?}: {e}"))
        };
        fields.push(FieldFacts {
            path: cols[0].into(),
            type_: cols[1].into(),
            required: cols[2] == "required",
            facts,
        });
    }
    Oracle {
        file: path.file_name().unwrap().to_string_lossy().into(),
        header,
        fields,
    }
}

/// Header lines hold `key=value` pairs; values are bare words or Python-style lists.
fn parse_header_line(line: &str) -> Vec<(String, String)> {
    if let Some(columns) = line.strip_prefix("printerColumns=") {
        return vec![("printerColumns".into(), columns.into())];
    }
    let mut out = Vec::new();
    let mut rest = line;
    while let Some((key, after)) = rest.split_once('=') {
        let (value, next) = if after.starts_with('[') {
            let end = after.find(']').expect("closing bracket") + 1;
            (&after[..end], &after[end..])
        } else {
            after.split_once(' ').map_or((after, ""), |(v, n)| (v, n))
        };
        out.push((key.trim().to_string(), value.to_string()));
        rest = next.trim_start();
    }
    out
}

fn python_list(value: &str) -> Vec<String> {
    serde_json::from_str(&value.replace('\'', "\"")).unwrap_or_else(|e| panic!("list {value}: {e}"))
}

fn crd_for(oracle: &Oracle) -> CustomResourceDefinition {
    let plural = &oracle.header["plural"];
    crds::all()
        .into_iter()
        .find(|c| &c.spec.names.plural == plural)
        .unwrap_or_else(|| panic!("no driftless CRD for {plural} ({})", oracle.file))
}

/// The files of a directory (not its subdirectories), name → content.
fn read_dir(dir: &std::path::Path) -> BTreeMap<String, String> {
    std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.is_file())
        .map(|path| {
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            (
                path.file_name().unwrap().to_string_lossy().to_string(),
                text,
            )
        })
        .collect()
}

/// `crds/` is what the binary writes (`driftless crds --dir`, which `make crds` runs) and
/// prints (`driftless crds`, which hack/demo pipes to kubectl): a stale `crds/` fails here.
#[test]
fn committed_crds_are_what_the_types_generate() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("crds");
    let committed = read_dir(&dir);

    let generated = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(support::controller::driftless_bin())
        .args(["crds", "--dir"])
        .arg(generated.path())
        .output()
        .expect("run driftless crds --dir");
    assert!(
        out.status.success(),
        "driftless crds --dir: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let written = read_dir(generated.path());
    assert_eq!(
        committed.keys().collect::<Vec<_>>(),
        written.keys().collect::<Vec<_>>(),
        "crds/ holds other files than `driftless crds` writes: run `make crds` and commit the result"
    );
    for (name, text) in &written {
        assert!(
            committed[name] == *text,
            "crds/{name} differs from what `driftless crds` writes: run `make crds` and commit the result"
        );
    }
    let out = std::process::Command::new(support::controller::driftless_bin())
        .arg("crds")
        .output()
        .expect("run driftless crds");
    assert!(out.status.success());
    let in_order: String = crds::all()
        .iter()
        .map(|crd| committed[&crds::file_name(crd)].as_str())
        .collect();
    assert!(
        String::from_utf8_lossy(&out.stdout) == in_order,
        "`driftless crds` prints something else than the files of crds/, one after the other"
    );

    for crd in crds::all() {
        let path = dir.join(crds::file_name(&crd));
        let committed = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (run `make crds`)", path.display()));
        assert!(
            committed == crds::to_yaml(&crd).unwrap(),
            "{} differs from the generated CRD: run `make crds` and commit the result",
            path.display()
        );
    }
    let with_flux = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(support::controller::driftless_bin())
        .args(["crds", "--flux-sources", "--dir"])
        .arg(with_flux.path())
        .output()
        .expect("run driftless crds --flux-sources --dir");
    assert!(out.status.success());
    let mut expected = committed.clone();
    expected.extend(read_dir(&dir.join("flux-sources")));
    assert_eq!(
        read_dir(with_flux.path()),
        expected,
        "`driftless crds --flux-sources` writes crds/ and crds/flux-sources/"
    );
    let files = read_dir(&dir).len();
    assert_eq!(
        files,
        crds::all().len(),
        "crds/ holds files that no type generates"
    );
}

#[test]
fn committed_crds_parse_back_into_the_same_objects() {
    for crd in crds::all() {
        let yaml = crds::to_yaml(&crd).unwrap();
        let parsed: CustomResourceDefinition = serde_saphyr::from_str(&yaml).unwrap();
        assert_eq!(
            parsed,
            crd,
            "{} does not round-trip through YAML",
            crds::file_name(&crd)
        );
    }
}

#[test]
fn names_scope_versions_and_subresources_match_flux() {
    for oracle in load_oracles() {
        let crd = crd_for(&oracle);
        let h = &oracle.header;
        assert_eq!(crd.spec.group, h["group"], "{}", oracle.file);
        assert_eq!(crd.spec.names.kind, h["kind"], "{}", oracle.file);
        assert_eq!(crd.spec.scope, h["scope"], "{}", oracle.file);
        let short: Vec<String> = crd.spec.names.short_names.clone().unwrap_or_default();
        assert_eq!(
            short,
            python_list(&h["shortNames"]),
            "{} short names",
            oracle.file
        );
        let categories = crd.spec.names.categories.clone().unwrap_or_default();
        assert_eq!(
            categories,
            python_list(&h["categories"]),
            "{} categories",
            oracle.file
        );

        assert_eq!(
            crd.spec.versions.len(),
            1,
            "{}: only v1 is served",
            oracle.file
        );
        let v = &crd.spec.versions[0];
        assert_eq!(v.name, h["version"]);
        assert_eq!(v.served, h["served"] == "True");
        assert_eq!(v.storage, h["storage"] == "True");
        assert_eq!(v.deprecated.unwrap_or(false), h["deprecated"] == "True");
        let subresources = v.subresources.as_ref().expect("subresources");
        assert_eq!(python_list(&h["subresources"]), vec!["status".to_string()]);
        assert!(
            subresources.status.is_some(),
            "{}: status subresource",
            oracle.file
        );
        assert!(
            subresources.scale.is_none(),
            "{}: no scale subresource",
            oracle.file
        );
    }
}

#[test]
fn printer_columns_match_flux() {
    for oracle in load_oracles() {
        let crd = crd_for(&oracle);
        let expected: Vec<Vec<String>> =
            serde_json::from_str(&oracle.header["printerColumns"]).unwrap();
        let ours: Vec<Vec<String>> = crd.spec.versions[0]
            .additional_printer_columns
            .clone()
            .unwrap_or_default()
            .into_iter()
            .map(|c| vec![c.name, c.json_path, c.type_])
            .collect();
        assert_eq!(ours, expected, "{} printer columns", oracle.file);
    }
}

#[test]
fn every_flux_schema_field_is_present_with_the_same_facts() {
    let mut mismatches = Vec::new();
    for oracle in load_oracles() {
        let crd = crd_for(&oracle);
        let ours: BTreeMap<String, FieldFacts> =
            crds::schema_fields(&crd, &oracle.header["version"])
                .into_iter()
                .map(|f| (f.path.clone(), f))
                .collect();
        for want in &oracle.fields {
            match ours.get(&want.path) {
                None => mismatches.push(format!("{}: {} is missing", oracle.file, want.path)),
                Some(got) => {
                    let same_facts =
                        numbers_as_written(&got.facts) == numbers_as_written(&want.facts);
                    if got.type_ != want.type_ || got.required != want.required || !same_facts {
                        mismatches.push(format!(
                            "{}: {}\n   flux: {} required={} {}\n   ours: {} required={} {}",
                            oracle.file,
                            want.path,
                            want.type_,
                            want.required,
                            Value::Object(want.facts.clone()),
                            got.type_,
                            got.required,
                            Value::Object(got.facts.clone())
                        ))
                    }
                }
            }
        }
    }
    assert!(
        mismatches.is_empty(),
        "schema differs from Flux's:\n{}",
        mismatches.join("\n")
    );
}

/// `JSONSchemaProps` holds `minimum`/`maximum` as floats, so `0` comes back as `0.0`; the API
/// server treats both alike, and so does this comparison.
fn numbers_as_written(facts: &serde_json::Map<String, Value>) -> Value {
    fn canonical(v: &Value) -> Value {
        match v {
            Value::Number(n) => match n.as_f64() {
                Some(f) if f.fract() == 0.0 && f.abs() < 9e15 => Value::from(f as i64),
                _ => v.clone(),
            },
            Value::Array(a) => Value::Array(a.iter().map(canonical).collect()),
            Value::Object(m) => {
                Value::Object(m.iter().map(|(k, v)| (k.clone(), canonical(v))).collect())
            }
            _ => v.clone(),
        }
    }
    canonical(&Value::Object(facts.clone()))
}

#[test]
fn fields_beyond_flux_are_optional() {
    for oracle in load_oracles() {
        let crd = crd_for(&oracle);
        let flux: std::collections::BTreeSet<&str> =
            oracle.fields.iter().map(|f| f.path.as_str()).collect();
        for field in crds::schema_fields(&crd, "v1") {
            if !flux.contains(field.path.as_str()) {
                assert!(
                    !field.required,
                    "{}: {} is ours and must be optional",
                    oracle.file, field.path
                );
            }
        }
    }
}

#[test]
fn no_field_accepts_null_and_spec_is_not_required() {
    for crd in crds::all() {
        let yaml = crds::to_yaml(&crd).unwrap();
        assert!(
            !yaml.contains("nullable"),
            "{} has nullable fields",
            crds::file_name(&crd)
        );
        let root = crds::schema_fields(&crd, "v1")
            .into_iter()
            .find(|f| f.path == ".spec")
            .unwrap();
        assert!(
            !root.required,
            "{}: Flux does not require .spec",
            crds::file_name(&crd)
        );
    }
}

#[test]
fn every_field_is_described_for_kubectl_explain() {
    for crd in crds::all() {
        let schema = serde_json::to_value(
            crd.spec.versions[0]
                .schema
                .as_ref()
                .unwrap()
                .open_api_v3_schema
                .as_ref()
                .unwrap(),
        )
        .unwrap();
        let mut undocumented = Vec::new();
        find_undocumented(&schema["properties"]["spec"], ".spec", &mut undocumented);
        find_undocumented(
            &schema["properties"]["status"],
            ".status",
            &mut undocumented,
        );
        assert!(
            undocumented.is_empty(),
            "{}: fields without a description: {undocumented:?}",
            crd.spec.names.kind
        );
    }
}

fn find_undocumented(node: &Value, path: &str, out: &mut Vec<String>) {
    if let Some(props) = node.get("properties").and_then(Value::as_object) {
        for (name, child) in props {
            let p = format!("{path}.{name}");
            if child
                .get("description")
                .and_then(Value::as_str)
                .is_none_or(str::is_empty)
            {
                out.push(p.clone());
            }
            find_undocumented(child, &p, out);
        }
    }
    if let Some(items) = node.get("items") {
        find_undocumented(items, &format!("{path}[]"), out);
    }
}

/// `crds/flux-sources/` is Flux source-controller v1.10.1's own GitRepository, HelmRepository,
/// HelmChart and ExternalArtifact CRDs less their descriptions, read from its Go module: every
/// schema fact, name, version and printer column as Flux ships it. `DRIFTLESS_REGENERATE=1`
/// rewrites the files (and the chart's copy) instead of comparing.
#[test]
fn flux_source_crds_are_flux_own_without_descriptions() {
    let module = support::go_module_dir(
        "github.com/fluxcd/source-controller",
        crds::FLUX_SOURCES_VERSION,
    );
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let regenerate = std::env::var_os("DRIFTLESS_REGENERATE").is_some();
    for (file, committed) in crds::FLUX_SOURCES {
        let text = std::fs::read_to_string(module.join("config/crd/bases").join(file))
            .unwrap_or_else(|e| panic!("{file} in the module: {e}"));
        let flux: Value = serde_saphyr::from_str(&text).unwrap();
        let ours = crds::flux_source_yaml(&flux).unwrap();
        if regenerate {
            for dir in ["crds/flux-sources", "charts/driftless/flux-source-crds"] {
                std::fs::create_dir_all(root.join(dir)).unwrap();
                std::fs::write(root.join(dir).join(file), &ours).unwrap();
            }
            continue;
        }
        assert_eq!(
            committed, ours,
            "{file} differs from Flux's (see the test's doc)"
        );
        let parsed: Value = serde_saphyr::from_str(committed).unwrap();
        assert_eq!(parsed["kind"], "CustomResourceDefinition");
        assert!(
            !committed.contains("description:"),
            "{file}: no prose of Flux's"
        );
    }
}
