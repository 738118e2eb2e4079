//! `OCIRepository` (`source.toolkit.fluxcd.io/v1`): an OCI artifact followed by tag, semver range
//! or digest, stored as a tarball for consumers.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::meta::{
    Artifact, Condition, DURATION_PATTERN, LocalObjectReference, TIMEOUT_PATTERN, default_timeout,
    is_false,
};

/// Desired state of an OCIRepository.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "source.toolkit.fluxcd.io",
    version = "v1",
    kind = "OCIRepository",
    plural = "ocirepositories",
    namespaced,
    status = "OCIRepositoryStatus",
    shortname = "ocirepo",
    category = "all",
    category = "fluxcd",
    category = "fluxcd-sources",
    annotation("kustomize.toolkit.fluxcd.io/substitute", "disabled"),
    printcolumn(name = "URL", type_ = "string", json_path = ".spec.url"),
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
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    ),
    doc = "OCIRepository follows an artifact in an OCI registry, verifies it and serves its content as a tarball for Kustomizations and other consumers."
)]
#[serde(rename_all = "camelCase")]
pub struct OCIRepositorySpec {
    /// Address of the repository, `oci://<host>[:<port>]/<path>`, without a tag or digest
    /// (choose those with `ref`).
    // Required through the root rule (Flux v1.10), so the schema has no `required` or default.
    #[serde(default)]
    #[schemars(pattern(r"^oci://.*$"), transform = super::meta::no_default)]
    pub url: String,

    /// Which artifact of the repository to follow. Precedence: `digest`, then `semver`, then
    /// `tag`; when nothing is set the `latest` tag is followed.
    #[serde(default, rename = "ref", skip_serializing_if = "Option::is_none")]
    pub reference: Option<OCIRepositoryRef>,

    /// Which layer of the artifact holds the content and what to do with it. By default the
    /// first layer is extracted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layer_selector: Option<OCILayerSelector>,

    /// Cloud provider whose workload identity is used to log in to the registry when no
    /// static credentials are given. `generic` (the default) uses only Secrets or anonymous
    /// access.
    // Flux v1.10 applies the default in the controller, not in the schema.
    #[serde(default)]
    #[schemars(transform = super::meta::no_default)]
    pub provider: OCIProvider,

    /// Secret of type `kubernetes.io/dockerconfigjson` with credentials for the registry,
    /// matched by registry host as `docker login` does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<LocalObjectReference>,

    /// Verify the artifact's signature before its content is pulled; an artifact that fails
    /// verification is never stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify: Option<OCIRepositoryVerification>,

    /// ServiceAccount in the same namespace whose `imagePullSecrets` are used as registry
    /// credentials (and, with a cloud `provider`, whose identity is used).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,

    /// Secret with TLS material for the registry: `ca.crt` (added to the system roots) and/or a
    /// client certificate `tls.crt` with its key `tls.key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_secret_ref: Option<LocalObjectReference>,

    /// Secret with the proxy to reach the registry through: `address` (required), and optional
    /// `username` and `password`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_secret_ref: Option<LocalObjectReference>,

    /// How often the repository is checked for a new artifact, for example `5m` or `1h30m`.
    #[serde(default)]
    #[schemars(pattern(DURATION_PATTERN), transform = super::meta::no_default)]
    pub interval: String,

    /// Upper bound for registry logins and signature verification (default `60s`).
    #[serde(default = "default_timeout")]
    #[schemars(pattern(TIMEOUT_PATTERN), transform = super::meta::no_default)]
    pub timeout: String,

    /// Extra exclusion rules in `.gitignore` syntax, applied when the layer is extracted and
    /// re-archived. Not used with the `copy` operation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ignore: Option<String>,

    /// Allow plain HTTP connections to the registry, and without `certSecretRef`, skip TLS
    /// verification.
    #[serde(default, skip_serializing_if = "is_false")]
    pub insecure: bool,

    /// Stop reconciling this object; the last artifact keeps being served.
    #[serde(default, skip_serializing_if = "is_false")]
    pub suspend: bool,
}

/// Which artifact of the repository to follow.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OCIRepositoryRef {
    /// An exact manifest digest, `sha256:<hex>`. Takes precedence over `semver` and `tag`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// A semver range, for example `>=1.2.0 <2.0.0`; the highest tag inside it is followed.
    /// Takes precedence over `tag`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub semver: Option<String>,
    /// A regular expression that tags must match before `semver` is applied to them; only
    /// used together with `semver`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub semver_filter: Option<String>,
    /// The tag to follow, for example `latest` or `v1.2.3`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
}

