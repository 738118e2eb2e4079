//! An event body from whoever knows a sender's token (or runs the registry it follows), read
//! as every sender format, then matched against an OCIRepository and a Bucket: no panic, no
//! unbounded work, whatever the bytes.
#![no_main]

use std::sync::LazyLock;

use driftless::api::{Bucket, OCIRepository};
use driftless::source::receiver::formats::{Format, Notice, parse};
use driftless::source::receiver::matching;
use kube::runtime::reflector::{Store, store::Writer};
use kube::runtime::watcher::Event;
use libfuzzer_sys::fuzz_target;

/// Objects the events are matched against: a tag, a semver range and a verified object on one
/// repository; a Bucket with a prefix.
static WATCHED: LazyLock<(Store<OCIRepository>, Store<Bucket>)> = LazyLock::new(|| {
    let mut oci = Writer::default();
    for (name, reference) in [
        ("tag", serde_json::json!({"tag": "latest"})),
        ("range", serde_json::json!({"semver": ">=1.0.0 <2.0.0", "semverFilter": "^1\\."})),
    ] {
        let obj: OCIRepository = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": "ns"},
            "spec": {"url": "oci://registry.example.com/apps/podinfo", "interval": "1h", "ref": reference,
                     "verify": {"provider": "cosign"}},
            "status": {"artifact": {"path": "p", "url": "u", "digest": "sha256:00",
                "revision": "latest@sha256:2a55910c504ae3a572ab2d316d686cb947acecd74c1c65ef4b9eedac33377f9f",
                "lastUpdateTime": "2026-01-01T00:00:00Z"}},
        }))
        .expect("fixture OCIRepository");
        oci.apply_watcher_event(&Event::Apply(obj));
    }
    let mut buckets = Writer::default();
    let bucket: Bucket = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "b", "namespace": "ns"},
        "spec": {"bucketName": "artifacts", "endpoint": "minio:9000", "interval": "1h", "prefix": "podinfo/"},
    }))
    .expect("fixture Bucket");
    buckets.apply_watcher_event(&Event::Apply(bucket));
    (oci.as_reader(), buckets.as_reader())
});

const FORMATS: [Format; 9] = [
    Format::Distribution,
    Format::Harbor,
    Format::Github,
    Format::Dockerhub,
    Format::Eventbridge,
    Format::Eventgrid,
    Format::Pubsub,
    Format::S3,
    Format::Seaweedfs,
];

fuzz_target!(|data: &[u8]| {
    let mut headers = http::HeaderMap::new();
    headers.insert("x-github-event", http::HeaderValue::from_static("package"));
    for format in FORMATS {
        let Ok(delivery) = parse(format, &headers, data) else {
            continue;
        };
        let (oci, buckets) = &*WATCHED;
        for notice in &delivery.notices {
            match notice {
                Notice::Image(push) => drop(matching::oci_repositories(oci, push)),
                Notice::Object(change) => drop(matching::buckets(buckets, change)),
            }
        }
    }
});
