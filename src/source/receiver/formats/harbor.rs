//! Harbor webhooks (HTTP policy), in the default payload format (`type: PUSH_ARTIFACT`,
//! `event_data`) or the CloudEvents one (`type: harbor.artifact.pushed`, `data`): the pushed
//! artifacts with their `resource_url` (`host/project/repo:tag`). Other event types (pulls,
//! deletions, scans, quotas) announce no new revision.

use serde::Deserialize;

use super::{Delivery, FormatError, Notice, image_push, image_reference, json, timestamp};

#[derive(Deserialize)]
struct Event {
    #[serde(rename = "type")]
    type_: String,
    occur_at: Option<i64>,
    /// CloudEvents: the identifier and time.
    id: Option<String>,
    time: Option<String>,
    #[serde(alias = "data")]
    event_data: EventData,
}

#[derive(Deserialize)]
struct EventData {
    #[serde(default)]
    resources: Vec<Resource>,
    repository: Option<Repository>,
}

#[derive(Deserialize)]
struct Resource {
    digest: Option<String>,
    tag: Option<String>,
    resource_url: Option<String>,
}

#[derive(Deserialize)]
struct Repository {
    repo_full_name: Option<String>,
}

pub fn parse(body: &[u8]) -> Result<Delivery, FormatError> {
    let event: Event = json("Harbor webhook", body)?;
    let mut delivery = Delivery::default();
    let at = event
        .occur_at
        .and_then(|s| jiff::Timestamp::from_second(s).ok())
        .or_else(|| timestamp(event.time.as_deref()));
    delivery.saw(event.id.as_deref(), at);
    if !matches!(
        event.type_.as_str(),
        "PUSH_ARTIFACT" | "harbor.artifact.pushed"
    ) {
        return Ok(delivery);
    }
    let full_name = event.event_data.repository.and_then(|r| r.repo_full_name);
    for resource in &event.event_data.resources {
        delivery
            .notices
            .extend(push(resource, full_name.as_deref()));
    }
    Ok(delivery)
}

/// The resource URL names host, repository and tag; the digest field is the artifact's.
fn push(resource: &Resource, full_name: Option<&str>) -> Option<Notice> {
    let url = resource.resource_url.as_deref()?;
    match image_reference(url)? {
        Notice::Image(p) => image_push(
            p.registry.as_deref(),
            full_name.unwrap_or(&p.repository),
            // A push by digest reports the digest as its tag.
            resource
                .tag
                .as_deref()
                .filter(|t| !t.starts_with("sha256:"))
                .or(p.tag.as_deref()),
            resource.digest.as_deref().or(p.digest.as_deref()),
        ),
        other => Some(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::receiver::formats::ImagePush;

    #[test]
    fn a_pushed_artifact_names_host_repository_tag_and_digest() {
        let body = br#"{"type":"PUSH_ARTIFACT","occur_at":1586922308,"operator":"admin",
          "event_data":{"resources":[{"digest":"sha256:8a9e","tag":"latest",
            "resource_url":"harbor.example.com/library/app:latest"}],
          "repository":{"date_created":1586922308,"name":"app","namespace":"library",
            "repo_full_name":"library/app","repo_type":"private"}}}"#;
        let d = parse(body).unwrap();
        assert_eq!(
            d.notices,
            [Notice::Image(ImagePush {
                registry: Some("harbor.example.com".into()),
                repository: "library/app".into(),
                tag: Some("latest".into()),
                digest: Some("sha256:8a9e".into()),
            })]
        );
        assert_eq!(
            d.sent_at,
            Some(jiff::Timestamp::from_second(1586922308).unwrap())
        );
    }

    #[test]
    fn other_event_types_announce_nothing() {
        let pull = br#"{"type":"PULL_ARTIFACT","occur_at":1,"event_data":{"resources":[{"tag":"x","resource_url":"h.io/a/b:x"}]}}"#;
        assert!(parse(pull).unwrap().notices.is_empty());
        assert!(parse(br#"{"type":"PUSH_ARTIFACT"}"#).is_err());
    }
}
