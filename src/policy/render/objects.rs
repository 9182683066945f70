//! The generated objects, one small function per kind (DESIGN.md section 9, "What is generated"):
//! what each one holds and its name. Their specs are the model's own types, so what `render` wants
//! and what the cluster holds compare field by field.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::Serialize;
use serde_json::{Value, json};

use crate::config::{Gateway, MeshConfig};
use crate::model::istio::{
    AuthorizationPolicySpec, Destination, Mtls, NetworkPolicyPeer, NetworkPolicyPort,
    NetworkPolicyRule, NetworkPolicySpec, PeerAuthenticationSpec, PortSelector, Route as RouteRule,
    RouteDestination, Rule, RuleFrom, Source, VirtualServiceSpec, WorkloadSelector,
};
use crate::model::ownership::{self, sha256_hex};
use crate::model::{LabelSelector, Labels, ObjectRef};
use crate::policy::kinds::{self, Kind};
use crate::policy::namespace::NAMESPACE_NAME_LABEL;

/// The most characters a generated name may have, and what a longer one is cut to before its suffix.
pub const MAX_NAME_CHARS: usize = 63;
const CUT_NAME_CHARS: usize = 54;

/// A generated name: as is up to 63 characters; longer ones are cut to 54 and suffixed with `-` and
/// the first 8 hex digits of the SHA-256 of the full name, so two long names stay distinct.
pub fn object_name(full: &str) -> String {
    if full.chars().count() <= MAX_NAME_CHARS {
        return full.to_owned();
    }
    let head: String = full.chars().take(CUT_NAME_CHARS).collect();
    format!("{head}-{}", sha256_hex(full, 8))
}

/// A generated spec, whatever its kind: written out as JSON.
pub trait Spec: fmt::Debug + Send + Sync {
    fn to_json(&self) -> Value;
}

