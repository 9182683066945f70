//! `audit`'s rules (DESIGN.md section 13), one table each: good rows that must stay silent and bad
//! rows that must give exactly their finding. The corpus's ClusterSPIFFEIDs are among the rows.

use mesh_admission::audit::{AuditFinding, Level, audit_manifests};
use mesh_admission::config::Config;
use mesh_admission::manifests::parse_objects;
use serde_json::Value;

/// `(rule, level, object, message)` of every finding.
type Row = (String, Level, String, String);

fn audit_yaml(yaml: &str, cfg: &Config) -> Vec<Row> {
    let objects = parse_objects(yaml).expect("test input parses");
    audit_manifests(&objects, cfg)
        .into_iter()
        .map(|f: AuditFinding| (f.rule, f.level, f.object.to_string(), f.message))
        .collect()
}

/// The findings of `rule` only.
fn of_rule(rule: &str, yaml: &str, cfg: &Config) -> Vec<Row> {
    audit_yaml(yaml, cfg)
        .into_iter()
        .filter(|f| f.0 == rule)
        .collect()
}

fn corpus(path: &str) -> String {
    let file = format!("{}/../shared/corpus/{path}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{file}: {e}"))
}

/// A Deployment in `namespace` whose pods run as `account` with `labels` (YAML flow map).
fn deployment(namespace: &str, name: &str, account: &str, labels: &str) -> String {
    format!(
        "apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {labels}}}
    spec:
      serviceAccountName: {account}
      containers: [{{name: app, image: x, ports: [{{containerPort: 8080}}]}}]
"
    )
}

fn doc(parts: &[&str]) -> String {
    parts.join("---\n")
}

fn cluster_spiffe_id(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: spire.spiffe.io/v1alpha1\nkind: ClusterSPIFFEID\nmetadata: {{name: {name}}}\nspec:\n{spec}"
    )
}

const MESH_ID: &str =
    "spiffe://{{ .TrustDomain }}/ns/{{ .PodMeta.Namespace }}/sa/{{ .PodSpec.ServiceAccountName }}";

fn ours(name: &str) -> String {
    cluster_spiffe_id(
        name,
        &format!(
            "  spiffeIDTemplate: \"{MESH_ID}\"\n  podSelector: {{matchLabels: {{spire-managed-identity: \"true\"}}}}\n"
        ),
    )
}

const MISSING: &str = "spire-registration-missing";
const AMBIGUOUS: &str = "spire-registration-ambiguous";
const ID_FORMAT: &str = "spire-id-format";

fn row(rule: &str, level: Level, object: &str, message: &str) -> Row {
    (rule.into(), level, object.into(), message.into())
}

