//! `WatchCircuitState`: one task per watcher reads its resources' breakers every [`EVERY`] and sends what
//! changed. Bounded everywhere: at most [`MAX_RESOURCES`] resources per watch, [`MAX_WATCHED`] watched
//! resources per server in all (so watchers cannot turn into more than `MAX_WATCHED` store reads per
//! [`EVERY`], about 4,000 a second), and [`BUFFER`] unread events per watcher (past that it is dropped, never
//! buffered for ever). Reads go to the store, so with Redis a change made through any node reaches every
//! watcher.

use std::{pin::Pin, sync::Arc, time::Duration};

use quotad_api::v1 as pb;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio_stream::Stream;
use tonic::Status;

use super::convert;
use crate::engine::{BreakerTarget, CircuitView, EngineError, Quota, Store};

/// How often a watcher's resources are read.
pub const EVERY: Duration = Duration::from_millis(250);
/// Resources one watch may name.
pub const MAX_RESOURCES: usize = 64;
/// Resources watched at once on one server, all watches together (each costs a store read per [`EVERY`]).
pub const MAX_WATCHED: usize = 1024;
/// Events a watcher may leave unread before it is dropped.
pub const BUFFER: usize = 16;

/// The stream a watcher reads.
pub type Events = Pin<Box<dyn Stream<Item = Result<pb::CircuitStateEvent, Status>> + Send>>;

/// What the watches share: the cap on their number, and the server's stop signal.
#[derive(Debug, Clone)]
pub struct Watches {
    slots: Arc<Semaphore>,
    stop: Option<watch::Receiver<bool>>,
}

impl Default for Watches {
    fn default() -> Self {
        Self {
            slots: Arc::new(Semaphore::new(MAX_WATCHED)),
            stop: None,
        }
    }
}

/// What a watcher is told about: a change in any of these is an event.
#[derive(Debug, Clone, PartialEq)]
struct Seen {
    state: i32,
    paused_until: Option<prost_types::Timestamp>,
    effective: u64,
    half_open_at: Option<prost_types::Timestamp>,
    probes_left: u32,
}

fn seen(e: &pb::GetCircuitStateResponse) -> Seen {
    Seen {
        state: e.state,
        paused_until: e.paused_until,
        effective: e.effective_rate_per_second.to_bits(),
        half_open_at: e.half_open_at,
        probes_left: e.half_open_probes_left,
    }
}

impl Watches {
    /// Watches that end when `stop` turns true.
    pub fn with_stop(stop: watch::Receiver<bool>) -> Self {
        Self {
            stop: Some(stop),
            ..Self::default()
        }
    }

    /// Starts a watch of `targets` (already bound to the caller's tenant), or says why not.
    pub async fn start<S: Store>(
        &self,
        quota: Arc<Quota<S>>,
        targets: Vec<BreakerTarget>,
    ) -> Result<Events, Status> {
        if targets.is_empty() || targets.len() > MAX_RESOURCES {
            return Err(EngineError::invalid(
                "resources",
                format!("name 1 to {MAX_RESOURCES} resources"),
            )
            .into());
        }
        // At most MAX_RESOURCES (64), checked above: the cast cannot truncate.
        let n = targets.len() as u32;
        let slot = self.slots.clone().try_acquire_many_owned(n).map_err(|_| {
            Status::resource_exhausted(format!(
                "this server already watches {MAX_WATCHED} resources for its watchers; retry later"
            ))
        })?;
        // A resource that does not exist (or a bad descriptor) is refused now, not as a broken stream.
        let mut first = Vec::with_capacity(targets.len());
        for t in &targets {
            first.push(quota.circuit(t).await?);
        }
        let (tx, rx) = mpsc::channel(BUFFER);
        tokio::spawn(run(quota, targets, first, tx, self.stop.clone(), slot));
        Ok(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx)))
    }
}

/// Sends `event`; false when the watcher is gone or too slow (it is then told why, if it can be).
fn send(
    tx: &mpsc::Sender<Result<pb::CircuitStateEvent, Status>>,
    event: pb::CircuitStateEvent,
) -> bool {
    match tx.try_send(Ok(event)) {
        Ok(()) => true,
        Err(mpsc::error::TrySendError::Full(_)) => {
            tracing::debug!("a circuit-state watcher fell {BUFFER} events behind; dropped");
            false
        }
        Err(mpsc::error::TrySendError::Closed(_)) => false,
    }
}

