//! What go-yaml makes of one scalar (resolve.go of go-yaml v2 and v3, and the decoders' tag
//! handling), as a value or as a mapping key, in each dialect.

use std::borrow::Cow;

use base64::Engine;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use serde_json::{Number, Value};
use serde_saphyr::granit_parser::{ScalarStyle, Tag};

use super::Dialect;
use super::strconv::{self, format_float_g32, parse_float, parse_int, parse_uint};
use super::timestamp::{self, Timestamp};

/// go-yaml's core tags live under this prefix (`!!str` is `tag:yaml.org,2002:str`).
const CORE_PREFIX: &str = "tag:yaml.org,2002:";

/// Go's `base64.StdEncoding`: padding required, stray bits in the last character ignored.
const GO_BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_allow_trailing_bits(true)
        .with_decode_padding_mode(DecodePaddingMode::RequireCanonical),
);

/// A node's tag, as go-yaml tells tags apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum TagKind {
    /// No tag.
    None,
    /// `!`: v3 resolves the scalar as if untagged, v2 keeps it a string.
    NonSpecific,
    Str,
    Int,
    Float,
    Bool,
    Null,
    Timestamp,
    Binary,
    Merge,
    /// Any other tag (`!foo`, `!!set`, ...): go-yaml cannot resolve it, so a scalar stays text.
    Other,
}

impl TagKind {
    pub(super) fn of(tag: Option<&Tag>) -> TagKind {
        let Some(tag) = tag else {
            return TagKind::None;
        };
        // granit-parser spells the non-specific `!` as an empty handle and the suffix "!".
        if tag.handle().is_empty() && tag.suffix() == "!" {
            return TagKind::NonSpecific;
        }
        match tag.suffix_in_namespace(CORE_PREFIX).as_deref() {
            Some("str") => TagKind::Str,
            Some("int") => TagKind::Int,
            Some("float") => TagKind::Float,
            Some("bool") => TagKind::Bool,
            Some("null") => TagKind::Null,
            Some("timestamp") => TagKind::Timestamp,
            Some("binary") => TagKind::Binary,
            Some("merge") => TagKind::Merge,
            _ => TagKind::Other,
        }
    }

    /// go-yaml's short name, for its error messages.
    fn go_name(self) -> &'static str {
        match self {
            TagKind::None | TagKind::NonSpecific | TagKind::Str | TagKind::Other => "!!str",
            TagKind::Int => "!!int",
            TagKind::Float => "!!float",
            TagKind::Bool => "!!bool",
            TagKind::Null => "!!null",
            TagKind::Timestamp => "!!timestamp",
            TagKind::Binary => "!!binary",
            TagKind::Merge => "!!merge",
        }
    }
}

/// A scalar as the dialect's decoder types it, before it is a JSON value or a key.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Typed {
    Null,
    Bool(bool),
    Int(i64),
    Uint(u64),
    /// Possibly ±Inf or NaN: go-yaml reads them, `encoding/json` then refuses them.
    Float(f64),
    Str(String),
    /// Only in the kustomize dialect; sigs.k8s.io/yaml keeps the text.
    Timestamp(Timestamp),
}

/// What go-yaml's `resolve()` found, before its tag check.
enum Resolved {
    Null,
    Bool(bool),
    Int(i64),
    Uint(u64),
    Float(f64),
    Str,
    Timestamp(Timestamp),
}

impl Resolved {
    fn go_name(&self) -> &'static str {
        match self {
            Resolved::Null => "!!null",
            Resolved::Bool(_) => "!!bool",
            Resolved::Int(_) | Resolved::Uint(_) => "!!int",
            Resolved::Float(_) => "!!float",
            Resolved::Str => "!!str",
            Resolved::Timestamp(_) => "!!timestamp",
        }
    }
}

/// A mapping key, as the dialect's reader turns it into an object key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Key {
    Text(String),
    /// A merge key (`<<`): its value's mappings are merged into this one.
    Merge,
    /// A key kyaml deletes before anything reads the mapping: text `<<` that is no merge key
    /// (kyaml clears every field named `<<` while inlining merge keys).
    Drop,
}

