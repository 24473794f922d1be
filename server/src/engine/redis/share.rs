//! Capacity leasing (`local_share`): the slices of levels' permits this node holds, and how big a slice it
//! asks for. A slice is taken from Redis in one step (`take` in `lua/steps.lua`: the request's permits and
//! up to `want` more, debited at every level before any is granted), granted from here until it runs out or
//! its `ttl` passes, and what is left then goes back (with the next take, or by a timer when none comes).
//! So the fleet never admits more than its levels allow; a node that dies loses at most its slice.
//!
//! How big: a node asks for what it granted over the last slice's life, scaled to one `ttl`, at most
//! `max_fraction` of the smallest burst among the levels; a key whose traffic would not use two permits in
//! a `ttl` gets no slice (each request is one step, as without `local_share`). A denial is remembered until
//! the slice it asked for could be taken whole (at most one `ttl`: another node may give permits back
//! sooner), so a node over its limit asks Redis about once per slice, not once per request; the levels keep
//! what refills meanwhile, so the fleet loses no permits by it. A denial's `retry_after` is when this node
//! will grant again at the soonest: the request's own wait, or up to the time its slice refills (at most
//! one `ttl` more). One take per key is in flight at a time; requests that find the slice empty
//! meanwhile wait for it.

// Wire-facing: every value here may come from a request, so arithmetic is checked or saturating.
#![cfg_attr(not(test), deny(clippy::arithmetic_side_effects))]

use std::{
    hash::{BuildHasher, Hash, Hasher},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use dashmap::DashMap;

use super::{
    Call, RedisStore, args,
    keys::{held_nothing_in, shard_of},
    messages::{AcquireReply, Figures, Taken},
    protocol::{arg, key},
    store::{acquired, down},
};
use crate::{
    clock::{Nanos, nanos},
    engine::{
        Decision, EngineError, HeldSlice, LeaseId, LocalShare, Plan, ShareStats,
        policy::request_id_conflict,
    },
};

/// Most keys with slice state on one node; past it, a key's requests are single steps.
const MAX_KEYS: usize = 100_000;

/// A key with no slice and no request for this long is forgotten.
const IDLE: Nanos = 60_000_000_000;

/// The slices this node holds, per plan (the levels' keys), and the grants it remembers by request_id.
#[derive(Default)]
pub struct Shares {
    keys: DashMap<u64, Arc<Share>>,
    hasher: std::hash::RandomState,
    /// Grants by the hash of (resource, request_id); each holds both, so a hash shared by two is told apart.
    replays: DashMap<u64, Remembered>,
    max_replays: AtomicUsize,
    /// Slices taken (steps that took more than their request), permits taken in them beyond the requests,
    /// permits given back, requests answered here without Redis.
    counts: [AtomicU64; 4],
    /// The engine's clock at the last take or sweep (for the figures `stats` shows, and a timer's give-back).
    now: AtomicU64,
}

/// One plan's slice on this node.
pub struct Share {
    /// The resource and its levels' keys (told apart from another plan's with the same hash).
    pub resource: Arc<str>,
    levels: Box<[Box<str>]>,
    /// The rule it was taken under.
    pub rule: &'static str,
    state: Mutex<Slice>,
    /// Held while a take is in flight (by the task that makes it, so a cancelled caller's take is still
    /// recorded).
    pub(super) taking: Arc<tokio::sync::Mutex<()>>,
}

/// What a [`Share`] holds.
#[derive(Debug, Clone, Default)]
struct Slice {
    /// Permits left to grant here.
    tokens: u64,
    /// Grants from it until then (engine clock).
    until: Nanos,
    /// When Redis took it (ms since the epoch; a window takes permits back only while that window counts).
    taken_at_ms: u64,
    /// Its permits beyond the request that took it.
    extra: u64,
    /// The take's own request.
    first: u64,
    /// When it was taken (engine clock); 0: never.
    taken_at: Nanos,
    /// Permits beyond its request the next take asks for.
    want: u64,
    /// Bumped by every take, so a timer gives back only the slice it was set for.
    generation: u64,
    /// The figures Redis answered with the take, and when the levels will be full.
    figures: Figures,
    reset_at: Nanos,
    /// Requests of at least `denied_permits` are denied here until `denied_until` (the last denial's wait).
    denied: Option<Denied>,
    /// The last request (engine clock), for forgetting idle keys.
    used_at: Nanos,
    /// The levels' Redis keys and rates the last take named (a give-back names them again).
    call: Option<CallParts>,
}

#[derive(Debug, Clone)]
struct Denied {
    /// Denied here until then: the wait, at most one `ttl` (another node may give permits back sooner).
    recheck_at: Nanos,
    /// The wait's end.
    until: Nanos,
    permits: u64,
    reason: String,
    level: i64,
}

/// A request answered from this node's slice.
#[derive(Debug, Clone, PartialEq)]
pub enum Local {
    /// Granted from the slice: the figures to answer with.
    Granted(Figures),
    /// Denied as the last take was: its reason, the wait left, the level.
    Denied {
        /// `rate_limited` or `paused`.
        reason: String,
        /// The wait left.
        retry_after: Nanos,
        /// The level that denied (-1: the pause).
        level: i64,
        /// The figures as last read.
        figures: Figures,
    },
}

/// What a take asks Redis for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ask {
    /// Permits beyond the request.
    pub want: u64,
    /// Permits of the last slice given back, and when (ms since the epoch) it was taken.
    pub give: u64,
    /// See `give`.
    pub given_at_ms: u64,
}

