//! Flux's source ignore rules (reference §5.3 for OCI `extract`, §8.4 for Bucket keys).

// Flux evaluates one ordered list of gitignore patterns the go-git way: patterns are tried
// from the last to the first, and the first pattern that matches the path *or any of its
// parent directories* decides. Order, lowest precedence first: the default lists, every
// `.sourceignore` in walk order (each scoped to its own directory), then `spec.ignore`.
//
// Each pattern source becomes one `ignore::gitignore::Gitignore` matcher for its scope. A
// matcher answers "which of my patterns matched last" for one path, so asking it about the
// path and each parent and keeping the highest pattern index reproduces go-git's order.
// Single patterns follow git's glob rules (the `ignore` crate); one known corner differs:
// go-git's `dir/**` also matches `dir` itself, so Flux leaves out that empty directory entry.

use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use ignore::Match;
use ignore::gitignore::{Gitignore, GitignoreBuilder, Glob};

/// Name of the per-directory ignore file.
pub const SOURCE_IGNORE_FILE: &str = ".sourceignore";
/// Most bytes of `.sourceignore` one source may carry, all files together. Real ones are a
/// few lines; past this the text is not a pattern list but a way to make the controller
/// hold and compile an unbounded set of globs. Refused rather than skipped: dropping ignore
/// rules would publish files their author meant to leave out.
pub const MAX_SOURCE_IGNORE_BYTES: u64 = 1 << 20;

/// `fluxcd/pkg/sourceignore` `ExcludeVCS`: always applied for OCI and Git sources.
pub const VCS_PATTERNS: &[&str] = &[".git/", ".gitignore", ".gitmodules", ".gitattributes"];
/// `ExcludeExt`.
pub const EXTENSION_PATTERNS: &[&str] = &[
    "*.jpg", "*.jpeg", "*.gif", "*.png", "*.wmv", "*.flv", "*.tar.gz", "*.zip",
];
/// `ExcludeCI`.
pub const CI_PATTERNS: &[&str] = &[
    ".github/",
    ".circleci/",
    ".travis.yml",
    ".gitlab-ci.yml",
    "appveyor.yml",
    ".drone.yml",
    "cloudbuild.yaml",
    "codeship-services.yml",
    "codeship-steps.yml",
];
/// `ExcludeExtra`.
pub const EXTRA_PATTERNS: &[&str] = &["**/.goreleaser.yml", "**/.sops.yaml", "**/.flux.yaml"];

/// Directory never searched for `.sourceignore` files.
const GIT_DIR: &str = ".git";

#[derive(Debug, thiserror::Error)]
pub enum IgnoreError {
    #[error("cannot read ignore rules from {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error(
        "'{SOURCE_IGNORE_FILE}' files total more than the limit of {MAX_SOURCE_IGNORE_BYTES} bytes (at {path})"
    )]
    TooLarge { path: PathBuf },
}

/// Which built-in patterns sit below the user's patterns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DefaultPatterns {
    /// No built-in patterns: Bucket sources (reference §8.4).
    None,
    /// VCS patterns, plus the extension/CI/extra lists when the user gave no pattern at all.
    Flux,
}

/// A compiled, ordered set of ignore patterns.
#[derive(Debug)]
pub struct IgnoreRules {
    /// In increasing precedence.
    blocks: Vec<PatternBlock>,
}

/// Patterns from one source, matched relative to `scope` (a path relative to the tree root).
#[derive(Debug)]
struct PatternBlock {
    scope: PathBuf,
    matcher: Gitignore,
}

/// Raw pattern lines from one source, before compiling.
struct PatternSource {
    scope: PathBuf,
    lines: Vec<String>,
}

impl IgnoreRules {
    /// Rules for an extracted OCI artifact: every `.sourceignore` under `root`, then
    /// `spec.ignore`, above Flux's defaults.
    pub fn load(root: &Path, spec_ignore: Option<&str>) -> Result<Self, IgnoreError> {
        let mut sources = load_source_ignore_files(root)?;
        if let Some(spec) = spec_ignore {
            sources.push(PatternSource {
                scope: PathBuf::new(),
                lines: pattern_lines(spec),
            });
        }
        Ok(Self::compile(sources, DefaultPatterns::Flux))
    }

    /// Rules from pattern text scoped to the root (for Bucket keys: the bucket's
    /// `.sourceignore` followed by `spec.ignore`, with `DefaultPatterns::None`).
    pub fn from_patterns(patterns: &str, defaults: DefaultPatterns) -> Self {
        let source = PatternSource {
            scope: PathBuf::new(),
            lines: pattern_lines(patterns),
        };
        Self::compile(vec![source], defaults)
    }

