//! Docker Hub webhooks: a push to `namespace/name` with its tag. Docker Hub signs nothing and
//! sends no event identifier; the sender authenticates with the token in its URL.

use serde::Deserialize;

use super::{Delivery, FormatError, image_push, json};
use crate::oci::reference::DOCKER_HUB;

#[derive(Deserialize)]
struct Event {
    push_data: PushData,
    repository: Repository,
}

#[derive(Deserialize)]
struct PushData {
    pushed_at: Option<i64>,
    tag: Option<String>,
}

#[derive(Deserialize)]
struct Repository {
    repo_name: String,
}

pub fn parse(body: &[u8]) -> Result<Delivery, FormatError> {
    let event: Event = json("Docker Hub webhook", body)?;
    let mut delivery = Delivery::default();
    let at = event
        .push_data
        .pushed_at
        .and_then(|s| jiff::Timestamp::from_second(s).ok());
    delivery.saw(None, at);
    delivery.notices.extend(image_push(
        Some(DOCKER_HUB),
        &event.repository.repo_name,
        event.push_data.tag.as_deref(),
        None,
    ));
    Ok(delivery)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::receiver::formats::{ImagePush, Notice};

    #[test]
    fn a_push_names_the_docker_hub_repository_and_tag() {
        let body = br#"{"callback_url":"https://registry.hub.docker.com/u/svendowideit/testhook/hook/2141b5bi5i5b02bec211i4eeih0242eg11000a/",
          "push_data":{"pushed_at":1417566161,"pusher":"trustedbuilder","tag":"latest"},
          "repository":{"name":"testhook","namespace":"svendowideit","repo_name":"svendowideit/testhook"}}"#;
        let d = parse(body).unwrap();
        assert_eq!(
            d.notices,
            [Notice::Image(ImagePush {
                registry: Some("index.docker.io".into()),
                repository: "svendowideit/testhook".into(),
                tag: Some("latest".into()),
                digest: None,
            })]
        );
        let official = br#"{"push_data":{"tag":"1"},"repository":{"repo_name":"nginx"}}"#;
        match &parse(official).unwrap().notices[0] {
            Notice::Image(p) => assert_eq!(p.repository, "library/nginx"),
            other => panic!("{other:?}"),
        }
    }
}
