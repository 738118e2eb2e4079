//! What every `driftless artifact` verb shares: OCI targets, credentials and TLS flags, and a
//! registry client built from them.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Args;

use crate::oci::credentials::DockerConfig;
use crate::oci::reference::RepositoryUrl;
use crate::oci::registry::{Credentials, RegistryClient};
use crate::transport::Transport;

/// Flags that say how to reach the registry.
#[derive(Args, Debug, Clone, Default)]
pub struct RegistryArgs {
    /// Use plain HTTP.
    #[arg(long, global = true)]
    pub insecure_registry: bool,
    /// Registry credentials as `user:password` (else the Docker config is used).
    #[arg(long, global = true, env = "DRIFTLESS_CREDS", hide_env_values = true)]
    pub creds: Option<String>,
    /// PEM CA certificate(s) to trust in addition to the system roots.
    #[arg(long, global = true)]
    pub ca_file: Option<PathBuf>,
    /// Where credentials come from, as `flux push artifact --provider`: `generic` (`--creds`,
    /// else the Docker config), or the environment's cloud identity logged in to its registry:
    /// `aws` (ECR), `azure` (ACR), `gcp` (Artifact Registry, Container Registry).
    #[arg(long, global = true, value_enum, default_value_t = Provider::Generic)]
    pub provider: Provider,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Provider {
    #[default]
    Generic,
    Aws,
    Azure,
    Gcp,
}

/// `oci://host/repo:tag`, `oci://host/repo@sha256:...` or (for listing) `oci://host/repo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub url: RepositoryUrl,
    /// A tag or a digest; `None` when the target names only the repository.
    pub reference: Option<String>,
}

impl Target {
    pub fn parse(target: &str) -> anyhow::Result<Target> {
        let Some(rest) = target.strip_prefix("oci://") else {
            bail!("'{target}' is not an OCI URL: use oci://<host>/<repository>[:<tag>|@<digest>]");
        };
        let (repo, reference) = if let Some((repo, digest)) = rest.split_once('@') {
            (repo, Some(digest.to_string()))
        } else {
            match rest.rsplit_once(':') {
                Some((repo, tag)) if !tag.contains('/') => (repo, Some(tag.to_string())),
                _ => (rest, None),
            }
        };
        let url = RepositoryUrl::parse(&format!("oci://{repo}"))
            .map_err(|e| anyhow::anyhow!("'{target}': {e}"))?;
        Ok(Target { url, reference })
    }

    /// The tag or digest, or an error that says the verb needs one.
    pub fn reference(&self) -> anyhow::Result<&str> {
        self.reference
            .as_deref()
            .with_context(|| format!("oci://{} needs a tag or a digest", self.url))
    }

    /// The manifest digest the target names: its digest, or its tag resolved.
    pub async fn digest(&self, client: &RegistryClient) -> anyhow::Result<String> {
        let reference = self.reference()?;
        if reference.starts_with("sha256:") || reference.starts_with("sha512:") {
            return Ok(reference.to_string());
        }
        client
            .resolve_digest(&self.url.repository, reference)
            .await
            .with_context(|| format!("resolving oci://{}:{reference}", self.url))
    }
}

impl RegistryArgs {
    pub async fn client(&self, url: &RepositoryUrl) -> anyhow::Result<RegistryClient> {
        let credentials = match self.provider {
            Provider::Generic => self.credentials(url)?,
            cloud => self.cloud_login(cloud, url).await?,
        };
        RegistryClient::new(
            &url.registry,
            credentials,
            &self.transport()?,
            "driftless-cli",
        )
        .map_err(anyhow::Error::msg)
    }

    /// The registry login for the environment's cloud identity, as the source-controller
    /// makes it for its own: AWS's chain (keys, web identity, container credentials, instance
    /// profile) for ECR, Azure's (service principal, workload identity, managed identity) for
    /// ACR, Google's (`GOOGLE_APPLICATION_CREDENTIALS`, metadata server) for Google's registries.
    async fn cloud_login(
        &self,
        provider: Provider,
        url: &RepositoryUrl,
    ) -> anyhow::Result<Credentials> {
        use crate::identity::aws::AwsAuth;
        use crate::identity::ecr::{self, EcrRegistry};
        use crate::identity::entra::EntraCredential;
        use crate::identity::google::GoogleCredential;
        use crate::identity::{acr, gar};
        let name = clap::ValueEnum::to_possible_value(&provider)
            .map(|v| v.get_name().to_string())
            .unwrap_or_default();
        if self.insecure_registry {
            bail!(
                "--provider {name} sends cloud credentials only over TLS: drop --insecure-registry"
            );
        }
        let not_the_cloud = |what: &str, patterns: &str| {
            anyhow::anyhow!(
                "'{}' is not {what}: --provider {name} expects {patterns}",
                url.registry
            )
        };
        let http = crate::transport::build_http_client(
            &Transport::token_service(),
            "driftless-cli",
            crate::transport::CONNECT_TIMEOUT,
        )
        .map_err(anyhow::Error::msg)?;
        let login = match provider {
            Provider::Aws => {
                let registry = EcrRegistry::parse(&url.registry)
                    .ok_or_else(|| not_the_cloud("an Amazon ECR registry", ecr::HOST_PATTERNS))?;
                let auth = AwsAuth::Chain { sts_endpoint: None };
                ecr::login(&http, &registry, &registry.api_endpoint(), &auth).await
            }
            Provider::Azure => {
                if !acr::is_registry(&url.registry) {
                    return Err(not_the_cloud(
                        "an Azure Container Registry",
                        acr::HOST_PATTERNS,
                    ));
                }
                acr::login(&http, &url.registry, &EntraCredential::from_environment()).await
            }
            Provider::Gcp => {
                if !gar::is_registry(&url.registry) {
                    return Err(not_the_cloud("a Google registry", gar::HOST_PATTERNS));
                }
                let credential =
                    GoogleCredential::from_environment().map_err(anyhow::Error::msg)?;
                gar::login(&http, &credential).await
            }
            Provider::Generic => return self.credentials(url),
        }
        .map_err(|e| anyhow::anyhow!("logging in to {}: {e}", url.registry))?;
        Ok(Credentials::CloudLogin {
            username: login.username,
            password: login.password,
        })
    }

