//! The in-memory store's steps of an acquire ([`AcquireState`]; the order is the policy's, in
//! [`crate::engine::policy`]): the resource's pressure state, its breaker, and every level locked together in
//! a fixed order (by address, so two acquires touching the same levels can never deadlock), judged, and
//! debited all or none; then the lease.

use std::sync::{Arc, MutexGuard, atomic::Ordering};

use smallvec::SmallVec;

use super::{
    MemoryStore,
    leases::{Lease, LeaseLevel},
    table::{Shared, Slot, lock},
};
use crate::{
    clock::{Nanos, nanos},
    engine::{
        AdaptiveSpec, Breaker, BreakerSpec, Decision, EngineError, LeaseId, LevelsRead, Name, Plan,
        level::LevelCell,
        policy::{self, AcquireState, Judged, NewLease, Tightest, judge},
    },
};

impl AcquireState for MemoryStore {
    type Pressure = Shared<crate::engine::pressure::PressureState>;
    type Held = SmallVec<[LeaseLevel; 2]>;
    type BreakerKey = Arc<str>;

    #[inline]
    fn pressure(&self, plan: &Plan<'_>) -> Result<(Name, Option<Self::Pressure>), EngineError> {
        let rule = plan.rule;
        // A resource's pressure state (pause, adaptive rate) exists only once a throttle report or an
        // adaptive rule made it; a fresh one is "not paused, factor 1". So an exact, non-adaptive resource
        // reads it only if it exists, and not even that while no resource has any.
        if rule.adaptive.is_none() && plan.is_exact() {
            let existing = if self.pressure.is_empty() {
                None
            } else {
                self.pressure.get(plan.resource)
            };
            return Ok((Name::Configured(rule.name), existing));
        }
        let (key, pressure) =
            self.pressure
                .get_or_insert(plan.resource, &self.keys, Default::default)?;
        let resource = if plan.is_exact() {
            Name::Configured(rule.name)
        } else {
            // A name given under a pattern is shared with its pressure state's key, not copied.
            Name::Given(key)
        };
        Ok((resource, Some(pressure)))
    }

    #[inline]
    fn pause_and_factor(&self, pressure: &Self::Pressure, plan: &Plan<'_>) -> (Nanos, f64) {
        let p = lock(pressure);
        (p.value.paused_until, p.value.factor(plan.rule))
    }

    #[inline]
    fn with_breaker<R>(
        &self,
        spec: &BreakerSpec,
        key: &str,
        now: Nanos,
        f: impl FnOnce(&mut Breaker) -> R,
    ) -> Result<(R, Arc<str>), EngineError> {
        self.breaker_step(spec, key, now, |stored, b| (f(b), stored.clone()))
    }

    #[inline]
    fn cancel_probe(&self, key: &Arc<str>, epoch: u64) {
        self.breakers.with_existing(key, |b| b.cancel_probe(epoch));
    }

    #[inline]
    fn peek(&self, plan: &Plan<'_>, factor: f64, now: Nanos) -> Tightest {
        self.peek_levels(plan, factor, now)
    }

    #[inline]
    fn debit(
        &self,
        plan: &Plan<'_>,
        factor: f64,
        now: Nanos,
        held: &mut Self::Held,
    ) -> Result<Judged, EngineError> {
        if plan.holds_nothing() {
            return self.debit_levels(plan, factor, now, held);
        }
        self.leases.reserve()?;
        let outcome = self.debit_levels(plan, factor, now, held);
        if !matches!(outcome, Ok((_, Ok(())))) {
            self.leases.unreserve();
        }
        outcome
    }

    #[inline]
    fn raise(&self, pressure: &Self::Pressure, spec: &AdaptiveSpec, resource: &Name, now: Nanos) {
        let mut p = lock(pressure);
        if p.value.adaptive.on_grant(spec, now) {
            tracing::debug!(resource = %resource, factor = p.value.adaptive.factor(), "adaptive rate raised");
        }
    }

