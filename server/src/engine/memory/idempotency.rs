//! Remembered grants by request_id, so a retried Acquire whose reply was lost is answered again, with the
//! same lease, and charged once. The entry is held locked while the first attempt is decided, so two
//! copies of one request racing each other cannot both be charged.

use dashmap::{DashMap, mapref::entry::Entry};

use crate::{
    clock::Nanos,
    engine::{Decision, EngineError, plan::KEY_SEP},
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
    map: DashMap<Box<str>, Remembered, super::Hasher>,
}

impl Idempotency {
    /// Replays a remembered grant for (`resource`, `request_id`), or runs `decide` and remembers its
    /// grant until `now + window`. Denials are not remembered: they charged nothing.
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
        match self.map.entry(key.into_boxed_str()) {
            Entry::Occupied(o) if o.get().until > now => {
                let seen = o.get();
                if seen.fingerprint != fingerprint {
                    return Err(EngineError::FailedPrecondition(format!(
                        "request_id: '{request_id}' was already used for a different request on '{resource}' \
                         (permits, lease_ttl or descriptors differ); use a new request_id per logical acquire"
                    )));
                }
                let mut decision = seen.decision.clone();
                if let crate::engine::Verdict::Granted(g) = &mut decision.verdict {
                    g.replayed = true;
                }
                Ok(decision)
            }
            Entry::Occupied(mut o) => {
                let decision = decide()?;
                if decision.granted() {
                    o.insert(Remembered {
                        fingerprint,
                        decision: decision.clone(),
                        until: now + window,
                    });
                } else {
                    o.remove();
                }
                Ok(decision)
            }
            Entry::Vacant(v) => {
                let decision = decide()?;
                if decision.granted() {
                    v.insert(Remembered {
                        fingerprint,
                        decision: decision.clone(),
                        until: now + window,
                    });
                }
                Ok(decision)
            }
        }
    }

    /// Forgets entries whose window has passed. Returns how many.
    pub fn forget(&self, now: Nanos) -> usize {
        let before = self.map.len();
        self.map.retain(|_, r| r.until > now);
        before - self.map.len()
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}
