//! The case table of DESIGN.md section 12: each row a small manifest set
//! (`tests/fixtures/graph/<case>.yaml`, its header says what it shows) and the verdicts it must give.
//! The manifests are taken as they are (`--no-generated`), so each row shows one rule.
//!
//! An expectation reads `FROM -> TO:PORT | VERDICT DETAIL | BY | CONDITION`: DETAIL is the refusing
//! layer of a denied connection and the security (`mtls`/`plaintext`) of the others; BY lists
//! objects that must be among the deciding ones (`-`: none may be); CONDITION is a text the
//! conditions of a partial connection must contain.

use std::path::PathBuf;

use mesh_admission::config::Config;
use mesh_admission::graph::{Connection, Graph, Topology};
use mesh_admission::manifests::parse_objects;
use mesh_admission::model::Model;

struct Case {
    name: &'static str,
    config: &'static str,
    expect: &'static [&'static str],
}

const CASES: &[Case] = &[
    Case {
        name: "default-deny-plus-allow",
        config: "",
        expect: &[
            "apps/web -> apps/db:5432 | allowed plaintext | NetworkPolicy/apps/db-from-web",
            "apps/other -> apps/db:5432 | denied networkpolicy | NetworkPolicy/apps/default-deny, NetworkPolicy/apps/db-from-web",
            "apps/db -> apps/web:8080 | denied networkpolicy | NetworkPolicy/apps/default-deny",
            "outside -> apps/db:5432 | denied networkpolicy | NetworkPolicy/apps/default-deny",
        ],
    },
    Case {
        name: "one-peer-and-two-peers",
        config: "",
        expect: &[
            "team-a/admin -> data/db-and:5432 | allowed plaintext | NetworkPolicy/data/and",
            "team-a/client -> data/db-and:5432 | denied networkpolicy | NetworkPolicy/data/and",
            "team-b/admin -> data/db-and:5432 | denied networkpolicy | NetworkPolicy/data/and",
            "data/admin -> data/db-and:5432 | denied networkpolicy | NetworkPolicy/data/and",
            "team-a/admin -> data/db-or:5432 | allowed plaintext | NetworkPolicy/data/or",
            "team-a/client -> data/db-or:5432 | allowed plaintext | NetworkPolicy/data/or",
            "team-b/admin -> data/db-or:5432 | denied networkpolicy | NetworkPolicy/data/or",
            "data/admin -> data/db-or:5432 | allowed plaintext | NetworkPolicy/data/or",
        ],
    },
    Case {
        name: "exists-with-namespace-selector",
        config: "",
        expect: &[
            "team/tagged -> data/db:5432 | allowed plaintext | NetworkPolicy/data/db",
            "team/plain -> data/db:5432 | denied networkpolicy | NetworkPolicy/data/db",
        ],
    },
    Case {
        name: "named-ports-and-end-port",
        config: "",
        expect: &[
            "apps/client -> apps/server:8080 | allowed plaintext | NetworkPolicy/apps/server",
            "apps/client -> apps/server:7003 | allowed plaintext | NetworkPolicy/apps/server",
            "apps/client -> apps/server:7010 | denied networkpolicy | NetworkPolicy/apps/server",
            "apps/client -> apps/server:9090 | denied networkpolicy | NetworkPolicy/apps/server",
        ],
    },
    Case {
        name: "egress-isolation",
        config: "",
        expect: &[
            "apps/client -> apps/db:5432 | allowed plaintext | NetworkPolicy/apps/client-egress",
            "apps/client -> apps/db:5433 | denied networkpolicy | NetworkPolicy/apps/client-egress",
            "apps/client -> apps/web:8080 | denied networkpolicy | NetworkPolicy/apps/client-egress",
            "apps/web -> apps/db:5433 | allowed plaintext | -",
        ],
    },
    Case {
        name: "strict-unmeshed-client",
        config: "",
        expect: &[
            "shop/client -> shop/web:8080 | allowed mtls | PeerAuthentication/shop/default",
            "legacy/client -> shop/web:8080 | denied mtls | PeerAuthentication/shop/default",
            "shop/opted-out -> shop/web:8080 | denied mtls | PeerAuthentication/shop/default",
            "outside -> shop/web:8080 | denied mtls | PeerAuthentication/shop/default",
        ],
    },
    Case {
        name: "port-level-permissive",
        config: "",
        expect: &[
            "legacy/client -> shop/web:8080 | denied mtls | PeerAuthentication/shop/default",
            "legacy/client -> shop/web:8081 | allowed plaintext | PeerAuthentication/shop/web",
        ],
    },
    Case {
        name: "workload-disable",
        config: "",
        expect: &[
            "shop/web -> shop/db:5432 | denied mtls | PeerAuthentication/shop/db-disable",
            "legacy/client -> shop/db:5432 | allowed plaintext | PeerAuthentication/shop/db-disable",
        ],
    },
    Case {
        name: "workload-disable-with-destination-rule",
        config: "",
        expect: &[
            "shop/web -> shop/db:5432 | allowed plaintext | PeerAuthentication/shop/db-disable, DestinationRule/shop/db",
            "legacy/client -> shop/db:5432 | allowed plaintext | PeerAuthentication/shop/db-disable",
        ],
    },
    Case {
        name: "auto-mtls-root-namespace",
        config: "",
        expect: &[
            "shop/client -> shop/api:8080 | denied mtls | PeerAuthentication/shop/api-strict, PeerAuthentication/istio-system/default",
            "shop/client -> shop/web:8080 | allowed plaintext | PeerAuthentication/istio-system/default",
            // `UNSET` looks further, to the root.
            "shop/client -> open/app:9000 | allowed plaintext | PeerAuthentication/istio-system/default",
        ],
    },
    Case {
        name: "peer-authentication-precedence",
        config: "",
        expect: &[
            "legacy/client -> shop/api:8080 | denied mtls | PeerAuthentication/shop/api",
            "legacy/client -> shop/web:8080 | allowed plaintext | PeerAuthentication/shop/default",
            "legacy/client -> other/app:9000 | denied mtls | PeerAuthentication/istio-system/default",
            "legacy/client -> shop/db:5432 | denied mtls | PeerAuthentication/istio-system/db-strict",
            "shop/web -> shop/db:5432 | allowed mtls | PeerAuthentication/istio-system/db-strict",
        ],
    },
    Case {
        name: "root-namespace-authorization",
        config: "",
        expect: &[
            "a/web -> a/db:5432 | denied authorization | AuthorizationPolicy/istio-system/no-web-to-db",
            "a/web -> b/db:5432 | denied authorization | AuthorizationPolicy/istio-system/no-web-to-db",
            "a/web -> b/cache:6379 | denied authorization | AuthorizationPolicy/istio-system/no-port-6379-from-a",
            "b/db -> b/cache:6379 | allowed mtls | -",
        ],
    },
    Case {
        name: "deny-before-allow",
        config: "",
        expect: &[
            "shop/web -> shop/api:8080 | allowed mtls | AuthorizationPolicy/shop/allow-shop",
            "shop/intruder -> shop/api:8080 | denied authorization | AuthorizationPolicy/shop/deny-intruder",
            "other/stranger -> shop/api:8080 | denied authorization | AuthorizationPolicy/shop/allow-shop",
        ],
    },
    Case {
        name: "principals",
        config: "mesh: {trustDomain: example.org, trustDomainAliases: [old.example]}",
        expect: &[
            "shop/client -> shop/local:8080 | allowed mtls | AuthorizationPolicy/shop/local",
            "shop/client -> shop/alias:8080 | allowed mtls | AuthorizationPolicy/shop/alias",
            "shop/client -> shop/typo:8080 | denied authorization | AuthorizationPolicy/shop/typo",
        ],
    },
    Case {
        name: "namespaces-over-plaintext",
        config: "",
        expect: &[
            "legacy/meshed -> shop/api:8080 | allowed mtls | AuthorizationPolicy/shop/from-legacy",
            "legacy/bare -> shop/api:8080 | denied authorization | AuthorizationPolicy/shop/from-legacy",
            "legacy/bare -> shop/guarded:8080 | denied authorization | AuthorizationPolicy/shop/deny-plaintext",
            "legacy/meshed -> shop/guarded:8080 | allowed mtls | -",
        ],
    },
    Case {
        name: "l7-partial",
        config: "",
        expect: &[
            "shop/web -> shop/api:8080 | partial mtls | AuthorizationPolicy/shop/api-reads | methods [GET] and paths [/api/*]",
            // The port is known: 9090 matches no rule of the ALLOW-list.
            "shop/web -> shop/api:9090 | denied authorization | AuthorizationPolicy/shop/api-reads",
            "shop/web -> shop/admin:8080 | partial mtls | AuthorizationPolicy/shop/no-delete | denied when methods [DELETE]",
            "shop/web -> shop/admin:8080 | partial mtls | AuthorizationPolicy/shop/ext-authz | external authorizer opa when paths [/admin/*]",
        ],
    },
    Case {
        name: "gateway-and-outside",
        config: "",
        expect: &[
            "istio-system/public -> shop/web:8080 | allowed mtls | NetworkPolicy/shop/web",
            "shop/client -> shop/web:8080 | denied networkpolicy | NetworkPolicy/shop/web",
            "outside -> shop/web:8080 | partial plaintext | NetworkPolicy/shop/web | address in 10.0.0.0/8 except 10.1.0.0/16",
            "outside -> shop/public:8443 | allowed plaintext | NetworkPolicy/shop/public",
            "shop/client -> shop/public:8443 | denied networkpolicy | NetworkPolicy/shop/public",
        ],
    },
];

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("tests/fixtures/graph/{name}.yaml"))
}

