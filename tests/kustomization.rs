//! Kustomization end to end: artifacts pushed to the real registry, served by our own
//! source-controller, applied by the real apply-controller binary to the real API server
//! (with the Go-built kustomize for overlays).

mod support;

use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::discovery::ApiResource;
use kube::{Api, Client};
use serde_json::{Value, json};

use driftless::api::{Bucket, ConditionStatus, Kustomization, OCIRepository};
use support::controller::{ApplyController, SourceController};
use support::oci::{FLUX_LAYER, client, flux_layer, gzip, push_flux_artifact};
use support::source::{Sources, tail};
use support::wait::{Wait, poll};

const WAIT: Duration = Duration::from_secs(90);

struct Env {
    platform: support::Platform,
    client: Client,
    ns: support::TestNamespace,
    source: SourceController,
    apply: ApplyController,
    ks: Api<Kustomization>,
}

async fn env(prefix: &str) -> Env {
    env_with(prefix, &[]).await
}

async fn env_with(prefix: &str, apply_args: &[&str]) -> Env {
    env_with_vars(prefix, apply_args, &[]).await
}

/// `env_with`, the apply-controller started with more environment variables.
async fn env_with_vars(prefix: &str, apply_args: &[&str], vars: &[(&str, &str)]) -> Env {
    env_starting(prefix, |platform, ns| {
        ApplyController::start_with_env(platform, ns, apply_args, vars)
    })
    .await
}

/// A namespace, a source-controller, and the apply-controller `start` starts.
async fn env_starting(
    prefix: &str,
    start: impl FnOnce(&support::Platform, &str) -> ApplyController,
) -> Env {
    let platform = support::platform();
    let client = platform.client().await;
    support::install_crds(&client).await;
    let ns = support::TestNamespace::new(&platform, &client, prefix).await;
    let source = SourceController::start(&platform, &ns.name, &[]);
    let apply = start(&platform, &ns.name);
    let ks = Api::namespaced(client.clone(), &ns.name);
    Env {
        platform,
        client,
        ns,
        source,
        apply,
        ks,
    }
}

fn cm(name: &str, value: &str) -> String {
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\ndata:\n  key: \"{value}\"\n"
    )
}

impl Env {
    /// Pushes `files` as the artifact of OCIRepository `name` (created on first use) and waits
    /// until the source serves that revision.
    async fn publish(&self, name: &str, files: &[(&str, &str)]) -> String {
        let repo = format!("{}/{name}", self.ns.name);
        let digest = push_flux_artifact(
            &client(self.platform.registry()),
            &repo,
            "latest",
            flux_layer(files),
            FLUX_LAYER,
            &[],
        )
        .await;
        let sources: Sources<OCIRepository> =
            Sources::new(&self.client, &self.ns.name, &self.source);
        if sources.api.get_opt(name).await.unwrap().is_none() {
            sources
                .create(name, json!({"url": format!("oci://{}/{repo}", self.platform.registry()), "interval": "10m", "insecure": true}))
                .await;
        } else {
            sources.request_reconcile(name).await;
        }
        let revision = format!("latest@{digest}");
        sources
            .wait_until(name, "serving the pushed revision", |o| {
                support::source::revision(o) == revision
            })
            .await;
        revision
    }

    async fn create(&self, name: &str, spec: Value) -> Kustomization {
        let obj: Kustomization = serde_json::from_value(json!({
            "apiVersion": "kustomize.toolkit.fluxcd.io/v1", "kind": "Kustomization",
            "metadata": {"name": name, "namespace": self.ns.name},
            "spec": spec,
        }))
        .unwrap();
        self.ks
            .create(&PostParams::default(), &obj)
            .await
            .expect("create Kustomization")
    }

    /// A spec applying OCIRepository `source` into the test namespace.
    fn spec(&self, source: &str, extra: Value) -> Value {
        let mut spec = json!({
            "interval": "10m", "prune": true, "targetNamespace": self.ns.name,
            "sourceRef": {"kind": "OCIRepository", "name": source},
        });
        spec.as_object_mut()
            .unwrap()
            .extend(extra.as_object().cloned().unwrap_or_default());
        spec
    }

    /// Waits on the Kustomizations, showing the apply-controller log's tail on a timeout.
    fn wait(&self) -> Wait<'_, Kustomization> {
        Wait::new(&self.ks, WAIT).log(|| tail(&self.apply.log_text(), 30))
    }

    async fn wait_until(
        &self,
        name: &str,
        what: &str,
        check: impl Fn(&Kustomization) -> bool,
    ) -> Kustomization {
        self.wait().until(name, what, check).await
    }

    async fn wait_ready_at(&self, name: &str, revision: &str) -> Kustomization {
        self.wait_until(name, &format!("Ready at {revision}"), |o| {
            ready(o) == Some((ConditionStatus::True, "ReconciliationSucceeded".into()))
                && o.status
                    .as_ref()
                    .and_then(|s| s.last_applied_revision.as_deref())
                    == Some(revision)
        })
        .await
    }

    async fn wait_failing(&self, name: &str, reason: &str) -> Kustomization {
        self.wait().failing(name, reason).await
    }

    /// A client of the platform's second cluster, where this test's namespace is created too.
    async fn remote_cluster(&self) -> kube::Client {
        let remote = self.platform.remote_client().await;
        Api::<k8s_openapi::api::core::v1::Namespace>::all(remote.clone())
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({"metadata": {"name": self.ns.name}})).unwrap(),
            )
            .await
            .expect("the namespace in the remote cluster");
        remote
    }

    /// Creates Kustomization `name` with `spec`, which fails (`ReconciliationFailed`) with a
    /// Ready message that contains `says`.
    async fn refused_naming(&self, name: &str, spec: serde_json::Value, says: &str) {
        self.failing_naming(name, spec, "ReconciliationFailed", says)
            .await;
    }

    /// `refused_naming` with another Ready reason.
    async fn failing_naming(&self, name: &str, spec: serde_json::Value, reason: &str, says: &str) {
        self.create(name, spec).await;
        let refused = self.wait_failing(name, reason).await;
        assert!(
            message(&refused, "Ready").contains(says),
            "{name}: {}",
            message(&refused, "Ready")
        );
    }

    async fn request_reconcile(&self, name: &str) -> Kustomization {
        let stamp = format!(
            "{}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        );
        let patch =
            json!({"metadata": {"annotations": {"reconcile.fluxcd.io/requestedAt": stamp}}});
        self.ks
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap();
        self.wait_until(name, "handled the reconcile request", |o| {
            o.status
                .as_ref()
                .and_then(|s| s.last_handled_reconcile_at.as_deref())
                == Some(stamp.as_str())
        })
        .await
    }

    fn configmaps(&self) -> Api<ConfigMap> {
        Api::namespaced(self.client.clone(), &self.ns.name)
    }

    async fn configmap(&self, name: &str) -> Option<ConfigMap> {
        self.configmaps().get_opt(name).await.unwrap()
    }

    async fn wait_configmap_gone(&self, name: &str) {
        let configmaps = self.configmaps();
        Wait::new(&configmaps, WAIT).gone(name).await
    }
}

fn ready(o: &Kustomization) -> Option<(ConditionStatus, String)> {
    o.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| (c.status, c.reason.clone()))
}

fn message(o: &Kustomization, type_: &str) -> String {
    o.status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == type_))
        .map(|c| c.message.clone())
        .unwrap_or_default()
}

fn inventory_ids(o: &Kustomization) -> Vec<String> {
    o.status
        .as_ref()
        .and_then(|s| s.inventory.as_ref())
        .map(|i| i.entries.iter().map(|e| e.id.clone()).collect())
        .unwrap_or_default()
}

fn data_key(cm: &ConfigMap) -> String {
    cm.data
        .as_ref()
        .and_then(|d| d.get("key"))
        .cloned()
        .unwrap_or_default()
}

