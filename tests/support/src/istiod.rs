//! istiod in the loop (DESIGN.md section 11, "Istio in the loop"): `pilot-discovery` as built by
//! `hack/build-istiod.sh`, run as a local process against a [`ControlPlane`] with the verified recipe,
//! its ConfigMaps as that script rendered them, and its injection and validation webhooks rendered
//! from Istio's own charts (`istiodRemote.injectionURL`, `base.validationURL`) for this process's URL
//! and CA. Killed by its PID on drop, also when a test panics.

use std::collections::BTreeMap;
use std::fs;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{Value, json};

use crate::http::status;
use crate::process::{ChildGuard, TOOLS_HINT, free_ports, spawn_logged, tool, wait_until};
use crate::{ControlPlane, admin_get, certs, metrics};

const BUILD_HINT: &str = "bash hack/build-istiod.sh";
/// istiod is ready 1-3 s after its start on an idle machine; the test machine is shared.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the apiserver may take to call a newly registered webhook configuration.
const REGISTER_TIMEOUT: Duration = Duration::from_secs(30);
/// The namespace istiod runs for (`POD_NAMESPACE`) and its charts are rendered into.
pub const ISTIO_NAMESPACE: &str = "istio-system";

/// `.tools/istiod/NAME`, failing the test with the command that provides it when it is missing.
pub fn istiod_tool(name: &str) -> PathBuf {
    tool(&format!(".tools/istiod/{name}"), BUILD_HINT)
}

