//! `/status.json`: what the page shows, for the page and for scripts (README, "Status page").

use std::collections::HashMap;

use serde_json::{Value, json};

use super::history::{History, Sample};
use crate::{
    clock::Clock,
    engine::{BreakerState, EngineError, Quota, ResourceUsage, Rule, Store, UsageQuery},
    metrics::Metrics,
};

/// Resources per page unless `page_size` says otherwise, and the most it may say.
const PAGE: usize = 50;
const MAX_PAGE: usize = 500;

/// The page's query: `?prefix=&rule=&after=&page_size=`.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct StatusQuery {
    /// Only resources whose name starts with this.
    pub prefix: String,
    /// Only this rule's resources.
    pub rule: String,
    /// Resources after this name (the previous page's `next_after`).
    pub after: String,
    /// Resources per page (at most 500).
    pub page_size: usize,
}

fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |j: usize| bytes.get(j).and_then(|b| (*b as char).to_digit(16));
        match (bytes[i], hex(i + 1), hex(i + 2)) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (b'+', _, _) => {
                out.push(b' ');
                i += 1;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl StatusQuery {
    /// Parses a URI query string; unknown keys are ignored, sizes are clamped, names bounded at 256 bytes.
    pub fn parse(query: Option<&str>) -> Self {
        let mut q = Self {
            page_size: PAGE,
            ..Self::default()
        };
        for pair in query.unwrap_or_default().split('&').take(16) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let v: String = decode(v).chars().take(256).collect();
            match k {
                "prefix" => q.prefix = v,
                "rule" => q.rule = v,
                "after" => q.after = v,
                "page_size" => q.page_size = v.parse().unwrap_or(PAGE).clamp(1, MAX_PAGE),
                _ => {}
            }
        }
        q
    }
}

/// A breaker state as the API spells it.
pub fn state(s: BreakerState) -> &'static str {
    match s {
        BreakerState::Closed => "CLOSED",
        BreakerState::Open => "OPEN",
        BreakerState::HalfOpen => "HALF_OPEN",
    }
}

