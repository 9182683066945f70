//! `graph` against IBM's network-config-analyzer (`nca --connectivity`, PyPI
//! `network-config-analyzer`, pinned in `hack/install-tools.sh`) on the case table's NetworkPolicy-only
//! and NetworkPolicy + AuthorizationPolicy sets. Both are asked, per pair of workloads of the input
//! and per declared TCP port of the destination, whether a connection is possible; every place where
//! they differ must be a row of [`KNOWN`], which names the section 12 rule (or the nca defect) that
//! explains it. A new difference, or a known one that went away, fails the test.
//!
//! Compared are the workloads of the input only: nca has no `mesh.gateways` and no `outside` node,
//! and leaves out a workload's connections to itself.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use mesh_admission::config::Config;
use mesh_admission::graph::{Graph, NodeKind, Topology, Verdict};
use mesh_admission::manifests::parse_objects;
use mesh_admission::model::Model;
use testkit::process::{TOOLS_HINT, tool};

/// NetworkPolicy-only sets: the two must agree but for nca's own defects.
const NETWORK_ONLY: &[&str] = &[
    "default-deny-plus-allow",
    "one-peer-and-two-peers",
    "named-ports-and-end-port",
    "egress-isolation",
    "exists-with-namespace-selector",
];

/// Sets with AuthorizationPolicies (and PeerAuthentications, which nca does not read).
const WITH_AUTHORIZATION: &[&str] = &["shop", "deny-before-allow", "namespaces-over-plaintext"];

/// Every expected difference: `case: FROM -> TO:PORT ours=VERDICT nca=VERDICT`, and why.
const KNOWN: &[(&str, &str)] = &[
    (
        "exists-with-namespace-selector: team/tagged -> data/db:5432 ours=allowed nca=denied",
        "nca 2.1.0 never matches a peer whose podSelector uses Exists/DoesNotExist together with a \
         namespaceSelector; section 12 layer 1: both selectors of one peer must match, and they do",
    ),
    (
        "shop: legacy/batch -> shop/web:8080 ours=denied nca=allowed",
        "section 12 layer 2 (mTLS): a client without a sidecar sends plaintext, which the STRICT \
         PeerAuthentication shop/default refuses; nca reads no PeerAuthentication",
    ),
    (
        "namespaces-over-plaintext: legacy/bare -> shop/api:8080 ours=denied nca=allowed",
        "section 12 layer 3: `namespaces` needs an mtls connection, and a pod without a sidecar sends \
         plaintext; nca lets a pod without a sidecar through a namespace or principal rule",
    ),
    (
        "namespaces-over-plaintext: legacy/bare -> shop/guarded:8080 ours=denied nca=allowed",
        "section 12 layer 3: a DENY with notPrincipals [\"*\"] matches the connections without an \
         identity (plaintext), as Istio documents; nca does not know which pods have no sidecar",
    ),
];

fn fixture(name: &str) -> String {
    format!(
        "{}/tests/fixtures/graph/{name}.yaml",
        env!("CARGO_MANIFEST_DIR")
    )
}

/// Our graph of a case, as written (`--no-generated`).
fn ours(case: &str) -> Graph {
    let text = std::fs::read_to_string(fixture(case)).unwrap();
    let model = Model::from_manifests(&parse_objects(&text).unwrap());
    assert!(model.problems.is_empty(), "{case}: {:?}", model.problems);
    let config = Config::default();
    Topology::new(&model, &config).graph()
}

/// The TCP ports a connection text of nca's allows, `None` meaning all, and whether it has
/// request conditions (methods, paths…), which make it partial.
#[derive(Debug, Clone, Default)]
struct Allowed {
    all: bool,
    ports: BTreeSet<u16>,
    partial: bool,
}

impl Allowed {
    fn add(&mut self, text: &str) {
        if text.trim() == "All connections" {
            self.all = true;
            return;
        }
        // `{protocols:TCP,dst_ports:7000-7005,8080}`, possibly several groups.
        for group in text
            .split('}')
            .map(|g| g.trim_start_matches([',', ';', ' ', '{']))
        {
            if group.is_empty() {
                continue;
            }
            let mut protocols: Option<Vec<&str>> = None;
            let mut ports: Option<BTreeSet<u16>> = None;
            let mut key = "";
            for item in group.split(',') {
                let value = match item.split_once(':') {
                    Some((k, v)) => {
                        key = k.trim();
                        v.trim()
                    }
                    None => item.trim(),
                };
                match key {
                    "protocols" => protocols.get_or_insert_with(Vec::new).push(value),
                    "dst_ports" => {
                        let set = ports.get_or_insert_with(BTreeSet::new);
                        match value.split_once('-') {
                            Some((a, b)) => {
                                let (a, b): (u16, u16) = (a.parse().unwrap(), b.parse().unwrap());
                                set.extend(a..=b);
                            }
                            None => {
                                set.insert(value.parse().unwrap());
                            }
                        }
                    }
                    _ => self.partial = true,
                }
            }
            let tcp = protocols.is_none_or(|p| p.contains(&"TCP"));
            if tcp {
                match ports {
                    None => self.all = true,
                    Some(ports) => self.ports.extend(ports),
                }
            }
        }
    }

