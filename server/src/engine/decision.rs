//! What the engine answers. A denial is data: an `Ok(Decision)` whose verdict says why and when to retry.

use std::{sync::Arc, time::Duration};

use super::{BreakerSnapshot, BreakerState, LeaseId, Name, Transition};
use crate::clock::Nanos;

/// Why an acquire was denied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Denial {
    /// A token bucket lacked tokens.
    RateLimited,
    /// A concurrency level was full.
    ConcurrencyLimited,
    /// The breaker refused.
    CircuitOpen,
    /// Grants are paused after a downstream's retry-after.
    Paused,
}

impl Denial {
    /// Lower-case name for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RateLimited => "rate_limited",
            Self::ConcurrencyLimited => "concurrency_limited",
            Self::CircuitOpen => "circuit_open",
            Self::Paused => "paused",
        }
    }
}

/// A granted lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The lease.
    pub lease_id: LeaseId,
    /// When it expires (engine clock).
    pub expires_at: Nanos,
    /// Its TTL as granted.
    pub ttl: Duration,
    /// True when replaying an earlier grant for the same request_id.
    pub replayed: bool,
    /// Every limit was bypassed (its identity or a level's value is configured `bypass = true`): no
    /// tokens were taken.
    pub bypassed: bool,
    /// The grant holds nothing to give back and was not stored ([`Plan::holds_nothing`]): its Release
    /// and Renew change nothing, so a client may skip them.
    ///
    /// [`Plan::holds_nothing`]: super::Plan::holds_nothing
    pub nothing_held: bool,
}

/// Granted or denied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Every level was debited.
    Granted(Grant),
    /// Nothing was debited.
    Denied {
        /// Why.
        reason: Denial,
        /// Earliest time a retry can succeed (exact for rate limits, pauses and open breakers).
        retry_after: Nanos,
        /// Which level denied: `resource`, `tenant=acme`, `breaker`, `pause`.
        denied_by: String,
    },
}

/// The answer to an acquire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// The concrete resource.
    pub resource: Name,
    /// The configured name of the rule that decided (the pattern for a glob rule): a bounded label.
    pub rule: &'static str,
    /// Granted or denied.
    pub verdict: Verdict,
    /// Tokens left at the tightest rate level.
    pub remaining: u64,
    /// That level's burst (0 when the resource has no rate limit).
    pub limit: u64,
    /// Time until that level is full.
    pub reset_after: Nanos,
    /// Leases in flight at the tightest concurrency level (0 when none).
    pub in_flight: u32,
    /// That level's concurrency limit (0 when none).
    pub max_in_flight: u32,
    /// What an answer rarely carries (a breaker transition, a shadow level's would-be denial), boxed so
    /// the common answer stays small enough to move without a memcpy.
    pub notes: Option<Box<Notes>>,
}

/// The rare parts of a [`Decision`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Notes {
    /// The transition this acquire made the plan's breaker take (an OPEN breaker turning HALF_OPEN as it
    /// admits; an admission makes at most one): for the engine to count.
    pub transition: Option<Transition>,
    /// On a grant: the first shadow (dry-run) level that would have denied it, labelled as `denied_by`
    /// would name it.
    pub shadow_denied_by: Option<String>,
}

impl Decision {
    /// The transition this acquire made the plan's breaker take, if any.
    pub fn transition(&self) -> Option<Transition> {
        self.notes.as_ref().and_then(|n| n.transition)
    }

    /// The first shadow level that would have denied this grant, if any.
    pub fn shadow_denied_by(&self) -> Option<&str> {
        self.notes
            .as_ref()
            .and_then(|n| n.shadow_denied_by.as_deref())
    }

    /// Sets (or clears) the transition.
    pub fn set_transition(&mut self, transition: Option<Transition>) {
        if transition.is_some() || self.notes.is_some() {
            self.notes.get_or_insert_default().transition = transition;
        }
    }

    /// Sets (or clears) the shadow level that would have denied.
    pub fn set_shadow_denied_by(&mut self, by: Option<String>) {
        if by.is_some() || self.notes.is_some() {
            self.notes.get_or_insert_default().shadow_denied_by = by;
        }
    }

    /// True when granted.
    pub fn granted(&self) -> bool {
        matches!(self.verdict, Verdict::Granted(_))
    }

    /// The grant, if any.
    pub fn grant(&self) -> Option<&Grant> {
        match &self.verdict {
            Verdict::Granted(g) => Some(g),
            Verdict::Denied { .. } => None,
        }
    }

