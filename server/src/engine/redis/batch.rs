//! Batching: while [`DEPTH`] calls for a shard are in flight, that shard's next calls wait, and go together
//! as one `batch` call when one of them returns: Nagle without a timer, so a call is sent at once whenever
//! fewer are in flight, never held for company. The first waiter becomes the batch's sender (no task is
//! spawned), and hands its place on when its batch returns. Each call in a batch runs on its own in the script, in arrival order, and is answered
//! on its own: one that fails fails alone (steps.lua `run_batch`).

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex, PoisonError},
};

use redis::Value;
use tokio::sync::oneshot;

use super::Call;
use crate::engine::EngineError;

/// The most calls one batch carries: a step costs Redis well under 100 µs, so a batch stays in the
/// milliseconds, far inside `redis.timeout`.
pub const MAX_BATCH: usize = 64;

/// Calls (or batches) of one lane in flight at once before the next ones wait to go as a batch: enough that
/// a moderately busy shard's calls seldom wait behind another's round trip (one in flight made the median
/// at half of one node's rate twice as long), few enough that a saturated shard's calls still go by the
/// dozen.
pub const DEPTH: usize = 4;

/// Which calls may share a batch: one shard's (a Cluster slot), through one function (the `_end` one runs
/// on a full Redis, the other does not).
type Lane = (u64, bool);

/// The shards' queues.
#[derive(Debug, Default)]
pub(super) struct Batcher {
    lanes: Mutex<HashMap<Lane, Queue>>,
}

/// A lane with calls (or batches) in flight, and the calls waiting behind them.
#[derive(Debug, Default)]
struct Queue {
    in_flight: usize,
    waiting: VecDeque<Waiter>,
}

/// A call waiting for its lane.
#[derive(Debug)]
pub(super) struct Waiter {
    pub(super) call: Call,
    tx: oneshot::Sender<Turn>,
}

impl Waiter {
    /// Answers the waiter (gone already: nothing to do).
    pub(super) fn answer(self, result: Result<Value, EngineError>) {
        let _ = self.tx.send(Turn::Done(result));
    }
}

/// What a waiting call is told.
#[derive(Debug)]
pub(super) enum Turn {
    /// Its answer, from a batch another call sent.
    Done(Result<Value, EngineError>),
    /// Its lane is free: it sends its own call with these; when dropped, the lane passes on.
    Lead(Vec<Waiter>, HandOff),
}

/// What entering a lane gives.
#[derive(Debug)]
pub(super) enum Entry {
    /// The lane was free: send the call now; when dropped, the lane passes on.
    Send(HandOff),
    /// Wait for a turn.
    Wait(oneshot::Receiver<Turn>),
}

/// Holds a lane while its call is in flight: dropped (answered, failed or cancelled), it hands the lane to
/// the next waiter, with the calls waiting behind it.
#[derive(Debug)]
pub(super) struct HandOff {
    batcher: Arc<Batcher>,
    lane: Lane,
    /// False once the lane was passed on some other way.
    armed: bool,
}

impl Drop for HandOff {
    fn drop(&mut self) {
        if self.armed {
            self.batcher.hand_off(self.lane);
        }
    }
}

impl Batcher {
    fn lanes(&self) -> std::sync::MutexGuard<'_, HashMap<Lane, Queue>> {
        self.lanes.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Enters `call`'s lane: send now, or wait.
    pub(super) fn enter(self: &Arc<Self>, shard: u64, call: &Call) -> Entry {
        let lane = (shard, call.ending);
        let mut lanes = self.lanes();
        let queue = lanes.entry(lane).or_default();
        if queue.in_flight < DEPTH {
            queue.in_flight += 1;
            return Entry::Send(HandOff {
                batcher: self.clone(),
                lane,
                armed: true,
            });
        }
        let (tx, rx) = oneshot::channel();
        queue.waiting.push_back(Waiter {
            call: call.clone(),
            tx,
        });
        Entry::Wait(rx)
    }

