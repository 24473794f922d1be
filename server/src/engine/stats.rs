//! [`EngineStats`]: what the engine counts about itself that no single request sees: breaker transitions
//! (logged at INFO, one event per change of state), leases reclaimed at expiry, idle keys evicted. The
//! server's metrics read a [`StatsSnapshot`]; the engine knows nothing of how they are exported.
//!
//! Labels are rule names (the configured name, the pattern for glob rules), never descriptor values, so
//! the number of series stays bounded by the config. These events are rare (a transition, a sweep), so a
//! mutex-guarded map is cheaper here than anything cleverer.

use std::{
    collections::{HashMap, VecDeque},
    sync::{
        Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    time::{SystemTime, UNIX_EPOCH},
};

use super::{BreakerState, Transition, plan::KEY_SEP};

type TransitionKey = (&'static str, BreakerState, BreakerState);

/// Transitions kept for the status page, newest last.
pub const RECENT: usize = 100;

/// A breaker transition this node's calls made, with its reason (for the status page).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecentTransition {
    /// Unix milliseconds.
    pub at_ms: u64,
    /// The rule.
    pub rule: &'static str,
    /// The breaker: its resource, and `/descriptor/value` for a partitioned one.
    pub breaker: String,
    /// The state it left.
    pub from: BreakerState,
    /// The state it entered.
    pub to: BreakerState,
    /// Why, in a few words.
    pub reason: &'static str,
}

/// Counters kept by the engine ([`Quota`](super::Quota)), from what each call's answer reports. See the
/// module docs.
#[derive(Debug, Default)]
pub struct EngineStats {
    transitions: Mutex<HashMap<TransitionKey, u64>>,
    recent: Mutex<VecDeque<RecentTransition>>,
    expired: Mutex<HashMap<&'static str, u64>>,
    evicted_keys: AtomicU64,
}

/// A copy of the counters at one instant, sorted for stable output.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StatsSnapshot {
    /// Breaker transitions by (rule, from, to).
    pub transitions: Vec<(&'static str, BreakerState, BreakerState, u64)>,
    /// Leases reclaimed at expiry (never released), by rule.
    pub expired_leases: Vec<(&'static str, u64)>,
    /// Idle keys dropped by sweeps.
    pub evicted_keys: u64,
}

impl EngineStats {
    /// Counts a breaker transition of `rule`'s breaker at state key `key`, and logs it at INFO.
    pub fn transition(&self, rule: &'static str, key: &str, t: Transition) {
        tracing::info!(
            breaker = %key.replace(KEY_SEP, "/"),
            rule = %rule,
            from = t.from.as_str(),
            to = t.to.as_str(),
            reason = t.reason.as_str(),
            "circuit breaker transition"
        );
        *self
            .transitions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry((rule, t.from, t.to))
            .or_default() += 1;
        let at_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let mut recent = self.recent.lock().unwrap_or_else(PoisonError::into_inner);
        if recent.len() == RECENT {
            recent.pop_front();
        }
        recent.push_back(RecentTransition {
            at_ms,
            rule,
            breaker: key.replace(KEY_SEP, "/"),
            from: t.from,
            to: t.to,
            reason: t.reason.as_str(),
        });
    }

    /// The last [`RECENT`] transitions this node's calls made, oldest first.
    pub fn recent(&self) -> Vec<RecentTransition> {
        let recent = self.recent.lock().unwrap_or_else(PoisonError::into_inner);
        recent.iter().cloned().collect()
    }

    /// Counts leases of `rule` reclaimed at expiry.
    pub fn expired(&self, rule: &'static str, n: u64) {
        *self
            .expired
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(rule)
            .or_default() += n;
    }

    /// Counts idle keys dropped.
    pub fn evicted(&self, n: u64) {
        self.evicted_keys.fetch_add(n, Ordering::Relaxed);
    }

    /// The counters now.
    pub fn snapshot(&self) -> StatsSnapshot {
        let mut transitions: Vec<_> = self
            .transitions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|((rule, from, to), n)| (*rule, *from, *to, *n))
            .collect();
        transitions.sort_by(|a, b| {
            (&a.0, a.1.as_str(), a.2.as_str()).cmp(&(&b.0, b.1.as_str(), b.2.as_str()))
        });
        let mut expired_leases: Vec<_> = self
            .expired
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(rule, n)| (*rule, *n))
            .collect();
        expired_leases.sort();
        StatsSnapshot {
            transitions,
            expired_leases,
            evicted_keys: self.evicted_keys.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_rule_and_states() {
        let stats = EngineStats::default();
        let rule = "partner.*";
        let open = Transition {
            from: BreakerState::Closed,
            to: BreakerState::Open,
            reason: crate::engine::Reason::FailureRate,
        };
        stats.transition(rule, "partner.stripe", open);
        stats.transition(rule, "partner.github", open);
        stats.expired(rule, 3);
        stats.evicted(5);
        let s = stats.snapshot();
        assert_eq!(
            s.transitions,
            [(rule, BreakerState::Closed, BreakerState::Open, 2)]
        );
        assert_eq!(s.expired_leases, [(rule, 3)]);
        assert_eq!(s.evicted_keys, 5);
    }
}
