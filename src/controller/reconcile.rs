//! What one reconcile decides, without I/O: from the objects `render` wants and the generated-kind
//! objects in the cluster, which to apply and which to delete. Steady state is an empty plan.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use super::kinds::expand;
use crate::policy::finding::Severity;
use crate::policy::render::{
    Issue, MANAGED_BY, MANAGED_BY_VALUE, MeshKind, MeshObject, OWNER_LABEL, ObjectRef, Rendered,
};

/// A generated-kind object in the cluster, as the stores hold it.
#[derive(Debug, Clone, PartialEq)]
pub struct Live<'a> {
    pub kind: MeshKind,
    pub object: &'a Value,
}

/// An object to delete: ours, and no longer wanted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deletion {
    pub kind: MeshKind,
    pub namespace: String,
    pub name: String,
    pub uid: Option<String>,
    /// Who owned it (the owner annotation), for the owner's Event.
    pub owner: Option<String>,
}

/// An object to apply, and whether it exists already as ours (then the apply takes back fields
/// someone else changed: `force`).
#[derive(Debug, Clone, PartialEq)]
pub struct Apply<'a> {
    pub object: &'a MeshObject,
    pub force: bool,
}

#[derive(Debug, Default, PartialEq)]
pub struct Plan<'a> {
    pub apply: Vec<Apply<'a>>,
    pub delete: Vec<Deletion>,
}

/// The plan for `rendered` against `live` (every object of the generated kinds the stores hold),
/// touching only the kinds `writable` allows (an Istio kind without its CRD is neither applied nor
/// pruned).
pub fn plan<'a>(
    rendered: &'a Rendered,
    live: &[Live<'_>],
    writable: impl Fn(MeshKind) -> bool,
) -> Plan<'a> {
    let by_key: BTreeMap<(MeshKind, &str, &str), &Value> = live
        .iter()
        .map(|l| {
            let meta = &l.object["metadata"];
            let text = |f: &str| meta[f].as_str().unwrap_or_default();
            ((l.kind, text("namespace"), text("name")), l.object)
        })
        .collect();
    let mut plan = Plan::default();
    let mut wanted = BTreeSet::new();
    for object in rendered.objects.iter().filter(|o| writable(o.kind)) {
        wanted.insert(object.key());
        let current = by_key.get(&object.key()).map(|c| expand(c));
        match current.as_deref() {
            Some(current) if is_ours(current) => {
                if !up_to_date(current, &object.manifest.value()) {
                    plan.apply.push(Apply {
                        object,
                        force: true,
                    });
                }
            }
            // Someone else's object of that name: `render` has already left ours out (it was
            // given the cluster's objects); this only happens when the two views raced.
            Some(_) => {}
            None => plan.apply.push(Apply {
                object,
                force: false,
            }),
        }
    }
    let frozen = frozen_owners(rendered);
    for (key, current) in &by_key {
        let (kind, namespace, name) = *key;
        if !writable(kind) || wanted.contains(key) {
            continue;
        }
        let current = expand(current);
        if !is_ours(&current) {
            continue;
        }
        let meta = &current["metadata"];
        if meta["labels"][OWNER_LABEL]
            .as_str()
            .is_some_and(|owner| frozen.contains(owner))
        {
            continue;
        }
        plan.delete.push(Deletion {
            kind,
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            uid: meta["uid"].as_str().map(str::to_owned),
            owner: meta["annotations"][crate::policy::render::OWNER_ANNOTATION]
                .as_str()
                .map(str::to_owned),
        });
    }
    plan
}

/// Whether an object carries our managed-by label.
pub fn is_ours(object: &Value) -> bool {
    object["metadata"]["labels"][MANAGED_BY].as_str() == Some(MANAGED_BY_VALUE)
}

/// The owner labels whose objects stay as they are: an owner with an error writes nothing, so
/// its objects are neither changed nor deleted (a conflict must not make objects come and go).
/// A conflict on a namespace's mTLS mode freezes the namespace's PeerAuthentication too, whose
/// owner is the Namespace, not the HelmReleases in conflict.
fn frozen_owners(rendered: &Rendered) -> BTreeSet<String> {
    let mut frozen = BTreeSet::new();
    for problem in &rendered.problems {
        if problem.issue.severity() != Severity::Error {
            continue;
        }
        frozen.insert(problem.subject.owner_label());
        if let Issue::MtlsModeConflict { namespace, .. } = &problem.issue {
            frozen.insert(ObjectRef::namespace(namespace).owner_label());
        }
    }
    frozen
}

/// Whether `current` already says everything `desired` says: its labels, annotations and spec
/// hold every field of the desired ones with the same value (the apiserver may add defaults and
/// other managers their own fields, which server-side apply leaves alone anyway). Lists must match
/// element by element: a changed list is applied whole.
pub fn up_to_date(current: &Value, desired: &Value) -> bool {
    let meta = |v: &Value, field: &str| v["metadata"][field].clone();
    contains(&meta(current, "labels"), &meta(desired, "labels"))
        && contains(&meta(current, "annotations"), &meta(desired, "annotations"))
        && contains(&current["spec"], &desired["spec"])
}

