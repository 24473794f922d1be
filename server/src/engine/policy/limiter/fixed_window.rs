//! `fixed_window`: `limit` permits per window of `period`, windows aligned to the Unix epoch (a 1 m window
//! starts on the minute). Exact: a window never admits more than its limit; a denial waits for the
//! window's end. Lua twin: `fixed_window_*` in `engine/redis/lua/policy.lua`.

// Wire-facing: every value here may come from a request, so arithmetic is checked or saturating.
#![cfg_attr(not(test), deny(clippy::arithmetic_side_effects))]

use super::{Limiter, window_start};
use crate::{
    clock::{Nanos, nanos},
    engine::RateSpec,
};

/// One fixed window's count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FixedWindow {
    /// The window the count belongs to (its start, a multiple of `period`).
    start: Nanos,
    count: u64,
    limit: u64,
    period: u64,
}

impl FixedWindow {
    /// A window as a store holds it: `count` permits taken in the window of `period` starting at
    /// `start`. Its limit is set by the next [`Limiter::sync`].
    pub fn from_parts(start: Nanos, count: u64, period: u64) -> Self {
        Self {
            start,
            count,
            limit: 0,
            period: period.max(1),
        }
    }

    /// The start of the window the count belongs to, and the count (what a store keeps).
    pub fn parts(&self) -> (Nanos, u64) {
        (self.start, self.count)
    }

    /// Permits taken in the window holding `now`.
    fn count_at(&self, now: Nanos) -> u64 {
        if window_start(now, self.period) == self.start {
            self.count
        } else {
            0
        }
    }

    /// Moves the count to the window holding `now` (a new window starts at 0).
    fn roll(&mut self, now: Nanos) {
        let start = window_start(now, self.period);
        if start != self.start {
            self.start = start;
            self.count = 0;
        }
    }

    /// Time from `now` to the end of its window.
    fn until_end(&self, now: Nanos) -> Nanos {
        window_start(now, self.period)
            .saturating_add(self.period)
            .saturating_sub(now)
    }
}

impl Limiter for FixedWindow {
    fn fresh(spec: &RateSpec, factor: f64) -> Self {
        Self {
            start: 0,
            count: 0,
            limit: spec.window_limit(factor),
            period: nanos(spec.period).max(1),
        }
    }

    fn sync(&mut self, spec: &RateSpec, factor: f64, now: Nanos) {
        let period = nanos(spec.period).max(1);
        if period != self.period {
            // A reload that changes the period keeps the count, in the window holding `now`.
            self.count = self.count_at(now);
            self.period = period;
            self.start = window_start(now, period);
        }
        self.limit = spec.window_limit(factor);
    }

    fn check(&self, now: Nanos, permits: u64) -> Result<(), Nanos> {
        if self.count_at(now).saturating_add(permits) <= self.limit {
            Ok(())
        } else {
            Err(self.until_end(now).max(1))
        }
    }

    fn debit(&mut self, now: Nanos, permits: u64) {
        self.roll(now);
        self.count = self.count.saturating_add(permits);
    }

    fn debit_bounded(&mut self, now: Nanos, permits: u64, max_debt: u64) -> u64 {
        self.roll(now);
        let room = self
            .limit
            .saturating_add(max_debt)
            .saturating_sub(self.count);
        let taken = permits.min(room);
        self.count = self.count.saturating_add(taken);
        taken
    }

    fn credit(&mut self, now: Nanos, permits: u64, charged_at: Nanos) {
        self.roll(now);
        // Only to the window the permits were taken from: an earlier window is over.
        if window_start(charged_at, self.period) == self.start {
            self.count = self.count.saturating_sub(permits);
        }
    }

    fn remaining(&self, now: Nanos) -> u64 {
        self.limit.saturating_sub(self.count_at(now))
    }

    fn capacity(&self) -> u64 {
        self.limit
    }

    fn reset_after(&self, now: Nanos) -> Nanos {
        if self.count_at(now) > 0 {
            self.until_end(now)
        } else {
            0
        }
    }

    fn is_full(&self, now: Nanos) -> bool {
        self.count_at(now) == 0
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::engine::rate::Algorithm;

    const SEC: Nanos = 1_000_000_000;
    /// 2026-01-01T00:00:00Z: a minute boundary.
    const T0: Nanos = 1_767_225_600 * SEC;

    fn window(limit: u64, period: Duration) -> FixedWindow {
        let spec = RateSpec::new(limit, period, limit).with_algorithm(Algorithm::FixedWindow);
        FixedWindow::fresh(&spec, 1.0)
    }

    #[test]
    fn a_window_admits_its_limit_and_denies_until_its_end() {
        let mut w = window(3, Duration::from_secs(60));
        let now = T0 + 20 * SEC;
        for _ in 0..3 {
            assert_eq!(w.check(now, 1), Ok(()));
            w.debit(now, 1);
        }
        assert_eq!(
            w.check(now, 1),
            Err(40 * SEC),
            "the window ends on the minute"
        );
        assert_eq!((w.remaining(now), w.reset_after(now)), (0, 40 * SEC));
        assert_eq!(w.check(T0 + 60 * SEC, 3), Ok(()), "a new window");
        assert!(w.is_full(T0 + 60 * SEC));
    }

    #[test]
    fn a_refund_goes_back_only_to_the_window_it_was_taken_from() {
        let mut w = window(2, Duration::from_secs(1));
        w.debit(T0, 2);
        w.credit(T0 + SEC / 2, 1, T0);
        assert_eq!(w.remaining(T0 + SEC / 2), 1);
        w.debit(T0 + SEC / 2, 1);
        w.credit(T0 + SEC, 2, T0 + SEC / 2);
        assert_eq!(
            w.remaining(T0 + SEC),
            2,
            "the earlier window's permits are not given to this one"
        );
    }

    #[test]
    fn a_settlement_charge_goes_at_most_max_debt_over_the_limit() {
        let mut w = window(5, Duration::from_secs(1));
        w.debit(T0, 4);
        assert_eq!(w.debit_bounded(T0, 10, 2), 3);
        assert_eq!(w.check(T0, 1), Err(SEC));
    }
}
