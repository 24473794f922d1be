//! The typed, validated rules the engine enforces (built from config by `crate::config`), and how a
//! request's resource name finds its rule: exact names first, then patterns in the order configured.

use std::{collections::HashMap, sync::Arc, time::Duration};

use super::{AdaptiveSpec, BreakerSpec, RateSpec, glob, memory::home::Home};

/// One level of limits: the resource-wide one, or one partition of it.
#[derive(Debug, Clone, PartialEq)]
pub struct LevelSpec {
    /// The token bucket, if this level has a rate limit.
    pub rate: Option<RateSpec>,
    /// The most leases in flight, if this level has a concurrency limit.
    pub max_in_flight: Option<u32>,
}

/// A partition: each distinct value of the request descriptor `descriptor` gets its own level.
#[derive(Debug, Clone, PartialEq)]
pub struct Partition {
    /// The descriptor key, e.g. `tenant`.
    pub descriptor: Arc<str>,
    /// Limits applied to each value.
    pub limits: LevelSpec,
}

/// Everything configured for one resource (or one pattern of resources).
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    /// The configured name: a concrete resource name or a pattern such as `partner.*` (interned: see
    /// [`intern`](super::intern)).
    pub name: &'static str,
    /// The resource-wide level (both parts may be absent).
    pub resource: LevelSpec,
    /// Partition levels, checked after the resource-wide level, in this order.
    pub partitions: Vec<Partition>,
    /// Lease TTL when the request gives none.
    pub lease_ttl: Duration,
    /// The longest TTL a request (or renewal) may ask for.
    pub max_lease_ttl: Duration,
    /// The circuit breaker, if any.
    pub breaker: Option<BreakerSpec>,
    /// When set, one breaker per value of this descriptor instead of one for the resource.
    pub breaker_partition: Option<Arc<str>>,
    /// The adaptive rate, if any.
    pub adaptive: Option<AdaptiveSpec>,
    /// The longest pause a downstream's retry-after may impose (zero: reports never pause).
    pub max_pause: Duration,
    /// Suggested wait on a CONCURRENCY_LIMITED denial (no exact answer exists: it depends on releases).
    pub concurrency_retry_after: Duration,
    /// The most tokens a settlement (`used_permits` above what was acquired) may put a level below empty;
    /// `None`: that level's burst. Bounds what one release can cost everyone else.
    pub max_debt: Option<u64>,
    /// What a shared store's outage means for this resource.
    pub on_store_error: OnStoreError,
    /// The in-memory store's handle on this rule's resource-wide state (an exact rule's; found on first
    /// use). Not configuration: empty when built.
    pub home: Home,
}

/// What a resource's calls get while its shared store (Redis) cannot be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnStoreError {
    /// UNAVAILABLE: nothing is admitted that the fleet's limit did not admit (the default).
    #[default]
    FailClosed,
    /// Grant everything (counted, and logged at WARN at most once a second): the downstream is better
    /// overloaded than idle.
    FailOpen,
    /// Enforce the limits in this node alone, divided by the number of live nodes.
    Local,
}

impl OnStoreError {
    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::FailClosed => "fail_closed",
            Self::FailOpen => "fail_open",
            Self::Local => "local",
        }
    }
}

impl Rule {
    /// The first rate spec (resource-wide, else the first partition's): what "effective rate" refers to.
    pub fn headline_rate(&self) -> Option<RateSpec> {
        self.resource
            .rate
            .or_else(|| self.partitions.iter().find_map(|p| p.limits.rate))
    }
}

/// Limits on the size of requests, so a client cannot make the server allocate without bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestLimits {
    /// Longest resource name, descriptor key or descriptor value, lease id or client id, in bytes.
    pub max_name_bytes: usize,
    /// Most descriptors on one request.
    pub max_descriptors: usize,
    /// Longest request_id, in bytes.
    pub max_request_id_bytes: usize,
    /// Longest ReportThrottle message, in bytes.
    pub max_message_bytes: usize,
    /// Longest `max_wait` a request may ask for.
    pub max_wait: Duration,
}

impl Default for RequestLimits {
    fn default() -> Self {
        Self {
            max_name_bytes: 256,
            max_descriptors: 16,
            max_request_id_bytes: 128,
            max_message_bytes: 1024,
            max_wait: Duration::from_secs(30),
        }
    }
}

/// Caps on memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capacity {
    /// Most live keys (bucket/semaphore states, breakers, resource states) before RESOURCE_EXHAUSTED.
    pub max_live_keys: usize,
    /// Most live leases before RESOURCE_EXHAUSTED.
    pub max_leases: usize,
    /// How long a granted request_id is remembered.
    pub idempotency_window: Duration,
    /// Most request_ids remembered; past it the oldest are forgotten first (before their window ends).
    pub max_request_ids: usize,
}

impl Default for Capacity {
    fn default() -> Self {
        Self {
            max_live_keys: 1_000_000,
            max_leases: 1_000_000,
            idempotency_window: Duration::from_secs(300),
            max_request_ids: 1_000_000,
        }
    }
}

/// The whole rule set, swapped atomically on reload.
#[derive(Debug, Clone, Default)]
pub struct Rules {
    /// Resolved on every request: foldhash, not SipHash.
    exact: HashMap<&'static str, Arc<Rule>, foldhash::fast::RandomState>,
    patterns: Vec<Arc<Rule>>,
    /// Request size limits.
    pub limits: RequestLimits,
    /// Memory caps.
    pub capacity: Capacity,
}

impl Rules {
    /// Builds the lookup from rules in configured order. Names must already be unique (config checks).
    pub fn new(rules: Vec<Rule>, limits: RequestLimits, capacity: Capacity) -> Self {
        let mut exact = HashMap::default();
        let mut patterns = Vec::new();
        for rule in rules {
            if glob::is_pattern(rule.name) {
                patterns.push(Arc::new(rule));
            } else {
                exact.insert(rule.name, Arc::new(rule));
            }
        }
        Self {
            exact,
            patterns,
            limits,
            capacity,
        }
    }

    /// The rule for a concrete resource name, if any.
    pub fn resolve(&self, resource: &str) -> Option<&Arc<Rule>> {
        self.resolve_kind(resource).map(|(rule, _)| rule)
    }

    /// The rule for a concrete resource name, and whether it is the resource's own exact rule (`true`) or
    /// a pattern it matched (`false`).
    pub fn resolve_kind(&self, resource: &str) -> Option<(&Arc<Rule>, bool)> {
        if let Some(rule) = self.exact.get(resource) {
            return Some((rule, true));
        }
        self.patterns
            .iter()
            .find(|r| glob::matches(r.name, resource))
            .map(|rule| (rule, false))
    }

    /// Names of the exact rules that have a resource-wide level (rate or concurrency): their state is kept
    /// for as long as the rule is in force.
    pub fn exact_resource_levels(&self) -> impl Iterator<Item = &'static str> {
        self.exact
            .iter()
            .filter(|(_, r)| r.resource.rate.is_some() || r.resource.max_in_flight.is_some())
            .map(|(name, _)| *name)
    }

    /// Every rule: exact names (sorted), then patterns in configured order.
    pub fn all(&self) -> Vec<&Arc<Rule>> {
        let mut exact: Vec<_> = self.exact.values().collect();
        exact.sort_by(|a, b| a.name.cmp(b.name));
        exact.extend(self.patterns.iter());
        exact
    }

    /// Number of rules.
    pub fn len(&self) -> usize {
        self.exact.len() + self.patterns.len()
    }

    /// True with no rules at all.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
