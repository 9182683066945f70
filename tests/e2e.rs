//! End-to-end tests against the real control plane (DESIGN.md section 11): etcd and kube-apiserver
//! built by `hack/build-control-plane.sh`, driven with the official kubectl.
//!
//! Each test starts its own control plane and, where it needs one, its own `mesh-admission serve`
//! registered by URL (`webhook-config --url`), and reads what the apiserver stored back as JSON: an
//! admission decision is only proven when the real apiserver applied it.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::{Value, json};
use testkit::{ControlPlane, Webhook, mesh_admission_stdin, shared_crds};

#[test]
fn control_plane_serves_the_shared_crds_and_namespaces() {
    let cp = ControlPlane::start();

    let version: Value = serde_json::from_str(&cp.kubectl_ok(["version", "-o", "json"])).unwrap();
    assert_eq!(
        version["serverVersion"]["gitVersion"],
        "v1.36.3",
        "the apiserver reports the pinned version (logs: {})",
        cp.logs().display()
    );

    let crds = cp.apply_crds(&shared_crds());
    for expected in [
        "helmreleases.helm.toolkit.fluxcd.io",
        "virtualservices.networking.istio.io",
        "certificates.cert-manager.io",
        "servicemonitors.monitoring.coreos.com",
    ] {
        assert!(
            crds.iter().any(|crd| crd == expected),
            "{expected} not among the applied CRDs {crds:?} (logs: {})",
            cp.logs().display()
        );
    }
    let established = cp.kubectl_ok([
        "get",
        "crd",
        "-o",
        r#"jsonpath={range .items[*]}{.metadata.name}={.status.conditions[?(@.type=="Established")].status}{"\n"}{end}"#,
    ]);
    let mut established: Vec<&str> = established.lines().collect();
    established.sort_unstable();
    let mut want: Vec<String> = crds.iter().map(|crd| format!("{crd}=True")).collect();
    want.sort_unstable();
    assert_eq!(established, want, "logs: {}", cp.logs().display());
    // The API serves the new kinds: listing HelmReleases in every namespace succeeds (and finds none).
    let listed = cp.kubectl_ok([
        "get",
        "helmreleases.helm.toolkit.fluxcd.io",
        "-A",
        "-o",
        "name",
    ]);
    assert_eq!(listed, "", "logs: {}", cp.logs().display());

    let created = cp.kubectl_ok(["create", "namespace", "e2e-demo"]);
    assert_eq!(created.trim(), "namespace/e2e-demo created");
    let namespace: Value =
        serde_json::from_str(&cp.kubectl_ok(["get", "namespace", "e2e-demo", "-o", "json"]))
            .unwrap();
    assert_eq!(namespace["metadata"]["name"], "e2e-demo");
    assert_eq!(namespace["status"]["phase"], "Active");
    // Set by the apiserver itself: the object was stored and read back through the real API.
    assert_eq!(
        namespace["metadata"]["labels"]["kubernetes.io/metadata.name"], "e2e-demo",
        "{namespace:#}"
    );
    assert!(
        namespace["metadata"]["uid"]
            .as_str()
            .is_some_and(|uid| !uid.is_empty()),
        "{namespace:#}"
    );

    let again = cp.kubectl(["create", "namespace", "e2e-demo"]);
    assert!(
        !again.status.success() && String::from_utf8_lossy(&again.stderr).contains("AlreadyExists"),
        "creating it twice must fail with AlreadyExists\n{}",
        cp.report(&again)
    );
}

/// The volume every injected pod gets (DESIGN.md section 4).
fn csi_workload_socket() -> Value {
    json!({"name": "workload-socket", "csi": {"driver": "csi.spiffe.io", "readOnly": true}})
}

/// The value of `mesh_admission_requests_total{LABELS}` in a `/metrics` reply, 0 when absent.
fn requests(metrics: &str, labels: &str) -> u64 {
    let series = format!("mesh_admission_requests_total{{{labels}}}");
    testkit::metrics::value(metrics, &series) as u64
}

