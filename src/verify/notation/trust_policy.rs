//! Notary Project trust policies (`trustpolicy.json`, version 1.0) as Flux reads them from the
//! verification Secret: validated with notation's rules and messages, the statement that applies
//! to a repository, what each verification level does with each check, and the `x509.subject`
//! trusted identities.

use std::collections::BTreeMap;

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TrustPolicy {
    #[serde(default)]
    pub version: String,
    #[serde(default)]
    pub trust_policies: Vec<Statement>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Statement {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub registry_scopes: Vec<String>,
    #[serde(default)]
    pub signature_verification: SignatureVerification,
    #[serde(default)]
    pub trust_stores: Vec<String>,
    #[serde(default)]
    pub trusted_identities: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SignatureVerification {
    #[serde(default)]
    pub level: String,
    #[serde(default, rename = "override")]
    pub overrides: BTreeMap<String, String>,
    #[serde(default)]
    pub verify_timestamp: String,
}

/// The checks a Notary Project verification makes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Check {
    Integrity,
    Authenticity,
    AuthenticTimestamp,
    Expiry,
    Revocation,
}

impl Check {
    pub fn name(self) -> &'static str {
        match self {
            Check::Integrity => "integrity",
            Check::Authenticity => "authenticity",
            Check::AuthenticTimestamp => "authenticTimestamp",
            Check::Expiry => "expiry",
            Check::Revocation => "revocation",
        }
    }

    fn parse(name: &str) -> Option<Check> {
        [
            Check::Integrity,
            Check::Authenticity,
            Check::AuthenticTimestamp,
            Check::Expiry,
            Check::Revocation,
        ]
        .into_iter()
        .find(|c| c.name() == name)
    }
}

/// What a failed check does.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Action {
    /// The signature is refused.
    Enforce,
    /// The failure is logged; the signature still counts.
    Log,
    /// The check is not made.
    Skip,
}

const LEVELS: [&str; 4] = ["strict", "permissive", "audit", "skip"];

impl Statement {
    pub fn is_skip(&self) -> bool {
        self.signature_verification.level == "skip"
    }

    /// The action for `check`: the level's, unless the statement overrides it.
    pub fn action(&self, check: Check) -> Action {
        let level = self.signature_verification.level.as_str();
        if let Some(action) = self.signature_verification.overrides.get(check.name()) {
            match action.as_str() {
                "enforce" => return Action::Enforce,
                "log" => return Action::Log,
                "skip" => return Action::Skip,
                _ => {}
            }
        }
        match (level, check) {
            ("skip", _) => Action::Skip,
            (_, Check::Integrity) | ("strict", _) => Action::Enforce,
            ("permissive", Check::Authenticity) => Action::Enforce,
            _ => Action::Log,
        }
    }

    /// Whether timestamp countersignatures are verified (a `tsa:` store is listed).
    pub fn verifies_timestamps(&self) -> bool {
        self.trust_stores.iter().any(|s| s.starts_with("tsa:"))
    }

    /// Whether the chain is checked at the current time even with a timestamp authority,
    /// until a certificate of the chain expired (`verifyTimestamp: afterCertExpiry`).
    pub fn timestamp_after_cert_expiry_only(&self) -> bool {
        self.signature_verification.verify_timestamp == "afterCertExpiry"
    }
}

impl TrustPolicy {
    /// `trustpolicy.json`, validated; Flux's messages for what it refuses.
    pub fn parse(json: &[u8]) -> Result<TrustPolicy, String> {
        let mut policy: TrustPolicy = serde_json::from_slice(json)
            .map_err(|e| format!("error occurred while parsing trustpolicy.json: {e}"))?;
        // Flux's CleanTrustPolicy: a skip statement's stores and identities are ignored.
        for statement in policy.trust_policies.iter_mut().filter(|s| s.is_skip()) {
            if !statement.trust_stores.is_empty() || !statement.trusted_identities.is_empty() {
                tracing::info!(
                    statement = %statement.name,
                    "warning: trust policy statement is set to skip signature verification but configured with trust stores and/or trusted identities. Ignoring trust stores and trusted identities"
                );
            }
            statement.trust_stores.clear();
            statement.trusted_identities.clear();
        }
        policy.validate()?;
        Ok(policy)
    }

