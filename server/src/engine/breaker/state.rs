//! The breaker state machine: CLOSED counts outcomes, OPEN refuses, HALF_OPEN lets exactly
//! `half_open_probes` calls through and closes or re-opens on what they report.

use super::{BreakerSpec, SlidingWindow};
use crate::clock::{Nanos, nanos};

/// The three states, as clients see them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BreakerState {
    /// Calls flow.
    Closed,
    /// Calls are refused until the open period ends.
    Open,
    /// A fixed number of probe calls are let through.
    HalfOpen,
}

impl BreakerState {
    /// Lower-case name for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half_open",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    Closed,
    Open { until: Nanos },
    HalfOpen { probes_left: u32, successes: u32 },
}

/// What the breaker says to one acquire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// CLOSED: go ahead.
    Allowed,
    /// HALF_OPEN: this call is one of the probes. The token names the half-open period it belongs to.
    Probe(u64),
    /// OPEN, or HALF_OPEN with every probe out: retry after this long.
    Rejected {
        /// Time until a retry could be admitted.
        retry_after: Nanos,
    },
}

/// A change of state, for logs and metrics. Three bytes: it travels in every call's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    /// State before.
    pub from: BreakerState,
    /// State after.
    pub to: BreakerState,
    /// Why.
    pub reason: Reason,
}

/// Why a breaker changed state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// OPEN long enough: HALF_OPEN.
    OpenPeriodOver,
    /// `failure_rate` reached with at least `min_calls`.
    FailureRate,
    /// `consecutive_failures` in a row.
    ConsecutiveFailures,
    /// A probe failed.
    FailureWhileHalfOpen,
    /// `half_open_successes` probes succeeded.
    ProbesSucceeded,
    /// An operator's ResetBreaker.
    Reset,
    /// An operator's ForceOpenBreaker.
    ForcedOpen,
    /// A change a store reported in words this build does not know.
    Changed,
}

impl Reason {
    const ALL: [Self; 8] = [
        Self::OpenPeriodOver,
        Self::FailureRate,
        Self::ConsecutiveFailures,
        Self::FailureWhileHalfOpen,
        Self::ProbesSucceeded,
        Self::Reset,
        Self::ForcedOpen,
        Self::Changed,
    ];

    /// In a few words, for logs and the status page (the Redis store's script uses the same words).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::OpenPeriodOver => "open period over",
            Self::FailureRate => "failure rate reached",
            Self::ConsecutiveFailures => "consecutive failures",
            Self::FailureWhileHalfOpen => "failure while half-open",
            Self::ProbesSucceeded => "probes succeeded",
            Self::Reset => "reset by an operator",
            Self::ForcedOpen => "forced open by an operator",
            Self::Changed => "changed",
        }
    }

    /// The reason `words` say ([`Reason::Changed`] for words not known).
    pub fn parse(words: &str) -> Self {
        Self::ALL
            .into_iter()
            .find(|r| r.as_str() == words)
            .unwrap_or(Self::Changed)
    }
}

/// A read-only view of a breaker at one instant.
#[derive(Debug, Clone, PartialEq)]
pub struct BreakerSnapshot {
    /// Current state.
    pub state: BreakerState,
    /// When it entered that state.
    pub since: Nanos,
    /// Calls and failures in the sliding window.
    pub calls: u64,
    /// Failures in the window.
    pub failures: u64,
    /// Failures in a row.
    pub consecutive_failures: u32,
    /// While OPEN: when it becomes HALF_OPEN.
    pub half_open_at: Option<Nanos>,
    /// While HALF_OPEN: probes not yet handed out.
    pub probes_left: u32,
    /// While HALF_OPEN: successes still needed to close.
    pub successes_needed: u32,
}

/// One breaker's state.
#[derive(Debug, Clone)]
pub struct Breaker {
    phase: Phase,
    since: Nanos,
    window: SlidingWindow,
    window_len: u64,
    consecutive: u32,
    /// Re-opens from HALF_OPEN since it last closed; lengthens the next open period.
    reopens: u32,
    /// Counts half-open periods, so a probe from an earlier one is not mistaken for a current one.
    epoch: u64,
}

