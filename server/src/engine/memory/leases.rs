//! The lease table: who holds what, until when. Leases live in a slab split into shards, each behind one
//! mutex; a lease's id carries its shard and index (see [`LeaseIds`]), so finding a lease costs no hashing
//! and granting one takes a single lock. Expiry is indexed per shard, under the same lock, so the sweeper
//! reclaims expired leases without scanning every lease: leases of one TTL are granted in expiry order, so
//! almost every entry appends to a queue (O(1)); an entry earlier than the queue's last (a shorter TTL, a
//! renewal) goes to a min-heap beside it. A renewal pushes a new entry and the stale one is skipped when it
//! surfaces. Leases that expire (or are revoked) leave a tombstone for a while, so a late release can say it
//! expired; released leases leave none (their ids are recognised as issued instead).

use std::{
    cell::Cell,
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
    engine::{EngineError, LeaseId, LeaseIds, Name, NotReleased, lease_id::SLOT_BITS},
};

const SHARD_BITS: u32 = 4;
const SHARDS: usize = 1 << SHARD_BITS;
/// Most leases one shard holds: the slot bits above the shard's.
const SHARD_SLOTS: usize = 1 << (SLOT_BITS - SHARD_BITS);

/// The most live leases the table can hold (`capacity.max_leases` may not exceed it).
pub const MAX_LEASES: usize = SHARDS * SHARD_SLOTS;

/// A shard on cache lines of its own, so threads working in neighbouring shards do not contend for a line.
#[derive(Debug, Default)]
#[repr(align(128))]
struct Padded(Mutex<Shard>);

impl std::ops::Deref for Padded {
    type Target = Mutex<Shard>;

    fn deref(&self) -> &Mutex<Shard> {
        &self.0
    }
}

/// One shard: a slab of leases with its free list, and its expiry index.
#[derive(Debug, Default)]
struct Shard {
    /// Leases by index, with their ids (a stale or foreign id finds another id, or nothing, there).
    slots: Vec<LeaseSlot>,
    /// Indexes of empty slots, reused last-freed first (warm in cache).
    free: Vec<u32>,
    expiry: Expiries,
    /// Grants made in this shard, which numbers them from 1: ids are unique per shard and their slots name the
    /// shard, so no counter is shared between threads.
    issued: u64,
}

/// One slot of a shard: the id of the lease it holds, or last held (the lease is written and taken in
/// place, beside its id, so a grant copies it once).
#[derive(Debug)]
struct LeaseSlot {
    id: LeaseId,
    lease: Option<Lease>,
}

impl Shard {
    fn get_mut(&mut self, index: usize, id: LeaseId) -> Option<&mut Lease> {
        self.slots
            .get_mut(index)
            .filter(|s| s.id == id)
            .and_then(|s| s.lease.as_mut())
    }

    /// Takes the lease with this id out of its slot if `take` agrees, freeing the slot.
    #[inline(always)]
    fn take_if(
        &mut self,
        index: usize,
        id: LeaseId,
        take: impl FnOnce(&Lease) -> bool,
    ) -> Option<Lease> {
        let slot = self.slots.get_mut(index)?;
        if slot.id != id || !slot.lease.as_ref().is_some_and(take) {
            return None;
        }
        // Indexes fit in u32: a shard holds at most SHARD_SLOTS.
        self.free.push(index as u32);
        // Taken straight into the caller's place (a lease is large: each move is a copy).
        slot.lease.take()
    }

    /// Indexes an expiry. Entries of released or renewed leases stay in the index until they surface, so a
    /// renew loop, or leases released long before their TTL, would grow it without bound: past twice the
    /// slab's size (plus slack) it is rebuilt from the live leases alone. The slab is bounded by the lease
    /// cap, so the index is too, and a rebuild's cost (a pass over the slab) is spread over as many pushes.
    fn index_expiry(&mut self, at: Nanos, id: LeaseId) {
        self.expiry.push(at, id);
        if self.expiry.len() > 2 * self.slots.len() + 64 {
            let mut live: Vec<_> = self
                .slots
                .iter()
                .filter_map(|s| s.lease.as_ref().map(|l| (l.expires_at, s.id)))
                .collect();
            live.sort_unstable();
            self.expiry = Expiries {
                ordered: live.into(),
                early: BinaryHeap::new(),
            };
        }
    }