    fn verdict(&self, port: u16) -> &'static str {
        match (self.all || self.ports.contains(&port), self.partial) {
            (false, _) => "denied",
            (true, true) => "partial",
            (true, false) => "allowed",
        }
    }
}

/// nca's answer for a case: per `(from, to)` pair of workloads, what it allows.
fn nca(case: &str) -> BTreeMap<(String, String), Allowed> {
    let nca = tool(".tools/bin/nca", TOOLS_HINT);
    let file = fixture(case);
    let output = Command::new(&nca)
        .args(["--connectivity", &file, "--resource_list", &file])
        .args(["--output_format", "txt_no_fw_rules"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() || output.status.code() == Some(0),
        "nca on {case}: {}\n{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mut allowed: BTreeMap<(String, String), Allowed> = BTreeMap::new();
    let mut section_tcp = true;
    for line in stdout.lines() {
        if line.starts_with("non-TCP Connections") {
            section_tcp = false;
        } else if line.starts_with("TCP Connections") {
            section_tcp = true;
        }
        let Some((ends, connection)) = line.split_once(" : ") else {
            continue;
        };
        let Some((from, to)) = ends.split_once(" => ") else {
            continue;
        };
        let workload = |end: &str| end.split_once('[').map(|(name, _)| name.to_owned());
        if let (true, Some(from), Some(to)) = (section_tcp, workload(from), workload(to)) {
            allowed.entry((from, to)).or_default().add(connection);
        }
    }
    assert!(
        !allowed.is_empty() || stdout.contains("=>"),
        "nca on {case} printed:\n{stdout}"
    );
    allowed
}

/// Where our graph and nca's differ, in [`KNOWN`]'s words.
fn differences(case: &str) -> Vec<String> {
    let graph = ours(case);
    let answers = nca(case);
    let workloads: BTreeSet<&str> = graph
        .workloads
        .iter()
        .filter(|w| w.node_kind == NodeKind::Workload)
        .map(|w| &*w.name)
        .collect();
    let mut found = Vec::new();
    for c in &graph.connections {
        if c.from == c.to || !workloads.contains(&*c.from) || !workloads.contains(&*c.to) {
            continue;
        }
        let key = (c.from.to_string(), c.to.to_string());
        let theirs = answers.get(&key).map_or("denied", |a| a.verdict(c.port));
        let mine = match c.verdict {
            Verdict::Denied => "denied",
            // nca cannot tell a partial L7 rule from a whole one on every request, but it marks
            // method and path conditions: compare what each says about the connection itself.
            Verdict::Partial if theirs == "allowed" => "allowed",
            Verdict::Partial => "partial",
            Verdict::Allowed => "allowed",
        };
        if mine != theirs {
            found.push(format!(
                "{case}: {} -> {}:{} ours={mine} nca={theirs}",
                c.from, c.to, c.port
            ));
        }
    }
    found
}

#[test]
fn graph_and_nca_agree_but_where_a_section_12_rule_says_why() {
    let mut found = Vec::new();
    for case in NETWORK_ONLY.iter().chain(WITH_AUTHORIZATION) {
        found.extend(differences(case));
    }
    let known: Vec<&str> = KNOWN.iter().map(|(d, _)| *d).collect();
    let unexplained: Vec<&String> = found
        .iter()
        .filter(|d| !known.contains(&d.as_str()))
        .collect();
    let gone: Vec<&&str> = known
        .iter()
        .filter(|k| !found.iter().any(|d| d == *k))
        .collect();
    assert!(
        unexplained.is_empty() && gone.is_empty(),
        "differences no rule explains: {unexplained:#?}\nknown differences no longer found: {gone:#?}"
    );
}

#[test]
fn on_network_policies_alone_only_nca_defects_differ() {
    for case in NETWORK_ONLY {
        for difference in differences(case) {
            let why = KNOWN
                .iter()
                .find(|(d, _)| *d == difference)
                .map_or("", |(_, why)| why);
            assert!(why.starts_with("nca "), "{difference}: {why}");
        }
    }
}
