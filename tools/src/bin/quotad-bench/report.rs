//! The summary: throughput, answers by decision and by error status, latency percentiles.

use std::{collections::BTreeMap, fmt, time::Duration};

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::{args::Args, caller::Answer};

/// Latency figures, microseconds.
#[derive(Debug, Serialize)]
pub struct Latency {
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
    pub mean_us: f64,
}

/// One run's result.
#[derive(Debug, Serialize)]
pub struct Summary {
    pub target: String,
    pub call: &'static str,
    pub mode: &'static str,
    pub concurrency: Option<usize>,
    pub rate: Option<f64>,
    pub connections: usize,
    pub keys: u64,
    pub seconds: f64,
    pub calls: u64,
    pub calls_per_second: f64,
    pub decisions: BTreeMap<&'static str, u64>,
    pub errors: BTreeMap<String, u64>,
    pub latency: Latency,
}

fn us(ns: u64) -> f64 {
    ns as f64 / 1_000.0
}

impl Summary {
    pub fn new(
        args: &Args,
        latency: &Histogram<u64>,
        answers: &BTreeMap<Answer, u64>,
        elapsed: Duration,
    ) -> Self {
        let mut decisions = BTreeMap::new();
        let mut errors = BTreeMap::new();
        for (a, n) in answers {
            match a {
                Answer::Decision(d) => *decisions.entry(*d).or_default() += n,
                Answer::Error(code) => {
                    *errors
                        .entry(format!("{:?}", tonic::Code::from(*code)))
                        .or_default() += n;
                }
            }
        }
        let calls = latency.len();
        let seconds = elapsed.as_secs_f64();
        Self {
            target: args.target.clone(),
            call: args.call.as_str(),
            mode: if args.rate.is_some() {
                "open-loop"
            } else {
                "closed-loop"
            },
            concurrency: args.rate.is_none().then_some(args.concurrency),
            rate: args.rate,
            connections: args.connections,
            keys: args.keys,
            seconds,
            calls,
            calls_per_second: if seconds > 0.0 {
                calls as f64 / seconds
            } else {
                0.0
            },
            decisions,
            errors,
            latency: Latency {
                p50_us: us(latency.value_at_quantile(0.5)),
                p90_us: us(latency.value_at_quantile(0.9)),
                p99_us: us(latency.value_at_quantile(0.99)),
                p999_us: us(latency.value_at_quantile(0.999)),
                max_us: us(latency.max()),
                mean_us: latency.mean() / 1_000.0,
            },
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let how = match (self.concurrency, self.rate) {
            (Some(c), _) => format!("{c} in flight"),
            (None, Some(r)) => format!("{r} calls/s offered"),
            (None, None) => String::new(),
        };
        writeln!(
            f,
            "{} against {} ({}, {how}, {} connections, {} keys)",
            self.call, self.target, self.mode, self.connections, self.keys
        )?;
        writeln!(
            f,
            "  {} calls in {:.2} s: {:.0} calls/s",
            self.calls, self.seconds, self.calls_per_second
        )?;
        for (d, n) in &self.decisions {
            writeln!(f, "  {d:<20} {n}")?;
        }
        for (e, n) in &self.errors {
            writeln!(f, "  error {e:<14} {n}")?;
        }
        let l = &self.latency;
        writeln!(
            f,
            "  latency µs: p50 {:.0}  p90 {:.0}  p99 {:.0}  p99.9 {:.0}  max {:.0}  mean {:.0}",
            l.p50_us, l.p90_us, l.p99_us, l.p999_us, l.max_us, l.mean_us
        )
    }
}
