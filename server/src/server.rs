//! Serving: QuotaService, QuotaAdmin, grpc.health.v1 and server reflection (v1 and v1alpha) on one
//! listener, plus the sweeper, until a shutdown signal; then health goes NOT_SERVING, new connections stop,
//! and in-flight calls get `shutdown_grace` to finish.

use std::{future::Future, path::PathBuf, sync::Arc, time::Duration};

use quotad_api::v1::{
    quota_admin_server::QuotaAdminServer, quota_service_server::QuotaServiceServer,
};
use tokio::net::TcpListener;
use tonic::{
    service::interceptor::InterceptedService,
    transport::{Server, server::TcpIncoming},
};

use crate::{
    auth::{AuthInterceptor, Authenticator, Service},
    clock::Clock,
    config::{self, ConfigError, Settings},
    engine::Quota,
    grpc::{AdminGrpc, QuotaGrpc, admin_service::Reloader},
    metrics::{self, Metrics},
    sweeper,
};

/// Why the server stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The transport failed.
    #[error("gRPC transport: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// Reflection could not be built from the descriptor set.
    #[error("reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// The metrics endpoint could not listen.
    #[error(
        "cannot listen for metrics on {addr}: {source} (set metrics.listen, or metrics.enabled = false)"
    )]
    MetricsListen {
        /// The configured address.
        addr: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// A configured quotad: the engine plus where its config came from (for reloads).
pub struct Quotad {
    quota: Arc<Quota>,
    auth: Arc<Authenticator>,
    metrics: Option<Arc<Metrics>>,
    settings: Settings,
    config_path: Option<PathBuf>,
}

impl std::fmt::Debug for Quotad {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Quotad")
            .field("config_path", &self.config_path)
            .finish_non_exhaustive()
    }
}

impl Quotad {
    /// A server for `settings` (read from `config_path`, if any, for reloads), deciding at `clock`.
    pub fn new(settings: Settings, config_path: Option<PathBuf>, clock: Arc<dyn Clock>) -> Self {
        let quota = Arc::new(Quota::in_memory(settings.rules.clone(), clock));
        let metrics = settings
            .metrics
            .listen
            .is_some()
            .then(|| Arc::new(Metrics::new()));
        Self {
            quota,
            auth: Arc::new(Authenticator::new(settings.auth.clone())),
            metrics,
            settings,
            config_path,
        }
    }

    /// The engine (tests and admin tools reach state through it).
    pub fn quota(&self) -> &Arc<Quota> {
        &self.quota
    }

    /// The metrics, when on.
    pub fn metrics(&self) -> Option<&Arc<Metrics>> {
        self.metrics.as_ref()
    }

    /// Re-reads the config file and swaps in its rules, keeping all state. Server settings (listen
    /// address, ...) need a restart and are left as they are. Returns the new config version.
    pub fn reload(&self) -> Result<u64, ConfigError> {
        let result = self.reload_config();
        if let Some(m) = &self.metrics {
            m.reloaded(result.is_ok());
        }
        result
    }

    fn reload_config(&self) -> Result<u64, ConfigError> {
        let fresh = config::load(self.config_path.as_deref())?;
        if fresh.server != self.settings.server
            || fresh.metrics != self.settings.metrics
            || fresh.tracing != self.settings.tracing
        {
            tracing::warn!(
                "config reload: [server], [metrics] or [tracing] settings changed; they take effect on restart"
            );
        }
        let resources = fresh.rules.len();
        self.auth.replace(fresh.auth);
        let version = self.quota.replace_rules(fresh.rules);
        tracing::info!(version, resources, "config reloaded");
        Ok(version)
    }

    /// Says at start-up what an unauthenticated deployment lets anyone do.
    fn warn_if_open(&self) {
        let auth = self.auth.settings();
        if auth.required() {
            tracing::info!(
                identities = auth.identities.len(),
                "auth: every call must prove an identity"
            );
            return;
        }
        tracing::warn!(
            "auth: no [auth] identities configured: any client that can reach the gRPC port may call QuotaService \
             (for a trusted network only; see README, Security)"
        );
        if auth.admin_from_anywhere {
            tracing::warn!("auth: admin_from_anywhere = true: any client may call QuotaAdmin");
        } else {
            tracing::info!("auth: QuotaAdmin answers loopback peers only");
        }
    }

    /// Serves gRPC on `listener`, and `/metrics` on the configured address when metrics are on, until
    /// `shutdown` completes.
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServeError> {
        let metrics_listener = match self.settings.metrics.listen {
            Some(addr) if self.metrics.is_some() => Some(
                TcpListener::bind(addr)
                    .await
                    .map_err(|source| ServeError::MetricsListen { addr, source })?,
            ),
            _ => None,
        };
        self.serve_with(listener, metrics_listener, shutdown).await
    }

