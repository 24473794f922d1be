//! `quotad.v1.QuotaAdmin`: what operators do with grpcurl.

use std::sync::Arc;

use quotad_api::v1::{self as pb, quota_admin_server::QuotaAdmin};
use tonic::{Request, Response, Status};

use super::{convert, page};
use crate::{
    clock::{Clock, nanos},
    config::ConfigError,
    engine::{
        BreakerTarget, EngineError, LeaseQuery, Quota, ResourceUsage, Rule, Store, UsageQuery,
    },
};

/// Re-reads the config and swaps in its rules; returns the new config version.
pub type Reloader = Arc<dyn Fn() -> Result<u64, ConfigError> + Send + Sync>;

/// The QuotaAdmin implementation.
pub struct AdminGrpc<S: Store> {
    quota: Arc<Quota<S>>,
    reload: Reloader,
    /// The identities in force (Explain may ask as one of them).
    auth: Option<Arc<crate::auth::Authenticator>>,
}

impl<S: Store> std::fmt::Debug for AdminGrpc<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminGrpc").finish_non_exhaustive()
    }
}

impl<S: Store> AdminGrpc<S> {
    /// Serves admin operations on `quota`; `reload` backs ReloadConfig.
    pub fn new(quota: Arc<Quota<S>>, reload: Reloader) -> Self {
        Self {
            quota,
            reload,
            auth: None,
        }
    }

    /// Lets Explain ask as one of `auth`'s identities (its tenant binding and bypass).
    pub fn with_auth(mut self, auth: Arc<crate::auth::Authenticator>) -> Self {
        self.auth = Some(auth);
        self
    }

    /// `req` as the configured identity `name` would send it: its tenant bound, its bypass, its ownership.
    fn as_identity(&self, name: &str, req: &mut crate::engine::Acquire) -> Result<(), Status> {
        let settings = self.auth.as_ref().map(|a| a.settings()).unwrap_or_default();
        let Some(id) = settings.identities.iter().find(|i| i.name == name) else {
            // Identity names are at most 128 bytes: a longer one is not echoed back.
            let shown = if name.len() <= 128 {
                name
            } else {
                "(too long)"
            };
            return Err(Status::invalid_argument(format!(
                "identity: '{shown}' is not a configured identity"
            )));
        };
        let caller = crate::auth::Caller {
            identity: Some(id.name),
            tenant: id.tenant.clone(),
            tenant_descriptor: settings.tenant_descriptor.clone(),
            bypass: id.bypass,
        };
        caller
            .bind_tenant(&mut req.descriptors)
            .map_err(Status::invalid_argument)?;
        req.owner = caller.identity;
        req.bypass = caller.bypass;
        Ok(())
    }
}

fn optional(s: &str) -> Option<&str> {
    (!s.is_empty()).then_some(s)
}

fn limits(rule: &Rule) -> pb::ResourceLimits {
    pb::ResourceLimits {
        rate_limit: rule.resource.rate.map_or(0, |r| r.limit),
        rate_period: rule
            .resource
            .rate
            .map(|r| convert::duration_out(nanos(r.period))),
        burst: rule.resource.rate.map_or(0, |r| r.burst),
        rate_algorithm: rule
            .resource
            .rate
            .map_or_else(String::new, |r| r.algorithm.as_str().to_owned()),
        max_concurrent: rule.resource.max_in_flight.unwrap_or(0),
        partitions: rule
            .partitions
            .iter()
            .map(|p| p.descriptor.to_string())
            .collect(),
        overrides: overrides(rule, false),
        bypassed: overrides(rule, true),
        priority_classes: priority_classes(rule),
    }
}

/// A rule's overridden values, as "tenant=acme" (only those that bypass every limit: `bypass`).
pub fn overrides(rule: &Rule, bypass: bool) -> Vec<String> {
    rule.partitions
        .iter()
        .flat_map(|p| {
            p.overrides
                .iter()
                .filter(move |(_, s)| s.bypass || !bypass)
                .map(move |(v, _)| format!("{}={v}", p.descriptor))
        })
        .collect()
}

