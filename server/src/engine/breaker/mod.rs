//! The circuit breaker shared by every client of a resource.
//!
//! - [`spec`]: its configuration.
//! - [`window`]: the sliding window of call outcomes.
//! - [`state`]: the CLOSED / OPEN / HALF_OPEN state machine.

pub mod spec;
pub mod state;
pub mod window;

pub use spec::BreakerSpec;
pub use state::{Admission, Breaker, BreakerSnapshot, BreakerState, Reason, Transition};
pub use window::SlidingWindow;