    /// A free index, if the shard has room.
    fn vacant(&mut self) -> Option<usize> {
        if let Some(i) = self.free.pop() {
            return Some(i as usize);
        }
        (self.slots.len() < SHARD_SLOTS).then(|| {
            self.slots.push(LeaseSlot {
                id: LeaseId(0),
                lease: None,
            });
            self.slots.len() - 1
        })
    }
}

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

    /// Entries held, stale ones included.
    fn len(&self) -> usize {
        self.ordered.len() + self.early.len()
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
    /// A partition level's index into the rule's partitions and its state key (shared with the level
    /// table, so no copy); `None` for the resource-wide level, whose key is the lease's resource.
    pub partition: Option<(u32, Arc<str>)>,
    /// True when the lease holds a concurrency slot there.
    pub slot: bool,
    /// True when the lease was charged tokens there.
    pub charged: bool,
}

/// A live lease. Kept small (it is written once per grant and moved out once per release): names are
/// interned or shared, not copied, and the resource's name stands for the resource-wide level's key.
#[derive(Debug, Clone)]
pub struct Lease {
    /// Concrete resource.
    pub resource: Name,
    /// The configured name of the rule it was granted under (for metrics).
    pub rule: &'static str,
    /// Levels touched (inline up to two: no allocation per lease in the common shapes).
    pub levels: SmallVec<[LeaseLevel; 2]>,
    /// Tokens charged at each charged level.
    pub permits: u64,
    /// When it was granted (a window's refund goes back only to the window it was taken from).
    pub granted_at: Nanos,
    /// Expiry.
    pub expires_at: Nanos,
    /// TTL used by a renewal that names none, in nanoseconds.
    pub default_ttl: Nanos,
    /// Longest TTL a renewal may ask for, in nanoseconds.
    pub max_ttl: Nanos,
    /// Breaker key, if the resource has a breaker.
    pub breaker_key: Option<Arc<str>>,
    /// Half-open probe token, for a probe lease.
    pub probe: Option<u64>,
    /// Set when a ReportThrottle named this lease, so a failed release does not count twice.
    pub failure_reported: bool,
    /// Caller identity.
    pub client_id: Option<Box<str>>,
    /// The authenticated identity that acquired it (`None` without auth): the only one that may release,
    /// renew or report under it.
    pub owner: Option<&'static str>,
    /// The rule it was granted under: its release is settled and counted under these terms (a reload
    /// applies to leases granted after it), as the Redis store keeps them in the lease.
    pub terms: Arc<crate::engine::Rule>,
}

impl Lease {
    /// The state key of one of its levels.
    pub fn key<'a>(&'a self, level: &'a LeaseLevel) -> &'a str {
        level.partition.as_ref().map_or(&*self.resource, |(_, k)| k)
    }
}