    /// Whether `rel_path` (relative to the tree root, `/`-separated) is excluded.
    pub fn is_ignored(&self, rel_path: &Path, is_dir: bool) -> bool {
        self.blocks
            .iter()
            .rev()
            .find_map(|block| block.verdict(rel_path, is_dir))
            .unwrap_or(false)
    }

    fn compile(user_sources: Vec<PatternSource>, defaults: DefaultPatterns) -> Self {
        let has_user_patterns = user_sources.iter().any(|s| !s.lines.is_empty());
        let defaults = PatternSource {
            scope: PathBuf::new(),
            lines: default_lines(defaults, has_user_patterns),
        };
        let sources = merge_adjacent_scopes(std::iter::once(defaults).chain(user_sources));
        let blocks = sources.into_iter().map(PatternBlock::compile).collect();
        Self { blocks }
    }
}

fn default_lines(defaults: DefaultPatterns, has_user_patterns: bool) -> Vec<String> {
    let lists: &[&[&str]] = match (defaults, has_user_patterns) {
        (DefaultPatterns::None, _) => &[],
        (DefaultPatterns::Flux, true) => &[VCS_PATTERNS],
        (DefaultPatterns::Flux, false) => &[
            VCS_PATTERNS,
            EXTENSION_PATTERNS,
            CI_PATTERNS,
            EXTRA_PATTERNS,
        ],
    };
    lists
        .iter()
        .flat_map(|list| list.iter().map(|p| p.to_string()))
        .collect()
}

/// Consecutive sources with the same scope form one block; order (and so precedence) is kept.
fn merge_adjacent_scopes(sources: impl Iterator<Item = PatternSource>) -> Vec<PatternSource> {
    let mut merged: Vec<PatternSource> = Vec::new();
    for source in sources.filter(|s| !s.lines.is_empty()) {
        match merged.last_mut() {
            Some(last) if last.scope == source.scope => last.lines.extend(source.lines),
            _ => merged.push(source),
        }
    }
    merged
}

/// Pattern lines as Flux reads them: blank lines and `#` comments are dropped.
fn pattern_lines(text: &str) -> Vec<String> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .map(str::to_string)
        .collect()
}

/// Every `.sourceignore` under `root` in Flux's order: a directory's own file first, then its
/// subdirectories in lexical order, depth first, never descending `.git` or symlinks.
fn load_source_ignore_files(root: &Path) -> Result<Vec<PatternSource>, IgnoreError> {
    let mut sources = Vec::new();
    let mut stack = vec![PathBuf::new()];
    let mut remaining = MAX_SOURCE_IGNORE_BYTES;
    while let Some(rel_dir) = stack.pop() {
        let dir = root.join(&rel_dir);
        if let Some(text) = read_source_ignore(root, &rel_dir, &mut remaining)? {
            sources.push(PatternSource {
                scope: rel_dir.clone(),
                lines: pattern_lines(&text),
            });
        }
        let mut subdirs = subdirectories(&dir)?;
        subdirs.sort_unstable_by(|a, b| b.cmp(a));
        stack.extend(subdirs.into_iter().map(|name| rel_dir.join(name)));
    }
    Ok(sources)
}

/// The `.sourceignore` in `rel_dir`, if any, taken out of the `remaining` byte allowance.
fn read_source_ignore(
    root: &Path,
    rel_dir: &Path,
    remaining: &mut u64,
) -> Result<Option<String>, IgnoreError> {
    let path = root.join(rel_dir).join(SOURCE_IGNORE_FILE);
    let read_error = |source| IgnoreError::Read {
        path: path.clone(),
        source,
    };
    match fs::symlink_metadata(&path) {
        Ok(metadata) if metadata.is_file() => {
            let mut bytes = Vec::new();
            fs::File::open(&path)
                .and_then(|file| {
                    file.take(remaining.saturating_add(1))
                        .read_to_end(&mut bytes)
                })
                .map_err(read_error)?;
            *remaining =
                remaining
                    .checked_sub(bytes.len() as u64)
                    .ok_or_else(|| IgnoreError::TooLarge {
                        path: rel_dir.join(SOURCE_IGNORE_FILE),
                    })?;
            Ok(Some(String::from_utf8_lossy(&bytes).into_owned()))
        }
        Ok(_) => Ok(None),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(read_error(err)),
    }
}

