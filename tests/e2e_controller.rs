//! End-to-end tests of `mesh-admission controller` (DESIGN.md section 9, "Controller behaviour";
//! issue 17) against the real kube-apiserver: the controller runs as a child process with the test
//! control plane's kubeconfig; everything is driven and checked through the API with `kubectl`.
//! Each test starts its own control plane and controller(s), killed by PID on drop.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use testkit::controller::{Controller, ControllerOptions, apiserver_requests};
use testkit::{ControlPlane, mesh_admission_stdin, shared_crds};

/// Drift must be undone within this (DESIGN.md section 9).
const RESTORE: Duration = Duration::from_secs(10);
/// How long a first reconcile may take in these small clusters.
const APPEAR: Duration = Duration::from_secs(20);
/// Another replica takes over within this of the leader's death.
const TAKEOVER: Duration = Duration::from_secs(20);

const HR: &str = "helmrelease.helm.toolkit.fluxcd.io";
const VS: &str = "virtualservice.networking.istio.io";
const PA: &str = "peerauthentication.security.istio.io";
const NP: &str = "networkpolicy.networking.k8s.io";

fn control_plane() -> ControlPlane {
    let cp = ControlPlane::start();
    cp.apply_crds(&shared_crds());
    cp
}

fn apply(cp: &ControlPlane, manifest: &str) {
    cp.kubectl_stdin_ok(["apply", "-f", "-"], manifest);
}

/// The object, or `None` when it does not exist.
fn get(cp: &ControlPlane, kind: &str, namespace: &str, name: &str) -> Option<Value> {
    let out = cp.kubectl_ok([
        "get",
        kind,
        "-n",
        namespace,
        name,
        "--ignore-not-found",
        "--show-managed-fields",
        "-o",
        "json",
    ]);
    (!out.trim().is_empty()).then(|| serde_json::from_str(&out).unwrap())
}

/// Polls `check` every 200 ms (each check runs kubectl) until it gives a value; fails the test after
/// `timeout`.
fn wait_for<T>(timeout: Duration, what: &str, check: impl FnMut() -> Option<T>) -> T {
    testkit::wait_for(what, timeout, Duration::from_millis(200), check)
}

fn namespace(name: &str) -> String {
    format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {name}\n")
}

fn helm_release(namespace: &str, name: &str, annotations: &[(&str, &str)]) -> String {
    let annotations: BTreeMap<String, &str> = annotations
        .iter()
        .map(|(k, v)| (format!("servicemesh.bigbang.dev/{k}"), *v))
        .collect();
    json!({
        "apiVersion": "helm.toolkit.fluxcd.io/v2",
        "kind": "HelmRelease",
        "metadata": {"name": name, "namespace": namespace, "annotations": annotations},
        "spec": {"interval": "10m", "chart": {"spec": {"chart": name,
            "sourceRef": {"kind": "HelmRepository", "name": "charts"}}}},
    })
    .to_string()
}

fn service(namespace: &str, name: &str, port: u16, target_port: u16) -> String {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"selector": {"app": name},
                 "ports": [{"name": "http", "port": port, "targetPort": target_port}]},
    })
    .to_string()
}

/// A Service `name` on port 80 and the HelmRelease that exposes it as host `name` on that port.
fn expose(cp: &ControlPlane, namespace: &str, name: &str) {
    apply(cp, &service(namespace, name, 80, 8080));
    apply(
        cp,
        &helm_release(
            namespace,
            name,
            &[("expose", name), ("host", name), ("port", "80")],
        ),
    );
}

/// What `mesh-admission render` prints for the cluster's inputs now (`kubectl get` of every kind it
/// reads, fed to it as one List).
fn render_cluster(cp: &ControlPlane) -> Vec<Value> {
    let list = cp.render_inputs();
    let output = mesh_admission_stdin(&["render", "-o", "json", "-f", "-"], &list);
    let rendered: Value = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "render printed no JSON ({e}): {}",
            String::from_utf8_lossy(&output.stderr)
        )
    });
    rendered["items"].as_array().cloned().unwrap_or_default()
}

/// `kind` for kubectl: the plural resource with its group.
fn resource(object: &Value) -> String {
    let group = object["apiVersion"]
        .as_str()
        .and_then(|v| v.rsplit_once('/'))
        .map_or("", |(g, _)| g);
    let kind = object["kind"].as_str().unwrap().to_lowercase();
    if group.is_empty() {
        kind
    } else {
        format!("{kind}.{group}")
    }
}

