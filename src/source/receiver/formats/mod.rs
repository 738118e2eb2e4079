//! What registries, object stores and cloud event services send, read into [`Notice`]s: which
//! repository or bucket changed, nothing more is believed.
//!
//! Each sender format is a module with one `parse` over the raw body (and the few headers it
//! needs). A body that is valid JSON of the format but announces nothing of interest (a blob
//! upload, a deletion of an image, a package that is not a container) gives no notices; a body
//! that is not the format is an error the sender hears about.

mod distribution;
mod dockerhub;
mod eventbridge;
mod eventgrid;
mod github;
mod harbor;
mod pubsub;
mod s3;
mod seaweedfs;

use http::HeaderMap;
use serde::Deserialize;

use crate::oci::reference::RepositoryUrl;

/// A sender's payload format (the `type` of a sender in the receiver's configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// CNCF distribution (`registry:2`, Zot, GitLab's container registry) notifications.
    #[serde(alias = "gitlab")]
    Distribution,
    Harbor,
    /// GitHub `package` / `registry_package` webhooks (GHCR).
    Github,
    Dockerhub,
    /// Amazon EventBridge events (ECR image actions, S3 object events) through an API destination.
    #[serde(alias = "ecr")]
    Eventbridge,
    /// Azure Event Grid (ACR image pushes, Blob Storage events), Event Grid or CloudEvents schema.
    #[serde(alias = "acr")]
    Eventgrid,
    /// Google Cloud Pub/Sub push subscriptions (Artifact Registry's `gcr` topic, GCS notifications).
    #[serde(alias = "gar", alias = "gcs")]
    Pubsub,
    /// S3 event notifications (the `Records` JSON of AWS S3 and MinIO's webhook target).
    #[serde(alias = "minio")]
    S3,
    /// SeaweedFS filer webhook notifications.
    Seaweedfs,
}

impl Format {
    /// Whether requests of this format are authenticated by an HMAC of the body rather than a
    /// token (GitHub signs; the others send a shared secret).
    pub fn signs_body(self) -> bool {
        self == Format::Github
    }
}

/// One change an event announces.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Notice {
    Image(ImagePush),
    Object(ObjectChange),
}

/// A manifest pushed to a repository.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ImagePush {
    /// `host[:port]` as OCIRepository URLs name it (Docker Hub as `index.docker.io`); `None`
    /// when the payload does not say (then only the sender's configured host can match).
    pub registry: Option<String>,
    pub repository: String,
    /// The tag the push set, when it set one.
    pub tag: Option<String>,
    /// The manifest digest the sender claims: never trusted, only compared with what is stored.
    pub digest: Option<String>,
}

/// An object written or removed in a bucket.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ObjectChange {
    pub endpoint: Endpoint,
    pub bucket: String,
    pub key: String,
}

/// Where a bucket lives, as far as the event tells.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// The event does not name the service (MinIO, SeaweedFS): any endpoint may match.
    Unknown,
    /// `host[:port]` of the service (Azure's account host).
    Host(String),
    /// Amazon S3: bucket names are global, any `*.amazonaws.com` endpoint.
    Aws,
    /// Google Cloud Storage: bucket names are global.
    Gcs,
}

/// What one request carried.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Delivery {
    pub notices: Vec<Notice>,
    /// The sender's identifiers of the events, which a replay repeats.
    pub ids: Vec<String>,
    /// When the oldest event happened, as the sender says.
    pub sent_at: Option<jiff::Timestamp>,
    /// An answer the sender waits for instead of an empty 200 (Event Grid's validation).
    pub reply: Option<serde_json::Value>,
}

