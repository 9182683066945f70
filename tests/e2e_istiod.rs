//! istiod in the loop (DESIGN.md section 11): the real istiod (`hack/build-istiod.sh`) next to
//! `mesh-admission` against the real apiserver. Pods meet istiod's injector before or after our
//! webhook, and every Istio object meets istiod's validator, as in a cluster.
//!
//! The pods are seed `istio-spire-sidecar-injection.md`'s: its `myapi` Deployment's pod, plain (the
//! webhook adds what the seed writes by hand) and as the seed writes it, a gateway, a pod that opted out
//! of SPIRE and one that speaks the Workload API itself.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use mesh_admission::config::Config;
use mesh_admission::manifests::parse_objects;
use serde::Deserialize as _;
use serde_json::{Value, json};
use testkit::fixtures::{code_blocks, header, render_cases};
use testkit::istiod::{
    ISTIOD_DENIED, ISTIOD_ONLY_REFUSES, Istiod, apply_objects, chart_documented_istiod_values,
    names, rendered_injection_templates,
};
use testkit::{ControlPlane, Webhook, WebhookOptions, mesh_admission_stdin, shared_crds};
use testkit::{Controller, ControllerOptions};

fn manifest_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The templates istiod is given are the ones our chart documents (one source), and they mount the
/// volume and driver mesh-admission is configured with.
#[test]
fn istiods_spire_templates_are_the_ones_our_chart_documents() {
    let documented = chart_documented_istiod_values();
    let documented = &documented["sidecarInjectorWebhook"]["templates"];
    let rendered = rendered_injection_templates();
    let config = Config::default();
    for name in [&config.spire_template, &config.spire_gateway_template] {
        let want = documented[name.as_str()].as_str().unwrap_or_else(|| {
            panic!("charts/mesh-admission/values.yaml documents no template {name}")
        });
        assert_eq!(
            rendered.get(name.as_str()).map(String::as_str),
            Some(want),
            "istiod's {name} template (.tools/istiod/configmaps.yaml) is not the one \
             charts/mesh-admission/values.yaml documents: run `bash hack/build-istiod.sh`"
        );
        let template: Value = yaml_serde::from_str(want).unwrap();
        let volumes = template["spec"]["volumes"].as_array().unwrap();
        assert_eq!(volumes.len(), 1, "{name}: {template:#}");
        assert_eq!(volumes[0]["name"], config.workload_socket_volume.as_str());
        assert_eq!(
            volumes[0]["csi"],
            json!({"driver": config.csi_driver, "readOnly": true})
        );
    }
    // istiod's own templates are still there: ours are added, not substituted.
    for own in ["sidecar", "gateway"] {
        assert!(
            rendered.contains_key(own),
            "{own} missing: {:?}",
            rendered.keys()
        );
    }
}

// --- Injection ----------------------------------------------------------------------------------

/// The order the apiserver calls the two mutating webhooks in: by configuration name.
#[derive(Clone, Copy, Debug)]
enum Order {
    /// `istio-sidecar-injector` sorts before `mesh-admission`, as installed.
    IstiodFirst,
    /// Ours renamed to sort first.
    OursFirst,
}

/// One way of installing both webhooks.
#[derive(Clone, Copy, Debug)]
struct Variant {
    order: Order,
    istiod_reinvocation: &'static str,
}

const VARIANTS: [Variant; 3] = [
    Variant {
        order: Order::IstiodFirst,
        istiod_reinvocation: "Never",
    },
    Variant {
        order: Order::IstiodFirst,
        istiod_reinvocation: "IfNeeded",
    },
    Variant {
        order: Order::OursFirst,
        istiod_reinvocation: "Never",
    },
];

impl Variant {
    /// How often (ours, istiod's) webhook is called for the test pod `pod`: the apiserver calls an
    /// `IfNeeded` webhook (ours always is) once more when a later one changed the object. The
    /// counts tell the installations apart, so they show which one the apiserver is using.
    fn calls(self, pod: &str) -> (f64, f64) {
        // The pods istiod alone does not give everything: the seed's own pod names the templates,
        // and the opted-out one wants nothing of us.
        let ours_changes_it = !matches!(pod, "seed" | "opted-out");
        match (self.order, self.istiod_reinvocation) {
            (Order::IstiodFirst, "Never") => (1.0, 1.0),
            // istiod is called again after our change; it renders an injected pod afresh, now with
            // our templates, which changes it again, so ours is called again too.
            (Order::IstiodFirst, _) if ours_changes_it => (2.0, 2.0),
            (Order::IstiodFirst, _) => (1.0, 1.0),
            // Ours is called again after istiod's injection.
            (Order::OursFirst, _) => (2.0, 1.0),
        }
    }

