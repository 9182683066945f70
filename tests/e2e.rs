//! End-to-end tests against the real control plane (DESIGN.md section 11): etcd and kube-apiserver
//! built by `hack/build-control-plane.sh`, driven with the official kubectl.

mod e2e_support;

use e2e_support::{ControlPlane, shared_crds};
use serde_json::Value;

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
