//! Latencies in an HdrHistogram (3 significant digits: under 0.1 % error); percentiles report the
//! upper edge of their bucket, capped by the exact maximum, and the mean and maximum are exact.

use std::time::Duration;

use serde_json::{Value, json};

/// Nanosecond values in an HdrHistogram (3 significant digits: under 0.1 % error, resized as
/// needed), with the exact sum and maximum beside it for the mean and the max.
#[derive(Clone)]
pub struct Histogram {
    hdr: hdrhistogram::Histogram<u64>,
    sum: u128,
    max: u64,
}

impl Histogram {
    pub fn new() -> Self {
        Self {
            hdr: hdrhistogram::Histogram::new(3).expect("3 significant digits are valid"),
            sum: 0,
            max: 0,
        }
    }

    pub fn record(&mut self, value: Duration) {
        let nanos = u64::try_from(value.as_nanos()).unwrap_or(u64::MAX);
        // Auto-resizing covers any duration; clamping is only a fallback for absurd values.
        if self.hdr.record(nanos).is_err() {
            self.hdr.saturating_record(nanos);
        }
        self.sum += u128::from(nanos);
        self.max = self.max.max(nanos);
    }

    pub fn merge(&mut self, other: &Histogram) {
        self.hdr
            .add(&other.hdr)
            .expect("auto-resizing histograms always add");
        self.sum += other.sum;
        self.max = self.max.max(other.max);
    }

    /// The value at quantile `q` (0..=1): the upper edge of its bucket, at most the maximum.
    pub fn quantile(&self, q: f64) -> u64 {
        if self.hdr.is_empty() {
            return 0;
        }
        self.hdr.value_at_quantile(q).min(self.max)
    }

    /// [`Self::quantile`] in milliseconds, rounded to microseconds.
    pub fn ms(&self, q: f64) -> f64 {
        round_ms(self.quantile(q) as f64)
    }

    pub fn summary_ms(&self) -> Value {
        let total = self.hdr.len();
        let mean = if total == 0 {
            0.0
        } else {
            self.sum as f64 / total as f64
        };
        json!({
            "count": total,
            "mean": round_ms(mean),
            "p50": self.ms(0.50),
            "p90": self.ms(0.90),
            "p99": self.ms(0.99),
            "p999": self.ms(0.999),
            "max": round_ms(self.max as f64),
        })
    }
}

fn round_ms(nanos: f64) -> f64 {
    (nanos / 1e6 * 1000.0).round() / 1000.0
}

impl Default for Histogram {
    fn default() -> Self {
        Self::new()
    }
}