/// Whether the live object carries everything the rendered one says (labels, annotations, spec).
fn matches(live: &Value, rendered: &Value) -> bool {
    let meta = |v: &Value, f: &str| v["metadata"][f].clone();
    subset(&meta(live, "labels"), &meta(rendered, "labels"))
        && subset(&meta(live, "annotations"), &meta(rendered, "annotations"))
        && live["spec"] == rendered["spec"]
}

fn subset(live: &Value, wanted: &Value) -> bool {
    wanted
        .as_object()
        .is_none_or(|w| w.iter().all(|(k, v)| live.get(k) == Some(v)))
}

/// Every object `render` gives for the cluster exists with that content.
fn assert_cluster_matches_render(cp: &ControlPlane, within: Duration) -> Vec<Value> {
    wait_for(within, "every rendered object in the cluster", || {
        let rendered = render_cluster(cp);
        let all = rendered.iter().all(|object| {
            let meta = &object["metadata"];
            get(
                cp,
                &resource(object),
                meta["namespace"].as_str().unwrap(),
                meta["name"].as_str().unwrap(),
            )
            .is_some_and(|live| matches(&live, object))
        });
        all.then_some(rendered)
    })
}

/// Our objects of `kind` in `namespace` (by the managed-by label).
fn ours(cp: &ControlPlane, kind: &str, namespace: &str) -> Vec<Value> {
    let list = cp.get_json([
        kind,
        "-n",
        namespace,
        "-l",
        "app.kubernetes.io/managed-by=mesh-admission",
    ]);
    list["items"].as_array().cloned().unwrap_or_default()
}

/// The Events about `name` in `namespace` with `reason`.
fn events(cp: &ControlPlane, namespace: &str, name: &str, reason: &str) -> Vec<Value> {
    let list = cp.get_json([
        "events",
        "-n",
        namespace,
        "--field-selector",
        &format!("involvedObject.name={name},reason={reason}"),
    ]);
    list["items"].as_array().cloned().unwrap_or_default()
}

fn resource_version(object: &Value) -> String {
    object["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[test]
fn objects_follow_helm_releases_and_drift_is_undone() {
    let cp = control_plane();
    let controller = Controller::start(&cp);
    apply(&cp, &namespace("shop"));
    expose(&cp, "shop", "web");

    // Created: exactly what `render` gives for the same objects.
    let rendered = assert_cluster_matches_render(&cp, APPEAR);
    let names: Vec<String> = rendered
        .iter()
        .map(|o| {
            format!(
                "{} {}/{}",
                o["kind"].as_str().unwrap(),
                o["metadata"]["namespace"].as_str().unwrap(),
                o["metadata"]["name"].as_str().unwrap()
            )
        })
        .collect();
    for expected in [
        "VirtualService shop/web-ingress",
        "NetworkPolicy shop/web-ingress-public",
        "PeerAuthentication shop/default",
        "NetworkPolicy shop/allow-egress-istiod",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} not rendered: {names:?}"
        );
    }
    let vs = get(&cp, VS, "shop", "web-ingress").unwrap();
    assert_eq!(vs["spec"]["hosts"], json!(["web.bigbang.dev"]));
    assert_eq!(
        vs["metadata"]["managedFields"][0]["manager"], "mesh-admission",
        "written by server-side apply with our field manager"
    );
    let pa = get(&cp, PA, "shop", "default").unwrap();
    assert_eq!(pa["spec"]["mtls"]["mode"], "STRICT");
    wait_for(RESTORE, "a MeshApplied Event on the HelmRelease", || {
        (!events(&cp, "shop", "web", "MeshApplied").is_empty()).then_some(())
    });

    // Annotations edited: the objects change.
    apply(
        &cp,
        &helm_release(
            "shop",
            "web",
            &[
                ("expose", "web"),
                ("host", "shop"),
                ("port", "80"),
                ("mtlsMode", "PERMISSIVE"),
            ],
        ),
    );
    wait_for(RESTORE, "the VirtualService follows the new host", || {
        (get(&cp, VS, "shop", "web-ingress")?["spec"]["hosts"] == json!(["shop.bigbang.dev"]))
            .then_some(())
    });
    wait_for(RESTORE, "the PeerAuthentication follows mtlsMode", || {
        (get(&cp, PA, "shop", "default")?["spec"]["mtls"]["mode"] == "PERMISSIVE").then_some(())
    });
    assert_cluster_matches_render(&cp, RESTORE);

    // Drift: deleted by hand → back; edited by hand → back.
    cp.kubectl_ok(["delete", VS, "-n", "shop", "web-ingress"]);
    let deleted = Instant::now();
    wait_for(RESTORE, "the deleted VirtualService restored", || {
        get(&cp, VS, "shop", "web-ingress")
    });
    eprintln!(
        "e2e: deleted VirtualService restored in {:.1?}",
        deleted.elapsed()
    );
    cp.kubectl_ok([
        "patch",
        PA,
        "-n",
        "shop",
        "default",
        "--type=merge",
        "-p",
        r#"{"spec":{"mtls":{"mode":"DISABLE"}}}"#,
    ]);
    let edited = Instant::now();
    wait_for(RESTORE, "the edited PeerAuthentication restored", || {
        (get(&cp, PA, "shop", "default")?["spec"]["mtls"]["mode"] == "PERMISSIVE").then_some(())
    });
    eprintln!(
        "e2e: edited PeerAuthentication restored in {:.1?}",
        edited.elapsed()
    );
    cp.kubectl_ok([
        "patch",
        NP,
        "-n",
        "shop",
        "web-ingress-public",
        "--type=merge",
        "-p",
        r#"{"spec":{"podSelector":{"matchLabels":{"app":"other"}}}}"#,
    ]);
    wait_for(RESTORE, "the edited NetworkPolicy restored", || {
        (get(&cp, NP, "shop", "web-ingress-public")?["spec"]["podSelector"]["matchLabels"]
            == json!({"app": "web"}))
        .then_some(())
    });

    // An annotation removed: the route's objects go, the namespace's PeerAuthentication stays.
    apply(
        &cp,
        &helm_release("shop", "web", &[("mtlsMode", "PERMISSIVE")]),
    );
    wait_for(
        RESTORE,
        "the VirtualService and its NetworkPolicy deleted",
        || {
            (get(&cp, VS, "shop", "web-ingress").is_none()
                && get(&cp, NP, "shop", "web-ingress-public").is_none())
            .then_some(())
        },
    );
    assert!(get(&cp, PA, "shop", "default").is_some());

    // The HelmRelease deleted: nothing of it is left.
    cp.kubectl_ok(["delete", HR, "-n", "shop", "web"]);
    wait_for(RESTORE, "the PeerAuthentication deleted", || {
        get(&cp, PA, "shop", "default").is_none().then_some(())
    });
    assert!(ours(&cp, VS, "shop").is_empty());
    assert!(ours(&cp, PA, "shop").is_empty());
    let left: Vec<String> = ours(&cp, NP, "shop")
        .iter()
        .map(|o| o["metadata"]["name"].as_str().unwrap().to_owned())
        .collect();
    // The namespace's own egress policy stays: the namespace is still meshed.
    assert_eq!(left, ["allow-egress-istiod"]);
    assert!(
        controller
            .metric("mesh_admission_controller_objects_deleted_total{kind=\"VirtualService\"}")
            >= 1.0
    );
}

