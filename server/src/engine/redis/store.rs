//! [`Store`] for [`RedisStore`]: each method builds one script call and reads its answer.

use std::{sync::atomic::Ordering, time::Duration};

use futures_util::future::join_all;

use super::{
    Call, RedisStore, args,
    keys::{SHARDS, held_nothing_in, holds_nothing, lease_in, shard_of, shard_of_lease},
    reply::{self, int, items, text, uint},
};
use super::{
    messages::{
        AcquireArgs, AcquireReply, LevelArgs, ReleaseArgs, ReleaseReply, RenewArgs, RenewReply,
    },
    protocol::{Fields, Reply, arg, key, out},
};
use crate::{
    clock::{Nanos, nanos},
    engine::{
        BreakerChanges, BreakerRef, BreakerSnapshot, BreakerState, CircuitView, Decision, Denial,
        EngineError, Expired, Grant, LeaseId, LeaseQuery, LeaseView, LevelsRead, NotReleased, Plan,
        Pressure, Release, Released, Renew, Renewed, ReportPlan, Reported, Reserve, ResourceUsage,
        Rule, Rules, Store, StoreUsage, Sweep, ThrottleKind, UsageQuery, Verdict,
        policy::{HitMode, HitPlan, Hits},
    },
};

impl RedisStore {
    /// A call of the step whose arguments are `args` (and keys `keys`), at `now`, in `shard`.
    fn invocation(&self, args: Fields, keys: Option<Fields>, now: Nanos, shard: u64) -> Call {
        let mut inv = Call::new(args, keys);
        inv.set(arg::NOW, self.now_arg(now))
            .set(arg::PREFIX, self.keys.shard(shard));
        inv
    }

    /// One attempt at an acquire with a fresh lease id; `None` when the id was taken (try another).
    async fn acquire_once(
        &self,
        plan: &Plan<'_>,
        now: Nanos,
    ) -> Result<Option<Decision>, EngineError> {
        let shard = shard_of(plan.resource);
        let id = lease_in(shard, self.random());
        let inv = self.acquire_call(plan, id, shard, now);
        match AcquireReply::read(self.call(&inv).await?)? {
            AcquireReply::Refused(why) if why == "collide" => Ok(None),
            AcquireReply::Refused(_) => Err(crate::engine::policy::request_id_conflict(
                plan.resource,
                plan.request_id.unwrap_or_default(),
            )),
            answer => acquired(plan, answer, now).map(Some),
        }
    }

    /// An acquire that holds nothing ([`Plan::holds_nothing`]): the `rate` step, which reads and writes
    /// the levels alone; its lease id is told from a stored lease's by its form (`keys::holds_nothing`).
    async fn acquire_held_nothing(
        &self,
        plan: &Plan<'_>,
        now: Nanos,
    ) -> Result<Decision, EngineError> {
        let shard = shard_of(plan.resource);
        let id = held_nothing_in(shard, self.random());
        let rkey = self.keys.resource(plan.resource);
        let mut inv = self.invocation(arg::rate::FIELDS, Some(key::rate::FIELDS), now, shard);
        inv.in_shard(shard);
        let replay = plan.request_id.map_or_else(String::new, |_| {
            let window = self.window.load(Ordering::Relaxed);
            format!("{}|{id}|{}|{window}", plan.fingerprint, nanos(plan.ttl))
        });
        inv.set_key(key::rate::resource, rkey)
            .set(arg::rate::permits, plan.permits)
            .set(arg::rate::replay, replay)
            .set(arg::rate::levels, plan.levels.len());
        for level in &plan.levels {
            inv.key(self.keys.level(&level.key))
                .arg(args::rate(level.spec(plan.rule).rate));
        }
        if let Some(r) = plan.request_id {
            inv.key(self.keys.request_id(plan.resource, r));
        }
        match AcquireReply::read_held_nothing(self.call(&inv).await?, id)? {
            AcquireReply::Refused(_) => Err(crate::engine::policy::request_id_conflict(
                plan.resource,
                plan.request_id.unwrap_or_default(),
            )),
            answer => acquired(plan, answer, now),
        }
    }

    /// An acquire that holds nothing in one step (the fallback decides while Redis is down).
    pub(super) async fn acquire_one_step(
        &self,
        plan: &Plan<'_>,
        now: Nanos,
    ) -> Result<Decision, EngineError> {
        if self.fallback.is_down() {
            return self.fallback.acquire(plan, now, down()).await;
        }
        match self.acquire_held_nothing(plan, now).await {
            Ok(d) => {
                if d.granted() {
                    self.index(plan.resource).await;
                }
                Ok(d)
            }
            Err(e @ EngineError::Unavailable(_)) => self.fallback.acquire(plan, now, e).await,
            Err(e) => Err(e),
        }
    }

