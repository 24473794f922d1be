//! Ending leases: release (with settlement and the call's outcome), expiry, and revocation. Each lease is
//! ended exactly once: removal from the lease table decides who ends it.

// Wire-facing: every value here may come from a request, so arithmetic is checked or saturating.
#![cfg_attr(not(test), deny(clippy::arithmetic_side_effects))]

use super::{MemoryStore, leases::Lease};
use crate::{
    clock::Nanos,
    engine::{
        BreakerChanges, BreakerState, EngineError, Expired, LeaseId, NotReleased, Release,
        Released, Rule, Rules, level::LevelCell, policy,
    },
};

impl MemoryStore {
    /// Frees the lease's concurrency slots.
    #[inline]
    fn free_slots(&self, lease: &Lease) {
        for level in lease.levels.iter().filter(|l| l.slot) {
            self.levels.with_existing(lease.key(level), |c| {
                c.in_flight = c.in_flight.saturating_sub(1);
            });
        }
    }

    /// Hands back an unused half-open probe.
    fn return_probe(&self, lease: &Lease) {
        if let (Some(epoch), Some(key)) = (lease.probe, &lease.breaker_key) {
            self.breakers.with_existing(key, |b| b.cancel_probe(epoch));
        }
    }

    pub(super) fn release_now(
        &self,
        _rules: &Rules,
        r: &Release,
        now: Nanos,
    ) -> Result<Released, EngineError> {
        // The lease is settled where it is taken out of its slot (one move: it is large).
        let settled = self.leases.end_owned(
            r.lease_id,
            (r.caller, NotReleased::AlreadyReleased, now),
            |lease| self.settle(r, lease, now),
        )?;
        Ok(settled.unwrap_or_else(|| {
            if self.held_nothing.was_issued(r.lease_id) {
                Released::nothing_held()
            } else {
                Released::gone(self.why_gone(r.lease_id))
            }
        }))
    }

    /// A taken lease's release: its slots freed, its tokens settled and its outcome counted under the rule
    /// it was granted under (an expired one is reclaimed as the sweeper would, and said so).
    fn settle(&self, r: &Release, lease: Lease, now: Nanos) -> Released {
        if lease.expires_at <= now {
            self.leases.end_as(r.lease_id, NotReleased::Expired, now);
            self.free_slots(&lease);
            self.return_probe(&lease);
            return Released {
                rule: Some(lease.rule),
                resource: Some(lease.resource),
                ..Released::gone(NotReleased::Expired)
            };
        }
        self.free_slots(&lease);

        // Settled and counted under the rule it was granted under (`settlement = false`: grants are final).
        let used = r.used_permits.filter(|_| lease.terms.settlement);
        let settle = policy::settlement(lease.permits, used);
        let rule = Some(&*lease.terms);
        let (mut refunded, mut charged) = (0, 0);
        match (settle, rule) {
            (policy::Settlement::Refund(n), _) => {
                refunded = n;
                for level in lease.levels.iter().filter(|l| l.charged) {
                    self.levels.with_existing(lease.key(level), |c| {
                        policy::release::refund_level(c, n, lease.granted_at, now);
                    });
                }
            }
            (policy::Settlement::Charge(n), Some(rule)) => {
                charged = self.charge_excess(&lease, rule, n, now);
            }
            _ => {}
        }

        let mut breaker = BreakerState::Closed;
        let mut changed = None;
        if let (Some(spec), Some(key)) = (rule.and_then(|r| r.breaker.as_ref()), &lease.breaker_key)
        {
            let counted = self.breaker_step(spec, key, now, |_, b| {
                let (failure_reported, probe) = (lease.failure_reported, lease.probe);
                let t = policy::count_outcome(b, spec, r.outcome, failure_reported, probe, now);
                (t, b.state(now))
            });
            match counted {
                Ok((t, state)) => {
                    breaker = state;
                    changed = t.map(|t| {
                        Box::new(BreakerChanges {
                            key: key.clone(),
                            transitions: vec![t],
                        })
                    });
                }
                Err(e) => tracing::warn!(error = %e, "release outcome not counted by the breaker"),
            }
        }
        Released {
            result: Ok(()),
            refunded,
            charged,
            breaker,
            rule: Some(lease.rule),
            resource: Some(lease.resource),
            changed,
        }
    }

    /// Charges the excess at every level the lease was charged at ([`policy::charge_excess`]); this
    /// store only locks each level in turn.
    fn charge_excess(&self, lease: &Lease, rule: &Rule, excess: u64, now: Nanos) -> u64 {
        let factor = self
            .pressure
            .with_existing(&lease.resource, |p| p.factor(rule))
            .unwrap_or(1.0);
        let charged: Vec<_> = lease.levels.iter().filter(|l| l.charged).collect();
        let charge = |i: usize, want: u64| {
            let level = charged.get(i)?;
            let spec = match &level.partition {
                None => Some(&rule.resource),
                Some((p, key)) => {
                    // The value is the key's last part: an override's limits are that value's.
                    let value = key
                        .rsplit(crate::engine::plan::KEY_SEP)
                        .next()
                        .unwrap_or_default();
                    rule.partitions.get(*p as usize).map(|p| p.spec_for(value))
                }
            }?;
            let settled = self
                .levels
                .with(lease.key(level), &self.keys, LevelCell::default, |c| {
                    policy::release::charge_level(c, (rule, spec), factor, want, now)
                });
            // The lease has ended already: a full key table must not turn its release into an error.
            settled
                .inspect_err(
                    |e| tracing::warn!(error = %e, "settlement charge skipped at one level"),
                )
                .ok()
                .flatten()
        };
        let refund = |i: usize, n: u64| {
            if let Some(level) = charged.get(i) {
                self.levels.with_existing(lease.key(level), |c| {
                    policy::release::refund_level(c, n, now, now);
                });
            }
        };
        policy::charge_excess(charged.len(), excess, charge, refund)
    }

    pub(super) fn reclaim_expired(&self, now: Nanos, limit: usize) -> (Vec<Expired>, bool) {
        let mut expired = Vec::new();
        let more = self.leases.expire(now, limit, |lease_id, lease| {
            self.free_slots(&lease);
            self.return_probe(&lease);
            expired.push(Expired {
                lease_id,
                resource: lease.resource,
                rule: lease.rule,
            });
        });
        (expired, more)
    }

    pub(super) fn revoke_now(&self, id: LeaseId, now: Nanos) -> bool {
        match self.leases.end(id, NotReleased::Expired, now) {
            Some(lease) => {
                self.free_slots(&lease);
                self.return_probe(&lease);
                true
            }
            None => false,
        }
    }
}
