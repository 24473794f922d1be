//! [`LatencyHistogram`]: a Prometheus histogram with fixed buckets from 10 µs to 1 s, kept in atomics so an
//! observation is a short scan and two relaxed increments.

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

/// Upper bounds of the buckets, in seconds: they resolve microseconds (the engine) through tens of
/// milliseconds (a held `max_wait`) up to a second.
pub const BUCKETS_SECONDS: [f64; 16] = [
    0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025,
    0.05, 0.1, 0.25, 0.5, 1.0,
];

const BOUNDS_NANOS: [u64; 16] = [
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
];

/// A latency histogram. See the module docs.
#[derive(Debug, Default)]
pub struct LatencyHistogram {
    /// Observations per bucket (not cumulative); the last slot is +Inf.
    counts: [AtomicU64; 17],
    sum_nanos: AtomicU64,
}

/// A histogram read at one instant: cumulative counts per bucket, as Prometheus wants them.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct HistogramSnapshot {
    /// Cumulative count at each of [`BUCKETS_SECONDS`], then +Inf (= the total count).
    pub cumulative: [u64; 17],
    /// Sum of all observations, seconds.
    pub sum_seconds: f64,
}

impl LatencyHistogram {
    /// Records one observation.
    pub fn observe(&self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let i = BOUNDS_NANOS
            .iter()
            .position(|b| ns <= *b)
            .unwrap_or(BOUNDS_NANOS.len());
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        self.sum_nanos.fetch_add(ns, Ordering::Relaxed);
    }

    /// The histogram now.
    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut cumulative = [0; 17];
        let mut total = 0;
        for (c, n) in cumulative.iter_mut().zip(&self.counts) {
            total += n.load(Ordering::Relaxed);
            *c = total;
        }
        HistogramSnapshot {
            cumulative,
            sum_seconds: self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative_and_bounds_inclusive() {
        let h = LatencyHistogram::default();
        h.observe(Duration::from_micros(10)); // exactly the first bound
        h.observe(Duration::from_micros(11));
        h.observe(Duration::from_secs(2)); // beyond the last bound: +Inf only
        let s = h.snapshot();
        assert_eq!(s.cumulative[0], 1);
        assert_eq!(s.cumulative[1], 2);
        assert_eq!(s.cumulative[15], 2);
        assert_eq!(s.cumulative[16], 3);
        assert!((s.sum_seconds - 2.000_021).abs() < 1e-9);
    }

    #[test]
    fn bounds_match_the_published_buckets() {
        for (s, n) in BUCKETS_SECONDS.iter().zip(BOUNDS_NANOS) {
            assert_eq!((s * 1e9).round() as u64, n);
        }
    }
}