#[test]
fn objects_of_others_are_never_overwritten() {
    let cp = control_plane();
    let _controller = Controller::start(&cp);
    apply(&cp, &namespace("shop"));
    apply(&cp, &namespace("pay"));
    apply(&cp, &service("shop", "web", 80, 8080));

    // A hand-written VirtualService where ours would go: untouched, and a Warning on the owner.
    let hand_vs = json!({
        "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
        "metadata": {"name": "web-ingress", "namespace": "shop"},
        "spec": {"hosts": ["hand.example.com"], "http": [{"route": [{"destination": {"host": "x"}}]}]},
    });
    apply(&cp, &hand_vs.to_string());
    let before = get(&cp, VS, "shop", "web-ingress").unwrap();
    apply(
        &cp,
        &helm_release(
            "shop",
            "web",
            &[("expose", "web"), ("host", "web"), ("port", "80")],
        ),
    );
    let warning = wait_for(APPEAR, "a MeshConflict Event on the HelmRelease", || {
        events(&cp, "shop", "web", "MeshConflict").pop()
    });
    assert_eq!(warning["type"], "Warning");
    assert!(
        warning["message"]
            .as_str()
            .unwrap()
            .contains("VirtualService shop/web-ingress exists without the label"),
        "{warning}"
    );
    // The rest of the HelmRelease's objects are still generated.
    wait_for(APPEAR, "the NetworkPolicy still generated", || {
        get(&cp, NP, "shop", "web-ingress-public")
    });

    // A hand-written namespace-wide PeerAuthentication: ours is not created, and a Warning says so.
    let hand_pa = json!({
        "apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
        "metadata": {"name": "mesh-wide", "namespace": "pay"},
        "spec": {"mtls": {"mode": "PERMISSIVE"}},
    });
    apply(&cp, &hand_pa.to_string());
    apply(&cp, &helm_release("pay", "api", &[("mtlsMode", "STRICT")]));
    let warning = wait_for(APPEAR, "a Warning on the namespace", || {
        events(&cp, "default", "pay", "MeshConflict").pop()
    });
    assert!(
        warning["message"]
            .as_str()
            .unwrap()
            .contains("PeerAuthentication pay/mesh-wide is namespace-wide"),
        "{warning}"
    );

    // Two HelmReleases with different mtlsMode for one namespace: Events, nothing flips.
    apply(&cp, &namespace("bank"));
    apply(&cp, &helm_release("bank", "a", &[("mtlsMode", "STRICT")]));
    let pa = wait_for(APPEAR, "bank/default", || get(&cp, PA, "bank", "default"));
    apply(
        &cp,
        &helm_release("bank", "b", &[("mtlsMode", "PERMISSIVE")]),
    );
    for release in ["a", "b"] {
        let warning = wait_for(APPEAR, "MeshConflict on each HelmRelease", || {
            events(&cp, "bank", release, "MeshConflict").pop()
        });
        assert!(
            warning["message"].as_str().unwrap().contains("disagrees"),
            "{warning}"
        );
    }
    // Several reconciles' worth of time: the PeerAuthentication is neither rewritten nor deleted,
    // and each conflict was reported once.
    std::thread::sleep(Duration::from_secs(5));
    let after = get(&cp, PA, "bank", "default").expect("the PeerAuthentication was deleted");
    assert_eq!(
        resource_version(&after),
        resource_version(&pa),
        "it was rewritten"
    );
    assert_eq!(after["spec"]["mtls"]["mode"], "STRICT");
    for release in ["a", "b"] {
        assert_eq!(events(&cp, "bank", release, "MeshConflict").len(), 1);
    }

    // Nothing of ours ever touched the hand-written objects.
    let vs_after = get(&cp, VS, "shop", "web-ingress").unwrap();
    assert_eq!(resource_version(&vs_after), resource_version(&before));
    assert!(get(&cp, PA, "pay", "default").is_none());
    assert_eq!(
        get(&cp, PA, "pay", "mesh-wide").unwrap()["spec"]["mtls"]["mode"],
        "PERMISSIVE"
    );
}

