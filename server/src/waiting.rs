//! `max_wait`: instead of denying at once, hold an Acquire until capacity frees, and answer with the grant,
//! or with the denial once waiting longer could not help. Waiters on one key (resource + the state it
//! touches) take turns: the highest priority class first, first come first served within a class, and a
//! lower class never ahead of a higher one (a higher class arriving takes the turn at the holder's next
//! wake). Requests without `max_wait` are answered at once and never queue.
//!
//! Waiting polls the engine at the denial's `retry_after` rather than listening for releases: that works
//! the same with a shared store, where releases happen on other servers.

// Wire-facing: every value here may come from a request, so arithmetic is checked or saturating.
#![cfg_attr(not(test), deny(clippy::arithmetic_side_effects))]

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use dashmap::DashMap;
use tokio::{
    sync::{Notify, oneshot},
    time::Instant,
};

use crate::engine::{Acquire, Decision, Denial, EngineError, Quota, Store, Verdict};

/// A waiter's place: its class (0 first), then its arrival.
type Place = (u8, u64);

/// One key's waiters.
#[derive(Debug, Default)]
struct Line {
    state: Mutex<LineState>,
    /// Wakes the turn's holder when a higher class queues behind it.
    preempt: Notify,
}

#[derive(Debug, Default)]
struct LineState {
    /// Whose turn it is, if anyone's.
    turn: Option<Place>,
    /// Waiting for a turn, in the order they get it.
    queued: BTreeMap<Place, oneshot::Sender<()>>,
    /// The next arrival number.
    arrivals: u64,
}

impl Line {
    fn lock(&self) -> std::sync::MutexGuard<'_, LineState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes the turn at `place` if it is free and nobody queued is ahead; else queues for it.
    fn take_or_queue(&self, place: Place) -> Option<oneshot::Receiver<()>> {
        let mut s = self.lock();
        let ahead = s.queued.keys().next().is_some_and(|first| *first < place);
        if s.turn.is_none() && !ahead {
            s.turn = Some(place);
            return None;
        }
        let (tx, rx) = oneshot::channel();
        s.queued.insert(place, tx);
        if s.turn.is_some_and(|holder| place < holder) {
            self.preempt.notify_one();
        }
        Some(rx)
    }

    /// Hands the turn to the first queued waiter still waiting, or frees it.
    fn pass(&self) {
        let mut s = self.lock();
        s.turn = None;
        while let Some((place, tx)) = s.queued.pop_first() {
            if tx.send(()).is_ok() {
                s.turn = Some(place);
                return;
            }
        }
    }

    /// True when a waiter of a higher class than `place` is queued.
    fn outranked(&self, place: Place) -> bool {
        self.lock()
            .queued
            .keys()
            .next()
            .is_some_and(|first| first.0 < place.0)
    }

    /// A queued waiter gives up: true when it had left the queue already (it holds the turn).
    fn leave(&self, place: Place) -> bool {
        self.lock().queued.remove(&place).is_none()
    }

    fn idle(&self) -> bool {
        let s = self.lock();
        s.turn.is_none() && s.queued.is_empty()
    }
}

/// Holding a line's turn; dropping it (a grant, a final denial, a cancelled call) passes the turn on.
struct Turn<'l>(&'l Line);

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        self.0.pass();
    }
}

/// Per-key queues of waiting acquires.
#[derive(Debug, Default)]
pub struct Waiting {
    lines: DashMap<String, Arc<Line>>,
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
        let (key, class) = quota.wait_key(req)?;
        let max_wait = req.max_wait.min(quota.rules().limits.max_wait);
        let deadline = Instant::now()
            .checked_add(max_wait)
            .ok_or_else(|| EngineError::invalid("max_wait", "is too long"))?;
        let line = self.lines.entry(key.clone()).or_default().clone();
        let place = {
            let mut s = line.lock();
            let n = s.arrivals;
            s.arrivals = n.wrapping_add(1);
            (class, n)
        };
        let result = wait(&line, place, deadline, quota, req).await;
        drop(line);
        self.lines
            .remove_if(&key, |_, l| Arc::strong_count(l) == 1 && l.idle());
        result
    }
}

/// Waits for `place`'s turn in `line`, then polls until granted or hopeless; a higher class queuing
/// behind it takes the turn at its next wake (it queues again, first of its class).
async fn wait<S: Store>(
    line: &Line,
    place: Place,
    deadline: Instant,
    quota: &Quota<S>,
    req: &Acquire,
) -> Result<Decision, EngineError> {
    loop {
        if let Some(rx) = line.take_or_queue(place) {
            let given = tokio::time::timeout_at(deadline, rx).await;
            if !matches!(given, Ok(Ok(()))) && !line.leave(place) {
                // Out of time before its turn: one last try, as any late request gets.
                return quota.acquire(req).await;
            }
        }
        let turn = Turn(line);
        match hold(line, place, deadline, quota, req).await? {
            Held::Answered(decision) => return Ok(decision),
            Held::Outranked => drop(turn),
        }
    }
}

