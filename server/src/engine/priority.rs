//! Priority classes: a resource's requests in ranked classes (highest first), each kept out of the
//! capacity reserved for the classes above it. With `classes = ["critical", "normal", "batch"]` and
//! `reserve = { critical = 0.2, normal = 0.1 }`, `critical` may use a level's whole capacity, `normal` all
//! but 20 %, `batch` all but 30 %: at every level, of its tokens (versus its burst) and of its leases in
//! flight (versus its concurrency limit).

// Wire-facing: every value here may come from a request, so arithmetic is checked or saturating.
#![cfg_attr(not(test), deny(clippy::arithmetic_side_effects))]

use std::sync::Arc;

use super::{EngineError, LevelSpec};

/// Reserves are kept in millionths of a level's capacity: exact integers on both stores.
pub const PPM: u32 = 1_000_000;

/// A resource's priority classes, as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Priority {
    /// Class names, highest first (at most 255).
    pub classes: Vec<Arc<str>>,
    /// The class of a request that names none (its index in `classes`).
    pub default: u8,
    /// Each class's own reserve, in millionths (what the classes below it may not use).
    pub reserve: Vec<u32>,
}

impl Priority {
    /// The class a request names (`None`: the default), as its index; an unknown name is refused.
    pub fn class(&self, name: Option<&str>) -> Result<u8, EngineError> {
        let Some(name) = name else {
            return Ok(self.default);
        };
        self.classes
            .iter()
            .position(|c| **c == *name)
            // Classes are config-bounded to 255.
            .map(|i| i as u8)
            .ok_or_else(|| {
                EngineError::invalid(
                    "priority",
                    format!(
                        "'{name}' is not one of the resource's classes: {}",
                        self.classes.join(", ")
                    ),
                )
            })
    }

    /// What `class` may not use of a level: the reserves of the classes above it, in millionths.
    pub fn held_back(&self, class: u8) -> u32 {
        self.reserve
            .iter()
            .take(usize::from(class))
            .fold(0u32, |a, r| a.saturating_add(*r))
            .min(PPM)
    }

    /// The classes whose reserve `class` is kept out of, for a denial's `denied_by`.
    pub fn above(&self, class: u8) -> String {
        self.classes
            .iter()
            .zip(&self.reserve)
            .take(usize::from(class))
            .filter(|(_, r)| **r > 0)
            .map(|(c, _)| &**c)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// What one level holds back from a request's class: tokens of its capacity and leases of its
/// concurrency limit (each rounded up: a class never gets more than its share).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reserve {
    /// Tokens that must remain after the request's.
    pub tokens: u64,
    /// Leases in flight the request may not take.
    pub slots: u32,
}

impl Reserve {
    /// The reserve `spec` holds back from a class kept out of `held_back` millionths.
    #[inline]
    pub fn of(spec: &LevelSpec, held_back: u32) -> Self {
        if held_back == 0 {
            return Self::default();
        }
        Self {
            tokens: spec.rate.map_or(0, |r| share(r.burst, held_back)),
            slots: spec.max_in_flight.map_or(0, |m| {
                u32::try_from(share(u64::from(m), held_back)).unwrap_or(u32::MAX)
            }),
        }
    }

    /// True when nothing is held back.
    pub fn is_none(&self) -> bool {
        self.tokens == 0 && self.slots == 0
    }
}

/// `ceil(n × ppm / 10^6)`, exactly.
fn share(n: u64, ppm: u32) -> u64 {
    let scaled = u128::from(n).saturating_mul(u128::from(ppm));
    u64::try_from(scaled.div_ceil(u128::from(PPM))).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::engine::RateSpec;

    fn priority() -> Priority {
        Priority {
            classes: ["critical", "normal", "batch"].map(Arc::from).to_vec(),
            default: 1,
            reserve: vec![200_000, 100_000, 0],
        }
    }

    #[test]
    fn each_class_is_kept_out_of_the_reserves_above_it() {
        let p = priority();
        assert_eq!(
            (p.held_back(0), p.held_back(1), p.held_back(2)),
            (0, 200_000, 300_000)
        );
        assert_eq!(
            (p.above(0), p.above(1), p.above(2)),
            ("".into(), "critical".into(), "critical, normal".into())
        );
        assert_eq!(p.class(None).unwrap(), 1);
        assert_eq!(p.class(Some("batch")).unwrap(), 2);
        let e = p.class(Some("urgent")).unwrap_err().to_string();
        assert!(
            e.contains("priority") && e.contains("critical, normal, batch"),
            "{e}"
        );
    }

    #[test]
    fn a_reserve_rounds_up_so_a_class_never_gets_more_than_its_share() {
        let spec = LevelSpec {
            rate: Some(RateSpec::new(30, Duration::from_secs(60), 30)),
            max_in_flight: Some(20),
            shadow: false,
            bypass: false,
        };
        assert_eq!(
            Reserve::of(&spec, 300_000),
            Reserve {
                tokens: 9,
                slots: 6
            }
        );
        assert_eq!(
            Reserve::of(&spec, 210_000),
            Reserve {
                tokens: 7,
                slots: 5
            }
        );
        assert!(Reserve::of(&spec, 0).is_none());
        let huge = LevelSpec {
            rate: Some(RateSpec::new(u64::MAX, Duration::from_secs(1), u64::MAX)),
            ..spec
        };
        assert_eq!(Reserve::of(&huge, PPM).tokens, u64::MAX);
    }
}
