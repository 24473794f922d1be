//! The in-memory store's steps of a throttle report ([`ReportState`]; the path is the policy's, in
//! [`policy::report`]), breaker reads, and an operator's reset or forced open.

// Wire-facing: every value here may come from a request, so arithmetic is checked or saturating.
#![cfg_attr(not(test), deny(clippy::arithmetic_side_effects))]

use std::time::Duration;

use super::MemoryStore;
use crate::{
    clock::{Nanos, nanos},
    engine::{
        Breaker, BreakerRef, BreakerSpec, BreakerState, CircuitView, EngineError, LeaseId, Name,
        ReportPlan, Reported,
        policy::{self, ReportState, ReportedLease},
        pressure::PressureState,
    },
};

impl ReportState for MemoryStore {
    fn with_lease<R>(&self, id: LeaseId, f: impl FnOnce(ReportedLease<'_>) -> R) -> Option<R> {
        self.leases.update(id, |l| {
            f(ReportedLease {
                resource: &l.resource,
                owner: l.owner,
                probe: l.probe,
                failure_reported: &mut l.failure_reported,
            })
        })
    }

    fn with_pressure<R>(
        &self,
        resource: &str,
        f: impl FnOnce(&mut PressureState) -> R,
    ) -> Result<(Name, R), EngineError> {
        self.pressure
            .with_locked(resource, &self.keys, Default::default, |key, p| {
                (Name::Given(key.clone()), f(p))
            })
    }

    fn with_breaker<R>(
        &self,
        spec: &BreakerSpec,
        key: &str,
        now: Nanos,
        f: impl FnOnce(&mut Breaker) -> R,
    ) -> Result<R, EngineError> {
        self.breaker_step(spec, key, now, |_, b| f(b))
    }
}

impl MemoryStore {
    /// Runs `f` on the breaker at `key` (a fresh CLOSED one if it has no state; `f` also gets the table's
    /// copy of the key): the one step every breaker change goes through (an admission, an outcome, a
    /// report). The transitions `f` makes go back in the call's answer, for the engine to count.
    pub(super) fn breaker_step<R>(
        &self,
        spec: &BreakerSpec,
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
        policy::report(self, rp, now)
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
            .unwrap_or_else(|| PressureState::default().view(rule, now));
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
