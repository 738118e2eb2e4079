//! YAML from artifacts (and from post-build substitution), parsed within explicit budgets.

// serde-saphyr's default budget caps one parse only: a file whose aliases expand to 64 MiB
// of strings passes, and a build parses every file of the artifact with a fresh budget, so
// an artifact of many small alias bombs ("billion laughs" kept under the per-parse caps)
// would multiply into the controller's memory. Here the budget of one parse is the file's own
// size plus what is left of a per-build allowance for alias expansion: YAML without aliases
// can never need more nodes or string bytes than it has bytes of text, so it always fits,
// and whatever a file expands to beyond its size is charged to the build. In total a build
// then holds at most about twice what plain YAML of the artifact's size could (bounded by
// `--artifact-max-bytes`), plus the allowance.

use std::cell::Cell;
use std::io::Read;
use std::path::Path;
use std::rc::Rc;

use serde_json::Value;

/// Largest YAML file read from an artifact. CRD bundles, the biggest real manifests, run to a
/// few MiB; this is also the string budget serde-saphyr gave every file by default.
pub const MAX_FILE_BYTES: u64 = 64 << 20;
/// Deepest nesting of mappings and sequences. Parsing recurses per level: in a debug build
/// ~90 levels exhaust the 2 MiB stack of a tokio thread (and a stack overflow aborts the
/// whole controller), so serde-saphyr's default of 64, which applied before, stays.
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
    #[error("{0}")]
    Invalid(String),
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

/// What serde-saphyr counted for one parse, aliases replayed included.
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

/// Every document of a multi-document text.
pub fn documents(text: &str, budget: &mut Budget) -> Result<Vec<Value>, YamlError> {
    parse(text, budget, serde_saphyr::from_multiple_with_options)
}

/// A single-document text.
pub fn document(text: &str, budget: &mut Budget) -> Result<Value, YamlError> {
    parse(text, budget, serde_saphyr::from_str_with_options)
}

fn parse<'t, T>(
    text: &'t str,
    budget: &mut Budget,
    parser: impl FnOnce(&'t str, serde_saphyr::Options) -> Result<T, serde_saphyr::Error>,
) -> Result<T, YamlError> {
    if text.len() as u64 > MAX_FILE_BYTES {
        return Err(YamlError::TooLarge);
    }
    let used = Rc::new(Cell::new(Used::default()));
    let parsed = parser(text, options(text, budget, used.clone()));
    budget.charge(text, used.get());
    parsed.map_err(|e| match is_over_budget(&e) {
        true => YamlError::OverBudget(e.to_string()),
        false => YamlError::Invalid(e.to_string()),
    })
}

/// Options for parsing `text` with what is left of `budget`; `used` receives the counts.
fn options(text: &str, budget: &Budget, used: Rc<Cell<Used>>) -> serde_saphyr::Options {
    let nodes = text.len().saturating_add(budget.alias_nodes);
    let scalar_bytes = text.len().saturating_add(budget.alias_bytes);
    let report: serde_saphyr::options::BudgetReportCallback = Rc::new(std::cell::RefCell::new(
        move |r: serde_saphyr::budget::BudgetReport| {
            used.set(Used {
                nodes: r.nodes,
                scalar_bytes: r.total_scalar_bytes,
            })
        },
    ));
    serde_saphyr::options! {
        budget: serde_saphyr::budget! {
            max_depth: MAX_DEPTH,
            max_documents: MAX_DOCUMENTS,
            max_aliases: MAX_ALIASES,
            max_nodes: nodes,
            max_total_scalar_bytes: scalar_bytes,
            // A node is at most two events (start and end); documents and comments add some.
            max_events: nodes.saturating_mul(4),
        },
        alias_limits: serde_saphyr::alias_limits! {
            max_total_replayed_events: budget.alias_nodes.saturating_mul(2),
        },
        budget_report_cb: Some(report),
    }
}

/// Whether the parse stopped at a limit rather than at bad YAML.
fn is_over_budget(mut error: &serde_saphyr::Error) -> bool {
    use serde_saphyr::Error;
    while let Error::WithSnippet { error: inner, .. } | Error::AliasError { error: inner, .. } =
        error
    {
        error = inner;
    }
    matches!(
        error,
        Error::Budget { .. }
            | Error::AliasReplayLimitExceeded { .. }
            | Error::AliasExpansionLimitExceeded { .. }
            | Error::AliasReplayStackDepthExceeded { .. }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn plain_manifests_parse() {
        let text = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n---\nkind: x\n";
        let docs = documents(text, &mut Budget::default()).unwrap();
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[0]["metadata"]["name"], "a");
    }

    #[test]
    fn modest_aliases_parse_and_expand() {
        let text = "base: &env {A: \"1\", B: \"2\"}\none: *env\ntwo: *env\n";
        let doc = document(text, &mut Budget::default()).unwrap();
        assert_eq!(doc["two"]["B"], "2");
    }

    #[test]
    fn the_classic_billion_laughs_is_refused() {
        assert_over_budget(documents(&billion_laughs(), &mut Budget::default()));
    }

    #[test]
    fn one_file_cannot_expand_far_beyond_its_size() {
        // 1 MiB anchored, 40 references: 41 MiB, which serde-saphyr's defaults let through.
        assert_over_budget(documents(&wide_laughs(1 << 20, 40), &mut Budget::default()));
    }

    #[test]
    fn expansion_is_charged_across_the_files_of_a_build() {
        // Each file expands by ~1 MiB, a quarter of the allowance, which runs out by the fifth.
        let text = wide_laughs(64 << 10, 16);
        let mut budget = Budget::default();
        for _ in 0..3 {
            documents(&text, &mut budget).unwrap();
        }
        let mut refused = false;
        for _ in 0..3 {
            refused |= documents(&text, &mut budget).is_err();
        }
        assert!(refused, "the allowance was never used up");
        assert_over_budget(documents(&text, &mut budget));
        // A fresh build has its whole allowance again.
        documents(&text, &mut Budget::default()).unwrap();
    }

    #[test]
    fn deep_nesting_is_refused_past_the_limit() {
        let nested = |depth: usize| format!("{}1{}", "[".repeat(depth), "]".repeat(depth));
        document(&nested(MAX_DEPTH - 1), &mut Budget::default()).unwrap();
        assert_over_budget(document(&nested(MAX_DEPTH + 1), &mut Budget::default()));
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
        assert!(matches!(
            documents("a: [", &mut Budget::default()),
            Err(YamlError::Invalid(_))
        ));
    }
}
