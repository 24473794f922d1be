//! The adaptive rate (AIMD): throttle reports from any client lower a resource's effective rate
//! multiplicatively, once per cooldown; granted traffic raises it back additively, up to the configured rate.

use std::time::Duration;

use crate::clock::{Nanos, nanos};

/// AIMD parameters (validated by the config layer).
#[derive(Debug, Clone, PartialEq)]
pub struct AdaptiveSpec {
    /// On a throttle, the rate is multiplied by this (0 < f < 1).
    pub decrease_factor: f64,
    /// The rate never goes below this fraction of the configured rate (0 < floor ≤ 1).
    pub floor: f64,
    /// Throttle reports within this time of a decrease cause no further decrease, so a fleet reporting
    /// the same overload in the same second lowers the rate once.
    pub cooldown: Duration,
    /// Each `increase_interval` in which calls are granted, the rate rises by this fraction of the configured
    /// rate.
    pub increase_step: f64,
    /// How long calls must keep being granted before the rate rises by one `increase_step`.
    pub increase_interval: Duration,
}

impl Default for AdaptiveSpec {
    fn default() -> Self {
        Self {
            decrease_factor: 0.5,
            floor: 0.1,
            cooldown: Duration::from_secs(1),
            increase_step: 0.05,
            increase_interval: Duration::from_secs(1),
        }
    }
}

/// The current multiplier on a resource's configured rate, in `[floor, 1]`.
#[derive(Debug, Clone, PartialEq)]
pub struct AdaptiveRate {
    factor: f64,
    last_decrease: Option<Nanos>,
    last_step: Nanos,
}

impl Default for AdaptiveRate {
    fn default() -> Self {
        Self {
            factor: 1.0,
            last_decrease: None,
            last_step: 0,
        }
    }
}

impl AdaptiveRate {
    /// The multiplier now.
    pub fn factor(&self) -> f64 {
        self.factor
    }

    /// True at the configured rate with no decrease pending a cooldown: identical to a fresh one.
    pub fn is_pristine(&self) -> bool {
        self.factor >= 1.0
    }

    /// A throttle was reported. Returns true when the rate went down.
    pub fn on_throttle(&mut self, spec: &AdaptiveSpec, now: Nanos) -> bool {
        if let Some(at) = self.last_decrease
            && now < at.saturating_add(nanos(spec.cooldown))
        {
            return false;
        }
        let lowered = (self.factor * spec.decrease_factor).max(spec.floor);
        self.last_decrease = Some(now);
        // The next additive step is a full interval after the decrease, not sooner.
        self.last_step = now;
        if lowered < self.factor {
            self.factor = lowered;
            true
        } else {
            false
        }
    }

    /// A call was granted. Steps the rate up at most once per interval. Returns true when it changed.
    pub fn on_grant(&mut self, spec: &AdaptiveSpec, now: Nanos) -> bool {
        if self.factor >= 1.0 || now < self.last_step.saturating_add(nanos(spec.increase_interval))
        {
            return false;
        }
        self.factor = (self.factor + spec.increase_step).min(1.0);
        self.last_step = now;
        true
    }

    /// Back to the configured rate (an operator's breaker reset also resets this).
    pub fn reset(&mut self) {
        *self = Self::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: u64 = 1_000_000_000;

    #[test]
    fn a_burst_of_reports_is_one_decrease() {
        let spec = AdaptiveSpec::default();
        let mut a = AdaptiveRate::default();
        assert!(a.on_throttle(&spec, 0));
        for i in 0..100 {
            assert!(!a.on_throttle(&spec, i * 1_000_000));
        }
        assert_eq!(a.factor(), 0.5);
        assert!(a.on_throttle(&spec, SEC));
        assert_eq!(a.factor(), 0.25);
    }

    #[test]
    fn never_below_the_floor() {
        let spec = AdaptiveSpec::default();
        let mut a = AdaptiveRate::default();
        for i in 0..10 {
            a.on_throttle(&spec, i * SEC);
        }
        assert_eq!(a.factor(), 0.1);
    }

    #[test]
    fn recovers_additively_only_while_traffic_flows() {
        let spec = AdaptiveSpec::default();
        let mut a = AdaptiveRate::default();
        a.on_throttle(&spec, 0);
        assert!(!a.on_grant(&spec, SEC / 2));
        assert!(a.on_grant(&spec, SEC));
        assert!((a.factor() - 0.55).abs() < 1e-9);
        // A long idle gap counts as one interval of traffic, not many.
        assert!(a.on_grant(&spec, 100 * SEC));
        assert!((a.factor() - 0.60).abs() < 1e-9);
        for i in 0..20 {
            a.on_grant(&spec, (101 + i) * SEC);
        }
        assert_eq!(a.factor(), 1.0);
    }
}
