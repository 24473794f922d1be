//! The steps' arguments and replies as typed values: [`AcquireArgs`], [`ReleaseArgs`] and [`RenewArgs`] write
//! themselves into a call by the names [`protocol`](super::protocol) declares, and [`AcquireReply`],
//! [`ReleaseReply`] and [`RenewReply`] read the step's answer by them (the levels step's answer is
//! [`levels_read`]). A field added to a step is a field here and a name there; the compiler finds every place
//! that must set or read it. (The report, circuit and housekeeping steps are set and read by name in
//! `store.rs`, each in one place.)

use ::redis::Value;

use super::{
    Call,
    protocol::{Reply, arg, out},
    reply,
};
use crate::{
    clock::Nanos,
    engine::{
        EngineError, LeaseId, LevelsRead, Outcome, Reserve, Transition,
        level::LevelCell,
        policy::{Bucket, HitStatus, Hits, Limit, limiter::FixedWindow, limiter::SlidingWindow},
        rate::Algorithm,
    },
};

/// One level of an acquire, as the script takes it (after the step's own arguments).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LevelArgs {
    /// The partition's index in the rule (none for the resource-wide level).
    pub partition: Option<u32>,
    /// Its rate spec (`args::rate`), empty without a rate limit.
    pub rate: String,
    /// Its concurrency limit, if any.
    pub max_in_flight: Option<u32>,
    /// How far below empty a settlement may take it.
    pub max_debt: u64,
    /// A dry run: checked and debited, never denying.
    pub shadow: bool,
    /// What it holds back from the request's priority class.
    pub reserve: Reserve,
}

/// An acquire step's arguments (the keys are set by the caller).
#[derive(Debug, Clone, PartialEq)]
pub struct AcquireArgs<'a> {
    /// Tokens asked for.
    pub permits: u64,
    /// The lease's time to live, ns.
    pub ttl: Nanos,
    /// The id the lease gets if granted.
    pub lease: LeaseId,
    /// The concrete resource.
    pub resource: &'a str,
    /// Its rule's configured name (for metrics on release and expiry).
    pub rule: &'a str,
    /// The TTL a renewal that names none gets, ns.
    pub default_ttl: Nanos,
    /// The longest TTL a renewal may ask for, ns.
    pub max_ttl: Nanos,
    /// The caller's client id (for listings), empty when none.
    pub client_id: &'a str,
    /// The authenticated identity: the only one that may release, renew or report under the lease.
    pub owner: &'a str,
    /// The request's fingerprint when it carries a request_id (its replay record is checked against it).
    pub fingerprint: Option<u64>,
    /// How long a granted request_id is remembered, ns.
    pub window: Nanos,
    /// The rule's adaptive spec (`args::adaptive`), empty when none.
    pub adaptive: String,
    /// The rule's breaker spec (`args::breaker`), empty when none.
    pub breaker: String,
    /// The wait a concurrency denial suggests, ns.
    pub concurrency_retry_after: Nanos,
    /// The partition values the lease holds (for listings).
    pub held: String,
    /// Every limit is bypassed: nothing is checked and no tokens taken.
    pub bypass: bool,
    /// The rule is `settlement = false`: the lease's release ignores `used_permits`.
    pub final_grant: bool,
    /// Every level, in check order.
    pub levels: Vec<LevelArgs>,
}

