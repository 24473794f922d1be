//! End-to-end: what a careless or hostile client tries, each a regression test for a defect found by
//! trying it. A real quotad on 127.0.0.1:0 over gRPC; decisions on a fake clock.

use std::{sync::Arc, time::Duration};

use prost_types::Duration as PbDuration;
use quotad_api::v1 as pb;
use quotad_e2e::{TestServer, acquire, redis_server::RedisServer, secs};
use quotad_server::clock::{FakeClock, MonotonicClock};
use tonic::Code;

const CONFIG: &str = r#"
[server]
shutdown_grace = "60s"

[[resources]]
name = "api"
rate = { limit = 10, period = "1s", burst = 5 }

[[resources]]
name = "llm"
rate = { limit = 100, period = "1s", burst = 100 }
breaker = { failure_rate = 0.5, min_calls = 2, window = "10s", open_duration = "5s", max_open_duration = "1m", half_open_probes = 1 }

[[resources]]
name = "other"
breaker = { failure_rate = 0.5, min_calls = 2, window = "10s", open_duration = "5s", half_open_probes = 1 }

[[resources]]
name = "tenants.*"
rate = { limit = 1000, period = "1s", burst = 1000 }
[[resources.partitions]]
descriptor = "tenant"
rate = { limit = 10, period = "1s", burst = 10 }
"#;

async fn start() -> (TestServer, Arc<FakeClock>) {
    let clock = Arc::new(FakeClock::new());
    (TestServer::start(CONFIG, clock.clone()).await, clock)
}

