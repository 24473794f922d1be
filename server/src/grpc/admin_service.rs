//! `quotad.v1.QuotaAdmin`: what operators do with grpcurl.

use std::sync::Arc;

use quotad_api::v1::{self as pb, quota_admin_server::QuotaAdmin};
use tonic::{Request, Response, Status};

use super::convert;
use crate::{
    clock::nanos,
    config::ConfigError,
    engine::{BreakerTarget, EngineError, MemoryStore, Quota, Store},
};

/// Re-reads the config and swaps in its rules; returns the new config version.
pub type Reloader = Arc<dyn Fn() -> Result<u64, ConfigError> + Send + Sync>;

/// The QuotaAdmin implementation.
pub struct AdminGrpc<S: Store = MemoryStore> {
    quota: Arc<Quota<S>>,
    reload: Reloader,
}

impl<S: Store> std::fmt::Debug for AdminGrpc<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminGrpc").finish_non_exhaustive()
    }
}

impl<S: Store> AdminGrpc<S> {
    /// Serves admin operations on `quota`; `reload` backs ReloadConfig.
    pub fn new(quota: Arc<Quota<S>>, reload: Reloader) -> Self {
        Self { quota, reload }
    }
}

fn target(
    resource: String,
    descriptors: std::collections::HashMap<String, String>,
) -> BreakerTarget {
    BreakerTarget {
        resource,
        descriptors: descriptors.into_iter().collect(),
    }
}

#[tonic::async_trait]
impl<S: Store> QuotaAdmin for AdminGrpc<S> {
    async fn list_resources(
        &self,
        request: Request<pb::ListResourcesRequest>,
    ) -> Result<Response<pb::ListResourcesResponse>, Status> {
        let prefix = request.into_inner().prefix;
        let rules = self.quota.rules();
        let usage = self.quota.usage().await?;
        let clock = self.quota.clock();
        let limits = |rule: &crate::engine::Rule| pb::ResourceLimits {
            rate_limit: rule.resource.rate.map_or(0, |r| r.limit),
            rate_period: rule
                .resource
                .rate
                .map(|r| convert::duration_out(nanos(r.period))),
            burst: rule.resource.rate.map_or(0, |r| r.burst),
            max_concurrent: rule.resource.max_in_flight.unwrap_or(0),
            partitions: rule
                .partitions
                .iter()
                .map(|p| p.descriptor.to_string())
                .collect(),
        };
        let mut resources = Vec::new();
        let mut seen_rules = std::collections::HashSet::new();
        for u in usage
            .resources
            .iter()
            .filter(|u| u.resource.starts_with(&prefix))
        {
            let Some(rule) = rules.resolve(&u.resource) else {
                continue;
            };
            seen_rules.insert(rule.name);
            let configured = rule.headline_rate().map_or(0.0, |r| r.per_second());
            resources.push(pb::ResourceUsage {
                resource: u.resource.to_string(),
                rule: rule.name.to_string(),
                limits: Some(limits(rule)),
                tokens_available: u.tokens_available.unwrap_or(0),
                in_flight: u.in_flight,
                live_leases: u.live_leases,
                circuit_state: convert::state_out(u.breaker).into(),
                effective_rate_per_second: configured * u.rate_factor,
                configured_rate_per_second: configured,
                paused_until: u
                    .paused_until
                    .map(|t| convert::timestamp_out(clock.wall(t))),
            });
        }
        // Configured rules not used yet still show, with their full capacity.
        for rule in rules.all() {
            if seen_rules.contains(&rule.name) || !rule.name.starts_with(&prefix) {
                continue;
            }
            let configured = rule.headline_rate().map_or(0.0, |r| r.per_second());
            resources.push(pb::ResourceUsage {
                resource: rule.name.to_string(),
                rule: rule.name.to_string(),
                limits: Some(limits(rule)),
                tokens_available: rule.resource.rate.map_or(0, |r| r.burst),
                circuit_state: pb::CircuitState::Closed.into(),
                effective_rate_per_second: configured,
                configured_rate_per_second: configured,
                ..Default::default()
            });
        }
        Ok(Response::new(pb::ListResourcesResponse {
            resources,
            live_keys: usage.live_keys,
            max_live_keys: rules.capacity.max_live_keys as u64,
            live_leases: usage.live_leases,
            max_leases: rules.capacity.max_leases as u64,
            config_version: self.quota.config_version(),
        }))
    }

    async fn reset_breaker(
        &self,
        request: Request<pb::ResetBreakerRequest>,
    ) -> Result<Response<pb::ResetBreakerResponse>, Status> {
        let r = request.into_inner();
        let before = self
            .quota
            .reset_breaker(&target(r.resource, r.descriptors))
            .await?;
        Ok(Response::new(pb::ResetBreakerResponse {
            previous_state: convert::state_out(before).into(),
        }))
    }

    async fn force_open_breaker(
        &self,
        request: Request<pb::ForceOpenBreakerRequest>,
    ) -> Result<Response<pb::ForceOpenBreakerResponse>, Status> {
        let r = request.into_inner();
        let duration = convert::duration_in("duration", r.duration)?.filter(|d| !d.is_zero());
        let (before, until) = self
            .quota
            .force_open(&target(r.resource, r.descriptors), duration)
            .await?;
        Ok(Response::new(pb::ForceOpenBreakerResponse {
            previous_state: convert::state_out(before).into(),
            half_open_at: Some(convert::timestamp_out(self.quota.clock().wall(until))),
        }))
    }

    async fn list_leases(
        &self,
        request: Request<pb::ListLeasesRequest>,
    ) -> Result<Response<pb::ListLeasesResponse>, Status> {
        let r = request.into_inner();
        let limit = match r.limit {
            0 => 100,
            n => n.min(10_000) as usize,
        };
        let (leases, truncated) = self.quota.leases(&r.resource, limit).await?;
        let clock = self.quota.clock();
        let leases = leases
            .into_iter()
            .map(|l| pb::LeaseInfo {
                lease_id: l.lease_id.to_string(),
                resource: l.resource.to_string(),
                descriptors: l.descriptors.into_iter().collect(),
                permits: l.permits,
                expires_at: Some(convert::timestamp_out(clock.wall(l.expires_at))),
                client_id: l.client_id.unwrap_or_default(),
                probe: l.probe,
            })
            .collect();
        Ok(Response::new(pb::ListLeasesResponse { leases, truncated }))
    }

    async fn revoke_lease(
        &self,
        request: Request<pb::RevokeLeaseRequest>,
    ) -> Result<Response<pb::RevokeLeaseResponse>, Status> {
        let id = convert::lease_id_in("lease_id", &request.into_inner().lease_id)?;
        let revoked = self.quota.revoke(id).await?;
        if revoked {
            tracing::info!(lease_id = %id, "lease revoked by an operator");
        }
        Ok(Response::new(pb::RevokeLeaseResponse { revoked }))
    }

    async fn reload_config(
        &self,
        _request: Request<pb::ReloadConfigRequest>,
    ) -> Result<Response<pb::ReloadConfigResponse>, Status> {
        let version = (self.reload)().map_err(|e| {
            Status::from(EngineError::FailedPrecondition(format!(
                "reload failed, old config kept: {e}"
            )))
        })?;
        Ok(Response::new(pb::ReloadConfigResponse {
            config_version: version,
            resources: self.quota.rules().len() as u32,
        }))
    }
}
