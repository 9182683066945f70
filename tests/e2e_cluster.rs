//! End-to-end tests of issue 14's cluster-level promises against the real control plane (DESIGN.md
//! section 11): the Helm chart's objects as the apiserver validates them, reinvocation after another
//! mutating webhook, rotation of the serving pair under pod traffic, and the apiserver's timeout with a
//! stalled connection on the side.
//!
//! Each test starts its own control plane and `mesh-admission serve`; pods are created through the real
//! apiserver, either with kubectl or, where many are needed, over one HTTP/2 connection as client-go
//! sends them ([`ApiClient`]).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::Deserialize;
use serde_json::{Value, json};
use testkit::load::PodCreations;
use testkit::pod_traffic::PodTraffic;
use testkit::{
    ApiClient, ControlPlane, Webhook, WebhookOptions, mesh_admission, mesh_admission_stdin,
    metrics, runtime, shared_crds, wait_until,
};
use tokio_util::sync::CancellationToken;

/// The namespace the chart is installed in and the webhook configurations exclude.
const RELEASE_NAMESPACE: &str = "mesh-system";

/// `mesh_admission_requests_total` of Pod CREATEs at `/mutate` with `result`.
fn pod_mutations(webhook: &Webhook, result: &str) -> f64 {
    metrics::value(
        &webhook.metrics(),
        &format!(
            r#"mesh_admission_requests_total{{endpoint="mutate",kind="Pod",operation="CREATE",result="{result}"}}"#
        ),
    )
}

/// How often a condition is checked.
const POLL: Duration = Duration::from_millis(50);

/// Every object of a YAML stream.
fn yaml_documents(text: &str) -> Vec<Value> {
    yaml_serde::Deserializer::from_str(text)
        .map(|document| Value::deserialize(document).unwrap())
        .filter(|object| !object.is_null())
        .collect()
}

/// `objects` as a stream for `kubectl apply -f -`, each document in JSON: yaml_serde speaks YAML 1.2
/// and kubectl YAML 1.1, which read some plain scalars (`0440`) differently.
fn manifest_stream(objects: &[Value]) -> String {
    objects
        .iter()
        .map(Value::to_string)
        .collect::<Vec<_>>()
        .join("\n---\n")
}

/// How `kubectl -o name` names `object`: `kind.group/name`, lower case, no group for the core API.
fn resource_name(object: &Value) -> String {
    let kind = object["kind"].as_str().unwrap().to_lowercase();
    let name = object["metadata"]["name"].as_str().unwrap();
    match object["apiVersion"].as_str().unwrap().split_once('/') {
        Some((group, _)) => format!("{kind}.{group}/{name}"),
        None => format!("{kind}/{name}"),
    }
}

fn helm() -> PathBuf {
    testkit::process::tool(".tools/bin/helm", testkit::process::TOOLS_HINT)
}

