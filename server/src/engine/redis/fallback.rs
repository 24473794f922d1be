//! What a node does while Redis cannot be reached, per resource (`on_store_error`): `fail_closed` answers
//! UNAVAILABLE; `fail_open` grants (counted, logged at WARN at most once a second); `local` enforces the
//! limits in this node alone, divided by the number of live nodes (each node's heartbeat in Redis), so the
//! fleet together admits about the configured limit.
//!
//! A failed call marks Redis down for a second: meanwhile calls go straight to the fallback (nothing waits
//! on a dead Redis), then the next call tries Redis again, so service resumes within a second of Redis
//! coming back.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use arc_swap::ArcSwap;

use crate::{
    clock::{Nanos, nanos},
    engine::{
        Decision, EngineError, Grant, LeaseId, LeaseIds, LevelSpec, MemoryStore, OnStoreError,
        Plan, RateSpec, Rule, Rules, Verdict,
    },
};

/// How long a failed call keeps Redis marked down.
const DOWN_FOR: Duration = Duration::from_secs(1);

/// The fallback state of one node. See the module docs.
#[derive(Debug)]
pub struct Fallback {
    /// Enforces `local` resources while Redis is down.
    pub local: MemoryStore,
    /// The rules divided by the live nodes.
    scaled: ArcSwap<Rules>,
    configured: ArcSwap<Rules>,
    nodes: AtomicU64,
    /// Ids of `fail_open` grants (no state behind them).
    open_ids: LeaseIds,
    start: Instant,
    down_until_ms: AtomicU64,
    last_warn_s: AtomicU64,
    /// Grants made without Redis, by policy.
    pub open_grants: AtomicU64,
    /// Grants made without Redis from this node's local buckets (`on_store_error = "local"`).
    pub local_grants: AtomicU64,
}

impl Default for Fallback {
    fn default() -> Self {
        let rules = Rules::default();
        Self {
            local: MemoryStore::new(&rules),
            scaled: ArcSwap::from_pointee(rules.clone()),
            configured: ArcSwap::from_pointee(rules),
            nodes: AtomicU64::new(1),
            open_ids: LeaseIds::default(),
            start: Instant::now(),
            down_until_ms: AtomicU64::new(0),
            last_warn_s: AtomicU64::new(u64::MAX),
            open_grants: AtomicU64::new(0),
            local_grants: AtomicU64::new(0),
        }
    }
}

fn divide(n: u64, by: u64) -> u64 {
    n.div_ceil(by.max(1)).max(1)
}

fn scale_level(l: &LevelSpec, by: u64) -> LevelSpec {
    LevelSpec {
        rate: l.rate.map(|r| {
            RateSpec::new(divide(r.limit, by), r.period, divide(r.burst, by))
                .with_algorithm(r.algorithm)
        }),
        max_in_flight: l
            .max_in_flight
            .map(|m| u32::try_from(divide(u64::from(m), by)).unwrap_or(m)),
        shadow: l.shadow,
        bypass: l.bypass,
    }
}

/// `rules` with every limit divided by `by` (rounded up, at least 1).
fn scale(rules: &Rules, by: u64) -> Rules {
    let scaled = rules
        .all()
        .into_iter()
        .map(|r| {
            let mut rule: Rule = (**r).clone();
            rule.resource = scale_level(&r.resource, by);
            for p in &mut rule.partitions {
                p.limits = scale_level(&p.limits, by);
                for (_, spec) in &mut p.overrides {
                    *spec = scale_level(spec, by);
                }
            }
            rule
        })
        .collect();
    // The fleet's lease cap may be above what this node's local store can hold; locally it holds at most that.
    let capacity = crate::engine::Capacity {
        max_leases: rules.capacity.max_leases.min(MemoryStore::MAX_LEASES),
        ..rules.capacity
    };
    Rules::new(scaled, rules.limits, capacity)
}

