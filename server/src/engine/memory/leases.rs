//! The lease table: who holds what, until when. Expiry is indexed by sharded min-heaps so the sweeper
//! reclaims expired leases without scanning every lease; a renewal pushes a new entry and the stale one
//! is skipped when it surfaces. Leases that expire (or are revoked) leave a tombstone for a while, so a late
//! release can say it expired; released leases leave none (their ids are recognised as issued instead).

use std::{
    cmp::Reverse,
    collections::{BinaryHeap, VecDeque},
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use dashmap::DashMap;

use super::table::lock;
use crate::{
    clock::Nanos,
    engine::{EngineError, LeaseId, NotReleased},
};

const SHARDS: usize = 16;

/// One shard of the expiry index: a min-heap of (expiry, lease).
type ExpiryShard = Mutex<BinaryHeap<Reverse<(Nanos, LeaseId)>>>;

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
    /// Levels touched.
    pub levels: Box<[LeaseLevel]>,
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
    live: DashMap<LeaseId, Lease, super::Hasher>,
    expiry: Box<[ExpiryShard]>,
    ended: DashMap<LeaseId, (NotReleased, Nanos), super::Hasher>,
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
            live: DashMap::with_hasher(super::Hasher::default()),
            expiry: (0..SHARDS).map(|_| Mutex::new(BinaryHeap::new())).collect(),
            ended: DashMap::with_hasher(super::Hasher::default()),
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
        lock(self.shard(id)).push(Reverse((lease.expires_at, id)));
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
            lock(self.shard(id)).push(Reverse((expires_at, id)));
        }
        renewed
    }

    /// Removes and returns up to `limit` leases expired by `now`, and whether more remain.
    pub fn expire(&self, now: Nanos, limit: usize) -> (Vec<(LeaseId, Lease)>, bool) {
        let mut due = Vec::new();
        let mut more = false;
        // Start at a different shard each time, so a limited sweep does not always favour the first ones.
        let first = self.next_shard.fetch_add(1, Ordering::Relaxed);
        for k in 0..SHARDS {
            let mut heap = lock(&self.expiry[(first + k) % SHARDS]);
            while let Some(Reverse((at, id))) = heap.peek().copied() {
                if at > now {
                    break;
                }
                if due.len() == limit {
                    more = true;
                    break;
                }
                heap.pop();
                due.push(id);
            }
        }
        // Stale heap entries (renewed or released leases) simply find nothing to remove.
        let expired = due
            .into_iter()
            .filter_map(|id| self.end_if_expired(id, now).map(|l| (id, l)))
            .collect();
        (expired, more)
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
