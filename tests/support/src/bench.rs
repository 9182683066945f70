//! Helpers for the pod-creation benchmark (`tests/bench_e2e.rs`, run by `hack/bench-e2e.sh`): the
//! null webhook as a process, the pod-creation load (`examples/pod_load.rs`), the apiserver's own
//! admission metrics, and switching the registered webhook configuration with proof that the
//! apiserver follows.
//!
//! Everything started here is killed by its PID on drop, also when the benchmark panics.

use std::ffi::OsStr;
use std::fs;
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::control_plane::ControlPlane;
use crate::metrics;
use crate::process::{ChildGuard, example, spawn_logged, wait_started};
use crate::webhook::{Webhook, printed_config};

/// How long a webhook process may take to listen, and the apiserver to follow a registration change
/// (it reads webhook configurations from a watch, a moment after they are stored).
const SWITCH_TIMEOUT: Duration = Duration::from_secs(30);
/// Probes are cheap, but each is a kubectl process: this bounds their number as well as their time.
const MAX_PROBES: usize = 200;
const POLL: Duration = Duration::from_millis(100);

/// `examples/null_webhook.rs` on a free port of `host` (127.0.0.1, or a non-loopback address to be
/// called by Service), with the serving pair of a [`Webhook`] (so the same caBundle works), answering
/// every review allowed, with `patch` on `/mutate` if given.
pub struct NullWebhook {
    child: ChildGuard,
    url: String,
    log: PathBuf,
}

impl NullWebhook {
    pub fn start(
        cp: &ControlPlane,
        certs_of: &Webhook,
        patch: Option<&Path>,
        host: IpAddr,
    ) -> NullWebhook {
        static RUNS: AtomicUsize = AtomicUsize::new(0);
        let n = RUNS.fetch_add(1, Ordering::Relaxed);
        let log = cp.logs().join(format!("null-webhook-{n}.log"));
        let binary = example("null_webhook");
        let mut command = Command::new(&binary);
        command
            .arg("--listen")
            .arg(SocketAddr::new(host, 0).to_string())
            .arg("--tls-cert")
            .arg(certs_of.certs().join("tls.crt"))
            .arg("--tls-key")
            .arg(certs_of.certs().join("tls.key"));
        if let Some(patch) = patch {
            command.arg("--patch").arg(patch);
        }
        let mut child = spawn_logged(&mut command, &log);
        let what = binary.display().to_string();
        let addr = wait_started(&mut child, &what, &log, SWITCH_TIMEOUT, || {
            let text = fs::read_to_string(&log).ok()?;
            text.lines().find_map(|line| {
                line.strip_prefix("null webhook listening on ")?
                    .parse::<SocketAddr>()
                    .ok()
            })
        });
        // It prints the address once bound; a connection proves it accepts too.
        TcpStream::connect(addr).unwrap_or_else(|e| panic!("connecting to {addr}: {e}"));
        let webhook = NullWebhook {
            child,
            url: format!("https://{addr}"),
            log,
        };
        eprintln!(
            "bench: null webhook{} serving {}, log {}",
            if patch.is_some() { " with patch" } else { "" },
            webhook.url,
            webhook.log.display()
        );
        webhook
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn pid(&self) -> u32 {
        self.child.pid()
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.url
            .rsplit(':')
            .next()
            .and_then(|port| port.parse().ok())
            .unwrap_or_else(|| panic!("no port in {}", self.url))
    }
}

/// The apiserver's admission-webhook counters (its `/metrics`), summed over every webhook.
#[derive(Clone, Copy, Debug, Default)]
pub struct WebhookCalls {
    /// `apiserver_admission_webhook_request_total`: calls made.
    pub calls: f64,
    /// `apiserver_admission_webhook_admission_duration_seconds`: count and total time of the calls
    /// as the apiserver measured them (from before the request is sent to the decoded reply).
    pub timed: f64,
    pub seconds: f64,
}

impl WebhookCalls {
    pub fn read(cp: &ControlPlane) -> WebhookCalls {
        let text = cp.kubectl_ok(["get", "--raw", "/metrics"]);
        WebhookCalls {
            calls: metrics::sum(&text, "apiserver_admission_webhook_request_total"),
            timed: metrics::sum(
                &text,
                "apiserver_admission_webhook_admission_duration_seconds_count",
            ),
            seconds: metrics::sum(
                &text,
                "apiserver_admission_webhook_admission_duration_seconds_sum",
            ),
        }
    }

