//! `render` (DESIGN.md section 9) from the outside: golden files, schema validity of everything it
//! generates, the shared corpus, properties (deterministic, order-independent, idempotent over its
//! own output) and the command's exit codes and output.
//!
//! Golden cases live in `tests/fixtures/render/<case>/`: `input.yaml`, an optional `config.yaml`,
//! and what `render` must print, `expected.yaml` (stdout) and `expected.stderr`. After a deliberate
//! change, `UPDATE_GOLDEN=1 cargo test --test render golden` rewrites them; review the diff.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use mesh_admission::cli::RenderOutput;
use mesh_admission::commands::render_text;
use mesh_admission::config::Config;
use mesh_admission::manifests::parse_objects;
use mesh_admission::model::Model;
use mesh_admission::policy::finding::Severity;
use mesh_admission::policy::kinds::{self, Kind};
use mesh_admission::policy::render::{MeshObject, Rendered};
use proptest::prelude::*;
use serde::Deserialize;
use serde_json::{Value, json};
use testkit::fixtures::render_cases;

/// `render` over manifests, as the command reads them.
fn render(inputs: &[Value], cfg: &Config) -> Rendered {
    mesh_admission::policy::render::render(&Model::from_manifests(inputs), cfg)
}

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn shared() -> PathBuf {
    manifest_dir().join("../shared")
}

fn case_config(case: &Path) -> Config {
    let path = case.join("config.yaml");
    if path.exists() {
        Config::from_file(&path).unwrap()
    } else {
        Config::default()
    }
}

/// stderr as the command prints it.
fn stderr_lines(rendered: &Rendered) -> String {
    rendered
        .problems
        .iter()
        .map(|p| match p.issue.severity() {
            Severity::Error => format!("error: {p}\n"),
            Severity::Warning => format!("Warning: {p}\n"),
        })
        .collect()
}

fn check_golden(path: &Path, actual: &str) {
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(path, actual).unwrap();
        return;
    }
    let expected =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(actual, expected, "{} differs", path.display());
}

