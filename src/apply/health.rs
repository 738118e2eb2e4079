//! Object health with kstatus's rules as Flux applies them: the generic rules
//! (observedGeneration, Reconciling/Stalled, Ready) and the core kinds' own.

use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    Current,
    InProgress,
    Failed,
    Terminating,
    NotFound,
    /// A custom rule could not be evaluated (kstatus's `Unknown`).
    Unknown,
}

impl Health {
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Current => "Current",
            Health::InProgress => "InProgress",
            Health::Failed => "Failed",
            Health::Terminating => "Terminating",
            Health::NotFound => "NotFound",
            Health::Unknown => "Unknown",
        }
    }
}

/// The health of a live object (`None`: it does not exist).
pub fn status(object: Option<&Value>) -> Health {
    let Some(o) = object else {
        return Health::NotFound;
    };
    if o.pointer("/metadata/deletionTimestamp")
        .is_some_and(|t| !t.is_null())
    {
        return Health::Terminating;
    }
    let generation = o.pointer("/metadata/generation").and_then(Value::as_i64);
    let observed = o
        .pointer("/status/observedGeneration")
        .and_then(Value::as_i64);
    if let (Some(g), Some(seen)) = (generation, observed)
        && g != seen
    {
        return Health::InProgress;
    }
    if condition(o, "Stalled") == Some("True") {
        return Health::Failed;
    }
    if condition(o, "Reconciling") == Some("True") {
        return Health::InProgress;
    }
    let group = o
        .get("apiVersion")
        .and_then(Value::as_str)
        .and_then(|a| a.rsplit_once('/').map(|(g, _)| g))
        .unwrap_or("");
    let kind = o.get("kind").and_then(Value::as_str).unwrap_or("");
    match (group, kind) {
        ("apps", "Deployment") => deployment(o),
        ("apps", "StatefulSet") => statefulset(o),
        ("apps", "DaemonSet") => daemonset(o),
        ("apps", "ReplicaSet") => replicaset(o),
        ("batch", "Job") => job(o),
        ("", "Pod") => pod(o),
        ("", "PersistentVolumeClaim") => match o.pointer("/status/phase").and_then(Value::as_str) {
            Some("Bound") => Health::Current,
            _ => Health::InProgress,
        },
        ("", "Service") => service(o),
        ("apiextensions.k8s.io", "CustomResourceDefinition") => crd(o),
        ("", "Namespace") => match o.pointer("/status/phase").and_then(Value::as_str) {
            Some("Terminating") => Health::Terminating,
            _ => Health::Current,
        },
        _ => match condition(o, "Ready") {
            Some("True") => Health::Current,
            Some(_) => Health::InProgress,
            None => Health::Current,
        },
    }
}

fn condition<'a>(o: &'a Value, type_: &str) -> Option<&'a str> {
    o.pointer("/status/conditions")?
        .as_array()?
        .iter()
        .find(|c| c.get("type").and_then(Value::as_str) == Some(type_))?
        .get("status")?
        .as_str()
}

fn condition_reason<'a>(o: &'a Value, type_: &str) -> Option<&'a str> {
    o.pointer("/status/conditions")?
        .as_array()?
        .iter()
        .find(|c| c.get("type").and_then(Value::as_str) == Some(type_))?
        .get("reason")?
        .as_str()
}

fn int(o: &Value, pointer: &str) -> i64 {
    o.pointer(pointer).and_then(Value::as_i64).unwrap_or(0)
}

fn spec_replicas(o: &Value) -> i64 {
    o.pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .unwrap_or(1)
}

fn deployment(o: &Value) -> Health {
    if condition_reason(o, "Progressing") == Some("ProgressDeadlineExceeded") {
        return Health::Failed;
    }
    let want = spec_replicas(o);
    let (replicas, updated, ready, available) = (
        int(o, "/status/replicas"),
        int(o, "/status/updatedReplicas"),
        int(o, "/status/readyReplicas"),
        int(o, "/status/availableReplicas"),
    );
    let progressed =
        condition_reason(o, "Progressing").is_none_or(|r| r == "NewReplicaSetAvailable");
    if updated >= want
        && replicas == updated
        && ready == want
        && available >= updated
        && progressed
        && condition(o, "Available") != Some("False")
    {
        Health::Current
    } else {
        Health::InProgress
    }
}

fn statefulset(o: &Value) -> Health {
    if o.pointer("/spec/updateStrategy/type")
        .and_then(Value::as_str)
        == Some("OnDelete")
    {
        return Health::Current;
    }
    let want = spec_replicas(o);
    let done = int(o, "/status/replicas") == want
        && int(o, "/status/readyReplicas") == want
        && int(o, "/status/currentReplicas") == want
        && o.pointer("/status/currentRevision") == o.pointer("/status/updateRevision");
    if done {
        Health::Current
    } else {
        Health::InProgress
    }
}

