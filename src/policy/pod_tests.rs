//! The Pod table of DESIGN.md section 4, row by row. Every case applies the patch to the object as sent
//! with `json-patch` and checks that a second pass over the result changes nothing.

use serde_json::{Value, json};

use super::*;
use crate::policy::object::decode;

const NS: &str = "apps";

fn cfg() -> Config {
    Config::default()
}

/// Mutates `pod`, applies the patch to the original, checks idempotency, returns (mutation, result).
fn run(pod: &Value, namespace: &str, cfg: &Config) -> (Mutation, Value) {
    let text = pod.to_string();
    let view: Pod = decode(&text).expect("pod decodes");
    let m = mutate(&view, namespace, cfg).expect("pod mutates");
    let mut doc = pod.clone();
    json_patch::patch(&mut doc, &m.patch)
        .unwrap_or_else(|e| panic!("patch {:?} does not apply to {pod}: {e}", m.patch));
    let again_text = doc.to_string();
    let again: Pod = decode(&again_text).expect("mutated pod decodes");
    let second = mutate(&again, namespace, cfg).expect("mutated pod mutates");
    assert!(
        second.is_unchanged(),
        "second pass over {doc} gave {:?}",
        second.patch
    );
    (m, doc)
}

fn csi(cfg: &Config) -> Value {
    workload_socket_volume_spec(cfg)
}

fn pod(metadata: Value, spec: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec})
}

fn app_spec() -> Value {
    json!({"containers": [{"name": "app", "image": "nginx"}]})
}

#[test]
fn untouched_rows() {
    let cfg = cfg();
    let cases = [
        (
            "excluded namespace",
            pod(json!({"name": "p"}), app_spec()),
            "istio-system",
        ),
        (
            "another default exclusion",
            pod(json!({"name": "p"}), app_spec()),
            "mesh-system",
        ),
        (
            "hostNetwork",
            pod(
                json!({"name": "p"}),
                json!({"hostNetwork": true, "containers": []}),
            ),
            NS,
        ),
        (
            "inject label false",
            pod(json!({"labels": {INJECT_KEY: "false"}}), app_spec()),
            NS,
        ),
        (
            "inject label FALSE",
            pod(json!({"labels": {INJECT_KEY: "FALSE"}}), app_spec()),
            NS,
        ),
        (
            "inject annotation False",
            pod(json!({"annotations": {INJECT_KEY: "False"}}), app_spec()),
            NS,
        ),
        (
            "label false wins over annotation true",
            pod(
                json!({"labels": {INJECT_KEY: "false"}, "annotations": {INJECT_KEY: "true"}}),
                app_spec(),
            ),
            NS,
        ),
    ];
    for (case, object, ns) in cases {
        let (m, doc) = run(&object, ns, &cfg);
        assert!(m.is_unchanged(), "{case}: {:?}", m.patch);
        assert!(m.warnings.is_empty(), "{case}");
        assert_eq!(doc, object, "{case}");
    }
}

#[test]
fn a_plain_pod_gets_labels_templates_and_volume() {
    let cfg = cfg();
    let (m, doc) = run(&pod(json!({"name": "web"}), app_spec()), NS, &cfg);
    assert!(m.warnings.is_empty());
    assert_eq!(
        doc,
        pod(
            json!({
                "name": "web",
                "labels": {INJECT_KEY: "true", "spire-managed-identity": "true"},
                "annotations": {TEMPLATES_ANNOTATION: "sidecar,spire"},
            }),
            json!({"containers": [{"name": "app", "image": "nginx"}], "volumes": [csi(&cfg)]}),
        )
    );
}

#[test]
fn absent_or_null_maps_are_created() {
    let cfg = cfg();
    for metadata in [
        json!({"labels": null, "annotations": null}),
        json!({}),
        json!(null),
    ] {
        let object = json!({"metadata": metadata, "spec": {"volumes": null}});
        let (_, doc) = run(&object, NS, &cfg);
        assert_eq!(doc["metadata"]["labels"][INJECT_KEY], "true", "{object}");
        assert_eq!(
            doc["metadata"]["annotations"][TEMPLATES_ANNOTATION],
            "sidecar,spire"
        );
        assert_eq!(doc["spec"]["volumes"], json!([csi(&cfg)]));
    }
    // No metadata and no spec at all: still applies.
    let (_, doc) = run(&json!({"kind": "Pod"}), NS, &cfg);
    assert_eq!(doc["spec"], json!({"volumes": [csi(&cfg)]}));
    assert_eq!(doc["metadata"]["labels"]["spire-managed-identity"], "true");
}

