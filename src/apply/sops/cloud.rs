//! Azure Key Vault, GCP Cloud KMS and Vault/OpenBao transit master keys: each holds the data key
//! (or a Shamir share of it) encrypted by the service, and `decrypt` asks the service for it
//! with the credential Flux would use: the decryption Secret's entry, else the object's
//! ServiceAccount identity, else the controller's own.
//!
//! Where a file (tenant input) names the service's address, the credential goes only where it
//! belongs: Entra ID tokens only to Key Vault hosts of the token's own cloud over HTTPS (the
//! rule Azure's SDK enforces through its challenge), Google tokens only to Cloud KMS, and the
//! controller's own Vault token only to addresses the operator allowed.

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::{Value, json};
use zeroize::Zeroizing;

use crate::identity::auth::{self, json_answer};
use crate::identity::entra::{self, EntraCredential};
use crate::identity::google::{self, GoogleCredential};

use super::vault_login::{VaultLogin, is_vault_segment};

const KEY_VAULT_API_VERSION: &str = "2025-07-01";
const GCP_KMS_SCOPES: &[&str] = &[
    "https://www.googleapis.com/auth/cloud-platform",
    "https://www.googleapis.com/auth/cloudkms",
];

/// Key Vault and Managed HSM host suffixes, and the Entra ID resource of each.
const KEY_VAULT_CLOUDS: &[(&str, &str)] = &[
    (".vault.azure.net", "https://vault.azure.net"),
    (".vault.azure.cn", "https://vault.azure.cn"),
    (
        ".vault.usgovcloudapi.net",
        "https://vault.usgovcloudapi.net",
    ),
    (".managedhsm.azure.net", "https://managedhsm.azure.net"),
    (".managedhsm.azure.cn", "https://managedhsm.azure.cn"),
    (
        ".managedhsm.usgovcloudapi.net",
        "https://managedhsm.usgovcloudapi.net",
    ),
];

/// A `sops.azure-kv` entry (JSON or YAML): a service principal with a secret
/// (`tenantId`, `clientId`, `clientSecret`, or the `az` shape `tenant`, `appId`, `password`) or
/// a certificate (`clientCertificate`, PEM), or a user-assigned managed identity (`clientId`
/// alone); `authorityHost` for other clouds. Flux's precedence and messages.
pub fn azure_credential(entry: &[u8]) -> Result<EntraCredential, String> {
    let value = entry_document(entry)?;
    let field = |name: &str| {
        value
            .as_object()
            .and_then(|o| o.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)))
            .and_then(|(_, v)| v.as_str())
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_string)
    };
    let authority = field("authorityHost").unwrap_or_else(entra::authority_host);
    match (field("tenantId"), field("clientId")) {
        (Some(tenant), Some(client_id)) => {
            if let Some(secret) = field("clientSecret") {
                return Ok(EntraCredential::ClientSecret {
                    authority,
                    tenant,
                    client_id,
                    secret,
                });
            }
            if let Some(pem) = field("clientCertificate") {
                if field("clientCertificatePassword").is_some() {
                    return Err("password-protected client certificates are not supported: store the certificate with an unencrypted key".into());
                }
                auth::rsa_key(&pem).map_err(|e| format!("clientCertificate: {e}"))?;
                return Ok(EntraCredential::ClientCertificate {
                    authority,
                    tenant,
                    client_id,
                    pem,
                    send_chain: value["clientCertificateSendChain"] == json!(true)
                        || field("clientCertificateSendChain").as_deref() == Some("true"),
                });
            }
            Err("invalid data: requires 'clientSecret' or 'clientCertificate' when both 'tenantId' and 'clientId' are set".into())
        }
        _ => match (field("tenant"), field("appId"), field("password"), field("clientId")) {
            (Some(tenant), Some(client_id), Some(secret), _) => Ok(EntraCredential::ClientSecret {
                authority,
                tenant,
                client_id,
                secret,
            }),
            (_, _, _, Some(client_id)) => Ok(EntraCredential::ManagedIdentity {
                client_id: Some(client_id),
            }),
            _ => Err("invalid data: requires a 'clientId' field, a combination of 'tenantId', 'clientId' and 'clientSecret', or 'tenantId', 'clientId' and 'clientCertificate'".into()),
        },
    }
}

/// A `sops.gcp-kms` entry: a service account's JSON key. Other credential types are refused:
/// an `external_account` names files and URLs the controller would read and call with its own
/// network position.
pub fn gcp_credential(entry: &[u8]) -> Result<GoogleCredential, String> {
    let text = std::str::from_utf8(entry).map_err(|_| "not text".to_string())?;
    let value: Value =
        serde_json::from_str(text.trim_matches('\n')).map_err(|e| format!("invalid JSON: {e}"))?;
    match value["type"].as_str() {
        None | Some("service_account") => {
            google::ServiceAccountKey::parse(text.trim_matches('\n').as_bytes())
                .map(GoogleCredential::ServiceAccount)
        }
        Some(other) => Err(format!(
            "credentials of type {other:?} are not accepted from a Secret: use a service_account key, or the object's or controller's workload identity"
        )),
    }
}

