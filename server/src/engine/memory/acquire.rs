//! The acquire path: pause, breaker, then every level locked together in a fixed order (by address, so two
//! acquires touching the same levels can never deadlock), checked, and debited all or none.

use std::{
    sync::{Arc, MutexGuard, atomic::Ordering},
    time::Duration,
};

use smallvec::SmallVec;

use super::{
    MemoryStore,
    leases::{Lease, LeaseLevel},
    level::LevelCell,
    table::{Shared, Slot, lock},
};
use crate::{
    clock::{Nanos, nanos},
    engine::{
        Admission, Breaker, Decision, Denial, EngineError, Grant, LevelState, Name, Plan, Verdict,
    },
};

/// Figures of the tightest levels, reported with every decision.
#[derive(Debug, Default, Clone, Copy)]
struct Tightest {
    remaining: Option<u64>,
    limit: u64,
    reset_after: Nanos,
    headroom: Option<u32>,
    in_flight: u32,
    max_in_flight: u32,
}

impl Tightest {
    fn observe(&mut self, cell: &LevelCell, max_in_flight: Option<u32>, now: Nanos) {
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

    fn decision(self, resource: Name, rule: &'static str, verdict: Verdict) -> Decision {
        Decision {
            resource,
            rule,
            verdict,
            remaining: self.remaining.unwrap_or(0),
            limit: self.limit,
            reset_after: self.reset_after,
            in_flight: self.in_flight,
            max_in_flight: self.max_in_flight,
        }
    }
}

/// What judging the levels found: the figures for the answer, and a grant (`Ok`) or the denial.
type Judged = (Tightest, Result<(), Denied>);

struct Denied {
    reason: Denial,
    retry_after: Nanos,
    level: usize,
}

impl MemoryStore {
    pub(super) fn acquire_now(&self, plan: &Plan<'_>, now: Nanos) -> Result<Decision, EngineError> {
        match plan.request_id {
            None => self.decide(plan, now),
            Some(id) => {
                let window = self.idempotency_window.load(Ordering::Relaxed);
                self.idempotency
                    .replay_or(plan.resource, id, plan.fingerprint, now, window, || {
                        self.decide(plan, now)
                    })
            }
        }
    }

    /// Figures for an early denial (pause, breaker), read level by level without debiting.
    fn peek(&self, plan: &Plan<'_>, factor: f64, now: Nanos) -> Tightest {
        let mut t = Tightest::default();
        for level in &plan.levels {
            let spec = level.spec(plan.rule);
            let mut cell = self
                .levels
                .with_existing(&level.key, |c| c.clone())
                .unwrap_or_default();
            cell.sync(spec, factor, now);
            t.observe(&cell, spec.max_in_flight, now);
        }
        t
    }

    /// Each level as it stands at `now`, nothing written (for an explanation).
    pub(super) fn levels_now(&self, plan: &Plan<'_>, now: Nanos) -> Vec<LevelState> {
        let factor = self
            .pressure
            .with_existing(plan.resource, |p| p.factor(plan.rule))
            .unwrap_or(1.0);
        plan.levels
            .iter()
            .map(|level| {
                let mut cell = self
                    .levels
                    .with_existing(&level.key, |c| c.clone())
                    .unwrap_or_default();
                cell.sync(level.spec(plan.rule), factor, now);
                LevelState {
                    tokens: cell.bucket.as_ref().map(|b| b.remaining(now)),
                    rate_wait: cell
                        .bucket
                        .as_ref()
                        .and_then(|b| b.check(now, plan.permits).err()),
                    in_flight: cell.in_flight,
                }
            })
            .collect()
    }

