//! Rollouts (DESIGN.md section 11): the webhook registered by Service with `failurePolicy: Fail`, as
//! the chart installs it, two replicas behind EndpointSlices, replaced one by one as a Deployment
//! rollout does (the new replica ready and added, then the old one's endpoint removed and SIGTERM sent
//! at the same moment) while pods are being created. The apiserver calls a Service's endpoints over
//! HTTP/1.1 with a pool of keep-alive connections: the production path.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use testkit::load::PodCreations;
use testkit::pod_traffic::PodTraffic;
use testkit::rollout::Replicas;
use testkit::{ControlPlane, runtime};

const NAMESPACE: &str = "demo";
const ROLLOUTS: usize = 3;
/// Pods created between two steps of a rollout, so that each step happens under traffic.
const PODS_PER_STEP: u64 = 40;
const LOAD_IN_FLIGHT: usize = 4;
/// Bounds of the pod traffic: pods and time.
const LOAD_LIMITS: (u64, Duration) = (20_000, Duration::from_secs(300));
/// How long the pod traffic may take for the pods a step waits for.
const LOAD_STEP: Duration = Duration::from_secs(60);
/// The failure of a pod stored without the mutation.
const UNMUTATED: &str = "stored_unmutated";

/// Whether a stored pod went through the webhook: the SPIRE label and the CSI volume.
fn mutated(pod: &Value) -> bool {
    let csi =
        json!({"name": "workload-socket", "csi": {"driver": "csi.spiffe.io", "readOnly": true}});
    pod["metadata"]["labels"]["spire-managed-identity"] == "true"
        && pod["spec"]["volumes"]
            .as_array()
            .is_some_and(|volumes| volumes.contains(&csi))
}

/// Pods created in [`NAMESPACE`] in the background, [`LOAD_IN_FLIGHT`] at a time over one HTTP/2
/// connection to the apiserver; a stored pod without the mutation fails as [`UNMUTATED`].
fn pod_traffic(runtime: &tokio::runtime::Runtime, cp: &ControlPlane) -> PodTraffic {
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"generateName": "load-"},
        "spec": {"containers": [{"name": "app", "image": "example/app:1"}]}
    });
    let pods = PodCreations::new(pod.to_string().into_bytes())
        .unwrap()
        .checked(UNMUTATED, mutated);
    PodTraffic::start(runtime, cp, NAMESPACE, pods, LOAD_IN_FLIGHT, LOAD_LIMITS)
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
    let load = pod_traffic(&runtime, &cp);
    load.wait_for_more(PODS_PER_STEP, LOAD_STEP);

    // Two replicas, as the chart runs them; each rollout replaces both, one at a time. The apiserver
    // picks an endpoint only when it opens a connection, so a replica may hold none of its pool: the
    // one replaced is one the apiserver is connected to and has called (the older one when both are).
    let mut replaced = 0;
    for rollout in 1..=ROLLOUTS {
        for _ in 0..2 {
            let new = replicas.start(&(running.len() + replaced).to_string());
            replicas.publish(&cp, &new);
            load.wait_for_more(PODS_PER_STEP, LOAD_STEP);
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
                load.wait_for_more(1, LOAD_STEP);
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
    load.wait_for_more(PODS_PER_STEP, LOAD_STEP);
    let stats = load.finish(&runtime).stats;
    let unmutated = stats.failures.get(UNMUTATED).copied().unwrap_or(0);
    let failed = stats.failed() - unmutated + stats.unreached();
    eprintln!(
        "e2e_rollout: {} pods created over {ROLLOUTS} rollouts, {failed} failed, {unmutated} unmutated",
        stats.ok
    );
    assert_eq!(
        failed, 0,
        "failed creations: {:?}, {:?}; {:?}",
        stats.failures, stats.not_reached, stats.samples
    );
    assert_eq!(
        unmutated,
        0,
        "pods stored unmutated: {:?}",
        stats.samples.get(UNMUTATED)
    );
    for replica in running {
        let name = replica.name.clone();
        assert_eq!(replica.terminate().code(), Some(0), "replica {name}");
    }
}
