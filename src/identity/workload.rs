//! Object-level workload identity (`spec.serviceAccountName`, Flux's
//! `ObjectLevelWorkloadIdentity` gate): a token the API server issues for the named
//! ServiceAccount, exchanged for cloud credentials the way each cloud's workload identity does.

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::PostParams;
use kube::{Api, Client};

use crate::controller::objects::kube_message;

pub const AWS_ROLE_ARN: &str = "eks.amazonaws.com/role-arn";
pub const AWS_AUDIENCE: &str = "sts.amazonaws.com";
pub const AZURE_CLIENT_ID: &str = "azure.workload.identity/client-id";
pub const AZURE_TENANT_ID: &str = "azure.workload.identity/tenant-id";
pub const AZURE_AUDIENCE: &str = "api://AzureADTokenExchange";
pub const GCP_SERVICE_ACCOUNT: &str = "iam.gke.io/gcp-service-account";
pub const GCP_PROVIDER: &str = "gcp.auth.fluxcd.io/workload-identity-provider";
/// The shortest lifetime the API server issues a token for.
const MIN_TOKEN_SECONDS: i64 = 600;
const API_AUDIENCES_TTL: Duration = Duration::from_secs(600);

/// The ServiceAccount whose identity a Bucket borrows.
#[derive(Clone)]
pub struct Identity {
    pub client: Client,
    pub namespace: String,
    pub name: String,
}

impl Identity {
    pub async fn service_account(&self) -> Result<ServiceAccount, String> {
        Api::<ServiceAccount>::namespaced(self.client.clone(), &self.namespace)
            .get(&self.name)
            .await
            .map_err(|e| {
                format!(
                    "failed to get service account '{}/{}': {}",
                    self.namespace,
                    self.name,
                    kube_message(&e)
                )
            })
    }

    /// As `service_account`; a missing `--default-service-account` (`defaulted`) is named as
    /// Flux names it.
    pub async fn service_account_or_missing_default(
        &self,
        defaulted: bool,
    ) -> Result<ServiceAccount, String> {
        let found = Api::<ServiceAccount>::namespaced(self.client.clone(), &self.namespace)
            .get_opt(&self.name)
            .await;
        match found {
            Ok(None) if defaulted => Err(missing_default(&self.namespace, &self.name)),
            Ok(Some(sa)) => Ok(sa),
            _ => self.service_account().await,
        }
    }

    /// A fresh token for the ServiceAccount with the given audience, valid for an hour.
    pub async fn token(&self, audience: &str) -> Result<String, String> {
        self.issue(&[audience.to_string()], Some(3600))
            .await
            .map(|(token, _)| token)
    }

    /// A fresh token for the ServiceAccount with these audiences, valid for
    /// `expiration_seconds` (the API server's default when `None`), and when it lapses. An
    /// audience of the API server itself is refused (as Flux does): such a token, sent to a
    /// service the object's author names, would let that service act as the ServiceAccount on
    /// the cluster.
    pub async fn issue(
        &self,
        audiences: &[String],
        expiration_seconds: Option<i64>,
    ) -> Result<(String, Option<jiff::Timestamp>), String> {
        // An empty list is one the API server fills with its own audiences.
        if audiences.is_empty() || audiences.iter().any(|a| a.trim().is_empty()) {
            return Err("a token needs at least one audience, none of them empty".into());
        }
        // Boxed: tokens are also fetched deep inside a remote cluster client's request stack.
        let api = Box::pin(self.api_audiences()).await?;
        if let Some(local) = audiences.iter().find(|a| api.contains(a)) {
            return Err(format!(
                "audience '{local}' is not allowed as it is intended for the local kubernetes cluster"
            ));
        }
        let issued = self.request_token(audiences, expiration_seconds).await?;
        let status = issued.status.unwrap_or_default();
        let token = status
            .token
            .filter(|t| !t.is_empty())
            .ok_or_else(|| "the API server issued no token".to_string())?;
        Ok((token, status.expiration_timestamp.map(|t| t.0)))
    }

    /// The API server's own audiences: those it puts on a token asked for without any. Kept
    /// for ten minutes (the API server's `--api-audiences` change only with its restart); never
    /// an empty answer, which would let every audience through.
    async fn api_audiences(&self) -> Result<Arc<Vec<String>>, String> {
        static API_AUDIENCES: tokio::sync::Mutex<Option<(Instant, Arc<Vec<String>>)>> =
            tokio::sync::Mutex::const_new(None);
        let mut known = API_AUDIENCES.lock().await;
        if let Some((at, audiences)) = known.as_ref()
            && at.elapsed() < API_AUDIENCES_TTL
        {
            return Ok(audiences.clone());
        }
        let issued = self.request_token(&[], Some(MIN_TOKEN_SECONDS)).await?;
        let audiences = issued
            .spec
            .and_then(|s| s.audiences)
            .filter(|a| !a.is_empty())
            .ok_or("the API server did not say which audiences its own tokens have")?;
        let audiences = Arc::new(audiences);
        *known = Some((Instant::now(), audiences.clone()));
        Ok(audiences)
    }

