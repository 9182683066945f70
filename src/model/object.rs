//! One object of the model: its `metadata`, kept lean, and the part of its `spec` the rules read.
//! The same type is read from a manifest (the offline commands) and from the API (the controller's
//! reflectors, through [`kube::Resource`]), so the rules never know where it came from.
//!
//! Only the fields a rule reads are declared; serde skips everything else unread (a HelmRelease's
//! `values`, `managedFields`, `status`), which keeps a reflector's memory to what the rules need.

use std::borrow::Cow;
use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use kube::core::DynamicResourceScope;
use serde::{Deserialize, Deserializer};

use crate::policy::kinds::Kind;

pub use super::labels::Labels;

/// The annotation `kubectl apply` keeps the whole previous object in: never read, often the largest
/// field of an object.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// An object of the model: `metadata` and the part `S` of `spec` that the rules read.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
pub struct Object<S> {
    #[serde(default, deserialize_with = "lean_metadata")]
    pub metadata: Metadata,
    #[serde(
        default,
        deserialize_with = "or_default",
        bound(deserialize = "S: Deserialize<'de> + Default")
    )]
    pub spec: S,
}

/// `metadata` as the model keeps it: the identity (kube's `ObjectMeta`, which its reflectors key
/// objects by, holding name, namespace, uid, resourceVersion, owners and age only), and the labels
/// and annotations as small maps.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Metadata {
    pub identity: ObjectMeta,
    pub labels: Labels,
    pub annotations: Labels,
}

impl Metadata {
    pub fn name(&self) -> &str {
        self.identity.name.as_deref().unwrap_or_default()
    }

    pub fn namespace(&self) -> &str {
        self.identity.namespace.as_deref().unwrap_or_default()
    }

    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels.get(key)
    }

    pub fn annotation(&self, key: &str) -> Option<&str> {
        self.annotations.get(key)
    }
}

impl<S> Object<S> {
    pub fn name(&self) -> &str {
        self.metadata.name()
    }

    pub fn namespace(&self) -> &str {
        self.metadata.namespace()
    }

    pub fn label(&self, key: &str) -> Option<&str> {
        self.metadata.label(key)
    }

    pub fn annotation(&self, key: &str) -> Option<&str> {
        self.metadata.annotation(key)
    }
}

/// A part of an object that is not read at all (a Namespace's `spec`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Unread;

impl serde::Serialize for Unread {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_none()
    }
}

impl<'de> Deserialize<'de> for Unread {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        serde::de::IgnoredAny::deserialize(deserializer).map(|_| Unread)
    }
}

/// The kind an object is read as, and the version the API serves it in: what the reflectors key
/// their objects by (kube's dynamic type). The version is the served one, discovered for a
/// HelmRelease, and shared rather than copied into every key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Served {
    pub kind: &'static Kind,
    pub version: Arc<str>,
}

impl Served {
    pub fn new(kind: &'static Kind, version: &str) -> Self {
        Served {
            kind,
            version: Arc::from(version),
        }
    }

    /// `GROUP/VERSION`, or `VERSION` for the core group.
    pub fn api_version(&self) -> String {
        self.kind.api_version(&self.version)
    }
}

impl<S> kube::Resource for Object<S> {
    type DynamicType = Served;
    type Scope = DynamicResourceScope;

    fn kind(served: &Served) -> Cow<'_, str> {
        Cow::Borrowed(served.kind.kind)
    }

    fn group(served: &Served) -> Cow<'_, str> {
        Cow::Borrowed(served.kind.group)
    }

    fn version(served: &Served) -> Cow<'_, str> {
        Cow::Borrowed(&served.version)
    }

    fn plural(served: &Served) -> Cow<'_, str> {
        Cow::Borrowed(served.kind.resource)
    }

    fn meta(&self) -> &ObjectMeta {
        &self.metadata.identity
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata.identity
    }
}

/// `metadata` as the model keeps it: identity, labels, annotations (less kubectl's copy of the
/// last applied object), owners and age. `managedFields` and the rest are skipped unread.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct LeanMeta {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    uid: Option<String>,
    #[serde(default)]
    resource_version: Option<String>,
    #[serde(default)]
    labels: Option<Labels>,
    #[serde(default)]
    annotations: Option<Labels>,
    #[serde(default)]
    owner_references: Option<Vec<Owner>>,
    #[serde(default)]
    creation_timestamp: Option<String>,
}

/// An owner reference, lenient: a manifest in git may name only the owner's kind.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Owner {
    #[serde(default)]
    api_version: Option<String>,
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    uid: Option<String>,
    #[serde(default)]
    controller: Option<bool>,
}

fn lean_metadata<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Metadata, D::Error> {
    let Some(lean) = Option::<LeanMeta>::deserialize(deserializer)? else {
        return Ok(Metadata::default());
    };
    let annotations = lean.annotations.unwrap_or_default();
    let identity = ObjectMeta {
        name: lean.name,
        namespace: lean.namespace,
        uid: lean.uid,
        resource_version: lean.resource_version,
        owner_references: lean.owner_references.map(|owners| {
            owners
                .into_iter()
                .map(|o| OwnerReference {
                    api_version: o.api_version.unwrap_or_default(),
                    kind: o.kind.unwrap_or_default(),
                    name: o.name.unwrap_or_default(),
                    uid: o.uid.unwrap_or_default(),
                    controller: o.controller,
                    block_owner_deletion: None,
                })
                .collect()
        }),
        // A timestamp that does not parse (a hand-written manifest) counts as unknown.
        creation_timestamp: lean
            .creation_timestamp
            .and_then(|t| t.parse().ok())
            .map(Time),
        ..ObjectMeta::default()
    };
    Ok(Metadata {
        identity,
        labels: lean.labels.unwrap_or_default(),
        annotations: annotations.filtered(|key, _| key != LAST_APPLIED),
    })
}

/// Absent and `null` read as the default.
pub fn or_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn metadata_keeps_what_the_rules_read_and_nothing_else() {
        let object: Object<Unread> = serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "apps", "uid": "u", "resourceVersion": "7",
                "labels": {"a": "b"},
                "annotations": {"x": "y", LAST_APPLIED: "{\"huge\": true}"},
                "managedFields": [{"manager": "kubectl"}],
                "ownerReferences": [{"kind": "ReplicaSet"}],
                "creationTimestamp": "2024-01-02T03:04:05Z"},
            "spec": {"anything": [1, 2]},
            "status": {"replicas": 3},
        }))
        .unwrap();
        assert_eq!((object.name(), object.namespace()), ("web", "apps"));
        assert_eq!(object.label("a"), Some("b"));
        assert_eq!(object.metadata.annotations, Labels::from([("x", "y")]));
        let identity = &object.metadata.identity;
        assert!(identity.managed_fields.is_none() && identity.labels.is_none());
        assert_eq!(
            identity.owner_references.as_ref().unwrap()[0].kind,
            "ReplicaSet"
        );
        assert!(identity.creation_timestamp.is_some());
    }

    #[test]
    fn null_metadata_and_spec_read_as_empty() {
        let object: Object<Unread> =
            serde_json::from_value(json!({"metadata": null, "spec": null})).unwrap();
        assert_eq!(object.metadata, Metadata::default());
    }

    #[test]
    fn a_field_of_the_wrong_type_is_an_error() {
        let error =
            serde_json::from_value::<Object<Unread>>(json!({"metadata": {"labels": ["a"]}}))
                .unwrap_err();
        assert!(error.to_string().contains("expected a map"), "{error}");
    }
}
