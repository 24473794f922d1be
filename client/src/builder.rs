//! [`ClientBuilder`]: endpoint, timeouts, identity, default lease TTL, retry policy, and what to do when
//! quotad is unreachable.

use std::{sync::Arc, time::Duration};

use quotad_api::v1::quota_service_client::QuotaServiceClient;
use tonic::{body::Body, transport::Endpoint};

use crate::{
    Client, Error, RetryBudget, RetryPolicy,
    client::{Inner, Settings},
    fallback::Unreachable,
    transport::{BoxError, boxed},
};

/// Builds a [`Client`].
///
/// ```no_run
/// # async fn demo() -> Result<(), quotad_client::Error> {
/// use std::time::Duration;
/// use quotad_client::{Client, Jitter, LocalLimits, RetryPolicy, Unreachable};
/// let client = Client::builder("http://127.0.0.1:50051")
///     .client_id("worker-7")
///     .call_timeout(Duration::from_secs(2))
///     .retry_policy(RetryPolicy { max_attempts: 8, jitter: Jitter::Decorrelated, ..RetryPolicy::default() })
///     .on_unreachable(Unreachable::LocalFallback(LocalLimits { rate_per_second: 1.0, burst: 2, max_concurrent: 2 }))
///     .connect()
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct ClientBuilder {
    endpoint: String,
    connect_timeout: Duration,
    budget: (f64, f64),
    settings: Settings,
}

impl ClientBuilder {
    /// A builder for `endpoint` (`http://host:port`) with defaults: 5 s connect timeout, 5 s per call,
    /// [`RetryPolicy::default`], fail closed.
    pub fn new(endpoint: impl Into<String>) -> Self {
        Self {
            endpoint: endpoint.into(),
            connect_timeout: Duration::from_secs(5),
            budget: (10.0, 0.1),
            settings: Settings {
                call_timeout: Duration::from_secs(5),
                client_id: String::new(),
                default_lease_ttl: None,
                policy: RetryPolicy::default(),
                unreachable: Unreachable::FailClosed,
            },
        }
    }

    /// Timeout for establishing the connection.
    pub fn connect_timeout(mut self, d: Duration) -> Self {
        self.connect_timeout = d;
        self
    }

    /// Timeout for each call attempt (a request held by the server's `max_wait` gets that much longer).
    pub fn call_timeout(mut self, d: Duration) -> Self {
        self.settings.call_timeout = d;
        self
    }

    /// Identifies this client in quotad's logs and traces.
    pub fn client_id(mut self, id: impl Into<String>) -> Self {
        self.settings.client_id = id.into();
        self
    }

    /// Lease TTL when an acquire gives none (default: the server's per-resource default).
    pub fn default_lease_ttl(mut self, ttl: Duration) -> Self {
        self.settings.default_lease_ttl = Some(ttl);
        self
    }

    /// The retry policy for every call.
    pub fn retry_policy(mut self, policy: RetryPolicy) -> Self {
        self.settings.policy = policy;
        self
    }

    /// The retry budget: `max_tokens` (default 10), each retryable failure costs 1, each answer refills
    /// `token_ratio` (default 0.1); retries stop while at most half the tokens are left.
    pub fn retry_budget(mut self, max_tokens: f64, token_ratio: f64) -> Self {
        self.budget = (max_tokens, token_ratio);
        self
    }

    /// What to do when quotad is unreachable beyond the retry policy.
    pub fn on_unreachable(mut self, policy: Unreachable) -> Self {
        self.settings.unreachable = policy;
        self
    }

    fn endpoint(&self) -> Result<Endpoint, Error> {
        Endpoint::from_shared(self.endpoint.clone())
            .map(|e| e.connect_timeout(self.connect_timeout).tcp_nodelay(true))
            .map_err(|e| Error::Config(format!("endpoint '{}': {e}", self.endpoint)))
    }

    /// Connects now; fails if quotad cannot be reached (use [`connect_lazy`](Self::connect_lazy) to start
    /// even when it is down, e.g. with a fail-open or local-fallback policy).
    pub async fn connect(self) -> Result<Client, Error> {
        let channel = self
            .endpoint()?
            .connect()
            .await
            .map_err(|e| Error::Unavailable(e.to_string()))?;
        Ok(self.build(channel))
    }

    /// Connects on first use (and reconnects after failures).
    pub fn connect_lazy(self) -> Result<Client, Error> {
        let channel = self.endpoint()?.connect_lazy();
        Ok(self.build(channel))
    }

    /// Builds over any tower service that speaks gRPC over HTTP/2 (a layered channel, a fault injector).
    pub fn build<S>(self, service: S) -> Client
    where
        S: tower::Service<http::Request<Body>, Response = http::Response<Body>>
            + Clone
            + Send
            + Sync
            + 'static,
        S::Error: Into<BoxError>,
        S::Future: Send + 'static,
    {
        let stub = QuotaServiceClient::new(boxed(service));
        let budget = RetryBudget::new(self.budget.0, self.budget.1);
        Client {
            inner: Arc::new(Inner::new(stub, self.settings, budget)),
        }
    }
}
