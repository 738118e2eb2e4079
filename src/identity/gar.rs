//! Google Artifact Registry and Container Registry logins: a Google access token as the
//! password of the `oauth2accesstoken` user.

use super::auth::RegistryLogin;
use super::google::{self, CLOUD_PLATFORM_SCOPE, GoogleCredential, USERINFO_EMAIL_SCOPE};

pub const USERNAME: &str = "oauth2accesstoken";
/// What the hosts a `gcp` OCIRepository may name look like, for messages.
pub const HOST_PATTERNS: &str =
    "gcr.io, <region>.gcr.io, <location>-docker.pkg.dev, or docker.s3nsregistry.fr";

/// Whether `registry` (as an OCI URL names it) is a Google registry (Flux's
/// `^(((.+\.)?gcr\.io)|(.+-docker\.pkg\.dev)|(docker\.s3nsregistry\.fr))$`), without a port,
/// since the access token goes to it.
pub fn is_registry(registry: &str) -> bool {
    let host = registry.to_ascii_lowercase();
    let host = host.strip_suffix('.').unwrap_or(&host);
    if host == "gcr.io" || host == "docker.s3nsregistry.fr" {
        return true;
    }
    let under = |suffix: &str| {
        host.strip_suffix(suffix)
            .is_some_and(super::endpoints::is_dns_name)
    };
    under(".gcr.io")
        || (under(".pkg.dev")
            && host
                .strip_suffix(".pkg.dev")
                .is_some_and(|h| h.ends_with("-docker")))
}

/// The login with the identity `credential` stands for (its token fetched through `http`,
/// cached until shortly before it lapses).
pub async fn login(
    http: &reqwest::Client,
    credential: &GoogleCredential,
) -> Result<RegistryLogin, String> {
    let token = google::access_token(
        http,
        credential,
        &[CLOUD_PLATFORM_SCOPE, USERINFO_EMAIL_SCOPE],
    )
    .await
    .map_err(|e| format!("failed to get access token for artifact registry: {e}"))?;
    Ok(RegistryLogin {
        username: USERNAME.into(),
        password: token,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn google_registry_hosts() {
        for host in [
            "gcr.io",
            "eu.gcr.io",
            "europe-west1-docker.pkg.dev",
            "us-docker.pkg.dev",
            "docker.s3nsregistry.fr",
            "GCR.IO.",
        ] {
            assert!(is_registry(host), "{host}");
        }
        for host in [
            "gcr.io:443",
            "evilgcr.io",
            "gcr.io.evil.example",
            "docker.pkg.dev",
            "-docker.pkg.dev",
            "us-maven.pkg.dev",
            "us-docker.pkg.dev.evil",
            "x.s3nsregistry.fr",
            "a/b.gcr.io",
            "x-docker.pkg.dev.pkg.dev",
        ] {
            assert!(!is_registry(host), "{host}");
        }
    }
}
