//! The nodes of the graph (DESIGN.md section 12, "Workloads"): every workload of the model as its
//! pod template, labelled as admission would store its pods, with its identity, its sidecar (the
//! webhook's own decision) and its declared TCP ports; every `mesh.gateways` entry; and `outside`.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;

use crate::config::{Config, Gateway};
use crate::model::core::PodTemplate;
use crate::model::{Labels, Model, Namespace, Workload};
use crate::policy::kinds;
use crate::policy::namespace::{ISTIO_REVISION_LABEL, stored_labels as stored_namespace_labels};
use crate::policy::pod::{self, INJECT_KEY, InjectChoice, Meshing};

/// The label the apiserver puts on every Namespace, which NetworkPolicies select namespaces by.
/// The node that stands for every client that is not a workload.
pub const OUTSIDE: &str = "outside";

/// What a node is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum NodeKind {
    /// A workload of the inputs (its kind is in [`Node::kind`]).
    Workload,
    /// An entry of `mesh.gateways`.
    Gateway,
    /// Any client that is not a workload.
    Outside,
}

/// A declared container port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodePort {
    pub port: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// One node of the graph, as the JSON output shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Node {
    /// `namespace/name` (a gateway: `namespace/<gateway name>`), or `outside`.
    #[serde(serialize_with = "super::verdict::name")]
    pub name: Arc<str>,
    /// Empty for `outside`.
    pub namespace: String,
    /// `Deployment`, `StatefulSet`, …, `Gateway` or `Outside`.
    pub kind: String,
    #[serde(skip)]
    pub node_kind: NodeKind,
    /// `<mesh.trustDomain>/ns/<namespace>/sa/<service account>`; none for `outside`.
    pub identity: Option<String>,
    pub sidecar: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service_account: Option<String>,
    /// The declared TCP container ports, by number.
    pub ports: Vec<NodePort>,
    /// The pods' labels as admission stores them.
    pub labels: Labels,
}

impl Node {
    pub fn is_outside(&self) -> bool {
        self.node_kind == NodeKind::Outside
    }

    /// The name of the container port `port`, if it has one.
    pub fn port_name(&self, port: u16) -> Option<&str> {
        self.ports
            .iter()
            .find(|p| p.port == port)
            .and_then(|p| p.name.as_deref())
    }

    /// Whether it declares a container port called `name` with number `port`.
    pub fn has_named_port(&self, name: &str, port: u16) -> bool {
        self.ports
            .iter()
            .any(|p| p.port == port && p.name.as_deref() == Some(name))
    }
}

/// The labels of every namespace the graph meets, as admission stores them.
#[derive(Debug, Default)]
pub struct NamespaceLabels(BTreeMap<String, Labels>);

impl NamespaceLabels {
    pub fn get(&self, namespace: &str) -> Option<&Labels> {
        self.0.get(namespace)
    }

    /// A namespace the inputs do not hold is taken as created bare (`kubectl create namespace`),
    /// through the webhook.
    fn ensure(&mut self, namespace: &str, cfg: &Config) {
        if !self.0.contains_key(namespace) {
            let labels = stored_namespace_labels(namespace, &Labels::default(), cfg);
            self.0.insert(namespace.to_owned(), labels);
        }
    }
}

/// Whether a pod of `template` in `namespace` gets a sidecar: it must reach the injector (the
/// webhook configuration's selectors, which are Istio's: a namespace labelled for injection or for a
/// revision unless the pod says `false`; an unlabelled one only when the pod's label says `true`),
/// and then the Pod table of section 4 must inject it ([`pod::meshing`], the webhook's own code).
pub fn has_sidecar(
    namespace: &str,
    namespace_labels: &Labels,
    template: &PodTemplate,
    cfg: &Config,
) -> bool {
    let pod_label = template.metadata.labels.get(INJECT_KEY);
    let reached = match namespace_labels.get(&cfg.namespace_label.key) {
        Some(value) => value == cfg.namespace_label.value && pod_label != Some("false"),
        None if namespace_labels.get(ISTIO_REVISION_LABEL).is_some() => pod_label != Some("false"),
        None => pod_label == Some("true"),
    };
    let choice = InjectChoice::from_values(pod_label, template.annotation(INJECT_KEY));
    let host_network = template.spec.host_network == Some(true);
    // The SPIRE opt-out does not take the sidecar away.
    reached && pod::meshing(namespace, host_network, choice, None, cfg) != Meshing::Untouched
}

