//! A mesh of the size the scale benchmarks ask for (`benches/audit.rs` offline,
//! `tests/bench_controller.rs` through the real apiserver): the same objects for both, so that the
//! offline and the controller's figures are of one cluster.

use serde_json::{Value, json};

/// 49 objects in each of `namespaces` namespaces and one ClusterSPIFFEID for each: 50 objects per
/// namespace, 10,000 for 200. Some are wrong on purpose (a typo'd principal, a selector of nothing,
/// a route to a missing Service, an undeclared permissive port), so that every rule has work to
/// report.
pub fn mesh(namespaces: usize) -> Vec<Value> {
    let mut objects = Vec::new();
    for n in 0..namespaces {
        let ns = format!("team-{n:03}");
        objects.push(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}));
        for i in 0..20 {
            let app = format!("app-{i}");
            objects.push(json!({
                "apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": app, "namespace": ns},
                "spec": {"selector": {"matchLabels": {"app": app}}, "template": {
                    "metadata": {"labels": {"app": app, "tier": if i % 2 == 0 { "web" } else { "db" }},
                                 "annotations": {"servicemesh.bigbang.dev/permissivePorts": if i == 0 { "8080,9090" } else { "8080" }}},
                    "spec": {"serviceAccountName": app, "containers": [
                        {"name": "app", "image": "registry.example/app:1", "ports": [{"containerPort": 8080}],
                         "env": [{"name": "LOG_LEVEL", "value": "info"}]}]}}},
            }));
        }
        for i in 0..10 {
            let app = format!("app-{i}");
            objects.push(json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": app, "namespace": ns},
                "spec": {"selector": {"app": app}, "ports": [{"port": 80, "targetPort": 8080}]}}));
        }
        for i in 0..5 {
            let app = format!("app-{i}");
            objects.push(
                json!({"apiVersion": "helm.toolkit.fluxcd.io/v2", "kind": "HelmRelease",
                "metadata": {"name": app, "namespace": ns, "annotations": {
                    "servicemesh.bigbang.dev/expose": app,
                    "servicemesh.bigbang.dev/host": format!("{app}-{ns}"),
                    "servicemesh.bigbang.dev/port": "80"}},
                "spec": {"interval": "10m", "chart": {"spec": {"chart": app,
                    "sourceRef": {"kind": "HelmRepository", "name": "charts"}}}}}),
            );
        }
        objects.push(json!({"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
            "metadata": {"name": "default", "namespace": ns}, "spec": {"mtls": {"mode": "STRICT"}}}));
        for i in 0..4 {
            let app = format!("app-{}", i * 7);
            objects.push(json!({"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
                "metadata": {"name": format!("{app}-ports"), "namespace": ns},
                "spec": {"selector": {"matchLabels": {"app": app}}, "portLevelMtls": {"8080": {"mode": "PERMISSIVE"}}}}));
        }
        for i in 0..4 {
            let app = format!("app-{i}");
            let caller = if i == 3 {
                "cluster.local/ns/other/sa/gone".to_owned()
            } else {
                format!("cluster.local/ns/{ns}/sa/app-{}", i + 1)
            };
            objects.push(json!({"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
                "metadata": {"name": format!("{app}-allow"), "namespace": ns},
                "spec": {"selector": {"matchLabels": {"app": app}}, "action": "ALLOW",
                         "rules": [{"from": [{"source": {"principals": [caller]}}], "to": [{"operation": {"methods": ["GET"]}}]}]}}));
        }
        for i in 0..3 {
            let host = if i == 2 {
                "missing".to_owned()
            } else {
                format!("app-{i}")
            };
            objects.push(json!({"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
                "metadata": {"name": format!("route-{i}"), "namespace": ns},
                "spec": {"hosts": [format!("app-{i}.example.org")],
                         "http": [{"route": [{"destination": {"host": host, "port": {"number": 80}}}]}]}}));
        }
        objects.push(json!({"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
            "metadata": {"name": "mtls", "namespace": ns},
            "spec": {"host": format!("*.{ns}.svc.cluster.local"), "trafficPolicy": {"tls": {"mode": "ISTIO_MUTUAL"}}}}));
        // One registration per namespace, by namespace, of the mesh's form.
        objects.push(json!({"apiVersion": "spire.spiffe.io/v1alpha1", "kind": "ClusterSPIFFEID",
            "metadata": {"name": format!("mesh-{ns}")},
            "spec": {"spiffeIDTemplate": "spiffe://{{ .TrustDomain }}/ns/{{ .PodMeta.Namespace }}/sa/{{ .PodSpec.ServiceAccountName }}",
                     "podSelector": {"matchLabels": {"spire-managed-identity": "true"}},
                     "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns}}}}));
    }
    objects
}

/// The resource name of `kind`: its lower case with `s` (`y` → `ies`), as for every kind the
/// benchmarks create or list.
pub fn plural(kind: &str) -> String {
    let lower = kind.to_lowercase();
    match lower.strip_suffix('y') {
        Some(stem) => format!("{stem}ies"),
        None => format!("{lower}s"),
    }
}

/// The REST path that creates `object` (its collection), from its `apiVersion`, `kind` and
/// namespace.
pub fn collection_path(object: &Value) -> String {
    let api_version = object["apiVersion"].as_str().unwrap_or_default();
    let plural = plural(object["kind"].as_str().unwrap_or_default());
    let prefix = if api_version.contains('/') {
        "/apis"
    } else {
        "/api"
    };
    match object["metadata"]["namespace"].as_str() {
        Some(ns) => format!("{prefix}/{api_version}/namespaces/{ns}/{plural}"),
        None => format!("{prefix}/{api_version}/{plural}"),
    }
}
