//! The generated objects, one small function per kind (DESIGN.md section 9, "What is generated"):
//! what each one holds, its name, and the labels and annotation that say who owns it.

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::Resource;
use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPeer,
    NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::{Value, json};

use crate::config::{Gateway, MeshConfig};

/// The label every generated object carries, with [`MANAGED_BY_VALUE`].
pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY_VALUE: &str = "mesh-admission";
/// The label that finds an owner's objects (for pruning): 16 hex digits of the owner's SHA-256.
pub const OWNER_LABEL: &str = "mesh-admission/owner";
/// The annotation that names the owner in full.
pub const OWNER_ANNOTATION: &str = "mesh-admission/owner-ref";
/// The label the apiserver puts on every Namespace, which a NetworkPolicy selects namespaces by.
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// The most characters a generated name may have, and what a longer one is cut to before its suffix.
pub const MAX_NAME_CHARS: usize = 63;
const CUT_NAME_CHARS: usize = 54;

/// The kinds `render` generates, in output order (sorted by kind).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum MeshKind {
    AuthorizationPolicy,
    NetworkPolicy,
    PeerAuthentication,
    VirtualService,
}

impl MeshKind {
    pub const ALL: [MeshKind; 4] = [
        MeshKind::AuthorizationPolicy,
        MeshKind::NetworkPolicy,
        MeshKind::PeerAuthentication,
        MeshKind::VirtualService,
    ];

    pub fn group(self) -> &'static str {
        match self {
            MeshKind::AuthorizationPolicy | MeshKind::PeerAuthentication => "security.istio.io",
            MeshKind::NetworkPolicy => NetworkPolicy::GROUP,
            MeshKind::VirtualService => "networking.istio.io",
        }
    }

    pub fn kind(self) -> &'static str {
        match self {
            MeshKind::AuthorizationPolicy => "AuthorizationPolicy",
            MeshKind::NetworkPolicy => NetworkPolicy::KIND,
            MeshKind::PeerAuthentication => "PeerAuthentication",
            MeshKind::VirtualService => "VirtualService",
        }
    }

    /// The version generated (the Istio kinds' `v1`, GA since Istio 1.22).
    pub fn api_version(self) -> &'static str {
        match self {
            MeshKind::NetworkPolicy => NetworkPolicy::API_VERSION,
            MeshKind::AuthorizationPolicy | MeshKind::PeerAuthentication => "security.istio.io/v1",
            MeshKind::VirtualService => "networking.istio.io/v1",
        }
    }

    /// The kind of an input object of this group and kind, in any version.
    pub fn of(group: &str, kind: &str) -> Option<MeshKind> {
        MeshKind::ALL
            .into_iter()
            .find(|k| k.group() == group && k.kind() == kind)
    }
}

impl fmt::Display for MeshKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.kind())
    }
}

/// An object `render` reads or names: group (`""` for core), kind, namespace (`""` when cluster
/// scoped) and name. Ordered, so that every result is sorted the same whatever the input order.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectRef {
    pub group: String,
    pub kind: String,
    pub namespace: String,
    pub name: String,
}

impl ObjectRef {
    pub fn new(group: &str, kind: &str, namespace: &str, name: &str) -> Self {
        ObjectRef {
            group: group.to_owned(),
            kind: kind.to_owned(),
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        }
    }

    /// The Namespace `name`, which owns the objects shared by a namespace.
    pub fn namespace(name: &str) -> Self {
        ObjectRef::new("", "Namespace", "", name)
    }

    /// `GROUP/KIND/NAMESPACE/NAME`, `core` for the core group: the owner annotation's value.
    pub fn owner_ref(&self) -> String {
        let group = if self.group.is_empty() {
            "core"
        } else {
            &self.group
        };
        format!("{group}/{}/{}/{}", self.kind, self.namespace, self.name)
    }

    /// The owner label's value: the first 16 hex digits of the SHA-256 of [`ObjectRef::owner_ref`].
    pub fn owner_label(&self) -> String {
        sha256_hex(&self.owner_ref(), 16)
    }
}

/// `Kind namespace/name` (`Kind name` when cluster scoped), as kubectl names objects.
impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace.is_empty() {
            write!(f, "{} {}", self.kind, self.name)
        } else {
            write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
        }
    }
}

/// The first `digits` hex digits of the SHA-256 of `text`.
fn sha256_hex(text: &str, digits: usize) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
    let mut hex: String = digest
        .as_ref()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    hex.truncate(digits);
    hex
}

/// A generated name: as is up to 63 characters; longer ones are cut to 54 and suffixed with `-` and
/// the first 8 hex digits of the SHA-256 of the full name, so two long names stay distinct.
pub fn object_name(full: &str) -> String {
    if full.chars().count() <= MAX_NAME_CHARS {
        return full.to_owned();
    }
    let head: String = full.chars().take(CUT_NAME_CHARS).collect();
    format!("{head}-{}", sha256_hex(full, 8))
}

