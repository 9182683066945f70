use super::*;
use serde_json::{Value, json};

fn findings(object: Value, cfg: &Config) -> Vec<String> {
    let id: ClusterSpiffeId = serde_json::from_value(object).unwrap();
    validate(&id, cfg).iter().map(ToString::to_string).collect()
}

fn id(spec: Value) -> Value {
    json!({"apiVersion": "spire.spiffe.io/v1alpha1", "kind": "ClusterSPIFFEID",
           "metadata": {"name": "x"}, "spec": spec})
}

const ISTIO_TEMPLATE: &str =
    "spiffe://{{ .TrustDomain }}/ns/{{ .PodMeta.Namespace }}/sa/{{ .PodSpec.ServiceAccountName }}";

/// The corpus's ClusterSPIFFEIDs and variations of them: (case, spec, findings).
#[test]
fn cluster_spiffe_id_table() {
    let cfg = Config::default();
    let mesh_selector = json!({"matchLabels": {"spire-managed-identity": "true"}});
    let cases: Vec<(&str, Value, Vec<&str>)> = vec![
        (
            "Istio's sample (istio-samples/security/spire/clusterspiffeid.yaml): meant for the mesh, right form",
            json!({"spiffeIDTemplate": ISTIO_TEMPLATE,
                   "podSelector": {"matchLabels": {"spiffe.io/spire-managed-identity": "true"}}}),
            vec![],
        ),
        (
            "spire-controller-manager's demo server: not for the mesh, any form",
            json!({"spiffeIDTemplate": "spiffe://cluster1.demo/greeter-server",
                   "podSelector": {"matchLabels": {"spire.spiffe.io/spiffeid": "greeter-server"}},
                   "federatesWith": ["cluster2.demo"]}),
            vec![],
        ),
        (
            "spire-controller-manager's empty sample: not for the mesh, nothing to check",
            json!(null),
            vec![],
        ),
        (
            "spire-controller-manager's migration example: selects another label, not for the mesh",
            json!({"spiffeIDTemplate": ISTIO_TEMPLATE, "autoPopulateDNSNames": true,
                   "podSelector": {"matchLabels": {"spiffe.io/spiffe-id": "true"}}}),
            vec![],
        ),
        (
            "our label, literal trust domain of the mesh, no spaces in the braces",
            json!({"spiffeIDTemplate": "spiffe://cluster.local/ns/{{.PodMeta.Namespace}}/sa/{{.PodSpec.ServiceAccountName}}",
                   "podSelector": mesh_selector}),
            vec![],
        ),
        (
            "literal namespace and service account are Istio's form too",
            json!({"spiffeIDTemplate": "spiffe://{{ .TrustDomain }}/ns/shop/sa/web",
                   "podSelector": mesh_selector}),
            vec![],
        ),
        (
            "the demo's form on the mesh's label is refused",
            json!({"spiffeIDTemplate": "spiffe://cluster1.demo/greeter-server",
                   "podSelector": mesh_selector}),
            vec![
                "spec.spiffeIDTemplate: gives no ID of the form Istio accepts, spiffe://<trust domain>/ns/<namespace>/sa/<service account> (value \"spiffe://cluster1.demo/greeter-server\")",
            ],
        ),
        (
            "a pod name where the service account goes",
            json!({"spiffeIDTemplate": "spiffe://{{ .TrustDomain }}/ns/{{ .PodMeta.Namespace }}/sa/{{ .PodMeta.Name }}",
                   "podSelector": {"matchExpressions": [{"key": "spire-managed-identity", "operator": "In", "values": ["true"]}]}}),
            vec![
                "spec.spiffeIDTemplate: gives \".PodMeta.Name\" as the service account, Istio needs \"{{ .PodSpec.ServiceAccountName }}\" or a literal one (value \"spiffe://{{ .TrustDomain }}/ns/{{ .PodMeta.Namespace }}/sa/{{ .PodMeta.Name }}\")",
            ],
        ),
        (
            "another trust domain",
            json!({"spiffeIDTemplate": "spiffe://prod.example.org/ns/{{ .PodMeta.Namespace }}/sa/web",
                   "podSelector": mesh_selector}),
            vec![
                "spec.spiffeIDTemplate: names another trust domain than the mesh's \"cluster.local\" (mesh.trustDomain): Istio refuses its certificates (value \"spiffe://prod.example.org/ns/{{ .PodMeta.Namespace }}/sa/web\")",
            ],
        ),
        (
            "no scheme",
            json!({"spiffeIDTemplate": "{{ .TrustDomain }}/ns/shop/sa/web",
                   "podSelector": mesh_selector}),
            vec![
                "spec.spiffeIDTemplate: must start with \"spiffe://\": gives no ID of the form Istio accepts, spiffe://<trust domain>/ns/<namespace>/sa/<service account> (value \"{{ .TrustDomain }}/ns/shop/sa/web\")",
            ],
        ),
        (
            "meant for the mesh without a template",
            json!({"podSelector": mesh_selector}),
            vec![
                "spec.spiffeIDTemplate: is missing: Istio needs spiffe://<trust domain>/ns/<namespace>/sa/<service account>",
            ],
        ),
        (
            "selector syntax is checked for every ClusterSPIFFEID, meant for the mesh or not",
            json!({"spiffeIDTemplate": "spiffe://cluster1.demo/x",
                   "podSelector": {"matchLabels": {"bad key!": "v", "app": "-x"},
                                   "matchExpressions": [
                                       {"key": "tier", "operator": "in", "values": ["a"]},
                                       {"key": "zone", "operator": "In"},
                                       {"key": "ok", "operator": "Exists", "values": ["y"]}]},
                   "namespaceSelector": {"matchLabels": {"example.com/": "v"}}}),
            vec![
                "spec.podSelector.matchLabels[app]: must be at most 63 characters, alphanumerics with '-', '_' or '.' inside (value \"-x\")",
                "spec.podSelector.matchLabels[bad key!]: key must be at most 63 characters, alphanumerics with '-', '_' or '.' inside (value \"bad key!\")",
                "spec.podSelector.matchExpressions[0].operator: must be In, NotIn, Exists or DoesNotExist (value \"in\")",
                "spec.podSelector.matchExpressions[1].values: must not be empty for operator In",
                "spec.podSelector.matchExpressions[2].values: must be empty for operator Exists",
                "spec.namespaceSelector.matchLabels[example.com/]: key must have a name (value \"example.com/\")",
            ],
        ),
    ];
    for (case, spec, want) in cases {
        assert_eq!(findings(id(spec), &cfg), want, "{case}");
    }
}