/// The graph of a case's manifests, as they are.
fn case_graph(case: &Case) -> Graph {
    let text = std::fs::read_to_string(fixture(case.name)).unwrap();
    let objects = parse_objects(&text).unwrap();
    let model = Model::from_manifests(&objects);
    assert!(
        model.problems.is_empty(),
        "{}: {:?}",
        case.name,
        model.problems
    );
    let config = if case.config.is_empty() {
        Config::default()
    } else {
        Config::from_yaml(case.config).unwrap()
    };
    Topology::new(&model, &config).graph()
}

/// What is wrong with `connection` against one expectation, if anything.
fn mismatch(connection: &Connection, expect: &str) -> Option<String> {
    let parts: Vec<&str> = expect.split(" | ").collect();
    let mut verdict = parts[1].split(' ');
    let (want_verdict, detail) = (verdict.next().unwrap(), verdict.next().unwrap());
    let got_detail = match connection.layer {
        Some(layer) => layer.as_str(),
        None => connection.security.as_str(),
    };
    let mut wrong = Vec::new();
    if connection.verdict.as_str() != want_verdict || got_detail != detail {
        wrong.push(format!(
            "verdict {} {got_detail}",
            connection.verdict.as_str()
        ));
    }
    match parts.get(2).copied() {
        Some("-") if !connection.by.is_empty() => wrong.push("objects where none expected".into()),
        Some("-") | None => {}
        Some(objects) => {
            for object in objects.split(", ") {
                if !connection.by.iter().any(|b| &**b == object) {
                    wrong.push(format!("{object} not among the deciding objects"));
                }
            }
        }
    }
    if let Some(condition) = parts.get(3)
        && !connection.conditions.iter().any(|c| c.contains(condition))
    {
        wrong.push(format!("no condition containing {condition:?}"));
    }
    (!wrong.is_empty()).then(|| format!("{}; got {connection:?}", wrong.join("; ")))
}