#[test]
fn inject_values_that_are_neither_true_nor_false_inject_with_a_warning() {
    let cfg = cfg();
    for value in ["yes", "on", "maybe", "1", ""] {
        let object = pod(json!({"labels": {INJECT_KEY: value}}), app_spec());
        let (m, doc) = run(&object, NS, &cfg);
        assert_eq!(m.warnings.len(), 1, "{value}");
        assert!(
            m.warnings[0].contains(INJECT_KEY) && m.warnings[0].len() <= 120,
            "{}",
            m.warnings[0]
        );
        // The user's label is kept as written; the rest of the injection happens.
        assert_eq!(doc["metadata"]["labels"][INJECT_KEY], value);
        assert_eq!(
            doc["metadata"]["annotations"][TEMPLATES_ANNOTATION],
            "sidecar,spire"
        );
    }
    // The annotation alone, unrecognised, also warns.
    let (m, _) = run(
        &pod(json!({"annotations": {INJECT_KEY: "enabled"}}), app_spec()),
        NS,
        &cfg,
    );
    assert_eq!(m.warnings.len(), 1);
}

#[test]
fn inject_true_in_any_case_injects_and_the_label_wins() {
    let cfg = cfg();
    let cases = [
        json!({"labels": {INJECT_KEY: "TRUE"}}),
        json!({"annotations": {INJECT_KEY: "True"}}),
        json!({"labels": {INJECT_KEY: "true"}, "annotations": {INJECT_KEY: "false"}}),
    ];
    for metadata in cases {
        let (m, doc) = run(&pod(metadata.clone(), app_spec()), NS, &cfg);
        assert!(m.warnings.is_empty());
        assert_eq!(
            doc["metadata"]["annotations"][TEMPLATES_ANNOTATION], "sidecar,spire",
            "{metadata}"
        );
        // An existing inject label keeps its spelling; an annotation-only pod gets the label.
        let expected = metadata["labels"][INJECT_KEY].as_str().unwrap_or("true");
        assert_eq!(doc["metadata"]["labels"][INJECT_KEY], expected);
    }
}

#[test]
fn spire_opt_out_stops_after_the_labels() {
    let cfg = cfg();
    for value in ["false", "FALSE", "False"] {
        let object = pod(
            json!({"labels": {"spire-managed-identity": value}}),
            app_spec(),
        );
        let (m, doc) = run(&object, NS, &cfg);
        assert_eq!(m.patch.len(), 1, "only the inject label: {:?}", m.patch);
        assert_eq!(
            doc["metadata"]["labels"],
            json!({"spire-managed-identity": value, INJECT_KEY: "true"})
        );
        assert!(doc["metadata"].get("annotations").is_none());
        assert!(doc["spec"].get("volumes").is_none());
    }
    // Any other value is kept, and injection continues.
    let (_, doc) = run(
        &pod(
            json!({"labels": {"spire-managed-identity": "yes"}}),
            app_spec(),
        ),
        NS,
        &cfg,
    );
    assert_eq!(doc["metadata"]["labels"]["spire-managed-identity"], "yes");
    assert_eq!(doc["spec"]["volumes"], json!([csi(&cfg)]));
}

