//! A sharded map from state key to a small mutex-guarded value, with a shared cap on live keys and
//! eviction of idle values. One key is read or written under its map shard's read lock (the value cannot be
//! evicted meanwhile, and no reference is counted). Several keys locked together (a multi-level acquire) are
//! reached through `Arc`s instead, so no map shard lock is held while more than one value is locked (two
//! read locks held at once could deadlock behind a waiting writer); an evicted value is flagged so a holder
//! of a stale `Arc` retries instead of writing to state nobody will read again. Lock order: map shard, then
//! value; never a map shard while holding a value.

use std::sync::{
    Arc, Mutex, MutexGuard, PoisonError,
    atomic::{AtomicUsize, Ordering},
};

use dashmap::{DashMap, mapref::entry::Entry};

use crate::engine::EngineError;

/// A value and whether it has been evicted from its table.
#[derive(Debug)]
pub struct Slot<T> {
    /// The state.
    pub value: T,
    /// Set under the lock when the table drops the value; holders must look the key up again.
    pub evicted: bool,
}

/// A shared handle to one key's state.
pub type Shared<T> = Arc<Mutex<Slot<T>>>;

/// Locks a mutex, ignoring poisoning: every critical section here leaves its value consistent before any
/// operation that could panic, so a poisoned lock still guards valid state, and a panic must never take
/// the server down with it.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The cap on live keys, shared by every table of a store.
#[derive(Debug)]
pub struct KeyBudget {
    live: AtomicUsize,
    cap: AtomicUsize,
}

impl KeyBudget {
    /// A budget of `cap` keys.
    pub fn new(cap: usize) -> Self {
        Self {
            live: AtomicUsize::new(0),
            cap: AtomicUsize::new(cap),
        }
    }

    /// Changes the cap (config reload). Keys above a lowered cap stay until evicted.
    pub fn set_cap(&self, cap: usize) {
        self.cap.store(cap, Ordering::Relaxed);
    }

    /// Live keys now.
    pub fn live(&self) -> usize {
        self.live.load(Ordering::Relaxed)
    }

    fn take(&self) -> Result<(), EngineError> {
        let cap = self.cap.load(Ordering::Relaxed);
        self.live
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |n| {
                (n < cap).then_some(n + 1)
            })
            .map(|_| ())
            .map_err(|_| EngineError::CapacityExhausted {
                what: "live keys",
                cap,
                made: None,
            })
    }

    fn give_back(&self, n: usize) {
        self.live.fetch_sub(n, Ordering::AcqRel);
    }
}

/// Keyed state. See the module docs.
#[derive(Debug)]
pub struct Table<T> {
    map: DashMap<Arc<str>, Shared<T>, super::Hasher>,
    /// Keys in the map, kept beside it so "is anything here?" costs one load, not a lock per shard.
    count: AtomicUsize,
}

impl<T> Default for Table<T> {
    fn default() -> Self {
        Self {
            map: DashMap::with_hasher(super::Hasher::default()),
            count: AtomicUsize::new(0),
        }
    }
}

impl<T> Table<T> {
    /// The state of `key`, if it exists.
    pub fn get(&self, key: &str) -> Option<Shared<T>> {
        self.map.get(key).map(|r| r.value().clone())
    }

    /// The state of `key`, created with `init` (counting against `budget`) if absent. Also returns the
    /// table's own copy of the key, so callers can keep it without allocating.
    pub fn get_or_insert(
        &self,
        key: &str,
        budget: &KeyBudget,
        init: impl FnOnce() -> T,
    ) -> Result<(Arc<str>, Shared<T>), EngineError> {
        // Look up with a shared lock first: the common case, and it allocates nothing.
        if let Some(r) = self.map.get(key) {
            return Ok((r.key().clone(), r.value().clone()));
        }
        match self.map.entry(Arc::from(key)) {
            Entry::Occupied(o) => Ok((o.key().clone(), o.get().clone())),
            Entry::Vacant(v) => {
                budget.take()?;
                self.count.fetch_add(1, Ordering::Relaxed);
                let key = v.key().clone();
                let value = v
                    .insert(Arc::new(Mutex::new(Slot {
                        value: init(),
                        evicted: false,
                    })))
                    .clone();
                Ok((key, value))
            }
        }
    }

    /// Runs `f` on the state of `key` (created if absent). See [`with_locked`](Self::with_locked).
    pub fn with<R>(
        &self,
        key: &str,
        budget: &KeyBudget,
        init: impl FnMut() -> T,
        f: impl FnOnce(&mut T) -> R,
    ) -> Result<R, EngineError> {
        self.with_locked(key, budget, init, |_, value| f(value))
    }

    /// Runs `f` on the state of `key` (created if absent) while holding the map shard's read lock, so the
    /// value cannot be evicted meanwhile: no reference to it is counted and no retry is needed. `f` also
    /// gets the table's copy of the key. Never call this while holding another value's lock (eviction
    /// locks values under the shard's write lock).
    pub fn with_locked<R>(
        &self,
        key: &str,
        budget: &KeyBudget,
        mut init: impl FnMut() -> T,
        f: impl FnOnce(&Arc<str>, &mut T) -> R,
    ) -> Result<R, EngineError> {
        loop {
            if let Some(r) = self.map.get(key) {
                let mut slot = lock(r.value());
                return Ok(f(r.key(), &mut slot.value));
            }
            self.get_or_insert(key, budget, &mut init)?;
        }
    }

    /// Runs `f` on the state of `key` if it exists, under the map shard's read lock as in
    /// [`with_locked`](Self::with_locked) (no reference counted, so threads sharing a key touch one line
    /// less of it).
    pub fn with_existing<R>(&self, key: &str, f: impl FnOnce(&mut T) -> R) -> Option<R> {
        let r = self.map.get(key)?;
        let mut slot = lock(r.value());
        Some(f(&mut slot.value))
    }

    /// Drops every value for which `idle(key, value)` is true. Returns how many.
    pub fn evict(&self, budget: &KeyBudget, mut idle: impl FnMut(&str, &T) -> bool) -> usize {
        let mut evicted = 0;
        self.map.retain(|key, shared| {
            let mut slot = lock(shared);
            if idle(key, &slot.value) {
                slot.evicted = true;
                evicted += 1;
                false
            } else {
                true
            }
        });
        budget.give_back(evicted);
        self.count.fetch_sub(evicted, Ordering::Relaxed);
        evicted
    }

    /// Visits every live value (admin reads; takes each lock briefly).
    pub fn for_each(&self, mut f: impl FnMut(&Arc<str>, &T)) {
        for r in &self.map {
            let slot = lock(r.value());
            f(r.key(), &slot.value);
        }
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
