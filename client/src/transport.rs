//! The channel the client speaks over: a tonic [`Channel`](tonic::transport::Channel), or any tower service
//! of the same shape (a test's fault injector, a user's auth layer), boxed so the client type stays simple.

use std::fmt;

use tonic::body::Body;
use tower::{ServiceExt, util::BoxCloneSyncService};

/// A boxed error.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A transport failure. A concrete type (not a bare trait object) keeps the client's futures `Send` in
/// spawned tasks.
#[derive(Debug)]
pub struct TransportError(BoxError);

impl fmt::Display for TransportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for TransportError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

/// What the generated stub is instantiated with.
pub type Transport = BoxCloneSyncService<http::Request<Body>, http::Response<Body>, TransportError>;

/// What a client can be built on: a tower service that speaks gRPC over HTTP/2 (a tonic `Channel`, a
/// layered channel, a test's fault injector). Implemented for every service of that shape.
pub trait GrpcService:
    tower::Service<
        http::Request<Body>,
        Response = http::Response<Body>,
        Error: Into<BoxError>,
        Future: Send + 'static,
    > + Clone
    + Send
    + Sync
    + 'static
{
}

impl<S> GrpcService for S
where
    S: tower::Service<http::Request<Body>, Response = http::Response<Body>>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
}

/// Boxes any suitable service into a [`Transport`].
pub fn boxed<S: GrpcService>(service: S) -> Transport {
    BoxCloneSyncService::new(service.map_err(|e| TransportError(e.into())))
}