#[tokio::test]
async fn a_release_charging_u64_max_costs_at_most_one_burst_and_an_admin_can_refill() {
    let (server, _clock) = start().await;
    let mut c = server.quota().await;
    let lease = c
        .acquire(acquire("api"))
        .await
        .unwrap()
        .into_inner()
        .lease_id;
    let r = c
        .release(pb::ReleaseRequest {
            lease_id: lease,
            outcome: pb::Outcome::Success.into(),
            used_permits: Some(u64::MAX),
        })
        .await
        .unwrap()
        .into_inner();
    // 4 tokens left and one burst (5) of debt allowed: 9 charged, and the answer says so.
    assert_eq!(r.charged_permits, 9);
    let d = c.acquire(acquire("api")).await.unwrap().into_inner();
    assert!(!d.granted);
    // Five tokens of debt plus one to take: 0.6 s at 10/s, not 584 years.
    assert_eq!(
        d.retry_after,
        Some(PbDuration {
            seconds: 0,
            nanos: 600_000_000
        })
    );
    let refilled = server
        .admin()
        .await
        .reset_buckets(pb::ResetBucketsRequest {
            resource: "api".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(refilled.levels_refilled, 1);
    let d = c.acquire(acquire("api")).await.unwrap().into_inner();
    assert!(d.granted);
    assert_eq!(d.remaining, 4);
}

#[tokio::test]
async fn malformed_durations_are_refused_naming_the_field_and_panic_nothing() {
    let (server, _clock) = start().await;
    let mut c = server.quota().await;
    let malformed = [
        (1, i32::MAX),
        (i64::MIN, 0),
        (-1, 0),
        (0, -1),
        (1, 1_000_000_000),
    ]
    .map(|(seconds, nanos)| Some(PbDuration { seconds, nanos }));
    let lease = c
        .acquire(acquire("api"))
        .await
        .unwrap()
        .into_inner()
        .lease_id;
    for d in malformed {
        for (field, max_wait, lease_ttl) in [("max_wait", d, None), ("lease_ttl", None, d)] {
            let e = c
                .acquire(pb::AcquireRequest {
                    max_wait,
                    lease_ttl,
                    ..acquire("api")
                })
                .await
                .unwrap_err();
            assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
            assert!(e.message().starts_with(field), "{e:?}");
        }
        let e = c
            .renew(pb::RenewRequest {
                lease_id: lease.clone(),
                lease_ttl: d,
            })
            .await
            .unwrap_err();
        assert!(e.message().starts_with("lease_ttl"), "{e:?}");
        let e = c
            .report_throttle(pb::ReportThrottleRequest {
                resource: "llm".into(),
                retry_after: d,
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
        assert!(e.message().starts_with("retry_after"), "{e:?}");
    }
    // Nothing was paused by the refused reports, and the server still serves.
    assert!(
        c.acquire(acquire("llm"))
            .await
            .unwrap()
            .into_inner()
            .granted
    );
}

const CAPPED: &str = r#"
[limits]
max_wait = "30s"

[[resources]]
name = "capped"
rate = { limit = 1000, period = "1s", burst = 1000 }
concurrency = 100
lease_ttl = "30s"
max_lease_ttl = "5m"
max_pause = "2m"
"#;

/// 366 days, 100 years and i64::MAX seconds: past every cap quotad has.
const PAST_EVERY_CAP: [i64; 3] = [366 * 86_400, 100 * 365 * 86_400, i64::MAX];

/// Durations past every cap are taken as the field's cap: a lease lives `max_lease_ttl`, a wait is held at
/// most the server's `max_wait`, and a downstream's Retry-After pauses the fleet for `max_pause`.
async fn durations_past_every_cap_are_capped(server: &TestServer) {
    let mut c = server.quota().await;
    let as_secs = |d: Option<PbDuration>| d.map(|d| d.seconds);
    for s in PAST_EVERY_CAP {
        let granted = c
            .acquire(pb::AcquireRequest {
                lease_ttl: secs(s),
                max_wait: secs(s),
                ..acquire("capped")
            })
            .await
            .unwrap()
            .into_inner();
        assert!(granted.granted, "{s}s: {granted:?}");
        assert_eq!(as_secs(granted.lease_ttl), Some(300), "{s}s");
        let renewed = c
            .renew(pb::RenewRequest {
                lease_id: granted.lease_id,
                lease_ttl: secs(s),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(as_secs(renewed.lease_ttl), Some(300), "{s}s");
    }
    for s in PAST_EVERY_CAP {
        let reported = c
            .report_throttle(pb::ReportThrottleRequest {
                resource: "capped".into(),
                retry_after: secs(s),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let left = reported.pause_remaining.unwrap();
        assert!(
            (119..=120).contains(&left.seconds),
            "{s}s: paused for {left:?}"
        );
        let paused = c.acquire(acquire("capped")).await.unwrap().into_inner();
        assert_eq!(paused.decision(), pb::Decision::Paused, "{s}s");
        assert!(paused.retry_after.unwrap().seconds <= 120, "{paused:?}");
    }
}

#[tokio::test]
async fn durations_past_every_cap_are_capped_in_memory() {
    let server = TestServer::start(CAPPED, Arc::new(FakeClock::new())).await;
    durations_past_every_cap_are_capped(&server).await;
}

#[tokio::test]
async fn durations_past_every_cap_are_capped_on_redis() {
    let redis = RedisServer::start();
    let config = format!(
        "store = \"redis\"\n[redis]\nurl = \"{}\"\nprefix = \"capped:\"\n{CAPPED}",
        redis.url()
    );
    // Redis's clock decides; the node's own runs on the same (wall) timeline, as in production.
    let server = TestServer::start(&config, Arc::new(MonotonicClock::new())).await;
    durations_past_every_cap_are_capped(&server).await;
}

#[tokio::test]
async fn force_open_is_capped_by_max_open_duration() {
    let (server, _clock) = start().await;
    let mut admin = server.admin().await;
    let open = |resource: &str, duration| pb::ForceOpenBreakerRequest {
        resource: resource.into(),
        duration,
        ..Default::default()
    };
    let e = admin
        .force_open_breaker(open("llm", secs(100 * 365 * 24 * 3600)))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let e = admin
        .force_open_breaker(open("llm", secs(61)))
        .await
        .unwrap_err();
    assert!(e.message().starts_with("duration"), "{e:?}");
    // Default max_open_duration (5m) for the breaker that sets none.
    let e = admin
        .force_open_breaker(open("other", secs(301)))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let ok = admin
        .force_open_breaker(open("llm", secs(60)))
        .await
        .unwrap();
    assert_eq!(ok.into_inner().previous_state(), pb::CircuitState::Closed);
}

#[tokio::test]
async fn a_report_naming_another_resources_lease_changes_nothing() {
    let (server, _clock) = start().await;
    let mut c = server.quota().await;
    let lease = c
        .acquire(acquire("llm"))
        .await
        .unwrap()
        .into_inner()
        .lease_id;
    let e = c
        .report_throttle(pb::ReportThrottleRequest {
            resource: "other".into(),
            kind: pb::ThrottleKind::Error.into(),
            lease_id: lease.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().starts_with("lease_id"), "{e:?}");
    // The lease's own failure still counts on its own breaker: two failed calls open it (min_calls 2).
    let second = c
        .acquire(acquire("llm"))
        .await
        .unwrap()
        .into_inner()
        .lease_id;
    for id in [lease, second] {
        c.release(pb::ReleaseRequest {
            lease_id: id,
            outcome: pb::Outcome::Failure.into(),
            used_permits: None,
        })
        .await
        .unwrap();
    }
    let state = c
        .get_circuit_state(pb::GetCircuitStateRequest {
            resource: "llm".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(state.state(), pb::CircuitState::Open);
    // And the other resource's breaker counted nothing.
    let other = c
        .get_circuit_state(pb::GetCircuitStateRequest {
            resource: "other".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((other.calls, other.failures), (0, 0));
}

#[tokio::test]
async fn a_lease_id_has_one_spelling() {
    let (server, _clock) = start().await;
    let mut c = server.quota().await;
    let lease = c
        .acquire(acquire("api"))
        .await
        .unwrap()
        .into_inner()
        .lease_id;
    let e = c
        .release(pb::ReleaseRequest {
            lease_id: lease.to_uppercase(),
            outcome: pb::Outcome::Success.into(),
            used_permits: None,
        })
        .await;
    match e {
        // All-digit ids read the same in both cases; any other is refused.
        Ok(r) if lease.bytes().all(|b| b.is_ascii_digit()) => assert!(r.into_inner().released),
        Ok(r) => panic!("upper-case id accepted: {r:?}"),
        Err(e) => assert_eq!(e.code(), Code::InvalidArgument),
    }
}

#[tokio::test]
async fn listings_are_paged_and_no_answer_grows_with_the_keys() {
    let (server, _clock) = start().await;
    let mut c = server.quota().await;
    // 3,000 names under a glob, each with a 200-byte suffix: about 650 KB of names in all.
    let pad = "x".repeat(200);
    for i in 0..3_000 {
        let r = c.acquire(acquire(&format!("tenants.{i:05}{pad}"))).await;
        // The tenant descriptor is required: the call is refused, and the name gets no state.
        assert_eq!(r.unwrap_err().code(), Code::InvalidArgument);
        let r = c
            .acquire(pb::AcquireRequest {
                descriptors: [("tenant".to_owned(), "t".to_owned())].into(),
                ..acquire(&format!("tenants.{i:05}{pad}"))
            })
            .await
            .unwrap();
        assert!(r.into_inner().granted);
    }
    let mut admin = server.admin().await;
    let mut token = String::new();
    let mut seen = Vec::new();
    let mut pages = 0;
    loop {
        let page = admin
            .list_resources(pb::ListResourcesRequest {
                prefix: "tenants.".into(),
                page_size: 1000,
                page_token: token.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert!(prost::Message::encoded_len(&page) <= 1 << 20);
        pages += 1;
        seen.extend(page.resources.into_iter().map(|r| r.resource));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert!(pages >= 3, "{pages} pages");
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted, seen, "in name order, none twice");
    assert_eq!(seen.len(), 3_000);
    // A page size past the maximum, or a made-up token, names its field.
    let e = admin
        .list_resources(pb::ListResourcesRequest {
            page_size: 100_000,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(e.message().starts_with("page_size"), "{e:?}");
    let e = admin
        .list_leases(pb::ListLeasesRequest {
            page_token: "not-a-token".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(e.message().starts_with("page_token"), "{e:?}");
    // Leases page too: 3,000 live, listed 700 at a time, each once.
    let mut token = String::new();
    let mut leases = std::collections::HashSet::new();
    loop {
        let page = admin
            .list_leases(pb::ListLeasesRequest {
                prefix: "tenants.".into(),
                page_size: 700,
                page_token: token.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert!(page.leases.len() <= 700);
        for l in page.leases {
            assert!(leases.insert(l.lease_id), "listed twice");
        }
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(leases.len(), 3_000);
}

/// A message whose field 1 is a number where AcquireRequest has a string: not decodable as one.
#[derive(Clone, PartialEq, prost::Message)]
struct NotAnAcquire {
    #[prost(uint64, tag = "1")]
    resource: u64,
}

#[tokio::test]
async fn an_undecodable_request_is_invalid_argument() {
    let (server, _clock) = start().await;
    let mut grpc = tonic::client::Grpc::new(server.channel().await);
    grpc.ready().await.unwrap();
    let codec = tonic_prost::ProstCodec::<NotAnAcquire, pb::AcquireResponse>::default();
    let path = http::uri::PathAndQuery::from_static("/quotad.v1.QuotaService/Acquire");
    let e = grpc
        .unary(
            tonic::Request::new(NotAnAcquire { resource: 7 }),
            path,
            codec,
        )
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
}

#[tokio::test]
async fn shutdown_does_not_wait_for_an_idle_connection_that_ignores_goaway() {
    use tokio::io::AsyncWriteExt;
    let (mut server, _clock) = start().await;
    // An HTTP/2 client that says hello and then never reads again (nor closes).
    let mut raw = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    raw.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .unwrap();
    // And one real call first, so the server is surely serving.
    let mut c = server.quota().await;
    assert!(
        c.acquire(acquire("api"))
            .await
            .unwrap()
            .into_inner()
            .granted
    );
    server.signal_stop();
    // The grace period is 60 s; with no call in flight the server is gone long before.
    tokio::time::timeout(Duration::from_secs(20), server.stop())
        .await
        .expect("stopped without waiting out the grace period");
    drop(raw);
}