    /// The acquire step for `plan`, granting lease `id` if it grants.
    fn acquire_call(&self, plan: &Plan<'_>, id: LeaseId, shard: u64, now: Nanos) -> Call {
        let rule = plan.rule;
        let rkey = self.keys.resource(plan.resource);
        let mut inv = self.invocation(arg::acq::FIELDS, Some(key::acq::FIELDS), now, shard);
        inv.in_shard(shard);
        inv.set_key(
            key::acq::breaker,
            plan.breaker_key
                .as_ref()
                .map_or_else(|| rkey.clone(), |k| self.keys.breaker(k)),
        )
        .set_key(key::acq::lease, self.keys.lease(id))
        .set_key(
            key::acq::request_id,
            plan.request_id
                .map_or_else(|| rkey.clone(), |r| self.keys.request_id(plan.resource, r)),
        )
        .set_key(key::acq::resource, rkey);
        for level in &plan.levels {
            inv.key(self.keys.level(&level.key));
        }
        AcquireArgs {
            permits: plan.permits,
            ttl: nanos(plan.ttl),
            lease: id,
            resource: plan.resource,
            rule: rule.name,
            default_ttl: nanos(rule.lease_ttl),
            max_ttl: nanos(rule.max_lease_ttl),
            client_id: plan.client_id.unwrap_or(""),
            owner: plan.owner.unwrap_or(""),
            fingerprint: plan.request_id.map(|_| plan.fingerprint),
            window: self.window.load(Ordering::Relaxed),
            adaptive: args::adaptive(rule.adaptive.as_ref()),
            breaker: args::breaker(rule.breaker.as_ref()),
            concurrency_retry_after: nanos(rule.concurrency_retry_after),
            held: descriptors(plan),
            bypass: plan.bypass.is_some(),
            final_grant: !rule.settlement,
            levels: plan
                .levels
                .iter()
                .map(|level| {
                    let spec = level.spec(rule);
                    LevelArgs {
                        partition: level.partition,
                        rate: args::rate(spec.rate),
                        max_in_flight: spec.max_in_flight,
                        max_debt: args::max_debt(rule, spec),
                        shadow: spec.shadow,
                        reserve: Reserve::of(spec, plan.held_back),
                    }
                })
                .collect(),
        }
        .write(&mut inv);
        inv
    }

    async fn report_redis(&self, rp: &ReportPlan<'_>, now: Nanos) -> Result<Reported, EngineError> {
        let target = &rp.target;
        let rule = &target.rule;
        let (shard, rkey, bkey) = self.breaker_keys(target);
        let lkey = match rp.lease_id {
            Some(id) if shard_of_lease(id) == shard => self.keys.lease(id),
            Some(id) => {
                return Err(EngineError::invalid(
                    "lease_id",
                    format!(
                        "lease {id} was granted for another resource, not '{}'",
                        target.resource
                    ),
                ));
            }
            None => rkey.clone(),
        };
        let kind = match rp.kind {
            ThrottleKind::Throttled => "t",
            ThrottleKind::Error => "e",
            ThrottleKind::Timeout => "o",
        };
        use arg::rep as a;
        let mut inv = self.invocation(a::FIELDS, Some(key::rep::FIELDS), now, shard);
        inv.set_key(key::rep::resource, &rkey)
            .set_key(key::rep::breaker, &bkey)
            .set_key(key::rep::lease, &lkey)
            .set(a::kind, kind)
            .set(
                a::pause,
                rp.pause.map_or_else(String::new, |p| nanos(p).to_string()),
            )
            .set(
                a::lease,
                rp.lease_id.map_or_else(String::new, |id| id.to_string()),
            )
            .set(a::caller, rp.caller.unwrap_or(""))
            .set(a::resource, target.resource)
            .set(a::adaptive, args::adaptive(rule.adaptive.as_ref()))
            .set(
                a::breaker,
                args::breaker(rule.breaker.as_ref().filter(|_| target.key.is_some())),
            )
            .set(a::quiet, crate::engine::reporters::quiet_window(rule));
        let v = Reply::new(self.call(&inv).await?)?;
        reported(rp, &v)
    }

    async fn circuit_redis(
        &self,
        target: &BreakerRef<'_>,
        now: Nanos,
    ) -> Result<CircuitView, EngineError> {
        let rule = &target.rule;
        let (shard, rkey, bkey) = self.breaker_keys(target);
        let spec = rule.breaker.clone().unwrap_or_default();
        let mut inv = self.invocation(arg::cir::FIELDS, Some(key::cir::FIELDS), now, shard);
        inv.set_key(key::cir::resource, &rkey)
            .set_key(key::cir::breaker, &bkey)
            .set(arg::cir::breaker, args::breaker(Some(&spec)))
            .set(arg::cir::adaptive, args::adaptive(rule.adaptive.as_ref()));
        let v = Reply::new(self.call(&inv).await?)?;
        let configured = rule.headline_rate().map_or(0.0, |r| r.per_second());
        use out::cir as o;
        Ok(CircuitView {
            resource: target.resource.into(),
            breaker: BreakerSnapshot {
                state: reply::state(&v.text(o::state)?),
                since: v.instant(o::since)?.unwrap_or(now),
                calls: v.uint(o::calls)?,
                failures: v.uint(o::failures)?,
                consecutive_failures: v.count(o::consecutive)?,
                half_open_at: v.instant(o::half_open_at)?,
                probes_left: v.count(o::probes)?,
                successes_needed: v.count(o::needed)?,
            },
            configured: rule.breaker.is_some(),
            pressure: Pressure {
                effective_rate: configured * v.float(o::factor)?,
                configured_rate: configured,
                paused_until: v.instant(o::paused_until)?,
            },
        })
    }

