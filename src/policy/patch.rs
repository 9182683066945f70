//! Building RFC 6902 JSON Patches that apply to the object exactly as it was sent.
//!
//! JSON Pointer escaping (`/` as `~1`, `~` as `~0`) is done by `jsonptr`; the helpers here only decide
//! between creating a missing map and adding to an existing one.

use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, PatchOperation, RemoveOperation, ReplaceOperation};
use serde_json::Value;

use super::object::StringMap;

/// A pointer from unescaped tokens.
pub fn pointer<'t>(tokens: impl IntoIterator<Item = &'t str>) -> PointerBuf {
    PointerBuf::from_tokens(tokens)
}

pub fn add(path: PointerBuf, value: Value) -> PatchOperation {
    PatchOperation::Add(AddOperation { path, value })
}

pub fn replace(path: PointerBuf, value: Value) -> PatchOperation {
    PatchOperation::Replace(ReplaceOperation { path, value })
}

pub fn remove(path: PointerBuf) -> PatchOperation {
    PatchOperation::Remove(RemoveOperation { path })
}

/// Pending changes to one `map[string]string` (labels or annotations) of an object.
///
/// When the map is absent (or `null`) every entry goes into a single `add` of the whole map, because
/// adding `/metadata/labels/x` to a missing `labels` fails to apply.
pub struct MapEdit<'m> {
    path: [&'static str; 2],
    existing: Option<&'m StringMap>,
    changes: Vec<(String, String)>,
}

impl<'m> MapEdit<'m> {
    /// `path` is e.g. `["metadata", "labels"]`.
    pub fn new(path: [&'static str; 2], existing: Option<&'m StringMap>) -> Self {
        MapEdit {
            path,
            existing,
            changes: Vec::new(),
        }
    }

    /// The value as it will be once the pending changes are applied.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.changes
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .or_else(|| self.existing?.get(key).map(|v| v.as_ref()))
    }

    pub fn contains_key(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    /// Sets `key` unless it already holds `value`.
    pub fn set(&mut self, key: &str, value: &str) {
        if self.get(key) == Some(value) {
            return;
        }
        self.changes.retain(|(k, _)| k != key);
        self.changes.push((key.to_owned(), value.to_owned()));
    }

    /// Sets `key` only when it is absent.
    pub fn set_if_absent(&mut self, key: &str, value: &str) {
        if !self.contains_key(key) {
            self.set(key, value);
        }
    }

    pub fn into_ops(self, ops: &mut Vec<PatchOperation>) {
        if self.changes.is_empty() {
            return;
        }
        let Some(existing) = self.existing else {
            let map = self
                .changes
                .into_iter()
                .map(|(k, v)| (k, Value::String(v)))
                .collect();
            ops.push(add(pointer(self.path), Value::Object(map)));
            return;
        };
        for (key, value) in self.changes {
            let path = pointer([self.path[0], self.path[1], key.as_str()]);
            if existing.contains_key(key.as_str()) {
                ops.push(replace(path, Value::String(value)));
            } else {
                ops.push(add(path, Value::String(value)));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn apply(mut doc: Value, ops: &[PatchOperation]) -> Value {
        json_patch::patch(&mut doc, ops).expect("patch applies");
        doc
    }

    #[test]
    fn a_missing_map_is_created_with_all_entries() {
        let mut ops = Vec::new();
        let mut edit = MapEdit::new(["metadata", "labels"], None);
        edit.set("a/b", "1");
        edit.set("c~d", "2");
        edit.into_ops(&mut ops);
        assert_eq!(ops.len(), 1);
        let doc = apply(json!({"metadata": {}}), &ops);
        assert_eq!(
            doc,
            json!({"metadata": {"labels": {"a/b": "1", "c~d": "2"}}})
        );
    }

    #[test]
    fn keys_are_escaped_and_existing_values_replaced() {
        let existing: StringMap = [("x/y".into(), "old".into())].into_iter().collect();
        let mut ops = Vec::new();
        let mut edit = MapEdit::new(["metadata", "annotations"], Some(&existing));
        edit.set("x/y", "new");
        edit.set("t~1", "v");
        edit.into_ops(&mut ops);
        let text = serde_json::to_string(&ops).unwrap();
        assert!(text.contains("/metadata/annotations/x~1y"), "{text}");
        assert!(text.contains("/metadata/annotations/t~01"), "{text}");
        let doc = apply(json!({"metadata": {"annotations": {"x/y": "old"}}}), &ops);
        assert_eq!(
            doc,
            json!({"metadata": {"annotations": {"x/y": "new", "t~1": "v"}}})
        );
    }

    #[test]
    fn setting_the_current_value_is_no_change() {
        let existing: StringMap = [("k".into(), "v".into())].into_iter().collect();
        let mut ops = Vec::new();
        let mut edit = MapEdit::new(["metadata", "labels"], Some(&existing));
        edit.set("k", "v");
        edit.set_if_absent("k", "other");
        edit.into_ops(&mut ops);
        assert!(ops.is_empty());
    }
}
