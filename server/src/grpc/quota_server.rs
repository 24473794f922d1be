//! `quotad.v1.QuotaService` as served: Acquire and Release, the calls every protected downstream call
//! makes, and Envoy's ShouldRateLimit, the call every request through a gateway makes, on unary paths of
//! their own ([`unary`]); every other method by the generated server. The
//! generated path runs tonic's streaming codec, boxes two more futures around the trait's `async fn` and
//! moves the request and the generated response through each. Acquire here decides synchronously when the
//! store answers at once (no future of ours) and encodes the decision straight from the engine's types
//! ([`super::answer::AcquireAnswer`]); Release keeps its small future. The same limits and the same answers
//! to bad input; the client's `grpc-timeout` bounds a call that waits ([`super::deadline`]).
//! [`super::front`] hands both to [`QuotaServer::unary`] ahead of the path router. BENCHMARKS.md has what
//! each step saved.

use std::{
    convert::Infallible,
    future::Future,
    sync::Arc,
    task::{Context, Poll},
};

use quotad_api::v1::{self as pb, quota_service_server::QuotaServiceServer};
use tonic::{
    codegen::{Body, BoxFuture, StdError, http},
    server::NamedService,
};

use super::{QuotaGrpc, RlsGrpc, deadline, quota_service::AcquireStep, unary};
use crate::engine::Store;

const ACQUIRE: &str = "/quotad.v1.QuotaService/Acquire";
const RELEASE: &str = "/quotad.v1.QuotaService/Release";
const SHOULD_RATE_LIMIT: &str = "/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit";

/// The QuotaService's tower service (what the router serves).
#[derive(Debug)]
pub struct QuotaServer<S: Store> {
    grpc: Arc<QuotaGrpc<S>>,
    generated: QuotaServiceServer<QuotaGrpc<S>>,
    rls: Option<Arc<RlsGrpc<S>>>,
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
            rls: None,
            max_request_bytes,
        }
    }

    /// Also serves Envoy's ShouldRateLimit with `rls`.
    pub fn with_rls(mut self, rls: RlsGrpc<S>) -> Self {
        self.rls = Some(Arc::new(rls));
        self
    }
}

impl<S: Store> Clone for QuotaServer<S> {
    fn clone(&self) -> Self {
        Self {
            grpc: self.grpc.clone(),
            generated: self.generated.clone(),
            rls: self.rls.clone(),
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
        match Unary::of(req.uri().path()) {
            Some(which) => {
                let answer = self.unary(which, req);
                Box::pin(async move { Ok(answer.await.map(tonic::body::Body::new)) })
            }
            None => self.generated.call(req),
        }
    }
}

/// The methods on unary paths of their own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unary {
    /// `/quotad.v1.QuotaService/Acquire`
    Acquire,
    /// `/quotad.v1.QuotaService/Release`
    Release,
    /// `/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit`
    ShouldRateLimit,
}

impl Unary {
    /// The method a request's `path` names, if it is one of these.
    pub fn of(path: &str) -> Option<Self> {
        match path {
            ACQUIRE => Some(Self::Acquire),
            RELEASE => Some(Self::Release),
            SHOULD_RATE_LIMIT => Some(Self::ShouldRateLimit),
            _ => None,
        }
    }
}

impl<S: Store> QuotaServer<S> {
    /// The answer to `req`, an Acquire, a Release or a ShouldRateLimit (`which`), with its body unboxed. Callers check
    /// authentication first (the tower service is wrapped in [`crate::auth::Authed`]).
    pub fn unary<B>(
        &self,
        which: Unary,
        req: http::Request<B>,
    ) -> impl Future<Output = http::Response<unary::Reply>> + Send + 'static
    where
        B: Body + Send + 'static,
        B::Error: Into<StdError> + Send + 'static,
    {
        let (grpc, limit) = (self.grpc.clone(), self.max_request_bytes);
        let rls = self.rls.clone();
        async move {
            match which {
                Unary::Acquire => acquire(&grpc, req, limit).await,
                Unary::Release => release(&grpc, req, limit).await,
                Unary::ShouldRateLimit => should_rate_limit(rls.as_deref(), req, limit).await,
            }
        }
    }
}

/// An Acquire on its own path.
async fn acquire<S: Store, B>(
    grpc: &QuotaGrpc<S>,
    req: http::Request<B>,
    limit: usize,
) -> http::Response<unary::Reply>
where
    B: Body,
    B::Error: Into<StdError>,
{
    let answer = match unary::read::<_, pb::AcquireRequest>(req, limit).await {
        Ok(request) => {
            let timeout = deadline::grpc_timeout(request.metadata().as_ref());
            match grpc.acquire_now(request) {
                AcquireStep::Answered(answer) => answer,
                // Boxed: this rare future (a store's round trip, a max_wait hold) is large, and inline
                // it would make every call's future as large.
                AcquireStep::Wait(call, req) => {
                    let waiting = Box::pin(grpc.acquire_waiting(call, req));
                    deadline::within(timeout, waiting, || Err(deadline::expired())).await
                }
            }
        }
        Err(status) => Err(status),
    };
    unary::respond(answer)
}

/// A Release on its own path.
async fn release<S: Store, B>(
    grpc: &QuotaGrpc<S>,
    req: http::Request<B>,
    limit: usize,
) -> http::Response<unary::Reply>
where
    B: Body,
    B::Error: Into<StdError>,
{
    read_and_answer::<pb::ReleaseRequest, _, _, _>(req, limit, |request| grpc.release_call(request))
        .await
}

/// Envoy's ShouldRateLimit on its own path.
async fn should_rate_limit<S: Store, B>(
    rls: Option<&RlsGrpc<S>>,
    req: http::Request<B>,
    limit: usize,
) -> http::Response<unary::Reply>
where
    B: Body,
    B::Error: Into<StdError>,
{
    use quotad_api::envoy::service::ratelimit::v3::RateLimitRequest;
    let Some(rls) = rls else {
        return unary::respond::<RateLimitRequest>(Err(tonic::Status::unimplemented(
            "this server does not serve envoy.service.ratelimit.v3.RateLimitService",
        )));
    };
    read_and_answer::<RateLimitRequest, _, _, _>(req, limit, |request| async move {
        rls.answer(request.into_inner())
            .await
            .map(tonic::Response::new)
    })
    .await
}

/// Reads `req`'s message `M`, answers it with `call` within the client's deadline, and writes the answer.
async fn read_and_answer<M, R, F, B>(
    req: http::Request<B>,
    limit: usize,
    call: impl FnOnce(tonic::Request<M>) -> F,
) -> http::Response<unary::Reply>
where
    M: prost::Message + Default,
    R: prost::Message,
    F: Future<Output = Result<tonic::Response<R>, tonic::Status>>,
    B: Body,
    B::Error: Into<StdError>,
{
    let answer = match unary::read::<_, M>(req, limit).await {
        Ok(request) => {
            let timeout = deadline::grpc_timeout(request.metadata().as_ref());
            deadline::within(timeout, call(request), || Err(deadline::expired())).await
        }
        Err(status) => Err(status),
    };
    unary::respond(answer)
}