/// The levels' Redis keys and rates a take names (a give-back names them again).
pub type CallParts = Arc<(Vec<String>, Vec<String>)>;

/// A slice's leftovers on their way back.
#[derive(Debug, Clone)]
pub struct GiveBack {
    /// The resource.
    pub resource: Arc<str>,
    /// The permits and when they were taken (ms since the epoch).
    pub permits: u64,
    /// See `permits`.
    pub taken_at_ms: u64,
    /// The levels' Redis keys and rates.
    pub call: CallParts,
}

/// A grant remembered by its request_id.
#[derive(Debug, Clone)]
struct Remembered {
    resource: Box<str>,
    request_id: Box<str>,
    fingerprint: u64,
    /// Claimed by a request being decided now (its grant is not known yet).
    pending: bool,
    lease: LeaseId,
    expires_at: Nanos,
    ttl: Duration,
    figures: Figures,
    forget_at: Nanos,
}

/// A request_id as a grant is remembered by: its resource, the id, and the request's fingerprint.
#[derive(Debug, Clone)]
pub struct RecallKey {
    resource: Box<str>,
    request_id: Box<str>,
    fingerprint: u64,
}

impl RecallKey {
    /// `plan`'s, when it has a request_id.
    fn of(plan: &Plan<'_>) -> Option<Self> {
        plan.request_id.map(|id| Self {
            resource: Box::from(plan.resource),
            request_id: Box::from(id),
            fingerprint: plan.fingerprint,
        })
    }
}

/// What claiming a request_id found.
#[derive(Debug, Clone, PartialEq)]
pub enum Claimed {
    /// Nothing live: the request is decided now, its claim (by this hash) held until then.
    Mine(u64),
    /// Its grant.
    Replay(Replay),
    /// Another request with it is being decided now.
    Pending,
    /// It was granted, or is claimed, with other parameters.
    Conflict,
    /// Not remembered here, and no room to: the request is one Redis step (Redis remembers it).
    Full,
}

/// A claim on a request_id while its request is decided: remembers the grant, or lets go when dropped
/// without one (a denial, an error, a caller gone).
pub struct ClaimGuard {
    store: RedisStore,
    key: RecallKey,
    hash: u64,
    /// False once the grant is remembered.
    held: bool,
}

impl ClaimGuard {
    /// The request was granted `replay`: remembered for the window.
    fn granted(mut self, replay: &Replay, now: Nanos) {
        let window = self.store.window.load(Ordering::Relaxed);
        self.store.shares.remember(&self.key, replay, now, window);
        self.held = false;
    }
}

impl Drop for ClaimGuard {
    fn drop(&mut self) {
        if self.held {
            self.store.shares.unclaim(self.hash, &self.key);
        }
    }
}

/// A remembered grant, replayed.
#[derive(Debug, Clone, PartialEq)]
pub struct Replay {
    /// The lease it was granted.
    pub lease: LeaseId,
    /// Its expiry and TTL as granted.
    pub expires_at: Nanos,
    /// See `expires_at`.
    pub ttl: Duration,
    /// Its figures.
    pub figures: Figures,
}