/// `helm template` of the chart into the release namespace with `set` values; `home` keeps helm's
/// cache and configuration out of the user's.
fn helm_template(home: &Path, set: &[String]) -> String {
    let mut command = Command::new(helm());
    command
        .args(["template", "mesh-admission"])
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("charts/mesh-admission"))
        .args(["--namespace", RELEASE_NAMESPACE]);
    for value in set {
        command.args(["--set", value]);
    }
    for (variable, folder) in [
        ("HELM_CACHE_HOME", "cache"),
        ("HELM_CONFIG_HOME", "config"),
        ("HELM_DATA_HOME", "data"),
    ] {
        command.env(variable, home.join(folder));
    }
    let output = command.output().unwrap();
    assert!(
        output.status.success(),
        "helm template {set:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

#[test]
fn every_object_the_chart_renders_passes_the_apiservers_dry_run_in_both_certificate_modes() {
    let cp = ControlPlane::start();
    cp.apply_crds(&shared_crds());
    cp.kubectl_ok(["create", "namespace", RELEASE_NAMESPACE]);

    // Secret mode as README tells a user to prepare it: certificates, the Secret, the caBundle.
    let work = cp.logs().parent().unwrap().join("chart");
    let certs = work.join("certs");
    let service = [
        "--service",
        "mesh-admission",
        "--namespace",
        RELEASE_NAMESPACE,
    ];
    testkit::certs::issue(&certs, &service).unwrap();
    let (cert, key) = (certs.join("tls.crt"), certs.join("tls.key"));
    cp.kubectl_ok([
        "create",
        "secret",
        "tls",
        "mesh-admission-tls",
        "-n",
        RELEASE_NAMESPACE,
        "--cert",
        cert.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
    ]);
    let ca_bundle = base64::engine::general_purpose::STANDARD
        .encode(std::fs::read(certs.join("ca.crt")).unwrap());

    let cert_manager_kinds = ["Certificate", "Issuer"];
    let modes: [(&str, Vec<String>); 2] = [
        ("certManager", vec![]),
        (
            "secret",
            vec![
                "certificates.mode=secret".to_owned(),
                "certificates.secret.name=mesh-admission-tls".to_owned(),
                format!("certificates.secret.caBundle={ca_bundle}"),
            ],
        ),
    ];
    for (mode, mut set) in modes {
        set.push("serviceMonitor.enabled=true".to_owned());
        let text = helm_template(&work, &set);
        let rendered = yaml_documents(&text);
        let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
        for object in &rendered {
            *kinds.entry(object["kind"].as_str().unwrap()).or_default() += 1;
        }
        // An empty or partial render must not pass for an accepted one.
        for kind in [
            "Deployment",
            "Service",
            "ServiceMonitor",
            "MutatingWebhookConfiguration",
            "ValidatingWebhookConfiguration",
            // The controller's (DESIGN.md section 8): RBAC for it alone.
            "ClusterRole",
            "ClusterRoleBinding",
            "Role",
            "RoleBinding",
        ] {
            assert!(kinds.contains_key(kind), "{mode}: no {kind} in {kinds:?}");
        }
        // The webhook and the controller, each with its own ServiceAccount.
        assert_eq!(kinds.get("Deployment"), Some(&2), "{mode}: {kinds:?}");
        assert_eq!(kinds.get("ServiceAccount"), Some(&2), "{mode}: {kinds:?}");
        for kind in cert_manager_kinds {
            assert_eq!(
                kinds.contains_key(kind),
                mode == "certManager",
                "{mode}: {kind} in {kinds:?}"
            );
        }
        let bundles: Vec<&Value> = rendered
            .iter()
            .filter(|object| {
                object["kind"]
                    .as_str()
                    .unwrap()
                    .ends_with("WebhookConfiguration")
            })
            .flat_map(|object| object["webhooks"].as_array().unwrap())
            .map(|hook| &hook["clientConfig"]["caBundle"])
            .collect();
        let want_bundle = if mode == "secret" {
            json!(ca_bundle)
        } else {
            Value::Null // cert-manager's cainjector fills it in
        };
        assert!(
            !bundles.is_empty() && bundles.iter().all(|bundle| **bundle == want_bundle),
            "{mode}: caBundles {bundles:?}"
        );

        // As `helm install` sends them: namespaced objects into the release namespace.
        let output = cp.kubectl_stdin(
            [
                "apply",
                "--dry-run=server",
                "-n",
                RELEASE_NAMESPACE,
                "-o",
                "name",
                "-f",
                "-",
            ],
            &text,
        );
        assert!(
            output.status.success(),
            "{mode}: the apiserver refused chart objects (kubectl names each with the apiserver's \
             message)\n{}",
            cp.report(&output)
        );
        let mut accepted: Vec<String> = String::from_utf8(output.stdout)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect();
        let mut want: Vec<String> = rendered.iter().map(resource_name).collect();
        accepted.sort_unstable();
        want.sort_unstable();
        assert_eq!(accepted, want, "{mode}: accepted vs rendered");
        eprintln!(
            "e2e: chart ({mode}): {} objects accepted by --dry-run=server: {kinds:?}",
            accepted.len()
        );
    }

    // The dry run has teeth: a rendered Certificate with one value its CRD's schema forbids is
    // refused, naming the object and the field.
    let mut certificate = yaml_documents(&helm_template(&work, &[]))
        .into_iter()
        .find(|object| object["kind"] == "Certificate" && object["spec"]["privateKey"].is_object())
        .expect("a Certificate with a privateKey");
    certificate["spec"]["privateKey"]["algorithm"] = json!("DSA");
    let refused = cp.kubectl_stdin(
        [
            "apply",
            "--dry-run=server",
            "-n",
            RELEASE_NAMESPACE,
            "-f",
            "-",
        ],
        &certificate.to_string(),
    );
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success()
            && stderr.contains(&format!(
                "The Certificate {} is invalid: spec.privateKey.algorithm: Unsupported value: \"DSA\"",
                certificate["metadata"]["name"]
            )),
        "{}",
        cp.report(&refused)
    );
}

/// The label and annotation the test's own webhook adds to every pod it is sent.
const RELABEL_LABEL: &str = "e2e.example/relabelled";
const RELABEL_ANNOTATION: &str = "e2e.example/relabelled-by";

/// One call the relabel webhook received.
#[derive(Clone, Debug)]
struct Call {
    /// The request target, query included.
    target: String,
    dry_run: bool,
    object: Value,
}

