//! DESIGN.md section 9, row by row: what is generated, its names, labels and content, and the
//! errors and warnings.

use serde_json::{Value, json};

use super::*;

/// `render` over manifests, as the command reads them.
fn render(inputs: &[Value], cfg: &Config) -> Rendered {
    super::render(&Model::from_manifests(inputs), cfg)
}

const HR_API: &str = "helm.toolkit.fluxcd.io/v2";

/// One row: what it is, the configuration (YAML over the default), the inputs, the objects wanted
/// (`Kind namespace/name`, in output order) and the problems wanted (`error|warning: …`).
type Row<'a> = (&'a str, &'a str, Vec<Value>, Vec<&'a str>, Vec<&'a str>);
/// A warning row: the default configuration, problems built at run time.
type WarningRow<'a> = (&'a str, Vec<Value>, Vec<&'a str>, Vec<String>);

fn helm_release(namespace: &str, name: &str, annotations: &[(&str, &str)]) -> Value {
    let annotations: serde_json::Map<String, Value> = annotations
        .iter()
        .map(|(k, v)| ((*k).to_owned(), json!(v)))
        .collect();
    json!({
        "apiVersion": HR_API, "kind": "HelmRelease",
        "metadata": {"name": name, "namespace": namespace, "annotations": annotations},
        "spec": {"chart": {"spec": {"chart": name}}, "interval": "5m"},
    })
}

/// A HelmRelease `web` in `apps` exposing Service `web` port 80 as `web.bigbang.dev`.
fn web_release(extra: &[(&str, &str)]) -> Value {
    let mut annotations = vec![(EXPOSE, "web"), (HOST, "web"), (PORT, "80")];
    annotations.extend_from_slice(extra);
    helm_release("apps", "web", &annotations)
}

fn with_target(mut release: Value, target: &str) -> Value {
    release["spec"]["targetNamespace"] = json!(target);
    release
}

fn service(namespace: &str, name: &str, selector: Value, ports: Value) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"selector": selector, "ports": ports},
    })
}

/// Service `apps/web` selecting `app: web`, port 80 to container port 8080.
fn web_service() -> Value {
    service(
        "apps",
        "web",
        json!({"app": "web"}),
        json!([{"name": "http", "port": 80, "targetPort": 8080}]),
    )
}

fn namespace(name: &str, labels: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}})
}

fn deployment(kind: &str, name: &str, annotations: Value) -> Value {
    let api = if kind == "Pod" { "v1" } else { "apps/v1" };
    let pod_spec = json!({"containers": [{"name": "app", "ports": [{"containerPort": 8080}, {"containerPort": 9090}]}]});
    if kind == "Pod" {
        return json!({
            "apiVersion": api, "kind": kind,
            "metadata": {"name": name, "namespace": "apps", "labels": {"app": name}, "annotations": annotations},
            "spec": pod_spec,
        });
    }
    json!({
        "apiVersion": api, "kind": kind,
        "metadata": {"name": name, "namespace": "apps"},
        "spec": {
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name, "tier": "x"}, "annotations": annotations}, "spec": pod_spec},
        },
    })
}

fn config(yaml: &str) -> Config {
    Config::from_yaml(yaml).unwrap()
}

/// Two gateways, `public` (default) and `internal`, and AuthorizationPolicies on.
const TWO_GATEWAYS: &str = "mesh:
  authorizationPolicies: true
  trustDomain: prod.example.org
  gateways:
  - {name: public, namespace: istio-system, selector: {app: public-gw}, serviceAccount: public-sa, default: true}
  - {name: internal, namespace: internal-gw, selector: {app: internal-gw}, serviceAccount: internal-sa}
";

/// `Kind namespace/name` of every object, in output order.
fn keys(rendered: &Rendered) -> Vec<String> {
    rendered
        .objects
        .iter()
        .map(|o| format!("{} {}/{}", o.kind, o.namespace, o.name))
        .collect()
}

/// Every problem as `error|warning: Subject: message`.
fn problems(rendered: &Rendered) -> Vec<String> {
    rendered
        .problems
        .iter()
        .map(|p| {
            let level = match p.issue.severity() {
                Severity::Error => "error",
                Severity::Warning => "warning",
            };
            format!("{level}: {p}")
        })
        .collect()
}

fn object(rendered: &Rendered, key: &str) -> Value {
    rendered
        .objects
        .iter()
        .find(|o| format!("{} {}/{}", o.kind, o.namespace, o.name) == key)
        .unwrap_or_else(|| panic!("no {key} in {:?}", keys(rendered)))
        .manifest()
}

