//! `max_wait`: instead of denying at once, hold an Acquire until capacity frees, first come first served
//! per key (resource + descriptors), and answer with the grant, or with the denial once waiting longer
//! could not help. Requests without `max_wait` are answered at once and never queue.
//!
//! Waiting polls the engine at the denial's `retry_after` rather than listening for releases: that works
//! the same with a shared store, where releases happen on other servers.

use std::{sync::Arc, time::Duration};

use dashmap::DashMap;
use tokio::{sync::Mutex, time::Instant};

use crate::engine::{Acquire, Decision, Denial, EngineError, Quota, Store, Verdict};

/// Per-key FIFO queues of waiting acquires.
#[derive(Debug, Default)]
pub struct Waiting {
    queues: DashMap<String, Arc<Mutex<()>>>,
}

fn queue_key(req: &Acquire) -> String {
    let mut d: Vec<_> = req.descriptors.iter().collect();
    d.sort();
    let mut key = req.resource.clone();
    for (k, v) in d {
        key.push('\u{1f}');
        key.push_str(k);
        key.push('=');
        key.push_str(v);
    }
    key
}

impl Waiting {
    /// Acquires, waiting up to `req.max_wait` for capacity.
    pub async fn acquire<S: Store>(
        &self,
        quota: &Quota<S>,
        req: &Acquire,
    ) -> Result<Decision, EngineError> {
        if req.max_wait.is_zero() {
            return quota.acquire(req).await;
        }
        let deadline = Instant::now() + req.max_wait;
        let key = queue_key(req);
        let queue = self.queues.entry(key.clone()).or_default().clone();
        let result = async {
            // FIFO: tokio's mutex hands the lock to waiters in the order they asked.
            let Ok(_turn) = tokio::time::timeout_at(deadline, queue.lock()).await else {
                return quota.acquire(req).await;
            };
            loop {
                let decision = quota.acquire(req).await?;
                let Verdict::Denied {
                    reason,
                    retry_after,
                    ..
                } = &decision.verdict
                else {
                    return Ok(decision);
                };
                let now = Instant::now();
                let wake = now + Duration::from_nanos(*retry_after);
                match reason {
                    // Exact waits: if it cannot succeed by the deadline, say so now.
                    Denial::RateLimited | Denial::Paused | Denial::CircuitOpen
                        if wake > deadline =>
                    {
                        return Ok(decision);
                    }
                    _ if now >= deadline => return Ok(decision),
                    _ => tokio::time::sleep_until(wake.min(deadline)).await,
                }
            }
        }
        .await;
        drop(queue);
        self.queues
            .remove_if(&key, |_, q| Arc::strong_count(q) == 1);
        result
    }
}