/// A second mutating webhook of the test's own, on a TLS port of 127.0.0.1 with a certificate from
/// `mesh-admission certs`: it adds [`RELABEL_LABEL`] and [`RELABEL_ANNOTATION`] to every pod it is
/// sent that lacks them, and records each call. Served by tasks of the test's runtime; stopped on
/// drop.
struct RelabelWebhook {
    url: String,
    ca_file: PathBuf,
    calls: Arc<Mutex<Vec<Call>>>,
    stop: CancellationToken,
}

/// The relabel webhook's connections: more would mean the apiserver is reconnecting in a loop.
const RELABEL_MAX_CONNECTIONS: usize = 100;

impl RelabelWebhook {
    fn start(runtime: &tokio::runtime::Runtime, dir: &Path) -> RelabelWebhook {
        testkit::generate_certs(dir);
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_file_iter(dir.join("tls.crt"))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
        let key = PrivateKeyDer::from_pem_file(dir.join("tls.key")).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));

        let _entered = runtime.enter();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let url = format!("https://{}", listener.local_addr().unwrap());
        let listener = tokio::net::TcpListener::from_std(listener).unwrap();
        let calls = Arc::new(Mutex::new(Vec::new()));
        let stop = CancellationToken::new();
        let (task_calls, task_stop) = (calls.clone(), stop.clone());
        runtime.spawn(async move {
            for _ in 0..RELABEL_MAX_CONNECTIONS {
                let accepted = tokio::select! {
                    () = task_stop.cancelled() => return,
                    accepted = listener.accept() => accepted,
                };
                let Ok((tcp, _)) = accepted else { continue };
                let (acceptor, calls, stop) =
                    (acceptor.clone(), task_calls.clone(), task_stop.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service =
                        hyper::service::service_fn(move |request| relabel(request, calls.clone()));
                    let builder = hyper_util::server::conn::auto::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    );
                    let connection =
                        builder.serve_connection(hyper_util::rt::TokioIo::new(tls), service);
                    tokio::select! {
                        () = stop.cancelled() => {}
                        _ = connection => {}
                    }
                });
            }
        });
        RelabelWebhook {
            url,
            ca_file: dir.join("ca.crt"),
            calls,
            stop,
        }
    }

    /// A MutatingWebhookConfiguration named to sort after mesh-admission's (the apiserver calls
    /// configurations in name order), for pods labelled `e2e-relabel: "yes"`.
    fn config(&self) -> String {
        let ca_bundle =
            base64::engine::general_purpose::STANDARD.encode(std::fs::read(&self.ca_file).unwrap());
        json!({
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "MutatingWebhookConfiguration",
            "metadata": {"name": "zz-e2e-relabel"},
            "webhooks": [{
                "name": "relabel.e2e.example",
                "clientConfig": {"url": format!("{}/relabel", self.url), "caBundle": ca_bundle},
                "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"],
                           "resources": ["pods"], "scope": "Namespaced"}],
                "objectSelector": {"matchLabels": {"e2e-relabel": "yes"}},
                "admissionReviewVersions": ["v1"],
                "sideEffects": "None",
                "failurePolicy": "Fail",
                "reinvocationPolicy": "Never",
                "timeoutSeconds": 5,
            }],
        })
        .to_string()
    }

    /// The calls received so far for pods named `name`, dry runs left out.
    fn calls_for(&self, name: &str) -> Vec<Call> {
        let calls = self.calls.lock().unwrap();
        calls
            .iter()
            .filter(|call| !call.dry_run && call.object["metadata"]["name"] == name)
            .cloned()
            .collect()
    }
}

impl Drop for RelabelWebhook {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn relabel(
    request: Request<Incoming>,
    calls: Arc<Mutex<Vec<Call>>>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let target = request
        .uri()
        .path_and_query()
        .map_or(String::new(), ToString::to_string);
    let body = match request.into_body().collect().await {
        Ok(body) => body.to_bytes(),
        Err(_) => Bytes::new(),
    };
    let review: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let object = review["request"]["object"].clone();
    let mut patch = Vec::new();
    for (field, key, value) in [
        ("labels", RELABEL_LABEL, "true"),
        ("annotations", RELABEL_ANNOTATION, "e2e"),
    ] {
        let map = &object["metadata"][field];
        if map.is_null() {
            patch.push(json!({"op": "add", "path": format!("/metadata/{field}"), "value": {}}));
        }
        if map.get(key).is_none() {
            let path = format!("/metadata/{field}/{}", key.replace('/', "~1"));
            patch.push(json!({"op": "add", "path": path, "value": value}));
        }
    }
    let mut response = json!({"uid": review["request"]["uid"], "allowed": true});
    if !patch.is_empty() {
        response["patchType"] = json!("JSONPatch");
        response["patch"] = json!(
            base64::engine::general_purpose::STANDARD.encode(Value::Array(patch).to_string())
        );
    }
    let dry_run = review["request"]["dryRun"] == true;
    calls.lock().unwrap().push(Call {
        target,
        dry_run,
        object,
    });
    let review = json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "response": response,
    });
    Ok(Response::builder()
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(review.to_string())))
        .unwrap())
}