#[test]
fn spire_registration_missing() {
    let cfg = Config::default();
    let web = deployment("shop", "web", "web", "{app: web}");
    let istio_sample = corpus("istio-samples/security/spire/clusterspiffeid.yaml");
    let migration = corpus("spire-controller-manager/migration/config/clusterspiffeid.yaml");
    let opted_out = deployment(
        "shop",
        "batch",
        "batch",
        "{app: batch, spire-managed-identity: 'false'}",
    );
    let no_inject = deployment(
        "shop",
        "legacy",
        "legacy",
        "{app: legacy, sidecar.istio.io/inject: 'false'}",
    );
    let istio_labelled = deployment(
        "shop",
        "web",
        "web",
        "{app: web, spiffe.io/spire-managed-identity: 'true'}",
    );
    let other_namespaces = cluster_spiffe_id(
        "others",
        &format!(
            "  spiffeIDTemplate: \"{MESH_ID}\"\n  namespaceSelector: {{matchLabels: {{team: other}}}}\n"
        ),
    );
    let message = |hint: &str| {
        format!(
            "no ClusterSPIFFEID selects its pods: istio-proxy never gets a SPIRE identity and never becomes Ready{hint}"
        )
    };
    let cases: Vec<(&str, String, Vec<Row>)> = vec![
        (
            "good: our ClusterSPIFFEID selects the label admission adds",
            doc(&[&web, &ours("mesh")]),
            vec![],
        ),
        (
            "good: pods opted out of SPIRE or of injection need no registration",
            doc(&[&opted_out, &no_inject]),
            vec![],
        ),
        (
            "good: Istio's sample selects pods that carry Istio's label too",
            doc(&[&istio_labelled, &istio_sample]),
            vec![],
        ),
        (
            "bad: Istio's sample (corpus) against pods labelled as the seeds label them",
            doc(&[&web, &istio_sample]),
            vec![row(
                MISSING,
                Level::Error,
                "Deployment/shop/web",
                &message(
                    "; ClusterSPIFFEID//example selects spiffe.io/spire-managed-identity=true, its pods carry \
                 spire-managed-identity=true (spireIdentityLabel and the ClusterSPIFFEID must agree)",
                ),
            )],
        ),
        (
            "bad: spire-controller-manager's migration example (corpus) selects another label",
            doc(&[&web, &migration]),
            vec![row(
                MISSING,
                Level::Error,
                "Deployment/shop/web",
                &message(""),
            )],
        ),
        (
            "bad: a namespaceSelector that leaves the namespace out",
            doc(&[&web, &other_namespaces]),
            vec![row(
                MISSING,
                Level::Error,
                "Deployment/shop/web",
                &message(""),
            )],
        ),
        (
            "bad: spire-controller-manager's empty sample (corpus) has no template: it registers nothing",
            doc(&[
                &web,
                &corpus(
                    "spire-controller-manager/config/samples/spire_v1alpha1_clusterspiffeid.yaml",
                ),
            ]),
            vec![row(
                MISSING,
                Level::Error,
                "Deployment/shop/web",
                &message(" (the input has no usable ClusterSPIFFEID at all)"),
            )],
        ),
        (
            "bad: no ClusterSPIFFEID at all",
            web.clone(),
            vec![row(
                MISSING,
                Level::Error,
                "Deployment/shop/web",
                &message(" (the input has no usable ClusterSPIFFEID at all)"),
            )],
        ),
    ];
    for (case, yaml, want) in cases {
        assert_eq!(of_rule(MISSING, &yaml, &cfg), want, "{case}");
    }

    // With mesh.spireClassName, only that class counts.
    let classed = Config::from_yaml("mesh: {spireClassName: mesh}").unwrap();
    let other_class = ours("mesh").replace("spec:\n", "spec:\n  className: apps\n");
    assert_eq!(
        of_rule(MISSING, &doc(&[&web, &other_class]), &classed),
        [row(
            MISSING,
            Level::Error,
            "Deployment/shop/web",
            &message(
                "; ClusterSPIFFEID//mesh would, but its className \"apps\" is not mesh.spireClassName \"mesh\""
            )
        )]
    );
    let right_class = ours("mesh").replace("spec:\n", "spec:\n  className: mesh\n");
    assert!(of_rule(MISSING, &doc(&[&web, &right_class]), &classed).is_empty());
}

#[test]
fn spire_registration_ambiguous() {
    let cfg = Config::default();
    let web = deployment("shop", "web", "web", "{app: web}");
    let fallback = |name: &str| ours(name).replace("spec:\n", "spec:\n  fallback: true\n");
    let by_app = cluster_spiffe_id(
        "by-app",
        &format!(
            "  spiffeIDTemplate: \"{MESH_ID}\"\n  podSelector: {{matchLabels: {{app: web}}}}\n"
        ),
    );
    let message = |names: &str| {
        format!(
            "2 ClusterSPIFFEIDs select its pods ({names}): SPIRE registers them twice and which identity they get is undefined"
        )
    };
    let cases: Vec<(&str, String, Vec<Row>)> = vec![
        ("good: one", doc(&[&web, &ours("mesh")]), vec![]),
        (
            "good: a fallback counts only when no other selects",
            doc(&[&web, &ours("mesh"), &fallback("catch-all")]),
            vec![],
        ),
        (
            "bad: two select the same pods",
            doc(&[&web, &ours("mesh"), &by_app]),
            vec![row(
                AMBIGUOUS,
                Level::Warning,
                "Deployment/shop/web",
                &message("ClusterSPIFFEID//by-app, ClusterSPIFFEID//mesh"),
            )],
        ),
        (
            "bad: two fallbacks and nothing else",
            doc(&[&web, &fallback("a"), &fallback("b")]),
            vec![row(
                AMBIGUOUS,
                Level::Warning,
                "Deployment/shop/web",
                &message("ClusterSPIFFEID//a, ClusterSPIFFEID//b"),
            )],
        ),
    ];
    for (case, yaml, want) in cases {
        assert_eq!(of_rule(AMBIGUOUS, &yaml, &cfg), want, "{case}");
    }
}