/// Which layer holds the content, and how to store it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OCILayerSelector {
    /// Media type of the layer; the first layer with exactly this type is used. When omitted
    /// the first layer is used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// `extract` (default) unpacks the layer and re-archives it with the ignore rules applied;
    /// `copy` stores the layer's bytes as they are.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<LayerOperation>,
}

/// What to do with the selected layer.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum LayerOperation {
    Extract,
    Copy,
}

/// Cloud providers whose workload identity can log in to a registry.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum OCIProvider {
    #[default]
    Generic,
    Aws,
    Azure,
    Gcp,
}

/// Signature verification settings.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OCIRepositoryVerification {
    /// The signing system: `cosign` or `notation`.
    #[schemars(extend("default" = "cosign"))]
    pub provider: VerificationProvider,
    /// Secret with the trusted public keys: for cosign every key whose name ends in `.pub`.
    /// Without it, cosign verification is keyless (Fulcio certificates and transparency log).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<LocalObjectReference>,
    /// Keyless only: the OIDC identities allowed to have signed. A signature is accepted when
    /// any entry matches; with no entries any identity of the trusted root is accepted.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        rename = "matchOIDCIdentity"
    )]
    pub match_oidc_identity: Option<Vec<OIDCIdentityMatch>>,
    /// Keyless only: Secret with a `trusted_root.json` to trust instead of the public Sigstore
    /// instance, for self-hosted Fulcio and Rekor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trusted_root_secret_ref: Option<LocalObjectReference>,
}

/// The signing systems that can be verified.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum VerificationProvider {
    #[default]
    Cosign,
    Notation,
}

/// An OIDC identity given as two regular expressions.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct OIDCIdentityMatch {
    /// Regular expression for the OIDC issuer recorded in the signing certificate, for example
    /// `^https://token.actions.githubusercontent.com$`.
    pub issuer: String,
    /// Regular expression for the signer's identity (the certificate's subject alternative
    /// name), for example a workflow URL or an email address.
    pub subject: String,
}

/// Observed state of an OCIRepository.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("default" = {"observedGeneration": -1}))]
pub struct OCIRepositoryStatus {
    /// The last generation the controller finished reconciling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `Reconciling`, `Stalled`, `FetchFailed`, `StorageOperationFailed`,
    /// `SourceVerified` and `ArtifactInStorage`, as Flux reports them.
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
    /// The `spec.layerSelector` the current artifact was built with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_layer_selector: Option<OCILayerSelector>,
    /// The last `reconcile.fluxcd.io/requestedAt` annotation value that was handled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_handled_reconcile_at: Option<String>,
    /// What signature verification established for the manifest the artifact was pulled from
    /// (driftless only; absent without `spec.verify`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verified_signature: Option<VerifiedSignature>,
    /// Fingerprint of the verification material (provider, trusted root, public keys) the
    /// current artifact was verified with, computed as Flux computes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_verification_fingerprint: Option<String>,
}

/// The signature that verified a revision, and what it proved.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VerifiedSignature {
    /// `cosign` or `notation`.
    #[serde(default)]
    pub provider: String,
    /// The manifest digest the signature covers (the one the artifact was pulled by).
    #[serde(default)]
    pub digest: String,
    /// Where the signature was found: `cosign-signature-tag` (the legacy `sha256-<hex>.sig`
    /// tag), `sigstore-bundle` (an OCI referrer), or `notation-jws` / `notation-cose` (a Notary
    /// Project signature referrer).
    #[serde(default)]
    pub format: String,
    /// Key-based: the entry of the verification Secret whose key verified it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Keyless: the certificate identity (subject alternative name) that matched; notation: the
    /// signing certificate's subject.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// Keyless: the OIDC issuer recorded in the certificate; notation: the signing certificate's
    /// issuer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// The transparency log that recorded the signature.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_url: Option<String>,
    /// The signature's index in that log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_index: Option<i64>,
    /// When the log recorded the signature (RFC 3339), as signed by the log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub integrated_time: Option<String>,
    /// When an RFC 3161 timestamp authority attests the signature existed (RFC 3339): the signing
    /// time of keyless signatures whose log signs none (Rekor v2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamped_at: Option<String>,
}
