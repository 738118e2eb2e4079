//! Semver tag selection with the constraint language Flux uses (Masterminds semver v3): `>=`, `<=`,
//! `>`, `<`, `=`, `!=`, `~`, `^`, wildcards (`1.2.x`, `*`), hyphen ranges (`1.2 - 1.4.5`), AND with
//! `,` or spaces, OR with `||`.

// A version with a prerelease only satisfies a comparison that itself names a prerelease (so `>=
// 6.1.x-0` admits `6.2.0-rc.1` while `>= 6.1.0` does not).

use std::cmp::Ordering;
use std::sync::LazyLock;

use regex::Regex;
use semver::{BuildMetadata, Prerelease, Version};

/// Helm encodes `+` (build metadata) as `_` in OCI tags.
pub const HELM_CHART_LAYER: &str = "application/vnd.cncf.helm.chart.content.v1.tar+gzip";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SemverError {
    #[error("semver '{constraint}' parse error: {reason}")]
    Constraint { constraint: String, reason: String },
    #[error("invalid regular expression pattern '{pattern}': {reason}")]
    Filter { pattern: String, reason: String },
    #[error("no match found for semver: {0}")]
    NoMatch(String),
}

/// Pick the tag holding the highest version that satisfies `constraint`, among the tags that
/// match `filter`; the original tag string is returned.
pub fn select_tag(
    tags: &[String],
    constraint: &str,
    filter: Option<&str>,
    helm_tags: bool,
) -> Result<String, SemverError> {
    let constraint_set = Constraint::parse(constraint)?;
    let filter = filter
        .filter(|f| !f.is_empty())
        .map(|f| {
            Regex::new(f).map_err(|e| SemverError::Filter {
                pattern: f.into(),
                reason: e.to_string(),
            })
        })
        .transpose()?;
    let mut best: Option<(Version, &String)> = None;
    for tag in tags {
        if filter.as_ref().is_some_and(|re| !re.is_match(tag)) {
            continue;
        }
        let candidate = if helm_tags {
            tag.replace('_', "+")
        } else {
            tag.clone()
        };
        let Some(version) = parse_version(&candidate) else {
            continue;
        };
        if !constraint_set.matches(&version) {
            continue;
        }
        if best
            .as_ref()
            .is_none_or(|(b, _)| precedence(&version, b) == Ordering::Greater)
        {
            best = Some((version, tag));
        }
    }
    best.map(|(_, t)| t.clone())
        .ok_or_else(|| SemverError::NoMatch(constraint.to_string()))
}

/// A tag as a version: an optional `v`, `major.minor.patch` (leading zeros allowed), then an
/// optional prerelease and build. Tags with fewer than two dots are not versions.
pub fn parse_version(tag: &str) -> Option<Version> {
    static LOOSE: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(r"^v?([0-9]+)\.([0-9]+)\.([0-9]+)(?:-([0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?(?:\+([0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?$").unwrap()
    });
    let c = LOOSE.captures(tag)?;
    let num = |i: usize| c.get(i)?.as_str().parse::<u64>().ok();
    let mut v = Version::new(num(1)?, num(2)?, num(3)?);
    if let Some(pre) = c.get(4) {
        v.pre = Prerelease::new(pre.as_str()).ok()?;
    }
    if let Some(build) = c.get(5) {
        v.build = BuildMetadata::new(build.as_str()).ok()?;
    }
    Some(v)
}

/// Semver precedence: build metadata does not count.
fn precedence(a: &Version, b: &Version) -> Ordering {
    (a.major, a.minor, a.patch)
        .cmp(&(b.major, b.minor, b.patch))
        .then_with(|| a.pre.cmp(&b.pre))
}

/// `||`-separated groups of comparators that must all hold.
#[derive(Debug, Clone)]
pub struct Constraint {
    any_of: Vec<Vec<Comparator>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
    Tilde,
    Caret,
}

/// A version with possibly-wildcard components (`None` = `x`, `*` or absent).
#[derive(Debug, Clone)]
struct Partial {
    major: Option<u64>,
    minor: Option<u64>,
    patch: Option<u64>,
    pre: Prerelease,
}

#[derive(Debug, Clone)]
struct Comparator {
    op: Op,
    v: Partial,
}

