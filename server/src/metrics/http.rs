//! The `/metrics` endpoint: plain HTTP/1.1 on its own listener (Prometheus scrapes it; nothing else is
//! served there). `GET /metrics` renders the exposition; `GET /` points to it; anything else is 404/405.
//! A connection gets 30 s in all, so a stuck scraper cannot hold resources.

use std::{convert::Infallible, future::Future, sync::Arc, time::Duration};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request, Response, StatusCode, body::Incoming, header, service::service_fn};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use super::{Metrics, render};
use crate::engine::{Quota, Store};

const CONNECTION_BUDGET: Duration = Duration::from_secs(30);

/// The Prometheus text format's content type.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

fn reply(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    if let Ok(v) = header::HeaderValue::from_str(content_type) {
        r.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    r
}

async fn handle<S: Store>(
    req: Request<Incoming>,
    metrics: Arc<Metrics>,
    quota: Arc<Quota<S>>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let get = matches!(*req.method(), Method::GET | Method::HEAD);
    Ok(match (get, req.uri().path()) {
        (true, "/metrics") => match render(&metrics, &quota).await {
            Ok(text) => reply(StatusCode::OK, CONTENT_TYPE, text),
            Err(e) => {
                tracing::warn!(error = %e, "metrics: cannot read the store");
                reply(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    format!("cannot read the quota store: {e}\n"),
                )
            }
        },
        (true, "/") => reply(
            StatusCode::OK,
            "text/plain",
            "quotad: Prometheus metrics at /metrics\n",
        ),
        (false, "/metrics" | "/") => {
            reply(StatusCode::METHOD_NOT_ALLOWED, "text/plain", "use GET\n")
        }
        _ => reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found; try /metrics\n",
        ),
    })
}

/// Serves `/metrics` on `listener` until `shutdown` completes.
pub async fn serve<S: Store>(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    quota: Arc<Quota<S>>,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            () = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "metrics: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let (metrics, quota) = (metrics.clone(), quota.clone());
        tokio::spawn(async move {
            let service = service_fn(move |req| handle(req, metrics.clone(), quota.clone()));
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service);
            if let Ok(Err(e)) = tokio::time::timeout(CONNECTION_BUDGET, conn).await {
                tracing::debug!(error = %e, "metrics: connection ended with an error");
            }
        });
    }
}
