//! Counting hits against several counters at once, as a gateway asks (Envoy's rate limit service): each
//! counter is one level's limit, checked and debited with the request's other counters in one atomic step.
//! No lease is kept: nothing is released later.
//!
//! The request is all or none: when it is over the limit, no enforced counter is debited. A counter's mode
//! says how it takes part:
//! - [`HitMode::Enforced`]: over its limit, it makes the request over the limit;
//! - [`HitMode::Quota`]: over its limit, it makes the request over only when every quota counter of the
//!   request is over (a request with room in any one of its quotas passes, debiting those with room);
//! - [`HitMode::Shadow`]: never makes the request over; debited whenever it has room, whatever the request's
//!   answer (what would have been refused is reported by its status).
//!
//! A negative hit gives permits back (a refund to the current window, never beyond full) and is never over.
//! Two counters of one request on the same state (the same key) count together: a later one is checked
//! after what the earlier ones would take. Lua twin: `OPS.hit` in `engine/redis/lua/steps.lua`.

use std::borrow::Cow;

use smallvec::SmallVec;

use super::{Limiter, limiter::window_start};
use crate::{
    clock::{Nanos, nanos},
    engine::{Algorithm, LevelSpec, level::LevelCell},
};

/// How a counter's being over its limit counts for its request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HitMode {
    /// Over its limit, the request is over.
    Enforced,
    /// Over its limit, the request is over only when all its quota counters are.
    Quota,
    /// Never makes the request over.
    Shadow,
}

/// One counter a request hits.
#[derive(Debug, Clone)]
pub struct Hit<'a> {
    /// The state key: its first part (up to [`KEY_SEP`](crate::engine::plan::KEY_SEP)) chooses the shard,
    /// so every counter of one request must share it.
    pub key: Cow<'a, str>,
    /// Its limit (a rate; no concurrency).
    pub spec: LevelSpec,
    /// Permits to take (0: only check).
    pub permits: u64,
    /// How its being over counts.
    pub mode: HitMode,
    /// Gives `permits` back instead of taking them.
    pub negative: bool,
}

/// The counters of one request, in the request's order.
#[derive(Debug, Clone, Default)]
pub struct HitPlan<'a> {
    /// Each counter.
    pub hits: SmallVec<[Hit<'a>; 4]>,
}

impl HitPlan<'_> {
    /// The distinct state keys, in first-seen order, and each hit's index among them.
    pub fn cells(&self) -> (Cells<'_>, CellIndex) {
        let mut keys = Cells::new();
        let mut index = CellIndex::with_capacity(self.hits.len());
        for hit in &self.hits {
            match keys.iter().position(|k| *k == hit.key) {
                Some(i) => index.push(i),
                None => {
                    index.push(keys.len());
                    keys.push(&hit.key);
                }
            }
        }
        (keys, index)
    }
}

/// A plan's distinct state keys (on the stack for up to four).
pub type Cells<'a> = SmallVec<[&'a str; 4]>;
/// Each hit's index among its plan's [`Cells`].
pub type CellIndex = SmallVec<[usize; 4]>;

/// One counter after the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HitStatus {
    /// It was over its limit (whatever its mode).
    pub over: bool,
    /// Permits left in it now.
    pub remaining: u64,
    /// Its limit.
    pub limit: u64,
    /// Time until its window ends (a token bucket: until it is full).
    pub reset_after: Nanos,
}

/// The answer to a request's hits.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Hits {
    /// The request is over the limit (nothing enforced was debited).
    pub over: bool,
    /// Each counter, in the plan's order.
    pub statuses: Vec<HitStatus>,
}

/// Checks every counter of `plan` against its cell (`cells`: the distinct keys' cells, `index`: each hit's
/// cell, as [`HitPlan::cells`] gives them; locked by the caller) and debits as the module says.
pub fn judge_hits(
    plan: &HitPlan<'_>,
    cells: &mut [&mut LevelCell],
    index: &[usize],
    now: Nanos,
) -> Hits {
    let mut over: SmallVec<[bool; 4]> = SmallVec::with_capacity(plan.hits.len());
    // What the earlier hits of this request would take from each cell.
    let mut pending: SmallVec<[u64; 4]> = SmallVec::from_elem(0, cells.len());
    for (hit, &c) in plan.hits.iter().zip(index) {
        let cell = &mut *cells[c];
        cell.sync(&hit.spec, 1.0, now);
        let is_over = !hit.negative
            && cell.limit.as_ref().is_some_and(|l| {
                l.check(now, pending[c].saturating_add(hit.permits))
                    .is_err()
            });
        if !is_over && !hit.negative {
            pending[c] = pending[c].saturating_add(hit.permits);
        }
        over.push(is_over);
    }
    let denied = request_over(plan, &over);
    let mut statuses = Vec::with_capacity(plan.hits.len());
    for ((hit, &c), &is_over) in plan.hits.iter().zip(index).zip(&over) {
        let Some(limit) = cells[c].limit.as_mut() else {
            statuses.push(HitStatus::default());
            continue;
        };
        let takes = !is_over && (hit.mode == HitMode::Shadow || !denied);
        if hit.negative {
            limit.credit(now, hit.permits, now);
        } else if takes {
            limit.debit(now, hit.permits);
        }
        statuses.push(HitStatus {
            over: is_over,
            remaining: if is_over { 0 } else { limit.remaining(now) },
            limit: limit.capacity(),
            reset_after: reset_after(&hit.spec, limit, now),
        });
    }
    Hits {
        over: denied,
        statuses,
    }
}

