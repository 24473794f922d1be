//! `quotad.v1.QuotaService`: each RPC converts its request, calls the engine, records what happened in the
//! metrics (when on) and in its span (when traced), and converts the answer.

use std::{future::Future, sync::Arc};

use quotad_api::v1::{self as pb, quota_service_server::QuotaService};
use tokio::time::Instant;
use tonic::{Request, Response, Status};
use tracing::{Instrument as _, Span};

use super::{
    answer::AcquireAnswer,
    convert, trace_context,
    watch::{Events, Watches},
};
use crate::{
    auth::Caller,
    engine::{self, EngineError, Quota, Store},
    metrics::{Metrics, Rpc},
    waiting::Waiting,
};

/// The span of one call: named after the method, a child of the caller's trace when it sent one. When no
/// layer wants these spans (no OTLP export), this is a disabled span and costs next to nothing.
macro_rules! rpc_span {
    ($method:literal, $request:expr) => {{
        let span = tracing::info_span!(
            target: crate::telemetry::RPC_TARGET,
            $method,
            otel.name = concat!("quotad.v1.QuotaService/", $method),
            otel.kind = "server",
            otel.status_code = tracing::field::Empty,
            rpc.system = "grpc",
            rpc.service = "quotad.v1.QuotaService",
            rpc.method = $method,
            resource = tracing::field::Empty,
            client_id = tracing::field::Empty,
            decision = tracing::field::Empty,
            latency_us = tracing::field::Empty,
            error = tracing::field::Empty,
        );
        trace_context::continue_trace(&span, $request.metadata());
        span
    }};
}

/// The QuotaService implementation.
#[derive(Debug)]
pub struct QuotaGrpc<S: Store> {
    quota: Arc<Quota<S>>,
    waiting: Waiting,
    metrics: Option<Arc<Metrics>>,
    watches: Watches,
}

impl<S: Store> QuotaGrpc<S> {
    /// Serves `quota`, without metrics.
    pub fn new(quota: Arc<Quota<S>>) -> Self {
        Self {
            quota,
            waiting: Waiting::default(),
            metrics: None,
            watches: Watches::default(),
        }
    }

    /// Ends watch streams when `stop` turns true (the server's shutdown).
    pub fn with_stop(mut self, stop: tokio::sync::watch::Receiver<bool>) -> Self {
        self.watches = Watches::with_stop(stop);
        self
    }

    /// Records every call into `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// When metrics are on, the time the call started (no clock read when they are off).
    fn start(&self) -> Option<Instant> {
        self.metrics.as_ref().map(|_| Instant::now())
    }

    fn rejected(&self, rpc: Rpc, start: Option<Instant>, e: &EngineError) {
        if let (Some(m), Some(t)) = (&self.metrics, start) {
            m.rejected(rpc, e, t.elapsed());
        }
    }
}

/// The authenticated caller (the auth interceptor leaves one unless the caller is anonymous).
fn caller<T>(request: &Request<T>) -> Option<Caller> {
    request.extensions().get::<Caller>().cloned()
}

/// Applies the caller's identity and tenant binding to a request's descriptors.
fn bind(
    caller: Option<&Caller>,
    descriptors: &mut Vec<(String, String)>,
) -> Result<(), EngineError> {
    match caller {
        Some(c) => c
            .bind_tenant(descriptors)
            .map_err(EngineError::PermissionDenied),
        None => Ok(()),
    }
}

/// Runs `call` inside `span`, and records its latency and any error on the span.
async fn traced<T>(span: Span, call: impl Future<Output = Result<T, Status>>) -> Result<T, Status> {
    if span.is_disabled() {
        return call.await;
    }
    let start = Instant::now();
    let result = call.instrument(span.clone()).await;
    traced_end(&span, start, &result);
    result
}

/// Records a traced call's latency (from `start`) and any error on its span.
fn traced_end<T>(span: &Span, start: Instant, result: &Result<T, Status>) {
    span.record("latency_us", start.elapsed().as_micros() as u64);
    if let Err(status) = result {
        span.record("otel.status_code", "ERROR");
        span.record("error", status.message());
    }
}

/// One Acquire call's span and clocks, carried from its start to its answer.
#[derive(Debug)]
pub(super) struct AcquireCall {
    span: Span,
    /// When the call started, for the metrics (None when they are off).
    start: Option<Instant>,
    /// When the call started, for the span (None when it is disabled).
    traced: Option<Instant>,
}

impl AcquireCall {
    fn start<S: Store, T>(grpc: &QuotaGrpc<S>, request: &Request<T>) -> Self {
        let span = rpc_span!("Acquire", request);
        let traced = (!span.is_disabled()).then(Instant::now);
        Self {
            span,
            start: grpc.start(),
            traced,
        }
    }
}