/// The table's rows: which objects each situation generates, and which problems it reports.
#[test]
fn section_9_table() {
    let default = "";
    let web_ns_pa = "PeerAuthentication apps/default";
    let cases: Vec<Row> = vec![
        (
            "expose, host, port set: VirtualService H-ingress (no Service known: a warning)",
            default,
            vec![web_release(&[])],
            vec![web_ns_pa, "VirtualService apps/web-ingress"],
            vec![
                "warning: HelmRelease apps/web: Service apps/web is unknown: VirtualService apps/web-ingress is generated, its NetworkPolicy and AuthorizationPolicy are not",
            ],
        ),
        (
            "and the Service known with a selector and the port: NetworkPolicy per gateway",
            default,
            vec![web_release(&[]), web_service()],
            vec![
                "NetworkPolicy apps/web-ingress-public",
                web_ns_pa,
                "VirtualService apps/web-ingress",
            ],
            vec![],
        ),
        (
            "and mesh.authorizationPolicies: AuthorizationPolicy per selected gateway",
            TWO_GATEWAYS,
            vec![web_release(&[(GATEWAYS, "public,internal")]), web_service()],
            vec![
                "AuthorizationPolicy apps/web-ingress-internal",
                "AuthorizationPolicy apps/web-ingress-public",
                "NetworkPolicy apps/web-ingress-internal",
                "NetworkPolicy apps/web-ingress-public",
                web_ns_pa,
                "VirtualService apps/web-ingress",
            ],
            vec![],
        ),
        (
            "any mesh annotation alone: the namespace's PeerAuthentication default",
            default,
            vec![helm_release("apps", "db", &[(MTLS_MODE, "PERMISSIVE")])],
            vec![web_ns_pa],
            vec![],
        ),
        (
            "no mesh annotation: nothing (unlike Big Bang's proof of concept, which fires for every HelmRelease)",
            default,
            vec![helm_release(
                "apps",
                "plain",
                &[("meta.helm.sh/release-name", "x")],
            )],
            vec![],
            vec![],
        ),
        (
            "a Deployment with permissivePorts: its PeerAuthentication",
            default,
            vec![deployment(
                "Deployment",
                "api",
                json!({"servicemesh.bigbang.dev/permissivePorts": "8080"}),
            )],
            vec!["PeerAuthentication apps/api-permissive-ports"],
            vec![],
        ),
        (
            "a StatefulSet, DaemonSet, ReplicaSet and bare Pod alike",
            default,
            ["StatefulSet", "DaemonSet", "ReplicaSet", "Pod"]
                .iter()
                .map(|k| {
                    deployment(
                        k,
                        &k.to_lowercase(),
                        json!({"servicemesh.bigbang.dev/permissivePorts": "9090"}),
                    )
                })
                .collect(),
            vec![
                "PeerAuthentication apps/daemonset-permissive-ports",
                "PeerAuthentication apps/pod-permissive-ports",
                "PeerAuthentication apps/replicaset-permissive-ports",
                "PeerAuthentication apps/statefulset-permissive-ports",
            ],
            vec![],
        ),
        (
            "a Job (not in the table) and a Pod a controller owns: nothing",
            default,
            vec![
                {
                    let mut job = deployment(
                        "Deployment",
                        "job",
                        json!({"servicemesh.bigbang.dev/permissivePorts": "8080"}),
                    );
                    job["apiVersion"] = json!("batch/v1");
                    job["kind"] = json!("Job");
                    job
                },
                {
                    let mut pod = deployment(
                        "Pod",
                        "web-1",
                        json!({"servicemesh.bigbang.dev/permissivePorts": "8080"}),
                    );
                    pod["metadata"]["ownerReferences"] = json!([{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web", "uid": "u"}]);
                    pod
                },
            ],
            vec![],
            vec![],
        ),
        (
            "a meshed Namespace: allow-egress-istiod",
            default,
            vec![namespace("apps", json!({"istio-injection": "enabled"}))],
            vec!["NetworkPolicy apps/allow-egress-istiod"],
            vec![],
        ),
        (
            "a Namespace the webhook will label, or on a revision: allow-egress-istiod",
            default,
            vec![
                namespace("new", json!({})),
                namespace("canary", json!({"istio.io/rev": "1-27"})),
            ],
            vec![
                "NetworkPolicy canary/allow-egress-istiod",
                "NetworkPolicy new/allow-egress-istiod",
            ],
            vec![],
        ),
        (
            "an opted-out or excluded Namespace: nothing",
            default,
            vec![
                namespace("legacy", json!({"istio-injection": "disabled"})),
                namespace("kube-system", json!({})),
            ],
            vec![],
            vec![],
        ),
        (
            "mesh.istiodEgress: false: nothing",
            "mesh: {istiodEgress: false}",
            vec![namespace("apps", json!({"istio-injection": "enabled"}))],
            vec![],
            vec![],
        ),
    ];
    for (case, cfg, inputs, want_objects, want_problems) in cases {
        let rendered = render(&inputs, &config(cfg));
        assert_eq!(keys(&rendered), want_objects, "{case}");
        assert_eq!(problems(&rendered), want_problems, "{case}");
    }
}

#[test]
fn virtual_service_hosts_gateways_and_route() {
    let rendered = render(
        &[
            with_target(web_release(&[(GATEWAYS, "internal,public")]), "web-prod"),
            web_service(),
        ],
        &config(TWO_GATEWAYS),
    );
    let vs = object(&rendered, "VirtualService web-prod/web-ingress");
    assert_eq!(vs["apiVersion"], "networking.istio.io/v1");
    assert_eq!(
        vs["spec"],
        json!({
            "hosts": ["web.bigbang.dev"],
            // Every selected gateway, in the order the annotation lists them, not only the first.
            "gateways": ["internal-gw/internal", "istio-system/public"],
            "http": [{"route": [{"destination": {"host": "web.web-prod.svc.cluster.local", "port": {"number": 80}}}]}],
        })
    );
    // Without the annotation, every default gateway; the domain comes from the configuration.
    let cfg = config(
        "mesh:\n  domain: example.org\n  gateways:\n  - {name: a, namespace: gw, selector: {app: a}, serviceAccount: a, default: true}\n  - {name: b, namespace: gw, selector: {app: b}, serviceAccount: b}\n  - {name: c, namespace: gw, selector: {app: c}, serviceAccount: c, default: true}\n",
    );
    let rendered = render(&[web_release(&[])], &cfg);
    let vs = object(&rendered, "VirtualService apps/web-ingress");
    assert_eq!(vs["spec"]["gateways"], json!(["gw/a", "gw/c"]));
    assert_eq!(vs["spec"]["hosts"], json!(["web.example.org"]));
}

#[test]
fn every_object_is_in_the_target_namespace_and_says_who_owns_it() {
    let release = with_target(web_release(&[]), "web-prod");
    let svc = service(
        "web-prod",
        "web",
        json!({"app": "web"}),
        json!([{"port": 80}]),
    );
    let rendered = render(&[release, svc], &Config::default());
    assert_eq!(
        keys(&rendered),
        [
            "NetworkPolicy web-prod/web-ingress-public",
            "PeerAuthentication web-prod/default",
            "VirtualService web-prod/web-ingress",
        ]
    );
    let owner = "helm.toolkit.fluxcd.io/HelmRelease/apps/web";
    for key in [
        "NetworkPolicy web-prod/web-ingress-public",
        "VirtualService web-prod/web-ingress",
    ] {
        let meta = &object(&rendered, key)["metadata"];
        assert_eq!(meta["namespace"], "web-prod", "{key}");
        assert_eq!(
            meta["annotations"],
            json!({"mesh-admission/owner-ref": owner}),
            "{key}"
        );
        assert_eq!(
            meta["labels"],
            json!({
                "app.kubernetes.io/managed-by": "mesh-admission",
                // printf 'helm.toolkit.fluxcd.io/HelmRelease/apps/web' | sha256sum | cut -c1-16
                "mesh-admission/owner": "ebd611d113b2e2dd",
            }),
            "{key}"
        );
    }
    // The shared PeerAuthentication belongs to the target namespace.
    let pa = &object(&rendered, "PeerAuthentication web-prod/default")["metadata"];
    assert_eq!(
        pa["annotations"]["mesh-admission/owner-ref"],
        "core/Namespace//web-prod"
    );
    assert_eq!(
        pa["labels"]["mesh-admission/owner"],
        ObjectRef::namespace("web-prod").owner_label()
    );
}

#[test]
fn owner_refs_are_spelled_as_the_contract_says() {
    let cases = [
        (
            ObjectRef::new("helm.toolkit.fluxcd.io", "HelmRelease", "N", "H"),
            "helm.toolkit.fluxcd.io/HelmRelease/N/H",
        ),
        (
            ObjectRef::new("apps", "Deployment", "apps", "web"),
            "apps/Deployment/apps/web",
        ),
        (
            ObjectRef::new("", "Pod", "apps", "web-0"),
            "core/Pod/apps/web-0",
        ),
        (ObjectRef::namespace("apps"), "core/Namespace//apps"),
    ];
    for (owner, want) in cases {
        assert_eq!(owner.owner_ref(), want);
        assert_eq!(owner.owner_label().len(), 16);
        assert!(
            owner
                .owner_label()
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
    }
    // A known digest: SHA-256("core/Namespace//apps").
    assert_eq!(
        ObjectRef::namespace("apps").owner_label(),
        "d2c729823bd88508"
    );
}

#[test]
fn names_longer_than_63_are_cut_to_54_and_a_hash() {
    let at63 = "a".repeat(63);
    assert_eq!(object_name(&at63), at63);
    let long = format!("{}-ingress-public", "r".repeat(60));
    let cut = object_name(&long);
    assert_eq!(cut.len(), 63);
    assert_eq!(&cut[..54], &long[..54]);
    assert_eq!(&cut[54..55], "-");
    // printf '%s' "$long" | sha256sum | cut -c1-8
    assert_eq!(&cut[55..], "00a6309f");
    // Two long names that share their first 54 characters stay apart.
    assert_ne!(object_name(&format!("{long}x")), cut);

    let name = "r".repeat(60);
    let rendered = render(
        &[
            helm_release(
                "apps",
                &name,
                &[(EXPOSE, "web"), (HOST, "web"), (PORT, "80")],
            ),
            web_service(),
        ],
        &Config::default(),
    );
    for object in &rendered.objects {
        assert!(object.name.len() <= MAX_NAME_CHARS, "{}", object.name);
        assert_eq!(object.manifest()["metadata"]["name"], object.name);
    }
    assert_eq!(
        keys(&rendered),
        [
            format!(
                "NetworkPolicy apps/{}",
                object_name(&format!("{name}-ingress-public"))
            ),
            "PeerAuthentication apps/default".into(),
            format!(
                "VirtualService apps/{}",
                object_name(&format!("{name}-ingress"))
            ),
        ]
    );
}

#[test]
fn network_policy_lets_each_gateway_reach_the_target_port() {
    let rendered = render(
        &[web_release(&[(GATEWAYS, "public,internal")]), web_service()],
        &config(TWO_GATEWAYS),
    );
    let np = object(&rendered, "NetworkPolicy apps/web-ingress-internal");
    assert_eq!(np["apiVersion"], "networking.k8s.io/v1");
    assert_eq!(
        np["spec"],
        json!({
            "podSelector": {"matchLabels": {"app": "web"}},
            "policyTypes": ["Ingress"],
            "ingress": [{
                "from": [{
                    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "internal-gw"}},
                    "podSelector": {"matchLabels": {"app": "internal-gw"}},
                }],
                // The container port the Service sends to, not the Service port (80).
                "ports": [{"port": 8080, "protocol": "TCP"}],
            }],
        })
    );
    let public = object(&rendered, "NetworkPolicy apps/web-ingress-public");
    assert_eq!(
        public["spec"]["ingress"][0]["from"][0]["podSelector"],
        json!({"matchLabels": {"app": "public-gw"}})
    );
}

#[test]
fn target_ports_are_kept_as_the_service_writes_them() {
    let cases = [
        (json!([{"port": 80, "targetPort": 8080}]), json!(8080)),
        (
            json!([{"port": 80, "targetPort": "http-web"}]),
            json!("http-web"),
        ),
        (json!([{"port": 80}]), json!(80)),
        (
            json!([{"port": 443, "targetPort": 8443}, {"port": 80, "protocol": "TCP", "targetPort": "web"}]),
            json!("web"),
        ),
    ];
    for (ports, want) in cases {
        let svc = service("apps", "web", json!({"app": "web"}), ports.clone());
        let rendered = render(&[web_release(&[]), svc], &Config::default());
        let np = object(&rendered, "NetworkPolicy apps/web-ingress-public");
        assert_eq!(
            np["spec"]["ingress"][0]["ports"],
            json!([{"port": want, "protocol": "TCP"}]),
            "{ports}"
        );
    }
}

#[test]
fn authorization_policy_allows_the_gateways_principal_in_the_configured_trust_domain() {
    let rendered = render(
        &[web_release(&[(GATEWAYS, "internal")]), web_service()],
        &config(TWO_GATEWAYS),
    );
    let ap = object(&rendered, "AuthorizationPolicy apps/web-ingress-internal");
    assert_eq!(ap["apiVersion"], "security.istio.io/v1");
    assert_eq!(
        ap["spec"],
        json!({
            "action": "ALLOW",
            "selector": {"matchLabels": {"app": "web"}},
            "rules": [{"from": [{"source": {"principals": ["prod.example.org/ns/internal-gw/sa/internal-sa"]}}]}],
        })
    );
    // Off by default.
    let rendered = render(&[web_release(&[]), web_service()], &Config::default());
    assert!(
        rendered
            .objects
            .iter()
            .all(|o| *o.kind != kinds::AUTHORIZATION_POLICY)
    );
}

#[test]
fn the_namespace_peer_authentication_follows_mtls_mode() {
    let pa = |inputs: Vec<Value>| {
        let rendered = render(&inputs, &Config::default());
        assert!(!rendered.has_errors(), "{:?}", problems(&rendered));
        object(&rendered, "PeerAuthentication apps/default")["spec"].clone()
    };
    assert_eq!(
        pa(vec![web_release(&[])]),
        json!({"mtls": {"mode": "STRICT"}})
    );
    assert_eq!(
        pa(vec![web_release(&[(MTLS_MODE, "DISABLE")])]),
        json!({"mtls": {"mode": "DISABLE"}})
    );
    // One that sets none follows the others.
    assert_eq!(
        pa(vec![
            web_release(&[]),
            helm_release("apps", "db", &[(MTLS_MODE, "PERMISSIVE")]),
            helm_release("apps", "cache", &[(MTLS_MODE, "PERMISSIVE")])
        ]),
        json!({"mtls": {"mode": "PERMISSIVE"}})
    );
    // HelmReleases of other namespaces that target this one count; their own namespace gets nothing.
    let rendered = render(
        &[with_target(
            helm_release("flux-system", "db", &[(MTLS_MODE, "PERMISSIVE")]),
            "apps",
        )],
        &Config::default(),
    );
    assert_eq!(keys(&rendered), ["PeerAuthentication apps/default"]);
}

#[test]
fn permissive_ports_peer_authentication_selects_the_workloads_pods() {
    let rendered = render(
        &[deployment(
            "Deployment",
            "api",
            json!({"servicemesh.bigbang.dev/permissivePorts": "9090, 8080"}),
        )],
        &Config::default(),
    );
    let pa = object(&rendered, "PeerAuthentication apps/api-permissive-ports");
    assert_eq!(
        pa["metadata"]["annotations"]["mesh-admission/owner-ref"],
        "apps/Deployment/apps/api"
    );
    assert_eq!(
        pa["spec"],
        json!({
            // The workload's selector, not its template's labels (which have `tier` too).
            "selector": {"matchLabels": {"app": "api"}},
            "portLevelMtls": {"9090": {"mode": "PERMISSIVE"}, "8080": {"mode": "PERMISSIVE"}},
        })
    );
    assert!(
        pa["spec"].get("mtls").is_none(),
        "inherits the namespace's mode"
    );
    // A bare Pod: its own labels, less those the webhook adds at admission.
    let mut pod = deployment(
        "Pod",
        "debug",
        json!({"servicemesh.bigbang.dev/permissivePorts": "8080"}),
    );
    pod["metadata"]["labels"] = json!({"app": "debug", "sidecar.istio.io/inject": "true", "spire-managed-identity": "true"});
    let rendered = render(&[pod], &Config::default());
    let pa = object(&rendered, "PeerAuthentication apps/debug-permissive-ports");
    assert_eq!(
        pa["metadata"]["annotations"]["mesh-admission/owner-ref"],
        "core/Pod/apps/debug"
    );
    assert_eq!(
        pa["spec"]["selector"],
        json!({"matchLabels": {"app": "debug"}})
    );
}

#[test]
fn istiod_egress_comes_from_the_configuration() {
    let cfg = config(
        "mesh:\n  istiod: {namespace: istio-control, selector: {app: istiod, istio.io/rev: stable}, ports: [15012, 15017]}\n",
    );
    let rendered = render(
        &[namespace("apps", json!({"istio-injection": "enabled"}))],
        &cfg,
    );
    let np = object(&rendered, "NetworkPolicy apps/allow-egress-istiod");
    assert_eq!(
        np["metadata"]["annotations"]["mesh-admission/owner-ref"],
        "core/Namespace//apps"
    );
    assert_eq!(
        np["spec"],
        json!({
            "podSelector": {},
            "policyTypes": ["Egress"],
            "egress": [{
                "to": [{
                    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "istio-control"}},
                    "podSelector": {"matchLabels": {"app": "istiod", "istio.io/rev": "stable"}},
                }],
                "ports": [{"port": 15012, "protocol": "TCP"}, {"port": 15017, "protocol": "TCP"}],
            }],
        })
    );
}

