//! [`Metrics`]: what the gRPC layer records on each call. Per-resource counters live in a copy-on-write map
//! keyed by rule name: the hot path is one lock-free load, one lookup of a short key, and relaxed atomic
//! increments; the map only grows when a rule is first seen (bounded by the config).

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use arc_swap::ArcSwap;

use super::{
    LatencyHistogram,
    counters::{ResourceCounters, bump, decision_index, kind_index, outcome_index},
};
use crate::engine::{
    CircuitView, Decision, EngineError, NotReleased, Outcome, Released, Renewed, Reported,
    ThrottleKind, Verdict,
};
use crate::listen::penalty::Penalties;

/// The QuotaService RPCs, as metric labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Rpc {
    /// `Acquire`.
    Acquire,
    /// `Release`.
    Release,
    /// `Renew`.
    Renew,
    /// `ReportThrottle`.
    ReportThrottle,
    /// `GetCircuitState`.
    GetCircuitState,
}

impl Rpc {
    /// Every RPC, in label order.
    pub const ALL: [Rpc; 5] = [
        Rpc::Acquire,
        Rpc::Release,
        Rpc::Renew,
        Rpc::ReportThrottle,
        Rpc::GetCircuitState,
    ];

    /// The RPC's name, as in the proto.
    pub fn as_str(self) -> &'static str {
        match self {
            Rpc::Acquire => "Acquire",
            Rpc::Release => "Release",
            Rpc::Renew => "Renew",
            Rpc::ReportThrottle => "ReportThrottle",
            Rpc::GetCircuitState => "GetCircuitState",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Release calls that released nothing, in label order (see [`NotReleased`]).
pub const RELEASE_NOOPS: [&str; 3] = ["already_released", "expired", "unknown_lease"];

fn noop_index(n: NotReleased) -> usize {
    match n {
        NotReleased::AlreadyReleased => 0,
        NotReleased::Expired => 1,
        NotReleased::UnknownLease => 2,
    }
}

/// An error label: the RPC, the error's kind, and for a bad field the field's name without any
/// descriptor key (`descriptors`, not `descriptors["tenant"]`), so values never become labels.
pub type ErrorKey = (Rpc, &'static str, String);

/// Counters by rule name (foldhash: this lookup is on every call).
type CountersMap = HashMap<&'static str, Arc<ResourceCounters>, foldhash::fast::RandomState>;

/// Everything quotad counts per call. See the module docs.
#[derive(Debug, Default)]
pub struct Metrics {
    resources: ArcSwap<CountersMap>,
    grow: Mutex<()>,
    latency: [LatencyHistogram; 5],
    errors: Mutex<HashMap<ErrorKey, u64>>,
    release_noops: [AtomicU64; 3],
    reloads_ok: AtomicU64,
    reloads_failed: AtomicU64,
    auth_refusals: [AtomicU64; 2],
    connections: Arc<Penalties>,
    rls: Mutex<RlsCounts>,
}

/// The most distinct label values the rate limit service's metrics keep per family; the rest count as
/// `(other)` (a domain or a detailed descriptor comes from the wire).
pub const RLS_MAX_LABELS: usize = 1000;

/// The codes a `ShouldRateLimit` answer is counted by, in label order.
pub const RLS_CODES: [&str; 2] = ["ok", "over_limit"];
/// What a counted descriptor came to, in label order.
pub const RLS_RESULTS: [&str; 3] = ["ok", "over_limit", "shadow_over_limit"];

/// What the rate limit service counts: answers by domain (per [`RLS_CODES`]), descriptors by limit (its
/// path, or the descriptor's with values for a detailed metric; per [`RLS_RESULTS`]).
#[derive(Debug, Default, Clone)]
pub struct RlsCounts {
    /// `ShouldRateLimit` answers by domain.
    pub requests: HashMap<String, [u64; 2], foldhash::fast::RandomState>,
    /// Counted descriptors by limit.
    pub descriptors: HashMap<String, [u64; 3], foldhash::fast::RandomState>,
}

/// Adds one at `index` to `name`'s counts, or to `(other)`'s once `map` holds [`RLS_MAX_LABELS`] names
/// (a name already there is found without allocating).
fn bump_capped<const N: usize>(
    map: &mut HashMap<String, [u64; N], foldhash::fast::RandomState>,
    name: &str,
    index: usize,
) {
    if let Some(n) = map.get_mut(name) {
        n[index] += 1;
        return;
    }
    let name = if map.len() < RLS_MAX_LABELS {
        name
    } else {
        "(other)"
    };
    map.entry(name.to_owned()).or_insert([0; N])[index] += 1;
}

/// Why the auth interceptor refused a call, as `quotad_auth_refusals_total` labels it.
pub const AUTH_REFUSALS: [&str; 2] = ["unauthenticated", "permission_denied"];

impl Metrics {
    /// Empty metrics.
    pub fn new() -> Self {
        Self::default()
    }

    /// A `ShouldRateLimit` answer for `domain`: each counted descriptor's metric name and result (an
    /// index into [`RLS_RESULTS`]), and whether the request was over the limit.
    pub fn rls_answered<'a>(
        &self,
        domain: &str,
        descriptors: impl Iterator<Item = (&'a str, usize)>,
        over: bool,
    ) {
        let mut rls = self.rls.lock().unwrap_or_else(PoisonError::into_inner);
        bump_capped(&mut rls.requests, domain, usize::from(over));
        for (name, result) in descriptors {
            bump_capped(&mut rls.descriptors, name, result);
        }
    }

    /// What the rate limit service has counted.
    pub fn rls(&self) -> RlsCounts {
        self.rls
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Runs `f` on `rule`'s counters, creating them on first use.
    pub fn with_resource<R>(
        &self,
        rule: &'static str,
        f: impl FnOnce(&ResourceCounters) -> R,
    ) -> R {
        if let Some(c) = self.resources.load().get(rule) {
            return f(c);
        }
        let _grow = self.grow.lock().unwrap_or_else(PoisonError::into_inner);
        let current = self.resources.load_full();
        if let Some(c) = current.get(rule) {
            return f(c);
        }
        let mut next = CountersMap::clone(&current);
        let counters = Arc::new(ResourceCounters::default());
        next.insert(rule, counters.clone());
        self.resources.store(Arc::new(next));
        f(&counters)
    }

    /// Every resource's counters, sorted by name.
    pub fn resources(&self) -> Vec<(&'static str, Arc<ResourceCounters>)> {
        let mut all: Vec<_> = self
            .resources
            .load()
            .iter()
            .map(|(k, v)| (*k, v.clone()))
            .collect();
        all.sort_by(|a, b| a.0.cmp(b.0));
        all
    }

    /// The latency histogram of `rpc`.
    pub fn latency(&self, rpc: Rpc) -> &LatencyHistogram {
        &self.latency[rpc.index()]
    }

    /// Failed calls by (rpc, reason, field), sorted.
    pub fn errors(&self) -> Vec<(ErrorKey, u64)> {
        let mut all: Vec<_> = self
            .errors
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        all.sort();
        all
    }

    /// Release calls that released nothing, by [`RELEASE_NOOPS`] reason.
    pub fn release_noops(&self) -> [u64; 3] {
        self.release_noops
            .each_ref()
            .map(|c| c.load(Ordering::Relaxed))
    }

    /// Config reloads (succeeded, failed).
    pub fn reloads(&self) -> (u64, u64) {
        (
            self.reloads_ok.load(Ordering::Relaxed),
            self.reloads_failed.load(Ordering::Relaxed),
        )
    }

    /// Calls the auth interceptor refused, by [`AUTH_REFUSALS`] reason.
    pub fn auth_refusals(&self) -> [u64; 2] {
        self.auth_refusals
            .each_ref()
            .map(|c| c.load(Ordering::Relaxed))
    }

    /// Connections closed by reason and refused at accept (the listeners count them).
    pub fn connections(&self) -> &Arc<Penalties> {
        &self.connections
    }

    /// Counts a call the auth interceptor refused with `code`.
    pub fn refused(&self, code: tonic::Code) {
        let i = usize::from(code == tonic::Code::PermissionDenied);
        if let Some(c) = self.auth_refusals.get(i) {
            bump(c, 1);
        }
    }

    /// Counts a config reload.
    pub fn reloaded(&self, ok: bool) {
        bump(
            if ok {
                &self.reloads_ok
            } else {
                &self.reloads_failed
            },
            1,
        );
    }

    fn error(&self, rpc: Rpc, e: &EngineError) {
        let field = match e {
            EngineError::InvalidArgument { field, .. } => {
                field.split('[').next().unwrap_or_default().to_owned()
            }
            _ => String::new(),
        };
        *self
            .errors
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry((rpc, e.kind(), field))
            .or_default() += 1;
    }

    /// Records an Acquire: its latency, and its decision or error.
    pub fn acquired(&self, result: &Result<Decision, EngineError>, elapsed: Duration) {
        self.latency(Rpc::Acquire).observe(elapsed);
        match result {
            Ok(d) => self.with_resource(d.rule, |c| {
                bump(&c.acquires[decision_index(d.denial())], 1);
                if let Verdict::Denied { denied_by, .. } = &d.verdict
                    && denied_by.contains('=')
                {
                    // A partition level denied (rare next to grants): worth the lock.
                    c.denied_partitions
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .add(denied_by);
                }
                match d.grant() {
                    Some(g) if g.replayed => bump(&c.idempotent_replays, 1),
                    Some(g) if g.bypassed => bump(&c.bypassed, 1),
                    _ => {}
                }
                if let Some(by) = d.shadow_denied_by() {
                    shadow_denied(c, by);
                }
            }),
            Err(e) => self.error(Rpc::Acquire, e),
        }
    }

    /// Records a Release with `outcome`.
    pub fn released(
        &self,
        outcome: Outcome,
        result: &Result<Released, EngineError>,
        elapsed: Duration,
    ) {
        self.latency(Rpc::Release).observe(elapsed);
        match result {
            Ok(r) => match (&r.result, &r.rule) {
                (Ok(()), Some(rule)) => self.with_resource(rule, |c| {
                    bump(&c.releases[outcome_index(outcome)], 1);
                    bump(&c.settle_refunded, r.refunded);
                    bump(&c.settle_charged, r.charged);
                }),
                (Ok(()), None) => {}
                (Err(why), _) => bump(&self.release_noops[noop_index(*why)], 1),
            },
            Err(e) => self.error(Rpc::Release, e),
        }
    }

    /// Records a Renew.
    pub fn renewed(&self, result: &Result<Renewed, EngineError>, elapsed: Duration) {
        self.latency(Rpc::Renew).observe(elapsed);
        if let Err(e) = result {
            self.error(Rpc::Renew, e);
        }
    }

    /// Records a ReportThrottle of `kind`.
    pub fn reported(
        &self,
        kind: ThrottleKind,
        result: &Result<Reported, EngineError>,
        elapsed: Duration,
    ) {
        self.latency(Rpc::ReportThrottle).observe(elapsed);
        match result {
            Ok(r) => self.with_resource(r.rule, |c| {
                bump(&c.throttle_reports[kind_index(kind)], 1);
                if r.rate_decreased {
                    bump(&c.rate_decreases, 1);
                }
            }),
            Err(e) => self.error(Rpc::ReportThrottle, e),
        }
    }

    /// Records a GetCircuitState.
    pub fn circuit_read(&self, result: &Result<CircuitView, EngineError>, elapsed: Duration) {
        self.latency(Rpc::GetCircuitState).observe(elapsed);
        if let Err(e) = result {
            self.error(Rpc::GetCircuitState, e);
        }
    }

    /// Records a call that failed before reaching the engine (a malformed request).
    pub fn rejected(&self, rpc: Rpc, e: &EngineError, elapsed: Duration) {
        self.latency(rpc).observe(elapsed);
        self.error(rpc, e);
    }
}

/// Counts a grant the shadow level `by` ("resource" or "tenant=acme") would have denied.
fn shadow_denied(c: &ResourceCounters, by: &str) {
    let level = by.split_once('=').map_or(by, |(key, _)| key);
    let mut counts = c
        .shadow_denials
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    match counts.iter_mut().find(|(l, _)| l == level) {
        Some((_, n)) => *n += 1,
        None => counts.push((level.to_owned(), 1)),
    }
    drop(counts);
    c.shadow_denied
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .add(by);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_created_once_per_rule() {
        let m = Metrics::new();
        let rule = "partner.*";
        for _ in 0..3 {
            m.with_resource(rule, |c| bump(&c.acquires[0], 1));
        }
        let all = m.resources();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].1.acquires[0].load(Ordering::Relaxed), 3);
    }

    #[test]
    fn error_labels_drop_descriptor_keys() {
        let m = Metrics::new();
        let e = EngineError::invalid("descriptors[\"tenant-123\"]", "too long");
        m.rejected(Rpc::Acquire, &e, Duration::ZERO);
        assert_eq!(
            m.errors(),
            [(
                (Rpc::Acquire, "invalid_argument", "descriptors".to_owned()),
                1
            )]
        );
    }
}