impl Constraint {
    pub fn parse(s: &str) -> Result<Self, SemverError> {
        let err = |reason: String| SemverError::Constraint {
            constraint: s.to_string(),
            reason,
        };
        let mut any_of = Vec::new();
        for group in s.split("||") {
            let group = group.trim();
            if group.is_empty() {
                return Err(err("empty constraint".into()));
            }
            any_of.push(parse_group(group).map_err(err)?);
        }
        Ok(Constraint { any_of })
    }

    pub fn matches(&self, v: &Version) -> bool {
        self.any_of
            .iter()
            .any(|all| all.iter().all(|c| c.matches(v)))
    }
}

fn parse_group(group: &str) -> Result<Vec<Comparator>, String> {
    static HYPHEN: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"(\S+)\s+-\s+(\S+)").unwrap());
    static TERM: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(r"^(!=|>=|=>|<=|=<|~>|>|<|~|\^|=)?\s*(v?[0-9xX*]+(?:\.[0-9xX*]+)?(?:\.[0-9xX*]+)?(?:-[0-9A-Za-z.-]+)?(?:\+[0-9A-Za-z.-]+)?)\s*,?\s*").unwrap()
    });
    let mut out = Vec::new();
    let mut rest = group.to_string();
    while let Some(c) = HYPHEN.captures(&rest) {
        let (whole, low, high) = (
            c.get(0).unwrap().range(),
            c[1].to_string(),
            c[2].to_string(),
        );
        out.push(Comparator {
            op: Op::Ge,
            v: parse_partial(&low)?,
        });
        out.push(Comparator {
            op: Op::Le,
            v: parse_partial(&high)?,
        });
        rest.replace_range(whole, " ");
    }
    let mut input = rest.trim().trim_matches(',').trim();
    while !input.is_empty() {
        let c = TERM
            .captures(input)
            .ok_or_else(|| format!("improper constraint: {input}"))?;
        let op = match c.get(1).map(|m| m.as_str()) {
            None | Some("=") => Op::Eq,
            Some("!=") => Op::Ne,
            Some(">") => Op::Gt,
            Some(">=") | Some("=>") => Op::Ge,
            Some("<") => Op::Lt,
            Some("<=") | Some("=<") => Op::Le,
            Some("~") | Some("~>") => Op::Tilde,
            Some("^") => Op::Caret,
            Some(other) => return Err(format!("unknown operator {other}")),
        };
        out.push(Comparator {
            op,
            v: parse_partial(&c[2])?,
        });
        input = &input[c.get(0).unwrap().end()..];
    }
    if out.is_empty() {
        return Err("no comparators".into());
    }
    Ok(out)
}

fn parse_partial(s: &str) -> Result<Partial, String> {
    let s = s.strip_prefix('v').unwrap_or(s);
    let (core, _build) = s.split_once('+').unwrap_or((s, ""));
    let (core, pre) = core.split_once('-').unwrap_or((core, ""));
    let mut parts = core.split('.');
    let mut component = |name: &str| -> Result<Option<u64>, String> {
        match parts.next() {
            None | Some("x" | "X" | "*") => Ok(None),
            Some(n) => n
                .parse()
                .map(Some)
                .map_err(|_| format!("invalid {name} version '{n}' in '{s}'")),
        }
    };
    let (major, minor, patch) = (
        component("major")?,
        component("minor")?,
        component("patch")?,
    );
    if parts.next().is_some() {
        return Err(format!("invalid version '{s}'"));
    }
    let pre = Prerelease::new(pre).map_err(|e| format!("invalid prerelease in '{s}': {e}"))?;
    // Once a component is a wildcard, the ones after it are too (`1.x.3` means `1.x`).
    let minor = major.and(minor);
    let patch = minor.and(patch);
    Ok(Partial {
        major,
        minor,
        patch,
        pre,
    })
}

impl Partial {
    fn is_wild(&self) -> bool {
        self.patch.is_none()
    }

    fn floor(&self) -> Version {
        let mut v = Version::new(
            self.major.unwrap_or(0),
            self.minor.unwrap_or(0),
            self.patch.unwrap_or(0),
        );
        v.pre = self.pre.clone();
        v
    }

    /// Whether `v` lies in the range the wildcard covers (`1.2.x` ⇒ `1.2.*`).
    fn covers(&self, v: &Version) -> bool {
        self.major.is_none_or(|m| v.major == m)
            && self.minor.is_none_or(|m| v.minor == m)
            && self.patch.is_none_or(|p| v.patch == p)
    }
}

