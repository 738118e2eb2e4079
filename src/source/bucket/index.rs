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

    /// The mirror's record of what its files hold: a version line, then one JSON array
    /// `[key, etag]` a line. JSON escapes every control byte, so no key or etag, whatever it
    /// holds, can end its line early or pose as another entry.
    pub fn write_to(&self, out: &mut impl Write) -> std::io::Result<()> {
        out.write_all(RECORD_HEADER.as_bytes())?;
        out.write_all(b"\n")?;
        for entry in &self.entries {
            serde_json::to_writer(&mut *out, &entry)?;
            out.write_all(b"\n")?;
        }
        Ok(())
    }

    /// Reads what `write_to` wrote. Anything else (another version, a torn line, a key that
    /// would not pass the listing's checks) is refused whole: the mirror then starts over,
    /// which costs downloads but never trusts a path the record should not hold.
    pub fn read_from(input: impl BufRead) -> std::io::Result<Self> {
        let mut lines = input.lines();
        if lines.next().transpose()?.as_deref() != Some(RECORD_HEADER) {
            return Err(invalid_record("not a version 2 mirror record"));
        }
        let mut index = Index::default();
        for line in lines {
            let (key, etag): (String, String) = serde_json::from_str(&line?)?;
            if let Some(why) = unsafe_key(&key) {
                return Err(invalid_record(why));
            }
            if index.entries.insert(key, etag).is_some() {
                return Err(invalid_record("duplicate key"));
            }
        }
        Ok(index)
    }
}

/// The record's first line. It holds no space, so no line of the first format (`<key>
/// <etag>`, which always had one) can be taken for it.
const RECORD_HEADER: &str = r#"{"driftless-mirror-record":2}"#;

fn invalid_record(why: &str) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        format!("mirror record: {why}"),
    )
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
    // Line breaks and other control characters have no business in a file name: they are
    // what once let a key pose as two lines of the mirror's record, and they garble every
    // listing of the artifact. Flux takes them; driftless skips them with a warning.
    if key.chars().any(char::is_control) {
        return Some("control character");
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

    fn record_of(index: &Index) -> Vec<u8> {
        let mut buf = Vec::new();
        index.write_to(&mut buf).unwrap();
        buf
    }

    /// Every byte a server may put into a key or an etag comes back as it went in, and no
    /// entry can pose as another (the first format split `z 1\n/abs 2` into `z` and `/abs`).
    #[test]
    fn record_round_trips_hostile_bytes_in_keys_and_etags() {
        let mut index = Index::default();
        index.insert("dir/with space.yaml".into(), "abc".into());
        index.insert("z 1".into(), "x\n/data/victim 2\r\n../../v 3".into());
        index.insert(
            "q\"uote/é€😀 {}[]".into(),
            "\"\\\u{0}\u{7f}\u{85}\u{2028}".into(),
        );
        index.insert("x".into(), "".into());
        let buf = record_of(&index);
        assert_eq!(Index::read_from(&buf[..]).unwrap(), index);
        let text = String::from_utf8(buf).unwrap();
        assert_eq!(text.lines().count(), 1 + index.len(), "{text}");
        assert!(!text.contains('\r'), "{text}");
    }

    #[test]
    fn records_of_the_first_format_are_refused() {
        for old in [
            "a.yaml 1\n",
            "z 1\n/data/victim 2\n",
            "driftless-mirror-record 2\n[\"a\",\"1\"]\n",
            "",
        ] {
            assert!(Index::read_from(old.as_bytes()).is_err(), "{old:?}");
        }
        assert_eq!(
            Index::read_from(&record_of(&Index::default())[..]).unwrap(),
            Index::default()
        );
    }

    /// A record is checked as a listing is: a path that could not have been listed means the
    /// record is not ours, and none of it is trusted.
    #[test]
    fn records_holding_what_a_listing_refuses_are_refused() {
        for entry in [
            r#"["/data/ocirepository/victim/app/latest.tar.gz","1"]"#,
            r#"["../../victim","1"]"#,
            r#"["a/../../b","1"]"#,
            r#"["a\nb","1"]"#,
            r#"["a","1"]
["a","2"]"#,
            r#"["a"]"#,
            r#"{"a":"1"}"#,
        ] {
            let record = format!("{RECORD_HEADER}\n[\"ok\",\"1\"]\n{entry}\n");
            assert!(Index::read_from(record.as_bytes()).is_err(), "{entry}");
        }
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
            "z 1\n/data/x",
            "a\rb",
            "a\0b",
            "tab\there",
            "del\u{7f}",
            "c1\u{85}",
        ] {
            assert!(unsafe_key(key).is_some(), "{key} should be unsafe");
        }
        for key in [
            "a.yaml",
            "dir/b.yaml",
            ".hidden",
            "a..b/c...yaml",
            "with space/é.yaml",
        ] {
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