#[test]
fn spire_id_format() {
    let cfg = Config::default();
    let web = deployment("shop", "web", "web", "{app: web}");
    // spire-controller-manager's demo: pods outside the mesh, labelled for it.
    let greeter = deployment(
        "demo",
        "greeter-server",
        "default",
        "{app: greeter, spire.spiffe.io/spiffeid: greeter-server, sidecar.istio.io/inject: 'false'}",
    );
    let greeter_meshed = deployment(
        "shop",
        "greeter-server",
        "default",
        "{app: greeter, spire.spiffe.io/spiffeid: greeter-server}",
    );
    let demo_server = corpus("spire-controller-manager/demo/config/greeter-server-id.yaml");
    let demo_client = corpus("spire-controller-manager/demo/config/greeter-client-id.yaml");
    let with_template = |name: &str, template: &str| {
        cluster_spiffe_id(
            name,
            &format!(
                "  spiffeIDTemplate: \"{template}\"\n  podSelector: {{matchLabels: {{app: web}}}}\n"
            ),
        )
    };
    let cases: Vec<(&str, String, Vec<Row>)> = vec![
        (
            "good: Istio's form",
            doc(&[&web, &with_template("web", MESH_ID)]),
            vec![],
        ),
        (
            "good: literal namespace and service account of the pods it selects",
            doc(&[
                &web,
                &with_template("web", "spiffe://cluster.local/ns/shop/sa/web"),
            ]),
            vec![],
        ),
        (
            "good: the corpus demo IDs select no meshed workload, whatever their form",
            doc(&[&greeter, &demo_server, &demo_client, &ours("mesh")]),
            vec![],
        ),
        (
            "bad: the corpus demo ID selecting a meshed workload",
            doc(&[&greeter_meshed, &demo_server]),
            vec![row(
                ID_FORMAT,
                Level::Error,
                "ClusterSPIFFEID//greeter-server",
                "spec.spiffeIDTemplate: gives no ID of the form Istio accepts, spiffe://<trust domain>/ns/<namespace>/sa/<service account>, \
                 for the meshed workloads it selects (Deployment/shop/greeter-server) (value \"spiffe://cluster1.demo/greeter-server\")",
            )],
        ),
        (
            "bad: a literal service account the pods do not run as",
            doc(&[
                &web,
                &with_template("web", "spiffe://cluster.local/ns/shop/sa/api"),
            ]),
            vec![row(
                ID_FORMAT,
                Level::Error,
                "ClusterSPIFFEID//web",
                "spec.spiffeIDTemplate: gives another service account than \"web\", which its pods run as, \
                 for the meshed workloads it selects (Deployment/shop/web) (value \"spiffe://cluster.local/ns/shop/sa/api\")",
            )],
        ),
        (
            "bad: another trust domain",
            doc(&[
                &web,
                &with_template("web", "spiffe://example.org/ns/shop/sa/web"),
            ]),
            vec![row(
                ID_FORMAT,
                Level::Error,
                "ClusterSPIFFEID//web",
                "spec.spiffeIDTemplate: names another trust domain than the mesh's \"cluster.local\" (mesh.trustDomain): \
                 Istio refuses its certificates, for the meshed workloads it selects (Deployment/shop/web) \
                 (value \"spiffe://example.org/ns/shop/sa/web\")",
            )],
        ),
    ];
    for (case, yaml, want) in cases {
        assert_eq!(of_rule(ID_FORMAT, &yaml, &cfg), want, "{case}");
    }
}

fn authorization_policy(namespace: &str, spec: &str) -> String {
    format!(
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: allow, namespace: {namespace}}}\nspec:\n{spec}"
    )
}

