//! The lease table: who holds what, until when. Expiry is indexed per shard so the sweeper reclaims
//! expired leases without scanning every lease: leases of one TTL are granted in expiry order, so almost
//! every entry appends to a queue (O(1)); an entry earlier than the queue's last (a shorter TTL, a renewal)
//! goes to a min-heap beside it. A renewal pushes a new entry and the stale one is skipped when it surfaces. Leases that expire (or are revoked) leave a tombstone for a while, so a late
//! release can say it expired; released leases leave none (their ids are recognised as issued instead).

use std::{
    cmp::Reverse,
    collections::{BinaryHeap, VecDeque},
    hash::{BuildHasherDefault, Hasher},
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use dashmap::DashMap;
use smallvec::SmallVec;

use super::table::lock;
use crate::{
    clock::Nanos,
    engine::{EngineError, LeaseId, NotReleased},
};

const SHARDS: usize = 16;

/// One shard of the expiry index.
type ExpiryShard = Mutex<Expiries>;

/// Expiry entries: in order in `ordered`, out of order in `early`.
#[derive(Debug, Default)]
struct Expiries {
    ordered: VecDeque<(Nanos, LeaseId)>,
    early: BinaryHeap<Reverse<(Nanos, LeaseId)>>,
}

impl Expiries {
    fn push(&mut self, at: Nanos, id: LeaseId) {
        if self.ordered.back().is_none_or(|&(last, _)| last <= at) {
            self.ordered.push_back((at, id));
        } else {
            self.early.push(Reverse((at, id)));
        }
    }

    /// True when an entry is due by `now`.
    fn has_due(&self, now: Nanos) -> bool {
        self.ordered.front().is_some_and(|e| e.0 <= now)
            || self.early.peek().is_some_and(|r| r.0.0 <= now)
    }

    /// The earliest entry due by `now`, removed.
    fn pop_due(&mut self, now: Nanos) -> Option<LeaseId> {
        let ordered = self.ordered.front().filter(|e| e.0 <= now).copied();
        let early = self.early.peek().map(|r| r.0).filter(|e| e.0 <= now);
        match (ordered, early) {
            (Some(o), Some(e)) if e.0 < o.0 => self.early.pop().map(|r| r.0.1),
            (Some(_), _) => self.ordered.pop_front().map(|e| e.1),
            (None, Some(_)) => self.early.pop().map(|r| r.0.1),
            (None, None) => None,
        }
    }
}

/// Lease ids are already uniformly scrambled (splitmix64) and chosen by the server, never by clients: they
/// are their own hash.
#[derive(Debug, Default, Clone, Copy)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type ById = BuildHasherDefault<IdHasher>;

/// One level a lease touched.
#[derive(Debug, Clone)]
pub struct LeaseLevel {
    /// The level's state key (shared with the level table, so no copy).
    pub key: Arc<str>,
    /// Index into the rule's partitions; `None` for the resource-wide level.
    pub partition: Option<usize>,
    /// True when the lease holds a concurrency slot there.
    pub slot: bool,
    /// True when the lease was charged tokens there.
    pub charged: bool,
}

/// A live lease.
#[derive(Debug, Clone)]
pub struct Lease {
    /// Concrete resource.
    pub resource: Arc<str>,
    /// The rule's configured name (for metrics).
    pub rule: Arc<str>,
    /// Levels touched (inline up to two: no allocation per lease in the common shapes).
    pub levels: SmallVec<[LeaseLevel; 2]>,
    /// Tokens charged at each charged level.
    pub permits: u64,
    /// Expiry.
    pub expires_at: Nanos,
    /// TTL used by a renewal that names none.
    pub default_ttl: Duration,
    /// Longest TTL a renewal may ask for.
    pub max_ttl: Duration,
    /// Breaker key, if the resource has a breaker.
    pub breaker_key: Option<Arc<str>>,
    /// Half-open probe token, for a probe lease.
    pub probe: Option<u64>,
    /// Set when a ReportThrottle named this lease, so a failed release does not count twice.
    pub failure_reported: bool,
    /// Caller identity.
    pub client_id: Option<Box<str>>,
}

/// Live leases, their expiry index, and tombstones of ended ones.
#[derive(Debug)]
pub struct LeaseTable {
    live: DashMap<LeaseId, Lease, ById>,
    expiry: Box<[ExpiryShard]>,
    ended: DashMap<LeaseId, (NotReleased, Nanos), ById>,
    /// Tombstones in the order they were written, so forgetting old ones costs what is forgotten, not a
    /// pass over all of them.
    ended_order: Mutex<VecDeque<(Nanos, LeaseId)>>,
    count: AtomicUsize,
    cap: AtomicUsize,
    next_shard: AtomicUsize,
}

/// How long an ended lease is remembered, so a late second release says why it did nothing.
pub const TOMBSTONE_TTL: Duration = Duration::from_secs(60);

impl LeaseTable {
    /// An empty table holding at most `cap` leases.
    pub fn new(cap: usize) -> Self {
        Self {
            live: DashMap::with_hasher(ById::default()),
            expiry: (0..SHARDS).map(|_| Mutex::default()).collect(),
            ended: DashMap::with_hasher(ById::default()),
            ended_order: Mutex::new(VecDeque::new()),
            count: AtomicUsize::new(0),
            cap: AtomicUsize::new(cap),
            next_shard: AtomicUsize::new(0),
        }
    }

    /// Changes the cap (config reload).
    pub fn set_cap(&self, cap: usize) {
        self.cap.store(cap, Ordering::Relaxed);
    }

    /// Live leases.
    pub fn len(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    /// True with no live lease.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Reserves room for one lease; undo with [`unreserve`](Self::unreserve) if it is not inserted.
    pub fn reserve(&self) -> Result<(), EngineError> {
        let cap = self.cap.load(Ordering::Relaxed);
        self.count
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |n| {
                (n < cap).then_some(n + 1)
            })
            .map(|_| ())
            .map_err(|_| EngineError::CapacityExhausted {
                what: "leases",
                cap,
            })
    }

    /// Gives back a reservation.
    pub fn unreserve(&self) {
        self.count.fetch_sub(1, Ordering::AcqRel);
    }

    fn shard(&self, id: LeaseId) -> &ExpiryShard {
        &self.expiry[(id.0 as usize) % SHARDS]
    }

    /// Inserts a reserved lease.
    pub fn insert(&self, id: LeaseId, lease: Lease) {
        lock(self.shard(id)).push(lease.expires_at, id);
        self.live.insert(id, lease);
    }

    /// Removes a live lease. An expired or revoked one leaves a tombstone saying so; a released one leaves
    /// none (the common case costs nothing more: the id itself proves it was issued, see
    /// [`LeaseIds::was_issued`](crate::engine::LeaseIds::was_issued)).
    pub fn end(&self, id: LeaseId, why: NotReleased, now: Nanos) -> Option<Lease> {
        let lease = self.live.remove(&id).map(|(_, l)| l)?;
        self.count.fetch_sub(1, Ordering::AcqRel);
        if why != NotReleased::AlreadyReleased {
            self.tombstone(id, why, now);
        }
        Some(lease)
    }

    /// Removes a lease only if it has expired by `now`.
    fn end_if_expired(&self, id: LeaseId, now: Nanos) -> Option<Lease> {
        let lease = self
            .live
            .remove_if(&id, |_, l| l.expires_at <= now)
            .map(|(_, l)| l)?;
        self.count.fetch_sub(1, Ordering::AcqRel);
        self.tombstone(id, NotReleased::Expired, now);
        Some(lease)
    }

    /// Rewrites the tombstone of an ended lease.
    pub fn end_as(&self, id: LeaseId, why: NotReleased, now: Nanos) {
        self.tombstone(id, why, now);
    }

    fn tombstone(&self, id: LeaseId, why: NotReleased, now: Nanos) {
        self.ended.insert(id, (why, now));
        lock(&self.ended_order).push_back((now, id));
    }

    /// Why a lease that is not live is not live, as far as the tombstones know: `Expired`, or
    /// `UnknownLease` (never issued, released, or ended longer ago than [`TOMBSTONE_TTL`]).
    pub fn why_gone(&self, id: LeaseId) -> NotReleased {
        self.ended
            .get(&id)
            .map_or(NotReleased::UnknownLease, |e| e.0)
    }

    /// Runs `f` on a live lease. Returns `None` when it is not live.
    pub fn update<R>(&self, id: LeaseId, f: impl FnOnce(&mut Lease) -> R) -> Option<R> {
        self.live.get_mut(&id).map(|mut l| f(&mut l))
    }

    /// Extends a lease and indexes its new expiry.
    pub fn renew(&self, id: LeaseId, expires_at: Nanos) -> bool {
        let renewed = self.update(id, |l| l.expires_at = expires_at).is_some();
        if renewed {
            lock(self.shard(id)).push(expires_at, id);
        }
        renewed
    }

    /// Removes up to `limit` leases expired by `now`, handing each to `ended` (no list of leases is built),
    /// and says whether more remain.
    pub fn expire(&self, now: Nanos, limit: usize, mut ended: impl FnMut(LeaseId, Lease)) -> bool {
        let mut due: Vec<LeaseId> = Vec::new();
        let mut more = false;
        // Start at a different shard each time, so a limited sweep does not always favour the first ones.
        let first = self.next_shard.fetch_add(1, Ordering::Relaxed);
        for k in 0..SHARDS {
            let mut shard = lock(&self.expiry[(first + k) % SHARDS]);
            while due.len() < limit {
                match shard.pop_due(now) {
                    Some(id) => due.push(id),
                    None => break,
                }
            }
            if due.len() == limit && shard.has_due(now) {
                more = true;
                break;
            }
        }
        // Stale entries (renewed or released leases) simply find nothing to remove.
        for id in due {
            if let Some(lease) = self.end_if_expired(id, now) {
                ended(id, lease);
            }
        }
        more
    }

    /// Forgets up to `limit` tombstones older than [`TOMBSTONE_TTL`], oldest first. Returns how many, and
    /// whether more are due.
    pub fn forget(&self, now: Nanos, limit: usize) -> (usize, bool) {
        let ttl = crate::clock::nanos(TOMBSTONE_TTL);
        let mut forgotten = 0;
        loop {
            // Pop under the queue's lock, remove after releasing it: never both locks at once.
            let (at, id) = {
                let mut order = lock(&self.ended_order);
                match order.front() {
                    Some(&(at, _)) if now.saturating_sub(at) >= ttl => {
                        if forgotten == limit {
                            return (forgotten, true);
                        }
                        match order.pop_front() {
                            Some(front) => front,
                            None => return (forgotten, false),
                        }
                    }
                    _ => return (forgotten, false),
                }
            };
            // A lease's tombstone rewritten later (an expiry noticed by a release) is kept until its own time.
            if self.ended.remove_if(&id, |_, (_, t)| *t == at).is_some() {
                forgotten += 1;
            }
        }
    }

    /// Visits live leases (admin reads).
    pub fn for_each(&self, mut f: impl FnMut(LeaseId, &Lease) -> bool) {
        for r in &self.live {
            if !f(*r.key(), r.value()) {
                break;
            }
        }
    }
}
