//! Prometheus metrics (DESIGN.md section 7), lock-free on the request path: request counters are
//! looked up in a fixed table of atomics, and the duration histogram keeps atomic buckets.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::Registry;

use crate::admission::{Endpoint, ResultClass};

/// Labels of `mesh_admission_requests_total`. All values come from fixed sets, so a caller sending
/// made-up kinds cannot grow the series count.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub endpoint: &'static str,
    pub kind: &'static str,
    pub operation: &'static str,
    pub result: &'static str,
}

const ENDPOINTS: [Endpoint; 2] = [Endpoint::Mutate, Endpoint::Validate];
/// The kinds the rules know by name; every other kind is counted as `other`.
const KINDS: [&str; 10] = [
    "Namespace",
    "Pod",
    "HelmRelease",
    "Deployment",
    "StatefulSet",
    "DaemonSet",
    "ReplicaSet",
    "Job",
    "CronJob",
    "other",
];
/// `unknown` is a body that was not an AdmissionReview.
const OPERATIONS: [&str; 5] = ["CREATE", "UPDATE", "DELETE", "CONNECT", "unknown"];
const RESULTS: [ResultClass; 4] = [
    ResultClass::Patched,
    ResultClass::Unchanged,
    ResultClass::Denied,
    ResultClass::Error,
];
const SERIES: usize = ENDPOINTS.len() * KINDS.len() * OPERATIONS.len() * RESULTS.len();

fn position<T: PartialEq>(list: &[T], item: &T) -> usize {
    list.iter()
        .position(|x| x == item)
        .unwrap_or(list.len() - 1)
}

/// The label value counted for `kind`.
pub fn kind_label(kind: &str) -> &'static str {
    KINDS[position(&KINDS, &kind)]
}

/// Request durations in seconds with atomic buckets: observing takes no lock.
#[derive(Debug, Clone)]
pub struct DurationHistogram {
    inner: std::sync::Arc<HistogramBuckets>,
}

#[derive(Debug)]
struct HistogramBuckets {
    bounds: Vec<f64>,
    buckets: Vec<AtomicU64>,
    count: AtomicU64,
    sum_nanos: AtomicU64,
}

impl DurationHistogram {
    fn new(bounds: Vec<f64>) -> Self {
        let buckets = bounds.iter().map(|_| AtomicU64::new(0)).collect();
        let inner = HistogramBuckets {
            bounds,
            buckets,
            count: AtomicU64::new(0),
            sum_nanos: AtomicU64::new(0),
        };
        DurationHistogram {
            inner: std::sync::Arc::new(inner),
        }
    }

    pub fn observe(&self, duration: std::time::Duration) {
        let seconds = duration.as_secs_f64();
        // Buckets are exported cumulatively; each observation is stored in its first bucket only.
        if let Some(i) = self.inner.bounds.iter().position(|b| seconds <= *b) {
            self.inner.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.inner.count.fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX);
        self.inner.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }
}

impl TypedMetric for DurationHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for DurationHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        // The encoder accumulates; it is given each bucket's own count, the overflow last.
        let mut buckets: Vec<(f64, u64)> = self
            .inner
            .bounds
            .iter()
            .zip(&self.inner.buckets)
            .map(|(bound, n)| (*bound, n.load(Ordering::Relaxed)))
            .collect();
        let count = self.inner.count.load(Ordering::Relaxed);
        let bucketed: u64 = buckets.iter().map(|(_, n)| n).sum();
        buckets.push((f64::INFINITY, count.saturating_sub(bucketed)));
        let sum = self.inner.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    /// One slot per label combination, filled on first use: later increments are a plain atomic add.
    request_counters: Box<[OnceLock<Counter>]>,
    pub request_duration: DurationHistogram,
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
        let bounds = (0..15).map(|i| 0.000_05 * 2f64.powi(i)).collect();
        let request_duration = DurationHistogram::new(bounds);
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
            request_counters: (0..SERIES).map(|_| OnceLock::new()).collect(),
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
        let (e, k) = (position(&ENDPOINTS, &endpoint), position(&KINDS, &kind));
        let (o, r) = (
            position(&OPERATIONS, &operation),
            position(&RESULTS, &result),
        );
        let index = ((e * KINDS.len() + k) * OPERATIONS.len() + o) * RESULTS.len() + r;
        let counter = self.request_counters[index].get_or_init(|| {
            self.requests.get_or_create_owned(&RequestLabels {
                endpoint: ENDPOINTS[e].as_str(),
                kind: KINDS[k],
                operation: OPERATIONS[o],
                result: RESULTS[r].as_str(),
            })
        });
        counter.inc();
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
    use std::time::Duration;

    #[test]
    fn exposes_the_contract_names() {
        let m = Metrics::new();
        m.count_request(Endpoint::Mutate, "Pod", "CREATE", ResultClass::Patched);
        m.count_request(Endpoint::Mutate, "Pod", "CREATE", ResultClass::Patched);
        m.count_request(Endpoint::Validate, "Widget", "PATCH?", ResultClass::Error);
        m.request_duration.observe(Duration::from_micros(70));
        m.request_duration.observe(Duration::from_secs(5));
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