/// What holding the turn came to.
enum Held {
    Answered(Decision),
    /// A higher class queued: the turn goes to it.
    Outranked,
}

/// Holding the turn: acquires, sleeping until each denial's retry_after, until a grant, a denial waiting
/// could not help, the deadline, or a higher class queued.
async fn hold<S: Store>(
    line: &Line,
    place: Place,
    deadline: Instant,
    quota: &Quota<S>,
    req: &Acquire,
) -> Result<Held, EngineError> {
    loop {
        let decision = quota.acquire(req).await?;
        let Verdict::Denied {
            reason,
            retry_after,
            ..
        } = &decision.verdict
        else {
            return Ok(Held::Answered(decision));
        };
        let now = Instant::now();
        // `None`: further than an Instant reaches, so past any deadline.
        let wake = now.checked_add(Duration::from_nanos(*retry_after));
        match reason {
            // Exact waits: if it cannot succeed by the deadline, say so now.
            Denial::RateLimited | Denial::Paused | Denial::CircuitOpen
                if wake.is_none_or(|w| w > deadline) =>
            {
                return Ok(Held::Answered(decision));
            }
            _ if now >= deadline => return Ok(Held::Answered(decision)),
            _ => {}
        }
        let until = wake.map_or(deadline, |w| w.min(deadline));
        loop {
            if line.outranked(place) {
                return Ok(Held::Outranked);
            }
            tokio::select! {
                () = tokio::time::sleep_until(until) => break,
                () = line.preempt.notified() => {}
            }
        }
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
        assert!(waiting.lines.is_empty(), "queues are dropped when idle");
    }

    /// Waiters of `classes` (each with its own `max_wait`), arriving in that order once the bucket of a
    /// rule with those classes is empty: (arrival, class, granted, when answered), in answer order.
    async fn waiters(
        classes: &str,
        arrivals: &[(&'static str, u64)],
    ) -> Vec<(usize, &'static str, bool, Duration)> {
        let q = quota(&format!(
            "[[resources]]\nname = \"r\"\nrate = {{ limit = 10, period = \"1s\", burst = 1 }}\n\
             priority = {{ {classes} }}"
        ));
        let waiting = Arc::new(Waiting::default());
        let first = waiting.acquire(&q, &req(Duration::ZERO)).await.unwrap();
        assert!(first.granted());
        let start = Instant::now();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        for (i, &(class, wait_ms)) in arrivals.iter().enumerate() {
            let (q, w, tx) = (q.clone(), waiting.clone(), tx.clone());
            tokio::spawn(async move {
                let mut r = req(Duration::from_millis(wait_ms));
                r.priority = Some(class.to_owned());
                let d = w.acquire(&q, &r).await.unwrap();
                tx.send((i, class, d.granted(), start.elapsed())).unwrap();
            });
            // Let each waiter take its place in the line before the next arrives.
            tokio::task::yield_now().await;
        }
        drop(tx);
        let mut got = Vec::new();
        while let Some(x) = rx.recv().await {
            got.push(x);
        }
        assert!(waiting.lines.is_empty(), "lines are dropped when idle");
        got
    }

    #[tokio::test(start_paused = true)]
    async fn waiters_are_served_highest_class_first_and_fifo_within_a_class() {
        // Arrivals, lowest class first: the batch waiter takes the turn, then every higher one outranks it.
        let arrivals =
            ["batch", "batch", "normal", "critical", "normal", "critical"].map(|c| (c, 10_000));
        let classes = "classes = [\"critical\", \"normal\", \"batch\"], default = \"normal\"";
        let got = waiters(classes, &arrivals).await;
        let order: Vec<_> = got.iter().map(|(i, class, ..)| (*i, *class)).collect();
        let expected = [
            (3, "critical"),
            (5, "critical"),
            (2, "normal"),
            (4, "normal"),
            (0, "batch"),
            (1, "batch"),
        ];
        assert_eq!(order, expected);
        assert!(got.iter().all(|(_, _, granted, _)| *granted));
        let times: Vec<_> = got.iter().map(|(.., t)| t.as_millis()).collect();
        assert_eq!(
            times,
            [100, 200, 300, 400, 500, 600],
            "one per refill, none lost"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiter_out_of_time_leaves_the_line_to_the_next() {
        // A high waiter with 50 ms can never get the token at 100 ms; the low one behind it can.
        let got = waiters(
            "classes = [\"high\", \"low\"]",
            &[("high", 50), ("low", 1000)],
        )
        .await;
        let answers: Vec<_> = got
            .iter()
            .map(|(_, class, granted, _)| (*class, *granted))
            .collect();
        assert_eq!(answers, [("high", false), ("low", true)]);
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
        assert_eq!(waiting.lines.len(), 1, "one queue for one piece of state");
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
