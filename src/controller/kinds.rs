//! The kinds the controller watches, and what of each object it keeps: only the fields `render`
//! reads (and, for the generated kinds, what the comparison with the desired object reads), so
//! that the stores stay small in a cluster with thousands of Pods.

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::{Map, Value};

use crate::policy::helmrelease::PREFIX;
use crate::policy::render::MeshKind;

/// The Flux HelmRelease version watched; the apiserver converts every stored version to it.
const HELM_RELEASE: (&str, &str, &str) = ("helm.toolkit.fluxcd.io", "v2", "HelmRelease");

/// A watched kind: the inputs of `render`, and the generated kinds (all objects of them, ours
/// and hand-written ones, since a same-name object or a namespace-wide PeerAuthentication of
/// someone else's changes what is generated).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Watched {
    HelmRelease,
    Service,
    Namespace,
    Deployment,
    StatefulSet,
    DaemonSet,
    ReplicaSet,
    Pod,
    Mesh(MeshKind),
}

impl Watched {
    /// Every watched kind, inputs first.
    pub fn all() -> Vec<Watched> {
        let mut all = vec![
            Watched::HelmRelease,
            Watched::Service,
            Watched::Namespace,
            Watched::Deployment,
            Watched::StatefulSet,
            Watched::DaemonSet,
            Watched::ReplicaSet,
            Watched::Pod,
        ];
        all.extend(MeshKind::ALL.map(Watched::Mesh));
        all
    }

    /// What the API calls it.
    pub fn api_resource(self) -> ApiResource {
        match self {
            Watched::HelmRelease => {
                let (group, version, kind) = HELM_RELEASE;
                ApiResource::from_gvk_with_plural(
                    &GroupVersionKind::gvk(group, version, kind),
                    "helmreleases",
                )
            }
            Watched::Service => ApiResource::erase::<Service>(&()),
            Watched::Namespace => ApiResource::erase::<Namespace>(&()),
            Watched::Deployment => ApiResource::erase::<Deployment>(&()),
            Watched::StatefulSet => ApiResource::erase::<StatefulSet>(&()),
            Watched::DaemonSet => ApiResource::erase::<DaemonSet>(&()),
            Watched::ReplicaSet => ApiResource::erase::<ReplicaSet>(&()),
            Watched::Pod => ApiResource::erase::<Pod>(&()),
            Watched::Mesh(kind) => {
                let version = kind
                    .api_version()
                    .rsplit_once('/')
                    .map_or(kind.api_version(), |(_, v)| v);
                ApiResource::from_gvk(&GroupVersionKind::gvk(kind.group(), version, kind.kind()))
            }
        }
    }

    /// Whether the controller can work without it: the Istio kinds' CRDs may be installed later
    /// (NetworkPolicies are still managed meanwhile). Everything else is needed to render at all.
    pub fn optional(self) -> bool {
        matches!(self, Watched::Mesh(kind) if kind != MeshKind::NetworkPolicy)
    }

    /// Whether the objects are cluster-scoped.
    pub fn cluster_scoped(self) -> bool {
        self == Watched::Namespace
    }

    /// The group and kind a Watched stands for, as `render`'s owners name them.
    pub fn of_owner(group: &str, kind: &str) -> Option<Watched> {
        Watched::all().into_iter().find(|w| {
            let resource = w.api_resource();
            resource.group == group && resource.kind == kind
        })
    }

    /// The part of `object` worth keeping, or `None` when `render` would ignore the object anyway
    /// (a HelmRelease without mesh annotations, a workload without mesh annotations on its pods, an
    /// owned Pod or ReplicaSet). `apiVersion` and `kind` are set (list items may lack them).
    pub fn project(self, object: &Value) -> Option<Value> {
        let resource = self.api_resource();
        let metadata = &object["metadata"];
        let mut kept = Map::new();
        kept.insert("apiVersion".into(), resource.api_version.clone().into());
        kept.insert("kind".into(), resource.kind.clone().into());
        let mut meta = pick(
            metadata,
            &[
                "name",
                "namespace",
                "uid",
                "labels",
                "annotations",
                "ownerReferences",
                "creationTimestamp",
            ],
        );
        let spec = &object["spec"];
        let kept_spec = match self {
            Watched::HelmRelease => {
                if !has_mesh_annotation(metadata) {
                    return None;
                }
                pick(spec, &["targetNamespace"])
            }
            Watched::Service => {
                let mut kept = pick(spec, &["selector"]);
                if let Some(ports) = spec["ports"].as_array() {
                    let ports = ports
                        .iter()
                        .map(|p| {
                            Value::Object(pick(p, &["name", "port", "targetPort", "protocol"]))
                        })
                        .collect();
                    kept.insert("ports".into(), Value::Array(ports));
                }
                kept
            }
            Watched::Namespace => Map::new(),
            Watched::Deployment
            | Watched::StatefulSet
            | Watched::DaemonSet
            | Watched::ReplicaSet => {
                let template = &spec["template"];
                if !has_mesh_annotation(&template["metadata"]) || is_owned(metadata) {
                    return None;
                }
                let mut kept = pick(spec, &["selector"]);
                kept.insert("template".into(), Value::Object(pod_part(template)));
                kept
            }
            Watched::Pod => {
                if !has_mesh_annotation(metadata) || is_owned(metadata) {
                    return None;
                }
                let pod = pod_part(object);
                return Some(Value::Object(merge_pod(kept, meta, pod)));
            }
            Watched::Mesh(_) => {
                // The comparison with the desired object needs the whole spec, and the store's
                // newer-than test the resourceVersion.
                if let Some(rv) = metadata.get("resourceVersion") {
                    meta.insert("resourceVersion".into(), rv.clone());
                }
                spec.as_object().cloned().unwrap_or_default()
            }
        };
        kept.insert("metadata".into(), Value::Object(meta));
        kept.insert("spec".into(), Value::Object(kept_spec));
        let kept = Value::Object(kept);
        if matches!(self, Watched::Mesh(_)) && super::reconcile::is_ours(&kept) {
            return Some(compact(kept));
        }
        Some(kept)
    }
}

