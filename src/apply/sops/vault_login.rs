//! OpenBao/Vault Kubernetes auth for transit keys (Flux 2.10): a ServiceAccount token, issued
//! for the Vault address it goes to, is exchanged at a JWT-backed login path (the Kubernetes or
//! JWT auth method) for a short-lived Vault token.
//!
//! Two ways to configure it, as in Flux: the decryption ServiceAccount's `transit-engine`
//! annotations (login path and role; they win), or the operator's `--sops-vault-configmap`,
//! whose instances are the only addresses logged in to this way, each with its login path,
//! the role being `{namespace}_{name}` of the ServiceAccount. The token is the decryption
//! ServiceAccount's, else the controller's own: the latter only ever reaches addresses the
//! operator listed.

use std::collections::{BTreeMap, HashMap};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use k8s_openapi::api::core::v1::{ConfigMap, ServiceAccount};
use kube::{Api, Client};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::{Mutex, OnceCell};

use crate::controller::objects::kube_message;
use crate::identity::auth::json_answer;
use crate::identity::sa_token::{AUDIENCES, PROVIDER};
use crate::identity::workload::{Identity, annotation};

pub const LOGIN_PATH: &str = "transit-engine.auth.fluxcd.io/login-path";
pub const ROLE: &str = "transit-engine.auth.fluxcd.io/role";
const CONFIG_KEY: &str = "config.yaml";
/// Where a pod finds its own ServiceAccount token (overridable for a controller run outside a
/// pod, whose "own" ServiceAccount is then the one that file's token names).
const OWN_TOKEN_FILE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/token";
const OWN_TOKEN_FILE_ENV: &str = "DRIFTLESS_SERVICE_ACCOUNT_TOKEN_FILE";

/// `--sops-vault-configmap`: a ConfigMap in the controller's namespace.
#[derive(Debug, Clone)]
pub struct VaultConfigMap {
    pub namespace: String,
    pub name: String,
}

/// How one Kustomization logs in to Vault during one reconcile; Vault tokens are kept per
/// address for that reconcile only (as Flux does).
pub struct VaultLogin {
    /// Whose token is exchanged, or why it is not known.
    account: Result<Identity, String>,
    /// `credential.auth.fluxcd.io/audiences` of the decryption ServiceAccount; else the address.
    audiences: Option<Vec<String>>,
    /// Or why the ServiceAccount's annotations name no usable login (reported when a Vault key
    /// is tried, so that a Kustomization without Vault keys is not held up by it).
    rule: Result<LoginRule, String>,
    tokens: Mutex<HashMap<String, String>>,
}

enum LoginRule {
    /// The decryption ServiceAccount's `transit-engine` annotations.
    Annotated { login_path: String, role: String },
    /// The operator's ConfigMap, read on first use.
    Listed {
        client: Client,
        configmap: VaultConfigMap,
        paths: OnceCell<BTreeMap<String, String>>,
    },
}

#[derive(Deserialize, Default)]
struct VaultConfig {
    #[serde(default)]
    instances: Vec<VaultInstance>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct VaultInstance {
    #[serde(default)]
    address: String,
    #[serde(default)]
    login_path: String,
}

impl VaultLogin {
    /// The login of a Kustomization whose decryption ServiceAccount is `borrowed` (if any):
    /// by its annotations, else by the operator's ConfigMap, else none (static tokens only).
    pub fn of(
        client: &Client,
        borrowed: Option<&(Identity, ServiceAccount)>,
        configmap: Option<&VaultConfigMap>,
    ) -> Option<VaultLogin> {
        let sa = borrowed.map(|(_, sa)| sa);
        let rule = match (sa.and_then(|sa| annotation(sa, LOGIN_PATH)), configmap) {
            (Some(login_path), _) => sa
                .and_then(|sa| annotation(sa, ROLE))
                .ok_or_else(|| format!("the '{ROLE}' annotation is required with '{LOGIN_PATH}'"))
                .and_then(|role| {
                    check_login_path(&login_path)?;
                    Ok(LoginRule::Annotated { login_path, role })
                }),
            (None, Some(configmap)) => Ok(LoginRule::Listed {
                client: client.clone(),
                configmap: configmap.clone(),
                paths: OnceCell::new(),
            }),
            (None, None) => return None,
        };
        // Flux 2.10 may also present a SPIFFE JWT-SVID here; driftless has no SPIFFE yet, and a
        // Kubernetes token in its place would be a silent substitution.
        let rule = match sa.and_then(|sa| annotation(sa, PROVIDER)).as_deref() {
            None | Some("kubernetes") => rule,
            Some(other) => Err(format!(
                "credential provider '{other}' ({PROVIDER}) is not supported for Vault authentication by driftless: only 'kubernetes'"
            )),
        };
        let account = match borrowed {
            Some((identity, _)) => Ok(identity.clone()),
            None => own_account(client),
        };
        let audiences = sa.and_then(|sa| annotation(sa, AUDIENCES)).map(|list| {
            list.split(',')
                .map(str::trim)
                .filter(|a| !a.is_empty())
                .map(str::to_string)
                .collect()
        });
        Some(VaultLogin {
            account,
            audiences,
            rule,
            tokens: Mutex::new(HashMap::new()),
        })
    }