impl AcquireArgs<'_> {
    /// Sets every argument of `call` (an acquire step's) by name, then each level's.
    pub fn write(&self, call: &mut Call) {
        use arg::acq as a;
        call.set(a::permits, self.permits)
            .set(a::ttl, self.ttl)
            .set(a::lease, self.lease.to_string())
            .set(a::resource, self.resource)
            .set(a::rule, self.rule)
            .set(a::default_ttl, self.default_ttl)
            .set(a::max_ttl, self.max_ttl)
            .set(a::client_id, self.client_id)
            .set(a::owner, self.owner)
            .set(
                a::fingerprint,
                self.fingerprint.map_or_else(String::new, |f| f.to_string()),
            )
            .set(a::window, self.window)
            .set(a::adaptive, &self.adaptive)
            .set(a::breaker, &self.breaker)
            .set(a::concurrency_retry_after, self.concurrency_retry_after)
            .set(a::held, &self.held)
            .set(a::bypass, if self.bypass { "1" } else { "" })
            .set(a::final_grant, if self.final_grant { "1" } else { "" })
            .set(a::levels, self.levels.len());
        // In protocol::arg::level's order.
        for l in &self.levels {
            call.arg(l.partition.map_or_else(String::new, |p| p.to_string()))
                .arg(&l.rate)
                .arg(l.max_in_flight.map_or_else(String::new, |m| m.to_string()))
                .arg(l.max_debt)
                .arg(if l.shadow { "1" } else { "" })
                .arg(optional(l.reserve.tokens))
                .arg(optional(u64::from(l.reserve.slots)));
        }
    }
}

/// A count the script reads as absent when zero (`''`).
fn optional(n: u64) -> String {
    if n == 0 { String::new() } else { n.to_string() }
}

/// The tightest levels' figures an acquire reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Figures {
    /// Tokens left at the tightest rate level.
    pub remaining: u64,
    /// That level's capacity.
    pub limit: u64,
    /// Time until that level is full, ns.
    pub reset_after: Nanos,
    /// Leases in flight at the tightest concurrency level.
    pub in_flight: u32,
    /// That level's concurrency limit.
    pub max_in_flight: u32,
}

/// An acquire step's answer.
#[derive(Debug, Clone, PartialEq)]
pub enum AcquireReply {
    /// Granted now, or a remembered grant replayed (with the TTL it was granted with).
    Granted {
        /// The lease.
        lease: LeaseId,
        /// When it expires (absent: an unreadable instant).
        expires: Option<Nanos>,
        /// A replay of a request_id's grant.
        replayed: bool,
        /// A replay's TTL as granted, ns.
        ttl: Option<Nanos>,
        /// The tightest levels after the grant.
        figures: Figures,
        /// The grant was not stored (it holds nothing).
        nothing_held: bool,
        /// What the breaker did (a half-open probe taken).
        transitions: Vec<Transition>,
        /// The first shadow level that would have denied (its index in the plan).
        shadow: Option<usize>,
        /// Every limit was bypassed.
        bypassed: bool,
    },
    /// Denied: `reason` (paused, circuit_open, rate_limited, concurrency_limited), the wait, and the level
    /// that denied (-1 for the pause or the breaker).
    Denied {
        /// See the variant.
        reason: String,
        /// See the variant.
        retry_after: Nanos,
        /// See the variant.
        level: i64,
        /// The tightest levels as they stand.
        figures: Figures,
        /// What the breaker did.
        transitions: Vec<Transition>,
        /// Only the capacity reserved for higher priority classes denied.
        reserve: bool,
    },
    /// Refused before deciding: `conflict` (a request_id reused with other parameters) or `collide` (the
    /// lease id is taken; try another).
    Refused(String),
}

impl AcquireReply {
    /// Reads the step's answer by name.
    pub fn read(v: Value) -> Result<Self, EngineError> {
        use out::acq as o;
        let r = Reply::new(v)?;
        let status = r.int(o::status)?;
        if status < 0 {
            return Ok(Self::Refused(r.text(o::reason)?));
        }
        let figures = Figures {
            in_flight: r.count(o::in_flight)?,
            max_in_flight: r.count(o::max_in_flight)?,
            ..Figures::read(&r, [o::remaining, o::limit, o::reset_after])?
        };
        let transitions = reply::transitions(r.get(o::transitions));
        if status == 0 {
            let reserve = r.int(o::reserve).is_ok_and(|x| x == 1);
            let at = [o::reason, o::retry_after, o::level];
            return Self::denied(&r, at, figures, transitions, reserve);
        }
        let replayed = r.int(o::replayed)? == 1;
        Ok(Self::Granted {
            lease: lease(&r, o::lease)?,
            expires: r.instant(o::expires)?,
            replayed,
            ttl: if replayed { r.uint(o::ttl).ok() } else { None },
            figures,
            transitions,
            shadow: r.uint(o::shadow).ok().and_then(|i| usize::try_from(i).ok()),
            bypassed: r.int(o::bypassed).is_ok_and(|x| x == 1),
            nothing_held: false,
        })
    }

