//! A rule's parameters as the script reads them: comma-separated numbers, floats printed so that they
//! round-trip exactly (the script must compute the same doubles as the in-memory store).

use crate::{
    clock::nanos,
    engine::{AdaptiveSpec, Algorithm, BreakerSpec, EngineError, LevelSpec, RateSpec, Rule, Rules},
};

/// `limit,period_ns,burst` and, for a window, `,algorithm` (a token bucket, the default, says nothing), or
/// empty without a rate.
pub fn rate(rate: Option<RateSpec>) -> String {
    rate.map_or_else(String::new, |r| {
        let (limit, period, burst) = (r.limit, nanos(r.period), r.burst);
        match r.algorithm {
            Algorithm::TokenBucket => format!("{limit},{period},{burst}"),
            window => format!("{limit},{period},{burst},{}", window.as_str()),
        }
    })
}

/// `decrease,floor,cooldown_ns,step,interval_ns`, or empty.
pub fn adaptive(spec: Option<&AdaptiveSpec>) -> String {
    spec.map_or_else(String::new, |a| {
        format!(
            "{:?},{:?},{},{:?},{}",
            a.decrease_factor,
            a.floor,
            nanos(a.cooldown),
            a.increase_step,
            nanos(a.increase_interval)
        )
    })
}

/// `failure_rate,min_calls,window_ns,consecutive,open_ns,backoff,max_open_ns,probes,successes`, or empty.
pub fn breaker(spec: Option<&BreakerSpec>) -> String {
    spec.map_or_else(String::new, |b| {
        format!(
            "{:?},{},{},{},{},{:?},{},{},{}",
            b.failure_rate,
            b.min_calls,
            nanos(b.window),
            b.consecutive_failures,
            nanos(b.open_duration),
            b.open_backoff,
            nanos(b.max_open_duration),
            b.half_open_probes,
            b.half_open_successes
        )
    })
}

/// The most a settlement may put a level below empty.
pub fn max_debt(rule: &Rule, spec: &LevelSpec) -> u64 {
    rule.max_debt.or(spec.rate.map(|r| r.burst)).unwrap_or(0)
}

/// The largest deficit a level of `rule` can hold, in nanoseconds: `(burst + max_debt) × interval`. The
/// script keeps deficits in doubles, exact below 2^53 ns (104 days); a rule past that is refused by
/// [`exact_in_lua`] (when the Redis store is told the rules, and by a config check).
pub fn largest_deficit(rule: &Rule) -> u128 {
    let levels =
        std::iter::once(&rule.resource).chain(rule.partitions.iter().flat_map(|p| p.specs()));
    levels
        .filter_map(|l| {
            let r = l.rate?;
            let debt = max_debt(rule, l);
            if r.algorithm != Algorithm::TokenBucket {
                // A window keeps its period in nanoseconds and its counts as integers.
                let count = u128::from(r.limit.saturating_add(debt));
                return Some(u128::from(nanos(r.period)).max(count));
            }
            Some(
                u128::from(r.burst.saturating_add(debt)).saturating_mul(u128::from(
                    r.interval(rule.adaptive.as_ref().map_or(1.0, |a| a.floor)),
                )),
            )
        })
        .max()
        .unwrap_or(0)
}

/// Refuses rules whose levels the script cannot keep exactly. Lua numbers are doubles, exact for integers
/// below 2^53: a level that can owe more than 2^53 ns of refill (`(burst + max_debt) × interval`, 104 days; a
/// huge burst or debt at a very slow rate) would round, and the fleet would admit what the rule forbids.
pub fn exact_in_lua(rules: &Rules) -> Result<(), EngineError> {
    match rules
        .all()
        .iter()
        .find(|r| largest_deficit(r) >= 1u128 << 53)
    {
        Some(rule) => Err(EngineError::invalid(
            "resources",
            format!(
                "'{}': a level spans more than 104 days ((burst + max_debt) at its rate, or a window's \
                 period), more than the Redis store keeps exactly; lower them, or use store = \"memory\"",
                rule.name
            ),
        )),
        None => Ok(()),
    }
}
