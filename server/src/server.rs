//! Serving: QuotaService, QuotaAdmin, Envoy's RateLimitService, grpc.health.v1 and server reflection (v1 and
//! v1alpha) on one listener, plus the sweeper, until a shutdown signal; then health goes NOT_SERVING, new connections stop,
//! and in-flight calls get `shutdown_grace` to finish.

use std::{future::Future, path::PathBuf, pin::Pin, sync::Arc, time::Duration};

use arc_swap::ArcSwap;
use quotad_api::{
    envoy::service::ratelimit::v3::rate_limit_service_server::RateLimitServiceServer,
    v1::{quota_admin_server::QuotaAdminServer, quota_service_server::QuotaServiceServer},
};
use tokio::net::TcpListener;
use tonic::{
    service::Routes,
    transport::{Server, server::Connected},
};
use tonic_health::{
    pb::health_server::HealthServer,
    server::{HealthReporter, HealthService},
};

use crate::{
    auth::{AuthLayer, Authenticator, Service},
    clock::Clock,
    config::StoreSettings,
    config::{self, ConfigError, ServerSettings, Settings},
    engine::{AnyStore, MemoryStore, Quota, RedisStore, Store},
    grpc::{
        AdminGrpc, QuotaGrpc, QuotaServer, RlsGrpc,
        admin_service::Reloader,
        front::{Calls, Front},
    },
    grpc::{in_flight::InFlight, wire_status::WireStatusLayer},
    listen::{self, Limits, TlsReloader, penalty::Penalties},
    metrics::{self, Metrics},
    sweeper,
};

/// The health service name that says whether the shared store answers: `NOT_SERVING` while Redis is down
/// (resources with `on_store_error = "fail_closed"` answer UNAVAILABLE meanwhile).
pub const STORE_HEALTH: &str = "quotad.store";

