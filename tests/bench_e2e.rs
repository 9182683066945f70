//! The pod-creation benchmark of issue 14 through the real kube-apiserver (`hack/bench-e2e.sh` runs
//! it; it is `#[ignore]`d so the test command does not): pods created per second, p50/p99 latency of
//! the create calls, and the CPU per pod of each admission process, in a namespace labelled
//! `istio-injection=enabled`, with
//!
//! * (a) no webhook registered;
//! * (b) the null webhook (`examples/null_webhook.rs`) registered with exactly mesh-admission's
//!   configuration;
//! * (b') the same, answering pods with the constant patch mesh-admission gives the benchmark's pod
//!   (so the apiserver's cost of applying a mutation is in the baseline);
//! * (c) `mesh-admission serve`;
//! * (i) istiod's injector alone (`hack/build-istiod.sh`), registered from Istio's chart;
//! * (i+c) istiod's injector and mesh-admission, as a cluster with both runs them;
//! * (p) the same mutation as mesh-admission's for the benchmark's pod, as a MutatingAdmissionPolicy
//!   (done by the apiserver itself, no webhook).
//!
//! `BENCH_E2E_PATH=service` (the default) is the production path: every webhook registered by Service
//! (`mesh-admission.mesh-system`, `istiod.istio-system`), its process on the machine's non-loopback
//! address behind an EndpointSlice, the apiserver started with `--enable-aggregator-routing=true`; it
//! then speaks HTTP/1.1 to each with a pool of keep-alive connections. Each mode has a Service port of
//! its own, so a pool of its own (the apiserver keeps a client per clientConfig).
//! `BENCH_E2E_PATH=loopback` registers by `https://127.0.0.1:PORT` URLs instead, which the apiserver
//! calls over one HTTP/2 connection (DESIGN.md section 3).
//!
//! The modes alternate within each round (a b b' c ..., a b b' c ..., ...), every run starts from an
//! empty namespace (so etcd holds as much in each), and the results are the medians over the rounds.
//! Settings come from the environment (the script's flags set them):
//! `BENCH_E2E_PODS` (1000), `BENCH_E2E_IN_FLIGHT` (16), `BENCH_E2E_CONNECTIONS` (1),
//! `BENCH_E2E_RATE` (0: saturate; else pods per second, open-loop, as clients create objects),
//! `BENCH_E2E_ROUNDS` (2), `BENCH_E2E_MODES` (`a,b,b',c,i,i+c,p`; `a,b,b',c` for the loopback path),
//! `BENCH_E2E_PATH` (`service`), `BENCH_E2E_OUT` (`target/bench-e2e`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};
use testkit::bench::{
    Load, NullWebhook, WebhookCalls, delete_pods, median, pod_load, review_time,
    switch_registration, webhook_config, webhook_config_by_service,
};
use testkit::istiod::Istiod;
use testkit::procfs::{cpu_time, load_average};
use testkit::rollout::{create_service, endpoint_address, publish_endpoint};
use testkit::{ControlPlane, Webhook, WebhookOptions, mesh_admission_stdin};

const NAMESPACE: &str = "bench";
/// A plain one-container pod, as a Deployment would create it (minus the owner), named by the
/// apiserver. It has a label so the patch adds to an existing map, as it would for most pods, and
/// names its ServiceAccount (the test apiserver runs without the plugin that sets it; istiod's
/// injection needs it).
const POD: &str = r#"{"apiVersion":"v1","kind":"Pod","metadata":{"generateName":"bench-","labels":{"app":"bench"}},"spec":{"serviceAccountName":"default","containers":[{"name":"app","image":"registry.example/bench/app:1.0","ports":[{"containerPort":8080}]}]}}"#;
/// After the pods of the previous run are deleted, a moment for the apiserver's watch cache and
/// etcd to take in the deletions before the next run is timed.
const SETTLE: Duration = Duration::from_secs(2);
/// A run of the load client sends nothing after this long.
const MAX_RUN: Duration = Duration::from_secs(600);
/// The label mesh-admission's patch adds: counts the stored pods that were mutated.
const MUTATED_LABEL: &str = "spire-managed-identity";
/// The annotation istiod's injector adds: counts the stored pods it injected.
const INJECTED_ANNOTATION: &str = "sidecar.istio.io/status";
/// Probes are kubectl processes: bounded in number and time.
const MAX_PROBES: usize = 200;
const PROBE_TIMEOUT: Duration = Duration::from_secs(30);
/// mesh-admission's mutation of the benchmark's pod as a MutatingAdmissionPolicy: the labels, the
/// annotation and the CSI volume, as server-side apply merges them (labels and volumes by key).
const POLICY: &str = r#"
apiVersion: admissionregistration.k8s.io/v1
kind: MutatingAdmissionPolicy
metadata:
  name: mesh-admission-pods