    fn decide(&self, plan: &Plan<'_>, now: Nanos) -> Result<Decision, EngineError> {
        let rule = &plan.rule;
        // A resource's pressure state (pause, adaptive rate) exists only once a throttle report or an
        // adaptive rule made it; a fresh one is "not paused, factor 1". So an exact, non-adaptive resource
        // reads it only if it exists, and not even that while no resource has any.
        let (resource, pressure) = if rule.adaptive.is_none() && plan.exact {
            let existing = if self.pressure.is_empty() {
                None
            } else {
                self.pressure.get(plan.resource)
            };
            (Name::Configured(rule.name), existing)
        } else {
            let (key, pressure) =
                self.pressure
                    .get_or_insert(plan.resource, &self.keys, Default::default)?;
            let resource = if plan.exact {
                Name::Configured(rule.name)
            } else {
                Name::Given(key)
            };
            (resource, Some(pressure))
        };
        let (paused_until, factor) = pressure.as_ref().map_or((0, 1.0), |p| {
            let p = lock(p);
            (p.value.paused_until, p.value.factor(rule))
        });
        if paused_until > now {
            let verdict = Verdict::Denied {
                reason: Denial::Paused,
                retry_after: paused_until - now,
                denied_by: "pause".into(),
            };
            return Ok(self
                .peek(plan, factor, now)
                .decision(resource, rule.name, verdict));
        }

        let mut probe = None;
        let mut breaker_key = None;
        if let (Some(spec), Some(key)) = (&rule.breaker, &plan.breaker_key) {
            let (admission, transition, key) = loop {
                let (key, shared) = self
                    .breakers
                    .get_or_insert(key, &self.keys, || Breaker::new(spec, now))?;
                let mut slot = lock(&shared);
                if !slot.evicted {
                    let (a, t) = slot.value.admit(spec, now);
                    break (a, t, key);
                }
            };
            if let Some(t) = transition {
                self.stats.transition(rule.name, &key, t);
            }
            match admission {
                Admission::Allowed => {}
                Admission::Probe(epoch) => probe = Some(epoch),
                Admission::Rejected { retry_after } => {
                    let verdict = Verdict::Denied {
                        reason: Denial::CircuitOpen,
                        retry_after,
                        denied_by: "breaker".into(),
                    };
                    return Ok(self
                        .peek(plan, factor, now)
                        .decision(resource, rule.name, verdict));
                }
            }
            breaker_key = Some(key);
        }

        // What the grant takes at each level, written by the judging straight into the lease-to-be.
        let mut levels = SmallVec::new();
        let result = self.leases.reserve().and_then(|()| {
            let outcome = self.debit_levels(plan, factor, now, &mut levels);
            if !matches!(outcome, Ok((_, Ok(())))) {
                self.leases.unreserve();
            }
            outcome
        });
        let tightest = match result {
            Ok((t, Ok(()))) => t,
            other => {
                if let (Some(epoch), Some(key)) = (probe, &breaker_key) {
                    self.breakers.with_existing(key, |b| b.cancel_probe(epoch));
                }
                let (t, Err(denied)) = other? else {
                    // `other` is a denial or an error: the grant matched the arm above.
                    return Err(EngineError::Unavailable("internal: grant misrouted".into()));
                };
                let verdict = Verdict::Denied {
                    reason: denied.reason,
                    retry_after: denied.retry_after,
                    denied_by: plan.levels[denied.level].label(rule),
                };
                return Ok(t.decision(resource, rule.name, verdict));
            }
        };

        if let (Some(adaptive), Some(pressure)) = (&rule.adaptive, &pressure) {
            let mut p = lock(pressure);
            if p.value.adaptive.on_grant(adaptive, now) {
                tracing::debug!(resource = %resource, factor = p.value.adaptive.factor(), "adaptive rate raised");
            }
        }

        let expires_at = now.saturating_add(nanos(plan.ttl));
        let lease_id = self.leases.insert(Lease {
            resource: resource.clone(),
            rule: rule.name,
            levels,
            permits: plan.permits,
            expires_at,
            default_ttl: nanos(rule.lease_ttl),
            max_ttl: nanos(rule.max_lease_ttl),
            breaker_key,
            probe,
            failure_reported: false,
            client_id: plan.client_id.map(Box::from),
            owner: plan.owner,
        });
        let grant = Grant {
            lease_id,
            expires_at,
            ttl: plan.ttl,
            replayed: false,
        };
        Ok(tightest.decision(resource, rule.name, Verdict::Granted(grant)))
    }

