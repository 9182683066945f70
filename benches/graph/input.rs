//! The synthetic mesh of the `graph` benchmark (DESIGN.md section 12): `namespaces` namespaces of
//! `per_namespace` Deployments each (tiers web, api and db; one or two ports), two NetworkPolicies
//! and two AuthorizationPolicies per workload, a STRICT PeerAuthentication per namespace and a
//! PERMISSIVE port on every db. Shared by `benches/graph.rs` and `examples/graph_input.rs` (which
//! prints it for `hack/bench-graph.sh`, the command and nca).

use serde_json::{Value, json};

const TIERS: [&str; 3] = ["web", "api", "db"];

/// The objects, namespaces first.
pub fn objects(namespaces: usize, per_namespace: usize) -> Vec<Value> {
    let mut objects = Vec::new();
    for n in 0..namespaces {
        let ns = format!("team-{n}");
        let next = format!("team-{}", (n + 1) % namespaces);
        objects.push(json!({"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": ns, "labels": {"team": format!("t{}", n % 5), "istio-injection": "enabled"}}}));
        objects.push(json!({"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
            "metadata": {"name": "default", "namespace": ns}, "spec": {"mtls": {"mode": "STRICT"}}}));
        for w in 0..per_namespace {
            let tier = TIERS[w % TIERS.len()];
            let app = format!("app-{w}");
            let mut ports = vec![json!({"name": "http", "containerPort": 8080})];
            if w % 2 == 0 {
                ports.push(json!({"name": "metrics", "containerPort": 9090}));
            }
            objects.push(json!({"apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": app, "namespace": ns},
                "spec": {"selector": {"matchLabels": {"app": app}}, "template": {
                    "metadata": {"labels": {"app": app, "tier": tier}},
                    "spec": {"serviceAccountName": app, "containers": [{"name": "main", "image": "example/app:1", "ports": ports}]}}}}));
            // NetworkPolicies: from the tier in front of it in its own namespace, and from the
            // namespaces of the same team (one peer: namespace AND pods).
            let front = TIERS[(w + TIERS.len() - 1) % TIERS.len()];
            objects.push(json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                "metadata": {"name": format!("{app}-from-{front}"), "namespace": ns},
                "spec": {"podSelector": {"matchLabels": {"app": app}}, "policyTypes": ["Ingress"],
                         "ingress": [{"from": [{"podSelector": {"matchLabels": {"tier": front}}}], "ports": [{"port": "http"}]}]}}));
            objects.push(json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                "metadata": {"name": format!("{app}-from-team"), "namespace": ns},
                "spec": {"podSelector": {"matchLabels": {"app": app}}, "policyTypes": ["Ingress"],
                         "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"team": format!("t{}", n % 5)}},
                                                "podSelector": {"matchExpressions": [{"key": "tier", "operator": "In", "values": ["web", "api"]}]}}],
                                      "ports": [{"port": 8000, "endPort": 8100}]}]}}));
            // AuthorizationPolicies: an ALLOW for two callers by principal and the team's
            // namespaces, and a DENY of DELETE from the next namespace.
            let caller = format!("cluster.local/ns/{ns}/sa/app-{}", (w + 1) % per_namespace);
            let remote = format!("cluster.local/ns/{next}/sa/app-{w}");
            objects.push(json!({"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
                "metadata": {"name": format!("{app}-allow"), "namespace": ns},
                "spec": {"selector": {"matchLabels": {"app": app}}, "action": "ALLOW", "rules": [
                    {"from": [{"source": {"principals": [caller, remote]}}]},
                    {"from": [{"source": {"namespaces": [ns.clone(), next.clone()]}}], "to": [{"operation": {"ports": ["8080"], "methods": ["GET"]}}]}]}}));
            objects.push(json!({"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
                "metadata": {"name": format!("{app}-deny"), "namespace": ns},
                "spec": {"selector": {"matchLabels": {"app": app}}, "action": "DENY", "rules": [
                    {"from": [{"source": {"namespaces": [next.clone()]}}], "to": [{"operation": {"methods": ["DELETE"]}}]}]}}));
        }
    }
    objects
}