/// A rule's priority classes, highest first.
pub fn priority_classes(rule: &Rule) -> Vec<pb::PriorityClass> {
    let Some(p) = &rule.priority else {
        return Vec::new();
    };
    p.classes
        .iter()
        .zip(&p.reserve)
        .enumerate()
        .map(|(i, (name, reserve))| pb::PriorityClass {
            name: name.to_string(),
            reserve: f64::from(*reserve) / f64::from(crate::engine::priority::PPM),
            default: i == usize::from(p.default),
        })
        .collect()
}

fn resource_usage(u: &ResourceUsage, rule: &Rule, clock: &dyn Clock) -> pb::ResourceUsage {
    let configured = rule.headline_rate().map_or(0.0, |r| r.per_second());
    pb::ResourceUsage {
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
        let r = request.into_inner();
        let after = page::resource_after(&r.page_token)?;
        let query = UsageQuery {
            prefix: &r.prefix,
            rule: optional(&r.rule),
            after: after.as_deref(),
            limit: page::size(r.page_size)?,
            configured: true,
        };
        let rules = self.quota.rules();
        let usage = self.quota.usage_page(&query).await?;
        let clock = self.quota.clock();
        let mut resources: Vec<_> = usage
            .resources
            .iter()
            .filter_map(|u| {
                Some(resource_usage(
                    u,
                    rules.resolve(&u.resource)?,
                    clock.as_ref(),
                ))
            })
            .collect();
        let fit = page::fitting(resources.iter().map(prost::Message::encoded_len));
        let more = usage.more || fit < resources.len();
        resources.truncate(fit);
        let next_page_token = match resources.last() {
            Some(last) if more => page::resource_token(&last.resource),
            _ => String::new(),
        };
        Ok(Response::new(pb::ListResourcesResponse {
            resources,
            live_keys: usage.live_keys,
            max_live_keys: rules.capacity.max_live_keys as u64,
            live_leases: usage.live_leases,
            max_leases: rules.capacity.max_leases as u64,
            config_version: self.quota.config_version(),
            next_page_token,
        }))
    }

    async fn explain(
        &self,
        request: Request<pb::ExplainRequest>,
    ) -> Result<Response<pb::ExplainResponse>, Status> {
        let r = request.into_inner();
        let mut req = crate::engine::Acquire::try_from(pb::AcquireRequest {
            resource: r.resource,
            descriptors: r.descriptors,
            permits: r.permits,
            priority: r.priority,
            ..Default::default()
        })?;
        if !r.identity.is_empty() {
            self.as_identity(&r.identity, &mut req)?;
        }
        let e = self.quota.explain(&req).await?;
        let clock = self.quota.clock();
        Ok(Response::new(convert::explain_out(
            e,
            clock.as_ref(),
            self.quota.config_version(),
        )))
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
        let query = LeaseQuery {
            resource: optional(&r.resource),
            prefix: &r.prefix,
            rule: optional(&r.rule),
            after: page::lease_after(&r.page_token)?,
            limit: page::size(r.page_size)?,
        };
        let (views, more) = self.quota.lease_page(&query).await?;
        let clock = self.quota.clock();
        let mut leases: Vec<_> = views
            .iter()
            .map(|l| pb::LeaseInfo {
                lease_id: l.lease_id.to_string(),
                resource: l.resource.to_string(),
                descriptors: l.descriptors.iter().cloned().collect(),
                permits: l.permits,
                expires_at: Some(convert::timestamp_out(clock.wall(l.expires_at))),
                client_id: l.client_id.clone().unwrap_or_default(),
                probe: l.probe,
                owner: l.owner.unwrap_or_default().to_owned(),
            })
            .collect();
        let fit = page::fitting(leases.iter().map(prost::Message::encoded_len));
        let truncated = more || fit < leases.len();
        leases.truncate(fit);
        let next_page_token = match views.get(fit.wrapping_sub(1)) {
            Some(last) if truncated => page::lease_token(last.cursor),
            _ => String::new(),
        };
        Ok(Response::new(pb::ListLeasesResponse {
            leases,
            truncated,
            next_page_token,
        }))
    }

    async fn reset_buckets(
        &self,
        request: Request<pb::ResetBucketsRequest>,
    ) -> Result<Response<pb::ResetBucketsResponse>, Status> {
        let r = request.into_inner();
        let levels_refilled = self
            .quota
            .refill(&target(r.resource, r.descriptors))
            .await?;
        Ok(Response::new(pb::ResetBucketsResponse { levels_refilled }))
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