impl Shares {
    /// The share of `plan`'s levels, made on first use; `None` when this node holds as many keys as it may
    /// (or two plans' keys hash alike): the request is then a single step.
    pub fn of(&self, plan: &Plan<'_>, now: Nanos) -> Option<Arc<Share>> {
        let mut h = self.hasher.build_hasher();
        plan.resource.hash(&mut h);
        for l in &plan.levels {
            l.key.hash(&mut h);
        }
        let hash = h.finish();
        if let Some(s) = self.keys.get(&hash) {
            return s.is_of(plan).then(|| s.clone());
        }
        if self.keys.len() >= MAX_KEYS {
            return None;
        }
        let share = self
            .keys
            .entry(hash)
            .or_insert_with(|| {
                Arc::new(Share {
                    resource: Arc::from(plan.resource),
                    levels: plan.levels.iter().map(|l| Box::from(&*l.key)).collect(),
                    rule: plan.rule.name,
                    state: Mutex::new(Slice {
                        used_at: now,
                        ..Slice::default()
                    }),
                    taking: Arc::default(),
                })
            })
            .clone();
        share.is_of(plan).then_some(share)
    }

    /// Sets how many request_ids may be remembered.
    pub fn apply(&self, max_request_ids: usize) {
        self.max_replays.store(max_request_ids, Ordering::Relaxed);
        // A reload may change the levels: every slice is given back at its next take.
        for s in &self.keys {
            s.expire();
        }
    }

    /// Claims `key`'s request_id for a request decided now, unless a live grant or claim has it or this
    /// node remembers as many as it may (even after forgetting what lapsed).
    pub fn claim(&self, key: &RecallKey, now: Nanos, window: Nanos) -> Claimed {
        use dashmap::mapref::entry::Entry;
        let hash = self.replay_key(&key.resource, &key.request_id);
        let max = self.max_replays.load(Ordering::Relaxed);
        if self.replays.len() >= max && !self.replays.contains_key(&hash) {
            self.replays.retain(|_, r| r.forget_at > now);
            if self.replays.len() >= max {
                return Claimed::Full;
            }
        }
        let mine = Remembered {
            resource: key.resource.clone(),
            request_id: key.request_id.clone(),
            fingerprint: key.fingerprint,
            pending: true,
            lease: LeaseId(0),
            expires_at: 0,
            ttl: Duration::ZERO,
            figures: Figures::default(),
            forget_at: now.saturating_add(window),
        };
        match self.replays.entry(hash) {
            Entry::Occupied(mut o) => {
                let r = o.get();
                let same = *r.resource == *key.resource && *r.request_id == *key.request_id;
                if same && r.forget_at > now {
                    if r.fingerprint != key.fingerprint {
                        return Claimed::Conflict;
                    }
                    if r.pending {
                        return Claimed::Pending;
                    }
                    return Claimed::Replay(Replay {
                        lease: r.lease,
                        expires_at: r.expires_at,
                        ttl: r.ttl,
                        figures: r.figures,
                    });
                }
                // Lapsed (or another id of the same hash, forgotten for this one).
                o.insert(mine);
            }
            Entry::Vacant(v) => {
                v.insert(mine);
            }
        }
        Claimed::Mine(hash)
    }

    /// Lets go of a claim that granted nothing.
    fn unclaim(&self, hash: u64, key: &RecallKey) {
        self.replays.remove_if(&hash, |_, r| {
            r.pending && *r.resource == *key.resource && *r.request_id == *key.request_id
        });
    }

    fn replay_key(&self, resource: &str, request_id: &str) -> u64 {
        let mut h = self.hasher.build_hasher();
        resource.hash(&mut h);
        request_id.hash(&mut h);
        h.finish()
    }

    /// Remembers a grant for `key`'s request_id (for `window`).
    pub fn remember(&self, key: &RecallKey, replay: &Replay, now: Nanos, window: Nanos) {
        self.replays.insert(
            self.replay_key(&key.resource, &key.request_id),
            Remembered {
                resource: key.resource.clone(),
                request_id: key.request_id.clone(),
                fingerprint: key.fingerprint,
                pending: false,
                lease: replay.lease,
                expires_at: replay.expires_at,
                ttl: replay.ttl,
                figures: replay.figures,
                forget_at: now.saturating_add(window),
            },
        );
    }

    /// The engine's clock at the last take or sweep.
    pub fn now(&self) -> Nanos {
        self.now.load(Ordering::Relaxed)
    }

    /// Notes the engine's clock (a take is made at `now`).
    pub fn at(&self, now: Nanos) {
        self.now.fetch_max(now, Ordering::Relaxed);
    }