    /// What happened between `before` and `self`.
    pub fn since(self, before: WebhookCalls) -> WebhookCalls {
        WebhookCalls {
            calls: self.calls - before.calls,
            timed: self.timed - before.timed,
            seconds: self.seconds - before.seconds,
        }
    }
}

/// `mesh-admission webhook-config --url URL --ca-bundle CA`: exactly what a user registers.
pub fn webhook_config(url: &str, ca_bundle: &Path) -> String {
    webhook_config_with(&["--url", url], ca_bundle, None)
}

/// `mesh-admission webhook-config --ca-bundle CA`: registered by Service, as the chart does
/// (`mesh-admission.mesh-system`), on Service port `port` instead of 443 (a port per benchmark mode,
/// so that each has a keep-alive pool of its own: the apiserver keeps a client per clientConfig).
pub fn webhook_config_by_service(ca_bundle: &Path, port: u16) -> String {
    webhook_config_with(&[], ca_bundle, Some(port))
}

fn webhook_config_with(args: &[&str], ca_bundle: &Path, service_port: Option<u16>) -> String {
    let mut all: Vec<&OsStr> = args.iter().map(OsStr::new).collect();
    all.extend([OsStr::new("--ca-bundle"), ca_bundle.as_os_str()]);
    let config = printed_config(&all);
    let without_conditions = std::env::var("BENCH_E2E_MATCH_CONDITIONS").as_deref() == Ok("0");
    if !without_conditions && service_port.is_none() {
        return config;
    }
    // Edited: every webhook on the given Service port, and without matchConditions to measure what
    // they save (the configuration as it was before them); the rest unchanged (JSON documents are
    // YAML for kubectl).
    yaml_serde::Deserializer::from_str(&config)
        .map(|document| {
            let mut object = serde_json::Value::deserialize(document)
                .unwrap_or_else(|e| panic!("webhook-config printed invalid YAML: {e}"));
            for hook in object["webhooks"].as_array_mut().into_iter().flatten() {
                if let Some(port) = service_port {
                    hook["clientConfig"]["service"]["port"] = serde_json::json!(port);
                }
                if let Some(hook) = hook.as_object_mut().filter(|_| without_conditions) {
                    hook.remove("matchConditions");
                }
            }
            format!("---\n{object}\n")
        })
        .collect()
}

/// Switches the apiserver's webhook configurations: deletes `old` (if any), proves with probes
/// that the apiserver no longer calls any webhook for `probe_pod`, then applies `new` (if any) and
/// proves that it calls one. Returns the last probe's object as the apiserver would store it
/// (a server-side dry run, which calls webhooks like a real create and stores nothing).
///
/// Proving both steps through the apiserver's own call counter works for any webhook, including
/// ones that leave no trace in the object (the null webhook without a patch).
pub fn switch_registration(
    cp: &ControlPlane,
    old: Option<&str>,
    new: Option<&str>,
    namespace: &str,
    probe_pod: &str,
) -> serde_json::Value {
    if let Some(old) = old {
        cp.kubectl_stdin_ok(["delete", "--ignore-not-found", "-f", "-"], old);
    }
    let mut object = wait_for_calls(cp, false, namespace, probe_pod);
    if let Some(new) = new {
        cp.kubectl_stdin_ok(["apply", "-f", "-"], new);
        object = wait_for_calls(cp, true, namespace, probe_pod);
    }
    object
}

fn wait_for_calls(
    cp: &ControlPlane,
    called: bool,
    namespace: &str,
    probe_pod: &str,
) -> serde_json::Value {
    let started = Instant::now();
    for _ in 0..MAX_PROBES {
        let before = WebhookCalls::read(cp);
        let probe = cp.kubectl_stdin(
            [
                "create",
                "--dry-run=server",
                "--namespace",
                namespace,
                "-o",
                "json",
                "-f",
                "-",
            ],
            probe_pod,
        );
        let after = WebhookCalls::read(cp).since(before);
        if probe.status.success() && (after.calls > 0.0) == called {
            return serde_json::from_slice(&probe.stdout).unwrap_or_else(|e| {
                panic!("the dry run printed no JSON ({e}):\n{}", cp.report(&probe))
            });
        }
        if started.elapsed() > SWITCH_TIMEOUT {
            break;
        }
        std::thread::sleep(POLL);
    }
    panic!(
        "the apiserver {} webhooks for a pod in {namespace} within {SWITCH_TIMEOUT:?} (or \
         {MAX_PROBES} probes) of the registration change (logs: {})",
        if called {
            "did not call"
        } else {
            "still called"
        },
        cp.logs().display()
    )
}

/// Deletes every pod in `namespace` in one call (DELETE on the collection: the pods are bound to
/// no node, so the apiserver removes them at once) and waits until none is listed.
pub fn delete_pods(cp: &ControlPlane, namespace: &str) {
    let collection = format!("/api/v1/namespaces/{namespace}/pods");
    cp.kubectl_ok(["delete", "--raw", &collection]);
    let started = Instant::now();
    for _ in 0..MAX_PROBES {
        let left = cp.kubectl_ok(["get", "pods", "--namespace", namespace, "-o", "name"]);
        if left.trim().is_empty() {
            return;
        }
        assert!(
            started.elapsed() < SWITCH_TIMEOUT,
            "{} pods still in {namespace} {SWITCH_TIMEOUT:?} after the delete (logs: {})",
            left.lines().count(),
            cp.logs().display()
        );
        std::thread::sleep(POLL);
    }
    panic!("pods still in {namespace} after {MAX_PROBES} checks")
}

/// What to ask of `examples/pod_load.rs`.
pub struct Load<'a> {
    pub namespace: &'a str,
    pub pod_file: &'a Path,
    pub count: u64,
    pub in_flight: usize,
    pub connections: usize,
    /// Pods per second, open-loop; 0 saturates (see `pod_load --rate`).
    pub rate: f64,
    /// No request starts after this long; the run is killed a while after it.
    pub max_duration: Duration,
}