    /// How many of our calls for `pod` return a patch: one, where the pod needs something of us
    /// (before istiod, the seed's own pod still lacks the volume), else none.
    fn patches(self, pod: &str) -> f64 {
        let needs_us = match self.order {
            Order::IstiodFirst => !matches!(pod, "seed" | "opted-out"),
            Order::OursFirst => pod != "opted-out",
        };
        if needs_us { 1.0 } else { 0.0 }
    }
}

/// The pods of the test, by name: (labels, annotations, containers).
fn pods() -> Vec<(&'static str, Value)> {
    let app = |name: &str| json!({"name": name, "image": "myapi:v1"});
    let pod = |labels: Value, annotations: Value, containers: Value| json!({"labels": labels, "annotations": annotations, "containers": containers});
    vec![
        // The seed's Deployment pod without the SPIRE properties: the webhook adds them.
        (
            "plain",
            pod(json!({"app": "myapi"}), json!({}), json!([app("myapi")])),
        ),
        // ... and as the seed writes it.
        (
            "seed",
            pod(
                json!({"app": "myapi", "sidecar.istio.io/inject": "true", "spire-managed-identity": "true"}),
                json!({"inject.istio.io/templates": "sidecar,spire"}),
                json!([app("myapi")]),
            ),
        ),
        // Istio's gateway injection: the `gateway` template fills in the `istio-proxy` container.
        (
            "gateway",
            pod(
                json!({"app": "ingress", "sidecar.istio.io/inject": "true", "spire-managed-identity": "true"}),
                json!({"inject.istio.io/templates": "gateway"}),
                json!([{"name": "istio-proxy", "image": "auto"}]),
            ),
        ),
        // Opted out of SPIRE, and already carrying the injection label: nothing for us to add.
        (
            "opted-out",
            pod(
                json!({"app": "myapi", "sidecar.istio.io/inject": "true", "spire-managed-identity": "false"}),
                json!({}),
                json!([app("myapi")]),
            ),
        ),
        (
            "workload-api",
            pod(
                json!({"app": "myapi"}),
                json!({"spiffe.io/workload-api-mount": "/run/spire/sockets"}),
                json!([app("myapi"), app("helper")]),
            ),
        ),
    ]
}

fn pod_object(namespace: &str, name: &str, parts: &Value) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace,
            "labels": parts["labels"], "annotations": parts["annotations"]},
        "spec": {"serviceAccountName": "myapi", "containers": parts["containers"]}
    })
}

/// Our `mutate` calls for pods so far, whatever their result.
fn our_pod_calls(webhook: &Webhook) -> f64 {
    our_pod_series(webhook, "")
}