/// The field of a compacted object that holds it whole, as JSON text.
const COMPACT: &str = "compact";

/// Our own generated object, kept as its JSON text beside the few fields the stores and the
/// reconcile key, order and sort by. Every JSON object in a `serde_json::Value` is a B-tree node of 640 bytes however few keys
/// it has: a NetworkPolicy of ours took about 9 KiB as a `Value` and takes about 1.5 KiB so. Only
/// the plan reads these (`render` never needs our own objects), one at a time, through
/// [`expand`].
fn compact(object: Value) -> Value {
    let meta = &object["metadata"];
    let mut kept_meta = Map::new();
    for key in ["name", "namespace", "resourceVersion"] {
        if let Some(value) = meta.get(key) {
            kept_meta.insert(key.into(), value.clone());
        }
    }
    let text = object.to_string();
    let mut kept = pick(&object, &["apiVersion", "kind"]);
    kept.insert("metadata".into(), Value::Object(kept_meta));
    kept.insert(COMPACT.into(), Value::String(text));
    Value::Object(kept)
}

/// Whether a stored object is one of ours in its compact form.
pub fn is_compact(object: &Value) -> bool {
    object.get(COMPACT).is_some()
}

/// A stored object as [`Watched::project`] made it, its compact form read back.
pub fn expand(object: &Value) -> std::borrow::Cow<'_, Value> {
    match object.get(COMPACT).and_then(Value::as_str) {
        // Our own serialization: it parses.
        Some(text) => std::borrow::Cow::Owned(serde_json::from_str(text).unwrap_or(Value::Null)),
        None => std::borrow::Cow::Borrowed(object),
    }
}

/// A Pod keeps its metadata and its containers' names and ports (what `permissivePorts` is checked
/// against).
fn merge_pod(
    mut kept: Map<String, Value>,
    meta: Map<String, Value>,
    pod: Map<String, Value>,
) -> Map<String, Value> {
    kept.insert("metadata".into(), Value::Object(meta));
    if let Some(spec) = pod.get("spec") {
        kept.insert("spec".into(), spec.clone());
    }
    kept
}

/// A pod (template)'s annotations and labels, and its containers' names and ports.
fn pod_part(pod: &Value) -> Map<String, Value> {
    let mut kept = Map::new();
    kept.insert(
        "metadata".into(),
        Value::Object(pick(&pod["metadata"], &["labels", "annotations"])),
    );
    let mut spec = Map::new();
    for list in ["initContainers", "containers"] {
        if let Some(containers) = pod["spec"][list].as_array() {
            let containers = containers
                .iter()
                .map(|c| Value::Object(pick(c, &["name", "ports"])))
                .collect();
            spec.insert(list.into(), Value::Array(containers));
        }
    }
    kept.insert("spec".into(), Value::Object(spec));
    kept
}

fn pick(object: &Value, keys: &[&str]) -> Map<String, Value> {
    keys.iter()
        .filter_map(|key| Some(((*key).to_owned(), object.get(*key)?.clone())))
        .collect()
}

fn has_mesh_annotation(metadata: &Value) -> bool {
    metadata["annotations"]
        .as_object()
        .is_some_and(|a| a.keys().any(|k| k.starts_with(PREFIX)))
}

/// `render` leaves an owned Pod or ReplicaSet to its owner.
fn is_owned(metadata: &Value) -> bool {
    metadata["ownerReferences"]
        .as_array()
        .is_some_and(|r| !r.is_empty())
}

