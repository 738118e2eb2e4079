//! `spec.ignore` (Flux 2.9, kustomize-controller#1627): fields, named by RFC 6901 JSON pointers,
//! that drift detection does not compare and the apply of an existing object leaves to whoever
//! changed them — an HPA's `replicas`, an annotation another tool writes.
//!
//! Flux's rules, followed here: a rule's target is matched against the dry-run result; objects
//! that do not exist yet are created whole; a difference only in ignored fields is no drift (no
//! write); when something else drifted, each ignored field whose live value differs from the
//! dry run is either left out of the payload, when another server-side-apply manager owns it
//! (that manager keeps it), or sent with its live value, when the controller is its only
//! applier (so the value stays and the controller keeps ownership instead of deleting it).

use serde_json::Value;

use super::selector::ObjectSelector;
use crate::api::kustomization::IgnoreRule;

/// The compiled `spec.ignore` of one Kustomization.
#[derive(Debug, Default)]
pub struct DriftIgnore {
    rules: Vec<(Option<ObjectSelector>, Vec<Pointer>)>,
}

/// A parsed JSON pointer: its text (for messages) and its unescaped reference tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pointer {
    text: String,
    tokens: Vec<String>,
}

impl Pointer {
    pub fn parse(text: &str) -> Result<Self, String> {
        let Some(rest) = text.strip_prefix('/') else {
            return Err(format!(
                "path '{text}' is not a JSON pointer: it must start with '/'"
            ));
        };
        let tokens = rest
            .split('/')
            .map(|t| t.replace("~1", "/").replace("~0", "~"))
            .collect();
        Ok(Pointer {
            text: text.to_string(),
            tokens,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    pub fn get<'v>(&self, mut value: &'v Value) -> Option<&'v Value> {
        for token in &self.tokens {
            value = child(value, token)?;
        }
        Some(value)
    }

    /// Removes the field; a missing one is no error (as Flux's `AllowMissingPathOnRemove`).
    pub fn remove(&self, value: &mut Value) {
        let Some((last, parents)) = self.tokens.split_last() else {
            return;
        };
        let mut node = value;
        for token in parents {
            match child_mut(node, token) {
                Some(next) => node = next,
                None => return,
            }
        }
        match node {
            Value::Object(map) => {
                map.remove(last);
            }
            Value::Array(items) => {
                if let Some(i) = index(last).filter(|i| *i < items.len()) {
                    items.remove(i);
                }
            }
            _ => {}
        }
    }

    /// Replaces a field that exists; `false` when it does not.
    pub fn replace(&self, value: &mut Value, with: Value) -> bool {
        let mut node = value;
        for token in &self.tokens {
            match child_mut(node, token) {
                Some(next) => node = next,
                None => return false,
            }
        }
        *node = with;
        true
    }
}

fn index(token: &str) -> Option<usize> {
    match token.bytes().all(|b| b.is_ascii_digit()) {
        true => token.parse().ok(),
        false => None,
    }
}

fn child<'v>(value: &'v Value, token: &str) -> Option<&'v Value> {
    match value {
        Value::Object(map) => map.get(token),
        Value::Array(items) => items.get(index(token)?),
        _ => None,
    }
}

fn child_mut<'v>(value: &'v mut Value, token: &str) -> Option<&'v mut Value> {
    match value {
        Value::Object(map) => map.get_mut(token),
        Value::Array(items) => items.get_mut(index(token)?),
        _ => None,
    }
}

impl DriftIgnore {
    /// Compiles the rules; the error names the rule and what is wrong with it.
    pub fn compile(rules: &[IgnoreRule]) -> Result<Self, String> {
        let mut compiled = Vec::with_capacity(rules.len());
        for (i, rule) in rules.iter().enumerate() {
            let target = rule
                .target
                .as_ref()
                .map(ObjectSelector::compile)
                .transpose()
                .map_err(|e| format!("spec.ignore[{i}].target: {e}"))?;
            let paths = rule
                .paths
                .iter()
                .map(|p| Pointer::parse(p))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("spec.ignore[{i}].paths: {e}"))?;
            compiled.push((target, paths));
        }
        Ok(DriftIgnore { rules: compiled })
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The ignored paths of the rules whose target selects `dry_run`.
    pub fn paths_for(&self, dry_run: &Value) -> Vec<&Pointer> {
        self.rules
            .iter()
            .filter(|(target, _)| target.as_ref().is_none_or(|t| t.matches(dry_run)))
            .flat_map(|(_, paths)| paths)
            .collect()
    }
}

/// `object` without the ignored fields, for drift detection.
pub fn without(object: &Value, paths: &[&Pointer]) -> Value {
    let mut copy = object.clone();
    for p in paths {
        p.remove(&mut copy);
    }
    copy
}

