//! One level's state: its token bucket and its count of leases in flight.

use crate::{
    clock::Nanos,
    engine::{Bucket, LevelSpec},
};

/// A level's live state. The bucket's parameters follow the rule (and the adaptive rate) on every access.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LevelCell {
    /// The token bucket, when the level has a rate limit.
    pub bucket: Option<Bucket>,
    /// Leases holding a slot here.
    pub in_flight: u32,
}

impl LevelCell {
    /// Brings the bucket in line with `spec` at `factor` × its rate, keeping the tokens owed.
    pub fn sync(&mut self, spec: &LevelSpec, factor: f64, now: Nanos) {
        match spec.rate {
            Some(rate) => {
                let interval = rate.interval(factor);
                match &mut self.bucket {
                    Some(b) => b.retune(now, interval, rate.burst),
                    None => self.bucket = Some(Bucket::new(interval, rate.burst)),
                }
            }
            None => self.bucket = None,
        }
    }

    /// True when nothing is held and the bucket is full: a fresh cell would be identical.
    pub fn is_idle(&self, now: Nanos) -> bool {
        self.in_flight == 0 && self.bucket.is_none_or(|b| b.is_full(now))
    }
}
