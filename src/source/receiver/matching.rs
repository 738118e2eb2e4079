//! Which watched objects an event can affect: an OCIRepository whose repository got a push to a
//! tag its reference follows, a Bucket whose bucket (and prefix) got a write. No per-object
//! wiring: the objects' own specs say what they follow.

use kube::Resource;
use kube::runtime::reflector::{ObjectRef, Store};

use super::formats::{Endpoint, ImagePush, ObjectChange};
use crate::api::bucket::BucketProvider;
use crate::api::{Bucket, OCIRepository};
use crate::oci::reference::RepositoryUrl;
use crate::oci::semver::{parse_version, select_tag};

/// The tag an OCIRepository follows when its spec names no reference (Flux's default).
const DEFAULT_TAG: &str = "latest";

/// The OCIRepositories in `store` a push can move to a new revision.
pub fn oci_repositories(
    store: &Store<OCIRepository>,
    push: &ImagePush,
) -> Vec<ObjectRef<OCIRepository>> {
    store
        .state()
        .iter()
        .filter(|o| follows(o, push))
        .map(|o| ObjectRef::from_obj(o.as_ref()))
        .collect()
}

/// The Buckets in `store` whose content a change alters.
pub fn buckets(store: &Store<Bucket>, change: &ObjectChange) -> Vec<ObjectRef<Bucket>> {
    store
        .state()
        .iter()
        .filter(|b| holds(b, change))
        .map(|b| ObjectRef::from_obj(b.as_ref()))
        .collect()
}

/// Whether `obj` follows what `push` changed, and the push is not the revision it already has.
fn follows(obj: &OCIRepository, push: &ImagePush) -> bool {
    // Most objects follow another repository: a string test spares them the URL parse.
    let path = push
        .repository
        .strip_prefix("library/")
        .unwrap_or(&push.repository);
    let maybe_same = obj.spec.url.trim_end_matches('/').ends_with(path);
    if !maybe_same || obj.spec.suspend || obj.meta().deletion_timestamp.is_some() {
        return false;
    }
    let Ok(url) = RepositoryUrl::parse(&obj.spec.url) else {
        return false;
    };
    let same_registry = push
        .registry
        .as_deref()
        .is_some_and(|r| r.eq_ignore_ascii_case(&url.registry));
    if !same_registry || url.repository != push.repository {
        return false;
    }
    let Some(tag) = push.tag.as_deref() else {
        return false;
    };
    let current = current_digest(obj);
    if is_signature_tag_of(tag, current) {
        // A signature pushed for the digest the object holds can change its verification.
        return obj.spec.verify.is_some();
    }
    let reference = obj.spec.reference.as_ref();
    if reference.is_some_and(|r| r.digest.as_deref().is_some_and(|d| !d.is_empty())) {
        return false;
    }
    let followed = match reference
        .and_then(|r| r.semver.as_deref())
        .filter(|s| !s.is_empty())
    {
        Some(range) => {
            // Most tags are no version at all: that is cheaper to see than a range and a filter.
            let filter = reference.and_then(|r| r.semver_filter.as_deref());
            parse_version(tag).is_some()
                && select_tag(&[tag.to_string()], range, filter, false).is_ok()
        }
        None => {
            let wanted = reference
                .and_then(|r| r.tag.as_deref())
                .filter(|t| !t.is_empty())
                .unwrap_or(DEFAULT_TAG);
            tag == wanted
        }
    };
    // The payload's digest only ever saves a reconcile: equal to what is stored, nothing moved.
    followed && (push.digest.is_none() || push.digest.as_deref() != current)
}

/// The manifest digest of the object's artifact: its revision is `<tag>@sha256:<hex>`.
fn current_digest(obj: &OCIRepository) -> Option<&str> {
    let revision = &obj.status.as_ref()?.artifact.as_ref()?.revision;
    revision
        .rsplit_once('@')
        .map(|(_, d)| d)
        .or(Some(revision.as_str()))
}

