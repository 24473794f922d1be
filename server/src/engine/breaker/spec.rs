//! What a breaker is configured with.

use std::time::Duration;

/// A circuit breaker's parameters (validated by the config layer).
#[derive(Debug, Clone, PartialEq)]
pub struct BreakerSpec {
    /// Opens when failures / calls in the window reach this (0 < rate ≤ 1) ...
    pub failure_rate: f64,
    /// ... with at least this many calls in the window.
    pub min_calls: u32,
    /// Length of the sliding window.
    pub window: Duration,
    /// Also opens after this many failures in a row (0 disables).
    pub consecutive_failures: u32,
    /// How long it stays OPEN before HALF_OPEN.
    pub open_duration: Duration,
    /// Each re-open from HALF_OPEN multiplies the open duration by this (≥ 1) ...
    pub open_backoff: f64,
    /// ... up to this.
    pub max_open_duration: Duration,
    /// Probe leases granted across the whole fleet while HALF_OPEN.
    pub half_open_probes: u32,
    /// Probe successes needed to close (≤ `half_open_probes`).
    pub half_open_successes: u32,
}

impl Default for BreakerSpec {
    fn default() -> Self {
        Self {
            failure_rate: 0.5,
            min_calls: 20,
            window: Duration::from_secs(60),
            consecutive_failures: 0,
            open_duration: Duration::from_secs(30),
            open_backoff: 2.0,
            max_open_duration: Duration::from_secs(300),
            half_open_probes: 3,
            half_open_successes: 3,
        }
    }
}
