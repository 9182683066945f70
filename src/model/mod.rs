//! The one model of the mesh (DESIGN.md section 1): every object the rules that read many objects at
//! once (`render`, and the controller through it) look at, each kind as a small typed struct holding
//! only the fields the rules read, indexed by namespace and by the labels workloads' pods carry.
//!
//! It is built from manifests by the offline commands ([`Model::from_manifests`]) or from the
//! controller's kube-runtime reflectors, which keep objects of these same types; the rules never know
//! which. Which type a kind is held as comes from the kinds table ([`with_type`]).

pub mod cluster;
pub mod core;
pub mod istio;
pub mod labels;
pub mod object;
pub mod ownership;
pub mod read;
pub mod reference;
pub mod selector;
pub mod spire;

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::Arc;

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

pub use self::core::{CronJob, HelmRelease, Namespace, Pod, Service, Templated, Workload};
pub use self::istio::{
    AuthorizationPolicy, DestinationRule, NetworkPolicy, PeerAuthentication, VirtualService,
};
pub use self::labels::Labels;
pub use self::object::{Metadata, Object, Served};
pub use self::reference::ObjectRef;
pub use self::selector::LabelSelector;
pub use self::spire::ClusterSpiffeId;
use crate::policy::kinds::{self, Kind, Modeled};

/// The model: every object the rules read, by kind.
#[derive(Debug, Clone, Default)]
pub struct Model {
    pub namespaces: Objects<Namespace>,
    pub helm_releases: Objects<HelmRelease>,
    pub services: Objects<Service>,
    /// Deployments, StatefulSets, DaemonSets, ReplicaSets, Jobs, CronJobs and Pods, each as its pod
    /// template.
    pub workloads: Objects<Workload>,
    pub network_policies: Objects<NetworkPolicy>,
    pub peer_authentications: Objects<PeerAuthentication>,
    pub authorization_policies: Objects<AuthorizationPolicy>,
    pub destination_rules: Objects<DestinationRule>,
    pub virtual_services: Objects<VirtualService>,
    pub cluster_spiffe_ids: Objects<ClusterSpiffeId>,
    /// Inputs that could not be taken in (manifests only: the API serves readable objects).
    pub problems: Vec<ReadProblem>,
    /// Workloads by `(namespace, label key, label value)` of their pods.
    workload_labels: BTreeMap<(String, String, String), Vec<Key>>,
}

/// An object's place in the model: namespace first, so that a namespace's objects are one range.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key {
    pub namespace: String,
    pub name: String,
    pub kind: &'static Kind,
}

/// The objects of one sort, by [`Key`].
#[derive(Debug, Clone)]
pub struct Objects<T> {
    by_key: BTreeMap<Key, Arc<T>>,
}

impl<T> Default for Objects<T> {
    fn default() -> Self {
        Objects {
            by_key: BTreeMap::new(),
        }
    }
}

impl<T> Objects<T> {
    pub fn get(&self, kind: &'static Kind, namespace: &str, name: &str) -> Option<&Arc<T>> {
        self.by_key.get(&Key {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            kind,
        })
    }

    /// Every object, by namespace, name and kind.
    pub fn iter(&self) -> impl Iterator<Item = (&Key, &Arc<T>)> {
        self.by_key.iter()
    }

    /// The objects of `namespace` (`""`: the cluster-scoped ones).
    pub fn in_namespace<'a>(
        &'a self,
        namespace: &'a str,
    ) -> impl Iterator<Item = (&'a Key, &'a Arc<T>)> + 'a {
        // No object has an empty name, so this key comes before the namespace's first one.
        let first = Key {
            namespace: namespace.to_owned(),
            name: String::new(),
            kind: &kinds::NAMESPACE,
        };
        self.by_key
            .range(first..)
            .take_while(move |(key, _)| key.namespace == namespace)
    }

    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }

    fn insert(&mut self, key: Key, object: Arc<T>) {
        self.by_key.insert(key, object);
    }
}

/// Why an input was left out of the model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadProblem {
    pub subject: ObjectRef,
    pub kind: &'static Kind,
    pub issue: ReadIssue,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadIssue {
    /// A field the model reads has the wrong type (`path: message`), or the name is missing.
    Unreadable(String),
    /// The same object twice with different content: which one is meant cannot be told.
    Duplicate,
}

