//! Property tests: for arbitrary label and annotation maps (keys with `/`, `~`, unicode), volume lists,
//! containers and template strings, the patch applies to the object as sent, the result satisfies the
//! rules, mutation is idempotent, and validation never panics. Case counts are kept modest so CI stays
//! fast; raise them with PROPTEST_CASES.

use std::collections::BTreeMap;

use mesh_admission::admission::{Decision, Endpoint, review};
use mesh_admission::config::Config;
use proptest::prelude::*;
use serde_json::{Value, json};

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("sidecar.istio.io/inject".to_string()),
        Just("spire-managed-identity".to_string()),
        Just("inject.istio.io/templates".to_string()),
        Just("spiffe.io/workload-api-mount".to_string()),
        Just("istio-injection".to_string()),
        Just("istio.io/rev".to_string()),
        "[a-z~/._é-]{1,12}",
        "\\PC{1,8}",
    ]
}

fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("true".to_string()),
        Just("false".to_string()),
        Just("FALSE".to_string()),
        Just("yes".to_string()),
        Just(String::new()),
        Just("/run/spire/sockets".to_string()),
        "(sidecar|gateway|spire|spire-gw|grpc-agent|custom| |,){0,6}",
        "\\PC{0,12}",
    ]
}

/// Absent, `null`, or a map.
fn string_map() -> impl Strategy<Value = Option<Value>> {
    prop_oneof![
        Just(None),
        Just(Some(Value::Null)),
        prop::collection::btree_map(key(), value(), 0..6)
            .prop_map(|m: BTreeMap<String, String>| Some(json!(m))),
    ]
}

fn volume() -> impl Strategy<Value = Value> {
    let name = prop_oneof![Just("workload-socket"), Just("data"), Just("istio-envoy")];
    let source = prop_oneof![
        Just(json!({"emptyDir": {}})),
        Just(json!({"csi": {"driver": "csi.spiffe.io", "readOnly": true}})),
        Just(json!({"csi": {"driver": "other.csi", "readOnly": true}})),
        Just(json!({"csi": {"driver": "csi.spiffe.io"}})),
        Just(json!({})),
        Just(json!({"emptyDir": {}, "csi": {"driver": "csi.spiffe.io", "readOnly": true}})),
    ];
    (name, source).prop_map(|(name, mut source)| {
        source["name"] = json!(name);
        source
    })
}

fn container() -> impl Strategy<Value = Value> {
    let name = prop_oneof![Just("app"), Just("istio-proxy"), Just("helper")];
    let mount = prop_oneof![Just("workload-socket"), Just("data")]
        .prop_map(|n| json!({"name": n, "mountPath": format!("/{n}")}));
    let mounts = prop_oneof![
        Just(None),
        Just(Some(Value::Null)),
        prop::collection::vec(mount, 0..3).prop_map(|m| Some(json!(m)))
    ];
    (name, mounts).prop_map(|(name, mounts)| {
        let mut c = json!({"name": name, "image": "x"});
        if let Some(m) = mounts {
            c["volumeMounts"] = m;
        }
        c
    })
}

fn pod() -> impl Strategy<Value = Value> {
    let volumes = prop_oneof![
        Just(None),
        Just(Some(Value::Null)),
        prop::collection::vec(volume(), 0..4).prop_map(|v| Some(json!(v)))
    ];
    (string_map(), string_map(), volumes, prop::collection::vec(container(), 0..3), prop::option::of(any::<bool>())).prop_map(
        |(labels, annotations, volumes, containers, host_network)| {
            let mut pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": containers}});
            if let Some(l) = labels {
                pod["metadata"]["labels"] = l;
            }
            if let Some(a) = annotations {
                pod["metadata"]["annotations"] = a;
            }
            if let Some(v) = volumes {
                pod["spec"]["volumes"] = v;
            }
            if let Some(h) = host_network {
                pod["spec"]["hostNetwork"] = json!(h);
            }
            pod
        },
    )
}

fn namespace_name() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("default".to_string()),
        Just("shop".to_string()),
        Just("kube-system".to_string()),
        "[a-z]{1,8}"
    ]
}