impl Comparator {
    fn matches(&self, v: &Version) -> bool {
        if !v.pre.is_empty() && self.v.pre.is_empty() {
            return false;
        }
        let floor = self.v.floor();
        let cmp = precedence(v, &floor);
        match self.op {
            Op::Eq if self.v.is_wild() => self.v.covers(v),
            Op::Eq => cmp == Ordering::Equal,
            Op::Ne if self.v.is_wild() => !self.v.covers(v),
            Op::Ne => cmp != Ordering::Equal,
            Op::Gt if self.v.is_wild() => cmp == Ordering::Greater && !self.v.covers(v),
            Op::Gt => cmp == Ordering::Greater,
            Op::Ge => cmp != Ordering::Less,
            Op::Lt => cmp == Ordering::Less,
            Op::Le if self.v.is_wild() => cmp != Ordering::Greater || self.v.covers(v),
            Op::Le => cmp != Ordering::Greater,
            Op::Tilde => {
                cmp != Ordering::Less
                    && v.major == floor.major
                    && (self.v.minor.is_none() || v.minor == floor.minor)
            }
            Op::Caret => cmp != Ordering::Less && self.caret_upper_holds(v),
        }
    }

    fn caret_upper_holds(&self, v: &Version) -> bool {
        match (self.v.major.unwrap_or(0), self.v.minor, self.v.patch) {
            (m, _, _) if m > 0 => v.major == m,
            (_, None, _) => v.major == 0,
            (_, Some(n), _) if n > 0 => v.major == 0 && v.minor == n,
            (_, Some(_), None) => v.major == 0 && v.minor == 0,
            (_, Some(_), Some(p)) => v.major == 0 && v.minor == 0 && v.patch == p,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(c: &str, v: &str) -> bool {
        Constraint::parse(c)
            .unwrap()
            .matches(&parse_version(v).unwrap())
    }

    fn tags(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn versions_parse_loosely() {
        assert_eq!(parse_version("v1.2.3").unwrap(), Version::new(1, 2, 3));
        assert_eq!(parse_version("01.02.003").unwrap(), Version::new(1, 2, 3));
        assert!(parse_version("1.2").is_none());
        assert!(parse_version("latest").is_none());
        assert_eq!(
            parse_version("6.1.0-rc.1+build.5").unwrap().pre.as_str(),
            "rc.1"
        );
    }

    #[test]
    fn basic_operators() {
        assert!(ok(">=1.2.0", "1.2.0") && ok(">=1.2.0", "2.0.0") && !ok(">=1.2.0", "1.1.9"));
        assert!(ok(">1.2.0", "1.2.1") && !ok(">1.2.0", "1.2.0"));
        assert!(ok("<1.2.0", "1.1.9") && !ok("<1.2.0", "1.2.0"));
        assert!(ok("<=1.2.0", "1.2.0") && !ok("<=1.2.0", "1.2.1"));
        assert!(ok("1.2.3", "1.2.3") && ok("=1.2.3", "1.2.3") && !ok("1.2.3", "1.2.4"));
        assert!(ok("!=1.2.3", "1.2.4") && !ok("!=1.2.3", "1.2.3"));
        assert!(ok("=> 1.0.0", "1.0.0") && ok("=< 1.0.0", "0.9.0"));
    }

    #[test]
    fn wildcards() {
        assert!(ok("1.2.x", "1.2.9") && !ok("1.2.x", "1.3.0"));
        assert!(ok("*", "9.9.9") && ok("x", "0.0.1"));
        assert!(ok("6.x", "6.9.0") && !ok("6.x", "7.0.0"));
        assert!(ok(">1.2.x", "1.3.0") && !ok(">1.2.x", "1.2.9"));
        assert!(ok("<=1.2.x", "1.2.9") && !ok("<=1.2.x", "1.3.0"));
        assert!(ok("<1.2.x", "1.1.9") && !ok("<1.2.x", "1.2.0"));
        assert!(ok("!=1.2.x", "1.3.0") && !ok("!=1.2.x", "1.2.5"));
    }

    #[test]
    fn tilde_and_caret() {
        assert!(ok("~1.2.3", "1.2.9") && !ok("~1.2.3", "1.3.0") && !ok("~1.2.3", "1.2.2"));
        assert!(ok("~1.2", "1.2.0") && !ok("~1.2", "1.3.0"));
        assert!(ok("~1", "1.9.0") && !ok("~1", "2.0.0"));
        assert!(ok("~>1.2", "1.2.5"));
        assert!(ok("^1.2.3", "1.9.0") && !ok("^1.2.3", "2.0.0"));
        assert!(ok("^0.2.3", "0.2.9") && !ok("^0.2.3", "0.3.0"));
        assert!(ok("^0.0.3", "0.0.3") && !ok("^0.0.3", "0.0.4"));
        assert!(ok("^0", "0.9.9") && !ok("^0", "1.0.0"));
        assert!(ok("^0.0", "0.0.9") && !ok("^0.0", "0.1.0"));
    }

    #[test]
    fn ranges_and_alternatives() {
        assert!(ok(">=1.0.0 <2.0.0", "1.5.0") && !ok(">=1.0.0 <2.0.0", "2.0.0"));
        assert!(ok(">=1.0.0, <2.0.0", "1.5.0"));
        assert!(
            ok("1.2 - 1.4.5", "1.4.5")
                && !ok("1.2 - 1.4.5", "1.4.6")
                && !ok("1.2 - 1.4.5", "1.1.9")
        );
        assert!(ok("<1.0.0 || >=3.0.0", "3.1.0") && !ok("<1.0.0 || >=3.0.0", "2.0.0"));
        assert!(ok("1.2 - 1.4.x", "1.4.9"));
    }

    #[test]
    fn prereleases_need_a_prerelease_constraint() {
        assert!(!ok(">=6.1.0", "6.2.0-rc.1"));
        assert!(ok(">= 6.1.x-0", "6.2.0-rc.1"));
        assert!(ok(">= 6.1.x-0", "6.1.0-rc.1"));
        assert!(!ok("*", "1.0.0-alpha"));
        assert!(ok(">=1.0.0-alpha", "1.0.0-beta"));
        assert!(!ok(">=1.0.0-beta", "1.0.0-alpha"));
    }

    #[test]
    fn bad_constraints_are_errors() {
        assert!(matches!(
            Constraint::parse("not a version"),
            Err(SemverError::Constraint { .. })
        ));
        assert!(matches!(
            Constraint::parse(">=1.0.0 ||"),
            Err(SemverError::Constraint { .. })
        ));
        assert_eq!(
            Constraint::parse("abc").unwrap_err().to_string(),
            "semver 'abc' parse error: improper constraint: abc"
        );
    }

    #[test]
    fn selects_the_highest_matching_tag() {
        let t = tags(&[
            "latest",
            "6.0.0",
            "6.1.0",
            "v6.2.0",
            "6.3.0-rc.1",
            "7.0.0",
            "junk",
        ]);
        assert_eq!(select_tag(&t, "6.x", None, false).unwrap(), "v6.2.0");
        // Each comparator gates prereleases on its own, as Masterminds does: `<7.0.0` refuses
        // `6.3.0-rc.1`, `<7.0.0-0` admits it.
        assert_eq!(
            select_tag(&t, ">= 6.1.x-0 <7.0.0", None, false).unwrap(),
            "v6.2.0"
        );
        assert_eq!(
            select_tag(&t, ">= 6.1.x-0 <7.0.0-0", None, false).unwrap(),
            "6.3.0-rc.1"
        );
        assert_eq!(select_tag(&t, "*", None, false).unwrap(), "7.0.0");
        assert_eq!(
            select_tag(&t, ">=9.0.0", None, false),
            Err(SemverError::NoMatch(">=9.0.0".into()))
        );
    }

    #[test]
    fn filter_limits_the_candidates() {
        let t = tags(&["6.1.0", "6.2.0-rc.1", "6.2.0-alpha.1", "6.3.0"]);
        assert_eq!(
            select_tag(&t, ">= 6.1.x-0", Some(".*-rc.*"), false).unwrap(),
            "6.2.0-rc.1"
        );
        assert!(matches!(
            select_tag(&t, "*", Some("("), false),
            Err(SemverError::Filter { .. })
        ));
    }

    #[test]
    fn helm_tags_encode_build_metadata_with_underscores() {
        let t = tags(&["1.0.0_build.1", "1.0.0_build.2", "0.9.0"]);
        let picked = select_tag(&t, ">=1.0.0", None, true).unwrap();
        assert!(
            picked.starts_with("1.0.0_"),
            "the original tag string is returned: {picked}"
        );
        assert_eq!(
            select_tag(&t, ">=1.0.0", None, false).unwrap_err(),
            SemverError::NoMatch(">=1.0.0".into())
        );
    }
}
