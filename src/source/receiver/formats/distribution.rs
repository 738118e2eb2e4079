//! CNCF distribution notifications (`application/vnd.docker.distribution.events.v1+json`): an
//! envelope of events, one per blob or manifest pushed or pulled. Only manifest pushes announce
//! a new revision; blob uploads before them do not.

use serde::Deserialize;

use super::{Delivery, FormatError, image_push, json, timestamp};

#[derive(Deserialize)]
struct Envelope {
    events: Vec<Event>,
}

#[derive(Deserialize)]
struct Event {
    #[serde(default)]
    id: String,
    timestamp: Option<String>,
    action: String,
    target: Target,
    #[serde(default)]
    request: Request,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Target {
    #[serde(default)]
    media_type: String,
    #[serde(default)]
    digest: Option<String>,
    repository: String,
    #[serde(default)]
    tag: Option<String>,
}

#[derive(Deserialize, Default)]
struct Request {
    #[serde(default)]
    host: Option<String>,
}

pub fn parse(body: &[u8]) -> Result<Delivery, FormatError> {
    let envelope: Envelope = json("distribution notification", body)?;
    let mut delivery = Delivery::default();
    for event in envelope.events {
        delivery.saw(Some(&event.id), timestamp(event.timestamp.as_deref()));
        if event.action != "push" || !is_manifest(&event.target.media_type) {
            continue;
        }
        delivery.notices.extend(image_push(
            event.request.host.as_deref(),
            &event.target.repository,
            event.target.tag.as_deref(),
            event.target.digest.as_deref(),
        ));
    }
    Ok(delivery)
}

/// Image manifests and indexes, OCI's and Docker's; what is not one is a blob.
fn is_manifest(media_type: &str) -> bool {
    media_type.contains(".manifest.")
        || media_type.contains(".index.")
        || media_type.contains("manifest.list")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::receiver::formats::{ImagePush, Notice};

    #[test]
    fn a_manifest_push_is_a_notice_and_blob_pushes_are_not() {
        let body = include_bytes!("../../../../tests/fixtures/receiver/distribution-recorded.json");
        let delivery = parse(body).unwrap();
        assert_eq!(
            delivery.notices,
            [Notice::Image(ImagePush {
                registry: Some("127.0.0.1:15055".into()),
                repository: "team/app".into(),
                tag: Some("latest".into()),
                digest: Some(
                    "sha256:274441952c1af8fe940f1f9d384152e2e1514a8c8bf79b754a85f6ba455306a9"
                        .into()
                ),
            })]
        );
        assert_eq!(delivery.ids.len(), 2);
        assert_eq!(
            delivery.sent_at,
            Some("2026-12-04T21:04:40.447552118Z".parse().unwrap())
        );
    }

    #[test]
    fn pulls_and_non_envelopes_are_not_pushes() {
        let pull = br#"{"events":[{"id":"1","action":"pull","target":{"mediaType":"application/vnd.oci.image.manifest.v1+json","repository":"a/b","tag":"x"}}]}"#;
        assert!(parse(pull).unwrap().notices.is_empty());
        assert!(parse(b"[]").is_err());
        assert!(parse(b"{\"events\":[{}]}").is_err());
    }
}