#[test]
fn template_lists() {
    let cfg = cfg();
    let cases = [
        (None, "sidecar,spire"),
        (Some(""), "sidecar,spire"),
        (Some(" , "), "sidecar,spire"),
        (Some("sidecar"), "sidecar,spire"),
        (Some("gateway"), "gateway,spire-gw"),
        (Some("grpc-agent"), "grpc-agent,spire"),
        (Some("sidecar,spire"), "sidecar,spire"),
        (Some("gateway,spire-gw"), "gateway,spire-gw"),
        (Some(" sidecar , custom,sidecar "), "sidecar,custom,spire"),
        (Some("spire,sidecar"), "spire,sidecar"),
        (
            Some("custom-a,gateway,custom-b"),
            "custom-a,gateway,custom-b,spire-gw",
        ),
    ];
    for (value, want) in cases {
        let mut metadata = json!({"name": "p"});
        if let Some(v) = value {
            metadata["annotations"] = json!({TEMPLATES_ANNOTATION: v});
        }
        let (m, doc) = run(&pod(metadata, app_spec()), NS, &cfg);
        assert_eq!(
            doc["metadata"]["annotations"][TEMPLATES_ANNOTATION], want,
            "{value:?}"
        );
        let touched = m
            .patch
            .iter()
            .any(|op| op.path().as_str().contains("annotations"));
        assert_eq!(touched, value != Some(want), "{value:?}: {:?}", m.patch);
    }
}

#[test]
fn template_names_come_from_the_configuration() {
    let cfg = Config::from_yaml(
        "defaultTemplates: [sidecar, extra]\nspireTemplate: spiffe\nspireGatewayTemplate: spiffe-gw\ngatewayTemplate: ingress",
    )
    .unwrap();
    for (value, want) in [
        (None, "sidecar,extra,spiffe"),
        (Some("ingress"), "ingress,spiffe-gw"),
        (Some("gateway"), "gateway,spiffe"),
    ] {
        let mut metadata = json!({});
        if let Some(v) = value {
            metadata["annotations"] = json!({TEMPLATES_ANNOTATION: v});
        }
        let (_, doc) = run(&pod(metadata, app_spec()), NS, &cfg);
        assert_eq!(
            doc["metadata"]["annotations"][TEMPLATES_ANNOTATION], want,
            "{value:?}"
        );
    }
}

#[test]
fn workload_socket_volume_rows() {
    let cfg = cfg();
    let other = json!({"name": "data", "emptyDir": {}});
    let cases = [
        (
            "appended after others",
            json!([other]),
            json!([other, csi(&cfg)]),
        ),
        (
            "istio's emptyDir replaced in place",
            json!([other, {"name": "workload-socket", "emptyDir": {}}, {"name": "z", "secret": {"secretName": "s"}}]),
            json!([other, csi(&cfg), {"name": "z", "secret": {"secretName": "s"}}]),
        ),
        (
            "correct volume kept",
            json!([csi(&cfg), other]),
            json!([csi(&cfg), other]),
        ),
        (
            "wrong driver replaced",
            json!([{"name": "workload-socket", "csi": {"driver": "other.csi", "readOnly": true}}]),
            json!([csi(&cfg)]),
        ),
        (
            "writable csi replaced",
            json!([{"name": "workload-socket", "csi": {"driver": "csi.spiffe.io"}}]),
            json!([csi(&cfg)]),
        ),
        (
            "two sources replaced",
            json!([{"name": "workload-socket", "emptyDir": {}, "csi": {"driver": "csi.spiffe.io", "readOnly": true}}]),
            json!([csi(&cfg)]),
        ),
        (
            "duplicates removed",
            json!([{"name": "workload-socket", "emptyDir": {}}, other, {"name": "workload-socket", "emptyDir": {}}, {"name": "workload-socket"}]),
            json!([csi(&cfg), other]),
        ),
        ("empty list", json!([]), json!([csi(&cfg)])),
    ];
    for (case, volumes, want) in cases {
        let object = pod(json!({}), json!({"containers": [], "volumes": volumes}));
        let (_, doc) = run(&object, NS, &cfg);
        assert_eq!(doc["spec"]["volumes"], want, "{case}");
    }
}

