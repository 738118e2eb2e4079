//! YAML read as Flux's readers read it (kustomize's go-yaml v3, sigs.k8s.io/yaml's go-yaml
//! v2), into JSON values within explicit budgets.

// Flux never reads YAML with a YAML 1.1 or 1.2 reader of its own choosing: manifests go
// through kustomize (kyaml, go-yaml v3, then `encoding/json`), text re-read after post-build
// substitution and the user's kustomization.yaml through sigs.k8s.io/yaml (go-yaml v2). Their
// scalar rules differ from any YAML library's defaults (`on` is a string for one and `true`
// for the other, `0755` is 493 for both, `2001-12-14` a timestamp for one only), so the values
// are built from the parser's events here with go-yaml's own resolution: see `Dialect`.
//
// A parser's budget caps one parse only: a file whose aliases expand to 64 MiB of strings
// would pass, and a build parses every file of the artifact with a fresh parse, so an artifact
// of many small alias bombs ("billion laughs" kept under the per-parse caps) would multiply
// into the controller's memory. Here the budget of one parse is the file's own size plus what
// is left of a per-build allowance for alias expansion: YAML without aliases can never need
// more nodes or string bytes than it has bytes of text, so it always fits, and whatever a file
// expands to beyond its size is charged to the build. In total a build then holds at most
// about twice what plain YAML of the artifact's size could (bounded by
// `--artifact-max-bytes`), plus the allowance.

mod coerce;
mod load;
mod ordered;
mod resolve;
mod strconv;
mod timestamp;

use std::io::Read;
use std::path::Path;

use serde_json::Value;

use load::{Documents, Limits, Numbers};
pub use ordered::{Ordered, ordered_documents};

/// Largest YAML file read from an artifact. CRD bundles, the biggest real manifests, run to a
/// few MiB; this is also the string budget serde-saphyr gave every file by default.
pub const MAX_FILE_BYTES: u64 = 64 << 20;
/// Deepest nesting of mappings and sequences. Converting, comparing and dropping a JSON value
/// recurse per level: in a debug build ~90 levels exhaust the 2 MiB stack of a tokio thread
/// (and a stack overflow aborts the whole controller), so the 64 that applied before stays.
pub const MAX_DEPTH: usize = 64;
/// Most documents in one file; each is at least a few bytes of text, and all of them are
/// charged to the same budget anyway.
pub const MAX_DOCUMENTS: usize = 10_000;
/// Most alias references in one file. Manifests use a handful, if any.
pub const MAX_ALIASES: usize = 10_000;
/// String bytes alias expansion may add to one build, over all its files.
pub const MAX_ALIAS_BYTES: usize = 4 << 20;
/// Nodes (scalars, mappings, sequences) alias expansion may add to one build.
pub const MAX_ALIAS_NODES: usize = 100_000;

/// Whose reading of YAML a parse reproduces.
///
/// | | `Kustomize` (go-yaml v3 + encoding/json) | `SigsYaml` (go-yaml v2) |
/// |---|---|---|
/// | booleans | `true` `True` `TRUE`, `false` ... | also `y` `yes` `Yes` `on` `ON` ..., `n` ... |
/// | `tRUE`, `oN`, `NULL`-like mixed case | strings | strings |
/// | `2001-12-14` (plain) | `"2001-12-14T00:00:00Z"` (RFC 3339) | `"2001-12-14"` |
/// | `0755` `0o17` `0X1F` `0B101` `1_000` | 493 15 31 5 1000 | same |
/// | `1e3` `1.0` `!!float 1` | 1000 1 1 (integers, as Go's JSON) | same |
/// | `.inf` `.nan` | refused (Go's JSON refuses them) | refused |
/// | `!foo 123` / `! 123` | `"123"` / 123 | `"123"` / `"123"` |
/// | duplicate key | refused | the last wins |
/// | merge key `<<` | own keys, then earlier maps win | where it stands, earlier maps win |
/// | non-string nested key | refused (kustomize cannot write it) | Go's text (`yes:` is `"true"`) |
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// kustomize/kyaml: manifests of plain directories, and `kustomize build` output.
    Kustomize,
    /// sigs.k8s.io/yaml: text re-read after post-build substitution, and kustomization files
    /// (Flux's generator reads them this way).
    SigsYaml,
}

#[derive(Debug, thiserror::Error)]
pub enum YamlError {
    #[error("file is larger than the limit of {MAX_FILE_BYTES} bytes for one YAML file")]
    TooLarge,
    #[error(
        "{0}; YAML from an artifact may nest at most {MAX_DEPTH} levels, use at most \
         {MAX_ALIASES} aliases per file, and its aliases may add at most {MAX_ALIAS_BYTES} \
         bytes and {MAX_ALIAS_NODES} nodes to a build"
    )]
    OverBudget(String),
    /// Not YAML.
    #[error("{0}")]
    Invalid(String),
    /// YAML that Flux's reader refuses too (a duplicate key, a value JSON cannot hold, a
    /// scalar that is not what its tag says).
    #[error("line {line}: {message}")]
    Rejected { line: usize, message: String },
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// The alias-expansion allowance left to one build; share one across everything it parses.
#[derive(Debug, Clone)]
pub struct Budget {
    alias_bytes: usize,
    alias_nodes: usize,
}

