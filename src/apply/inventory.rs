//! Object identity as Flux's inventory writes it (`<namespace>_<name>_<group>_<kind>` with the
//! API version beside it), and the difference between two inventories.

use std::collections::BTreeSet;

use crate::api::kustomization::{ResourceInventory, ResourceRef};

/// The labels on every object a Kustomization applies: its name and namespace.
pub const OWNER_NAME: &str = "kustomize.toolkit.fluxcd.io/name";
pub const OWNER_NAMESPACE: &str = "kustomize.toolkit.fluxcd.io/namespace";

/// The identity of one applied object.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectRef {
    pub group: String,
    pub version: String,
    pub kind: String,
    pub namespace: String,
    pub name: String,
}

const RBAC_GROUP: &str = "rbac.authorization.k8s.io";
const RBAC_KINDS: [&str; 4] = ["Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding"];

impl ObjectRef {
    /// From an object's `apiVersion`, `kind` and metadata.
    pub fn of(object: &serde_json::Value) -> Option<ObjectRef> {
        let api_version = object.get("apiVersion")?.as_str()?;
        let (group, version) = match api_version.rsplit_once('/') {
            Some((g, v)) => (g.to_string(), v.to_string()),
            None => (String::new(), api_version.to_string()),
        };
        let meta = object.get("metadata")?;
        Some(ObjectRef {
            group,
            version,
            kind: object.get("kind")?.as_str()?.to_string(),
            namespace: meta
                .get("namespace")
                .and_then(|n| n.as_str())
                .unwrap_or_default()
                .to_string(),
            name: meta.get("name")?.as_str()?.to_string(),
        })
    }

    pub fn api_version(&self) -> String {
        match self.group.is_empty() {
            true => self.version.clone(),
            false => format!("{}/{}", self.group, self.version),
        }
    }

    /// Flux's inventory id; a `:` in RBAC names is written `__`.
    pub fn id(&self) -> String {
        let name = match self.group == RBAC_GROUP && RBAC_KINDS.contains(&self.kind.as_str()) {
            true => self.name.replace(':', "__"),
            false => self.name.clone(),
        };
        format!("{}_{name}_{}_{}", self.namespace, self.group, self.kind)
    }

    /// Parses an inventory entry back.
    pub fn from_entry(entry: &ResourceRef) -> Option<ObjectRef> {
        let (namespace, rest) = entry.id.split_once('_')?;
        let (rest, kind) = rest.rsplit_once('_')?;
        let (name, group) = rest.rsplit_once('_')?;
        let name = match group == RBAC_GROUP && RBAC_KINDS.contains(&kind) {
            true => name.replace("__", ":"),
            false => name.to_string(),
        };
        Some(ObjectRef {
            group: group.to_string(),
            version: entry.v.clone(),
            kind: kind.to_string(),
            namespace: namespace.to_string(),
            name,
        })
    }

    pub fn entry(&self) -> ResourceRef {
        ResourceRef {
            id: self.id(),
            v: self.version.clone(),
        }
    }

    /// `Kind/namespace/name` (or `Kind/name`), as Flux's messages name objects.
    pub fn subject(&self) -> String {
        match self.namespace.is_empty() {
            true => format!("{}/{}", self.kind, self.name),
            false => format!("{}/{}/{}", self.kind, self.namespace, self.name),
        }
    }
}

pub fn inventory(refs: &[ObjectRef]) -> ResourceInventory {
    let mut entries: Vec<ResourceRef> = refs.iter().map(ObjectRef::entry).collect();
    entries.sort_by(|a, b| a.id.cmp(&b.id));
    entries.dedup_by(|a, b| a.id == b.id);
    ResourceInventory { entries }
}

/// Entries of `old` whose id is not in `new`: what a prune deletes.
pub fn stale(old: &ResourceInventory, new: &ResourceInventory) -> Vec<ObjectRef> {
    let keep: BTreeSet<&str> = new.entries.iter().map(|e| e.id.as_str()).collect();
    old.entries
        .iter()
        .filter(|e| !keep.contains(e.id.as_str()))
        .filter_map(ObjectRef::from_entry)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(api: &str, kind: &str, ns: &str, name: &str) -> serde_json::Value {
        serde_json::json!({"apiVersion": api, "kind": kind, "metadata": {"name": name, "namespace": ns}})
    }

    #[test]
    fn ids_follow_flux_examples() {
        let r = ObjectRef::of(&obj("v1", "Service", "default", "podinfo")).unwrap();
        assert_eq!(r.id(), "default_podinfo__Service");
        let d = ObjectRef::of(&obj("apps/v1", "Deployment", "default", "podinfo")).unwrap();
        assert_eq!(d.id(), "default_podinfo_apps_Deployment");
        let ns = ObjectRef::of(&serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "podinfo"}})).unwrap();
        assert_eq!(ns.id(), "_podinfo__Namespace");
        let role = ObjectRef::of(&serde_json::json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "system:foo"}})).unwrap();
        assert_eq!(
            role.id(),
            "_system__foo_rbac.authorization.k8s.io_ClusterRole"
        );
        assert_eq!(ObjectRef::from_entry(&role.entry()).unwrap(), role);
    }

    #[test]
    fn entries_parse_back_with_underscores_in_names() {
        let r = ObjectRef::of(&obj("example.com/v2", "Widget", "ns", "a_b")).unwrap();
        let back = ObjectRef::from_entry(&r.entry()).unwrap();
        assert_eq!(back, r);
        assert_eq!(back.api_version(), "example.com/v2");
    }

    #[test]
    fn stale_is_old_minus_new_by_id() {
        let a = ObjectRef::of(&obj("v1", "ConfigMap", "ns", "a")).unwrap();
        let b = ObjectRef::of(&obj("v1", "ConfigMap", "ns", "b")).unwrap();
        let old = inventory(&[a.clone(), b.clone()]);
        let new = inventory(&[a]);
        assert_eq!(stale(&old, &new), vec![b]);
    }
}
