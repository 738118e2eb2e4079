//! S3 event notifications: the `Records` JSON of Amazon S3 (as SQS/SNS/Lambda carry it) and of
//! MinIO's webhook target. Keys are URL-encoded with `+` for spaces, as S3 sends them.

use serde::Deserialize;

use super::{Delivery, Endpoint, FormatError, Notice, ObjectChange, json, timestamp};

#[derive(Deserialize)]
struct Body {
    #[serde(rename = "Records", default)]
    records: Vec<Record>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Record {
    #[serde(default)]
    event_source: String,
    event_time: Option<String>,
    #[serde(default)]
    event_name: String,
    s3: S3,
}

#[derive(Deserialize)]
struct S3 {
    bucket: Bucket,
    object: Object,
}

#[derive(Deserialize)]
struct Bucket {
    name: String,
}

#[derive(Deserialize)]
struct Object {
    key: String,
    #[serde(default)]
    sequencer: String,
}

pub fn parse(body: &[u8]) -> Result<Delivery, FormatError> {
    let body: Body = json("S3 event notification", body)?;
    let mut delivery = Delivery::default();
    for record in body.records {
        let name = record.event_name.trim_start_matches("s3:");
        // The sequencer orders events of one key: with bucket and key it names the event.
        let id = (!record.s3.object.sequencer.is_empty()).then(|| {
            format!(
                "{}/{}/{}/{name}",
                record.s3.bucket.name, record.s3.object.key, record.s3.object.sequencer
            )
        });
        delivery.saw(id.as_deref(), timestamp(record.event_time.as_deref()));
        if !(name.starts_with("ObjectCreated:") || name.starts_with("ObjectRemoved:")) {
            continue;
        }
        let Some(key) = decode_key(&record.s3.object.key) else {
            continue;
        };
        let endpoint = match record.event_source.as_str() {
            "aws:s3" => Endpoint::Aws,
            _ => Endpoint::Unknown,
        };
        delivery.notices.push(Notice::Object(ObjectChange {
            endpoint,
            bucket: record.s3.bucket.name,
            key,
        }));
    }
    Ok(delivery)
}

/// S3 event keys are form-encoded: `+` is a space, `%XX` a byte.
fn decode_key(key: &str) -> Option<String> {
    let spaced = key.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced)
        .decode_utf8()
        .ok()
        .map(|k| k.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_name_bucket_and_decoded_key() {
        let body = br#"{"Records":[{"eventVersion":"2.1","eventSource":"aws:s3","awsRegion":"us-west-2",
          "eventTime":"1970-01-01T00:00:00.000Z","eventName":"ObjectCreated:Put",
          "s3":{"s3SchemaVersion":"1.0","configurationId":"testConfigRule",
            "bucket":{"name":"mybucket","arn":"arn:aws:s3:::mybucket"},
            "object":{"key":"apps/my+file%2B1.yaml","size":1024,"eTag":"d41d8cd98f00b204e9800998ecf8427e","sequencer":"0055AED6DCD90281E5"}}}]}"#;
        let d = parse(body).unwrap();
        assert_eq!(
            d.notices,
            [Notice::Object(ObjectChange {
                endpoint: Endpoint::Aws,
                bucket: "mybucket".into(),
                key: "apps/my file+1.yaml".into(),
            })]
        );
        assert_eq!(d.ids.len(), 1);
    }

    #[test]
    fn minio_records_match_any_endpoint_and_other_events_are_skipped() {
        let body = br#"{"EventName":"s3:ObjectRemoved:Delete","Key":"b/k","Records":[{"eventVersion":"2.0","eventSource":"minio:s3",
          "eventName":"s3:ObjectRemoved:Delete","s3":{"bucket":{"name":"b"},"object":{"key":"k","sequencer":"17"}}},
          {"eventSource":"minio:s3","eventName":"s3:ObjectAccessed:Get","s3":{"bucket":{"name":"b"},"object":{"key":"k"}}}]}"#;
        assert_eq!(
            parse(body).unwrap().notices,
            [Notice::Object(ObjectChange {
                endpoint: Endpoint::Unknown,
                bucket: "b".into(),
                key: "k".into(),
            })]
        );
    }
}
