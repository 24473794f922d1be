//! "Why was I denied?": an Acquire evaluated without debiting. A store reads each level's state as it would
//! stand at `now` ([`super::Store::levels`]) and the breaker and pause as `circuit` reads them; the verdict
//! is decided here, in store-independent code, in the order an acquire checks: the pause, then the
//! breaker, then every level (the longest wait wins). The conformance suite holds it to what `acquire`
//! then answers, on every store.

use std::time::Duration;

use super::{BreakerState, CircuitView, Denial, Plan};
use crate::clock::{Nanos, nanos};

/// One level's state at `now`, as a store reads it (nothing written).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LevelState {
    /// Tokens available (after refill and any adaptive retune); `None` without a rate limit.
    pub tokens: Option<u64>,
    /// How long until `permits` tokens could be taken; `None` when they can be now (or no rate limit).
    pub rate_wait: Option<Nanos>,
    /// Leases in flight at this level.
    pub in_flight: u32,
}

/// One level, explained.
#[derive(Debug, Clone, PartialEq)]
pub struct LevelExplained {
    /// How a denial names it: `resource` or `tenant=acme`.
    pub label: String,
    /// Its state.
    pub state: LevelState,
    /// Its burst (0 without a rate limit) and its rate in force, tokens per second.
    pub burst: u64,
    /// See `burst`.
    pub rate_per_second: f64,
    /// Its concurrency limit, if any.
    pub max_in_flight: Option<u32>,
    /// Why this level alone would deny, and for how long.
    pub denies: Option<(Denial, Nanos)>,
}

/// An Acquire evaluated without debiting.
#[derive(Debug, Clone, PartialEq)]
pub struct Explanation {
    /// The concrete resource and its rule's configured name.
    pub resource: String,
    /// See `resource`.
    pub rule: &'static str,
    /// Tokens asked for.
    pub permits: u64,
    /// The breaker and pause, as read.
    pub circuit: CircuitView,
    /// Each level in check order.
    pub levels: Vec<LevelExplained>,
    /// What the acquire would answer: `None` for a grant, or the denial, its wait, and what denied
    /// (`pause`, `breaker`, or a level's label).
    pub verdict: Option<(Denial, Nanos, String)>,
}

/// What the breaker in `view` would say to one more call.
fn breaker_denial(view: &CircuitView, now: Nanos, open_duration: Duration) -> Option<Nanos> {
    let b = &view.breaker;
    match b.state {
        BreakerState::Open => b.half_open_at.filter(|&at| at > now).map(|at| at - now),
        BreakerState::HalfOpen if b.probes_left == 0 => {
            Some(nanos(open_duration).clamp(1, 1_000_000_000))
        }
        _ => None,
    }
}

/// The explanation of `plan` given the store's reads.
pub fn explain(
    plan: &Plan<'_>,
    circuit: CircuitView,
    states: Vec<LevelState>,
    now: Nanos,
) -> Explanation {
    let rule = plan.rule;
    let factor = if circuit.pressure.configured_rate > 0.0 {
        circuit.pressure.effective_rate / circuit.pressure.configured_rate
    } else {
        1.0
    };
    let concurrency_wait = nanos(rule.concurrency_retry_after.max(Duration::from_millis(1)));
    let levels: Vec<LevelExplained> = plan
        .levels
        .iter()
        .zip(states)
        .map(|(level, state)| {
            let spec = level.spec(rule);
            let full = spec.max_in_flight.is_some_and(|max| state.in_flight >= max);
            let denies = match (state.rate_wait, full) {
                (Some(w), true) if w >= concurrency_wait => Some((Denial::RateLimited, w)),
                (_, true) => Some((Denial::ConcurrencyLimited, concurrency_wait)),
                (Some(w), false) => Some((Denial::RateLimited, w)),
                (None, false) => None,
            };
            LevelExplained {
                label: level.label(rule),
                state,
                burst: spec.rate.map_or(0, |r| r.burst),
                rate_per_second: spec.rate.map_or(0.0, |r| r.per_second() * factor),
                max_in_flight: spec.max_in_flight,
                denies,
            }
        })
        .collect();
    let paused = circuit.pressure.paused_until.filter(|&t| t > now);
    let open = rule
        .breaker
        .as_ref()
        .and_then(|spec| breaker_denial(&circuit, now, spec.open_duration));
    let verdict = if let Some(until) = paused {
        Some((Denial::Paused, until - now, "pause".to_owned()))
    } else if let Some(wait) = open {
        Some((Denial::CircuitOpen, wait, "breaker".to_owned()))
    } else {
        // The longest wait; the first level among equals, as an acquire reports it.
        levels
            .iter()
            .filter_map(|l| l.denies.map(|(d, w)| (d, w, l.label.clone())))
            .fold(
                None,
                |best: Option<(Denial, Nanos, String)>, c| match &best {
                    Some(b) if c.1 <= b.1 => best,
                    _ => Some(c),
                },
            )
    };
    Explanation {
        resource: plan.resource.to_owned(),
        rule: rule.name,
        permits: plan.permits,
        circuit,
        levels,
        verdict,
    }
}
