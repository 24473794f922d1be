//! [`Client`]: acquire permits, report throttles, read breakers; every call wrapped in retry-with-jitter.
//! Every retry of one logical acquire carries the same `request_id`, so a reply lost on the wire never
//! charges twice.

use std::{
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, SystemTime},
};

use quotad_api::v1::{self as pb, quota_service_client::QuotaServiceClient};
use tokio::time::Instant;
use tonic::Status;

use crate::{
    AcquireOptions, CircuitStatus, Decision, Error, Outcome, Permit, ThrottleKind, ThrottleReport,
    fallback::{LocalLimiters, Unreachable},
    progress::{Progress, ProgressEvent, RetryReason},
    retry::{Backoff, RetryBudget, RetryPolicy},
    trace_context,
    transport::Transport,
    types,
};

/// Settings fixed when the client is built.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub call_timeout: Duration,
    pub client_id: String,
    pub default_lease_ttl: Option<Duration>,
    pub policy: RetryPolicy,
    pub unreachable: Unreachable,
}

/// State shared by a client and its permits.
#[derive(Debug)]
pub(crate) struct Inner {
    stub: QuotaServiceClient<Transport>,
    /// Release, Renew, ReportThrottle and GetCircuitState: a connection of their own when the client
    /// connects itself, so acquires the server holds under `max_wait` (as many as the connection's stream
    /// limit) never make the releases that would free them wait behind them.
    control: QuotaServiceClient<Transport>,
    pub(crate) settings: Settings,
    budget: RetryBudget,
    local_limits: LocalLimiters,
    /// Watched breakers and pauses, and whether quotad was just found unreachable (crate::watch).
    pub(crate) local: crate::watch::Local,
    fail_open: AtomicU64,
    local_grants: AtomicU64,
}

fn new_request_id() -> String {
    format!("{:032x}", fastrand::u128(..))
}

fn to_pb(d: Duration) -> prost_types::Duration {
    prost_types::Duration::try_from(d).unwrap_or(prost_types::Duration {
        seconds: i64::MAX,
        nanos: 0,
    })
}

/// A deadline for one logical call: the policy's, tightened by `max_wait` if given.
/// Where a call stands in its retry policy: attempts are counted, and the policy's deadline measured, across
/// the whole logical call (for `run`, its acquires and its throttle retries together), so the progress hook
/// shows one sequence "attempt 1/5, retry 2/5, ...".
pub(crate) struct Tries {
    pub(crate) number: u32,
    pub(crate) start: Instant,
}

impl Tries {
    pub(crate) fn new() -> Self {
        Self {
            number: 1,
            start: Instant::now(),
        }
    }
}