    fn credentials(&self, url: &RepositoryUrl) -> anyhow::Result<Credentials> {
        if let Some(creds) = &self.creds {
            let (username, password) = creds.split_once(':').unwrap_or((creds.as_str(), ""));
            return Ok(Credentials::Basic {
                username: username.into(),
                password: password.into(),
            });
        }
        let config = std::env::var_os("DOCKER_CONFIG")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker")))
            .map(|d| d.join("config.json"));
        let Some(bytes) = config.and_then(|p| std::fs::read(p).ok()) else {
            return Ok(Credentials::Anonymous);
        };
        if let Some(helper) = credential_helper(&bytes, &url.registry)? {
            return run_credential_helper(&helper, &url.registry);
        }
        let data = BTreeMap::from([(".dockerconfigjson".to_string(), bytes)]);
        let docker = DockerConfig::from_secret_data(&data)
            .map_err(|e| anyhow::anyhow!("reading the Docker config: {e}"))?;
        Ok(docker
            .lookup(&url.registry, &url.repository)
            .unwrap_or_default())
    }

    fn transport(&self) -> anyhow::Result<Transport> {
        let ca_pem = match &self.ca_file {
            Some(p) => Some(std::fs::read(p).with_context(|| format!("reading {}", p.display()))?),
            None => None,
        };
        Ok(Transport {
            insecure: self.insecure_registry,
            ca_pem,
            ..Default::default()
        })
    }
}

/// The credential helper the Docker config names for a registry: `credHelpers[registry]`,
/// else `credsStore`.
fn credential_helper(config: &[u8], registry: &str) -> anyhow::Result<Option<String>> {
    #[derive(serde::Deserialize, Default)]
    #[serde(rename_all = "camelCase")]
    struct HelperConfig {
        #[serde(default)]
        cred_helpers: BTreeMap<String, String>,
        #[serde(default)]
        creds_store: Option<String>,
    }
    let cfg: HelperConfig = serde_json::from_slice(config).context("reading the Docker config")?;
    Ok(cfg
        .cred_helpers
        .get(registry)
        .cloned()
        .or(cfg.creds_store)
        .filter(|h| !h.is_empty()))
}

/// The Docker credential-helper protocol: `docker-credential-<name> get`, the registry on
/// stdin, `{"Username": ..., "Secret": ...}` on stdout (`<token>` as username means a token).
fn run_credential_helper(helper: &str, registry: &str) -> anyhow::Result<Credentials> {
    use std::io::Write;
    let program = format!("docker-credential-{helper}");
    let mut child = std::process::Command::new(&program)
        .arg("get")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("running the Docker credential helper {program}"))?;
    child
        .stdin
        .take()
        .context("helper stdin")?
        .write_all(registry.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        let message = String::from_utf8_lossy(&out.stdout).trim().to_string();
        // "credentials not found" is how helpers say "anonymous".
        if message.contains("credentials not found") {
            return Ok(Credentials::Anonymous);
        }
        anyhow::bail!(
            "{program} get failed: {message} {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct HelperCredentials {
        username: String,
        secret: String,
    }
    let creds: HelperCredentials = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("{program} printed no credentials"))?;
    Ok(if creds.username == "<token>" {
        Credentials::IdentityToken(creds.secret)
    } else {
        Credentials::Basic {
            username: creds.username,
            password: creds.secret,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        let t = Target::parse("oci://127.0.0.1:5000/team/app:v1.2.3").unwrap();
        assert_eq!(
            (t.url.registry.as_str(), t.url.repository.as_str()),
            ("127.0.0.1:5000", "team/app")
        );
        assert_eq!(t.reference.as_deref(), Some("v1.2.3"));
        let t = Target::parse("oci://r.example.com/app@sha256:abc").unwrap();
        assert_eq!(t.reference.as_deref(), Some("sha256:abc"));
        let t = Target::parse("oci://127.0.0.1:5000/app").unwrap();
        assert_eq!(t.reference, None);
        assert!(t.reference().is_err());
        assert!(Target::parse("https://r/app:v1").is_err());
    }

    #[test]
    fn credential_helpers_are_chosen_per_registry() {
        let cfg = br#"{"credHelpers": {"r.example.com": "ecr-login"}, "credsStore": "desktop"}"#;
        assert_eq!(
            credential_helper(cfg, "r.example.com").unwrap().as_deref(),
            Some("ecr-login")
        );
        assert_eq!(
            credential_helper(cfg, "other.example.com")
                .unwrap()
                .as_deref(),
            Some("desktop")
        );
        assert_eq!(
            credential_helper(br#"{"auths": {}}"#, "r.example.com").unwrap(),
            None
        );
    }
}
