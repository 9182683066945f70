//! Criterion benchmark of `audit` (DESIGN.md section 13) at the scale: 10,000 objects in
//! 200 namespaces (workload templates, Services, HelmReleases, Istio objects, ClusterSPIFFEIDs),
//! already parsed, through the pure core as `audit` runs it (the model built, every object's
//! webhook findings, the set's findings), and the report objects made of the findings. Before the
//! runs it prints how many findings and report objects there are and the largest report's size.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use mesh_admission::audit::audit_manifests;
use mesh_admission::audit::report::{self, Timestamp};
use mesh_admission::config::Config;
use serde_json::{Value, json};

/// The allocator of the `mesh-admission` binary, so the figures are the command's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const NAMESPACES: usize = 200;

/// 49 objects in each of 200 namespaces and one ClusterSPIFFEID for each: 10,000 objects. Some are
/// wrong on purpose (a typo'd principal, a selector of nothing, a route to a missing Service, an
/// undeclared permissive port), so that every rule has work to report.
fn inputs() -> Vec<Value> {
    let mut objects = Vec::new();
    for n in 0..NAMESPACES {
        let ns = format!("team-{n:03}");
        objects.push(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}));
        for i in 0..20 {
            let app = format!("app-{i}");
            objects.push(json!({
                "apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": app, "namespace": ns},
                "spec": {"selector": {"matchLabels": {"app": app}}, "template": {
                    "metadata": {"labels": {"app": app, "tier": if i % 2 == 0 { "web" } else { "db" }},
                                 "annotations": {"servicemesh.bigbang.dev/permissivePorts": if i == 0 { "8080,9090" } else { "8080" }}},
                    "spec": {"serviceAccountName": app, "containers": [
                        {"name": "app", "image": "registry.example/app:1", "ports": [{"containerPort": 8080}],
                         "env": [{"name": "LOG_LEVEL", "value": "info"}]}]}}},
            }));
        }
        for i in 0..10 {
            let app = format!("app-{i}");
            objects.push(json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": app, "namespace": ns},
                "spec": {"selector": {"app": app}, "ports": [{"port": 80, "targetPort": 8080}]}}));
        }
        for i in 0..5 {
            let app = format!("app-{i}");
            objects.push(
                json!({"apiVersion": "helm.toolkit.fluxcd.io/v2", "kind": "HelmRelease",
                "metadata": {"name": app, "namespace": ns, "annotations": {
                    "servicemesh.bigbang.dev/expose": app, "servicemesh.bigbang.dev/host": app,
                    "servicemesh.bigbang.dev/port": "8080"}},
                "spec": {"interval": "10m", "chart": {"spec": {"chart": app}}}}),
            );
        }
        objects.push(json!({"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
            "metadata": {"name": "default", "namespace": ns}, "spec": {"mtls": {"mode": "STRICT"}}}));
        for i in 0..4 {
            let app = format!("app-{}", i * 7);
            objects.push(json!({"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
                "metadata": {"name": format!("{app}-ports"), "namespace": ns},
                "spec": {"selector": {"matchLabels": {"app": app}}, "portLevelMtls": {"8080": {"mode": "PERMISSIVE"}}}}));
        }
        for i in 0..4 {
            let app = format!("app-{i}");
            let caller = if i == 3 {
                "cluster.local/ns/other/sa/gone".to_owned()
            } else {
                format!("cluster.local/ns/{ns}/sa/app-{}", i + 1)
            };
            objects.push(json!({"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
                "metadata": {"name": format!("{app}-allow"), "namespace": ns},
                "spec": {"selector": {"matchLabels": {"app": app}}, "action": "ALLOW",
                         "rules": [{"from": [{"source": {"principals": [caller]}}], "to": [{"operation": {"methods": ["GET"]}}]}]}}));
        }
        for i in 0..3 {
            let host = if i == 2 {
                "missing".to_owned()
            } else {
                format!("app-{i}")
            };
            objects.push(json!({"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
                "metadata": {"name": format!("route-{i}"), "namespace": ns},
                "spec": {"hosts": [format!("app-{i}.example.org")],
                         "http": [{"route": [{"destination": {"host": host, "port": {"number": 80}}}]}]}}));
        }
        objects.push(json!({"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
            "metadata": {"name": "mtls", "namespace": ns},
            "spec": {"host": format!("*.{ns}.svc.cluster.local"), "trafficPolicy": {"tls": {"mode": "ISTIO_MUTUAL"}}}}));
        // One registration per namespace, by namespace, of the mesh's form.
        objects.push(json!({"apiVersion": "spire.spiffe.io/v1alpha1", "kind": "ClusterSPIFFEID",
            "metadata": {"name": format!("mesh-{ns}")},
            "spec": {"spiffeIDTemplate": "spiffe://{{ .TrustDomain }}/ns/{{ .PodMeta.Namespace }}/sa/{{ .PodSpec.ServiceAccountName }}",
                     "podSelector": {"matchLabels": {"spire-managed-identity": "true"}},
                     "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns}}}}));
    }
    objects
}

fn audit_bench(c: &mut Criterion) {
    let cfg = Config::default();
    let objects = inputs();
    assert_eq!(objects.len(), 10_000);
    let findings = audit_manifests(&objects, &cfg);
    let seen = Timestamp {
        seconds: 1_765_000_000,
        nanos: 0,
    };
    let reports = report::reports(&findings, &|_| seen);
    let largest = reports
        .iter()
        .map(|r| serde_json::to_vec(r).map_or(0, |v| v.len()))
        .max()
        .unwrap_or(0);
    println!(
        "audit: {} objects, {} findings, {} report objects, largest {} bytes",
        objects.len(),
        findings.len(),
        reports.len(),
        largest
    );
    let mut group = c.benchmark_group("audit");
    group.sample_size(10);
    group.throughput(Throughput::Elements(objects.len() as u64));
    group.bench_function("objects_10000", |b| {
        b.iter(|| black_box(audit_manifests(black_box(&objects), &cfg)))
    });
    group.bench_function("reports_10000", |b| {
        b.iter(|| black_box(report::reports(black_box(&findings), &|_| seen)))
    });
    group.finish();
}

criterion_group!(benches, audit_bench);
criterion_main!(benches);