    /// Reads the answer of the step of an acquire that holds nothing (`rate`, [`out::rate`]): a fresh
    /// grant's lease is `id`, which the step was not told; a replay's is the one it remembered.
    pub fn read_held_nothing(v: Value, id: LeaseId) -> Result<Self, EngineError> {
        use out::rate as o;
        let r = Reply::new(v)?;
        let status = r.int(o::status)?;
        if status < 0 {
            return Ok(Self::Refused(r.text(o::reason)?));
        }
        let figures = Figures::read(&r, [o::remaining, o::limit, o::reset_after])?;
        if status == 0 {
            let at = [o::reason, o::retry_after, o::level];
            return Self::denied(&r, at, figures, Vec::new(), false);
        }
        // A fresh grant's reply ends at its figures; a replay's carries the grant it replays.
        let replayed = r.get(o::lease).is_some();
        Ok(Self::Granted {
            lease: if replayed { lease(&r, o::lease)? } else { id },
            expires: if replayed {
                r.instant(o::expires)?
            } else {
                None
            },
            replayed,
            ttl: if replayed { r.uint(o::ttl).ok() } else { None },
            figures,
            transitions: Vec::new(),
            shadow: None,
            bypassed: false,
            nothing_held: !replayed || r.int(o::held)? == 0,
        })
    }

    /// A denial, its reason, wait and level read from the fields at `at`.
    fn denied(
        r: &Reply,
        [reason, retry_after, level]: [usize; 3],
        figures: Figures,
        transitions: Vec<Transition>,
        reserve: bool,
    ) -> Result<Self, EngineError> {
        Ok(Self::Denied {
            reason: r.text(reason)?,
            retry_after: r.uint(retry_after)?,
            level: r.int(level)?,
            figures,
            transitions,
            reserve,
        })
    }
}

impl Figures {
    /// The tightest rate level's figures, from the fields at `at` (no concurrency level).
    fn read(r: &Reply, [remaining, limit, reset_after]: [usize; 3]) -> Result<Self, EngineError> {
        Ok(Self {
            remaining: r.uint(remaining)?,
            limit: r.uint(limit)?,
            reset_after: r.uint(reset_after)?,
            ..Self::default()
        })
    }
}

/// Redis's answer to a take.
#[derive(Debug, Clone, PartialEq)]
pub struct Taken {
    /// Granted: the permits taken (the request's and the slice's); denied: `None`.
    pub taken: Option<u64>,
    /// A denial's reason, wait and level.
    pub reason: String,
    /// See `reason`.
    pub retry_after: Nanos,
    /// See `reason`.
    pub level: i64,
    /// The tightest level after it.
    pub figures: Figures,
    /// When Redis took it (ms since the epoch).
    pub at_ms: u64,
    /// A denial's wait until the whole slice asked for could be taken (at least `retry_after`).
    pub refill_after: Nanos,
}

impl Taken {
    /// A denial's wait on a node granting from slices of `ttl`: the request's own, or until the slice asked
    /// for refills when that is sooner than one `ttl` (the node asks no sooner).
    pub fn wait(&self, ttl: std::time::Duration) -> Nanos {
        let ttl = crate::clock::nanos(ttl);
        self.retry_after.max(self.refill_after.min(ttl))
    }

    /// Reads the `take` step's answer by name.
    pub fn read(v: Value) -> Result<Self, EngineError> {
        use out::take as o;
        let r = Reply::new(v)?;
        let granted = r.int(o::status)? == 1;
        Ok(Self {
            taken: if granted {
                Some(r.uint(o::taken)?)
            } else {
                None
            },
            reason: if granted {
                String::new()
            } else {
                r.text(o::reason)?
            },
            retry_after: r.uint(o::retry_after)?,
            level: r.int(o::level)?,
            figures: Figures::read(&r, [o::remaining, o::limit, o::reset_after])?,
            at_ms: r.uint(o::at)?,
            refill_after: if granted { 0 } else { r.uint(o::refill_after)? },
        })
    }
}

