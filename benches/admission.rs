//! Criterion benchmarks of the admission path, bytes in to bytes out: envelope decoding, the policy
//! rules, patch building and reply encoding are all counted. `envelope_only` (a kind no rule reads)
//! is the decoding floor the rules are compared with.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use mesh_admission::admission::{Decision, Endpoint, review};
use mesh_admission::config::Config;
use serde_json::{Value, json};

/// The server's allocator, so the figures are the server's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn sample(name: &str) -> Value {
    let path = format!("{}/hack/samples/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(path).expect("sample exists"))
        .expect("sample is JSON")
}

fn review_of(object: Value) -> Vec<u8> {
    let mut body = sample("pod-4k.json");
    let (group, version) = object["apiVersion"]
        .as_str()
        .unwrap_or("v1")
        .split_once('/')
        .unwrap_or(("", "v1"));
    body["request"]["kind"] = json!({"group": group, "version": version, "kind": object["kind"]});
    body["request"]["object"] = object;
    apiserver_order(&body)
}

/// The review as kube-apiserver writes it, `object` after `kind` and `operation`. serde_json's maps
/// sort their keys, which would put `object` before `operation` and send `/mutate` down the decoder's
/// two-pass path.
fn apiserver_order(body: &Value) -> Vec<u8> {
    let request = body["request"].as_object().expect("a request");
    let mut fields: Vec<String> = request
        .iter()
        .filter(|(key, _)| key.as_str() != "object")
        .map(|(key, value)| format!("{}:{value}", Value::from(key.as_str())))
        .collect();
    fields.push(format!("\"object\":{}", request["object"]));
    format!(
        r#"{{"apiVersion":{},"kind":"AdmissionReview","request":{{{}}}}}"#,
        body["apiVersion"],
        fields.join(",")
    )
    .into_bytes()
}

fn bodies() -> Vec<(&'static str, Endpoint, Vec<u8>)> {
    let pod = apiserver_order(&sample("pod-4k.json"));
    let mut pod_object = sample("pod-4k.json")["request"]["object"].clone();
    let namespace = review_of(
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "payments", "labels": {"team": "payments"}}}),
    );
    let helmrelease = sample("helmrelease-good.json");
    let helmrelease = serde_json::to_vec(&helmrelease).expect("serializes");
    pod_object["metadata"]["annotations"]["servicemesh.bigbang.dev/permissivePorts"] =
        json!("8080, 9102");
    let deployment = review_of(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "checkout", "namespace": "payments"},
        "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "checkout"}},
                 "template": {"metadata": pod_object["metadata"], "spec": pod_object["spec"]}},
    }));
    let configmap = review_of(
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": pod_object["spec"]}),
    );
    // DESIGN.md section 10: a policy that names 20 callers, as teams write them (exact principals of
    // this mesh, a namespace-wide prefix), every one checked.
    let principals: Vec<String> = (0..20)
        .map(|i| match i % 5 {
            4 => format!("cluster.local/ns/team-{i}/sa/*"),
            _ => format!("cluster.local/ns/team-{i}/sa/service-{i}"),
        })
        .collect();
    let authorization_policy = review_of(json!({
        "apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
        "metadata": {"name": "signing-api", "namespace": "docs"},
        "spec": {
            "selector": {"matchLabels": {"app": "signing-api"}},
            "action": "ALLOW",
            "rules": [{"from": [{"source": {"principals": principals}}],
                       "to": [{"operation": {"methods": ["POST"], "paths": ["/sign"]}}]}],
        },
    }));
    // A clean policy: the figure is the full walk over every principal, not an early denial.
    let outcome = review(
        Endpoint::Validate,
        &authorization_policy,
        &Config::default(),
    )
    .expect("a review");
    assert!(
        matches!(&outcome.decision, Decision::Allowed { warnings, .. } if warnings.is_empty()),
        "{:?}",
        outcome.decision
    );
    vec![
        ("mutate_pod_4k", Endpoint::Mutate, pod.clone()),
        ("mutate_namespace", Endpoint::Mutate, namespace),
        ("validate_helmrelease", Endpoint::Validate, helmrelease),
        ("validate_deployment", Endpoint::Validate, deployment),
        ("validate_pod_4k", Endpoint::Validate, pod),
        (
            "validate_authorization_policy_20_principals",
            Endpoint::Validate,
            authorization_policy,
        ),
        ("envelope_only", Endpoint::Mutate, configmap),
    ]
}

fn admission(c: &mut Criterion) {
    let cfg = Config::default();
    let mut group = c.benchmark_group("admission");
    for (name, endpoint, body) in bodies() {
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_function(name, |b| {
            b.iter(|| {
                let outcome = review(endpoint, black_box(&body), &cfg).expect("a review");
                black_box(outcome.to_json())
            })
        });
    }
    group.finish();
}

criterion_group!(benches, admission);
criterion_main!(benches);