#[test]
fn workload_api_mount_rows() {
    let cfg = cfg();
    let mount =
        json!({"name": "workload-socket", "mountPath": "/run/spire/sockets", "readOnly": true});
    let object = pod(
        json!({"annotations": {WORKLOAD_API_MOUNT_ANNOTATION: "/run/spire/sockets"}}),
        json!({
            "initContainers": [{"name": "init"}],
            "containers": [
                {"name": "app"},
                {"name": "istio-proxy", "volumeMounts": [{"name": "istio-envoy", "mountPath": "/etc/istio/proxy"}]},
                {"name": "with-mounts", "volumeMounts": [{"name": "data", "mountPath": "/data"}]},
                {"name": "already", "volumeMounts": [{"name": "workload-socket", "mountPath": "/elsewhere"}]},
                {"name": "null-mounts", "volumeMounts": null},
            ],
        }),
    );
    let (m, doc) = run(&object, NS, &cfg);
    assert!(m.warnings.is_empty());
    let containers = &doc["spec"]["containers"];
    assert_eq!(containers[0]["volumeMounts"], json!([mount]));
    assert_eq!(
        containers[1], object["spec"]["containers"][1],
        "istio-proxy untouched"
    );
    assert_eq!(
        containers[2]["volumeMounts"],
        json!([{"name": "data", "mountPath": "/data"}, mount])
    );
    assert_eq!(
        containers[3], object["spec"]["containers"][3],
        "existing mount kept"
    );
    assert_eq!(containers[4]["volumeMounts"], json!([mount]));
    assert_eq!(
        doc["spec"]["initContainers"],
        object["spec"]["initContainers"]
    );

    // Without the annotation no container is touched.
    let plain = pod(json!({}), json!({"containers": [{"name": "app"}]}));
    let (_, doc) = run(&plain, NS, &cfg);
    assert!(doc["spec"]["containers"][0].get("volumeMounts").is_none());

    // A relative path is not mounted, and the user is told.
    let relative = pod(
        json!({"annotations": {WORKLOAD_API_MOUNT_ANNOTATION: "run/spire"}}),
        json!({"containers": [{"name": "app"}]}),
    );
    let (m, doc) = run(&relative, NS, &cfg);
    assert_eq!(m.warnings.len(), 1);
    assert!(doc["spec"]["containers"][0].get("volumeMounts").is_none());
}

#[test]
fn keys_needing_escapes_apply() {
    let cfg = Config::from_yaml("spireIdentityLabel: spiffe.io/spire-managed-identity").unwrap();
    let object = pod(
        json!({"labels": {"a/b": "1", "t~x": "2"}, "annotations": {"x~/y": "3"}}),
        app_spec(),
    );
    let (m, doc) = run(&object, NS, &cfg);
    let paths: Vec<String> = m.patch.iter().map(|op| op.path().to_string()).collect();
    assert!(
        paths.contains(&"/metadata/labels/spiffe.io~1spire-managed-identity".to_string()),
        "{paths:?}"
    );
    assert!(
        paths.contains(&"/metadata/labels/sidecar.istio.io~1inject".to_string()),
        "{paths:?}"
    );
    assert!(
        paths.contains(&"/metadata/annotations/inject.istio.io~1templates".to_string()),
        "{paths:?}"
    );
    assert_eq!(doc["metadata"]["labels"]["a/b"], "1");
    assert_eq!(doc["metadata"]["labels"]["t~x"], "2");
    assert_eq!(
        doc["metadata"]["labels"]["spiffe.io/spire-managed-identity"],
        "true"
    );
    assert_eq!(doc["metadata"]["annotations"]["x~/y"], "3");
}

#[test]
fn a_pod_istiod_already_injected_gets_the_same_treatment() {
    let cfg = cfg();
    let object = pod(
        json!({"annotations": {"sidecar.istio.io/status": "{\"initContainers\":[\"istio-init\"]}"}, "labels": {"security.istio.io/tlsMode": "istio"}}),
        json!({
            "containers": [{"name": "app"}, {"name": "istio-proxy"}],
            "volumes": [{"name": "workload-socket", "emptyDir": {}}, {"name": "istio-envoy", "emptyDir": {"medium": "Memory"}}],
        }),
    );
    let (_, doc) = run(&object, NS, &cfg);
    assert_eq!(doc["spec"]["volumes"][0], csi(&cfg));
    assert_eq!(
        doc["metadata"]["annotations"][TEMPLATES_ANNOTATION],
        "sidecar,spire"
    );
    assert_eq!(doc["metadata"]["labels"]["spire-managed-identity"], "true");
}

#[test]
fn templates_parse_keeps_order_and_custom_names() {
    let defaults = vec!["sidecar".to_string()];
    let list = TemplateList::parse(Some("b, a ,b,,c"), &defaults);
    assert_eq!(list.to_string(), "b,a,c");
    assert_eq!(TemplateList::parse(None, &defaults).to_string(), "sidecar");
}
