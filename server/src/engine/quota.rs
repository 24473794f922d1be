//! [`Quota`]: the engine's front door. It validates requests against the current rules, resolves them into
//! plans, and runs them against a [`Store`] at the injected clock's now. It knows nothing of gRPC.

// Wire-facing: every value here may come from a request, so arithmetic is checked or saturating.
#![cfg_attr(not(test), deny(clippy::arithmetic_side_effects))]

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use arc_swap::ArcSwap;

use super::{
    Acquire, BreakerRef, BreakerState, BreakerTarget, CircuitView, Decision, EngineError,
    EngineStats, Explanation, LeaseId, LeaseQuery, LeaseView, Plan, Reason, Release, Released,
    Renew, Renewed, Report, ReportPlan, Reported, Rule, Rules, Store, StoreUsage, Sweep,
    Transition, UsageQuery, plan, request::check_target,
};
use crate::clock::{Clock, Nanos, nanos};

/// The quota engine over a store.
pub struct Quota<S: Store> {
    rules: ArcSwap<Rules>,
    store: S,
    clock: Arc<dyn Clock>,
    version: AtomicU64,
    /// What this node's calls changed (breaker transitions, expiries, evictions), from their answers.
    stats: EngineStats,
}

impl<S: Store> std::fmt::Debug for Quota<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Quota")
            .field("rules", &self.rules.load().len())
            .finish_non_exhaustive()
    }
}

impl<S: Store> Quota<S> {
    /// An engine enforcing `rules` over `store`, reading time from `clock`. The store is told the rules
    /// (its caps, and which state it keeps), whatever it was built with; an error when it cannot hold them.
    pub fn new(rules: Rules, store: S, clock: Arc<dyn Clock>) -> Result<Self, EngineError> {
        store.apply(&rules)?;
        Ok(Self::over(rules, store, clock))
    }

    /// An engine over `store`, which was built for `rules` (so needs no [`Store::apply`]).
    pub(crate) fn over(rules: Rules, store: S, clock: Arc<dyn Clock>) -> Self {
        Self {
            rules: ArcSwap::from_pointee(rules),
            store,
            clock,
            version: AtomicU64::new(1),
            stats: EngineStats::default(),
        }
    }

    /// What this node's calls changed: breaker transitions, lease expiries, idle keys dropped (with a shared
    /// store, this node's share: each node counts what its own calls did).
    pub fn stats(&self) -> &EngineStats {
        &self.stats
    }

    /// Counts the breaker transitions an answer reports.
    fn count(&self, rule: &'static str, key: Option<&str>, transitions: &[Transition]) {
        if let Some(key) = key {
            for t in transitions {
                self.stats.transition(rule, key, *t);
            }
        }
    }

    /// Counts an acquire's transition (nearly always none: one branch on the hot path).
    fn count_decided(&self, plan: &Plan<'_>, decided: &Result<Decision, EngineError>) {
        match decided {
            Ok(d) => {
                if let Some(t) = d.transition() {
                    self.count(d.rule, plan.breaker_key.as_deref(), &[t]);
                }
            }
            Err(e) => {
                if let Some(t) = e.made() {
                    self.count(plan.rule.name, plan.breaker_key.as_deref(), &[t]);
                }
            }
        }
    }