    /// The login path for `address`, or `None` when the operator's ConfigMap does not list it.
    pub async fn login_path(&self, address: &str) -> Result<Option<String>, String> {
        match self.rule.as_ref().map_err(Clone::clone)? {
            LoginRule::Annotated { login_path, .. } => Ok(Some(login_path.clone())),
            LoginRule::Listed {
                client,
                configmap,
                paths,
            } => {
                let paths = paths
                    .get_or_try_init(|| load_login_paths(client, configmap))
                    .await?;
                Ok(paths.get(address).filter(|p| !p.is_empty()).cloned())
            }
        }
    }

    /// Flux's refusal of an address the ConfigMap does not list.
    pub fn unlisted(&self, address: &str) -> String {
        match &self.rule {
            Ok(LoginRule::Listed { configmap, .. }) => format!(
                "no Vault login path configured for address '{address}' in ConfigMap '{}/{}'",
                configmap.namespace, configmap.name
            ),
            Ok(LoginRule::Annotated { .. }) => format!("no Vault login path for '{address}'"),
            Err(why) => why.clone(),
        }
    }

    /// A Vault token for `address` (which has a login path), logging in on first use.
    pub async fn token(
        &self,
        http: &reqwest::Client,
        address: &str,
        login_path: &str,
    ) -> Result<String, String> {
        let mut tokens = self.tokens.lock().await;
        if let Some(token) = tokens.get(address) {
            return Ok(token.clone());
        }
        // The address is checked before a token is issued for it.
        let url = login_url(address, login_path)?;
        let jwt = self.service_account_token(address).await?;
        let role = match self.rule.as_ref().map_err(Clone::clone)? {
            LoginRule::Annotated { role, .. } => role.clone(),
            LoginRule::Listed { .. } => role_of(&jwt)
                .map_err(|e| format!("failed to derive Vault role for authentication: {e}"))?,
        };
        let token = login(http, url, address, login_path, &role, &jwt).await?;
        tokens.insert(address.to_string(), token.clone());
        Ok(token)
    }

    async fn service_account_token(&self, address: &str) -> Result<String, String> {
        let account = self.account.as_ref().map_err(Clone::clone)?;
        let audiences = match &self.audiences {
            Some(list) if !list.is_empty() => list.clone(),
            _ => vec![address.to_string()],
        };
        account
            .issue(&audiences, None)
            .await
            .map(|(token, _)| token)
            .map_err(|e| {
                format!("failed to issue Kubernetes credential for Vault authentication: {e}")
            })
    }
}

/// The controller's own ServiceAccount, named by the `sub` of its token file.
fn own_account(client: &Client) -> Result<Identity, String> {
    let path = std::env::var(OWN_TOKEN_FILE_ENV)
        .ok()
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| OWN_TOKEN_FILE.to_string());
    let token = std::fs::read_to_string(&path).map_err(|e| {
        format!(
            "the controller's own ServiceAccount is unknown: cannot read its token '{path}': {e}"
        )
    })?;
    let (namespace, name) = service_account_of(token.trim())
        .map_err(|e| format!("the controller's own ServiceAccount is unknown: {e}"))?;
    Ok(Identity {
        client: client.clone(),
        namespace,
        name,
    })
}

