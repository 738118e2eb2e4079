//! Bucket end to end: real object stores (SeaweedFS and rclone for S3, fake-gcs-server,
//! Azurite), the real API server and the real controller binary. Objects are written and
//! listed with the providers' own SDKs (`hack/objectstore`); the controller reaches each
//! server through a counting proxy so downloads can be counted.

mod support;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::{Api, Client};

use driftless::api::{Bucket, ConditionStatus};
use support::controller::SourceController;
use support::listener::{Answer, Listener, Request};
use support::objectstore::{CountingProxy, ObjectStore, Provider};
use support::source::{Sources, artifact, condition, files, revision, untar};

struct Env {
    platform: support::Platform,
    client: Client,
    ns: support::TestNamespace,
    controller: SourceController,
}

async fn env(prefix: &str, controller_args: &[&str]) -> Env {
    env_with(prefix, controller_args, &[]).await
}

/// An environment whose controller runs with `controller_env` (its ambient cloud identity).
async fn env_with(prefix: &str, controller_args: &[&str], controller_env: &[(&str, &str)]) -> Env {
    let platform = support::platform();
    let client = platform.client().await;
    support::install_crds(&client).await;
    let ns = support::TestNamespace::new(&platform, &client, prefix).await;
    let controller =
        SourceController::start_with_env(&platform, &ns.name, controller_args, controller_env);
    Env {
        platform,
        client,
        ns,
        controller,
    }
}

impl Env {
    fn buckets(&self) -> Sources<Bucket> {
        Sources::new(&self.client, &self.ns.name, &self.controller)
    }

    fn store(&self, provider: Provider) -> ObjectStore {
        ObjectStore::new(&self.platform, provider)
    }

    /// A bucket name of this test's own (names are global on a server).
    fn bucket_name(&self, what: &str) -> String {
        format!("{what}-{}", self.ns.name).to_lowercase()
    }

    async fn secret(&self, name: &str, data: serde_json::Value) {
        let secret: Secret = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": name, "namespace": self.ns.name},
            "stringData": data,
        }))
        .unwrap();
        Api::<Secret>::namespaced(self.client.clone(), &self.ns.name)
            .patch(
                name,
                &PatchParams::apply("driftless-tests").force(),
                &Patch::Apply(&secret),
            )
            .await
            .unwrap();
    }

    /// A bucket on SeaweedFS holding `objects`, and Bucket `name` following it.
    async fn seaweed_bucket(
        &self,
        what: &str,
        name: &str,
        objects: &[(&str, &[u8])],
    ) -> (ObjectStore, String) {
        let store = self.store(Provider::S3);
        let bucket = self.bucket_name(what);
        store.mkbucket(&bucket);
        for (key, content) in objects {
            store.put(&bucket, key, content);
        }
        let address = Provider::S3.address(&self.platform);
        let spec = self
            .spec(Provider::S3, &address, &bucket, serde_json::json!({}))
            .await;
        self.buckets().create(name, spec).await;
        (store, bucket)
    }

    /// A Bucket spec for `provider` at `address`, with its credentials Secret when it needs
    /// one, and `extra` fields merged in.
    async fn spec(
        &self,
        provider: Provider,
        address: &str,
        bucket: &str,
        extra: serde_json::Value,
    ) -> serde_json::Value {
        let mut spec = serde_json::json!({
            "provider": provider.spec_provider(),
            "bucketName": bucket,
            "endpoint": provider.endpoint(&self.platform, address),
            "insecure": true,
            "interval": "10m",
        });
        if let Some(data) = provider.secret(&self.platform) {
            let name = format!("{}-creds", provider.tool_name());
            self.secret(&name, data).await;
            spec["secretRef"] = serde_json::json!({"name": name});
        }
        spec.as_object_mut()
            .unwrap()
            .extend(extra.as_object().cloned().unwrap_or_default());
        spec
    }
}

/// The same story on every provider: first artifact with Flux's revision; one object
/// changed → exactly one download; nothing changed → no download; one deleted → no
/// download and the file gone.
async fn incremental_sync_on(provider: Provider) {
    let e = env(&format!("bucket-{}", provider.tool_name()), &[]).await;
    let store = e.store(provider);
    let bucket = e.bucket_name("sync");
    store.mkbucket(&bucket);
    store.put(&bucket, "app/deploy.yaml", b"kind: Deployment\n");
    store.put(&bucket, "app/svc.yaml", b"kind: Service\n");
    store.put(&bucket, "base/ns.yaml", b"kind: Namespace\n");
    let proxy = CountingProxy::start(&provider.address(&e.platform)).await;
    let buckets = e.buckets();
    buckets
        .create(
            "sync",
            e.spec(provider, &proxy.address, &bucket, serde_json::json!({}))
                .await,
        )
        .await;

    let obj = buckets.wait_ready("sync").await;
    assert_eq!(
        revision(&obj),
        store.flux_revision(&bucket, None, |_| true),
        "revision as Flux computes it"
    );
    let a = artifact(&obj).unwrap();
    let hex = revision(&obj).trim_start_matches("sha256:").to_string();
    assert_eq!(a.path, format!("bucket/{}/sync/{hex}.tar.gz", e.ns.name));
    assert_eq!(
        untar(&buckets.download(&obj)),
        files(&[
            ("app/deploy.yaml", "kind: Deployment\n"),
            ("app/svc.yaml", "kind: Service\n"),
            ("base/ns.yaml", "kind: Namespace\n")
        ])
    );
    let ready = condition(&obj, "Ready").unwrap();
    assert_eq!(
        ready.message,
        format!("stored artifact: revision '{}'", revision(&obj))
    );
    let events = buckets.events("sync").await;
    assert!(
        events
            .iter()
            .any(|ev| ev.reason.as_deref() == Some("NewArtifact")
                && ev.message.as_deref()
                    == Some(&format!(
                        "stored artifact with 3 fetched files from '{bucket}' bucket"
                    ))),
        "NewArtifact event: {events:?}"
    );

    proxy.clear();
    store.put(&bucket, "app/svc.yaml", b"kind: Service\nspec: {}\n");
    let first = revision(&obj);
    buckets.request_reconcile("sync").await;
    let obj = buckets
        .wait_until("sync", "at the new revision", |o| revision(o) != first)
        .await;
    assert_eq!(revision(&obj), store.flux_revision(&bucket, None, |_| true));
    let downloads = object_gets(&proxy, &["app/", "base/"]);
    assert_eq!(
        downloads.len(),
        1,
        "one changed object, one download: {downloads:?}"
    );
    assert!(downloads[0].contains("svc.yaml"), "{downloads:?}");
    assert_eq!(
        untar(&buckets.download(&obj))["app/svc.yaml"],
        "kind: Service\nspec: {}\n"
    );

    proxy.clear();
    let obj = buckets.request_reconcile("sync").await;
    assert_eq!(ready_of(&obj), ConditionStatus::True);
    assert_eq!(
        object_gets(&proxy, &["app/", "base/"]),
        Vec::<String>::new(),
        "nothing changed, nothing downloaded"
    );
    assert!(
        !proxy.requests().is_empty(),
        "the reconcile did list the bucket through the proxy"
    );

    proxy.clear();
    store.delete(&bucket, "base/ns.yaml");
    let second = revision(&obj);
    buckets.request_reconcile("sync").await;
    let obj = buckets
        .wait_until("sync", "at the revision without base/ns.yaml", |o| {
            revision(o) != second
        })
        .await;
    assert_eq!(revision(&obj), store.flux_revision(&bucket, None, |_| true));
    assert_eq!(
        object_gets(&proxy, &["app/", "base/"]),
        Vec::<String>::new(),
        "a deletion downloads nothing"
    );
    let content = untar(&buckets.download(&obj));
    assert!(!content.contains_key("base/ns.yaml"), "{content:?}");
    assert_eq!(content.len(), 2);
}

