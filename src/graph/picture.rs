//! The graph as a picture: Graphviz `dot` text, an SVG laid out here (no Graphviz needed), and one
//! self-contained HTML page. Namespaces are clusters; edges are coloured by verdict (green allowed,
//! orange partial, red denied) and drawn solid for mTLS, dashed for plaintext.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::verdict::{Security, Verdict};
use super::{Connection, Graph};

/// The colour of a verdict's edges.
pub fn colour(verdict: Verdict) -> &'static str {
    match verdict {
        Verdict::Allowed => "#2e7d32",
        Verdict::Partial => "#ef6c00",
        Verdict::Denied => "#c62828",
    }
}

fn quoted(text: &str) -> String {
    format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
}

/// One edge per source, destination and verdict, its ports joined: what the picture shows.
pub fn edges(graph: &Graph) -> Vec<Edge> {
    let mut edges: BTreeMap<(&str, &str, Verdict, Security), Vec<u16>> = BTreeMap::new();
    for c in &graph.connections {
        edges
            .entry((&c.from, &c.to, c.verdict, c.security))
            .or_default()
            .push(c.port);
    }
    edges
        .into_iter()
        .map(|((from, to, verdict, security), ports)| Edge {
            from: from.to_owned(),
            to: to.to_owned(),
            verdict,
            security,
            ports,
        })
        .collect()
}

/// A drawn edge: the connections between two nodes with one verdict and security.
#[derive(Debug, Clone, PartialEq)]
pub struct Edge {
    pub from: String,
    pub to: String,
    pub verdict: Verdict,
    pub security: Security,
    pub ports: Vec<u16>,
}

impl Edge {
    pub fn label(&self) -> String {
        self.ports
            .iter()
            .map(u16::to_string)
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// Graphviz `dot`: a cluster per namespace.
pub fn dot(graph: &Graph) -> String {
    let mut text = String::from(
        "digraph mesh {\n  rankdir=LR;\n  node [shape=box, style=rounded, fontname=\"sans-serif\"];\n  edge [fontname=\"sans-serif\", fontsize=10];\n",
    );
    let mut namespaces: BTreeMap<&str, Vec<&super::Node>> = BTreeMap::new();
    for node in &graph.workloads {
        namespaces.entry(&node.namespace).or_default().push(node);
    }
    for (i, (namespace, nodes)) in namespaces.iter().enumerate() {
        let indent = if namespace.is_empty() { "  " } else { "    " };
        if !namespace.is_empty() {
            let _ = writeln!(
                text,
                "  subgraph cluster_{i} {{\n    label={};",
                quoted(namespace)
            );
        }
        for node in nodes {
            let shape = if node.is_outside() {
                ", shape=ellipse"
            } else {
                ""
            };
            let style = if node.sidecar {
                ""
            } else {
                ", style=\"rounded,dashed\""
            };
            let label = node.name.rsplit('/').next().unwrap_or(&node.name);
            let _ = writeln!(
                text,
                "{indent}{} [label={}{shape}{style}];",
                quoted(&node.name),
                quoted(label)
            );
        }
        if !namespace.is_empty() {
            text.push_str("  }\n");
        }
    }
    for edge in edges(graph) {
        let style = match edge.security {
            Security::Mtls => "solid",
            Security::Plaintext => "dashed",
        };
        let _ = writeln!(
            text,
            "  {} -> {} [label={}, color={}, style={style}];",
            quoted(&edge.from),
            quoted(&edge.to),
            quoted(&edge.label()),
            quoted(colour(edge.verdict))
        );
    }
    text.push_str("}\n");
    text
}

/// The connections of one node pair, for a tooltip or an explanation.
pub fn describe(connection: &Connection) -> String {
    let mut text = format!(
        "{} -> {}:{} {} ({})",
        connection.from,
        connection.to,
        connection.port,
        connection.verdict.as_str(),
        connection.security.as_str()
    );
    if let Some(layer) = connection.layer {
        let _ = write!(text, ", refused by {}", layer.as_str());
    }
    if !connection.by.is_empty() {
        let _ = write!(text, "; by {}", connection.by.join(", "));
    }
    for condition in &connection.conditions {
        let _ = write!(text, "; when {condition}");
    }
    text
}