    fn validate(&self) -> Result<(), String> {
        match self.version.as_str() {
            "" => {
                return Err(
                    "trust policy document has empty version, version must be specified".into(),
                );
            }
            "1.0" => {}
            other => {
                return Err(format!(
                    "trust policy document uses unsupported version {other:?}"
                ));
            }
        }
        if self.trust_policies.is_empty() {
            return Err("trust policy document can not have zero trust policy statements".into());
        }
        let mut names: Vec<&str> = Vec::new();
        for statement in &self.trust_policies {
            if names.contains(&statement.name.as_str()) {
                return Err(format!(
                    "multiple trust policy statements use the same name {:?}, statement names must be unique",
                    statement.name
                ));
            }
            names.push(&statement.name);
            statement
                .validate_core()
                .map_err(|e| format!("trust policy: {e}"))?;
        }
        self.validate_scopes()
    }

    fn validate_scopes(&self) -> Result<(), String> {
        let mut seen: Vec<&str> = Vec::new();
        for statement in &self.trust_policies {
            let scopes = &statement.registry_scopes;
            if scopes.is_empty() {
                return Err(format!(
                    "trust policy statement {:?} has zero registry scopes, it must specify registry scopes with at least one value",
                    statement.name
                ));
            }
            if scopes.len() > 1 && scopes.iter().any(|s| s == "*") {
                return Err(format!(
                    "trust policy statement {:?} uses wildcard registry scope '*', a wildcard scope cannot be used in conjunction with other scope values",
                    statement.name
                ));
            }
            for scope in scopes {
                if scope != "*" {
                    check_scope(scope)?;
                }
                if seen.contains(&scope.as_str()) {
                    return Err(format!(
                        "registry scope {scope:?} is present in multiple trust policy statements, one registry scope value can only be associated with one statement"
                    ));
                }
                seen.push(scope);
            }
        }
        Ok(())
    }

    /// The statement for `<registry>/<repository>`: the one naming it, else the wildcard one.
    pub fn applicable(&self, path: &str) -> Result<&Statement, String> {
        let named = self
            .trust_policies
            .iter()
            .find(|s| s.registry_scopes.iter().any(|scope| scope == path));
        let wildcard = || {
            self.trust_policies
                .iter()
                .find(|s| s.registry_scopes.iter().any(|scope| scope == "*"))
        };
        named.or_else(wildcard).ok_or_else(|| {
            format!(
                "artifact {path:?} has no applicable trust policy statement. Trust policy applicability for a given artifact is determined by registryScopes. To create a trust policy, see: https://notaryproject.dev/docs/quickstart/#create-a-trust-policy"
            )
        })
    }
}

impl Statement {
    fn validate_core(&self) -> Result<(), String> {
        if self.name.is_empty() {
            return Err(
                "a trust policy statement is missing a name, every statement requires a name"
                    .into(),
            );
        }
        self.validate_level().map_err(|e| {
            format!(
                "trust policy statement {:?} has invalid signatureVerification: {e}",
                self.name
            )
        })?;
        let timestamp = self.signature_verification.verify_timestamp.as_str();
        if !matches!(timestamp, "" | "always" | "afterCertExpiry") {
            return Err(format!(
                "trust policy statement {:?} has invalid signatureVerification: verifyTimestamp must be \"always\" or \"afterCertExpiry\", but got {timestamp:?}",
                self.name
            ));
        }
        if self.is_skip() {
            return Ok(());
        }
        if self.trust_stores.is_empty() || self.trusted_identities.is_empty() {
            return Err(format!(
                "trust policy statement {:?} is either missing trust stores or trusted identities, both must be specified",
                self.name
            ));
        }
        for store in &self.trust_stores {
            self.validate_store(store)?;
        }
        self.validate_identities()
    }

