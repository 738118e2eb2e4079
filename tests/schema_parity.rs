//! Schema parity on the real API server: every example of Flux's v1 spec documentation is
//! accepted, and objects that break a field rule or a CEL rule are refused with the error that
//! names the cause. Objects are sent as server-side dry-run creates, so nothing is stored.

mod support;

use kube::api::{ApiResource, DynamicObject, PostParams};
use kube::core::GroupVersionKind;
use kube::{Api, Client, CustomResourceExt};

use driftless::api::{Bucket, Kustomization, OCIRepository};

const EXPECT: &str = "driftless.test/expect";

fn fixtures(name: &str) -> Vec<DynamicObject> {
    let path = support::repo_root()
        .join("tests/fixtures/schema")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let docs: Vec<DynamicObject> =
        serde_saphyr::from_multiple(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(!docs.is_empty(), "{} holds no objects", path.display());
    docs
}

fn api_for(client: &Client, ns: &str, obj: &DynamicObject) -> Api<DynamicObject> {
    let types = obj
        .types
        .as_ref()
        .expect("fixtures carry apiVersion and kind");
    let gvk = GroupVersionKind::try_from(types).expect("valid apiVersion");
    let plural = match gvk.kind.as_str() {
        "OCIRepository" => OCIRepository::api_resource().plural,
        "Bucket" => Bucket::api_resource().plural,
        "Kustomization" => Kustomization::api_resource().plural,
        other => panic!("fixture of unexpected kind {other}"),
    };
    Api::namespaced_with(
        client.clone(),
        ns,
        &ApiResource::from_gvk_with_plural(&gvk, &plural),
    )
}

fn dry_run() -> PostParams {
    PostParams {
        dry_run: true,
        ..Default::default()
    }
}

async fn assert_all_accepted(file: &str) {
    let platform = support::platform();
    let client = platform.client().await;
    support::install_crds(&client).await;
    let ns = support::TestNamespace::new(&platform, &client, "valid").await;
    let mut refused = Vec::new();
    let docs = fixtures(file);
    for obj in &docs {
        let name = obj.metadata.name.clone().unwrap();
        if let Err(e) = api_for(&client, &ns.name, obj)
            .create(&dry_run(), obj)
            .await
        {
            refused.push(format!("{name}: {e}"));
        }
    }
    assert!(
        refused.is_empty(),
        "{file}: the API server refused valid objects:\n{}",
        refused.join("\n")
    );
}

async fn assert_all_refused_for_their_reason(file: &str) {
    let platform = support::platform();
    let client = platform.client().await;
    support::install_crds(&client).await;
    let ns = support::TestNamespace::new(&platform, &client, "invalid").await;
    let mut wrong = Vec::new();
    for obj in fixtures(file) {
        let name = obj.metadata.name.clone().unwrap();
        let expect = obj
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(EXPECT))
            .unwrap_or_else(|| panic!("{file}: {name} lacks the {EXPECT} annotation"))
            .clone();
        match api_for(&client, &ns.name, &obj)
            .create(&dry_run(), &obj)
            .await
        {
            Ok(_) => wrong.push(format!(
                "{name}: accepted, expected refusal with {expect:?}"
            )),
            Err(kube::Error::Api(status))
                if status.code == 422 && status.message.contains(&expect) => {}
            Err(e) => wrong.push(format!(
                "{name}: expected a 422 containing {expect:?}, got {e}"
            )),
        }
    }
    assert!(wrong.is_empty(), "{file}:\n{}", wrong.join("\n"));
}

#[tokio::test]
async fn flux_oci_repository_examples_are_accepted() {
    assert_all_accepted("valid-ocirepositories.yaml").await;
}

#[tokio::test]
async fn flux_bucket_examples_are_accepted() {
    assert_all_accepted("valid-buckets.yaml").await;
}

#[tokio::test]
async fn flux_kustomization_examples_are_accepted() {
    assert_all_accepted("valid-kustomizations.yaml").await;
}