async fn load_login_paths(
    client: &Client,
    configmap: &VaultConfigMap,
) -> Result<BTreeMap<String, String>, String> {
    let VaultConfigMap { namespace, name } = configmap;
    let found = Api::<ConfigMap>::namespaced(client.clone(), namespace)
        .get(name)
        .await
        .map_err(|e| {
            format!(
                "failed to get Vault ConfigMap '{namespace}/{name}': {}",
                kube_message(&e)
            )
        })?;
    let data = found
        .data
        .as_ref()
        .and_then(|d| d.get(CONFIG_KEY))
        .ok_or_else(|| {
            format!("Vault ConfigMap '{namespace}/{name}' is missing the '{CONFIG_KEY}' key")
        })?;
    login_paths(data).map_err(|e| {
        format!("failed to parse '{CONFIG_KEY}' in Vault ConfigMap '{namespace}/{name}': {e}")
    })
}

/// `config.yaml`'s instances: address → login path (each path checked).
fn login_paths(config: &str) -> Result<BTreeMap<String, String>, String> {
    // sigs.k8s.io/yaml, as Flux reads it.
    let document = crate::apply::yaml::document(
        config,
        &mut crate::apply::yaml::Budget::default(),
        crate::apply::yaml::Dialect::SigsYaml,
    )
    .map_err(|e| e.to_string())?;
    let config: VaultConfig = match document {
        serde_json::Value::Null => VaultConfig::default(),
        document => serde_json::from_value(document).map_err(|e| e.to_string())?,
    };
    let mut paths = BTreeMap::new();
    for instance in config.instances {
        if !instance.login_path.is_empty() {
            check_login_path(&instance.login_path)?;
        }
        if paths
            .insert(instance.address.clone(), instance.login_path)
            .is_some()
        {
            return Err(format!(
                "the address '{}' is listed twice",
                instance.address
            ));
        }
    }
    Ok(paths)
}

/// A login path is taken verbatim (it may carry Vault namespaces, `ns1/ns2/auth/k8s/login`),
/// but only as plain path segments: a token never goes to a query or another endpoint.
fn check_login_path(path: &str) -> Result<(), String> {
    let plain = path.trim_matches('/').split('/').all(is_vault_segment);
    if plain {
        Ok(())
    } else {
        Err(format!(
            "the Vault login path '{path}' must be plain path segments (letters, digits, '-', '_', '.')"
        ))
    }
}