#[test]
fn golden() {
    let cases = render_cases();
    assert!(cases.len() >= 3, "{cases:?}");
    for case in cases {
        let inputs =
            parse_objects(&std::fs::read_to_string(case.join("input.yaml")).unwrap()).unwrap();
        let rendered = render(&inputs, &case_config(&case));
        check_golden(
            &case.join("expected.yaml"),
            &render_text(&rendered.objects, RenderOutput::Yaml).unwrap(),
        );
        check_golden(&case.join("expected.stderr"), &stderr_lines(&rendered));
        for object in &rendered.objects {
            check_schema(object);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Schema validity

/// The `openAPIV3Schema` of each served version of the Istio CRDs, by (group, kind, version).
fn istio_schemas() -> &'static BTreeMap<(String, String, String), Value> {
    static SCHEMAS: OnceLock<BTreeMap<(String, String, String), Value>> = OnceLock::new();
    SCHEMAS.get_or_init(|| {
        let text = std::fs::read_to_string(shared().join("crds/istio-crd-all.gen.yaml")).unwrap();
        let mut schemas = BTreeMap::new();
        for crd in parse_objects(&text).unwrap() {
            let spec = &crd["spec"];
            for version in spec["versions"].as_array().unwrap() {
                if version["served"] != json!(true) {
                    continue;
                }
                schemas.insert(
                    (
                        spec["group"].as_str().unwrap().to_owned(),
                        spec["names"]["kind"].as_str().unwrap().to_owned(),
                        version["name"].as_str().unwrap().to_owned(),
                    ),
                    version["schema"]["openAPIV3Schema"].clone(),
                );
            }
        }
        schemas
    })
}

/// Decodes `value` as `T`, failing on any field `T` does not know.
fn decode_strict<T: serde::de::DeserializeOwned>(value: &Value, what: &str) -> T {
    let mut unknown = Vec::new();
    let decoded = serde_ignored::deserialize(value, |path| unknown.push(path.to_string()))
        .unwrap_or_else(|e| panic!("{what}: {e}\n{value:#}"));
    assert!(
        unknown.is_empty(),
        "{what}: unknown fields {unknown:?}\n{value:#}"
    );
    decoded
}

/// Every generated object against its schema: NetworkPolicy as k8s-openapi's type (the Kubernetes
/// OpenAPI), the Istio kinds against their CRD's structural schema and CEL rules; metadata as
/// Kubernetes' ObjectMeta everywhere.
fn check_schema(object: &MeshObject) {
    let manifest = &object.manifest();
    let what = format!("{} {}/{}", object.kind, object.namespace, object.name);
    let keys: Vec<&String> = manifest.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["apiVersion", "kind", "metadata", "spec"], "{what}");
    let meta: ObjectMeta = decode_strict(&manifest["metadata"], &what);
    assert_eq!(meta.name.as_deref(), Some(object.name.as_str()));
    assert!(object.name.len() <= 63, "{what}");
    for (key, value) in meta.labels.iter().flatten() {
        assert!(value.len() <= 63, "{what}: label {key}={value}");
    }
    if object.kind == &kinds::NETWORK_POLICY {
        let _: NetworkPolicy = decode_strict(manifest, &what);
        return;
    }
    let (group, version) = manifest["apiVersion"]
        .as_str()
        .unwrap()
        .split_once('/')
        .unwrap();
    let key = (
        group.to_owned(),
        manifest["kind"].as_str().unwrap().to_owned(),
        version.to_owned(),
    );
    let schema = istio_schemas()
        .get(&key)
        .unwrap_or_else(|| panic!("{what}: no served CRD version {key:?}"));
    let mut errors = Vec::new();
    validate(
        &schema["properties"]["spec"],
        &manifest["spec"],
        "spec",
        &mut errors,
    );
    assert!(
        errors.is_empty(),
        "{what}:\n{}\n{manifest:#}",
        errors.join("\n")
    );
}

/// Keywords of a structural schema this checker understands; any other one on a node it visits
/// fails the test rather than passing unchecked.
const KEYWORDS: [&str; 22] = [
    "description",
    "type",
    "properties",
    "additionalProperties",
    "items",
    "required",
    "enum",
    "format",
    "oneOf",
    "anyOf",
    "allOf",
    "not",
    "nullable",
    "maxLength",
    "minLength",
    "maxItems",
    "minItems",
    "maxProperties",
    "minProperties",
    "pattern",
    "x-kubernetes-validations",
    "x-kubernetes-int-or-string",
];
const MORE_KEYWORDS: [&str; 5] = [
    "x-kubernetes-preserve-unknown-fields",
    "x-kubernetes-list-type",
    "x-kubernetes-map-type",
    "maximum",
    "minimum",
];

/// A small structural-schema validator: types, properties (unknown ones refused), required,
/// items, enums, bounds, patterns, the combinators, and the CEL rules (`x-kubernetes-validations`).
fn validate(schema: &Value, value: &Value, path: &str, errors: &mut Vec<String>) {
    check(schema, value, path, errors, true);
}

/// `structural`: whether this node's properties are the structure (unknown fields are pruned by
/// the apiserver, refused here) or a combinator's branch, which only validates values.
fn check(schema: &Value, value: &Value, path: &str, errors: &mut Vec<String>, structural: bool) {
    let schema = schema.as_object().unwrap();
    for keyword in schema.keys() {
        assert!(
            KEYWORDS.contains(&keyword.as_str()) || MORE_KEYWORDS.contains(&keyword.as_str()),
            "{path}: schema keyword {keyword} is not supported by this checker"
        );
    }
    let mut fail = |message: String| errors.push(format!("{path}: {message}"));
    if value.is_null() && schema.get("nullable") == Some(&json!(true)) {
        return;
    }
    if schema.get("x-kubernetes-int-or-string") == Some(&json!(true)) {
        if !(value.is_i64() || value.is_string()) {
            fail(format!("{value} is neither an integer nor a string"));
        }
    } else if let Some(ty) = schema.get("type").and_then(Value::as_str) {
        let ok = match ty {
            "object" => value.is_object(),
            "array" => value.is_array(),
            "string" => value.is_string(),
            "integer" => value.is_i64() || value.is_u64(),
            "number" => value.is_number(),
            "boolean" => value.is_boolean(),
            other => panic!("{path}: type {other}"),
        };
        if !ok {
            return fail(format!("{value} is not of type {ty}"));
        }
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
        && !allowed.contains(value)
    {
        fail(format!("{value} is not one of {allowed:?}"));
    }
    if let (Some("int32"), Some(n)) = (schema.get("format").and_then(Value::as_str), value.as_i64())
        && i32::try_from(n).is_err()
    {
        fail(format!("{n} is not an int32"));
    }
    let bound = |key: &str| schema.get(key).and_then(Value::as_u64).map(|n| n as usize);
    if let Some(text) = value.as_str() {
        let chars = text.chars().count();
        if bound("maxLength").is_some_and(|max| chars > max)
            || bound("minLength").is_some_and(|min| chars < min)
        {
            fail(format!("{text:?} has a length out of bounds"));
        }
        if let Some(pattern) = schema.get("pattern").and_then(Value::as_str)
            && !regex::Regex::new(pattern).unwrap().is_match(text)
        {
            fail(format!("{text:?} does not match {pattern}"));
        }
    }
    if let Some(items) = value.as_array() {
        if bound("maxItems").is_some_and(|max| items.len() > max)
            || bound("minItems").is_some_and(|min| items.len() < min)
        {
            fail(format!("{} items are out of bounds", items.len()));
        }
        if let Some(item_schema) = schema.get("items") {
            for (i, item) in items.iter().enumerate() {
                check(
                    item_schema,
                    item,
                    &format!("{path}[{i}]"),
                    errors,
                    structural,
                );
            }
        }
    }
    if let Some(map) = value.as_object() {
        if bound("maxProperties").is_some_and(|max| map.len() > max)
            || bound("minProperties").is_some_and(|min| map.len() < min)
        {
            errors.push(format!(
                "{path}: {} properties are out of bounds",
                map.len()
            ));
        }
        for required in schema
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if !map.contains_key(required.as_str().unwrap()) {
                errors.push(format!("{path}: {required} is required"));
            }
        }
        let properties = schema.get("properties").and_then(Value::as_object);
        let preserve = schema.get("x-kubernetes-preserve-unknown-fields") == Some(&json!(true));
        for (key, field) in map {
            let at = format!("{path}.{key}");
            if let Some(field_schema) = properties.and_then(|p| p.get(key)) {
                check(field_schema, field, &at, errors, structural);
            } else if let Some(extra) = schema.get("additionalProperties").filter(|a| a.is_object())
            {
                check(extra, field, &at, errors, structural);
            } else if structural
                && !preserve
                && schema.get("additionalProperties") != Some(&json!(true))
            {
                errors.push(format!("{at}: unknown field"));
            }
        }
    }
    let matches = |s: &Value| {
        let mut inner = Vec::new();
        check(s, value, path, &mut inner, false);
        inner.is_empty()
    };
    if let Some(all) = schema.get("allOf").and_then(Value::as_array)
        && !all.iter().all(matches)
    {
        errors.push(format!("{path}: allOf fails"));
    }
    if let Some(any) = schema.get("anyOf").and_then(Value::as_array)
        && !any.iter().any(matches)
    {
        errors.push(format!("{path}: anyOf fails"));
    }
    if let Some(one) = schema.get("oneOf").and_then(Value::as_array)
        && one.iter().filter(|s| matches(s)).count() != 1
    {
        errors.push(format!("{path}: oneOf does not match exactly one"));
    }
    if let Some(not) = schema.get("not")
        && matches(not)
    {
        errors.push(format!("{path}: matches a `not` schema"));
    }
    for rule in schema
        .get("x-kubernetes-validations")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let expression = rule["rule"].as_str().unwrap();
        if !cel_rule(expression, value) {
            errors.push(format!("{path}: {} ({expression})", rule["message"]));
        }
    }
}