/// The ignored paths whose live value differs from the dry run's (or exists on one side only).
pub fn drifted<'p>(live: &Value, dry_run: &Value, paths: &[&'p Pointer]) -> Vec<&'p Pointer> {
    paths
        .iter()
        .copied()
        .filter(|p| p.get(live) != p.get(dry_run))
        .collect()
}

/// Rewrites the apply payload of an existing object for its drifted ignored paths (see the
/// module comment): left out where another applier owns the field, the live value otherwise.
pub fn shape_payload(payload: &mut Value, live: &Value, drifted: &[&Pointer], manager: &str) {
    for p in drifted {
        if owned_by_another_applier(live, p, manager) {
            p.remove(payload);
            continue;
        }
        match p.get(live) {
            Some(value) => {
                p.replace(payload, value.clone());
            }
            // Gone from the live object: sending ours would put it back.
            None => p.remove(payload),
        }
    }
}

/// Whether a server-side-apply manager other than ours holds the field in `managedFields`.
/// Update entries (kubectl edit, `/scale`, client-go writes) do not count: those values are
/// adopted instead.
pub fn owned_by_another_applier(live: &Value, path: &Pointer, manager: &str) -> bool {
    let entries = live
        .pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .into_iter()
        .flatten();
    entries
        .filter(|e| {
            let text = |k: &str| e.get(k).and_then(Value::as_str).unwrap_or("");
            text("operation") == "Apply"
                && text("manager") != manager
                && text("subresource").is_empty()
        })
        .filter_map(|e| e.get("fieldsV1"))
        .any(|fields| fields_hold(fields, Some(live), &path.tokens))
}

/// Walks a `fieldsV1` tree along the pointer. Object members are `f:<name>`; list items are
/// `k:{...}` (keyed by their merge keys) or `v:<value>` (sets), found through the live item at
/// the pointer's index. An item that cannot be resolved is not held.
fn fields_hold(fields: &Value, live: Option<&Value>, tokens: &[String]) -> bool {
    let Some((token, rest)) = tokens.split_first() else {
        return true;
    };
    let Some(members) = fields.as_object() else {
        return false;
    };
    match live {
        Some(Value::Array(items)) => {
            let Some(item) = index(token).and_then(|i| items.get(i)) else {
                return false;
            };
            members
                .iter()
                .find(|(key, _)| list_key_selects(key, item))
                .is_some_and(|(_, node)| fields_hold(node, Some(item), rest))
        }
        _ => members
            .get(&format!("f:{token}"))
            .is_some_and(|node| fields_hold(node, live.and_then(|l| child(l, token)), rest)),
    }
}