    /// Locks every level, checks all, and debits all or none; on a grant, `held` says what was taken at
    /// each level.
    fn debit_levels(
        &self,
        plan: &Plan<'_>,
        factor: f64,
        now: Nanos,
        held: &mut SmallVec<[LeaseLevel; 2]>,
    ) -> Result<Judged, EngineError> {
        if let [level] = plan.levels.as_slice() {
            if level.partition.is_none()
                && plan.exact
                && let Some(decided) = self.decide_at_home(plan, factor, now, held)?
            {
                return Ok(decided);
            }
            // One level (the common shape): decide under the map shard's read lock, which keeps the cell
            // from being evicted meanwhile, so no reference to it is counted and no retry is needed.
            return self.levels.with_locked(
                &level.key,
                &self.keys,
                LevelCell::default,
                |key, cell| {
                    judge(plan, &mut [cell], factor, now, |_, taken| {
                        held.push(LeaseLevel {
                            partition: level.partition.map(|i| (i, key.clone())),
                            slot: taken.slot,
                            charged: taken.charged,
                        });
                    })
                },
            );
        }
        loop {
            // Levels are few (resource-wide plus a partition or two): keep the bookkeeping on the stack.
            let mut cells: SmallVec<[(Arc<str>, Shared<LevelCell>); 4]> = SmallVec::new();
            for level in &plan.levels {
                cells.push(self.levels.get_or_insert(
                    &level.key,
                    &self.keys,
                    LevelCell::default,
                )?);
            }
            // Lock in address order, then index the guards by level again (moving a guard keeps it locked).
            let mut order: SmallVec<[usize; 4]> = (0..cells.len()).collect();
            order.sort_unstable_by_key(|&i| Arc::as_ptr(&cells[i].1) as usize);
            let mut locked: SmallVec<[(usize, MutexGuard<'_, Slot<LevelCell>>); 4]> =
                order.iter().map(|&i| (i, lock(&cells[i].1))).collect();
            locked.sort_unstable_by_key(|(i, _)| *i);
            let mut guards: SmallVec<[MutexGuard<'_, Slot<LevelCell>>; 4]> =
                locked.into_iter().map(|(_, g)| g).collect();
            if guards.iter().any(|g| g.evicted) {
                // Evicted between lookup and lock: look the keys up again.
                continue;
            }
            let mut values: SmallVec<[&mut LevelCell; 4]> =
                guards.iter_mut().map(|g| &mut g.value).collect();
            return Ok(judge(plan, &mut values, factor, now, |i, taken| {
                held.push(LeaseLevel {
                    partition: plan.levels[i].partition.map(|p| (p, cells[i].0.clone())),
                    slot: taken.slot,
                    charged: taken.charged,
                });
            }));
        }
    }

    /// An exact rule's resource-wide level, the only level: decided on the cell the rule's [`Home`] handle
    /// holds, locked directly. `None` when that cell has been evicted (the rule was removed by a reload
    /// after this request resolved it): the caller goes to the table.
    ///
    /// [`Home`]: super::home::Home
    fn decide_at_home(
        &self,
        plan: &Plan<'_>,
        factor: f64,
        now: Nanos,
        held: &mut SmallVec<[LeaseLevel; 2]>,
    ) -> Result<Option<Judged>, EngineError> {
        let home = plan.rule.home.get_or_try_init(|| {
            let (_, cell) =
                self.levels
                    .get_or_insert(plan.resource, &self.keys, LevelCell::default)?;
            Ok::<_, EngineError>(cell)
        })?;
        let mut slot = lock(home);
        if slot.evicted {
            return Ok(None);
        }
        Ok(Some(judge(
            plan,
            &mut [&mut slot.value],
            factor,
            now,
            |_, taken| {
                held.push(LeaseLevel {
                    partition: None,
                    slot: taken.slot,
                    charged: taken.charged,
                });
            },
        )))
    }
}

/// What a grant took at one level.
#[derive(Debug, Clone, Copy, Default)]
struct Taken {
    slot: bool,
    charged: bool,
}

/// Checks every level (locked by the caller, in plan order) and debits all or none; on a grant, tells
/// `taken` what was taken at each level, in order.
fn judge(
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
            cell.in_flight += 1;
        }
        tightest.observe(cell, spec.max_in_flight, now);
        taken(i, Taken { slot, charged });
    }
    (tightest, Ok(()))
}