#[test]
fn istio_objects_appear_once_the_crds_are_installed() {
    let cp = ControlPlane::start();
    // Flux only: no Istio yet.
    let helm = shared_crds().join("helm.toolkit.fluxcd.io_helmreleases.yaml");
    cp.kubectl_ok([
        "apply".as_ref(),
        "--server-side".as_ref(),
        "-f".as_ref(),
        helm.as_os_str(),
    ]);
    cp.kubectl_ok([
        "wait".as_ref(),
        "--for=condition=established".as_ref(),
        "--timeout=60s".as_ref(),
        "-f".as_ref(),
        helm.as_os_str(),
    ]);
    let controller = Controller::start(&cp);
    apply(&cp, &namespace("shop"));
    expose(&cp, "shop", "web");
    // NetworkPolicies are managed without Istio.
    wait_for(APPEAR, "the NetworkPolicy without Istio", || {
        get(&cp, NP, "shop", "web-ingress-public")
    });
    assert!(controller.ready(), "ready without the optional Istio CRDs");

    cp.apply_crds(&shared_crds());
    let installed = Instant::now();
    wait_for(
        Duration::from_secs(40),
        "the Istio objects after the CRDs",
        || {
            (get(&cp, VS, "shop", "web-ingress").is_some()
                && get(&cp, PA, "shop", "default").is_some())
            .then_some(())
        },
    );
    eprintln!(
        "e2e: Istio objects appeared {:.1?} after the CRDs",
        installed.elapsed()
    );
    assert_cluster_matches_render(&cp, RESTORE);
}

/// The holder of the Lease, if any.
fn lease_holder(cp: &ControlPlane) -> Option<String> {
    let lease = get(cp, "lease", "default", "mesh-admission-controller")?;
    lease["spec"]["holderIdentity"]
        .as_str()
        .filter(|h| !h.is_empty())
        .map(str::to_owned)
}

fn applied_total(controller: &Controller) -> f64 {
    testkit::metrics::sum(
        &controller.metrics(),
        "mesh_admission_controller_objects_applied_total",
    )
}

