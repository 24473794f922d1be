//! [`MemoryStore`]: the in-memory [`Store`].

use std::{
    collections::{HashMap, HashSet},
    future::{Future, ready},
    sync::{
        Arc, PoisonError, RwLock,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use arc_swap::ArcSwap;

use crate::engine::{
    level::LevelCell,
    policy::{HitPlan, Hits, judge_hits},
};

use super::{
    home::Homes, idempotency::Idempotency, leases::LeaseTable, table::KeyBudget, table::Table,
};
use crate::{
    clock::{Nanos, nanos},
    engine::{
        Breaker, BreakerRef, BreakerState, CircuitView, Decision, EngineError, LeaseId, LeaseQuery,
        LeaseView, LevelsRead, Plan, Release, Released, Renew, Renewed, ReportPlan, Reported,
        ResourceUsage, Rules, Store, StoreUsage, Sweep, UsageQuery,
    },
};

/// The embedded in-memory store. See the module docs.
#[derive(Debug)]
pub struct MemoryStore {
    pub(super) keys: KeyBudget,
    pub(super) levels: Table<LevelCell>,
    pub(super) breakers: Table<Breaker>,
    pub(super) pressure: Table<crate::engine::pressure::PressureState>,
    pub(super) leases: LeaseTable,
    pub(super) idempotency: Idempotency,
    pub(super) idempotency_window: AtomicU64,
    /// Resource-wide level keys never evicted: those of the exact rules in force, whose handles point at
    /// them (see `home`).
    kept: RwLock<HashSet<&'static str, super::Hasher>>,
    /// The exact rules' handles on their resource-wide cells, for the rule set in force.
    pub(super) homes: ArcSwap<Homes>,
    /// Issues the ids of grants that hold nothing (not stored; their Release and Renew are told by id).
    pub(super) held_nothing: crate::engine::LeaseIds,
}

impl MemoryStore {
    /// The most leases this store can hold: a lease id carries its slot in the lease table. `apply` refuses
    /// a `capacity.max_leases` above it (and config checks it first).
    pub const MAX_LEASES: usize = super::leases::MAX_LEASES;

    /// True when this store issued lease `id` (a shared store's local fallback routes by it).
    pub fn issued(&self, id: crate::engine::LeaseId) -> bool {
        self.leases.was_issued(id) || self.held_nothing.was_issued(id)
    }

    /// An empty store sized by `rules.capacity`.
    pub fn new(rules: &Rules) -> Self {
        let store = Self {
            keys: KeyBudget::new(rules.capacity.max_live_keys),
            levels: Table::default(),
            breakers: Table::default(),
            pressure: Table::default(),
            leases: LeaseTable::new(rules.capacity.max_leases),
            idempotency: Idempotency::default(),
            idempotency_window: AtomicU64::new(nanos(rules.capacity.idempotency_window)),
            kept: RwLock::default(),
            homes: ArcSwap::from_pointee(Homes::new(rules)),
            held_nothing: crate::engine::LeaseIds::default(),
        };
        store.keep_resource_levels(rules);
        store.idempotency.set_cap(rules.capacity.max_request_ids);
        store
    }

    fn renew_now(&self, renew: &Renew, now: Nanos) -> Result<Renewed, EngineError> {
        let id = renew.lease_id;
        let ttl = self
            .leases
            .update(id, |l| {
                if l.owner != renew.caller {
                    return Err(EngineError::not_owner(id));
                }
                if l.expires_at <= now {
                    return Ok(None);
                }
                let ttl = renew
                    .lease_ttl
                    .unwrap_or(Duration::from_nanos(l.default_ttl))
                    .min(Duration::from_nanos(l.max_ttl));
                Ok(Some(ttl))
            })
            .transpose()?
            .flatten();
        let Some(ttl) = ttl else {
            if self.held_nothing.was_issued(id) {
                return Ok(Renewed::nothing_held(renew.lease_ttl, now));
            }
            // Expired but not yet swept is still in the table: say expired, not released.
            let why = if self.is_expired_live(id, now) {
                crate::engine::NotReleased::Expired
            } else {
                self.why_gone(id)
            };
            return Err(match why {
                crate::engine::NotReleased::UnknownLease => {
                    EngineError::UnknownLease(id.to_string())
                }
                why => EngineError::FailedPrecondition(format!(
                    "lease_id: lease {id} can no longer be renewed ({}); acquire a new one",
                    match why {
                        crate::engine::NotReleased::AlreadyReleased => "it was released",
                        _ => "it has expired",
                    }
                )),
            });
        };
        let expires_at = now.saturating_add(nanos(ttl));
        if !self.leases.renew(id, expires_at) {
            return Err(EngineError::FailedPrecondition(format!(
                "lease_id: lease {id} ended while renewing"
            )));
        }
        Ok(Renewed { expires_at, ttl })
    }

    /// Why lease `id` is not live: expired (a tombstone says so), released (issued here, no tombstone; also
    /// an expiry older than the tombstone window), or unknown (never issued here).
    pub(super) fn why_gone(&self, id: LeaseId) -> crate::engine::NotReleased {
        use crate::engine::NotReleased;
        match self.leases.why_gone(id) {
            NotReleased::UnknownLease if self.leases.was_issued(id) => NotReleased::AlreadyReleased,
            why => why,
        }
    }

    fn is_expired_live(&self, id: LeaseId, now: Nanos) -> bool {
        self.leases
            .update(id, |l| l.expires_at <= now)
            .unwrap_or(false)
    }

    /// Names of every resource with state, in order (a resource has state in any of four tables: idle parts
    /// are evicted independently).
    fn resource_names(&self) -> std::collections::BTreeSet<Arc<str>> {
        let mut names = std::collections::BTreeSet::new();
        let sep = crate::engine::plan::KEY_SEP;
        self.pressure.for_each(|name, _| {
            names.insert(name.clone());
        });
        self.levels.for_each(|key, _| match key.split_once(sep) {
            None => {
                names.insert(key.clone());
            }
            // A partition level: `resource␟descriptor␟value` (a resource may have partitions only).
            Some((resource, _)) => {
                if !names.contains(resource) {
                    names.insert(Arc::from(resource));
                }
            }
        });
        self.breakers.for_each(|key, _| {
            if !key.contains(sep) {
                names.insert(key.clone());
            }
        });
        self.leases.for_each(|_, l| {
            if !names.contains(l.resource.as_str()) {
                names.insert(Arc::from(l.resource.as_str()));
            }
            true
        });
        names
    }

    /// The names one usage page lists: matching `query`, in order, at most `limit` (and whether more match).
    fn usage_page(&self, rules: &Rules, query: &UsageQuery<'_>) -> (Vec<Arc<str>>, bool) {
        let mut names = self.resource_names();
        if query.configured {
            let used: HashSet<&'static str> = names
                .iter()
                .filter_map(|n| rules.resolve(n).map(|r| r.name))
                .collect();
            for rule in rules.all() {
                if !used.contains(rule.name) || !crate::engine::glob::is_pattern(rule.name) {
                    names.insert(Arc::from(rule.name));
                }
            }
        }
        let after = query.after.unwrap_or("");
        let mut matching = names
            .into_iter()
            .filter(|n| n.starts_with(query.prefix) && (query.after.is_none() || &**n > after))
            .filter(|n| match (query.rule, rules.resolve(n)) {
                (_, None) => false,
                (None, Some(_)) => true,
                (Some(want), Some(rule)) => rule.name == want,
            });
        let page: Vec<_> = matching.by_ref().take(query.limit).collect();
        let more = matching.next().is_some();
        (page, more)
    }

    fn usage_now(&self, rules: &Rules, query: &UsageQuery<'_>, now: Nanos) -> StoreUsage {
        let (page, more) = self.usage_page(rules, query);
        let mut leases: HashMap<&str, u64> = page.iter().map(|n| (&**n, 0)).collect();
        self.leases.for_each(|_, l| {
            if let Some(n) = leases.get_mut(l.resource.as_str()) {
                *n += 1;
            }
            true
        });
        let mut resources = Vec::with_capacity(page.len());
        for name in &page {
            let Some(rule) = rules.resolve(name) else {
                continue;
            };
            let level = self
                .levels
                .with_existing(name, |c| c.clone())
                .unwrap_or_default();
            let tokens_available = match (level.limit, rule.resource.rate) {
                (Some(l), _) => Some(crate::engine::policy::Limiter::remaining(&l, now)),
                (None, Some(r)) => Some(r.burst),
                (None, None) => None,
            };
            let breaker = self
                .breakers
                .with_existing(name, |b| b.state(now))
                .unwrap_or(BreakerState::Closed);
            let pressure = self
                .pressure
                .with_existing(name, |p| p.clone())
                .unwrap_or_default();
            resources.push(ResourceUsage {
                tokens_available,
                in_flight: level.in_flight,
                live_leases: leases.get(&**name).copied().unwrap_or(0),
                breaker,
                rate_factor: pressure.factor(rule),
                paused_until: (pressure.paused_until > now).then_some(pressure.paused_until),
                resource: name.clone(),
            });
        }
        StoreUsage {
            resources,
            more,
            live_keys: self.keys.live() as u64,
            live_leases: self.leases.len() as u64,
            request_ids: self.idempotency.len() as u64,
            request_ids_dropped: self.idempotency.dropped(),
        }
    }

    fn sweep_now(&self, now: Nanos, limit: usize) -> Sweep {
        let (expired, more_expired) = self.reclaim_expired(now, limit);
        // Old tombstones and lapsed request_ids go every sweep, oldest first and bounded like expiries.
        let (tombstones, more_tombstones) = self.leases.forget(now, limit);
        let (request_ids, more_request_ids) = self.idempotency.forget(now, limit);
        Sweep {
            expired,
            forgotten: tombstones + request_ids,
            more: more_expired || more_tombstones || more_request_ids,
            ..Sweep::default()
        }
    }

    fn evict_idle_now(&self, now: Nanos) -> usize {
        // Held for the whole pass, so a reload's new rules (published after `apply`) never find a cell
        // this pass is about to drop.
        let kept = self.kept.read().unwrap_or_else(PoisonError::into_inner);
        let evicted = self
            .levels
            .evict(&self.keys, |key, c| c.is_idle(now) && !kept.contains(key))
            + self.breakers.evict(&self.keys, |_, b| b.is_pristine(now))
            + self.pressure.evict(&self.keys, |_, p| p.is_idle(now));
        drop(kept);
        evicted
    }

    fn leases_of(&self, query: &LeaseQuery<'_>) -> (Vec<LeaseView>, bool) {
        let mut out = Vec::new();
        let mut more = false;
        let wanted = |l: &super::leases::Lease| {
            query.resource.is_none_or(|r| r == &*l.resource)
                && l.resource.starts_with(query.prefix)
                && query.rule.is_none_or(|r| r == l.rule)
        };
        self.leases.for_each_from(query.after, |cursor, id, l| {
            if !wanted(l) {
                return true;
            }
            if out.len() == query.limit {
                more = true;
                return false;
            }
            let descriptors = l
                .levels
                .iter()
                .filter_map(|lv| lv.partition.as_ref())
                .filter_map(|(_, key)| {
                    let mut parts = key.splitn(3, crate::engine::plan::KEY_SEP);
                    let (_, d, v) = (parts.next()?, parts.next()?, parts.next()?);
                    Some((d.to_owned(), v.to_owned()))
                })
                .collect();
            out.push(LeaseView {
                lease_id: id,
                resource: l.resource.clone(),
                descriptors,
                permits: l.permits,
                expires_at: l.expires_at,
                client_id: l.client_id.as_deref().map(str::to_owned),
                owner: l.owner,
                probe: l.probe.is_some(),
                cursor,
            });
            true
        });
        (out, more)
    }

    /// Keeps the resource-wide cells of `rules`' exact rules from eviction (and no others).
    fn keep_resource_levels(&self, rules: &Rules) {
        let kept = rules.exact_resource_levels().collect();
        *self.kept.write().unwrap_or_else(PoisonError::into_inner) = kept;
        if self.homes.load().get_set() != rules.id() {
            self.homes.store(Arc::new(Homes::new(rules)));
        }
    }

    /// Applies reloaded capacity settings.
    pub fn apply_capacity(&self, rules: &Rules) {
        self.keys.set_cap(rules.capacity.max_live_keys);
        self.leases.set_cap(rules.capacity.max_leases);
        self.idempotency_window
            .store(nanos(rules.capacity.idempotency_window), Ordering::Relaxed);
        self.idempotency.set_cap(rules.capacity.max_request_ids);
    }
}

impl Store for MemoryStore {
    fn acquire(
        &self,
        plan: &Plan<'_>,
        now: Nanos,
    ) -> impl Future<Output = Result<Decision, EngineError>> + Send {
        ready(self.acquire_now(plan, now))
    }

    fn acquire_ready(&self, plan: &Plan<'_>, now: Nanos) -> Option<Result<Decision, EngineError>> {
        Some(self.acquire_now(plan, now))
    }

    fn release(
        &self,
        rules: &Rules,
        release: &Release,
        now: Nanos,
    ) -> impl Future<Output = Result<Released, EngineError>> + Send {
        ready(self.release_now(rules, release, now))
    }

    fn renew(
        &self,
        renew: &Renew,
        now: Nanos,
    ) -> impl Future<Output = Result<Renewed, EngineError>> + Send {
        ready(self.renew_now(renew, now))
    }

    fn report(
        &self,
        report: &ReportPlan<'_>,
        now: Nanos,
    ) -> impl Future<Output = Result<Reported, EngineError>> + Send {
        ready(self.report_now(report, now))
    }

    fn circuit(
        &self,
        target: &BreakerRef<'_>,
        now: Nanos,
    ) -> impl Future<Output = Result<CircuitView, EngineError>> + Send {
        ready(Ok(self.circuit_now(target, now)))
    }

    fn levels(
        &self,
        plan: &Plan<'_>,
        _now: Nanos,
    ) -> impl Future<Output = Result<LevelsRead, EngineError>> + Send {
        ready(Ok(self.levels_now(plan)))
    }

    fn reset_breaker(
        &self,
        target: &BreakerRef<'_>,
        now: Nanos,
    ) -> impl Future<Output = Result<BreakerState, EngineError>> + Send {
        ready(self.reset_now(target, now))
    }

    fn force_open(
        &self,
        target: &BreakerRef<'_>,
        duration: Duration,
        now: Nanos,
    ) -> impl Future<Output = Result<BreakerState, EngineError>> + Send {
        ready(self.force_open_now(target, duration, now))
    }

    fn revoke(
        &self,
        lease_id: LeaseId,
        now: Nanos,
    ) -> impl Future<Output = Result<bool, EngineError>> + Send {
        ready(Ok(self.revoke_now(lease_id, now)))
    }

    fn leases(
        &self,
        query: &LeaseQuery<'_>,
    ) -> impl Future<Output = Result<(Vec<LeaseView>, bool), EngineError>> + Send {
        ready(Ok(self.leases_of(query)))
    }

    fn usage(
        &self,
        rules: &Rules,
        query: &UsageQuery<'_>,
        now: Nanos,
    ) -> impl Future<Output = Result<StoreUsage, EngineError>> + Send {
        ready(Ok(self.usage_now(rules, query, now)))
    }

    fn hits(
        &self,
        plan: &HitPlan<'_>,
        now: Nanos,
    ) -> impl Future<Output = Result<Hits, EngineError>> + Send {
        let (keys, index) = plan.cells();
        ready(self.with_cells(keys.iter().copied(), |_, cells| {
            judge_hits(plan, cells, &index, now)
        }))
    }

    fn refill(
        &self,
        keys: &[String],
        _now: Nanos,
    ) -> impl Future<Output = Result<u32, EngineError>> + Send {
        let mut n = 0;
        for key in keys {
            let found = self.levels.with_existing(key, |c| {
                // A fresh limit is a full one, whatever the algorithm.
                c.limit = None;
            });
            n += u32::from(found.is_some());
        }
        ready(Ok(n))
    }

    fn sweep(
        &self,
        now: Nanos,
        limit: usize,
    ) -> impl Future<Output = Result<Sweep, EngineError>> + Send {
        ready(Ok(self.sweep_now(now, limit)))
    }

    fn evict_idle(&self, now: Nanos) -> impl Future<Output = Result<usize, EngineError>> + Send {
        ready(Ok(self.evict_idle_now(now)))
    }

    fn apply(&self, rules: &Rules) -> Result<(), EngineError> {
        let max = rules.capacity.max_leases;
        if max > Self::MAX_LEASES {
            return Err(EngineError::invalid(
                "capacity.max_leases",
                format!(
                    "{max} is more than the in-memory store can hold ({}): a lease id carries its slot",
                    Self::MAX_LEASES
                ),
            ));
        }
        self.apply_capacity(rules);
        self.keep_resource_levels(rules);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::{
        pin::pin,
        sync::Arc,
        task::{Context, Poll, Waker},
    };

    use crate::{
        clock::FakeClock,
        config,
        engine::{Acquire, BreakerTarget, Outcome, Quota, Release, Renew, Report, ThrottleKind},
    };

    /// Polls once: the in-memory store must answer every call without awaiting (its futures are `ready`),
    /// which the server's hot path relies on.
    fn at_once<F: std::future::Future>(f: F) -> F::Output {
        match pin!(f).poll(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(v) => v,
            Poll::Pending => panic!("the in-memory store awaited"),
        }
    }

    /// How many times rule `r`'s breakers went along `edge`, by the engine's counters.
    fn counted(
        quota: &Quota<super::MemoryStore>,
        edge: (crate::engine::BreakerState, crate::engine::BreakerState),
    ) -> u64 {
        let stats = quota.stats().snapshot();
        stats
            .transitions
            .iter()
            .find(|(rule, from, to, _)| *rule == "r" && (*from, *to) == edge)
            .map_or(0, |t| t.3)
    }

    /// The engine counts what its calls' answers report: each breaker transition once (a replayed acquire
    /// reports none), each expiry, each eviction.
    #[test]
    fn the_engine_counts_transitions_expiries_and_evictions_from_the_answers() {
        use crate::engine::BreakerState::{Closed, HalfOpen, Open};
        let rules = config::load_str(
            "[[resources]]\nname = \"r\"\nconcurrency = 5\nlease_ttl = \"1s\"\nbreaker = { consecutive_failures = 1, open_duration = \"1s\", half_open_probes = 1, half_open_successes = 1 }",
        )
        .unwrap()
        .rules;
        let clock = Arc::new(FakeClock::new());
        let quota = Quota::in_memory(rules, clock.clone());
        let acquire = |request_id: Option<&str>| Acquire {
            resource: "r".into(),
            permits: 1,
            request_id: request_id.map(str::to_owned),
            ..Default::default()
        };
        let release = |lease_id, outcome| Release {
            lease_id,
            outcome,
            used_permits: None,
            caller: None,
        };
        let lease = |d: crate::engine::Decision| d.grant().unwrap().lease_id;
        let first = lease(at_once(quota.acquire(&acquire(None))).unwrap());
        at_once(quota.release(&release(first, Outcome::Failure))).unwrap();
        clock.advance(std::time::Duration::from_secs(2));
        let probe = at_once(quota.acquire(&acquire(Some("p")))).unwrap();
        assert!(
            probe.transition().is_some(),
            "OPEN -> HALF_OPEN as it admits"
        );
        let replay = at_once(quota.acquire(&acquire(Some("p")))).unwrap();
        assert!(replay.grant().unwrap().replayed);
        assert!(
            replay.transition().is_none(),
            "a replay makes no transition"
        );
        at_once(quota.release(&release(lease(probe), Outcome::Success))).unwrap();
        for edge in [(Closed, Open), (Open, HalfOpen), (HalfOpen, Closed)] {
            let stats = quota.stats().snapshot();
            assert_eq!(
                counted(&quota, edge),
                1,
                "{edge:?} counted once: {:?}",
                stats.transitions
            );
        }
        assert_eq!(quota.stats().recent().len(), 3);

        let held = at_once(quota.acquire(&acquire(None))).unwrap();
        assert!(held.granted());
        clock.advance(std::time::Duration::from_secs(5));
        let swept = at_once(quota.sweep()).unwrap();
        assert_eq!(swept.expired.len(), 1);
        let stats = quota.stats().snapshot();
        assert_eq!(stats.expired_leases, vec![("r", 1)]);
        assert_eq!(stats.evicted_keys, swept.evicted_keys as u64);
    }

    /// An operator's ForceOpenBreaker and ResetBreaker are transitions too, counted once each; one that
    /// leaves the breaker as it was counts nothing.
    #[test]
    fn operator_changes_are_counted_as_transitions() {
        use crate::engine::BreakerState::{Closed, Open};
        let rules = config::load_str(
            "[[resources]]\nname = \"r\"\nconcurrency = 5\nbreaker = { consecutive_failures = 3, open_duration = \"10s\" }",
        )
        .unwrap()
        .rules;
        let quota = Quota::in_memory(rules, Arc::new(FakeClock::new()));
        let target = BreakerTarget {
            resource: "r".into(),
            descriptors: vec![],
        };
        let count = |edge| counted(&quota, edge);
        assert_eq!(at_once(quota.reset_breaker(&target)).unwrap(), Closed);
        assert_eq!(
            count((Open, Closed)) + count((Closed, Closed)),
            0,
            "already closed"
        );
        for _ in 0..2 {
            at_once(quota.force_open(&target, None)).unwrap();
        }
        assert_eq!(count((Closed, Open)), 1, "the second only extends it");
        assert_eq!(at_once(quota.reset_breaker(&target)).unwrap(), Open);
        assert_eq!(count((Open, Closed)), 1);
        let reasons: Vec<_> = quota.stats().recent().iter().map(|t| t.reason).collect();
        assert_eq!(
            reasons,
            ["forced open by an operator", "reset by an operator"]
        );
    }

    #[test]
    fn rules_asking_for_more_leases_than_the_store_holds_are_refused_and_the_old_stay() {
        use crate::engine::{Capacity, EngineError, MemoryStore, Rules, Store};
        let rules = config::load_str("[[resources]]\nname = \"r\"\nconcurrency = 1")
            .unwrap()
            .rules;
        let quota = Quota::in_memory(rules.clone(), Arc::new(FakeClock::new()));
        let too_many = Capacity {
            max_leases: MemoryStore::MAX_LEASES + 1,
            ..rules.capacity
        };
        let bigger = Rules::new(vec![], rules.limits, too_many);
        match quota.replace_rules(bigger.clone()) {
            Err(EngineError::InvalidArgument { field, problem }) => {
                assert_eq!(field, "capacity.max_leases");
                assert!(problem.contains("can hold"), "{problem}");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(quota.config_version(), 1, "the old rules stay in force");
        assert!(quota.rules().resolve("r").is_some());
        assert!(Quota::new(bigger, MemoryStore::new(&rules), Arc::new(FakeClock::new())).is_err());
        let at_most = Rules::new(
            vec![],
            rules.limits,
            Capacity {
                max_leases: MemoryStore::MAX_LEASES,
                ..rules.capacity
            },
        );
        assert!(quota.store().apply(&at_most).is_ok());
    }

    #[test]
    fn every_call_answers_at_once() {
        let rules = config::load_str(
            "[[resources]]\nname = \"r\"\nrate = { limit = 10, period = \"1s\" }\nconcurrency = 2\nbreaker = {}\nadaptive = {}",
        )
        .unwrap()
        .rules;
        let quota = Quota::in_memory(rules, Arc::new(FakeClock::new()));
        let acquire = Acquire {
            resource: "r".into(),
            permits: 1,
            ..Default::default()
        };
        let lease = at_once(quota.acquire(&acquire))
            .unwrap()
            .grant()
            .unwrap()
            .lease_id;
        at_once(quota.renew(&Renew {
            lease_id: lease,
            lease_ttl: None,
            caller: None,
        }))
        .unwrap();
        let target = BreakerTarget {
            resource: "r".into(),
            descriptors: vec![],
        };
        at_once(quota.report(&Report {
            resource: "r".into(),
            descriptors: vec![],
            kind: ThrottleKind::Error,
            retry_after: None,
            lease_id: Some(lease),
            message: None,
            client_id: None,
            caller: None,
        }))
        .unwrap();
        at_once(quota.circuit(&target)).unwrap();
        at_once(quota.usage()).unwrap();
        at_once(quota.leases("r", 10)).unwrap();
        at_once(quota.refill(&target)).unwrap();
        at_once(quota.release(&Release {
            lease_id: lease,
            outcome: Outcome::Success,
            used_permits: Some(2),
            caller: None,
        }))
        .unwrap();
        at_once(quota.reset_breaker(&target)).unwrap();
        at_once(quota.force_open(&target, None)).unwrap();
        at_once(quota.revoke(lease)).unwrap();
        at_once(quota.sweep()).unwrap();
    }
}