impl Default for Budget {
    fn default() -> Self {
        Budget {
            alias_bytes: MAX_ALIAS_BYTES,
            alias_nodes: MAX_ALIAS_NODES,
        }
    }
}

impl Budget {
    /// Charges what a parse of `text` used beyond the text's own size.
    fn charge(&mut self, text: &str, used: Used) {
        let extra_nodes = used.nodes.saturating_sub(text.len());
        let extra_bytes = used.scalar_bytes.saturating_sub(text.len());
        self.alias_nodes = self.alias_nodes.saturating_sub(extra_nodes);
        self.alias_bytes = self.alias_bytes.saturating_sub(extra_bytes);
    }
}

/// What one parse built, aliases expanded included.
#[derive(Debug, Clone, Copy, Default)]
struct Used {
    nodes: usize,
    scalar_bytes: usize,
}

/// Reads a YAML file, refusing one over `MAX_FILE_BYTES` without reading it all.
pub fn read_file(path: &Path) -> Result<String, YamlError> {
    let file = std::fs::File::open(path)?;
    let mut text = String::new();
    file.take(MAX_FILE_BYTES + 1).read_to_string(&mut text)?;
    if text.len() as u64 > MAX_FILE_BYTES {
        return Err(YamlError::TooLarge);
    }
    Ok(text)
}

/// Every document of a multi-document text, as `dialect`'s reader hands it to the API server
/// (empty documents are `Null`).
pub fn documents(
    text: &str,
    budget: &mut Budget,
    dialect: Dialect,
) -> Result<Vec<Value>, YamlError> {
    parse(text, budget, dialect, Numbers::Json, Documents::All)
}

/// The first document of a text (sigs.k8s.io/yaml reads no further), `Null` when there is
/// none.
pub fn document(text: &str, budget: &mut Budget, dialect: Dialect) -> Result<Value, YamlError> {
    let docs = parse(text, budget, dialect, Numbers::Json, Documents::First)?;
    Ok(docs.into_iter().next().unwrap_or(Value::Null))
}

/// A kustomization file as Flux's generator reads it: go-yaml v2, with numbers and booleans
/// under kustomize's string fields turned into Go's text of them (`newTag: 1.20` is "1.2").
pub fn kustomization(text: &str, budget: &mut Budget) -> Result<Value, YamlError> {
    let docs = parse(
        text,
        budget,
        Dialect::SigsYaml,
        Numbers::GoTyped,
        Documents::First,
    )?;
    let mut value = docs.into_iter().next().unwrap_or(Value::Null);
    coerce::kustomization(&mut value);
    // The other numbers as Flux writes the file back: through encoding/json.
    Ok(load::json_numbers(value, Dialect::SigsYaml))
}

