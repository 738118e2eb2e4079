//! Secret-less remote clusters (`spec.kubeConfig.configMapRef`, Flux 2.10): a ConfigMap names
//! a provider (`generic`, `aws`, `azure`, `gcp`), the cluster and/or its address and CA, and
//! optionally the ServiceAccount whose identity reaches it (else
//! `--default-kubeconfig-service-account`, else the controller's own). The bearer token is
//! fetched for every request (cached by the identity layer until shortly before it lapses), so
//! a long health check outlives any one token.
//!
//! Beyond Flux: the controller's own cloud identity is sent only to the API server the cloud
//! reports for the named cluster. A tenant's `address` that differs from it is refused (Flux
//! sends an EKS or GKE token to any address written in the ConfigMap).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use http::header::{AUTHORIZATION, HeaderValue};
use k8s_openapi::api::core::v1::{ConfigMap, ServiceAccount};
use kube::Api;
use serde_json::Value;

use super::context::ApplyContext;
use crate::api::kustomization::Kustomization;
use crate::controller::objects::kube_message;
use crate::identity::auth::{json_answer, json_of};
use crate::identity::aws::{self, AwsAuth, SigningRequest};
use crate::identity::entra::{self, EntraCredential};
use crate::identity::google::{self, GoogleCredential};
use crate::identity::workload::Identity;
use crate::identity::{auth, cache};

/// Entra ID's application for AKS clusters with Entra integration.
const AKS_SCOPE: &str = "6dae42f8-4368-4678-94ff-3960e28e3630/.default";
const ARM: &str = "https://management.azure.com";
const ARM_API_VERSION: &str = "2022-04-01";
const GCP_SCOPES: &[&str] = &[
    "https://www.googleapis.com/auth/cloud-platform",
    "https://www.googleapis.com/auth/userinfo.email",
];
/// An EKS token is a presigned `GetCallerIdentity` valid this long.
const EKS_TOKEN_SECONDS: u32 = 900;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    Generic,
    Aws,
    Azure,
    Gcp,
}

/// The ConfigMap's keys.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClusterRef {
    pub provider: String,
    pub cluster: Option<String>,
    pub address: Option<String>,
    pub ca: Option<Vec<u8>>,
    pub audiences: Vec<String>,
    pub service_account: Option<String>,
}

