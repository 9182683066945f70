//! The model of a live cluster read once (`mesh_admission::model::cluster`, what `graph --cluster`
//! and `audit --cluster` read) against the real kube-apiserver: every kind of the model, page by
//! page; kinds whose CRDs are not installed left out and named; an API that is away is an error,
//! not an empty model.

use std::collections::BTreeSet;

use mesh_admission::model::cluster::{self, ClusterError};
use mesh_admission::policy::kinds;
use serde_json::json;
use testkit::{ControlPlane, shared_crds};

fn client_of(cp: &ControlPlane, runtime: &tokio::runtime::Runtime) -> kube::Client {
    runtime.block_on(async {
        let kubeconfig = kube::config::Kubeconfig::read_from(cp.kubeconfig()).unwrap();
        let options = kube::config::KubeConfigOptions::default();
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &options)
            .await
            .unwrap();
        kube::Client::try_from(config).unwrap()
    })
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn apply(cp: &ControlPlane, objects: &[serde_json::Value]) {
    let list = json!({"apiVersion": "v1", "kind": "List", "items": objects});
    cp.kubectl_stdin_ok(["apply", "-f", "-"], &list.to_string());
}

fn names<T>(objects: &mesh_admission::model::Objects<T>) -> BTreeSet<String> {
    objects
        .iter()
        .map(|(key, _)| format!("{}/{}/{}", key.kind.kind, key.namespace, key.name))
        .collect()
}

/// More Services than one list page holds, so the read must follow the continue token.
const SERVICES: usize = 520;

#[test]
fn reads_every_kind_pages_through_and_names_what_is_not_served() {
    let cp = ControlPlane::start();
    let runtime = runtime();
    let client = client_of(&cp, &runtime);

    let mut objects = vec![
        json!({"apiVersion": "v1", "kind": "Namespace",
               "metadata": {"name": "shop", "labels": {"istio-injection": "enabled"}}}),
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
               "metadata": {"name": "web", "namespace": "shop"},
               "spec": {"selector": {"matchLabels": {"app": "web"}},
                        "template": {"metadata": {"labels": {"app": "web"}},
                                     "spec": {"serviceAccountName": "web", "containers": [
                                         {"name": "web", "image": "registry.example/web:1",
                                          "ports": [{"name": "http", "containerPort": 8080}]}]}}}}),
        json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
               "metadata": {"name": "deny-all", "namespace": "shop"},
               "spec": {"podSelector": {}, "policyTypes": ["Ingress"]}}),
    ];
    objects.extend((0..SERVICES).map(|i| {
        json!({"apiVersion": "v1", "kind": "Service",
               "metadata": {"name": format!("svc-{i:03}"), "namespace": "shop"},
               "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]}})
    }));
    apply(&cp, &objects);

    let read = runtime
        .block_on(cluster::read(&client, None))
        .expect("the model of a cluster without any CRD");
    let workloads = names(&read.model.workloads);
    assert!(
        workloads.contains("Deployment/shop/web"),
        "the Deployment: {workloads:?}"
    );
    let web = read
        .model
        .workloads
        .get(&kinds::DEPLOYMENT, "shop", "web")
        .expect("the Deployment by key");
    assert_eq!(web.template.service_account(), "web");
    assert_eq!(
        names(&read.model.network_policies),
        BTreeSet::from(["NetworkPolicy/shop/deny-all".to_owned()])
    );
    let services = read
        .model
        .services
        .in_namespace("shop")
        .filter(|(key, _)| key.name.starts_with("svc-"))
        .count();
    assert_eq!(services, SERVICES, "every Service, over more than one page");
    assert!(
        read.model
            .namespaces
            .get(&kinds::NAMESPACE, "", "shop")
            .is_some(),
        "the Namespace"
    );
    let missing: BTreeSet<&str> = read.not_served.iter().map(|n| n.kind.kind).collect();
    for kind in [
        "HelmRelease",
        "PeerAuthentication",
        "AuthorizationPolicy",
        "DestinationRule",
        "VirtualService",
        "ClusterSPIFFEID",
    ] {
        assert!(
            missing.contains(kind),
            "{kind} named as not served: {missing:?}"
        );
    }
    assert!(
        !missing.contains("Deployment") && !missing.contains("NetworkPolicy"),
        "built-in kinds are always served: {missing:?}"
    );

    // With the CRDs, their objects are read too, HelmReleases in the version the API prefers.
    cp.apply_crds(&shared_crds());
    apply(
        &cp,
        &[
            json!({"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
                   "metadata": {"name": "default", "namespace": "shop"},
                   "spec": {"mtls": {"mode": "STRICT"}}}),
            json!({"apiVersion": "spire.spiffe.io/v1alpha1", "kind": "ClusterSPIFFEID",
                   "metadata": {"name": "mesh"},
                   "spec": {"spiffeIDTemplate":
                       "spiffe://{{ .TrustDomain }}/ns/{{ .PodMeta.Namespace }}/sa/{{ .PodSpec.ServiceAccountName }}",
                       "podSelector": {"matchLabels": {"spiffe.io/spire-managed-identity": "true"}}}}),
            json!({"apiVersion": "helm.toolkit.fluxcd.io/v2", "kind": "HelmRelease",
                   "metadata": {"name": "web", "namespace": "shop",
                                "annotations": {"servicemesh.bigbang.dev/expose": "web"}},
                   "spec": {"interval": "10m", "chart": {"spec": {"chart": "web",
                            "sourceRef": {"kind": "HelmRepository", "name": "charts"}}}}}),
        ],
    );
    let read = runtime
        .block_on(cluster::read(&client, None))
        .expect("the model with every CRD");
    assert_eq!(read.not_served, vec![], "every kind is served now");
    assert_eq!(
        names(&read.model.peer_authentications),
        BTreeSet::from(["PeerAuthentication/shop/default".to_owned()])
    );
    assert_eq!(
        names(&read.model.cluster_spiffe_ids),
        BTreeSet::from(["ClusterSPIFFEID//mesh".to_owned()])
    );
    assert_eq!(
        names(&read.model.helm_releases),
        BTreeSet::from(["HelmRelease/shop/web".to_owned()])
    );
}

#[test]
fn an_api_that_is_away_is_an_error() {
    let runtime = runtime();
    // A port nothing listens on: bound, then released.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = kube::Config::new(format!("https://127.0.0.1:{port}").parse().unwrap());
    let error = runtime
        .block_on(async {
            let client = kube::Client::try_from(config).unwrap();
            cluster::read(&client, None).await
        })
        .expect_err("no model from an API that does not answer");
    assert!(
        matches!(
            error,
            ClusterError::List { .. } | ClusterError::Version { .. }
        ),
        "{error:?}"
    );
    assert!(error.to_string().starts_with("cannot "), "{error}");
}
