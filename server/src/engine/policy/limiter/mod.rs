//! A level's limit algorithm. Every algorithm is a [`Limiter`]: one file here, one set of Lua functions
//! with the same names in `engine/redis/lua/policy.lua` (its twin, held to it by `tests/twins.rs`), a
//! variant of [`Limit`], and a conformance case. The policy ([`super::judge`], settlement, explain) talks
//! to a level's limit only through this trait, so it never knows which algorithm it is.
//!
//! - [`token_bucket`]: GCRA, the default.
//! - [`fixed_window`]: a count per window aligned to the Unix epoch.
//! - [`sliding_window`]: the two-window weighted counter.

pub mod fixed_window;
pub mod sliding_window;
pub mod token_bucket;

pub use fixed_window::FixedWindow;
pub use sliding_window::SlidingWindow;
pub use token_bucket::Bucket;

use crate::{
    clock::Nanos,
    engine::{RateSpec, rate::Algorithm},
};

/// The start of the window of `period` holding `now`: windows are aligned to the Unix epoch.
pub fn window_start(now: Nanos, period: u64) -> Nanos {
    now.saturating_sub(now.checked_rem(period).unwrap_or(0))
}

/// What the policy asks of a level's limit. Amounts are permits; waits and instants are nanoseconds on
/// the engine's clock. Every method is total: arithmetic saturates, nothing panics.
pub trait Limiter {
    /// A fresh limit for `spec` at `factor` × its rate (the adaptive multiplier; 1.0 when none).
    fn fresh(spec: &RateSpec, factor: f64) -> Self
    where
        Self: Sized;

    /// Follows a changed `spec` or `factor` (a reload, an adaptive change) keeping what is owed.
    fn sync(&mut self, spec: &RateSpec, factor: f64, now: Nanos);

    /// `Ok` when `permits` can be taken now; otherwise the exact wait until they can.
    fn check(&self, now: Nanos, permits: u64) -> Result<(), Nanos>;

    /// Takes `permits` (after a successful [`check`](Self::check)).
    fn debit(&mut self, now: Nanos, permits: u64);

    /// Takes up to `permits` for a cost already incurred (settlement), never going more than `max_debt`
    /// below empty. Returns what it took.
    fn debit_bounded(&mut self, now: Nanos, permits: u64, max_debt: u64) -> u64;

    /// Gives back `permits` taken at `charged_at` (a refund), never beyond full (a window gives them back
    /// only while the window they were taken from counts).
    fn credit(&mut self, now: Nanos, permits: u64, charged_at: Nanos);

    /// Whole permits available now.
    fn remaining(&self, now: Nanos) -> u64;

    /// The most permits it can hold: the `limit` answers report.
    fn capacity(&self) -> u64;

    /// Time until it is full again.
    fn reset_after(&self, now: Nanos) -> Nanos;

    /// True when identical to a fresh one (so its state may be dropped).
    fn is_full(&self, now: Nanos) -> bool;
}

/// A level's limit, whichever algorithm its rule names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// `algorithm = "token_bucket"`.
    TokenBucket(Bucket),
    /// `algorithm = "fixed_window"`.
    FixedWindow(FixedWindow),
    /// `algorithm = "sliding_window"`.
    SlidingWindow(SlidingWindow),
}

impl Limit {
    /// Its algorithm.
    pub fn algorithm(&self) -> Algorithm {
        match self {
            Self::TokenBucket(_) => Algorithm::TokenBucket,
            Self::FixedWindow(_) => Algorithm::FixedWindow,
            Self::SlidingWindow(_) => Algorithm::SlidingWindow,
        }
    }
}

/// Runs `$e` on the algorithm inside a [`Limit`].
macro_rules! each {
    ($limit:expr, $l:ident => $e:expr) => {
        match $limit {
            Limit::TokenBucket($l) => $e,
            Limit::FixedWindow($l) => $e,
            Limit::SlidingWindow($l) => $e,
        }
    };
}

impl Limiter for Limit {
    #[inline]
    fn fresh(spec: &RateSpec, factor: f64) -> Self {
        match spec.algorithm {
            Algorithm::TokenBucket => Self::TokenBucket(Bucket::fresh(spec, factor)),
            Algorithm::FixedWindow => Self::FixedWindow(FixedWindow::fresh(spec, factor)),
            Algorithm::SlidingWindow => Self::SlidingWindow(SlidingWindow::fresh(spec, factor)),
        }
    }

    #[inline]
    fn sync(&mut self, spec: &RateSpec, factor: f64, now: Nanos) {
        if spec.algorithm != self.algorithm() {
            // A reload that changes the algorithm starts it fresh.
            *self = Self::fresh(spec, factor);
            return;
        }
        each!(self, l => l.sync(spec, factor, now));
    }

    #[inline]
    fn check(&self, now: Nanos, permits: u64) -> Result<(), Nanos> {
        each!(self, l => l.check(now, permits))
    }

    #[inline]
    fn debit(&mut self, now: Nanos, permits: u64) {
        each!(self, l => l.debit(now, permits));
    }

    #[inline]
    fn debit_bounded(&mut self, now: Nanos, permits: u64, max_debt: u64) -> u64 {
        each!(self, l => l.debit_bounded(now, permits, max_debt))
    }

    #[inline]
    fn credit(&mut self, now: Nanos, permits: u64, charged_at: Nanos) {
        each!(self, l => l.credit(now, permits, charged_at));
    }

    #[inline]
    fn remaining(&self, now: Nanos) -> u64 {
        each!(self, l => l.remaining(now))
    }

    #[inline]
    fn capacity(&self) -> u64 {
        each!(self, l => l.capacity())
    }

    #[inline]
    fn reset_after(&self, now: Nanos) -> Nanos {
        each!(self, l => l.reset_after(now))
    }

    #[inline]
    fn is_full(&self, now: Nanos) -> bool {
        each!(self, l => l.is_full(now))
    }
}