#[test]
fn principal_unknown() {
    let cfg = Config::default();
    let web = deployment("shop", "web", "web", "{app: web}");
    let from = |source: &str| {
        authorization_policy(
            "shop",
            &format!("  rules:\n  - from:\n    - source: {source}\n"),
        )
    };
    let unknown_account = "spec.rules[0].from[0].source.principals[1]: no workload runs as service account \"wbe\" in namespace \"shop\": \
                           a typo or a leftover, it matches nobody (value \"cluster.local/ns/shop/sa/wbe\")";
    let cases: Vec<(&str, String, Vec<Row>)> = vec![
        (
            "good: a workload runs as it",
            doc(&[&web, &from("{principals: [cluster.local/ns/shop/sa/web]}")]),
            vec![],
        ),
        (
            "good: the configured gateway's service account, wildcards and foreign trust domains are not judged",
            doc(&[
                &web,
                &from(
                    "{principals: [cluster.local/ns/istio-system/sa/public-ingressgateway-service-account, \
                 'cluster.local/ns/shop/sa/*', other.org/ns/x/sa/y], namespaces: [shop, 'team-*']}",
                ),
            ]),
            vec![],
        ),
        (
            "bad: a typo of a service account",
            doc(&[
                &web,
                &from("{principals: [cluster.local/ns/shop/sa/web, cluster.local/ns/shop/sa/wbe]}"),
            ]),
            vec![row(
                "principal-unknown",
                Level::Warning,
                "AuthorizationPolicy/shop/allow",
                unknown_account,
            )],
        ),
        (
            "bad: a namespace no workload runs in",
            doc(&[&web, &from("{notNamespaces: [shopp]}")]),
            vec![row(
                "principal-unknown",
                Level::Warning,
                "AuthorizationPolicy/shop/allow",
                "spec.rules[0].from[0].source.notNamespaces[0]: no workload runs in namespace \"shopp\": a typo or a leftover, \
                 it matches nobody (value \"shopp\")",
            )],
        ),
    ];
    for (case, yaml, want) in cases {
        assert_eq!(of_rule("principal-unknown", &yaml, &cfg), want, "{case}");
    }
}

fn peer_authentication(namespace: &str, name: &str, extra: &str) -> String {
    format!(
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {{name: {name}, namespace: {namespace}{extra}}}\nspec:\n  mtls: {{mode: STRICT}}\n"
    )
}

#[test]
fn selector_matches_nothing() {
    let cfg = Config::default();
    let web = deployment("shop", "web", "web", "{app: web}");
    let policy = |namespace: &str, app: &str| {
        authorization_policy(
            namespace,
            &format!(
                "  selector: {{matchLabels: {{app: {app}}}}}\n  action: DENY\n  rules: [{{}}]\n"
            ),
        )
    };
    let pa = |app: &str| {
        peer_authentication("shop", "strict", "")
            + &format!("  selector: {{matchLabels: {{app: {app}}}}}\n")
    };
    let nothing = |object: &str, namespace: &str| {
        row(
            "selector-matches-nothing",
            Level::Warning,
            object,
            &format!(
                "spec.selector.matchLabels: selects no workload of namespace \"{namespace}\": the policy applies to nothing"
            ),
        )
    };
    let cases: Vec<(&str, String, Vec<Row>)> = vec![
        (
            "good: selects the Deployment's pods",
            doc(&[&web, &policy("shop", "web"), &pa("web")]),
            vec![],
        ),
        (
            "good: in the root namespace it selects across namespaces",
            doc(&[&web, &policy("istio-system", "web")]),
            vec![],
        ),
        (
            "good: no selector applies namespace-wide",
            doc(&[&web, &peer_authentication("shop", "strict", "")]),
            vec![],
        ),
        (
            "bad: AuthorizationPolicy",
            doc(&[&web, &policy("shop", "wbe")]),
            vec![nothing("AuthorizationPolicy/shop/allow", "shop")],
        ),
        (
            "bad: PeerAuthentication",
            doc(&[&web, &pa("wbe")]),
            vec![nothing("PeerAuthentication/shop/strict", "shop")],
        ),
        (
            "bad: in the root namespace, nothing anywhere",
            doc(&[&web, &policy("istio-system", "wbe")]),
            vec![row(
                "selector-matches-nothing",
                Level::Warning,
                "AuthorizationPolicy/istio-system/allow",
                "spec.selector.matchLabels: selects no workload of any namespace (it is in the root namespace \"istio-system\"): \
                 the policy applies to nothing",
            )],
        ),
    ];
    for (case, yaml, want) in cases {
        assert_eq!(
            of_rule("selector-matches-nothing", &yaml, &cfg),
            want,
            "{case}"
        );
    }
}