/// One segment of a Vault API path: no `.`/`..`, nothing that ends the path.
pub(super) fn is_vault_segment(segment: &str) -> bool {
    !segment.is_empty()
        && !matches!(segment, "." | "..")
        && segment
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// The role of the ConfigMap way: `{namespace}_{name}` of the token's ServiceAccount.
fn role_of(jwt: &str) -> Result<String, String> {
    service_account_of(jwt).map(|(namespace, name)| format!("{namespace}_{name}"))
}

/// Namespace and name from a ServiceAccount token's `sub`
/// (`system:serviceaccount:<namespace>:<name>`).
fn service_account_of(jwt: &str) -> Result<(String, String), String> {
    let mut parts = jwt.split('.');
    let (Some(_), Some(payload), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("not a JWT".into());
    };
    let payload = URL_SAFE_NO_PAD
        .decode(payload)
        .map_err(|e| format!("failed to decode token payload: {e}"))?;
    let claims: serde_json::Value = serde_json::from_slice(&payload)
        .map_err(|e| format!("failed to unmarshal token payload: {e}"))?;
    let subject = claims["sub"].as_str().unwrap_or_default();
    subject
        .strip_prefix("system:serviceaccount:")
        .and_then(|rest| rest.split_once(':'))
        .filter(|(ns, name)| !ns.is_empty() && !name.is_empty())
        .map(|(ns, name)| (ns.to_string(), name.to_string()))
        .ok_or_else(|| format!("unexpected token subject '{subject}'"))
}

/// `<address>/v1/<login path>`.
fn login_url(address: &str, login_path: &str) -> Result<reqwest::Url, String> {
    let failed =
        |e: &str| format!("failed to create Vault client for '{address}': the address is not {e}");
    let mut url = reqwest::Url::parse(address).map_err(|_| failed("a URL"))?;
    url.set_query(None);
    url.set_fragment(None);
    url.path_segments_mut()
        .map_err(|_| failed("a URL with a path"))?
        .pop_if_empty()
        .push("v1")
        .extend(login_path.trim_matches('/').split('/'));
    Ok(url)
}

/// `PUT <url>` with the role and the JWT; the answer's client token.
async fn login(
    http: &reqwest::Client,
    url: reqwest::Url,
    address: &str,
    login_path: &str,
    role: &str,
    jwt: &str,
) -> Result<String, String> {
    let failed = |e: String| {
        format!(
            "failed to authenticate with Vault '{address}' at login path '{login_path}' as role '{role}': {e}"
        )
    };
    let mut request = http
        .put(url)
        .header("X-Vault-Request", "true")
        .json(&json!({"role": role, "jwt": jwt}));
    if let Ok(namespace) = std::env::var("VAULT_NAMESPACE")
        && !namespace.is_empty()
    {
        request = request.header("X-Vault-Namespace", namespace);
    }
    let answer = json_answer(request).await.map_err(failed)?;
    answer["auth"]["client_token"]
        .as_str()
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .ok_or_else(|| {
            format!(
                "Vault '{address}' returned no token for login at '{login_path}' as role '{role}'"
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(claims: serde_json::Value) -> String {
        format!(
            "e30.{}.c2ln",
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap())
        )
    }

    #[test]
    fn the_role_comes_from_the_token_subject() {
        let token = jwt(json!({"sub": "system:serviceaccount:apps:sops"}));
        assert_eq!(role_of(&token).unwrap(), "apps_sops");
        for (bad, why) in [
            ("a.b".to_string(), "not a JWT"),
            ("a.!!.c".to_string(), "failed to decode token payload"),
            (
                format!("a.{}.c", URL_SAFE_NO_PAD.encode("[")),
                "failed to unmarshal",
            ),
            (
                jwt(json!({"sub": "spiffe://example.org/x"})),
                "unexpected token subject 'spiffe://example.org/x'",
            ),
            (
                jwt(json!({"sub": "system:serviceaccount::sops"})),
                "unexpected token subject",
            ),
            (
                jwt(json!({"sub": "system:serviceaccount:apps"})),
                "unexpected token subject",
            ),
        ] {
            let e = role_of(&bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn the_configmap_lists_addresses_and_their_login_paths() {
        let paths = login_paths(
            "instances:\n  - address: https://vault-a.example.com:8200\n    loginPath: auth/kubernetes/login\n  - address: https://vault-b.example.com:8200\n    loginPath: ns1/ns2/auth/kubernetes/login\n",
        )
        .unwrap();
        assert_eq!(
            paths["https://vault-b.example.com:8200"],
            "ns1/ns2/auth/kubernetes/login"
        );
        assert_eq!(paths.len(), 2);
        assert!(login_paths("instances: [").is_err());
        let twice = login_paths(
            "instances:\n  - address: https://v\n    loginPath: a/login\n  - address: https://v\n    loginPath: b/login\n",
        )
        .unwrap_err();
        assert!(twice.contains("listed twice"), "{twice}");
        assert!(login_paths("").unwrap().is_empty());
        let e = login_paths("instances:\n  - address: https://v\n    loginPath: auth/../sys/x\n")
            .unwrap_err();
        assert!(e.contains("plain path segments"), "{e}");
    }

    #[tokio::test]
    async fn only_the_kubernetes_credential_provider_logs_in() {
        let client =
            Client::try_from(kube::Config::new("https://127.0.0.1:9".parse().unwrap())).unwrap();
        let login = |provider: Option<&str>| {
            let mut annotations = serde_json::json!({LOGIN_PATH: "auth/jwt/login", ROLE: "r"});
            if let Some(p) = provider {
                annotations[PROVIDER] = json!(p);
            }
            let sa: ServiceAccount = serde_json::from_value(
                json!({"metadata": {"name": "sops", "annotations": annotations}}),
            )
            .unwrap();
            let identity = Identity {
                client: client.clone(),
                namespace: "apps".into(),
                name: "sops".into(),
            };
            VaultLogin::of(&client, Some(&(identity, sa)), None).unwrap()
        };
        for ok in [None, Some("kubernetes")] {
            assert!(login(ok).rule.is_ok(), "{ok:?}");
        }
        let refused = login(Some("spiffe")).unlisted("https://vault");
        assert!(
            refused.contains("credential provider 'spiffe'"),
            "{refused}"
        );
    }

    #[test]
    fn login_paths_are_plain_segments() {
        for good in [
            "auth/kubernetes/login",
            "ns1/ns2/auth/jwt/login",
            "/auth/k8s-a/login/",
        ] {
            assert!(check_login_path(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "auth/../token/create",
            "auth/kubernetes/login?x=1",
            "auth//login",
            "auth/kubernetes/login#a",
            "auth/%2e%2e/x",
        ] {
            assert!(check_login_path(bad).is_err(), "{bad}");
        }
    }
}
