//! The shared corpus of real public manifests (`../shared/corpus`) through the real kube-apiserver
//! (DESIGN.md section 11, issue 14 point 3): every bare Pod and every workload's pod template, as the Pod
//! its controller would create, is created with kubectl while mesh-admission is registered, and what
//! the apiserver stored or refused is compared with what `mesh-admission review` says offline for the
//! very same Pod.
//!
//! Each Pod goes to its object's own namespace (`corpus` when it names none), created labelled
//! `istio-injection=enabled`: one shared test namespace would never show the webhook configuration's
//! exclusions by name (istio-system is in the corpus) disagreeing with `review`'s, which reads the same
//! namespace from the Pod.
//!
//! The apiserver defaults much of a Pod, so "stored as predicted" is proven twice: the fields the
//! webhook writes (labels, annotations, the workload-socket volume) are compared with `review`'s object
//! as printed, and the whole stored Pod with `review`'s object as the apiserver stores it without our
//! webhooks (a dry run in kube-system, which the webhook configuration never sends).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Deserialize;
use serde_json::{Value, json};
use testkit::{ControlPlane, Webhook, mesh_admission_stdin};

/// Where corpus objects that name no namespace go.
const DEFAULT_NAMESPACE: &str = "corpus";

/// Where the same Pods are created a second time, with server-side dry runs, to see what the apiserver
/// makes of them without our webhooks: the webhook configuration never sends kube-system.
const BASELINE_NAMESPACE: &str = "kube-system";

/// One Pod of the corpus, as sent both to the apiserver and to `review`.
struct Case {
    /// File, document, kind and name of the corpus object it comes from.
    origin: String,
    name: String,
    namespace: String,
    pod: Value,
    /// A corpus Pod given an annotation our webhook refuses (see [`denial_variants`]).
    variant: bool,
}

/// What the apiserver made of a Pod: the object it stored (or, in a dry run, would have stored), or its
/// refusal as kubectl printed it.
#[derive(Debug)]
enum Outcome {
    Stored(Value),
    Refused(String),
}

/// What `review` predicts for a Pod: the object to be stored, or the denial message.
enum Prediction {
    Admitted(Value),
    Denied(String),
}

fn corpus_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus");
    assert!(
        dir.is_dir(),
        "{} is missing: this test runs the shared corpus",
        dir.display()
    );
    dir
}

fn manifest_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            manifest_files(&path, out);
        } else if matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml" | "json")
        ) {
            out.push(path);
        }
    }
}

/// Where an object keeps the Pod it stands for, for the kinds `review --help` names: the object itself
/// for a Pod, its pod template for a workload; `None` for kinds that create no Pod.
fn pod_pointer(object: &Value) -> Option<&'static str> {
    let api_version = object["apiVersion"].as_str().unwrap_or_default();
    let group = api_version.rsplit_once('/').map_or("", |(group, _)| group);
    match (group, object["kind"].as_str()?) {
        ("", "Pod") => Some(""),
        ("apps", "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet")
        | ("batch", "Job")
        | ("", "ReplicationController") => Some("/spec/template"),
        ("batch", "CronJob") => Some("/spec/jobTemplate/spec/template"),
        _ => None,
    }
}

/// A DNS-1123 name unique to the case (the corpus repeats names across files), readable in kubectl's
/// messages.
fn pod_name(index: usize, original: &str) -> String {
    let mut name = format!("c{index:03}-");
    let slug: String = original
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    name.push_str(&slug);
    name.truncate(63);
    name.trim_end_matches('-').to_owned()
}

/// The Pod a controller creates from `source` (a Pod's own metadata and spec, or a template's): the
/// labels and annotations it carries, the spec as written, a name of its own, the object's namespace.
fn controller_pod(source: &Value, name: &str, namespace: &str) -> Value {
    let mut metadata = json!({"name": name, "namespace": namespace});
    for field in ["labels", "annotations"] {
        if let Some(value) = source["metadata"].get(field) {
            metadata[field] = value.clone();
        }
    }
    let mut pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": metadata});
    if let Some(spec) = source.get("spec") {
        pod["spec"] = spec.clone();
    }
    pod
}

