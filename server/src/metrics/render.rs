//! The Prometheus text exposition (format 0.0.4), built at scrape time. Per-call counters come from
//! [`Metrics`]; breaker transitions, expiries and evictions from the engine's
//! [`EngineStats`](crate::engine::EngineStats); gauges (leases in flight, tokens, rates, pauses, breaker
//! states, live keys) from the store's live usage, aggregated per configured resource:
//! a glob rule's concrete resources are summed (leases), take the tightest value (tokens, effective rate)
//! or the worst state (breaker: open over half-open over closed; paused if any is paused).

use std::{
    collections::BTreeMap,
    fmt::{Display, Write as _},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use super::{
    Metrics, ResourceCounters, Rpc,
    counters::{DECISIONS, KINDS, OUTCOMES},
    registry::{AUTH_REFUSALS, RELEASE_NOOPS, RLS_CODES, RLS_RESULTS},
};
use crate::{
    engine::{BreakerState, EngineError, Quota, Rule, Rules, StatsSnapshot, Store, StoreUsage},
    latency::{BUCKETS_SECONDS, HistogramSnapshot},
};

/// Aggregated live state of one configured resource.
#[derive(Debug, Default)]
struct Live {
    leases: u64,
    tokens: Option<u64>,
    factor: Option<f64>,
    paused: bool,
    breaker: Option<BreakerState>,
}

fn severity(s: BreakerState) -> u8 {
    match s {
        BreakerState::Closed => 0,
        BreakerState::HalfOpen => 1,
        BreakerState::Open => 2,
    }
}

/// Escapes a label value.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// A float as Prometheus reads it.
fn float(v: f64) -> String {
    if v.is_nan() {
        "NaN".to_owned()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.to_owned()
    } else {
        format!("{v}")
    }
}

#[derive(Default)]
struct Out(String);

impl Out {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl Display) {
        self.0.push_str(name);
        if !labels.is_empty() {
            self.0.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.0.push(',');
                }
                let _ = write!(self.0, "{k}=\"{}\"", escape(v));
            }
            self.0.push('}');
        }
        let _ = writeln!(self.0, " {value}");
    }
}

/// The whole exposition for `quota`, with `metrics`' counters: every family of [`FAMILIES`] in order, then
/// the shared store's.
pub async fn render<S: Store>(metrics: &Metrics, quota: &Quota<S>) -> Result<String, EngineError> {
    let scrape = Scrape::read(metrics, quota).await?;
    let mut o = Out::default();
    for family in FAMILIES {
        family(&mut o, &scrape);
    }
    if let Some(h) = quota.store().health() {
        store_health(&mut o, &h);
    }
    Ok(o.0)
}

/// What one scrape reads, once: the counters, the engine's stats and the store's live usage, by configured
/// resource.
struct Scrape<'a> {
    metrics: &'a Metrics,
    config_version: u64,
    /// Every configured rule, with zeros from the start (dashboards need the series to exist), and any rule
    /// a reload removed whose counters remain.
    configured: BTreeMap<&'static str, Option<Arc<Rule>>>,
    counters: BTreeMap<&'static str, Arc<ResourceCounters>>,
    live: BTreeMap<&'static str, Live>,
    usage: StoreUsage,
    stats: StatsSnapshot,
}

impl<'a> Scrape<'a> {
    async fn read<S: Store>(metrics: &'a Metrics, quota: &Quota<S>) -> Result<Self, EngineError> {
        let rules = quota.rules();
        // A shared store that is down still gets its health exposed, with no live usage.
        let usage = match quota.usage().await {
            Ok(u) => u,
            Err(e) if quota.store().health().is_some() => {
                tracing::debug!(error = %e, "no live usage for metrics");
                Default::default()
            }
            Err(e) => return Err(e),
        };
        let mut configured: BTreeMap<_, _> = rules
            .all()
            .into_iter()
            .map(|r| (r.name, Some(r.clone())))
            .collect();
        let counters: BTreeMap<_, _> = metrics.resources().into_iter().collect();
        for name in counters.keys() {
            configured.entry(*name).or_insert(None);
        }
        Ok(Self {
            metrics,
            config_version: quota.config_version(),
            configured,
            counters,
            live: Live::by_rule(&rules, &usage),
            usage,
            stats: quota.stats().snapshot(),
        })
    }

    fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.configured.keys().copied()
    }

    /// A per-resource counter of `name`'s counters (0 before its first call).
    fn counter(&self, name: &str, f: impl Fn(&ResourceCounters) -> &AtomicU64) -> u64 {
        self.counters
            .get(name)
            .map_or(0, |c| f(c).load(Ordering::Relaxed))
    }

    fn live(&self, name: &str) -> Option<&Live> {
        self.live.get(name)
    }
}

impl Live {
    /// The store's live usage aggregated per configured rule.
    fn by_rule(rules: &Rules, usage: &StoreUsage) -> BTreeMap<&'static str, Live> {
        let mut live: BTreeMap<&'static str, Live> = BTreeMap::new();
        for r in &usage.resources {
            let Some(rule) = rules.resolve(&r.resource) else {
                continue;
            };
            let l = live.entry(rule.name).or_default();
            l.leases += r.live_leases;
            if let Some(t) = r.tokens_available {
                l.tokens = Some(l.tokens.map_or(t, |x| x.min(t)));
            }
            l.factor = Some(l.factor.map_or(r.rate_factor, |x| x.min(r.rate_factor)));
            l.paused |= r.paused_until.is_some();
            if l.breaker.is_none_or(|b| severity(r.breaker) > severity(b)) {
                l.breaker = Some(r.breaker);
            }
        }
        live
    }
}