    fn validate_level(&self) -> Result<(), String> {
        let verification = &self.signature_verification;
        if verification.level.is_empty() {
            return Err(
                "signature verification level is empty or missing in the trust policy statement"
                    .into(),
            );
        }
        if !LEVELS.contains(&verification.level.as_str()) {
            return Err(format!(
                "invalid signature verification level {:?}",
                verification.level
            ));
        }
        if self.is_skip() && !verification.overrides.is_empty() {
            return Err(format!(
                "signature verification level {:?} can't be used to customize signature verification",
                verification.level
            ));
        }
        for (check, action) in &verification.overrides {
            let Some(check) = Check::parse(check) else {
                return Err(format!(
                    "verification type {check:?} in custom signature verification is not supported, supported values are [\"integrity\" \"authenticity\" \"authenticTimestamp\" \"expiry\" \"revocation\"]"
                ));
            };
            if !matches!(action.as_str(), "enforce" | "log" | "skip") {
                return Err(format!(
                    "verification action {action:?} in custom signature verification is not supported, supported values are [\"enforce\" \"log\" \"skip\"]"
                ));
            }
            if check == Check::Integrity {
                return Err(
                    "\"integrity\" verification can not be overridden in custom signature verification"
                        .into(),
                );
            }
            if action == "skip" && check != Check::Revocation {
                return Err(format!(
                    "{:?} verification can not be skipped in custom signature verification",
                    check.name()
                ));
            }
        }
        Ok(())
    }

    fn validate_store(&self, store: &str) -> Result<(), String> {
        let Some((kind, name)) = store.split_once(':') else {
            return Err(format!(
                "trust policy statement {:?} has malformed trust store value {store:?}. The required format is <TrustStoreType>:<TrustStoreName>",
                self.name
            ));
        };
        if !matches!(kind, "ca" | "signingAuthority" | "tsa") {
            return Err(format!(
                "trust policy statement {:?} uses an unsupported trust store type {kind:?} in trust store value {store:?}",
                self.name
            ));
        }
        let valid_name = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
        if !valid_name {
            return Err(format!(
                "trust policy statement {:?} uses an unsupported trust store name {name:?} in trust store value {store:?}. Named store name needs to follow [a-zA-Z0-9_.-]+ format",
                self.name
            ));
        }
        Ok(())
    }

    fn validate_identities(&self) -> Result<(), String> {
        let identities = &self.trusted_identities;
        if identities.iter().any(|i| i == "*") {
            if identities.len() > 1 {
                return Err(format!(
                    "trust policy statement {:?} uses a wildcard trusted identity '*', a wildcard identity cannot be used in conjunction with other values",
                    self.name
                ));
            }
            return Ok(());
        }
        let mut parsed: Vec<(&str, Dn)> = Vec::new();
        for identity in identities {
            if identity.is_empty() {
                return Err(format!(
                    "trust policy statement {:?} has an empty trusted identity",
                    self.name
                ));
            }
            let Some((prefix, value)) = identity.split_once(':') else {
                return Err(format!(
                    "trust policy statement {:?} has trusted identity {identity:?} missing separator",
                    self.name
                ));
            };
            if prefix != X509_SUBJECT {
                continue;
            }
            if value.trim().is_empty() {
                return Err(format!(
                    "trust policy statement {:?} has trusted identity {identity:?} without an identity value",
                    self.name
                ));
            }
            let dn = parse_dn(value).map_err(|e| {
                format!(
                    "trust policy statement {:?} has trusted identity {identity:?} with invalid identity value: {e}",
                    self.name
                )
            })?;
            if let Some((other, _)) = parsed
                .iter()
                .find(|(_, seen)| is_subset(seen, &dn) || is_subset(&dn, seen))
            {
                return Err(format!(
                    "trust policy statement {:?} has overlapping x509 trustedIdentities, {identity:?} overlaps with {other:?}",
                    self.name
                ));
            }
            parsed.push((identity, dn));
        }
        Ok(())
    }