spec:
  failurePolicy: Fail
  reinvocationPolicy: IfNeeded
  matchConstraints:
    namespaceSelector:
      matchLabels:
        istio-injection: enabled
    resourceRules:
      - apiGroups: [""]
        apiVersions: ["v1"]
        operations: ["CREATE"]
        resources: ["pods"]
  mutations:
    - patchType: ApplyConfiguration
      applyConfiguration:
        expression: >
          Object{
            metadata: Object.metadata{
              labels: {"sidecar.istio.io/inject": "true", "spire-managed-identity": "true"},
              annotations: {"inject.istio.io/templates": "sidecar,spire"}
            },
            spec: Object.spec{
              volumes: [Object.spec.volumes{
                name: "workload-socket",
                csi: Object.spec.volumes.csi{driver: "csi.spiffe.io", readOnly: true}
              }]
            }
          }
---
apiVersion: admissionregistration.k8s.io/v1
kind: MutatingAdmissionPolicyBinding
metadata:
  name: mesh-admission-pods
spec:
  policyName: mesh-admission-pods
"#;

/// How the apiserver reaches the webhooks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Route {
    /// By Service and EndpointSlice, over HTTP/1.1: the production path.
    Service,
    /// By `https://127.0.0.1:PORT` URL, over HTTP/2.
    Loopback,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Mode {
    NoWebhook,
    Null,
    NullPatch,
    MeshAdmission,
    /// Another build of mesh-admission (`BENCH_E2E_BASELINE_BIN`), e.g. the code before a change.
    Baseline,
    Istiod,
    IstiodMeshAdmission,
    Policy,
}

impl Mode {
    const ALL: [Mode; 8] = [
        Mode::NoWebhook,
        Mode::Null,
        Mode::NullPatch,
        Mode::MeshAdmission,
        Mode::Baseline,
        Mode::Istiod,
        Mode::IstiodMeshAdmission,
        Mode::Policy,
    ];

    fn key(self) -> &'static str {
        match self {
            Mode::NoWebhook => "a",
            Mode::Null => "b",
            Mode::NullPatch => "b'",
            Mode::MeshAdmission => "c",
            Mode::Baseline => "c0",
            Mode::Istiod => "i",
            Mode::IstiodMeshAdmission => "i+c",
            Mode::Policy => "p",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Mode::NoWebhook => "(a) no webhook",
            Mode::Null => "(b) null webhook",
            Mode::NullPatch => "(b') null webhook + patch",
            Mode::MeshAdmission => "(c) mesh-admission",
            Mode::Baseline => "(c0) mesh-admission baseline",
            Mode::Istiod => "(i) istiod",
            Mode::IstiodMeshAdmission => "(i+c) istiod + mesh-admission",
            Mode::Policy => "(p) MutatingAdmissionPolicy",
        }
    }

    /// The Service port name of this mode's mesh-admission-side backend (a DNS label).
    fn port_name(self) -> &'static str {
        match self {
            Mode::Null => "b",
            Mode::NullPatch => "bp",
            Mode::MeshAdmission => "c",
            Mode::Baseline => "c0",
            Mode::IstiodMeshAdmission => "ic",
            Mode::NoWebhook | Mode::Istiod | Mode::Policy => "none",
        }
    }

    /// Whether the stored pods carry mesh-admission's mutation.
    fn mutates(self) -> bool {
        matches!(
            self,
            Mode::NullPatch
                | Mode::MeshAdmission
                | Mode::Baseline
                | Mode::IstiodMeshAdmission
                | Mode::Policy
        )
    }

    /// Whether the stored pods carry istiod's injection.
    fn injects(self) -> bool {
        matches!(self, Mode::Istiod | Mode::IstiodMeshAdmission)
    }
}

struct Settings {
    route: Route,
    pods: u64,
    in_flight: usize,
    connections: usize,
    /// Pods per second, open-loop; 0 saturates.
    rate: f64,
    rounds: usize,
    modes: Vec<Mode>,
    out: PathBuf,
}

fn env_number<T: std::str::FromStr + PartialOrd + std::fmt::Display + Copy>(
    name: &str,
    default: T,
    min: T,
    max: T,
) -> T {
    let Ok(text) = std::env::var(name) else {
        return default;
    };
    let value: T = text
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("{name}={text:?} is not a number"));
    assert!(
        min <= value && value <= max,
        "{name}={value} is outside {min}..={max}"
    );
    value
}

impl Settings {
    fn from_env() -> Settings {
        let in_flight = env_number("BENCH_E2E_IN_FLIGHT", 16, 1, 1024);
        let route = match std::env::var("BENCH_E2E_PATH").as_deref() {
            Ok("service") | Err(_) => Route::Service,
            Ok("loopback") => Route::Loopback,
            Ok(other) => panic!("BENCH_E2E_PATH={other:?} is neither service nor loopback"),
        };
        let default_modes = match route {
            Route::Service => "a,b,b',c,i,i+c,p",
            Route::Loopback => "a,b,b',c",
        };
        let modes_text = std::env::var("BENCH_E2E_MODES").unwrap_or_else(|_| default_modes.into());
        let mut modes = Vec::new();
        for key in modes_text
            .split(',')
            .map(str::trim)
            .filter(|k| !k.is_empty())
        {
            let mode = Mode::ALL
                .into_iter()
                .find(|mode| mode.key() == key)
                .unwrap_or_else(|| {
                    panic!(
                        "BENCH_E2E_MODES={modes_text:?}: {key:?} is not one of a, b, b', c, c0, i, \
                         i+c, p"
                    )
                });
            if !modes.contains(&mode) {
                modes.push(mode);
            }
        }
        assert!(
            !modes.is_empty(),
            "BENCH_E2E_MODES={modes_text:?} names no mode"
        );
        let default_out = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .parent()
            .map_or_else(|| PathBuf::from("target"), PathBuf::from)
            .join("bench-e2e");
        Settings {
            route,
            pods: env_number("BENCH_E2E_PODS", 1000, 1, 100_000),
            in_flight,
            connections: env_number("BENCH_E2E_CONNECTIONS", 1, 1, in_flight),
            rate: env_number("BENCH_E2E_RATE", 0.0, 0.0, 10_000.0),
            rounds: env_number("BENCH_E2E_ROUNDS", 2, 1, 20),
            modes,
            out: std::env::var_os("BENCH_E2E_OUT").map_or(default_out, PathBuf::from),
        }
    }
}