/// The sum of our `mutate` request counters for pods whose labels contain `label`.
fn our_pod_series(webhook: &Webhook, label: &str) -> f64 {
    webhook
        .metrics()
        .lines()
        .filter(|line| {
            line.starts_with("mesh_admission_requests_total{")
                && line.contains("endpoint=\"mutate\"")
                && line.contains("kind=\"Pod\"")
                && line.contains(label)
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Our `mutate` calls for pods that returned a patch.
fn our_patches(webhook: &Webhook) -> f64 {
    our_pod_series(webhook, "result=\"patched\"")
}

/// Our mutating configuration for `order`: as `webhook-config` prints it, renamed to sort before
/// istiod's for [`Order::OursFirst`].
fn our_configs(webhook: &Webhook, order: Order) -> Vec<Value> {
    let mut objects = parse_objects(&webhook.config("Fail")).unwrap();
    if let Order::OursFirst = order {
        for object in &mut objects {
            if object["kind"] == "MutatingWebhookConfiguration" {
                object["metadata"]["name"] = json!("a-mesh-admission");
            }
        }
    }
    objects
}

/// The volume every SPIRE pod must end with (DESIGN.md section 4).
fn csi_volume() -> Value {
    json!({"name": "workload-socket", "csi": {"driver": "csi.spiffe.io", "readOnly": true}})
}

fn workload_socket_volumes(pod: &Value) -> Vec<Value> {
    pod["spec"]["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|v| v["name"] == "workload-socket")
        .cloned()
        .collect()
}

fn container<'p>(pod: &'p Value, list: &str, name: &str) -> &'p Value {
    pod["spec"][list]
        .as_array()
        .and_then(|all| all.iter().find(|c| c["name"] == name))
        .unwrap_or_else(|| panic!("no {list} {name} in {pod:#}"))
}

/// What the stored pod must hold, by test pod.
fn assert_injected(name: &str, pod: &Value) {
    let labels = &pod["metadata"]["labels"];
    let templates = &pod["metadata"]["annotations"]["inject.istio.io/templates"];
    let istio_proxy = match name {
        // Istio's gateway template fills in the container the pod brought; a sidecar is a native one.
        "gateway" => container(pod, "containers", "istio-proxy"),
        _ => {
            let proxy = container(pod, "initContainers", "istio-proxy");
            assert_eq!(proxy["restartPolicy"], "Always", "{name}: {pod:#}");
            proxy
        }
    };
    assert_ne!(
        istio_proxy["image"], "auto",
        "{name}: not injected: {pod:#}"
    );
    assert_eq!(labels["sidecar.istio.io/inject"], "true", "{name}: {pod:#}");
    if name == "opted-out" {
        // istiod's own volume stays, and nothing of SPIRE is added.
        assert_eq!(labels["spire-managed-identity"], "false", "{name}: {pod:#}");
        assert_eq!(*templates, Value::Null, "{name}: {pod:#}");
        assert_eq!(
            workload_socket_volumes(pod),
            vec![json!({"name": "workload-socket", "emptyDir": {}})],
            "{name}: {pod:#}"
        );
        return;
    }
    assert_eq!(labels["spire-managed-identity"], "true", "{name}: {pod:#}");
    let want_templates = if name == "gateway" {
        "gateway,spire-gw"
    } else {
        "sidecar,spire"
    };
    assert_eq!(*templates, want_templates, "{name}: {pod:#}");
    assert_eq!(
        workload_socket_volumes(pod),
        vec![csi_volume()],
        "{name}: exactly one workload-socket, the CSI volume: {pod:#}"
    );
    // istiod's template mounts it in istio-proxy.
    assert!(
        names(&istio_proxy["volumeMounts"]).contains(&"workload-socket"),
        "{name}: {istio_proxy:#}"
    );
    if name == "workload-api" {
        for app in ["myapi", "helper"] {
            let mounts = &container(pod, "containers", app)["volumeMounts"];
            let socket: Vec<&Value> = mounts
                .as_array()
                .into_iter()
                .flatten()
                .filter(|m| m["name"] == "workload-socket")
                .collect();
            assert_eq!(
                socket,
                vec![
                    &json!({"name": "workload-socket", "mountPath": "/run/spire/sockets", "readOnly": true})
                ],
                "{app}: {pod:#}"
            );
        }
    }
}

/// The pod with what differs between two creations of the same manifest in two namespaces removed:
/// identity, timestamps, bookkeeping, and the namespace wherever istiod wrote it into the pod.
fn comparable(pod: &Value, namespace: &str) -> Value {
    let mut pod = pod.clone();
    let meta = pod["metadata"].as_object_mut().unwrap();
    for field in [
        "uid",
        "resourceVersion",
        "creationTimestamp",
        "managedFields",
        "generation",
    ] {
        meta.remove(field);
    }
    pod.as_object_mut().unwrap().remove("status");
    let text = pod.to_string().replace(namespace, "NAMESPACE");
    serde_json::from_str(&text).unwrap()
}

#[test]
fn injected_pods_are_the_same_whichever_webhook_runs_first() {
    let cp = ControlPlane::start();
    let istiod = Istiod::start(&cp);
    let webhook = Webhook::start(&cp);
    let istiod_calls = || istiod.counter("sidecar_injection_requests_total");

    let mut stored: Vec<(Variant, BTreeMap<&str, Value>)> = Vec::new();
    for (n, variant) in VARIANTS.into_iter().enumerate() {
        // Each variant replaces both configurations; the previous name of ours is removed.
        for name in ["mesh-admission", "a-mesh-admission"] {
            cp.kubectl_ok([
                "delete",
                "mutatingwebhookconfiguration",
                name,
                "--ignore-not-found",
            ]);
        }
        apply_objects(&cp, &our_configs(&webhook, variant.order));
        istiod.register_injector(&cp, variant.istiod_reinvocation);

        // The seed's chain: a new namespace gets the injection label from our webhook, and so
        // reaches istiod's namespace webhook.
        let namespace = format!("myapi-{n}");
        cp.kubectl_ok(["create", "namespace", &namespace]);
        let ns = cp.get_json(["namespace", &namespace]);
        assert_eq!(
            ns["metadata"]["labels"]["istio-injection"], "enabled",
            "{ns:#}"
        );
        cp.kubectl_ok(["create", "serviceaccount", "myapi", "-n", &namespace]);

        // The apiserver picks configurations up from a watch: wait until a dry run is called in
        // this variant's order before the pods that count.
        let probe = pod_object(&namespace, "probe", &pods()[0].1).to_string();
        let started = std::time::Instant::now();
        loop {
            let before = (our_pod_calls(&webhook), istiod_calls());
            cp.kubectl_stdin_ok(["create", "--dry-run=server", "-f", "-"], &probe);
            let calls = (
                our_pod_calls(&webhook) - before.0,
                istiod_calls() - before.1,
            );
            if calls == variant.calls("plain") {
                break;
            }
            assert!(
                started.elapsed() < std::time::Duration::from_secs(30),
                "{variant:?}: a dry run still calls (ours, istiod's) {calls:?} times (logs: {})",
                cp.logs().display()
            );
            std::thread::sleep(std::time::Duration::from_millis(200));
        }

        let mut variant_pods = BTreeMap::new();
        for (name, parts) in pods() {
            let before = (our_pod_calls(&webhook), istiod_calls());
            let patched_before = our_patches(&webhook);
            let object = pod_object(&namespace, name, &parts);
            cp.kubectl_stdin_ok(["create", "-f", "-"], &object.to_string());
            let calls = (
                our_pod_calls(&webhook) - before.0,
                istiod_calls() - before.1,
            );
            assert_eq!(
                calls,
                variant.calls(name),
                "{variant:?}, pod {name}: (ours, istiod's) calls"
            );
            // Ours changes a pod at most once: a second call finds nothing left to do.
            assert_eq!(
                our_patches(&webhook) - patched_before,
                variant.patches(name),
                "{variant:?}, pod {name}: our calls that patched"
            );
            let pod = cp.get_json(["pod", name, "-n", &namespace]);
            assert_injected(name, &pod);
            variant_pods.insert(name, comparable(&pod, &namespace));
        }
        stored.push((variant, variant_pods));
    }

    let (first, reference) = &stored[0];
    for (variant, pods) in &stored[1..] {
        for (name, pod) in pods {
            assert_eq!(
                pod, &reference[name],
                "pod {name} stored differently with {variant:?} than with {first:?}"
            );
        }
    }
}

/// The seed's gateway as it runs: in `istio-system`, which mesh-admission never touches, its pod
/// naming `gateway,spire-gw` itself (the gateway chart's `podAnnotations`). istiod alone gives it the
/// CSI volume, through the `spire-gw` template our chart documents.
#[test]
fn the_seeds_gateway_in_istio_system_gets_the_csi_volume_from_istiod_alone() {
    let cp = ControlPlane::start();
    let istiod = Istiod::start(&cp);
    let webhook = Webhook::start(&cp);
    webhook.register(&cp, "Fail");
    istiod.register_injector(&cp, "Never");
    cp.kubectl_ok([
        "create",
        "serviceaccount",
        "istio-ingressgateway",
        "-n",
        "istio-system",
    ]);
    let ours_before = our_pod_calls(&webhook);
    let gateway = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "istio-ingressgateway", "namespace": "istio-system",
            "labels": {"app": "istio-ingressgateway", "sidecar.istio.io/inject": "true",
                "spire-managed-identity": "true"},
            "annotations": {"inject.istio.io/templates": "gateway,spire-gw"}},
        "spec": {"serviceAccountName": "istio-ingressgateway",
            "containers": [{"name": "istio-proxy", "image": "auto"}]}
    });
    cp.kubectl_stdin_ok(["create", "-f", "-"], &gateway.to_string());
    let pod = cp.get_json(["pod", "istio-ingressgateway", "-n", "istio-system"]);
    assert_eq!(
        our_pod_calls(&webhook),
        ours_before,
        "istio-system is excluded"
    );
    assert_ne!(
        container(&pod, "containers", "istio-proxy")["image"],
        "auto"
    );
    assert_eq!(workload_socket_volumes(&pod), vec![csi_volume()], "{pod:#}");
}