/// The errors of section 9: each names the object, and the objects concerned are not generated.
#[test]
fn errors() {
    let cases: Vec<Row> = vec![
        (
            "annotations section 5 refuses: nothing from that HelmRelease",
            "",
            vec![
                web_release(&[(MTLS_MODE, "permissive"), (GATEWAYS, "pubilc")]),
                web_service(),
            ],
            vec![],
            vec![
                r#"error: HelmRelease apps/web: metadata.annotations[servicemesh.bigbang.dev/gateways]: entry 1 ("pubilc") is not a gateway of mesh.gateways; did you mean "public"? (value "pubilc")"#,
                r#"error: HelmRelease apps/web: metadata.annotations[servicemesh.bigbang.dev/mtlsMode]: must be STRICT, PERMISSIVE or DISABLE; did you mean "PERMISSIVE"? (value "permissive")"#,
            ],
        ),
        (
            "two owners of one object: HelmReleases of one name in two namespaces targeting a third",
            "",
            vec![
                with_target(
                    helm_release(
                        "team-a",
                        "web",
                        &[(EXPOSE, "web"), (HOST, "a"), (PORT, "80")],
                    ),
                    "apps",
                ),
                with_target(
                    helm_release(
                        "team-b",
                        "web",
                        &[(EXPOSE, "web"), (HOST, "b"), (PORT, "80")],
                    ),
                    "apps",
                ),
                web_service(),
            ],
            vec!["PeerAuthentication apps/default"],
            vec![
                "error: HelmRelease team-a/web: NetworkPolicy apps/web-ingress-public would also be written for HelmRelease team-b/web; it is not generated",
                "error: HelmRelease team-a/web: VirtualService apps/web-ingress would also be written for HelmRelease team-b/web; it is not generated",
                "error: HelmRelease team-b/web: NetworkPolicy apps/web-ingress-public would also be written for HelmRelease team-a/web; it is not generated",
                "error: HelmRelease team-b/web: VirtualService apps/web-ingress would also be written for HelmRelease team-a/web; it is not generated",
            ],
        ),
        (
            "the same host on a shared gateway",
            "",
            vec![
                web_release(&[]),
                helm_release(
                    "shop",
                    "web2",
                    &[(EXPOSE, "web2"), (HOST, "web"), (PORT, "80")],
                ),
            ],
            vec![
                "PeerAuthentication apps/default",
                "PeerAuthentication shop/default",
            ],
            vec![
                "error: HelmRelease apps/web: VirtualService host web.bigbang.dev on gateway public is also claimed by HelmRelease shop/web2; its VirtualService is not generated",
                "warning: HelmRelease apps/web: Service apps/web is unknown: VirtualService apps/web-ingress is generated, its NetworkPolicy and AuthorizationPolicy are not",
                "error: HelmRelease shop/web2: VirtualService host web.bigbang.dev on gateway public is also claimed by HelmRelease apps/web; its VirtualService is not generated",
                "warning: HelmRelease shop/web2: Service shop/web2 is unknown: VirtualService shop/web2-ingress is generated, its NetworkPolicy and AuthorizationPolicy are not",
            ],
        ),
        (
            "the same host on different gateways is fine",
            TWO_GATEWAYS,
            vec![
                web_release(&[(GATEWAYS, "public")]),
                web_service(),
                helm_release(
                    "apps",
                    "web-int",
                    &[
                        (EXPOSE, "web"),
                        (HOST, "web"),
                        (PORT, "80"),
                        (GATEWAYS, "internal"),
                    ],
                ),
            ],
            vec![
                "AuthorizationPolicy apps/web-ingress-public",
                "AuthorizationPolicy apps/web-int-ingress-internal",
                "NetworkPolicy apps/web-ingress-public",
                "NetworkPolicy apps/web-int-ingress-internal",
                "PeerAuthentication apps/default",
                "VirtualService apps/web-ingress",
                "VirtualService apps/web-int-ingress",
            ],
            vec![],
        ),
        (
            "different mtlsModes for one target namespace",
            "",
            vec![
                web_release(&[(MTLS_MODE, "STRICT")]),
                web_service(),
                helm_release("apps", "db", &[(MTLS_MODE, "DISABLE")]),
                helm_release("apps", "cache", &[(MTLS_MODE, "STRICT")]),
            ],
            vec![
                "NetworkPolicy apps/web-ingress-public",
                "VirtualService apps/web-ingress",
            ],
            vec![
                "error: HelmRelease apps/cache: mtlsMode STRICT for namespace apps disagrees with HelmRelease apps/db (DISABLE); PeerAuthentication apps/default is not generated",
                "error: HelmRelease apps/db: mtlsMode DISABLE for namespace apps disagrees with HelmRelease apps/cache (STRICT), HelmRelease apps/web (STRICT); PeerAuthentication apps/default is not generated",
                "error: HelmRelease apps/web: mtlsMode STRICT for namespace apps disagrees with HelmRelease apps/db (DISABLE); PeerAuthentication apps/default is not generated",
            ],
        ),
        (
            "an object of that kind and name not managed by us: never overwritten",
            "",
            vec![
                web_release(&[]),
                web_service(),
                json!({"apiVersion": "networking.istio.io/v1beta1", "kind": "VirtualService", "metadata": {"name": "web-ingress", "namespace": "apps"}, "spec": {"hosts": ["x"]}}),
            ],
            vec![
                "NetworkPolicy apps/web-ingress-public",
                "PeerAuthentication apps/default",
            ],
            vec![
                "error: HelmRelease apps/web: VirtualService apps/web-ingress exists without the label app.kubernetes.io/managed-by: mesh-admission; it is never overwritten",
            ],
        ),
        (
            "invalid permissivePorts on a workload",
            "",
            vec![deployment(
                "Deployment",
                "api",
                json!({"servicemesh.bigbang.dev/permissivePorts": "8080,,80a", "servicemesh.bigbang.dev/permissivPorts": "1"}),
            )],
            vec![],
            vec![
                r#"error: Deployment apps/api: spec.template.metadata.annotations[servicemesh.bigbang.dev/permissivPorts]: unknown annotation; did you mean "servicemesh.bigbang.dev/permissivePorts"?"#,
                r#"error: Deployment apps/api: spec.template.metadata.annotations[servicemesh.bigbang.dev/permissivePorts]: entry 2 is empty (a stray or doubled comma) (value "8080,,80a")"#,
                r#"error: Deployment apps/api: spec.template.metadata.annotations[servicemesh.bigbang.dev/permissivePorts]: entry 3 must be a port number 1-65535 (value "80a")"#,
            ],
        ),
        (
            "a workload a PeerAuthentication cannot select",
            "",
            vec![{
                let mut d = deployment(
                    "Deployment",
                    "api",
                    json!({"servicemesh.bigbang.dev/permissivePorts": "8080"}),
                );
                d["spec"]["selector"] = json!({"matchExpressions": [{"key": "app", "operator": "In", "values": ["api"]}]});
                d
            }],
            vec![],
            vec![
                "error: Deployment apps/api: spec.selector has matchExpressions, which a PeerAuthentication cannot express; its PeerAuthentication is not generated",
            ],
        ),
        (
            "no gateway selected",
            "mesh:\n  gateways:\n  - {name: a, namespace: gw, selector: {app: a}, serviceAccount: a}\n",
            vec![web_release(&[]), web_service()],
            vec!["PeerAuthentication apps/default"],
            vec![
                "error: HelmRelease apps/web: no gateway selected: no gateway of mesh.gateways is `default: true`; name one with servicemesh.bigbang.dev/gateways",
            ],
        ),
        (
            "one object twice with different content",
            "",
            vec![web_release(&[]), web_release(&[(MTLS_MODE, "PERMISSIVE")])],
            vec![],
            vec![
                "error: HelmRelease apps/web: is in the input more than once with different content; it is not used",
            ],
        ),
        (
            "a field read with the wrong type",
            "",
            vec![
                json!({"apiVersion": HR_API, "kind": "HelmRelease", "metadata": {"name": "web", "namespace": "apps", "annotations": ["x"]}}),
            ],
            vec![],
            vec![
                "error: HelmRelease apps/web: cannot be read: metadata.annotations: invalid type: sequence, expected a map",
            ],
        ),
    ];
    for (case, cfg, inputs, want_objects, want_problems) in cases {
        let rendered = render(&inputs, &config(cfg));
        assert_eq!(keys(&rendered), want_objects, "{case}");
        assert_eq!(problems(&rendered), want_problems, "{case}");
        assert_eq!(
            rendered.has_errors(),
            want_problems.iter().any(|p| p.starts_with("error")),
            "{case}"
        );
    }
}

