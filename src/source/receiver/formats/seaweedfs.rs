//! SeaweedFS filer notifications (`[notification.webhook]`): one filer event per request, its
//! `key` the full filer path. S3 buckets are the directories under `/buckets`, so
//! `/buckets/<bucket>/<key>` is an object; directories and the gateway's own `.system` entries are
//! not. Writes, overwrites, deletions and renames all change what a Bucket holds.

use serde::Deserialize;

use super::{Delivery, Endpoint, FormatError, Notice, ObjectChange, json};

/// The filer directory S3 buckets live in (SeaweedFS's default `-dir.buckets`).
const BUCKETS_DIR: &str = "/buckets/";

#[derive(Deserialize)]
struct Event {
    event_type: String,
    key: String,
    #[serde(default)]
    message: Message,
}

#[derive(Deserialize, Default)]
struct Message {
    new_entry: Option<Entry>,
    old_entry: Option<Entry>,
    new_parent_path: Option<String>,
}

#[derive(Deserialize)]
struct Entry {
    #[serde(default)]
    name: String,
    #[serde(default)]
    is_directory: bool,
}

pub fn parse(body: &[u8]) -> Result<Delivery, FormatError> {
    let event: Event = json("SeaweedFS filer notification", body)?;
    let mut delivery = Delivery::default();
    if !matches!(
        event.event_type.as_str(),
        "create" | "update" | "delete" | "rename"
    ) {
        return Ok(delivery);
    }
    let entry = event
        .message
        .new_entry
        .as_ref()
        .or(event.message.old_entry.as_ref());
    if entry.is_some_and(|e| e.is_directory) {
        return Ok(delivery);
    }
    delivery.notices.extend(object(&event.key));
    // A rename also writes the entry's new path.
    if let (Some(parent), Some(entry)) = (&event.message.new_parent_path, &event.message.new_entry)
        && event.event_type == "rename"
    {
        delivery.notices.extend(object(&format!(
            "{}/{}",
            parent.trim_end_matches('/'),
            entry.name
        )));
    }
    Ok(delivery)
}

/// The bucket object at filer path `path`, if it is one.
fn object(path: &str) -> Option<Notice> {
    let (bucket, key) = path.strip_prefix(BUCKETS_DIR)?.split_once('/')?;
    // `.uploads/` holds the parts of multipart uploads, which become an object on completion.
    if bucket.is_empty()
        || bucket.starts_with('.')
        || key.is_empty()
        || key.starts_with(".uploads/")
    {
        return None;
    }
    Some(Notice::Object(ObjectChange {
        endpoint: Endpoint::Unknown,
        bucket: bucket.to_string(),
        key: key.to_string(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(body: &[u8]) -> Vec<(String, String)> {
        parse(body)
            .unwrap()
            .notices
            .into_iter()
            .map(|n| match n {
                Notice::Object(o) => (o.bucket, o.key),
                other => panic!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn an_object_write_names_its_bucket_and_key() {
        let body = include_bytes!("../../../../tests/fixtures/receiver/seaweedfs-recorded.json");
        assert_eq!(keys(body), [("events".into(), "apps/dev/a b.yaml".into())]);
    }

    #[test]
    fn directories_and_system_entries_are_not_objects() {
        let dir = br#"{"event_type":"create","key":"/buckets/events/apps","message":{"new_entry":{"name":"apps","is_directory":true}}}"#;
        assert!(keys(dir).is_empty());
        let bucket = br#"{"event_type":"create","key":"/buckets/events","message":{"new_entry":{"name":"events","is_directory":true}}}"#;
        assert!(keys(bucket).is_empty());
        let system = br#"{"event_type":"create","key":"/buckets/.system/owners/d/events","message":{"new_entry":{"name":"events"}}}"#;
        assert!(keys(system).is_empty());
        let elsewhere = br#"{"event_type":"create","key":"/topics/x/y","message":{}}"#;
        assert!(keys(elsewhere).is_empty());
    }

    #[test]
    fn deletions_and_renames_change_the_bucket() {
        let delete = br#"{"event_type":"delete","key":"/buckets/b/k.yaml","message":{"old_entry":{"name":"k.yaml"}}}"#;
        assert_eq!(keys(delete), [("b".into(), "k.yaml".into())]);
        let rename = br#"{"event_type":"rename","key":"/buckets/b/old.yaml","message":{"old_entry":{"name":"old.yaml"},"new_entry":{"name":"new.yaml"},"new_parent_path":"/buckets/b/dir"}}"#;
        assert_eq!(
            keys(rename),
            [
                ("b".into(), "old.yaml".into()),
                ("b".into(), "dir/new.yaml".into())
            ]
        );
    }
}
