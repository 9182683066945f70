//! What the controller's reconcile writes, decided without I/O: from the objects `render` wants and
//! the generated-kind objects of the model, which to apply and which to delete (DESIGN.md section
//! 9, "Controller behaviour"). Steady state is an empty plan.

use std::collections::BTreeSet;
use std::time::Instant;

use serde_json::Value;

use crate::model::ownership::{self, is_ours};
use crate::model::{Key, Labels, Metadata, Model, ObjectRef};
use crate::policy::finding::Severity;
use crate::policy::kinds::{self, Kind};
use crate::policy::render::{Issue, MeshObject, Rendered};

/// An object to delete: ours, and no longer wanted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deletion {
    pub kind: &'static Kind,
    pub namespace: String,
    pub name: String,
    pub uid: Option<String>,
    /// Who owned it (the owner annotation), for the owner's Event.
    pub owner: Option<ObjectRef>,
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

/// One write of a plan.
#[derive(Debug, Clone, Copy)]
pub enum Write<'a> {
    Apply { object: &'a MeshObject, force: bool },
    Delete(&'a Deletion),
}

impl<'a> Write<'a> {
    /// Kind, namespace and name of the object written.
    pub fn key(&self) -> (&'static Kind, &'a str, &'a str) {
        match self {
            Write::Apply { object, .. } => object.key(),
            Write::Delete(d) => (d.kind, &d.namespace, &d.name),
        }
    }
}

impl<'a> Plan<'a> {
    pub fn applies(&self) -> Vec<Write<'a>> {
        let write = |a: &Apply<'a>| Write::Apply {
            object: a.object,
            force: a.force,
        };
        self.apply.iter().map(write).collect()
    }

    pub fn deletions(&self) -> Vec<Write<'_>> {
        self.delete.iter().map(Write::Delete).collect()
    }
}

/// The writes of the last reconcile that the model does not show yet. The controller waits for
/// them (until a deadline) before it plans again: planning against a store a watch event behind
/// would write the same objects again.
#[derive(Debug, Default)]
pub struct Unseen {
    /// The objects, and the resourceVersion applied (`None`: deleted).
    writes: Vec<(Key, Option<u64>)>,
    pub until: Option<Instant>,
}

impl Unseen {
    pub fn new(writes: Vec<(Key, Option<u64>)>, until: Instant) -> Self {
        let until = (!writes.is_empty()).then_some(until);
        Unseen { writes, until }
    }

    /// Whether `model` does not show every write yet and the wait is not over at `now`. An
    /// etcd-backed apiserver's resourceVersions only grow.
    pub fn pending(&mut self, model: &Model, now: Instant) -> bool {
        self.writes.retain(|(key, version)| {
            let live = model.collection(key.kind);
            let live = live.and_then(|c| c.metadata(key.kind, &key.namespace, &key.name));
            let version_of = |m: &Metadata| m.identity.resource_version.as_deref()?.parse().ok();
            let live_version = live.and_then(version_of);
            match version {
                Some(version) => live_version.is_none_or(|v: u64| v < *version),
                None => live.is_some(),
            }
        });
        let waiting = !self.writes.is_empty() && self.until.is_some_and(|t| now < t);
        if !waiting {
            *self = Unseen::default();
        }
        waiting
    }
}

