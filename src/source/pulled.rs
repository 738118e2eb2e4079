//! Pull once per digest: an artifact already built from `registry/repository@digest` (with the
//! same layer selection and ignore rules) is copied from storage for the next object that
//! resolves to it, instead of fetching the manifest and the layer again — 1,000 objects on one
//! artifact make one pull, not 1,000 (source-controller#2114; registry rate limits).
//!
//! Reuse never lets an object read what it could not pull itself: the key names the registry
//! and repository, the object must have been answered for that digest by the registry over its
//! own credentials (the tag's resolution, or a HEAD for a digest reference), and objects that
//! choose their own path or trust to the registry (`proxySecretRef`, `certSecretRef`) — a proxy
//! of the tenant's could answer for the registry — always pull. The content itself is
//! digest-addressed: whoever pulled it first, it is what the manifest names.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::util::BoundedMap;

/// What makes two pulls give the same tarball.
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
pub struct PullKey {
    pub registry: String,
    pub repository: String,
    pub digest: String,
    pub media_type: Option<String>,
    pub copy: bool,
    pub ignore: Option<String>,
}

/// A stored artifact built for a key.
#[derive(Debug, Clone, PartialEq)]
pub struct Pulled {
    /// Storage-relative path of the tarball.
    pub path: String,
    pub size: u64,
    /// `sha256:<hex>` of the tarball.
    pub digest: String,
    /// The manifest's annotations (`status.artifact.metadata`).
    pub metadata: Option<BTreeMap<String, String>>,
}

/// Past this many keys the index starts over (as the registry client cache does).
const MAX_ENTRIES: usize = 4096;

/// How long an object waits for another's pull of the same key before pulling itself (a
/// registry that stalls one pull must not stall every object behind it).
const MAX_WAIT_FOR_PULL: Duration = Duration::from_secs(30);

pub struct PulledArtifacts {
    entries: BoundedMap<PullKey, Pulled>,
    /// One pull at a time per key, so that objects created together pull once.
    pulling: Mutex<HashMap<PullKey, Arc<tokio::sync::Mutex<()>>>>,
}

/// The right to pull for a key while others wait; released on drop.
pub struct PullTurn {
    _guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl Default for PulledArtifacts {
    fn default() -> Self {
        PulledArtifacts {
            entries: BoundedMap::new(MAX_ENTRIES),
            pulling: Mutex::default(),
        }
    }
}

impl PulledArtifacts {
    /// Waits for any pull of `key` in progress (at most `MAX_WAIT_FOR_PULL`), then takes the
    /// turn: the caller looks the key up again, and pulls holding the turn when it is absent.
    pub async fn turn(&self, key: &PullKey) -> PullTurn {
        let lock = {
            let Ok(mut pulling) = self.pulling.lock() else {
                return PullTurn { _guard: None };
            };
            pulling.retain(|_, m| Arc::strong_count(m) > 1);
            pulling.entry(key.clone()).or_default().clone()
        };
        let guard = tokio::time::timeout(MAX_WAIT_FOR_PULL, lock.lock_owned())
            .await
            .ok();
        PullTurn { _guard: guard }
    }

    pub fn get(&self, key: &PullKey) -> Option<Pulled> {
        self.entries.get(key)
    }

    pub fn remember(&self, key: PullKey, pulled: Pulled) {
        self.entries.insert(key, pulled);
    }

    /// A stored copy that is gone (collected, or the object deleted) is no longer offered.
    pub fn forget(&self, key: &PullKey) {
        self.entries.remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(digest: &str) -> PullKey {
        PullKey {
            registry: "r.io".into(),
            repository: "app".into(),
            digest: digest.into(),
            media_type: None,
            copy: false,
            ignore: None,
        }
    }

    fn pulled(path: &str) -> Pulled {
        Pulled {
            path: path.into(),
            size: 1,
            digest: "sha256:00".into(),
            metadata: None,
        }
    }

    #[test]
    fn keys_differ_by_every_input_of_the_tarball() {
        let index = PulledArtifacts::default();
        index.remember(key("sha256:a"), pulled("a"));
        assert_eq!(index.get(&key("sha256:a")), Some(pulled("a")));
        let other_repository = PullKey {
            repository: "other".into(),
            ..key("sha256:a")
        };
        let copied = PullKey {
            copy: true,
            ..key("sha256:a")
        };
        let ignoring = PullKey {
            ignore: Some("*.md".into()),
            ..key("sha256:a")
        };
        for different in [other_repository, copied, ignoring, key("sha256:b")] {
            assert_eq!(index.get(&different), None, "{different:?}");
        }
        index.forget(&key("sha256:a"));
        assert_eq!(index.get(&key("sha256:a")), None);
    }

    #[tokio::test]
    async fn one_pull_at_a_time_per_key() {
        let index = Arc::new(PulledArtifacts::default());
        let first = index.turn(&key("sha256:a")).await;
        let other_key = index.turn(&key("sha256:b")).await;
        let waiting = {
            let index = index.clone();
            tokio::spawn(async move {
                let _turn = index.turn(&key("sha256:a")).await;
                index.get(&key("sha256:a"))
            })
        };
        tokio::task::yield_now().await;
        assert!(
            !waiting.is_finished(),
            "the second waits for the first pull"
        );
        index.remember(key("sha256:a"), pulled("a"));
        drop((first, other_key));
        assert_eq!(waiting.await.unwrap(), Some(pulled("a")));
    }

    #[test]
    fn the_index_is_bounded() {
        let index = PulledArtifacts::default();
        for i in 0..=MAX_ENTRIES {
            index.remember(key(&format!("sha256:{i}")), pulled("p"));
        }
        let entries = index.entries.len();
        assert!(entries <= MAX_ENTRIES, "{entries}");
    }
}
