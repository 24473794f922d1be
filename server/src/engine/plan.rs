//! Turning a request into the exact set of state keys it touches: one per level (resource-wide, then one
//! per partition value), plus the breaker. Every check that needs the rule but not the state happens here,
//! so a store only ever sees requests that can succeed.

// Wire-facing: every value here may come from a request, so arithmetic is checked or saturating.
#![cfg_attr(not(test), deny(clippy::arithmetic_side_effects))]

use std::{
    borrow::Cow,
    hash::{DefaultHasher, Hash, Hasher},
    sync::Arc,
    time::Duration,
};

use smallvec::SmallVec;

use super::{Acquire, EngineError, LevelSpec, Reserve, Rule, rules::Resolution};

/// Separates the parts of a state key. Control characters are refused in names, so keys cannot collide.
pub const KEY_SEP: char = '\u{1f}';

/// One level an acquire must pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LevelPlan<'a> {
    /// The state key: the resource name, or `resource␟descriptor␟value`.
    pub key: Cow<'a, str>,
    /// Index into the rule's partitions; `None` for the resource-wide level.
    pub partition: Option<u32>,
    /// The partition's override for this value (its index), if it has one.
    pub over: Option<u32>,
}

impl LevelPlan<'_> {
    /// The level's limits.
    pub fn spec<'r>(&self, rule: &'r Rule) -> &'r LevelSpec {
        match self.partition {
            Some(i) => rule.partitions[i as usize].spec(self.over),
            None => &rule.resource,
        }
    }

    /// How a denial names this level: `resource` or `tenant=acme`.
    pub fn label(&self, rule: &Rule) -> String {
        match self.partition {
            Some(i) => {
                // The value is the key's last part (values cannot hold the separator, a control character).
                let value = self.key.rsplit(KEY_SEP).next().unwrap_or_default();
                format!("{}={value}", rule.partitions[i as usize].descriptor)
            }
            None => "resource".to_owned(),
        }
    }
}

/// The state key of a partition value.
pub fn partition_key(resource: &str, descriptor: &str, value: &str) -> String {
    // Each part is bounded by limits.max_name_bytes: the sum cannot overflow, saturating says so anyway.
    let len = [resource.len(), descriptor.len(), value.len(), 2]
        .iter()
        .fold(0usize, |a, b| a.saturating_add(*b));
    let mut key = String::with_capacity(len);
    key.push_str(resource);
    key.push(KEY_SEP);
    key.push_str(descriptor);
    key.push(KEY_SEP);
    key.push_str(value);
    key
}

fn descriptor<'a>(descriptors: &'a [(String, String)], key: &str) -> Option<&'a str> {
    descriptors
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

fn required<'a>(
    descriptors: &'a [(String, String)],
    key: &str,
    resource: &str,
    why: &str,
) -> Result<&'a str, EngineError> {
    descriptor(descriptors, key).ok_or_else(|| {
        EngineError::invalid(
            format!("descriptors[{key:?}]"),
            format!("is required: resource '{resource}' is {why} by '{key}'"),
        )
    })
}

/// The breaker key for a resource: `None` without a breaker, else the resource name or its partition key.
pub fn breaker_key<'a>(
    rule: &Rule,
    resource: &'a str,
    descriptors: &'a [(String, String)],
) -> Result<Option<Cow<'a, str>>, EngineError> {
    if rule.breaker.is_none() {
        return Ok(None);
    }
    Ok(Some(match &rule.breaker_partition {
        None => Cow::Borrowed(resource),
        Some(d) => {
            let value = required(descriptors, d, resource, "breaker-partitioned")?;
            Cow::Owned(partition_key(resource, d, value))
        }
    }))
}

/// Everything an acquire touches, resolved against its rule.
#[derive(Debug, Clone)]
pub struct Plan<'a> {
    /// Concrete resource name.
    pub resource: &'a str,
    /// Its rule, borrowed from the rule set in force (no reference count taken per request).
    pub rule: &'a Arc<Rule>,
    /// How the resource found its rule: its own exact rule (named as it), or a pattern it matched.
    pub resolution: Resolution,
    /// Levels in check order (on the stack for up to four).
    pub levels: SmallVec<[LevelPlan<'a>; 4]>,
    /// The breaker's key, if the rule has a breaker.
    pub breaker_key: Option<Cow<'a, str>>,
    /// Tokens to take at every rate level.
    pub permits: u64,
    /// The lease TTL (request's, clamped to the rule's max, or the rule's default).
    pub ttl: Duration,
    /// Idempotency key.
    pub request_id: Option<&'a str>,
    /// Hash of the parameters that must match when a request_id is reused.
    pub fingerprint: u64,
    /// Caller identity.
    pub client_id: Option<&'a str>,
    /// The authenticated identity that will own the lease.
    pub owner: Option<&'static str>,
    /// Why the acquire is never limited, if it is not.
    pub bypass: Option<Bypass>,
    /// Its priority class (an index into the rule's classes; 0 without classes).
    pub class: u8,
    /// What its class may not use of each level, in millionths (the reserves of the classes above it).
    pub held_back: u32,
}

/// Why an acquire bypasses every limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bypass {
    /// Its identity is configured `bypass = true`.
    Identity,
    /// The value at this level (its index in the plan) has an override with `bypass = true`.
    Level(u32),
}

impl<'a> Plan<'a> {
    /// The levels' state keys (and the breaker's), joined: equal for two requests that touch the same state.
    pub fn wait_key(&self) -> String {
        let mut key = self.resource.to_owned();
        let parts = self.levels.iter().map(|l| &l.key).chain(&self.breaker_key);
        for part in parts {
            // U+001E cannot appear in a name (control characters are refused), so joins cannot collide.
            key.push('\u{1e}');
            key.push_str(part);
        }
        key
    }

