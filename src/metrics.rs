//! Prometheus metrics (DESIGN.md section 7), with prometheus-client's own types. Every label value
//! comes from a fixed set, so a caller sending made-up kinds cannot grow the series count.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::admission::{Endpoint, ResultClass};
use crate::policy::kinds;

/// Labels of `mesh_admission_requests_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub endpoint: &'static str,
    pub kind: &'static str,
    pub operation: &'static str,
    pub result: &'static str,
}

/// `unknown` is a body that was not an AdmissionReview.
const OPERATIONS: [&str; 5] = ["CREATE", "UPDATE", "DELETE", "CONNECT", "unknown"];

/// The label value counted for `kind`: a kind of the kinds table, else `other`.
pub fn kind_label(kind: &str) -> &'static str {
    kinds::KINDS
        .iter()
        .map(|k| k.kind)
        .find(|k| *k == kind)
        .unwrap_or("other")
}

fn operation_label(operation: &str) -> &'static str {
    OPERATIONS
        .iter()
        .find(|o| **o == operation)
        .copied()
        .unwrap_or("unknown")
}

pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    /// Seconds from body received to reply encoded.
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
        let request_duration = Histogram::new(exponential_buckets(0.000_05, 2.0, 15));
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

    /// Counts one answered request. `kind` and `operation` outside the known sets count as
    /// `other` and `unknown`.
    pub fn count_request(
        &self,
        endpoint: Endpoint,
        kind: &str,
        operation: &str,
        result: ResultClass,
    ) {
        self.requests
            .get_or_create(&RequestLabels {
                endpoint: endpoint.as_str(),
                kind: kind_label(kind),
                operation: operation_label(operation),
                result: result.as_str(),
            })
            .inc();
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        encode(&self.registry)
    }
}

/// `registry` in the Prometheus text exposition (the server's and the controller's `/metrics`).
pub fn encode(registry: &Registry) -> String {
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, registry);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn exposes_the_contract_names() {
        let m = Metrics::new();
        m.count_request(Endpoint::Mutate, "Pod", "CREATE", ResultClass::Patched);
        m.count_request(Endpoint::Mutate, "Pod", "CREATE", ResultClass::Patched);
        m.count_request(Endpoint::Validate, "Widget", "PATCH?", ResultClass::Error);
        m.request_duration
            .observe(Duration::from_micros(70).as_secs_f64());
        m.request_duration
            .observe(Duration::from_secs(5).as_secs_f64());
        m.tls_reloads.inc();
        let text = m.encode();
        for needle in [
            r#"mesh_admission_requests_total{endpoint="mutate",kind="Pod",operation="CREATE",result="patched"} 2"#,
            r#"mesh_admission_requests_total{endpoint="validate",kind="other",operation="unknown",result="error"} 1"#,
            r#"mesh_admission_request_duration_seconds_bucket{le="0.0001"} 1"#,
            r#"mesh_admission_request_duration_seconds_bucket{le="+Inf"} 2"#,
            "mesh_admission_request_duration_seconds_count 2",
            "mesh_admission_tls_reloads_total 1",
            "mesh_admission_tls_reload_errors_total 0",
        ] {
            assert!(text.contains(needle), "{needle} missing from\n{text}");
        }
        assert_eq!(kind_label("Whatever"), "other");
        assert_eq!(
            text.matches("mesh_admission_requests_total{").count(),
            2,
            "only used series are exported"
        );
    }
}
