//! A rate limit as configured: `limit` per `period`, at most `burst`, and the algorithm that enforces it
//! (a [`Limiter`](super::policy::Limiter)).

// Wire-facing: every value here may come from a request, so arithmetic is checked or saturating.
#![cfg_attr(not(test), deny(clippy::arithmetic_side_effects))]

use std::time::Duration;

use crate::clock::nanos;

/// The algorithm a rate limit is enforced with (`rate.algorithm`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// GCRA: `burst` at once, refilled one token per `period / limit`. The default.
    #[default]
    TokenBucket,
    /// `limit` per window of `period`, windows aligned to the Unix epoch.
    FixedWindow,
    /// The two-window weighted counter: the previous window's count weighted by its part still inside the
    /// sliding period, plus the current window's.
    SlidingWindow,
}

impl Algorithm {
    /// Every algorithm, for messages that list them.
    pub const ALL: [Self; 3] = [Self::TokenBucket, Self::FixedWindow, Self::SlidingWindow];

    /// Its name in the config, on the wire and in the Redis script.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::TokenBucket => "token_bucket",
            Self::FixedWindow => "fixed_window",
            Self::SlidingWindow => "sliding_window",
        }
    }

    /// The algorithm named `name`.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.as_str() == name)
    }
}

/// A rate limit: `limit` tokens per `period`, holding at most `burst` tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateSpec {
    /// Tokens added per `period`.
    pub limit: u64,
    /// The refill period.
    pub period: Duration,
    /// Capacity: the most tokens that can be taken at once, and what a fresh bucket holds.
    pub burst: u64,
    /// The algorithm enforcing it.
    pub algorithm: Algorithm,
    /// Nanoseconds per token at the configured rate, computed once (every acquire needs it).
    nanos_per_token: u64,
}

impl RateSpec {
    /// `limit` tokens per `period`, holding at most `burst`.
    pub fn new(limit: u64, period: Duration, burst: u64) -> Self {
        Self {
            limit,
            period,
            burst,
            algorithm: Algorithm::TokenBucket,
            // Rounded up, so the bucket never refills faster than configured.
            nanos_per_token: nanos(period).div_ceil(limit.max(1)).max(1),
        }
    }

    /// Nanoseconds per token at `factor` × the configured rate (the adaptive multiplier, `1.0` when none).
    /// Rounded up, so the bucket never refills faster than configured.
    pub fn interval(&self, factor: f64) -> u64 {
        if !(factor > 0.0 && factor < 1.0) {
            // The configured rate (the common case): computed at construction.
            return self.nanos_per_token;
        }
        let base = nanos(self.period) as f64 / self.limit as f64;
        ((base / factor).ceil() as u64).max(1)
    }

    /// The same limit enforced by `algorithm` (a window's capacity is its `limit`: `burst` is set to it).
    pub fn with_algorithm(self, algorithm: Algorithm) -> Self {
        let burst = if algorithm == Algorithm::TokenBucket {
            self.burst
        } else {
            self.limit
        };
        Self {
            algorithm,
            burst,
            ..self
        }
    }

    /// A window's limit at `factor` × the configured rate (the adaptive multiplier): rounded down, at
    /// least 1.
    pub fn window_limit(&self, factor: f64) -> u64 {
        if !(factor > 0.0 && factor < 1.0) {
            return self.limit;
        }
        ((self.limit as f64 * factor).floor() as u64).max(1)
    }

    /// The configured rate in tokens per second.
    pub fn per_second(&self) -> f64 {
        self.limit as f64 / self.period.as_secs_f64()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: u64 = 1_000_000_000;

    fn spec(limit: u64, period_s: u64, burst: u64) -> RateSpec {
        RateSpec::new(limit, Duration::from_secs(period_s), burst)
    }

    #[test]
    fn interval_rounds_up_and_scales_with_factor() {
        assert_eq!(spec(3, 1, 1).interval(1.0), 333_333_334);
        assert_eq!(spec(30, 60, 1).interval(1.0), 2 * SEC);
        assert_eq!(spec(10, 1, 1).interval(0.5), SEC / 5);
    }
}
