//! The store chosen by config (`store = "memory" | "redis"`): one type the server is built on, so the
//! gRPC layer, the sweeper and metrics are written once. Each call goes straight to the store it holds.
//! A Redis store's futures for the per-call methods are boxed (one allocation next to a network round
//! trip), so every caller's future stays the in-memory store's size: a call's future is moved as it is
//! built and boxed, and a large one costs every call, memory-store calls included.
//!
//! The one file of the engine that names the stores: the rest of the engine knows only [`Store`].

use std::time::Duration;

use super::{
    BreakerRef, BreakerState, CircuitView, Decision, EngineError, LeaseId, LeaseQuery, LeaseView,
    LevelsRead, Plan, Release, Released, Renew, Renewed, ReportPlan, Reported, Rules, Store,
    StoreUsage, Sweep, UsageQuery,
};
pub use super::{
    memory::MemoryStore,
    redis::{Layout as RedisLayout, RedisSettings, RedisStore, TimeSource},
};
use crate::{
    clock::Nanos,
    engine::policy::{HitPlan, Hits},
};

/// The in-memory store or the Redis store.
// The in-memory store is held inline: it is the hot path, and one indirection per call costs more than
// the bytes an enum of a boxed Redis store wastes.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum AnyStore {
    /// The embedded default.
    Memory(MemoryStore),
    /// Shared by a fleet.
    Redis(Box<RedisStore>),
}

impl AnyStore {
    /// `"memory"` or `"redis"`.
    pub async fn kind(&self) -> &'static str {
        match self {
            Self::Memory(_) => "memory",
            Self::Redis(_) => "redis",
        }
    }
}

impl Store for AnyStore {
    async fn acquire(&self, plan: &Plan<'_>, now: Nanos) -> Result<Decision, EngineError> {
        match self {
            Self::Memory(s) => s.acquire(plan, now).await,
            Self::Redis(s) => Box::pin(s.acquire(plan, now)).await,
        }
    }

    fn acquire_ready(&self, plan: &Plan<'_>, now: Nanos) -> Option<Result<Decision, EngineError>> {
        match self {
            Self::Memory(s) => s.acquire_ready(plan, now),
            Self::Redis(_) => None,
        }
    }

    async fn release(
        &self,
        rules: &Rules,
        release: &Release,
        now: Nanos,
    ) -> Result<Released, EngineError> {
        match self {
            Self::Memory(s) => s.release(rules, release, now).await,
            Self::Redis(s) => Box::pin(s.release(rules, release, now)).await,
        }
    }

    async fn renew(&self, renew: &Renew, now: Nanos) -> Result<Renewed, EngineError> {
        match self {
            Self::Memory(s) => s.renew(renew, now).await,
            Self::Redis(s) => Box::pin(s.renew(renew, now)).await,
        }
    }

    async fn report(&self, report: &ReportPlan<'_>, now: Nanos) -> Result<Reported, EngineError> {
        match self {
            Self::Memory(s) => s.report(report, now).await,
            Self::Redis(s) => Box::pin(s.report(report, now)).await,
        }
    }

    async fn circuit(
        &self,
        target: &BreakerRef<'_>,
        now: Nanos,
    ) -> Result<CircuitView, EngineError> {
        match self {
            Self::Memory(s) => s.circuit(target, now).await,
            Self::Redis(s) => Box::pin(s.circuit(target, now)).await,
        }
    }

    async fn levels(&self, plan: &Plan<'_>, now: Nanos) -> Result<LevelsRead, EngineError> {
        match self {
            Self::Memory(s) => s.levels(plan, now).await,
            Self::Redis(s) => s.levels(plan, now).await,
        }
    }

    async fn reset_breaker(
        &self,
        target: &BreakerRef<'_>,
        now: Nanos,
    ) -> Result<BreakerState, EngineError> {
        match self {
            Self::Memory(s) => s.reset_breaker(target, now).await,
            Self::Redis(s) => s.reset_breaker(target, now).await,
        }
    }

    async fn force_open(
        &self,
        target: &BreakerRef<'_>,
        duration: Duration,
        now: Nanos,
    ) -> Result<BreakerState, EngineError> {
        match self {
            Self::Memory(s) => s.force_open(target, duration, now).await,
            Self::Redis(s) => s.force_open(target, duration, now).await,
        }
    }

    async fn revoke(&self, lease_id: LeaseId, now: Nanos) -> Result<bool, EngineError> {
        match self {
            Self::Memory(s) => s.revoke(lease_id, now).await,
            Self::Redis(s) => s.revoke(lease_id, now).await,
        }
    }

    async fn leases(&self, query: &LeaseQuery<'_>) -> Result<(Vec<LeaseView>, bool), EngineError> {
        match self {
            Self::Memory(s) => s.leases(query).await,
            Self::Redis(s) => s.leases(query).await,
        }
    }

    async fn usage(
        &self,
        rules: &Rules,
        query: &UsageQuery<'_>,
        now: Nanos,
    ) -> Result<StoreUsage, EngineError> {
        match self {
            Self::Memory(s) => s.usage(rules, query, now).await,
            Self::Redis(s) => s.usage(rules, query, now).await,
        }
    }

    async fn hits(&self, plan: &HitPlan<'_>, now: Nanos) -> Result<Hits, EngineError> {
        match self {
            Self::Memory(s) => s.hits(plan, now).await,
            Self::Redis(s) => s.hits(plan, now).await,
        }
    }

    async fn refill(&self, keys: &[String], now: Nanos) -> Result<u32, EngineError> {
        match self {
            Self::Memory(s) => s.refill(keys, now).await,
            Self::Redis(s) => s.refill(keys, now).await,
        }
    }

    async fn sweep(&self, now: Nanos, limit: usize) -> Result<Sweep, EngineError> {
        match self {
            Self::Memory(s) => s.sweep(now, limit).await,
            Self::Redis(s) => s.sweep(now, limit).await,
        }
    }

    async fn evict_idle(&self, now: Nanos) -> Result<usize, EngineError> {
        match self {
            Self::Memory(s) => s.evict_idle(now).await,
            Self::Redis(s) => s.evict_idle(now).await,
        }
    }

    fn apply(&self, rules: &Rules) -> Result<(), EngineError> {
        match self {
            Self::Memory(s) => s.apply(rules),
            Self::Redis(s) => s.apply(rules),
        }
    }

    fn health(&self) -> Option<super::StoreHealth> {
        match self {
            Self::Memory(_) => None,
            Self::Redis(s) => s.health(),
        }
    }

    async fn close(&self, now: Nanos) {
        match self {
            Self::Memory(s) => s.close(now).await,
            Self::Redis(s) => s.close(now).await,
        }
    }
}
