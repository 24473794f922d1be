//! One call of the chosen kind, over a pool of HTTP/2 connections picked round-robin by call number.

use quotad_api::v1::{self as pb, quota_service_client::QuotaServiceClient};
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

use crate::args::{Args, CallKind};

/// What a call came back with: a decision (or `serving` for a health check), or an error status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Answer {
    Decision(&'static str),
    /// The gRPC status code, as a number (so answers sort).
    Error(i32),
}

fn decision(d: pb::Decision) -> &'static str {
    match d {
        pb::Decision::Granted => "granted",
        pb::Decision::RateLimited => "rate_limited",
        pb::Decision::ConcurrencyLimited => "concurrency_limited",
        pb::Decision::CircuitOpen => "circuit_open",
        pb::Decision::Paused => "paused",
        pb::Decision::Unspecified => "unspecified",
    }
}

/// Makes calls. See the module docs.
pub struct Caller {
    channels: Vec<Channel>,
    kind: CallKind,
    resource: String,
    descriptor: String,
    fixed: Vec<(String, String)>,
    /// Descriptor values, built once (`--keys`).
    values: Vec<String>,
    permits: u64,
    /// Priority classes, taken in turn (`--priority`).
    priorities: Vec<String>,
    /// With `--request-ids`, what makes this run's ids its own (the process and its start).
    request_ids: Option<String>,
}

impl Caller {
    /// Opens `--connections` connections to `--target`.
    pub async fn connect(args: &Args) -> Result<Self, tonic::transport::Error> {
        let endpoint = Endpoint::from_shared(args.target.clone())?.tcp_nodelay(true);
        let mut channels = Vec::with_capacity(args.connections);
        for _ in 0..args.connections {
            channels.push(endpoint.connect().await?);
        }
        Ok(Self {
            channels,
            kind: args.call,
            resource: args.resource.clone(),
            descriptor: args.descriptor.clone(),
            fixed: args.fixed.clone(),
            values: (0..args.keys).map(|k| format!("k{k}")).collect(),
            permits: args.permits,
            priorities: args.priorities.clone(),
            request_ids: args.request_ids.then(|| {
                let started = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos());
                format!("bench-{}-{started}", std::process::id())
            }),
        })
    }

    fn channel(&self, n: u64) -> Channel {
        self.channels[(n % self.channels.len() as u64) as usize].clone()
    }

    /// Call number `n`'s priority class (empty: the resource's default).
    fn priority(&self, n: u64) -> String {
        if self.priorities.is_empty() {
            return String::new();
        }
        self.priorities[(n % self.priorities.len() as u64) as usize].clone()
    }

    /// Call number `n` (which picks the connection and the descriptor value).
    pub async fn call(&self, n: u64) -> Answer {
        let channel = self.channel(n);
        match self.kind {
            CallKind::Health => match HealthClient::new(channel)
                .check(HealthCheckRequest {
                    service: String::new(),
                })
                .await
            {
                Ok(_) => Answer::Decision("serving"),
                Err(s) => Answer::Error(s.code() as i32),
            },
            CallKind::Acquire | CallKind::AcquireRelease => {
                let mut client = QuotaServiceClient::new(channel);
                let mut descriptors: std::collections::HashMap<String, String> =
                    self.fixed.iter().cloned().collect();
                if !self.values.is_empty() {
                    let v = &self.values[(n % self.values.len() as u64) as usize];
                    descriptors.insert(self.descriptor.clone(), v.clone());
                }
                let r = match client
                    .acquire(pb::AcquireRequest {
                        resource: self.resource.clone(),
                        descriptors,
                        permits: self.permits,
                        priority: self.priority(n),
                        request_id: self
                            .request_ids
                            .as_ref()
                            .map_or_else(String::new, |run| format!("{run}-{n}")),
                        ..Default::default()
                    })
                    .await
                {
                    Ok(r) => r.into_inner(),
                    Err(s) => return Answer::Error(s.code() as i32),
                };
                if self.kind == CallKind::AcquireRelease && r.granted {
                    let released = client
                        .release(pb::ReleaseRequest {
                            lease_id: r.lease_id.clone(),
                            outcome: pb::Outcome::Success as i32,
                            used_permits: None,
                        })
                        .await;
                    if let Err(s) = released {
                        return Answer::Error(s.code() as i32);
                    }
                }
                Answer::Decision(decision(r.decision()))
            }
        }
    }
}