/// Kubernetes evaluates a CEL rule with `self` bound to the value; an expression this interpreter
/// cannot run fails the test, since it would leave the rule unchecked.
fn cel_rule(expression: &str, value: &Value) -> bool {
    let program = cel::Program::compile(expression).unwrap_or_else(|e| panic!("{expression}: {e}"));
    let mut context = cel::Context::default();
    context.add_variable("self", value.clone()).unwrap();
    match program.execute(&context) {
        Ok(cel::Value::Bool(result)) => result,
        other => panic!("{expression} on {value}: {other:?}"),
    }
}

/// Every kind, both route shapes (number and named target port), a long name, AuthorizationPolicies
/// on: each generated object passes its schema, and the checker does refuse broken ones.
#[test]
fn every_generated_kind_is_valid_against_its_schema() {
    let cfg = Config::from_yaml(
        "mesh:\n  authorizationPolicies: true\n  trustDomain: prod.example.org\n  gateways:\n  - {name: public, namespace: istio-system, selector: {app: public-ingressgateway, istio: ingressgateway}, serviceAccount: public-ingressgateway-service-account, default: true}\n  - {name: admin, namespace: admin-gateway, selector: {app: admin-ingressgateway}, serviceAccount: admin-sa}\n",
    )
    .unwrap();
    let inputs = parse_objects(&format!(
        "{}\n---\n{}",
        std::fs::read_to_string(manifest_dir().join("tests/fixtures/render/bigbang-podinfo/input.yaml")).unwrap(),
        "apiVersion: helm.toolkit.fluxcd.io/v2
kind: HelmRelease
metadata:
  name: a-helm-release-with-a-name-long-enough-to-need-cutting-down-x
  namespace: flux-system
  annotations: {servicemesh.bigbang.dev/expose: grafana, servicemesh.bigbang.dev/host: grafana.admin, servicemesh.bigbang.dev/port: '80', servicemesh.bigbang.dev/gateways: 'public,admin', servicemesh.bigbang.dev/mtlsMode: PERMISSIVE}
spec: {targetNamespace: monitoring}
---
apiVersion: v1
kind: Service
metadata: {name: grafana, namespace: monitoring}
spec: {selector: {app.kubernetes.io/name: grafana}, ports: [{port: 80, targetPort: 3000}]}
---
apiVersion: v1
kind: Pod
metadata: {name: debug, namespace: monitoring, labels: {app: debug}, annotations: {servicemesh.bigbang.dev/permissivePorts: '8080,9090'}}
spec: {containers: [{name: c, ports: [{containerPort: 8080}, {containerPort: 9090}]}]}
"
    ))
    .unwrap();
    let rendered = render(&inputs, &cfg);
    let kinds: std::collections::BTreeSet<&Kind> =
        rendered.objects.iter().map(|o| o.kind).collect();
    assert_eq!(kinds.len(), 4, "every kind: {kinds:?}");
    assert!(rendered.objects.len() >= 12, "{}", rendered.objects.len());
    for object in &rendered.objects {
        check_schema(object);
    }

    // The checker is not a rubber stamp: each of these breaks a rule of the schema or a CEL rule.
    let pa = rendered
        .objects
        .iter()
        .find(|o| o.name == "debug-permissive-ports")
        .unwrap();
    let vs = rendered
        .objects
        .iter()
        .find(|o| o.kind == &kinds::VIRTUAL_SERVICE)
        .unwrap();
    let schema = |kind: &str| {
        istio_schemas()[&(
            "security.istio.io".to_string(),
            kind.to_string(),
            "v1".to_string(),
        )]["properties"]["spec"]
            .clone()
    };
    for (schema, spec) in [
        (
            schema("PeerAuthentication"),
            json!({"portLevelMtls": {"8080": {"mode": "PERMISSIVE"}}}),
        ),
        (
            schema("PeerAuthentication"),
            json!({"selector": {"matchLabels": {"a": "b"}}, "portLevelMtls": {"0": {"mode": "PERMISSIVE"}}}),
        ),
        (
            schema("PeerAuthentication"),
            json!({"mtls": {"mode": "permissive"}}),
        ),
        (
            schema("PeerAuthentication"),
            json!({"mtls": {"mode": "STRICT", "extra": 1}}),
        ),
        (schema("AuthorizationPolicy"), json!({"action": "PERMIT"})),
        (
            schema("AuthorizationPolicy"),
            json!({"rules": [{"from": [{"source": {"principals": "x"}}]}]}),
        ),
    ] {
        let mut errors = Vec::new();
        validate(&schema, &spec, "spec", &mut errors);
        assert!(!errors.is_empty(), "{spec} passed");
    }
    let mut broken = vs.manifest();
    broken["spec"]["http"][0]["route"][0]["destination"]["port"] = json!({"number": "80"});
    let mut errors = Vec::new();
    validate(
        &istio_schemas()[&(
            "networking.istio.io".into(),
            "VirtualService".into(),
            "v1".into(),
        )]["properties"]["spec"],
        &broken["spec"],
        "spec",
        &mut errors,
    );
    assert!(!errors.is_empty());
    assert!(pa.manifest()["spec"]["portLevelMtls"].get("8080").is_some());
    let mut np = rendered
        .objects
        .iter()
        .find(|o| o.kind == &kinds::NETWORK_POLICY)
        .unwrap()
        .manifest();
    np["spec"]["podSelectr"] = json!({});
    let unknown = std::panic::catch_unwind(|| decode_strict::<NetworkPolicy>(&np, "broken"));
    assert!(unknown.is_err(), "an unknown NetworkPolicy field is caught");
}

