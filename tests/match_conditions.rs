//! The webhooks' `matchConditions` only skip calls whose answer cannot matter (DESIGN.md section 8).
//!
//! Every condition `webhook-config` prints is evaluated with a CEL interpreter over every object of our
//! fixtures, samples, the shared corpus (`../shared/corpus`) and the edge cases below, as the apiserver
//! would send it to that webhook (a workload's pod template also as the Pod its controller creates).
//! Where a condition says "skip", the server's own answer for that object must be: allowed, no patch,
//! no warning. No condition may fail to evaluate (the apiserver would apply the failure policy), and
//! every condition must skip something and let something through, or it is not doing its job.
//!
//! The real apiserver's side (that it accepts these expressions and evaluates them the same way) is
//! in `tests/e2e.rs`: there the server's request counters show which calls were skipped.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use cel::extractors::This;
use cel::{Context, Program};
use k8s_openapi::api::admissionregistration::v1::MatchCondition;
use mesh_admission::admission::{self, Decision, Endpoint};
use mesh_admission::config::Config;
use mesh_admission::manifests::parse_objects;
use mesh_admission::policy::kinds;
use mesh_admission::review::{is_workload, mutation_target};
use mesh_admission::webhook_config::{WebhookOptions, mutating, validating};
use serde_json::{Value, json};

/// One webhook of the configurations: its endpoint, which objects its rules send, its conditions.
struct Hook {
    name: String,
    endpoint: Endpoint,
    sends: fn(&Value) -> bool,
    conditions: Vec<(MatchCondition, Program)>,
}

fn kind_of(object: &Value) -> (&str, &str) {
    let api_version = object["apiVersion"].as_str().unwrap_or("");
    let group = api_version.split_once('/').map_or("", |(g, _)| g);
    (group, object["kind"].as_str().unwrap_or(""))
}

fn is_namespace(object: &Value) -> bool {
    kind_of(object) == ("", "Namespace")
}

fn is_pod(object: &Value) -> bool {
    kind_of(object) == ("", "Pod")
}

/// The validating webhook's rules: HelmReleases, Pods, the workload kinds and the Istio security
/// objects it lists, in the versions it lists.
fn is_validated(object: &Value) -> bool {
    let (group, kind) = kind_of(object);
    let version = object["apiVersion"]
        .as_str()
        .and_then(|v| v.rsplit('/').next())
        .unwrap_or("");
    kinds::find(group, kind).is_some_and(|k| {
        k.validate.is_some() && (k.versions == ["*"] || k.versions.contains(&version))
    })
}

fn hooks(cfg: &Config) -> Vec<Hook> {
    let options = WebhookOptions::new("mesh-admission", "mesh-system", cfg);
    let compile = |conditions: Option<Vec<MatchCondition>>| -> Vec<(MatchCondition, Program)> {
        conditions
            .unwrap_or_default()
            .into_iter()
            .map(|c| {
                let program = Program::compile(&c.expression)
                    .unwrap_or_else(|e| panic!("{}: {e}\n{}", c.name, c.expression));
                (c, program)
            })
            .collect()
    };
    let mut hooks = Vec::new();
    for hook in mutating(&options).webhooks.unwrap_or_default() {
        let sends: fn(&Value) -> bool = if hook.name.starts_with("namespaces.") {
            is_namespace
        } else {
            is_pod
        };
        hooks.push(Hook {
            name: hook.name,
            endpoint: Endpoint::Mutate,
            sends,
            conditions: compile(hook.match_conditions),
        });
    }
    for hook in validating(&options).webhooks.unwrap_or_default() {
        hooks.push(Hook {
            name: hook.name,
            endpoint: Endpoint::Validate,
            sends: is_validated,
            conditions: compile(hook.match_conditions),
        });
    }
    assert_eq!(hooks.len(), 4, "three mutating webhooks and one validating");
    for hook in &hooks {
        assert!(
            !hook.conditions.is_empty(),
            "{} has no matchConditions",
            hook.name
        );
    }
    hooks
}

/// Kubernetes' CEL has the `strings` extension library; this is its `lowerAscii`.
fn lower_ascii(This(text): This<Arc<String>>) -> String {
    text.to_ascii_lowercase()
}