/// Drift detection by watching (on when the controller watches every namespace): passes over
/// objects nobody touched send no dry run, and drift (another manager's edit and added field,
/// a deletion, a spec change of a kind that keeps a generation) is put back with no reconcile
/// request and no interval due, as the dry-run pass above puts it back.
#[tokio::test(flavor = "multi_thread")]
async fn drift_is_seen_by_watching_and_put_back_unasked() {
    let shard = format!(
        "drift-{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    // Every namespace, but only this test's Kustomization (other tests' run beside it).
    let selector = format!("--watch-label-selector=driftless.test/shard={shard}");
    let e = env_with("ks-watch", &["--watch-all-namespaces=true", &selector]).await;
    let first = e
        .publish(
            "app",
            &[
                ("a.yaml", &cm("alpha", "1")),
                ("b.yaml", &cm("beta", "1")),
                ("web.yaml", WEB_DEPLOYMENT),
            ],
        )
        .await;
    let obj: Kustomization = serde_json::from_value(json!({
        "apiVersion": "kustomize.toolkit.fluxcd.io/v1", "kind": "Kustomization",
        "metadata": {"name": "app", "namespace": e.ns.name, "labels": {"driftless.test/shard": shard}},
        "spec": e.spec("app", json!({"interval": "1h"})),
    }))
    .unwrap();
    e.ks.create(&PostParams::default(), &obj).await.unwrap();
    e.wait_ready_at("app", &first).await;

    // Once the watches are in step, a pass over untouched objects sends no dry run.
    let counts = || {
        (
            e.apply.metric("driftless_apply_dry_runs"),
            e.apply.metric("driftless_apply_writes"),
        )
    };
    assert!(counts().0 >= 3.0, "the first pass dry-ran its objects");
    let quiet_pass = async || {
        let before = counts();
        e.request_reconcile("app").await;
        let after = counts();
        (after.0 == before.0).then_some(after.1 - before.1)
    };
    let writes = poll("a requested pass without a dry run", WAIT, quiet_pass).await;
    assert_eq!(writes, 0.0, "nor a write");
    let before = counts();
    e.request_reconcile("app").await;
    assert_eq!(counts(), before, "the next pass too: no dry run, no write");

    let kubectl = PatchParams {
        field_manager: Some("kubectl-edit".into()),
        ..Default::default()
    };
    let deployments: Api<k8s_openapi::api::apps::v1::Deployment> =
        Api::namespaced(e.client.clone(), &e.ns.name);
    let edit = json!({"data": {"key": "edited", "added": "by hand"}});
    e.configmaps()
        .patch("alpha", &kubectl, &Patch::Merge(&edit))
        .await
        .unwrap();
    e.configmaps()
        .delete("beta", &DeleteParams::default())
        .await
        .unwrap();
    let scale = json!({"spec": {"replicas": 3}});
    deployments
        .patch("web", &kubectl, &Patch::Merge(&scale))
        .await
        .unwrap();
    let edited = std::time::Instant::now();
    poll("the drift put back, unasked", WAIT, async || {
        let alpha = e.configmap("alpha").await?;
        e.configmap("beta").await?;
        let web = deployments.get("web").await.ok()?;
        let back = data_key(&alpha) == "1"
            && !alpha.data.unwrap_or_default().contains_key("added")
            && web.spec.replicas == Some(0);
        back.then_some(())
    })
    .await;
    eprintln!("drift put back {:?} after the edits", edited.elapsed());
}

/// A Deployment scaled to 0 (nothing runs it on the platform): a kind that keeps a generation.
const WEB_DEPLOYMENT: &str = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: 0\n  selector:\n    matchLabels:\n      app: web\n  template:\n    metadata:\n      labels:\n        app: web\n    spec:\n      containers:\n      - name: web\n        image: registry.example/web:1.0.0\n";

#[tokio::test(flavor = "multi_thread")]
async fn applies_updates_prunes_and_reverts_drift() {
    let e = env("ks-apply").await;
    let first = e
        .publish(
            "app",
            &[
                ("a.yaml", &cm("alpha", "1")),
                ("sub/b.yaml", &cm("beta", "1")),
            ],
        )
        .await;
    e.create("app", e.spec("app", json!({}))).await;
    let obj = e.wait_ready_at("app", &first).await;
    let ns = &e.ns.name;
    let history = obj
        .status
        .as_ref()
        .unwrap()
        .history
        .clone()
        .unwrap_or_default();
    assert_eq!(history.len(), 1, "{history:?}");
    assert_eq!(history[0].last_reconciled_status, "ReconciliationSucceeded");
    assert!(history[0].digest.starts_with("sha256:"));
    assert_eq!(
        history[0].metadata.as_ref().and_then(|m| m.get("revision")),
        Some(&first)
    );
    assert_eq!(
        inventory_ids(&obj),
        [
            format!("{ns}_alpha__ConfigMap"),
            format!("{ns}_beta__ConfigMap")
        ]
    );
    assert_eq!(message(&obj, "Ready"), format!("Applied revision: {first}"));
    let alpha = e.configmap("alpha").await.expect("alpha applied");
    let labels = alpha.metadata.labels.clone().unwrap_or_default();
    assert_eq!(
        labels
            .get("kustomize.toolkit.fluxcd.io/name")
            .map(String::as_str),
        Some("app")
    );
    assert_eq!(
        labels
            .get("kustomize.toolkit.fluxcd.io/namespace")
            .map(String::as_str),
        Some(ns.as_str())
    );
    let managers: Vec<String> = alpha
        .metadata
        .managed_fields
        .unwrap_or_default()
        .iter()
        .filter_map(|m| m.manager.clone())
        .collect();
    assert!(
        managers.contains(&"kustomize-controller".to_string()),
        "{managers:?}"
    );

    // A new revision changes alpha and drops beta: beta is pruned.
    let second = e.publish("app", &[("a.yaml", &cm("alpha", "2"))]).await;
    let obj = e.wait_ready_at("app", &second).await;
    assert_eq!(data_key(&e.configmap("alpha").await.unwrap()), "2");
    e.wait_configmap_gone("beta").await;
    assert_eq!(inventory_ids(&obj), [format!("{ns}_alpha__ConfigMap")]);

    // A manual edit is drift: the next reconcile puts the artifact's value back, and a field
    // kubectl added is taken over and removed, as Flux does.
    let patch = json!({"data": {"key": "edited", "added": "by hand"}});
    let kubectl = PatchParams {
        field_manager: Some("kubectl-edit".into()),
        ..Default::default()
    };
    e.configmaps()
        .patch("alpha", &kubectl, &Patch::Merge(&patch))
        .await
        .unwrap();
    e.request_reconcile("app").await;
    let alpha = e.configmap("alpha").await.unwrap();
    assert_eq!(data_key(&alpha), "2", "drift reverted");
    assert_eq!(
        alpha.data.unwrap_or_default().get("added"),
        None,
        "kubectl's field removed"
    );

    // Nothing changed: a reconcile writes nothing.
    let before = e.apply.metric("driftless_apply_writes");
    assert!(before >= 3.0, "the applies so far were counted: {before}");
    let obj = e.request_reconcile("app").await;
    assert_eq!(ready(&obj).unwrap().0, ConditionStatus::True);
    assert_eq!(
        e.apply.metric("driftless_apply_writes") - before,
        0.0,
        "an unchanged reconcile performs zero writes"
    );
    let version = e
        .configmap("alpha")
        .await
        .unwrap()
        .metadata
        .resource_version;
    e.request_reconcile("app").await;
    assert_eq!(
        e.configmap("alpha")
            .await
            .unwrap()
            .metadata
            .resource_version,
        version
    );

    // Suspended: a new revision is not applied, even when asked.
    e.ks.patch(
        "app",
        &PatchParams::default(),
        &Patch::Merge(&json!({"spec": {"suspend": true}})),
    )
    .await
    .unwrap();
    let third = e.publish("app", &[("a.yaml", &cm("alpha", "3"))]).await;
    let obj = e.request_reconcile("app").await;
    assert_eq!(
        obj.status
            .as_ref()
            .unwrap()
            .last_applied_revision
            .as_deref(),
        Some(second.as_str())
    );
    assert_eq!(data_key(&e.configmap("alpha").await.unwrap()), "2");
    e.ks.patch(
        "app",
        &PatchParams::default(),
        &Patch::Merge(&json!({"spec": {"suspend": false}})),
    )
    .await
    .unwrap();
    e.wait_ready_at("app", &third).await;
    assert_eq!(data_key(&e.configmap("alpha").await.unwrap()), "3");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crd_and_its_custom_resource_in_one_artifact() {
    let e = env("ks-crd").await;
    let group = format!("{}.driftless.test", e.ns.name);
    let crd = format!(
        "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata:\n  name: widgets.{group}\nspec:\n  group: {group}\n  scope: Namespaced\n  names: {{plural: widgets, singular: widget, kind: Widget}}\n  versions:\n  - name: v1\n    served: true\n    storage: true\n    schema:\n      openAPIV3Schema:\n        type: object\n        x-kubernetes-preserve-unknown-fields: true\n"
    );
    let widget =
        format!("apiVersion: {group}/v1\nkind: Widget\nmetadata:\n  name: w1\nspec:\n  size: 3\n");
    let rev = e
        .publish("crd", &[("crd.yaml", &crd), ("widget.yaml", &widget)])
        .await;
    e.create("crd", e.spec("crd", json!({}))).await;
    let obj = e.wait_ready_at("crd", &rev).await;
    let ids = inventory_ids(&obj);
    assert!(
        ids.contains(&format!(
            "_widgets.{group}_apiextensions.k8s.io_CustomResourceDefinition"
        )),
        "{ids:?}"
    );
    assert!(
        ids.contains(&format!("{}_w1_{group}_Widget", e.ns.name)),
        "{ids:?}"
    );
    let resource = ApiResource {
        group: group.clone(),
        version: "v1".into(),
        api_version: format!("{group}/v1"),
        kind: "Widget".into(),
        plural: "widgets".into(),
    };
    let widgets: Api<DynamicObject> = Api::namespaced_with(e.client.clone(), &e.ns.name, &resource);
    assert_eq!(widgets.get("w1").await.unwrap().data["spec"]["size"], 3);
    // Deleting the Kustomization prunes both (MirrorPrune with prune: true).
    e.ks.delete("crd", &DeleteParams::default()).await.unwrap();
    let crds: Api<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> = Api::all(e.client.clone());
    poll("the CRD deleted", WAIT, async || {
        let crd = crds.get_opt(&format!("widgets.{group}")).await.unwrap();
        crd.is_none_or(|c| c.metadata.deletion_timestamp.is_some())
            .then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn depends_on_waits_for_the_dependency() {
    let e = env("ks-deps").await;
    let rev = e
        .publish(
            "deps",
            &[
                ("first/a.yaml", &cm("first", "1")),
                ("second/b.yaml", &cm("second", "1")),
            ],
        )
        .await;
    e.create(
        "second",
        e.spec(
            "deps",
            json!({"path": "./second", "dependsOn": [{"name": "first"}]}),
        ),
    )
    .await;
    let waiting = e.wait_failing("second", "DependencyNotReady").await;
    assert!(
        message(&waiting, "Ready").contains("dependency"),
        "{}",
        message(&waiting, "Ready")
    );
    assert!(
        e.configmap("second").await.is_none(),
        "nothing applied before the dependency is ready"
    );
    e.create("first", e.spec("deps", json!({"path": "./first"})))
        .await;
    e.wait_ready_at("first", &rev).await;
    e.wait_ready_at("second", &rev).await;
    let first = e
        .configmap("first")
        .await
        .unwrap()
        .metadata
        .creation_timestamp
        .unwrap();
    let second = e
        .configmap("second")
        .await
        .unwrap()
        .metadata
        .creation_timestamp
        .unwrap();
    assert!(first.0 <= second.0, "dependency applied first");
}

#[tokio::test(flavor = "multi_thread")]
async fn health_check_timeout_is_health_check_failed() {
    let e = env("ks-health").await;
    let deploy = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: 1\n  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n    spec:\n      containers: [{name: web, image: example.com/web:1}]\n";
    let rev = e
        .publish(
            "health",
            &[("deploy.yaml", deploy), ("cm.yaml", &cm("settings", "1"))],
        )
        .await;
    // No kubelet or controller-manager runs here: the Deployment never becomes available.
    e.create(
        "health",
        e.spec("health", json!({"wait": true, "timeout": "30s"})),
    )
    .await;
    let obj = e.wait_failing("health", "HealthCheckFailed").await;
    let msg = message(&obj, "Ready");
    assert!(
        msg.contains("timeout waiting for: [Deployment/")
            && msg.contains("/web status: 'InProgress'"),
        "{msg}"
    );
    assert_eq!(
        obj.status
            .as_ref()
            .unwrap()
            .last_attempted_revision
            .as_deref(),
        Some(rev.as_str())
    );
    assert!(
        e.configmap("settings").await.is_some(),
        "objects were applied before the health check"
    );
    let healthy = obj
        .status
        .as_ref()
        .unwrap()
        .conditions
        .iter()
        .find(|c| c.type_ == "Healthy")
        .unwrap();
    assert_eq!(
        (healthy.status, healthy.reason.as_str()),
        (ConditionStatus::False, "HealthCheckFailed")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn post_build_substitution_from_values_and_configmaps() {
    let e = env("ks-subst").await;
    let template = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: ${app}-config\ndata:\n  key: \"${greeting} ${region:=eu}\"\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: literal\n  annotations:\n    kustomize.toolkit.fluxcd.io/substitute: disabled\ndata:\n  key: \"${untouched}\"\n";
    let rev = e.publish("subst", &[("app.yaml", template)]).await;
    let vars: ConfigMap = serde_json::from_value(
        json!({"metadata": {"name": "vars"}, "data": {"greeting": "hello", "app": "fromcm"}}),
    )
    .unwrap();
    e.configmaps()
        .create(&PostParams::default(), &vars)
        .await
        .unwrap();
    let spec = e.spec("subst", json!({"postBuild": {
        "substitute": {"app": "web"},
        "substituteFrom": [{"kind": "ConfigMap", "name": "vars"}, {"kind": "Secret", "name": "absent", "optional": true}],
    }}));
    e.create("subst", spec).await;
    e.wait_ready_at("subst", &rev).await;
    assert_eq!(
        data_key(&e.configmap("web-config").await.expect("inline value wins")),
        "hello eu"
    );
    assert_eq!(
        data_key(&e.configmap("literal").await.unwrap()),
        "${untouched}"
    );

    // A required source that is missing is a build failure.
    let spec = e.spec(
        "subst",
        json!({"postBuild": {"substituteFrom": [{"kind": "Secret", "name": "missing"}]}}),
    );
    e.create("strict", spec).await;
    let obj = e.wait_failing("strict", "BuildFailed").await;
    assert!(
        message(&obj, "Ready").contains("missing"),
        "{}",
        message(&obj, "Ready")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn unset_variables_fail_the_build_unless_strict_substitutions_are_gated_off() {
    let template = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: unset-demo\ndata:\n  key: \"${greeting}-${unset}\"\n";
    let vars = json!({"postBuild": {"substitute": {"greeting": "hi"}}});
    // With the gate off (Flux before 2.9), the unset variable becomes empty.
    let lenient = env_with(
        "ks-unset",
        &["--feature-gates=StrictPostBuildSubstitutions=false"],
    )
    .await;
    let rev = lenient.publish("unset", &[("app.yaml", template)]).await;
    lenient
        .create("unset", lenient.spec("unset", vars.clone()))
        .await;
    lenient.wait_ready_at("unset", &rev).await;
    assert_eq!(
        data_key(&lenient.configmap("unset-demo").await.unwrap()),
        "hi-"
    );

    // Flux 2.9's default, and driftless's: strict.
    let strict = env("ks-strict").await;
    strict.publish("unset", &[("app.yaml", template)]).await;
    strict.create("unset", strict.spec("unset", vars)).await;
    let obj = strict.wait_failing("unset", "BuildFailed").await;
    assert!(
        message(&obj, "Ready").contains("variable not set (strict mode): \"unset\""),
        "{}",
        message(&obj, "Ready")
    );
    assert!(strict.configmap("unset-demo").await.is_none());
}

#[test]
fn gates_driftless_cannot_honour_are_refused_at_start_up_not_ignored() {
    for (gates, expected) in [
        (
            "--feature-gates=ExternalArtifact=true",
            "feature gate ExternalArtifact=true is not supported",
        ),
        (
            "--feature-gates=Nope=true",
            "unknown feature gate 'Nope' (this controller knows: CacheSecretsAndConfigMaps, StrictPostBuildSubstitutions",
        ),
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_driftless"))
            .args(["apply-controller", gates])
            .output()
            .unwrap();
        assert!(!out.status.success(), "{gates}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(expected), "{gates}: {stderr}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_kustomize_overlay_is_built_with_kustomize() {
    let e = env("ks-overlay").await;
    let root = support::repo_root().join("tests/fixtures/kustomize");
    let mut files = Vec::new();
    for dir in ["base", "overlay", "components/debug"] {
        for entry in std::fs::read_dir(root.join(dir)).unwrap() {
            let path = entry.unwrap().path();
            files.push((
                format!("{dir}/{}", path.file_name().unwrap().to_string_lossy()),
                std::fs::read_to_string(&path).unwrap(),
            ));
        }
    }
    let files: Vec<(&str, &str)> = files
        .iter()
        .map(|(p, c)| (p.as_str(), c.as_str()))
        .collect();
    let rev = e.publish("overlay", &files).await;
    e.create(
        "overlay",
        e.spec(
            "overlay",
            json!({
                "path": "./overlay", "nameSuffix": "-x",
                "commonMetadata": {"labels": {"team": "platform"}, "annotations": {"owner": "ops"}},
                "images": [{"name": "example.com/demo/app", "newTag": "2.0.0"}],
                "patches": [{"patch": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: app-config\ndata:\n  patched: \"yes\"\n"}],
            }),
        ),
    )
    .await;
    e.wait_ready_at("overlay", &rev).await;
    let cm = e
        .configmap("staging-app-config-x")
        .await
        .expect("namePrefix from the overlay, nameSuffix from the spec");
    let labels = cm.metadata.labels.clone().unwrap_or_default();
    assert_eq!(labels.get("env").map(String::as_str), Some("staging"));
    assert_eq!(
        labels.get("team").map(String::as_str),
        Some("platform"),
        "commonMetadata"
    );
    let annotations = cm.metadata.annotations.clone().unwrap_or_default();
    assert_eq!(annotations.get("owner").map(String::as_str), Some("ops"));
    assert_eq!(
        cm.data
            .unwrap_or_default()
            .get("patched")
            .map(String::as_str),
        Some("yes"),
        "spec.patches merged into the overlay"
    );
    let deployments: Api<k8s_openapi::api::apps::v1::Deployment> =
        Api::namespaced(e.client.clone(), &e.ns.name);
    let d = deployments.get("staging-app-x").await.unwrap();
    let spec = d.spec;
    assert_eq!(spec.replicas, Some(3));
    let image = spec.template.spec.unwrap().containers[0]
        .image
        .clone()
        .unwrap();
    assert_eq!(
        image, "registry.example.com/demo/app:2.0.0",
        "spec.images updates the overlay's entry of the same name"
    );

    // A remote base is refused before kustomize would reach the network.
    let remote = std::fs::read_to_string(root.join("remote-base/kustomization.yaml")).unwrap();
    let rev = e
        .publish("remote", &[("kustomization.yaml", &remote)])
        .await;
    e.create("remote", e.spec("remote", json!({}))).await;
    let obj = e.wait_failing("remote", "BuildFailed").await;
    assert!(
        message(&obj, "Ready").contains("remote bases are not allowed"),
        "{}",
        message(&obj, "Ready")
    );
    assert_eq!(
        obj.status
            .as_ref()
            .unwrap()
            .last_attempted_revision
            .as_deref(),
        Some(rev.as_str())
    );

    // An exec plugin (a KRM function that runs a script) is refused: the build fails and
    // nothing is applied, nothing generated.
    let plugin = root.join("exec-plugin");
    let plugin_files: Vec<(String, String)> =
        ["kustomization.yaml", "generator.yaml", "generate.sh"]
            .iter()
            .map(|f| {
                (
                    f.to_string(),
                    std::fs::read_to_string(plugin.join(f)).unwrap(),
                )
            })
            .collect();
    let plugin_files: Vec<(&str, &str)> = plugin_files
        .iter()
        .map(|(p, c)| (p.as_str(), c.as_str()))
        .collect();
    let rev = e.publish("exec", &plugin_files).await;
    e.create("exec", e.spec("exec", json!({}))).await;
    let obj = e.wait_failing("exec", "BuildFailed").await;
    assert!(
        message(&obj, "Ready").contains("external plugins disabled"),
        "{}",
        message(&obj, "Ready")
    );
    assert_eq!(
        obj.status
            .as_ref()
            .unwrap()
            .last_attempted_revision
            .as_deref(),
        Some(rev.as_str())
    );
    assert!(
        e.configmap("generated-by-exec").await.is_none(),
        "the plugin's output is not applied"
    );
    assert!(inventory_ids(&obj).is_empty(), "nothing applied");
}

/// A copy of `dirs` of the kustomize fixtures under a fresh directory, as an artifact would be
/// extracted (executable bits kept: a refused exec plugin must be refused, not just missing its
/// mode).
fn fixture_tree(dirs: &[&str]) -> tempfile::TempDir {
    let fixtures = support::repo_root().join("tests/fixtures/kustomize");
    let root = tempfile::tempdir().unwrap();
    for dir in dirs {
        std::fs::create_dir_all(root.path().join(dir)).unwrap();
        for entry in std::fs::read_dir(fixtures.join(dir)).unwrap() {
            let path = entry.unwrap().path();
            std::fs::copy(&path, root.path().join(dir).join(path.file_name().unwrap())).unwrap();
        }
    }
    root
}

/// A spec building `path` of the artifact, with nothing of Flux's transformers set.
fn plain_spec(path: &str) -> driftless::api::kustomization::KustomizationSpec {
    serde_json::from_value(json!({
        "interval": "10m", "prune": true, "path": path,
        "sourceRef": {"kind": "OCIRepository", "name": "fixtures"},
    }))
    .unwrap()
}

/// The overlay fixture, built as the apply-controller builds an artifact, is exactly what
/// `expected/overlay.yaml` records (what `kustomize build` prints): every object, every field,
/// in the same order. And the exec-plugin fixture is refused by that same build, before its
/// script could run.
#[tokio::test]
async fn the_kustomize_fixtures_build_to_what_is_recorded_and_exec_plugins_are_refused() {
    let platform = support::platform();
    let kustomize = std::path::Path::new(&platform.env["DRIFTLESS_TESTBIN"]).join("bin/kustomize");
    let fixtures = support::repo_root().join("tests/fixtures/kustomize");
    let expected_text = std::fs::read_to_string(fixtures.join("expected/overlay.yaml")).unwrap();
    let expected =
        driftless::apply::build::decode(&expected_text, "expected/overlay.yaml").unwrap();
    assert_eq!(expected.len(), 3, "the fixture records three objects");

    let tree = fixture_tree(&["base", "overlay", "components/debug"]);
    let scratch = tempfile::tempdir().unwrap();
    let built = driftless::apply::build::build(
        tree.path(),
        &plain_spec("./overlay"),
        Some(&kustomize),
        scratch.path(),
        None,
    )
    .await
    .unwrap_or_else(|e| panic!("build the overlay fixture: {e}"));
    assert!(
        built == expected,
        "the overlay builds to something else than expected/overlay.yaml:\n{}",
        serde_json::to_string_pretty(&built).unwrap()
    );

    let tree = fixture_tree(&["exec-plugin"]);
    use std::os::unix::fs::PermissionsExt;
    let script = tree.path().join("exec-plugin/generate.sh");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let refused = driftless::apply::build::build(
        tree.path(),
        &plain_spec("./exec-plugin"),
        Some(&kustomize),
        scratch.path(),
        None,
    )
    .await
    .expect_err("a kustomization with an exec plugin is refused");
    assert!(
        refused
            .to_string()
            .contains("external plugins disabled; unable to load external plugin 'ShellGenerator'"),
        "{refused}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn impersonation_denied_by_rbac_is_reported() {
    let e = env("ks-rbac").await;
    let rev = e.publish("rbac", &[("a.yaml", &cm("guarded", "1"))]).await;
    let sa: k8s_openapi::api::core::v1::ServiceAccount =
        serde_json::from_value(json!({"metadata": {"name": "tenant"}})).unwrap();
    Api::namespaced(e.client.clone(), &e.ns.name)
        .create(&PostParams::default(), &sa)
        .await
        .unwrap();
    e.create(
        "rbac",
        e.spec("rbac", json!({"serviceAccountName": "tenant"})),
    )
    .await;
    let obj = e.wait_failing("rbac", "ReconciliationFailed").await;
    let msg = message(&obj, "Ready");
    assert!(
        msg.contains("system:serviceaccount:")
            && msg.contains("tenant")
            && msg.contains("forbidden"),
        "{msg}"
    );
    assert!(e.configmap("guarded").await.is_none());
    assert_eq!(
        obj.status
            .as_ref()
            .unwrap()
            .last_attempted_revision
            .as_deref(),
        Some(rev.as_str())
    );
}

/// A source whose artifact the test controls: a suspended Bucket (left alone by the
/// source-controller) with `status.artifact` written by hand.
async fn hand_made_source(e: &Env, name: &str, url: &str, digest: &str) {
    let buckets: Api<Bucket> = Api::namespaced(e.client.clone(), &e.ns.name);
    let b: Bucket = serde_json::from_value(json!({"metadata": {"name": name}, "spec": {"bucketName": "x", "endpoint": "127.0.0.1:1", "interval": "1h", "suspend": true}})).unwrap();
    buckets.create(&PostParams::default(), &b).await.unwrap();
    let status = json!({"status": {"artifact": {"path": "x", "url": url, "revision": "sha256:0000", "digest": digest, "lastUpdateTime": "2026-01-01T00:00:00Z"}}});
    buckets
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap();
}

/// Serves `body` at every path (a stand-in for a source-controller's file server).
async fn serve_bytes(body: Vec<u8>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut conn, _)) = listener.accept().await {
            let body = body.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = conn.read(&mut buf).await;
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = conn.write_all(head.as_bytes()).await;
                let _ = conn.write_all(&body).await;
            });
        }
    });
    format!("http://{addr}/bucket/x/y/artifact.tar.gz")
}

#[tokio::test(flavor = "multi_thread")]
async fn digest_mismatch_and_hostile_archives_apply_nothing() {
    use sha2::Digest;
    let e = env("ks-artifact").await;
    let good = flux_layer(&[("a.yaml", &cm("never", "1"))]);
    let url = serve_bytes(good.clone()).await;
    hand_made_source(
        &e,
        "tampered",
        &url,
        &format!(
            "sha256:{}",
            hex::encode(sha2::Sha256::digest(b"something else"))
        ),
    )
    .await;
    let mut spec = e.spec("tampered", json!({}));
    spec["sourceRef"] = json!({"kind": "Bucket", "name": "tampered"});
    e.create("tampered", spec).await;
    let obj = e.wait_failing("tampered", "ArtifactFailed").await;
    // Flux 1.10.1's words: the source is expected to publish the artifact its status names soon.
    assert_eq!(
        message(&obj, "Ready"),
        "Source is not ready, artifact digest changed, retrying in 2s"
    );
    assert!(e.configmap("never").await.is_none());

    let mut raw = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(5);
    h.set_mode(0o644);
    h.set_entry_type(tar::EntryType::Regular);
    h.as_gnu_mut().unwrap().name[..13].copy_from_slice(b"../escape.yml");
    h.set_cksum();
    raw.append(&h, &b"evil\n"[..]).unwrap();
    let hostile = gzip(&raw.into_inner().unwrap());
    let url = serve_bytes(hostile.clone()).await;
    hand_made_source(
        &e,
        "hostile",
        &url,
        &format!("sha256:{}", hex::encode(sha2::Sha256::digest(&hostile))),
    )
    .await;
    let mut spec = e.spec("hostile", json!({}));
    spec["sourceRef"] = json!({"kind": "Bucket", "name": "hostile"});
    e.create("hostile", spec).await;
    let obj = e.wait_failing("hostile", "ArtifactFailed").await;
    assert!(
        message(&obj, "Ready").contains("failed to extract artifact"),
        "{}",
        message(&obj, "Ready")
    );

    // A source that does not exist yet is an artifact failure naming it.
    let mut spec = e.spec("nothing", json!({}));
    spec["sourceRef"] = json!({"kind": "OCIRepository", "name": "nothing"});
    e.create("orphan", spec).await;
    let obj = e.wait_failing("orphan", "ArtifactFailed").await;
    assert_eq!(
        message(&obj, "Ready"),
        format!("Source 'OCIRepository/{}/nothing' not found", e.ns.name)
    );
}

/// A ConfigMap whose one anchored string of `size` bytes is referenced `aliases` times.
fn wide_laughs(name: &str, size: usize, aliases: usize) -> String {
    let mut text = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\ndata:\n  a: &a \"{}\"\n",
        "x".repeat(size)
    );
    for i in 0..aliases {
        text.push_str(&format!("  k{i}: *a\n"));
    }
    text
}

/// The classic: nine levels of ten references each.
fn billion_laughs() -> String {
    let mut text = String::from(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: lol\ndata:\n  a0: &a0 \"lol\"\n",
    );
    for level in 1..10 {
        let refs = vec![format!("*a{}", level - 1); 10].join(", ");
        text.push_str(&format!("  a{level}: &a{level} [{refs}]\n"));
    }
    text
}

#[tokio::test(flavor = "multi_thread")]
async fn yaml_alias_bombs_fail_the_build_and_the_controller_stays_up() {
    let e = env("ks-laughs").await;
    let rev = e.publish("laughs", &[("a.yaml", &cm("before", "1"))]).await;
    e.create("laughs", e.spec("laughs", json!({}))).await;
    e.wait_ready_at("laughs", &rev).await;

    let classic = billion_laughs();
    // 1 MiB referenced 40 times: 41 MiB from one file, under serde-saphyr's default budget.
    let one_file = wide_laughs("wide", 1 << 20, 40);
    // 1 MiB of expansion per file, eight files: each alone is harmless.
    let across: Vec<(String, String)> = (0..8)
        .map(|i| {
            (
                format!("laughs-{i}.yaml"),
                wide_laughs(&format!("laughs-{i}"), 64 << 10, 16),
            )
        })
        .collect();
    let cases: [(&str, Vec<(&str, &str)>); 3] = [
        ("classic", vec![("laughs.yaml", classic.as_str())]),
        ("one-file", vec![("wide.yaml", one_file.as_str())]),
        (
            "across-files",
            across
                .iter()
                .map(|(p, c)| (p.as_str(), c.as_str()))
                .collect(),
        ),
    ];
    for (case, files) in cases {
        let rev = e.publish("laughs", &files).await;
        let obj = e
            .wait_until("laughs", &format!("{case}: failing at {rev}"), |o| {
                ready(o).is_some_and(|(s, _)| s == ConditionStatus::False)
                    && o.status
                        .as_ref()
                        .and_then(|s| s.last_attempted_revision.as_deref())
                        == Some(rev.as_str())
            })
            .await;
        let msg = message(&obj, "Ready");
        assert_eq!(ready(&obj).unwrap().1, "BuildFailed", "{case}: {msg}");
        assert!(
            msg.contains("failed to decode Kubernetes YAML"),
            "{case}: {msg}"
        );
        assert!(msg.contains("aliases may add at most"), "{case}: {msg}");
        assert!(
            msg.len() < 8192,
            "{case}: a bounded message, got {} bytes",
            msg.len()
        );
        // Nothing of the bomb was applied; what the last good revision applied stays.
        assert!(e.configmap("before").await.is_some(), "{case}");
        assert!(e.configmap("wide").await.is_none(), "{case}");
        assert!(e.configmap("laughs-0").await.is_none(), "{case}");
    }
    // The controller is still there and applies the next good revision.
    let rev = e.publish("laughs", &[("a.yaml", &cm("after", "2"))]).await;
    e.wait_ready_at("laughs", &rev).await;
    assert!(e.configmap("after").await.is_some());
}

#[tokio::test(flavor = "multi_thread")]
async fn deletion_policies() {
    let e = env("ks-delete").await;
    let files: Vec<(String, String)> = ["mirror", "delete", "orphan", "wait"]
        .iter()
        .map(|p| (format!("{p}/cm.yaml"), cm(&format!("{p}-cm"), "1")))
        .collect();
    let files: Vec<(&str, &str)> = files
        .iter()
        .map(|(p, c)| (p.as_str(), c.as_str()))
        .collect();
    let rev = e.publish("del", &files).await;
    let cases = [
        ("mirror", json!({"prune": true})),
        (
            "delete",
            json!({"prune": false, "deletionPolicy": "Delete"}),
        ),
        ("orphan", json!({"prune": true, "deletionPolicy": "Orphan"})),
        (
            "wait",
            json!({"prune": false, "deletionPolicy": "WaitForTermination"}),
        ),
    ];
    for (name, extra) in &cases {
        let mut extra = extra.clone();
        extra["path"] = json!(format!("./{name}"));
        e.create(name, e.spec("del", extra)).await;
    }
    for (name, _) in &cases {
        e.wait_ready_at(name, &rev).await;
        e.ks.delete(name, &DeleteParams::default()).await.unwrap();
    }
    for (name, _) in &cases {
        e.wait().gone(name).await;
    }
    e.wait_configmap_gone("mirror-cm").await;
    e.wait_configmap_gone("delete-cm").await;
    assert!(
        e.configmap("wait-cm").await.is_none(),
        "WaitForTermination finalizes after the objects are gone"
    );
    assert!(
        e.configmap("orphan-cm").await.is_some(),
        "Orphan leaves the objects"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn flux_git_sources_are_read_and_cross_namespace_refs_can_be_blocked() {
    let e = env_with("ks-sources", &["--no-cross-namespace-refs"]).await;
    let rev = e.publish("oci", &[("a.yaml", &cm("from-git", "1"))]).await;
    let artifact = Api::<OCIRepository>::namespaced(e.client.clone(), &e.ns.name)
        .get("oci")
        .await
        .unwrap()
        .status
        .unwrap()
        .artifact
        .unwrap();

    support::install_flux_source_crds(&e.client).await;
    let resource = ApiResource {
        group: "source.toolkit.fluxcd.io".into(),
        version: "v1".into(),
        api_version: "source.toolkit.fluxcd.io/v1".into(),
        kind: "GitRepository".into(),
        plural: "gitrepositories".into(),
    };
    let repos: Api<DynamicObject> = Api::namespaced_with(e.client.clone(), &e.ns.name, &resource);
    let repo: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "GitRepository",
        "metadata": {"name": "repo"}, "spec": {"url": "https://example.com/repo.git", "interval": "1m"},
    }))
    .unwrap();
    repos.create(&PostParams::default(), &repo).await.unwrap();
    let status = json!({"status": {"artifact": serde_json::to_value(&artifact).unwrap()}});
    repos
        .patch_status("repo", &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap();
    let mut spec = e.spec("oci", json!({}));
    spec["sourceRef"] = json!({"kind": "GitRepository", "name": "repo"});
    e.create("git", spec).await;
    e.wait_ready_at("git", &rev).await;
    assert!(e.configmap("from-git").await.is_some());

    let mut spec = e.spec("oci", json!({}));
    spec["sourceRef"] = json!({"kind": "OCIRepository", "name": "oci", "namespace": "elsewhere"});
    e.create("cross", spec).await;
    let obj = e
        .wait()
        .for_condition("cross", "Stalled", |c| c.reason == "AccessDenied")
        .await;
    assert_eq!(
        message(&obj, "Ready"),
        "can't access 'OCIRepository/elsewhere/oci', cross-namespace references have been blocked"
    );

    // dependsOn is a reference too: refused before anything in the other namespace is read.
    let mut spec = e.spec("oci", json!({}));
    spec["dependsOn"] = json!([{"name": "dep", "namespace": "elsewhere"}]);
    e.create("cross-dep", spec).await;
    let obj = e
        .wait()
        .for_condition("cross-dep", "Stalled", |c| c.reason == "AccessDenied")
        .await;
    assert_eq!(
        message(&obj, "Ready"),
        "can't access dependency 'Kustomization/elsewhere/dep', cross-namespace references have been blocked"
    );
    // A dependency in the object's own namespace, named with it, is no cross reference.
    let mut spec = e.spec("oci", json!({}));
    spec["dependsOn"] = json!([{"name": "git", "namespace": e.ns.name}]);
    e.create("same-ns-dep", spec).await;
    e.wait_ready_at("same-ns-dep", &rev).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn immutable_changes_need_force() {
    let e = env("ks-force").await;
    let frozen = |v: &str| {
        format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: frozen\nimmutable: true\ndata:\n  key: \"{v}\"\n"
        )
    };
    let first = e.publish("force", &[("cm.yaml", &frozen("1"))]).await;
    e.create("force", e.spec("force", json!({}))).await;
    e.wait_ready_at("force", &first).await;
    let second = e.publish("force", &[("cm.yaml", &frozen("2"))]).await;
    let obj = e.wait_failing("force", "ReconciliationFailed").await;
    assert!(
        message(&obj, "Ready").contains("immutable"),
        "{}",
        message(&obj, "Ready")
    );
    assert_eq!(
        data_key(&e.configmap("frozen").await.unwrap()),
        "1",
        "left alone without force"
    );
    e.ks.patch(
        "force",
        &PatchParams::default(),
        &Patch::Merge(&json!({"spec": {"force": true}})),
    )
    .await
    .unwrap();
    e.wait_ready_at("force", &second).await;
    assert_eq!(
        data_key(&e.configmap("frozen").await.unwrap()),
        "2",
        "recreated with force"
    );
}

/// A remote resource in a nested base is refused before kustomize runs, and kustomize itself
/// cannot reach the network even when handed one: a listener on this machine sees nothing.
#[tokio::test(flavor = "multi_thread")]
async fn nested_remote_bases_are_refused_and_kustomize_has_no_network() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let remote = format!(
        "http://127.0.0.1:{}/x.yaml",
        listener.local_addr().unwrap().port()
    );
    let no_connection = |when: &str| {
        assert_eq!(
            listener.accept().map(|_| ()).map_err(|e| e.kind()),
            Err(std::io::ErrorKind::WouldBlock),
            "{when}: something connected to the listener"
        );
    };

    let e = env("ks-nested-remote").await;
    let overlay = "resources: [../base]\nnamePrefix: x-\n".to_string();
    let base = "resources: [cm.yaml, deep]\n".to_string();
    let deep = format!("resources:\n- {remote}\n");
    let rev = e
        .publish(
            "nested",
            &[
                ("overlay/kustomization.yaml", &overlay),
                ("base/kustomization.yaml", &base),
                ("base/cm.yaml", &cm("nested-cm", "1")),
                ("base/deep/kustomization.yaml", &deep),
            ],
        )
        .await;
    e.create("nested", e.spec("nested", json!({"path": "./overlay"})))
        .await;
    let obj = e.wait_failing("nested", "BuildFailed").await;
    let why = message(&obj, "Ready");
    assert!(
        why.contains("remote bases are not allowed")
            && why.contains("base/deep/kustomization.yaml"),
        "{why}"
    );
    assert_eq!(
        obj.status
            .as_ref()
            .unwrap()
            .last_attempted_revision
            .as_deref(),
        Some(rev.as_str())
    );
    assert!(
        e.configmap("x-nested-cm").await.is_none(),
        "nothing applied"
    );
    no_connection("through the controller");

    // The same remote resource handed straight to the confined kustomize run.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("kustomization.yaml"), &deep).unwrap();
    let kustomize =
        std::path::Path::new(&e.platform.env["DRIFTLESS_TESTBIN"]).join("bin/kustomize");
    let err = driftless::apply::build::run_kustomize(&kustomize, dir.path())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("kustomize build failed"), "{err}");
    no_connection("kustomize run directly");
}

/// A duration past Go's range is a stalled object naming the field, not a panic that takes
/// the controller (and every tenant's Kustomization) down.
#[tokio::test(flavor = "multi_thread")]
async fn durations_out_of_range_stall_the_object_only() {
    let e = env("ks-durations").await;
    let rev = e
        .publish("dur", &[("a.yaml", &cm("durations-cm", "1"))])
        .await;
    for (name, field, value) in [
        ("huge-retry", "retryInterval", "99999999999999999999h"),
        ("huge-interval", "interval", "9999999999999999999m"),
        ("huge-timeout", "timeout", "2562048h"),
    ] {
        e.create(name, e.spec("dur", json!({ (field): value })))
            .await;
        let obj = e
            .wait()
            .for_condition(name, "Stalled", |c| c.reason == "InvalidDuration")
            .await;
        assert!(
            message(&obj, "Ready")
                .starts_with(&format!("spec.{field}: duration '{value}' is out of range")),
            "{}",
            message(&obj, "Ready")
        );
    }
    e.create("fine", e.spec("dur", json!({}))).await;
    e.wait_ready_at("fine", &rev).await;
    assert!(e.configmap("durations-cm").await.is_some());
}

/// `spec.kubeConfig.configMapRef` with the `generic` provider: the ConfigMap's ServiceAccount
/// (else `--default-kubeconfig-service-account`) gets a token from the local API server for the
/// remote cluster's audience, and the remote API server (which trusts the local issuer, see
/// hack/platform `trust_issuer`) lets it apply, health-check and prune there. A ConfigMap that
/// is missing, names an unknown provider or lacks the address fails naming the cause.
#[tokio::test(flavor = "multi_thread")]
async fn remote_cluster_through_a_service_account_token_of_the_generic_provider() {
    let e = env_with(
        "ks-remote-generic",
        &["--default-kubeconfig-service-account=fallback"],
    )
    .await;
    let remote = e.remote_cluster().await;
    // In the remote cluster, only the local `deployer` ServiceAccount (as the remote cluster
    // names it) may write, and only in this namespace.
    let user = format!("platform:system:serviceaccount:{}:deployer", e.ns.name);
    let bindings: Api<k8s_openapi::api::rbac::v1::RoleBinding> =
        Api::namespaced(remote.clone(), &e.ns.name);
    bindings
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "metadata": {"name": "deployer-admin"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
                "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    let accounts: Api<k8s_openapi::api::core::v1::ServiceAccount> =
        Api::namespaced(e.client.clone(), &e.ns.name);
    for name in ["deployer", "fallback"] {
        accounts
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({"metadata": {"name": name}})).unwrap(),
            )
            .await
            .unwrap();
    }
    let address = e.platform.env["DRIFTLESS_REMOTE_APISERVER"].clone();
    let ca = std::fs::read_to_string(
        std::path::Path::new(&e.platform.env["DRIFTLESS_PLATFORM_DIR"]).join("pki/ca.crt"),
    )
    .unwrap();
    let configmaps: Api<ConfigMap> = Api::namespaced(e.client.clone(), &e.ns.name);
    let cluster = |name: &str, data: serde_json::Value| {
        serde_json::from_value::<ConfigMap>(json!({"metadata": {"name": name}, "data": data}))
            .unwrap()
    };
    for (name, data) in [
        (
            "remote",
            json!({"provider": "generic", "address": address, "ca.crt": ca, "serviceAccountName": "deployer"}),
        ),
        (
            "remote-default",
            json!({"provider": "generic", "address": address, "ca.crt": ca}),
        ),
        (
            "unknown",
            json!({"provider": "openstack", "address": address}),
        ),
        ("no-address", json!({"provider": "generic"})),
    ] {
        configmaps
            .create(&PostParams::default(), &cluster(name, data))
            .await
            .unwrap();
    }
    let rev1 = e
        .publish(
            "src",
            &[
                ("a.yaml", &cm("generic-a", "1")),
                ("b.yaml", &cm("generic-b", "1")),
            ],
        )
        .await;
    let via = |name: &str| json!({"wait": true, "kubeConfig": {"configMapRef": {"name": name}}});
    e.create("remote", e.spec("src", via("remote"))).await;
    let applied = e.wait_ready_at("remote", &rev1).await;
    assert!(
        message(&applied, "Healthy").starts_with("Health check passed"),
        "{}",
        message(&applied, "Healthy")
    );
    let remote_configmaps: Api<ConfigMap> = Api::namespaced(remote.clone(), &e.ns.name);
    let a = remote_configmaps
        .get("generic-a")
        .await
        .expect("applied remotely");
    assert_eq!(
        a.metadata.labels.unwrap_or_default()["kustomize.toolkit.fluxcd.io/name"],
        "remote"
    );
    assert!(
        e.configmap("generic-a").await.is_none(),
        "nothing applied locally"
    );
    let rev2 = e.publish("src", &[("a.yaml", &cm("generic-a", "2"))]).await;
    e.wait_ready_at("remote", &rev2).await;
    Wait::new(&remote_configmaps, WAIT).gone("generic-b").await;

    // Without a ServiceAccount in the ConfigMap, the flag's `fallback` is used (never the
    // controller's identity): the remote cluster knows it but grants it nothing.
    let fallback = format!("platform:system:serviceaccount:{}:fallback", e.ns.name);
    e.create("remote-default", e.spec("src", via("remote-default")))
        .await;
    e.wait_until("remote-default", "refused as the fallback account", |o| {
        message(o, "Ready").contains(&fallback)
    })
    .await;

    for (name, says) in [
        (
            "missing",
            format!("failed to get configmap {}/missing", e.ns.name),
        ),
        (
            "unknown",
            "provider 'openstack' not implemented".to_string(),
        ),
        (
            "no-address",
            "failed to validate configuration: cluster address is required".to_string(),
        ),
    ] {
        e.refused_naming(name, e.spec("src", via(name)), &says)
            .await;
    }

    // Deleting the Kustomization prunes in the remote cluster, through the same identity.
    e.ks.delete("remote", &DeleteParams::default())
        .await
        .unwrap();
    Wait::new(&remote_configmaps, WAIT).gone("generic-a").await;
}

fn deployment(name: &str, replicas: u32, tier: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {name}\n  labels:\n    tier: {tier}\n\
         spec:\n  replicas: {replicas}\n  selector:\n    matchLabels:\n      app: {name}\n\
         \x20 template:\n    metadata:\n      labels:\n        app: {name}\n\
         \x20   spec:\n      containers:\n      - name: app\n        image: registry.example/app:1\n"
    )
}

fn cm_with(name: &str, key: &str, owned: &str) -> String {
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\ndata:\n  key: \"{key}\"\n  owned: \"{owned}\"\n"
    )
}

/// Whether `manager`'s Apply entry on the object holds `data.<key>`.
fn applies_data_key(cm: &ConfigMap, manager: &str, key: &str) -> bool {
    cm.metadata.managed_fields.iter().flatten().any(|m| {
        m.manager.as_deref() == Some(manager)
            && m.operation.as_deref() == Some("Apply")
            && m.fields_v1
                .as_ref()
                .and_then(|f| f.0.pointer(&format!("/f:data/f:{key}")))
                .is_some()
    })
}

/// `spec.ignore` as Flux 2.9 defines it: a scale through `/scale` and a value another
/// server-side applier wrote survive reconciles; the scaled value is adopted, the other
/// applier's field is left to it; a change in ignored fields only writes nothing; objects the
/// target does not select are reverted as before; a malformed rule stalls naming it.
#[tokio::test(flavor = "multi_thread")]
async fn ignore_rules_leave_fields_to_other_writers() {
    use k8s_openapi::api::apps::v1::Deployment;
    let e = env("ks-ignore").await;
    let manifests = |key: &str, tier: &str| {
        vec![
            ("web.yaml".to_string(), deployment("web", 1, tier)),
            ("shared.yaml".to_string(), cm_with("shared", key, "ours")),
            ("plain.yaml".to_string(), cm_with("plain", key, "ours")),
        ]
    };
    let publish = |files: Vec<(String, String)>| {
        let e = &e;
        async move {
            let files: Vec<(&str, &str)> = files
                .iter()
                .map(|(n, c)| (n.as_str(), c.as_str()))
                .collect();
            e.publish("app", &files).await
        }
    };
    let first = publish(manifests("1", "a")).await;
    e.create(
        "app",
        e.spec(
            "app",
            json!({"ignore": [
                {"paths": ["/spec/replicas"], "target": {"kind": "Deploy.*", "group": "apps"}},
                {"paths": ["/data/owned"], "target": {"kind": "ConfigMap", "name": "shar.*"}},
            ]}),
        ),
    )
    .await;
    e.wait_ready_at("app", &first).await;

    // An autoscaler scales through /scale; another tool applies its own value server-side.
    let deployments: Api<Deployment> = Api::namespaced(e.client.clone(), &e.ns.name);
    deployments
        .patch_scale(
            "web",
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"replicas": 5}})),
        )
        .await
        .unwrap();
    let other = PatchParams::apply("other-tool").force();
    for name in ["shared", "plain"] {
        let theirs = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name}, "data": {"owned": "theirs"}});
        e.configmaps()
            .patch(name, &other, &Patch::Apply(&theirs))
            .await
            .unwrap();
    }
    let replicas = |d: Deployment| d.spec.replicas;
    let owned = |cm: &ConfigMap| {
        cm.data
            .as_ref()
            .and_then(|d| d.get("owned"))
            .cloned()
            .unwrap_or_default()
    };
    let shared_version = e
        .configmap("shared")
        .await
        .unwrap()
        .metadata
        .resource_version;
    let web_version = deployments
        .get("web")
        .await
        .unwrap()
        .metadata
        .resource_version;
    e.request_reconcile("app").await;
    assert_eq!(replicas(deployments.get("web").await.unwrap()), Some(5));
    assert_eq!(owned(&e.configmap("shared").await.unwrap()), "theirs");
    assert_eq!(
        owned(&e.configmap("plain").await.unwrap()),
        "ours",
        "a ConfigMap the rule's target does not select is reverted"
    );
    assert_eq!(
        e.configmap("shared")
            .await
            .unwrap()
            .metadata
            .resource_version,
        shared_version,
        "drift in ignored fields only is no drift: nothing written"
    );
    assert_eq!(
        deployments
            .get("web")
            .await
            .unwrap()
            .metadata
            .resource_version,
        web_version
    );

    // A new revision changes both objects elsewhere: they are applied, and the ignored fields
    // keep the other writers' values — adopted (replicas), or left to the other applier.
    let second = publish(manifests("2", "b")).await;
    e.wait_ready_at("app", &second).await;
    let web = deployments.get("web").await.unwrap();
    assert_eq!(
        web.metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("tier"))
            .map(String::as_str),
        Some("b")
    );
    assert_eq!(replicas(web), Some(5), "the scaled replicas are kept");
    let shared = e.configmap("shared").await.unwrap();
    assert_eq!(data_key(&shared), "2");
    assert_eq!(owned(&shared), "theirs");
    assert!(
        !applies_data_key(&shared, "kustomize-controller", "owned"),
        "the other applier's field is left out of our apply"
    );
    assert!(applies_data_key(&shared, "other-tool", "owned"));
    assert!(applies_data_key(&shared, "kustomize-controller", "key"));

    // A rule that cannot be compiled stalls the Kustomization naming the rule.
    e.ks.patch(
        "app",
        &PatchParams::default(),
        &Patch::Merge(&json!({"spec": {"ignore": [{"paths": ["/data/owned"], "target": {"labelSelector": "app in"}}]}})),
    )
    .await
    .unwrap();
    let obj = e
        .wait()
        .for_condition("app", "Stalled", |c| c.reason == "ReconciliationFailed")
        .await;
    assert!(
        message(&obj, "Ready").starts_with("spec.ignore[0].target: invalid labelSelector 'app in'"),
        "{}",
        message(&obj, "Ready")
    );
}

