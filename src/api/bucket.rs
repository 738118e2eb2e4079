//! `Bucket` (`source.toolkit.fluxcd.io/v1`): the objects under a prefix of an S3, GCS or Azure
//! bucket, stored as a tarball for consumers.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::meta::{
    Artifact, Condition, DURATION_PATTERN, LocalObjectReference, TIMEOUT_PATTERN, default_timeout,
    is_false,
};

/// Desired state of a Bucket.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "source.toolkit.fluxcd.io",
    version = "v1",
    kind = "Bucket",
    plural = "buckets",
    namespaced,
    status = "BucketStatus",
    category = "all",
    category = "fluxcd",
    category = "fluxcd-sources",
    annotation("kustomize.toolkit.fluxcd.io/substitute", "disabled"),
    printcolumn(name = "Endpoint", type_ = "string", json_path = ".spec.endpoint"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = r#".status.conditions[?(@.type=="Ready")].status"#
    ),
    printcolumn(
        name = "Status",
        type_ = "string",
        json_path = r#".status.conditions[?(@.type=="Ready")].message"#
    ),
    doc = "Bucket follows the objects in an S3-compatible, GCS or Azure Blob bucket and serves them as a tarball for Kustomizations and other consumers."
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "self.provider == 'aws' || self.provider == 'generic' || !has(self.sts)",
     "message": "STS configuration is only supported for the 'aws' and 'generic' Bucket providers"},
    {"rule": "self.provider != 'aws' || !has(self.sts) || self.sts.provider == 'aws'",
     "message": "'aws' is the only supported STS provider for the 'aws' Bucket provider"},
    {"rule": "self.provider != 'generic' || !has(self.sts) || self.sts.provider == 'ldap'",
     "message": "'ldap' is the only supported STS provider for the 'generic' Bucket provider"},
    {"rule": "!has(self.sts) || self.sts.provider != 'aws' || !has(self.sts.secretRef)",
     "message": "spec.sts.secretRef is not required for the 'aws' STS provider"},
    {"rule": "!has(self.sts) || self.sts.provider != 'aws' || !has(self.sts.certSecretRef)",
     "message": "spec.sts.certSecretRef is not required for the 'aws' STS provider"},
    {"rule": "self.provider != 'generic' || !has(self.serviceAccountName)",
     "message": "ServiceAccountName is not supported for the 'generic' Bucket provider"},
    {"rule": "!has(self.secretRef) || !has(self.serviceAccountName)",
     "message": "cannot set both .spec.secretRef and .spec.serviceAccountName"}
]))]
pub struct BucketSpec {
    /// The object-store API to speak: `generic` (any S3-compatible server), `aws`, `gcp` or
    /// `azure`.
    #[serde(default)]
    pub provider: BucketProvider,

    /// Name of the bucket (for Azure, the container).
    pub bucket_name: String,

    /// The object store's address: `host[:port]` without a scheme for S3, the account URL for
    /// Azure. Required by the schema but not used for GCS.
    pub endpoint: String,

    /// Security Token Service to obtain temporary credentials from: `aws` with the `aws`
    /// provider, `ldap` with the `generic` provider.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sts: Option<BucketSTSSpec>,

    /// Use plain HTTP instead of HTTPS (S3 endpoints only).
    #[serde(default, skip_serializing_if = "is_false")]
    pub insecure: bool,

    /// The bucket's region; detected from the bucket when omitted (S3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,

    /// Only objects whose keys start with this prefix are included (listed server-side).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,

    /// Secret with credentials: `accesskey` and `secretkey` for S3; `serviceaccount` (a JSON
    /// key) for GCS; `accountKey`, `sasKey` or service-principal keys for Azure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<LocalObjectReference>,

    /// ServiceAccount whose workload identity is used to reach the bucket (`aws`, `gcp` and
    /// `azure` providers only; not together with `secretRef`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,

    /// Secret with TLS material for the endpoint: `ca.crt` and/or a client certificate
    /// `tls.crt` with its key `tls.key` (`generic` provider).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_secret_ref: Option<LocalObjectReference>,

    /// Secret with the proxy to reach the endpoint through: `address` (required), and
    /// optional `username` and `password`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_secret_ref: Option<LocalObjectReference>,

    /// How often the bucket is listed for changes, for example `5m`.
    #[schemars(pattern(DURATION_PATTERN))]
    pub interval: String,

    /// Upper bound for the listing, and separately for downloading the objects.
    #[serde(default = "default_timeout")]
    #[schemars(pattern(TIMEOUT_PATTERN))]
    pub timeout: String,

    /// Extra exclusion rules in `.gitignore` syntax, applied to object keys before anything is
    /// downloaded (in addition to a `.sourceignore` object at the root).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ignore: Option<String>,

    /// Stop reconciling this object; the last artifact keeps being served.
    #[serde(default, skip_serializing_if = "is_false")]
    pub suspend: bool,
}

/// The object-store APIs a Bucket can use.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum BucketProvider {
    #[default]
    Generic,
    Aws,
    Gcp,
    Azure,
}

/// A Security Token Service that issues temporary credentials for the bucket.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BucketSTSSpec {
    /// `aws` (AWS STS) or `ldap` (an S3 server's LDAP identity endpoint, as MinIO offers).
    pub provider: STSProvider,
    /// Address of the STS, `http://` or `https://`.
    #[schemars(pattern(r"^(http|https)://.*$"))]
    pub endpoint: String,
    /// `ldap` only: Secret with the `username` and `password` to authenticate with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<LocalObjectReference>,
    /// `ldap` only: Secret with TLS material for the STS endpoint (`ca.crt`, `tls.crt`,
    /// `tls.key`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_secret_ref: Option<LocalObjectReference>,
}

/// Security Token Service kinds.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum STSProvider {
    Aws,
    Ldap,
}

/// Observed state of a Bucket.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("default" = {"observedGeneration": -1}))]
pub struct BucketStatus {
    /// The last generation the controller finished reconciling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `Reconciling`, `Stalled`, `FetchFailed`, `StorageOperationFailed` and
    /// `ArtifactInStorage`, as Flux reports them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Address of the newest artifact under a stable name (`latest.tar.gz`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The stored artifact that consumers should download.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact: Option<Artifact>,
    /// The `spec.ignore` the current artifact was built with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_ignore: Option<String>,
    /// The last `reconcile.fluxcd.io/requestedAt` annotation value that was handled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_handled_reconcile_at: Option<String>,
}
