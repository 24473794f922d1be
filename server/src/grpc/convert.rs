//! Converting at the edge, in one place: proto requests into engine requests (validating what only the
//! wire can get wrong, and normalising proto3 zero defaults), engine answers into proto responses.
//!
//! Normalisation: `permits` 0 means 1; an absent or zero `lease_ttl` means the resource's default; an
//! absent `max_wait` means no waiting; empty strings mean absent; UNSPECIFIED enums take the documented
//! default.

// Wire-facing: every value here may come from a request, so arithmetic is checked or saturating.
#![cfg_attr(not(test), deny(clippy::arithmetic_side_effects))]

use std::{collections::HashMap, time::Duration, time::SystemTime};

use quotad_api::v1 as pb;

use crate::{
    clock::{Clock, Nanos},
    engine::{
        self, BreakerState, CircuitView, Denial, EngineError, LeaseId, Outcome, Pressure, Released,
        Renewed, Reported, ThrottleKind,
    },
};

/// A proto duration into a std one; negative or malformed is INVALID_ARGUMENT naming `field`. Longer than
/// [`MAX_DURATION`](crate::clock::MAX_DURATION) (365 days) is taken as that: every duration a request carries
/// is capped further by the field's own limit (`max_pause`, `max_lease_ttl`, the server's `max_wait`, the
/// breaker's `max_open_duration`), and a downstream's `Retry-After` of a hundred years must pause the fleet
/// for `max_pause`, not fail the report.
pub fn duration_in(
    field: &str,
    d: Option<prost_types::Duration>,
) -> Result<Option<Duration>, EngineError> {
    let Some(d) = d else { return Ok(None) };
    let (Ok(seconds), Ok(subsec)) = (u64::try_from(d.seconds), u32::try_from(d.nanos)) else {
        return Err(EngineError::invalid(
            field,
            "must be a non-negative duration",
        ));
    };
    if subsec >= 1_000_000_000 {
        return Err(EngineError::invalid(
            field,
            "has nanos out of range (0..=999999999)",
        ));
    }
    Ok(Some(
        Duration::new(seconds, subsec).min(crate::clock::MAX_DURATION),
    ))
}

/// Nanoseconds into a proto duration.
pub fn duration_out(n: Nanos) -> prost_types::Duration {
    prost_types::Duration {
        seconds: (n / 1_000_000_000) as i64,
        nanos: (n % 1_000_000_000) as i32,
    }
}

/// A wall-clock time into a proto timestamp.
pub fn timestamp_out(t: SystemTime) -> prost_types::Timestamp {
    prost_types::Timestamp::from(t)
}

fn optional(s: String) -> Option<String> {
    if s.is_empty() { None } else { Some(s) }
}

fn descriptors(map: HashMap<String, String>) -> Vec<(String, String)> {
    map.into_iter().collect()
}

/// Parses a lease id as issued by Acquire.
pub fn lease_id_in(field: &str, s: &str) -> Result<LeaseId, EngineError> {
    if s.is_empty() {
        return Err(EngineError::invalid(field, "is required"));
    }
    s.parse().map_err(|()| {
        EngineError::invalid(
            field,
            "is not a lease id issued by this server (16 lower-case hex digits)",
        )
    })
}

impl TryFrom<pb::AcquireRequest> for engine::Acquire {
    type Error = EngineError;

    fn try_from(r: pb::AcquireRequest) -> Result<Self, EngineError> {
        Ok(Self {
            owner: None,
            resource: r.resource,
            descriptors: descriptors(r.descriptors),
            permits: r.permits.max(1),
            lease_ttl: duration_in("lease_ttl", r.lease_ttl)?.filter(|d| !d.is_zero()),
            max_wait: duration_in("max_wait", r.max_wait)?.unwrap_or_default(),
            request_id: optional(r.request_id),
            client_id: optional(r.client_id),
            bypass: false,
            priority: optional(r.priority),
        })
    }
}

impl TryFrom<pb::ReleaseRequest> for engine::Release {
    type Error = EngineError;

    fn try_from(r: pb::ReleaseRequest) -> Result<Self, EngineError> {
        let outcome = match pb::Outcome::try_from(r.outcome) {
            Ok(pb::Outcome::Success) => Outcome::Success,
            Ok(pb::Outcome::Failure) => Outcome::Failure,
            Ok(pb::Outcome::Throttled) => Outcome::Throttled,
            Ok(pb::Outcome::Unknown | pb::Outcome::Unspecified) => Outcome::Unknown,
            Err(_) => {
                return Err(EngineError::invalid(
                    "outcome",
                    format!("{} is not a known Outcome", r.outcome),
                ));
            }
        };
        Ok(Self {
            caller: None,
            lease_id: lease_id_in("lease_id", &r.lease_id)?,
            outcome,
            used_permits: r.used_permits,
        })
    }
}