/// One timed run of one mode.
struct Sample {
    mode: Mode,
    round: usize,
    created: u64,
    failed: u64,
    pods_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    /// CPU per pod of the webhook process: the null webhook, mesh-admission, or istiod in (i).
    webhook_cpu_us: Option<f64>,
    /// istiod's CPU per pod in (i+c), next to mesh-admission's.
    istiod_cpu_us: Option<f64>,
    apiserver_cpu_us: f64,
    etcd_cpu_us: f64,
    calls_per_pod: f64,
    /// Mean duration of one webhook call as the apiserver timed it.
    call_ms: Option<f64>,
    /// Mean duration of one review as mesh-admission timed it (mode c only).
    review_ms: Option<f64>,
    mutated: u64,
    injected: u64,
    report: Value,
}

fn number(value: &Value, what: &str) -> f64 {
    value
        .as_f64()
        .unwrap_or_else(|| panic!("pod_load's report has no number for {what}: {value}"))
}

#[test]
#[ignore = "a benchmark of several minutes: run by hack/bench-e2e.sh"]
fn pod_creation_through_the_apiserver_per_webhook_mode() {
    let settings = Settings::from_env();
    // Aggregator routing: the apiserver calls a Service's endpoints directly (the production path);
    // URL registrations are not affected.
    let cp = ControlPlane::start_with_apiserver_args(&["--enable-aggregator-routing=true"]);
    let version: Value = serde_json::from_str(&cp.kubectl_ok(["version", "-o", "json"]))
        .unwrap_or_else(|e| panic!("kubectl version printed no JSON: {e}"));
    let server_version = version["serverVersion"]["gitVersion"]
        .as_str()
        .unwrap_or("?")
        .to_owned();
    // Created before any webhook is registered, so it is exactly as written.
    let namespace = json!({"apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": NAMESPACE, "labels": {"istio-injection": "enabled"}}});
    cp.kubectl_stdin_ok(["apply", "-f", "-"], &namespace.to_string());

    let dir = cp.dir().to_path_buf();
    let pod_file = dir.join("bench-pod.json");
    std::fs::write(&pod_file, POD)
        .unwrap_or_else(|e| panic!("writing {}: {e}", pod_file.display()));
    let patch_file = dir.join("bench-patch.json");
    let patch = mesh_admission_patch();
    std::fs::write(&patch_file, patch.to_string())
        .unwrap_or_else(|e| panic!("writing {}: {e}", patch_file.display()));

    // Behind a Service, every process binds the machine's non-loopback address.
    let host = match settings.route {
        Route::Service => endpoint_address(),
        Route::Loopback => IpAddr::from([127, 0, 0, 1]),
    };
    // Mode c serves this crate's build unless BENCH_E2E_BIN names another (to compare two other builds).
    let mesh_admission = Webhook::start_with(
        &cp,
        &WebhookOptions {
            binary: std::env::var_os("BENCH_E2E_BIN").map(PathBuf::from),
            listen: Some(host),
            ..WebhookOptions::default()
        },
    );
    let null = NullWebhook::start(&cp, &mesh_admission, None, host);
    let null_patch = NullWebhook::start(&cp, &mesh_admission, Some(&patch_file), host);
    let baseline = settings.modes.contains(&Mode::Baseline).then(|| {
        let binary = std::env::var_os("BENCH_E2E_BASELINE_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                panic!("mode c0 needs BENCH_E2E_BASELINE_BIN (another mesh-admission)")
            });
        Webhook::start_with(
            &cp,
            &WebhookOptions {
                binary: Some(binary),
                listen: Some(host),
                ..WebhookOptions::default()
            },
        )
    });
    let istiod = settings
        .modes
        .iter()
        .any(|mode| mode.injects())
        .then(|| Istiod::start_on(&cp, host));

    // Each mode's configuration, as kubectl applies it.
    let ca = mesh_admission.ca_file();
    let ours: Vec<(Mode, u16, String)> = [
        Some((Mode::Null, null.port(), null.url().to_owned())),
        Some((
            Mode::NullPatch,
            null_patch.port(),
            null_patch.url().to_owned(),
        )),
        Some((
            Mode::MeshAdmission,
            port_of(mesh_admission.url()),
            mesh_admission.url().to_owned(),
        )),
        Some((
            Mode::IstiodMeshAdmission,
            port_of(mesh_admission.url()),
            mesh_admission.url().to_owned(),
        )),
        baseline
            .as_ref()
            .map(|b| (Mode::Baseline, port_of(b.url()), b.url().to_owned())),
    ]
    .into_iter()
    .flatten()
    .collect();
    let mut configs: BTreeMap<Mode, String> = BTreeMap::new();
    match settings.route {
        Route::Service => {
            // One Service port per mode, so that each gets a keep-alive pool of its own.
            cp.kubectl_ok(["create", "namespace", "mesh-system"]);
            let service_ports: Vec<(&str, u16)> = ours
                .iter()
                .zip(1001..)
                .map(|((mode, _, _), service_port)| (mode.port_name(), service_port))
                .collect();
            create_service(&cp, "mesh-system", "mesh-admission", &service_ports);
            for (i, ((mode, backend_port, _), (_, service_port))) in
                ours.iter().zip(&service_ports).enumerate()
            {
                publish_endpoint(
                    &cp,
                    "mesh-system",
                    "mesh-admission",
                    &format!("mesh-admission-{i}"),
                    host,
                    &[(mode.port_name(), *backend_port)],
                );
                configs.insert(*mode, webhook_config_by_service(&ca, *service_port));
            }
            if let Some(istiod) = &istiod {
                let port = istiod.webhook_addr().port();
                create_service(&cp, "istio-system", "istiod", &[("i", 2001), ("ic", 2002)]);
                publish_endpoint(
                    &cp,
                    "istio-system",
                    "istiod",
                    "istiod",
                    host,
                    &[("i", port), ("ic", port)],
                );
                configs.insert(
                    Mode::Istiod,
                    documents(&istiod.injector_config_by_service(2001)),
                );
                let both = documents(&istiod.injector_config_by_service(2002))
                    + &configs[&Mode::IstiodMeshAdmission];
                configs.insert(Mode::IstiodMeshAdmission, both);
            }
        }
        Route::Loopback => {
            for (mode, _, url) in &ours {
                configs.insert(*mode, webhook_config(url, &ca));
            }
            if let Some(istiod) = &istiod {
                let injector = documents(&istiod.injector_config("Never"));
                configs.insert(Mode::Istiod, injector.clone());
                let both = injector + &configs[&Mode::IstiodMeshAdmission];
                configs.insert(Mode::IstiodMeshAdmission, both);
            }
        }
    }
    configs.insert(Mode::Policy, POLICY.to_owned());
    let mut pids: BTreeMap<Mode, u32> = [
        (Mode::Null, null.pid()),
        (Mode::NullPatch, null_patch.pid()),
        (Mode::MeshAdmission, mesh_admission.pid()),
        (Mode::IstiodMeshAdmission, mesh_admission.pid()),
    ]
    .into_iter()
    .collect();
    if let Some(baseline) = &baseline {
        pids.insert(Mode::Baseline, baseline.pid());
    }
    let istiod_pid = istiod.as_ref().map(Istiod::pid);
    if let Some(pid) = istiod_pid {
        pids.insert(Mode::Istiod, pid);
    }
    let apiserver = cp.pid("kube-apiserver");
    let etcd = cp.pid("etcd");

    let load = |count| Load {
        namespace: NAMESPACE,
        pod_file: &pod_file,
        count,
        in_flight: settings.in_flight,
        connections: settings.connections,
        rate: settings.rate,
        max_duration: MAX_RUN,
    };
    // The first pods through a fresh apiserver pay for its caches and heap growth: not timed.
    let warm_up = pod_load(&cp, &load(settings.pods.min(500)));
    eprintln!("bench: warm-up {warm_up}");
    let load_before = load_average();

    let mut registered: Option<Mode> = None;
    let mut probes: BTreeMap<Mode, Value> = BTreeMap::new();
    let mut samples = Vec::new();
    for round in 1..=settings.rounds {
        for &mode in &settings.modes {
            let config =
                |mode: Option<Mode>| mode.and_then(|m| Some((m, configs.get(&m)?.as_str())));
            let probe = switch(&cp, config(registered), config(Some(mode)));
            registered = Some(mode).filter(|m| configs.contains_key(m));
            probes.entry(mode).or_insert(probe);
            delete_pods(&cp, NAMESPACE);
            // The apiserver's CPU for serving /metrics is not the pods': it is read outside the
            // CPU measurement.
            let calls_before = WebhookCalls::read(&cp);
            let reviews_before =
                (mode == Mode::MeshAdmission).then(|| review_time(&mesh_admission));
            std::thread::sleep(SETTLE);

            let webhook = pids.get(&mode).copied();
            let second = istiod_pid.filter(|_| mode == Mode::IstiodMeshAdmission);
            let webhook_before = webhook.map(cpu_time);
            let second_before = second.map(cpu_time);
            let (apiserver_before, etcd_before) = (cpu_time(apiserver), cpu_time(etcd));
            let report = pod_load(&cp, &load(settings.pods));
            let apiserver_cpu = cpu_time(apiserver) - apiserver_before;
            let etcd_cpu = cpu_time(etcd) - etcd_before;
            let webhook_cpu = webhook
                .zip(webhook_before)
                .map(|(pid, t)| cpu_time(pid) - t);
            let second_cpu = second.zip(second_before).map(|(pid, t)| cpu_time(pid) - t);
            let calls = WebhookCalls::read(&cp).since(calls_before);
            let review_ms = reviews_before.and_then(|(count, seconds)| {
                let (count_after, seconds_after) = review_time(&mesh_admission);
                let reviews = count_after - count;
                (reviews > 0.0).then(|| (seconds_after - seconds) * 1e3 / reviews)
            });

            let created = number(&report["created"], "created") as u64;
            let failed = report["failed"]
                .as_object()
                .map_or(0, |by| by.values().filter_map(Value::as_u64).sum());
            let per_pod = |cpu: Duration| cpu.as_secs_f64() * 1e6 / created.max(1) as f64;
            let (mutated, injected) = stored_counts(&cp);
            let sample = Sample {
                mode,
                round,
                created,
                failed,
                pods_per_s: number(&report["pods_per_s"], "pods_per_s"),
                p50_ms: number(&report["latency_ms"]["p50"], "p50"),
                p99_ms: number(&report["latency_ms"]["p99"], "p99"),
                max_ms: number(&report["latency_ms"]["max"], "max"),
                webhook_cpu_us: webhook_cpu.map(per_pod),
                istiod_cpu_us: second_cpu.map(per_pod),
                apiserver_cpu_us: per_pod(apiserver_cpu),
                etcd_cpu_us: per_pod(etcd_cpu),
                calls_per_pod: calls.calls / created.max(1) as f64,
                call_ms: (calls.timed > 0.0).then(|| calls.seconds * 1e3 / calls.timed),
                review_ms,
                mutated,
                injected,
                report,
            };
            eprintln!("bench: round {round} {}", round_row(&sample));
            samples.push(sample);
        }
    }
    let config = |mode: Option<Mode>| mode.and_then(|m| Some((m, configs.get(&m)?.as_str())));
    switch(&cp, config(registered), None);
    delete_pods(&cp, NAMESPACE);

    let same_as_ours = |other: Mode| match (probes.get(&other), probes.get(&Mode::MeshAdmission)) {
        (Some(other), Some(ours)) => Some(stored_shape(other) == stored_shape(ours)),
        _ => None,
    };
    let context = Context {
        settings: &settings,
        server_version,
        load_before,
        load_after: load_average(),
        conditions: configs
            .get(&Mode::MeshAdmission)
            .map(|config| matched_webhooks(config)),
        same_pod: same_as_ours(Mode::NullPatch),
        same_pod_policy: same_as_ours(Mode::Policy),
    };
    let markdown = results_markdown(&context, &samples);
    println!("\n{markdown}");
    std::fs::create_dir_all(&settings.out)
        .unwrap_or_else(|e| panic!("creating {}: {e}", settings.out.display()));
    let results = settings.out.join("results.md");
    std::fs::write(&results, &markdown)
        .unwrap_or_else(|e| panic!("writing {}: {e}", results.display()));
    let raw: Vec<Value> = samples
        .iter()
        .map(|s| json!({"mode": s.mode.key(), "round": s.round, "webhook_cpu_us_per_pod": s.webhook_cpu_us,
            "istiod_cpu_us_per_pod": s.istiod_cpu_us,
            "apiserver_cpu_us_per_pod": s.apiserver_cpu_us, "etcd_cpu_us_per_pod": s.etcd_cpu_us,
            "webhook_calls_per_pod": s.calls_per_pod, "webhook_call_ms_mean": s.call_ms, "mesh_admission_review_ms_mean": s.review_ms,
            "mutated_pods": s.mutated, "injected_pods": s.injected, "pod_load": s.report}))
        .collect();
    let raw_file = settings.out.join("results.json");
    std::fs::write(
        &raw_file,
        serde_json::to_string_pretty(&raw).unwrap_or_default(),
    )
    .unwrap_or_else(|e| panic!("writing {}: {e}", raw_file.display()));
    eprintln!(
        "bench: wrote {} and {}",
        results.display(),
        raw_file.display()
    );

    // The figures are only comparable when every mode did the work it stands for.
    for s in &samples {
        assert!(
            s.failed == 0 && s.created == settings.pods,
            "round {} {}: {} of {} pods created, {} failed: {}",
            s.round,
            s.mode.label(),
            s.created,
            settings.pods,
            s.failed,
            s.report
        );
        let want = |yes: bool| if yes { s.created } else { 0 };
        assert_eq!(
            (s.mutated, s.injected),
            (want(s.mode.mutates()), want(s.mode.injects())),
            "round {} {}: stored pods with {MUTATED_LABEL}, with {INJECTED_ANNOTATION}",
            s.round,
            s.mode.label()
        );
    }
    for (other, same) in [
        (Mode::NullPatch, context.same_pod),
        (Mode::Policy, context.same_pod_policy),
    ] {
        assert_ne!(
            same,
            Some(false),
            "{} does not store the pod mesh-admission stores: it is no baseline for (c)\n{}: {:#}\n\
             (c): {:#}",
            other.label(),
            other.key(),
            probes[&other],
            probes[&Mode::MeshAdmission]
        );
    }
}

