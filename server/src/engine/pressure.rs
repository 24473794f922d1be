//! What the fleet's throttle reports have done to a resource: its adaptive rate and its pause.

use crate::{
    clock::Nanos,
    engine::{AdaptiveRate, Pressure, Rule, reporters::Reporters},
};

/// Per concrete resource.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PressureState {
    /// The AIMD multiplier.
    pub adaptive: AdaptiveRate,
    /// Grants are paused until then (0: never paused).
    pub paused_until: Nanos,
    /// Identities whose reports are in a flood (see [`Reporters`]).
    pub reporters: Reporters,
    /// The quiet window the last report was judged with (for [`is_idle`](Self::is_idle)).
    pub reporters_quiet: Nanos,
}

impl PressureState {
    /// The multiplier to apply to the rule's rates now.
    pub fn factor(&self, rule: &Rule) -> f64 {
        if rule.adaptive.is_some() {
            self.adaptive.factor()
        } else {
            1.0
        }
    }

    /// True when identical to a fresh state (so it may be dropped). A remembered flood keeps the state until
    /// its quiet window has passed, so eviction cannot hand a flooding identity a fresh start.
    pub fn is_idle(&self, now: Nanos) -> bool {
        self.adaptive.is_pristine()
            && self.paused_until <= now
            && self.reporters.is_idle(now, self.reporters_quiet)
    }

    /// The client-facing view.
    pub fn view(&self, rule: &Rule, now: Nanos) -> Pressure {
        let configured = rule.headline_rate().map_or(0.0, |r| r.per_second());
        Pressure {
            effective_rate: configured * self.factor(rule),
            configured_rate: configured,
            paused_until: (self.paused_until > now).then_some(self.paused_until),
        }
    }
}
