//! Traces end-to-end: a fake OTLP collector (opentelemetry-proto's generated server) on loopback receives
//! quotad's span for an Acquire made by the Rust client inside a traced job, in the job's trace. And with a
//! collector that never answers, quotad still starts, serves and stops.
//!
//! Each test installs its subscriber for its own (current-thread) runtime only, with `set_default`.

use std::{sync::Arc, time::Duration};

use opentelemetry::trace::TraceContextExt as _;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
    trace_service_server::{TraceService, TraceServiceServer},
};
use quotad_client::{AcquireOptions, Client, Outcome};
use quotad_e2e::TestServer;
use quotad_server::{
    clock::MonotonicClock,
    config::{LogFormat, TracingSettings},
    telemetry::Telemetry,
};
use tokio::sync::mpsc;
use tracing::Instrument as _;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

const CONFIG: &str = r#"
[[resources]]
name = "api"
rate = { limit = 100, period = "1s", burst = 100 }
"#;

/// Every span the collector receives, as (trace id, span id, parent span id, name).
type Received = (Vec<u8>, Vec<u8>, Vec<u8>, String);

struct Collector(mpsc::UnboundedSender<Received>);

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        for rs in request.into_inner().resource_spans {
            for ss in rs.scope_spans {
                for s in ss.spans {
                    let _ = self
                        .0
                        .send((s.trace_id, s.span_id, s.parent_span_id, s.name));
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

async fn fake_collector() -> (String, mpsc::UnboundedReceiver<Received>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(Collector(tx)))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    (format!("http://{addr}"), rx)
}

fn settings(endpoint: String, export_timeout: Duration) -> TracingSettings {
    TracingSettings {
        otlp_endpoint: Some(endpoint),
        service_name: "quotad-test".into(),
        sample_ratio: 1.0,
        export_timeout,
    }
}

#[tokio::test]
async fn a_traced_acquire_reaches_the_collector_in_the_callers_trace() {
    let (endpoint, mut received) = fake_collector().await;
    let (subscriber, telemetry) = Telemetry::subscriber(
        LogFormat::Text,
        &settings(endpoint, Duration::from_secs(10)),
    )
    .unwrap();
    let _installed = tracing::subscriber::set_default(subscriber);
    assert!(telemetry.exporting());

    let server = TestServer::start(CONFIG, Arc::new(MonotonicClock::new())).await;
    let client = Client::builder(server.url()).connect().await.unwrap();
    let job = tracing::info_span!(target: "quotad_e2e", "job");
    let job_context = job.context();
    let job_span = job_context.span();
    let (trace_id, job_span_id) = (
        job_span.span_context().trace_id().to_bytes().to_vec(),
        job_span.span_context().span_id().to_bytes().to_vec(),
    );
    assert_ne!(trace_id, vec![0; 16], "the job is traced");
    let permit = client
        .acquire("api", AcquireOptions::new())
        .instrument(job.clone())
        .await
        .unwrap();
    permit
        .release(Outcome::Success)
        .instrument(job.clone())
        .await
        .unwrap();
    drop(job);

    // Flush off the runtime thread: the exporter's channel needs this thread to make progress.
    let telemetry = tokio::task::spawn_blocking(move || {
        telemetry.flush();
        telemetry
    })
    .await
    .unwrap();

    let mut names = Vec::new();
    let mut acquire = None;
    // Bounded: the flush above has already exported; this only drains what arrived.
    while let Ok(Some(span)) = tokio::time::timeout(Duration::from_secs(5), received.recv()).await {
        names.push(span.3.clone());
        if span.3 == "quotad.v1.QuotaService/Acquire" {
            acquire = Some(span);
        }
        if acquire.is_some() && names.iter().any(|n| n.ends_with("/Release")) {
            break;
        }
    }
    let (acquire_trace, _, parent, _) =
        acquire.unwrap_or_else(|| panic!("no Acquire span in {names:?}"));
    assert_eq!(
        acquire_trace, trace_id,
        "quotad continued the caller's trace"
    );
    assert_eq!(parent, job_span_id, "the caller's span is the parent");
    assert!(
        names
            .iter()
            .all(|n| n.starts_with("quotad.v1.QuotaService/") || n == "job"),
        "only quotad's own spans are exported: {names:?}"
    );

    server.stop().await;
    tokio::task::spawn_blocking(move || telemetry.shutdown())
        .await
        .unwrap();
}

#[tokio::test]
async fn a_collector_that_never_answers_blocks_nothing() {
    // Accepts connections (the kernel does) but never speaks HTTP/2.
    let black_hole = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", black_hole.local_addr().unwrap());
    let (subscriber, telemetry) = Telemetry::subscriber(
        LogFormat::Text,
        &settings(endpoint, Duration::from_millis(300)),
    )
    .unwrap();
    let _installed = tracing::subscriber::set_default(subscriber);

    // A generous bound: the failure this guards against is hanging forever, not being slow.
    tokio::time::timeout(Duration::from_secs(60), async {
        let server = TestServer::start(CONFIG, Arc::new(MonotonicClock::new())).await;
        let client = Client::builder(server.url()).connect().await.unwrap();
        for _ in 0..10 {
            let permit = client
                .acquire("api", AcquireOptions::new())
                .instrument(tracing::info_span!(target: "quotad_e2e", "job"))
                .await
                .unwrap();
            permit.release(Outcome::Success).await.unwrap();
        }
        server.stop().await;
        tokio::task::spawn_blocking(move || telemetry.shutdown())
            .await
            .unwrap();
    })
    .await
    .expect("serving and shutting down never wait on the collector");
    drop(black_hole);
}