    /// Whether the signing certificate's subject satisfies the trusted identities.
    pub fn trusts_subject(&self, subject: &Dn) -> Result<(), String> {
        if self.trusted_identities.iter().any(|i| i == "*") {
            return Ok(());
        }
        let trusted: Vec<Dn> = self
            .trusted_identities
            .iter()
            .filter_map(|i| i.split_once(':'))
            .filter(|(prefix, _)| *prefix == X509_SUBJECT)
            .filter_map(|(_, value)| parse_dn(value).ok())
            .collect();
        if trusted.is_empty() {
            return Err(format!(
                "no x509 trusted identities are configured in the trust policy {:?}",
                self.name
            ));
        }
        if trusted.iter().any(|dn| is_subset(dn, subject)) {
            return Ok(());
        }
        let shown: Vec<String> = trusted.iter().map(show_dn).collect();
        Err(format!(
            "signing certificate from the digital signature does not match the X.509 trusted identities [{}] defined in the trust policy {:?}",
            shown.join(" "),
            self.name
        ))
    }
}

const X509_SUBJECT: &str = "x509.subject";

/// A distinguished name as notation compares them: attribute type to value.
pub type Dn = BTreeMap<String, String>;

fn is_subset(part: &Dn, whole: &Dn) -> bool {
    part.iter().all(|(k, v)| whole.get(k) == Some(v))
}

/// Go's `%q` of a `map[string]string`, as notation prints trusted identities.
fn show_dn(dn: &Dn) -> String {
    let pairs: Vec<String> = dn.iter().map(|(k, v)| format!("{k:?}:{v:?}")).collect();
    format!("map[{}]", pairs.join(" "))
}

/// An RFC 4514 distinguished name (`C=US, ST=WA, O=Acme, CN=signer`): single-valued RDNs,
/// escapes decoded, `S` read as `ST`, each type once, and `C`, `ST` and `O` present.
pub fn parse_dn(text: &str) -> Result<Dn, String> {
    if text.contains("=#") {
        return Err(format!(
            "unsupported distinguished name (DN) {text:?}: notation does not support x509.subject identities containing \"=#\""
        ));
    }
    let mut dn = Dn::new();
    for rdn in split_unescaped(text, &[',', ';'])? {
        if split_unescaped(&rdn, &['+'])?.len() > 1 {
            return Err(format!(
                "distinguished name (DN) {text:?} has multi-valued RDN attributes, remove multi-valued RDN attributes as they are not supported"
            ));
        }
        let (kind, value) = rdn
            .split_once('=')
            .ok_or_else(|| format!("distinguished name (DN) {text:?} is not valid: {rdn:?}"))?;
        let kind = match kind.trim() {
            "S" => "ST".to_string(),
            other => other.to_string(),
        };
        let value = unescape(value.trim())?;
        if dn.insert(kind.clone(), value).is_some() {
            return Err(format!(
                "distinguished name (DN) {text:?} has duplicate RDN attribute for {kind:?}, DN can only have unique RDN attributes"
            ));
        }
    }
    for mandatory in ["C", "ST", "O"] {
        if dn.get(mandatory).is_none_or(|v| v.is_empty()) {
            return Err(format!(
                "distinguished name (DN) {text:?} has no mandatory RDN attribute for {mandatory:?}, it must contain 'C', 'ST' or 'S', and 'O' RDN attributes at a minimum"
            ));
        }
    }
    Ok(dn)
}

/// Splits at separators not escaped by a backslash, keeping the escapes for `unescape`.
fn split_unescaped(text: &str, separators: &[char]) -> Result<Vec<String>, String> {
    let mut parts = vec![String::new()];
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        let current = parts.last_mut().ok_or("empty split")?;
        if c == '\\' {
            current.push(c);
            current.push(chars.next().ok_or("a DN ends with a lone backslash")?);
        } else if separators.contains(&c) {
            parts.push(String::new());
        } else {
            current.push(c);
        }
    }
    Ok(parts)
}

