//! Dispatch: every kind of DESIGN.md section 5 reaches its rules with the full field path, everything else
//! is admitted unread; and a run over the real manifests of the shared corpus.

use std::path::{Path, PathBuf};

use serde::Deserialize as _;
use serde_json::{Value, json};

use super::*;

/// The rules with the embedded default configuration (its gateways are the ones `gateways` may name).
fn validate(group: &str, kind: &str, object_json: &str) -> Result<Vec<Finding>, DecodeError> {
    super::validate(group, kind, object_json, &Config::default())
}

/// A pod template with one bad annotation and one bad Contrast env var on a native sidecar.
fn bad_template() -> Value {
    json!({
        "metadata": {"labels": {"app": "web"}, "annotations": {"servicemesh.bigbang.dev/permissivePorts": "8080,0"}},
        "spec": {
            "initContainers": [{
                "name": "sidecar",
                "restartPolicy": "Always",
                "env": [{"name": "EDG_INGRESS_PROXY_CONFIG", "value": "web#8080#false##metrics#99999#true"}],
            }],
            "containers": [{"name": "web", "ports": [{"containerPort": 8080}]}],
        },
    })
}

/// The errors of an object, rendered.
fn errors(group: &str, kind: &str, object: &Value) -> Vec<String> {
    validate(group, kind, &object.to_string())
        .expect("decodes")
        .iter()
        .filter(|f| f.is_error())
        .map(|f| f.to_string())
        .collect()
}

/// The two errors `bad_template()` gives when it sits at `at`.
fn expected_errors(at: &str) -> Vec<String> {
    let at = if at.is_empty() {
        String::new()
    } else {
        format!("{at}.")
    };
    vec![
        format!(
            r#"{at}metadata.annotations[servicemesh.bigbang.dev/permissivePorts]: entry 2 must be a port number 1-65535 (value "0")"#
        ),
        format!(
            r###"{at}spec.initContainers[0].env[EDG_INGRESS_PROXY_CONFIG]: entry 2 ("metrics#99999#true"): port must be a port number 1-65535 (value "99999")"###
        ),
    ]
}

fn workload(api_version: &str, kind: &str) -> Value {
    json!({
        "apiVersion": api_version,
        "kind": kind,
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}}, "template": bad_template()},
    })
}

#[test]
fn deployment() {
    let object = workload("apps/v1", "Deployment");
    assert_eq!(
        errors("apps", "Deployment", &object),
        expected_errors("spec.template")
    );
}

#[test]
fn stateful_set() {
    let object = workload("apps/v1", "StatefulSet");
    assert_eq!(
        errors("apps", "StatefulSet", &object),
        expected_errors("spec.template")
    );
}

#[test]
fn daemon_set() {
    let object = workload("apps/v1", "DaemonSet");
    assert_eq!(
        errors("apps", "DaemonSet", &object),
        expected_errors("spec.template")
    );
}

#[test]
fn replica_set() {
    let object = workload("apps/v1", "ReplicaSet");
    assert_eq!(
        errors("apps", "ReplicaSet", &object),
        expected_errors("spec.template")
    );
}

#[test]
fn job() {
    let object = workload("batch/v1", "Job");
    assert_eq!(
        errors("batch", "Job", &object),
        expected_errors("spec.template")
    );
}

#[test]
fn cron_job() {
    let object = json!({
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {"name": "report"},
        "spec": {"schedule": "@daily", "jobTemplate": {"spec": {"template": bad_template()}}},
    });
    assert_eq!(
        errors("batch", "CronJob", &object),
        expected_errors("spec.jobTemplate.spec.template")
    );
}

#[test]
fn pod() {
    let mut object = bad_template();
    object["apiVersion"] = json!("v1");
    object["kind"] = json!("Pod");
    assert_eq!(errors("", "Pod", &object), expected_errors(""));
    assert_eq!(errors("core", "Pod", &object), expected_errors(""));
}

#[test]
fn helm_release_any_version() {
    for version in ["v2", "v2beta1", "v2beta2", "v3alpha1"] {
        let object = json!({
            "apiVersion": format!("helm.toolkit.fluxcd.io/{version}"),
            "kind": "HelmRelease",
            "metadata": {"name": "grafana", "annotations": {
                "servicemesh.bigbang.dev/expose": "grafana",
                "servicemesh.bigbang.dev/host": "grafana",
                "servicemesh.bigbang.dev/port": "80a",
            }},
        });
        assert_eq!(
            errors("helm.toolkit.fluxcd.io", "HelmRelease", &object),
            [
                r#"metadata.annotations[servicemesh.bigbang.dev/port]: must be a port number 1-65535 (value "80a")"#
            ],
            "{version}"
        );
    }
}

#[test]
fn deployment_warnings_fit_a_kubectl_line_uncut() {
    let object = json!({"spec": {"template": {"metadata": {"annotations": {
        "servicemesh.bigbang.dev/permissivePorts": "65535",
        "servicemesh.bigbang.dev/mtlsMode": "STRICT",
    }}}}});
    let findings = validate("apps", "Deployment", &object.to_string()).expect("decodes");
    let warnings: Vec<String> = findings
        .iter()
        .filter(|f| !f.is_error())
        .map(|f| f.to_string())
        .collect();
    assert_eq!(warnings.len(), 2, "{findings:?}");
    for w in warnings {
        assert!(w.chars().count() <= crate::policy::MAX_WARNING_CHARS, "{w}");
    }
}

