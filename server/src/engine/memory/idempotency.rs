//! Remembered grants by request_id, so a retried Acquire whose reply was lost is answered again, with the
//! same lease, and charged once. The entry is held locked while the first attempt is decided, so two
//! copies of one request racing each other cannot both be charged. Entries are also queued in the order they
//! were remembered (which is the order they lapse, the window being one setting), so forgetting lapsed ones
//! costs what is forgotten, never a pass over all of them.

use std::{
    collections::VecDeque,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
};

use dashmap::{DashMap, mapref::entry::Entry};

use super::table::lock;
use crate::{
    clock::Nanos,
    engine::{Decision, EngineError, plan::KEY_SEP, policy},
};

#[derive(Debug, Clone)]
struct Remembered {
    fingerprint: u64,
    decision: Decision,
    until: Nanos,
}

/// See the module docs.
#[derive(Debug, Default)]
pub struct Idempotency {
    map: DashMap<Arc<str>, Remembered, super::Hasher>,
    /// Entries held (kept here so the cap check does not lock every shard).
    held: AtomicUsize,
    /// The cap (`capacity.max_request_ids`); 0 until set, meaning none.
    cap: AtomicUsize,
    /// The cap's warning is logged once.
    warned: std::sync::atomic::AtomicBool,
    /// Entries forgotten early because of the cap.
    dropped: std::sync::atomic::AtomicU64,
    /// (until, key) in the order remembered. After a reload that shortens the window, newer entries may
    /// lapse before older ones; they then wait for the ones ahead of them (at most the old window).
    order: Mutex<VecDeque<(Nanos, Arc<str>)>>,
}

impl Idempotency {
    /// Replays a remembered grant for (`resource`, `request_id`), or runs `decide` and remembers its
    /// grant until `now + window`; what is replayed and what remembered is the policy's
    /// ([`policy::replay`], [`policy::remembered`]), the entries are this store's.
    pub fn replay_or(
        &self,
        resource: &str,
        request_id: &str,
        fingerprint: u64,
        now: Nanos,
        window: Nanos,
        decide: impl FnOnce() -> Result<Decision, EngineError>,
    ) -> Result<Decision, EngineError> {
        let mut key = String::with_capacity(resource.len() + request_id.len() + 1);
        key.push_str(resource);
        key.push(KEY_SEP);
        key.push_str(request_id);
        let mut inserted = false;
        let result = match self.map.entry(Arc::from(key)) {
            Entry::Occupied(o) if o.get().until > now => {
                let seen = o.get();
                return policy::replay(
                    &seen.decision,
                    seen.fingerprint,
                    (resource, request_id, fingerprint),
                );
            }
            Entry::Occupied(mut o) => {
                let decision = decide()?;
                if policy::remembered(&decision) {
                    lock(&self.order).push_back((now + window, o.key().clone()));
                    o.insert(Remembered {
                        fingerprint,
                        decision: decision.clone(),
                        until: now + window,
                    });
                } else {
                    o.remove();
                    self.held.fetch_sub(1, Ordering::Relaxed);
                }
                Ok(decision)
            }
            Entry::Vacant(v) => {
                let decision = decide()?;
                if policy::remembered(&decision) {
                    inserted = true;
                    self.held.fetch_add(1, Ordering::Relaxed);
                    lock(&self.order).push_back((now + window, v.key().clone()));
                    v.insert(Remembered {
                        fingerprint,
                        decision: decision.clone(),
                        until: now + window,
                    });
                }
                Ok(decision)
            }
        };
        // Over the cap: forget the oldest early. After the entry's lock is released (they may share a shard).
        let cap = self.cap.load(Ordering::Relaxed);
        if inserted && cap > 0 {
            let held = self.held.load(Ordering::Relaxed);
            if held > cap {
                self.forget_oldest(held - cap);
            }
        }
        result
    }

    /// Forgets up to `limit` entries whose window has passed, oldest first. Returns how many, and whether
    /// more are due.
    pub fn forget(&self, now: Nanos, limit: usize) -> (usize, bool) {
        let mut forgotten = 0;
        loop {
            // The queue's lock is never held while a map shard is locked here: `replay_or` takes them the
            // other way round (its entry, then the queue).
            let (until, key) = {
                let mut order = lock(&self.order);
                match order.front() {
                    Some((until, _)) if *until <= now => {
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
            // The same request_id granted again after its window has a later `until` and its own place.
            if self
                .map
                .remove_if(&key, |_, r| r.until <= now && r.until <= until)
                .is_some()
            {
                self.held.fetch_sub(1, Ordering::Relaxed);
                forgotten += 1;
            }
        }
    }

    /// Sets the cap on entries held.
    pub fn set_cap(&self, cap: usize) {
        self.cap.store(cap, Ordering::Relaxed);
    }

    /// Forgets the `n` oldest entries whatever their window (the cap is reached).
    fn forget_oldest(&self, n: usize) {
        let mut forgotten = 0;
        while forgotten < n {
            let Some((until, key)) = lock(&self.order).pop_front() else {
                return;
            };
            if self.map.remove_if(&key, |_, r| r.until == until).is_some() {
                self.held.fetch_sub(1, Ordering::Relaxed);
                self.dropped.fetch_add(1, Ordering::Relaxed);
                forgotten += 1;
            }
        }
        if self.warned.swap(true, Ordering::Relaxed) {
            return;
        }
        tracing::warn!(
            cap = self.cap.load(Ordering::Relaxed),
            "capacity.max_request_ids reached: the oldest request_ids are forgotten before their window ends"
        );
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }

    /// Entries forgotten early because the cap was reached.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use std::{sync::Arc, time::Duration};

    use super::*;
    use crate::engine::{Grant, LeaseId, Verdict};

    fn granted(n: u64) -> Result<Decision, EngineError> {
        Ok(Decision {
            resource: "r".into(),
            rule: "r",
            verdict: Verdict::Granted(Grant {
                lease_id: LeaseId(n),
                expires_at: 0,
                ttl: Duration::from_secs(1),
                replayed: false,
                bypassed: false,
                nothing_held: false,
            }),
            remaining: 0,
            limit: 0,
            reset_after: 0,
            in_flight: 0,
            max_in_flight: 0,
            notes: None,
        })
    }

    /// Remembering (entry lock, then queue) and forgetting (queue, then entry) on two threads at once, with
    /// every entry lapsing as it is written: this deadlocked when forgetting held the queue while removing.
    #[test]
    fn remembering_and_forgetting_concurrently_never_deadlock() {
        let cache = Arc::new(Idempotency::default());
        cache.set_cap(64);
        std::thread::scope(|s| {
            for t in 0..2u64 {
                let cache = cache.clone();
                s.spawn(move || {
                    for i in 0..20_000u64 {
                        let id = format!("{}", i % 97);
                        let now = i * 10;
                        cache
                            .replay_or("r", &id, 0, now, 5, || granted(t * 1_000_000 + i))
                            .unwrap();
                        cache.forget(now, 8);
                    }
                });
            }
        });
        assert_eq!(
            cache.held.load(Ordering::Relaxed),
            cache.map.len(),
            "the count of entries held stays exact"
        );
    }
}
