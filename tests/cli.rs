//! The offline commands: `review` gives the server's answers, `webhook-config` prints valid,
//! safe configurations.

use std::process::Command;

use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use mesh_admission::manifests::parse_objects;
use mesh_admission::review::{admission_review, is_workload, mutation_target};
use serde::Deserialize;
use serde_json::Value;
use testkit::{Client, Protocol, Server, generate_certs, patch_of, temp_dir};

fn fixture(name: &str) -> String {
    format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
}

const FIXTURES: [&str; 5] = [
    "namespace.yaml",
    "pods.yaml",
    "workloads.yaml",
    "helmreleases.yaml",
    "denied.yaml",
];

/// Runs `review` with `args`, feeding `stdin`; returns (exit code, stdout, stderr).
fn review(args: &[&str], stdin: &str) -> (i32, String, String) {
    testkit::run_command("review", args, stdin)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn review_answers_exactly_as_the_server_does() {
    let dir = temp_dir("review-parity");
    generate_certs(&dir);
    let server = Server::start(&dir, &[]);
    let mut client = Client::connect(server.addr, &dir.join("ca.crt"), Protocol::Http2)
        .await
        .unwrap();
    let mut compared = 0;
    for name in FIXTURES {
        let (code, stdout, _) = review(
            &[
                "-f",
                &fixture(name),
                "--output",
                "review",
                "--namespace",
                "shop",
            ],
            "",
        );
        assert!(code == 0 || code == 1, "{name}: exit {code}");
        let objects = parse_objects(&std::fs::read_to_string(fixture(name)).unwrap()).unwrap();
        let lines: Vec<Value> = stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), objects.len(), "{name}: one line per object");
        for (index, (object, line)) in objects.iter().zip(&lines).enumerate() {
            let uid = format!("review-{}", index + 1);
            let namespace = object["metadata"]["namespace"].as_str().unwrap_or("shop");
            // /mutate: the same review sent to the real server gets the same reply.
            let target = mutation_target(object).unwrap();
            let from_server = client
                .review("mutate", &admission_review(&target, namespace, &uid))
                .await;
            assert_eq!(line["mutate"], from_server, "{name} #{index} mutate");
            // /validate: of the workload as written, or of the object as mutated.
            let validated = if is_workload(object) {
                object.clone()
            } else {
                let mut mutated = object.clone();
                json_patch::patch(&mut mutated, &patch_of(&from_server)).unwrap();
                mutated
            };
            let from_server = client
                .review("validate", &admission_review(&validated, namespace, &uid))
                .await;
            assert_eq!(line["validate"], from_server, "{name} #{index} validate");
            compared += 1;
        }
    }
    println!("compared {compared} objects with the server");
    assert!(compared >= 14);
}