/// The volumes the StatefulSet controller puts first in the Pods of ordinal 0 (`updateStorage` in
/// kubernetes/pkg/controller/statefulset), replacing the template's volumes of the same name: the
/// template's volumeMounts name them, so a Pod without them is not the Pod the controller creates and
/// the apiserver refuses it.
fn add_claim_volumes(statefulset: &Value, pod: &mut Value) {
    let set = statefulset["metadata"]["name"].as_str().unwrap();
    let claims: Vec<&str> = statefulset["spec"]["volumeClaimTemplates"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|claim| claim["metadata"]["name"].as_str().unwrap())
        .collect();
    if claims.is_empty() {
        return;
    }
    let mut volumes: Vec<Value> = claims
        .iter()
        .map(|claim| {
            json!({"name": claim,
                   "persistentVolumeClaim": {"claimName": format!("{claim}-{set}-0")}})
        })
        .collect();
    volumes.extend(
        pod["spec"]["volumes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|volume| !claims.iter().any(|claim| volume["name"] == *claim))
            .cloned(),
    );
    pod["spec"]["volumes"] = Value::Array(volumes);
}

/// Every Pod the corpus stands for, and the workload kinds found under a group `review` does not
/// recognise (so none of them is silently skipped).
fn corpus_cases() -> (Vec<Case>, Vec<String>) {
    let root = corpus_dir();
    let mut files = Vec::new();
    manifest_files(&root, &mut files);
    let mut cases = Vec::new();
    let mut unrecognised = Vec::new();
    for path in files {
        let text = std::fs::read_to_string(&path).unwrap();
        let file = path.strip_prefix(&root).unwrap().display().to_string();
        let mut objects = Vec::new();
        for (document, yaml) in yaml_serde::Deserializer::from_str(&text).enumerate() {
            let value = Value::deserialize(yaml)
                .unwrap_or_else(|e| panic!("{file}: document {document} is not YAML: {e}"));
            match value["items"].as_array() {
                Some(items) if value["kind"].as_str().is_some_and(|k| k.ends_with("List")) => {
                    objects.extend(items.iter().map(|item| (document, item.clone())));
                }
                _ if value.is_object() => objects.push((document, value)),
                _ => {}
            }
        }
        for (document, object) in objects {
            let kind = object["kind"].as_str().unwrap_or_default();
            let original = object["metadata"]["name"].as_str().unwrap_or("unnamed");
            let origin = format!("{file} #{document} {kind} {original}");
            let Some(pointer) = pod_pointer(&object) else {
                if [
                    "Pod",
                    "Deployment",
                    "StatefulSet",
                    "DaemonSet",
                    "ReplicaSet",
                    "Job",
                    "CronJob",
                    "ReplicationController",
                ]
                .contains(&kind)
                {
                    unrecognised.push(format!("{origin} ({})", object["apiVersion"]));
                }
                continue;
            };
            let source = object
                .pointer(pointer)
                .filter(|source| source.is_object())
                .unwrap_or_else(|| panic!("{origin}: no pod template at {pointer}"));
            let namespace = object["metadata"]["namespace"]
                .as_str()
                .unwrap_or(DEFAULT_NAMESPACE)
                .to_owned();
            let name = pod_name(cases.len(), original);
            let mut pod = controller_pod(source, &name, &namespace);
            if kind == "StatefulSet" {
                add_claim_volumes(&object, &mut pod);
            }
            cases.push(Case {
                origin,
                name,
                namespace,
                pod,
                variant: false,
            });
        }
    }
    (cases, unrecognised)
}

/// Annotations DESIGN.md section 5 refuses on a Pod, one kind of mistake each.
const REFUSED_ANNOTATIONS: &[(&str, &str)] = &[
    ("servicemesh.bigbang.dev/permissivePorts", "8080,,8080"),
    (
        "contrast.edgeless.systems/servicemesh-ingress",
        "web#70000#maybe",
    ),
    ("servicemesh.bigbang.dev/mtlsmode", "STRICT"),
];

/// Every tenth corpus Pod once more with one of [`REFUSED_ANNOTATIONS`] added to its own: the corpus
/// holds no Pod that `review` denies, and without these, "the webhook denies exactly what review
/// denies" would hold of a webhook that denies nothing.
fn denial_variants(cases: &[Case]) -> Vec<Case> {
    cases
        .iter()
        .step_by(10)
        .zip(REFUSED_ANNOTATIONS.iter().cycle())
        .enumerate()
        .map(|(i, (case, (key, value)))| {
            let name = pod_name(cases.len() + i, &format!("refused-{}", case.name));
            let mut pod = case.pod.clone();
            pod["metadata"]["name"] = json!(name);
            if !pod["metadata"]["annotations"].is_object() {
                pod["metadata"]["annotations"] = json!({});
            }
            pod["metadata"]["annotations"][key] = json!(value);
            Case {
                origin: format!("{} with {key}: {value:?}", case.origin),
                name,
                namespace: case.namespace.clone(),
                pod,
                variant: true,
            }
        })
        .collect()
}

fn list(items: impl IntoIterator<Item = Value>) -> String {
    let items: Vec<Value> = items.into_iter().collect();
    json!({"apiVersion": "v1", "kind": "List", "items": items}).to_string()
}

/// `review` on every Pod at once: `--output review` for the decision and its message, `--output
/// object` for the object as it would be stored.
fn predictions(cases: &[Case]) -> Vec<Prediction> {
    let input = list(cases.iter().map(|case| case.pod.clone()));
    let run = |output: &str| {
        let result = mesh_admission_stdin(&["review", "--output", output, "-f", "-"], &input);
        assert!(
            matches!(result.status.code(), Some(0 | 1)),
            "review --output {output} failed: {}",
            String::from_utf8_lossy(&result.stderr)
        );
        String::from_utf8(result.stdout).unwrap()
    };
    let reviews: Vec<Value> = run("review")
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let objects: Vec<Value> = yaml_serde::Deserializer::from_str(&run("object"))
        .map(|document| Value::deserialize(document).unwrap())
        .collect();
    assert_eq!(reviews.len(), cases.len(), "one review line per Pod");
    assert_eq!(objects.len(), cases.len(), "one object per Pod");
    cases
        .iter()
        .zip(reviews)
        .zip(objects)
        .map(|((case, review), object)| {
            assert_eq!(review["name"], case.name.as_str(), "{}", case.origin);
            assert_eq!(object["metadata"]["name"], case.name.as_str());
            let denial = ["mutate", "validate"].into_iter().find_map(|endpoint| {
                let reply = &review[endpoint]["response"];
                (reply["allowed"] == false).then(|| {
                    let message = reply["status"]["message"].as_str();
                    message.unwrap_or_else(|| panic!("{}: {reply}", case.origin))
                })
            });
            match denial {
                Some(message) => Prediction::Denied(message.to_owned()),
                None => Prediction::Admitted(object),
            }
        })
        .collect()
}

/// The objects kubectl printed with `-o json`: one, a List, or several one after the other.
fn printed_objects(stdout: &[u8]) -> Vec<Value> {
    let mut objects = Vec::new();
    for value in serde_json::Deserializer::from_slice(stdout).into_iter::<Value>() {
        let value = value.unwrap_or_else(|e| {
            panic!(
                "kubectl printed no JSON ({e}): {}",
                String::from_utf8_lossy(stdout)
            )
        });
        match value["items"].as_array() {
            Some(items) if value["kind"] == "List" => objects.extend(items.iter().cloned()),
            _ => objects.push(value),
        }
    }
    objects
}

/// kubectl's stderr without the warnings it relays, which do not say which object they are about.
fn errors_of(stderr: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(stderr)
        .lines()
        .filter(|line| !line.starts_with("Warning: ") && !line.trim().is_empty())
        .map(str::to_owned)
        .collect()
}

/// `kubectl create -o json ARGS -f -` on all `pods` in one call (kubectl goes on after a refusal), then
/// once more for each Pod the first call did not print: a refusal in a batch does not say which object
/// it is about, a refusal of one object does.
fn create_all(cp: &ControlPlane, pods: &[Value], args: &[&str]) -> Vec<Outcome> {
    let mut create = vec!["create", "-o", "json", "-f", "-"];
    create.extend_from_slice(args);
    let output = cp.kubectl_stdin(&create, &list(pods.iter().cloned()));
    let key = |object: &Value| {
        (
            object["metadata"]["namespace"].as_str().unwrap().to_owned(),
            object["metadata"]["name"].as_str().unwrap().to_owned(),
        )
    };
    let mut printed: BTreeMap<(String, String), Value> = printed_objects(&output.stdout)
        .into_iter()
        .map(|object| (key(&object), object))
        .collect();
    let missing = pods
        .iter()
        .filter(|pod| !printed.contains_key(&key(pod)))
        .count();
    let errors = errors_of(&output.stderr);
    assert_eq!(
        errors.len(),
        missing,
        "one error line per Pod kubectl did not print\n{}",
        cp.report(&output)
    );
    assert_eq!(
        output.status.success(),
        missing == 0,
        "{}",
        cp.report(&output)
    );
    pods.iter()
        .map(|pod| {
            if let Some(object) = printed.remove(&key(pod)) {
                return Outcome::Stored(object);
            }
            let single = cp.kubectl_stdin(&create, &pod.to_string());
            assert!(
                !single.status.success(),
                "{:?} refused in a batch, admitted alone\n{}",
                key(pod),
                cp.report(&single)
            );
            let errors = errors_of(&single.stderr);
            assert_eq!(errors.len(), 1, "{}", cp.report(&single));
            Outcome::Refused(errors.into_iter().next().unwrap())
        })
        .collect()
}

/// The name of the admission webhook that denied a request, if one did.
fn denying_webhook(refusal: &str) -> Option<&str> {
    let (_, rest) = refusal.split_once("admission webhook \"")?;
    let (name, rest) = rest.split_once('"')?;
    rest.starts_with(" denied the request").then_some(name)
}

/// kubectl's refusal without its prefix and with the Pod's namespace and name neutral, so a refusal in
/// the baseline namespace reads like the same refusal in the Pod's own.
fn refusal_reason(refusal: &str, case: &Case) -> String {
    let reason = refusal
        .split_once("error when creating \"STDIN\": ")
        .map_or(refusal, |(_, reason)| reason);
    reason
        .replace(&format!("\"{}\"", case.name), "\"NAME\"")
        .replace(&format!("\"{}\"", case.namespace), "\"NAMESPACE\"")
        .replace(&format!("\"{BASELINE_NAMESPACE}\""), "\"NAMESPACE\"")
}

/// What the apiserver refuses of the corpus on its own, and why, in words a reader of the corpus knows.
/// Everything else it refuses fails the test.
fn apiserver_refusal_category(reason: &str) -> Option<&'static str> {
    const CATEGORIES: &[(&str, &str)] = &[
        (
            "strict decoding error: unknown field",
            "unknown field (kubectl's strict field validation)",
        ),
        (
            "metadata.labels: Invalid value",
            "invalid label key or value",
        ),
        (
            "metadata.annotations: Invalid value",
            "invalid annotation key",
        ),
        (
            "must not be specified when serviceAccountName is not set",
            "projected serviceAccountToken without serviceAccountName",
        ),
    ];
    CATEGORIES
        .iter()
        .find(|(needle, _)| reason.contains(needle))
        .map(|(_, category)| *category)
}

