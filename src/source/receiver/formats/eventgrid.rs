//! Azure Event Grid deliveries, in the Event Grid schema (a JSON array) or the CloudEvents 1.0
//! schema (one event or a batch): ACR `ImagePushed`/`ChartPushed`, Blob Storage
//! `BlobCreated`/`BlobDeleted`, and the subscription validation handshake, whose code is echoed.

use serde::Deserialize;
use serde_json::{Value, json as value};

use super::{Delivery, Endpoint, FormatError, Notice, ObjectChange, image_push, json, timestamp};

#[derive(Deserialize)]
#[serde(untagged)]
enum Body {
    Many(Vec<Event>),
    One(Event),
}

/// The fields both schemas have, under either name.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Event {
    #[serde(default)]
    id: String,
    #[serde(alias = "type")]
    event_type: String,
    #[serde(alias = "time")]
    event_time: Option<String>,
    #[serde(default)]
    data: Value,
}

const VALIDATION: &str = "Microsoft.EventGrid.SubscriptionValidationEvent";

pub fn parse(body: &[u8]) -> Result<Delivery, FormatError> {
    let events = match json("Event Grid event", body)? {
        Body::One(e) => vec![e],
        Body::Many(list) => list,
    };
    let mut delivery = Delivery::default();
    for event in events {
        if event.event_type == VALIDATION {
            let code = text(&event.data, "validationCode").unwrap_or_default();
            delivery.reply = Some(value!({ "validationResponse": code }));
            continue;
        }
        delivery.saw(Some(&event.id), timestamp(event.event_time.as_deref()));
        delivery.notices.extend(match event.event_type.as_str() {
            // Older deliveries name the type without its namespace.
            "Microsoft.ContainerRegistry.ImagePushed"
            | "Microsoft.ContainerRegistry.ChartPushed"
            | "ImagePushed"
            | "ChartPushed" => acr_push(&event.data),
            "Microsoft.Storage.BlobCreated" | "Microsoft.Storage.BlobDeleted" => {
                blob_change(&event.data)
            }
            _ => None,
        });
    }
    Ok(delivery)
}

fn text<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

/// `data` is a distribution event: target repository, tag, digest; request host the login server.
fn acr_push(data: &Value) -> Option<Notice> {
    let target = data.get("target")?;
    let host = data.get("request").and_then(|r| text(r, "host"));
    image_push(
        host,
        text(target, "repository")?,
        text(target, "tag"),
        text(target, "digest"),
    )
}

/// `data.url` is `https://<account>.blob.core.windows.net/<container>/<blob path>`.
fn blob_change(data: &Value) -> Option<Notice> {
    let url = text(data, "url")?;
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))?;
    let (host, path) = rest.split_once('/')?;
    let (container, blob) = path.split_once('/')?;
    let blob = percent_encoding::percent_decode_str(blob)
        .decode_utf8()
        .ok()?;
    Some(Notice::Object(ObjectChange {
        endpoint: Endpoint::Host(host.to_ascii_lowercase()),
        bucket: container.to_string(),
        key: blob.into_owned(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::receiver::formats::ImagePush;

    #[test]
    fn an_acr_push_names_the_login_server() {
        let body = br#"[{"id":"831e1650-001e-001b-66ab-eeb76e069631","topic":"/subscriptions/s/resourceGroups/g/providers/Microsoft.ContainerRegistry/registries/myreg",
          "subject":"aci-helloworld:v1","eventType":"Microsoft.ContainerRegistry.ImagePushed","eventTime":"2018-04-25T21:39:47.6549614Z",
          "data":{"id":"31c51664-e5bd-416a-a5df-e5206bc47ed0","timestamp":"2018-04-25T21:39:47.276585742Z","action":"push",
            "target":{"mediaType":"application/vnd.docker.distribution.manifest.v2+json","size":3023,
              "digest":"sha256:213bbc182920ab41e18edc2001e06abcca6735d87782d9cef68abd83941cf0e5","length":3023,"repository":"aci-helloworld","tag":"v1"},
            "request":{"id":"7c66f28b-de19-40a4-821c-6f5f6c0003a4","host":"myreg.azurecr.io","method":"PUT","useragent":"docker/18.03.0-ce"}},
          "dataVersion":"1.0","metadataVersion":"1"}]"#;
        let d = parse(body).unwrap();
        assert_eq!(
            d.notices,
            [Notice::Image(ImagePush {
                registry: Some("myreg.azurecr.io".into()),
                repository: "aci-helloworld".into(),
                tag: Some("v1".into()),
                digest: Some(
                    "sha256:213bbc182920ab41e18edc2001e06abcca6735d87782d9cef68abd83941cf0e5"
                        .into()
                ),
            })]
        );
        assert_eq!(d.ids, ["831e1650-001e-001b-66ab-eeb76e069631"]);
    }

    #[test]
    fn the_validation_code_is_echoed() {
        let body = br#"[{"id":"2d1781af-3a4c-4d7c-bd0c-e34b19da4e66","topic":"/subscriptions/x","subject":"",
          "data":{"validationCode":"512d38b6-c7b8-40c8-89fe-f46f9e9622b6","validationUrl":"https://rp-eastus2.eventgrid.azure.net/x"},
          "eventType":"Microsoft.EventGrid.SubscriptionValidationEvent","eventTime":"2018-01-25T22:12:19.4556811Z","metadataVersion":"1","dataVersion":"1"}]"#;
        let d = parse(body).unwrap();
        assert_eq!(
            d.reply,
            Some(value!({"validationResponse": "512d38b6-c7b8-40c8-89fe-f46f9e9622b6"}))
        );
        assert!(d.notices.is_empty());
    }

    #[test]
    fn blob_events_in_the_cloudevents_schema_name_account_container_and_blob() {
        let body = br#"{"specversion":"1.0","type":"Microsoft.Storage.BlobCreated","source":"/subscriptions/s/resourceGroups/g/providers/Microsoft.Storage/storageAccounts/acct",
          "id":"9aeb0fdf-c01e-0131-0922-9eb54906e209","time":"2019-11-18T15:13:39.4589254Z","subject":"/blobServices/default/containers/manifests/blobs/apps/a%20b.yaml",
          "data":{"api":"PutBlockList","url":"https://acct.blob.core.windows.net/manifests/apps/a%20b.yaml"}}"#;
        assert_eq!(
            parse(body).unwrap().notices,
            [Notice::Object(ObjectChange {
                endpoint: Endpoint::Host("acct.blob.core.windows.net".into()),
                bucket: "manifests".into(),
                key: "apps/a b.yaml".into(),
            })]
        );
    }
}
