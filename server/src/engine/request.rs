//! What clients ask the engine, in plain types (the gRPC layer converts proto messages into these),
//! and the size checks every request passes before it touches state.

// Wire-facing: every value here may come from a request, so arithmetic is checked or saturating.
#![cfg_attr(not(test), deny(clippy::arithmetic_side_effects))]

use std::time::Duration;

use super::{EngineError, LeaseId, RequestLimits};

/// Ask for permits on a resource.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Acquire {
    /// Concrete resource name.
    pub resource: String,
    /// Request descriptors, e.g. `("tenant", "acme")`.
    pub descriptors: Vec<(String, String)>,
    /// Rate tokens to take (≥ 1; the conversion layer turns proto's 0 into 1).
    pub permits: u64,
    /// Requested lease TTL; `None` means the resource's default.
    pub lease_ttl: Option<Duration>,
    /// How long the server may wait for capacity; zero answers at once.
    pub max_wait: Duration,
    /// Idempotency key.
    pub request_id: Option<String>,
    /// Caller identity for logs.
    pub client_id: Option<String>,
    /// The authenticated identity asking (its configured name), who will own the lease; `None` without auth.
    pub owner: Option<&'static str>,
    /// The caller's identity bypasses limits (`[[auth.identities]] bypass = true`).
    pub bypass: bool,
    /// The priority class asked for; `None`: the resource's default.
    pub priority: Option<String>,
}

/// How a call made under a lease ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The downstream answered normally.
    Success,
    /// The downstream failed.
    Failure,
    /// The downstream throttled the call.
    Throttled,
    /// Unknown: not counted by the breaker.
    Unknown,
}

impl Outcome {
    /// Lower-case name for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Failure => "failure",
            Self::Throttled => "throttled",
            Self::Unknown => "unknown",
        }
    }
}

/// Return a lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Release {
    /// The lease.
    pub lease_id: LeaseId,
    /// How the call ended.
    pub outcome: Outcome,
    /// Settle to this cost (reserve-then-settle); `None` leaves the charge as acquired.
    pub used_permits: Option<u64>,
    /// The authenticated identity asking: only the lease's owner may end it.
    pub caller: Option<&'static str>,
}

/// Extend a lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Renew {
    /// The lease.
    pub lease_id: LeaseId,
    /// New TTL from now; `None` means the resource's default.
    pub lease_ttl: Option<Duration>,
    /// The authenticated identity asking: only the lease's owner may renew it.
    pub caller: Option<&'static str>,
}

/// What a downstream did, as reported by a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ThrottleKind {
    /// Too many requests: lowers the adaptive rate.
    Throttled,
    /// An error.
    Error,
    /// A timeout.
    Timeout,
}

impl ThrottleKind {
    /// Lower-case name for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Throttled => "throttled",
            Self::Error => "error",
            Self::Timeout => "timeout",
        }
    }
}

/// Report a throttle or failure seen at the downstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// Concrete resource name.
    pub resource: String,
    /// Descriptors (to find a partitioned breaker).
    pub descriptors: Vec<(String, String)>,
    /// What happened.
    pub kind: ThrottleKind,
    /// The downstream's retry-after, if it gave one: pauses the resource.
    pub retry_after: Option<Duration>,
    /// The lease the call ran under, so its failure is counted once.
    pub lease_id: Option<LeaseId>,
    /// Free text for logs.
    pub message: Option<String>,
    /// Reporter identity for logs.
    pub client_id: Option<String>,
    /// The authenticated identity reporting: a named lease must be its own, and one identity's flood of
    /// reports pauses a resource once (see the README, Security).
    pub caller: Option<&'static str>,
}

/// Name a resource's breaker (for reads and admin operations).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BreakerTarget {
    /// Concrete resource name.
    pub resource: String,
    /// Descriptors, for a partitioned breaker.
    pub descriptors: Vec<(String, String)>,
}

fn check_name(field: &str, value: &str, max: usize) -> Result<(), EngineError> {
    if value.is_empty() {
        return Err(EngineError::invalid(field, "must not be empty"));
    }
    check_text(field, value, max)
}

/// True when `value` holds a control character (Unicode category Cc: U+0000..=U+001F, U+007F..=U+009F).
/// Names are almost always ASCII: one pass over the bytes settles those; only text with bytes above 0x7f
/// is decoded (a C1 control is two bytes in UTF-8).
fn has_control(value: &str) -> bool {
    let mut non_ascii = false;
    for &b in value.as_bytes() {
        if b < 0x20 || b == 0x7f {
            return true;
        }
        non_ascii |= b >= 0x80;
    }
    non_ascii && value.chars().any(char::is_control)
}

fn check_text(field: &str, value: &str, max: usize) -> Result<(), EngineError> {
    if value.len() > max {
        return Err(EngineError::invalid(
            field,
            format!("is {} bytes; at most {max} allowed", value.len()),
        ));
    }
    if has_control(value) {
        return Err(EngineError::invalid(
            field,
            "must not contain control characters",
        ));
    }
    Ok(())
}

