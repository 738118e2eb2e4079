//! The cluster a Kustomization applies to (Flux's `runtime/client` impersonator): the
//! controller's own, or a remote one from `spec.kubeConfig.secretRef` (or `configMapRef`,
//! `cloud_cluster`); in either, as the
//! Kustomization's ServiceAccount (`spec.serviceAccountName`, else
//! `--default-service-account`) when there is one.
//!
//! A kubeconfig in a Secret is a tenant's input. Flux copies only some of it into its client
//! (server, inline certificates and keys, token, basic auth, proxy; `exec` and
//! `insecure-skip-tls-verify` behind flags) and drops the rest without a word. Here what would
//! be dropped is refused with a message naming it: above all the fields that name files, which
//! would have the controller read its own files (its ServiceAccount token) and send them to a
//! server of the tenant's choosing.

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::client::ClientBuilder;
use kube::config::{AuthInfo, Cluster, KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};

use super::cloud_cluster::{self, BearerLayer};
use super::context::{ApplyContext, KubeconfigPolicy};
use super::ssa::Mapper;
use super::yaml;
use crate::api::kustomization::Kustomization;
use crate::controller::objects::kube_message;

/// Flux's timeout for requests to a remote cluster.
const REMOTE_TIMEOUT: Duration = Duration::from_secs(30);

/// Where a pass applies, prunes and checks health.
pub struct Target {
    pub client: Client,
    /// A remote cluster's API resources, discovered afresh for each pass (the shared mapper
    /// knows the controller's own cluster only).
    remote_mapper: Option<Mapper>,
}

impl Target {
    /// The controller's own cluster (impersonated or not), not a remote one.
    pub fn is_local(&self) -> bool {
        self.remote_mapper.is_none()
    }

    pub fn mapper<'a>(&'a self, local: &'a Mapper) -> &'a Mapper {
        self.remote_mapper.as_ref().unwrap_or(local)
    }
}

/// The client for `obj`'s target cluster.
pub async fn target(ctx: &ApplyContext, obj: &Kustomization) -> Result<Target, String> {
    let ns = obj.metadata.namespace.clone().unwrap_or_default();
    let impersonate = obj
        .spec
        .service_account_name
        .clone()
        .or_else(|| ctx.settings.default_service_account.clone())
        .map(|sa| format!("system:serviceaccount:{ns}:{sa}"));
    let kube_config = obj.spec.kube_config.as_ref();
    let secret_ref = kube_config.and_then(|k| k.secret_ref.as_ref());
    let config_map_ref = kube_config.and_then(|k| k.config_map_ref.as_ref());
    let mut bearer = None;
    let (mut config, remote) = match (secret_ref, config_map_ref) {
        (Some(r), _) => {
            let text = kubeconfig_text(&ctx.client, &ns, &r.name, r.key.as_deref()).await?;
            let config = remote_config(&text, ctx.settings.kubeconfig)
                .await
                .map_err(|e| format!("invalid kubeconfig in Secret '{ns}/{}': {e}", r.name))?;
            (config, true)
        }
        (None, Some(r)) => {
            let access = cloud_cluster::remote_access(ctx, obj, &r.name).await?;
            bearer = Some(access.bearer.clone());
            (provider_config(&access)?, true)
        }
        (None, None) if impersonate.is_none() => {
            return Ok(Target {
                client: ctx.client.clone(),
                remote_mapper: None,
            });
        }
        (None, None) => (ctx.config.clone(), false),
    };
    if let Some(user) = &impersonate {
        config.auth_info.impersonate = Some(user.clone());
    }
    let builder = ClientBuilder::try_from(config).map_err(|e| match &impersonate {
        Some(user) => format!("failed to build the client impersonating '{user}': {e}"),
        None => format!("failed to build the client for the remote cluster: {e}"),
    })?;
    let client = match bearer {
        Some(bearer) => builder.with_layer(&BearerLayer(bearer)).build(),
        None => builder.build(),
    };
    Ok(Target {
        client,
        remote_mapper: remote.then(Mapper::default),
    })
}

/// The client configuration for a cloud-resolved cluster: its server and CA, Flux's timeout,
/// no proxy; the token comes per request from the `BearerLayer`.
fn provider_config(access: &cloud_cluster::RemoteAccess) -> Result<Config, String> {
    let url = access
        .server
        .parse()
        .map_err(|e| format!("failed to parse cluster address {}: {e}", access.server))?;
    let mut config = Config::new(url);
    if let Some(pem) = &access.ca {
        let certs = pem_certificates(pem)?;
        config.root_cert = Some(certs);
    }
    config.connect_timeout = Some(REMOTE_TIMEOUT);
    config.read_timeout = Some(REMOTE_TIMEOUT);
    config.write_timeout = Some(REMOTE_TIMEOUT);
    Ok(config)
}