    async fn request_token(
        &self,
        audiences: &[String],
        expiration_seconds: Option<i64>,
    ) -> Result<TokenRequest, String> {
        let request = TokenRequest {
            spec: Some(TokenRequestSpec {
                audiences: Some(audiences.to_vec()),
                expiration_seconds,
                ..Default::default()
            }),
            ..Default::default()
        };
        Api::<ServiceAccount>::namespaced(self.client.clone(), &self.namespace)
            .create_token_request(&self.name, &PostParams::default(), &request)
            .await
            .map_err(|e| {
                format!(
                    "failed to create kubernetes token for service account '{}/{}': {}",
                    self.namespace,
                    self.name,
                    kube_message(&e)
                )
            })
    }

    pub fn cache_key(&self, what: &[u8]) -> String {
        super::auth::cache_key(&[what, self.namespace.as_bytes(), self.name.as_bytes()])
    }
}

/// The ServiceAccount whose identity an object of a cloud provider borrows: its own
/// `serviceAccountName`, else the operator's `--default-service-account` (Flux's lockdown, in
/// which the controller's own identity is never used); `None`: the controller's.
pub fn borrowed_name(own: Option<&str>, default: Option<&str>) -> Option<(String, bool)> {
    match (
        own.filter(|n| !n.is_empty()),
        default.filter(|n| !n.is_empty()),
    ) {
        (Some(own), _) => Some((own.to_string(), false)),
        (None, Some(default)) => Some((default.to_string(), true)),
        (None, None) => None,
    }
}

/// The ServiceAccount an object borrows (`borrowed_name`) in its namespace, read from the API
/// server; `None`: the controller's own identity.
pub async fn borrow(
    client: &Client,
    namespace: &str,
    own: Option<&str>,
    default: Option<&str>,
) -> Result<Option<(Identity, ServiceAccount)>, String> {
    let Some((name, defaulted)) = borrowed_name(own, default) else {
        return Ok(None);
    };
    let identity = Identity {
        client: client.clone(),
        namespace: namespace.to_string(),
        name,
    };
    let sa = identity
        .service_account_or_missing_default(defaulted)
        .await?;
    Ok(Some((identity, sa)))
}

/// Flux's message when the lockdown's default ServiceAccount is missing in the object's
/// namespace.
pub fn missing_default(namespace: &str, name: &str) -> String {
    format!(
        "failed to get service account '{namespace}/{name}': the specified default service account does not exist in the object namespace. your cluster is subject to multi-tenant workload identity lockdown, reach out to your cluster administrator for help"
    )
}

/// An annotation of the ServiceAccount that workload identity needs.
pub fn annotation(sa: &ServiceAccount, key: &str) -> Option<String> {
    sa.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(key))
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

pub fn required_annotation(sa: &ServiceAccount, key: &str) -> Result<String, String> {
    annotation(sa, key).ok_or_else(|| {
        format!(
            "service account '{}' has no '{key}' annotation, which workload identity needs",
            sa.metadata.name.clone().unwrap_or_default()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn tokens_need_audiences_before_anything_is_asked() {
        // No API server at this address: the refusal comes before any request.
        let config = kube::Config::new("https://127.0.0.1:9".parse().unwrap());
        let identity = Identity {
            client: Client::try_from(config).unwrap(),
            namespace: "team".into(),
            name: "app".into(),
        };
        for audiences in [vec![], vec![String::new()], vec!["a".into(), " ".into()]] {
            let e = identity.issue(&audiences, None).await.unwrap_err();
            assert!(e.contains("at least one audience"), "{audiences:?}: {e}");
        }
    }

    #[test]
    fn annotations_are_read_and_missing_ones_named() {
        let sa: ServiceAccount = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "app", "annotations": {AWS_ROLE_ARN: " arn:aws:iam::1:role/r "}}
        }))
        .unwrap();
        assert_eq!(
            required_annotation(&sa, AWS_ROLE_ARN).unwrap(),
            "arn:aws:iam::1:role/r"
        );
        let err = required_annotation(&sa, AZURE_CLIENT_ID).unwrap_err();
        assert!(
            err.contains("'app'") && err.contains(AZURE_CLIENT_ID),
            "{err}"
        );
    }
}