/// Object downloads among the proxied requests: GETs naming one of the key prefixes (for
/// GCS the key is one escaped path segment, `app%2F...`).
fn object_gets(proxy: &CountingProxy, prefixes: &[&str]) -> Vec<String> {
    proxy
        .requests()
        .into_iter()
        .filter(|r| r.starts_with("GET "))
        .filter(|r| {
            let path = r.split_whitespace().nth(1).unwrap_or_default();
            let path = path
                .split('?')
                .next()
                .unwrap_or_default()
                .replace("%2F", "/");
            prefixes.iter().any(|p| path.contains(&format!("/{p}")))
        })
        .collect()
}

fn ready_of(o: &Bucket) -> ConditionStatus {
    condition(o, "Ready")
        .map(|c| c.status)
        .unwrap_or(ConditionStatus::Unknown)
}

#[tokio::test(flavor = "multi_thread")]
async fn seaweedfs_s3_incremental_sync_with_flux_revisions() {
    incremental_sync_on(Provider::S3).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn rclone_s3_incremental_sync_with_unquoted_etags() {
    incremental_sync_on(Provider::S3b).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn gcs_incremental_sync_with_flux_revisions() {
    incremental_sync_on(Provider::Gcs).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn azure_incremental_sync_with_flux_revisions() {
    incremental_sync_on(Provider::Azure).await;
}

/// `prefix`, the root `.sourceignore` and `spec.ignore` decide which keys enter the revision
/// and the artifact; a missing bucket is reported as Flux reports it.
async fn selection_and_missing_bucket_on(provider: Provider) {
    let e = env(&format!("bucket-select-{}", provider.tool_name()), &[]).await;
    let store = e.store(provider);
    let bucket = e.bucket_name("select");
    store.mkbucket(&bucket);
    store.put(&bucket, ".sourceignore", b"*.md\n");
    store.put(&bucket, "apps/a.yaml", b"a\n");
    store.put(&bucket, "apps/README.md", b"docs\n");
    store.put(&bucket, "apps/secret/key.yaml", b"k\n");
    store.put(&bucket, "other/b.yaml", b"b\n");
    let address = provider.address(&e.platform);
    let buckets = e.buckets();
    let extra = serde_json::json!({"prefix": "apps/", "ignore": "secret/\n"});
    buckets
        .create("select", e.spec(provider, &address, &bucket, extra).await)
        .await;
    let obj = buckets.wait_ready("select").await;
    let keep = |k: &str| !k.ends_with(".md") && !k.contains("/secret/");
    assert_eq!(
        revision(&obj),
        store.flux_revision(&bucket, Some("apps/"), keep)
    );
    // Keys keep their full path; the root .sourceignore rides along as Flux places it.
    assert_eq!(
        untar(&buckets.download(&obj)),
        files(&[(".sourceignore", "*.md\n"), ("apps/a.yaml", "a\n")])
    );
    assert_eq!(
        obj.status.as_ref().unwrap().observed_ignore.as_deref(),
        Some("secret/\n")
    );

    // Dropping the ignore rule brings the key in.
    buckets
        .patch_spec("select", serde_json::json!({"ignore": null}))
        .await;
    let first = revision(&obj);
    let obj = buckets
        .wait_until("select", "at the revision with secret/", |o| {
            revision(o) != first
        })
        .await;
    assert_eq!(
        revision(&obj),
        store.flux_revision(&bucket, Some("apps/"), |k| !k.ends_with(".md"))
    );
    assert!(untar(&buckets.download(&obj)).contains_key("apps/secret/key.yaml"));

    let missing = format!("missing-{}", e.ns.name);
    buckets
        .create(
            "missing",
            e.spec(provider, &address, &missing, serde_json::json!({}))
                .await,
        )
        .await;
    let obj = buckets
        .wait_failing("missing", "BucketOperationFailed")
        .await;
    assert_eq!(
        condition(&obj, "FetchFailed").unwrap().message,
        format!("bucket '{missing}' not found")
    );
    assert_eq!(
        condition(&obj, "Reconciling").unwrap().reason,
        "ProgressingWithRetry"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn seaweedfs_prefix_ignore_and_missing_bucket() {
    selection_and_missing_bucket_on(Provider::S3).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn rclone_prefix_ignore_and_missing_bucket() {
    selection_and_missing_bucket_on(Provider::S3b).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn gcs_prefix_ignore_and_missing_bucket() {
    selection_and_missing_bucket_on(Provider::Gcs).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn azure_prefix_ignore_and_missing_bucket() {
    selection_and_missing_bucket_on(Provider::Azure).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_credentials_and_secrets_are_clear_and_keep_the_artifact() {
    let e = env("bucket-fail", &[]).await;
    let store = e.store(Provider::S3);
    let bucket = e.bucket_name("fail");
    store.mkbucket(&bucket);
    store.put(&bucket, "a.yaml", b"a\n");
    let address = Provider::S3.address(&e.platform);
    let buckets = e.buckets();
    buckets
        .create(
            "fail",
            e.spec(Provider::S3, &address, &bucket, serde_json::json!({}))
                .await,
        )
        .await;
    let good = buckets.wait_ready("fail").await;

    e.secret("s3-creds", serde_json::json!({"accesskey": e.platform.env["DRIFTLESS_S3_ACCESS_KEY"], "secretkey": "wrong"})).await;
    buckets.request_reconcile("fail").await;
    let obj = buckets.wait_failing("fail", "BucketOperationFailed").await;
    let fetch = condition(&obj, "FetchFailed").unwrap();
    assert!(
        fetch.message.starts_with(&format!(
            "failed to confirm existence of '{bucket}' bucket: "
        )),
        "{}",
        fetch.message
    );
    assert!(
        fetch.message.contains("SignatureDoesNotMatch") || fetch.message.contains("AccessDenied"),
        "{}",
        fetch.message
    );
    assert_eq!(
        artifact(&obj),
        artifact(&good),
        "the last artifact stays recorded"
    );
    assert_eq!(
        untar(&buckets.download(&obj)),
        files(&[("a.yaml", "a\n")]),
        "and served"
    );
    let events = buckets.events("fail").await;
    assert!(
        events
            .iter()
            .any(|ev| ev.type_.as_deref() == Some("Warning")
                && ev.reason.as_deref() == Some("BucketOperationFailed")),
        "{events:?}"
    );

    let mut spec = e
        .spec(Provider::S3, &address, &bucket, serde_json::json!({}))
        .await;
    spec["secretRef"] = serde_json::json!({"name": "absent"});
    buckets.create("nosecret", spec).await;
    let obj = buckets
        .wait_failing("nosecret", "AuthenticationFailed")
        .await;
    let message = &condition(&obj, "FetchFailed").unwrap().message;
    assert_eq!(
        message,
        &format!(
            "failed to get secret '{}/absent': secrets \"absent\" not found",
            e.ns.name
        )
    );

    e.secret("partial", serde_json::json!({"accesskey": "x"}))
        .await;
    let mut spec = e
        .spec(Provider::S3, &address, &bucket, serde_json::json!({}))
        .await;
    spec["secretRef"] = serde_json::json!({"name": "partial"});
    buckets.create("partial", spec).await;
    let obj = buckets
        .wait_failing("partial", "AuthenticationFailed")
        .await;
    assert_eq!(
        condition(&obj, "FetchFailed").unwrap().message,
        "invalid 'partial' secret data: required fields 'accesskey' and 'secretkey'"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_azure_key_is_an_authorization_failure() {
    let e = env("bucket-azkey", &[]).await;
    let store = e.store(Provider::Azure);
    let bucket = e.bucket_name("azkey");
    store.mkbucket(&bucket);
    store.put(&bucket, "a.yaml", b"a\n");
    let buckets = e.buckets();
    let mut spec = e
        .spec(
            Provider::Azure,
            &Provider::Azure.address(&e.platform),
            &bucket,
            serde_json::json!({}),
        )
        .await;
    e.secret(
        "badkey",
        serde_json::json!({"accountKey": "d3Jvbmcta2V5LXdyb25nLWtleQ=="}),
    )
    .await;
    spec["secretRef"] = serde_json::json!({"name": "badkey"});
    buckets.create("azkey", spec).await;
    let obj = buckets.wait_failing("azkey", "BucketOperationFailed").await;
    let message = &condition(&obj, "FetchFailed").unwrap().message;
    assert!(
        message.contains("AuthorizationFailure") || message.contains("403"),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_keys_are_skipped_with_a_warning_and_never_written_outside() {
    let e = env("bucket-hostile", &[]).await;
    // Azurite keeps these keys as given; SeaweedFS and rclone normalise or refuse them on
    // upload.
    let store = e.store(Provider::Azure);
    let bucket = e.bucket_name("hostile");
    store.mkbucket(&bucket);
    store.put(&bucket, "good.yaml", b"good\n");
    let hostile = ["../evil.yaml", "/abs.yaml", "a/./b.yaml", "a//b.yaml"];
    for key in hostile {
        store.put(&bucket, key, b"evil\n");
    }
    let listed: Vec<String> = store
        .list(&bucket, None)
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    for key in hostile {
        assert!(
            listed.iter().any(|l| l == key),
            "the server lists {key} as given: {listed:?}"
        );
    }

    let buckets = e.buckets();
    let address = Provider::Azure.address(&e.platform);
    let spec = e
        .spec(Provider::Azure, &address, &bucket, serde_json::json!({}))
        .await;
    buckets.create("hostile", spec).await;
    let obj = buckets.wait_ready("hostile").await;
    assert_eq!(
        untar(&buckets.download(&obj)),
        files(&[("good.yaml", "good\n")])
    );
    assert_eq!(
        revision(&obj),
        store.flux_revision(&bucket, None, |k| !hostile.contains(&k))
    );
    let events = buckets.events("hostile").await;
    let warning = events
        .iter()
        .find(|ev| ev.reason.as_deref() == Some("UnsafeObjectKeys"))
        .unwrap_or_else(|| panic!("UnsafeObjectKeys event: {events:?}"));
    assert_eq!(warning.type_.as_deref(), Some("Warning"));
    let message = warning.message.clone().unwrap_or_default();
    assert!(message.starts_with("skipped 4 object key(s)"), "{message}");
    for key in hostile {
        assert!(
            message.contains(&format!("'{key}'")),
            "{message} names {key}"
        );
    }
    // Nothing landed beside the storage tree or the mirror.
    let storage_parent = e.controller.storage.parent().unwrap();
    assert!(!storage_parent.join("evil.yaml").exists());
    let object_dir = e
        .controller
        .storage
        .join(format!("bucket/{}/hostile", e.ns.name));
    assert!(!object_dir.join(".mirror/evil.yaml").exists());
    assert!(!object_dir.join("evil.yaml").exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn objects_over_the_size_limit_fail_clearly() {
    let e = env("bucket-large", &["--bucket-max-object-size=1000"]).await;
    e.seaweed_bucket(
        "large",
        "large",
        &[("small.yaml", b"small\n"), ("big.bin", &vec![b'x'; 2000])],
    )
    .await;
    let buckets = e.buckets();
    let obj = buckets.wait_failing("large", "BucketOperationFailed").await;
    let message = &condition(&obj, "FetchFailed").unwrap().message;
    assert!(
        message.contains("object 'big.bin' is 2000 bytes, over the per-object limit of 1000 bytes (--bucket-max-object-size)"),
        "{message}"
    );
    assert!(artifact(&obj).is_none(), "nothing stored");

    // Ignoring the large object lets the rest through.
    buckets
        .patch_spec("large", serde_json::json!({"ignore": "*.bin\n"}))
        .await;
    let obj = buckets.wait_ready("large").await;
    assert_eq!(
        untar(&buckets.download(&obj)),
        files(&[("small.yaml", "small\n")])
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn deleting_a_bucket_removes_its_storage_and_mirror() {
    let e = env("bucket-delete", &[]).await;
    e.seaweed_bucket("delete", "gone", &[("a.yaml", b"a\n")])
        .await;
    let buckets = e.buckets();
    let obj = buckets.wait_ready("gone").await;
    let dir = e
        .controller
        .storage
        .join(format!("bucket/{}/gone", e.ns.name));
    assert!(
        dir.join(".mirror/files/a.yaml").is_file(),
        "the mirror holds the object"
    );
    assert!(
        dir.join(artifact(&obj).unwrap().path.rsplit('/').next().unwrap())
            .is_file()
    );
    let (status, _) = support::controller::http_get(
        e.controller.storage_port,
        &format!("/bucket/{}/gone/.mirror/files/a.yaml", e.ns.name),
    );
    assert_eq!(status, 404, "the mirror is never served");

    buckets
        .api
        .delete("gone", &DeleteParams::default())
        .await
        .unwrap();
    buckets.wait_gone("gone").await;
    assert!(!dir.exists(), "storage and mirror removed");
}

#[tokio::test(flavor = "multi_thread")]
async fn suspended_buckets_are_left_alone() {
    let e = env("bucket-suspend", &[]).await;
    let (store, bucket) = e
        .seaweed_bucket("suspend", "s", &[("a.yaml", b"a\n")])
        .await;
    let buckets = e.buckets();
    let obj = buckets.wait_ready("s").await;
    buckets
        .patch_spec("s", serde_json::json!({"suspend": true}))
        .await;
    buckets
        .wait_until("s", "suspended and observed", |o| {
            support::source::is_current(o)
        })
        .await;
    store.put(&bucket, "b.yaml", b"b\n");
    let after = buckets.request_reconcile("s").await;
    assert_eq!(
        revision(&after),
        revision(&obj),
        "a suspended Bucket does not fetch"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sts_and_workload_identity_misconfigurations_are_explained() {
    let e = env("bucket-stall", &[]).await;
    let buckets = e.buckets();
    let address = Provider::S3.address(&e.platform);
    let spec = e
        .spec(
            Provider::S3,
            &address,
            "b",
            serde_json::json!({"sts": {"provider": "ldap", "endpoint": "http://127.0.0.1:1/sts"}}),
        )
        .await;
    let mut ldap = spec.clone();
    ldap.as_object_mut().unwrap().remove("secretRef");
    buckets.create("ldap", ldap).await;
    let obj = buckets.wait_failing("ldap", "AuthenticationFailed").await;
    assert!(
        condition(&obj, "FetchFailed")
            .unwrap()
            .message
            .contains("'ldap' STS provider")
    );

    // Object-level identity needs no gate since Flux 2.10: a missing ServiceAccount is named.
    let spec = serde_json::json!({"provider": "aws", "bucketName": "b", "endpoint": address, "interval": "10m", "serviceAccountName": "sa"});
    buckets.create("wi", spec).await;
    let obj = buckets.wait_failing("wi", "AuthenticationFailed").await;
    let message = &condition(&obj, "FetchFailed").unwrap().message;
    assert!(
        message.contains(&format!("failed to get service account '{}/sa'", e.ns.name)),
        "{message}"
    );
}

/// AWS STS refusing the role, as STS refuses a role the token may not assume. (STS is a
/// cloud service: no real one is reachable from here.)
fn refusing_sts(_: &Request) -> Answer {
    let body = "<ErrorResponse><Error><Code>AccessDenied</Code><Message>Not authorized to perform sts:AssumeRoleWithWebIdentity</Message></Error></ErrorResponse>";
    (403, vec![("Content-Type", "text/xml".into())], body.into())
}

#[tokio::test(flavor = "multi_thread")]
async fn object_level_workload_identity_exchanges_a_service_account_token() {
    let sts_listener = Listener::start(refusing_sts).await;
    let sts = format!("http://{}", sts_listener.address());
    let s3 = Provider::S3.address(&support::platform());
    // Both are plain-HTTP test endpoints: the operator has to allow them.
    let allow = format!("--allowed-ambient-credential-endpoints={sts},http://{s3}");
    // The retired gate is still accepted, as Flux 2.10 accepts it.
    let e = env(
        "bucket-wi",
        &["--feature-gates=ObjectLevelWorkloadIdentity=true", &allow],
    )
    .await;
    let accounts: Api<k8s_openapi::api::core::v1::ServiceAccount> =
        Api::namespaced(e.client.clone(), &e.ns.name);
    let sa = serde_json::from_value(serde_json::json!({"metadata": {"name": "reader", "annotations": {"eks.amazonaws.com/role-arn": "arn:aws:iam::123456789012:role/flux-reader"}}})).unwrap();
    accounts.create(&Default::default(), &sa).await.unwrap();
    let plain = serde_json::from_value(serde_json::json!({"metadata": {"name": "plain"}})).unwrap();
    accounts.create(&Default::default(), &plain).await.unwrap();
    let buckets = e.buckets();
    let spec = |sa: &str| {
        serde_json::json!({
            "provider": "aws", "bucketName": "b", "endpoint": Provider::S3.address(&e.platform), "insecure": true,
            "interval": "10m", "region": "eu-west-1", "serviceAccountName": sa,
            "sts": {"provider": "aws", "endpoint": sts},
        })
    };
    buckets.create("wi", spec("reader")).await;
    let obj = buckets.wait_failing("wi", "BucketOperationFailed").await;
    let message = condition(&obj, "FetchFailed").unwrap().message.clone();
    assert!(
        message.contains("Not authorized to perform sts:AssumeRoleWithWebIdentity"),
        "{message}"
    );

    let request = sts_listener
        .requests()
        .first()
        .cloned()
        .expect("STS was called");
    let form: std::collections::HashMap<String, String> = url_form(&request.body);
    assert_eq!(form["Action"], "AssumeRoleWithWebIdentity");
    assert_eq!(
        form["RoleArn"],
        "arn:aws:iam::123456789012:role/flux-reader"
    );
    let claims = jwt_claims(&form["WebIdentityToken"]);
    assert_eq!(
        claims["sub"],
        format!("system:serviceaccount:{}:reader", e.ns.name),
        "the API server issued it for the ServiceAccount"
    );
    assert!(
        claims["aud"]
            .as_array()
            .unwrap()
            .contains(&serde_json::json!("sts.amazonaws.com")),
        "{claims}"
    );

    buckets.create("noanno", spec("plain")).await;
    let obj = buckets.wait_failing("noanno", "AuthenticationFailed").await;
    let message = condition(&obj, "FetchFailed").unwrap().message.clone();
    assert!(
        message.contains("invalid eks.amazonaws.com/role-arn annotation: ''"),
        "{message}"
    );
}

/// The claims of a JWT, unverified.
fn jwt_claims(token: &str) -> serde_json::Value {
    use base64::Engine;
    let claims = token.split('.').nth(1).expect("a JWT");
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(claims)
            .unwrap(),
    )
    .unwrap()
}

fn url_form(body: &str) -> std::collections::HashMap<String, String> {
    body.split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| {
            let decode = |s: &str| {
                percent_encoding::percent_decode_str(&s.replace('+', " "))
                    .decode_utf8_lossy()
                    .into_owned()
            };
            (decode(k), decode(v))
        })
        .collect()
}

// The controller's own cloud identity (the pod's IRSA, Azure workload identity, a Google key)
// and the tokens it obtains for ServiceAccounts go only to the clouds' genuine endpoints over
// HTTPS, or to hosts the operator allows: never to an endpoint a Bucket's author chose.

const AWS_WEB_IDENTITY: &str = "controller-aws-web-identity-token";
const AWS_ROLE: &str = "arn:aws:iam::111122223333:role/driftless-controller";
const AZURE_ASSERTION: &str = "controller-azure-federated-token";
const ENTRA_ACCESS_TOKEN: &str = "controller-entra-access-token";
const GOOGLE_ACCESS_TOKEN: &str = "controller-google-access-token";

/// What a source-controller pod with cloud identities has: token files, a Google key, and the
/// Entra ID and Google OAuth token services (listeners: no cloud is reachable from here).
struct ControllerIdentity {
    dir: tempfile::TempDir,
    entra: Listener,
    google_oauth: Listener,
}

impl ControllerIdentity {
    async fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let entra = Listener::start(|r| match r.path.ends_with("/oauth2/v2.0/token") {
            true => token_answer(ENTRA_ACCESS_TOKEN),
            false => (404, vec![], String::new()),
        })
        .await;
        let google_oauth = Listener::start(|_| token_answer(GOOGLE_ACCESS_TOKEN)).await;
        std::fs::write(dir.path().join("aws-token"), AWS_WEB_IDENTITY).unwrap();
        std::fs::write(dir.path().join("azure-token"), AZURE_ASSERTION).unwrap();
        let token_uri = format!("http://{}/token", google_oauth.address());
        std::fs::write(dir.path().join("google.json"), google_key(&token_uri)).unwrap();
        ControllerIdentity {
            dir,
            entra,
            google_oauth,
        }
    }

    fn env(&self) -> Vec<(&'static str, String)> {
        let file = |name: &str| self.dir.path().join(name).display().to_string();
        vec![
            ("AWS_WEB_IDENTITY_TOKEN_FILE", file("aws-token")),
            ("AWS_ROLE_ARN", AWS_ROLE.into()),
            ("AZURE_FEDERATED_TOKEN_FILE", file("azure-token")),
            ("AZURE_CLIENT_ID", "controller-client-id".into()),
            ("AZURE_TENANT_ID", "controller-tenant".into()),
            (
                "AZURE_AUTHORITY_HOST",
                format!("http://{}", self.entra.address()),
            ),
            ("GOOGLE_APPLICATION_CREDENTIALS", file("google.json")),
        ]
    }

    /// Requests the token services saw.
    fn token_requests(&self) -> usize {
        self.entra.connections() + self.google_oauth.connections()
    }
}

fn token_answer(token: &str) -> Answer {
    let body =
        serde_json::json!({"access_token": token, "expires_in": 3600, "token_type": "Bearer"});
    (
        200,
        vec![("Content-Type", "application/json".into())],
        body.to_string(),
    )
}

/// A service-account key as Google issues it, with a fresh RSA key and `token_uri`.
fn google_key(token_uri: &str) -> String {
    use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der};
    use base64::Engine;
    let key = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
    let der: Pkcs8V1Der = key.as_der().unwrap();
    let b64 = base64::engine::general_purpose::STANDARD.encode(der.as_ref());
    let lines: Vec<String> = b64
        .as_bytes()
        .chunks(64)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect();
    let pem = format!(
        "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
        lines.join("\n")
    );
    serde_json::json!({
        "type": "service_account",
        "client_email": "driftless@example-project.iam.gserviceaccount.com",
        "private_key": pem,
        "token_uri": token_uri,
    })
    .to_string()
}

/// The tenant's endpoint: it refuses everything, and remembers what it was sent.
fn refuse(_: &Request) -> Answer {
    (403, vec![], "denied".into())
}

async fn controller_with_identity(prefix: &str, args: &[&str], id: &ControllerIdentity) -> Env {
    let owned = id.env();
    let vars: Vec<(&str, &str)> = owned.iter().map(|(k, v)| (*k, v.as_str())).collect();
    env_with(prefix, args, &vars).await
}

/// The Bucket's first failure is Stalled, Ready=False with `reason`, and a Warning event,
/// each naming `endpoint`; nothing was fetched.
async fn assert_refused(buckets: &Sources<Bucket>, name: &str, reason: &str, endpoint: &str) {
    let obj = buckets
        .wait_until(name, "failing", |o| ready_of(o) == ConditionStatus::False)
        .await;
    let ready = condition(&obj, "Ready").unwrap();
    let stalled = condition(&obj, "Stalled")
        .unwrap_or_else(|| panic!("{name} is not Stalled: {ready:?}"))
        .clone();
    assert_eq!(
        (ready.reason.as_str(), stalled.reason.as_str()),
        (reason, reason),
        "{name}: {}",
        stalled.message
    );
    let quoted = format!("'{endpoint}'");
    assert!(
        stalled.message.contains(&quoted) && stalled.message.contains("refusing to send"),
        "{name}: {}",
        stalled.message
    );
    assert!(
        stalled
            .message
            .contains("--allowed-ambient-credential-endpoints"),
        "{}",
        stalled.message
    );
    let events = buckets.events(name).await;
    assert!(
        events
            .iter()
            .any(|ev| ev.type_.as_deref() == Some("Warning")
                && ev.reason.as_deref() == Some(reason)
                && ev.message.as_deref().is_some_and(|m| m.contains(&quoted))),
        "{name}: a Warning event naming {endpoint}: {events:?}"
    );
    assert!(artifact(&obj).is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn controller_aws_credentials_never_reach_a_tenant_endpoint() {
    let identity = ControllerIdentity::new().await;
    let tenant = Listener::start(refusing_sts).await;
    let e = controller_with_identity("bucket-ambient-aws", &[], &identity).await;
    let accounts: Api<k8s_openapi::api::core::v1::ServiceAccount> =
        Api::namespaced(e.client.clone(), &e.ns.name);
    let sa = serde_json::from_value(serde_json::json!({"metadata": {"name": "reader", "annotations": {"eks.amazonaws.com/role-arn": "arn:aws:iam::123456789012:role/flux-reader"}}})).unwrap();
    accounts.create(&Default::default(), &sa).await.unwrap();
    let buckets = e.buckets();
    let aws = |extra: serde_json::Value| {
        let mut spec = serde_json::json!({"provider": "aws", "bucketName": "b", "endpoint": "s3.amazonaws.com", "region": "eu-west-1", "interval": "10m"});
        spec.as_object_mut()
            .unwrap()
            .extend(extra.as_object().cloned().unwrap());
        spec
    };
    let tenant_url = format!("http://{}", tenant.address());
    let tenant_sts = serde_json::json!({"provider": "aws", "endpoint": format!("{tenant_url}/")});
    buckets
        .create("sts", aws(serde_json::json!({"sts": tenant_sts})))
        .await;
    buckets
        .create(
            "endpoint",
            aws(serde_json::json!({"endpoint": tenant.address(), "insecure": true})),
        )
        .await;
    buckets
        .create("plain", aws(serde_json::json!({"insecure": true})))
        .await;
    buckets
        .create(
            "region",
            // Old code made `https://sts.x@127.0.0.1:<port>/#.amazonaws.com` of it.
            aws(serde_json::json!({"region": format!("x@{}/#", tenant.address())})),
        )
        .await;
    buckets
        .create(
            "workload",
            aws(serde_json::json!({"serviceAccountName": "reader", "sts": tenant_sts})),
        )
        .await;
    // With the object's own CA and proxy, the object could stand in for AWS.
    e.secret(
        "tenant-ca",
        serde_json::json!({"ca.crt": "-----BEGIN CERTIFICATE-----\n"}),
    )
    .await;
    buckets
        .create(
            "ca",
            aws(serde_json::json!({"certSecretRef": {"name": "tenant-ca"}})),
        )
        .await;

    for (name, reason, endpoint) in [
        ("sts", "InvalidSTSConfiguration", tenant_url.as_str()),
        ("endpoint", "InvalidProviderConfiguration", &tenant_url),
        (
            "plain",
            "InvalidProviderConfiguration",
            "http://s3.amazonaws.com",
        ),
        ("workload", "InvalidSTSConfiguration", &tenant_url),
    ] {
        assert_refused(&buckets, name, reason, endpoint).await;
    }
    let obj = buckets
        .wait_until("region", "failing", |o| {
            ready_of(o) == ConditionStatus::False
        })
        .await;
    assert!(
        condition(&obj, "Stalled").is_some_and(|c| c.reason == "InvalidProviderConfiguration"
            && c.message.contains("is not an AWS region name")),
        "{:?}",
        obj.status
    );
    let obj = buckets
        .wait_until("ca", "failing", |o| ready_of(o) == ConditionStatus::False)
        .await;
    assert!(
        condition(&obj, "Stalled").is_some_and(|c| c.reason == "InvalidProviderConfiguration"
            && c.message.contains("spec.certSecretRef")),
        "{:?}",
        obj.status
    );
    assert_eq!(
        tenant.connections(),
        0,
        "the tenant's endpoints were sent nothing: {:?}",
        tenant.requests()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn controller_azure_token_never_reaches_a_tenant_endpoint_or_proxy() {
    let identity = ControllerIdentity::new().await;
    let tenant = Listener::start(refuse).await;
    let e = controller_with_identity("bucket-ambient-azure", &[], &identity).await;
    e.secret(
        "tenant-proxy",
        serde_json::json!({"address": format!("http://{}", tenant.address())}),
    )
    .await;
    let buckets = e.buckets();
    let tenant_url = format!("http://{}", tenant.address());
    let azure = |endpoint: &str| serde_json::json!({"provider": "azure", "bucketName": "c", "endpoint": endpoint, "interval": "10m"});
    buckets
        .create("endpoint", azure(&format!("{tenant_url}/account")))
        .await;
    assert_refused(
        &buckets,
        "endpoint",
        "InvalidProviderConfiguration",
        &tenant_url,
    )
    .await;
    assert_eq!(
        (tenant.connections(), identity.token_requests()),
        (0, 0),
        "no token was fetched, none sent: {:?}",
        tenant.requests()
    );

    // A genuine endpoint through the tenant's proxy: the token is fetched past the proxy,
    // and the proxy only tunnels TLS to Azure (which is unreachable here: it refuses).
    let mut spec = azure("https://account.blob.core.windows.net");
    spec["proxySecretRef"] = serde_json::json!({"name": "tenant-proxy"});
    buckets.create("proxied", spec).await;
    buckets
        .wait_failing("proxied", "BucketOperationFailed")
        .await;
    let seen = tenant.requests();
    assert!(!seen.is_empty(), "the proxy was used for the bucket");
    for request in &seen {
        assert_eq!(
            (request.method.as_str(), request.path.as_str()),
            ("CONNECT", "account.blob.core.windows.net:443"),
            "the tenant's proxy only tunnels: {seen:?}"
        );
    }
    let token_request = identity.entra.requests();
    assert!(
        token_request.iter().any(|r| r
            .body
            .contains(&format!("client_assertion={AZURE_ASSERTION}"))),
        "the controller's federated token went to its own authority: {token_request:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn controller_google_key_never_reaches_a_tenant_endpoint() {
    let identity = ControllerIdentity::new().await;
    let tenant = Listener::start(refuse).await;
    let e = controller_with_identity("bucket-ambient-gcp", &[], &identity).await;
    let buckets = e.buckets();
    let tenant_url = format!("http://{}", tenant.address());
    buckets
        .create(
            "endpoint",
            serde_json::json!({"provider": "gcp", "bucketName": "g", "endpoint": tenant_url, "interval": "10m"}),
        )
        .await;
    assert_refused(
        &buckets,
        "endpoint",
        "InvalidProviderConfiguration",
        &tenant_url,
    )
    .await;
    assert_eq!(
        (tenant.connections(), identity.token_requests()),
        (0, 0),
        "no token was fetched, none sent: {:?}",
        tenant.requests()
    );
}

/// With the flag, the operator's hosts get the controller's credentials: the AWS web
/// identity token, the Entra ID token and the Google token reach the listed listeners.
#[tokio::test(flavor = "multi_thread")]
async fn operator_allowed_endpoints_receive_the_controller_credentials() {
    let identity = ControllerIdentity::new().await;
    let (sts, blob, gcs) = (
        Listener::start(refusing_sts).await,
        Listener::start(refuse).await,
        Listener::start(refuse).await,
    );
    let allow = format!(
        "--allowed-ambient-credential-endpoints=http://{},http://{},http://{}",
        sts.address(),
        blob.address(),
        gcs.address()
    );
    let e = controller_with_identity("bucket-ambient-allowed", &[&allow], &identity).await;
    let buckets = e.buckets();
    buckets.create("aws", serde_json::json!({"provider": "aws", "bucketName": "b", "endpoint": "s3.amazonaws.com", "region": "eu-west-1", "interval": "10m", "sts": {"provider": "aws", "endpoint": format!("http://{}", sts.address())}})).await;
    buckets.create("azure", serde_json::json!({"provider": "azure", "bucketName": "c", "endpoint": format!("http://{}/account", blob.address()), "interval": "10m"})).await;
    buckets.create("gcp", serde_json::json!({"provider": "gcp", "bucketName": "g", "endpoint": format!("http://{}", gcs.address()), "interval": "10m"})).await;
    for name in ["aws", "azure", "gcp"] {
        buckets.wait_failing(name, "BucketOperationFailed").await;
    }

    let form = url_form(&sts.requests().first().expect("STS was called").body);
    assert_eq!(
        (
            form["Action"].as_str(),
            form["RoleArn"].as_str(),
            form["WebIdentityToken"].as_str()
        ),
        ("AssumeRoleWithWebIdentity", AWS_ROLE, AWS_WEB_IDENTITY)
    );
    let bearer = |l: &Listener| {
        l.requests()
            .iter()
            .filter_map(|r| r.header("authorization").map(str::to_string))
            .collect::<Vec<_>>()
    };
    assert!(
        bearer(&blob).contains(&format!("Bearer {ENTRA_ACCESS_TOKEN}")),
        "{:?}",
        blob.requests()
    );
    assert!(
        bearer(&gcs).contains(&format!("Bearer {GOOGLE_ACCESS_TOKEN}")),
        "{:?}",
        gcs.requests()
    );
}

/// Keys holding a line break once made the mirror's record name other paths: `z 1\n/abs`
/// was written as the line `z 1\n/abs <etag>` and read back as the keys `z` and `/abs`, which
/// the next sync deleted as gone from the bucket. The victims here: a file in another
/// object's storage directory and a file outside storage. They must survive the sync that
/// reads the record back, and a record of that first format planted in the mirror (what an
/// older controller left) must not be trusted either.
async fn record_injection_on(provider: Provider) {
    let e = env(&format!("bucket-record-{}", provider.tool_name()), &[]).await;
    let outside = tempfile::tempdir().unwrap();
    let outside_victim = outside.path().join("victim.txt");
    std::fs::write(&outside_victim, "outside\n").unwrap();
    let neighbour = e
        .controller
        .storage
        .join(format!("ocirepository/{}/neighbour", e.ns.name));
    std::fs::create_dir_all(&neighbour).unwrap();
    let neighbour_victim = neighbour.join("latest.tar.gz");
    std::fs::write(&neighbour_victim, "neighbour\n").unwrap();
    let victims = [&outside_victim, &neighbour_victim];
    let hostile: Vec<String> = victims
        .iter()
        .map(|v| format!("z 1\n{}", v.display()))
        .collect();

    let store = e.store(provider);
    let bucket = e.bucket_name("record");
    store.mkbucket(&bucket);
    store.put(&bucket, "good.yaml", b"good\n");
    for key in &hostile {
        store.put(&bucket, key, b"evil\n");
    }
    let listed: Vec<String> = store
        .list(&bucket, None)
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    for key in &hostile {
        assert!(listed.contains(key), "the server lists {key:?}: {listed:?}");
    }
    let buckets = e.buckets();
    let address = provider.address(&e.platform);
    buckets
        .create(
            "record",
            e.spec(provider, &address, &bucket, serde_json::json!({}))
                .await,
        )
        .await;
    let first = buckets.wait_ready("record").await;

    // A second revision: this sync reads the first one's record back.
    store.put(&bucket, "second.yaml", b"second\n");
    buckets.request_reconcile("record").await;
    let second = buckets
        .wait_until("record", "at the second revision", |o| {
            revision(o) != revision(&first)
        })
        .await;
    assert_victims_intact(&victims);
    assert_eq!(
        untar(&buckets.download(&second)),
        files(&[("good.yaml", "good\n"), ("second.yaml", "second\n")])
    );
    let events = buckets.events("record").await;
    let warning = events
        .iter()
        .find(|ev| ev.reason.as_deref() == Some("UnsafeObjectKeys"))
        .unwrap_or_else(|| panic!("UnsafeObjectKeys event: {events:?}"));
    let message = warning.message.clone().unwrap_or_default();
    assert!(
        message.starts_with("skipped 2 object key(s)") && message.contains("control character"),
        "{message}"
    );

    // What the first format would have recorded for these keys, as an older controller
    // left it: read as lines, it names the victims.
    let object_dir = e
        .controller
        .storage
        .join(format!("bucket/{}/record", e.ns.name));
    let record = object_dir.join(".mirror/index");
    assert!(record.is_file(), "the mirror keeps its record");
    let mut planted = String::from("good.yaml e\n");
    for key in &hostile {
        planted.push_str(&format!("{key} e\n"));
    }
    std::fs::write(&record, planted).unwrap();
    store.put(&bucket, "third.yaml", b"third\n");
    buckets.request_reconcile("record").await;
    let third = buckets
        .wait_until("record", "at the third revision", |o| {
            revision(o) != revision(&second)
        })
        .await;
    assert_victims_intact(&victims);
    assert_eq!(ready_of(&third), ConditionStatus::True);
    assert_eq!(
        untar(&buckets.download(&third)),
        files(&[
            ("good.yaml", "good\n"),
            ("second.yaml", "second\n"),
            ("third.yaml", "third\n")
        ])
    );
    let record = std::fs::read_to_string(&record).unwrap();
    assert!(
        !record.contains(&outside_victim.display().to_string()),
        "the planted record was replaced: {record}"
    );
}

fn assert_victims_intact(victims: &[&std::path::PathBuf]) {
    for victim in victims {
        assert!(victim.is_file(), "{} was deleted", victim.display());
    }
    assert_eq!(std::fs::read_to_string(victims[0]).unwrap(), "outside\n");
    assert_eq!(std::fs::read_to_string(victims[1]).unwrap(), "neighbour\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn s3_keys_with_line_breaks_cannot_delete_files_outside_the_mirror() {
    record_injection_on(Provider::S3).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn gcs_keys_with_line_breaks_cannot_delete_files_outside_the_mirror() {
    record_injection_on(Provider::GcsVerbatim).await;
}

/// A hostile S3 endpoint (see `support::hostile_s3`) pages forever, repeats its token, or
/// sends one page of 100 MiB. Each ends in Ready=False naming the limit it ran into, and the
/// controller stays up with its peak memory bounded.
#[tokio::test(flavor = "multi_thread")]
async fn hostile_s3_listings_end_in_clear_failures_with_bounded_memory() {
    const LISTING_BUDGET: u64 = 32 << 20;
    let budget_flag = format!("--bucket-max-listing-bytes={LISTING_BUDGET}");
    let e = env("bucket-hostile-list", &[&budget_flag]).await;
    let server = support::hostile_s3::start().await;
    let buckets = e.buckets();
    let cases = [
        (
            "endless-keys",
            "more than 100000 objects to store, over the artifact limit of 100000 files (--artifact-max-files)".to_string(),
        ),
        (
            "endless-empty",
            "the listing did not end after 10000 pages".to_string(),
        ),
        (
            "repeat-token",
            "the server repeated continuation token 'again': the listing would not end".to_string(),
        ),
        (
            "huge-page",
            "a listing page is larger than the limit of 16777216 bytes a page".to_string(),
        ),
        (
            "fat-pages",
            format!(
                "the listing is larger than the limit of {LISTING_BUDGET} bytes (--bucket-max-listing-bytes)"
            ),
        ),
    ];
    for (name, expected) in &cases {
        let spec = serde_json::json!({
            "provider": "generic", "bucketName": name, "endpoint": server,
            "insecure": true, "interval": "10m", "timeout": "5m",
        });
        buckets.create(name, spec).await;
        let obj = buckets.wait_failing(name, "BucketOperationFailed").await;
        let message = &condition(&obj, "FetchFailed").unwrap().message;
        assert!(
            message.starts_with(&format!(
                "indexation of objects from bucket '{name}' failed: "
            )) && message.ends_with(expected.as_str()),
            "{name}: {message}"
        );
        // No retries to load the machine while the next case runs.
        buckets
            .patch_spec(name, serde_json::json!({"suspend": true}))
            .await;
    }
    let status = std::fs::read_to_string(format!("/proc/{}/status", e.controller.pid()))
        .expect("the controller process is still there");
    assert!(!status.contains("State:\tZ"), "{status}");
    assert!(
        e.controller.metrics().contains("# TYPE"),
        "and still answering"
    );
    let peak_mib = e.controller.peak_rss_kib() / 1024;
    eprintln!("controller peak RSS after the hostile listings: {peak_mib} MiB");
    assert!(
        peak_mib < 150,
        "peak RSS {peak_mib} MiB over 150 MiB while listing hostile endpoints"
    );
}

/// `--default-service-account` (Flux's lockdown): an `aws` Bucket with neither a Secret nor a
/// ServiceAccount borrows that ServiceAccount of its namespace (named as Flux names it when it
/// is missing), never the controller's own identity.
#[tokio::test(flavor = "multi_thread")]
async fn the_default_service_account_stands_in_for_buckets_without_identity() {
    let sts_listener = Listener::start(refusing_sts).await;
    let sts = format!("http://{}", sts_listener.address());
    let s3 = Provider::S3.address(&support::platform());
    let allow = format!("--allowed-ambient-credential-endpoints={sts},http://{s3}");
    let e = env(
        "bucket-lockdown",
        &["--default-service-account=tenant-default", &allow],
    )
    .await;
    let buckets = e.buckets();
    let spec = serde_json::json!({
        "provider": "aws", "bucketName": "b", "endpoint": s3, "insecure": true,
        "interval": "10m", "region": "eu-west-1", "sts": {"provider": "aws", "endpoint": sts},
    });
    buckets.create("locked", spec.clone()).await;
    let obj = buckets.wait_failing("locked", "AuthenticationFailed").await;
    let message = condition(&obj, "FetchFailed").unwrap().message.clone();
    assert!(
        message.contains(&format!("failed to get service account '{}/tenant-default': the specified default service account does not exist in the object namespace", e.ns.name)),
        "{message}"
    );
    assert!(sts_listener.requests().is_empty(), "no identity was used");

    let accounts: Api<k8s_openapi::api::core::v1::ServiceAccount> =
        Api::namespaced(e.client.clone(), &e.ns.name);
    let sa = serde_json::from_value(serde_json::json!({"metadata": {"name": "tenant-default", "annotations": {"eks.amazonaws.com/role-arn": "arn:aws:iam::123456789012:role/tenant"}}})).unwrap();
    accounts.create(&Default::default(), &sa).await.unwrap();
    let obj = buckets.request_reconcile("locked").await;
    let message = condition(&obj, "FetchFailed").unwrap().message.clone();
    assert!(
        message.contains("Not authorized to perform sts:AssumeRoleWithWebIdentity"),
        "{message}"
    );
    let request = sts_listener
        .requests()
        .first()
        .cloned()
        .expect("STS was called");
    let form = url_form(&request.body);
    assert_eq!(form["RoleArn"], "arn:aws:iam::123456789012:role/tenant");
    let claims = jwt_claims(&form["WebIdentityToken"]);
    assert_eq!(
        claims["sub"],
        format!("system:serviceaccount:{}:tenant-default", e.ns.name)
    );
}