/// The plan for `rendered` against the model's objects of the generated kinds, touching only the
/// kinds `writable` allows (an Istio kind without its CRD is neither applied nor pruned).
pub fn plan<'a>(
    rendered: &'a Rendered,
    model: &Model,
    writable: impl Fn(&Kind) -> bool,
) -> Plan<'a> {
    let mut plan = Plan::default();
    let mut wanted = BTreeSet::new();
    for object in rendered.objects.iter().filter(|o| writable(o.kind)) {
        wanted.insert(object.key());
        let collection = model.collection(object.kind);
        let current =
            collection.and_then(|c| c.metadata(object.kind, &object.namespace, &object.name));
        match current {
            Some(meta) if is_ours(meta) => {
                let spec = collection
                    .and_then(|c| c.spec_json(object.kind, &object.namespace, &object.name))
                    .unwrap_or(Value::Null);
                if !up_to_date(meta, &spec, object) {
                    plan.apply.push(Apply {
                        object,
                        force: true,
                    });
                }
            }
            // Someone else's object of that name: `render` has already left ours out (it read
            // the same model); this only happens when the two views raced.
            Some(_) => {}
            None => plan.apply.push(Apply {
                object,
                force: false,
            }),
        }
    }
    let frozen = frozen_owners(rendered);
    for kind in kinds::generated().filter(|k| writable(k)) {
        let Some(collection) = model.collection(kind) else {
            continue;
        };
        for (key, meta) in collection.all(kind) {
            if wanted.contains(&(kind, key.namespace.as_str(), key.name.as_str()))
                || !is_ours(meta)
                || ownership::owner_label_of(meta).is_some_and(|owner| frozen.contains(owner))
            {
                continue;
            }
            plan.delete.push(Deletion {
                kind,
                namespace: key.namespace.clone(),
                name: key.name.clone(),
                uid: meta.identity.uid.clone(),
                owner: ownership::owner_of(meta),
            });
        }
    }
    plan
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

