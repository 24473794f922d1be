//! The quota engine: token buckets, concurrency leases, circuit breakers, the adaptive rate and pauses,
//! in plain Rust types. It knows nothing of gRPC; `crate::grpc` converts to and from the wire.
//!
//! - [`rate`]: a rate limit as configured; [`policy::limiter`] the algorithms that enforce one.
//! - [`breaker`]: the circuit breaker.
//! - [`adaptive`]: the AIMD adaptive rate.
//! - [`rules`]: validated rules and resource-name resolution ([`glob`] for patterns).
//! - [`request`], [`decision`], [`error`]: what goes in and what comes out; [`name`]: the names handed
//!   out with them.
//! - [`plan`]: a request resolved into the state keys it touches; [`level`]: one level's state.
//! - [`policy`]: every decision, written once over the state steps a store provides: the acquire's order,
//!   the level kinds ([`policy::Limiter`]), settlement, reports, replay, explain.
//! - [`priority`]: priority classes and the capacity reserved for the higher ones.
//! - [`pressure`]: what throttle reports have done to a resource (adaptive rate, pause, reporters).
//! - [`reporters`]: one identity's flood of throttle reports acts as one report.
//! - [`stats`]: what the engine counts about itself (breaker transitions, expiries, evictions).
//! - [`store`]: the storage boundary; [`memory`] is the in-memory store, [`redis`] the shared one, and
//!   [`stores`] the one chosen by config.
//! - [`quota`]: [`Quota`], the front door.

pub(crate) mod adaptive;
pub(crate) mod breaker;
pub(crate) mod decision;
pub(crate) mod error;
pub mod glob;
pub(crate) mod lease_id;
pub(crate) mod level;
pub(crate) mod memory;
pub(crate) mod name;
pub(crate) mod plan;
pub mod policy;
pub(crate) mod pressure;
pub(crate) mod priority;
pub(crate) mod quota;
pub(crate) mod rate;
pub mod redis;
pub mod reporters;
pub(crate) mod request;
pub(crate) mod rules;
pub(crate) mod stats;
pub(crate) mod store;
pub(crate) mod stores;

pub use adaptive::{AdaptiveRate, AdaptiveSpec};
pub use breaker::{
    Admission, Breaker, BreakerSnapshot, BreakerSpec, BreakerState, Reason, Transition,
};
pub use decision::{
    BreakerChanges, CircuitView, Decision, Denial, Grant, NotReleased, Notes, Pressure, Released,
    Renewed, Reported, Verdict,
};
pub use error::EngineError;
pub use lease_id::{LeaseId, LeaseIds};
pub use name::{Name, intern};
pub use plan::{Bypass, Plan};
pub use policy::{Bucket, Explanation, LevelExplained, LevelState, LevelsRead};
pub use priority::{Priority, Reserve};
pub use quota::Quota;
pub use rate::{Algorithm, RateSpec};
pub use request::{Acquire, BreakerTarget, Outcome, Release, Renew, Report, ThrottleKind};
pub use rules::{
    Capacity, LevelSpec, LocalShare, OnStoreError, Partition, RequestLimits, Resolution, Rule,
    Rules,
};
pub use stats::{EngineStats, RecentTransition, StatsSnapshot};
pub use store::{
    BreakerRef, Expired, HeldSlice, LeaseQuery, LeaseView, ReportPlan, ResourceUsage, ShareStats,
    Store, StoreHealth, StoreUsage, Sweep, UsageQuery,
};
pub use stores::{AnyStore, MemoryStore, RedisLayout, RedisSettings, RedisStore, TimeSource};