    /// Counts expiries per rule; consecutive leases mostly share one, so runs are counted, not leases.
    fn count_expired(&self, sweep: &Sweep) {
        let mut run: Option<(&'static str, u64)> = None;
        for e in &sweep.expired {
            match &mut run {
                Some((rule, n)) if std::ptr::eq(*rule, e.rule) => *n = n.saturating_add(1),
                _ => {
                    if let Some((rule, n)) = run.replace((e.rule, 1)) {
                        self.stats.expired(rule, n);
                    }
                }
            }
        }
        if let Some((rule, n)) = run {
            self.stats.expired(rule, n);
        }
    }

    /// Before this node stops: the store gives back what it holds for this node alone (slices).
    pub async fn close(&self) {
        self.store.close(self.clock.now()).await;
    }

    /// The clock decisions are made at.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// The rules in force.
    pub fn rules(&self) -> Arc<Rules> {
        self.rules.load_full()
    }

    /// Swaps in new rules. State is kept: buckets keep their tokens (clamped to new capacities on next use)
    /// and leases stay valid. Returns the new config version; when the store refuses the rules, the old
    /// ones stay in force.
    pub fn replace_rules(&self, rules: Rules) -> Result<u64, EngineError> {
        self.store.apply(&rules)?;
        self.rules.store(Arc::new(rules));
        Ok(self
            .version
            .fetch_add(1, Ordering::AcqRel)
            .saturating_add(1))
    }

    /// Starts at 1; increments on every [`replace_rules`](Self::replace_rules).
    pub fn config_version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    fn rule(rules: &Rules, resource: &str) -> Result<Arc<Rule>, EngineError> {
        rules
            .resolve(resource)
            .cloned()
            .ok_or_else(|| EngineError::UnknownResource(resource.to_owned()))
    }

    fn breaker_ref<'a>(
        rules: &Rules,
        target: &'a BreakerTarget,
    ) -> Result<BreakerRef<'a>, EngineError> {
        check_target(&target.resource, &target.descriptors, &rules.limits)?;
        let rule = Self::rule(rules, &target.resource)?;
        let key = plan::breaker_key(&rule, &target.resource, &target.descriptors)?;
        Ok(BreakerRef {
            resource: &target.resource,
            rule,
            key,
        })
    }

    /// One attempt to acquire (no waiting; see the server's `max_wait` handling for that).
    pub async fn acquire(&self, req: &Acquire) -> Result<Decision, EngineError> {
        let rules = self.rules.load_full();
        let plan = Self::plan(&rules, req)?;
        let decided = self.store.acquire(&plan, self.clock.now()).await;
        self.count_decided(&plan, &decided);
        decided
    }

    /// [`acquire`](Self::acquire) answered at once when the store decides without I/O (the in-memory store
    /// does); `None` when the store needs `acquire`'s future.
    pub fn acquire_ready(&self, req: &Acquire) -> Option<Result<Decision, EngineError>> {
        // A borrowed load of the rules (no reference count), held only while the store decides.
        let rules = self.rules.load();
        // The plan is used where it was built (it is large: a move is a copy).
        let planned = Self::plan(&rules, req);
        let plan = match planned {
            Ok(ref plan) => plan,
            Err(e) => return Some(Err(e)),
        };
        let decided = self.store.acquire_ready(plan, self.clock.now())?;
        self.count_decided(plan, &decided);
        Some(decided)
    }

    /// Counts a gateway's request against its counters (see [`crate::engine::policy::hits`]) at the
    /// clock's now: one store step.
    pub async fn hits(
        &self,
        plan: &crate::engine::policy::HitPlan<'_>,
    ) -> Result<crate::engine::policy::Hits, EngineError> {
        self.store.hits(plan, self.clock.now()).await
    }

    /// The queue a `max_wait` acquire waits in: the state keys it would touch (so two requests that differ
    /// only in descriptors the rule ignores wait in one queue), and its priority class (its place in that
    /// queue: 0 first). Validates `req` first.
    pub fn wait_key(&self, req: &Acquire) -> Result<(String, u8), EngineError> {
        let rules = self.rules.load();
        let plan = Self::plan(&rules, req)?;
        Ok((plan.wait_key(), plan.class))
    }

    /// Validates `req` and resolves it against the rules in force.
    fn plan<'a>(rules: &'a Rules, req: &'a Acquire) -> Result<Plan<'a>, EngineError> {
        req.validate(&rules.limits)?;
        let (rule, resolution) = rules
            .resolve_kind(&req.resource)
            .ok_or_else(|| EngineError::UnknownResource(req.resource.clone()))?;
        Plan::build(rule, resolution, req)
    }

    /// Releases a lease.
    pub async fn release(&self, req: &Release) -> Result<Released, EngineError> {
        // Borrowed, not counted: the in-memory store's future is ready at once, so the guard is short-lived.
        let rules = self.rules.load();
        let released = self.store.release(&rules, req, self.clock.now()).await;
        if let Ok(Released {
            rule: Some(rule),
            changed: Some(changed),
            ..
        }) = &released
        {
            self.count(rule, Some(&changed.key), &changed.transitions);
        }
        released
    }

    /// Renews a lease.
    pub async fn renew(&self, req: &Renew) -> Result<Renewed, EngineError> {
        if req.lease_ttl == Some(Duration::ZERO) {
            return Err(EngineError::invalid(
                "lease_ttl",
                "must be positive when given",
            ));
        }
        self.store.renew(req, self.clock.now()).await
    }

    /// Reports a downstream throttle or failure.
    pub async fn report(&self, req: &Report) -> Result<Reported, EngineError> {
        let rules = self.rules.load();
        req.validate(&rules.limits)?;
        let target = BreakerTarget {
            resource: req.resource.clone(),
            descriptors: req.descriptors.clone(),
        };
        let target = Self::breaker_ref(&rules, &target)?;
        let max_pause = target.rule.max_pause;
        let pause = req
            .retry_after
            .map(|d| d.min(max_pause))
            .filter(|d| !d.is_zero());
        let plan = ReportPlan {
            target,
            kind: req.kind,
            pause,
            lease_id: req.lease_id,
            caller: req.caller,
        };
        let now = self.clock.now();
        let reported = self.store.report(&plan, now).await?;
        let key = plan.target.key.as_deref();
        self.count(reported.rule, key, &reported.transitions);
        log_report(&plan, &reported, now);
        Ok(reported)
    }

    /// Reads a resource's breaker, adaptive rate and pause.
    pub async fn circuit(&self, target: &BreakerTarget) -> Result<CircuitView, EngineError> {
        let rules = self.rules.load();
        let target = Self::breaker_ref(&rules, target)?;
        self.store.circuit(&target, self.clock.now()).await
    }

    /// Evaluates `req` without debiting anything: each level it would touch, the breaker, the pause, and
    /// what the acquire would answer ([`super::explain`]).
    pub async fn explain(&self, req: &Acquire) -> Result<Explanation, EngineError> {
        let rules = self.rules.load_full();
        let plan = Self::plan(&rules, req)?;
        let now = self.clock.now();
        let target = BreakerRef {
            resource: plan.resource,
            rule: plan.rule.clone(),
            key: plan.breaker_key.clone(),
        };
        let circuit = self.store.circuit(&target, now).await?;
        let levels = self.store.levels(&plan, now).await?;
        Ok(super::policy::explain(&plan, circuit, levels, now))
    }

    /// Closes a breaker and resets the resource's adaptive rate and pause. Returns the state before.
    pub async fn reset_breaker(&self, target: &BreakerTarget) -> Result<BreakerState, EngineError> {
        let rules = self.rules.load();
        let target = Self::breaker_ref(&rules, target)?;
        let before = self.store.reset_breaker(&target, self.clock.now()).await?;
        self.count_operator(&target, before, BreakerState::Closed, Reason::Reset);
        Ok(before)
    }

    /// Counts (and so logs) an operator's change of a breaker, on every store; one that found the breaker
    /// already in that state is logged, not counted.
    fn count_operator(
        &self,
        target: &BreakerRef<'_>,
        from: BreakerState,
        to: BreakerState,
        reason: Reason,
    ) {
        if from != to {
            let t = Transition { from, to, reason };
            self.count(target.rule.name, target.key.as_deref(), &[t]);
        } else {
            tracing::info!(
                resource = target.resource,
                state = to.as_str(),
                reason = reason.as_str(),
                "circuit breaker already in that state"
            );
        }
    }

    /// Opens a breaker for `duration` (default: its open duration). Returns the state before and when it
    /// becomes HALF_OPEN.
    pub async fn force_open(
        &self,
        target: &BreakerTarget,
        duration: Option<Duration>,
    ) -> Result<(BreakerState, Nanos), EngineError> {
        let rules = self.rules.load();
        let target = Self::breaker_ref(&rules, target)?;
        let (open, max) = target
            .rule
            .breaker
            .as_ref()
            .map_or((Duration::ZERO, Duration::ZERO), |b| {
                (b.open_duration, b.max_open_duration)
            });
        let duration = duration.unwrap_or(open);
        if target.rule.breaker.is_some() && duration > max {
            return Err(EngineError::invalid(
                "duration",
                format!(
                    "{duration:?} is longer than the breaker's max_open_duration ({max:?}) of resource '{}'",
                    target.resource
                ),
            ));
        }
        let now = self.clock.now();
        let before = self.store.force_open(&target, duration, now).await?;
        self.count_operator(&target, before, BreakerState::Open, Reason::ForcedOpen);
        Ok((before, now.saturating_add(nanos(duration))))
    }

    /// Ends a lease as if expired.
    pub async fn revoke(&self, lease_id: LeaseId) -> Result<bool, EngineError> {
        self.store.revoke(lease_id, self.clock.now()).await
    }

    /// Up to `limit` live leases of a resource (the first page of [`lease_page`](Self::lease_page)).
    pub async fn leases(
        &self,
        resource: &str,
        limit: usize,
    ) -> Result<(Vec<LeaseView>, bool), EngineError> {
        check_target(resource, &[], &self.rules.load().limits)?;
        self.lease_page(&LeaseQuery {
            resource: Some(resource),
            prefix: "",
            rule: None,
            after: None,
            limit,
        })
        .await
    }

    /// One page of live leases, and whether more match.
    pub async fn lease_page(
        &self,
        query: &LeaseQuery<'_>,
    ) -> Result<(Vec<LeaseView>, bool), EngineError> {
        self.store.leases(query).await
    }

    /// Live usage of every resource with state (what metrics aggregate).
    pub async fn usage(&self) -> Result<StoreUsage, EngineError> {
        self.usage_page(&UsageQuery::ALL).await
    }

    /// Live usage of one page of resources.
    pub async fn usage_page(&self, query: &UsageQuery<'_>) -> Result<StoreUsage, EngineError> {
        let rules = self.rules.load_full();
        self.store.usage(&rules, query, self.clock.now()).await
    }

    /// Refills a resource's buckets (clearing any debt): its resource-wide level, and the partition levels
    /// the target's descriptors name. Returns how many levels had state.
    pub async fn refill(&self, target: &BreakerTarget) -> Result<u32, EngineError> {
        let rules = self.rules.load_full();
        check_target(&target.resource, &target.descriptors, &rules.limits)?;
        let rule = Self::rule(&rules, &target.resource)?;
        let mut keys = vec![target.resource.clone()];
        for p in &rule.partitions {
            if let Some((_, v)) = target
                .descriptors
                .iter()
                .find(|(k, _)| **k == *p.descriptor)
            {
                keys.push(plan::partition_key(&target.resource, &p.descriptor, v));
            }
        }
        let n = self.store.refill(&keys, self.clock.now()).await?;
        tracing::info!(resource = %target.resource, levels = n, "buckets refilled by an operator");
        Ok(n)
    }

    /// Reclaims every expired lease, forgets what has lapsed, and drops idle state: everything at once.
    pub async fn sweep(&self) -> Result<Sweep, EngineError> {
        let now = self.clock.now();
        let mut sweep = self.store.sweep(now, usize::MAX).await?;
        self.count_expired(&sweep);
        sweep.evicted_keys = self.evict_idle().await?;
        Ok(sweep)
    }

    /// Drops idle state (a pass over every key; the sweeper runs it every few seconds off the serving
    /// threads). Returns how many keys went.
    pub async fn evict_idle(&self) -> Result<usize, EngineError> {
        let evicted = self.store.evict_idle(self.clock.now()).await?;
        self.stats.evicted(evicted as u64);
        Ok(evicted)
    }

    /// Reclaims up to `limit` expired leases and forgets as many lapsed tombstones and request ids; `more`
    /// says whether to call again (the sweeper does, yielding in between so calls are served meanwhile).
    pub async fn sweep_some(&self, limit: usize) -> Result<Sweep, EngineError> {
        let sweep = self.store.sweep(self.clock.now(), limit).await?;
        self.count_expired(&sweep);
        Ok(sweep)
    }
}

/// Logs what a report changed beyond its breaker (whose transitions [`Quota::count`] logs): once, whichever
/// store made the change.
fn log_report(plan: &ReportPlan<'_>, reported: &Reported, now: Nanos) {
    let resource = plan.target.resource;
    if reported.rate_decreased {
        tracing::info!(
            resource,
            effective_rate_per_second = reported.pressure.effective_rate,
            configured_rate_per_second = reported.pressure.configured_rate,
            "adaptive rate lowered after a throttle report"
        );
    }
    if let Some(until) = reported
        .pressure
        .paused_until
        .filter(|_| reported.pause_lengthened)
    {
        tracing::info!(
            resource,
            pause_ms = until.saturating_sub(now) / 1_000_000,
            "grants paused on the downstream's retry-after"
        );
    }
}
