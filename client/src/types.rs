//! The domain types the client speaks instead of protobuf structs.

use std::time::{Duration, SystemTime};

use quotad_api::v1 as pb;

/// How a call made under a permit ended; feeds the shared circuit breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The downstream answered normally.
    Success,
    /// The downstream failed.
    Failure,
    /// The downstream throttled the call.
    Throttled,
    /// Unknown (the worker gave up, or dropped the permit).
    Unknown,
}

impl From<Outcome> for pb::Outcome {
    fn from(o: Outcome) -> Self {
        match o {
            Outcome::Success => Self::Success,
            Outcome::Failure => Self::Failure,
            Outcome::Throttled => Self::Throttled,
            Outcome::Unknown => Self::Unknown,
        }
    }
}

/// What a downstream did, for [`Client::report_throttle`](crate::Client::report_throttle).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ThrottleKind {
    /// Too many requests (HTTP 429, ThrottlingException): lowers the fleet's rate.
    Throttled,
    /// An error.
    Error,
    /// A timeout.
    Timeout,
}

impl From<ThrottleKind> for pb::ThrottleKind {
    fn from(k: ThrottleKind) -> Self {
        match k {
            ThrottleKind::Throttled => Self::Throttled,
            ThrottleKind::Error => Self::Error,
            ThrottleKind::Timeout => Self::Timeout,
        }
    }
}

/// Why an acquire was denied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Decision {
    /// A token bucket was empty.
    RateLimited,
    /// A concurrency limit was reached.
    ConcurrencyLimited,
    /// The circuit breaker is open.
    CircuitOpen,
    /// The fleet is paused after a downstream's retry-after.
    Paused,
    /// The local fallback limiter (quotad unreachable) denied.
    LocallyLimited,
}

impl Decision {
    pub(crate) fn from_wire(d: i32) -> Self {
        match pb::Decision::try_from(d) {
            Ok(pb::Decision::ConcurrencyLimited) => Self::ConcurrencyLimited,
            Ok(pb::Decision::CircuitOpen) => Self::CircuitOpen,
            Ok(pb::Decision::Paused) => Self::Paused,
            _ => Self::RateLimited,
        }
    }
}

/// A circuit breaker's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CircuitState {
    /// Calls flow.
    Closed,
    /// Calls are refused.
    Open,
    /// A few probe calls are let through.
    HalfOpen,
}

impl CircuitState {
    pub(crate) fn from_wire(s: i32) -> Self {
        match pb::CircuitState::try_from(s) {
            Ok(pb::CircuitState::Open) => Self::Open,
            Ok(pb::CircuitState::HalfOpen) => Self::HalfOpen,
            _ => Self::Closed,
        }
    }
}

pub(crate) fn duration(d: Option<prost_types::Duration>) -> Option<Duration> {
    d.and_then(|d| Duration::try_from(d).ok())
}

pub(crate) fn timestamp(t: Option<prost_types::Timestamp>) -> Option<SystemTime> {
    t.and_then(|t| SystemTime::try_from(t).ok())
}

/// A resource's shared breaker, adaptive rate and pause.
#[derive(Debug, Clone, PartialEq)]
pub struct CircuitStatus {
    /// Breaker state.
    pub state: CircuitState,
    /// Calls and failures in the window.
    pub calls: u64,
    /// Failures in the window.
    pub failures: u64,
    /// While OPEN: time until HALF_OPEN.
    pub half_open_after: Option<Duration>,
    /// While HALF_OPEN: probes not yet handed out.
    pub half_open_probes_left: u32,
    /// Rate in force vs configured (tokens per second).
    pub effective_rate_per_second: f64,
    /// Configured rate.
    pub configured_rate_per_second: f64,
    /// Grants paused until, if paused.
    pub paused_until: Option<SystemTime>,
}

impl From<pb::GetCircuitStateResponse> for CircuitStatus {
    fn from(r: pb::GetCircuitStateResponse) -> Self {
        Self {
            state: CircuitState::from_wire(r.state),
            calls: r.calls,
            failures: r.failures,
            half_open_after: duration(r.half_open_after),
            half_open_probes_left: r.half_open_probes_left,
            effective_rate_per_second: r.effective_rate_per_second,
            configured_rate_per_second: r.configured_rate_per_second,
            paused_until: timestamp(r.paused_until),
        }
    }
}

/// What a throttle report did.
#[derive(Debug, Clone, PartialEq)]
pub struct ThrottleReport {
    /// Rate in force after the report.
    pub effective_rate_per_second: f64,
    /// True when the report lowered the rate.
    pub rate_decreased: bool,
    /// Breaker state after the report.
    pub circuit_state: CircuitState,
    /// Grants paused until, if paused.
    pub paused_until: Option<SystemTime>,
}

impl From<pb::ReportThrottleResponse> for ThrottleReport {
    fn from(r: pb::ReportThrottleResponse) -> Self {
        Self {
            effective_rate_per_second: r.effective_rate_per_second,
            rate_decreased: r.rate_decreased,
            circuit_state: CircuitState::from_wire(r.circuit_state),
            paused_until: timestamp(r.paused_until),
        }
    }
}