/// The stored pods of `namespace`, by name.
fn pods(cp: &ControlPlane, namespace: &str) -> BTreeMap<String, Value> {
    let list = cp.get_json(["pods", "-n", namespace]);
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|pod| {
            (
                pod["metadata"]["name"].as_str().unwrap().to_owned(),
                pod.clone(),
            )
        })
        .collect()
}

/// A namespace's labels as the API serves them, without the one the apiserver sets on every namespace.
fn namespace_labels(cp: &ControlPlane, name: &str) -> Value {
    let mut namespace = cp.get_json(["namespace", name]);
    let labels = namespace["metadata"]["labels"].as_object_mut().unwrap();
    assert_eq!(
        labels.remove("kubernetes.io/metadata.name"),
        Some(json!(name))
    );
    Value::Object(labels.clone())
}

/// `mesh-admission review --output review` on `yaml`: one line per object with the /mutate and
/// /validate replies the server gives it.
fn offline_reviews(yaml: &str) -> Vec<Value> {
    let output = mesh_admission_stdin(&["review", "--output", "review", "-f", "-"], yaml);
    assert!(
        matches!(output.status.code(), Some(0 | 1)),
        "review failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

/// `mesh-admission review` on `yaml`: the objects as it would have them stored.
fn offline_objects(yaml: &str) -> Vec<Value> {
    let output = mesh_admission_stdin(&["review", "-f", "-"], yaml);
    assert_eq!(
        output.status.code(),
        Some(0),
        "review refused: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout).unwrap();
    yaml_serde::Deserializer::from_str(&text)
        .map(|document| Value::deserialize(document).unwrap())
        .collect()
}

#[test]
fn namespaces_get_the_injection_label_unless_they_chose_or_are_excluded() {
    let cp = ControlPlane::start();
    let webhook = Webhook::start(&cp);
    webhook.register(&cp, "Fail");

    cp.kubectl_ok(["create", "namespace", "demo"]);
    assert_eq!(
        namespace_labels(&cp, "demo"),
        json!({"istio-injection": "enabled"})
    );

    cp.kubectl_stdin_ok(
        ["create", "-f", "-"],
        r#"
apiVersion: v1
kind: Namespace
metadata: {name: legacy, labels: {istio-injection: disabled}}
---
apiVersion: v1
kind: Namespace
metadata: {name: canary, labels: {istio.io/rev: x}}
"#,
    );
    assert_eq!(
        namespace_labels(&cp, "legacy"),
        json!({"istio-injection": "disabled"}),
        "an explicit choice wins"
    );
    assert_eq!(
        namespace_labels(&cp, "canary"),
        json!({"istio.io/rev": "x"}),
        "revision-based injection is left alone"
    );

    // Excluded by the configuration (istio-system) and the webhook's own namespace (mesh-system): the
    // apiserver does not even send them.
    for excluded in ["istio-system", "mesh-system"] {
        cp.kubectl_ok(["create", "namespace", excluded]);
        assert_eq!(namespace_labels(&cp, excluded), json!({}), "{excluded}");
    }

    // UPDATE: a removed label comes back; a label changed to another value is kept.
    cp.kubectl_ok(["label", "namespace", "demo", "istio-injection-"]);
    assert_eq!(
        namespace_labels(&cp, "demo"),
        json!({"istio-injection": "enabled"})
    );
    cp.kubectl_ok([
        "label",
        "namespace",
        "demo",
        "istio-injection=disabled",
        "--overwrite",
    ]);
    assert_eq!(
        namespace_labels(&cp, "demo"),
        json!({"istio-injection": "disabled"})
    );

    // What the apiserver sent, by the server's own count: the excluded namespaces never (selector),
    // and no namespace that had already chosen (legacy, canary, demo relabelled `disabled`): the
    // matchConditions skip every call whose answer would have been "unchanged". (The patched
    // CREATEs also count the registration probes.)
    let metrics = webhook.metrics();
    for (series, want) in [
        (
            r#"endpoint="mutate",kind="Namespace",operation="CREATE",result="unchanged""#,
            0,
        ),
        (
            r#"endpoint="mutate",kind="Namespace",operation="UPDATE",result="patched""#,
            1,
        ),
        (
            r#"endpoint="mutate",kind="Namespace",operation="UPDATE",result="unchanged""#,
            0,
        ),
    ] {
        assert_eq!(requests(&metrics, series), want, "{series}\n{metrics}");
    }
    assert!(!metrics.contains(r#"result="error""#), "{metrics}");
}

const PODS: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: istio-socket, namespace: demo}
spec:
  containers: [{name: app, image: example/app:1}]
  volumes:
    - {name: data, emptyDir: {}}
    - {name: workload-socket, emptyDir: {}}
    - {name: cache, emptyDir: {}}
---
apiVersion: v1
kind: Pod
metadata: {name: host-network, namespace: demo, labels: {app: node-agent}}
spec:
  hostNetwork: true
  containers: [{name: agent, image: example/agent:1}]
---
apiVersion: v1
kind: Pod
metadata: {name: opted-out, namespace: demo, labels: {sidecar.istio.io/inject: "false"}}
spec:
  containers: [{name: app, image: example/app:1}]
---
apiVersion: v1
kind: Pod
metadata:
  name: ingress-gateway
  namespace: demo
  labels: {istio: ingressgateway}
  annotations: {inject.istio.io/templates: gateway}
spec:
  containers: [{name: istio-proxy, image: auto}]
---
apiVersion: v1
kind: Pod
metadata: {name: no-spire, namespace: demo, labels: {spire-managed-identity: "false"}}
spec:
  containers: [{name: app, image: example/app:1}]
---
apiVersion: v1
kind: Pod
metadata: {name: opted-in, namespace: canary, labels: {sidecar.istio.io/inject: "true"}}
spec:
  containers: [{name: app, image: example/app:1}]
---
apiVersion: v1
kind: Pod
metadata: {name: not-opted-in, namespace: canary}
spec:
  containers: [{name: app, image: example/app:1}]
"#;

#[test]
fn pods_are_stored_with_their_spire_identity_as_review_predicts() {
    let cp = ControlPlane::start();
    let webhook = Webhook::start(&cp);
    webhook.register(&cp, "Fail");
    cp.kubectl_ok(["create", "namespace", "demo"]);
    cp.kubectl_stdin_ok(
        ["create", "-f", "-"],
        "{apiVersion: v1, kind: Namespace, metadata: {name: canary, labels: {istio.io/rev: x}}}",
    );

    // The way a user starts a pod.
    cp.kubectl_ok(["run", "plain", "-n", "demo", "--image=example/app:1"]);
    let plain = &pods(&cp, "demo")["plain"];
    assert_eq!(
        plain["metadata"]["labels"],
        json!({"run": "plain", "sidecar.istio.io/inject": "true", "spire-managed-identity": "true"}),
        "{plain:#}"
    );
    assert_eq!(
        plain["metadata"]["annotations"],
        json!({"inject.istio.io/templates": "sidecar,spire"}),
        "{plain:#}"
    );
    assert_eq!(
        plain["spec"]["volumes"],
        json!([csi_workload_socket()]),
        "{plain:#}"
    );

    cp.kubectl_stdin_ok(["create", "-f", "-"], PODS);
    let mut stored = pods(&cp, "demo");
    stored.extend(pods(&cp, "canary"));

    // Istio's emptyDir workload-socket is replaced in place by the CSI source alone.
    let socket = &stored["istio-socket"];
    assert_eq!(
        socket["spec"]["volumes"],
        json!([
            {"name": "data", "emptyDir": {}},
            csi_workload_socket(),
            {"name": "cache", "emptyDir": {}},
        ]),
        "{socket:#}"
    );
    assert_eq!(
        socket["metadata"]["annotations"]["inject.istio.io/templates"],
        "sidecar,spire"
    );

    // Untouched: hostNetwork (sent, answered without a patch) and inject=false (not even sent).
    for (name, labels) in [
        ("host-network", json!({"app": "node-agent"})),
        ("opted-out", json!({"sidecar.istio.io/inject": "false"})),
        ("not-opted-in", Value::Null),
    ] {
        let pod = &stored[name];
        assert_eq!(pod["metadata"]["labels"], labels, "{pod:#}");
        assert_eq!(pod["metadata"]["annotations"], Value::Null, "{pod:#}");
        assert_eq!(pod["spec"]["volumes"], Value::Null, "{pod:#}");
    }

    let gateway = &stored["ingress-gateway"];
    assert_eq!(
        gateway["metadata"]["annotations"],
        json!({"inject.istio.io/templates": "gateway,spire-gw"}),
        "{gateway:#}"
    );
    assert_eq!(
        gateway["spec"]["volumes"],
        json!([csi_workload_socket()]),
        "{gateway:#}"
    );

    // SPIRE opt-out: the inject label, but no template and no volume.
    let no_spire = &stored["no-spire"];
    assert_eq!(
        no_spire["metadata"]["labels"],
        json!({"sidecar.istio.io/inject": "true", "spire-managed-identity": "false"}),
        "{no_spire:#}"
    );
    assert_eq!(no_spire["metadata"]["annotations"], Value::Null);
    assert_eq!(no_spire["spec"]["volumes"], Value::Null);

    // Opt-in in a namespace without the injection label: the second pod webhook.
    let opted_in = &stored["opted-in"];
    assert_eq!(
        opted_in["metadata"]["labels"]["spire-managed-identity"], "true",
        "{opted_in:#}"
    );
    assert_eq!(opted_in["spec"]["volumes"], json!([csi_workload_socket()]));

    // What the apiserver sent, by the server's own count: each pod once to /mutate unless the
    // selectors (opted-out, not-opted-in) or the matchConditions (host-network) keep it away, no
    // reinvocation; none to /validate, since none carries a setting the rules read (the
    // registration probes are denied, not unchanged).
    let metrics = webhook.metrics();
    for (series, want) in [
        (
            r#"endpoint="mutate",kind="Pod",operation="CREATE",result="patched""#,
            5,
        ),
        (
            r#"endpoint="mutate",kind="Pod",operation="CREATE",result="unchanged""#,
            0,
        ),
        (
            r#"endpoint="validate",kind="Pod",operation="CREATE",result="unchanged""#,
            0,
        ),
    ] {
        assert_eq!(requests(&metrics, series), want, "{series}\n{metrics}");
    }

    // Every stored pod is what `review` says offline: labels, annotations and volumes. Except
    // not-opted-in: `review` cannot see namespace labels, so it injects a pod that the webhook
    // configuration's namespaceSelector never sends (its namespace has istio.io/rev, not the label).
    let predicted = offline_objects(PODS);
    assert_eq!(predicted.len(), 7);
    for want in predicted {
        let name = want["metadata"]["name"].as_str().unwrap();
        if name == "not-opted-in" {
            continue;
        }
        let got = &stored[name];
        for pointer in ["/metadata/labels", "/metadata/annotations", "/spec/volumes"] {
            assert_eq!(
                got.pointer(pointer),
                want.pointer(pointer),
                "{name}{pointer}: stored vs review"
            );
        }
    }
}

const HELMRELEASE: &str = r#"
apiVersion: helm.toolkit.fluxcd.io/v2
kind: HelmRelease
metadata:
  name: podinfo
  namespace: shop
  annotations:
    servicemesh.bigbang.dev/expose: Podinfo
    servicemesh.bigbang.dev/host: https://podinfo
    servicemesh.bigbang.dev/port: "80a"
    servicemesh.bigbang.dev/mtlsmode: permissive
    servicemesh.bigbang.dev/permissivePorts: "8080"
spec:
  interval: 10m
  chart:
    spec:
      chart: podinfo
      version: 6.x
      sourceRef: {kind: HelmRepository, name: podinfo}
"#;

const DEPLOYMENT: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata:
      labels: {app: web}
      annotations: {servicemesh.bigbang.dev/permissivePorts: "80,,80,99999"}
    spec:
      containers: [{name: web, image: example/web:1, ports: [{containerPort: 80}]}]
"#;

const CONTRAST_JOB: &str = r#"
apiVersion: batch/v1
kind: Job
metadata: {name: migrate, namespace: shop}
spec:
  template:
    metadata:
      annotations:
        contrast.edgeless.systems/servicemesh-egress: "db#10.0.0.1:5432#db:5432"
    spec:
      restartPolicy: Never
      containers:
        - name: migrate
          image: example/migrate:1
          env: [{name: EDG_INGRESS_PROXY_CONFIG, value: "web#70000#maybe"}]
"#;

/// A Contrast pod whose only problems sit in env vars (no annotation at all): the validation
/// webhook's matchCondition must still send it.
const CONTRAST_POD: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: contrast-web, namespace: shop}
spec:
  initContainers:
    - name: service-mesh
      image: ghcr.io/edgelesssys/contrast/service-mesh-proxy:latest
      restartPolicy: Always
      env:
        - {name: CONTRAST_INGRESS_PROXY_CONFIG, value: "web#8080#maybe"}
        - {name: CONTRAST_EGRESS_PROXY_CONFIG, value: "db#127.0.0.1:70000#db:5432"}
  containers: [{name: web, image: example/web:1}]
"#;

const WARNED_POD: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: warned
  namespace: shop
  labels: {sidecar.istio.io/inject: "yes"}
  annotations:
    servicemesh.bigbang.dev/permissivePorts: "8080"
    servicemesh.bigbang.dev/mtlsMode: STRICT
spec:
  containers: [{name: web, image: example/web:1, ports: [{containerPort: 80}]}]
"#;

/// Asserts that kubectl refused `yaml` with our whole denial message, and that nothing was stored.
fn assert_denied(cp: &ControlPlane, args: &[&str], yaml: &str, get: &[&str]) {
    let reviews = offline_reviews(yaml);
    assert_eq!(reviews.len(), 1);
    let reply = &reviews[0]["validate"]["response"];
    assert_eq!(reply["allowed"], false, "review admits {yaml}");
    let message = reply["status"]["message"].as_str().unwrap();
    let problems = message.split("; ").count();
    assert!(problems >= 2, "several problems expected: {message}");

    cp.assert_refused(args, yaml, message, get);
}

#[test]
fn denials_and_warnings_reach_the_kubectl_user_whole() {
    let cp = ControlPlane::start();
    cp.apply_crds(&shared_crds());
    let webhook = Webhook::start(&cp);
    webhook.register(&cp, "Fail");
    cp.kubectl_ok(["create", "namespace", "shop"]);

    for dry_run in [false, true] {
        let mut apply = vec!["apply", "-f", "-"];
        if dry_run {
            apply.push("--dry-run=server");
        }
        assert_denied(
            &cp,
            &apply,
            HELMRELEASE,
            &[
                "get",
                "helmrelease.helm.toolkit.fluxcd.io",
                "podinfo",
                "-n",
                "shop",
            ],
        );
        assert_denied(
            &cp,
            &apply,
            DEPLOYMENT,
            &["get", "deployment", "web", "-n", "shop"],
        );
        assert_denied(
            &cp,
            &apply,
            CONTRAST_JOB,
            &["get", "job", "migrate", "-n", "shop"],
        );
        assert_denied(
            &cp,
            &apply,
            CONTRAST_POD,
            &["get", "pod", "contrast-web", "-n", "shop"],
        );
    }

    // The README's "Verify" step: its fixture is refused object by object, each by our webhook.
    let fixture = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/denied.yaml"),
    )
    .unwrap();
    let output = cp.kubectl_stdin(["apply", "-f", "-"], &fixture);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{}", cp.report(&output));
    // kubectl names no object in a refused create ("error when creating \"STDIN\""): each
    // message is told apart by the fields it names.
    for first_problem in [
        "denied the request: metadata.annotations[servicemesh.bigbang.dev/expose]",
        "denied the request: spec.template.metadata.annotations[contrast.edgeless.systems/",
    ] {
        assert!(
            stderr.contains(first_problem),
            "{first_problem}\n{}",
            cp.report(&output)
        );
    }
    assert_eq!(
        stderr.matches("denied the request").count(),
        2,
        "{}",
        cp.report(&output)
    );

    // Admitted with every warning as a kubectl `Warning:` line (from /mutate and /validate).
    let reviews = offline_reviews(WARNED_POD);
    let mut warnings: Vec<&str> = ["mutate", "validate"]
        .iter()
        .flat_map(|endpoint| {
            let reply = &reviews[0][endpoint]["response"];
            assert_eq!(reply["allowed"], true, "{reply}");
            reply["warnings"].as_array().into_iter().flatten()
        })
        .map(|warning| warning.as_str().unwrap())
        .collect();
    assert!(
        warnings.len() >= 3,
        "inject \"yes\", an undeclared port and a HelmRelease annotation: {warnings:?}"
    );
    for dry_run in [true, false] {
        let mut apply = vec!["apply", "-f", "-"];
        if dry_run {
            apply.push("--dry-run=server");
        }
        let output = cp.kubectl_stdin(&apply, WARNED_POD);
        assert!(output.status.success(), "{}", cp.report(&output));
        let stderr = String::from_utf8_lossy(&output.stderr);
        let mut printed: Vec<&str> = stderr
            .lines()
            .filter_map(|line| line.strip_prefix("Warning: "))
            .collect();
        printed.sort_unstable();
        warnings.sort_unstable();
        assert_eq!(printed, warnings, "{}", cp.report(&output));
    }
    let warned = cp.get_json(["pod", "warned", "-n", "shop"]);
    assert_eq!(
        warned["metadata"]["annotations"]["inject.istio.io/templates"], "sidecar,spire",
        "{warned:#}"
    );
}

#[test]
fn failure_policy_decides_when_the_server_is_down_and_never_locks_out_kube_system() {
    let cp = ControlPlane::start();
    let mut webhook = Webhook::start(&cp);
    webhook.register(&cp, "Fail");
    cp.kubectl_ok(["create", "namespace", "demo"]);
    assert_eq!(
        namespace_labels(&cp, "demo"),
        json!({"istio-injection": "enabled"})
    );
    let url = webhook.url().to_owned();
    webhook.stop();

    // The system namespaces and the webhook's own are never sent: writable with the server down.
    let writable = |round: &str| {
        for namespace in ["kube-system", "mesh-system"] {
            cp.kubectl_ok([
                "create",
                "configmap",
                &format!("settings-{round}"),
                "-n",
                namespace,
                "--from-literal=a=b",
            ]);
            cp.kubectl_ok([
                "run",
                &format!("recovery-{round}"),
                "-n",
                namespace,
                "--image=example/tool:1",
            ]);
        }
    };

    // Fail: refused with the apiserver's message naming the webhook and the failed call.
    let refused = cp.kubectl(["run", "web", "-n", "demo", "--image=example/web:1"]);
    assert_eq!(refused.status.code(), Some(1), "{}", cp.report(&refused));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    for part in [
        "Internal error occurred: failed calling webhook \"pods.mesh-admission.mesh-system.svc\"",
        &format!("{url}/mutate?timeout=5s"),
        "connection refused",
    ] {
        assert!(
            stderr.contains(part),
            "missing {part:?}\n{}",
            cp.report(&refused)
        );
    }
    let namespace = cp.kubectl(["create", "namespace", "other"]);
    assert!(
        String::from_utf8_lossy(&namespace.stderr)
            .contains("failed calling webhook \"namespaces.mesh-admission.mesh-system.svc\""),
        "{}",
        cp.report(&namespace)
    );
    // mesh-system is excluded from the namespace webhook too: it can be (re)created.
    cp.kubectl_ok(["create", "namespace", "mesh-system"]);
    writable("fail");

    // Ignore: admitted untouched, once the apiserver has the new configuration.
    webhook.register(&cp, "Ignore");
    let started = Instant::now();
    loop {
        let dry = cp.kubectl([
            "run",
            "web",
            "-n",
            "demo",
            "--image=example/web:1",
            "--dry-run=server",
        ]);
        if dry.status.success() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "Ignore not in effect after 20 s\n{}",
            cp.report(&dry)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    cp.kubectl_ok(["run", "web", "-n", "demo", "--image=example/web:1"]);
    let web = cp.get_json(["pod", "web", "-n", "demo"]);
    assert_eq!(web["metadata"]["labels"], json!({"run": "web"}), "{web:#}");
    assert_eq!(web["spec"]["volumes"], Value::Null, "{web:#}");
    writable("ignore");
}