/// The port of an `https://HOST:PORT` URL.
fn port_of(url: &str) -> u16 {
    url.rsplit(':')
        .next()
        .and_then(|port| port.parse().ok())
        .unwrap_or_else(|| panic!("no port in {url}"))
}

/// Objects as a stream of JSON documents, which kubectl reads as YAML.
fn documents(objects: &[Value]) -> String {
    objects.iter().map(|o| format!("---\n{o}\n")).collect()
}

/// Moves the apiserver from registration `from` to `to` (a mode and its configuration; `None` for
/// no registration) with proof that it follows, through [`switch_registration`]'s webhook call
/// counts, or for the policy (which makes no webhook call) through the dry run's mutation. Returns
/// the last probe's object, as the apiserver would store the benchmark's pod.
fn switch(cp: &ControlPlane, from: Option<(Mode, &str)>, to: Option<(Mode, &str)>) -> Value {
    match from {
        Some((Mode::Policy, policy)) => {
            cp.kubectl_stdin_ok(["delete", "--ignore-not-found", "-f", "-"], policy);
            wait_for_policy(cp, false);
        }
        Some((_, config)) => {
            switch_registration(cp, Some(config), None, NAMESPACE, POD);
        }
        None => {}
    }
    match to {
        Some((Mode::Policy, policy)) => {
            cp.kubectl_stdin_ok(["apply", "-f", "-"], policy);
            wait_for_policy(cp, true)
        }
        Some((_, config)) => switch_registration(cp, None, Some(config), NAMESPACE, POD),
        None => switch_registration(cp, None, None, NAMESPACE, POD),
    }
}

