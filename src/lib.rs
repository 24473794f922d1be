//! quotad's protobuf API, generated from `proto/quotad/v1/*.proto` (and Envoy's rate limit service, vendored
//! in `proto/vendor/`) by the root `build.rs`.
//!
//! # Layout
//! - [`v1`]: the messages, enums and the tonic client/server stubs for `QuotaService` and `QuotaAdmin`.
//! - [`envoy`]: `envoy.service.ratelimit.v3.RateLimitService` (`ShouldRateLimit`), the API Envoy, Istio and
//!   other gateways call, with the messages it uses.
//! - [`FILE_DESCRIPTOR_SET`]: the encoded descriptors, for gRPC server reflection.
//!
//! The server and the Rust client both depend on this crate, so the wire contract lives in one place.

/// Package `quotad.v1`: the service contract. See `proto/quotad/v1/quota.proto` for every field's meaning.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod v1 {
    tonic::include_proto!("quotad.v1");
}

/// Envoy's packages, as `proto/vendor/envoy/` declares them (generated code refers across them by path).
#[allow(missing_docs, clippy::all, clippy::pedantic, rustdoc::all)]
pub mod envoy {
    /// `envoy.service.*`.
    pub mod service {
        /// `envoy.service.ratelimit.*`.
        pub mod ratelimit {
            /// `envoy.service.ratelimit.v3`: `RateLimitService`, `RateLimitRequest`, `RateLimitResponse`.
            pub mod v3 {
                tonic::include_proto!("envoy.service.ratelimit.v3");
            }
        }
    }
    /// `envoy.extensions.*`.
    pub mod extensions {
        /// `envoy.extensions.common.*`.
        pub mod common {
            /// `envoy.extensions.common.ratelimit.*`.
            pub mod ratelimit {
                /// `envoy.extensions.common.ratelimit.v3`: `RateLimitDescriptor`.
                pub mod v3 {
                    tonic::include_proto!("envoy.extensions.common.ratelimit.v3");
                }
            }
        }
    }
    /// `envoy.config.*`.
    pub mod config {
        /// `envoy.config.core.*`.
        pub mod core {
            /// `envoy.config.core.v3`: `HeaderValue` and what it sits among.
            pub mod v3 {
                tonic::include_proto!("envoy.config.core.v3");
            }
        }
    }
    /// `envoy.type.*`.
    pub mod r#type {
        /// `envoy.type.v3`: `RateLimitUnit` and friends.
        pub mod v3 {
            include!(concat!(env!("OUT_DIR"), "/envoy.r#type.v3.rs"));
        }
    }
}

/// `xds.core.v3`: `ContextParams`, which `envoy.config.core.v3` refers to.
#[allow(missing_docs, clippy::all, clippy::pedantic, rustdoc::all)]
pub mod xds {
    /// `xds.core.*`.
    pub mod core {
        /// `xds.core.v3`.
        pub mod v3 {
            tonic::include_proto!("xds.core.v3");
        }
    }
}

/// The encoded `FileDescriptorSet` of `proto/` and `proto/vendor/`, for tonic-reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("quotad_descriptor");
