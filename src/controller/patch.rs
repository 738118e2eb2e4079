//! Status writes as merge patches of what changed since the last write.

/// A JSON merge patch from `old` to `new`, as Flux's patch helper computes it: changed
/// fields, and `null` for fields that went away (so they are removed whoever set them, Flux
/// itself included after a migration). `None` when nothing changed.
pub fn merge_patch(old: &serde_json::Value, new: &serde_json::Value) -> Option<serde_json::Value> {
    use serde_json::Value;
    match (old, new) {
        (Value::Object(o), Value::Object(n)) => {
            let mut patch = serde_json::Map::new();
            for (k, nv) in n {
                match o.get(k) {
                    Some(ov) => {
                        if let Some(p) = merge_patch(ov, nv) {
                            patch.insert(k.clone(), p);
                        }
                    }
                    None => {
                        patch.insert(k.clone(), nv.clone());
                    }
                }
            }
            for k in o.keys().filter(|k| !n.contains_key(*k)) {
                patch.insert(k.clone(), Value::Null);
            }
            (!patch.is_empty()).then_some(Value::Object(patch))
        }
        _ => (old != new).then(|| new.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_nulls_removed_fields_and_skips_unchanged() {
        let old = json!({"a": 1, "b": {"c": 2, "d": 3}});
        let new = json!({"a": 1, "b": {"c": 4}});
        assert_eq!(
            merge_patch(&old, &new),
            Some(json!({"b": {"c": 4, "d": null}}))
        );
        assert_eq!(merge_patch(&new, &new), None);
    }
}
