//! A retry budget in the spirit of gRPC's retry throttling: a token bucket where each failed call costs one
//! token and each success refills `token_ratio`; retries are allowed only while more than half the tokens
//! remain. A fleet facing an outage thus backs off to about one retry per `1 / token_ratio` successes instead
//! of multiplying its load by `max_attempts`.

use std::sync::Mutex;

/// See the module docs. Shared by every call of one client.
#[derive(Debug)]
pub struct RetryBudget {
    max_tokens: f64,
    token_ratio: f64,
    tokens: Mutex<f64>,
}

impl Default for RetryBudget {
    /// gRPC's example values: 10 tokens, 0.1 refilled per success.
    fn default() -> Self {
        Self::new(10.0, 0.1)
    }
}

impl RetryBudget {
    /// A full budget of `max_tokens`, refilled by `token_ratio` per success.
    pub fn new(max_tokens: f64, token_ratio: f64) -> Self {
        let max_tokens = max_tokens.max(1.0);
        Self {
            max_tokens,
            token_ratio: token_ratio.max(0.0),
            tokens: Mutex::new(max_tokens),
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut f64) -> R) -> R {
        let mut t = self
            .tokens
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut t)
    }

    /// A call succeeded (reached quotad and got an answer).
    pub fn on_success(&self) {
        let (max, ratio) = (self.max_tokens, self.token_ratio);
        self.with(|t| *t = (*t + ratio).min(max));
    }

    /// A call failed with a retryable transport error.
    pub fn on_failure(&self) {
        self.with(|t| *t = (*t - 1.0).max(0.0));
    }

    /// True while retries are allowed.
    pub fn allows_retry(&self) -> bool {
        let half = self.max_tokens / 2.0;
        self.with(|t| *t > half)
    }

    /// Tokens left.
    pub fn tokens(&self) -> f64 {
        self.with(|t| *t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_exhaust_and_successes_refill() {
        let b = RetryBudget::new(10.0, 0.5);
        for _ in 0..4 {
            b.on_failure();
        }
        assert!(b.allows_retry(), "6 tokens > 5");
        b.on_failure();
        assert!(!b.allows_retry(), "5 tokens is not more than half");
        b.on_success();
        assert!(b.allows_retry());
        for _ in 0..100 {
            b.on_success();
        }
        assert_eq!(b.tokens(), 10.0);
    }
}