/// One metric family: its HELP, TYPE and samples.
type Family = fn(&mut Out, &Scrape<'_>);

/// The families, in exposition order.
const FAMILIES: [Family; 25] = [
    build_info,
    config,
    acquires,
    replays,
    bypassed,
    shadow_denials,
    releases,
    release_noops,
    settlement,
    expiries,
    throttle_reports,
    rate_decreases,
    transitions,
    request_errors,
    request_duration,
    leases_in_flight,
    concurrency_limit,
    tokens_available,
    rates,
    paused,
    breaker_state,
    capacity,
    auth_refusals,
    rls,
    connections_and_evictions,
];

/// One sample per resource of a per-resource counter.
fn per_resource(
    o: &mut Out,
    s: &Scrape<'_>,
    (name, help): (&str, &str),
    f: impl Fn(&ResourceCounters) -> &AtomicU64,
) {
    o.family(name, "counter", help);
    for n in s.names() {
        o.sample(name, &[("resource", n)], s.counter(n, &f));
    }
}

/// One sample per resource and label of a per-resource counter array.
fn per_resource_by(
    o: &mut Out,
    s: &Scrape<'_>,
    (name, help, label, values): (&str, &str, &str, &[&str]),
    f: impl Fn(&ResourceCounters) -> &[AtomicU64],
) {
    o.family(name, "counter", help);
    for n in s.names() {
        for (i, v) in values.iter().enumerate() {
            let count = s.counter(n, |c| &f(c)[i]);
            o.sample(name, &[("resource", n), (label, v)], count);
        }
    }
}

fn build_info(o: &mut Out, _: &Scrape<'_>) {
    o.family(
        "quotad_build_info",
        "gauge",
        "Always 1; the version label says which quotad is running.",
    );
    o.sample(
        "quotad_build_info",
        &[("version", env!("CARGO_PKG_VERSION"))],
        1,
    );
}

fn config(o: &mut Out, s: &Scrape<'_>) {
    o.family(
        "quotad_config_version",
        "gauge",
        "Config version in force: 1 at start, +1 per successful reload.",
    );
    o.sample("quotad_config_version", &[], s.config_version);
    let (ok, failed) = s.metrics.reloads();
    o.family(
        "quotad_config_reloads_total",
        "counter",
        "Config reloads (SIGHUP or QuotaAdmin/ReloadConfig) by result.",
    );
    o.sample("quotad_config_reloads_total", &[("result", "success")], ok);
    o.sample(
        "quotad_config_reloads_total",
        &[("result", "failure")],
        failed,
    );
}

fn acquires(o: &mut Out, s: &Scrape<'_>) {
    per_resource_by(
        o,
        s,
        (
            "quotad_acquires_total",
            "Acquire answers by resource and decision (granted, rate_limited, concurrency_limited, circuit_open, paused).",
            "decision",
            &DECISIONS,
        ),
        |c| &c.acquires,
    );
}

fn replays(o: &mut Out, s: &Scrape<'_>) {
    per_resource(
        o,
        s,
        (
            "quotad_idempotent_replays_total",
            "Acquires answered from the idempotency cache: a retried request_id, not charged again.",
        ),
        |c| &c.idempotent_replays,
    );
}

fn bypassed(o: &mut Out, s: &Scrape<'_>) {
    per_resource(
        o,
        s,
        (
            "quotad_bypassed_total",
            "Acquires granted bypassing every limit (an identity or a descriptor value configured \
             `bypass = true`): no tokens taken, a lease held.",
        ),
        |c| &c.bypassed,
    );
}

fn shadow_denials(o: &mut Out, s: &Scrape<'_>) {
    let name = "quotad_shadow_denials_total";
    o.family(
        name,
        "counter",
        "Grants a shadow (dry-run) level would have denied, by resource and level (`resource` or the \
         partition's descriptor key).",
    );
    for n in s.names() {
        let Some(c) = s.counters.get(n) else { continue };
        let counts = c
            .shadow_denials
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        for (level, count) in counts {
            o.sample(name, &[("resource", n), ("rule", &level)], count);
        }
    }
}

fn releases(o: &mut Out, s: &Scrape<'_>) {
    per_resource_by(
        o,
        s,
        (
            "quotad_releases_total",
            "Leases released by resource and reported outcome.",
            "outcome",
            &OUTCOMES,
        ),
        |c| &c.releases,
    );
}

fn release_noops(o: &mut Out, s: &Scrape<'_>) {
    o.family(
        "quotad_release_noops_total",
        "counter",
        "Release calls that released nothing, by reason (already_released, expired, unknown_lease).",
    );
    for (reason, v) in RELEASE_NOOPS.iter().zip(s.metrics.release_noops()) {
        o.sample("quotad_release_noops_total", &[("reason", reason)], v);
    }
}

fn settlement(o: &mut Out, s: &Scrape<'_>) {
    per_resource(
        o,
        s,
        (
            "quotad_settle_refunded_tokens_total",
            "Rate tokens given back by settlement (used_permits below what was acquired).",
        ),
        |c| &c.settle_refunded,
    );
    per_resource(
        o,
        s,
        (
            "quotad_settle_charged_tokens_total",
            "Rate tokens charged by settlement (used_permits above what was acquired).",
        ),
        |c| &c.settle_charged,
    );
}

fn expiries(o: &mut Out, s: &Scrape<'_>) {
    o.family(
        "quotad_lease_expiries_total",
        "counter",
        "Leases reclaimed at expiry without a release (a worker died or forgot).",
    );
    let expired: BTreeMap<_, _> = s.stats.expired_leases.iter().cloned().collect();
    for n in s.names() {
        let v = expired.get(n).copied().unwrap_or(0);
        o.sample("quotad_lease_expiries_total", &[("resource", n)], v);
    }
}

fn throttle_reports(o: &mut Out, s: &Scrape<'_>) {
    per_resource_by(
        o,
        s,
        (
            "quotad_throttle_reports_total",
            "ReportThrottle calls by resource and kind (throttled, error, timeout).",
            "kind",
            &KINDS,
        ),
        |c| &c.throttle_reports,
    );
}

fn rate_decreases(o: &mut Out, s: &Scrape<'_>) {
    per_resource(
        o,
        s,
        (
            "quotad_adaptive_rate_decreases_total",
            "Throttle reports that lowered the adaptive rate (at most one per cooldown).",
        ),
        |c| &c.rate_decreases,
    );
}

fn transitions(o: &mut Out, s: &Scrape<'_>) {
    o.family(
        "quotad_breaker_transitions_total",
        "counter",
        "Circuit breaker state changes by resource, from and to.",
    );
    for (rule, from, to, v) in &s.stats.transitions {
        o.sample(
            "quotad_breaker_transitions_total",
            &[
                ("resource", rule),
                ("from", from.as_str()),
                ("to", to.as_str()),
            ],
            v,
        );
    }
}

fn request_errors(o: &mut Out, s: &Scrape<'_>) {
    o.family(
        "quotad_request_errors_total",
        "counter",
        "Calls answered with an error status, by rpc, reason (invalid_argument, unknown_resource, unknown_lease, failed_precondition, capacity_exhausted, unavailable) and, for invalid_argument, the field.",
    );
    for ((rpc, reason, field), v) in s.metrics.errors() {
        o.sample(
            "quotad_request_errors_total",
            &[("rpc", rpc.as_str()), ("reason", reason), ("field", &field)],
            v,
        );
    }
}

fn request_duration(o: &mut Out, s: &Scrape<'_>) {
    o.family(
        "quotad_request_duration_seconds",
        "histogram",
        "Time from a decoded request to its answer, by rpc (includes any max_wait the server held the call).",
    );
    for rpc in Rpc::ALL {
        let h = s.metrics.latency(rpc).snapshot();
        histogram(
            o,
            "quotad_request_duration_seconds",
            &[("rpc", rpc.as_str())],
            &h,
        );
    }
}

/// A histogram's samples: its buckets, sum and count.
fn histogram(o: &mut Out, name: &str, labels: &[(&str, &str)], h: &HistogramSnapshot) {
    let bucket = format!("{name}_bucket");
    let total = h.cumulative[BUCKETS_SECONDS.len()];
    for (le, count) in BUCKETS_SECONDS.iter().zip(h.cumulative) {
        let le = float(*le);
        o.sample(&bucket, &[labels, &[("le", le.as_str())]].concat(), count);
    }
    o.sample(&bucket, &[labels, &[("le", "+Inf")]].concat(), total);
    o.sample(&format!("{name}_sum"), labels, float(h.sum_seconds));
    o.sample(&format!("{name}_count"), labels, total);
}

fn leases_in_flight(o: &mut Out, s: &Scrape<'_>) {
    o.family(
        "quotad_leases_in_flight",
        "gauge",
        "Live leases by resource (every grant holds a lease until released or expired).",
    );
    for n in s.names() {
        let v = s.live(n).map_or(0, |l| l.leases);
        o.sample("quotad_leases_in_flight", &[("resource", n)], v);
    }
}

fn concurrency_limit(o: &mut Out, s: &Scrape<'_>) {
    o.family(
        "quotad_concurrency_limit",
        "gauge",
        "Configured resource-wide concurrency limit (resources with one).",
    );
    for (n, rule) in &s.configured {
        if let Some(max) = rule.as_ref().and_then(|r| r.resource.max_in_flight) {
            o.sample("quotad_concurrency_limit", &[("resource", n)], max);
        }
    }
}

fn tokens_available(o: &mut Out, s: &Scrape<'_>) {
    o.family(
        "quotad_tokens_available",
        "gauge",
        "Tokens left in the resource-wide bucket (the lowest across a glob rule's resources).",
    );
    for (n, rule) in &s.configured {
        let Some(rate) = rule.as_ref().and_then(|r| r.resource.rate) else {
            continue;
        };
        let v = s.live(n).and_then(|l| l.tokens).unwrap_or(rate.burst);
        o.sample("quotad_tokens_available", &[("resource", n)], v);
    }
}

/// The configured rates, then the effective ones (each family stays one group).
fn rates(o: &mut Out, s: &Scrape<'_>) {
    o.family(
        "quotad_rate_configured_per_second",
        "gauge",
        "Configured rate of the resource's headline bucket, tokens per second.",
    );
    let mut effective = Out::default();
    effective.family(
        "quotad_rate_effective_per_second",
        "gauge",
        "Rate in force after adaptive decreases, tokens per second (the lowest across a glob rule's resources).",
    );
    for (n, rule) in &s.configured {
        let Some(rate) = rule.as_ref().and_then(|r| r.headline_rate()) else {
            continue;
        };
        let per_second = rate.limit as f64 / rate.period.as_secs_f64();
        let factor = s.live(n).and_then(|l| l.factor).unwrap_or(1.0);
        let labels = [("resource", *n)];
        o.sample(
            "quotad_rate_configured_per_second",
            &labels,
            float(per_second),
        );
        let v = float(per_second * factor);
        effective.sample("quotad_rate_effective_per_second", &labels, v);
    }
    o.0.push_str(&effective.0);
}

fn paused(o: &mut Out, s: &Scrape<'_>) {
    o.family(
        "quotad_paused",
        "gauge",
        "1 while grants are paused on a downstream's retry-after, else 0.",
    );
    for n in s.names() {
        let v = u8::from(s.live(n).is_some_and(|l| l.paused));
        o.sample("quotad_paused", &[("resource", n)], v);
    }
}

fn breaker_state(o: &mut Out, s: &Scrape<'_>) {
    o.family(
        "quotad_breaker_state",
        "gauge",
        "Circuit breaker state as a state set: 1 for the current state (the worst across a glob rule's resources).",
    );
    for (n, rule) in &s.configured {
        if rule.as_ref().is_some_and(|r| r.breaker.is_none()) {
            continue;
        }
        let state = s
            .live(n)
            .and_then(|l| l.breaker)
            .unwrap_or(BreakerState::Closed);
        for b in [
            BreakerState::Closed,
            BreakerState::Open,
            BreakerState::HalfOpen,
        ] {
            let labels = [("resource", *n), ("state", b.as_str())];
            o.sample("quotad_breaker_state", &labels, u8::from(b == state));
        }
    }
}

/// Live keys, leases and request ids against their caps.
fn capacity(o: &mut Out, s: &Scrape<'_>) {
    let u = &s.usage;
    for (name, kind, help, v) in [
        (
            "quotad_live_keys",
            "gauge",
            "State keys held in memory (buckets, semaphores, breakers, pressure), against capacity.max_live_keys.",
            u.live_keys,
        ),
        (
            "quotad_live_leases",
            "gauge",
            "Live leases, all resources, against capacity.max_leases.",
            u.live_leases,
        ),
        (
            "quotad_request_ids",
            "gauge",
            "Granted request_ids remembered for replay, against capacity.max_request_ids.",
            u.request_ids,
        ),
        (
            "quotad_request_ids_dropped_total",
            "counter",
            "Request_ids forgotten before their window ended because capacity.max_request_ids was reached.",
            u.request_ids_dropped,
        ),
    ] {
        o.family(name, kind, help);
        o.sample(name, &[], v);
    }
}

fn auth_refusals(o: &mut Out, s: &Scrape<'_>) {
    o.family(
        "quotad_auth_refusals_total",
        "counter",
        "Calls refused before any handler ran: no or bad credentials (unauthenticated), or a missing role or a non-loopback QuotaAdmin caller without auth (permission_denied).",
    );
    for (reason, n) in AUTH_REFUSALS.iter().zip(s.metrics.auth_refusals()) {
        o.sample("quotad_auth_refusals_total", &[("reason", reason)], n);
    }
}

fn rls(o: &mut Out, s: &Scrape<'_>) {
    let counts = s.metrics.rls();
    let requests = "quotad_rls_requests_total";
    o.family(
        requests,
        "counter",
        "Envoy rate limit service answers, by domain and overall code (at most 1,000 domains; then `(other)`).",
    );
    let mut rows: Vec<_> = counts.requests.iter().collect();
    rows.sort();
    for (domain, n) in rows {
        for (code, n) in RLS_CODES.iter().zip(n) {
            o.sample(requests, &[("domain", domain), ("code", code)], *n);
        }
    }
    let descriptors = "quotad_rls_descriptors_total";
    o.family(
        descriptors,
        "counter",
        "Descriptors counted by the Envoy rate limit service, by limit (its config path, or the descriptor's \
         values for detailed_metric and value_to_metric; at most 1,000, then `(other)`) and result.",
    );
    let mut rows: Vec<_> = counts.descriptors.iter().collect();
    rows.sort();
    for (limit, n) in rows {
        for (result, n) in RLS_RESULTS.iter().zip(n) {
            o.sample(descriptors, &[("limit", limit), ("result", result)], *n);
        }
    }
}

fn connections_and_evictions(o: &mut Out, s: &Scrape<'_>) {
    connections(o, s.metrics.connections());
    o.family(
        "quotad_keys_evicted_total",
        "counter",
        "Idle state keys dropped by the sweeper (full buckets, empty semaphores, pristine breakers).",
    );
    o.sample("quotad_keys_evicted_total", &[], s.stats.evicted_keys);
}

/// Connections the listeners closed or refused.
fn connections(o: &mut Out, p: &crate::listen::penalty::Penalties) {
    use crate::listen::penalty::{CloseReason, STRIKE_WINDOW, STRIKES};
    o.family(
        "quotad_connections_closed_total",
        "counter",
        "Connections the server closed: control_flood (PING or SETTINGS past max_control_frames_per_second), reset_flood (streams reset before they were accepted past max_pending_reset_streams: rapid reset), silent (nothing sent within preface_timeout). A cancelled call never closes its connection.",
    );
    for (reason, n) in CloseReason::ALL.iter().zip(p.closed_counts()) {
        o.sample(
            "quotad_connections_closed_total",
            &[("reason", reason.label())],
            n,
        );
    }
    o.family(
        "quotad_connections_refused_total",
        "counter",
        &format!("Connections refused at accept because their address had {STRIKES} connections closed for abuse within {STRIKE_WINDOW:?} (refused for 1 s, doubling with each repeat up to 1 min)."),
    );
    o.sample("quotad_connections_refused_total", &[], p.refused_count());
}

/// The shared store's families (only with `store = "redis"`).
fn store_health(o: &mut Out, h: &crate::engine::StoreHealth) {
    o.family(
        "quotad_store_up",
        "gauge",
        "1 while the shared store answers; 0 while each resource's on_store_error applies.",
    );
    o.sample("quotad_store_up", &[], u8::from(!h.down));
    o.family(
        "quotad_store_evicting",
        "gauge",
        "1 while the store may evict quotad's state when full (Redis maxmemory-policy other than noeviction): limits are then not exact.",
    );
    o.sample("quotad_store_evicting", &[], u8::from(h.evicting));
    o.family(
        "quotad_store_nodes",
        "gauge",
        "Live quotad nodes sharing the store (heartbeats within 5 s).",
    );
    o.sample("quotad_store_nodes", &[], h.nodes);
    o.family(
        "quotad_store_calls_total",
        "counter",
        "Calls made to the shared store (one per Acquire, Release, Renew, ReportThrottle).",
    );
    o.sample("quotad_store_calls_total", &[], h.calls);
    o.family(
        "quotad_store_batches_total",
        "counter",
        "Store calls that carried a batch of a shard's queued calls (each also counted once in quotad_store_calls_total).",
    );
    o.sample("quotad_store_batches_total", &[], h.batches);
    o.family(
        "quotad_store_batched_calls_total",
        "counter",
        "Calls that went to the store inside a batch.",
    );
    o.sample("quotad_store_batched_calls_total", &[], h.batched_calls);
    o.family(
        "quotad_store_errors_total",
        "counter",
        "Failed store calls by kind: timeout, busy (too many outstanding), error, full (Redis at its maxmemory refused it).",
    );
    for (kind, n) in h.errors {
        o.sample("quotad_store_errors_total", &[("kind", kind)], n);
    }
    o.family(
        "quotad_store_fallback_grants_total",
        "counter",
        "Grants made without the store, by policy (fail_open, local).",
    );
    for (policy, n) in h.fallback_grants {
        o.sample(
            "quotad_store_fallback_grants_total",
            &[("policy", policy)],
            n,
        );
    }
    o.family(
        "quotad_store_duration_seconds",
        "histogram",
        "Time of one store call, from send to answer.",
    );
    histogram(o, "quotad_store_duration_seconds", &[], &h.latency);
    shares(o, &h.shares);
}

/// The slices of `local_share` resources this node holds, and what they did.
fn shares(o: &mut Out, s: &crate::engine::ShareStats) {
    o.family(
        "quotad_share_permits_held",
        "gauge",
        "Permits this node holds in live slices of local_share resources, per resource (the 100 holding most).",
    );
    let mut held: Vec<(&str, u64)> = Vec::new();
    for slice in &s.held {
        match held.iter_mut().find(|(r, _)| *r == &*slice.resource) {
            Some((_, n)) => *n = n.saturating_add(slice.tokens),
            None => held.push((&slice.resource, slice.tokens)),
        }
    }
    held.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
    for (resource, n) in held.iter().take(100) {
        o.sample("quotad_share_permits_held", &[("resource", resource)], n);
    }
    o.family(
        "quotad_share_slices",
        "gauge",
        "Live slices this node holds (one per resource and partition values).",
    );
    o.sample("quotad_share_slices", &[], s.held.len());
    for (name, help, n) in [
        (
            "quotad_share_slices_taken_total",
            "Slices taken from the store (steps that took more than their own request).",
            s.slices,
        ),
        (
            "quotad_share_permits_taken_total",
            "Permits taken in slices beyond the requests that took them.",
            s.taken,
        ),
        (
            "quotad_share_permits_given_back_total",
            "Permits of slices given back to the store unused.",
            s.given_back,
        ),
        (
            "quotad_share_local_decisions_total",
            "Acquires answered from a slice or a remembered denial, without a store call.",
            s.local,
        ),
    ] {
        o.family(name, "counter", help);
        o.sample(name, &[], n);
    }
}