fn subdirectories(dir: &Path) -> Result<Vec<std::ffi::OsString>, IgnoreError> {
    let read_error = |source| IgnoreError::Read {
        path: dir.to_path_buf(),
        source,
    };
    let mut names = Vec::new();
    for entry in fs::read_dir(dir).map_err(read_error)? {
        let entry = entry.map_err(read_error)?;
        let is_real_dir = entry.file_type().map_err(read_error)?.is_dir();
        if is_real_dir && entry.file_name() != GIT_DIR {
            names.push(entry.file_name());
        }
    }
    Ok(names)
}

impl PatternBlock {
    fn compile(source: PatternSource) -> Self {
        // "." disables the matcher's own prefix stripping: paths are made relative here.
        let mut builder = GitignoreBuilder::new(".");
        // go-git's filepath.Match rejects an unclosed `[`, so such a pattern never matches.
        builder.allow_unclosed_class(false);
        for (index, line) in source.lines.iter().enumerate() {
            // `from` carries the pattern's position: the matcher reports which pattern won for
            // one path, and the position is needed to compare winners across parent paths.
            if let Err(err) = builder.add_line(Some(PathBuf::from(index.to_string())), line) {
                // go-git never fails on a bad glob, it just never matches; do the same.
                tracing::warn!(pattern = %line, error = %err, "ignoring invalid ignore pattern");
            }
        }
        let matcher = builder.build().unwrap_or_else(|err| {
            tracing::warn!(error = %err, "ignore patterns could not be compiled; none applied");
            Gitignore::empty()
        });
        Self {
            scope: source.scope,
            matcher,
        }
    }

    /// `Some(true)` ignored, `Some(false)` re-included, `None` no pattern here applies.
    fn verdict(&self, rel_path: &Path, is_dir: bool) -> Option<bool> {
        let inner = rel_path.strip_prefix(&self.scope).ok()?;
        let mut winner: Option<(usize, bool)> = None;
        for (path, path_is_dir) in path_and_parents(inner, is_dir) {
            let (glob, ignored) = match self.matcher.matched(path, path_is_dir) {
                Match::None => continue,
                Match::Ignore(glob) => (glob, true),
                Match::Whitelist(glob) => (glob, false),
            };
            let index = pattern_index(glob);
            if winner.is_none_or(|(best, _)| index > best) {
                winner = Some((index, ignored));
            }
        }
        winner.map(|(_, ignored)| ignored)
    }
}

/// The path itself, then each parent directory (never the empty scope root).
fn path_and_parents(path: &Path, is_dir: bool) -> impl Iterator<Item = (&Path, bool)> {
    path.ancestors()
        .filter(|p| !p.as_os_str().is_empty())
        .enumerate()
        .map(move |(depth, p)| (p, depth > 0 || is_dir))
}

