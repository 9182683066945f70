//! `graph --cluster` end to end against a real kube-apiserver (`hack/build-control-plane.sh`): the
//! example manifests applied through kubectl (with the shared Istio CRDs) give, read back live, the
//! very graph `graph -f` gives for the same manifests; a cluster that cannot be reached is exit 2.

use std::process::Command;

use serde_json::Value;
use testkit::{ControlPlane, mesh_admission, shared_crds, temp_dir};

fn graph(args: &[&str], kubeconfig: &std::path::Path) -> (i32, String, String) {
    let output = Command::new(mesh_admission())
        .arg("graph")
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .output()
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn the_live_cluster_gives_the_graph_of_its_manifests() {
    let cp = ControlPlane::start();
    cp.apply_crds(&shared_crds());
    // No webhook runs here: the namespace carries the injection label admission would have added.
    let text = std::fs::read_to_string(format!(
        "{}/tests/fixtures/graph/shop.yaml",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
    .replace(
        "metadata: {name: shop}",
        "metadata: {name: shop, labels: {istio-injection: enabled}}",
    );
    let dir = temp_dir("graph-cluster");
    let manifests = dir.join("shop.yaml");
    std::fs::write(&manifests, &text).unwrap();
    cp.kubectl_ok(["apply", "-f", manifests.to_str().unwrap()]);

    for extra in [&[][..], &["--no-generated"][..]] {
        let live = graph(
            &[&["--cluster", "-o", "json"][..], extra].concat(),
            cp.kubeconfig(),
        );
        assert_eq!(live.0, 0, "{}", live.2);
        let offline = graph(
            &[
                &["-f", manifests.to_str().unwrap(), "-o", "json"][..],
                extra,
            ]
            .concat(),
            cp.kubeconfig(),
        );
        assert_eq!(offline.0, 0, "{}", offline.2);
        let (live, offline): (Value, Value) = (
            serde_json::from_str(&live.1).unwrap(),
            serde_json::from_str(&offline.1).unwrap(),
        );
        assert_eq!(live, offline, "{extra:?}");
        let denied = live["connections"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["from"] == "legacy/batch" && c["to"] == "shop/web")
            .unwrap();
        // With render's objects too, allow-egress-istiod isolates the meshed namespace's egress
        // only: legacy's batch still reaches the web and is refused by the STRICT mode.
        assert_eq!(denied["layer"], "mtls", "{extra:?}");
    }
}

#[test]
fn a_cluster_out_of_reach_is_exit_2() {
    let dir = temp_dir("graph-cluster-away");
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        "apiVersion: v1\nkind: Config\nclusters: [{name: c, cluster: {server: 'https://127.0.0.1:1'}}]\n\
         users: [{name: u, user: {token: t}}]\ncontexts: [{name: x, context: {cluster: c, user: u}}]\n\
         current-context: x\n",
    )
    .unwrap();
    let (code, _, stderr) = graph(&["--cluster"], &kubeconfig);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("cannot read the cluster"), "{stderr}");
}
