//! The VirtualService rows of DESIGN.md section 10.

use serde_json::{Value, json};

use super::*;
use crate::policy::object::decode;

fn findings(object: &Value) -> Vec<String> {
    let text = object.to_string();
    let view: VirtualService = decode(&text).expect("decodes");
    validate(&view)
        .iter()
        .map(|f| {
            if !f.is_error() {
                assert!(
                    f.to_string().chars().count() <= crate::policy::MAX_WARNING_CHARS,
                    "{f}"
                );
            }
            format!("{} {f}", if f.is_error() { "E" } else { "W" })
        })
        .collect()
}

/// The seed's route (kubestock-istio-mtls.md): timeout 30s, 3 attempts of 10s each.
fn route(timeout: Option<&str>, retries: Value) -> Value {
    let mut http = json!({"route": [{"destination": {"host": "ms-identity", "port": {"number": 3006}}, "weight": 100}]});
    if let Some(timeout) = timeout {
        http["timeout"] = json!(timeout);
    }
    if !retries.is_null() {
        http["retries"] = retries;
    }
    json!({"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
           "metadata": {"name": "ms-identity"}, "spec": {"hosts": ["ms-identity"], "http": [http]}})
}

fn with_gateways(gateways: &[&str]) -> Value {
    json!({"spec": {"hosts": ["api.rossmck.dev"], "gateways": gateways,
                    "http": [{"route": [{"destination": {"host": "frontend.docs.svc.cluster.local"}}]}]}})
}

#[test]
fn row_1_gateways_are_mesh_a_name_or_namespace_slash_name() {
    for good in [
        // The seed's (istio-authz-routing.md).
        "api-gateway",
        "mesh",
        "istio-system/public-ingressgateway",
        // Istio's legacy `<name>.<namespace>` form: istiod warns about it itself.
        "api-gateway.docs",
    ] {
        assert!(findings(&with_gateways(&[good])).is_empty(), "{good}");
    }
    let cases = [
        (
            "MESH",
            r#"E spec.gateways[0]: must be "mesh", "<gateway name>" or "<namespace>/<gateway name>" (RFC 1123); did you mean "mesh"? (value "MESH")"#,
        ),
        (
            "istio-system/Public",
            r#"E spec.gateways[0]: must be "mesh", "<gateway name>" or "<namespace>/<gateway name>" (RFC 1123): the gateway name "Public" must be lower-case (value "istio-system/Public")"#,
        ),
        (
            "istio_system/public",
            r#"E spec.gateways[0]: must be "mesh", "<gateway name>" or "<namespace>/<gateway name>" (RFC 1123): the namespace "istio_system" must contain only a-z, 0-9 and '-', not '_' (value "istio_system/public")"#,
        ),
        (
            "/public",
            r#"E spec.gateways[0]: must be "mesh", "<gateway name>" or "<namespace>/<gateway name>" (RFC 1123): the namespace "" must not be empty (value "/public")"#,
        ),
        (
            "istio-system/",
            r#"E spec.gateways[0]: must be "mesh", "<gateway name>" or "<namespace>/<gateway name>" (RFC 1123): the gateway name "" must not be empty (value "istio-system/")"#,
        ),
        (
            "a/b/c",
            r#"E spec.gateways[0]: must be "mesh", "<gateway name>" or "<namespace>/<gateway name>" (RFC 1123): the gateway name "b/c" must contain only a-z, 0-9 and '-', not '/' (value "a/b/c")"#,
        ),
        (
            "istio-system/public.gw",
            r#"E spec.gateways[0]: must be "mesh", "<gateway name>" or "<namespace>/<gateway name>" (RFC 1123): the gateway name "public.gw" must contain only a-z, 0-9 and '-', not '.' (value "istio-system/public.gw")"#,
        ),
        (
            "Api-Gateway",
            r#"E spec.gateways[0]: must be "mesh", "<gateway name>" or "<namespace>/<gateway name>" (RFC 1123): must be lower-case (value "Api-Gateway")"#,
        ),
        (
            "*",
            r#"E spec.gateways[0]: must be "mesh", "<gateway name>" or "<namespace>/<gateway name>" (RFC 1123): must contain only a-z, 0-9 and '-', not '*' (value "*")"#,
        ),
    ];
    for (value, want) in cases {
        assert_eq!(findings(&with_gateways(&[value])), [want], "{value}");
    }
    // In matches too, of every route kind.
    let object = json!({"spec": {
        "http": [{"match": [{"uri": {"prefix": "/auth"}}, {"gateways": ["mesh", "Bad"]}]}],
        "tls": [{"match": [{"gateways": ["ok", "x/"]}]}],
        "tcp": [{"match": [{"gateways": ["-gw"]}]}],
    }});
    let fields: Vec<String> = findings(&object)
        .iter()
        .map(|f| f.split(": ").next().unwrap().to_owned())
        .collect();
    assert_eq!(
        fields,
        [
            "E spec.tls[0].match[0].gateways[1]",
            "E spec.tcp[0].match[0].gateways[0]",
            "E spec.http[0].match[1].gateways[1]",
        ]
    );
}