fn deadline(tries: &Tries, policy: &RetryPolicy, max_wait: Option<Duration>) -> Option<Instant> {
    let by_policy = policy.deadline.map(|d| tries.start + d);
    let by_wait = max_wait.map(|d| Instant::now() + d);
    match (by_policy, by_wait) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Which connection a call goes on, and how long it may take.
#[derive(Clone, Copy)]
enum Lane {
    /// An acquire the server may hold for `held` (its `max_wait`).
    Acquire { held: Duration },
    /// Everything else.
    Control,
}

fn fits(deadline: Option<Instant>, delay: Duration) -> bool {
    deadline.is_none_or(|d| Instant::now() + delay <= d)
}

impl Inner {
    /// The stub on the connection for everything but acquires.
    pub(crate) fn control(&self) -> QuotaServiceClient<Transport> {
        self.control.clone()
    }

    pub(crate) fn new(
        stub: QuotaServiceClient<Transport>,
        control: QuotaServiceClient<Transport>,
        settings: Settings,
        budget: RetryBudget,
    ) -> Self {
        Self {
            stub,
            control,
            settings,
            budget,
            local_limits: LocalLimiters::default(),
            local: crate::watch::Local::default(),
            fail_open: AtomicU64::new(0),
            local_grants: AtomicU64::new(0),
        }
    }

    /// One attempt on `lane`, bounded by the call timeout (plus, for an acquire, the `max_wait` the server
    /// may hold it).
    async fn once<T, F, Fut>(&self, lane: Lane, call: &mut F) -> Result<T, Error>
    where
        F: FnMut(QuotaServiceClient<Transport>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let (stub, timeout) = match lane {
            Lane::Acquire { held } => (&self.stub, self.settings.call_timeout.saturating_add(held)),
            Lane::Control => (&self.control, self.settings.call_timeout),
        };
        if let Some(left) = self.local.down() {
            // Found unreachable a moment ago: do not make every caller wait out its own connect.
            return Err(Error::Unavailable(format!(
                "quotad was unreachable a moment ago; not trying again for {left:?}"
            )));
        }
        match tokio::time::timeout(timeout, call(stub.clone())).await {
            Ok(Ok(r)) => {
                self.budget.on_success();
                self.local.mark_up();
                Ok(r.into_inner())
            }
            Ok(Err(status)) => {
                let unreachable = status.code() == tonic::Code::Unavailable
                    && status.metadata().get("content-type").is_none();
                let e = Error::from(status);
                if e.is_retryable() {
                    self.budget.on_failure();
                }
                if unreachable {
                    self.local.mark_down();
                }
                Err(e)
            }
            Err(_) => {
                self.budget.on_failure();
                self.local.mark_down();
                Err(Error::Unavailable(format!("no answer within {timeout:?}")))
            }
        }
    }

    /// An idempotent call, retried on transport errors within the policy and the retry budget.
    async fn idempotent<T, F, Fut>(&self, mut call: F) -> Result<T, Error>
    where
        F: FnMut(QuotaServiceClient<Transport>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let policy = &self.settings.policy;
        let deadline = deadline(&Tries::new(), policy, None);
        let mut backoff = Backoff::new(policy);
        let mut attempt = 1;
        loop {
            match self.once(Lane::Control, &mut call).await {
                Err(e)
                    if e.is_retryable()
                        && attempt < policy.max_attempts
                        && self.budget.allows_retry() =>
                {
                    let delay = backoff.next_delay();
                    if !fits(deadline, delay) {
                        return Err(e);
                    }
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    pub(crate) async fn release(
        &self,
        lease_id: &str,
        outcome: Outcome,
        used: Option<u64>,
    ) -> Result<(), Error> {
        let req = pb::ReleaseRequest {
            lease_id: lease_id.to_owned(),
            outcome: pb::Outcome::from(outcome).into(),
            used_permits: used,
        };
        let r = self.idempotent(|mut stub| {
            let req = req.clone();
            async move { stub.release(trace_context::request(req)).await }
        });
        let r = r.await?;
        if !r.released && r.reason != "already_released" {
            tracing::debug!(lease_id, reason = %r.reason, "release found no live lease");
        }
        Ok(())
    }

    pub(crate) async fn renew(
        &self,
        lease_id: &str,
        ttl: Option<Duration>,
    ) -> Result<Option<SystemTime>, Error> {
        let req = pb::RenewRequest {
            lease_id: lease_id.to_owned(),
            lease_ttl: ttl.map(to_pb),
        };
        let r = self.idempotent(|mut stub| {
            let req = req.clone();
            async move { stub.renew(trace_context::request(req)).await }
        });
        Ok(types::timestamp(r.await?.lease_expires_at))
    }
}

/// A quotad client. Cheap to clone; clones share one connection, retry budget and fallback state.
#[derive(Debug, Clone)]
pub struct Client {
    pub(crate) inner: Arc<Inner>,
}

impl Client {
    /// Starts building a client for `endpoint`, e.g. `http://127.0.0.1:50051`.
    pub fn builder(endpoint: impl Into<String>) -> crate::ClientBuilder {
        crate::ClientBuilder::new(endpoint)
    }

    /// The generated stub, for calls this client does not wrap.
    pub fn raw(&self) -> QuotaServiceClient<Transport> {
        self.inner.stub.clone()
    }

    /// Permits granted without quotad (fail-open) so far.
    pub fn fail_open_count(&self) -> u64 {
        self.inner.fail_open.load(Ordering::Relaxed)
    }

    /// Permits granted by the local fallback limiter so far.
    pub fn local_fallback_count(&self) -> u64 {
        self.inner.local_grants.load(Ordering::Relaxed)
    }

    /// Acquires a permit on `resource`, waiting out denials (at least the server's `retry_after`, plus
    /// jitter) and retrying transport errors, within the retry policy. Gives up with [`Error::Denied`] or,
    /// when quotad is unreachable, follows the [`Unreachable`] policy.
    pub async fn acquire(&self, resource: &str, options: AcquireOptions) -> Result<Permit, Error> {
        self.acquire_observed(
            resource,
            &options,
            &self.inner.settings.policy,
            None,
            &mut Tries::new(),
        )
        .await
    }

    /// [`acquire`](Self::acquire) under `policy`, telling `progress` of each attempt.
    pub(crate) async fn acquire_observed(
        &self,
        resource: &str,
        options: &AcquireOptions,
        policy: &RetryPolicy,
        progress: Option<&(dyn Fn(&Progress) + Send + Sync)>,
        tries: &mut Tries,
    ) -> Result<Permit, Error> {
        let request = self.acquire_request(resource, options);
        let deadline = deadline(tries, policy, options.max_wait);
        let mut backoff = Backoff::new(policy);
        let report = |attempt: u32, event: ProgressEvent| {
            if let Some(hook) = progress {
                hook(&Progress {
                    resource: resource.to_owned(),
                    attempt,
                    max_attempts: policy.max_attempts,
                    event,
                });
            }
        };
        loop {
            let attempt = tries.number;
            let last = attempt >= policy.max_attempts;
            let (delay, reason) = match self.acquire_attempt(resource, &request, options).await {
                Ok(r) if r.granted => {
                    let lease_id = Some(r.lease_id.clone());
                    report(attempt, ProgressEvent::Acquired { lease_id });
                    return Ok(self.permit(resource, r));
                }
                Ok(r) => {
                    let (reason, denied) = denial(resource, r);
                    let delay = backoff.after(retry_after_of(&denied));
                    if last || !fits(deadline, delay) {
                        report(attempt, ProgressEvent::GaveUp { reason });
                        return Err(denied);
                    }
                    (delay, reason)
                }
                Err(e) if e.is_retryable() => {
                    let reason = RetryReason::Unavailable {
                        error: e.to_string(),
                    };
                    let delay = backoff.next_delay();
                    if last || !self.inner.budget.allows_retry() || !fits(deadline, delay) {
                        report(attempt, ProgressEvent::GaveUp { reason });
                        return self.unreachable(resource, options, e, deadline).await;
                    }
                    (delay, reason)
                }
                Err(e) => return Err(e),
            };
            report(attempt, ProgressEvent::Retrying { delay, reason });
            tokio::time::sleep(delay).await;
            tries.number += 1;
        }
    }

    /// One logical acquire's request, sent as it is on every attempt.
    fn acquire_request(&self, resource: &str, options: &AcquireOptions) -> pb::AcquireRequest {
        let settings = &self.inner.settings;
        pb::AcquireRequest {
            resource: resource.to_owned(),
            descriptors: options.descriptors.iter().cloned().collect(),
            permits: options.permits.max(1),
            lease_ttl: options.lease_ttl.or(settings.default_lease_ttl).map(to_pb),
            max_wait: options.max_wait.map(to_pb),
            // One id for every retry of this logical acquire: a lost reply is replayed, not charged again.
            request_id: options.request_id.clone().unwrap_or_else(new_request_id),
            client_id: settings.client_id.clone(),
            priority: options.priority.clone().unwrap_or_default(),
        }
    }

    /// One attempt: a watched breaker that is OPEN, or a watched pause, answers here without a round trip.
    async fn acquire_attempt(
        &self,
        resource: &str,
        request: &pb::AcquireRequest,
        options: &AcquireOptions,
    ) -> Result<pb::AcquireResponse, Error> {
        if let Some(refused) = self.inner.local.refusal(resource) {
            return Ok(refused);
        }
        let mut call = |mut stub: QuotaServiceClient<Transport>| {
            let req = request.clone();
            async move { stub.acquire(trace_context::request(req)).await }
        };
        let held = options.max_wait.unwrap_or_default();
        self.inner.once(Lane::Acquire { held }, &mut call).await
    }

    /// A granted answer as the caller's permit.
    fn permit(&self, resource: &str, r: pb::AcquireResponse) -> Permit {
        Permit::lease(self.inner.clone(), resource, r)
    }

    /// quotad is unreachable beyond the policy: follow the configured [`Unreachable`] policy.
    async fn unreachable(
        &self,
        resource: &str,
        options: &AcquireOptions,
        error: Error,
        deadline: Option<Instant>,
    ) -> Result<Permit, Error> {
        let inner = &self.inner;
        match inner.settings.unreachable {
            Unreachable::FailClosed => Err(error),
            Unreachable::FailOpen => {
                let n = inner.fail_open.fetch_add(1, Ordering::Relaxed) + 1;
                tracing::warn!(resource, error = %error, fail_open_total = n, "quotad unreachable: failing open");
                Ok(Permit::local(inner.clone(), resource, None))
            }
            Unreachable::LocalFallback(limits) => {
                let limiter = inner.local_limits.get(resource, limits);
                loop {
                    match limiter.try_acquire(options.permits.max(1)) {
                        Ok(slot) => {
                            let n = inner.local_grants.fetch_add(1, Ordering::Relaxed) + 1;
                            tracing::warn!(resource, error = %error, local_total = n, "quotad unreachable: local fallback grant");
                            return Ok(Permit::local(inner.clone(), resource, Some(slot)));
                        }
                        Err(wait) if fits(deadline, wait) => tokio::time::sleep(wait).await,
                        Err(wait) => {
                            return Err(Error::Denied {
                                resource: resource.to_owned(),
                                decision: Decision::LocallyLimited,
                                retry_after: wait,
                                denied_by: "local_fallback".to_owned(),
                            });
                        }
                    }
                }
            }
        }
    }

    /// Tells quotad the downstream throttled or failed a call, so the whole fleet backs off: counts a
    /// breaker failure, lowers the adaptive rate (THROTTLED), and pauses the resource until `retry_after`.
    pub async fn report_throttle(
        &self,
        resource: &str,
        kind: ThrottleKind,
        retry_after: Option<Duration>,
    ) -> Result<ThrottleReport, Error> {
        self.report(resource, &[], kind, retry_after, None, String::new())
            .await
    }

    /// Like [`report_throttle`](Self::report_throttle), for the call made under `permit`: its failure is
    /// counted once even if the permit is also released as THROTTLED, and the report may be retried safely.
    pub async fn report_throttle_for(
        &self,
        permit: &Permit,
        kind: ThrottleKind,
        retry_after: Option<Duration>,
        message: impl Into<String>,
    ) -> Result<ThrottleReport, Error> {
        self.report(
            permit.resource(),
            &[],
            kind,
            retry_after,
            permit.lease_id(),
            message.into(),
        )
        .await
    }

    pub(crate) async fn report(
        &self,
        resource: &str,
        descriptors: &[(String, String)],
        kind: ThrottleKind,
        retry_after: Option<Duration>,
        lease_id: Option<&str>,
        message: String,
    ) -> Result<ThrottleReport, Error> {
        let req = pb::ReportThrottleRequest {
            resource: resource.to_owned(),
            descriptors: descriptors.iter().cloned().collect(),
            kind: pb::ThrottleKind::from(kind).into(),
            retry_after: retry_after.map(to_pb),
            lease_id: lease_id.unwrap_or_default().to_owned(),
            message,
            client_id: self.inner.settings.client_id.clone(),
        };
        let mut call = |mut stub: QuotaServiceClient<Transport>| {
            let req = req.clone();
            async move { stub.report_throttle(trace_context::request(req)).await }
        };
        // With a lease id the server counts the failure once, so retrying is safe; without one, a retry
        // after a lost reply could count it twice, so it is sent once.
        let r = if lease_id.is_some() {
            self.inner.idempotent(call).await
        } else {
            self.inner.once(Lane::Control, &mut call).await
        };
        r.map(ThrottleReport::from)
    }

    /// Reads the resource's shared circuit breaker, adaptive rate and pause.
    pub async fn circuit_state(&self, resource: &str) -> Result<CircuitStatus, Error> {
        let req = pb::GetCircuitStateRequest {
            resource: resource.to_owned(),
            ..Default::default()
        };
        let r = self.inner.idempotent(|mut stub| {
            let req = req.clone();
            async move { stub.get_circuit_state(trace_context::request(req)).await }
        });
        r.await.map(CircuitStatus::from)
    }
}

/// A denial: why, for the progress hook, and the error it is if no retry follows.
fn denial(resource: &str, r: pb::AcquireResponse) -> (RetryReason, Error) {
    let decision = Decision::from_wire(r.decision);
    let reason = RetryReason::Denied {
        decision,
        denied_by: r.denied_by.clone(),
    };
    let denied = Error::Denied {
        resource: resource.to_owned(),
        decision,
        retry_after: types::duration(r.retry_after).unwrap_or_default(),
        denied_by: r.denied_by,
    };
    (reason, denied)
}

/// The `retry_after` of a denial (zero for any other error).
fn retry_after_of(e: &Error) -> Duration {
    match e {
        Error::Denied { retry_after, .. } => *retry_after,
        _ => Duration::ZERO,
    }
}