/// RFC 4514 escapes: `\` before a special character, or two hex digits of a UTF-8 byte.
fn unescape(value: &str) -> Result<String, String> {
    let mut bytes = Vec::new();
    let raw = value.as_bytes();
    let mut i = 0;
    while i < raw.len() {
        if raw[i] != b'\\' {
            bytes.push(raw[i]);
            i += 1;
            continue;
        }
        let next = raw.get(i + 1).ok_or("a DN ends with a lone backslash")?;
        let hex = raw
            .get(i + 1..i + 3)
            .filter(|h| h.iter().all(u8::is_ascii_hexdigit))
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match hex {
            Some(byte) => {
                bytes.push(byte);
                i += 3;
            }
            None => {
                bytes.push(*next);
                i += 2;
            }
        }
    }
    String::from_utf8(bytes).map_err(|_| format!("the DN value {value:?} is not UTF-8"))
}

/// Scope format: `domain[:port]/repository`, lower-case repository path components.
fn check_scope(scope: &str) -> Result<(), String> {
    let tail = "make sure it is a fully qualified repository without the scheme, protocol or tag. For example domain.com/my/repository or a local scope like local/myOCILayout";
    if scope.contains('*') {
        return Err(format!(
            "registry scope {scope:?} with wild card(s) is not valid, {tail}"
        ));
    }
    let valid = scope.split_once('/').is_some_and(|(domain, repo)| {
        valid_domain(domain)
            && !repo.is_empty()
            && repo.split('/').all(|part| {
                !part.is_empty()
                    && part.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
                    && part.ends_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
                    && part.chars().all(|c| {
                        c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-')
                    })
            })
    });
    if !valid {
        return Err(format!("registry scope {scope:?} is not valid, {tail}"));
    }
    Ok(())
}