fn parse(
    text: &str,
    budget: &mut Budget,
    dialect: Dialect,
    numbers: Numbers,
    documents: Documents,
) -> Result<Vec<Value>, YamlError> {
    if text.len() as u64 > MAX_FILE_BYTES {
        return Err(YamlError::TooLarge);
    }
    let limits = Limits {
        nodes: text.len().saturating_add(budget.alias_nodes),
        scalar_bytes: text.len().saturating_add(budget.alias_bytes),
    };
    let mut used = Used::default();
    let parsed = load::load(text, dialect, numbers, documents, limits, &mut used);
    budget.charge(text, used);
    parsed
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const K: Dialect = Dialect::Kustomize;
    const S: Dialect = Dialect::SigsYaml;

    /// One anchored string of `size` bytes, then `aliases` references to it.
    fn wide_laughs(size: usize, aliases: usize) -> String {
        let mut text = format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: laughs\ndata:\n  a: &a \"{}\"\n",
            "x".repeat(size)
        );
        for i in 0..aliases {
            text.push_str(&format!("  k{i}: *a\n"));
        }
        text
    }

    /// The classic: ten references per level, nine levels.
    fn billion_laughs() -> String {
        let mut text = String::from(
            "a0: &a0 [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
        );
        for level in 1..10 {
            let refs = vec![format!("*a{}", level - 1); 10].join(",");
            text.push_str(&format!("a{level}: &a{level} [{refs}]\n"));
        }
        text
    }

    fn assert_over_budget<T: std::fmt::Debug>(result: Result<T, YamlError>) {
        match result {
            Err(err @ YamlError::OverBudget(_)) => {
                assert!(err.to_string().contains("aliases may add at most"), "{err}");
            }
            other => panic!("expected a budget error, got {other:?}"),
        }
    }

    /// The first document of `text` in `dialect`, as JSON.
    fn read(dialect: Dialect, text: &str) -> Result<Value, YamlError> {
        document(text, &mut Budget::default(), dialect)
    }

    fn json(text: &str) -> Value {
        serde_json::from_str(text).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    #[test]
    fn plain_manifests_parse() {
        let text = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n---\nkind: x\n";
        let docs = documents(text, &mut Budget::default(), K).unwrap();
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[0]["metadata"]["name"], "a");
    }

    #[test]
    fn modest_aliases_parse_and_expand() {
        let text = "base: &env {A: \"1\", B: \"2\"}\none: *env\ntwo: *env\n";
        for dialect in [K, S] {
            let doc = read(dialect, text).unwrap();
            assert_eq!(doc["two"]["B"], "2");
        }
    }

    #[test]
    fn the_classic_billion_laughs_is_refused() {
        for dialect in [K, S] {
            assert_over_budget(documents(
                &billion_laughs(),
                &mut Budget::default(),
                dialect,
            ));
        }
    }

    #[test]
    fn one_file_cannot_expand_far_beyond_its_size() {
        // 1 MiB anchored, 40 references: 41 MiB, which serde-saphyr's defaults let through.
        let text = wide_laughs(1 << 20, 40);
        assert_over_budget(documents(&text, &mut Budget::default(), K));
    }

    #[test]
    fn expansion_is_charged_across_the_files_of_a_build() {
        // Each file expands by ~1 MiB, a quarter of the allowance, which runs out by the fifth.
        let text = wide_laughs(64 << 10, 16);
        let mut budget = Budget::default();
        for _ in 0..3 {
            documents(&text, &mut budget, K).unwrap();
        }
        let mut refused = false;
        for _ in 0..3 {
            refused |= documents(&text, &mut budget, K).is_err();
        }
        assert!(refused, "the allowance was never used up");
        assert_over_budget(documents(&text, &mut budget, K));
        // A fresh build has its whole allowance again.
        documents(&text, &mut Budget::default(), K).unwrap();
    }

    #[test]
    fn deep_nesting_is_refused_past_the_limit() {
        let nested = |depth: usize| format!("{}1{}", "[".repeat(depth), "]".repeat(depth));
        read(K, &nested(MAX_DEPTH - 1)).unwrap();
        assert_over_budget(read(K, &nested(MAX_DEPTH + 1)));
        // Nor can an alias nest a deep collection deeper still.
        let half = MAX_DEPTH / 2 + 1;
        let text = format!(
            "a: &a {}1{}\nb: {}*a{}\n",
            "[".repeat(half),
            "]".repeat(half),
            "[".repeat(half),
            "]".repeat(half)
        );
        assert_over_budget(read(S, &text));
    }

    #[test]
    fn aliases_and_documents_are_counted() {
        let aliases = format!("a: &a x\nb: [{}]\n", vec!["*a"; MAX_ALIASES + 1].join(","));
        assert_over_budget(read(K, &aliases));
        let separators = "---\n".repeat(MAX_DOCUMENTS + 1);
        assert_over_budget(documents(&separators, &mut Budget::default(), K));
    }

    #[test]
    fn merge_keys_cannot_multiply_an_anchor_for_free() {
        // Each level merges the one before ten times: the result stays small, but every
        // merged alias is charged as the copy it is.
        let mut text = String::from("a0: &a0 {k0: x, k1: x, k2: x, k3: x, k4: x}\n");
        for level in 1..10 {
            let refs = vec![format!("*a{}", level - 1); 10].join(",");
            text.push_str(&format!(
                "a{level}: &a{level} {{<<: [{refs}], l{level}: x}}\n"
            ));
        }
        for dialect in [K, S] {
            assert_over_budget(read(dialect, &text));
        }
    }

    #[test]
    fn oversized_files_are_refused_unread() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.yaml");
        let file = std::fs::File::create(&path).unwrap();
        file.set_len(MAX_FILE_BYTES + 1).unwrap();
        assert!(matches!(read_file(&path), Err(YamlError::TooLarge)));
        std::fs::write(&path, "a: 1\n").unwrap();
        assert_eq!(read_file(&path).unwrap(), "a: 1\n");
    }

    #[test]
    fn syntax_errors_are_not_budget_errors() {
        for dialect in [K, S] {
            assert!(matches!(
                documents("a: [", &mut Budget::default(), dialect),
                Err(YamlError::Invalid(_))
            ));
        }
    }

    /// Each scalar as a mapping value, and the JSON Flux sends for it: after kustomize
    /// (`Kustomize`) and after post-build substitution (`SigsYaml`). Generated with
    /// hack/yaml-oracle `d1` and `d2` (the Go libraries Flux v1.10.1 builds with), not by hand.
    const SCALARS: &[(&str, &str, &str)] = &[
        (r#"on"#, r#""on""#, r#"true"#),
        (r#"off"#, r#""off""#, r#"false"#),
        (r#"On"#, r#""On""#, r#"true"#),
        (r#"OFF"#, r#""OFF""#, r#"false"#),
        (r#"yes"#, r#""yes""#, r#"true"#),
        (r#"no"#, r#""no""#, r#"false"#),
        (r#"Yes"#, r#""Yes""#, r#"true"#),
        (r#"NO"#, r#""NO""#, r#"false"#),
        (r#"y"#, r#""y""#, r#"true"#),
        (r#"n"#, r#""n""#, r#"false"#),
        (r#"Y"#, r#""Y""#, r#"true"#),
        (r#"N"#, r#""N""#, r#"false"#),
        (r#"oN"#, r#""oN""#, r#""oN""#),
        (r#"true"#, r#"true"#, r#"true"#),
        (r#"True"#, r#"true"#, r#"true"#),
        (r#"TRUE"#, r#"true"#, r#"true"#),
        (r#"tRUE"#, r#""tRUE""#, r#""tRUE""#),
        (r#"false"#, r#"false"#, r#"false"#),
        (r#"False"#, r#"false"#, r#"false"#),
        (r#"FALSE"#, r#"false"#, r#"false"#),
        (r#"~"#, r#"null"#, r#"null"#),
        (r#"null"#, r#"null"#, r#"null"#),
        (r#"Null"#, r#"null"#, r#"null"#),
        (r#"NULL"#, r#"null"#, r#"null"#),
        (r#"nUll"#, r#""nUll""#, r#""nUll""#),
        (r#""#, r#"null"#, r#"null"#),
        (r#"''"#, r#""""#, r#""""#),
        (r#"0755"#, r#"493"#, r#"493"#),
        (r#"0o755"#, r#"493"#, r#"493"#),
        (r#"0O755"#, r#"493"#, r#"493"#),
        (r#"-0755"#, r#"-493"#, r#"-493"#),
        (r#"+0755"#, r#"493"#, r#"493"#),
        (r#"0089"#, r#"89"#, r#"89"#),
        (r#"01"#, r#"1"#, r#"1"#),
        (r#"00"#, r#"0"#, r#"0"#),
        (r#"09"#, r#"9"#, r#"9"#),
        (r#"-08"#, r#"-8"#, r#"-8"#),
        (r#"0x1F"#, r#"31"#, r#"31"#),
        (r#"0X1F"#, r#"31"#, r#"31"#),
        (r#"-0x1F"#, r#"-31"#, r#"-31"#),
        (r#"+0x1F"#, r#"31"#, r#"31"#),
        (r#"0x_1F"#, r#"31"#, r#"31"#),
        (r#"0b1010"#, r#"10"#, r#"10"#),
        (r#"0B101"#, r#"5"#, r#"5"#),
        (r#"-0b101"#, r#"-5"#, r#"-5"#),
        (r#"-0B101"#, r#"-5"#, r#"-5"#),
        (r#"1_000"#, r#"1000"#, r#"1000"#),
        (r#"1__0"#, r#"10"#, r#"10"#),
        (r#"1_000.5"#, r#"1000.5"#, r#"1000.5"#),
        (r#"1_0e2"#, r#"1000"#, r#"1000"#),
        (r#"+1"#, r#"1"#, r#"1"#),
        (r#"-0"#, r#"0"#, r#"0"#),
        (r#"+.nan"#, r#""+.nan""#, r#""+.nan""#),
        (r#"inf"#, r#""inf""#, r#""inf""#),
        (r#"NaN"#, r#""NaN""#, r#""NaN""#),
        (r#"Infinity"#, r#""Infinity""#, r#""Infinity""#),
        (r#"1e3"#, r#"1000"#, r#"1000"#),
        (r#"1E3"#, r#"1000"#, r#"1000"#),
        (r#"1.0"#, r#"1"#, r#"1"#),
        (r#"1."#, r#"1"#, r#"1"#),
        (r#".5"#, r#"0.5"#, r#"0.5"#),
        (r#"1.5"#, r#"1.5"#, r#"1.5"#),
        (r#"1.20"#, r#"1.2"#, r#"1.2"#),
        (r#"1e400"#, r#""1e400""#, r#""1e400""#),
        (
            r#"99999999999999999999"#,
            r#"100000000000000000000"#,
            r#"100000000000000000000"#,
        ),
        (
            r#"18446744073709551615"#,
            r#"18446744073709551615"#,
            r#"18446744073709552000"#,
        ),
        (
            r#"9223372036854775807"#,
            r#"9223372036854775807"#,
            r#"9223372036854776000"#,
        ),
        (
            r#"9223372036854775808"#,
            r#"9223372036854775808"#,
            r#"9223372036854776000"#,
        ),
        (
            r#"-9223372036854775808"#,
            r#"-9223372036854775808"#,
            r#"-9223372036854776000"#,
        ),
        (
            r#"-9223372036854775809"#,
            r#"-9223372036854776000"#,
            r#"-9223372036854776000"#,
        ),
        (
            r#"9007199254740993"#,
            r#"9007199254740993"#,
            r#"9007199254740992"#,
        ),
        (r#"12:30:00"#, r#""12:30:00""#, r#""12:30:00""#),
        (r#"190:20:30"#, r#""190:20:30""#, r#""190:20:30""#),
        (
            r#"2001-12-14"#,
            r#""2001-12-14T00:00:00Z""#,
            r#""2001-12-14""#,
        ),
        (
            r#"2001-12-14t21:59:43.10-05:00"#,
            r#""2001-12-14T21:59:43.1-05:00""#,
            r#""2001-12-14t21:59:43.10-05:00""#,
        ),
        (
            r#"2001-12-14 21:59:43.10"#,
            r#""2001-12-14T21:59:43.1Z""#,
            r#""2001-12-14 21:59:43.10""#,
        ),
        (
            r#"2001-12-14T21:59:43,5Z"#,
            r#""2001-12-14T21:59:43.5Z""#,
            r#""2001-12-14T21:59:43,5Z""#,
        ),
        (
            r#"2001-12-14T21:59:43.1234567891Z"#,
            r#""2001-12-14T21:59:43.123456789Z""#,
            r#""2001-12-14T21:59:43.1234567891Z""#,
        ),
        (
            r#"2001-12-14T21:59:43+05:60"#,
            r#""2001-12-14T21:59:43+06:00""#,
            r#""2001-12-14T21:59:43+05:60""#,
        ),
        (
            r#"2001-12-14T21:59:43+00:00"#,
            r#""2001-12-14T21:59:43Z""#,
            r#""2001-12-14T21:59:43+00:00""#,
        ),
        (r#"2001-1-2"#, r#""2001-01-02T00:00:00Z""#, r#""2001-1-2""#),
        (r#"2001-02-29"#, r#""2001-02-29""#, r#""2001-02-29""#),
        (
            r#"2000-02-29"#,
            r#""2000-02-29T00:00:00Z""#,
            r#""2000-02-29""#,
        ),
        (
            r#"2001-12-14T24:00:00Z"#,
            r#""2001-12-14T24:00:00Z""#,
            r#""2001-12-14T24:00:00Z""#,
        ),
        (
            r#"2001-12-14T21:59:43"#,
            r#""2001-12-14T21:59:43""#,
            r#""2001-12-14T21:59:43""#,
        ),
        (r#""2001-12-14""#, r#""2001-12-14""#, r#""2001-12-14""#),
        (r#"!!str 1"#, r#""1""#, r#""1""#),
        (r#"!!str on"#, r#""on""#, r#""on""#),
        (r#"!!str null"#, r#""null""#, r#""null""#),
        (r#"!!int "42""#, r#"42"#, r#"42"#),
        (r#"!!int "0755""#, r#"493"#, r#"493"#),
        (r#"!!float 1"#, r#"1"#, r#"1"#),
        (r#"!!float "1""#, r#"1"#, r#"1"#),
        (r#"!!binary aGVsbG8="#, r#""hello""#, r#""hello""#),
        (r#"!!binary /w=="#, "\"\u{FFFD}\"", "\"\u{FFFD}\""),
        (
            r#"!!timestamp 2001-12-14"#,
            r#""2001-12-14T00:00:00Z""#,
            r#""2001-12-14""#,
        ),
        (r#"!!null """#, r#"null"#, r#"null"#),
        (r#"!!bool "true""#, r#"true"#, r#"true"#),
        (r#"!!bool True"#, r#"true"#, r#"true"#),
        (r#"!!merge foo"#, r#""foo""#, r#""foo""#),
        (r#"!!set foo"#, r#""foo""#, r#""foo""#),
        (r#"!foo 123"#, r#""123""#, r#""123""#),
        (r#"!foo true"#, r#""true""#, r#""true""#),
        (r#"!foo on"#, r#""on""#, r#""on""#),
        (r#"! 123"#, r#"123"#, r#""123""#),
        (r#"! "123""#, r#""123""#, r#""123""#),
        (r#"! on"#, r#""on""#, r#""on""#),
        (r#"a:b"#, r#""a:b""#, r#""a:b""#),
        (r#""8080""#, r#""8080""#, r#""8080""#),
        (r#"8080"#, r#"8080"#, r#"8080"#),
        (r#".5_0"#, r#"0.5"#, r#"0.5"#),
        (r#"._1"#, r#""._1""#, r#""._1""#),
        (r#"0b+1"#, r#"1"#, r#"1"#),
        (r#"0o-7"#, r#"-7"#, r#""0o-7""#),
        (r#"-0o17"#, r#"-15"#, r#"-15"#),
        (r#"1e-400"#, r#"0"#, r#"0"#),
        (r#"0x"#, r#""0x""#, r#""0x""#),
        (r#"0b"#, r#""0b""#, r#""0b""#),
        (r#"1_"#, r#"1"#, r#"1"#),
        (r#"_1_"#, r#""_1_""#, r#""_1_""#),
        (r#"0_755"#, r#"493"#, r#"493"#),
        (
            r#"0777777777777777777777"#,
            r#"9223372036854775807"#,
            r#"9223372036854776000"#,
        ),
        (r#"1e21"#, r#"1e+21"#, r#"1e+21"#),
        (
            r#"1.0e20"#,
            r#"100000000000000000000"#,
            r#"100000000000000000000"#,
        ),
        (
            r#"123456789012345678901234"#,
            r#"1.2345678901234569e+23"#,
            r#"1.2345678901234569e+23"#,
        ),
        (r#"-0.0"#, r#"0"#, r#"0"#),
        (r#"0.000001"#, r#"0.000001"#, r#"0.000001"#),
        (r#"1e-7"#, r#"1e-7"#, r#"1e-7"#),
        (r#"+.5"#, r#"0.5"#, r#"0.5"#),
        (r#"-.5e1"#, r#"-5"#, r#"-5"#),
        (r#"12e"#, r#""12e""#, r#""12e""#),
        (r#"<<x"#, r#""\u003c\u003cx""#, r#""\u003c\u003cx""#),
        (r#""<<""#, r#""\u003c\u003c""#, r#""\u003c\u003c""#),
        (r#"'it''s'"#, r#""it's""#, r#""it's""#),
        (r#""-""#, r#""-""#, r#""-""#),
        (r#"+"#, r#""+""#, r#""+""#),
        (r#"."#, r#"".""#, r#"".""#),
        (r#"a b"#, r#""a b""#, r#""a b""#),
    ];

    #[test]
    fn every_scalar_reads_as_flux_reads_it() {
        for (written, kustomize, sigs_yaml) in SCALARS {
            let text = format!("v: {written}\n");
            for (dialect, want) in [(K, kustomize), (S, sigs_yaml)] {
                let got = read(dialect, &text).unwrap_or_else(|e| panic!("{written}: {e}"));
                assert_eq!(got["v"], json(want), "{written} in {dialect:?}");
            }
        }
    }

    #[test]
    fn integral_floats_become_integers_as_in_gos_json() {
        // The API server gets `1000` from Flux, which its JSON decoder makes an int64; a
        // float 1000.0 would differ in a server-side apply comparison.
        let doc = read(K, "a: 1e3\nb: 1.0\nc: 0755\n").unwrap();
        assert_eq!(
            serde_json::to_string(&doc).unwrap(),
            r#"{"a":1000,"b":1,"c":493}"#
        );
    }

    #[test]
    fn block_scalars_are_strings() {
        for dialect in [K, S] {
            let doc = read(dialect, "a: |\n  on\nb: >-\n  1e3\n").unwrap();
            assert_eq!(doc, json!({"a": "on\n", "b": "1e3"}));
        }
    }

    #[test]
    fn values_flux_refuses_are_refused() {
        // (text, refused by kustomize, refused after post-build substitution)
        for (written, kustomize, sigs_yaml) in [
            (".inf", true, true),
            ("-.Inf", true, true),
            (".nan", true, true),
            ("!!float .inf", true, true),
            ("!!bool yes", true, false),
            ("!!int 1.5", true, true),
            ("!!float 18446744073709551615", true, true),
            ("!!binary aGk", true, true),
            ("!!timestamp foo", true, true),
            ("!!null x", true, true),
            ("2001-12-14T21:59:43+24:00", true, false),
            ("2001-12-14T21:59:43+23:60", true, false),
        ] {
            let text = format!("v: {written}\n");
            for (dialect, refused) in [(K, kustomize), (S, sigs_yaml)] {
                let got = read(dialect, &text);
                assert_eq!(
                    matches!(got, Err(YamlError::Rejected { .. })),
                    refused,
                    "{written} in {dialect:?}: {got:?}"
                );
            }
        }
    }

    /// Keys, checked with hack/yaml-oracle: kustomize takes any scalar's text as a key of
    /// the document's own mapping but only strings deeper down; sigs.k8s.io/yaml writes Go's
    /// text of every key.
    #[test]
    fn keys_are_read_as_flux_reads_them() {
        for (text, kustomize, sigs_yaml) in [
            (
                "0x1F: a\n1.0: b\nyes: c\nkind: K\n",
                Some(r#"{"0x1F":"a","1.0":"b","kind":"K","yes":"c"}"#),
                Some(r#"{"1":"b","31":"a","kind":"K","true":"c"}"#),
            ),
            (
                "!!binary aGk=: a\nkind: K\n",
                Some(r#"{"hi":"a","kind":"K"}"#),
                Some(r#"{"hi":"a","kind":"K"}"#),
            ),
            (
                "s: {\"1\": a, !!str 2: b, on: c}\n",
                Some(r#"{"s":{"1":"a","2":"b","on":"c"}}"#),
                Some(r#"{"s":{"1":"a","2":"b","true":"c"}}"#),
            ),
            (
                "s: {yes: b, on: c, 1.0: d, 1e6: e, 0x1F: f}\n",
                None,
                Some(r#"{"s":{"1":"d","1e+06":"e","31":"f","true":"c"}}"#),
            ),
            (
                "s: {.inf: b, .nan: c}\n",
                None,
                Some(r#"{"s":{".inf":"b",".nan":"c"}}"#),
            ),
            (
                "s: {2001-12-14: b}\n",
                None,
                Some(r#"{"s":{"2001-12-14":"b"}}"#),
            ),
            ("s: {!foo a: b}\n", None, Some(r#"{"s":{"a":"b"}}"#)),
            ("s: {!!binary aGk=: a}\n", None, Some(r#"{"s":{"hi":"a"}}"#)),
            (
                "!!bool yes: a\nkind: K\n",
                None,
                Some(r#"{"kind":"K","true":"a"}"#),
            ),
            ("~: x\nkind: K\n", None, None),
            ("s: {~: b}\n", None, None),
            ("s: {18446744073709551615: b}\n", None, None),
            ("s: {[a]: 1}\n", None, None),
            ("[a]: 1\n", None, None),
            (
                "d: &k a\ns: {*k : 1}\n",
                Some(r#"{"d":"a","s":{"a":1}}"#),
                Some(r#"{"d":"a","s":{"a":1}}"#),
            ),
        ] {
            for (dialect, want) in [(K, kustomize), (S, sigs_yaml)] {
                let got = read(dialect, text);
                match want {
                    Some(want) => assert_eq!(got.ok(), Some(json(want)), "{text:?} in {dialect:?}"),
                    None => assert!(got.is_err(), "{text:?} in {dialect:?}: {got:?}"),
                }
            }
        }
    }

    #[test]
    fn duplicate_keys_fail_kustomize_and_the_last_wins_in_sigs_yaml() {
        for (text, last) in [
            ("s: {a: 1, \"a\": 2}\n", r#"{"s":{"a":2}}"#),
            ("kind: K\nkind: L\n", r#"{"kind":"L"}"#),
            ("s: {1: 1, 01: 2}\n", r#"{"s":{"1":2}}"#),
        ] {
            assert!(read(K, text).is_err(), "{text:?}");
            assert_eq!(read(S, text).ok(), Some(json(last)), "{text:?}");
        }
        let err = read(K, "a: 1\nb: 2\na: 3\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"line 3: mapping key "a" already defined at line 1"#
        );
        // Keys written differently are different keys for go-yaml v3.
        assert_eq!(
            read(K, "s: {a: 1, b: 2}\n").unwrap(),
            json(r#"{"s":{"a":1,"b":2}}"#)
        );
    }

    /// Merge keys, checked with hack/yaml-oracle: kyaml (kustomize) lets the mapping's own
    /// keys win wherever `<<` stands; go-yaml v2 merges where it stands. In a list the earlier
    /// mappings win in both.
    #[test]
    fn merge_keys_merge_as_each_reader_merges() {
        for (text, kustomize, sigs_yaml) in [
            (
                "s: {a: 1, <<: {a: 2, b: 2}}\n",
                Some(r#"{"a":1,"b":2}"#),
                Some(r#"{"a":2,"b":2}"#),
            ),
            (
                "s: {<<: {a: 2, b: 2}, a: 1}\n",
                Some(r#"{"a":1,"b":2}"#),
                Some(r#"{"a":1,"b":2}"#),
            ),
            (
                "d: [&a {x: a, w: a}, &b {x: b, z: b}]\ns: {<<: [*a, *b], w: own}\n",
                Some(r#"{"w":"own","x":"a","z":"b"}"#),
                Some(r#"{"w":"own","x":"a","z":"b"}"#),
            ),
            (
                "d: [&a {x: a}, &b {x: b}]\ns: {<<: *a, <<: *b}\n",
                None,
                Some(r#"{"x":"b"}"#),
            ),
            (
                "s: {<<: {a: 1}, <<: {b: 1}}\n",
                None,
                Some(r#"{"a":1,"b":1}"#),
            ),
            (
                "s: {<<: [], a: 1}\n",
                Some(r#"{"a":1}"#),
                Some(r#"{"a":1}"#),
            ),
            // kyaml deletes a quoted `<<`; after post-build substitution it merges, own keys
            // first, because go-yaml v3 writes it back unquoted.
            ("s: {\"<<\": {a: 1}}\n", Some("{}"), Some(r#"{"a":1}"#)),
            (
                "s: {a: 2, \"<<\": {a: 1, b: 1}}\n",
                Some(r#"{"a":2}"#),
                Some(r#"{"a":2,"b":1}"#),
            ),
            (
                "s: {! <<: {a: 1}}\n",
                Some(r#"{"a":1}"#),
                Some(r#"{"a":1}"#),
            ),
            (
                "s: {!!merge \"<<\": {a: 1}}\n",
                Some(r#"{"a":1}"#),
                Some(r#"{"a":1}"#),
            ),
            ("s: {<<: 1}\n", None, None),
            ("s: {<<: }\n", None, None),
            ("s: {<<: [[]]}\n", None, None),
            ("d: &l [1]\ns: {<<: *l}\n", None, None),
        ] {
            for (dialect, want) in [(K, kustomize), (S, sigs_yaml)] {
                let got = read(dialect, text).map(|doc| doc["s"].clone());
                match want {
                    Some(want) => assert_eq!(got.ok(), Some(json(want)), "{text:?} in {dialect:?}"),
                    None => assert!(got.is_err(), "{text:?} in {dialect:?}: {got:?}"),
                }
            }
        }
    }

    /// What `kustomize build` v5.7.1 printed for the same objects: it rewrites the object's
    /// own annotations as written, and nothing else.
    #[test]
    fn kustomize_keeps_an_objects_annotations_as_written() {
        let text = "kind: K\nmetadata:\n  annotations:\n    a: 2024-01-01\n    b: 0755\n    \
                    c: 1.20\n    d: yes\n    e: ~\n    f: true\n    g: !!binary aGk=\n    \
                    h: 1e3\n    i: [1, 2]\n    j: &x 0755\n    k: *x\n    l:\n    \
                    <<: {m: 1.0}\n  labels: {b: 0755}\ndata: {x: 0755}\ntemplate:\n  \
                    metadata:\n    annotations: {a: 0755}\n";
        let doc = read(K, text).unwrap();
        assert_eq!(
            doc["metadata"],
            json!({
                "annotations": {
                    "a": "2024-01-01", "b": "0755", "c": "1.20", "d": "yes", "e": "~",
                    "f": "true", "g": "aGk=", "h": "1e3", "i": "", "j": "0755", "k": "0755",
                    "l": "", "m": "1.0",
                },
                "labels": {"b": 493},
            })
        );
        assert_eq!(doc["data"], json!({"x": 493}));
        assert_eq!(
            doc["template"],
            json!({"metadata": {"annotations": {"a": 493}}})
        );
        assert_eq!(
            read(S, text).unwrap()["metadata"]["annotations"]["b"],
            json!(493)
        );
        for empty in ["{}", "x", "", "~"] {
            let doc = read(
                K,
                &format!("kind: K\nmetadata:\n  name: n\n  annotations: {empty}\n"),
            );
            assert_eq!(
                doc.unwrap(),
                json!({"kind": "K", "metadata": {"name": "n"}}),
                "{empty}"
            );
        }
        assert!(read(K, "metadata:\n  annotations: [a]\n").is_err());
        // Written back unquoted, this key is a number to go-yaml.
        assert!(read(K, "metadata:\n  annotations: {\"1\": a}\n").is_err());
    }

    #[test]
    fn an_alias_inside_its_own_anchor_is_refused() {
        for dialect in [K, S] {
            assert!(matches!(
                read(dialect, "a: &a [1, *a]\n"),
                Err(YamlError::Rejected { .. })
            ));
        }
    }

    #[test]
    fn sigs_yaml_reads_the_first_document_only() {
        let text = "kind: K\n---\nkind: L\n";
        assert_eq!(read(S, text).unwrap(), json!({"kind": "K"}));
        assert_eq!(documents(text, &mut Budget::default(), K).unwrap().len(), 2);
        assert_eq!(read(S, "").unwrap(), Value::Null);
        assert!(documents("", &mut Budget::default(), K).unwrap().is_empty());
        // Comment-only documents are empty (`Null`, which callers skip), `...` ends one.
        let docs = documents(
            "a: 1\n---\n# c\n---\nb: 2\n...\n",
            &mut Budget::default(),
            K,
        );
        let objects: Vec<Value> = docs.unwrap().into_iter().filter(|d| !d.is_null()).collect();
        assert_eq!(objects, vec![json!({"a": 1}), json!({"b": 2})]);
    }

    /// hack/yaml-oracle `flux-kus` on the same file (Flux's generator).
    #[test]
    fn kustomization_files_are_read_as_flux_generates_them() {
        let text = "resources: [cm.yaml, 1]\ncommonAnnotations:\n  a: yes\n  b: 0755\n  \
                    c: 1.20\n  d: on\n  e: 2001-12-14\n  f: tRUE\n  g: 1e6\nimages:\n- name: \
                    nginx\n  newTag: 1.20\nreplicas:\n- name: x\n  count: 010\n";
        let k = kustomization(text, &mut Budget::default()).unwrap();
        assert_eq!(
            k,
            json!({
                "resources": ["cm.yaml", "1"],
                "commonAnnotations": {
                    "a": "true", "b": "493", "c": "1.2", "d": "true", "e": "2001-12-14",
                    "f": "tRUE", "g": "1e+06",
                },
                "images": [{"name": "nginx", "newTag": "1.2"}],
                "replicas": [{"name": "x", "count": 8}],
            })
        );
        // Duplicate keys: the last wins, as in Flux.
        let k = kustomization("namespace: a\nnamespace: b\n", &mut Budget::default()).unwrap();
        assert_eq!(k, json!({"namespace": "b"}));
    }

    #[test]
    fn odd_input_is_an_error_or_a_value_never_a_panic() {
        for text in [
            "a: *unknown\n",
            "? [a, b]\n: c\n",
            "? a\n",
            "\u{feff}a: 1\n",
            "a: !<tag:yaml.org,2002:int> \"7\"\n",
            "%TAG ! tag:yaml.org,2002:\n---\na: !int 1\n",
            "a: !!binary \"\"\n",
            "a: &x\nb: *x\n",
            "- &a\n- *a\n",
            "a:\tb\n",
            "--- |\n  text\n",
            "a: 99999999999999999999999999999999999999999999999999999999999999999999999\n",
            "a: 0b1111111111111111111111111111111111111111111111111111111111111111111111\n",
            "a: -0b1111111111111111111111111111111111111111111111111111111111111111111111\n",
            "a: 9999-99-99\n",
            "a: 2001-12-14T21:59:43.99999999999999999999999999+24:00\n",
            "a: \"\\xff\"\n",
            "{a: [1, {b: [2, {c: 3}]}]}\n",
            "[*a]\n",
            "<<: {a: 1}\n",
            "<<: *a\n",
            "a: &a {<<: *a}\n",
        ] {
            for dialect in [K, S] {
                let _ = documents(text, &mut Budget::default(), dialect);
            }
            let _ = kustomization(text, &mut Budget::default());
        }
    }
}