impl Breaker {
    /// A CLOSED breaker with an empty window.
    pub fn new(spec: &BreakerSpec, now: Nanos) -> Self {
        let window_len = nanos(spec.window);
        Self {
            phase: Phase::Closed,
            since: now,
            window: SlidingWindow::new(window_len),
            window_len,
            consecutive: 0,
            reopens: 0,
            epoch: 0,
        }
    }

    /// A breaker that admits as `snapshot` says (OPEN until `half_open_at`, HALF_OPEN with its probes
    /// left, or CLOSED): what an explanation asks of a breaker it only read. Its window is empty.
    pub fn admitting(snapshot: &BreakerSnapshot, spec: &BreakerSpec, now: Nanos) -> Self {
        let phase = match snapshot.state {
            BreakerState::Closed => Phase::Closed,
            BreakerState::Open => Phase::Open {
                until: snapshot.half_open_at.unwrap_or(now),
            },
            BreakerState::HalfOpen => Phase::HalfOpen {
                probes_left: snapshot.probes_left,
                successes: 0,
            },
        };
        Self {
            phase,
            since: snapshot.since,
            ..Self::new(spec, now)
        }
    }

    /// The state now (an OPEN breaker whose period is over reads as HALF_OPEN).
    pub fn state(&self, now: Nanos) -> BreakerState {
        match self.phase {
            Phase::Closed => BreakerState::Closed,
            Phase::Open { until } if now < until => BreakerState::Open,
            Phase::Open { .. } | Phase::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    /// True when the breaker is CLOSED with nothing counted: identical to a fresh one.
    pub fn is_pristine(&self, now: Nanos) -> bool {
        self.phase == Phase::Closed && self.consecutive == 0 && self.window.totals(now).0 == 0
    }

    /// Moves OPEN to HALF_OPEN once the open period is over, and applies a changed window length.
    fn tick(&mut self, spec: &BreakerSpec, now: Nanos) -> Option<Transition> {
        let window_len = nanos(spec.window);
        if window_len != self.window_len {
            self.window = SlidingWindow::new(window_len);
            self.window_len = window_len;
        }
        match self.phase {
            Phase::Open { until } if now >= until => {
                self.phase = Phase::HalfOpen {
                    probes_left: spec.half_open_probes,
                    successes: 0,
                };
                self.since = until;
                self.epoch += 1;
                Some(Transition {
                    from: BreakerState::Open,
                    to: BreakerState::HalfOpen,
                    reason: Reason::OpenPeriodOver,
                })
            }
            _ => None,
        }
    }

    /// Asks to let one call through. A [`Admission::Probe`] that does not become a call must be handed
    /// back with [`cancel_probe`](Self::cancel_probe).
    pub fn admit(&mut self, spec: &BreakerSpec, now: Nanos) -> (Admission, Option<Transition>) {
        let transition = self.tick(spec, now);
        let admission = match &mut self.phase {
            Phase::Closed => Admission::Allowed,
            Phase::Open { until } => Admission::Rejected {
                retry_after: *until - now,
            },
            Phase::HalfOpen { probes_left, .. } if *probes_left > 0 => {
                *probes_left -= 1;
                Admission::Probe(self.epoch)
            }
            // Every probe is out; their outcomes decide. Suggest a short wait rather than the open period.
            Phase::HalfOpen { .. } => Admission::Rejected {
                retry_after: nanos(spec.open_duration).clamp(1, 1_000_000_000),
            },
        };
        (admission, transition)
    }

    /// Hands back a probe that was not used (the acquire was denied by a limit, or the lease ended with an
    /// unknown outcome), so another client can probe.
    pub fn cancel_probe(&mut self, epoch: u64) {
        if let Phase::HalfOpen { probes_left, .. } = &mut self.phase
            && epoch == self.epoch
        {
            *probes_left += 1;
        }
    }

    /// Counts one call's outcome. `probe` is the token of the probe lease it ran under, if any.
    pub fn record(
        &mut self,
        spec: &BreakerSpec,
        now: Nanos,
        failed: bool,
        probe: Option<u64>,
    ) -> Option<Transition> {
        let ticked = self.tick(spec, now);
        self.window.record(now, failed);
        self.consecutive = if failed {
            self.consecutive.saturating_add(1)
        } else {
            0
        };
        let changed = match self.phase {
            Phase::Closed if failed => {
                let (calls, failures) = self.window.totals(now);
                let by_rate = calls >= u64::from(spec.min_calls.max(1))
                    && failures as f64 >= spec.failure_rate * calls as f64;
                let in_a_row =
                    spec.consecutive_failures > 0 && self.consecutive >= spec.consecutive_failures;
                if by_rate || in_a_row {
                    let reason = if by_rate {
                        Reason::FailureRate
                    } else {
                        Reason::ConsecutiveFailures
                    };
                    self.open(now, nanos(spec.open_duration));
                    Some(Transition {
                        from: BreakerState::Closed,
                        to: BreakerState::Open,
                        reason,
                    })
                } else {
                    None
                }
            }
            Phase::Closed | Phase::Open { .. } => None,
            Phase::HalfOpen { .. } if failed => {
                self.reopens = self.reopens.saturating_add(1);
                let factor = spec.open_backoff.max(1.0).powi(self.reopens.min(64) as i32);
                let open_for = (nanos(spec.open_duration) as f64 * factor)
                    .min(nanos(spec.max_open_duration) as f64);
                self.open(now, open_for as u64);
                Some(Transition {
                    from: BreakerState::HalfOpen,
                    to: BreakerState::Open,
                    reason: Reason::FailureWhileHalfOpen,
                })
            }
            Phase::HalfOpen {
                ref mut successes, ..
            } => {
                if probe == Some(self.epoch) {
                    *successes += 1;
                    if *successes >= spec.half_open_successes.max(1) {
                        self.close(now);
                        Some(Transition {
                            from: BreakerState::HalfOpen,
                            to: BreakerState::Closed,
                            reason: Reason::ProbesSucceeded,
                        })
                    } else {
                        None
                    }
                } else {
                    None
                }
            }
        };
        changed.or(ticked)
    }

    fn open(&mut self, now: Nanos, duration: Nanos) {
        self.phase = Phase::Open {
            until: now.saturating_add(duration),
        };
        self.since = now;
        self.window.clear();
        self.consecutive = 0;
    }

    fn close(&mut self, now: Nanos) {
        self.phase = Phase::Closed;
        self.since = now;
        self.window.clear();
        self.consecutive = 0;
        self.reopens = 0;
    }

    /// Closes at once and forgets the window (an operator's reset).
    pub fn reset(&mut self, now: Nanos) -> BreakerState {
        let before = self.state(now);
        self.close(now);
        before
    }

    /// Opens for `duration` (an operator's override). Returns the state before.
    pub fn force_open(&mut self, now: Nanos, duration: Nanos) -> BreakerState {
        let before = self.state(now);
        self.open(now, duration);
        before
    }

    /// A view for GetCircuitState.
    pub fn snapshot(&self, spec: &BreakerSpec, now: Nanos) -> BreakerSnapshot {
        let (calls, failures) = self.window.totals(now);
        let state = self.state(now);
        let (half_open_at, probes_left, successes_needed, since) = match self.phase {
            Phase::Open { until } if now < until => (Some(until), 0, 0, self.since),
            Phase::Open { until } => (
                None,
                spec.half_open_probes,
                spec.half_open_successes.max(1),
                until,
            ),
            Phase::HalfOpen {
                probes_left,
                successes,
            } => (
                None,
                probes_left,
                spec.half_open_successes.max(1).saturating_sub(successes),
                self.since,
            ),
            Phase::Closed => (None, 0, 0, self.since),
        };
        BreakerSnapshot {
            state,
            since,
            calls,
            failures,
            consecutive_failures: self.consecutive,
            half_open_at,
            probes_left,
            successes_needed,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const SEC: u64 = 1_000_000_000;

    fn spec() -> BreakerSpec {
        BreakerSpec {
            failure_rate: 0.5,
            min_calls: 4,
            window: Duration::from_secs(10),
            consecutive_failures: 0,
            open_duration: Duration::from_secs(5),
            open_backoff: 2.0,
            max_open_duration: Duration::from_secs(15),
            half_open_probes: 2,
            half_open_successes: 2,
        }
    }

    #[test]
    fn opens_at_the_failure_rate_with_min_calls() {
        let s = spec();
        let mut b = Breaker::new(&s, 0);
        assert_eq!(b.record(&s, 0, true, None), None);
        assert_eq!(b.record(&s, 0, true, None), None); // 2 calls < min_calls
        assert_eq!(b.record(&s, 0, false, None), None); // 3 calls
        let t = b.record(&s, 0, true, None).unwrap(); // 4 calls, 3 failures
        assert_eq!((t.from, t.to), (BreakerState::Closed, BreakerState::Open));
        assert_eq!(
            b.admit(&s, SEC).0,
            Admission::Rejected {
                retry_after: 4 * SEC
            }
        );
    }

    #[test]
    fn half_open_hands_out_exactly_the_probes_and_closes_on_successes() {
        let s = spec();
        let mut b = Breaker::new(&s, 0);
        b.force_open(0, 5 * SEC);
        let (a1, t) = b.admit(&s, 5 * SEC);
        assert_eq!(t.unwrap().to, BreakerState::HalfOpen);
        let (a2, _) = b.admit(&s, 5 * SEC);
        let (a3, _) = b.admit(&s, 5 * SEC);
        assert!(matches!(a1, Admission::Probe(_)) && matches!(a2, Admission::Probe(_)));
        assert!(matches!(a3, Admission::Rejected { .. }));
        let Admission::Probe(epoch) = a1 else {
            unreachable!()
        };
        assert_eq!(b.record(&s, 6 * SEC, false, Some(epoch)), None);
        assert_eq!(
            b.record(&s, 6 * SEC, false, Some(epoch)).unwrap().to,
            BreakerState::Closed
        );
    }

    #[test]
    fn failure_while_half_open_reopens_longer_up_to_the_cap() {
        let s = spec();
        let mut b = Breaker::new(&s, 0);
        b.force_open(0, 5 * SEC);
        let (Admission::Probe(e), _) = b.admit(&s, 5 * SEC) else {
            panic!("expected a probe")
        };
        b.record(&s, 5 * SEC, true, Some(e));
        assert_eq!(b.snapshot(&s, 5 * SEC).half_open_at, Some(15 * SEC)); // 5 s × 2
        let (Admission::Probe(e), _) = b.admit(&s, 15 * SEC) else {
            panic!("expected a probe")
        };
        b.record(&s, 15 * SEC, true, Some(e));
        assert_eq!(b.snapshot(&s, 15 * SEC).half_open_at, Some(30 * SEC)); // 20 s capped at 15
    }

    #[test]
    fn cancelled_probe_goes_back_and_stale_probe_is_ignored() {
        let s = spec();
        let mut b = Breaker::new(&s, 0);
        b.force_open(0, SEC);
        let (Admission::Probe(e), _) = b.admit(&s, SEC) else {
            panic!()
        };
        b.cancel_probe(e);
        assert_eq!(b.snapshot(&s, SEC).probes_left, 2);
        b.cancel_probe(e + 7);
        assert_eq!(b.snapshot(&s, SEC).probes_left, 2);
    }

    #[test]
    fn consecutive_failures_open_it() {
        let s = BreakerSpec {
            consecutive_failures: 3,
            min_calls: 100,
            ..spec()
        };
        let mut b = Breaker::new(&s, 0);
        b.record(&s, 0, true, None);
        b.record(&s, 0, true, None);
        assert_eq!(
            b.record(&s, 0, true, None).unwrap().reason,
            Reason::ConsecutiveFailures
        );
    }
}