/// The `/mutate` reviews of pod `name` in the server's JSON log, dry runs left out, in order, by
/// result.
fn logged_pod_mutations(webhook: &Webhook, name: &str) -> Vec<String> {
    webhook
        .log()
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|line| {
            line["fields"]["message"] == "reviewed"
                && line["fields"]["dry_run"] == false
                && line["span"]["endpoint"] == "mutate"
                && line["span"]["kind"] == "Pod"
                && line["span"]["object_name"] == name
        })
        .map(|line| line["span"]["result"].as_str().unwrap().to_owned())
        .collect()
}

const RELABELLED_POD: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: relabelled
  namespace: demo
  labels: {app: web, e2e-relabel: "yes"}
  annotations: {inject.istio.io/templates: sidecar}
spec:
  containers: [{name: app, image: example/app:1}]
  volumes: [{name: workload-socket, emptyDir: {}}]
"#;

const CONTROL_POD: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: control
  namespace: demo
  labels: {app: web}
  annotations: {inject.istio.io/templates: sidecar}
spec:
  containers: [{name: app, image: example/app:1}]
  volumes: [{name: workload-socket, emptyDir: {}}]
"#;

#[test]
fn a_later_mutating_webhook_gets_ours_called_again_and_ours_adds_nothing_the_second_time() {
    let cp = ControlPlane::start();
    let webhook = Webhook::start_with(
        &cp,
        &WebhookOptions {
            args: vec!["--log-level".into(), "mesh_admission=debug".into()],
            ..WebhookOptions::default()
        },
    );
    // DESIGN.md sections 4 and 8: every mutating webhook asks to be called again after later changes.
    let config = webhook.config("Fail");
    let mutating = yaml_documents(&config)
        .into_iter()
        .find(|object| object["kind"] == "MutatingWebhookConfiguration")
        .unwrap();
    let hooks = mutating["webhooks"].as_array().unwrap();
    assert!(!hooks.is_empty());
    for hook in hooks {
        assert_eq!(hook["reinvocationPolicy"], "IfNeeded", "{hook:#}");
    }
    webhook.apply_config(&cp, &config);
    cp.kubectl_ok(["create", "namespace", "demo"]);

    let runtime = runtime();
    let relabel = RelabelWebhook::start(&runtime, &cp.logs().parent().unwrap().join("relabel"));
    cp.kubectl_stdin_ok(["apply", "-f", "-"], &relabel.config());
    wait_until(
        "the apiserver calling the relabel webhook",
        Duration::from_secs(20),
        POLL,
        || {
            let pod = cp.kubectl_stdin(
                ["create", "--dry-run=server", "-o", "json", "-f", "-"],
                RELABELLED_POD,
            );
            pod.status.success()
                && serde_json::from_slice::<Value>(&pod.stdout)
                    .is_ok_and(|pod| pod["metadata"]["labels"][RELABEL_LABEL] == "true")
        },
    );

    // The stored pod is one pass of ours plus the relabel webhook's change.
    let ours_once = mesh_admission_stdin(&["review", "-f", "-"], RELABELLED_POD);
    assert!(ours_once.status.success(), "{ours_once:?}");
    let mut want = yaml_documents(&String::from_utf8(ours_once.stdout).unwrap()).remove(0);
    want["metadata"]["labels"][RELABEL_LABEL] = json!("true");
    want["metadata"]["annotations"][RELABEL_ANNOTATION] = json!("e2e");

    let (patched, unchanged) = (
        pod_mutations(&webhook, "patched"),
        pod_mutations(&webhook, "unchanged"),
    );
    cp.kubectl_stdin_ok(["create", "-f", "-"], RELABELLED_POD);
    // Ours first (it patched), the relabel webhook's change, then ours again: nothing to add.
    assert_eq!(pod_mutations(&webhook, "patched") - patched, 1.0);
    assert_eq!(pod_mutations(&webhook, "unchanged") - unchanged, 1.0);
    assert_eq!(
        logged_pod_mutations(&webhook, "relabelled"),
        ["patched", "unchanged"],
        "log: {}",
        cp.logs().display()
    );

    let stored = cp.get_json(["pod", "relabelled", "-n", "demo"]);
    assert_eq!(
        stored["metadata"]["labels"],
        json!({
            "app": "web", "e2e-relabel": "yes", RELABEL_LABEL: "true",
            "sidecar.istio.io/inject": "true", "spire-managed-identity": "true",
        }),
        "{stored:#}"
    );
    assert_eq!(
        stored["metadata"]["annotations"],
        json!({"inject.istio.io/templates": "sidecar,spire", RELABEL_ANNOTATION: "e2e"}),
        "{stored:#}"
    );
    assert_eq!(
        stored["spec"]["volumes"],
        json!([{"name": "workload-socket", "csi": {"driver": "csi.spiffe.io", "readOnly": true}}]),
        "exactly one workload-socket volume, the CSI one: {stored:#}"
    );
    for pointer in [
        "/metadata/labels",
        "/metadata/annotations",
        "/spec/volumes",
        "/spec/containers/0/volumeMounts",
        "/spec/containers/0/env",
    ] {
        assert_eq!(
            stored.pointer(pointer),
            want.pointer(pointer),
            "{pointer}: stored vs one pass of review plus the relabel change"
        );
    }

    // The relabel webhook ran once, after ours, with the apiserver's timeout in the request target.
    let calls = relabel.calls_for("relabelled");
    assert_eq!(calls.len(), 1, "{calls:#?}");
    assert_eq!(calls[0].target, "/relabel?timeout=5s");
    assert_eq!(
        calls[0].object["metadata"]["labels"]["spire-managed-identity"], "true",
        "the relabel webhook saw the pod before ours changed it: {:#}",
        calls[0].object
    );

    // Without a later change there is no second call.
    let (patched, unchanged) = (
        pod_mutations(&webhook, "patched"),
        pod_mutations(&webhook, "unchanged"),
    );
    cp.kubectl_stdin_ok(["create", "-f", "-"], CONTROL_POD);
    assert_eq!(pod_mutations(&webhook, "patched") - patched, 1.0);
    assert_eq!(pod_mutations(&webhook, "unchanged") - unchanged, 0.0);
    assert_eq!(logged_pod_mutations(&webhook, "control"), ["patched"]);
    assert!(relabel.calls_for("control").is_empty());
    let control = cp.get_json(["pod", "control", "-n", "demo"]);
    assert_eq!(control["metadata"]["labels"].get(RELABEL_LABEL), None);
}