/// Where an Acquire stands once its synchronous part ran.
pub(super) enum AcquireStep {
    /// Answered (the store decided at once, or the request was refused).
    Answered(Result<Response<AcquireAnswer>, Status>),
    /// Needs a future: a store's round trip or a `max_wait` hold ([`QuotaGrpc::acquire_waiting`]).
    Wait(AcquireCall, engine::Acquire),
}

impl<S: Store> QuotaGrpc<S> {
    /// An Acquire as far as it goes without a future: synchronous where the store answers at once, so the
    /// caller builds no future for it (callgrind: BENCHMARKS.md).
    pub(super) fn acquire_now(&self, request: Request<pb::AcquireRequest>) -> AcquireStep {
        let call = AcquireCall::start(self, &request);
        let req = match self.acquire_request(request, &call.span) {
            Ok(req) => req,
            Err(e) => return AcquireStep::Answered(self.acquire_done(call, Err(e))),
        };
        if req.max_wait.is_zero()
            && let Some(decided) = call.span.in_scope(|| self.quota.acquire_ready(&req))
        {
            return AcquireStep::Answered(self.acquire_done(call, decided));
        }
        AcquireStep::Wait(call, req)
    }

    /// The request in engine terms, bound to its caller's identity and tenant.
    fn acquire_request(
        &self,
        request: Request<pb::AcquireRequest>,
        span: &Span,
    ) -> Result<engine::Acquire, EngineError> {
        let caller = caller(&request);
        let mut req = engine::Acquire::try_from(request.into_inner())?;
        bind(caller.as_ref(), &mut req.descriptors)?;
        req.owner = caller.as_ref().and_then(|c| c.identity);
        req.bypass = caller.as_ref().is_some_and(|c| c.bypass);
        if !span.is_disabled() {
            span.record("resource", req.resource.as_str());
            span.record("client_id", req.client_id.as_deref().unwrap_or(""));
        }
        Ok(req)
    }

    /// An Acquire that needs a future: a store's round trip or a `max_wait` hold.
    pub(super) async fn acquire_waiting(
        &self,
        call: AcquireCall,
        req: engine::Acquire,
    ) -> Result<Response<AcquireAnswer>, Status> {
        let decided = self
            .waiting
            .acquire(&self.quota, &req)
            .instrument(call.span.clone())
            .await;
        self.acquire_done(call, decided)
    }

    /// Records the call (metrics, span) and converts its answer.
    fn acquire_done(
        &self,
        call: AcquireCall,
        decided: Result<engine::Decision, EngineError>,
    ) -> Result<Response<AcquireAnswer>, Status> {
        if let (Some(m), Some(t)) = (&self.metrics, call.start) {
            m.acquired(&decided, t.elapsed());
        }
        let answer = decided.map_err(Status::from).map(|decision| {
            call.span.record(
                "decision",
                decision.denial().map_or("granted", |d| d.as_str()),
            );
            Response::new(AcquireAnswer::new(
                decision,
                self.quota.clock().as_ref(),
                self.quota.config_version(),
            ))
        });
        if let Some(t) = call.traced {
            traced_end(&call.span, t, &answer);
        }
        answer
    }
}

impl<S: Store> QuotaGrpc<S> {
    /// A Release. Written without [`traced`]'s wrapper so that its future stays small (it is built and
    /// boxed on every call; BENCHMARKS.md).
    pub(super) async fn release_call(
        &self,
        request: Request<pb::ReleaseRequest>,
    ) -> Result<Response<pb::ReleaseResponse>, Status> {
        let span = rpc_span!("Release", request);
        let traced = (!span.is_disabled()).then(Instant::now);
        let answer = self
            .release_traced(request, &span)
            .instrument(span.clone())
            .await;
        if let Some(t) = traced {
            traced_end(&span, t, &answer);
        }
        answer
    }

    async fn release_traced(
        &self,
        request: Request<pb::ReleaseRequest>,
        span: &Span,
    ) -> Result<Response<pb::ReleaseResponse>, Status> {
        let start = self.start();
        let caller = caller(&request);
        let mut req = engine::Release::try_from(request.into_inner())
            .inspect_err(|e| self.rejected(Rpc::Release, start, e))?;
        req.caller = caller.and_then(|c| c.identity);
        let result = self.quota.release(&req).await;
        if let (Some(m), Some(t)) = (&self.metrics, start) {
            m.released(req.outcome, &result, t.elapsed());
        }
        let released = result?;
        if !span.is_disabled()
            && let Some(resource) = &released.resource
        {
            span.record("resource", &**resource);
        }
        span.record(
            "decision",
            released
                .result
                .err()
                .map_or_else(|| req.outcome.as_str(), |why| why.as_str()),
        );
        Ok(Response::new(convert::release_out(released)))
    }
}