fn ms(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn resource(u: &ResourceUsage, rule: &Rule, clock: &dyn Clock) -> Value {
    let configured = rule.headline_rate().map_or(0.0, |r| r.per_second());
    let now = clock.now();
    json!({
        "resource": &*u.resource,
        "rule": rule.name,
        "tokens_available": u.tokens_available,
        "burst": rule.resource.rate.map(|r| r.burst),
        "algorithm": rule.resource.rate.map(|r| r.algorithm.as_str()),
        "in_flight": u.in_flight,
        "max_concurrent": rule.resource.max_in_flight,
        "live_leases": u.live_leases,
        "partitions": rule.partitions.iter().map(|p| p.descriptor.to_string()).collect::<Vec<_>>(),
        "overrides": crate::grpc::admin_service::overrides(rule, false),
        "bypassed": crate::grpc::admin_service::overrides(rule, true),
        "priority": crate::grpc::admin_service::priority_classes(rule)
            .iter()
            .map(|c| json!({ "class": c.name, "reserve": c.reserve, "default": c.default }))
            .collect::<Vec<_>>(),
        "breaker": state(u.breaker),
        "breaker_configured": rule.breaker.is_some(),
        "effective_rate_per_second": configured * u.rate_factor,
        "configured_rate_per_second": configured,
        "paused_until_ms": u.paused_until.map(|t| ms(clock.wall(t))),
        "pause_left_ms": u.paused_until.map(|t| t.saturating_sub(now) / 1_000_000),
    })
}

fn samples(s: &[Sample]) -> Value {
    json!({
        "at": s.iter().map(|x| x.at).collect::<Vec<_>>(),
        "granted": s.iter().map(|x| x.granted).collect::<Vec<_>>(),
        "denied": s.iter().map(|x| x.denied).collect::<Vec<_>>(),
        "throttles": s.iter().map(|x| x.throttles).collect::<Vec<_>>(),
    })
}

/// Transitions this node made (with their reasons) and those the sampler saw in the store that it did not
/// make (another node's, with Redis; or a breaker's open period running out), newest first.
fn transitions<S: Store>(quota: &Quota<S>, history: &History) -> Vec<Value> {
    let made = quota.stats().recent();
    let mut out: Vec<(u64, Value)> = made
        .iter()
        .map(|t| {
            let v = json!({ "at_ms": t.at_ms, "resource": t.breaker, "rule": t.rule, "from": state(t.from),
                            "to": state(t.to), "reason": t.reason });
            (t.at_ms, v)
        })
        .collect();
    for seen in history.transitions() {
        let ours = made.iter().any(|t| {
            t.to == seen.to
                && t.breaker.split('/').next() == Some(seen.resource.as_str())
                && t.at_ms.abs_diff(seen.at_ms) <= 2_000
        });
        if !ours {
            let v = json!({ "at_ms": seen.at_ms, "resource": seen.resource, "from": state(seen.from),
                            "to": state(seen.to), "reason": "seen in the store" });
            out.push((seen.at_ms, v));
        }
    }
    out.sort_by_key(|e| std::cmp::Reverse(e.0));
    out.truncate(super::history::TRANSITIONS);
    out.into_iter().map(|(_, v)| v).collect()
}

/// The heaviest partition values by denials, and by shadow denials, and the bypassed grants, per rule (a
/// few per rule: bounded).
fn top_denied(metrics: Option<&Metrics>) -> HashMap<&'static str, (Value, Value, u64)> {
    let Some(m) = metrics else {
        return HashMap::new();
    };
    let rows = |top: &std::sync::Mutex<crate::metrics::TopCounts>| {
        let top = top
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .top(5);
        let rows: Vec<Value> = top
            .iter()
            .map(|(by, n)| json!({ "by": by, "denials": n }))
            .collect();
        Value::Array(rows)
    };
    m.resources()
        .into_iter()
        .map(|(rule, c)| {
            let bypassed = c.bypassed.load(std::sync::atomic::Ordering::Relaxed);
            (
                rule,
                (rows(&c.denied_partitions), rows(&c.shadow_denied), bypassed),
            )
        })
        .collect()
}

/// A shared store's state (`null` for the in-memory store): whether it answers (else each resource's
/// `on_store_error` is in force), the nodes sharing it, whether it may evict quotad's state, failed calls
/// by kind and grants made without it.
fn store(h: &crate::engine::StoreHealth) -> Value {
    let pairs = |v: &[(&str, u64)]| {
        v.iter()
            .map(|(k, n)| ((*k).to_owned(), json!(n)))
            .collect::<serde_json::Map<_, _>>()
    };
    json!({
        "up": !h.down,
        "nodes": h.nodes,
        "evicting": h.evicting,
        "calls": h.calls,
        "batches": h.batches,
        "batched_calls": h.batched_calls,
        "errors": pairs(&h.errors),
        "fallback_grants": pairs(&h.fallback_grants),
        "shares": shares(&h.shares),
    })
}

/// The slices of `local_share` resources this node holds (the 20 holding most) and what they did.
fn shares(s: &crate::engine::ShareStats) -> Value {
    let held: Vec<Value> = s
        .held
        .iter()
        .take(20)
        .map(|h| {
            json!({
                "resource": &*h.resource,
                "levels": h.levels,
                "permits": h.tokens,
                "ttl_left_ms": h.ttl_left / 1_000_000,
                "next_ask": h.want,
            })
        })
        .collect();
    json!({
        "held": held,
        "live": s.held.len(),
        "keys": s.keys,
        "slices_taken": s.slices,
        "permits_taken": s.taken,
        "given_back": s.given_back,
        "local_decisions": s.local,
    })
}

