//! Arbitrary bytes as a QuotaService or QuotaAdmin request (the first byte picks which), decoded as the
//! server would, then converted, validated and run against a real in-memory engine. Nothing may panic;
//! every answer is a response or a status.
#![no_main]

use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use prost::Message;
use quotad_api::v1::{self as pb, quota_admin_server::QuotaAdmin, quota_service_server::QuotaService};
use quotad_server::{
    clock::FakeClock,
    config,
    engine::Quota,
    grpc::{AdminGrpc, QuotaGrpc},
};
use tonic::Request;

const CONFIG: &str = r#"
[[resources]]
name = "api"
rate = { limit = 10, period = "1s", burst = 5 }
concurrency = 3
breaker = { failure_rate = 0.5, min_calls = 2, window = "10s", open_duration = "5s", half_open_probes = 1 }
adaptive = {}

[[resources]]
name = "t.*"
rate = { limit = 100, period = "1s", burst = 20 }
[[resources.partitions]]
descriptor = "tenant"
rate = { limit = 10, period = "1s", burst = 4 }
"#;

struct Server {
    runtime: tokio::runtime::Runtime,
    service: QuotaGrpc,
    admin: AdminGrpc,
    clock: Arc<FakeClock>,
}

fn server() -> &'static Server {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER.get_or_init(|| {
        let clock = Arc::new(FakeClock::new());
        let rules = config::load_str(CONFIG).expect("the fuzz config is valid").rules;
        let quota = Arc::new(Quota::in_memory(rules, clock.clone()));
        Server {
            runtime: tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .start_paused(true)
                .build()
                .expect("a runtime"),
            service: QuotaGrpc::new(quota.clone()),
            admin: AdminGrpc::new(quota, Arc::new(|| Ok(1))),
            clock,
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, bytes)) = data.split_first() else { return };
    let s = server();
    s.clock.advance_nanos(u64::from(which) * 10_000_000);
    s.runtime.block_on(async {
        let _ = match which % 9 {
            0 => match pb::AcquireRequest::decode(bytes) {
                Ok(r) => s.service.acquire(Request::new(r)).await.map(drop),
                Err(_) => Ok(()),
            },
            1 => match pb::ReleaseRequest::decode(bytes) {
                Ok(r) => s.service.release(Request::new(r)).await.map(drop),
                Err(_) => Ok(()),
            },
            2 => match pb::RenewRequest::decode(bytes) {
                Ok(r) => s.service.renew(Request::new(r)).await.map(drop),
                Err(_) => Ok(()),
            },
            3 => match pb::ReportThrottleRequest::decode(bytes) {
                Ok(r) => s.service.report_throttle(Request::new(r)).await.map(drop),
                Err(_) => Ok(()),
            },
            4 => match pb::GetCircuitStateRequest::decode(bytes) {
                Ok(r) => s.service.get_circuit_state(Request::new(r)).await.map(drop),
                Err(_) => Ok(()),
            },
            5 => match pb::ListResourcesRequest::decode(bytes) {
                Ok(r) => s.admin.list_resources(Request::new(r)).await.map(drop),
                Err(_) => Ok(()),
            },
            6 => match pb::ListLeasesRequest::decode(bytes) {
                Ok(r) => s.admin.list_leases(Request::new(r)).await.map(drop),
                Err(_) => Ok(()),
            },
            7 => match pb::ForceOpenBreakerRequest::decode(bytes) {
                Ok(r) => s.admin.force_open_breaker(Request::new(r)).await.map(drop),
                Err(_) => Ok(()),
            },
            _ => match pb::ResetBucketsRequest::decode(bytes) {
                Ok(r) => s.admin.reset_buckets(Request::new(r)).await.map(drop),
                Err(_) => Ok(()),
            },
        };
    });
});