/// Probes with server-side dry runs until the benchmark's pod is mutated (`true`) or not.
fn wait_for_policy(cp: &ControlPlane, mutating: bool) -> Value {
    let started = std::time::Instant::now();
    for _ in 0..MAX_PROBES {
        let probe = cp.kubectl_stdin(
            [
                "create",
                "--dry-run=server",
                "--namespace",
                NAMESPACE,
                "-o",
                "json",
                "-f",
                "-",
            ],
            POD,
        );
        let pod: Option<Value> = serde_json::from_slice(&probe.stdout).ok();
        if let Some(pod) =
            pod.filter(|pod| (pod["metadata"]["labels"][MUTATED_LABEL] == "true") == mutating)
        {
            return pod;
        }
        assert!(
            started.elapsed() < PROBE_TIMEOUT,
            "the policy is {} {PROBE_TIMEOUT:?} after the change\n{}",
            if mutating {
                "still not applied"
            } else {
                "still applied"
            },
            cp.report(&probe)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("the policy did not follow within {MAX_PROBES} probes")
}

/// (stored pods with mesh-admission's label, stored pods istiod injected) in the namespace.
fn stored_counts(cp: &ControlPlane) -> (u64, u64) {
    let list: Value = serde_json::from_str(&cp.kubectl_ok([
        "get",
        "pods",
        "--namespace",
        NAMESPACE,
        "-o",
        "json",
    ]))
    .unwrap_or_else(|e| panic!("kubectl get pods printed no JSON: {e}"));
    let pods = list["items"].as_array().cloned().unwrap_or_default();
    let count = |test: &dyn Fn(&Value) -> bool| pods.iter().filter(|p| test(p)).count() as u64;
    (
        count(&|pod| pod["metadata"]["labels"][MUTATED_LABEL] == "true"),
        count(&|pod| {
            pod["metadata"]["annotations"]
                .get(INJECTED_ANNOTATION)
                .is_some()
        }),
    )
}

/// The patch `mesh-admission review -o patch` gives the benchmark's pod in the benchmark's namespace.
fn mesh_admission_patch() -> Value {
    let output = mesh_admission_stdin(
        &["review", "-o", "patch", "--namespace", NAMESPACE, "-f", "-"],
        POD,
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "mesh-admission review failed: {}{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    let line: Value = stdout
        .lines()
        .next()
        .and_then(|line| serde_json::from_str(line).ok())
        .unwrap_or_else(|| panic!("mesh-admission review -o patch printed {stdout:?}"));
    let patch = &line["patch"];
    assert!(
        patch.as_array().is_some_and(|ops| !ops.is_empty()),
        "mesh-admission gives the benchmark pod no patch: {line}"
    );
    patch.clone()
}

/// What a mutation can change in the pod: labels, annotations and spec.
fn stored_shape(pod: &Value) -> Value {
    json!([
        pod["metadata"]["labels"],
        pod["metadata"]["annotations"],
        pod["spec"]
    ])
}

/// `(webhooks with matchConditions, webhooks)` in a `webhook-config` output.
fn matched_webhooks(config: &str) -> (usize, usize) {
    // The configuration is YAML from webhook-config, or JSON documents without the conditions.
    let count = |key: &str| {
        let yaml = config
            .lines()
            .filter(|line| line.trim_start() == format!("{key}:"))
            .count();
        yaml + config.matches(&format!("\"{key}\":")).count()
    };
    (count("matchConditions"), count("clientConfig"))
}

struct Context<'a> {
    settings: &'a Settings,
    server_version: String,
    load_before: String,
    load_after: String,
    conditions: Option<(usize, usize)>,
    same_pod: Option<bool>,
    same_pod_policy: Option<bool>,
}

fn opt(value: Option<f64>, decimals: usize) -> String {
    value.map_or_else(|| "–".to_owned(), |v| format!("{v:.decimals$}"))
}

fn round_row(s: &Sample) -> String {
    format!(
        "{}: {} created, {} failed, {:.0} pods/s, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms, \
         webhook CPU {} µs/pod, apiserver {:.0} µs/pod, etcd {:.0} µs/pod, {:.2} webhook calls/pod \
         ({} ms each as the apiserver timed them{}), istiod CPU {} µs/pod, {} stored pods mutated, \
         {} injected by istiod",
        s.mode.label(),
        s.created,
        s.failed,
        s.pods_per_s,
        s.p50_ms,
        s.p99_ms,
        s.max_ms,
        opt(s.webhook_cpu_us, 0),
        s.apiserver_cpu_us,
        s.etcd_cpu_us,
        s.calls_per_pod,
        opt(s.call_ms, 2),
        s.review_ms.map_or_else(String::new, |ms| format!(
            ", {ms:.3} ms per review as mesh-admission timed it"
        )),
        opt(s.istiod_cpu_us, 0),
        s.mutated,
        s.injected
    )
}

/// Medians per mode of one figure.
fn medians(samples: &[Sample], figure: impl Fn(&Sample) -> Option<f64>) -> BTreeMap<Mode, f64> {
    let mut by_mode: BTreeMap<Mode, Vec<f64>> = BTreeMap::new();
    for s in samples {
        if let Some(value) = figure(s) {
            by_mode.entry(s.mode).or_default().push(value);
        }
    }
    by_mode
        .into_iter()
        .filter_map(|(mode, values)| Some((mode, median(&values)?)))
        .collect()
}

fn ratio(figures: &BTreeMap<Mode, f64>, top: Mode, bottom: Mode) -> Option<f64> {
    let (top, bottom) = (figures.get(&top)?, figures.get(&bottom)?);
    (*bottom > 0.0).then(|| top / bottom)
}

fn results_markdown(context: &Context, samples: &[Sample]) -> String {
    let settings = context.settings;
    let throughput = medians(samples, |s| Some(s.pods_per_s));
    let p50 = medians(samples, |s| Some(s.p50_ms));
    let p99 = medians(samples, |s| Some(s.p99_ms));
    let webhook_cpu = medians(samples, |s| s.webhook_cpu_us);
    let istiod_cpu = medians(samples, |s| s.istiod_cpu_us);
    let apiserver_cpu = medians(samples, |s| Some(s.apiserver_cpu_us));
    let calls = medians(samples, |s| Some(s.calls_per_pod));
    let call_ms = medians(samples, |s| s.call_ms);
    let review_ms = medians(samples, |s| s.review_ms);
    let cpus = std::thread::available_parallelism().map_or(0, usize::from);

    let mut out = String::new();
    let _ = writeln!(
        out,
        "Pod creations through kube-apiserver {} ({} CPUs): {} pods per round, {} over {} \
         HTTP/2 connection{}, {} round{} alternating {}; medians over the rounds. Load average {} \
         before the rounds, {} after.",
        context.server_version,
        cpus,
        settings.pods,
        match settings.rate {
            0.0 => format!("{} in flight (saturating)", settings.in_flight),
            rate => format!(
                "paced at {rate} pods/s open-loop (at most {} in flight)",
                settings.in_flight
            ),
        },
        settings.connections,
        if settings.connections == 1 { "" } else { "s" },
        settings.rounds,
        if settings.rounds == 1 { "" } else { "s" },
        settings
            .modes
            .iter()
            .map(|m| m.key())
            .collect::<Vec<_>>()
            .join(" "),
        context.load_before,
        context.load_after,
    );
    let _ = writeln!(
        out,
        "{}",
        match settings.route {
            Route::Service =>
                "The production path: every webhook registered by Service (mesh-admission as \
                 `webhook-config` prints it, istiod as its chart does), called by the apiserver over \
                 HTTP/1.1 with a keep-alive pool per mode (a Service port each), the processes on a \
                 non-loopback address behind EndpointSlices (`--enable-aggregator-routing=true`).",
            Route::Loopback =>
                "Registered by `https://127.0.0.1:PORT` URLs, which the apiserver calls over one \
                 HTTP/2 connection each (not the production path).",
        }
    );
    if let Some((with, all)) = context.conditions {
        let _ = writeln!(
            out,
            "mesh-admission's configuration: {with} of its {all} webhooks have matchConditions."
        );
    }
    out.push_str(
        "Webhook CPU is the null webhook's in (b) and (b'), mesh-admission's in (c) and (i+c), \
         istiod's in (i); istiod's in (i+c) has a column of its own.\n",
    );
    out.push('\n');
    out.push_str(
        "| mode | pods/s | p50 ms | p99 ms | webhook CPU µs/pod | istiod CPU µs/pod (i+c) | \
         apiserver CPU µs/pod | webhook calls/pod | ms per call (apiserver's view) |\n",
    );
    out.push_str("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n");
    for &mode in &settings.modes {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            mode.label(),
            opt(throughput.get(&mode).copied(), 0),
            opt(p50.get(&mode).copied(), 1),
            opt(p99.get(&mode).copied(), 1),
            opt(webhook_cpu.get(&mode).copied(), 0),
            opt(istiod_cpu.get(&mode).copied(), 0),
            opt(apiserver_cpu.get(&mode).copied(), 0),
            opt(calls.get(&mode).copied(), 2),
            opt(call_ms.get(&mode).copied(), 2),
        );
    }
    out.push('\n');
    let c_bp_throughput = ratio(&throughput, Mode::MeshAdmission, Mode::NullPatch);
    let c_bp_p99 = ratio(&p99, Mode::MeshAdmission, Mode::NullPatch);
    let c_a_throughput = ratio(&throughput, Mode::MeshAdmission, Mode::NoWebhook);
    let _ = writeln!(
        out,
        "- (c)/(b') throughput: {} (target ≥ 0.95)",
        opt(c_bp_throughput, 2)
    );
    let _ = writeln!(
        out,
        "- (c)/(b') p99 latency: {} (lower is better; (b')/(c) = {}, target ≥ 0.95)",
        opt(c_bp_p99, 2),
        opt(c_bp_p99.filter(|r| *r > 0.0).map(|r| 1.0 / r), 2)
    );
    let _ = writeln!(
        out,
        "- (c)/(a) throughput: {} (target ≥ 0.70)",
        opt(c_a_throughput, 2)
    );
    if throughput.contains_key(&Mode::IstiodMeshAdmission) {
        let _ = writeln!(
            out,
            "- (i+c)/(i) throughput: {} (target ≥ 0.95); p99: {} (lower is better; (i)/(i+c) = {}, \
             target ≥ 0.95)",
            opt(
                ratio(&throughput, Mode::IstiodMeshAdmission, Mode::Istiod),
                2
            ),
            opt(ratio(&p99, Mode::IstiodMeshAdmission, Mode::Istiod), 2),
            opt(ratio(&p99, Mode::Istiod, Mode::IstiodMeshAdmission), 2)
        );
        let ours = webhook_cpu.get(&Mode::IstiodMeshAdmission);
        let theirs = istiod_cpu.get(&Mode::IstiodMeshAdmission);
        let _ = writeln!(
            out,
            "- (i+c): mesh-admission's CPU per pod is {} % of istiod's (target ≤ 5 %)",
            opt(
                ours.zip(theirs)
                    .filter(|(_, t)| **t > 0.0)
                    .map(|(o, t)| 100.0 * o / t),
                1
            )
        );
    }
    if throughput.contains_key(&Mode::Policy) {
        let _ = writeln!(
            out,
            "- (c)/(p) throughput: {} (target ≥ 1.3); p99: {}",
            opt(ratio(&throughput, Mode::MeshAdmission, Mode::Policy), 2),
            opt(ratio(&p99, Mode::MeshAdmission, Mode::Policy), 2)
        );
    }
    match context.same_pod_policy {
        Some(true) => out.push_str(
            "- (p) and (c) store the same pod (labels, annotations, spec of a server-side dry run).\n",
        ),
        Some(false) => out.push_str("- **(p) and (c) store different pods.**\n"),
        None => {}
    }
    if throughput.contains_key(&Mode::Baseline) {
        let _ = writeln!(
            out,
            "- (c)/(c0) throughput: {}, p99: {} (this build against the baseline build)",
            opt(ratio(&throughput, Mode::MeshAdmission, Mode::Baseline), 3),
            opt(ratio(&p99, Mode::MeshAdmission, Mode::Baseline), 3)
        );
    }
    if let (Some(review), Some(call)) = (
        review_ms.get(&Mode::MeshAdmission),
        call_ms.get(&Mode::MeshAdmission),
    ) {
        let _ = writeln!(
            out,
            "- (c): mesh-admission timed {review:.3} ms per review (body received to reply \
             encoded); the apiserver timed {call:.2} ms per call to it."
        );
    }
    match context.same_pod {
        Some(true) => out.push_str(
            "- (b') and (c) store the same pod (labels, annotations, spec of a server-side dry run).\n",
        ),
        Some(false) => out.push_str("- **(b') and (c) store different pods: (b') is no baseline.**\n"),
        None => {}
    }
    out.push_str("\nEvery round:\n\n");
    out.push_str(
        "| round | mode | pods/s | p50 ms | p99 ms | max ms | webhook CPU µs/pod | istiod CPU µs/pod \
         | apiserver CPU µs/pod | etcd CPU µs/pod | failed |\n",
    );
    out.push_str("| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n");
    for s in samples {
        let _ = writeln!(
            out,
            "| {} | {} | {:.0} | {:.1} | {:.1} | {:.1} | {} | {} | {:.0} | {:.0} | {} |",
            s.round,
            s.mode.label(),
            s.pods_per_s,
            s.p50_ms,
            s.p99_ms,
            s.max_ms,
            opt(s.webhook_cpu_us, 0),
            opt(s.istiod_cpu_us, 0),
            s.apiserver_cpu_us,
            s.etcd_cpu_us,
            s.failed
        );
    }
    out
}