/// The DER certificates of a PEM bundle (`ca.crt`).
fn pem_certificates(pem: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    let certs: Vec<Vec<u8>> = x509_parser::pem::Pem::iter_from_buffer(pem)
        .map(|p| p.map(|p| p.contents).map_err(|e| format!("ca.crt: {e}")))
        .collect::<Result<_, _>>()?;
    if certs.is_empty() {
        return Err("ca.crt holds no PEM certificate".into());
    }
    Ok(certs)
}

/// The kubeconfig of a Secret: the named key, else `value`, else `value.yaml` (Flux's order
/// and messages).
async fn kubeconfig_text(
    client: &Client,
    ns: &str,
    name: &str,
    key: Option<&str>,
) -> Result<String, String> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let secret = secrets.get(name).await.map_err(|e| {
        format!(
            "unable to read KubeConfig secret '{ns}/{name}' error: {}",
            kube_message(&e)
        )
    })?;
    let data = secret.data.unwrap_or_default();
    let bytes = match key.filter(|k| !k.is_empty()) {
        Some(key) => data.get(key).ok_or_else(|| {
            format!("KubeConfig secret '{ns}/{name}' does not contain a '{key}' key with a kubeconfig")
        })?,
        None => data
            .get("value")
            .or_else(|| data.get("value.yaml"))
            .ok_or_else(|| {
                format!(
                    "KubeConfig secret '{ns}/{name}' does not contain a 'value' key with a kubeconfig"
                )
            })?,
    };
    String::from_utf8(bytes.0.clone())
        .map_err(|_| format!("KubeConfig secret '{ns}/{name}': the kubeconfig is not UTF-8"))
}

/// A client configuration from a tenant's kubeconfig, read as client-go reads it
/// (sigs.k8s.io/yaml), checked, then with Flux's timeout.
pub async fn remote_config(text: &str, policy: KubeconfigPolicy) -> Result<Config, String> {
    let kubeconfig = parse_kubeconfig(text)?;
    vet(&kubeconfig, policy)?;
    let mut config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(|e| e.to_string())?;
    // kube-rs would take the controller's own HTTPS_PROXY (credentials included) for the
    // tenant's cluster, and this build has no proxy support: remote clusters are reached
    // directly.
    config.proxy_url = None;
    config.connect_timeout = Some(REMOTE_TIMEOUT);
    config.read_timeout = Some(REMOTE_TIMEOUT);
    config.write_timeout = Some(REMOTE_TIMEOUT);
    Ok(config)
}

fn parse_kubeconfig(text: &str) -> Result<Kubeconfig, String> {
    let value = yaml::document(text, &mut yaml::Budget::default(), yaml::Dialect::SigsYaml)
        .map_err(|e| e.to_string())?;
    serde_json::from_value(value).map_err(|e| e.to_string())
}

/// The current context's cluster and user, refused where they ask for what Flux would not do.
fn vet(kubeconfig: &Kubeconfig, policy: KubeconfigPolicy) -> Result<(), String> {
    let current = kubeconfig
        .current_context
        .as_deref()
        .ok_or("it has no current-context")?;
    let context = kubeconfig
        .contexts
        .iter()
        .find(|c| c.name == current)
        .and_then(|c| c.context.as_ref())
        .ok_or_else(|| format!("its current-context '{current}' is not defined"))?;
    let cluster = kubeconfig
        .clusters
        .iter()
        .find(|c| c.name == context.cluster)
        .and_then(|c| c.cluster.as_ref())
        .ok_or_else(|| format!("its cluster '{}' is not defined", context.cluster))?;
    vet_cluster(cluster, policy)?;
    if let Some(user) = &context.user {
        let auth = kubeconfig
            .auth_infos
            .iter()
            .find(|a| &a.name == user)
            .and_then(|a| a.auth_info.as_ref())
            .ok_or_else(|| format!("its user '{user}' is not defined"))?;
        vet_user(auth, policy)?;
    }
    Ok(())
}

fn vet_cluster(cluster: &Cluster, policy: KubeconfigPolicy) -> Result<(), String> {
    if cluster.certificate_authority.is_some() {
        return Err(file_field("cluster.certificate-authority"));
    }
    if cluster.proxy_url.as_deref().is_some_and(|p| !p.is_empty()) {
        return Err("cluster.proxy-url is not supported by driftless yet".into());
    }
    if cluster.insecure_skip_tls_verify == Some(true) && !policy.allow_insecure_tls {
        return Err(
            "cluster.insecure-skip-tls-verify is allowed only when the controller runs with --insecure-kubeconfig-tls"
                .into(),
        );
    }
    Ok(())
}

