//! Small helpers every layer uses the same way.

/// An error with its causes: reqwest's own message ("error sending request") hides the one
/// that matters (an unknown certificate issuer, a refused connection).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut message = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = cause.source();
    }
    message
}

/// `s` cut to at most `max` bytes on a character boundary, ending in `...` when it was cut
/// (Kubernetes caps condition messages and event notes; registries send arbitrary bodies).
pub fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max.saturating_sub(3);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

/// Now, in whole seconds: what the API server stores for condition times, and the precision of
/// Flux's RFC 3339 timestamps.
pub fn now_whole_seconds() -> jiff::Timestamp {
    let now = jiff::Timestamp::now();
    jiff::Timestamp::from_second(now.as_second()).unwrap_or(now)
}

/// The DER blocks of a PEM text with the given label (`PRIVATE KEY`, `CERTIFICATE`, ...).
pub fn pem_blocks(pem: &str, label: &str) -> Vec<Vec<u8>> {
    use base64::Engine;
    let (begin, end) = (
        format!("-----BEGIN {label}-----"),
        format!("-----END {label}-----"),
    );
    let mut blocks = Vec::new();
    let mut rest = pem;
    while let Some(start) = rest.find(&begin) {
        let body = &rest[start + begin.len()..];
        let Some(stop) = body.find(&end) else { break };
        let b64: String = body[..stop]
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect();
        if let Ok(der) = base64::engine::general_purpose::STANDARD.decode(b64) {
            blocks.push(der);
        }
        rest = &body[stop + end.len()..];
    }
    blocks
}

/// The first PEM block of any type (Go's `pem.Decode`), decoded.
pub fn first_pem_block(pem: &str) -> Option<Vec<u8>> {
    let start = pem.find("-----BEGIN ")?;
    let after = &pem[start + "-----BEGIN ".len()..];
    let label = &after[..after.find("-----")?];
    pem_blocks(&pem[start..], label).into_iter().next()
}

/// Percent-encodes every byte outside RFC 3986's unreserved set (what SigV4 and the GCS
/// object path want); `keep_slash` leaves `/` as is for paths.
pub fn uri_encode(s: &str, keep_slash: bool) -> String {
    use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
    const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~');
    const PATH: &AsciiSet = &UNRESERVED.remove(b'/');
    utf8_percent_encode(s, if keep_slash { PATH } else { UNRESERVED }).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uri_encode_keeps_unreserved_and_optionally_slashes() {
        assert_eq!(uri_encode("a b/c~d.e", true), "a%20b/c~d.e");
        assert_eq!(uri_encode("a b/c", false), "a%20b%2Fc");
        assert_eq!(uri_encode("ü+=", false), "%C3%BC%2B%3D");
    }

    #[test]
    fn truncation_respects_the_limit_and_char_boundaries() {
        assert_eq!(truncate("short", 10), "short");
        assert_eq!(truncate("abcdefghij", 8), "abcde...");
        let cut = truncate("ééééé", 6);
        assert!(cut.len() <= 6 && cut.ends_with("..."), "{cut}");
    }

    #[test]
    fn whole_seconds() {
        assert_eq!(now_whole_seconds().subsec_nanosecond(), 0);
    }
}

/// A map shared across tasks that holds at most `max` keys: inserting a new key into a full map
/// starts it over. For caches whose entries can always be rebuilt (what was pulled, what was
/// verified), where an unbounded map would grow with every digest ever seen.
pub struct BoundedMap<K, V> {
    max: usize,
    entries: std::sync::Mutex<std::collections::HashMap<K, V>>,
}

impl<K: std::hash::Hash + Eq, V: Clone> BoundedMap<K, V> {
    pub fn new(max: usize) -> Self {
        BoundedMap {
            max,
            entries: std::sync::Mutex::default(),
        }
    }

    pub fn get(&self, key: &K) -> Option<V> {
        self.lock().get(key).cloned()
    }

    pub fn insert(&self, key: K, value: V) {
        let mut entries = self.lock();
        if entries.len() >= self.max && !entries.contains_key(&key) {
            entries.clear();
        }
        entries.insert(key, value);
    }

    pub fn remove(&self, key: &K) {
        self.lock().remove(key);
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<K, V>> {
        // The map holds caches only: what a panicking holder left is still a valid map.
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod bounded_map_tests {
    use super::BoundedMap;

    #[test]
    fn a_full_map_starts_over_for_a_new_key_only() {
        let map = BoundedMap::new(2);
        map.insert("a", 1);
        map.insert("b", 2);
        map.insert("b", 3);
        assert_eq!((map.len(), map.get(&"b")), (2, Some(3)));
        map.insert("c", 4);
        assert_eq!(
            (map.len(), map.get(&"a"), map.get(&"c")),
            (1, None, Some(4))
        );
        map.remove(&"c");
        assert!(map.is_empty());
    }
}