// ---------------------------------------------------------------------------------------------
// The shared corpus

fn corpus_files() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path
                .extension()
                .is_some_and(|e| e == "yaml" || e == "yml" || e == "json")
            {
                out.push(path);
            }
        }
    }
    let mut files = Vec::new();
    walk(&shared().join("corpus"), &mut files);
    files.sort();
    files
}

#[test]
fn the_corpus_renders_without_panicking_and_its_mesh_helm_releases_as_section_9_says() {
    let cfg = Config::default();
    let mut all = Vec::new();
    let mut mesh_releases = Vec::new();
    let mut files = 0;
    // Each file is one repository's manifests, rendered as a set; then all of them at once.
    for file in corpus_files() {
        let Ok(objects) = parse_objects(&std::fs::read_to_string(&file).unwrap()) else {
            continue;
        };
        files += 1;
        let rendered = render(&objects, &cfg);
        for object in &rendered.objects {
            check_schema(object);
        }
        for object in &objects {
            let is_helm_release = object["apiVersion"]
                .as_str()
                .is_some_and(|v| v.starts_with("helm.toolkit.fluxcd.io/"));
            let has_mesh_annotations = object["metadata"]["annotations"]
                .as_object()
                .is_some_and(|a| a.keys().any(|k| k.starts_with("servicemesh.bigbang.dev/")));
            if is_helm_release && has_mesh_annotations {
                mesh_releases.push((object.clone(), rendered.clone()));
            }
        }
        all.extend(objects);
    }
    assert!(files >= 100, "{files} corpus files read");
    let together = render(&all, &cfg);
    for object in &together.objects {
        check_schema(object);
    }
    // Unrelated repositories together: flux2's podinfo HelmRelease and Big Bang's are both
    // podinfo/podinfo, so which one is meant cannot be told, and neither is used.
    assert!(
        together
            .problems
            .iter()
            .any(|p| p.to_string() == "HelmRelease podinfo/podinfo: is in the input more than once with different content; it is not used"),
        "{:?}",
        together.problems
    );

    // Every HelmRelease there with mesh annotations (the pepr-legacy proof of concept's podinfo),
    // rendered with the rest of its file.
    assert_eq!(
        mesh_releases.len(),
        1,
        "the corpus's Big Bang examples changed"
    );
    for (release, rendered) in &mesh_releases {
        let annotation = |k: &str| {
            release["metadata"]["annotations"][format!("servicemesh.bigbang.dev/{k}")]
                .as_str()
                .unwrap()
        };
        let name = release["metadata"]["name"].as_str().unwrap();
        let target = release["spec"]["targetNamespace"]
            .as_str()
            .unwrap_or(release["metadata"]["namespace"].as_str().unwrap());
        let find = |kind: &Kind, object: &str| {
            rendered
                .objects
                .iter()
                .find(|o| o.kind == kind && o.namespace == target && o.name == object)
                .unwrap_or_else(|| panic!("no {kind} {target}/{object}"))
        };
        let vs = find(&kinds::VIRTUAL_SERVICE, &format!("{name}-ingress"));
        assert_eq!(
            vs.manifest()["spec"],
            json!({
                "hosts": [format!("{}.bigbang.dev", annotation("host"))],
                "gateways": ["istio-system/public"],
                "http": [{"route": [{"destination": {
                    "host": format!("{}.{target}.svc.cluster.local", annotation("expose")),
                    "port": {"number": annotation("port").parse::<u16>().unwrap()},
                }}]}],
            })
        );
        let owner = format!(
            "helm.toolkit.fluxcd.io/HelmRelease/{}/{name}",
            release["metadata"]["namespace"].as_str().unwrap()
        );
        assert_eq!(
            vs.manifest()["metadata"]["annotations"]["mesh-admission/owner-ref"],
            json!(owner)
        );
        let pa = find(&kinds::PEER_AUTHENTICATION, "default");
        assert_eq!(pa.manifest()["spec"], json!({"mtls": {"mode": "STRICT"}}));
        // The chart's Service is not in the corpus (Helm renders it in the cluster): the
        // NetworkPolicy waits for it, and the warning says so.
        let warning = format!(
            "HelmRelease {target}/{name}: Service {target}/{} is unknown: VirtualService {target}/{name}-ingress is generated, its NetworkPolicy and AuthorizationPolicy are not",
            annotation("expose")
        );
        assert!(
            rendered.problems.iter().any(|p| p.to_string() == warning),
            "{:?}",
            rendered.problems
        );
        // Its Namespace is labelled: sidecars there may reach istiod.
        find(&kinds::NETWORK_POLICY, "allow-egress-istiod");
    }
    // The corpus holds no other mesh annotations, so nothing else but istiod egress is generated.
    assert!(
        together
            .objects
            .iter()
            .all(|o| o.kind == &kinds::NETWORK_POLICY && o.name == "allow-egress-istiod"),
        "{:?}",
        together
            .objects
            .iter()
            .map(|o| (o.kind, &o.namespace, &o.name))
            .collect::<Vec<_>>()
    );
}

