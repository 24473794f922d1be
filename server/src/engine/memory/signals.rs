//! What flows from the downstream back to the fleet: throttle reports (breaker failure, adaptive rate,
//! pause), breaker reads, and an operator's reset or forced open.

use std::time::Duration;

use super::MemoryStore;
use crate::{
    clock::{Nanos, nanos},
    engine::{
        Breaker, BreakerRef, BreakerState, CircuitView, EngineError, Name, ReportPlan, Reported,
        ThrottleKind,
    },
};

impl MemoryStore {
    pub(super) fn report_now(
        &self,
        rp: &ReportPlan<'_>,
        now: Nanos,
    ) -> Result<Reported, EngineError> {
        let target = &rp.target;
        let rule = &target.rule;
        // A report naming a lease counts that lease's failure once, however often it is reported or released.
        // Only a lease of the reported resource: another resource's lease is refused and left as it was.
        let lease = match rp.lease_id {
            None => None,
            Some(id) => self
                .leases
                .update(id, |l| {
                    if &*l.resource != target.resource {
                        return Err(EngineError::invalid(
                            "lease_id",
                            format!(
                                "lease {id} was granted for another resource, not '{}'",
                                target.resource
                            ),
                        ));
                    }
                    let first = !l.failure_reported;
                    l.failure_reported = true;
                    Ok((l.probe, first))
                })
                .transpose()?,
        };
        let count_failure = lease.is_none_or(|(_, first)| first);
        let probe = lease.and_then(|(p, _)| p);

        let mut breaker = BreakerState::Closed;
        if let (Some(spec), Some(key)) = (&rule.breaker, &target.key) {
            let (transition, state) = self.breakers.with(
                key,
                &self.keys,
                || Breaker::new(spec, now),
                |b| {
                    let t = if count_failure {
                        b.record(spec, now, true, probe)
                    } else {
                        None
                    };
                    (t, b.state(now))
                },
            )?;
            if let Some(t) = transition {
                self.stats.transition(rule.name, key, t);
            }
            breaker = state;
        }

        let (rate_decreased, paused_before, pressure) =
            self.pressure
                .with(target.resource, &self.keys, Default::default, |p| {
                    let decreased = match (&rule.adaptive, rp.kind) {
                        (Some(spec), ThrottleKind::Throttled) => p.adaptive.on_throttle(spec, now),
                        _ => false,
                    };
                    let paused_before = p.paused_until;
                    if let Some(pause) = rp.pause {
                        p.paused_until = p.paused_until.max(now.saturating_add(nanos(pause)));
                    }
                    (decreased, paused_before, p.view(rule, now))
                })?;
        if rate_decreased {
            tracing::info!(
                resource = target.resource,
                effective_rate_per_second = pressure.effective_rate,
                configured_rate_per_second = pressure.configured_rate,
                "adaptive rate lowered after a throttle report"
            );
        }
        if let Some(until) = pressure.paused_until
            && until > paused_before
        {
            tracing::info!(
                resource = target.resource,
                pause_ms = (until - now) / 1_000_000,
                "grants paused on the downstream's retry-after"
            );
        }
        let (resource, _) =
            self.pressure
                .get_or_insert(target.resource, &self.keys, Default::default)?;
        Ok(Reported {
            resource: Name::Given(resource),
            rule: rule.name,
            pressure,
            rate_decreased,
            breaker,
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
            tracing::info!(breaker = %key.replace(crate::engine::plan::KEY_SEP, "/"), from = before.as_str(), "circuit breaker reset by an operator");
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
        tracing::info!(breaker = %key.replace(crate::engine::plan::KEY_SEP, "/"), from = before.as_str(), ?duration, "circuit breaker forced open by an operator");
        Ok(before)
    }
}
