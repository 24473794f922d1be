//! `max_wait`: instead of denying at once, hold an Acquire until capacity frees, first come first served
//! per key (resource + descriptors), and answer with the grant, or with the denial once waiting longer
//! could not help. Requests without `max_wait` are answered at once and never queue.
//!
//! Waiting polls the engine at the denial's `retry_after` rather than listening for releases: that works
//! the same with a shared store, where releases happen on other servers.

// Wire-facing: every value here may come from a request, so arithmetic is checked or saturating.
#![cfg_attr(not(test), deny(clippy::arithmetic_side_effects))]

use std::{sync::Arc, time::Duration};

use dashmap::DashMap;
use tokio::{sync::Mutex, time::Instant};

use crate::engine::{Acquire, Decision, Denial, EngineError, Quota, Store, Verdict};

/// Per-key FIFO queues of waiting acquires.
#[derive(Debug, Default)]
pub struct Waiting {
    queues: DashMap<String, Arc<Mutex<()>>>,
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
        // Validated and resolved first: the queue is the state the request would touch (descriptors the rule
        // ignores do not make a queue of their own). `max_wait` is capped by the server's limit.
        let key = quota.wait_key(req)?;
        let max_wait = req.max_wait.min(quota.rules().limits.max_wait);
        let deadline = Instant::now()
            .checked_add(max_wait)
            .ok_or_else(|| EngineError::invalid("max_wait", "is too long"))?;
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
                // `None`: further than an Instant reaches, so past any deadline.
                let wake = now.checked_add(Duration::from_nanos(*retry_after));
                match reason {
                    // Exact waits: if it cannot succeed by the deadline, say so now.
                    Denial::RateLimited | Denial::Paused | Denial::CircuitOpen
                        if wake.is_none_or(|w| w > deadline) =>
                    {
                        return Ok(decision);
                    }
                    _ if now >= deadline => return Ok(decision),
                    _ => tokio::time::sleep_until(wake.map_or(deadline, |w| w.min(deadline))).await,
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::{
        clock::TokioClock,
        config,
        engine::{Outcome, Release},
    };

    fn quota(toml: &str) -> Arc<Quota<crate::engine::MemoryStore>> {
        Arc::new(Quota::in_memory(
            config::load_str(toml).unwrap().rules,
            Arc::new(TokioClock::new()),
        ))
    }

    fn req(max_wait: Duration) -> Acquire {
        Acquire {
            resource: "r".into(),
            permits: 1,
            max_wait,
            ..Default::default()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn waiters_are_granted_first_come_first_served_as_tokens_refill() {
        let q =
            quota("[[resources]]\nname = \"r\"\nrate = { limit = 10, period = \"1s\", burst = 1 }");
        let waiting = Arc::new(Waiting::default());
        let start = Instant::now();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        for i in 0..3 {
            let (q, w, tx) = (q.clone(), waiting.clone(), tx.clone());
            tokio::spawn(async move {
                let d = w.acquire(&q, &req(Duration::from_secs(10))).await.unwrap();
                tx.send((i, d.granted(), start.elapsed())).unwrap();
            });
            // Let each waiter take its place in the queue before the next arrives.
            tokio::task::yield_now().await;
        }
        drop(tx);
        let mut got = Vec::new();
        while let Some(x) = rx.recv().await {
            got.push(x);
        }
        let order: Vec<_> = got.iter().map(|(i, granted, _)| (*i, *granted)).collect();
        assert_eq!(order, vec![(0, true), (1, true), (2, true)]);
        assert_eq!(got[1].2, Duration::from_millis(100));
        assert_eq!(got[2].2, Duration::from_millis(200));
        assert!(waiting.queues.is_empty(), "queues are dropped when idle");
    }

    #[tokio::test(start_paused = true)]
    async fn descriptors_the_rule_ignores_do_not_jump_the_queue() {
        let q =
            quota("[[resources]]\nname = \"r\"\nrate = { limit = 10, period = \"1s\", burst = 1 }");
        let waiting = Arc::new(Waiting::default());
        assert!(
            waiting
                .acquire(&q, &req(Duration::ZERO))
                .await
                .unwrap()
                .granted()
        );
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        for i in 0..3 {
            let (q, w, tx) = (q.clone(), waiting.clone(), tx.clone());
            tokio::spawn(async move {
                let mut r = req(Duration::from_secs(10));
                // Each later waiter adds a descriptor the rule does not use, hoping for a queue of its own.
                r.descriptors = (0..i).map(|k| (format!("junk{k}"), "x".into())).collect();
                let d = w.acquire(&q, &r).await.unwrap();
                tx.send((i, d.granted())).unwrap();
            });
            tokio::task::yield_now().await;
        }
        assert_eq!(waiting.queues.len(), 1, "one queue for one piece of state");
        drop(tx);
        let mut order = Vec::new();
        while let Some(x) = rx.recv().await {
            order.push(x);
        }
        assert_eq!(order, vec![(0, true), (1, true), (2, true)]);
    }

    #[tokio::test(start_paused = true)]
    async fn an_absurd_max_wait_is_capped_by_the_servers_limit() {
        // The server's limit is 30 s: a token 20 s away is waited for, one 40 s away is not.
        for (period, waited) in [(20, Some(20)), (40, None)] {
            let q = quota(&format!(
                "[[resources]]\nname = \"r\"\nrate = {{ limit = 1, period = \"{period}s\", burst = 1 }}"
            ));
            let waiting = Waiting::default();
            assert!(
                waiting
                    .acquire(&q, &req(Duration::ZERO))
                    .await
                    .unwrap()
                    .granted()
            );
            let start = Instant::now();
            let d = waiting.acquire(&q, &req(Duration::MAX)).await.unwrap();
            match waited {
                Some(s) => {
                    assert!(d.granted(), "{period}s: {d:?}");
                    assert_eq!(start.elapsed(), Duration::from_secs(s));
                }
                None => {
                    assert_eq!(d.denial(), Some(Denial::RateLimited));
                    assert_eq!(start.elapsed(), Duration::ZERO, "no pointless waiting");
                }
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_wait_that_cannot_succeed_in_time_is_answered_at_once() {
        let q =
            quota("[[resources]]\nname = \"r\"\nrate = { limit = 1, period = \"10s\", burst = 1 }");
        let waiting = Waiting::default();
        assert!(
            waiting
                .acquire(&q, &req(Duration::ZERO))
                .await
                .unwrap()
                .granted()
        );
        let start = Instant::now();
        let d = waiting
            .acquire(&q, &req(Duration::from_secs(5)))
            .await
            .unwrap();
        assert_eq!(d.denial(), Some(Denial::RateLimited));
        assert_eq!(start.elapsed(), Duration::ZERO, "no pointless waiting");
    }

    #[tokio::test(start_paused = true)]
    async fn a_concurrency_waiter_gets_the_slot_a_release_frees() {
        let q = quota(
            "[[resources]]\nname = \"r\"\nconcurrency = 1\nconcurrency_retry_after = \"50ms\"",
        );
        let waiting = Arc::new(Waiting::default());
        let held = waiting.acquire(&q, &req(Duration::ZERO)).await.unwrap();
        let lease_id = held.grant().unwrap().lease_id;
        let (q2, w2) = (q.clone(), waiting.clone());
        let waiter =
            tokio::spawn(async move { w2.acquire(&q2, &req(Duration::from_secs(2))).await });
        tokio::time::sleep(Duration::from_millis(300)).await;
        q.release(&Release {
            caller: None,
            lease_id,
            outcome: Outcome::Success,
            used_permits: None,
        })
        .await
        .unwrap();
        let d = waiter.await.unwrap().unwrap();
        assert!(d.granted());
        // And one that never gets a slot is denied at its deadline.
        let start = Instant::now();
        let d = waiting
            .acquire(&q, &req(Duration::from_millis(500)))
            .await
            .unwrap();
        assert_eq!(d.denial(), Some(Denial::ConcurrencyLimited));
        assert_eq!(start.elapsed(), Duration::from_millis(500));
    }
}