/// The ConfigMaps `istio` and `istio-sidecar-injector` as `hack/build-istiod.sh` rendered them.
pub fn rendered_configmaps() -> Vec<Value> {
    let path = istiod_tool("configmaps.yaml");
    let text = fs::read_to_string(&path).unwrap();
    mesh_admission::manifests::parse_objects(&text)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The injection templates of the rendered `istio-sidecar-injector` ConfigMap, by name.
pub fn rendered_injection_templates() -> BTreeMap<String, String> {
    let injector = rendered_configmaps()
        .into_iter()
        .find(|object| object["metadata"]["name"] == "istio-sidecar-injector")
        .expect("configmaps.yaml holds istio-sidecar-injector");
    let config = injector["data"]["config"]
        .as_str()
        .expect("istio-sidecar-injector has data.config");
    let config: Value = yaml_serde::from_str(config).unwrap();
    serde_json::from_value(config["templates"].clone()).expect("templates is a map of strings")
}

/// The istiod Helm values charts/mesh-admission/values.yaml documents in its header (the block from
/// `#   meshConfig:` to the first bare `#`, uncommented), read independently of the build script.
pub fn chart_documented_istiod_values() -> Value {
    let path = crate::process::checkout().join("charts/mesh-admission/values.yaml");
    let text = fs::read_to_string(&path).unwrap();
    let block: Vec<&str> = text
        .lines()
        .skip_while(|line| *line != "#   meshConfig:")
        .take_while(|line| *line != "#")
        .map(|line| line.strip_prefix("#   ").unwrap_or(line))
        .collect();
    assert!(
        !block.is_empty(),
        "{} documents no istiod values",
        path.display()
    );
    yaml_serde::from_str(&block.join("\n")).unwrap()
}

/// A running istiod.
pub struct Istiod {
    child: Option<ChildGuard>,
    log: PathBuf,
    /// `--httpAddr`: `/ready`.
    http: SocketAddr,
    /// `--httpsAddr`: the webhooks (`/inject`, `/validate`).
    https: SocketAddr,
    /// `--monitoringAddr`: `/metrics`.
    monitoring: SocketAddr,
    certs: PathBuf,
}

impl Istiod {
    /// Creates `istio-system` with the rendered ConfigMaps, starts istiod with a serving pair of its
    /// own (from `mesh-admission certs`, SANs `127.0.0.1` and `istiod.istio-system.svc`), and returns
    /// once `/ready` answers 200. Its webhooks are not registered yet.
    pub fn start(cp: &ControlPlane) -> Istiod {
        Self::start_on(cp, IpAddr::from([127, 0, 0, 1]))
    }

    /// [`Istiod::start`] with its webhook port (`--httpsAddr`) on `webhooks` rather than 127.0.0.1:
    /// a non-loopback address, for istiod registered by Service (the apiserver refuses loopback
    /// endpoints). Its serving certificate holds `istiod.istio-system.svc`.
    pub fn start_on(cp: &ControlPlane, webhooks: IpAddr) -> Istiod {
        static RUNS: AtomicUsize = AtomicUsize::new(0);
        let n = RUNS.fetch_add(1, Ordering::Relaxed);
        let binary = istiod_tool("pilot-discovery");
        let dir = cp.logs().parent().unwrap().join(format!("istiod-{n}"));
        let (certs, workdir) = (dir.join("certs"), dir.join("cwd"));
        for d in [&certs, &workdir] {
            fs::create_dir_all(d).unwrap();
        }
        let service = ["--service", "istiod", "--namespace", ISTIO_NAMESPACE];
        certs::issue(&certs, &service).unwrap_or_else(|e| panic!("{e}"));

        if cp
            .kubectl(["get", "namespace", ISTIO_NAMESPACE])
            .status
            .success()
        {
            // A second istiod in the same control plane reuses the namespace and its ConfigMaps.
        } else {
            cp.kubectl_ok(["create", "namespace", ISTIO_NAMESPACE]);
        }
        let configmaps = istiod_tool("configmaps.yaml");
        cp.kubectl_ok([
            "apply".as_ref(),
            "-n".as_ref(),
            ISTIO_NAMESPACE.as_ref(),
            "-f".as_ref(),
            configmaps.as_os_str(),
        ]);

        for attempt in 0..2 {
            let log = cp.logs().join(format!("istiod-{n}-{attempt}.log"));
            let [http, grpc, secure_grpc, monitoring, ctrlz] = free_ports();
            let https = std::net::TcpListener::bind((webhooks, 0))
                .and_then(|l| l.local_addr())
                .unwrap_or_else(|e| panic!("no free port on {webhooks}: {e}"));
            let addr = |port: u16| format!("127.0.0.1:{port}");
            // The recipe of DESIGN.md section 11: from an empty working directory (no mesh or
            // injection files, so istiod reads the ConfigMaps), every listener on 127.0.0.1, and the
            // three TLS flags together (one alone is ignored).
            let mut command = Command::new(&binary);
            command
                .current_dir(&workdir)
                .env("POD_NAMESPACE", ISTIO_NAMESPACE)
                .env("REVISION", "default")
                .env("PILOT_CERT_PROVIDER", "istiod")
                .env("ISTIOD_CUSTOM_HOST", "127.0.0.1,localhost")
                .env("CLUSTER_ID", "Kubernetes")
                .env("PILOT_ENABLE_ANALYSIS", "false")
                .arg("discovery")
                .arg("--kubeconfig")
                .arg(cp.kubeconfig())
                .args(["--httpAddr", &addr(http), "--httpsAddr", &https.to_string()])
                .args(["--grpcAddr", &addr(grpc)])
                .args(["--secureGRPCAddr", &addr(secure_grpc)])
                .args(["--monitoringAddr", &addr(monitoring)])
                .args([
                    "--ctrlz_port",
                    &ctrlz.to_string(),
                    "--ctrlz_address",
                    "127.0.0.1",
                ])
                .arg("--tlsCertFile")
                .arg(certs.join("tls.crt"))
                .arg("--tlsKeyFile")
                .arg(certs.join("tls.key"))
                .arg("--caCertFile")
                .arg(certs.join("ca.crt"));
            let child = spawn_logged(&mut command, &log);
            let local = |port| SocketAddr::from(([127, 0, 0, 1], port));
            let mut istiod = Istiod {
                child: Some(child),
                log,
                http: local(http),
                https,
                monitoring: local(monitoring),
                certs: certs.clone(),
            };
            let started = Instant::now();
            match istiod.wait_ready(started) {
                Ok(()) => {
                    eprintln!(
                        "e2e: istiod ready in {:.1?} (webhooks https://{}, log {})",
                        started.elapsed(),
                        istiod.https,
                        istiod.log.display()
                    );
                    return istiod;
                }
                Err(log) if attempt == 0 && log.contains("address already in use") => {
                    eprintln!("e2e: istiod lost a port race, starting it again");
                }
                Err(log) => panic!(
                    "istiod exited before it was ready; its log is {}:\n{log}",
                    istiod.log.display()
                ),
            }
        }
        unreachable!("the second attempt returns or panics")
    }

    /// Waits for `/ready`; the log when the process exited first.
    fn wait_ready(&mut self, started: Instant) -> Result<(), String> {
        loop {
            if admin_get(self.http, "/ready").is_ok_and(|r| status(&r) == 200) {
                return Ok(());
            }
            let child = self.child.as_mut().unwrap();
            if child.0.try_wait().unwrap().is_some() {
                self.child = None;
                return Err(self.log());
            }
            assert!(
                started.elapsed() < START_TIMEOUT,
                "istiod was not ready within {START_TIMEOUT:?}; its log is {}",
                self.log.display()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// istiod's log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The CA of istiod's serving certificate, base64 as a webhook's `caBundle`.
    fn ca_bundle(&self) -> String {
        let ca = fs::read(self.certs.join("ca.crt")).unwrap();
        base64::engine::general_purpose::STANDARD.encode(ca)
    }

    /// The chart's `MutatingWebhookConfiguration` `istio-sidecar-injector` (four webhooks) for this
    /// istiod, with `reinvocation_policy` (`Never`, the chart's default, or `IfNeeded`).
    pub fn injector_config(&self, reinvocation_policy: &str) -> Vec<Value> {
        helm_template(
            "istio-discovery",
            "templates/mutatingwebhook.yaml",
            &[
                format!("istiodRemote.injectionURL=https://{}/inject", self.https),
                format!("istiodRemote.injectionCABundle={}", self.ca_bundle()),
                format!("sidecarInjectorWebhook.reinvocationPolicy={reinvocation_policy}"),
            ],
        )
    }

    /// The address of istiod's webhooks.
    pub fn webhook_addr(&self) -> SocketAddr {
        self.https
    }

    /// The PID of the process.
    pub fn pid(&self) -> u32 {
        self.child
            .as_ref()
            .map(ChildGuard::pid)
            .expect("istiod was stopped")
    }

    /// The chart's injector registered by Service, as a cluster installs it (`istiod.istio-system`,
    /// path `/inject`), on Service port `port` instead of the chart's 443, with `reinvocationPolicy:
    /// Never`. The Service and its endpoints are the caller's.
    pub fn injector_config_by_service(&self, port: u16) -> Vec<Value> {
        let mut objects = helm_template(
            "istio-discovery",
            "templates/mutatingwebhook.yaml",
            &[format!(
                "istiodRemote.injectionCABundle={}",
                self.ca_bundle()
            )],
        );
        for object in &mut objects {
            for hook in object["webhooks"].as_array_mut().into_iter().flatten() {
                assert_eq!(
                    hook["clientConfig"]["service"]["name"], "istiod",
                    "the chart registers istiod by Service: {hook:#}"
                );
                hook["clientConfig"]["service"]["port"] = json!(port);
            }
        }
        objects
    }

    /// The base chart's `ValidatingWebhookConfiguration` `istiod-default-validator` for this istiod
    /// (the revision's own validator matches only objects labelled `istio.io/rev`).
    pub fn validator_config(&self) -> Vec<Value> {
        helm_template(
            "base",
            "templates/defaultrevision-validatingwebhookconfiguration.yaml",
            &[
                format!("base.validationURL=https://{}/validate", self.https),
                format!("base.validationCABundle={}", self.ca_bundle()),
            ],
        )
    }

    /// Registers the injector (see [`Istiod::injector_config`]) and returns once the apiserver calls
    /// it: a server-side dry run of a pod that opts in comes back with `istio-proxy`.
    pub fn register_injector(&self, cp: &ControlPlane, reinvocation_policy: &str) {
        apply_objects(cp, &self.injector_config(reinvocation_policy));
        let probe = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "istiod-probe", "namespace": "default",
                "labels": {"sidecar.istio.io/inject": "true"}},
            "spec": {"serviceAccountName": "default",
                "containers": [{"name": "app", "image": "example/probe:1"}]}
        });
        self.wait_until(cp, "the injector", || {
            let output = cp.kubectl_stdin(
                ["create", "--dry-run=server", "-o", "json", "-f", "-"],
                &probe.to_string(),
            );
            output.status.success()
                && serde_json::from_slice::<Value>(&output.stdout)
                    .is_ok_and(|pod| names(&pod["spec"]["initContainers"]).contains(&"istio-proxy"))
        });
    }

    /// Registers the validator (see [`Istiod::validator_config`]) and returns once the apiserver
    /// calls it: a server-side dry run of [`ISTIOD_ONLY_REFUSES`] is denied by `validation.istio.io`.
    /// The Istio CRDs must be installed.
    pub fn register_validator(&self, cp: &ControlPlane) {
        apply_objects(cp, &self.validator_config());
        self.wait_until(cp, "the validator", || {
            let output = cp.kubectl_stdin(
                ["create", "--dry-run=server", "-f", "-"],
                ISTIOD_ONLY_REFUSES,
            );
            String::from_utf8_lossy(&output.stderr).contains(ISTIOD_DENIED)
        });
    }

    fn wait_until(&self, cp: &ControlPlane, what: &str, called: impl FnMut() -> bool) {
        let what = format!(
            "the apiserver calling istiod's {what} at https://{} (istiod log {}, control plane \
             logs {})",
            self.https,
            self.log.display(),
            cp.logs().display()
        );
        wait_until(&what, REGISTER_TIMEOUT, Duration::from_millis(200), called);
    }

    /// The sum of every series of the counter `name` on istiod's `/metrics` (0 when absent).
    pub fn counter(&self, name: &str) -> f64 {
        let reply = admin_get(self.monitoring, "/metrics")
            .unwrap_or_else(|e| panic!("GET /metrics from istiod at {}: {e}", self.monitoring));
        assert_eq!(status(&reply), 200, "{reply:.300}");
        metrics::sum(&reply, name)
    }

    /// Stops istiod (SIGKILL to its PID) and waits for it to exit.
    pub fn stop(&mut self) {
        self.child = None;
    }
}

/// How kubectl reports a denial by istiod's validator.
pub const ISTIOD_DENIED: &str = "admission webhook \"validation.istio.io\" denied the request";

/// An object the Istio CRDs' schema accepts, mesh-admission's rules admit, and istiod's validator
/// refuses (an HTTP route with neither a destination, a redirect nor a direct response).
pub const ISTIOD_ONLY_REFUSES: &str = r#"{"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
  "metadata": {"name": "istiod-probe", "namespace": "default"},
  "spec": {"hosts": ["probe"], "http": [{"name": "nowhere"}]}}"#;