    /// Counts a request answered here.
    pub fn count_local(&self) {
        self.counts[3].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a take's slice and what it gave back.
    pub fn count_take(&self, extra: u64, given: u64) {
        if extra > 0 {
            self.counts[0].fetch_add(1, Ordering::Relaxed);
            self.counts[1].fetch_add(extra, Ordering::Relaxed);
        }
        self.counts[2].fetch_add(given, Ordering::Relaxed);
    }

    /// Every slice of `resource` is given back at its next take (a pause reported here applies at once).
    pub fn expire(&self, resource: &str) {
        for s in self.keys.iter().filter(|s| &*s.resource == resource) {
            s.expire();
        }
    }

    /// Slices whose time is up with permits left (to give back), and keys idle long enough forgotten;
    /// lapsed request_ids forgotten.
    pub fn lapsed(&self, now: Nanos) -> Vec<GiveBack> {
        self.at(now);
        let mut out = Vec::new();
        self.keys.retain(|_, s| {
            let lapsed = {
                let st = s.lock();
                st.tokens > 0 && st.until <= now
            };
            if lapsed {
                out.extend(s.give_back(None));
            }
            let st = s.lock();
            st.tokens > 0 || now.saturating_sub(st.used_at) < IDLE
        });
        self.replays.retain(|_, r| r.forget_at > now);
        out
    }

    /// Every slice's leftovers, to give back (this node stops).
    pub fn all_back(&self) -> Vec<GiveBack> {
        self.keys.iter().filter_map(|s| s.give_back(None)).collect()
    }

    /// What this node holds and did.
    pub fn stats(&self) -> ShareStats {
        let now = self.now.load(Ordering::Relaxed);
        let mut held: Vec<HeldSlice> = self
            .keys
            .iter()
            .filter_map(|s| {
                let st = s.lock();
                (st.tokens > 0 && st.until > now).then(|| HeldSlice {
                    resource: s.resource.clone(),
                    levels: s
                        .levels
                        .iter()
                        .skip(1)
                        .map(|l| l.replace('\u{1f}', "="))
                        .collect::<Vec<_>>()
                        .join(","),
                    tokens: st.tokens,
                    ttl_left: st.until.saturating_sub(now),
                    want: st.want,
                })
            })
            .collect();
        held.sort_by(|a, b| {
            b.tokens
                .cmp(&a.tokens)
                .then_with(|| a.resource.cmp(&b.resource))
        });
        let n = |i: usize| self.counts[i].load(Ordering::Relaxed);
        ShareStats {
            held,
            keys: self.keys.len(),
            slices: n(0),
            taken: n(1),
            given_back: n(2),
            local: n(3),
        }
    }
}

impl Share {
    fn lock(&self) -> std::sync::MutexGuard<'_, Slice> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn is_of(&self, plan: &Plan<'_>) -> bool {
        *self.resource == *plan.resource
            && self.levels.len() == plan.levels.len()
            && self
                .levels
                .iter()
                .zip(&plan.levels)
                .all(|(a, b)| **a == *b.key)
    }

    /// Answers `permits` from the slice when it can: granted while the slice is live and holds them, denied
    /// while the last denial's wait lasts (for at least as many permits). `None`: a take decides.
    pub fn local(&self, permits: u64, now: Nanos) -> Option<Local> {
        let mut st = self.lock();
        st.used_at = now;
        if let Some(d) = &st.denied
            && now < d.recheck_at
            && permits >= d.permits
        {
            return Some(Local::Denied {
                reason: d.reason.clone(),
                retry_after: d.until.saturating_sub(now),
                level: d.level,
                figures: st.figures(now),
            });
        }
        if now < st.until && st.tokens >= permits {
            st.tokens = st.tokens.saturating_sub(permits);
            return Some(Local::Granted(st.figures(now)));
        }
        None
    }

    /// Its time is up now: what it holds goes back with the next take.
    fn expire(&self) {
        let mut st = self.lock();
        st.until = 0;
        st.denied = None;
    }

    /// What the next take asks for, `permits` its request, under `share` at most `max` permits in all: what
    /// was granted over the last slice's life scaled to one `ttl`, none when that is under two permits.
    /// The slice's leftovers come out of it to be given back (so no one grants them meanwhile).
    pub fn ask(&self, permits: u64, share: LocalShare, max: u64, now: Nanos) -> Ask {
        let mut st = self.lock();
        let ttl = nanos(share.ttl).max(1);
        let give = std::mem::take(&mut st.tokens);
        let want = if st.taken_at == 0 {
            0
        } else {
            let used = st.first.saturating_add(st.extra.saturating_sub(give));
            let elapsed = now.saturating_sub(st.taken_at).max(1);
            let per_ttl = u128::from(used)
                .saturating_mul(u128::from(ttl))
                .checked_div(u128::from(elapsed))
                .unwrap_or(0);
            let per_ttl = u64::try_from(per_ttl).unwrap_or(u64::MAX);
            if per_ttl < 2 { 0 } else { per_ttl }
        };
        st.want = want.min(max.saturating_sub(permits));
        Ask {
            want: st.want,
            give,
            given_at_ms: st.taken_at_ms,
        }
    }