impl<T: Serialize + fmt::Debug + Send + Sync> Spec for T {
    fn to_json(&self) -> Value {
        // Our own types and k8s-openapi's: they serialize (string keys, no custom errors).
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

/// One generated object: kind, name, owner and spec. Its labels and annotation follow from the
/// owner ([`ownership::marks`]).
#[derive(Debug, Clone)]
pub struct MeshObject {
    pub kind: &'static Kind,
    pub namespace: String,
    pub name: String,
    pub owner: ObjectRef,
    pub spec: Arc<dyn Spec>,
}

impl MeshObject {
    fn new(
        kind: &'static Kind,
        namespace: &str,
        name: &str,
        owner: &ObjectRef,
        spec: impl Spec + 'static,
    ) -> Self {
        MeshObject {
            kind,
            namespace: namespace.to_owned(),
            name: object_name(name),
            owner: owner.clone(),
            spec: Arc::new(spec),
        }
    }

    /// What two owners must not both write: kind, namespace and name.
    pub fn key(&self) -> (&'static Kind, &str, &str) {
        (self.kind, &self.namespace, &self.name)
    }

    /// The whole manifest: apiVersion, kind, metadata and spec.
    pub fn manifest(&self) -> Value {
        let (labels, annotations) = ownership::marks(&self.owner);
        let version = self.kind.generated_version().unwrap_or("v1");
        json!({
            "apiVersion": self.kind.api_version(version),
            "kind": self.kind.kind,
            "metadata": {
                "name": self.name,
                "namespace": self.namespace,
                "labels": labels,
                "annotations": annotations,
            },
            "spec": self.spec.to_json(),
        })
    }
}

impl PartialEq for MeshObject {
    fn eq(&self, other: &Self) -> bool {
        (self.kind, &self.namespace, &self.name, &self.owner)
            == (other.kind, &other.namespace, &other.name, &other.owner)
            && self.spec.to_json() == other.spec.to_json()
    }
}

impl Serialize for MeshObject {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.manifest().serialize(serializer)
    }
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
    pub selector: Labels,
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
    let destination = Destination {
        host: Some(format!("{}.{target}.svc.cluster.local", route.expose)),
        port: Some(PortSelector {
            number: Some(u32::from(route.port)),
        }),
        ..Destination::default()
    };
    let spec = VirtualServiceSpec {
        hosts: Some(vec![host_name(route, mesh)]),
        gateways: Some(
            gateways
                .iter()
                .map(|g| format!("{}/{}", g.namespace, g.name))
                .collect(),
        ),
        http: Some(vec![RouteRule {
            route: Some(vec![RouteDestination {
                destination: Some(destination),
                weight: None,
            }]),
        }]),
        ..VirtualServiceSpec::default()
    };
    MeshObject::new(
        &kinds::VIRTUAL_SERVICE,
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
        pod_selector: Some(LabelSelector::labels(&backend.selector)),
        policy_types: Some(vec!["Ingress".into()]),
        ingress: Some(vec![NetworkPolicyRule {
            from: Some(vec![peer(&gateway.namespace, &gateway.selector)]),
            to: None,
            ports: Some(vec![NetworkPolicyPort {
                port: Some(backend.target_port.clone()),
                protocol: Some(backend.protocol.clone()),
                ..Default::default()
            }]),
        }]),
        ..Default::default()
    };
    MeshObject::new(
        &kinds::NETWORK_POLICY,
        target,
        &format!("{}-ingress-{}", owner.name, gateway.name),
        owner,
        spec,
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
    let spec = AuthorizationPolicySpec {
        action: Some("ALLOW".into()),
        selector: Some(WorkloadSelector::labels(&backend.selector)),
        rules: Some(vec![Rule {
            from: Some(vec![RuleFrom {
                source: Some(Source {
                    principals: Some(vec![principal]),
                    ..Source::default()
                }),
            }]),
            ..Rule::default()
        }]),
        ..AuthorizationPolicySpec::default()
    };
    MeshObject::new(
        &kinds::AUTHORIZATION_POLICY,
        target,
        &format!("{}-ingress-{}", owner.name, gateway.name),
        owner,
        spec,
    )
}

/// PeerAuthentication `default` of a namespace: namespace-wide, owned by the namespace.
pub fn namespace_peer_authentication(namespace: &str, mode: &str) -> MeshObject {
    let spec = PeerAuthenticationSpec {
        mtls: Some(Mtls::mode(mode)),
        ..PeerAuthenticationSpec::default()
    };
    MeshObject::new(
        &kinds::PEER_AUTHENTICATION,
        namespace,
        "default",
        &ObjectRef::namespace(namespace),
        spec,
    )
}

/// PeerAuthentication `<workload>-permissive-ports`: PERMISSIVE on each listed port of the
/// workload's pods, the rest inheriting the namespace's mode (no `mtls`).
pub fn permissive_ports_peer_authentication(
    owner: &ObjectRef,
    selector: &Labels,
    ports: &[u16],
) -> MeshObject {
    let port_level: BTreeMap<String, Mtls> = ports
        .iter()
        .map(|port| (port.to_string(), Mtls::mode("PERMISSIVE")))
        .collect();
    let spec = PeerAuthenticationSpec {
        selector: Some(WorkloadSelector::labels(selector)),
        port_level_mtls: Some(port_level),
        ..PeerAuthenticationSpec::default()
    };
    MeshObject::new(
        &kinds::PEER_AUTHENTICATION,
        &owner.namespace,
        &format!("{}-permissive-ports", owner.name),
        owner,
        spec,
    )
}

/// NetworkPolicy `allow-egress-istiod`: every pod of a meshed namespace may reach istiod (its
/// sidecar fetches configuration and certificates there).
pub fn istiod_egress_policy(namespace: &str, mesh: &MeshConfig) -> MeshObject {
    let istiod = &mesh.istiod;
    let spec = NetworkPolicySpec {
        pod_selector: Some(LabelSelector::default()),
        policy_types: Some(vec!["Egress".into()]),
        egress: Some(vec![NetworkPolicyRule {
            to: Some(vec![peer(&istiod.namespace, &istiod.selector)]),
            from: None,
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
        &kinds::NETWORK_POLICY,
        namespace,
        "allow-egress-istiod",
        &ObjectRef::namespace(namespace),
        spec,
    )
}

/// Pods matching `selector` in the namespace `namespace`.
fn peer(namespace: &str, selector: &BTreeMap<String, String>) -> NetworkPolicyPeer {
    let namespace = Labels::from([(NAMESPACE_NAME_LABEL, namespace)]);
    NetworkPolicyPeer {
        namespace_selector: Some(LabelSelector::labels(&namespace)),
        pod_selector: Some(LabelSelector::labels(&Labels::from(selector))),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manifest_is_its_kind_metadata_and_spec() {
        let object = namespace_peer_authentication("apps", "STRICT");
        assert_eq!(
            object.manifest(),
            json!({
                "apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
                "metadata": {"name": "default", "namespace": "apps",
                    "labels": {"app.kubernetes.io/managed-by": "mesh-admission", "mesh-admission/owner": "d2c729823bd88508"},
                    "annotations": {"mesh-admission/owner-ref": "core/Namespace//apps"}},
                "spec": {"mtls": {"mode": "STRICT"}},
            })
        );
        assert_eq!(serde_json::to_value(&object).unwrap(), object.manifest());
        assert_eq!(object, namespace_peer_authentication("apps", "STRICT"));
        assert_ne!(object, namespace_peer_authentication("apps", "PERMISSIVE"));
    }
}
