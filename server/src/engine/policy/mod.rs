//! The policy, written once. Every decision quotad makes lives here, over state a store holds:
//!
//! - [`acquire`]: the order of an acquire's checks (pause, breaker, every level, the adaptive raise) and a
//!   half-open probe taken and handed back ([`decide`] over a store's [`AcquireState`]);
//! - [`levels`]: judging a plan's levels all or none, and the figures every answer carries;
//! - [`limiter`]: each level kind's algorithm behind one trait ([`Limiter`]);
//! - [`release`]: what a release settles (refund, the excess charge) and what its outcome counts;
//! - [`report`]: a throttle report's path: the lease it names, the flood of its reporter, the adaptive
//!   rate, the pause, the breaker;
//! - [`replay`]: what a retried `request_id` is answered;
//! - [`explain`]: [`decide`] run over a read-only view of the state;
//! - [`hits`]: a gateway's request counted against several counters at once, all or none, no lease;
//! - [`share`]: a node's slice of its levels' permits (`local_share`), taken and given back.
//!
//! The in-memory store runs these functions on its own state. The Redis store runs their Lua twins
//! (`engine/redis/lua/policy.lua`, each function named after its Rust twin) inside one script call for
//! atomicity; `tests/twins.rs`, the conformance suite and the differential trace hold both to the same
//! answers.

// Wire-facing: every value here may come from a request, so arithmetic is checked or saturating.
#![cfg_attr(not(test), deny(clippy::arithmetic_side_effects))]

pub mod acquire;
pub mod explain;
pub mod hits;
pub mod levels;
pub mod limiter;
pub mod release;
pub mod replay;
pub mod report;
pub mod share;

pub use acquire::{AcquireState, NewLease, decide};
pub use explain::{Explanation, LevelExplained, LevelState, LevelsRead, explain};
pub use hits::{Hit, HitMode, HitPlan, HitStatus, Hits, judge_hits};
pub use levels::{Judged, Tightest, judge};
pub use limiter::{Bucket, Limit, Limiter};
pub use release::{Settlement, charge_excess, count_outcome, settlement};
pub use replay::{remembered, replay, request_id_conflict};
pub use report::{ReportState, ReportedLease, report};