#[test]
fn review_prints_mutated_objects_and_exits_by_verdict() {
    // Admitted: exit 0, one YAML document per object, in input order, List items split out.
    let (code, stdout, stderr) = review(&["-f", &fixture("pods.yaml")], "");
    assert_eq!(code, 0, "{stderr}");
    let documents: Vec<Value> = yaml_serde::Deserializer::from_str(&stdout)
        .map(|d| Value::deserialize(d).unwrap())
        .collect();
    let names: Vec<&str> = documents
        .iter()
        .map(|d| d["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "plain",
            "ingressgateway",
            "istio-injected",
            "opted-out",
            "no-spire"
        ]
    );
    assert_eq!(
        documents[1]["metadata"]["annotations"]["inject.istio.io/templates"],
        "gateway,spire-gw"
    );
    assert_eq!(
        documents[2]["spec"]["volumes"][0]["csi"]["driver"],
        "csi.spiffe.io"
    );
    assert!(documents[3]["metadata"].get("annotations").is_none());

    // Denied: exit 1, each denial on stderr with kind and namespace/name.
    let (code, _, stderr) = review(&["-f", &fixture("denied.yaml")], "");
    assert_eq!(code, 1);
    let denials: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("denied: "))
        .collect();
    assert_eq!(denials.len(), 2, "{stderr}");
    assert!(denials[0].starts_with("denied: HelmRelease shop/broken: "));
    assert!(denials[0].contains(r#"did you mean "PERMISSIVE"?"#));
    assert!(denials[1].starts_with("denied: Job shop/migrate: "));
    assert!(stderr.contains("Warning: Job shop/migrate: "), "{stderr}");

    // Standard input, --namespace for objects without one, patch output.
    let pod = "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: a}]}\n";
    let (code, stdout, _) = review(&["--output", "patch", "--namespace", "kube-system"], pod);
    assert_eq!(code, 0);
    let line: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(line["namespace"], "kube-system");
    assert_eq!(
        line["patch"],
        serde_json::json!([]),
        "excluded namespace: untouched"
    );

    // Unreadable input: exit 2 with line and column.
    let (code, stdout, stderr) = review(&[], "apiVersion: v1\nkind: Pod\nmetadata: [\n");
    assert_eq!(code, 2);
    assert!(stdout.is_empty());
    assert!(stderr.contains("<stdin>: line "), "{stderr}");
    let (code, _, stderr) = review(&["-f", "/nonexistent.yaml"], "");
    assert_eq!(code, 2);
    assert!(stderr.contains("/nonexistent.yaml"));
}

fn sample(name: &str) -> String {
    format!("{}/hack/samples/{name}.json", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn an_admission_review_in_the_input_is_reviewed_as_its_request() {
    // The README's bad sample is refused, not passed as an object nobody knows.
    let (code, stdout, stderr) = review(&["-f", &sample("helmrelease-bad"), "-o", "patch"], "");
    assert_eq!(code, 1, "{stderr}");
    let line: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(line["kind"], "HelmRelease");
    assert_eq!(line["allowed"], false);
    assert!(
        line.get("patch").is_none(),
        "a denied object has no patch: {line}"
    );
    assert!(
        line["message"]
            .as_str()
            .unwrap()
            .contains("servicemesh.bigbang.dev/port")
    );
    assert!(
        stderr.contains("denied: HelmRelease payments/podinfo: "),
        "{stderr}"
    );

    // The Pod sample gets its patch, in the request's namespace.
    let (code, stdout, stderr) = review(&["-f", &sample("pod"), "-o", "patch"], "");
    assert_eq!(code, 0, "{stderr}");
    let line: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(
        (line["kind"].as_str(), line["namespace"].as_str()),
        (Some("Pod"), Some("payments"))
    );
    assert_eq!(line["patch"].as_array().map(Vec::len), Some(5), "{line}");

    // The request's operation counts: Pods are mutated only on CREATE.
    let mut update: Value =
        serde_json::from_str(&std::fs::read_to_string(sample("pod")).unwrap()).unwrap();
    update["request"]["operation"] = "UPDATE".into();
    let (code, stdout, _) = review(&["-o", "patch"], &update.to_string());
    assert_eq!(code, 0);
    let line: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(line["patch"], serde_json::json!([]));

    // Nothing to review is said, never passed silently.
    for (review_json, needle) in [
        (
            r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","response":{"uid":"u","allowed":true}}"#,
            "without a request",
        ),
        (
            r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u","operation":"DELETE","object":null}}"#,
            "operation DELETE",
        ),
    ] {
        let (code, stdout, stderr) = review(&[], review_json);
        assert_eq!(code, 2, "{review_json}");
        assert!(stdout.is_empty());
        assert!(stderr.contains(needle), "{stderr}");
    }
}

#[test]
fn empty_input_is_an_error_unless_allowed() {
    for input in ["", "\n", "# kustomize built nothing\n", "---\n...\n"] {
        let (code, stdout, stderr) = review(&[], input);
        assert_eq!(code, 2, "{input:?}");
        assert!(stdout.is_empty());
        assert!(stderr.contains("no objects in <stdin>"), "{stderr}");
        let (code, stdout, stderr) = review(&["--allow-empty"], input);
        assert_eq!((code, stdout.as_str()), (0, ""), "{input:?}: {stderr}");
    }
}

#[test]
fn review_help_gives_the_exit_codes() {
    let out = Command::new(testkit::mesh_admission())
        .args(["review", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8(out.stdout).unwrap();
    for needle in [
        "Exit status:",
        "0  every object admitted",
        "1  some object denied",
        "2  unreadable input",
        "--allow-empty",
    ] {
        assert!(help.contains(needle), "{needle}: {help}");
    }
}

#[test]
fn a_replication_controller_template_is_shown_as_its_pods() {
    let rc = "apiVersion: v1\nkind: ReplicationController\nmetadata: {name: web, namespace: shop}\nspec:\n  template:\n    metadata: {labels: {app: web}}\n    spec: {containers: [{name: web}]}\n";
    let (code, stdout, stderr) = review(&[], rc);
    assert_eq!(code, 0, "{stderr}");
    let object: Value = yaml_serde::from_str(&stdout).unwrap();
    let template = &object["spec"]["template"];
    assert_eq!(
        template["metadata"]["labels"]["spire-managed-identity"],
        "true"
    );
    assert_eq!(
        template["metadata"]["annotations"]["inject.istio.io/templates"],
        "sidecar,spire"
    );
    assert_eq!(template["spec"]["volumes"][0]["name"], "workload-socket");
}

#[test]
fn a_yaml_error_names_its_position_once() {
    let (code, _, stderr) = review(
        &[],
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\nmetadata:\n  name: x\n   bad: 1\n",
    );
    assert_eq!(code, 2);
    let line = stderr.lines().next().unwrap();
    assert!(
        line.starts_with("mesh-admission: <stdin>: line 7, column "),
        "{line}"
    );
    assert_eq!(line.matches("line").count(), 1, "{line}");
    assert_eq!(line.matches(": ").count(), 3, "{line}");
}

#[test]
fn a_truncated_json_line_is_reported_where_it_ends() {
    let line = r#"{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web"}"#;
    let (code, stdout, stderr) = review(&[], &format!("{line}\n"));
    assert_eq!(code, 2, "{stderr}");
    assert!(stdout.is_empty(), "{stdout}");
    let expected = format!(
        "mesh-admission: <stdin>: line 1, column {}: unexpected end of input",
        line.len() + 1
    );
    assert!(stderr.starts_with(&expected), "{stderr}");
}

#[test]
fn a_pod_that_cannot_be_decoded_is_denied_once_naming_the_field() {
    let pod = "apiVersion: v1\nkind: Pod\nmetadata: {name: web, namespace: shop, labels: app=web}\nspec: {containers: [{name: web}]}\n";
    let deployment = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web, namespace: shop}\nspec:\n  template:\n    metadata: {labels: app=web}\n    spec: {containers: [{name: web}]}\n";
    for (input, kind, field) in [
        (pod, "Pod", "metadata.labels"),
        (deployment, "Deployment", "spec.template.metadata.labels"),
    ] {
        let (code, _, stderr) = review(&[], input);
        assert_eq!(code, 1, "{stderr}");
        assert_eq!(stderr.matches("cannot decode").count(), 1, "{stderr}");
        let expected = format!(
            "denied: {kind} shop/web: cannot decode {kind}: {field}: invalid type: string \"app=web\""
        );
        assert!(stderr.starts_with(&expected), "{stderr}");
    }
    // As the apiserver would: /mutate refused it, so /validate is never asked.
    let (_, stdout, _) = review(&["--output", "review"], pod);
    let line: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(line["mutate"]["response"]["status"]["code"], 400, "{line}");
    assert!(line["validate"].is_null(), "{line}");
}

#[test]
fn a_directory_is_read_as_its_manifest_files_in_name_order() {
    let dir = temp_dir("review-directory");
    std::fs::create_dir_all(dir.join("nested")).unwrap();
    let namespace =
        |name: &str| format!("apiVersion: v1\nkind: Namespace\nmetadata: {{name: {name}}}\n");
    std::fs::write(dir.join("b.yaml"), namespace("b")).unwrap();
    std::fs::write(dir.join("a.yml"), namespace("a")).unwrap();
    std::fs::write(
        dir.join("c.json"),
        r#"{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "c"}}"#,
    )
    .unwrap();
    // Not manifests, and not read: another extension, and a subdirectory.
    std::fs::write(dir.join("README.md"), "# not a manifest: [\n").unwrap();
    std::fs::write(dir.join("nested/d.yaml"), namespace("d")).unwrap();
    let path = dir.to_str().unwrap();

    let (code, stdout, stderr) = review(&["-f", path, "--output", "patch"], "");
    assert_eq!(code, 0, "{stderr}");
    let names: Vec<String> = stdout
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["name"].to_string())
        .collect();
    assert_eq!(names, [r#""a""#, r#""b""#, r#""c""#]);

    let (code, stdout, stderr) = testkit::run_command("render", &["-f", path], "");
    assert_eq!(code, 0, "{stderr}");
    for name in ["a", "b", "c"] {
        assert!(
            stdout.contains(&format!("namespace: {name}\n")),
            "{name}: {stdout}"
        );
    }
    assert!(!stdout.contains("namespace: d\n"), "{stdout}");

    // A directory without manifests has no objects, which is an error unless allowed.
    let empty = temp_dir("review-directory-empty");
    let (code, _, stderr) = review(&["-f", empty.to_str().unwrap()], "");
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("no objects in"), "{stderr}");
}

#[test]
fn webhook_config_is_schema_valid_and_never_sends_its_own_namespace() {
    let dir = temp_dir("webhook-config");
    generate_certs(&dir);
    let out = Command::new(testkit::mesh_admission())
        .args([
            "webhook-config",
            "--namespace",
            "platform",
            "--failure-policy",
            "Ignore",
            "--ca-bundle",
        ])
        .arg(dir.join("ca.crt"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let mut documents = yaml_serde::Deserializer::from_str(&text);
    let mutating = MutatingWebhookConfiguration::deserialize(documents.next().unwrap()).unwrap();
    let validating =
        ValidatingWebhookConfiguration::deserialize(documents.next().unwrap()).unwrap();
    assert!(documents.next().is_none());

    let ca = std::fs::read(dir.join("ca.crt")).unwrap();
    let mutating_hooks = mutating.webhooks.unwrap();
    assert_eq!(mutating_hooks.len(), 3);
    for hook in &mutating_hooks {
        assert_eq!(hook.client_config.ca_bundle.as_ref().unwrap().0, ca);
        let service = hook.client_config.service.as_ref().unwrap();
        assert_eq!(
            (service.namespace.as_str(), service.path.as_deref()),
            ("platform", Some("/mutate"))
        );
        assert_eq!(hook.failure_policy.as_deref(), Some("Ignore"));
        assert_eq!(hook.reinvocation_policy.as_deref(), Some("IfNeeded"));
        assert_eq!(hook.side_effects, "None");
        assert_eq!(hook.timeout_seconds, Some(5));
        assert_eq!(hook.admission_review_versions, ["v1"]);
        // The webhook's own namespace and kube-system are never sent to it.
        let selector = hook
            .namespace_selector
            .as_ref()
            .or(hook.object_selector.as_ref())
            .unwrap();
        let excluded = selector
            .match_expressions
            .as_ref()
            .unwrap()
            .iter()
            .find(|r| r.key == "kubernetes.io/metadata.name")
            .unwrap();
        assert_eq!(excluded.operator, "NotIn");
        let values = excluded.values.as_ref().unwrap();
        assert!(
            values.contains(&"platform".to_string()) && values.contains(&"kube-system".to_string()),
            "{values:?}"
        );
    }
    let validate = &validating.webhooks.unwrap()[0];
    assert_eq!(
        validate
            .client_config
            .service
            .as_ref()
            .unwrap()
            .path
            .as_deref(),
        Some("/validate")
    );
    let resources: Vec<String> = validate
        .rules
        .as_ref()
        .unwrap()
        .iter()
        .flat_map(|r| r.resources.clone().unwrap())
        .collect();
    for kind in [
        "helmreleases",
        "pods",
        "deployments",
        "statefulsets",
        "daemonsets",
        "replicasets",
        "jobs",
        "cronjobs",
    ] {
        assert!(resources.contains(&kind.to_string()), "{kind}");
    }

    let missing = Command::new(testkit::mesh_admission())
        .args(["webhook-config", "--ca-bundle", "/nonexistent/ca.crt"])
        .output()
        .unwrap();
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("/nonexistent/ca.crt"));
}

#[test]
fn webhook_config_by_url_calls_the_endpoints_and_refuses_a_bad_url() {
    let dir = temp_dir("webhook-config-url");
    generate_certs(&dir);
    let run = |url: &str| {
        Command::new(testkit::mesh_admission())
            .args(["webhook-config", "--failure-policy", "Ignore", "--url", url])
            .arg("--ca-bundle")
            .arg(dir.join("ca.crt"))
            .output()
            .unwrap()
    };
    let out = run("https://127.0.0.1:8443");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let mut documents = yaml_serde::Deserializer::from_str(&text);
    let mutating = MutatingWebhookConfiguration::deserialize(documents.next().unwrap()).unwrap();
    let validating =
        ValidatingWebhookConfiguration::deserialize(documents.next().unwrap()).unwrap();
    let ca = std::fs::read(dir.join("ca.crt")).unwrap();
    let mutating_hooks = mutating.webhooks.unwrap();
    assert_eq!(mutating_hooks.len(), 3);
    let hooks = mutating_hooks
        .iter()
        .map(|h| (&h.client_config, &h.failure_policy, "/mutate"))
        .chain(
            validating
                .webhooks
                .as_ref()
                .unwrap()
                .iter()
                .map(|h| (&h.client_config, &h.failure_policy, "/validate")),
        );
    for (client, failure_policy, path) in hooks {
        assert_eq!(
            client.url.as_deref(),
            Some(format!("https://127.0.0.1:8443{path}").as_str())
        );
        assert!(client.service.is_none(), "{client:?}");
        assert_eq!(client.ca_bundle.as_ref().unwrap().0, ca);
        assert_eq!(failure_policy.as_deref(), Some("Ignore"));
    }

    for (url, says) in [
        ("http://127.0.0.1:8443", "the scheme must be https"),
        ("https://127.0.0.1:8443/mutate", "a path is not allowed"),
        ("https://127.0.0.1:8443?x=1", "a query is not allowed"),
        (
            "https://127.0.0.1:99999",
            "the port must be a number 1-65535",
        ),
        ("https://:8443", "the host is missing"),
    ] {
        let out = run(url);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{url}: {stderr}");
        assert!(
            stderr.contains("--url") && stderr.contains(says),
            "{url}: {stderr}"
        );
        assert!(out.stdout.is_empty(), "{url}");
    }
}
