//! The HelmRelease table of DESIGN.md section 5, row by row.

use serde_json::{Map, Value, json};

use super::*;
use crate::config::Config;
use crate::policy::object::decode;

/// Annotations of a test HelmRelease, in order.
type Annotations<'a> = Vec<(&'a str, &'a str)>;

fn helm_release(annotations: &[(&str, &str)]) -> Value {
    let annotations: Map<String, Value> = annotations
        .iter()
        .map(|(k, v)| ((*k).to_owned(), Value::String((*v).to_owned())))
        .collect();
    json!({
        "apiVersion": "helm.toolkit.fluxcd.io/v2",
        "kind": "HelmRelease",
        "metadata": {"name": "grafana", "namespace": "monitoring", "annotations": annotations},
        "spec": {"chart": {"spec": {"chart": "grafana"}}},
    })
}

/// Every finding for a HelmRelease with these annotations, rendered as in a denial.
fn findings(annotations: &[(&str, &str)]) -> Vec<String> {
    let text = helm_release(annotations).to_string();
    let hr: HelmRelease = decode(&text).expect("HelmRelease decodes");
    let found = validate(&hr, &Config::default().mesh);
    assert!(found.iter().all(Finding::is_error), "{found:?}");
    found.iter().map(Finding::to_string).collect()
}

/// The findings for `key: value` on an otherwise complete route, without the field path (which is
/// checked to be `key`'s).
fn problems(key: &str, value: &str) -> Vec<String> {
    let mut annotations = vec![(EXPOSE, "grafana"), (HOST, "grafana"), (PORT, "80")];
    annotations.retain(|(k, _)| *k != key);
    annotations.push((key, value));
    let prefix = format!("metadata.annotations[{key}]: ");
    findings(&annotations)
        .into_iter()
        .map(|f| {
            f.strip_prefix(&prefix)
                .unwrap_or_else(|| panic!("{f} is not about {key}"))
                .to_owned()
        })
        .collect()
}

fn check_table(key: &str, cases: &[(&str, &[&str])]) {
    for (value, expected) in cases {
        assert_eq!(problems(key, value), *expected, "{key}={value:?}");
    }
}

#[test]
fn the_contract_example_renders_exactly() {
    assert_eq!(
        findings(&[(EXPOSE, "grafana"), (HOST, "grafana"), (PORT, "80a")]),
        [
            r#"metadata.annotations[servicemesh.bigbang.dev/port]: must be a port number 1-65535 (value "80a")"#
        ]
    );
}

#[test]
fn no_annotations_or_foreign_ones_are_fine() {
    assert!(findings(&[]).is_empty());
    assert!(
        findings(&[
            ("meta.helm.sh/release-name", "x"),
            ("kustomize.toolkit.fluxcd.io/name", "")
        ])
        .is_empty()
    );
    let text = r#"{"kind":"HelmRelease","metadata":{"annotations":null}}"#;
    assert!(validate(&decode(text).unwrap(), &Config::default().mesh).is_empty());
    assert!(validate(&decode("{}").unwrap(), &Config::default().mesh).is_empty());
}

#[test]
fn a_complete_route_is_valid() {
    assert!(findings(&[(EXPOSE, "grafana"), (HOST, "grafana"), (PORT, "80")]).is_empty());
    // The corpus's Big Bang example (pepr-legacy podinfo).
    assert!(
        findings(&[
            (EXPOSE, "podinfo-podinfo"),
            (HOST, "podinfo"),
            (PORT, "9898")
        ])
        .is_empty()
    );
}