    /// One of the lane's calls returned: its place goes to the first live waiter, which leads the next batch
    /// (with up to [`MAX_BATCH`]` - 1` more behind it), or is free. Waiters whose callers went away are
    /// dropped unsent.
    fn hand_off(self: &Arc<Self>, lane: Lane) {
        let mut lanes = self.lanes();
        let Some(queue) = lanes.get_mut(&lane) else {
            return;
        };
        while let Some(lead) = queue.waiting.pop_front() {
            if lead.tx.is_closed() {
                continue;
            }
            let mut rest = Vec::new();
            while rest.len() + 1 < MAX_BATCH {
                match queue.waiting.pop_front() {
                    Some(w) if w.tx.is_closed() => {}
                    Some(w) => rest.push(w),
                    None => break,
                }
            }
            let turn = Turn::Lead(
                rest,
                HandOff {
                    batcher: self.clone(),
                    lane,
                    armed: true,
                },
            );
            match lead.tx.send(turn) {
                Ok(()) => return,
                Err(Turn::Lead(rest, mut handoff)) => {
                    // Gone between the check and the send: the next one leads (this hand-off must not run
                    // under the lock: it is disarmed, and the loop goes on).
                    handoff.armed = false;
                    for w in rest.into_iter().rev() {
                        queue.waiting.push_front(w);
                    }
                }
                Err(Turn::Done(_)) => {}
            }
        }
        // Nobody waiting: the place is free, and an idle lane goes (a free lane is an absent one).
        queue.in_flight = queue.in_flight.saturating_sub(1);
        if queue.in_flight == 0 {
            lanes.remove(&lane);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::redis::protocol::arg;

    fn call() -> Call {
        Call::new(arg::rate::FIELDS, None)
    }

    fn lead(turn: Result<Turn, oneshot::error::TryRecvError>) -> (Vec<Waiter>, HandOff) {
        match turn {
            Ok(Turn::Lead(rest, lane)) => (rest, lane),
            other => panic!("expected to lead, got {other:?}"),
        }
    }

    #[test]
    fn a_lone_call_goes_at_once_and_the_next_ones_lead_in_turn() {
        let b = Arc::new(Batcher::default());
        let Entry::Send(first) = b.enter(1, &call()) else {
            panic!("a free lane sends at once");
        };
        // Up to DEPTH calls go at once; the next ones wait.
        let others: Vec<_> = (1..DEPTH)
            .map(|_| match b.enter(1, &call()) {
                Entry::Send(h) => h,
                Entry::Wait(_) => panic!("fewer than DEPTH in flight: sent at once"),
            })
            .collect();
        let mut waiting: Vec<_> = (0..100)
            .map(|_| match b.enter(1, &call()) {
                Entry::Wait(rx) => rx,
                Entry::Send(_) => panic!("the lane is busy"),
            })
            .collect();
        // Another shard, and the `_end` function's lane of this shard, are free.
        assert!(matches!(b.enter(2, &call()), Entry::Send(_)));
        let mut ending = call();
        ending.ending = true;
        assert!(matches!(b.enter(1, &ending), Entry::Send(_)));
        // A caller that went away is skipped.
        drop(waiting.remove(0));
        drop(first);
        let (rest, lane) = lead(waiting[0].try_recv());
        assert_eq!(rest.len(), MAX_BATCH - 1, "a batch is capped");
        for w in rest {
            w.answer(Ok(Value::Okay));
        }
        for rx in &mut waiting[1..MAX_BATCH] {
            assert!(matches!(rx.try_recv(), Ok(Turn::Done(Ok(Value::Okay)))));
        }
        drop(lane);
        let (rest, lane) = lead(waiting[MAX_BATCH].try_recv());
        assert_eq!(
            rest.len(),
            99 - MAX_BATCH - 1,
            "the rest, behind the next leader"
        );
        drop(rest);
        drop(lane);
        assert!(
            b.lanes().get(&(1, false)).is_some(),
            "the others are still in flight"
        );
        drop(others);
        assert!(b.lanes().get(&(1, false)).is_none(), "an idle lane is gone");
    }

    #[test]
    fn a_leader_gone_before_sending_passes_the_lane_on() {
        let b = Arc::new(Batcher::default());
        let Entry::Send(first) = b.enter(7, &call()) else {
            panic!("free");
        };
        let others: Vec<_> = (1..DEPTH).map(|_| b.enter(7, &call())).collect();
        let Entry::Wait(a) = b.enter(7, &call()) else {
            panic!("busy");
        };
        let Entry::Wait(mut c) = b.enter(7, &call()) else {
            panic!("busy");
        };
        drop(first);
        // `a` was made leader (with `c` behind it) and went away unread: `c` is told to go alone.
        drop(a);
        assert!(c.try_recv().is_err());
        drop(others);
        assert!(
            b.lanes().is_empty(),
            "the place was freed when the leader's turn was dropped"
        );
    }
}