#[test]
fn one_leader_writes_and_another_takes_over_when_it_dies() {
    let cp = control_plane();
    let start = |identity: &str| {
        Controller::start_with(
            &cp,
            &ControllerOptions {
                identity: identity.into(),
                ..ControllerOptions::default()
            },
        )
    };
    let first = start("replica-a");
    let second = start("replica-b");
    let holder = wait_for(APPEAR, "a Lease holder", || lease_holder(&cp));
    let (mut leader, follower) = if holder == first.identity {
        (first, second)
    } else {
        (second, first)
    };
    wait_for(APPEAR, "the leader says so", || {
        leader.is_leader().then_some(())
    });
    assert!(!follower.is_leader(), "two leaders");

    apply(&cp, &namespace("shop"));
    for n in 0..3 {
        expose(&cp, "shop", &format!("web{n}"));
    }
    let rendered = assert_cluster_matches_render(&cp, APPEAR);
    // Only the leader wrote.
    assert_eq!(applied_total(&follower), 0.0);
    let leader_applied = applied_total(&leader);
    assert_eq!(
        leader_applied,
        rendered.len() as f64,
        "each object written once"
    );

    // The leader dies without releasing the Lease.
    leader.kill();
    let died = Instant::now();
    wait_for(TAKEOVER, "the other replica takes over", || {
        (lease_holder(&cp).as_deref() == Some(follower.identity.as_str()) && follower.is_leader())
            .then_some(())
    });
    eprintln!(
        "e2e: takeover {:.1?} after the leader's death",
        died.elapsed()
    );
    // Nothing lost, nothing written again by the new leader.
    assert_cluster_matches_render(&cp, RESTORE);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        applied_total(&follower),
        0.0,
        "the new leader rewrote objects"
    );

    // The new leader does the work.
    expose(&cp, "shop", "web9");
    wait_for(RESTORE, "the new leader's VirtualService", || {
        get(&cp, VS, "shop", "web9-ingress")
    });

    // SIGTERM releases the Lease.
    let mut follower = follower;
    let status = follower
        .terminate()
        .expect("the controller did not exit on SIGTERM");
    assert!(status.success(), "exit status {status}");
    assert_eq!(lease_holder(&cp), None, "the Lease was not released");
}

/// The apiserver's write requests by `VERB resource`, leaving out Leases (leader election renews
/// its Lease, and the apiserver its own).
fn writes(cp: &ControlPlane) -> BTreeMap<String, f64> {
    const WRITE_VERBS: [&str; 7] = [
        "POST", "PUT", "PATCH", "DELETE", "APPLY", "CREATE", "UPDATE",
    ];
    apiserver_requests(cp)
        .into_iter()
        .filter(|(series, _)| {
            series
                .split_once(' ')
                .is_some_and(|(verb, resource)| WRITE_VERBS.contains(&verb) && resource != "leases")
        })
        .collect()
}

#[test]
fn steady_state_writes_nothing() {
    let cp = control_plane();
    let controller = Controller::start_with(
        &cp,
        &ControllerOptions {
            // A resync inside the window: it must not write either.
            args: vec!["--resync".into(), "15s".into()],
            ..ControllerOptions::default()
        },
    );
    apply(&cp, &namespace("shop"));
    apply(&cp, &namespace("bank"));
    for n in 0..3 {
        expose(&cp, "shop", &format!("web{n}"));
    }
    // Problems too: their Events must not repeat.
    apply(&cp, &helm_release("bank", "a", &[("mtlsMode", "STRICT")]));
    apply(
        &cp,
        &helm_release("bank", "b", &[("mtlsMode", "PERMISSIVE")]),
    );
    assert_cluster_matches_render(&cp, APPEAR);
    wait_for(APPEAR, "the conflict reported", || {
        events(&cp, "bank", "b", "MeshConflict").pop()
    });
    std::thread::sleep(Duration::from_secs(3));

    let before = writes(&cp);
    // The counters do see the controller's writes (else the comparison below would prove nothing).
    for series in [
        "APPLY virtualservices",
        "APPLY peerauthentications",
        "POST events",
    ] {
        assert!(
            before.get(series).is_some_and(|n| *n > 0.0),
            "no {series} counted: {before:?}"
        );
    }
    let reconciles_before =
        controller.metric("mesh_admission_controller_reconciles_total{result=\"ok\"}");
    std::thread::sleep(Duration::from_secs(60));
    let after = writes(&cp);
    let reconciles_after =
        controller.metric("mesh_admission_controller_reconciles_total{result=\"ok\"}");
    let grown: BTreeMap<&String, f64> = after
        .iter()
        .map(|(k, v)| (k, v - before.get(k).copied().unwrap_or(0.0)))
        .filter(|(_, d)| *d > 0.0)
        .collect();
    assert!(
        grown.is_empty(),
        "write requests in 60 s of steady state: {grown:?}"
    );
    assert!(
        reconciles_after > reconciles_before,
        "no reconcile ran in the window (the resync should have)"
    );
}