async fn stopped(stop: &mut Option<watch::Receiver<bool>>) {
    match stop {
        Some(rx) => {
            let _ = rx.wait_for(|s| *s).await;
        }
        None => std::future::pending().await,
    }
}

async fn run<S: Store>(
    quota: Arc<Quota<S>>,
    targets: Vec<BreakerTarget>,
    first: Vec<CircuitView>,
    tx: mpsc::Sender<Result<pb::CircuitStateEvent, Status>>,
    mut stop: Option<watch::Receiver<bool>>,
    _slot: OwnedSemaphorePermit,
) {
    let clock = quota.clock();
    let mut last = Vec::with_capacity(first.len());
    for view in first {
        let state = convert::circuit_out(view, clock.as_ref());
        last.push(seen(&state));
        if !send(
            &tx,
            pb::CircuitStateEvent {
                state: Some(state),
                initial: true,
            },
        ) {
            return;
        }
    }
    loop {
        tokio::select! {
            () = tokio::time::sleep(EVERY) => {}
            () = tx.closed() => return,
            () = stopped(&mut stop) => {
                let _ = tx.try_send(Err(Status::unavailable("quotad is shutting down; watch again elsewhere")));
                return;
            }
        }
        for (t, before) in targets.iter().zip(last.iter_mut()) {
            let state = match quota.circuit(t).await {
                Ok(view) => convert::circuit_out(view, clock.as_ref()),
                Err(e) => {
                    let _ = tx.try_send(Err(e.into()));
                    return;
                }
            };
            let now = seen(&state);
            if now != *before {
                *before = now;
                if !send(
                    &tx,
                    pb::CircuitStateEvent {
                        state: Some(state),
                        initial: false,
                    },
                ) {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio_stream::StreamExt;

    use super::*;
    use crate::{clock::FakeClock, config, engine::MemoryStore};

    fn quota() -> Arc<Quota<MemoryStore>> {
        let rules = config::load_str("[[resources]]\nname = \"r.*\"\nconcurrency = 1")
            .unwrap()
            .rules;
        let store = MemoryStore::new(&rules);
        Arc::new(Quota::new(rules, store, Arc::new(FakeClock::new())).expect("rules held"))
    }

    fn targets(n: usize) -> Vec<BreakerTarget> {
        (0..n)
            .map(|i| BreakerTarget {
                resource: format!("r.{i}"),
                descriptors: vec![],
            })
            .collect()
    }

    #[tokio::test]
    async fn a_watcher_that_does_not_read_is_dropped_not_buffered() {
        // Seventeen initial events for a watcher that reads none: the buffer holds sixteen, then the
        // watch ends; what was buffered can still be read, and then the stream is over.
        let w = Watches::default();
        let mut events = w.start(quota(), targets(BUFFER + 1)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut read = 0;
        while let Some(e) = tokio::time::timeout(Duration::from_secs(5), events.next())
            .await
            .unwrap()
        {
            assert!(e.unwrap().initial);
            read += 1;
        }
        assert_eq!(read, BUFFER);
        assert_eq!(
            w.slots.available_permits(),
            MAX_WATCHED,
            "its slots are free again"
        );
    }

    #[tokio::test]
    async fn watches_are_bounded() {
        let w = Watches::default();
        let q = quota();
        assert_eq!(
            w.start(q.clone(), targets(MAX_RESOURCES + 1))
                .await
                .err()
                .unwrap()
                .code(),
            tonic::Code::InvalidArgument
        );
        let mut held = Vec::new();
        for _ in 0..MAX_WATCHED / MAX_RESOURCES {
            held.push(w.start(q.clone(), targets(MAX_RESOURCES)).await.unwrap());
        }
        let e = w.start(q.clone(), targets(1)).await.err().unwrap();
        assert_eq!(e.code(), tonic::Code::ResourceExhausted);
        drop(held);
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert!(
            w.start(q, targets(1)).await.is_ok(),
            "closed watches give their slots back"
        );
    }
}