#[test]
fn port_not_declared() {
    let cfg = Config::default();
    let web = deployment("shop", "web", "web", "{app: web}");
    let pa = |port: u16| {
        peer_authentication("shop", "ports", "")
            + &format!(
                "  selector: {{matchLabels: {{app: web}}}}\n  portLevelMtls: {{'{port}': {{mode: PERMISSIVE}}}}\n"
            )
    };
    let permissive = |ports: &str| {
        web.replace("    metadata: {labels: {app: web}}", &format!(
            "    metadata:\n      labels: {{app: web}}\n      annotations: {{servicemesh.bigbang.dev/permissivePorts: '{ports}'}}"
        ))
    };
    let cases: Vec<(&str, String, Vec<Row>)> = vec![
        ("good: a declared port", doc(&[&web, &pa(8080)]), vec![]),
        (
            "good: permissivePorts on a declared port",
            permissive("8080"),
            vec![],
        ),
        (
            "bad: port-level mTLS on an undeclared port",
            doc(&[&web, &pa(9090)]),
            vec![row(
                "port-not-declared",
                Level::Warning,
                "PeerAuthentication/shop/ports",
                "spec.portLevelMtls[9090]: no selected workload declares port 9090 as a container port: \
                 Istio applies port-level mTLS only to declared ports",
            )],
        ),
        (
            "bad: permissivePorts on an undeclared port (section 5's warning, under this rule)",
            permissive("8080, 9090"),
            vec![row(
                "port-not-declared",
                Level::Warning,
                "Deployment/shop/web",
                "spec.template.metadata.annotations[servicemesh.bigbang.dev/permissivePorts]: port 9090: no container declares it",
            )],
        ),
    ];
    for (case, yaml, want) in cases {
        assert_eq!(of_rule("port-not-declared", &yaml, &cfg), want, "{case}");
    }
}

#[test]
fn second_namespace_peer_authentication() {
    let cfg = Config::default();
    let created = |at: &str| format!(", creationTimestamp: '{at}'");
    let older = peer_authentication("shop", "z-first", &created("2025-01-01T00:00:00Z"));
    let newer = peer_authentication("shop", "a-second", &created("2026-01-01T00:00:00Z"));
    let selected =
        peer_authentication("shop", "web", "") + "  selector: {matchLabels: {app: web}}\n";
    let cases: Vec<(&str, String, Vec<Row>)> = vec![
        ("good: one without selector", older.clone(), vec![]),
        (
            "good: one with a selector beside it",
            doc(&[&older, &selected]),
            vec![],
        ),
        (
            "good: one per namespace",
            doc(&[&older, &peer_authentication("other", "a-second", "")]),
            vec![],
        ),
        (
            "bad: the newer is the one Istio ignores, whatever its name",
            doc(&[&newer, &older]),
            vec![row(
                "second-namespace-peer-authentication",
                Level::Error,
                "PeerAuthentication/shop/a-second",
                "spec.selector: a second PeerAuthentication without selector in namespace \"shop\": Istio uses the oldest, \
                 PeerAuthentication/shop/z-first, and this one does nothing",
            )],
        ),
    ];
    for (case, yaml, want) in cases {
        assert_eq!(
            of_rule("second-namespace-peer-authentication", &yaml, &cfg),
            want,
            "{case}"
        );
    }
}

#[test]
fn route_destination_missing() {
    let cfg = Config::default();
    let service = "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: shop}\nspec:\n  selector: {app: web}\n  ports: [{port: 80, targetPort: 8080}]\n";
    let vs = |host: &str, port: Option<u16>| {
        let port = port
            .map(|p| format!(", port: {{number: {p}}}"))
            .unwrap_or_default();
        format!(
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: web, namespace: shop}}\nspec:\n  hosts: [web.example.org]\n  http:\n  - route:\n    - destination: {{host: {host}{port}}}\n"
        )
    };
    let cases: Vec<(&str, String, Vec<Row>)> = vec![
        (
            "good: a short name",
            doc(&[service, &vs("web", None)]),
            vec![],
        ),
        (
            "good: the full name and a port the Service has",
            doc(&[service, &vs("web.shop.svc.cluster.local", Some(80))]),
            vec![],
        ),
        (
            "good: an external host is not judged",
            vs("httpbin.org", Some(443)),
            vec![],
        ),
        (
            "bad: no such Service",
            doc(&[service, &vs("db.shop.svc", None)]),
            vec![row(
                "route-destination-missing",
                Level::Warning,
                "VirtualService/shop/web",
                "spec.http[0].route[0].destination.host: no Service \"db\" in namespace \"shop\" (value \"db.shop.svc\")",
            )],
        ),
        (
            "bad: a port the Service does not have (the container's, not the Service's)",
            doc(&[service, &vs("web", Some(8080))]),
            vec![row(
                "route-destination-missing",
                Level::Warning,
                "VirtualService/shop/web",
                "spec.http[0].route[0].destination.port.number: Service shop/web has no port 8080 (value \"8080\")",
            )],
        ),
    ];
    for (case, yaml, want) in cases {
        assert_eq!(
            of_rule("route-destination-missing", &yaml, &cfg),
            want,
            "{case}"
        );
    }
}

