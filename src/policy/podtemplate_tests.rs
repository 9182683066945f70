//! The pod table of DESIGN.md section 5, row by row, on a bare Pod (the workload kinds, which only move
//! the template, are covered in `validate_tests.rs`).

use serde_json::{Value, json};

use super::*;
use crate::policy::finding::Severity;
use crate::policy::object::decode;

const PERMISSIVE: &str = "servicemesh.bigbang.dev/permissivePorts";

/// Findings as `E field: …` / `W field: …`.
fn check(pod: &Value) -> Vec<String> {
    let text = pod.to_string();
    let template: Pod = decode(&text).expect("pod decodes");
    validate(&template, "")
        .expect("containers decode")
        .iter()
        .map(|f| {
            let mark = match f.severity {
                Severity::Error => 'E',
                Severity::Warning => 'W',
            };
            format!("{mark} {f}")
        })
        .collect()
}

fn pod_with_ports(annotations: Value, ports: &[u16]) -> Value {
    let ports: Vec<Value> = ports.iter().map(|p| json!({"containerPort": p})).collect();
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "web", "annotations": annotations},
        "spec": {"containers": [{"name": "web", "image": "web", "ports": ports}]},
    })
}

#[test]
fn permissive_ports_grammar() {
    let field = format!("metadata.annotations[{PERMISSIVE}]");
    let e = |m: &str| format!("E {field}: {m}");
    let w = |m: &str| format!("W {field}: {m}");
    let declared = [8080, 9090, 1, 65535];
    let cases: Vec<(&str, Vec<String>)> = vec![
        ("8080", vec![]),
        ("8080,9090", vec![]),
        ("8080, 9090", vec![]),
        (" 8080 , 9090 ", vec![]),
        ("1,65535", vec![]),
        ("", vec![e(r#"must not be empty (value "")"#)]),
        (" ", vec![e(r#"must not be empty (value " ")"#)]),
        (
            "0",
            vec![e(r#"entry 1 must be a port number 1-65535 (value "0")"#)],
        ),
        (
            "65536",
            vec![e(
                r#"entry 1 must be a port number 1-65535 (value "65536")"#,
            )],
        ),
        (
            "8080,80a",
            vec![e(r#"entry 2 must be a port number 1-65535 (value "80a")"#)],
        ),
        (
            "+8080",
            vec![e(
                r#"entry 1 must be a port number 1-65535 without a sign (value "+8080")"#,
            )],
        ),
        (
            "08080",
            vec![e(
                r#"entry 1 must be a port number 1-65535 without leading zeros (value "08080")"#,
            )],
        ),
        (
            "8080 9090",
            vec![e(
                r#"entry 1 must be a port number 1-65535 without spaces (value "8080 9090")"#,
            )],
        ),
        (
            "8080;9090",
            vec![e(
                r#"entry 1 must be a port number 1-65535 (value "8080;9090")"#,
            )],
        ),
        (
            "8080,,9090",
            vec![e(
                r#"entry 2 is empty (a stray or doubled comma) (value "8080,,9090")"#,
            )],
        ),
        (
            "8080,",
            vec![e(
                r#"entry 2 is empty (a stray or doubled comma) (value "8080,")"#,
            )],
        ),
        (
            ",8080",
            vec![e(
                r#"entry 1 is empty (a stray or doubled comma) (value ",8080")"#,
            )],
        ),
        (
            "8080,9090,8080",
            vec![e(r#"entry 3 repeats entry 1 (value "8080")"#)],
        ),
        (
            "8080, 8080 ",
            vec![e(r#"entry 2 repeats entry 1 (value "8080")"#)],
        ),
        // Declared or not is only a warning.
        ("7070", vec![w("port 7070: no container declares it")]),
        (
            "8080,7070,0",
            vec![
                w("port 7070: no container declares it"),
                e(r#"entry 3 must be a port number 1-65535 (value "0")"#),
            ],
        ),
    ];
    for (value, want) in cases {
        let pod = pod_with_ports(json!({PERMISSIVE: value}), &declared);
        assert_eq!(check(&pod), want, "{value:?}");
    }
}

#[test]
fn native_sidecars_declare_ports_and_ordinary_init_containers_do_not() {
    let pod = json!({
        "metadata": {"annotations": {PERMISSIVE: "15000,9000"}},
        "spec": {
            "initContainers": [
                {"name": "proxy", "restartPolicy": "Always", "ports": [{"containerPort": 15000}]},
                {"name": "migrate", "ports": [{"containerPort": 9000}]},
            ],
            "containers": [{"name": "app"}],
        },
    });
    assert_eq!(
        check(&pod),
        [format!(
            "W metadata.annotations[{PERMISSIVE}]: port 9000: no container declares it"
        )]
    );
}

#[test]
fn helm_release_keys_on_a_pod_only_warn() {
    for name in ["mtlsMode", "expose", "host", "port", "gateways"] {
        let key = format!("servicemesh.bigbang.dev/{name}");
        let pod = pod_with_ports(json!({&key: "anything"}), &[]);
        assert_eq!(
            check(&pod),
            [format!(
                "W metadata.annotations[{key}]: belongs on the HelmRelease; ignored on pods"
            )]
        );
    }
}

#[test]
fn unknown_big_bang_keys_on_a_pod_are_denied_with_a_suggestion() {
    let cases = [
        (
            "servicemesh.bigbang.dev/permissiveports",
            r#"unknown annotation; did you mean "servicemesh.bigbang.dev/permissivePorts"?"#,
        ),
        (
            "servicemesh.bigbang.dev/mtlsmode",
            r#"unknown annotation; did you mean "servicemesh.bigbang.dev/mtlsMode"?"#,
        ),
    ];
    for (key, message) in cases {
        let pod = pod_with_ports(json!({key: "8080"}), &[8080]);
        assert_eq!(
            check(&pod),
            [format!("E metadata.annotations[{key}]: {message}")]
        );
    }
    // Not ours: ignored.
    let pod = pod_with_ports(
        json!({"sidecar.istio.io/inject": "maybe", "bigbang.dev/x": ""}),
        &[],
    );
    assert!(check(&pod).is_empty());
}

fn contrast_pod(env_on_init: Value, env_on_app: Value, annotations: Value) -> Value {
    json!({
        "metadata": {"name": "web", "annotations": annotations},
        "spec": {
            "initContainers": [
                {"name": "initializer", "env": [{"name": "COORDINATOR_HOST", "value": "coordinator"}]},
                {"name": "sidecar", "restartPolicy": "Always", "env": env_on_init},
            ],
            "containers": [{"name": "web-svc", "env": env_on_app}],
        },
    })
}

#[test]
fn contrast_settings_in_env_vars() {
    let good = contrast_pod(
        json!([
            {"name": "EDG_INGRESS_PROXY_CONFIG", "value": "web#8080#false##metrics#7890#true"},
            {"name": "EDG_EGRESS_PROXY_CONFIG", "value": "billing#127.137.0.1:8081#billing-svc:8080##cart#127.137.0.2:8081#cart-svc:8080"},
        ]),
        json!([{"name": "CONTRAST_INGRESS_PROXY_CONFIG", "value": ""}]),
        json!({}),
    );
    assert!(check(&good).is_empty());

    let bad = contrast_pod(
        json!([
            {"name": "EDG_INGRESS_PROXY_CONFIG", "value": "web#8080#false##web#0#true"},
            {"name": "CONTRAST_EGRESS_PROXY_CONFIG", "value": "x#10.0.0.1:80#svc:80"},
            // Resolved by the kubelet later: not ours to check.
            {"name": "EDG_EGRESS_PROXY_CONFIG", "valueFrom": {"configMapKeyRef": {"name": "c", "key": "k"}}},
        ]),
        json!([
            {"name": "CONTRAST_INGRESS_PROXY_CONFIG", "value": "api#80#yes"},
            {"name": "EDG_PROXY_CONFIG", "value": "not#checked"},
        ]),
        json!({}),
    );
    assert_eq!(
        check(&bad),
        [
            r###"E spec.initContainers[1].env[EDG_INGRESS_PROXY_CONFIG]: entry 2 ("web#0#true"): port must be a port number 1-65535 (value "0")"###,
            r###"E spec.initContainers[1].env[CONTRAST_EGRESS_PROXY_CONFIG]: entry 1 ("x#10.0.0.1:80#svc:80"): listen IP must be an IPv4 address inside 127.0.0.0/8 (value "10.0.0.1")"###,
            r###"E spec.containers[0].env[CONTRAST_INGRESS_PROXY_CONFIG]: entry 1 ("api#80#yes"): the last field must be true or false (Go ParseBool: 1 t T TRUE true True 0 f F FALSE false False) (value "yes")"###,
        ]
    );
}

#[test]
fn contrast_settings_in_annotations() {
    let pod = contrast_pod(
        json!([]),
        json!([]),
        json!({
            "contrast.edgeless.systems/servicemesh-ingress": "web#8080#false",
            "contrast.edgeless.systems/servicemesh-egress": "a#127.0.0.1:80#a:1##b#127.0.0.1:80#b:1",
        }),
    );
    assert_eq!(
        check(&pod),
        [
            r###"E metadata.annotations[contrast.edgeless.systems/servicemesh-egress]: entry 2 ("b#127.0.0.1:80#b:1"): listens on 127.0.0.1:80 like entry 1"###
        ]
    );
    let empty = contrast_pod(
        json!([]),
        json!([]),
        json!({"contrast.edgeless.systems/servicemesh-ingress": ""}),
    );
    assert!(check(&empty).is_empty());
}

#[test]
fn every_problem_in_one_pod_is_reported() {
    let pod = contrast_pod(
        json!([{"name": "EDG_INGRESS_PROXY_CONFIG", "value": "web#0#true"}]),
        json!([]),
        json!({
            PERMISSIVE: "8080,8080",
            "servicemesh.bigbang.dev/permisivePorts": "8080",
            "contrast.edgeless.systems/servicemesh-ingress": "web#8080",
            "servicemesh.bigbang.dev/mtlsMode": "STRICT",
        }),
    );
    let found = check(&pod);
    let errors = found.iter().filter(|f| f.starts_with('E')).count();
    let warnings = found.iter().filter(|f| f.starts_with('W')).count();
    // Duplicate entry, unknown key, bad annotation, bad env var; undeclared 8080 and mtlsMode warn.
    assert_eq!((errors, warnings), (4, 2), "{found:#?}");
}

#[test]
fn a_pod_without_metadata_or_spec_has_nothing_to_report() {
    for pod in [
        json!({}),
        json!({"metadata": null, "spec": null}),
        json!({"spec": {"containers": null, "initContainers": null}}),
        json!({"spec": {"containers": [{"env": null, "ports": null}]}}),
        json!({"spec": {"containers": [{"env": [{"value": "x"}, {"name": "EDG_INGRESS_PROXY_CONFIG"}]}]}}),
    ] {
        assert!(check(&pod).is_empty(), "{pod}");
    }
}

#[test]
fn a_read_field_with_the_wrong_type_is_a_decode_error() {
    let cases = [
        (
            json!({"metadata": {"annotations": ["a"]}}),
            "metadata.annotations",
        ),
        (
            json!({"spec": {"containers": {"name": "x"}}}),
            "spec.containers",
        ),
        (
            json!({"spec": {"initContainers": [{"env": [{"name": "EDG_INGRESS_PROXY_CONFIG", "value": 8080}]}]}}),
            "spec.initContainers[0].env[0].value",
        ),
        (
            json!({"spec": {"containers": [{"ports": [{"containerPort": "8080"}]}]}}),
            "spec.containers[0].ports[0].containerPort",
        ),
    ];
    for (pod, path) in cases {
        let text = pod.to_string();
        let err = decode::<Pod>(&text)
            .and_then(|pod| validate(&pod, ""))
            .expect_err("wrong type");
        assert_eq!(err.path, path, "{pod}");
    }
}