impl Delivery {
    fn saw(&mut self, id: Option<&str>, at: Option<jiff::Timestamp>) {
        if let Some(id) = id.filter(|id| !id.is_empty()) {
            self.ids.push(id.to_string());
        }
        if let Some(at) = at {
            self.sent_at = Some(self.sent_at.map_or(at, |t| t.min(at)));
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FormatError {
    #[error("body is not a {format} event: {reason}")]
    Malformed {
        format: &'static str,
        reason: String,
    },
}

/// Read `body` as `format`.
pub fn parse(format: Format, headers: &HeaderMap, body: &[u8]) -> Result<Delivery, FormatError> {
    match format {
        Format::Distribution => distribution::parse(body),
        Format::Harbor => harbor::parse(body),
        Format::Github => github::parse(headers, body),
        Format::Dockerhub => dockerhub::parse(body),
        Format::Eventbridge => eventbridge::parse(body),
        Format::Eventgrid => eventgrid::parse(body),
        Format::Pubsub => pubsub::parse(body),
        Format::S3 => s3::parse(body),
        Format::Seaweedfs => seaweedfs::parse(body),
    }
}

/// Deserialize `body` as `T`, naming `format` when it is not.
fn json<'a, T: Deserialize<'a>>(format: &'static str, body: &'a [u8]) -> Result<T, FormatError> {
    serde_json::from_slice(body).map_err(|e| FormatError::Malformed {
        format,
        reason: e.to_string(),
    })
}

/// An RFC 3339 time, `None` when absent or unreadable (the age check then does not apply).
fn timestamp(text: Option<&str>) -> Option<jiff::Timestamp> {
    text.and_then(|t| t.parse().ok())
}

/// A push of `repository` at `registry`, normalised as OCIRepository URLs are (Docker Hub's
/// names, `library/` for official images); `None` when the names are not a valid repository.
fn image_push(
    registry: Option<&str>,
    repository: &str,
    tag: Option<&str>,
    digest: Option<&str>,
) -> Option<Notice> {
    let host = registry.map(str::to_ascii_lowercase);
    // Repository names are lowercase by the distribution spec; GitHub reports owners as cased.
    let url = RepositoryUrl::parse(&format!(
        "oci://{}/{}",
        host.as_deref().unwrap_or("placeholder.invalid"),
        repository.to_ascii_lowercase()
    ))
    .ok()?;
    Some(Notice::Image(ImagePush {
        registry: host.map(|_| url.registry),
        repository: url.repository,
        tag: tag.filter(|t| !t.is_empty()).map(str::to_string),
        digest: digest
            .filter(|d| d.starts_with("sha256:"))
            .map(str::to_string),
    }))
}

/// `host/path:tag` or `host/path@digest` (GHCR's `package_url`, Artifact Registry's `tag` and
/// `digest`, Harbor's `resource_url`) split into a push.
fn image_reference(reference: &str) -> Option<Notice> {
    let (name, digest) = match reference.split_once('@') {
        Some((name, digest)) => (name, Some(digest)),
        None => (reference, None),
    };
    let (name, tag) = match name.rsplit_once(':') {
        Some((n, t)) if !t.contains('/') => (n, Some(t)),
        _ => (name, None),
    };
    let (host, repository) = name.split_once('/')?;
    image_push(Some(host), repository, tag, digest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_split_into_host_repository_tag_and_digest() {
        let push = |r: &str| match image_reference(r) {
            Some(Notice::Image(p)) => p,
            other => panic!("{r}: {other:?}"),
        };
        let p = push("ghcr.io/Org/App:v1.2.3");
        assert_eq!(p.registry.as_deref(), Some("ghcr.io"));
        assert_eq!(
            (p.repository.as_str(), p.tag.as_deref()),
            ("org/app", Some("v1.2.3"))
        );
        let p = push("localhost:5000/team/app@sha256:abc");
        assert_eq!(p.registry.as_deref(), Some("localhost:5000"));
        assert_eq!((p.tag, p.digest.as_deref()), (None, Some("sha256:abc")));
        let p = push("docker.io/nginx:1");
        assert_eq!(p.registry.as_deref(), Some("index.docker.io"));
        assert_eq!(p.repository, "library/nginx");
        assert!(image_reference("no-host").is_none());
        assert!(image_reference("host.io/UPPER CASE bad").is_none());
    }
}

/// Every documented payload in tests/fixtures/receiver (their sources in its README), read as
/// the format its sender uses.
#[cfg(test)]
mod fixtures {
    use super::*;

    const PODINFO: &str = "sha256:2a55910c504ae3a572ab2d316d686cb947acecd74c1c65ef4b9eedac33377f9f";

    fn fixture(name: &str) -> Vec<u8> {
        let path = format!(
            "{}/tests/fixtures/receiver/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    fn notices(format: Format, name: &str, headers: &[(&str, &str)]) -> Vec<Notice> {
        let mut map = HeaderMap::new();
        for (k, v) in headers {
            map.insert(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        parse(format, &map, &fixture(name))
            .unwrap_or_else(|e| panic!("{name}: {e}"))
            .notices
    }

    fn image(registry: &str, repository: &str, tag: &str, digest: Option<&str>) -> Notice {
        Notice::Image(ImagePush {
            registry: Some(registry.into()),
            repository: repository.into(),
            tag: Some(tag.into()),
            digest: digest.map(Into::into),
        })
    }

    fn object(endpoint: Endpoint, bucket: &str, key: &str) -> Notice {
        Notice::Object(ObjectChange {
            endpoint,
            bucket: bucket.into(),
            key: key.into(),
        })
    }

    #[test]
    fn registry_payloads_name_the_pushed_tag() {
        let d = Some(PODINFO);
        for (format, name, headers, want) in [
            (
                Format::Distribution,
                "distribution-push.json",
                &[][..],
                image("registry.example.com", "apps/podinfo", "6.5.0", d),
            ),
            (
                Format::Distribution,
                "gitlab-registry-push.json",
                &[],
                image(
                    "registry.gitlab.example.com",
                    "group/project/podinfo",
                    "6.5.0",
                    d,
                ),
            ),
            (
                Format::Harbor,
                "harbor-push.json",
                &[],
                image("harbor.example.com", "apps/podinfo", "6.5.0", d),
            ),
            (
                Format::Harbor,
                "harbor-push-cloudevents.json",
                &[],
                image("harbor.example.com", "apps/podinfo", "6.5.0", d),
            ),
            (
                Format::Github,
                "github-package-published.json",
                &[("x-github-event", "package")],
                image("ghcr.io", "acme/podinfo", "6.5.0", d),
            ),
            (
                Format::Github,
                "github-registry-package-published.json",
                &[("x-github-event", "registry_package")],
                image("ghcr.io", "acme/podinfo", "6.5.0", d),
            ),
            (
                Format::Eventbridge,
                "ecr-eventbridge-push.json",
                &[],
                image(
                    "123456789012.dkr.ecr.eu-west-1.amazonaws.com",
                    "apps/podinfo",
                    "6.5.0",
                    d,
                ),
            ),
            (
                Format::Eventgrid,
                "acr-eventgrid-push.json",
                &[],
                image("acmeregistry.azurecr.io", "apps/podinfo", "6.5.0", d),
            ),
            (
                Format::Pubsub,
                "gar-pubsub-push.json",
                &[],
                image(
                    "europe-west1-docker.pkg.dev",
                    "acme-prod/apps/podinfo",
                    "6.5.0",
                    d,
                ),
            ),
        ] {
            assert_eq!(notices(format, name, headers), [want], "{name}");
        }
        let hub = notices(Format::Dockerhub, "dockerhub-push.json", &[]);
        assert!(
            matches!(&hub[..], [Notice::Image(p)] if p.registry.as_deref() == Some("index.docker.io") && p.tag.as_deref() == Some("6.5.0")),
            "{hub:?}"
        );
        let validation = parse(
            Format::Eventgrid,
            &HeaderMap::new(),
            &fixture("acr-eventgrid-validation.json"),
        )
        .unwrap();
        assert!(validation.reply.is_some() && validation.notices.is_empty());
    }

    #[test]
    fn bucket_payloads_name_the_written_object() {
        for (format, name, want) in [
            (
                Format::S3,
                "s3-event.json",
                object(
                    Endpoint::Aws,
                    "acme-artifacts",
                    "podinfo/6.5.0/podinfo bundle.tar.gz",
                ),
            ),
            (
                Format::S3,
                "minio-webhook.json",
                object(
                    Endpoint::Unknown,
                    "artifacts",
                    "podinfo/6.5.0/podinfo.tar.gz",
                ),
            ),
            (
                Format::Eventbridge,
                "s3-eventbridge.json",
                object(
                    Endpoint::Aws,
                    "acme-artifacts",
                    "podinfo/6.5.0/podinfo bundle.tar.gz",
                ),
            ),
            (
                Format::Seaweedfs,
                "seaweedfs-webhook.json",
                object(
                    Endpoint::Unknown,
                    "artifacts",
                    "podinfo/6.5.0/podinfo.tar.gz",
                ),
            ),
            (
                Format::Eventgrid,
                "azure-blob-eventgrid.json",
                object(
                    Endpoint::Host("acmeartifacts.blob.core.windows.net".into()),
                    "artifacts",
                    "podinfo/6.5.0/podinfo.tar.gz",
                ),
            ),
            (
                Format::Pubsub,
                "gcs-pubsub-push.json",
                object(
                    Endpoint::Gcs,
                    "acme-artifacts",
                    "podinfo/6.5.0/podinfo.tar.gz",
                ),
            ),
        ] {
            assert_eq!(notices(format, name, &[]), [want], "{name}");
        }
    }
}