    /// Records a take's answer (for `permits`, at `now`, slices living `ttl`); the generation of the slice
    /// it made, if any permits are left in it.
    pub fn record(&self, taken: &Taken, permits: u64, ttl: Duration, now: Nanos) -> Option<u64> {
        let mut st = self.lock();
        st.figures = taken.figures;
        st.reset_at = now.saturating_add(taken.figures.reset_after);
        match taken.taken {
            Some(n) => {
                let extra = n.saturating_sub(permits);
                st.generation = st.generation.wrapping_add(1);
                st.tokens = extra;
                st.extra = extra;
                st.first = permits;
                st.taken_at = now;
                st.taken_at_ms = taken.at_ms;
                st.until = now.saturating_add(nanos(ttl));
                st.denied = None;
                (extra > 0).then_some(st.generation)
            }
            None => {
                let wait = taken.wait(ttl);
                st.denied = Some(Denied {
                    recheck_at: now.saturating_add(wait.min(nanos(ttl))),
                    until: now.saturating_add(wait),
                    permits: if taken.level < 0 { 0 } else { permits },
                    reason: taken.reason.clone(),
                    level: taken.level,
                });
                None
            }
        }
    }

    /// The slice of `generation` (any, when `None`), if it is still the one held and has permits left:
    /// they come out to be given back.
    pub fn give_back(&self, generation: Option<u64>) -> Option<GiveBack> {
        let mut st = self.lock();
        if generation.is_some_and(|g| g != st.generation) || st.tokens == 0 {
            return None;
        }
        let call = st.call.clone()?;
        st.until = 0;
        Some(GiveBack {
            resource: self.resource.clone(),
            permits: std::mem::take(&mut st.tokens),
            taken_at_ms: st.taken_at_ms,
            call,
        })
    }

    /// Notes the Redis keys and rates a take names.
    pub fn set_call(&self, call: CallParts) {
        self.lock().call = Some(call);
    }
}

impl Slice {
    /// The figures a request answered here carries: the levels as the last take left them, plus what this
    /// node still holds of them.
    fn figures(&self, now: Nanos) -> Figures {
        let f = self.figures;
        Figures {
            remaining: f.remaining.saturating_add(self.tokens).min(f.limit),
            reset_after: self.reset_at.saturating_sub(now),
            ..f
        }
    }
}

/// The largest slice for `plan` under `share`: `max_fraction` of the smallest burst among its levels.
pub fn max_slice(plan: &Plan<'_>, share: LocalShare) -> u64 {
    let burst = plan
        .levels
        .iter()
        .filter_map(|l| l.spec(plan.rule).rate.map(|r| r.burst))
        .min()
        .unwrap_or(0);
    // A fraction of a count: rounding down is the bound the config promises.
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let max = (burst as f64 * share.max_fraction).floor() as u64;
    max
}

