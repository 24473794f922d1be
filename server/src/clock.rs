//! Time, injected. Every limiter, lease table and breaker reads time through [`Clock`], so tests drive
//! time by hand with [`FakeClock`] and never sleep. This is the only module that reads the system time.

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant, SystemTime},
};

/// Nanoseconds since the Unix epoch, on one timeline shared by every process: a stored instant (a bucket's
/// full-again time, a lease's expiry, a pause, a breaker's half-open time) means the same on another node
/// and after a restart. Clocks keep it monotonic within a process (anchored to the wall clock once, then
/// advanced by a monotonic clock), so a wall-clock step never moves decisions backwards.
pub type Nanos = u64;

/// `t` as a wall-clock time.
fn unix(t: Nanos) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_nanos(t)
}

/// Now on the wall clock, as [`Nanos`] (0 before 1970, which no machine running quotad reports).
fn unix_now() -> Nanos {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, nanos)
}

/// The longest duration quotad takes from a request or the config (365 days), so no instant plus a duration
/// can overflow (the timeline has 584 years): a longer one in the config is refused naming the key; on the
/// wire it is capped to this, then to the field's own limit.
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

/// The production clock: the wall clock read once at start, then advanced by [`Instant`].
#[derive(Debug)]
pub struct MonotonicClock {
    start: Instant,
    start_unix: Nanos,
}

impl MonotonicClock {
    /// A clock anchored to the wall clock now.
    pub fn new() -> Self {
        Self {
            start: Instant::now(),
            start_unix: unix_now(),
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
        self.start_unix.saturating_add(nanos(self.start.elapsed()))
    }

    fn wall(&self, t: Nanos) -> SystemTime {
        unix(t)
    }
}

/// A clock that only moves when a test says so. It starts at [`FakeClock::EPOCH`] (2026-01-01T00:00:00Z),
/// so wall times in tests are deterministic.
///
/// ```
/// use quotad_server::clock::{Clock, FakeClock};
/// use std::time::Duration;
/// let clock = FakeClock::new();
/// clock.advance(Duration::from_millis(1500));
/// assert_eq!(clock.now(), FakeClock::EPOCH + 1_500_000_000);
/// ```
#[derive(Debug)]
pub struct FakeClock {
    now: AtomicU64,
}

impl Default for FakeClock {
    fn default() -> Self {
        Self {
            now: AtomicU64::new(Self::EPOCH),
        }
    }
}

impl FakeClock {
    /// Where every fake clock starts: 2026-01-01T00:00:00Z, in Unix nanoseconds.
    pub const EPOCH: Nanos = 1_767_225_600 * 1_000_000_000;

    /// A fake clock at [`EPOCH`](Self::EPOCH).
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
        unix(t)
    }
}

/// A clock that follows tokio's time, so timer-driven code (the sweeper, `max_wait`) can be tested with
/// `tokio::time::pause()` and `advance()`; outside a paused runtime it is a plain monotonic clock.
#[derive(Debug)]
pub struct TokioClock {
    start: tokio::time::Instant,
    start_unix: Nanos,
}

impl TokioClock {
    /// A clock anchored to the wall clock now, advancing with tokio's time. Must be created inside a tokio
    /// runtime if time is paused.
    pub fn new() -> Self {
        Self {
            start: tokio::time::Instant::now(),
            start_unix: unix_now(),
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
        self.start_unix.saturating_add(nanos(
            tokio::time::Instant::now().saturating_duration_since(self.start),
        ))
    }

    fn wall(&self, t: Nanos) -> SystemTime {
        unix(t)
    }
}