/// The lease id in field `at`.
fn lease(r: &Reply, at: usize) -> Result<LeaseId, EngineError> {
    r.text(at)?
        .parse()
        .map_err(|()| EngineError::Unavailable("redis: bad lease id".into()))
}

/// A release step's arguments (the lease's key is set by the caller).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleaseArgs<'a> {
    /// The lease.
    pub lease: LeaseId,
    /// How the call under it ended.
    pub outcome: Outcome,
    /// The permits actually used (settlement), if given.
    pub used: Option<u64>,
    /// The identity releasing (the lease's owner may; empty without auth).
    pub caller: &'a str,
}

impl ReleaseArgs<'_> {
    /// Sets every argument of `call` (a release step's) by name.
    pub fn write(&self, call: &mut Call) {
        use arg::rel as a;
        let outcome = match self.outcome {
            Outcome::Success => "s",
            Outcome::Failure => "f",
            Outcome::Throttled => "t",
            Outcome::Unknown => "u",
        };
        call.set(a::lease, self.lease.to_string())
            .set(a::outcome, outcome)
            .set(
                a::used,
                self.used.map_or_else(String::new, |u| u.to_string()),
            )
            .set(a::caller, self.caller);
    }
}

/// A release step's answer.
#[derive(Debug, Clone, PartialEq)]
pub enum ReleaseReply {
    /// Released: what settlement refunded and charged, the breaker after the outcome counted (its key as
    /// stored, and what it did), and the lease's resource and rule.
    Released {
        /// Tokens given back.
        refunded: u64,
        /// Tokens charged beyond those acquired.
        charged: u64,
        /// The breaker's state name.
        state: String,
        /// The breaker's stored key, when the outcome moved it.
        breaker: Option<String>,
        /// What the outcome did to the breaker.
        transitions: Vec<Transition>,
        /// The lease's resource and rule.
        resource: String,
        /// See `resource`.
        rule: String,
    },
    /// Not released (`reason`: already_released, expired, unknown_lease), with the lease's resource and
    /// rule where the store still knew them (empty otherwise).
    Gone {
        /// See the variant.
        reason: String,
        /// See the variant.
        resource: String,
        /// See the variant.
        rule: String,
    },
    /// Another identity's lease: refused, nothing changed.
    NotOwner,
}

impl ReleaseReply {
    /// Reads the step's answer by name.
    pub fn read(v: Value) -> Result<Self, EngineError> {
        use out::rel as o;
        let r = Reply::new(v)?;
        Ok(match r.int(o::status)? {
            -1 => Self::NotOwner,
            0 => Self::Gone {
                reason: r.text(o::reason)?,
                resource: r.text(o::resource)?,
                rule: r.text(o::rule)?,
            },
            _ => Self::Released {
                refunded: r.uint(o::refunded)?,
                charged: r.uint(o::charged)?,
                state: r.text(o::state)?,
                breaker: r.text(o::breaker).ok().filter(|b| !b.is_empty()),
                transitions: reply::transitions(r.get(o::transitions)),
                resource: r.text(o::resource)?,
                rule: r.text(o::rule)?,
            },
        })
    }
}

/// A renew step's arguments (the lease's key is set by the caller).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenewArgs<'a> {
    /// The lease.
    pub lease: LeaseId,
    /// The TTL asked for, ns (`None`: the lease's default).
    pub ttl: Option<Nanos>,
    /// The identity renewing.
    pub caller: &'a str,
}

impl RenewArgs<'_> {
    /// Sets every argument of `call` (a renew step's) by name.
    pub fn write(&self, call: &mut Call) {
        use arg::ren as a;
        call.set(a::lease, self.lease.to_string())
            .set(a::ttl, self.ttl.map_or_else(String::new, |t| t.to_string()))
            .set(a::caller, self.caller);
    }
}