// --- Validation ---------------------------------------------------------------------------------

/// The Istio objects among `objects`.
fn istio_objects(objects: &[Value]) -> Vec<&Value> {
    objects
        .iter()
        .filter(|o| {
            o["apiVersion"]
                .as_str()
                .is_some_and(|v| v.contains(".istio.io/"))
        })
        .collect()
}

/// Creates every namespace `objects` name that does not exist yet.
fn create_namespaces(cp: &ControlPlane, objects: &[Value]) {
    let mut namespaces: Vec<&str> = objects
        .iter()
        .filter_map(|o| o["metadata"]["namespace"].as_str())
        .collect();
    namespaces.sort_unstable();
    namespaces.dedup();
    for namespace in namespaces {
        if !cp.kubectl(["get", "namespace", namespace]).status.success() {
            cp.kubectl_ok(["create", "namespace", namespace]);
        }
    }
}

/// A control plane with the shared CRDs, istiod's validator registered, and istiod.
fn with_istiod_validator() -> (ControlPlane, Istiod) {
    let cp = ControlPlane::start();
    cp.apply_crds(&shared_crds());
    let istiod = Istiod::start(&cp);
    istiod.register_validator(&cp);
    (cp, istiod)
}

/// `kubectl create --dry-run=server` of each object; every one must be admitted, and istiod must
/// have validated (and passed) each Istio object among them.
fn assert_istiod_passes(cp: &ControlPlane, istiod: &Istiod, what: &str, objects: &[Value]) {
    let (passed, failed) = (
        istiod.counter("galley_validation_passed"),
        istiod.counter("galley_validation_failed"),
    );
    for object in objects {
        let output = cp.kubectl_stdin(
            ["create", "--dry-run=server", "-f", "-"],
            &object.to_string(),
        );
        assert!(
            output.status.success(),
            "{what}: {} {} refused\n{}",
            object["kind"],
            object["metadata"]["name"],
            cp.report(&output)
        );
    }
    let istio = istio_objects(objects).len() as f64;
    assert_eq!(
        (
            istiod.counter("galley_validation_passed") - passed,
            istiod.counter("galley_validation_failed") - failed
        ),
        (istio, 0.0),
        "{what}: istiod's validator must have passed each of its {istio} Istio objects"
    );
}