fn contains(current: &Value, desired: &Value) -> bool {
    match (current, desired) {
        (_, Value::Null) => true,
        (Value::Object(current), Value::Object(desired)) => desired
            .iter()
            .all(|(key, value)| contains(current.get(key).unwrap_or(&Value::Null), value)),
        (Value::Array(current), Value::Array(desired)) => {
            current.len() == desired.len()
                && current.iter().zip(desired).all(|(c, d)| contains(c, d))
        }
        // An empty map asked for and absent: the apiserver drops `{}` of some fields.
        (Value::Null, Value::Object(desired)) => desired.is_empty(),
        (current, desired) => current == desired,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::policy::render::render;
    use serde_json::json;

    fn release(name: &str, annotations: Value) -> Value {
        json!({"apiVersion": "helm.toolkit.fluxcd.io/v2", "kind": "HelmRelease",
               "metadata": {"name": name, "namespace": "apps", "annotations": annotations}})
    }

    fn live_of(rendered: &Rendered) -> Vec<(MeshKind, Value)> {
        rendered
            .objects
            .iter()
            .map(|o| {
                let mut object = o.manifest.value();
                // What the apiserver adds.
                object["metadata"]["uid"] = json!("u");
                object["metadata"]["resourceVersion"] = json!("5");
                (o.kind, object)
            })
            .collect()
    }

    fn lives(objects: &[(MeshKind, Value)]) -> Vec<Live<'_>> {
        objects
            .iter()
            .map(|(kind, object)| Live {
                kind: *kind,
                object,
            })
            .collect()
    }

    #[test]
    fn steady_state_plans_nothing() {
        let inputs = [release(
            "web",
            json!({"servicemesh.bigbang.dev/expose": "web", "servicemesh.bigbang.dev/host": "web",
                   "servicemesh.bigbang.dev/port": "8080"}),
        )];
        let rendered = render(&inputs, &Config::default());
        assert!(!rendered.objects.is_empty());
        let first = plan(&rendered, &[], |_| true);
        assert_eq!(first.apply.len(), rendered.objects.len());
        assert!(first.apply.iter().all(|a| !a.force));
        let live = live_of(&rendered);
        assert_eq!(plan(&rendered, &lives(&live), |_| true), Plan::default());
    }

    #[test]
    fn a_hand_edit_is_applied_back_with_force() {
        let inputs = [release(
            "web",
            json!({"servicemesh.bigbang.dev/mtlsMode": "STRICT"}),
        )];
        let rendered = render(&inputs, &Config::default());
        let mut live = live_of(&rendered);
        live[0].1["spec"]["mtls"]["mode"] = json!("DISABLE");
        let plan = plan(&rendered, &lives(&live), |_| true);
        assert_eq!(plan.apply.len(), 1);
        assert!(plan.apply[0].force);
        assert!(plan.delete.is_empty());
    }

    #[test]
    fn ours_no_longer_wanted_is_deleted_and_others_are_not() {
        let rendered = Rendered::default();
        let ours = json!({"metadata": {"name": "old", "namespace": "apps", "uid": "u1",
            "labels": {MANAGED_BY: MANAGED_BY_VALUE, OWNER_LABEL: "0123456789abcdef"},
            "annotations": {"mesh-admission/owner-ref": "helm.toolkit.fluxcd.io/HelmRelease/apps/old"}}});
        let theirs = json!({"metadata": {"name": "hand", "namespace": "apps"}});
        let live = [
            (MeshKind::VirtualService, ours),
            (MeshKind::VirtualService, theirs),
        ];
        let plan = plan(&rendered, &lives(&live), |_| true);
        assert!(plan.apply.is_empty());
        assert_eq!(
            plan.delete,
            [Deletion {
                kind: MeshKind::VirtualService,
                namespace: "apps".into(),
                name: "old".into(),
                uid: Some("u1".into()),
                owner: Some("helm.toolkit.fluxcd.io/HelmRelease/apps/old".into()),
            }]
        );
        // A kind that cannot be written (no CRD yet) is left alone.
        assert!(
            super::plan(&rendered, &lives(&live), |_| false)
                .delete
                .is_empty()
        );
    }

    #[test]
    fn a_mtls_conflict_keeps_the_namespace_peer_authentication() {
        let one = [release(
            "a",
            json!({"servicemesh.bigbang.dev/mtlsMode": "STRICT"}),
        )];
        let before = render(&one, &Config::default());
        let live = live_of(&before);
        let two = [
            one[0].clone(),
            release(
                "b",
                json!({"servicemesh.bigbang.dev/mtlsMode": "PERMISSIVE"}),
            ),
        ];
        let rendered = render(&two, &Config::default());
        assert!(rendered.has_errors());
        assert_eq!(plan(&rendered, &lives(&live), |_| true), Plan::default());
    }

    #[test]
    fn defaults_and_foreign_fields_do_not_count_as_drift() {
        let desired = json!({"metadata": {"labels": {"a": "b"}}, "spec": {"podSelector": {}, "x": [1, {"y": 2}]}});
        let current = json!({"metadata": {"labels": {"a": "b", "c": "d"}, "uid": "u"},
            "spec": {"x": [1, {"y": 2, "z": 3}], "w": true}});
        assert!(up_to_date(&current, &desired));
        let changed = json!({"metadata": {"labels": {"a": "b"}}, "spec": {"podSelector": {}, "x": [1, {"y": 2}, 3]}});
        assert!(!up_to_date(&changed, &desired));
    }
}
