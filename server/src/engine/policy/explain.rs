//! "Why was I denied?": [`decide`] run over a read-only view of the state. A store reads each level as it
//! stands ([`super::super::Store::levels`]) and the breaker and pause as `circuit` reads them; the view
//! below answers the acquire's state steps from those reads and writes nothing, so the verdict is the
//! policy's own, in its order. The conformance suite holds it to what `acquire` then answers, on every
//! store.

use std::cell::RefCell;

use super::{
    AcquireState, Judged, Limiter, NewLease, Tightest, decide, judge, levels::level_denial,
};
use crate::{
    clock::Nanos,
    engine::{
        AdaptiveSpec, Algorithm, Breaker, BreakerSpec, CircuitView, Denial, EngineError, LeaseId,
        Name, Plan, Reserve, Verdict, level::LevelCell,
    },
};

/// Each level of a plan as a store holds it at `now` (nothing written), and the factor on the rule's
/// rates that the store applies (the adaptive multiplier; 1.0 when none).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LevelsRead {
    /// The factor on the rule's rates.
    pub factor: f64,
    /// One cell per level, in plan order (a fresh cell where the store holds none).
    pub cells: Vec<LevelCell>,
}

/// One level's figures at `now`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LevelState {
    /// Permits available (after refill and any adaptive retune); `None` without a rate limit.
    pub tokens: Option<u64>,
    /// How long until `permits` could be taken; `None` when they can be now (or no rate limit).
    pub rate_wait: Option<Nanos>,
    /// Leases in flight at this level.
    pub in_flight: u32,
}

/// One level, explained.
#[derive(Debug, Clone, PartialEq)]
pub struct LevelExplained {
    /// How a denial names it: `resource` or `tenant=acme`.
    pub label: String,
    /// Its permits, wait and leases in flight at `now`.
    pub state: LevelState,
    /// Its capacity (0 without a rate limit).
    pub burst: u64,
    /// Its rate in force, permits per second.
    pub rate_per_second: f64,
    /// Its concurrency limit, if any.
    pub max_in_flight: Option<u32>,
    /// How its rate limit is enforced (none without one).
    pub algorithm: Option<Algorithm>,
    /// A dry run: it never denies (`denies` says what it would do).
    pub shadow: bool,
    /// Its value has an override of its own (these are the override's limits).
    pub overridden: bool,
    /// What it holds back from the request's priority class for the classes above it.
    pub reserve: Reserve,
    /// Why this level alone would deny, and for how long.
    pub denies: Option<(Denial, Nanos)>,
}

/// An Acquire evaluated without debiting.
#[derive(Debug, Clone, PartialEq)]
pub struct Explanation {
    /// The concrete resource.
    pub resource: String,
    /// Its rule's configured name.
    pub rule: &'static str,
    /// Permits asked for.
    pub permits: u64,
    /// The breaker and pause, as read.
    pub circuit: CircuitView,
    /// Each level in check order.
    pub levels: Vec<LevelExplained>,
    /// What the acquire would answer: `None` for a grant, or the denial, its wait, and what denied
    /// (`pause`, `breaker`, or a level's label).
    pub verdict: Option<(Denial, Nanos, String)>,
    /// On a grant: the first shadow level that would have denied.
    pub shadow_denied_by: Option<String>,
    /// What makes it bypass every limit (a level whose value is configured `bypass = true`), if anything.
    pub bypassed_by: Option<String>,
    /// The request's priority class, on a resource with classes.
    pub priority: Option<String>,
}

/// The state an explanation reads, answering an acquire's steps without writing anything.
struct View<'v> {
    circuit: &'v CircuitView,
    factor: f64,
    cells: RefCell<Vec<LevelCell>>,
}

