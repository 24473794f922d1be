//! `token_bucket`: the token bucket as a generic cell rate algorithm (GCRA). One timestamp says when the
//! bucket will be full again; integer nanoseconds throughout, so limits are exact and `retry_after` is
//! exact too. Lua twin: `bucket_*` in `engine/redis/lua/policy.lua`.

// Wire-facing: every value here may come from a request, so arithmetic is checked or saturating.
#![cfg_attr(not(test), deny(clippy::arithmetic_side_effects))]

use super::Limiter;
use crate::{clock::Nanos, engine::RateSpec};

/// One token bucket. `tat` (theoretical arrival time) is the instant the bucket will be full again; a bucket
/// whose `tat` is in the past is full. Tokens available at `now` are `burst - (tat - now) / interval`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bucket {
    tat: Nanos,
    interval: u64,
    burst: u64,
}

impl Bucket {
    /// A full bucket refilling one token per `interval` nanoseconds, holding at most `burst`.
    #[inline]
    pub fn new(interval: u64, burst: u64) -> Self {
        Self {
            tat: 0,
            interval: interval.max(1),
            burst,
        }
    }

    /// The current refill interval (nanoseconds per token).
    #[inline]
    pub fn interval(&self) -> u64 {
        self.interval
    }

    /// The capacity.
    #[inline]
    pub fn burst(&self) -> u64 {
        self.burst
    }

    #[inline]
    fn deficit(&self, now: Nanos) -> u128 {
        u128::from(self.tat.saturating_sub(now))
    }

    /// The bucket's span: burst × interval, the deficit at which it is empty.
    #[inline]
    fn span(&self) -> u128 {
        u128::from(self.burst).saturating_mul(u128::from(self.interval))
    }

    /// Applies new parameters (a config reload or an adaptive rate change) without losing state: the tokens
    /// owed are kept, re-timed at the new interval, and the tokens available are clamped to the new burst
    /// (a larger burst does not hand out extra tokens at once).
    #[inline]
    pub fn retune(&mut self, now: Nanos, interval: u64, burst: u64) {
        let interval = interval.max(1);
        if interval == self.interval && burst == self.burst {
            return;
        }
        let old_interval = u128::from(self.interval);
        let new_interval = u128::from(interval);
        // Owed tokens, in units of 1/old_interval token, so the conversion loses nothing before rounding.
        let owed_time = self.deficit(now);
        let mut new_deficit = owed_time.saturating_mul(new_interval);
        let (old_burst, new_burst) = (u128::from(self.burst), u128::from(burst));
        if new_burst >= old_burst {
            let added = (new_burst.saturating_sub(old_burst))
                .saturating_mul(new_interval)
                .saturating_mul(old_interval);
            new_deficit = new_deficit.saturating_add(added);
        } else {
            new_deficit = new_deficit.saturating_sub(
                (old_burst.saturating_sub(new_burst))
                    .saturating_mul(new_interval)
                    .saturating_mul(old_interval),
            );
        }
        let new_deficit = new_deficit.div_ceil(old_interval);
        self.interval = interval;
        self.burst = burst;
        self.tat = if new_deficit == 0 {
            0
        } else {
            now.saturating_add(clamp_u64(new_deficit))
        };
    }

    /// A bucket as a store holds it: full again at `tat`, one token per `interval`, `burst` at most.
    #[inline]
    pub fn from_parts(tat: Nanos, interval: u64, burst: u64) -> Self {
        Self {
            tat,
            interval: interval.max(1),
            burst,
        }
    }
}

impl Limiter for Bucket {
    #[inline]
    fn fresh(spec: &RateSpec, factor: f64) -> Self {
        Self::new(spec.interval(factor), spec.burst)
    }

    #[inline]
    fn sync(&mut self, spec: &RateSpec, factor: f64, now: Nanos) {
        self.retune(now, spec.interval(factor), spec.burst);
    }

    #[inline]
    fn capacity(&self) -> u64 {
        self.burst
    }

    /// `Ok` when `permits` tokens are available now; otherwise the exact wait until they will be.
    #[inline]
    fn check(&self, now: Nanos, permits: u64) -> Result<(), Nanos> {
        let needed = self
            .deficit(now)
            .saturating_add(u128::from(permits).saturating_mul(u128::from(self.interval)));
        let capacity = self.span();
        if needed <= capacity {
            Ok(())
        } else {
            Err(clamp_u64(needed.saturating_sub(capacity)))
        }
    }

    /// Takes `permits` tokens, going into debt if there are not enough (callers [`check`](Self::check)
    /// first, except when settling a cost that was already incurred).
    #[inline]
    fn debit(&mut self, now: Nanos, permits: u64) {
        let cost = u128::from(permits).saturating_mul(u128::from(self.interval));
        self.tat = clamp_u64(u128::from(self.tat.max(now)).saturating_add(cost));
    }

