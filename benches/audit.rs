//! Criterion benchmark of `audit` (DESIGN.md section 13) at the scale: 10,000 objects in
//! 200 namespaces (workload templates, Services, HelmReleases, Istio objects, ClusterSPIFFEIDs),
//! already parsed, through the pure core as `audit` runs it (the model built, every object's
//! webhook findings, the set's findings), and the report objects made of the findings. Before the
//! runs it prints how many findings and report objects there are and the largest report's size,
//! and writes the objects as one YAML stream to `target/bench-audit/mesh.yaml`, so that the command
//! can be timed on them (`mesh-admission audit -f target/bench-audit/mesh.yaml`); `yaml_10000` is
//! that stream parsed and audited.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use mesh_admission::audit::audit_manifests;
use mesh_admission::audit::report::{self, Timestamp};
use mesh_admission::config::Config;
use mesh_admission::manifests::parse_objects;

/// The allocator of the `mesh-admission` binary, so the figures are the command's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn audit_bench(c: &mut Criterion) {
    let cfg = Config::default();
    let objects = testkit::scale::mesh(200);
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
    let yaml = objects
        .iter()
        .map(|o| yaml_serde::to_string(o).expect("a JSON value is YAML"))
        .collect::<Vec<_>>()
        .join("---\n");
    let folder = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-audit");
    std::fs::create_dir_all(&folder).expect("target/ is writable");
    std::fs::write(folder.join("mesh.yaml"), &yaml).expect("target/ is writable");
    let mut group = c.benchmark_group("audit");
    group.sample_size(10);
    group.throughput(Throughput::Elements(objects.len() as u64));
    group.bench_function("objects_10000", |b| {
        b.iter(|| black_box(audit_manifests(black_box(&objects), &cfg)))
    });
    group.bench_function("yaml_10000", |b| {
        b.iter(|| {
            let parsed = parse_objects(black_box(&yaml)).expect("the stream parses");
            black_box(audit_manifests(&parsed, &cfg))
        })
    });
    group.bench_function("reports_10000", |b| {
        b.iter(|| black_box(report::reports(black_box(&findings), &|_| seen)))
    });
    group.finish();
}

criterion_group!(benches, audit_bench);
criterion_main!(benches);