    /// The target with its rule divided by the live nodes, for a resource whose policy is not fail_closed.
    fn local_target<'a>(&self, target: &BreakerRef<'a>) -> Option<BreakerRef<'a>> {
        if target.rule.on_store_error == crate::engine::OnStoreError::FailClosed {
            return None;
        }
        let rule = self.fallback.rules().resolve(target.resource)?.clone();
        Some(BreakerRef {
            rule,
            ..target.clone()
        })
    }

    fn breaker_keys(&self, target: &BreakerRef<'_>) -> (u64, String, String) {
        let shard = shard_of(target.resource);
        let rkey = self.keys.resource(target.resource);
        let bkey = target.key.as_ref().map_or_else(
            || format!("{}none", self.keys.shard(shard)),
            |k| self.keys.breaker(k),
        );
        (shard, rkey, bkey)
    }

    async fn usage_of(
        &self,
        rule: &Rule,
        resource: &str,
        now: Nanos,
    ) -> Result<ResourceUsage, EngineError> {
        let shard = shard_of(resource);
        let mut inv = self.invocation(arg::usage::FIELDS, Some(key::usage::FIELDS), now, shard);
        inv.set_key(key::usage::resource, self.keys.resource(resource))
            .set_key(key::usage::level, self.keys.level(resource))
            .set_key(key::usage::breaker, self.keys.breaker(resource))
            .set(arg::usage::rate, args::rate(rule.resource.rate))
            .set(arg::usage::adaptive, args::adaptive(rule.adaptive.as_ref()));
        let r = Reply::new(self.call(&inv).await?)?;
        use out::usage as o;
        Ok(ResourceUsage {
            resource: resource.into(),
            tokens_available: r.text(o::tokens)?.parse().ok(),
            in_flight: r.count(o::in_flight)?,
            live_leases: r.uint(o::leases)?,
            breaker: reply::state(&r.text(o::state)?),
            rate_factor: r.float(o::factor)?,
            paused_until: r.instant(o::paused_until)?,
        })
    }

    /// Names of the resource index (today's and yesterday's, merged) from `after` (exclusive) or the start of
    /// the prefix, in order and without gaps, and whether more may follow.
    async fn resource_names(
        &self,
        query: &UsageQuery<'_>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<String>, bool), EngineError> {
        let from = match after {
            Some(a) if *a >= *query.prefix => format!("({a}"),
            _ if query.prefix.is_empty() => "-".to_owned(),
            _ => format!("[{}", query.prefix),
        };
        let day = super::today();
        let mut lists = Vec::new();
        for key in [self.keys.index(day), self.keys.index(day.saturating_sub(1))] {
            let cmd = ::redis::cmd("ZRANGEBYLEX")
                .arg(key)
                .arg(&from)
                .arg("+")
                .arg("LIMIT")
                .arg(0)
                .arg(limit)
                .to_owned();
            let names: Vec<String> = items(self.command(&cmd).await?)?
                .iter()
                .map(|v| text(Some(v)))
                .collect::<Result<_, _>>()?;
            lists.push(names);
        }
        // A full list may go on past its last name: the merge is complete only up to the smallest such.
        let cut = lists
            .iter()
            .filter(|l| l.len() == limit)
            .filter_map(|l| l.last().cloned())
            .min();
        let mut names: Vec<String> = lists.into_iter().flatten().collect();
        names.sort();
        names.dedup();
        if let Some(cut) = &cut {
            names.retain(|n| n <= cut);
        }
        Ok((names, cut.is_some()))
    }

    /// Which shards a sweep call reads, and how many expired leases it takes from each. A shard left with
    /// more than one call reclaims (all of a resource's leases share a shard, so a burst of one resource's
    /// leases expiring lands in one) is swept alone, 32 a call (each lease is a few redis.calls, and one call
    /// holds Redis for all of them), so the other 63 shards are not read again for every few leases it gives
    /// back; every other shard is still read at least every 500 ms of the sweep's clock.
    fn sweep_plan(&self, now: Nanos, limit: usize) -> (Vec<u64>, usize) {
        let backlog = self.backlog.load(Ordering::Relaxed);
        let last_full = self.last_full_sweep.load(Ordering::Relaxed);
        let cluster = !self.settings.cluster.is_empty();
        if backlog == 0 || now.saturating_sub(last_full) >= 500_000_000 {
            self.last_full_sweep.store(now, Ordering::Relaxed);
            let (floor, cap) = if cluster { (16, 512) } else { (8, 64) };
            return (
                (0..SHARDS).collect(),
                (limit / SHARDS as usize).clamp(floor, cap),
            );
        }
        let busy: Vec<u64> = (0..SHARDS).filter(|s| backlog >> s & 1 == 1).collect();
        let per_shard = (limit / busy.len()).clamp(if cluster { 16 } else { 8 }, 32);
        (busy, per_shard)
    }

    async fn sweep_shards(
        &self,
        shards: &[u64],
        now: Nanos,
        limit: usize,
    ) -> Result<(Vec<Expired>, u64), EngineError> {
        let mut inv = Call::new(arg::swp::FIELDS, None);
        inv.set(arg::NOW, self.now_arg(now))
            .set(arg::PREFIX, "")
            .set(arg::swp::limit, limit);
        for &shard in shards {
            inv.key(self.keys.expiries(shard))
                .arg(self.keys.shard(shard));
        }
        let r = items(self.call(&inv).await?)?;
        // Which of the shards swept have more: a bit per shard.
        let more = text(r.first())?
            .bytes()
            .zip(shards)
            .filter(|(flag, _)| *flag == b'1')
            .fold(0u64, |mask, (_, &shard)| mask | 1 << shard);
        let mut expired = Vec::new();
        for chunk in r.get(1..).unwrap_or_default().chunks(3) {
            let (Ok(id), Ok(resource), Ok(rule)) =
                (text(chunk.first()), text(chunk.get(1)), text(chunk.get(2)))
            else {
                continue;
            };
            let Ok(lease_id) = id.parse() else { continue };
            expired.push(Expired {
                lease_id,
                resource: crate::engine::Name::Given(resource.into()),
                rule: crate::engine::intern(&rule),
            });
        }
        Ok((expired, more))
    }
}