/// A pod's labels as admission stores them: section 4's when it injects the pod.
fn stored_pod_labels(labels: &Labels, sidecar: bool, cfg: &Config) -> Labels {
    match sidecar {
        true => pod::stored_labels(labels, cfg),
        false => labels.clone(),
    }
}

/// The declared TCP ports of a template: its containers' and native sidecars' `containerPort`s
/// (protocol absent or TCP), each number once with its first name.
fn tcp_ports(template: &PodTemplate) -> Vec<NodePort> {
    let sidecars = template
        .spec
        .init_containers
        .iter()
        .filter(|c| c.restart_policy.as_deref() == Some("Always"));
    let mut ports: BTreeMap<u16, Option<String>> = BTreeMap::new();
    for port in template
        .spec
        .containers
        .iter()
        .chain(sidecars)
        .flat_map(|c| &c.ports)
    {
        let tcp = port.protocol.as_deref().is_none_or(|p| p == "TCP");
        let number = port.container_port.and_then(|n| u16::try_from(n).ok());
        if let (true, Some(number)) = (tcp, number.filter(|n| *n > 0)) {
            let entry = ports.entry(number).or_default();
            if entry.is_none() {
                *entry = port.name.clone();
            }
        }
    }
    ports
        .into_iter()
        .map(|(port, name)| NodePort { port, name })
        .collect()
}

/// Whether the graph shows a workload itself, or leaves it to its owner (section 12: ReplicaSets
/// without a Deployment owner, Pods without an owner, every other workload kind).
fn is_shown(workload: &Workload) -> bool {
    let owners = workload.metadata.owner_references.as_deref().unwrap_or(&[]);
    if *workload.kind == kinds::REPLICA_SET {
        !owners.iter().any(|o| o.kind == kinds::DEPLOYMENT.kind)
    } else if *workload.kind == kinds::POD {
        owners.is_empty()
    } else {
        true
    }
}

fn identity(cfg: &Config, namespace: &str, account: &str) -> String {
    format!("{}/ns/{namespace}/sa/{account}", cfg.mesh.trust_domain)
}

/// Every node of the model: workloads and gateways by name, then `outside`; and the namespaces'
/// labels.
pub fn nodes(model: &Model, cfg: &Config) -> (Vec<Node>, NamespaceLabels) {
    let mut namespaces = NamespaceLabels::default();
    for (key, namespace) in model.namespaces.iter() {
        let namespace: &Namespace = namespace;
        let labels = stored_namespace_labels(&key.name, &namespace.metadata.labels, cfg);
        namespaces.0.insert(key.name.clone(), labels);
    }
    let workloads: Vec<&Workload> = model
        .workloads
        .iter()
        .map(|(_, w)| &**w)
        .filter(|w| is_shown(w))
        .collect();
    for workload in &workloads {
        namespaces.ensure(workload.namespace(), cfg);
    }
    for gateway in &cfg.mesh.gateways {
        namespaces.ensure(&gateway.namespace, cfg);
    }

    let mut gateways: Vec<Node> = cfg.mesh.gateways.iter().map(|g| gateway(g, cfg)).collect();
    let mut nodes = Vec::new();
    let mut names: BTreeMap<(String, String), usize> = BTreeMap::new();
    for workload in &workloads {
        *names
            .entry((workload.namespace().to_owned(), workload.name().to_owned()))
            .or_default() += 1;
    }
    for workload in workloads {
        let namespace = workload.namespace();
        let empty = Labels::default();
        let namespace_labels = namespaces.get(namespace).unwrap_or(&empty);
        let template = &workload.template;
        let sidecar = has_sidecar(namespace, namespace_labels, template, cfg);
        let labels = stored_pod_labels(&template.metadata.labels, sidecar, cfg);
        let ports = tcp_ports(template);
        // A gateway's own Deployment is the gateway node: its ports are the gateway's.
        if let Some(gateway) = gateways.iter_mut().find(|g| {
            g.namespace == namespace && labels.contains_all(&g.labels) && !g.labels.is_empty()
        }) {
            for port in ports {
                if !gateway.ports.iter().any(|p| p.port == port.port) {
                    gateway.ports.push(port);
                }
            }
            gateway.ports.sort_by_key(|p| p.port);
            continue;
        }
        let clash = names
            .get(&(namespace.to_owned(), workload.name().to_owned()))
            .is_some_and(|n| *n > 1);
        let name = if clash {
            format!(
                "{namespace}/{}/{}",
                workload.kind.kind.to_ascii_lowercase(),
                workload.name()
            )
        } else {
            format!("{namespace}/{}", workload.name())
        };
        let account = template.service_account().to_owned();
        nodes.push(Node {
            name: Arc::from(name),
            namespace: namespace.to_owned(),
            kind: workload.kind.kind.to_owned(),
            node_kind: NodeKind::Workload,
            identity: Some(identity(cfg, namespace, &account)),
            sidecar,
            service_account: Some(account),
            ports,
            labels,
        });
    }
    nodes.extend(gateways);
    nodes.sort_by(|a, b| a.name.cmp(&b.name));
    nodes.push(Node {
        name: Arc::from(OUTSIDE),
        namespace: String::new(),
        kind: "Outside".to_owned(),
        node_kind: NodeKind::Outside,
        identity: None,
        sidecar: false,
        service_account: None,
        ports: Vec::new(),
        labels: Labels::default(),
    });
    (nodes, namespaces)
}