fn service(name: &str, ports: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\nspec:\n  selector:\n    app: {name}\n  ports:\n{ports}"
    )
}

/// `--override-manager` (prefixes, after the dry run) and `--override-manager-before-dry-run`
/// (exact names, before it): a stale co-owner's port left in a Service makes the dry run of the
/// next revision invalid (two ports, one unnamed) unless its fields are taken over first; a
/// field another tool added is removed once its manager is overridden, even when nothing else
/// drifted; a manager no flag names keeps its field.
#[tokio::test(flavor = "multi_thread")]
async fn override_managers_take_over_fields_as_flux_does() {
    let e = env_with(
        "ks-override",
        &[
            "--override-manager=helm",
            "--override-manager-before-dry-run=stale-operator",
        ],
    )
    .await;
    let named = "  - name: https\n    port: 8443\n";
    let unnamed = "  - port: 8443\n";
    let first_taken = e
        .publish("taken", &[("svc.yaml", &service("taken", named))])
        .await;
    let first_kept = e
        .publish("kept", &[("svc.yaml", &service("kept", named))])
        .await;
    e.create("taken", e.spec("taken", json!({}))).await;
    e.create("kept", e.spec("kept", json!({}))).await;
    e.wait_ready_at("taken", &first_taken).await;
    e.wait_ready_at("kept", &first_kept).await;

    let services: Api<k8s_openapi::api::core::v1::Service> =
        Api::namespaced(e.client.clone(), &e.ns.name);
    for (name, manager) in [("taken", "stale-operator"), ("kept", "other-operator")] {
        let port = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
            "spec": {"ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}});
        services
            .patch(name, &PatchParams::apply(manager), &Patch::Apply(&port))
            .await
            .unwrap();
    }
    let second_taken = e
        .publish("taken", &[("svc.yaml", &service("taken", unnamed))])
        .await;
    e.publish("kept", &[("svc.yaml", &service("kept", unnamed))])
        .await;
    e.wait_ready_at("taken", &second_taken).await;
    let ports = |s: k8s_openapi::api::core::v1::Service| -> Vec<i32> {
        s.spec
            .and_then(|s| s.ports)
            .unwrap_or_default()
            .iter()
            .map(|p| p.port)
            .collect()
    };
    assert_eq!(
        ports(services.get("taken").await.unwrap()),
        [8443],
        "the stale operator's port was taken over before the dry run, then removed"
    );
    let obj = e.wait_failing("kept", "ReconciliationFailed").await;
    assert!(
        message(&obj, "Ready").contains("dry-run failed")
            && message(&obj, "Ready").contains("Required value"),
        "{}",
        message(&obj, "Ready")
    );

    // After the dry run: helm's field is taken over and pruned although nothing else changed;
    // argocd's stays.
    let rev = e
        .publish("cms", &[("cm.yaml", &cm("override-cm", "1"))])
        .await;
    e.create("cms", e.spec("cms", json!({}))).await;
    e.wait_ready_at("cms", &rev).await;
    for manager in ["helm-controller", "argocd"] {
        let extra = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "override-cm"}, "data": {manager: "added"}});
        e.configmaps()
            .patch(
                "override-cm",
                &PatchParams::apply(manager),
                &Patch::Apply(&extra),
            )
            .await
            .unwrap();
    }
    e.request_reconcile("cms").await;
    let data = e
        .configmap("override-cm")
        .await
        .unwrap()
        .data
        .unwrap_or_default();
    assert_eq!(data.get("key").map(String::as_str), Some("1"));
    assert_eq!(data.get("helm-controller"), None, "overridden: removed");
    assert_eq!(
        data.get("argocd").map(String::as_str),
        Some("added"),
        "not overridden: kept"
    );
}