#[test]
fn port_is_a_decimal_port() {
    let range = r#"must be a port number 1-65535"#;
    check_table(
        PORT,
        &[
            ("1", &[]),
            ("80", &[]),
            ("65535", &[]),
            ("0", &[&format!(r#"{range} (value "0")"#)]),
            ("65536", &[&format!(r#"{range} (value "65536")"#)]),
            ("80a", &[&format!(r#"{range} (value "80a")"#)]),
            ("http", &[&format!(r#"{range} (value "http")"#)]),
            (
                " 80",
                &[&format!(r#"{range} without spaces (value " 80")"#)],
            ),
            (
                "80 ",
                &[&format!(r#"{range} without spaces (value "80 ")"#)],
            ),
            (
                "+80",
                &[&format!(r#"{range} without a sign (value "+80")"#)],
            ),
            (
                "-80",
                &[&format!(r#"{range} without a sign (value "-80")"#)],
            ),
            (
                "080",
                &[&format!(r#"{range} without leading zeros (value "080")"#)],
            ),
            ("", &[r#"must not be empty (value "")"#]),
        ],
    );
}

#[test]
fn expose_is_a_service_name() {
    let ok63 = format!("a{}", "b".repeat(62));
    let long64 = format!("a{}", "b".repeat(63));
    let too_long = format!(
        r#"must be a Service name (RFC 1035 label): is 64 characters long, at most 63 are allowed (value "{long64}")"#
    );
    check_table(
        EXPOSE,
        &[
            ("grafana", &[]),
            ("kube-prometheus-stack-grafana", &[]),
            ("a", &[]),
            ("a1", &[]),
            (&ok63, &[]),
            (&long64, &[&too_long]),
            ("", &[r#"must not be empty (value "")"#]),
            (
                "1grafana",
                &[
                    r#"must be a Service name (RFC 1035 label): must start with a letter (value "1grafana")"#,
                ],
            ),
            (
                "-grafana",
                &[
                    r#"must be a Service name (RFC 1035 label): must start with a letter (value "-grafana")"#,
                ],
            ),
            (
                "grafana-",
                &[
                    r#"must be a Service name (RFC 1035 label): must end with a letter or digit (value "grafana-")"#,
                ],
            ),
            (
                "Grafana",
                &[
                    r#"must be a Service name (RFC 1035 label): must be lower-case (value "Grafana")"#,
                ],
            ),
            (
                "grafana.monitoring",
                &[
                    r#"must be a Service name (RFC 1035 label): must contain only a-z, 0-9 and '-', not '.' (value "grafana.monitoring")"#,
                ],
            ),
            (
                "my_svc",
                &[
                    r#"must be a Service name (RFC 1035 label): must contain only a-z, 0-9 and '-', not '_' (value "my_svc")"#,
                ],
            ),
            (
                " grafana",
                &[
                    r#"must be a Service name (RFC 1035 label): must contain only a-z, 0-9 and '-', not ' ' (value " grafana")"#,
                ],
            ),
        ],
    );
}

#[test]
fn host_is_a_subdomain_prefix() {
    let l63 = "a".repeat(63);
    let host253 = format!("{l63}.{l63}.{l63}.{}", "d".repeat(61));
    let host254 = format!("{l63}.{l63}.{l63}.{}", "d".repeat(62));
    assert_eq!((host253.len(), host254.len()), (253, 254));
    let host254_error = format!(
        r#"is 254 characters long, at most 253 are allowed (value "{}"…)"#,
        &host254[..80]
    );
    let label64 = format!("a{l63}");
    let label64_error = format!(
        r#"must be a DNS label (RFC 1123): is 64 characters long, at most 63 are allowed (value "{label64}")"#
    );
    check_table(
        HOST,
        &[
            ("grafana", &[]),
            ("logs.admin", &[]),
            ("a.b.c.d", &[]),
            ("1st", &[]),
            (&l63, &[]),
            (&host253, &[]),
            (&host254, &[&host254_error]),
            (&label64, &[&label64_error]),
            ("", &[r#"must not be empty (value "")"#]),
            (
                "https://grafana",
                &[
                    r#"must not contain a scheme: only the subdomain, e.g. "grafana" (value "https://grafana")"#,
                ],
            ),
            (
                "grafana:443",
                &[
                    r#"must not contain a port (that is servicemesh.bigbang.dev/port) (value "grafana:443")"#,
                ],
            ),
            (
                "grafana/login",
                &[r#"must not contain a path (value "grafana/login")"#],
            ),
            ("*.apps", &[r#"wildcards are not allowed (value "*.apps")"#]),
            ("*", &[r#"wildcards are not allowed (value "*")"#]),
            (
                "https://grafana:443/login",
                &[
                    r#"must not contain a scheme: only the subdomain, e.g. "grafana" (value "https://grafana:443/login")"#,
                    r#"must not contain a path (value "https://grafana:443/login")"#,
                    r#"must not contain a port (that is servicemesh.bigbang.dev/port) (value "https://grafana:443/login")"#,
                ],
            ),
            (
                ".grafana",
                &[r#"must not start or end with '.' or contain ".." (value ".grafana")"#],
            ),
            (
                "grafana.",
                &[r#"must not start or end with '.' or contain ".." (value "grafana.")"#],
            ),
            (
                "a..b",
                &[r#"must not start or end with '.' or contain ".." (value "a..b")"#],
            ),
            (
                "Grafana",
                &[r#"must be a DNS label (RFC 1123): must be lower-case (value "Grafana")"#],
            ),
            (
                "logs.Admin",
                &[r#"label 2 ("Admin") must be lower-case (value "logs.Admin")"#],
            ),
            (
                "logs.-admin",
                &[r#"label 2 ("-admin") must start with a letter or digit (value "logs.-admin")"#],
            ),
            (
                "grafana ",
                &[
                    r#"must be a DNS label (RFC 1123): must contain only a-z, 0-9 and '-', not ' ' (value "grafana ")"#,
                ],
            ),
            (
                "my_app",
                &[
                    r#"must be a DNS label (RFC 1123): must contain only a-z, 0-9 and '-', not '_' (value "my_app")"#,
                ],
            ),
        ],
    );
}

#[test]
fn mtls_mode_is_exact() {
    let expected = "must be STRICT, PERMISSIVE or DISABLE";
    let cases: &[(&str, &[&str])] = &[
        ("STRICT", &[]),
        ("PERMISSIVE", &[]),
        ("DISABLE", &[]),
        (
            "permissive",
            &[&format!(
                r#"{expected}; did you mean "PERMISSIVE"? (value "permissive")"#
            )],
        ),
        (
            "Strict",
            &[&format!(
                r#"{expected}; did you mean "STRICT"? (value "Strict")"#
            )],
        ),
        (
            "disable",
            &[&format!(
                r#"{expected}; did you mean "DISABLE"? (value "disable")"#
            )],
        ),
        (
            " STRICT",
            &[&format!(
                r#"{expected}; did you mean "STRICT"? (value " STRICT")"#
            )],
        ),
        ("DISABLED", &[&format!(r#"{expected} (value "DISABLED")"#)]),
        ("UNSET", &[&format!(r#"{expected} (value "UNSET")"#)]),
        ("true", &[&format!(r#"{expected} (value "true")"#)]),
        (
            "",
            &[r#"must not be empty; leave it out for the default, STRICT (value "")"#],
        ),
    ];
    for (value, want) in cases {
        // mtlsMode stands on its own: no route needed.
        let got: Vec<String> = findings(&[(MTLS_MODE, value)]);
        let want: Vec<String> = want
            .iter()
            .map(|w| format!("metadata.annotations[{MTLS_MODE}]: {w}"))
            .collect();
        assert_eq!(got, want, "{value:?}");
    }
}

#[test]
fn permissive_ports_belong_on_pods() {
    assert_eq!(
        findings(&[(PERMISSIVE_PORTS, "8080")]),
        [format!(
            "metadata.annotations[{PERMISSIVE_PORTS}]: belongs on Pods (the workload's pod template), not on the HelmRelease: it sets PERMISSIVE mTLS on ports of the pods it annotates"
        )]
    );
}

#[test]
fn unknown_keys_are_denied_with_the_nearest_known_one() {
    let cases: &[(&str, &str)] = &[
        (
            "servicemesh.bigbang.dev/mtlsmode",
            r#"unknown annotation; did you mean "servicemesh.bigbang.dev/mtlsMode"?"#,
        ),
        (
            "servicemesh.bigbang.dev/MTLSMODE",
            r#"unknown annotation; did you mean "servicemesh.bigbang.dev/mtlsMode"?"#,
        ),
        (
            "servicemesh.bigbang.dev/mtlMode",
            r#"unknown annotation; did you mean "servicemesh.bigbang.dev/mtlsMode"?"#,
        ),
        (
            "servicemesh.bigbang.dev/permissiveports",
            r#"unknown annotation; did you mean "servicemesh.bigbang.dev/permissivePorts"?"#,
        ),
        (
            "servicemesh.bigbang.dev/virtualService",
            "unknown annotation (known: servicemesh.bigbang.dev/expose, servicemesh.bigbang.dev/host, servicemesh.bigbang.dev/port, servicemesh.bigbang.dev/mtlsMode, servicemesh.bigbang.dev/permissivePorts, servicemesh.bigbang.dev/gateways)",
        ),
        (
            "servicemesh.bigbang.dev/",
            "unknown annotation (known: servicemesh.bigbang.dev/expose, servicemesh.bigbang.dev/host, servicemesh.bigbang.dev/port, servicemesh.bigbang.dev/mtlsMode, servicemesh.bigbang.dev/permissivePorts, servicemesh.bigbang.dev/gateways)",
        ),
    ];
    for (key, message) in cases {
        assert_eq!(
            findings(&[(key, "x")]),
            [format!("metadata.annotations[{key}]: {message}")],
            "{key}"
        );
    }
    // The typo of a route key is reported, and so is the route it leaves incomplete.
    assert_eq!(
        findings(&[
            ("servicemesh.bigbang.dev/expsoe", "grafana"),
            (HOST, "grafana"),
            (PORT, "80")
        ]),
        [
            r#"metadata.annotations[servicemesh.bigbang.dev/expsoe]: unknown annotation; did you mean "servicemesh.bigbang.dev/expose"?"#,
            "metadata.annotations[servicemesh.bigbang.dev/expose]: missing: host and port are set, and a VirtualService needs expose, host and port together",
        ]
    );
}

#[test]
fn expose_host_and_port_come_together() {
    let missing = |key: &str, set: &str| {
        format!(
            "metadata.annotations[{key}]: missing: {set}, and a VirtualService needs expose, host and port together"
        )
    };
    let cases: Vec<(Annotations, Vec<String>)> = vec![
        (vec![], vec![]),
        (
            vec![(EXPOSE, "grafana"), (HOST, "grafana"), (PORT, "80")],
            vec![],
        ),
        (
            vec![(EXPOSE, "grafana")],
            vec![
                missing(HOST, "expose is set"),
                missing(PORT, "expose is set"),
            ],
        ),
        (
            vec![(EXPOSE, "grafana"), (HOST, "grafana")],
            vec![missing(PORT, "expose and host are set")],
        ),
        (
            vec![(PORT, "80")],
            vec![missing(EXPOSE, "port is set"), missing(HOST, "port is set")],
        ),
        (
            // An empty value is present (and wrong): it counts as set.
            vec![(EXPOSE, ""), (HOST, "grafana")],
            vec![
                format!(r#"metadata.annotations[{EXPOSE}]: must not be empty (value "")"#),
                missing(PORT, "expose and host are set"),
            ],
        ),
    ];
    for (annotations, want) in cases {
        assert_eq!(findings(&annotations), want, "{annotations:?}");
    }
}

#[test]
fn every_problem_in_one_object_is_reported() {
    let got = findings(&[
        (EXPOSE, "Grafana"),
        (HOST, "https://grafana"),
        (PORT, "80a"),
        (MTLS_MODE, "strict"),
        ("servicemesh.bigbang.dev/hots", "x"),
    ]);
    assert_eq!(got.len(), 5, "{got:#?}");
    for key in [
        EXPOSE,
        HOST,
        PORT,
        MTLS_MODE,
        "servicemesh.bigbang.dev/hots",
    ] {
        assert!(
            got.iter()
                .any(|f| f.starts_with(&format!("metadata.annotations[{key}]: "))),
            "{key} missing from {got:#?}"
        );
    }
}

/// The findings for a `gateways` value with gateways `public`, `internal` and `admin` configured.
fn gateway_problems(value: &str) -> Vec<String> {
    let mesh = Config::from_yaml(
        "mesh:\n  gateways:\n  - {name: public, namespace: istio-system, selector: {app: pub}, serviceAccount: pub, default: true}\n  - {name: internal, namespace: istio-system, selector: {app: int}, serviceAccount: int}\n  - {name: admin, namespace: admin-gw, selector: {app: adm}, serviceAccount: adm}\n",
    )
    .unwrap()
    .mesh;
    let text = helm_release(&[(GATEWAYS, value)]).to_string();
    let prefix = format!("metadata.annotations[{GATEWAYS}]: ");
    validate(&decode(&text).unwrap(), &mesh)
        .iter()
        .map(|f| {
            assert!(f.is_error(), "{f}");
            let text = f.to_string();
            text.strip_prefix(&prefix)
                .unwrap_or_else(|| panic!("{text} is not about gateways"))
                .to_owned()
        })
        .collect()
}

#[test]
fn gateways_name_configured_gateways() {
    let v = |value: &str| format!("(value {value:?})");
    let cases: &[(&str, &[String])] = &[
        ("public", &[]),
        ("internal,admin", &[]),
        ("admin,public,internal", &[]),
        (
            "",
            &[format!(
                "must not be empty; leave it out for the default gateways {}",
                v("")
            )],
        ),
        (
            "pubilc",
            &[format!(
                r#"entry 1 ("pubilc") is not a gateway of mesh.gateways; did you mean "public"? {}"#,
                v("pubilc")
            )],
        ),
        (
            "Internal",
            &[format!(
                r#"entry 1 ("Internal") is not a gateway of mesh.gateways; did you mean "internal"? {}"#,
                v("Internal")
            )],
        ),
        (
            "public,private-gw",
            &[format!(
                r#"entry 2 ("private-gw") is not a gateway of mesh.gateways; configured: public, internal, admin {}"#,
                v("public,private-gw")
            )],
        ),
        (
            "public,,admin",
            &[format!(
                "entry 2 is empty (a stray or doubled comma) {}",
                v("public,,admin")
            )],
        ),
        (
            "public,",
            &[format!(
                "entry 2 is empty (a stray or doubled comma) {}",
                v("public,")
            )],
        ),
        (
            "public, admin",
            &[format!(
                r#"entry 2 (" admin") must not have spaces around it {}"#,
                v("public, admin")
            )],
        ),
        (
            "admin,public,admin",
            &[format!(
                "entry 3 repeats entry 1 {}",
                v("admin,public,admin")
            )],
        ),
    ];
    for (value, expected) in cases {
        assert_eq!(gateway_problems(value), *expected, "{value:?}");
    }
}

#[test]
fn gateways_with_none_configured_says_so_and_the_key_is_known() {
    let mesh = Config::from_yaml("mesh: {gateways: []}").unwrap().mesh;
    let text = helm_release(&[(GATEWAYS, "public")]).to_string();
    let found = validate(&decode(&text).unwrap(), &mesh);
    assert_eq!(found.len(), 1);
    assert!(
        found[0].message.ends_with("no gateways are configured"),
        "{}",
        found[0]
    );
    // A slip in the key itself is named.
    let text = helm_release(&[("servicemesh.bigbang.dev/gateway", "public")]).to_string();
    let found = validate(&decode(&text).unwrap(), &Config::default().mesh);
    assert!(
        found[0]
            .message
            .contains(r#"did you mean "servicemesh.bigbang.dev/gateways"?"#),
        "{}",
        found[0]
    );
}
