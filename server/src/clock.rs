//! Time, injected. Every limiter, lease table and breaker reads time through [`Clock`], so tests drive
//! time by hand with [`FakeClock`] and never sleep. This is the only module that reads the system time.

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant, SystemTime},
};

/// Nanoseconds on a clock's monotonic timeline, counted from the clock's own epoch (its creation).
pub type Nanos = u64;

/// The longest duration quotad takes from a request or the config (365 days): anything longer is refused with
/// an error naming the field, so no instant plus a duration can overflow (the timeline has 584 years).
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

/// Converts a duration to [`Nanos`], saturating at `u64::MAX` (about 584 years).
pub fn nanos(d: Duration) -> Nanos {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// A source of monotonic time, plus a mapping of that timeline onto wall-clock time for responses.
pub trait Clock: Send + Sync + 'static {
    /// Now, on the monotonic timeline. Never goes backwards.
    fn now(&self) -> Nanos;
    /// The wall-clock instant that corresponds to `t` on the monotonic timeline.
    fn wall(&self, t: Nanos) -> SystemTime;
}

/// The production clock: [`Instant`] for decisions, with the wall time read once at start for responses.
#[derive(Debug)]
pub struct MonotonicClock {
    start: Instant,
    start_wall: SystemTime,
}

impl MonotonicClock {
    /// A clock whose epoch is now.
    pub fn new() -> Self {
        Self {
            start: Instant::now(),
            start_wall: SystemTime::now(),
        }
    }
}

impl Default for MonotonicClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for MonotonicClock {
    fn now(&self) -> Nanos {
        nanos(self.start.elapsed())
    }

    fn wall(&self, t: Nanos) -> SystemTime {
        self.start_wall + Duration::from_nanos(t)
    }
}

/// A clock that only moves when a test says so.
///
/// ```
/// use quotad_server::clock::{Clock, FakeClock};
/// use std::time::Duration;
/// let clock = FakeClock::new();
/// clock.advance(Duration::from_millis(1500));
/// assert_eq!(clock.now(), 1_500_000_000);
/// ```
#[derive(Debug, Default)]
pub struct FakeClock {
    now: AtomicU64,
}

impl FakeClock {
    /// A fake clock at its epoch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Moves time forward by `d`.
    pub fn advance(&self, d: Duration) {
        self.now.fetch_add(nanos(d), Ordering::SeqCst);
    }

    /// Moves time forward by `n` nanoseconds.
    pub fn advance_nanos(&self, n: Nanos) {
        self.now.fetch_add(n, Ordering::SeqCst);
    }
}

impl Clock for FakeClock {
    fn now(&self) -> Nanos {
        self.now.load(Ordering::SeqCst)
    }

    fn wall(&self, t: Nanos) -> SystemTime {
        // A fixed, recognisable epoch (2026-01-01T00:00:00Z) keeps wall times in tests deterministic.
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_767_225_600) + Duration::from_nanos(t)
    }
}

/// A clock that follows tokio's time, so timer-driven code (the sweeper, `max_wait`) can be tested with
/// `tokio::time::pause()` and `advance()`; outside a paused runtime it is a plain monotonic clock.
#[derive(Debug)]
pub struct TokioClock {
    start: tokio::time::Instant,
    start_wall: SystemTime,
}

impl TokioClock {
    /// A clock whose epoch is tokio's now. Must be created inside a tokio runtime if time is paused.
    pub fn new() -> Self {
        Self {
            start: tokio::time::Instant::now(),
            start_wall: SystemTime::now(),
        }
    }
}

impl Default for TokioClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for TokioClock {
    fn now(&self) -> Nanos {
        nanos(tokio::time::Instant::now().saturating_duration_since(self.start))
    }

    fn wall(&self, t: Nanos) -> SystemTime {
        self.start_wall + Duration::from_nanos(t)
    }
}
