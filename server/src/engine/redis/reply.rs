//! Reading the script's answers.

use std::sync::Arc;

use ::redis::Value;

use crate::{
    clock::Nanos,
    engine::{BreakerState, EngineError, Name, Reason, Rules, Transition, intern},
};

fn bad(what: &str) -> EngineError {
    EngineError::Unavailable(format!("redis: unexpected script reply ({what})"))
}

/// The elements of an array reply.
pub fn items(v: Value) -> Result<Vec<Value>, EngineError> {
    match v {
        Value::Array(items) => Ok(items),
        _ => Err(bad("not an array")),
    }
}

/// An element as text.
pub fn text(v: Option<&Value>) -> Result<String, EngineError> {
    match v {
        Some(Value::BulkString(b)) => String::from_utf8(b.clone()).map_err(|_| bad("not UTF-8")),
        Some(Value::SimpleString(s)) => Ok(s.clone()),
        Some(Value::Int(i)) => Ok(i.to_string()),
        Some(Value::Okay) => Ok("OK".into()),
        _ => Err(bad("missing text")),
    }
}

/// An element as an integer (an integer reply, or digits).
pub fn int(v: Option<&Value>) -> Result<i64, EngineError> {
    match v {
        Some(Value::Int(i)) => Ok(*i),
        other => text(other)?.parse().map_err(|_| bad("not an integer")),
    }
}

/// An element as a non-negative integer.
pub fn uint(v: Option<&Value>) -> Result<u64, EngineError> {
    u64::try_from(int(v)?.max(0)).map_err(|_| bad("negative"))
}

/// An element as a float.
pub fn float(v: Option<&Value>) -> Result<f64, EngineError> {
    text(v)?.parse().map_err(|_| bad("not a float"))
}

/// An absolute instant, or `None` for an empty string.
pub fn instant(v: Option<&Value>) -> Result<Option<Nanos>, EngineError> {
    let t = text(v)?;
    if t.is_empty() {
        return Ok(None);
    }
    t.parse().map(Some).map_err(|_| bad("not an instant"))
}

/// A breaker state name.
pub fn state(s: &str) -> BreakerState {
    match s {
        "open" => BreakerState::Open,
        "half_open" => BreakerState::HalfOpen,
        _ => BreakerState::Closed,
    }
}

fn reason(s: &str) -> Reason {
    Reason::parse(s)
}

/// The breaker transitions a call made, `from:to:reason;...`.
pub fn transitions(v: Option<&Value>) -> Vec<Transition> {
    let Ok(s) = text(v) else { return Vec::new() };
    s.split(';')
        .filter(|t| !t.is_empty())
        .filter_map(|t| {
            let mut p = t.splitn(3, ':');
            Some(Transition {
                from: state(p.next()?),
                to: state(p.next()?),
                reason: reason(p.next()?),
            })
        })
        .collect()
}

/// A resource name as the engine hands it out: the configured one when the rule is its exact rule.
pub fn name(rules: Option<&Rules>, resource: &str) -> Name {
    match rules.and_then(|r| r.resolve_kind(resource)) {
        Some((rule, how)) if how.is_exact() => Name::Configured(rule.name),
        _ => Name::Given(Arc::from(resource)),
    }
}

/// A rule name from a reply: the configured one in force, else the name the lease was granted under.
pub fn rule_name(rules: Option<&Rules>, resource: &str, stored: &str) -> &'static str {
    match rules.and_then(|r| r.resolve(resource)) {
        Some(rule) if rule.name == stored => rule.name,
        _ => intern(stored),
    }
}