#[test]
fn everything_render_generates_for_the_golden_cases_passes_istiods_validator() {
    let (cp, istiod) = with_istiod_validator();
    let mut checked = 0;
    for case in render_cases() {
        let name = case.file_name().unwrap().to_string_lossy().into_owned();
        let mut args = vec!["render", "-o", "json", "-f", "-"];
        let config = case.join("config.yaml");
        if config.exists() {
            args.extend(["--config", config.to_str().unwrap()]);
        }
        let input = std::fs::read_to_string(case.join("input.yaml")).unwrap();
        let output = mesh_admission_stdin(&args, &input);
        let rendered: Value = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
            panic!(
                "{name}: render printed no JSON ({e}): {}",
                String::from_utf8_lossy(&output.stderr)
            )
        });
        let objects = rendered["items"].as_array().cloned().unwrap_or_default();
        assert!(
            !istio_objects(&objects).is_empty(),
            "{name}: no Istio objects rendered"
        );
        create_namespaces(&cp, &objects);
        assert_istiod_passes(&cp, &istiod, &name, &objects);
        checked += istio_objects(&objects).len();
    }
    eprintln!("e2e_istiod: istiod passed {checked} Istio objects render generated");
    // The probe istiod refuses is still refused: the validator was on the path all along.
    let output = cp.kubectl_stdin(
        ["create", "--dry-run=server", "-f", "-"],
        ISTIOD_ONLY_REFUSES,
    );
    assert!(
        String::from_utf8_lossy(&output.stderr).contains(ISTIOD_DENIED),
        "{}",
        cp.report(&output)
    );
}

/// The Istio objects the seeds write by hand, as objects: a `spec:` fragment without `kind` is
/// taken for the kind its fields belong to (as src/policy/istio/seeds_tests.rs reads them), and each
/// gets a name and the namespace `seeds` when it has none.
fn seed_istio_objects() -> Vec<Value> {
    let dir = manifest_dir().join("../shared/seeds");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let mut objects = Vec::new();
    for file in files {
        let stem = file.file_stem().unwrap().to_string_lossy().into_owned();
        for block in code_blocks(&std::fs::read_to_string(&file).unwrap()) {
            for document in yaml_serde::Deserializer::from_str(&block) {
                // Shell snippets and directory trees are not YAML objects.
                let Ok(mut doc) = Value::deserialize(document) else {
                    break;
                };
                if !doc.is_object() {
                    continue;
                }
                if doc.get("kind").is_none() {
                    let spec = &doc["spec"];
                    let (api_version, kind) =
                        if spec.get("rules").is_some() || spec.get("action").is_some() {
                            ("security.istio.io/v1", "AuthorizationPolicy")
                        } else if spec.get("http").is_some() || spec.get("hosts").is_some() {
                            ("networking.istio.io/v1", "VirtualService")
                        } else {
                            continue;
                        };
                    doc["apiVersion"] = json!(api_version);
                    doc["kind"] = json!(kind);
                }
                if !doc["apiVersion"]
                    .as_str()
                    .is_some_and(|v| v.contains(".istio.io/"))
                {
                    continue;
                }
                let n = objects.len();
                let meta = doc["metadata"]
                    .as_object_mut()
                    .map(std::mem::take)
                    .unwrap_or_default();
                let mut meta = Value::Object(meta);
                if meta.get("name").is_none() {
                    meta["name"] = json!(format!("{stem}-{n}"));
                }
                if meta.get("namespace").is_none() {
                    meta["namespace"] = json!("seeds");
                }
                doc["metadata"] = meta;
                objects.push(doc);
            }
        }
    }
    objects
}