/// A Pod as stored, without what the apiserver sets per request (identity, time, bookkeeping).
fn without_server_fields(pod: &Value) -> Value {
    let mut pod = pod.clone();
    let metadata = pod["metadata"].as_object_mut().unwrap();
    for field in [
        "uid",
        "resourceVersion",
        "creationTimestamp",
        "managedFields",
        "namespace",
        "generation",
    ] {
        metadata.remove(field);
    }
    pod
}

/// JSON pointers where `a` and `b` differ (an array of another length counts as one difference).
fn differences(a: &Value, b: &Value, at: &str, out: &mut Vec<String>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for key in keys {
                let pointer = format!("{at}/{}", key.replace('~', "~0").replace('/', "~1"));
                differences(
                    x.get(key).unwrap_or(&Value::Null),
                    y.get(key).unwrap_or(&Value::Null),
                    &pointer,
                    out,
                );
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (x, y)) in x.iter().zip(y).enumerate() {
                differences(x, y, &format!("{at}/{i}"), out);
            }
        }
        _ if a != b => out.push(at.to_owned()),
        _ => {}
    }
}

/// Whether a difference between a Pod and its prediction lies where DESIGN.md section 4 lets the webhook
/// write: labels, annotations, volumes, and containers' volume mounts.
fn webhook_may_write(pointer: &str) -> bool {
    let container_mounts = pointer
        .strip_prefix("/spec/containers/")
        .and_then(|rest| rest.split_once('/'))
        .is_some_and(|(index, rest)| {
            index.parse::<usize>().is_ok()
                && (rest == "volumeMounts" || rest.starts_with("volumeMounts/"))
        });
    container_mounts
        || ["/metadata/labels", "/metadata/annotations", "/spec/volumes"]
            .iter()
            .any(|prefix| pointer == *prefix || pointer.starts_with(&format!("{prefix}/")))
}