    /// Serves gRPC on `listener` and, when metrics are on, `/metrics` on `metrics_listener`, until
    /// `shutdown` completes. Tests pass listeners bound to `127.0.0.1:0`.
    pub async fn serve_with(
        self: Arc<Self>,
        listener: TcpListener,
        metrics_listener: Option<TcpListener>,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServeError> {
        let settings = self.settings.server.clone();
        let (health, health_service) = tonic_health::server::health_reporter();
        health.set_serving::<QuotaServiceServer<QuotaGrpc>>().await;
        health
            .set_service_status("", tonic_health::ServingStatus::Serving)
            .await;

        let reflection_v1 = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(quotad_api::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()?;
        let reflection_v1alpha = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(quotad_api::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1alpha()?;

        let me = self.clone();
        let reload: Reloader = Arc::new(move || me.reload());
        let mut quota_grpc = QuotaGrpc::new(self.quota.clone());
        if let Some(m) = &self.metrics {
            quota_grpc = quota_grpc.with_metrics(m.clone());
        }
        let quota_service = InterceptedService::new(
            QuotaServiceServer::new(quota_grpc)
                .max_decoding_message_size(settings.max_request_bytes),
            AuthInterceptor::new(self.auth.clone(), Service::Quota),
        );
        let admin_service = InterceptedService::new(
            QuotaAdminServer::new(AdminGrpc::new(self.quota.clone(), reload))
                .max_decoding_message_size(settings.max_request_bytes),
            AuthInterceptor::new(self.auth.clone(), Service::Admin),
        );
        self.warn_if_open();

        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let sweeper = tokio::spawn(sweeper::run(self.quota.clone(), settings.sweep_interval, {
            let mut rx = stop_rx.clone();
            async move {
                let _ = rx.wait_for(|s| *s).await;
            }
        }));
        let metrics_task = match (&self.metrics, metrics_listener) {
            (Some(m), Some(l)) => {
                tracing::info!(addr = ?l.local_addr().ok(), "metrics served at /metrics");
                let mut rx = stop_rx.clone();
                Some(tokio::spawn(metrics::http::serve(
                    l,
                    m.clone(),
                    self.quota.clone(),
                    async move {
                        let _ = rx.wait_for(|s| *s).await;
                    },
                )))
            }
            _ => None,
        };
        let drain_delay = settings.drain_delay;
        let drain = {
            let health = health.clone();
            async move {
                shutdown.await;
                tracing::info!("shutting down: health NOT_SERVING, draining in-flight calls");
                health
                    .set_not_serving::<QuotaServiceServer<QuotaGrpc>>()
                    .await;
                health
                    .set_service_status("", tonic_health::ServingStatus::NotServing)
                    .await;
                // Keep answering while load balancers notice NOT_SERVING and move traffic away.
                tokio::time::sleep(drain_delay).await;
                let _ = stop_tx.send(true);
            }
        };
        let mut stopped = stop_rx.clone();

        let addr = listener.local_addr().ok();
        tracing::info!(
            ?addr,
            resources = self.quota.rules().len(),
            "quotad serving"
        );
        let in_flight = crate::grpc::in_flight::InFlight::default();
        let serve = Server::builder()
            .http2_keepalive_interval(Some(Duration::from_secs(30)))
            .http2_keepalive_timeout(Some(Duration::from_secs(10)))
            .layer(in_flight.clone())
            .layer(crate::grpc::wire_status::WireStatusLayer)
            .add_service(quota_service)
            .add_service(admin_service)
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .serve_with_incoming_shutdown(incoming(listener), drain);
        tokio::pin!(serve);
        let result = tokio::select! {
            r = &mut serve => r.map_err(ServeError::from),
            // After the signal, stop as soon as no call is in flight (connections left idle by clients that
            // ignore GOAWAY hold nothing), or when the grace period is over.
            left = async {
                let _ = stopped.wait_for(|s| *s).await;
                let deadline = tokio::time::Instant::now() + settings.shutdown_grace;
                while in_flight.get() > 0 && tokio::time::Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                in_flight.get()
            } => {
                match left {
                    0 => tracing::info!("no calls in flight; closing the remaining connections"),
                    n => tracing::warn!(grace = ?settings.shutdown_grace, calls = n, "shutdown grace period over; dropping the calls still in flight"),
                }
                Ok(())
            }
        };
        sweeper.abort();
        if let Some(t) = metrics_task {
            t.abort();
        }
        result
    }
}

/// The connections `listener` accepts, each with `TCP_NODELAY` set. tonic applies its own `tcp_nodelay`
/// setting only to listeners it binds itself, and with Nagle's algorithm on, a small response written while
/// an earlier one is still unacknowledged waits for the client's delayed ACK: 40 to 200 ms.
pub fn incoming(listener: TcpListener) -> TcpIncoming {
    TcpIncoming::from(listener).with_nodelay(Some(true))
}

/// Serves `settings` on `listener` at `clock` until `shutdown` completes: what the binary and the tests run.
pub async fn run(
    listener: TcpListener,
    settings: Settings,
    clock: Arc<dyn Clock>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    Arc::new(Quotad::new(settings, None, clock))
        .serve(listener, shutdown)
        .await
}

#[cfg(test)]
mod tests {
    use tokio_stream::StreamExt as _;

    use super::*;

    #[tokio::test]
    async fn accepted_connections_do_not_wait_for_delayed_acks() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut accepted = incoming(listener);
        let _client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let stream = accepted.next().await.unwrap().unwrap();
        assert!(
            stream.nodelay().unwrap(),
            "TCP_NODELAY on the server's side"
        );
    }
}
