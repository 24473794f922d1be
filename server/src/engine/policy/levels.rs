//! Judging a plan's levels: every level checked, all debited or none, and the figures of the tightest
//! levels that every answer carries.

use std::time::Duration;

use super::Limiter;
use crate::{
    clock::{Nanos, nanos},
    engine::{
        Decision, Denial, LevelSpec, Name, Notes, Plan, Reserve, Rule, Transition, Verdict,
        level::LevelCell,
    },
};

/// Figures of the tightest levels, reported with every decision.
#[derive(Debug, Default, Clone, Copy)]
pub struct Tightest {
    remaining: Option<u64>,
    limit: u64,
    reset_after: Nanos,
    headroom: Option<u32>,
    in_flight: u32,
    max_in_flight: u32,
    /// The first shadow level (its index in the plan) that would have denied.
    shadow: Option<u32>,
}

impl Tightest {
    /// Takes one level's figures into account.
    #[inline(always)]
    pub fn observe(&mut self, cell: &LevelCell, max_in_flight: Option<u32>, now: Nanos) {
        if let Some(l) = &cell.limit {
            let remaining = l.remaining(now);
            if self.remaining.is_none_or(|r| remaining < r) {
                self.remaining = Some(remaining);
                self.limit = l.capacity();
                self.reset_after = l.reset_after(now);
            }
        }
        if let Some(max) = max_in_flight {
            let headroom = max.saturating_sub(cell.in_flight);
            if self.headroom.is_none_or(|h| headroom < h) {
                self.headroom = Some(headroom);
                self.in_flight = cell.in_flight;
                self.max_in_flight = max;
            }
        }
    }

    /// The first shadow level that would have denied (its index in the plan).
    #[inline]
    pub fn shadow(&self) -> Option<usize> {
        self.shadow.map(|i| i as usize)
    }

    /// The answer, with these figures (and the breaker transition the acquire made, if any).
    #[inline]
    pub fn decision(
        self,
        resource: Name,
        rule: &'static str,
        verdict: Verdict,
        transition: Option<Transition>,
    ) -> Decision {
        Decision {
            resource,
            rule,
            verdict,
            remaining: self.remaining.unwrap_or(0),
            limit: self.limit,
            reset_after: self.reset_after,
            in_flight: self.in_flight,
            max_in_flight: self.max_in_flight,
            notes: transition.map(|t| {
                Box::new(Notes {
                    transition: Some(t),
                    shadow_denied_by: None,
                })
            }),
        }
    }
}

/// Why judging the levels denied, and at which level (its index in the plan).
#[derive(Debug, Clone)]
pub struct Denied {
    pub(super) reason: Denial,
    pub(super) retry_after: Nanos,
    pub(super) level: usize,
    /// Only the capacity reserved for higher priority classes denied it.
    pub(super) reserve: bool,
}

/// Why one level (synced to `now`) would deny `permits` to a class it holds `reserve` back from, and the
/// wait: its limit's exact wait until `permits` plus the reserved tokens are there, or the rule's
/// concurrency wait when its leases in flight reach the limit less the reserved ones; the longer when
/// both (the rate among equals).
#[inline]
pub fn level_denial(
    rule: &Rule,
    spec: &LevelSpec,
    cell: &LevelCell,
    permits: u64,
    reserve: Reserve,
    now: Nanos,
) -> Option<(Denial, Nanos)> {
    let rate = cell
        .limit
        .as_ref()
        .and_then(|l| l.check(now, permits.saturating_add(reserve.tokens)).err())
        .map(|wait| (Denial::RateLimited, wait));
    let full = spec
        .max_in_flight
        .is_some_and(|max| cell.in_flight.saturating_add(reserve.slots) >= max);
    let concurrency = full.then(|| {
        let wait = nanos(rule.concurrency_retry_after.max(Duration::from_millis(1)));
        (Denial::ConcurrencyLimited, wait)
    });
    match (rate, concurrency) {
        (Some(r), Some(c)) if c.1 > r.1 => Some(c),
        (Some(r), _) => Some(r),
        (None, c) => c,
    }
}

/// What judging the levels found: the figures for the answer, and a grant (`Ok`) or the denial.
pub type Judged = (Tightest, Result<(), Denied>);

