//! The admin port: `/healthz`, `/readyz` (the reflectors have listed the cluster, and the process
//! is not shutting down) and `/metrics` (DESIGN.md section 9). Followers are ready too: they serve
//! metrics and take over from warm stores. Label values come from fixed sets.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::http::{StatusCode, header};
use axum::routing::get;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::apply::Action;
use crate::policy::kinds::Kind;

type Labelled = Family<Vec<(&'static str, &'static str)>, Counter>;

#[derive(Default)]
pub struct ControllerMetrics {
    registry: Registry,
    reconciles: Labelled,
    applied: Labelled,
    deleted: Labelled,
    /// Conflicts reported (each distinct one once, with its Event).
    pub conflicts: Counter,
    /// 1 while this replica holds the Lease.
    pub leader: Gauge,
}

impl ControllerMetrics {
    pub fn new() -> Self {
        let mut m = ControllerMetrics::default();
        let r = &mut m.registry;
        let prefixed = |name| format!("mesh_admission_controller_{name}");
        r.register(
            prefixed("reconciles"),
            "Reconciles run, by result",
            m.reconciles.clone(),
        );
        let applied = "Generated objects written with server-side apply";
        r.register(prefixed("objects_applied"), applied, m.applied.clone());
        let deleted = "Generated objects deleted because nothing wants them any more";
        r.register(prefixed("objects_deleted"), deleted, m.deleted.clone());
        let conflicts = "Conflicts reported as Warning MeshConflict Events";
        r.register(prefixed("conflicts"), conflicts, m.conflicts.clone());
        let leader = "Whether this replica holds the leader Lease (1) or not (0)";
        r.register(prefixed("leader"), leader, m.leader.clone());
        // Every series exists from the start, so a dashboard shows 0 rather than nothing.
        for result in ["ok", "error"] {
            drop(m.reconciles.get_or_create(&vec![("result", result)]));
        }
        m
    }

    pub fn reconciled(&self, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.reconciles
            .get_or_create(&vec![("result", result)])
            .inc();
    }

    pub fn written(&self, action: Action, kind: &'static Kind) {
        let family = match action {
            Action::Applied => &self.applied,
            Action::Deleted => &self.deleted,
        };
        family.get_or_create(&vec![("kind", kind.kind)]).inc();
    }
}

pub fn router(metrics: Arc<ControllerMetrics>, ready: Arc<AtomicBool>) -> Router {
    let readyz = move || async move {
        match ready.load(Ordering::Acquire) {
            true => (StatusCode::OK, "ok\n"),
            false => (StatusCode::SERVICE_UNAVAILABLE, "not ready\n"),
        }
    };
    let content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8";
    let exposition = move || async move {
        let text = crate::metrics::encode(&metrics.registry);
        ([(header::CONTENT_TYPE, content_type)], text)
    };
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(exposition))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::kinds;

    #[test]
    fn exposes_the_contract_names() {
        let m = ControllerMetrics::new();
        m.reconciled(true);
        m.written(Action::Applied, &kinds::VIRTUAL_SERVICE);
        m.written(Action::Deleted, &kinds::NETWORK_POLICY);
        m.conflicts.inc();
        m.leader.set(1);
        let text = crate::metrics::encode(&m.registry);
        for needle in [
            r#"mesh_admission_controller_reconciles_total{result="ok"} 1"#,
            r#"mesh_admission_controller_reconciles_total{result="error"} 0"#,
            r#"mesh_admission_controller_objects_applied_total{kind="VirtualService"} 1"#,
            r#"mesh_admission_controller_objects_deleted_total{kind="NetworkPolicy"} 1"#,
            "mesh_admission_controller_conflicts_total 1",
            "mesh_admission_controller_leader 1",
        ] {
            assert!(text.contains(needle), "{needle} missing from\n{text}");
        }
    }
}
