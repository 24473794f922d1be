//! Arbitrary requests, every field at its extremes, through the whole gRPC service (conversion, validation,
//! the engine, and the conversion back): no request panics, and every failure is a clear status (an
//! INVALID_ARGUMENT names its field). And whatever the requests, a bucket never holds more than its burst
//! and in-flight never exceeds the limit (the exact admission bound is `proptests.rs`'s). On every store:
//! the in-memory one, a Redis and a three-master Cluster (each the test's own; fewer cases there).

mod common;

use std::sync::Arc;

use proptest::prelude::*;
use quotad_api::v1::{
    self as pb, quota_admin_server::QuotaAdmin, quota_service_server::QuotaService,
};
use quotad_server::{
    clock::FakeClock,
    config,
    engine::{MemoryStore, Quota, RedisStore, Store},
    grpc::{AdminGrpc, QuotaGrpc},
};
use tonic::{Code, Request};

const CONFIG: &str = r#"
[[resources]]
name = "api"
rate = { limit = 10, period = "1s", burst = 5 }
concurrency = 3
breaker = { failure_rate = 0.5, min_calls = 2, window = "10s", open_duration = "5s", half_open_probes = 1 }
adaptive = {}
priority = { classes = ["high", "low"], reserve = { high = 0.4 } }

[[resources]]
name = "tenants.*"
rate = { limit = 100, period = "1s", burst = 20 }
[[resources.partitions]]
descriptor = "tenant"
rate = { limit = 10, period = "1s", burst = 4 }
concurrency = 2

[limits]
max_wait = "50ms"
"#;

/// Strings a careless or hostile client sends.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => Just(String::new()),
        3 => "[a-z0-9]{1,16}",
        1 => Just("api".to_owned()),
        1 => Just("tenants.x".to_owned()),
        1 => Just("tenant".to_owned()),
        1 => Just("0123456789abcdef".to_owned()),
        1 => Just("ABCDEF0123456789".to_owned()),
        1 => Just("\u{0}\u{1f}\u{7f}\u{85}".to_owned()),
        1 => Just("é☃\u{10ffff}".to_owned()),
        1 => Just("x".repeat(300)),
        1 => Just("y".repeat(70_000)),
        1 => "[a-z.*]{0,12}",
        1 => any::<String>(),
    ]
}

/// Mostly empty, sometimes `s`.
fn rare(s: impl Strategy<Value = String>) -> impl Strategy<Value = String> {
    prop_oneof![4 => Just(String::new()), 1 => s]
}

/// Mostly names that resolve, so calls get past validation to the engine, and sometimes anything.
fn resource() -> impl Strategy<Value = String> {
    prop_oneof![4 => Just("api".to_owned()), 3 => Just("tenants.x".to_owned()), 2 => text()]
}

fn count() -> impl Strategy<Value = u64> {
    prop_oneof![
        4 => Just(0),
        4 => Just(1),
        1 => Just(5),
        1 => Just(6),
        1 => Just(u64::MAX),
        1 => Just(u64::MAX - 1),
        1 => any::<u64>(),
    ]
}

fn duration() -> impl Strategy<Value = Option<prost_types::Duration>> {
    let seconds = prop_oneof![
        Just(0i64),
        Just(1),
        Just(-1),
        Just(i64::MAX),
        Just(i64::MIN),
        any::<i64>()
    ];
    let nanos = prop_oneof![
        Just(0i32),
        Just(1),
        Just(-1),
        Just(999_999_999),
        Just(1_000_000_000),
        Just(i32::MAX),
        Just(i32::MIN)
    ];
    let some = (seconds, nanos)
        .prop_map(|(seconds, nanos)| Some(prost_types::Duration { seconds, nanos }));
    prop_oneof![3 => Just(None), 1 => some]
}

fn descriptors() -> impl Strategy<Value = std::collections::HashMap<String, String>> {
    let tenant = prop_oneof![Just("a"), Just("b"), Just("")]
        .prop_map(|t| [("tenant".to_owned(), t.to_owned())].into());
    prop_oneof![
        3 => Just(std::collections::HashMap::new()),
        4 => tenant,
        1 => prop::collection::hash_map(text(), text(), 0..20),
    ]
}

fn enum_value() -> impl Strategy<Value = i32> {
    prop_oneof![
        Just(0),
        Just(1),
        Just(2),
        Just(3),
        Just(4),
        Just(-1),
        Just(i32::MAX),
        any::<i32>()
    ]
}