impl TryFrom<pb::RenewRequest> for engine::Renew {
    type Error = EngineError;

    fn try_from(r: pb::RenewRequest) -> Result<Self, EngineError> {
        Ok(Self {
            caller: None,
            lease_id: lease_id_in("lease_id", &r.lease_id)?,
            lease_ttl: duration_in("lease_ttl", r.lease_ttl)?.filter(|d| !d.is_zero()),
        })
    }
}

impl TryFrom<pb::ReportThrottleRequest> for engine::Report {
    type Error = EngineError;

    fn try_from(r: pb::ReportThrottleRequest) -> Result<Self, EngineError> {
        let kind = match pb::ThrottleKind::try_from(r.kind) {
            Ok(pb::ThrottleKind::Throttled | pb::ThrottleKind::Unspecified) => {
                ThrottleKind::Throttled
            }
            Ok(pb::ThrottleKind::Error) => ThrottleKind::Error,
            Ok(pb::ThrottleKind::Timeout) => ThrottleKind::Timeout,
            Err(_) => {
                return Err(EngineError::invalid(
                    "kind",
                    format!("{} is not a known ThrottleKind", r.kind),
                ));
            }
        };
        let lease_id = if r.lease_id.is_empty() {
            None
        } else {
            Some(lease_id_in("lease_id", &r.lease_id)?)
        };
        Ok(Self {
            caller: None,
            resource: r.resource,
            descriptors: descriptors(r.descriptors),
            kind,
            retry_after: duration_in("retry_after", r.retry_after)?,
            lease_id,
            message: optional(r.message),
            client_id: optional(r.client_id),
        })
    }
}

impl From<pb::GetCircuitStateRequest> for engine::BreakerTarget {
    fn from(r: pb::GetCircuitStateRequest) -> Self {
        Self {
            resource: r.resource,
            descriptors: descriptors(r.descriptors),
        }
    }
}

/// The wire decision.
pub fn decision_out(d: Denial) -> pb::Decision {
    match d {
        Denial::RateLimited => pb::Decision::RateLimited,
        Denial::ConcurrencyLimited => pb::Decision::ConcurrencyLimited,
        Denial::CircuitOpen => pb::Decision::CircuitOpen,
        Denial::Paused => pb::Decision::Paused,
    }
}

/// The wire breaker state.
pub fn state_out(s: BreakerState) -> pb::CircuitState {
    match s {
        BreakerState::Closed => pb::CircuitState::Closed,
        BreakerState::Open => pb::CircuitState::Open,
        BreakerState::HalfOpen => pb::CircuitState::HalfOpen,
    }
}

/// A release result as a ReleaseResponse.
pub fn release_out(r: Released) -> pb::ReleaseResponse {
    pb::ReleaseResponse {
        released: r.result.is_ok(),
        reason: r
            .result
            .err()
            .map(|w| w.as_str().to_owned())
            .unwrap_or_default(),
        refunded_permits: r.refunded,
        charged_permits: r.charged,
        circuit_state: state_out(r.breaker).into(),
    }
}

/// A renewal as a RenewResponse.
pub fn renew_out(r: Renewed, clock: &dyn Clock) -> pb::RenewResponse {
    pb::RenewResponse {
        lease_expires_at: Some(timestamp_out(clock.wall(r.expires_at))),
        lease_ttl: Some(duration_out(crate::clock::nanos(r.ttl))),
    }
}

fn paused_until(p: &Pressure, clock: &dyn Clock) -> Option<prost_types::Timestamp> {
    p.paused_until.map(|t| timestamp_out(clock.wall(t)))
}

/// A report's effect as a ReportThrottleResponse.
pub fn report_out(r: Reported, clock: &dyn Clock) -> pb::ReportThrottleResponse {
    let now = clock.now();
    pb::ReportThrottleResponse {
        effective_rate_per_second: r.pressure.effective_rate,
        configured_rate_per_second: r.pressure.configured_rate,
        circuit_state: state_out(r.breaker).into(),
        paused_until: paused_until(&r.pressure, clock),
        pause_remaining: r
            .pressure
            .paused_until
            .map(|t| duration_out(t.saturating_sub(now))),
        rate_decreased: r.rate_decreased,
    }
}