/// One generated object, with what it is keyed and sorted by.
#[derive(Debug, Clone, PartialEq)]
pub struct MeshObject {
    pub kind: MeshKind,
    pub namespace: String,
    pub name: String,
    pub owner: ObjectRef,
    /// The whole manifest: apiVersion, kind, metadata and spec.
    pub manifest: Manifest,
}

impl MeshObject {
    fn new(kind: MeshKind, namespace: &str, name: &str, owner: &ObjectRef, spec: Value) -> Self {
        let name = object_name(name);
        let manifest = json!({
            "apiVersion": kind.api_version(),
            "kind": kind.kind(),
            "metadata": metadata(namespace, &name, owner),
            "spec": spec,
        });
        MeshObject {
            kind,
            namespace: namespace.to_owned(),
            name,
            owner: owner.clone(),
            manifest: Manifest::of(&manifest),
        }
    }

    /// What two owners must not both write: kind, namespace and name.
    pub fn key(&self) -> (MeshKind, &str, &str) {
        (self.kind, &self.namespace, &self.name)
    }
}

/// A generated manifest, held as its compact JSON text. As a `serde_json::Value` every JSON object
/// in it is a B-tree node of 640 bytes however few keys it has, so a VirtualService took about
/// 9 KiB and a cluster's worth of them (the controller renders thousands at once) tens of MiB;
/// as text it is a few hundred bytes. Maps serialize with sorted keys, so equal manifests have
/// equal text.
#[derive(Clone, PartialEq, Eq)]
pub struct Manifest(Box<str>);

impl Manifest {
    fn of(value: &Value) -> Self {
        Manifest(value.to_string().into_boxed_str())
    }

    /// The manifest as a JSON value, parsed anew on each call.
    pub fn value(&self) -> Value {
        // Our own serialization of a `Value`: it parses.
        serde_json::from_str(&self.0).unwrap_or(Value::Null)
    }
}

impl fmt::Debug for Manifest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl serde::Serialize for Manifest {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.value().serialize(serializer)
    }
}

fn metadata(namespace: &str, name: &str, owner: &ObjectRef) -> Value {
    json!({
        "name": name,
        "namespace": namespace,
        "labels": {MANAGED_BY: MANAGED_BY_VALUE, OWNER_LABEL: owner.owner_label()},
        "annotations": {OWNER_ANNOTATION: owner.owner_ref()},
    })
}

/// What a HelmRelease's route annotations say, once valid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The Service in the target namespace.
    pub expose: String,
    pub host: String,
    pub port: u16,
}

/// The Service port a route reaches, and the selector of the Service's pods.
#[derive(Debug, Clone, PartialEq)]
pub struct Backend {
    pub selector: BTreeMap<String, String>,
    /// The Service port's `targetPort` (a number or a container port's name), `port` when absent.
    pub target_port: IntOrString,
    pub protocol: String,
}

/// VirtualService `H-ingress`: the host under `mesh.domain`, bound to every selected gateway, one
/// HTTP route to the Service's port.
pub fn virtual_service(
    owner: &ObjectRef,
    target: &str,
    route: &Route,
    gateways: &[&Gateway],
    mesh: &MeshConfig,
) -> MeshObject {
    let spec = json!({
        "hosts": [host_name(route, mesh)],
        "gateways": gateways.iter().map(|g| format!("{}/{}", g.namespace, g.name)).collect::<Vec<_>>(),
        "http": [{"route": [{"destination": {
            "host": format!("{}.{target}.svc.cluster.local", route.expose),
            "port": {"number": route.port},
        }}]}],
    });
    MeshObject::new(
        MeshKind::VirtualService,
        target,
        &format!("{}-ingress", owner.name),
        owner,
        spec,
    )
}

/// The VirtualService's host: `<host>.<mesh.domain>`.
pub fn host_name(route: &Route, mesh: &MeshConfig) -> String {
    format!("{}.{}", route.host, mesh.domain)
}

/// NetworkPolicy `H-ingress-<gateway>`: the gateway's pods may reach the Service's pods on the
/// Service port's target port (the container port: the Service port itself is never seen by a pod).
pub fn gateway_ingress_policy(
    owner: &ObjectRef,
    target: &str,
    backend: &Backend,
    gateway: &Gateway,
) -> MeshObject {
    let spec = NetworkPolicySpec {
        pod_selector: Some(match_labels(&backend.selector)),
        policy_types: Some(vec!["Ingress".into()]),
        ingress: Some(vec![NetworkPolicyIngressRule {
            from: Some(vec![peer(&gateway.namespace, &gateway.selector)]),
            ports: Some(vec![NetworkPolicyPort {
                port: Some(backend.target_port.clone()),
                protocol: Some(backend.protocol.clone()),
                ..Default::default()
            }]),
        }]),
        ..Default::default()
    };
    MeshObject::new(
        MeshKind::NetworkPolicy,
        target,
        &format!("{}-ingress-{}", owner.name, gateway.name),
        owner,
        network_policy_spec(spec),
    )
}