/// cosign's tag for the signatures of a digest: `sha256-<hex>.sig`.
fn is_signature_tag_of(tag: &str, digest: Option<&str>) -> bool {
    let Some(hex) = tag
        .strip_prefix("sha256-")
        .and_then(|t| t.strip_suffix(".sig"))
    else {
        return false;
    };
    digest.and_then(|d| d.strip_prefix("sha256:")) == Some(hex)
}

/// Whether `bucket` reads the object `change` names.
fn holds(bucket: &Bucket, change: &ObjectChange) -> bool {
    if bucket.spec.suspend
        || bucket.meta().deletion_timestamp.is_some()
        || bucket.spec.bucket_name != change.bucket
    {
        return false;
    }
    let prefix = bucket.spec.prefix.as_deref().unwrap_or_default();
    change.key.starts_with(prefix) && same_service(bucket, &change.endpoint)
}

fn same_service(bucket: &Bucket, endpoint: &Endpoint) -> bool {
    let host = endpoint_host(&bucket.spec.endpoint);
    match endpoint {
        Endpoint::Unknown => true,
        Endpoint::Host(h) => host.eq_ignore_ascii_case(h),
        Endpoint::Aws => {
            bucket.spec.provider == BucketProvider::Aws || host.ends_with(".amazonaws.com")
        }
        Endpoint::Gcs => {
            bucket.spec.provider == BucketProvider::Gcp || host == "storage.googleapis.com"
        }
    }
}

/// `host[:port]` of a Bucket endpoint, which may be written with a scheme and a path.
pub fn endpoint_host(endpoint: &str) -> String {
    let rest = endpoint
        .strip_prefix("https://")
        .or_else(|| endpoint.strip_prefix("http://"))
        .unwrap_or(endpoint);
    rest.split('/')
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase()
}