impl ClusterRef {
    pub fn from_data(data: &std::collections::BTreeMap<String, String>) -> Self {
        let get = |k: &str| {
            data.get(k)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        ClusterRef {
            provider: get("provider").unwrap_or_default(),
            cluster: get("cluster"),
            address: get("address"),
            ca: get("ca.crt").map(String::into_bytes),
            audiences: data
                .get("audiences")
                .map(|a| {
                    a.split([',', '\n', ' ', '\t', '\r'])
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default(),
            service_account: get("serviceAccountName"),
        }
    }
}

/// Where and how a pass reaches the remote cluster.
pub struct RemoteAccess {
    pub server: String,
    pub ca: Option<Vec<u8>>,
    pub bearer: Arc<Bearer>,
}

/// How each request to the remote cluster gets its token.
pub enum Bearer {
    /// A Kubernetes ServiceAccount token for the remote cluster's audiences.
    ServiceAccount {
        identity: Identity,
        audiences: Vec<String>,
    },
    /// `k8s-aws-v1.` + a presigned STS `GetCallerIdentity` naming the cluster.
    Eks {
        http: reqwest::Client,
        auth: AwsAuth,
        region: String,
        cluster_name: String,
    },
    /// An Entra ID token for AKS.
    Aks {
        http: reqwest::Client,
        credential: EntraCredential,
    },
    /// A Google access token.
    Gke {
        http: reqwest::Client,
        credential: GoogleCredential,
    },
}

impl Bearer {
    pub async fn token(&self) -> Result<String, String> {
        match self {
            Bearer::ServiceAccount {
                identity,
                audiences,
            } => {
                let key =
                    identity.cache_key(format!("kubeconfig {}", audiences.join(",")).as_bytes());
                cache::cached_token(&key, || async {
                    let (value, lapses) = identity.issue(audiences, None).await?;
                    let expires = lapses
                        .map(|t| auth::lapses_at(t.as_second()))
                        .unwrap_or_else(|| auth::expiry(None));
                    Ok(cache::Token { value, expires })
                })
                .await
            }
            Bearer::Eks {
                http,
                auth,
                region,
                cluster_name,
            } => eks_token(http, auth, region, cluster_name).await,
            Bearer::Aks { http, credential } => entra::access_token(http, credential, AKS_SCOPE)
                .await
                .map_err(|e| format!("failed to get access credential for cluster: {e}")),
            Bearer::Gke { http, credential } => google::access_token(http, credential, GCP_SCOPES)
                .await
                .map_err(|e| format!("failed to get access credential for cluster: {e}")),
        }
    }
}

/// The remote cluster a `configMapRef` names, resolved as Flux's `GetRESTConfig` does, in its
/// order and with its messages.
pub async fn remote_access(
    ctx: &ApplyContext,
    obj: &Kustomization,
    config_map: &str,
) -> Result<RemoteAccess, String> {
    let ns = obj.metadata.namespace.clone().unwrap_or_default();
    let found = Api::<ConfigMap>::namespaced(ctx.client.clone(), &ns)
        .get(config_map)
        .await
        .map_err(|e| {
            format!(
                "failed to get configmap {ns}/{config_map}: {}",
                kube_message(&e)
            )
        })?;
    let spec = ClusterRef::from_data(&found.data.unwrap_or_default());
    let provider = provider(&spec.provider)?;
    let sa_name = spec
        .service_account
        .clone()
        .or_else(|| ctx.settings.default_kubeconfig_service_account.clone());
    let object = match sa_name {
        Some(name) => {
            let identity = Identity {
                client: ctx.client.clone(),
                namespace: ns.clone(),
                name,
            };
            let sa = identity.service_account().await?;
            Some((identity, sa))
        }
        None => None,
    };
    validate(provider, &spec).map_err(|e| format!("failed to validate configuration: {e}"))?;
    let http = ctx.token_http.clone();
    match provider {
        Provider::Generic => generic(&spec, object),
        Provider::Aws => eks(&http, &spec, object).await,
        Provider::Azure => aks(&http, &spec, object).await,
        Provider::Gcp => gke(&http, &spec, object).await,
    }
}

fn provider(name: &str) -> Result<Provider, String> {
    match name {
        "generic" => Ok(Provider::Generic),
        "aws" => Ok(Provider::Aws),
        "azure" => Ok(Provider::Azure),
        "gcp" => Ok(Provider::Gcp),
        other => Err(format!("provider '{other}' not implemented")),
    }
}

/// The cluster identifier's form per provider, and what each provider needs.
pub fn validate(provider: Provider, spec: &ClusterRef) -> Result<(), String> {
    let needs_cluster = spec.address.is_none() || spec.ca.is_none();
    match (provider, spec.cluster.as_deref()) {
        (Provider::Generic, _) if spec.address.is_none() => {
            return Err("cluster address is required to create a REST config".into());
        }
        (Provider::Aws, None) => return Err("AWS region is required".into()),
        (Provider::Aws, Some(c)) => {
            eks_cluster(c)?;
        }
        (Provider::Azure, Some(c)) => {
            aks_cluster(c)?;
        }
        (Provider::Gcp, Some(c)) => {
            gke_cluster(c)?;
        }
        (Provider::Azure | Provider::Gcp, None) if needs_cluster => {
            return Err("the cluster is required when address or ca.crt is missing".into());
        }
        _ => {}
    }
    if provider == Provider::Gcp && spec.service_account.is_some() && !spec.audiences.is_empty() {
        return Err("audiences are not supported for the gcp provider".into());
    }
    Ok(())
}

/// `arn:<partition>:eks:<region>:<account>:cluster/<name>` → (region, name).
pub fn eks_cluster(arn: &str) -> Result<(String, String), String> {
    let invalid = || {
        format!(
            "invalid EKS cluster ARN: '{arn}'. must match ^arn:aws[\\w-]*:eks:([^:]{{1,100}}):[0-9]{{1,30}}:cluster/(.{{1,200}})$"
        )
    };
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    let [arn_word, partition, "eks", region, account, resource] = parts.as_slice() else {
        return Err(invalid());
    };
    let name = resource.strip_prefix("cluster/").ok_or_else(invalid)?;
    let partition_ok = *arn_word == "arn"
        && partition.strip_prefix("aws").is_some_and(|rest| {
            rest.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        });
    let account_ok =
        (1..=30).contains(&account.len()) && account.bytes().all(|b| b.is_ascii_digit());
    // The region becomes part of the EKS and STS host names the controller signs requests for.
    if !partition_ok
        || !crate::identity::endpoints::is_aws_region(region)
        || !account_ok
        || !(1..=200).contains(&name.chars().count())
    {
        return Err(invalid());
    }
    Ok((region.to_string(), name.to_string()))
}

/// `/subscriptions/<36>/resourceGroups/<rg>/providers/Microsoft.ContainerService/managedClusters/<name>`.
pub fn aks_cluster(id: &str) -> Result<(), String> {
    let invalid = || {
        format!(
            "invalid AKS cluster ID: '{id}'. must match (?i)^/subscriptions/([^/]{{36}})/resourceGroups/([^/]{{1,200}})/providers/Microsoft\\.ContainerService/managedClusters/([^/]{{1,200}})$"
        )
    };
    let parts: Vec<&str> = id.split('/').collect();
    let ok = match parts.as_slice() {
        ["", s, sub, r, rg, p, ns, m, name] if parts.iter().skip(1).all(|p| plain_segment(p)) => {
            s.eq_ignore_ascii_case("subscriptions")
                && sub.chars().count() == 36
                && r.eq_ignore_ascii_case("resourceGroups")
                && (1..=200).contains(&rg.chars().count())
                && p.eq_ignore_ascii_case("providers")
                && ns.eq_ignore_ascii_case("Microsoft.ContainerService")
                && m.eq_ignore_ascii_case("managedClusters")
                && (1..=200).contains(&name.chars().count())
        }
        _ => false,
    };
    ok.then_some(()).ok_or_else(invalid)
}

/// `projects/<p>/locations/<l>/clusters/<name>`.
pub fn gke_cluster(id: &str) -> Result<(), String> {
    let parts: Vec<&str> = id.split('/').collect();
    let ok = match parts.as_slice() {
        ["projects", p, "locations", l, "clusters", n] => [p, l, n]
            .iter()
            .all(|s| (1..=200).contains(&s.chars().count()) && plain_segment(s)),
        _ => false,
    };
    ok.then_some(()).ok_or_else(|| {
        format!(
            "invalid GKE cluster ID: '{id}'. must match ^projects/[^/]{{1,200}}/locations/[^/]{{1,200}}/clusters/[^/]{{1,200}}$"
        )
    })
}

/// A path segment that stays one segment in a URL: not `.` or `..`, no `?`, `#`, `%` or `\`.
pub fn plain_segment(segment: &str) -> bool {
    !matches!(segment, "." | "..") && !segment.contains(['?', '#', '%', '\\', '/'])
}

/// `https://host:port[/path]`: a scheme added when missing, only HTTPS, host lowercased, port
/// 443 when none, a path (a proxy's cluster path, as Rancher's) kept without its trailing `/`.
pub fn canonical_address(address: &str) -> Result<String, String> {
    let with_scheme = if address.contains("://") {
        address.to_string()
    } else {
        format!("https://{address}")
    };
    let url = reqwest::Url::parse(&with_scheme)
        .map_err(|e| format!("failed to parse cluster address {address}: {e}"))?;
    if url.scheme() != "https" {
        return Err(format!(
            "failed to parse cluster address {address}: the scheme must be https"
        ));
    }
    let host = url
        .host_str()
        .ok_or_else(|| format!("failed to parse cluster address {address}: no host"))?;
    Ok(format!(
        "https://{}:{}{}",
        host.to_ascii_lowercase(),
        url.port().unwrap_or(443),
        url.path().trim_end_matches('/')
    ))
}

fn generic(
    spec: &ClusterRef,
    object: Option<(Identity, ServiceAccount)>,
) -> Result<RemoteAccess, String> {
    let address = spec.address.clone().unwrap_or_default();
    let server = canonical_address(&address)?;
    let audiences = if spec.audiences.is_empty() {
        vec![address]
    } else {
        spec.audiences.clone()
    };
    // Flux would mint a token of the controller's own ServiceAccount for any audience and send
    // it to any address the ConfigMap names: one that another service (a cloud's STS, a Vault
    // role) trusts would hand the controller's identity to whoever runs that address.
    let Some((identity, _)) = object else {
        return Err("the generic provider needs a ServiceAccount: name one in the ConfigMap's serviceAccountName (or set --default-kubeconfig-service-account); the controller's own ServiceAccount token is never sent to an address a ConfigMap names".into());
    };
    Ok(RemoteAccess {
        server,
        ca: spec.ca.clone(),
        bearer: Arc::new(Bearer::ServiceAccount {
            identity,
            audiences,
        }),
    })
}

async fn eks(
    http: &reqwest::Client,
    spec: &ClusterRef,
    object: Option<(Identity, ServiceAccount)>,
) -> Result<RemoteAccess, String> {
    let (region, cluster_name) = eks_cluster(spec.cluster.as_deref().unwrap_or_default())?;
    let controller = object.is_none();
    let auth = match object {
        Some((identity, sa)) => {
            let role_arn = aws::role_arn(&identity, &sa).map_err(|e| {
                format!(
                    "failed to get provider identity from service account '{}/{}': {e}",
                    identity.namespace, identity.name
                )
            })?;
            AwsAuth::ObjectWebIdentity {
                identity,
                role_arn,
                sts_endpoint: Some(aws::operator_sts_endpoint(&region)?),
            }
        }
        None => AwsAuth::Chain { sts_endpoint: None },
    };
    let described = match needs_description(spec, controller) {
        true => Some(describe_eks(http, &auth, &region, &cluster_name).await?),
        false => None,
    };
    let bearer = Bearer::Eks {
        http: http.clone(),
        auth,
        region,
        cluster_name,
    };
    remote_access_of(spec, described, controller, bearer)
}

/// Whether the cloud is asked for the cluster's address and CA: when the ConfigMap lacks one,
/// and always with the controller's own identity (whose address must be the cluster's own).
fn needs_description(spec: &ClusterRef, controller: bool) -> bool {
    controller || spec.address.is_none() || spec.ca.is_none()
}

fn remote_access_of(
    spec: &ClusterRef,
    described: Option<Described>,
    controller: bool,
    bearer: Bearer,
) -> Result<RemoteAccess, String> {
    let (server, ca) = settle(spec, described, controller)?;
    Ok(RemoteAccess {
        server,
        ca,
        bearer: Arc::new(bearer),
    })
}

/// What the cloud reports for the cluster: its API server and CA (PEM).
struct Described {
    server: String,
    ca: Vec<u8>,
}

/// The address and CA a pass uses: the ConfigMap's where given, else the cloud's. With the
/// controller's own identity, a given address must be the cluster's own.
fn settle(
    spec: &ClusterRef,
    described: Option<Described>,
    controller: bool,
) -> Result<(String, Option<Vec<u8>>), String> {
    match (&spec.address, described) {
        (Some(address), Some(described)) => {
            if controller && canonical_address(address)? != canonical_address(&described.server)? {
                return Err(format!(
                    "the address '{address}' is not the cluster's API server ('{}'): the controller's own identity is sent only to the cluster's own address; name a serviceAccountName to use another address",
                    described.server
                ));
            }
            Ok((
                canonical_address(address)?,
                Some(trusted_ca(spec, described.ca, controller)),
            ))
        }
        (Some(address), None) => Ok((canonical_address(address)?, spec.ca.clone())),
        (None, Some(described)) => Ok((
            canonical_address(&described.server)?,
            Some(trusted_ca(spec, described.ca, controller)),
        )),
        (None, None) => Err("cluster address is required to create a REST config".into()),
    }
}

/// The CA a pass trusts: with the controller's own identity always the cloud's (a tenant's CA
/// would let whoever it names receive the token); else the ConfigMap's `ca.crt` when given.
fn trusted_ca(spec: &ClusterRef, described: Vec<u8>, controller: bool) -> Vec<u8> {
    match (&spec.ca, controller) {
        (Some(ca), false) => ca.clone(),
        _ => described,
    }
}

/// EKS `DescribeCluster` (`GET /clusters/<name>`): the endpoint and CA.
async fn describe_eks(
    http: &reqwest::Client,
    auth: &AwsAuth,
    region: &str,
    name: &str,
) -> Result<Described, String> {
    let failed = |e: String| format!("failed to describe EKS cluster '{name}': {e}");
    let endpoint = match std::env::var("AWS_ENDPOINT_URL_EKS") {
        Ok(e) if !e.is_empty() => e,
        _ => format!("https://eks.{region}.{}", aws_dns_suffix(region)),
    };
    let keys = aws::session_keys(auth, http, region)
        .await
        .map_err(failed)?
        .ok_or_else(|| failed("no AWS credentials".into()))?;
    let path = format!("/clusters/{}", crate::util::uri_encode(name, false));
    let url = reqwest::Url::parse(&format!("{}{path}", endpoint.trim_end_matches('/')))
        .map_err(|e| failed(e.to_string()))?;
    let (status, text) = aws::send_signed(http, "GET", url, "eks", &[], Vec::new(), &keys, region)
        .await
        .map_err(failed)?;
    let answer = json_of(status, &text).map_err(failed)?;
    let cluster = &answer["cluster"];
    let server = cluster["endpoint"]
        .as_str()
        .ok_or_else(|| failed("the answer has no cluster.endpoint".into()))?;
    let ca = cluster["certificateAuthority"]["data"]
        .as_str()
        .map(|d| STANDARD.decode(d))
        .transpose()
        .map_err(|e| format!("failed to decode EKS CA certificate: {e}"))?
        .ok_or_else(|| failed("the answer has no cluster.certificateAuthority.data".into()))?;
    Ok(Described {
        server: server.to_string(),
        ca,
    })
}

fn aws_dns_suffix(region: &str) -> &'static str {
    if region.starts_with("cn-") {
        "amazonaws.com.cn"
    } else {
        "amazonaws.com"
    }
}

/// The EKS token: a presigned STS `GetCallerIdentity` whose signed `x-k8s-aws-id` header names
/// the cluster, URL-safe base64 without padding after `k8s-aws-v1.`.
async fn eks_token(
    http: &reqwest::Client,
    auth: &AwsAuth,
    region: &str,
    cluster_name: &str,
) -> Result<String, String> {
    let keys = aws::session_keys(auth, http, region)
        .await
        .map_err(|e| format!("failed to get access credential for cluster: {e}"))?
        .ok_or("failed to get access credential for cluster: no AWS credentials")?;
    let sts = aws::operator_sts_endpoint(region)?;
    let url = reqwest::Url::parse(&sts).map_err(|e| format!("STS endpoint {sts}: {e}"))?;
    let host = aws::host_header(&url);
    let query = aws::presign_v4(
        &SigningRequest {
            method: "GET",
            host: &host,
            path: "/",
            query: &[
                ("Action", "GetCallerIdentity".to_string()),
                ("Version", "2011-06-15".to_string()),
            ],
            headers: &[("x-k8s-aws-id", cluster_name.to_string())],
            service: "sts",
            body: &[],
        },
        &keys,
        region,
        jiff::Timestamp::now(),
        EKS_TOKEN_SECONDS,
        // The hash of the empty body, as STS checks a presigned GET.
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    );
    let presigned = format!("{}://{host}/?{query}", url.scheme());
    Ok(format!("k8s-aws-v1.{}", URL_SAFE_NO_PAD.encode(presigned)))
}

async fn aks(
    http: &reqwest::Client,
    spec: &ClusterRef,
    object: Option<(Identity, ServiceAccount)>,
) -> Result<RemoteAccess, String> {
    let controller = object.is_none();
    let credential = match object {
        Some((identity, sa)) => EntraCredential::for_service_account(identity, &sa)?,
        None => EntraCredential::from_environment(),
    };
    let described = match needs_description(spec, controller) {
        true => {
            let id = spec.cluster.as_deref().unwrap_or_default();
            Some(describe_aks(http, &credential, id, spec.address.as_deref()).await?)
        }
        false => None,
    };
    let bearer = Bearer::Aks {
        http: http.clone(),
        credential,
    };
    remote_access_of(spec, described, controller, bearer)
}

/// The AKS cluster (which must have Entra ID integration) and its user kubeconfigs: the one
/// whose server is `address`, else the first.
async fn describe_aks(
    http: &reqwest::Client,
    credential: &EntraCredential,
    id: &str,
    address: Option<&str>,
) -> Result<Described, String> {
    let name = id.rsplit('/').next().unwrap_or_default().to_string();
    let failed = |e: String| format!("failed to describe AKS cluster: {e}");
    let arm = std::env::var("DRIFTLESS_ARM_ENDPOINT")
        .ok()
        .filter(|e| !e.is_empty())
        .unwrap_or_else(|| ARM.to_string());
    let scope = format!("{}/.default", arm_audience());
    let token = entra::access_token(http, credential, &scope)
        .await
        .map_err(failed)?;
    let base = format!("{}{id}", arm.trim_end_matches('/'));
    let cluster = json_answer(
        http.get(format!("{base}?api-version={ARM_API_VERSION}"))
            .bearer_auth(&token),
    )
    .await
    .map_err(failed)?;
    if cluster["properties"]["aadProfile"].is_null() {
        return Err(format!(
            "AKS cluster {name} does not have Microsoft Entra ID integration enabled. See docs for enabling: https://learn.microsoft.com/en-us/azure/aks/enable-authentication-microsoft-entra-id"
        ));
    }
    let credentials = json_answer(
        http.post(format!(
            "{base}/listClusterUserCredential?api-version={ARM_API_VERSION}"
        ))
        .bearer_auth(&token)
        .header("content-length", "0"),
    )
    .await
    .map_err(failed)?;
    let servers = aks_kubeconfigs(&credentials)?;
    let wanted = address.map(canonical_address).transpose()?;
    let chosen = match &wanted {
        None => servers.into_iter().next(),
        Some(wanted) => {
            let known: Vec<String> = servers.iter().map(|d| d.server.clone()).collect();
            match servers
                .into_iter()
                .find(|d| canonical_address(&d.server).as_ref() == Ok(wanted))
            {
                Some(d) => Some(d),
                None => {
                    return Err(format!(
                        "no kubeconfig found for AKS cluster {name} matching the specified address '{}'. cluster addresses: ['{}']",
                        address.unwrap_or_default(),
                        known.join("', '")
                    ));
                }
            }
        }
    };
    chosen.ok_or_else(|| format!("no kubeconfig found for AKS cluster {name}"))
}

/// ARM's token audience in the cloud `AZURE_AUTHORITY_HOST` names.
fn arm_audience() -> &'static str {
    let authority = entra::authority_host();
    if authority.contains("chinacloudapi.cn") {
        "https://management.core.chinacloudapi.cn/"
    } else if authority.contains("microsoftonline.us") {
        "https://management.core.usgovcloudapi.net/"
    } else {
        "https://management.core.windows.net/"
    }
}

/// The server and CA of each kubeconfig in a `listClusterUserCredential` answer.
fn aks_kubeconfigs(answer: &Value) -> Result<Vec<Described>, String> {
    let mut out = Vec::new();
    for entry in answer["kubeconfigs"].as_array().into_iter().flatten() {
        let Some(value) = entry["value"].as_str() else {
            continue;
        };
        let text = STANDARD
            .decode(value)
            .map_err(|e| format!("failed to decode the AKS kubeconfig: {e}"))?;
        let text =
            String::from_utf8(text).map_err(|_| "the AKS kubeconfig is not UTF-8".to_string())?;
        let kubeconfig = super::yaml::document(
            &text,
            &mut super::yaml::Budget::default(),
            super::yaml::Dialect::SigsYaml,
        )
        .map_err(|e| format!("failed to parse the AKS kubeconfig: {e}"))?;
        for cluster in kubeconfig["clusters"].as_array().into_iter().flatten() {
            let Some(server) = cluster["cluster"]["server"].as_str() else {
                continue;
            };
            let ca = cluster["cluster"]["certificate-authority-data"]
                .as_str()
                .map(|d| STANDARD.decode(d))
                .transpose()
                .map_err(|e| format!("failed to decode the AKS CA certificate: {e}"))?
                .unwrap_or_default();
            out.push(Described {
                server: server.to_string(),
                ca,
            });
        }
    }
    Ok(out)
}

async fn gke(
    http: &reqwest::Client,
    spec: &ClusterRef,
    object: Option<(Identity, ServiceAccount)>,
) -> Result<RemoteAccess, String> {
    let controller = object.is_none();
    let credential = match object {
        Some((identity, sa)) => GoogleCredential::for_service_account(identity, &sa)?,
        None => GoogleCredential::from_environment()?,
    };
    let described = match needs_description(spec, controller) {
        true => {
            let id = spec.cluster.as_deref().unwrap_or_default();
            Some(describe_gke(http, &credential, id).await?)
        }
        false => None,
    };
    let bearer = Bearer::Gke {
        http: http.clone(),
        credential,
    };
    remote_access_of(spec, described, controller, bearer)
}

/// GKE `clusters.get`: the endpoint (a bare host) and CA.
async fn describe_gke(
    http: &reqwest::Client,
    credential: &GoogleCredential,
    id: &str,
) -> Result<Described, String> {
    let failed = |e: String| format!("failed to describe GKE cluster '{id}': {e}");
    let api = std::env::var("DRIFTLESS_GKE_ENDPOINT")
        .ok()
        .filter(|e| !e.is_empty())
        .unwrap_or_else(|| "https://container.googleapis.com".to_string());
    let token = google::access_token(http, credential, GCP_SCOPES)
        .await
        .map_err(failed)?;
    let answer = json_answer(
        http.get(format!("{}/v1/{id}", api.trim_end_matches('/')))
            .bearer_auth(token),
    )
    .await
    .map_err(failed)?;
    let endpoint = answer["endpoint"]
        .as_str()
        .filter(|e| !e.is_empty())
        .ok_or_else(|| failed("the answer has no endpoint".into()))?;
    let ca = answer["masterAuth"]["clusterCaCertificate"]
        .as_str()
        .map(|d| STANDARD.decode(d))
        .transpose()
        .map_err(|e| format!("failed to decode GKE CA certificate: {e}"))?
        .ok_or_else(|| failed("the answer has no masterAuth.clusterCaCertificate".into()))?;
    Ok(Described {
        server: format!("https://{endpoint}"),
        ca,
    })
}

/// Sets `Authorization: Bearer <token>` on every request, the token fetched for that request.
#[derive(Clone)]
pub struct BearerLayer(pub Arc<Bearer>);

impl<S> tower::Layer<S> for BearerLayer {
    type Service = WithBearer<S>;

