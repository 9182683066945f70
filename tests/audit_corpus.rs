//! The shared corpus of real public manifests (`../shared/corpus`) through `audit` as one set, as
//! if it were one cluster: every finding is listed here with why it is true.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use mesh_admission::audit::{Level, audit_manifests};
use mesh_admission::config::Config;
use mesh_admission::manifests::parse_objects;
use serde_json::Value;

fn corpus_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus");
    assert!(
        dir.is_dir(),
        "{} is missing: this test audits the shared corpus",
        dir.display()
    );
    dir
}

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            yaml_files(&path, out);
        } else if path
            .extension()
            .is_some_and(|e| e == "yaml" || e == "yml" || e == "json")
        {
            out.push(path);
        }
    }
}

/// The objects of each directory of the corpus (as `kubectl apply -f DIR` reads one), by the
/// directory's path inside the corpus.
fn corpus_sets() -> BTreeMap<String, Vec<Value>> {
    let dir = corpus_dir();
    let mut files = Vec::new();
    yaml_files(&dir, &mut files);
    let mut sets: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let objects = parse_objects(&text).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let parent = file.parent().unwrap().strip_prefix(&dir).unwrap();
        sets.entry(parent.display().to_string())
            .or_default()
            .extend(objects);
    }
    sets
}

/// The ClusterSPIFFEID a platform running mesh-admission installs (docs/audit.md): the mesh's ID
/// form, for pods with the identity label the webhook adds.
fn platform_cluster_spiffe_id() -> Value {
    serde_json::json!({
        "apiVersion": "spire.spiffe.io/v1alpha1", "kind": "ClusterSPIFFEID",
        "metadata": {"name": "mesh"},
        "spec": {
            "spiffeIDTemplate": "spiffe://{{ .TrustDomain }}/ns/{{ .PodMeta.Namespace }}/sa/{{ .PodSpec.ServiceAccountName }}",
            "podSelector": {"matchLabels": {"spire-managed-identity": "true"}},
        },
    })
}