/// Live leases, their expiry index, and tombstones of ended ones.
#[derive(Debug)]
pub struct LeaseTable {
    ids: LeaseIds,
    shards: Box<[Padded]>,
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
            ids: LeaseIds::default(),
            shards: (0..SHARDS).map(|_| Padded::default()).collect(),
            ended: DashMap::with_hasher(ById::default()),
            ended_order: Mutex::new(VecDeque::new()),
            count: AtomicUsize::new(0),
            cap: AtomicUsize::new(cap.min(MAX_LEASES)),
            next_shard: AtomicUsize::new(0),
        }
    }

    /// Changes the cap (config reload).
    pub fn set_cap(&self, cap: usize) {
        self.cap.store(cap.min(MAX_LEASES), Ordering::Relaxed);
    }

    /// Live leases.
    pub fn len(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    /// True with no live lease.
    #[cfg(test)]
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
                made: None,
            })
    }

    /// Gives back a reservation.
    pub fn unreserve(&self) {
        self.count.fetch_sub(1, Ordering::AcqRel);
    }

    /// The shard and index of `id`'s slot.
    fn locate(&self, id: LeaseId) -> (&Mutex<Shard>, usize) {
        let slot = self.ids.decompose(id).1 as usize;
        (&self.shards[slot % SHARDS], slot >> SHARD_BITS)
    }

    /// True when this table issued `id` (live, ended, or long forgotten).
    pub fn was_issued(&self, id: LeaseId) -> bool {
        let (n, slot) = self.ids.decompose(id);
        let issued = lock(&self.shards[slot as usize % SHARDS]).issued;
        LeaseIds::counted(n, issued + 1)
    }

    /// Inserts a reserved lease under a new id.
    pub fn insert(&self, lease: Lease) -> LeaseId {
        /// Hands each thread its starting shard, spaced apart.
        static THREADS: AtomicUsize = AtomicUsize::new(0);
        thread_local! {
            /// Each thread starts at its own shard and moves on by one per grant, so threads in step
            /// never meet.
            static NEXT: Cell<usize> = const { Cell::new(usize::MAX) };
        }
        let first = NEXT.with(|next| {
            let mut n = next.get();
            if n == usize::MAX {
                // 7 is coprime with the shard count: the first 16 threads start on 16 different shards.
                n = THREADS.fetch_add(7, Ordering::Relaxed);
            }
            next.set(n.wrapping_add(1));
            n
        });
        // A reservation was taken against a cap of at most MAX_LEASES, so some shard has room.
        for k in 0..SHARDS {
            let s = (first + k) % SHARDS;
            let mut shard = lock(&self.shards[s]);
            let Some(index) = shard.vacant() else {
                continue;
            };
            shard.issued += 1;
            let id = self
                .ids
                .compose(shard.issued, ((index << SHARD_BITS) | s) as u32);
            shard.index_expiry(lease.expires_at, id);
            let slot = &mut shard.slots[index];
            slot.id = id;
            slot.lease = Some(lease);
            return id;
        }
        // Sound: every insert holds a reservation against a cap of at most MAX_LEASES, the slab's capacity,
        // so some shard had room above.
        #[allow(clippy::unreachable)]
        {
            unreachable!("leases are reserved against a cap of at most MAX_LEASES")
        }
    }

    /// Removes a live lease. An expired or revoked one leaves a tombstone saying so; a released one leaves
    /// none (the common case costs nothing more: the id itself proves it was issued, see
    /// [`LeaseIds::was_issued`]).
    pub fn end(&self, id: LeaseId, why: NotReleased, now: Nanos) -> Option<Lease> {
        let (shard, index) = self.locate(id);
        let lease = lock(shard).take_if(index, id, |_| true)?;
        self.count.fetch_sub(1, Ordering::AcqRel);
        if why != NotReleased::AlreadyReleased {
            self.tombstone(id, why, now);
        }
        Some(lease)
    }

    /// [`end`](Self::end), for `caller` only, handing the lease to `then` (after the shard's lock is
    /// released; taken straight from its slot, the large lease moves once): a live lease owned by another
    /// identity is left as it was, and the answer is PERMISSION_DENIED.
    #[inline(always)]
    pub fn end_owned<R>(
        &self,
        id: LeaseId,
        (caller, why, now): (Option<&'static str>, NotReleased, Nanos),
        then: impl FnOnce(Lease) -> R,
    ) -> Result<Option<R>, EngineError> {
        let (shard, index) = self.locate(id);
        let mut foreign = false;
        let lease = lock(shard).take_if(index, id, |l| {
            foreign = l.owner != caller;
            !foreign
        });
        if foreign {
            return Err(EngineError::not_owner(id));
        }
        if lease.is_some() {
            self.count.fetch_sub(1, Ordering::AcqRel);
            if why != NotReleased::AlreadyReleased {
                self.tombstone(id, why, now);
            }
        }
        Ok(lease.map(then))
    }

    /// Rewrites the tombstone of an ended lease.
    pub fn end_as(&self, id: LeaseId, why: NotReleased, now: Nanos) {
        self.tombstone(id, why, now);
    }

    /// Remembers why a lease ended. Tombstones are capped like leases (`capacity.max_leases`): past the cap
    /// the oldest are forgotten first, so a flood of short leases cannot grow memory for a minute.
    fn tombstone(&self, id: LeaseId, why: NotReleased, now: Nanos) {
        self.ended.insert(id, (why, now));
        let cap = self.cap.load(Ordering::Relaxed).max(1);
        let mut overflow: SmallVec<[(Nanos, LeaseId); 2]> = SmallVec::new();
        {
            let mut order = lock(&self.ended_order);
            order.push_back((now, id));
            while order.len() > cap {
                overflow.extend(order.pop_front());
            }
        }
        // Removed after the queue's lock is released: never both locks at once (see `forget`).
        for (at, old) in overflow {
            self.ended.remove_if(&old, |_, (_, t)| *t == at);
        }
    }

    /// Tombstones held.
    #[cfg(test)]
    pub fn tombstones(&self) -> usize {
        lock(&self.ended_order).len()
    }

    /// Why a lease that is not live is not live, as far as the tombstones know: `Expired`, or
    /// `UnknownLease` (never issued, released, or ended longer ago than [`TOMBSTONE_TTL`]).
    pub fn why_gone(&self, id: LeaseId) -> NotReleased {
        self.ended
            .get(&id)
            .map_or(NotReleased::UnknownLease, |e| e.0)
    }

    /// Runs `f` on a live lease (under its shard's lock: `f` must not call back into the table). Returns
    /// `None` when it is not live.
    pub fn update<R>(&self, id: LeaseId, f: impl FnOnce(&mut Lease) -> R) -> Option<R> {
        let (shard, index) = self.locate(id);
        lock(shard).get_mut(index, id).map(f)
    }

    /// Extends a lease and indexes its new expiry.
    pub fn renew(&self, id: LeaseId, expires_at: Nanos) -> bool {
        let (shard, index) = self.locate(id);
        let mut shard = lock(shard);
        let Some(lease) = shard.get_mut(index, id) else {
            return false;
        };
        lease.expires_at = expires_at;
        shard.index_expiry(expires_at, id);
        true
    }

    /// Removes up to `limit` leases expired by `now`, handing each to `ended` (after the shard's lock is
    /// released), and says whether more remain.
    pub fn expire(&self, now: Nanos, limit: usize, mut ended: impl FnMut(LeaseId, Lease)) -> bool {
        let mut popped = 0;
        let mut expired: Vec<(LeaseId, Lease)> = Vec::new();
        let mut more = false;
        // Start at a different shard each time, so a limited sweep does not always favour the first ones.
        let first = self.next_shard.fetch_add(1, Ordering::Relaxed);
        for k in 0..SHARDS {
            let mut shard = lock(&self.shards[(first + k) % SHARDS]);
            while popped < limit {
                let Some(id) = shard.expiry.pop_due(now) else {
                    break;
                };
                popped += 1;
                // Stale entries (renewed or released leases) find nothing to take.
                let index = self.ids.decompose(id).1 as usize >> SHARD_BITS;
                if let Some(lease) = shard.take_if(index, id, |l| l.expires_at <= now) {
                    expired.push((id, lease));
                }
            }
            if popped == limit && shard.expiry.has_due(now) {
                more = true;
                break;
            }
        }
        self.count.fetch_sub(expired.len(), Ordering::AcqRel);
        for (id, lease) in expired {
            self.tombstone(id, NotReleased::Expired, now);
            ended(id, lease);
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

    /// Visits live leases (admin reads; each shard's lock is held while its leases are visited, so `f` must
    /// not call back into the table) until `f` says stop.
    pub fn for_each(&self, mut f: impl FnMut(LeaseId, &Lease) -> bool) {
        self.for_each_from(None, |_, id, lease| f(id, lease));
    }

    /// Visits live leases in a fixed order (shard by shard, slot by slot), starting after `after` (a cursor
    /// `f` was handed earlier), handing `f` each lease's cursor. Leases granted or ended meanwhile may or may
    /// not be seen; none is seen twice.
    pub fn for_each_from(
        &self,
        after: Option<u64>,
        mut f: impl FnMut(u64, LeaseId, &Lease) -> bool,
    ) {
        // A cursor is (shard << 32 | index) + 1, so 0 means "before everything".
        let start = after.unwrap_or(0);
        let (first_shard, first_index) = ((start >> 32) as usize, (start & 0xffff_ffff) as usize);
        for (s, shard) in self.shards.iter().enumerate().skip(first_shard) {
            let shard = lock(shard);
            let skip = if s == first_shard { first_index } else { 0 };
            for (i, slot) in shard.slots.iter().enumerate().skip(skip) {
                let Some(lease) = &slot.lease else { continue };
                let cursor = ((s as u64) << 32 | i as u64) + 1;
                if !f(cursor, slot.id, lease) {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(expires_at: Nanos) -> Lease {
        Lease {
            resource: "r".into(),
            rule: "r",
            levels: SmallVec::new(),
            permits: 1,
            granted_at: 0,
            expires_at,
            default_ttl: 1_000_000_000,
            max_ttl: 1_000_000_000,
            breaker_key: None,
            probe: None,
            failure_reported: false,
            client_id: None,
            owner: None,
            terms: rule(),
        }
    }

    /// A rule for the leases here (their terms are never read by the table).
    fn rule() -> Arc<crate::engine::Rule> {
        static RULE: std::sync::OnceLock<Arc<crate::engine::Rule>> = std::sync::OnceLock::new();
        RULE.get_or_init(|| {
            let rules = crate::config::load_str("[[resources]]\nname = \"r\"\nconcurrency = 1")
                .expect("test config")
                .rules;
            rules.resolve("r").expect("the rule").clone()
        })
        .clone()
    }

    fn grant(table: &LeaseTable, expires_at: Nanos) -> LeaseId {
        table.reserve().unwrap();
        table.insert(lease(expires_at))
    }

    #[test]
    fn a_reused_slot_does_not_answer_to_its_old_id() {
        let table = LeaseTable::new(100);
        let old = grant(&table, 100);
        assert!(table.end(old, NotReleased::AlreadyReleased, 0).is_some());
        // One thread moves one shard on per grant: within a round of grants, one reuses the freed slot.
        let round: Vec<_> = (0..SHARDS).map(|_| grant(&table, 100)).collect();
        let new = *round
            .iter()
            .find(|&&id| table.ids.slot(id) == table.ids.slot(old))
            .expect("the freed slot was reused");
        for &id in round.iter().filter(|&&id| id != new) {
            table.end(id, NotReleased::AlreadyReleased, 0);
        }
        assert_ne!(old, new);
        assert!(table.end(old, NotReleased::AlreadyReleased, 0).is_none());
        assert!(table.update(old, |_| ()).is_none());
        assert!(!table.renew(old, 200));
        assert!(table.was_issued(old));
        assert_eq!(table.len(), 1);
        assert!(
            table
                .update(new, |l| l.expires_at)
                .is_some_and(|t| t == 100)
        );
        // The old id's expiry entry is stale: expiring at 100 takes the new lease once, by its own id.
        let mut ended = Vec::new();
        table.expire(100, usize::MAX, |id, _| ended.push(id));
        assert_eq!(ended, vec![new]);
        assert!(table.is_empty());
    }

    fn index_entries(table: &LeaseTable) -> usize {
        table.shards.iter().map(|s| lock(s).expiry.len()).sum()
    }

    #[test]
    fn a_renew_loop_does_not_grow_the_expiry_index() {
        let table = LeaseTable::new(10);
        let id = grant(&table, 100);
        for t in 0..100_000 {
            assert!(table.renew(id, 100 + t));
        }
        assert!(
            index_entries(&table) <= 2 * SHARDS + 64 * SHARDS,
            "{}",
            index_entries(&table)
        );
        // The lease still expires exactly once, at its last expiry.
        let mut ended = Vec::new();
        table.expire(100 + 99_998, usize::MAX, |id, _| ended.push(id));
        assert!(ended.is_empty());
        table.expire(100 + 99_999, usize::MAX, |id, _| ended.push(id));
        assert_eq!(ended, vec![id]);
    }

    #[test]
    fn leases_released_before_their_ttl_leave_a_bounded_index() {
        let table = LeaseTable::new(10);
        for _ in 0..100_000 {
            let id = grant(&table, Nanos::MAX);
            assert!(table.end(id, NotReleased::AlreadyReleased, 0).is_some());
        }
        assert!(
            index_entries(&table) <= 66 * SHARDS,
            "{}",
            index_entries(&table)
        );
    }

    #[test]
    fn tombstones_are_capped_like_leases() {
        let table = LeaseTable::new(100);
        let mut last = LeaseId(0);
        for _ in 0..10_000 {
            last = grant(&table, 0);
            table.expire(1, usize::MAX, |_, _| {});
        }
        assert_eq!(table.tombstones(), 100);
        assert!(table.ended.len() <= 100);
        assert_eq!(
            table.why_gone(last),
            NotReleased::Expired,
            "the newest are kept"
        );
    }

    #[test]
    fn foreign_ids_find_nothing() {
        let table = LeaseTable::new(10);
        let mine = grant(&table, 100);
        let other = LeaseTable::new(10);
        for id in [
            LeaseId(0),
            LeaseId(u64::MAX),
            LeaseId(mine.0 ^ 1),
            grant(&other, 100),
        ] {
            assert!(table.update(id, |_| ()).is_none());
            assert!(table.end(id, NotReleased::AlreadyReleased, 0).is_none());
        }
        assert_eq!(table.len(), 1);
    }

    #[test]
    fn every_lease_ends_exactly_once_across_threads() {
        // Four threads grant and end leases while a fifth expires whatever is due: every lease must end
        // once (by release or by expiry, never both, never twice) and the count must come back to zero.
        const PER_THREAD: u64 = 5_000;
        let table = LeaseTable::new(100_000);
        let ended = Mutex::new(std::collections::HashSet::new());
        let note = |id: LeaseId| assert!(lock(&ended).insert(id), "lease {id} ended twice");
        let granted = std::sync::atomic::AtomicU64::new(0);
        std::thread::scope(|s| {
            for t in 0..4u64 {
                let (table, note, granted) = (&table, &note, &granted);
                s.spawn(move || {
                    let mut held = Vec::new();
                    for i in 0..PER_THREAD {
                        // Odd leases expire at once (the expirer races the release for them).
                        held.push(grant(table, if i % 2 == 1 { 0 } else { Nanos::MAX }));
                        granted.fetch_add(1, Ordering::Relaxed);
                        if (i + t) % 3 == 0 {
                            let id = held.swap_remove(held.len() / 2);
                            if table.end(id, NotReleased::AlreadyReleased, 1).is_some() {
                                note(id);
                            }
                        }
                    }
                    for id in held {
                        if table.end(id, NotReleased::AlreadyReleased, 1).is_some() {
                            note(id);
                        }
                    }
                });
            }
            let (table, note) = (&table, &note);
            s.spawn(move || {
                for _ in 0..200 {
                    table.expire(1, 64, |id, _| note(id));
                    std::thread::yield_now();
                }
            });
        });
        table.expire(Nanos::MAX, usize::MAX, |id, _| note(id));
        assert_eq!(lock(&ended).len() as u64, granted.load(Ordering::Relaxed));
        assert_eq!(table.len(), 0);
        let mut live = 0;
        table.for_each(|_, _| {
            live += 1;
            true
        });
        assert_eq!(live, 0);
    }

    #[test]
    fn leases_spread_over_shards_and_are_all_found() {
        let table = LeaseTable::new(10_000);
        let ids: Vec<_> = (0..5_000).map(|i| grant(&table, i)).collect();
        let shards: std::collections::HashSet<_> = ids
            .iter()
            .map(|&id| table.ids.slot(id) as usize % SHARDS)
            .collect();
        assert_eq!(shards.len(), SHARDS);
        let mut seen = 0;
        table.for_each(|_, _| {
            seen += 1;
            true
        });
        assert_eq!(seen, 5_000);
        for (i, id) in ids.iter().enumerate() {
            assert_eq!(table.update(*id, |l| l.expires_at), Some(i as Nanos));
        }
    }
}