/// The scalar typed as the dialect's decoder types it into an `interface{}`.
pub(super) fn typed(
    dialect: Dialect,
    text: &str,
    style: ScalarStyle,
    tag: TagKind,
) -> Result<Typed, String> {
    let tag = match (dialect, tag) {
        // "Any data is accepted as a !!str or !!binary"; tags go-yaml cannot resolve leave
        // the text as it is.
        (_, TagKind::Str | TagKind::Other | TagKind::Merge) => {
            return Ok(Typed::Str(text.to_owned()));
        }
        (_, TagKind::Binary) => return binary(text).map(Typed::Str),
        // v2 keeps `!` as the tag, which it cannot resolve either.
        (Dialect::SigsYaml, TagKind::NonSpecific) => return Ok(Typed::Str(text.to_owned())),
        // Quoted and block scalars without a tag are strings.
        (_, TagKind::None | TagKind::NonSpecific) if style != ScalarStyle::Plain => {
            return Ok(Typed::Str(text.to_owned()));
        }
        (_, TagKind::None | TagKind::NonSpecific) => TagKind::None,
        // A core tag is checked on the text whatever its style: `!!int "0755"` is 493.
        (_, core) => core,
    };
    Ok(match checked(tag, text, resolve(dialect, tag, text))? {
        Resolved::Null => Typed::Null,
        Resolved::Bool(b) => Typed::Bool(b),
        Resolved::Int(i) => Typed::Int(i),
        Resolved::Uint(u) => Typed::Uint(u),
        Resolved::Float(f) => Typed::Float(f),
        // go-yaml v2 hands a timestamp to an interface{} as its text ("TODO(v3) Drop this").
        Resolved::Timestamp(t) if dialect == Dialect::Kustomize => Typed::Timestamp(t),
        Resolved::Timestamp(_) | Resolved::Str => Typed::Str(text.to_owned()),
    })
}

/// The scalar in value position as JSON: numbers as Go typed them (a float stays a float even
/// when integral), or the reason `encoding/json` refuses it.
pub(super) fn value(typed: Typed) -> Result<Value, String> {
    Ok(match typed {
        Typed::Null => Value::Null,
        Typed::Bool(b) => Value::Bool(b),
        Typed::Int(i) => Value::from(i),
        Typed::Uint(u) => Value::from(u),
        Typed::Float(f) => match Number::from_f64(f) {
            Some(n) => Value::Number(n),
            None => return Err(format!("json: unsupported value: {}", go_float_name(f))),
        },
        Typed::Str(s) => Value::String(s),
        Typed::Timestamp(t) => Value::String(
            t.to_json()
                .map_err(|e| format!("json: error calling MarshalJSON for type time.Time: {e}"))?,
        ),
    })
}

/// The scalar as a mapping key. `top` is the document's own mapping, whose keys kustomize
/// reads into a Go `map[string]interface{}`: any scalar's text is accepted there, while a
/// nested mapping needs string keys to become JSON.
pub(super) fn key(
    dialect: Dialect,
    text: &str,
    style: ScalarStyle,
    tag: TagKind,
    top: bool,
) -> Result<Key, String> {
    if is_merge_key(text, style, tag) {
        return Ok(Key::Merge);
    }
    if dialect == Dialect::Kustomize && text == "<<" {
        return Ok(Key::Drop);
    }
    let typed = typed(dialect, text, style, tag)?;
    match dialect {
        Dialect::Kustomize => kustomize_key(text, tag, typed, top),
        Dialect::SigsYaml => sigs_yaml_key(typed).map(Key::Text),
    }
}

/// Whether go-yaml reads this text, written plain and untagged, as a string.
pub(super) fn plain_is_string(dialect: Dialect, text: &str) -> bool {
    matches!(resolve(dialect, TagKind::None, text), Resolved::Str)
}

/// A plain `<<` (untagged or `!`), or `<<` tagged `!!merge`.
fn is_merge_key(text: &str, style: ScalarStyle, tag: TagKind) -> bool {
    text == "<<"
        && (tag == TagKind::Merge
            || (style == ScalarStyle::Plain && matches!(tag, TagKind::None | TagKind::NonSpecific)))
}

/// go-yaml v3 decodes a mapping with only `!!str` keys into a `map[string]interface{}`, any
/// other into a `map[interface{}]interface{}` that `encoding/json` refuses; the document's own
/// mapping is a `map[string]interface{}` already, which takes any scalar's text (a `!!binary`
/// key decoded).
fn kustomize_key(text: &str, tag: TagKind, typed: Typed, top: bool) -> Result<Key, String> {
    let string_tag = matches!(tag, TagKind::None | TagKind::NonSpecific | TagKind::Str);
    match typed {
        // kyaml cannot set a field whose key reads as null (it adds a second one, which
        // go-yaml then calls a duplicate).
        Typed::Null => Err(format!("mapping key {text:?} is null")),
        Typed::Str(s) if top || string_tag => Ok(Key::Text(s)),
        _ if top => Ok(Key::Text(text.to_owned())),
        _ => Err(format!(
            "mapping key {text:?} is not a string, which kustomize cannot write as JSON \
             (json: unsupported type: map[interface {{}}]interface {{}})"
        )),
    }
}

