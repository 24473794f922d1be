//! Output: aligned tables (coloured on a terminal, plain when piped or with NO_COLOR) and JSON values.

use std::{
    io::IsTerminal,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use quotad_api::v1::{self as pb, CircuitState};
use serde_json::{Value, json};

/// A table: a header row and rows of cells.
pub struct Table {
    headers: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(headers: &[&'static str]) -> Self {
        Self {
            headers: headers.to_vec(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// Columns padded to their widest cell; colour is added after padding so it never skews them.
    pub fn print(&self) {
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (w, c) in widths.iter_mut().zip(row) {
                *w = (*w).max(c.chars().count());
            }
        }
        let line = |cells: Vec<String>| {
            let padded: Vec<String> = cells
                .iter()
                .zip(&widths)
                .map(|(c, w)| paint(&format!("{c:<w$}")))
                .collect();
            say!("{}", padded.join("  ").trim_end());
        };
        line(self.headers.iter().map(|h| bold(h)).collect());
        for row in &self.rows {
            line(row.clone());
        }
    }
}

/// Writes to stdout; a closed pipe ends the program (exit 0: whoever read us has what they wanted).
pub fn write_out(text: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("quotadctl: stdout: {e}");
        std::process::exit(1);
    }
}

fn colour() -> bool {
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none()
}

fn bold(s: &str) -> String {
    s.to_uppercase()
}

/// Breaker states in colour on a terminal.
fn paint(cell: &str) -> String {
    if !colour() {
        return cell.to_owned();
    }
    let code = match cell.trim_end() {
        "OPEN" | "paused" => "31",
        "HALF_OPEN" => "33",
        "CLOSED" => "32",
        _ => return cell.to_owned(),
    };
    format!("\x1b[{code}m{cell}\x1b[0m")
}

pub fn state(s: i32) -> &'static str {
    match CircuitState::try_from(s).unwrap_or_default() {
        CircuitState::Closed => "CLOSED",
        CircuitState::Open => "OPEN",
        CircuitState::HalfOpen => "HALF_OPEN",
        CircuitState::Unspecified => "-",
    }
}

pub fn secs(d: Option<&prost_types::Duration>) -> Option<f64> {
    d.map(|d| d.seconds as f64 + f64::from(d.nanos) / 1e9)
}

fn system_time(t: &prost_types::Timestamp) -> Option<SystemTime> {
    let d = Duration::new(u64::try_from(t.seconds).ok()?, u32::try_from(t.nanos).ok()?);
    UNIX_EPOCH.checked_add(d)
}

/// RFC 3339, or null.
pub fn time(t: Option<&prost_types::Timestamp>) -> Value {
    t.and_then(system_time)
        .map(|t| Value::String(humantime::format_rfc3339_millis(t).to_string()))
        .unwrap_or(Value::Null)
}

/// "in 4.2 s" from now, or "" when unset or past.
pub fn until(t: Option<&prost_types::Timestamp>) -> String {
    let Some(at) = t.and_then(system_time) else {
        return String::new();
    };
    match at.duration_since(SystemTime::now()) {
        Ok(d) => format!("{:.1} s", d.as_secs_f64()),
        Err(_) => String::new(),
    }
}

pub fn resource(r: &pb::ResourceUsage) -> Value {
    let l = r.limits.clone().unwrap_or_default();
    json!({
        "resource": r.resource,
        "rule": r.rule,
        "limits": {
            "rate_limit": l.rate_limit,
            "rate_period_seconds": secs(l.rate_period.as_ref()),
            "burst": l.burst,
            "algorithm": l.rate_algorithm,
            "overrides": l.overrides,
            "max_concurrent": l.max_concurrent,
            "partitions": l.partitions,
        },
        "tokens_available": r.tokens_available,
        "in_flight": r.in_flight,
        "live_leases": r.live_leases,
        "circuit_state": state(r.circuit_state),
        "effective_rate_per_second": r.effective_rate_per_second,
        "configured_rate_per_second": r.configured_rate_per_second,
        "paused_until": time(r.paused_until.as_ref()),
    })
}

/// One table row per resource.
pub fn resource_row(r: &pb::ResourceUsage) -> Vec<String> {
    let l = r.limits.clone().unwrap_or_default();
    let tokens = if l.burst > 0 {
        format!("{}/{}", r.tokens_available, l.burst)
    } else {
        "-".into()
    };
    let inflight = if l.max_concurrent > 0 {
        format!("{}/{}", r.in_flight, l.max_concurrent)
    } else {
        "-".into()
    };
    let rate = if r.configured_rate_per_second > 0.0 {
        format!(
            "{:.3}/{:.3}",
            r.effective_rate_per_second, r.configured_rate_per_second
        )
    } else {
        "-".into()
    };
    let paused = until(r.paused_until.as_ref());
    vec![
        r.resource.clone(),
        r.rule.clone(),
        tokens,
        inflight,
        r.live_leases.to_string(),
        state(r.circuit_state).into(),
        rate,
        if paused.is_empty() {
            String::new()
        } else {
            format!("paused {paused}")
        },
    ]
}

pub const RESOURCE_HEADERS: &[&str] = &[
    "resource",
    "rule",
    "tokens",
    "in flight",
    "leases",
    "breaker",
    "rate/s eff/conf",
    "pause",
];

pub fn lease(l: &pb::LeaseInfo) -> Value {
    json!({
        "lease_id": l.lease_id,
        "resource": l.resource,
        "descriptors": l.descriptors,
        "permits": l.permits,
        "expires_at": time(l.expires_at.as_ref()),
        "client_id": l.client_id,
        "owner": l.owner,
        "probe": l.probe,
    })
}

pub fn circuit(c: &pb::GetCircuitStateResponse) -> Value {
    json!({
        "resource": c.resource,
        "breaker_configured": c.breaker_configured,
        "state": state(c.state),
        "since": time(c.since.as_ref()),
        "failures": c.failures,
        "calls": c.calls,
        "failure_rate": c.failure_rate,
        "consecutive_failures": c.consecutive_failures,
        "half_open_at": time(c.half_open_at.as_ref()),
        "half_open_probes_left": c.half_open_probes_left,
        "half_open_successes_needed": c.half_open_successes_needed,
        "effective_rate_per_second": c.effective_rate_per_second,
        "configured_rate_per_second": c.configured_rate_per_second,
        "paused_until": time(c.paused_until.as_ref()),
    })
}
