//! Amazon EventBridge events delivered by an API destination (one event per request, or a
//! list): `aws.ecr` "ECR Image Action" pushes, and `aws.s3` "Object Created"/"Object Deleted".
//! The ECR registry host is built from the event's account and region.

use serde::Deserialize;
use serde_json::Value;

use super::{Delivery, Endpoint, FormatError, Notice, ObjectChange, image_push, json, timestamp};

#[derive(Deserialize)]
#[serde(untagged)]
enum Body {
    One(Event),
    Many(Vec<Event>),
}

#[derive(Deserialize)]
struct Event {
    #[serde(default)]
    id: String,
    source: String,
    #[serde(rename = "detail-type", default)]
    detail_type: String,
    #[serde(default)]
    account: String,
    #[serde(default)]
    region: String,
    time: Option<String>,
    #[serde(default)]
    detail: Value,
}

pub fn parse(body: &[u8]) -> Result<Delivery, FormatError> {
    let events = match json("EventBridge event", body)? {
        Body::One(e) => vec![e],
        Body::Many(list) => list,
    };
    let mut delivery = Delivery::default();
    for event in events {
        delivery.saw(Some(&event.id), timestamp(event.time.as_deref()));
        delivery.notices.extend(match event.source.as_str() {
            "aws.ecr" => ecr_push(&event),
            "aws.s3" => s3_change(&event),
            _ => None,
        });
    }
    Ok(delivery)
}

fn text<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

/// A successful push; the host is `<account>.dkr.ecr.<region>.amazonaws.com`.
fn ecr_push(event: &Event) -> Option<Notice> {
    let d = &event.detail;
    if event.detail_type != "ECR Image Action"
        || text(d, "action-type") != Some("PUSH")
        || text(d, "result") != Some("SUCCESS")
    {
        return None;
    }
    let valid =
        |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if !valid(&event.account) || !valid(&event.region) {
        return None;
    }
    let host = format!("{}.dkr.ecr.{}.amazonaws.com", event.account, event.region);
    image_push(
        Some(&host),
        text(d, "repository-name")?,
        text(d, "image-tag"),
        text(d, "image-digest"),
    )
}

/// An object created or deleted in an S3 bucket with EventBridge notifications on.
fn s3_change(event: &Event) -> Option<Notice> {
    if !matches!(
        event.detail_type.as_str(),
        "Object Created" | "Object Deleted"
    ) {
        return None;
    }
    let bucket = event.detail.get("bucket").and_then(|b| text(b, "name"))?;
    let key = event.detail.get("object").and_then(|o| text(o, "key"))?;
    Some(Notice::Object(ObjectChange {
        endpoint: Endpoint::Aws,
        bucket: bucket.to_string(),
        key: key.to_string(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::receiver::formats::ImagePush;

    #[test]
    fn an_ecr_push_names_the_account_registry() {
        let body = br#"{"version":"0","id":"13cde686-328b-6117-af20-0e5566167482","detail-type":"ECR Image Action",
          "source":"aws.ecr","account":"123456789012","time":"2019-11-16T01:54:34Z","region":"us-west-2","resources":[],
          "detail":{"result":"SUCCESS","repository-name":"my-repository-name",
            "image-digest":"sha256:7f5b2640fe6fb4f46592dfd3410c4a79dac4f89e4782432e0378abcd1234","action-type":"PUSH","image-tag":"latest"}}"#;
        let d = parse(body).unwrap();
        assert_eq!(
            d.notices,
            [Notice::Image(ImagePush {
                registry: Some("123456789012.dkr.ecr.us-west-2.amazonaws.com".into()),
                repository: "my-repository-name".into(),
                tag: Some("latest".into()),
                digest: Some(
                    "sha256:7f5b2640fe6fb4f46592dfd3410c4a79dac4f89e4782432e0378abcd1234".into()
                ),
            })]
        );
        assert_eq!(d.ids, ["13cde686-328b-6117-af20-0e5566167482"]);
        assert_eq!(d.sent_at, Some("2019-11-16T01:54:34Z".parse().unwrap()));
    }

    #[test]
    fn failed_pushes_deletions_and_odd_accounts_are_ignored() {
        let failed = br#"{"id":"1","source":"aws.ecr","detail-type":"ECR Image Action","account":"1","region":"r",
          "detail":{"result":"FAILURE","action-type":"PUSH","repository-name":"a"}}"#;
        assert!(parse(failed).unwrap().notices.is_empty());
        let delete = br#"{"id":"1","source":"aws.ecr","detail-type":"ECR Image Action","account":"1","region":"r",
          "detail":{"result":"SUCCESS","action-type":"DELETE","repository-name":"a"}}"#;
        assert!(parse(delete).unwrap().notices.is_empty());
        let evil = br#"{"id":"1","source":"aws.ecr","detail-type":"ECR Image Action","account":"evil.com/x","region":"r",
          "detail":{"result":"SUCCESS","action-type":"PUSH","repository-name":"a"}}"#;
        assert!(parse(evil).unwrap().notices.is_empty());
    }

    #[test]
    fn s3_object_events_name_bucket_and_key() {
        let body = br#"[{"version":"0","id":"17793124-05d4-b198-2fde-7ededc63b103","detail-type":"Object Created","source":"aws.s3",
          "account":"111122223333","time":"2021-11-12T00:00:00Z","region":"ca-central-1",
          "detail":{"version":"0","bucket":{"name":"example-bucket"},"object":{"key":"apps/example-key","size":5}}}]"#;
        assert_eq!(
            parse(body).unwrap().notices,
            [Notice::Object(ObjectChange {
                endpoint: Endpoint::Aws,
                bucket: "example-bucket".into(),
                key: "apps/example-key".into(),
            })]
        );
    }
}
