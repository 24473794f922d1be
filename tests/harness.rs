//! Test harness for quotad's end-to-end tests: a real server on `127.0.0.1:0`, real gRPC clients.

use std::{net::SocketAddr, path::PathBuf, sync::Arc};

use quotad_api::v1::{
    quota_admin_client::QuotaAdminClient, quota_service_client::QuotaServiceClient,
};
use quotad_server::{clock::Clock, config, server::Quotad};
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};
use tonic::{service::interceptor::InterceptedService, transport::Channel};

/// redis-server and a three-master Cluster of the test's own (shared with the engine's store suite).
#[path = "../server/tests/common/redis_server.rs"]
pub mod redis_server;

/// A running server.
pub struct TestServer {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Where `/metrics` is served (when the config leaves metrics on).
    pub metrics_addr: Option<SocketAddr>,
    /// The server object (for direct access to the engine).
    pub quotad: Arc<Quotad>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl TestServer {
    /// Starts a server on `127.0.0.1:0` with the rules in `toml`.
    pub async fn start(toml: &str, clock: Arc<dyn Clock>) -> Self {
        let settings = config::load_str(toml).expect("valid test config");
        Self::start_settings(settings, None, clock).await
    }

    /// Starts a server whose config comes from `path` (so ReloadConfig re-reads it).
    pub async fn start_file(path: PathBuf, clock: Arc<dyn Clock>) -> Self {
        let settings = config::load(Some(&path)).expect("valid test config");
        Self::start_settings(settings, Some(path), clock).await
    }

    async fn start_settings(
        settings: config::Settings,
        path: Option<PathBuf>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().expect("local addr");
        let metrics_listener = match settings.metrics.listen {
            Some(_) => Some(
                TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("bind loopback"),
            ),
            None => None,
        };
        let metrics_addr = metrics_listener
            .as_ref()
            .map(|l| l.local_addr().expect("local addr"));
        let quotad = Arc::new(
            Quotad::connect(settings, path, clock)
                .await
                .expect("usable TLS files and store"),
        );
        let (stop, stopped) = oneshot::channel::<()>();
        let server = quotad.clone();
        let task = tokio::spawn(async move {
            server
                .serve_with(
                    quotad_server::server::Listeners {
                        grpc: listener,
                        metrics: metrics_listener,
                        health: None,
                    },
                    async {
                        let _ = stopped.await;
                    },
                )
                .await
                .expect("server ran");
        });
        Self {
            addr,
            metrics_addr,
            quotad,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `GET path` on the metrics endpoint: (status code, body).
    pub async fn http_get(&self, path: &str) -> (u16, String) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let addr = self.metrics_addr.expect("metrics are on");
        let mut s = tokio::net::TcpStream::connect(addr)
            .await
            .expect("connect to /metrics");
        let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.expect("send");
        let mut raw = String::new();
        s.read_to_string(&mut raw).await.expect("read reply");
        let (head, body) = raw.split_once("\r\n\r\n").expect("an HTTP reply");
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .expect("a status code");
        (status, body.to_owned())
    }

    /// Scrapes `/metrics`.
    pub async fn scrape(&self) -> String {
        let (status, body) = self.http_get("/metrics").await;
        assert_eq!(status, 200, "{body}");
        body
    }

    /// A connected channel.
    pub async fn channel(&self) -> Channel {
        Channel::from_shared(self.url())
            .expect("url")
            .connect()
            .await
            .expect("connect to test server")
    }

    /// A QuotaService client.
    pub async fn quota(&self) -> QuotaServiceClient<Channel> {
        QuotaServiceClient::new(self.channel().await)
    }

    /// A QuotaAdmin client.
    pub async fn admin(&self) -> QuotaAdminClient<Channel> {
        QuotaAdminClient::new(self.channel().await)
    }

    /// A QuotaService client that sends `authorization: Bearer <token>`.
    pub async fn quota_as(
        &self,
        token: &str,
    ) -> QuotaServiceClient<InterceptedService<Channel, Bearer>> {
        QuotaServiceClient::with_interceptor(self.channel().await, Bearer::new(token))
    }

    /// A QuotaAdmin client that sends `authorization: Bearer <token>`.
    pub async fn admin_as(
        &self,
        token: &str,
    ) -> QuotaAdminClient<InterceptedService<Channel, Bearer>> {
        QuotaAdminClient::with_interceptor(self.channel().await, Bearer::new(token))
    }

    /// Signals shutdown without waiting.
    pub fn signal_stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Signals shutdown and waits for the server to finish.
    pub async fn stop(mut self) {
        self.signal_stop();
        if let Some(task) = self.task.take() {
            task.await.expect("server task");
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.signal_stop();
    }
}

/// An Acquire of one permit of `resource`, every other field at its proto default.
pub fn acquire(resource: &str) -> quotad_api::v1::AcquireRequest {
    quotad_api::v1::AcquireRequest {
        resource: resource.into(),
        ..Default::default()
    }
}

/// A whole number of seconds as a proto duration.
pub fn secs(s: i64) -> Option<prost_types::Duration> {
    Some(prost_types::Duration {
        seconds: s,
        nanos: 0,
    })
}

/// A client interceptor adding a bearer token to every call.
#[derive(Clone)]
pub struct Bearer(tonic::metadata::MetadataValue<tonic::metadata::Ascii>);

impl Bearer {
    /// Sends `token`.
    pub fn new(token: &str) -> Self {
        Self(format!("Bearer {token}").parse().expect("an ASCII token"))
    }
}

impl tonic::service::Interceptor for Bearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        request
            .metadata_mut()
            .insert("authorization", self.0.clone());
        Ok(request)
    }
}

/// The QuotaService as an in-process tower service (no sockets), deciding on tokio's clock: for client
/// tests on paused time.
pub fn in_process(
    toml: &str,
) -> (
    quotad_server::grpc::QuotaServer<quotad_server::engine::MemoryStore>,
    Arc<quotad_server::engine::Quota<quotad_server::engine::MemoryStore>>,
) {
    let settings = config::load_str(toml).expect("valid test config");
    let clock = Arc::new(quotad_server::clock::TokioClock::new());
    let quota = Arc::new(quotad_server::engine::Quota::in_memory(
        settings.rules,
        clock,
    ));
    // As the server serves it (Acquire on its own unary path), with tonic's default 4 MiB request limit.
    let service = quotad_server::grpc::QuotaServer::new(
        quotad_server::grpc::QuotaGrpc::new(quota.clone()),
        4 << 20,
    );
    (service, quota)
}