#[test]
fn every_row_of_the_case_table_gives_its_verdicts() {
    let mut failures = Vec::new();
    for case in CASES {
        let graph = case_graph(case);
        for expect in case.expect {
            let (ends, _) = expect.split_once(" | ").unwrap();
            let (from, rest) = ends.split_once(" -> ").unwrap();
            let (to, port) = rest.rsplit_once(':').unwrap();
            let port: u16 = port.parse().unwrap();
            let found = graph
                .connections
                .iter()
                .find(|c| &*c.from == from && &*c.to == to && c.port == port);
            let problem = match found {
                None => Some("no such connection".to_owned()),
                Some(connection) => mismatch(connection, expect),
            };
            if let Some(problem) = problem {
                failures.push(format!("{}: {expect}\n    {problem}", case.name));
            }
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn every_fixture_is_a_row_of_the_table() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/graph");
    for entry in std::fs::read_dir(dir).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        let Some(case) = name.strip_suffix(".yaml") else {
            continue;
        };
        assert!(
            CASES.iter().any(|c| c.name == case) || ["shop", "seed-docs-workloads"].contains(&case),
            "{name} has no row in CASES"
        );
    }
}

#[test]
fn targeted_policies_are_listed_as_not_evaluated_and_decide_nothing() {
    let case = CASES.iter().find(|c| c.name == "l7-partial").unwrap();
    let graph = case_graph(case);
    let listed: Vec<&str> = graph.not_evaluated.iter().map(|n| &*n.object).collect();
    assert_eq!(listed, ["AuthorizationPolicy/shop/waypoint-only"]);
    assert!(graph.connections.iter().all(|c| {
        c.by.iter()
            .all(|b| &**b != "AuthorizationPolicy/shop/waypoint-only")
    }));
}

#[test]
fn workloads_carry_identity_and_sidecar() {
    let case = CASES.iter().find(|c| c.name == "principals").unwrap();
    let graph = case_graph(case);
    let client = graph
        .workloads
        .iter()
        .find(|w| &*w.name == "shop/client")
        .unwrap();
    assert_eq!(
        client.identity.as_deref(),
        Some("example.org/ns/shop/sa/client")
    );
    assert!(client.sidecar);
    let json = serde_json::to_value(&graph).unwrap();
    let first = &json["connections"][0];
    for field in ["from", "to", "port", "verdict", "security", "by"] {
        assert!(first.get(field).is_some(), "{field} missing in {first}");
    }
    assert!(json["workloads"][0].get("identity").is_some());
}
