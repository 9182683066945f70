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

// ---------------------------------------------------------------------------------------------
// SVG

const NODE_HEIGHT: f64 = 26.0;
const NODE_GAP: f64 = 10.0;
const HEADER: f64 = 26.0;
const PADDING: f64 = 12.0;
const CHAR_WIDTH: f64 = 7.2;
/// Up to this many edges, each carries its ports as a label.
const MAX_LABELLED_EDGES: usize = 60;

/// Whether the picture draws an edge: allowed and partial ones, and denied ones refused after the
/// NetworkPolicy layer (traffic the network lets through that the mesh then refuses: the
/// surprising kind). Pairs the NetworkPolicies keep apart are the background and left out.
pub fn drawn(edge: &Edge, graph: &Graph) -> bool {
    edge.verdict != Verdict::Denied
        || graph.connections.iter().any(|c| {
            *c.from == *edge.from
                && *c.to == *edge.to
                && c.verdict == Verdict::Denied
                && c.layer != Some(super::verdict::Layer::Networkpolicy)
        })
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A namespace's box and its nodes' places, once laid out.
struct Cluster<'g> {
    name: &'g str,
    nodes: Vec<&'g super::Node>,
    width: f64,
    height: f64,
    x: f64,
    y: f64,
}

/// Where a node is drawn: its box's top left corner and width.
#[derive(Debug, Clone, Copy)]
struct Place {
    x: f64,
    y: f64,
    width: f64,
}

/// The namespaces' boxes, placed by layout-rs's layered layout over the edges between
/// namespaces; the nodes stacked inside each box.
fn clusters<'g>(graph: &'g Graph, edges: &[Edge]) -> (Vec<Cluster<'g>>, BTreeMap<&'g str, Place>) {
    use layout::backends::svg::SVGWriter;
    use layout::core::base::Orientation;
    use layout::core::geometry::Point;
    use layout::core::style::StyleAttr;
    use layout::std_shapes::shapes::{Arrow, Element, ShapeKind};
    use layout::topo::layout::VisualGraph;

    let mut groups: BTreeMap<&str, Vec<&super::Node>> = BTreeMap::new();
    for node in &graph.workloads {
        let group = if node.is_outside() {
            super::OUTSIDE
        } else {
            node.namespace.as_str()
        };
        groups.entry(group).or_default().push(node);
    }
    let mut clusters: Vec<Cluster<'g>> = groups
        .into_iter()
        .map(|(name, nodes)| {
            let widest = nodes
                .iter()
                .map(|n| short(n).chars().count())
                .chain([name.chars().count()])
                .max()
                .unwrap_or(0);
            let count = nodes.len() as f64;
            Cluster {
                name,
                width: widest as f64 * CHAR_WIDTH + 4.0 * PADDING,
                height: HEADER + count * (NODE_HEIGHT + NODE_GAP) + PADDING,
                nodes,
                x: 0.0,
                y: 0.0,
            }
        })
        .collect();
    let cluster_of: BTreeMap<&str, usize> = clusters
        .iter()
        .enumerate()
        .flat_map(|(i, c)| c.nodes.iter().map(move |n| (&*n.name, i)))
        .collect();

    let mut layered = VisualGraph::new(Orientation::LeftToRight);
    let handles: Vec<_> = clusters
        .iter()
        .map(|c| {
            let element = Element::create(
                ShapeKind::Box(String::new()),
                StyleAttr::simple(),
                Orientation::LeftToRight,
                Point::new(c.width, c.height),
            );
            layered.add_node(element)
        })
        .collect();
    let mut linked = std::collections::BTreeSet::new();
    for edge in edges {
        let (Some(&a), Some(&b)) = (
            cluster_of.get(edge.from.as_str()),
            cluster_of.get(edge.to.as_str()),
        ) else {
            continue;
        };
        if a != b && linked.insert((a, b)) {
            layered.add_edge(Arrow::simple(""), handles[a], handles[b]);
        }
    }
    if !clusters.is_empty() {
        // The layout's own drawing is not used: the boxes are drawn below, with their nodes.
        layered.do_it(false, false, false, &mut SVGWriter::new());
    }
    for (cluster, handle) in clusters.iter_mut().zip(&handles) {
        let (top_left, _) = layered.pos(*handle).bbox(false);
        cluster.x = top_left.x;
        cluster.y = top_left.y;
    }
    wrap_columns(&mut clusters);
    let mut places = BTreeMap::new();
    for cluster in &clusters {
        for (i, node) in cluster.nodes.iter().enumerate() {
            let y = cluster.y + HEADER + i as f64 * (NODE_HEIGHT + NODE_GAP);
            let width = cluster.width - 2.0 * PADDING;
            let place = Place {
                x: cluster.x + PADDING,
                y,
                width,
            };
            places.insert(&*node.name, place);
        }
    }
    (clusters, places)
}