fn daemonset(o: &Value) -> Health {
    let desired = int(o, "/status/desiredNumberScheduled");
    let done = o.pointer("/status/observedGeneration").is_some()
        && int(o, "/status/currentNumberScheduled") == desired
        && int(o, "/status/updatedNumberScheduled") == desired
        && int(o, "/status/numberAvailable") == desired
        && int(o, "/status/numberReady") == desired;
    if done {
        Health::Current
    } else {
        Health::InProgress
    }
}

fn replicaset(o: &Value) -> Health {
    if condition(o, "ReplicaFailure") == Some("True") {
        return Health::InProgress;
    }
    let want = spec_replicas(o);
    let done = int(o, "/status/fullyLabeledReplicas") == want
        && int(o, "/status/availableReplicas") == want
        && int(o, "/status/readyReplicas") == want;
    if done {
        Health::Current
    } else {
        Health::InProgress
    }
}

fn job(o: &Value) -> Health {
    if condition(o, "Failed") == Some("True") {
        return Health::Failed;
    }
    if condition(o, "Complete") == Some("True")
        || o.pointer("/spec/suspend") == Some(&Value::Bool(true))
    {
        return Health::Current;
    }
    Health::InProgress
}

fn pod(o: &Value) -> Health {
    match o.pointer("/status/phase").and_then(Value::as_str) {
        Some("Succeeded" | "Failed") => Health::Current,
        Some("Running") if condition(o, "Ready") == Some("True") => Health::Current,
        _ => {
            let crashing = o
                .pointer("/status/containerStatuses")
                .and_then(Value::as_array)
                .is_some_and(|cs| {
                    cs.iter().any(|c| {
                        c.pointer("/state/waiting/reason").and_then(Value::as_str)
                            == Some("CrashLoopBackOff")
                    })
                });
            if crashing {
                Health::Failed
            } else {
                Health::InProgress
            }
        }
    }
}

fn service(o: &Value) -> Health {
    let lb = o.pointer("/spec/type").and_then(Value::as_str) == Some("LoadBalancer");
    let has_ip = o
        .pointer("/spec/clusterIP")
        .and_then(Value::as_str)
        .is_some_and(|ip| !ip.is_empty());
    if lb && !has_ip {
        Health::InProgress
    } else {
        Health::Current
    }
}

fn crd(o: &Value) -> Health {
    if condition(o, "NamesAccepted") == Some("False") {
        return Health::Failed;
    }
    match condition(o, "Established") {
        Some("True") => Health::Current,
        Some("False") if condition_reason(o, "Established") != Some("Installing") => Health::Failed,
        _ => Health::InProgress,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn generic_rules_come_first() {
        assert_eq!(status(None), Health::NotFound);
        let stale = json!({"apiVersion": "v1", "kind": "X", "metadata": {"generation": 2}, "status": {"observedGeneration": 1}});
        assert_eq!(status(Some(&stale)), Health::InProgress);
        let stalled = json!({"apiVersion": "example.com/v1", "kind": "X", "metadata": {}, "status": {"conditions": [{"type": "Stalled", "status": "True"}]}});
        assert_eq!(status(Some(&stalled)), Health::Failed);
        let ready = json!({"apiVersion": "example.com/v1", "kind": "X", "metadata": {}, "status": {"conditions": [{"type": "Ready", "status": "True"}]}});
        assert_eq!(status(Some(&ready)), Health::Current);
        let plain = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {}});
        assert_eq!(status(Some(&plain)), Health::Current);
        let deleting = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"deletionTimestamp": "2026-01-01T00:00:00Z"}});
        assert_eq!(status(Some(&deleting)), Health::Terminating);
    }

    #[test]
    fn deployments_need_their_replicas_ready() {
        let mut d = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"generation": 1},
            "spec": {"replicas": 2}, "status": {"observedGeneration": 1, "replicas": 2, "updatedReplicas": 2, "readyReplicas": 1, "availableReplicas": 1}});
        assert_eq!(status(Some(&d)), Health::InProgress);
        d["status"]["readyReplicas"] = json!(2);
        d["status"]["availableReplicas"] = json!(2);
        d["status"]["conditions"] = json!([{"type": "Available", "status": "True"}, {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"}]);
        assert_eq!(status(Some(&d)), Health::Current);
        d["status"]["conditions"] = json!([{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}]);
        assert_eq!(status(Some(&d)), Health::Failed);
    }

    #[test]
    fn jobs_crds_and_services() {
        let job = json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {}, "status": {"conditions": [{"type": "Failed", "status": "True"}]}});
        assert_eq!(status(Some(&job)), Health::Failed);
        let running = json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {}, "status": {"active": 1}});
        assert_eq!(status(Some(&running)), Health::InProgress);
        let crd = json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition", "metadata": {}, "status": {"conditions": [{"type": "Established", "status": "True"}]}});
        assert_eq!(status(Some(&crd)), Health::Current);
        let lb = json!({"apiVersion": "v1", "kind": "Service", "metadata": {}, "spec": {"type": "LoadBalancer"}});
        assert_eq!(status(Some(&lb)), Health::InProgress);
    }
}