/// A report's effect from the step's reply.
fn reported(rp: &ReportPlan<'_>, v: &Reply) -> Result<Reported, EngineError> {
    let target = &rp.target;
    let rule = &target.rule;
    if v.int(out::rep::status)? == -1 {
        return Err(match v.text(out::rep::reason)?.as_str() {
            "not_owner" => EngineError::not_owner(rp.lease_id.unwrap_or(LeaseId(0))),
            _ => EngineError::invalid(
                "lease_id",
                format!(
                    "lease {} was granted for another resource, not '{}'",
                    rp.lease_id.unwrap_or(LeaseId(0)),
                    target.resource
                ),
            ),
        });
    }
    let transitions = match &target.key {
        Some(_) => reply::transitions(v.get(out::rep::transitions)),
        None => Vec::new(),
    };
    let rate_decreased = v.int(out::rep::decreased)? == 1;
    let paused_before = v.instant(out::rep::paused_before)?.unwrap_or(0);
    let paused_until = v.instant(out::rep::paused_until)?;
    let configured = rule.headline_rate().map_or(0.0, |r| r.per_second());
    let pressure = Pressure {
        effective_rate: configured * v.float(out::rep::factor)?,
        configured_rate: configured,
        paused_until,
    };
    Ok(Reported {
        pause_lengthened: paused_until.is_some_and(|u| u > paused_before),
        resource: crate::engine::Name::Given(target.resource.into()),
        rule: rule.name,
        pressure,
        rate_decreased,
        breaker: reply::state(&v.text(out::rep::state)?),
        transitions,
    })
}

/// An acquire's decision from the step's answer (granted or denied).
pub(super) fn acquired(
    plan: &Plan<'_>,
    answer: AcquireReply,
    now: Nanos,
) -> Result<Decision, EngineError> {
    let rule = plan.rule;
    let resource = if plan.is_exact() {
        crate::engine::Name::Configured(rule.name)
    } else {
        crate::engine::Name::Given(plan.resource.into())
    };
    let (verdict, figures, transitions, shadow_denied_by) = match answer {
        AcquireReply::Granted {
            lease,
            expires,
            replayed,
            ttl,
            figures,
            transitions,
            shadow,
            bypassed,
            nothing_held,
        } => {
            let expires_at = expires.unwrap_or(now);
            // A replay carries the TTL it was granted with.
            let ttl = match (replayed, ttl) {
                (true, Some(ttl)) => Duration::from_nanos(ttl),
                (true, None) => Duration::from_nanos(expires_at.saturating_sub(now)),
                (false, _) => plan.ttl,
            };
            let grant = Grant {
                lease_id: lease,
                // The step that stores nothing answers no expiry for a fresh grant: the engine's clock
                // gives it.
                expires_at: match expires {
                    None if nothing_held && !replayed => now.saturating_add(nanos(plan.ttl)),
                    _ => expires_at,
                },
                ttl,
                replayed,
                bypassed,
                nothing_held,
            };
            let shadow = shadow
                .and_then(|i| plan.levels.get(i))
                .map(|l| l.label(rule));
            (Verdict::Granted(grant), figures, transitions, shadow)
        }
        AcquireReply::Denied {
            reason,
            retry_after,
            level,
            figures,
            transitions,
            reserve,
        } => (
            denial(plan, &reason, retry_after, (level, reserve)),
            figures,
            transitions,
            None,
        ),
        AcquireReply::Refused(why) => {
            return Err(EngineError::Unavailable(format!(
                "redis: an acquire refused ({why}) where a decision was expected"
            )));
        }
    };
    let mut decision = Decision {
        resource,
        rule: rule.name,
        verdict,
        remaining: figures.remaining,
        limit: figures.limit,
        reset_after: figures.reset_after,
        in_flight: figures.in_flight,
        max_in_flight: figures.max_in_flight,
        notes: None,
    };
    // An admission makes at most one transition (OPEN turning HALF_OPEN).
    decision.set_transition(
        plan.breaker_key
            .as_ref()
            .and_then(|_| transitions.into_iter().next()),
    );
    decision.set_shadow_denied_by(shadow_denied_by);
    Ok(decision)
}