/// Sends `object` through `/mutate` as the server would, returning the patched object.
fn mutate(object: &Value, namespace: &str, cfg: &Config) -> (Value, Vec<String>) {
    let mut review_body = testkit::review_for(object, "CREATE");
    review_body["request"]["namespace"] = json!(namespace);
    let outcome =
        review(Endpoint::Mutate, review_body.to_string().as_bytes(), cfg).expect("a review");
    let reply: Value = serde_json::from_slice(&outcome.to_json()).unwrap();
    testkit::check_reply(&review_body, &reply);
    let Decision::Allowed { warnings, .. } = outcome.decision else {
        panic!("mutation denied {object}: {reply}")
    };
    let mut mutated = object.clone();
    json_patch::patch(&mut mutated, &testkit::patch_of(&reply))
        .expect("the patch applies to the object as sent");
    (mutated, warnings)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn pod_mutation_applies_satisfies_the_rules_and_is_idempotent(pod in pod(), namespace in namespace_name()) {
        let cfg = Config::default();
        let (mutated, warnings) = mutate(&pod, &namespace, &cfg);
        testkit::rules::check_pod(&pod, &mutated, &namespace, &cfg, "generated pod");
        prop_assert!(warnings.iter().all(|w| w.chars().count() <= 120 && !w.contains('\n')));
        let (again, _) = mutate(&mutated, &namespace, &cfg);
        prop_assert_eq!(again, mutated);
    }

    #[test]
    fn namespace_mutation_applies_and_is_idempotent(labels in string_map(), name in namespace_name()) {
        let cfg = Config::default();
        let mut ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
        if let Some(l) = labels {
            ns["metadata"]["labels"] = l;
        }
        let (mutated, _) = mutate(&ns, "", &cfg);
        testkit::rules::check_namespace(&ns, &mutated, &cfg, "generated namespace");
        let (again, _) = mutate(&mutated, "", &cfg);
        prop_assert_eq!(again, mutated);
    }

    #[test]
    fn validation_never_panics_and_always_answers(
        kind in prop_oneof![Just("Pod"), Just("Deployment"), Just("CronJob"), Just("HelmRelease")],
        names in prop::collection::vec(prop_oneof![
            "servicemesh\\.bigbang\\.dev/[a-zA-Z]{0,16}",
            Just("contrast.edgeless.systems/servicemesh-ingress".to_string()),
            Just("contrast.edgeless.systems/servicemesh-egress".to_string()),
            key(),
        ], 0..6),
        values in prop::collection::vec(prop_oneof![value(), "[0-9a-z#:.\\[\\], -]{0,40}"], 6),
        env in prop::collection::vec((prop_oneof![Just("EDG_INGRESS_PROXY_CONFIG"), Just("CONTRAST_EGRESS_PROXY_CONFIG"), Just("OTHER")], "[0-9a-z#:.\\[\\]-]{0,40}"), 0..3),
    ) {
        let annotations: BTreeMap<String, String> = names.into_iter().zip(values).collect();
        let env: Vec<Value> = env.into_iter().map(|(n, v)| json!({"name": n, "value": v})).collect();
        let pod_spec = json!({"containers": [{"name": "app", "env": env, "ports": [{"containerPort": 8080}]}]});
        let object = match kind {
            "Pod" => json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"annotations": annotations}, "spec": pod_spec}),
            "Deployment" => json!({"apiVersion": "apps/v1", "kind": kind, "metadata": {}, "spec": {"template": {"metadata": {"annotations": annotations}, "spec": pod_spec}}}),
            "CronJob" => json!({"apiVersion": "batch/v1", "kind": kind, "spec": {"jobTemplate": {"spec": {"template": {"metadata": {"annotations": annotations}, "spec": pod_spec}}}}}),
            _ => json!({"apiVersion": "helm.toolkit.fluxcd.io/v2", "kind": kind, "metadata": {"annotations": annotations}}),
        };
        let body = testkit::review_for(&object, "CREATE");
        let outcome = review(Endpoint::Validate, body.to_string().as_bytes(), &Config::default()).expect("a review");
        let reply: Value = serde_json::from_slice(&outcome.to_json()).unwrap();
        testkit::check_reply(&body, &reply);
        if reply["response"]["allowed"] == false {
            prop_assert_eq!(&reply["response"]["status"]["code"], &json!(422));
            let message = reply["response"]["status"]["message"].as_str().unwrap_or("");
            prop_assert!(!message.is_empty());
        }
        for w in reply["response"]["warnings"].as_array().into_iter().flatten() {
            let w = w.as_str().unwrap_or("");
            prop_assert!(w.chars().count() <= 120 && !w.contains('\n'));
        }
    }
}