impl Model {
    /// Adds an object of `kind` held as `T` (from a manifest or a reflector).
    pub fn add<T: Stored>(&mut self, kind: &'static Kind, object: Arc<T>) {
        T::add_to(object, kind, self);
    }

    fn add_workload(&mut self, workload: Workload) {
        let key = Key {
            namespace: workload.namespace().to_owned(),
            name: workload.name().to_owned(),
            kind: workload.kind,
        };
        for (label, value) in workload.template.metadata.labels.iter() {
            self.workload_labels
                .entry((key.namespace.clone(), label.to_owned(), value.to_owned()))
                .or_default()
                .push(key.clone());
        }
        self.workloads.insert(key, Arc::new(workload));
    }

    /// The workloads of `namespace` whose pods `selector` selects.
    pub fn workloads_selected<'a>(
        &'a self,
        namespace: &'a str,
        selector: &'a LabelSelector,
    ) -> Vec<&'a Arc<Workload>> {
        let selects = |w: &&Arc<Workload>| selector.matches(&w.template.metadata.labels);
        let candidates = selector
            .match_labels
            .as_ref()
            .and_then(|m| m.iter().next())
            .map(|(key, value)| self.labelled(namespace, key, value));
        match candidates {
            Some(candidates) => candidates.into_iter().filter(selects).collect(),
            None => self
                .workloads
                .in_namespace(namespace)
                .map(|(_, w)| w)
                .filter(selects)
                .collect(),
        }
    }

    /// The workloads of `namespace` whose pods carry the label `key: value`.
    pub fn labelled(&self, namespace: &str, key: &str, value: &str) -> Vec<&Arc<Workload>> {
        let index = (namespace.to_owned(), key.to_owned(), value.to_owned());
        self.workload_labels
            .get(&index)
            .into_iter()
            .flatten()
            .filter_map(|key| self.workloads.by_key.get(key))
            .collect()
    }

    /// The objects of `kind`, for the kinds held whole (all but workloads, which are held as
    /// their pod templates).
    pub fn collection(&self, kind: &'static Kind) -> Option<&dyn Collection> {
        Some(match kind.model? {
            Modeled::Namespace => &self.namespaces,
            Modeled::HelmRelease => &self.helm_releases,
            Modeled::Service => &self.services,
            Modeled::Workload => return None,
            Modeled::NetworkPolicy => &self.network_policies,
            Modeled::PeerAuthentication => &self.peer_authentications,
            Modeled::AuthorizationPolicy => &self.authorization_policies,
            Modeled::DestinationRule => &self.destination_rules,
            Modeled::VirtualService => &self.virtual_services,
            Modeled::ClusterSpiffeId => &self.cluster_spiffe_ids,
        })
    }

    /// The reference an Event on `subject` needs, when the model holds it; `api_version` gives the
    /// version its kind is served in.
    pub fn reference(
        &self,
        subject: &ObjectRef,
        api_version: impl Fn(&'static Kind) -> Option<String>,
    ) -> Option<ObjectReference> {
        let kind = kinds::find(&subject.group, &subject.kind)?;
        Some(ObjectReference {
            api_version: Some(api_version(kind)?),
            kind: Some(subject.kind.clone()),
            name: Some(subject.name.clone()),
            namespace: Some(subject.namespace.clone()).filter(|n| !n.is_empty()),
            uid: Some(self.uid(subject)?.to_owned()),
            ..ObjectReference::default()
        })
    }

    /// The uid of the object `subject` names, when the model holds it.
    pub fn uid(&self, subject: &ObjectRef) -> Option<&str> {
        let kind = kinds::find(&subject.group, &subject.kind)?;
        let meta = match kind.model? {
            Modeled::Workload => {
                &self
                    .workloads
                    .get(kind, &subject.namespace, &subject.name)?
                    .metadata
            }
            _ => {
                let collection = self.collection(kind)?;
                &collection
                    .metadata(kind, &subject.namespace, &subject.name)?
                    .identity
            }
        };
        meta.uid.as_deref()
    }
}

