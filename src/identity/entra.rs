//! Microsoft Entra ID access tokens for a scope (Azure Blob Storage, Azure Container
//! Registry): a service principal's secret or certificate, managed identity, workload
//! identity (the pod's federated token, or a ServiceAccount's token for object-level identity).

use aws_lc_rs::digest;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use k8s_openapi::api::core::v1::ServiceAccount;
use serde::Deserialize;

use super::auth::{self, Token, cached_token, rs256_jwt, rsa_key};
use super::workload::{self, Identity};
use crate::transport::{error_chain, token_answer};
use crate::util::{pem_blocks, uri_encode};

pub const DEFAULT_AUTHORITY: &str = "https://login.microsoftonline.com";
/// Where managed identity tokens come from on an Azure VM or node.
const IMDS_TOKEN_URL: &str = "http://169.254.169.254/metadata/identity/oauth2/token";

#[derive(Clone)]
pub enum EntraCredential {
    ClientSecret {
        authority: String,
        tenant: String,
        client_id: String,
        secret: String,
    },
    ClientCertificate {
        authority: String,
        tenant: String,
        client_id: String,
        /// Certificate chain and RSA key, PEM.
        pem: String,
        send_chain: bool,
    },
    ManagedIdentity {
        client_id: Option<String>,
    },
    WorkloadIdentity {
        authority: String,
        tenant: String,
        client_id: String,
        token_file: String,
    },
    /// A ServiceAccount's token as the client assertion of its `azure.workload.identity/*`
    /// identity.
    ObjectWorkloadIdentity {
        authority: String,
        tenant: String,
        client_id: String,
        identity: Identity,
    },
}

/// The authority tokens are asked of: `AZURE_AUTHORITY_HOST`, else Entra's public cloud.
pub fn authority_host() -> String {
    env("AZURE_AUTHORITY_HOST").unwrap_or_else(|| DEFAULT_AUTHORITY.into())
}

fn env(key: &str) -> Option<String> {
    std::env::var(key).ok().filter(|v| !v.is_empty())
}

impl EntraCredential {
    /// The controller's own identity from its environment, in the order of the Azure SDK's
    /// default chain: a service principal's secret, workload identity (the federated token
    /// the webhook projects), else the node's managed identity.
    pub fn from_environment() -> EntraCredential {
        let authority = authority_host();
        if let (Some(tenant), Some(client_id), Some(secret)) = (
            env("AZURE_TENANT_ID"),
            env("AZURE_CLIENT_ID"),
            env("AZURE_CLIENT_SECRET"),
        ) {
            return EntraCredential::ClientSecret {
                authority,
                tenant,
                client_id,
                secret,
            };
        }
        if let (Some(tenant), Some(client_id), Some(token_file)) = (
            env("AZURE_TENANT_ID"),
            env("AZURE_CLIENT_ID"),
            env("AZURE_FEDERATED_TOKEN_FILE"),
        ) {
            return EntraCredential::WorkloadIdentity {
                authority,
                tenant,
                client_id,
                token_file,
            };
        }
        EntraCredential::ManagedIdentity {
            client_id: env("AZURE_CLIENT_ID"),
        }
    }

    /// Whether the environment names a credential other than the node's managed identity.
    pub fn environment_has_credential() -> bool {
        !matches!(
            Self::from_environment(),
            EntraCredential::ManagedIdentity { .. }
        )
    }

    /// A ServiceAccount's identity, from its `azure.workload.identity/tenant-id` and
    /// `client-id` annotations (checked in Flux's order, with Flux's messages).
    pub fn for_service_account(
        identity: Identity,
        sa: &ServiceAccount,
    ) -> Result<EntraCredential, String> {
        let read = |key: &str, what: &str| {
            workload::annotation(sa, key).ok_or_else(|| {
                format!(
                    "failed to get provider identity from service account '{}/{}' annotations: azure {what} is not set in the service account annotation {key}",
                    identity.namespace, identity.name
                )
            })
        };
        let tenant = read(workload::AZURE_TENANT_ID, "tenant ID")?;
        let client_id = read(workload::AZURE_CLIENT_ID, "client ID")?;
        Ok(EntraCredential::ObjectWorkloadIdentity {
            authority: authority_host(),
            tenant,
            client_id,
            identity,
        })
    }

