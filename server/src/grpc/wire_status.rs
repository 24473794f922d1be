//! Status codes for requests that never reach a handler. tonic answers a request whose protobuf cannot be
//! decoded with INTERNAL, and one larger than `server.max_request_bytes` with OUT_OF_RANGE; the gRPC status
//! code guide says a bad request is INVALID_ARGUMENT and a size limit RESOURCE_EXHAUSTED, and clients
//! decide whether to retry by the code (INTERNAL looks like the server's fault). This layer rewrites those
//! two answers, recognised by the messages tonic gives them; quotad's own handlers never answer INTERNAL or
//! OUT_OF_RANGE, so nothing else is touched.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use http::{HeaderName, HeaderValue, Request, Response};

/// tonic's message for an undecodable request (percent-encoded, as it travels in `grpc-message`).
const DECODE_FAILED: &str = "failed%20to%20decode%20Protobuf%20message";
/// tonic's message for a request over the size limit.
const TOO_LARGE: &str = "Error,%20decoded%20message%20length%20too%20large";

/// Rewrites tonic's codes for undecodable and oversize requests (see the module docs).
#[derive(Debug, Clone, Copy, Default)]
pub struct WireStatusLayer;

impl<S> tower::Layer<S> for WireStatusLayer {
    type Service = WireStatus<S>;

    fn layer(&self, inner: S) -> WireStatus<S> {
        WireStatus { inner }
    }
}

/// The service [`WireStatusLayer`] wraps around the router.
#[derive(Debug, Clone)]
pub struct WireStatus<S> {
    inner: S,
}

impl<S, B, R> tower::Service<Request<B>> for WireStatus<S>
where
    S: tower::Service<Request<B>, Response = Response<R>>,
{
    type Response = Response<R>;
    type Error = S::Error;
    type Future = WireStatusFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        WireStatusFuture {
            inner: self.inner.call(request),
        }
    }
}

pin_project_lite::pin_project! {
    /// A call's future whose answer is corrected on the way out (no allocation per call).
    #[derive(Debug)]
    pub struct WireStatusFuture<F> {
        #[pin]
        inner: F,
    }
}

impl<F, R, E> Future for WireStatusFuture<F>
where
    F: Future<Output = Result<Response<R>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let mut out = std::task::ready!(self.project().inner.poll(cx));
        if let Ok(response) = &mut out {
            fix(response.headers_mut());
        }
        Poll::Ready(out)
    }
}

/// Header names built once (looking a header up by `&str` parses the name on every call).
const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
const GRPC_MESSAGE: HeaderName = HeaderName::from_static("grpc-message");

/// Rewrites the code of a trailers-only error answer, if it is one of the two.
fn fix(headers: &mut http::HeaderMap) {
    let code = match headers.get(&GRPC_STATUS).map(HeaderValue::as_bytes) {
        Some(b"13") => "3",
        Some(b"11") => "8",
        _ => return,
    };
    let message = headers
        .get(&GRPC_MESSAGE)
        .and_then(|m| m.to_str().ok())
        .unwrap_or("");
    let ours = match code {
        "3" => message.starts_with(DECODE_FAILED),
        _ => message.starts_with(TOO_LARGE),
    };
    if ours {
        headers.insert(GRPC_STATUS, HeaderValue::from_static(code));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(code: &'static str, message: &'static str) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        h.insert("grpc-status", HeaderValue::from_static(code));
        h.insert("grpc-message", HeaderValue::from_static(message));
        h
    }

    #[test]
    fn only_the_codec_answers_change() {
        let mut h = headers("13", "failed%20to%20decode%20Protobuf%20message:%20x");
        fix(&mut h);
        assert_eq!(h["grpc-status"], "3");
        let mut h = headers(
            "11",
            "Error,%20decoded%20message%20length%20too%20large:%20found",
        );
        fix(&mut h);
        assert_eq!(h["grpc-status"], "8");
        for (code, message) in [("13", "something%20else"), ("11", "other"), ("5", "x")] {
            let mut h = headers(code, message);
            fix(&mut h);
            assert_eq!(h["grpc-status"], code);
        }
    }
}
