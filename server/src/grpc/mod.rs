//! The gRPC face of the engine: one conversion layer ([`convert`]), one mapping of engine errors to
//! statuses ([`status`]), the caller's trace context ([`trace_context`]), and the two services ([`quota_service`], [`admin_service`]).

pub mod admin_service;
pub mod convert;
pub mod in_flight;
pub mod page;
pub mod quota_service;
pub mod status;
pub mod trace_context;
pub mod watch;
pub mod wire_status;

pub use admin_service::AdminGrpc;
pub use quota_service::QuotaGrpc;