fn pattern_index(glob: &Glob) -> usize {
    glob.from()
        .and_then(Path::to_str)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (rel, content) in files {
            let path = dir.path().join(rel);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, content).unwrap();
        }
        dir
    }

    fn ignored(rules: &IgnoreRules, rel: &str) -> bool {
        rules.is_ignored(Path::new(rel), false)
    }

    fn ignored_dir(rules: &IgnoreRules, rel: &str) -> bool {
        rules.is_ignored(Path::new(rel), true)
    }

    #[test]
    fn source_ignore_files_are_bounded_in_total() {
        let half = "x\n".repeat((MAX_SOURCE_IGNORE_BYTES / 4) as usize);
        let at_limit = "x".repeat(MAX_SOURCE_IGNORE_BYTES as usize);
        IgnoreRules::load(tree(&[(".sourceignore", &at_limit)]).path(), None).unwrap();
        let too_big = format!("{at_limit}y");
        let dir = tree(&[(".sourceignore", &too_big)]);
        let err = IgnoreRules::load(dir.path(), None).unwrap_err();
        assert!(matches!(err, IgnoreError::TooLarge { .. }), "{err}");
        assert!(err.to_string().contains("limit of 1048576 bytes"), "{err}");
        // Many files, each small, are counted together.
        let files: Vec<(String, &str)> = (0..3)
            .map(|i| (format!("d{i}/.sourceignore"), half.as_str()))
            .collect();
        let files: Vec<(&str, &str)> = files.iter().map(|(p, c)| (p.as_str(), *c)).collect();
        let err = IgnoreRules::load(tree(&files).path(), None).unwrap_err();
        assert!(matches!(err, IgnoreError::TooLarge { .. }), "{err}");
    }

    #[test]
    fn without_user_patterns_all_default_lists_apply() {
        let dir = tree(&[]);
        let rules = IgnoreRules::load(dir.path(), None).unwrap();
        assert!(ignored_dir(&rules, ".git"));
        assert!(ignored(&rules, ".git/config"));
        assert!(ignored(&rules, "sub/.git/HEAD"));
        assert!(ignored(&rules, ".gitignore"));
        assert!(ignored(&rules, "logo.png"));
        assert!(ignored(&rules, "charts/app-1.0.0.tar.gz"));
        assert!(ignored_dir(&rules, ".github"));
        assert!(ignored(&rules, ".github/workflows/ci.yml"));
        assert!(ignored(&rules, ".travis.yml"));
        assert!(ignored(&rules, "deep/dir/.sops.yaml"));
        assert!(ignored(&rules, ".flux.yaml"));
        assert!(!ignored(&rules, "deploy/app.yaml"));
        assert!(!ignored(&rules, "charts/app-1.0.0.tgz"));
        assert!(!ignored(&rules, SOURCE_IGNORE_FILE));
    }

    #[test]
    fn a_user_pattern_replaces_all_defaults_but_vcs() {
        let dir = tree(&[]);
        let rules = IgnoreRules::load(dir.path(), Some("*.txt")).unwrap();
        assert!(ignored(&rules, "notes.txt"));
        assert!(ignored(&rules, ".git/config"));
        assert!(ignored(&rules, ".gitmodules"));
        assert!(!ignored(&rules, "logo.png"));
        assert!(!ignored(&rules, ".github/workflows/ci.yml"));
        assert!(!ignored(&rules, ".sops.yaml"));
    }

    #[test]
    fn comment_only_sources_leave_the_defaults_in_place() {
        let dir = tree(&[(".sourceignore", "# nothing here\n\n   \n")]);
        let rules = IgnoreRules::load(dir.path(), Some("# still nothing\n")).unwrap();
        assert!(ignored(&rules, "logo.png"));
    }

    #[test]
    fn a_sourceignore_pattern_also_replaces_the_defaults() {
        let dir = tree(&[("sub/.sourceignore", "*.txt\n")]);
        let rules = IgnoreRules::load(dir.path(), None).unwrap();
        assert!(!ignored(&rules, "logo.png"));
        assert!(ignored(&rules, ".git/config"));
    }

    #[test]
    fn user_patterns_can_negate_vcs_defaults() {
        let dir = tree(&[]);
        let rules = IgnoreRules::load(dir.path(), Some("!.gitignore")).unwrap();
        assert!(!ignored(&rules, ".gitignore"));
        assert!(ignored(&rules, ".gitattributes"));
    }

    #[test]
    fn nested_sourceignore_is_scoped_to_its_directory() {
        let dir = tree(&[
            ("sub/.sourceignore", "*.yaml\n/only.txt\n"),
            ("sub/a.yaml", ""),
        ]);
        let rules = IgnoreRules::load(dir.path(), None).unwrap();
        assert!(ignored(&rules, "sub/a.yaml"));
        assert!(ignored(&rules, "sub/deep/b.yaml"));
        assert!(!ignored(&rules, "a.yaml"));
        assert!(!ignored(&rules, "other/a.yaml"));
        assert!(ignored(&rules, "sub/only.txt"));
        assert!(!ignored(&rules, "sub/x/only.txt"));
        assert!(!ignored(&rules, "only.txt"));
        assert!(!ignored_dir(&rules, "sub"));
    }

    #[test]
    fn deeper_sourceignore_overrides_the_root_one() {
        let dir = tree(&[
            (".sourceignore", "*.md\n"),
            ("docs/.sourceignore", "!README.md\n"),
        ]);
        let rules = IgnoreRules::load(dir.path(), None).unwrap();
        assert!(ignored(&rules, "README.md"));
        assert!(!ignored(&rules, "docs/README.md"));
        assert!(ignored(&rules, "docs/other.md"));
    }

    #[test]
    fn spec_ignore_has_the_highest_precedence() {
        let dir = tree(&[("sub/.sourceignore", "*.txt\n")]);
        let rules = IgnoreRules::load(dir.path(), Some("!keep.txt")).unwrap();
        assert!(!ignored(&rules, "sub/keep.txt"));
        assert!(ignored(&rules, "sub/drop.txt"));
    }

    #[test]
    fn sourceignore_inside_git_dir_is_not_loaded() {
        let dir = tree(&[(".git/.sourceignore", "*.yaml\n")]);
        let rules = IgnoreRules::load(dir.path(), None).unwrap();
        assert!(!ignored(&rules, "app.yaml"));
        assert!(
            ignored(&rules, "logo.png"),
            "defaults stay: no user pattern was loaded"
        );
    }

    #[test]
    fn sourceignore_through_a_symlinked_directory_is_not_loaded() {
        let outside = tree(&[(".sourceignore", "*.yaml\n")]);
        let dir = tree(&[]);
        std::os::unix::fs::symlink(outside.path(), dir.path().join("link")).unwrap();
        let rules = IgnoreRules::load(dir.path(), None).unwrap();
        assert!(!ignored(&rules, "link/app.yaml"));
    }

    #[test]
    fn flux_exclude_all_include_one_directory_pattern() {
        let dir = tree(&[]);
        let rules = IgnoreRules::load(dir.path(), Some("/*\n!/deploy\n")).unwrap();
        assert!(!ignored_dir(&rules, "deploy"));
        assert!(!ignored(&rules, "deploy/app.yaml"));
        assert!(!ignored(&rules, "deploy/nested/app.yaml"));
        assert!(ignored(&rules, "README.md"));
        assert!(ignored_dir(&rules, "other"));
        assert!(ignored(&rules, "other/app.yaml"));
    }

    #[test]
    fn later_negated_parent_reincludes_children_like_go_git() {
        let rules = IgnoreRules::from_patterns("*.yaml\n!dir/\n", DefaultPatterns::None);
        assert!(ignored(&rules, "a.yaml"));
        assert!(!ignored(&rules, "dir/a.yaml"));
    }

    #[test]
    fn later_excluded_parent_beats_earlier_negation_like_go_git() {
        let rules = IgnoreRules::from_patterns("!keep.txt\ndir/\n", DefaultPatterns::None);
        assert!(ignored(&rules, "dir/keep.txt"));
        assert!(!ignored(&rules, "keep.txt"));
    }

    #[test]
    fn negation_after_directory_exclusion_reincludes_a_child() {
        let rules = IgnoreRules::from_patterns("dir/\n!dir/keep.txt\n", DefaultPatterns::None);
        assert!(ignored(&rules, "dir/drop.txt"));
        assert!(!ignored(&rules, "dir/keep.txt"));
    }

    #[test]
    fn directory_only_patterns_do_not_match_files() {
        let rules = IgnoreRules::from_patterns("build/\n", DefaultPatterns::None);
        assert!(ignored_dir(&rules, "build"));
        assert!(ignored(&rules, "build/out.yaml"));
        assert!(!ignored(&rules, "build"));
    }

    #[test]
    fn bucket_rules_have_no_defaults() {
        let rules = IgnoreRules::from_patterns("*.txt\n", DefaultPatterns::None);
        assert!(ignored(&rules, "a/b.txt"));
        assert!(!ignored(&rules, ".git/config"));
        assert!(!ignored(&rules, "logo.png"));
        let empty = IgnoreRules::from_patterns("", DefaultPatterns::None);
        assert!(!ignored(&empty, "anything"));
    }

    #[test]
    fn from_patterns_with_flux_defaults_follows_the_same_switch() {
        let none = IgnoreRules::from_patterns("", DefaultPatterns::Flux);
        assert!(ignored(&none, "logo.png"));
        let some = IgnoreRules::from_patterns("*.txt", DefaultPatterns::Flux);
        assert!(!ignored(&some, "logo.png"));
        assert!(ignored(&some, ".git/HEAD"));
    }

    #[test]
    fn invalid_patterns_never_match_and_do_not_break_the_rest() {
        let rules = IgnoreRules::from_patterns("[unclosed\n*.txt\n", DefaultPatterns::None);
        assert!(ignored(&rules, "a.txt"));
        assert!(!ignored(&rules, "[unclosed"));
    }

    #[test]
    fn crlf_line_endings_are_accepted() {
        let rules = IgnoreRules::from_patterns("*.txt\r\n*.md\r\n", DefaultPatterns::None);
        assert!(ignored(&rules, "a.txt"));
        assert!(ignored(&rules, "a.md"));
    }

    #[test]
    fn the_sourceignore_file_is_kept_unless_a_pattern_matches_it() {
        let dir = tree(&[(".sourceignore", "*.txt\n")]);
        let rules = IgnoreRules::load(dir.path(), None).unwrap();
        assert!(!ignored(&rules, ".sourceignore"));
        let rules = IgnoreRules::load(dir.path(), Some(".sourceignore")).unwrap();
        assert!(ignored(&rules, ".sourceignore"));
    }
}