    /// How a denial names level `level` (its index); `reserve`: it denied only because of the capacity
    /// reserved for higher classes (then the answer says for which).
    pub fn denied_by(&self, level: usize, reserve: bool) -> String {
        let label = self
            .levels
            .get(level)
            .map_or_else(|| "resource".to_owned(), |l| l.label(self.rule));
        match (&self.rule.priority, reserve) {
            (Some(p), true) => format!("{label} (reserved for {})", p.above(self.class)),
            _ => label,
        }
    }

    /// What bypassed the limits, named for answers and Explain: `identity 'ops'` or the level's label.
    pub fn bypassed_by(&self) -> Option<String> {
        self.bypass.map(|b| match b {
            Bypass::Identity => format!("identity '{}'", self.owner.unwrap_or_default()),
            Bypass::Level(i) => self.denied_by(i as usize, false),
        })
    }

    /// True when a grant of this plan needs nothing at its release, so no store keeps it: the rule is
    /// `settlement = false` (nothing to refund or charge), has no breaker (no outcome to count) and no
    /// adaptive rate or priority classes, no level has a concurrency limit (no slot to free) or is a dry run,
    /// and the request bypasses nothing. (A `request_id` keeps its replay record, not a lease.) Its lease id
    /// still answers Release and Renew (see [`Released::nothing_held`](super::Released::nothing_held)).
    #[inline]
    pub fn holds_nothing(&self) -> bool {
        let rule = self.rule;
        !rule.settlement
            && self.bypass.is_none()
            && rule.breaker.is_none()
            && rule.adaptive.is_none()
            && rule.priority.is_none()
            && self.levels.iter().all(|l| {
                let spec = l.spec(rule);
                spec.max_in_flight.is_none() && !spec.shadow
            })
    }

    /// True when the rule is the resource's own exact rule: the resource is handed out by its configured
    /// (interned) name.
    pub fn is_exact(&self) -> bool {
        self.resolution.is_exact()
    }

    /// Resolves `req` against `rule`, found as `resolution` says.
    pub fn build(
        rule: &'a Arc<Rule>,
        resolution: Resolution,
        req: &'a Acquire,
    ) -> Result<Self, EngineError> {
        let resource = req.resource.as_str();
        let mut levels: SmallVec<[LevelPlan<'a>; 4]> = SmallVec::new();
        if rule.resource.rate.is_some() || rule.resource.max_in_flight.is_some() {
            levels.push(LevelPlan {
                key: Cow::Borrowed(resource),
                partition: None,
                over: None,
            });
        }
        for (i, p) in rule.partitions.iter().enumerate() {
            let value = required(&req.descriptors, &p.descriptor, resource, "partitioned")?;
            levels.push(LevelPlan {
                key: Cow::Owned(partition_key(resource, &p.descriptor, value)),
                // Partitions are few (config-bounded).
                partition: Some(i as u32),
                over: p.override_of(value),
            });
        }
        let bypass = if req.bypass {
            Some(Bypass::Identity)
        } else {
            // Levels are few (config-bounded).
            levels
                .iter()
                .position(|l| l.over.is_some() && l.spec(rule).bypass)
                .map(|i| Bypass::Level(i as u32))
        };
        let class = match &rule.priority {
            Some(p) => p.class(req.priority.as_deref())?,
            None if req.priority.is_some() => {
                return Err(EngineError::invalid(
                    "priority",
                    format!("resource '{resource}' has no priority classes: leave it empty"),
                ));
            }
            None => 0,
        };
        let held_back = rule.priority.as_ref().map_or(0, |p| p.held_back(class));
        if bypass.is_none() {
            never_grantable(rule, &levels, req.permits, held_back, resource)?;
        }
        let ttl = req
            .lease_ttl
            .unwrap_or(rule.lease_ttl)
            .min(rule.max_lease_ttl);
        let fingerprint = match &req.request_id {
            None => 0,
            Some(_) => {
                let mut h = DefaultHasher::new();
                req.permits.hash(&mut h);
                // Another identity reusing a request_id is a conflict, never a replay of someone else's lease.
                req.owner.hash(&mut h);
                req.lease_ttl.hash(&mut h);
                class.hash(&mut h);
                let mut d: Vec<_> = req.descriptors.iter().collect();
                d.sort();
                d.hash(&mut h);
                h.finish()
            }
        };
        let breaker_key = breaker_key(rule, resource, &req.descriptors)?;
        Ok(Self {
            resource,
            rule,
            resolution,
            levels,
            breaker_key,
            permits: req.permits,
            ttl,
            request_id: req.request_id.as_deref(),
            fingerprint,
            client_id: req.client_id.as_deref(),
            owner: req.owner,
            bypass,
            class,
            held_back,
        })
    }
}

/// Refuses permits a level could never grant: more than its burst, less the reserve held back from the
/// request's class. (A shadow level never denies: one the request can never pass reports it on every
/// grant.)
fn never_grantable(
    rule: &Rule,
    levels: &[LevelPlan<'_>],
    permits: u64,
    held_back: u32,
    resource: &str,
) -> Result<(), EngineError> {
    for level in levels {
        let spec = level.spec(rule);
        let Some(rate) = spec.rate.filter(|_| !spec.shadow) else {
            continue;
        };
        let reserved = Reserve::of(spec, held_back).tokens;
        if permits > rate.burst.saturating_sub(reserved) {
            let reserve = if reserved > 0 {
                format!(" ({reserved} of them reserved for higher priority classes)")
            } else {
                String::new()
            };
            return Err(EngineError::FailedPrecondition(format!(
                "permits: {permits} can never be granted: level '{}' of resource '{resource}' has burst {}{reserve}",
                level.label(rule),
                rate.burst
            )));
        }
    }
    Ok(())
}