#[tonic::async_trait]
impl<S: Store> QuotaService for QuotaGrpc<S> {
    async fn acquire(
        &self,
        request: Request<pb::AcquireRequest>,
    ) -> Result<Response<pb::AcquireResponse>, Status> {
        // The server answers Acquire on its own path (QuotaServer); this is the same call for in-process
        // callers of the trait.
        let answer = match self.acquire_now(request) {
            AcquireStep::Answered(answer) => answer,
            AcquireStep::Wait(call, req) => Box::pin(self.acquire_waiting(call, req)).await,
        };
        answer.map(|r| r.map(AcquireAnswer::into_pb))
    }

    async fn release(
        &self,
        request: Request<pb::ReleaseRequest>,
    ) -> Result<Response<pb::ReleaseResponse>, Status> {
        // The server answers Release on its own path (QuotaServer) with the same call.
        self.release_call(request).await
    }

    async fn renew(
        &self,
        request: Request<pb::RenewRequest>,
    ) -> Result<Response<pb::RenewResponse>, Status> {
        let span = rpc_span!("Renew", request);
        traced(span, async {
            let start = self.start();
            let caller = caller(&request);
            let result = match engine::Renew::try_from(request.into_inner()) {
                Ok(mut req) => {
                    req.caller = caller.and_then(|c| c.identity);
                    self.quota.renew(&req).await
                }
                Err(e) => Err(e),
            };
            if let (Some(m), Some(t)) = (&self.metrics, start) {
                m.renewed(&result, t.elapsed());
            }
            Ok(Response::new(convert::renew_out(
                result?,
                self.quota.clock().as_ref(),
            )))
        })
        .await
    }

    async fn report_throttle(
        &self,
        request: Request<pb::ReportThrottleRequest>,
    ) -> Result<Response<pb::ReportThrottleResponse>, Status> {
        let span = rpc_span!("ReportThrottle", request);
        traced(span.clone(), async {
            let start = self.start();
            let caller = caller(&request);
            let req = engine::Report::try_from(request.into_inner())
                .and_then(|mut req| {
                    bind(caller.as_ref(), &mut req.descriptors)?;
                    req.caller = caller.as_ref().and_then(|c| c.identity);
                    Ok(req)
                })
                .inspect_err(|e| self.rejected(Rpc::ReportThrottle, start, e))?;
            if !span.is_disabled() {
                span.record("resource", req.resource.as_str());
                span.record("client_id", req.client_id.as_deref().unwrap_or(""));
                span.record("decision", req.kind.as_str());
            }
            let result = self.quota.report(&req).await;
            if let (Some(m), Some(t)) = (&self.metrics, start) {
                m.reported(req.kind, &result, t.elapsed());
            }
            let reported = result?;
            tracing::debug!(
                resource = %req.resource,
                kind = req.kind.as_str(),
                client_id = req.client_id.as_deref().unwrap_or(""),
                message = req.message.as_deref().unwrap_or(""),
                "throttle reported"
            );
            Ok(Response::new(convert::report_out(
                reported,
                self.quota.clock().as_ref(),
            )))
        })
        .await
    }

    type WatchCircuitStateStream = Events;

    async fn watch_circuit_state(
        &self,
        request: Request<pb::WatchCircuitStateRequest>,
    ) -> Result<Response<Events>, Status> {
        let caller = caller(&request);
        let mut targets = Vec::new();
        for r in request
            .into_inner()
            .resources
            .into_iter()
            .take(super::watch::MAX_RESOURCES + 1)
        {
            let mut target = engine::BreakerTarget::from(r);
            bind(caller.as_ref(), &mut target.descriptors)?;
            targets.push(target);
        }
        let events = self.watches.start(self.quota.clone(), targets).await?;
        Ok(Response::new(events))
    }

    async fn get_circuit_state(
        &self,
        request: Request<pb::GetCircuitStateRequest>,
    ) -> Result<Response<pb::GetCircuitStateResponse>, Status> {
        let span = rpc_span!("GetCircuitState", request);
        traced(span.clone(), async {
            let start = self.start();
            let caller = caller(&request);
            let mut target = engine::BreakerTarget::from(request.into_inner());
            bind(caller.as_ref(), &mut target.descriptors)?;
            span.record("resource", target.resource.as_str());
            let result = self.quota.circuit(&target).await;
            if let (Some(m), Some(t)) = (&self.metrics, start) {
                m.circuit_read(&result, t.elapsed());
            }
            let view = result?;
            span.record("decision", view.breaker.state.as_str());
            Ok(Response::new(convert::circuit_out(
                view,
                self.quota.clock().as_ref(),
            )))
        })
        .await
    }
}