/// A denial as the script named it: the reason, the wait, and the level that denied (-1: the pause or the
/// breaker).
fn denial(
    plan: &Plan<'_>,
    reason: &str,
    retry_after: Nanos,
    (level, reserve): (i64, bool),
) -> Verdict {
    let reason = match reason {
        "paused" => Denial::Paused,
        "circuit_open" => Denial::CircuitOpen,
        "concurrency_limited" => Denial::ConcurrencyLimited,
        _ => Denial::RateLimited,
    };
    let denied_by = match reason {
        Denial::Paused => "pause".to_owned(),
        Denial::CircuitOpen => "breaker".to_owned(),
        _ => plan.denied_by(usize::try_from(level).unwrap_or(usize::MAX), reserve),
    };
    Verdict::Denied {
        reason,
        retry_after,
        denied_by,
    }
}

/// The partition values a plan holds, `descriptor␟value` joined by U+001E (neither can hold a control
/// character).
fn descriptors(plan: &Plan<'_>) -> String {
    let held: Vec<&str> = plan
        .levels
        .iter()
        .filter(|l| l.partition.is_some())
        .filter_map(|l| {
            l.key
                .split_once(crate::engine::plan::KEY_SEP)
                .map(|(_, rest)| rest)
        })
        .collect();
    held.join("\u{1e}")
}

/// Why a call is not made while Redis is down.
pub(super) fn down() -> EngineError {
    EngineError::Unavailable("redis: unreachable (retried within a second)".into())
}

fn not_released(s: &str) -> NotReleased {
    match s {
        "expired" => NotReleased::Expired,
        "already_released" => NotReleased::AlreadyReleased,
        _ => NotReleased::UnknownLease,
    }
}

impl Store for RedisStore {
    async fn acquire(&self, plan: &Plan<'_>, now: Nanos) -> Result<Decision, EngineError> {
        // A slice already taken is granted from while Redis is down, too.
        if let Some(share) = plan.rule.local_share.filter(|_| plan.holds_nothing()) {
            return self.acquire_shared(plan, share, now).await;
        }
        if self.fallback.is_down() {
            return self.fallback.acquire(plan, now, down()).await;
        }
        if plan.holds_nothing() {
            return self.acquire_one_step(plan, now).await;
        }
        for _ in 0..4 {
            match self.acquire_once(plan, now).await {
                Ok(Some(d)) => {
                    if d.granted() {
                        self.index(plan.resource).await;
                    }
                    return Ok(d);
                }
                Ok(None) => {}
                Err(e @ EngineError::Unavailable(_)) => {
                    return self.fallback.acquire(plan, now, e).await;
                }
                Err(e) => return Err(e),
            }
        }
        Err(EngineError::Unavailable(
            "redis: no free lease id after 4 tries".into(),
        ))
    }

    async fn release(
        &self,
        rules: &Rules,
        r: &Release,
        now: Nanos,
    ) -> Result<Released, EngineError> {
        match self.fallback.owns(r.lease_id) {
            Some(true) => return Ok(Released::nothing_held()),
            Some(false) => {
                return self
                    .fallback
                    .local
                    .release(&self.fallback.rules(), r, now)
                    .await;
            }
            None if holds_nothing(r.lease_id) => return Ok(Released::nothing_held()),
            None => {}
        }
        let shard = shard_of_lease(r.lease_id);
        let mut inv = self.invocation(arg::rel::FIELDS, Some(key::rel::FIELDS), now, shard);
        inv.in_shard(shard);
        inv.set_key(key::rel::lease, self.keys.lease(r.lease_id));
        ReleaseArgs {
            lease: r.lease_id,
            outcome: r.outcome,
            used: r.used_permits,
            caller: r.caller.unwrap_or(""),
        }
        .write(&mut inv);
        let names = |resource: &str, rule: &str| {
            let rule = reply::rule_name(Some(rules), resource, rule);
            (Some(reply::name(Some(rules), resource)), Some(rule))
        };
        match ReleaseReply::read(self.call(&inv).await?)? {
            ReleaseReply::NotOwner => Err(EngineError::not_owner(r.lease_id)),
            ReleaseReply::Gone {
                reason,
                resource,
                rule,
            } => {
                let mut gone = Released::gone(not_released(&reason));
                if !resource.is_empty() {
                    (gone.resource, gone.rule) = names(&resource, &rule);
                }
                Ok(gone)
            }
            ReleaseReply::Released {
                refunded,
                charged,
                state,
                breaker,
                transitions,
                resource,
                rule,
            } => {
                let (named, rule) = names(&resource, &rule);
                // Named by the breaker's engine key (a partition's, when partitioned), as the in-memory store
                // names it.
                let changed = (!transitions.is_empty()).then(|| {
                    let key = breaker.as_deref().and_then(|k| self.keys.breaker_of(k));
                    Box::new(BreakerChanges {
                        key: key.unwrap_or(resource).into(),
                        transitions,
                    })
                });
                Ok(Released {
                    result: Ok(()),
                    refunded,
                    charged,
                    breaker: reply::state(&state),
                    resource: named,
                    rule,
                    changed,
                })
            }
        }
    }

