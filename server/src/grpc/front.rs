//! Every call's way in, one service per connection answering through `&self`: Acquire and Release
//! straight to the QuotaService's unary paths (one string compare; authenticated first), every other call
//! to tonic's path router (the connection's info in its extensions for authentication, the client's
//! `grpc-timeout`, and quotad's codes for the codec's errors, [`super::wire_status`]). Every call is
//! counted in flight, so a shutdown knows when nothing is left. One box per call, the call's own future.

use std::{convert::Infallible, future::Future, pin::Pin, sync::Arc};

use http_body_util::Either;
use tonic::{body::Body, service::Routes};
use tower::Service as _;

use super::{
    QuotaServer, deadline,
    in_flight::{CountedFuture, InFlight},
    quota_server::Unary,
    unary,
    wire_status::WireStatus,
};
use crate::{auth::AuthLayer, engine::Store};

/// An answer: a unary one's own body, or the router's boxed one.
pub type Answer = http::Response<Either<unary::Reply, Body>>;

/// A call's future.
pub type Call = CountedFuture<Pin<Box<dyn Future<Output = Result<Answer, Infallible>> + Send>>>;

/// What every connection's service shares.
#[derive(Debug)]
pub struct Calls<S: Store> {
    quota: QuotaServer<S>,
    auth: AuthLayer,
    router: WireStatus<Routes>,
    in_flight: InFlight,
}

impl<S: Store> Calls<S> {
    /// Acquire and Release to `quota` once `auth` admits them; the rest to `router` (which serves
    /// the QuotaService's other methods behind the same authentication); all counted in `in_flight`.
    pub fn new(
        quota: QuotaServer<S>,
        auth: AuthLayer,
        router: WireStatus<Routes>,
        in_flight: InFlight,
    ) -> Arc<Self> {
        Arc::new(Self {
            quota,
            auth,
            router,
            in_flight,
        })
    }
}

/// One connection's service: the shared [`Calls`] and the connection's info (`C`: tonic's
/// `TcpConnectInfo`, or `TlsConnectInfo` over TLS), which authentication reads from a request's
/// extensions.
#[derive(Debug)]
pub struct Front<S: Store, C> {
    calls: Arc<Calls<S>>,
    info: C,
}

impl<S: Store, C> Front<S, C> {
    /// The service for a connection whose info is `info`.
    pub fn new(calls: Arc<Calls<S>>, info: C) -> Self {
        Self { calls, info }
    }
}

impl<S, C, B> hyper::service::Service<http::Request<B>> for Front<S, C>
where
    S: Store,
    C: Clone + Send + Sync + 'static,
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<tonic::codegen::StdError> + Send + 'static,
{
    type Response = Answer;
    type Error = Infallible;
    type Future = Call;

    fn call(&self, req: http::Request<B>) -> Call {
        let call = match Unary::of(req.uri().path()) {
            Some(which) => self.unary(which, req),
            None => self.routed(req),
        };
        self.calls.in_flight.count(call)
    }
}

type Boxed = Pin<Box<dyn Future<Output = Result<Answer, Infallible>> + Send>>;

impl<S: Store, C: Clone + Send + Sync + 'static> Front<S, C> {
    fn unary<B>(&self, which: Unary, mut req: http::Request<B>) -> Boxed
    where
        B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
        B::Error: Into<tonic::codegen::StdError> + Send + 'static,
    {
        let auth = &self.calls.auth;
        if !auth.open() {
            req.extensions_mut().insert(self.info.clone());
            if let Err(status) = auth.check(&mut req) {
                return Box::pin(std::future::ready(Ok(status.into_http().map(Either::Left))));
            }
        }
        let answer = self.calls.quota.unary(which, req);
        Box::pin(async move { Ok(answer.await.map(Either::Left)) })
    }

    fn routed<B>(&self, mut req: http::Request<B>) -> Boxed
    where
        B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
        B::Error: Into<tonic::codegen::StdError> + Send + 'static,
    {
        req.extensions_mut().insert(self.info.clone());
        let timeout = deadline::grpc_timeout(req.headers());
        let answer = self.calls.router.clone().call(req);
        Box::pin(async move {
            let expired = || Ok(deadline::expired().into_http());
            let answer: Result<http::Response<Body>, Infallible> =
                deadline::within(timeout, answer, expired).await;
            answer.map(|r| r.map(Either::Right))
        })
    }
}

#[cfg(test)]
mod tests {
    use std::{
        convert::Infallible,
        sync::{Arc, Mutex},
        task::{Context, Poll},
        time::Duration,
    };

    use bytes::Bytes;
    use http_body_util::{BodyExt as _, Full};
    use hyper::service::Service as _;
    use tonic::{server::NamedService, transport::server::TcpConnectInfo};

    use super::*;
    use crate::{
        auth::{Authenticator, Service},
        clock::FakeClock,
        config,
        engine::{MemoryStore, Quota},
        grpc::{QuotaGrpc, wire_status::WireStatusLayer},
    };

    /// A routed service that records whether the connection's info reached it, then never answers.
    #[derive(Clone, Default)]
    struct Stalls(Arc<Mutex<Vec<Option<TcpConnectInfo>>>>);

    impl NamedService for Stalls {
        const NAME: &'static str = "test.Stalls";
    }

    impl tower::Service<http::Request<Body>> for Stalls {
        type Response = http::Response<Body>;
        type Error = Infallible;
        type Future = std::future::Pending<Result<http::Response<Body>, Infallible>>;

        fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, req: http::Request<Body>) -> Self::Future {
            let info = req.extensions().get::<TcpConnectInfo>().cloned();
            self.0.lock().unwrap().push(info);
            std::future::pending()
        }
    }

    fn front(toml: &str, stalls: Stalls) -> (Front<MemoryStore, TcpConnectInfo>, InFlight) {
        let settings = config::load_str(toml).unwrap();
        let store = MemoryStore::new(&settings.rules);
        let quota = Quota::new(settings.rules, store, Arc::new(FakeClock::new())).unwrap();
        let quota = QuotaServer::new(QuotaGrpc::new(Arc::new(quota)), 1024);
        let auth = AuthLayer::new(
            Arc::new(Authenticator::new(settings.auth)),
            Service::Quota,
            None,
        );
        let routes = Routes::new(stalls).prepare();
        let router = tower::Layer::layer(&WireStatusLayer, routes);
        let in_flight = InFlight::default();
        let calls = Calls::new(quota, auth, router, in_flight.clone());
        let info = TcpConnectInfo {
            local_addr: None,
            remote_addr: Some(([127, 0, 0, 1], 4000).into()),
        };
        (Front::new(calls, info), in_flight)
    }

    const OPEN: &str = "[[resources]]\nname = \"r\"\nrate = { limit = 10, period = \"1s\" }";

    fn call(path: &str, timeout: Option<&str>, message: &[u8]) -> http::Request<Full<Bytes>> {
        let mut framed = vec![0, 0, 0, 0, u8::try_from(message.len()).unwrap()];
        framed.extend_from_slice(message);
        let mut req = http::Request::post(path).header("content-type", "application/grpc");
        if let Some(t) = timeout {
            req = req.header("grpc-timeout", t);
        }
        req.body(Full::new(Bytes::from(framed))).unwrap()
    }

    /// The grpc-status of an answer, from its headers (trailers-only) or its trailers.
    async fn status(answer: Answer) -> String {
        let (parts, body) = answer.into_parts();
        if let Some(s) = parts.headers.get("grpc-status") {
            return s.to_str().unwrap().to_owned();
        }
        let trailers = body.collect().await.unwrap().trailers().cloned().unwrap();
        trailers["grpc-status"].to_str().unwrap().to_owned()
    }

    // AcquireRequest{resource: "r", permits: 1}.
    const ACQUIRE_R: &[u8] = b"\x0a\x01r\x18\x01";

    #[tokio::test]
    async fn acquire_and_release_take_their_own_paths() {
        let stalls = Stalls::default();
        let (front, in_flight) = front(OPEN, stalls.clone());
        let answer = front
            .call(call("/quotad.v1.QuotaService/Acquire", None, ACQUIRE_R))
            .await;
        let answer = answer.unwrap();
        assert!(matches!(answer.body(), Either::Left(_)), "the unary body");
        assert_eq!(status(answer).await, "0");
        let answer = front.call(call("/quotad.v1.QuotaService/Release", None, b"\x0a\x01x"));
        let answer = answer.await.unwrap();
        assert!(matches!(answer.body(), Either::Left(_)));
        assert_eq!(status(answer).await, "3", "a malformed lease id");
        assert!(stalls.0.lock().unwrap().is_empty(), "the router saw none");
        assert_eq!(in_flight.get(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_routed_call_gets_the_connection_and_its_deadline() {
        let stalls = Stalls::default();
        let (front, in_flight) = front(OPEN, stalls.clone());
        let pending = front.call(call("/test.Stalls/Wait", Some("50m"), b""));
        assert_eq!(in_flight.get(), 1, "counted from the call on");
        let answer = pending.await.unwrap();
        assert!(
            matches!(answer.body(), Either::Right(_)),
            "the router's body"
        );
        assert_eq!(answer.headers()["grpc-status"], "1", "CANCELLED");
        assert_eq!(answer.headers()["grpc-message"], "Timeout%20expired");
        assert_eq!(in_flight.get(), 0);
        let seen = stalls.0.lock().unwrap().clone();
        let remote = seen[0].as_ref().and_then(TcpConnectInfo::remote_addr);
        assert_eq!(remote, Some(([127, 0, 0, 1], 4000).into()));
        // An unknown method is UNIMPLEMENTED, by the router.
        let answer = front.call(call("/nope.Nope/X", None, b"")).await.unwrap();
        assert_eq!(answer.headers()["grpc-status"], "12");
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_without_a_deadline_is_not_cut_short() {
        let (front, in_flight) = front(OPEN, Stalls::default());
        let pending = front.call(call("/test.Stalls/Wait", None, b""));
        let waited = tokio::time::timeout(Duration::from_secs(3600), pending).await;
        assert!(waited.is_err(), "still waiting after an hour");
        assert_eq!(in_flight.get(), 0, "a dropped call is not counted");
    }

    #[tokio::test]
    async fn the_unary_paths_are_authenticated() {
        let toml = format!(
            "{OPEN}\n[[auth.identities]]\nname = \"w\"\nroles = [\"worker\"]\ntoken_sha256 = \"{}\"\n",
            crate::auth::token::hash_hex("secret-token-of-w")
        );
        let (front, _) = front(&toml, Stalls::default());
        let req = call("/quotad.v1.QuotaService/Acquire", None, ACQUIRE_R);
        let answer = front.call(req).await.unwrap();
        assert_eq!(answer.headers()["grpc-status"], "16", "UNAUTHENTICATED");
        let mut req = call("/quotad.v1.QuotaService/Acquire", None, ACQUIRE_R);
        let bearer = http::HeaderValue::from_static("Bearer secret-token-of-w");
        req.headers_mut().insert("authorization", bearer);
        assert_eq!(status(front.call(req).await.unwrap()).await, "0");
    }
}
