//! The typed, validated rules the engine enforces (built from config by `crate::config`), and how a
//! request's resource name finds its rule: exact names first, then patterns in the order configured.

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use super::{AdaptiveSpec, BreakerSpec, RateSpec, glob};

/// One level of limits: the resource-wide one, or one partition of it.
#[derive(Debug, Clone, PartialEq)]
pub struct LevelSpec {
    /// The token bucket, if this level has a rate limit.
    pub rate: Option<RateSpec>,
    /// The most leases in flight, if this level has a concurrency limit.
    pub max_in_flight: Option<u32>,
    /// A dry run: the level is checked and debited as if enforced, but never denies (what it would have
    /// denied is reported as `shadow_denied_by` and counted).
    pub shadow: bool,
    /// Traffic at this level is never limited (an override's `bypass = true`): an acquire through it is
    /// granted without checking or taking tokens, holding a lease as usual.
    pub bypass: bool,
}

/// A partition: each distinct value of the request descriptor `descriptor` gets its own level.
#[derive(Debug, Clone, PartialEq)]
pub struct Partition {
    /// The descriptor key, e.g. `tenant`.
    pub descriptor: Arc<str>,
    /// Limits applied to each value.
    pub limits: LevelSpec,
    /// Named values with limits of their own (`overrides`), in config order.
    pub overrides: Vec<(Arc<str>, LevelSpec)>,
    /// Each override's index by value.
    pub by_value: std::collections::HashMap<Arc<str>, u32>,
}

impl Partition {
    /// The override for `value`, if it has one (its index in `overrides`).
    pub fn override_of(&self, value: &str) -> Option<u32> {
        if self.by_value.is_empty() {
            return None;
        }
        self.by_value.get(value).copied()
    }

    /// The limits of override `over`, or the partition's own.
    pub fn spec(&self, over: Option<u32>) -> &LevelSpec {
        over.and_then(|i| self.overrides.get(i as usize))
            .map_or(&self.limits, |(_, spec)| spec)
    }

    /// The limits a value gets.
    pub fn spec_for(&self, value: &str) -> &LevelSpec {
        self.spec(self.override_of(value))
    }

    /// Every level spec it holds: its own, then each override's.
    pub fn specs(&self) -> impl Iterator<Item = &LevelSpec> {
        std::iter::once(&self.limits).chain(self.overrides.iter().map(|(_, s)| s))
    }
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
    /// Priority classes and their reserves, if any.
    pub priority: Option<super::Priority>,
    /// False: grants are final. A Release's `used_permits` is ignored, and a grant that needs nothing at
    /// its release (see [`Plan::holds_nothing`](super::Plan::holds_nothing)) is not stored at all.
    pub settlement: bool,
    /// With a shared store, each node grants from slices of the rate levels' permits.
    pub local_share: Option<LocalShare>,
}

/// `local_share`: a node takes a slice of a level's permits from the shared store in one call and grants
/// from it locally until it runs out or `ttl` passes, then gives back what is left.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LocalShare {
    /// The largest slice a node holds, as a fraction of the smallest burst among the plan's levels.
    pub max_fraction: f64,
    /// How long a node grants from one slice.
    pub ttl: Duration,
}

/// How a resource name found its rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolution {
    /// The resource's own exact rule (named as it): the `index`th exact rule of the rule set whose
    /// [`Rules::id`] is `set`. A store may keep per-rule state by that index (the in-memory store keeps
    /// each exact rule's resource-wide cell so, see `memory::home`).
    Exact {
        /// The rule set's id.
        set: u64,
        /// The rule's index among that set's exact rules.
        index: u32,
    },
    /// A pattern the name matched.
    Pattern,
}

impl Resolution {
    /// True for the resource's own exact rule: the resource is then handed out by its configured
    /// (interned) name.
    pub fn is_exact(self) -> bool {
        matches!(self, Self::Exact { .. })
    }
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

/// Ids of rule sets built in this process: each [`Rules::new`] takes the next.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// The whole rule set, swapped atomically on reload.
#[derive(Debug, Clone, Default)]
pub struct Rules {
    /// Unique per rule set built in this process (a clone keeps it: it holds the same rules); 0 for the
    /// empty default.
    id: u64,
    /// Resolved on every request: foldhash, not SipHash. Each with its index (see [`Resolution::Exact`]).
    exact: HashMap<&'static str, (Arc<Rule>, u32), foldhash::fast::RandomState>,
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
                // Rules are config-bounded (far below u32::MAX).
                let index = exact.len() as u32;
                exact.insert(rule.name, (Arc::new(rule), index));
            }
        }
        Self {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
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

    /// The rule for a concrete resource name, and how it was found.
    pub fn resolve_kind(&self, resource: &str) -> Option<(&Arc<Rule>, Resolution)> {
        if let Some((rule, index)) = self.exact.get(resource) {
            let how = Resolution::Exact {
                set: self.id,
                index: *index,
            };
            return Some((rule, how));
        }
        self.patterns
            .iter()
            .find(|r| glob::matches(r.name, resource))
            .map(|rule| (rule, Resolution::Pattern))
    }

    /// This rule set's id (see [`Resolution::Exact`]).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Number of exact rules: their indexes are `0..exact_len()`.
    pub fn exact_len(&self) -> usize {
        self.exact.len()
    }

    /// Names of the exact rules that have a resource-wide level (rate or concurrency): their state is kept
    /// for as long as the rule is in force.
    pub fn exact_resource_levels(&self) -> impl Iterator<Item = &'static str> {
        self.exact
            .iter()
            .filter(|(_, (r, _))| r.resource.rate.is_some() || r.resource.max_in_flight.is_some())
            .map(|(name, _)| *name)
    }

    /// Every rule: exact names (sorted), then patterns in configured order.
    pub fn all(&self) -> Vec<&Arc<Rule>> {
        let mut exact: Vec<_> = self.exact.values().map(|(r, _)| r).collect();
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

#[cfg(test)]
mod tests {
    use crate::config;

    fn rules(toml: &str) -> super::Rules {
        config::load_str(toml).expect("test config").rules
    }

    const TWO: &str = "[[resources]]\nname = \"a\"\nconcurrency = 1\n[[resources]]\nname = \"b.*\"\nconcurrency = 1\n[[resources]]\nname = \"c\"\nconcurrency = 1\n";

    #[test]
    fn each_rule_set_has_its_own_id_and_a_clone_keeps_it() {
        let (one, two) = (rules(TWO), rules(TWO));
        assert_ne!(one.id(), two.id(), "two builds of one file are two sets");
        assert_eq!(one.clone().id(), one.id());
        assert_eq!(one.exact_len(), 2);
    }

    #[test]
    fn exact_rules_resolve_with_distinct_indexes_and_patterns_without() {
        let set = rules(TWO);
        let index = |name| match set.resolve_kind(name).expect("resolves").1 {
            super::Resolution::Exact { set: id, index } => {
                assert_eq!(id, set.id());
                Some(index)
            }
            super::Resolution::Pattern => None,
        };
        let (a, c) = (index("a").unwrap(), index("c").unwrap());
        assert_ne!(a, c);
        assert!(a < 2 && c < 2);
        assert_eq!(index("b.x"), None);
    }
}