/// Whether the apiserver calls `hook` for `object`: every condition true. An evaluation error fails
/// the test, since the apiserver would answer it with the failure policy.
fn calls(hook: &Hook, object: &Value, what: &str) -> bool {
    let mut context = Context::default();
    let _ = context.add_function("lowerAscii", lower_ascii);
    context
        .add_variable("object", object.clone())
        .unwrap_or_else(|e| panic!("{what}: object as a CEL value: {e}"));
    // The parts of `request` (admission.k8s.io AdmissionRequest) the conditions may read.
    let (group, kind) = kind_of(object);
    let version = object["apiVersion"]
        .as_str()
        .and_then(|v| v.rsplit('/').next())
        .unwrap_or("v1");
    let request =
        json!({"kind": {"group": group, "version": version, "kind": kind}, "operation": "CREATE"});
    context
        .add_variable("request", request)
        .unwrap_or_else(|e| panic!("{what}: request as a CEL value: {e}"));
    hook.conditions
        .iter()
        .all(|(condition, program)| match program.execute(&context) {
            Ok(cel::Value::Bool(result)) => result,
            other => panic!(
                "{what}: condition {} of {} evaluated to {other:?}, not a boolean\n{}",
                condition.name, hook.name, condition.expression
            ),
        })
}

fn review(endpoint: Endpoint, object: &Value, cfg: &Config) -> Decision {
    let (group, kind) = kind_of(object);
    let version = object["apiVersion"]
        .as_str()
        .and_then(|v| v.rsplit('/').next())
        .unwrap_or("v1");
    let mut request = json!({
        "uid": "00000000-0000-4000-8000-000000000001",
        "kind": {"group": group, "version": version, "kind": kind},
        "resource": {"group": group, "version": version, "resource": format!("{}s", kind.to_lowercase())},
        "name": object["metadata"]["name"].as_str().unwrap_or(""),
        "operation": "CREATE",
        "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
        "object": object,
        "oldObject": null,
        "dryRun": false,
    });
    if kind != "Namespace" {
        request["namespace"] = json!("demo");
    }
    let body =
        json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request});
    admission::review(endpoint, body.to_string().as_bytes(), cfg)
        .expect("a review we built is an AdmissionReview")
        .decision
}

#[derive(Default)]
struct Counts {
    called: usize,
    skipped: usize,
}

/// Sends `object` (and, for a workload, the Pod its template makes) to every hook whose rules
/// match, and checks each skipped call. Returns `(hook name, called)` for each hook that matched.
fn check(object: &Value, what: &str, hooks: &[Hook], cfg: &Config) -> Vec<(String, bool)> {
    let mut subjects = vec![(object.clone(), what.to_owned())];
    if is_workload(object)
        && let Some(pod) = mutation_target(object)
    {
        subjects.push((pod, format!("{what} (its Pod)")));
    }
    // Whatever the apiserver sends has metadata (at least a name or generateName); a template
    // without any makes a Pod that has some by the time it is admitted.
    for (subject, _) in &mut subjects {
        if !subject["metadata"].is_object()
            && let Some(map) = subject.as_object_mut()
        {
            map.insert("metadata".into(), json!({"generateName": "from-template-"}));
        }
    }
    let mut seen = Vec::new();
    for (subject, what) in &subjects {
        for hook in hooks.iter().filter(|h| (h.sends)(subject)) {
            let called = calls(hook, subject, what);
            if !called {
                match review(hook.endpoint, subject, cfg) {
                    Decision::Allowed { patch, warnings } => assert!(
                        patch.is_empty() && warnings.is_empty(),
                        "{what}: {} skips it, but the server would answer with patch {patch:?} \
                         and warnings {warnings:?}",
                        hook.name
                    ),
                    denied => panic!(
                        "{what}: {} skips it, but the server would deny it: {denied:?}",
                        hook.name
                    ),
                }
            }
            seen.push((hook.name.clone(), called));
        }
    }
    seen
}

fn manifest_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<PathBuf> = entries.filter_map(Result::ok).map(|e| e.path()).collect();
    entries.sort();
    for path in entries {
        // `render`'s golden cases (inputs, a configuration, expected output) are tests/render.rs's:
        // not admission fixtures.
        if path.ends_with("tests/fixtures/render") {
            continue;
        }
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

#[test]
fn whatever_a_condition_skips_the_server_would_admit_unchanged_and_silently() {
    let cfg = Config::default();
    let hooks = hooks(&cfg);
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let corpus = root.join("../shared/corpus");
    assert!(corpus.is_dir(), "{} is missing", corpus.display());
    let mut files = Vec::new();
    for dir in [
        root.join("tests/fixtures"),
        root.join("hack/samples"),
        corpus,
    ] {
        manifest_files(&dir, &mut files);
    }

    let mut counts: BTreeMap<String, Counts> = BTreeMap::new();
    let mut objects = 0;
    for path in &files {
        let Ok(text) = std::fs::read_to_string(path) else {
            continue;
        };
        // Not every file of a repository is a manifest; those are not objects the apiserver sends.
        let Ok(parsed) = parse_objects(&text) else {
            continue;
        };
        for (index, object) in parsed.iter().enumerate() {
            // An AdmissionReview sample stands for its object.
            let object = if object["kind"] == "AdmissionReview" {
                &object["request"]["object"]
            } else {
                object
            };
            if !object.is_object() {
                continue;
            }
            objects += 1;
            let what = format!(
                "{} #{index} ({} {})",
                path.display(),
                object["kind"],
                object["metadata"]["name"]
            );
            for (hook, called) in check(object, &what, &hooks, &cfg) {
                let count = counts.entry(hook).or_default();
                if called {
                    count.called += 1;
                } else {
                    count.skipped += 1;
                }
            }
        }
    }
    for (hook, count) in &counts {
        println!("{hook}: called {}, skipped {}", count.called, count.skipped);
    }
    println!("{objects} objects from {} files", files.len());
    assert!(objects > 300, "only {objects} objects found");
    // The opt-in webhook shares the Pod conditions; the others must each both skip and call here.
    for hook in hooks.iter().filter(|h| !h.name.starts_with("pods-opt-in.")) {
        let count = counts
            .get(&hook.name)
            .unwrap_or_else(|| panic!("{} never matched", hook.name));
        assert!(
            count.called > 0 && count.skipped > 0,
            "{}: called {}, skipped {}",
            hook.name,
            count.called,
            count.skipped
        );
    }
}

fn pod(metadata: Value, spec: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec})
}