/// A `sops.vault-token` entry: the token, trimmed.
pub fn vault_token(entry: &[u8]) -> Result<String, String> {
    let token = std::str::from_utf8(entry)
        .map_err(|_| "not text".to_string())?
        .trim()
        .to_string();
    if token.is_empty() {
        return Err("the token is empty".into());
    }
    Ok(token)
}

fn entry_document(entry: &[u8]) -> Result<Value, String> {
    let text = std::str::from_utf8(entry.strip_prefix(b"\xef\xbb\xbf").unwrap_or(entry))
        .map_err(|_| "not UTF-8 text".to_string())?;
    crate::apply::yaml::document(
        text,
        &mut crate::apply::yaml::Budget::default(),
        crate::apply::yaml::Dialect::SigsYaml,
    )
    .map_err(|e| e.to_string())
}

/// The Entra ID resource whose token a Key Vault at `vault_url` takes; the URL must be an HTTPS
/// Key Vault or Managed HSM host.
pub fn key_vault_resource(vault_url: &str) -> Result<&'static str, String> {
    let url = reqwest::Url::parse(vault_url)
        .map_err(|e| format!("the Key Vault URL '{vault_url}' is not a URL: {e}"))?;
    let host = url.host_str().unwrap_or_default().to_ascii_lowercase();
    let cloud = KEY_VAULT_CLOUDS
        .iter()
        .find(|(suffix, _)| host.ends_with(suffix) && host.len() > suffix.len());
    match (url.scheme(), cloud) {
        ("https", Some((_, resource))) => Ok(resource),
        _ => Err(format!(
            "the Key Vault URL '{vault_url}' is not an HTTPS Azure Key Vault or Managed HSM address (*.vault.azure.net and the other clouds' equivalents): no Entra ID token is sent there"
        )),
    }
}

/// Key Vault `decrypt` with RSA-OAEP-256 of `enc` (base64url without padding).
pub async fn azure_decrypt(
    http: &reqwest::Client,
    credential: &EntraCredential,
    vault_url: &str,
    name: &str,
    version: &str,
    enc: &str,
) -> Result<Zeroizing<Vec<u8>>, String> {
    let resource = key_vault_resource(vault_url)?;
    let key = format!("{}/keys/{name}/{version}", vault_url.trim_end_matches('/'));
    let failed = |e: String| {
        format!("failed to decrypt sops data key with Azure Key Vault key '{key}': {e}")
    };
    let token = entra::access_token(http, credential, &format!("{resource}/.default"))
        .await
        .map_err(|e| format!("failed to get Azure token credential to decrypt: {e}"))?;
    let url = format!(
        "{}/keys/{}/{}/decrypt?api-version={KEY_VAULT_API_VERSION}",
        vault_url.trim_end_matches('/'),
        crate::util::uri_encode(name, false),
        crate::util::uri_encode(version, false),
    );
    let answer = json_answer(
        http.post(url)
            .bearer_auth(token)
            .json(&json!({"alg": "RSA-OAEP-256", "value": enc})),
    )
    .await
    .map_err(failed)?;
    let value = answer["value"]
        .as_str()
        .ok_or_else(|| failed("the answer has no value".into()))?;
    URL_SAFE_NO_PAD
        .decode(value.trim_end_matches('='))
        .map(Zeroizing::new)
        .map_err(|_| failed("the answer's value is not base64url".into()))
}

/// `projects/<p>/locations/<l>/keyRings/<r>/cryptoKeys/<k>`, as sops checks it.
pub fn gcp_resource_id(resource: &str) -> Result<(), String> {
    let parts: Vec<&str> = resource.split('/').collect();
    let ok = matches!(
        parts.as_slice(),
        ["projects", p, "locations", l, "keyRings", r, "cryptoKeys", k]
            if [p, l, r, k].iter().all(|s| !s.is_empty())
    );
    ok.then_some(()).ok_or_else(|| {
        format!("cannot create GCP KMS service: no valid resource ID found in \"{resource}\"")
    })
}