/// A labelled ConfigMap or Secret that `postBuild.substituteFrom` names reconciles its
/// Kustomizations as soon as it changes (Flux 2.7's config watches), with no reconcile request
/// and a 10-minute interval.
#[tokio::test(flavor = "multi_thread")]
async fn substitute_from_changes_reconcile_at_once() {
    let e = env("ks-watch-configs").await;
    let template = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: rendered\ndata:\n  key: \"${colour}-${secret_word}\"\n";
    let rev = e.publish("app", &[("app.yaml", template)]).await;
    let watched = json!({"reconcile.fluxcd.io/watch": "Enabled"});
    let vars: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "vars", "labels": watched}, "data": {"colour": "red"}}))
    .unwrap();
    e.configmaps()
        .create(&PostParams::default(), &vars)
        .await
        .unwrap();
    let secrets: Api<Secret> = Api::namespaced(e.client.clone(), &e.ns.name);
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "secret-vars", "labels": watched},
        "stringData": {"secret_word": "one"}}))
    .unwrap();
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    let spec = e.spec(
        "app",
        json!({"postBuild": {"substituteFrom": [
        {"kind": "ConfigMap", "name": "vars"}, {"kind": "Secret", "name": "secret-vars"}]}}),
    );
    e.create("app", spec).await;
    e.wait_ready_at("app", &rev).await;
    assert_eq!(data_key(&e.configmap("rendered").await.unwrap()), "red-one");

    let rendered = async |want: &str| {
        poll(&format!("rendered = {want}"), WAIT, async || {
            let got = data_key(&e.configmap("rendered").await?);
            (got == want).then_some(())
        })
        .await
    };
    let set = |data: Value| json!({"data": data});
    e.configmaps()
        .patch(
            "vars",
            &PatchParams::default(),
            &Patch::Merge(&set(json!({"colour": "blue"}))),
        )
        .await
        .unwrap();
    rendered("blue-one").await;
    secrets
        .patch(
            "secret-vars",
            &PatchParams::default(),
            &Patch::Merge(&json!({"stringData": {"secret_word": "two"}})),
        )
        .await
        .unwrap();
    rendered("blue-two").await;
    let handled =
        e.ks.get("app")
            .await
            .unwrap()
            .status
            .and_then(|s| s.last_handled_reconcile_at);
    assert_eq!(handled, None, "no reconcile was requested");
}

