//! `status.history` as Flux keeps it: the last five distinct (build digest, outcome) pairs,
//! newest first, each with when it was first and last seen and how often.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use sha2::{Digest, Sha256};

use crate::api::kustomization::Snapshot;

const MAX_SNAPSHOTS: usize = 5;

/// `sha256:<hex>` of the built objects as multi-document YAML.
pub fn build_digest(objects: &[serde_json::Value]) -> String {
    let mut hasher = Sha256::new();
    for object in objects {
        hasher.update(b"---\n");
        hasher.update(
            serde_saphyr::to_string(object)
                .unwrap_or_default()
                .as_bytes(),
        );
    }
    format!("sha256:{}", hex::encode(hasher.finalize()))
}

/// Records one reconcile: the newest entry is updated when digest and outcome repeat, else a
/// new entry goes in front (and the oldest beyond five drops out).
pub fn upsert(
    history: &mut Vec<Snapshot>,
    digest: &str,
    now: jiff::Timestamp,
    took: Duration,
    status: &str,
    metadata: BTreeMap<String, String>,
) {
    let took = format!("{:.3}s", took.as_secs_f64());
    let metadata = (!metadata.is_empty()).then_some(metadata);
    if let Some(existing) = history
        .iter_mut()
        .find(|s| s.digest == digest && s.last_reconciled_status == status)
    {
        existing.last_reconciled = Time(now);
        existing.last_reconciled_duration = took;
        existing.total_reconciliations += 1;
        existing.metadata = metadata;
    } else {
        history.push(Snapshot {
            digest: digest.to_string(),
            first_reconciled: Time(now),
            last_reconciled: Time(now),
            last_reconciled_duration: took,
            last_reconciled_status: status.to_string(),
            metadata,
            total_reconciliations: 1,
        });
    }
    history.sort_by_key(|s| std::cmp::Reverse(s.last_reconciled.0));
    history.truncate(MAX_SNAPSHOTS);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: i64) -> jiff::Timestamp {
        jiff::Timestamp::from_second(s).unwrap()
    }

    #[test]
    fn repeats_are_counted_and_new_outcomes_go_first() {
        let mut h = Vec::new();
        upsert(
            &mut h,
            "sha256:a",
            at(1),
            Duration::from_millis(1500),
            "ReconciliationSucceeded",
            BTreeMap::new(),
        );
        upsert(
            &mut h,
            "sha256:a",
            at(2),
            Duration::from_millis(500),
            "ReconciliationSucceeded",
            BTreeMap::new(),
        );
        assert_eq!(h.len(), 1);
        assert_eq!(h[0].total_reconciliations, 2);
        assert_eq!(h[0].first_reconciled.0, at(1));
        assert_eq!(h[0].last_reconciled_duration, "0.500s");
        upsert(
            &mut h,
            "sha256:a",
            at(3),
            Duration::ZERO,
            "HealthCheckFailed",
            BTreeMap::new(),
        );
        upsert(
            &mut h,
            "sha256:b",
            at(4),
            Duration::ZERO,
            "ReconciliationSucceeded",
            BTreeMap::new(),
        );
        let order: Vec<(&str, &str)> = h
            .iter()
            .map(|s| (s.digest.as_str(), s.last_reconciled_status.as_str()))
            .collect();
        assert_eq!(
            order,
            [
                ("sha256:b", "ReconciliationSucceeded"),
                ("sha256:a", "HealthCheckFailed"),
                ("sha256:a", "ReconciliationSucceeded")
            ]
        );
        for i in 5..12 {
            upsert(
                &mut h,
                &format!("sha256:{i}"),
                at(i),
                Duration::ZERO,
                "ReconciliationSucceeded",
                BTreeMap::new(),
            );
        }
        assert_eq!(h.len(), 5);
        assert_eq!(h[0].digest, "sha256:11");
    }

    #[test]
    fn build_digests_change_with_content() {
        let a = build_digest(&[serde_json::json!({"kind": "ConfigMap", "data": {"k": "1"}})]);
        let b = build_digest(&[serde_json::json!({"kind": "ConfigMap", "data": {"k": "2"}})]);
        assert!(a.starts_with("sha256:") && a != b);
    }
}