    /// Names the identity (never its secret) for cache keys.
    fn identity_key(&self) -> String {
        match self {
            EntraCredential::ClientSecret {
                authority,
                tenant,
                client_id,
                secret,
            } => auth::cache_key(&[
                b"secret",
                authority.as_bytes(),
                tenant.as_bytes(),
                client_id.as_bytes(),
                secret.as_bytes(),
            ]),
            EntraCredential::ClientCertificate {
                authority,
                tenant,
                client_id,
                pem,
                ..
            } => auth::cache_key(&[
                b"cert",
                authority.as_bytes(),
                tenant.as_bytes(),
                client_id.as_bytes(),
                pem.as_bytes(),
            ]),
            EntraCredential::ManagedIdentity { client_id } => {
                auth::cache_key(&[b"msi", client_id.as_deref().unwrap_or_default().as_bytes()])
            }
            EntraCredential::WorkloadIdentity {
                authority,
                tenant,
                client_id,
                token_file,
            } => auth::cache_key(&[
                b"wi",
                authority.as_bytes(),
                tenant.as_bytes(),
                client_id.as_bytes(),
                token_file.as_bytes(),
            ]),
            EntraCredential::ObjectWorkloadIdentity {
                authority,
                tenant,
                client_id,
                identity,
            } => identity.cache_key(
                auth::cache_key(&[
                    b"azure",
                    authority.as_bytes(),
                    tenant.as_bytes(),
                    client_id.as_bytes(),
                ])
                .as_bytes(),
            ),
        }
    }

    /// What the cache knows this credential and a scope by.
    pub fn cache_key(&self, scope: &str) -> String {
        auth::cache_key(&[b"entra", self.identity_key().as_bytes(), scope.as_bytes()])
    }
}

/// An access token for `scope` (`<resource>/.default`), cached until shortly before it lapses.
pub async fn access_token(
    http: &reqwest::Client,
    credential: &EntraCredential,
    scope: &str,
) -> Result<String, String> {
    cached_token(&credential.cache_key(scope), || {
        fetch_token(http, credential, scope)
    })
    .await
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    #[serde(default)]
    expires_in: Option<serde_json::Value>,
}

async fn fetch_token(
    http: &reqwest::Client,
    credential: &EntraCredential,
    scope: &str,
) -> Result<Token, String> {
    let request = match credential {
        EntraCredential::ManagedIdentity { client_id } => {
            managed_identity_request(http, client_id.as_deref(), scope)
        }
        EntraCredential::ClientSecret {
            authority,
            tenant,
            client_id,
            secret,
        } => http.post(token_endpoint(authority, tenant)).form(&[
            ("grant_type", "client_credentials"),
            ("client_id", client_id),
            ("client_secret", secret),
            ("scope", scope),
        ]),
        EntraCredential::ClientCertificate {
            authority,
            tenant,
            client_id,
            pem,
            send_chain,
        } => {
            let endpoint = token_endpoint(authority, tenant);
            let assertion = certificate_assertion(&endpoint, client_id, pem, *send_chain)?;
            assertion_request(http, endpoint, client_id, &assertion, scope)
        }
        EntraCredential::ObjectWorkloadIdentity {
            authority,
            tenant,
            client_id,
            identity,
        } => {
            let assertion = identity.token(workload::AZURE_AUDIENCE).await?;
            let endpoint = token_endpoint(authority, tenant);
            assertion_request(http, endpoint, client_id, &assertion, scope)
        }
        EntraCredential::WorkloadIdentity {
            authority,
            tenant,
            client_id,
            token_file,
        } => {
            // Re-read each time: the kubelet rotates the projected token.
            let assertion = std::fs::read_to_string(token_file)
                .map_err(|e| format!("reading the federated token {token_file}: {e}"))?;
            let endpoint = token_endpoint(authority, tenant);
            assertion_request(http, endpoint, client_id, assertion.trim(), scope)
        }
    };
    let response = request
        .send()
        .await
        .map_err(|e| format!("Entra ID token request: {}", error_chain(&e)))?;
    let token: TokenResponse = token_answer(response, "the Entra ID token request").await?;
    // Entra answers expires_in as a number, IMDS as a string.
    let expires_in = token
        .expires_in
        .and_then(|v| v.as_u64().or_else(|| v.as_str()?.parse().ok()));
    Ok(Token {
        value: token.access_token,
        expires: auth::expiry(expires_in),
    })
}