/// The objects of one kind held whole, whatever their spec: what the controller and the checks
/// that span kinds (someone else's object where ours would go) ask of them.
pub trait Collection {
    /// The `metadata` of the object of `kind` at `namespace/name`.
    fn metadata(&self, kind: &'static Kind, namespace: &str, name: &str) -> Option<&Metadata>;

    /// The key and `metadata` of every object of `kind`.
    fn all(&self, kind: &'static Kind) -> Box<dyn Iterator<Item = (&Key, &Metadata)> + '_>;

    /// The spec of the object of `kind` at `namespace/name`, as JSON.
    fn spec_json(&self, kind: &'static Kind, namespace: &str, name: &str) -> Option<Value>;
}

impl<S: Serialize> Collection for Objects<Object<S>> {
    fn metadata(&self, kind: &'static Kind, namespace: &str, name: &str) -> Option<&Metadata> {
        self.get(kind, namespace, name).map(|o| &o.metadata)
    }

    fn all(&self, kind: &'static Kind) -> Box<dyn Iterator<Item = (&Key, &Metadata)> + '_> {
        Box::new(
            self.iter()
                .filter(move |(key, _)| key.kind == kind)
                .map(|(key, o)| (key, &o.metadata)),
        )
    }

    fn spec_json(&self, kind: &'static Kind, namespace: &str, name: &str) -> Option<Value> {
        serde_json::to_value(&self.get(kind, namespace, name)?.spec).ok()
    }
}

/// A type the model holds objects as: read from a manifest, or kept by a reflector.
pub trait Stored:
    kube::Resource<DynamicType = Served>
    + DeserializeOwned
    + Clone
    + Debug
    + PartialEq
    + Send
    + Sync
    + 'static
{
    /// Drops what no rule reads, before the object is kept.
    fn trim(&mut self) {}

    /// Whether `render` reads anything of it: the controller keeps only those.
    fn rendered(&self) -> bool {
        true
    }

    /// Whether `other`, another version of the same object of `kind`, holds the same for the
    /// model. Only the generated kinds' resourceVersion is read (by the controller's plan); the
    /// others' changes on every write, their status's too.
    fn same_as(&self, other: &Self, kind: &Kind) -> bool {
        let mut other = other.clone();
        if kind.generated_version().is_none() {
            other.meta_mut().resource_version = self.meta().resource_version.clone();
        }
        *self == other
    }

    /// Puts it into the model as an object of `kind`.
    fn add_to(self: Arc<Self>, kind: &'static Kind, model: &mut Model);
}

/// Something done with the type a kind is held as.
pub trait KindVisitor {
    type Output;
    fn visit<T: Stored>(self, kind: &'static Kind) -> Self::Output;
}

/// Calls `visitor` with the type the model holds `kind` as; `None` for a kind outside the model.
pub fn with_type<V: KindVisitor>(kind: &'static Kind, visitor: V) -> Option<V::Output> {
    Some(match (kind.model?, kind.template) {
        (Modeled::Namespace, _) => visitor.visit::<Namespace>(kind),
        (Modeled::HelmRelease, _) => visitor.visit::<HelmRelease>(kind),
        (Modeled::Service, _) => visitor.visit::<Service>(kind),
        (Modeled::Workload, Some([])) => visitor.visit::<Pod>(kind),
        (Modeled::Workload, Some(["spec", "jobTemplate", ..])) => visitor.visit::<CronJob>(kind),
        (Modeled::Workload, _) => visitor.visit::<Templated>(kind),
        (Modeled::NetworkPolicy, _) => visitor.visit::<NetworkPolicy>(kind),
        (Modeled::PeerAuthentication, _) => visitor.visit::<PeerAuthentication>(kind),
        (Modeled::AuthorizationPolicy, _) => visitor.visit::<AuthorizationPolicy>(kind),
        (Modeled::DestinationRule, _) => visitor.visit::<DestinationRule>(kind),
        (Modeled::VirtualService, _) => visitor.visit::<VirtualService>(kind),
        (Modeled::ClusterSpiffeId, _) => visitor.visit::<ClusterSpiffeId>(kind),
    })
}

fn key_of<S>(object: &Object<S>, kind: &'static Kind) -> Key {
    Key {
        namespace: object.namespace().to_owned(),
        name: object.name().to_owned(),
        kind,
    }
}

/// The kinds held as they are read, into their collection.
macro_rules! stored_as_read {
    ($($type:ty => $field:ident),* $(,)?) => {$(
        impl Stored for $type {
            fn add_to(self: Arc<Self>, kind: &'static Kind, model: &mut Model) {
                model.$field.insert(key_of(&self, kind), self);
            }
        }
    )*};
}

stored_as_read! {
    Namespace => namespaces,
    Service => services,
    NetworkPolicy => network_policies,
    PeerAuthentication => peer_authentications,
    AuthorizationPolicy => authorization_policies,
    DestinationRule => destination_rules,
    VirtualService => virtual_services,
    ClusterSpiffeId => cluster_spiffe_ids,
}

impl Stored for HelmRelease {
    fn trim(&mut self) {
        self.keep_mesh_annotations();
    }

    fn rendered(&self) -> bool {
        core::has_mesh_annotation(&self.metadata.annotations)
    }

    fn add_to(self: Arc<Self>, kind: &'static Kind, model: &mut Model) {
        model.helm_releases.insert(key_of(&self, kind), self);
    }
}

/// `render` reads a workload only for the mesh annotations of its pods, and leaves one that
/// another object owns to its owner.
fn rendered_workload(meta: &ObjectMeta, template_annotations: &Labels) -> bool {
    let owned = meta
        .owner_references
        .as_ref()
        .is_some_and(|o| !o.is_empty());
    !owned && core::has_mesh_annotation(template_annotations)
}

impl Stored for Templated {
    fn rendered(&self) -> bool {
        let template = &self.spec.template;
        rendered_workload(&self.metadata.identity, &template.metadata.annotations)
    }

    fn add_to(self: Arc<Self>, kind: &'static Kind, model: &mut Model) {
        model.add_workload(Workload::of_templated(kind, &self));
    }
}

impl Stored for CronJob {
    fn rendered(&self) -> bool {
        let template = &self.spec.job_template.spec.template;
        rendered_workload(&self.metadata.identity, &template.metadata.annotations)
    }

    fn add_to(self: Arc<Self>, kind: &'static Kind, model: &mut Model) {
        model.add_workload(Workload::of_cron_job(kind, &self));
    }
}

impl Stored for Pod {
    fn rendered(&self) -> bool {
        rendered_workload(&self.metadata.identity, &self.metadata.annotations)
    }

    fn add_to(self: Arc<Self>, kind: &'static Kind, model: &mut Model) {
        model.add_workload(Workload::of_pod(kind, &self));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_kind_of_the_model_has_a_type_and_no_other() {
        struct Name;
        impl KindVisitor for Name {
            type Output = &'static str;
            fn visit<T: Stored>(self, _: &'static Kind) -> &'static str {
                std::any::type_name::<T>()
            }
        }
        for kind in kinds::KINDS {
            assert_eq!(
                with_type(kind, Name).is_some(),
                kind.model.is_some(),
                "{kind}"
            );
        }
        let cron = with_type(&kinds::CRON_JOB, Name).unwrap();
        assert!(cron.contains("CronJobSpec"), "{cron}");
    }

    #[test]
    fn workloads_are_found_by_namespace_and_by_the_labels_of_their_pods() {
        let model = Model::from_manifests(&[
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": "apps"},
                   "spec": {"template": {"metadata": {"labels": {"app": "web", "tier": "fe"}}}}}),
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "db", "namespace": "apps", "labels": {"app": "db"}}}),
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web", "namespace": "other", "labels": {"app": "web"}}}),
        ]);
        assert!(model.problems.is_empty(), "{:?}", model.problems);
        assert_eq!(model.workloads.in_namespace("apps").count(), 2);
        let names = |found: Vec<&Arc<Workload>>| {
            found
                .iter()
                .map(|w| format!("{} {}", w.kind, w.name()))
                .collect::<Vec<_>>()
        };
        let selector: LabelSelector =
            serde_json::from_value(json!({"matchLabels": {"app": "web"}})).unwrap();
        assert_eq!(
            names(model.workloads_selected("apps", &selector)),
            ["Deployment web"]
        );
        let expression: LabelSelector = serde_json::from_value(
            json!({"matchExpressions": [{"key": "app", "operator": "In", "values": ["db", "web"]}]}),
        )
        .unwrap();
        assert_eq!(
            names(model.workloads_selected("apps", &expression)),
            ["Pod db", "Deployment web"]
        );
        assert_eq!(names(model.labelled("other", "app", "web")), ["Pod web"]);
    }
}