#[test]
fn workloads_without_a_template_have_nothing_to_report() {
    let cases = [
        ("apps", "Deployment", json!({})),
        ("apps", "Deployment", json!({"spec": null})),
        ("apps", "Deployment", json!({"spec": {"template": null}})),
        ("batch", "CronJob", json!({"spec": {"jobTemplate": {}}})),
        (
            "batch",
            "CronJob",
            json!({"spec": {"jobTemplate": {"spec": {}}}}),
        ),
    ];
    for (group, kind, object) in cases {
        assert_eq!(
            validate(group, kind, &object.to_string()),
            Ok(vec![]),
            "{object}"
        );
    }
}

#[test]
fn unfamiliar_kinds_are_admitted_unread() {
    let bad = bad_template().to_string();
    let cases = [
        ("", "Service"),
        ("", "ConfigMap"),
        ("argoproj.io", "Rollout"),
        ("apps", "ControllerRevision"),
        ("extensions", "Deployment"),
        ("source.toolkit.fluxcd.io", "HelmRepository"),
        ("helm.toolkit.fluxcd.io", "HelmChart"),
    ];
    for (group, kind) in cases {
        assert_eq!(validate(group, kind, &bad), Ok(vec![]), "{group}/{kind}");
        // Not even decoded.
        assert_eq!(
            validate(group, kind, "not json"),
            Ok(vec![]),
            "{group}/{kind}"
        );
    }
}

#[test]
fn wrong_types_name_the_full_path() {
    let cases = [
        (
            "apps",
            "Deployment",
            json!({"spec": {"template": {"metadata": {"annotations": "a=b"}}}}),
            "spec.template.metadata.annotations",
        ),
        (
            "batch",
            "CronJob",
            json!({"spec": {"jobTemplate": {"spec": {"template": {"spec": {"containers": {}}}}}}}),
            "spec.jobTemplate.spec.template.spec.containers",
        ),
        (
            "helm.toolkit.fluxcd.io",
            "HelmRelease",
            json!({"metadata": {"annotations": {"servicemesh.bigbang.dev/port": 80}}}),
            "metadata.annotations.servicemesh.bigbang.dev/port",
        ),
        ("", "Pod", json!("a pod"), "(object)"),
    ];
    for (group, kind, object, path) in cases {
        let err = validate(group, kind, &object.to_string()).expect_err("wrong type");
        assert_eq!(err.path, path, "{object}");
    }
    assert!(validate("", "Pod", "{").is_err());
}

/// The shared corpus of real manifests: `MESH_ADMISSION_CORPUS`, else the nearest `shared/corpus` above
/// the crate (`../shared/corpus` in CI).
fn corpus_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("MESH_ADMISSION_CORPUS") {
        return Some(PathBuf::from(dir));
    }
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .skip(1)
        .map(|a| a.join("shared").join("corpus"))
        .find(|d| d.is_dir())
}

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            yaml_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            out.push(path);
        }
    }
}

/// The objects of one document: itself, or a List's items.
fn objects(doc: Value, out: &mut Vec<Value>) {
    let is_list = doc
        .get("kind")
        .and_then(Value::as_str)
        .is_some_and(|k| k.ends_with("List"));
    match doc {
        Value::Object(mut map) if is_list && map.get("items").is_some_and(Value::is_array) => {
            if let Some(Value::Array(items)) = map.remove("items") {
                for item in items {
                    objects(item, out);
                }
            }
        }
        Value::Object(_) => out.push(doc),
        _ => {}
    }
}

#[test]
fn the_corpus_never_panics() {
    let Some(dir) = corpus_dir() else {
        eprintln!("corpus not found: skipped");
        return;
    };
    let mut files = Vec::new();
    yaml_files(&dir, &mut files);
    files.sort();
    let (mut checked, mut unreadable, mut findings_total, mut undecodable) = (0, 0, 0, 0);
    let mut ruled: std::collections::BTreeMap<String, usize> = Default::default();
    for file in &files {
        let Ok(text) = std::fs::read_to_string(file) else {
            unreadable += 1;
            continue;
        };
        let name = file.strip_prefix(&dir).unwrap_or(file).display();
        for document in yaml_serde::Deserializer::from_str(&text) {
            let Ok(doc) = Value::deserialize(document) else {
                // Helm templates and the like: not YAML until rendered.
                unreadable += 1;
                break;
            };
            let mut found = Vec::new();
            objects(doc, &mut found);
            for object in found {
                let api_version = object
                    .get("apiVersion")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
                let kind = object.get("kind").and_then(Value::as_str).unwrap_or("");
                checked += 1;
                if kinds::find(group, kind).is_some_and(|k| k.validate.is_some()) {
                    *ruled.entry(kind.to_owned()).or_default() += 1;
                }
                match validate(group, kind, &object.to_string()) {
                    Ok(findings) => {
                        for f in &findings {
                            findings_total += 1;
                            eprintln!("{name}: {kind}: {:?} {f}", f.severity);
                        }
                    }
                    Err(e) => {
                        undecodable += 1;
                        eprintln!("{name}: {kind}: undecodable: {e}");
                    }
                }
            }
        }
    }
    eprintln!(
        "corpus {}: {} files, {checked} objects checked ({ruled:?} had rules), {findings_total} findings, \
         {undecodable} undecodable objects, {unreadable} unreadable documents",
        dir.display(),
        files.len()
    );
    assert!(checked > 0, "no objects found under {}", dir.display());
}