/// Cloud KMS `decrypt` (REST) of `enc` (standard base64). The endpoint is Google's, or the
/// operator's `SOPS_GCP_KMS_ENDPOINT` (sops's own variable): never one a file names.
pub async fn gcp_decrypt(
    http: &reqwest::Client,
    credential: &GoogleCredential,
    resource: &str,
    enc: &str,
) -> Result<Zeroizing<Vec<u8>>, String> {
    gcp_resource_id(resource)?;
    let failed = |e: String| format!("failed to decrypt sops data key with GCP KMS key: {e}");
    let ciphertext = STANDARD
        .decode(enc)
        .map_err(|e| failed(format!("the key's enc is not base64: {e}")))?;
    let endpoint = std::env::var("SOPS_GCP_KMS_ENDPOINT")
        .ok()
        .filter(|e| !e.is_empty())
        .unwrap_or_else(|| "https://cloudkms.googleapis.com".into());
    let token = google::access_token(http, credential, GCP_KMS_SCOPES)
        .await
        .map_err(failed)?;
    let answer = json_answer(
        http.post(format!(
            "{}/v1/{resource}:decrypt",
            endpoint.trim_end_matches('/')
        ))
        .bearer_auth(token)
        .header(
            "x-goog-request-params",
            format!("name={}", crate::util::uri_encode(resource, false)),
        )
        .json(&json!({"name": resource, "ciphertext": STANDARD.encode(ciphertext)})),
    )
    .await
    .map_err(failed)?;
    let plaintext = answer["plaintext"]
        .as_str()
        .ok_or_else(|| failed("the answer has no plaintext".into()))?;
    STANDARD
        .decode(plaintext)
        .or_else(|_| URL_SAFE_NO_PAD.decode(plaintext.trim_end_matches('=')))
        .map(Zeroizing::new)
        .map_err(|_| failed("the answer's plaintext is not base64".into()))
}

/// Whose Vault token a request carries: the Secret's may go to the address its file names; the
/// controller's (`VAULT_TOKEN`) only to addresses `SOPS_HC_VAULT_ALLOWLIST` lists (comma-separated
/// URL prefixes), none by default; one from a Kubernetes auth login only to the address it was
/// issued by (for an address the operator's ConfigMap does not list, the controller's token if
/// the allow-list lets it go there, as Flux's documentation says).
#[derive(Clone)]
pub enum VaultToken {
    Secret(String),
    Controller(String),
    Login {
        login: Arc<VaultLogin>,
        controller: Option<String>,
    },
}

impl VaultToken {
    pub fn from_environment() -> Option<String> {
        std::env::var("VAULT_TOKEN")
            .ok()
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty())
    }

    async fn for_address(&self, http: &reqwest::Client, address: &str) -> Result<String, String> {
        match self {
            VaultToken::Secret(token) => Ok(token.clone()),
            VaultToken::Controller(token) => controller_token(token, address),
            VaultToken::Login { login, controller } => {
                match (login.login_path(address).await?, controller) {
                    (Some(path), _) => login.token(http, address, &path).await,
                    (None, Some(token)) => controller_token(token, address)
                        .map_err(|e| format!("{}; {e}", login.unlisted(address))),
                    (None, None) => Err(login.unlisted(address)),
                }
            }
        }
    }
}

fn controller_token(token: &str, address: &str) -> Result<String, String> {
    let allowed = std::env::var("SOPS_HC_VAULT_ALLOWLIST").unwrap_or_default();
    if vault_allowed(&allowed, address) {
        Ok(token.to_string())
    } else {
        Err(format!(
            "the controller's own Vault token (VAULT_TOKEN) is sent only to addresses SOPS_HC_VAULT_ALLOWLIST lists, and it does not list '{address}': give the Kustomization a sops.vault-token entry"
        ))
    }
}

/// Whether `address` starts with one of the allow-list's URL prefixes (each ending in `/`).
fn vault_allowed(list: &str, address: &str) -> bool {
    let address = format!("{}/", address.trim_end_matches('/'));
    list.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .any(|prefix| address.starts_with(&format!("{}/", prefix.trim_end_matches('/'))))
}

