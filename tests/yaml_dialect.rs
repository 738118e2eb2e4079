//! driftless reads YAML as Flux does: the fixtures' objects, read through the plain-directory
//! path, from kustomize's output, through a kustomize build and after post-build substitution,
//! equal the JSON Flux's own libraries make of them (tests/fixtures/yaml-dialect/README.md
//! says where each golden file comes from; the kustomize tests re-run the real kustomize, so
//! the goldens cannot go stale unnoticed).

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use driftless::api::kustomization::KustomizationSpec;
use driftless::apply::{build, substitute, yaml};

fn fixtures() -> PathBuf {
    support::repo_root().join("tests/fixtures/yaml-dialect")
}

fn expected(name: &str) -> String {
    let path = fixtures().join("expected").join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A golden file: one JSON object per line.
fn golden(name: &str) -> BTreeMap<String, Value> {
    by_id(
        expected(name)
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|line| {
                serde_json::from_str(line).unwrap_or_else(|e| panic!("{name}: {e}: {line}"))
            }),
    )
}

/// Objects by kind and name: kustomize orders them its own way.
fn by_id(objects: impl IntoIterator<Item = Value>) -> BTreeMap<String, Value> {
    objects
        .into_iter()
        .map(|o| {
            let id = format!(
                "{}/{}",
                o["kind"].as_str().unwrap_or_default(),
                o["metadata"]["name"].as_str().unwrap_or_default()
            );
            (id, o)
        })
        .collect()
}

/// The same objects, compared as JSON text too: `1000` and `1000.0` differ there.
fn assert_same(what: &str, got: &BTreeMap<String, Value>, want: &BTreeMap<String, Value>) {
    assert_eq!(
        got.keys().collect::<BTreeSet<_>>(),
        want.keys().collect::<BTreeSet<_>>(),
        "{what}: other objects"
    );
    for (id, object) in want {
        let (got, want) = (
            serde_json::to_string_pretty(&got[id]).unwrap(),
            serde_json::to_string_pretty(object).unwrap(),
        );
        assert!(
            got == want,
            "{what}: {id} is\n{got}\nbut Flux applies\n{want}"
        );
    }
}

/// The kustomize the other kustomize tests run (`$DRIFTLESS_TESTBIN/bin/kustomize`, built by
/// hack/testbin.sh for the platform).
fn kustomize() -> PathBuf {
    let platform = support::platform();
    Path::new(&platform.env["DRIFTLESS_TESTBIN"]).join("bin/kustomize")
}

/// `kustomize build` of `dir` as the fixtures' README records it: stdout, or the failure.
fn kustomize_build(dir: &Path) -> Result<String, String> {
    let output = std::process::Command::new(kustomize())
        .arg("build")
        .arg("--load-restrictor=LoadRestrictionsRootOnly")
        .arg(dir)
        .output()
        .expect("run kustomize");
    match output.status.success() {
        true => Ok(String::from_utf8(output.stdout).expect("kustomize prints UTF-8")),
        false => Err(String::from_utf8_lossy(&output.stderr).into_owned()),
    }
}

/// A spec building the whole artifact, with nothing of Flux's transformers set.
fn plain_spec() -> KustomizationSpec {
    serde_json::from_value(json!({
        "interval": "10m", "prune": true,
        "sourceRef": {"kind": "OCIRepository", "name": "fixtures"},
    }))
    .unwrap()
}

/// Without a kustomize run: the plain-directory path reads the corpus as kustomize does
/// (Flux always builds with kustomize; driftless reads such a directory itself).
#[test]
fn the_plain_path_reads_the_corpus_as_flux_applies_it() {
    let objects = build::plain_objects(&fixtures().join("corpus")).unwrap();
    assert_same("plain path", &by_id(objects), &golden("corpus.json"));
}

/// Reading `kustomize build` output (what the kustomize path does) gives the same objects.
#[test]
fn kustomize_output_reads_as_flux_applies_it() {
    let objects = build::decode(&expected("corpus.yaml"), "expected/corpus.yaml").unwrap();
    assert_same("kustomize output", &by_id(objects), &golden("corpus.json"));
}