/// The volumes other than the workload socket, in order.
fn other_volumes(pod: &Value) -> Vec<Value> {
    pod["spec"]["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|volume| volume["name"] != "workload-socket")
        .cloned()
        .collect()
}

fn workload_sockets(pod: &Value) -> Vec<Value> {
    pod["spec"]["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|volume| volume["name"] == "workload-socket")
        .cloned()
        .collect()
}

/// Differences between the stored Pod and `review`'s prediction, each as one line; none when they agree.
fn compare_stored(case: &Case, stored: &Value, predicted: &Value, baseline: &Value) -> Vec<String> {
    let mut found = Vec::new();
    // The fields the webhook writes are not defaulted by the apiserver: they must be stored as predicted.
    for pointer in ["/metadata/labels", "/metadata/annotations"] {
        if stored.pointer(pointer) != predicted.pointer(pointer) {
            found.push(format!(
                "{pointer}: stored {:?}, review {:?}",
                stored.pointer(pointer),
                predicted.pointer(pointer)
            ));
        }
    }
    if workload_sockets(stored) != workload_sockets(predicted) {
        found.push(format!(
            "workload-socket volume: stored {:?}, review {:?}",
            workload_sockets(stored),
            workload_sockets(predicted)
        ));
    }
    // Everything else as the apiserver defaults it: the prediction created without our webhooks.
    let mut rest = Vec::new();
    differences(
        &without_server_fields(stored),
        &without_server_fields(baseline),
        "",
        &mut rest,
    );
    found.extend(rest.into_iter().map(|pointer| {
        format!("{pointer}: stored differs from review's object as the apiserver defaults it")
    }));
    // And the prediction itself changes nothing the webhook may not write, nor any other volume.
    let mut written = Vec::new();
    differences(&case.pod, predicted, "", &mut written);
    found.extend(
        written
            .into_iter()
            .filter(|pointer| !webhook_may_write(pointer))
            .map(|pointer| format!("{pointer}: review changed a field the webhook never writes")),
    );
    if other_volumes(&case.pod) != other_volumes(predicted) {
        found.push("review changed a volume other than workload-socket".to_owned());
    }
    found
}

/// The value of every `mesh_admission_requests_total` series in a `/metrics` reply, summed.
fn requests_total(metrics: &str) -> u64 {
    testkit::metrics::sum(metrics, "mesh_admission_requests_total") as u64
}

/// Namespaces labelled for injection, the ServiceAccounts and RuntimeClasses the Pods name: what the
/// corpus objects assume a cluster has, so the apiserver refuses only what the Pods themselves carry.
fn cluster_prerequisites(cases: &[Case]) -> Vec<Value> {
    let namespaces: BTreeSet<&str> = cases.iter().map(|case| case.namespace.as_str()).collect();
    let accounts: BTreeSet<(&str, &str)> = cases
        .iter()
        .filter_map(|case| {
            let spec = &case.pod["spec"];
            let account = spec["serviceAccountName"]
                .as_str()
                .or(spec["serviceAccount"].as_str())?;
            Some((case.namespace.as_str(), account))
        })
        .collect();
    let runtime_classes: BTreeSet<&str> = cases
        .iter()
        .filter_map(|case| case.pod["spec"]["runtimeClassName"].as_str())
        .collect();
    // The labels are explicit because the namespace webhook leaves excluded namespaces (istio-system)
    // unlabelled: every Pod goes where the pod webhook's namespaceSelector would send it, unless the
    // webhook configuration excludes the namespace by name, which review must then agree with.
    let mut objects: Vec<Value> = namespaces
        .iter()
        .map(|name| {
            json!({"apiVersion": "v1", "kind": "Namespace",
                   "metadata": {"name": name, "labels": {"istio-injection": "enabled"}}})
        })
        .collect();
    // The control plane runs without the ServiceAccount admission plugin, which would refuse a Pod
    // naming an account that does not exist; a cluster has it, and the corpus ships its accounts.
    objects.extend(accounts.iter().map(|(namespace, name)| {
        json!({"apiVersion": "v1", "kind": "ServiceAccount",
               "metadata": {"name": name, "namespace": namespace}})
    }));
    // The RuntimeClass admission plugin refuses a Pod naming a RuntimeClass that does not exist (the
    // Contrast Pods name `kata-cc-isolation`); its handler is never run, since no Pod is scheduled.
    objects.extend(runtime_classes.iter().map(|name| {
        json!({"apiVersion": "node.k8s.io/v1", "kind": "RuntimeClass",
               "metadata": {"name": name}, "handler": name})
    }));
    objects
}

/// How one Pod fared against `review`.
enum Verdict {
    /// Stored, with what review predicted.
    Matching,
    /// Refused by our webhook, with review's message.
    DeniedAsPredicted,
    /// Refused by the apiserver on its own, for a reason of a known category.
    RefusedByApiserver {
        category: &'static str,
        reason: String,
    },
    /// Anything else, each difference on a line.
    Mismatch(Vec<String>),
}

/// What the apiserver did with one Pod, weighed against `review`.
struct Evidence<'a> {
    case: &'a Case,
    prediction: &'a Prediction,
    /// The Pod created in its namespace, with our webhooks.
    created: &'a Outcome,
    /// What kubectl get returns for it afterwards.
    stored: Option<&'a Value>,
    /// The Pod as written, dry-run in the baseline namespace: without our webhooks.
    written_alone: &'a Outcome,
    /// Review's object, dry-run in the baseline namespace (admitted predictions only).
    predicted_alone: Option<&'a Outcome>,
}

fn verdict(evidence: &Evidence) -> Verdict {
    let Evidence {
        case, prediction, ..
    } = evidence;
    let mismatch = |what: String| Verdict::Mismatch(vec![what]);
    let refusal = match evidence.created {
        Outcome::Stored(printed) => {
            let Some(stored) = evidence.stored else {
                return mismatch(
                    "kubectl printed it as created; kubectl get does not list it".into(),
                );
            };
            assert_eq!(
                printed["metadata"]["uid"], stored["metadata"]["uid"],
                "{}",
                case.origin
            );
            return match (prediction, evidence.predicted_alone) {
                (Prediction::Admitted(predicted), Some(Outcome::Stored(baseline))) => {
                    let found = compare_stored(case, stored, predicted, baseline);
                    if found.is_empty() {
                        Verdict::Matching
                    } else {
                        Verdict::Mismatch(found)
                    }
                }
                (Prediction::Admitted(_), alone) => mismatch(format!(
                    "stored, though the apiserver refuses review's object without our webhooks: \
                     {alone:?}"
                )),
                (Prediction::Denied(message), _) => {
                    mismatch(format!("stored, review denied it: {message}"))
                }
            };
        }
        Outcome::Refused(refusal) => refusal,
    };
    if evidence.stored.is_some() {
        return mismatch(format!(
            "kubectl printed {refusal:?}, yet kubectl get lists it"
        ));
    }
    if let Some(webhook) = denying_webhook(refusal) {
        return match prediction {
            Prediction::Denied(message)
                if webhook.contains("mesh-admission")
                    && refusal.ends_with(&format!("denied the request: {message}")) =>
            {
                Verdict::DeniedAsPredicted
            }
            Prediction::Denied(message) => mismatch(format!(
                "refused with {refusal:?}, review denied it with {message:?}"
            )),
            Prediction::Admitted(_) => {
                mismatch(format!("refused with {refusal:?}, review admitted it"))
            }
        };
    }
    // The apiserver's own refusal is one it makes just so of the Pod as written, without our webhooks;
    // one it makes only after our webhook changed the Pod is the webhook's doing.
    let reason = refusal_reason(refusal, case);
    let alone = match evidence.written_alone {
        Outcome::Refused(alone) => refusal_reason(alone, case),
        Outcome::Stored(_) => "admitted".to_owned(),
    };
    match apiserver_refusal_category(&reason) {
        Some(category) if alone == reason => Verdict::RefusedByApiserver { category, reason },
        _ => mismatch(format!(
            "refused with {reason:?}; without our webhooks: {alone:?}"
        )),
    }
}

/// Verdicts of one population (the corpus, or the denial variants), for the summary.
#[derive(Default)]
struct Tally {
    pods: usize,
    matching: usize,
    denied_as_predicted: usize,
    refused_by_apiserver: BTreeMap<&'static str, Vec<String>>,
    mismatches: Vec<String>,
}

impl Tally {
    fn add(&mut self, case: &Case, prediction: &Prediction, verdict: Verdict) {
        self.pods += 1;
        match verdict {
            Verdict::Matching => self.matching += 1,
            Verdict::DeniedAsPredicted => self.denied_as_predicted += 1,
            Verdict::RefusedByApiserver { category, reason } => {
                let note = match prediction {
                    Prediction::Denied(_) => " (review denies it as well)",
                    Prediction::Admitted(_) => "",
                };
                self.refused_by_apiserver
                    .entry(category)
                    .or_default()
                    .push(format!("{}: {reason}{note}", case.origin));
            }
            Verdict::Mismatch(found) => self.mismatches.extend(
                found
                    .into_iter()
                    .map(|line| format!("{}: {line}", case.origin)),
            ),
        }
    }

    fn refused(&self) -> usize {
        self.refused_by_apiserver.values().map(Vec::len).sum()
    }

    fn print(&self, title: &str) {
        println!("{title}: {} Pods", self.pods);
        println!("  stored, and as review predicted: {}", self.matching);
        println!(
            "  denied by our webhook, as review predicted: {}",
            self.denied_as_predicted
        );
        println!("  refused by the apiserver itself: {}", self.refused());
        for (category, pods) in &self.refused_by_apiserver {
            println!("    {category}: {}", pods.len());
            for pod in pods {
                println!("      {pod}");
            }
        }
        println!("  differences from review: {}", self.mismatches.len());
        for mismatch in &self.mismatches {
            println!("    {mismatch}");
        }
    }
}

#[test]
fn every_corpus_pod_is_stored_or_refused_as_review_predicts() {
    let started = Instant::now();
    let (mut cases, unrecognised) = corpus_cases();
    assert!(
        cases.len() >= 100,
        "the corpus stands for {} Pods; fewer than 100 means it was not read",
        cases.len()
    );
    cases.extend(denial_variants(&cases));
    let predictions = predictions(&cases);

    let cp = ControlPlane::start();
    let webhook = Webhook::start(&cp);
    webhook.register(&cp, "Fail");
    let control_plane_ready = started.elapsed();

    cp.kubectl_stdin_ok(
        ["apply", "--server-side", "-f", "-"],
        &list(cluster_prerequisites(&cases)),
    );
    let namespaces: BTreeSet<&str> = cases.iter().map(|case| case.namespace.as_str()).collect();
    for namespace in &namespaces {
        let stored = cp.get_json(["namespace", namespace]);
        assert_eq!(
            stored["metadata"]["labels"]["istio-injection"], "enabled",
            "{stored:#}"
        );
    }

    // Without our webhooks: what the apiserver refuses of the Pods as written, and what it would store
    // of review's predictions, defaults included.
    let through_apiserver = Instant::now();
    let before_baseline = requests_total(&webhook.metrics());
    let in_baseline = |pod: &Value| {
        let mut pod = pod.clone();
        pod["metadata"]["namespace"] = json!(BASELINE_NAMESPACE);
        pod
    };
    let written_alone = create_all(
        &cp,
        &cases
            .iter()
            .map(|case| in_baseline(&case.pod))
            .collect::<Vec<_>>(),
        &["--dry-run=server"],
    );
    let admitted: Vec<(usize, &Value)> = predictions
        .iter()
        .enumerate()
        .filter_map(|(i, prediction)| match prediction {
            Prediction::Admitted(object) => Some((i, object)),
            Prediction::Denied(_) => None,
        })
        .collect();
    let predicted_alone: BTreeMap<usize, Outcome> = admitted
        .iter()
        .map(|(i, _)| *i)
        .zip(create_all(
            &cp,
            &admitted
                .iter()
                .map(|(_, object)| in_baseline(object))
                .collect::<Vec<_>>(),
            &["--dry-run=server"],
        ))
        .collect();
    assert_eq!(
        requests_total(&webhook.metrics()),
        before_baseline,
        "the apiserver sent {BASELINE_NAMESPACE} Pods to the webhook: the baseline is not without it"
    );

    let creating = Instant::now();
    let created = create_all(
        &cp,
        &cases
            .iter()
            .map(|case| case.pod.clone())
            .collect::<Vec<_>>(),
        &[],
    );
    let creation_time = creating.elapsed();
    let stored: BTreeMap<(String, String), Value> =
        cp.get_json(["pods", "--all-namespaces"])["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|pod| {
                let name = |field: &str| pod["metadata"][field].as_str().unwrap().to_owned();
                ((name("namespace"), name("name")), pod.clone())
            })
            .collect();
    let apiserver_time = through_apiserver.elapsed();

    let (mut corpus, mut variants) = (Tally::default(), Tally::default());
    for (i, case) in cases.iter().enumerate() {
        let evidence = Evidence {
            case,
            prediction: &predictions[i],
            created: &created[i],
            stored: stored.get(&(case.namespace.clone(), case.name.clone())),
            written_alone: &written_alone[i],
            predicted_alone: predicted_alone.get(&i),
        };
        let tally = if case.variant {
            &mut variants
        } else {
            &mut corpus
        };
        tally.add(case, &predictions[i], verdict(&evidence));
    }

    println!(
        "{} Pods through kube-apiserver from {} (control plane ready in {control_plane_ready:.1?}; \
         created in {creation_time:.1?}; with both dry runs without our webhooks and the read-back \
         {apiserver_time:.1?}; whole test {:.1?})",
        cases.len(),
        corpus_dir().display(),
        started.elapsed()
    );
    corpus.print("corpus");
    variants.print("corpus Pods given an annotation our webhook refuses");
    for object in &unrecognised {
        println!("not a workload review recognises (unknown group): {object}");
    }
    let mismatches = corpus.mismatches.len() + variants.mismatches.len();
    assert_eq!(
        mismatches,
        0,
        "differences between the apiserver and review, listed above (logs: {})",
        cp.logs().display()
    );
    assert_eq!(
        stored.len(),
        corpus.matching + variants.matching,
        "the apiserver stores only the Pods that match review"
    );
    // The corpus is meant to run: a growing share of refusals would mean the Pods are built wrong.
    assert!(
        corpus.refused() * 10 <= corpus.pods,
        "{} of {} corpus Pods refused by the apiserver itself",
        corpus.refused(),
        corpus.pods
    );
    // Each variant carries a refused annotation, so review denies it, and the webhook refuses every
    // one the apiserver lets through to it.
    assert!(
        predictions
            .iter()
            .zip(&cases)
            .all(|(prediction, case)| !case.variant || matches!(prediction, Prediction::Denied(_))),
        "review admits a variant with a refused annotation"
    );
    assert_eq!(
        variants.denied_as_predicted + variants.refused(),
        variants.pods
    );
    assert!(
        variants.denied_as_predicted > 0,
        "the webhook denied none of the variants"
    );
    assert!(
        !webhook.metrics().contains(r#"result="error""#),
        "the webhook could not decode something the apiserver sent"
    );
}