    async fn renew(&self, renew: &Renew, now: Nanos) -> Result<Renewed, EngineError> {
        let id = renew.lease_id;
        match self.fallback.owns(id) {
            Some(true) => return Ok(Renewed::nothing_held(renew.lease_ttl, now)),
            Some(false) => return self.fallback.local.renew(renew, now).await,
            None if holds_nothing(id) => return Ok(Renewed::nothing_held(renew.lease_ttl, now)),
            None => {}
        }
        let (args, keys) = (arg::ren::FIELDS, Some(key::ren::FIELDS));
        let mut inv = self.invocation(args, keys, now, shard_of_lease(id));
        inv.set_key(key::ren::lease, self.keys.lease(id));
        RenewArgs {
            lease: id,
            ttl: renew.lease_ttl.map(nanos),
            caller: renew.caller.unwrap_or(""),
        }
        .write(&mut inv);
        match RenewReply::read(self.call(&inv).await?)? {
            RenewReply::NotOwner => Err(EngineError::not_owner(id)),
            RenewReply::Gone(reason) => Err(match not_released(&reason) {
                NotReleased::UnknownLease => EngineError::UnknownLease(id.to_string()),
                why => EngineError::FailedPrecondition(format!(
                    "lease_id: lease {id} can no longer be renewed ({}); acquire a new one",
                    if why == NotReleased::AlreadyReleased {
                        "it was released"
                    } else {
                        "it has expired"
                    }
                )),
            }),
            RenewReply::Renewed { expires, ttl } => Ok(Renewed {
                expires_at: expires.unwrap_or(now),
                ttl: Duration::from_nanos(ttl),
            }),
        }
    }

    async fn report(&self, rp: &ReportPlan<'_>, now: Nanos) -> Result<Reported, EngineError> {
        // A pause reported here holds on this node at once: its slices of the resource go back.
        self.shares.expire(rp.target.resource);
        match self.report_redis(rp, now).await {
            Err(EngineError::Unavailable(why)) => match self.local_target(&rp.target) {
                Some(target) => {
                    let local = ReportPlan {
                        target,
                        ..rp.clone()
                    };
                    self.fallback.local.report(&local, now).await
                }
                None => Err(EngineError::Unavailable(why)),
            },
            other => other,
        }
    }

    async fn levels(&self, plan: &Plan<'_>, now: Nanos) -> Result<LevelsRead, EngineError> {
        let (args, keys) = (arg::lvl::FIELDS, Some(key::lvl::FIELDS));
        let mut inv = self.invocation(args, keys, now, shard_of(plan.resource));
        inv.set_key(key::lvl::resource, self.keys.resource(plan.resource));
        for level in &plan.levels {
            inv.key(self.keys.level(&level.key));
        }
        inv.set(
            arg::lvl::adaptive,
            args::adaptive(plan.rule.adaptive.as_ref()),
        )
        .set(arg::lvl::levels, plan.levels.len());
        super::messages::levels_read(self.call(&inv).await?, now)
    }

    async fn circuit(
        &self,
        target: &BreakerRef<'_>,
        now: Nanos,
    ) -> Result<CircuitView, EngineError> {
        match self.circuit_redis(target, now).await {
            Err(EngineError::Unavailable(why)) => match self.local_target(target) {
                Some(local) => self.fallback.local.circuit(&local, now).await,
                None => Err(EngineError::Unavailable(why)),
            },
            other => other,
        }
    }

    async fn reset_breaker(
        &self,
        target: &BreakerRef<'_>,
        now: Nanos,
    ) -> Result<BreakerState, EngineError> {
        let (shard, rkey, bkey) = self.breaker_keys(target);
        let mut inv = self.invocation(arg::rst::FIELDS, Some(key::rst::FIELDS), now, shard);
        let spec = target
            .rule
            .breaker
            .as_ref()
            .filter(|_| target.key.is_some());
        inv.set_key(key::rst::resource, &rkey)
            .set_key(key::rst::breaker, &bkey)
            .set(arg::rst::breaker, args::breaker(spec));
        let before = reply::state(&text(Some(&self.call(&inv).await?))?);
        tracing::info!(
            resource = target.resource,
            from = before.as_str(),
            "circuit breaker reset by an operator"
        );
        Ok(before)
    }

    async fn force_open(
        &self,
        target: &BreakerRef<'_>,
        duration: Duration,
        now: Nanos,
    ) -> Result<BreakerState, EngineError> {
        let (Some(spec), Some(_)) = (&target.rule.breaker, &target.key) else {
            return Err(EngineError::FailedPrecondition(format!(
                "resource: '{}' has no circuit breaker configured",
                target.resource
            )));
        };
        let (shard, _, bkey) = self.breaker_keys(target);
        let mut inv = self.invocation(arg::frc::FIELDS, Some(key::frc::FIELDS), now, shard);
        inv.set_key(key::frc::breaker, &bkey)
            .set(arg::frc::breaker, args::breaker(Some(spec)))
            .set(arg::frc::duration, nanos(duration));
        let before = reply::state(&text(Some(&self.call(&inv).await?))?);
        tracing::info!(
            resource = target.resource,
            from = before.as_str(),
            ?duration,
            "circuit breaker forced open by an operator"
        );
        Ok(before)
    }