/// `CancelHealthCheckOnNewRevision`: a health check waiting on a Deployment that cannot become
/// ready (the platform runs no controller-manager) gives way to a new source revision at once,
/// with Flux's info event, instead of holding it back until the 10-minute timeout (without the
/// gate this test times out: checked by hand).
#[tokio::test(flavor = "multi_thread")]
async fn a_new_revision_cancels_a_health_check_in_progress() {
    let e = env_with(
        "ks-cancel-health",
        &["--feature-gates=CancelHealthCheckOnNewRevision=true"],
    )
    .await;
    let stuck = deployment("never-ready", 1, "a");
    let first = e.publish("app", &[("web.yaml", &stuck)]).await;
    e.create(
        "app",
        e.spec("app", json!({"wait": true, "timeout": "10m"})),
    )
    .await;
    e.wait_until("app", "running health checks", |o| {
        o.status
            .as_ref()
            .and_then(|s| s.last_attempted_revision.as_deref())
            == Some(first.as_str())
            && message(o, "Reconciling").starts_with("Running health checks")
    })
    .await;
    let second = e
        .publish("app", &[("cm.yaml", &cm("after-cancel", "1"))])
        .await;
    let obj = e.wait_ready_at("app", &second).await;
    assert!(e.configmap("after-cancel").await.is_some());
    let events: Api<k8s_openapi::api::core::v1::Event> =
        Api::namespaced(e.client.clone(), &e.ns.name);
    let canceled: Vec<_> = events
        .list(
            &kube::api::ListParams::default()
                .fields("involvedObject.name=app,reason=HealthCheckCanceled"),
        )
        .await
        .unwrap()
        .items;
    let source = format!("OCIRepository/{}/app", e.ns.name);
    assert!(
        canceled
            .iter()
            .any(|ev| ev.type_.as_deref() == Some("Normal")
                && ev.message.as_deref()
                    == Some(
                        format!(
                            "Health checks canceled due to new reconciliation triggered by {source}"
                        )
                        .as_str()
                    )),
        "{canceled:?}"
    );
    let history = obj
        .status
        .as_ref()
        .unwrap()
        .history
        .clone()
        .unwrap_or_default();
    assert!(
        history
            .iter()
            .all(|h| h.last_reconciled_status != "HealthCheckCanceled"),
        "a canceled pass leaves no history entry: {history:?}"
    );
}

