//! Rollouts (DESIGN.md section 11): the webhook registered by Service with `failurePolicy: Fail`, as
//! the chart installs it, two replicas behind EndpointSlices, replaced one by one as a Deployment
//! rollout does (the new replica ready and added, then the old one's endpoint removed and SIGTERM sent
//! at the same moment) while pods are being created. The apiserver calls a Service's endpoints over
//! HTTP/1.1 with a pool of keep-alive connections: the production path.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use testkit::rollout::Replicas;
use testkit::{ApiClient, ControlPlane, runtime};

const NAMESPACE: &str = "demo";
const ROLLOUTS: usize = 3;
/// Pods created between two steps of a rollout, so that each step happens under traffic.
const PODS_PER_STEP: usize = 40;
const LOAD_WORKERS: usize = 4;
/// Bounds of each load worker: pods and time.
const LOAD_MAX_PODS: usize = 5_000;
const LOAD_MAX_TIME: Duration = Duration::from_secs(300);

fn load_pod(name: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"containers": [{"name": "app", "image": "example/app:1"}]}
    })
}

/// Whether a stored pod went through the webhook: the SPIRE label and the CSI volume.
fn mutated(pod: &Value) -> bool {
    let csi =
        json!({"name": "workload-socket", "csi": {"driver": "csi.spiffe.io", "readOnly": true}});
    pod["metadata"]["labels"]["spire-managed-identity"] == "true"
        && pod["spec"]["volumes"]
            .as_array()
            .is_some_and(|volumes| volumes.contains(&csi))
}

/// Pods being created in [`NAMESPACE`] by [`LOAD_WORKERS`] tasks over one HTTP/2 connection to the
/// apiserver, each stored pod checked, until [`Load::finish`].
struct Load {
    created: Arc<AtomicUsize>,
    failures: Arc<Mutex<Vec<String>>>,
    unmutated: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    workers: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(runtime: &tokio::runtime::Runtime, api: Arc<ApiClient>) -> Load {
        let created = Arc::new(AtomicUsize::new(0));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let unmutated = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let workers = (0..LOAD_WORKERS)
            .map(|worker| {
                let (api, created, failures, unmutated, stop) = (
                    api.clone(),
                    created.clone(),
                    failures.clone(),
                    unmutated.clone(),
                    stop.clone(),
                );
                runtime.spawn(async move {
                    let started = Instant::now();
                    let path = format!("/api/v1/namespaces/{NAMESPACE}/pods");
                    for i in 0..LOAD_MAX_PODS {
                        if stop.load(Ordering::Relaxed) || started.elapsed() > LOAD_MAX_TIME {
                            break;
                        }
                        let name = format!("load-{worker}-{i}");
                        match api.post(&path, &load_pod(&name)).await {
                            Ok((201, pod)) => {
                                created.fetch_add(1, Ordering::Relaxed);
                                if !mutated(&pod) {
                                    unmutated.lock().unwrap().push(name);
                                }
                            }
                            Ok((status, answer)) => failures
                                .lock()
                                .unwrap()
                                .push(format!("{name}: {status} {}", answer["message"])),
                            Err(error) => failures.lock().unwrap().push(error),
                        }
                    }
                })
            })
            .collect();
        Load {
            created,
            failures,
            unmutated,
            stop,
            workers,
        }
    }

    fn created(&self) -> usize {
        self.created.load(Ordering::Relaxed)
    }

    /// Waits until `more` pods were created after this call (at most 60 s).
    fn wait_for_more(&self, more: usize) {
        let target = self.created() + more;
        let started = Instant::now();
        while self.created() < target {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "only {} of {target} pods created; failures: {:?}",
                self.created(),
                self.failures.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the workers; returns how many pods they created, the failed creations and the pods
    /// stored without the mutation.
    fn finish(self, runtime: &tokio::runtime::Runtime) -> (usize, Vec<String>, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        for worker in self.workers {
            runtime.block_on(worker).unwrap();
        }
        let failures = self.failures.lock().unwrap().clone();
        let unmutated = self.unmutated.lock().unwrap().clone();
        (self.created.load(Ordering::Relaxed), failures, unmutated)
    }
}

/// Polls with server-side dry runs until the apiserver sends namespaces to the webhook (the label
/// appears), at most 30 s.
fn wait_until_called(cp: &ControlPlane) {
    let started = Instant::now();
    loop {
        let output = cp.kubectl([
            "create",
            "namespace",
            "probe",
            "--dry-run=server",
            "-o",
            "json",
        ]);
        let labelled = output.status.success()
            && serde_json::from_slice::<Value>(&output.stdout)
                .is_ok_and(|ns| ns["metadata"]["labels"]["istio-injection"] == "enabled");
        if labelled {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the apiserver does not call the webhook by Service\n{}",
            cp.report(&output)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn replacing_replicas_one_by_one_fails_no_pod_creation() {
    let cp = ControlPlane::start_with_apiserver_args(&["--enable-aggregator-routing=true"]);
    let replicas = Replicas::install(&cp);
    let mut running = vec![replicas.start("0"), replicas.start("1")];
    for replica in &running {
        replicas.publish(&cp, replica);
    }
    replicas.register(&cp, "Fail");
    wait_until_called(&cp);
    cp.kubectl_ok(["create", "namespace", NAMESPACE]);

    let runtime = runtime();
    let api = Arc::new(runtime.block_on(ApiClient::connect(&cp)));
    let load = Load::start(&runtime, api);
    load.wait_for_more(PODS_PER_STEP);

    // Two replicas, as the chart runs them; each rollout replaces both, one at a time. The apiserver
    // picks an endpoint only when it opens a connection, so a replica may hold none of its pool: the
    // one replaced is one the apiserver is connected to and has called (the older one when both are).
    let mut replaced = 0;
    for rollout in 1..=ROLLOUTS {
        for _ in 0..2 {
            let new = replicas.start(&(running.len() + replaced).to_string());
            replicas.publish(&cp, &new);
            load.wait_for_more(PODS_PER_STEP);
            let started = Instant::now();
            let serving = loop {
                let serving = running
                    .iter()
                    .position(|r| r.connections() > 0 && r.reviews() > 0.0);
                if let Some(index) = serving {
                    break index;
                }
                assert!(
                    started.elapsed() < Duration::from_secs(10),
                    "rollout {rollout}: the apiserver holds no connection to an old replica"
                );
                load.wait_for_more(1);
            };
            let old = running.remove(serving);
            let (name, reviews, connections) = (old.name.clone(), old.reviews(), old.connections());
            let status = replicas.retire(&cp, old);
            eprintln!(
                "e2e_rollout: rollout {rollout}: replica {name} signalled after {reviews} reviews \
                 with {connections} connections open, exited with {status}"
            );
            assert_eq!(status.code(), Some(0), "replica {name}");
            running.push(new);
            replaced += 1;
        }
    }
    load.wait_for_more(PODS_PER_STEP);
    let (created, failures, unmutated) = load.finish(&runtime);
    eprintln!(
        "e2e_rollout: {created} pods created over {ROLLOUTS} rollouts, {} failed, {} unmutated",
        failures.len(),
        unmutated.len()
    );
    assert!(failures.is_empty(), "failed creations: {failures:#?}");
    assert!(unmutated.is_empty(), "pods stored unmutated: {unmutated:?}");
    for replica in running {
        let name = replica.name.clone();
        assert_eq!(replica.terminate().code(), Some(0), "replica {name}");
    }
}