/// Each directory of the corpus through `audit`, with the platform's ClusterSPIFFEID added where the
/// directory brings none (an application's manifests never carry the platform's registrations).
/// Every finding, and why it is true:
const EXPECTED: &[(&str, Level, &str, &str)] = &[
    // Test data that holds variants of one object under one name, for tools that read one file at
    // a time: applied as a set, the later silently replaces the earlier.
    (
        "istio-analyzer-testdata",
        Level::Error,
        "duplicate",
        "Namespace//default",
    ),
    (
        "istio-analyzer-testdata",
        Level::Error,
        "duplicate",
        "Pod/istio-system/istiod-canary-1234567890-12345",
    ),
    (
        "istio-inject-testdata",
        Level::Error,
        "duplicate",
        "Deployment/default/hello",
    ),
    (
        "istio-inject-testdata",
        Level::Error,
        "duplicate",
        "Deployment/default/istio-ingressgateway",
    ),
    (
        "istio-inject-testdata",
        Level::Error,
        "duplicate",
        "Pod/default/hello",
    ),
    (
        "istio-inject-testdata",
        Level::Error,
        "duplicate",
        "Pod/default/hellopod",
    ),
    (
        "kyverno-policies/istio/add-sidecar-injection-namespace/.chainsaw-test",
        Level::Error,
        "duplicate",
        "Namespace//istio-test-alt-ns",
    ),
    (
        "kyverno-policies/istio/add-sidecar-injection-namespace/.chainsaw-test",
        Level::Error,
        "duplicate",
        "Namespace//istio-test-dis-ns",
    ),
    (
        "kyverno-policies/istio/add-sidecar-injection-namespace/.chainsaw-test",
        Level::Error,
        "duplicate",
        "Namespace//istio-test-none-ns",
    ),
    // Bookinfo's directory holds bookinfo.yaml and its variants (bookinfo-psa.yaml…), each with
    // the same Deployments.
    (
        "istio-samples/bookinfo/platform/kube",
        Level::Error,
        "duplicate",
        "Deployment/default/details-v1",
    ),
    (
        "istio-samples/bookinfo/platform/kube",
        Level::Error,
        "duplicate",
        "Deployment/default/productpage-v1",
    ),
    (
        "istio-samples/bookinfo/platform/kube",
        Level::Error,
        "duplicate",
        "Deployment/default/ratings-v1",
    ),
    (
        "istio-samples/bookinfo/platform/kube",
        Level::Error,
        "duplicate",
        "Deployment/default/reviews-v1",
    ),
    (
        "istio-samples/bookinfo/platform/kube",
        Level::Error,
        "duplicate",
        "Deployment/default/reviews-v2",
    ),
    (
        "istio-samples/bookinfo/platform/kube",
        Level::Error,
        "duplicate",
        "Deployment/default/reviews-v3",
    ),
    // Istio's SPIRE quickstart installs the SPIRE server in namespace `spire`, which the default
    // excludedNamespaces (spire-system, spire-server) do not list: the webhook would inject it, and
    // Istio's sample ClusterSPIFFEID selects only pods labelled spiffe.io/spire-managed-identity,
    // which its curl and sleep samples are and the server is not. The label mismatch of the issue.
    (
        "istio-samples/security/spire",
        Level::Error,
        "spire-registration-missing",
        "Deployment/spire/spire-server",
    ),
    // Kyverno's strict-mTLS test applies many namespace-wide PeerAuthentications to `default` one
    // after the other; stored together, Istio applies only the oldest (by name here: no
    // timestamps in git).
    (
        "kyverno-policies/istio/enforce-strict-mtls/.chainsaw-test",
        Level::Error,
        "second-namespace-peer-authentication",
        "PeerAuthentication/default/good-pa02",
    ),
    (
        "kyverno-policies/istio/enforce-strict-mtls/.chainsaw-test",
        Level::Error,
        "second-namespace-peer-authentication",
        "PeerAuthentication/default/good-pa03",
    ),
    (
        "kyverno-policies/istio/enforce-strict-mtls/.chainsaw-test",
        Level::Error,
        "second-namespace-peer-authentication",
        "PeerAuthentication/default/good-pa05",
    ),
    (
        "kyverno-policies/istio/enforce-strict-mtls/.chainsaw-test",
        Level::Error,
        "second-namespace-peer-authentication",
        "PeerAuthentication/default/pa-bad01",
    ),
    (
        "kyverno-policies/istio/enforce-strict-mtls/.chainsaw-test",
        Level::Error,
        "second-namespace-peer-authentication",
        "PeerAuthentication/default/pa-bad02",
    ),
    // The same test's PeerAuthentications with a selector select pods its directory never creates.
    (
        "kyverno-policies/istio/enforce-strict-mtls/.chainsaw-test",
        Level::Warning,
        "selector-matches-nothing",
        "PeerAuthentication/default/good-pa04",
    ),
    (
        "kyverno-policies/istio/enforce-strict-mtls/.chainsaw-test",
        Level::Warning,
        "selector-matches-nothing",
        "PeerAuthentication/default/pa-bad03",
    ),
];

#[test]
fn every_corpus_directory_gives_exactly_the_explained_findings() {
    let (mut found, mut total, mut sets) = (Vec::new(), 0, 0);
    for (set, mut objects) in corpus_sets() {
        total += objects.len();
        sets += 1;
        if !objects.iter().any(|o| o["kind"] == "ClusterSPIFFEID") {
            objects.push(platform_cluster_spiffe_id());
        }
        for f in audit_manifests(&objects, &Config::default()) {
            found.push((set.clone(), f.level, f.rule, f.object.to_string()));
        }
    }
    println!(
        "{total} objects in {sets} directories, {} findings",
        found.len()
    );
    found.sort();
    let mut expected: Vec<(String, Level, String, String)> = EXPECTED
        .iter()
        .map(|(set, level, rule, object)| {
            (
                set.to_string(),
                *level,
                rule.to_string(),
                object.to_string(),
            )
        })
        .collect();
    expected.sort();
    assert_eq!(found, expected);
    assert!(total > 300, "{total}");
}

/// Without the platform's registration, every meshed workload of an application directory is
/// unregistered: the rule a platform team sees first when auditing an application alone.
#[test]
fn an_application_alone_has_no_registration() {
    let sets = corpus_sets();
    let demo = &sets["microservices-demo/release"];
    let found = audit_manifests(demo, &Config::default());
    let missing = found
        .iter()
        .filter(|f| f.rule == "spire-registration-missing")
        .count();
    let deployments = demo.iter().filter(|o| o["kind"] == "Deployment").count();
    assert_eq!((missing, found.len()), (deployments, deployments));
    assert!(
        found[0]
            .message
            .ends_with("(the input has no usable ClusterSPIFFEID at all)"),
        "{}",
        found[0].message
    );
}