impl RedisStore {
    /// An acquire of a `local_share` resource whose plan holds nothing: a request_id's remembered grant,
    /// else an answer from this node's slice, else a take (one at a time per key; the others wait for it and
    /// then look at the slice again).
    pub(super) async fn acquire_shared(
        &self,
        plan: &Plan<'_>,
        share: LocalShare,
        now: Nanos,
    ) -> Result<Decision, EngineError> {
        let Some(entry) = self.shares.of(plan, now) else {
            return self.acquire_one_step(plan, now).await;
        };
        let mut claim = match self.claim(plan, &entry, now).await {
            Ok(Some(claim)) => claim,
            Ok(None) => return self.acquire_one_step(plan, now).await,
            Err(answer) => return answer,
        };
        if let Some(d) = self.answer_here(plan, &entry, now, &mut claim) {
            return d;
        }
        if self.fallback.is_down() {
            return self.fallback.acquire(plan, now, down()).await;
        }
        let taking = entry.taking.clone().lock_owned().await;
        if let Some(d) = self.answer_here(plan, &entry, now, &mut claim) {
            return d;
        }
        self.shares.at(now);
        let ask = entry.ask(plan.permits, share, max_slice(plan, share), now);
        let (inv, call) = self.take_call(plan, ask, now);
        entry.set_call(call);
        let (store, e, permits) = (self.clone(), entry.clone(), plan.permits);
        let replay = Replay {
            lease: held_nothing_in(shard_of(plan.resource), self.random()),
            expires_at: now.saturating_add(nanos(plan.ttl)),
            ttl: plan.ttl,
            figures: Figures::default(),
        };
        let granting = replay.clone();
        // Carried by a task holding the key's turn, so the answer is recorded even if this caller goes, and
        // a grant's request_id is remembered before the next request for the key looks.
        let task = tokio::spawn(async move {
            let _turn = taking;
            let taken = store.call(&inv).await.and_then(Taken::read);
            if let Ok(t) = &taken {
                store
                    .shares
                    .count_take(t.taken.map_or(0, |n| n.saturating_sub(permits)), ask.give);
                if let (Some(_), Some(claim)) = (t.taken, claim) {
                    let granted = Replay {
                        figures: t.figures,
                        ..granting
                    };
                    claim.granted(&granted, now);
                }
                if let Some(generation) = e.record(t, permits, share.ttl, now) {
                    store.give_back_after(e, generation, share.ttl);
                }
            }
            taken
        });
        let taken = task
            .await
            .map_err(|e| EngineError::Unavailable(format!("redis: a take did not finish: {e}")))?;
        match taken {
            Ok(t) => self.took(plan, t, replay, share.ttl, now).await,
            Err(e @ EngineError::Unavailable(_)) => self.fallback.acquire(plan, now, e).await,
            Err(e) => Err(e),
        }
    }

    /// Claims `plan`'s request_id (none without one) while it is decided here: `Err` with the answer when
    /// this node granted it already (replayed) or with other parameters (a conflict); `Ok(None)` when this
    /// node has no room to remember it. A claim another request holds is waited out (it is decided within
    /// the key's turn).
    async fn claim(
        &self,
        plan: &Plan<'_>,
        entry: &Share,
        now: Nanos,
    ) -> Result<Option<Option<ClaimGuard>>, Result<Decision, EngineError>> {
        let Some(key) = RecallKey::of(plan) else {
            return Ok(Some(None));
        };
        let window = self.window.load(Ordering::Relaxed);
        for _ in 0..10_000 {
            match self.shares.claim(&key, now, window) {
                Claimed::Mine(hash) => {
                    return Ok(Some(Some(ClaimGuard {
                        store: self.clone(),
                        key,
                        hash,
                        held: true,
                    })));
                }
                Claimed::Full => return Ok(None),
                Claimed::Replay(r) => return Err(self.granted(plan, &r, true)),
                Claimed::Conflict => {
                    return Err(Err(request_id_conflict(
                        plan.resource,
                        plan.request_id.unwrap_or_default(),
                    )));
                }
                Claimed::Pending => {
                    // Decided within the key's turn (a take), or at once (from the slice).
                    drop(entry.taking.lock().await);
                    tokio::task::yield_now().await;
                }
            }
        }
        Err(Err(EngineError::Unavailable(format!(
            "request_id '{}' is still being decided: retry",
            plan.request_id.unwrap_or_default()
        ))))
    }

    /// `plan` answered from `entry`'s slice or remembered denial, if it can be (a grant remembered by the
    /// request_id `claim` holds).
    fn answer_here(
        &self,
        plan: &Plan<'_>,
        entry: &Share,
        now: Nanos,
        claim: &mut Option<ClaimGuard>,
    ) -> Option<Result<Decision, EngineError>> {
        let local = entry.local(plan.permits, now)?;
        self.shares.count_local();
        Some(match local {
            Local::Granted(figures) => {
                let replay = Replay {
                    lease: held_nothing_in(shard_of(plan.resource), self.random()),
                    expires_at: now.saturating_add(nanos(plan.ttl)),
                    ttl: plan.ttl,
                    figures,
                };
                if let Some(claim) = claim.take() {
                    claim.granted(&replay, now);
                }
                self.granted(plan, &replay, false)
            }
            Local::Denied {
                reason,
                retry_after,
                level,
                figures,
            } => self.denied(plan, &reason, retry_after, level, figures, now),
        })
    }

    /// The decision a take's answer makes.
    async fn took(
        &self,
        plan: &Plan<'_>,
        t: Taken,
        replay: Replay,
        ttl: Duration,
        now: Nanos,
    ) -> Result<Decision, EngineError> {
        if t.taken.is_none() {
            let wait = t.wait(ttl);
            return self.denied(plan, &t.reason, wait, t.level, t.figures, now);
        }
        self.index(plan.resource).await;
        self.granted(
            plan,
            &Replay {
                figures: t.figures,
                ..replay
            },
            false,
        )
    }