/// The warnings of section 9: the exit code is unchanged, and what can be generated is.
#[test]
fn warnings() {
    let svc = |selector: Value, ports: Value| service("apps", "web", selector, ports);
    let incomplete = |why: &str| {
        format!(
            "warning: HelmRelease apps/web: Service apps/web {why}: VirtualService apps/web-ingress is generated, its NetworkPolicy and AuthorizationPolicy are not"
        )
    };
    let cases: Vec<WarningRow> = vec![
        ("Service unknown", vec![web_release(&[])], vec!["PeerAuthentication apps/default", "VirtualService apps/web-ingress"], vec![incomplete("is unknown")]),
        ("Service of that name in another namespace", vec![web_release(&[]), service("other", "web", json!({"app": "web"}), json!([{"port": 80}]))], vec!["PeerAuthentication apps/default", "VirtualService apps/web-ingress"], vec![incomplete("is unknown")]),
        ("no selector", vec![web_release(&[]), svc(json!(null), json!([{"port": 80}]))], vec!["PeerAuthentication apps/default", "VirtualService apps/web-ingress"], vec![incomplete("has no selector")]),
        ("empty selector", vec![web_release(&[]), svc(json!({}), json!([{"port": 80}]))], vec!["PeerAuthentication apps/default", "VirtualService apps/web-ingress"], vec![incomplete("has no selector")]),
        ("no such port", vec![web_release(&[]), svc(json!({"app": "web"}), json!([{"port": 8080}]))], vec!["PeerAuthentication apps/default", "VirtualService apps/web-ingress"], vec![incomplete("has no TCP port 80")]),
        ("only a UDP port of that number", vec![web_release(&[]), svc(json!({"app": "web"}), json!([{"port": 80, "protocol": "UDP"}]))], vec!["PeerAuthentication apps/default", "VirtualService apps/web-ingress"], vec![incomplete("has no TCP port 80")]),
        (
            "someone else's namespace-wide PeerAuthentication",
            vec![
                web_release(&[]),
                web_service(),
                json!({"apiVersion": "security.istio.io/v1beta1", "kind": "PeerAuthentication", "metadata": {"name": "mtls", "namespace": "apps"}, "spec": {"mtls": {"mode": "STRICT"}}}),
                json!({"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication", "metadata": {"name": "a-per-pod", "namespace": "apps"}, "spec": {"selector": {"matchLabels": {"app": "x"}}}}),
            ],
            vec!["NetworkPolicy apps/web-ingress-public", "VirtualService apps/web-ingress"],
            vec!["warning: Namespace apps: PeerAuthentication apps/mtls is namespace-wide and not managed by mesh-admission; Istio applies only one, so apps/default is not generated and mtls stays in force".into()],
        ),
    ];
    for (case, inputs, want_objects, want_problems) in cases {
        let rendered = render(&inputs, &Config::default());
        assert_eq!(keys(&rendered), want_objects, "{case}");
        assert_eq!(problems(&rendered), want_problems, "{case}");
        assert!(!rendered.has_errors(), "{case}");
    }
}