#[derive(Debug, Clone)]
enum Call {
    Acquire(pb::AcquireRequest),
    Release(pb::ReleaseRequest),
    Renew(pb::RenewRequest),
    Report(pb::ReportThrottleRequest),
    Circuit(pb::GetCircuitStateRequest),
    ForceOpen(pb::ForceOpenBreakerRequest),
    ListResources(pb::ListResourcesRequest),
    ListLeases(pb::ListLeasesRequest),
    Advance(u64),
}

fn call() -> impl Strategy<Value = Call> {
    prop_oneof![
        (
            resource(),
            descriptors(),
            count(),
            duration(),
            duration(),
            rare(text()),
            rare(text()),
            rare(prop_oneof![
                Just("high".to_owned()),
                Just("low".to_owned()),
                text()
            ])
        )
            .prop_map(
                |(
                    resource,
                    descriptors,
                    permits,
                    lease_ttl,
                    max_wait,
                    request_id,
                    client_id,
                    priority,
                )| {
                    // On the test's paused runtime a waiting call costs no real time.
                    Call::Acquire(pb::AcquireRequest {
                        resource,
                        descriptors,
                        permits,
                        lease_ttl,
                        max_wait,
                        request_id,
                        client_id,
                        priority,
                    })
                }
            ),
        (text(), enum_value(), proptest::option::of(count())).prop_map(
            |(lease_id, outcome, used_permits)| {
                Call::Release(pb::ReleaseRequest {
                    lease_id,
                    outcome,
                    used_permits,
                })
            }
        ),
        (text(), duration()).prop_map(|(lease_id, lease_ttl)| Call::Renew(pb::RenewRequest {
            lease_id,
            lease_ttl
        })),
        (
            text(),
            descriptors(),
            enum_value(),
            duration(),
            text(),
            text()
        )
            .prop_map(
                |(resource, descriptors, kind, retry_after, lease_id, message)| {
                    Call::Report(pb::ReportThrottleRequest {
                        resource,
                        descriptors,
                        kind,
                        retry_after,
                        lease_id,
                        message,
                        client_id: String::new(),
                    })
                }
            ),
        (resource(), descriptors()).prop_map(|(resource, descriptors)| {
            Call::Circuit(pb::GetCircuitStateRequest {
                resource,
                descriptors,
            })
        }),
        (resource(), descriptors(), duration()).prop_map(|(resource, descriptors, duration)| {
            Call::ForceOpen(pb::ForceOpenBreakerRequest {
                resource,
                descriptors,
                duration,
            })
        }),
        (text(), text(), any::<u32>(), text()).prop_map(|(prefix, rule, page_size, page_token)| {
            Call::ListResources(pb::ListResourcesRequest {
                prefix,
                rule,
                page_size,
                page_token,
            })
        }),
        (text(), any::<u32>(), text(), text(), text()).prop_map(
            |(resource, page_size, prefix, rule, page_token)| {
                Call::ListLeases(pb::ListLeasesRequest {
                    resource,
                    page_size,
                    prefix,
                    rule,
                    page_token,
                })
            }
        ),
        (0u64..3_000_000_000).prop_map(Call::Advance),
    ]
}

/// A status a client can act on: a known code and, for INVALID_ARGUMENT, a message that starts with the
/// field it names.
fn clear(status: &tonic::Status) -> Result<(), String> {
    let fields = [
        "resource",
        "descriptors",
        "permits",
        "lease_ttl",
        "max_wait",
        "request_id",
        "client_id",
        "priority",
        "lease_id",
        "outcome",
        "kind",
        "retry_after",
        "message",
        "duration",
        "page_size",
        "page_token",
    ];
    match status.code() {
        Code::InvalidArgument if !fields.iter().any(|f| status.message().starts_with(f)) => Err(
            format!("INVALID_ARGUMENT naming no field: {:?}", status.message()),
        ),
        Code::InvalidArgument
        | Code::NotFound
        | Code::FailedPrecondition
        | Code::PermissionDenied
        | Code::ResourceExhausted => Ok(()),
        other => Err(format!("unexpected {other:?}: {}", status.message())),
    }
}

