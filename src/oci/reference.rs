//! `spec.url` and `spec.ref`: which repository, and which tag, semver range or digest in it.

use std::fmt;

/// Docker Hub's registry name, used when a URL names no registry (Docker's rules).
pub const DOCKER_HUB: &str = "index.docker.io";

/// An OCI repository address parsed from `oci://<host>[:port]/<path>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RepositoryUrl {
    /// `host[:port]`.
    pub registry: String,
    /// The repository path, for example `stefanprodan/manifests/podinfo`.
    pub repository: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    #[error("URL must be in format 'oci://<domain>/<org>/<repo>'")]
    MissingScheme,
    #[error("URL must not contain a tag; remove ':{0}'")]
    HasTag(String),
    #[error("URL must not contain a digest; remove '@{0}'")]
    HasDigest(String),
    #[error("invalid repository name '{0}'")]
    InvalidRepository(String),
}

impl RepositoryUrl {
    pub fn parse(url: &str) -> Result<Self, UrlError> {
        let rest = url.strip_prefix("oci://").ok_or(UrlError::MissingScheme)?;
        let rest = rest.trim_end_matches('/');
        if let Some((_, digest)) = rest.split_once('@') {
            return Err(UrlError::HasDigest(digest.to_string()));
        }
        let (registry, path) = split_registry(rest);
        if let Some((_, tag)) = path.rsplit_once(':') {
            return Err(UrlError::HasTag(tag.to_string()));
        }
        let repository = if registry == DOCKER_HUB && !path.contains('/') {
            format!("library/{path}")
        } else {
            path.to_string()
        };
        if !valid_repository(&repository) {
            return Err(UrlError::InvalidRepository(repository));
        }
        Ok(RepositoryUrl {
            registry,
            repository,
        })
    }

    /// `host/repo:tag` or `host/repo@digest`, as Flux writes references in messages.
    pub fn reference(&self, tag_or_digest: &str) -> String {
        let sep = if tag_or_digest.starts_with("sha256:") {
            '@'
        } else {
            ':'
        };
        format!("{self}{sep}{tag_or_digest}")
    }
}

impl fmt::Display for RepositoryUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)
    }
}

/// The first path component is a registry when it looks like a host (a dot, a port, or
/// `localhost`), as Docker decides.
fn split_registry(s: &str) -> (String, &str) {
    match s.split_once('/') {
        Some((first, rest))
            if first.contains('.') || first.contains(':') || first == "localhost" =>
        {
            let registry = if first == "docker.io" {
                DOCKER_HUB.to_string()
            } else {
                first.to_string()
            };
            (registry, rest)
        }
        _ => (DOCKER_HUB.to_string(), s),
    }
}

/// The distribution spec's repository grammar: lowercase components separated by `/`.
fn valid_repository(repo: &str) -> bool {
    !repo.is_empty()
        && repo.split('/').all(|c| {
            !c.is_empty()
                && c.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
                && c.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
                && c.bytes().last().is_some_and(|b| b.is_ascii_alphanumeric())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_registry_and_repository() {
        let u = RepositoryUrl::parse("oci://ghcr.io/stefanprodan/manifests/podinfo").unwrap();
        assert_eq!(u.registry, "ghcr.io");
        assert_eq!(u.repository, "stefanprodan/manifests/podinfo");
        let u = RepositoryUrl::parse("oci://127.0.0.1:5000/app").unwrap();
        assert_eq!(
            (u.registry.as_str(), u.repository.as_str()),
            ("127.0.0.1:5000", "app")
        );
        let u = RepositoryUrl::parse("oci://localhost/app").unwrap();
        assert_eq!(u.registry, "localhost");
    }

    #[test]
    fn docker_hub_rules() {
        let u = RepositoryUrl::parse("oci://nginx").unwrap();
        assert_eq!(
            (u.registry.as_str(), u.repository.as_str()),
            (DOCKER_HUB, "library/nginx")
        );
        let u = RepositoryUrl::parse("oci://docker.io/org/app").unwrap();
        assert_eq!(
            (u.registry.as_str(), u.repository.as_str()),
            (DOCKER_HUB, "org/app")
        );
    }

    #[test]
    fn rejects_tags_digests_and_missing_scheme() {
        assert_eq!(
            RepositoryUrl::parse("oci://ghcr.io/org/app:v1"),
            Err(UrlError::HasTag("v1".into()))
        );
        assert!(matches!(
            RepositoryUrl::parse("oci://ghcr.io/org/app@sha256:abc"),
            Err(UrlError::HasDigest(_))
        ));
        assert_eq!(
            RepositoryUrl::parse("https://ghcr.io/org/app"),
            Err(UrlError::MissingScheme)
        );
        assert!(matches!(
            RepositoryUrl::parse("oci://ghcr.io/Org/App"),
            Err(UrlError::InvalidRepository(_))
        ));
        assert_eq!(
            UrlError::HasTag("v1".into()).to_string(),
            "URL must not contain a tag; remove ':v1'"
        );
    }

    #[test]
    fn references_for_messages() {
        let u = RepositoryUrl::parse("oci://ghcr.io/org/app").unwrap();
        assert_eq!(u.reference("latest"), "ghcr.io/org/app:latest");
        assert_eq!(u.reference("sha256:ab"), "ghcr.io/org/app@sha256:ab");
    }
}
