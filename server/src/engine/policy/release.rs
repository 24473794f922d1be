//! What a release settles and counts: `used_permits` against the permits acquired (a refund, or the
//! excess charged up to each level's max debt, the same at every level), and the call's outcome on the
//! breaker.

use smallvec::SmallVec;

use super::Limiter;
use crate::{
    clock::Nanos,
    engine::{Breaker, BreakerSpec, LevelSpec, Outcome, Rule, Transition, level::LevelCell},
};

/// What a release's `used_permits` settles against the permits its lease acquired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settlement {
    /// Fewer used: give this many back at every level the lease was charged at.
    Refund(u64),
    /// More used: charge up to this many more at every such level (each at most its max debt below empty).
    Charge(u64),
    /// As acquired, or not said.
    Even,
}

/// See [`Settlement`].
pub fn settlement(acquired: u64, used: Option<u64>) -> Settlement {
    match used {
        Some(used) if used < acquired => Settlement::Refund(acquired.saturating_sub(used)),
        Some(used) if used > acquired => Settlement::Charge(used.saturating_sub(acquired)),
        _ => Settlement::Even,
    }
}

/// What a lease's outcome counts on its breaker at release: a success, or a failure (once: a failure
/// already reported through ReportThrottle under the lease is not counted again); an unknown outcome
/// counts nothing and hands back an unused probe. Returns the transition it caused.
pub fn count_outcome(
    breaker: &mut Breaker,
    spec: &BreakerSpec,
    outcome: Outcome,
    failure_reported: bool,
    probe: Option<u64>,
    now: Nanos,
) -> Option<Transition> {
    match outcome {
        Outcome::Success => breaker.record(spec, now, false, probe),
        Outcome::Failure | Outcome::Throttled if !failure_reported => {
            breaker.record(spec, now, true, probe)
        }
        Outcome::Failure | Outcome::Throttled => None,
        Outcome::Unknown => {
            if let Some(epoch) = probe {
                breaker.cancel_probe(epoch);
            }
            None
        }
    }
}

/// Gives `permits` back at one level the lease was charged at, at `granted_at` (fewer used than acquired).
pub fn refund_level(cell: &mut LevelCell, permits: u64, granted_at: Nanos, now: Nanos) {
    if let Some(l) = &mut cell.limit {
        l.credit(now, permits, granted_at);
    }
}

/// Charges up to `want` more at one level (synced to `spec` first), going at most the rule's `max_debt`
/// (else the level's burst) below empty. Returns what it took; `None` for a level without a rate limit.
/// `rule` and `spec` are the terms the lease was granted under (a reload applies to leases granted after
/// it; the next acquire retunes the level to the rules in force).
pub fn charge_level(
    cell: &mut LevelCell,
    (rule, spec): (&Rule, &LevelSpec),
    factor: f64,
    want: u64,
    now: Nanos,
) -> Option<u64> {
    cell.sync(spec, factor, now);
    let max_debt = rule.max_debt.or(spec.rate.map(|r| r.burst)).unwrap_or(0);
    cell.limit
        .as_mut()
        .map(|l| l.debit_bounded(now, want, max_debt))
}

/// Charges the excess at each of a lease's `levels` charged levels, the same at every one: `charge(i,
/// want)` is [`charge_level`] at level `i`, and a level that took more than the least any level had room
/// for gets the difference back through `refund(i, n)` (at the instant it was charged). Returns what every level was charged.
pub fn charge_excess(
    levels: usize,
    excess: u64,
    mut charge: impl FnMut(usize, u64) -> Option<u64>,
    mut refund: impl FnMut(usize, u64),
) -> u64 {
    let mut taken: SmallVec<[(usize, u64); 4]> = SmallVec::new();
    let mut least = excess;
    for i in 0..levels {
        if let Some(t) = charge(i, least) {
            least = least.min(t);
            taken.push((i, t));
        }
    }
    for (i, t) in taken.iter().copied().filter(|&(_, t)| t > least) {
        refund(i, t.saturating_sub(least));
    }
    if taken.is_empty() { 0 } else { least }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{Admission, BreakerState};

    const SEC: Nanos = 1_000_000_000;

    #[test]
    fn settlement_refunds_fewer_charges_more_and_ignores_silence() {
        assert_eq!(settlement(5, Some(2)), Settlement::Refund(3));
        assert_eq!(settlement(5, Some(0)), Settlement::Refund(5));
        assert_eq!(settlement(5, Some(9)), Settlement::Charge(4));
        assert_eq!(
            settlement(5, Some(u64::MAX)),
            Settlement::Charge(u64::MAX - 5)
        );
        assert_eq!(settlement(5, Some(5)), Settlement::Even);
        assert_eq!(settlement(5, None), Settlement::Even);
    }

    #[test]
    fn an_excess_charge_is_the_same_at_every_level_the_least_any_had_room_for() {
        let room = [5u64, 2, 9];
        let mut refunds = Vec::new();
        let charged = charge_excess(
            3,
            4,
            |i, want| Some(want.min(room[i])),
            |i, n| refunds.push((i, n)),
        );
        assert_eq!(charged, 2);
        assert_eq!(
            refunds,
            vec![(0, 2)],
            "the first took 4 before the second had room for 2"
        );
        assert_eq!(
            charge_excess(2, 4, |_, _| None, |_, _| unreachable!()),
            0,
            "no rate limit"
        );
    }

    fn spec() -> BreakerSpec {
        BreakerSpec {
            consecutive_failures: 2,
            min_calls: 100,
            half_open_probes: 1,
            half_open_successes: 1,
            ..BreakerSpec::default()
        }
    }

    #[test]
    fn a_failure_already_reported_under_the_lease_is_not_counted_again() {
        let spec = spec();
        let mut b = Breaker::new(&spec, 0);
        for _ in 0..5 {
            count_outcome(&mut b, &spec, Outcome::Failure, true, None, 0);
            count_outcome(&mut b, &spec, Outcome::Throttled, true, None, 0);
        }
        assert_eq!(b.state(0), BreakerState::Closed);
        count_outcome(&mut b, &spec, Outcome::Failure, false, None, 0);
        let t = count_outcome(&mut b, &spec, Outcome::Throttled, false, None, 0);
        assert!(t.is_some(), "two counted failures in a row open it");
        assert_eq!(b.state(0), BreakerState::Open);
    }

    #[test]
    fn an_unknown_outcome_counts_nothing_and_hands_back_its_probe() {
        let spec = spec();
        let mut b = Breaker::new(&spec, 0);
        count_outcome(&mut b, &spec, Outcome::Failure, false, None, 0);
        count_outcome(&mut b, &spec, Outcome::Failure, false, None, 0);
        let later = 3_600 * SEC;
        let Admission::Probe(epoch) = b.admit(&spec, later).0 else {
            panic!("half-open after the open period: a probe");
        };
        assert!(matches!(
            b.admit(&spec, later).0,
            Admission::Rejected { .. }
        ));
        assert_eq!(
            count_outcome(&mut b, &spec, Outcome::Unknown, false, Some(epoch), later),
            None
        );
        assert_eq!(b.state(later), BreakerState::HalfOpen);
        let Admission::Probe(again) = b.admit(&spec, later).0 else {
            panic!("the probe was handed back");
        };
        count_outcome(&mut b, &spec, Outcome::Success, false, Some(again), later);
        assert_eq!(b.state(later), BreakerState::Closed);
    }
}
