//! One interface over the three object-store APIs: does the bucket exist, list the keys under
//! a prefix page by page, and stream one object into a file.

use std::path::Path;

use super::azure::AzureClient;
use super::gcs::GcsClient;
use super::index::EtagStyle;
use super::object::{BucketError, Fetched, ListBudget, ListLimits, Listed};
use super::s3::S3Client;

pub enum BucketClient {
    S3(S3Client),
    Gcs(GcsClient),
    Azure(AzureClient),
}

impl BucketClient {
    pub fn etag_style(&self) -> EtagStyle {
        match self {
            BucketClient::Azure(_) => EtagStyle::HexEncoded,
            _ => EtagStyle::Plain,
        }
    }

    pub async fn bucket_exists(&self) -> Result<bool, BucketError> {
        match self {
            BucketClient::S3(c) => c.bucket_exists().await,
            BucketClient::Gcs(c) => c.bucket_exists().await,
            BucketClient::Azure(c) => c.container_exists().await,
        }
    }

    /// Every object under `prefix`, handed to `visit` one page at a time so that memory
    /// holds one page, never the whole listing; `limits` bound what the server may send.
    pub async fn list(
        &self,
        prefix: &str,
        limits: ListLimits,
        visit: &mut (dyn FnMut(Vec<Listed>) -> Result<(), BucketError> + Send),
    ) -> Result<(), BucketError> {
        let mut budget = ListBudget::new(limits);
        match self {
            BucketClient::S3(c) => c.list(prefix, &mut budget, visit).await,
            BucketClient::Gcs(c) => c.list(prefix, &mut budget, visit).await,
            BucketClient::Azure(c) => c.list(prefix, &mut budget, visit).await,
        }
    }

    /// Streams the object into `dest` (created or truncated). `listed` is what the listing
    /// said (raw etag, version): a server that can make the GET conditional on it gets the
    /// condition, and when the object changed in between, the current version is fetched.
    pub async fn fetch(
        &self,
        key: &str,
        listed: Option<(&str, Option<&str>)>,
        dest: &Path,
        max_bytes: u64,
    ) -> Result<Fetched, BucketError> {
        match self {
            BucketClient::S3(c) => c.fetch(key, listed.map(|(e, _)| e), dest, max_bytes).await,
            BucketClient::Gcs(c) => {
                let bound = listed.and_then(|(e, v)| v.map(|v| (e, v)));
                c.fetch(key, bound, dest, max_bytes).await
            }
            BucketClient::Azure(c) => c.fetch(key, dest, max_bytes).await,
        }
    }

    /// A small object read whole (the root `.sourceignore`); `None` when it does not exist.
    pub async fn read_small(
        &self,
        key: &str,
        max_bytes: u64,
    ) -> Result<Option<Vec<u8>>, BucketError> {
        let tmp = tempfile::NamedTempFile::new().map_err(|e| BucketError::Write {
            path: "temporary file".into(),
            source: e,
        })?;
        match self.fetch(key, None, tmp.path(), max_bytes).await? {
            Fetched::NotFound => Ok(None),
            Fetched::Written { .. } => {
                std::fs::read(tmp.path())
                    .map(Some)
                    .map_err(|e| BucketError::Write {
                        path: tmp.path().display().to_string(),
                        source: e,
                    })
            }
        }
    }
}
