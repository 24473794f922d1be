//! The delay before each retry of one logical call.

use std::time::Duration;

use super::{Jitter, RetryPolicy};

/// Computes successive delays for one logical call under a [`RetryPolicy`].
#[derive(Debug, Clone)]
pub struct Backoff {
    policy: RetryPolicy,
    retries: u32,
    previous: Duration,
    rng: fastrand::Rng,
}

fn uniform(rng: &mut fastrand::Rng, low: Duration, high: Duration) -> Duration {
    if high <= low {
        return low;
    }
    let span = (high - low).as_nanos().min(u128::from(u64::MAX)) as u64;
    low + Duration::from_nanos(rng.u64(0..=span))
}

impl Backoff {
    /// Delays for a fresh call.
    pub fn new(policy: &RetryPolicy) -> Self {
        Self::with_rng(policy, fastrand::Rng::new())
    }

    /// Delays drawn from a seeded generator (tests).
    pub fn with_rng(policy: &RetryPolicy, rng: fastrand::Rng) -> Self {
        Self {
            policy: policy.clone(),
            retries: 0,
            previous: policy.initial_backoff,
            rng,
        }
    }

    /// Retries computed so far.
    pub fn retries(&self) -> u32 {
        self.retries
    }

    /// The next delay after a failure (a transport error, or a throttle without a retry-after), by the
    /// policy's jitter strategy.
    pub fn next_delay(&mut self) -> Duration {
        let p = &self.policy;
        let bound = p.bound(self.retries);
        let delay = match p.jitter {
            Jitter::None => bound,
            Jitter::Full => uniform(&mut self.rng, Duration::ZERO, bound),
            Jitter::Equal => bound / 2 + uniform(&mut self.rng, Duration::ZERO, bound - bound / 2),
            Jitter::Decorrelated => {
                let high = (self.previous * 3).max(p.initial_backoff);
                uniform(&mut self.rng, p.initial_backoff, high).min(p.max_backoff)
            }
        };
        self.retries += 1;
        self.previous = delay.max(p.initial_backoff);
        delay
    }

    /// The next delay when the server (or the downstream) said when to retry: never less than
    /// `retry_after`, plus a jittered spread of at most `min(backoff, max(retry_after, initial_backoff))`
    /// so a fleet told the same instant does not come back all at once.
    pub fn after(&mut self, retry_after: Duration) -> Duration {
        let spread = self
            .next_delay()
            .min(retry_after.max(self.policy.initial_backoff));
        retry_after + spread
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn policy(jitter: Jitter) -> RetryPolicy {
        RetryPolicy {
            max_attempts: 10,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            multiplier: 2.0,
            deadline: None,
            jitter,
        }
    }

    #[test]
    fn bound_grows_and_caps() {
        let p = policy(Jitter::None);
        let b: Vec<_> = (0..8).map(|n| p.bound(n).as_millis()).collect();
        assert_eq!(b, vec![100, 200, 400, 800, 1600, 3200, 5000, 5000]);
    }

    proptest! {
        #[test]
        fn full_jitter_is_within_zero_and_the_bound(seed: u64, n in 0u32..20) {
            let p = policy(Jitter::Full);
            let mut b = Backoff::with_rng(&p, fastrand::Rng::with_seed(seed));
            for i in 0..n {
                let d = b.next_delay();
                prop_assert!(d <= p.bound(i));
            }
        }

        #[test]
        fn equal_jitter_is_at_least_half_the_bound(seed: u64, n in 0u32..20) {
            let p = policy(Jitter::Equal);
            let mut b = Backoff::with_rng(&p, fastrand::Rng::with_seed(seed));
            for i in 0..n {
                let d = b.next_delay();
                prop_assert!(d >= p.bound(i) / 2 && d <= p.bound(i));
            }
        }

        #[test]
        fn decorrelated_jitter_stays_between_initial_and_max(seed: u64, n in 0u32..50) {
            let p = policy(Jitter::Decorrelated);
            let mut b = Backoff::with_rng(&p, fastrand::Rng::with_seed(seed));
            let mut previous = p.initial_backoff;
            for _ in 0..n {
                let d = b.next_delay();
                prop_assert!(d >= p.initial_backoff && d <= p.max_backoff);
                prop_assert!(d <= (previous * 3).max(p.initial_backoff));
                previous = d;
            }
        }

        #[test]
        fn a_server_retry_after_is_never_undercut(seed: u64, ms in 0u64..100_000, jitter in 0usize..4) {
            let j = [Jitter::None, Jitter::Full, Jitter::Equal, Jitter::Decorrelated][jitter];
            let p = policy(j);
            let mut b = Backoff::with_rng(&p, fastrand::Rng::with_seed(seed));
            let retry_after = Duration::from_millis(ms);
            for _ in 0..5 {
                let d = b.after(retry_after);
                prop_assert!(d >= retry_after);
                prop_assert!(d <= retry_after + retry_after.max(p.initial_backoff));
            }
        }
    }

    #[test]
    fn full_jitter_spreads_over_the_whole_range() {
        // Distribution: over many draws of the first retry (bound 100 ms), each tenth of the range is hit
        // roughly equally (a seeded generator keeps this deterministic).
        let p = policy(Jitter::Full);
        let mut rng = fastrand::Rng::with_seed(7);
        let mut buckets = [0u32; 10];
        for _ in 0..10_000 {
            let d = Backoff::with_rng(&p, rng.fork()).next_delay();
            buckets[((d.as_nanos() * 10 / 100_000_001) as usize).min(9)] += 1;
        }
        assert!(
            buckets.iter().all(|&n| (800..1200).contains(&n)),
            "{buckets:?}"
        );
    }
}