    fn granted(
        &self,
        plan: &Plan<'_>,
        r: &Replay,
        replayed: bool,
    ) -> Result<Decision, EngineError> {
        let answer = AcquireReply::Granted {
            lease: r.lease,
            expires: Some(r.expires_at),
            replayed,
            ttl: Some(nanos(r.ttl)),
            figures: r.figures,
            nothing_held: true,
            transitions: Vec::new(),
            shadow: None,
            bypassed: false,
        };
        acquired(plan, answer, r.expires_at.saturating_sub(nanos(r.ttl)))
    }

    fn denied(
        &self,
        plan: &Plan<'_>,
        reason: &str,
        retry_after: Nanos,
        level: i64,
        figures: Figures,
        now: Nanos,
    ) -> Result<Decision, EngineError> {
        let answer = AcquireReply::Denied {
            reason: reason.to_owned(),
            retry_after,
            level,
            figures,
            transitions: Vec::new(),
            reserve: false,
        };
        acquired(plan, answer, now)
    }

    /// The take step for `plan` asking `ask`, and the levels' keys and rates it names.
    fn take_call(&self, plan: &Plan<'_>, ask: Ask, now: Nanos) -> (Call, CallParts) {
        let keys: Vec<String> = plan
            .levels
            .iter()
            .map(|l| self.keys.level(&l.key))
            .collect();
        let rates: Vec<String> = plan
            .levels
            .iter()
            .map(|l| args::rate(l.spec(plan.rule).rate))
            .collect();
        let call = Arc::new((keys, rates));
        let inv = self.take_inv(plan.resource, plan.permits, ask, &call, now);
        (inv, call)
    }

    fn take_inv(
        &self,
        resource: &str,
        permits: u64,
        ask: Ask,
        call: &(Vec<String>, Vec<String>),
        now: Nanos,
    ) -> Call {
        let shard = shard_of(resource);
        let mut inv = Call::new(arg::take::FIELDS, Some(key::take::FIELDS));
        inv.set(arg::NOW, self.now_arg(now))
            .set(arg::PREFIX, self.keys.shard(shard))
            .in_shard(shard);
        inv.set_key(key::take::resource, self.keys.resource(resource))
            .set(arg::take::permits, permits)
            .set(arg::take::want, ask.want)
            .set(arg::take::give, ask.give)
            .set(arg::take::given_at, ask.given_at_ms)
            .set(arg::take::levels, call.0.len());
        for (k, r) in call.0.iter().zip(&call.1) {
            inv.key(k).arg(r);
        }
        inv
    }

