//! A file's `sops` section: its master keys, which values are encrypted, `lastmodified`
//! and the MAC (SOPS `stores.Metadata`).

use regex::Regex;

use crate::apply::yaml::Ordered;

/// One master key that holds the data key.
#[derive(Debug, Clone, PartialEq)]
pub enum MasterKey {
    /// `enc` is an armored age file.
    Age { recipient: String, enc: String },
    /// `enc` is an armored OpenPGP message.
    Pgp { fingerprint: String, enc: String },
    /// AWS KMS: `enc` is the base64 ciphertext blob, `context` the encryption context.
    Kms {
        arn: String,
        enc: String,
        role: String,
        context: Vec<(String, String)>,
    },
    /// Azure Key Vault: `enc` is base64url of the RSA-OAEP-256 ciphertext.
    AzureKv {
        vault_url: String,
        name: String,
        version: String,
        enc: String,
    },
    /// GCP Cloud KMS: `enc` is base64 of the ciphertext.
    GcpKms { resource_id: String, enc: String },
    /// Vault/OpenBao transit: `enc` is Vault's `vault:v1:…` ciphertext.
    Vault {
        address: String,
        engine_path: String,
        key_name: String,
        enc: String,
    },
    /// A key type driftless does not decrypt with: its `sops` field name and identity.
    Other { kind: &'static str, id: String },
}

impl MasterKey {
    pub fn describe(&self) -> String {
        match self {
            MasterKey::Age { recipient, .. } => format!("age {recipient}"),
            MasterKey::Pgp { fingerprint, .. } => format!("pgp {fingerprint}"),
            MasterKey::Kms { arn, .. } => format!("kms {arn}"),
            MasterKey::AzureKv {
                vault_url,
                name,
                version,
                ..
            } => format!(
                "azure_kv {}/keys/{name}/{version}",
                vault_url.trim_end_matches('/')
            ),
            MasterKey::GcpKms { resource_id, .. } => format!("gcp_kms {resource_id}"),
            MasterKey::Vault {
                address,
                engine_path,
                key_name,
                ..
            } => format!("hc_vault {address}/v1/{engine_path}/keys/{key_name}"),
            MasterKey::Other { kind, id } => format!("{kind} {id}"),
        }
    }
}

/// Which values are encrypted: at most one rule per file (SOPS's default is the suffix
/// `_unencrypted`).
#[derive(Debug, Clone)]
pub enum Rule {
    UnencryptedSuffix(String),
    EncryptedSuffix(String),
    UnencryptedRegex(Regex),
    EncryptedRegex(Regex),
    /// `encrypted_comment_regex` / `unencrypted_comment_regex`: decided by comments, which
    /// this reader does not keep; every `ENC[…]` value is decrypted instead, as Flux v1.10
    /// does for such files.
    ByComment,
}

impl Rule {
    /// Whether the value at `path` (its map keys) is encrypted: a rule matching any key on
    /// the path decides for everything below it.
    pub fn encrypted(&self, path: &[String]) -> bool {
        match self {
            Rule::UnencryptedSuffix(s) => !path.iter().any(|k| k.ends_with(s.as_str())),
            Rule::EncryptedSuffix(s) => path.iter().any(|k| k.ends_with(s.as_str())),
            Rule::UnencryptedRegex(r) => !path.iter().any(|k| r.is_match(k)),
            Rule::EncryptedRegex(r) => path.iter().any(|k| r.is_match(k)),
            Rule::ByComment => true,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Metadata {
    /// Go's RFC 3339 text of `lastmodified`: the MAC's additional data.
    pub last_modified: String,
    pub mac: String,
    pub rule: Rule,
    pub mac_only_encrypted: bool,
    /// The key groups; more than one means Shamir shares.
    pub groups: Vec<Vec<MasterKey>>,
    pub shamir_threshold: u64,
}

const KEY_LISTS: &[&str] = &[
    "kms", "gcp_kms", "hckms", "azure_kv", "hc_vault", "pgp", "age",
];

impl Metadata {
    pub fn parse(sops: &Ordered) -> Result<Self, String> {
        let text = |field: &str| -> Result<Option<String>, String> {
            match sops.get(field) {
                None | Some(Ordered::Null) => Ok(None),
                Some(Ordered::Str(s)) => Ok(Some(s.clone())),
                Some(_) => Err(format!("sops.{field} is not a string")),
            }
        };
        let last_modified = text("lastmodified")?.ok_or("sops.lastmodified is missing")?;
        Ok(Metadata {
            last_modified: go_rfc3339(&last_modified)?,
            mac: text("mac")?.unwrap_or_default(),
            rule: rule(&text)?,
            mac_only_encrypted: weak_bool(sops.get("mac_only_encrypted"))?,
            groups: key_groups(sops)?,
            shamir_threshold: weak_uint(sops.get("shamir_threshold"))?,
        })
    }
}

fn rule(text: &dyn Fn(&str) -> Result<Option<String>, String>) -> Result<Rule, String> {
    let fields = [
        "unencrypted_suffix",
        "encrypted_suffix",
        "unencrypted_regex",
        "encrypted_regex",
        "unencrypted_comment_regex",
        "encrypted_comment_regex",
    ];
    let mut set = Vec::new();
    for field in fields {
        if let Some(value) = text(field)?.filter(|v| !v.is_empty()) {
            set.push((field, value));
        }
    }
    if set.len() > 1 {
        return Err("Cannot use more than one of encrypted_suffix, unencrypted_suffix, encrypted_regex, unencrypted_regex, encrypted_comment_regex, or unencrypted_comment_regex in the same file".into());
    }
    let regex = |field: &str, r: &str| {
        Regex::new(r).map_err(|e| format!("sops.{field} is not a valid regular expression: {e}"))
    };
    Ok(match set.pop() {
        None => Rule::UnencryptedSuffix("_unencrypted".into()),
        Some(("unencrypted_suffix", s)) => Rule::UnencryptedSuffix(s),
        Some(("encrypted_suffix", s)) => Rule::EncryptedSuffix(s),
        Some(("unencrypted_regex", r)) => Rule::UnencryptedRegex(regex("unencrypted_regex", &r)?),
        Some(("encrypted_regex", r)) => Rule::EncryptedRegex(regex("encrypted_regex", &r)?),
        Some(_) => Rule::ByComment,
    })
}

/// The top-level key lists form one group; without them, `key_groups`.
fn key_groups(sops: &Ordered) -> Result<Vec<Vec<MasterKey>>, String> {
    let top = keys_of(sops)?;
    if !top.is_empty() {
        return Ok(vec![top]);
    }
    let groups = match sops.get("key_groups") {
        Some(Ordered::Seq(groups)) => groups.iter().map(keys_of).collect::<Result<Vec<_>, _>>()?,
        _ => Vec::new(),
    };
    if groups.iter().all(Vec::is_empty) {
        return Err("No keys found in file".into());
    }
    Ok(groups)
}

fn keys_of(group: &Ordered) -> Result<Vec<MasterKey>, String> {
    let mut keys = Vec::new();
    for kind in KEY_LISTS {
        let Some(Ordered::Seq(entries)) = group.get(kind) else {
            continue;
        };
        for entry in entries {
            let field = |name: &str| {
                entry
                    .get(name)
                    .and_then(Ordered::as_str)
                    .unwrap_or_default()
            };
            keys.push(match *kind {
                "age" => MasterKey::Age {
                    recipient: field("recipient").into(),
                    enc: field("enc").into(),
                },
                "pgp" => MasterKey::Pgp {
                    fingerprint: field("fp").into(),
                    enc: field("enc").into(),
                },
                "kms" => MasterKey::Kms {
                    arn: field("arn").into(),
                    enc: field("enc").into(),
                    role: field("role").into(),
                    context: match entry.get("context") {
                        Some(Ordered::Map(pairs)) => pairs
                            .iter()
                            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                            .collect(),
                        _ => Vec::new(),
                    },
                },
                "gcp_kms" => MasterKey::GcpKms {
                    resource_id: field("resource_id").into(),
                    enc: field("enc").into(),
                },
                "azure_kv" => MasterKey::AzureKv {
                    vault_url: field("vault_url").into(),
                    name: field("name").into(),
                    version: field("version").into(),
                    enc: field("enc").into(),
                },
                "hc_vault" => MasterKey::Vault {
                    address: field("vault_address").into(),
                    engine_path: field("engine_path").into(),
                    key_name: field("key_name").into(),
                    enc: field("enc").into(),
                },
                _ => other(kind, ""),
            });
        }
    }
    Ok(keys)
}

fn other(kind: &'static str, id: &str) -> MasterKey {
    MasterKey::Other {
        kind,
        id: id.to_string(),
    }
}

/// mapstructure's weak typing, as SOPS decodes dotenv and INI metadata (all strings).
fn weak_bool(value: Option<&Ordered>) -> Result<bool, String> {
    match value {
        None | Some(Ordered::Null) => Ok(false),
        Some(Ordered::Bool(b)) => Ok(*b),
        Some(Ordered::Str(s)) => match s.as_str() {
            "" | "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
            "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
            _ => Err(format!("sops.mac_only_encrypted {s:?} is not a boolean")),
        },
        Some(_) => Err("sops.mac_only_encrypted is not a boolean".into()),
    }
}

fn weak_uint(value: Option<&Ordered>) -> Result<u64, String> {
    match value {
        None | Some(Ordered::Null) => Ok(0),
        Some(Ordered::Int(i)) => {
            u64::try_from(*i).map_err(|_| "sops.shamir_threshold is negative".into())
        }
        Some(Ordered::Str(s)) if s.is_empty() => Ok(0),
        Some(Ordered::Str(s)) => s
            .parse()
            .map_err(|_| format!("sops.shamir_threshold {s:?} is not a number")),
        Some(_) => Err("sops.shamir_threshold is not a number".into()),
    }
}

/// `time.Parse(time.RFC3339, s).Format(time.RFC3339)`: fractional seconds go, a zero offset
/// becomes `Z`, any other offset stays as written.
fn go_rfc3339(text: &str) -> Result<String, String> {
    let invalid = || format!("sops.lastmodified {text:?} is not an RFC 3339 time");
    text.parse::<jiff::Timestamp>().map_err(|_| invalid())?;
    let (date_time, offset) = match text.strip_suffix(['Z', 'z']) {
        Some(rest) => (rest, "Z".to_string()),
        None => {
            let at = text
                .rfind(['+', '-'])
                .filter(|i| *i > 10)
                .ok_or_else(invalid)?;
            let offset = &text[at..];
            let zero = offset == "+00:00" || offset == "-00:00";
            (
                &text[..at],
                if zero { "Z".into() } else { offset.to_string() },
            )
        }
    };
    let whole = date_time.split_once('.').map_or(date_time, |(s, _)| s);
    Ok(format!("{}{offset}", whole.replacen('t', "T", 1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_modified_as_go_writes_it() {
        assert_eq!(
            go_rfc3339("2024-11-12T13:33:42Z").unwrap(),
            "2024-11-12T13:33:42Z"
        );
        assert_eq!(
            go_rfc3339("2024-11-12T13:33:42.123Z").unwrap(),
            "2024-11-12T13:33:42Z"
        );
        assert_eq!(
            go_rfc3339("2024-11-12T13:33:42+00:00").unwrap(),
            "2024-11-12T13:33:42Z"
        );
        assert_eq!(
            go_rfc3339("2024-11-12T13:33:42.5+01:00").unwrap(),
            "2024-11-12T13:33:42+01:00"
        );
        assert!(go_rfc3339("yesterday").is_err());
    }

    #[test]
    fn one_rule_per_file_and_rules_cover_subtrees() {
        let sops = |extra: &str| {
            crate::apply::yaml::ordered_documents(&format!(
                "lastmodified: '2024-01-01T00:00:00Z'\nage: [{{recipient: r, enc: e}}]\n{extra}"
            ))
            .unwrap()
            .remove(0)
        };
        let m = Metadata::parse(&sops("")).unwrap();
        let path = |p: &[&str]| p.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(m.rule.encrypted(&path(&["a", "b"])));
        assert!(!m.rule.encrypted(&path(&["a_unencrypted", "b"])));
        let m = Metadata::parse(&sops("encrypted_regex: ^(data|stringData)$\n")).unwrap();
        assert!(m.rule.encrypted(&path(&["stringData", "x"])));
        assert!(!m.rule.encrypted(&path(&["metadata", "name"])));
        let err =
            Metadata::parse(&sops("encrypted_regex: a\nunencrypted_suffix: b\n")).unwrap_err();
        assert!(err.starts_with("Cannot use more than one"), "{err}");
        let none = crate::apply::yaml::ordered_documents("lastmodified: '2024-01-01T00:00:00Z'\n")
            .unwrap()
            .remove(0);
        assert_eq!(Metadata::parse(&none).unwrap_err(), "No keys found in file");
    }
}
