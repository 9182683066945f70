//! Who may talk to whom, and why (DESIGN.md section 12): a pure function from the model of the mesh
//! and the configuration to the graph of workloads and connections. Every connection (source
//! workload, destination workload, declared TCP port of the destination) is decided layer by layer
//! (NetworkPolicy, mTLS, AuthorizationPolicy); the first layer that refuses names the objects that
//! decide. No I/O here: `commands` reads the inputs and prints what [`output`] and [`picture`] make.

pub mod authorization;
pub mod mtls;
pub mod network;
pub mod nodes;
pub mod output;
pub mod picture;
pub mod verdict;

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;

pub use authorization::NotEvaluated;
pub use nodes::{Node, NodeKind, NodePort, OUTSIDE};
pub use verdict::{Layer, LayerDecision, Outcome, Security, Verdict};

use crate::config::Config;
use crate::model::{KindVisitor, Model, Stored, with_type};
use crate::policy::kinds::Kind;
use crate::policy::render;

/// The graph: every node, every connection, and the policies listed without being evaluated.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Graph {
    pub workloads: Vec<Node>,
    pub connections: Vec<Connection>,
    pub not_evaluated: Vec<NotEvaluated>,
}

/// One connection and its verdict.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Connection {
    #[serde(serialize_with = "verdict::name")]
    pub from: Arc<str>,
    #[serde(serialize_with = "verdict::name")]
    pub to: Arc<str>,
    pub port: u16,
    pub verdict: Verdict,
    pub security: Security,
    /// The layer that refuses (denied connections only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub layer: Option<Layer>,
    /// The deciding objects, `Kind/namespace/name`: for a denied connection the refusing layer's,
    /// otherwise every layer's.
    #[serde(serialize_with = "verdict::names")]
    pub by: Vec<Arc<str>>,
    /// For a partial connection: which requests (or source addresses) pass.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<String>,
}

/// Every layer's decision on one connection (`--explain`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Decision {
    pub connection: Connection,
    pub layers: Vec<LayerDecision>,
}

/// The model (with what `render` generates, unless asked not to) and the configuration, indexed
/// for deciding connections.
pub struct Topology<'m> {
    pub nodes: Vec<Node>,
    namespaces: nodes::NamespaceLabels,
    network: network::Policies<'m>,
    peers: mtls::Peers<'m>,
    authorization: authorization::Policies<'m>,
}

impl<'m> Topology<'m> {
    pub fn new(model: &'m Model, cfg: &'m Config) -> Self {
        let (nodes, namespaces) = nodes::nodes(model, cfg);
        let network = network::Policies::new(model, &nodes);
        let peers = mtls::Peers::new(model, &nodes, cfg);
        let authorization = authorization::Policies::new(model, &nodes, &cfg.mesh);
        Topology {
            nodes,
            namespaces,
            network,
            peers,
            authorization,
        }
    }

    /// The node called `name` (`namespace/name`, `namespace/<gateway>`, or `outside`).
    pub fn node(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|n| &*n.name == name)
    }

    /// Every layer's decision on `src` to `dst` on `port`.
    pub fn decide(&self, src: usize, dst: usize, port: u16, explain: bool) -> Decision {
        let nodes = &self.nodes;
        let network = self
            .network
            .decide(nodes, &self.namespaces, src, dst, port, explain);
        let (mtls, security) = self.peers.decide(nodes, src, dst, port, explain);
        let authorization = self
            .authorization
            .decide(nodes, src, dst, port, security, explain);
        let layers = vec![network, mtls, authorization];
        let refusing = layers.iter().find(|l| l.outcome == Outcome::Denied);
        let mut connection = Connection {
            from: nodes[src].name.clone(),
            to: nodes[dst].name.clone(),
            port,
            verdict: Verdict::Allowed,
            security,
            layer: None,
            by: Vec::new(),
            conditions: Vec::new(),
        };
        match refusing {
            Some(layer) => {
                connection.verdict = Verdict::Denied;
                connection.layer = Some(layer.layer);
                connection.by = layer.by.clone();
            }
            None => {
                for layer in &layers {
                    connection.by.extend(layer.by.iter().cloned());
                    if layer.outcome == Outcome::Partial {
                        connection.verdict = Verdict::Partial;
                        connection
                            .conditions
                            .extend(layer.conditions.iter().cloned());
                    }
                }
            }
        }
        connection.by.dedup();
        Decision { connection, layers }
    }

    /// Every connection, by source, destination and port.
    pub fn graph(&self) -> Graph {
        let ports: usize = self.nodes.iter().map(|n| n.ports.len()).sum();
        let mut connections = Vec::with_capacity(ports * self.nodes.len());
        for (src, _) in self.nodes.iter().enumerate() {
            for (dst, to) in self.nodes.iter().enumerate() {
                for port in &to.ports {
                    connections.push(self.decide(src, dst, port.port, false).connection);
                }
            }
        }
        Graph {
            workloads: self.nodes.clone(),
            connections,
            not_evaluated: self.authorization.not_evaluated(),
        }
    }

    /// The policies listed without being evaluated.
    pub fn not_evaluated(&self) -> Vec<NotEvaluated> {
        self.authorization.not_evaluated()
    }
}