/// Every object of the corpus, as `(file, object)`, Lists flattened.
fn corpus_objects(dir: &Path) -> Vec<(String, Value)> {
    let mut files = Vec::new();
    yaml_files(dir, &mut files);
    files.sort();
    let mut out = Vec::new();
    for file in &files {
        let Ok(text) = std::fs::read_to_string(file) else {
            continue;
        };
        let name = file.strip_prefix(dir).unwrap_or(file).display().to_string();
        for document in yaml_serde::Deserializer::from_str(&text) {
            let Ok(doc) = Value::deserialize(document) else {
                break;
            };
            let mut found = Vec::new();
            objects(doc, &mut found);
            out.extend(found.into_iter().map(|o| (name.clone(), o)));
        }
    }
    out
}

/// The Istio objects of the shared corpus (DESIGN.md section 10): every one goes through its rules, and
/// the findings are exactly the ones listed here, each with why it is a true finding.
///
/// The corpus holds 8 PeerAuthentications (Kyverno's enforce-strict-mtls tests) and 1 VirtualService
/// (microservices-demo). None is wrong in a way section 10 names: PERMISSIVE and DISABLE (pa-bad*) are
/// "bad" only for Kyverno's STRICT-only policy, `UNSET` and an empty `mtls: {}` are Istio's own way of
/// inheriting, and the VirtualService has neither gateways nor retries. So the expected list is empty,
/// and the test fails the day a corpus object (or a rule) changes that.
///
/// The 5 ClusterSPIFFEIDs (section 13) are admitted too: Istio's two samples select
/// `spiffe.io/spire-managed-identity` with Istio's form, and spire-controller-manager's demo IDs
/// (`spiffe://cluster1.demo/greeter-server`) select pods outside the mesh, so their form is theirs.
#[test]
fn istio_objects_of_the_corpus_give_exactly_the_listed_findings() {
    let Some(dir) = corpus_dir() else {
        panic!("../shared/corpus not found: the Istio corpus test needs it");
    };
    let expected: Vec<(&str, &str)> = Vec::new();
    let mut found = Vec::new();
    let mut checked: std::collections::BTreeMap<String, usize> = Default::default();
    for (file, object) in corpus_objects(&dir) {
        let api_version = object["apiVersion"].as_str().unwrap_or("");
        let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
        let kind = object["kind"].as_str().unwrap_or("");
        let Some(validator) = kinds::find(group, kind).and_then(|k| k.validate) else {
            continue;
        };
        if !validator.reads_spec() {
            continue;
        }
        *checked.entry(kind.to_owned()).or_default() += 1;
        let findings = validate(group, kind, &object.to_string())
            .unwrap_or_else(|e| panic!("{file}: {kind}: {e}"));
        for f in findings {
            found.push((file.clone(), f.to_string()));
        }
    }
    assert_eq!(
        checked,
        [
            ("ClusterSPIFFEID".to_owned(), 5),
            ("PeerAuthentication".to_owned(), 8),
            ("VirtualService".to_owned(), 1)
        ]
        .into_iter()
        .collect(),
        "the corpus's Istio objects changed"
    );
    let found: Vec<(&str, &str)> = found
        .iter()
        .map(|(f, m)| (f.as_str(), m.as_str()))
        .collect();
    assert_eq!(found, expected);
}

/// Every corpus object read as each Istio kind (a Deployment as a VirtualService, a Service as a
/// Gateway…): real shapes the rules were not written for. Wrong types are decode errors (400), and
/// nothing panics.
#[test]
fn any_corpus_object_read_as_an_istio_kind_never_panics() {
    let Some(dir) = corpus_dir() else {
        panic!("../shared/corpus not found");
    };
    let istio: Vec<&kinds::Kind> = kinds::validated()
        .filter(|k| k.validate.is_some_and(kinds::Validator::reads_spec))
        .collect();
    // The five Istio kinds and ClusterSPIFFEIDs.
    assert_eq!(istio.len(), 6);
    let (mut decoded, mut refused) = (0, 0);
    for (_, object) in corpus_objects(&dir) {
        let text = object.to_string();
        for kind in &istio {
            match validate(kind.group, kind.kind, &text) {
                Ok(_) => decoded += 1,
                Err(_) => refused += 1,
            }
        }
    }
    eprintln!("read as Istio kinds: {decoded} decoded, {refused} refused as the wrong shape");
    assert!(decoded > 500, "{decoded}");
}