// ---------------------------------------------------------------------------------------------
// Properties

/// Inputs drawn from a small world, so that names, hosts, modes and gateways collide often.
fn input() -> impl Strategy<Value = Value> {
    let namespace = prop::sample::select(vec!["apps", "shop", "web-prod"]);
    let name = prop::sample::select(vec!["web", "api", "db"]);
    let annotation = prop::sample::select(vec![
        ("servicemesh.bigbang.dev/expose", "web"),
        ("servicemesh.bigbang.dev/expose", "api"),
        ("servicemesh.bigbang.dev/host", "web"),
        ("servicemesh.bigbang.dev/host", "api.admin"),
        ("servicemesh.bigbang.dev/port", "80"),
        ("servicemesh.bigbang.dev/port", "8080"),
        ("servicemesh.bigbang.dev/port", "80a"),
        ("servicemesh.bigbang.dev/mtlsMode", "STRICT"),
        ("servicemesh.bigbang.dev/mtlsMode", "PERMISSIVE"),
        ("servicemesh.bigbang.dev/gateways", "public,admin"),
        ("servicemesh.bigbang.dev/gateways", "admin"),
        ("servicemesh.bigbang.dev/permissivePorts", "8080"),
        ("servicemesh.bigbang.dev/permissivePorts", "8080,,x"),
    ]);
    let annotations =
        prop::collection::btree_map(annotation.prop_map(|(k, v)| (k, v)), Just(()), 0..5).prop_map(
            |m| {
                m.into_keys()
                    .map(|(k, v)| (k.to_string(), json!(v)))
                    .collect::<serde_json::Map<_, _>>()
            },
        );
    let release = (namespace.clone(), name.clone(), annotations.clone(), prop::option::of(namespace.clone())).prop_map(
        |(ns, name, annotations, target)| {
            let mut release = json!({"apiVersion": "helm.toolkit.fluxcd.io/v2", "kind": "HelmRelease", "metadata": {"name": name, "namespace": ns, "annotations": annotations}, "spec": {}});
            if let Some(target) = target {
                release["spec"]["targetNamespace"] = json!(target);
            }
            release
        },
    );
    let service = (namespace.clone(), name.clone(), prop::sample::select(vec![json!(80), json!("http"), Value::Null]), any::<bool>()).prop_map(
        |(ns, name, target_port, selector)| {
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": ns},
                   "spec": {"selector": if selector { json!({"app": name}) } else { Value::Null }, "ports": [{"port": 80, "targetPort": target_port}]}})
        },
    );
    let ns = (namespace.clone(), prop::sample::select(vec![json!({}), json!({"istio-injection": "disabled"})])).prop_map(
        |(name, labels)| json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}}),
    );
    let workload = (namespace.clone(), name.clone(), prop::sample::select(vec!["Deployment", "StatefulSet", "Pod"]), annotations).prop_map(
        |(ns, name, kind, annotations)| {
            if kind == "Pod" {
                json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": ns, "labels": {"app": name}, "annotations": annotations}, "spec": {"containers": [{"name": "c"}]}})
            } else {
                json!({"apiVersion": "apps/v1", "kind": kind, "metadata": {"name": name, "namespace": ns},
                       "spec": {"selector": {"matchLabels": {"app": name}}, "template": {"metadata": {"annotations": annotations}, "spec": {"containers": [{"name": "c"}]}}}})
            }
        },
    );
    let foreign = (namespace, prop::sample::select(vec![("VirtualService", "web-ingress"), ("PeerAuthentication", "default"), ("PeerAuthentication", "mtls"), ("NetworkPolicy", "allow-egress-istiod")])).prop_map(
        |(ns, (kind, name))| {
            let api = match kind {
                "VirtualService" => "networking.istio.io/v1",
                "NetworkPolicy" => "networking.k8s.io/v1",
                _ => "security.istio.io/v1beta1",
            };
            json!({"apiVersion": api, "kind": kind, "metadata": {"name": name, "namespace": ns}, "spec": {}})
        },
    );
    prop_oneof![4 => release, 2 => service, 1 => ns, 2 => workload, 1 => foreign]
}

