//! The three kinds on the real API server: installed from `crds/` with kubectl, created, read,
//! updated and deleted through kube-rs, status written through the status subresource, and
//! listed by `kubectl get` with Flux's printer columns.

mod support;

use std::collections::BTreeMap;
use std::fmt::Debug;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;

use driftless::api::bucket::BucketSpec;
use driftless::api::kustomization::{CrossNamespaceSourceReference, KustomizationSpec, SourceKind};
use driftless::api::oci_repository::{OCIRepositoryRef, OCIRepositorySpec, VerifiedSignature};
use driftless::api::{
    Artifact, Bucket, BucketStatus, Condition, ConditionStatus, Kustomization, KustomizationStatus,
    OCIRepository, OCIRepositoryStatus,
};

const MANAGER: &str = "driftless-tests";

fn oci_spec(url: &str) -> OCIRepositorySpec {
    serde_json::from_value(serde_json::json!({"url": url, "interval": "5m"})).unwrap()
}

fn bucket_spec(endpoint: &str) -> BucketSpec {
    serde_json::from_value(serde_json::json!({
        "bucketName": "manifests", "endpoint": endpoint, "interval": "5m"
    }))
    .unwrap()
}

fn kustomization_spec(source: &str) -> KustomizationSpec {
    KustomizationSpec {
        source_ref: CrossNamespaceSourceReference {
            api_version: None,
            kind: SourceKind::OciRepository,
            name: source.into(),
            namespace: None,
        },
        ..serde_json::from_value(serde_json::json!({
            "interval": "10m", "prune": true, "sourceRef": {"kind": "OCIRepository", "name": source}
        }))
        .unwrap()
    }
}

fn ready(message: &str) -> Condition {
    Condition {
        last_transition_time: Time(jiff_now()),
        message: message.into(),
        observed_generation: Some(1),
        reason: "Succeeded".into(),
        status: ConditionStatus::True,
        type_: "Ready".into(),
    }
}

/// Kubernetes stores times with whole seconds; so do the objects the tests compare.
fn jiff_now() -> k8s_openapi::jiff::Timestamp {
    k8s_openapi::jiff::Timestamp::from_second(k8s_openapi::jiff::Timestamp::now().as_second())
        .unwrap()
}

fn artifact(kind: &str, ns: &str, name: &str) -> Artifact {
    let hex = "3b6cdcc7adcc9a84d3214ee1c029543789d90b5ae69debe9efa3f66e982875de";
    let path = format!("{kind}/{ns}/{name}/sha256:{hex}.tar.gz");
    Artifact {
        url: format!("http://source-controller.flux-system.svc.cluster.local./{path}"),
        path,
        revision: format!("latest@sha256:{hex}"),
        digest: format!("sha256:{hex}"),
        last_update_time: Time(jiff_now()),
        size: Some(1105),
        metadata: Some(BTreeMap::from([(
            "org.opencontainers.image.revision".into(),
            "main@sha1:abc".into(),
        )])),
    }
}