    #[inline]
    fn insert(&self, new: NewLease<'_, '_, Self::Held, Arc<str>>) -> LeaseId {
        let (plan, rule) = (new.plan, new.plan.rule);
        self.leases.insert(Lease {
            resource: new.resource,
            rule: rule.name,
            levels: new.held,
            permits: plan.permits,
            granted_at: new.granted_at,
            expires_at: new.expires_at,
            default_ttl: nanos(rule.lease_ttl),
            max_ttl: nanos(rule.max_lease_ttl),
            breaker_key: new.breaker_key,
            probe: new.probe,
            failure_reported: false,
            client_id: plan.client_id.map(Box::from),
            owner: plan.owner,
            terms: rule.clone(),
        })
    }

    #[inline]
    fn held_nothing(&self) -> LeaseId {
        self.held_nothing.issue()
    }
}

impl MemoryStore {
    pub(super) fn acquire_now(&self, plan: &Plan<'_>, now: Nanos) -> Result<Decision, EngineError> {
        match plan.request_id {
            None => policy::decide(self, plan, now),
            Some(id) => {
                let window = self.idempotency_window.load(Ordering::Relaxed);
                self.idempotency
                    .replay_or(plan.resource, id, plan.fingerprint, now, window, || {
                        policy::decide(self, plan, now)
                    })
            }
        }
    }

    /// See [`AcquireState::peek`].
    fn peek_levels(&self, plan: &Plan<'_>, factor: f64, now: Nanos) -> Tightest {
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

    /// Each level as it stands, nothing written (for an explanation).
    pub(super) fn levels_now(&self, plan: &Plan<'_>) -> LevelsRead {
        let factor = self
            .pressure
            .with_existing(plan.resource, |p| p.factor(plan.rule))
            .unwrap_or(1.0);
        let cells = plan
            .levels
            .iter()
            .map(|level| {
                self.levels
                    .with_existing(&level.key, |c| c.clone())
                    .unwrap_or_default()
            })
            .collect();
        LevelsRead { factor, cells }
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
                && plan.is_exact()
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
        let keys = plan.levels.iter().map(|l| &*l.key);
        self.with_cells(keys, |cells, values| {
            judge(plan, values, factor, now, |i, taken| {
                held.push(LeaseLevel {
                    partition: plan.levels[i].partition.map(|p| (p, cells[i].0.clone())),
                    slot: taken.slot,
                    charged: taken.charged,
                });
            })
        })
    }

    /// Runs `f` on the level cells of `keys` (distinct), created where absent and locked together: in
    /// address order, so two calls touching the same cells can never deadlock. `f` gets each key's cell
    /// handle and its locked value, in `keys`' order.
    pub(super) fn with_cells<'k, R>(
        &self,
        keys: impl Iterator<Item = &'k str> + Clone,
        f: impl FnOnce(&[(Arc<str>, Shared<LevelCell>)], &mut [&mut LevelCell]) -> R,
    ) -> Result<R, EngineError> {
        loop {
            // Levels are few (resource-wide plus a partition or two): keep the bookkeeping on the stack.
            let mut cells: SmallVec<[(Arc<str>, Shared<LevelCell>); 4]> = SmallVec::new();
            for key in keys.clone() {
                cells.push(
                    self.levels
                        .get_or_insert(key, &self.keys, LevelCell::default)?,
                );
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
            return Ok(f(&cells, &mut values));
        }
    }

    /// An exact rule's resource-wide level, the only level: decided on the cell the store's handle for the
    /// rule holds ([`Homes`]), locked directly. `None` when the plan was resolved against another rule set
    /// (it raced a reload) or the cell has been evicted (a reload removed the rule): the caller goes to the
    /// table.
    ///
    /// [`Homes`]: super::home::Homes
    fn decide_at_home(
        &self,
        plan: &Plan<'_>,
        factor: f64,
        now: Nanos,
        held: &mut SmallVec<[LeaseLevel; 2]>,
    ) -> Result<Option<Judged>, EngineError> {
        let homes = self.homes.load();
        let home = homes.get_or_try_init(plan.resolution, || {
            let (_, cell) =
                self.levels
                    .get_or_insert(plan.resource, &self.keys, LevelCell::default)?;
            Ok::<_, EngineError>(cell)
        })?;
        let Some(home) = home else {
            return Ok(None);
        };
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