#[test]
fn the_seeds_istio_objects_pass_istiods_validator_and_ours() {
    let (cp, istiod) = with_istiod_validator();
    let webhook = Webhook::start(&cp);
    webhook.register(&cp, "Fail");
    let objects = seed_istio_objects();
    // As src/policy/istio/seeds_tests.rs counts them.
    assert_eq!(objects.len(), 9, "{objects:#?}");
    create_namespaces(&cp, &objects);
    assert_istiod_passes(&cp, &istiod, "seeds", &objects);
}

/// A golden case's input object as the apiserver takes it: the fixtures leave out what render does
/// not read and the API requires (a container's image, a HelmRelease's interval and chart source),
/// and the shared CRD serves HelmReleases as v2 only (render reads any version).
fn complete(object: &mut Value) {
    if object["apiVersion"]
        .as_str()
        .is_some_and(|v| v.starts_with("helm.toolkit.fluxcd.io/"))
    {
        object["apiVersion"] = json!("helm.toolkit.fluxcd.io/v2");
        let name = object["metadata"]["name"].clone();
        let spec = &mut object["spec"];
        if spec["interval"].is_null() {
            spec["interval"] = json!("10m");
        }
        let chart = &mut spec["chart"]["spec"];
        if chart["chart"].is_null() {
            chart["chart"] = name;
        }
        if chart["sourceRef"].is_null() {
            chart["sourceRef"] = json!({"kind": "HelmRepository", "name": "charts"});
        }
    }
    for path in ["/spec/containers", "/spec/template/spec/containers"] {
        let containers = object.pointer_mut(path).and_then(Value::as_array_mut);
        for container in containers.into_iter().flatten() {
            if container["image"].is_null() {
                container["image"] = json!("example/app:1");
            }
        }
    }
}

