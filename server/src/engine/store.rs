//! The storage boundary. The engine's decisions run against a [`Store`]: the in-memory store
//! ([`super::memory`]) is the embedded default, the Redis store ([`super::redis`]) is shared by a fleet, and
//! both must give the same answers to the same calls, which the conformance suite
//! (`server/tests/store_conformance.rs`, run on memory, Redis and a Redis Cluster) and a differential trace
//! (`server/tests/differential.rs`) check.
//!
//! Each method is one atomic step against shared state: `acquire` debits every level or none,
//! `release` settles and frees a lease exactly once. Methods are async so a remote store can do I/O (one
//! round trip each for Redis); the in-memory store never awaits.

use std::{future::Future, sync::Arc, time::Duration};

use super::{
    BreakerState, CircuitView, Decision, EngineError, LeaseId, LevelsRead, Name, Plan, Release,
    Released, Renew, Renewed, Reported, Rule, Rules, ThrottleKind,
};
use crate::{
    clock::Nanos,
    engine::policy::{HitPlan, Hits},
};

/// A breaker named by rule and key, for reads and admin operations.
#[derive(Debug, Clone)]
pub struct BreakerRef<'a> {
    /// Concrete resource name.
    pub resource: &'a str,
    /// The rule it resolved to (its breaker spec, adaptive spec and pause cap).
    pub rule: Arc<Rule>,
    /// The breaker's key (`None` when the rule has no breaker).
    pub key: Option<std::borrow::Cow<'a, str>>,
}

/// A resolved throttle report.
#[derive(Debug, Clone)]
pub struct ReportPlan<'a> {
    /// The breaker to count the failure in, and the resource.
    pub target: BreakerRef<'a>,
    /// What happened.
    pub kind: ThrottleKind,
    /// Pause for this long (already capped by the rule's `max_pause`).
    pub pause: Option<Duration>,
    /// The lease the call ran under.
    pub lease_id: Option<LeaseId>,
    /// The authenticated identity reporting (a named lease must be its own).
    pub caller: Option<&'static str>,
}

/// A live lease, as admin tools see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseView {
    /// The id a Release or Renew names.
    pub lease_id: LeaseId,
    /// Concrete resource.
    pub resource: Name,
    /// The partition values it holds, as (descriptor, value).
    pub descriptors: Vec<(String, String)>,
    /// Tokens charged.
    pub permits: u64,
    /// Expiry (engine clock).
    pub expires_at: Nanos,
    /// Caller identity.
    pub client_id: Option<String>,
    /// The authenticated identity that acquired it.
    pub owner: Option<&'static str>,
    /// True for a half-open probe.
    pub probe: bool,
    /// Where the listing resumes after this lease (store-defined, opaque to callers).
    pub cursor: u64,
}

/// Live usage of one concrete resource.
#[derive(Debug, Clone, PartialEq)]
pub struct ResourceUsage {
    /// Concrete resource name.
    pub resource: Arc<str>,
    /// Tokens available at its resource-wide level.
    pub tokens_available: Option<u64>,
    /// Leases in flight at its resource-wide level.
    pub in_flight: u32,
    /// Live leases on this resource, all levels.
    pub live_leases: u64,
    /// Resource-wide breaker state (CLOSED when none or partitioned).
    pub breaker: BreakerState,
    /// Adaptive multiplier on the configured rate.
    pub rate_factor: f64,
    /// Paused until, if paused.
    pub paused_until: Option<Nanos>,
}

/// Which resources a usage read lists: one page, in name order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UsageQuery<'a> {
    /// Only names starting with this.
    pub prefix: &'a str,
    /// Only resources of this configured rule (its name or pattern).
    pub rule: Option<&'a str>,
    /// Only names after this one (the last of the previous page).
    pub after: Option<&'a str>,
    /// At most this many.
    pub limit: usize,
    /// Also list configured rules that have no state yet (exact names, and patterns no live resource
    /// matched), with fresh state: what an operator browsing resources expects to see.
    pub configured: bool,
}

impl UsageQuery<'_> {
    /// Every resource with state (metrics aggregate over all of them).
    pub const ALL: UsageQuery<'static> = UsageQuery {
        prefix: "",
        rule: None,
        after: None,
        limit: usize::MAX,
        configured: false,
    };
}

/// Which leases a lease listing shows: one page, in the store's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseQuery<'a> {
    /// Only leases of this concrete resource.
    pub resource: Option<&'a str>,
    /// Only leases whose resource starts with this.
    pub prefix: &'a str,
    /// Only leases granted under this configured rule.
    pub rule: Option<&'a str>,
    /// Resume after this cursor (a [`LeaseView::cursor`] from the previous page).
    pub after: Option<u64>,
    /// At most this many.
    pub limit: usize,
}