fn list_key_selects(key: &str, item: &Value) -> bool {
    if let Some(keys) = key.strip_prefix("k:") {
        let Ok(Value::Object(keys)) = serde_json::from_str::<Value>(keys) else {
            return false;
        };
        return !keys.is_empty() && keys.iter().all(|(k, v)| item.get(k) == Some(v));
    }
    if let Some(value) = key.strip_prefix("v:") {
        return serde_json::from_str::<Value>(value).is_ok_and(|v| &v == item);
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rules(v: Value) -> DriftIgnore {
        let rules: Vec<IgnoreRule> = serde_json::from_value(v).unwrap();
        DriftIgnore::compile(&rules).unwrap()
    }

    #[test]
    fn pointers_unescape_and_walk_objects_and_arrays() {
        let doc = json!({"metadata": {"annotations": {"a/b": "1", "c~d": "2"}},
                         "spec": {"containers": [{"name": "x", "image": "i"}]}});
        let p = |t: &str| Pointer::parse(t).unwrap();
        assert_eq!(p("/metadata/annotations/a~1b").get(&doc), Some(&json!("1")));
        assert_eq!(p("/metadata/annotations/c~0d").get(&doc), Some(&json!("2")));
        assert_eq!(p("/spec/containers/0/image").get(&doc), Some(&json!("i")));
        assert_eq!(p("/spec/containers/1/image").get(&doc), None);
        assert_eq!(p("/spec/containers/+0").get(&doc), None);
        let mut d = doc.clone();
        p("/spec/containers/0/image").remove(&mut d);
        p("/spec/missing/deep").remove(&mut d);
        assert_eq!(d["spec"]["containers"][0], json!({"name": "x"}));
        assert!(p("/spec/containers/0/name").replace(&mut d, json!("y")));
        assert!(!p("/spec/nothing").replace(&mut d, json!(1)));
        assert_eq!(d["spec"]["containers"][0]["name"], json!("y"));
        assert!(Pointer::parse("spec/replicas").is_err());
        assert!(Pointer::parse("").is_err());
    }

    #[test]
    fn rules_select_objects_by_target() {
        let r = rules(json!([
            {"paths": ["/spec/replicas"], "target": {"kind": "Deployment"}},
            {"paths": ["/data/a"]},
        ]));
        let deploy =
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"}});
        let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}});
        let texts = |o: &Value| {
            r.paths_for(o)
                .iter()
                .map(|p| p.as_str().to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(texts(&deploy), ["/spec/replicas", "/data/a"]);
        assert_eq!(texts(&cm), ["/data/a"]);
    }

    #[test]
    fn bad_rules_name_the_rule() {
        let bad: Vec<IgnoreRule> = serde_json::from_value(json!([
            {"paths": ["/ok"]},
            {"paths": ["/ok", "nope"]},
        ]))
        .unwrap();
        let e = DriftIgnore::compile(&bad).unwrap_err();
        assert!(e.starts_with("spec.ignore[1].paths: path 'nope'"), "{e}");
        let bad: Vec<IgnoreRule> =
            serde_json::from_value(json!([{"paths": ["/a"], "target": {"kind": "("}}])).unwrap();
        let e = DriftIgnore::compile(&bad).unwrap_err();
        assert!(
            e.starts_with("spec.ignore[0].target: invalid kind regex"),
            "{e}"
        );
    }

    #[test]
    fn drift_in_ignored_fields_only_is_no_drift() {
        let live = json!({"spec": {"replicas": 5, "paused": false}});
        let dry = json!({"spec": {"replicas": 1, "paused": false}});
        let p = Pointer::parse("/spec/replicas").unwrap();
        assert_eq!(without(&live, &[&p]), without(&dry, &[&p]));
        assert_eq!(drifted(&live, &dry, &[&p]), [&p]);
        assert!(drifted(&live, &live, &[&p]).is_empty());
    }

    fn managed(entries: Value) -> Value {
        json!({
            "metadata": {"managedFields": entries},
            "spec": {"replicas": 5, "template": {"spec": {"containers": [
                {"name": "app", "resources": {"limits": {"cpu": "2"}}},
                {"name": "sidecar", "resources": {}},
            ]}}},
            "data": {"a": "theirs"},
        })
    }

    #[test]
    fn another_appliers_fields_are_left_out_and_update_fields_adopted() {
        let live = managed(json!([
            {"manager": "kustomize-controller", "operation": "Apply",
             "fieldsV1": {"f:spec": {"f:replicas": {}}, "f:data": {"f:a": {}}}},
            {"manager": "vpa", "operation": "Apply", "fieldsV1": {"f:spec": {"f:template": {"f:spec": {"f:containers": {
                "k:{\"name\":\"app\"}": {".": {}, "f:resources": {"f:limits": {"f:cpu": {}}}}}}}}}},
            {"manager": "other-tool", "operation": "Apply", "fieldsV1": {"f:data": {"f:a": {}}}},
            {"manager": "kube-controller-manager", "operation": "Update", "subresource": "scale",
             "fieldsV1": {"f:spec": {"f:replicas": {}}}},
        ]));
        let p = |t: &str| Pointer::parse(t).unwrap();
        let me = "kustomize-controller";
        assert!(owned_by_another_applier(
            &live,
            &p("/spec/template/spec/containers/0/resources"),
            me
        ));
        assert!(!owned_by_another_applier(
            &live,
            &p("/spec/template/spec/containers/1/resources"),
            me
        ));
        assert!(!owned_by_another_applier(
            &live,
            &p("/spec/template/spec/containers/7/resources"),
            me
        ));
        assert!(owned_by_another_applier(&live, &p("/data/a"), me));
        assert!(
            !owned_by_another_applier(&live, &p("/spec/replicas"), me),
            "the /scale write is an Update"
        );
        assert!(
            owned_by_another_applier(&live, &p("/data/a"), "other-tool"),
            "our Apply entry counts for them"
        );

        let mut payload = json!({"spec": {"replicas": 1}, "data": {"a": "ours", "b": "kept"}});
        shape_payload(
            &mut payload,
            &live,
            &[&p("/spec/replicas"), &p("/data/a"), &p("/data/b")],
            me,
        );
        assert_eq!(
            payload,
            json!({"spec": {"replicas": 5}, "data": {}}),
            "replicas adopted from live, the other applier's key left out, a key gone from live not sent back"
        );
    }

    #[test]
    fn set_list_items_resolve_by_value() {
        let live = json!({
            "metadata": {"managedFields": [{"manager": "x", "operation": "Apply",
                "fieldsV1": {"f:spec": {"f:finalizers": {"v:\"a\"": {}}}}}]},
            "spec": {"finalizers": ["b", "a"]},
        });
        let p = |t: &str| Pointer::parse(t).unwrap();
        assert!(owned_by_another_applier(
            &live,
            &p("/spec/finalizers/1"),
            "me"
        ));
        assert!(!owned_by_another_applier(
            &live,
            &p("/spec/finalizers/0"),
            "me"
        ));
    }
}
