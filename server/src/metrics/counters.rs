//! [`ResourceCounters`]: the per-resource counters the gRPC layer bumps on each call. Fixed arrays indexed
//! by decision, outcome and kind, so recording is one relaxed atomic increment, never a label lookup.

use std::sync::{
    Mutex,
    atomic::{AtomicU64, Ordering},
};

use crate::engine::{Denial, Outcome, ThrottleKind};

/// Acquire decisions, in label order.
pub const DECISIONS: [&str; 5] = [
    "granted",
    "rate_limited",
    "concurrency_limited",
    "circuit_open",
    "paused",
];

/// Release outcomes, in label order.
pub const OUTCOMES: [&str; 4] = ["success", "failure", "throttled", "unknown"];

/// Throttle report kinds, in label order.
pub const KINDS: [&str; 3] = ["throttled", "error", "timeout"];

/// Counters for one configured resource (rule).
#[derive(Debug, Default)]
pub struct ResourceCounters {
    /// Acquire answers by decision ([`DECISIONS`]).
    pub acquires: [AtomicU64; 5],
    /// Acquires answered from the idempotency cache (a retried request_id).
    pub idempotent_replays: AtomicU64,
    /// Acquires granted bypassing every limit (replays not counted again).
    pub bypassed: AtomicU64,
    /// Leases released, by outcome ([`OUTCOMES`]).
    pub releases: [AtomicU64; 4],
    /// Tokens refunded by settlement (used_permits below what was acquired).
    pub settle_refunded: AtomicU64,
    /// Tokens charged by settlement (used_permits above what was acquired).
    pub settle_charged: AtomicU64,
    /// Throttle reports by kind ([`KINDS`]).
    pub throttle_reports: [AtomicU64; 3],
    /// Reports that lowered the adaptive rate.
    pub rate_decreases: AtomicU64,
    /// Denials by partition value ("tenant=acme"), the heaviest few (for the status page).
    pub denied_partitions: Mutex<TopCounts>,
    /// Grants a shadow level would have denied, by level (`resource` or its descriptor key: bounded by
    /// the config).
    pub shadow_denials: Mutex<Vec<(String, u64)>>,
    /// The same by level and value ("tenant=acme"), the heaviest few (for the status page).
    pub shadow_denied: Mutex<TopCounts>,
}

/// The heaviest labels of an unbounded stream in bounded memory (Metwally et al.'s space-saving): at most
/// [`TopCounts::CAPACITY`] labels; a new label past that replaces the lightest and inherits its count, so a
/// count may be over by at most the count it replaced, and no heavy hitter is missed.
#[derive(Debug, Default)]
pub struct TopCounts {
    counts: Vec<(String, u64)>,
}

impl TopCounts {
    /// Labels tracked.
    pub const CAPACITY: usize = 32;

    /// Counts one `label`.
    pub fn add(&mut self, label: &str) {
        if let Some(e) = self.counts.iter_mut().find(|(l, _)| l == label) {
            e.1 += 1;
        } else if self.counts.len() < Self::CAPACITY {
            self.counts.push((label.to_owned(), 1));
        } else if let Some(min) = self.counts.iter_mut().min_by_key(|(_, n)| *n) {
            *min = (label.to_owned(), min.1 + 1);
        }
    }

    /// The `n` heaviest, heaviest first.
    pub fn top(&self, n: usize) -> Vec<(String, u64)> {
        let mut v = self.counts.clone();
        v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        v.truncate(n);
        v
    }
}

/// The [`DECISIONS`] index of an acquire's answer.
pub fn decision_index(denial: Option<Denial>) -> usize {
    match denial {
        None => 0,
        Some(Denial::RateLimited) => 1,
        Some(Denial::ConcurrencyLimited) => 2,
        Some(Denial::CircuitOpen) => 3,
        Some(Denial::Paused) => 4,
    }
}

/// The [`OUTCOMES`] index of a release outcome.
pub fn outcome_index(o: Outcome) -> usize {
    match o {
        Outcome::Success => 0,
        Outcome::Failure => 1,
        Outcome::Throttled => 2,
        Outcome::Unknown => 3,
    }
}

/// The [`KINDS`] index of a report kind.
pub fn kind_index(k: ThrottleKind) -> usize {
    match k {
        ThrottleKind::Throttled => 0,
        ThrottleKind::Error => 1,
        ThrottleKind::Timeout => 2,
    }
}

/// One relaxed increment.
pub fn bump(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indexes_match_the_label_tables() {
        assert_eq!(DECISIONS[decision_index(Some(Denial::Paused))], "paused");
        assert_eq!(DECISIONS[decision_index(None)], "granted");
        for d in [
            Denial::RateLimited,
            Denial::ConcurrencyLimited,
            Denial::CircuitOpen,
            Denial::Paused,
        ] {
            assert_eq!(DECISIONS[decision_index(Some(d))], d.as_str());
        }
        for o in [
            Outcome::Success,
            Outcome::Failure,
            Outcome::Throttled,
            Outcome::Unknown,
        ] {
            assert_eq!(OUTCOMES[outcome_index(o)], o.as_str());
        }
        for k in [
            ThrottleKind::Throttled,
            ThrottleKind::Error,
            ThrottleKind::Timeout,
        ] {
            assert_eq!(KINDS[kind_index(k)], k.as_str());
        }
    }
}

#[cfg(test)]
mod top_counts {
    use super::TopCounts;

    #[test]
    fn the_heaviest_labels_survive_a_flood_of_light_ones() {
        let mut t = TopCounts::default();
        // Space-saving keeps every label above total / CAPACITY (here about 400): these two are.
        for _ in 0..2000 {
            t.add("tenant=acme");
        }
        for i in 0..10_000 {
            t.add(&format!("tenant=t{i}"));
            if i % 10 == 0 {
                t.add("tenant=globex");
            }
        }
        let top = t.top(2);
        assert_eq!(top[0].0, "tenant=acme");
        assert_eq!(top[1].0, "tenant=globex");
        assert!(top[0].1 >= 2000 && top[1].1 >= 1000, "never under-counted");
        assert_eq!(t.top(100).len(), TopCounts::CAPACITY, "bounded");
    }
}