/// Keeps [`STORE_HEALTH`] in step with the store, checked every 200 ms, until `stopped` completes.
async fn watch_store(
    quota: Arc<Quota<AnyStore>>,
    health: HealthReporter,
    stopped: impl Future<Output = ()>,
) {
    use tonic_health::ServingStatus::{NotServing, Serving};
    tokio::pin!(stopped);
    let mut last = None;
    loop {
        let up = quota.store().health().is_none_or(|h| !h.down);
        if last != Some(up) {
            let status = if up { Serving } else { NotServing };
            health.set_service_status(STORE_HEALTH, status).await;
            last = Some(up);
        }
        tokio::select! {
            _ = &mut stopped => return,
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    }
}

/// Why the server stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Reflection could not be built from the descriptor set.
    #[error("reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// A configured listener could not bind.
    #[error("cannot listen on {addr} ({key}): {source}")]
    Listen {
        /// The config key naming the address.
        key: &'static str,
        /// The configured address.
        addr: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The TLS material could not be used.
    #[error(transparent)]
    Tls(#[from] crate::listen::TlsError),
    /// The quota store could not be set up.
    #[error("store: {0}")]
    Store(#[from] crate::engine::EngineError),
}

/// A configured quotad: the engine plus where its config came from (for reloads).
pub struct Quotad {
    quota: Arc<Quota<AnyStore>>,
    auth: Arc<Authenticator>,
    tls: Option<Arc<TlsReloader>>,
    metrics: Option<Arc<Metrics>>,
    /// The `[rls]` config files in force (swapped on reload).
    rls: Arc<ArcSwap<crate::rls::RlsConfig>>,
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
    /// A server for `settings` (read from `config_path`, if any, for reloads), deciding at `clock`, on the
    /// store the settings name. Fails when the TLS files cannot be used (the error names the file) or a
    /// Redis Cluster cannot be reached; a single Redis that is down is only warned about (calls answer as
    /// the store's failure policy says until it is back).
    pub async fn connect(
        settings: Settings,
        config_path: Option<PathBuf>,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, ServeError> {
        let store = match &settings.store {
            StoreSettings::Memory => AnyStore::Memory(MemoryStore::new(&settings.rules)),
            StoreSettings::Redis(r) => {
                let store = RedisStore::connect(r.clone()).await?;
                match store.ping().await {
                    Ok(()) => {
                        tracing::info!(url = ?r.url, cluster = ?r.cluster, prefix = %r.prefix, "quota state in Redis");
                        store.check_eviction(true).await;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "Redis is not answering yet; calls fail until it does")
                    }
                }
                AnyStore::Redis(Box::new(store))
            }
        };
        Self::with_store(settings, config_path, clock, store)
    }

    /// [`connect`](Self::connect) for the in-memory store (what needs no I/O to build). Refuses settings
    /// that name another store.
    pub fn new(
        settings: Settings,
        config_path: Option<PathBuf>,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, ServeError> {
        if settings.store != StoreSettings::Memory {
            return Err(ServeError::Store(crate::engine::EngineError::Unavailable(
                "this store needs Quotad::connect".into(),
            )));
        }
        let store = AnyStore::Memory(MemoryStore::new(&settings.rules));
        Self::with_store(settings, config_path, clock, store)
    }

    fn with_store(
        settings: Settings,
        config_path: Option<PathBuf>,
        clock: Arc<dyn Clock>,
        store: AnyStore,
    ) -> Result<Self, ServeError> {
        let tls = match &settings.server.tls {
            Some(files) => Some(Arc::new(TlsReloader::new(files.clone())?)),
            None => None,
        };
        let quota = Arc::new(Quota::new(settings.rules.clone(), store, clock)?);
        let metrics = settings
            .metrics
            .listen
            .is_some()
            .then(|| Arc::new(Metrics::new()));
        let rls = Arc::new(ArcSwap::new(settings.rls.clone()));
        log_rls(&settings.rls);
        Ok(Self {
            quota,
            auth: Arc::new(Authenticator::new(settings.auth.clone())),
            tls,
            metrics,
            rls,
            settings,
            config_path,
        })
    }

    /// The engine (tests and admin tools reach state through it).
    pub fn quota(&self) -> &Arc<Quota<AnyStore>> {
        &self.quota
    }

    /// The metrics, when on.
    pub fn metrics(&self) -> Option<&Arc<Metrics>> {
        self.metrics.as_ref()
    }

    /// Closed connections and refused addresses, counted in the metrics when they are on.
    fn penalties(&self) -> Arc<Penalties> {
        self.metrics
            .as_ref()
            .map(|m| m.connections().clone())
            .unwrap_or_default()
    }

    /// Re-reads the config file and swaps in its rules, keeping all state. Server settings (listen
    /// address, ...) need a restart and are left as they are. Returns the new config version.
    pub fn reload(&self) -> Result<u64, ConfigError> {
        if let Some(tls) = &self.tls
            && let Err(e) = tls.reload()
        {
            tracing::error!(error = %e, "TLS reload failed; the certificates in force stay");
        }
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
            || fresh.store != self.settings.store
        {
            tracing::warn!(
                "config reload: [server], [metrics], [tracing], store or [redis] settings changed; they take effect on restart"
            );
        }
        let resources = fresh.rules.len();
        // Rules first: when the store refuses them, nothing of the new config is in force.
        let version = self
            .quota
            .replace_rules(fresh.rules)
            .map_err(|e| ConfigError::Source(e.to_string()))?;
        self.auth.replace(fresh.auth);
        log_rls(&fresh.rls);
        self.rls.store(fresh.rls);
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

    /// Serves gRPC on `listener`, and `/metrics` and the plaintext health listener on their configured
    /// addresses when configured, until `shutdown` completes.
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServeError> {
        let metrics = match self.settings.metrics.listen {
            Some(addr) if self.metrics.is_some() => Some(bind(addr, "metrics.listen").await?),
            _ => None,
        };
        let health = match self.settings.server.health_listen {
            Some(addr) => Some(bind(addr, "server.health_listen").await?),
            None => None,
        };
        let listeners = Listeners {
            grpc: listener,
            metrics,
            health,
        };
        self.serve_with(listeners, shutdown).await
    }

    /// Serves on `listeners` until `shutdown` completes. Tests pass listeners bound to `127.0.0.1:0`.
    pub async fn serve_with(
        self: Arc<Self>,
        listeners: Listeners,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServeError> {
        let settings = self.settings.server.clone();
        let (health, health_service) = tonic_health::server::health_reporter();
        health
            .set_serving::<QuotaServiceServer<QuotaGrpc<AnyStore>>>()
            .await;
        health
            .set_service_status("", tonic_health::ServingStatus::Serving)
            .await;
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let mut background = self.spawn_background(
            listeners.metrics,
            listeners.health.map(|l| (l, health.clone())),
            || stopped(stop_rx.clone()),
        );
        if self.quota.store().health().is_some() {
            let watch = watch_store(self.quota.clone(), health.clone(), stopped(stop_rx.clone()));
            background.push(tokio::spawn(watch));
        }
        let drain = drain(health, settings.drain_delay, shutdown, stop_tx);
        let addr = listeners.grpc.local_addr().ok();
        tracing::info!(
            ?addr,
            tls = self.tls.is_some(),
            resources = self.quota.rules().len(),
            "quotad serving"
        );
        self.warn_if_open();
        let in_flight = InFlight::default();
        let calls = self.calls(
            &settings,
            in_flight.clone(),
            stop_rx.clone(),
            health_service,
        )?;
        let limits = Limits {
            max_connections: settings.http2.max_connections,
            preface_timeout: settings.http2.preface_timeout,
            max_control_frames_per_second: settings.http2.max_control_frames_per_second,
            penalties: self.penalties(),
        };
        let h2 = settings.http2.clone();
        let serve: Serving = match &self.tls {
            Some(tls) => {
                let incoming = listen::tls_incoming(listeners.grpc, limits, tls.clone());
                let front =
                    move |conn: &_| Front::new(calls.clone(), Connected::connect_info(conn));
                Box::pin(async move { listen::serve(incoming, &h2, front, drain).await })
            }
            None => {
                let incoming = listen::plaintext(listeners.grpc, limits);
                let front =
                    move |conn: &_| Front::new(calls.clone(), Connected::connect_info(conn));
                Box::pin(async move { listen::serve(incoming, &h2, front, drain).await })
            }
        };
        let result =
            until_drained(serve, stopped(stop_rx), in_flight, settings.shutdown_grace).await;
        for task in background {
            task.abort();
        }
        // What this node holds of the fleet's buckets goes back before it stops.
        self.quota.close().await;
        result
    }

    /// What every call reaches: Acquire and Release on their own paths, and tonic's router with
    /// QuotaService and QuotaAdmin behind authentication, `health`, and reflection.
    fn calls(
        self: &Arc<Self>,
        settings: &ServerSettings,
        in_flight: InFlight,
        stop: tokio::sync::watch::Receiver<bool>,
        health: HealthServer<impl tonic_health::pb::health_server::Health>,
    ) -> Result<Arc<Calls<AnyStore>>, ServeError> {
        let me = self.clone();
        let reload: Reloader = Arc::new(move || me.reload());
        let mut quota_grpc = QuotaGrpc::new(self.quota.clone()).with_stop(stop);
        if let Some(m) = &self.metrics {
            quota_grpc = quota_grpc.with_metrics(m.clone());
        }
        let mut rls = RlsGrpc::new(self.quota.clone(), self.rls.clone());
        if let Some(m) = &self.metrics {
            rls = rls.with_metrics(m.clone());
        }
        let quota = QuotaServer::new(quota_grpc, settings.max_request_bytes).with_rls(rls);
        let quota_auth = AuthLayer::new(self.auth.clone(), Service::Quota, self.metrics.clone());
        let admin_service = AuthLayer::new(self.auth.clone(), Service::Admin, self.metrics.clone())
            .around(
                QuotaAdminServer::new(
                    AdminGrpc::new(self.quota.clone(), reload).with_auth(self.auth.clone()),
                )
                .max_decoding_message_size(settings.max_request_bytes),
            );
        // ShouldRateLimit is answered on its unary path (grpc/front.rs); the router knows the service too,
        // so its other paths get tonic's UNIMPLEMENTED.
        let rls_routed =
            RateLimitServiceServer::new(RlsGrpc::new(self.quota.clone(), self.rls.clone()));
        let routes = Routes::new(quota_auth.around(quota.clone()))
            .add_service(quota_auth.around(rls_routed))
            .add_service(admin_service)
            .add_service(health)
            .add_service(reflection::v1()?)
            .add_service(reflection::v1alpha()?)
            .prepare();
        let router = tower::Layer::layer(&WireStatusLayer, routes);
        Ok(Calls::new(quota, quota_auth, router, in_flight))
    }

    /// The sweeper, the metrics endpoint, the TLS file watcher and the plaintext health listener, each
    /// stopping when the future `stopped()` makes completes.
    fn spawn_background<F: Future<Output = ()> + Send + 'static>(
        &self,
        metrics_listener: Option<TcpListener>,
        health: Option<(TcpListener, HealthReporter)>,
        stopped: impl Fn() -> F,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        let settings = &self.settings.server;
        let mut tasks = vec![tokio::spawn(sweeper::run(
            self.quota.clone(),
            settings.sweep_interval,
            stopped(),
        ))];
        if let (Some(m), Some(l)) = (&self.metrics, metrics_listener) {
            tracing::info!(addr = ?l.local_addr().ok(), "metrics served at /metrics, the status page at /status");
            let history = Arc::new(crate::status::History::default());
            let sample = crate::status::history::sample(
                history.clone(),
                m.clone(),
                self.quota.clone(),
                stopped(),
            );
            tasks.push(tokio::spawn(sample));
            let serve = metrics::http::serve(l, m.clone(), self.quota.clone(), history, stopped());
            tasks.push(tokio::spawn(async move {
                let _ = serve.await;
            }));
        }
        if let Some(tls) = &self.tls {
            tasks.push(tokio::spawn(tls.clone().watch(stopped())));
        }
        if let Some((listener, reporter)) = health {
            let service = HealthServer::new(HealthService::from_health_reporter(reporter));
            tracing::info!(addr = ?listener.local_addr().ok(), "plaintext health served (grpc.health.v1 and reflection only)");
            let limits = Limits {
                max_connections: 64,
                preface_timeout: settings.http2.preface_timeout,
                max_control_frames_per_second: settings.http2.max_control_frames_per_second,
                penalties: self.penalties(),
            };
            // Reflection too, so grpcurl and grpc_health_probe find the service with no proto files.
            let (Ok(v1), Ok(v1alpha)) = (reflection::v1(), reflection::v1alpha()) else {
                tracing::error!(
                    "reflection could not be built; the plaintext health listener is off"
                );
                return tasks;
            };
            let serve = Server::builder()
                .add_service(service)
                .add_service(v1)
                .add_service(v1alpha)
                .serve_with_incoming_shutdown(listen::plaintext(listener, limits), stopped());
            tasks.push(tokio::spawn(async move {
                if let Err(e) = serve.await {
                    tracing::warn!(error = %e, "plaintext health listener stopped");
                }
            }));
        }
        tasks
    }
}

/// The listeners one server serves on.
#[derive(Debug)]
pub struct Listeners {
    /// gRPC: QuotaService, QuotaAdmin, health, reflection.
    pub grpc: TcpListener,
    /// `/metrics`, when metrics are on.
    pub metrics: Option<TcpListener>,
    /// Plaintext grpc.health.v1 only, when configured.
    pub health: Option<TcpListener>,
}

type Serving = Pin<Box<dyn Future<Output = ()> + Send>>;

async fn stopped(mut rx: tokio::sync::watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

async fn bind(addr: std::net::SocketAddr, key: &'static str) -> Result<TcpListener, ServeError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Listen { key, addr, source })
}

/// Says which `[rls]` files and domains are in force.
fn log_rls(rls: &crate::rls::RlsConfig) {
    if rls.is_empty() {
        return;
    }
    tracing::info!(
        files = ?rls.files,
        domains = ?rls.domains(),
        "Envoy rate limit service: config files read"
    );
}

/// Server reflection (v1 and v1alpha) over quotad's protos and grpc.health.v1, so grpcurl needs no files.
mod reflection {
    use tonic_reflection::server::{Builder, Error, v1, v1alpha};

    fn builder() -> Builder<'static> {
        Builder::configure()
            .register_encoded_file_descriptor_set(quotad_api::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    }

    pub(super) fn v1() -> Result<v1::ServerReflectionServer<impl v1::ServerReflection>, Error> {
        builder().build_v1()
    }

    pub(super) fn v1alpha()
    -> Result<v1alpha::ServerReflectionServer<impl v1alpha::ServerReflection>, Error> {
        builder().build_v1alpha()
    }
}

/// Waits for `shutdown`, then sets health NOT_SERVING, keeps answering for `drain_delay` (so load
/// balancers notice and move traffic away), and signals the stop.
async fn drain(
    health: HealthReporter,
    drain_delay: Duration,
    shutdown: impl Future<Output = ()>,
    stop: tokio::sync::watch::Sender<bool>,
) {
    shutdown.await;
    tracing::info!("shutting down: health NOT_SERVING, draining in-flight calls");
    health
        .set_not_serving::<QuotaServiceServer<QuotaGrpc<AnyStore>>>()
        .await;
    health
        .set_service_status("", tonic_health::ServingStatus::NotServing)
        .await;
    tokio::time::sleep(drain_delay).await;
    let _ = stop.send(true);
}

/// Runs `serve` until it ends; after the stop signal, until no call is in flight (connections left idle by
/// clients that ignore GOAWAY hold nothing) or the grace period is over.
async fn until_drained(
    serve: Serving,
    stopped: impl Future<Output = ()>,
    in_flight: InFlight,
    grace: Duration,
) -> Result<(), ServeError> {
    tokio::select! {
        () = serve => Ok(()),
        left = async {
            stopped.await;
            let deadline = tokio::time::Instant::now() + grace;
            while in_flight.get() > 0 && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            in_flight.get()
        } => {
            match left {
                0 => tracing::info!("no calls in flight; closing the remaining connections"),
                n => tracing::warn!(?grace, calls = n, "shutdown grace period over; dropping the calls still in flight"),
            }
            Ok(())
        }
    }
}