/// A namespaced custom kind with a status subresource, in a group of the test's own.
fn widget_crd(group: &str) -> String {
    format!(
        "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata:\n  name: widgets.{group}\nspec:\n  group: {group}\n  scope: Namespaced\n  names: {{plural: widgets, singular: widget, kind: Widget}}\n  versions:\n  - name: v1\n    served: true\n    storage: true\n    subresources: {{status: {{}}}}\n    schema:\n      openAPIV3Schema:\n        type: object\n        x-kubernetes-preserve-unknown-fields: true\n"
    )
}

fn widgets(e: &Env, group: &str) -> Api<DynamicObject> {
    let resource = ApiResource {
        group: group.into(),
        version: "v1".into(),
        api_version: format!("{group}/v1"),
        kind: "Widget".into(),
        plural: "widgets".into(),
    };
    Api::namespaced_with(e.client.clone(), &e.ns.name, &resource)
}

async fn set_widget_status(widgets: &Api<DynamicObject>, name: &str, status: Value) {
    widgets
        .patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(&json!({ "status": status })),
        )
        .await
        .expect("patch the widget's status");
}

/// `healthCheckExprs` decide a custom kind's health on the real API server, in Flux's order:
/// a field the object lacks leaves it Unknown (with the cause), `inProgress` is asked before
/// `current`, `current` makes it healthy, `failed` fails the check at once.
#[tokio::test(flavor = "multi_thread")]
async fn cel_health_checks_decide_a_custom_resource_s_health() {
    let e = env("ks-cel-health").await;
    let group = format!("{}.driftless.test", e.ns.name);
    let widget = "apiVersion: GROUP/v1\nkind: Widget\nmetadata:\n  name: w1\nspec:\n  size: 1\n"
        .replace("GROUP", &group);
    let rev = e
        .publish(
            "widgets",
            &[("crd.yaml", &widget_crd(&group)), ("w1.yaml", &widget)],
        )
        .await;
    let ready_is = |s: &str| {
        format!("status.conditions.filter(e, e.type == 'Ready').all(e, e.status == '{s}')")
    };
    e.create(
        "cel",
        e.spec(
            "widgets",
            json!({
                "wait": true, "timeout": "8s", "retryInterval": "2s",
                "healthCheckExprs": [{
                    "apiVersion": format!("{group}/v1"), "kind": "Widget",
                    "inProgress": "status.phase == 'Provisioning'",
                    "failed": ready_is("False"),
                    "current": ready_is("True"),
                }],
            }),
        ),
    )
    .await;
    let subject = format!("Widget/{}/w1", e.ns.name);
    let failing_with = |what: String| {
        move |o: &Kustomization| {
            ready(o).is_some_and(|(s, r)| s == ConditionStatus::False && r == "HealthCheckFailed")
                && message(o, "Ready").contains(&what)
        }
    };
    let unknown = e
        .wait_until(
            "cel",
            "the widget without a status is Unknown",
            failing_with(format!("{subject} status: 'Unknown'")),
        )
        .await;
    assert!(
        message(&unknown, "Ready").contains("failed to evaluate the CEL expression"),
        "{}",
        message(&unknown, "Ready")
    );
    let widgets = widgets(&e, &group);
    set_widget_status(
        &widgets,
        "w1",
        json!({"phase": "Provisioning", "conditions": [{"type": "Ready", "status": "True"}]}),
    )
    .await;
    e.wait_until(
        "cel",
        "inProgress decides before current",
        failing_with(format!("{subject} status: 'InProgress'")),
    )
    .await;
    set_widget_status(&widgets, "w1", json!({"phase": "Running"})).await;
    let healthy = e.wait_ready_at("cel", &rev).await;
    assert!(
        message(&healthy, "Healthy").starts_with("Health check passed"),
        "{}",
        message(&healthy, "Healthy")
    );
    set_widget_status(
        &widgets,
        "w1",
        json!({"conditions": [{"type": "Ready", "status": "False"}]}),
    )
    .await;
    e.request_reconcile("cel").await;
    let failed = e
        .wait_until(
            "cel",
            "failed fails the check early",
            failing_with(format!("{subject} status: 'Failed'")),
        )
        .await;
    assert!(
        message(&failed, "Ready").contains("failed early due to stalled resources"),
        "{}",
        message(&failed, "Ready")
    );
}

/// `dependsOn[].readyExpr` over `self` and `dep` gates a Kustomization; by default it replaces
/// the built-in readiness rule (the dependency here never becomes Ready); an expression that
/// does not compile, or is not boolean, stalls the object naming it, as a bad
/// `healthCheckExprs` entry does.
#[tokio::test(flavor = "multi_thread")]
async fn ready_expressions_gate_dependencies_and_bad_cel_stalls() {
    let e = env("ks-cel-deps").await;
    let rev = e
        .publish("deps", &[("gated/a.yaml", &cm("gated-cm", "1"))])
        .await;
    // The dependency fails (its path does not exist), so the built-in rule would never pass.
    e.create("dep", e.spec("deps", json!({"path": "./missing"})))
        .await;
    e.wait_failing("dep", "ArtifactFailed").await;
    let expr = "dep.metadata.labels.stage == 'done' && self.metadata.name == 'gated'";
    e.create(
        "gated",
        e.spec(
            "deps",
            json!({"path": "./gated", "dependsOn": [{"name": "dep", "readyExpr": expr}]}),
        ),
    )
    .await;
    let waiting = e
        .wait_until("gated", "the expression cannot be evaluated yet", |o| {
            ready(o).is_some_and(|(_, r)| r == "DependencyNotReady")
                && message(o, "Ready").starts_with("failed to evaluate the CEL expression")
        })
        .await;
    assert!(
        message(&waiting, "Ready").contains("labels"),
        "{}",
        message(&waiting, "Ready")
    );
    assert!(e.configmap("gated-cm").await.is_none());
    e.ks.patch(
        "dep",
        &PatchParams::default(),
        &Patch::Merge(&json!({"metadata": {"labels": {"stage": "not-yet"}}})),
    )
    .await
    .unwrap();
    e.wait_until("gated", "false is not ready", |o| {
        message(o, "Ready")
            == format!(
                "dependency '{}/dep' is not ready according to readyExpr eval",
                e.ns.name
            )
    })
    .await;
    assert!(e.configmap("gated-cm").await.is_none());
    e.ks.patch(
        "dep",
        &PatchParams::default(),
        &Patch::Merge(&json!({"metadata": {"labels": {"stage": "done"}}})),
    )
    .await
    .unwrap();
    e.wait_ready_at("gated", &rev).await;
    assert!(e.configmap("gated-cm").await.is_some());

    for (name, extra, names) in [
        (
            "not-bool",
            json!({"dependsOn": [{"name": "dep", "readyExpr": "dep.spec.suspend"}]}),
            "expected bool",
        ),
        (
            "undeclared",
            json!({"dependsOn": [{"name": "dep", "readyExpr": "other.x == 1"}]}),
            "undeclared reference to 'other'",
        ),
        (
            "bad-health",
            json!({"healthCheckExprs": [{"apiVersion": "example.com/v1", "current": "status.("}]}),
            "healthchecks[0]: failed to parse the expression Current",
        ),
    ] {
        let mut extra = extra;
        extra["path"] = json!("./gated");
        e.create(name, e.spec("deps", extra)).await;
        let obj = e
            .wait()
            .for_condition(name, "Stalled", |c| c.reason == "InvalidCELExpression")
            .await;
        let msg = message(&obj, "Ready");
        assert!(
            msg.starts_with("Reconciliation failed terminally due to configuration error: ")
                && msg.contains(names),
            "{msg}"
        );
    }
}

/// With `AdditiveCELDependencyCheck` the built-in rule still applies after a true `readyExpr`:
/// a dependency that is not Ready holds the dependent back.
#[tokio::test(flavor = "multi_thread")]
async fn additive_cel_dependency_check_keeps_the_built_in_rule() {
    let e = env_with(
        "ks-cel-additive",
        &["--feature-gates=AdditiveCELDependencyCheck=true"],
    )
    .await;
    e.publish("deps", &[("gated/a.yaml", &cm("additive-cm", "1"))])
        .await;
    e.create("dep", e.spec("deps", json!({"path": "./missing"})))
        .await;
    e.wait_failing("dep", "ArtifactFailed").await;
    e.create(
        "gated",
        e.spec(
            "deps",
            json!({"path": "./gated", "dependsOn": [{"name": "dep", "readyExpr": "dep.metadata.name == 'dep'"}]}),
        ),
    )
    .await;
    let waiting = e.wait_failing("gated", "DependencyNotReady").await;
    assert_eq!(
        message(&waiting, "Ready"),
        format!("dependency '{}/dep' is not ready: not ready", e.ns.name)
    );
    assert!(e.configmap("additive-cm").await.is_none());
}

impl Env {
    async fn create_secret(&self, name: &str, string_data: Value) {
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), &self.ns.name);
        let secret: Secret = serde_json::from_value(json!({
            "metadata": {"name": name}, "stringData": string_data,
        }))
        .unwrap();
        secrets
            .create(&PostParams::default(), &secret)
            .await
            .expect("create Secret");
    }
}

/// `spec.kubeConfig.secretRef`: apply, health checks, inventory and prune all happen in the
/// platform's second cluster, as the Kustomization's ServiceAccount when it names one; the
/// local cluster holds only the Kustomization. Kubeconfigs asking for what the controller
/// does not allow are refused naming the field.
#[tokio::test(flavor = "multi_thread")]
async fn remote_cluster_apply_health_and_prune_through_a_kubeconfig_secret() {
    let e = env("ks-remote").await;
    let remote = e.remote_cluster().await;
    let remote_namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(remote.clone());
    let remote_configmaps: Api<ConfigMap> = Api::namespaced(remote.clone(), &e.ns.name);
    let kubeconfig = std::fs::read_to_string(e.platform.remote_kubeconfig()).unwrap();
    e.create_secret("remote-kubeconfig", json!({ "value": kubeconfig }))
        .await;
    let rev1 = e
        .publish(
            "remote",
            &[
                ("a.yaml", &cm("remote-a", "1")),
                ("b.yaml", &cm("remote-b", "1")),
            ],
        )
        .await;
    let via_secret = |name: &str| json!({"secretRef": {"name": name}});
    e.create(
        "remote",
        e.spec(
            "remote",
            json!({"wait": true, "kubeConfig": via_secret("remote-kubeconfig")}),
        ),
    )
    .await;
    let applied = e.wait_ready_at("remote", &rev1).await;
    assert!(
        message(&applied, "Healthy").starts_with("Health check passed"),
        "health was checked where the objects are: {}",
        message(&applied, "Healthy")
    );
    let a = remote_configmaps
        .get("remote-a")
        .await
        .expect("applied remotely");
    assert_eq!(
        a.metadata.labels.unwrap_or_default()["kustomize.toolkit.fluxcd.io/name"],
        "remote"
    );
    assert!(
        e.configmap("remote-a").await.is_none(),
        "nothing applied locally"
    );
    assert!(
        inventory_ids(&applied).contains(&format!("{}_remote-b__ConfigMap", e.ns.name)),
        "{:?}",
        inventory_ids(&applied)
    );

    let rev2 = e
        .publish("remote", &[("a.yaml", &cm("remote-a", "2"))])
        .await;
    e.wait_ready_at("remote", &rev2).await;
    Wait::new(&remote_configmaps, WAIT).gone("remote-b").await;
    let a = remote_configmaps.get("remote-a").await.unwrap();
    assert_eq!(data_key(&a), "2");

    // Impersonation happens in the remote cluster, where `deployer` has no rights.
    e.create(
        "remote-as-sa",
        e.spec(
            "remote",
            json!({"serviceAccountName": "deployer", "kubeConfig": via_secret("remote-kubeconfig")}),
        ),
    )
    .await;
    let denied = e
        .wait_until("remote-as-sa", "refused as the ServiceAccount", |o| {
            message(o, "Ready").contains(&format!("system:serviceaccount:{}:deployer", e.ns.name))
        })
        .await;
    assert_eq!(ready(&denied).unwrap().0, ConditionStatus::False);

    let exec = kubeconfig.replace(
        "    client-certificate-data:",
        "    exec: {apiVersion: client.authentication.k8s.io/v1, command: /bin/true}\n    client-certificate-data:",
    );
    assert_ne!(exec, kubeconfig);
    e.create_secret("exec-kubeconfig", json!({ "value.yaml": exec }))
        .await;
    for (name, secret, says) in [
        (
            "remote-exec",
            "exec-kubeconfig",
            "user.exec is allowed only when the controller runs with --insecure-kubeconfig-exec"
                .to_string(),
        ),
        (
            "remote-missing",
            "nope",
            format!("unable to read KubeConfig secret '{}/nope'", e.ns.name),
        ),
    ] {
        let spec = e.spec("remote", json!({"kubeConfig": via_secret(secret)}));
        e.refused_naming(name, spec, &says).await;
    }

    // Deleting the Kustomization prunes in the remote cluster.
    e.ks.delete("remote", &DeleteParams::default())
        .await
        .unwrap();
    Wait::new(&remote_configmaps, WAIT).gone("remote-a").await;
    let _ = remote_namespaces
        .delete(&e.ns.name, &DeleteParams::default())
        .await;
}