impl Fallback {
    fn ms(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// True while Redis is marked down.
    pub fn is_down(&self) -> bool {
        self.ms() < self.down_until_ms.load(Ordering::Relaxed)
    }

    /// A call failed: go straight to the fallback for a while.
    pub fn mark_down(&self) {
        let until = self
            .ms()
            .saturating_add(u64::try_from(DOWN_FOR.as_millis()).unwrap_or(1000));
        if self.down_until_ms.swap(until, Ordering::Relaxed) == 0 {
            tracing::warn!("Redis is unreachable: each resource's on_store_error applies");
        }
    }

    /// A call succeeded. True when Redis was marked down until now.
    pub fn mark_up(&self) -> bool {
        let was_down = self.down_until_ms.swap(0, Ordering::Relaxed) != 0;
        if was_down {
            tracing::info!("Redis answers again");
        }
        was_down
    }

    /// The rules changed.
    pub fn apply(&self, rules: &Rules) -> Result<(), EngineError> {
        self.take(scale(rules, self.nodes()))?;
        self.configured.store(Arc::new(rules.clone()));
        Ok(())
    }

    /// The number of live nodes changed.
    pub fn set_nodes(&self, n: u64) {
        if self.nodes.swap(n.max(1), Ordering::Relaxed) != n.max(1) {
            self.rescale();
        }
    }

    /// Live nodes, as last seen.
    pub fn nodes(&self) -> u64 {
        self.nodes.load(Ordering::Relaxed)
    }

    fn rescale(&self) {
        // The configured rules were taken once, so their scaled copy is too (only the limits differ).
        if let Err(e) = self.take(scale(&self.configured.load(), self.nodes())) {
            tracing::warn!(error = %e, "local fallback limits not rescaled");
        }
    }

    /// Makes `scaled` the local store's rules.
    fn take(&self, scaled: Rules) -> Result<(), EngineError> {
        crate::engine::Store::apply(&self.local, &scaled)?;
        self.scaled.store(Arc::new(scaled));
        Ok(())
    }

    /// The local rules (limits divided by the live nodes).
    pub fn rules(&self) -> Arc<Rules> {
        self.scaled.load_full()
    }

    /// True when `id` was granted by this fallback (it is released here, not in Redis).
    pub fn owns(&self, id: LeaseId) -> Option<bool> {
        if self.open_ids.was_issued(id) {
            Some(true)
        } else if self.local.issued(id) {
            Some(false)
        } else {
            None
        }
    }

    /// The answer for `plan` while Redis is down (`why`).
    pub async fn acquire(
        &self,
        plan: &Plan<'_>,
        now: Nanos,
        why: EngineError,
    ) -> Result<Decision, EngineError> {
        let rule = plan.rule;
        match rule.on_store_error {
            // A bypassed acquire is never limited, by an outage either: it is granted as fail_open grants.
            OnStoreError::FailClosed if plan.bypass.is_none() => Err(why),
            OnStoreError::FailOpen | OnStoreError::FailClosed => {
                self.open_grants.fetch_add(1, Ordering::Relaxed);
                let second = self.ms() / 1000;
                if self.last_warn_s.swap(second, Ordering::Relaxed) != second {
                    tracing::warn!(
                        resource = plan.resource,
                        granted_without_redis = self.open_grants.load(Ordering::Relaxed),
                        "fail_open: granting without Redis"
                    );
                }
                Ok(Decision {
                    resource: crate::engine::Name::Given(plan.resource.into()),
                    rule: rule.name,
                    verdict: Verdict::Granted(Grant {
                        lease_id: self.open_ids.issue(),
                        expires_at: now.saturating_add(nanos(plan.ttl)),
                        ttl: plan.ttl,
                        replayed: false,
                        bypassed: plan.bypass.is_some(),
                        nothing_held: true,
                    }),
                    remaining: 0,
                    limit: 0,
                    reset_after: 0,
                    in_flight: 0,
                    max_in_flight: 0,
                    notes: None,
                })
            }
            OnStoreError::Local => {
                let rules = self.rules();
                let Some((local, resolution)) = rules.resolve_kind(plan.resource) else {
                    return Err(why);
                };
                let local_plan = Plan {
                    rule: local,
                    resolution,
                    levels: plan
                        .levels
                        .iter()
                        .map(|l| crate::engine::plan::LevelPlan {
                            key: std::borrow::Cow::Borrowed(&*l.key),
                            partition: l.partition,
                            over: l.over,
                        })
                        .collect(),
                    breaker_key: plan.breaker_key.as_deref().map(std::borrow::Cow::Borrowed),
                    ..*plan
                };
                let d = crate::engine::Store::acquire(&self.local, &local_plan, now).await?;
                if d.granted() {
                    self.local_grants.fetch_add(1, Ordering::Relaxed);
                }
                Ok(d)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::engine::Algorithm;

    #[test]
    fn a_node_share_keeps_the_algorithm() {
        let window =
            RateSpec::new(90, Duration::from_secs(60), 90).with_algorithm(Algorithm::FixedWindow);
        let level = LevelSpec {
            rate: Some(window),
            max_in_flight: Some(9),
            shadow: false,
            bypass: false,
        };
        let share = scale_level(&level, 3).rate.expect("a rate");
        assert_eq!(
            (share.limit, share.burst, share.algorithm),
            (30, 30, Algorithm::FixedWindow)
        );
        assert_eq!(scale_level(&level, 3).max_in_flight, Some(3));
    }
}
