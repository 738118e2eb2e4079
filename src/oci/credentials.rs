//! Registry credentials from docker config pull secrets, matched by registry host as the
//! kubelet's keyring does.

use std::collections::BTreeMap;

use base64::Engine;
use serde::Deserialize;

use super::registry::Credentials;

/// One docker config (`.dockerconfigjson`, or the legacy `.dockercfg` map).
#[derive(Debug, Clone, Default)]
pub struct DockerConfig {
    entries: Vec<(String, Credentials)>,
}

#[derive(Deserialize)]
struct ConfigJson {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "lowercase")]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    identitytoken: Option<String>,
    #[serde(default)]
    registrytoken: Option<String>,
}

impl DockerConfig {
    /// Parse the data of a pull secret: `.dockerconfigjson` (`{"auths": {...}}`) or
    /// `.dockercfg` (the map itself).
    pub fn from_secret_data(data: &BTreeMap<String, Vec<u8>>) -> Result<Self, String> {
        if let Some(json) = data.get(".dockerconfigjson") {
            let cfg: ConfigJson = serde_json::from_slice(json)
                .map_err(|e| format!("invalid .dockerconfigjson: {e}"))?;
            return Self::from_entries(cfg.auths);
        }
        if let Some(json) = data.get(".dockercfg") {
            let auths: BTreeMap<String, AuthEntry> =
                serde_json::from_slice(json).map_err(|e| format!("invalid .dockercfg: {e}"))?;
            return Self::from_entries(auths);
        }
        Err("secret has neither a .dockerconfigjson nor a .dockercfg key".into())
    }

    fn from_entries(auths: BTreeMap<String, AuthEntry>) -> Result<Self, String> {
        let entries = auths
            .into_iter()
            .map(|(key, entry)| Ok((key.clone(), entry.into_credentials(&key)?)))
            .collect::<Result<_, String>>()?;
        Ok(DockerConfig { entries })
    }

    /// The credentials for a repository, if an entry matches its registry (and path).
    pub fn lookup(&self, registry: &str, repository: &str) -> Option<Credentials> {
        // The most specific matching key wins, as in the kubelet keyring.
        self.entries
            .iter()
            .filter_map(|(key, creds)| {
                key_matches(key, registry, repository).map(|specificity| (specificity, creds))
            })
            .max_by_key(|(specificity, _)| *specificity)
            .map(|(_, creds)| creds.clone())
    }
}

impl AuthEntry {
    fn into_credentials(self, key: &str) -> Result<Credentials, String> {
        if let Some(token) = self.registrytoken.filter(|t| !t.is_empty()) {
            return Ok(Credentials::RegistryToken(token));
        }
        if let Some(token) = self.identitytoken.filter(|t| !t.is_empty()) {
            return Ok(Credentials::IdentityToken(token));
        }
        if let (Some(username), Some(password)) = (&self.username, &self.password)
            && !username.is_empty()
        {
            return Ok(Credentials::Basic {
                username: username.clone(),
                password: password.clone(),
            });
        }
        if let Some(auth) = self.auth.filter(|a| !a.is_empty()) {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(auth.trim())
                .map_err(|e| format!("invalid auth for '{key}': {e}"))?;
            let decoded = String::from_utf8(decoded)
                .map_err(|_| format!("invalid auth for '{key}': not UTF-8"))?;
            let (username, password) = decoded
                .split_once(':')
                .ok_or_else(|| format!("invalid auth for '{key}': expected user:password"))?;
            return Ok(Credentials::Basic {
                username: username.into(),
                password: password.into(),
            });
        }
        Ok(Credentials::Anonymous)
    }
}

/// Docker Hub answers to several names.
fn canonical_host(host: &str) -> &str {
    match host {
        "docker.io" | "index.docker.io" | "registry-1.docker.io" => "index.docker.io",
        other => other,
    }
}

/// Whether a docker config key matches, and how specifically (longer path prefix wins).
fn key_matches(key: &str, registry: &str, repository: &str) -> Option<usize> {
    let key = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let (host, path) = key.split_once('/').unwrap_or((key, ""));
    // `/v1/` and `/v2/` are API paths in old docker configs, not repository prefixes.
    let path = path.trim_end_matches('/');
    let path = if path == "v1" || path == "v2" {
        ""
    } else {
        path
    };
    if !host_matches(canonical_host(host), canonical_host(registry)) {
        return None;
    }
    if path.is_empty() {
        return Some(0);
    }
    (repository == path || repository.starts_with(&format!("{path}/"))).then_some(path.len())
}

/// Host patterns may use `*` for a whole DNS label (`*.example.com`); ports must agree.
fn host_matches(pattern: &str, host: &str) -> bool {
    let (p_name, p_port) = pattern
        .split_once(':')
        .map_or((pattern, None), |(n, p)| (n, Some(p)));
    let (h_name, h_port) = host
        .split_once(':')
        .map_or((host, None), |(n, p)| (n, Some(p)));
    if p_port != h_port {
        return false;
    }
    let p_labels: Vec<&str> = p_name.split('.').collect();
    let h_labels: Vec<&str> = h_name.split('.').collect();
    p_labels.len() == h_labels.len()
        && p_labels
            .iter()
            .zip(&h_labels)
            .all(|(p, h)| *p == "*" || p.eq_ignore_ascii_case(h))
}