/// Checks a resource name and descriptors against the limits.
pub fn check_target(
    resource: &str,
    descriptors: &[(String, String)],
    limits: &RequestLimits,
) -> Result<(), EngineError> {
    check_name("resource", resource, limits.max_name_bytes)?;
    if descriptors.len() > limits.max_descriptors {
        return Err(EngineError::invalid(
            "descriptors",
            format!(
                "has {} entries; at most {} allowed",
                descriptors.len(),
                limits.max_descriptors
            ),
        ));
    }
    for (key, value) in descriptors {
        check_name("descriptors key", key, limits.max_name_bytes)
            .map_err(|e| retarget(e, || format!("descriptors[{:?}]", truncate(key))))?;
        check_text("descriptors value", value, limits.max_name_bytes)
            .map_err(|e| retarget(e, || format!("descriptors[{:?}] value", truncate(key))))?;
    }
    Ok(())
}

fn retarget(e: EngineError, field: impl FnOnce() -> String) -> EngineError {
    match e {
        EngineError::InvalidArgument { problem, .. } => EngineError::InvalidArgument {
            field: field(),
            problem,
        },
        other => other,
    }
}

fn truncate(s: &str) -> &str {
    let mut end = s.len().min(64);
    while !s.is_char_boundary(end) {
        end = end.saturating_sub(1);
    }
    &s[..end]
}

impl Acquire {
    /// Size and shape checks (which fields exist and what the resource's rule allows are checked later).
    pub fn validate(&self, limits: &RequestLimits) -> Result<(), EngineError> {
        check_target(&self.resource, &self.descriptors, limits)?;
        if self.permits == 0 {
            return Err(EngineError::invalid("permits", "must be at least 1"));
        }
        if let Some(id) = &self.request_id {
            check_name("request_id", id, limits.max_request_id_bytes)?;
        }
        if let Some(id) = &self.client_id {
            check_text("client_id", id, limits.max_name_bytes)?;
        }
        if let Some(p) = &self.priority {
            check_text("priority", p, limits.max_name_bytes)?;
        }
        // `max_wait` past the server's limit is capped where the wait is held (`waiting`), not refused.
        Ok(())
    }
}

impl Report {
    /// Size and shape checks.
    pub fn validate(&self, limits: &RequestLimits) -> Result<(), EngineError> {
        check_target(&self.resource, &self.descriptors, limits)?;
        if let Some(m) = &self.message
            && m.len() > limits.max_message_bytes
        {
            return Err(EngineError::invalid(
                "message",
                format!(
                    "is {} bytes; at most {} allowed",
                    m.len(),
                    limits.max_message_bytes
                ),
            ));
        }
        if let Some(id) = &self.client_id {
            check_text("client_id", id, limits.max_name_bytes)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acquire() -> Acquire {
        Acquire {
            resource: "r".into(),
            permits: 1,
            ..Default::default()
        }
    }

    #[test]
    fn control_characters_are_found_in_ascii_and_beyond() {
        for c in (0u32..0x250).filter_map(char::from_u32) {
            for s in [c.to_string(), format!("ab{c}"), format!("é{c}z")] {
                assert_eq!(has_control(&s), c.is_control(), "{c:?} in {s:?}");
            }
        }
    }

    #[test]
    fn each_bad_field_is_named() {
        let limits = RequestLimits::default();
        let field = |a: Acquire| match a.validate(&limits) {
            Err(EngineError::InvalidArgument { field, .. }) => field,
            other => panic!("expected invalid argument, got {other:?}"),
        };
        assert_eq!(
            field(Acquire {
                resource: String::new(),
                ..acquire()
            }),
            "resource"
        );
        assert_eq!(
            field(Acquire {
                resource: "x".repeat(257),
                ..acquire()
            }),
            "resource"
        );
        assert_eq!(
            field(Acquire {
                permits: 0,
                ..acquire()
            }),
            "permits"
        );
        assert_eq!(
            field(Acquire {
                request_id: Some("x".repeat(129)),
                ..acquire()
            }),
            "request_id"
        );
        // A max_wait past the server's limit is capped, not refused.
        assert!(
            Acquire {
                max_wait: Duration::MAX,
                ..acquire()
            }
            .validate(&limits)
            .is_ok()
        );
        let many = (0..17).map(|i| (format!("k{i}"), "v".into())).collect();
        assert_eq!(
            field(Acquire {
                descriptors: many,
                ..acquire()
            }),
            "descriptors"
        );
        let long_value = vec![("tenant".into(), "v".repeat(300))];
        assert_eq!(
            field(Acquire {
                descriptors: long_value,
                ..acquire()
            }),
            "descriptors[\"tenant\"] value"
        );
        let control = vec![("ten\u{1f}ant".into(), "v".into())];
        assert!(
            field(Acquire {
                descriptors: control,
                ..acquire()
            })
            .starts_with("descriptors[")
        );
        assert!(acquire().validate(&limits).is_ok());
    }
}
