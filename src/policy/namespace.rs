//! Namespace mutation (DESIGN.md section 4, "Namespaces"): label new namespaces for Istio injection.

use super::Mutation;
use super::object::Namespace;
use super::patch::MapEdit;
use crate::config::Config;
use crate::model::Labels;

/// The label of Istio's revision-based injection; `istio-injection` would override it.
pub const ISTIO_REVISION_LABEL: &str = "istio.io/rev";

/// The label the apiserver gives every namespace, with its name.
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// A namespace's labels as stored: `labels` as written, the injection label this table adds unless
/// excluded or already chosen, and the name label the apiserver adds (over anything written). The
/// commands that read many objects (`graph`, `audit`) judge manifests and stored objects alike so.
pub fn stored_labels(name: &str, labels: &Labels, cfg: &Config) -> Labels {
    let key = &cfg.namespace_label.key;
    let chosen = labels.get(key).is_some() || labels.get(ISTIO_REVISION_LABEL).is_some();
    let mut added = vec![(NAMESPACE_NAME_LABEL, name)];
    if !cfg.is_excluded_namespace(name) && !chosen {
        added.push((key.as_str(), cfg.namespace_label.value.as_str()));
    }
    // Later entries win.
    labels.iter().chain(added).collect()
}

/// Applies the Namespace table. `name` is the namespace's name (from the object, or the request).
pub fn mutate(ns: &Namespace<'_>, name: &str, cfg: &Config) -> Mutation {
    let meta = ns.metadata.as_ref();
    let labels = meta.and_then(|m| m.labels.as_ref());
    let has = |key: &str| labels.is_some_and(|l| l.contains_key(key));

    if cfg.is_excluded_namespace(name) || has(&cfg.namespace_label.key) || has(ISTIO_REVISION_LABEL)
    {
        return Mutation::default();
    }

    let mut patch = Vec::new();
    if meta.is_none() {
        patch.push(super::patch::add(
            super::patch::pointer(["metadata"]),
            serde_json::json!({}),
        ));
    }
    let mut edit = MapEdit::new(["metadata", "labels"], labels);
    edit.set(&cfg.namespace_label.key, &cfg.namespace_label.value);
    edit.into_ops(&mut patch);
    Mutation {
        patch,
        warnings: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::object::decode;
    use serde_json::{Value, json};

    /// Runs the rule on `object` and returns the object with the patch applied.
    fn mutated(object: Value, name: &str, cfg: &Config) -> (Mutation, Value) {
        let text = object.to_string();
        let ns: Namespace = decode(&text).unwrap();
        let m = mutate(&ns, name, cfg);
        let mut doc = object.clone();
        json_patch::patch(&mut doc, &m.patch).expect("patch applies to the object as sent");
        // Idempotency: the mutated object needs no further change.
        let again_text = doc.to_string();
        let again: Namespace = decode(&again_text).unwrap();
        assert!(
            mutate(&again, name, cfg).is_unchanged(),
            "second pass changed {doc}"
        );
        (m, doc)
    }

    #[test]
    fn namespace_table() {
        let cfg = Config::default();
        let enabled = json!({"istio-injection": "enabled"});
        // (case, object, expected labels after mutation)
        let cases = [
            (
                "excluded namespace",
                "kube-system",
                json!({"metadata": {"name": "kube-system"}}),
                None,
            ),
            (
                "each default exclusion",
                "spire-server",
                json!({"metadata": {"name": "spire-server"}}),
                None,
            ),
            (
                "explicit choice wins",
                "apps",
                json!({"metadata": {"name": "apps", "labels": {"istio-injection": "disabled"}}}),
                Some(json!({"istio-injection": "disabled"})),
            ),
            (
                "revision label",
                "apps",
                json!({"metadata": {"name": "apps", "labels": {"istio.io/rev": "canary"}}}),
                Some(json!({"istio.io/rev": "canary"})),
            ),
            (
                "no labels",
                "apps",
                json!({"metadata": {"name": "apps"}}),
                Some(enabled.clone()),
            ),
            (
                "null labels",
                "apps",
                json!({"metadata": {"name": "apps", "labels": null}}),
                Some(enabled.clone()),
            ),
            (
                "other labels",
                "apps",
                json!({"metadata": {"name": "apps", "labels": {"team": "a"}}}),
                Some(json!({"team": "a", "istio-injection": "enabled"})),
            ),
            (
                "no metadata at all",
                "apps",
                json!({"kind": "Namespace"}),
                Some(enabled.clone()),
            ),
        ];
        for (case, name, object, want) in cases {
            let (_, doc) = mutated(object.clone(), name, &cfg);
            match want {
                None => assert_eq!(doc, object, "{case}"),
                Some(labels) => assert_eq!(doc["metadata"]["labels"], labels, "{case}"),
            }
        }
    }

    #[test]
    fn excluded_list_and_label_come_from_the_configuration() {
        let cfg = Config::from_yaml("excludedNamespaces: [legacy]\nnamespaceLabel: {mesh: 'on'}")
            .unwrap();
        let (m, _) = mutated(json!({"metadata": {"name": "legacy"}}), "legacy", &cfg);
        assert!(m.is_unchanged());
        let (_, doc) = mutated(
            json!({"metadata": {"name": "kube-system"}}),
            "kube-system",
            &cfg,
        );
        assert_eq!(doc["metadata"]["labels"], json!({"mesh": "on"}));
    }
}
