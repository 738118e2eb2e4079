//! The receiver's configuration file (`--receiver-config`): one entry per sender, each with its
//! format and the Secret holding its token; and the Secrets themselves, read through a short
//! cache so that a rotated token takes effect within seconds without a flood of API reads.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client};
use serde::Deserialize;
use zeroize::Zeroizing;

use super::formats::Format;

/// Default rate of one sender: a registry push sends a few events; a CI run of many pushes a
/// few dozen.
const DEFAULT_PER_SECOND: f64 = 20.0;
const DEFAULT_BURST: u32 = 200;

/// How long a read Secret is used before it is read again.
const SECRET_TTL: Duration = Duration::from_secs(10);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiverConfig {
    pub senders: Vec<SenderConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SenderConfig {
    /// The sender's path: `/hook/<name>`.
    pub name: String,
    #[serde(rename = "type")]
    pub format: Format,
    pub secret_ref: SecretKeyRef,
    /// The registry host (`host[:port]`) or bucket endpoint this sender's events are about, as
    /// the OCIRepositories and Buckets name it; replaces what the payload says (a registry
    /// behind a Service knows itself by another name than its clients use).
    #[serde(default)]
    pub host: Option<String>,
    #[serde(default)]
    pub rate: RateConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecretKeyRef {
    /// Default: the controller's namespace (RUNTIME_NAMESPACE).
    #[serde(default)]
    pub namespace: Option<String>,
    pub name: String,
    #[serde(default = "default_key")]
    pub key: String,
}

fn default_key() -> String {
    "token".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RateConfig {
    #[serde(default = "default_per_second")]
    pub per_second: f64,
    #[serde(default = "default_burst")]
    pub burst: u32,
}

impl Default for RateConfig {
    fn default() -> Self {
        RateConfig {
            per_second: DEFAULT_PER_SECOND,
            burst: DEFAULT_BURST,
        }
    }
}

fn default_per_second() -> f64 {
    DEFAULT_PER_SECOND
}

fn default_burst() -> u32 {
    DEFAULT_BURST
}

impl ReceiverConfig {
    /// Parse and check a configuration file's text.
    pub fn parse(text: &str) -> anyhow::Result<ReceiverConfig> {
        let config: ReceiverConfig = serde_saphyr::from_str(text)?;
        let mut names = std::collections::HashSet::new();
        for sender in &config.senders {
            anyhow::ensure!(
                valid_name(&sender.name),
                "sender name {:?}: lowercase letters, digits and '-', at most 63",
                sender.name
            );
            anyhow::ensure!(
                names.insert(sender.name.as_str()),
                "sender {:?} is configured twice",
                sender.name
            );
            anyhow::ensure!(
                sender.rate.per_second > 0.0 && sender.rate.per_second.is_finite(),
                "sender {:?}: rate.perSecond must be a positive number",
                sender.name
            );
            anyhow::ensure!(
                !sender.secret_ref.name.is_empty() && !sender.secret_ref.key.is_empty(),
                "sender {:?}: secretRef needs a name and a key",
                sender.name
            );
        }
        Ok(config)
    }
}

fn valid_name(name: &str) -> bool {
    (1..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

type SecretKey = (String, String, String);
type Cached = (Instant, Result<Zeroizing<Vec<u8>>, String>);

/// The senders' secrets, read from the API server and kept for `SECRET_TTL`.
pub struct Secrets {
    client: Client,
    default_namespace: String,
    cache: Mutex<HashMap<SecretKey, Cached>>,
}

impl Secrets {
    pub fn new(client: Client, default_namespace: String) -> Secrets {
        Secrets {
            client,
            default_namespace,
            cache: Mutex::default(),
        }
    }

    /// The secret `reference` names; the error says which Secret or key is missing.
    pub async fn get(&self, reference: &SecretKeyRef) -> Result<Zeroizing<Vec<u8>>, String> {
        let namespace = reference
            .namespace
            .clone()
            .unwrap_or_else(|| self.default_namespace.clone());
        let key = (namespace, reference.name.clone(), reference.key.clone());
        if let Some((at, value)) = self.lock().get(&key)
            && at.elapsed() < SECRET_TTL
        {
            return value.clone();
        }
        let value = self.read(&key).await;
        self.lock().insert(key, (Instant::now(), value.clone()));
        value
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SecretKey, Cached>> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn read(&self, (ns, name, key): &SecretKey) -> Result<Zeroizing<Vec<u8>>, String> {
        let api: Api<Secret> = Api::namespaced(self.client.clone(), ns);
        let secret = api
            .get_opt(name)
            .await
            .map_err(|e| format!("reading Secret {ns}/{name}: {e}"))?
            .ok_or_else(|| format!("Secret {ns}/{name} not found"))?;
        let value = secret
            .data
            .and_then(|mut d| d.remove(key))
            .ok_or_else(|| format!("Secret {ns}/{name} has no key {key:?}"))?;
        // A token written with a trailing newline (`kubectl create secret --from-file`) is
        // meant without it.
        let mut bytes = value.0;
        while bytes.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
            bytes.pop();
        }
        Ok(Zeroizing::new(bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_configuration_names_each_sender_once() {
        let config = ReceiverConfig::parse(
            "senders:\n- name: registry\n  type: distribution\n  secretRef: {name: events}\n  host: registry.example.com:5000\n\
             - name: ghcr\n  type: github\n  secretRef: {name: gh, key: secret, namespace: ci}\n  rate: {perSecond: 2, burst: 5}\n",
        )
        .unwrap();
        let registry = &config.senders[0];
        assert_eq!(registry.format, Format::Distribution);
        assert_eq!(registry.secret_ref.key, "token");
        assert_eq!(registry.host.as_deref(), Some("registry.example.com:5000"));
        assert_eq!(registry.rate.burst, DEFAULT_BURST);
        assert_eq!(config.senders[1].rate.burst, 5);
        assert_eq!(
            config.senders[1].secret_ref.namespace.as_deref(),
            Some("ci")
        );
    }

    #[test]
    fn bad_configurations_are_refused_with_the_reason() {
        let err = |text: &str| ReceiverConfig::parse(text).unwrap_err().to_string();
        assert!(
            err("senders:\n- {name: A, type: harbor, secretRef: {name: s}}\n")
                .contains("lowercase")
        );
        assert!(err("senders:\n- {name: a, type: harbor, secretRef: {name: s}}\n- {name: a, type: s3, secretRef: {name: s}}\n")
            .contains("twice"));
        assert!(err("senders:\n- {name: a, type: quay, secretRef: {name: s}}\n").contains("quay"));
        assert!(
            err("senders:\n- {name: a, type: s3, secretRef: {name: s}, extra: 1}\n")
                .contains("extra")
        );
        assert!(
            err("senders:\n- {name: a, type: s3, secretRef: {name: s}, rate: {perSecond: 0}}\n")
                .contains("perSecond")
        );
    }
}