/// Every file below `dir`, read (what a controller left on disk).
fn files_below(dir: &std::path::Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        match entry.file_type() {
            Ok(t) if t.is_dir() => out.extend(files_below(&path)),
            Ok(t) if t.is_file() => {
                out.push((path.clone(), std::fs::read(&path).unwrap_or_default()))
            }
            _ => {}
        }
    }
    out
}

fn secret_value(secret: &Secret, key: &str) -> String {
    let data = secret.data.clone().unwrap_or_default();
    String::from_utf8(data.get(key).map(|b| b.0.clone()).unwrap_or_default()).unwrap()
}

/// `spec.decryption` with an age key: a SOPS-encrypted Secret manifest and the JSON and
/// dotenv files a secretGenerator reads, all encrypted by the real `sops` CLI, are applied
/// decrypted. A tampered file (MAC), a file for another key, a Secret without keys and an
/// encrypted Secret without `spec.decryption` each fail naming the cause; no plaintext is in
/// the controller's log, the events, the statuses or the files it leaves on disk.
#[tokio::test(flavor = "multi_thread")]
async fn sops_age_secrets_and_generator_files_are_applied_decrypted() {
    let e = env("ks-sops").await;
    let sops = support::sops::Sops::new(&e.platform);
    let key = sops.age_key();
    let stranger = sops.age_key();
    let (password, token, api_key) = (
        "pw-0f1e2d3c-plaintext",
        "tok-9a8b7c6d-plaintext",
        "api-5e4f3a2b-plaintext",
    );
    let regex = ["--encrypted-regex", "^(data|stringData)$"];
    let secret = |name: &str| {
        format!(
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: {name}\ntype: Opaque\nstringData:\n  password: {password}\n  port: \"5432\"\n"
        )
    };
    let encrypted_secret = sops.encrypt(&key.recipient, "secret.yaml", &secret("db"), &regex);
    let creds = sops.encrypt(
        &key.recipient,
        "creds.json",
        &format!(r#"{{"token": "{token}", "user": "svc"}}"#),
        &[],
    );
    let env_file = sops.encrypt(
        &key.recipient,
        "app.env",
        &format!("API_KEY={api_key}\n"),
        &[],
    );
    let kustomization = "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources: [secret.yaml]\nsecretGenerator:\n- name: generated\n  files: [creds.json]\n  envs: [app.env]\ngeneratorOptions: {disableNameSuffixHash: true}\n";
    let tampered = encrypted_secret.replace("name: db", "name: tampered");
    let foreign = sops.encrypt(
        &stranger.recipient,
        "secret.yaml",
        &secret("foreign"),
        &regex,
    );
    let rev = e
        .publish(
            "sops",
            &[
                ("app/kustomization.yaml", kustomization),
                ("app/secret.yaml", &encrypted_secret),
                ("app/creds.json", &creds),
                ("app/app.env", &env_file),
                ("tampered/secret.yaml", &tampered),
                ("foreign/secret.yaml", &foreign),
            ],
        )
        .await;
    e.create_secret("sops-keys", json!({ "identity.agekey": key.identity }))
        .await;
    e.create_secret("no-keys", json!({ "readme": "no key here" }))
        .await;
    let decrypting = |path: &str, secret: &str| json!({"path": path, "decryption": {"provider": "sops", "secretRef": {"name": secret}}});
    e.create("sops", e.spec("sops", decrypting("./app", "sops-keys")))
        .await;
    e.wait_ready_at("sops", &rev).await;
    let secrets: Api<Secret> = Api::namespaced(e.client.clone(), &e.ns.name);
    let db = secrets.get("db").await.unwrap();
    assert_eq!(secret_value(&db, "password"), password);
    assert_eq!(secret_value(&db, "port"), "5432");
    let generated = secrets.get("generated").await.unwrap();
    let creds_json: Value = serde_json::from_str(&secret_value(&generated, "creds.json")).unwrap();
    assert_eq!(creds_json, json!({"token": token, "user": "svc"}));
    assert_eq!(secret_value(&generated, "API_KEY"), api_key);

    for (name, spec, says) in [
        (
            "tampered",
            decrypting("./tampered", "sops-keys"),
            "MAC mismatch".to_string(),
        ),
        (
            "foreign",
            decrypting("./foreign", "sops-keys"),
            format!(
                "cannot get sops data key: none of the file's keys can be opened with Secret '{}/sops-keys': age {}",
                e.ns.name, stranger.recipient
            ),
        ),
        (
            "no-keys",
            decrypting("./app", "no-keys"),
            "no age identity in the Secret".to_string(),
        ),
    ] {
        e.create(name, e.spec("sops", spec)).await;
        let failed = e.wait_failing(name, "BuildFailed").await;
        let msg = message(&failed, "Ready");
        assert!(
            msg.starts_with("error decrypting sources: ") && msg.contains(&says),
            "{msg}"
        );
    }
    let foreign = e.ks.get("foreign").await.unwrap();
    assert!(
        message(&foreign, "Ready").contains("foreign/secret.yaml"),
        "names the file"
    );
    e.create("undecrypted", e.spec("sops", json!({"path": "./app"})))
        .await;
    let refused = e.wait_failing("undecrypted", "ReconciliationFailed").await;
    assert_eq!(
        message(&refused, "Ready"),
        format!(
            "Secret/{}/db is SOPS encrypted, configuring decryption is required for this secret to be reconciled",
            e.ns.name
        )
    );

    // No plaintext outside the applied Secrets.
    let events: Api<k8s_openapi::api::core::v1::Event> =
        Api::namespaced(e.client.clone(), &e.ns.name);
    let events =
        serde_json::to_string(&events.list(&Default::default()).await.unwrap().items).unwrap();
    let statuses =
        serde_json::to_string(&e.ks.list(&Default::default()).await.unwrap().items).unwrap();
    let log = e.apply.log_text();
    for plaintext in [password, token, api_key] {
        assert!(!log.contains(plaintext), "plaintext in the controller log");
        assert!(!events.contains(plaintext), "plaintext in events");
        assert!(!statuses.contains(plaintext), "plaintext in statuses");
    }
    // A build decrypts into its private directory, which goes when its pass ends; a pass may
    // be running (a source's status write enqueues every Kustomization on it), so what is
    // asserted is that none is left behind once the passes are over.
    let plaintext_left = || {
        files_below(&e.apply.tmp).into_iter().find(|(_, content)| {
            let text = String::from_utf8_lossy(content);
            [password, token, api_key].iter().any(|p| text.contains(p))
        })
    };
    support::wait::poll(
        "no plaintext left on disk",
        Duration::from_secs(30),
        async || plaintext_left().is_none().then_some(()),
    )
    .await;
}

/// `--sops-age-secret`: the controller's own age keys (a Secret in its namespace) decrypt for
/// Kustomizations whose `spec.decryption` names no Secret.
#[tokio::test(flavor = "multi_thread")]
async fn the_global_age_secret_decrypts_without_a_secret_ref() {
    let e = env_with("ks-sops-global", &["--sops-age-secret=global-age"]).await;
    let sops = support::sops::Sops::new(&e.platform);
    let key = sops.age_key();
    let plain = "apiVersion: v1\nkind: Secret\nmetadata:\n  name: global\nstringData:\n  token: global-plaintext\n";
    let encrypted = sops.encrypt(&key.recipient, "secret.yaml", plain, &[]);
    let rev = e.publish("global", &[("secret.yaml", &encrypted)]).await;
    e.create_secret("global-age", json!({ "global.agekey": key.identity }))
        .await;
    e.create(
        "global",
        e.spec("global", json!({"decryption": {"provider": "sops"}})),
    )
    .await;
    e.wait_ready_at("global", &rev).await;
    let secrets: Api<Secret> = Api::namespaced(e.client.clone(), &e.ns.name);
    assert_eq!(
        secret_value(&secrets.get("global").await.unwrap(), "token"),
        "global-plaintext"
    );
}

/// An OpenPGP key (gpg's, exported armored into a `*.asc` entry) decrypts what `sops --pgp`
/// encrypted.
#[tokio::test(flavor = "multi_thread")]
async fn sops_openpgp_keys_decrypt_on_the_platform() {
    let e = env("ks-sops-pgp").await;
    let sops = support::sops::Sops::new(&e.platform);
    let key = sops.pgp_key();
    let plain = "apiVersion: v1\nkind: Secret\nmetadata:\n  name: pgp\nstringData:\n  token: pgp-plaintext\n";
    let encrypted = sops.encrypt_to(&["--pgp", &key.fingerprint], "secret.yaml", plain, &[]);
    let rev = e.publish("pgp", &[("secret.yaml", &encrypted)]).await;
    e.create_secret("pgp-keys", json!({ "sops.asc": key.armored_secret }))
        .await;
    e.create(
        "pgp",
        e.spec(
            "pgp",
            json!({"decryption": {"provider": "sops", "secretRef": {"name": "pgp-keys"}}}),
        ),
    )
    .await;
    e.wait_ready_at("pgp", &rev).await;
    let secrets: Api<Secret> = Api::namespaced(e.client.clone(), &e.ns.name);
    assert_eq!(
        secret_value(&secrets.get("pgp").await.unwrap(), "token"),
        "pgp-plaintext"
    );
}

/// OpenBao/Vault Kubernetes auth (Flux 2.10) against the platform's real Vault, whose
/// `kubernetes` auth method reviews ServiceAccount tokens at the platform's API server: with
/// `--sops-vault-configmap`, a Kustomization without a ServiceAccount logs in as the
/// controller's own ServiceAccount and one with `decryption.serviceAccountName` as that one
/// (roles `{namespace}_{name}`); a ServiceAccount's `transit-engine` annotations name their own
/// login path and role. A Vault address the ConfigMap does not list (the same Vault under
/// another name) gets no token, a ServiceAccount without a Vault role is refused by Vault, and
/// a ServiceAccount asking for the API server's own audience gets no token for it.
#[tokio::test(flavor = "multi_thread")]
async fn sops_vault_kubernetes_auth_by_the_operators_configmap_and_by_annotations() {
    let platform = support::platform();
    let address = platform.env["DRIFTLESS_VAULT_ADDR"].clone();
    let root = platform.env["DRIFTLESS_VAULT_TOKEN"].clone();
    let own_token = tempfile::NamedTempFile::new().unwrap();
    let own_token_path = own_token.path().to_str().unwrap().to_string();
    let e = env_with_vars(
        "ks-sops-vault-k8s",
        &["--sops-vault-configmap=sops-vault"],
        &[("DRIFTLESS_SERVICE_ACCOUNT_TOKEN_FILE", &own_token_path)],
    )
    .await;
    let ns = e.ns.name.clone();
    let accounts: Api<k8s_openapi::api::core::v1::ServiceAccount> =
        Api::namespaced(e.client.clone(), &ns);
    let mount = format!("k8s-{ns}");
    for (name, annotations) in [
        ("vault-reviewer", json!({})),
        ("apply-controller", json!({})),
        ("decryptor", json!({})),
        ("stranger", json!({})),
        (
            "annotated",
            json!({
                "transit-engine.auth.fluxcd.io/login-path": format!("auth/{mount}/login"),
                "transit-engine.auth.fluxcd.io/role": "annotated-role",
            }),
        ),
        (
            "no-role",
            json!({"transit-engine.auth.fluxcd.io/login-path": format!("auth/{mount}/login")}),
        ),
        (
            "local-audience",
            json!({
                "transit-engine.auth.fluxcd.io/login-path": format!("auth/{mount}/login"),
                "transit-engine.auth.fluxcd.io/role": "annotated-role",
                "credential.auth.fluxcd.io/audiences": e.platform.env["DRIFTLESS_APISERVER"],
            }),
        ),
    ] {
        let sa =
            serde_json::from_value(json!({"metadata": {"name": name, "annotations": annotations}}))
                .unwrap();
        accounts.create(&PostParams::default(), &sa).await.unwrap();
    }
    let token_of = |name: &'static str| {
        let accounts = accounts.clone();
        async move {
            let issued: k8s_openapi::api::authentication::v1::TokenRequest = accounts
                .create_token_request(
                    name,
                    &PostParams::default(),
                    &serde_json::from_value(json!({"spec": {"expirationSeconds": 3600}})).unwrap(),
                )
                .await
                .unwrap();
            issued.status.unwrap().token.unwrap()
        }
    };
    // The controller's "own" ServiceAccount: the one its token file names, as in a pod.
    std::fs::write(&own_token_path, token_of("apply-controller").await).unwrap();
    // Vault reviews login tokens (whose audience is Vault) with a reviewer token of its own.
    let reviewers = format!("vault-review-{ns}");
    let bindings: Api<k8s_openapi::api::rbac::v1::ClusterRoleBinding> = Api::all(e.client.clone());
    let binding = serde_json::from_value(json!({
        "metadata": {"name": reviewers},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "system:auth-delegator"},
        "subjects": [{"kind": "ServiceAccount", "namespace": ns, "name": "vault-reviewer"}],
    }))
    .unwrap();
    bindings
        .create(&PostParams::default(), &binding)
        .await
        .unwrap();
    let reviewer = token_of("vault-reviewer").await;
    configure_vault_kubernetes_auth(&e, &address, &root, &mount, &reviewer).await;
    let configmaps: Api<ConfigMap> = Api::namespaced(e.client.clone(), &ns);
    let config = format!("instances:\n  - address: {address}\n    loginPath: auth/{mount}/login\n");
    let configmap = serde_json::from_value(
        json!({"metadata": {"name": "sops-vault"}, "data": {"config.yaml": config}}),
    )
    .unwrap();
    configmaps
        .create(&PostParams::default(), &configmap)
        .await
        .unwrap();

    let sops = support::sops::Sops::new(&e.platform);
    let encrypt = |vault: &str, name: &str| {
        sops.encrypt_env(
            &["--hc-vault-transit", &format!("{vault}/v1/transit/keys/sops")],
            &[("VAULT_TOKEN", root.as_str())],
            &format!("{name}.yaml"),
            &format!(
                "apiVersion: v1\nkind: Secret\nmetadata:\n  name: {name}\nstringData:\n  token: vault-k8s-plaintext\n"
            ),
            &[],
        )
    };
    let unlisted_address = address.replace("127.0.0.1", "localhost");
    let rev = e
        .publish(
            "vault",
            &[
                (
                    "controller/secret.yaml",
                    &encrypt(&address, "by-controller"),
                ),
                ("object/secret.yaml", &encrypt(&address, "by-object")),
                ("annotated/secret.yaml", &encrypt(&address, "by-annotation")),
                (
                    "unlisted/secret.yaml",
                    &encrypt(&unlisted_address, "unlisted"),
                ),
            ],
        )
        .await;
    let decrypting = |path: &str, sa: Option<&str>| {
        let mut decryption = json!({"provider": "sops"});
        if let Some(sa) = sa {
            decryption["serviceAccountName"] = json!(sa);
        }
        e.spec("vault", json!({"path": path, "decryption": decryption}))
    };
    for (name, path, sa) in [
        ("controller", "./controller", None),
        ("object", "./object", Some("decryptor")),
        ("annotated", "./annotated", Some("annotated")),
    ] {
        e.create(name, decrypting(path, sa)).await;
    }
    for name in ["controller", "object", "annotated"] {
        e.wait_ready_at(name, &rev).await;
    }
    let secrets: Api<Secret> = Api::namespaced(e.client.clone(), &ns);
    for name in ["by-controller", "by-object", "by-annotation"] {
        assert_eq!(
            secret_value(&secrets.get(name).await.unwrap(), "token"),
            "vault-k8s-plaintext"
        );
    }
    e.failing_naming(
        "unlisted",
        decrypting("./unlisted", None),
        "BuildFailed",
        &format!(
            "no Vault login path configured for address '{unlisted_address}' in ConfigMap '{ns}/sops-vault'"
        ),
    )
    .await;
    e.failing_naming(
        "stranger",
        decrypting("./object", Some("stranger")),
        "BuildFailed",
        &format!("failed to authenticate with Vault '{address}' at login path 'auth/{mount}/login' as role '{ns}_stranger'"),
    )
    .await;
    e.failing_naming(
        "no-role",
        decrypting("./annotated", Some("no-role")),
        "BuildFailed",
        "the 'transit-engine.auth.fluxcd.io/role' annotation is required with 'transit-engine.auth.fluxcd.io/login-path'",
    )
    .await;
    e.failing_naming(
        "local-audience",
        decrypting("./annotated", Some("local-audience")),
        "BuildFailed",
        "is not allowed as it is intended for the local kubernetes cluster",
    )
    .await;
    assert!(!e.apply.log_text().contains("vault-k8s-plaintext"));
    bindings
        .delete(&reviewers, &DeleteParams::default())
        .await
        .unwrap();
}