/// The names of a list of containers or volumes.
pub fn names(list: &Value) -> Vec<&str> {
    list.as_array()
        .map(|items| items.iter().filter_map(|i| i["name"].as_str()).collect())
        .unwrap_or_default()
}

/// `helm template` of one template of one of the charts `hack/build-istiod.sh` copied from the Istio
/// module, with `--set` values, as objects.
fn helm_template(chart: &str, template: &str, set: &[String]) -> Vec<Value> {
    let helm = tool(".tools/bin/helm", TOOLS_HINT);
    let mut command = Command::new(&helm);
    command
        .args(["template", "istiod"])
        .arg(istiod_tool("charts").join(chart))
        .args(["--namespace", ISTIO_NAMESPACE, "--show-only", template]);
    for value in set {
        command.args(["--set", value]);
    }
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", helm.display()));
    assert!(
        output.status.success(),
        "helm template {chart} {template} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    mesh_admission::manifests::parse_objects(&String::from_utf8_lossy(&output.stdout)).unwrap()
}

/// `kubectl apply -f -` of `objects` as one List.
pub fn apply_objects(cp: &ControlPlane, objects: &[Value]) {
    let list = json!({"apiVersion": "v1", "kind": "List", "items": objects});
    cp.kubectl_stdin_ok(["apply", "-f", "-"], &list.to_string());
}
