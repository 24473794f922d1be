//! [`ClientBuilder`]: endpoint, timeouts, identity, default lease TTL, retry policy, and what to do when
//! quotad is unreachable.

use std::{sync::Arc, time::Duration};

use quotad_api::v1::quota_service_client::QuotaServiceClient;
use tonic::{
    body::Body,
    transport::{Certificate, ClientTlsConfig, Endpoint, Identity},
};

use crate::{
    Client, Error, RetryBudget, RetryPolicy,
    client::{Inner, Settings},
    fallback::Unreachable,
    transport::{GrpcService, Transport, boxed},
};

/// Cancelled calls whose streams HTTP/2 remembers. h2 remembers 10 by default and treats an answer for a
/// forgotten one as the server's error; after 1,024 of those it closes the whole connection. A worker that
/// cancels calls (timeouts, callers giving up) at a few thousand a second forgets a stream within
/// milliseconds, so an answer a little late would cost every call on the connection.
const RESET_STREAMS_REMEMBERED: usize = 4096;

/// The connection's receive window. h2 also budgets the framing overhead of small DATA frames it holds
/// (every answer is one) at half this window, and closes the connection itself when the budget runs out;
/// answers to cancelled calls can hold part of it for a while, so a worker cancelling thousands of calls
/// needs room (16 MiB gives 8 MiB, some 36,000 frames).
const CONNECTION_WINDOW: u32 = 16 << 20;

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
    tls: Option<Tls>,
    token: Option<Secret>,
}

/// The TLS settings, whose `Debug` leaves out the private key tonic's own would print.
#[derive(Clone, Default)]
struct Tls(ClientTlsConfig);

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tls(..)")
    }
}

/// A bearer token, never printed (`Debug` shows that one is set, not what it is).
#[derive(Clone)]
struct Secret(http::HeaderValue);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
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
            tls: None,
            token: None,
        }
    }

    /// Sends `authorization: Bearer <token>` on every call, identifying this client to a quotad with
    /// `[auth]` identities. Use it over TLS: a token on a plaintext connection can be read on the wire.
    pub fn bearer_token(mut self, token: impl AsRef<str>) -> Result<Self, Error> {
        let mut value = http::HeaderValue::try_from(format!("Bearer {}", token.as_ref()))
            .map_err(|_| Error::Config("bearer_token: must be visible ASCII".into()))?;
        value.set_sensitive(true);
        self.token = Some(Secret(value));
        Ok(self)
    }

    /// Speaks TLS, trusting the CA certificates in `ca_pem` (PEM) for the server's certificate. The
    /// endpoint must be `https://`.
    pub fn tls_ca_certificate(mut self, ca_pem: impl AsRef<[u8]>) -> Self {
        let Tls(tls) = self.tls.take().unwrap_or_default();
        self.tls = Some(Tls(tls.ca_certificate(Certificate::from_pem(ca_pem))));
        self
    }

    /// Presents this client certificate and key (PEM) to a quotad that requires client certificates
    /// (mTLS); the certificate's name is the client's identity there.
    pub fn tls_client_certificate(
        mut self,
        cert_pem: impl AsRef<[u8]>,
        key_pem: impl AsRef<[u8]>,
    ) -> Self {
        let Tls(tls) = self.tls.take().unwrap_or_default();
        self.tls = Some(Tls(tls.identity(Identity::from_pem(cert_pem, key_pem))));
        self
    }

    /// The name the server's certificate must carry, when it is not the endpoint's host (e.g. connecting
    /// to `https://127.0.0.1:50051` with a certificate for `quotad.internal`).
    pub fn tls_domain(mut self, name: impl Into<String>) -> Self {
        let Tls(tls) = self.tls.take().unwrap_or_default();
        self.tls = Some(Tls(tls.domain_name(name)));
        self
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

    /// The channel's endpoint, with TLS when configured.
    fn endpoint(&self) -> Result<Endpoint, Error> {
        let endpoint = Endpoint::from_shared(self.endpoint.clone())
            .map(|e| {
                e.connect_timeout(self.connect_timeout)
                    .tcp_nodelay(true)
                    .http2_max_concurrent_reset_streams(RESET_STREAMS_REMEMBERED)
                    .initial_connection_window_size(CONNECTION_WINDOW)
            })
            .map_err(|e| Error::Config(format!("endpoint '{}': {e}", self.endpoint)))?;
        match &self.tls {
            None => Ok(endpoint),
            Some(_) if !self.endpoint.starts_with("https://") => Err(Error::Config(format!(
                "endpoint '{}': TLS options need an https:// endpoint",
                self.endpoint
            ))),
            Some(Tls(tls)) => endpoint
                .tls_config(tls.clone())
                .map_err(|e| Error::Config(format!("tls: {e}"))),
        }
    }

    /// Connects now; fails if quotad cannot be reached (use [`connect_lazy`](Self::connect_lazy) to start
    /// even when it is down, e.g. with a fail-open or local-fallback policy).
    pub async fn connect(self) -> Result<Client, Error> {
        let endpoint = self.endpoint()?;
        let unavailable = |e: tonic::transport::Error| Error::Unavailable(e.to_string());
        let acquire = endpoint.connect().await.map_err(unavailable)?;
        let control = endpoint.connect().await.map_err(unavailable)?;
        Ok(self.build_lanes(acquire, control))
    }

    /// Connects on first use (and reconnects after failures).
    pub fn connect_lazy(self) -> Result<Client, Error> {
        let endpoint = self.endpoint()?;
        let (acquire, control) = (endpoint.connect_lazy(), endpoint.connect_lazy());
        Ok(self.build_lanes(acquire, control))
    }

    /// Builds over any tower service that speaks gRPC over HTTP/2 (a layered channel, a fault injector).
    /// Every call goes through `service`; with `max_wait` and more acquires in flight than one connection's
    /// stream limit, give releases a connection of their own with [`build_lanes`](Self::build_lanes), as
    /// [`connect`](Self::connect) does.
    pub fn build<S: GrpcService>(self, service: S) -> Client {
        self.build_lanes(service.clone(), service)
    }

    /// Builds with acquires on `acquire` and every other call on `control` (two connections, so
    /// acquires the server holds under `max_wait` never block the releases that would free them).
    pub fn build_lanes<S: GrpcService>(self, acquire: S, control: S) -> Client {
        let stub = QuotaServiceClient::new(self.transport(acquire));
        let control = QuotaServiceClient::new(self.transport(control));
        let budget = RetryBudget::new(self.budget.0, self.budget.1);
        Client {
            inner: Arc::new(Inner::new(stub, control, self.settings, budget)),
        }
    }

    /// Boxes `service`, adding the bearer token if one is set.
    fn transport<S: GrpcService>(&self, service: S) -> Transport {
        match self.token.clone() {
            None => boxed(service),
            Some(Secret(token)) => boxed(tower::util::MapRequest::new(
                service,
                move |mut request: http::Request<Body>| {
                    request
                        .headers_mut()
                        .insert(http::header::AUTHORIZATION, token.clone());
                    request
                },
            )),
        }
    }
}
