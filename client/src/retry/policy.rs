//! How often and how long to retry.

use std::time::Duration;

/// How retry delays are randomised, as defined in the AWS Architecture Blog's "Exponential Backoff and
/// Jitter". With `b = min(max_backoff, initial_backoff × multiplier^n)` for retry `n` (from 0):
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Jitter {
    /// `b` exactly (not recommended for fleets: everyone retries in lock-step).
    None,
    /// `random(0, b)`: the most spread; the default.
    #[default]
    Full,
    /// `b/2 + random(0, b/2)`: never less than half the backoff.
    Equal,
    /// `min(max_backoff, random(initial_backoff, previous × 3))`: grows from the last delay rather than
    /// the attempt count.
    Decorrelated,
}

/// When and how long to retry. Denials, throttles and transport errors all retry under one policy.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (1 means never retry).
    pub max_attempts: u32,
    /// The first backoff.
    pub initial_backoff: Duration,
    /// The largest backoff.
    pub max_backoff: Duration,
    /// Growth per retry (≥ 1).
    pub multiplier: f64,
    /// Give up once this much time has passed since the first attempt (`None`: attempts only).
    pub deadline: Option<Duration>,
    /// How delays are randomised.
    pub jitter: Jitter,
}

impl Default for RetryPolicy {
    /// 5 attempts, 100 ms doubling to 10 s, full jitter, within 60 s.
    fn default() -> Self {
        Self {
            max_attempts: 5,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(10),
            multiplier: 2.0,
            deadline: Some(Duration::from_secs(60)),
            jitter: Jitter::Full,
        }
    }
}

impl RetryPolicy {
    /// A policy that never retries.
    pub fn no_retries() -> Self {
        Self {
            max_attempts: 1,
            ..Self::default()
        }
    }

    /// The un-jittered backoff before retry `n` (0-based): `min(max, initial × multiplier^n)`.
    pub fn bound(&self, n: u32) -> Duration {
        let factor = self.multiplier.max(1.0).powi(n.min(1000) as i32);
        let secs =
            (self.initial_backoff.as_secs_f64() * factor).min(self.max_backoff.as_secs_f64());
        Duration::try_from_secs_f64(secs).unwrap_or(self.max_backoff)
    }
}
