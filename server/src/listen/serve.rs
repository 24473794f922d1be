//! Serving HTTP/2 on the accepted connections: hyper's HTTP/2 server on each, with the `[server.http2]`
//! settings, and a service made once per connection that answers each call through `&self` (no clone and
//! no box per call). tonic's `Server` did the same through a tower stack it cloned and boxed for every
//! call, wrapped each request and response body in a box, and copied the connection's info into every
//! request's extensions: about 2,300 instructions of a 47,000-instruction Acquire (callgrind; BENCHMARKS.md). No `date` header: gRPC needs none, and hyper would encode one on every answer.
//!
//! A connection hyper closes for abuse (a GOAWAY with ENHANCE_YOUR_CALM: more streams reset before they were
//! accepted than `server.http2.max_pending_reset_streams`, the rapid reset of CVE-2023-44487, or as many
//! streams the server had to reset for the client's errors) is a strike against its address (`penalty`).
//!
//! Shutdown: when `shutdown` completes, no connection is accepted any more, every open connection is sent
//! GOAWAY (its calls in flight finish), and [`serve`] returns once all have closed.

use std::{convert::Infallible, future::Future, pin::pin};

use bytes::Bytes;
use http::{Request, Response};
use hyper::{body::Incoming, server::conn::http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    sync::watch,
};
use tokio_stream::StreamExt as _;

use super::{Conn, Incoming as Accepted, conn::Closer, penalty::CloseReason};
use crate::config::Http2Settings;

/// Serves every connection `incoming` yields with the service `make` builds for it, until `shutdown`
/// completes and the connections open then have closed.
pub async fn serve<IO, M, S, B>(
    incoming: Accepted<IO>,
    settings: &Http2Settings,
    mut make: M,
    shutdown: impl Future<Output = ()>,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    M: FnMut(&Conn<IO>) -> S,
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>, Error = Infallible>
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let builder = builder(settings);
    let (closing, closed) = watch::channel(false);
    let mut shutdown = pin!(shutdown);
    {
        // Dropped when the loop ends, which stops the accept task and closes the listening socket.
        let mut incoming = incoming;
        loop {
            let conn = tokio::select! {
                () = &mut shutdown => break,
                conn = incoming.next() => conn,
            };
            match conn {
                Some(Ok(conn)) => {
                    let service = make(&conn);
                    let closer = conn.closer();
                    let served = builder.serve_connection(TokioIo::new(conn), service);
                    tokio::spawn(connection(served, closer, closed.clone()));
                }
                Some(Err(e)) => tracing::debug!(error = %e, "accept failed"),
                None => break,
            }
        }
    }
    let _ = closing.send(true);
    drop(closed);
    closing.closed().await;
}

/// hyper's HTTP/2 server with quotad's settings (the same ones tonic's `Server` was given, with its
/// defaults for the rest: windows, frame size, no adaptive window).
fn builder(s: &Http2Settings) -> http2::Builder<TokioExecutor> {
    let mut b = http2::Builder::new(TokioExecutor::new());
    b.timer(TokioTimer::new())
        .max_concurrent_streams(s.max_concurrent_streams)
        .keep_alive_interval(s.keepalive_interval)
        .keep_alive_timeout(s.keepalive_timeout)
        .max_pending_accept_reset_streams(s.max_pending_reset_streams)
        .max_local_error_reset_streams(s.max_pending_reset_streams)
        .max_header_list_size(s.max_header_list_bytes)
        .auto_date_header(false);
    b
}

/// One connection, served until it ends; told GOAWAY once the server is closing. Holds `closed` (a
/// receiver of the closing signal) while it lives, so the server knows when the last one is gone.
async fn connection<IO, S, B>(
    served: http2::Connection<TokioIo<IO>, S, TokioExecutor>,
    closer: Closer,
    mut closed: watch::Receiver<bool>,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>, Error = Infallible>
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut served = pin!(served);
    let ended = tokio::select! {
        ended = served.as_mut() => Some(ended),
        _ = closed.wait_for(|closing| *closing) => None,
    };
    let ended = match ended {
        Some(ended) => ended,
        None => {
            served.as_mut().graceful_shutdown();
            served.await
        }
    };
    if let Err(e) = ended {
        if calmed_down(&e) {
            closer.closed(CloseReason::ResetFlood);
        } else {
            tracing::debug!(error = %e, "connection ended with an error");
        }
    }
}

/// True when hyper ended the connection with its own GOAWAY ENHANCE_YOUR_CALM: h2's answer to a client
/// that reset too many streams before they were accepted, or caused too many resets.
fn calmed_down(e: &hyper::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if let Some(h2) = s.downcast_ref::<h2::Error>() {
            return h2.is_go_away()
                && h2.is_library()
                && h2.reason() == Some(h2::Reason::ENHANCE_YOUR_CALM);
        }
        source = s.source();
    }
    false
}