fn vet_user(auth: &AuthInfo, policy: KubeconfigPolicy) -> Result<(), String> {
    let files = [
        ("user.tokenFile", auth.token_file.is_some()),
        ("user.client-certificate", auth.client_certificate.is_some()),
        ("user.client-key", auth.client_key.is_some()),
    ];
    if let Some((field, _)) = files.iter().find(|(_, set)| *set) {
        return Err(file_field(field));
    }
    if auth.auth_provider.is_some() {
        return Err("user.auth-provider is not supported (as in Flux): use a token, client certificate or exec".into());
    }
    if auth.exec.is_some() && !policy.allow_exec {
        return Err(
            "user.exec is allowed only when the controller runs with --insecure-kubeconfig-exec"
                .into(),
        );
    }
    let impersonates = auth.impersonate.is_some()
        || auth.impersonate_groups.is_some()
        || auth.impersonate_uid.is_some()
        || auth.impersonate_user_extra.is_some();
    if impersonates {
        return Err("user.as, as-groups, as-uid and as-user-extra are not used: impersonate with spec.serviceAccountName".into());
    }
    Ok(())
}

fn file_field(field: &str) -> String {
    format!(
        "{field} names a file on the controller's file system; embed the content instead (the *-data fields, or token)"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kubeconfig(cluster: &str, user: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: c\ncontexts:\n- name: c\n  context: {{cluster: k, user: u}}\n\
             clusters:\n- name: k\n  cluster:\n    server: https://127.0.0.1:6443\n{cluster}\
             users:\n- name: u\n  user:\n{user}"
        )
    }

    async fn refusal(cluster: &str, user: &str, policy: KubeconfigPolicy) -> String {
        match remote_config(&kubeconfig(cluster, user), policy).await {
            Ok(_) => String::new(),
            Err(e) => e,
        }
    }

    #[tokio::test]
    async fn inline_credentials_are_accepted() {
        let config = remote_config(
            &kubeconfig("", "    token: abc\n"),
            KubeconfigPolicy::default(),
        )
        .await
        .unwrap();
        assert_eq!(config.cluster_url.to_string(), "https://127.0.0.1:6443/");
        assert_eq!(config.read_timeout, Some(REMOTE_TIMEOUT));
    }

    #[tokio::test]
    async fn files_on_the_controller_are_never_read() {
        let none = KubeconfigPolicy::default();
        for (cluster, user, field) in [
            (
                "",
                "    tokenFile: /var/run/secrets/kubernetes.io/serviceaccount/token\n",
                "user.tokenFile",
            ),
            (
                "",
                "    client-certificate: /etc/tls.crt\n",
                "user.client-certificate",
            ),
            ("", "    client-key: /etc/tls.key\n", "user.client-key"),
            (
                "    certificate-authority: /etc/ca.crt\n",
                "    token: t\n",
                "cluster.certificate-authority",
            ),
        ] {
            let e = refusal(cluster, user, none).await;
            assert!(e.starts_with(field) && e.contains("names a file"), "{e}");
        }
    }

    #[tokio::test]
    async fn exec_and_insecure_tls_need_their_flags() {
        let exec = "    exec:\n      apiVersion: client.authentication.k8s.io/v1\n      command: /bin/sh\n      args: [-c, 'cat /etc/shadow']\n";
        let e = refusal("", exec, KubeconfigPolicy::default()).await;
        assert!(e.contains("--insecure-kubeconfig-exec"), "{e}");
        let insecure = "    insecure-skip-tls-verify: true\n";
        let e = refusal(insecure, "    token: t\n", KubeconfigPolicy::default()).await;
        assert!(e.contains("--insecure-kubeconfig-tls"), "{e}");
        let allowed = KubeconfigPolicy {
            allow_exec: false,
            allow_insecure_tls: true,
        };
        assert_eq!(refusal(insecure, "    token: t\n", allowed).await, "");
    }

    #[tokio::test]
    async fn auth_providers_impersonation_and_broken_files_are_refused() {
        let none = KubeconfigPolicy::default();
        let provider = "    auth-provider:\n      name: gcp\n";
        assert!(refusal("", provider, none).await.contains("auth-provider"));
        let as_user = "    token: t\n    as: system:admin\n";
        assert!(
            refusal("", as_user, none)
                .await
                .contains("spec.serviceAccountName")
        );
        let e = remote_config("current-context: gone\n", none)
            .await
            .unwrap_err();
        assert!(e.contains("'gone' is not defined"), "{e}");
        let e = remote_config("a: &a [*a]\n", none).await.unwrap_err();
        assert!(!e.is_empty());
    }
}