#[test]
fn row_2_a_per_try_timeout_longer_than_the_timeout_is_refused() {
    assert_eq!(
        findings(&route(
            Some("5s"),
            json!({"attempts": 3, "perTryTimeout": "10s"})
        )),
        [
            r#"E spec.http[0].retries.perTryTimeout: is longer than the route's timeout (spec.http[0].timeout "5s"): the route times out first, so a try that times out is never retried (value "10s")"#
        ]
    );
    // Different spellings of the same comparison.
    assert_eq!(
        findings(&route(Some("1m"), json!({"perTryTimeout": "1m0.5s"}))).len(),
        1
    );
    assert_eq!(
        findings(&route(
            Some("1.5s"),
            json!({"attempts": 1, "perTryTimeout": "1500ms"})
        )),
        Vec::<String>::new()
    );
    // No timeout, or 0s: the route has none, nothing bounds the retries.
    assert!(findings(&route(None, json!({"attempts": 3, "perTryTimeout": "10s"}))).is_empty());
    assert!(
        findings(&route(
            Some("0s"),
            json!({"attempts": 3, "perTryTimeout": "10s"})
        ))
        .is_empty()
    );
    // No perTryTimeout: each try gets the route's timeout.
    assert!(findings(&route(Some("5s"), json!({"attempts": 3}))).is_empty());
}

#[test]
fn row_3_attempts_times_per_try_timeout_longer_than_the_timeout_warns() {
    // The seed's own: 3 × 10s = 30s, exactly its timeout.
    assert!(
        findings(&route(
            Some("30s"),
            json!({"attempts": 3, "perTryTimeout": "10s"})
        ))
        .is_empty()
    );
    assert_eq!(
        findings(&route(
            Some("25s"),
            json!({"attempts": 3, "perTryTimeout": "10s"})
        )),
        [
            "W spec.http[0].retries: 3 attempts × perTryTimeout 10s exceed timeout 25s: the last attempts never run"
        ]
    );
    assert!(
        findings(&route(
            Some("25s"),
            json!({"attempts": 0, "perTryTimeout": "10s"})
        ))
        .is_empty()
    );
    assert_eq!(
        findings(&route(
            Some("2562047h"),
            json!({"attempts": 9_000_000_000_i64, "perTryTimeout": "2562047h"})
        ))
        .len(),
        1,
        "no overflow"
    );
}

#[test]
fn durations_are_go_durations() {
    assert_eq!(
        findings(&route(Some("30 s"), json!({"perTryTimeout": "1min"}))),
        [
            r#"E spec.http[0].timeout: must be a Go duration such as "1m30s", "500ms" or "1.5s": unknown unit " s" (ns, us, ms, s, m or h) (value "30 s")"#,
            r#"E spec.http[0].retries.perTryTimeout: must be a Go duration such as "1m30s", "500ms" or "1.5s": unknown unit "min" (ns, us, ms, s, m or h) (value "1min")"#,
        ]
    );
    assert!(
        findings(&route(
            Some("1m30s"),
            json!({"attempts": 2, "perTryTimeout": "45s"})
        ))
        .is_empty()
    );
}

#[test]
fn empty_and_partial_objects_are_fine() {
    for object in [
        json!({}),
        json!({"spec": null}),
        json!({"spec": {"http": null, "gateways": null}}),
        json!({"spec": {"http": [{}], "tls": [{}], "tcp": [{"match": null}]}}),
    ] {
        assert!(findings(&object).is_empty(), "{object}");
    }
}