/// The object's name for logs and the sender's answer.
pub fn describe<K: kube::Resource<DynamicType = ()>>(obj: &ObjectRef<K>) -> String {
    format!(
        "{}/{}",
        obj.namespace.as_deref().unwrap_or_default(),
        obj.name
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn oci(url: &str, reference: serde_json::Value, revision: Option<&str>) -> OCIRepository {
        let mut value = serde_json::json!({
            "apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "OCIRepository",
            "metadata": {"name": "app", "namespace": "team"},
            "spec": {"url": url, "interval": "1h", "ref": reference},
        });
        if let Some(r) = revision {
            value["status"] = serde_json::json!({"artifact": {
                "path": "p", "url": "u", "revision": r, "digest": "sha256:00",
                "lastUpdateTime": "2026-01-01T00:00:00Z"}});
        }
        serde_json::from_value(value).unwrap()
    }

    fn push(
        registry: &str,
        repository: &str,
        tag: Option<&str>,
        digest: Option<&str>,
    ) -> ImagePush {
        ImagePush {
            registry: Some(registry.into()),
            repository: repository.into(),
            tag: tag.map(Into::into),
            digest: digest.map(Into::into),
        }
    }

    #[test]
    fn a_push_to_the_followed_tag_of_the_repository_matches() {
        let obj = oci(
            "oci://reg.io:5000/team/app",
            serde_json::json!({"tag": "stable"}),
            None,
        );
        assert!(follows(
            &obj,
            &push("reg.io:5000", "team/app", Some("stable"), None)
        ));
        assert!(!follows(
            &obj,
            &push("reg.io:5000", "team/app", Some("dev"), None)
        ));
        assert!(!follows(
            &obj,
            &push("reg.io:5000", "team/other", Some("stable"), None)
        ));
        assert!(!follows(
            &obj,
            &push("other.io", "team/app", Some("stable"), None)
        ));
        assert!(!follows(
            &obj,
            &push("reg.io:5000", "team/app", None, Some("sha256:1"))
        ));
        let latest = oci("oci://reg.io/team/app", serde_json::json!(null), None);
        assert!(follows(
            &latest,
            &push("reg.io", "team/app", Some("latest"), None)
        ));
    }

    #[test]
    fn semver_ranges_match_the_tags_they_admit_and_digests_nothing() {
        let obj = oci(
            "oci://reg.io/app",
            serde_json::json!({"semver": ">=1.2.0 <2.0.0"}),
            None,
        );
        assert!(follows(&obj, &push("reg.io", "app", Some("1.4.0"), None)));
        assert!(!follows(&obj, &push("reg.io", "app", Some("2.0.0"), None)));
        assert!(!follows(&obj, &push("reg.io", "app", Some("latest"), None)));
        let pinned = oci(
            "oci://reg.io/app",
            serde_json::json!({"digest": "sha256:ab"}),
            None,
        );
        assert!(!follows(
            &pinned,
            &push("reg.io", "app", Some("latest"), None)
        ));
    }

    #[test]
    fn the_stored_digest_saves_a_reconcile_and_signatures_of_it_need_one() {
        let obj = oci(
            "oci://reg.io/app",
            serde_json::json!(null),
            Some("latest@sha256:aa"),
        );
        assert!(!follows(
            &obj,
            &push("reg.io", "app", Some("latest"), Some("sha256:aa"))
        ));
        assert!(follows(
            &obj,
            &push("reg.io", "app", Some("latest"), Some("sha256:bb"))
        ));
        assert!(!follows(
            &obj,
            &push("reg.io", "app", Some("sha256-aa.sig"), None)
        ));
        let mut verified = obj.clone();
        verified.spec.verify =
            serde_json::from_value(serde_json::json!({"provider": "cosign"})).unwrap();
        assert!(follows(
            &verified,
            &push("reg.io", "app", Some("sha256-aa.sig"), None)
        ));
        assert!(!follows(
            &verified,
            &push("reg.io", "app", Some("sha256-bb.sig"), None)
        ));
    }

    fn bucket(endpoint: &str, provider: &str, prefix: Option<&str>) -> Bucket {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "Bucket",
            "metadata": {"name": "b", "namespace": "team"},
            "spec": {"bucketName": "manifests", "endpoint": endpoint, "provider": provider,
                     "interval": "1h", "prefix": prefix},
        }))
        .unwrap()
    }

    fn change(endpoint: Endpoint, bucket: &str, key: &str) -> ObjectChange {
        ObjectChange {
            endpoint,
            bucket: bucket.into(),
            key: key.into(),
        }
    }

    #[test]
    fn a_change_matches_buckets_of_that_name_prefix_and_service() {
        let minio = bucket("http://minio.storage:9000", "generic", Some("apps/"));
        assert!(holds(
            &minio,
            &change(Endpoint::Unknown, "manifests", "apps/a.yaml")
        ));
        assert!(!holds(
            &minio,
            &change(Endpoint::Unknown, "manifests", "infra/a.yaml")
        ));
        assert!(!holds(
            &minio,
            &change(Endpoint::Unknown, "other", "apps/a.yaml")
        ));
        assert!(holds(
            &minio,
            &change(
                Endpoint::Host("minio.storage:9000".into()),
                "manifests",
                "apps/a"
            )
        ));
        assert!(!holds(
            &minio,
            &change(
                Endpoint::Host("acct.blob.core.windows.net".into()),
                "manifests",
                "apps/a"
            )
        ));
        assert!(!holds(
            &minio,
            &change(Endpoint::Aws, "manifests", "apps/a")
        ));
        let s3 = bucket("s3.us-east-1.amazonaws.com", "aws", None);
        assert!(holds(&s3, &change(Endpoint::Aws, "manifests", "x")));
        assert!(!holds(&s3, &change(Endpoint::Gcs, "manifests", "x")));
        let gcs = bucket("storage.googleapis.com", "gcp", None);
        assert!(holds(&gcs, &change(Endpoint::Gcs, "manifests", "x")));
    }
}
