//! Rust client for quotad.
//!
//! For now this crate exposes the generated tonic stubs; the ergonomic client (permits that release
//! themselves, retry-with-jitter that never double-charges, fail-open/closed policies) is built on them.
//!
//! # Layout
//! - [`proto`]: the `quotad.v1` messages and enums.
//! - [`QuotaServiceClient`], [`QuotaAdminClient`]: the raw generated stubs.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use quotad_client::{QuotaServiceClient, proto};
//! let mut quota = QuotaServiceClient::connect("http://127.0.0.1:50051").await?;
//! let reply = quota
//!     .acquire(proto::AcquireRequest { resource: "example.api".into(), ..Default::default() })
//!     .await?
//!     .into_inner();
//! println!("granted: {} lease: {}", reply.granted, reply.lease_id);
//! # Ok(()) }
//! ```

/// The `quotad.v1` protobuf messages and enums.
pub use quotad_api::v1 as proto;
/// The generated QuotaAdmin stub.
pub use quotad_api::v1::quota_admin_client::QuotaAdminClient;
/// The generated QuotaService stub.
pub use quotad_api::v1::quota_service_client::QuotaServiceClient;
