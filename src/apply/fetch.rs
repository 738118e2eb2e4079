//! The consumer side of the artifact contract: download `status.artifact.url` with retries,
//! check the digest (sha256, sha384, sha512 or blake3, as Flux may write them), and extract it
//! safely.

use std::collections::{HashMap, VecDeque};
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use sha2::Digest;

use crate::artifact::extract::{ExtractLimits, extract_tar_gz};

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The source-controller has no such file (yet): the source is not ready.
    #[error("artifact not found at {0}")]
    NotFound(String),
    #[error("failed to download artifact from {url}: {message}")]
    Download { url: String, message: String },
    #[error("artifact is larger than the limit of {0} bytes (--artifact-max-bytes)")]
    TooLarge(u64),
    #[error(
        "failed to verify artifact: computed digest doesn't match '{expected}' (got '{actual}')"
    )]
    DigestMismatch { expected: String, actual: String },
    #[error("failed to verify artifact: {0}")]
    Digest(String),
    #[error("failed to extract artifact: {0}")]
    Extract(String),
}

/// What retries look like: Flux's client retries 9 times between 5 and 30 s; an apply
/// controller next to its source can be quicker and give up sooner.
#[derive(Debug, Clone, Copy)]
pub struct Retries {
    pub attempts: u32,
    pub first_delay: Duration,
    pub max_delay: Duration,
}

impl Default for Retries {
    fn default() -> Self {
        Retries {
            attempts: 4,
            first_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(10),
        }
    }
}

/// Downloads, verifies and extracts the artifact into `target`.
pub async fn fetch_artifact(
    http: &reqwest::Client,
    url: &str,
    digest: &str,
    target: &Path,
    limits: ExtractLimits,
    retries: Retries,
) -> Result<(), FetchError> {
    let file = tempfile::NamedTempFile::new_in(target.parent().unwrap_or(target)).map_err(|e| {
        FetchError::Download {
            url: url.into(),
            message: e.to_string(),
        }
    })?;
    let mut verifier = Verifier::for_digest(digest)?;
    download_with_retries(
        http,
        url,
        file.path(),
        &mut verifier,
        limits.max_bytes,
        retries,
    )
    .await?;
    verifier.check()?;
    let (path, target) = (file.path().to_path_buf(), target.to_path_buf());
    tokio::task::spawn_blocking(move || {
        let reader = std::fs::File::open(&path).map_err(|e| FetchError::Extract(e.to_string()))?;
        extract_tar_gz(reader, &target, limits).map_err(|e| FetchError::Extract(e.to_string()))
    })
    .await
    .map_err(|e| FetchError::Extract(e.to_string()))??;
    drop(file);
    Ok(())
}

/// Extracted artifacts by digest, shared by every Kustomization applying the same revision
/// (Flux downloads and unpacks the artifact again for each one). Entries are read-only; the
/// oldest go once more than `capacity` are kept, and a directory lives until its last user
/// is done with it.
pub struct ArtifactCache {
    capacity: usize,
    entries: Mutex<Entries>,
}

#[derive(Default)]
struct Entries {
    by_digest: HashMap<String, Arc<tokio::sync::OnceCell<Arc<tempfile::TempDir>>>>,
    order: VecDeque<String>,
}

impl ArtifactCache {
    pub fn new(capacity: usize) -> Self {
        ArtifactCache {
            capacity: capacity.max(1),
            entries: Mutex::new(Entries::default()),
        }
    }

    /// The extracted artifact, fetched once per digest however many ask at the same time.
    pub async fn get(
        &self,
        http: &reqwest::Client,
        url: &str,
        digest: &str,
        limits: ExtractLimits,
        retries: Retries,
    ) -> Result<Arc<tempfile::TempDir>, FetchError> {
        let cell = {
            let mut entries = self.entries.lock().expect("artifact cache lock");
            match entries.by_digest.get(digest) {
                Some(cell) => cell.clone(),
                None => {
                    let cell = Arc::new(tokio::sync::OnceCell::new());
                    entries.by_digest.insert(digest.to_string(), cell.clone());
                    entries.order.push_back(digest.to_string());
                    while entries.order.len() > self.capacity {
                        if let Some(old) = entries.order.pop_front() {
                            entries.by_digest.remove(&old);
                        }
                    }
                    cell
                }
            }
        };
        let result = cell
            .get_or_try_init(|| async {
                let dir = tempfile::Builder::new()
                    .prefix("artifact-")
                    .tempdir()
                    .map_err(|e| FetchError::Extract(e.to_string()))?;
                fetch_artifact(
                    http,
                    url,
                    digest,
                    &dir.path().join("content"),
                    limits,
                    retries,
                )
                .await?;
                Ok::<_, FetchError>(Arc::new(dir))
            })
            .await
            .cloned();
        if result.is_err() {
            // A failure is not remembered: the next pass fetches again.
            let mut entries = self.entries.lock().expect("artifact cache lock");
            if entries
                .by_digest
                .get(digest)
                .is_some_and(|c| Arc::ptr_eq(c, &cell))
            {
                entries.by_digest.remove(digest);
                entries.order.retain(|d| d != digest);
            }
        }
        result
    }
}

