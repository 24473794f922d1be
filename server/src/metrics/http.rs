//! The metrics listener: plain HTTP/1.1 on its own port. `GET /metrics` renders the Prometheus exposition;
//! `/status`, `/status.json` and `/status/*` are the status page ([`crate::status`]); `GET /` redirects to
//! the page; anything else is 404/405.
//! A connection gets 30 s in all, so a stuck scraper cannot hold resources.

use std::{convert::Infallible, future::Future, sync::Arc, time::Duration};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request, Response, StatusCode, body::Incoming, header, service::service_fn};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use super::{Metrics, render};
use crate::{
    engine::{Quota, Store},
    status::{self, History, json::StatusQuery},
};

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

/// The status page and its JSON (see [`crate::status`]).
async fn status<S: Store>(
    req: &Request<Incoming>,
    quota: &Quota<S>,
    metrics: &Metrics,
    history: &History,
) -> Option<Response<Full<Bytes>>> {
    let path = req.uri().path();
    let mut r = if path == "/status.json" {
        let query = StatusQuery::parse(req.uri().query());
        match status::json::snapshot(quota, Some(metrics), history, &query).await {
            Ok(body) => reply(StatusCode::OK, "application/json", body),
            Err(e) => reply(
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                format!("cannot read the quota store: {e}\n"),
            ),
        }
    } else {
        let (content_type, body) = status::asset(path)?;
        reply(StatusCode::OK, content_type, body)
    };
    let headers = r.headers_mut();
    headers.insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        header::HeaderValue::from_static(status::CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        header::HeaderValue::from_static("nosniff"),
    );
    Some(r)
}

async fn handle<S: Store>(
    req: Request<Incoming>,
    metrics: Arc<Metrics>,
    quota: Arc<Quota<S>>,
    history: Arc<History>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let get = matches!(*req.method(), Method::GET | Method::HEAD);
    if get && let Some(r) = status(&req, &quota, &metrics, &history).await {
        return Ok(r);
    }
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
        (true, "/") => {
            let mut r = reply(
                StatusCode::FOUND,
                "text/plain",
                "quotad: the status page is at /status, Prometheus metrics at /metrics\n",
            );
            r.headers_mut().insert(
                header::LOCATION,
                header::HeaderValue::from_static("/status"),
            );
            r
        }
        (false, "/metrics" | "/") => {
            reply(StatusCode::METHOD_NOT_ALLOWED, "text/plain", "use GET\n")
        }
        _ => reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found; try /status or /metrics\n",
        ),
    })
}

/// Serves `/metrics` on `listener` until `shutdown` completes.
pub async fn serve<S: Store>(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    quota: Arc<Quota<S>>,
    history: Arc<History>,
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
        let (metrics, quota, history) = (metrics.clone(), quota.clone(), history.clone());
        tokio::spawn(async move {
            let service =
                service_fn(move |req| handle(req, metrics.clone(), quota.clone(), history.clone()));
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service);
            if let Ok(Err(e)) = tokio::time::timeout(CONNECTION_BUDGET, conn).await {
                tracing::debug!(error = %e, "metrics: connection ended with an error");
            }
        });
    }
}