/// sigs.k8s.io/yaml's `convertToJSONableObject`: keys of other types become their Go text.
fn sigs_yaml_key(typed: Typed) -> Result<String, String> {
    Ok(match typed {
        Typed::Str(s) => s,
        Typed::Bool(b) => b.to_string(),
        Typed::Int(i) => i.to_string(),
        Typed::Float(f) => match format_float_g32(f).as_str() {
            "+Inf" => ".inf".to_string(),
            "-Inf" => "-.inf".to_string(),
            "NaN" => ".nan".to_string(),
            text => text.to_string(),
        },
        Typed::Null => return Err("unsupported map key of type: <nil>".to_string()),
        Typed::Uint(u) => return Err(format!("unsupported map key of type: uint64 ({u})")),
        // v2 has no timestamps in an interface{}; `typed` already kept the text.
        Typed::Timestamp(t) => return Err(format!("unsupported map key {t:?}")),
    })
}

/// go-yaml's `resolve(tag, in)` for an untagged plain scalar (`TagKind::None`) or one with a
/// core tag; `checked` then holds the result against the tag.
fn resolve(dialect: Dialect, tag: TagKind, text: &str) -> Resolved {
    if tag == TagKind::Str {
        return Resolved::Str;
    }
    // The first character hints at what the text may be; go-yaml tries nothing else.
    let Some(&first) = text.as_bytes().first() else {
        return Resolved::Null;
    };
    let hint = match first {
        b'+' | b'-' | b'0'..=b'9' => Hint::Number,
        b'.' => Hint::Dot,
        b'y' | b'Y' | b'n' | b'N' | b't' | b'T' | b'f' | b'F' | b'o' | b'O' | b'~' => Hint::Word,
        _ => return Resolved::Str,
    };
    if let Some(resolved) = special(dialect, text) {
        return resolved;
    }
    match hint {
        Hint::Word => Resolved::Str,
        Hint::Dot => parse_float(text).map_or(Resolved::Str, Resolved::Float),
        Hint::Number => number(dialect, tag, text),
    }
}

enum Hint {
    Number,
    Dot,
    Word,
}

/// go-yaml's `resolveMap`: booleans (v2 has YAML 1.1's, exact case), nulls, `.nan`, `.inf`.
fn special(dialect: Dialect, text: &str) -> Option<Resolved> {
    Some(match text {
        "true" | "True" | "TRUE" => Resolved::Bool(true),
        "false" | "False" | "FALSE" => Resolved::Bool(false),
        "~" | "null" | "Null" | "NULL" => Resolved::Null,
        ".nan" | ".NaN" | ".NAN" => Resolved::Float(f64::NAN),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => Resolved::Float(f64::INFINITY),
        "-.inf" | "-.Inf" | "-.INF" => Resolved::Float(f64::NEG_INFINITY),
        _ if dialect == Dialect::SigsYaml => match text {
            "y" | "Y" | "yes" | "Yes" | "YES" | "on" | "On" | "ON" => Resolved::Bool(true),
            "n" | "N" | "no" | "No" | "NO" | "off" | "Off" | "OFF" => Resolved::Bool(false),
            _ => return None,
        },
        _ => return None,
    })
}

/// Text starting with a digit or sign: a timestamp, then Go's base-0 integers with every `_`
/// removed, then a YAML-style float, then go-yaml's `0b` (and in v3 `0o`) fallbacks, which
/// accept a sign after the prefix.
fn number(dialect: Dialect, tag: TagKind, text: &str) -> Resolved {
    if matches!(tag, TagKind::None | TagKind::Timestamp)
        && let Some(t) = timestamp::parse(text)
    {
        return Resolved::Timestamp(t);
    }
    let plain = text.replace('_', "");
    if let Some(i) = parse_int(&plain, 0) {
        return Resolved::Int(i);
    }
    if let Some(u) = parse_uint(&plain, 0) {
        return Resolved::Uint(u);
    }
    if strconv::is_yaml_style_float(&plain)
        && let Some(f) = parse_float(&plain)
    {
        return Resolved::Float(f);
    }
    let fallbacks: &[(&str, u32)] = match dialect {
        Dialect::Kustomize => &[("0b", 2), ("0o", 8)],
        Dialect::SigsYaml => &[("0b", 2)],
    };
    for &(prefix, base) in fallbacks {
        if let Some(digits) = plain.strip_prefix(prefix) {
            if let Some(i) = parse_int(digits, base) {
                return Resolved::Int(i);
            }
            if let Some(u) = parse_uint(digits, base) {
                return Resolved::Uint(u);
            }
        } else if let Some(digits) = plain.strip_prefix('-').and_then(|p| p.strip_prefix(prefix))
            && let Some(i) = parse_int(&format!("-{digits}"), base)
        {
            return Resolved::Int(i);
        }
    }
    Resolved::Str
}

