//! A level's limit algorithm. Every algorithm is a [`Limiter`]: one file here, one set of Lua functions
//! with the same names in `engine/redis/lua/policy.lua` (its twin, held to it by `tests/twins.rs`), a
//! variant of [`Limit`], and a conformance case. The policy ([`super::judge`], settlement, explain) talks
//! to a level's limit only through this trait, so it never knows which algorithm it is.
//!
//! - [`token_bucket`]: GCRA, the default.

pub mod token_bucket;

pub use token_bucket::Bucket;

use crate::{clock::Nanos, engine::RateSpec};

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

    /// Gives back `permits` (a refund), never beyond full.
    fn credit(&mut self, now: Nanos, permits: u64);

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
}

/// Runs `$e` on the algorithm inside a [`Limit`].
macro_rules! each {
    ($limit:expr, $l:ident => $e:expr) => {
        match $limit {
            Limit::TokenBucket($l) => $e,
        }
    };
}

impl Limiter for Limit {
    fn fresh(spec: &RateSpec, factor: f64) -> Self {
        Self::TokenBucket(Bucket::fresh(spec, factor))
    }

    fn sync(&mut self, spec: &RateSpec, factor: f64, now: Nanos) {
        each!(self, l => l.sync(spec, factor, now));
    }

    fn check(&self, now: Nanos, permits: u64) -> Result<(), Nanos> {
        each!(self, l => l.check(now, permits))
    }

    fn debit(&mut self, now: Nanos, permits: u64) {
        each!(self, l => l.debit(now, permits));
    }

    fn debit_bounded(&mut self, now: Nanos, permits: u64, max_debt: u64) -> u64 {
        each!(self, l => l.debit_bounded(now, permits, max_debt))
    }

    fn credit(&mut self, now: Nanos, permits: u64) {
        each!(self, l => l.credit(now, permits));
    }

    fn remaining(&self, now: Nanos) -> u64 {
        each!(self, l => l.remaining(now))
    }

    fn capacity(&self) -> u64 {
        each!(self, l => l.capacity())
    }

    fn reset_after(&self, now: Nanos) -> Nanos {
        each!(self, l => l.reset_after(now))
    }

    fn is_full(&self, now: Nanos) -> bool {
        each!(self, l => l.is_full(now))
    }
}
