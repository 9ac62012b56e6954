//! Latency histograms: construction, a compact wire form for merging across processes,
//! and percentile summaries.

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Highest trackable latency: one hour in microseconds (larger values saturate).
const MAX_US: u64 = 3_600_000_000;

/// A new microsecond histogram with 3 significant digits.
pub fn new_us() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_US, 3).expect("static histogram bounds are valid")
}

/// Recorded buckets as `(value, count)` pairs: enough to rebuild an equal histogram.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct HistPairs(pub Vec<(u64, u64)>);

impl HistPairs {
    /// Captures the non-empty buckets of `h`.
    pub fn from_hist(h: &Histogram<u64>) -> HistPairs {
        HistPairs(
            h.iter_recorded()
                .map(|v| (v.value_iterated_to(), v.count_at_value()))
                .collect(),
        )
    }

    /// Adds these buckets into `h` (which must have the bounds of [`new_us`]).
    pub fn add_to(&self, h: &mut Histogram<u64>) {
        for &(v, n) in &self.0 {
            let _ = h.record_n(v.min(MAX_US), n);
        }
    }
}

/// Percentiles of a latency histogram in microseconds.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
pub struct Percentiles {
    /// Number of samples.
    pub count: u64,
    /// Median.
    pub p50_us: u64,
    /// 90th percentile.
    pub p90_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// 99.9th percentile.
    pub p999_us: u64,
    /// Largest sample.
    pub max_us: u64,
    /// Mean.
    pub mean_us: f64,
}

impl Percentiles {
    /// Summarises `h` (all zero when empty).
    pub fn of(h: &Histogram<u64>) -> Percentiles {
        if h.is_empty() {
            return Percentiles::default();
        }
        Percentiles {
            count: h.len(),
            p50_us: h.value_at_quantile(0.5),
            p90_us: h.value_at_quantile(0.9),
            p99_us: h.value_at_quantile(0.99),
            p999_us: h.value_at_quantile(0.999),
            max_us: h.max(),
            mean_us: (h.mean() * 10.0).round() / 10.0,
        }
    }
}

/// Human form of a microsecond duration: `850us`, `12.3ms`, `4.56s`.
pub fn fmt_us(us: u64) -> String {
    match us {
        0..=9_999 => format!("{us}us"),
        10_000..=999_999 => format!("{:.1}ms", us as f64 / 1e3),
        _ => format!("{:.2}s", us as f64 / 1e6),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_round_trip_preserves_percentiles() {
        let mut a = new_us();
        for v in 1..=10_000u64 {
            a.record(v * 37).unwrap();
        }
        a.saturating_record(u64::MAX);
        let mut b = new_us();
        HistPairs::from_hist(&a).add_to(&mut b);
        assert_eq!(Percentiles::of(&a), Percentiles::of(&b));
        // Merging twice doubles counts but keeps percentiles.
        HistPairs::from_hist(&a).add_to(&mut b);
        assert_eq!(b.len(), 2 * a.len());
        assert_eq!(Percentiles::of(&b).p99_us, Percentiles::of(&a).p99_us);
    }

    #[test]
    fn empty_is_zero() {
        assert_eq!(Percentiles::of(&new_us()), Percentiles::default());
    }

    #[test]
    fn formatting() {
        assert_eq!(fmt_us(850), "850us");
        assert_eq!(fmt_us(12_345), "12.3ms");
        assert_eq!(fmt_us(4_560_000), "4.56s");
    }
}