/// Vault transit `decrypt` of `enc` (`vault:v1:…`) at `<address>/v1/<engine>/decrypt/<key>`.
pub async fn vault_decrypt(
    http: &reqwest::Client,
    token: &VaultToken,
    address: &str,
    engine_path: &str,
    key_name: &str,
    enc: &str,
) -> Result<Zeroizing<Vec<u8>>, String> {
    let backend = format!("{}/decrypt/{key_name}", engine_path.trim_matches('/'));
    let failed = |e: String| {
        format!("failed to decrypt sops data key from Vault transit backend '{backend}': {e}")
    };
    // The file names the engine and key: each stays a path segment under the engine's own
    // path, so a token is never sent to another Vault endpoint (`../../auth/token/revoke-self`).
    let segments: Vec<&str> = engine_path.trim_matches('/').split('/').collect();
    if !segments
        .iter()
        .chain(std::iter::once(&key_name))
        .all(|s| is_vault_segment(s))
    {
        return Err(failed(
            "the engine path and key name must be plain path segments (letters, digits, '-', '_', '.')".into(),
        ));
    }
    let token = token.for_address(http, address).await?;
    let mut url = reqwest::Url::parse(address)
        .map_err(|e| failed(format!("the address '{address}' is not a URL: {e}")))?;
    url.set_query(None);
    url.set_fragment(None);
    url.path_segments_mut()
        .map_err(|_| failed(format!("the address '{address}' is not a URL with a path")))?
        .pop_if_empty()
        .push("v1")
        .extend(segments.iter().copied())
        .push("decrypt")
        .push(key_name);
    let mut request = http
        .put(url)
        .header("X-Vault-Token", token.as_str())
        .header("X-Vault-Request", "true")
        .json(&json!({"ciphertext": enc}));
    if let Ok(namespace) = std::env::var("VAULT_NAMESPACE")
        && !namespace.is_empty()
    {
        request = request.header("X-Vault-Namespace", namespace);
    }
    let answer = json_answer(request).await.map_err(failed)?;
    let plaintext = answer["data"]["plaintext"]
        .as_str()
        .ok_or_else(|| failed("no decrypted data".into()))?;
    STANDARD
        .decode(plaintext)
        .map(Zeroizing::new)
        .map_err(|_| failed("cannot decode base64 plaintext into data key bytes".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn azure_entries_follow_fluxs_shapes() {
        let c = azure_credential(br#"{"tenantId": "t", "clientId": "c", "clientSecret": "s"}"#)
            .unwrap();
        assert!(
            matches!(c, EntraCredential::ClientSecret { tenant, client_id, .. } if tenant == "t" && client_id == "c")
        );
        let c = azure_credential(b"appId: a\ntenant: t\npassword: p\ndisplayName: x\n").unwrap();
        assert!(matches!(c, EntraCredential::ClientSecret { client_id, .. } if client_id == "a"));
        let c = azure_credential(br#"{"clientId": "mi"}"#).unwrap();
        assert!(
            matches!(c, EntraCredential::ManagedIdentity { client_id: Some(id) } if id == "mi")
        );
        let e = azure_credential(br#"{"tenantId": "t", "clientId": "c"}"#)
            .err()
            .unwrap();
        assert!(
            e.contains("requires 'clientSecret' or 'clientCertificate'"),
            "{e}"
        );
        let e = azure_credential(b"{}").err().unwrap();
        assert!(
            e.starts_with("invalid data: requires a 'clientId' field"),
            "{e}"
        );
    }

    #[test]
    fn entra_tokens_go_only_to_key_vaults_of_their_cloud() {
        assert_eq!(
            key_vault_resource("https://team.vault.azure.net").unwrap(),
            "https://vault.azure.net"
        );
        assert_eq!(
            key_vault_resource("https://hsm.managedhsm.azure.net/").unwrap(),
            "https://managedhsm.azure.net"
        );
        for bad in [
            "http://team.vault.azure.net",
            "https://vault.azure.net.attacker.example",
            "https://attacker.example/.vault.azure.net",
            "https://.vault.azure.net",
            "not a url",
        ] {
            assert!(key_vault_resource(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn gcp_entries_are_service_account_keys_only() {
        let e = gcp_credential(br#"{"type": "external_account", "credential_source": {"file": "/var/run/secrets/kubernetes.io/serviceaccount/token"}}"#)
            .err()
            .unwrap();
        assert!(e.contains("not accepted from a Secret"), "{e}");
        assert!(gcp_credential(b"not json").is_err());
        assert!(gcp_resource_id("projects/p/locations/global/keyRings/r/cryptoKeys/k").is_ok());
        assert!(
            gcp_resource_id(
                "projects/p/locations/global/keyRings/r/cryptoKeys/k/cryptoKeyVersions/1"
            )
            .is_err()
        );
        assert!(gcp_resource_id("projects//locations/l/keyRings/r/cryptoKeys/k").is_err());
    }

    #[test]
    fn the_controllers_vault_token_needs_the_allow_list() {
        assert!(vault_allowed(
            "https://vault.example:8200",
            "https://vault.example:8200"
        ));
        assert!(vault_allowed(
            "https://a, https://vault.example:8200/",
            "https://vault.example:8200/"
        ));
        assert!(!vault_allowed(
            "https://vault.example",
            "https://vault.example.attacker"
        ));
        assert!(!vault_allowed("", "https://vault.example"));
        assert!(is_vault_segment("transit") && is_vault_segment("my-key.v2"));
        for bad in ["", ".", "..", "a?b", "a#b", "a%2e", "a b"] {
            assert!(!is_vault_segment(bad), "{bad}");
        }
        let e = controller_token("s.controller", "http://anywhere").unwrap_err();
        assert!(e.contains("SOPS_HC_VAULT_ALLOWLIST") && !e.contains("s.controller"));
        assert_eq!(vault_token(b"  s.abc\n").unwrap(), "s.abc");
        assert!(vault_token(b" \n").is_err());
    }
}
