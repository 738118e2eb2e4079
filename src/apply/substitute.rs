//! Post-build variable substitution as Flux runs it on each built object: bash-style `${var}`
//! references in the object's YAML.

// An unset variable without a default becomes empty, or fails the build in strict mode (Flux's
// `StrictPostBuildSubstitutions` gate).

use std::collections::BTreeMap;

pub const DISABLED_KEY: &str = "kustomize.toolkit.fluxcd.io/substitute";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SubstituteError {
    #[error("variable not set (strict mode): \"{0}\"")]
    Unset(String),
    #[error("'{0}' var name is invalid, must match '^[_[:alpha:]][_[:alpha:][:digit:]]*$'")]
    InvalidName(String),
    #[error("unterminated variable reference '${{{0}'")]
    Unterminated(String),
}

/// Checks every variable name as Flux does before substituting.
pub fn validate_names(vars: &BTreeMap<String, String>) -> Result<(), SubstituteError> {
    for name in vars.keys() {
        if !is_valid_name(name) {
            return Err(SubstituteError::InvalidName(name.clone()));
        }
    }
    Ok(())
}

fn is_valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c == '_' || c.is_ascii_alphabetic())
        && chars.all(|c| c == '_' || c.is_ascii_alphanumeric())
}

/// Replaces `${var}`, `${var:=default}`, `${var:-default}`, `${var=default}` and
/// `${var-default}`; `$${...}` stands for a literal `${...}` and `$var` without braces is left
/// alone.
pub fn substitute(
    text: &str,
    vars: &BTreeMap<String, String>,
    strict: bool,
) -> Result<String, SubstituteError> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(escaped) = after.strip_prefix("${") {
            // `$${x}` → `${x}`, untouched.
            let end = escaped.find('}').map_or(escaped.len(), |e| e + 1);
            out.push_str("${");
            out.push_str(&escaped[..end]);
            rest = &escaped[end..];
            continue;
        }
        let Some(body_start) = after.strip_prefix('{') else {
            out.push('$');
            rest = after;
            continue;
        };
        let end = body_start
            .find('}')
            .ok_or_else(|| SubstituteError::Unterminated(body_start.chars().take(40).collect()))?;
        let body = &body_start[..end];
        out.push_str(&expand(body, vars, strict)?);
        rest = &body_start[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

fn expand(
    body: &str,
    vars: &BTreeMap<String, String>,
    strict: bool,
) -> Result<String, SubstituteError> {
    let name_len = body
        .find(|c: char| !(c == '_' || c.is_ascii_alphanumeric()))
        .unwrap_or(body.len());
    let (name, op) = body.split_at(name_len);
    let value = vars.get(name);
    let default = [":=", ":-", "=", "-"]
        .iter()
        .find_map(|prefix| op.strip_prefix(prefix).map(|d| (*prefix, d)));
    match (value, default) {
        (Some(v), Some((p, d))) if v.is_empty() && p.starts_with(':') => Ok(d.to_string()),
        (Some(v), _) => Ok(v.clone()),
        (None, Some((_, d))) => Ok(d.to_string()),
        (None, None) if !strict => Ok(String::new()),
        (None, None) if op.is_empty() => Err(SubstituteError::Unset(name.to_string())),
        (None, None) => Err(SubstituteError::Unset(body.to_string())),
    }
}

/// Whether an object opted out with the label or annotation.
pub fn is_disabled(object: &serde_json::Value) -> bool {
    ["labels", "annotations"].iter().any(|field| {
        object
            .pointer(&format!("/metadata/{field}"))
            .and_then(|m| m.get(DISABLED_KEY))
            .and_then(|v| v.as_str())
            .is_some_and(|v| v.eq_ignore_ascii_case("disabled"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn braces_defaults_and_escapes() {
        let v = vars(&[("app", "web"), ("empty", "")]);
        assert_eq!(
            substitute("name: ${app}-x", &v, true).unwrap(),
            "name: web-x"
        );
        assert_eq!(substitute("r: ${replicas:=3}", &v, true).unwrap(), "r: 3");
        assert_eq!(substitute("r: ${empty:=3}", &v, true).unwrap(), "r: 3");
        assert_eq!(substitute("r: ${empty=3}", &v, true).unwrap(), "r: ");
        assert_eq!(
            substitute("keep $app and $${app}", &v, true).unwrap(),
            "keep $app and ${app}"
        );
        assert_eq!(substitute("cost: $5", &v, true).unwrap(), "cost: $5");
    }

    #[test]
    fn unset_variables_are_empty_unless_strict() {
        assert_eq!(
            substitute("x: ${missing}", &vars(&[]), true),
            Err(SubstituteError::Unset("missing".into()))
        );
        assert_eq!(
            substitute("x: ${missing}", &vars(&[]), false).unwrap(),
            "x: "
        );
        assert_eq!(
            substitute("x: ${missing:=d}", &vars(&[]), false).unwrap(),
            "x: d"
        );
        assert!(matches!(
            substitute("x: ${open", &vars(&[]), false),
            Err(SubstituteError::Unterminated(_))
        ));
    }

    #[test]
    fn names_must_be_shell_identifiers() {
        assert!(validate_names(&vars(&[("_ok1", ""), ("Ok", "")])).is_ok());
        assert_eq!(
            validate_names(&vars(&[("1bad", "")])),
            Err(SubstituteError::InvalidName("1bad".into()))
        );
        assert!(validate_names(&vars(&[("a-b", "")])).is_err());
    }

    #[test]
    fn opt_out_by_label_or_annotation() {
        let o = serde_json::json!({"metadata": {"annotations": {DISABLED_KEY: "disabled"}}});
        assert!(is_disabled(&o));
        let o = serde_json::json!({"metadata": {"labels": {DISABLED_KEY: "Disabled"}}});
        assert!(is_disabled(&o));
        assert!(!is_disabled(&serde_json::json!({"metadata": {}})));
    }
}