/// The substitution step as the apply-controller runs it on each object (write, substitute,
/// read back as sigs.k8s.io/yaml reads it).
#[test]
fn post_build_substitution_reads_as_flux_applies_it() {
    let text = std::fs::read_to_string(fixtures().join("postbuild/objects.yaml")).unwrap();
    let vars: BTreeMap<String, String> = [
        ("FLAG", "on"),
        ("MODE", "0755"),
        ("HEX", "0X1F"),
        ("EXP", "1e3"),
        ("DATE", "2001-12-14"),
        ("MIXED", "oN"),
        ("SHORT", "Y"),
        ("BIG", "9007199254740993"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let mut budget = yaml::Budget::default();
    let objects: Vec<Value> = build::decode(&text, "postbuild/objects.yaml")
        .unwrap()
        .into_iter()
        .map(|object| {
            let written = serde_saphyr::to_string(&object).unwrap();
            let substituted = substitute::substitute(&written, &vars, false).unwrap();
            yaml::document(&substituted, &mut budget, yaml::Dialect::SigsYaml).unwrap()
        })
        .collect();
    assert_same("post-build", &by_id(objects), &golden("postbuild.json"));
}

/// What kustomize (and so Flux) refuses, the plain path refuses too.
#[test]
fn what_flux_refuses_the_plain_path_refuses() {
    for case in ["dup", "inf", "nested-key"] {
        let dir = fixtures().join("errors").join(case);
        assert!(
            build::plain_objects(&dir).is_err(),
            "{case} was read, but kustomize refuses it"
        );
    }
}

/// The recorded kustomize output is what the real kustomize prints today, for the corpus and
/// for the kustomization Flux's generator writes; it fails where the plain path does.
#[test]
fn the_recorded_kustomize_output_is_current() {
    let corpus = kustomize_build(&fixtures().join("corpus")).unwrap();
    assert!(
        corpus == expected("corpus.yaml"),
        "kustomize now prints for corpus/:\n{corpus}"
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        fixtures().join("kustomization-file/objects.yaml"),
        dir.path().join("objects.yaml"),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("kustomization.yaml"),
        expected("kustomization-file.flux.yaml"),
    )
    .unwrap();
    let generated = kustomize_build(dir.path()).unwrap();
    assert!(
        generated == expected("kustomization-file.yaml"),
        "kustomize now prints for Flux's kustomization:\n{generated}"
    );
    for case in ["dup", "inf", "nested-key"] {
        let refused = kustomize_build(&fixtures().join("errors").join(case));
        assert!(
            refused.is_err(),
            "kustomize built errors/{case}: {refused:?}"
        );
    }
}

/// The kustomize path: driftless's build of the corpus applies what Flux applies.
#[tokio::test]
async fn a_kustomize_build_of_the_corpus_applies_what_flux_applies() {
    let scratch = tempfile::tempdir().unwrap();
    let kustomize = kustomize();
    let objects = build::build(
        &fixtures().join("corpus"),
        &plain_spec(),
        Some(&kustomize),
        scratch.path(),
        None,
    )
    .await
    .unwrap();
    assert_same("kustomize build", &by_id(objects), &golden("corpus.json"));
}

/// A kustomization.yaml with numbers and booleans under string fields builds as Flux builds
/// it (Flux's generator makes them strings; kustomize alone refuses the file).
#[tokio::test]
async fn kustomization_files_build_as_flux_builds_them() {
    let scratch = tempfile::tempdir().unwrap();
    let kustomize = kustomize();
    let objects = build::build(
        &fixtures().join("kustomization-file"),
        &plain_spec(),
        Some(&kustomize),
        scratch.path(),
        None,
    )
    .await
    .unwrap_or_else(|e| panic!("build kustomization-file/: {e}"));
    assert_same(
        "kustomization file",
        &by_id(objects),
        &golden("kustomization-file.json"),
    );
}