/// go-yaml's deferred check in `resolve`: a tagged scalar must resolve to its tag, except that
/// `!!float` takes an integer (not a uint64) as a float.
fn checked(tag: TagKind, text: &str, resolved: Resolved) -> Result<Resolved, String> {
    let fits = match (tag, &resolved) {
        (TagKind::None | TagKind::Str, _)
        | (TagKind::Int, Resolved::Int(_) | Resolved::Uint(_))
        | (TagKind::Float, Resolved::Float(_))
        | (TagKind::Bool, Resolved::Bool(_))
        | (TagKind::Null, Resolved::Null)
        | (TagKind::Timestamp, Resolved::Timestamp(_)) => true,
        (TagKind::Float, Resolved::Int(i)) => return Ok(Resolved::Float(*i as f64)),
        _ => false,
    };
    match fits {
        true => Ok(resolved),
        false => Err(format!(
            "cannot decode {} `{text}` as a {}",
            resolved.go_name(),
            tag.go_name()
        )),
    }
}

/// A `!!binary` scalar: Go's standard base64 (line breaks ignored), the bytes then a Go string,
/// which `encoding/json` writes with each invalid UTF-8 byte replaced by U+FFFD.
fn binary(text: &str) -> Result<String, String> {
    let compact: Cow<'_, str> = match text.contains(['\r', '\n']) {
        true => Cow::Owned(text.replace(['\r', '\n'], "")),
        false => Cow::Borrowed(text),
    };
    let bytes = GO_BASE64
        .decode(compact.as_bytes())
        .map_err(|_| "!!binary value contains invalid base64 data".to_string())?;
    Ok(go_json_string(&bytes))
}

/// Bytes as `encoding/json` writes them: one U+FFFD for every byte that does not start a valid
/// UTF-8 sequence (Rust's lossy conversion would merge some of them).
fn go_json_string(mut bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    loop {
        match std::str::from_utf8(bytes) {
            Ok(valid) => {
                out.push_str(valid);
                return out;
            }
            Err(e) => {
                let (valid, rest) = bytes.split_at(e.valid_up_to());
                out.push_str(std::str::from_utf8(valid).unwrap_or_default());
                out.push('\u{FFFD}');
                bytes = rest.get(1..).unwrap_or_default();
            }
        }
    }
}

