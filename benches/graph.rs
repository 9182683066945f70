//! Criterion benchmarks of `graph` (DESIGN.md section 12) over the synthetic mesh of
//! `benches/graph/input.rs`: 500 workloads in 50 namespaces, 1,000 NetworkPolicies and 1,000
//! AuthorizationPolicies, from manifests already parsed as JSON. `whole_500` is what the command
//! does before printing: the model, `render`'s objects added, every connection decided. `decide_500`
//! decides every connection of a model built beforehand. Memory and the command end to end, beside
//! nca, are measured by `hack/bench-graph.sh`.

#[path = "graph/input.rs"]
mod input;

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use mesh_admission::config::Config;
use mesh_admission::graph::{self, Topology};
use mesh_admission::model::Model;

/// The allocator of the `mesh-admission` binary, so the figures are the command's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn bench(c: &mut Criterion) {
    let config = Config::default();
    let objects = input::objects(50, 10);
    let model = graph::with_generated(&Model::from_manifests(&objects), &config);
    let connections = Topology::new(&model, &config).graph().connections.len();
    let mut group = c.benchmark_group("graph");
    group.sample_size(10);
    group.throughput(Throughput::Elements(connections as u64));
    group.bench_function("whole_500", |b| {
        b.iter(|| {
            let model = graph::with_generated(&Model::from_manifests(black_box(&objects)), &config);
            Topology::new(&model, &config).graph()
        })
    });
    group.bench_function("decide_500", |b| {
        b.iter(|| Topology::new(black_box(&model), &config).graph())
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
