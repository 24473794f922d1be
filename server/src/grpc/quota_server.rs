//! `quotad.v1.QuotaService` as served: Acquire and Release, the calls every protected downstream call
//! makes, on unary paths of their own ([`unary`]); every other method by the generated server. The
//! generated path runs tonic's streaming codec, boxes two more futures around the trait's `async fn` and
//! moves the request and the generated response through each. Acquire here decides synchronously when the
//! store answers at once (no future of ours) and encodes the decision straight from the engine's types
//! ([`super::answer::AcquireAnswer`]); Release keeps its small future. The same limits and the same answers
//! to bad input. [`AcquireFirst`] hands both to this service ahead of the path router. BENCHMARKS.md
//! (issue 16) has what each step saved.

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
const RELEASE: &str = "/quotad.v1.QuotaService/Release";

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
        let (grpc, limit) = (self.grpc.clone(), self.max_request_bytes);
        match req.uri().path() {
            ACQUIRE => Box::pin(async move { Ok(acquire(&grpc, req, limit).await) }),
            RELEASE => Box::pin(async move { Ok(release(&grpc, req, limit).await) }),
            _ => self.generated.call(req),
        }
    }
}

/// An Acquire on its own path.
async fn acquire<S: Store, B>(
    grpc: &QuotaGrpc<S>,
    req: http::Request<B>,
    limit: usize,
) -> http::Response<tonic::body::Body>
where
    B: Body,
    B::Error: Into<StdError>,
{
    let answer = match unary::read::<_, pb::AcquireRequest>(req, limit).await {
        Ok(request) => match grpc.acquire_now(request) {
            AcquireStep::Answered(answer) => answer,
            // Boxed: this rare future (a store's round trip, a max_wait hold) is large, and inline it
            // would make every call's future as large.
            AcquireStep::Wait(call, req) => Box::pin(grpc.acquire_waiting(call, req)).await,
        },
        Err(status) => Err(status),
    };
    unary::respond(answer)
}

/// A Release on its own path.
async fn release<S: Store, B>(
    grpc: &QuotaGrpc<S>,
    req: http::Request<B>,
    limit: usize,
) -> http::Response<tonic::body::Body>
where
    B: Body,
    B::Error: Into<StdError>,
{
    let answer = match unary::read::<_, pb::ReleaseRequest>(req, limit).await {
        Ok(request) => grpc.release_call(request).await,
        Err(status) => Err(status),
    };
    unary::respond(answer)
}

/// A layer in front of the router that hands Acquire and Release straight to the (authenticated)
/// QuotaService: a string comparison instead of the path router's lookup and the three futures it wraps
/// around every call (3,188 instructions per Acquire, 50,640 -> 47,452 by callgrind; BENCHMARKS.md,
/// issue 16). Every other path goes to the router; the service is the one the router serves, so the
/// answers are the same.
#[derive(Debug, Clone)]
pub struct AcquireFirst<Q> {
    quota: Q,
}

impl<Q> AcquireFirst<Q> {
    /// Sends Acquire and Release to `quota`: the same service (authentication included) the router
    /// serves them with.
    pub fn new(quota: Q) -> Self {
        Self { quota }
    }
}

impl<Q: Clone, S> tower::Layer<S> for AcquireFirst<Q> {
    type Service = AcquireFirstService<Q, S>;

    fn layer(&self, inner: S) -> Self::Service {
        AcquireFirstService {
            quota: self.quota.clone(),
            inner,
        }
    }
}

/// The service [`AcquireFirst`] wraps around the router.
#[derive(Debug, Clone)]
pub struct AcquireFirstService<Q, S> {
    quota: Q,
    inner: S,
}

impl<Q, S, B> tower::Service<http::Request<B>> for AcquireFirstService<Q, S>
where
    Q: tower::Service<http::Request<B>, Response = S::Response, Error = S::Error>,
    S: tower::Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = futures_util::future::Either<Q::Future, S::Future>;

    /// The router's readiness: the QuotaService is always ready (it answers `Ready` without looking).
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        if matches!(req.uri().path(), ACQUIRE | RELEASE) {
            futures_util::future::Either::Left(self.quota.call(req))
        } else {
            futures_util::future::Either::Right(self.inner.call(req))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{convert::Infallible, future::Ready};

    use tower::{Layer as _, Service as _};

    use super::*;

    /// A service that answers with its own name.
    #[derive(Clone)]
    struct Named(&'static str);

    impl tower::Service<http::Request<()>> for Named {
        type Response = &'static str;
        type Error = Infallible;
        type Future = Ready<Result<&'static str, Infallible>>;

        fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, _req: http::Request<()>) -> Self::Future {
            std::future::ready(Ok(self.0))
        }
    }

    #[tokio::test]
    async fn only_acquire_and_release_skip_the_router() {
        let mut svc = AcquireFirst::new(Named("quota")).layer(Named("router"));
        for (path, to) in [
            ("/quotad.v1.QuotaService/Acquire", "quota"),
            ("/quotad.v1.QuotaService/Release", "quota"),
            ("/quotad.v1.QuotaService/Renew", "router"),
            ("/quotad.v1.QuotaService/AcquireX", "router"),
            ("/quotad.v1.QuotaAdmin/Acquire", "router"),
            ("/grpc.health.v1.Health/Check", "router"),
            ("/", "router"),
        ] {
            let req = http::Request::builder().uri(path).body(()).unwrap();
            assert_eq!(svc.call(req).await.unwrap(), to, "{path}");
        }
    }
}
