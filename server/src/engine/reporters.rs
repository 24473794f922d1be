//! One identity's flood of throttle reports acts as one report. A report can pause a resource fleet-wide,
//! lower its adaptive rate and count as a failed call on its breaker, so a single client that reports in a
//! loop (a bug, or an attacker with a worker token) could hold the whole fleet down. quotad remembers, per
//! resource, when each authenticated identity last reported: a report from an identity that reported the
//! same resource less than the quiet window ago (the resource's `max_pause`, at least its adaptive `cooldown`
//! and at least one second) continues that identity's flood and has no effect beyond the first report's.
//! Other identities' reports are unaffected, and without auth (no identities) every report counts.

// Wire-facing: every value here may come from a request, so arithmetic is checked or saturating.
#![cfg_attr(not(test), deny(clippy::arithmetic_side_effects))]

use smallvec::SmallVec;

use super::Rule;
use crate::clock::{Nanos, nanos};

/// The identities that reported a resource recently, with when each last did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reporters {
    recent: SmallVec<[(&'static str, Nanos); 2]>,
}

/// How long an identity must stay quiet before its next report counts again, for `rule`.
pub fn quiet_window(rule: &Rule) -> Nanos {
    let cooldown = rule.adaptive.as_ref().map_or(0, |a| nanos(a.cooldown));
    nanos(rule.max_pause).max(cooldown).max(1_000_000_000)
}

impl Reporters {
    /// Notes a report by `who` at `now`; true when it starts a flood (so it takes effect), false when it
    /// continues one. Reports without an identity always take effect.
    pub fn admit(&mut self, who: Option<&'static str>, now: Nanos, quiet: Nanos) -> bool {
        let Some(who) = who else { return true };
        self.recent
            .retain(|(_, at)| now.saturating_sub(*at) < quiet);
        match self.recent.iter_mut().find(|(id, _)| *id == who) {
            Some((_, at)) => {
                *at = now;
                false
            }
            None => {
                self.recent.push((who, now));
                true
            }
        }
    }

    /// True when no flood is remembered at `now` (the state may be dropped).
    pub fn is_idle(&self, now: Nanos, quiet: Nanos) -> bool {
        self.recent
            .iter()
            .all(|(_, at)| now.saturating_sub(*at) >= quiet)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Nanos = 1_000_000_000;

    #[test]
    fn a_flood_counts_once_until_its_identity_goes_quiet() {
        let mut r = Reporters::default();
        assert!(r.admit(Some("a"), 0, 10 * S));
        // Every second for a minute: one flood.
        for t in 1..60 {
            assert!(!r.admit(Some("a"), t * S, 10 * S));
        }
        // Another identity is its own.
        assert!(r.admit(Some("b"), 60 * S, 10 * S));
        // Quiet for the window: the next report counts.
        assert!(r.admit(Some("a"), 69 * S, 10 * S));
        assert!(!r.is_idle(70 * S, 10 * S));
        assert!(r.is_idle(79 * S, 10 * S));
        // Anonymous reports always count.
        assert!(r.admit(None, 80 * S, 10 * S));
        assert!(r.admit(None, 80 * S, 10 * S));
    }
}
