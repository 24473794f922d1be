//! The gRPC face of the engine: one conversion layer ([`convert`]), one mapping of engine errors to
//! statuses ([`status`]), the caller's trace context ([`trace_context`]), the two services
//! ([`quota_service`], [`admin_service`]), the QuotaService as served ([`quota_server`]: Acquire on a
//! path of its own ([`unary`]), its answer encoded by [`answer`]), and every call's way in ([`front`]:
//! the unary paths first, the rest through tonic's router, the client's deadline by [`deadline`]).

pub mod admin_service;
pub mod answer;
pub mod convert;
pub mod deadline;
pub mod front;
pub mod in_flight;
pub mod page;
pub mod quota_server;
pub mod quota_service;
pub mod rls_service;
pub mod status;
pub mod trace_context;
pub mod unary;
pub mod watch;
pub mod wire_status;

pub use admin_service::AdminGrpc;
pub use quota_server::QuotaServer;
pub use quota_service::QuotaGrpc;
pub use rls_service::RlsGrpc;
