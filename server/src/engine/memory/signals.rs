//! What flows from the downstream back to the fleet: throttle reports (breaker failure, adaptive rate,
//! pause), breaker reads, and an operator's reset or forced open.

// Wire-facing: every value here may come from a request, so arithmetic is checked or saturating.
#![cfg_attr(not(test), deny(clippy::arithmetic_side_effects))]

use std::time::Duration;

use super::MemoryStore;
use crate::{
    clock::{Nanos, nanos},
    engine::{
        Breaker, BreakerRef, BreakerState, CircuitView, EngineError, Name, ReportPlan, Reported,
        ThrottleKind, reporters,
    },
};

impl MemoryStore {
    /// Runs `f` on the breaker at `key` (a fresh CLOSED one if it has no state; `f` also gets the table's
    /// copy of the key): the one step every breaker change goes through (an admission, an outcome, a
    /// report). The transitions `f` makes go back in the call's answer, for the engine to count.
    pub(super) fn breaker_step<R>(
        &self,
        spec: &crate::engine::BreakerSpec,
        key: &str,
        now: Nanos,
        f: impl FnOnce(&std::sync::Arc<str>, &mut Breaker) -> R,
    ) -> Result<R, EngineError> {
        self.breakers
            .with_locked(key, &self.keys, || Breaker::new(spec, now), f)
    }

    pub(super) fn report_now(
        &self,
        rp: &ReportPlan<'_>,
        now: Nanos,
    ) -> Result<Reported, EngineError> {
        let target = &rp.target;
        let lease = self.reported_lease(rp)?;
        let (flood_start, rate_decreased, paused_before, pressure) =
            self.report_pressure(rp, now)?;
        // A lease's failure counts once however often it is reported or released; a report without a lease
        // counts once per flood of its identity (see `reporters`).
        let count_failure = lease.map_or(flood_start, |(_, first)| first);
        let probe = lease.and_then(|(p, _)| p);
        let (breaker, transitions) = self.report_failure(rp, count_failure, probe, now)?;
        let (resource, _) =
            self.pressure
                .get_or_insert(target.resource, &self.keys, Default::default)?;
        Ok(Reported {
            resource: Name::Given(resource),
            rule: target.rule.name,
            pause_lengthened: pressure.paused_until.is_some_and(|u| u > paused_before),
            pressure,
            rate_decreased,
            breaker,
            transitions,
        })
    }

    /// The lease a report names, if any: `(probe, first report of its failure)`. Only the caller's own lease of
    /// the reported resource; any other is refused and left as it was.
    fn reported_lease(
        &self,
        rp: &ReportPlan<'_>,
    ) -> Result<Option<(Option<u64>, bool)>, EngineError> {
        let Some(id) = rp.lease_id else {
            return Ok(None);
        };
        let resource = rp.target.resource;
        self.leases
            .update(id, |l| {
                // The resource first, as every store checks it: the Redis store tells a lease of another
                // resource's shard without reading it.
                if &*l.resource != resource {
                    return Err(EngineError::invalid(
                        "lease_id",
                        format!("lease {id} was granted for another resource, not '{resource}'"),
                    ));
                }
                if l.owner != rp.caller {
                    return Err(EngineError::not_owner(id));
                }
                let first = !l.failure_reported;
                l.failure_reported = true;
                Ok((l.probe, first))
            })
            .transpose()
    }

    /// The report's effect on the resource's adaptive rate and pause, if it starts its identity's flood:
    /// `(starts a flood, rate lowered, paused until before, the pressure now)`.
    fn report_pressure(
        &self,
        rp: &ReportPlan<'_>,
        now: Nanos,
    ) -> Result<(bool, bool, Nanos, crate::engine::Pressure), EngineError> {
        let rule = &rp.target.rule;
        let quiet = reporters::quiet_window(rule);
        self.pressure
            .with(rp.target.resource, &self.keys, Default::default, |p| {
                p.reporters_quiet = quiet;
                let flood_start = p.reporters.admit(rp.caller, now, quiet);
                let decreased = match (&rule.adaptive, rp.kind) {
                    (Some(spec), ThrottleKind::Throttled) if flood_start => {
                        p.adaptive.on_throttle(spec, now)
                    }
                    _ => false,
                };
                let paused_before = p.paused_until;
                if let Some(pause) = rp.pause.filter(|_| flood_start) {
                    p.paused_until = p.paused_until.max(now.saturating_add(nanos(pause)));
                }
                (flood_start, decreased, paused_before, p.view(rule, now))
            })
    }

    /// Counts the report as a failed call on the resource's breaker (when `count`); returns its state and
    /// the transition counting made.
    fn report_failure(
        &self,
        rp: &ReportPlan<'_>,
        count: bool,
        probe: Option<u64>,
        now: Nanos,
    ) -> Result<(BreakerState, Vec<crate::engine::Transition>), EngineError> {
        let rule = &rp.target.rule;
        let (Some(spec), Some(key)) = (&rule.breaker, &rp.target.key) else {
            return Ok((BreakerState::Closed, Vec::new()));
        };
        self.breaker_step(spec, key, now, |_, b| {
            let t = if count {
                b.record(spec, now, true, probe)
            } else {
                None
            };
            (b.state(now), t.into_iter().collect())
        })
    }

    pub(super) fn circuit_now(&self, target: &BreakerRef<'_>, now: Nanos) -> CircuitView {
        let rule = &target.rule;
        let spec = rule.breaker.clone().unwrap_or_default();
        let breaker = target
            .key
            .as_ref()
            .and_then(|key| self.breakers.with_existing(key, |b| b.snapshot(&spec, now)))
            .unwrap_or_else(|| Breaker::new(&spec, now).snapshot(&spec, now));
        let pressure = self
            .pressure
            .with_existing(target.resource, |p| p.view(rule, now))
            .unwrap_or_else(|| super::pressure::PressureState::default().view(rule, now));
        CircuitView {
            resource: target.resource.into(),
            breaker,
            configured: rule.breaker.is_some(),
            pressure,
        }
    }

    pub(super) fn reset_now(
        &self,
        target: &BreakerRef<'_>,
        now: Nanos,
    ) -> Result<BreakerState, EngineError> {
        let mut before = BreakerState::Closed;
        if let (Some(spec), Some(key)) = (&target.rule.breaker, &target.key) {
            before = self.breakers.with(
                key,
                &self.keys,
                || Breaker::new(spec, now),
                |b| b.reset(now),
            )?;
        }
        self.pressure.with_existing(target.resource, |p| {
            p.adaptive.reset();
            p.paused_until = 0;
        });
        Ok(before)
    }

    pub(super) fn force_open_now(
        &self,
        target: &BreakerRef<'_>,
        duration: Duration,
        now: Nanos,
    ) -> Result<BreakerState, EngineError> {
        let (Some(spec), Some(key)) = (&target.rule.breaker, &target.key) else {
            return Err(EngineError::FailedPrecondition(format!(
                "resource: '{}' has no circuit breaker configured",
                target.resource
            )));
        };
        let before = self.breakers.with(
            key,
            &self.keys,
            || Breaker::new(spec, now),
            |b| b.force_open(now, nanos(duration)),
        )?;
        Ok(before)
    }
}