/// The apiVersion a kind's objects are stored under, for an Event's reference.
pub fn api_version_of(group: &str, kind: &str) -> Option<String> {
    Watched::of_owner(group, kind).map(|w| w.api_resource().api_version)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn plural_names_are_the_apis() {
        let plural = |w: Watched| w.api_resource().plural;
        assert_eq!(plural(Watched::HelmRelease), "helmreleases");
        assert_eq!(
            plural(Watched::Mesh(MeshKind::NetworkPolicy)),
            "networkpolicies"
        );
        assert_eq!(
            plural(Watched::Mesh(MeshKind::AuthorizationPolicy)),
            "authorizationpolicies"
        );
        assert_eq!(
            plural(Watched::Mesh(MeshKind::PeerAuthentication)),
            "peerauthentications"
        );
        assert_eq!(
            plural(Watched::Mesh(MeshKind::VirtualService)),
            "virtualservices"
        );
        assert_eq!(
            Watched::Mesh(MeshKind::VirtualService)
                .api_resource()
                .api_version,
            "networking.istio.io/v1"
        );
    }

    #[test]
    fn only_the_istio_kinds_are_optional() {
        let optional: Vec<_> = Watched::all()
            .into_iter()
            .filter(|w| w.optional())
            .collect();
        assert_eq!(
            optional,
            [
                Watched::Mesh(MeshKind::AuthorizationPolicy),
                Watched::Mesh(MeshKind::PeerAuthentication),
                Watched::Mesh(MeshKind::VirtualService)
            ]
        );
    }

    #[test]
    fn a_helm_release_keeps_what_render_reads() {
        let release = json!({
            "metadata": {"name": "web", "namespace": "apps", "uid": "u1", "resourceVersion": "7",
                "managedFields": [{"manager": "flux"}],
                "annotations": {"servicemesh.bigbang.dev/expose": "web"}},
            "spec": {"targetNamespace": "t", "chart": {"spec": {"chart": "web"}}, "values": {"big": 1}},
            "status": {"conditions": []},
        });
        let kept = Watched::HelmRelease.project(&release).unwrap();
        assert_eq!(
            kept,
            json!({
                "apiVersion": "helm.toolkit.fluxcd.io/v2", "kind": "HelmRelease",
                "metadata": {"name": "web", "namespace": "apps", "uid": "u1",
                    "annotations": {"servicemesh.bigbang.dev/expose": "web"}},
                "spec": {"targetNamespace": "t"},
            })
        );
        let plain = json!({"metadata": {"name": "db", "annotations": {"a": "b"}}});
        assert_eq!(Watched::HelmRelease.project(&plain), None);
    }

    #[test]
    fn owned_or_unannotated_pods_are_not_kept() {
        let annotated = json!({"servicemesh.bigbang.dev/permissivePorts": "8080"});
        let pod = json!({
            "metadata": {"name": "p", "annotations": annotated, "labels": {"app": "p"}},
            "spec": {"containers": [{"name": "c", "image": "x", "ports": [{"containerPort": 8080}]}]},
        });
        let kept = Watched::Pod.project(&pod).unwrap();
        assert_eq!(
            kept["spec"],
            json!({"containers": [{"name": "c", "ports": [{"containerPort": 8080}]}]})
        );
        let mut owned = pod.clone();
        owned["metadata"]["ownerReferences"] = json!([{"kind": "ReplicaSet"}]);
        assert_eq!(Watched::Pod.project(&owned), None);
        assert_eq!(
            Watched::Pod.project(&json!({"metadata": {"name": "q"}})),
            None
        );
    }

    #[test]
    fn generated_kinds_keep_spec_and_resource_version() {
        let object = json!({
            "metadata": {"name": "x", "namespace": "n", "resourceVersion": "12",
                "managedFields": [{}], "labels": {"a": "b"}},
            "spec": {"mtls": {"mode": "STRICT"}},
        });
        let kept = Watched::Mesh(MeshKind::PeerAuthentication)
            .project(&object)
            .unwrap();
        assert!(
            !is_compact(&kept),
            "someone else's object is kept as a Value"
        );
        assert_eq!(kept["metadata"]["resourceVersion"], "12");
        assert_eq!(kept["spec"], object["spec"]);
        assert!(kept["metadata"].get("managedFields").is_none());
    }

    #[test]
    fn our_generated_objects_are_kept_compact_and_read_back_whole() {
        let object = json!({
            "metadata": {"name": "x", "namespace": "n", "resourceVersion": "12", "uid": "u",
                "managedFields": [{}],
                "labels": {"app.kubernetes.io/managed-by": "mesh-admission", "mesh-admission/owner": "abc"},
                "annotations": {"mesh-admission/owner-ref": "core/Namespace//n"}},
            "spec": {"mtls": {"mode": "STRICT"}},
        });
        let kind = Watched::Mesh(MeshKind::PeerAuthentication);
        let kept = kind.project(&object).unwrap();
        assert!(is_compact(&kept));
        // The stores and the reconcile key, order and sort by these.
        assert_eq!(
            kept["metadata"],
            json!({"name": "x", "namespace": "n", "resourceVersion": "12"})
        );
        assert_eq!(kept["kind"], "PeerAuthentication");
        let whole = expand(&kept);
        let mut uncompacted = object.clone();
        uncompacted["metadata"]
            .as_object_mut()
            .unwrap()
            .remove("managedFields");
        uncompacted["apiVersion"] = json!("security.istio.io/v1");
        uncompacted["kind"] = json!("PeerAuthentication");
        assert_eq!(*whole, uncompacted);
        // Other kinds and foreign objects read back as they are.
        let plain = json!({"metadata": {"name": "y"}});
        assert!(matches!(expand(&plain), std::borrow::Cow::Borrowed(_)));
    }
}
