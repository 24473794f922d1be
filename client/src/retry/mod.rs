//! Retrying, done right.
//!
//! - [`policy`]: [`RetryPolicy`] and the [`Jitter`] strategies.
//! - [`backoff`]: the delay before each retry (never below the server's `retry_after`).
//! - [`budget`]: the [`RetryBudget`] that stops a fleet multiplying its load during an outage.

pub mod backoff;
pub mod budget;
pub mod policy;

pub use backoff::Backoff;
pub use budget::RetryBudget;
pub use policy::{Jitter, RetryPolicy};