/// Whether a request whose counters are `over` (each, in order) is over the limit.
pub fn request_over(plan: &HitPlan<'_>, over: &[bool]) -> bool {
    let mut quotas = 0usize;
    let mut quotas_over = 0usize;
    for (hit, &is_over) in plan.hits.iter().zip(over) {
        match hit.mode {
            HitMode::Enforced if is_over => return true,
            HitMode::Quota => {
                quotas = quotas.saturating_add(1);
                quotas_over = quotas_over.saturating_add(usize::from(is_over));
            }
            _ => {}
        }
    }
    quotas > 0 && quotas == quotas_over
}

/// A window's time to its end (what a gateway's `duration_until_reset` says); another limit's time to full.
fn reset_after(spec: &LevelSpec, limit: &impl Limiter, now: Nanos) -> Nanos {
    match spec.rate {
        Some(rate) if rate.algorithm != Algorithm::TokenBucket => {
            let period = nanos(rate.period).max(1);
            window_start(now, period)
                .saturating_add(period)
                .saturating_sub(now)
        }
        _ => limit.reset_after(now),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::engine::RateSpec;

    fn hit(key: &'static str, limit: u64, permits: u64, mode: HitMode) -> Hit<'static> {
        let rate = RateSpec::new(limit, Duration::from_secs(60), limit)
            .with_algorithm(Algorithm::FixedWindow);
        Hit {
            key: Cow::Borrowed(key),
            spec: LevelSpec {
                rate: Some(rate),
                max_in_flight: None,
                shadow: mode == HitMode::Shadow,
                bypass: false,
            },
            permits,
            mode,
            negative: false,
        }
    }

    fn run(plan: &HitPlan<'_>, state: &mut Vec<LevelCell>, now: Nanos) -> Hits {
        let (keys, index) = plan.cells();
        state.resize(keys.len(), LevelCell::default());
        let mut cells: Vec<&mut LevelCell> = state.iter_mut().collect();
        judge_hits(plan, &mut cells, &index, now)
    }

    const NOW: Nanos = 1_000 * 60 * 1_000_000_000 + 5_000_000_000;

    #[test]
    fn an_over_enforced_counter_debits_nothing_else() {
        let plan = HitPlan {
            hits: [
                hit("a", 10, 1, HitMode::Enforced),
                hit("b", 1, 2, HitMode::Enforced),
            ]
            .into_iter()
            .collect(),
        };
        let mut state = Vec::new();
        let h = run(&plan, &mut state, NOW);
        assert!(h.over);
        assert!(!h.statuses[0].over && h.statuses[1].over);
        assert_eq!(state[0].limit.unwrap().remaining(NOW), 10);
        assert_eq!(h.statuses[0].reset_after, 55_000_000_000);
    }

    #[test]
    fn quota_counters_deny_only_when_all_are_over() {
        let plan = HitPlan {
            hits: [
                hit("q1", 1, 2, HitMode::Quota),
                hit("q2", 5, 2, HitMode::Quota),
            ]
            .into_iter()
            .collect(),
        };
        let mut state = Vec::new();
        let h = run(&plan, &mut state, NOW);
        assert!(!h.over);
        assert!(h.statuses[0].over && !h.statuses[1].over);
        assert_eq!(h.statuses[1].remaining, 3);
        let h = run(&plan, &mut state, NOW);
        assert!(!h.over);
        let h = run(&plan, &mut state, NOW);
        assert!(h.over, "both quotas over");
    }

    #[test]
    fn shadow_counts_even_when_the_request_is_over() {
        let plan = HitPlan {
            hits: [
                hit("s", 2, 1, HitMode::Shadow),
                hit("e", 0, 1, HitMode::Enforced),
            ]
            .into_iter()
            .collect(),
        };
        let mut state = Vec::new();
        let h = run(&plan, &mut state, NOW);
        assert!(h.over);
        assert_eq!(h.statuses[0].remaining, 1);
    }

    #[test]
    fn counters_on_one_key_count_together_and_negative_hits_refund() {
        let mut plan = HitPlan {
            hits: [
                hit("k", 3, 2, HitMode::Enforced),
                hit("k", 3, 2, HitMode::Enforced),
            ]
            .into_iter()
            .collect(),
        };
        let mut state = Vec::new();
        let h = run(&plan, &mut state, NOW);
        assert!(h.over && h.statuses[1].over && !h.statuses[0].over);
        assert_eq!(state[0].limit.unwrap().remaining(NOW), 3);
        plan.hits[1].negative = true;
        plan.hits[0].permits = 3;
        let h = run(&plan, &mut state, NOW);
        assert!(!h.over);
        // 3 taken, then 2 given back.
        assert_eq!(h.statuses[1].remaining, 2);
    }
}