/// The pod the load creates as `name`.
/// The pod [`timed_creations`] creates as `name`.
fn load_pod(name: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"containers": [{"name": "app", "image": "example/app:1"}]},
    })
}

/// Pods created in `demo` in the background, [`LOAD_IN_FLIGHT`] at a time over one HTTP/2
/// connection, as client-go sends them.
fn pod_traffic(runtime: &tokio::runtime::Runtime, cp: &ControlPlane) -> PodTraffic {
    let pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"generateName": "load-"},
        "spec": {"containers": [{"name": "app", "image": "example/app:1"}]},
    });
    let pods = PodCreations::new(pod.to_string().into_bytes()).unwrap();
    PodTraffic::start(runtime, cp, "demo", pods, LOAD_IN_FLIGHT, LOAD_LIMITS)
}

const LOAD_IN_FLIGHT: usize = 4;
/// Bounds of the pod traffic: pods and time.
const LOAD_LIMITS: (u64, Duration) = (8_000, Duration::from_secs(120));
/// How long the pod traffic may take for the pods a step waits for.
const LOAD_STEP: Duration = Duration::from_secs(30);

/// The client ports of the established TCP connections to 127.0.0.1:`port` (from /proc/net/tcp, as
/// the server's side sees them).
fn client_ports(port: u16) -> std::collections::BTreeSet<u16> {
    let local = std::net::SocketAddrV4::new(std::net::Ipv4Addr::LOCALHOST, port);
    let peers = testkit::procfs::tcp_peers(local);
    peers.iter().map(std::net::SocketAddr::port).collect()
}