/// Sections 4, 5 and 10 for stored objects: the same messages the webhook gives, for every object
/// of the test fixtures (`review` runs the server's code).
#[test]
fn stored_objects_get_the_webhooks_messages() {
    let cfg = Config::default();
    let fixtures = format!("{}/tests/fixtures", env!("CARGO_MANIFEST_DIR"));
    let mut files: Vec<String> = [
        "pods.yaml",
        "workloads.yaml",
        "helmreleases.yaml",
        "denied.yaml",
    ]
    .iter()
    .map(|f| format!("{fixtures}/{f}"))
    .collect();
    let cases = std::fs::read_dir(format!("{fixtures}/istio/cases")).unwrap();
    files.extend(cases.map(|e| e.unwrap().path().display().to_string()));
    let mut compared = 0;
    for file in &files {
        let name = file.as_str();
        let objects = parse_objects(&std::fs::read_to_string(file).unwrap()).unwrap();
        for object in &objects {
            let namespace = object["metadata"]["namespace"]
                .as_str()
                .unwrap_or("default");
            let review = mesh_admission::review::review_object(object, namespace, &cfg, "uid");
            let found = mesh_admission::audit::stored::findings(object, &cfg);
            let errors: Vec<&str> = found
                .iter()
                .filter(|f| f.is_error())
                .map(|f| f.message.as_str())
                .collect();
            let denial = (!errors.is_empty()).then(|| errors.join("; "));
            assert_eq!(
                denial, review.denial,
                "{name}: {}",
                object["metadata"]["name"]
            );
            let warnings: Vec<String> = found
                .iter()
                .filter(|f| !f.is_error())
                .map(|f| mesh_admission::policy::warning(f.message.clone()))
                .collect();
            let mut expected = review.warnings.clone();
            expected.sort();
            let mut warnings = warnings;
            warnings.sort();
            assert_eq!(warnings, expected, "{name}: {}", object["metadata"]["name"]);
            compared += 1;
        }
    }
    // 12 objects of the admission fixtures, one Istio object per case file.
    assert_eq!(compared, 12 + 25);
}

/// A finding's JSON form, as `audit --output json` prints it (docs/audit.md).
#[test]
fn a_finding_is_rule_level_object_message_in_json() {
    let found = audit_manifests(
        &parse_objects(&deployment("shop", "web", "web", "{app: web}")).unwrap(),
        &Config::default(),
    );
    let json: Value = serde_json::to_value(&found[0]).unwrap();
    assert_eq!(json["rule"], "spire-registration-missing");
    assert_eq!(json["level"], "error");
    assert_eq!(json["object"], "Deployment/shop/web");
    assert_eq!(json.as_object().unwrap().len(), 4, "{json}");
}

/// Objects another workload of the set owns (a Deployment's ReplicaSet, its Pods) are judged
/// through their owner: a live cluster's replicas do not repeat its findings.
#[test]
fn owned_workloads_do_not_repeat_their_owners_findings() {
    let cfg = Config::default();
    let labels = "{app: web, sidecar.istio.io/inject: 'yes'}";
    let web = deployment("shop", "web", "web", labels);
    let owned = |kind: &str, name: &str, owner_kind: &str, owner: &str| {
        let owners =
            format!("[{{apiVersion: apps/v1, kind: {owner_kind}, name: {owner}, uid: u}}]");
        match kind {
            "Pod" => format!(
                "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: shop, labels: {labels}, ownerReferences: {owners}}}\nspec: {{containers: [{{name: app, image: x}}]}}\n"
            ),
            _ => format!(
                "apiVersion: apps/v1\nkind: {kind}\nmetadata: {{name: {name}, namespace: shop, ownerReferences: {owners}}}\nspec:\n  template:\n    metadata: {{labels: {labels}}}\n    spec: {{containers: [{{name: app, image: x}}]}}\n"
            ),
        }
    };
    let objects = |yaml: &str| -> Vec<String> {
        of_rule("sidecar.istio.io/inject", yaml, &cfg)
            .into_iter()
            .map(|f| f.2)
            .collect()
    };
    let replica_set = owned("ReplicaSet", "web-1", "Deployment", "web");
    let pod = owned("Pod", "web-1-a", "ReplicaSet", "web-1");
    assert_eq!(
        objects(&doc(&[&web, &replica_set, &pod])),
        ["Deployment/shop/web"]
    );
    // A Pod whose owner is not in the set speaks for itself.
    assert_eq!(objects(&pod), ["Pod/shop/web-1-a"]);
}