/// Create, read, update (spec), write status through the subresource, delete: the life of any
/// of the three kinds through kube-rs.
async fn lifecycle<K, S>(client: &Client, ns: &str, obj: K, change_spec: impl Fn(&mut K), status: S)
where
    K: Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>
        + Clone
        + Debug
        + Serialize
        + DeserializeOwned
        + HasStatus<S>,
    S: Clone + Debug + PartialEq + Serialize,
{
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    let name = obj.meta().name.clone().unwrap();

    let created = api
        .create(&PostParams::default(), &obj)
        .await
        .expect("create");
    assert_eq!(created.meta().generation, Some(1));
    let fetched = api.get(&name).await.expect("get");
    assert_eq!(fetched.meta().uid, created.meta().uid);

    let mut updated = fetched.clone();
    change_spec(&mut updated);
    let replaced = api
        .replace(&name, &PostParams::default(), &updated)
        .await
        .expect("replace");
    assert_eq!(
        replaced.meta().generation,
        Some(2),
        "a spec change bumps the generation"
    );

    // Status goes through the status subresource, with server-side apply as the controllers do.
    let patch = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    let with_status = api
        .patch_status(
            &name,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await
        .expect("patch status");
    assert_eq!(with_status.status_ref(), Some(&status), "status as written");
    assert_eq!(
        with_status.meta().generation,
        Some(2),
        "a status write leaves the generation alone"
    );

    // A status sent to the main resource is ignored: the subresource is the only way in.
    let mut through_main = api.get(&name).await.unwrap();
    *through_main.status_mut() = None;
    let after = api
        .replace(&name, &PostParams::default(), &through_main)
        .await
        .expect("replace without status");
    assert_eq!(
        after.status_ref(),
        Some(&status),
        "the main resource cannot clear the status"
    );

    api.delete(&name, &DeleteParams::default())
        .await
        .expect("delete");
    let gone = api.get_opt(&name).await.expect("get after delete");
    assert!(gone.is_none(), "{name} still exists after delete");
}

/// Access to the generated types' status field.
trait HasStatus<S> {
    fn status_ref(&self) -> Option<&S>;
    fn status_mut(&mut self) -> &mut Option<S>;
}

macro_rules! has_status {
    ($kind:ty, $status:ty) => {
        impl HasStatus<$status> for $kind {
            fn status_ref(&self) -> Option<&$status> {
                self.status.as_ref()
            }
            fn status_mut(&mut self) -> &mut Option<$status> {
                &mut self.status
            }
        }
    };
}
has_status!(OCIRepository, OCIRepositoryStatus);
has_status!(Bucket, BucketStatus);
has_status!(Kustomization, KustomizationStatus);

async fn setup(prefix: &str) -> (support::Platform, Client, support::TestNamespace) {
    let platform = support::platform();
    let client = platform.client().await;
    support::install_crds(&client).await;
    let ns = support::TestNamespace::new(&platform, &client, prefix).await;
    (platform, client, ns)
}

#[tokio::test]
async fn oci_repository_lifecycle() {
    let (_p, client, ns) = setup("crud-oci").await;
    let obj = OCIRepository::new(
        "podinfo",
        oci_spec("oci://ghcr.io/stefanprodan/manifests/podinfo"),
    );
    let status = OCIRepositoryStatus {
        observed_generation: Some(2),
        conditions: vec![ready("stored artifact for revision 'latest@sha256:3b6c'")],
        url: Some("http://source-controller.flux-system.svc.cluster.local./ocirepository/x/podinfo/latest.tar.gz".into()),
        artifact: Some(artifact("ocirepository", &ns.name, "podinfo")),
        observed_ignore: Some("/*\n!/deploy\n".into()),
        observed_layer_selector: None,
        last_handled_reconcile_at: Some("2026-11-29T10:00:00Z".into()),
        // driftless's own, additive field: the API server must keep it.
        verified_signature: Some(VerifiedSignature {
            provider: "cosign".into(),
            digest: "sha256:3b6c".into(),
            format: "sigstore-bundle".into(),
            subject: Some("https://github.com/org/repo/.github/workflows/ci.yml@refs/heads/main".into()),
            issuer: Some("https://token.actions.githubusercontent.com".into()),
            log_url: Some("https://rekor.sigstore.dev".into()),
            log_index: Some(123_456_789),
            integrated_time: Some("2026-11-29T09:59:00Z".into()),
            timestamped_at: None,
            key: None,
        }),
        // Flux v1.10's field: the API server must keep it too.
        source_verification_fingerprint: Some(
            "sha256:15e73a459672b2a4a6830d6c7bfe5bfc9ea72681203ca2bff47860be77def83c".into(),
        ),
    };
    lifecycle(
        &client,
        &ns.name,
        obj,
        |o: &mut OCIRepository| {
            o.spec.reference = Some(OCIRepositoryRef {
                tag: Some("6.1.6".into()),
                ..Default::default()
            })
        },
        status,
    )
    .await;
}

#[tokio::test]
async fn bucket_lifecycle() {
    let (_p, client, ns) = setup("crud-bucket").await;
    let obj = Bucket::new("manifests", bucket_spec("minio.example.com"));
    let status = BucketStatus {
        observed_generation: Some(2),
        conditions: vec![ready("stored artifact: revision 'sha256:3b6c'")],
        url: None,
        artifact: Some(artifact("bucket", &ns.name, "manifests")),
        observed_ignore: None,
        last_handled_reconcile_at: None,
    };
    lifecycle(
        &client,
        &ns.name,
        obj,
        |o: &mut Bucket| o.spec.prefix = Some("prod/".into()),
        status,
    )
    .await;
}

#[tokio::test]
async fn kustomization_lifecycle() {
    let (_p, client, ns) = setup("crud-ks").await;
    let obj = Kustomization::new("apps", kustomization_spec("podinfo"));
    let status = KustomizationStatus {
        observed_generation: Some(2),
        conditions: vec![ready("Applied revision: latest@sha256:3b6c")],
        last_applied_revision: Some("latest@sha256:3b6c".into()),
        last_applied_origin_revision: Some("main@sha1:abc".into()),
        last_attempted_revision: Some("latest@sha256:3b6c".into()),
        last_handled_reconcile_at: None,
        inventory: Some(serde_json::from_value(serde_json::json!({
            "entries": [{"id": "default_podinfo_apps_Deployment", "v": "v1"}, {"id": "_podinfo__Namespace", "v": "v1"}]
        })).unwrap()),
        history: None,
    };
    lifecycle(
        &client,
        &ns.name,
        obj,
        |o: &mut Kustomization| o.spec.path = Some("./deploy".into()),
        status,
    )
    .await;
}

#[tokio::test]
async fn new_objects_get_flux_status_default() {
    let (_p, client, ns) = setup("status-default").await;
    let api: Api<OCIRepository> = Api::namespaced(client.clone(), &ns.name);
    let created = api
        .create(
            &PostParams::default(),
            &OCIRepository::new("fresh", oci_spec("oci://registry.example.com/app")),
        )
        .await
        .unwrap();
    assert_eq!(created.status.and_then(|s| s.observed_generation), Some(-1));
}

#[test]
fn kubectl_apply_installs_the_committed_crds() {
    let platform = support::platform();
    let out = platform
        .kubectl()
        .args(["apply", "--server-side", "--force-conflicts", "-f"])
        .arg(support::repo_root().join("crds"))
        .output()
        .expect("run kubectl");
    assert!(
        out.status.success(),
        "kubectl apply -f crds/: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let names: Vec<String> = driftless::api::crds::all()
        .iter()
        .map(|c| format!("crd/{}", c.metadata.name.as_deref().unwrap_or_default()))
        .collect();
    support::wait_crds_established(&platform, &names);
}

/// `kubectl get` output: the header and the row of one object.
fn kubectl_get(platform: &support::Platform, ns: &str, resource: &str) -> (Vec<String>, String) {
    let out = platform
        .kubectl()
        .args(["get", resource, "-n", ns])
        .output()
        .expect("kubectl get");
    assert!(
        out.status.success(),
        "kubectl get {resource}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let mut lines = text.lines();
    let header = lines
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .map(String::from)
        .collect();
    (header, lines.next().unwrap_or_default().to_string())
}

async fn set_ready<K>(client: &Client, ns: &str, name: &str, message: &str)
where
    K: Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>
        + Clone
        + Debug
        + DeserializeOwned,
{
    let patch = serde_json::json!({
        "apiVersion": K::api_version(&()), "kind": K::kind(&()),
        "status": {"conditions": [ready(message)]},
    });
    Api::<K>::namespaced(client.clone(), ns)
        .patch_status(
            name,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await
        .expect("patch status");
}

#[tokio::test]
async fn kubectl_get_shows_flux_printer_columns() {
    let (platform, client, ns) = setup("columns").await;
    let url = "oci://ghcr.io/stefanprodan/manifests/podinfo";
    Api::<OCIRepository>::namespaced(client.clone(), &ns.name)
        .create(
            &PostParams::default(),
            &OCIRepository::new("podinfo", oci_spec(url)),
        )
        .await
        .unwrap();
    Api::<Bucket>::namespaced(client.clone(), &ns.name)
        .create(
            &PostParams::default(),
            &Bucket::new("manifests", bucket_spec("minio.example.com")),
        )
        .await
        .unwrap();
    Api::<Kustomization>::namespaced(client.clone(), &ns.name)
        .create(
            &PostParams::default(),
            &Kustomization::new("apps", kustomization_spec("podinfo")),
        )
        .await
        .unwrap();
    set_ready::<OCIRepository>(&client, &ns.name, "podinfo", "stored-artifact-oci").await;
    set_ready::<Bucket>(&client, &ns.name, "manifests", "stored-artifact-bucket").await;
    set_ready::<Kustomization>(&client, &ns.name, "apps", "applied-revision").await;

    let (header, row) = kubectl_get(&platform, &ns.name, "ocirepositories");
    assert_eq!(header, ["NAME", "URL", "READY", "STATUS", "AGE"]);
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(&cells[..4], ["podinfo", url, "True", "stored-artifact-oci"]);

    let (header, row) = kubectl_get(&platform, &ns.name, "buckets");
    assert_eq!(header, ["NAME", "ENDPOINT", "AGE", "READY", "STATUS"]);
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cells[..2], ["manifests", "minio.example.com"]);
    assert_eq!(cells[3..], ["True", "stored-artifact-bucket"]);

    let (header, row) = kubectl_get(&platform, &ns.name, "kustomizations");
    assert_eq!(header, ["NAME", "AGE", "READY", "STATUS"]);
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cells[0], "apps");
    assert_eq!(cells[2..], ["True", "applied-revision"]);

    // The short names and categories resolve as Flux's do.
    let (_, row) = kubectl_get(&platform, &ns.name, "ocirepo");
    assert!(
        row.starts_with("podinfo"),
        "short name ocirepo lists the object: {row}"
    );
    let (_, row) = kubectl_get(&platform, &ns.name, "ks");
    assert!(
        row.starts_with("apps"),
        "short name ks lists the object: {row}"
    );
    // A category is resolved from kubectl's discovery cache, which a name lookup refreshes but
    // a category lookup does not: a cache written before the CRDs were installed (by another
    // test on this platform) would not know it. A fresh cache sees what the API server serves.
    let cache = tempfile::tempdir().unwrap();
    let out = platform
        .kubectl()
        .arg("--cache-dir")
        .arg(cache.path())
        .args(["get", "fluxcd-sources", "-n", &ns.name, "-o", "name"])
        .output()
        .unwrap();
    let names = String::from_utf8_lossy(&out.stdout);
    assert!(
        names.contains("ocirepository.source.toolkit.fluxcd.io/podinfo"),
        "{names}"
    );
    assert!(
        names.contains("bucket.source.toolkit.fluxcd.io/manifests"),
        "{names}"
    );
}

/// Every example a user may copy is accepted by the API server as it stands (server-side dry
/// run, in the test's namespace instead of the one it names).
#[tokio::test]
async fn the_examples_are_valid_objects() {
    use kube::api::{DynamicObject, GroupVersionKind};
    let (_platform, client, ns) = setup("examples").await;
    let dir = support::repo_root().join("examples");
    let mut checked = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        for doc in text.split("\n---\n") {
            let mut value: serde_json::Value = serde_saphyr::from_str(doc).unwrap();
            if value.is_null() {
                continue;
            }
            value["metadata"]["namespace"] = ns.name.clone().into();
            let obj: DynamicObject = serde_json::from_value(value).unwrap();
            let types = obj.types.clone().expect("apiVersion and kind");
            let (group, version) = types
                .api_version
                .split_once('/')
                .unwrap_or(("", &types.api_version));
            let gvk = GroupVersionKind::gvk(group, version, &types.kind);
            let (resource, _) = kube::discovery::pinned_kind(&client, &gvk).await.unwrap();
            let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns.name, &resource);
            api.create(
                &PostParams {
                    dry_run: true,
                    ..Default::default()
                },
                &obj,
            )
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "{}: {} {:?}: {e}",
                    path.display(),
                    types.kind,
                    obj.metadata.name
                )
            });
            checked.push(format!(
                "{}/{}",
                path.file_name().unwrap().to_string_lossy(),
                types.kind
            ));
        }
    }
    assert!(
        checked
            .iter()
            .any(|c| c == "ocirepository-keyless.yaml/OCIRepository"),
        "{checked:?}"
    );
    assert!(checked.len() >= 5, "{checked:?}");
}