    /// Gives back what is left of `entry`'s slice `generation` when its time is up, unless a take has
    /// replaced it by then.
    fn give_back_after(&self, entry: Arc<Share>, generation: u64, ttl: Duration) {
        let store = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(ttl).await;
            let _turn = entry.taking.lock().await;
            if let Some(g) = entry.give_back(Some(generation)) {
                store.give(&g, store.shares.now()).await;
            }
        });
    }

    /// Gives `g`'s permits back to its levels (lost if Redis cannot be reached: the bucket refills them).
    pub(super) async fn give(&self, g: &GiveBack, now: Nanos) {
        let ask = Ask {
            want: 0,
            give: g.permits,
            given_at_ms: g.taken_at_ms,
        };
        let inv = self.take_inv(&g.resource, 0, ask, &g.call, now);
        match self.call(&inv).await {
            Ok(_) => self.shares.count_take(0, g.permits),
            Err(e) => {
                tracing::debug!(error = %e, permits = g.permits, "a slice's permits were not given back")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Nanos = 1_000_000;

    fn share() -> Share {
        Share {
            resource: Arc::from("hot"),
            levels: Box::new([Box::from("hot")]),
            rule: "hot",
            state: Mutex::new(Slice::default()),
            taking: Arc::default(),
        }
    }

    fn granted(n: u64) -> Taken {
        Taken {
            taken: Some(n),
            reason: String::new(),
            retry_after: 0,
            level: 0,
            figures: Figures {
                remaining: 100,
                limit: 1000,
                ..Figures::default()
            },
            at_ms: 1,
            refill_after: 0,
        }
    }

    const SHARE: LocalShare = LocalShare {
        max_fraction: 0.1,
        ttl: Duration::from_millis(200),
    };

    /// Grants `n` from the slice at `now`, one by one; how many it had.
    fn drain(s: &Share, n: u64, now: Nanos) -> u64 {
        (0..n)
            .filter(|_| matches!(s.local(1, now), Some(Local::Granted(_))))
            .count() as u64
    }

    #[test]
    fn a_slice_grows_while_drained_fast_shrinks_when_idle_and_is_none_for_little_traffic() {
        let s = share();
        // The first take asks for the request alone.
        assert_eq!(s.ask(1, SHARE, 100, 1_000 * MS).want, 0);
        s.record(&granted(1), 1, SHARE.ttl, 1_000 * MS);
        // One request 10 ms later: 2 permits in 10 ms is 40 per ttl.
        assert_eq!(s.local(1, 1_010 * MS), None, "nothing left in it");
        let a = s.ask(1, SHARE, 100, 1_010 * MS);
        assert_eq!(a.want, 20, "one permit per 10 ms is 20 per 200 ms");
        s.record(&granted(21), 1, SHARE.ttl, 1_010 * MS);
        // Drained in 5 ms: asks for the most it may (99 beyond the request).
        assert_eq!(drain(&s, 25, 1_015 * MS), 20);
        assert_eq!(s.ask(1, SHARE, 100, 1_015 * MS).want, 99);
        s.record(&granted(100), 1, SHARE.ttl, 1_015 * MS);
        // Then traffic falls: 3 permits over a second, the slice's time long up: what is left goes back,
        // and the next slice is none (under two permits per ttl).
        assert_eq!(drain(&s, 3, 1_100 * MS), 3);
        let idle = s.ask(1, SHARE, 100, 2_015 * MS);
        assert_eq!(idle.give, 96, "the leftovers go back with the take");
        assert_eq!(idle.want, 0, "4 permits in a second: under two per ttl");
    }

    /// A flood of names: past MAX_KEYS a key gets no slice state (its requests are single steps), and keys
    /// idle for a minute with nothing held are forgotten, making room again.
    #[test]
    fn a_flood_of_keys_is_capped_and_idle_keys_are_forgotten() {
        let rules = crate::config::load_str(
            "[[resources]]\nname = \"t.*\"\nrate = { limit = 9 }\nlocal_share = { max_fraction = 0.5 }\n",
        )
        .expect("config")
        .rules;
        let shares = Shares::default();
        let of = |name: String, now: Nanos| {
            let req = crate::engine::Acquire {
                resource: name,
                permits: 1,
                ..Default::default()
            };
            let (rule, how) = rules.resolve_kind(&req.resource).expect("rule");
            let plan = Plan::build(rule, how, &req).expect("plan");
            shares.of(&plan, now).is_some()
        };
        for i in 0..MAX_KEYS {
            assert!(of(format!("t.{i}"), 0), "key {i}");
        }
        assert!(!of("t.one-too-many".into(), 0), "capped");
        assert!(of("t.7".into(), 0), "a key already held keeps its state");
        assert!(shares.lapsed(IDLE - 1).is_empty());
        assert_eq!(shares.stats().keys, MAX_KEYS, "not idle for a minute yet");
        assert!(
            shares.lapsed(IDLE + 1).is_empty(),
            "nothing held to give back"
        );
        assert_eq!(shares.stats().keys, 0, "idle keys forgotten");
        assert!(of("t.one-too-many".into(), IDLE + 1), "room again");
    }

    #[test]
    fn a_denial_is_remembered_until_the_slice_could_refill_at_most_a_ttl() {
        let s = share();
        let denied = Taken {
            taken: None,
            reason: "rate_limited".into(),
            retry_after: 10 * MS,
            refill_after: 50 * MS,
            ..granted(0)
        };
        s.record(&denied, 1, SHARE.ttl, 0);
        match s.local(1, 20 * MS) {
            Some(Local::Denied { retry_after, .. }) => assert_eq!(retry_after, 30 * MS),
            other => panic!("remembered: {other:?}"),
        }
        assert_eq!(
            s.local(1, 50 * MS),
            None,
            "asked again once the slice could refill"
        );
        let long = Taken {
            retry_after: 5_000 * MS,
            refill_after: 9_000 * MS,
            ..denied
        };
        s.record(&long, 1, SHARE.ttl, 1_000 * MS);
        match s.local(1, 1_100 * MS) {
            Some(Local::Denied { retry_after, .. }) => assert_eq!(retry_after, 4_900 * MS),
            other => panic!("remembered: {other:?}"),
        }
        assert_eq!(
            s.local(1, 1_200 * MS),
            None,
            "another node may give back: asked again after a ttl"
        );
    }
}