fn app() -> Value {
    json!([{"name": "app", "image": "example/app:1"}])
}

/// The edges of each condition: what each one must let through (the server acts or warns) and
/// what it may skip.
#[test]
fn each_condition_calls_at_its_edges_exactly_when_the_answer_can_matter() {
    let cfg = Config::default();
    let hooks = hooks(&cfg);
    let contrast_env = json!([{"name": "app", "image": "example/app:1",
        "env": [{"name": "CONTRAST_INGRESS_PROXY_CONFIG", "value": "nope"}]}]);
    let cases: Vec<(&str, Value, &str, bool)> = vec![
        // Namespaces.
        (
            "no labels",
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "a"}}),
            "namespaces.",
            true,
        ),
        (
            "another label",
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "a", "labels": {"team": "x"}}}),
            "namespaces.",
            true,
        ),
        (
            "injection disabled",
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "a", "labels": {"istio-injection": "disabled"}}}),
            "namespaces.",
            false,
        ),
        (
            "revision label",
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "a", "labels": {"istio.io/rev": "canary"}}}),
            "namespaces.",
            false,
        ),
        // Pod mutation.
        (
            "plain pod",
            pod(json!({"name": "p"}), json!({"containers": app()})),
            "pods.",
            true,
        ),
        (
            "hostNetwork false",
            pod(
                json!({"name": "p"}),
                json!({"hostNetwork": false, "containers": app()}),
            ),
            "pods.",
            true,
        ),
        (
            "hostNetwork",
            pod(
                json!({"name": "p"}),
                json!({"hostNetwork": true, "containers": app()}),
            ),
            "pods.",
            false,
        ),
        (
            "label FALSE",
            pod(
                json!({"name": "p", "labels": {"sidecar.istio.io/inject": "FALSE"}}),
                json!({"containers": app()}),
            ),
            "pods.",
            false,
        ),
        (
            "annotation False",
            pod(
                json!({"name": "p", "annotations": {"sidecar.istio.io/inject": "False"}}),
                json!({"containers": app()}),
            ),
            "pods.",
            false,
        ),
        (
            "label true wins over annotation false",
            pod(
                json!({"name": "p", "labels": {"sidecar.istio.io/inject": "true"}, "annotations": {"sidecar.istio.io/inject": "false"}}),
                json!({"containers": app()}),
            ),
            "pods.",
            true,
        ),
        (
            "label false wins over annotation true",
            pod(
                json!({"name": "p", "labels": {"sidecar.istio.io/inject": "false"}, "annotations": {"sidecar.istio.io/inject": "true"}}),
                json!({"containers": app()}),
            ),
            "pods.",
            false,
        ),
        (
            "unrecognised value warns",
            pod(
                json!({"name": "p", "annotations": {"sidecar.istio.io/inject": "no"}}),
                json!({"containers": app()}),
            ),
            "pods.",
            true,
        ),
        // Validation.
        (
            "pod without settings",
            pod(
                json!({"name": "p", "annotations": {"team": "x"}}),
                json!({"containers": app()}),
            ),
            "validate.",
            false,
        ),
        (
            "permissivePorts",
            pod(
                json!({"name": "p", "annotations": {"servicemesh.bigbang.dev/permissivePorts": "x"}}),
                json!({"containers": app()}),
            ),
            "validate.",
            true,
        ),
        (
            "misspelt mesh key",
            pod(
                json!({"name": "p", "annotations": {"servicemesh.bigbang.dev/permissiveports": "80"}}),
                json!({"containers": app()}),
            ),
            "validate.",
            true,
        ),
        (
            "Contrast annotation",
            pod(
                json!({"name": "p", "annotations": {"contrast.edgeless.systems/servicemesh-egress": "x"}}),
                json!({"containers": app()}),
            ),
            "validate.",
            true,
        ),
        (
            "Contrast env var",
            pod(
                json!({"name": "p"}),
                json!({"containers": contrast_env.clone()}),
            ),
            "validate.",
            true,
        ),
        (
            "Contrast env var of an init container",
            pod(
                json!({"name": "p"}),
                json!({"containers": app(), "initContainers": contrast_env.clone()}),
            ),
            "validate.",
            true,
        ),
        (
            "other env vars",
            pod(
                json!({"name": "p"}),
                json!({"containers": [{"name": "a", "image": "i", "env": [{"name": "X", "value": "1"}, {"name": "Y", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]}]}),
            ),
            "validate.",
            false,
        ),
        (
            "Deployment template annotation",
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"}, "spec": {"template": {"metadata": {"annotations": {"servicemesh.bigbang.dev/permissivePorts": "0"}}, "spec": {"containers": app()}}}}),
            "validate.",
            true,
        ),
        (
            "Deployment without settings",
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d", "annotations": {"team": "x"}}, "spec": {"template": {"spec": {"containers": app()}}}}),
            "validate.",
            false,
        ),
        (
            "StatefulSet Contrast env var",
            json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "s"}, "spec": {"template": {"spec": {"containers": contrast_env.clone()}}}}),
            "validate.",
            true,
        ),
        (
            "CronJob template annotation",
            json!({"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "c"}, "spec": {"schedule": "* * * * *", "jobTemplate": {"spec": {"template": {"metadata": {"annotations": {"servicemesh.bigbang.dev/nope": "1"}}, "spec": {"containers": app()}}}}}}),
            "validate.",
            true,
        ),
        (
            "CronJob without settings",
            json!({"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "c"}, "spec": {"schedule": "* * * * *", "jobTemplate": {"spec": {"template": {"spec": {"containers": app()}}}}}}),
            "validate.",
            false,
        ),
        (
            "HelmRelease with a mesh annotation",
            json!({"apiVersion": "helm.toolkit.fluxcd.io/v2", "kind": "HelmRelease", "metadata": {"name": "h", "annotations": {"servicemesh.bigbang.dev/mtlsMode": "strict"}}, "spec": {}}),
            "validate.",
            true,
        ),
        (
            "AuthorizationPolicy without a mesh annotation: Istio objects are always sent",
            json!({"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy", "metadata": {"name": "a"}, "spec": {"rules": [{}]}}),
            "validate.",
            true,
        ),
        (
            "PeerAuthentication v1beta1",
            json!({"apiVersion": "security.istio.io/v1beta1", "kind": "PeerAuthentication", "metadata": {"name": "p"}, "spec": {"mtls": {"mode": "STRICT"}}}),
            "validate.",
            true,
        ),
        (
            "VirtualService v1alpha3",
            json!({"apiVersion": "networking.istio.io/v1alpha3", "kind": "VirtualService", "metadata": {"name": "v"}, "spec": {"hosts": ["a"]}}),
            "validate.",
            true,
        ),
        (
            "Gateway",
            json!({"apiVersion": "networking.istio.io/v1", "kind": "Gateway", "metadata": {"name": "g"}, "spec": {}}),
            "validate.",
            true,
        ),
        (
            "DestinationRule",
            json!({"apiVersion": "networking.istio.io/v1beta1", "kind": "DestinationRule", "metadata": {"name": "d"}, "spec": {"host": "a"}}),
            "validate.",
            true,
        ),
        (
            "HelmRelease without",
            json!({"apiVersion": "helm.toolkit.fluxcd.io/v2", "kind": "HelmRelease", "metadata": {"name": "h", "annotations": {"meta.helm.sh/release-name": "h"}}, "spec": {}}),
            "validate.",
            false,
        ),
    ];
    for (what, object, hook_prefix, want_call) in cases {
        let seen = check(&object, what, &hooks, &cfg);
        let (hook, called) = seen
            .iter()
            .find(|(name, _)| name.starts_with(hook_prefix))
            .unwrap_or_else(|| panic!("{what}: no {hook_prefix} webhook matched; saw {seen:?}"));
        assert_eq!(*called, want_call, "{what}: {hook} called?");
    }
    // The Kubernetes Gateway API's Gateway is not Istio's: no rule sends it to the webhook.
    let k8s_gateway = json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
        "metadata": {"name": "g"}, "spec": {"gatewayClassName": "istio"}});
    assert_eq!(check(&k8s_gateway, "Gateway API Gateway", &hooks, &cfg), []);
}
