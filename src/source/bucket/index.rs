//! The etag index of a bucket and Flux's revision over it (reference §8.2), plus the rules
//! that decide which listed keys enter it.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::artifact::ignore::{DefaultPatterns, IgnoreRules, SOURCE_IGNORE_FILE};

/// `key -> etag`, sorted bytewise as Flux sorts it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Index {
    entries: BTreeMap<String, String>,
}

impl Index {
    pub fn insert(&mut self, key: String, etag: String) {
        self.entries.insert(key, etag);
    }

    pub fn remove(&mut self, key: &str) -> Option<String> {
        self.entries.remove(key)
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries.get(key).map(String::as_str)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }

    /// `sha256:<hex>` of the `<key> <etag>\n` lines in key order.
    pub fn revision(&self) -> String {
        let mut hasher = Sha256::new();
        for (key, etag) in &self.entries {
            hasher.update(key.as_bytes());
            hasher.update(b" ");
            hasher.update(etag.as_bytes());
            hasher.update(b"\n");
        }
        format!("sha256:{}", hex::encode(hasher.finalize()))
    }

    /// The same lines the revision hashes: the mirror's record of what its files hold.
    pub fn write_to(&self, out: &mut impl Write) -> std::io::Result<()> {
        for (key, etag) in &self.entries {
            writeln!(out, "{key} {etag}")?;
        }
        Ok(())
    }

    /// Reads what `write_to` wrote; keys may contain spaces, etags never do.
    pub fn read_from(input: impl BufRead) -> std::io::Result<Self> {
        let mut index = Index::default();
        for line in input.lines() {
            let line = line?;
            let Some((key, etag)) = line.rsplit_once(' ') else {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "mirror index line without an etag",
                ));
            };
            index.insert(key.to_string(), etag.to_string());
        }
        Ok(index)
    }
}

/// Why a listed key does not enter the index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// Directory markers and the root `.sourceignore`: skipped silently, as Flux does.
    NotContent,
    /// Matched by `.sourceignore` or `spec.ignore`.
    Ignored,
    /// Would not stay inside the artifact as a file path.
    Unsafe(&'static str),
}

/// Decides, per listed key, whether it is indexed.
pub struct KeyFilter {
    rules: IgnoreRules,
}

impl KeyFilter {
    /// The bucket's root `.sourceignore` (when it has one) followed by `spec.ignore`, with no
    /// built-in patterns (reference §8.4).
    pub fn new(source_ignore: Option<&str>, spec_ignore: Option<&str>) -> Self {
        let patterns = [source_ignore, spec_ignore]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join("\n");
        KeyFilter {
            rules: IgnoreRules::from_patterns(&patterns, DefaultPatterns::None),
        }
    }

    pub fn check(&self, key: &str) -> Result<(), Skip> {
        if key.ends_with('/') || key == SOURCE_IGNORE_FILE {
            return Err(Skip::NotContent);
        }
        if let Some(why) = unsafe_key(key) {
            return Err(Skip::Unsafe(why));
        }
        if self.rules.is_ignored(Path::new(key), false) {
            return Err(Skip::Ignored);
        }
        Ok(())
    }
}

/// Longest path component most file systems accept.
const MAX_COMPONENT_BYTES: usize = 255;

/// Why `key` cannot be used as a relative file path inside the artifact, if it cannot.
pub fn unsafe_key(key: &str) -> Option<&'static str> {
    if key.starts_with('/') {
        return Some("absolute path");
    }
    if key.contains('\\') {
        return Some("backslash");
    }
    if key.contains('\0') {
        return Some("NUL byte");
    }
    for part in key.split('/') {
        match part {
            "" => return Some("empty path segment"),
            "." | ".." => return Some("dot segment"),
            p if p.len() > MAX_COMPONENT_BYTES => return Some("path segment too long"),
            _ => {}
        }
    }
    None
}

/// An etag as it enters the index: S3 and GCS without surrounding quotes; Azure's listing
/// value (quotes stripped) hex-encoded, which is what Flux's Azure client indexes.
pub fn normalize_etag(provider: EtagStyle, raw: &str) -> String {
    let unquoted = raw.trim().trim_matches('"');
    match provider {
        EtagStyle::Plain => unquoted.to_string(),
        EtagStyle::HexEncoded => hex::encode(unquoted.as_bytes()),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EtagStyle {
    Plain,
    HexEncoded,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_index_has_the_digest_of_empty_input() {
        assert_eq!(
            Index::default().revision(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn revision_hashes_sorted_key_etag_lines() {
        let mut index = Index::default();
        index.insert("b.yaml".into(), "2".into());
        index.insert("a.yaml".into(), "1".into());
        let expected = format!(
            "sha256:{}",
            hex::encode(Sha256::digest(b"a.yaml 1\nb.yaml 2\n"))
        );
        assert_eq!(index.revision(), expected);
    }

    #[test]
    fn index_round_trips_through_its_file_form_with_spaces_in_keys() {
        let mut index = Index::default();
        index.insert("dir/with space.yaml".into(), "abc".into());
        index.insert("x".into(), "d41d8cd98f00b204e9800998ecf8427e".into());
        let mut buf = Vec::new();
        index.write_to(&mut buf).unwrap();
        assert_eq!(Index::read_from(&buf[..]).unwrap(), index);
    }

    #[test]
    fn hostile_keys_are_unsafe() {
        for key in [
            "../evil.yaml",
            "a/../../b",
            "/abs.yaml",
            "a//b.yaml",
            "dir\\x.yaml",
            "./a",
            "a/.",
        ] {
            assert!(unsafe_key(key).is_some(), "{key} should be unsafe");
        }
        for key in ["a.yaml", "dir/b.yaml", ".hidden", "a..b/c...yaml"] {
            assert_eq!(unsafe_key(key), None, "{key} should be safe");
        }
    }

    #[test]
    fn filter_skips_markers_root_sourceignore_and_ignored_keys() {
        let filter = KeyFilter::new(Some("*.md\n"), Some("/secret/\n"));
        assert_eq!(filter.check("dir/"), Err(Skip::NotContent));
        assert_eq!(filter.check(".sourceignore"), Err(Skip::NotContent));
        assert_eq!(filter.check("docs/readme.md"), Err(Skip::Ignored));
        assert_eq!(filter.check("secret/key.yaml"), Err(Skip::Ignored));
        assert_eq!(filter.check("app/secret/key.yaml"), Ok(()));
        assert_eq!(filter.check("sub/.sourceignore"), Ok(()));
        assert!(matches!(filter.check("../x"), Err(Skip::Unsafe(_))));
    }

    #[test]
    fn etags_are_unquoted_and_azure_ones_hex_encoded() {
        assert_eq!(normalize_etag(EtagStyle::Plain, "\"abc\""), "abc");
        assert_eq!(normalize_etag(EtagStyle::Plain, "abc"), "abc");
        assert_eq!(
            normalize_etag(EtagStyle::HexEncoded, "\"0x8D\""),
            hex::encode("0x8D")
        );
    }
}