impl Graph {
    /// Only the connections from nodes `from` selects to nodes `to` selects, and their nodes.
    pub fn filtered(mut self, from: Option<&str>, to: Option<&str>) -> Graph {
        if from.is_none() && to.is_none() {
            return self;
        }
        let keep = |filter: Option<&str>, node: &str| filter.is_none_or(|f| selects(f, node));
        self.connections
            .retain(|c| keep(from, &c.from) && keep(to, &c.to));
        let named: std::collections::BTreeSet<&str> = self
            .connections
            .iter()
            .flat_map(|c| [&*c.from, &*c.to])
            .collect();
        let workloads = self
            .workloads
            .iter()
            .filter(|n| named.contains(&*n.name))
            .cloned()
            .collect();
        self.workloads = workloads;
        self
    }
}

/// Whether a `--from`/`--to` filter (`NS` or `NS/NAME`, or `outside`) selects the node `name`.
pub fn selects(filter: &str, name: &str) -> bool {
    name == filter
        || name
            .strip_prefix(filter)
            .is_some_and(|rest| rest.starts_with('/') && !filter.contains('/'))
}

/// The graph of `model` as it is (no generated objects added).
pub fn graph(model: &Model, cfg: &Config) -> Graph {
    Topology::new(model, cfg).graph()
}

/// The model with the objects `render` generates for it put in, replacing objects of the same
/// kind, namespace and name (what the controller would apply over them).
pub fn with_generated(model: &Model, cfg: &Config) -> Model {
    let rendered = render::render(model, cfg);
    let mut model = model.clone();
    for object in &rendered.objects {
        let manifest = object.manifest();
        let adder = Add {
            value: &manifest,
            namespace: &object.namespace,
            model: &mut model,
        };
        with_type(object.kind, adder);
    }
    model
}

/// Puts one generated object into the model as the type its kind is held as.
struct Add<'a> {
    value: &'a serde_json::Value,
    namespace: &'a str,
    model: &'a mut Model,
}

impl KindVisitor for Add<'_> {
    type Output = ();

    fn visit<T: Stored>(self, kind: &'static Kind) {
        // Our own output, of our own types: it reads back (a spec that did not would be left out).
        if let Ok(mut object) = T::deserialize(self.value) {
            kube::Resource::meta_mut(&mut object).namespace = Some(self.namespace.to_owned());
            self.model.add(kind, Arc::new(object));
        }
    }
}

/// Connections whose verdict differs between two graphs, and those only one has.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct Changes {
    /// `(base, head)` of connections in both whose verdict changed.
    pub changed: Vec<(Connection, Connection)>,
    /// Connections only the head has (new workloads or ports).
    pub added: Vec<Connection>,
    /// Connections only the base has.
    pub removed: Vec<Connection>,
}

impl Changes {
    /// Whether some connection in both became more open (denied → partial or allowed, partial →
    /// allowed): CI asks for a second reviewer then.
    pub fn more_open(&self) -> bool {
        self.changed
            .iter()
            .any(|(base, head)| head.verdict > base.verdict)
    }
}

/// What changed from `base` to `head`.
pub fn diff(base: &Graph, head: &Graph) -> Changes {
    type Key = (Arc<str>, Arc<str>, u16);
    let key = |c: &Connection| -> Key { (c.from.clone(), c.to.clone(), c.port) };
    let base_map: BTreeMap<Key, &Connection> =
        base.connections.iter().map(|c| (key(c), c)).collect();
    let head_map: BTreeMap<Key, &Connection> =
        head.connections.iter().map(|c| (key(c), c)).collect();
    let mut changes = Changes::default();
    for (k, head) in &head_map {
        match base_map.get(k) {
            Some(base) if base.verdict != head.verdict => {
                changes.changed.push(((*base).clone(), (*head).clone()))
            }
            Some(_) => {}
            None => changes.added.push((*head).clone()),
        }
    }
    for (k, base) in &base_map {
        if !head_map.contains_key(k) {
            changes.removed.push((*base).clone());
        }
    }
    changes
}
