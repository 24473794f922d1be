//! The background task that reclaims expired leases (so a worker that dies returns its slot within
//! TTL + one sweep interval, without any request touching the key) and drops idle state.

use std::{future::Future, sync::Arc, time::Duration};

use crate::engine::{Quota, Store};

/// Expired leases reclaimed per step.
const CHUNK: usize = 512;

/// Sweeps every `interval` until `shutdown` completes.
pub async fn run<S: Store>(
    quota: Arc<Quota<S>>,
    interval: Duration,
    shutdown: impl Future<Output = ()>,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => return,
            _ = ticker.tick() => {}
        }
        // In chunks, yielding in between: a burst of expiries never holds up the calls being served.
        loop {
            match quota.sweep_some(CHUNK).await {
                Ok(sweep) => {
                    if !sweep.expired.is_empty() || sweep.evicted_keys > 0 {
                        tracing::debug!(
                            expired_leases = sweep.expired.len(),
                            evicted_keys = sweep.evicted_keys,
                            forgotten = sweep.forgotten,
                            "sweep"
                        );
                    }
                    if !sweep.more {
                        break;
                    }
                    tokio::task::yield_now().await;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "sweep failed");
                    break;
                }
            }
        }
    }
}
