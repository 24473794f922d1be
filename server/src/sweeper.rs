//! The background task that reclaims expired leases (so a worker that dies returns its slot within
//! TTL + one sweep interval, without any request touching the key), forgets lapsed tombstones and request
//! ids, and every few seconds drops idle state.
//!
//! Expiries are reclaimed in bounded steps with a yield in between, so a burst of them never holds up the
//! calls served on the same threads. Dropping idle state is a pass over every key, so it runs on a blocking
//! thread, where the serving threads are not stuck behind it.

use std::{future::Future, sync::Arc, time::Duration};

use tokio::time::Instant;

use crate::engine::{Quota, Store};

/// Expired leases reclaimed per step.
const CHUNK: usize = 512;

/// How often idle state is dropped.
const EVICT_EVERY: Duration = Duration::from_secs(5);

/// Sweeps every `interval` until `shutdown` completes.
pub async fn run<S: Store>(
    quota: Arc<Quota<S>>,
    interval: Duration,
    shutdown: impl Future<Output = ()>,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    let mut last_evict = Instant::now();
    loop {
        tokio::select! {
            _ = &mut shutdown => return,
            _ = ticker.tick() => {}
        }
        sweep_expired(&quota).await;
        if last_evict.elapsed() >= EVICT_EVERY {
            last_evict = Instant::now();
            evict_idle(&quota).await;
        }
    }
}

async fn sweep_expired<S: Store>(quota: &Quota<S>) {
    loop {
        match quota.sweep_some(CHUNK).await {
            Ok(sweep) => {
                if !sweep.expired.is_empty() {
                    tracing::debug!(
                        expired_leases = sweep.expired.len(),
                        forgotten = sweep.forgotten,
                        "sweep"
                    );
                }
                if !sweep.more {
                    return;
                }
                tokio::task::yield_now().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "sweep failed");
                return;
            }
        }
    }
}

async fn evict_idle<S: Store>(quota: &Arc<Quota<S>>) {
    let (quota, runtime) = (quota.clone(), tokio::runtime::Handle::current());
    match tokio::task::spawn_blocking(move || runtime.block_on(quota.evict_idle())).await {
        Ok(Ok(0)) => {}
        Ok(Ok(evicted)) => tracing::debug!(evicted_keys = evicted, "idle state dropped"),
        Ok(Err(e)) => tracing::warn!(error = %e, "dropping idle state failed"),
        Err(e) => tracing::warn!(error = %e, "the idle-state pass did not finish"),
    }
}
