//! A throttle report's path: the lease it names (the caller's own, of the reported resource), the flood
//! of its reporter (one identity's burst of reports acts as one), the adaptive rate, the pause, and the
//! failure it counts on the breaker (once per lease, or once per flood without one). Lua twin: `OPS.rep`
//! in `engine/redis/lua/steps.lua`, with `reporters_admit` and `adaptive_on_throttle`.

use crate::{
    clock::{Nanos, nanos},
    engine::{
        Breaker, BreakerSpec, BreakerState, EngineError, LeaseId, Name, Pressure, ReportPlan,
        Reported, ThrottleKind, Transition, pressure::PressureState, reporters,
    },
};

/// A live lease a report names, as the store holds it.
#[derive(Debug)]
pub struct ReportedLease<'l> {
    /// The concrete resource it was granted for.
    pub resource: &'l str,
    /// The identity that acquired it (`None` without auth).
    pub owner: Option<&'static str>,
    /// The half-open probe it is, if one.
    pub probe: Option<u64>,
    /// Set once a report has counted its failure.
    pub failure_reported: &'l mut bool,
}

/// The state steps a report is made of, for a store that decides in this process.
pub trait ReportState {
    /// Runs `f` on live lease `id`; `None` when it is not live.
    fn with_lease<R>(&self, id: LeaseId, f: impl FnOnce(ReportedLease<'_>) -> R) -> Option<R>;

    /// Runs `f` on `resource`'s pressure state (a fresh one if absent); also returns the resource's name
    /// as the store keeps it.
    fn with_pressure<R>(
        &self,
        resource: &str,
        f: impl FnOnce(&mut PressureState) -> R,
    ) -> Result<(Name, R), EngineError>;

    /// Runs `f` on the breaker at `key` (fresh CLOSED if absent).
    fn with_breaker<R>(
        &self,
        spec: &BreakerSpec,
        key: &str,
        now: Nanos,
        f: impl FnOnce(&mut Breaker) -> R,
    ) -> Result<R, EngineError>;
}

/// What a report did to the resource's pressure.
struct OnPressure {
    flood_start: bool,
    rate_decreased: bool,
    paused_before: Nanos,
    now: Pressure,
}

/// One throttle report, in the policy's order: the named lease, then the pressure, then the breaker.
pub fn report<S: ReportState>(
    store: &S,
    rp: &ReportPlan<'_>,
    now: Nanos,
) -> Result<Reported, EngineError> {
    let lease = match rp.lease_id {
        None => None,
        Some(id) => store
            .with_lease(id, |l| lease_reported(l, rp, id))
            .transpose()?,
    };
    let (resource, on) = store.with_pressure(rp.target.resource, |p| on_pressure(p, rp, now))?;
    // A lease's failure counts once however often it is reported or released; a report without a lease
    // counts once per flood of its identity (see `reporters`).
    let count = lease.map_or(on.flood_start, |(_, first)| first);
    let probe = lease.and_then(|(p, _)| p);
    let (breaker, transitions) = match (&rp.target.rule.breaker, &rp.target.key) {
        (Some(spec), Some(key)) => store.with_breaker(spec, key, now, |b| {
            let t = if count {
                b.record(spec, now, true, probe)
            } else {
                None
            };
            (b.state(now), t.into_iter().collect::<Vec<Transition>>())
        })?,
        _ => (BreakerState::Closed, Vec::new()),
    };
    Ok(Reported {
        resource,
        rule: rp.target.rule.name,
        pause_lengthened: on.now.paused_until.is_some_and(|u| u > on.paused_before),
        pressure: on.now,
        rate_decreased: on.rate_decreased,
        breaker,
        transitions,
    })
}

/// The lease a report names: the resource is checked first (a store may tell another resource's lease
/// without reading it), then the owner; any other lease is refused and left as it was. Returns `(probe,
/// first report of its failure)`.
fn lease_reported(
    l: ReportedLease<'_>,
    rp: &ReportPlan<'_>,
    id: LeaseId,
) -> Result<(Option<u64>, bool), EngineError> {
    let resource = rp.target.resource;
    if l.resource != resource {
        return Err(EngineError::invalid(
            "lease_id",
            format!("lease {id} was granted for another resource, not '{resource}'"),
        ));
    }
    if l.owner != rp.caller {
        return Err(EngineError::not_owner(id));
    }
    let first = !*l.failure_reported;
    *l.failure_reported = true;
    Ok((l.probe, first))
}

/// The report's effect on the adaptive rate and the pause: only a report that starts its identity's
/// flood lowers the rate (a throttle, under an adaptive rule) or lengthens the pause.
fn on_pressure(p: &mut PressureState, rp: &ReportPlan<'_>, now: Nanos) -> OnPressure {
    let rule = &rp.target.rule;
    let quiet = reporters::quiet_window(rule);
    p.reporters_quiet = quiet;
    let flood_start = p.reporters.admit(rp.caller, now, quiet);
    let rate_decreased = match (&rule.adaptive, rp.kind) {
        (Some(spec), ThrottleKind::Throttled) if flood_start => p.adaptive.on_throttle(spec, now),
        _ => false,
    };
    let paused_before = p.paused_until;
    if let Some(pause) = rp.pause.filter(|_| flood_start) {
        p.paused_until = p.paused_until.max(now.saturating_add(nanos(pause)));
    }
    OnPressure {
        flood_start,
        rate_decreased,
        paused_before,
        now: p.view(rule, now),
    }
}