/// What a grant took at one level.
#[derive(Debug, Clone, Copy, Default)]
pub struct Taken {
    /// A concurrency slot (free it on release).
    pub slot: bool,
    /// Tokens (refund or charge more on settlement).
    pub charged: bool,
}

/// Checks every level (locked by the caller, in plan order) and debits all or none; on a grant, tells
/// `taken` what was taken at each level, in order. A shadow level never denies: on a grant it is debited
/// where it would have granted and left as it is where it would have denied (the first such is reported);
/// the figures are the enforced levels'. A bypassed plan is never denied and takes no tokens: it takes a
/// slot at every level with a concurrency limit (its lease counts in flight there).
#[inline]
pub fn judge(
    plan: &Plan<'_>,
    cells: &mut [&mut LevelCell],
    factor: f64,
    now: Nanos,
    mut taken: impl FnMut(usize, Taken),
) -> Judged {
    let rule = plan.rule;
    if plan.bypass.is_some() {
        return (take_slots(plan, cells, factor, now, taken), Ok(()));
    }
    let mut denied: Option<Denied> = None;
    let mut shadow = None;
    for (i, (level, cell)) in plan.levels.iter().zip(cells.iter_mut()).enumerate() {
        let spec = level.spec(rule);
        cell.sync(spec, factor, now);
        let reserve = Reserve::of(spec, plan.held_back);
        let Some((reason, retry_after)) =
            level_denial(rule, spec, cell, plan.permits, reserve, now)
        else {
            continue;
        };
        if spec.shadow {
            // Levels are few (config-bounded).
            shadow = shadow.or(Some(i as u32));
        } else if denied.as_ref().is_none_or(|d| retry_after > d.retry_after) {
            let reserve = !reserve.is_none()
                && level_denial(rule, spec, cell, plan.permits, Reserve::default(), now).is_none();
            denied = Some(Denied {
                reason,
                retry_after,
                level: i,
                reserve,
            });
        }
    }

    let mut tightest = Tightest::default();
    if let Some(d) = denied {
        for (level, cell) in plan.levels.iter().zip(cells.iter()) {
            let spec = level.spec(rule);
            if !spec.shadow {
                tightest.observe(cell, spec.max_in_flight, now);
            }
        }
        return (tightest, Err(d));
    }
    for (i, (level, cell)) in plan.levels.iter().zip(cells.iter_mut()).enumerate() {
        let spec = level.spec(rule);
        if spec.shadow && shadow.is_some() {
            let reserve = Reserve::of(spec, plan.held_back);
            if level_denial(rule, spec, cell, plan.permits, reserve, now).is_some() {
                taken(i, Taken::default());
                continue;
            }
        }
        let charged = cell.limit.is_some();
        if let Some(l) = &mut cell.limit {
            l.debit(now, plan.permits);
        }
        let slot = spec.max_in_flight.is_some();
        if slot {
            cell.in_flight = cell.in_flight.saturating_add(1);
        }
        if !spec.shadow {
            tightest.observe(cell, spec.max_in_flight, now);
        }
        taken(i, Taken { slot, charged });
    }
    tightest.shadow = shadow;
    (tightest, Ok(()))
}

/// A bypassed grant at every level: synced, a slot taken where there is a concurrency limit, no tokens.
#[cold]
#[inline(never)]
fn take_slots(
    plan: &Plan<'_>,
    cells: &mut [&mut LevelCell],
    factor: f64,
    now: Nanos,
    mut taken: impl FnMut(usize, Taken),
) -> Tightest {
    let mut tightest = Tightest::default();
    for (i, (level, cell)) in plan.levels.iter().zip(cells.iter_mut()).enumerate() {
        let spec = level.spec(plan.rule);
        cell.sync(spec, factor, now);
        let slot = spec.max_in_flight.is_some();
        if slot {
            cell.in_flight = cell.in_flight.saturating_add(1);
        }
        if !spec.shadow {
            tightest.observe(cell, spec.max_in_flight, now);
        }
        taken(
            i,
            Taken {
                slot,
                charged: false,
            },
        );
    }
    tightest
}