/// IMDS names the resource, not a scope: `https://storage.azure.com/.default` is
/// `https://storage.azure.com`.
fn managed_identity_request(
    http: &reqwest::Client,
    client_id: Option<&str>,
    scope: &str,
) -> reqwest::RequestBuilder {
    let resource = scope.strip_suffix("/.default").unwrap_or(scope);
    let mut url = format!(
        "{IMDS_TOKEN_URL}?api-version=2018-02-01&resource={}",
        uri_encode(resource, false)
    );
    if let Some(id) = client_id {
        url.push_str(&format!("&client_id={}", uri_encode(id, false)));
    }
    http.get(url)
        .header("Metadata", "true")
        .timeout(std::time::Duration::from_secs(5))
}

/// The client-credentials grant with a signed client assertion (certificate, federated token).
fn assertion_request(
    http: &reqwest::Client,
    endpoint: String,
    client_id: &str,
    assertion: &str,
    scope: &str,
) -> reqwest::RequestBuilder {
    http.post(endpoint).form(&[
        ("grant_type", "client_credentials"),
        ("client_id", client_id),
        (
            "client_assertion_type",
            "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        ),
        ("client_assertion", assertion),
        ("scope", scope),
    ])
}

fn token_endpoint(authority: &str, tenant: &str) -> String {
    format!(
        "{}/{tenant}/oauth2/v2.0/token",
        authority.trim_end_matches('/')
    )
}

/// A client assertion signed with the certificate's key, naming the certificate by its
/// SHA-1 thumbprint (`x5t`), and with the chain (`x5c`) when asked to send it.
fn certificate_assertion(
    audience: &str,
    client_id: &str,
    pem: &str,
    send_chain: bool,
) -> Result<String, String> {
    let certs = pem_blocks(pem, "CERTIFICATE");
    let leaf = certs
        .first()
        .ok_or("clientCertificate holds no certificate")?;
    let thumbprint = digest::digest(&digest::SHA1_FOR_LEGACY_USE_ONLY, leaf);
    let mut header = serde_json::json!({
        "alg": "RS256",
        "typ": "JWT",
        "x5t": URL_SAFE_NO_PAD.encode(thumbprint.as_ref()),
    });
    if send_chain {
        header["x5c"] = certs.iter().map(|c| STANDARD.encode(c)).collect();
    }
    let now = auth::unix_now();
    rs256_jwt(
        &rsa_key(pem)?,
        &header,
        &serde_json::json!({
            "aud": audience,
            "iss": client_id,
            "sub": client_id,
            "jti": hex::encode(rand::random::<[u8; 16]>()),
            "nbf": now,
            "exp": now + 600,
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(annotations: serde_json::Value) -> ServiceAccount {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "app", "namespace": "team", "annotations": annotations}
        }))
        .unwrap()
    }

    async fn identity() -> Identity {
        // A client that is never used: reading annotations needs no API server.
        let config = kube::Config::new("http://127.0.0.1:9".parse().unwrap());
        Identity {
            client: kube::Client::try_from(config).unwrap(),
            namespace: "team".into(),
            name: "app".into(),
        }
    }

    /// Flux checks the tenant first, and names each missing annotation.
    #[tokio::test]
    async fn service_account_identities_need_both_annotations() {
        let err = EntraCredential::for_service_account(
            identity().await,
            &sa(serde_json::json!({"azure.workload.identity/client-id": "c"})),
        )
        .err()
        .unwrap();
        assert_eq!(
            err,
            "failed to get provider identity from service account 'team/app' annotations: azure tenant ID is not set in the service account annotation azure.workload.identity/tenant-id"
        );
        let err = EntraCredential::for_service_account(
            identity().await,
            &sa(serde_json::json!({"azure.workload.identity/tenant-id": "t"})),
        )
        .err()
        .unwrap();
        assert!(
            err.ends_with("azure client ID is not set in the service account annotation azure.workload.identity/client-id"),
            "{err}"
        );
        let ok = EntraCredential::for_service_account(
            identity().await,
            &sa(
                serde_json::json!({"azure.workload.identity/tenant-id": "t", "azure.workload.identity/client-id": "c"}),
            ),
        );
        assert!(matches!(
            ok,
            Ok(EntraCredential::ObjectWorkloadIdentity { ref tenant, ref client_id, .. }) if tenant == "t" && client_id == "c"
        ));
    }

    #[test]
    fn tokens_of_one_identity_are_kept_apart_per_scope() {
        let credential = EntraCredential::ManagedIdentity { client_id: None };
        assert_ne!(
            credential.cache_key("https://storage.azure.com/.default"),
            credential.cache_key("https://containerregistry.azure.net/.default")
        );
    }
}
