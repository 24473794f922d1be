//! The Rust client for quotad: permits that release themselves, and retry-with-jitter that never
//! double-charges.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use quotad_client::{AcquireOptions, Client, Outcome};
//! let client = Client::builder("http://127.0.0.1:50051").client_id("worker-1").connect().await?;
//! let permit = client.acquire("bedrock.invoke", AcquireOptions::new().descriptor("tenant", "acme")).await?;
//! /* call the downstream */
//! permit.release(Outcome::Success).await?;
//! # Ok(()) }
//! ```
//!
//! Or let [`Client::run`] do all of it: acquire, call, release with the outcome, report throttles to the
//! fleet, and retry with jitter.
//!
//! # Layout
//! - [`builder`]: [`ClientBuilder`] (endpoint, timeouts, client id, default TTL, retry policy, unreachable policy).
//! - [`client`]: [`Client`]: `acquire`, `report_throttle`, `circuit_state`.
//! - [`permit`]: [`Permit`]: release, settle, renew, auto-renew; dropping releases in the background.
//! - [`run`]: [`Client::run`] with a [`Classification`] of the closure's result and a progress hook.
//! - [`retry`]: [`RetryPolicy`], [`Jitter`] (full, equal, decorrelated), [`Backoff`], [`RetryBudget`].
//! - [`fallback`]: [`Unreachable`]: fail closed, fail open, or a local limiter.
//! - [`progress`], [`types`], [`options`], [`error`]: the domain types.
//! - `trace_context` (private): the W3C `traceparent` of the caller's span on every call (feature `otel`).
//! - [`transport`]: the (boxable) channel; the raw generated stubs stay reachable via [`proto`] and
//!   [`Client::raw`].

// A function fits on a screen (clippy.toml: 80 lines); tests may run longer.
#![warn(clippy::too_many_lines)]
#![cfg_attr(test, allow(clippy::too_many_lines))]
// Nothing a request carries may reach a panic: no unwrap, expect, panic! or unreachable! outside tests
// (the one sound exception says why where it stands).
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::unreachable
    )
)]

pub mod builder;
pub mod client;
pub mod error;
pub mod fallback;
pub mod options;
pub mod permit;
pub mod progress;
pub mod retry;
pub mod run;
mod trace_context;
pub mod transport;
pub mod types;
pub mod watch;

pub use builder::ClientBuilder;
pub use client::Client;
pub use error::Error;
pub use fallback::{LocalLimits, Unreachable};
pub use options::AcquireOptions;
pub use permit::Permit;
pub use progress::{Progress, ProgressEvent, RetryReason};
/// The `quotad.v1` protobuf messages and enums.
pub use quotad_api::v1 as proto;
/// The generated QuotaAdmin stub.
pub use quotad_api::v1::quota_admin_client::QuotaAdminClient;
/// The generated QuotaService stub.
pub use quotad_api::v1::quota_service_client::QuotaServiceClient;
pub use retry::{Backoff, Jitter, RetryBudget, RetryPolicy};
pub use run::{Attempt, Classification, RunError, RunOptions};
pub use types::{CircuitState, CircuitStatus, Decision, Outcome, ThrottleKind, ThrottleReport};
pub use watch::Watch;
