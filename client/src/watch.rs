//! Failing fast locally. [`Client::watch`] follows resources' breakers and pauses over quotad's
//! `WatchCircuitState` stream; while one is OPEN or paused, `acquire` refuses it at once, without a round
//! trip (as a denial: the retry policy then waits it out, still without calling quotad). And after a call
//! finds quotad unreachable, the client stops trying for a short jittered interval ([`DOWN_FOR`]), so a
//! thousand callers do not each wait out a connect timeout against a dead server.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, SystemTime},
};

use quotad_api::v1 as pb;
use tokio::{task::JoinHandle, time::Instant};

use crate::{Client, client::Inner};

/// After quotad is found unreachable, calls fail at once for a random time in this range.
pub const DOWN_FOR: (Duration, Duration) = (Duration::from_millis(100), Duration::from_millis(200));

/// What a watched resource's last event said.
#[derive(Debug, Clone, Copy, Default)]
struct Refuse {
    open_until: Option<Instant>,
    paused_until: Option<Instant>,
}

/// What the client knows without asking quotad.
#[derive(Debug, Default)]
pub(crate) struct Local {
    watched: Mutex<HashMap<String, Refuse>>,
    down_until: Mutex<Option<Instant>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Local {
    /// A denial to answer locally for `resource`, if its watched breaker is OPEN or it is paused.
    pub(crate) fn refusal(&self, resource: &str) -> Option<pb::AcquireResponse> {
        let r = *lock(&self.watched).get(resource)?;
        let now = Instant::now();
        let left = |t: Option<Instant>| t.filter(|&t| t > now).map(|t| t - now);
        let (decision, wait, by) = match (left(r.paused_until), left(r.open_until)) {
            (Some(w), _) => (pb::Decision::Paused, w, "pause (watched)"),
            (None, Some(w)) => (pb::Decision::CircuitOpen, w, "breaker (watched)"),
            (None, None) => return None,
        };
        Some(pb::AcquireResponse {
            granted: false,
            decision: decision.into(),
            retry_after: prost_types::Duration::try_from(wait).ok(),
            denied_by: by.to_owned(),
            resource: resource.to_owned(),
            ..Default::default()
        })
    }

    fn update(&self, e: &pb::GetCircuitStateResponse) {
        let in_ = |d: Option<&prost_types::Duration>| {
            d.and_then(|d| Duration::try_from(*d).ok())
                .map(|d| Instant::now() + d)
        };
        let until_wall = |t: Option<&prost_types::Timestamp>| {
            let at = SystemTime::try_from(*t?).ok()?;
            at.duration_since(SystemTime::now())
                .ok()
                .map(|d| Instant::now() + d)
        };
        let open = e.state == pb::CircuitState::Open as i32;
        let refuse = Refuse {
            open_until: if open {
                in_(e.half_open_after.as_ref())
            } else {
                None
            },
            paused_until: until_wall(e.paused_until.as_ref()),
        };
        lock(&self.watched).insert(e.resource.clone(), refuse);
    }

    /// Forgets what `resources` said (the watch broke: stale state must not refuse calls).
    fn forget(&self, resources: &[String]) {
        let mut w = lock(&self.watched);
        for r in resources {
            w.remove(r);
        }
    }

    /// True while quotad was found unreachable a moment ago.
    pub(crate) fn down(&self) -> Option<Duration> {
        let until = (*lock(&self.down_until))?;
        let now = Instant::now();
        (until > now).then(|| until - now)
    }

    /// quotad did not answer: stop trying for a short jittered while.
    pub(crate) fn mark_down(&self) {
        let (lo, hi) = DOWN_FOR;
        let span = u64::try_from((hi - lo).as_nanos()).unwrap_or(0);
        let d = lo + Duration::from_nanos(fastrand::u64(0..=span));
        *lock(&self.down_until) = Some(Instant::now() + d);
    }

    /// quotad answered.
    pub(crate) fn mark_up(&self) {
        let mut d = lock(&self.down_until);
        if d.is_some() {
            *d = None;
        }
    }
}

/// A running watch; dropping it (or [`stop`](Self::stop)) ends it and forgets what it learnt.
#[derive(Debug)]
pub struct Watch {
    task: JoinHandle<()>,
    inner: Arc<Inner>,
    resources: Vec<String>,
}

impl Watch {
    /// Ends the watch.
    pub fn stop(self) {}
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.task.abort();
        self.inner.local.forget(&self.resources);
    }
}

async fn follow(inner: Arc<Inner>, resources: Vec<String>) {
    let req = pb::WatchCircuitStateRequest {
        resources: resources
            .iter()
            .map(|r| pb::GetCircuitStateRequest {
                resource: r.clone(),
                ..Default::default()
            })
            .collect(),
    };
    loop {
        match inner.control().watch_circuit_state(req.clone()).await {
            Ok(stream) => {
                let mut stream = stream.into_inner();
                while let Ok(Some(event)) = stream.message().await {
                    if let Some(state) = &event.state {
                        inner.local.update(state);
                    }
                }
            }
            Err(e) => tracing::debug!(error = %e, "circuit-state watch refused; retrying"),
        }
        // The stream ended or broke: what it said may be stale. Watch again after a jittered second.
        inner.local.forget(&resources);
        let wait = Duration::from_millis(500 + fastrand::u64(0..1000));
        tokio::time::sleep(wait).await;
    }
}

impl Client {
    /// Follows `resources`' breakers and pauses (quotad's `WatchCircuitState`, up to 64), so that while
    /// one is OPEN or paused [`acquire`](Self::acquire) refuses it locally, without a round trip. Reconnects
    /// by itself; ends when the returned [`Watch`] is dropped. Needs a tokio runtime.
    pub fn watch<I, S>(&self, resources: I) -> Watch
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let resources: Vec<String> = resources.into_iter().map(Into::into).collect();
        let task = tokio::spawn(follow(self.inner.clone(), resources.clone()));
        Watch {
            task,
            inner: self.inner.clone(),
            resources,
        }
    }
}