/// A renew step's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RenewReply {
    /// Renewed: the new expiry (absent: an unreadable instant) and the TTL granted, ns.
    Renewed {
        /// See the variant.
        expires: Option<Nanos>,
        /// See the variant.
        ttl: Nanos,
    },
    /// Not renewed (`reason`: already_released, expired, unknown_lease).
    Gone(String),
    /// Another identity's lease: refused, nothing changed.
    NotOwner,
}

impl RenewReply {
    /// Reads the step's answer by name.
    pub fn read(v: Value) -> Result<Self, EngineError> {
        use out::ren as o;
        let r = Reply::new(v)?;
        Ok(match r.int(o::status)? {
            -1 => Self::NotOwner,
            0 => Self::Gone(r.text(o::reason)?),
            _ => Self::Renewed {
                expires: r.instant(o::expires)?,
                ttl: r.uint(o::ttl)?,
            },
        })
    }
}

/// The levels step's answer (`out::lvl`, then an `out::level` row per level): each level as stored, read
/// back into the cells the policy runs on, and the factor the script applies to the rule's rates.
pub fn levels_read(v: Value, now: Nanos) -> Result<LevelsRead, EngineError> {
    let mut rows = Reply::new(v)?.into_items();
    let rest = rows.split_off(out::lvl::FIELDS.names.len().min(rows.len()));
    let factor = Reply::new(Value::Array(rows))?.float(out::lvl::factor)?;
    let cells = rest
        .iter()
        .map(|row| level_cell(&Reply::row(row)?, now))
        .collect::<Result<_, _>>()?;
    Ok(LevelsRead { factor, cells })
}

/// A hit step's answer: whether the request is over, then an `out::counter` row per counter.
pub fn hits_read(v: Value) -> Result<Hits, EngineError> {
    let mut rows = Reply::new(v)?.into_items().into_iter();
    let head = rows
        .next()
        .ok_or_else(|| EngineError::Unavailable("an empty reply to a hit step".into()))?;
    let over = Reply::row(&head)?.uint(out::hit::over)? == 1;
    let statuses = rows
        .map(|row| {
            let row = Reply::row(&row)?;
            Ok(HitStatus {
                over: row.uint(out::counter::over)? == 1,
                remaining: row.uint(out::counter::remaining)?,
                limit: row.uint(out::counter::limit)?,
                reset_after: row.uint(out::counter::reset_after)?,
            })
        })
        .collect::<Result<_, EngineError>>()?;
    Ok(Hits { over, statuses })
}

/// One `out::level` row: its limit as stored (a token bucket full again `deficit` after `now`, or a
/// window whose start the script keeps in ms since the epoch), and the leases in flight.
fn level_cell(row: &Reply, now: Nanos) -> Result<LevelCell, EngineError> {
    use out::level;
    let start = || Ok::<_, EngineError>(row.uint(level::window_start)?.saturating_mul(1_000_000));
    let limit = match Algorithm::parse(&row.text(level::algorithm)?) {
        None => None,
        Some(Algorithm::TokenBucket) => {
            let deficit = row.uint(level::deficit)?;
            let tat = if deficit == 0 {
                0
            } else {
                now.saturating_add(deficit)
            };
            let interval = row.uint(level::interval)?;
            Some(Limit::TokenBucket(Bucket::from_parts(
                tat,
                interval,
                row.uint(level::burst)?,
            )))
        }
        Some(Algorithm::FixedWindow) => Some(Limit::FixedWindow(FixedWindow::from_parts(
            start()?,
            row.uint(level::count)?,
            row.uint(level::period)?,
        ))),
        Some(Algorithm::SlidingWindow) => {
            let counts = (
                start()?,
                row.uint(level::count)?,
                row.uint(level::previous)?,
            );
            let window = SlidingWindow::from_parts(counts, row.uint(level::period)?);
            Some(Limit::SlidingWindow(window))
        }
    };
    Ok(LevelCell {
        limit,
        in_flight: row.count(level::in_flight)?,
    })
}