    fn layer(&self, inner: S) -> WithBearer<S> {
        WithBearer {
            inner: Arc::new(tokio::sync::Mutex::new(inner)),
            bearer: self.0.clone(),
        }
    }
}

pub struct WithBearer<S> {
    inner: Arc<tokio::sync::Mutex<S>>,
    bearer: Arc<Bearer>,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl<S, B, R> tower::Service<http::Request<B>> for WithBearer<S>
where
    S: tower::Service<http::Request<B>, Response = R> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Send + 'static,
{
    type Response = R;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<R, BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        // Readiness is awaited on the inner service per request, after the token is in hand.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let inner = self.inner.clone();
        let bearer = self.bearer.clone();
        Box::pin(async move {
            let token = bearer.token().await.map_err(BoxError::from)?;
            let mut value = HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|_| BoxError::from("the cluster token is not a valid header value"))?;
            value.set_sensitive(true);
            request.headers_mut().insert(AUTHORIZATION, value);
            let future = {
                let mut service = inner.lock().await;
                std::future::poll_fn(|cx| service.poll_ready(cx))
                    .await
                    .map_err(Into::into)?;
                service.call(request)
            };
            future.await.map_err(Into::into)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(pairs: &[(&str, &str)]) -> ClusterRef {
        ClusterRef::from_data(
            &pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn config_map_keys_and_audiences() {
        let s = spec(&[
            ("provider", "generic"),
            ("address", " https://example.com:6443 "),
            ("audiences", "a, b\nc"),
            ("serviceAccountName", "deployer"),
        ]);
        assert_eq!(s.address.as_deref(), Some("https://example.com:6443"));
        assert_eq!(s.audiences, ["a", "b", "c"]);
        assert_eq!(s.service_account.as_deref(), Some("deployer"));
        assert_eq!(
            provider("nope").unwrap_err(),
            "provider 'nope' not implemented"
        );
        assert_eq!(provider("").unwrap_err(), "provider '' not implemented");
    }

    #[test]
    fn cluster_identifiers_follow_each_cloud() {
        assert_eq!(
            eks_cluster("arn:aws:eks:eu-west-1:123456789012:cluster/prod").unwrap(),
            ("eu-west-1".into(), "prod".into())
        );
        assert!(eks_cluster("arn:aws-cn:eks:cn-north-1:1:cluster/x").is_ok());
        for bad in [
            "arn:aws:s3:eu-west-1:1:cluster/x",
            "arn:aws:eks:eu-west-1:12a:cluster/x",
            "arn:aws:eks::1:cluster/x",
            "arn:aws:eks:r:1:nodegroup/x",
            "arn:gcp:eks:r:1:cluster/x",
            "arn:aws:eks:attacker.example/:1:cluster/x",
            "arn:aws:eks:eu-west-1#:1:cluster/x",
        ] {
            assert!(
                eks_cluster(bad)
                    .unwrap_err()
                    .starts_with("invalid EKS cluster ARN"),
                "{bad}"
            );
        }
        let sub = "00000000-0000-0000-0000-000000000000";
        assert!(aks_cluster(&format!("/subscriptions/{sub}/resourceGroups/rg/providers/Microsoft.ContainerService/managedClusters/c")).is_ok());
        assert!(aks_cluster(&format!("/subscriptions/{sub}/resourcegroups/rg/providers/microsoft.containerservice/managedclusters/c")).is_ok());
        assert!(aks_cluster("/subscriptions/short/resourceGroups/rg/providers/Microsoft.ContainerService/managedClusters/c").is_err());
        assert!(gke_cluster("projects/p/locations/europe-west1/clusters/c").is_ok());
        assert!(gke_cluster("projects/p/zones/z/clusters/c").is_err());
        assert!(gke_cluster("projects/../locations/l/clusters/c").is_err());
        assert!(gke_cluster("projects/p/locations/l/clusters/c?x=1").is_err());
    }

    #[test]
    fn each_provider_says_what_it_lacks() {
        let e = validate(Provider::Generic, &spec(&[("provider", "generic")])).unwrap_err();
        assert_eq!(e, "cluster address is required to create a REST config");
        let e = validate(
            Provider::Aws,
            &spec(&[("address", "https://x"), ("ca.crt", "pem")]),
        )
        .unwrap_err();
        assert_eq!(e, "AWS region is required");
        assert!(
            validate(
                Provider::Azure,
                &spec(&[("address", "https://x"), ("ca.crt", "pem")])
            )
            .is_ok()
        );
        assert!(validate(Provider::Gcp, &spec(&[("address", "https://x")])).is_err());
        let e = validate(
            Provider::Gcp,
            &spec(&[
                ("cluster", "projects/p/locations/l/clusters/c"),
                ("serviceAccountName", "sa"),
                ("audiences", "x"),
            ]),
        )
        .unwrap_err();
        assert!(e.contains("audiences are not supported"), "{e}");
    }

    #[test]
    fn addresses_are_canonical_https() {
        assert_eq!(
            canonical_address("10.0.0.1").unwrap(),
            "https://10.0.0.1:443"
        );
        assert_eq!(
            canonical_address("https://API.Example.com").unwrap(),
            "https://api.example.com:443"
        );
        assert_eq!(
            canonical_address("https://h:6443/").unwrap(),
            "https://h:6443"
        );
        assert!(canonical_address("http://h").is_err());
        assert_eq!(
            canonical_address("httpbin.example").unwrap(),
            "https://httpbin.example:443"
        );
        assert_eq!(
            canonical_address("https://rancher.example/k8s/clusters/c-x/").unwrap(),
            "https://rancher.example:443/k8s/clusters/c-x"
        );
    }

    #[test]
    fn the_controllers_identity_goes_only_to_the_clusters_own_address() {
        let described = || Described {
            server: "https://abc.gr7.eu-west-1.eks.amazonaws.com".into(),
            ca: b"cloud-ca".to_vec(),
        };
        let given = spec(&[("address", "https://attacker.example")]);
        let e = settle(&given, Some(described()), true).unwrap_err();
        assert!(e.contains("not the cluster's API server"), "{e}");
        // A ServiceAccount's own identity may go where its ConfigMap says (as Flux).
        let (server, ca) = settle(&given, Some(described()), false).unwrap();
        assert_eq!(server, "https://attacker.example:443");
        assert_eq!(ca.as_deref(), Some(&b"cloud-ca"[..]));
        let same = spec(&[
            ("address", "abc.gr7.eu-west-1.eks.amazonaws.com"),
            ("ca.crt", "mine"),
        ]);
        let (server, ca) = settle(&same, Some(described()), true).unwrap();
        assert_eq!(server, "https://abc.gr7.eu-west-1.eks.amazonaws.com:443");
        assert_eq!(
            ca.as_deref(),
            Some(&b"cloud-ca"[..]),
            "the tenant's CA is not trusted with the controller's token"
        );
        let (_, ca) = settle(&same, Some(described()), false).unwrap();
        assert_eq!(ca.as_deref(), Some(&b"mine"[..]));
        let (server, _) = settle(&spec(&[]), Some(described()), true).unwrap();
        assert_eq!(server, "https://abc.gr7.eu-west-1.eks.amazonaws.com:443");
    }

    #[test]
    fn aks_kubeconfigs_give_servers_and_cas() {
        let kubeconfig = "apiVersion: v1\nclusters:\n- name: c\n  cluster:\n    server: https://c-dns.hcp.westeurope.azmk8s.io:443\n    certificate-authority-data: Y2E=\n";
        let answer = serde_json::json!({"kubeconfigs": [{"name": "clusterUser", "value": STANDARD.encode(kubeconfig)}]});
        let found = aks_kubeconfigs(&answer).unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(
            found[0].server,
            "https://c-dns.hcp.westeurope.azmk8s.io:443"
        );
        assert_eq!(found[0].ca, b"ca");
        assert!(aks_kubeconfigs(&serde_json::json!({"kubeconfigs": [{"value": "%%%"}]})).is_err());
    }

    #[test]
    fn the_generic_provider_never_sends_the_controllers_own_token() {
        let spec = spec(&[
            ("provider", "generic"),
            ("address", "https://attacker.example"),
            ("audiences", "sts.amazonaws.com"),
        ]);
        let e = generic(&spec, None).err().unwrap();
        assert!(e.contains("needs a ServiceAccount"), "{e}");
    }

    #[tokio::test]
    async fn eks_tokens_are_presigned_caller_identity_urls_naming_the_cluster() {
        let auth = AwsAuth::Static(aws::StaticKeys {
            access_key: "AKIDEXAMPLE".into(),
            secret_key: "secret".into(),
            session_token: Some("session".into()),
        });
        let token = eks_token(&reqwest::Client::new(), &auth, "eu-west-1", "prod")
            .await
            .unwrap();
        let encoded = token.strip_prefix("k8s-aws-v1.").unwrap();
        assert!(!encoded.contains('='), "unpadded");
        let url = String::from_utf8(URL_SAFE_NO_PAD.decode(encoded).unwrap()).unwrap();
        let url = reqwest::Url::parse(&url).unwrap();
        assert_eq!(url.host_str(), Some("sts.eu-west-1.amazonaws.com"));
        let query: std::collections::HashMap<_, _> = url.query_pairs().into_owned().collect();
        assert_eq!(query["Action"], "GetCallerIdentity");
        assert_eq!(query["X-Amz-Expires"], "900");
        assert_eq!(query["X-Amz-SignedHeaders"], "host;x-k8s-aws-id");
        assert_eq!(query["X-Amz-Security-Token"], "session");
        assert!(query["X-Amz-Credential"].starts_with("AKIDEXAMPLE/"));
        assert_eq!(query["X-Amz-Signature"].len(), 64);
    }
}