#[test]
fn the_mesh_class_makes_a_cluster_spiffe_id_meant_for_the_mesh() {
    let cfg =
        Config::from_yaml("mesh: {spireClassName: mesh, trustDomain: prod.example.org}").unwrap();
    let demo = json!({"spiffeIDTemplate": "spiffe://cluster1.demo/greeter-server",
                      "podSelector": {"matchLabels": {"app": "greeter"}}});
    assert!(findings(id(demo.clone()), &cfg).is_empty());
    let mut classed = demo;
    classed["className"] = json!("mesh");
    assert_eq!(findings(id(classed), &cfg).len(), 1);
    // The mesh's own trust domain, literally.
    let own = json!({"className": "mesh",
        "spiffeIDTemplate": "spiffe://prod.example.org/ns/{{ .PodMeta.Namespace }}/sa/{{ .PodSpec.ServiceAccountName }}"});
    assert!(findings(id(own), &cfg).is_empty());
}

#[test]
fn literal_parts_give_only_their_own_value() {
    let id =
        parse_mesh_id("spiffe://{{ .TrustDomain }}/ns/shop/sa/{{ .PodSpec.ServiceAccountName }}")
            .unwrap();
    assert!(id.trust_domain.gives("anything") && id.namespace.gives("shop"));
    assert!(!id.namespace.gives("other"));
    for bad in [
        "spiffe://td/ns/a/sa/b/extra",
        "spiffe://td/ns//sa/b",
        "spiffe://td/namespace/a/sa/b",
        "spiffe://td/ns/{{ .PodMeta.Namespace }}-x/sa/b",
    ] {
        assert!(parse_mesh_id(bad).is_err(), "{bad}");
    }
}