#[test]
fn every_object_the_controller_writes_passes_istiods_validator() {
    let cp = ControlPlane::start();
    cp.apply_crds(&shared_crds());
    let istiod = Istiod::start(&cp);
    // The golden cases' inputs together, with the configuration that generates every kind
    // (AuthorizationPolicies, two gateways).
    let config = manifest_dir().join("tests/fixtures/render/target-namespace-gateways/config.yaml");
    let mut inputs = Vec::new();
    for case in render_cases() {
        let text = std::fs::read_to_string(case.join("input.yaml")).unwrap();
        for object in parse_objects(&text).unwrap() {
            match object["kind"].as_str() {
                Some("List") => {
                    inputs.extend(object["items"].as_array().cloned().unwrap_or_default())
                }
                _ => inputs.push(object),
            }
        }
    }
    for object in &mut inputs {
        complete(object);
    }
    // One object per name: the cases reuse names (podinfo), and the first one stands.
    let mut seen = std::collections::BTreeSet::new();
    inputs.retain(|o| {
        seen.insert((
            o["kind"].to_string(),
            o["metadata"]["namespace"].to_string(),
            o["metadata"]["name"].to_string(),
        ))
    });
    let namespaces: Vec<Value> = inputs
        .iter()
        .filter(|o| o["kind"] == "Namespace")
        .cloned()
        .collect();
    apply_objects(&cp, &namespaces);
    create_namespaces(&cp, &inputs);
    let others: Vec<Value> = inputs
        .into_iter()
        .filter(|o| o["kind"] != "Namespace")
        .collect();
    for object in &others {
        cp.kubectl_stdin_ok(["create", "-f", "-"], &object.to_string());
    }
    // Only now: the conflicts case's hand-written VirtualService (no routes) is one istiod refuses.
    istiod.register_validator(&cp);
    let (passed, failed) = (
        istiod.counter("galley_validation_passed"),
        istiod.counter("galley_validation_failed"),
    );

    let controller = Controller::start_with(
        &cp,
        &ControllerOptions {
            args: vec!["--config".into(), config.to_str().unwrap().into()],
            ..ControllerOptions::default()
        },
    );
    // What render makes of the cluster's inputs, with the same configuration.
    let list = cp.render_inputs();
    let output = mesh_admission_stdin(
        &[
            "render",
            "-o",
            "json",
            "--config",
            config.to_str().unwrap(),
            "-f",
            "-",
        ],
        &list,
    );
    let rendered: Value = serde_json::from_slice(&output.stdout).unwrap();
    let rendered: Vec<Value> = rendered["items"].as_array().cloned().unwrap_or_default();
    let istio = istio_objects(&rendered).len();
    assert!(istio >= 10, "only {istio} Istio objects rendered");

    // Each is written by the controller: it exists, and istiod passed it on its way in.
    let started = std::time::Instant::now();
    let missing = loop {
        let missing: Vec<String> = istio_objects(&rendered)
            .into_iter()
            .filter(|object| {
                let kind = format!(
                    "{}.{}",
                    object["kind"].as_str().unwrap().to_lowercase(),
                    object["apiVersion"]
                        .as_str()
                        .unwrap()
                        .split('/')
                        .next()
                        .unwrap()
                );
                let meta = &object["metadata"];
                !cp.kubectl([
                    "get",
                    &kind,
                    meta["name"].as_str().unwrap(),
                    "-n",
                    meta["namespace"].as_str().unwrap(),
                ])
                .status
                .success()
            })
            .map(|o| {
                format!(
                    "{} {}/{}",
                    o["kind"], o["metadata"]["namespace"], o["metadata"]["name"]
                )
            })
            .collect();
        if missing.is_empty() || started.elapsed() > std::time::Duration::from_secs(60) {
            break missing;
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    };
    assert!(
        missing.is_empty(),
        "the controller did not write {missing:?} (its log: {})",
        controller.log_path().display()
    );
    let (now_passed, now_failed) = (
        istiod.counter("galley_validation_passed"),
        istiod.counter("galley_validation_failed"),
    );
    assert_eq!(
        now_failed - failed,
        0.0,
        "istiod refused a write of the controller"
    );
    eprintln!(
        "e2e_istiod: the controller wrote {istio} Istio objects; istiod passed {} writes",
        now_passed - passed
    );
    assert!(
        now_passed - passed >= istio as f64,
        "istiod passed {} writes for {istio} Istio objects",
        now_passed - passed
    );
}

// --- The Istio case table ------------------------------------------------------------------------

/// What the apiserver answered to a server-side dry run of one object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verdict {
    Admitted,
    Warned,
    /// Refused by the webhook looked at.
    Refused,
    /// Refused by the apiserver itself (the CRD's schema or CEL rules) before any webhook.
    Schema,
}

impl Verdict {
    fn of(cp: &ControlPlane, yaml: &str, webhook: &str) -> (Verdict, String) {
        let output = cp.kubectl_stdin(["create", "--dry-run=server", "-f", "-"], yaml);
        let stderr = String::from_utf8_lossy(&output.stderr).trim().to_owned();
        let verdict = match output.status.success() {
            true if stderr.contains("Warning:") => Verdict::Warned,
            true => Verdict::Admitted,
            false if stderr.contains(&format!("admission webhook \"{webhook}\" denied")) => {
                Verdict::Refused
            }
            false if !stderr.contains("admission webhook") => Verdict::Schema,
            false => panic!(
                "refused by another webhook than {webhook}:\n{}",
                cp.report(&output)
            ),
        };
        (verdict, stderr)
    }

    fn cell(self) -> &'static str {
        match self {
            Verdict::Admitted => "admitted",
            Verdict::Warned => "admitted, warning",
            Verdict::Refused => "**refused**",
            Verdict::Schema => "refused by the CRD schema",
        }
    }
}

/// The docs page whose table this test keeps true.
const TABLE_DOC: &str = "docs/istiod-in-the-loop.md";
const TABLE_BEGIN: &str = "<!-- istiod-cases: begin (cargo test --test e2e_istiod case_table; UPDATE_GOLDEN=1 rewrites it) -->";
const TABLE_END: &str = "<!-- istiod-cases: end -->";