#[test]
fn our_own_output_in_the_input_changes_nothing() {
    let inputs = vec![
        web_release(&[]),
        web_service(),
        namespace("apps", json!({})),
        deployment(
            "Deployment",
            "api",
            json!({"servicemesh.bigbang.dev/permissivePorts": "8080"}),
        ),
    ];
    let first = render(&inputs, &Config::default());
    assert_eq!(first.objects.len(), 5, "{:?}", keys(&first));
    let mut again = inputs.clone();
    again.extend(first.objects.iter().map(|o| o.manifest()));
    assert_eq!(render(&again, &Config::default()), first);
}

#[test]
fn helm_releases_of_every_flux_version_are_read() {
    for version in ["v2", "v2beta1", "v2beta2"] {
        let mut release = web_release(&[]);
        release["apiVersion"] = json!(format!("helm.toolkit.fluxcd.io/{version}"));
        let rendered = render(&[release, web_service()], &Config::default());
        assert_eq!(rendered.objects.len(), 3, "{version}");
    }
    // Another group's HelmRelease is not ours.
    let mut release = web_release(&[]);
    release["apiVersion"] = json!("example.com/v1");
    assert_eq!(render(&[release], &Config::default()), Rendered::default());
}

#[test]
fn a_host_many_claim_names_five_others_and_counts_the_rest() {
    let releases: Vec<Value> = (0..8)
        .map(|n| {
            helm_release(
                &format!("team-{n}"),
                "web",
                &[(EXPOSE, "web"), (HOST, "web"), (PORT, "80")],
            )
        })
        .collect();
    let rendered = render(&releases, &Config::default());
    let shared: Vec<String> = problems(&rendered)
        .into_iter()
        .filter(|p| p.contains("also claimed by"))
        .collect();
    assert_eq!(shared.len(), 8, "{shared:?}");
    assert_eq!(
        shared[0],
        "error: HelmRelease team-0/web: VirtualService host web.bigbang.dev on gateway public is also claimed by HelmRelease team-1/web, HelmRelease team-2/web, HelmRelease team-3/web, HelmRelease team-4/web, HelmRelease team-5/web and 2 more; its VirtualService is not generated"
    );
    assert!(shared[7].contains("by HelmRelease team-0/web, HelmRelease team-1/web, HelmRelease team-2/web, HelmRelease team-3/web, HelmRelease team-4/web and 2 more;"), "{}", shared[7]);
}
