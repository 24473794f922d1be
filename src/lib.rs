//! quotad's protobuf API, generated from `proto/quotad/v1/*.proto` by the root `build.rs`.
//!
//! # Layout
//! - [`v1`]: the messages, enums and the tonic client/server stubs for `QuotaService` and `QuotaAdmin`.
//! - [`FILE_DESCRIPTOR_SET`]: the encoded descriptors, for gRPC server reflection.
//!
//! The server and the Rust client both depend on this crate, so the wire contract lives in one place.

/// Package `quotad.v1`: the service contract. See `proto/quotad/v1/quota.proto` for every field's meaning.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod v1 {
    tonic::include_proto!("quotad.v1");
}

/// The encoded `FileDescriptorSet` of `proto/`, for tonic-reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("quotad_descriptor");