/// Every case of tests/fixtures/istio/cases through kubectl, once with only istiod's validator on
/// the path and once with only ours: each object istiod refuses, ours refuses too, ours gives the
/// answer the case's header names, and the table in docs/istiod-in-the-loop.md is what happened.
#[test]
fn case_table_objects_istiod_refuses_are_refused_by_ours_too() {
    let dir = manifest_dir().join("tests/fixtures/istio/cases");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let cases: Vec<(String, String)> = files
        .iter()
        .map(|f| {
            let name = f.file_stem().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read_to_string(f).unwrap())
        })
        .collect();

    let (cp, mut istiod) = with_istiod_validator();
    cp.kubectl_ok(["create", "namespace", "docs"]);
    let theirs: Vec<(Verdict, String)> = cases
        .iter()
        .map(|(_, yaml)| Verdict::of(&cp, yaml, "validation.istio.io"))
        .collect();
    cp.kubectl_ok([
        "delete",
        "validatingwebhookconfiguration",
        "istiod-default-validator",
    ]);
    istiod.stop();

    // Ours, in the mesh each case names (the SPIRE seed's trust domain or the default one).
    let mut ours: Vec<Option<(Verdict, String)>> = vec![None; cases.len()];
    for mesh in [None, Some("spire")] {
        let config = cp
            .logs()
            .join(format!("mesh-{}.yaml", mesh.unwrap_or("default")));
        let text = match mesh {
            Some(_) => "mesh:\n  trustDomain: democluster.internal\n",
            None => "{}\n",
        };
        std::fs::write(&config, text).unwrap();
        let mut webhook = Webhook::start_with(
            &cp,
            &WebhookOptions {
                args: vec!["--config".into(), config.to_str().unwrap().into()],
                ..WebhookOptions::default()
            },
        );
        // Registering waits until this server is called; istiod's validator is gone (a probe only it
        // refuses is admitted).
        webhook.register(&cp, "Fail");
        let started = std::time::Instant::now();
        while Verdict::of(
            &cp,
            ISTIOD_ONLY_REFUSES,
            "validate.mesh-admission.mesh-system.svc",
        )
        .0 != Verdict::Admitted
        {
            assert!(started.elapsed() < std::time::Duration::from_secs(30));
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        for (i, (_, yaml)) in cases.iter().enumerate() {
            if header(yaml, "mesh") == mesh {
                ours[i] = Some(Verdict::of(
                    &cp,
                    yaml,
                    "validate.mesh-admission.mesh-system.svc",
                ));
            }
        }
        webhook.stop();
    }

    let mut rows = vec![
        "| case | istiod | mesh-admission |".to_owned(),
        "| --- | --- | --- |".to_owned(),
    ];
    let mut problems = Vec::new();
    for (i, (name, yaml)) in cases.iter().enumerate() {
        let (their, their_text) = &theirs[i];
        let (our, our_text) = ours[i].as_ref().expect("every case has a mesh");
        let expect = header(yaml, "expect").unwrap();
        let answered = match our {
            Verdict::Refused | Verdict::Schema => "deny",
            Verdict::Warned => "warn",
            Verdict::Admitted => "admit",
        };
        if answered != expect {
            problems.push(format!(
                "{name}: ours answered {our:?}, the case expects {expect}: {our_text}"
            ));
        }
        if matches!(their, Verdict::Refused) && !matches!(our, Verdict::Refused) {
            problems.push(format!(
                "{name}: istiod refuses it ({their_text}), ours {our:?}"
            ));
        }
        if (*their == Verdict::Schema) != (*our == Verdict::Schema) {
            problems.push(format!(
                "{name}: the CRD schema answered differently: {their_text} / {our_text}"
            ));
        }
        let case = header(yaml, "case").unwrap();
        rows.push(format!(
            "| `{name}`: {case} | {} | {} |",
            their.cell(),
            our.cell()
        ));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));

    let table = rows.join("\n");
    eprintln!("{table}");
    let path = manifest_dir().join(TABLE_DOC);
    let doc = std::fs::read_to_string(&path).unwrap();
    let (before, rest) = doc
        .split_once(TABLE_BEGIN)
        .expect("the doc has the table's begin marker");
    let (_, after) = rest
        .split_once(TABLE_END)
        .expect("the doc has the table's end marker");
    let want = format!("{before}{TABLE_BEGIN}\n{table}\n{TABLE_END}{after}");
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &want).unwrap();
        return;
    }
    assert_eq!(
        doc, want,
        "{TABLE_DOC} does not show what happened; UPDATE_GOLDEN=1 rewrites it"
    );
}