/// Runs `calls` against `quota` through the gRPC services, checking every failure is clear and the limits
/// hold after each call.
async fn run_calls<S: Store>(
    quota: Arc<Quota<S>>,
    clock: &FakeClock,
    calls: Vec<Call>,
) -> Result<(), TestCaseError> {
    let service = QuotaGrpc::new(quota.clone());
    let admin = AdminGrpc::new(quota.clone(), Arc::new(|| Ok(1)));
    let mut leases: Vec<String> = Vec::new();
    for call in calls {
        let result: Result<(), tonic::Status> = match call {
            Call::Acquire(r) => service.acquire(Request::new(r)).await.map(|a| {
                let a = a.into_inner();
                if a.granted {
                    leases.push(a.lease_id);
                }
            }),
            Call::Release(mut r) => {
                if let Some(id) = leases.pop().filter(|_| r.lease_id.len() % 2 == 0) {
                    r.lease_id = id;
                }
                service.release(Request::new(r)).await.map(drop)
            }
            Call::Renew(mut r) => {
                if let Some(id) = leases.last().filter(|_| r.lease_id.len() % 2 == 0) {
                    r.lease_id = id.clone();
                }
                service.renew(Request::new(r)).await.map(drop)
            }
            Call::Report(r) => service.report_throttle(Request::new(r)).await.map(drop),
            Call::Circuit(r) => service.get_circuit_state(Request::new(r)).await.map(drop),
            Call::ForceOpen(r) => admin.force_open_breaker(Request::new(r)).await.map(drop),
            Call::ListResources(r) => admin.list_resources(Request::new(r)).await.map(|p| {
                assert!(prost::Message::encoded_len(&p.into_inner()) <= 1 << 20);
            }),
            Call::ListLeases(r) => admin.list_leases(Request::new(r)).await.map(|p| {
                assert!(prost::Message::encoded_len(&p.into_inner()) <= 1 << 20);
            }),
            Call::Advance(n) => {
                clock.advance_nanos(n);
                Ok(())
            }
        };
        if let Err(status) = &result {
            clear(status).map_err(TestCaseError::fail)?;
        }
        // Whatever was asked, "api" holds at most its burst and never more than 3 in flight.
        let live = quota.usage().await.unwrap();
        for r in live.resources.iter().filter(|r| &*r.resource == "api") {
            prop_assert!(r.in_flight <= 3, "in flight {} over the limit", r.in_flight);
            prop_assert!(r.tokens_available.unwrap_or(0) <= 5);
        }
    }
    Ok(())
}

/// A shared store's calls against a Redis of the test's own (`urls`: one, or a Cluster's three), on a
/// runtime with real time (a paused clock would time the store's calls out while they wait for Redis).
fn on_redis(urls: &[String], calls: Vec<Call>) -> Result<(), TestCaseError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let clock = Arc::new(FakeClock::new());
    let rules = config::load_str(CONFIG).unwrap().rules;
    let store: RedisStore = common::redis_store(urls);
    let quota = Arc::new(Quota::new(rules, store, clock.clone()).unwrap());
    rt.block_on(run_calls(quota, &clock, calls))
}

fn redis_url() -> Vec<String> {
    static R: std::sync::OnceLock<common::redis_server::RedisServer> = std::sync::OnceLock::new();
    vec![
        R.get_or_init(common::redis_server::RedisServer::start)
            .url(),
    ]
}

fn cluster_urls() -> Vec<String> {
    static C: std::sync::OnceLock<common::redis_server::RedisCluster> = std::sync::OnceLock::new();
    C.get_or_init(common::redis_server::RedisCluster::start)
        .urls()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn no_request_panics_and_every_failure_is_clear(calls in prop::collection::vec(call(), 1..60)) {
        // A paused clock: a held max_wait passes at once.
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build().unwrap();
        let clock = Arc::new(FakeClock::new());
        let rules = config::load_str(CONFIG).unwrap().rules;
        let quota: Arc<Quota<MemoryStore>> = Arc::new(Quota::in_memory(rules, clock.clone()));
        rt.block_on(run_calls(quota, &clock, calls))?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn no_request_panics_and_every_failure_is_clear_on_redis(calls in prop::collection::vec(call(), 1..60)) {
        on_redis(&redis_url(), calls)?;
    }

    #[test]
    fn no_request_panics_and_every_failure_is_clear_on_a_redis_cluster(calls in prop::collection::vec(call(), 1..40)) {
        on_redis(&cluster_urls(), calls)?;
    }
}
