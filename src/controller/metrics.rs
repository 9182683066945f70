//! The controller's Prometheus metrics (DESIGN.md section 9, "Controller behaviour"). Label values
//! come from fixed sets: a result, or one of the generated kinds.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::policy::kinds::Kind;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: &'static str,
}

/// How a reconcile ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Everything wanted is in the cluster.
    Ok,
    /// Some write failed; retried with backoff.
    Error,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Error => "error",
        }
    }
}

pub struct ControllerMetrics {
    registry: Registry,
    reconciles: Family<ResultLabels, Counter>,
    applied: Family<KindLabels, Counter>,
    deleted: Family<KindLabels, Counter>,
    /// Conflicts reported (each distinct one once, as its Event).
    pub conflicts: Counter,
    /// 1 while this replica holds the Lease.
    pub leader: Gauge,
}

impl Default for ControllerMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl ControllerMetrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("mesh_admission_controller");
        let reconciles = Family::<ResultLabels, Counter>::default();
        registry.register(
            "reconciles",
            "Reconciles run, by result",
            reconciles.clone(),
        );
        let applied = Family::<KindLabels, Counter>::default();
        registry.register(
            "objects_applied",
            "Generated objects written with server-side apply",
            applied.clone(),
        );
        let deleted = Family::<KindLabels, Counter>::default();
        registry.register(
            "objects_deleted",
            "Generated objects deleted because nothing wants them any more",
            deleted.clone(),
        );
        let conflicts = Counter::default();
        registry.register(
            "conflicts",
            "Conflicts reported as Warning MeshConflict Events",
            conflicts.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "leader",
            "Whether this replica holds the leader Lease (1) or not (0)",
            leader.clone(),
        );
        // Every series exists from the start, so a dashboard shows 0 rather than nothing.
        for outcome in [Outcome::Ok, Outcome::Error] {
            drop(reconciles.get_or_create(&ResultLabels {
                result: outcome.as_str(),
            }));
        }
        ControllerMetrics {
            registry,
            reconciles,
            applied,
            deleted,
            conflicts,
            leader,
        }
    }

    pub fn reconciled(&self, outcome: Outcome) {
        self.reconciles
            .get_or_create(&ResultLabels {
                result: outcome.as_str(),
            })
            .inc();
    }

    pub fn applied(&self, kind: &'static Kind) {
        self.applied
            .get_or_create(&KindLabels { kind: kind.kind })
            .inc();
    }

    pub fn deleted(&self, kind: &'static Kind) {
        self.deleted
            .get_or_create(&KindLabels { kind: kind.kind })
            .inc();
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        crate::metrics::encode(&self.registry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposes_the_contract_names() {
        let m = ControllerMetrics::new();
        m.reconciled(Outcome::Ok);
        m.applied(&crate::policy::kinds::VIRTUAL_SERVICE);
        m.deleted(&crate::policy::kinds::NETWORK_POLICY);
        m.conflicts.inc();
        m.leader.set(1);
        let text = m.encode();
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