/// Whether the object in the cluster (`meta`, `spec`) already says everything `desired` says:
/// its labels, annotations and spec hold every field of the desired ones with the same value (the
/// apiserver may add defaults and other managers their own fields, which server-side apply leaves
/// alone anyway). Lists must match element by element: a changed list is applied whole.
pub fn up_to_date(meta: &Metadata, spec: &Value, desired: &MeshObject) -> bool {
    let (labels, annotations) = ownership::marks(&desired.owner);
    let holds = |current: &Labels, wanted: &Labels| current.contains_all(wanted);
    holds(&meta.labels, &labels)
        && holds(&meta.annotations, &annotations)
        && contains(spec, &desired.spec.to_json())
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
    use crate::model::ownership::{MANAGED_BY, MANAGED_BY_VALUE, OWNER_LABEL};
    use crate::policy::render::render;
    use serde_json::json;

    fn release(name: &str, annotations: Value) -> Value {
        json!({"apiVersion": "helm.toolkit.fluxcd.io/v2", "kind": "HelmRelease",
               "metadata": {"name": name, "namespace": "apps", "annotations": annotations}})
    }

    fn rendered(inputs: &[Value]) -> Rendered {
        render(&Model::from_manifests(inputs), &Config::default())
    }

    /// The cluster after `rendered` was applied: inputs and generated objects, as the apiserver
    /// returns them.
    fn applied(inputs: &[Value], rendered: &Rendered) -> Vec<Value> {
        let mut cluster = inputs.to_vec();
        cluster.extend(rendered.objects.iter().map(|o| {
            let mut object = o.manifest();
            object["metadata"]["uid"] = json!("u");
            object["metadata"]["resourceVersion"] = json!("5");
            object
        }));
        cluster
    }

    const ROUTE: [(&str, &str); 3] = [
        ("servicemesh.bigbang.dev/expose", "web"),
        ("servicemesh.bigbang.dev/host", "web"),
        ("servicemesh.bigbang.dev/port", "8080"),
    ];

    #[test]
    fn steady_state_plans_nothing() {
        let inputs = [release(
            "web",
            json!(serde_json::Map::from_iter(
                ROUTE.map(|(k, v)| (k.to_owned(), json!(v)))
            )),
        )];
        let wanted = rendered(&inputs);
        assert!(!wanted.objects.is_empty());
        let first = plan(&wanted, &Model::from_manifests(&inputs), |_| true);
        assert_eq!(first.apply.len(), wanted.objects.len());
        assert!(first.apply.iter().all(|a| !a.force));
        let cluster = Model::from_manifests(&applied(&inputs, &wanted));
        assert_eq!(plan(&wanted, &cluster, |_| true), Plan::default());
    }

    #[test]
    fn a_hand_edit_is_applied_back_with_force() {
        let inputs = [release(
            "web",
            json!({"servicemesh.bigbang.dev/mtlsMode": "STRICT"}),
        )];
        let wanted = rendered(&inputs);
        let mut cluster = applied(&inputs, &wanted);
        let last = cluster.len() - 1;
        cluster[last]["spec"]["mtls"]["mode"] = json!("DISABLE");
        let plan = plan(&wanted, &Model::from_manifests(&cluster), |_| true);
        assert_eq!(plan.apply.len(), 1);
        assert!(plan.apply[0].force);
        assert!(plan.delete.is_empty());
    }

    #[test]
    fn ours_no_longer_wanted_is_deleted_and_others_are_not() {
        let wanted = Rendered::default();
        let ours = json!({"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
            "metadata": {"name": "old", "namespace": "apps", "uid": "u1",
            "labels": {MANAGED_BY: MANAGED_BY_VALUE, OWNER_LABEL: "0123456789abcdef"},
            "annotations": {"mesh-admission/owner-ref": "helm.toolkit.fluxcd.io/HelmRelease/apps/old"}}});
        let theirs = json!({"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
            "metadata": {"name": "hand", "namespace": "apps"}});
        let cluster = Model::from_manifests(&[ours, theirs]);
        let plan = plan(&wanted, &cluster, |_| true);
        assert!(plan.apply.is_empty());
        assert_eq!(
            plan.delete,
            [Deletion {
                kind: &kinds::VIRTUAL_SERVICE,
                namespace: "apps".into(),
                name: "old".into(),
                uid: Some("u1".into()),
                owner: Some(ObjectRef::new(
                    "helm.toolkit.fluxcd.io",
                    "HelmRelease",
                    "apps",
                    "old"
                )),
            }]
        );
        // A kind that cannot be written (no CRD yet) is left alone.
        assert!(super::plan(&wanted, &cluster, |_| false).delete.is_empty());
    }

    #[test]
    fn a_mtls_conflict_keeps_the_namespace_peer_authentication() {
        let one = [release(
            "a",
            json!({"servicemesh.bigbang.dev/mtlsMode": "STRICT"}),
        )];
        let before = rendered(&one);
        let mut cluster = applied(&one, &before);
        let second = release(
            "b",
            json!({"servicemesh.bigbang.dev/mtlsMode": "PERMISSIVE"}),
        );
        cluster.push(second.clone());
        let wanted = rendered(&[one[0].clone(), second]);
        assert!(wanted.has_errors());
        assert_eq!(
            plan(&wanted, &Model::from_manifests(&cluster), |_| true),
            Plan::default()
        );
    }

    #[test]
    fn writes_are_awaited_until_the_model_shows_them_or_time_is_up() {
        let inputs = [release(
            "web",
            json!({"servicemesh.bigbang.dev/mtlsMode": "STRICT"}),
        )];
        let wanted = rendered(&inputs);
        let cluster = Model::from_manifests(&applied(&inputs, &wanted));
        let now = Instant::now();
        let later = now + std::time::Duration::from_secs(2);
        let key = |version| {
            let (namespace, name) = ("apps".to_owned(), "default".to_owned());
            let kind = &kinds::PEER_AUTHENTICATION;
            (
                Key {
                    namespace,
                    name,
                    kind,
                },
                version,
            )
        };
        assert!(Unseen::new(vec![key(Some(6))], later).pending(&cluster, now));
        assert!(!Unseen::new(vec![key(Some(6))], later).pending(&cluster, later));
        assert!(!Unseen::new(vec![key(Some(5))], later).pending(&cluster, now));
        assert!(Unseen::new(vec![key(None)], later).pending(&cluster, now));
        assert!(!Unseen::new(vec![key(None)], later).pending(&Model::default(), now));
    }

    #[test]
    fn defaults_and_foreign_fields_do_not_count_as_drift() {
        let desired = json!({"podSelector": {}, "x": [1, {"y": 2}]});
        let current = json!({"x": [1, {"y": 2, "z": 3}], "w": true});
        assert!(contains(&current, &desired));
        let changed = json!({"podSelector": {}, "x": [1, {"y": 2}, 3]});
        assert!(!contains(&changed, &desired));
    }
}
