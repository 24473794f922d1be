//! `quotad.v1.QuotaService`: each RPC converts its request, calls the engine, records what happened in the
//! metrics (when on), and converts the answer.

use std::sync::Arc;

use quotad_api::v1::{self as pb, quota_service_server::QuotaService};
use tokio::time::Instant;
use tonic::{Request, Response, Status};

use super::convert;
use crate::{
    engine::{self, EngineError, MemoryStore, Quota, Store},
    metrics::{Metrics, Rpc},
    waiting::Waiting,
};

/// The QuotaService implementation.
#[derive(Debug)]
pub struct QuotaGrpc<S: Store = MemoryStore> {
    quota: Arc<Quota<S>>,
    waiting: Waiting,
    metrics: Option<Arc<Metrics>>,
}

impl<S: Store> QuotaGrpc<S> {
    /// Serves `quota`, without metrics.
    pub fn new(quota: Arc<Quota<S>>) -> Self {
        Self {
            quota,
            waiting: Waiting::default(),
            metrics: None,
        }
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

#[tonic::async_trait]
impl<S: Store> QuotaService for QuotaGrpc<S> {
    async fn acquire(
        &self,
        request: Request<pb::AcquireRequest>,
    ) -> Result<Response<pb::AcquireResponse>, Status> {
        let start = self.start();
        let result = match engine::Acquire::try_from(request.into_inner()) {
            Ok(req) => self.waiting.acquire(&self.quota, &req).await,
            Err(e) => Err(e),
        };
        if let (Some(m), Some(t)) = (&self.metrics, start) {
            m.acquired(&result, t.elapsed());
        }
        Ok(Response::new(convert::acquire_out(
            result?,
            self.quota.clock().as_ref(),
        )))
    }

    async fn release(
        &self,
        request: Request<pb::ReleaseRequest>,
    ) -> Result<Response<pb::ReleaseResponse>, Status> {
        let start = self.start();
        let req = engine::Release::try_from(request.into_inner())
            .inspect_err(|e| self.rejected(Rpc::Release, start, e))?;
        let result = self.quota.release(&req).await;
        if let (Some(m), Some(t)) = (&self.metrics, start) {
            m.released(req.outcome, &result, t.elapsed());
        }
        Ok(Response::new(convert::release_out(result?)))
    }

    async fn renew(
        &self,
        request: Request<pb::RenewRequest>,
    ) -> Result<Response<pb::RenewResponse>, Status> {
        let start = self.start();
        let result = match engine::Renew::try_from(request.into_inner()) {
            Ok(req) => self.quota.renew(&req).await,
            Err(e) => Err(e),
        };
        if let (Some(m), Some(t)) = (&self.metrics, start) {
            m.renewed(&result, t.elapsed());
        }
        Ok(Response::new(convert::renew_out(
            result?,
            self.quota.clock().as_ref(),
        )))
    }

    async fn report_throttle(
        &self,
        request: Request<pb::ReportThrottleRequest>,
    ) -> Result<Response<pb::ReportThrottleResponse>, Status> {
        let start = self.start();
        let req = engine::Report::try_from(request.into_inner())
            .inspect_err(|e| self.rejected(Rpc::ReportThrottle, start, e))?;
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
    }

    async fn get_circuit_state(
        &self,
        request: Request<pb::GetCircuitStateRequest>,
    ) -> Result<Response<pb::GetCircuitStateResponse>, Status> {
        let start = self.start();
        let target = engine::BreakerTarget::from(request.into_inner());
        let result = self.quota.circuit(&target).await;
        if let (Some(m), Some(t)) = (&self.metrics, start) {
            m.circuit_read(&result, t.elapsed());
        }
        Ok(Response::new(convert::circuit_out(
            result?,
            self.quota.clock().as_ref(),
        )))
    }
}