    async fn revoke(&self, lease_id: LeaseId, now: Nanos) -> Result<bool, EngineError> {
        let (args, keys) = (arg::rvk::FIELDS, Some(key::rvk::FIELDS));
        let mut inv = self.invocation(args, keys, now, shard_of_lease(lease_id));
        inv.set_key(key::rvk::lease, self.keys.lease(lease_id))
            .set(arg::rvk::lease, lease_id.to_string());
        Ok(int(Some(&self.call(&inv).await?))? == 1)
    }

    async fn leases(&self, query: &LeaseQuery<'_>) -> Result<(Vec<LeaseView>, bool), EngineError> {
        let only = query.resource.map(shard_of);
        let start = query.after.map_or(0, |c| shard_of_lease(LeaseId(c)));
        let mut out = Vec::new();
        let mut after = query.after.map(LeaseId);
        for shard in start..SHARDS {
            if only.is_some_and(|s| s != shard) {
                after = None;
                continue;
            }
            loop {
                let mut inv = self.invocation(arg::lst::FIELDS, None, 0, shard);
                // The shard's index, for a Cluster to route the call (the script finds it by prefix).
                inv.key(self.keys.ids(shard))
                    .set(
                        arg::lst::after,
                        after
                            .filter(|a| shard_of_lease(*a) == shard)
                            .map_or_else(String::new, |a| a.to_string()),
                    )
                    .set(arg::lst::limit, 256);
                let rows = items(self.call(&inv).await?)?;
                let fetched = rows.len();
                for row in rows {
                    use out::lst as o;
                    let row = Reply::new(row)?;
                    let Ok(id) = row.text(o::lease)?.parse::<LeaseId>() else {
                        continue;
                    };
                    after = Some(id);
                    let resource = row.text(o::resource)?;
                    let rule = row.text(o::rule)?;
                    let keep = query.resource.is_none_or(|r| r == resource)
                        && resource.starts_with(query.prefix)
                        && query.rule.is_none_or(|r| r == rule);
                    if !keep {
                        continue;
                    }
                    if out.len() == query.limit {
                        return Ok((out, true));
                    }
                    let descriptors = row
                        .text(o::descriptors)?
                        .split('\u{1e}')
                        .filter_map(|d| d.split_once(crate::engine::plan::KEY_SEP))
                        .map(|(k, v)| (k.to_owned(), v.to_owned()))
                        .collect();
                    out.push(LeaseView {
                        lease_id: id,
                        resource: crate::engine::Name::Given(resource.as_str().into()),
                        descriptors,
                        permits: row.uint(o::permits)?,
                        expires_at: row.instant(o::expires)?.unwrap_or(0),
                        client_id: Some(row.text(o::client_id)?).filter(|c| !c.is_empty()),
                        owner: Some(row.text(o::owner)?)
                            .filter(|o| !o.is_empty())
                            .map(|o| crate::engine::intern(&o)),
                        probe: !row.text(o::probe)?.is_empty(),
                        cursor: id.0,
                    });
                }
                if fetched < 256 {
                    break;
                }
            }
            after = None;
        }
        Ok((out, false))
    }

