//! An acquire, in the policy's order, over the state steps a store provides.

use super::{Judged, Tightest};
use crate::{
    clock::{Nanos, nanos},
    engine::{
        AdaptiveSpec, Admission, Breaker, BreakerSpec, Decision, Denial, EngineError, Grant,
        LeaseId, Name, Plan, Verdict,
    },
};

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
    /// When it was granted (what a window's refund is matched with).
    pub granted_at: Nanos,
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
    fn insert(&self, lease: NewLease<'_, '_, Self::Held, Self::BreakerKey>) -> LeaseId;

    /// The id of a grant that holds nothing ([`Plan::holds_nothing`]): not stored, but its Release and
    /// Renew must be told from an unknown lease's by this store.
    fn held_nothing(&self) -> LeaseId;
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
    if plan.bypass.is_some() {
        return bypassed(store, plan, resource, factor, now);
    }
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
            denied_by: plan.denied_by(denied.level, denied.reserve),
        };
        return Ok(tightest.decision(resource, rule.name, verdict, transition));
    }
    if let (Some(spec), Some(p)) = (&rule.adaptive, &pressure) {
        store.raise(p, spec, &resource, now);
    }
    let grant = lease(store, plan, &resource, held, (breaker_key, probe), now);
    let shadow = tightest.shadow().map(|i| plan.levels[i].label(rule));
    let mut decision = tightest.decision(resource, rule.name, Verdict::Granted(grant), transition);
    decision.set_shadow_denied_by(shadow);
    Ok(decision)
}

/// Stores a granted lease; the grant that answers for it.
#[inline(always)]
fn lease<S: AcquireState>(
    store: &S,
    plan: &Plan<'_>,
    resource: &Name,
    held: S::Held,
    (breaker_key, probe): (Option<S::BreakerKey>, Option<u64>),
    now: Nanos,
) -> Grant {
    let expires_at = now.saturating_add(nanos(plan.ttl));
    let nothing_held = plan.holds_nothing();
    if nothing_held {
        return Grant {
            lease_id: store.held_nothing(),
            expires_at,
            ttl: plan.ttl,
            replayed: false,
            bypassed: false,
            nothing_held,
        };
    }
    let lease_id = store.insert(NewLease {
        plan,
        resource: resource.clone(),
        held,
        breaker_key,
        probe,
        granted_at: now,
        expires_at,
    });
    Grant {
        lease_id,
        expires_at,
        ttl: plan.ttl,
        replayed: false,
        bypassed: plan.bypass.is_some(),
        nothing_held,
    }
}

/// A bypassed acquire: never paused, never refused by its breaker or its levels, taking no tokens; its
/// lease takes a slot at every level with a concurrency limit and its outcome counts on the breaker.
#[cold]
#[inline(never)]
fn bypassed<S: AcquireState>(
    store: &S,
    plan: &Plan<'_>,
    resource: Name,
    factor: f64,
    now: Nanos,
) -> Result<Decision, EngineError> {
    let breaker_key = match (&plan.rule.breaker, &plan.breaker_key) {
        (Some(spec), Some(key)) => Some(store.with_breaker(spec, key, now, |_| ())?.1),
        _ => None,
    };
    let mut held = S::Held::default();
    let (tightest, _) = store.debit(plan, factor, now, &mut held)?;
    let grant = lease(store, plan, &resource, held, (breaker_key, None), now);
    Ok(tightest.decision(resource, plan.rule.name, Verdict::Granted(grant), None))
}