/// Live totals.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct StoreUsage {
    /// Per concrete resource that has state (the page asked for, in name order).
    pub resources: Vec<ResourceUsage>,
    /// True when more resources match than the page holds.
    pub more: bool,
    /// Live keys.
    pub live_keys: u64,
    /// Live leases.
    pub live_leases: u64,
    /// Granted request_ids remembered for replay.
    pub request_ids: u64,
    /// Request_ids forgotten before their window ended because `capacity.max_request_ids` was reached.
    pub request_ids_dropped: u64,
}

/// A lease reclaimed at expiry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expired {
    /// The lease that expired (its holder's Release will answer `expired`).
    pub lease_id: LeaseId,
    /// The concrete resource it held (counted per resource in the expiry metrics).
    pub resource: Name,
    /// The configured name of the rule it was granted under.
    pub rule: &'static str,
}

/// What one sweep did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Sweep {
    /// Leases reclaimed at expiry.
    pub expired: Vec<Expired>,
    /// Idle keys dropped (full buckets, empty semaphores, pristine breakers); only [`Quota::sweep`] evicts.
    ///
    /// [`Quota::sweep`]: crate::engine::Quota::sweep
    pub evicted_keys: usize,
    /// Idempotency entries and release tombstones forgotten.
    pub forgotten: usize,
    /// True when expired leases remain beyond this sweep's limit: sweep again soon.
    pub more: bool,
}

