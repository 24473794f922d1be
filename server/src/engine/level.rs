//! One level's state: its limit (whichever algorithm the rule names) and its count of leases in flight.

use crate::{
    clock::Nanos,
    engine::{
        LevelSpec,
        policy::{Limit, Limiter},
    },
};

/// A level's live state. The limit's parameters follow the rule (and the adaptive rate) on every access.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LevelCell {
    /// The limit, when the level has a rate limit.
    pub limit: Option<Limit>,
    /// Leases holding a slot here.
    pub in_flight: u32,
}

impl LevelCell {
    /// Brings the limit in line with `spec` at `factor` × its rate, keeping what is owed.
    #[inline]
    pub fn sync(&mut self, spec: &LevelSpec, factor: f64, now: Nanos) {
        match (&spec.rate, &mut self.limit) {
            (Some(rate), Some(l)) => l.sync(rate, factor, now),
            (Some(rate), None) => self.limit = Some(Limit::fresh(rate, factor)),
            (None, _) => self.limit = None,
        }
    }

    /// True when nothing is held and the limit is full: a fresh cell would be identical.
    #[inline]
    pub fn is_idle(&self, now: Nanos) -> bool {
        self.in_flight == 0 && self.limit.is_none_or(|l| l.is_full(now))
    }
}