#[test]
fn rotating_the_serving_pair_twice_under_pod_traffic_fails_no_creation() {
    let cp = ControlPlane::start();
    let webhook = Webhook::start_with(
        &cp,
        &WebhookOptions {
            secret_volume: true,
            ..WebhookOptions::default()
        },
    );
    webhook.register(&cp, "Fail");
    let registered_ca = std::fs::read(webhook.ca_file()).unwrap();
    cp.kubectl_ok(["create", "namespace", "demo"]);
    let reloads = || metrics::value(&webhook.metrics(), "mesh_admission_tls_reloads_total");
    assert_eq!(reloads(), 0.0);

    let runtime = runtime();
    let mut served = webhook.served_certificate();
    let load = pod_traffic(&runtime, &cp);
    load.wait_for_more(20, LOAD_STEP);
    for round in 1..=2 {
        let pem = webhook.rotate();
        wait_until(
            &format!("reload {round} counted"),
            Duration::from_secs(10),
            POLL,
            || reloads() == f64::from(round),
        );
        // New handshakes get exactly the newly published certificate, verified by the same CA.
        let now = webhook.served_certificate();
        assert_ne!(
            now, served,
            "round {round}: the old certificate is still served"
        );
        assert_eq!(
            now,
            CertificateDer::from_pem_slice(pem.as_bytes())
                .unwrap()
                .to_vec(),
            "round {round}"
        );
        served = now;
        load.wait_for_more(20, LOAD_STEP);
    }

    // The apiserver keeps its one HTTP/2 connection across both reloads. The registered CA in other
    // bytes (a trailing newline) gives it a new transport, so under the same traffic it handshakes
    // anew and must accept the rotated certificate with the caBundle it had from the start.
    let port: u16 = webhook.url().rsplit(':').next().unwrap().parse().unwrap();
    let connected = client_ports(port);
    assert!(
        !connected.is_empty(),
        "the apiserver holds no connection to {port}"
    );
    let mut ca = registered_ca;
    ca.push(b'\n');
    let ca_bundle = base64::engine::general_purpose::STANDARD.encode(&ca);
    let mut config = yaml_documents(&webhook.config("Fail"));
    for object in &mut config {
        for hook in object["webhooks"].as_array_mut().unwrap() {
            hook["clientConfig"]["caBundle"] = json!(ca_bundle);
        }
    }
    webhook.apply_config(&cp, &manifest_stream(&config));
    wait_until(
        "the apiserver connecting anew",
        Duration::from_secs(20),
        POLL,
        || !client_ports(port).is_subset(&connected),
    );
    load.wait_for_more(20, LOAD_STEP);
    let stats = load.finish(&runtime).stats;
    let created = stats.outcome("created") as usize;

    assert_eq!(
        (stats.failed(), stats.unreached()),
        (0, 0),
        "failed creations: {:?}, {:?}; {:?} (logs: {})",
        stats.failures,
        stats.not_reached,
        stats.samples,
        cp.logs().display()
    );
    assert!(created >= 60, "only {created} pods created");
    let metrics = webhook.metrics();
    assert_eq!(
        metrics::value(&metrics, "mesh_admission_tls_reloads_total"),
        2.0
    );
    assert_eq!(
        metrics::value(&metrics, "mesh_admission_tls_reload_errors_total"),
        0.0
    );
    let logged = webhook
        .log()
        .lines()
        .filter(|line| line.contains(r#""message":"reloaded TLS certificate""#))
        .count();
    assert_eq!(logged, 2, "log: {}", cp.logs().display());
    // One call per pod: a call the apiserver had to retry after a dropped connection would show here.
    assert_eq!(pod_mutations(&webhook, "patched"), created as f64);
    let stored = cp.get_json(["pods", "-n", "demo"]);
    let stored = stored["items"].as_array().unwrap();
    assert_eq!(stored.len(), created);
    for pod in stored {
        assert_eq!(
            pod["spec"]["volumes"][0]["csi"]["driver"], "csi.spiffe.io",
            "{pod:#}"
        );
    }
    eprintln!(
        "e2e: {created} pods created while the serving pair was rotated twice and the apiserver \
         reconnected"
    );
}

/// The apiserver's deadline for each call, set in the registered configuration.
const TIMEOUT_SECONDS: u64 = 2;
/// The server's own deadline for a request's head and body (`--request-timeout`): how long the
/// stalled connection holds a request open.
const STALL: Duration = Duration::from_secs(5);
/// Pods per latency sample.
const SAMPLE: usize = 20;

/// Creates up to `SAMPLE` pods one after another (stopping early after `limit`); returns each one's
/// latency, failing the test on any refusal.
fn timed_creations(
    runtime: &tokio::runtime::Runtime,
    api: &ApiClient,
    prefix: &str,
    limit: Duration,
) -> Vec<Duration> {
    let started = Instant::now();
    let mut latencies = Vec::new();
    for i in 0..SAMPLE {
        if started.elapsed() > limit {
            break;
        }
        let name = format!("{prefix}-{i}");
        let sent = Instant::now();
        let answer = runtime.block_on(api.post("/api/v1/namespaces/demo/pods", &load_pod(&name)));
        latencies.push(sent.elapsed());
        match answer {
            Ok((201, _)) => {}
            other => panic!("creating {name}: {other:?}"),
        }
    }
    latencies
}

fn median(latencies: &[Duration]) -> Duration {
    let mut sorted = latencies.to_vec();
    sorted.sort_unstable();
    sorted[sorted.len() / 2]
}

#[test]
fn the_apiservers_timeout_reaches_the_server_and_a_stalled_connection_does_not_slow_pods() {
    let cp = ControlPlane::start();
    let mut webhook = Webhook::start_with(
        &cp,
        &WebhookOptions {
            args: vec!["--request-timeout".into(), format!("{}s", STALL.as_secs())],
            ..WebhookOptions::default()
        },
    );
    let mut config = yaml_documents(&webhook.config("Fail"));
    for object in &mut config {
        for hook in object["webhooks"].as_array_mut().unwrap() {
            assert_eq!(hook["timeoutSeconds"], 5, "webhook-config's default");
            hook["timeoutSeconds"] = json!(TIMEOUT_SECONDS);
        }
    }
    webhook.apply_config(&cp, &manifest_stream(&config));
    for kind in [
        "mutatingwebhookconfiguration",
        "validatingwebhookconfiguration",
    ] {
        let stored = cp.get_json([kind, "mesh-admission"]);
        for hook in stored["webhooks"].as_array().unwrap() {
            assert_eq!(hook["timeoutSeconds"], TIMEOUT_SECONDS, "{hook:#}");
        }
    }
    cp.kubectl_ok(["create", "namespace", "demo"]);

    let runtime = runtime();
    let api = runtime.block_on(ApiClient::connect(&cp));
    timed_creations(&runtime, &api, "warm-up", Duration::from_secs(10));
    let without = timed_creations(&runtime, &api, "free", Duration::from_secs(30));

    // Half a request: a complete head announcing a body, and the body's first bytes only. Without
    // `?timeout=` (a client other than the apiserver) it stalls for the server's own deadline.
    let mut stalled = webhook.connect_tls();
    stalled
        .write_all(
            b"POST /mutate HTTP/1.1\r\nHost: 127.0.0.1\r\n\
              Content-Type: application/json\r\nContent-Length: 4096\r\n\r\n\
              {\"apiVersion\":\"admission.k8s.io/v1\",",
        )
        .unwrap();
    stalled.flush().unwrap();
    let stalled_at = Instant::now();
    let staller = std::thread::spawn(move || {
        stalled.sock.set_read_timeout(Some(STALL * 3)).unwrap();
        let mut reply = Vec::new();
        let read = stalled.read_to_end(&mut reply);
        (
            stalled_at.elapsed(),
            String::from_utf8_lossy(&reply).into_owned(),
            read.err(),
        )
    });
    let with = timed_creations(&runtime, &api, "stalled", STALL * 3 / 5);
    let creations_done = stalled_at.elapsed();
    let (answered_after, reply, error) = staller.join().unwrap();

    // The stall held for the server's whole deadline, over every creation of the second sample.
    assert!(
        reply.starts_with("HTTP/1.1 408"),
        "the server's deadline answer: {reply:?} ({error:?})"
    );
    assert!(
        answered_after >= STALL - Duration::from_millis(500) && answered_after > creations_done,
        "stalled connection answered after {answered_after:?}, creations done after {creations_done:?}"
    );
    assert!(
        with.len() >= SAMPLE / 2,
        "{} creations during the stall",
        with.len()
    );
    let (median_without, median_with) = (median(&without), median(&with));
    let slowest = *with.iter().max().unwrap();
    eprintln!(
        "e2e: pod creation latency, median without a stalled connection {median_without:?}, with one \
         {median_with:?} (slowest {slowest:?}, {} pods)",
        with.len()
    );
    // Generous bounds: a server blocked by the stall would exceed the apiserver's 2 s and, with
    // failurePolicy Fail, refuse the pod.
    assert!(
        slowest < Duration::from_secs(TIMEOUT_SECONDS),
        "slowest creation {slowest:?}"
    );
    assert!(
        median_with < median_without + Duration::from_millis(250),
        "median {median_with:?} with the stalled connection, {median_without:?} without"
    );

    // Every review answered well within the apiserver's deadline (0.8192 s is the largest finite
    // bucket), and the stalled request was counted once, as an error.
    let metrics = webhook.metrics();
    let histogram = "mesh_admission_request_duration_seconds";
    let reviews = metrics::value(&metrics, &format!("{histogram}_count"));
    assert!(reviews >= (without.len() + with.len()) as f64, "{metrics}");
    assert_eq!(
        metrics::value(&metrics, &format!(r#"{histogram}_bucket{{le="0.8192"}}"#)),
        reviews,
        "{metrics}"
    );
    assert_eq!(
        metrics::value(
            &metrics,
            r#"mesh_admission_requests_total{endpoint="mutate",kind="other",operation="unknown",result="error"}"#
        ),
        1.0,
        "{metrics}"
    );

    // The same stall on a request as the apiserver sends it: cut off at its `?timeout=`, long
    // before the server's own deadline, since nobody waits for the answer after that.
    let mut stalled = webhook.connect_tls();
    stalled
        .write_all(
            format!(
                "POST /mutate?timeout={TIMEOUT_SECONDS}s HTTP/1.1\r\nHost: 127.0.0.1\r\n\
                 Content-Type: application/json\r\nContent-Length: 4096\r\n\r\n{{\"a\":"
            )
            .as_bytes(),
        )
        .unwrap();
    stalled.flush().unwrap();
    let stalled_at = Instant::now();
    stalled.sock.set_read_timeout(Some(STALL * 3)).unwrap();
    let mut reply = Vec::new();
    let read = stalled.read_to_end(&mut reply);
    let answered_after = stalled_at.elapsed();
    let reply = String::from_utf8_lossy(&reply);
    assert!(reply.starts_with("HTTP/1.1 408"), "{reply:?} ({read:?})");
    assert!(
        answered_after >= Duration::from_secs(TIMEOUT_SECONDS) - Duration::from_millis(200)
            && answered_after < STALL - Duration::from_millis(500),
        "answered after {answered_after:?}: the apiserver's {TIMEOUT_SECONDS} s, not the server's {STALL:?}"
    );

    // The URL the apiserver calls for our webhook carries the registered timeout, as its error says
    // once nothing answers there.
    let url = webhook.url().to_owned();
    webhook.stop();
    let refused = cp.kubectl(["run", "after-stop", "-n", "demo", "--image=example/app:1"]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success()
            && stderr.contains(&format!("{url}/mutate?timeout={TIMEOUT_SECONDS}s")),
        "{}",
        cp.report(&refused)
    );
}

/// Every object `mesh-admission render` prints for the golden cases of `tests/fixtures/render/` is
/// accepted by the real apiserver (`kubectl apply --dry-run=server`): NetworkPolicies by its built-in
/// validation, VirtualServices, PeerAuthentications and AuthorizationPolicies by the Istio CRDs'
/// schemas and CEL rules from `../shared/crds`.
#[test]
fn every_object_render_prints_passes_the_apiservers_dry_run() {
    let cp = ControlPlane::start();
    cp.apply_crds(&shared_crds());
    let cases = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/render");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&cases)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.is_dir())
        .collect();
    dirs.sort();
    let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
    for dir in &dirs {
        let mut command = Command::new(mesh_admission());
        command.arg("render").arg("-f").arg(dir.join("input.yaml"));
        let config = dir.join("config.yaml");
        if config.is_file() {
            command.arg("--config").arg(&config);
        }
        let output = command.output().unwrap();
        // A case with conflicts exits 1 and still prints what it could generate.
        assert!(
            matches!(output.status.code(), Some(0 | 1)),
            "{}: render failed: {}",
            dir.display(),
            String::from_utf8_lossy(&output.stderr)
        );
        let objects = yaml_documents(&String::from_utf8(output.stdout).unwrap());
        assert!(!objects.is_empty(), "{}: nothing rendered", dir.display());
        for namespace in objects
            .iter()
            .filter_map(|o| o["metadata"]["namespace"].as_str())
            .collect::<std::collections::BTreeSet<_>>()
        {
            let exists = cp.kubectl(["get", "namespace", namespace]).status.success();
            if !exists {
                cp.kubectl_ok(["create", "namespace", namespace]);
            }
        }
        let stored = cp.kubectl_stdin(
            ["apply", "--dry-run=server", "-o", "name", "-f", "-"],
            &manifest_stream(&objects),
        );
        assert!(
            stored.status.success(),
            "{}: the apiserver refused render's output: {}",
            dir.display(),
            String::from_utf8_lossy(&stored.stderr)
        );
        let mut accepted: Vec<String> = String::from_utf8_lossy(&stored.stdout)
            .lines()
            .map(str::to_owned)
            .collect();
        let mut want: Vec<String> = objects.iter().map(resource_name).collect();
        accepted.sort();
        want.sort();
        assert_eq!(accepted, want, "{}", dir.display());
        for object in &objects {
            *kinds
                .entry(object["kind"].as_str().unwrap().to_owned())
                .or_default() += 1;
        }
    }
    // Every generated kind went through the apiserver at least once.
    for kind in [
        "VirtualService",
        "NetworkPolicy",
        "PeerAuthentication",
        "AuthorizationPolicy",
    ] {
        assert!(kinds.contains_key(kind), "no {kind} rendered: {kinds:?}");
    }
    eprintln!("e2e: render's output accepted by the apiserver: {kinds:?}");
}
