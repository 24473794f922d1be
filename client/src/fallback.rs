//! What to do when quotad itself cannot be reached beyond the retry policy: fail closed (an error), fail
//! open (proceed unlimited, logged and counted), or fall back to a local limiter at a configured safe
//! rate and concurrency (Doorman's "safe capacity").

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use tokio::{
    sync::{OwnedSemaphorePermit, Semaphore},
    time::Instant,
};

/// Safe limits a single client may use on its own while quotad is unreachable.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LocalLimits {
    /// Tokens per second.
    pub rate_per_second: f64,
    /// Bucket capacity.
    pub burst: u32,
    /// Calls in flight at once.
    pub max_concurrent: u32,
}

/// The policy when quotad is unreachable.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum Unreachable {
    /// Return [`Error::Unavailable`](crate::Error::Unavailable): safest for the downstream.
    #[default]
    FailClosed,
    /// Proceed without a lease: safest for the caller's availability. Logged and counted.
    FailOpen,
    /// Proceed within [`LocalLimits`], per resource, until quotad is back.
    LocalFallback(LocalLimits),
}

/// A local token bucket plus semaphore.
#[derive(Debug)]
pub(crate) struct LocalLimiter {
    limits: LocalLimits,
    bucket: Mutex<(f64, Instant)>,
    slots: Arc<Semaphore>,
}

impl LocalLimiter {
    fn new(limits: LocalLimits) -> Self {
        Self {
            limits,
            bucket: Mutex::new((f64::from(limits.burst), Instant::now())),
            slots: Arc::new(Semaphore::new(limits.max_concurrent.max(1) as usize)),
        }
    }

    /// A local slot, or how long until one could be had.
    pub(crate) fn try_acquire(&self, permits: u64) -> Result<OwnedSemaphorePermit, Duration> {
        let slot = self
            .slots
            .clone()
            .try_acquire_owned()
            .map_err(|_| Duration::from_millis(100))?;
        let rate = self.limits.rate_per_second.max(f64::MIN_POSITIVE);
        let mut b = self.bucket.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        let refilled = b.0 + now.duration_since(b.1).as_secs_f64() * rate;
        b.0 = refilled.min(f64::from(self.limits.burst));
        b.1 = now;
        let need = permits as f64;
        if b.0 >= need {
            b.0 -= need;
            Ok(slot)
        } else {
            Err(Duration::from_secs_f64(((need - b.0) / rate).min(3600.0)))
        }
    }
}

/// One local limiter per resource.
#[derive(Debug, Default)]
pub(crate) struct LocalLimiters {
    by_resource: Mutex<HashMap<String, Arc<LocalLimiter>>>,
}

impl LocalLimiters {
    pub(crate) fn get(&self, resource: &str, limits: LocalLimits) -> Arc<LocalLimiter> {
        let mut map = self
            .by_resource
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        map.entry(resource.to_owned())
            .or_insert_with(|| Arc::new(LocalLimiter::new(limits)))
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn local_limits_apply_rate_and_concurrency() {
        let l = LocalLimiter::new(LocalLimits {
            rate_per_second: 2.0,
            burst: 2,
            max_concurrent: 2,
        });
        let a = l.try_acquire(1).unwrap();
        let _b = l.try_acquire(1).unwrap();
        assert!(l.try_acquire(1).is_err(), "both slots held");
        drop(a);
        assert_eq!(
            l.try_acquire(1).unwrap_err(),
            Duration::from_millis(500),
            "bucket empty: 0.5 s per token"
        );
        tokio::time::advance(Duration::from_millis(500)).await;
        assert!(l.try_acquire(1).is_ok());
    }
}
