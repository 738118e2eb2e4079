//! Google Cloud Pub/Sub push deliveries: Artifact Registry's `gcr` topic (`action` INSERT with
//! the pushed `tag`/`digest` references in the message data) and Cloud Storage notifications
//! (the object named in the message attributes).

use base64::Engine as _;
use serde::Deserialize;
use std::collections::HashMap;

use super::{
    Delivery, Endpoint, FormatError, Notice, ObjectChange, image_reference, json, timestamp,
};

#[derive(Deserialize)]
struct Push {
    message: Message,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Message {
    #[serde(default)]
    data: String,
    #[serde(default)]
    message_id: String,
    publish_time: Option<String>,
    #[serde(default)]
    attributes: HashMap<String, String>,
}

/// The `gcr` topic's message.
#[derive(Deserialize)]
struct RegistryChange {
    action: String,
    digest: Option<String>,
    tag: Option<String>,
}

pub fn parse(body: &[u8]) -> Result<Delivery, FormatError> {
    let push: Push = json("Pub/Sub push message", body)?;
    let message = push.message;
    let mut delivery = Delivery::default();
    delivery.saw(
        Some(&message.message_id),
        timestamp(message.publish_time.as_deref()),
    );
    if let Some(change) = storage_change(&message.attributes) {
        delivery.notices.push(change);
        return Ok(delivery);
    }
    let data = base64::engine::general_purpose::STANDARD
        .decode(message.data.as_bytes())
        .map_err(|e| FormatError::Malformed {
            format: "Pub/Sub push message",
            reason: format!("message data is not base64: {e}"),
        })?;
    // Messages of other topics on the same subscription endpoint are not errors.
    let Ok(change) = serde_json::from_slice::<RegistryChange>(&data) else {
        return Ok(delivery);
    };
    if change.action == "INSERT" {
        delivery.notices.extend(registry_push(&change));
    }
    Ok(delivery)
}

/// The tag reference carries host, repository and tag; the digest reference the digest.
fn registry_push(change: &RegistryChange) -> Option<Notice> {
    let digest = change
        .digest
        .as_deref()
        .and_then(|d| d.split_once('@'))
        .map(|(_, d)| d);
    let reference = change.tag.as_deref().or(change.digest.as_deref())?;
    match image_reference(reference)? {
        Notice::Image(mut push) => {
            push.digest = digest.map(str::to_string).or(push.digest);
            Some(Notice::Image(push))
        }
        other => Some(other),
    }
}

/// A Cloud Storage notification: finalize (write), delete and archive change a bucket.
fn storage_change(attributes: &HashMap<String, String>) -> Option<Notice> {
    let event = attributes.get("eventType")?;
    if !matches!(
        event.as_str(),
        "OBJECT_FINALIZE" | "OBJECT_DELETE" | "OBJECT_ARCHIVE"
    ) {
        return None;
    }
    Some(Notice::Object(ObjectChange {
        endpoint: Endpoint::Gcs,
        bucket: attributes.get("bucketId")?.clone(),
        key: attributes.get("objectId")?.clone(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::receiver::formats::ImagePush;

    fn push_of(data: &str, attributes: &str) -> Vec<u8> {
        let data = base64::engine::general_purpose::STANDARD.encode(data);
        format!(r#"{{"message":{{"attributes":{attributes},"data":"{data}","messageId":"2070443601311540","publishTime":"2021-02-26T19:13:55.749Z"}},"subscription":"projects/myproject/subscriptions/mysubscription"}}"#).into_bytes()
    }

    #[test]
    fn an_artifact_registry_insert_names_host_repository_tag_and_digest() {
        let body = push_of(
            r#"{"action":"INSERT","digest":"us-east1-docker.pkg.dev/my-project/my-repo/hello-world@sha256:6ec128e26cd5","tag":"us-east1-docker.pkg.dev/my-project/my-repo/hello-world:1.1"}"#,
            "{}",
        );
        let d = parse(&body).unwrap();
        assert_eq!(
            d.notices,
            [Notice::Image(ImagePush {
                registry: Some("us-east1-docker.pkg.dev".into()),
                repository: "my-project/my-repo/hello-world".into(),
                tag: Some("1.1".into()),
                digest: Some("sha256:6ec128e26cd5".into()),
            })]
        );
        assert_eq!(d.ids, ["2070443601311540"]);
        let delete = push_of(
            r#"{"action":"DELETE","tag":"us-east1-docker.pkg.dev/p/r/i:1"}"#,
            "{}",
        );
        assert!(parse(&delete).unwrap().notices.is_empty());
    }

    #[test]
    fn a_storage_notification_names_bucket_and_object() {
        let body = push_of(
            "{}",
            r#"{"bucketId":"manifests","objectId":"apps/a.yaml","eventType":"OBJECT_FINALIZE","payloadFormat":"JSON_API_V1"}"#,
        );
        assert_eq!(
            parse(&body).unwrap().notices,
            [Notice::Object(ObjectChange {
                endpoint: Endpoint::Gcs,
                bucket: "manifests".into(),
                key: "apps/a.yaml".into(),
            })]
        );
        let metadata = push_of(
            "{}",
            r#"{"bucketId":"b","objectId":"k","eventType":"OBJECT_METADATA_UPDATE"}"#,
        );
        assert!(parse(&metadata).unwrap().notices.is_empty());
    }
}