    /// The denial reason, if any.
    pub fn denial(&self) -> Option<Denial> {
        match &self.verdict {
            Verdict::Granted(_) => None,
            Verdict::Denied { reason, .. } => Some(*reason),
        }
    }
}

/// Why a release did not release anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NotReleased {
    /// Released before (or expired longer ago than the server remembers expiries: 60 s).
    AlreadyReleased,
    /// Expired (or revoked) before this release.
    Expired,
    /// Never issued by this server process.
    UnknownLease,
}

impl NotReleased {
    /// The wire reason.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AlreadyReleased => "already_released",
            Self::Expired => "expired",
            Self::UnknownLease => "unknown_lease",
        }
    }
}

/// The answer to a release.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Released {
    /// `Ok(())` when this call released the lease.
    pub result: Result<(), NotReleased>,
    /// Tokens given back by settlement.
    pub refunded: u64,
    /// Tokens charged by settlement.
    pub charged: u64,
    /// Breaker state after the outcome was counted.
    pub breaker: BreakerState,
    /// The lease's resource, when it was found.
    pub resource: Option<Name>,
    /// The lease's rule name, when it was found.
    pub rule: Option<&'static str>,
    /// Transitions the outcome made the lease's breaker take: for the engine to count (boxed: rare, and
    /// this answer is moved on every release).
    pub changed: Option<Box<BreakerChanges>>,
}

impl Released {
    /// A release that ended no lease, and why.
    pub fn gone(why: NotReleased) -> Self {
        Self {
            result: Err(why),
            refunded: 0,
            charged: 0,
            breaker: BreakerState::Closed,
            resource: None,
            rule: None,
            changed: None,
        }
    }

    /// The release of a lease no store keeps (a grant that held nothing: see
    /// [`Plan::holds_nothing`](super::Plan::holds_nothing), or a `fail_open` grant made while the store was
    /// down): released, nothing settled, freed or counted.
    pub fn nothing_held() -> Self {
        Self {
            result: Ok(()),
            ..Self::gone(NotReleased::UnknownLease)
        }
    }
}

/// Transitions a call made one breaker take, and that breaker's state key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BreakerChanges {
    /// The breaker's state key.
    pub key: Arc<str>,
    /// In order.
    pub transitions: Vec<Transition>,
}

/// The answer to a renewal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Renewed {
    /// New expiry (engine clock).
    pub expires_at: Nanos,
    /// New TTL from now.
    pub ttl: Duration,
}

impl Renewed {
    /// The TTL a renewal of a lease no store keeps answers when the request names none (its rule's
    /// default is not known: the lease was not stored).
    pub const NOTHING_HELD_TTL: Duration = Duration::from_secs(30);

    /// The renewal of a lease no store keeps (see [`Released::nothing_held`]): the TTL asked for (or
    /// [`NOTHING_HELD_TTL`](Self::NOTHING_HELD_TTL)) from `now`, nothing changed.
    pub fn nothing_held(ttl: Option<Duration>, now: Nanos) -> Self {
        let ttl = ttl.unwrap_or(Self::NOTHING_HELD_TTL);
        Self {
            expires_at: now.saturating_add(crate::clock::nanos(ttl)),
            ttl,
        }
    }
}

/// The adaptive rate and pause of a resource.
#[derive(Debug, Clone, PartialEq)]
pub struct Pressure {
    /// Resource-wide rate in force, tokens per second (0 without a rate limit).
    pub effective_rate: f64,
    /// Configured rate, tokens per second.
    pub configured_rate: f64,
    /// Paused until (engine clock), if paused now.
    pub paused_until: Option<Nanos>,
}

/// The answer to a throttle report.
#[derive(Debug, Clone, PartialEq)]
pub struct Reported {
    /// The concrete resource.
    pub resource: Name,
    /// The rule's configured name.
    pub rule: &'static str,
    /// Rates and pause after the report.
    pub pressure: Pressure,
    /// True when the report lowered the rate.
    pub rate_decreased: bool,
    /// True when the report started a pause or moved its end later.
    pub pause_lengthened: bool,
    /// Breaker state after counting the report.
    pub breaker: BreakerState,
    /// Transitions the report made the target's breaker take: for the engine to count.
    pub transitions: Vec<Transition>,
}

/// The answer to GetCircuitState.
#[derive(Debug, Clone, PartialEq)]
pub struct CircuitView {
    /// The concrete resource.
    pub resource: Arc<str>,
    /// The breaker (a fresh CLOSED one when none is configured).
    pub breaker: BreakerSnapshot,
    /// False when the resource has no breaker.
    pub configured: bool,
    /// Rates and pause.
    pub pressure: Pressure,
}
