//! Prometheus metrics (DESIGN.md section 7).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Labels of `mesh_admission_requests_total`. All values come from fixed sets, so a caller sending
/// made-up kinds cannot grow the series count.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub endpoint: &'static str,
    pub kind: &'static str,
    pub operation: &'static str,
    pub result: &'static str,
}

/// The kinds the rules know by name; every other kind is counted as `other`.
pub fn kind_label(kind: &str) -> &'static str {
    const KNOWN: [&str; 9] = [
        "Namespace",
        "Pod",
        "HelmRelease",
        "Deployment",
        "StatefulSet",
        "DaemonSet",
        "ReplicaSet",
        "Job",
        "CronJob",
    ];
    KNOWN.into_iter().find(|k| *k == kind).unwrap_or("other")
}

pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub request_duration: Histogram,
    pub tls_reloads: Counter,
    pub tls_reload_errors: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("mesh_admission");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register("requests", "Admission reviews answered", requests.clone());
        // 50 µs .. ~0.8 s: reviews take microseconds; the tail shows contention.
        let request_duration = Histogram::new(
            prometheus_client::metrics::histogram::exponential_buckets(0.000_05, 2.0, 15),
        );
        registry.register(
            "request_duration_seconds",
            "Time to answer an admission review, from body received to reply encoded",
            request_duration.clone(),
        );
        let tls_reloads = Counter::default();
        registry.register(
            "tls_reloads",
            "Serving certificate reloads that succeeded",
            tls_reloads.clone(),
        );
        let tls_reload_errors = Counter::default();
        registry.register(
            "tls_reload_errors",
            "Changed certificate files that could not be loaded (the previous pair kept serving)",
            tls_reload_errors.clone(),
        );
        Metrics {
            registry,
            requests,
            request_duration,
            tls_reloads,
            tls_reload_errors,
        }
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposes_the_contract_names() {
        let m = Metrics::new();
        m.requests
            .get_or_create(&RequestLabels {
                endpoint: "mutate",
                kind: kind_label("Pod"),
                operation: "CREATE",
                result: "patched",
            })
            .inc();
        m.tls_reloads.inc();
        let text = m.encode();
        for needle in [
            r#"mesh_admission_requests_total{endpoint="mutate",kind="Pod",operation="CREATE",result="patched"} 1"#,
            "mesh_admission_request_duration_seconds_bucket",
            "mesh_admission_tls_reloads_total 1",
            "mesh_admission_tls_reload_errors_total 0",
        ] {
            assert!(text.contains(needle), "{needle} missing from\n{text}");
        }
        assert_eq!(kind_label("Whatever"), "other");
    }
}
