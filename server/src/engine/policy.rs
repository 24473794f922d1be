//! The policy, written once: the order of an acquire's checks (pause, breaker, every level, the adaptive
//! raise), a half-open probe taken and handed back, judging levels all or none, what a release settles and
//! its outcome counts on a breaker, and what a retried request_id is answered. A store that decides in this
//! process provides the state steps ([`AcquireState`]); the in-memory store is one. The Redis store runs the
//! same policy inside its Lua script for atomicity (one round trip), held to identical decisions by the
//! conformance suite and the differential trace.

// Wire-facing: every value here may come from a request, so arithmetic is checked or saturating.
#![cfg_attr(not(test), deny(clippy::arithmetic_side_effects))]

use std::time::Duration;

use super::{
    AdaptiveSpec, Admission, Breaker, BreakerSpec, Decision, Denial, EngineError, Grant, Name,
    Outcome, Plan, Transition, Verdict, level::LevelCell,
};
use crate::clock::{Nanos, nanos};

/// Figures of the tightest levels, reported with every decision.
#[derive(Debug, Default, Clone, Copy)]
pub struct Tightest {
    remaining: Option<u64>,
    limit: u64,
    reset_after: Nanos,
    headroom: Option<u32>,
    in_flight: u32,
    max_in_flight: u32,
}

impl Tightest {
    /// Takes one level's figures into account.
    pub fn observe(&mut self, cell: &LevelCell, max_in_flight: Option<u32>, now: Nanos) {
        if let Some(b) = &cell.bucket {
            let remaining = b.remaining(now);
            if self.remaining.is_none_or(|r| remaining < r) {
                self.remaining = Some(remaining);
                self.limit = b.burst();
                self.reset_after = b.reset_after(now);
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

    /// The answer, with these figures (and the breaker transition the acquire made, if any).
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
            transition,
        }
    }
}

/// Why judging the levels denied, and at which level (its index in the plan).
#[derive(Debug, Clone)]
pub struct Denied {
    reason: Denial,
    retry_after: Nanos,
    level: usize,
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
/// `taken` what was taken at each level, in order.
pub fn judge(
    plan: &Plan<'_>,
    cells: &mut [&mut LevelCell],
    factor: f64,
    now: Nanos,
    mut taken: impl FnMut(usize, Taken),
) -> Judged {
    let rule = plan.rule;
    let mut denied: Option<Denied> = None;
    for (i, (level, cell)) in plan.levels.iter().zip(cells.iter_mut()).enumerate() {
        let spec = level.spec(rule);
        cell.sync(spec, factor, now);
        let mut consider = |reason, retry_after| {
            if denied.as_ref().is_none_or(|d| retry_after > d.retry_after) {
                denied = Some(Denied {
                    reason,
                    retry_after,
                    level: i,
                });
            }
        };
        if let Some(Err(wait)) = cell.bucket.as_ref().map(|b| b.check(now, plan.permits)) {
            consider(Denial::RateLimited, wait);
        }
        if spec.max_in_flight.is_some_and(|max| cell.in_flight >= max) {
            let wait = nanos(rule.concurrency_retry_after.max(Duration::from_millis(1)));
            consider(Denial::ConcurrencyLimited, wait);
        }
    }

    let mut tightest = Tightest::default();
    if let Some(d) = denied {
        for (level, cell) in plan.levels.iter().zip(cells.iter()) {
            tightest.observe(cell, level.spec(rule).max_in_flight, now);
        }
        return (tightest, Err(d));
    }
    for (i, (level, cell)) in plan.levels.iter().zip(cells.iter_mut()).enumerate() {
        let spec = level.spec(rule);
        let charged = cell.bucket.is_some();
        if let Some(b) = &mut cell.bucket {
            b.debit(now, plan.permits);
        }
        let slot = spec.max_in_flight.is_some();
        if slot {
            cell.in_flight = cell.in_flight.saturating_add(1);
        }
        tightest.observe(cell, spec.max_in_flight, now);
        taken(i, Taken { slot, charged });
    }
    (tightest, Ok(()))
}

/// A grant about to become a lease: what [`AcquireState::insert`] stores.
#[derive(Debug)]
pub struct NewLease<'p, 'a, H, K> {
    /// The plan granted.
    pub plan: &'p Plan<'a>,
    /// The resource as handed out.
    pub resource: Name,
    /// What was taken at each level.
    pub held: H,
    /// The breaker the outcome will count on.
    pub breaker_key: Option<K>,
    /// The half-open probe this lease is, if one.
    pub probe: Option<u64>,
    /// When it expires.
    pub expires_at: Nanos,
}

/// The state steps an acquire is made of, for a store that decides in this process. Each step is atomic
/// on its own state; [`decide`] orders them.
pub trait AcquireState {
    /// A handle on a resource's pressure state (pause, adaptive rate).
    type Pressure;
    /// What a grant took at each level, kept with its lease.
    type Held: Default;
    /// A breaker's key as the store keeps it.
    type BreakerKey;