/// A breaker view as a GetCircuitStateResponse.
pub fn circuit_out(v: CircuitView, clock: &dyn Clock) -> pb::GetCircuitStateResponse {
    let now = clock.now();
    let b = &v.breaker;
    pb::GetCircuitStateResponse {
        state: state_out(b.state).into(),
        since: Some(timestamp_out(clock.wall(b.since))),
        failures: b.failures,
        calls: b.calls,
        failure_rate: if b.calls == 0 {
            0.0
        } else {
            b.failures as f64 / b.calls as f64
        },
        consecutive_failures: b.consecutive_failures,
        half_open_at: b.half_open_at.map(|t| timestamp_out(clock.wall(t))),
        half_open_after: b.half_open_at.map(|t| duration_out(t.saturating_sub(now))),
        half_open_probes_left: b.probes_left,
        half_open_successes_needed: b.successes_needed,
        effective_rate_per_second: v.pressure.effective_rate,
        configured_rate_per_second: v.pressure.configured_rate,
        paused_until: paused_until(&v.pressure, clock),
        breaker_configured: v.configured,
        resource: v.resource.to_string(),
    }
}

fn level_out(l: engine::LevelExplained) -> pb::LevelExplanation {
    let (decision, retry_after) = match l.denies {
        Some((d, wait)) => (decision_out(d), Some(duration_out(wait))),
        None => (pb::Decision::Granted, None),
    };
    pb::LevelExplanation {
        level: l.label,
        has_rate: l.state.tokens.is_some(),
        tokens_available: l.state.tokens.unwrap_or(0),
        burst: l.burst,
        rate_per_second: l.rate_per_second,
        in_flight: l.state.in_flight,
        max_in_flight: l.max_in_flight.unwrap_or(0),
        decision: decision.into(),
        retry_after,
        algorithm: l
            .algorithm
            .map_or_else(String::new, |a| a.as_str().to_owned()),
        shadow: l.shadow,
        overridden: l.overridden,
        reserved_tokens: l.reserve.tokens,
        reserved_in_flight: l.reserve.slots,
    }
}

/// An explanation on the wire.
pub fn explain_out(
    e: engine::Explanation,
    clock: &dyn Clock,
    config_version: u64,
) -> pb::ExplainResponse {
    let b = &e.circuit.breaker;
    let p = &e.circuit.pressure;
    let mut out = pb::ExplainResponse {
        resource: e.resource,
        rule: e.rule.to_owned(),
        config_version,
        permits: e.permits,
        would_grant: e.verdict.is_none(),
        decision: pb::Decision::Granted.into(),
        circuit_state: state_out(b.state).into(),
        breaker_configured: e.circuit.configured,
        half_open_at: b.half_open_at.map(|t| timestamp_out(clock.wall(t))),
        half_open_probes_left: b.probes_left,
        paused_until: p.paused_until.map(|t| timestamp_out(clock.wall(t))),
        effective_rate_per_second: p.effective_rate,
        configured_rate_per_second: p.configured_rate,
        levels: e.levels.into_iter().map(level_out).collect(),
        shadow_denied_by: e.shadow_denied_by.unwrap_or_default(),
        bypassed_by: e.bypassed_by.unwrap_or_default(),
        priority: e.priority.unwrap_or_default(),
        ..Default::default()
    };
    if let Some((denial, wait, by)) = e.verdict {
        out.decision = decision_out(denial).into();
        out.retry_after = Some(duration_out(wait));
        out.denied_by = by;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proto_zero_defaults_are_normalised() {
        let a = engine::Acquire::try_from(pb::AcquireRequest {
            resource: "r".into(),
            lease_ttl: Some(prost_types::Duration {
                seconds: 0,
                nanos: 0,
            }),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(a.permits, 1);
        assert_eq!(a.lease_ttl, None);
        assert_eq!(a.max_wait, Duration::ZERO);
        assert_eq!(a.request_id, None);
    }

    #[test]
    fn bad_wire_values_name_the_field() {
        let neg = Some(prost_types::Duration {
            seconds: -1,
            nanos: 0,
        });
        let e = engine::Acquire::try_from(pb::AcquireRequest {
            max_wait: neg,
            ..Default::default()
        })
        .unwrap_err();
        assert!(matches!(e, EngineError::InvalidArgument { ref field, .. } if field == "max_wait"));
        let e = engine::Release::try_from(pb::ReleaseRequest {
            lease_id: "zz".into(),
            ..Default::default()
        })
        .unwrap_err();
        assert!(matches!(e, EngineError::InvalidArgument { ref field, .. } if field == "lease_id"));
        let e = engine::Release::try_from(pb::ReleaseRequest {
            lease_id: "0123456789abcdef".into(),
            outcome: 42,
            ..Default::default()
        })
        .unwrap_err();
        assert!(matches!(e, EngineError::InvalidArgument { ref field, .. } if field == "outcome"));
    }
}