async fn download_with_retries(
    http: &reqwest::Client,
    url: &str,
    dest: &Path,
    verifier: &mut Verifier,
    max_bytes: u64,
    retries: Retries,
) -> Result<(), FetchError> {
    let mut delay = retries.first_delay;
    let mut attempt = 1;
    loop {
        verifier.reset();
        match download_once(http, url, dest, verifier, max_bytes).await {
            Ok(()) => return Ok(()),
            Err(Attempt::Final(e)) => return Err(e),
            Err(Attempt::Retry(e)) if attempt >= retries.attempts => return Err(e),
            Err(Attempt::Retry(e)) => {
                tracing::debug!(%url, attempt, error = %e, "artifact download failed; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(retries.max_delay);
                attempt += 1;
            }
        }
    }
}

enum Attempt {
    Retry(FetchError),
    Final(FetchError),
}

async fn download_once(
    http: &reqwest::Client,
    url: &str,
    dest: &Path,
    verifier: &mut Verifier,
    max_bytes: u64,
) -> Result<(), Attempt> {
    let failed = |message: String| FetchError::Download {
        url: url.into(),
        message,
    };
    let response = http
        .get(url)
        .send()
        .await
        .map_err(|e| Attempt::Retry(failed(crate::transport::error_chain(&e))))?;
    let status = response.status();
    if status == reqwest::StatusCode::NOT_FOUND {
        return Err(Attempt::Final(FetchError::NotFound(url.into())));
    }
    if !status.is_success() {
        let e = failed(format!("HTTP {}", status.as_u16()));
        let retry = status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS;
        return Err(if retry {
            Attempt::Retry(e)
        } else {
            Attempt::Final(e)
        });
    }
    let mut out = std::fs::File::create(dest).map_err(|e| Attempt::Final(failed(e.to_string())))?;
    let mut stream = response.bytes_stream();
    let mut written = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| Attempt::Retry(failed(e.to_string())))?;
        written += chunk.len() as u64;
        if written > max_bytes {
            return Err(Attempt::Final(FetchError::TooLarge(max_bytes)));
        }
        verifier.update(&chunk);
        out.write_all(&chunk)
            .map_err(|e| Attempt::Final(failed(e.to_string())))?;
    }
    out.flush()
        .map_err(|e| Attempt::Final(failed(e.to_string())))
}

/// Hashes the download with the algorithm the digest names.
enum Hasher {
    Sha256(sha2::Sha256),
    Sha384(sha2::Sha384),
    Sha512(sha2::Sha512),
    Blake3(Box<blake3::Hasher>),
}

struct Verifier {
    expected: String,
    algorithm: &'static str,
    hasher: Hasher,
}

impl Verifier {
    /// `<algo>:<hex>`; a bare hex is sha256, as Flux reads it.
    fn for_digest(digest: &str) -> Result<Self, FetchError> {
        let (algorithm, hex) = digest.split_once(':').unwrap_or(("sha256", digest));
        if hex.is_empty() {
            return Err(FetchError::Digest(
                "the source's artifact has no digest".into(),
            ));
        }
        let (algorithm, hasher) = match algorithm {
            "sha256" => ("sha256", Hasher::Sha256(sha2::Sha256::new())),
            "sha384" => ("sha384", Hasher::Sha384(sha2::Sha384::new())),
            "sha512" => ("sha512", Hasher::Sha512(sha2::Sha512::new())),
            "blake3" => ("blake3", Hasher::Blake3(Box::new(blake3::Hasher::new()))),
            other => {
                return Err(FetchError::Digest(format!(
                    "unsupported digest algorithm '{other}' (sha256, sha384, sha512 and blake3 are supported)"
                )));
            }
        };
        Ok(Verifier {
            expected: format!("{algorithm}:{}", hex.to_lowercase()),
            algorithm,
            hasher,
        })
    }

    fn reset(&mut self) {
        self.hasher = match self.hasher {
            Hasher::Sha256(_) => Hasher::Sha256(sha2::Sha256::new()),
            Hasher::Sha384(_) => Hasher::Sha384(sha2::Sha384::new()),
            Hasher::Sha512(_) => Hasher::Sha512(sha2::Sha512::new()),
            Hasher::Blake3(_) => Hasher::Blake3(Box::new(blake3::Hasher::new())),
        };
    }

    fn update(&mut self, bytes: &[u8]) {
        match &mut self.hasher {
            Hasher::Sha256(h) => h.update(bytes),
            Hasher::Sha384(h) => h.update(bytes),
            Hasher::Sha512(h) => h.update(bytes),
            Hasher::Blake3(h) => {
                h.update(bytes);
            }
        }
    }

    fn check(&self) -> Result<(), FetchError> {
        let hex = match &self.hasher {
            Hasher::Sha256(h) => hex::encode(h.clone().finalize()),
            Hasher::Sha384(h) => hex::encode(h.clone().finalize()),
            Hasher::Sha512(h) => hex::encode(h.clone().finalize()),
            Hasher::Blake3(h) => h.finalize().to_hex().to_string(),
        };
        let actual = format!("{}:{hex}", self.algorithm);
        if actual != self.expected {
            return Err(FetchError::DigestMismatch {
                expected: self.expected.clone(),
                actual,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_of_each_algorithm_verify() {
        for (digest, ok) in [
            (
                format!("sha256:{}", hex::encode(sha2::Sha256::digest(b"abc"))),
                true,
            ),
            (
                format!("sha384:{}", hex::encode(sha2::Sha384::digest(b"abc"))),
                true,
            ),
            (
                format!("sha512:{}", hex::encode(sha2::Sha512::digest(b"abc"))),
                true,
            ),
            (hex::encode(sha2::Sha256::digest(b"abc")), true),
            (format!("blake3:{}", blake3::hash(b"abc").to_hex()), true),
            (
                format!("sha256:{}", hex::encode(sha2::Sha256::digest(b"abd"))),
                false,
            ),
        ] {
            let mut v = Verifier::for_digest(&digest).unwrap();
            v.update(b"abc");
            assert_eq!(v.check().is_ok(), ok, "{digest}");
        }
        assert!(
            matches!(Verifier::for_digest("md5:00"), Err(FetchError::Digest(m)) if m.contains("blake3"))
        );
        assert!(Verifier::for_digest("").is_err());
    }
}