/// Runs the load client against the control plane's apiserver with its admin token and returns
/// its JSON report.
pub fn pod_load(cp: &ControlPlane, load: &Load) -> serde_json::Value {
    static RUNS: AtomicUsize = AtomicUsize::new(0);
    let n = RUNS.fetch_add(1, Ordering::Relaxed);
    let token_file = cp.dir().join("bench-token");
    fs::write(&token_file, cp.admin_token())
        .unwrap_or_else(|e| panic!("writing {}: {e}", token_file.display()));
    let stdout_path = cp.dir().join(format!("pod-load-{n}.json"));
    let stderr_path = cp.logs().join(format!("pod-load-{n}.log"));
    let create = |path: &Path| {
        fs::File::create(path).unwrap_or_else(|e| panic!("creating {}: {e}", path.display()))
    };
    let binary = example("pod_load");
    let request_timeout = Duration::from_secs(30);
    let child = Command::new(&binary)
        .args(["--url", cp.url()])
        .arg("--ca")
        .arg(cp.ca_file())
        .arg("--token-file")
        .arg(&token_file)
        .args(["--namespace", load.namespace])
        .arg("--pod")
        .arg(load.pod_file)
        .args(["--count", &load.count.to_string()])
        .args(["--in-flight", &load.in_flight.to_string()])
        .args(["--connections", &load.connections.to_string()])
        .args(["--rate", &load.rate.to_string()])
        .args(["--timeout", &request_timeout.as_secs().to_string()])
        .args(["--max-duration", &load.max_duration.as_secs().to_string()])
        .stdin(Stdio::null())
        .stdout(create(&stdout_path))
        .stderr(create(&stderr_path))
        .spawn()
        .unwrap_or_else(|e| panic!("starting {}: {e}", binary.display()));
    let mut child = ChildGuard(child);
    // The client stops sending at max_duration and every request ends within its timeout.
    let deadline = load.max_duration + request_timeout * 4;
    let status = child.wait_exit(deadline).unwrap_or_else(|| {
        panic!(
            "pod_load ran longer than {deadline:?}; killed (log: {})",
            stderr_path.display()
        )
    });
    let stdout = fs::read_to_string(&stdout_path).unwrap_or_default();
    let stderr = fs::read_to_string(&stderr_path).unwrap_or_default();
    assert!(
        status.success(),
        "pod_load exited with {status}:\n{stderr}{stdout}"
    );
    serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("pod_load printed no JSON ({e}): {stdout}\n{stderr}"))
}

/// The median of `values` (the mean of the middle two for an even count); `None` when empty.
pub fn median(values: &[f64]) -> Option<f64> {
    let mut sorted: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(sorted[n / 2]),
        _ => Some((sorted[n / 2 - 1] + sorted[n / 2]) / 2.0),
    }
}

/// `mesh_admission_request_duration_seconds` of `mesh-admission serve` so far: (count, total
/// seconds) of the reviews it answered, timed from body received to reply encoded.
pub fn review_time(webhook: &Webhook) -> (f64, f64) {
    let text = webhook.metrics();
    (
        metrics::sum(&text, "mesh_admission_request_duration_seconds_count"),
        metrics::sum(&text, "mesh_admission_request_duration_seconds_sum"),
    )
}