/// Namespaces that no edge links end up in one column of the layered layout, one above the other:
/// when the picture is far taller than wide, its boxes are put in columns of about the height that
/// makes it square, in the layout's order (left to right, top to bottom).
fn wrap_columns(clusters: &mut [Cluster<'_>]) {
    const GAP: f64 = 40.0;
    let extent = |f: fn(&Cluster<'_>) -> (f64, f64)| {
        clusters
            .iter()
            .map(f)
            .fold((f64::INFINITY, 0.0_f64), |(lo, hi), (a, b)| {
                (lo.min(a), hi.max(b))
            })
    };
    let (top, bottom) = extent(|c| (c.y, c.y + c.height));
    let (left, right) = extent(|c| (c.x, c.x + c.width));
    if clusters.is_empty() || bottom - top <= 2.5 * (right - left) {
        return;
    }
    let area: f64 = clusters
        .iter()
        .map(|c| (c.width + GAP) * (c.height + GAP))
        .sum();
    let tallest = clusters.iter().map(|c| c.height).fold(0.0, f64::max);
    let limit = area.sqrt().max(tallest);
    let mut order: Vec<usize> = (0..clusters.len()).collect();
    order.sort_by(|a, b| {
        let (a, b) = (&clusters[*a], &clusters[*b]);
        (a.x, a.y)
            .partial_cmp(&(b.x, b.y))
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    let (mut x, mut y, mut column_width) = (left, top, 0.0_f64);
    for i in order {
        let cluster = &mut clusters[i];
        if y > top && y + cluster.height > top + limit {
            x += column_width + GAP;
            y = top;
            column_width = 0.0;
        }
        cluster.x = x;
        cluster.y = y;
        y += cluster.height + GAP;
        column_width = column_width.max(cluster.width + 2.0 * GAP);
    }
}

/// A node's label: its name without the namespace.
fn short(node: &super::Node) -> &str {
    node.name.rsplit('/').next().unwrap_or(&node.name)
}

/// The SVG picture: namespaces as boxes, nodes inside (dashed: no sidecar), edges coloured by
/// verdict, solid for mTLS and dashed for plaintext, labelled with their ports.
pub fn svg(graph: &Graph) -> String {
    let edges: Vec<Edge> = edges(graph)
        .into_iter()
        .filter(|e| drawn(e, graph))
        .collect();
    let (clusters, places) = clusters(graph, &edges);
    let min_x = clusters
        .iter()
        .map(|c| c.x)
        .fold(f64::INFINITY, f64::min)
        .min(0.0);
    let min_y = clusters
        .iter()
        .map(|c| c.y)
        .fold(f64::INFINITY, f64::min)
        .min(0.0);
    let max_x = clusters.iter().map(|c| c.x + c.width).fold(0.0, f64::max);
    let max_y = clusters.iter().map(|c| c.y + c.height).fold(0.0, f64::max);
    let margin = 60.0;
    let legend = 70.0;
    // Arcs within a namespace reach out of its box's right edge: room for them.
    let width = (max_x - min_x + 2.0 * margin + 100.0).max(640.0);
    let height = max_y - min_y + 2.0 * margin + legend;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width:.0}\" height=\"{height:.0}\" viewBox=\"{:.0} {:.0} {width:.0} {height:.0}\" font-family=\"sans-serif\" font-size=\"12\">",
        min_x - margin,
        min_y - margin
    );
    out.push_str("<defs>\n");
    for verdict in [Verdict::Allowed, Verdict::Partial, Verdict::Denied] {
        let _ = writeln!(
            out,
            "<marker id=\"arrow-{v}\" viewBox=\"0 0 10 10\" refX=\"10\" refY=\"5\" markerWidth=\"7\" markerHeight=\"7\" orient=\"auto-start-reverse\"><path d=\"M 0 0 L 10 5 L 0 10 z\" fill=\"{c}\"/></marker>",
            v = verdict.as_str(),
            c = colour(verdict)
        );
    }
    out.push_str("</defs>\n<g class=\"clusters\">\n");
    let labelled = edges.len() <= MAX_LABELLED_EDGES;
    for cluster in &clusters {
        let _ = writeln!(
            out,
            "<g class=\"namespace\" data-namespace=\"{n}\"><rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{w:.1}\" height=\"{h:.1}\" rx=\"8\" fill=\"#f5f7fa\" stroke=\"#90a4ae\"/><text x=\"{tx:.1}\" y=\"{ty:.1}\" font-weight=\"bold\" fill=\"#37474f\">{n}</text></g>",
            n = escape(cluster.name),
            x = cluster.x,
            y = cluster.y,
            w = cluster.width,
            h = cluster.height,
            tx = cluster.x + PADDING,
            ty = cluster.y + 17.0
        );
        for node in &cluster.nodes {
            let Some(&Place { x, y, width: w }) = places.get(&*node.name) else {
                continue;
            };
            let dash = if node.sidecar {
                ""
            } else {
                " stroke-dasharray=\"4 3\""
            };
            let identity = node.identity.as_deref().unwrap_or("no identity");
            let sidecar = if node.sidecar {
                "sidecar"
            } else {
                "no sidecar"
            };
            let _ = writeln!(
                out,
                "<g class=\"node\" data-node=\"{name}\"><title>{name} ({kind}, {sidecar}, {identity})</title><rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{w:.1}\" height=\"{NODE_HEIGHT}\" rx=\"5\" fill=\"#ffffff\" stroke=\"#455a64\"{dash}/><text x=\"{tx:.1}\" y=\"{ty:.1}\">{label}</text></g>",
                name = escape(&node.name),
                kind = escape(&node.kind),
                identity = escape(identity),
                tx = x + 8.0,
                ty = y + 17.0,
                label = escape(short(node)),
            );
        }
    }
    out.push_str("</g>\n<g class=\"edges\" fill=\"none\">\n");
    for edge in &edges {
        let (
            Some(&Place {
                x: fx,
                y: fy,
                width: fw,
            }),
            Some(&Place {
                x: tx,
                y: ty,
                width: tw,
            }),
        ) = (places.get(edge.from.as_str()), places.get(edge.to.as_str()))
        else {
            continue;
        };
        let mid = NODE_HEIGHT / 2.0;
        let (path, label_x, label_y) = if edge.from == edge.to {
            // A loop on the node's right side.
            let (x, y) = (fx + fw, fy + mid);
            (
                format!(
                    "M {x:.1} {:.1} C {:.1} {:.1}, {:.1} {:.1}, {x:.1} {:.1}",
                    y - 6.0,
                    x + 40.0,
                    y - 30.0,
                    x + 40.0,
                    y + 30.0,
                    y + 6.0
                ),
                x + 34.0,
                y,
            )
        } else if (fx - tx).abs() < 1.0 {
            // Within one namespace: an arc outside the box's right edge.
            let (sx, sy, ey) = (fx + fw, fy + mid, ty + mid);
            // Downward arcs reach further than upward ones, so that a pair's two arcs part.
            let down = if ey > sy { 16.0 } else { 0.0 };
            let reach = PADDING + 14.0 + down + (ey - sy).abs() / 4.0;
            (
                format!(
                    "M {sx:.1} {sy:.1} C {:.1} {sy:.1}, {:.1} {ey:.1}, {sx:.1} {ey:.1}",
                    sx + reach,
                    sx + reach
                ),
                sx + reach * 0.75 + 3.0,
                (sy + ey) / 2.0 + if ey > sy { 12.0 } else { -6.0 },
            )
        } else {
            let (sx, sy) = if tx >= fx + fw {
                (fx + fw, fy + mid)
            } else {
                (fx, fy + mid)
            };
            let (ex, ey) = if tx >= fx + fw {
                (tx, ty + mid)
            } else {
                (tx + tw, ty + mid)
            };
            let bend = ((ex - sx).abs() / 2.0).max(40.0);
            let (c1, c2) = if ex >= sx {
                (sx + bend, ex - bend)
            } else {
                (sx - bend, ex + bend)
            };
            (
                format!("M {sx:.1} {sy:.1} C {c1:.1} {sy:.1}, {c2:.1} {ey:.1}, {ex:.1} {ey:.1}"),
                (sx + ex) / 2.0,
                (sy + ey) / 2.0 - 4.0,
            )
        };
        let dash = match edge.security {
            Security::Mtls => "",
            Security::Plaintext => " stroke-dasharray=\"6 4\"",
        };
        let v = edge.verdict.as_str();
        // Past a few dozen edges the port labels only hide each other: the tooltip keeps them.
        let label = if labelled {
            format!(
                "<text x=\"{label_x:.1}\" y=\"{label_y:.1}\" font-size=\"10\" fill=\"{}\" stroke=\"none\">{}</text>",
                colour(edge.verdict),
                edge.label()
            )
        } else {
            String::new()
        };
        let _ = writeln!(
            out,
            "<g class=\"edge\" data-from=\"{f}\" data-to=\"{t}\" data-verdict=\"{v}\" data-security=\"{s}\"><title>{f} -> {t}: {p} {v} ({s})</title><path d=\"{path}\" stroke=\"{c}\" stroke-width=\"1.6\"{dash} marker-end=\"url(#arrow-{v})\"/>{label}</g>",
            f = escape(&edge.from),
            t = escape(&edge.to),
            s = edge.security.as_str(),
            p = edge.label(),
            c = colour(edge.verdict),
        );
    }
    out.push_str("</g>\n");
    let ly = max_y + 30.0;
    let lx = min_x;
    let _ = writeln!(
        out,
        "<g class=\"legend\" font-size=\"11\"><text x=\"{lx:.1}\" y=\"{ly:.1}\">edges: <tspan fill=\"{a}\">allowed</tspan>, <tspan fill=\"{p}\">partial</tspan>, <tspan fill=\"{d}\">denied after the NetworkPolicy layer</tspan>; solid mTLS, dashed plaintext.</text><text x=\"{lx:.1}\" y=\"{ly2:.1}\">Dashed box: no sidecar. Pairs the NetworkPolicies keep apart are not drawn.</text></g>",
        ly2 = ly + 16.0,
        a = colour(Verdict::Allowed),
        p = colour(Verdict::Partial),
        d = colour(Verdict::Denied),
    );
    out.push_str("</svg>\n");
    out
}

// ---------------------------------------------------------------------------------------------
// HTML

const STYLE: &str = "body{font-family:sans-serif;margin:1em;color:#263238}\
#controls{margin:.5em 0}#controls label{margin-right:1em}\
#picture{overflow:auto;border:1px solid #cfd8dc;max-height:70vh}\
#explanation{background:#eceff1;padding:.6em;white-space:pre-wrap;min-height:3em}\
table{border-collapse:collapse;font-size:13px}td,th{border-bottom:1px solid #eceff1;padding:2px 8px;text-align:left}\
tr.row{cursor:pointer}tr.row:hover{background:#e3f2fd}.allowed{color:#2e7d32}.partial{color:#ef6c00}.denied{color:#c62828}\
g.edge{cursor:pointer}.dim{opacity:.12}";

const SCRIPT: &str = r#"
const data = JSON.parse(document.getElementById('data').textContent);
const body = document.querySelector('#connections tbody');
const explanation = document.getElementById('explanation');
const filter = document.getElementById('filter');
const verdict = document.getElementById('verdict');
data.connections.forEach((c, i) => {
  const tr = document.createElement('tr');
  tr.className = 'row';
  tr.dataset.index = i;
  const cells = [c.from, c.to, String(c.port), c.verdict, c.security, c.layer || '', c.by.join(', '), (c.conditions || []).join('; ')];
  cells.forEach((text, j) => {
    const td = document.createElement('td');
    td.textContent = text;
    if (j === 3) td.className = c.verdict;
    tr.appendChild(td);
  });
  tr.addEventListener('click', () => { explanation.textContent = data.explanations[i]; });
  body.appendChild(tr);
});
function selected(name, text) { return text === '' || name.includes(text); }
function apply() {
  const text = filter.value.trim();
  const v = verdict.value;
  body.querySelectorAll('tr.row').forEach(tr => {
    const c = data.connections[tr.dataset.index];
    const show = (selected(c.from, text) || selected(c.to, text)) && (v === '' || c.verdict === v);
    tr.style.display = show ? '' : 'none';
  });
  document.querySelectorAll('g.edge').forEach(g => {
    const show = (selected(g.dataset.from, text) || selected(g.dataset.to, text)) && (v === '' || g.dataset.verdict === v);
    g.classList.toggle('dim', !show);
  });
  document.querySelectorAll('g.node').forEach(g => {
    g.classList.toggle('dim', !selected(g.dataset.node, text));
  });
}
filter.addEventListener('input', apply);
verdict.addEventListener('change', apply);
// A link to one connection: page.html#FROM->TO:PORT shows its explanation.
function linked() {
  const wanted = decodeURIComponent(location.hash.slice(1));
  data.connections.forEach((c, i) => {
    if (wanted === c.from + '->' + c.to + ':' + c.port) explanation.textContent = data.explanations[i];
  });
}
window.addEventListener('hashchange', linked);
linked();
document.querySelectorAll('g.edge').forEach(g => g.addEventListener('click', () => {
  const texts = [];
  data.connections.forEach((c, i) => {
    if (c.from === g.dataset.from && c.to === g.dataset.to) texts.push(data.explanations[i]);
  });
  explanation.textContent = texts.join('\n');
}));
"#;

/// One self-contained page (no network): the picture, a filter by namespace or workload and by
/// verdict, the table of every connection, and `explain`'s account of a connection on click (or
/// linked as `page.html#FROM->TO:PORT`).
pub fn html(graph: &Graph, explain: &dyn Fn(&Connection) -> String) -> String {
    let explanations: Vec<String> = graph.connections.iter().map(explain).collect();
    let data = serde_json::json!({
        "connections": graph.connections,
        "explanations": explanations,
    });
    // Inside <script>, `</` would end the element early.
    let data = data.to_string().replace("</", "<\\/");
    let mut out = String::from(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>mesh-admission graph</title>\n",
    );
    let _ = writeln!(out, "<style>{STYLE}</style>\n</head>\n<body>");
    let _ = writeln!(
        out,
        "<h1>Who may talk to whom</h1>\n<p>{} workloads, {} connections. Click an edge or a row for the explanation.</p>",
        graph.workloads.len(),
        graph.connections.len()
    );
    out.push_str("<div id=\"controls\"><label>Namespace or workload <input id=\"filter\" type=\"search\" placeholder=\"e.g. shop or shop/web\"></label><label>Verdict <select id=\"verdict\"><option value=\"\">any</option><option>allowed</option><option>partial</option><option>denied</option></select></label></div>\n");
    let _ = writeln!(out, "<div id=\"picture\">\n{}</div>", svg(graph));
    out.push_str(
        "<pre id=\"explanation\">Click a connection to see every layer's decision.</pre>\n",
    );
    out.push_str("<table id=\"connections\"><thead><tr><th>from</th><th>to</th><th>port</th><th>verdict</th><th>security</th><th>layer</th><th>by</th><th>conditions</th></tr></thead><tbody></tbody></table>\n");
    let _ = writeln!(
        out,
        "<script type=\"application/json\" id=\"data\">{data}</script>"
    );
    let _ = writeln!(out, "<script>{SCRIPT}</script>\n</body>\n</html>");
    out
}
