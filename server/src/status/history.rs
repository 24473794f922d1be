//! What the status page charts: per rule (not per key, so memory does not grow with tenants) a ring of
//! one-second samples of grants, denials and throttle reports, and one bounded ring of the breaker
//! transitions seen. A sampler task fills them from the metrics counters and the store's usage.

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use crate::{
    engine::{BreakerState, Quota, Rules, Store, UsageQuery},
    metrics::Metrics,
};

/// Samples kept per rule: five minutes at one a second.
pub const SAMPLES: usize = 300;
/// Breaker transitions kept, newest last.
pub const TRANSITIONS: usize = 100;
/// Resources whose breaker the sampler follows each second (the first this many by name).
const WATCHED: usize = 1000;

/// One second of one rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    /// Unix seconds.
    pub at: u64,
    /// Acquires granted in that second.
    pub granted: u64,
    /// Acquires denied (any reason).
    pub denied: u64,
    /// Throttle reports.
    pub throttles: u64,
}

/// A breaker seen changing state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    /// Unix milliseconds when the sampler saw it (within a second of the change).
    pub at_ms: u64,
    /// The concrete resource.
    pub resource: String,
    /// Before.
    pub from: BreakerState,
    /// After.
    pub to: BreakerState,
}

#[derive(Debug, Default)]
struct Inner {
    rules: HashMap<&'static str, VecDeque<Sample>>,
    totals: HashMap<&'static str, [u64; 3]>,
    transitions: VecDeque<Transition>,
    states: HashMap<Arc<str>, BreakerState>,
}

/// The status page's history. Cheap to share.
#[derive(Debug, Default)]
pub struct History {
    inner: Mutex<Inner>,
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl History {
    fn with<R>(&self, f: impl FnOnce(&mut Inner) -> R) -> R {
        f(&mut self.inner.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Records a rule's running totals (granted, denied, throttles); the sample is the change since the last.
    pub fn record(&self, rule: &'static str, totals: [u64; 3], at: u64) {
        self.with(|h| {
            let last = h.totals.insert(rule, totals).unwrap_or(totals);
            let d = |i: usize| totals[i].saturating_sub(last[i]);
            let ring = h.rules.entry(rule).or_default();
            if ring.len() == SAMPLES {
                ring.pop_front();
            }
            ring.push_back(Sample {
                at,
                granted: d(0),
                denied: d(1),
                throttles: d(2),
            });
        });
    }

    /// Notes a resource's breaker state; a change from the last one seen is a transition.
    pub fn observe(&self, resource: &Arc<str>, state: BreakerState, at_ms: u64) {
        self.with(|h| {
            let before = h.states.insert(resource.clone(), state);
            match before {
                Some(from) if from != state => {
                    if h.transitions.len() == TRANSITIONS {
                        h.transitions.pop_front();
                    }
                    h.transitions.push_back(Transition {
                        at_ms,
                        resource: resource.to_string(),
                        from,
                        to: state,
                    });
                }
                _ => {}
            }
        });
    }

    /// Forgets breakers not seen in the last sweep (they went idle and lost their state), so the map is
    /// bounded by what one sweep reads.
    fn retain(&self, seen: &HashMap<Arc<str>, ()>) {
        self.with(|h| h.states.retain(|k, _| seen.contains_key(k)));
    }

    /// Every rule's samples, oldest first, by rule name.
    pub fn samples(&self) -> Vec<(&'static str, Vec<Sample>)> {
        let mut out: Vec<_> = self.with(|h| {
            h.rules
                .iter()
                .map(|(r, s)| (*r, s.iter().copied().collect()))
                .collect()
        });
        out.sort_by_key(|(r, _)| *r);
        out
    }

    /// The transitions seen, oldest first.
    pub fn transitions(&self) -> Vec<Transition> {
        self.with(|h| h.transitions.iter().cloned().collect())
    }
}

/// One sample for every configured rule (a rule without traffic yet charts zeros), from its counters.
fn record_rules(history: &History, metrics: &Metrics, rules: &Rules, at: u64) {
    let counters: HashMap<&'static str, _> = metrics.resources().into_iter().collect();
    let load = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
    for rule in rules.all() {
        let totals = counters.get(rule.name).map_or([0; 3], |c| {
            let denied = c.acquires[1..].iter().map(load).sum();
            [
                load(&c.acquires[0]),
                denied,
                c.throttle_reports.iter().map(load).sum(),
            ]
        });
        history.record(rule.name, totals, at);
    }
}

/// Fills `history` once a second until `stopped` completes.
pub async fn sample<S: Store>(
    history: Arc<History>,
    metrics: Arc<Metrics>,
    quota: Arc<Quota<S>>,
    stopped: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(stopped);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = &mut stopped => return,
            _ = tick.tick() => {}
        }
        let now = unix_ms();
        record_rules(&history, &metrics, &quota.rules(), now / 1000);
        let query = UsageQuery {
            prefix: "",
            rule: None,
            after: None,
            limit: WATCHED,
            configured: false,
        };
        if let Ok(usage) = quota.usage_page(&query).await {
            let mut seen = HashMap::with_capacity(usage.resources.len());
            for u in &usage.resources {
                history.observe(&u.resource, u.breaker, now);
                seen.insert(u.resource.clone(), ());
            }
            history.retain(&seen);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_are_deltas_and_the_ring_is_bounded() {
        let h = History::default();
        h.record("r", [10, 1, 0], 100);
        h.record("r", [15, 4, 2], 101);
        let s = &h.samples()[0].1;
        assert_eq!(
            s[1],
            Sample {
                at: 101,
                granted: 5,
                denied: 3,
                throttles: 2
            }
        );
        for i in 0..1000 {
            h.record("r", [15 + i, 4, 2], 102 + i);
        }
        assert_eq!(h.samples()[0].1.len(), SAMPLES);
    }

    #[test]
    fn a_state_change_is_a_transition_and_the_ring_is_bounded() {
        let h = History::default();
        let r: Arc<str> = Arc::from("llm");
        h.observe(&r, BreakerState::Closed, 1);
        h.observe(&r, BreakerState::Closed, 2);
        assert!(h.transitions().is_empty());
        h.observe(&r, BreakerState::Open, 3);
        assert_eq!(h.transitions()[0].to, BreakerState::Open);
        for i in 0..500 {
            let s = if i % 2 == 0 {
                BreakerState::Closed
            } else {
                BreakerState::Open
            };
            h.observe(&r, s, 4 + i);
        }
        assert_eq!(h.transitions().len(), TRANSITIONS);
    }
}