fn valid_domain(domain: &str) -> bool {
    let (host, port) = match domain.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (domain, None),
    };
    let port_ok = port.is_none_or(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()));
    let labels_ok = host.split('.').all(|label| {
        !label.is_empty()
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    });
    port_ok && labels_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(statements: serde_json::Value) -> Result<TrustPolicy, String> {
        TrustPolicy::parse(
            serde_json::json!({"version": "1.0", "trustPolicies": statements})
                .to_string()
                .as_bytes(),
        )
    }

    fn statement(level: &str, scopes: &[&str], identities: &[&str]) -> serde_json::Value {
        serde_json::json!({
            "name": format!("{level}-{}", scopes.join(",")),
            "registryScopes": scopes,
            "signatureVerification": {"level": level},
            "trustStores": ["ca:ours"],
            "trustedIdentities": identities,
        })
    }

    #[test]
    fn levels_decide_each_check_and_overrides_refine_them() {
        let p = policy(serde_json::json!([
            statement("strict", &["r.io/a"], &["*"]),
            statement("permissive", &["r.io/b"], &["*"]),
            statement("audit", &["*"], &["*"]),
        ]))
        .unwrap();
        let strict = p.applicable("r.io/a").unwrap();
        assert_eq!(strict.action(Check::Revocation), Action::Enforce);
        let permissive = p.applicable("r.io/b").unwrap();
        assert_eq!(permissive.action(Check::Authenticity), Action::Enforce);
        assert_eq!(permissive.action(Check::Expiry), Action::Log);
        let audit = p.applicable("r.io/other").unwrap();
        assert_eq!(audit.action(Check::Integrity), Action::Enforce);
        assert_eq!(audit.action(Check::Authenticity), Action::Log);

        let mut custom = statement("strict", &["*"], &["*"]);
        custom["signatureVerification"]["override"] = serde_json::json!({"revocation": "skip"});
        let p = policy(serde_json::json!([custom])).unwrap();
        let s = p.applicable("x.io/y").unwrap();
        assert_eq!(s.action(Check::Revocation), Action::Skip);
        assert_eq!(s.action(Check::Expiry), Action::Enforce);
    }

    #[test]
    fn invalid_policies_are_refused_with_notations_messages() {
        let cases = [
            (
                serde_json::json!({"trustPolicies": []}),
                "trust policy document has empty version",
            ),
            (
                serde_json::json!({"version": "1.0", "trustPolicies": []}),
                "can not have zero trust policy statements",
            ),
            (
                serde_json::json!({"version": "1.0", "trustPolicies": [statement("lenient", &["*"], &["*"])]}),
                "invalid signature verification level \"lenient\"",
            ),
            (
                serde_json::json!({"version": "1.0", "trustPolicies": [statement("strict", &["*"], &[])]}),
                "is either missing trust stores or trusted identities",
            ),
            (
                serde_json::json!({"version": "1.0", "trustPolicies": [statement("strict", &["*", "r.io/a"], &["*"])]}),
                "wildcard scope cannot be used in conjunction",
            ),
            (
                serde_json::json!({"version": "1.0", "trustPolicies": [statement("strict", &["*"], &["x509.subject: C=US, O=Acme"])]}),
                "has no mandatory RDN attribute for \"ST\"",
            ),
            (
                serde_json::json!({"version": "1.0", "trustPolicies": [statement("strict", &["*"], &["x509.subject: C=US, ST=WA, O=A", "x509.subject: C=US, ST=WA, O=A, CN=x"])]}),
                "has overlapping x509 trustedIdentities",
            ),
            (
                serde_json::json!({"version": "1.0", "trustPolicies": [statement("strict", &["HTTP://r.io/a"], &["*"])]}),
                "is not valid, make sure it is a fully qualified repository",
            ),
        ];
        for (document, expected) in cases {
            let why = TrustPolicy::parse(document.to_string().as_bytes()).unwrap_err();
            assert!(why.contains(expected), "{document}: {why}");
        }
        let mut integrity = statement("strict", &["*"], &["*"]);
        integrity["signatureVerification"]["override"] = serde_json::json!({"integrity": "log"});
        let why = policy(serde_json::json!([integrity])).unwrap_err();
        assert!(
            why.contains("\"integrity\" verification can not be overridden"),
            "{why}"
        );
    }

    #[test]
    fn skip_statements_drop_their_stores_and_identities_as_flux_does() {
        let p = policy(serde_json::json!([statement("skip", &["*"], &["*"])])).unwrap();
        let s = p.applicable("r.io/a").unwrap();
        assert!(s.is_skip() && s.trust_stores.is_empty() && s.trusted_identities.is_empty());
    }

    #[test]
    fn no_statement_for_a_repository_is_named() {
        let p = policy(serde_json::json!([statement(
            "strict",
            &["r.io/a"],
            &["*"]
        )]))
        .unwrap();
        let why = p.applicable("r.io/b").unwrap_err();
        assert!(
            why.starts_with("artifact \"r.io/b\" has no applicable trust policy statement"),
            "{why}"
        );
    }

    #[test]
    fn trusted_identities_match_a_subset_of_the_subject() {
        let p = policy(serde_json::json!([statement(
            "strict",
            &["*"],
            &["x509.subject: C=US, S=WA, O=Acme\\, Inc."]
        )]))
        .unwrap();
        let s = p.applicable("r.io/a").unwrap();
        let signer = parse_dn("CN=signer,O=Acme\\, Inc.,ST=WA,C=US").unwrap();
        assert_eq!(s.trusts_subject(&signer), Ok(()));
        let other = parse_dn("CN=signer,O=Other,ST=WA,C=US").unwrap();
        let why = s.trusts_subject(&other).unwrap_err();
        assert!(
            why.contains(
                r#"[map["C":"US" "O":"Acme, Inc." "ST":"WA"]] defined in the trust policy"#
            ),
            "{why}"
        );
        assert!(
            parse_dn("C=US+O=x, ST=WA")
                .unwrap_err()
                .contains("multi-valued")
        );
        assert!(
            parse_dn("C=US, C=CA, ST=WA, O=x")
                .unwrap_err()
                .contains("duplicate")
        );
        assert_eq!(parse_dn("C=U\\53, ST=WA, O=x").unwrap()["C"], "US");
        // An escaped sign before a digit is that sign, not a hex pair.
        assert_eq!(parse_dn("C=US, ST=WA, O=a\\+1").unwrap()["O"], "a+1");
    }
}