/// Go's `%v` of a non-finite float, as in `json: unsupported value: +Inf`.
fn go_float_name(f: f64) -> &'static str {
    match f {
        f if f.is_nan() => "NaN",
        f if f > 0.0 => "+Inf",
        _ => "-Inf",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const K: Dialect = Dialect::Kustomize;
    const S: Dialect = Dialect::SigsYaml;

    fn plain(dialect: Dialect, text: &str) -> Result<Value, String> {
        value(typed(dialect, text, ScalarStyle::Plain, TagKind::None)?)
    }

    fn tagged(dialect: Dialect, tag: TagKind, text: &str) -> Result<Value, String> {
        value(typed(dialect, text, ScalarStyle::Plain, tag)?)
    }

    #[test]
    fn base64_is_gos() {
        assert_eq!(binary("aGVsbG8="), Ok("hello".to_string()));
        assert_eq!(binary("aGVs\nbG8=\n"), Ok("hello".to_string()));
        assert_eq!(binary("/w=="), Ok("\u{FFFD}".to_string()));
        // Go ignores the unused bits of the last character.
        assert_eq!(binary("/x=="), Ok("\u{FFFD}".to_string()));
        assert!(binary("aGk").is_err(), "padding is required");
        assert!(binary("aG k=").is_err(), "only line breaks are skipped");
    }

    #[test]
    fn invalid_utf8_is_replaced_byte_by_byte() {
        assert_eq!(go_json_string(b"a\xE2\x82b"), "a\u{FFFD}\u{FFFD}b");
        assert_eq!(go_json_string(b"\xFF\xFE"), "\u{FFFD}\u{FFFD}");
        assert_eq!(go_json_string("é".as_bytes()), "é");
    }

    #[test]
    fn tag_checks_fail_as_go_yamls() {
        for (dialect, tag, text, message) in [
            (
                K,
                TagKind::Bool,
                "yes",
                "cannot decode !!str `yes` as a !!bool",
            ),
            (
                K,
                TagKind::Int,
                "1.5",
                "cannot decode !!float `1.5` as a !!int",
            ),
            (
                S,
                TagKind::Float,
                "18446744073709551615",
                "cannot decode !!int `18446744073709551615` as a !!float",
            ),
            (
                K,
                TagKind::Timestamp,
                "foo",
                "cannot decode !!str `foo` as a !!timestamp",
            ),
            (K, TagKind::Null, "x", "cannot decode !!str `x` as a !!null"),
            (
                K,
                TagKind::Float,
                "1e400",
                "cannot decode !!str `1e400` as a !!float",
            ),
        ] {
            assert_eq!(
                tagged(dialect, tag, text),
                Err(message.to_string()),
                "{text}"
            );
        }
        assert_eq!(tagged(S, TagKind::Bool, "yes"), Ok(Value::Bool(true)));
    }

    #[test]
    fn non_finite_floats_are_refused_as_json() {
        for text in [".inf", "-.Inf", "+.INF", ".nan"] {
            for dialect in [K, S] {
                let err = plain(dialect, text).unwrap_err();
                assert!(
                    err.starts_with("json: unsupported value: "),
                    "{text}: {err}"
                );
            }
        }
        for text in ["+.nan", "inf", "NaN", "-.nan"] {
            assert_eq!(
                plain(K, text),
                Ok(Value::String(text.to_string())),
                "{text}"
            );
        }
    }

    #[test]
    fn keys_follow_each_readers_rules() {
        let p = ScalarStyle::Plain;
        let q = ScalarStyle::DoubleQuoted;
        let text = |t: &str| Ok(Key::Text(t.to_string()));
        // go-yaml v3: nested keys must be strings; the document's own keys are their text.
        assert_eq!(key(K, "on", p, TagKind::None, false), text("on"));
        assert_eq!(key(K, "1", q, TagKind::None, false), text("1"));
        assert_eq!(key(K, "1", p, TagKind::Str, false), text("1"));
        assert!(key(K, "1", p, TagKind::None, false).is_err());
        assert!(key(K, "true", p, TagKind::None, false).is_err());
        assert!(key(K, "2001-12-14", p, TagKind::None, false).is_err());
        assert!(key(K, "a", p, TagKind::Other, false).is_err());
        assert!(key(K, "aGk=", p, TagKind::Binary, false).is_err());
        assert_eq!(key(K, "a", p, TagKind::Other, true), text("a"));
        assert_eq!(key(K, "0x1F", p, TagKind::None, true), text("0x1F"));
        assert_eq!(key(K, "1.0", p, TagKind::None, true), text("1.0"));
        assert_eq!(key(K, "aGk=", p, TagKind::Binary, true), text("hi"));
        assert!(key(K, "yes", p, TagKind::Bool, true).is_err());
        assert!(key(K, "~", p, TagKind::None, true).is_err());
        // Merge keys, and text `<<` that kyaml deletes.
        assert_eq!(key(K, "<<", p, TagKind::None, false), Ok(Key::Merge));
        assert_eq!(key(K, "<<", p, TagKind::NonSpecific, false), Ok(Key::Merge));
        assert_eq!(key(K, "<<", q, TagKind::Merge, false), Ok(Key::Merge));
        assert_eq!(key(K, "<<", q, TagKind::None, false), Ok(Key::Drop));
        assert_eq!(key(S, "<<", q, TagKind::None, false), text("<<"));
        // sigs.k8s.io/yaml: every key becomes Go's text of its value.
        assert_eq!(key(S, "yes", p, TagKind::None, false), text("true"));
        assert_eq!(key(S, "0x1F", p, TagKind::None, false), text("31"));
        assert_eq!(key(S, "1.0", p, TagKind::None, false), text("1"));
        assert_eq!(key(S, "1e6", p, TagKind::None, false), text("1e+06"));
        assert_eq!(key(S, ".inf", p, TagKind::None, false), text(".inf"));
        assert_eq!(
            key(S, "2001-12-14", p, TagKind::None, false),
            text("2001-12-14")
        );
        assert!(key(S, "~", p, TagKind::None, false).is_err());
        assert!(key(S, "18446744073709551615", p, TagKind::None, false).is_err());
    }
}