/// What Envoy's rate limit service has answered: the domains (by answers, most first) and the limits (by
/// refusals, most first), 20 of each.
fn rls(metrics: Option<&Metrics>) -> Value {
    let Some(m) = metrics else {
        return Value::Null;
    };
    let counts = m.rls();
    if counts.requests.is_empty() {
        return Value::Null;
    }
    let mut domains: Vec<_> = counts.requests.iter().collect();
    domains.sort_by(|a, b| (b.1[0] + b.1[1]).cmp(&(a.1[0] + a.1[1])).then(a.0.cmp(b.0)));
    let mut limits: Vec<_> = counts.descriptors.iter().collect();
    limits.sort_by(|a, b| {
        (b.1[1] + b.1[2], b.1[0])
            .cmp(&(a.1[1] + a.1[2], a.1[0]))
            .then(a.0.cmp(b.0))
    });
    json!({
        "domains": domains.iter().take(20).map(|(d, n)| json!({ "domain": d, "ok": n[0], "over_limit": n[1] }))
            .collect::<Vec<_>>(),
        "limits": limits.iter().take(20)
            .map(|(l, n)| json!({ "limit": l, "ok": n[0], "over_limit": n[1], "shadow_over_limit": n[2] }))
            .collect::<Vec<_>>(),
    })
}

/// The whole snapshot, as JSON text.
pub async fn snapshot<S: Store>(
    quota: &Quota<S>,
    metrics: Option<&Metrics>,
    history: &History,
    q: &StatusQuery,
) -> Result<String, EngineError> {
    let rules = quota.rules();
    let query = UsageQuery {
        prefix: &q.prefix,
        rule: (!q.rule.is_empty()).then_some(q.rule.as_str()),
        after: (!q.after.is_empty()).then_some(q.after.as_str()),
        limit: q.page_size,
        configured: true,
    };
    let usage = quota.usage_page(&query).await?;
    let clock = quota.clock();
    let resources: Vec<Value> = usage
        .resources
        .iter()
        .filter_map(|u| Some(resource(u, rules.resolve(&u.resource)?, clock.as_ref())))
        .collect();
    let next_after = match usage.resources.last() {
        Some(last) if usage.more => last.resource.to_string(),
        _ => String::new(),
    };
    let top = top_denied(metrics);
    let charts: Vec<Value> = history
        .samples()
        .iter()
        .map(|(r, s)| {
            let (top, shadow, bypassed) = top
                .get(r)
                .cloned()
                .unwrap_or_else(|| (Value::Array(Vec::new()), Value::Array(Vec::new()), 0));
            json!({ "rule": r, "samples": samples(s), "top_denied": top, "shadow_denied": shadow,
                    "bypassed": bypassed })
        })
        .collect();
    let transitions = transitions(quota, history);
    let v = json!({
        "store": quota.store().health().map(|h| store(&h)),
        "now_ms": ms(std::time::SystemTime::now()),
        "config_version": quota.config_version(),
        "rules": rules.all().iter().map(|r| r.name).collect::<Vec<_>>(),
        "live_keys": usage.live_keys,
        "max_live_keys": rules.capacity.max_live_keys,
        "live_leases": usage.live_leases,
        "max_leases": rules.capacity.max_leases,
        "resources": resources,
        "next_after": next_after,
        "charts": charts,
        "transitions": transitions,
        "rls": rls(metrics),
    });
    Ok(v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_query_is_decoded_bounded_and_clamped() {
        let q = StatusQuery::parse(Some(
            "prefix=partner%2Es&rule=partner.*&page_size=9999&junk&after=a+b",
        ));
        assert_eq!(
            q,
            StatusQuery {
                prefix: "partner.s".into(),
                rule: "partner.*".into(),
                after: "a b".into(),
                page_size: 500
            }
        );
        assert_eq!(StatusQuery::parse(None).page_size, 50);
        assert_eq!(StatusQuery::parse(Some("page_size=0")).page_size, 1);
        assert_eq!(
            StatusQuery::parse(Some(&format!("prefix={}", "x".repeat(10_000))))
                .prefix
                .len(),
            256
        );
        assert_eq!(StatusQuery::parse(Some("prefix=%ff%")).prefix, "\u{fffd}%");
    }
}