/// Pull secrets in order of precedence (`secretRef` first, then the service account's).
#[derive(Debug, Clone, Default)]
pub struct Keychain {
    configs: Vec<DockerConfig>,
}

impl Keychain {
    pub fn push(&mut self, config: DockerConfig) {
        self.configs.push(config);
    }

    pub fn is_empty(&self) -> bool {
        self.configs.is_empty()
    }

    pub fn resolve(&self, registry: &str, repository: &str) -> Credentials {
        self.configs
            .iter()
            .find_map(|c| c.lookup(registry, repository))
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(key: &str, value: &str) -> BTreeMap<String, Vec<u8>> {
        BTreeMap::from([(key.to_string(), value.as_bytes().to_vec())])
    }

    fn basic(u: &str, p: &str) -> Credentials {
        Credentials::Basic {
            username: u.into(),
            password: p.into(),
        }
    }

    #[test]
    fn dockerconfigjson_auth_and_username_password() {
        let auth = base64::engine::general_purpose::STANDARD.encode("alice:s3cret");
        let json = format!(
            r#"{{"auths":{{"registry.example.com":{{"auth":"{auth}"}},"https://other.example.com/v1/":{{"username":"bob","password":"pw"}}}}}}"#
        );
        let cfg = DockerConfig::from_secret_data(&secret(".dockerconfigjson", &json)).unwrap();
        assert_eq!(
            cfg.lookup("registry.example.com", "app"),
            Some(basic("alice", "s3cret"))
        );
        assert_eq!(
            cfg.lookup("other.example.com", "team/app"),
            Some(basic("bob", "pw"))
        );
        assert_eq!(cfg.lookup("third.example.com", "app"), None);
    }

    #[test]
    fn ports_wildcards_paths_and_docker_hub() {
        let json = r#"{"auths":{
            "127.0.0.1:5000":{"username":"a","password":"1"},
            "*.example.com":{"username":"b","password":"2"},
            "registry.example.com/team":{"username":"c","password":"3"},
            "https://index.docker.io/v1/":{"username":"d","password":"4"}}}"#;
        let cfg = DockerConfig::from_secret_data(&secret(".dockerconfigjson", json)).unwrap();
        assert_eq!(cfg.lookup("127.0.0.1:5000", "x"), Some(basic("a", "1")));
        assert_eq!(cfg.lookup("127.0.0.1:5001", "x"), None, "ports must agree");
        assert_eq!(
            cfg.lookup("registry.example.com", "other/app"),
            Some(basic("b", "2"))
        );
        assert_eq!(
            cfg.lookup("registry.example.com", "team/app"),
            Some(basic("c", "3")),
            "longest path wins"
        );
        assert_eq!(
            cfg.lookup("a.b.example.com", "x"),
            None,
            "a wildcard covers one label"
        );
        assert_eq!(
            cfg.lookup("index.docker.io", "library/nginx"),
            Some(basic("d", "4"))
        );
    }

    #[test]
    fn tokens_and_legacy_dockercfg() {
        let json = r#"{"auths":{"r.example.com":{"identitytoken":"refresh"}}}"#;
        let cfg = DockerConfig::from_secret_data(&secret(".dockerconfigjson", json)).unwrap();
        assert_eq!(
            cfg.lookup("r.example.com", "x"),
            Some(Credentials::IdentityToken("refresh".into()))
        );
        let legacy = r#"{"r.example.com":{"username":"u","password":"p"}}"#;
        let cfg = DockerConfig::from_secret_data(&secret(".dockercfg", legacy)).unwrap();
        assert_eq!(cfg.lookup("r.example.com", "x"), Some(basic("u", "p")));
    }

    #[test]
    fn malformed_pull_secrets_are_errors() {
        assert!(DockerConfig::from_secret_data(&secret("other", "{}")).is_err());
        assert!(DockerConfig::from_secret_data(&secret(".dockerconfigjson", "not json")).is_err());
        let bad = r#"{"auths":{"r":{"auth":"@@@"}}}"#;
        assert!(DockerConfig::from_secret_data(&secret(".dockerconfigjson", bad)).is_err());
    }

    #[test]
    fn keychain_prefers_earlier_secrets() {
        let mut chain = Keychain::default();
        let first = r#"{"auths":{"r.example.com":{"username":"first","password":"1"}}}"#;
        let second = r#"{"auths":{"r.example.com":{"username":"second","password":"2"},"s.example.com":{"username":"s","password":"3"}}}"#;
        chain.push(DockerConfig::from_secret_data(&secret(".dockerconfigjson", first)).unwrap());
        chain.push(DockerConfig::from_secret_data(&secret(".dockerconfigjson", second)).unwrap());
        assert_eq!(chain.resolve("r.example.com", "x"), basic("first", "1"));
        assert_eq!(chain.resolve("s.example.com", "x"), basic("s", "3"));
        assert_eq!(chain.resolve("t.example.com", "x"), Credentials::Anonymous);
    }
}