/// Vault's `kubernetes` auth method at `auth/<mount>`, reviewing tokens (with `reviewer`'s
/// token) at the platform's API server for the audience of Vault's own address; a policy that may decrypt with the transit
/// key `sops`, and roles for the ServiceAccounts of `sops_vault_kubernetes_auth_…`.
async fn configure_vault_kubernetes_auth(
    e: &Env,
    address: &str,
    root: &str,
    mount: &str,
    reviewer: &str,
) {
    let ns = &e.ns.name;
    let ca = std::fs::read_to_string(
        std::path::Path::new(&e.platform.env["DRIFTLESS_PLATFORM_DIR"]).join("pki/ca.crt"),
    )
    .unwrap();
    let policy = format!("sops-{ns}");
    let role = |names: &[&str]| {
        json!({
            "bound_service_account_names": names,
            "bound_service_account_namespaces": [ns],
            "audience": address,
            "token_policies": [policy],
            "token_ttl": "10m",
        })
    };
    let http = reqwest::Client::new();
    for (path, body) in [
        (format!("sys/auth/{mount}"), json!({"type": "kubernetes"})),
        (
            format!("auth/{mount}/config"),
            json!({
                "kubernetes_host": e.platform.env["DRIFTLESS_APISERVER"],
                "kubernetes_ca_cert": ca,
                "disable_local_ca_jwt": true,
                "token_reviewer_jwt": reviewer,
            }),
        ),
        (
            format!("sys/policies/acl/{policy}"),
            json!({"policy": "path \"transit/decrypt/sops\" { capabilities = [\"update\"] }"}),
        ),
        (
            format!("auth/{mount}/role/{ns}_apply-controller"),
            role(&["apply-controller"]),
        ),
        (
            format!("auth/{mount}/role/{ns}_decryptor"),
            role(&["decryptor"]),
        ),
        (
            format!("auth/{mount}/role/annotated-role"),
            role(&["annotated"]),
        ),
    ] {
        let answer = http
            .post(format!("{address}/v1/{path}"))
            .header("X-Vault-Token", root)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = answer.status();
        assert!(
            status.is_success(),
            "{path}: {status} {}",
            answer.text().await.unwrap_or_default()
        );
    }
}

/// A KMS key in the platform's moto, as its API creates one: its ARN.
async fn moto_kms_key(moto: &str) -> String {
    let answer: Value = reqwest::Client::new()
        .post(format!("{moto}/"))
        .header("X-Amz-Target", "TrentService.CreateKey")
        .header("Content-Type", "application/x-amz-json-1.1")
        .header(
            "Authorization",
            "AWS4-HMAC-SHA256 Credential=AKIATESTKMS/20260101/us-east-1/kms/aws4_request, SignedHeaders=host, Signature=0",
        )
        .body("{}")
        .send()
        .await
        .expect("moto KMS CreateKey")
        .json()
        .await
        .expect("a KMS answer");
    answer["KeyMetadata"]["Arn"].as_str().unwrap().to_string()
}

/// AWS KMS keys (moto's KMS): the keys of the Secret's `sops.aws-kms` entry decrypt, and so
/// does the controller's own AWS identity when the Secret has none; a key with a `role`
/// (`--kms <arn>+<role>`) is opened as that role, assumed at STS (moto's) with those keys.
#[tokio::test(flavor = "multi_thread")]
async fn sops_aws_kms_keys_decrypt_with_secret_keys_and_the_controller_identity() {
    let platform = support::platform();
    let moto = platform.env["DRIFTLESS_MOTO"].clone();
    let e = env_with_vars(
        "ks-sops-kms",
        &[],
        &[
            ("AWS_ENDPOINT_URL_KMS", &moto),
            ("AWS_ENDPOINT_URL_STS", &moto),
            ("AWS_ACCESS_KEY_ID", "AKIACONTROLLER"),
            ("AWS_SECRET_ACCESS_KEY", "controller-secret"),
        ],
    )
    .await;
    let arn = moto_kms_key(&moto).await;
    let sops = support::sops::Sops::new(&e.platform);
    let secret = |name: &str| {
        format!(
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: {name}\nstringData:\n  token: kms-plaintext\n"
        )
    };
    let aws = [
        ("AWS_ENDPOINT_URL_KMS", moto.as_str()),
        ("AWS_ENDPOINT_URL_STS", moto.as_str()),
        ("AWS_ACCESS_KEY_ID", "AKIACI"),
        ("AWS_SECRET_ACCESS_KEY", "ci-secret"),
        ("AWS_REGION", "us-east-1"),
    ];
    let role = "arn:aws:iam::123456789012:role/sops-decrypt";
    let with_role = sops.encrypt_env(
        &["--kms", &format!("{arn}+{role}")],
        &aws,
        "c.yaml",
        &secret("by-role"),
        &[],
    );
    assert!(with_role.contains(role), "{with_role}");
    let with_keys = sops.encrypt_env(
        &["--kms", &arn],
        &aws,
        "a.yaml",
        &secret("by-secret-keys"),
        &[],
    );
    let by_controller = sops.encrypt_env(
        &["--kms", &arn],
        &aws,
        "b.yaml",
        &secret("by-controller"),
        &[],
    );
    assert!(with_keys.contains(&arn));
    let rev = e
        .publish(
            "kms",
            &[
                ("keys/secret.yaml", &with_keys),
                ("controller/secret.yaml", &by_controller),
                ("role/secret.yaml", &with_role),
            ],
        )
        .await;
    e.create_secret(
        "kms-keys",
        json!({"sops.aws-kms": "aws_access_key_id: AKIATENANT\naws_secret_access_key: tenant-secret\n"}),
    )
    .await;
    e.create_secret("no-aws-keys", json!({"readme": "none"}))
        .await;
    for (name, path, keys) in [
        ("keys", "./keys", "kms-keys"),
        ("controller", "./controller", "no-aws-keys"),
        ("role", "./role", "kms-keys"),
    ] {
        e.create(
            name,
            e.spec("kms", json!({"path": path, "decryption": {"provider": "sops", "secretRef": {"name": keys}}})),
        )
        .await;
        e.wait_ready_at(name, &rev).await;
    }
    let secrets: Api<Secret> = Api::namespaced(e.client.clone(), &e.ns.name);
    for name in ["by-secret-keys", "by-controller", "by-role"] {
        assert_eq!(
            secret_value(&secrets.get(name).await.unwrap(), "token"),
            "kms-plaintext"
        );
    }
}

/// `spec.decryption.serviceAccountName` (else `--default-decryption-service-account`): KMS is
/// reached as that ServiceAccount's AWS role (its
/// token exchanged at STS — moto's), never with the controller's identity (which has no AWS
/// keys here); a ServiceAccount without a role fails naming the annotation.
#[tokio::test(flavor = "multi_thread")]
async fn sops_aws_kms_by_the_object_s_service_account() {
    let platform = support::platform();
    let moto = platform.env["DRIFTLESS_MOTO"].clone();
    let e = env_with_vars(
        "ks-sops-kms-sa",
        &["--default-decryption-service-account=decryptor"],
        &[
            ("AWS_ENDPOINT_URL_KMS", &moto),
            ("AWS_ENDPOINT_URL_STS", &moto),
        ],
    )
    .await;
    let arn = moto_kms_key(&moto).await;
    let sops = support::sops::Sops::new(&e.platform);
    let plain = "apiVersion: v1\nkind: Secret\nmetadata:\n  name: by-sa\nstringData:\n  token: sa-plaintext\n";
    let aws = [
        ("AWS_ENDPOINT_URL_KMS", moto.as_str()),
        ("AWS_ACCESS_KEY_ID", "AKIACI"),
        ("AWS_SECRET_ACCESS_KEY", "ci-secret"),
        ("AWS_REGION", "us-east-1"),
    ];
    let encrypted = sops.encrypt_env(&["--kms", &arn], &aws, "secret.yaml", plain, &[]);
    let rev = e.publish("kms-sa", &[("secret.yaml", &encrypted)]).await;
    let accounts: Api<k8s_openapi::api::core::v1::ServiceAccount> =
        Api::namespaced(e.client.clone(), &e.ns.name);
    for (name, annotations) in [
        (
            "decryptor",
            json!({"eks.amazonaws.com/role-arn": "arn:aws:iam::123456789012:role/sops"}),
        ),
        ("no-role", json!({})),
    ] {
        let sa =
            serde_json::from_value(json!({"metadata": {"name": name, "annotations": annotations}}))
                .unwrap();
        accounts.create(&PostParams::default(), &sa).await.unwrap();
    }
    let by = |sa: &str| json!({"decryption": {"provider": "sops", "serviceAccountName": sa}});
    e.create("by-sa", e.spec("kms-sa", by("decryptor"))).await;
    e.wait_ready_at("by-sa", &rev).await;
    let secrets: Api<Secret> = Api::namespaced(e.client.clone(), &e.ns.name);
    assert_eq!(
        secret_value(&secrets.get("by-sa").await.unwrap(), "token"),
        "sa-plaintext"
    );
    // Without a ServiceAccount of its own, the default one's identity is used.
    e.create(
        "by-default",
        e.spec("kms-sa", json!({"decryption": {"provider": "sops"}})),
    )
    .await;
    e.wait_ready_at("by-default", &rev).await;
    e.create("no-role", e.spec("kms-sa", by("no-role"))).await;
    let failed = e.wait_failing("no-role", "BuildFailed").await;
    let msg = message(&failed, "Ready");
    assert!(
        msg.contains("eks.amazonaws.com/role-arn") && msg.contains(&format!("kms {arn}")),
        "{msg}"
    );
}

/// Without `--kustomize-path` or `KUSTOMIZE_PATH`, the `kustomize` on `PATH` builds an overlay
/// (Flux's image puts it there; before, such a Kustomization failed with `BuildFailed`).
#[tokio::test(flavor = "multi_thread")]
async fn kustomize_is_found_on_path() {
    let e = env_starting("ks-path", ApplyController::start_with_kustomize_on_path).await;
    let rev = e
        .publish(
            "overlay",
            &[
                (
                    "kustomization.yaml",
                    "resources: [cm.yaml]\nnamePrefix: on-path-\n",
                ),
                ("cm.yaml", &cm("cm", "1")),
            ],
        )
        .await;
    e.create("overlay", e.spec("overlay", json!({}))).await;
    e.wait_ready_at("overlay", &rev).await;
    assert!(
        e.configmap("on-path-cm").await.is_some(),
        "the overlay's prefix was applied"
    );
    assert!(e.apply.log_text().contains("using kustomize found on PATH"));
}
