//! `quotad.v1.QuotaService` as served: Acquire on a unary path of its own ([`unary`]), every other method
//! by the generated server. The generated path runs tonic's streaming codec, boxes two more futures around
//! the trait's `async fn` and moves the request and the 232-byte generated response through each; this
//! one decides synchronously when the store answers at once (no future of ours), and encodes the decision
//! straight from the engine's types ([`super::answer::AcquireAnswer`]). The same limits and the same answers
//! to bad input. BENCHMARKS.md (issue 16) has what it saves.

use std::{
    convert::Infallible,
    sync::Arc,
    task::{Context, Poll},
};

use quotad_api::v1::{self as pb, quota_service_server::QuotaServiceServer};
use tonic::{
    codegen::{Body, BoxFuture, StdError, http},
    server::NamedService,
};

use super::{QuotaGrpc, quota_service::AcquireStep, unary};
use crate::engine::{MemoryStore, Store};

const ACQUIRE: &str = "/quotad.v1.QuotaService/Acquire";

/// The QuotaService's tower service (what the router serves).
#[derive(Debug)]
pub struct QuotaServer<S: Store = MemoryStore> {
    grpc: Arc<QuotaGrpc<S>>,
    generated: QuotaServiceServer<QuotaGrpc<S>>,
    max_request_bytes: usize,
}

impl<S: Store> QuotaServer<S> {
    /// Serves `grpc`, refusing requests larger than `max_request_bytes` (RESOURCE_EXHAUSTED).
    pub fn new(grpc: QuotaGrpc<S>, max_request_bytes: usize) -> Self {
        let grpc = Arc::new(grpc);
        let generated =
            QuotaServiceServer::from_arc(grpc.clone()).max_decoding_message_size(max_request_bytes);
        Self {
            grpc,
            generated,
            max_request_bytes,
        }
    }
}

impl<S: Store> Clone for QuotaServer<S> {
    fn clone(&self) -> Self {
        Self {
            grpc: self.grpc.clone(),
            generated: self.generated.clone(),
            max_request_bytes: self.max_request_bytes,
        }
    }
}

impl<S: Store> NamedService for QuotaServer<S> {
    const NAME: &'static str = <QuotaServiceServer<QuotaGrpc<S>> as NamedService>::NAME;
}

impl<S: Store, B> tower::Service<http::Request<B>> for QuotaServer<S>
where
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        if req.uri().path() != ACQUIRE {
            return self.generated.call(req);
        }
        let grpc = self.grpc.clone();
        let max_request_bytes = self.max_request_bytes;
        Box::pin(async move {
            let answer = match unary::read::<_, pb::AcquireRequest>(req, max_request_bytes).await {
                Ok(request) => match grpc.acquire_now(request) {
                    AcquireStep::Answered(answer) => answer,
                    // Boxed: this rare future (a store's round trip, a max_wait hold) is large, and
                    // inline it would make every call's future as large.
                    AcquireStep::Wait(call, req) => Box::pin(grpc.acquire_waiting(call, req)).await,
                },
                Err(status) => Err(status),
            };
            Ok(unary::respond(answer))
        })
    }
}