    /// Takes up to `permits` tokens for a cost already incurred (settlement), never putting the bucket more
    /// than `max_debt` tokens below empty. Returns the tokens taken.
    #[inline]
    fn debit_bounded(&mut self, now: Nanos, permits: u64, max_debt: u64) -> u64 {
        let base = u128::from(self.tat.max(now));
        let interval = u128::from(self.interval);
        let most = u128::from(self.burst).saturating_add(u128::from(max_debt));
        let floor = u128::from(now).saturating_add(most.saturating_mul(interval));
        let room = floor
            .saturating_sub(base)
            .checked_div(interval)
            .unwrap_or(0);
        let taken = u128::from(permits).min(room);
        self.tat = clamp_u64(base.saturating_add(taken.saturating_mul(interval)));
        clamp_u64(taken)
    }

    /// Gives back `permits` tokens, never beyond a full bucket.
    #[inline]
    fn credit(&mut self, now: Nanos, permits: u64, _charged_at: Nanos) {
        let refund = clamp_u64(u128::from(permits).saturating_mul(u128::from(self.interval)));
        let tat = self.tat.saturating_sub(refund);
        self.tat = if tat <= now { 0 } else { tat };
    }

    /// Whole tokens available now (0 while in debt).
    #[inline]
    fn remaining(&self, now: Nanos) -> u64 {
        if let Some(capacity) = self.burst.checked_mul(self.interval) {
            // The usual sizes fit in 64 bits: no 128-bit division.
            return capacity
                .saturating_sub(self.tat.saturating_sub(now))
                .checked_div(self.interval)
                .unwrap_or(0);
        }
        let capacity = self.span();
        let deficit = self.deficit(now);
        if deficit >= capacity {
            0
        } else {
            clamp_u64(
                capacity
                    .saturating_sub(deficit)
                    .checked_div(u128::from(self.interval))
                    .unwrap_or(0),
            )
        }
    }

    /// Time until the bucket is full.
    #[inline]
    fn reset_after(&self, now: Nanos) -> Nanos {
        self.tat.saturating_sub(now)
    }

    /// True when the bucket is full, so it is identical to a fresh one and may be dropped.
    #[inline]
    fn is_full(&self, now: Nanos) -> bool {
        self.tat <= now
    }
}

fn clamp_u64(v: u128) -> u64 {
    u64::try_from(v).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::RateSpec;
    use std::time::Duration;

    const SEC: u64 = 1_000_000_000;

    fn spec(limit: u64, period_s: u64, burst: u64) -> RateSpec {
        RateSpec::new(limit, Duration::from_secs(period_s), burst)
    }

    #[test]
    fn fresh_bucket_allows_burst_then_denies_with_exact_retry_after() {
        let s = spec(10, 1, 5);
        let mut b = Bucket::new(s.interval(1.0), s.burst);
        for _ in 0..5 {
            assert_eq!(b.check(0, 1), Ok(()));
            b.debit(0, 1);
        }
        assert_eq!(b.remaining(0), 0);
        assert_eq!(b.check(0, 1), Err(SEC / 10));
        assert_eq!(b.check(SEC / 10 - 1, 1), Err(1));
        assert_eq!(b.check(SEC / 10, 1), Ok(()));
        assert_eq!(b.reset_after(0), SEC / 2);
    }

    #[test]
    fn credit_refunds_but_never_beyond_full() {
        let mut b = Bucket::new(SEC, 10);
        b.debit(0, 4);
        assert_eq!(b.remaining(0), 6);
        b.credit(0, 2, 0);
        assert_eq!(b.remaining(0), 8);
        b.credit(0, 100, 0);
        assert_eq!(b.remaining(0), 10);
        assert!(b.is_full(0));
    }

    #[test]
    fn debt_delays_later_grants() {
        let mut b = Bucket::new(SEC, 2);
        b.debit(0, 5);
        assert_eq!(b.remaining(0), 0);
        // 5 owed with burst 2: one token is available again after 4 s.
        assert_eq!(b.check(0, 1), Err(4 * SEC));
    }

    #[test]
    fn retune_keeps_owed_tokens_and_clamps_to_new_burst() {
        let mut b = Bucket::new(SEC, 10);
        b.debit(0, 4); // 6 left
        b.retune(0, SEC / 2, 10);
        assert_eq!(b.remaining(0), 6);
        assert_eq!(b.reset_after(0), 2 * SEC);
        b.retune(0, SEC / 2, 3); // clamp 6 -> 3
        assert_eq!(b.remaining(0), 3);
        assert!(b.is_full(0));
        b.retune(0, SEC / 2, 8); // growing does not add tokens at once
        assert_eq!(b.remaining(0), 3);
    }

    proptest::proptest! {
        #[test]
        fn remaining_is_exact_in_64_or_128_bits(
            interval in 1u64..,
            burst: u64,
            tat: u64,
            now: u64,
        ) {
            let b = Bucket { tat, interval, burst };
            let capacity = u128::from(burst) * u128::from(interval);
            let deficit = u128::from(tat.saturating_sub(now));
            let exact = capacity.saturating_sub(deficit) / u128::from(interval);
            proptest::prop_assert_eq!(u128::from(b.remaining(now)), exact);
        }
    }
}
