//! GitHub `package` and `registry_package` webhooks: a container published to GHCR. The
//! delivery GUID (`X-GitHub-Delivery`) identifies the event; the body's HMAC is checked before
//! this reads it.

use http::HeaderMap;
use serde::Deserialize;
use sha2::Digest as _;

use super::{Delivery, FormatError, Notice, image_push, image_reference, json};

/// GHCR's registry host.
const GHCR: &str = "ghcr.io";

#[derive(Deserialize)]
struct Event {
    action: String,
    package: Option<Package>,
    registry_package: Option<Package>,
}

#[derive(Deserialize)]
struct Package {
    #[serde(default)]
    name: String,
    #[serde(default)]
    namespace: String,
    package_type: Option<String>,
    ecosystem: Option<String>,
    package_version: Option<Version>,
}

#[derive(Deserialize)]
struct Version {
    version: Option<String>,
    container_metadata: Option<ContainerMetadata>,
    package_url: Option<String>,
}

#[derive(Deserialize)]
struct ContainerMetadata {
    tag: Option<Tag>,
}

#[derive(Deserialize)]
struct Tag {
    name: Option<String>,
    digest: Option<String>,
}

pub fn parse(headers: &HeaderMap, body: &[u8]) -> Result<Delivery, FormatError> {
    let mut delivery = Delivery::default();
    let delivery_id = headers
        .get("x-github-delivery")
        .and_then(|v| v.to_str().ok());
    delivery.saw(delivery_id, None);
    // The delivery header is not signed: a replay could change it. The signed body cannot be
    // changed, so it names the event too.
    let signed = format!("sha256:{}", hex::encode(sha2::Sha256::digest(body)));
    delivery.saw(Some(&signed), None);
    // A ping (sent when the webhook is created) and other events are answered, not parsed.
    let kind = headers.get("x-github-event").and_then(|v| v.to_str().ok());
    if !matches!(kind, Some("package" | "registry_package")) {
        return Ok(delivery);
    }
    let event: Event = json("GitHub package event", body)?;
    let package = event.package.or(event.registry_package);
    let Some(package) =
        package.filter(|_| matches!(event.action.as_str(), "published" | "updated"))
    else {
        return Ok(delivery);
    };
    let is_container = [&package.package_type, &package.ecosystem]
        .into_iter()
        .flatten()
        .any(|t| t.eq_ignore_ascii_case("container") || t.eq_ignore_ascii_case("docker"));
    if !is_container {
        return Ok(delivery);
    }
    delivery.notices.extend(push(&package));
    Ok(delivery)
}

fn push(package: &Package) -> Option<Notice> {
    let version = package.package_version.as_ref()?;
    let tag = version
        .container_metadata
        .as_ref()
        .and_then(|m| m.tag.as_ref());
    let tag_name = tag.and_then(|t| t.name.as_deref());
    let digest = tag
        .and_then(|t| t.digest.as_deref())
        .or(version.version.as_deref());
    // `package_url` is `ghcr.io/<owner>/<name>:<tag>` with the repository's real path (a name
    // may hold slashes); the namespace and name are the fallback.
    if let Some(Notice::Image(p)) = version.package_url.as_deref().and_then(image_reference)
        && p.registry.as_deref() == Some(GHCR)
    {
        return image_push(
            Some(GHCR),
            &p.repository,
            tag_name.or(p.tag.as_deref()),
            digest,
        );
    }
    image_push(
        Some(GHCR),
        &format!("{}/{}", package.namespace, package.name),
        tag_name,
        digest,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::receiver::formats::ImagePush;

    fn headers(event: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("x-github-event", event.parse().unwrap());
        h.insert(
            "x-github-delivery",
            "72d3162e-cc78-11e3-81ab-4c9367dc0958".parse().unwrap(),
        );
        h
    }

    #[test]
    fn a_published_container_is_a_push_to_ghcr() {
        let body = br#"{"action":"published","package":{"name":"app","namespace":"Octo-Org",
          "package_type":"CONTAINER","ecosystem":"CONTAINER",
          "package_version":{"version":"sha256:1f2e","package_url":"ghcr.io/octo-org/app:v1.0.0",
            "container_metadata":{"tag":{"name":"v1.0.0","digest":"sha256:1f2e"}}}}}"#;
        let d = parse(&headers("package"), body).unwrap();
        assert_eq!(
            d.notices,
            [Notice::Image(ImagePush {
                registry: Some("ghcr.io".into()),
                repository: "octo-org/app".into(),
                tag: Some("v1.0.0".into()),
                digest: Some("sha256:1f2e".into()),
            })]
        );
        assert_eq!(d.ids[0], "72d3162e-cc78-11e3-81ab-4c9367dc0958");
        assert!(
            d.ids[1].starts_with("sha256:"),
            "the signed body names the event too"
        );
    }

    #[test]
    fn npm_packages_pings_and_deletions_are_not_pushes() {
        let npm = br#"{"action":"published","registry_package":{"name":"x","namespace":"o","package_type":"npm"}}"#;
        assert!(
            parse(&headers("registry_package"), npm)
                .unwrap()
                .notices
                .is_empty()
        );
        assert!(parse(&headers("ping"), b"{}").unwrap().notices.is_empty());
        let gone = br#"{"action":"deleted","package":{"name":"x","namespace":"o","package_type":"CONTAINER"}}"#;
        assert!(parse(&headers("package"), gone).unwrap().notices.is_empty());
    }
}