impl AcquireState for View<'_> {
    type Pressure = ();
    type Held = ();
    type BreakerKey = ();

    fn pressure(&self, plan: &Plan<'_>) -> Result<(Name, Option<()>), EngineError> {
        Ok((Name::Configured(plan.rule.name), Some(())))
    }

    fn pause_and_factor(&self, (): &(), _: &Plan<'_>) -> (Nanos, f64) {
        (self.circuit.pressure.paused_until.unwrap_or(0), self.factor)
    }

    fn with_breaker<R>(
        &self,
        spec: &BreakerSpec,
        _: &str,
        now: Nanos,
        f: impl FnOnce(&mut Breaker) -> R,
    ) -> Result<(R, ()), EngineError> {
        let mut breaker = Breaker::admitting(&self.circuit.breaker, spec, now);
        Ok((f(&mut breaker), ()))
    }

    fn cancel_probe(&self, (): &(), _: u64) {}

    fn peek(&self, _: &Plan<'_>, _: f64, _: Nanos) -> Tightest {
        Tightest::default()
    }

    fn debit(
        &self,
        plan: &Plan<'_>,
        factor: f64,
        now: Nanos,
        (): &mut (),
    ) -> Result<Judged, EngineError> {
        let mut cells = self.cells.borrow().clone();
        let mut refs: Vec<&mut LevelCell> = cells.iter_mut().collect();
        Ok(judge(plan, &mut refs, factor, now, |_, _| {}))
    }

    fn raise(&self, (): &(), _: &AdaptiveSpec, _: &Name, _: Nanos) {}

    fn insert(&self, _: NewLease<'_, '_, (), ()>) -> LeaseId {
        LeaseId(0)
    }

    fn held_nothing(&self) -> LeaseId {
        LeaseId(0)
    }
}

/// The explanation of `plan` given the store's reads.
pub fn explain(plan: &Plan<'_>, circuit: CircuitView, read: LevelsRead, now: Nanos) -> Explanation {
    let rule = plan.rule;
    let mut cells = read.cells;
    cells.resize_with(plan.levels.len(), LevelCell::default);
    let levels = plan
        .levels
        .iter()
        .zip(cells.iter_mut())
        .map(|(level, cell)| {
            let spec = level.spec(rule);
            cell.sync(spec, read.factor, now);
            let reserve = Reserve::of(spec, plan.held_back);
            let limit = cell.limit.as_ref();
            LevelExplained {
                label: level.label(rule),
                state: LevelState {
                    tokens: limit.map(|l| l.remaining(now)),
                    rate_wait: limit.and_then(|l| l.check(now, plan.permits).err()),
                    in_flight: cell.in_flight,
                },
                burst: limit.map_or(0, Limiter::capacity),
                rate_per_second: spec.rate.map_or(0.0, |r| r.per_second() * read.factor),
                max_in_flight: spec.max_in_flight,
                algorithm: spec.rate.map(|r| r.algorithm),
                shadow: spec.shadow,
                overridden: level.over.is_some(),
                reserve,
                denies: level_denial(rule, spec, cell, plan.permits, reserve, now),
            }
        })
        .collect();
    let view = View {
        circuit: &circuit,
        factor: read.factor,
        cells: RefCell::new(cells),
    };
    let decided = decide(&view, plan, now).ok();
    let shadow_denied_by = decided
        .as_ref()
        .and_then(|d| d.shadow_denied_by().map(str::to_owned));
    let verdict = match decided.map(|d| d.verdict) {
        Some(Verdict::Denied {
            reason,
            retry_after,
            denied_by,
        }) => Some((reason, retry_after, denied_by.to_string())),
        _ => None,
    };
    Explanation {
        resource: plan.resource.to_owned(),
        rule: rule.name,
        permits: plan.permits,
        circuit,
        levels,
        verdict,
        shadow_denied_by,
        bypassed_by: plan.bypassed_by(),
        priority: rule
            .priority
            .as_ref()
            .and_then(|p| p.classes.get(usize::from(plan.class)))
            .map(|c| c.to_string()),
    }
}