fn property_config() -> &'static Config {
    static CONFIG: OnceLock<Config> = OnceLock::new();
    CONFIG.get_or_init(|| {
        Config::from_yaml("mesh:\n  authorizationPolicies: true\n  gateways:\n  - {name: public, namespace: istio-system, selector: {app: public}, serviceAccount: public, default: true}\n  - {name: admin, namespace: admin-gw, selector: {app: admin}, serviceAccount: admin}\n").unwrap()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn render_is_deterministic_order_independent_and_idempotent(
        inputs in prop::collection::vec(input(), 0..14),
        seed in any::<u64>(),
    ) {
        let cfg = property_config();
        let first = render(&inputs, cfg);
        // Deterministic, to the byte.
        let again = render(&inputs, cfg);
        prop_assert_eq!(&again, &first);
        let text = render_text(&first.objects, RenderOutput::Yaml).unwrap();
        prop_assert_eq!(&render_text(&again.objects, RenderOutput::Yaml).unwrap(), &text);
        // Order-independent: any permutation of the inputs.
        let mut shuffled = inputs.clone();
        let mut state = seed | 1;
        for i in (1..shuffled.len()).rev() {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            shuffled.swap(i, (state % (i as u64 + 1)) as usize);
        }
        prop_assert_eq!(&render(&shuffled, cfg), &first);
        // Idempotent over its own output: inputs + outputs give the same outputs and problems.
        let mut with_output = shuffled;
        with_output.extend(first.objects.iter().map(|o| o.manifest()));
        prop_assert_eq!(&render(&with_output, cfg), &first);
        // Sorted by kind, namespace and name, and each key once.
        let keys: Vec<_> = first.objects.iter().map(|o| (o.kind, o.namespace.clone(), o.name.clone())).collect();
        let mut sorted = keys.clone();
        sorted.sort();
        sorted.dedup();
        prop_assert_eq!(keys, sorted);
    }
}

// ---------------------------------------------------------------------------------------------
// The command

/// Runs `render` with `args`, feeding `stdin`; returns (exit code, stdout, stderr).
fn run(args: &[&str], stdin: &str) -> (i32, String, String) {
    testkit::run_command("render", args, stdin)
}

fn fixture(case: &str, file: &str) -> String {
    manifest_dir()
        .join("tests/fixtures/render")
        .join(case)
        .join(file)
        .display()
        .to_string()
}

#[test]
fn the_command_prints_the_golden_output_and_exits_by_outcome() {
    for case in render_cases() {
        let name = case.file_name().unwrap().to_str().unwrap();
        let mut args = vec!["-f".to_string(), fixture(name, "input.yaml")];
        if case.join("config.yaml").exists() {
            args.extend(["--config".to_string(), fixture(name, "config.yaml")]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (code, stdout, stderr) = run(&args, "");
        let expected_stderr = std::fs::read_to_string(case.join("expected.stderr")).unwrap();
        assert_eq!(
            stdout,
            std::fs::read_to_string(case.join("expected.yaml")).unwrap(),
            "{name}"
        );
        assert_eq!(stderr, expected_stderr, "{name}");
        let want = if expected_stderr.lines().any(|l| l.starts_with("error: ")) {
            1
        } else {
            0
        };
        assert_eq!(code, want, "{name}: {stderr}");
    }
}

#[test]
fn several_files_and_stdin_in_any_order_print_the_same_bytes() {
    // The podinfo case split in two: its input as one file and as stdin, in both orders.
    let input = std::fs::read_to_string(fixture("bigbang-podinfo", "input.yaml")).unwrap();
    let documents: Vec<&str> = input.split("\n---\n").collect();
    let (first, second) = documents.split_at(documents.len() / 2);
    let dir =
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("render-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let a = dir.join("a.yaml");
    std::fs::write(&a, first.join("\n---\n")).unwrap();
    let second = second.join("\n---\n");
    let expected = std::fs::read_to_string(fixture("bigbang-podinfo", "expected.yaml")).unwrap();
    for args in [
        vec!["-f", a.to_str().unwrap(), "-f", "-"],
        vec!["-f", "-", "-f", a.to_str().unwrap()],
    ] {
        let (code, stdout, stderr) = run(&args, &second);
        assert_eq!(
            (code, stdout.as_str()),
            (0, expected.as_str()),
            "{args:?}: {stderr}"
        );
    }
    // JSON: one List of the same objects.
    let (code, stdout, _) = run(
        &[
            "-f",
            &fixture("bigbang-podinfo", "input.yaml"),
            "-o",
            "json",
        ],
        "",
    );
    assert_eq!(code, 0);
    let list: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        (list["apiVersion"].as_str(), list["kind"].as_str()),
        (Some("v1"), Some("List"))
    );
    let from_yaml: Vec<Value> = yaml_serde::Deserializer::from_str(&expected)
        .map(|d| Value::deserialize(d).unwrap())
        .collect();
    assert_eq!(list["items"], json!(from_yaml));
    // Its own output fed back in changes nothing.
    let (code, stdout, _) = run(
        &["-f", &fixture("bigbang-podinfo", "input.yaml"), "-f", "-"],
        &expected,
    );
    assert_eq!((code, stdout.as_str()), (0, expected.as_str()));
}

#[test]
fn unreadable_input_or_configuration_is_exit_2() {
    let (code, stdout, stderr) = run(&[], "apiVersion: v1\nkind: Service\nmetadata: [\n");
    assert_eq!(code, 2);
    assert!(stdout.is_empty());
    assert!(stderr.contains("<stdin>: line "), "{stderr}");
    let (code, _, stderr) = run(&["-f", "/nonexistent.yaml"], "");
    assert_eq!(code, 2);
    assert!(stderr.contains("/nonexistent.yaml"), "{stderr}");
    let (code, _, stderr) = run(&[], "");
    assert_eq!(code, 2);
    assert!(stderr.contains("no objects in <stdin>"), "{stderr}");
    assert_eq!(run(&["--allow-empty"], "").0, 0);
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("render-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("config.yaml");
    std::fs::write(&config, "mesh:\n  gatways: []\n").unwrap();
    let (code, _, stderr) = run(
        &["--config", config.to_str().unwrap()],
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n",
    );
    assert_eq!(code, 2);
    assert!(
        stderr.contains("invalid configuration at mesh") && stderr.contains("gatways"),
        "{stderr}"
    );
}

#[test]
fn render_help_gives_the_exit_codes() {
    let out = Command::new(testkit::mesh_admission())
        .args(["render", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8(out.stdout).unwrap();
    for needle in [
        "Exit status:",
        "0  generated",
        "1  some input refused",
        "2  unreadable input",
        "--output",
        "--config",
        "--filename",
    ] {
        assert!(help.contains(needle), "{needle}: {help}");
    }
}