    /// The resource as handed out, and its pressure state if it has (or, for an adaptive rule or a
    /// resource under a pattern, must have) one.
    fn pressure(&self, plan: &Plan<'_>) -> Result<(Name, Option<Self::Pressure>), EngineError>;

    /// Paused until (0: never), and the factor on the rule's rates.
    fn pause_and_factor(&self, pressure: &Self::Pressure, plan: &Plan<'_>) -> (Nanos, f64);

    /// Runs `f` on the breaker at `key` (fresh CLOSED if absent); also returns the key as the store keeps it.
    fn with_breaker<R>(
        &self,
        spec: &BreakerSpec,
        key: &str,
        now: Nanos,
        f: impl FnOnce(&mut Breaker) -> R,
    ) -> Result<(R, Self::BreakerKey), EngineError>;

    /// Hands back a half-open probe not used.
    fn cancel_probe(&self, key: &Self::BreakerKey, epoch: u64);

    /// Figures for an early denial (pause, breaker), read level by level without debiting.
    fn peek(&self, plan: &Plan<'_>, factor: f64, now: Nanos) -> Tightest;

    /// Reserves room for a lease, then locks every level and [`judge`]s them; on a denial the reservation
    /// goes back. `held` says what was taken.
    fn debit(
        &self,
        plan: &Plan<'_>,
        factor: f64,
        now: Nanos,
        held: &mut Self::Held,
    ) -> Result<Judged, EngineError>;

    /// A grant under an adaptive rule: the rate may rise.
    fn raise(&self, pressure: &Self::Pressure, spec: &AdaptiveSpec, resource: &Name, now: Nanos);

    /// Stores the lease (room for it was reserved by [`debit`](Self::debit)).
    fn insert(&self, lease: NewLease<'_, '_, Self::Held, Self::BreakerKey>) -> super::LeaseId;
}

/// One acquire, in the policy's order: a pause denies first, then an open breaker (a half-open one hands
/// out a probe, returned if the levels deny), then every level all or none; a grant may raise the
/// adaptive rate and becomes a lease.
pub fn decide<S: AcquireState>(
    store: &S,
    plan: &Plan<'_>,
    now: Nanos,
) -> Result<Decision, EngineError> {
    let rule = plan.rule;
    let (resource, pressure) = store.pressure(plan)?;
    let (paused_until, factor) = pressure
        .as_ref()
        .map_or((0, 1.0), |p| store.pause_and_factor(p, plan));
    let early = |reason, retry_after, by: &'static str, transition| {
        let verdict = Verdict::Denied {
            reason,
            retry_after,
            denied_by: by.into(),
        };
        let figures = store.peek(plan, factor, now);
        Ok(figures.decision(resource.clone(), rule.name, verdict, transition))
    };
    if paused_until > now {
        let wait = paused_until.saturating_sub(now);
        return early(Denial::Paused, wait, "pause", None);
    }
    let mut transition = None;
    let (probe, breaker_key) = match (&rule.breaker, &plan.breaker_key) {
        (Some(spec), Some(key)) => {
            let ((admission, made), key) =
                store.with_breaker(spec, key, now, |b| b.admit(spec, now))?;
            transition = made;
            match admission {
                Admission::Allowed => (None, Some(key)),
                Admission::Probe(epoch) => (Some(epoch), Some(key)),
                Admission::Rejected { retry_after } => {
                    return early(Denial::CircuitOpen, retry_after, "breaker", transition);
                }
            }
        }
        _ => (None, None),
    };
    let hand_back = || {
        if let (Some(epoch), Some(key)) = (probe, &breaker_key) {
            store.cancel_probe(key, epoch);
        }
    };
    let mut held = S::Held::default();
    let (tightest, judged) = store.debit(plan, factor, now, &mut held).map_err(|e| {
        hand_back();
        e.after(transition)
    })?;
    if let Err(denied) = judged {
        hand_back();
        let verdict = Verdict::Denied {
            reason: denied.reason,
            retry_after: denied.retry_after,
            denied_by: plan.levels[denied.level].label(rule),
        };
        return Ok(tightest.decision(resource, rule.name, verdict, transition));
    }
    if let (Some(spec), Some(p)) = (&rule.adaptive, &pressure) {
        store.raise(p, spec, &resource, now);
    }
    let expires_at = now.saturating_add(nanos(plan.ttl));
    let lease_id = store.insert(NewLease {
        plan,
        resource: resource.clone(),
        held,
        breaker_key,
        probe,
        expires_at,
    });
    let grant = Grant {
        lease_id,
        expires_at,
        ttl: plan.ttl,
        replayed: false,
    };
    Ok(tightest.decision(resource, rule.name, Verdict::Granted(grant), transition))
}

/// A request_id's first answer is remembered for it only when it granted (a denial charged nothing, so a
/// retry is simply decided again).
pub fn remembered(first: &Decision) -> bool {
    first.granted()
}

/// A request_id seen within its window: the same request (same fingerprint) is answered again with the
/// remembered grant, marked replayed and making no transition (the first call made and reported it); a
/// different request under the same id is refused, naming the id.
pub fn replay(
    first: &Decision,
    first_fingerprint: u64,
    (resource, request_id, fingerprint): (&str, &str, u64),
) -> Result<Decision, EngineError> {
    if first_fingerprint != fingerprint {
        return Err(request_id_conflict(resource, request_id));
    }
    let mut again = first.clone();
    if let Verdict::Granted(g) = &mut again.verdict {
        g.replayed = true;
    }
    again.transition = None;
    Ok(again)
}

/// The refusal of a request_id reused for a different request (a store that finds the conflict itself,
/// as the Redis script does, answers with this too).
pub fn request_id_conflict(resource: &str, request_id: &str) -> EngineError {
    EngineError::FailedPrecondition(format!(
        "request_id: '{request_id}' was already used for a different request on '{resource}' (permits, \
         lease_ttl or descriptors differ); use a new request_id per logical acquire"
    ))
}

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::BreakerState;

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

    const SEC: Nanos = 1_000_000_000;

    fn answer(granted: bool) -> Decision {
        let verdict = if granted {
            Verdict::Granted(Grant {
                lease_id: crate::engine::LeaseId(7),
                expires_at: SEC,
                ttl: Duration::from_secs(1),
                replayed: false,
            })
        } else {
            Verdict::Denied {
                reason: Denial::RateLimited,
                retry_after: SEC,
                denied_by: "rate".into(),
            }
        };
        let made = Transition {
            from: BreakerState::Open,
            to: BreakerState::HalfOpen,
            reason: crate::engine::breaker::Reason::OpenPeriodOver,
        };
        Tightest::default().decision("r".into(), "r", verdict, Some(made))
    }

    #[test]
    fn a_request_id_replays_its_grant_once_made_and_refuses_another_request() {
        assert!(remembered(&answer(true)));
        assert!(!remembered(&answer(false)), "a denial charged nothing");
        let again = replay(&answer(true), 42, ("r", "id-1", 42)).unwrap();
        let Verdict::Granted(g) = &again.verdict else {
            panic!("the grant replayed");
        };
        assert!(g.replayed);
        assert_eq!(g.lease_id, crate::engine::LeaseId(7), "the same lease");
        assert_eq!(
            again.transition, None,
            "the first call made and reported it"
        );
        let refused = replay(&answer(true), 42, ("r", "id-1", 43)).unwrap_err();
        assert!(matches!(&refused, EngineError::FailedPrecondition(m)
            if m.contains("request_id: 'id-1'") && m.contains("on 'r'")));
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