#[tokio::test]
async fn invalid_oci_repositories_are_refused_for_their_reason() {
    assert_all_refused_for_their_reason("invalid-ocirepositories.yaml").await;
}

#[tokio::test]
async fn invalid_buckets_are_refused_for_their_reason() {
    assert_all_refused_for_their_reason("invalid-buckets.yaml").await;
}

#[tokio::test]
async fn invalid_kustomizations_are_refused_for_their_reason() {
    assert_all_refused_for_their_reason("invalid-kustomizations.yaml").await;
}

#[test]
fn every_cel_rule_has_an_invalid_fixture_that_breaks_it() {
    // The schemas' CEL messages must each appear as an expectation, so a new rule cannot be
    // added without a fixture proving the server enforces it.
    let expectations: Vec<String> = [
        "invalid-buckets.yaml",
        "invalid-kustomizations.yaml",
        "invalid-ocirepositories.yaml",
    ]
    .iter()
    .flat_map(|f| fixtures(f))
    .filter_map(|o| o.metadata.annotations.and_then(|mut a| a.remove(EXPECT)))
    .collect();
    for crd in driftless::api::crds::all() {
        let schema = serde_json::to_value(&crd.spec.versions[0].schema).unwrap();
        let mut messages = Vec::new();
        collect_cel_messages(&schema, &mut messages);
        for message in messages {
            assert!(
                expectations.iter().any(|e| e == &message),
                "{}: no invalid fixture breaks the CEL rule {message:?}",
                crd.spec.names.kind
            );
        }
    }
}

fn collect_cel_messages(node: &serde_json::Value, out: &mut Vec<String>) {
    match node {
        serde_json::Value::Object(map) => {
            if let Some(rules) = map
                .get("x-kubernetes-validations")
                .and_then(|v| v.as_array())
            {
                out.extend(
                    rules
                        .iter()
                        .filter_map(|r| r["message"].as_str().map(String::from)),
                );
            }
            map.values().for_each(|v| collect_cel_messages(v, out));
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| collect_cel_messages(v, out)),
        _ => {}
    }
}

#[tokio::test]
async fn server_applies_flux_defaults() {
    let platform = support::platform();
    let client = platform.client().await;
    support::install_crds(&client).await;
    let ns = support::TestNamespace::new(&platform, &client, "defaults").await;

    let oci = fixtures("valid-ocirepositories.yaml").remove(0);
    let created = api_for(&client, &ns.name, &oci)
        .create(&dry_run(), &oci)
        .await
        .unwrap();
    // Flux v1.10 applies OCIRepository's provider and timeout defaults in the controller.
    assert!(
        created.data["spec"]["provider"].is_null(),
        "{}",
        created.data
    );
    assert!(
        created.data["spec"]["timeout"].is_null(),
        "{}",
        created.data
    );

    let bucket = fixtures("valid-buckets.yaml").remove(0);
    let created = api_for(&client, &ns.name, &bucket)
        .create(&dry_run(), &bucket)
        .await
        .unwrap();
    assert_eq!(created.data["spec"]["provider"], "generic");
    assert_eq!(created.data["spec"]["timeout"], "60s");

    let ks = fixtures("valid-kustomizations.yaml").remove(0);
    let created = api_for(&client, &ns.name, &ks)
        .create(&dry_run(), &ks)
        .await
        .unwrap();
    assert_eq!(created.data["spec"]["force"], false);

    let keyless = fixtures("valid-ocirepositories.yaml")
        .into_iter()
        .find(|o| o.metadata.name.as_deref() == Some("verify-cosign-keyless"))
        .unwrap();
    let mut without_provider = keyless.clone();
    without_provider.data["spec"]["verify"]
        .as_object_mut()
        .unwrap()
        .remove("provider");
    let created = api_for(&client, &ns.name, &without_provider)
        .create(&dry_run(), &without_provider)
        .await
        .unwrap();
    assert_eq!(created.data["spec"]["verify"]["provider"], "cosign");
}