/// A shared store's view of its own health (metrics). The in-memory store has none.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct StoreHealth {
    /// True while the store is unreachable and each resource's `on_store_error` applies.
    pub down: bool,
    /// The store may evict quotad's state when full (Redis: a `maxmemory-policy` other than `noeviction`).
    pub evicting: bool,
    /// Live quotad nodes sharing the store (heartbeats).
    pub nodes: u64,
    /// Calls made, and failed ones by kind: `timeout`, `busy` (too many outstanding), `error`, `full`
    /// (the store at its memory limit refused it).
    pub calls: u64,
    /// Calls that carried a batch of several (each counted once in `calls`), and the calls they carried.
    pub batches: u64,
    /// See `batches`.
    pub batched_calls: u64,
    /// Failed calls, per kind in the order above.
    pub errors: [(&'static str, u64); 4],
    /// Grants made without the store, by policy: `fail_open`, `local`.
    pub fallback_grants: [(&'static str, u64); 2],
    /// Call latency.
    pub latency: crate::latency::HistogramSnapshot,
    /// The slices of levels' permits this node holds (`local_share`), and what they did.
    pub shares: ShareStats,
}

/// One slice of levels' permits a node holds (`local_share`), as the status page and metrics show it.
#[derive(Debug, Clone, PartialEq)]
pub struct HeldSlice {
    /// The resource.
    pub resource: Arc<str>,
    /// The levels' keys beyond the resource's (partition values), joined by `,`.
    pub levels: String,
    /// Permits held now.
    pub tokens: u64,
    /// Time left to grant from it.
    pub ttl_left: Nanos,
    /// Permits beyond its request the next take asks for.
    pub want: u64,
}

/// A node's slices and what they did, for metrics and the status page.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ShareStats {
    /// Live slices (those holding permits), most permits first.
    pub held: Vec<HeldSlice>,
    /// Keys with slice state.
    pub keys: usize,
    /// Slices taken.
    pub slices: u64,
    /// Permits taken in slices beyond the requests that took them.
    pub taken: u64,
    /// Permits given back.
    pub given_back: u64,
    /// Requests answered from a slice (or a remembered denial) without a Redis call.
    pub local: u64,
}

/// Shared quota state. See the module docs.
pub trait Store: Send + Sync + 'static {
    /// Checks and debits every level of `plan` atomically, or none; replays a remembered grant.
    fn acquire(
        &self,
        plan: &Plan<'_>,
        now: Nanos,
    ) -> impl Future<Output = Result<Decision, EngineError>> + Send;

    /// The same as [`acquire`](Self::acquire) for a store that decides without I/O, answered at once so the
    /// hot path skips building and polling futures. `None` (the default): use `acquire`.
    fn acquire_ready(
        &self,
        _plan: &Plan<'_>,
        _now: Nanos,
    ) -> Option<Result<Decision, EngineError>> {
        None
    }

    /// Ends a lease once: frees its slots, settles its cost, counts its outcome.
    fn release(
        &self,
        rules: &Rules,
        release: &Release,
        now: Nanos,
    ) -> impl Future<Output = Result<Released, EngineError>> + Send;

    /// Extends a live lease of the caller's. A `lease_ttl` of `None` means the lease's default; it is capped
    /// at the lease's max.
    fn renew(
        &self,
        renew: &Renew,
        now: Nanos,
    ) -> impl Future<Output = Result<Renewed, EngineError>> + Send;

    /// Counts a downstream failure, lowers the adaptive rate, pauses.
    fn report(
        &self,
        report: &ReportPlan<'_>,
        now: Nanos,
    ) -> impl Future<Output = Result<Reported, EngineError>> + Send;

    /// Reads a breaker, the adaptive rate and the pause.
    fn circuit(
        &self,
        target: &BreakerRef<'_>,
        now: Nanos,
    ) -> impl Future<Output = Result<CircuitView, EngineError>> + Send;

    /// Each level of `plan` as the store holds it at `now`, and the factor it applies to the rule's
    /// rates; nothing is written. For [`super::policy::explain`], which runs the policy over them.
    fn levels(
        &self,
        plan: &Plan<'_>,
        now: Nanos,
    ) -> impl Future<Output = Result<LevelsRead, EngineError>> + Send;

    /// Closes a breaker, clears its window, and resets the adaptive rate and pause. Returns the state before.
    fn reset_breaker(
        &self,
        target: &BreakerRef<'_>,
        now: Nanos,
    ) -> impl Future<Output = Result<BreakerState, EngineError>> + Send;

    /// Opens a breaker for `duration`. Returns the state before.
    fn force_open(
        &self,
        target: &BreakerRef<'_>,
        duration: Duration,
        now: Nanos,
    ) -> impl Future<Output = Result<BreakerState, EngineError>> + Send;

    /// Ends a lease as if expired. False when it was already gone.
    fn revoke(
        &self,
        lease_id: LeaseId,
        now: Nanos,
    ) -> impl Future<Output = Result<bool, EngineError>> + Send;

    /// One page of live leases, and whether more match.
    fn leases(
        &self,
        query: &LeaseQuery<'_>,
    ) -> impl Future<Output = Result<(Vec<LeaseView>, bool), EngineError>> + Send;

    /// Live usage of one page of resources, and the totals.
    fn usage(
        &self,
        rules: &Rules,
        query: &UsageQuery<'_>,
        now: Nanos,
    ) -> impl Future<Output = Result<StoreUsage, EngineError>> + Send;

    /// Counts a gateway's request against its counters in one atomic step, all or none, keeping no lease
    /// (see [`super::policy::hits`]). Every counter's key has the same first part: one shard.
    fn hits(
        &self,
        plan: &HitPlan<'_>,
        now: Nanos,
    ) -> impl Future<Output = Result<Hits, EngineError>> + Send;

    /// Refills the buckets at these level keys (an operator's reset: clears debt too). Returns how many
    /// levels had state.
    fn refill(
        &self,
        keys: &[String],
        now: Nanos,
    ) -> impl Future<Output = Result<u32, EngineError>> + Send;

    /// Reclaims up to `limit` expired leases and forgets as many lapsed tombstones and request ids.
    /// Bounded, so a server serving calls on the same threads is never held up for long by a large expiry.
    fn sweep(
        &self,
        now: Nanos,
        limit: usize,
    ) -> impl Future<Output = Result<Sweep, EngineError>> + Send;

    /// Drops idle state (full buckets, empty semaphores, pristine breakers): a pass over every key, so the
    /// sweeper runs it every few seconds on a blocking thread. Returns how many keys went.
    fn evict_idle(&self, now: Nanos) -> impl Future<Output = Result<usize, EngineError>> + Send;

    /// Takes the rules in force (caps on keys and leases, the idempotency window, which state to keep), or
    /// refuses rules this store cannot hold (the error names the setting), leaving the old ones in force.
    /// Sync: a store keeps no copy of the rules elsewhere (the Redis store's scripts are handed each rule's
    /// parameters with every call), so taking them needs no I/O.
    fn apply(&self, rules: &Rules) -> Result<(), EngineError>;

    /// A shared store's health; `None` for a store in this process.
    fn health(&self) -> Option<StoreHealth> {
        None
    }

    /// Before this node stops: gives back what it holds of the shared state for itself alone (the Redis
    /// store's slices of `local_share` resources). Nothing for a store in this process.
    fn close(&self, now: Nanos) -> impl Future<Output = ()> + Send {
        let _ = now;
        std::future::ready(())
    }
}