/// A `mesh.gateways` entry: a meshed workload with its selector as labels.
fn gateway(gateway: &Gateway, cfg: &Config) -> Node {
    let labels: Labels = (&gateway.selector).into();
    Node {
        name: Arc::from(format!("{}/{}", gateway.namespace, gateway.name)),
        namespace: gateway.namespace.clone(),
        kind: "Gateway".to_owned(),
        node_kind: NodeKind::Gateway,
        identity: Some(identity(cfg, &gateway.namespace, &gateway.service_account)),
        sidecar: true,
        service_account: Some(gateway.service_account.clone()),
        ports: Vec::new(),
        labels,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::webhook_config::{WebhookOptions, mutating};
    use serde_json::json;

    /// The injector's reach is the webhook configuration's: evaluate its pod webhooks' selectors
    /// (namespaceSelector over the namespace's labels, objectSelector over the pod's) and compare.
    #[test]
    fn the_sidecar_decision_follows_the_webhook_selectors_and_the_pod_table() {
        let cfg = Config::default();
        let options = WebhookOptions::new("mesh-admission", "mesh-system", &cfg);
        let config = mutating(&options);
        let webhooks: Vec<_> = config
            .webhooks
            .iter()
            .flatten()
            .filter(|w| w.name.contains("pods"))
            .collect();
        assert_eq!(webhooks.len(), 2);
        let selector =
            |s: &Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector>| {
                let value = serde_json::to_value(s).unwrap();
                serde_json::from_value::<Option<crate::model::LabelSelector>>(value)
                    .unwrap()
                    .unwrap_or_default()
            };
        let namespace_cases = [
            json!({}),
            json!({"istio-injection": "disabled"}),
            json!({"team": "a"}),
        ];
        let pod_cases = [
            json!({}),
            json!({"sidecar.istio.io/inject": "true"}),
            json!({"sidecar.istio.io/inject": "false"}),
        ];
        for (name, ns_labels) in [
            ("apps", &namespace_cases[0]),
            ("apps", &namespace_cases[1]),
            ("apps", &namespace_cases[2]),
            ("kube-system", &namespace_cases[0]),
        ] {
            let given: Labels = serde_json::from_value(ns_labels.clone()).unwrap();
            let stored = stored_namespace_labels(name, &given, &cfg);
            for pod_labels in &pod_cases {
                let template: PodTemplate =
                    serde_json::from_value(json!({"metadata": {"labels": pod_labels}})).unwrap();
                let reaches = webhooks.iter().any(|w| {
                    selector(&w.namespace_selector).matches(&stored)
                        && selector(&w.object_selector).matches(&template.metadata.labels)
                });
                assert_eq!(
                    has_sidecar(name, &stored, &template, &cfg),
                    reaches,
                    "namespace {name} {ns_labels}, pod {pod_labels}"
                );
            }
        }
    }

    #[test]
    fn admission_adds_the_mesh_labels_and_the_namespace_name() {
        let cfg = Config::default();
        let stored = stored_namespace_labels("apps", &Labels::default(), &cfg);
        assert_eq!(
            stored.get(crate::policy::namespace::NAMESPACE_NAME_LABEL),
            Some("apps")
        );
        assert_eq!(stored.get("istio-injection"), Some("enabled"));
        let pod = stored_pod_labels(&Labels::from([("app", "web")]), true, &cfg);
        assert_eq!(pod.get("spire-managed-identity"), Some("true"));
        assert_eq!(pod.get(INJECT_KEY), Some("true"));
        assert_eq!(stored_pod_labels(&Labels::default(), false, &cfg).len(), 0);
    }
}