    async fn usage(
        &self,
        rules: &Rules,
        query: &UsageQuery<'_>,
        now: Nanos,
    ) -> Result<StoreUsage, EngineError> {
        // Listings read the resource index a batch at a time; the limit bounds what one call reads.
        let limit = query.limit.min(10_000);
        let wanted = |n: &str| {
            n.starts_with(query.prefix)
                && query.after.is_none_or(|a| n > a)
                && match (query.rule, rules.resolve(n)) {
                    (_, None) => false,
                    (None, Some(_)) => true,
                    (Some(want), Some(rule)) => rule.name == want,
                }
        };
        let mut names = Vec::new();
        let mut from = query.after.map(str::to_owned);
        'index: loop {
            let (batch, full) = self.resource_names(query, from.as_deref(), 512).await?;
            for n in batch {
                if !n.starts_with(query.prefix) && n.as_str() > query.prefix {
                    break 'index; // past the prefix's range
                }
                from = Some(n.clone());
                if wanted(&n) {
                    names.push(n);
                    if names.len() > limit {
                        break 'index;
                    }
                }
            }
            if !full {
                break;
            }
        }
        if query.configured {
            // Configured rules with no state yet (exact names; patterns no live resource matched).
            let used: std::collections::HashSet<&'static str> = names
                .iter()
                .filter_map(|n| rules.resolve(n).map(|r| r.name))
                .collect();
            for rule in rules.all() {
                let show = !crate::engine::glob::is_pattern(rule.name) || !used.contains(rule.name);
                if show && wanted(rule.name) {
                    names.push(rule.name.to_owned());
                }
            }
            names.sort();
            names.dedup();
        }
        let more = names.len() > limit;
        names.truncate(limit);
        let page = names;
        let reads = page.iter().filter_map(|n| {
            let rule = rules.resolve(n)?.clone();
            Some(async move { self.usage_of(&rule, n, now).await })
        });
        let mut resources = Vec::new();
        for r in join_all(reads).await {
            resources.push(r?);
        }
        let live_leases = resources.iter().map(|r| r.live_leases).sum();
        Ok(StoreUsage {
            resources,
            more,
            live_keys: 0,
            live_leases,
            request_ids: 0,
            request_ids_dropped: 0,
        })
    }

    async fn hits(&self, plan: &HitPlan<'_>, now: Nanos) -> Result<Hits, EngineError> {
        let Some(first) = plan.hits.first() else {
            return Ok(Hits::default());
        };
        let shard = super::keys::shard_of_key(&first.key);
        let mut inv = self.invocation(arg::hit::FIELDS, None, now, shard);
        let (keys, index) = plan.cells();
        for key in keys {
            inv.key(self.keys.level(key));
        }
        inv.set(arg::hit::counters, plan.hits.len());
        for (hit, cell) in plan.hits.iter().zip(index) {
            let mode = match hit.mode {
                HitMode::Enforced => "enforced",
                HitMode::Quota => "quota",
                HitMode::Shadow => "shadow",
            };
            inv.arg(cell.saturating_add(1))
                .arg(args::rate(hit.spec.rate))
                .arg(hit.permits)
                .arg(mode)
                .arg(if hit.negative { "1" } else { "0" });
        }
        super::messages::hits_read(self.call(&inv).await?)
    }

    async fn refill(&self, keys: &[String], now: Nanos) -> Result<u32, EngineError> {
        let Some(first) = keys.first() else {
            return Ok(0);
        };
        let resource = first
            .split(crate::engine::plan::KEY_SEP)
            .next()
            .unwrap_or(first);
        let mut inv = self.invocation(arg::refill::FIELDS, None, now, shard_of(resource));
        for key in keys {
            inv.key(self.keys.level(key));
        }
        Ok(u32::try_from(uint(Some(&self.call(&inv).await?))?).unwrap_or(u32::MAX))
    }

    async fn sweep(&self, now: Nanos, limit: usize) -> Result<Sweep, EngineError> {
        let local = self.fallback.local.sweep(now, limit).await?;
        if let Err(e) = self.heartbeat().await {
            tracing::debug!(error = %e, "heartbeat not sent");
        }
        // (A Redis refusing steps for want of memory is up, and still sweeps.)
        if self.fallback.is_down() && !self.is_full() {
            return Ok(local);
        }
        for g in self.shares.lapsed(now) {
            self.give(&g, now).await;
        }
        let mut sweep = local;
        let (shards, per_shard) = self.sweep_plan(now, limit);
        let results = if self.settings.cluster.is_empty() {
            vec![self.sweep_shards(&shards, now, per_shard).await]
        } else {
            let runs: Vec<_> = shards.iter().map(|&s| [s]).collect();
            join_all(runs.iter().map(|s| self.sweep_shards(s, now, per_shard))).await
        };
        let mut left = 0;
        let mut failed = None;
        for r in results {
            match r {
                Ok((expired, more)) => {
                    sweep.expired.extend(expired);
                    left |= more;
                }
                Err(e) => failed = Some(e),
            }
        }
        self.backlog.store(left, Ordering::Relaxed);
        if let Some(e) = failed {
            return Err(e);
        }
        sweep.more |= left != 0;
        Ok(sweep)
    }

    async fn evict_idle(&self, _now: Nanos) -> Result<usize, EngineError> {
        // Every key carries a TTL: Redis drops idle state itself.
        Ok(0)
    }

    fn apply(&self, rules: &Rules) -> Result<(), EngineError> {
        super::args::exact_in_lua(rules)?;
        self.fallback.apply(rules)?;
        self.window
            .store(nanos(rules.capacity.idempotency_window), Ordering::Relaxed);
        self.shares.apply(rules.capacity.max_request_ids);
        Ok(())
    }

    async fn close(&self, now: Nanos) {
        let held = self.shares.all_back();
        join_all(held.iter().map(|g| self.give(g, now))).await;
    }

    fn health(&self) -> Option<crate::engine::StoreHealth> {
        let n = |i: usize| self.counts[i].load(Ordering::Relaxed);
        Some(crate::engine::StoreHealth {
            down: self.is_down(),
            evicting: self.is_evicting(),
            nodes: self.nodes(),
            calls: n(0),
            batches: self.batched[0].load(Ordering::Relaxed),
            batched_calls: self.batched[1].load(Ordering::Relaxed),
            errors: [
                ("timeout", n(1)),
                ("busy", n(2)),
                ("error", n(3)),
                ("full", n(4)),
            ],
            fallback_grants: [
                (
                    "fail_open",
                    self.fallback.open_grants.load(Ordering::Relaxed),
                ),
                ("local", self.fallback.local_grants.load(Ordering::Relaxed)),
            ],
            latency: self.latency.snapshot(),
            shares: self.shares.stats(),
        })
    }
}