/// AuthorizationPolicy `H-ingress-<gateway>`: ALLOW the gateway's SPIFFE principal to the Service's pods.
pub fn gateway_authorization_policy(
    owner: &ObjectRef,
    target: &str,
    backend: &Backend,
    gateway: &Gateway,
    mesh: &MeshConfig,
) -> MeshObject {
    let principal = format!(
        "{}/ns/{}/sa/{}",
        mesh.trust_domain, gateway.namespace, gateway.service_account
    );
    let spec = json!({
        "action": "ALLOW",
        "selector": {"matchLabels": backend.selector},
        "rules": [{"from": [{"source": {"principals": [principal]}}]}],
    });
    MeshObject::new(
        MeshKind::AuthorizationPolicy,
        target,
        &format!("{}-ingress-{}", owner.name, gateway.name),
        owner,
        spec,
    )
}

/// PeerAuthentication `default` of a namespace: namespace-wide, owned by the namespace.
pub fn namespace_peer_authentication(namespace: &str, mode: &str) -> MeshObject {
    MeshObject::new(
        MeshKind::PeerAuthentication,
        namespace,
        "default",
        &ObjectRef::namespace(namespace),
        json!({"mtls": {"mode": mode}}),
    )
}

/// PeerAuthentication `<workload>-permissive-ports`: PERMISSIVE on each listed port of the
/// workload's pods, the rest inheriting the namespace's mode (no `mtls`).
pub fn permissive_ports_peer_authentication(
    owner: &ObjectRef,
    selector: &BTreeMap<String, String>,
    ports: &[u16],
) -> MeshObject {
    let port_level: serde_json::Map<String, Value> = ports
        .iter()
        .map(|port| (port.to_string(), json!({"mode": "PERMISSIVE"})))
        .collect();
    MeshObject::new(
        MeshKind::PeerAuthentication,
        &owner.namespace,
        &format!("{}-permissive-ports", owner.name),
        owner,
        json!({"selector": {"matchLabels": selector}, "portLevelMtls": port_level}),
    )
}

/// NetworkPolicy `allow-egress-istiod`: every pod of a meshed namespace may reach istiod (its
/// sidecar fetches configuration and certificates there).
pub fn istiod_egress_policy(namespace: &str, mesh: &MeshConfig) -> MeshObject {
    let istiod = &mesh.istiod;
    let spec = NetworkPolicySpec {
        pod_selector: Some(LabelSelector::default()),
        policy_types: Some(vec!["Egress".into()]),
        egress: Some(vec![NetworkPolicyEgressRule {
            to: Some(vec![peer(&istiod.namespace, &istiod.selector)]),
            ports: Some(
                istiod
                    .ports
                    .iter()
                    .map(|port| NetworkPolicyPort {
                        port: Some(IntOrString::Int(i32::from(*port))),
                        protocol: Some("TCP".into()),
                        ..Default::default()
                    })
                    .collect(),
            ),
        }]),
        ..Default::default()
    };
    MeshObject::new(
        MeshKind::NetworkPolicy,
        namespace,
        "allow-egress-istiod",
        &ObjectRef::namespace(namespace),
        network_policy_spec(spec),
    )
}

/// Pods matching `selector` in the namespace `namespace`.
fn peer(namespace: &str, selector: &BTreeMap<String, String>) -> NetworkPolicyPeer {
    NetworkPolicyPeer {
        namespace_selector: Some(match_labels(&BTreeMap::from([(
            NAMESPACE_NAME_LABEL.to_owned(),
            namespace.to_owned(),
        )]))),
        pod_selector: Some(match_labels(selector)),
        ..Default::default()
    }
}

fn match_labels(labels: &BTreeMap<String, String>) -> LabelSelector {
    LabelSelector {
        match_labels: Some(labels.clone()),
        ..Default::default()
    }
}

/// The spec through k8s-openapi's own type, so its shape is the Kubernetes API's.
fn network_policy_spec(spec: NetworkPolicySpec) -> Value {
    // Serializing a k8s-openapi struct into a Value cannot fail (string keys, no custom errors).
    serde_json::to_value(spec).unwrap_or(Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manifest_reads_and_serializes_back_as_the_value_it_was_made_of() {
        let value =
            json!({"apiVersion": "v1", "kind": "X", "spec": {"b": [1, "two", null], "a": {}}});
        let manifest = Manifest::of(&value);
        assert_eq!(manifest.value(), value);
        assert_eq!(serde_json::to_value(&manifest).unwrap(), value);
        assert_eq!(
            yaml_serde::to_string(&manifest).unwrap(),
            yaml_serde::to_string(&value).unwrap()
        );
        // Keys come out sorted, so the same content is the same text whatever the build order.
        let reordered =
            json!({"spec": {"a": {}, "b": [1, "two", null]}, "kind": "X", "apiVersion": "v1"});
        assert_eq!(Manifest::of(&reordered), manifest);
        assert_ne!(Manifest::of(&json!({"kind": "Y"})), manifest);
    }
}
