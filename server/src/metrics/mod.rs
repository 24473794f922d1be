//! Prometheus metrics: what quotad decides, how fast, and how close each resource is to its limits.
//!
//! - [`counters`]: per-resource counters of acquires, releases, settlements and throttle reports.
//! - [`registry`]: [`Metrics`], what the gRPC layer records into on each call.
//! - [`render`]: the Prometheus text exposition, built at scrape time from the counters, the engine's own
//!   [`EngineStats`](crate::engine::EngineStats) and its live usage (gauges cost nothing per request).
//! - [`http`]: the `/metrics` HTTP endpoint.
//!
//! Every label is bounded by the config: `resource` is a rule's configured name (the pattern for a glob
//! rule), never a descriptor value, a lease id or a client id.

pub mod counters;
pub mod http;
pub mod registry;
pub mod render;

pub use crate::latency::LatencyHistogram;
pub use counters::{ResourceCounters, TopCounts};
pub use registry::{Metrics, Rpc};
pub use render::render;
