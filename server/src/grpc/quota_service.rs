//! `quotad.v1.QuotaService`: each RPC converts its request, calls the engine, converts the answer.

use std::sync::Arc;

use quotad_api::v1::{self as pb, quota_service_server::QuotaService};
use tonic::{Request, Response, Status};

use super::convert;
use crate::{
    engine::{self, MemoryStore, Quota, Store},
    waiting::Waiting,
};

/// The QuotaService implementation.
#[derive(Debug)]
pub struct QuotaGrpc<S: Store = MemoryStore> {
    quota: Arc<Quota<S>>,
    waiting: Waiting,
}

impl<S: Store> QuotaGrpc<S> {
    /// Serves `quota`.
    pub fn new(quota: Arc<Quota<S>>) -> Self {
        Self {
            quota,
            waiting: Waiting::default(),
        }
    }
}

#[tonic::async_trait]
impl<S: Store> QuotaService for QuotaGrpc<S> {
    async fn acquire(
        &self,
        request: Request<pb::AcquireRequest>,
    ) -> Result<Response<pb::AcquireResponse>, Status> {
        let req = engine::Acquire::try_from(request.into_inner())?;
        let decision = self.waiting.acquire(&self.quota, &req).await?;
        Ok(Response::new(convert::acquire_out(
            decision,
            self.quota.clock().as_ref(),
        )))
    }

    async fn release(
        &self,
        request: Request<pb::ReleaseRequest>,
    ) -> Result<Response<pb::ReleaseResponse>, Status> {
        let req = engine::Release::try_from(request.into_inner())?;
        let released = self.quota.release(&req).await?;
        Ok(Response::new(convert::release_out(released)))
    }

    async fn renew(
        &self,
        request: Request<pb::RenewRequest>,
    ) -> Result<Response<pb::RenewResponse>, Status> {
        let req = engine::Renew::try_from(request.into_inner())?;
        let renewed = self.quota.renew(&req).await?;
        Ok(Response::new(convert::renew_out(
            renewed,
            self.quota.clock().as_ref(),
        )))
    }

    async fn report_throttle(
        &self,
        request: Request<pb::ReportThrottleRequest>,
    ) -> Result<Response<pb::ReportThrottleResponse>, Status> {
        let req = engine::Report::try_from(request.into_inner())?;
        let reported = self.quota.report(&req).await?;
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
        let target = engine::BreakerTarget::from(request.into_inner());
        let view = self.quota.circuit(&target).await?;
        Ok(Response::new(convert::circuit_out(
            view,
            self.quota.clock().as_ref(),
        )))
    }
}
