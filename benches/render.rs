//! Criterion benchmarks of `render` (DESIGN.md section 9): the pure generator over 1 and 1,000
//! HelmReleases, each with its Service (and so a VirtualService, a NetworkPolicy and the namespace's
//! PeerAuthentication), from manifests already parsed as JSON: the model is built from them and
//! rendered, as the command does. The per-element throughput shows whether the cost per
//! HelmRelease stays flat (linear) as the input grows. `yaml_1000` adds printing the result as the
//! command does; `model_1000` renders a model built beforehand, as the controller does from its
//! reflectors.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use mesh_admission::cli::RenderOutput;
use mesh_admission::commands::render_text;
use mesh_admission::config::Config;
use mesh_admission::model::Model;
use mesh_admission::policy::render::{Rendered, render};
use serde_json::{Value, json};

/// The allocator of the `mesh-admission` binary, so the figures are the command's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `count` HelmReleases with their Services, ten to a namespace (so namespaces share their
/// PeerAuthentication as in a real cluster), each with its own host.
fn inputs(count: usize) -> Vec<Value> {
    let mut objects = Vec::with_capacity(count * 2);
    for i in 0..count {
        let namespace = format!("team-{}", i / 10);
        let name = format!("app-{i}");
        objects.push(json!({
            "apiVersion": "helm.toolkit.fluxcd.io/v2", "kind": "HelmRelease",
            "metadata": {"name": name, "namespace": "flux-system", "annotations": {
                "servicemesh.bigbang.dev/expose": name,
                "servicemesh.bigbang.dev/host": format!("{name}.{namespace}"),
                "servicemesh.bigbang.dev/port": "8080",
            }},
            "spec": {"targetNamespace": namespace, "interval": "10m",
                     "chart": {"spec": {"chart": "podinfo", "version": "6.x", "sourceRef": {"kind": "HelmRepository", "name": "podinfo"}}},
                     "values": {"replicaCount": 2, "ingress": {"enabled": false}}},
        }));
        objects.push(json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": namespace, "labels": {"app.kubernetes.io/name": name}},
            "spec": {"type": "ClusterIP", "selector": {"app.kubernetes.io/name": name},
                     "ports": [{"name": "http", "port": 8080, "targetPort": "http", "protocol": "TCP"},
                               {"name": "grpc", "port": 9999, "targetPort": "grpc", "protocol": "TCP"}]},
        }));
    }
    objects
}

/// What `mesh-admission render` does with parsed manifests.
fn render_manifests(objects: &[Value], cfg: &Config) -> Rendered {
    render(&Model::from_manifests(objects), cfg)
}

fn render_bench(c: &mut Criterion) {
    let cfg = Config::default();
    let mut group = c.benchmark_group("render");
    for count in [1usize, 1000] {
        let objects = inputs(count);
        let rendered = render_manifests(&objects, &cfg);
        assert!(!rendered.has_errors(), "{:?}", rendered.problems);
        assert_eq!(rendered.objects.len(), count * 2 + count.div_ceil(10));
        group.throughput(Throughput::Elements(count as u64));
        group.bench_function(format!("helmreleases_{count}"), |b| {
            b.iter(|| black_box(render_manifests(black_box(&objects), &cfg)))
        });
    }
    let objects = inputs(1000);
    group.throughput(Throughput::Elements(1000));
    group.bench_function("yaml_1000", |b| {
        b.iter(|| {
            let rendered = render_manifests(black_box(&objects), &cfg);
            black_box(render_text(&rendered.objects, RenderOutput::Yaml).expect("prints"))
        })
    });
    let model = Model::from_manifests(&objects);
    group.bench_function("model_1000", |b| {
        b.iter(|| black_box(render(black_box(&model), &cfg)))
    });
    group.finish();
}

criterion_group!(benches, render_bench);
criterion_main!(benches);
