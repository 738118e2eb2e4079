//! Types every Flux kind shares: object references, the artifact record and conditions.

// These mirror `fluxcd/pkg/apis/meta` field for field, because Flux consumers (kustomize-controller,
// helm-controller, the flux CLI) read them from our objects.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Interval fields accept Go duration strings with units up to hours.
pub const DURATION_PATTERN: &str = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$";
/// Timeout fields stop at minutes, as Flux's do.
pub const TIMEOUT_PATTERN: &str = r"^([0-9]+(\.[0-9]+)?(ms|s|m))+$";
/// Digests are written as `<algorithm>:<encoded>` (OCI digest grammar).
pub const DIGEST_PATTERN: &str = r"^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$";

pub(crate) fn default_timeout() -> String {
    "60s".to_string()
}

/// Schema transform: a field whose default the controller applies, not the API server.
pub(crate) fn no_default(schema: &mut schemars::Schema) {
    schema.remove("default");
}

pub(crate) fn is_false(b: &bool) -> bool {
    !*b
}

/// A reference to an object in the same namespace as the referrer.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct LocalObjectReference {
    /// Name of the referent.
    pub name: String,
}

/// A reference to one key of a Secret in the same namespace as the referrer.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct SecretKeyReference {
    /// Name of the Secret.
    pub name: String,
    /// Key in the Secret's data; when omitted the consumer's documented default key is used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// A reference to an object of a given kind, optionally in another namespace.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NamespacedObjectKindReference {
    /// API version of the referent, for example `apps/v1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    /// Kind of the referent.
    pub kind: String,
    /// Name of the referent.
    pub name: String,
    /// Namespace of the referent; defaults to the referrer's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// The output of a source reconcile: a tarball in the controller's storage, served over HTTP.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Artifact {
    /// Path of the file relative to the storage root, `<kind>/<namespace>/<name>/<file>`.
    pub path: String,
    /// HTTP address the file can be downloaded from (only reachable inside the cluster).
    pub url: String,
    /// The upstream revision the file was built from: `<tag>@sha256:<hex>` or `sha256:<hex>`
    /// for OCI sources, `sha256:<hex>` of the object index for buckets.
    pub revision: String,
    /// Digest of the stored file, `<algorithm>:<hex>`; consumers verify downloads against it.
    #[schemars(pattern(DIGEST_PATTERN))]
    pub digest: String,
    /// When the file was last (re)written.
    pub last_update_time: Time,
    /// Size of the stored file in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<i64>,
    /// Extra facts about the upstream content; for OCI sources, the manifest's annotations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<BTreeMap<String, String>>,
}

/// Whether a condition holds.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum ConditionStatus {
    True,
    False,
    Unknown,
}

/// One aspect of an object's current state (the shape of `metav1.Condition`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// When the condition last changed from one status to another.
    pub last_transition_time: Time,
    /// A human-readable explanation of the transition.
    #[schemars(length(max = 32768))]
    pub message: String,
    /// The `metadata.generation` the condition was set for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("minimum" = 0))]
    pub observed_generation: Option<i64>,
    /// A CamelCase, machine-readable cause of the last transition.
    #[schemars(
        length(min = 1, max = 1024),
        pattern(r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$")
    )]
    pub reason: String,
    /// `True`, `False` or `Unknown`.
    pub status: ConditionStatus,
    /// The aspect this condition describes, for example `Ready`, `Reconciling` or `Stalled`.
    #[serde(rename = "type")]
    #[schemars(
        length(max = 316),
        pattern(r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$")
    )]
    pub type_: String,
}
